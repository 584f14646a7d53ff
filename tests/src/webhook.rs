//! A loopback HTTP receiver for the alert-sink tests (generic webhook, Alertmanager's webhook
//! receiver): answers `200` to every request and hands each request body to `on_body`, in
//! arrival order, on one thread. Each test decides what to keep (whole bodies, alerts, counts).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// Starts the receiver; returns its `host:port`.
pub fn serve(mut on_body: impl FnMut(&[u8]) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if l.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_ok() {
                on_body(&body);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    addr
}
