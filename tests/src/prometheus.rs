//! A real Prometheus (Debian package `prometheus`) for the end-to-end tests: [`start`] writes a
//! configuration from a [`Config`] (scrape and evaluation interval, rule files, static jobs) into a
//! temporary directory, runs the server on a free loopback port with its TSDB there, and waits
//! until `/-/ready` answers 200. [`Prometheus::query`], [`Prometheus::value`] and
//! [`Prometheus::samples`] read instant queries through the HTTP API.
//!
//! The server (process group) is killed and its directory removed when the [`Prometheus`] is
//! dropped. A missing `prometheus` binary panics with the `peers` message; a server that is not
//! ready within 30 s panics with what it was waiting for.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{Child, dashboards::url_encode, free_port, http, peers, wait_until};

/// What the server scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct Config {
    /// Prometheus duration, e.g. `1s` or `250ms`; the scrape timeout is the same.
    pub scrape_interval: String,
    /// Rule evaluation interval, e.g. `1s`.
    pub evaluation_interval: String,
    pub rule_files: Vec<PathBuf>,
    /// `(job name, targets as host:port)`, each a `static_configs` job.
    pub jobs: Vec<(String, Vec<String>)>,
}

impl Config {
    /// One job scraping `targets` every `scrape_interval`, rules (if any) evaluated every second.
    pub fn job(scrape_interval: &str, job: &str, targets: &[&str]) -> Config {
        Config {
            scrape_interval: scrape_interval.to_owned(),
            evaluation_interval: "1s".to_owned(),
            rule_files: Vec::new(),
            jobs: vec![(
                job.to_owned(),
                targets.iter().map(|t| (*t).to_owned()).collect(),
            )],
        }
    }

    /// The `prometheus.yml` text.
    pub fn yaml(&self) -> String {
        let mut out = format!(
            "global:\n  scrape_interval: {i}\n  scrape_timeout: {i}\n  evaluation_interval: {e}\n",
            i = self.scrape_interval,
            e = self.evaluation_interval
        );
        if !self.rule_files.is_empty() {
            out.push_str("rule_files:\n");
            for f in &self.rule_files {
                out.push_str(&format!("  - '{}'\n", f.display()));
            }
        }
        out.push_str("scrape_configs:\n");
        for (job, targets) in &self.jobs {
            let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            out.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        out
    }
}

/// A running Prometheus; killed (and its data removed) when dropped.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Starts Prometheus with `config` (child process named `name`) and waits until it is ready.
pub fn start(name: &str, config: &Config) -> Prometheus {
    let bin = peers::bin("prometheus");
    for f in &config.rule_files {
        assert!(f.is_file(), "rule file {} missing", f.display());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config.yaml()).unwrap();
    let port = free_port();
    let child = Child::spawn(
        name,
        Command::new(&bin)
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until(&format!("{name} ready"), Duration::from_secs(30), || {
        http::get(&format!("{base}/-/ready"), Duration::from_secs(2))
            .ok()
            .filter(|r| r.status == 200)
    });
    Prometheus {
        base,
        child,
        _dir: dir,
    }
}

/// One sample of an instant-vector (or scalar) result: its labels as `k=v,…` (sorted, `__name__`
/// included when Prometheus returns it) and its value (`NaN`, `+Inf` and `-Inf` parsed as such).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: String,
    pub value: f64,
}

impl Prometheus {
    /// The process, for its captured log lines.
    pub fn child(&self) -> &Child {
        &self.child
    }

    /// `data.result` of an instant query; `None` unless Prometheus answered 200 `success`.
    pub fn query(&self, expr: &str) -> Option<Vec<Value>> {
        query(&self.base, expr)
    }

    /// The value of the first sample of an instant query.
    pub fn value(&self, expr: &str) -> Option<f64> {
        self.samples(expr).ok()?.first().map(|s| s.value)
    }

    /// Every sample of an instant query, or why there are none to read: the request failed,
    /// Prometheus answered an error (bad expression), or a value did not parse. An empty vector
    /// is a successful query without data.
    pub fn samples(&self, expr: &str) -> Result<Vec<Sample>, String> {
        samples(&self.base, expr)
    }
}

/// `data.result` of an instant query against the Prometheus at `base`; `None` unless it answered
/// 200 `success`.
pub fn query(base: &str, expr: &str) -> Option<Vec<Value>> {
    let url = format!("{base}/api/v1/query?query={}", url_encode(expr));
    let r = http::get(&url, Duration::from_secs(5)).ok()?;
    if r.status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    if v["status"] != "success" {
        return None;
    }
    v.pointer("/data/result").and_then(Value::as_array).cloned()
}

/// See [`Prometheus::samples`].
pub fn samples(base: &str, expr: &str) -> Result<Vec<Sample>, String> {
    let url = format!("{base}/api/v1/query?query={}", url_encode(expr));
    let r = http::get(&url, Duration::from_secs(10)).map_err(|e| format!("request failed: {e}"))?;
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("HTTP {} not JSON ({e}): {}", r.status, r.text()))?;
    if v["status"] != "success" {
        return Err(format!("HTTP {}: {v}", r.status));
    }
    parse_result(&v["data"])
}

/// The samples of a query's `data` object (`resultType` `vector` or `scalar`).
pub fn parse_result(data: &Value) -> Result<Vec<Sample>, String> {
    let number = |v: &Value| -> Result<f64, String> {
        let s = v
            .pointer("/1")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no value in {v}"))?;
        // Rust parses "NaN", "+Inf" and "-Inf", the spellings Prometheus uses.
        s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}"))
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or_else(|| format!("no result array in {data}"))?
            .iter()
            .map(|s| {
                let mut labels: Vec<String> = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                labels.sort();
                Ok(Sample {
                    labels: labels.join(","),
                    value: number(&s["value"])?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: String::new(),
            value: number(&data["result"])?,
        }]),
        other => Err(format!(
            "result type {other:?}, wanted an instant vector or a scalar"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_has_every_part() {
        let mut c = Config::job("250ms", "lambdawatch", &["127.0.0.1:1", "127.0.0.1:2"]);
        c.rule_files.push("/r.yml".into());
        assert_eq!(
            c.yaml(),
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 250ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - '/r.yml'\n\
             scrape_configs:\n  - job_name: lambdawatch\n    static_configs:\n      - targets: ['127.0.0.1:1', '127.0.0.1:2']\n"
        );
    }

    #[test]
    fn parses_vectors_scalars_and_special_values() {
        let v = json!({"resultType": "vector", "result": [
            {"metric": {"b": "2", "a": "1"}, "value": [1.0, "NaN"]},
            {"metric": {}, "value": [1.0, "+Inf"]},
            {"metric": {}, "value": [1.0, "0.25"]},
        ]});
        let s = parse_result(&v).unwrap();
        assert_eq!(s[0].labels, "a=1,b=2");
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, 0.25);
        let scalar = json!({"resultType": "scalar", "result": [1.0, "-Inf"]});
        assert_eq!(parse_result(&scalar).unwrap()[0].value, f64::NEG_INFINITY);
        assert!(parse_result(&json!({"resultType": "matrix", "result": []})).is_err());
    }
}
