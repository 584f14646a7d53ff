//! A small blocking HTTP/1.1 client for tests, with a timeout on every request.
//!
//! Built on hyper's client over a per-call current-thread tokio runtime, so plain `#[test]`
//! functions can call it. Header names in [`Response::headers`] are lowercase.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A received response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// `(lowercase name, value)` in received order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request; `Err` on connection failure or timeout (never on an HTTP error status).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Response> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let req = builder.body(Full::new(Bytes::copy_from_slice(body)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let fut = async {
            let resp = client.request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp.into_body().collect().await?.to_bytes().to_vec();
            anyhow::Ok(Response {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| anyhow::anyhow!("{url}: no response within {timeout:?}"))?
    })
}

/// `GET url`.
pub fn get(url: &str, timeout: Duration) -> anyhow::Result<Response> {
    request("GET", url, &[], &[], timeout)
}

/// `POST url` with a JSON body.
pub fn post_json(
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let bytes = serde_json::to_vec(body)?;
    request(
        "POST",
        url,
        &[("content-type", "application/json")],
        &bytes,
        timeout,
    )
}
