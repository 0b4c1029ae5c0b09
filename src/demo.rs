//! `demo`: the emulator in a lively scenario, the agent on an embedded config (probes, proxy and
//! status page all pointed at the emulator), and a small client that sends realistic traffic
//! through the proxy. Like `app`, a wiring layer: it may use every module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{self, Listeners, Options};
use crate::classify::ErrorClass;
use crate::config::{self, Environment};
use crate::observe::status::StatusDocument;
use crate::sim::{self, Scenario};

/// The emulator's behaviour in the demo: mostly healthy, with every kind of trouble now and then.
const SCENARIO: &str = "\
seed: 7
latency: { min: 20ms, max: 150ms }
sync_ratio: 0.1
job_duration: { min: 2s, max: 8s }
queue_wait: { min: 0s, max: 2s }
model_pace: { flux: 0.7, sdxl: 1.4 }
catalogue_drops: [ { model: mistral-7b-instruct-legacy, after: 20s } ]
eta_bias: 0.7
failure_ratio: 0.1
faults: { server_error: 0.03, unavailable: 0.02, gateway_html: 0.01, soft_error: 0.03, timeout: 0.005, reset: 0.005 }
status_page: degraded_performance
account: standard
llm:
  models: [meta-llama/Llama-3.3-70B-Instruct-Turbo, claude-sonnet, mistral-7b-instruct-legacy]
  first_token: { min: 150ms, max: 900ms }
  token_interval: { min: 10ms, max: 40ms }
  answer_tokens: 24
  faults: { rate_limited: 0.03, overloaded: 0.02, error_event: 0.02, cut: 0.02 }
";

/// The agent's config in the demo; `${SIM}` is the emulator's address.
const CONFIG: &str = "\
upstream:
  base_url: http://${SIM}
  api_key: demo-probe-key
  timeout: 5s
admin:
  listen: 127.0.0.1:${ADMIN_PORT:-0}
proxy:
  enabled: true
  listen: 127.0.0.1:${PROXY_PORT:-0}
  upstream_timeout: 10s
jobs:
  ttl: 2m
labels:
  models: [flux, sdxl, cogvideox, meta-llama/Llama-3.3-70B-Instruct-Turbo, claude-sonnet, mistral-7b-instruct-legacy]
probes:
  - name: text2img-validation
    interval: 5s
    timeout: 4s
    request: { path: /api/v6/images/text2img, body: { model_id: flux } }
    expect: { http_status: [400], status: error, reason: missing_parameter }
  - name: auth-rejects-bad-key
    interval: 10s
    timeout: 5s
    request: { path: /api/v6/images/text2img, body: { key: sim-invalid-demo, prompt: auth probe } }
    expect: { http_status: [401], error_class: unauthorized }
  - name: text2img-generate
    interval: 15s
    timeout: 14s
    request: { path: /api/v6/images/text2img, body: { model_id: flux, prompt: a lighthouse at dawn, width: 512, height: 512 } }
    follow: { fetch_path: \"/api/v6/images/fetch/{id}\", poll_interval: 1s, max_wait: 12s, webhook: true }
    expect: { status: success, output: { count: 1, size: from_request, timeout: 5s } }
  - name: text2video-generate
    interval: 30s
    timeout: 20s
    request: { path: /api/v6/video/text2video, body: { model_id: cogvideox, prompt: waves on a beach, width: 512, height: 288 } }
    follow: { poll_interval: 1s, max_wait: 15s }
    expect: { status: success, output: { count: 1, size: from_request, timeout: 5s } }
  - name: llm-chat-stream
    interval: 10s
    timeout: 8s
    request:
      path: /api/v7/llm/chat/completions
      inject_key: bearer
      body: { model: meta-llama/Llama-3.3-70B-Instruct-Turbo, stream: true, max_tokens: 32, messages: [ { role: user, content: Say OK. } ] }
    expect: { status: success, llm: { min_output_tokens: 1, finish_reasons: [stop, length], max_time_to_first_token: 3s } }
status_page:
  url: http://${SIM}/status
  interval: 5s
  timeout: 2s
webhooks:
  listen: 127.0.0.1:${WEBHOOK_PORT:-0}
  grace: 20s
account:
  balance: { enabled: true, interval: 5s, timeout: 2s }
  # Every client of the key: the probes, and another service that submits videos straight to
  # the API. The limit is learned from the bursts' 429s (10 on the demo's standard plan).
  queue: { enabled: true, interval: 5s }
  # mistral-7b-instruct-legacy leaves the catalogue 20 s in.
  models: { enabled: true, interval: 10s }
slos:
  - { name: proxy-availability, objective: 99, sli: { requests: { source: proxy } } }
  - { name: job-latency, objective: 95, sli: { jobs: { max_duration: 10s } } }
  - { name: generation-probe, objective: 99, window: 7d, sli: { probes: [text2img-generate] } }
maintenance:
  # Shown, not felt: the first 15 s of every minute, probes go on.
  pause_probes: none
  windows:
    - { name: demo-minute, cron: \"* * * * *\", duration: 15s }
telemetry:
  log_level: warn
";

/// Runs the demo until Ctrl-C, SIGTERM or `duration`.
pub async fn run(duration: Option<Duration>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    app::cancel_on_shutdown_signals(shutdown.clone());
    // The demo's own tasks (its timer, the client load) are not the agent's: they stop with the
    // shutdown token and need no draining, so they are not on the agent's tracker.
    if let Some(d) = duration {
        let t = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            t.cancel();
        });
    }

    let scenario = Scenario::parse(SCENARIO).map_err(|e| anyhow::anyhow!("embedded scenario: {e}"))?;
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the emulator")?;
    let sim = sim::spawn(sim_listener, scenario, shutdown.child_token())?;

    let sim_addr = sim.addr.to_string();
    let var = move |name: &str| match name {
        "SIM" => Some(sim_addr.clone()),
        other => std::env::var(format!("DEMO_{other}")).ok(),
    };
    let config =
        config::from_yaml(CONFIG, "the demo's embedded config", &Environment { var: &var, base_dir: ".".into() })?;
    let listeners = Listeners::bind(&config).await?;
    let opts = Options {
        config,
        config_path: PathBuf::from("(embedded demo config)"),
        grace_period: Duration::from_secs(5),
        drain_delay: Duration::ZERO,
    };
    let (handle, done) = app::start(opts, listeners, shutdown.clone())?;
    let proxy = handle.proxy_addr.context("the demo config enables the proxy")?;

    let admin = handle.admin_addr;
    println!("modelslab-sentinel demo: the agent is watching an emulated ModelsLab API.");
    println!("  status page: http://{admin}/   <- open this in a browser");
    println!("  metrics:     http://{admin}/metrics");
    println!("  status API:  http://{admin}/api/v1/status");
    println!("  proxy:       http://{proxy}   (point a ModelsLab client's base URL here)");
    println!("  emulator:    http://{}   (scenario: http://{}/_sim/scenario)", sim.addr, sim.addr);
    println!("Probes run every few seconds; a small client sends traffic through the proxy (images,");
    println!("video, voice and 3D jobs; LLM chats, plain and streamed), fills a queue now and then");
    println!("(429s) and flips the vendor's status page every 30 s. Another service on the probes' key fills");
    println!("the account's queue straight at the API, and a model leaves the LLM catalogue after 20 s.");
    println!(
        "{}",
        if duration.is_some() { "Stops by itself (--duration), or with Ctrl-C." } else { "Stop with Ctrl-C." }
    );

    let sent = Arc::new(AtomicU64::new(0));
    for worker in 0..3 {
        tokio::spawn(client(worker, proxy, sent.clone(), shutdown.child_token()));
    }
    for worker in 0..2 {
        tokio::spawn(llm_client(worker, proxy, sent.clone(), shutdown.child_token()));
    }
    tokio::spawn(bursts(proxy, sent.clone(), shutdown.child_token()));
    tokio::spawn(another_service(sim.addr, shutdown.child_token()));
    tokio::spawn(flip_status_page(sim.addr, shutdown.child_token()));
    tokio::spawn(report(admin, shutdown.child_token()));
    done.await?;
    println!("demo stopped after {} client requests through the proxy.", sent.load(Ordering::Relaxed));
    Ok(())
}

/// One client worker: generations (polled to the end), broken parameters, a broke key, a revoked
/// key, a plan without realtime.
async fn client(worker: u64, proxy: SocketAddr, sent: Arc<AtomicU64>, stop: CancellationToken) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(15)).build() else { return };
    let base = format!("http://{proxy}");
    let mut n = worker;
    while !stop.is_cancelled() {
        n += 3;
        let key = format!("demo-user-{}", n % 4);
        let (path, body) = match n % 12 {
            0..=5 => (
                "/api/v6/images/text2img",
                json!({"key": key, "model_id": if n % 2 == 0 { "flux" } else { "sdxl" }, "prompt": "a fox in the snow", "width": 512, "height": 512}),
            ),
            6 => ("/api/v6/images/text2img", json!({"key": key, "model_id": "flux"})),
            7 => ("/api/v6/images/text2img", json!({"key": key, "prompt": "p", "width": 2000})),
            8 => ("/api/v7/images/text-to-image", json!({"key": "sim-broke-demo", "prompt": "p"})),
            9 => ("/api/v6/images/text2img", json!({"key": "sim-invalid-demo", "prompt": "p"})),
            10 => ("/api/v6/realtime/text2img", json!({"key": "sim-basic-demo", "prompt": "p"})),
            _ => ("/api/v6/images/text2img", json!({"key": key, "prompt": "p", "model_id": "unknown-model"})),
        };
        sent.fetch_add(1, Ordering::Relaxed);
        let answer = http.post(format!("{base}{path}")).json(&body).send().await;
        if let Ok(r) = answer {
            if let Ok(v) = r.json::<Value>().await {
                if v["status"] == "processing" {
                    follow(&http, &base, path, &key, &v, &sent, &stop).await;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

/// Every 20 s, one key submits more generations than its queue holds (10 on the demo's standard
/// plan): the API answers the rest 429 with `retry_after` and `Maximum 10 queued requests`. The accepted jobs are
/// polled to their end.
async fn bursts(proxy: SocketAddr, sent: Arc<AtomicU64>, stop: CancellationToken) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(15)).build() else { return };
    let base = format!("http://{proxy}");
    for round in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(if round == 0 { 3 } else { 20 })) => {}
        }
        let key = format!("demo-burst-{}", round % 3);
        let body = json!({"key": key, "model_id": "flux", "prompt": "a burst", "width": 512, "height": 512});
        // All at once, so that the eleventh on finds the queue full however slowly this machine
        // runs (sent one after another, on a loaded machine, the first jobs ended in between).
        let submissions = (0..14).map(|_| {
            sent.fetch_add(1, Ordering::Relaxed);
            http.post(format!("{base}/api/v6/images/text2img")).json(&body).send()
        });
        for answer in futures_util::future::join_all(submissions).await {
            let Ok(answer) = answer else { continue };
            let Ok(v) = answer.json::<Value>().await else { continue };
            if v["status"] == "processing" {
                let (http, base, key, sent, stop) =
                    (http.clone(), base.clone(), key.clone(), sent.clone(), stop.clone());
                let path = "/api/v6/images/text2img";
                tokio::spawn(async move { follow(&http, &base, path, &key, &v, &sent, &stop).await });
            }
        }
    }
}

/// Another service on the probes' key, straight to the API (not through the proxy): every 30 s
/// it submits 7 videos, so the account's queue climbs towards its limit of 10 where only the
/// queue poller sees it.
async fn another_service(sim: SocketAddr, stop: CancellationToken) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else { return };
    let body =
        json!({"key": "demo-probe-key", "model_id": "cogvideox", "prompt": "a tide", "width": 512, "height": 288});
    for round in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(if round == 0 { 5 } else { 30 })) => {}
        }
        for _ in 0..7 {
            let _ = http.post(format!("http://{sim}/api/v6/video/text2video")).json(&body).send().await;
        }
    }
}

/// The vendor's status page alternates between operational and degraded every 30 s.
async fn flip_status_page(sim: SocketAddr, stop: CancellationToken) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else { return };
    for round in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        let state = if round % 2 == 0 { "operational" } else { "degraded_performance" };
        let scenario = SCENARIO.replace("degraded_performance", state);
        let _ = http.put(format!("http://{sim}/_sim/scenario")).body(scenario).send().await;
    }
}

/// Every 10 s, one line in the terminal from the agent's own status document.
async fn report(admin: SocketAddr, stop: CancellationToken) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else { return };
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let Ok(r) = http.get(format!("http://{admin}/api/v1/status")).send().await else { continue };
        let Ok(doc) = r.json::<StatusDocument>().await else { continue };
        println!("[{:>4}s] {}", started.elapsed().as_secs(), status_line(&doc));
    }
}

/// One compact line: the verdict, requests and error classes, jobs, probes, the status page.
pub fn status_line(doc: &StatusDocument) -> String {
    let totals = &doc.recent.totals;
    let mut classes: Vec<(ErrorClass, u32)> = totals.classes.iter().map(|(k, v)| (*k, *v)).collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.1));
    let classes: Vec<String> = classes.iter().take(4).map(|(k, v)| format!("{k} {v}")).collect();
    let jobs: u32 = doc.recent.jobs.finished.values().sum();
    let up = doc.probes.iter().filter(|p| p.last.as_ref().is_some_and(|l| l.success())).count();
    format!(
        "{} · {} requests, {} errors ({}) · {} jobs done · probes {}/{} up · status page {}",
        doc.overall.state.as_str(),
        totals.requests,
        totals.error,
        if classes.is_empty() { "none".to_owned() } else { classes.join(", ") },
        jobs,
        up,
        doc.probes.len(),
        doc.status_page.as_ref().and_then(|p| p.status).map_or("-".to_owned(), |s| s.as_str().replace('_', " ")),
    )
}

/// One LLM client worker: OpenAI chats plain and streamed, Anthropic messages streamed and cut
/// by `max_tokens`, the model list, now and then a revoked key; and the other media families (a
/// video, a voice and a 3D job, each polled on its family's own fetch endpoint).
async fn llm_client(worker: u64, proxy: SocketAddr, sent: Arc<AtomicU64>, stop: CancellationToken) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(15)).build() else { return };
    let base = format!("http://{proxy}");
    let mut n = worker;
    while !stop.is_cancelled() {
        n += 2;
        let key = format!("demo-user-{}", n % 4);
        let ask = |model: &str, stream: bool, max_tokens: u64| {
            json!({"model": model, "stream": stream, "max_tokens": max_tokens,
                   "messages": [{"role": "user", "content": "Tell me about lighthouses"}]})
        };
        let gpt = "meta-llama/Llama-3.3-70B-Instruct-Turbo";
        let request = match n % 10 {
            0 | 1 => {
                http.post(format!("{base}/api/v7/llm/chat/completions")).bearer_auth(&key).json(&ask(gpt, true, 64))
            }
            2 => http.post(format!("{base}/api/v7/llm/chat/completions")).bearer_auth(&key).json(&ask(gpt, false, 64)),
            3 | 4 => http.post(format!("{base}/api/v7/llm/v1/messages")).header("x-api-key", &key).json(&ask(
                "claude-sonnet",
                true,
                64,
            )),
            5 => http.post(format!("{base}/api/v7/llm/v1/messages")).header("x-api-key", &key).json(&ask(
                "claude-sonnet",
                false,
                8,
            )),
            6 => http.get(format!("{base}/api/v7/llm/v1/models")).header("x-api-key", &key),
            7 => http
                .post(format!("{base}/api/v7/llm/chat/completions"))
                .bearer_auth("sim-invalid-demo")
                .json(&ask(gpt, false, 8)),
            _ => {
                let (path, body) = match n % 3 {
                    0 => (
                        "/api/v6/video/text2video",
                        json!({"key": key, "model_id": "cogvideox", "prompt": "waves", "width": 512, "height": 288}),
                    ),
                    1 => ("/api/v7/voice/text-to-speech", json!({"key": key, "prompt": "Welcome aboard"})),
                    _ => ("/api/v6/3d/text_to_3d", json!({"key": key, "prompt": "a small lighthouse"})),
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(r) = http.post(format!("{base}{path}")).json(&body).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["status"] == "processing" {
                            follow(&http, &base, path, &key, &v, &sent, &stop).await;
                        }
                    }
                }
                continue;
            }
        };
        sent.fetch_add(1, Ordering::Relaxed);
        if let Ok(r) = request.send().await {
            let _ = r.bytes().await; // a stream is read to its end, as a chat client does
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(400)) => {}
        }
    }
}

/// Polls a job on its family's fetch endpoint through the proxy, as SDKs do (they build it from
/// their base URL: `/api/v6/video/text2video` is polled at `/api/v6/video/fetch/{id}`), until it
/// ends (at most 20 polls).
async fn follow(
    http: &reqwest::Client,
    base: &str,
    submitted_to: &str,
    key: &str,
    submitted: &Value,
    sent: &AtomicU64,
    stop: &CancellationToken,
) {
    let Some(id) = submitted["id"].as_u64() else { return };
    let family = submitted_to.rsplit_once('/').map_or("", |(family, _)| family);
    for _ in 0..20 {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        sent.fetch_add(1, Ordering::Relaxed);
        let Ok(r) = http.post(format!("{base}{family}/fetch/{id}")).json(&json!({"key": key})).send().await else {
            continue;
        };
        match r.json::<Value>().await {
            Ok(v) if v["status"] == "processing" => continue,
            Ok(_) => return,
            Err(_) => continue,
        }
    }
}
