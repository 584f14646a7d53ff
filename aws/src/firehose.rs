//! The Kinesis Data Firehose HTTP-endpoint receiver for CloudWatch Metric Streams (the push
//! alternative to polling).
//!
//! Consumes one Firehose delivery request (headers + JSON body, the documented
//! `{"requestId", "timestamp", "records": [{"data": base64}]}`); each record holds one or more
//! length-delimited (`UnsignedVarInt32` prefix) OpenTelemetry 1.0.0 `ExportMetricsServiceRequest`s.
//! Produces the documented response (`{"requestId", "timestamp"}`, plus `errorMessage` on error)
//! and the [`PlatformCount`]s found. A bad access key is 401; a body that is not the documented
//! JSON is 400 and nothing of it is used; a record that does not decode is counted in
//! [`Delivery::bad_records`] and the other records are still used (Firehose would otherwise
//! redeliver the good ones forever).

use base64::Engine;
use lambdawatch_semconv::cloudwatch::{PlatformCount, StreamOrigin, parse_request};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use serde::{Deserialize, Serialize};

pub const HEADER_ACCESS_KEY: &str = "x-amz-firehose-access-key";
pub const HEADER_REQUEST_ID: &str = "x-amz-firehose-request-id";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestBody {
    request_id: String,
    #[allow(dead_code)]
    timestamp: i64,
    records: Vec<Record>,
}

#[derive(Debug, Deserialize)]
struct Record {
    data: String,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResponseBody {
    pub request_id: String,
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// What one delivery gave.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Every Metric-Streams point found, with the stream's origin (account, region).
    pub counts: Vec<(StreamOrigin, PlatformCount)>,
    pub records: usize,
    pub requests_decoded: usize,
    pub bad_records: usize,
    /// Summary points without `Namespace`/`MetricName` (not Metric Streams data).
    pub foreign_points: usize,
}

/// Handles one delivery. `access_key` is the configured key (`None`: not checked).
/// Returns the HTTP status, the response body, and what was received.
pub fn handle(
    header_access_key: Option<&str>,
    header_request_id: Option<&str>,
    access_key: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> (u16, ResponseBody, Delivery) {
    let respond = |status: u16, id: &str, err: Option<String>, d: Delivery| {
        (
            status,
            ResponseBody {
                request_id: id.to_owned(),
                timestamp: now_ms,
                error_message: err,
            },
            d,
        )
    };
    let header_id = header_request_id.unwrap_or_default();
    if let Some(expected) = access_key
        && !constant_time_eq(
            header_access_key.unwrap_or_default().as_bytes(),
            expected.as_bytes(),
        )
    {
        return respond(
            401,
            header_id,
            Some("invalid X-Amz-Firehose-Access-Key".into()),
            Delivery::default(),
        );
    }
    let req: RequestBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return respond(
                400,
                header_id,
                Some(format!("not a Firehose delivery request: {e}")),
                Delivery::default(),
            );
        }
    };
    let id = if header_id.is_empty() {
        req.request_id.clone()
    } else {
        header_id.to_owned()
    };
    let mut d = Delivery {
        records: req.records.len(),
        ..Delivery::default()
    };
    for rec in &req.records {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(rec.data.as_bytes())
        else {
            d.bad_records += 1;
            continue;
        };
        match decode_record(&bytes) {
            Ok(reqs) => {
                for r in &reqs {
                    let points = count_summary_points(r);
                    let parsed = parse_request(r);
                    d.foreign_points += points.saturating_sub(parsed.len());
                    d.counts.extend(parsed);
                }
                d.requests_decoded += reqs.len();
            }
            Err(_) => d.bad_records += 1,
        }
    }
    respond(200, &id, None, d)
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record shorter than its length prefix")]
    Truncated,
    #[error("not an ExportMetricsServiceRequest: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Splits one record into its length-delimited requests.
pub fn decode_record(mut bytes: &[u8]) -> Result<Vec<ExportMetricsServiceRequest>, RecordError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = prost::encoding::decode_varint(&mut bytes)? as usize;
        if len > bytes.len() {
            return Err(RecordError::Truncated);
        }
        let (msg, rest) = bytes.split_at(len);
        out.push(ExportMetricsServiceRequest::decode(msg)?);
        bytes = rest;
    }
    Ok(out)
}

/// Encodes requests as one record (what Metric Streams writes), for tests and the sandbox.
pub fn encode_record(reqs: &[ExportMetricsServiceRequest]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in reqs {
        // Writing into a Vec cannot fail.
        let _ = r.encode_length_delimited(&mut out);
    }
    out
}

fn count_summary_points(r: &ExportMetricsServiceRequest) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(Data::Summary(s)) => s.data_points.len(),
            _ => 0,
        })
        .sum()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambdawatch_semconv::cloudwatch::{self as cw, StreamOrigin, build_request};

    fn body(records: &[Vec<u8>]) -> Vec<u8> {
        let recs: Vec<_> = records
            .iter()
            .map(|r| serde_json::json!({"data": base64::engine::general_purpose::STANDARD.encode(r)}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"requestId": "req-1", "timestamp": 1578090901599i64, "records": recs})).unwrap()
    }

    fn stream_record() -> Vec<u8> {
        let o = StreamOrigin {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
        };
        let a = build_request(
            &o,
            &[PlatformCount::lambda(
                cw::THROTTLES,
                "f",
                0,
                60_000_000_000,
                4.0,
            )],
        );
        let b = build_request(
            &o,
            &[PlatformCount::lambda(
                cw::DEAD_LETTER_ERRORS,
                "f",
                0,
                60_000_000_000,
                1.0,
            )],
        );
        encode_record(&[a, b])
    }

    #[test]
    fn documented_delivery_is_decoded() {
        let (status, resp, d) = handle(
            Some("k"),
            Some("req-1"),
            Some("k"),
            &body(&[stream_record()]),
            7,
        );
        assert_eq!(status, 200);
        assert_eq!(
            resp,
            ResponseBody {
                request_id: "req-1".into(),
                timestamp: 7,
                error_message: None
            }
        );
        assert_eq!(d.requests_decoded, 2);
        assert_eq!(d.counts.len(), 2);
        assert_eq!(d.counts[0].0.account_id, "123456789012");
        assert_eq!(d.counts[0].1.metric_name, cw::THROTTLES);
        assert_eq!(d.counts[0].1.sum, 4.0);
    }

    #[test]
    fn wrong_access_key_is_401_and_uses_nothing() {
        let (status, resp, d) = handle(
            Some("nope"),
            Some("req-1"),
            Some("k"),
            &body(&[stream_record()]),
            7,
        );
        assert_eq!(status, 401);
        assert!(resp.error_message.is_some());
        assert!(d.counts.is_empty());
        let (status, ..) = handle(None, Some("req-1"), Some("k"), &body(&[stream_record()]), 7);
        assert_eq!(status, 401);
    }

    #[test]
    fn malformed_body_is_400() {
        let (status, resp, _) = handle(None, Some("r"), None, b"{not json", 7);
        assert_eq!(status, 400);
        assert_eq!(resp.request_id, "r");
        assert!(
            resp.error_message
                .unwrap()
                .contains("not a Firehose delivery request")
        );
    }

    #[test]
    fn a_bad_record_loses_nothing_else() {
        let mut truncated = stream_record();
        truncated.truncate(5);
        let (status, _, d) = handle(None, None, None, &body(&[truncated, stream_record()]), 7);
        assert_eq!(status, 200);
        assert_eq!(d.bad_records, 1);
        assert_eq!(d.counts.len(), 2);
    }
}
