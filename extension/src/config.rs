//! The one typed [`Config`], read from the environment here and nowhere else.
//!
//! Every variable is a named const beside its default. A bad value never stops the extension:
//! [`Config::from_lookup`] returns the default for it plus one warning line saying what was wrong
//! (the caller prints the warnings once).

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::translate::redact::Redactor;

// Standard OpenTelemetry exporter variables.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
/// `k=v,k2=v2` (values percent-decoded).
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `gzip` | `none`.
pub const OTEL_EXPORTER_OTLP_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
pub const DEFAULT_COMPRESSION: Compression = Compression::Gzip;
/// Milliseconds per export request.
pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Path of a PEM file with CA certificates to trust for an `https://` endpoint, in addition to
/// Mozilla's roots compiled into the binary (e.g. the private CA of an in-house collector).
pub const OTEL_EXPORTER_OTLP_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `k=v,k2=v2`.
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

// Ours.
/// `adaptive` | `end` | `periodic,<ms>`.
pub const LAMBDAWATCH_FLUSH: &str = "LAMBDAWATCH_FLUSH";
pub const DEFAULT_FLUSH: FlushStrategy = FlushStrategy::Adaptive;
/// `true` | `false`: subscribe to `function` and `extension` logs.
pub const LAMBDAWATCH_CAPTURE_LOGS: &str = "LAMBDAWATCH_CAPTURE_LOGS";
pub const DEFAULT_CAPTURE_LOGS: bool = true;
/// Regexes separated by `;;`. The word `default` stands for the default set, `none` for no
/// masking. Unset = `default`.
pub const LAMBDAWATCH_REDACT: &str = "LAMBDAWATCH_REDACT";
pub const REDACT_SEPARATOR: &str = ";;";
pub const LAMBDAWATCH_BUFFER_MAX_ITEMS: &str = "LAMBDAWATCH_BUFFER_MAX_ITEMS";
pub const DEFAULT_BUFFER_MAX_ITEMS: usize = 20_000;
pub const LAMBDAWATCH_BUFFER_MAX_BYTES: &str = "LAMBDAWATCH_BUFFER_MAX_BYTES";
pub const DEFAULT_BUFFER_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Bind address of the Telemetry API listener; port 0 = ephemeral.
pub const LAMBDAWATCH_TELEMETRY_LISTENER: &str = "LAMBDAWATCH_TELEMETRY_LISTENER";
pub const DEFAULT_TELEMETRY_LISTENER: &str = "0.0.0.0:0";
/// The host name Lambda resolves to the execution environment (the subscribe URI uses it).
pub const TELEMETRY_HOST: &str = "sandbox.localdomain";

// Set by Lambda.
pub const AWS_LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";
pub const AWS_LAMBDA_FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";
pub const AWS_LAMBDA_FUNCTION_VERSION: &str = "AWS_LAMBDA_FUNCTION_VERSION";
pub const AWS_LAMBDA_FUNCTION_MEMORY_SIZE: &str = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE";
pub const AWS_LAMBDA_LOG_STREAM_NAME: &str = "AWS_LAMBDA_LOG_STREAM_NAME";
pub const AWS_REGION: &str = "AWS_REGION";
/// `lambda-managed-instances` switches to SHUTDOWN-only registration and continuous flush.
pub const AWS_LAMBDA_INITIALIZATION_TYPE: &str = "AWS_LAMBDA_INITIALIZATION_TYPE";

/// The flush period used in continuous mode (Managed Instances, no Telemetry API) when
/// `LAMBDAWATCH_FLUSH` does not give one.
pub const DEFAULT_CONTINUOUS_PERIOD_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStrategy {
    /// Flush before `/next` while invocations are rare; periodically, off the critical path,
    /// when they are frequent.
    Adaptive,
    /// Flush at the end of every invocation (after `platform.runtimeDone`, before `/next`).
    End,
    /// Flush every period, never blocking `/next`.
    Periodic(Duration),
}

#[derive(Debug, Clone)]
pub struct Endpoints {
    pub traces: String,
    pub metrics: String,
    pub logs: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub endpoints: Endpoints,
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    pub timeout: Duration,
    /// Extra trusted roots from [`OTEL_EXPORTER_OTLP_CERTIFICATE`] (each one checked usable).
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub service_name: Option<String>,
    pub resource_attributes: Vec<(String, String)>,
    pub flush: FlushStrategy,
    pub capture_logs: bool,
    pub redactor: Redactor,
    pub buffer_max_items: usize,
    pub buffer_max_bytes: usize,
    pub listener: SocketAddr,
    pub runtime_api: Option<String>,
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub memory_mb: Option<u64>,
    pub log_stream: Option<String>,
    pub region: Option<String>,
    pub managed_instances: bool,
}

impl Config {
    pub fn from_env() -> (Config, Vec<String>) {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads every setting through `get`; returns the config and one warning per bad value.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Config, Vec<String>) {
        let mut warn = Vec::new();
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let base = match get(OTEL_EXPORTER_OTLP_ENDPOINT) {
            Some(v) if valid_url(&v) => v,
            Some(v) => {
                warn.push(format!(
                    "{OTEL_EXPORTER_OTLP_ENDPOINT}={v:?} is not an http(s) URL; using {DEFAULT_ENDPOINT}"
                ));
                DEFAULT_ENDPOINT.to_owned()
            }
            None => DEFAULT_ENDPOINT.to_owned(),
        };
        let base = base.trim_end_matches('/').to_owned();
        let mut signal = |var: &str, path: &str| -> String {
            let derived = format!("{base}/{path}");
            match get(var) {
                Some(v) if valid_url(&v) => v,
                Some(v) => {
                    warn.push(format!(
                        "{var}={v:?} is not an http(s) URL; using {derived}"
                    ));
                    derived
                }
                None => derived,
            }
        };
        let endpoints = Endpoints {
            traces: signal(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "v1/traces"),
            metrics: signal(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "v1/metrics"),
            logs: signal(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, "v1/logs"),
        };

        let headers = match get(OTEL_EXPORTER_OTLP_HEADERS) {
            Some(v) => parse_kv_list(&v, OTEL_EXPORTER_OTLP_HEADERS, &mut warn)
                .into_iter()
                .filter(|(k, _)| {
                    let ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok();
                    if !ok {
                        warn.push(format!(
                            "{OTEL_EXPORTER_OTLP_HEADERS}: bad header name {k:?}, skipped"
                        ));
                    }
                    ok
                })
                .collect(),
            None => Vec::new(),
        };
        let compression = match get(OTEL_EXPORTER_OTLP_COMPRESSION).as_deref() {
            None => DEFAULT_COMPRESSION,
            Some(v) if v.eq_ignore_ascii_case("gzip") => Compression::Gzip,
            Some(v) if v.eq_ignore_ascii_case("none") => Compression::None,
            Some(v) => {
                warn.push(format!(
                    "{OTEL_EXPORTER_OTLP_COMPRESSION}={v:?} is not gzip|none; using gzip"
                ));
                DEFAULT_COMPRESSION
            }
        };
        let timeout_ms = parse_num(
            get(OTEL_EXPORTER_OTLP_TIMEOUT),
            OTEL_EXPORTER_OTLP_TIMEOUT,
            DEFAULT_TIMEOUT_MS,
            1,
            &mut warn,
        );
        let extra_roots = match get(OTEL_EXPORTER_OTLP_CERTIFICATE) {
            Some(path) => load_roots(&path, &mut warn),
            None => Vec::new(),
        };
        let flush = match get(LAMBDAWATCH_FLUSH) {
            None => DEFAULT_FLUSH,
            Some(v) => parse_flush(&v).unwrap_or_else(|| {
                warn.push(format!(
                    "{LAMBDAWATCH_FLUSH}={v:?} is not adaptive|end|periodic,<ms>; using adaptive"
                ));
                DEFAULT_FLUSH
            }),
        };
        let capture_logs = match get(LAMBDAWATCH_CAPTURE_LOGS) {
            None => DEFAULT_CAPTURE_LOGS,
            Some(v) => parse_bool(&v).unwrap_or_else(|| {
                warn.push(format!(
                    "{LAMBDAWATCH_CAPTURE_LOGS}={v:?} is not true|false; using {DEFAULT_CAPTURE_LOGS}"
                ));
                DEFAULT_CAPTURE_LOGS
            }),
        };
        let redactor = match get(LAMBDAWATCH_REDACT) {
            None => Redactor::defaults(),
            Some(v) => parse_redact(&v, &mut warn),
        };
        let buffer_max_items = parse_num(
            get(LAMBDAWATCH_BUFFER_MAX_ITEMS),
            LAMBDAWATCH_BUFFER_MAX_ITEMS,
            DEFAULT_BUFFER_MAX_ITEMS as u64,
            1,
            &mut warn,
        ) as usize;
        let buffer_max_bytes = parse_num(
            get(LAMBDAWATCH_BUFFER_MAX_BYTES),
            LAMBDAWATCH_BUFFER_MAX_BYTES,
            DEFAULT_BUFFER_MAX_BYTES as u64,
            1024,
            &mut warn,
        ) as usize;
        let default_listener = SocketAddr::from(([0, 0, 0, 0], 0));
        let listener = match get(LAMBDAWATCH_TELEMETRY_LISTENER) {
            None => default_listener,
            Some(v) => v.parse().unwrap_or_else(|_| {
                warn.push(format!(
                    "{LAMBDAWATCH_TELEMETRY_LISTENER}={v:?} is not host:port; using {DEFAULT_TELEMETRY_LISTENER}"
                ));
                default_listener
            }),
        };
        let memory_mb = get(AWS_LAMBDA_FUNCTION_MEMORY_SIZE).and_then(|v| v.parse().ok());
        let managed_instances = get(AWS_LAMBDA_INITIALIZATION_TYPE)
            .is_some_and(|v| v == lambdawatch_semconv::init_type::MANAGED_INSTANCES);
        let config = Config {
            endpoints,
            headers,
            compression,
            timeout: Duration::from_millis(timeout_ms),
            extra_roots,
            service_name: get(OTEL_SERVICE_NAME),
            resource_attributes: match get(OTEL_RESOURCE_ATTRIBUTES) {
                Some(v) => parse_kv_list(&v, OTEL_RESOURCE_ATTRIBUTES, &mut warn),
                None => Vec::new(),
            },
            flush,
            capture_logs,
            redactor,
            buffer_max_items,
            buffer_max_bytes,
            listener,
            runtime_api: get(AWS_LAMBDA_RUNTIME_API),
            function_name: get(AWS_LAMBDA_FUNCTION_NAME),
            function_version: get(AWS_LAMBDA_FUNCTION_VERSION),
            memory_mb,
            log_stream: get(AWS_LAMBDA_LOG_STREAM_NAME),
            region: get(AWS_REGION),
            managed_instances,
        };
        (config, warn)
    }
}

/// The CA certificates of the PEM file at `path` that can serve as trust anchors. A missing or
/// unreadable file, a file without certificates, or a certificate that is not a usable CA gives
/// one warning; whatever is usable is kept (Mozilla's roots are trusted either way).
pub fn load_roots(path: &str, warn: &mut Vec<String>) -> Vec<CertificateDer<'static>> {
    let pem = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            warn.push(format!(
                "{OTEL_EXPORTER_OTLP_CERTIFICATE}={path:?} cannot be read ({e}); trusting the built-in roots only"
            ));
            return Vec::new();
        }
    };
    let mut certs = Vec::new();
    let mut bad = 0usize;
    for c in CertificateDer::pem_slice_iter(&pem) {
        match c {
            Ok(c) if rustls::RootCertStore::empty().add(c.clone()).is_ok() => certs.push(c),
            _ => bad += 1,
        }
    }
    if certs.is_empty() {
        warn.push(format!(
            "{OTEL_EXPORTER_OTLP_CERTIFICATE}={path:?} holds no usable PEM certificate; trusting the built-in roots only"
        ));
    } else if bad > 0 {
        warn.push(format!(
            "{OTEL_EXPORTER_OTLP_CERTIFICATE}={path:?}: {bad} certificate(s) unusable, skipped; {} kept",
            certs.len()
        ));
    }
    certs
}

fn valid_url(v: &str) -> bool {
    (v.starts_with("http://") || v.starts_with("https://")) && v.parse::<http::Uri>().is_ok()
}

fn parse_num(v: Option<String>, var: &str, default: u64, min: u64, warn: &mut Vec<String>) -> u64 {
    match v {
        None => default,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n >= min => n,
            _ => {
                warn.push(format!(
                    "{var}={s:?} is not a whole number >= {min}; using {default}"
                ));
                default
            }
        },
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `adaptive` | `end` | `periodic,<ms>` (ms ≥ 1).
pub fn parse_flush(v: &str) -> Option<FlushStrategy> {
    let v = v.trim().to_ascii_lowercase();
    match v.as_str() {
        "adaptive" => Some(FlushStrategy::Adaptive),
        "end" => Some(FlushStrategy::End),
        _ => {
            let ms = v.strip_prefix("periodic,")?.trim().parse::<u64>().ok()?;
            (ms >= 1).then(|| FlushStrategy::Periodic(Duration::from_millis(ms)))
        }
    }
}

fn parse_redact(v: &str, warn: &mut Vec<String>) -> Redactor {
    if v.eq_ignore_ascii_case("none") {
        return Redactor::none();
    }
    let mut r = Redactor::none();
    let mut have_defaults = false;
    for pat in v
        .split(REDACT_SEPARATOR)
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if pat.eq_ignore_ascii_case("default") {
            if !have_defaults {
                let d = Redactor::defaults();
                r = merge(d, r);
                have_defaults = true;
            }
            continue;
        }
        if let Err(e) = r.add(pat) {
            warn.push(format!(
                "{LAMBDAWATCH_REDACT}: regex {pat:?} is invalid ({e}); skipped"
            ));
        }
    }
    r
}

fn merge(mut first: Redactor, second: Redactor) -> Redactor {
    first.extend(second);
    first
}

/// `k=v,k2=v2`, values percent-decoded; bad pairs are warned about and skipped.
pub fn parse_kv_list(v: &str, var: &str, warn: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, val)) if !k.trim().is_empty() => {
                out.push((percent_decode(k.trim()), percent_decode(val.trim())))
            }
            _ => warn.push(format!("{var}: {pair:?} is not key=value; skipped")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (
                (b[i + 1] as char).to_digit(16),
                (b[i + 2] as char).to_digit(16),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> (Config, Vec<String>) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (c, w) = cfg(&[]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.endpoints.traces, "http://localhost:4318/v1/traces");
        assert_eq!(c.endpoints.metrics, "http://localhost:4318/v1/metrics");
        assert_eq!(c.endpoints.logs, "http://localhost:4318/v1/logs");
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(c.flush, FlushStrategy::Adaptive);
        assert!(c.capture_logs);
        assert_eq!(c.redactor.len(), 4);
        assert_eq!(c.listener, "0.0.0.0:0".parse().unwrap());
        assert_eq!(c.buffer_max_items, DEFAULT_BUFFER_MAX_ITEMS);
        assert!(!c.managed_instances);
    }

    #[test]
    fn config_table() {
        let (c, w) = cfg(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4318/"),
            (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, "http://logs:9000/custom"),
            (
                OTEL_EXPORTER_OTLP_HEADERS,
                "x-api-key=abc%3D%3D, tenant = t1",
            ),
            (OTEL_EXPORTER_OTLP_COMPRESSION, "none"),
            (OTEL_EXPORTER_OTLP_TIMEOUT, "2500"),
            (OTEL_SERVICE_NAME, "checkout"),
            (OTEL_RESOURCE_ATTRIBUTES, "team=pay,env=prod"),
            (LAMBDAWATCH_FLUSH, "periodic,250"),
            (LAMBDAWATCH_CAPTURE_LOGS, "false"),
            (LAMBDAWATCH_REDACT, r"default;;card=\d+"),
            (LAMBDAWATCH_BUFFER_MAX_ITEMS, "50"),
            (LAMBDAWATCH_BUFFER_MAX_BYTES, "65536"),
            (LAMBDAWATCH_TELEMETRY_LISTENER, "127.0.0.1:4243"),
            (AWS_LAMBDA_INITIALIZATION_TYPE, "lambda-managed-instances"),
            (AWS_LAMBDA_FUNCTION_MEMORY_SIZE, "512"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.endpoints.traces, "http://collector:4318/v1/traces");
        assert_eq!(c.endpoints.logs, "http://logs:9000/custom");
        assert_eq!(
            c.headers,
            vec![
                ("x-api-key".to_owned(), "abc==".to_owned()),
                ("tenant".to_owned(), "t1".to_owned())
            ]
        );
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.service_name.as_deref(), Some("checkout"));
        assert_eq!(c.resource_attributes.len(), 2);
        assert_eq!(c.flush, FlushStrategy::Periodic(Duration::from_millis(250)));
        assert!(!c.capture_logs);
        assert_eq!(c.redactor.len(), 5);
        assert_eq!(c.buffer_max_items, 50);
        assert_eq!(c.buffer_max_bytes, 65536);
        assert_eq!(c.listener, "127.0.0.1:4243".parse().unwrap());
        assert!(c.managed_instances);
        assert_eq!(c.memory_mb, Some(512));
    }

    #[test]
    fn garbage_gives_defaults_and_one_warning_each() {
        let cases: &[(&str, &str)] = &[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4318"),
            (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "ftp://x"),
            (OTEL_EXPORTER_OTLP_HEADERS, "novalue"),
            (OTEL_EXPORTER_OTLP_COMPRESSION, "zstd"),
            (OTEL_EXPORTER_OTLP_TIMEOUT, "-5"),
            (LAMBDAWATCH_FLUSH, "sometimes"),
            (LAMBDAWATCH_FLUSH, "periodic,0"),
            (LAMBDAWATCH_FLUSH, "periodic,abc"),
            (LAMBDAWATCH_CAPTURE_LOGS, "maybe"),
            (LAMBDAWATCH_REDACT, "(unclosed"),
            (LAMBDAWATCH_BUFFER_MAX_ITEMS, "0"),
            (LAMBDAWATCH_BUFFER_MAX_BYTES, "12"),
            (LAMBDAWATCH_TELEMETRY_LISTENER, "localhost"),
        ];
        let (d, _) = cfg(&[]);
        for (k, v) in cases {
            let (c, w) = cfg(&[(k, v)]);
            assert_eq!(w.len(), 1, "{k}={v}: {w:?}");
            assert!(w[0].contains(k), "warning names the variable: {w:?}");
            assert_eq!(c.endpoints.traces, d.endpoints.traces, "{k}={v}");
            assert_eq!(c.compression, d.compression);
            assert_eq!(c.timeout, d.timeout);
            assert_eq!(c.flush, d.flush);
            assert_eq!(c.capture_logs, d.capture_logs);
            assert_eq!(c.buffer_max_items, d.buffer_max_items);
            assert_eq!(c.buffer_max_bytes, d.buffer_max_bytes);
            assert_eq!(c.listener, d.listener);
        }
        let (c, _) = cfg(&[(LAMBDAWATCH_REDACT, "none")]);
        assert!(c.redactor.is_empty());
    }

    #[test]
    fn bad_certificate_files_warn_once_and_trust_only_the_builtin_roots() {
        let dir = std::env::temp_dir().join(format!("lw-cfg-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        // A PEM block that is not DER of a certificate.
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (path, says) in [
            (dir.join("missing.pem"), "cannot be read"),
            (garbage, "no usable PEM certificate"),
            (broken, "no usable PEM certificate"),
        ] {
            let p = path.display().to_string();
            let (c, w) = cfg(&[(OTEL_EXPORTER_OTLP_CERTIFICATE, &p)]);
            assert_eq!(w.len(), 1, "{p}: {w:?}");
            assert!(
                w[0].contains(OTEL_EXPORTER_OTLP_CERTIFICATE) && w[0].contains(says),
                "{w:?}"
            );
            assert!(c.extra_roots.is_empty());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
