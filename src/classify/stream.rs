//! Reading a streamed LLM answer (`text/event-stream`) as its bytes pass: OpenAI's
//! `data: {chat.completion.chunk}` lines ending `data: [DONE]`, and Anthropic's events
//! (`message_start`, `content_block_delta`, `message_delta`, `message_stop`), with `error` events
//! in either. The reader keeps only the line being read and what the answer said so far, so a
//! stream of any length costs the same memory; it tells its caller when the first content
//! arrives (time to first token is the caller's clock, not this module's).
//!
//! Verdict at the end: `success` when the stream ended properly (`[DONE]`, `message_stop`), the
//! error of an `error` event, else `transport`/`stream_interrupted` (it ended, cleanly or not,
//! before its terminator).

use serde_json::Value;

use super::labels::{ErrorClass, Reason};
use super::llm::{self, LlmDetails};
use super::{Classification, Details, ErrorInfo};

/// The longest line kept; a longer one is skipped (no event of a chat stream is that long).
const MAX_LINE: usize = 1 << 20;

/// How the stream has ended so far.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Open,
    /// `[DONE]` or `message_stop` seen.
    Done,
    /// An `error` event: its verdict, and the message.
    Failed(ErrorInfo, Option<String>),
}

/// An incremental reader of one event stream.
#[derive(Debug, Clone)]
pub struct Reader {
    line: Vec<u8>,
    /// The current line is longer than [`MAX_LINE`]: skipped to its end.
    skipping: bool,
    data: Vec<u8>,
    state: State,
    details: LlmDetails,
    id: Option<String>,
    first_content: bool,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            line: Vec::new(),
            skipping: false,
            data: Vec::new(),
            state: State::Open,
            details: LlmDetails::default(),
            id: None,
            first_content: false,
        }
    }
}

impl Reader {
    /// A reader at the start of a stream.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Reads the next bytes of the stream; `true` when they held the first content delta.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let before = self.first_content;
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                if !std::mem::take(&mut self.skipping) {
                    self.line_done(&line);
                }
            } else if self.skipping {
            } else if self.line.len() >= MAX_LINE {
                self.line.clear();
                self.skipping = true;
            } else {
                self.line.push(b);
            }
        }
        !before && self.first_content
    }

    /// Whether a content delta has arrived.
    pub fn has_content(&self) -> bool {
        self.first_content
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let data = std::mem::take(&mut self.data);
            if !data.is_empty() {
                self.event(&data);
            }
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            if self.data.len() + rest.len() <= MAX_LINE {
                self.data.extend_from_slice(rest);
            }
        }
        // `event:`, `id:`, `retry:` and comments: the data says all this reader needs.
    }

    fn event(&mut self, data: &[u8]) {
        if self.state != State::Open {
            return;
        }
        if data.trim_ascii() == b"[DONE]" {
            self.state = State::Done;
            return;
        }
        let Ok(json) = serde_json::from_slice::<Value>(data) else { return };
        if let Some(error) = llm::error_object(&json) {
            let (info, message) = llm::error_info(200, error);
            self.state = State::Failed(info, message);
            return;
        }
        if self.id.is_none() {
            self.id = json.get("id").and_then(super::id);
        }
        match json.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = json.get("message").unwrap_or(&Value::Null);
                self.details.set_model(message.get("model"));
                self.id = message.get("id").and_then(super::id).or(self.id.take());
                if let Some(usage) = message.get("usage") {
                    self.details.read_usage(usage);
                }
            }
            Some("content_block_delta") => {
                let delta = json.get("delta").unwrap_or(&Value::Null);
                let text = ["text", "partial_json", "thinking"].iter().find_map(|k| delta.get(*k)?.as_str());
                if text.is_some_and(|t| !t.is_empty()) {
                    self.first_content = true;
                }
            }
            Some("message_delta") => {
                if let Some(r) = json.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    self.details.add_finish_reason(r);
                }
                if let Some(o) = json.get("usage").and_then(|u| u.get("output_tokens")).and_then(Value::as_u64) {
                    self.details.output_tokens = Some(o);
                }
            }
            Some("message_stop") => self.state = State::Done,
            _ => self.openai_chunk(&json),
        }
    }

    /// An OpenAI `chat.completion.chunk`.
    fn openai_chunk(&mut self, json: &Value) {
        self.details.set_model(json.get("model"));
        if let Some(usage) = json.get("usage").filter(|u| u.is_object()) {
            self.details.read_usage(usage);
        }
        for choice in json.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            let content = delta.get("content").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
            let tools = delta.get("tool_calls").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
            if content || tools {
                self.first_content = true;
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                self.details.add_finish_reason(r);
            }
        }
    }

    /// The verdict once the stream has ended (a last event without its blank line counts).
    pub fn finish(mut self) -> Classification {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() && !self.skipping {
            self.line_done(&line);
        }
        let data = std::mem::take(&mut self.data);
        if !data.is_empty() {
            self.event(&data);
        }
        let details = Details { id: self.id, llm: Some(self.details), ..Details::default() };
        match self.state {
            State::Done => Classification::Success { details },
            State::Failed(error, message) => Classification::Error { details: Details { message, ..details }, error },
            State::Open => Classification::Error {
                details,
                error: ErrorInfo {
                    class: ErrorClass::Transport,
                    reason: Reason::StreamInterrupted,
                    fields: Vec::new(),
                },
            },
        }
    }
}

/// Whether an answer is an event stream.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| starts_with_ignore_case(c.trim_start(), "text/event-stream"))
}

/// Whether `text` starts with `prefix`, ASCII case ignored (without a lowercased copy).
pub fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}
