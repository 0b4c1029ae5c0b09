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

/// Every media family's probe, its job followed on the family's own fetch endpoint (derived from
/// the request path), its files judged by their bytes.
const FAMILIES: [(&str, &str, &str, &str); 6] = [
    ("v6-video", "/api/v6/video/text2video", "{ model_id: cogvideox, prompt: waves, width: 512, height: 288 }", "MP4"),
    (
        "v6-img2video",
        "/api/v6/video/img2video",
        "{ prompt: waves, init_image: 'https://cdn.example/a.png', width: 256, height: 256 }",
        "MP4",
    ),
    ("v6-voice", "/api/v6/voice/text_to_audio", "{ prompt: welcome aboard }", "MP3"),
    ("v6-3d", "/api/v6/3d/text_to_3d", "{ prompt: a small lighthouse }", "glTF binary"),
    ("v7-video-fusion", "/api/v7/video-fusion/text-to-video", "{ prompt: waves, width: 640, height: 360 }", "MP4"),
    ("v7-voice", "/api/v7/voice/text-to-speech", "{ prompt: welcome aboard }", "WAV"),
];

#[tokio::test]
async fn every_media_family_is_followed_on_its_own_fetch_endpoint_and_judged_by_its_bytes() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(300)), ..Scenario::default() }).await;
    let probes: String = FAMILIES
        .iter()
        .map(|(name, path, body, _)| {
            format!(
                "  - name: {name}\n    interval: 1h\n    timeout: 20s\n    request: {{ path: {path}, body: {body} }}\n\
                 \x20   follow: {{ poll_interval: 200ms, max_wait: 10s }}\n\
                 \x20   expect: {{ status: success, output: {{ count: 1, size: from_request }} }}\n"
            )
        })
        .collect();
    let text = format!("upstream:\n  base_url: {}\n  api_key: k\nproxy:\n  enabled: true\nprobes:\n{probes}", sim.url);
    let a = Agent::start(&text).await;
    for (name, path, _, _) in FAMILIES {
        let report = run(&a, name).await;
        assert_eq!(report["result"], "success", "{name}: {report}");
        let family = path.rsplit_once('/').unwrap().0;
        let polled: Vec<&str> =
            report["exchanges"].as_array().unwrap().iter().map(|e| e["endpoint"].as_str().unwrap()).collect();
        assert_eq!(polled.last().copied(), Some(format!("{family}/fetch/{{id}}").as_str()), "{name}: {report}");
        assert_eq!(checks(&a.metrics(), name, "ok"), 1.0, "{name}");
    }

    // Broken files of every kind are named for what they are and where they break.
    sim.set_scenario("job_duration: 300ms\noutputs: { truncated: 1.0 }").await;
    for (name, _, _, kind) in FAMILIES {
        let report = run(&a, name).await;
        assert_eq!(report["failure_reason"], "output", "{name}: {report}");
        let why = report["failed_expectations"][0].as_str().unwrap();
        assert!(
            why.starts_with("output undecodable: ") && why.contains(&format!(": {kind}: cut short")),
            "{name}: {why}"
        );
    }
    sim.set_scenario("job_duration: 300ms\noutputs: { wrong_size: 1.0 }").await;
    let report = run(&a, "v7-video-fusion").await;
    let why = report["failed_expectations"][0].as_str().unwrap();
    assert!(why.ends_with("MP4 video of 320x360, expected 640x360"), "{why}");
    assert_eq!(run(&a, "v6-voice").await["result"], "success", "audio has no frame size");

    // Through the proxy, a client's job on a family's own fetch endpoint is followed to its end.
    sim.set_scenario("job_duration: 300ms").await;
    let body = json!({"key": "k", "prompt": "waves", "width": 512, "height": 288});
    let submitted = post_json(&format!("{}/api/v7/video-fusion/text-to-video", a.proxy), &body).await;
    let id = submitted["id"].as_u64().unwrap();
    assert!(submitted["future_links"][0].as_str().unwrap().ends_with(".mp4"), "{submitted}");
    let done = poll_job(
        &format!("{}/api/v7/video-fusion/fetch/{id}", a.proxy),
        &json!({"key": "k"}),
        Duration::from_millis(100),
        40,
    )
    .await;
    assert_eq!(done["status"], "success", "{done}");
    // The same id on another family's fetch endpoint is not found, as with the real API.
    let elsewhere = post_json(&format!("{}/api/v6/images/fetch/{id}", sim.url), &json!({"key": "k"})).await;
    assert_eq!(elsewhere["message"], "Request not found");
    let m = settled(
        Duration::from_secs(5),
        async || a.metrics(),
        |m| m.metric("modelslab_jobs_total").label("source", "proxy").sum() >= 1.0,
    )
    .await;
    let jobs = m
        .metric("modelslab_jobs_total")
        .label("source", "proxy")
        .label("endpoint", "/api/v7/video-fusion/text-to-video");
    assert_eq!(jobs.label("result", "success").value(), Some(1.0), "{m}");
    a.stop().await;
}
