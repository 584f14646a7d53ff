//! Small builders and readers for OTLP attributes, shared so both sides agree on value types.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

pub fn kv_str(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

pub fn kv_i64(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

pub fn kv_f64(key: &str, v: f64) -> KeyValue {
    kv(key, Value::DoubleValue(v))
}

pub fn kv_bool(key: &str, v: bool) -> KeyValue {
    kv(key, Value::BoolValue(v))
}

pub fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// The value of `key`, if present.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(attrs, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Integers, and doubles or numeric strings holding whole numbers, are read as `i64`.
pub fn get_i64(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match get(attrs, key)? {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) if d.is_finite() => Some(d.round() as i64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Any numeric value (or numeric string) as `f64`.
pub fn get_f64(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match get(attrs, key)? {
        Value::IntValue(i) => Some(*i as f64),
        Value::DoubleValue(d) => Some(*d),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The function a resource describes: `faas.name`, else `service.name`.
pub fn function_name(resource: &[KeyValue]) -> Option<&str> {
    get_str(resource, crate::attr::FAAS_NAME)
        .or_else(|| get_str(resource, crate::attr::SERVICE_NAME))
}

pub fn get_bool(attrs: &[KeyValue], key: &str) -> Option<bool> {
    match get(attrs, key)? {
        Value::BoolValue(b) => Some(*b),
        Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_accept_the_types_writers_produce() {
        let attrs = vec![
            kv_str("s", "x"),
            kv_i64("i", 7),
            kv_f64("f", 2.0),
            kv_bool("b", true),
            kv_str("n", "12"),
        ];
        assert_eq!(get_str(&attrs, "s"), Some("x"));
        assert_eq!(get_i64(&attrs, "i"), Some(7));
        assert_eq!(get_i64(&attrs, "f"), Some(2));
        assert_eq!(get_i64(&attrs, "n"), Some(12));
        assert_eq!(get_f64(&attrs, "i"), Some(7.0));
        assert_eq!(get_bool(&attrs, "b"), Some(true));
        assert_eq!(get_str(&attrs, "missing"), None);
        assert_eq!(get_str(&attrs, "i"), None);
    }
}
