//! Run one function with its extensions under the AWS RIE or under `lambdawatch-sandbox`.
//!
//! A [`Setup`] names the runtime (argv, env, code dir) and the external extensions (name, argv, env).
//! Both [`Rie::start`] and [`Sandbox::start`] write the same small `sh` wrappers into a private work
//! dir (`bootstrap` and `extensions/<name>`, with the env baked in and the runtime started from the
//! code dir), so the two hosts run byte-for-byte the same processes and only the host differs.
//!
//! **The RIE** (`peers::rie()`) runs as root inside `unshare -m`: the code dir is bind-mounted on
//! `/var/task`, the wrappers dir on `/opt/extensions`, and a hosts file mapping
//! `sandbox.localdomain` to 127.0.0.1 on `/etc/hosts`. Flags: `--runtime-interface-emulator-address`
//! (the invoke endpoint `POST /2015-03-31/functions/function/invocations`) and
//! `--runtime-api-address`, both on free loopback ports. [`Mode::Classic`] serves the Runtime and
//! Extensions APIs and answers the Telemetry API with 202 `Telemetry.NotSupported`;
//! [`Mode::ManagedInstances`] (`AWS_LAMBDA_MAX_CONCURRENCY=1`) initialises at start, pushes Telemetry
//! API events and runs the runtime and extensions as uid 993. Directories that uid cannot traverse
//! (such as `/root`, which holds the peers venv and often the clone) are re-exposed inside the
//! namespace: bind-moved aside, covered by a mode-755 tmpfs, and each entry bound back, so nothing
//! outside the namespace changes (except that empty `/var/task` and `/opt/extensions` mount points are
//! created on the host when missing).
//!
//! **The sandbox** runs `lambdawatch-sandbox run --function F.yaml --invoke-addr 127.0.0.1:PORT` and
//! waits for its `invoke api listening on` line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Child, free_port, http, peers, workspace_bin};

/// RIE mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Runtime + Extensions APIs; Telemetry answers 202 `Telemetry.NotSupported`.
    Classic,
    /// `AWS_LAMBDA_MAX_CONCURRENCY=1`: real Telemetry events (schema `2025-01-29`), SHUTDOWN-only
    /// extensions, uid 993.
    ManagedInstances,
}

/// One process to start: argv and extra environment.
#[derive(Clone, Debug, Default)]
pub struct Proc {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Proc {
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Proc {
        Proc {
            argv: argv.iter().map(|s| s.as_ref().to_string()).collect(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> Proc {
        self.env.push((k.to_string(), v.as_ref().to_string()));
        self
    }
}

/// A function and its external extensions.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The function's code: `/var/task` under the RIE, `code_dir` in the sandbox; the runtime's cwd.
    pub code_dir: PathBuf,
    pub runtime: Proc,
    /// `(file name in /opt/extensions, process)`.
    pub extensions: Vec<(String, Proc)>,
    /// Function timeout (sandbox `timeout_ms`, RIE `AWS_LAMBDA_FUNCTION_TIMEOUT`).
    pub timeout_ms: u64,
}

impl Setup {
    pub fn new(code_dir: impl Into<PathBuf>, runtime: Proc) -> Setup {
        Setup {
            code_dir: code_dir.into(),
            runtime,
            extensions: Vec::new(),
            timeout_ms: 30_000,
        }
    }

    pub fn extension(mut self, name: &str, p: Proc) -> Setup {
        self.extensions.push((name.to_string(), p));
        self
    }

    /// The Python sample (`functions/python-sample`) run by awslambdaric from the peers venv.
    pub fn python_sample() -> Setup {
        let py = peers::python_module("awslambdaric");
        peers::python_module("aws_lambda_powertools");
        Setup::new(
            crate::repo_root().join("functions/python-sample"),
            Proc::new(&[
                py.to_string_lossy().as_ref(),
                "-m",
                "awslambdaric",
                "app.handler",
            ]),
        )
    }

    /// The Rust sample (`sample-function`, lambda_runtime) from the workspace target dir.
    pub fn rust_sample() -> Setup {
        let bin = workspace_bin("sample-function");
        let code = bin.parent().map(Path::to_path_buf).unwrap_or_default();
        Setup::new(code, Proc::new(&[bin.to_string_lossy().as_ref()]))
    }
}

/// Single-quotes `s` for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn wrapper(cd: Option<&str>, p: &Proc) -> String {
    let mut s = String::from("#!/bin/sh\n");
    if let Some(dir) = cd {
        s.push_str(&format!("cd {} || exit 1\n", sh_quote(dir)));
    }
    for (k, v) in &p.env {
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    let argv: Vec<String> = p.argv.iter().map(|a| sh_quote(a)).collect();
    s.push_str(&format!("exec {}\n", argv.join(" ")));
    s
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A private work dir readable by every uid (the RIE's MI mode runs processes as uid 993), with a
/// world-writable `out/` for files the processes write.
pub struct WorkDir {
    pub dir: tempfile::TempDir,
}

impl WorkDir {
    pub fn new() -> WorkDir {
        let dir = tempfile::Builder::new()
            .prefix("lambdawatch-env-")
            .tempdir()
            .unwrap();
        chmod(dir.path(), 0o755);
        for sub in ["extensions", "out"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        chmod(&dir.path().join("extensions"), 0o755);
        chmod(&dir.path().join("out"), 0o777);
        WorkDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file under `out/` for a process to write (e.g. `RECORD_OUT`, `PROBE_OUT`).
    pub fn out(&self, name: &str) -> PathBuf {
        self.path().join("out").join(name)
    }

    fn write_wrappers(&self, setup: &Setup, runtime_cd: &str) -> PathBuf {
        let bootstrap = self.path().join("bootstrap");
        write_exec(&bootstrap, &wrapper(Some(runtime_cd), &setup.runtime));
        for (name, p) in &setup.extensions {
            write_exec(
                &self.path().join("extensions").join(name),
                &wrapper(None, p),
            );
        }
        bootstrap
    }
}

impl Default for WorkDir {
    fn default() -> Self {
        WorkDir::new()
    }
}

/// Directories among the ancestors of `paths` that "others" cannot traverse (mode lacks o+x).
fn untraversable_ancestors(paths: &[PathBuf]) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        for a in p.ancestors().skip(1) {
            if a == Path::new("/") {
                continue;
            }
            let closed = std::fs::metadata(a)
                .map(|m| m.permissions().mode() & 0o001 == 0)
                .unwrap_or(false);
            if closed && !out.iter().any(|o| o == a) {
                out.push(a.to_path_buf());
            }
        }
    }
    // Outermost first, so inner ones are re-exposed inside the already re-exposed outer one.
    out.sort_by_key(|p| p.components().count());
    out
}

/// Both hosts' common invoke call.
fn invoke_url(url: &str, payload: &serde_json::Value, headers: &[(&str, &str)]) -> http::Response {
    let body = serde_json::to_vec(payload).unwrap();
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    http::request("POST", url, &h, &body, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("invoke {url}: {e}"))
}

/// The AWS Runtime Interface Emulator running one function.
pub struct Rie {
    pub child: Child,
    pub work: WorkDir,
    pub mode: Mode,
    invoke_addr: String,
    pub runtime_api: String,
}

impl Rie {
    /// Starts the RIE for `setup` in `work` (use [`WorkDir::out`] for the processes' output files)
    /// and waits until its invoke endpoint listens.
    pub fn start(setup: &Setup, work: WorkDir, mode: Mode) -> Rie {
        assert!(
            rustix::process::geteuid().is_root(),
            "the RIE harness needs root (unshare -m, bind mounts)"
        );
        let rie = peers::rie();
        let unshare = peers::bin("unshare");
        let bootstrap = work.write_wrappers(setup, "/var/task");
        std::fs::write(
            work.path().join("hosts"),
            "127.0.0.1 localhost sandbox.localdomain\n::1 localhost\n",
        )
        .unwrap();
        chmod(&work.path().join("hosts"), 0o644);
        let invoke_addr = format!("127.0.0.1:{}", free_port());
        let runtime_api = format!("127.0.0.1:{}", free_port());

        let mut script = String::from("set -e\n");
        script.push_str(
            "expose() { d=$1; s=$2; mkdir -p \"$s\"; mount --bind \"$d\" \"$s\"; \
             mount -t tmpfs -o mode=755 tmpfs \"$d\"; \
             for e in \"$s\"/* \"$s\"/.[!.]* \"$s\"/..?*; do [ -e \"$e\" ] || [ -L \"$e\" ] || continue; \
             n=${e##*/}; if [ -d \"$e\" ]; then mkdir \"$d/$n\"; else touch \"$d/$n\"; fi; \
             mount --bind \"$e\" \"$d/$n\" 2>/dev/null || true; done; }\n",
        );
        if mode == Mode::ManagedInstances {
            let mut needed = vec![
                rie.clone(),
                work.path().join("bootstrap"),
                setup.code_dir.join("x"),
                peers::dir().join("x"),
            ];
            for a in setup
                .runtime
                .argv
                .iter()
                .chain(setup.extensions.iter().flat_map(|(_, p)| p.argv.iter()))
            {
                let p = Path::new(a);
                if p.is_absolute() {
                    needed.push(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
                }
            }
            for (i, d) in untraversable_ancestors(&needed).iter().enumerate() {
                let stage = work.path().join(format!("stage{i}"));
                script.push_str(&format!(
                    "expose {} {}\n",
                    sh_quote(&d.to_string_lossy()),
                    sh_quote(&stage.to_string_lossy())
                ));
            }
        }
        script.push_str("mkdir -p /var/task /opt/extensions\n");
        let q = |p: &Path| sh_quote(&p.to_string_lossy());
        // /var/task = the wrappers' `boot/` (holding `bootstrap`, which MI mode looks for there
        // whatever the command line says) over the code dir, as a read-only overlay.
        let boot = work.path().join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        chmod(&boot, 0o755);
        std::fs::copy(&bootstrap, boot.join("bootstrap")).unwrap();
        chmod(&boot.join("bootstrap"), 0o755);
        script.push_str(&format!(
            "mount -t overlay overlay -o {} /var/task\n",
            sh_quote(&format!(
                "lowerdir={}:{}",
                boot.display(),
                setup.code_dir.display()
            ))
        ));
        script.push_str(&format!(
            "mount --bind {} /opt/extensions\n",
            q(&work.path().join("extensions"))
        ));
        script.push_str(&format!(
            "mount --bind {} /etc/hosts\n",
            q(&work.path().join("hosts"))
        ));
        script.push_str(&format!(
            "exec {} --log-level debug --runtime-interface-emulator-address {invoke_addr} --runtime-api-address {runtime_api} {}\n",
            q(&rie),
            "/var/task/bootstrap"
        ));
        let mut cmd = Command::new(unshare);
        cmd.args(["-m", "--propagation", "private", "--", "sh", "-c", &script])
            .current_dir(work.path());
        cmd.env(
            "AWS_LAMBDA_FUNCTION_TIMEOUT",
            (setup.timeout_ms / 1000).max(1).to_string(),
        );
        if mode == Mode::ManagedInstances {
            cmd.env("AWS_LAMBDA_MAX_CONCURRENCY", "1");
        } else {
            cmd.env_remove("AWS_LAMBDA_MAX_CONCURRENCY");
        }
        let name = match mode {
            Mode::Classic => "rie",
            Mode::ManagedInstances => "rie-mi",
        };
        let child = Child::spawn(name, &mut cmd);
        let addr = invoke_addr.parse().unwrap();
        crate::net::wait_for_port(addr, Duration::from_secs(20));
        Rie {
            child,
            work,
            mode,
            invoke_addr,
            runtime_api,
        }
    }

    /// `POST /2015-03-31/functions/function/invocations` (sync), 60 s timeout.
    pub fn invoke(&self, payload: &serde_json::Value) -> http::Response {
        self.invoke_with(payload, &[])
    }

    /// Same with extra headers (e.g. `X-Amzn-Trace-Id`).
    ///
    /// In MI mode the RIE answers 400 `Runtime.Unavailable` while its one runtime worker has not yet
    /// come back to `/next` (Lambda would route the request to another worker); this retries that
    /// answer every 20 ms for up to 10 s.
    pub fn invoke_with(
        &self,
        payload: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> http::Response {
        let url = format!(
            "http://{}/2015-03-31/functions/function/invocations",
            self.invoke_addr
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = invoke_url(&url, payload, headers);
            let unavailable =
                r.status == 400 && r.header("error-type") == Some("Runtime.Unavailable");
            if !(self.mode == Mode::ManagedInstances && unavailable)
                || std::time::Instant::now() >= deadline
            {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: the RIE sends SHUTDOWN to the extensions and waits for them (bounded by `grace`).
    pub fn stop(&mut self, grace: Duration) {
        self.child.terminate_leader(grace);
    }
}

/// `lambdawatch-sandbox run` serving one function on a free port.
pub struct Sandbox {
    pub child: Child,
    pub work: WorkDir,
    invoke_base: String,
    pub function_name: String,
}

impl Sandbox {
    /// Starts the sandbox for `setup`, with `extra_yaml` appended to the function YAML.
    pub fn start(setup: &Setup, work: WorkDir, extra_yaml: &str) -> Sandbox {
        let bin = workspace_bin("lambdawatch-sandbox");
        let code_dir = setup.code_dir.to_string_lossy().to_string();
        let bootstrap = work.write_wrappers(setup, &code_dir);
        let function_name = "test_function".to_string();
        let yaml = format!(
            "name: {function_name}\ntimeout_ms: {}\nhandler: [{}]\ncode_dir: {}\nextensions_dir: {}\n{extra_yaml}",
            setup.timeout_ms,
            serde_json::to_string(&bootstrap.to_string_lossy()).unwrap(),
            serde_json::to_string(&code_dir).unwrap(),
            serde_json::to_string(&work.path().join("extensions").to_string_lossy()).unwrap(),
        );
        let fpath = work.path().join("function.yaml");
        std::fs::write(&fpath, yaml).unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--function"])
            .arg(&fpath)
            .args(["--invoke-addr", &format!("127.0.0.1:{port}")])
            .current_dir(work.path());
        let child = Child::spawn("sandbox", &mut cmd);
        let line = child.wait_for_text("invoke api listening on http://", Duration::from_secs(30));
        let base = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string();
        Sandbox {
            child,
            work,
            invoke_base: base,
            function_name,
        }
    }

    pub fn invoke(&self, payload: &serde_json::Value) -> http::Response {
        self.invoke_with(payload, &[])
    }

    pub fn invoke_with(
        &self,
        payload: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> http::Response {
        invoke_url(
            &format!(
                "{}/2015-03-31/functions/{}/invocations",
                self.invoke_base, self.function_name
            ),
            payload,
            headers,
        )
    }

    /// SIGTERM: the sandbox shuts its environments down (SHUTDOWN to extensions) and exits.
    pub fn stop(&mut self, grace: Duration) {
        self.child.terminate_leader(grace);
    }
}

/// Reads a JSON-lines file written by a recorder or probe; missing file = no lines.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line ({e}): {l}", path.display()))
        })
        .collect()
}

/// Either host, so one scenario can run under both.
pub enum Host {
    Rie(Rie),
    Sandbox(Sandbox),
}

impl Host {
    pub fn invoke_with(
        &self,
        payload: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> http::Response {
        match self {
            Host::Rie(r) => r.invoke_with(payload, headers),
            Host::Sandbox(s) => s.invoke_with(payload, headers),
        }
    }

    pub fn invoke(&self, payload: &serde_json::Value) -> http::Response {
        self.invoke_with(payload, &[])
    }

    pub fn stop(&mut self, grace: Duration) {
        match self {
            Host::Rie(r) => r.stop(grace),
            Host::Sandbox(s) => s.stop(grace),
        }
    }

    pub fn work(&self) -> &WorkDir {
        match self {
            Host::Rie(r) => &r.work,
            Host::Sandbox(s) => &s.work,
        }
    }

    pub fn child(&self) -> &Child {
        match self {
            Host::Rie(r) => &r.child,
            Host::Sandbox(s) => &s.child,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Host::Rie(r) if r.mode == Mode::ManagedInstances => "rie-mi",
            Host::Rie(_) => "rie",
            Host::Sandbox(_) => "sandbox",
        }
    }
}
