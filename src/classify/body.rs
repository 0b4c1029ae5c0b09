//! Undoes `Content-Encoding` on a copy of a body, never producing more than a set number of
//! bytes (a small gzip bomb must not become a large allocation).
//!
//! One cost is the decoder's, not the limit's: brotli fills its window before it gives any output,
//! so a small `br` body may make it decode (and hold) up to its window, 16 MiB at most in HTTP's
//! brotli (RFC 7932: window bits ≤ 24), tens of milliseconds, before the limit can act. The
//! decoder also reads "large-window" brotli, an extension outside RFC 7932 with windows up to
//! 1 GiB: a 3.7 KB body of it held 0.93 GiB and 1.6 s of CPU. Such a body is refused by its header.

use std::borrow::Cow;
use std::io::Read;

/// Why a body could not be decoded for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded body is larger than the inspection limit.
    TooLarge,
    /// The bytes are not valid for the declared encoding (or the encoding is unknown).
    Corrupt,
}

/// Decodes `body` according to a `Content-Encoding` header value (`gzip`, `x-gzip`, `deflate`,
/// `br`, `identity`, or a comma-separated list of them, applied in order).
pub fn decode<'a>(content_encoding: Option<&str>, body: &'a [u8], limit: usize) -> Result<Cow<'a, [u8]>, DecodeError> {
    let codings: Vec<String> = content_encoding
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() {
        return if body.len() > limit { Err(DecodeError::TooLarge) } else { Ok(Cow::Borrowed(body)) };
    }
    let mut current: Vec<u8> = body.to_vec();
    // Codings are listed in the order they were applied; undo them last first.
    for coding in codings.iter().rev() {
        current = match coding.as_str() {
            "gzip" | "x-gzip" => read_limited(flate2::read::MultiGzDecoder::new(&current[..]), limit)?,
            "deflate" => {
                // RFC 9110 says zlib-wrapped; some servers send raw deflate.
                read_limited(flate2::read::ZlibDecoder::new(&current[..]), limit).or_else(|e| match e {
                    DecodeError::TooLarge => Err(e),
                    DecodeError::Corrupt => read_limited(flate2::read::DeflateDecoder::new(&current[..]), limit),
                })?
            }
            "br" if is_large_window_brotli(&current) => return Err(DecodeError::Corrupt),
            "br" => read_limited(brotli::Decompressor::new(&current[..], 4096), limit)?,
            _ => return Err(DecodeError::Corrupt),
        };
    }
    Ok(Cow::Owned(current))
}

/// Whether a brotli stream declares a large window (its first 7 bits, read from the lowest, are
/// `1, 000, 100`: the 0x11 marker of RFC 7932's reserved window value, which the decoder takes as
/// "large-window brotli").
fn is_large_window_brotli(stream: &[u8]) -> bool {
    stream.first().is_some_and(|b| b & 0x7f == 0x11)
}

fn read_limited(reader: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(|_| DecodeError::Corrupt)?;
    if out.len() > limit { Err(DecodeError::TooLarge) } else { Ok(out) }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn brotli(data: &[u8]) -> Vec<u8> {
        brotli_with(data, 22, false)
    }

    #[test]
    fn each_encoding_round_trips() {
        let data = br#"{"status":"success"}"#;
        assert_eq!(&*decode(None, data, 100).unwrap(), data);
        assert_eq!(&*decode(Some("identity"), data, 100).unwrap(), data);
        assert_eq!(&*decode(Some("gzip"), &gzip(data), 100).unwrap(), data);
        assert_eq!(&*decode(Some("x-gzip"), &gzip(data), 100).unwrap(), data);
        assert_eq!(&*decode(Some("deflate"), &zlib(data), 100).unwrap(), data);
        assert_eq!(&*decode(Some("deflate"), &raw_deflate(data), 100).unwrap(), data);
        assert_eq!(&*decode(Some("BR"), &brotli(data), 100).unwrap(), data);
        assert_eq!(&*decode(Some("gzip, br"), &brotli(&gzip(data)), 100).unwrap(), data);
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let big = vec![b'a'; 1 << 20];
        assert_eq!(decode(Some("gzip"), &gzip(&big), 1000), Err(DecodeError::TooLarge));
        assert_eq!(decode(None, &big, 1000), Err(DecodeError::TooLarge));
        assert_eq!(decode(Some("gzip"), b"not gzip", 1000), Err(DecodeError::Corrupt));
        assert_eq!(decode(Some("br"), b"\xff\xff\xff", 1000), Err(DecodeError::Corrupt));
        assert_eq!(decode(Some("compress"), b"x", 1000), Err(DecodeError::Corrupt));
    }

    fn brotli_with(data: &[u8], lgwin: i32, large_window: bool) -> Vec<u8> {
        let params = brotli::enc::BrotliEncoderParams { lgwin, large_window, quality: 5, ..Default::default() };
        let mut w = brotli::CompressorWriter::with_params(Vec::new(), 4096, &params);
        w.write_all(data).unwrap();
        w.into_inner()
    }

    #[test]
    fn large_window_brotli_is_refused_by_its_header_and_every_standard_window_decodes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for lgwin in 25..=30 {
            let stream = brotli_with(&data, lgwin, true);
            assert!(is_large_window_brotli(&stream), "window bits {lgwin}");
            assert_eq!(decode(Some("br"), &stream, 1 << 20), Err(DecodeError::Corrupt), "window bits {lgwin}");
        }
        for lgwin in 10..=24 {
            let stream = brotli_with(&data, lgwin, false);
            assert!(!is_large_window_brotli(&stream), "window bits {lgwin}");
            assert_eq!(decode(Some("br"), &stream, 1 << 20).as_deref(), Ok(&data[..]), "window bits {lgwin}");
        }
        // The marker, not the size, makes the stream non-standard: a large-window header with a
        // small window is refused as well.
        let marked = brotli_with(&data, 22, true);
        assert_eq!(decode(Some("br"), &marked, 1 << 20), Err(DecodeError::Corrupt));
    }
}
