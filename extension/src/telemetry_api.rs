//! Telemetry API: the subscription and the HTTP listener Lambda POSTs batches to.
//!
//! Consumes Lambda's POSTs; produces [`Received`] batches (parsed events + parse stats) on a
//! bounded channel to `lifecycle`. **When the channel is full the listener awaits** before
//! answering, so Lambda's own buffer absorbs the burst (and reports `platform.logsDropped` if it
//! must drop). Every request is answered 200 — even garbage — so Lambda never redelivers poison;
//! what could not be used is counted.
//!
//! Subscription: `platform`, `function`, `extension` (logs only when captured), schema
//! `2025-01-29`, falling back to `2022-12-13` when refused; buffering at the minimum `timeoutMs`
//! (25) for responsiveness. A 202 `Telemetry.NotSupported` (the RIE's classic mode) means
//! lifecycle events only.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::events::{Event, ParseStats, parse_batch};
use crate::extensions_api::HEADER_ID;
use crate::http::HttpClient;

pub const TELEMETRY_API_VERSION: &str = "2022-07-01";
pub const SCHEMA_LATEST: &str = "2025-01-29";
pub const SCHEMA_FALLBACK: &str = "2022-12-13";
pub const BUFFER_TIMEOUT_MS: u64 = 25;
pub const BUFFER_MAX_ITEMS: u64 = 1000;
pub const BUFFER_MAX_BYTES: u64 = 262_144;
/// A POST body larger than this is refused (answered 200, counted).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const NOT_SUPPORTED: &str = "Telemetry.NotSupported";
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One POST, parsed.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub events: Vec<Event>,
    pub stats: ParseStats,
    /// The body exceeded [`MAX_BODY_BYTES`] or could not be read.
    pub body_lost: bool,
}

/// Binds the listener and serves it in the background.
pub async fn listen(addr: SocketAddr, tx: mpsc::Sender<Received>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    crate::warn!("telemetry-accept", "telemetry listener accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, tx.clone()));
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    crate::warn!("telemetry-conn", "telemetry connection error: {e}");
                }
            });
        }
    });
    Ok(local)
}

async fn handle(
    req: Request<Incoming>,
    tx: mpsc::Sender<Received>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let received = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => {
            let (events, stats) = parse_batch(&b.to_bytes());
            Received {
                events,
                stats,
                body_lost: false,
            }
        }
        Err(_) => Received {
            body_lost: true,
            ..Default::default()
        },
    };
    // Awaits while the loop is behind: backpressure to Lambda, never unbounded memory.
    let _ = tx.send(received).await;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Subscribed {
        schema: &'static str,
    },
    /// 202 `Telemetry.NotSupported`: keep going on lifecycle events only.
    NotSupported,
    Failed(String),
}

/// The subscribe request body.
pub fn subscribe_body(schema: &str, port: u16, capture_logs: bool) -> String {
    let types: &[&str] = if capture_logs {
        &["platform", "function", "extension"]
    } else {
        &["platform"]
    };
    serde_json::json!({
        "schemaVersion": schema,
        "destination": {
            "protocol": "HTTP",
            "URI": format!("http://{}:{port}", crate::config::TELEMETRY_HOST),
        },
        "types": types,
        "buffering": {
            "maxItems": BUFFER_MAX_ITEMS,
            "maxBytes": BUFFER_MAX_BYTES,
            "timeoutMs": BUFFER_TIMEOUT_MS,
        },
    })
    .to_string()
}

pub async fn subscribe(
    client: &HttpClient,
    runtime_api: &str,
    extension_id: &str,
    port: u16,
    capture_logs: bool,
) -> Subscription {
    let url = format!("http://{runtime_api}/{TELEMETRY_API_VERSION}/telemetry");
    let mut last = String::new();
    for schema in [SCHEMA_LATEST, SCHEMA_FALLBACK] {
        let req = match Request::builder()
            .method(Method::PUT)
            .uri(&url)
            .header(HEADER_ID, extension_id)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(subscribe_body(
                schema,
                port,
                capture_logs,
            )))) {
            Ok(r) => r,
            Err(e) => return Subscription::Failed(e.to_string()),
        };
        let resp = match client.send(req, Some(SUBSCRIBE_TIMEOUT)).await {
            Ok(r) => r,
            Err(e) => return Subscription::Failed(e.to_string()),
        };
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        match resp.status.as_u16() {
            202 if body.contains(NOT_SUPPORTED) => return Subscription::NotSupported,
            200..=299 => return Subscription::Subscribed { schema },
            // Refused (typically 400 InvalidRequest for an unknown schema): try the older one.
            code => last = format!("HTTP {code}: {body}"),
        }
    }
    Subscription::Failed(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_body_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&subscribe_body(SCHEMA_LATEST, 4243, true)).unwrap();
        assert_eq!(v["schemaVersion"], "2025-01-29");
        assert_eq!(v["destination"]["URI"], "http://sandbox.localdomain:4243");
        assert_eq!(v["destination"]["protocol"], "HTTP");
        assert_eq!(v["buffering"]["timeoutMs"], 25);
        assert_eq!(
            v["types"],
            serde_json::json!(["platform", "function", "extension"])
        );
        let v: serde_json::Value =
            serde_json::from_str(&subscribe_body(SCHEMA_FALLBACK, 1, false)).unwrap();
        assert_eq!(v["types"], serde_json::json!(["platform"]));
    }

    #[tokio::test]
    async fn listener_answers_200_to_garbage_and_forwards_the_rest() {
        let (tx, mut rx) = mpsc::channel(4);
        let addr = listen("127.0.0.1:0".parse().unwrap(), tx).await.unwrap();
        let client = HttpClient::new();
        for body in [
            &b"not json at all"[..],
            br#"[{"time":"2022-10-12T00:03:50.000Z","type":"function","record":"hi"}, {"type":"x.y"}]"#,
        ] {
            let req = Request::builder()
                .method(Method::POST)
                .uri(format!("http://{addr}/"))
                .body(Full::new(Bytes::from_static(body)))
                .unwrap();
            let resp = client.send(req, Some(Duration::from_secs(5))).await.unwrap();
            assert_eq!(resp.status, StatusCode::OK);
        }
        let first = rx.recv().await.unwrap();
        assert!(first.events.is_empty());
        assert_eq!(first.stats.malformed, 1);
        let second = rx.recv().await.unwrap();
        assert_eq!(second.events.len(), 1);
        assert_eq!(second.stats.unknown_types, 1);
    }
}
