//! The status page (`GET /` on the admin port): one HTML page for people, rendered from the very
//! document `/api/v1/status` answers, so that they cannot disagree. No external assets (it must
//! work in a cluster without internet), no script (it refreshes itself with a meta refresh), no
//! inline style (the stylesheet is `/-/ui.css`, under a strict Content-Security-Policy); readable
//! on a phone. It shows only what the status document holds: classified, scrubbed messages, never
//! a key, a prompt or a body.
//!
//! Uses `observe::history` (through the document) and nothing else of the agent.

mod charts;
pub mod health;

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::classify::ErrorClass;
use crate::metrics::unix_now;
use charts::{Column, Mark};

/// The page's stylesheet, served at [`STYLESHEET_PATH`].
pub const STYLESHEET: &str = include_str!("style.css");
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

/// The whole page for a status document (with `overall`).
pub fn page(status: &Value) -> String {
    let now = unix_now();
    let state = status["overall"]["state"].as_str().unwrap_or("healthy");
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
                    p class="product" { "modelslab-sentinel " (text(&status["version"])) }
                    h1 { (state) }
                    p id="why" class="why" { (text(&status["overall"]["why"])) }
                    p class="meta" { "at " (clock(now)) " UTC · refreshes every " (REFRESH_SECONDS) " s" }
                }
                main {
                    (findings(status))
                    (probes(status, now))
                    (traffic(status))
                    (jobs(status))
                    (rate_limits(status, now))
                    (credits(status))
                    (slos(status))
                    (delivery(status))
                    (status_page(status))
                    (agent(status))
                }
            }
        }
    }
    .into_string()
}

fn findings(status: &Value) -> Markup {
    let list = status["overall"]["findings"].as_array().map(Vec::as_slice).unwrap_or_default();
    html! {
        @if list.len() > 1 {
            section id="findings" {
                h2 { "Worth a look" }
                ul {
                    @for f in list {
                        li class=(text(&f["severity"])) { (text(&f["what"])) }
                    }
                }
            }
        }
    }
}

fn probes(status: &Value, now: f64) -> Markup {
    let list = status["probes"].as_array().map(Vec::as_slice).unwrap_or_default();
    html! {
        section id="probes" {
            h2 { "Probes" }
            @if list.is_empty() {
                p class="none" { "No probes configured." }
            } @else {
                div class="scroll" {
                    table {
                        thead { tr { th { "probe" } th { "state" } th { "last run" } th { "duration" } th { "recent runs" } th { "why" } } }
                        tbody {
                            @for p in list { (probe_row(p, now)) }
                        }
                    }
                }
            }
        }
    }
}

fn probe_row(p: &Value, now: f64) -> Markup {
    let name = text(&p["name"]);
    let last = &p["last"];
    let state = if p["running"] == true && !last.is_object() {
        "running"
    } else if !last.is_object() {
        "waiting"
    } else if last["success"] == true {
        "ok"
    } else {
        "failing"
    };
    let why = if last["success"] == false {
        let mut parts = vec![text(&last["failure_reason"])];
        if let Some(first) = last["failed_expectations"].as_array().and_then(|a| a.first()) {
            parts.push(text(first));
        } else if let Some(m) = last["message"].as_str() {
            parts.push(m.to_owned());
        }
        parts.retain(|s| !s.is_empty());
        parts.join(": ")
    } else if let (Some(left), Some(reason)) = (p["backoff_remaining_seconds"].as_f64(), p["backoff_reason"].as_str()) {
        format!("paused {left:.0} s after {reason}")
    } else {
        String::new()
    };
    let runs: Vec<Mark> = p["recent_runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Mark {
            ok: r["success"] == true,
            title: format!(
                "{} {} in {}{}",
                clock(r["at_unix"].as_f64().unwrap_or(0.0)),
                if r["success"] == true { "ok" } else { "failed" },
                seconds(r["duration_seconds"].as_f64().unwrap_or(0.0)),
                r["failure_reason"].as_str().map(|f| format!(": {f}")).unwrap_or_default()
            ),
        })
        .collect();
    html! {
        tr class=(format!("probe {state}")) id=(format!("probe-{name}")) {
            th scope="row" { (name) }
            td { span class=(format!("badge {state}")) { (state) } }
            td { (last["started_at_unix"].as_f64().map(|t| ago(now, t)).unwrap_or_else(|| "–".into())) }
            td { (last["duration_seconds"].as_f64().map(seconds).unwrap_or_else(|| "–".into())) }
            td { (charts::strip(&runs, STRIP_SLOTS, &format!("last {} runs of {name}", runs.len()))) }
            td class="why" { (why) }
        }
    }
}

fn traffic(status: &Value) -> Markup {
    let recent = &status["recent"];
    let buckets = recent["traffic"].as_array().map(Vec::as_slice).unwrap_or_default();
    let totals = &recent["totals"];
    let outcome_cols: Vec<Column> = buckets
        .iter()
        .map(|b| {
            let n = |k: &str| b[k].as_u64().unwrap_or(0) as u32;
            Column {
                title: format!(
                    "{}: {} success, {} processing, {} error",
                    clock(b["start"].as_f64().unwrap_or(0.0)),
                    n("success"),
                    n("processing"),
                    n("error")
                ),
                parts: vec![("success", n("success")), ("processing", n("processing")), ("error", n("error"))],
            }
        })
        .collect();
    let class_cols: Vec<Column> = buckets
        .iter()
        .map(|b| {
            let parts: Vec<(&'static str, u32)> = ErrorClass::ALL
                .iter()
                .map(|c| (c.as_str(), b["classes"][c.as_str()].as_u64().unwrap_or(0) as u32))
                .collect();
            let listed: Vec<String> = parts.iter().filter(|p| p.1 > 0).map(|(c, n)| format!("{n} {c}")).collect();
            Column {
                title: format!(
                    "{}: {}",
                    clock(b["start"].as_f64().unwrap_or(0.0)),
                    if listed.is_empty() { "no errors".to_owned() } else { listed.join(", ") }
                ),
                parts,
            }
        })
        .collect();
    let classes: Vec<(&str, u64)> = totals["classes"]
        .as_object()
        .map(|m| {
            let mut v: Vec<(&str, u64)> = m.iter().map(|(k, v)| (k.as_str(), v.as_u64().unwrap_or(0))).collect();
            v.sort_by_key(|c| std::cmp::Reverse(c.1));
            v
        })
        .unwrap_or_default();
    let requests = totals["requests"].as_u64().unwrap_or(0);
    let tallest = |cols: &[Column]| cols.iter().map(|c| c.parts.iter().map(|p| p.1).sum::<u32>()).max().unwrap_or(0);
    let (tallest_outcome, tallest_class) = (tallest(&outcome_cols), tallest(&class_cols));
    html! {
        section id="traffic" {
            h2 { "Traffic, last 15 minutes" }
            p class="figures" {
                (figure("requests", requests.to_string()))
                (figure("success", totals["success"].as_u64().unwrap_or(0).to_string()))
                (figure("processing", totals["processing"].as_u64().unwrap_or(0).to_string()))
                (figure("errors", totals["error"].as_u64().unwrap_or(0).to_string()))
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
                        li class=(format!("key s-{class}")) data-class=(class) { (class) " " b { (n) } }
                    }
                }
            }
        }
    }
}

fn jobs(status: &Value) -> Markup {
    let j = &status["recent"]["jobs"];
    let finished: Vec<(String, u64)> = j["finished"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    html! {
        section id="jobs" {
            h2 { "Async jobs" }
            p class="figures" {
                (figure("in flight", j["in_flight"].as_u64().unwrap_or(0).to_string()))
                @for (result, n) in &finished { (figure(result, n.to_string())) }
                (figure("duration p50", j["duration_p50_seconds"].as_f64().map(seconds).unwrap_or_else(|| "–".into())))
                (figure("duration p95", j["duration_p95_seconds"].as_f64().map(seconds).unwrap_or_else(|| "–".into())))
                (figure("actual / eta, p50", j["eta_ratio_p50"].as_f64().map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into())))
                (figure("over twice the eta", format!("{} of {}", j["over_twice_eta"].as_u64().unwrap_or(0), j["with_eta"].as_u64().unwrap_or(0))))
            }
            @if finished.is_empty() { p class="none" { "No job ended in the last 15 minutes." } }
        }
    }
}

fn rate_limits(status: &Value, now: f64) -> Markup {
    let r = &status["recent"]["rate_limits"];
    let last = match (r["last_retry_after_seconds"].as_f64(), r["last_retry_after_at_unix"].as_f64()) {
        (Some(wait), Some(at)) => format!("{} ({})", seconds(wait), ago(now, at)),
        _ => "–".into(),
    };
    html! {
        section id="rate-limits" {
            h2 { "Rate limits" }
            p class="figures" {
                (figure("429s, 15 min", r["rate_limited"].as_u64().unwrap_or(0).to_string()))
                (figure("last retry_after", last))
                (figure("queue limit", r["queue_limit"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "–".into())))
                (figure("jobs in flight", status["recent"]["jobs"]["in_flight"].as_u64().unwrap_or(0).to_string()))
            }
        }
    }
}

fn credits(status: &Value) -> Markup {
    let b = &status["account"]["balance"];
    let c = &status["recent"]["credits"];
    html! {
        @if b.is_object() {
            section id="credits" {
                h2 { "Credits" }
                p class="figures" {
                    (figure("balance", match b["balance"].as_f64() {
                        Some(v) => format!("{v:.2} {}", text(&b["currency"])),
                        None => "–".into(),
                    }))
                    (figure("spend", c["spend_per_hour"].as_f64().map(|v| format!("{v:.2} / h")).unwrap_or_else(|| "–".into())))
                    (figure("runway", c["runway_hours"].as_f64().map(hours).unwrap_or_else(|| "–".into())))
                    (figure("poll", if b["up"] == false { "failing".to_owned() } else { "ok".to_owned() }))
                }
                @if let Some(e) = b["last_error"].as_str() { p class="why" { (e) } }
            }
        }
    }
}

fn slos(status: &Value) -> Markup {
    let list = status["recent"]["slos"].as_array().map(Vec::as_slice).unwrap_or_default();
    html! {
        @if !list.is_empty() {
            section id="slos" {
                h2 { "SLOs" }
                div class="scroll" {
                    table {
                        thead { tr { th { "SLO" } th { "objective" } th { "good / bad since start" } th { "budget spent since start" } th { "burn rate, 15 min" } } }
                        tbody {
                            @for s in list {
                                @let spent = s["budget_spent_ratio"].as_f64();
                                tr class=(if spent.is_some_and(|x| x >= 1.0) { "slo spent" } else { "slo" }) {
                                    th scope="row" { (text(&s["name"])) }
                                    td { (s["objective"].as_f64().map(|o| format!("{o} %")).unwrap_or_default()) }
                                    td { (s["good_total"].as_u64().unwrap_or(0)) " / " (s["bad_total"].as_u64().unwrap_or(0)) }
                                    td { (spent.map(|x| format!("{:.0} %", x * 100.0)).unwrap_or_else(|| "–".into())) }
                                    td { (s["burn_rate_15m"].as_f64().map(|x| format!("{x:.1}×")).unwrap_or_else(|| "–".into()))
                                         " (" (s["events_15m"].as_u64().unwrap_or(0)) " events)" }
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

fn delivery(status: &Value) -> Markup {
    let recent = &status["recent"];
    let counts = |v: &Value| -> Vec<(String, u64)> {
        v.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect()).unwrap_or_default()
    };
    let (outputs, hooks) = (counts(&recent["outputs"]), counts(&recent["webhooks"]));
    html! {
        @if !outputs.is_empty() || !hooks.is_empty() || status["webhooks"].is_object() {
            section id="delivery" {
                h2 { "What the API delivers, last 15 minutes" }
                p class="figures" {
                    @for (result, n) in &outputs { (figure(&format!("output {result}"), n.to_string())) }
                    @for (result, n) in &hooks { (figure(&format!("webhook {result}"), n.to_string())) }
                    @if let Some(w) = status["webhooks"]["waiting"].as_u64() { (figure("webhooks awaited", w.to_string())) }
                }
            }
        }
    }
}

fn status_page(status: &Value) -> Markup {
    let sp = &status["status_page"];
    html! {
        @if sp.is_object() {
            section id="status-page" {
                h2 { "The vendor's status page" }
                p class="figures" {
                    (figure("state", text(&sp["status"]).replace('_', " ")))
                    (figure("incidents open", sp["incidents_open"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "–".into())))
                    (figure("poll", if sp["up"] == false { "failing".to_owned() } else { "ok".to_owned() }))
                }
                @if let Some(components) = sp["components"].as_array().filter(|c| !c.is_empty()) {
                    ul class="components" {
                        @for c in components {
                            @let state = text(&c[1]);
                            li class=(format!("component {state}")) { (text(&c[0])) ": " b { (state.replace('_', " ")) } }
                        }
                    }
                }
                @if let Some(e) = sp["last_error"].as_str() { p class="why" { (e) } }
            }
        }
    }
}

fn agent(status: &Value) -> Markup {
    let c = &status["config"];
    let cluster = &status["cluster"];
    html! {
        section id="agent" {
            h2 { "The agent" }
            dl {
                dt { "config" } dd { (text(&c["file"])) }
                dt { "last reload" } dd {
                    @if c["last_reload_success"] == false { span class="badge failing" { "failed" } " " (text(&c["last_reload_error"])) }
                    @else { "ok at " (clock(c["last_reload_success_timestamp_seconds"].as_f64().unwrap_or(0.0))) " UTC" }
                }
                @if let Some(r) = c["restart_required_for"].as_array().filter(|r| !r.is_empty()) {
                    dt { "needs a restart for" } dd { (r.iter().map(text).collect::<Vec<_>>().join(", ")) }
                }
                dt { "admin POSTs" } dd { (text(&c["admin_access"]).replace('_', " ")) }
                @if cluster.is_object() {
                    dt { "replica" } dd { (text(&cluster["replica"])) " · " b { (text(&cluster["role"])) } }
                    dt { "lease holder" } dd { (text(&cluster["lease_holder"])) }
                    dt { "Redis" } dd { (if cluster["redis_up"] == true { "up" } else { "down" }) }
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

fn figure(label: &str, value: String) -> Markup {
    html! { span class="figure" { b { (value) } " " (label) } }
}

/// A JSON value as text (strings without quotes; null as empty).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
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
    use serde_json::json;

    #[test]
    fn the_page_escapes_what_it_shows_and_loads_nothing_from_elsewhere() {
        let mut status = json!({
            "version": "0.1.0", "ready": true,
            "config": {"file": "/etc/<x>.yaml", "admin_access": "loopback_only", "last_reload_success": true},
            "probes": [{"name": "gen", "running": false,
                        "last": {"success": false, "failure_reason": "expectation", "started_at_unix": unix_now() - 5.0,
                                 "duration_seconds": 0.25, "failed_expectations": ["message <script>alert(1)</script>"]},
                        "recent_runs": [{"at_unix": 1.0, "success": true, "duration_seconds": 1.0}]}],
        });
        status["overall"] = serde_json::to_value(health::assess(&status)).unwrap();
        let html = page(&status);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<h1>degraded</h1>"), "{html}");
        assert!(!html.contains("<script"), "escaped: {html}");
        assert!(html.contains("&lt;script&gt;"));
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
