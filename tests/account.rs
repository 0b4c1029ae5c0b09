//! The account as a whole, in the agent against the emulator: where each job's time went
//! (generation and queue wait add up to its duration), what a delivered output cost on a key of
//! its own (exact, through failures and a top-up), the account-wide queue (other clients'
//! requests counted, the limit configured or learned from a 429) and the model catalogue (a model
//! that leaves it goes to 0). The queue alert before the first 429 of a client outside the proxy
//! is drilled through a real Prometheus and Alertmanager in tests/alerting.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use modelslab_sentinel::sim::{CatalogueDrop, Scenario, Span, Wallet};
use serde_json::{Value, json};

const GEN: &str = "/api/v6/images/text2img";

/// The sum of a histogram's `_sum` series, or a counter's series, of `source`.
fn total(m: &Scrape, name: &str, source: &str) -> f64 {
    m.metric(name).label("source", source).sum()
}

/// Submits one generation through the proxy and follows it there to its end: the terminal
/// answer (a synchronous one as it came).
async fn generate(proxy: &str, key: &str, model: &str, samples: u32) -> Value {
    let body = json!({ "key": key, "model_id": model, "prompt": "a lighthouse", "samples": samples });
    let first = post_json(&format!("{proxy}{GEN}"), &body).await;
    if first["status"] != "processing" {
        return first;
    }
    let id = first["id"].to_string();
    let last =
        poll_job(&format!("{proxy}/api/v6/images/fetch/{id}"), &json!({ "key": key }), Duration::from_millis(20), 500)
            .await;
    assert_ne!(last["status"], "processing", "job {id} did not end: {last}");
    last
}

#[tokio::test]
async fn generation_and_queue_wait_add_up_to_each_jobs_duration() {
    // Jobs wait 200–600 ms in the queue, then generate 100–400 ms (sdxl twice as long); a fifth
    // fail; a third answer at once.
    let sim = emulator(Scenario {
        sync_ratio: 0.3,
        queue_wait: Span { min: Duration::from_millis(200), max: Duration::from_millis(600) },
        job_duration: Span { min: Duration::from_millis(100), max: Duration::from_millis(400) },
        model_pace: [("sdxl".to_owned(), 2.0)].into(),
        failure_ratio: 0.2,
        seed: 26,
        ..Scenario::default()
    })
    .await;
    let probe = format!(
        "probes:\n  - name: jobs\n    interval: 1h\n    timeout: 10s\n    request: {{ path: {GEN}, body: {{ model_id: sdxl, prompt: p }} }}\n    \
         follow: {{ poll_interval: 20ms, max_wait: 8s }}\n"
    );
    let a = Agent::start(&format!(
        "upstream:\n  base_url: {}\n  api_key: sim-premium-split\nproxy:\n  enabled: true\n{probe}",
        sim.url
    ))
    .await;
    let (mut jobs, mut synchronous, mut failed) = (0, 0, 0);
    // Until each kind has been seen a few times (80 generations at most).
    for n in 0..80 {
        if jobs >= 10 && synchronous >= 3 && failed >= 2 {
            break;
        }
        let before = a.metrics();
        let model = if n % 2 == 0 { "flux" } else { "sdxl" };
        let end = generate(&a.proxy, "sim-premium-split", model, 1 + n % 3).await;
        // The job's end is recorded once the poll is: wait for it.
        let after = settled(
            Duration::from_secs(5),
            async || a.metrics(),
            |m: &Scrape| {
                total(m, "modelslab_requests_total", "proxy") > total(&before, "modelslab_requests_total", "proxy")
                    && m.metric("modelslab_jobs_in_flight").label("source", "proxy").sum() == 0.0
            },
        )
        .await;
        let delta = |name: &str| total(&after, name, "proxy") - total(&before, name, "proxy");
        let (generation, wait, outputs) = (
            delta("modelslab_job_generation_seconds_sum"),
            delta("modelslab_job_queue_wait_seconds_sum"),
            delta("modelslab_outputs_delivered_total"),
        );
        if end["status"] != "success" {
            failed += 1;
            assert_eq!((generation, wait, outputs), (0.0, 0.0, 0.0), "a failed job records neither: {end}");
            continue;
        }
        assert!((generation - end["generationTime"].as_f64().unwrap()).abs() < 1e-9, "{generation} vs {end}");
        assert_eq!(outputs, f64::from(1 + n % 3), "each output URL once: {end}");
        let job = after
            .metric("modelslab_job_duration_seconds_sum")
            .label("source", "proxy")
            .label("result", "success")
            .sum()
            - before
                .metric("modelslab_job_duration_seconds_sum")
                .label("source", "proxy")
                .label("result", "success")
                .sum();
        if job > 0.0 {
            jobs += 1;
            assert!((generation + wait - job).abs() <= 0.010, "job {n}: {generation} + {wait} != {job}");
            assert!(wait >= 0.2 - 0.010, "it waited 200 ms at least in the emulator's queue: {wait}");
        } else {
            synchronous += 1;
            let exchange = delta("modelslab_request_duration_seconds_sum");
            assert!((generation + wait - exchange).abs() <= 0.010, "sync {n}: {generation} + {wait} != {exchange}");
        }
    }
    assert!(jobs >= 10 && synchronous >= 3 && failed >= 2, "jobs {jobs}, synchronous {synchronous}, failed {failed}");

    // The probe's jobs split the same way (its duration is submit to terminal answer too).
    let mut probe_jobs = 0;
    for _ in 0..30 {
        if probe_jobs == 3 {
            break;
        }
        let before = a.metrics();
        let r = http().post(format!("{}/api/v1/probes/jobs/run", a.admin)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let after = a.metrics();
        let delta = |name: &str| total(&after, name, "probe") - total(&before, name, "probe");
        let job = after
            .metric("modelslab_job_duration_seconds_sum")
            .label("source", "probe")
            .label("result", "success")
            .sum()
            - before
                .metric("modelslab_job_duration_seconds_sum")
                .label("source", "probe")
                .label("result", "success")
                .sum();
        let (generation, wait) =
            (delta("modelslab_job_generation_seconds_sum"), delta("modelslab_job_queue_wait_seconds_sum"));
        if job > 0.0 {
            probe_jobs += 1;
            assert!((generation + wait - job).abs() <= 0.010, "probe: {generation} + {wait} != {job}");
        }
    }
    assert_eq!(probe_jobs, 3, "probe runs that were jobs ending in success, of 30 at most");
    // By model, on the status page's figures too.
    let status: Value = serde_json::from_str(&get(&format!("{}/api/v1/status", a.admin)).await.1).unwrap();
    let by_model: Vec<&str> =
        status["recent"]["time"].as_array().unwrap().iter().map(|t| t["model"].as_str().unwrap()).collect();
    assert_eq!(by_model, ["flux", "sdxl"], "{}", status["recent"]["time"]);
    // (A synchronous answer's generation is the emulator's latency, 0 here: the p95 compares jobs.)
    let p95 = |model: usize| status["recent"]["time"][model]["generation_p95_seconds"].as_f64().unwrap();
    assert!(p95(1) > p95(0), "sdxl generates slower: {}", status["recent"]["time"]);
    a.stop().await;
}

#[tokio::test]
async fn credits_per_output_are_exact_on_a_dedicated_key_through_failures_and_a_top_up() {
    const KEY: &str = "sim-premium-dedicated";
    let cost = 0.0125;
    let sim = emulator(Scenario {
        sync_ratio: 0.4,
        job_duration: Span { min: Duration::from_millis(50), max: Duration::from_millis(200) },
        failure_ratio: 0.5,
        wallet: Wallet { balance: 10.0, cost },
        seed: 7,
        ..Scenario::default()
    })
    .await;
    let a = Agent::start(&format!(
        "upstream:\n  base_url: {}\n  api_key: {KEY}\nproxy:\n  enabled: true\n\
         account:\n  balance: {{ enabled: true, interval: 1s, timeout: 900ms }}\n",
        sim.url
    ))
    .await;
    let wallet = async || {
        post_json(&format!("{}/api/wallet_balance", sim.url), &json!({ "key": KEY })).await["data"]["balance"]
            .as_f64()
            .unwrap()
    };
    // The poller has read the wallet as it is now.
    let polled = async |want: f64| {
        let m = settled(
            Duration::from_secs(10),
            async || a.metrics(),
            |m: &Scrape| m.metric("modelslab_account_balance").value().is_some_and(|b| (b - want).abs() < 1e-9),
        )
        .await;
        assert_eq!(m.metric("modelslab_account_balance").value(), Some(want));
    };
    polled(10.0).await;
    let (mut charged, mut delivered, mut failures) = (0.0, 0u32, 0);
    for round in 0..2 {
        for n in 0..12u32 {
            let samples = 1 + n % 3;
            let end = generate(&a.proxy, KEY, "flux", samples).await;
            charged += cost * f64::from(samples);
            if end["status"] == "success" {
                delivered += samples;
            } else {
                failures += 1;
            }
        }
        polled(wallet().await).await;
        if round == 0 {
            // A top-up between two polls: never negative spend.
            let r = post_json(&format!("{}/_sim/topup", sim.url), &json!({ "key": KEY, "amount": 5 })).await;
            assert_eq!(r["status"], "success");
            polled(wallet().await).await;
        }
    }
    assert!(failures >= 2, "failures among them: {failures}");
    let m = eventually_metrics(&a, |m| total(m, "modelslab_outputs_delivered_total", "proxy") == f64::from(delivered))
        .await;
    let spent = m.metric("modelslab_account_spent_total").label("currency", "USD").value().unwrap();
    assert!((spent - charged).abs() < 1e-9, "spent {spent} vs charged {charged}");
    assert!((wallet().await - (10.0 + 5.0 - charged)).abs() < 1e-9);
    let per_output = spent / total(&m, "modelslab_outputs_delivered_total", "proxy");
    assert!((per_output - charged / f64::from(delivered)).abs() < 1e-12, "{per_output}");
    assert!(per_output > cost, "failed jobs are paid for too: {per_output} per output at {cost} an image");
    let status: Value = serde_json::from_str(&get(&format!("{}/api/v1/status", a.admin)).await.1).unwrap();
    assert!((status["account"]["balance"]["spent"].as_f64().unwrap() - charged).abs() < 1e-9, "{}", status["account"]);
    assert_eq!(status["recent"]["delivered"], delivered);
    a.stop().await;
}

/// The agent's metrics once `done` holds of them (at most 5 s).
async fn eventually_metrics(a: &Agent, done: impl Fn(&Scrape) -> bool) -> Scrape {
    settled(Duration::from_secs(5), async || a.metrics(), done).await
}

#[tokio::test]
async fn the_queue_counts_every_client_and_learns_its_limit_from_a_429() {
    const KEY: &str = "sk-queue-counted";
    let sim = emulator(Scenario {
        job_duration: Span::fixed(Duration::from_secs(30)),
        model_sync: [("flux".to_owned(), 1.0)].into(),
        ..Scenario::default()
    })
    .await;
    let a = Agent::start(&format!(
        "upstream:\n  base_url: {}\n  api_key: {KEY}\nproxy:\n  enabled: true\n\
         account:\n  queue: {{ enabled: true, interval: 2s }}\n",
        sim.url
    ))
    .await;
    let depth = async |want: f64| {
        eventually_metrics(&a, |m| m.metric("modelslab_account_queue_depth").value() == Some(want)).await;
    };
    depth(0.0).await;
    assert_eq!(a.metrics().metric("modelslab_account_queue_limit").value(), None, "absent until known");
    // Three jobs of another client of the key, straight to the API.
    let video = json!({ "key": KEY, "model_id": "cogvideox", "prompt": "a wave" });
    for _ in 0..3 {
        assert_eq!(post_json(&format!("{}/api/v6/video/text2video", sim.url), &video).await["status"], "processing");
    }
    depth(3.0).await;
    assert_eq!(a.metrics().metric("modelslab_account_queue_up").value(), Some(1.0));
    // Through the proxy until the queue is full: the 429 teaches the limit.
    let mut refused = None;
    for _ in 0..4 {
        let v = post_json(&format!("{}/api/v6/video/text2video", a.proxy), &video).await;
        if v["status"] == "error" {
            refused = Some(v);
            break;
        }
    }
    assert!(refused.unwrap()["message"].as_str().unwrap().contains("Maximum 5 queued requests"));
    eventually_metrics(&a, |m| {
        m.metric("modelslab_account_queue_limit").value() == Some(5.0)
            && m.metric("modelslab_account_queue_depth").value() == Some(5.0)
    })
    .await;
    let status: Value = serde_json::from_str(&get(&format!("{}/api/v1/status", a.admin)).await.1).unwrap();
    let q = &status["account"]["queue"];
    assert_eq!(
        (q["depth"].as_u64(), q["limit"].as_u64(), q["limit_source"].as_str()),
        (Some(5), Some(5), Some("learned")),
        "{q}"
    );
    assert!(status["overall"]["findings"].to_string().contains("queue holds 5 of its 5"), "{}", status["overall"]);
    // A configured limit wins over the learned one.
    let configured = a.text.replace("interval: 2s }", "interval: 2s, limit: 10 }");
    a.reload(&configured).await.unwrap();
    eventually_metrics(&a, |m| m.metric("modelslab_account_queue_limit").value() == Some(10.0)).await;
    let stats: Value = serde_json::from_str(&get(&format!("{}/_sim/stats", sim.url)).await.1).unwrap();
    assert_eq!(stats["request_count_refused"], 0, "{stats}");
    let text = a.metrics().text().to_owned();
    assert!(!text.contains(KEY), "the key is never in the metrics");
    a.stop().await;
}

#[tokio::test]
async fn a_model_that_leaves_the_catalogue_goes_to_zero_and_one_never_listed_has_no_series() {
    const KEY: &str = "sk-catalogue-watch";
    let sim = emulator(Scenario {
        catalogue_drops: vec![CatalogueDrop { model: "claude-sonnet".into(), after: Duration::from_secs(4) }],
        ..Scenario::default()
    })
    .await;
    let a = Agent::start(&format!(
        "upstream:\n  base_url: {}\n  api_key: {KEY}\nlabels:\n  models: [flux, claude-sonnet, meta-llama/Llama-3.3-70B-Instruct-Turbo]\n\
         account:\n  models: {{ enabled: true, interval: 10s }}\n",
        sim.url
    ))
    .await;
    let listed = |m: &Scrape, model: &str| m.metric("modelslab_model_listed").label("model", model).value();
    let m = eventually_metrics(&a, |m| m.metric("modelslab_account_models_up").value() == Some(1.0)).await;
    assert_eq!(
        (listed(&m, "claude-sonnet"), listed(&m, "meta-llama/Llama-3.3-70B-Instruct-Turbo"), listed(&m, "flux")),
        (Some(1.0), Some(1.0), None),
        "flux is a media model: the LLM catalogue never lists it"
    );
    let m =
        settled(Duration::from_secs(15), async || a.metrics(), |m: &Scrape| listed(m, "claude-sonnet") == Some(0.0))
            .await;
    assert_eq!(listed(&m, "claude-sonnet"), Some(0.0));
    assert_eq!(listed(&m, "meta-llama/Llama-3.3-70B-Instruct-Turbo"), Some(1.0));
    let status: Value = serde_json::from_str(&get(&format!("{}/api/v1/status", a.admin)).await.1).unwrap();
    assert_eq!(status["account"]["models"]["delisted"], json!(["claude-sonnet"]), "{}", status["account"]);
    assert!(status["overall"]["why"].as_str().unwrap().contains("no longer in the model catalogue: claude-sonnet"));
    assert!(!a.metrics().text().contains(KEY));
    a.stop().await;
}
