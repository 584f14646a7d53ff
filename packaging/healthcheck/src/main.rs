//! `lambdawatch-healthcheck [--addr HOST:PORT] [--path /readyz] [--timeout-ms 2000]`
//!
//! The container health check of the collector image (ECS `HealthCheck`, Docker `HEALTHCHECK`).
//! The image is `FROM scratch`: no shell, no curl, so the probe is this static binary.
//!
//! Consumes: `LAMBDAWATCH_ADMIN_ADDR` (the collector's admin listen address, default
//! `0.0.0.0:9464`; a wildcard host is probed on loopback) unless `--addr` is given.
//! Produces: exit 0 when `GET <path>` answers `200` within the timeout; exit 1 with one line on
//! stderr saying why otherwise (refused, timed out, other status); exit 2 on bad arguments.
//! Every network step (connect, write, read) has the same deadline, so the probe never hangs
//! longer than the container runtime's own health-check timeout.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// The collector's admin address variable (collector/src/config.rs) and its default.
const ENV_ADMIN_ADDR: &str = "LAMBDAWATCH_ADMIN_ADDR";
const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9464";
const DEFAULT_PATH: &str = "/readyz";
const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Only the status line matters; a bounded read keeps a misbehaving server from growing memory.
const MAX_RESPONSE_HEAD: usize = 1_024;

#[derive(Debug, PartialEq, Eq)]
struct Args {
    addr: SocketAddr,
    path: String,
    timeout: Duration,
}

fn parse_args(argv: &[String], env_addr: Option<&str>) -> Result<Args, String> {
    let mut addr: Option<String> = None;
    let mut path = DEFAULT_PATH.to_string();
    let mut timeout_ms = DEFAULT_TIMEOUT_MS;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--addr" => addr = Some(value("--addr")?),
            "--path" => path = value("--path")?,
            "--timeout-ms" => {
                let v = value("--timeout-ms")?;
                timeout_ms = v
                    .parse()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or(format!("--timeout-ms {v:?} is not a positive integer"))?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: lambdawatch-healthcheck [--addr HOST:PORT] [--path /readyz] [--timeout-ms 2000]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "--path {path:?} must start with / and contain no spaces"
        ));
    }
    let (raw, source) = match (&addr, env_addr) {
        (Some(a), _) => (a.as_str(), "--addr"),
        (None, Some(e)) if !e.trim().is_empty() => (e.trim(), ENV_ADMIN_ADDR),
        _ => (DEFAULT_ADMIN_ADDR, "default"),
    };
    let mut sock: SocketAddr = raw
        .parse()
        .map_err(|e| format!("{source} {raw:?} is not HOST:PORT with a numeric host: {e}"))?;
    // The collector listens on a wildcard; the probe runs in the same network namespace.
    if sock.ip().is_unspecified() {
        sock.set_ip(match sock.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    if sock.port() == 0 {
        return Err(format!("{source} {raw:?} has port 0: nothing to probe"));
    }
    Ok(Args {
        addr: sock,
        path,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// The status code of an HTTP/1.x response head, if it has a complete status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn probe(args: &Args) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&args.addr, args.timeout)
        .map_err(|e| format!("connect {}: {e}", args.addr))?;
    stream
        .set_read_timeout(Some(args.timeout))
        .and_then(|()| stream.set_write_timeout(Some(args.timeout)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lambdawatch-healthcheck\r\nConnection: close\r\n\r\n",
        args.path, args.addr
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send to {}: {e}", args.addr))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    loop {
        if let Some(code) = status_code(&head) {
            return if code == 200 {
                Ok(())
            } else {
                Err(format!(
                    "GET {} on {} answered {code}",
                    args.path, args.addr
                ))
            };
        }
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(format!(
                "no HTTP status line in the first {MAX_RESPONSE_HEAD} bytes"
            ));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "{} closed the connection before a status line",
                    args.addr
                ));
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read from {}: {e}", args.addr)),
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let env_addr = std::env::var(ENV_ADMIN_ADDR).ok();
    let args = match parse_args(&argv, env_addr.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lambdawatch-healthcheck: {e}");
            return ExitCode::from(2);
        }
    };
    match probe(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lambdawatch-healthcheck: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn address_sources_and_wildcards() {
        let a = parse_args(&[], None).unwrap();
        assert_eq!(a.addr, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(a.path, "/readyz");
        let a = parse_args(&[], Some("[::]:9999")).unwrap();
        assert_eq!(a.addr, "[::1]:9999".parse().unwrap());
        let a = parse_args(&s(&["--addr", "10.0.0.5:1234"]), Some("0.0.0.0:9")).unwrap();
        assert_eq!(a.addr, "10.0.0.5:1234".parse().unwrap());
        let a = parse_args(&s(&["--path", "/healthz", "--timeout-ms", "50"]), Some(" ")).unwrap();
        assert_eq!(
            (a.path.as_str(), a.timeout),
            ("/healthz", Duration::from_millis(50))
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for (argv, env) in [
            (vec!["--addr", "localhost:9464"], None),
            (vec!["--addr"], None),
            (vec!["--timeout-ms", "0"], None),
            (vec!["--path", "readyz"], None),
            (vec!["--path", "/a b"], None),
            (vec!["--bogus"], None),
            (vec![], Some("0.0.0.0:0")),
        ] {
            assert!(
                parse_args(&s(&argv), env).is_err(),
                "{argv:?} {env:?} accepted"
            );
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\nx: y\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), None, "incomplete line");
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 OK\r\n"), None);
    }

    /// One-shot server answering `response`, returning the request it saw.
    fn serve_once(response: &'static [u8]) -> (SocketAddr, thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(response).unwrap();
            String::from_utf8(req).unwrap()
        });
        (addr, h)
    }

    fn args(addr: SocketAddr) -> Args {
        Args {
            addr,
            path: "/readyz".into(),
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn ready_not_ready_and_refused() {
        let (addr, h) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(probe(&args(addr)), Ok(()));
        assert!(h.join().unwrap().starts_with("GET /readyz HTTP/1.1\r\n"));

        let (addr, h) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let err = probe(&args(addr)).unwrap_err();
        assert!(err.contains("answered 503"), "{err}");
        h.join().unwrap();

        let (addr, h) = serve_once(b"garbage without a status line at all\n");
        assert!(probe(&args(addr)).is_err());
        h.join().unwrap();

        // A port nobody listens on: refused, not a hang.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = probe(&args(closed)).unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }
}
