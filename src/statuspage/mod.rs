//! The status-page poller: the vendor's own word as metrics that do not flap. The one poll loop
//! (`poller`) polls `status_page.url` every `interval` under `timeout`, on every replica; this
//! reads whichever provider's format it finds (`auto` detects it, trying the providers' JSON paths
//! beside an HTML page) and publishes the state. A failed poll sets `up` to 0 and keeps the last
//! known state; state changes are logged once. Uses `config`, `classify` and `observe` only.

mod parse;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use url::Url;

pub use parse::{ParseError, Snapshot, default_html_rules, detect, parse};

use crate::BoxFuture;
use crate::config::{Config, PageFormat, StatusPage as Settings};
use crate::maintenance::Maintenance;
use crate::observe::status::StatusPageView;
use crate::observe::{self, Observer};
use crate::poller::{Polled, Schedule};

/// Largest status document read.
const MAX_BODY: usize = 2 << 20;

/// The poller component.
#[derive(Clone)]
pub struct StatusPage {
    inner: Arc<Inner>,
}

struct Inner {
    observer: Observer,
    client: reqwest::Client,
    maintenance: Maintenance,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The format and document URL `auto` settled on, for the page URL it was found from.
    resolved: Option<(Url, PageFormat, Url)>,
    last: Option<Snapshot>,
    up: Option<bool>,
    last_error: Option<String>,
    last_change: Option<String>,
    components: BTreeSet<String>,
    overflowed: HashSet<String>,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot fetch {url}: {error}")]
    Fetch { url: String, error: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("cannot read {url} as {format}: {error}")]
    Parse { url: String, format: &'static str, error: ParseError },
    #[error(
        "no status page format recognised at {0} (tried Statuspage, Instatus and Better Stack paths, and the HTML rules)"
    )]
    Unrecognised(String),
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StatusPage {
    /// `client` is the one for public pages (`clients::Clients::pages`).
    /// `maintenance` learns whether the vendor declares maintenance in progress.
    pub fn new(observer: Observer, client: reqwest::Client, maintenance: Maintenance) -> Self {
        StatusPage { inner: Arc::new(Inner { observer, client, maintenance, state: Mutex::default() }) }
    }

    /// One poll: fetch, parse, publish (or keep the last state on failure).
    pub async fn poll_once(&self, s: &Settings) {
        match self.fetch_snapshot(s).await {
            Ok((format, snapshot)) => self.publish(s, format, snapshot),
            Err(e) => self.failed(&e),
        }
    }

    async fn get(&self, url: &Url) -> Result<(Vec<u8>, bool), PollError> {
        let fetch_err =
            |e: reqwest::Error| PollError::Fetch { url: url.to_string(), error: e.without_url().to_string() };
        let mut resp = self.inner.client.get(url.clone()).send().await.map_err(fetch_err)?;
        if !resp.status().is_success() {
            return Err(PollError::Status { url: url.to_string(), status: resp.status().as_u16() });
        }
        let is_html = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("html"));
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                break;
            }
        }
        Ok((body, is_html))
    }

    async fn fetch_snapshot(&self, s: &Settings) -> Result<(PageFormat, Snapshot), PollError> {
        let resolved = lock(&self.inner.state).resolved.clone().filter(|(page, _, _)| *page == s.url);
        let (format, doc_url) = match (s.format, resolved) {
            (Some(f), _) => (f, s.url.clone()),
            (None, Some((_, f, doc))) => (f, doc),
            (None, None) => {
                let (f, doc) = self.detect(s).await?;
                self.inner.observer.emit(observe::StatusPageDetected { format: f.as_str(), url: doc.as_str() });
                lock(&self.inner.state).resolved = Some((s.url.clone(), f, doc.clone()));
                (f, doc)
            }
        };
        let result = self.read(format, &doc_url, s).await;
        if result.is_err() && s.format.is_none() {
            // Detect again next time: the page may have moved to another provider.
            lock(&self.inner.state).resolved = None;
        }
        result.map(|snap| (format, snap))
    }

    async fn read(&self, format: PageFormat, url: &Url, s: &Settings) -> Result<Snapshot, PollError> {
        let (body, _) = self.get(url).await?;
        let parse_err = |error| PollError::Parse { url: url.to_string(), format: format.as_str(), error };
        if format == PageFormat::Instatus {
            let summary: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| parse_err(ParseError::NotJson))?;
            // Component states live in v2/components.json beside summary.json.
            let components = match instatus_components_url(url) {
                Some(c) => match self.get(&c).await {
                    Ok((b, _)) => serde_json::from_slice(&b).ok(),
                    Err(_) => None,
                },
                None => None,
            };
            return parse::instatus(&summary, components.as_ref()).map_err(parse_err);
        }
        parse(format, &body, &s.html_rules).map_err(parse_err)
    }

    /// Finds the format: the URL's own JSON, else a provider's JSON path beside it, else HTML.
    async fn detect(&self, s: &Settings) -> Result<(PageFormat, Url), PollError> {
        let (body, is_html) = self.get(&s.url).await?;
        if !is_html {
            if let Some(f) = detect(&body) {
                return Ok((f, s.url.clone()));
            }
        }
        for candidate in candidates(&s.url) {
            if let Ok((b, false)) = self.get(&candidate).await {
                if let Some(f) = detect(&b) {
                    return Ok((f, candidate));
                }
            }
        }
        if parse(PageFormat::Html, &body, &s.html_rules).is_ok() {
            return Ok((PageFormat::Html, s.url.clone()));
        }
        Err(PollError::Unrecognised(s.url.to_string()))
    }

    fn publish(&self, s: &Settings, format: PageFormat, mut snap: Snapshot) {
        let observer = &self.inner.observer;
        let mut st = lock(&self.inner.state);
        if snap.components.len() > s.max_components {
            for (name, _) in snap.components.drain(s.max_components..) {
                if !st.overflowed.contains(&name) {
                    observer.emit(observe::ComponentOverflow { component: &name });
                    st.overflowed.insert(name);
                }
            }
        }
        let now: BTreeSet<String> = snap.components.iter().map(|(n, _)| n.clone()).collect();
        let gone: Vec<String> = st.components.difference(&now).cloned().collect();
        let previous = st.last.as_ref().map(|l| l.status);
        observer.emit(observe::StatusPagePolled {
            format: format.as_str(),
            status: snap.status,
            components: &snap.components,
            gone: &gone,
            incidents_open: snap.incidents_open,
            previous,
            recovered: st.up == Some(false),
        });
        if previous != Some(snap.status) {
            st.last_change = Some(observe::status_change(previous, snap.status));
        }
        self.inner.maintenance.set_vendor(snap.maintenance);
        st.up = Some(true);
        st.last_error = None;
        st.components = now;
        st.last = Some(snap);
    }

    fn failed(&self, e: &PollError) {
        let mut st = lock(&self.inner.state);
        self.inner.observer.emit(observe::StatusPageFailed { error: &e.to_string(), first: st.up != Some(false) });
        st.up = Some(false);
        st.last_error = Some(e.to_string());
    }

    /// The poller's part of `/api/v1/status`, if a status page is configured.
    pub fn status(&self, config: &Config) -> Option<StatusPageView> {
        let url = config.status_page.as_ref()?.url.to_string();
        let st = lock(&self.inner.state);
        Some(StatusPageView {
            url,
            format: st.resolved.as_ref().map(|(_, f, _)| *f),
            up: st.up,
            status: st.last.as_ref().map(|l| l.status),
            incidents_open: st.last.as_ref().map(|l| l.incidents_open),
            components: st.last.as_ref().map(|l| l.components.clone()).unwrap_or_default(),
            last_error: st.last_error.clone(),
            last_change: st.last_change.clone(),
        })
    }
}

impl Polled for StatusPage {
    fn schedule(&self, config: &Config) -> Option<Schedule> {
        let s = config.status_page.as_ref()?;
        Some(Schedule { interval: s.interval, timeout: s.timeout, leader_only: false })
    }

    fn poll<'a>(&'a self, config: &'a Config) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(s) = &config.status_page {
                self.poll_once(s).await;
            }
        })
    }

    fn timed_out(&self, timeout: Duration) {
        self.failed(&PollError::Timeout(timeout));
    }
}

/// The providers' JSON paths beside a page URL, origin-relative first.
fn candidates(page: &Url) -> Vec<Url> {
    let mut out = Vec::new();
    let dir = if page.path().ends_with('/') {
        page.clone()
    } else {
        Url::parse(&format!("{}/", page.as_str().trim_end_matches('/'))).unwrap_or_else(|_| page.clone())
    };
    for path in ["/api/v2/summary.json", "/summary.json", "/index.json"] {
        if let Ok(u) = page.join(path) {
            out.push(u);
        }
        if let Ok(u) = dir.join(path.trim_start_matches('/')) {
            out.push(u);
        }
    }
    out.dedup();
    out
}

fn instatus_components_url(summary: &Url) -> Option<Url> {
    summary.path().ends_with("summary.json").then(|| summary.join("v2/components.json").ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::PageStatus;

    #[test]
    fn candidate_paths_beside_a_page() {
        let c: Vec<String> =
            candidates(&Url::parse("https://modelslab.com/status").unwrap()).into_iter().map(String::from).collect();
        assert_eq!(
            c,
            [
                "https://modelslab.com/api/v2/summary.json",
                "https://modelslab.com/status/api/v2/summary.json",
                "https://modelslab.com/summary.json",
                "https://modelslab.com/status/summary.json",
                "https://modelslab.com/index.json",
                "https://modelslab.com/status/index.json"
            ]
        );
        assert_eq!(
            instatus_components_url(&Url::parse("https://x.instatus.com/summary.json").unwrap()).unwrap().as_str(),
            "https://x.instatus.com/v2/components.json"
        );
    }

    #[test]
    fn statuses_order_by_severity() {
        let order: Vec<u8> = PageStatus::ALL.iter().map(|s| s.level()).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }
}
