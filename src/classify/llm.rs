//! The LLM API's answers (OpenAI- and Anthropic-compatible, `/api/v7/llm/…`): successes
//! (`chat.completion`, `list`, `message`, a token count), error envelopes at any HTTP status
//! (`{"error":{…}}`, `{"type":"error","error":{…}}`), and what a success says of the model, its
//! tokens and why it stopped. Streams are read by [`super::stream`] with the same rules.

use serde_json::{Map, Value};

use super::object::Object;

use super::labels::{ErrorClass, Field, FinishReason, Reason};
use super::message::recognise;
use super::{ErrorInfo, MAX_MESSAGE_CHARS, truncate};

/// Longest model name kept (they look like `Qwen/Qwen2.5-VL-72B-Instruct-together`).
pub(super) const MAX_MODEL_CHARS: usize = 128;
/// At most this many finish reasons are kept of one answer (one per choice).
const MAX_FINISH_REASONS: usize = 8;

/// What an LLM answer said besides its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LlmDetails {
    /// The model that answered, as the answer names it.
    pub model: Option<String>,
    /// Prompt tokens (`usage.prompt_tokens`, `usage.input_tokens`), when the answer counts them.
    pub input_tokens: Option<u64>,
    /// Answer tokens (`usage.completion_tokens`, `usage.output_tokens`).
    pub output_tokens: Option<u64>,
    /// Why each choice stopped (`finish_reason`, `stop_reason`).
    pub finish_reasons: Vec<FinishReason>,
}

impl LlmDetails {
    pub(super) fn add_finish_reason(&mut self, word: &str) {
        let reason = FinishReason::of(word);
        if self.finish_reasons.len() < MAX_FINISH_REASONS {
            self.finish_reasons.push(reason);
        }
    }

    pub(super) fn set_model(&mut self, v: Option<&Value>) {
        if let Some(m) = v.and_then(Value::as_str).filter(|m| !m.is_empty()) {
            self.model = Some(truncate(m, MAX_MODEL_CHARS));
        }
    }

    /// Reads `usage` in either provider's words.
    pub(super) fn read_usage(&mut self, usage: &Value) {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64);
        if let Some(i) = n("prompt_tokens").or_else(|| n("input_tokens")) {
            self.input_tokens = Some(i);
        }
        if let Some(o) = n("completion_tokens").or_else(|| n("output_tokens")) {
            self.output_tokens = Some(o);
        }
    }
}

/// The error object of an LLM error envelope, if the answer is one.
pub(super) fn error_object(json: &Value) -> Option<&Map<String, Value>> {
    json.get("error").and_then(Value::as_object)
}

/// What an error object says, as the error model words it: the class from its `type` or `code`
/// first, else from the HTTP status (529 is `unavailable`), else from the message; the reason
/// from `code`, `type` or the message; the field from `param`. Also the message, cut.
pub(super) fn error_info(status: u16, error: &Map<String, Value>) -> (ErrorInfo, Option<String>) {
    let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, code) = (text("type"), text("code"));
    let message = error.get("message").and_then(Value::as_str).filter(|m| !m.is_empty());
    let recognised = message.map(recognise);
    let is = |words: &[&str]| words.iter().any(|w| *w == kind || *w == code);
    let by_kind = if is(&["overloaded_error"]) {
        Some(ErrorClass::Unavailable)
    } else if is(&["rate_limit_error", "rate_limit_exceeded"]) {
        Some(ErrorClass::RateLimited)
    } else if is(&["authentication_error", "invalid_api_key"]) {
        Some(ErrorClass::Unauthorized)
    } else if is(&["insufficient_quota"]) {
        Some(ErrorClass::PaymentRequired)
    } else if is(&["permission_error"]) {
        Some(ErrorClass::Forbidden)
    } else if is(&["api_error"]) && (200..300).contains(&status) {
        Some(ErrorClass::ServerError)
    } else {
        None
    };
    let reason = if is(&["invalid_api_key", "authentication_error"]) {
        Reason::InvalidApiKey
    } else if is(&["insufficient_quota"]) {
        Reason::InsufficientCredits
    } else if is(&["model_not_found"]) {
        Reason::ModelNotFound
    } else if is(&["overloaded_error", "overloaded"]) {
        Reason::TemporarilyUnavailable
    } else if is(&["api_error", "internal_error", "server_error"]) {
        Reason::InternalError
    } else {
        match recognised.map(|r| r.reason) {
            // A per-minute limit is not the account's queue (`queue_full`).
            Some(Reason::QueueFull) if !message.is_some_and(|m| m.to_ascii_lowercase().contains("queued")) => {
                Reason::Other
            }
            Some(r) => r,
            None => Reason::Other,
        }
    };
    let class = match (by_kind, status) {
        (Some(class), _) => class,
        (None, 529) => ErrorClass::Unavailable,
        (None, s) if !(200..300).contains(&s) => ErrorClass::from_http_status(s),
        (None, _) if is(&["invalid_request_error", "not_found_error"]) || reason.is_validation() => {
            ErrorClass::BadRequest
        }
        (None, _) => reason.class_when_2xx(),
    };
    let param = text("param");
    let mut fields = Vec::new();
    if !param.is_empty() {
        fields.push(Field::from_param(param));
    } else if reason.is_validation() {
        fields.push(recognised.and_then(|r| r.field).unwrap_or(Field::Other));
    }
    (ErrorInfo { class, reason, fields }, message.map(|m| truncate(m, MAX_MESSAGE_CHARS)))
}

/// The details of a 2xx LLM answer of a known shape; `None` for any other body.
pub(super) fn success(json: &Object<'_>) -> Option<LlmDetails> {
    let (object, kind) = (json.get("object"), json.get("type"));
    let kind = object.as_ref().and_then(Value::as_str).or_else(|| kind.as_ref().and_then(Value::as_str));
    let mut d = LlmDetails::default();
    match kind {
        // OpenAI: a chat completion.
        Some("chat.completion") => {
            d.set_model(json.get("model").as_ref());
            if let Some(usage) = json.get("usage") {
                d.read_usage(&usage);
            }
            for choice in json.get("choices").as_ref().and_then(Value::as_array).into_iter().flatten() {
                if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                    d.add_finish_reason(r);
                }
            }
        }
        // Anthropic: a message.
        Some("message") => {
            d.set_model(json.get("model").as_ref());
            if let Some(usage) = json.get("usage") {
                d.read_usage(&usage);
            }
            if let Some(r) = json.get("stop_reason").as_ref().and_then(Value::as_str) {
                d.add_finish_reason(r);
            }
        }
        // Lists (models) and a model.
        Some("list" | "model") => {}
        // Anthropic's token count: a success that adds no tokens.
        None if json.get("input_tokens").is_some_and(|v| v.is_u64()) => {}
        // Anthropic's model list.
        None if json.get("data").is_some_and(|v| v.is_array()) && json.has("has_more") => {}
        _ => return None,
    }
    Some(d)
}
