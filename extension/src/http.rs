//! The one HTTP/1 client the extension uses (Runtime API and OTLP endpoint), with a timeout
//! around every request. Plain `http://` only: Lambda's Runtime API is plain HTTP and the binary
//! stays small without a TLS stack (an `https://` OTLP endpoint is refused with a clear error).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header::HeaderMap};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// Responses larger than this are cut (we only read small JSON/protobuf answers).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("bad request: {0}")]
    Build(String),
    #[error("reading the response failed: {0}")]
    Body(String),
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new() -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(conn);
        Self { inner }
    }

    /// Sends `req` and reads the whole response, all within `timeout` (`None` = no limit, for
    /// the `/event/next` long poll).
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Option<Duration>,
    ) -> Result<Response, HttpError> {
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Connect(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .unwrap_or(Err(HttpError::Timeout(t))),
            None => fut.await,
        }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
