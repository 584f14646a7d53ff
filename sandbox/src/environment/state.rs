//! The state of one execution environment that its HTTP APIs and its lifecycle share.
//!
//! One owner: [`EnvState`] lives behind one `std::sync::Mutex` in [`EnvShared`]; every holder
//! (an API handler, the lifecycle driver, a log pump) takes it for a few field updates and never
//! across an `.await`. Waiting is done with `oneshot` channels (a long-polling `/next` parks its
//! sender here) and with [`EnvShared::changed`], which the lifecycle awaits after every check.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Notify, oneshot, watch};

use crate::{
    config::FunctionConfig,
    telemetry_api::{
        delivery::{DeliveryStats, Subscriber},
        events::{Event, Stream},
    },
};

/// Events kept for subscribers that subscribe during INIT (they still get `platform.initStart`).
const INIT_BACKLOG: usize = 1_000;

/// What the runtime gets from `/next`.
#[derive(Debug, Clone)]
pub struct RuntimeInvocation {
    pub request_id: String,
    pub deadline_ms: u64,
    pub function_arn: String,
    pub trace_id: String,
    pub payload: Bytes,
}

/// The runtime's answer to the current invocation.
#[derive(Debug, Clone)]
pub enum RuntimeResult {
    Response { body: Bytes },
    Error { error_type: String, body: Bytes },
}

#[derive(Debug)]
pub struct CurrentInvocation {
    pub request_id: String,
    pub result: Option<(RuntimeResult, Instant)>,
    /// When the runtime's `/response` request arrived (first byte) — responseLatency ends here.
    pub response_started: Option<Instant>,
}

#[derive(Debug)]
pub struct ExtensionEntry {
    pub id: String,
    pub name: String,
    pub invoke: bool,
    pub shutdown: bool,
    /// Parked `/event/next` call.
    pub waiter: Option<oneshot::Sender<Value>>,
    pub queued: VecDeque<Value>,
    /// Called `/event/next` since it was last given an event.
    pub ready: bool,
    pub when_ready: Option<Instant>,
    pub init_error: Option<String>,
    pub exit_error: Option<String>,
}

#[derive(Debug, Default)]
pub struct RuntimeSlot {
    pub waiter: Option<oneshot::Sender<RuntimeInvocation>>,
    pub queued: Option<RuntimeInvocation>,
    /// `/next` calls so far; each call means the runtime is done with the previous work.
    pub next_calls: u64,
    pub last_next_at: Option<Instant>,
    pub init_error: Option<(String, Bytes)>,
    pub exited: bool,
}

/// Everything mutable about one execution environment.
#[derive(Debug)]
pub struct EnvState {
    pub registration_open: bool,
    /// Whether the environment is past INIT (Telemetry backlog stops, API errors change).
    pub initialised: bool,
    pub extensions: Vec<ExtensionEntry>,
    /// File names of the executables started from `extensions_dir` this INIT. An extension that
    /// registers under another name is internal to Lambda and may not register for SHUTDOWN.
    pub external_names: Vec<String>,
    /// Names of extension processes that exited (with the exit status).
    pub extension_exits: Vec<(String, Option<i32>)>,
    pub runtime: RuntimeSlot,
    pub current: Option<CurrentInvocation>,
    pub subscribers: Vec<Subscriber>,
    pub backlog: VecDeque<Event>,
    pub events_dropped: u64,
}

/// Immutable facts of the environment.
#[derive(Debug)]
pub struct EnvInfo {
    pub function: Arc<FunctionConfig>,
    pub instance_id: String,
    pub env_index: u64,
}

/// Shared between the API handlers and the lifecycle of one environment.
#[derive(Debug)]
pub struct EnvShared {
    pub info: EnvInfo,
    state: Mutex<EnvState>,
    pub changed: Notify,
    pub delivery_stats: Arc<DeliveryStats>,
    /// Open while thawed; delivery tasks wait on it.
    pub gate: watch::Sender<bool>,
    /// Set at SHUTDOWN: delivery sends whatever it holds at once instead of waiting for a batch.
    pub draining: watch::Sender<bool>,
    /// The delivery tasks, awaited (bounded) when the environment ends.
    pub deliveries: tokio_util::task::TaskTracker,
}

impl EnvShared {
    pub fn new(info: EnvInfo) -> Arc<Self> {
        let (gate, _) = watch::channel(true);
        let (draining, _) = watch::channel(false);
        Arc::new(EnvShared {
            info,
            state: Mutex::new(EnvState {
                registration_open: true,
                initialised: false,
                extensions: Vec::new(),
                external_names: Vec::new(),
                extension_exits: Vec::new(),
                runtime: RuntimeSlot::default(),
                current: None,
                subscribers: Vec::new(),
                backlog: VecDeque::new(),
                events_dropped: 0,
            }),
            changed: Notify::new(),
            delivery_stats: Arc::new(DeliveryStats::default()),
            gate,
            draining,
            deliveries: tokio_util::task::TaskTracker::new(),
        })
    }

    /// The state, even if a holder panicked (the state stays consistent field by field).
    pub fn lock(&self) -> MutexGuard<'_, EnvState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Emits a telemetry event to every subscriber of its stream.
    pub fn emit(&self, event: Event) {
        let mut st = self.lock();
        st.emit(event);
    }
}

impl EnvState {
    pub fn emit(&mut self, event: Event) {
        if !self.initialised {
            if self.backlog.len() >= INIT_BACKLOG {
                self.backlog.pop_front();
            }
            self.backlog.push_back(event.clone());
        }
        let mut dropped = 0u64;
        for sub in &mut self.subscribers {
            if !wants(sub, event.stream) {
                continue;
            }
            let rendered = event.render(sub.schema);
            if sub.tx.try_send(rendered).is_err() {
                // The delivery task tells the subscriber with `platform.logsDropped`.
                let size = event.value.to_string().len() as u64;
                sub.dropped.add(size);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.events_dropped += dropped;
        }
    }

    pub fn extension_mut(&mut self, id: &str) -> Option<&mut ExtensionEntry> {
        self.extensions.iter_mut().find(|e| e.id == id)
    }
}

pub fn wants(sub: &Subscriber, stream: Stream) -> bool {
    match stream {
        Stream::Platform => sub.platform,
        Stream::Function => sub.function,
        Stream::Extension => sub.extension,
    }
}
