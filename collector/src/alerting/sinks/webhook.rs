//! Generic JSON webhook sink: `POST {url}` with `{"version": "1", "alerts": [Alert, …]}`, each
//! alert exactly as [`Alert`] serialises (fingerprint, status, times, labels, summary,
//! description, evidence, runbook_url).
//!
//! With a secret configured, the body is signed: header
//! `X-Lambdawatch-Signature: sha256=<lower-case hex of HMAC-SHA256(secret, raw body)>`. A
//! receiver recomputes the HMAC over the bytes it received and compares in constant time.

use super::http::{HttpTarget, SinkConfigError};
use super::{DeliveryError, Sink};
use crate::alerting::alert::{Alert, hex};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use serde::Serialize;
use sha2::Sha256;
use std::time::Duration;

/// The signature header (lower-case on the wire, as HTTP/2 requires; case-insensitive in HTTP/1).
pub const SIGNATURE_HEADER: &str = "x-lambdawatch-signature";

/// Settings of the webhook sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    /// HMAC key; `None` sends unsigned.
    pub secret: Option<String>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct WebhookSink {
    name: String,
    target: HttpTarget,
    secret: Option<Vec<u8>>,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> Result<Self, SinkConfigError> {
        if config.secret.as_deref() == Some("") {
            return Err(SinkConfigError::Invalid {
                sink: "webhook",
                reason: "the signing secret is empty (omit it to send unsigned)".into(),
            });
        }
        Ok(Self {
            name: "webhook".to_owned(),
            target: HttpTarget::new("webhook", &config.url, "", config.timeout)?,
            secret: config.secret.map(String::into_bytes),
        })
    }

    /// Renames the sink (its `sink` label), to tell several webhooks apart.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    version: &'static str,
    alerts: &'a [Alert],
}

/// The request body for a batch.
pub fn webhook_payload(alerts: &[Alert]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        version: "1",
        alerts,
    })
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        let body = webhook_payload(alerts)
            .map_err(|e| DeliveryError::permanent(format!("cannot encode alerts: {e}")))?;
        let mut headers = Vec::new();
        if let Some(secret) = &self.secret {
            let value = HeaderValue::from_str(&sign(secret, &body))
                .map_err(|e| DeliveryError::permanent(format!("signature header: {e}")))?;
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), value));
        }
        self.target.post_json(Bytes::from(body), &headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::alert::tests_support::sample_alert;
    use crate::alerting::sinks::golden;

    #[test]
    fn payload_matches_the_golden_file() {
        let body = webhook_payload(&[sample_alert("checkout")]).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        golden::check(
            "webhook.json",
            &serde_json::to_string_pretty(&value).unwrap_or_default(),
        );
    }

    #[test]
    fn signature_matches_rfc4231_vectors() {
        // RFC 4231 test case 2 (key "Jefe") — an HMAC-SHA256 computed outside this code.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 1: 20 bytes of 0x0b, "Hi There".
        assert_eq!(
            sign(&[0x0b; 20], b"Hi There"),
            "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn empty_secret_and_https_are_refused() {
        let cfg = WebhookConfig {
            url: "http://127.0.0.1:1/h".into(),
            secret: Some(String::new()),
            timeout: Duration::from_secs(1),
        };
        assert!(WebhookSink::new(cfg.clone()).is_err());
        assert!(
            WebhookSink::new(WebhookConfig {
                secret: None,
                url: "https://x/h".into(),
                ..cfg.clone()
            })
            .is_err()
        );
        assert!(
            WebhookSink::new(WebhookConfig {
                secret: Some("s".into()),
                ..cfg
            })
            .is_ok()
        );
    }
}
