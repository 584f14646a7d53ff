//! Helpers shared by the collector's integration tests (each test file has `mod common;`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request as the capture server saw it.
#[derive(Debug)]
pub struct Captured {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 server: reads one request per connection (Content-Length body), answers
/// `204`, and forwards what it read. Written on raw TCP so it shares no code with the sinks.
pub async fn capture_server() -> (SocketAddr, mpsc::Receiver<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind capture server");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let path = lines
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("")
                        .to_owned();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(": "))
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    let _ = tx
                        .send(Captured {
                            path,
                            headers,
                            body,
                        })
                        .await;
                    if socket
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// `GET http://{addr}{path}` on a fresh connection; the status code, or None when the
/// connection fails. Raw HTTP/1.1 so readiness probes share no code with the code under test.
pub async fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    socket.read_to_end(&mut buf).await.ok()?;
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1)?.parse().ok()
}

/// A loopback port that was free a moment ago (bound, then released).
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}
