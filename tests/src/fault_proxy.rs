//! A fault-injecting HTTP proxy for AWS API calls, on a free loopback port.
//!
//! It sits between a process under test (its AWS endpoint pointed at [`FaultProxy::url`]) and an
//! AWS API emulator (`moto_server`). Every request is classified by operation ([`operation`]:
//! the `X-Amz-Target` of the JSON protocols, the `Action=` of the query protocol, or
//! `METHOD /path` of the REST protocols), matched against [`Rule`]s, and either answered with the
//! rule's next [`Fault`] — a throttling error or a 5xx **in that service's protocol**, so the SDK
//! classifies it as it would a real one — or forwarded unchanged. Every attempt is recorded
//! ([`Attempt`]): arrival time, operation, the SDK's invocation id and attempt number
//! (`amz-sdk-invocation-id`, `amz-sdk-request`), the access key id it was signed with, what was
//! injected and the status the caller got. Tests derive retries, failures and backoff gaps from
//! these records and compare them with what the process reports about itself.
//!
//! The proxy runs on its own thread (a current-thread tokio runtime); it stops when dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An error answered instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The service's throttling error: 400 `ThrottlingException` (JSON protocols), 400
    /// `Throttling` (query protocol), 429 `ThrottledException` (REST-JSON), 503 `SlowDown` (S3).
    Throttle,
    /// 500 `InternalFailure` in the service's protocol.
    Internal,
    /// 503 `ServiceUnavailable` in the service's protocol.
    Unavailable,
}

/// Which requests get which faults: the first `faults.len()` matching attempts get them, in
/// order; later ones are forwarded.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Exact operation ([`operation`]), e.g. `PutItem`, `GetMetricData`, `PUT /bucket/key`.
    pub op: String,
    /// Only requests whose body contains this (e.g. a DynamoDB key).
    pub body_contains: Option<String>,
    pub faults: VecDeque<Fault>,
}

impl Rule {
    pub fn new(name: &str, op: &str, faults: &[Fault]) -> Self {
        Self {
            name: name.to_owned(),
            op: op.to_owned(),
            body_contains: None,
            faults: faults.iter().copied().collect(),
        }
    }

    pub fn body_contains(mut self, s: &str) -> Self {
        self.body_contains = Some(s.to_owned());
        self
    }

    fn matches(&self, op: &str, body: &[u8]) -> bool {
        self.op == op
            && self
                .body_contains
                .as_ref()
                .is_none_or(|s| body.windows(s.len().max(1)).any(|w| w == s.as_bytes()))
    }
}

/// One request that reached the proxy.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub op: String,
    /// `amz-sdk-invocation-id`: the same for every attempt of one SDK operation.
    pub invocation: String,
    /// `amz-sdk-request: attempt=N`; 1 for the first attempt.
    pub attempt: u32,
    /// The access key id of the SigV4 `Authorization` header (`Credential=AKID/...`).
    pub access_key_id: Option<String>,
    /// The rule that injected a fault into this attempt, and the fault.
    pub injected: Option<(String, Fault)>,
    /// What the caller got (injected or moto's).
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    attempts: Vec<Attempt>,
}

/// The running proxy; stopped when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    state: Arc<Mutex<State>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`) with `rules`.
    pub fn start(upstream: &str, rules: Vec<Rule>) -> Self {
        let state = Arc::new(Mutex::new(State {
            rules,
            attempts: Vec::new(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr: SocketAddr = listener.local_addr().expect("proxy addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let client: Client<HttpConnector, Full<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let (client, st, upstream) = (client.clone(), st.clone(), upstream.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                handle(req, client.clone(), st.clone(), upstream.clone())
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            url: format!("http://{addr}"),
            state,
            _stop: stop,
        }
    }

    /// Adds a rule after the existing ones (it applies from the next request on).
    pub fn add_rule(&self, rule: Rule) {
        self.state.lock().expect("proxy state").rules.push(rule);
    }

    /// Every attempt so far, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.lock().expect("proxy state").attempts.clone()
    }

    /// Faults not injected yet, per rule name.
    pub fn pending(&self) -> Vec<(String, usize)> {
        self.state
            .lock()
            .expect("proxy state")
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.faults.len()))
            .collect()
    }
}

/// What the caller's own counters should say about the attempts the proxy saw: one call per SDK
/// invocation id, a retry per attempt after the first, a failure per call whose last attempt
/// failed and will not be retried (a forwarded error, or an injected fault on the last allowed
/// attempt; an injected fault before that is still being retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    pub calls: u64,
    pub retries: u64,
    pub failures: u64,
    /// Faults injected in total.
    pub injected: u64,
}

/// One SDK call as the proxy saw it: its attempts in order.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: String,
    pub attempts: Vec<Attempt>,
}

/// The attempts grouped by SDK invocation id, in order of first arrival. Panics when an attempt
/// has no invocation id or a call's attempt numbers are not 1, 2, 3, … (something other than the
/// SDK's retry loop sent it).
pub fn calls(attempts: &[Attempt]) -> Vec<Call> {
    let mut out: Vec<Call> = Vec::new();
    for a in attempts {
        assert!(
            !a.invocation.is_empty(),
            "attempt without amz-sdk-invocation-id: {a:?}"
        );
        match out
            .iter_mut()
            .find(|c| c.attempts[0].invocation == a.invocation)
        {
            Some(c) => c.attempts.push(a.clone()),
            None => out.push(Call {
                op: a.op.clone(),
                attempts: vec![a.clone()],
            }),
        }
    }
    for c in &out {
        let numbers: Vec<u32> = c.attempts.iter().map(|a| a.attempt).collect();
        let want: Vec<u32> = (1..=numbers.len() as u32).collect();
        assert_eq!(numbers, want, "attempt numbers of one {} call", c.op);
    }
    out
}

/// [`Accounting`] of `attempts` for a caller allowed `max_attempts` per call.
pub fn accounting(attempts: &[Attempt], max_attempts: u32) -> Accounting {
    let mut acc = Accounting::default();
    for c in calls(attempts) {
        acc.calls += 1;
        acc.retries += c.attempts.len() as u64 - 1;
        acc.injected += c.attempts.iter().filter(|a| a.injected.is_some()).count() as u64;
        let last = &c.attempts[c.attempts.len() - 1];
        let failed =
            last.status >= 400 && (last.injected.is_none() || last.attempt >= max_attempts);
        acc.failures += u64::from(failed);
    }
    acc
}

/// The operation a request calls: the part after the `.` of `X-Amz-Target` (DynamoDB, CloudWatch
/// Logs), the `Action` of a query-protocol form (SNS, CloudWatch 1.99), else `METHOD /path`
/// (X-Ray, S3; the query string left out).
pub fn operation(method: &str, path: &str, target: Option<&str>, body: &[u8]) -> String {
    if let Some(t) = target {
        return t.rsplit('.').next().unwrap_or(t).to_owned();
    }
    if let Some(action) = form_action(body) {
        return action;
    }
    format!("{method} {path}")
}

fn form_action(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(str::to_owned)
}

#[derive(Clone, Copy)]
enum Protocol {
    /// `X-Amz-Target` + `application/x-amz-json-1.x`.
    Json,
    /// Form-encoded `Action=`, XML errors.
    Query,
    /// REST-JSON (X-Ray): `x-amzn-ErrorType` header.
    RestJson,
    /// REST-XML (S3).
    RestXml,
}

fn fault_response(p: Protocol, f: Fault, content_type: &str) -> Response<Full<Bytes>> {
    let (status, code, msg) = match (p, f) {
        (Protocol::Json, Fault::Throttle) => (400, "ThrottlingException", "Rate exceeded"),
        (Protocol::Query, Fault::Throttle) => (400, "Throttling", "Rate exceeded"),
        (Protocol::RestJson, Fault::Throttle) => (429, "ThrottledException", "Rate exceeded"),
        (Protocol::RestXml, Fault::Throttle) => {
            (503, "SlowDown", "Please reduce your request rate.")
        }
        (_, Fault::Internal) => (500, "InternalFailure", "injected internal failure"),
        (_, Fault::Unavailable) => (503, "ServiceUnavailable", "injected unavailability"),
    };
    let b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("x-amzn-requestid", "injected-fault");
    let (b, body) = match p {
        Protocol::Json => (
            b.header("content-type", content_type),
            format!(r#"{{"__type":"{code}","message":"{msg}"}}"#),
        ),
        Protocol::RestJson => (
            b.header("content-type", "application/json")
                .header("x-amzn-errortype", code),
            format!(r#"{{"message":"{msg}"}}"#),
        ),
        Protocol::Query => (
            b.header("content-type", "text/xml"),
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>injected-fault</RequestId></ErrorResponse>"
            ),
        ),
        Protocol::RestXml => (
            b.header("content-type", "application/xml"),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message><RequestId>injected-fault</RequestId></Error>"
            ),
        ),
    };
    b.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle(
    req: Request<Incoming>,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Arc<Mutex<State>>,
    upstream: String,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let h = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok());
    let target = h("x-amz-target");
    let op = operation(parts.method.as_str(), parts.uri.path(), target, &body);
    let protocol = if target.is_some() {
        Protocol::Json
    } else if form_action(&body).is_some() {
        Protocol::Query
    } else if parts.uri.path() == "/TraceSegments" {
        Protocol::RestJson
    } else {
        Protocol::RestXml
    };
    let invocation = h("amz-sdk-invocation-id").unwrap_or_default().to_owned();
    let attempt = h("amz-sdk-request")
        .and_then(|v| {
            v.split(';')
                .find_map(|kv| kv.trim().strip_prefix("attempt="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1);
    let access_key_id = h("authorization").and_then(|a| {
        let c = a.split("Credential=").nth(1)?;
        Some(c.split('/').next()?.to_owned())
    });
    let injected = {
        let mut st = state.lock().expect("proxy state");
        st.rules
            .iter_mut()
            .find(|r| r.matches(&op, &body) && !r.faults.is_empty())
            .and_then(|r| r.faults.pop_front().map(|f| (r.name.clone(), f)))
    };
    let record = |status: u16, injected: Option<(String, Fault)>| {
        state.lock().expect("proxy state").attempts.push(Attempt {
            at,
            op: op.clone(),
            invocation: invocation.clone(),
            attempt,
            access_key_id: access_key_id.clone(),
            injected,
            status,
        });
    };
    if let Some((rule, fault)) = injected {
        let resp = fault_response(
            protocol,
            fault,
            h("content-type").unwrap_or("application/x-amz-json-1.0"),
        );
        record(resp.status().as_u16(), Some((rule, fault)));
        return Ok(resp);
    }
    // Forward unchanged (the Host header the caller signed included).
    let uri = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut fwd = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        fwd = fwd.header(k, v);
    }
    let resp = match fwd.body(Full::new(body)) {
        Ok(r) => client.request(r).await,
        Err(e) => {
            record(502, None);
            return Ok(bad_gateway(&e.to_string()));
        }
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            record(502, None);
            return Ok(bad_gateway(&e.to_string()));
        }
    };
    let (rparts, rbody) = resp.into_parts();
    let rbody = rbody
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    record(rparts.status.as_u16(), None);
    Ok(Response::from_parts(rparts, Full::new(rbody)))
}

fn bad_gateway(msg: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::BAD_GATEWAY)
        .body(Full::new(Bytes::from(format!(
            "proxy: upstream failed: {msg}"
        ))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_of_each_protocol() {
        assert_eq!(
            operation("POST", "/", Some("DynamoDB_20120810.PutItem"), b"{}"),
            "PutItem"
        );
        assert_eq!(
            operation("POST", "/", None, b"Action=Publish&Version=2010-03-31"),
            "Publish"
        );
        assert_eq!(
            operation("POST", "/TraceSegments", None, b"{}"),
            "POST /TraceSegments"
        );
        assert_eq!(operation("PUT", "/b/k", None, b"\x1f\x8b"), "PUT /b/k");
    }

    #[test]
    fn a_rule_injects_its_faults_in_order_then_passes() {
        let mut r = Rule::new("r", "PutItem", &[Fault::Throttle, Fault::Internal])
            .body_contains("lease/leader");
        assert!(r.matches("PutItem", br#"{"pk":{"S":"lease/leader"}}"#));
        assert!(!r.matches("PutItem", br#"{"pk":{"S":"ckpt/a"}}"#));
        assert!(!r.matches("GetItem", br#"{"pk":{"S":"lease/leader"}}"#));
        assert_eq!(r.faults.pop_front(), Some(Fault::Throttle));
        assert_eq!(r.faults.pop_front(), Some(Fault::Internal));
        assert_eq!(r.faults.pop_front(), None);
    }
}
