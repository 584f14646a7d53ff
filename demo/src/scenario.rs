//! The demo's functions, workloads and processes.
//!
//! Two functions, each in its own sandbox, both with the extension from this build in their
//! extensions directory and the embedded-default collector as their OTLP endpoint:
//! - `orders` (v1): steady traffic, then an incident (8 % errors, a timeout), a burst past its
//!   reserved concurrency of 4 (throttles), and async events whose failures are retried and
//!   dead-lettered;
//! - `checkout` (v2): a release whose init sleeps 900 ms; three scale-out bursts of 20 concurrent invocations (two waves each), each followed by
//!   a quiet spell long enough for idle environments to spin down, give it well over the 60 cold
//!   starts an hour the low-traffic guard asks for, all breaking the 500 ms objective.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::build::Binaries;

pub struct Workdir {
    pub root: PathBuf,
}

impl Workdir {
    pub fn create() -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!("lambdawatch-demo-{}", std::process::id()));
        std::fs::create_dir_all(root.join("extensions"))?;
        Ok(Self { root })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Collector {
    child: Guard,
    pub admin: String,
    pub otlp_http: String,
}

impl Collector {
    pub fn wait(mut self) {
        let _ = self.child.0.wait();
    }
}

pub fn start_collector(
    bins: &Binaries,
    work: &Workdir,
    webhook: &str,
) -> anyhow::Result<Collector> {
    let log = std::fs::File::create(work.root.join("collector.log"))?;
    let mut child = Command::new(&bins.collector)
        .arg("serve")
        .env("LAMBDAWATCH_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_OTLP_HTTP_ADDR", "127.0.0.1:0")
        .env("LAMBDAWATCH_ADMIN_ADDR", "127.0.0.1:0")
        // Minutes of traffic compressed into one: evaluate every second and let a condition
        // fire after 5 s pending instead of the production 60 s.
        .env("LAMBDAWATCH_EVAL_INTERVAL", "1s")
        .env("LAMBDAWATCH_ALERT_FOR", "5s")
        .env("LAMBDAWATCH_DLQ_QUEUES", "orders-dlq=orders")
        .env("LAMBDAWATCH_WEBHOOK_URL", webhook)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting lambdawatch-collector")?;
    let stdout = child.stdout.take().context("collector stdout")?;
    let guard = Guard(child);
    let line = first_line_containing(stdout, "listening", Duration::from_secs(20))
        .context("the collector did not report its listening addresses")?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .with_context(|| format!("no {name}= in {line:?}"))
    };
    Ok(Collector {
        admin: field("admin")?,
        otlp_http: field("otlp_http")?,
        child: guard,
    })
}

/// Reads `stdout` on a thread until a line contains `needle`; keeps draining afterwards.
fn first_line_containing(
    stdout: impl std::io::Read + Send + 'static,
    needle: &'static str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && line.contains(needle) {
                sent = tx.send(line).is_ok();
            }
        }
    });
    Ok(rx.recv_timeout(timeout)?)
}

struct FunctionSpec {
    name: &'static str,
    version: &'static str,
    memory_mb: u32,
    timeout_ms: u64,
    reserved_concurrency: u32,
    init_sleep_ms: u64,
    idle_timeout_ms: u64,
    workload: &'static str,
}

const ORDERS_WORKLOAD: &str = r#"seed: 7
phases:
  - name: steady
    rate_per_sec: 8
    duration_ms: 12000
    sleep_ms: 40
    log_lines: 2
    log_json: true
  - name: incident
    rate_per_sec: 8
    duration_ms: 15000
    sleep_ms: 40
    log_lines: 1
    error_fraction: 0.08
    timeout_fraction: 0.009
    async_fraction: 0.6
  - name: burst past reserved concurrency
    rate_per_sec: 4
    burst: 10
    duration_ms: 4000
    sleep_ms: 300
  - name: recovery
    rate_per_sec: 8
    duration_ms: 8000
    sleep_ms: 40
    log_lines: 1
"#;

const CHECKOUT_WORKLOAD: &str = r#"seed: 11
phases:
  - name: scale-out 1 (20 concurrent, each held 0.8 s)
    rate_per_sec: 1
    burst: 25
    duration_ms: 2000
    sleep_ms: 1500
  - name: quiet 1 (idle environments spin down)
    rate_per_sec: 0.2
    duration_ms: 5000
  - name: scale-out 2 (20 concurrent, each held 0.8 s)
    rate_per_sec: 1
    burst: 20
    duration_ms: 2000
    sleep_ms: 800
  - name: quiet 2 (idle environments spin down)
    rate_per_sec: 0.2
    duration_ms: 5000
  - name: scale-out 3 (20 concurrent, each held 0.8 s)
    rate_per_sec: 1
    burst: 20
    duration_ms: 2000
    sleep_ms: 800
  - name: quiet 3 (idle environments spin down)
    rate_per_sec: 0.2
    duration_ms: 5000
  - name: steady
    rate_per_sec: 4
    burst: 3
    duration_ms: 8000
    sleep_ms: 100
    log_lines: 1
"#;

const FUNCTIONS: [FunctionSpec; 2] = [
    FunctionSpec {
        name: "orders",
        version: "1",
        memory_mb: 256,
        timeout_ms: 1000,
        reserved_concurrency: 4,
        init_sleep_ms: 0,
        idle_timeout_ms: 60_000,
        workload: ORDERS_WORKLOAD,
    },
    FunctionSpec {
        name: "checkout",
        version: "2",
        memory_mb: 512,
        // Generous: the point of this function is slow inits, not timeouts, and a loaded
        // laptop must not turn its 0.8 s invocations into timeouts.
        timeout_ms: 10_000,
        reserved_concurrency: 100,
        init_sleep_ms: 900,
        idle_timeout_ms: 2_000,
        workload: CHECKOUT_WORKLOAD,
    },
];

fn function_yaml(f: &FunctionSpec, bins: &Binaries, ext_dir: &Path, otlp_http: &str) -> String {
    format!(
        r#"name: {name}
version: "{version}"
region: eu-west-1
account_id: "123456789012"
memory_mb: {memory}
timeout_ms: {timeout}
handler: ["{handler}"]
extensions_dir: "{ext}"
reserved_concurrency: {reserved}
idle_timeout_ms: {idle}
dlq: true
max_retries: 2
async_retry_delay_ms: 100
cloudwatch_period_ms: 2000
environment:
  INIT_SLEEP_MS: "{init_sleep}"
  OTEL_EXPORTER_OTLP_ENDPOINT: "http://{otlp}"
  OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=demo"
"#,
        name = f.name,
        version = f.version,
        memory = f.memory_mb,
        timeout = f.timeout_ms,
        handler = bins.sample_function.display(),
        ext = ext_dir.display(),
        reserved = f.reserved_concurrency,
        idle = f.idle_timeout_ms,
        init_sleep = f.init_sleep_ms,
        otlp = otlp_http,
    )
}

pub fn run_traffic(bins: &Binaries, work: &Workdir, collector: &Collector) -> anyhow::Result<()> {
    // The layer puts the extension at /opt/extensions/lambdawatch; the sandbox's extensions_dir
    // plays /opt/extensions.
    let ext_dir = work.root.join("extensions");
    let link = ext_dir.join("lambdawatch");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&bins.extension, &link)?;

    let mut running = Vec::new();
    for f in &FUNCTIONS {
        let fpath = work.root.join(format!("{}.yaml", f.name));
        let wpath = work.root.join(format!("{}-workload.yaml", f.name));
        std::fs::write(
            &fpath,
            function_yaml(f, bins, &ext_dir, &collector.otlp_http),
        )?;
        std::fs::write(&wpath, f.workload)?;
        let report = work.root.join(format!("{}-report.json", f.name));
        let log = std::fs::File::create(work.root.join(format!("{}-sandbox.log", f.name)))?;
        println!("running {} (version {}) in the sandbox…", f.name, f.version);
        let child = Command::new(&bins.sandbox)
            .arg("run")
            .arg("--function")
            .arg(&fpath)
            .arg("--workload")
            .arg(&wpath)
            .arg("--invoke-addr")
            .arg("127.0.0.1:0")
            .arg("--report")
            .arg(&report)
            .arg("--cloudwatch-endpoint")
            .arg(format!("http://{}", collector.otlp_http))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting lambdawatch-sandbox")?;
        running.push((f.name, Guard(child), report));
    }
    for (name, mut child, report) in running {
        let status = child.0.wait()?;
        if !status.success() {
            bail!(
                "the sandbox running {name} failed ({status}); its log is in {}",
                work.root.join(format!("{name}-sandbox.log")).display()
            );
        }
        let summary = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if let Some(s) = summary {
            crate::report::print_sandbox_summary(name, &s);
        }
    }
    Ok(())
}
