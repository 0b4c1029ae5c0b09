//! The agent's HTTP clients, built once and shared: one for the API (it carries the key, so it
//! follows redirects only within the API's own origin), one for public pages (the vendor's status
//! page, which may sit behind redirects to its provider), one for downloading generated files
//! (no redirects: `probe::output` follows them itself, checking each hop against its allowlist).

use std::time::Duration;

use reqwest::redirect::{Attempt, Policy};

/// Every request says who it is.
pub const USER_AGENT: &str = concat!("modelslab-sentinel/", env!("CARGO_PKG_VERSION"));
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// The shared clients. Cheap to clone.
#[derive(Clone)]
pub struct Clients {
    /// To the API (`upstream.base_url`): probes and the account pollers.
    pub api: reqwest::Client,
    /// To public pages: the status page.
    pub pages: reqwest::Client,
    /// To wherever answers point generated files.
    pub downloads: reqwest::Client,
}

fn same_origin(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    let first = attempt.previous().first();
    let same = first.is_some_and(|f| f.origin() == attempt.url().origin());
    if attempt.previous().len() >= MAX_REDIRECTS || !same { attempt.stop() } else { attempt.follow() }
}

impl Clients {
    /// The three clients.
    pub fn new() -> Result<Self, reqwest::Error> {
        let builder = || reqwest::Client::builder().user_agent(USER_AGENT);
        Ok(Clients {
            api: builder().redirect(Policy::custom(same_origin)).pool_idle_timeout(Duration::from_secs(90)).build()?,
            pages: builder().redirect(Policy::limited(MAX_REDIRECTS)).build()?,
            downloads: builder().redirect(Policy::none()).pool_idle_timeout(Duration::from_secs(30)).build()?,
        })
    }
}
