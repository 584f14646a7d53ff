//! Alerting: evaluated SLO conditions → alert state machine (pending → firing → resolved, stable
//! fingerprints, dedup, re-send while firing) → the dispatcher and its sinks.
//!
//! Consumes the conditions of each evaluation (`slo::eval`); produces [`alert::Alert`]
//! notifications handed to `sinks` (bounded per-sink queues: a sink that is down never blocks
//! evaluation or the other sinks).
pub mod alert;
pub mod sinks;
pub mod state;
