//! The account as a whole, polled on an interval by the one poll loop (`poller`), on the lease
//! holder only (one request per interval whatever the replica count):
//!
//! - `balance`: the wallet balance and what was spent ([`Balance`]);
//! - `queue`: the queue depth of every client of the key, against the plan's limit ([`Queue`]);
//! - `models`: whether each model of `labels.models` is still in the catalogue ([`Catalogue`]).
//!
//! Every answer goes through the API's own error model: a 401 is a key problem, not a balance
//! of 0 or an empty queue. A failed poll keeps the last value and sets its `…_up` gauge to 0.
//!
//! Uses `config`, `classify`, `poller` and `observe`; never logs the key or a raw answer.

mod balance;
mod catalogue;
mod queue;

use std::time::Duration;

pub use balance::{Balance, Read as BalanceRead};
pub use catalogue::Catalogue;
pub use queue::Queue;

use crate::classify::{self, Classification, Context, ErrorClass, Reason, RequestKind};
use crate::config::Config;
use crate::observe::status::AccountView;
use crate::observe::{self, AccountPoll, Observer};

/// Largest account answer read (a catalogue of a few hundred models is some tens of KiB).
const MAX_BODY: usize = 1 << 20;

/// Why a poll read nothing, in the error model's words (never the raw answer).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PollError {
    /// The configuration has no key to ask with.
    #[error("no API key configured")]
    NoKey,
    /// The poll did not end within the timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// No connection to the API.
    #[error("transport: the API could not be reached")]
    Unreachable,
    /// The answer broke off.
    #[error("transport: the answer was cut")]
    Cut,
    /// An answer larger than any account answer.
    #[error("the answer is larger than 1 MiB")]
    TooLarge,
    /// The API answered an error: its status, class and reason, and its message (key scrubbed).
    #[error("HTTP {status}, {class}/{reason}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error model's class.
        class: ErrorClass,
        /// The error model's reason.
        reason: Reason,
        /// The API's message, the key scrubbed.
        message: Option<String>,
    },
    /// The API answered `processing`, which an account endpoint never does.
    #[error("HTTP {0}, an answer still processing")]
    Processing(u16),
    /// A success without the figure asked for.
    #[error("the answer has no {0}")]
    Missing(&'static str),
}

/// How the key travels to an account endpoint.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// `POST {"key": …}` (the media API's account endpoints).
    PostKey,
    /// `GET` with `x-api-key` (the LLM API).
    GetWithHeader,
}

/// An answer read whole.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, its `Content-Encoding` undone (`Null` when it is not JSON).
    fn json(&self) -> serde_json::Value {
        let encoding = self.headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
        classify::decode(encoding, &self.body, MAX_BODY)
            .ok()
            .and_then(|b| serde_json::from_slice(b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&b)).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Through the error model: `Ok` for a success, else why not (the key scrubbed).
    fn judged(&self, key: &str) -> Result<(), PollError> {
        let c = classify::classify(self.status, &self.headers, &self.body, &Context::new(RequestKind::Submit));
        match c {
            Classification::Success { .. } => Ok(()),
            Classification::Error { error, details } => Err(PollError::Api {
                status: self.status,
                class: error.class,
                reason: error.reason,
                message: details.message.as_deref().map(|m| observe::spans::scrub(m, &[key])),
            }),
            Classification::Processing { .. } => Err(PollError::Processing(self.status)),
        }
    }
}

/// Asks `path` of the API with the configured key, reading at most [`MAX_BODY`]; `timeout` is the
/// poll's (the client's own ends it early).
async fn ask(
    client: &reqwest::Client,
    config: &Config,
    path: &str,
    how: Ask,
    timeout: Duration,
) -> Result<(Answer, String), PollError> {
    let key = config.api_key().ok_or(PollError::NoKey)?;
    let url = format!("{}{}", config.upstream.base_url.as_str().trim_end_matches('/'), path);
    let request = match how {
        Ask::PostKey => client.post(url).json(&serde_json::json!({ "key": key })),
        Ask::GetWithHeader => client.get(url).header("x-api-key", key),
    };
    let sent = request.send().await;
    let mut resp =
        sent.map_err(|e| if e.is_timeout() { PollError::Timeout(timeout) } else { PollError::Unreachable })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|_| PollError::Cut)? {
        if body.len() + c.len() > MAX_BODY {
            return Err(PollError::TooLarge);
        }
        body.extend_from_slice(&c);
    }
    Ok((Answer { status, headers, body }, key.to_owned()))
}

/// What the pollers publish besides metrics: the last value and why the last poll failed.
#[derive(Clone)]
pub struct Account {
    /// The wallet.
    pub balance: Balance,
    /// The account-wide queue.
    pub queue: Queue,
    /// The model catalogue.
    pub models: Catalogue,
}

impl Account {
    /// `client` is the API's (`clients::Clients::api`).
    pub fn new(observer: Observer, client: reqwest::Client) -> Self {
        Account {
            balance: Balance::new(observer.clone(), client.clone()),
            queue: Queue::new(observer.clone(), client.clone()),
            models: Catalogue::new(observer, client),
        }
    }

    /// The pollers' part of `/api/v1/status`: those that are on.
    pub fn status(&self, config: &Config) -> Option<AccountView> {
        let a = &config.account;
        let view = AccountView {
            balance: a.balance.enabled.then(|| self.balance.view()),
            queue: a.queue.enabled.then(|| self.queue.view(config)),
            models: a.models.enabled.then(|| self.models.view()),
        };
        (view.balance.is_some() || view.queue.is_some() || view.models.is_some()).then_some(view)
    }
}

/// Publishes a failed poll: its `…_up` gauge to 0, logged when it starts failing.
fn failed(observer: &Observer, poll: AccountPoll, why: &PollError, first: bool) -> String {
    let text = why.to_string();
    observer.emit(observe::AccountPollFailed { poll, why: &text, first });
    text
}
