//! The binary: prints its bound addresses, ingests, and on SIGTERM stops ingest, drains,
//! evaluates and delivers once more, and exits 0 well within 25 s.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lambdawatch_semconv::{
    attr,
    otlp::{kv_f64, kv_str},
    span_type,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;

#[test]
fn sigterm_exits_within_25s_after_a_final_evaluation() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lambdawatch-collector"))
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        // The first periodic evaluation would be in an hour: only the final one runs.
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1h")
        .env("LAMBDAWATCH_ALERT_FOR", "0s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("lambdawatch-collector listening "),
        "{line}"
    );
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("otlp_http="))
        .unwrap()
        .to_owned();
    // A full outage: 200 failed invocations in the last minutes.
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans: Vec<Span> = (0..200)
        .map(|_| Span {
            name: "checkout".into(),
            start_time_unix_nano: end - 5_000_000,
            end_time_unix_nano: end,
            attributes: vec![
                kv_str(attr::LAMBDAWATCH_SPAN_TYPE, span_type::INVOCATION),
                kv_str(attr::AWS_LAMBDA_OUTCOME, "error"),
                kv_f64(attr::AWS_LAMBDA_DURATION_MS, 5.0),
            ],
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str(attr::FAAS_NAME, "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let status = post(&http, req.encode_to_vec());
    assert_eq!(status, 200);

    let started = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    let exit = child.wait().unwrap();
    let took = started.elapsed();
    assert!(exit.success(), "exit {exit:?}\n{}", log.join("\n"));
    eprintln!("shutdown took {took:?}");
    assert!(took < Duration::from_secs(25), "took {took:?}");
    let log = log.join("\n");
    // The alert can only come from the final evaluation.
    assert!(
        log.contains("LambdawatchErrorBudgetBurn") || log.contains("burning the error budget"),
        "no alert from the final evaluation:\n{log}"
    );
    assert!(log.contains("final evaluation delivered"), "{log}");
}

fn post(addr: &str, body: Vec<u8>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}
