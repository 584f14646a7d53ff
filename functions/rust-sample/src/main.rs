//! Sample function for the sandbox and the end-to-end tests, built on the `lambda_runtime` crate.
//!
//! Payload convention (shared with `sandbox::workload` and the Python sample):
//! `{"fail": bool, "sleep_ms": u64, "log_lines": u64, "log_json": bool, "alloc_mb": u64}`, every
//! field optional.
//! - `log_lines` lines are written to stdout before anything else; with `log_json` each line is a
//!   JSON object `{"timestamp", "level", "requestId", "message"}` (the Lambda JSON log format),
//!   otherwise plain text.
//! - `sleep_ms` makes the handler slow (or, beyond the function timeout, time out).
//! - `alloc_mb` allocates that many MiB (at most [`MAX_ALLOC_MB`]) and writes every page, so the
//!   resident set really grows; the memory is freed when the handler returns (the peak stays).
//! - `fail` returns an error, which `lambda_runtime` posts to `/invocation/{id}/error`.
//!
//! Environment: `INIT_SLEEP_MS` sleeps during init (before the first `/next`), to make cold starts
//! slow on purpose.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};

/// Env var: milliseconds to sleep during init.
const INIT_SLEEP_MS: &str = "INIT_SLEEP_MS";
/// Largest `alloc_mb` honoured.
const MAX_ALLOC_MB: u64 = 4096;
const PAGE: usize = 4096;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Payload {
    fail: bool,
    sleep_ms: u64,
    log_lines: u64,
    log_json: bool,
    alloc_mb: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let init_sleep = std::env::var(INIT_SLEEP_MS)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    println!("sample-function init (init_sleep_ms={init_sleep})");
    if init_sleep > 0 {
        tokio::time::sleep(Duration::from_millis(init_sleep)).await;
    }
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let request_id = event.context.request_id.clone();
    // An unparseable payload is treated as the empty one: the function still answers.
    let payload: Payload = serde_json::from_value(event.payload.clone()).unwrap_or_default();
    for i in 0..payload.log_lines {
        let message = format!("log line {i} of {}", payload.log_lines);
        if payload.log_json {
            println!(
                "{}",
                json!({
                    "timestamp": now_rfc3339(),
                    "level": "INFO",
                    "requestId": request_id,
                    "message": message,
                })
            );
        } else {
            println!("[INFO] {message}");
        }
    }
    let held = if payload.alloc_mb > 0 {
        Some(touch_mib(payload.alloc_mb)?)
    } else {
        None
    };
    if payload.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(payload.sleep_ms)).await;
    }
    if payload.fail {
        eprintln!("[ERROR] failing on purpose for {request_id}");
        return Err("sample function failed on purpose".into());
    }
    drop(held);
    Ok(json!({ "ok": true, "requestId": request_id, "echo": event.payload }))
}

/// Allocates `mib` MiB and writes one byte per page so every page is resident.
fn touch_mib(mib: u64) -> Result<Vec<u8>, Error> {
    if mib > MAX_ALLOC_MB {
        return Err(format!("alloc_mb {mib} is above {MAX_ALLOC_MB}").into());
    }
    let len = usize::try_from(mib * 1024 * 1024)?;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|e| format!("cannot allocate {mib} MiB: {e}"))?;
    buf.resize(len, 0);
    for i in (0..len).step_by(PAGE) {
        buf[i] = 1;
    }
    Ok(std::hint::black_box(buf))
}

/// RFC 3339 UTC timestamp with milliseconds, without a date crate.
fn now_rfc3339() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
