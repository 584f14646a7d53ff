//! `lambdawatch-collector`: `serve` (default), `validate <file>`, `rules <file>`, `cost …`.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use lambdawatch_collector::{
    config::{self, Config},
    serve,
    slo::spec,
};

#[derive(Parser)]
#[command(
    version,
    about = "OTLP in, per-function SLOs with burn-rate alerts out"
)]
struct Cli {
    /// YAML configuration file (every key overridable by LAMBDAWATCH_* variables).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector (the default).
    Serve,
    /// Check an SLO spec; exit 1 with `file:line:col: message` per problem.
    Validate { file: PathBuf },
    /// Print the Prometheus recording and alerting rules generated from an SLO spec.
    Rules {
        file: PathBuf,
        /// How long an alert condition holds (pending) before it fires: `for:` of every
        /// alerting rule. Must equal the collector's LAMBDAWATCH_ALERT_FOR, so Prometheus and
        /// the built-in evaluator fire at the same time. [default: 1m, DEFAULT_ALERT_FOR]
        #[arg(long = "for", value_name = "DURATION", value_parser = config::parse_duration)]
        alert_for: Option<std::time::Duration>,
    },
    /// Monthly AWS Lambda cost of a what-if configuration (docs/cost.md).
    Cost(lambdawatch_collector::cost::CostArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Validate { file } => match spec::validate_file(&file) {
            Ok(s) => {
                println!("{}: ok ({} SLOs)", file.display(), s.slos.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Rules { file, alert_for } => {
            let alert_for = alert_for.unwrap_or(config::DEFAULT_ALERT_FOR);
            let rules = spec::validate_file(&file)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    lambdawatch_collector::rules::generate(&s, alert_for)
                        .map_err(|e| format!("{}: {e}", file.display()))
                });
            match rules {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cost(args) => match lambdawatch_collector::cost::run_cost_cli(args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lambdawatch-collector cost: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => match run(cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lambdawatch-collector: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref())?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cfg.log))
        .with_writer(std::io::stderr)
        .init();
    let slo_spec = match &cfg.slo_file {
        Some(f) => spec::validate_file(f).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => spec::SloSpec::embedded_default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        serve::spawn_signal_handler(shutdown.clone());
        let aws_stats = std::sync::Arc::new(lambdawatch_collector::aws::AwsStats::default());
        let deliver = serve::deliverer(&cfg, &aws_stats)?;
        serve::run(cfg, slo_spec, deliver, aws_stats, shutdown, |r| {
            let b = r.bound;
            println!(
                "lambdawatch-collector listening otlp_grpc={} otlp_http={} admin={}",
                b.otlp_grpc, b.otlp_http, b.admin
            );
        })
        .await
    })
}
