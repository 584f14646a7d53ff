//! The demo binary through its real interface: the build step it runs before anything else
//! (which cargo, which packages, which profile, what happens when the build fails or
//! `LAMBDAWATCH_DEMO_NO_BUILD` skips it), and `--serve`, which must keep the collector and its
//! status page up after the report until Ctrl-C.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const DEMO: &str = env!("CARGO_BIN_EXE_lambdawatch-demo");
const NO_BUILD: &str = "LAMBDAWATCH_DEMO_NO_BUILD";

/// Held while this test process writes an executable or forks. Otherwise a fork in one test
/// can inherit another test's still-open write descriptor of its fake `cargo` or demo copy, and
/// executing that file fails with ETXTBSY ("Text file busy") until the child has exec'd.
static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fork_lock() -> std::sync::MutexGuard<'static, ()> {
    FORK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `cmd.output()`, forking under [`FORK`].
fn output(cmd: &mut Command) -> Output {
    let child = {
        let _g = fork_lock();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    child.wait_with_output().unwrap()
}

/// A copy of the demo in `<tmp>/<profile>/` (nothing else beside it) and a fake `cargo` that
/// records its arguments and exits with `exit`.
struct Isolated {
    _dir: tempfile::TempDir,
    demo: PathBuf,
    cargo: PathBuf,
    args_file: PathBuf,
}

impl Isolated {
    fn new(profile: &str, exit: i32) -> Self {
        let _g = fork_lock();
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join(profile);
        std::fs::create_dir(&bin_dir).unwrap();
        let demo = bin_dir.join("lambdawatch-demo");
        std::fs::copy(DEMO, &demo).unwrap();
        let args_file = dir.path().join("cargo-args");
        let cargo = dir.path().join("fake-cargo");
        std::fs::write(
            &cargo,
            format!(
                "#!/bin/sh\necho \"$@\" > '{}'\nexit {exit}\n",
                args_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            _dir: dir,
            demo,
            cargo,
            args_file,
        }
    }

    fn run(&self, no_build: bool) -> Output {
        let mut cmd = Command::new(&self.demo);
        cmd.env("CARGO", &self.cargo).env_remove(NO_BUILD);
        if no_build {
            cmd.env(NO_BUILD, "1");
        }
        output(&mut cmd)
    }

    fn cargo_args(&self) -> Option<String> {
        std::fs::read_to_string(&self.args_file)
            .ok()
            .map(|s| s.trim().to_owned())
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn builds_the_four_packages_in_its_own_profile_with_the_cargo_that_ran_it() {
    let packages = "-p lambdawatch-collector -p lambdawatch-sandbox -p lambdawatch-extension \
                    -p lambdawatch-sample-function";
    for (profile, want) in [
        ("debug", format!("build --quiet {packages}")),
        ("release", format!("build --quiet {packages} --release")),
    ] {
        let iso = Isolated::new(profile, 0);
        let out = iso.run(false);
        assert_eq!(
            iso.cargo_args().as_deref(),
            Some(want.as_str()),
            "{profile}"
        );
        // The fake build produced nothing: the demo names what is missing and fails.
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{}/lambdawatch-collector was not built",
                iso.demo.parent().unwrap().display()
            )),
            "{err}"
        );
    }
}

#[test]
fn a_failed_build_stops_the_demo_and_no_build_skips_it() {
    let iso = Isolated::new("debug", 101);
    let out = iso.run(false);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cargo build failed"),
        "{}",
        stderr(&out)
    );

    let iso = Isolated::new("debug", 0);
    let out = iso.run(true);
    assert_eq!(iso.cargo_args(), None, "{NO_BUILD} must not run cargo");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was not built"), "{}", stderr(&out));
}

#[test]
fn unknown_arguments_are_refused_before_building() {
    let iso = Isolated::new("debug", 0);
    let out = output(
        Command::new(&iso.demo)
            .arg("--serv")
            .env("CARGO", &iso.cargo),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("usage: lambdawatch-demo [--serve]"),
        "{}",
        stderr(&out)
    );
    assert_eq!(iso.cargo_args(), None);
}

/// `GET http://{addr}{path}` → (status, body), HTTP/1.0 so the server closes the connection.
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// The whole demo, built by the demo itself (its real build path against this workspace), then
/// `--serve`: the report is printed, the collector's status page and API stay up, and Ctrl-C
/// (SIGINT to the process group, as a terminal sends it) stops both.
#[test]
fn serve_keeps_the_collector_up_after_the_report_until_ctrl_c() {
    let mut child = {
        let _g = fork_lock();
        // The build step is covered above with a fake cargo; a real nested `cargo build -p …` of
        // four packages can resolve features differently from the workspace build and rebuild
        // the AWS SDK for minutes. The binaries beside the demo are built by `scripts/test.sh`.
        Command::new(DEMO)
            .arg("--serve")
            .env(NO_BUILD, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let pgid = child.id();
    let (tx, rx) = mpsc::sync_channel::<String>(1024);
    let stdout = child.stdout.take().unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("stderr: {l}"));
        }
    });
    let interrupt = || {
        let _g = fork_lock();
        let _ = Command::new("kill")
            .args(["-INT", "--", &format!("-{pgid}")])
            .status();
    };
    // About a minute of traffic; generous on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut lines = Vec::new();
    let admin = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let addr = l
                    .strip_prefix("--serve: collector stays up at http://")
                    .and_then(|r| r.split('/').next())
                    .map(str::to_owned);
                lines.push(l);
                if let Some(a) = addr {
                    break a;
                }
            }
            Err(_) => {
                interrupt();
                let _ = child.kill();
                panic!(
                    "no --serve line (demo exited: {:?}):\n{}",
                    child.try_wait(),
                    lines.join("\n")
                );
            }
        }
    };
    let out = lines.join("\n");
    assert!(out.contains("[firing]"), "the report came first:\n{out}");
    // Past the point where the demo without --serve exits: still up, still serving.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the demo exited:\n{out}"
    );
    let (status, page) = get(&admin, "/").unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("<td>orders</td>") && page.contains("<td>checkout</td>"),
        "{page}"
    );
    let (status, slos) = get(&admin, "/api/v1/slos").unwrap();
    assert_eq!(status, 200);
    let slos: serde_json::Value = serde_json::from_str(&slos).unwrap();
    let mut names: Vec<&str> = slos["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names, ["checkout", "orders"]);

    interrupt();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "demo ignored SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The collector (same process group) shut down too: its admin port closes.
    let t0 = Instant::now();
    while get(&admin, "/healthz").is_ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the collector outlived Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
