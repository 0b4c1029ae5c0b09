//! The emulated LLM API (`/api/v7/llm/…`, API-FACTS "LLM API"): OpenAI's chat completions and
//! Anthropic's messages, whole or streamed (OpenAI's `data:` chunks ending `[DONE]` with the usage
//! in the final chunk; Anthropic's events from `message_start` to `message_stop`), the token count
//! and the model list. Keys travel as the clients send them (`Authorization: Bearer`,
//! `x-api-key`); the magic keys answer as for the media API (revoked 401, out of credits 402);
//! the scenario's `llm` section sets the pace and the faults (429 with `Retry-After`, 529
//! overloaded, an error event mid-stream, a stream cut midway).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use rand::Rng;
use serde_json::{Value, json};

use super::Sim;
use super::scenario::{Account, LlmFault, Span};

/// Which API shape a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

/// The words answers are made of, one token each.
const WORDS: &[&str] = &[
    "The",
    "lighthouse",
    "keeps",
    "its",
    "light",
    "burning",
    "through",
    "the",
    "long",
    "night",
    "while",
    "ships",
    "pass",
    "safely",
    "by",
    "the",
    "rocks",
];

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/v7/llm/chat/completions", post(|s, h, b| answer(s, Dialect::OpenAi, h, b)))
        .route("/api/v7/llm/v1/chat/completions", post(|s, h, b| answer(s, Dialect::OpenAi, h, b)))
        .route("/api/v7/llm/v1/messages", post(|s, h, b| answer(s, Dialect::Anthropic, h, b)))
        .route("/api/v7/llm/v1/messages/count_tokens", post(count_tokens))
        .route("/api/v7/llm/v1/models", get(models))
        .route("/api/v7/llm/models", get(models))
}

fn draw(sim: &Sim, span: Span) -> Duration {
    if span.max > span.min { sim.rng().random_range(span.min..span.max) } else { span.min }
}

/// An error in the dialect's shape.
fn error(
    dialect: Dialect,
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> Response {
    let body = match dialect {
        Dialect::OpenAi => json!({"error": {"message": message, "type": kind, "code": code, "param": param}}),
        Dialect::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The key, wherever the client put it.
fn key(headers: &HeaderMap, body: &Value) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    header("authorization")
        .map(|a| a.strip_prefix("Bearer ").unwrap_or(a).trim())
        .or_else(|| header("x-api-key"))
        .or_else(|| header("key"))
        .or_else(|| body.get("key").and_then(Value::as_str))
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// The account's refusal, if the key is missing, revoked or out of credits.
fn refuse(sim: &Sim, dialect: Dialect, headers: &HeaderMap, body: &Value) -> Option<Response> {
    let Some(key) = key(headers, body) else {
        let kind = if dialect == Dialect::OpenAi { "invalid_request_error" } else { "authentication_error" };
        return Some(error(dialect, StatusCode::UNAUTHORIZED, kind, Some("invalid_api_key"), "Missing API key", None));
    };
    match Account::of_key(&key, sim.scenario().account) {
        Account::Revoked => {
            let kind = if dialect == Dialect::OpenAi { "invalid_request_error" } else { "authentication_error" };
            Some(error(dialect, StatusCode::UNAUTHORIZED, kind, Some("invalid_api_key"), "Invalid API key", None))
        }
        Account::Broke => Some(error(
            dialect,
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            Some("insufficient_quota"),
            "Insufficient credits. Please add more credits to continue.",
            None,
        )),
        _ => None,
    }
}

/// What a chat request asks for.
struct Ask {
    model: String,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
    stream: bool,
}

/// Words of the text in a message's `content` (a string or a list of blocks).
fn words(content: &Value) -> u64 {
    match content {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(blocks) => blocks.iter().map(|b| b.get("text").map_or(0, words)).sum(),
        _ => 0,
    }
}

fn read_ask(sim: &Sim, dialect: Dialect, body: &Value) -> Result<Ask, Box<Response>> {
    let bad = |message: &str, param: &str| {
        Box::new(error(dialect, StatusCode::BAD_REQUEST, "invalid_request_error", None, message, Some(param)))
    };
    let Some(model) = body.get("model").and_then(Value::as_str) else { return Err(bad("model is required", "model")) };
    if !sim.listed(model) {
        let (kind, code) = match dialect {
            Dialect::OpenAi => ("invalid_request_error", Some("model_not_found")),
            Dialect::Anthropic => ("not_found_error", None),
        };
        let message = format!("Model not found: {model}");
        return Err(Box::new(error(dialect, StatusCode::NOT_FOUND, kind, code, &message, Some("model"))));
    }
    let messages = body.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty());
    let Some(messages) = messages else { return Err(bad("messages is required", "messages")) };
    let max_tokens = body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64);
    if dialect == Dialect::Anthropic && max_tokens.is_none() {
        return Err(bad("max_tokens is required", "max_tokens"));
    }
    if max_tokens == Some(0) {
        return Err(bad("max_tokens must be at least 1", "max_tokens"));
    }
    let system = body.get("system").map_or(0, words);
    let prompt_tokens = (messages.iter().map(|m| m.get("content").map_or(0, words)).sum::<u64>() + system).max(1);
    Ok(Ask {
        model: model.to_owned(),
        prompt_tokens,
        max_tokens,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// `POST /chat/completions` and `POST /v1/messages`.
async fn answer(State(sim): State<Arc<Sim>>, dialect: Dialect, headers: HeaderMap, bytes: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return error(
            dialect,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "Malformed JSON in request body",
            None,
        );
    };
    if let Some(refused) = refuse(&sim, dialect, &headers, &body) {
        return refused;
    }
    let ask = match read_ask(&sim, dialect, &body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let llm = sim.scenario().llm.clone();
    let fault = { llm.faults.pick(sim.rng().random::<f64>()) };
    match fault {
        Some(LlmFault::RateLimited) => {
            let mut r = error(
                dialect,
                StatusCode::TOO_MANY_REQUESTS,
                if dialect == Dialect::OpenAi { "requests" } else { "rate_limit_error" },
                Some("rate_limit_exceeded"),
                "Rate limit exceeded: too many requests per minute",
                None,
            );
            r.headers_mut().insert(header::RETRY_AFTER, llm.retry_after.into());
            return r;
        }
        Some(LlmFault::Overloaded) => {
            let status = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return error(dialect, status, "overloaded_error", Some("overloaded"), "Overloaded", None);
        }
        _ => {}
    }
    let tokens = ask.max_tokens.map_or(u64::from(llm.answer_tokens), |m| m.min(u64::from(llm.answer_tokens)));
    let truncated = tokens < u64::from(llm.answer_tokens);
    let first = draw(&sim, llm.first_token);
    let gaps: Vec<Duration> = (0..tokens).map(|_| draw(&sim, llm.token_interval)).collect();
    // The same request gets the same answer, byte for byte (its id included), so that answers
    // through a proxy can be compared with answers without one.
    let n = {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&bytes[..], &mut h);
        std::hash::Hasher::finish(&h) % 1_000_000_000
    };
    let plan = Plan { dialect, ask, tokens, truncated, n, fault };
    if plan.ask.stream {
        return streamed(&plan, first, &gaps);
    }
    tokio::time::sleep(first + gaps.iter().sum::<Duration>()).await;
    if fault == Some(LlmFault::ErrorEvent) || fault == Some(LlmFault::Cut) {
        // Not streamed: the failure is an error answer at HTTP 200.
        return error(dialect, StatusCode::OK, "api_error", Some("internal_error"), "Internal server error", None);
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], plan.whole().to_string()).into_response()
}

/// One answer to give.
struct Plan {
    dialect: Dialect,
    ask: Ask,
    tokens: u64,
    truncated: bool,
    n: u64,
    fault: Option<LlmFault>,
}

impl Plan {
    fn text(&self) -> String {
        (0..self.tokens).map(|i| WORDS[i as usize % WORDS.len()]).collect::<Vec<_>>().join(" ")
    }

    fn finish_reason(&self) -> &'static str {
        match (self.dialect, self.truncated) {
            (Dialect::OpenAi, false) => "stop",
            (Dialect::OpenAi, true) => "length",
            (Dialect::Anthropic, false) => "end_turn",
            (Dialect::Anthropic, true) => "max_tokens",
        }
    }

    fn whole(&self) -> Value {
        match self.dialect {
            Dialect::OpenAi => json!({
                "id": format!("chatcmpl-sim{}", self.n), "object": "chat.completion", "created": 1_796_000_000u64,
                "model": self.ask.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text()},
                             "finish_reason": self.finish_reason(), "logprobs": null}],
                "usage": {"prompt_tokens": self.ask.prompt_tokens, "completion_tokens": self.tokens,
                          "total_tokens": self.ask.prompt_tokens + self.tokens},
            }),
            Dialect::Anthropic => json!({
                "id": format!("msg_sim{}", self.n), "type": "message", "role": "assistant", "model": self.ask.model,
                "content": [{"type": "text", "text": self.text()}],
                "stop_reason": self.finish_reason(), "stop_sequence": null,
                "usage": {"input_tokens": self.ask.prompt_tokens, "output_tokens": self.tokens},
            }),
        }
    }

    /// The stream's events, in order: each a frame of text.
    fn events(&self) -> Vec<String> {
        let words: Vec<&str> = (0..self.tokens).map(|i| WORDS[i as usize % WORDS.len()]).collect();
        let data = |v: Value| format!("data: {v}\n\n");
        let event = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        match self.dialect {
            Dialect::OpenAi => {
                let id = format!("chatcmpl-sim{}", self.n);
                let chunk = |delta: Value, finish: Value, usage: Option<Value>| {
                    let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": 1_796_000_000u64,
                        "model": self.ask.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                    if let Some(u) = usage {
                        c["usage"] = u;
                    }
                    data(c)
                };
                let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null, None)];
                for (i, w) in words.iter().enumerate() {
                    let text = if i == 0 { (*w).to_owned() } else { format!(" {w}") };
                    out.push(chunk(json!({"content": text}), Value::Null, None));
                }
                let usage = json!({"prompt_tokens": self.ask.prompt_tokens, "completion_tokens": self.tokens,
                                   "total_tokens": self.ask.prompt_tokens + self.tokens});
                out.push(chunk(json!({}), json!(self.finish_reason()), Some(usage)));
                out.push("data: [DONE]\n\n".to_owned());
                out
            }
            Dialect::Anthropic => {
                let mut out = vec![event(
                    "message_start",
                    json!({"type": "message_start", "message": {"id": format!("msg_sim{}", self.n), "type": "message",
                        "role": "assistant", "model": self.ask.model, "content": [], "stop_reason": null,
                        "stop_sequence": null, "usage": {"input_tokens": self.ask.prompt_tokens, "output_tokens": 1}}}),
                )];
                out.push(event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                for (i, w) in words.iter().enumerate() {
                    let text = if i == 0 { (*w).to_owned() } else { format!(" {w}") };
                    out.push(event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                    ));
                }
                out.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
                out.push(event(
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": self.finish_reason(), "stop_sequence": null},
                           "usage": {"output_tokens": self.tokens}}),
                ));
                out.push(event("message_stop", json!({"type": "message_stop"})));
                out
            }
        }
    }

    /// The error event of a stream that fails in its middle.
    fn error_event(&self) -> String {
        match self.dialect {
            Dialect::OpenAi => format!(
                "data: {}\n\n",
                json!({"error": {"message": "Internal server error", "type": "api_error", "code": "internal_error"}})
            ),
            Dialect::Anthropic => format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            ),
        }
    }
}

/// A streamed answer: each event after its wait; an error event or a cut halfway when the
/// scenario says so.
fn streamed(plan: &Plan, first: Duration, gaps: &[Duration]) -> Response {
    let mut events = plan.events();
    // The events before the content: the role chunk, or message_start and content_block_start.
    let lead = if plan.dialect == Dialect::OpenAi { 1 } else { 2 };
    let halfway = lead + (plan.tokens as usize / 2).max(1);
    let mut frames: Vec<(Duration, Result<Bytes, std::io::Error>)> = Vec::new();
    match plan.fault {
        Some(LlmFault::ErrorEvent) => {
            events.truncate(halfway);
            events.push(plan.error_event());
        }
        Some(LlmFault::Cut) => events.truncate(halfway),
        _ => {}
    }
    for (i, e) in events.into_iter().enumerate() {
        let wait = match i.checked_sub(lead) {
            Some(0) => first,
            Some(k) => gaps.get(k - 1).copied().unwrap_or_default(),
            None => Duration::ZERO,
        };
        frames.push((wait, Ok(Bytes::from(e))));
    }
    if plan.fault == Some(LlmFault::Cut) {
        frames.push((Duration::ZERO, Err(std::io::Error::other("stream cut by fault injection"))));
    }
    let body = stream::unfold(frames.into_iter(), |mut rest| async move {
        let (wait, frame) = rest.next()?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some((frame, rest))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response()
}

/// `POST /v1/messages/count_tokens`.
async fn count_tokens(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            Dialect::Anthropic,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "Malformed JSON in request body",
            None,
        );
    };
    if let Some(refused) = refuse(&sim, Dialect::Anthropic, &headers, &body) {
        return refused;
    }
    let mut body = body;
    if let Some(m) = body.as_object_mut() {
        m.insert("max_tokens".into(), json!(1));
    }
    match read_ask(&sim, Dialect::Anthropic, &body) {
        Ok(ask) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"input_tokens": ask.prompt_tokens}).to_string(),
        )
            .into_response(),
        Err(r) => *r,
    }
}

/// `GET /v1/models` and `GET /models`: a list both SDKs read.
async fn models(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&sim, Dialect::OpenAi, &headers, &Value::Null) {
        return refused;
    }
    let models: Vec<String> = sim.scenario().llm.models.iter().filter(|m| sim.listed(m)).cloned().collect();
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({"id": m, "object": "model", "created": 1_790_000_000u64, "owned_by": "modelslab",
                         "type": "model", "display_name": m, "created_at": "2026-09-01T00:00:00Z"})
        })
        .collect();
    let body = json!({"object": "list", "data": data, "has_more": false,
                      "first_id": models.first(), "last_id": models.last()});
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
