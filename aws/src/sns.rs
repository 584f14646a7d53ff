//! SNS as an alert sink: one `Publish` per alert notification, with message attributes so
//! subscribers can filter (`severity`, `slo`, `function`, `status`, `alertname`).
//!
//! [`fit`] keeps every message inside SNS's limit (262,144 bytes for the message and its
//! attributes together) and the subject inside 100 printable ASCII characters; an oversize alert
//! stays valid JSON with every field, its longest strings cut (largest first) until it fits, and
//! says so in `truncated` / `truncation` (how large it was, which fields were cut).

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

/// The longest message attribute value kept; a longer one is cut (attributes count towards
/// [`MAX_MESSAGE_BYTES`] and are for filtering, not for reading).
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut_to(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The largest string in `v` (bytes), with its JSON path (`labels.context`, `items[2]`).
fn largest_string<'a>(v: &'a mut Value, path: String) -> Option<(usize, String, &'a mut String)> {
    match v {
        Value::String(s) => Some((s.len(), path, s)),
        Value::Object(m) => {
            let mut best: Option<(usize, String, &'a mut String)> = None;
            for (k, child) in m.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Some(c) = largest_string(child, p)
                    && best.as_ref().is_none_or(|b| c.0 > b.0)
                {
                    best = Some(c);
                }
            }
            best
        }
        Value::Array(items) => {
            let mut best: Option<(usize, String, &'a mut String)> = None;
            for (i, child) in items.iter_mut().enumerate() {
                if let Some(c) = largest_string(child, format!("{path}[{i}]"))
                    && best.as_ref().is_none_or(|b| c.0 > b.0)
                {
                    best = Some(c);
                }
            }
            best
        }
        _ => None,
    }
}

/// Fits an alert into one SNS message. A message that fits is sent as is. An oversize one stays
/// valid JSON with every field: its longest strings are cut (largest first, each ending in
/// `…[cut N bytes]`) until it fits, and it gains `"truncated": true` and a `"truncation"` note
/// saying how large it was and which fields were cut. Attribute values are capped at
/// [`MAX_ATTRIBUTE_BYTES`]; the subject at 100 printable ASCII characters.
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
    let mut attributes = a.attributes.clone();
    let mut cut_attribute = false;
    for v in attributes.values_mut() {
        if v.len() > MAX_ATTRIBUTE_BYTES {
            cut_to(v, MAX_ATTRIBUTE_BYTES);
            cut_attribute = true;
        }
    }
    let attr_bytes: usize = attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + "String".len())
        .sum();
    let budget = MAX_MESSAGE_BYTES.saturating_sub(attr_bytes);
    let full = a.message.to_string();
    if full.len() <= budget && !cut_attribute {
        return Fitted {
            subject,
            message: full,
            attributes,
            truncated: false,
        };
    }
    // Room for the note added at the end (its fields are listed, so a bound per field).
    let note = |cut: &[String]| {
        format!(
            "this alert was {} bytes; SNS allows {MAX_MESSAGE_BYTES} bytes for the message and its \
             attributes, so these fields were cut: {}",
            full.len(),
            if cut.is_empty() {
                "(none; attribute values over 1024 bytes)".to_owned()
            } else {
                cut.join(", ")
            }
        )
    };
    let mut msg = match &a.message {
        Value::Object(_) => a.message.clone(),
        other => json!({ "message": other }),
    };
    let mut cut_fields: Vec<String> = Vec::new();
    // Each round cuts the largest string by at least the excess, so a few rounds suffice; the
    // bound only guards against a message of countless small strings.
    for _ in 0..64 {
        let reserve = note(&cut_fields).len() + 64 + 48;
        let len = msg.to_string().len();
        if len + reserve <= budget {
            break;
        }
        let excess = len + reserve - budget;
        let Some((n, path, s)) = largest_string(&mut msg, String::new()) else {
            break;
        };
        if n <= 64 {
            break;
        }
        let keep = n.saturating_sub(excess + 32).max(32).min(n);
        cut_to(s, keep);
        let removed = n - s.len();
        s.push_str(&format!("…[cut {removed} bytes]"));
        if !cut_fields.contains(&path) {
            cut_fields.push(path);
        }
    }
    if let Value::Object(m) = &mut msg {
        m.insert("truncated".into(), Value::Bool(true));
        m.insert("truncation".into(), Value::String(note(&cut_fields)));
    }
    let mut message = msg.to_string();
    if message.len() > budget {
        // Countless small fields (every string ≤ 64 bytes, so these few are small): only the
        // essentials, still JSON.
        let keep = |k: &str| a.message.get(k).cloned().unwrap_or(Value::Null);
        message = json!({
            "status": keep("status"),
            "summary": keep("summary"),
            "runbook_url": keep("runbook_url"),
            "truncated": true,
            "truncation": format!("this alert was {} bytes; SNS allows {MAX_MESSAGE_BYTES}: only status, summary and runbook kept", full.len()),
        })
        .to_string();
    }
    Fitted {
        subject,
        message,
        attributes,
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

    /// Within the limit with the attributes, valid JSON, every field kept, the cut stated.
    fn check_fitted(a: &SnsAlert) -> (Fitted, Value) {
        let f = fit(a);
        assert!(f.truncated);
        let attr: usize = f
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + "String".len())
            .sum();
        assert!(
            f.message.len() + attr <= MAX_MESSAGE_BYTES,
            "{} + {attr} bytes",
            f.message.len()
        );
        let v: Value = serde_json::from_str(&f.message).expect("still JSON");
        assert_eq!(v["truncated"], true);
        assert!(
            v["truncation"]
                .as_str()
                .unwrap()
                .contains("SNS allows 262144 bytes"),
            "{}",
            v["truncation"]
        );
        (f, v)
    }

    #[test]
    fn oversize_alerts_stay_json_keep_every_field_and_say_what_was_cut() {
        // A long description; a huge label; a huge label of multi-byte characters and quotes
        // (escaped in JSON: longer serialized than raw); several large fields at once.
        let mut labels_big = alert(10);
        labels_big.message["labels"]["context"] = Value::String("x".repeat(400_000));
        let mut escaped = alert(10);
        escaped.message["labels"]["context"] = Value::String("é\"\n".repeat(120_000));
        let mut several = alert(200_000);
        several.message["labels"]["a"] = Value::String("a".repeat(150_000));
        several.message["evidence"] = json!({"notes": "n".repeat(100_000), "total": 7});
        for (name, a, cut) in [
            ("description", alert(300_000), vec!["description"]),
            ("label", labels_big, vec!["labels.context"]),
            ("escaped label", escaped, vec!["labels.context"]),
            // Cutting the largest (the description) by the excess is enough: the label stays.
            ("several", several, vec!["description"]),
        ] {
            let (_, v) = check_fitted(&a);
            assert_eq!(v["labels"]["slo"], "error_rate", "{name}");
            assert_eq!(v["runbook_url"], "u", "{name}");
            assert_eq!(v["status"], "firing", "{name}");
            let note = v["truncation"].as_str().unwrap();
            for field in cut {
                assert!(note.contains(field), "{name}: {note}");
            }
            if name == "several" {
                assert_eq!(v["labels"]["a"].as_str().unwrap().len(), 150_000);
                assert_eq!(v["evidence"]["notes"].as_str().unwrap().len(), 100_000);
            }
            let total = a.message.to_string().len();
            assert!(
                note.contains(&format!("was {total} bytes")),
                "{name}: {note}"
            );
        }
    }

    #[test]
    fn long_attribute_values_are_capped() {
        let mut a = alert(10);
        a.attributes.insert("function".into(), "f".repeat(5000));
        let (f, v) = check_fitted(&a);
        assert_eq!(f.attributes["function"].len(), MAX_ATTRIBUTE_BYTES);
        assert_eq!(
            v["description"], "dddddddddd",
            "the message itself was not cut"
        );
    }

    #[test]
    fn subject_is_capped_at_100() {
        let mut a = alert(1);
        a.subject = "x".repeat(500);
        assert_eq!(fit(&a).subject.len(), MAX_SUBJECT_CHARS);
    }
}
