//! The lifecycle of one execution environment: INIT, INVOKE, freeze/thaw, reset and SHUTDOWN.
//!
//! Consumes [`EnvCommand`]s from the function (bounded queue, the function only sends an invoke
//! to an idle environment); produces `platform.*` events in the documented order, answers to the
//! invoker, one [`InvocationRecord`] per invocation and a [`Released`] when the environment is free
//! again (after every extension called `/event/next`, not when the runtime answered).
//!
//! Order of one warm invocation:
//! thaw → `platform.start` → INVOKE to extensions and runtime → `/response` → answer to the caller
//! → runtime `/next` → `platform.runtimeDone` → every extension `/event/next` → gate closed →
//! `platform.report` → SIGSTOP. The report is therefore delivered at the next thaw.
//! A timeout or a crash answers the caller, reports, sends SHUTDOWN (reason `timeout`/`failure`)
//! and kills the processes; the next invocation re-initialises with `phase: invoke`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    EnvContext,
    process::{self, Proc, Role},
    state::{CurrentInvocation, EnvShared, EnvState, RuntimeInvocation, RuntimeResult},
};
use crate::{
    config::{INIT_LIMIT_MS, SHUTDOWN_BUDGET_MS},
    freeze::Signal,
    ids,
    report::{InvocationRecord, ShutdownRecord},
    telemetry_api::events::{self, InitFacts, ReportMetrics, Span, Tracing, unix_ms_now},
};

/// Work for an environment.
#[derive(Debug)]
pub enum EnvCommand {
    /// Initialise now (provisioned concurrency), then freeze.
    Init,
    Invoke(InvokeJob),
    Shutdown {
        reason: &'static str,
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
pub struct InvokeJob {
    pub request_id: String,
    pub payload: Bytes,
    /// The caller's `X-Amzn-Trace-Id`, if it sent one.
    pub trace: Option<String>,
    pub invocation_type: &'static str,
    pub attempt: u32,
    pub reply: oneshot::Sender<InvokeResponse>,
}

/// The answer an invoker gets.
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub request_id: String,
    pub status: &'static str,
    pub body: Bytes,
    /// `X-Amz-Function-Error` (`Unhandled`) when the function failed.
    pub function_error: Option<String>,
    pub error_type: Option<String>,
    pub cold_start: bool,
}

/// Sent to the function when the environment can take work again (or must be removed).
#[derive(Debug, Clone, Copy)]
pub struct Released {
    pub index: u64,
    pub healthy: bool,
}

/// Why an init did not succeed.
#[derive(Debug)]
struct InitFailure {
    status: &'static str,
    error_type: String,
    duration_ms: f64,
}

pub struct Lifecycle {
    ctx: EnvContext,
    shared: Arc<EnvShared>,
    addr: std::net::SocketAddr,
    index: u64,
    init_type: &'static str,
    runtime: Option<Proc>,
    extensions: Vec<Proc>,
    /// `Some(phase)` when the next invoke must initialise first.
    needs_init: Option<&'static str>,
    frozen: bool,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("index", &self.index)
            .field("frozen", &self.frozen)
            .finish()
    }
}

impl Lifecycle {
    pub fn new(
        ctx: EnvContext,
        shared: Arc<EnvShared>,
        addr: std::net::SocketAddr,
        index: u64,
        init_type: &'static str,
    ) -> Self {
        Lifecycle {
            ctx,
            shared,
            addr,
            index,
            init_type,
            runtime: None,
            extensions: Vec::new(),
            needs_init: Some("init"),
            frozen: false,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<EnvCommand>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                EnvCommand::Init => {
                    let healthy = match self.init("init").await {
                        Ok(_) => {
                            self.ctx.recorder.cold_start();
                            self.freeze();
                            true
                        }
                        Err(_) => {
                            self.kill_all();
                            false
                        }
                    };
                    self.release(healthy);
                }
                EnvCommand::Invoke(job) => {
                    let healthy = self.invoke(job).await;
                    self.release(healthy);
                }
                EnvCommand::Shutdown { reason, done } => {
                    self.shutdown(reason).await;
                    self.finish().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
        self.finish().await;
    }

    /// Final accounting: waits (bounded) for the delivery tasks, then reports their counters.
    async fn finish(&mut self) {
        self.kill_all();
        // Let the delivery tasks finish their last batch so the counters are final.
        self.shared.lock().subscribers.clear();
        self.shared.deliveries.close();
        let budget = Duration::from_millis(SHUTDOWN_BUDGET_MS);
        if tokio::time::timeout(budget, self.shared.deliveries.wait())
            .await
            .is_err()
        {
            tracing::debug!(
                env = self.index,
                "telemetry deliveries still running at the end"
            );
        }
        let dropped = self.shared.lock().events_dropped;
        self.shared
            .delivery_stats
            .events_dropped_queue_full
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        self.ctx.recorder.telemetry(&self.shared.delivery_stats);
    }

    fn release(&self, healthy: bool) {
        let msg = Released {
            index: self.index,
            healthy,
        };
        // The channel holds one slot per environment, so this only fails if the function is gone.
        if self.ctx.released.try_send(msg).is_err() {
            tracing::debug!(env = self.index, "release not delivered: function gone");
        }
    }

    fn env_vars(&self) -> Vec<(String, String)> {
        let f = &self.ctx.function;
        let mut v: Vec<(String, String)> = f
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let task_root = f
            .code_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
            .to_string_lossy()
            .into_owned();
        let log_group = format!("/aws/lambda/{}", f.name);
        let log_stream = format!(
            "{}/[{}]{}",
            events::rfc3339(unix_ms_now() as u64)
                .get(0..10)
                .unwrap_or("1970-01-01")
                .replace('-', "/"),
            f.version,
            self.shared.info.instance_id.replace('-', "")
        );
        for (k, val) in [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", f.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", f.version.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", f.memory_mb.to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", log_group),
            ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream),
            ("AWS_REGION", f.region.clone()),
            ("AWS_DEFAULT_REGION", f.region.clone()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", self.init_type.to_owned()),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
            ("LAMBDA_TASK_ROOT", task_root),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
            ("_HANDLER", f.handler.join(" ")),
            ("TZ", ":UTC".to_owned()),
            ("LANG", "en_US.UTF-8".to_owned()),
            ("PATH", path),
        ] {
            v.retain(|(key, _)| key != k);
            v.push((k.to_owned(), val));
        }
        v
    }

    /// Waits until `pred` holds or `deadline` passes; every state change wakes it.
    async fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut pred: impl FnMut(&EnvState) -> Option<T>,
    ) -> Option<T> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = pred(&self.shared.lock()) {
                return Some(t);
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return pred(&self.shared.lock());
                    }
                }
                None => notified.await,
            }
        }
    }

    /// INIT: extensions, then the runtime; `Ok(duration_ms)`.
    async fn init(&mut self, phase: &'static str) -> Result<f64, InitFailure> {
        let started = Instant::now();
        let start_ms = unix_ms_now();
        let deadline = started + Duration::from_millis(INIT_LIMIT_MS);
        {
            let mut st = self.shared.lock();
            st.registration_open = true;
            st.initialised = false;
            st.extensions.clear();
            st.external_names.clear();
            st.extension_exits.clear();
            st.subscribers.clear();
            st.backlog.clear();
            st.runtime = Default::default();
            st.current = None;
        }
        self.shared.gate.send_replace(true);
        self.shared.draining.send_replace(false);
        let f = self.ctx.function.clone();
        self.shared.emit(events::init_start(&InitFacts {
            initialization_type: self.init_type,
            phase,
            function_name: &f.name,
            function_version: &f.version,
            instance_id: &self.shared.info.instance_id,
            memory_mb: f.memory_mb,
        }));
        let vars = self.env_vars();
        // Extension init.
        let paths = match &f.extensions_dir {
            Some(dir) => process::list_extensions(dir).unwrap_or_else(|e| {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list extensions");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let names: Vec<String> = paths
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        // Known before any extension runs, so a registration can tell external from internal.
        self.shared.lock().external_names = names.clone();
        for (path, name) in paths.iter().zip(names) {
            let argv = vec![path.to_string_lossy().into_owned()];
            match process::spawn(
                &name,
                &argv,
                None,
                &vars,
                Role::Extension,
                self.shared.clone(),
            ) {
                Ok(p) => self.extensions.push(p),
                Err(e) => {
                    return Err(self
                        .init_failed(
                            phase,
                            started,
                            "failure",
                            &format!("Extension.LaunchError: {e}"),
                        )
                        .await);
                }
            }
        }
        let expected = self.extensions.len();
        let registered = self
            .wait_for(Some(deadline), |st| {
                if !st.extension_exits.is_empty() {
                    return Some(false);
                }
                (st.extensions.len() >= expected).then_some(true)
            })
            .await;
        match registered {
            Some(true) => {}
            Some(false) => {
                return Err(self
                    .init_failed(phase, started, "failure", "Extension.Crash")
                    .await);
            }
            None => {
                return Err(self
                    .init_failed(phase, started, "timeout", "Extension.Timeout")
                    .await);
            }
        }
        let ext_registered = Instant::now();
        self.shared.lock().registration_open = false;
        // Runtime init.
        let runtime_start = Instant::now();
        let runtime_start_ms = unix_ms_now();
        match process::spawn(
            "runtime",
            &f.handler,
            f.code_dir.as_deref(),
            &vars,
            Role::Runtime,
            self.shared.clone(),
        ) {
            Ok(p) => self.runtime = Some(p),
            Err(e) => {
                return Err(self
                    .init_failed(
                        phase,
                        started,
                        "failure",
                        &format!("Runtime.InvalidEntrypoint: {e}"),
                    )
                    .await);
            }
        }
        #[derive(Debug)]
        enum InitEnd {
            Ready,
            RuntimeError(String),
            RuntimeExit,
            ExtensionError(String),
        }
        let end = self
            .wait_for(Some(deadline), |st| {
                if let Some((t, _)) = &st.runtime.init_error {
                    return Some(InitEnd::RuntimeError(t.clone()));
                }
                if st.runtime.exited {
                    return Some(InitEnd::RuntimeExit);
                }
                if let Some(e) = st
                    .extensions
                    .iter()
                    .find_map(|e| e.init_error.clone().or_else(|| e.exit_error.clone()))
                {
                    return Some(InitEnd::ExtensionError(e));
                }
                if !st.extension_exits.is_empty() {
                    return Some(InitEnd::ExtensionError("Extension.Crash".into()));
                }
                let runtime_ready = st.runtime.next_calls > 0;
                let extensions_ready = st.extensions.iter().all(|e| e.ready);
                (runtime_ready && extensions_ready).then_some(InitEnd::Ready)
            })
            .await;
        let runtime_done = self
            .shared
            .lock()
            .runtime
            .last_next_at
            .map(Instant::from_std)
            .unwrap_or_else(Instant::now);
        match end {
            Some(InitEnd::Ready) => {}
            Some(InitEnd::RuntimeError(t)) => {
                return Err(self.init_failed(phase, started, "error", &t).await);
            }
            Some(InitEnd::RuntimeExit) => {
                return Err(self
                    .init_failed(phase, started, "failure", "Runtime.ExitError")
                    .await);
            }
            Some(InitEnd::ExtensionError(t)) => {
                return Err(self.init_failed(phase, started, "failure", &t).await);
            }
            None => {
                return Err(self
                    .init_failed(phase, started, "timeout", "Sandbox.Timedout")
                    .await);
            }
        }
        let duration_ms = ms(runtime_done.max(started) - started);
        let runtime_span = Span {
            name: "runtimeInit",
            start_unix_ms: runtime_start_ms,
            duration_ms: ms(runtime_done.saturating_duration_since(runtime_start)),
        };
        let ext_span = Span {
            name: "extensionInit",
            start_unix_ms: start_ms,
            duration_ms: ms(ext_registered - started),
        };
        {
            let mut st = self.shared.lock();
            st.emit(events::init_runtime_done(
                self.init_type,
                phase,
                "success",
                std::slice::from_ref(&runtime_span),
            ));
            st.emit(events::init_report(
                self.init_type,
                phase,
                "success",
                duration_ms,
                &[ext_span, runtime_span],
            ));
            st.initialised = true;
            st.backlog.clear();
        }
        self.needs_init = None;
        Ok(duration_ms)
    }

    async fn init_failed(
        &mut self,
        phase: &'static str,
        started: Instant,
        status: &'static str,
        error_type: &str,
    ) -> InitFailure {
        let duration_ms = ms(started.elapsed());
        {
            let mut st = self.shared.lock();
            st.emit(events::init_runtime_done(
                self.init_type,
                phase,
                status,
                &[],
            ));
            st.emit(events::init_report(
                self.init_type,
                phase,
                status,
                duration_ms,
                &[],
            ));
            st.initialised = true;
        }
        tracing::warn!(env = self.index, status, error_type, "init failed");
        self.reset(if status == "timeout" {
            "timeout"
        } else {
            "failure"
        })
        .await;
        InitFailure {
            status,
            error_type: error_type.to_owned(),
            duration_ms,
        }
    }

    fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.runtime.iter().chain(self.extensions.iter())
    }

    fn freeze(&mut self) {
        for p in self.procs() {
            p.signal(Signal::Stop);
        }
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if self.frozen {
            for p in self.procs() {
                p.signal(Signal::Cont);
            }
            self.frozen = false;
        }
        self.shared.gate.send_replace(true);
    }

    fn kill_all(&mut self) {
        for p in self.procs() {
            p.signal(Signal::Kill);
        }
    }

    fn max_memory_mb(&self) -> u64 {
        // Every process was started as the leader of its own group (pgid = pid).
        let groups: Vec<u32> = self
            .procs()
            .filter(|p| !p.exited())
            .map(|p| p.pid)
            .collect();
        let kib = process::group_peak_rss_kib(&groups);
        kib.div_ceil(1024)
    }

    /// One invocation; returns whether the environment is still usable.
    async fn invoke(&mut self, job: InvokeJob) -> bool {
        let f = self.ctx.function.clone();
        let mut init_duration = None;
        let cold = self.needs_init.is_some();
        if let Some(phase) = self.needs_init {
            match self.init(phase).await {
                Ok(d) => init_duration = Some(d),
                Err(fail) => {
                    let body = json!({
                        "errorMessage": format!("RequestId: {} Error: init {}: {}", job.request_id, fail.status, fail.error_type),
                        "errorType": fail.error_type,
                    });
                    let _ = job.reply.send(InvokeResponse {
                        request_id: job.request_id.clone(),
                        status: "failure",
                        body: Bytes::from(body.to_string()),
                        function_error: Some("Unhandled".into()),
                        error_type: Some(fail.error_type.clone()),
                        cold_start: true,
                    });
                    self.ctx.recorder.invocation(InvocationRecord {
                        request_id: job.request_id,
                        status: "failure".into(),
                        invocation_type: job.invocation_type.into(),
                        attempt: job.attempt,
                        environment: self.index,
                        cold_start: true,
                        init_type: Some(self.init_type.into()),
                        init_duration_ms: Some(fail.duration_ms),
                        duration_ms: 0.0,
                        billed_duration_ms: 0,
                        max_memory_used_mb: 0,
                        error_type: Some(fail.error_type),
                    });
                    // A function that cannot initialise gets a fresh environment next time.
                    return false;
                }
            }
        }
        self.thaw();
        // The caller's trace header passes through (X-Ray PassThrough); one is made only when
        // the caller sent none.
        let (trace, parent) = match job.trace.as_deref() {
            Some(t) => (
                t.to_owned(),
                ids::xray_parent(t).unwrap_or_else(ids::span_id),
            ),
            None => ids::xray_header(),
        };
        let tracing_ctx = Tracing {
            span_id: parent,
            value: trace.clone(),
        };
        let invoke_start = Instant::now();
        let invoke_start_ms = unix_ms_now();
        let deadline_ms = invoke_start_ms as u64 + f.timeout_ms;
        let deadline = invoke_start + Duration::from_millis(f.timeout_ms);
        let invocation = RuntimeInvocation {
            request_id: job.request_id.clone(),
            deadline_ms,
            function_arn: f.function_arn(),
            trace_id: trace.clone(),
            payload: job.payload.clone(),
        };
        let invoke_event = json!({
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": job.request_id,
            "invokedFunctionArn": f.function_arn(),
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace},
        });
        let next_calls_before;
        {
            let mut st = self.shared.lock();
            st.current = Some(CurrentInvocation {
                request_id: job.request_id.clone(),
                result: None,
                response_started: None,
            });
            st.emit(events::start(
                &job.request_id,
                &f.version,
                &f.function_arn(),
                &tracing_ctx,
            ));
            deliver_extension_event(&mut st, &invoke_event, |e| e.invoke);
            next_calls_before = st.runtime.next_calls;
            match st.runtime.waiter.take() {
                Some(w) => {
                    if let Err(inv) = w.send(invocation) {
                        st.runtime.queued = Some(inv);
                    }
                }
                None => st.runtime.queued = Some(invocation),
            }
        }
        self.shared.notify();

        // Wait for the runtime's answer.
        #[derive(Debug)]
        enum End {
            Result(RuntimeResult, std::time::Instant, std::time::Instant),
            Exit,
        }
        let end = self
            .wait_for(Some(deadline), |st| {
                if let Some(cur) = &st.current
                    && let Some((r, at)) = &cur.result
                {
                    return Some(End::Result(
                        r.clone(),
                        cur.response_started.unwrap_or(*at),
                        *at,
                    ));
                }
                st.runtime.exited.then_some(End::Exit)
            })
            .await;
        let (status, error_type, body, function_error, latency_end, result_at) = match end {
            Some(End::Result(RuntimeResult::Response { body }, started, at)) => {
                ("success", None, body, None, started, at)
            }
            Some(End::Result(RuntimeResult::Error { error_type, body }, started, at)) => (
                "error",
                Some(error_type),
                body,
                Some("Unhandled".to_owned()),
                started,
                at,
            ),
            Some(End::Exit) => {
                let now = std::time::Instant::now();
                let body = json!({
                    "errorMessage": format!("RequestId: {} Error: Runtime exited without providing a reason", job.request_id),
                    "errorType": "Runtime.ExitError",
                });
                (
                    "failure",
                    Some("Runtime.ExitError".to_owned()),
                    Bytes::from(body.to_string()),
                    Some("Unhandled".to_owned()),
                    now,
                    now,
                )
            }
            None => {
                let now = std::time::Instant::now();
                let body = json!({
                    "errorMessage": format!(
                        "{} {} Task timed out after {:.2} seconds",
                        events::now_rfc3339(),
                        job.request_id,
                        f.timeout_ms as f64 / 1000.0
                    ),
                    "errorType": "Sandbox.Timedout",
                });
                (
                    "timeout",
                    Some("Sandbox.Timedout".to_owned()),
                    Bytes::from(body.to_string()),
                    Some("Unhandled".to_owned()),
                    now,
                    now,
                )
            }
        };
        let produced = body.len() as u64;
        let _ = job.reply.send(InvokeResponse {
            request_id: job.request_id.clone(),
            status,
            body,
            function_error,
            error_type: error_type.clone(),
            cold_start: cold,
        });
        let latency_end = Instant::from_std(latency_end);
        let result_at = Instant::from_std(result_at);
        let mut spans = vec![
            Span {
                name: "responseLatency",
                start_unix_ms: invoke_start_ms,
                duration_ms: ms(latency_end.saturating_duration_since(invoke_start)),
            },
            Span {
                name: "responseDuration",
                start_unix_ms: invoke_start_ms
                    + ms(latency_end.saturating_duration_since(invoke_start)),
                duration_ms: ms(result_at.saturating_duration_since(latency_end)),
            },
        ];
        let mut status = status;
        let mut error_type = error_type;
        let mut healthy_processes = matches!(status, "success" | "error");
        // The runtime is done when it asks for the next invocation.
        let mut runtime_done = result_at;
        if healthy_processes {
            let next = self
                .wait_for(Some(deadline), |st| {
                    if st.runtime.next_calls > next_calls_before {
                        return Some(st.runtime.last_next_at.map(Instant::from_std));
                    }
                    st.runtime.exited.then_some(None)
                })
                .await;
            match next {
                Some(Some(at)) => runtime_done = at.max(result_at),
                Some(None) => {
                    status = "failure";
                    error_type = Some("Runtime.ExitError".into());
                    healthy_processes = false;
                }
                None => {
                    status = "timeout";
                    error_type = Some("Sandbox.Timedout".into());
                    healthy_processes = false;
                    runtime_done = Instant::now();
                }
            }
            spans.push(Span {
                name: "runtimeOverhead",
                start_unix_ms: invoke_start_ms + ms(result_at - invoke_start),
                duration_ms: ms(runtime_done.saturating_duration_since(result_at)),
            });
        } else {
            runtime_done = Instant::now();
        }
        self.shared.emit(events::runtime_done(
            &job.request_id,
            status,
            error_type.as_deref(),
            &tracing_ctx,
            &spans,
            ms(runtime_done - invoke_start),
            produced,
        ));
        // Every extension must call /event/next before the report exists.
        let mut ext_done = runtime_done;
        if healthy_processes {
            // An extension that exits or reports `/exit/error` leaves the environment unusable:
            // the invocation is a failure and the environment is reset (the RIE keeps it as the
            // environment's fatal error).
            let ready = self
                .wait_for(Some(deadline), |st| {
                    if let Some(t) = st.extensions.iter().find_map(|e| e.exit_error.clone()) {
                        return Some(Err(t));
                    }
                    if !st.extension_exits.is_empty() {
                        return Some(Err("Extension.Crash".to_owned()));
                    }
                    st.extensions
                        .iter()
                        .filter(|e| e.invoke)
                        .all(|e| e.ready)
                        .then(|| {
                            Ok(st
                                .extensions
                                .iter()
                                .filter_map(|e| e.when_ready.map(Instant::from_std))
                                .max())
                        })
                })
                .await;
            match ready {
                Some(Ok(at)) => {
                    ext_done = at.unwrap_or(runtime_done).max(runtime_done);
                }
                Some(Err(t)) => {
                    status = "failure";
                    error_type = Some(t);
                    healthy_processes = false;
                    ext_done = Instant::now();
                }
                None => {
                    status = "timeout";
                    error_type = Some("Sandbox.Timedout".into());
                    healthy_processes = false;
                    ext_done = Instant::now();
                }
            }
            spans.push(Span {
                name: "extensionOverhead",
                start_unix_ms: invoke_start_ms + ms(runtime_done - invoke_start),
                duration_ms: ms(ext_done.saturating_duration_since(runtime_done)),
            });
        }
        // Duration and billed duration cover the same interval (INVOKE until the runtime and every
        // extension are done), billed = the reported duration rounded up to 1 ms.
        let duration_ms = events::round2(ms(ext_done - invoke_start));
        let billed = billed_ms(duration_ms);
        let metrics = ReportMetrics {
            duration_ms,
            billed_duration_ms: billed,
            memory_size_mb: f.memory_mb,
            max_memory_used_mb: self.max_memory_mb(),
            init_duration_ms: init_duration,
        };
        {
            let mut st = self.shared.lock();
            st.current = None;
            if healthy_processes {
                // Frozen from here: the report waits for the next thaw.
                self.shared.gate.send_replace(false);
            }
            st.emit(events::report(
                &job.request_id,
                status,
                error_type.as_deref(),
                &tracing_ctx,
                &metrics,
                &spans,
            ));
        }
        self.ctx.recorder.invocation(InvocationRecord {
            request_id: job.request_id,
            status: status.into(),
            invocation_type: job.invocation_type.into(),
            attempt: job.attempt,
            environment: self.index,
            cold_start: cold,
            init_type: cold.then(|| self.init_type.to_owned()),
            init_duration_ms: init_duration,
            duration_ms,
            billed_duration_ms: billed,
            max_memory_used_mb: metrics.max_memory_used_mb,
            error_type,
        });
        if healthy_processes {
            self.freeze();
        } else {
            self.reset(if status == "timeout" {
                "timeout"
            } else {
                "failure"
            })
            .await;
        }
        true
    }

    /// Resets after a timeout or crash: SHUTDOWN to extensions, kill, re-init on the next invoke.
    async fn reset(&mut self, reason: &'static str) {
        self.shutdown(reason).await;
        self.needs_init = Some("invoke");
    }

    /// SHUTDOWN with a [`SHUTDOWN_BUDGET_MS`] budget, then SIGKILL.
    async fn shutdown(&mut self, reason: &'static str) {
        let started = Instant::now();
        if self.runtime.is_none() && self.extensions.is_empty() {
            return;
        }
        self.thaw();
        self.shared.draining.send_replace(true);
        let deadline = started + Duration::from_millis(SHUTDOWN_BUDGET_MS);
        let deadline_ms = unix_ms_now() as u64 + SHUTDOWN_BUDGET_MS;
        let ev = json!({
            "eventType": "SHUTDOWN",
            "shutdownReason": reason,
            "deadlineMs": deadline_ms,
        });
        {
            let mut st = self.shared.lock();
            st.current = None;
            st.registration_open = false;
            deliver_extension_event(&mut st, &ev, |e| e.shutdown);
            // The runtime gets no more work: its parked /next is released with an error.
            st.runtime.waiter = None;
            st.runtime.queued = None;
        }
        self.shared.notify();
        if let Some(rt) = &self.runtime {
            rt.signal(Signal::Term);
        }
        // Wait for as many extension exits as extensions registered for SHUTDOWN (counted, not
        // matched by name: Lambda does not require the registered name to be the file name).
        let expected_exits = {
            let st = self.shared.lock();
            st.extensions.iter().filter(|e| e.shutdown).count()
        }
        .min(self.extensions.len());
        let has_runtime = self.runtime.is_some();
        let _ = self
            .wait_for(Some(deadline), |st| {
                (st.extension_exits.len() >= expected_exits && (st.runtime.exited || !has_runtime))
                    .then_some(())
            })
            .await;
        let killed: Vec<String> = self
            .extensions
            .iter()
            .filter(|p| !p.exited())
            .map(|p| p.name.clone())
            .collect();
        self.kill_all();
        for p in self.procs() {
            let mut rx = p.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), rx.wait_for(Option::is_some)).await;
        }
        {
            let mut st = self.shared.lock();
            // Closing the queues lets delivery tasks send what is left and stop.
            st.subscribers.clear();
            for e in &mut st.extensions {
                e.waiter = None;
            }
        }
        self.runtime = None;
        self.extensions.clear();
        self.frozen = false;
        self.ctx.recorder.shutdown(ShutdownRecord {
            environment: self.index,
            reason: reason.to_owned(),
            duration_ms: ms(started.elapsed()),
            killed_extensions: killed,
        });
    }
}

/// Gives `ev` to every extension selected by `filter`: to its parked `/event/next` or its queue.
fn deliver_extension_event(
    st: &mut EnvState,
    ev: &Value,
    filter: impl Fn(&super::state::ExtensionEntry) -> bool,
) {
    for ext in st.extensions.iter_mut().filter(|e| filter(e)) {
        ext.ready = false;
        match ext.waiter.take() {
            Some(w) => {
                if let Err(ev) = w.send(ev.clone()) {
                    ext.queued.push_back(ev);
                }
            }
            None => ext.queued.push_back(ev.clone()),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Billed duration: rounded up to the next millisecond.
pub fn billed_ms(duration_ms: f64) -> u64 {
    duration_ms.max(0.0).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_rounds_up_to_1ms() {
        assert_eq!(billed_ms(0.0), 0);
        assert_eq!(billed_ms(0.01), 1);
        assert_eq!(billed_ms(693.92), 694);
        assert_eq!(billed_ms(5.0), 5);
    }
}
