//! Log records written straight into OTLP protobuf bytes.
//!
//! Consumes the pieces `translate` finds in a log line (times, severity, body, attributes, trace
//! context); produces an [`EncodedLog`]: the bytes of one `opentelemetry.proto.logs.v1.LogRecord`
//! message (without its own tag and length), which the [`crate::buffer::Buffer`] holds and
//! [`crate::export`] frames into the request as is. No state, nothing to fill.
//!
//! Why not build a prost `LogRecord` and encode it: a plain log line then costs about nine
//! allocations (severity text, attribute vector, owned keys and values, trace and span id
//! vectors) plus two full length computations (buffer accounting, then export), and the record
//! is moved several times as a 200-byte struct. Written here it costs one allocation, and its
//! length is the vector's length. This is the plain-line hot path of the throughput target in
//! `extension/benches/RESULTS.md`.
//!
//! The bytes are exactly what prost writes for the same `LogRecord` (fields in tag order, empty
//! scalar and string fields omitted, a present `AnyValue` one-of always written):
//! `tests::writer_output_is_what_prost_writes` decodes them and checks that prost's re-encoding
//! is byte-identical, for every kind of field. [`LogWriter`]'s methods must be called in the
//! order they are declared (field-number order); each is optional.

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue},
    logs::v1::LogRecord,
};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use serde_json::Value;

/// One encoded `LogRecord` message body.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EncodedLog(Vec<u8>);

impl EncodedLog {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The record as prost's type (tests, debugging; never on the data path).
    pub fn decode(&self) -> Result<LogRecord, prost::DecodeError> {
        LogRecord::decode(self.0.as_slice())
    }
}

impl From<LogRecord> for EncodedLog {
    fn from(l: LogRecord) -> Self {
        Self(l.encode_to_vec())
    }
}

impl From<&LogRecord> for EncodedLog {
    fn from(l: &LogRecord) -> Self {
        Self(l.encode_to_vec())
    }
}

impl std::fmt::Debug for EncodedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.decode() {
            Ok(l) => l.fmt(f),
            Err(e) => write!(f, "EncodedLog(undecodable {} bytes: {e})", self.0.len()),
        }
    }
}

// Field numbers of `LogRecord`, `KeyValue` and `AnyValue` (opentelemetry/proto/logs/v1,
// common/v1).
const LR_TIME: u32 = 1;
const LR_SEVERITY_NUMBER: u32 = 2;
const LR_SEVERITY_TEXT: u32 = 3;
const LR_BODY: u32 = 5;
const LR_ATTRIBUTES: u32 = 6;
const LR_TRACE_ID: u32 = 9;
const LR_SPAN_ID: u32 = 10;
const LR_OBSERVED_TIME: u32 = 11;
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;

const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
const ANY_ARRAY: u32 = 5;
const ANY_KVLIST: u32 = 6;
/// `ArrayValue.values` and `KeyValueList.values`.
const LIST_VALUES: u32 = 1;

/// A JSON number as OTLP: `IntValue` when it fits an `i64`, else `DoubleValue`.
fn number(n: &serde_json::Number) -> Result<i64, f64> {
    n.as_i64().ok_or_else(|| n.as_f64().unwrap_or(0.0))
}

/// Encoded length of the `AnyValue` message for `v` (without its own tag and length).
fn any_len(v: &Value) -> usize {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 2,
        Value::Number(n) => match number(n) {
            Ok(i) => 1 + encoded_len_varint(i as u64),
            Err(_) => 9,
        },
        Value::String(s) => framed_len(s.len()),
        Value::Array(a) => framed_len(a.iter().map(|x| framed_len(any_len(x))).sum()),
        Value::Object(o) => framed_len(o.iter().map(|(k, x)| framed_len(kv_len(k, x))).sum()),
    }
}

/// Encoded length of a `KeyValue { key, value: Some(any(v)) }`.
fn kv_len(key: &str, v: &Value) -> usize {
    let key_part = if key.is_empty() {
        0
    } else {
        framed_len(key.len())
    };
    key_part + framed_len(any_len(v))
}

#[inline]
fn write_delimited(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn write_any(v: &Value, buf: &mut Vec<u8>) {
    match v {
        Value::Null => {}
        Value::Bool(b) => {
            encode_key(ANY_BOOL, WireType::Varint, buf);
            buf.push(u8::from(*b));
        }
        Value::Number(n) => match number(n) {
            Ok(i) => {
                encode_key(ANY_INT, WireType::Varint, buf);
                encode_varint(i as u64, buf);
            }
            Err(f) => {
                encode_key(ANY_DOUBLE, WireType::SixtyFourBit, buf);
                buf.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        },
        Value::String(s) => {
            write_delimited(ANY_STRING, s.len(), buf);
            buf.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            write_delimited(
                ANY_ARRAY,
                a.iter().map(|x| framed_len(any_len(x))).sum(),
                buf,
            );
            for x in a {
                write_delimited(LIST_VALUES, any_len(x), buf);
                write_any(x, buf);
            }
        }
        Value::Object(o) => {
            write_delimited(
                ANY_KVLIST,
                o.iter().map(|(k, x)| framed_len(kv_len(k, x))).sum(),
                buf,
            );
            for (k, x) in o {
                write_delimited(LIST_VALUES, kv_len(k, x), buf);
                write_kv(k, x, buf);
            }
        }
    }
}

fn write_kv(key: &str, v: &Value, buf: &mut Vec<u8>) {
    if !key.is_empty() {
        write_delimited(KV_KEY, key.len(), buf);
        buf.extend_from_slice(key.as_bytes());
    }
    write_delimited(KV_VALUE, any_len(v), buf);
    write_any(v, buf);
}

/// Writes one `LogRecord`, field by field, in field-number order.
#[derive(Debug)]
pub struct LogWriter {
    buf: Vec<u8>,
}

/// `tag + length varint + len` bytes of a length-delimited field of `len` bytes.
fn framed_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

impl LogWriter {
    /// `capacity`: the expected encoded size (a good guess avoids any reallocation).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    #[inline]
    fn delimited(&mut self, tag: u32, len: usize) {
        write_delimited(tag, len, &mut self.buf);
    }

    fn bytes_field(&mut self, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            self.delimited(tag, b.len());
            self.buf.extend_from_slice(b);
        }
    }

    fn fixed64(&mut self, tag: u32, v: u64) {
        if v != 0 {
            encode_key(tag, WireType::SixtyFourBit, &mut self.buf);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Field 1, `time_unix_nano`.
    pub fn time(&mut self, ns: u64) {
        self.fixed64(LR_TIME, ns);
    }

    /// Fields 2 and 3, `severity_number` and `severity_text`.
    pub fn severity(&mut self, number: i32, text: &str) {
        if number != 0 {
            encode_key(LR_SEVERITY_NUMBER, WireType::Varint, &mut self.buf);
            // Negative enum values are sign-extended to 64 bits, as prost does.
            encode_varint(i64::from(number) as u64, &mut self.buf);
        }
        self.bytes_field(LR_SEVERITY_TEXT, text.as_bytes());
    }

    /// Field 5, `body`, a string.
    pub fn body_str(&mut self, s: &str) {
        self.delimited(LR_BODY, framed_len(s.len()));
        self.delimited(ANY_STRING, s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Field 5, `body`, any value.
    pub fn body(&mut self, v: &AnyValue) {
        prost::encoding::message::encode(LR_BODY, v, &mut self.buf);
    }

    /// Field 6, one attribute with a string value.
    pub fn attr_str(&mut self, key: &str, value: &str) {
        let key_part = if key.is_empty() {
            0
        } else {
            framed_len(key.len())
        };
        let value_len = framed_len(value.len());
        self.delimited(LR_ATTRIBUTES, key_part + framed_len(value_len));
        self.bytes_field(KV_KEY, key.as_bytes());
        self.delimited(KV_VALUE, value_len);
        self.delimited(ANY_STRING, value.len());
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// Field 6, one attribute.
    pub fn attr(&mut self, kv: &KeyValue) {
        prost::encoding::message::encode(LR_ATTRIBUTES, kv, &mut self.buf);
    }

    /// Field 5, `body`, from a JSON value (mapped as `translate::logs::any_value` does).
    pub fn body_json(&mut self, v: &Value) {
        self.delimited(LR_BODY, any_len(v));
        write_any(v, &mut self.buf);
    }

    /// Field 6, one attribute whose value is JSON (mapped as `translate::logs::any_value`).
    pub fn attr_json(&mut self, key: &str, v: &Value) {
        self.delimited(LR_ATTRIBUTES, kv_len(key, v));
        write_kv(key, v, &mut self.buf);
    }

    /// Fields 9 and 10, `trace_id` and `span_id`.
    pub fn trace(&mut self, trace_id: &[u8; 16], span_id: &[u8; 8]) {
        self.bytes_field(LR_TRACE_ID, trace_id);
        self.bytes_field(LR_SPAN_ID, span_id);
    }

    /// Field 11, `observed_time_unix_nano`.
    pub fn observed_time(&mut self, ns: u64) {
        self.fixed64(LR_OBSERVED_TIME, ns);
    }

    pub fn finish(self) -> EncodedLog {
        EncodedLog(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{KeyValueList, any_value::Value as AV};

    fn kv(k: &str, v: AV) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// The writer's bytes decode to the record we meant, and prost re-encodes that record to
    /// the very same bytes (so field order, omissions and lengths are prost's), across empty
    /// and absent fields, long strings (multi-byte length varints), non-string bodies and
    /// attributes, and negative severities.
    #[test]
    fn writer_output_is_what_prost_writes() {
        let long = "é".repeat(700);
        let nested = AnyValue {
            value: Some(AV::KvlistValue(KeyValueList {
                values: vec![kv("a", AV::IntValue(-3)), kv("", AV::BoolValue(false))],
            })),
        };
        type Case<'a> = (u64, i32, &'a str, Option<&'a str>, Vec<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (0, 0, "", None, vec![]),
            (
                1,
                9,
                "INFO",
                Some("hello"),
                vec![("aws.lambda.log_source", "function")],
            ),
            (u64::MAX, 17, "ERROR", Some(""), vec![("", ""), ("k", "")]),
            (42, -1, &long, Some(&long), vec![(&long, &long)]),
        ];
        for (i, (time, sev, text, body, attrs)) in cases.into_iter().enumerate() {
            for traced in [false, true] {
                for extra in [false, true] {
                    let mut w = LogWriter::with_capacity(8);
                    w.time(time);
                    w.severity(sev, text);
                    let mut want = LogRecord {
                        time_unix_nano: time,
                        severity_number: sev,
                        severity_text: text.to_owned(),
                        observed_time_unix_nano: time / 2,
                        ..Default::default()
                    };
                    if extra {
                        w.body(&nested);
                        want.body = Some(nested.clone());
                    } else if let Some(b) = body {
                        w.body_str(b);
                        want.body = Some(AnyValue {
                            value: Some(AV::StringValue(b.to_owned())),
                        });
                    }
                    for (k, v) in &attrs {
                        w.attr_str(k, v);
                        want.attributes
                            .push(kv(k, AV::StringValue((*v).to_owned())));
                    }
                    if extra {
                        let a = kv("n", AV::DoubleValue(1.5));
                        w.attr(&a);
                        want.attributes.push(a);
                    }
                    if traced {
                        w.trace(&[7; 16], &[9; 8]);
                        want.trace_id = vec![7; 16];
                        want.span_id = vec![9; 8];
                    }
                    w.observed_time(time / 2);
                    let got = w.finish();
                    assert_eq!(
                        got.as_bytes(),
                        want.encode_to_vec().as_slice(),
                        "case {i} traced={traced} extra={extra}"
                    );
                    let back = got.decode().unwrap();
                    assert_eq!(back, want);
                    assert_eq!(back.encode_to_vec(), got.as_bytes());
                    assert_eq!(EncodedLog::from(&want), got);
                }
            }
        }
    }

    /// JSON bodies and attributes written directly are prost's encoding of the `AnyValue` that
    /// `translate::logs::any_value` builds: every JSON kind, nesting, empty keys and containers,
    /// negative and huge integers, doubles, long strings.
    #[test]
    fn json_values_are_written_as_prost_writes_their_any_value() {
        use crate::translate::logs::any_value;
        let long = "x".repeat(300);
        let values = vec![
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(false),
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(i64::MIN),
            serde_json::json!(u64::MAX),
            serde_json::json!(2.5),
            serde_json::json!(-0.0),
            serde_json::json!(""),
            serde_json::json!(long),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([1, "a", null, [true, {"": 1.5}], {"k": []}]),
            serde_json::json!({"a": {"b": {"c": [1, 2, {"d": null}]}}, "": "empty key", "l": long}),
        ];
        for v in values {
            for key in ["attr", ""] {
                let mut w = LogWriter::with_capacity(0);
                w.time(5);
                w.body_json(&v);
                w.attr_json(key, &v);
                w.observed_time(6);
                let want = LogRecord {
                    time_unix_nano: 5,
                    body: Some(any_value(v.clone())),
                    attributes: vec![KeyValue {
                        key: key.to_owned(),
                        value: Some(any_value(v.clone())),
                        ..Default::default()
                    }],
                    observed_time_unix_nano: 6,
                    ..Default::default()
                };
                assert_eq!(
                    w.finish().as_bytes(),
                    want.encode_to_vec().as_slice(),
                    "{v} key {key:?}"
                );
            }
        }
    }

    #[test]
    fn debug_shows_the_decoded_record() {
        let mut w = LogWriter::with_capacity(0);
        w.body_str("visible body");
        let s = format!("{:?}", w.finish());
        assert!(s.contains("visible body"), "{s}");
        assert!(format!("{:?}", EncodedLog(vec![0xff])).contains("undecodable 1 bytes"));
    }
}
