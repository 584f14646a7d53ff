//! Seeded synthetic traffic over a simulated day, one minute at a time.
//!
//! Consumes a seed; produces, for every simulated minute, the aggregation events each function
//! emitted during that minute (invocations, inits, CloudWatch-shaped platform counts) with their
//! event times inside the minute. Every scenario the differential test needs is one function:
//!
//! | function | traffic | what the SLOs must do |
//! |---|---|---|
//! | `healthy` | 300/h, 0.01 % errors, fast inits, async events, no drops | nothing, all day |
//! | `outage` | 600/h; 100 % errors 06:00–06:40 | page (fast burn), resolve; ticket later; baseline errors may page again while the 6 h window is hot |
//! | `slow-burn` | 600/h; 0.3 % errors from 02:00 (3× burn) | ticket, never page |
//! | `low-traffic` | 6/h, one of them failing every hour | page nobody (low-traffic guard) |
//! | `cold-start` | 90 inits/h ≈ 300 ms; 900 ms 10:00–11:30 | cold-start page, resolve |
//! | `throttled` | 120/h; 2 throttles at 04:00, 4 at 09:00 (zero counts every other minute) | throttle budget (5/30 d) ticket |
//! | `throttle-burst` | 120/h; its first platform count ever: 6 throttles at 12:00 | throttle budget ticket |
//! | `dlq-sqs-only` | 120/h; from 08:00 only its SQS DLQ `NumberOfMessagesSent` arrive, 2/min | DLQ page |
//! | `dlq` | 600 async events/h; 10 % dead-lettered 14:00–14:20 | DLQ page, resolve |
//! | `timeouts` | 300/h; 40 % beyond 80 % of the timeout 16:00–17:00 | timeout-budget page |
//! | `silent` | 120/h; silent 18:00–22:00 | no-data ticket, resolve |
//!
//! Event times are whole seconds within the minute they are emitted in, and every event is
//! delivered in that minute (no transport delay): the built-in windows count by event time and
//! Prometheus by scrape time, and this keeps the two views of "when" the same.

use lambdawatch_collector::aggregate::{
    Event, FunctionKey, InitKind, Invocation, Outcome, PlatformCounter,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Start of the simulated day (a whole 12 h boundary, so every ring of the aggregation starts a
/// bucket here): 2027-01-15T00:00:00Z.
pub const T0: u64 = 1_799_971_200;

/// Simulated minutes.
pub const MINUTES: u64 = 24 * 60;

/// Memory and timeout every function is configured with.
const MEMORY_MB: f64 = 512.0;
const TIMEOUT_MS: f64 = 3_000.0;

/// The function names, in a fixed order.
pub const FUNCTIONS: [&str; 11] = [
    "healthy",
    "outage",
    "slow-burn",
    "low-traffic",
    "cold-start",
    "throttled",
    "throttle-burst",
    "dlq-sqs-only",
    "dlq",
    "timeouts",
    "silent",
];

pub fn key(function: &str) -> FunctionKey {
    FunctionKey {
        function: function.to_owned(),
        version: "$LATEST".to_owned(),
        region: "eu-west-1".to_owned(),
        account: "123456789012".to_owned(),
    }
}

/// One event of one function, with a stable sequence number (used to split traffic between
/// collectors).
#[derive(Debug, Clone)]
pub struct Emitted {
    pub function: &'static str,
    pub seq: u64,
    pub event: Event,
}

/// The generator: deterministic for a seed.
pub struct Traffic {
    rng: StdRng,
    seq: u64,
}

fn hm(h: u64, m: u64) -> u64 {
    h * 60 + m
}

impl Traffic {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
        }
    }

    /// Poisson-ish count for a per-hour rate over one minute (sum of Bernoulli trials: exact
    /// mean, bounded variance, no floating-point exp/log needed).
    fn count(&mut self, per_hour: f64) -> u64 {
        let mean = per_hour / 60.0;
        let whole = mean.floor() as u64;
        let mut n = 0;
        for _ in 0..(2 * whole) {
            n += u64::from(self.rng.random_bool(0.5));
        }
        n + u64::from(self.rng.random_bool(mean - mean.floor()))
    }

    fn second(&mut self, minute: u64) -> u64 {
        T0 + minute * 60 + self.rng.random_range(0..60)
    }

    fn push(&mut self, out: &mut Vec<Emitted>, function: &'static str, event: Event) {
        self.seq += 1;
        out.push(Emitted {
            function,
            seq: self.seq,
            event,
        });
    }

    fn invocation(
        &mut self,
        out: &mut Vec<Emitted>,
        function: &'static str,
        minute: u64,
        outcome: Outcome,
        duration_ms: f64,
    ) {
        let t_s = self.second(minute);
        self.push(
            out,
            function,
            Event::Invocation(Invocation {
                t_s,
                outcome,
                duration_ms,
                billed_ms: Some(duration_ms.ceil()),
                memory_mb: Some(MEMORY_MB),
                max_memory_mb: Some(120.0 + (duration_ms % 50.0)),
                timeout_ms: Some(TIMEOUT_MS),
                request_id: None,
                span_fingerprint: None,
            }),
        );
    }

    /// `n` invocations, each an error with probability `p_error`, durations around 80 ms.
    fn invocations(
        &mut self,
        out: &mut Vec<Emitted>,
        function: &'static str,
        minute: u64,
        n: u64,
        p_error: f64,
    ) {
        for _ in 0..n {
            let outcome = if self.rng.random_bool(p_error) {
                Outcome::Error
            } else {
                Outcome::Success
            };
            let d = 40.0 + f64::from(self.rng.random_range(0u32..80));
            self.invocation(out, function, minute, outcome, d);
        }
    }

    fn init(
        &mut self,
        out: &mut Vec<Emitted>,
        function: &'static str,
        minute: u64,
        duration_ms: f64,
    ) {
        let t_s = self.second(minute);
        self.push(
            out,
            function,
            Event::Init {
                t_s,
                kind: InitKind::OnDemand,
                duration_ms,
            },
        );
    }

    fn platform(
        &mut self,
        out: &mut Vec<Emitted>,
        function: &'static str,
        minute: u64,
        counter: PlatformCounter,
        value: u64,
    ) {
        // A CloudWatch data point for the minute, delivered in the minute.
        self.push(
            out,
            function,
            Event::Platform {
                t_s: T0 + minute * 60 + 59,
                counter,
                value,
                queue: None,
            },
        );
    }

    /// Everything emitted during simulated minute `m` (0-based from [`T0`]).
    pub fn minute(&mut self, m: u64) -> Vec<Emitted> {
        let mut out = Vec::new();

        // healthy: 300/h, 0.01 % errors, 4 inits/h at ~200 ms, 60 async events/h none dropped.
        let n = self.count(300.0);
        self.invocations(&mut out, "healthy", m, n, 0.0001);
        if self.rng.random_bool(4.0 / 60.0) {
            let d = 150.0 + f64::from(self.rng.random_range(0u32..100));
            self.init(&mut out, "healthy", m, d);
        }
        let n = self.count(60.0);
        self.platform(
            &mut out,
            "healthy",
            m,
            PlatformCounter::AsyncEventsReceived,
            n,
        );

        // outage: 600/h; everything fails 06:00–06:40.
        let n = self.count(600.0);
        let p = if (hm(6, 0)..hm(6, 40)).contains(&m) {
            1.0
        } else {
            0.0002
        };
        self.invocations(&mut out, "outage", m, n, p);

        // slow-burn: 600/h; 0.3 % errors (3× the 0.1 % budget) from 02:00.
        let n = self.count(600.0);
        let p = if m >= hm(2, 0) { 0.003 } else { 0.0 };
        self.invocations(&mut out, "slow-burn", m, n, p);

        // low-traffic: six invocations an hour (minutes 5, 15, …), the one at :05 fails.
        if m % 10 == 5 {
            let outcome = if m % 60 == 5 {
                Outcome::Error
            } else {
                Outcome::Success
            };
            self.invocation(&mut out, "low-traffic", m, outcome, 70.0);
        }

        // cold-start: 300/h, 90 inits/h around 300 ms; 900 ms from 10:00 to 11:30.
        let n = self.count(300.0);
        self.invocations(&mut out, "cold-start", m, n, 0.0);
        let inits = self.count(90.0);
        let slow = (hm(10, 0)..hm(11, 30)).contains(&m);
        for _ in 0..inits {
            let d = if slow {
                850.0 + f64::from(self.rng.random_range(0u32..100))
            } else {
                250.0 + f64::from(self.rng.random_range(0u32..100))
            };
            self.init(&mut out, "cold-start", m, d);
        }

        // throttled: 120/h; 2 throttles at 04:00, 4 at 09:00 (budget: fewer than 5 per 30 d).
        let n = self.count(120.0);
        self.invocations(&mut out, "throttled", m, n, 0.0);
        let throttles = match m {
            x if x == hm(4, 0) => 2,
            x if x == hm(9, 0) => 4,
            _ => 0,
        };
        self.platform(
            &mut out,
            "throttled",
            m,
            PlatformCounter::Throttles,
            throttles,
        );

        // throttle-burst: 120/h; no platform counts at all until one data point of 6 throttles at
        // 12:00 (a function that never throttled before, so its throttle series starts there).
        let n = self.count(120.0);
        self.invocations(&mut out, "throttle-burst", m, n, 0.0);
        if m == hm(12, 0) {
            self.platform(&mut out, "throttle-burst", m, PlatformCounter::Throttles, 6);
        }

        // dlq-sqs-only: 120/h; a stream that carries only its SQS dead-letter queue's
        // NumberOfMessagesSent (no AsyncEventsReceived): 2 messages a minute from 08:00.
        let n = self.count(120.0);
        self.invocations(&mut out, "dlq-sqs-only", m, n, 0.0);
        if m >= hm(8, 0) {
            self.push(
                &mut out,
                "dlq-sqs-only",
                Event::Platform {
                    t_s: T0 + m * 60 + 59,
                    counter: PlatformCounter::DlqMessagesSent,
                    value: 2,
                    queue: Some("orders-dlq".to_owned()),
                },
            );
        }

        // dlq: 600 async events/h; 10 % dead-lettered 14:00–14:20.
        let n = self.count(120.0);
        self.invocations(&mut out, "dlq", m, n, 0.0);
        let received = self.count(600.0);
        let dropped = if (hm(14, 0)..hm(14, 20)).contains(&m) {
            received / 10
        } else {
            0
        };
        self.platform(
            &mut out,
            "dlq",
            m,
            PlatformCounter::AsyncEventsReceived,
            received,
        );
        self.platform(
            &mut out,
            "dlq",
            m,
            PlatformCounter::AsyncEventsDropped,
            dropped,
        );
        self.platform(&mut out, "dlq", m, PlatformCounter::DeadLetterErrors, 0);

        // timeouts: 300/h; from 16:00 to 17:00 two in five run beyond 80 % of the 3 s timeout.
        let n = self.count(300.0);
        let slow = (hm(16, 0)..hm(17, 0)).contains(&m);
        for _ in 0..n {
            let d = if slow && self.rng.random_bool(0.4) {
                2_500.0 + f64::from(self.rng.random_range(0u32..400))
            } else {
                200.0 + f64::from(self.rng.random_range(0u32..300))
            };
            self.invocation(&mut out, "timeouts", m, Outcome::Success, d);
        }

        // silent: 120/h, nothing at all from 18:00 to 22:00.
        if !(hm(18, 0)..hm(22, 0)).contains(&m) {
            let n = self.count(120.0);
            self.invocations(&mut out, "silent", m, n, 0.0);
        }
        out
    }
}
