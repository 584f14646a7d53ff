//! Prints what the collector concluded: the SLO table and the alerts that reached the webhook.

use serde_json::Value;

fn num(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

pub fn print_sandbox_summary(name: &str, report: &Value) {
    let inv = ["success", "error", "timeout", "failure"]
        .map(|o| num(report, &format!("/invocations/{o}")));
    println!(
        "  {name}: {} invocations ({} ok, {} errors, {} timeouts, {} failures) · {} cold starts · {} throttled · {} async received, {} retried, {} dead-lettered",
        inv.iter().sum::<u64>(),
        inv[0],
        inv[1],
        inv[2],
        inv[3],
        num(report, "/cold_starts"),
        num(report, "/throttles"),
        num(report, "/async/received"),
        num(report, "/async/retried"),
        num(report, "/async/dead_lettered"),
    );
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}%", x * 100.0)
    } else {
        "-".into()
    }
}

/// The SLO table: one row per function × SLO.
pub fn print(slos: &Value, alerts: &[Value]) {
    println!(
        "\nSLOs (embedded defaults: cold start P99 < 500 ms, errors < 0.1 %, DLQ < 0.01 %, throttles < 5 / 30 d, P99 duration < 80 % of timeout)\n"
    );
    println!(
        "{:<22} {:<15} {:>10} {:>12} {:>12} {:>10}  alerts",
        "function", "slo", "objective", "good/valid", "budget left", "p99 cold"
    );
    let empty = Vec::new();
    for f in slos
        .get("functions")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let name = format!(
            "{}:{}",
            f.get("function").and_then(Value::as_str).unwrap_or("?"),
            f.get("version").and_then(Value::as_str).unwrap_or("?")
        );
        // The slowest init type's P99 (on-demand, provisioned, SnapStart are reported apart).
        let p99 = f
            .get("cold_start_ms")
            .and_then(Value::as_object)
            .and_then(|m| {
                m.values()
                    .filter_map(|t| t.get("p99").and_then(Value::as_f64))
                    .reduce(f64::max)
            })
            .map_or("-".to_owned(), |v| format!("{v:.0} ms"));
        for s in f.get("slos").and_then(Value::as_array).unwrap_or(&empty) {
            let firing: Vec<String> = s
                .get("alerts")
                .and_then(Value::as_array)
                .unwrap_or(&empty)
                .iter()
                .filter(|a| a.get("state").and_then(Value::as_str) != Some("inactive"))
                .map(|a| {
                    format!(
                        "{} {}",
                        a.get("severity").and_then(Value::as_str).unwrap_or("?"),
                        a.get("state").and_then(Value::as_str).unwrap_or("?")
                    )
                })
                .collect();
            println!(
                "{:<22} {:<15} {:>10} {:>12} {:>12} {:>10}  {}",
                name,
                s.get("slo").and_then(Value::as_str).unwrap_or("?"),
                s.get("objective")
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                format!("{}/{}", num(s, "/budget/good"), num(s, "/budget/valid")),
                pct(s
                    .get("error_budget_remaining")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN)),
                if s.get("slo").and_then(Value::as_str) == Some("cold_start") {
                    p99.as_str()
                } else {
                    ""
                },
                if firing.is_empty() {
                    "-".to_owned()
                } else {
                    firing.join(", ")
                },
            );
        }
    }
    println!(
        "\nAlert notifications delivered to the demo's webhook: {}",
        alerts.len()
    );
    for envelope in alerts {
        for a in envelope
            .get("alerts")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
        {
            let l = |k: &str| {
                a.pointer(&format!("/labels/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            println!(
                "  [{}] {} {} ({}) — {}",
                a.get("status").and_then(Value::as_str).unwrap_or("?"),
                l("alertname"),
                l("function"),
                l("severity"),
                a.get("summary").and_then(Value::as_str).unwrap_or(""),
            );
            if let Some(url) = a.get("runbook_url").and_then(Value::as_str) {
                println!("      runbook: {url}");
            }
        }
    }
}
