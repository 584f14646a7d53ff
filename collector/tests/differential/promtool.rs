//! From recorded expositions to a `promtool test rules` file, and running it.
//!
//! Consumes Prometheus text expositions (one per collector per simulated step) and the built-in
//! evaluator's firing alerts per step; produces a unit-test file whose `input_series` are the
//! scraped samples (with the `instance` and `job` labels a scrape adds) and whose
//! `promql_expr_test`s assert, per function, the exact set of firing alerts Prometheus must have
//! at each checked evaluation time. Alerts are compared through the `ALERTS` series the rule
//! manager writes (`group by (alertname, function, severity)`), not `alert_rule_test`: the
//! latter also compares rendered annotations (`{{ $value }}` …), which are not part of the
//! contract under test.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

/// One scraped sample stream per series, `None` where the series was absent.
#[derive(Debug, Default)]
pub struct Recorder {
    steps: usize,
    series: BTreeMap<String, Vec<Option<f64>>>,
}

/// Adds `instance` and `job` to a series selector text (`name{a="b"}` or `name`).
fn with_target(series: &str, instance: &str) -> String {
    let extra = format!("instance=\"{instance}\",job=\"lambdawatch\"");
    match series.strip_suffix('}') {
        Some(head) if head.ends_with('{') => format!("{head}{extra}}}"),
        Some(head) => format!("{head},{extra}}}"),
        None => format!("{series}{{{extra}}}"),
    }
}

/// Splits an exposition line into (series, value); `None` for comments and blank lines.
pub fn parse_line(line: &str) -> Option<(&str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // Label values never contain `} ` followed by a value in our exposition; the value is the
    // last whitespace-separated token (no timestamps are exposed).
    let (series, value) = line.rsplit_once(' ')?;
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((series, v))
}

/// The metric name of a series text.
fn metric_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

impl Recorder {
    /// Starts step `step` (0-based, consecutive).
    pub fn begin_step(&mut self, step: usize) {
        assert_eq!(step, self.steps, "steps are recorded in order");
        self.steps += 1;
    }

    /// Records one exposition scraped from `instance` at the current step; only families
    /// `keep` accepts.
    pub fn scrape(&mut self, instance: &str, text: &str, keep: &dyn Fn(&str) -> bool) {
        let step = self.steps - 1;
        for (series, value) in text.lines().filter_map(parse_line) {
            if !keep(metric_name(series)) {
                continue;
            }
            let values = self
                .series
                .entry(with_target(series, instance))
                .or_insert_with(|| vec![None; step]);
            values.resize(step, None);
            values.push(Some(value));
        }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Every recorded series, as written in `input_series`.
    pub fn series_names(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// promtool's expanding notation for one series: runs of a constant integer step become
    /// `a+bxn`, absent samples `_`, everything else literal.
    fn values(&self, values: &[Option<f64>]) -> String {
        let mut padded = values.to_vec();
        padded.resize(self.steps, None);
        let mut out = String::new();
        let mut i = 0;
        while i < padded.len() {
            match padded[i] {
                None => {
                    let mut j = i + 1;
                    while j < padded.len() && padded[j].is_none() {
                        j += 1;
                    }
                    let n = j - i;
                    if n == 1 {
                        out.push_str("_ ");
                    } else {
                        let _ = write!(out, "_x{n} ");
                    }
                    i = j;
                }
                Some(a) => {
                    let integral = |x: f64| x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15;
                    // Longest run a, a+d, a+2d, … with integral a and d (constant runs for any
                    // value).
                    let mut j = i + 1;
                    if j < padded.len()
                        && let Some(b) = padded[j]
                    {
                        let d = b - a;
                        // NaN never repeats (NaN − NaN is NaN, not 0), so `d == 0` implies a number.
                        let ok = if d == 0.0 {
                            true
                        } else {
                            integral(a) && integral(d)
                        };
                        if ok {
                            while j < padded.len()
                                && padded[j]
                                    .is_some_and(|v| v - padded[j - 1].unwrap_or(f64::NAN) == d)
                            {
                                j += 1;
                            }
                            let n = j - i - 1;
                            if n >= 1 {
                                let sign = if d < 0.0 { "-" } else { "+" };
                                let _ = write!(out, "{}{sign}{}x{n} ", num(a), num(d.abs()));
                                i = j;
                                continue;
                            }
                        }
                    }
                    let _ = write!(out, "{} ", num(a));
                    i += 1;
                }
            }
        }
        out.trim_end().to_owned()
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The firing alerts of one function at one step: `(alertname, severity)`.
pub type AlertSet = BTreeSet<(String, String)>;

/// One assertion: at `step`, function `function` has exactly `alerts` firing.
#[derive(Debug, Clone)]
pub struct Check {
    pub step: usize,
    pub function: String,
    pub alerts: AlertSet,
}

fn yaml_str(s: &str) -> String {
    // Single-quoted YAML scalar.
    format!("'{}'", s.replace('\'', "''"))
}

/// The PromQL that lists one function's firing alerts as Prometheus evaluated them.
pub fn firing_query(function: &str) -> String {
    format!(
        "group by (alertname, function, severity) (ALERTS{{alertstate=\"firing\",function=\"{function}\"}})"
    )
}

/// Writes a complete `promtool test rules` file.
pub fn write_test_file(
    path: &Path,
    rule_file: &Path,
    name: &str,
    recorder: &Recorder,
    checks: &[Check],
) {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Generated by collector/tests/differential.rs; do not edit."
    );
    let _ = writeln!(
        y,
        "rule_files:\n  - {}",
        yaml_str(&rule_file.display().to_string())
    );
    let _ = writeln!(y, "evaluation_interval: 1m");
    let _ = writeln!(
        y,
        "tests:\n  - name: {}\n    interval: 1m\n    input_series:",
        yaml_str(name)
    );
    for (series, values) in &recorder.series {
        let _ = writeln!(
            y,
            "      - series: {}\n        values: {}",
            yaml_str(series),
            yaml_str(&recorder.values(values))
        );
    }
    let _ = writeln!(y, "    promql_expr_test:");
    for c in checks {
        let _ = writeln!(
            y,
            "      - expr: {}\n        eval_time: {}m",
            yaml_str(&firing_query(&c.function)),
            c.step
        );
        if c.alerts.is_empty() {
            let _ = writeln!(y, "        exp_samples: []");
        } else {
            let _ = writeln!(y, "        exp_samples:");
            for (alertname, severity) in &c.alerts {
                let labels = format!(
                    "{{alertname=\"{alertname}\", function=\"{}\", severity=\"{severity}\"}}",
                    c.function
                );
                let _ = writeln!(
                    y,
                    "          - labels: {}\n            value: 1",
                    yaml_str(&labels)
                );
            }
        }
    }
    std::fs::write(path, y).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The Debian `prometheus` package's `promtool`; panics with how to install it when missing.
pub fn promtool() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin".into(), "/usr/local/bin".into()]);
    dirs.into_iter()
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool missing (PATH, /usr/bin, /usr/local/bin): install the Debian package \
                 `prometheus` (apt-get install prometheus) or run ./scripts/test.sh"
            )
        })
}

/// Runs `promtool test rules` on `file`; returns (success, combined output).
pub fn run(file: &Path) -> (bool, String) {
    let out = Command::new(promtool())
        .args(["test", "rules"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Minutes in a promtool duration such as `6h2m`, `45m`, `1d2h`.
fn minutes(d: &str) -> Option<usize> {
    let mut total = 0usize;
    let mut n = String::new();
    for c in d.chars() {
        if c.is_ascii_digit() {
            n.push(c);
            continue;
        }
        let v: usize = n.parse().ok()?;
        n.clear();
        total += match c {
            'd' => v * 1440,
            'h' => v * 60,
            'm' => v,
            's' if v == 0 => 0,
            _ => return None,
        };
    }
    n.is_empty().then_some(total)
}

/// One failed expression test in promtool's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub function: String,
    pub minute: usize,
    pub expected: String,
    pub got: String,
}

/// The failed `promql_expr_test`s that promtool listed.
pub fn mismatches(output: &str) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut current: Option<Mismatch> = None;
    for line in output.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("expr: ") {
            out.extend(current.take());
            let function = rest
                .split("function=\\\"")
                .nth(1)
                .and_then(|s| s.split("\\\"").next())
                .unwrap_or("?")
                .to_owned();
            let minute = rest
                .rsplit_once("time: ")
                .and_then(|(_, t)| minutes(t.trim_end_matches(',')))
                .unwrap_or(usize::MAX);
            current = Some(Mismatch {
                function,
                minute,
                expected: String::new(),
                got: String::new(),
            });
        } else if let Some(c) = current.as_mut() {
            if let Some(e) = l.strip_prefix("exp: ") {
                c.expected = e.to_owned();
            } else if let Some(g) = l.strip_prefix("got: ") {
                c.got = g.to_owned();
            }
        }
    }
    out.extend(current);
    out
}

/// Consecutive mismatches of one function with the same sets, as
/// `outage 07:09–07:20 (12 checks): built-in [...] / Prometheus [...]`.
pub fn summarize(mismatches: &[Mismatch]) -> Vec<String> {
    let mut sorted = mismatches.to_vec();
    sorted.sort_by(|a, b| (&a.function, a.minute).cmp(&(&b.function, b.minute)));
    let clock = |m: usize| format!("{:02}:{:02}", m / 60, m % 60);
    let short = |s: &str| {
        s.replace("alertname=", "")
            .replace(" 1E+00", "")
            .replace(", severity=", "/")
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let first = &sorted[i];
        let mut j = i + 1;
        while j < sorted.len()
            && sorted[j].function == first.function
            && sorted[j].expected == first.expected
            && sorted[j].got == first.got
        {
            j += 1;
        }
        out.push(format!(
            "{} {}–{} ({} checks): built-in {} / Prometheus {}",
            first.function,
            clock(first.minute),
            clock(sorted[j - 1].minute),
            j - i,
            short(&first.expected),
            short(&first.got)
        ));
        i = j;
    }
    out
}
