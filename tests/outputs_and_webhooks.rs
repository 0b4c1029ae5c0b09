//! What the API delivers, checked by probes against the emulator: the generated images (every
//! output check's result, the failing check and URL named in the report, query strings left
//! out) and the webhooks (on time, late, missing, duplicate, and forged or oversized deliveries
//! refused as unknown; replays after a run ended are `src/webhook.rs`'s unit test).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use modelslab_sentinel::sim::{Hooks, Outputs, Scenario, Span};
use serde_json::{Value, json};

const GENERATE: &str =
    "{ path: /api/v6/images/text2img, body: { model_id: flux, prompt: a lighthouse, width: 512, height: 768 } }";

fn probe(name: &str, output: &str, follow_extra: &str) -> String {
    format!(
        "  - name: {name}\n    interval: 1h\n    timeout: 50s\n    request: {GENERATE}\n\
         \x20   follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 200ms, max_wait: 40s{follow_extra} }}\n\
         \x20   expect:\n      status: success\n      output: {{ {output} }}\n"
    )
}

async fn run(agent: &Agent, name: &str) -> Value {
    let (code, report) = post(&format!("{}/api/v1/probes/{name}/run", agent.admin), "").await;
    assert_eq!(code, 200, "{report}");
    serde_json::from_str(&report).unwrap()
}

fn checks(m: &Scrape, probe: &str, result: &str) -> f64 {
    m.metric("modelslab_output_checks_total").label("probe", probe).label("result", result).sum()
}

#[tokio::test]
async fn every_output_check_passes_or_fails_with_the_check_and_url_named() {
    let job = Span::fixed(Duration::from_millis(300));
    let cases: Vec<(&str, Outputs, &str, &str)> = vec![
        ("ok", Outputs::default(), "count: 1", "ok"),
        ("missing", Outputs { missing: 1.0, ..Outputs::default() }, "count: 1", "not_found"),
        ("truncated", Outputs { truncated: 1.0, ..Outputs::default() }, "count: 1", "undecodable"),
        ("blank", Outputs { blank: 1.0, ..Outputs::default() }, "count: 1", "blank"),
        ("wrong-size", Outputs { wrong_size: 1.0, ..Outputs::default() }, "count: 1", "wrong_size"),
        ("too-large", Outputs::default(), "max_bytes: 1KiB", "too_large"),
        (
            "slow",
            Outputs { delay: Span::fixed(Duration::from_secs(3)), ..Outputs::default() },
            "timeout: 300ms",
            "download_failed",
        ),
        ("other-host", Outputs::default(), "hosts: [cdn.example.com]", "download_failed"),
        ("count", Outputs::default(), "count: 2", "not_found"),
    ];
    for (name, outputs, output, result) in cases {
        let sim = emulator(Scenario { job_duration: job, outputs, ..Scenario::default() }).await;
        let text = format!("upstream:\n  base_url: {}\n  api_key: k\nprobes:\n{}", sim.url, probe(name, output, ""));
        let a = Agent::start(&text).await;
        let report = run(&a, name).await;
        let m = a.metrics();
        assert_eq!(checks(&m, name, result), 1.0, "{name}: {report}\n{m}");
        if result == "ok" {
            assert_eq!(report["result"], "success", "{report}");
            assert!(
                m.metric("modelslab_output_download_duration_seconds_count").label("probe", name).value() >= Some(1.0)
            );
        } else {
            assert_eq!(
                (report["result"].clone(), report["failure_reason"].clone()),
                (json!("failure"), json!("output")),
                "{report}"
            );
            let why = report["failed_expectations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>()
                .join("; ");
            assert!(
                why.contains(&format!("output {result}")) || (name == "count" && why.contains("expected at least 2")),
                "{name}: {why}"
            );
            if name != "count" {
                assert!(why.contains(&format!("{}/generations/", sim.url)), "{name}: the URL is named: {why}");
            }
            assert_eq!(
                m.metric("modelslab_probe_failures_total").label("probe", name).label("reason", "output").value(),
                Some(1.0)
            );
        }
        a.stop().await;
    }
}

#[tokio::test]
async fn a_failing_check_names_the_url_without_its_query_and_never_sends_the_key() {
    // An API whose answer points at a signed CDN URL that is gone.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/api/v6/images/text2img",
            axum::routing::post(|headers: http::HeaderMap| async move {
                let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
                axum::Json(json!({"status": "success", "id": 1,
                    "output": [format!("http://{host}/cdn/gone.png?X-Amz-Signature=secret-signature")]}))
            }),
        )
        .route(
            "/cdn/gone.png",
            axum::routing::get(move |headers: http::HeaderMap, uri: http::Uri| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(format!("{uri} {headers:?}"));
                    http::StatusCode::NOT_FOUND
                }
            }),
        );
    let api = serve(app).await;
    let text = format!(
        "upstream:\n  base_url: {}\n  api_key: sk-canary-output-key\nprobes:\n  - name: signed\n    interval: 1h\n    timeout: 20s\n    request: {GENERATE}\n    expect:\n      output: {{ count: 1 }}\n",
        api.url
    );
    let a = Agent::start(&text).await;
    let report = run(&a, "signed").await.to_string();
    assert!(report.contains("output not_found"), "{report}");
    assert!(report.contains(&format!("{}/cdn/gone.png: HTTP 404", api.url)), "{report}");
    assert!(!report.contains("secret-signature"), "the query string is left out: {report}");
    let requests = seen.lock().unwrap().join("\n");
    assert!(requests.contains("secret-signature"), "the download used the signed URL: {requests}");
    assert!(!requests.contains("sk-canary-output-key"), "the key never goes to the CDN: {requests}");
    a.stop().await;
}

fn deliveries(m: &Scrape, probe: &str, result: &str) -> f64 {
    m.metric("modelslab_webhook_deliveries_total").label("probe", probe).label("result", result).sum()
}

/// The agent with its webhook receiver and a probe that asks for webhooks.
async fn hooked(hooks: Hooks, grace: &str) -> (Agent, Emulator) {
    let sim = emulator(Scenario {
        job_duration: Span::fixed(Duration::from_millis(300)),
        webhooks: hooks,
        ..Scenario::default()
    })
    .await;
    let text = format!(
        "upstream:\n  base_url: {}\n  api_key: k\nwebhooks:\n  listen: 127.0.0.1:0\n  grace: {grace}\nprobes:\n{}",
        sim.url,
        probe("gen", "count: 1", ", webhook: true")
    );
    (Agent::start(&text).await, sim)
}

#[tokio::test]
async fn webhooks_arrive_on_time_and_duplicates_are_counted() {
    let (a, _sim) = hooked(Hooks { duplicate: 1.0, ..Hooks::default() }, "20s").await;
    let report = run(&a, "gen").await;
    assert_eq!(report["result"], "success", "{report}");
    eventually(Duration::from_secs(5), "the webhook and its duplicate arrive", async || {
        let m = a.metrics();
        deliveries(&m, "gen", "on_time") == 1.0 && deliveries(&m, "gen", "duplicate") == 1.0
    })
    .await;
    let m = a.metrics();
    assert_eq!(m.metric("modelslab_webhook_delay_seconds_count").label("probe", "gen").value(), Some(1.0));
    a.stop().await;
}

#[tokio::test]
async fn a_late_webhook_is_late_and_a_dropped_one_missing() {
    // Sent 7 s after the job ends: the probe saw the end long before (it polls every 200 ms).
    let (a, _sim) = hooked(Hooks { delay: Span::fixed(Duration::from_secs(7)), ..Hooks::default() }, "20s").await;
    assert_eq!(run(&a, "gen").await["result"], "success");
    eventually(Duration::from_secs(12), "the late webhook", async || deliveries(&a.metrics(), "gen", "late") == 1.0)
        .await;
    let delay = a.metrics().metric("modelslab_webhook_delay_seconds_sum").label("probe", "gen").value().unwrap();
    assert!((5.0..9.0).contains(&delay), "arrival after the job was seen finished: {delay}");
    a.stop().await;

    let (a, _sim) = hooked(Hooks { drop: 1.0, ..Hooks::default() }, "2s").await;
    assert_eq!(run(&a, "gen").await["result"], "success", "the webhook is checked apart from the run");
    eventually(Duration::from_secs(6), "missing after the grace", async || {
        deliveries(&a.metrics(), "gen", "missing") == 1.0
    })
    .await;
    a.stop().await;
}

#[tokio::test]
async fn forged_and_oversized_deliveries_are_unknown() {
    let (a, sim) = hooked(Hooks::default(), "20s").await;
    let hooks = format!("http://{}", a.handle.webhooks_addr.unwrap());
    let c = http();
    let forged = c
        .post(format!("{hooks}/hooks/00000000000000000000000000000000"))
        .json(&json!({"status": "success", "id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    let huge = "x".repeat(200 * 1024);
    let oversized = c.post(format!("{hooks}/hooks/anything")).body(huge).send().await.unwrap();
    assert_eq!(oversized.status(), 413);
    assert_eq!(c.get(format!("{hooks}/metrics")).send().await.unwrap().status(), 404, "the receiver serves hooks only");
    // A real delivery is still on time beside them (a replay after its run ended is a unit test).
    assert_eq!(run(&a, "gen").await["result"], "success");
    eventually(Duration::from_secs(5), "delivered", async || deliveries(&a.metrics(), "gen", "on_time") == 1.0).await;
    let m = a.metrics();
    assert_eq!(deliveries(&m, "none", "unknown"), 2.0);
    let log_free = format!("{m}");
    assert!(!log_free.contains("hooks/"), "no token in a label");
    drop(sim);
    a.stop().await;
}

#[tokio::test]
async fn redirects_are_followed_a_few_times_and_each_hop_meets_the_allowlist() {
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(512, 768, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 256) as u8]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    let found = |to: String| (http::StatusCode::FOUND, [("location", to)]);
    let app = axum::Router::new()
        .route(
            "/api/v6/images/text2img",
            axum::routing::post(|body: String| async move {
                let start = serde_json::from_str::<Value>(&body).unwrap()["start"].as_str().unwrap().to_owned();
                axum::Json(json!({"status": "success", "id": 1, "output": [start]}))
            }),
        )
        .route("/cdn/hop1", axum::routing::get(move || async move { found("/cdn/hop2".into()) }))
        .route("/cdn/hop2", axum::routing::get(move || async move { found("final.png".into()) }))
        .route("/cdn/final.png", axum::routing::get(move || async move { ([("content-type", "image/png")], png) }))
        .route("/cdn/loop", axum::routing::get(move || async move { found("/cdn/loop".into()) }))
        // The allowlisted host hands the download to another host (the same server, by name).
        .route(
            "/cdn/away",
            axum::routing::get(move |headers: http::HeaderMap| async move {
                let host = headers.get("host").unwrap().to_str().unwrap().to_owned();
                found(format!("http://{}/cdn/final.png", host.replace("127.0.0.1", "localhost")))
            }),
        );
    let cdn = serve(app).await;
    let probe = |name: &str, start: &str| {
        format!(
            "  - name: {name}\n    interval: 1h\n    timeout: 20s\n\
             \x20   request: {{ path: /api/v6/images/text2img, body: {{ width: 512, height: 768, start: \"{}{start}\" }} }}\n\
             \x20   expect: {{ output: {{ hosts: [127.0.0.1] }} }}\n",
            cdn.url
        )
    };
    let text = format!(
        "upstream:\n  base_url: {}\n  api_key: k\nprobes:\n{}{}{}",
        cdn.url,
        probe("two-hops", "/cdn/hop1"),
        probe("endless", "/cdn/loop"),
        probe("elsewhere", "/cdn/away"),
    );
    let a = Agent::start(&text).await;
    let two = run(&a, "two-hops").await;
    assert_eq!(two["result"], "success", "two redirects, then a 512×768 PNG: {two}");
    let endless = run(&a, "endless").await.to_string();
    assert!(endless.contains("output download_failed") && endless.contains("more than 3 redirects"), "{endless}");
    let elsewhere = run(&a, "elsewhere").await.to_string();
    assert!(elsewhere.contains("host localhost is not in expect.output.hosts"), "{elsewhere}");
    a.stop().await;
}
