//! The API's error model (SPEC §2): one pure function from an HTTP answer (or a transport
//! failure) to an outcome, an error class, a reason, and the fields worth extracting.
//!
//! Probes and the proxy both call [`classify`], so they can never disagree on what an answer
//! means. This module does no I/O, keeps no state and never panics, whatever the bytes; it
//! knows nothing of metrics or configuration.

mod body;
mod labels;
mod message;

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde_json::Value;

pub use body::{DecodeError, decode};
pub(crate) use labels::label_enum;
pub use labels::{ApiStatus, ErrorClass, Field, Outcome, PageStatus, Reason, UnknownName};
pub use message::{Recognised, recognise};

/// Longest message kept from an answer (traces cut it further to 256 characters).
pub const MAX_MESSAGE_CHARS: usize = 512;
/// Longest job id kept; longer ids are not ids the API hands out.
pub const MAX_ID_CHARS: usize = 128;
/// Largest decoded body inspected when the caller does not say otherwise.
pub const DEFAULT_DECODE_LIMIT: usize = 4 << 20;

/// What kind of call the answer belongs to; a fetch that errors is a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestKind {
    /// A generation (or any other) call.
    #[default]
    Submit,
    /// A poll of an async job's result.
    Fetch,
}

/// What the caller knows besides the answer itself.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Used to turn an HTTP-date `Retry-After` into seconds.
    pub now: SystemTime,
    pub kind: RequestKind,
    /// Largest decoded body inspected; larger bodies are classified as not inspectable JSON.
    pub decode_limit: usize,
}

impl Context {
    pub fn new(kind: RequestKind) -> Self {
        Context { now: SystemTime::now(), kind, decode_limit: DEFAULT_DECODE_LIMIT }
    }
}

/// A failure before a complete answer arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within the time allowed.
    Timeout,
    /// DNS, connect, reset, TLS, or a truncated body.
    Transport,
}

/// Why an answer is an error, in label terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    pub class: ErrorClass,
    pub reason: Reason,
    /// The parameters a validation error names (empty for other reasons).
    pub fields: Vec<Field>,
}

/// Everything the model extracts from one exchange.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Classification {
    pub outcome: Option<Outcome>,
    /// Present exactly when the outcome is an error.
    pub error: Option<ErrorInfo>,
    /// The body's `status` when it is one the API uses.
    pub api_status: Option<ApiStatus>,
    /// `message`, else legacy `messege`; field-error objects flattened. At most
    /// [`MAX_MESSAGE_CHARS`].
    pub message: Option<String>,
    /// Seconds to wait, from the body's `retry_after` or the `Retry-After` header.
    pub retry_after: Option<f64>,
    /// N of a `Maximum N queued requests` message.
    pub queue_limit: Option<u32>,
    /// Job id (`id`), as text whether the API sent a number or a string.
    pub id: Option<String>,
    /// Promised seconds until a processing job is done.
    pub eta: Option<f64>,
    pub fetch_result: Option<String>,
}

impl Classification {
    /// The outcome; `error` for a value built by hand without one.
    pub fn outcome(&self) -> Outcome {
        self.outcome.unwrap_or(Outcome::Error)
    }

    fn error(class: ErrorClass, reason: Reason) -> Self {
        Classification {
            outcome: Some(Outcome::Error),
            error: Some(ErrorInfo { class, reason, fields: Vec::new() }),
            ..Default::default()
        }
    }
}

/// Classifies a failure that left no answer.
pub fn classify_failure(failure: Failure) -> Classification {
    match failure {
        Failure::Timeout => Classification::error(ErrorClass::Timeout, Reason::Other),
        Failure::Transport => Classification::error(ErrorClass::Transport, Reason::Other),
    }
}

/// Classifies a complete answer. `body` is the bytes as they came over the wire; a
/// `Content-Encoding` is undone on a copy, up to `ctx.decode_limit`.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], ctx: &Context) -> Classification {
    let is_2xx = (200..300).contains(&status);
    let encoding = headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let json = body::decode(encoding, body, ctx.decode_limit).ok().and_then(|b| parse_json(&b));

    let Some(json) = json else {
        let class = if is_2xx { ErrorClass::InvalidResponse } else { ErrorClass::from_http_status(status) };
        let mut c = Classification::error(class, Reason::NonJsonBody);
        c.retry_after = retry_after_header(headers, ctx.now);
        return c;
    };

    let api_status =
        json.get("status").and_then(Value::as_str).and_then(|s| s.trim().to_ascii_lowercase().parse().ok());
    let message = extract_message(&json);
    let recognised = message.as_ref().map(|m| m.recognised).unwrap_or(Recognised {
        reason: Reason::Other,
        field: None,
        queue_limit: None,
    });

    let mut c = Classification {
        api_status,
        id: json.get("id").and_then(id_text),
        retry_after: json.get("retry_after").and_then(seconds).or_else(|| retry_after_header(headers, ctx.now)),
        queue_limit: recognised.queue_limit,
        ..Default::default()
    };
    if let Some(m) = &message {
        c.message = Some(m.text.clone());
    }

    let field_object = message.as_ref().is_some_and(|m| m.field_object);
    let error_info = |class: ErrorClass| {
        let fields = match &message {
            Some(m) if m.field_object => m.fields.clone(),
            _ if recognised.reason.is_validation() => vec![recognised.field.unwrap_or(Field::Other)],
            _ => Vec::new(),
        };
        ErrorInfo { class, reason: recognised.reason, fields }
    };

    if !is_2xx {
        c.outcome = Some(Outcome::Error);
        c.error = Some(error_info(ErrorClass::from_http_status(status)));
        return c;
    }

    match api_status {
        Some(ApiStatus::Success) => c.outcome = Some(Outcome::Success),
        Some(ApiStatus::Processing) => {
            c.outcome = Some(Outcome::Processing);
            c.eta = json.get("eta").and_then(seconds);
            c.fetch_result = json.get("fetch_result").and_then(Value::as_str).map(|s| truncate(s, 2048));
        }
        Some(ApiStatus::Failed) => {
            c.outcome = Some(Outcome::Error);
            c.error = Some(error_info(ErrorClass::JobFailed));
        }
        Some(ApiStatus::Error) => {
            let class = match (recognised.reason.class_when_2xx(), ctx.kind) {
                (ErrorClass::Unknown, _) if field_object => ErrorClass::BadRequest,
                (ErrorClass::Unknown, RequestKind::Fetch) => ErrorClass::JobFailed,
                (class, _) => class,
            };
            c.outcome = Some(Outcome::Error);
            c.error = Some(error_info(class));
        }
        None => {
            c.outcome = Some(Outcome::Error);
            c.error = Some(ErrorInfo { class: ErrorClass::InvalidResponse, reason: Reason::Other, fields: Vec::new() });
        }
    }
    c
}

fn parse_json(body: &[u8]) -> Option<Value> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice::<Value>(body).ok().filter(Value::is_object)
}

struct Message {
    text: String,
    recognised: Recognised,
    /// Fields named as keys of a `message` object.
    fields: Vec<Field>,
    field_object: bool,
}

/// `message`, else `messege`; a string, or an object of field errors (`{"init_image": ["…"]}`).
fn extract_message(json: &Value) -> Option<Message> {
    let pick = |key: &str| json.get(key).filter(|v| !v.is_null() && v.as_str() != Some(""));
    let value = pick("message").or_else(|| pick("messege"))?;
    match value {
        Value::String(s) => Some(Message {
            recognised: recognise(s),
            text: truncate(s, MAX_MESSAGE_CHARS),
            fields: Vec::new(),
            field_object: false,
        }),
        Value::Object(map) => {
            let mut fields = Vec::new();
            let mut parts = Vec::new();
            let mut recognised = Recognised { reason: Reason::Other, field: None, queue_limit: None };
            for (key, v) in map {
                let field = Field::from_param(key);
                if !fields.contains(&field) {
                    fields.push(field);
                }
                let texts: Vec<&str> = match v {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                // The first wording the table knows decides the reason.
                if recognised.reason == Reason::Other {
                    if let Some(r) = texts.iter().map(|t| recognise(t)).find(|r| r.reason != Reason::Other) {
                        recognised = r;
                    }
                }
                parts.push(format!("{key}: {}", texts.join(" ")));
            }
            fields.sort();
            fields.truncate(8);
            Some(Message {
                text: truncate(&parts.join("; "), MAX_MESSAGE_CHARS),
                recognised,
                fields,
                field_object: true,
            })
        }
        Value::Array(items) => {
            let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            let text = texts.join("; ");
            Some(Message {
                recognised: recognise(texts.first().copied().unwrap_or("")),
                text: truncate(&text, MAX_MESSAGE_CHARS),
                fields: Vec::new(),
                field_object: false,
            })
        }
        other => {
            let text = other.to_string();
            Some(Message {
                recognised: recognise(&text),
                text: truncate(&text, MAX_MESSAGE_CHARS),
                fields: Vec::new(),
                field_object: false,
            })
        }
    }
}

/// A non-negative number of seconds given as a JSON number or a numeric string.
fn seconds(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some(n)
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() && s.len() <= MAX_ID_CHARS => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<f64> {
    let raw = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(secs as f64);
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).as_secs_f64())
}

/// Cuts `s` to at most `max` characters.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
