//! Bounded label values from what a request carries: the route template of a path, the status.

use std::borrow::Cow;
use std::sync::LazyLock;

use super::{NONE, OTHER};

/// Longest endpoint label kept; longer paths are not API endpoints.
const MAX_ENDPOINT_CHARS: usize = 128;

/// `http_status` label: the code, or `none` when no response arrived.
pub fn status_label(status: Option<u16>) -> Cow<'static, str> {
    match status {
        None => Cow::Borrowed(NONE),
        // The statuses the API answers with, without formatting each time.
        Some(s @ 100..=599) => {
            let at = usize::from(s - 100) * 3;
            Cow::Borrowed(&STATUS_TEXT[at..at + 3])
        }
        Some(s) => Cow::Owned(s.to_string()),
    }
}

/// "100101102…599": every three-digit status, each three bytes from `(status - 100) * 3`.
static STATUS_TEXT: LazyLock<String> = LazyLock::new(|| (100u16..600).map(|s| s.to_string()).collect());

/// Whether a request path (or endpoint label) is the LLM API's (`/api/v7/llm/…`).
pub fn is_llm_endpoint(path: &str) -> bool {
    path.contains("/llm/")
}

/// Whether a path segment is a job or resource id rather than part of the route.
fn is_id_like(seg: &str) -> bool {
    let len = seg.len();
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    (len > 0 && digits == len)
        || (len >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        || (len >= 8 && digits >= 3)
        || len > 40
}

/// The route of a request path: no query, id-like segments as `{id}`, at most 128 characters.
pub fn endpoint_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(if is_id_like(seg) { "{id}" } else { seg });
    }
    if out.is_empty() {
        out.push('/');
    }
    if out.len() > MAX_ENDPOINT_CHARS { OTHER.to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_templates() {
        let table = [
            ("/api/v6/images/text2img", "/api/v6/images/text2img"),
            ("/api/v6/images/fetch/134701497", "/api/v6/images/fetch/{id}"),
            ("/api/v6/images/fetch/abc123-def456", "/api/v6/images/fetch/{id}"),
            ("/api/v6/images/fetch/3f2b8c1e-9d4a-4e6b-8c2d-1a2b3c4d5e6f", "/api/v6/images/fetch/{id}"),
            ("/api/v7/images/image-to-image", "/api/v7/images/image-to-image"),
            ("/api/v7/video-fusion/fetch/77?key=secret", "/api/v7/video-fusion/fetch/{id}"),
            ("/api/v7/models?key=sk-secret", "/api/v7/models"),
            ("//api//v6/realtime/img2img/", "/api/v6/realtime/img2img"),
            ("/", "/"),
            ("", "/"),
        ];
        for (path, want) in table {
            assert_eq!(endpoint_template(path), want, "{path}");
        }
        assert_eq!(endpoint_template(&format!("/{}", "a/".repeat(100))), OTHER);
    }

    #[test]
    fn status_labels() {
        assert_eq!((status_label(Some(429)), status_label(None)), ("429".into(), "none".into()));
        assert_eq!([status_label(Some(100)), status_label(Some(599)), status_label(Some(600))], ["100", "599", "600"]);
    }
}
