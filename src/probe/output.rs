//! Output checks (`expect.output`): the media a successful answer points to is downloaded and
//! checked — it exists, decodes, has the size asked for and is not blank. A status code never
//! shows a `success` whose image is a 404 on the CDN, truncated, black, or the wrong size.
//!
//! Downloads go to whatever host the answer names (the CDN, not the API), never with the API key,
//! following at most 3 redirects, bounded in bytes and time. Nothing recorded carries a query
//! string (signed CDN URLs keep their tokens there).

use std::io::Cursor;

use serde_json::Value;
use tokio::time::Instant;

use super::media;
use crate::config::{OutputCheck, OutputSize};
use crate::observe::{self, Observer, OutputResult};

/// Memory one decoded image may take (8192×8192 RGBA); larger ones fail as undecodable rather
/// than push the agent over its memory limit.
const MAX_DECODED: u64 = 256 << 20;
/// The widest and tallest image decoded, whatever its memory.
const MAX_SIDE: u32 = 16_384;
/// Redirects followed per download (a CDN may send one or two).
const MAX_REDIRECTS: usize = 3;
/// At most this many files are checked per run, whatever the answer lists.
const MAX_FILES: usize = 8;
/// The standard deviation of luminance (0–255) under which an image counts as blank.
const BLANK_STDDEV: f64 = 3.0;

/// The URLs of the generated files: `output`, else `future_links`, else `proxy_links` (each an
/// array, a string, or an object keyed `"0"`, `"1"`…).
pub(crate) fn urls(answer: &Value) -> Vec<String> {
    fn list(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) if !s.is_empty() => vec![s.clone()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Value::Object(m) => {
                let mut keyed: Vec<(u64, String)> =
                    m.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_owned()))).collect();
                keyed.sort();
                keyed.into_iter().map(|(_, v)| v).collect()
            }
            _ => Vec::new(),
        }
    }
    ["output", "future_links", "proxy_links"]
        .iter()
        .map(|k| list(&answer[*k]))
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

/// A URL as it may be shown: scheme, host, port and path, no query or fragment.
pub(crate) fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The width × height the request asked for, when it names both.
fn requested_size(request: Option<&Value>) -> Option<(u32, u32)> {
    let dim = |k: &str| -> Option<u32> {
        let n = crate::classify::number(request?.get(k)?)?;
        (n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX)).then_some(n as u32)
    };
    Some((dim("width")?, dim("height")?))
}

/// What checking one downloaded file found.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Ok,
    Failed(OutputResult, String),
}

/// Checks the output of a successful `answer` to `request`; each failed check, one line each
/// (check, URL and why).
pub(crate) async fn check(
    probe: &str,
    cfg: &OutputCheck,
    answer: &Value,
    request: Option<&Value>,
    client: &reqwest::Client,
    observer: &Observer,
) -> Vec<String> {
    let mut failed = Vec::new();
    let urls = urls(answer);
    if urls.len() < cfg.count {
        observer.emit(observe::OutputChecked { probe, result: OutputResult::NotFound, url: "-", download: None });
        failed.push(format!("output: {} URL(s) in the answer, expected at least {}", urls.len(), cfg.count));
    }
    let want = match cfg.size {
        OutputSize::FromRequest => requested_size(request),
        OutputSize::Fixed { width, height } => Some((width, height)),
        OutputSize::Any => None,
    };
    for url in urls.iter().take(MAX_FILES) {
        let started = Instant::now();
        let (verdict, downloaded) = match download(url, cfg, client).await {
            Err((result, why)) => (Verdict::Failed(result, why), None),
            Ok((content_type, bytes)) => {
                let took = started.elapsed();
                let cfg = cfg.clone();
                let judged = tokio::task::spawn_blocking(move || judge(&content_type, &bytes, &cfg, want))
                    .await
                    .unwrap_or_else(|_| Verdict::Failed(OutputResult::Undecodable, "the decoder failed".into()));
                (judged, Some(took))
            }
        };
        let url = shown(url);
        let result = match &verdict {
            Verdict::Ok => OutputResult::Ok,
            Verdict::Failed(r, why) => {
                failed.push(format!("output {}: {url}: {why}", r.as_str()));
                *r
            }
        };
        observer.emit(observe::OutputChecked { probe, result, url: &url, download: downloaded });
    }
    failed
}

/// Downloads one file: (content type, bytes), or the check it failed and why.
async fn download(
    url: &str,
    cfg: &OutputCheck,
    client: &reqwest::Client,
) -> Result<(String, Vec<u8>), (OutputResult, String)> {
    let failed = |why: String| (OutputResult::DownloadFailed, why);
    let allowed = |u: &url::Url| -> Result<(), (OutputResult, String)> {
        if !matches!(u.scheme(), "http" | "https") {
            return Err(failed(format!("scheme {} is not http(s)", u.scheme())));
        }
        let host = u.host_str().unwrap_or("");
        if !cfg.hosts.is_empty() && !cfg.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(failed(format!("host {host} is not in expect.output.hosts")));
        }
        Ok(())
    };
    let mut target = url::Url::parse(url).map_err(|_| failed("not a URL".into()))?;
    let get = async {
        // Redirects are followed here, not by the client, so that each hop meets the allowlist.
        let mut hops = 0;
        let mut resp = loop {
            allowed(&target)?;
            let resp = client.get(target.clone()).send().await.map_err(|_| failed("cannot be fetched".into()))?;
            let next = resp.status().is_redirection().then(|| resp.headers().get(reqwest::header::LOCATION)).flatten();
            let Some(location) = next else { break resp };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(failed(format!("more than {MAX_REDIRECTS} redirects")));
            }
            let location = location.to_str().map_err(|_| failed("a redirect to an unreadable Location".into()))?;
            target = target.join(location).map_err(|_| failed("a redirect to an invalid Location".into()))?;
        };
        let status = resp.status().as_u16();
        if status == 404 || status == 410 {
            return Err((OutputResult::NotFound, format!("HTTP {status}")));
        }
        if !resp.status().is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        let max = cfg.max_bytes.as_u64() as usize;
        if resp.content_length().is_some_and(|n| n as usize > max) {
            return Err((OutputResult::TooLarge, format!("larger than max_bytes ({})", cfg.max_bytes)));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|_| failed("the download was cut".into()))? {
            if body.len() + chunk.len() > max {
                return Err((OutputResult::TooLarge, format!("larger than max_bytes ({})", cfg.max_bytes)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((content_type, body))
    };
    tokio::time::timeout(cfg.timeout, get)
        .await
        .unwrap_or_else(|_| Err(failed(format!("no download within {}", humantime::format_duration(cfg.timeout)))))
}

/// Judges a downloaded file by its bytes, whatever its `Content-Type` says: video, audio and 3D
/// files by a walk of their container (media.rs), images by decoding them. With `decodes: false`
/// only what is there is checked: a file that is neither passes.
pub(crate) fn judge(content_type: &str, bytes: &[u8], cfg: &OutputCheck, want: Option<(u32, u32)>) -> Verdict {
    judge_within(content_type, bytes, cfg, want, MAX_DECODED)
}

/// [`judge`] with the memory one decoded image may take given (the fuzz harness passes a smaller
/// one: the decoders' paths are the same at any size, and a larger image takes the same refusal).
pub(crate) fn judge_within(
    content_type: &str,
    bytes: &[u8],
    cfg: &OutputCheck,
    want: Option<(u32, u32)>,
    max_decoded: u64,
) -> Verdict {
    if bytes.is_empty() {
        return Verdict::Failed(OutputResult::Undecodable, "an empty file".into());
    }
    if let Some(kind) = media::sniff(bytes) {
        return match media::check(kind, bytes) {
            Err(why) if cfg.decodes => Verdict::Failed(OutputResult::Undecodable, format!("{kind}: {why}")),
            Ok(media::Found { size: Some((w, h)) }) if want.is_some_and(|want| want != (w, h)) => {
                let (ww, wh) = want.unwrap_or_default();
                Verdict::Failed(OutputResult::WrongSize, format!("{kind} video of {w}x{h}, expected {ww}x{wh}"))
            }
            _ => Verdict::Ok,
        };
    }
    let decoded = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(image::ImageError::IoError)
        .and_then(|mut r| {
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(MAX_SIDE);
            limits.max_image_height = Some(MAX_SIDE);
            limits.max_alloc = Some(max_decoded);
            r.limits(limits);
            r.decode()
        });
    let image = match decoded {
        Ok(image) => image,
        Err(image::ImageError::Limits(_)) if cfg.decodes => {
            return Verdict::Failed(
                OutputResult::Undecodable,
                format!(
                    "an image larger than the agent decodes (over {MAX_SIDE} pixels a side or {} MiB decoded)",
                    max_decoded >> 20
                ),
            );
        }
        Err(_) if cfg.decodes => {
            let head: String =
                bytes.iter().take(16).map(|b| if b.is_ascii_graphic() { char::from(*b) } else { '.' }).collect();
            let content_type = if content_type.is_empty() { "no Content-Type" } else { content_type };
            return Verdict::Failed(
                OutputResult::Undecodable,
                format!(
                    "not an image that decodes (PNG, JPEG, WebP, GIF) nor a known video, audio or 3D file \
                     ({} bytes, {content_type}, starting `{head}`)",
                    bytes.len()
                ),
            );
        }
        Err(_) => return Verdict::Ok,
    };
    let (w, h) = (image.width(), image.height());
    if let Some((ww, wh)) = want {
        if (w, h) != (ww, wh) {
            return Verdict::Failed(OutputResult::WrongSize, format!("{w}x{h}, expected {ww}x{wh}"));
        }
    }
    if cfg.not_blank {
        let luma = image.thumbnail(64, 64).to_luma8();
        let n = luma.len().max(1) as f64;
        let mean = luma.iter().map(|p| f64::from(*p)).sum::<f64>() / n;
        let var = luma.iter().map(|p| (f64::from(*p) - mean).powi(2)).sum::<f64>() / n;
        if var.sqrt() < BLANK_STDDEV {
            return Verdict::Failed(
                OutputResult::Blank,
                format!("a near-uniform image (mean luminance {mean:.0}, deviation {:.1})", var.sqrt()),
            );
        }
    }
    Verdict::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn urls_from_every_shape_the_api_uses() {
        let j = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(urls(&j(r#"{"output":["a","b"]}"#)), ["a", "b"]);
        assert_eq!(urls(&j(r#"{"output":"","future_links":["f"]}"#)), ["f"]);
        assert_eq!(urls(&j(r#"{"output":[],"proxy_links":{"1":"y","0":"x"}}"#)), ["x", "y"]);
        assert!(urls(&j(r#"{"status":"success"}"#)).is_empty());
        assert_eq!(shown("https://cdn.example/a/b.png?X-Amz-Signature=secret#f"), "https://cdn.example/a/b.png");
    }

    #[test]
    fn images_decode_with_their_size_and_are_not_blank() {
        let cfg = OutputCheck::default();
        let noisy = png(64, 32, |x, y| ((x * 7 + y * 13) % 256) as u8);
        assert_eq!(judge("image/png", &noisy, &cfg, Some((64, 32))), Verdict::Ok);
        assert!(matches!(
            judge("image/png", &noisy, &cfg, Some((64, 64))),
            Verdict::Failed(OutputResult::WrongSize, w) if w == "64x32, expected 64x64"
        ));
        let black = png(64, 32, |_, _| 0);
        assert!(matches!(judge("image/png", &black, &cfg, None), Verdict::Failed(OutputResult::Blank, _)));
        let cut = &noisy[..noisy.len() / 2];
        assert!(matches!(judge("image/png", cut, &cfg, None), Verdict::Failed(OutputResult::Undecodable, _)));
        let lenient = OutputCheck { decodes: false, ..cfg };
        assert_eq!(judge("text/plain", b"hello", &lenient, None), Verdict::Ok);
    }

    #[test]
    fn an_image_larger_than_the_decode_limit_is_refused_by_its_header_and_said_so() {
        // 34 bytes of GIF declaring a 15619×515 canvas (31 MiB decoded): found by the fuzzer,
        // where decoding it took seconds in a debug build.
        let gif = b"GIF89a\x03\x3d\x03\x02\x80\0\0\xff\xff\0\0\0\0,\0\x02\0\0\x01\0\x01\0\x02\x02D\x01\0;";
        let cfg = OutputCheck { not_blank: false, ..OutputCheck::default() };
        let Verdict::Failed(OutputResult::Undecodable, why) = judge_within("image/gif", gif, &cfg, None, 4 << 20)
        else {
            panic!("a canvas over the limit was decoded")
        };
        assert_eq!(why, "an image larger than the agent decodes (over 16384 pixels a side or 4 MiB decoded)");
        // Within the agent's own limit the same file decodes, and its size is what it declares.
        assert!(matches!(
            judge("image/gif", gif, &cfg, Some((1, 1))),
            Verdict::Failed(OutputResult::WrongSize, w) if w == "15619x515, expected 1x1"
        ));
        let lenient = OutputCheck { decodes: false, ..cfg };
        assert_eq!(judge_within("image/gif", gif, &lenient, None, 4 << 20), Verdict::Ok);
    }

    #[test]
    fn media_is_judged_by_its_bytes_not_its_content_type() {
        let cfg = OutputCheck::default();
        // An HTML error page served as video/mp4.
        let Verdict::Failed(OutputResult::Undecodable, why) =
            judge("video/mp4", b"<html>Bad Gateway</html>", &cfg, None)
        else {
            panic!("an HTML page passed as a video")
        };
        assert!(why.contains("video/mp4, starting `<html>Bad.Gatewa`"), "{why}");
        // A lone `ftyp` box: the magic of an MP4, not a playable one.
        assert!(matches!(
            judge("video/mp4", b"\x00\x00\x00\x10ftypmp42\0\0\0\0", &cfg, None),
            Verdict::Failed(OutputResult::Undecodable, why) if why == "MP4: no `moov` box: the file cannot be played"
        ));
        // A WAV served as application/octave-stream is still a WAV; a cut one is not.
        let mut wav =
            b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data\0\0\0\0".to_vec();
        assert_eq!(judge("application/octet-stream", &wav, &cfg, None), Verdict::Ok);
        wav.truncate(30);
        assert!(
            matches!(judge("audio/wav", &wav, &cfg, None), Verdict::Failed(OutputResult::Undecodable, w) if w.starts_with("WAV: cut short"))
        );
        let lenient = OutputCheck { decodes: false, ..cfg };
        assert_eq!(judge("audio/wav", &wav, &lenient, None), Verdict::Ok, "decodes: false checks nothing inside");
    }
}
