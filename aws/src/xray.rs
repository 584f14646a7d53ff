//! X-Ray export: invocation spans become segments, their platform-phase and init spans
//! subsegments, under the original X-Ray trace ids (the extension took them from
//! `platform.start.tracing`, so they join the function's own trace).
//!
//! Limits enforced here: a segment document is at most 64 KiB (a larger one is sent as the segment
//! plus independent subsegment documents), at most [`MAX_DOCS_PER_CALL`] documents per
//! `PutTraceSegments`, and trace ids whose time prefix X-Ray would refuse (more than 30 days from
//! now, e.g. random W3C ids) are skipped and counted rather than sent to fail.

use std::collections::HashMap;

use lambdawatch_semconv::{attr, otlp, span_type, xray as ids};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value, json};

use crate::client::{AwsCounters, AwsSettings};

pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
pub const MAX_DOCS_PER_CALL: usize = 50;
const MAX_TRACE_AGE_SECS: i64 = 30 * 86_400;

/// Documents ready to send, and what was left out.
#[derive(Debug, Default)]
pub struct Converted {
    pub documents: Vec<String>,
    pub skipped_trace_id: usize,
    pub split_oversize: usize,
}

/// Converts the spans of one OTLP request into segment documents.
pub fn segments(req: &ExportTraceServiceRequest, now_secs: i64) -> Converted {
    let mut out = Converted::default();
    for rs in &req.resource_spans {
        let rattrs = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let function = otlp::function_name(rattrs).unwrap_or("lambda");
        let spans: Vec<&Span> = rs.scope_spans.iter().flat_map(|s| &s.spans).collect();
        let by_id: HashMap<&[u8], &Span> =
            spans.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
        let mut children: HashMap<&[u8], Vec<&Span>> = HashMap::new();
        for s in &spans {
            if by_id.contains_key(s.parent_span_id.as_slice()) {
                children
                    .entry(s.parent_span_id.as_slice())
                    .or_default()
                    .push(s);
            }
        }
        for s in spans
            .iter()
            .filter(|s| !by_id.contains_key(s.parent_span_id.as_slice()))
        {
            let Ok(trace) = <[u8; 16]>::try_from(s.trace_id.as_slice()) else {
                out.skipped_trace_id += 1;
                continue;
            };
            let epoch = i64::from(u32::from_be_bytes([trace[0], trace[1], trace[2], trace[3]]));
            if (now_secs - epoch).abs() > MAX_TRACE_AGE_SECS {
                out.skipped_trace_id += 1;
                continue;
            }
            let trace_id = ids::root_from_trace_id(&trace);
            let is_segment = otlp::get_str(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE)
                == Some(span_type::INVOCATION)
                || s.parent_span_id.is_empty();
            let mut doc = document(s, if is_segment { function } else { &s.name });
            doc.insert("trace_id".into(), json!(trace_id));
            if !s.parent_span_id.is_empty() {
                doc.insert("parent_id".into(), json!(ids::to_hex(&s.parent_span_id)));
            }
            if is_segment {
                doc.insert("origin".into(), json!("AWS::Lambda::Function"));
            } else {
                doc.insert("type".into(), json!("subsegment"));
            }
            let subs = subsegments(s, &children);
            if !subs.is_empty() {
                doc.insert("subsegments".into(), Value::Array(subs.clone()));
            }
            let text = Value::Object(doc.clone()).to_string();
            if text.len() <= MAX_DOCUMENT_BYTES {
                out.documents.push(text);
                continue;
            }
            // Too large: the segment alone, then each direct child as its own document.
            out.split_oversize += 1;
            doc.remove("subsegments");
            doc.remove("metadata");
            out.documents.push(Value::Object(doc).to_string());
            for c in children.get(s.span_id.as_slice()).into_iter().flatten() {
                let mut d = document(c, &c.name);
                d.remove("metadata");
                d.insert("type".into(), json!("subsegment"));
                d.insert("trace_id".into(), json!(trace_id));
                d.insert("parent_id".into(), json!(ids::to_hex(&s.span_id)));
                out.documents.push(Value::Object(d).to_string());
            }
        }
    }
    out
}

fn subsegments(s: &Span, children: &HashMap<&[u8], Vec<&Span>>) -> Vec<Value> {
    children
        .get(s.span_id.as_slice())
        .into_iter()
        .flatten()
        .map(|c| {
            let mut d = document(c, &c.name);
            let nested = subsegments(c, children);
            if !nested.is_empty() {
                d.insert("subsegments".into(), Value::Array(nested));
            }
            Value::Object(d)
        })
        .collect()
}

/// The fields every segment and subsegment shares.
fn document(s: &Span, name: &str) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("name".into(), json!(xray_name(name)));
    d.insert("id".into(), json!(ids::to_hex(&s.span_id)));
    d.insert(
        "start_time".into(),
        json!(s.start_time_unix_nano as f64 / 1e9),
    );
    d.insert(
        "end_time".into(),
        json!(s.end_time_unix_nano.max(s.start_time_unix_nano) as f64 / 1e9),
    );
    let outcome = otlp::get_str(&s.attributes, attr::AWS_LAMBDA_OUTCOME);
    let mut ann = Map::new();
    if let Some(o) = outcome {
        ann.insert("outcome".into(), json!(o));
    }
    if let Some(c) = otlp::get_bool(&s.attributes, attr::FAAS_COLDSTART) {
        ann.insert("coldstart".into(), json!(c));
    }
    if let Some(id) = otlp::get_str(&s.attributes, attr::FAAS_INVOCATION_ID) {
        ann.insert("invocation_id".into(), json!(id));
    }
    if !ann.is_empty() {
        d.insert("annotations".into(), Value::Object(ann));
    }
    if matches!(outcome, Some("error" | "timeout" | "failure")) {
        d.insert("fault".into(), json!(true));
        let msg = otlp::get_str(&s.attributes, attr::AWS_LAMBDA_ERROR_TYPE)
            .unwrap_or(outcome.unwrap_or("error"));
        d.insert("cause".into(), json!({"exceptions": [{"message": msg}]}));
    }
    let meta: Map<String, Value> = s
        .attributes
        .iter()
        .filter_map(|kv| {
            let v = kv.value.as_ref()?.value.as_ref()?;
            use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
            let j = match v {
                V::StringValue(x) => json!(x),
                V::IntValue(x) => json!(x),
                V::DoubleValue(x) => json!(x),
                V::BoolValue(x) => json!(x),
                _ => return None,
            };
            Some((kv.key.clone(), j))
        })
        .collect();
    if !meta.is_empty() {
        d.insert("metadata".into(), json!({"lambdawatch": meta}));
    }
    d
}

/// X-Ray names: at most 200 characters of letters, digits, whitespace and `_.:/%&#=+\-@`.
fn xray_name(n: &str) -> String {
    let cleaned: String = n
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/%&#=+\\-@".contains(*c))
        .take(200)
        .collect();
    if cleaned.is_empty() {
        "lambda".into()
    } else {
        cleaned
    }
}

#[derive(Debug, thiserror::Error)]
#[error("PutTraceSegments failed: {0}")]
pub struct XrayError(String);

pub struct XraySink {
    client: aws_sdk_xray::Client,
}

impl XraySink {
    pub async fn new(settings: &AwsSettings, counters: &AwsCounters) -> Self {
        let sdk = settings.load().await;
        let conf = aws_sdk_xray::config::Builder::from(&sdk)
            .interceptor(counters.interceptor())
            .build();
        Self {
            client: aws_sdk_xray::Client::from_conf(conf),
        }
    }

    /// Sends `documents`; returns how many X-Ray left unprocessed.
    pub async fn put(&self, documents: Vec<String>) -> Result<usize, XrayError> {
        let mut unprocessed = 0;
        for chunk in documents.chunks(MAX_DOCS_PER_CALL) {
            let resp = self
                .client
                .put_trace_segments()
                .set_trace_segment_documents(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| XrayError(aws_sdk_xray::error::DisplayErrorContext(e).to_string()))?;
            unprocessed += resp.unprocessed_trace_segments().len();
        }
        Ok(unprocessed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    const NOW: i64 = 1_795_975_600;

    fn span(id: u8, parent: Option<u8>, name: &str, ty: &str) -> Span {
        let mut trace = [0u8; 16];
        trace[..4].copy_from_slice(&(NOW as u32).to_be_bytes());
        trace[15] = 9;
        Span {
            trace_id: trace.to_vec(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: parent
                .map(|p| vec![0, 0, 0, 0, 0, 0, 0, p])
                .unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: (NOW as u64) * 1_000_000_000,
            end_time_unix_nano: (NOW as u64) * 1_000_000_000 + 250_000_000,
            attributes: vec![otlp::kv_str(attr::LAMBDAWATCH_SPAN_TYPE, ty)],
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![otlp::kv_str(attr::FAAS_NAME, "orders")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn invocation_becomes_a_segment_with_phase_subsegments() {
        let mut inv = span(1, Some(0x42), "orders", span_type::INVOCATION);
        inv.attributes
            .push(otlp::kv_str(attr::AWS_LAMBDA_OUTCOME, "error"));
        inv.attributes.push(otlp::kv_str(
            attr::AWS_LAMBDA_ERROR_TYPE,
            "Runtime.Unhandled",
        ));
        let c = segments(
            &request(vec![
                inv,
                span(2, Some(1), "responseLatency", span_type::PHASE),
            ]),
            NOW,
        );
        assert_eq!(c.documents.len(), 1);
        let d: Value = serde_json::from_str(&c.documents[0]).unwrap();
        assert_eq!(d["name"], "orders");
        assert_eq!(
            d["trace_id"],
            format!("1-{:08x}-000000000000000000000009", NOW)
        );
        assert_eq!(d["id"], "0000000000000001");
        assert_eq!(d["parent_id"], "0000000000000042");
        assert_eq!(d["fault"], true);
        assert_eq!(d["cause"]["exceptions"][0]["message"], "Runtime.Unhandled");
        assert_eq!(d["subsegments"][0]["name"], "responseLatency");
        assert!(
            (d["end_time"].as_f64().unwrap() - d["start_time"].as_f64().unwrap() - 0.25).abs()
                < 1e-6
        );
    }

    #[test]
    fn orphan_child_is_an_independent_subsegment() {
        let c = segments(
            &request(vec![span(2, Some(1), "runtimeOverhead", span_type::PHASE)]),
            NOW,
        );
        let d: Value = serde_json::from_str(&c.documents[0]).unwrap();
        assert_eq!(d["type"], "subsegment");
        assert_eq!(d["parent_id"], "0000000000000001");
    }

    #[test]
    fn random_w3c_ids_are_skipped_and_counted() {
        let mut s = span(1, None, "orders", span_type::INVOCATION);
        s.trace_id = vec![0xff; 16];
        let c = segments(&request(vec![s]), NOW);
        assert!(c.documents.is_empty());
        assert_eq!(c.skipped_trace_id, 1);
    }

    #[test]
    fn oversize_documents_are_split_under_the_limit() {
        let mut spans = vec![span(1, None, "orders", span_type::INVOCATION)];
        for i in 2..200u8 {
            let mut c = span(i, Some(1), "responseLatency", span_type::PHASE);
            c.attributes.push(otlp::kv_str("blob", "y".repeat(600)));
            spans.push(c);
        }
        let c = segments(&request(spans), NOW);
        assert_eq!(c.split_oversize, 1);
        assert_eq!(c.documents.len(), 199);
        assert!(c.documents.iter().all(|d| d.len() <= MAX_DOCUMENT_BYTES));
    }
}
