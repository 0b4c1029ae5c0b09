//! The overall state at the top of the status page (and `overall` in `/api/v1/status`): healthy,
//! degraded or failing, and why in one line. Judged from the status document itself, so that
//! the page and the API cannot disagree.
//!
//! Thresholds are for a glance, not for paging (the alert rules page): the API's own faults over
//! 5 % of the last 5 minutes' requests degrade, over 25 % fail; a failing probe degrades, every
//! probe failing or a key out of credits fails; the status page's own words count.

use serde::Serialize;
use serde_json::Value;

/// How things stand, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Degraded,
    Failing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Failing => "failing",
        }
    }
}

/// One thing worth a look.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Health,
    pub what: String,
}

/// The verdict: the worst finding's severity, and what to read first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overall {
    pub state: Health,
    /// One line: the worst finding (and how many more), or what is fine.
    pub why: String,
    /// Worst first.
    pub findings: Vec<Finding>,
}

/// Requests in the last 5 minutes under which ratios are not judged.
const MIN_REQUESTS: u64 = 10;
/// A burn rate at which a 30-day budget is gone in about 2 days (the fast page's threshold).
const FAST_BURN: f64 = 14.4;

fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// Judges a status document (`/api/v1/status` without `overall`).
pub fn assess(status: &Value) -> Overall {
    let mut f = Vec::new();
    let mut add = |severity: Health, what: String| f.push(Finding { severity, what });

    if status["ready"] == false {
        add(Health::Degraded, "the agent is starting or shutting down".into());
    }

    // Probes.
    let probes = status["probes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let ran: Vec<&Value> = probes.iter().filter(|p| p["last"].is_object()).collect();
    let failing: Vec<&&Value> = ran.iter().filter(|p| p["last"]["success"] == false).collect();
    if ran.len() >= 2 && failing.len() == ran.len() {
        add(Health::Failing, format!("every probe is failing ({})", ran.len()));
    }
    for p in &failing {
        let last = &p["last"];
        let name = p["name"].as_str().unwrap_or("?");
        let class = last["error_class"].as_str().unwrap_or("");
        let why = last["failed_expectations"][0].as_str().or(last["message"].as_str()).unwrap_or("");
        let reason = last["failure_reason"].as_str().unwrap_or("failure");
        let key_trouble = matches!(class, "payment_required" | "unauthorized" | "forbidden");
        let severity = if key_trouble { Health::Failing } else { Health::Degraded };
        let what = match class {
            "payment_required" => format!("probe {name}: the key is out of credits (402)"),
            "unauthorized" | "forbidden" => format!("probe {name}: the key is refused ({class})"),
            _ if why.is_empty() => format!("probe {name} failing: {reason}"),
            _ => format!("probe {name} failing: {reason} ({why})"),
        };
        add(severity, what);
    }
    for p in probes {
        if let (Some(left), Some(reason)) = (p["backoff_remaining_seconds"].as_f64(), p["backoff_reason"].as_str()) {
            let name = p["name"].as_str().unwrap_or("?");
            add(Health::Degraded, format!("probe {name} paused for {left:.0} s after {reason}"));
        }
    }

    // Traffic of the last 5 minutes.
    let totals = &status["recent"]["totals"];
    let n = totals["requests_5m"].as_u64().unwrap_or(0);
    if n >= MIN_REQUESTS {
        let faults = totals["api_faults_5m"].as_u64().unwrap_or(0);
        let share = pct(faults, n);
        if share >= 5.0 {
            let severity = if share >= 25.0 { Health::Failing } else { Health::Degraded };
            add(severity, format!("{share:.0} % of the last 5 minutes' {n} requests failed on the API's side"));
        }
        let limited = pct(totals["rate_limited_5m"].as_u64().unwrap_or(0), n);
        if limited >= 10.0 {
            add(Health::Degraded, format!("{limited:.0} % of requests hit the queue limit (429)"));
        }
        let broke = pct(totals["payment_required_5m"].as_u64().unwrap_or(0), n);
        if broke >= 10.0 {
            add(Health::Degraded, format!("{broke:.0} % of requests were refused for credits (402)"));
        }
    }

    // Jobs against their eta.
    let jobs = &status["recent"]["jobs"];
    let (late, with_eta) = (jobs["over_twice_eta"].as_u64().unwrap_or(0), jobs["with_eta"].as_u64().unwrap_or(0));
    if with_eta >= 5 && pct(late, with_eta) >= 50.0 {
        add(Health::Degraded, format!("{late} of {with_eta} jobs took over twice their eta"));
    }

    // What the API delivers.
    let missing = status["recent"]["webhooks"]["missing"].as_u64().unwrap_or(0);
    if missing > 0 {
        add(Health::Degraded, format!("{missing} webhook(s) never came in the last 15 minutes"));
    }

    // The vendor's status page.
    let page = &status["status_page"];
    if page.is_object() {
        match page["status"].as_str() {
            Some("major_outage") => add(Health::Failing, "the status page reports a major outage".into()),
            Some(s @ ("partial_outage" | "degraded")) => {
                add(Health::Degraded, format!("the status page reports {}", s.replace('_', " ")))
            }
            _ => {}
        }
        if page["up"] == false {
            add(Health::Degraded, "the status page cannot be read".into());
        }
    }

    // Credits.
    let balance = &status["account"]["balance"];
    if balance.is_object() {
        if balance["up"] == false {
            add(Health::Degraded, "the credit balance cannot be polled".into());
        }
        if balance["balance"].as_f64().is_some_and(|b| b <= 0.0) {
            add(Health::Failing, "no credits left".into());
        } else if let Some(h) = status["recent"]["credits"]["runway_hours"].as_f64().filter(|h| *h < 24.0) {
            add(Health::Degraded, format!("credits run out in about {h:.0} h at the current spend"));
        }
    }

    // SLOs.
    for s in status["recent"]["slos"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("?");
        let events = s["events_15m"].as_u64().unwrap_or(0);
        if let Some(burn) = s["burn_rate_15m"].as_f64() {
            if burn >= FAST_BURN && events >= s["min_events"].as_u64().unwrap_or(0) {
                add(Health::Degraded, format!("SLO {name} burns its error budget at {burn:.0}x"));
            }
        }
    }

    // The agent itself.
    if status["config"]["last_reload_success"] == false {
        add(Health::Degraded, "the last config reload failed: the previous config runs".into());
    }
    if status["cluster"]["redis_up"] == false {
        add(Health::Degraded, "Redis cannot be reached: replicas do not share state".into());
    }

    f.sort_by_key(|x| std::cmp::Reverse(x.severity));
    let state = f.first().map_or(Health::Healthy, |x| x.severity);
    let why = match f.as_slice() {
        [] => fine(status, probes.len(), ran.len()),
        [one] => one.what.clone(),
        [first, rest @ ..] => format!("{} (and {} more)", first.what, rest.len()),
    };
    Overall { state, why, findings: f }
}

/// What is fine, in one line.
fn fine(status: &Value, probes: usize, ran: usize) -> String {
    let mut parts = Vec::new();
    if probes > 0 {
        parts.push(format!("{ran} of {probes} probes passing"));
    }
    let requests = status["recent"]["totals"]["requests"].as_u64().unwrap_or(0);
    parts.push(format!("{requests} requests in the last 15 minutes"));
    if let Some(s) = status["status_page"]["status"].as_str() {
        parts.push(format!("status page {}", s.replace('_', " ")));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(name: &str, success: bool, class: Option<&str>) -> Value {
        json!({"name": name, "last": {"success": success, "error_class": class, "failure_reason": "expectation",
               "failed_expectations": ["status is error, expected success"]}})
    }

    #[test]
    fn healthy_degraded_and_failing() {
        let healthy = json!({"ready": true, "probes": [probe("a", true, None), probe("b", true, None)],
            "recent": {"totals": {"requests": 40, "requests_5m": 40, "api_faults_5m": 1}},
            "status_page": {"status": "operational", "up": true}});
        let o = assess(&healthy);
        assert_eq!(o.state, Health::Healthy, "{o:?}");
        assert_eq!(o.why, "2 of 2 probes passing, 40 requests in the last 15 minutes, status page operational");

        let mut degraded = healthy.clone();
        degraded["probes"][1] = probe("b", false, Some("server_error"));
        degraded["status_page"]["status"] = json!("partial_outage");
        let o = assess(&degraded);
        assert_eq!(o.state, Health::Degraded);
        assert_eq!(o.why, "probe b failing: expectation (status is error, expected success) (and 1 more)");

        let mut failing = healthy.clone();
        failing["recent"]["totals"]["api_faults_5m"] = json!(20);
        let o = assess(&failing);
        assert_eq!(o.state, Health::Failing);
        assert!(o.why.starts_with("50 % of the last 5 minutes' 40 requests failed"), "{}", o.why);

        let mut broke = healthy.clone();
        broke["probes"][0] = probe("a", false, Some("payment_required"));
        assert_eq!(assess(&broke).findings[0].what, "probe a: the key is out of credits (402)");
        assert_eq!(assess(&broke).state, Health::Failing);
    }

    #[test]
    fn few_requests_are_not_judged_and_an_empty_document_is_healthy() {
        let few = json!({"recent": {"totals": {"requests_5m": 3, "api_faults_5m": 3}}});
        assert_eq!(assess(&few).state, Health::Healthy);
        assert_eq!(assess(&json!({})).state, Health::Healthy);
    }
}
