//! The API's error model (docs/error-model.md): one pure function from an HTTP answer (or a transport
//! failure) to an outcome, an error class, a reason, and the fields worth extracting.
//!
//! Probes and the proxy both call [`classify`], so they can never disagree on what an answer
//! means. This module does no I/O, keeps no state and never panics, whatever the bytes; it
//! knows nothing of metrics or configuration.

mod body;
mod labels;
mod llm;
mod message;
pub(crate) mod object;
pub mod stream;

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde_json::Value;

use object::Object;

pub use body::{DecodeError, decode};
pub(crate) use labels::label_enum;
pub use labels::{ApiStatus, ErrorClass, Field, FinishReason, Outcome, PageStatus, Reason, UnknownName};
pub use llm::LlmDetails;
pub use message::{Recognised, recognise};

/// Longest message kept from an answer (traces cut it further to 256 characters).
pub const MAX_MESSAGE_CHARS: usize = 512;
/// Longest job id kept; longer ids are not ids the API hands out.
pub const MAX_ID_CHARS: usize = 128;
/// Output URLs of one answer looked at, at most (a batch is a few dozen).
pub const MAX_OUTPUTS: usize = 256;
/// Largest decoded body inspected when the caller does not say otherwise.
pub const DEFAULT_DECODE_LIMIT: usize = 4 << 20;

label_enum! {
    /// What kind of call the answer belongs to; a fetch that errors is a failed job.
    pub enum RequestKind {
        /// A generation (or any other) call.
        Submit => "submit",
        /// A poll of an async job's result.
        Fetch => "fetch",
    }
}

/// What the caller knows besides the answer itself.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Used to turn an HTTP-date `Retry-After` into seconds.
    pub now: SystemTime,
    /// A submission or a poll.
    pub kind: RequestKind,
    /// Largest decoded body inspected; larger bodies are classified as not inspectable JSON.
    pub decode_limit: usize,
}

impl Context {
    /// The context of an exchange of `kind` now, with the default decode limit.
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
    /// The coarse class alerts look at.
    pub class: ErrorClass,
    /// What the message said.
    pub reason: Reason,
    /// The parameters a validation error names (empty for other reasons).
    pub fields: Vec<Field>,
}

/// What the answer said besides its verdict: the fields every outcome may carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Details {
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
    /// What an LLM answer said: the model, its tokens, why it stopped.
    pub llm: Option<LlmDetails>,
    /// `generationTime`: seconds the model worked on the request (the rest of a job's time it
    /// waited in the account's queue).
    pub generation_time: Option<f64>,
    /// Distinct output URLs in `output` (`future_links` and `proxy_links` are not outputs).
    pub outputs: u32,
}

/// Everything the model extracts from one exchange. An error always has its class and reason,
/// and only a processing answer has an eta: the variants make any other shape unrepresentable.
#[derive(Debug, Clone, PartialEq)]
pub enum Classification {
    /// `"status":"success"`.
    Success {
        /// The fields the answer carried.
        details: Details,
    },
    /// `"status":"processing"`: an async job, with what the API promised about it.
    Processing {
        /// The fields the answer carried.
        details: Details,
        /// Promised seconds until the job is done.
        eta: Option<f64>,
        /// Where the API says to poll the job.
        fetch_result: Option<String>,
    },
    /// Anything else: an error of a class, for a reason.
    Error {
        /// The fields the answer carried.
        details: Details,
        /// Why it is an error.
        error: ErrorInfo,
    },
}

impl Classification {
    /// The outcome label of this answer.
    pub fn outcome(&self) -> Outcome {
        match self {
            Classification::Success { .. } => Outcome::Success,
            Classification::Processing { .. } => Outcome::Processing,
            Classification::Error { .. } => Outcome::Error,
        }
    }

    /// The fields the answer carried, whatever its outcome.
    pub fn details(&self) -> &Details {
        match self {
            Classification::Success { details }
            | Classification::Processing { details, .. }
            | Classification::Error { details, .. } => details,
        }
    }

    /// Why the answer is an error, when it is one.
    pub fn error(&self) -> Option<&ErrorInfo> {
        match self {
            Classification::Error { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The error class, when the answer is an error.
    pub fn error_class(&self) -> Option<ErrorClass> {
        self.error().map(|e| e.class)
    }

    /// The eta a processing answer promised.
    pub fn eta(&self) -> Option<f64> {
        match self {
            Classification::Processing { eta, .. } => *eta,
            _ => None,
        }
    }

    /// The `fetch_result` URL of a processing answer.
    pub fn fetch_result(&self) -> Option<&str> {
        match self {
            Classification::Processing { fetch_result, .. } => fetch_result.as_deref(),
            _ => None,
        }
    }

    /// An error of `class` for `reason` with nothing else known (no answer, or one not inspected).
    pub fn error_of(class: ErrorClass, reason: Reason) -> Self {
        Classification::Error { details: Details::default(), error: ErrorInfo { class, reason, fields: Vec::new() } }
    }

    /// A classification from the HTTP status alone, for answers whose body was not inspected.
    pub fn by_status(status: u16) -> Self {
        if (200..300).contains(&status) {
            Classification::Success { details: Details::default() }
        } else {
            Classification::error_of(ErrorClass::from_http_status(status), Reason::Other)
        }
    }
}

/// Classifies a failure that left no answer.
pub fn classify_failure(failure: Failure) -> Classification {
    match failure {
        Failure::Timeout => Classification::error_of(ErrorClass::Timeout, Reason::Other),
        Failure::Transport => Classification::error_of(ErrorClass::Transport, Reason::Other),
    }
}

/// Classifies a complete answer. `body` is the bytes as they came over the wire; a
/// `Content-Encoding` is undone on a copy, up to `ctx.decode_limit`.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], ctx: &Context) -> Classification {
    let is_2xx = (200..300).contains(&status);
    let encoding = headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let decoded = decode(encoding, body, ctx.decode_limit).ok();
    if is_2xx && stream::is_event_stream(headers) {
        if let Some(events) = &decoded {
            let mut reader = stream::Reader::new();
            reader.feed(events);
            return reader.finish();
        }
    }
    let json = decoded.as_deref().and_then(Object::parse);

    let Some(json) = json else {
        let class = if is_2xx { ErrorClass::InvalidResponse } else { ErrorClass::from_http_status(status) };
        let details = Details { retry_after: retry_after_header(headers, ctx.now), ..Details::default() };
        return Classification::Error {
            details,
            error: ErrorInfo { class, reason: Reason::NonJsonBody, fields: Vec::new() },
        };
    };

    if let Some(c) = classify_llm(status, headers, &json, ctx) {
        return c;
    }
    let api_status =
        json.get("status").as_ref().and_then(Value::as_str).and_then(|s| ApiStatus::parse_ignore_case(s.trim()));
    let message = extract_message(&json);
    let recognised = message.as_ref().map(|m| m.recognised).unwrap_or(Recognised {
        reason: Reason::Other,
        field: None,
        queue_limit: None,
    });

    let details = Details {
        api_status,
        id: json.get("id").as_ref().and_then(id),
        retry_after: json
            .get("retry_after")
            .as_ref()
            .and_then(seconds)
            .or_else(|| retry_after_header(headers, ctx.now)),
        queue_limit: recognised.queue_limit,
        message: message.as_ref().map(|m| m.text.clone()),
        llm: None,
        generation_time: json.get("generationTime").as_ref().and_then(seconds),
        outputs: output_urls(json.get("output").as_ref()),
    };

    let field_object = message.as_ref().is_some_and(|m| m.field_object);
    let error = |class: ErrorClass, details: Details| {
        let fields = match &message {
            Some(m) if m.field_object => m.fields.clone(),
            _ if recognised.reason.is_validation() => vec![recognised.field.unwrap_or(Field::Other)],
            _ => Vec::new(),
        };
        Classification::Error { details, error: ErrorInfo { class, reason: recognised.reason, fields } }
    };

    if !is_2xx {
        return error(ErrorClass::from_http_status(status), details);
    }

    match api_status {
        Some(ApiStatus::Success) => Classification::Success { details },
        Some(ApiStatus::Processing) => Classification::Processing {
            details,
            eta: json.get("eta").as_ref().and_then(seconds),
            fetch_result: json.get("fetch_result").as_ref().and_then(Value::as_str).map(|s| truncate(s, 2048)),
        },
        Some(ApiStatus::Failed) => error(ErrorClass::JobFailed, details),
        Some(ApiStatus::Error) => {
            let class = match (recognised.reason.class_when_2xx(), ctx.kind) {
                (ErrorClass::Unknown, _) if field_object => ErrorClass::BadRequest,
                (ErrorClass::Unknown, RequestKind::Fetch) => ErrorClass::JobFailed,
                (class, _) => class,
            };
            error(class, details)
        }
        None => Classification::Error {
            details,
            error: ErrorInfo { class: ErrorClass::InvalidResponse, reason: Reason::Other, fields: Vec::new() },
        },
    }
}

/// An answer in the LLM API's shapes: an error envelope at any status, or a 2xx success of a known
/// shape; `None` for anything else (the media API's answers).
fn classify_llm(status: u16, headers: &HeaderMap, json: &Object<'_>, ctx: &Context) -> Option<Classification> {
    if let Some(Value::Object(error)) = json.get("error") {
        let (info, message) = llm::error_info(status, &error);
        let details = Details {
            message,
            retry_after: json
                .get("retry_after")
                .as_ref()
                .and_then(seconds)
                .or_else(|| retry_after_header(headers, ctx.now)),
            llm: Some(LlmDetails::default()),
            ..Details::default()
        };
        return Some(Classification::Error { details, error: info });
    }
    if !(200..300).contains(&status) {
        return None;
    }
    let llm = llm::success(json)?;
    let details = Details { id: json.get("id").as_ref().and_then(id), llm: Some(llm), ..Details::default() };
    Some(Classification::Success { details })
}

struct Message {
    text: String,
    recognised: Recognised,
    /// Fields named as keys of a `message` object.
    fields: Vec<Field>,
    field_object: bool,
}

/// `message`, else `messege`; a string, or an object of field errors (`{"init_image": ["…"]}`).
fn extract_message(json: &Object<'_>) -> Option<Message> {
    let pick = |key: &str| json.get(key).filter(|v| !v.is_null() && v.as_str() != Some(""));
    let value = pick("message").or_else(|| pick("messege"))?;
    match &value {
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

/// A finite number, given as a JSON number or as a string holding one (the API sends both for
/// `eta`, `retry_after`, balances and sizes).
pub fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// How many distinct URLs an `output` holds: an array of strings, or one string (`""` and `[]`
/// while processing hold none). At most [`MAX_OUTPUTS`] are looked at.
fn output_urls(output: Option<&Value>) -> u32 {
    let is_url = |s: &&str| {
        let s = s.trim();
        s.starts_with("https://") || s.starts_with("http://")
    };
    let mut seen: Vec<&str> = Vec::new();
    match output {
        Some(Value::String(s)) if is_url(&s.as_str()) => return 1,
        Some(Value::Array(items)) => {
            for url in items.iter().take(MAX_OUTPUTS).filter_map(Value::as_str).filter(is_url) {
                if !seen.contains(&url) {
                    seen.push(url);
                }
            }
        }
        _ => {}
    }
    u32::try_from(seen.len()).unwrap_or(u32::MAX)
}

/// A non-negative number of seconds.
fn seconds(v: &Value) -> Option<f64> {
    number(v).filter(|n| *n >= 0.0)
}

/// An id (a job's `id`, a `request_id`, a webhook's `track_id`), given as a number or as a
/// string; at most [`MAX_ID_CHARS`], since ids end up in logs and spans.
pub fn id(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() && s.trim().len() <= MAX_ID_CHARS => Some(s.trim().to_owned()),
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
