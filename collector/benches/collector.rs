//! Collector hot paths (`docs/BENCHMARKS.md`, section "Collector"):
//!
//! - `ingest/decode_only` vs `ingest/decode_aggregate` vs `ingest/http_gzip_aggregate`: the same
//!   OTLP/HTTP protobuf payloads of invocation spans, decoded only (prost: the floor) vs decoded,
//!   turned into events (`ingest::decode`) and aggregated (`Aggregates::apply`, the owner task's
//!   work) vs the whole receiver: gzip-encoded requests through the real axum handler
//!   (`ingest::http::router`, in process: headers, capped body read, capped gunzip, decode,
//!   `Ingest::submit` into the bounded queue) and the aggregation of what the queue holds.
//!   Target: ingest ≥ 0.5 × decode-only throughput, ≥ 200,000 spans/s on one core. Before
//!   criterion's figures, interleaved rounds of the floor and of the HTTP+gzip path print their
//!   on-CPU ratio (the machine is shared: ratios of one run, not absolutes).
//! - `evaluate/10k_functions_x_5_slos`: one SLO evaluation of 10,000 functions against the
//!   embedded default spec (5 SLOs). Target ≤ 100 ms.
//! - Memory per function, measured with a counting allocator, printed before the benches run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::{
    alloc::{GlobalAlloc, Layout as AllocLayout, System},
    hint::black_box,
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lambdawatch_collector::{
    aggregate::{Aggregates, Batch, Event, Group, InitKind, Invocation, Outcome, Target},
    ingest::{Ingest, IngestStats, decode::Decoder, http},
    slo::{eval, spec::SloSpec},
};
use lambdawatch_semconv::{
    attr,
    otlp::{kv_f64, kv_i64, kv_str},
    span_type,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Allocations made (not freed: every `alloc` call, `realloc` included) and their bytes.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);

// A counting allocator is the only way to measure heap use from inside the process.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` above with the same layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NOW: u64 = 1_800_000_000;

/// `requests` OTLP/HTTP protobuf bodies of invocation spans that ended in the hour before
/// `now_s` (the HTTP path stamps spans against the real clock: spans from its future would be
/// clamped to the receive time and aggregate differently).
fn payloads(
    requests: usize,
    spans_per_request: usize,
    functions: usize,
    now_s: u64,
) -> Vec<Vec<u8>> {
    (0..requests)
        .map(|r| {
            let f = r % functions;
            let spans = (0..spans_per_request)
                .map(|i| {
                    let end =
                        (now_s - 3600 + (r * spans_per_request + i) as u64 % 3600) * 1_000_000_000;
                    Span {
                        trace_id: vec![7; 16],
                        span_id: (i as u64).to_be_bytes().to_vec(),
                        name: format!("fn-{f}"),
                        kind: 2,
                        start_time_unix_nano: end - 25_000_000,
                        end_time_unix_nano: end,
                        attributes: vec![
                            kv_str(attr::LAMBDAWATCH_SPAN_TYPE, span_type::INVOCATION),
                            kv_str(attr::FAAS_INVOCATION_ID, format!("{r}-{i}")),
                            kv_str(
                                attr::AWS_LAMBDA_OUTCOME,
                                if i % 100 == 0 { "error" } else { "success" },
                            ),
                            kv_f64(attr::AWS_LAMBDA_DURATION_MS, 20.0 + (i % 50) as f64),
                            kv_i64(attr::AWS_LAMBDA_BILLED_DURATION_MS, 21 + (i % 50) as i64),
                            kv_i64(attr::AWS_LAMBDA_MEMORY_SIZE_MB, 512),
                            kv_i64(attr::AWS_LAMBDA_MAX_MEMORY_USED_MB, 90),
                            kv_i64(attr::AWS_LAMBDA_TIMEOUT_MS, 3000),
                        ],
                        ..Default::default()
                    }
                })
                .collect();
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            kv_str(attr::SERVICE_NAME, format!("fn-{f}")),
                            kv_str(attr::FAAS_NAME, format!("fn-{f}")),
                            kv_str(attr::FAAS_VERSION, "$LATEST"),
                            kv_str(attr::CLOUD_REGION, "eu-west-1"),
                            kv_str(attr::CLOUD_ACCOUNT_ID, "123456789012"),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        })
        .collect()
}

/// On-CPU time of this thread (ns) from the scheduler: unlike wall time, it does not grow when
/// other processes compete for the cores.
fn thread_on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
}

fn gzip(data: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    Bytes::from(e.finish().unwrap())
}

/// The OTLP/HTTP receiver in process: its router, and the other end of its bounded queue
/// (drained into `agg` after every request, as the owner task would).
struct HttpIngest {
    router: axum::Router,
    queue: mpsc::Receiver<Batch>,
    rt: tokio::runtime::Runtime,
}

impl HttpIngest {
    fn new() -> Self {
        let (tx, queue) = mpsc::channel(8);
        let ingest = Ingest {
            auth_token: None,
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            queue: tx,
            stats: Arc::new(IngestStats::default()),
            decoder: Arc::new(Decoder::default()),
            stopping: CancellationToken::new(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Self {
            router: http::router(ingest),
            queue,
            rt,
        }
    }

    /// POSTs every gzip payload to `/v1/traces` and aggregates what was enqueued.
    fn run(&mut self, gz: &[Bytes], agg: &mut Aggregates) {
        let (router, queue) = (&mut self.router, &mut self.queue);
        self.rt.block_on(async {
            for body in gz {
                let req = axum::http::Request::post("/v1/traces")
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip")
                    .header("content-length", body.len())
                    .body(axum::body::Body::from(body.clone()))
                    .unwrap();
                let resp = Service::call(router, req).await.unwrap();
                assert_eq!(resp.status(), 200);
                while let Ok(batch) = queue.try_recv() {
                    agg.apply(batch);
                }
            }
        });
    }
}

fn ingest(c: &mut Criterion) {
    let spans_per_request = 500;
    let now = lambdawatch_collector::ingest::now_s();
    let data = payloads(40, spans_per_request, 20, now);
    let total = (data.len() * spans_per_request) as u64;
    let gz: Vec<Bytes> = data.iter().map(|p| gzip(p)).collect();
    let spec = SloSpec::embedded_default();
    let layout = eval::layout_for(&spec);
    let decoder = Decoder::default();
    let floor = |data: &[Vec<u8>]| {
        for p in data {
            black_box(ExportTraceServiceRequest::decode(p.as_slice()).ok());
        }
    };

    // The ratio, same run: 10 interleaved rounds of each, on-CPU time summed per side.
    let mut http_ingest = HttpIngest::new();
    let mut agg = Aggregates::new(layout.clone(), 100_000);
    http_ingest.run(&gz, &mut agg); // warm-up: the functions exist from here on
    let (mut floor_ns, mut http_ns) = (0u64, 0u64);
    let (mut floor_wall, mut http_wall) = (0f64, 0f64);
    for _ in 0..10 {
        let (c0, w0) = (thread_on_cpu_ns(), std::time::Instant::now());
        floor(&data);
        let (c1, w1) = (thread_on_cpu_ns(), std::time::Instant::now());
        http_ingest.run(&gz, &mut agg);
        let (c2, w2) = (thread_on_cpu_ns(), std::time::Instant::now());
        floor_wall += (w1 - w0).as_secs_f64();
        http_wall += (w2 - w1).as_secs_f64();
        if let (Some(c0), Some(c1), Some(c2)) = (c0, c1, c2) {
            floor_ns += c1 - c0;
            http_ns += c2 - c1;
        }
    }
    let rate = |secs: f64| 10.0 * total as f64 / secs / 1e3;
    let gz_bytes: usize = gz.iter().map(Bytes::len).sum();
    let raw_bytes: usize = data.iter().map(Vec::len).sum();
    println!(
        "ingest, {total} spans in {} requests ({raw_bytes} B protobuf, {gz_bytes} B gzip), 10 \
         interleaved rounds: floor decode-only {:.0} k spans/s on-CPU ({:.0} k wall); OTLP/HTTP \
         gzip through the axum handler + aggregation {:.0} k spans/s on-CPU ({:.0} k wall); \
         ratio http_gzip_aggregate / decode_only = {:.2} on-CPU ({:.2} wall)",
        data.len(),
        rate(floor_ns as f64 / 1e9),
        rate(floor_wall),
        rate(http_ns as f64 / 1e9),
        rate(http_wall),
        floor_ns as f64 / (http_ns as f64).max(1.0),
        floor_wall / http_wall.max(1e-9),
    );

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(total));
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            for p in &data {
                black_box(ExportTraceServiceRequest::decode(p.as_slice()).ok());
            }
        })
    });
    let mut agg = Aggregates::new(layout.clone(), 100_000);
    g.bench_function("decode_aggregate", |b| {
        b.iter(|| {
            for p in &data {
                if let Ok(req) = ExportTraceServiceRequest::decode(p.as_slice()) {
                    agg.apply(decoder.traces(&req, now).batch);
                }
            }
        })
    });
    let mut agg = Aggregates::new(layout, 100_000);
    g.bench_function("http_gzip_aggregate", |b| {
        b.iter(|| http_ingest.run(&gz, &mut agg))
    });
    g.finish();
}

/// 10,000 functions, each with a day of traffic and some cold starts.
fn fleet(functions: usize) -> Aggregates {
    let spec = SloSpec::embedded_default();
    let mut a = Aggregates::new(eval::layout_for(&spec), 100_000);
    for f in 0..functions {
        let mut events: Vec<Event> = (0..144u64)
            .map(|k| {
                Event::Invocation(Invocation {
                    t_s: NOW - 86_400 + k * 600 + (f as u64 % 600),
                    outcome: if k % 50 == 0 {
                        Outcome::Error
                    } else {
                        Outcome::Success
                    },
                    duration_ms: 20.0 + (k % 700) as f64,
                    billed_ms: Some(21.0),
                    memory_mb: Some(512.0),
                    max_memory_mb: Some(90.0),
                    timeout_ms: Some(3000.0),
                    request_id: None,
                    span_fingerprint: None,
                })
            })
            .collect();
        events.extend((0..4u64).map(|k| Event::Init {
            t_s: NOW - 86_400 + k * 21_600,
            kind: InitKind::OnDemand,
            duration_ms: 250.0 + (k * 100) as f64,
        }));
        a.apply(Batch {
            received_s: NOW,
            groups: vec![Group {
                target: Target::Function {
                    key: lambdawatch_collector::aggregate::FunctionKey {
                        function: format!("fn-{f:05}"),
                        version: "$LATEST".into(),
                        region: "eu-west-1".into(),
                        account: "123456789012".into(),
                    },
                    tags: vec![("team".into(), "payments".into())],
                    instance: "i".into(),
                },
                events,
            }],
        });
    }
    a
}

fn evaluate(c: &mut Criterion) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut a = fleet(10_000);
    let measured = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory: 10,000 functions hold {} bytes live = {} bytes per function (self-reported heap_bytes: {} per function)",
        measured,
        measured / 10_000,
        a.heap_bytes() / 10_000
    );
    let spec = SloSpec::embedded_default();
    a.refresh_percentiles(NOW);
    // On-CPU time of this thread (ns) from the scheduler: unlike wall time, it does not grow when
    // other processes compete for the cores.
    let on_cpu = || {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    };
    // Floor, in the same run: one pass over the function map reading one counter per SLO and
    // function (the least any evaluation must touch).
    let floor = |a: &Aggregates| {
        let mut n = 0u64;
        for s in a.functions.values() {
            for _ in &spec.slos {
                n = n.wrapping_add(black_box(s.outcome_totals[0]));
            }
        }
        n
    };
    // The scheduler updates a thread's on-CPU time at ticks and switches: the sub-millisecond
    // floor is repeated 1,000 times to be measurable.
    let time = |rounds: u32, f: &mut dyn FnMut()| {
        let (cpu0, wall0) = (on_cpu(), std::time::Instant::now());
        for _ in 0..rounds {
            f();
        }
        let wall = wall0.elapsed().as_secs_f64() * 1e3 / f64::from(rounds);
        let cpu = match (cpu0, on_cpu()) {
            (Some(c0), Some(c1)) => Some((c1 - c0) as f64 / f64::from(rounds) / 1e6),
            _ => None,
        };
        (cpu, wall)
    };
    let (allocs0, bytes0) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    );
    let ev = eval::evaluate(&spec, &a, NOW);
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;
    let bytes = ALLOC_BYTES.load(Ordering::Relaxed) - bytes0;
    let n = ev.functions.len().max(1) as f64;
    println!(
        "evaluate: {allocs} allocations ({bytes} B) for {} functions = {:.2} allocations, {:.0} B \
         per function (FunctionStatus {} B, SloStatus {} B)",
        ev.functions.len(),
        allocs as f64 / n,
        bytes as f64 / n,
        std::mem::size_of::<eval::FunctionStatus>(),
        std::mem::size_of::<eval::SloStatus>(),
    );
    drop(ev);
    let (eval_cpu, eval_wall) = time(10, &mut || {
        black_box(eval::evaluate(&spec, &a, NOW));
    });
    let (floor_cpu, floor_wall) = time(1000, &mut || {
        black_box(floor(&a));
    });
    // Breakdown: the window sums alone (every function's windows from its running totals).
    let plan = eval::WindowPlan::for_spec(&spec, NOW);
    let mut buf = Vec::new();
    let (sums_cpu, sums_wall) = time(10, &mut || {
        for s in a.functions.values() {
            black_box(&eval::Sums::new(&a.layout, &plan, s, NOW, &mut buf));
        }
    });
    println!(
        "  of which window sums: {:.2} ms on-CPU ({sums_wall:.2} ms wall)",
        sums_cpu.unwrap_or(f64::NAN)
    );
    match (eval_cpu, floor_cpu) {
        (Some(e), Some(f)) => println!(
            "evaluate 10k x 5 SLOs: {e:.2} ms on-CPU per round ({eval_wall:.2} ms wall); \
             floor (map pass, one counter per SLO): {f:.3} ms on-CPU ({floor_wall:.3} ms wall); \
             ratio evaluate/floor {:.0}",
            e / f.max(1e-9)
        ),
        _ => println!(
            "evaluate 10k x 5 SLOs: {eval_wall:.2} ms wall per round; floor {floor_wall:.3} ms \
             wall; ratio {:.0}",
            eval_wall / floor_wall.max(1e-9)
        ),
    }
    let mut g = c.benchmark_group("evaluate");
    g.sample_size(10);
    // Worst case for percentiles: every function has new samples since the last round.
    g.bench_function("percentile_refresh_10k_all_changed", |b| {
        b.iter(|| {
            for s in a.functions.values_mut() {
                s.samples += 1;
            }
            black_box(a.refresh_percentiles(NOW))
        })
    });
    a.refresh_percentiles(NOW);
    g.bench_function("10k_functions_x_5_slos", |b| {
        b.iter(|| black_box(eval::evaluate(&spec, &a, NOW)))
    });
    g.finish();
}

criterion_group!(benches, ingest, evaluate);
criterion_main!(benches);
