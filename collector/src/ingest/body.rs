//! Bounded body handling: a size-capped read of the request body and a size-capped gzip
//! decompression. Neither ever holds more than its cap: the decompressor reads into a buffer
//! through `Read::take(cap + 1)`, so a decompression bomb costs at most `cap + 1` bytes and some
//! CPU before it is refused.

use std::io::Read;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("decompressed body exceeds {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("invalid gzip data: {0}")]
    BadGzip(String),
    #[error("unsupported Content-Encoding `{0}` (gzip or identity)")]
    UnsupportedEncoding(String),
    #[error("reading the body failed: {0}")]
    Read(String),
}

/// Reads at most `limit` bytes of `body`.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge { limit })
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
    }
}

/// Decompresses `data` per `encoding` (`None`/`identity` → as is; `gzip` → capped inflate).
pub fn decode_content(
    encoding: Option<&str>,
    data: Bytes,
    limit: usize,
) -> Result<Bytes, BodyError> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => {
            if data.len() > limit {
                return Err(BodyError::DecompressedTooLarge { limit });
            }
            Ok(data)
        }
        Some(e) if e.eq_ignore_ascii_case("gzip") => gunzip_capped(&data, limit).map(Bytes::from),
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
    }
}

/// Inflates gzip `data`, refusing once the output would exceed `limit` bytes.
pub fn gunzip_capped(data: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let decoder = flate2::read::MultiGzDecoder::new(data);
    // Start small: the size an honest payload is likely to have, never the claimed size.
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit).min(1 << 20));
    let mut capped = decoder.take(limit as u64 + 1);
    capped
        .read_to_end(&mut out)
        .map_err(|e| BodyError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(BodyError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trip_and_caps() {
        let data = vec![b'x'; 10_000];
        assert_eq!(gunzip_capped(&gz(&data), 10_000).unwrap(), data);
        assert_eq!(
            gunzip_capped(&gz(&data), 9_999),
            Err(BodyError::DecompressedTooLarge { limit: 9_999 })
        );
        assert!(matches!(
            gunzip_capped(b"not gzip", 100),
            Err(BodyError::BadGzip(_))
        ));
        assert!(matches!(
            decode_content(Some("br"), Bytes::new(), 10),
            Err(BodyError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn a_bomb_is_refused_at_the_cap() {
        // 64 MiB of zeros compresses to ~64 KiB; refused after 1 MiB of output.
        let bomb = gz(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100 << 10);
        assert_eq!(
            gunzip_capped(&bomb, 1 << 20),
            Err(BodyError::DecompressedTooLarge { limit: 1 << 20 })
        );
    }
}
