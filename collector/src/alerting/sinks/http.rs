//! The one HTTP client the HTTP sinks share: POST a body, classify the answer.
//!
//! Plain `http://` only: the collector carries no TLS stack, so an `https://` target is refused
//! when the sink is built (put a TLS-terminating proxy or an in-VPC endpoint in front).

use super::DeliveryError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A sink that cannot be built from its settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SinkConfigError {
    #[error("{sink}: invalid URL {url:?}: {reason}")]
    Url {
        sink: &'static str,
        url: String,
        reason: String,
    },
    #[error("{sink}: {reason}")]
    Invalid { sink: &'static str, reason: String },
}

/// How much of an error response body is kept for the log line.
const ERROR_BODY_LIMIT: usize = 512;

#[derive(Clone, Debug)]
pub(super) struct HttpTarget {
    uri: Uri,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpTarget {
    /// `base` must be `http://host[:port][/path]`; `suffix` is appended to its path
    /// (`/api/v2/alerts`).
    pub(super) fn new(
        sink: &'static str,
        base: &str,
        suffix: &str,
        timeout: Duration,
    ) -> Result<Self, SinkConfigError> {
        let err = |reason: &str| SinkConfigError::Url {
            sink,
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed: Uri = base
            .parse()
            .map_err(|e: http::uri::InvalidUri| err(&e.to_string()))?;
        match parsed.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(err(
                    "https is not supported (no TLS in the collector): use http:// to an in-VPC \
                     endpoint or a TLS-terminating proxy",
                ));
            }
            _ => return Err(err("the URL must start with http://")),
        }
        if parsed.host().is_none() {
            return Err(err("the URL has no host"));
        }
        if timeout.is_zero() {
            return Err(SinkConfigError::Invalid {
                sink,
                reason: "timeout must be above 0".into(),
            });
        }
        let joined = format!("{}{}", base.trim_end_matches('/'), suffix);
        let uri: Uri = joined
            .parse()
            .map_err(|e: http::uri::InvalidUri| err(&e.to_string()))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(Self {
            uri,
            timeout,
            client,
        })
    }

    #[cfg(test)]
    pub(super) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// POSTs `body` as JSON with `headers`. 2xx = delivered; 408, 429 and 5xx, connection
    /// errors and timeouts are retryable; other statuses are permanent.
    pub(super) async fn post_json(
        &self,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<(), DeliveryError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("lambdawatch-collector/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| DeliveryError::permanent(format!("cannot build request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| DeliveryError::retryable(format!("POST {}: {e}", self.uri)))?;
            let status = response.status();
            if status.is_success() {
                // Drain (bounded) so the connection can be reused.
                let _ = Limited::new(response.into_body(), 64 * 1024)
                    .collect()
                    .await;
                return Ok(());
            }
            let text = match Limited::new(response.into_body(), ERROR_BODY_LIMIT * 8)
                .collect()
                .await
            {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    let cut = bytes.len().min(ERROR_BODY_LIMIT);
                    String::from_utf8_lossy(&bytes[..cut]).trim().to_owned()
                }
                Err(_) => String::new(),
            };
            let message = format!("POST {} answered {status}: {text}", self.uri);
            Err(if retryable_status(status) {
                DeliveryError::retryable(message)
            } else {
                DeliveryError::permanent(message)
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::retryable(format!(
                "POST {}: no answer within {:?}",
                self.uri, self.timeout
            ))),
        }
    }
}

fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let t = Duration::from_secs(1);
        assert!(HttpTarget::new("webhook", "http://127.0.0.1:9/hook", "", t).is_ok());
        let am = HttpTarget::new("alertmanager", "http://am:9093/", "/api/v2/alerts", t)
            .map(|t| t.uri().to_string());
        assert_eq!(am.as_deref(), Ok("http://am:9093/api/v2/alerts"));
        for bad in [
            "https://hooks.example.com/x",
            "ftp://x",
            "not a url",
            "/relative",
        ] {
            assert!(HttpTarget::new("webhook", bad, "", t).is_err(), "{bad}");
        }
        assert!(HttpTarget::new("webhook", "http://x", "", Duration::ZERO).is_err());
    }

    #[test]
    fn status_classes() {
        for (code, retry) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (401, false),
            (404, false),
        ] {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            assert_eq!(retryable_status(status), retry, "{code}");
        }
    }
}
