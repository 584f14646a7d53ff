//! The floor: the least an external extension can do — register, then call `/event/next` until
//! SHUTDOWN. std only, blocking, no runtime, so whatever `lambdawatch-extension` costs beyond this
//! is ours.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

fn request(
    api: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(Vec<(String, String)>, String)> {
    let mut s = TcpStream::connect(api)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut headers = Vec::new();
    let mut line = String::new();
    r.read_line(&mut line)?;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut body = String::new();
    r.read_to_string(&mut body)?;
    Ok((headers, body))
}

fn main() -> std::io::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(std::io::Error::other)?;
    let (headers, _) = request(
        &api,
        "POST",
        "/2020-01-01/extension/register",
        &[("Lambda-Extension-Name", "floor-extension")],
        r#"{"events":["INVOKE","SHUTDOWN"]}"#,
    )?;
    let id = headers
        .iter()
        .find(|(k, _)| k == "lambda-extension-identifier")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| std::io::Error::other("no Lambda-Extension-Identifier"))?;
    loop {
        let (_, body) = request(
            &api,
            "GET",
            "/2020-01-01/extension/event/next",
            &[("Lambda-Extension-Identifier", &id)],
            "",
        )?;
        if body.contains("\"SHUTDOWN\"") {
            return Ok(());
        }
    }
}
