//! Video, audio and 3D files known by their bytes, not by `Content-Type` (SPEC §9.2): the magic
//! numbers say what a file is, and a walk of its container says whether it is whole. A CDN that
//! serves half an MP4, an HTML error page as `video/mp4`, or a WAV whose `data` chunk runs past the
//! end is caught here without decoding a frame.
//!
//! What each walk checks:
//! - MP4/MOV (ISO BMFF): top-level boxes from an `ftyp`, each inside the file, a `moov` among them;
//!   the first video track's `tkhd` gives the frame size.
//! - WebM/Matroska: the EBML header with its DocType, then a `Segment` whose size fits the file.
//! - MP3: an optional ID3v2 tag, then MPEG Layer III frames walked by their headers to the end.
//! - WAV: `RIFF…WAVE` chunks inside the file, a `fmt ` and a `data` chunk among them.
//! - OGG: pages walked to the one that ends the stream.
//! - FLAC: `fLaC`, the metadata blocks from `STREAMINFO` to the last, then a frame.
//! - glTF binary: the `glTF` header's length is the file's, a JSON chunk with an `asset` first.
//!
//! Images are not handled here: they are decoded (output.rs).

use std::fmt;

/// A kind of media file this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Media {
    /// ISO base media (MP4, MOV, M4A): starts with an `ftyp` box.
    Mp4,
    /// WebM or Matroska: EBML.
    Webm,
    /// MPEG audio Layer III.
    Mp3,
    /// RIFF WAVE.
    Wav,
    /// Ogg (Vorbis, Opus).
    Ogg,
    /// FLAC.
    Flac,
    /// glTF 2.0 binary.
    Glb,
}

impl fmt::Display for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Media::Mp4 => "MP4",
            Media::Webm => "WebM",
            Media::Mp3 => "MP3",
            Media::Wav => "WAV",
            Media::Ogg => "OGG",
            Media::Flac => "FLAC",
            Media::Glb => "glTF binary",
        })
    }
}

/// What a whole file showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Found {
    /// The frame size of a video (MP4's first video track).
    pub(crate) size: Option<(u32, u32)>,
}

/// What a file is, by its first bytes; `None` for anything else (images among them).
pub(crate) fn sniff(b: &[u8]) -> Option<Media> {
    let at = |i: usize, magic: &[u8]| b.get(i..i + magic.len()) == Some(magic);
    if at(4, b"ftyp") {
        Some(Media::Mp4)
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(Media::Webm)
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some(Media::Wav)
    } else if at(0, b"OggS") {
        Some(Media::Ogg)
    } else if at(0, b"fLaC") {
        Some(Media::Flac)
    } else if at(0, b"glTF") {
        Some(Media::Glb)
    } else if at(0, b"ID3") || mp3_header(b).is_some() {
        Some(Media::Mp3)
    } else {
        None
    }
}

/// Walks a file `sniff` named; `Err` says why it is not whole, in words.
pub(crate) fn check(media: Media, b: &[u8]) -> Result<Found, String> {
    match media {
        Media::Mp4 => mp4(b),
        Media::Webm => webm(b).map(|()| Found::default()),
        Media::Mp3 => mp3(b).map(|()| Found::default()),
        Media::Wav => wav(b).map(|()| Found::default()),
        Media::Ogg => ogg(b).map(|()| Found::default()),
        Media::Flac => flac(b).map(|()| Found::default()),
        Media::Glb => glb(b).map(|()| Found::default()),
    }
}

fn u16_le(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_le(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn u32_be(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn u64_be(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// "cut: … needs N bytes, the file has M".
fn cut(what: impl fmt::Display, end: u64, len: usize) -> String {
    format!("cut short: {what} needs {end} bytes, the file has {len}")
}

/// One ISO BMFF box: its type, where its payload starts and where it ends.
struct Mp4Box {
    kind: [u8; 4],
    payload: usize,
    end: usize,
}

/// The boxes in `b[from..to]`, each checked to fit.
fn mp4_boxes(b: &[u8], from: usize, to: usize) -> Result<Vec<Mp4Box>, String> {
    let mut boxes = Vec::new();
    let mut at = from;
    while at < to {
        let (Some(size), Some(kind)) = (u32_be(b, at), b.get(at + 4..at + 8)) else {
            return Err(cut("a box header", at as u64 + 8, b.len()));
        };
        let kind: [u8; 4] = kind.try_into().map_err(|_| "a box header".to_owned())?;
        let (payload, size) = match size {
            0 => (at + 8, (to - at) as u64),
            1 => (at + 16, u64_be(b, at + 8).ok_or_else(|| cut("a large box header", at as u64 + 16, b.len()))?),
            n => (at + 8, u64::from(n)),
        };
        let end = (at as u64).saturating_add(size);
        let name = String::from_utf8_lossy(&kind).into_owned();
        if size < (payload - at) as u64 {
            return Err(format!("the `{name}` box at byte {at} has an impossible size {size}"));
        }
        if end > to as u64 {
            return Err(cut(format_args!("the `{name}` box"), end, b.len()));
        }
        boxes.push(Mp4Box { kind, payload, end: end as usize });
        at = end as usize;
    }
    Ok(boxes)
}

fn mp4(b: &[u8]) -> Result<Found, String> {
    let top = mp4_boxes(b, 0, b.len())?;
    if top.first().map(|x| &x.kind) != Some(b"ftyp") {
        return Err("the first box is not `ftyp`".into());
    }
    let moov = top.iter().find(|x| &x.kind == b"moov").ok_or("no `moov` box: the file cannot be played")?;
    let mut size = None;
    for trak in mp4_boxes(b, moov.payload, moov.end)?.iter().filter(|x| &x.kind == b"trak") {
        let Some(tkhd) = mp4_boxes(b, trak.payload, trak.end)?.into_iter().find(|x| &x.kind == b"tkhd") else {
            continue;
        };
        // Width and height are 16.16 fixed point at the end of the header (version 0 or 1).
        let at = tkhd.payload + if b.get(tkhd.payload) == Some(&1) { 88 } else { 76 };
        let (Some(w), Some(h)) = (u32_be(b, at), u32_be(b, at + 4)) else { continue };
        if at + 8 <= tkhd.end && w >> 16 > 0 && h >> 16 > 0 {
            size = Some((w >> 16, h >> 16));
            break;
        }
    }
    Ok(Found { size })
}

/// An EBML variable-length integer at `i`: (value, length); `None` for the unknown size.
fn vint(b: &[u8], i: usize) -> Result<(Option<u64>, usize), String> {
    let first = *b.get(i).ok_or_else(|| cut("an element size", i as u64 + 1, b.len()))?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return Err(format!("an invalid element size at byte {i}"));
    }
    let bytes = b.get(i..i + len).ok_or_else(|| cut("an element size", (i + len) as u64, b.len()))?;
    let mut v = u64::from(first) & (0xFF >> len);
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
    }
    let unknown = v == (1u64 << (7 * len)) - 1;
    Ok(((!unknown).then_some(v), len))
}

fn webm(b: &[u8]) -> Result<(), String> {
    let (header, n) = vint(b, 4)?;
    let header_end = 4 + n + header.ok_or("the EBML header has no size")? as usize;
    let fields = b.get(4 + n..header_end).ok_or_else(|| cut("the EBML header", header_end as u64, b.len()))?;
    // DocType (0x4282) names the flavour.
    let doc = fields.windows(2).position(|w| w == [0x42, 0x82]).and_then(|i| {
        let (len, n) = vint(fields, i + 2).ok()?;
        fields.get(i + 2 + n..i + 2 + n + len? as usize)
    });
    match doc {
        Some(b"webm" | b"matroska") => {}
        _ => return Err("the EBML header names no `webm` or `matroska` DocType".into()),
    }
    if b.get(header_end..header_end + 4) != Some(&[0x18, 0x53, 0x80, 0x67]) {
        return Err("no `Segment` after the EBML header".into());
    }
    let (size, n) = vint(b, header_end + 4)?;
    if let Some(size) = size {
        let end = (header_end + 4 + n) as u64 + size;
        if end > b.len() as u64 {
            return Err(cut("the `Segment`", end, b.len()));
        }
    }
    Ok(())
}

/// The length of the MPEG Layer III frame whose header starts `b`; `Some(0)` for free format.
fn mp3_header(b: &[u8]) -> Option<usize> {
    let h = u32_be(b, 0)?;
    if h >> 21 != 0x7FF || (h >> 17) & 3 != 1 {
        return None;
    }
    const MPEG1: [u32; 15] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
    const MPEG2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let version = (h >> 19) & 3;
    let rate_index = ((h >> 10) & 3) as usize;
    let (kbps, rates, per) = match version {
        3 => (MPEG1, [44_100, 48_000, 32_000], 144),
        2 => (MPEG2, [22_050, 24_000, 16_000], 72),
        0 => (MPEG2, [11_025, 12_000, 8_000], 72),
        _ => return None,
    };
    let bitrate = *kbps.get(((h >> 12) & 0xF) as usize)?;
    let rate = *rates.get(rate_index)?;
    let padding = (h >> 9) & 1;
    Some((per * bitrate * 1000 / rate + padding) as usize)
}

fn mp3(b: &[u8]) -> Result<(), String> {
    let mut at = 0;
    if b.starts_with(b"ID3") {
        let size = b.get(6..10).ok_or_else(|| cut("the ID3 tag", 10, b.len()))?;
        let size = size.iter().fold(0usize, |acc, x| (acc << 7) | usize::from(x & 0x7F));
        let footer = if b.get(5).is_some_and(|f| f & 0x10 != 0) { 10 } else { 0 };
        at = 10 + size + footer;
        if at > b.len() {
            return Err(cut("the ID3 tag", at as u64, b.len()));
        }
    }
    let mut frames = 0usize;
    while at < b.len() {
        if b[at..].starts_with(b"TAG") && b.len() - at == 128 {
            break; // ID3v1 at the end
        }
        match mp3_header(&b[at..]) {
            Some(0) => return Ok(()), // free format: frames cannot be walked by their headers
            Some(len) if at + len > b.len() => {
                return Err(cut(format_args!("frame {} (at byte {at})", frames + 1), (at + len) as u64, b.len()));
            }
            Some(len) => {
                frames += 1;
                at += len;
            }
            None if frames == 0 => return Err(format!("no MPEG audio frame where one should start (byte {at})")),
            None => return Err(format!("{frames} whole frames, then bytes that are no frame at byte {at}")),
        }
    }
    if frames == 0 { Err("no audio frames".into()) } else { Ok(()) }
}

fn wav(b: &[u8]) -> Result<(), String> {
    let riff_end = 8 + u64::from(u32_le(b, 4).unwrap_or(0));
    if riff_end > b.len() as u64 {
        return Err(cut("the RIFF chunk", riff_end, b.len()));
    }
    let (mut at, mut fmt, mut data) = (12usize, false, false);
    while at + 8 <= riff_end as usize {
        let id = &b[at..at + 4];
        let size = u64::from(u32_le(b, at + 4).unwrap_or(0));
        let end = at as u64 + 8 + size;
        if end > riff_end {
            return Err(cut(format_args!("the `{}` chunk", String::from_utf8_lossy(id)), end, b.len()));
        }
        if id == b"fmt " {
            let channels = u16_le(b, at + 10).unwrap_or(0);
            let rate = u32_le(b, at + 12).unwrap_or(0);
            if size < 16 || channels == 0 || rate == 0 {
                return Err("a `fmt ` chunk with no channels or sample rate".into());
            }
            fmt = true;
        }
        data |= id == b"data";
        at = (end + (size & 1)) as usize;
    }
    match (fmt, data) {
        (true, true) => Ok(()),
        (false, _) => Err("no `fmt ` chunk".into()),
        (true, false) => Err("no `data` chunk".into()),
    }
}

fn ogg(b: &[u8]) -> Result<(), String> {
    let mut at = 0;
    let mut pages = 0usize;
    while at < b.len() {
        if b.get(at..at + 4) != Some(b"OggS") {
            return Err(format!("page {} does not start with `OggS` (byte {at})", pages + 1));
        }
        let segments = usize::from(*b.get(at + 26).ok_or_else(|| cut("a page header", at as u64 + 27, b.len()))?);
        let table = b
            .get(at + 27..at + 27 + segments)
            .ok_or_else(|| cut("a page header", (at + 27 + segments) as u64, b.len()))?;
        let end = at + 27 + segments + table.iter().map(|x| usize::from(*x)).sum::<usize>();
        if end > b.len() {
            return Err(cut(format_args!("page {}", pages + 1), end as u64, b.len()));
        }
        pages += 1;
        if b[at + 5] & 0x04 != 0 {
            return Ok(()); // end of stream
        }
        at = end;
    }
    Err(format!("{pages} pages and no last one: the stream is cut"))
}

fn flac(b: &[u8]) -> Result<(), String> {
    let mut at = 4;
    let mut first = true;
    loop {
        let header = *b.get(at).ok_or_else(|| cut("a metadata block", at as u64 + 4, b.len()))?;
        let len = b.get(at + 1..at + 4).map(|x| x.iter().fold(0usize, |acc, y| (acc << 8) | usize::from(*y)));
        let len = len.ok_or_else(|| cut("a metadata block", at as u64 + 4, b.len()))?;
        if first && (header & 0x7F != 0 || len != 34) {
            return Err("the first metadata block is not STREAMINFO".into());
        }
        first = false;
        let end = at + 4 + len;
        if end > b.len() {
            return Err(cut("a metadata block", end as u64, b.len()));
        }
        at = end;
        if header & 0x80 != 0 {
            break;
        }
    }
    match b.get(at..at + 2) {
        Some([0xFF, x]) if x & 0xFE == 0xF8 => Ok(()),
        Some(_) => Err(format!("no audio frame after the metadata (byte {at})")),
        None => Err(cut("the first audio frame", at as u64 + 2, b.len())),
    }
}

fn glb(b: &[u8]) -> Result<(), String> {
    let version = u32_le(b, 4).ok_or_else(|| cut("the header", 12, b.len()))?;
    if version != 2 {
        return Err(format!("glTF binary version {version}, not 2"));
    }
    let total = u64::from(u32_le(b, 8).ok_or_else(|| cut("the header", 12, b.len()))?);
    if total > b.len() as u64 {
        return Err(cut("the file (by its header)", total, b.len()));
    }
    let json_len = u32_le(b, 12).ok_or_else(|| cut("the JSON chunk", 20, b.len()))? as usize;
    if b.get(16..20) != Some(b"JSON") {
        return Err("the first chunk is not JSON".into());
    }
    let json = b.get(20..20 + json_len).ok_or_else(|| cut("the JSON chunk", (20 + json_len) as u64, b.len()))?;
    let doc: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("the JSON chunk does not parse: {e}"))?;
    if !doc.get("asset").is_some_and(serde_json::Value::is_object) {
        return Err("the JSON chunk has no `asset`".into());
    }
    let mut at = 20 + json_len;
    while at + 8 <= total as usize {
        let len = u64::from(u32_le(b, at).unwrap_or(0));
        let end = at as u64 + 8 + len;
        if end > total {
            return Err(cut("a chunk", end, b.len()));
        }
        at = end as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_file(w: u32, h: u32, payload: usize) -> Vec<u8> {
        fn boxed(kind: &[u8], body: &[u8]) -> Vec<u8> {
            let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.extend_from_slice(body);
            v
        }
        let mut tkhd = vec![0u8; 84];
        tkhd[76..80].copy_from_slice(&(w << 16).to_be_bytes());
        tkhd[80..84].copy_from_slice(&(h << 16).to_be_bytes());
        let trak = boxed(b"trak", &boxed(b"tkhd", &tkhd));
        let moov = boxed(b"moov", &[boxed(b"mvhd", &[0; 100]), trak].concat());
        [boxed(b"ftyp", b"isom\0\0\x02\0isommp41"), moov, boxed(b"mdat", &vec![7; payload])].concat()
    }

    fn wav_file(samples: usize) -> Vec<u8> {
        let data = vec![0u8; samples * 2];
        let mut v = b"RIFF".to_vec();
        v.extend_from_slice(&((36 + data.len()) as u32).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&[1, 0, 1, 0]); // PCM, mono
        v.extend_from_slice(&16_000u32.to_le_bytes());
        v.extend_from_slice(&32_000u32.to_le_bytes());
        v.extend_from_slice(&[2, 0, 16, 0]);
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&data);
        v
    }

    fn mp3_file(frames: usize) -> Vec<u8> {
        // ID3v2.4 with 5 bytes of tag, then MPEG-1 Layer III 128 kbps 44.1 kHz frames (417 bytes).
        let mut v = b"ID3\x04\0\0\0\0\0\x05hello".to_vec();
        for _ in 0..frames {
            let mut frame = vec![0u8; 417];
            frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
            v.extend_from_slice(&frame);
        }
        v
    }

    fn glb_file() -> Vec<u8> {
        let json = br#"{"asset":{"version":"2.0"}}    "#; // padded to 4
        let bin = [0u8; 12];
        let total = 12 + 8 + json.len() + 8 + bin.len();
        let mut v = b"glTF".to_vec();
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(&(total as u32).to_le_bytes());
        v.extend_from_slice(&(json.len() as u32).to_le_bytes());
        v.extend_from_slice(b"JSON");
        v.extend_from_slice(json);
        v.extend_from_slice(&(bin.len() as u32).to_le_bytes());
        v.extend_from_slice(b"BIN\0");
        v.extend_from_slice(&bin);
        v
    }

    fn ogg_file(pages: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..pages {
            let mut page = b"OggS\0".to_vec();
            page.push(if i + 1 == pages { 0x04 } else { 0 });
            page.extend_from_slice(&[0; 20]); // granule, serial, sequence, crc
            page.extend_from_slice(&[2, 255, 10]); // two segments: 265 bytes
            page.extend_from_slice(&[1; 265]);
            v.extend_from_slice(&page);
        }
        v
    }

    fn flac_file() -> Vec<u8> {
        let mut v = b"fLaC".to_vec();
        v.extend_from_slice(&[0x80, 0, 0, 34]);
        v.extend_from_slice(&[0; 34]);
        v.extend_from_slice(&[0xFF, 0xF8, 0x69, 0x08, 0, 0]);
        v
    }

    fn webm_file(cluster: usize) -> Vec<u8> {
        let mut v = vec![0x1A, 0x45, 0xDF, 0xA3, 0x87, 0x42, 0x82, 0x84];
        v.extend_from_slice(b"webm");
        v.extend_from_slice(&[0x18, 0x53, 0x80, 0x67]);
        v.extend_from_slice(&[0x01, 0, 0, 0, 0, 0, 0, cluster as u8]);
        v.extend_from_slice(&vec![0; cluster]);
        v
    }

    #[test]
    fn whole_files_of_each_kind_pass_and_say_what_they_are() {
        let files: [(Media, Vec<u8>); 7] = [
            (Media::Mp4, mp4_file(512, 288, 1000)),
            (Media::Webm, webm_file(100)),
            (Media::Mp3, mp3_file(3)),
            (Media::Wav, wav_file(800)),
            (Media::Ogg, ogg_file(3)),
            (Media::Flac, flac_file()),
            (Media::Glb, glb_file()),
        ];
        for (kind, bytes) in &files {
            assert_eq!(sniff(bytes), Some(*kind), "{kind}");
            assert!(check(*kind, bytes).is_ok(), "{kind}: {:?}", check(*kind, bytes));
        }
        assert_eq!(check(Media::Mp4, &files[0].1), Ok(Found { size: Some((512, 288)) }));
    }

    #[test]
    fn cut_files_of_each_kind_fail_with_where() {
        for (kind, bytes) in [
            (Media::Mp4, mp4_file(64, 64, 1000)),
            (Media::Webm, webm_file(100)),
            (Media::Mp3, mp3_file(3)),
            (Media::Wav, wav_file(800)),
            (Media::Ogg, ogg_file(3)),
            (Media::Glb, glb_file()),
        ] {
            for keep in [bytes.len() / 2, bytes.len() - 1] {
                let err = check(kind, &bytes[..keep]).expect_err(&format!("{kind} cut at {keep}"));
                assert!(err.contains("cut") || err.contains("no "), "{kind} cut at {keep}: {err}");
            }
        }
        assert_eq!(
            check(Media::Mp4, &mp4_file(64, 64, 1000)[..600]).unwrap_err(),
            "cut short: the `mdat` box needs 1248 bytes, the file has 600"
        );
        assert_eq!(
            check(Media::Flac, &flac_file()[..40]).unwrap_err(),
            "cut short: a metadata block needs 42 bytes, the file has 40"
        );
    }

    #[test]
    fn other_bytes_are_not_media() {
        assert_eq!(sniff(b"<html><body>502 Bad Gateway</body></html>"), None);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n"), None, "images are decoded elsewhere");
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), None, "a WebP image is RIFF too");
        assert_eq!(sniff(b""), None);
        // A wrong container inside the right magic.
        let mut no_moov = mp4_file(8, 8, 10);
        no_moov[28..32].copy_from_slice(b"free");
        assert_eq!(check(Media::Mp4, &no_moov).unwrap_err(), "no `moov` box: the file cannot be played");
        let mut garbage = mp3_file(2);
        garbage.extend_from_slice(b"not a frame");
        assert!(check(Media::Mp3, &garbage).unwrap_err().starts_with("2 whole frames, then"));
        assert!(
            check(Media::Glb, &[b"glTF\x01\0\0\0".as_slice(), &[0; 8]].concat()).unwrap_err().contains("version 1")
        );
    }

    #[test]
    fn walks_never_panic_on_any_prefix_or_flipped_byte() {
        let files =
            [mp4_file(16, 16, 40), webm_file(20), mp3_file(2), wav_file(10), ogg_file(2), flac_file(), glb_file()];
        for bytes in &files {
            let kind = sniff(bytes).unwrap();
            for keep in 0..bytes.len() {
                let _ = check(kind, &bytes[..keep]);
            }
            for i in 0..bytes.len().min(200) {
                let mut flipped = bytes.clone();
                flipped[i] ^= 0xFF;
                let _ = check(kind, &flipped);
                flipped[i] = 0xFF;
                let _ = check(kind, &flipped);
            }
        }
    }
}
