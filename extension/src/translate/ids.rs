//! Random trace and span ids (no crypto needed: ids must be unique, not secret).
//!
//! splitmix64 seeded from the standard library's per-process random hasher keys, the clock and
//! the process id, so two execution environments never share a sequence.

use std::hash::{BuildHasher, Hasher};

#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    pub fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        h.write_u64(now);
        h.write_u32(std::process::id());
        Self { state: h.finish() }
    }

    /// A deterministic sequence, for tests.
    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Never all zero (invalid in W3C).
    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let v = self.next();
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    /// A W3C trace id whose first 4 bytes are the epoch seconds, so it is also a valid X-Ray id.
    pub fn trace_id(&mut self, now_ns: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&((now_ns / 1_000_000_000) as u32).to_be_bytes());
        out[4..12].copy_from_slice(&self.next().to_be_bytes());
        out[12..].copy_from_slice(&(self.next() as u32 | 1).to_be_bytes());
        out
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_are_non_zero() {
        let mut g = IdGen::new();
        let a = g.span_id();
        let b = g.span_id();
        assert_ne!(a, b);
        assert_ne!(a, [0; 8]);
        let t = g.trace_id(1_659_441_683_000_000_000);
        assert_eq!(&t[..4], &1_659_441_683u32.to_be_bytes());
        assert_ne!(IdGen::new().span_id(), IdGen::new().span_id());
    }
}
