//! The verdict at the top of the status page (and `overall` in `/api/v1/status`): healthy,
//! degraded or failing, and why in one line. Judged from the status document itself, so that the
//! page and the API cannot disagree.
//!
//! Thresholds are for a glance, not for paging (the alert rules page): the API's own faults over
//! 5 % of the last 5 minutes' requests degrade, over 25 % fail; a failing probe degrades, every
//! probe failing or a key out of credits fails; the status page's own words count.

use serde::{Deserialize, Serialize};

use super::slo::PAGE_BURN_RATE_FAST;
use super::status::{StatusDocument, StatusPageView};
use crate::classify::{ErrorClass, PageStatus};
use crate::config::PauseProbes;
use crate::vocab::WebhookResult;

/// How things stand, worst last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing worth a look.
    #[default]
    Healthy,
    /// Something is wrong, not everything.
    Degraded,
    /// The API fails us, or we cannot use it.
    Failing,
}

impl Health {
    /// The verdict as a word.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Failing => "failing",
        }
    }
}

/// One thing worth a look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Health,
    /// What it is, in one line.
    pub what: String,
}

/// The verdict: the worst finding's severity, and what to read first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overall {
    /// The worst finding's severity.
    pub state: Health,
    /// One line: the worst finding (and how many more), or what is fine.
    pub why: String,
    /// Worst first.
    pub findings: Vec<Finding>,
}

/// Requests in the last 5 minutes under which ratios are not judged.
const MIN_REQUESTS: u32 = 10;

fn pct(part: u32, whole: u32) -> f64 {
    100.0 * f64::from(part) / f64::from(whole.max(1))
}

/// Everything worth a look, in no order.
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, severity: Health, what: String) {
        self.0.push(Finding { severity, what });
    }
}

/// Judges a status document (its `overall` is not read).
pub fn assess(doc: &StatusDocument) -> Overall {
    let mut f = Findings(Vec::new());
    if !doc.ready {
        f.add(Health::Degraded, "the agent is starting or shutting down".into());
    }
    maintenance(doc, &mut f);
    probes(doc, &mut f);
    traffic(doc, &mut f);
    if let Some(page) = &doc.status_page {
        status_page(page, &mut f);
    }
    credits(doc, &mut f);
    account(doc, &mut f);
    for s in &doc.recent.slos {
        if let Some(burn) = s.burn_rate_15m {
            if burn >= PAGE_BURN_RATE_FAST && s.events_15m >= s.min_events {
                f.add(Health::Degraded, format!("SLO {} burns its error budget at {burn:.0}x", s.name));
            }
        }
    }
    if !doc.config.last_reload_success {
        f.add(Health::Degraded, "the last config reload failed: the previous config runs".into());
    }
    if doc.cluster.as_ref().is_some_and(|c| !c.redis_up) {
        f.add(Health::Degraded, "Redis cannot be reached: replicas do not share state".into());
    }

    let mut f = f.0;
    f.sort_by_key(|x| std::cmp::Reverse(x.severity));
    let state = f.first().map_or(Health::Healthy, |x| x.severity);
    // Notes (a maintenance window) change no verdict; they follow what is fine.
    let notable: Vec<&Finding> = f.iter().filter(|x| x.severity > Health::Healthy).collect();
    let why = match notable.as_slice() {
        [] => std::iter::once(fine(doc)).chain(f.iter().map(|n| n.what.clone())).collect::<Vec<_>>().join("; "),
        [one] => one.what.clone(),
        [first, rest @ ..] => format!("{} (and {} more)", first.what, rest.len()),
    };
    Overall { state, why, findings: f }
}

fn maintenance(doc: &StatusDocument, f: &mut Findings) {
    let m = &doc.maintenance;
    let paused = match m.pause_probes {
        PauseProbes::Paid => "paid probes pause",
        PauseProbes::All => "probes pause",
        PauseProbes::None => "probes go on",
    };
    if let (Some(window), Some(until)) = (&m.window, &m.until) {
        f.add(Health::Healthy, format!("maintenance window {window} until {until}: {paused}"));
    }
    if m.vendor {
        f.add(Health::Healthy, format!("the vendor's maintenance is in progress: {paused}"));
    }
}

fn probes(doc: &StatusDocument, f: &mut Findings) {
    let ran: Vec<_> = doc.probes.iter().filter_map(|p| Some((p, p.last.as_ref()?))).collect();
    let failing: Vec<_> = ran.iter().filter(|(_, last)| !last.outcome.is_success()).collect();
    if ran.len() >= 2 && failing.len() == ran.len() {
        f.add(Health::Failing, format!("every probe is failing ({})", ran.len()));
    }
    for (p, last) in &failing {
        let name = &p.name;
        let class = last.error_class();
        let why = last
            .outcome
            .failed_expectations()
            .first()
            .cloned()
            .or_else(|| last.answer.as_ref().and_then(|a| a.message.clone()))
            .unwrap_or_default();
        let reason = last.outcome.failure().map_or("failure", |r| r.as_str());
        let (severity, what) = match class {
            Some(ErrorClass::PaymentRequired) => {
                (Health::Failing, format!("probe {name}: the key is out of credits (402)"))
            }
            Some(c @ (ErrorClass::Unauthorized | ErrorClass::Forbidden)) => {
                (Health::Failing, format!("probe {name}: the key is refused ({c})"))
            }
            _ if why.is_empty() => (Health::Degraded, format!("probe {name} failing: {reason}")),
            _ => (Health::Degraded, format!("probe {name} failing: {reason} ({why})")),
        };
        f.add(severity, what);
    }
    for p in &doc.probes {
        if let Some(b) = &p.backoff {
            f.add(
                Health::Degraded,
                format!("probe {} paused for {:.0} s after {}", p.name, b.remaining_seconds, b.reason),
            );
        }
    }
}

fn traffic(doc: &StatusDocument, f: &mut Findings) {
    let totals = &doc.recent.totals;
    let n = totals.requests_5m;
    if n >= MIN_REQUESTS {
        let share = pct(totals.api_faults_5m, n);
        if share >= 5.0 {
            let severity = if share >= 25.0 { Health::Failing } else { Health::Degraded };
            f.add(severity, format!("{share:.0} % of the last 5 minutes' {n} requests failed on the API's side"));
        }
        let limited = pct(totals.rate_limited_5m, n);
        if limited >= 10.0 {
            f.add(Health::Degraded, format!("{limited:.0} % of requests hit the queue limit (429)"));
        }
        let broke = pct(totals.payment_required_5m, n);
        if broke >= 10.0 {
            f.add(Health::Degraded, format!("{broke:.0} % of requests were refused for credits (402)"));
        }
    }
    let jobs = &doc.recent.jobs;
    if jobs.with_eta >= 5 && pct(jobs.over_twice_eta, jobs.with_eta) >= 50.0 {
        f.add(Health::Degraded, format!("{} of {} jobs took over twice their eta", jobs.over_twice_eta, jobs.with_eta));
    }
    let missing = doc.recent.webhooks.get(&WebhookResult::Missing).copied().unwrap_or(0);
    if missing > 0 {
        f.add(Health::Degraded, format!("{missing} webhook(s) never came in the last 15 minutes"));
    }
}

fn status_page(page: &StatusPageView, f: &mut Findings) {
    match page.status {
        Some(PageStatus::MajorOutage) => f.add(Health::Failing, "the status page reports a major outage".into()),
        Some(s @ (PageStatus::PartialOutage | PageStatus::Degraded)) => {
            f.add(Health::Degraded, format!("the status page reports {}", s.as_str().replace('_', " ")));
        }
        _ => {}
    }
    if page.up == Some(false) {
        f.add(Health::Degraded, "the status page cannot be read".into());
    }
}

fn credits(doc: &StatusDocument, f: &mut Findings) {
    let Some(balance) = doc.account.as_ref().and_then(|a| a.balance.as_ref()) else { return };
    if balance.up == Some(false) {
        f.add(Health::Degraded, "the credit balance cannot be polled".into());
    }
    if balance.balance.is_some_and(|b| b <= 0.0) {
        f.add(Health::Failing, "no credits left".into());
    } else if let Some(h) = doc.recent.credits.as_ref().and_then(|c| c.runway_hours).filter(|h| *h < 24.0) {
        f.add(Health::Degraded, format!("credits run out in about {h:.0} h at the current spend"));
    }
}

/// Share of the queue limit at which the account's queue is worth a look: the verdict's line and
/// `ModelslabQueueNearLimit`'s default (`alerts`).
pub const QUEUE_NEAR_LIMIT: f64 = 0.8;

/// The account's queue and catalogue.
fn account(doc: &StatusDocument, f: &mut Findings) {
    let Some(a) = doc.account.as_ref() else { return };
    if let Some(q) = &a.queue {
        if q.up == Some(false) {
            f.add(Health::Degraded, "the account's queue cannot be polled".into());
        }
        if let (Some(depth), Some(limit)) = (q.depth, q.limit.filter(|l| *l > 0)) {
            if f64::from(depth) >= QUEUE_NEAR_LIMIT * f64::from(limit) {
                f.add(
                    Health::Degraded,
                    format!("the account's queue holds {depth} of its {limit} requests (every client of the key)"),
                );
            }
        }
    }
    if let Some(m) = &a.models {
        if m.up == Some(false) {
            f.add(Health::Degraded, "the model catalogue cannot be polled".into());
        }
        if !m.delisted.is_empty() {
            f.add(Health::Degraded, format!("no longer in the model catalogue: {}", m.delisted.join(", ")));
        }
    }
}

/// What is fine, in one line.
fn fine(doc: &StatusDocument) -> String {
    let mut parts = Vec::new();
    if !doc.probes.is_empty() {
        let ran = doc.probes.iter().filter(|p| p.last.is_some()).count();
        parts.push(format!("{ran} of {} probes passing", doc.probes.len()));
    }
    parts.push(format!("{} requests in the last 15 minutes", doc.recent.totals.requests));
    if let Some(s) = doc.status_page.as_ref().and_then(|p| p.status) {
        parts.push(format!("status page {}", s.as_str().replace('_', " ")));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests;
