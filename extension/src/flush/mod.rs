//! When to flush: a pure policy, `decide(state, now, moment) -> Decision`, with injected time.
//!
//! Consumes the facts `lifecycle` records in [`FlushState`] (invocation arrivals, flush results,
//! buffer fill); produces a [`Decision`]. Owns no I/O and reads no clock, so every rule is tested
//! with made-up instants.
//!
//! Rules:
//! - `end`: at each INVOKE, [`Decision::BeforeNext`] — `lifecycle` waits for that invocation's
//!   `platform.runtimeDone` (never calls `/next` before it), flushes, then calls `/next`.
//! - `periodic,<ms>`: [`Decision::Background`] whenever the period has elapsed; `/next` is never
//!   held back.
//! - `adaptive` (default): like `end` while invocations are rare (the environment may freeze
//!   for minutes after `/next`, so data must leave first); like `periodic` with
//!   [`ADAPTIVE_PERIOD`] once at least [`FREQUENT_MIN_SAMPLES`] recent invocations arrive less than
//!   [`FREQUENT_INTERVAL`] apart on average (the next invocation is close, flushing off the
//!   critical path loses nothing).
//! - Continuous mode (Managed Instances, or lifecycle without INVOKE): periodic.
//! - Fail open: `/next` is held only while the collector is proven healthy ([`Health::Healthy`]:
//!   the last export that finished succeeded). Before any export has finished
//!   ([`Health::Unknown`], every new environment) and after a failure ([`Health::Unhealthy`]),
//!   `BeforeNext` becomes `Background`: the export started at that INVOKE is the health probe,
//!   off the critical path, one at a time. [`FlushState::probe_wanted`] says when `lifecycle`
//!   sends an empty OTLP request instead (`export::Exporter::probe`: at start-up, and whenever
//!   nothing is buffered). Health comes back only when such a background request succeeds, never
//!   by the clock: a time-based retry on the critical path (what this policy did before) held
//!   `/next` for the flush budget every backoff period against a black-holed collector, and in
//!   every new environment, which then made the platform start yet more environments.
//! - Pressure: a buffer at least [`PRESSURE_FILL`] full flushes in the background at any moment.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::FlushStrategy;

pub const ADAPTIVE_PERIOD: Duration = Duration::from_secs(10);
pub const FREQUENT_INTERVAL: Duration = Duration::from_secs(5);
pub const FREQUENT_MIN_SAMPLES: usize = 5;
/// Invocations remembered for the frequency estimate.
pub const WINDOW: usize = 10;
pub const PRESSURE_FILL: f64 = 0.5;

/// What the exports that finished say about the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No export has finished yet (a new environment).
    Unknown,
    /// The last export that finished succeeded.
    Healthy,
    /// The last export that finished failed, or one outlived its budget before `/next`.
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// An INVOKE event arrived (before calling `/next` again).
    Invoke,
    /// A timer fired or a telemetry batch was ingested.
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Start an export now; do not wait for it.
    Background,
    /// Wait for this invocation's `platform.runtimeDone`, flush, then call `/next`.
    BeforeNext,
}

#[derive(Debug, Clone)]
pub struct FlushState {
    pub strategy: FlushStrategy,
    /// No INVOKE events (Managed Instances, SHUTDOWN-only registration).
    pub continuous: bool,
    pub continuous_period: Duration,
    pub last_flush: Option<Instant>,
    pub health: Health,
    pub invokes: VecDeque<Instant>,
    pub buffer_fill: f64,
    pub in_flight: bool,
}

impl FlushState {
    pub fn new(strategy: FlushStrategy, continuous: bool, continuous_period: Duration) -> Self {
        Self {
            strategy,
            continuous,
            continuous_period,
            last_flush: None,
            health: Health::Unknown,
            invokes: VecDeque::with_capacity(WINDOW),
            buffer_fill: 0.0,
            in_flight: false,
        }
    }

    pub fn on_invoke(&mut self, now: Instant) {
        if self.invokes.len() == WINDOW {
            self.invokes.pop_front();
        }
        self.invokes.push_back(now);
    }

    pub fn on_flush_started(&mut self, now: Instant) {
        self.last_flush = Some(now);
        self.in_flight = true;
    }

    pub fn on_flush_done(&mut self, ok: bool) {
        self.in_flight = false;
        self.health = if ok {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
    }

    /// Only a collector that answered the last export may hold `/next`.
    pub fn healthy(&self) -> bool {
        self.health == Health::Healthy
    }

    /// Whether to send an empty request (nothing buffered) to learn the collector's health off
    /// the critical path: only while health is not proven and
    /// the policy may want to hold `/next` later (not continuous, not `periodic`), one at a time.
    pub fn probe_wanted(&self) -> bool {
        !self.healthy()
            && !self.in_flight
            && !self.continuous
            && !matches!(self.strategy, FlushStrategy::Periodic(_))
    }

    /// Invocations are frequent: enough recent samples, close together on average.
    pub fn frequent(&self) -> bool {
        if self.invokes.len() < FREQUENT_MIN_SAMPLES {
            return false;
        }
        let (Some(first), Some(last)) = (self.invokes.front(), self.invokes.back()) else {
            return false;
        };
        let span = last.saturating_duration_since(*first);
        let mean = span / (self.invokes.len() as u32 - 1);
        mean < FREQUENT_INTERVAL
    }

    /// The period in force when flushing periodically, if any.
    fn period(&self) -> Option<Duration> {
        if self.continuous {
            return Some(match self.strategy {
                FlushStrategy::Periodic(p) => p,
                _ => self.continuous_period,
            });
        }
        match self.strategy {
            FlushStrategy::Periodic(p) => Some(p),
            FlushStrategy::Adaptive if self.frequent() => Some(ADAPTIVE_PERIOD),
            _ => None,
        }
    }

    fn due(&self, now: Instant, period: Duration) -> bool {
        self.last_flush
            .is_none_or(|l| now.saturating_duration_since(l) >= period)
    }

    /// When a timer should next fire for a periodic flush.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let p = self.period()?;
        Some(self.last_flush.map_or(now, |l| (l + p).max(now)))
    }
}

/// The policy.
pub fn decide(s: &FlushState, now: Instant, moment: Moment) -> Decision {
    let pressure = s.buffer_fill >= PRESSURE_FILL && !s.in_flight;
    let periodic_due = s.period().is_some_and(|p| s.due(now, p)) && !s.in_flight;
    let end_like = !s.continuous
        && match s.strategy {
            FlushStrategy::End => true,
            FlushStrategy::Adaptive => !s.frequent(),
            FlushStrategy::Periodic(_) => false,
        };
    match moment {
        Moment::Invoke if end_like => {
            if s.healthy() {
                Decision::BeforeNext
            } else if !s.in_flight {
                Decision::Background
            } else {
                Decision::Nothing
            }
        }
        _ if periodic_due || pressure => Decision::Background,
        _ => Decision::Nothing,
    }
}

#[cfg(test)]
mod tests;
