//! `lambdawatch-bench`: whole-process figures for the extension, each measured in the same run as
//! a floor so that the ratio survives a noisy machine.
//!
//! ```text
//! lambdawatch-bench ──spawn──► extension ──register / next / subscribe──► lambda::FakeLambda
//!        │                         │ OTLP/HTTP                                   │
//!        └── timestamps, /proc ◄───┴──────────► sink (200 to everything)         └─Telemetry batches─► extension
//! ```
//!
//! Figures (issue 3): init overhead (process start → first `/event/next`) against `floor-extension`
//! (register + `/next`, nothing else); stripped binary size; steady RSS; peak RSS through a burst of
//! 10,000 log lines in one invocation; post-runtime time (delivery of `runtimeDone` → `/next`) with
//! deferred flush (the target) and with `LAMBDAWATCH_FLUSH=end` (what flushing before `/next`
//! costs). Results replace the `extension-process` section of `docs/BENCHMARKS.md`.
//!
//! Usage: `scripts/bench.sh` (builds release binaries, then runs
//! `target/release/lambdawatch-bench [--runs N] [--invocations N] [--out FILE]`).

mod lambda;
mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use lambda::{FakeLambda, rfc3339};

struct Args {
    extension: PathBuf,
    floor: PathBuf,
    runs: usize,
    invocations: usize,
    burst_lines: usize,
    out: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let mut a = Args {
        extension: dir.join("lambdawatch-extension"),
        floor: dir.join("floor-extension"),
        runs: 21,
        invocations: 400,
        burst_lines: 10_000,
        out: PathBuf::from("docs/BENCHMARKS.md"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--extension" => a.extension = v()?.into(),
            "--floor" => a.floor = v()?.into(),
            "--runs" => a.runs = v()?.parse()?,
            "--invocations" => a.invocations = v()?.parse()?,
            "--burst-lines" => a.burst_lines = v()?.parse()?,
            "--out" => a.out = v()?.into(),
            _ => bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(
    bin: &Path,
    lambda: &FakeLambda,
    sink: std::net::SocketAddr,
    flush: &str,
) -> anyhow::Result<(Proc, Instant)> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", lambda.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/29/[$LATEST]bench")
        .env("AWS_REGION", "us-east-1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{sink}"))
        .env("LAMBDAWATCH_FLUSH", flush)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    Ok((Proc(child), start))
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn invoke_event(id: &str) -> String {
    let deadline = lambda::unix_ms(SystemTime::now()) + 3_000;
    json!({
        "eventType": "INVOKE",
        "deadlineMs": deadline as u64,
        "requestId": id,
        "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
        "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}
    })
    .to_string()
}

fn platform(kind: &str, record: Value) -> Value {
    json!({"time": rfc3339(SystemTime::now()), "type": kind, "record": record})
}

/// The flush strategies measured: deferred (periodic, off the critical path) and `end` (flush
/// after `runtimeDone`, before `/next`).
const DEFERRED: &str = "periodic,1000";
const END: &str = "end";

/// What Lambda delivers while the function runs: `platform.start` and one log line.
fn started(id: &str) -> Vec<Value> {
    vec![
        platform(
            "platform.start",
            json!({"requestId": id, "version": "$LATEST"}),
        ),
        json!({"time": rfc3339(SystemTime::now()), "type": "function", "record": format!("[INFO] handled {id}")}),
    ]
}

fn runtime_done(id: &str) -> Value {
    platform(
        "platform.runtimeDone",
        json!({"requestId": id, "status": "success", "metrics": {"durationMs": 1.5, "producedBytes": 12}}),
    )
}

fn report(id: &str) -> Value {
    platform(
        "platform.report",
        json!({"requestId": id, "status": "success", "metrics": {"durationMs": 1.5, "billedDurationMs": 2, "memorySizeMB": 128, "maxMemoryUsedMB": 30}}),
    )
}

/// Process start → first `/event/next`, then a clean SHUTDOWN.
fn measure_init(bin: &Path, sink: std::net::SocketAddr) -> anyhow::Result<Duration> {
    let lambda = FakeLambda::start()?;
    let (mut proc, start) = spawn(bin, &lambda, sink, DEFERRED)?;
    let first = lambda
        .wait_next_call(1, Duration::from_secs(10))
        .with_context(|| format!("{} never called /event/next", bin.display()))?;
    shutdown(&lambda, &mut proc)?;
    Ok(first.duration_since(start))
}

fn shutdown(lambda: &FakeLambda, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = lambda::unix_ms(SystemTime::now()) + 2_000;
    lambda.push_event(json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline as u64}).to_string());
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if proc.0.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("extension did not exit within the SHUTDOWN budget")
}

struct Steady {
    post_runtime: Vec<Duration>,
    rss_kb: u64,
    burst_hwm_kb: u64,
}

/// Invocations with Telemetry delivered as Lambda does, then one burst invocation.
///
/// Post-runtime time: `t0` is taken *before* the batch holding `platform.runtimeDone` (and the
/// previous invocation's report) is delivered, `t1` when `/next` arrives; so it includes the
/// delivery, the extension's handling of `runtimeDone` and, with `end`, the flush. (`start` and
/// the log line go in an earlier batch, as Lambda sends them while the function runs.) For an
/// extension that does not subscribe (the floor), `t0` is the INVOKE.
fn measure_steady(
    bin: &Path,
    sink: std::net::SocketAddr,
    invocations: usize,
    burst_lines: usize,
    flush: &str,
) -> anyhow::Result<Steady> {
    let lambda = FakeLambda::start()?;
    let (mut proc, _) = spawn(bin, &lambda, sink, flush)?;
    let pid = proc.0.id();
    lambda
        .wait_next_call(1, Duration::from_secs(10))
        .context("no first /next")?;
    let subscribed = lambda.subscriber().is_some();
    let mut post = Vec::with_capacity(invocations);
    for i in 0..invocations {
        let id = format!("bench-{i:06}");
        lambda.push_event(invoke_event(&id));
        let t0 = if subscribed {
            lambda.deliver(&started(&id))?;
            let mut batch = vec![runtime_done(&id)];
            if i > 0 {
                batch.insert(0, report(&format!("bench-{:06}", i - 1)));
            }
            let t0 = Instant::now();
            lambda.deliver(&batch)?;
            t0
        } else {
            Instant::now()
        };
        let t1 = lambda
            .wait_next_call(i + 2, Duration::from_secs(10))
            .with_context(|| format!("no /next after invocation {i}"))?;
        post.push(t1.saturating_duration_since(t0));
    }
    std::thread::sleep(Duration::from_millis(200));
    let rss_kb = proc_status_kb(pid, "VmRSS:");
    // One invocation that logs `burst_lines` lines, delivered in Lambda's maximum batches.
    let id = "bench-burst";
    lambda.push_event(invoke_event(id));
    if subscribed {
        lambda.deliver(&[report(&format!("bench-{:06}", invocations - 1))])?;
        lambda.deliver(&[platform(
            "platform.start",
            json!({"requestId": id, "version": "$LATEST"}),
        )])?;
        let line = "x".repeat(120);
        for chunk in 0..burst_lines.div_ceil(1_000) {
            let n = (burst_lines - chunk * 1_000).min(1_000);
            let batch: Vec<Value> = (0..n)
                .map(|j| json!({"time": rfc3339(SystemTime::now()), "type": "function", "record": format!("[INFO] line {j} {line}")}))
                .collect();
            lambda.deliver(&batch)?;
        }
        lambda.deliver(&[runtime_done(id)])?;
    }
    lambda
        .wait_next_call(invocations + 2, Duration::from_secs(20))
        .context("no /next after the burst")?;
    std::thread::sleep(Duration::from_millis(300));
    let burst_hwm_kb = proc_status_kb(pid, "VmHWM:");
    if subscribed {
        lambda.deliver(&[report(id)])?;
    }
    shutdown(&lambda, &mut proc)?;
    Ok(Steady {
        post_runtime: post,
        rss_kb,
        burst_hwm_kb,
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    for b in [&args.extension, &args.floor] {
        if !b.is_file() {
            bail!("{} not built: run scripts/bench.sh", b.display());
        }
    }
    let sink = server::serve(|_req| server::Response {
        status: 200,
        headers: vec![("Content-Type".into(), "application/x-protobuf".into())],
        body: Vec::new(),
    })?;

    // Init overhead: alternate floor and extension so drift hits both alike.
    let (mut ext_init, mut floor_init) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        floor_init.push(measure_init(&args.floor, sink)?);
        ext_init.push(measure_init(&args.extension, sink)?);
    }
    let (ext_i, floor_i) = (median(&mut ext_init), median(&mut floor_init));
    let init_ratio = ext_i.as_secs_f64() / floor_i.as_secs_f64();

    let floor = measure_steady(&args.floor, sink, args.invocations, 0, DEFERRED)?;
    let ext = measure_steady(
        &args.extension,
        sink,
        args.invocations,
        args.burst_lines,
        DEFERRED,
    )?;
    let ext_end = measure_steady(&args.extension, sink, args.invocations, 0, END)?;
    let (mut ext_post, mut floor_post) = (ext.post_runtime.clone(), floor.post_runtime.clone());
    let ext_post_med = median(&mut ext_post);
    let ext_post_p99 = percentile(&mut ext_post, 0.99);
    let floor_post_med = median(&mut floor_post);
    let mut end_post = ext_end.post_runtime.clone();
    let end_post_med = median(&mut end_post);
    let end_post_p99 = percentile(&mut end_post, 0.99);

    let size = std::fs::metadata(&args.extension)?.len();
    let floor_size = std::fs::metadata(&args.floor)?.len();
    let mb = |b: u64| format!("{:.2} MB", b as f64 / 1_048_576.0);
    let kb = |k: u64| format!("{:.1} MB", k as f64 / 1024.0);
    let verdict = |ok: bool| if ok { "✅" } else { "❌" };

    let rows = [
        format!(
            "| init overhead (start → first `/event/next`), median of {} | {} | {} | {:.2}× | ≤ 1.5× | {} |",
            args.runs,
            ms(ext_i),
            ms(floor_i),
            init_ratio,
            verdict(init_ratio <= 1.5)
        ),
        format!(
            "| post-runtime time (`runtimeDone` delivered → `/next`), median of {} (p99 {}) | {} | {} | {:.2}× | median ≤ 1 ms | {} |",
            args.invocations,
            ms(ext_post_p99),
            ms(ext_post_med),
            ms(floor_post_med),
            ext_post_med.as_secs_f64() / floor_post_med.as_secs_f64().max(1e-9),
            verdict(ext_post_med <= Duration::from_millis(1))
        ),
        format!(
            "| post-runtime time with `LAMBDAWATCH_FLUSH=end` (flush to the local sink before `/next`), median of {} (p99 {}) | {} | {} | {:.2}× | — (the deferred row is the target) | {} |",
            args.invocations,
            ms(end_post_p99),
            ms(end_post_med),
            ms(floor_post_med),
            end_post_med.as_secs_f64() / floor_post_med.as_secs_f64().max(1e-9),
            "—"
        ),
        format!(
            "| stripped binary size | {} | {} | {:.2}× | ≤ 4 MB | {} |",
            mb(size),
            mb(floor_size),
            size as f64 / floor_size as f64,
            verdict(size <= 4 << 20)
        ),
        format!(
            "| steady RSS after {} invocations | {} | {} | {:.2}× | ≤ 10 MB | {} |",
            args.invocations,
            kb(ext.rss_kb),
            kb(floor.rss_kb),
            ext.rss_kb as f64 / floor.rss_kb.max(1) as f64,
            verdict(ext.rss_kb <= 10 * 1024)
        ),
        format!(
            "| peak RSS through {} log lines in one invocation | {} | {} | {:.2}× | ≤ 32 MB | {} |",
            args.burst_lines,
            kb(ext.burst_hwm_kb),
            kb(floor.burst_hwm_kb),
            ext.burst_hwm_kb as f64 / floor.burst_hwm_kb.max(1) as f64,
            verdict(ext.burst_hwm_kb <= 32 * 1024)
        ),
    ];
    let profile = args
        .extension
        .parent()
        .and_then(|d| d.file_name())
        .map_or("unknown".into(), |n| n.to_string_lossy().into_owned());
    let section = format!(
        "Measured {} on this machine (`nproc` = {}) with `scripts/bench.sh` ({profile} build; \
         `target/{profile}/lambdawatch-bench --runs {} --invocations {}`). Floor: `floor-extension`, which only registers and \
         calls `/event/next` (std, blocking). Both run against the same in-process Lambda stand-in and \
         a 200-to-everything OTLP sink; the extension uses `LAMBDAWATCH_FLUSH=periodic,1000` (deferred flush) \
         except in the `end` row. Post-runtime time runs from just before the batch holding \
         `platform.runtimeDone` is delivered to the next `/event/next` (the floor, which does not \
         subscribe, from its INVOKE); 0 when that `/event/next` came before the delivery (with \
         deferred flush the extension is already waiting in `/next` when the function finishes).\n\n\
         | figure | lambdawatch-extension | floor | ratio | target | |\n|---|---|---|---|---|---|\n{}\n",
        rfc3339(SystemTime::now()),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.runs,
        args.invocations,
        rows.join("\n")
    );
    println!("{section}");
    write_section(
        &args.out,
        "extension-process",
        "Extension: whole process",
        &section,
    )?;
    Ok(())
}

/// Replaces (or appends) the marked section `name` of the results file.
fn write_section(path: &Path, name: &str, title: &str, body: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- begin:{name} -->");
    let end = format!("<!-- end:{name} -->");
    let block = format!("{begin}\n## {title}\n\n{body}{end}");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &text[..b], block, &text[e + end.len()..]),
        _ => format!("{}\n{}\n", text.trim_end(), block),
    };
    std::fs::write(path, new)?;
    Ok(())
}
