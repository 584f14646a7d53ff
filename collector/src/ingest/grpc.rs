//! OTLP/gRPC receiver: the three collector services, gzip accepted, the decoded-message size
//! capped at `max_decompressed_bytes` by tonic itself (which applies the cap while inflating and
//! answers RESOURCE_EXHAUSTED), bearer auth in an interceptor that runs before decoding.

use std::sync::Arc;

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
use tonic::{Code, Request, Response, Status, codec::CompressionEncoding, service::Routes};

use super::{Ingest, Protocol, Reject, Signal, decode::Decoded, now_s};

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
        // google.protobuf.Duration { seconds = 1 }
        let mut duration = Vec::new();
        varint(1 << 3, &mut duration);
        varint(secs as u64, &mut duration);
        // RetryInfo { retry_delay = 1 }
        let mut retry = Vec::new();
        field_bytes(1, &duration, &mut retry);
        // Any { type_url = 1, value = 2 }
        let mut any = Vec::new();
        field_bytes(1, b"type.googleapis.com/google.rpc.RetryInfo", &mut any);
        field_bytes(2, &retry, &mut any);
        field_bytes(3, &any, &mut out);
    }
    out
}

fn status_for(reason: Reject, message: &str) -> Status {
    match reason {
        Reject::QueueFull => Status::with_details(
            Code::ResourceExhausted,
            message,
            rpc_status(Code::ResourceExhausted as i32, message, Some(1)).into(),
        ),
        Reject::Unauthenticated => Status::unauthenticated(message),
        Reject::TooLarge => Status::resource_exhausted(message),
        Reject::Malformed | Reject::UnsupportedMediaType => Status::invalid_argument(message),
        Reject::ShuttingDown => Status::unavailable(message),
    }
}

#[derive(Debug, Clone)]
struct Svc(Arc<Ingest>);

impl Svc {
    fn accept<Req>(
        &self,
        signal: Signal,
        req: Request<Req>,
        decode: impl FnOnce(&Ingest, &Req, u64) -> Decoded,
    ) -> Result<(), Status> {
        let ingest = &self.0;
        if ingest.stopping.is_cancelled() {
            ingest
                .stats
                .rejected(Protocol::Grpc, signal, Reject::ShuttingDown);
            return Err(status_for(Reject::ShuttingDown, "shutting down"));
        }
        let decoded = decode(ingest, req.get_ref(), now_s());
        let items = decoded.items;
        ingest
            .stats
            .foreign_items
            .fetch_add(decoded.foreign, std::sync::atomic::Ordering::Relaxed);
        if let Err(r) = ingest.enqueue(decoded.batch) {
            ingest.stats.rejected(Protocol::Grpc, signal, r);
            return Err(status_for(r, "ingest queue full; retry later"));
        }
        ingest.stats.accepted(Protocol::Grpc, signal, items);
        Ok(())
    }
}

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.accept(Signal::Traces, req, |i, r, now| i.decoder.traces(r, now))?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.accept(Signal::Metrics, req, |i, r, now| i.decoder.metrics(r, now))?;
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.accept(Signal::Logs, req, |i, r, now| i.decoder.logs(r, now))?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

fn interceptor(
    ingest: Arc<Ingest>,
    signal: Signal,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        if ingest.authorized(header) {
            Ok(req)
        } else {
            ingest
                .stats
                .rejected(Protocol::Grpc, signal, Reject::Unauthenticated);
            Err(status_for(
                Reject::Unauthenticated,
                "missing or wrong bearer token",
            ))
        }
    }
}

/// The three services, ready for `tonic::transport::Server::add_routes`.
pub fn routes(ingest: Ingest) -> Routes {
    let ingest = Arc::new(ingest);
    let max = ingest.max_decompressed_bytes;
    let svc = Svc(ingest.clone());
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
    use tonic::service::interceptor::InterceptedService as I;
    Routes::new(I::new(traces, interceptor(ingest.clone(), Signal::Traces)))
        .add_service(I::new(
            metrics,
            interceptor(ingest.clone(), Signal::Metrics),
        ))
        .add_service(I::new(logs, interceptor(ingest, Signal::Logs)))
}
