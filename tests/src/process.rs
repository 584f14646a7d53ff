//! Spawned processes for tests: own process group, captured output, killed on drop.
//!
//! [`Child::spawn`] starts a command in a new process group with stdin closed and stdout/stderr
//! piped. Two reader threads keep the last [`MAX_LINES`] lines (older ones are dropped and counted)
//! and echo each line to the test's stderr prefixed with the child's name, so a failing test shows
//! what its peers said. Dropping the [`Child`] sends SIGKILL to the whole group (wrappers such as
//! `unshare` or `sh -c` take their children with them) and reaps the leader.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lines kept per child; beyond this the oldest are dropped (and counted).
pub const MAX_LINES: usize = 50_000;

/// Which stream a captured line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Captured {
    lines: VecDeque<(Stream, String)>,
    dropped: u64,
    closed_streams: u8,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Captured>,
    changed: Condvar,
}

/// A running child process; killed with its process group on drop.
pub struct Child {
    name: String,
    inner: std::process::Child,
    shared: Arc<Shared>,
    exited: Option<ExitStatus>,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("name", &self.name)
            .field("pid", &self.inner.id())
            .finish()
    }
}

fn pump(name: String, stream: Stream, reader: impl Read, shared: Arc<Shared>) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                eprintln!("[{name}] {line}");
                let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if st.lines.len() >= MAX_LINES {
                    st.lines.pop_front();
                    st.dropped += 1;
                }
                st.lines.push_back((stream, line));
                shared.changed.notify_all();
            }
        }
    }
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    st.closed_streams += 1;
    shared.changed.notify_all();
}

impl Child {
    /// Spawns `cmd` as `name` (used in logs and panics) in a new process group.
    pub fn spawn(name: &str, cmd: &mut Command) -> Child {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let mut inner = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({:?}): {e}", cmd.get_program()));
        let shared = Arc::new(Shared::default());
        if let Some(out) = inner.stdout.take() {
            let (n, s) = (name.to_string(), shared.clone());
            std::thread::spawn(move || pump(n, Stream::Stdout, out, s));
        }
        if let Some(err) = inner.stderr.take() {
            let (n, s) = (name.to_string(), shared.clone());
            std::thread::spawn(move || pump(n, Stream::Stderr, err, s));
        }
        Child {
            name: name.to_string(),
            inner,
            shared,
            exited: None,
        }
    }

    /// The leader's pid (also the process group id).
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Snapshot of the captured lines (both streams, in arrival order).
    pub fn lines(&self) -> Vec<String> {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// Snapshot of the captured lines of one stream.
    pub fn stream_lines(&self, stream: Stream) -> Vec<String> {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Lines dropped because more than [`MAX_LINES`] were captured.
    pub fn dropped_lines(&self) -> u64 {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dropped
    }

    /// Waits for a captured line (from the start of the output) for which `pred` holds and returns
    /// it. Panics after `timeout`, or as soon as both streams closed without a match, with the
    /// last lines of output.
    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = 0usize;
        let mut dropped_seen = st.dropped;
        loop {
            // Lines dropped since the last scan shift the deque; rescan from the right place.
            let shift = (st.dropped - dropped_seen) as usize;
            dropped_seen = st.dropped;
            seen = seen.saturating_sub(shift);
            for (_, line) in st.lines.iter().skip(seen) {
                if pred(line) {
                    return line.clone();
                }
            }
            seen = st.lines.len();
            if st.closed_streams >= 2 {
                let tail = tail(&st.lines, 40);
                panic!(
                    "{}: output ended without {what}; last lines:\n{tail}",
                    self.name
                );
            }
            let now = Instant::now();
            if now >= deadline {
                let tail = tail(&st.lines, 40);
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}; last lines:\n{tail}",
                    self.name
                );
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(&format!("a line containing {needle:?}"), timeout, |l| {
            l.contains(needle)
        })
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.inner.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit; panics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("{}: still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the whole process group.
    pub fn signal_group(&self, signal: rustix::process::Signal) {
        if let Some(pid) = i32::try_from(self.inner.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Sends `signal` to the leader only (a host such as the RIE or the sandbox then shuts its own
    /// children down the way it is meant to).
    pub fn signal_leader(&self, signal: rustix::process::Signal) {
        if let Some(pid) = i32::try_from(self.inner.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGTERM to the leader, then up to `grace` for it to exit, then SIGKILL to the group.
    pub fn terminate_leader(&mut self, grace: Duration) -> ExitStatus {
        if self.try_status().is_none() {
            self.signal_leader(rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.try_status() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(rustix::process::Signal::KILL);
        self.wait_exit(Duration::from_secs(5))
    }

    /// Asks the group to stop (SIGTERM) and waits up to `grace` before SIGKILL. Returns the status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal_group(rustix::process::Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.try_status() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(rustix::process::Signal::KILL);
        self.wait_exit(Duration::from_secs(5))
    }
}

fn tail(lines: &VecDeque<(Stream, String)>, n: usize) -> String {
    let skip = lines.len().saturating_sub(n);
    lines
        .iter()
        .skip(skip)
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Child {
    fn drop(&mut self) {
        // Kill the group even if the leader already exited: its children may live on.
        self.signal_group(rustix::process::Signal::KILL);
        if self.exited.is_none() {
            let _ = self.inner.wait();
        }
    }
}
