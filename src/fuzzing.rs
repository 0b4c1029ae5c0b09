//! Entry points for the `cargo fuzz` targets in `fuzz/` (built only with the `fuzzing` feature).
//!
//! Each takes arbitrary bytes, drives one parser the agent exposes to the outside world exactly as
//! the agent calls it, and asserts what must hold for any input besides "no panic": decoded bodies
//! stay within their limit, a parsed document's figures are in range, a key is never left in what
//! is recorded. The first bytes of an input choose the variant (status, encoding, format), so
//! the corpora in `fuzz/corpus/` are those bytes followed by a real document.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, header};

use crate::classify::{self, Classification, Context, RequestKind};
use crate::config::{self, Environment, OutputCheck, OutputSize, PageFormat};

fn pick(data: &[u8], n: usize) -> (&[u8], &[u8]) {
    data.split_at(n.min(data.len()))
}

const ENCODINGS: [Option<&str>; 6] = [None, Some("gzip"), Some("deflate"), Some("br"), Some("identity"), Some("zstd")];

/// The classifier, on a status, `Content-Encoding`, `Content-Type`, `Retry-After` and a body.
/// Input: 2 bytes of status, 1 byte choosing headers, then the body.
pub fn classify(data: &[u8]) {
    let (head, body) = pick(data, 3);
    let [s0, s1, h] = <[u8; 3]>::try_from(head).unwrap_or([0, 200, 0]);
    let status = 100 + u16::from_be_bytes([s0, s1]) % 500;
    let mut headers = HeaderMap::new();
    if let Some(enc) = ENCODINGS[usize::from(h & 7) % ENCODINGS.len()] {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
    }
    if h & 128 != 0 {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    } else if h & 8 != 0 {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if h & 16 != 0 {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
    } else if h & 32 != 0 {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
    }
    let kind = if h & 64 != 0 { RequestKind::Fetch } else { RequestKind::Submit };
    // A 64 KiB decode limit, not the agent's 1 MiB: the same paths, and a brotli bomb inflated to
    // 1 MiB per input spent most of the target's time in the decompressor.
    let ctx =
        Context { now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000), kind, decode_limit: 64 << 10 };
    let c = classify::classify(status, &headers, body, &ctx);
    if let Some(eta) = c.eta() {
        assert!(eta.is_finite() && eta >= 0.0, "eta {eta} must be a finite, non-negative number of seconds");
    }
    if let Classification::Error { details, .. } = &c {
        if let Some(r) = details.retry_after {
            assert!(r.is_finite() && r >= 0.0, "retry_after {r} must be finite and non-negative");
        }
    }
    let d = c.details();
    if let Some(m) = &d.message {
        assert!(m.chars().count() <= classify::MAX_MESSAGE_CHARS, "message of {} chars", m.chars().count());
    }
    if let Some(id) = &d.id {
        assert!(id.len() <= classify::MAX_ID_CHARS, "job id of {} bytes", id.len());
    }
    if let Some(llm) = &d.llm {
        assert!(llm.model.as_ref().is_none_or(|m| m.chars().count() <= 128), "a model name over 128 chars");
        assert!(llm.finish_reasons.len() <= 8, "{} finish reasons kept", llm.finish_reasons.len());
    }
}

/// The event-stream reader (LLM streams) fed in pieces: 1 byte choosing the piece size, then the
/// stream. However the bytes are split, it says the same as when they come at once: the same
/// verdict, tokens and finish reasons, and first content in some piece exactly when there is any.
pub fn stream(data: &[u8]) {
    let (head, body) = pick(data, 1);
    let size = usize::from(head.first().copied().unwrap_or(1)).max(1);
    let mut whole = classify::stream::Reader::new();
    let content = whole.feed(body);
    let mut pieces = classify::stream::Reader::new();
    let mut first_in = None;
    for (i, piece) in body.chunks(size).enumerate() {
        if pieces.feed(piece) {
            assert!(first_in.is_none(), "first content reported twice");
            first_in = Some(i);
        }
    }
    assert_eq!(content, first_in.is_some(), "first content seen whole but not in pieces, or the reverse");
    let (whole, pieces) = (whole.finish(), pieces.finish());
    assert_eq!(whole, pieces, "the verdict depends on how the stream was split");
}

/// Body decoding (gzip, deflate, br, bombs included): 1 byte choosing the encoding, 1 byte the
/// limit, then the body. What comes out is never larger than the limit. Limits of 256 B to 16 KiB:
/// the code paths are the same at every limit, and bombs inflated to the limit of every input
/// (1 MiB at first, then 64 KiB) made the target too slow for millions of runs.
pub fn decode(data: &[u8]) {
    let (head, body) = pick(data, 2);
    let [e, l] = <[u8; 2]>::try_from(head).unwrap_or([0, 0]);
    let limit = 1usize << (8 + usize::from(l % 7)); // 256 B .. 16 KiB
    if let Ok(out) = classify::decode(ENCODINGS[usize::from(e) % ENCODINGS.len()], body, limit) {
        assert!(out.len() <= limit.max(body.len()), "decoded {} bytes over the {limit}-byte limit", out.len());
    }
}

/// The config loader on any text, with every `${VAR}` set. A valid config shows again as YAML.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let env = Environment { var: &|_| Some("fuzz-value".to_owned()), base_dir: std::env::temp_dir() };
    match config::from_yaml(&text, "fuzz.yaml", &env) {
        Ok(c) => {
            let shown = config::to_redacted_yaml(&c);
            assert!(!shown.is_empty());
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("invalid configuration fuzz.yaml"), "unexpected error text: {message}");
        }
    }
}

/// The status-page parsers: 1 byte choosing the format (or detection), then the document.
pub fn statuspage(data: &[u8]) {
    use crate::statuspage::{default_html_rules, detect, parse};
    let (head, body) = pick(data, 1);
    let format = match head.first().map_or(0, |b| b % 5) {
        0 => detect(body),
        1 => Some(PageFormat::Statuspage),
        2 => Some(PageFormat::Instatus),
        3 => Some(PageFormat::Betterstack),
        _ => Some(PageFormat::Html),
    };
    let Some(format) = format else { return };
    if let Ok(snap) = parse(format, body, &default_html_rules()) {
        for (name, status) in &snap.components {
            assert!(status.level() <= snap.status.level(), "component {name:?} is worse than the page it is on");
        }
    }
}

/// The emulator's scenario parser (YAML or JSON).
pub fn scenario(data: &[u8]) {
    if let Ok(s) = crate::sim::Scenario::parse(&String::from_utf8_lossy(data)) {
        assert!((0.0..=1.0).contains(&s.failure_ratio) && (0.0..=1.0).contains(&s.sync_ratio));
    }
}

/// The proxy's request inspection: the body head (`model_id`, `request_id`, `key`) and the key in
/// headers and query. Input: a query string line, then the body. A key that is found is scrubbed
/// from any message that quotes it.
pub fn request(data: &[u8]) {
    use crate::proxy::inspect::{request_fields, request_secrets};
    let (query, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let fields = request_fields(body);
    let mut request = http::Request::builder().uri("/api/v6/images/text2img");
    if let Ok(q) = std::str::from_utf8(query) {
        if let Ok(uri) = format!("/api/v6/images/text2img?{q}").parse::<http::Uri>() {
            request = request.uri(uri);
        }
    }
    if let Some(k) = fields.key.as_deref().and_then(|k| HeaderValue::from_str(k).ok()) {
        request = request.header("key", k.clone()).header(header::AUTHORIZATION, k);
    }
    let Ok(request) = request.body(()) else { return };
    let (parts, ()) = request.into_parts();
    let mut secrets = request_secrets(&parts);
    secrets.extend(fields.key);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    for secret in &secrets {
        // Real keys are long and alphanumeric; shorter ones may be a word of the message itself.
        if secret.len() >= 16 && secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let message = format!("Invalid API key {secret}, key={secret}");
            let scrubbed = crate::observe::spans::scrub(&message, &refs);
            assert!(!scrubbed.contains(secret.as_str()), "the key survived scrubbing: {scrubbed}");
        }
    }
}

/// The webhook receiver's reading of a delivery: the `track_id` it carries back and the job id.
pub fn webhook(data: &[u8]) {
    let Some(payload) = crate::webhook::Payload::read(data) else { return };
    for id in [payload.track_id, payload.job_id].into_iter().flatten() {
        assert!(id.chars().count() <= classify::MAX_ID_CHARS, "an id of {} chars is not bounded", id.len());
        assert!(!id.trim().is_empty(), "an empty id");
    }
}

/// The output check's judgement of a downloaded file (image decoding with its limits). Input: 1
/// byte choosing the declared type and the wanted size, then the file.
pub fn output(data: &[u8]) {
    let (head, file) = pick(data, 1);
    let h = head.first().copied().unwrap_or(0);
    let content_type = ["image/png", "video/mp4", "audio/wav", "application/octet-stream"][usize::from(h & 3)];
    let want = (h & 4 != 0).then_some((u32::from(h >> 3) + 1, u32::from(h >> 3) + 1));
    let cfg = OutputCheck { size: OutputSize::FromRequest, ..OutputCheck::default() };
    // 4 MiB decoded (1024×1024 RGBA) rather than the agent's 256: the same decoders and the same
    // refusal of larger images, without a 34-byte GIF declaring a vast canvas costing seconds (in
    // CI's debug build).
    let _ = crate::probe::output::judge_within(content_type, file, &cfg, want, 4 << 20);
}
