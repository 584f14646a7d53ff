//! `lambdawatch-sandbox run --function FUNCTION.yaml [--workload WORKLOAD.yaml]
//! [--invoke-addr ADDR] [--report REPORT.json] [--cloudwatch-endpoint URL]`

use std::{io::Write, net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use lambdawatch_sandbox::{
    RunOptions,
    config::{FunctionConfig, WorkloadConfig},
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "lambdawatch-sandbox",
    about = "A local AWS Lambda that speaks the real APIs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a function: a workload, or the Invoke API until SIGTERM/ctrl-c.
    Run {
        #[arg(long)]
        function: PathBuf,
        #[arg(long)]
        workload: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:9001")]
        invoke_addr: SocketAddr,
        #[arg(long)]
        report: Option<PathBuf>,
        #[arg(long)]
        cloudwatch_endpoint: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Cmd::Run {
        function,
        workload,
        invoke_addr,
        report,
        cloudwatch_endpoint,
    } = Cli::parse().cmd;
    let opts = RunOptions {
        function: FunctionConfig::load(&function)?,
        workload: workload.as_deref().map(WorkloadConfig::load).transpose()?,
        invoke_addr,
        report,
        cloudwatch_endpoint,
    };
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(_) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {}
        }
        signal_stop.cancel();
    });
    let report = lambdawatch_sandbox::run(opts, stop, |addr| {
        println!("invoke api listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })
    .await?;
    let i = &report.invocations;
    // stdout may be closed by now (a caller that only wanted the address): not an error.
    let _ = writeln!(
        std::io::stdout(),
        "done: success={} error={} timeout={} failure={} cold_starts={} throttles={} async_received={} dead_lettered={}",
        i.success,
        i.error,
        i.timeout,
        i.failure,
        report.cold_starts,
        report.throttles,
        report.async_.received,
        report.async_.dead_lettered
    );
    Ok(())
}
