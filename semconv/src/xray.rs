//! X-Ray trace header ⇄ W3C trace context.
//!
//! `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1` carries the W3C
//! trace id `5759e988bd862e3fe1be46a994272793` (epoch seconds then 96 random bits) and the parent
//! span id `53995c3f42cd8ad8`.

/// A parsed `X-Amzn-Trace-Id` / `platform.start.tracing.value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrayContext {
    pub trace_id: [u8; 16],
    pub parent_id: Option<[u8; 8]>,
    pub sampled: Option<bool>,
}

/// Parses an X-Ray header; `None` when there is no valid `Root`.
pub fn parse_header(header: &str) -> Option<XrayContext> {
    let mut trace_id = None;
    let mut parent_id = None;
    let mut sampled = None;
    for part in header.split(';') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "Root" => trace_id = parse_root(v.trim()),
            "Parent" => parent_id = hex_array::<8>(v.trim()),
            "Sampled" => {
                sampled = match v.trim() {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some(XrayContext {
        trace_id: trace_id?,
        parent_id,
        sampled,
    })
}

fn parse_root(root: &str) -> Option<[u8; 16]> {
    let mut parts = root.split('-');
    if parts.next()? != "1" {
        return None;
    }
    let epoch = parts.next()?;
    let unique = parts.next()?;
    if parts.next().is_some() || epoch.len() != 8 || unique.len() != 24 {
        return None;
    }
    let mut joined = String::with_capacity(32);
    joined.push_str(epoch);
    joined.push_str(unique);
    hex_array::<16>(&joined)
}

/// The X-Ray `Root` spelling of a W3C trace id: `1-{8 hex}-{24 hex}`.
pub fn root_from_trace_id(trace_id: &[u8; 16]) -> String {
    let hex = to_hex(trace_id);
    format!("1-{}-{}", &hex[..8], &hex[8..])
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

pub fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_header_maps_to_w3c() {
        let ctx = parse_header(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(to_hex(&ctx.trace_id), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(to_hex(&ctx.parent_id.unwrap()), "53995c3f42cd8ad8");
        assert_eq!(ctx.sampled, Some(true));
        assert_eq!(
            root_from_trace_id(&ctx.trace_id),
            "1-5759e988-bd862e3fe1be46a994272793"
        );
    }

    #[test]
    fn bad_headers_are_none_not_panics() {
        for h in [
            "",
            "Root=",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-zz59e988-bd862e3fe1be46a994272793",
            "Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd86",
        ] {
            assert_eq!(parse_header(h), None, "{h}");
        }
        let no_parent = parse_header("Root=1-5759e988-bd862e3fe1be46a994272793").unwrap();
        assert_eq!(no_parent.parent_id, None);
    }
}
