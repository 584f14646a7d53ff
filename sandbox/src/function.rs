//! The function: a pool of execution environments behind a concurrency limit (the scaler).
//!
//! Consumes [`FnCommand`]s (bounded queue) and [`Released`] notices (one slot per environment, so
//! an environment never waits on it). Produces leases: an idle environment (warm, provisioned
//! first) or a new one (scale-out = cold start) while fewer than the limit are busy; beyond the
//! limit the answer is [`Throttled`] (429 TooManyRequestsException) and the throttle is counted.
//! Idle on-demand environments are spun down after `idle_timeout_ms` (SHUTDOWN `spindown`);
//! provisioned ones are initialised at start with `initializationType: provisioned-concurrency`
//! and never spun down.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{
    cloudwatch::PlatformCounters,
    config::FunctionConfig,
    environment::{self, EnvCommand, EnvContext, EnvHandle, Released},
    report::Recorder,
};

/// Queue of requests to the scaler.
pub const FN_QUEUE: usize = 256;

#[derive(Debug)]
pub struct Throttled;

#[derive(Debug)]
pub enum FnCommand {
    Acquire {
        reply: oneshot::Sender<Result<EnvHandle, Throttled>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
struct Slot {
    handle: EnvHandle,
    busy: bool,
    provisioned: bool,
    last_used: Instant,
}

/// The function's handle, cheap to clone.
#[derive(Debug, Clone)]
pub struct FunctionHandle {
    tx: mpsc::Sender<FnCommand>,
    pub config: Arc<FunctionConfig>,
}

impl FunctionHandle {
    /// A free environment, or `Throttled`. `Err(None)` when the function is shutting down.
    pub async fn acquire(&self) -> Result<EnvHandle, Option<Throttled>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(FnCommand::Acquire { reply })
            .await
            .map_err(|_| None)?;
        match rx.await {
            Ok(Ok(h)) => Ok(h),
            Ok(Err(t)) => Err(Some(t)),
            Err(_) => Err(None),
        }
    }

    /// Shuts every environment down and waits for it.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(FnCommand::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the scaler (and the provisioned environments).
pub async fn start(
    config: Arc<FunctionConfig>,
    recorder: Arc<Recorder>,
    counters: Arc<PlatformCounters>,
) -> std::io::Result<FunctionHandle> {
    let (tx, rx) = mpsc::channel(FN_QUEUE);
    let limit = config.concurrency_limit() as usize;
    let (released_tx, released_rx) =
        mpsc::channel(limit + config.provisioned_concurrency as usize + 1);
    let ctx = EnvContext {
        function: config.clone(),
        released: released_tx,
        recorder: recorder.clone(),
    };
    let mut scaler = Scaler {
        ctx,
        slots: BTreeMap::new(),
        next_index: 0,
        limit,
        recorder,
        counters,
    };
    for _ in 0..config.provisioned_concurrency {
        let h = environment::start(
            scaler.ctx.clone(),
            scaler.next_index,
            lambdawatch_semconv::init_type::PROVISIONED,
        )
        .await?;
        scaler.next_index += 1;
        // Busy until its init is done (it sends Released).
        if h.tx.send(EnvCommand::Init).await.is_err() {
            continue;
        }
        scaler.slots.insert(
            h.index,
            Slot {
                handle: h,
                busy: true,
                provisioned: true,
                last_used: Instant::now(),
            },
        );
    }
    // Provisioned environments are ready before the function takes traffic.
    let mut released_rx = released_rx;
    let mut pending = scaler.slots.len();
    let deadline = Instant::now() + Duration::from_millis(crate::config::INIT_LIMIT_MS + 5_000);
    while pending > 0 {
        match tokio::time::timeout_at(deadline, released_rx.recv()).await {
            Ok(Some(r)) => {
                scaler.on_released(r);
                pending -= 1;
            }
            Ok(None) | Err(_) => {
                tracing::warn!(pending, "provisioned environments not ready in time");
                break;
            }
        }
    }
    tokio::spawn(scaler.run(rx, released_rx));
    Ok(FunctionHandle { tx, config })
}

struct Scaler {
    ctx: EnvContext,
    slots: BTreeMap<u64, Slot>,
    next_index: u64,
    limit: usize,
    recorder: Arc<Recorder>,
    counters: Arc<PlatformCounters>,
}

impl Scaler {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<FnCommand>,
        mut released: mpsc::Receiver<Released>,
    ) {
        let idle = Duration::from_millis(self.ctx.function.idle_timeout_ms);
        let mut tick =
            tokio::time::interval(idle.clamp(Duration::from_millis(50), Duration::from_secs(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(r) = released.recv() => self.on_released(r),
                cmd = rx.recv() => match cmd {
                    Some(FnCommand::Acquire { reply }) => {
                        let res = self.acquire().await;
                        let _ = reply.send(res);
                    }
                    Some(FnCommand::Shutdown { done }) => {
                        self.shutdown_all(&mut released).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown_all(&mut released).await;
                        return;
                    }
                },
                _ = tick.tick() => self.spin_down_idle(idle, Instant::now()).await,
            }
        }
    }

    fn on_released(&mut self, r: Released) {
        if r.healthy {
            if let Some(s) = self.slots.get_mut(&r.index) {
                s.busy = false;
                s.last_used = Instant::now();
            }
        } else if let Some(s) = self.slots.remove(&r.index) {
            let (done, _) = oneshot::channel();
            let _ = s.handle.tx.try_send(EnvCommand::Shutdown {
                reason: "failure",
                done,
            });
        }
    }

    async fn acquire(&mut self) -> Result<EnvHandle, Throttled> {
        // Warm first: provisioned, then the most recently used.
        let pick = self
            .slots
            .values()
            .filter(|s| !s.busy)
            .max_by_key(|s| (s.provisioned, s.last_used))
            .map(|s| s.handle.index);
        if let Some(i) = pick
            && let Some(s) = self.slots.get_mut(&i)
        {
            s.busy = true;
            return Ok(s.handle.clone());
        }
        let busy = self.slots.values().filter(|s| s.busy).count();
        if busy >= self.limit
            || self.slots.len() >= self.limit + self.ctx.function.provisioned_concurrency as usize
        {
            self.recorder.throttle();
            self.counters.throttle();
            return Err(Throttled);
        }
        let index = self.next_index;
        self.next_index += 1;
        match environment::start(
            self.ctx.clone(),
            index,
            lambdawatch_semconv::init_type::ON_DEMAND,
        )
        .await
        {
            Ok(h) => {
                self.slots.insert(
                    index,
                    Slot {
                        handle: h.clone(),
                        busy: true,
                        provisioned: false,
                        last_used: Instant::now(),
                    },
                );
                Ok(h)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start an execution environment; throttling");
                self.recorder.throttle();
                self.counters.throttle();
                Err(Throttled)
            }
        }
    }

    async fn spin_down_idle(&mut self, idle: Duration, now: Instant) {
        let expired = idle_expired(
            self.slots
                .values()
                .map(|s| (s.handle.index, s.busy, s.provisioned, s.last_used)),
            idle,
            now,
        );
        for i in expired {
            if let Some(s) = self.slots.remove(&i) {
                let (done, _) = oneshot::channel();
                if s.handle
                    .tx
                    .send(EnvCommand::Shutdown {
                        reason: "spindown",
                        done,
                    })
                    .await
                    .is_err()
                {
                    tracing::debug!(env = i, "environment already gone");
                }
            }
        }
    }

    async fn shutdown_all(&mut self, released: &mut mpsc::Receiver<Released>) {
        let mut waits = Vec::new();
        for (_, s) in std::mem::take(&mut self.slots) {
            let (done, rx) = oneshot::channel();
            if s.handle
                .tx
                .send(EnvCommand::Shutdown {
                    reason: "spindown",
                    done,
                })
                .await
                .is_ok()
            {
                waits.push(rx);
            }
        }
        for w in waits {
            // Busy environments finish their invocation first; keep draining releases meanwhile.
            tokio::pin!(w);
            loop {
                tokio::select! {
                    _ = &mut w => break,
                    Some(_) = released.recv() => {}
                }
            }
        }
    }
}

/// Which environments have been idle too long. Pure: `(index, busy, provisioned, last_used)`.
pub fn idle_expired(
    slots: impl Iterator<Item = (u64, bool, bool, Instant)>,
    idle: Duration,
    now: Instant,
) -> Vec<u64> {
    slots
        .filter(|(_, busy, provisioned, last)| {
            !busy && !provisioned && now.saturating_duration_since(*last) >= idle
        })
        .map(|(i, ..)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_policy() {
        let t0 = Instant::now();
        let idle = Duration::from_millis(100);
        let slots = vec![
            (0, false, false, t0),
            (1, true, false, t0),
            (2, false, true, t0),
            (3, false, false, t0 + Duration::from_millis(50)),
        ];
        let now = t0 + Duration::from_millis(120);
        assert_eq!(idle_expired(slots.into_iter(), idle, now), vec![0]);
    }
}

/// Why an invocation did not reach the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotInvoked {
    Throttled,
    ShuttingDown,
}

impl FunctionHandle {
    /// One invocation through a leased environment; the answer comes as soon as the runtime
    /// responds (the environment stays busy until its extensions are done). `trace` is the
    /// caller's `X-Amzn-Trace-Id`, passed to the function and the extensions unchanged; `None`
    /// lets the environment make one.
    pub async fn invoke(
        &self,
        request_id: String,
        payload: bytes::Bytes,
        trace: Option<String>,
        invocation_type: &'static str,
        attempt: u32,
    ) -> Result<environment::InvokeResponse, NotInvoked> {
        let env = match self.acquire().await {
            Ok(e) => e,
            Err(Some(Throttled)) => return Err(NotInvoked::Throttled),
            Err(None) => return Err(NotInvoked::ShuttingDown),
        };
        let (reply, rx) = oneshot::channel();
        let job = environment::InvokeJob {
            request_id,
            payload,
            trace,
            invocation_type,
            attempt,
            reply,
        };
        if env.tx.send(EnvCommand::Invoke(job)).await.is_err() {
            return Err(NotInvoked::ShuttingDown);
        }
        rx.await.map_err(|_| NotInvoked::ShuttingDown)
    }
}
