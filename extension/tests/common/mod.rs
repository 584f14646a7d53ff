//! A capturing OTLP/HTTP endpoint for tests: decodes what the exporter sends (gzip or not,
//! protobuf) and can misbehave on purpose (status codes, hanging after accepting). Serves plain
//! HTTP, or HTTPS with a certificate from a test CA made at run time ([`TestPki`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Accept,
    /// Answer this status to the first `n` requests, then accept.
    FailFirst(u16, usize),
    /// Accept the connection and the request, never answer.
    Hang,
    /// Hang on the first `n` requests, then accept.
    HangFirst(usize),
}

#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub raw: Vec<u8>,
    /// Decompressed body.
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct Capture {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Captured>>>,
    /// Connections whose TLS handshake failed (HTTPS captures only).
    pub tls_failures: Arc<Mutex<Vec<String>>>,
    tls: bool,
}

/// A throw-away CA and a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct TestPki {
    /// The CA certificate, PEM (what `OTEL_EXPORTER_OTLP_CERTIFICATE` points at).
    pub ca_pem: String,
    pub server_cert: rustls::pki_types::CertificateDer<'static>,
    pub server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestPki {
    pub fn new() -> TestPki {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn for_names(names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "lambdawatch test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            server_cert: leaf.der().clone(),
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// Writes the CA certificate to a PEM file and returns it (deleted on drop).
    pub fn ca_file(&self) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(self.ca_pem.as_bytes()).unwrap();
        f
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![self.server_cert.clone()], self.server_key.clone_key())
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

impl Capture {
    /// Starts on its own thread and runtime, so it serves sync and async tests alike.
    pub fn start(behaviour: Behaviour) -> Capture {
        Self::start_on(0, behaviour)
    }

    /// HTTPS only, with `pki`'s server certificate.
    pub fn start_tls(behaviour: Behaviour, pki: &TestPki) -> Capture {
        Self::serve(0, behaviour, Some(pki.acceptor()))
    }

    /// On a given port (0 = any).
    pub fn start_on(port: u16, behaviour: Behaviour) -> Capture {
        Self::serve(port, behaviour, None)
    }

    fn serve(port: u16, behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> Capture {
        let requests: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let tls_failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let is_tls = tls.is_some();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let reqs = requests.clone();
        let fails = tls_failures.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let seen = Arc::new(Mutex::new(0usize));
                loop {
                    let (s, _) = l.accept().await.unwrap();
                    let reqs = reqs.clone();
                    let seen = seen.clone();
                    let tls = tls.clone();
                    let fails = fails.clone();
                    tokio::spawn(async move {
                        let s: Box<dyn Io> = match tls {
                            None => Box::new(s),
                            Some(acc) => match acc.accept(s).await {
                                Ok(t) => Box::new(t),
                                Err(e) => {
                                    fails.lock().unwrap().push(e.to_string());
                                    return;
                                }
                            },
                        };
                        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let reqs = reqs.clone();
                            let seen = seen.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect::<Vec<_>>();
                                let gz = headers
                                    .iter()
                                    .any(|(k, v)| k == "content-encoding" && v == "gzip");
                                let raw =
                                    req.into_body().collect().await.unwrap().to_bytes().to_vec();
                                let body = if gz { gunzip(&raw) } else { raw.clone() };
                                let n = {
                                    let mut s = seen.lock().unwrap();
                                    *s += 1;
                                    *s
                                };
                                let status = match behaviour {
                                    Behaviour::HangFirst(k) if n <= k => {
                                        tokio::time::sleep(Duration::from_secs(3600)).await;
                                        200
                                    }
                                    Behaviour::Hang => {
                                        tokio::time::sleep(Duration::from_secs(3600)).await;
                                        200
                                    }
                                    Behaviour::FailFirst(code, k) if n <= k => code,
                                    _ => 200,
                                };
                                if status == 200 {
                                    reqs.lock().unwrap().push(Captured {
                                        path,
                                        headers,
                                        raw,
                                        body,
                                    });
                                }
                                let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    });
                }
            });
        });
        let addr = rx.recv().unwrap();
        Capture {
            addr,
            requests,
            tls_failures,
            tls: is_tls,
        }
    }

    /// `http://127.0.0.1:port`, or `https://localhost:port` for an HTTPS capture (the name the
    /// certificate was issued for, so the client checks it).
    pub fn base(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub fn tls_failures(&self) -> Vec<String> {
        self.tls_failures.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<(Resource, Span)> {
        let mut out = Vec::new();
        for r in self.requests().iter().filter(|r| r.path == "/v1/traces") {
            let req = ExportTraceServiceRequest::decode(r.body.as_slice()).unwrap();
            for rs in req.resource_spans {
                let res = rs.resource.clone().unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        out.push((res.clone(), s));
                    }
                }
            }
        }
        out
    }

    pub fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for r in self.requests().iter().filter(|r| r.path == "/v1/metrics") {
            let req = ExportMetricsServiceRequest::decode(r.body.as_slice()).unwrap();
            for rm in req.resource_metrics {
                for sm in rm.scope_metrics {
                    out.extend(sm.metrics);
                }
            }
        }
        out
    }

    pub fn logs(&self) -> Vec<LogRecord> {
        let mut out = Vec::new();
        for r in self.requests().iter().filter(|r| r.path == "/v1/logs") {
            let req = ExportLogsServiceRequest::decode(r.body.as_slice()).unwrap();
            for rl in req.resource_logs {
                for sl in rl.scope_logs {
                    out.extend(sl.log_records);
                }
            }
        }
        out
    }

    /// The resource of every resource-level entry of every request (traces, metrics, logs),
    /// with the request's path.
    pub fn resources(&self) -> Vec<(String, Resource)> {
        let mut out = Vec::new();
        for r in self.requests() {
            let b = r.body.as_slice();
            let rs: Vec<Option<Resource>> = match r.path.as_str() {
                "/v1/traces" => ExportTraceServiceRequest::decode(b)
                    .unwrap()
                    .resource_spans
                    .into_iter()
                    .map(|x| x.resource)
                    .collect(),
                "/v1/metrics" => ExportMetricsServiceRequest::decode(b)
                    .unwrap()
                    .resource_metrics
                    .into_iter()
                    .map(|x| x.resource)
                    .collect(),
                "/v1/logs" => ExportLogsServiceRequest::decode(b)
                    .unwrap()
                    .resource_logs
                    .into_iter()
                    .map(|x| x.resource)
                    .collect(),
                other => panic!("unexpected OTLP path {other}"),
            };
            out.extend(
                rs.into_iter()
                    .map(|x| (r.path.clone(), x.unwrap_or_default())),
            );
        }
        out
    }

    /// Polls until `f` holds or `timeout` passes (waiting on a peer process, not on a policy).
    pub fn wait_for(&self, timeout: Duration, f: impl Fn(&Capture) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        f(self)
    }
}
