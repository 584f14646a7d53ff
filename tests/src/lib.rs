//! Shared harness for the end-to-end tests (tier 3 of `../shared/STYLE.md`).
//!
//! End-to-end tests run real processes (our binaries, the AWS Runtime Interface Emulator, Python
//! functions, Prometheus) and talk to them over loopback HTTP. This crate gives them:
//!
//! - [`dashboards`]: the Grafana dashboards as data (panels, targets, PromQL with variables substituted).
//! - [`peers`]: where the external peers installed by `./scripts/test.sh` live. Every accessor panics
//!   with `peer X missing: run ./scripts/test.sh` when the peer is absent: tests never skip.
//! - [`workspace_bin`]: the path of a binary built from this workspace, in the same target dir and
//!   profile as the running test.
//! - [`process`]: [`Child`], a spawned process in its own process group whose stdout/stderr lines are
//!   captured (bounded) and that is killed, group and all, when dropped; [`process::Child::wait_for_line`].
//! - [`credentials`]: a loopback container-credentials endpoint (the ECS / Fargate task role).
//! - [`fault_proxy`]: [`fault_proxy::FaultProxy`], an HTTP proxy in front of moto that answers chosen AWS
//!   operations with throttling errors or 5xx in their protocol and records every attempt.
//! - [`net`]: [`free_port`], [`net::wait_for_port`].
//! - [`http`]: a small blocking HTTP/1.1 client with a timeout on every request.
//! - [`otlp_json`]: OTLP/JSON invocation, init and client spans, and posting them to a collector.
//! - [`prometheus`]: a real Prometheus started from a scrape config, ready-waited, and its query API.
//! - [`wait_until`]: poll a condition with a bounded timeout.
//!
//! Every wait takes an explicit timeout and panics with what it was waiting for when it runs out.

// This crate is test support: panicking with a clear message is how it reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod credentials;
pub mod dashboards;
pub mod fault_proxy;
pub mod http;
pub mod lambda_env;
pub mod moto;
pub mod net;
pub mod otlp_json;
pub mod peers;
pub mod process;
pub mod prometheus;
pub mod webhook;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use net::free_port;
pub use process::Child;

/// Path of the workspace binary `name` (e.g. `lambdawatch-sandbox`), built in the same target dir and
/// profile as the running test binary (`CARGO_TARGET_DIR` honoured).
///
/// Panics with a clear message when it has not been built: `cargo test -p lambdawatch-tests` does not
/// build other packages' binaries; `./scripts/test.sh` builds the whole workspace first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let mut candidates = Vec::new();
    // Test binaries live in <target>/<profile>/deps/; binaries in <target>/<profile>/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(|deps| deps.parent())
    {
        candidates.push(profile_dir.join(name));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    candidates.push(target.join("debug").join(name));
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "workspace binary `{name}` not built (looked at {candidates:?}): run `cargo build --workspace --bins` \
         or ./scripts/test.sh"
    );
}

/// Root of the repository (the workspace), for fixtures such as `functions/python-sample`.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
