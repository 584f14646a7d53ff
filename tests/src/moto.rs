//! `moto_server` (PyPI `moto[server]`, the AWS API emulator) on a free loopback port, and boto3
//! snippets run against it from the peers venv. Panics with a clear message when moto is missing.

use std::process::Command;
use std::time::Duration;

use crate::{Child, free_port, net::wait_for_port, peers};

/// A running `moto_server`; stopped (process group killed) when dropped.
pub struct Moto {
    _child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

/// Starts `moto_server` and waits until it accepts connections.
pub fn start() -> Moto {
    let bin = peers::dir().join("venv/bin/moto_server");
    assert!(
        bin.is_file(),
        "peer moto_server missing at {}: run ./scripts/test.sh",
        bin.display()
    );
    let port = free_port();
    let child = Child::spawn(
        "moto",
        Command::new(bin).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
    );
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30));
    Moto {
        _child: child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Runs a Python snippet with boto3 (and `json`, `os`, `base64`, `gzip`, `time` imported, and
/// `kw` holding the moto endpoint) against the moto at `url`; returns its stdout. Panics with
/// Python's stderr when the snippet fails.
pub fn boto3(url: &str, script: &str) -> String {
    let out = Command::new(peers::python())
        .env("MOTO", url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .args([
            "-c",
            &format!(
                "import boto3, json, os, base64, gzip, time\nkw=dict(endpoint_url=os.environ['MOTO'])\n{script}"
            ),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the peers python: {e}"));
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
