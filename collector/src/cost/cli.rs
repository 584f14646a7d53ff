//! `lambdawatch-collector cost`: what-if questions from the command line.
//!
//! Consumes [`CostArgs`] (one function's configuration and monthly traffic) and the price table
//! (embedded, or `--prices FILE`); produces the text (or JSON) report with the monthly total in
//! USD and its breakdown. Pure apart from reading `--prices`; bad arguments are errors naming the
//! argument and the accepted range.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::model::{Bill, FunctionUsage, monthly_bill};
use super::prices::{Arch, FREE_EPHEMERAL_STORAGE_MB, PriceTable};

/// Lambda's configurable memory range, MB.
pub const MEMORY_MB_RANGE: std::ops::RangeInclusive<u32> = 128..=10_240;
/// Lambda's configurable ephemeral storage range, MB.
pub const STORAGE_MB_RANGE: std::ops::RangeInclusive<u32> = 512..=10_240;

/// Arguments of `lambdawatch-collector cost`.
#[derive(Debug, Clone, clap::Args)]
pub struct CostArgs {
    /// Configured memory, MB (128–10240).
    #[arg(long, default_value_t = 128)]
    pub memory_mb: u32,
    /// Invocations per month.
    #[arg(long, default_value_t = 0)]
    pub invocations: u64,
    /// Billed duration of one invocation, ms (Lambda bills in 1 ms steps).
    #[arg(long, default_value_t = 0)]
    pub duration_ms: u64,
    /// Architecture: x86_64 or arm64.
    #[arg(long, default_value = "x86_64")]
    pub arch: Arch,
    /// AWS region (must be in the price table).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Apply the monthly free tier (1 M requests, 400,000 GB-s). Not applicable with
    /// provisioned concurrency.
    #[arg(long)]
    pub free_tier: bool,
    /// Provisioned concurrency units; invocations are then billed at the provisioned duration
    /// price (assumes the units cover the concurrency).
    #[arg(long, default_value_t = 0)]
    pub provisioned: u32,
    /// Days provisioned concurrency is enabled this month (default 30 when --provisioned).
    #[arg(long)]
    pub days: Option<u32>,
    /// Configured ephemeral storage, MB (512–10240; beyond 512 MB is billed).
    #[arg(long, default_value_t = FREE_EPHEMERAL_STORAGE_MB)]
    pub ephemeral_storage_mb: u32,
    /// Price table to use instead of the embedded one (same YAML schema).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Print the bill as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl CostArgs {
    fn usage(&self) -> anyhow::Result<FunctionUsage> {
        if !MEMORY_MB_RANGE.contains(&self.memory_mb) {
            bail!(
                "--memory-mb {} is outside Lambda's range {}–{} MB",
                self.memory_mb,
                MEMORY_MB_RANGE.start(),
                MEMORY_MB_RANGE.end()
            );
        }
        if !STORAGE_MB_RANGE.contains(&self.ephemeral_storage_mb) {
            bail!(
                "--ephemeral-storage-mb {} is outside Lambda's range {}–{} MB",
                self.ephemeral_storage_mb,
                STORAGE_MB_RANGE.start(),
                STORAGE_MB_RANGE.end()
            );
        }
        let days = match (self.provisioned, self.days) {
            (0, Some(_)) => bail!("--days needs --provisioned N"),
            (0, None) => 0,
            (_, None) => 30,
            (_, Some(d)) if (1..=31).contains(&d) => d,
            (_, Some(d)) => bail!("--days {d} must be 1–31 (one month)"),
        };
        let total_ms = self
            .invocations
            .checked_mul(self.duration_ms)
            .context("--invocations × --duration-ms overflows")?;
        let on_pc = self.provisioned > 0;
        Ok(FunctionUsage {
            ephemeral_storage_mb: self.ephemeral_storage_mb,
            requests: self.invocations,
            on_demand_duration_ms: if on_pc { 0 } else { total_ms },
            provisioned_duration_ms: if on_pc { total_ms } else { 0 },
            provisioned_concurrency: self.provisioned,
            provisioned_seconds: u64::from(days) * 86_400,
            ..FunctionUsage::new("what-if", self.arch, self.memory_mb)
        })
    }
}

/// Runs the `cost` subcommand and returns what it prints.
pub fn run_cost_cli(args: CostArgs) -> anyhow::Result<String> {
    let table = match &args.prices {
        Some(path) => PriceTable::from_file(path)?,
        None => PriceTable::embedded()?,
    };
    let usage = args.usage()?;
    let region = table.region(&args.region)?;
    let bill = monthly_bill(
        region,
        args.free_tier.then_some(&table.free_tier),
        std::slice::from_ref(&usage),
    );
    if args.json {
        let doc = serde_json::json!({
            "region": args.region,
            "arch": args.arch,
            "prices_as_of": table.as_of,
            "currency": table.currency,
            "monthly_total_usd": bill.account.total.usd_rounded(),
            "bill": bill_json(&bill),
        });
        return Ok(serde_json::to_string_pretty(&doc)? + "\n");
    }
    Ok(render_text(&args, &table, &usage, &bill))
}

fn bill_json(bill: &Bill) -> serde_json::Value {
    let a = &bill.account;
    serde_json::json!({
        "requests": a.requests,
        "billable_requests": a.billable_requests,
        "request_usd": a.request_cost.usd_rounded(),
        "gb_seconds": a.on_demand_gb_seconds,
        "billable_gb_seconds": a.billable_gb_seconds,
        "duration_usd": a.duration_cost.usd_rounded(),
        "tiers": bill.tiers.iter().map(|t| serde_json::json!({
            "gb_seconds": t.gb_seconds, "gb_second_price": t.gb_second_price,
            "usd": t.cost.usd_rounded(),
        })).collect::<Vec<_>>(),
        "provisioned_gb_seconds": a.provisioned_gb_seconds,
        "provisioned_concurrency_usd": a.provisioned_concurrency_cost.usd_rounded(),
        "provisioned_duration_gb_seconds": a.provisioned_duration_gb_seconds,
        "provisioned_duration_usd": a.provisioned_duration_cost.usd_rounded(),
        "ephemeral_storage_usd": a.ephemeral_storage_cost.usd_rounded(),
        "unverified_prices": bill.unverified,
    })
}

/// `1234567.5` → `1,234,567.5` (up to 3 decimals, trailing zeros trimmed).
pub fn group(x: f64) -> String {
    let s = format!("{x:.3}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut out = super::model::group_thousands(int);
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fn render_text(args: &CostArgs, table: &PriceTable, usage: &FunctionUsage, bill: &Bill) -> String {
    let a = &bill.account;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "AWS Lambda monthly cost estimate: {}, {}, prices as of {} ({})",
        args.region, args.arch, table.as_of, table.currency
    );
    let _ = writeln!(
        s,
        "  {} MB memory, {} invocations × {} ms, {} MB ephemeral storage{}",
        group(f64::from(args.memory_mb)),
        group(args.invocations as f64),
        group(args.duration_ms as f64),
        group(f64::from(args.ephemeral_storage_mb)),
        if args.free_tier && usage.has_provisioned_concurrency() {
            ", free tier requested but not applicable with provisioned concurrency"
        } else if args.free_tier {
            ", free tier applied"
        } else {
            ""
        }
    );
    let row = |s: &mut String, label: &str, detail: String, m: super::model::Money| {
        let _ = writeln!(s, "  {label:<26}{detail:<48}{:>16}", m.to_string());
    };
    let region = table.region(&args.region).ok();
    let per_million = region.map_or(String::new(), |r| r.request_per_million.to_string());
    row(
        &mut s,
        "requests",
        format!(
            "{} billable × {per_million}/M",
            group(a.billable_requests as f64)
        ),
        a.request_cost,
    );
    row(
        &mut s,
        "duration",
        format!(
            "{} GB-s, {} billable",
            group(a.on_demand_gb_seconds),
            group(a.billable_gb_seconds)
        ),
        a.duration_cost,
    );
    for (i, t) in bill.tiers.iter().enumerate() {
        row(
            &mut s,
            &format!("  tier {}", i + 1),
            format!(
                "{} GB-s × ${}",
                group(t.gb_seconds),
                trim_price(t.gb_second_price)
            ),
            t.cost,
        );
    }
    if a.provisioned_gb_seconds > 0.0 {
        row(
            &mut s,
            "provisioned concurrency",
            format!(
                "{} × {} MB × {} days = {} GB-s",
                usage.provisioned_concurrency,
                usage.memory_mb,
                usage.provisioned_seconds / 86_400,
                group(a.provisioned_gb_seconds)
            ),
            a.provisioned_concurrency_cost,
        );
        row(
            &mut s,
            "provisioned duration",
            format!("{} GB-s", group(a.provisioned_duration_gb_seconds)),
            a.provisioned_duration_cost,
        );
    }
    if usage.ephemeral_storage_mb > FREE_EPHEMERAL_STORAGE_MB {
        row(
            &mut s,
            "ephemeral storage",
            format!(
                "{} MB beyond the free 512 MB",
                usage.ephemeral_storage_mb - FREE_EPHEMERAL_STORAGE_MB
            ),
            a.ephemeral_storage_cost,
        );
    }
    for item in &bill.unverified {
        let _ = writeln!(
            s,
            "  warning: the {} price for {} is not verified in this table (copied from us-east-1)",
            item.as_str(),
            args.region
        );
    }
    let _ = writeln!(s, "monthly total: {}", a.total);
    s
}

fn trim_price(p: f64) -> String {
    let s = format!("{p:.10}");
    let s = s.trim_end_matches('0');
    s.trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CostArgs,
    }

    fn run(argv: &[&str]) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(std::iter::once("cost").chain(argv.iter().copied()))?;
        run_cost_cli(cli.args)
    }

    #[test]
    fn bad_arguments_name_the_argument() {
        for (argv, want) in [
            (&["--memory-mb", "64"][..], "--memory-mb 64"),
            (
                &["--ephemeral-storage-mb", "100"][..],
                "--ephemeral-storage-mb",
            ),
            (&["--days", "3"][..], "--days needs --provisioned"),
            (&["--provisioned", "1", "--days", "40"][..], "--days 40"),
            (&["--region", "xx-nowhere-1"][..], "xx-nowhere-1"),
            (&["--arch", "mips"][..], "mips"),
            (
                &["--prices", "/nonexistent/prices.yaml"][..],
                "/nonexistent/prices.yaml",
            ),
        ] {
            let e = format!("{:#}", run(argv).unwrap_err());
            assert!(e.contains(want), "{argv:?}: {e}");
        }
    }

    #[test]
    fn text_lists_the_breakdown() {
        let out = run(&[
            "--memory-mb",
            "2048",
            "--invocations",
            "75000000",
            "--duration-ms",
            "60000",
            "--ephemeral-storage-mb",
            "1024",
        ])
        .unwrap();
        assert!(out.contains("tier 1"), "{out}");
        assert!(out.contains("tier 2"), "{out}");
        assert!(out.contains("ephemeral storage"), "{out}");
        assert!(out.contains("$145,000.20"), "{out}");
    }

    #[test]
    fn group_formats_numbers() {
        assert_eq!(group(0.0), "0");
        assert_eq!(group(1234567.0), "1,234,567");
        assert_eq!(group(1100000.5), "1,100,000.5");
        assert_eq!(group(999.0), "999");
    }
}
