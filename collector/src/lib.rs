//! lambdawatch collector: OTLP in, per-function SLOs with burn-rate alerts out.
//!
//! ```text
//! ingest (OTLP HTTP :4318 + gRPC :4317, auth, limits, bounded queue)
//!    ──► aggregate (per function × time bucket, bounded memory)
//!    ──► slo (SLIs, 30-day error budgets, multi-window burn rates)
//!    ──► alerting (pending → firing → resolved, fingerprints) ──► sinks (Alertmanager, webhook, log)
//!    └─► cost::feed (per invocation span; evaluated on the same tick) ──► cost surprise / retry storm
//! sources::cloudwatch (throttles, DLQ) ──► aggregate
//! export::prometheus (/metrics) · api (/api/v1/slos, /api/v1/cost, /healthz, /readyz, status page)
//! on :9464
//! ```

pub mod aggregate;
pub mod alerting;
pub mod api;
pub mod aws;
pub mod checkpoint;
pub mod config;
pub mod cost;
pub mod export;
pub mod ingest;
pub mod rules;
pub mod serve;
pub mod slo;
pub mod sources;
