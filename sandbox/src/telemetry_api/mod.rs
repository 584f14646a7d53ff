//! Telemetry API (`PUT /2022-07-01/telemetry`): subscriptions, event shapes and delivery.
//!
//! Consumes an extension's subscribe request; validates it as documented (schema version
//! `2022-07-01`/`2022-12-13`/`2025-01-29`, destination protocol `HTTP`, types among
//! `platform`/`function`/`extension`, buffering `maxItems` 1,000–10,000, `maxBytes`
//! 262,144–1,048,576, `timeoutMs` 25–30,000) and answers 400 `ValidationError` otherwise, 400
//! `InvalidRequestFormat` for malformed JSON. Produces one [`delivery`] task per subscriber fed by a
//! bounded queue; events emitted during INIT before the subscription are replayed to it.
//!
//! The destination host `sandbox.localdomain` (the name Lambda documents) resolves to 127.0.0.1;
//! `localhost` and `127.0.0.1` are accepted too. `TCP` destinations are refused with a 400 that says
//! so: the sandbox delivers over HTTP only.

pub mod delivery;
pub mod events;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::put,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::{
    api_error::api_error,
    environment::state::EnvShared,
    extensions_api::identify,
    telemetry_api::{
        delivery::{BatchPolicy, Destination, Subscriber},
        events::{Schema, Stream},
    },
};

/// The documented host name of the sandbox network, as seen from inside the environment.
pub const SANDBOX_HOST: &str = "sandbox.localdomain";

pub fn routes() -> Router<Arc<EnvShared>> {
    Router::new()
        .route("/2022-07-01/telemetry", put(subscribe))
        .route("/2022-07-01/telemetry/", put(subscribe))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeBody {
    schema_version: String,
    destination: DestinationBody,
    types: Vec<String>,
    #[serde(default)]
    buffering: Option<BufferingBody>,
}

#[derive(Debug, Deserialize)]
struct DestinationBody {
    protocol: String,
    #[serde(rename = "URI")]
    uri: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BufferingBody {
    max_items: Option<u64>,
    max_bytes: Option<u64>,
    timeout_ms: Option<u64>,
}

/// A validated subscription request.
#[derive(Debug, PartialEq)]
pub struct Subscription {
    pub schema: Schema,
    pub types: Vec<Stream>,
    pub policy: BatchPolicy,
    pub addr: SocketAddr,
    pub path: String,
    pub uri: String,
}

/// Validates a subscribe body. `Err((errorType, message))`.
pub fn validate(body: &[u8]) -> Result<Subscription, (&'static str, String)> {
    let b: SubscribeBody = serde_json::from_slice(body).map_err(|e| {
        (
            "InvalidRequestFormat",
            format!("cannot parse the subscribe body: {e}"),
        )
    })?;
    let schema = Schema::parse(&b.schema_version).ok_or((
        "ValidationError",
        format!(
            "schemaVersion {} is not one of 2022-07-01, 2022-12-13, 2025-01-29",
            b.schema_version
        ),
    ))?;
    if b.destination.protocol == "TCP" {
        return Err((
            "ValidationError",
            "destination protocol TCP is not supported by lambdawatch-sandbox; use HTTP".into(),
        ));
    }
    if b.destination.protocol != "HTTP" {
        return Err((
            "ValidationError",
            format!(
                "destination protocol {} is not HTTP or TCP",
                b.destination.protocol
            ),
        ));
    }
    let (addr, path) = parse_destination(&b.destination.uri).ok_or((
        "ValidationError",
        format!("invalid destination URI {}", b.destination.uri),
    ))?;
    if b.types.is_empty() {
        return Err(("ValidationError", "types must not be empty".into()));
    }
    let mut types = Vec::new();
    for t in &b.types {
        let s = Stream::parse(t).ok_or((
            "ValidationError",
            format!("type {t} is not one of platform, function, extension"),
        ))?;
        if !types.contains(&s) {
            types.push(s);
        }
    }
    let buf = b.buffering.unwrap_or(BufferingBody {
        max_items: None,
        max_bytes: None,
        timeout_ms: None,
    });
    let check = |name: &str, v: Option<u64>, (lo, hi): (u64, u64), default: u64| {
        let v = v.unwrap_or(default);
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err((
                "ValidationError",
                format!("buffering.{name} {v} is outside {lo}..={hi}"),
            ))
        }
    };
    let max_items = check(
        "maxItems",
        buf.max_items,
        delivery::MAX_ITEMS_RANGE,
        delivery::DEFAULT_MAX_ITEMS,
    )?;
    let max_bytes = check(
        "maxBytes",
        buf.max_bytes,
        delivery::MAX_BYTES_RANGE,
        delivery::DEFAULT_MAX_BYTES,
    )?;
    let timeout_ms = check(
        "timeoutMs",
        buf.timeout_ms,
        delivery::TIMEOUT_MS_RANGE,
        delivery::DEFAULT_TIMEOUT_MS,
    )?;
    Ok(Subscription {
        schema,
        types,
        policy: BatchPolicy {
            max_items: max_items as usize,
            max_bytes: max_bytes as usize,
            timeout: Duration::from_millis(timeout_ms),
        },
        addr,
        path,
        uri: b.destination.uri,
    })
}

/// `http://sandbox.localdomain:PORT/path` → (127.0.0.1:PORT, "/path").
fn parse_destination(uri: &str) -> Option<(SocketAddr, String)> {
    let rest = uri.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if port == 0 {
        return None;
    }
    match host {
        SANDBOX_HOST | "localhost" | "127.0.0.1" => {
            Some((SocketAddr::from(([127, 0, 0, 1], port)), path))
        }
        _ => None,
    }
}

async fn subscribe(State(env): State<Arc<EnvShared>>, headers: HeaderMap, body: Bytes) -> Response {
    let id = match identify(&env, &headers) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let sub = match validate(&body) {
        Ok(s) => s,
        Err((kind, msg)) => return api_error(StatusCode::BAD_REQUEST, kind, msg),
    };
    let capacity = env.info.function.telemetry_queue_capacity;
    let (tx, rx) = mpsc::channel(capacity);
    let dropped = Arc::new(delivery::DropCounter::default());
    let name;
    {
        let mut st = env.lock();
        let Some(ext) = st.extensions.iter().find(|e| e.id == id) else {
            return api_error(
                StatusCode::FORBIDDEN,
                "Extension.UnknownExtensionIdentifier",
                format!("Unknown extension {id}"),
            );
        };
        name = ext.name.clone();
        // A new subscription replaces the extension's previous one.
        st.subscribers.retain(|s| s.extension_id != id);
        let subscriber = Subscriber {
            extension_id: id.clone(),
            name: name.clone(),
            schema: sub.schema,
            platform: sub.types.contains(&Stream::Platform),
            function: sub.types.contains(&Stream::Function),
            extension: sub.types.contains(&Stream::Extension),
            tx,
            dropped: dropped.clone(),
        };
        // Replay what happened during INIT before this subscription. The backlog is cleared when
        // INIT succeeds and kept when it fails, so an extension that subscribes while a failed
        // INIT is being shut down (the runtime exited before it got here) still sees the
        // `platform.initReport` with the failure.
        for ev in &st.backlog {
            if crate::environment::state::wants(&subscriber, ev.stream) {
                let _ = subscriber.tx.try_send(ev.render(subscriber.schema));
            }
        }
        st.subscribers.push(subscriber);
    }
    env.deliveries.spawn(delivery::run(
        rx,
        Destination {
            addr: sub.addr,
            path: sub.path,
            uri: sub.uri,
        },
        sub.policy,
        delivery::EnvLink {
            gate_open: env.gate.subscribe(),
            draining: env.draining.subscribe(),
            stats: env.delivery_stats.clone(),
            dropped,
            schema: sub.schema,
        },
    ));
    let type_names: Vec<&str> = sub
        .types
        .iter()
        .map(|t| match t {
            Stream::Platform => "platform",
            Stream::Function => "function",
            Stream::Extension => "extension",
        })
        .collect();
    env.emit(events::telemetry_subscription(&name, &type_names));
    (StatusCode::OK, "OK").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(buffering: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":"2022-12-13","destination":{{"protocol":"HTTP","URI":"http://sandbox.localdomain:8080/x"}},"types":["platform","function"]{buffering}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn buffering_limits_table() {
        let cases = [
            ("", true),
            (
                r#","buffering":{"maxItems":1000,"maxBytes":262144,"timeoutMs":25}"#,
                true,
            ),
            (
                r#","buffering":{"maxItems":10000,"maxBytes":1048576,"timeoutMs":30000}"#,
                true,
            ),
            (r#","buffering":{"maxItems":999}"#, false),
            (r#","buffering":{"maxItems":10001}"#, false),
            (r#","buffering":{"maxBytes":262143}"#, false),
            (r#","buffering":{"maxBytes":1048577}"#, false),
            (r#","buffering":{"timeoutMs":24}"#, false),
            (r#","buffering":{"timeoutMs":30001}"#, false),
        ];
        for (buf, ok) in cases {
            let r = validate(&body(buf));
            assert_eq!(r.is_ok(), ok, "{buf}: {r:?}");
            if let Err((kind, _)) = r {
                assert_eq!(kind, "ValidationError");
            }
        }
        let s = validate(&body("")).unwrap();
        assert_eq!(s.addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(s.path, "/x");
        assert_eq!(s.policy.timeout, Duration::from_millis(1000));
    }

    #[test]
    fn bad_bodies() {
        assert_eq!(
            validate(b"{not json").unwrap_err().0,
            "InvalidRequestFormat"
        );
        let bad_schema = String::from_utf8(body(""))
            .unwrap()
            .replace("2022-12-13", "2021-01-01");
        assert_eq!(
            validate(bad_schema.as_bytes()).unwrap_err().0,
            "ValidationError"
        );
        let remote = String::from_utf8(body(""))
            .unwrap()
            .replace("sandbox.localdomain", "example.com");
        assert!(validate(remote.as_bytes()).is_err());
        let bad_type = String::from_utf8(body(""))
            .unwrap()
            .replace("\"function\"", "\"logs\"");
        assert!(validate(bad_type.as_bytes()).is_err());
    }
}
