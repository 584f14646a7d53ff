//! One execution environment: an HTTP listener serving the Runtime, Extensions and Telemetry
//! APIs, the processes (runtime + external extensions) and the lifecycle that drives them.
//!
//! ```text
//! function::scaler ──EnvCommand (bounded 4)──► lifecycle ──SIGSTOP/SIGCONT──► processes
//!                                                 │  ▲
//!                                    state.rs ◄───┘  └── runtime_api / extensions_api / telemetry_api
//! ```
//! The environment's listener is an ephemeral port on 127.0.0.1, handed to the processes as
//! `AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT`.

pub mod lifecycle;
pub mod process;
pub mod state;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use lifecycle::{EnvCommand, InvokeJob, InvokeResponse, Released};

use crate::{config::FunctionConfig, report::Recorder};

/// Commands an environment may have queued (one invoke at a time, plus init/shutdown).
pub const ENV_QUEUE: usize = 4;

/// What an environment needs from its function.
#[derive(Debug, Clone)]
pub struct EnvContext {
    pub function: Arc<FunctionConfig>,
    pub released: mpsc::Sender<Released>,
    pub recorder: Arc<Recorder>,
}

/// The function's handle on one environment.
#[derive(Debug, Clone)]
pub struct EnvHandle {
    pub index: u64,
    pub addr: SocketAddr,
    pub tx: mpsc::Sender<EnvCommand>,
}

/// Binds the environment's listener and starts its server and lifecycle.
pub async fn start(
    ctx: EnvContext,
    index: u64,
    init_type: &'static str,
) -> std::io::Result<EnvHandle> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let shared = state::EnvShared::new(state::EnvInfo {
        function: ctx.function.clone(),
        instance_id: format!("{}-{index}", crate::ids::uuid_v4()),
        env_index: index,
    });
    let app: Router = Router::new()
        .merge(crate::runtime_api::routes())
        .merge(crate::extensions_api::routes())
        .merge(crate::telemetry_api::routes())
        .with_state(shared.clone());
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "environment listener failed");
        }
    });
    let (tx, rx) = mpsc::channel(ENV_QUEUE);
    let env = lifecycle::Lifecycle::new(ctx, shared, addr, index, init_type);
    tokio::spawn(async move {
        env.run(rx).await;
        stop.cancel();
    });
    Ok(EnvHandle { index, addr, tx })
}
