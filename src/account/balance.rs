//! The account's credits (`account.balance`): the wallet balance polled every `interval`, so that
//! alerts see the credits running out before the first 402, and what was spent: every fall of the
//! balance between two polls of the same currency. A rise (a top-up, auto-funding) is never
//! negative spend, and the spending of an interval that also saw a top-up is hidden by it: the
//! figure is exact while top-ups are rare next to polls.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Answer, Ask, PollError, ask, failed};
use crate::BoxFuture;
use crate::classify;
use crate::config::Config;
use crate::observe::status::BalanceView;
use crate::observe::{self, AccountPoll, Observer};
use crate::poller::{Polled, Schedule};

/// A balance read.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// In the account's currency.
    pub balance: f64,
    /// An ISO 4217-shaped code, else `other` (it becomes a label).
    pub currency: String,
}

/// The balance poller.
#[derive(Clone)]
pub struct Balance {
    inner: Arc<Inner>,
}

struct Inner {
    observer: Observer,
    client: reqwest::Client,
    state: Mutex<BalanceView>,
}

impl Balance {
    /// `client` is the API's (`clients::Clients::api`).
    pub fn new(observer: Observer, client: reqwest::Client) -> Self {
        Balance { inner: Arc::new(Inner { observer, client, state: Mutex::default() }) }
    }

    /// One poll, published.
    pub async fn poll_once(&self, config: &Config) -> Result<Read, PollError> {
        let b = &config.account.balance;
        let found = ask(&self.inner.client, config, &b.path, Ask::PostKey, b.timeout)
            .await
            .and_then(|(answer, key)| read(&answer, &key));
        self.publish(&found);
        found
    }

    fn publish(&self, found: &Result<Read, PollError>) {
        let mut st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match found {
            Ok(b) => {
                // Spent: the fall since the last read of the same currency.
                let spent = match (st.balance, st.currency.as_deref()) {
                    (Some(before), Some(c)) if c == b.currency => (before - b.balance).max(0.0),
                    _ => 0.0,
                };
                self.inner.observer.emit(observe::BalancePolled {
                    balance: b.balance,
                    currency: &b.currency,
                    spent,
                    recovered: st.up == Some(false),
                });
                *st = BalanceView {
                    balance: Some(b.balance),
                    currency: Some(b.currency.clone()),
                    up: Some(true),
                    last_error: None,
                    spent: st.spent + spent,
                };
            }
            Err(why) => {
                let text = failed(&self.inner.observer, AccountPoll::Balance, why, st.up != Some(false));
                st.up = Some(false);
                st.last_error = Some(text);
            }
        }
    }

    pub(super) fn view(&self) -> BalanceView {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Polled for Balance {
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
        self.publish(&Err(PollError::Timeout(timeout)));
    }
}

/// Reads a wallet answer through the error model: a balance, or why there is none (the class
/// and reason, and the API's message with the key scrubbed).
fn read(answer: &Answer, key: &str) -> Result<Read, PollError> {
    answer.judged(key)?;
    let json = answer.json();
    let balance = classify::number(&json["data"]["balance"]).ok_or(PollError::Missing("numeric data.balance"))?;
    // The currency becomes a label: only an ISO 4217-shaped code, else `other`.
    let currency = json["data"]["currency"]
        .as_str()
        .map(str::trim)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map_or_else(|| "other".to_owned(), str::to_ascii_uppercase);
    Ok(Read { balance, currency })
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn r(status: u16, body: &str) -> Result<Read, PollError> {
        read(&Answer { status, headers: HeaderMap::new(), body: body.as_bytes().to_vec() }, "sk-wallet-key")
    }

    #[test]
    fn answers_through_the_error_model() {
        let ok = |balance: f64, currency: &str| Ok(Read { balance, currency: currency.into() });
        let table: &[(u16, &str, Result<Read, PollError>)] = &[
            (200, r#"{"status":"success","data":{"balance":43.6,"currency":"USD"}}"#, ok(43.6, "USD")),
            (200, r#"{"status":"success","data":{"balance":"12.50","currency":"eur"}}"#, ok(12.5, "EUR")),
            (200, r#"{"status":"success","data":{"balance":1,"currency":"<script>"}}"#, ok(1.0, "other")),
            (200, r#"{"status":"success","data":{}}"#, Err(PollError::Missing("numeric data.balance"))),
            (200, r#"{"status":"processing","id":1}"#, Err(PollError::Processing(200))),
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

    #[test]
    fn spent_counts_falls_and_never_a_top_up() {
        let m = Arc::new(crate::metrics::Metrics::new(&crate::config::Labels::default()).unwrap());
        let b = Balance::new(Observer::new(m.clone()), reqwest::Client::new());
        let read = |balance: f64, currency: &str| Ok(Read { balance, currency: currency.into() });
        // 10 → 9.5 (0.5) → 20 (a top-up: nothing) → 19.25 (0.75) → a failed poll → 19 (0.25)
        // → 30 EUR (another currency: nothing) → 29 EUR (1).
        for r in [
            read(10.0, "USD"),
            read(9.5, "USD"),
            read(20.0, "USD"),
            read(19.25, "USD"),
            Err(PollError::Unreachable),
            read(19.0, "USD"),
            read(30.0, "EUR"),
            read(29.0, "EUR"),
        ] {
            b.publish(&r);
        }
        let s = crate::scrape::Scrape::parse(&m.render().unwrap());
        let spent = |c: &str| s.metric("modelslab_account_spent_total").label("currency", c).value();
        assert_eq!((spent("USD"), spent("EUR")), (Some(1.5), Some(1.0)));
        assert_eq!(b.view().spent, 2.5);
    }
}
