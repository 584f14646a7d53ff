//! Loopback ports: pick a free one, wait for a server to listen.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Waits until something accepts TCP connections on `addr`, or panics after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for a listener on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
