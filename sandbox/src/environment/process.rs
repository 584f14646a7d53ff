//! Processes of an execution environment: the runtime and the external extensions.
//!
//! Each process gets a process group of its own (so [`crate::freeze`] reaches what it forks), a
//! cleared environment with only what Lambda sets plus the function's own variables, and two pump
//! tasks that turn its stdout/stderr lines into `function` or `extension` telemetry records (lines
//! are emitted with `try_send`: a slow subscriber loses records, counted, never the process).
//! A waiter task records the exit in the shared state and wakes the lifecycle.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    process::Command,
};

use crate::{
    environment::state::EnvShared,
    freeze::{self, Signal},
    telemetry_api::events::{self, Stream},
};

/// Longest log record; a longer line is split into records of this size (Lambda cuts at 256 KB).
const MAX_LINE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Runtime,
    Extension,
}

/// A started process (its pid is also its process group id).
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub role: Role,
    pub exit: tokio::sync::watch::Receiver<Option<Option<i32>>>,
}

impl Proc {
    pub fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    pub fn signal(&self, sig: Signal) {
        if self.exited() {
            return;
        }
        if let Err(e) = freeze::signal_group(self.pid, sig) {
            tracing::warn!(name = %self.name, pid = self.pid, error = %e, ?sig, "signal failed");
        }
    }
}

/// Peak resident set size (VmHWM, KiB) summed over every live process whose process group is one
/// of `pgids`: the runtime and extensions and whatever they forked (a shell wrapper's child, a
/// language runtime's workers). Processes that already exited are not counted.
pub fn group_peak_rss_kib(pgids: &[u32]) -> u64 {
    if pgids.is_empty() {
        return 0;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_pgrp(&s))
                .is_some_and(|g| pgids.contains(&g))
        })
        .map(peak_rss_kib)
        .sum()
}

/// The process group (field 5) of a `/proc/PID/stat` line; `comm` may hold spaces and parens,
/// so fields are counted after its last `)`.
pub fn stat_pgrp(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Executable regular files of `dir`, sorted by name (Lambda starts them alphabetically).
pub fn list_extensions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

pub fn spawn(
    name: &str,
    argv: &[String],
    cwd: Option<&Path>,
    env_vars: &[(String, String)],
    role: Role,
    shared: Arc<EnvShared>,
) -> std::io::Result<Proc> {
    let Some((program, args)) = argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty argv",
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env_vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    let stream = match role {
        Role::Runtime => Stream::Function,
        Role::Extension => Stream::Extension,
    };
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, stream, shared.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, stream, shared.clone()));
    }
    let (tx, rx) = tokio::sync::watch::channel(None);
    let proc_name = name.to_owned();
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(status) => status.code(),
            Err(_) => None,
        };
        {
            let mut st = shared.lock();
            match role {
                Role::Runtime => st.runtime.exited = true,
                Role::Extension => st.extension_exits.push((proc_name, code)),
            }
        }
        let _ = tx.send(Some(code));
        shared.notify();
    });
    Ok(Proc {
        name: name.to_owned(),
        pid,
        role,
        exit: rx,
    })
}

async fn pump(reader: impl AsyncRead + Unpin, stream: Stream, shared: Arc<EnvShared>) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // At most MAX_LINE_BYTES per record: a longer line is cut into several records.
        let mut limited = (&mut reader).take(MAX_LINE_BYTES as u64);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf);
                shared.emit(events::log_line(stream, &line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgrp_after_a_comm_with_spaces_and_parens() {
        assert_eq!(stat_pgrp("42 (a b) c) S 1 4242 4242 0 -1"), Some(4242));
        assert_eq!(stat_pgrp("garbage"), None);
    }

    #[test]
    fn own_group_is_measured() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let pgrp = stat_pgrp(&stat).unwrap();
        // Peak RSS only grows: read this process's first, so the group sum (which includes it,
        // read later) can only be larger even if the process grew in between.
        let mine = peak_rss_kib(me);
        assert!(mine > 0);
        assert!(group_peak_rss_kib(&[pgrp]) >= mine);
        assert_eq!(group_peak_rss_kib(&[]), 0);
    }
}
