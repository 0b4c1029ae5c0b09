//! The status page (`GET /` on the admin port): one HTML page for people, rendered from the very
//! document `/api/v1/status` answers ([`StatusDocument`]), so that they cannot disagree. No
//! external assets (it must work in a cluster without internet), no script (it refreshes itself
//! with a meta refresh), no inline style (the stylesheet is `/-/ui.css`, under a strict
//! Content-Security-Policy); readable on a phone. It shows only what the status document holds:
//! classified, scrubbed messages, never a key, a prompt or a body.
//!
//! Presentation only: the verdict it shows is judged in `observe::verdict`. Uses `observe` (the
//! document) and nothing else of the agent.

mod charts;

use maud::{DOCTYPE, Markup, html};

use crate::classify::ErrorClass;
use crate::clock::unix_seconds;
use crate::observe::history::Bucket;
use crate::observe::status::{AdminAccess, ClusterRole, ProbeView, StatusDocument};
use charts::{Column, Mark};

/// The page's stylesheet, served at [`STYLESHEET_PATH`].
pub const STYLESHEET: &str = include_str!("style.css");
/// Where the stylesheet is served.
pub const STYLESHEET_PATH: &str = "/-/ui.css";
/// Seconds between the page's own refreshes.
pub const REFRESH_SECONDS: u32 = 10;
/// What the page may load: its own stylesheet, nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Runs shown in a probe's strip.
const STRIP_SLOTS: usize = 30;

/// The admin endpoints, listed at the foot of the page.
const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("GET", "/metrics", "Prometheus metrics"),
    ("GET", "/api/v1/status", "this page's data as JSON"),
    ("GET", "/healthz", "liveness: 200 while the process serves"),
    ("GET", "/readyz", "readiness: 200 once the config is loaded and listeners are bound"),
    ("POST", "/api/v1/probes/NAME/run", "run one probe now; answers its report as JSON"),
    ("POST", "/-/reload", "re-read the config file (a bad file keeps the running config)"),
];

/// The whole page for a status document.
pub fn page(doc: &StatusDocument) -> String {
    let now = unix_seconds();
    let state = doc.overall.state.as_str();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { "modelslab-sentinel: " (state) }
                link rel="stylesheet" href=(STYLESHEET_PATH);
                link rel="icon" href="data:,";
            }
            body {
                header id="overall" class=(format!("overall {state}")) {
                    p class="product" { "modelslab-sentinel " (doc.version) }
                    h1 { (state) }
                    p id="why" class="why" { (doc.overall.why) }
                    p class="meta" { "at " (clock(now)) " UTC · refreshes every " (REFRESH_SECONDS) " s" }
                }
                main {
                    (findings(doc))
                    (probes(doc, now))
                    (traffic(doc))
                    (llm(doc))
                    (jobs(doc))
                    (time_and_money(doc))
                    (rate_limits(doc, now))
                    (credits(doc))
                    (slos(doc))
                    (delivery(doc))
                    (status_page(doc))
                    (agent(doc))
                }
            }
        }
    }
    .into_string()
}

fn findings(doc: &StatusDocument) -> Markup {
    let list = &doc.overall.findings;
    html! {
        @if list.len() > 1 {
            section id="findings" {
                h2 { "Worth a look" }
                ul {
                    @for f in list {
                        li class=(f.severity.as_str()) { (f.what) }
                    }
                }
            }
        }
    }
}

fn probes(doc: &StatusDocument, now: f64) -> Markup {
    html! {
        section id="probes" {
            h2 { "Probes" }
            @if doc.probes.is_empty() {
                p class="none" { "No probes configured." }
            } @else {
                div class="scroll" {
                    table {
                        thead { tr { th { "probe" } th { "state" } th { "last run" } th { "duration" } th { "recent runs" } th { "why" } } }
                        tbody {
                            @for p in &doc.probes { (probe_row(p, now)) }
                        }
                    }
                }
            }
        }
    }
}

fn probe_row(p: &ProbeView, now: f64) -> Markup {
    let name = &p.name;
    let last = p.last.as_ref();
    let state = match last {
        None if p.running => "running",
        None => "waiting",
        Some(l) if l.outcome.is_success() => "ok",
        Some(_) => "failing",
    };
    let why = match (last, &p.backoff) {
        (Some(l), _) if !l.outcome.is_success() => {
            let mut parts: Vec<String> = l.outcome.failure().map(|r| r.as_str().to_owned()).into_iter().collect();
            if let Some(first) = l.outcome.failed_expectations().first() {
                parts.push(first.clone());
            } else if let Some(m) = l.answer.as_ref().and_then(|a| a.message.clone()) {
                parts.push(m);
            }
            parts.join(": ")
        }
        (_, Some(b)) => format!("paused {:.0} s after {}", b.remaining_seconds, b.reason),
        _ => String::new(),
    };
    let runs: Vec<Mark> = p
        .recent_runs
        .iter()
        .map(|r| Mark {
            ok: r.success,
            title: format!(
                "{} {} in {}{}",
                clock(r.at_unix),
                if r.success { "ok" } else { "failed" },
                seconds(r.duration_seconds),
                r.failure_reason.map(|f| format!(": {f}")).unwrap_or_default()
            ),
        })
        .collect();
    html! {
        tr class=(format!("probe {state}")) id=(format!("probe-{name}")) {
            th scope="row" { (name) }
            td { span class=(format!("badge {state}")) { (state) } }
            td { (last.map(|l| ago(now, l.started_at_unix)).unwrap_or_else(|| "–".into())) }
            td { (last.map(|l| seconds(l.duration_seconds)).unwrap_or_else(|| "–".into())) }
            td { (charts::strip(&runs, STRIP_SLOTS, &format!("last {} runs of {name}", runs.len()))) }
            td class="why" { (why) }
        }
    }
}

fn outcome_column(b: &Bucket) -> Column {
    Column {
        title: format!(
            "{}: {} success, {} processing, {} error",
            clock(b.start as f64),
            b.success,
            b.processing,
            b.error
        ),
        parts: vec![("success", b.success), ("processing", b.processing), ("error", b.error)],
    }
}

fn class_column(b: &Bucket) -> Column {
    let parts: Vec<(&'static str, u32)> =
        ErrorClass::ALL.iter().map(|c| (c.as_str(), b.classes.get(c).copied().unwrap_or(0))).collect();
    let listed: Vec<String> = parts.iter().filter(|p| p.1 > 0).map(|(c, n)| format!("{n} {c}")).collect();
    Column {
        title: format!(
            "{}: {}",
            clock(b.start as f64),
            if listed.is_empty() { "no errors".to_owned() } else { listed.join(", ") }
        ),
        parts,
    }
}

fn traffic(doc: &StatusDocument) -> Markup {
    let recent = &doc.recent;
    let totals = &recent.totals;
    let outcome_cols: Vec<Column> = recent.traffic.iter().map(outcome_column).collect();
    let class_cols: Vec<Column> = recent.traffic.iter().map(class_column).collect();
    let mut classes: Vec<(ErrorClass, u32)> = totals.classes.iter().map(|(c, n)| (*c, *n)).collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.1));
    let tallest = |cols: &[Column]| cols.iter().map(|c| c.parts.iter().map(|p| p.1).sum::<u32>()).max().unwrap_or(0);
    let (tallest_outcome, tallest_class) = (tallest(&outcome_cols), tallest(&class_cols));
    html! {
        section id="traffic" {
            h2 { "Traffic, last 15 minutes" }
            p class="figures" {
                (figure("requests", totals.requests.to_string()))
                (figure("media API", totals.requests.saturating_sub(recent.llm.requests).to_string()))
                (figure("LLM API", recent.llm.requests.to_string()))
                (figure("success", totals.success.to_string()))
                (figure("processing", totals.processing.to_string()))
                (figure("errors", totals.error.to_string()))
            }
            h3 { "By outcome" }
            (charts::stacked(&outcome_cols, 60, "requests by outcome, 15-second bars"))
            p class="legend" {
                span class="key s-success" { "success" } span class="key s-processing" { "processing" } span class="key s-error" { "error" }
                span class="span" { "−15 min … now · tallest bar " (tallest_outcome) " in 15 s" }
            }
            h3 { "Errors by class" }
            (charts::stacked(&class_cols, 60, "errors by class, 15-second bars"))
            p class="legend" { span class="span" { "tallest bar " (tallest_class) " in 15 s" } }
            @if classes.is_empty() {
                p class="none" { "No errors in the last 15 minutes." }
            } @else {
                ul id="error-classes" class="legend classes" {
                    @for (class, n) in &classes {
                        li class=(format!("key s-{class}")) data-class=(class.as_str()) { (class.as_str()) " " b { (n) } }
                    }
                }
            }
        }
    }
}

fn llm(doc: &StatusDocument) -> Markup {
    let l = &doc.recent.llm;
    let mut classes: Vec<(ErrorClass, u32)> = l.classes.iter().map(|(c, n)| (*c, *n)).collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.1));
    let window = (doc.recent.bucket_seconds * doc.recent.traffic.len() as u64).max(1) as f64;
    html! {
        section id="llm" {
            h2 { "LLM API, last 15 minutes" }
            p class="figures" {
                (figure("requests", l.requests.to_string()))
                (figure("errors", l.error.to_string()))
                (figure("output tokens", l.output_tokens.to_string()))
                (figure("tokens / s", format!("{:.1}", l.output_tokens as f64 / window)))
                (figure("first token p50", or_dash(l.time_to_first_token_p50_seconds.map(seconds))))
                (figure("first token p95", or_dash(l.time_to_first_token_p95_seconds.map(seconds))))
                (figure("truncated", l.truncated.to_string()))
            }
            @if l.requests == 0 {
                p class="none" { "No LLM exchanges in the last 15 minutes." }
            } @else {
                @if !l.finish_reasons.is_empty() {
                    ul id="finish-reasons" class="legend" {
                        @for (reason, n) in &l.finish_reasons {
                            li data-finish-reason=(reason.as_str()) { (reason.as_str()) " " b { (n) } }
                        }
                    }
                }
                @if !classes.is_empty() {
                    ul id="llm-error-classes" class="legend classes" {
                        @for (class, n) in &classes {
                            li class=(format!("key s-{class}")) data-class=(class.as_str()) { (class.as_str()) " " b { (n) } }
                        }
                    }
                }
            }
        }
    }
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "–".into())
}

fn jobs(doc: &StatusDocument) -> Markup {
    let j = &doc.recent.jobs;
    html! {
        section id="jobs" {
            h2 { "Async jobs" }
            p class="figures" {
                (figure("in flight", j.in_flight.to_string()))
                @for (result, n) in &j.finished { (figure(result.as_str(), n.to_string())) }
                (figure("duration p50", or_dash(j.duration_p50_seconds.map(seconds))))
                (figure("duration p95", or_dash(j.duration_p95_seconds.map(seconds))))
                (figure("actual / eta, p50", or_dash(j.eta_ratio_p50.map(|r| format!("{r:.2}×")))))
                (figure("over twice the eta", format!("{} of {}", j.over_twice_eta, j.with_eta)))
            }
            @if j.finished.is_empty() { p class="none" { "No job ended in the last 15 minutes." } }
        }
    }
}

/// Where the time and the money go: generation against queue wait by model, what a delivered
/// output cost, and the outputs paid for that were not usable.
fn time_and_money(doc: &StatusDocument) -> Markup {
    let recent = &doc.recent;
    let checked: u32 = recent.outputs.values().sum();
    let unusable: u32 =
        recent.outputs.iter().filter(|(r, _)| **r != crate::vocab::OutputResult::Ok).map(|(_, n)| n).sum();
    let per_output = recent.credits.as_ref().and_then(|c| c.per_output);
    let currency = doc.account.as_ref().and_then(|a| a.balance.as_ref()).and_then(|b| b.currency.clone());
    html! {
        @if !recent.time.is_empty() || recent.delivered > 0 {
            section id="time-and-money" {
                h2 { "Where the time and the money go, last 15 minutes" }
                p class="figures" {
                    (figure("outputs delivered", recent.delivered.to_string()))
                    (figure("credits per output", or_dash(per_output.map(|c| format!("{c:.4} {}", currency.as_deref().unwrap_or(""))))))
                    (figure("unusable outputs", if checked == 0 { "–".to_owned() } else { format!("{unusable} of {checked} checked") }))
                }
                @if !recent.time.is_empty() {
                    table class="time" {
                        thead { tr { th { "model" } th { "jobs" } th { "generation p50 / p95" } th { "queue wait p50 / p95" } } }
                        tbody {
                            @for t in &recent.time {
                                tr {
                                    td { (t.model) }
                                    td { (t.jobs) }
                                    td { (or_dash(t.generation_p50_seconds.map(seconds))) " / " (or_dash(t.generation_p95_seconds.map(seconds))) }
                                    td { (or_dash(t.queue_wait_p50_seconds.map(seconds))) " / " (or_dash(t.queue_wait_p95_seconds.map(seconds))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn rate_limits(doc: &StatusDocument, now: f64) -> Markup {
    let r = &doc.recent.rate_limits;
    let queue = doc.account.as_ref().and_then(|a| a.queue.as_ref());
    let models = doc.account.as_ref().and_then(|a| a.models.as_ref());
    let last = match (r.last_retry_after_seconds, r.last_retry_after_at_unix) {
        (Some(wait), Some(at)) => format!("{} ({})", seconds(wait), ago(now, at)),
        _ => "–".into(),
    };
    html! {
        section id="rate-limits" {
            h2 { "Queue, rate limits and models" }
            p class="figures" {
                (figure("429s, 15 min", r.rate_limited.to_string()))
                (figure("last retry_after", last))
                (figure("queue limit", or_dash(r.queue_limit.map(|n| n.to_string()))))
                (figure("jobs in flight", doc.recent.jobs.in_flight.to_string()))
                @if let Some(q) = queue {
                    (figure("account queue", match (q.depth, q.limit) {
                        (Some(d), Some(l)) => format!("{d} of {l}"),
                        (Some(d), None) => format!("{d} (limit not known yet)"),
                        _ => "–".to_owned(),
                    }))
                    (figure("queue poll", if q.up == Some(false) { "failing" } else { "ok" }))
                }
            }
            @if let Some(e) = queue.and_then(|q| q.last_error.as_ref()) { p class="why" { (e) } }
            @if let Some(m) = models {
                p class="figures" {
                    (figure("models listed", format!("{} of {} watched", m.listed.len(), m.listed.len() + m.delisted.len())))
                    (figure("delisted", if m.delisted.is_empty() { "none".to_owned() } else { m.delisted.join(", ") }))
                    (figure("catalogue poll", if m.up == Some(false) { "failing" } else { "ok" }))
                }
                @if let Some(e) = &m.last_error { p class="why" { (e) } }
            }
        }
    }
}

fn credits(doc: &StatusDocument) -> Markup {
    let Some(b) = doc.account.as_ref().and_then(|a| a.balance.as_ref()) else { return html! {} };
    let c = doc.recent.credits.as_ref();
    html! {
        section id="credits" {
            h2 { "Credits" }
            p class="figures" {
                (figure("balance", or_dash(b.balance.map(|v| format!("{v:.2} {}", b.currency.as_deref().unwrap_or(""))))))
                (figure("spend", or_dash(c.map(|c| format!("{:.2} / h", c.spend_per_hour)))))
                (figure("runway", or_dash(c.and_then(|c| c.runway_hours).map(hours))))
                (figure("spent since start", format!("{:.2}", b.spent)))
                (figure("poll", if b.up == Some(false) { "failing".to_owned() } else { "ok".to_owned() }))
            }
            @if let Some(e) = &b.last_error { p class="why" { (e) } }
        }
    }
}

fn slos(doc: &StatusDocument) -> Markup {
    let list = &doc.recent.slos;
    html! {
        @if !list.is_empty() {
            section id="slos" {
                h2 { "SLOs" }
                div class="scroll" {
                    table {
                        thead { tr { th { "SLO" } th { "objective" } th { "good / bad since start" } th { "budget spent since start" } th { "burn rate, 15 min" } } }
                        tbody {
                            @for s in list {
                                tr class=(if s.budget_spent_ratio.is_some_and(|x| x >= 1.0) { "slo spent" } else { "slo" }) {
                                    th scope="row" { (s.name) }
                                    td { (s.objective) " %" }
                                    td { (s.good_total) " / " (s.bad_total) }
                                    td { (or_dash(s.budget_spent_ratio.map(|x| format!("{:.0} %", x * 100.0)))) }
                                    td { (or_dash(s.burn_rate_15m.map(|x| format!("{x:.1}×")))) " (" (s.events_15m) " events)" }
                                }
                            }
                        }
                    }
                }
                p class="note" { "Budgets here count since the agent started; Prometheus keeps the whole window (docs/slo.md)." }
            }
        }
    }
}

fn delivery(doc: &StatusDocument) -> Markup {
    let recent = &doc.recent;
    let outputs: Vec<(&str, u32)> = recent.outputs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let hooks: Vec<(&str, u32)> = recent.webhooks.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    html! {
        @if !outputs.is_empty() || !hooks.is_empty() || doc.webhooks.is_some() {
            section id="delivery" {
                h2 { "What the API delivers, last 15 minutes" }
                p class="figures" {
                    @for (result, n) in &outputs { (figure(&format!("output {result}"), n.to_string())) }
                    @for (result, n) in &hooks { (figure(&format!("webhook {result}"), n.to_string())) }
                    @if let Some(w) = &doc.webhooks { (figure("webhooks awaited", w.waiting.to_string())) }
                }
            }
        }
    }
}

fn status_page(doc: &StatusDocument) -> Markup {
    let Some(sp) = &doc.status_page else { return html! {} };
    html! {
        section id="status-page" {
            h2 { "The vendor's status page" }
            p class="figures" {
                (figure("state", or_dash(sp.status.map(|s| s.as_str().replace('_', " ")))))
                (figure("incidents open", or_dash(sp.incidents_open.map(|n| n.to_string()))))
                (figure("poll", if sp.up == Some(false) { "failing".to_owned() } else { "ok".to_owned() }))
            }
            @if !sp.components.is_empty() {
                ul class="components" {
                    @for (name, state) in &sp.components {
                        li class=(format!("component {}", state.as_str())) { (name) ": " b { (state.as_str().replace('_', " ")) } }
                    }
                }
            }
            @if let Some(e) = &sp.last_error { p class="why" { (e) } }
        }
    }
}

fn agent(doc: &StatusDocument) -> Markup {
    let c = &doc.config;
    html! {
        section id="agent" {
            h2 { "The agent" }
            dl {
                dt { "config" } dd { (c.file) }
                dt { "last reload" } dd {
                    @if !c.last_reload_success { span class="badge failing" { "failed" } " " (c.last_reload_error.as_deref().unwrap_or("")) }
                    @else { "ok at " (clock(c.last_reload_success_timestamp_seconds)) " UTC" }
                }
                @if !c.restart_required_for.is_empty() {
                    dt { "needs a restart for" } dd { (c.restart_required_for.join(", ")) }
                }
                dt { "admin POSTs" } dd { (match c.admin_access { AdminAccess::Token => "token", AdminAccess::LoopbackOnly => "loopback only" }) }
                @if let Some(cluster) = &doc.cluster {
                    dt { "replica" } dd { (cluster.replica) " · " b { (match cluster.role { ClusterRole::Leader => "leader", ClusterRole::Standby => "standby" }) } }
                    dt { "lease holder" } dd { (cluster.lease_holder.as_deref().unwrap_or("")) }
                    dt { "Redis" } dd {
                        (if cluster.redis_up { "up" } else { "down" })
                        (if cluster.redis_cluster { " · a Redis Cluster" } else { "" })
                        @if cluster.jobs_restored > 0 { " · lost its data: " (cluster.jobs_restored) " jobs written back" }
                    }
                } @else {
                    dt { "replicas" } dd { "one (state in memory)" }
                }
            }
            h3 { "Endpoints" }
            ul class="endpoints" {
                @for (method, path, what) in ENDPOINTS {
                    li { code { (method) " " (path) } " — " (what) }
                }
            }
            p class="note" { "POSTs need " code { "Authorization: Bearer <admin.token>" } "; without a token they answer loopback clients only." }
        }
    }
}

fn figure(label: &str, value: impl maud::Render) -> Markup {
    html! { span class="figure" { b { (value) } " " (label) } }
}

/// `HH:MM:SS` of a Unix time, UTC.
fn clock(unix: f64) -> String {
    let s = unix.max(0.0) as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn ago(now: f64, at: f64) -> String {
    let d = (now - at).max(0.0);
    if d < 90.0 {
        format!("{d:.0} s ago")
    } else if d < 5400.0 {
        format!("{:.0} min ago", d / 60.0)
    } else {
        format!("{:.1} h ago", d / 3600.0)
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

fn hours(h: f64) -> String {
    if h < 48.0 { format!("{h:.1} h") } else { format!("{:.0} days", h / 24.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::history::RunMark;
    use crate::observe::status::{ConfigState, Parts};
    use crate::vocab::{ProbeFailure, RunOutcome, RunReport};

    fn document() -> StatusDocument {
        let config = ConfigState {
            file: "/etc/<x>.yaml".into(),
            admin_access: AdminAccess::LoopbackOnly,
            last_reload_success: true,
            last_reload_success_timestamp_seconds: 0.0,
            last_reload_error: None,
            restart_required_for: Vec::new(),
        };
        let last = RunReport {
            probe: "gen".into(),
            outcome: RunOutcome::Failure {
                reason: ProbeFailure::Expectation,
                failed_expectations: vec!["message <script>alert(1)</script>".into()],
            },
            duration_seconds: 0.25,
            started_at_unix: unix_seconds() - 5.0,
            answer: None,
            exchanges: Vec::new(),
        };
        let probe = ProbeView {
            last: Some(last),
            recent_runs: vec![RunMark { at_unix: 1.0, success: true, duration_seconds: 1.0, failure_reason: None }],
            ..ProbeView::new("gen", std::time::Duration::from_secs(60))
        };
        StatusDocument::judge(true, config, Parts { probes: vec![probe], ..Parts::default() })
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_loads_nothing_from_elsewhere() {
        let html = page(&document());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<h1>degraded</h1>"), "{html}");
        assert!(!html.contains("<script"), "escaped: {html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("/etc/&lt;x&gt;.yaml"));
        assert!(html.contains("id=\"probe-gen\""));
        assert!(!html.contains("style="), "no inline style under the CSP");
        for attr in ["src=\"http", "href=\"http", "url("] {
            assert!(!html.contains(attr), "nothing loaded from elsewhere ({attr})");
        }
        assert!(!STYLESHEET.contains("url(") && !STYLESHEET.contains("@import"));
    }

    #[test]
    fn times_read_well() {
        assert_eq!(clock(3600.0 * 14.0 + 62.0), "14:01:02");
        assert_eq!(ago(100.0, 40.0), "60 s ago");
        assert_eq!(ago(10_000.0, 5000.0), "83 min ago");
        assert_eq!(ago(20_000.0, 5000.0), "4.2 h ago");
        assert_eq!(
            (seconds(0.25), seconds(2.345), seconds(300.0)),
            ("250 ms".into(), "2.3 s".into(), "5.0 min".into())
        );
        assert_eq!(hours(30.0), "30.0 h");
        assert_eq!(hours(100.0), "4 days");
    }
}
