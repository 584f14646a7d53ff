//! A container credentials endpoint on loopback, answering like the ECS / Fargate task-role
//! endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_AUTHORIZATION_TOKEN`): `GET`
//! with the token in `Authorization` gets `{"AccessKeyId", "SecretAccessKey", "Token",
//! "Expiration"}`; a request without the right token gets 401. Every request's `Authorization`
//! header is recorded.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

/// The running endpoint (a thread; lives as long as the test process).
pub struct CredentialsServer {
    /// The full URI to put in `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub uri: String,
    /// The `Authorization` header of every request (`None`: absent).
    pub requests: Arc<Mutex<Vec<Option<String>>>>,
}

/// Serves `access_key_id` / `secret` / session `token` to callers presenting `auth_token`.
pub fn start(
    auth_token: &str,
    access_key_id: &str,
    secret: &str,
    token: &str,
) -> CredentialsServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind credentials server");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let auth_token = auth_token.to_owned();
    let body = serde_json::json!({
        "AccessKeyId": access_key_id,
        "SecretAccessKey": secret,
        "Token": token,
        "Expiration": "2099-01-01T00:00:00Z",
        "RoleArn": "arn:aws:iam::123456789012:role/lambdawatch-collector-task",
    })
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream);
            let mut auth = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':')
                    && k.eq_ignore_ascii_case("authorization")
                {
                    auth = Some(v.trim().to_owned());
                }
            }
            let ok = auth.as_deref() == Some(auth_token.as_str());
            seen.lock().expect("requests").push(auth);
            let resp = if ok {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = reader.get_mut().write_all(resp.as_bytes());
        }
    });
    CredentialsServer {
        uri: format!("http://{addr}/v2/credentials/task-role"),
        requests,
    }
}
