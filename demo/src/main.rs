//! `lambdawatch-demo`: the whole pipeline on one machine, embedded defaults, no AWS account.
//!
//! ```text
//! sandbox (two functions, seeded workloads) ──Telemetry API──► lambdawatch-extension
//!      │                                                          │ OTLP/HTTP
//!      └── CloudWatch-shaped counts (throttles, DLQ) ─────────────┴──► lambdawatch-collector
//!                                                   (embedded default SLOs) ──webhook──► this demo
//! ```
//!
//! It builds the binaries (same profile as itself), starts the collector on free loopback ports,
//! runs a few minutes of traffic compressed into about a minute — cold starts, a slow-init version
//! that breaks the cold-start SLO, errors, one timeout, throttles at the concurrency limit, an async
//! event dead-lettered — then prints the SLO table, the alerts that fired and each function's cost
//! so far with its 30-day projection, and exits 0.
//! `--serve` keeps the collector and its status page up until Ctrl-C.

mod build;
mod capture;
mod http;
mod report;
mod scenario;

use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = args.iter().any(|a| a == "--serve");
    if let Some(bad) = args.iter().find(|a| *a != "--serve") {
        anyhow::bail!("unknown argument {bad:?}; usage: lambdawatch-demo [--serve]");
    }
    let bins = build::binaries()?;
    let work = scenario::Workdir::create()?;
    let webhook = capture::Webhook::start()?;
    let collector = scenario::start_collector(&bins, &work, &webhook.url())?;
    println!("collector up: status page http://{}/", collector.admin);
    scenario::run_traffic(&bins, &work, &collector)?;
    // Let the collector evaluate what arrived last and deliver the alerts.
    std::thread::sleep(Duration::from_secs(4));
    let slos = http::get_json(&format!("http://{}/api/v1/slos", collector.admin))?;
    if std::env::var_os("LAMBDAWATCH_DEMO_DUMP").is_some() {
        println!("{slos:#}");
    }
    report::print(&slos, &webhook.received());
    let cost = http::get_json(&format!("http://{}/api/v1/cost", collector.admin))?;
    if std::env::var_os("LAMBDAWATCH_DEMO_DUMP").is_some() {
        println!("{cost:#}");
    }
    report::print_cost(&cost);
    if serve {
        println!(
            "\n--serve: collector stays up at http://{}/ (Ctrl-C to stop)",
            collector.admin
        );
        collector.wait();
    }
    Ok(())
}
