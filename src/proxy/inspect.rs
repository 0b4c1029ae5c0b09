//! What the proxy reads from the traffic without changing it: the request's `model_id`,
//! `request_id` and key (only to scrub the key from what is recorded), which paths poll jobs,
//! which answers are not worth classifying, and the opt-in rewrite of `fetch_result`.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::classify::object::Text;
use crate::classify::stream::starts_with_ignore_case;
use crate::config::Config;
use crate::observe::UninspectedReason;

/// Whether a path polls a job: `…/fetch/{id}` or `…/fetch`.
pub(super) fn is_fetch_path(path: &str) -> bool {
    path.trim_end_matches('/').rsplit('/').take(2).any(|seg| seg == "fetch")
}

/// The job id a fetch path names (`…/fetch/{id}`).
pub(super) fn fetch_path_id(path: &str) -> Option<&str> {
    let mut segs = path.trim_end_matches('/').rsplit('/');
    let last = segs.next()?;
    (segs.next() == Some("fetch") && !last.is_empty()).then_some(last)
}

/// Answers the proxy passes through without classifying: binary content, and streams it cannot
/// read (event streams it reads; see `classify::stream`).
pub(super) fn uninspected_reason(headers: &HeaderMap) -> Option<UninspectedReason> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())?;
    let is = |prefix: &&str| starts_with_ignore_case(ct, prefix);
    if ["application/x-ndjson", "application/jsonl", "application/stream+json", "multipart/"].iter().any(is) {
        Some(UninspectedReason::Stream)
    } else if ["image/", "audio/", "video/", "application/octet-stream", "application/zip"].iter().any(is) {
        Some(UninspectedReason::NotJson)
    } else {
        None
    }
}

/// Rewriting needs the whole answer in memory: only plain (not compressed) JSON within the limit.
pub(super) fn rewritable(headers: &HeaderMap, limit: usize) -> bool {
    let plain = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|e| e.eq_ignore_ascii_case("identity"));
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("json"));
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|n| n <= limit);
    plain && json && small
}

/// The largest answer read whole before it is answered ([`small`]).
pub(super) const WHOLE_MAX: usize = 64 * 1024;

/// Whether an answer says it is at most [`WHOLE_MAX`] long.
pub(super) fn small(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= WHOLE_MAX)
}

static MODEL_ID: LazyLock<regex::Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a literal pattern, exercised by the tests
    regex::Regex::new(r#""model(?:_id)?"\s*:\s*"([^"\\]{1,128})""#).expect("model pattern is valid")
});

/// What the proxy reads from a request body head (even a truncated one).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RequestFields {
    /// `model_id` (the media API) or `model` (the LLM API).
    pub model_id: Option<String>,
    pub request_id: Option<String>,
    /// Only to scrub it from what is recorded.
    pub key: Option<String>,
}

pub(crate) fn request_fields(head: &[u8]) -> RequestFields {
    if head.is_empty() {
        return RequestFields::default();
    }
    if let Ok(Fields { model_id, model, request_id, key }) = serde_json::from_slice::<Fields<'_>>(head) {
        let owned = |t: Option<Cow<'_, str>>| t.map(Cow::into_owned);
        return RequestFields { model_id: owned(model_id.or(model)), request_id, key: owned(key) };
    }
    let text = String::from_utf8_lossy(head);
    RequestFields { model_id: MODEL_ID.captures(&text).map(|c| c[1].to_owned()), ..Default::default() }
}

/// The fields of a request body's JSON object that [`request_fields`] reads, taken as the parser
/// passes them: the rest (a prompt, a chat's messages, an image in base64) is skipped without
/// being copied or built into a tree. As with a `serde_json::Value`, the last of duplicate keys
/// wins, only string values count (`request_id` may be a number), and anything but an object is
/// an error.
#[derive(Default)]
struct Fields<'a> {
    model_id: Option<Cow<'a, str>>,
    model: Option<Cow<'a, str>>,
    request_id: Option<String>,
    key: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
                    match name.as_deref() {
                        Some("model_id") => fields.model_id = map.next_value::<Text<'de>>()?.0,
                        Some("model") => fields.model = map.next_value::<Text<'de>>()?.0,
                        Some("key") => fields.key = map.next_value::<Text<'de>>()?.0,
                        Some("request_id") => fields.request_id = crate::classify::id(&map.next_value::<Value>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(Object)
    }
}

/// The key as it travels outside the body (header `key`, `Authorization`, `x-api-key`, query
/// `key`), only to scrub it from what is recorded.
pub(crate) fn request_secrets(parts: &http::request::Parts) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = parts.headers.get("key").and_then(|v| v.to_str().ok()) {
        out.push(k.to_owned());
    }
    if let Some(a) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        out.push(a.split_whitespace().last().unwrap_or(a).to_owned());
    }
    if let Some(k) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        out.push(k.to_owned());
    }
    if let Some(q) = parts.uri.query() {
        out.extend(url::form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == "key").map(|(_, v)| v.into_owned()));
    }
    out
}

/// Replaces the upstream origin of `fetch_result` with the proxy's own address, keeping every
/// other byte of the answer (PHP-style `\/` escapes included).
pub(super) fn rewrite_fetch_result(body: &Bytes, url: &str, config: &Config, local: SocketAddr) -> Option<Bytes> {
    let origin = config.upstream.base_url.origin().ascii_serialization();
    let rest = url.strip_prefix(&origin)?;
    let new = format!("http://{local}{rest}");
    let text = std::str::from_utf8(body).ok()?;
    for (old, replacement) in [
        (serde_json::to_string(url).ok()?, serde_json::to_string(&new).ok()?),
        (serde_json::to_string(url).ok()?.replace('/', "\\/"), serde_json::to_string(&new).ok()?.replace('/', "\\/")),
    ] {
        if text.contains(&old) {
            return Some(Bytes::from(text.replacen(&old, &replacement, 1)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn fetch_paths_and_ids() {
        assert!(is_fetch_path("/api/v6/images/fetch/123"));
        assert!(is_fetch_path("/api/v6/images/fetch"));
        assert!(is_fetch_path("/api/v7/video-fusion/fetch/abc-1"));
        assert!(!is_fetch_path("/api/v6/images/text2img"));
        assert!(!is_fetch_path("/api/v6/fetcher/1"));
        assert_eq!(fetch_path_id("/api/v6/images/fetch/123"), Some("123"));
        assert_eq!(fetch_path_id("/api/v6/images/fetch"), None);
    }

    #[test]
    fn request_fields_even_from_a_truncated_head() {
        let full = request_fields(br#"{"key":"k","model_id":"flux","request_id":7}"#);
        assert_eq!(
            (full.model_id.as_deref(), full.request_id.as_deref(), full.key.as_deref()),
            (Some("flux"), Some("7"), Some("k"))
        );
        let cut = request_fields(br#"{"key":"k","model_id":"sdxl","init_image":"data:image/png;base64,AAAA"#);
        assert_eq!((cut.model_id.as_deref(), cut.request_id), (Some("sdxl"), None));
        let chat = request_fields(br#"{"model":"Qwen/Qwen2.5-VL-72B-Instruct-together","stream":true,"messages":[]}"#);
        assert_eq!(chat.model_id.as_deref(), Some("Qwen/Qwen2.5-VL-72B-Instruct-together"));
        let cut =
            request_fields(br#"{"model":"claude-x","max_tokens":64,"messages":[{"role":"user","content":"a long"#);
        assert_eq!(cut.model_id.as_deref(), Some("claude-x"));
        assert_eq!(request_fields(b"not json"), RequestFields::default());
    }

    /// What `request_fields` read when it built the whole `serde_json::Value` (before it skipped
    /// what it does not need).
    fn through_a_tree(head: &[u8]) -> Option<RequestFields> {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(head) else { return None };
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let request_id = m.get("request_id").and_then(crate::classify::id);
        Some(RequestFields { model_id: text("model_id").or_else(|| text("model")), request_id, key: text("key") })
    }

    #[test]
    fn request_fields_read_as_the_whole_tree_would() {
        let cases: &[&[u8]] = &[
            br#"{"key":"k","model_id":"flux","request_id":7}"#,
            br#"{"model_id":5,"model":"llama","key":["k"],"request_id":" 12 "}"#,
            br#"{"model_id":"a","model_id":"b","key":"k1","key":null}"#,
            br#"{"mod\u0065l_id":"esc\"aped","k\u0065y":"s\u00e9cret","prompt":{"nested":[1,{"key":"inner"}]}}"#,
            br#"{"messages":[{"role":"user","content":"x"}],"model":"claude","stream":true,"temperature":0.2}"#,
            br#"{"request_id":{"a":1},"model":true}"#,
            br#"{}"#,
            br#"[{"model_id":"flux"}]"#,
            br#""model_id""#,
            br#"{"model_id":"flux"} trailing"#,
        ];
        for head in cases {
            let tree = through_a_tree(head);
            let read = serde_json::from_slice::<Fields<'_>>(head).ok().map(|f| RequestFields {
                model_id: f.model_id.or(f.model).map(Cow::into_owned),
                request_id: f.request_id,
                key: f.key.map(Cow::into_owned),
            });
            assert_eq!(read, tree, "{}", String::from_utf8_lossy(head));
        }
    }

    proptest! {
        #[test]
        fn request_fields_agree_with_the_tree_on_any_json_object(
            pairs in proptest::collection::vec(
                (
                    prop::sample::select(vec!["model_id", "model", "key", "request_id", "prompt", "k\\u0065y"]),
                    prop_oneof![
                        "[a-z\\\\\"é ]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
                        any::<i64>().prop_map(|n| n.to_string()),
                        Just("null".to_owned()),
                        Just(r#"{"key":"x","a":[1,2]}"#.to_owned()),
                    ],
                ),
                0..6,
            )
        ) {
            let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let body = format!("{{{}}}", fields.join(","));
            let tree = through_a_tree(body.as_bytes());
            prop_assert!(tree.is_some(), "{}", body);
            prop_assert_eq!(Some(request_fields(body.as_bytes())), tree, "{}", body);
        }
    }

    #[test]
    fn fetch_result_rewrites_keep_every_other_byte() {
        let text = "upstream:\n  base_url: http://api.example:9000\n";
        let var = |_: &str| None;
        let env = crate::config::Environment { var: &var, base_dir: ".".into() };
        let config = crate::config::from_yaml(text, "test", &env).unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let url = "http://api.example:9000/api/v6/images/fetch/7";
        let plain = Bytes::from(format!(r#"{{"status":"processing","fetch_result":"{url}","id":7}}"#));
        assert_eq!(
            rewrite_fetch_result(&plain, url, &config, local).unwrap(),
            r#"{"status":"processing","fetch_result":"http://127.0.0.1:8080/api/v6/images/fetch/7","id":7}"#
        );
        let escaped = Bytes::from(r#"{"fetch_result":"http:\/\/api.example:9000\/api\/v6\/images\/fetch\/7"}"#);
        assert_eq!(
            rewrite_fetch_result(&escaped, url, &config, local).unwrap(),
            r#"{"fetch_result":"http:\/\/127.0.0.1:8080\/api\/v6\/images\/fetch\/7"}"#
        );
        assert!(rewrite_fetch_result(&plain, "https://elsewhere/x", &config, local).is_none(), "other origins stay");
    }
}
