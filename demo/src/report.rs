//! Prints what the collector concluded: the SLO table and the alerts that reached the webhook.

use serde_json::Value;

pub fn print_sandbox_summary(name: &str, report: &Value) {
    let n = |k: &str| {
        report
            .get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "  {name}: invocations {} · cold starts {} · throttles {} · dead-lettered {}",
        n("invocations"),
        n("cold_starts"),
        n("throttles"),
        n("dead_lettered")
    );
}

pub fn print(slos: &Value, alerts: &[Value]) {
    println!("\nSLOs (embedded defaults)\n");
    println!("{slos:#}");
    println!("\nAlerts delivered to the webhook: {}", alerts.len());
    for a in alerts {
        println!("{a}");
    }
}
