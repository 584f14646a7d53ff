//! Builds the three binaries and the sample function, in the profile the demo runs in.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub struct Binaries {
    pub collector: PathBuf,
    pub sandbox: PathBuf,
    pub extension: PathBuf,
    pub sample_function: PathBuf,
}

pub fn binaries() -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe().context("locating the demo binary")?;
    let dir = exe
        .parent()
        .context("demo binary has no directory")?
        .to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    // Tests run the demo from binaries they already built (a nested `cargo build` would wait on
    // the lock the test runner may hold).
    if std::env::var_os(NO_BUILD_ENV).is_none() {
        build(release)?;
    }
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        if !p.is_file() {
            bail!("{} was not built", p.display());
        }
        Ok(p)
    };
    Ok(Binaries {
        collector: bin("lambdawatch-collector")?,
        sandbox: bin("lambdawatch-sandbox")?,
        extension: bin("lambdawatch-extension")?,
        sample_function: bin("sample-function")?,
    })
}

/// Set to skip the build step and use the binaries beside the demo as they are.
pub const NO_BUILD_ENV: &str = "LAMBDAWATCH_DEMO_NO_BUILD";

fn build(release: bool) -> anyhow::Result<()> {
    // `cargo run` tells us which cargo it is; fall back to the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet"]);
    for p in [
        "lambdawatch-collector",
        "lambdawatch-sandbox",
        "lambdawatch-extension",
        "lambdawatch-sample-function",
    ] {
        cmd.args(["-p", p]);
    }
    if release {
        cmd.arg("--release");
    }
    println!("building the collector, the sandbox, the extension and the sample function…");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}
