//! OTLP/gRPC receiver: the three collector services, gzip accepted, the decoded-message size
//! capped at `max_decompressed_bytes` by tonic itself (it refuses a frame that declares more, and
//! stops inflating at the cap, so a bomb is never held whole).
//!
//! Each service sits behind a [`Guard`] that owns every refusal made before the handler runs:
//! bearer auth (UNAUTHENTICATED), and whatever tonic's decoder answered on its own. tonic says
//! INTERNAL for a protobuf or gzip that does not decode and OUT_OF_RANGE or RESOURCE_EXHAUSTED
//! for a message over the cap, and never calls the handler, so those refusals would be neither
//! counted nor answered as OTLP says. The guard marks each request ([`Reached`]); a response to
//! a request the handler never saw is classified, counted under the same reasons as OTLP/HTTP
//! (`malformed`, `too_large`, `unsupported_media_type`) and re-answered:
//!
//! - malformed → INVALID_ARGUMENT (OTLP: not retryable) with the decoder's reason;
//! - oversize → RESOURCE_EXHAUSTED **without** RetryInfo. OTLP/gRPC: "RESOURCE_EXHAUSTED … SHOULD
//!   be treated as non-retryable" unless the server adds RetryInfo; the request will never fit, so
//!   it must not invite a retry. OUT_OF_RANGE (tonic's answer for a declared length over the cap)
//!   is in OTLP's *retryable* list, which would make every client resend the same oversize batch.
//!   RESOURCE_EXHAUSTED is also what gRPC libraries (and tonic when inflating) say for "message
//!   larger than max". Caveat: the Python SDK (1.x) retries RESOURCE_EXHAUSTED whatever the
//!   details say, until its export timeout; spec-following clients drop at once.
//! - unsupported `grpc-encoding` → tonic's UNIMPLEMENTED as is (gRPC's compression spec), counted.
//!
//! A full queue is the one temporary refusal: RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo`
//! of 1 s, both in the status details and as `google.rpc.retryinfo-bin` metadata (where the
//! Python SDK reads it).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tonic::{
    Code, Request, Response, Status,
    body::Body,
    codec::CompressionEncoding,
    codegen::{BoxFuture, Service},
    metadata::{MetadataMap, MetadataValue},
    server::NamedService,
    service::Routes,
};

use super::{ExportResponse, Ingest, Protocol, Reject, Signal, decode::Decoded, now_s};

/// Encodes a `google.rpc.Status` (code 1, message 2, details 3) by hand: three fields do not
/// justify a generated type. `retry_secs` adds a `google.rpc.RetryInfo` detail.
pub fn rpc_status(code: i32, message: &str, retry_secs: Option<i64>) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_bytes(tag: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag << 3 | 2), out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }
    let mut out = Vec::new();
    varint(1 << 3, &mut out);
    varint(code as u64, &mut out);
    field_bytes(2, message.as_bytes(), &mut out);
    if let Some(secs) = retry_secs {
        // Any { type_url = 1, value = 2 }
        let mut any = Vec::new();
        field_bytes(1, b"type.googleapis.com/google.rpc.RetryInfo", &mut any);
        field_bytes(2, &retry_info(secs), &mut any);
        field_bytes(3, &any, &mut out);
    }
    out
}

/// `google.rpc.RetryInfo { retry_delay = Duration { seconds = secs } }`, encoded.
pub fn retry_info(secs: i64) -> Vec<u8> {
    let secs = secs.max(0) as u64;
    let mut duration = vec![1 << 3];
    let mut v = secs;
    while v >= 0x80 {
        duration.push((v as u8) | 0x80);
        v >>= 7;
    }
    duration.push(v as u8);
    let mut retry = vec![1 << 3 | 2, duration.len() as u8];
    retry.extend_from_slice(&duration);
    retry
}

/// The status a refusal is answered with (the same reasons as OTLP/HTTP's status codes).
fn status_for(reason: Reject, message: &str) -> Status {
    match reason {
        Reject::QueueFull => {
            let mut metadata = MetadataMap::new();
            metadata.insert_bin(
                "google.rpc.retryinfo-bin",
                MetadataValue::from_bytes(&retry_info(1)),
            );
            Status::with_details_and_metadata(
                Code::ResourceExhausted,
                message,
                rpc_status(Code::ResourceExhausted as i32, message, Some(1)).into(),
                metadata,
            )
        }
        Reject::Unauthenticated => Status::unauthenticated(message),
        // Permanent: no RetryInfo (see the module doc).
        Reject::TooLarge => Status::resource_exhausted(message),
        Reject::Malformed => Status::invalid_argument(message),
        Reject::UnsupportedMediaType => Status::unimplemented(message),
        Reject::ShuttingDown => Status::unavailable(message),
    }
}

/// What tonic's own refusal of a request that never reached the handler means: the reason it is
/// counted under, and the status to answer instead (`None`: tonic's answer stands). `None` for
/// an UNIMPLEMENTED without `grpc-encoding`: an unknown method, not an export.
fn classify(status: &Status, max_bytes: usize, encoded: bool) -> Option<(Reject, Option<Status>)> {
    Some(match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => (
            Reject::TooLarge,
            Some(status_for(
                Reject::TooLarge,
                &format!(
                    "request exceeds the {max_bytes}-byte limit (after decompression); \
                     split the batch: {}",
                    status.message()
                ),
            )),
        ),
        Code::Unimplemented if encoded => (Reject::UnsupportedMediaType, None),
        Code::Unimplemented => return None,
        _ => (
            Reject::Malformed,
            Some(status_for(
                Reject::Malformed,
                &format!("malformed OTLP request: {}", status.message()),
            )),
        ),
    })
}

/// Set by the handler on the request it serves, so the [`Guard`] knows which refusals were
/// tonic's.
#[derive(Debug, Clone, Default)]
struct Reached(Arc<AtomicBool>);

#[derive(Debug, Clone)]
struct Svc(Arc<Ingest>);

impl Svc {
    fn accept<Req, Resp: ExportResponse>(
        &self,
        signal: Signal,
        req: Request<Req>,
        decode: impl FnOnce(&Ingest, &Req, u64) -> Decoded,
    ) -> Result<Response<Resp>, Status> {
        if let Some(reached) = req.extensions().get::<Reached>() {
            reached.0.store(true, Ordering::Relaxed);
        }
        let ingest = &self.0;
        if ingest.stopping.is_cancelled() {
            ingest
                .stats
                .rejected(Protocol::Grpc, signal, Reject::ShuttingDown);
            return Err(status_for(Reject::ShuttingDown, "shutting down"));
        }
        let decoded = decode(ingest, req.get_ref(), now_s());
        match ingest.submit(Protocol::Grpc, signal, decoded) {
            Ok(partial) => Ok(Response::new(Resp::accepted(partial))),
            Err(r) => {
                ingest.stats.rejected(Protocol::Grpc, signal, r);
                let msg = match r {
                    Reject::QueueFull => "ingest queue full; retry later",
                    _ => "shutting down",
                };
                Err(status_for(r, msg))
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.accept(Signal::Traces, req, |i, r, now| i.decoder.traces(r, now))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.accept(Signal::Metrics, req, |i, r, now| i.decoder.metrics(r, now))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.accept(Signal::Logs, req, |i, r, now| i.decoder.logs(r, now))
    }
}

/// One signal's service behind auth and the classification of tonic's own refusals (module doc).
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    ingest: Arc<Ingest>,
    signal: Signal,
}

impl Guard<()> {
    fn around<S>(self, inner: S) -> Guard<S> {
        Guard {
            inner,
            ingest: self.ingest,
            signal: self.signal,
        }
    }
}

impl<S: NamedService> NamedService for Guard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let (ingest, signal) = (self.ingest.clone(), self.signal);
        let header = req.headers().get(http::header::AUTHORIZATION);
        if !ingest.authorized(header.map(|v| v.as_bytes())) {
            ingest
                .stats
                .rejected(Protocol::Grpc, signal, Reject::Unauthenticated);
            let status = status_for(Reject::Unauthenticated, "missing or wrong bearer token");
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let encoded = req.headers().contains_key("grpc-encoding");
        let reached = Reached::default();
        req.extensions_mut().insert(reached.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            if reached.0.load(Ordering::Relaxed) {
                return Ok(resp);
            }
            let Some(status) = Status::from_header_map(resp.headers()) else {
                return Ok(resp);
            };
            if status.code() == Code::Ok {
                return Ok(resp);
            }
            let Some((reason, answer)) = classify(&status, ingest.max_decompressed_bytes, encoded)
            else {
                return Ok(resp);
            };
            ingest.stats.rejected(Protocol::Grpc, signal, reason);
            tracing::debug!(signal = signal.label(), reason = reason.label(), %status, "gRPC request refused before decoding finished");
            Ok(match answer {
                Some(s) => s.into_http(),
                None => resp,
            })
        })
    }
}

/// The three services, ready for `tonic::transport::Server::add_routes`.
pub fn routes(ingest: Ingest) -> Routes {
    let ingest = Arc::new(ingest);
    let max = ingest.max_decompressed_bytes;
    let svc = Svc(ingest.clone());
    let guard = |signal| Guard {
        inner: (),
        ingest: ingest.clone(),
        signal,
    };
    let traces = TraceServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let metrics = MetricsServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let logs = LogsServiceServer::new(svc)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    Routes::new(guard(Signal::Traces).around(traces))
        .add_service(guard(Signal::Metrics).around(metrics))
        .add_service(guard(Signal::Logs).around(logs))
}
