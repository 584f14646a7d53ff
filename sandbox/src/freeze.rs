//! Freezing and killing process groups: the one place with `unsafe` in the sandbox.
//!
//! Lambda freezes the whole execution environment between invocations; work that the runtime or an
//! extension leaves running after `/next` really stops. The sandbox starts the runtime and every
//! extension in a process group of its own (`process_group(0)`), so one signal to `-pgid` reaches
//! the process and anything it forked.

use std::io;

/// The signals the lifecycle sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Freeze.
    Stop,
    /// Thaw.
    Cont,
    /// Ask the runtime to stop (SHUTDOWN).
    Term,
    /// The end of the SHUTDOWN budget, or a reset after a timeout.
    Kill,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Sends `signal` to every process in the group `pgid`. A group that is already gone (`ESRCH`) is
/// not an error: the process exited on its own.
#[allow(unsafe_code)]
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pgid out of range",
        ));
    };
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing pgid <= 1",
        ));
    }
    // SAFETY: `kill(2)` takes plain integers and touches no memory of ours. A negative pid
    // addresses the process group; pgid > 1 was checked above so this can never be 0 (our own
    // group) or -1 (every process we may signal).
    let rc = unsafe { libc::kill(-pgid, signal.raw()) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn stop_cont_kill_a_group() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        signal_group(pgid, Signal::Stop).unwrap();
        // Signal delivery is asynchronous: observe the state for up to 2 s.
        let stopped = (0..200).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pgid}/stat")).unwrap();
            let after_paren = state.rsplit(')').next().unwrap().trim_start().to_owned();
            after_paren.starts_with('T') || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        });
        assert!(stopped, "process group {pgid} not stopped");
        signal_group(pgid, Signal::Cont).unwrap();
        signal_group(pgid, Signal::Kill).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        // The group is gone now: ESRCH is not an error.
        signal_group(pgid, Signal::Kill).unwrap();
        assert!(signal_group(1, Signal::Cont).is_err());
    }
}
