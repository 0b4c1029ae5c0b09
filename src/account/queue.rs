//! The account-wide queue (`account.queue`): `processing_count` of
//! `/api/v6/processing/request_count` counts the unfinished requests of every client of the key,
//! not only this agent's traffic, so the queue is seen filling before anyone's first 429. The
//! limit it is judged against is the configured one, else the `Maximum N queued requests` of a
//! 429 this replica saw; its gauge is absent until known.
//!
//! The API allows 30 calls a minute: the validator refuses an interval under 2 s, the poll loop
//! never calls more often than the interval, and only the lease holder polls.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Answer, Ask, PollError, ask, failed};
use crate::BoxFuture;
use crate::classify;
use crate::config::Config;
use crate::observe::status::{LimitSource, QueueView};
use crate::observe::{self, AccountPoll, Observer};
use crate::poller::{Polled, Schedule};

/// A poll that has not answered by then failed (and at most the interval).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The queue poller.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    observer: Observer,
    client: reqwest::Client,
    state: Mutex<QueueView>,
}

impl Queue {
    /// `client` is the API's (`clients::Clients::api`).
    pub fn new(observer: Observer, client: reqwest::Client) -> Self {
        Queue { inner: Arc::new(Inner { observer, client, state: Mutex::default() }) }
    }

    /// The limit under `config`: configured, else learned from a 429, else unknown.
    fn limit(&self, config: &Config) -> Option<(u32, LimitSource)> {
        match config.account.queue.limit {
            0 => self.inner.observer.history().queue_limit().map(|n| (n, LimitSource::Learned)),
            n => Some((n, LimitSource::Config)),
        }
    }

    /// One poll, published.
    pub async fn poll_once(&self, config: &Config) -> Result<u32, PollError> {
        let q = &config.account.queue;
        let timeout = timeout(q.interval);
        let found = ask(&self.inner.client, config, &q.path, Ask::PostKey, timeout)
            .await
            .and_then(|(answer, key)| read(&answer, &key));
        self.publish(&found, self.limit(config));
        found
    }

    fn publish(&self, found: &Result<u32, PollError>, limit: Option<(u32, LimitSource)>) {
        let mut st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.limit = limit.map(|(n, _)| n);
        st.limit_source = limit.map(|(_, s)| s);
        // Known (configured, or learned), it is published whether or not this poll succeeds.
        if let Some(limit) = st.limit {
            self.inner.observer.emit(observe::QueueLimitKnown { limit });
        }
        match found {
            Ok(depth) => {
                self.inner.observer.emit(observe::QueuePolled { depth: *depth, recovered: st.up == Some(false) });
                st.depth = Some(*depth);
                st.up = Some(true);
                st.last_error = None;
            }
            Err(why) => {
                let text = failed(&self.inner.observer, AccountPoll::Queue, why, st.up != Some(false));
                st.up = Some(false);
                st.last_error = Some(text);
            }
        }
    }

    pub(super) fn view(&self, config: &Config) -> QueueView {
        let mut view = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner).clone();
        // Shown as it would be used now (a 429 may have taught it since the last poll).
        let limit = self.limit(config);
        view.limit = limit.map(|(n, _)| n);
        view.limit_source = limit.map(|(_, s)| s);
        view
    }
}

/// The poll's timeout: 10 s, and never past the next poll.
fn timeout(interval: Duration) -> Duration {
    TIMEOUT.min(interval)
}

impl Polled for Queue {
    fn schedule(&self, config: &Config) -> Option<Schedule> {
        let q = &config.account.queue;
        q.enabled.then_some(Schedule { interval: q.interval, timeout: timeout(q.interval), leader_only: true })
    }

    fn poll<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.poll_once(config).await;
        })
    }

    fn timed_out(&self, timeout: Duration) {
        let limit = {
            let st = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.limit.zip(st.limit_source)
        };
        self.publish(&Err(PollError::Timeout(timeout)), limit);
    }
}

/// Reads a `request_count` answer through the error model: the account's unfinished requests.
fn read(answer: &Answer, key: &str) -> Result<u32, PollError> {
    answer.judged(key)?;
    let json = answer.json();
    let count = classify::number(&json["processing_count"])
        .or_else(|| classify::number(&json["data"]["processing_count"]))
        .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n <= f64::from(u32::MAX))
        .ok_or(PollError::Missing("whole processing_count"))?;
    Ok(count as u32)
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn r(status: u16, body: &str) -> Result<u32, PollError> {
        read(&Answer { status, headers: HeaderMap::new(), body: body.as_bytes().to_vec() }, "sk-queue-key")
    }

    #[test]
    fn request_count_through_the_error_model() {
        let missing = Err(PollError::Missing("whole processing_count"));
        let table: &[(u16, &str, Result<u32, PollError>)] = &[
            (200, r#"{"status":"success","processing_count":3,"message":"3 requests processing"}"#, Ok(3)),
            (200, r#"{"status":"success","processing_count":"0"}"#, Ok(0)),
            (200, r#"{"status":"success","data":{"processing_count":7}}"#, Ok(7)),
            (200, r#"{"status":"success","processing_count":-1}"#, missing.clone()),
            (200, r#"{"status":"success","processing_count":2.5}"#, missing.clone()),
            (200, r#"{"status":"success"}"#, missing),
        ];
        for (status, body, want) in table {
            assert_eq!(&r(*status, body), want, "{status} {body}");
        }
        // Its own 429 is a rate limit (the poller is over 30 a minute), never a depth.
        let why = r(429, r#"{"status":"error","message":"Too many requests sk-queue-key","retry_after":2}"#)
            .unwrap_err()
            .to_string();
        assert!(why.starts_with("HTTP 429, rate_limited/"), "{why}");
        assert!(!why.contains("sk-queue-key"), "{why}");
        let why = r(200, r#"{"status":"error","message":"Invalid API key"}"#).unwrap_err().to_string();
        assert!(why.starts_with("HTTP 200, unauthorized/invalid_api_key"), "{why}");
    }
}
