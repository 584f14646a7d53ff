//! SNS as an alert sink: one `Publish` per alert notification, with message attributes so
//! subscribers can filter (`severity`, `slo`, `function`, `status`, `alertname`).
//!
//! [`fit`] keeps every message inside SNS's limit (262,144 bytes for the message and its
//! attributes together) and the subject inside 100 printable ASCII characters; an oversize alert
//! keeps its labels, status, summary and runbook and says it was truncated.

use std::collections::BTreeMap;

use aws_sdk_sns::types::MessageAttributeValue;
use serde_json::{Value, json};

use crate::client::{AwsCounters, AwsSettings};

pub const MAX_MESSAGE_BYTES: usize = 262_144;
pub const MAX_SUBJECT_CHARS: usize = 100;

/// An alert as SNS carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnsAlert {
    pub subject: String,
    pub message: Value,
    pub attributes: BTreeMap<String, String>,
}

/// What is actually published.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub subject: String,
    pub message: String,
    pub attributes: BTreeMap<String, String>,
    pub truncated: bool,
}

pub fn fit(a: &SnsAlert) -> Fitted {
    let subject: String = a
        .subject
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(MAX_SUBJECT_CHARS)
        .collect();
    let attr_bytes: usize = a
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + "String".len())
        .sum();
    let budget = MAX_MESSAGE_BYTES.saturating_sub(attr_bytes);
    let full = a.message.to_string();
    if full.len() <= budget {
        return Fitted {
            subject,
            message: full,
            attributes: a.attributes.clone(),
            truncated: false,
        };
    }
    let keep = |k: &str| a.message.get(k).cloned().unwrap_or(Value::Null);
    let mut reduced = json!({
        "status": keep("status"),
        "labels": keep("labels"),
        "summary": keep("summary"),
        "runbook_url": keep("runbook_url"),
        "truncated": true,
    })
    .to_string();
    if reduced.len() > budget {
        let mut cut = budget;
        while !reduced.is_char_boundary(cut) {
            cut -= 1;
        }
        reduced.truncate(cut);
    }
    Fitted {
        subject,
        message: reduced,
        attributes: a.attributes.clone(),
        truncated: true,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    #[error("SNS Publish failed: {0}")]
    Call(String),
    #[error("building a message attribute: {0}")]
    Build(String),
}

pub struct SnsPublisher {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsPublisher {
    pub async fn new(settings: &AwsSettings, counters: &AwsCounters, topic_arn: String) -> Self {
        let sdk = settings.load().await;
        let conf = aws_sdk_sns::config::Builder::from(&sdk)
            .interceptor(counters.interceptor())
            .build();
        Self {
            client: aws_sdk_sns::Client::from_conf(conf),
            topic_arn,
        }
    }

    /// Publishes one alert; returns the SNS message id and whether it had to be truncated.
    pub async fn publish(&self, alert: &SnsAlert) -> Result<(String, bool), SnsError> {
        let f = fit(alert);
        let mut req = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(f.message)
            .subject(f.subject);
        for (k, v) in &f.attributes {
            let mav = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| SnsError::Build(e.to_string()))?;
            req = req.message_attributes(k, mav);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SnsError::Call(aws_sdk_sns::error::DisplayErrorContext(e).to_string()))?;
        Ok((
            resp.message_id().unwrap_or_default().to_owned(),
            f.truncated,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(desc_len: usize) -> SnsAlert {
        SnsAlert {
            subject: "[FIRING] error_rate orders\nline two é".into(),
            message: json!({"status": "firing", "labels": {"slo": "error_rate"}, "summary": "s", "runbook_url": "u", "description": "d".repeat(desc_len)}),
            attributes: [("severity".to_owned(), "page".to_owned())].into(),
        }
    }

    #[test]
    fn small_alerts_pass_untouched_subject_is_cleaned() {
        let f = fit(&alert(10));
        assert!(!f.truncated);
        assert_eq!(f.subject, "[FIRING] error_rate orders line two  ");
        assert_eq!(
            serde_json::from_str::<Value>(&f.message).unwrap()["description"],
            "dddddddddd"
        );
    }

    #[test]
    fn oversize_alerts_keep_the_essentials_within_the_limit() {
        let f = fit(&alert(300_000));
        assert!(f.truncated);
        assert!(f.message.len() + 20 <= MAX_MESSAGE_BYTES);
        let v: Value = serde_json::from_str(&f.message).unwrap();
        assert_eq!(v["labels"]["slo"], "error_rate");
        assert_eq!(v["runbook_url"], "u");
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn subject_is_capped_at_100() {
        let mut a = alert(1);
        a.subject = "x".repeat(500);
        assert_eq!(fit(&a).subject.len(), MAX_SUBJECT_CHARS);
    }
}
