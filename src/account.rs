//! The account's credits (`account.balance`): the wallet balance polled every `interval`, so that
//! alerts see the credits running out before the first 402. The answer goes through the API's own
//! error model: a 401 is a key problem, not a balance of 0. A failed poll keeps the last balance
//! and sets `modelslab_account_balance_up` to 0. With several replicas only the lease holder
//! polls (one request per interval, whatever the replica count).
//!
//! Uses `config`, `classify`, `cluster` and `observe`; never logs the key or the raw answer.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::classify::{self, Classification, Context, RequestKind};
use crate::cluster::Cluster;
use crate::config::{Balance as Settings, Config};
use crate::observe::{self, Observer};

/// Largest wallet answer read.
const MAX_BODY: usize = 64 * 1024;

/// The balance poller.
#[derive(Clone)]
pub struct Account {
    inner: Arc<Inner>,
}

struct Inner {
    config: watch::Receiver<Arc<Config>>,
    observer: Observer,
    cluster: Cluster,
    client: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct State {
    balance: Option<f64>,
    currency: Option<String>,
    up: Option<bool>,
    /// Why the last poll failed, in the error model's words (never the raw answer).
    last_error: Option<String>,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    Balance { balance: f64, currency: String },
    Failed(String),
}

impl Account {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        observer: Observer,
        cluster: Cluster,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("modelslab-sentinel/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Account { inner: Arc::new(Inner { config, observer, cluster, client, state: Mutex::default() }) })
    }

    /// Polls while `account.balance.enabled` (on the lease holder, with several replicas), until
    /// `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut config = self.inner.config.clone();
        loop {
            let settings = config.borrow_and_update().account.balance.clone();
            let wait = if settings.enabled {
                if self.inner.cluster.leads() {
                    self.poll(&settings).await;
                }
                settings.interval
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                changed = config.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One poll, published.
    pub async fn poll(&self, s: &Settings) -> Poll {
        let found = match tokio::time::timeout(s.timeout, self.fetch(s)).await {
            Ok(p) => p,
            Err(_) => Poll::Failed(format!("no answer within {}", humantime::format_duration(s.timeout))),
        };
        let mut st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &found {
            Poll::Balance { balance, currency } => {
                self.inner.observer.emit(observe::BalancePolled {
                    balance: *balance,
                    currency,
                    recovered: st.up == Some(false),
                });
                st.balance = Some(*balance);
                st.currency = Some(currency.clone());
                st.up = Some(true);
                st.last_error = None;
            }
            Poll::Failed(why) => {
                self.inner.observer.emit(observe::BalanceFailed { why, first: st.up != Some(false) });
                st.up = Some(false);
                st.last_error = Some(why.clone());
            }
        }
        found
    }

    async fn fetch(&self, s: &Settings) -> Poll {
        let config = self.inner.config.borrow().clone();
        let Some(key) = config.api_key() else { return Poll::Failed("no API key configured".into()) };
        let url = format!("{}{}", config.upstream.base_url.as_str().trim_end_matches('/'), s.path);
        let sent = self.inner.client.post(url).json(&serde_json::json!({ "key": key })).send().await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Poll::Failed(if e.is_timeout() { "timeout".into() } else { "transport: unreachable".into() });
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) if body.len() + c.len() <= MAX_BODY => body.extend_from_slice(&c),
                Ok(Some(_)) => return Poll::Failed("the answer is larger than 64 KiB".into()),
                Ok(None) => break,
                Err(_) => return Poll::Failed("transport: the answer was cut".into()),
            }
        }
        read(status, &headers, &body, key)
    }

    /// The poller's state for `/api/v1/status`, when polling is on.
    pub fn status(&self) -> Option<serde_json::Value> {
        if !self.inner.config.borrow().account.balance.enabled {
            return None;
        }
        let st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner).clone();
        serde_json::to_value(st).ok()
    }
}

/// Reads a wallet answer through the error model: a balance, or why there is none (the class
/// and reason, and the API's message with the key scrubbed).
pub fn read(status: u16, headers: &http::HeaderMap, body: &[u8], key: &str) -> Poll {
    let c = classify::classify(status, headers, body, &Context::new(RequestKind::Submit));
    match &c {
        Classification::Success { .. } => {}
        Classification::Error { error, details } => {
            let message = details
                .message
                .as_deref()
                .map(|m| format!(": {}", observe::spans::scrub(m, &[key])))
                .unwrap_or_default();
            return Poll::Failed(format!("HTTP {status}, {}/{}{message}", error.class, error.reason));
        }
        Classification::Processing { .. } => return Poll::Failed(format!("HTTP {status}, an answer still processing")),
    }
    let json: Value =
        classify::decode(headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()), body, MAX_BODY)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
    let balance = match &json["data"]["balance"] {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let Some(balance) = balance.filter(|b| b.is_finite()) else {
        return Poll::Failed("the answer has no numeric data.balance".into());
    };
    // The currency becomes a label: only an ISO 4217-shaped code, else `other`.
    let currency = json["data"]["currency"]
        .as_str()
        .map(str::trim)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map_or_else(|| "other".to_owned(), str::to_ascii_uppercase);
    Poll::Balance { balance, currency }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn r(status: u16, body: &str) -> Poll {
        read(status, &HeaderMap::new(), body.as_bytes(), "sk-wallet-key")
    }

    #[test]
    fn answers_through_the_error_model() {
        assert_eq!(
            r(200, r#"{"status":"success","data":{"balance":43.6,"currency":"USD"}}"#),
            Poll::Balance { balance: 43.6, currency: "USD".into() }
        );
        assert_eq!(
            r(200, r#"{"status":"success","data":{"balance":"12.50","currency":"eur"}}"#),
            Poll::Balance { balance: 12.5, currency: "EUR".into() }
        );
        assert_eq!(
            r(200, r#"{"status":"success","data":{"balance":1,"currency":"<script>"}}"#),
            Poll::Balance { balance: 1.0, currency: "other".into() }
        );
        // A 401 is a key problem, not a balance of 0; the key never shows.
        let Poll::Failed(why) = r(401, r#"{"status":"error","message":"Invalid API key sk-wallet-key"}"#) else {
            panic!()
        };
        assert_eq!(why, "HTTP 401, unauthorized/invalid_api_key: Invalid API key <redacted>");
        let Poll::Failed(why) = r(200, r#"{"status":"error","messege":"Invalid API key"}"#) else { panic!() };
        assert!(why.starts_with("HTTP 200, unauthorized/invalid_api_key"), "{why}");
        assert!(
            matches!(r(502, "<html>Bad Gateway</html>"), Poll::Failed(w) if w.contains("server_error/non_json_body"))
        );
        assert!(matches!(r(200, r#"{"status":"success","data":{}}"#), Poll::Failed(w) if w.contains("no numeric")));
    }
}
