//! The webhook the demo's collector delivers alerts to, so the demo can print what fired.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

pub struct Webhook {
    addr: std::net::SocketAddr,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(body) = read_request(&stream)
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                    && let Ok(mut all) = sink.lock()
                {
                    all.push(v);
                }
                let mut s = stream;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Ok(Self { addr, received })
    }

    pub fn url(&self) -> String {
        format!("http://{}/alerts", self.addr)
    }

    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn read_request(stream: &std::net::TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len.min(4 << 20)];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}
