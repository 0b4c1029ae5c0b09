//! The account's credits (`account.balance`): the wallet balance polled every `interval`, so that
//! alerts see the credits running out before the first 402. The answer goes through the API's own
//! error model: a 401 is a key problem, not a balance of 0. A failed poll keeps the last balance
//! and sets `modelslab_account_balance_up` to 0. Polled by the one poll loop (`poller`), on the
//! lease holder only (one request per interval, whatever the replica count).
//!
//! Uses `config`, `classify`, `cluster` and `observe`; never logs the key or the raw answer.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::BoxFuture;
use crate::classify::{self, Classification, Context, ErrorClass, Reason, RequestKind};
use crate::config::Config;
use crate::observe::status::{AccountView, BalanceView};
use crate::observe::{self, Observer};
use crate::poller::{Polled, Schedule};

/// Largest wallet answer read.
const MAX_BODY: usize = 64 * 1024;

/// A balance read.
#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    /// In the account's currency.
    pub balance: f64,
    /// An ISO 4217-shaped code, else `other` (it becomes a label).
    pub currency: String,
}

/// Why a poll found no balance, in the error model's words (never the raw answer).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BalanceError {
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
    /// An answer larger than any wallet answer.
    #[error("the answer is larger than 64 KiB")]
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
    /// The API answered `processing`, which a wallet never does.
    #[error("HTTP {0}, an answer still processing")]
    Processing(u16),
    /// A success without a balance in it.
    #[error("the answer has no numeric data.balance")]
    NoBalance,
}

/// The balance poller.
#[derive(Clone)]
pub struct Account {
    inner: Arc<Inner>,
}

struct Inner {
    observer: Observer,
    client: reqwest::Client,
    state: Mutex<BalanceView>,
}

impl Account {
    /// `client` is the API's (`clients::Clients::api`).
    pub fn new(observer: Observer, client: reqwest::Client) -> Self {
        Account { inner: Arc::new(Inner { observer, client, state: Mutex::default() }) }
    }

    /// One poll, published.
    pub async fn poll_once(&self, config: &Config) -> Result<Balance, BalanceError> {
        let found = self.fetch(config).await;
        self.publish(&found);
        found
    }

    fn publish(&self, found: &Result<Balance, BalanceError>) {
        let mut st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match found {
            Ok(b) => {
                self.inner.observer.emit(observe::BalancePolled {
                    balance: b.balance,
                    currency: &b.currency,
                    recovered: st.up == Some(false),
                });
                *st = BalanceView {
                    balance: Some(b.balance),
                    currency: Some(b.currency.clone()),
                    up: Some(true),
                    last_error: None,
                };
            }
            Err(why) => {
                let text = why.to_string();
                self.inner.observer.emit(observe::BalanceFailed { why: &text, first: st.up != Some(false) });
                st.up = Some(false);
                st.last_error = Some(text);
            }
        }
    }

    async fn fetch(&self, config: &Config) -> Result<Balance, BalanceError> {
        let key = config.api_key().ok_or(BalanceError::NoKey)?;
        let url = format!("{}{}", config.upstream.base_url.as_str().trim_end_matches('/'), config.account.balance.path);
        let sent = self.inner.client.post(url).json(&serde_json::json!({ "key": key })).send().await;
        let mut resp = sent.map_err(|e| {
            if e.is_timeout() {
                BalanceError::Timeout(config.account.balance.timeout)
            } else {
                BalanceError::Unreachable
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(|_| BalanceError::Cut)? {
            if body.len() + c.len() > MAX_BODY {
                return Err(BalanceError::TooLarge);
            }
            body.extend_from_slice(&c);
        }
        read(status, &headers, &body, key)
    }

    /// The poller's part of `/api/v1/status`, when polling is on.
    pub fn status(&self, config: &Config) -> Option<AccountView> {
        if !config.account.balance.enabled {
            return None;
        }
        let st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Some(AccountView { balance: Some(st) })
    }
}

impl Polled for Account {
    fn schedule(&self, config: &Config) -> Option<Schedule> {
        let b = &config.account.balance;
        b.enabled.then_some(Schedule { interval: b.interval, timeout: b.timeout, leader_only: true })
    }

    fn poll<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.poll_once(config).await;
        })
    }

    fn timed_out(&self, timeout: Duration) {
        self.publish(&Err(BalanceError::Timeout(timeout)));
    }
}

/// Reads a wallet answer through the error model: a balance, or why there is none (the class
/// and reason, and the API's message with the key scrubbed).
pub fn read(status: u16, headers: &http::HeaderMap, body: &[u8], key: &str) -> Result<Balance, BalanceError> {
    let c = classify::classify(status, headers, body, &Context::new(RequestKind::Submit));
    match &c {
        Classification::Success { .. } => {}
        Classification::Error { error, details } => {
            return Err(BalanceError::Api {
                status,
                class: error.class,
                reason: error.reason,
                message: details.message.as_deref().map(|m| observe::spans::scrub(m, &[key])),
            });
        }
        Classification::Processing { .. } => return Err(BalanceError::Processing(status)),
    }
    let json: Value =
        classify::decode(headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()), body, MAX_BODY)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
    let balance = classify::number(&json["data"]["balance"]).ok_or(BalanceError::NoBalance)?;
    // The currency becomes a label: only an ISO 4217-shaped code, else `other`.
    let currency = json["data"]["currency"]
        .as_str()
        .map(str::trim)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map_or_else(|| "other".to_owned(), str::to_ascii_uppercase);
    Ok(Balance { balance, currency })
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn r(status: u16, body: &str) -> Result<Balance, BalanceError> {
        read(status, &HeaderMap::new(), body.as_bytes(), "sk-wallet-key")
    }

    #[test]
    fn answers_through_the_error_model() {
        let ok = |balance: f64, currency: &str| Ok(Balance { balance, currency: currency.into() });
        let table: &[(u16, &str, Result<Balance, BalanceError>)] = &[
            (200, r#"{"status":"success","data":{"balance":43.6,"currency":"USD"}}"#, ok(43.6, "USD")),
            (200, r#"{"status":"success","data":{"balance":"12.50","currency":"eur"}}"#, ok(12.5, "EUR")),
            (200, r#"{"status":"success","data":{"balance":1,"currency":"<script>"}}"#, ok(1.0, "other")),
            (200, r#"{"status":"success","data":{}}"#, Err(BalanceError::NoBalance)),
            (200, r#"{"status":"processing","id":1}"#, Err(BalanceError::Processing(200))),
        ];
        for (status, body, want) in table {
            assert_eq!(&r(*status, body), want, "{status} {body}");
        }
        // A 401 is a key problem, not a balance of 0; the key never shows.
        let why = r(401, r#"{"status":"error","message":"Invalid API key sk-wallet-key"}"#).unwrap_err().to_string();
        assert_eq!(why, "HTTP 401, unauthorized/invalid_api_key: Invalid API key <redacted>");
        let why = r(200, r#"{"status":"error","messege":"Invalid API key"}"#).unwrap_err().to_string();
        assert!(why.starts_with("HTTP 200, unauthorized/invalid_api_key"), "{why}");
        let why = r(502, "<html>Bad Gateway</html>").unwrap_err().to_string();
        assert!(why.contains("server_error/non_json_body"), "{why}");
    }
}
