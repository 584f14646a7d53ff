//! Test harness: runs the sandbox library in-process with the real sample function and the probe
//! extension as processes, talks to it over real HTTP, reads the probe's JSON lines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use lambdawatch_sandbox::{RunOptions, config::FunctionConfig, report::RunReport};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const PROBE: &str = env!("CARGO_BIN_EXE_lambdawatch-probe-extension");

/// The sample function binary, next to the test's target dir; a clear panic when missing.
pub fn sample_function() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    // target/debug/deps/<test> → target/debug/sample-function
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("sample-function");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p lambdawatch-sample-function -p lambdawatch-sandbox` first",
        bin.display()
    );
    bin
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<RunReport>,
    pub probe_out: PathBuf,
    pub client: reqwest_lite::Client,
}

/// Minimal HTTP client over hyper for the tests.
pub mod reqwest_lite {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::{client::legacy::Client as HClient, rt::TokioExecutor};

    #[derive(Clone)]
    pub struct Client(HClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>);

    pub struct Resp {
        pub status: u16,
        pub headers: http::HeaderMap,
        pub body: Bytes,
    }

    impl Resp {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
        }
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }
    }

    impl Client {
        pub fn new() -> Self {
            Client(HClient::builder(TokioExecutor::new()).build_http())
        }
        pub async fn send(
            &self,
            method: &str,
            url: &str,
            headers: &[(&str, &str)],
            body: impl Into<Bytes>,
        ) -> Resp {
            let mut b = http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let resp = self
                .0
                .request(b.body(Full::new(body.into())).unwrap())
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Resp {
                status,
                headers,
                body,
            }
        }
    }
}

/// Starts the sandbox. `extra_yaml` is appended to the function YAML; `probe_env` lines go into
/// its `environment`. Extensions: `(file name, extra env for that extension)` as wrapper scripts.
pub async fn start(
    extra_yaml: &str,
    probe_env: &[(&str, &str)],
    extensions: &[(&str, &[(&str, &str)])],
    cloudwatch: Option<String>,
) -> Harness {
    let sample = sample_function().display().to_string();
    start_with_handler(&[&sample], extra_yaml, probe_env, extensions, cloudwatch).await
}

/// [`start`] with another handler (argv) than the sample function.
pub async fn start_with_handler(
    handler: &[&str],
    extra_yaml: &str,
    probe_env: &[(&str, &str)],
    extensions: &[(&str, &[(&str, &str)])],
    cloudwatch: Option<String>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ext_dir = dir.path().join("extensions");
    std::fs::create_dir(&ext_dir).unwrap();
    for (name, env) in extensions {
        use std::os::unix::fs::PermissionsExt;
        let exports: String = env
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect();
        let path = ext_dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/bash\n{exports}exec -a {name} {PROBE}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let probe_out = dir.path().join("probe.jsonl");
    let mut env_yaml = format!("  PROBE_OUT: '{}'\n", probe_out.display());
    for (k, v) in probe_env {
        env_yaml.push_str(&format!("  {k}: '{v}'\n"));
    }
    let handler = serde_json::to_string(handler).unwrap();
    let yaml = format!(
        "name: testfn\nhandler: {handler}\nextensions_dir: '{}'\nenvironment:\n{env_yaml}{extra_yaml}",
        ext_dir.display()
    );
    let function: FunctionConfig = serde_yaml::from_str(&yaml).unwrap();
    function.validate().unwrap();
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = RunOptions {
        function,
        workload: None,
        invoke_addr: "127.0.0.1:0".parse().unwrap(),
        report: None,
        cloudwatch_endpoint: cloudwatch,
    };
    let s = stop.clone();
    let task = tokio::spawn(async move {
        lambdawatch_sandbox::run(opts, s, move |a| {
            let _ = tx.send(a);
        })
        .await
        .unwrap()
    });
    let addr = rx.await.unwrap();
    Harness {
        dir,
        addr,
        stop,
        task,
        probe_out,
        client: reqwest_lite::Client::new(),
    }
}

impl Harness {
    pub async fn invoke(&self, payload: &str, async_: bool) -> reqwest_lite::Resp {
        self.invoke_with(payload, async_, &[]).await
    }

    /// [`Harness::invoke`] with extra request headers.
    pub async fn invoke_with(
        &self,
        payload: &str,
        async_: bool,
        headers: &[(&str, &str)],
    ) -> reqwest_lite::Resp {
        let url = format!(
            "http://{}/2015-03-31/functions/testfn/invocations",
            self.addr
        );
        let kind = if async_ { "Event" } else { "RequestResponse" };
        let mut all = vec![("X-Amz-Invocation-Type", kind)];
        all.extend_from_slice(headers);
        self.client
            .send("POST", &url, &all, payload.to_owned())
            .await
    }

    pub async fn finish(self) -> (RunReport, Vec<Value>, tempfile::TempDir) {
        self.stop.cancel();
        let report = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("sandbox did not stop within 30 s")
            .unwrap();
        let lines = probe_lines(&self.probe_out);
        (report, lines, self.dir)
    }
}

pub fn probe_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every telemetry event received (status 200 batches only), with the batch's arrival time.
pub fn telemetry_events(lines: &[Value]) -> Vec<(u64, Value)> {
    lines
        .iter()
        .filter(|l| l.get("telemetry").is_some() && l["status"] == 200)
        .flat_map(|l| {
            let at = l["at_ms"].as_u64().unwrap();
            l["telemetry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |e| (at, e))
        })
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Polls the futures concurrently until all are done; results in completion order.
pub async fn futures_join<F: std::future::Future<Output = T>, T>(futs: Vec<F>) -> Vec<T> {
    let mut out = Vec::new();
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).map(Some).collect();
    std::future::poll_fn(|cx| {
        for slot in pinned.iter_mut() {
            if let Some(f) = slot
                && let std::task::Poll::Ready(v) = f.as_mut().poll(cx)
            {
                out.push(v);
                *slot = None;
            }
        }
        if pinned.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out
}
