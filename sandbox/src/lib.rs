//! `lambdawatch-sandbox`: a local AWS Lambda that speaks the real APIs.
//!
//! ```text
//!  workload ─┐                          ┌─► environment 0 ─ 127.0.0.1:P0 (Runtime/Extensions/Telemetry API)
//! invoke_api ┼─► function (scaler) ─────┼─► environment 1 ─ 127.0.0.1:P1      │  SIGSTOP/SIGCONT (freeze)
//!            └─► async_invoke ─ retries ┘         …                          └─► runtime + extensions (processes)
//!                    └─► DLQ                telemetry_api::delivery ──POST JSON arrays──► extension listeners
//! cloudwatch ◄─ Throttles, DeadLetterErrors, AsyncEventsReceived/Dropped ──OTLP/HTTP──► {endpoint}/v1/metrics
//! ```
//!
//! Stages: [`config`] (YAML), [`invoke_api`] and [`workload`] (ingress), [`function`] (scaler,
//! concurrency, throttles), [`async_invoke`] (queue, retries, DLQ), [`environment`] (one execution
//! environment: [`environment::lifecycle`], [`runtime_api`], [`extensions_api`], [`telemetry_api`],
//! [`freeze`]), [`cloudwatch`] (platform counts), [`report`] (the run report).
//!
//! The Telemetry API destination host `sandbox.localdomain` resolves to 127.0.0.1.
//! See `sandbox/README.md` for the CLI, the YAML fields and the payload convention.

pub mod api_error;
pub mod async_invoke;
pub mod cloudwatch;
pub mod config;
pub mod environment;
pub mod extensions_api;
pub mod freeze;
pub mod function;
pub mod ids;
pub mod invoke_api;
pub mod report;
pub mod runtime_api;
pub mod telemetry_api;
pub mod workload;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    cloudwatch::PlatformCounters,
    config::FunctionConfig,
    config::WorkloadConfig,
    report::{Recorder, RunReport},
};

/// What `lambdawatch-sandbox run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub function: FunctionConfig,
    pub workload: Option<WorkloadConfig>,
    pub invoke_addr: SocketAddr,
    pub report: Option<PathBuf>,
    pub cloudwatch_endpoint: Option<String>,
}

/// Runs the sandbox: serves the Invoke API, runs the workload (or waits for `stop` when there is
/// none), then shuts every environment down and returns the report.
pub async fn run(
    opts: RunOptions,
    stop: CancellationToken,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<RunReport> {
    let config = Arc::new(opts.function);
    let recorder = Arc::new(Recorder::default());
    let counters = Arc::new(PlatformCounters::default());
    let function = function::start(config.clone(), recorder.clone(), counters.clone()).await?;
    let workers = TaskTracker::new();
    let async_queue = async_invoke::start(
        function.clone(),
        recorder.clone(),
        counters.clone(),
        &workers,
    );

    let cw_stop = CancellationToken::new();
    let cw_task = opts.cloudwatch_endpoint.clone().map(|endpoint| {
        tokio::spawn(cloudwatch::run(
            endpoint,
            config.clone(),
            counters.clone(),
            recorder.clone(),
            cw_stop.clone(),
        ))
    });

    let listener = tokio::net::TcpListener::bind(opts.invoke_addr).await?;
    let addr = listener.local_addr()?;
    let api = Arc::new(invoke_api::InvokeApi {
        function: function.clone(),
        async_queue: async_queue.clone(),
    });
    let server_stop = CancellationToken::new();
    let server_stop2 = server_stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, invoke_api::router(api))
            .with_graceful_shutdown(async move { server_stop2.cancelled().await })
            .await
    });
    on_listening(addr);

    match &opts.workload {
        Some(w) => {
            tokio::select! {
                () = workload::run(w, &function, &async_queue) => {}
                () = stop.cancelled() => tracing::info!("stopped before the workload ended"),
            }
        }
        None => stop.cancelled().await,
    }
    // Staged shutdown: ingress first, then the async queue drains, then the environments.
    server_stop.cancel();
    let _ = server.await;
    drop(async_queue);
    workers.close();
    workers.wait().await;
    function.shutdown().await;
    cw_stop.cancel();
    if let Some(t) = cw_task {
        let _ = t.await;
    }
    let report = recorder.snapshot(&config.name);
    if let Some(path) = &opts.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}
