//! Durations as the spec and Prometheus write them: `500ms`, `5m`, `1h30m`, `3d`, `30d`.
//!
//! One grammar serves the YAML spec, the JSON Schema (`pattern`) and the generated rules, so a
//! duration the spec accepts is always a valid PromQL range. Units: `ms`, `s`, `m`, `h`, `d`
//! (24 h), `w` (7 d); at least one component, each unit at most once, largest first. No `y`: a
//! year has no fixed length.

use std::time::Duration;

const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// The regular expression the JSON Schema uses for durations (kept equal to [`parse`] by a test).
pub const PATTERN: &str = "^([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$";

/// Parses `1h30m`-style durations. Errors say what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected e.g. \"500ms\", \"5m\", \"1h30m\", \"30d\" \
             (units ms, s, m, h, d, w, largest first)"
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total_ms: u64 = 0;
    let mut last_unit: Option<usize> = None;
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == start {
            return Err(bad());
        }
        let number: u64 = text[start..pos].parse().map_err(|_| bad())?;
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &text[unit_start..pos];
        let index = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if last_unit.is_some_and(|last| index <= last) {
            return Err(bad());
        }
        last_unit = Some(index);
        let part = number.checked_mul(UNITS[index].1).ok_or_else(bad)?;
        total_ms = total_ms.checked_add(part).ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the same grammar, using `d`, `h`, `m`, `s`, `ms` (never `w`, so `30d`
/// stays `30d`). Sub-millisecond parts are truncated; zero is `0s`.
pub fn format(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS.iter().skip(1) {
        if ms >= *size {
            out.push_str(&(ms / size).to_string());
            out.push_str(unit);
            ms %= size;
        }
    }
    out
}

/// Parses inside the scalar's own `deserialize_str` call, so serde_yaml reports a bad duration at
/// the value's own line (parsing after `String::deserialize` returns would blame the mapping).
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"500ms\", \"5m\" or \"30d\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

struct OptDurationVisitor;

impl<'de> serde::de::Visitor<'de> for OptDurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"1h\", or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(DurationVisitor).map(Some)
    }
}

/// `serde(with = "duration::serde_str")` for `Duration` fields.
pub mod serde_str {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(super::DurationVisitor)
    }
}

/// `serde(with = "duration::serde_opt_str")` for `Option<Duration>` fields (`null` = `None`).
pub mod serde_opt_str {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&super::format(*d)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_option(super::OptDurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_table() {
        let table: &[(&str, u64, &str)] = &[
            ("500ms", 500, "500ms"),
            ("5m", 300_000, "5m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("3d", 259_200_000, "3d"),
            ("30d", 2_592_000_000, "30d"),
            ("1w", 604_800_000, "7d"),
            ("90s", 90_000, "1m30s"),
            ("1s500ms", 1_500, "1s500ms"),
            ("0s", 0, "0s"),
        ];
        for (text, ms, formatted) in table {
            let d = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(d, Duration::from_millis(*ms), "{text}");
            assert_eq!(format(d), *formatted, "{text}");
            assert_eq!(parse(&format(d)).ok(), Some(d), "round trip {text}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for text in [
            "",
            "5",
            "m",
            "5 m",
            "-5m",
            "5x",
            "1.5h",
            "5m1h",
            "5m5m",
            "5M",
            "1y",
            "99999999999999999999d",
        ] {
            assert!(parse(text).is_err(), "{text:?} should be rejected");
        }
    }
}
