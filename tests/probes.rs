//! Probes against the emulator: every expectation kind passing and failing, following jobs to
//! success, to failure and past max_wait, soft errors, transport failures and timeouts, key
//! injection; and, through the agent process, the on-demand endpoint and the key kept out.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use modelslab_sentinel::config::{self, Config, Environment};
use modelslab_sentinel::metrics::Metrics;
use modelslab_sentinel::probe::{HttpRunner, Probes, RunReport};
use modelslab_sentinel::sim::{Faults, Scenario, Span};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn load(text: &str) -> Config {
    let var = |_: &str| None;
    config::from_yaml(text, "test", &Environment { var: &var, base_dir: ".".into() }).unwrap_or_else(|e| panic!("{e}"))
}

/// The probes of `probes_yaml` against `base`, runnable on demand (no schedule running).
fn probes(base: &str, key: &str, probes_yaml: &str) -> (Probes, Arc<Metrics>) {
    let cfg = load(&format!("upstream:\n  base_url: {base}\n  api_key: {key}\n  timeout: 2s\nprobes:\n{probes_yaml}"));
    let metrics = Arc::new(Metrics::new(&cfg.labels).unwrap());
    let (_tx, rx) = watch::channel(Arc::new(cfg));
    std::mem::forget(_tx); // keep the config channel open for the test's life
    let p = Probes::new(rx, metrics.clone(), Arc::new(HttpRunner::new(metrics.clone()).unwrap()));
    (p, metrics)
}

/// Starts the schedule long enough to register every probe, then runs `name` on demand.
async fn run(p: &Probes, name: &str) -> RunReport {
    let token = CancellationToken::new();
    tokio::spawn(p.clone().run(token.clone()));
    for _ in 0..100 {
        if p.status().iter().any(|s| s.name == name) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    let (base, _sim) = emulator(Scenario::default()).await;
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
    assert!(ok.success, "{:?}", ok.failed_expectations);
    assert_eq!(
        (ok.http_status, ok.error_class, ok.reason),
        (Some(400), Some("bad_request"), Some("missing_parameter"))
    );
    for (name, _, why) in failing {
        let r = run(&p, name).await;
        assert!(!r.success, "{name}");
        assert_eq!(r.failure_reason, Some("expectation"), "{name}");
        assert!(r.failed_expectations.iter().any(|f| f.contains(why)), "{name}: {:?}", r.failed_expectations);
    }
    let text = metrics.render().unwrap();
    assert_eq!(sample(&text, "modelslab_probe_success{probe=\"all-pass\"}"), Some(1.0));
    assert_eq!(sample(&text, "modelslab_probe_success{probe=\"status\"}"), Some(0.0));
    assert_eq!(sample(&text, "modelslab_probe_failures_total{probe=\"status\",reason=\"expectation\"}"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "modelslab_validation_errors_total{endpoint=\"/api/v6/images/text2img\",field=\"prompt\",source=\"probe\"}"
        ),
        Some(9.0)
    );
}

#[tokio::test]
async fn following_a_job_to_success_failure_and_past_max_wait() {
    let follow = "    follow: { fetch_path: \"/api/v6/images/fetch/{id}\", poll_interval: 100ms, max_wait: 5s }\n";
    let (base, _sim) =
        emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(400)), ..Scenario::default() }).await;
    let (p, metrics) = probes(
        &base,
        "k",
        &probe(
            "gen",
            GENERATE,
            &format!(
                "{follow}    expect:\n      status: success\n      json: [ {{ pointer: /output/0, exists: true }} ]\n"
            ),
        ),
    );
    let r = run(&p, "gen").await;
    assert!(r.success, "{r:?}");
    assert!(
        r.exchanges.len() >= 2 && r.exchanges[0].kind == "submit" && r.exchanges[1].kind == "fetch",
        "{:?}",
        r.exchanges
    );
    assert!(r.duration_seconds >= 0.4, "the duration runs from submit to the terminal answer");
    assert_eq!(r.exchanges[1].endpoint, "/api/v6/images/fetch/{id}");
    let text = metrics.render().unwrap();
    assert_eq!(
        sample(
            &text,
            "modelslab_jobs_total{endpoint=\"/api/v6/images/text2img\",model=\"flux\",result=\"success\",source=\"probe\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "modelslab_jobs_in_flight{source=\"probe\"}"), Some(0.0));
    assert!(
        sample(&text, "modelslab_job_eta_ratio_count{endpoint=\"/api/v6/images/text2img\",source=\"probe\"}").unwrap()
            >= 1.0
    );

    let (failing, _sim2) = emulator(Scenario {
        failure_ratio: 1.0,
        job_duration: Span::fixed(Duration::from_millis(200)),
        ..Scenario::default()
    })
    .await;
    let (p, metrics) = probes(&failing, "k", &probe("gen", GENERATE, follow));
    let r = run(&p, "gen").await;
    assert_eq!((r.success, r.failure_reason, r.error_class), (false, Some("job_failed"), Some("job_failed")), "{r:?}");
    let text = metrics.render().unwrap();
    let failed = sample(&text, "modelslab_jobs_total{endpoint=\"/api/v6/images/text2img\",model=\"flux\",result=\"failed\",source=\"probe\"}").unwrap_or(0.0)
        + sample(&text, "modelslab_jobs_total{endpoint=\"/api/v6/images/text2img\",model=\"flux\",result=\"error\",source=\"probe\"}").unwrap_or(0.0);
    assert_eq!(failed, 1.0);

    let (slow, _sim3) =
        emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(20)), ..Scenario::default() }).await;
    let short = "    follow: { fetch_path: \"/api/v6/images/fetch/{id}\", poll_interval: 200ms, max_wait: 1s }\n";
    let (p, metrics) = probes(&slow, "k", &probe("gen", GENERATE, short));
    let r = run(&p, "gen").await;
    assert_eq!((r.success, r.failure_reason), (false, Some("job_timeout")), "{r:?}");
    let text = metrics.render().unwrap();
    assert_eq!(
        sample(
            &text,
            "modelslab_jobs_total{endpoint=\"/api/v6/images/text2img\",model=\"flux\",result=\"expired\",source=\"probe\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_soft_error_fails_a_success_expectation_and_counts_as_http_200() {
    let (base, _sim) =
        emulator(Scenario { faults: Faults { soft_error: 1.0, ..Faults::default() }, ..Scenario::default() }).await;
    let (p, metrics) = probes(&base, "k", &probe("gen", GENERATE, ""));
    let r = run(&p, "gen").await;
    assert_eq!((r.success, r.http_status, r.error_class), (false, Some(200), Some("server_error")));
    assert_eq!(r.failure_reason, Some("expectation"));
    let text = metrics.render().unwrap();
    assert_eq!(
        sample(
            &text,
            "modelslab_errors_total{endpoint=\"/api/v6/images/text2img\",error_class=\"server_error\",http_status=\"200\",reason=\"internal_error\",source=\"probe\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn transport_failures_and_exchange_timeouts() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (p, metrics) = probes(&format!("http://127.0.0.1:{port}"), "k", &probe("down", GENERATE, ""));
    let r = run(&p, "down").await;
    assert_eq!((r.failure_reason, r.http_status, r.error_class), (Some("transport"), None, Some("transport")));
    let text = metrics.render().unwrap();
    assert_eq!(
        sample(
            &text,
            "modelslab_errors_total{endpoint=\"/api/v6/images/text2img\",error_class=\"transport\",http_status=\"none\",reason=\"other\",source=\"probe\"}"
        ),
        Some(1.0)
    );

    let (base, _sim) =
        emulator(Scenario { faults: Faults { timeout: 1.0, ..Faults::default() }, ..Scenario::default() }).await;
    let (p, _) = probes(&base, "k", &probe("hang", GENERATE, ""));
    let r = run(&p, "hang").await;
    assert_eq!(
        (r.failure_reason, r.error_class),
        (Some("timeout"), Some("timeout")),
        "upstream.timeout (2s) bounds the exchange"
    );
}

#[tokio::test]
async fn the_key_is_injected_unless_the_probe_brings_its_own() {
    let (base, _sim) = emulator(Scenario::default()).await;
    // The configured key is a magic "broke" key: the 402 proves it was sent.
    let yaml = probe("injected", GENERATE, "")
        + &probe("own-key", "{ path: /api/v6/images/text2img, body: { key: sim-invalid-on-purpose, prompt: p } }", "")
        + &probe("no-inject", "{ path: /api/v6/images/text2img, body: { prompt: p }, inject_key: false }", "");
    let (p, _) = probes(&base, "sim-broke-configured", &yaml);
    assert_eq!(run(&p, "injected").await.error_class, Some("payment_required"));
    let own = run(&p, "own-key").await;
    assert_eq!((own.http_status, own.reason), (Some(401), Some("invalid_api_key")));
    let none = run(&p, "no-inject").await;
    assert_eq!((none.http_status, none.message.as_deref()), (Some(401), Some("key is required")));
}

#[tokio::test]
async fn the_agent_schedules_probes_serves_on_demand_runs_and_keeps_the_key_out() {
    let key = "sk-canary-probe-5d1e";
    let (base, _sim) = emulator(Scenario::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "upstream:\n  base_url: {base}\n  api_key: {key}\nadmin:\n  listen: 127.0.0.1:0\ntelemetry:\n  log_level: trace\nprobes:\n{}{}",
        "  - name: validation\n    interval: 1s\n    timeout: 900ms\n    request: { path: /api/v6/images/text2img, body: { model_id: flux } }\n    expect: { http_status: [400], reason: missing_parameter }\n",
        "  - name: generate\n    interval: 1h\n    timeout: 30s\n    request: { path: /api/v6/images/text2img, headers: { Authorization: \"Bearer sk-canary-probe-5d1e\" }, body: { prompt: a secret prompt } }\n"
    );
    let path = write(dir.path(), "sentinel.yaml", &cfg);
    let agent = Process::start(&["run", "--config", &path], &[]);
    let admin = format!("http://{}", agent.admin_addr());

    eventually(Duration::from_secs(10), "the scheduled probe ran", async || {
        sample(&get(&format!("{admin}/metrics")).await.1, "modelslab_probe_success{probe=\"validation\"}") == Some(1.0)
    })
    .await;
    let (code, report) = post(&format!("{admin}/api/v1/probes/generate/run"), "").await;
    assert_eq!(code, 200, "{report}");
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(json["success"], false, "a processing answer is not success without follow");
    assert_eq!(json["outcome"], "processing");
    assert_eq!(json["exchanges"][0]["endpoint"], "/api/v6/images/text2img");
    assert_eq!(post(&format!("{admin}/api/v1/probes/nope/run"), "").await.0, 404);

    let (_, status) = get(&format!("{admin}/api/v1/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let names: Vec<&str> = status["probes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["validation", "generate"]);
    assert_eq!(status["probes"][1]["last"]["job_id"].as_str().map(|s| !s.is_empty()), Some(true));

    let metrics = get(&format!("{admin}/metrics")).await.1;
    promtool_check_metrics(&metrics).unwrap_or_else(|e| panic!("{e}"));
    let everything = format!("{metrics}{report}{}{}", serde_json::to_string(&status).unwrap(), agent.log());
    assert!(!everything.contains(key), "the key leaked");
    assert!(!everything.contains("a secret prompt"), "the prompt leaked");
}
