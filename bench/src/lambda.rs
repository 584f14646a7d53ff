//! Lambda's side of the Extensions and Telemetry APIs, as far as a benchmark needs it: register,
//! `/event/next` held until the bench pushes an event (the arrival of every `/next` call is
//! timestamped), the Telemetry API subscription, and delivery of Telemetry batches to the
//! subscriber exactly as Lambda POSTs them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::server::{self, Request, Response};

#[derive(Default)]
struct State {
    events: Mutex<VecDeque<String>>,
    events_cv: Condvar,
    next_calls: Mutex<Vec<Instant>>,
    next_cv: Condvar,
    telemetry: Mutex<Option<String>>,
}

pub struct FakeLambda {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeLambda {
    pub fn start() -> std::io::Result<Self> {
        let state = Arc::new(State::default());
        let s = Arc::clone(&state);
        let addr = server::serve(move |req| handle(&s, req))?;
        Ok(Self { addr, state })
    }

    pub fn push_event(&self, event: String) {
        if let Ok(mut q) = self.state.events.lock() {
            q.push_back(event);
        }
        self.state.events_cv.notify_all();
    }

    /// Waits until `/event/next` has been called `n` times; the instant of the `n`th call.
    pub fn wait_next_call(&self, n: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut calls = self.state.next_calls.lock().ok()?;
        while calls.len() < n {
            let left = deadline.checked_duration_since(Instant::now())?;
            calls = self.state.next_cv.wait_timeout(calls, left).ok()?.0;
        }
        calls.get(n - 1).copied()
    }

    /// `host:port` and path of the Telemetry API subscriber, once it subscribed.
    /// `sandbox.localdomain` is this machine.
    pub fn subscriber(&self) -> Option<(String, String)> {
        let uri = self.state.telemetry.lock().ok()?.clone()?;
        let rest = uri.strip_prefix("http://")?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        Some((host.replace("sandbox.localdomain", "127.0.0.1"), path))
    }

    /// Delivers one Telemetry API batch; returns when the subscriber answered.
    pub fn deliver(&self, events: &[serde_json::Value]) -> std::io::Result<u16> {
        let (host, path) = self
            .subscriber()
            .ok_or_else(|| std::io::Error::other("no Telemetry API subscriber"))?;
        let body = serde_json::to_vec(events).map_err(std::io::Error::other)?;
        server::post(&host, &path, "application/json", &body)
    }
}

fn handle(state: &State, req: Request) -> Response {
    let forbidden = |msg: &str| Response {
        status: 403,
        headers: vec![],
        body: msg.as_bytes().to_vec(),
    };
    let registered = req.header("Lambda-Extension-Identifier") == Some("bench-ext-0001");
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/2020-01-01/extension/register")
            if req.header("Lambda-Extension-Name").is_none() =>
        {
            forbidden("missing Lambda-Extension-Name")
        }
        ("GET", "/2020-01-01/extension/event/next") | ("PUT", "/2022-07-01/telemetry")
            if !registered =>
        {
            forbidden("unknown Lambda-Extension-Identifier")
        }
        ("POST", "/2020-01-01/extension/register") => Response {
            status: 200,
            headers: vec![(
                "Lambda-Extension-Identifier".into(),
                "bench-ext-0001".into(),
            )],
            body:
                br#"{"functionName":"bench","functionVersion":"$LATEST","handler":"bench.handler"}"#
                    .to_vec(),
        },
        ("GET", "/2020-01-01/extension/event/next") => {
            if let Ok(mut calls) = state.next_calls.lock() {
                calls.push(Instant::now());
            }
            state.next_cv.notify_all();
            let Ok(mut q) = state.events.lock() else {
                return Response {
                    status: 500,
                    headers: vec![],
                    body: vec![],
                };
            };
            loop {
                if let Some(ev) = q.pop_front() {
                    return Response {
                        status: 200,
                        headers: vec![("Lambda-Extension-Event-Identifier".into(), "ev".into())],
                        body: ev.into_bytes(),
                    };
                }
                match state.events_cv.wait(q) {
                    Ok(g) => q = g,
                    Err(_) => {
                        return Response {
                            status: 500,
                            headers: vec![],
                            body: vec![],
                        };
                    }
                }
            }
        }
        ("PUT", "/2022-07-01/telemetry") => {
            let uri = serde_json::from_slice::<serde_json::Value>(&req.body)
                .ok()
                .and_then(|v| {
                    v.pointer("/destination/URI")
                        .and_then(|u| u.as_str())
                        .map(str::to_owned)
                });
            if let Ok(mut t) = state.telemetry.lock() {
                *t = uri;
            }
            Response::ok("OK")
        }
        ("POST", p) if p.ends_with("/error") => Response {
            status: 202,
            headers: vec![],
            body: b"{}".to_vec(),
        },
        _ => Response {
            status: 404,
            headers: vec![],
            body: vec![],
        },
    }
}

pub fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, UTC, as the Telemetry API writes `time`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_665_532_815_064);
        assert_eq!(rfc3339(t), "2022-10-12T00:00:15.064Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
