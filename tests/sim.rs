//! The emulator against the API's documentation: every seed example, the magic keys, queue
//! limits, async jobs, each fault, scenario replacement; and the classifier agreeing with it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Emulator, emulator as start};
use modelslab_sentinel::classify::{self, Context, RequestKind};
use modelslab_sentinel::sim::{Faults, Scenario, Span};
use serde_json::{Value, json};

fn fast() -> Scenario {
    Scenario { job_duration: Span::fixed(Duration::from_millis(300)), ..Scenario::default() }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The classifier's (outcome, class, reason) for this answer.
    fn classified(&self, kind: RequestKind) -> (String, String, String) {
        let mut headers = http::HeaderMap::new();
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        let c = classify::classify(self.status, &headers, self.text.as_bytes(), &Context::new(kind));
        let (class, reason) = c.error().map(|e| (e.class.as_str(), e.reason.as_str())).unwrap_or(("-", "-"));
        (c.outcome().as_str().to_owned(), class.to_owned(), reason.to_owned())
    }
}

async fn post(url: &str, body: Value) -> Answer {
    let r = common::http().post(url).json(&body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    Answer { status: r.status().as_u16(), headers: r.headers().clone(), text: r.text().await.unwrap() }
}

async fn post_raw(url: &str, body: &'static str) -> Answer {
    let r = common::http().post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    Answer { status: r.status().as_u16(), headers: r.headers().clone(), text: r.text().await.unwrap() }
}

fn labels(a: &(String, String, String)) -> (&str, &str, &str) {
    (&a.0, &a.1, &a.2)
}

#[tokio::test]
async fn every_seed_validation_example_with_its_code_and_text() {
    let sim = start(fast()).await;
    let url = format!("{}/api/v6/images/text2img", sim.url);
    let cases: &[(Value, &str, &str, &str)] = &[
        (json!({"key": "k", "model_id": "flux"}), "prompt is required", "missing_parameter", "prompt"),
        (json!({"key": "k", "prompt": 42}), "prompt must be a string", "invalid_type", "prompt"),
        (
            json!({"key": "k", "prompt": "p", "width": 2048}),
            "width must be between 256 and 1024",
            "out_of_range",
            "width",
        ),
        (json!({"key": "k", "prompt": "p", "height": 516}), "height must be divisible by 8", "not_divisible", "height"),
        (
            json!({"key": "k", "prompt": "p", "samples": 9}),
            "samples must be between 1 and 4",
            "out_of_range",
            "samples",
        ),
        (
            json!({"key": "k", "prompt": "p", "guidance_scale": 30}),
            "guidance_scale must be between 1 and 20",
            "out_of_range",
            "guidance_scale",
        ),
        (
            json!({"key": "k", "prompt": "A sunset", "model_id": "invalid_model_name"}),
            "Model not found: invalid_model_name",
            "model_not_found",
            "model_id",
        ),
    ];
    for (body, message, reason, field) in cases {
        let a = post(&url, body.clone()).await;
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.json(), json!({"status": "error", "message": message}), "{body}");
        assert_eq!(labels(&a.classified(RequestKind::Submit)), ("error", "bad_request", *reason), "{body}");
        let c = classify::classify(400, &http::HeaderMap::new(), a.text.as_bytes(), &Context::new(RequestKind::Submit));
        assert_eq!(c.error().unwrap().fields.iter().map(|f| f.as_str()).collect::<Vec<_>>(), [*field]);
    }
    let img = post(
        &format!("{}/api/v6/images/img2img", sim.url),
        json!({"key": "k", "prompt": "p", "init_image": "https://example.invalid/image.jpg"}),
    )
    .await;
    assert_eq!(
        (img.status, img.json()),
        (400, json!({"status": "error", "message": "Unable to fetch image from provided URL"}))
    );
    let bad = post_raw(&url, "{\"key\": \"k\", \"prompt\": ").await;
    assert_eq!(
        (bad.status, bad.json()),
        (400, json!({"status": "error", "message": "Malformed JSON in request body"}))
    );
    assert_eq!(labels(&bad.classified(RequestKind::Submit)), ("error", "bad_request", "malformed_json"));
    // v7 answers a missing init_image in Laravel's shape.
    let v7 = post(&format!("{}/api/v7/images/image-to-image", sim.url), json!({"key": "k", "prompt": "p"})).await;
    assert_eq!(v7.json(), json!({"status": "error", "message": {"init_image": ["The init image field is required."]}}));
    assert_eq!(labels(&v7.classified(RequestKind::Submit)), ("error", "bad_request", "missing_parameter"));
}

#[tokio::test]
async fn numbers_as_strings_and_chunked_bodies_are_accepted() {
    let sim = start(fast()).await;
    let url = format!("{}/api/v6/images/text2img", sim.url);
    let a = post(
        &url,
        json!({"key": "k", "prompt": "p", "width": "512", "height": "768", "samples": "2", "guidance_scale": "7.5"}),
    )
    .await;
    assert_eq!((a.status, a.json()["status"].clone()), (200, json!("processing")), "{}", a.text);
    // A streamed body is sent chunked (no Content-Length), as the CLI's retries do.
    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok("{\"key\":\"k\","), Ok("\"prompt\":\"a chunked cat\"}")];
    let r = common::http()
        .post(&url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "processing");
}

#[tokio::test]
async fn magic_keys() {
    let sim = start(fast()).await;
    let gen_url = format!("{}/api/v6/images/text2img", sim.url);
    let realtime = format!("{}/api/v6/realtime/text2img", sim.url);
    let body = |key: &str| json!({"key": key, "prompt": "p"});
    let cases = [
        (gen_url.as_str(), "sim-invalid-1", 401, "Invalid API key", "unauthorized", "invalid_api_key"),
        (
            gen_url.as_str(),
            "sim-broke-1",
            402,
            "Insufficient credits. Please add more credits to continue.",
            "payment_required",
            "insufficient_credits",
        ),
        (
            realtime.as_str(),
            "sim-basic-1",
            403,
            "This feature requires a premium subscription",
            "forbidden",
            "plan_required",
        ),
    ];
    for (url, key, code, message, class, reason) in cases {
        let a = post(url, body(key)).await;
        assert_eq!((a.status, a.json()), (code, json!({"status": "error", "message": message})), "{key}");
        assert_eq!(labels(&a.classified(RequestKind::Submit)), ("error", class, reason));
    }
    // A basic plan may still use the non-realtime endpoints.
    assert_eq!(post(&gen_url, body("sim-basic-1")).await.status, 200);
    // No key at all.
    let a = post(&gen_url, json!({"prompt": "p"})).await;
    assert_eq!((a.status, a.json()), (401, json!({"status": "error", "message": "key is required"})));
    // The key is also accepted as a `key` header and as a bearer token.
    let r = common::http()
        .post(&gen_url)
        .header("key", "sim-invalid-h")
        .json(&json!({"prompt": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r =
        common::http().post(&gen_url).bearer_auth("sim-broke-b").json(&json!({"prompt": "p"})).send().await.unwrap();
    assert_eq!(r.status(), 402);
}

#[tokio::test]
async fn queue_limits_per_plan() {
    let sim = start(Scenario { job_duration: Span::fixed(Duration::from_secs(30)), ..Scenario::default() }).await;
    let url = format!("{}/api/v6/images/text2img", sim.url);
    for (key, limit) in [("plain-key", 5), ("sim-standard-1", 10), ("sim-premium-1", 15)] {
        for n in 1..=limit {
            let a = post(&url, json!({"key": key, "prompt": "p"})).await;
            assert_eq!(a.status, 200, "{key} request {n}: {}", a.text);
        }
        let a = post(&url, json!({"key": key, "prompt": "p"})).await;
        assert_eq!(a.status, 429, "{key} request {}", limit + 1);
        let j = a.json();
        assert_eq!(j["message"], format!("Rate limit exceeded. Maximum {limit} queued requests allowed."));
        let retry = j["retry_after"].as_u64().expect("numeric retry_after");
        assert!((1..=30).contains(&retry), "retry_after {retry}");
        assert_eq!(labels(&a.classified(RequestKind::Submit)), ("error", "rate_limited", "queue_full"));
    }
}

/// On a paused clock: the emulator's jobs and queues run in virtual time, no real waiting.
#[tokio::test(start_paused = true)]
async fn queue_frees_as_jobs_finish_and_retry_after_says_when() {
    let sim = start(Scenario { job_duration: Span::fixed(Duration::from_millis(1500)), ..Scenario::default() }).await;
    let url = format!("{}/api/v6/images/text2img", sim.url);
    for _ in 0..5 {
        assert_eq!(post(&url, json!({"key": "q", "prompt": "p"})).await.status, 200);
    }
    let full = post(&url, json!({"key": "q", "prompt": "p"})).await;
    assert_eq!((full.status, full.json()["retry_after"].clone()), (429, json!(2)));
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(post(&url, json!({"key": "q", "prompt": "p"})).await.status, 200);
}

/// On a paused clock: the emulator's jobs and queues run in virtual time, no real waiting.
#[tokio::test(start_paused = true)]
async fn jobs_process_then_succeed_on_their_own_fetch_endpoint() {
    let sim = start(fast()).await;
    for (submit, fetch_prefix) in [
        ("/api/v6/images/text2img", "/api/v6/images/fetch"),
        ("/api/v6/realtime/text2img", "/api/v6/realtime/fetch"),
        ("/api/v7/images/text-to-image", "/api/v7/images/fetch"),
    ] {
        let a = post(&format!("{}{submit}", sim.url), json!({"key": "k", "prompt": "p", "samples": 2})).await;
        let j = a.json();
        assert_eq!((a.status, j["status"].clone()), (200, json!("processing")));
        let id = j["id"].as_u64().expect("integer id");
        assert!(j["eta"].as_f64().unwrap() > 0.0);
        assert_eq!(j["fetch_result"], format!("{}{fetch_prefix}/{id}", sim.url));
        assert_eq!(j["output"], json!([]));
        assert_eq!(j["future_links"].as_array().unwrap().len(), 2);
        assert_eq!(labels(&a.classified(RequestKind::Submit)), ("processing", "-", "-"));

        let fetch = format!("{}{fetch_prefix}/{id}", sim.url);
        let early = post(&fetch, json!({"key": "k"})).await;
        assert_eq!(early.json()["status"], "processing");
        assert!(early.json()["eta"].as_f64().unwrap() > 0.0, "a fresh eta");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let done = post(&fetch, json!({"key": "k"})).await;
        assert_eq!(done.json()["status"], "success", "{}", done.text);
        assert_eq!(done.json()["output"].as_array().unwrap().len(), 2);
        assert_eq!(labels(&done.classified(RequestKind::Fetch)), ("success", "-", "-"));
    }
    // Fetch by body `request_id`, and a job is not found on another family's fetch endpoint.
    let id =
        post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "k", "prompt": "p"})).await.json()["id"]
            .clone();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let by_body = post(&format!("{}/api/v6/images/fetch", sim.url), json!({"key": "k", "request_id": id})).await;
    assert_eq!(by_body.json()["status"], "success");
    let elsewhere = post(&format!("{}/api/v7/images/fetch/{id}", sim.url), json!({"key": "k"})).await;
    assert_eq!(elsewhere.json(), json!({"status": "error", "message": "Request not found"}));
    assert_eq!(labels(&elsewhere.classified(RequestKind::Fetch)), ("error", "job_failed", "other"));
}

/// On a paused clock: the emulator's jobs and queues run in virtual time, no real waiting.
#[tokio::test(start_paused = true)]
async fn failing_jobs_end_failed_or_error() {
    let sim = start(Scenario { failure_ratio: 1.0, ..fast() }).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let id = post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "sim-premium", "prompt": "p"}))
            .await
            .json()["id"]
            .clone();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let done = post(&format!("{}/api/v6/images/fetch/{id}", sim.url), json!({"key": "sim-premium"})).await;
        assert_eq!(labels(&done.classified(RequestKind::Fetch)).1, "job_failed", "{}", done.text);
        seen.insert(done.json()["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["error", "failed"]);
}

#[tokio::test]
async fn sync_ratio_answers_success_at_once_and_eta_bias_is_honoured() {
    let sim = start(Scenario { sync_ratio: 1.0, ..fast() }).await;
    let a = post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "k", "prompt": "p"})).await;
    assert_eq!(a.json()["status"], "success");
    assert!(a.json()["id"].is_u64());

    let biased =
        start(Scenario { eta_bias: 0.5, job_duration: Span::fixed(Duration::from_secs(10)), ..Scenario::default() })
            .await;
    let a = post(&format!("{}/api/v6/images/text2img", biased.url), json!({"key": "k", "prompt": "p"})).await;
    assert_eq!(a.json()["eta"], json!(5.0));
}

async fn with_fault(faults: Faults) -> Emulator {
    start(Scenario { faults, ..fast() }).await
}

#[tokio::test]
async fn each_fault() {
    let body = json!({"key": "k", "prompt": "p"});
    let cases = [
        (Faults { server_error: 1.0, ..Faults::default() }, 500, ("error", "server_error", "internal_error")),
        (Faults { unavailable: 1.0, ..Faults::default() }, 503, ("error", "unavailable", "temporarily_unavailable")),
        (Faults { gateway_html: 1.0, ..Faults::default() }, 502, ("error", "server_error", "non_json_body")),
        (Faults { soft_error: 1.0, ..Faults::default() }, 200, ("error", "server_error", "internal_error")),
    ];
    for (faults, code, want) in cases {
        let sim = with_fault(faults).await;
        let a = post(&format!("{}/api/v6/images/text2img", sim.url), body.clone()).await;
        assert_eq!(a.status, code, "{faults:?}");
        assert_eq!(labels(&a.classified(RequestKind::Submit)), want, "{faults:?}: {}", a.text);
        // The status page is not an API endpoint: never faulted.
        assert_eq!(common::get(&format!("{}/api/v2/summary.json", sim.url)).await.0, 200);
    }
    let gateway = with_fault(Faults { gateway_html: 1.0, ..Faults::default() }).await;
    assert!(
        post(&format!("{}/api/v6/images/text2img", gateway.url), body.clone())
            .await
            .text
            .contains("<title>502 Bad Gateway</title>")
    );

    // reset: the connection closes with no answer.
    let reset = with_fault(Faults { reset: 1.0, ..Faults::default() }).await;
    let err =
        common::http().post(format!("{}/api/v6/images/text2img", reset.url)).json(&body).send().await.unwrap_err();
    assert!(
        !err.is_timeout() && (err.is_request() || err.is_connect() || err.to_string().contains("error")),
        "{err:?}"
    );

    // timeout: no answer until the client gives up.
    let hang = with_fault(Faults { timeout: 1.0, ..Faults::default() }).await;
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_millis(400)).build().unwrap();
    let err = client.post(format!("{}/api/v6/images/text2img", hang.url)).json(&body).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(390));

    let (_, stats) = common::get(&format!("{}/_sim/stats", reset.url)).await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["resets"], 1);
}

#[tokio::test]
async fn legacy_messege_spelling() {
    let sim = start(Scenario { legacy_messege: true, ..fast() }).await;
    let a = post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "sim-broke", "prompt": "p"})).await;
    assert_eq!(
        a.json(),
        json!({"status": "error", "messege": "Insufficient credits. Please add more credits to continue."})
    );
    assert_eq!(labels(&a.classified(RequestKind::Submit)), ("error", "payment_required", "insufficient_credits"));
    let p = post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "k", "prompt": "p"})).await;
    assert!(p.json().get("messege").is_some() && p.json().get("message").is_none());
}

#[tokio::test]
async fn scenario_replacement_and_refusal() {
    let sim = start(fast()).await;
    let url = format!("{}/_sim/scenario", sim.url);
    let (code, current) = common::get(&url).await;
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&current).unwrap()["status_page"], "operational");

    // YAML body.
    let r = common::http().put(&url).body("status_page: partial_outage\naccount: broke\n").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let summary: Value =
        serde_json::from_str(&common::get(&format!("{}/api/v2/summary.json", sim.url)).await.1).unwrap();
    assert_eq!(summary["status"]["indicator"], "major");
    assert_eq!(summary["components"][0]["status"], "partial_outage");
    assert_eq!(summary["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(
        post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "k", "prompt": "p"})).await.status,
        402
    );

    // JSON body.
    let r = common::http().put(&url).body(r#"{"status_page":"major_outage"}"#).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status: Value = serde_json::from_str(&common::get(&format!("{}/api/v2/status.json", sim.url)).await.1).unwrap();
    assert_eq!(status["status"]["indicator"], "critical");
    assert!(common::get(&format!("{}/status", sim.url)).await.1.contains("Major Service Outage"));

    // A bad one is refused and the old one kept.
    let r = common::http().put(&url).body("faults: {reset: 3}\n").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("faults.reset: 3 is not a ratio"));
    let kept: Value = serde_json::from_str(&common::get(&url).await.1).unwrap();
    assert_eq!(kept["status_page"], "major_outage");
}

#[tokio::test]
async fn status_page_states_and_wallet() {
    let cases = [
        ("operational", "none", "operational", 0),
        ("degraded_performance", "minor", "degraded_performance", 1),
        ("partial_outage", "major", "partial_outage", 1),
        ("major_outage", "critical", "major_outage", 1),
        ("under_maintenance", "maintenance", "under_maintenance", 0),
    ];
    for (state, indicator, component, incidents) in cases {
        let sim = start(Scenario::parse(&format!("status_page: {state}\n")).unwrap()).await;
        let s: Value = serde_json::from_str(&common::get(&format!("{}/api/v2/summary.json", sim.url)).await.1).unwrap();
        assert_eq!(s["status"]["indicator"], indicator, "{state}");
        assert_eq!(s["components"][0]["status"], component);
        assert_eq!(s["incidents"].as_array().unwrap().len(), incidents);
    }
    let sim = start(fast()).await;
    let w = post(&format!("{}/api/wallet_balance", sim.url), json!({"key": "k"})).await;
    assert_eq!(w.json()["data"]["balance"], 42.5);
}

#[tokio::test]
async fn sim_command_serves_a_scenario_file_and_refuses_a_bad_one() {
    let (code, _, stderr) = common::run_to_end(
        &["sim", "--listen", "127.0.0.1:0", "--scenario", "tests/fixtures/config/invalid/bad_size.yaml"],
        &[],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("unknown field `upstream`"), "{stderr}");
    for file in ["calm", "credits-exhausted", "outage", "rate-limited"] {
        let path = format!("config/scenarios/{file}.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        Scenario::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let p = common::Process::start(
        &["sim", "--listen", "127.0.0.1:0", "--scenario", "config/scenarios/credits-exhausted.yaml"],
        &[],
    );
    let addr = p.wait_for_log("sim listening on http://", Duration::from_secs(20));
    // The wallet pays for 5 images, falling with each one; then 402, and a balance of 0.
    let wallet = async || {
        post(&format!("http://{addr}/api/wallet_balance"), json!({"key": "sim-premium-drill"})).await.json()["data"]
            ["balance"]
            .as_f64()
            .unwrap()
    };
    let mut balances = vec![wallet().await];
    for _ in 0..5 {
        let a =
            post(&format!("http://{addr}/api/v6/images/text2img"), json!({"key": "sim-premium-drill", "prompt": "p"}))
                .await;
        assert_eq!(a.status, 200, "{}", a.text);
        balances.push(wallet().await);
    }
    assert_eq!(balances, [0.01, 0.008, 0.006, 0.004, 0.002, 0.0]);
    let a = post(&format!("http://{addr}/api/v6/images/text2img"), json!({"key": "sim-premium-drill", "prompt": "p"}))
        .await;
    assert_eq!(
        (a.status, a.json()["message"].clone()),
        (402, json!("Insufficient credits. Please add more credits to continue."))
    );
    assert_eq!(labels(&a.classified(RequestKind::Submit)), ("error", "payment_required", "insufficient_credits"));
}

#[tokio::test]
async fn wallets_fall_with_each_image_and_a_new_scenario_tops_them_up() {
    let sim = start(Scenario { wallet: modelslab_sentinel::sim::Wallet { balance: 1.0, cost: 0.25 }, ..fast() }).await;
    let wallet = async |key: &str| {
        post(&format!("{}/api/wallet_balance", sim.url), json!({"key": key})).await.json()["data"]["balance"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(wallet("w").await, 1.0);
    let a =
        post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "w", "prompt": "p", "samples": 2})).await;
    assert_eq!(a.status, 200);
    assert_eq!(wallet("w").await, 0.5, "two images at 0.25");
    assert_eq!(wallet("another-key").await, 1.0, "each key has its own wallet");
    let a =
        post(&format!("{}/api/v6/images/text2img", sim.url), json!({"key": "w", "prompt": "p", "samples": 3})).await;
    assert_eq!(a.status, 402, "three images cost more than is left");
    assert_eq!(wallet("w").await, 0.5, "a refused generation costs nothing");
    sim.set_scenario("wallet: { balance: 5, cost: 0.25 }\njob_duration: 300ms\n").await;
    assert_eq!(wallet("w").await, 5.0, "topped up");
    assert_eq!(wallet("sim-broke-x").await, 0.0, "a broke key has nothing");
}

/// The official CLI (`modelslab-cli` from PyPI) completes a generation against the emulator.
#[tokio::test]
async fn official_cli_completes_a_generation() {
    let sim = start(Scenario { job_duration: Span::fixed(Duration::from_millis(1500)), ..Scenario::default() }).await;
    let result = common::modelslab_cli_generate(&sim.url, &[]).await;
    assert_eq!(result["status"], "success", "{result}");
    assert!(result["output"][0].as_str().unwrap().starts_with(&sim.url));
}

#[tokio::test(start_paused = true)]
async fn the_status_page_lags_a_change_and_announces_then_shows_a_maintenance() {
    let sim = start(fast()).await;
    let page = async || -> Value {
        serde_json::from_str(&common::get(&format!("{}/api/v2/summary.json", sim.url)).await.1).unwrap()
    };
    let set = async |yaml: &str| {
        let r = common::http().put(format!("{}/_sim/scenario", sim.url)).body(yaml.to_owned()).send().await.unwrap();
        assert_eq!(r.status(), 200);
    };
    // An outage the page shows only after 20 s.
    set("status_page: major_outage\nstatus_page_lag: 20s\n").await;
    assert_eq!(page().await["status"]["indicator"], "none", "not yet acknowledged");
    tokio::time::sleep(Duration::from_secs(19)).await;
    assert_eq!(page().await["status"]["indicator"], "none");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(page().await["status"]["indicator"], "critical");
    // The end of it, acknowledged as late.
    set("status_page: operational\nstatus_page_lag: 5s\n").await;
    assert_eq!(page().await["status"]["indicator"], "critical");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(page().await["status"]["indicator"], "none");
    // A maintenance announced for in 10 s, lasting 30 s.
    set("status_page_maintenance: { starts_in: 10s, lasts: 30s }\n").await;
    let m = page().await;
    assert_eq!(
        (m["status"]["indicator"].as_str(), m["scheduled_maintenances"][0]["status"].as_str()),
        (Some("none"), Some("scheduled"))
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    let m = page().await;
    assert_eq!(
        (m["status"]["indicator"].as_str(), m["scheduled_maintenances"][0]["status"].as_str()),
        (Some("maintenance"), Some("in_progress"))
    );
    assert_eq!(m["components"][0]["status"], "under_maintenance");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let m = page().await;
    assert_eq!(
        (m["status"]["indicator"].as_str(), m["scheduled_maintenances"].as_array().map(Vec::len)),
        (Some("none"), Some(0))
    );
}
