//! Prints what the collector concluded: the SLO table, the alerts that reached the webhook, and
//! each function's cost (`/api/v1/cost`).

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

fn usd(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// One line per function from `/api/v1/cost`: list-price cost so far, today's cost, the 30-day
/// projection, the retry fraction and any cost surprise or retry storm firing.
pub fn print_cost(cost: &Value) {
    println!(
        "\nCost (price table of {}; cost so far and today at list price, the 30-day projection \
         scales the traffic seen so far to 30 days{})\n",
        cost.get("prices_as_of")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        if cost.get("free_tier").and_then(Value::as_bool) == Some(true) {
            " with the free tier"
        } else {
            ""
        }
    );
    let empty = Vec::new();
    let functions = cost
        .get("functions")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if functions.is_empty() {
        println!("  no function priced yet");
    }
    for f in functions {
        let name = format!(
            "{}:{}",
            f.get("function").and_then(Value::as_str).unwrap_or("?"),
            f.get("version").and_then(Value::as_str).unwrap_or("?")
        );
        let money = |key: &str, places: usize| {
            usd(f, key).map_or("-".to_owned(), |v| format!("${v:.places$}"))
        };
        let mut firing = Vec::new();
        if f.pointer("/retry/alert").and_then(Value::as_bool) == Some(true) {
            firing.push("retry storm".to_owned());
        }
        for (key, what) in [
            ("rate_alert", "cost surprise (rate)"),
            ("budget_alert", "cost surprise (budget)"),
        ] {
            if f.pointer(&format!("/surprise/{key}"))
                .and_then(Value::as_bool)
                == Some(true)
            {
                firing.push(what.to_owned());
            }
        }
        if f.pointer("/surprise/budget_warming_up")
            .and_then(Value::as_bool)
            == Some(true)
            && f.pointer("/surprise/budget_usd")
                .is_some_and(|b| !b.is_null())
        {
            firing.push("budget warming up (projection not yet judged)".to_owned());
        }
        println!(
            "  {:<22} {:<7} {:>5} MB  cost so far {}  today {}  30-day projection {}  retries {}  {}",
            name,
            f.get("arch").and_then(Value::as_str).unwrap_or("?"),
            f.get("memory_mb").and_then(Value::as_u64).unwrap_or(0),
            money("cost_usd_total", 6),
            money("today_usd", 6),
            money("projected_30d_usd", 2),
            pct(f
                .pointer("/retry/retry_fraction")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)),
            if firing.is_empty() {
                "-".to_owned()
            } else {
                firing.join(", ")
            }
        );
    }
    for f in functions {
        if let Some(line) = dlq_line(f) {
            println!("{line}");
        }
    }
    for f in functions {
        print_advice(f);
    }
    if let Some(d) = cost.get("dropped").and_then(Value::as_object) {
        let dropped: Vec<String> = d
            .iter()
            .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        if !dropped.is_empty() {
            println!("  invocations not priced: {}", dropped.join(", "));
        }
    }
}

/// The DLQ redrive backlog of a function's row (`retry.dlq`, where the CloudWatch poller knows
/// it): `  orders:$LATEST  DLQ orders-dlq backlog 7 messages`, or `None` without any queue.
fn dlq_line(f: &Value) -> Option<String> {
    let queues = f.pointer("/retry/dlq")?.as_array()?;
    let parts: Vec<String> = queues
        .iter()
        .map(|q| {
            format!(
                "DLQ {} backlog {} messages",
                q.get("queue").and_then(Value::as_str).unwrap_or("?"),
                q.get("messages")
                    .and_then(Value::as_f64)
                    .map_or("?".to_owned(), |m| format!("{m:.0}"))
            )
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "  {}:{}  {}",
        f.get("function").and_then(Value::as_str).unwrap_or("?"),
        f.get("version").and_then(Value::as_str).unwrap_or("?"),
        parts.join(", ")
    ))
}

/// One advice line per function from `/api/v1/cost`'s `advice` (`cost::advice`): the memory
/// recommendation per strategy (or "insufficient data" with the count) with its floor and the
/// max memory used observed, the timeout budget, the cold-start ratio and P99 init, the timeout
/// cascade (the suspect downstream with its P99 and the timeout rate before → after) and the
/// provisioned-concurrency advice (units, monthly cost change, cold starts avoided in 30 days).
fn print_advice(f: &Value) {
    let Some(a) = f.get("advice") else {
        return;
    };
    let name = format!(
        "{}:{}",
        f.get("function").and_then(Value::as_str).unwrap_or("?"),
        f.get("version").and_then(Value::as_str).unwrap_or("?")
    );
    let rs = a
        .pointer("/memory/recommendations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let memory = if rs.iter().any(|r| r["recommendation_mb"].is_u64()) {
        rs.iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.get("strategy").and_then(Value::as_str).unwrap_or("?"),
                    r.get("recommendation_mb")
                        .and_then(Value::as_u64)
                        .map_or("-".to_owned(), |mb| format!("{mb} MB"))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        let most = a
            .pointer("/memory/sizes")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().filter_map(|s| s["invocations"].as_u64()).max())
            .unwrap_or(0);
        format!(
            "insufficient data ({most} of {} invocations at a size)",
            a.pointer("/memory/min_invocations")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        )
    };
    let max_used = a
        .pointer("/memory/observed_max_memory_used_mb")
        .and_then(Value::as_f64)
        .map_or("unknown".to_owned(), |m| format!("{m} MB"));
    let timeout = match a.pointer("/timeout/status").and_then(Value::as_str) {
        Some(status @ ("within" | "exceeded")) => format!(
            "{:.2} ({status})",
            a.pointer("/timeout/ratio")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        ),
        _ => "unknown".to_owned(),
    };
    let init = a
        .pointer("/cold_starts/p99_init_ms")
        .and_then(Value::as_f64)
        .map_or("-".to_owned(), |ms| format!("{ms:.0} ms"));
    let c = &a["cascade"];
    let cascade = match c["status"].as_str() {
        Some("cascade") => {
            let d = &c["downstreams"][0];
            let ms = |w: &str| {
                d[w]["p99_ms"]
                    .as_f64()
                    .map_or("-".to_owned(), |v| format!("{v:.0}"))
            };
            format!(
                "cascade ({} P99 {} → {} ms, timeouts {} → {})",
                c["suspect"].as_str().unwrap_or("?"),
                ms("baseline"),
                ms("recent"),
                pct(c["baseline"]["rate"].as_f64().unwrap_or(f64::NAN)),
                pct(c["recent"]["rate"].as_f64().unwrap_or(f64::NAN)),
            )
        }
        Some(s) => s.to_owned(),
        None => "?".to_owned(),
    };
    let p = &a["provisioned_concurrency"];
    let pc = match p["status"].as_str() {
        Some(s @ ("recommended" | "not_recommended")) => format!(
            "{s} ({} units, {:+.2} USD/month, {:.0} cold starts avoided in 30 days)",
            p["units"].as_u64().unwrap_or(0),
            p["net_monthly_usd"].as_f64().unwrap_or(f64::NAN),
            p["cold_starts_avoided_30d"].as_f64().unwrap_or(f64::NAN),
        ),
        Some(s) => s.to_owned(),
        None => "?".to_owned(),
    };
    println!(
        "  advice {:<15} memory {}  floor {} MB  max used {}  timeout ratio {}  cold starts {}  P99 init {}  cascade {}  provisioned concurrency {}",
        name,
        memory,
        a.pointer("/memory/floor_mb")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        max_used,
        timeout,
        pct(a
            .pointer("/cold_starts/cold_start_ratio")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)),
        init,
        cascade,
        pc,
    );
}

#[cfg(test)]
mod dlq_tests {
    use super::*;

    #[test]
    fn dlq_backlog_line_names_each_queue_and_is_absent_without_one() {
        let row = serde_json::json!({"function": "orders", "version": "$LATEST", "retry": {
            "dlq": [{"queue": "orders-dlq", "messages": 7.0, "at_unix": 1},
                    {"queue": "orders-dlq-2", "messages": 0.0, "at_unix": 1}]}});
        assert_eq!(
            dlq_line(&row).as_deref(),
            Some(
                "  orders:$LATEST  DLQ orders-dlq backlog 7 messages, DLQ orders-dlq-2 backlog 0 messages"
            )
        );
        let none = serde_json::json!({"function": "orders", "version": "1", "retry": {}});
        assert_eq!(dlq_line(&none), None);
    }
}
