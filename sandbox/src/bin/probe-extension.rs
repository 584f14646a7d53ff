//! `lambdawatch-probe-extension`: a minimal external extension for tests and the demo.
//!
//! Registers (under its file name, `argv[0]`) for INVOKE and SHUTDOWN, subscribes to the Telemetry API with an HTTP listener on
//! 127.0.0.1 (destination `http://sandbox.localdomain:PORT`), and appends one JSON line per
//! received lifecycle event (`{"at_ms", "lifecycle": …}`) and per received Telemetry batch
//! (`{"at_ms", "telemetry": [...], "status": …}`) to the file `PROBE_OUT`. Lifecycle lines also
//! carry `event_id`, the `Lambda-Extension-Event-Identifier` header (null when absent). A refused
//! registration is written as `{"register_failed": status, "body": …}` before the probe exits 1.
//!
//! | env var | default | meaning |
//! |---|---|---|
//! | `PROBE_OUT` | (required) | output file (appended) |
//! | `PROBE_TICK_MS` | unset | also write `{"tick": unix_ms}` every N ms (freeze test) |
//! | `PROBE_IGNORE_SHUTDOWN` | unset | on SHUTDOWN keep running (SIGKILL test) |
//! | `PROBE_SCHEMA` | `2022-12-13` | Telemetry schema version |
//! | `PROBE_TYPES` | `platform,function,extension` | Telemetry types |
//! | `PROBE_MAX_ITEMS` / `PROBE_MAX_BYTES` / `PROBE_TIMEOUT_MS` | 1000 / 262144 / 25 | buffering |
//! | `PROBE_FAIL_POSTS` | 0 | answer 500 to the first N Telemetry POSTs (retry test) |
//! | `PROBE_NO_SUBSCRIBE` | unset | do not subscribe |
//! | `PROBE_SUBSCRIBE_DELAY_MS` | 0 | wait N ms after registering before subscribing (a late subscriber) |
//! | `PROBE_NAME` | file name | register under this name instead (an internal extension to Lambda) |
//! | `PROBE_EVENTS` | `INVOKE,SHUTDOWN` | events to register for (`SHUTDOWN` under Managed Instances) |
//! | `PROBE_NEXT_DELAY_MS` | 0 | wait N ms after each INVOKE before the next `/event/next` (a slow extension); writes `{"next_after_delay": unix_ms}` just before that call |

use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Probe {
    out: Mutex<std::fs::File>,
    fail_posts: AtomicU64,
    last_post_ms: AtomicU64,
}

impl Probe {
    fn write(&self, mut line: Value) {
        if line.get("tick").is_none() {
            line["at_ms"] = json!(now_ms());
        }
        // One `write` per line on an O_APPEND file: probes of several environments may share
        // the file, and `writeln!` would interleave their lines piece by piece.
        let mut text = line.to_string();
        text.push('\n');
        let mut f = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(text.as_bytes());
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn request(
    client: &HttpClient,
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, http::HeaderMap, Bytes)> {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}

async fn on_telemetry(State(probe): State<Arc<Probe>>, body: Bytes) -> StatusCode {
    probe.last_post_ms.store(now_ms(), Ordering::SeqCst);
    let batch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fail = probe
        .fail_posts
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    probe.write(json!({"telemetry": batch, "status": status.as_u16()}));
    status
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").context("AWS_LAMBDA_RUNTIME_API not set")?;
    let out_path = std::env::var("PROBE_OUT").context("PROBE_OUT not set")?;
    let name = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "lambdawatch-probe-extension".into());
    let name = std::env::var("PROBE_NAME").unwrap_or(name);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .with_context(|| format!("cannot open {out_path}"))?;
    let probe = Arc::new(Probe {
        out: Mutex::new(out),
        fail_posts: AtomicU64::new(env_u64("PROBE_FAIL_POSTS", 0)),
        last_post_ms: AtomicU64::new(0),
    });
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let events: Vec<String> = std::env::var("PROBE_EVENTS")
        .unwrap_or_else(|_| "INVOKE,SHUTDOWN".into())
        .split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    let next_delay = Duration::from_millis(env_u64("PROBE_NEXT_DELAY_MS", 0));

    let (status, headers, body) = request(
        &client,
        http::Method::POST,
        &format!("http://{api}/2020-01-01/extension/register"),
        &[("Lambda-Extension-Name", &name)],
        json!({ "events": events }).to_string().into_bytes(),
    )
    .await?;
    if status != StatusCode::OK {
        probe.write(json!({
            "register_failed": status.as_u16(),
            "body": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        }));
        bail!(
            "register failed: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let id = headers
        .get("Lambda-Extension-Identifier")
        .and_then(|v| v.to_str().ok())
        .context("no Lambda-Extension-Identifier")?
        .to_owned();
    probe.write(json!({"registered": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null), "name": name, "id": id, "api": api}));
    eprintln!("[probe] registered as {name}");

    if std::env::var_os("PROBE_NO_SUBSCRIBE").is_none() {
        let delay = env_u64("PROBE_SUBSCRIBE_DELAY_MS", 0);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = Router::new()
            .route("/", post(on_telemetry))
            .with_state(probe.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let schema = std::env::var("PROBE_SCHEMA").unwrap_or_else(|_| "2022-12-13".into());
        let types: Vec<String> = std::env::var("PROBE_TYPES")
            .unwrap_or_else(|_| "platform,function,extension".into())
            .split(',')
            .map(str::to_owned)
            .collect();
        let sub = json!({
            "schemaVersion": schema,
            "destination": {"protocol": "HTTP", "URI": format!("http://sandbox.localdomain:{port}/")},
            "types": types,
            "buffering": {
                "maxItems": env_u64("PROBE_MAX_ITEMS", 1000),
                "maxBytes": env_u64("PROBE_MAX_BYTES", 262_144),
                "timeoutMs": env_u64("PROBE_TIMEOUT_MS", 25),
            },
        });
        let (status, _, body) = request(
            &client,
            http::Method::PUT,
            &format!("http://{api}/2022-07-01/telemetry"),
            &[
                ("Lambda-Extension-Identifier", &id),
                ("Content-Type", "application/json"),
            ],
            sub.to_string().into_bytes(),
        )
        .await?;
        probe.write(json!({"subscribe": status.as_u16(), "body": String::from_utf8_lossy(&body)}));
    }

    if let Some(tick) = std::env::var("PROBE_TICK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let probe = probe.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(tick.max(1)));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                iv.tick().await;
                probe.write(json!({"tick": now_ms()}));
            }
        });
    }

    loop {
        let (status, headers, body) = request(
            &client,
            http::Method::GET,
            &format!("http://{api}/2020-01-01/extension/event/next"),
            &[("Lambda-Extension-Identifier", &id)],
            Vec::new(),
        )
        .await?;
        if status != StatusCode::OK {
            bail!(
                "event/next failed: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let ev: Value = serde_json::from_slice(&body)?;
        let event_id = headers
            .get("Lambda-Extension-Event-Identifier")
            .and_then(|v| v.to_str().ok());
        probe.write(json!({"lifecycle": ev, "event_id": event_id}));
        eprintln!("[probe] {}", ev["eventType"]);
        if ev["eventType"] == "INVOKE" && !next_delay.is_zero() {
            // A slow extension: post-invoke work before asking for the next event.
            tokio::time::sleep(next_delay).await;
            probe.write(json!({"next_after_delay": now_ms()}));
        }
        if ev["eventType"] == "SHUTDOWN" {
            if std::env::var_os("PROBE_IGNORE_SHUTDOWN").is_some() {
                // Misbehave: never exit; the sandbox must SIGKILL us at the deadline.
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
            // Receive the last Telemetry batches (the final platform.report): exit once no POST
            // came for 500 ms, and within the 2 s SHUTDOWN budget.
            let since = now_ms();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = now_ms();
                let quiet = now.saturating_sub(probe.last_post_ms.load(Ordering::SeqCst)) >= 500;
                if (quiet && now - since >= 500) || now - since >= 1_800 {
                    return Ok(());
                }
            }
        }
    }
}
