//! Tests of the harness itself: process groups die on drop, line waits see output, ports work.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use lambdawatch_tests::{Child, free_port, net::wait_for_port};

#[test]
fn child_captures_lines_and_waits_for_them() {
    let child = Child::spawn(
        "echoer",
        Command::new("sh").args(["-c", "echo hello; echo oops >&2; sleep 30"]),
    );
    assert_eq!(
        child.wait_for_text("hello", Duration::from_secs(5)),
        "hello"
    );
    assert_eq!(child.wait_for_text("oops", Duration::from_secs(5)), "oops");
}

#[test]
#[should_panic(expected = "output ended without")]
fn wait_for_line_fails_fast_when_output_ends() {
    let child = Child::spawn("short", Command::new("sh").args(["-c", "echo one"]));
    child.wait_for_text("never printed", Duration::from_secs(20));
}

#[test]
fn drop_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; echo started; wait",
        pidfile.display()
    );
    let child = Child::spawn("group", Command::new("sh").args(["-c", &script]));
    child.wait_for_text("started", Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let proc_dir = format!("/proc/{pid}");
    assert!(std::path::Path::new(&proc_dir).exists());
    drop(child);
    lambdawatch_tests::wait_until("grandchild to die", Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}

#[test]
fn free_port_is_bindable_and_wait_for_port_sees_a_listener() {
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_for_port(listener.local_addr().unwrap(), Duration::from_secs(2));
}

#[test]
#[should_panic(expected = "timed out")]
fn wait_for_port_times_out_without_listener() {
    let port = free_port();
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_millis(300));
}
