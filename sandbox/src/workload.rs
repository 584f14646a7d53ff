//! Reproducible workloads: phases of invocations at a rate, with seeded randomness.
//!
//! Consumes a [`WorkloadConfig`]; produces invocations through the same paths as the Invoke API
//! (sync through the function, async through the async queue). One `StdRng` seeded with `seed`
//! decides, per invocation and in order, whether it fails, times out, is slow and is async, so two
//! runs of the same file send the same payloads in the same order. In-flight sync invocations are
//! bounded by a `JoinSet` capped at [`MAX_IN_FLIGHT`] (the workload waits when it is full).
//!
//! Payload convention understood by the sample functions:
//! `{"fail": bool, "sleep_ms": u64, "log_lines": u64, "log_json": bool}` merged over the phase's
//! `payload` mapping. A timeout is produced with `sleep_ms = timeout_ms + 1000`.

use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use crate::{
    async_invoke::{AsyncEvent, AsyncQueue},
    config::{PhaseConfig, WorkloadConfig},
    function::FunctionHandle,
    ids,
};

pub const MAX_IN_FLIGHT: usize = 1_024;

/// What one generated invocation is.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub payload: Value,
    pub is_async: bool,
}

/// Plans the next invocation of `phase` (pure given the RNG state).
pub fn plan(phase: &PhaseConfig, timeout_ms: u64, rng: &mut StdRng) -> Planned {
    let roll: f64 = rng.random();
    let async_roll: f64 = rng.random();
    let mut fail = false;
    let mut sleep_ms = phase.sleep_ms;
    if roll < phase.error_fraction {
        fail = true;
    } else if roll < phase.error_fraction + phase.timeout_fraction {
        sleep_ms = timeout_ms + 1_000;
    } else if roll < phase.error_fraction + phase.timeout_fraction + phase.slow_fraction {
        sleep_ms = phase.slow_ms;
    }
    let mut obj = match &phase.payload {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    obj.insert("fail".into(), json!(fail));
    obj.insert("sleep_ms".into(), json!(sleep_ms));
    obj.insert("log_lines".into(), json!(phase.log_lines));
    obj.insert("log_json".into(), json!(phase.log_json));
    Planned {
        payload: Value::Object(obj),
        is_async: async_roll < phase.async_fraction,
    }
}

/// Ticks of a phase: `rate_per_sec × duration`, at least one.
pub fn ticks_in(phase: &PhaseConfig) -> u64 {
    ((phase.duration_ms as f64 / 1000.0) * phase.rate_per_sec)
        .floor()
        .max(1.0) as u64
}

/// Runs every phase, then waits for the sync invocations still in flight.
pub async fn run(workload: &WorkloadConfig, function: &FunctionHandle, async_queue: &AsyncQueue) {
    let mut rng = StdRng::seed_from_u64(workload.seed);
    let timeout_ms = function.config.timeout_ms;
    let mut in_flight = JoinSet::new();
    for (i, phase) in workload.phases.iter().enumerate() {
        tracing::info!(phase = i, name = %phase.name, "workload phase");
        let period = Duration::from_secs_f64(1.0 / phase.rate_per_sec);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A fixed number of ticks (not "until the clock says so"): the same file always sends
        // the same number of invocations.
        let ticks = ticks_in(phase);
        for _ in 0..ticks {
            ticker.tick().await;
            for _ in 0..phase.burst {
                let planned = plan(phase, timeout_ms, &mut rng);
                let payload = Bytes::from(planned.payload.to_string());
                let request_id = ids::uuid_v4();
                if planned.is_async {
                    async_queue.enqueue(AsyncEvent {
                        request_id,
                        payload,
                        trace: None,
                    });
                    continue;
                }
                while in_flight.len() >= MAX_IN_FLIGHT {
                    let _ = in_flight.join_next().await;
                }
                let f = function.clone();
                in_flight.spawn(async move {
                    let _ = f
                        .invoke(request_id, payload, None, "RequestResponse", 1)
                        .await;
                });
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase() -> PhaseConfig {
        serde_yaml::from_str(
            "rate_per_sec: 10\nduration_ms: 100\nerror_fraction: 0.2\ntimeout_fraction: 0.2\nslow_fraction: 0.2\nasync_fraction: 0.5\npayload: {user: 7}\n",
        )
        .unwrap()
    }

    #[test]
    fn same_seed_same_plan() {
        let p = phase();
        let a: Vec<Planned> = {
            let mut r = StdRng::seed_from_u64(42);
            (0..50).map(|_| plan(&p, 1000, &mut r)).collect()
        };
        let b: Vec<Planned> = {
            let mut r = StdRng::seed_from_u64(42);
            (0..50).map(|_| plan(&p, 1000, &mut r)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(|x| x.payload["fail"] == json!(true)));
        assert!(a.iter().any(|x| x.payload["sleep_ms"] == json!(2000)));
        assert!(a.iter().any(|x| x.is_async));
        assert!(a.iter().all(|x| x.payload["user"] == json!(7)));
        assert_eq!(ticks_in(&p), 1);
        let mut q = p.clone();
        q.rate_per_sec = 40.0;
        q.duration_ms = 1000;
        assert_eq!(ticks_in(&q), 40);
    }
}
