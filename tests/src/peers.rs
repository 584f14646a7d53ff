//! External peers installed by `./scripts/test.sh` (Contract 3 of `docs/ARCHITECTURE.md`).
//!
//! Layout of `$LAMBDAWATCH_PEERS` (default `${XDG_CACHE_HOME:-$HOME/.cache}/lambdawatch-peers`):
//! `venv/` (Python with awslambdaric, aws-lambda-powertools, opentelemetry-sdk/exporters, moto) and
//! `bin/aws-lambda-rie` (the AWS Runtime Interface Emulator). Debian binaries (`promtool`,
//! `prometheus`, `prometheus-alertmanager`) are found on `PATH` or in `/usr/bin`.
//!
//! Every accessor panics with `peer X missing: run ./scripts/test.sh` when the peer is absent.

use std::path::{Path, PathBuf};

/// Environment variable naming the peers directory.
pub const PEERS_ENV: &str = "LAMBDAWATCH_PEERS";

fn missing(what: &str, looked: &Path) -> ! {
    panic!(
        "peer {what} missing (looked at {}): run ./scripts/test.sh",
        looked.display()
    )
}

/// The peers directory: `$LAMBDAWATCH_PEERS`, else the default under the user's cache dir.
pub fn dir() -> PathBuf {
    let dir = if let Some(d) = std::env::var_os(PEERS_ENV).filter(|d| !d.is_empty()) {
        PathBuf::from(d)
    } else {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/root/.cache"));
        cache.join("lambdawatch-peers")
    };
    if !dir.is_dir() {
        missing("directory LAMBDAWATCH_PEERS", &dir);
    }
    dir
}

/// The venv's Python interpreter (has awslambdaric, aws-lambda-powertools, opentelemetry, moto).
pub fn python() -> PathBuf {
    let p = dir().join("venv/bin/python");
    if !p.is_file() {
        missing("python venv", &p);
    }
    p
}

/// Checks that the venv has the Python module `module` importable; panics otherwise.
pub fn python_module(module: &str) -> PathBuf {
    let py = python();
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        missing(&format!("python module `{module}`"), &py);
    }
    py
}

/// The AWS Lambda Runtime Interface Emulator binary (from the aws-sam-cli wheel).
pub fn rie() -> PathBuf {
    let p = dir().join("bin/aws-lambda-rie");
    if !p.is_file() {
        missing("aws-lambda-rie", &p);
    }
    p
}

/// A Debian-installed binary such as `promtool`, `prometheus` or `prometheus-alertmanager`: an
/// absolute path is checked as is; a bare name is searched in `$LAMBDAWATCH_PEERS/bin`, `PATH`,
/// `/usr/bin` and `/usr/sbin`.
pub fn bin(name: &str) -> PathBuf {
    let as_path = Path::new(name);
    if as_path.is_absolute() {
        if as_path.is_file() {
            return as_path.to_path_buf();
        }
        missing(name, as_path);
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os(PEERS_ENV).filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d).join("bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.push("/usr/bin".into());
    dirs.push("/usr/sbin".into());
    for d in &dirs {
        let c = d.join(name);
        if c.is_file() {
            return c;
        }
    }
    missing(name, Path::new(&format!("{dirs:?}")));
}
