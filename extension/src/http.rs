//! The one HTTP/1 client the extension uses (Runtime API and OTLP endpoint), with a timeout
//! around every request.
//!
//! `http://` and `https://` URLs both work: Lambda's Runtime API is plain HTTP, an OTLP endpoint
//! may be either (a collector behind an ALB with TLS). TLS is rustls with the `ring` provider,
//! TLS 1.2 and 1.3, HTTP/1 only, verifying the server against Mozilla's roots (`webpki-roots`,
//! compiled in: nothing is read from the file system at run time) plus any extra roots from
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`. No client certificate. A failed handshake (unknown issuer,
//! wrong name, expired) is [`HttpError::Tls`]: the exporter does not retry it and counts the items
//! as `export_failed`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header::HeaderMap};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Responses larger than this are cut (we only read small JSON/protobuf answers).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed (the server's certificate is not trusted, names another host or
    /// has expired; or the server speaks no TLS version we accept). Retrying does not help.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
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

type PlainClient = Client<HttpConnector, Full<Bytes>>;
type TlsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Plain requests go through a plain connector (exactly as before TLS existed); `https://`
/// requests through a rustls connector built on first use, so an `http://`-only extension never
/// pays for TLS set-up at init.
#[derive(Clone, Debug)]
pub struct HttpClient {
    plain: PlainClient,
    tls: Arc<OnceLock<Result<TlsClient, String>>>,
    extra_roots: Arc<[CertificateDer<'static>]>,
}

fn connector() -> HttpConnector {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(2)));
    conn
}

fn pooled<C>(conn: C) -> Client<C, Full<Bytes>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(conn)
}

/// The TLS client: Mozilla's roots plus `extra`, ring provider, safe default versions, HTTP/1.
fn tls_client(extra: &[CertificateDer<'static>]) -> Result<TlsClient, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // Callers validate extra roots up front (config.rs); anything unusable is skipped here.
    roots.add_parsable_certificates(extra.iter().cloned());
    let tls =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("no TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let mut conn = connector();
    conn.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(conn);
    Ok(pooled(https))
}

impl HttpClient {
    /// A client trusting Mozilla's roots for `https://`.
    pub fn new() -> Self {
        Self::with_extra_roots(Vec::new())
    }

    /// A client trusting Mozilla's roots plus `extra` (DER certificates, e.g. the private CA of
    /// an in-house collector, from `OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub fn with_extra_roots(extra: Vec<CertificateDer<'static>>) -> Self {
        Self {
            plain: pooled(connector()),
            tls: Arc::new(OnceLock::new()),
            extra_roots: extra.into(),
        }
    }

    /// Sends `req` and reads the whole response, all within `timeout` (`None` = no limit, for
    /// the `/event/next` long poll).
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Option<Duration>,
    ) -> Result<Response, HttpError> {
        let fut = async {
            let resp = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
                let client = self
                    .tls
                    .get_or_init(|| tls_client(&self.extra_roots))
                    .as_ref()
                    .map_err(|e| HttpError::Tls(e.clone()))?;
                client.request(req).await
            } else {
                self.plain.request(req).await
            }
            .map_err(classify)?;
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

/// A connect error caused by a TLS failure is [`HttpError::Tls`]; anything else is
/// [`HttpError::Connect`]. rustls reports a handshake failure as an `io::Error` wrapping the
/// `rustls::Error` (hyper-rustls wraps that in one more `io::Error`), and `io::Error::source`
/// skips the wrapped error, so both the source chain and `io::Error::get_ref` are followed.
fn classify(e: hyper_util::client::legacy::Error) -> HttpError {
    match find_tls(&e, 0) {
        Some(t) => HttpError::Tls(t.to_string()),
        None => HttpError::Connect(error_chain(&e)),
    }
}

fn find_tls<'a>(e: &'a (dyn std::error::Error + 'static), depth: u8) -> Option<&'a rustls::Error> {
    if depth > 16 {
        return None;
    }
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(t) = find_tls(inner, depth + 1) {
            return Some(t);
        }
    }
    e.source().and_then(|s| find_tls(s, depth + 1))
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
