//! The extension's own log lines, on stderr, rate-limited.
//!
//! Lambda delivers our stderr back to us as `extension` records, so a chatty failure path would
//! feed itself. Every message has a static key; a key prints at most once per [`WINDOW`], and the
//! next print says how many were suppressed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);

static STATE: Mutex<Option<HashMap<&'static str, (Instant, u64)>>> = Mutex::new(None);

/// Whether a line with `key` may print now; returns the number suppressed since the last one.
pub fn allow(key: &'static str, now: Instant) -> Option<u64> {
    let Ok(mut guard) = STATE.lock() else {
        return None;
    };
    let map = guard.get_or_insert_with(HashMap::new);
    match map.get_mut(key) {
        Some((last, suppressed)) if now.saturating_duration_since(*last) < WINDOW => {
            *suppressed += 1;
            None
        }
        Some((last, suppressed)) => {
            let n = *suppressed;
            *last = now;
            *suppressed = 0;
            Some(n)
        }
        None => {
            map.insert(key, (now, 0));
            Some(0)
        }
    }
}

/// Prints `[lambdawatch] <level> <msg>` to stderr unless `key` printed within the window.
pub fn log(level: &str, key: &'static str, msg: std::fmt::Arguments<'_>) {
    if let Some(suppressed) = allow(key, Instant::now()) {
        if suppressed > 0 {
            eprintln!("[lambdawatch] {level} {msg} ({suppressed} similar suppressed)");
        } else {
            eprintln!("[lambdawatch] {level} {msg}");
        }
    }
}

#[macro_export]
macro_rules! warn {
    ($key:expr, $($arg:tt)*) => { $crate::diag::log("WARN", $key, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! info {
    ($key:expr, $($arg:tt)*) => { $crate::diag::log("INFO", $key, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_prints_once_per_window_and_counts_the_rest() {
        let t = Instant::now();
        assert_eq!(allow("test-key", t), Some(0));
        assert_eq!(allow("test-key", t + Duration::from_secs(1)), None);
        assert_eq!(allow("test-key", t + Duration::from_secs(2)), None);
        assert_eq!(allow("other-key", t), Some(0));
        assert_eq!(allow("test-key", t + WINDOW), Some(2));
    }
}
