//! The proxy in the agent process: the official clients run through it unchanged, the key is
//! kept out of everything wherever it travels, and SIGTERM drains in-flight requests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;
use modelslab_sentinel::sim::{Scenario, Span};
use serde_json::{Value, json};

fn start_agent(base: &str, level: &str) -> AgentProcess {
    let cfg = format!(
        "upstream:\n  base_url: {base}\n  api_key: agent-own-key\nproxy:\n  enabled: true\nlabels:\n  models: [flux]\ntelemetry:\n  log_level: {level}\n"
    );
    Process::agent(&cfg, &["--grace-period", "10s"], &[])
}

fn jobs_succeeded(metrics: &Scrape) -> f64 {
    metrics.metric("modelslab_jobs_total").label("result", "success").label("source", "proxy").sum()
}

#[tokio::test]
async fn the_official_cli_and_python_sdk_run_a_generation_through_the_proxy() {
    let sim =
        emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(1500)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let agent = start_agent(&base, "info");

    // modelslab-cli, pointed at the proxy as a user would point it at the API.
    let result = modelslab_cli_generate(&agent.proxy, &["--model", "flux"]).await;
    assert_eq!(result["status"], "success");
    eventually(Duration::from_secs(5), "the CLI's job shows as finished", async || {
        jobs_succeeded(&agent.metrics().await) >= 1.0
    })
    .await;

    // modelslab-py: base_url set before building the API object, as its docs say.
    let script = r#"
import json, sys
from modelslab_py.core.client import Client
from modelslab_py.core.apis.community import Community
from modelslab_py.schemas.community import Text2Image
client = Client(api_key="py-key", fetch_retry=20, fetch_timeout=1)
client.base_url = sys.argv[1] + "/api/"
api = Community(client=client)
r = api.text_to_image(Text2Image(prompt="a red fox", model_id="flux", width=512, height=512, samples=1))
if r["status"] == "processing":
    r = api.fetch(str(r["id"]))
print(json.dumps(r))
"#;
    let proxy = agent.proxy.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(["-c", script, &proxy]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "modelslab-py: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["status"], "success", "{stdout}");
    let metrics = agent.metrics().await;
    assert_eq!(jobs_succeeded(&metrics), 2.0, "{metrics}");
    assert!(
        metrics
            .metric("modelslab_jobs_total")
            .label("endpoint", "/api/v6/images/text2img")
            .label("model", "flux")
            .label("result", "success")
            .label("source", "proxy")
            .sum()
            >= 1.0,
        "the SDK's job, labelled with its model: {metrics}"
    );
}

#[tokio::test]
async fn the_key_is_kept_out_wherever_it_travels() {
    let key = "sk-canary-proxy-91c2e7";
    let prompt = "a canary prompt nobody may record";
    let sim = emulator(Scenario::default()).await;
    let base = sim.url.clone();
    let agent = start_agent(&base, "trace");
    let c = http();
    // Body `key`.
    c.post(format!("{}/api/v6/images/text2img", agent.proxy))
        .json(&json!({"key": key, "prompt": prompt}))
        .send()
        .await
        .unwrap();
    // Header `key` (the CLI).
    c.post(format!("{}/api/v6/images/text2img", agent.proxy))
        .header("key", key)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap();
    // Authorization: Bearer (the JS SDK, the LLM API).
    c.post(format!("{}/api/v6/images/text2img", agent.proxy))
        .bearer_auth(key)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap();
    // Query `key` (GET /api/v7/models?key=…).
    c.get(format!("{}/api/v7/models?key={key}", agent.proxy)).send().await.unwrap();
    let mut seen = String::new();
    for p in ["/metrics", "/api/v1/status", "/"] {
        seen.push_str(&get(&format!("{}{p}", agent.admin)).await.1);
    }
    let m = agent.metrics().await;
    assert!(
        m.metric("modelslab_requests_total").label("endpoint", "/api/v7/models").count() > 0,
        "the query is not part of the endpoint label"
    );
    agent.process.signal("TERM");
    let mut process = agent.process;
    process.wait_exit(Duration::from_secs(15));
    let log = process.log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "trace logging was on:\n{log}");
    for (what, text) in [("served", &seen), ("logged", &log)] {
        assert!(!text.contains(key), "the key was {what}");
        assert!(!text.contains(prompt), "the prompt was {what}");
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let sim = emulator(Scenario { latency: Span::fixed(Duration::from_millis(1500)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let agent = start_agent(&base, "info");
    let url = format!("{}/api/v6/images/text2img", agent.proxy);
    let in_flight = tokio::spawn(async move {
        http().post(url).json(&json!({"key": "k", "prompt": "p"})).send().await.map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopped_at = Instant::now();
    agent.process.signal("TERM");
    let addr = agent.proxy.trim_start_matches("http://").to_owned();
    eventually(Duration::from_secs(5), "no new connection is accepted while draining", async || {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the in-flight request finished");
    let mut process = agent.process;
    let status = process.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", process.log());
    assert!(stopped_at.elapsed() < Duration::from_secs(8), "exited once drained, not at the end of the grace period");
}

#[tokio::test]
async fn with_a_drain_delay_it_keeps_serving_while_unready_then_stops() {
    let sim = emulator(Scenario::default()).await;
    let cfg = format!("upstream:\n  base_url: {}\n  api_key: k\nproxy:\n  enabled: true\n", sim.url);
    let agent = Process::agent(&cfg, &["--drain-delay", "1500ms", "--grace-period", "5s"], &[]);
    let url = format!("{}/api/v6/images/text2img", agent.proxy);
    assert_eq!(get(&format!("{}/readyz", agent.admin)).await.0, 200);
    let signalled = Instant::now();
    agent.process.signal("TERM");
    eventually(Duration::from_secs(1), "readiness turns 503 at once", async || {
        get(&format!("{}/readyz", agent.admin)).await.0 == 503
    })
    .await;
    // Still serving: a load balancer that has not caught up yet loses nothing.
    let r = http().post(&url).json(&json!({"key": "k", "model_id": "flux"})).send().await.unwrap();
    assert_eq!(r.status(), 400, "served during the drain delay");
    assert!(signalled.elapsed() < Duration::from_millis(1500));
    eventually(Duration::from_secs(5), "the listener closes after the drain delay", async || {
        http().post(&url).json(&json!({})).send().await.is_err()
    })
    .await;
    assert!(signalled.elapsed() >= Duration::from_millis(1400), "not before the delay: {:?}", signalled.elapsed());
    let mut process = agent.process;
    assert_eq!(process.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(process.log().contains("draining: /readyz answers 503"));
}
