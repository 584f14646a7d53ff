//! Identifiers: request ids, extension ids (UUID v4 text) and X-Ray trace headers.
//!
//! Not seeded from the workload: identifiers only need to be unique, while the workload's own
//! seeded RNG decides what each invocation does.

use std::{
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use rand::{Rng, SeedableRng, rngs::StdRng};

static RNG: Mutex<Option<StdRng>> = Mutex::new(None);

fn with_rng<T>(f: impl FnOnce(&mut StdRng) -> T) -> T {
    let mut guard = RNG.lock().unwrap_or_else(|p| p.into_inner());
    let rng = guard.get_or_insert_with(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        StdRng::seed_from_u64(nanos ^ (u64::from(std::process::id()) << 32))
    });
    f(rng)
}

/// A random UUID v4, lowercase hyphenated.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = with_rng(|r| r.random());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `s` is a hyphenated UUID.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A new X-Ray trace header `Root=1-{8 hex epoch secs}-{24 hex};Parent={16 hex};Sampled=1` and
/// the parent (span) id.
pub fn xray_header() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (a, b, parent): (u64, u32, u64) = with_rng(|r| (r.random(), r.random(), r.random()));
    let parent = format!("{parent:016x}");
    (
        format!(
            "Root=1-{:08x}-{a:016x}{b:08x};Parent={parent};Sampled=1",
            secs as u32
        ),
        parent,
    )
}

/// A fresh 16-hex-digit X-Ray segment id.
pub fn span_id() -> String {
    let id: u64 = with_rng(|r| r.random());
    format!("{id:016x}")
}

/// The `Parent=` segment id of an `X-Amzn-Trace-Id` header, if it has one.
pub fn xray_parent(header: &str) -> Option<String> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("Parent"))
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_trace_header() {
        assert_eq!(
            xray_parent(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            )
            .as_deref(),
            Some("53995c3f42cd8ad8")
        );
        assert_eq!(
            xray_parent("Root=1-5759e988-bd862e3fe1be46a994272793"),
            None
        );
        assert_eq!(span_id().len(), 16);
    }

    #[test]
    fn uuid_and_xray_shapes() {
        let u = uuid_v4();
        assert!(is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
        assert!(!is_uuid("not-a-uuid"));
        let (h, parent) = xray_header();
        let re_ok = h.starts_with("Root=1-")
            && h.ends_with(";Sampled=1")
            && h.contains(&format!(";Parent={parent};"));
        assert!(re_ok, "{h}");
        let root = h.split(';').next().unwrap();
        let parts: Vec<&str> = root.trim_start_matches("Root=").split('-').collect();
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 24);
        assert_eq!(parent.len(), 16);
        // semconv understands it.
        assert!(lambdawatch_semconv::xray::parse_header(&h).is_some());
    }
}
