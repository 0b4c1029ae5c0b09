//! Probes against the emulator: every expectation kind passing and failing, following jobs to
//! success, to failure and past max_wait, soft errors, transport failures and timeouts, key
//! injection; and, through the agent process, the on-demand endpoint and the key kept out.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use modelslab_sentinel::classify::{ErrorClass, Reason, RequestKind};
use modelslab_sentinel::clients::Clients;
use modelslab_sentinel::cluster::Cluster;
use modelslab_sentinel::maintenance::Maintenance;
use modelslab_sentinel::metrics::Metrics;
use modelslab_sentinel::observe::ProbeFailure;
use modelslab_sentinel::probe::{HttpRunner, Probes};
use modelslab_sentinel::sim::{Faults, Scenario, Span};
use modelslab_sentinel::tasks::Tasks;
use modelslab_sentinel::vocab::RunReport;
use tokio_util::sync::CancellationToken;

/// The probes of `probes_yaml` against `base`, runnable on demand (no schedule running).
fn probes(base: &str, key: &str, probes_yaml: &str) -> (Probes, Arc<Metrics>) {
    let cfg =
        load_config(&format!("upstream:\n  base_url: {base}\n  api_key: {key}\n  timeout: 2s\nprobes:\n{probes_yaml}"));
    let (observer, metrics) = observer(&cfg);
    let runner = Arc::new(HttpRunner::new(observer.clone(), &Clients::new().unwrap()));
    (Probes::new(watched(cfg), observer, runner, Cluster::single(), Tasks::new(), Maintenance::new()), metrics)
}

/// Starts the schedule long enough to register every probe, then runs `name` on demand.
async fn run(p: &Probes, name: &str) -> RunReport {
    let token = CancellationToken::new();
    tokio::spawn(p.clone().run(token.clone()));
    eventually(Duration::from_secs(5), "the probe is scheduled", async || p.status().iter().any(|s| s.name == name))
        .await;
    let report = p.run_now(name).await.unwrap_or_else(|| panic!("no probe {name}"));
    token.cancel();
    report
}

fn probe(name: &str, request: &str, rest: &str) -> String {
    format!("  - name: {name}\n    interval: 1h\n    timeout: 30s\n    request: {request}\n{rest}")
}

const NO_PROMPT: &str = "{ path: /api/v6/images/text2img, body: { model_id: flux } }";
const GENERATE: &str = "{ path: /api/v6/images/text2img, body: { model_id: flux, prompt: a cat } }";

#[tokio::test]
async fn every_expectation_kind_passes_and_fails() {
    let sim = emulator(Scenario::default()).await;
    let base = sim.url.clone();
    let passing = "    expect:\n      http_status: [400]\n      status: error\n      error_class: bad_request\n      reason: missing_parameter\n      message_matches: \"(?i)^prompt\"\n      max_duration: 5s\n      json:\n        - { pointer: /status, equals: error }\n        - { pointer: /message, exists: true }\n        - { pointer: /output, exists: false }\n";
    let failing = [
        ("http-status", "      http_status: [200]\n", "http_status is 400, expected one of [200]"),
        ("status", "      status: success\n", "status is error, expected success"),
        ("class", "      error_class: unauthorized\n", "error_class is bad_request, expected unauthorized"),
        ("reason", "      reason: out_of_range\n", "reason is missing_parameter, expected out_of_range"),
        ("message", "      message_matches: credits\n", "message does not match /credits/"),
        ("duration", "      max_duration: 1ns\n", "more than max_duration 1ns"),
        (
            "json-equals",
            "      json: [ { pointer: /status, equals: success } ]\n",
            "/status is \"error\", expected \"success\"",
        ),
        ("json-exists", "      json: [ { pointer: /output/0, exists: true } ]\n", "/output/0 is missing"),
    ];
    let mut yaml = probe("all-pass", NO_PROMPT, passing);
    for (name, expect, _) in &failing {
        yaml.push_str(&probe(name, NO_PROMPT, &format!("    expect:\n{expect}")));
    }
    let (p, metrics) = probes(&base, "k", &yaml);
    let ok = run(&p, "all-pass").await;
    assert!(ok.success(), "{:?}", ok.failed_expectations());
    assert_eq!(
        (ok.http_status(), ok.error_class(), ok.reason()),
        (Some(400), Some(ErrorClass::BadRequest), Some(Reason::MissingParameter))
    );
    for (name, _, why) in failing {
        let r = run(&p, name).await;
        assert!(!r.success(), "{name}");
        assert_eq!(r.failure_reason(), Some(ProbeFailure::Expectation), "{name}");
        assert!(r.failed_expectations().iter().any(|f| f.contains(why)), "{name}: {:?}", r.failed_expectations());
    }
    let text = scrape_registry(&metrics);
    assert_eq!(text.metric("modelslab_probe_success").label("probe", "all-pass").value(), Some(1.0));
    assert_eq!(text.metric("modelslab_probe_success").label("probe", "status").value(), Some(0.0));
    assert_eq!(
        text.metric("modelslab_probe_failures_total").label("probe", "status").label("reason", "expectation").value(),
        Some(1.0)
    );
    assert_eq!(
        text.metric("modelslab_validation_errors_total")
            .label("endpoint", "/api/v6/images/text2img")
            .label("field", "prompt")
            .label("source", "probe")
            .value(),
        Some(9.0)
    );
}

/// A probe with the timeouts of a real generation probe: minutes.
fn generation_probe(rest: &str) -> String {
    format!(
        "  - name: gen\n    interval: 1h\n    timeout: 5m\n    request: {GENERATE}\n    follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 5s, max_wait: 4m }}\n{rest}"
    )
}

/// Under a paused clock: the emulator's jobs, the probe's polls and its durations all run on the
/// runtime's clock, so minutes of job time take no time at all.
#[tokio::test(start_paused = true)]
async fn following_a_job_to_success_failure_and_past_max_wait() {
    // Jobs take 40 s and the API promises half that.
    let sim =
        emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(40)), eta_bias: 0.5, ..Scenario::default() })
            .await;
    let expect = "    expect:\n      status: success\n      json: [ { pointer: /output/0, exists: true } ]\n";
    let (p, metrics) = probes(&sim.url, "k", &generation_probe(expect));
    let r = run(&p, "gen").await;
    assert!(r.success(), "{r:?}");
    assert!(
        r.exchanges.len() >= 2
            && r.exchanges[0].kind == RequestKind::Submit
            && r.exchanges.iter().skip(1).all(|e| e.kind == RequestKind::Fetch),
        "{:?}",
        r.exchanges
    );
    assert!((40.0..60.0).contains(&r.duration_seconds), "submit to terminal answer: {}", r.duration_seconds);
    assert_eq!(r.exchanges[1].endpoint, "/api/v6/images/fetch/{id}");
    let text = scrape_registry(&metrics);
    let jobs = text.metric("modelslab_jobs_total").label("endpoint", "/api/v6/images/text2img").label("model", "flux");
    assert_eq!(jobs.clone().label("result", "success").label("source", "probe").value(), Some(1.0));
    assert_eq!(text.metric("modelslab_jobs_in_flight").label("source", "probe").value(), Some(0.0));
    let ratio = text.metric("modelslab_job_eta_ratio_sum").label("source", "probe").value().unwrap();
    assert!((1.9..3.0).contains(&ratio), "40 s against a promised 20 s: ratio {ratio}");

    // Every job fails.
    let sim2 = emulator(Scenario { failure_ratio: 1.0, ..Scenario::default() }).await;
    let (p, metrics) = probes(&sim2.url, "k", &generation_probe(""));
    let r = run(&p, "gen").await;
    assert_eq!(
        (r.success(), r.failure_reason(), r.error_class()),
        (false, Some(ProbeFailure::JobFailed), Some(ErrorClass::JobFailed)),
        "{r:?}"
    );
    let text = scrape_registry(&metrics);
    let jobs = text.metric("modelslab_jobs_total").label("endpoint", "/api/v6/images/text2img").label("model", "flux");
    let failed = jobs.clone().label("result", "failed").sum() + jobs.label("result", "error").sum();
    assert_eq!(failed, 1.0);

    // A 20-minute job outlasts max_wait (4 minutes).
    let sim3 = emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(1200)), ..Scenario::default() }).await;
    let (p, metrics) = probes(&sim3.url, "k", &generation_probe(""));
    let r = run(&p, "gen").await;
    assert_eq!((r.success(), r.failure_reason()), (false, Some(ProbeFailure::JobTimeout)), "{r:?}");
    assert!(r.duration_seconds <= 240.0, "gave up within max_wait: {}", r.duration_seconds);
    let text = scrape_registry(&metrics);
    assert_eq!(
        text.metric("modelslab_jobs_total").label("result", "expired").label("source", "probe").value(),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_soft_error_fails_a_success_expectation_and_counts_as_http_200() {
    let sim =
        emulator(Scenario { faults: Faults { soft_error: 1.0, ..Faults::default() }, ..Scenario::default() }).await;
    let base = sim.url.clone();
    let (p, metrics) = probes(&base, "k", &probe("gen", GENERATE, ""));
    let r = run(&p, "gen").await;
    assert_eq!((r.success(), r.http_status(), r.error_class()), (false, Some(200), Some(ErrorClass::ServerError)));
    assert_eq!(r.failure_reason(), Some(ProbeFailure::Expectation));
    let text = scrape_registry(&metrics);
    assert_eq!(
        text.metric("modelslab_errors_total")
            .label("endpoint", "/api/v6/images/text2img")
            .label("error_class", "server_error")
            .label("http_status", "200")
            .label("reason", "internal_error")
            .label("source", "probe")
            .value(),
        Some(1.0)
    );
}

#[tokio::test]
async fn transport_failures_and_exchange_timeouts() {
    let port = free_port(); // nothing listens there
    let (p, metrics) = probes(&format!("http://127.0.0.1:{port}"), "k", &probe("down", GENERATE, ""));
    let r = run(&p, "down").await;
    assert_eq!(
        (r.failure_reason(), r.http_status(), r.error_class()),
        (Some(ProbeFailure::Transport), None, Some(ErrorClass::Transport))
    );
    let text = scrape_registry(&metrics);
    assert_eq!(
        text.metric("modelslab_errors_total")
            .label("endpoint", "/api/v6/images/text2img")
            .label("error_class", "transport")
            .label("http_status", "none")
            .label("reason", "other")
            .label("source", "probe")
            .value(),
        Some(1.0)
    );

    let sim = emulator(Scenario { faults: Faults { timeout: 1.0, ..Faults::default() }, ..Scenario::default() }).await;
    let base = sim.url.clone();
    let (p, _) = probes(&base, "k", &probe("hang", GENERATE, ""));
    let r = run(&p, "hang").await;
    assert_eq!(
        (r.failure_reason(), r.error_class()),
        (Some(ProbeFailure::Timeout), Some(ErrorClass::Timeout)),
        "upstream.timeout (2s) bounds the exchange"
    );
}

#[tokio::test]
async fn the_key_is_injected_unless_the_probe_brings_its_own() {
    let sim = emulator(Scenario::default()).await;
    let base = sim.url.clone();
    // The configured key is a magic "broke" key: the 402 proves it was sent.
    let yaml = probe("injected", GENERATE, "")
        + &probe("own-key", "{ path: /api/v6/images/text2img, body: { key: sim-invalid-on-purpose, prompt: p } }", "")
        + &probe("no-inject", "{ path: /api/v6/images/text2img, body: { prompt: p }, inject_key: false }", "");
    let (p, _) = probes(&base, "sim-broke-configured", &yaml);
    assert_eq!(run(&p, "injected").await.error_class(), Some(ErrorClass::PaymentRequired));
    let own = run(&p, "own-key").await;
    assert_eq!((own.http_status(), own.reason()), (Some(401), Some(Reason::InvalidApiKey)));
    let none = run(&p, "no-inject").await;
    assert_eq!((none.http_status(), none.message()), (Some(401), Some("key is required")));
}

#[tokio::test]
async fn the_agent_schedules_probes_serves_on_demand_runs_and_keeps_the_key_out() {
    let key = "sk-canary-probe-5d1e";
    let sim = emulator(Scenario::default()).await;
    let base = sim.url.clone();
    let cfg = format!(
        "upstream:\n  base_url: {base}\n  api_key: {key}\ntelemetry:\n  log_level: trace\nprobes:\n{}{}",
        "  - name: validation\n    interval: 1s\n    timeout: 900ms\n    request: { path: /api/v6/images/text2img, body: { model_id: flux } }\n    expect: { http_status: [400], reason: missing_parameter }\n",
        "  - name: generate\n    interval: 1h\n    timeout: 30s\n    request: { path: /api/v6/images/text2img, headers: { Authorization: \"Bearer sk-canary-probe-5d1e\" }, body: { prompt: a secret prompt } }\n"
    );
    let agent = Process::agent(&cfg, &[], &[]);
    let admin = agent.admin.clone();

    eventually(Duration::from_secs(10), "the scheduled probe ran", async || {
        scrape(&admin).await.metric("modelslab_probe_success").label("probe", "validation").value() == Some(1.0)
    })
    .await;
    let (code, report) = post(&format!("{admin}/api/v1/probes/generate/run"), "").await;
    assert_eq!(code, 200, "{report}");
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(json["result"], "failure", "a processing answer is not success without follow");
    assert_eq!(json["answer"]["outcome"], "processing");
    assert_eq!(json["exchanges"][0]["endpoint"], "/api/v6/images/text2img");
    assert_eq!(post(&format!("{admin}/api/v1/probes/nope/run"), "").await.0, 404);

    let (_, status) = get(&format!("{admin}/api/v1/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let names: Vec<&str> = status["probes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["validation", "generate"]);
    assert_eq!(status["probes"][1]["last"]["answer"]["job_id"].as_str().map(|s| !s.is_empty()), Some(true));

    let metrics = get(&format!("{admin}/metrics")).await.1;
    promtool_check_metrics(&metrics).unwrap_or_else(|e| panic!("{e}"));
    let everything = format!("{metrics}{report}{}{}", serde_json::to_string(&status).unwrap(), agent.process.log());
    assert!(!everything.contains(key), "the key leaked");
    assert!(!everything.contains("a secret prompt"), "the prompt leaked");
}
