//! The LLM API (SPEC §9.1) through the agent: every answer shape and fault of the emulator
//! classified alike by a probe and by the proxy; a mixed, concurrent load of media and LLM
//! exchanges counted exactly; and the official `openai` and `anthropic` SDKs, which see the same
//! answers with the proxy as without it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Process, Scrape, emulator, get, post};
use futures_util::StreamExt;
use modelslab_sentinel::classify::{self, Classification, Context, RequestKind};
use modelslab_sentinel::sim::Scenario;
use serde_json::{Value, json};

const KEY: &str = "sk-llm-corpus-canary-7f3a";
const GPT: &str = "meta-llama/Llama-3.3-70B-Instruct-Turbo";
const CLAUDE: &str = "claude-sonnet";

/// Where a request carries its key.
#[derive(Clone, Copy)]
enum Auth {
    Bearer,
    XApiKey,
}

/// One row of the corpus: a request, the scenario it meets, and what it must be counted as.
struct Case {
    name: &'static str,
    /// The emulator's `llm` section for this row.
    llm: &'static str,
    get: bool,
    path: &'static str,
    auth: Auth,
    /// A key of the request's own (a magic key); else the configured one.
    own_key: Option<&'static str>,
    body: Value,
    http_status: u16,
    /// (outcome, error_class, reason) as the report and the metrics show them.
    want: (&'static str, &'static str, &'static str),
    /// (input, output) tokens counted.
    tokens: Option<(u64, u64)>,
    finish: Option<&'static str>,
}

fn chat(model: &str, extra: &Value) -> Value {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": "Say three words about lighthouses"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The corpus: one row per answer shape and fault (a table: one row a line).
#[rustfmt::skip]
fn corpus() -> Vec<Case> {
    let (openai, messages) = ("/api/v7/llm/chat/completions", "/api/v7/llm/v1/messages");
    let ok = ("success", "-", "-");
    let case = |name, llm, path, auth, body, http_status, want, tokens, finish| Case {
        name, llm, get: false, path, auth, own_key: None, body, http_status, want, tokens, finish,
    };
    let list = |name, path, auth| Case { get: true, ..case(name, "{}", path, auth, Value::Null, 200, ok, None, None) };
    let own = |key, c: Case| Case { own_key: Some(key), ..c };
    vec![
        case("openai-plain", "{}", openai, Auth::Bearer, chat(GPT, &json!({})), 200, ok, Some((5, 12)), Some("stop")),
        case("openai-stream", "{}", openai, Auth::Bearer, chat(GPT, &json!({"stream": true})), 200, ok, Some((5, 12)), Some("stop")),
        case("openai-length", "{}", openai, Auth::Bearer, chat(GPT, &json!({"max_tokens": 4})), 200, ok, Some((5, 4)), Some("length")),
        case("anthropic-plain", "{}", messages, Auth::XApiKey, chat(CLAUDE, &json!({"max_tokens": 64})), 200, ok, Some((5, 12)), Some("end_turn")),
        case("anthropic-stream", "{}", messages, Auth::XApiKey, chat(CLAUDE, &json!({"max_tokens": 64, "stream": true})), 200, ok, Some((5, 12)), Some("end_turn")),
        case("anthropic-max-tokens", "{}", messages, Auth::XApiKey, chat(CLAUDE, &json!({"max_tokens": 3, "stream": true})), 200, ok, Some((5, 3)), Some("max_tokens")),
        case("count-tokens", "{}", "/api/v7/llm/v1/messages/count_tokens", Auth::XApiKey, chat(CLAUDE, &json!({})), 200, ok, None, None),
        list("models", "/api/v7/llm/v1/models", Auth::XApiKey),
        list("models-openai", "/api/v7/llm/models", Auth::Bearer),
        own("sim-invalid-corpus", case("revoked", "{}", openai, Auth::Bearer, chat(GPT, &json!({})), 401, ("error", "unauthorized", "invalid_api_key"), None, None)),
        own("sim-invalid-corpus", case("revoked-anthropic", "{}", messages, Auth::XApiKey, chat(CLAUDE, &json!({"max_tokens": 8})), 401, ("error", "unauthorized", "invalid_api_key"), None, None)),
        own("sim-broke-corpus", case("out-of-credits", "{}", openai, Auth::Bearer, chat(GPT, &json!({})), 402, ("error", "payment_required", "insufficient_credits"), None, None)),
        case("unknown-model", "{}", openai, Auth::Bearer, chat("gpt-nope", &json!({})), 404, ("error", "not_found", "model_not_found"), None, None),
        case("no-messages", "{}", openai, Auth::Bearer, json!({"model": GPT}), 400, ("error", "bad_request", "missing_parameter"), None, None),
        case("rate-limited", "{faults: {rate_limited: 1.0}, retry_after: 3}", openai, Auth::Bearer, chat(GPT, &json!({})), 429, ("error", "rate_limited", "other"), None, None),
        case("overloaded", "{faults: {overloaded: 1.0}}", messages, Auth::XApiKey, chat(CLAUDE, &json!({"max_tokens": 8})), 529, ("error", "unavailable", "temporarily_unavailable"), None, None),
        case("error-at-200", "{faults: {error_event: 1.0}}", openai, Auth::Bearer, chat(GPT, &json!({})), 200, ("error", "server_error", "internal_error"), None, None),
        case("error-event-openai", "{faults: {error_event: 1.0}}", openai, Auth::Bearer, chat(GPT, &json!({"stream": true})), 200, ("error", "server_error", "internal_error"), None, None),
        case("error-event-anthropic", "{faults: {error_event: 1.0}}", messages, Auth::XApiKey, chat(CLAUDE, &json!({"max_tokens": 64, "stream": true})), 200, ("error", "unavailable", "temporarily_unavailable"), None, None),
        case("cut-openai", "{faults: {cut: 1.0}}", openai, Auth::Bearer, chat(GPT, &json!({"stream": true})), 200, ("error", "transport", "stream_interrupted"), None, None),
        case("cut-anthropic", "{faults: {cut: 1.0}}", messages, Auth::XApiKey, chat(CLAUDE, &json!({"max_tokens": 64, "stream": true})), 200, ("error", "transport", "stream_interrupted"), None, None),
    ]
}

/// The probe of a corpus row, run on demand only (a day's interval).
fn probe_yaml(c: &Case) -> String {
    let (inject, header) = match (c.auth, c.own_key) {
        (Auth::Bearer, None) => ("bearer", String::new()),
        (Auth::XApiKey, None) => ("x_api_key", String::new()),
        (Auth::Bearer, Some(k)) => ("bearer", format!(", headers: {{ Authorization: 'Bearer {k}' }}")),
        (Auth::XApiKey, Some(k)) => ("x_api_key", format!(", headers: {{ x-api-key: '{k}' }}")),
    };
    let method = if c.get { "GET" } else { "POST" };
    let body = if c.body.is_null() { String::new() } else { format!(", body: {}", c.body) };
    format!(
        "  - name: {}\n    interval: 24h\n    timeout: 20s\n    request: {{ method: {method}, path: {}, inject_key: {inject}{header}{body} }}\n",
        c.name, c.path
    )
}

fn config(upstream: &str, probes: &str) -> String {
    let probes = if probes.is_empty() { String::new() } else { format!("probes:\n{probes}") };
    format!(
        "upstream:\n  base_url: {upstream}\n  api_key: {KEY}\nproxy:\n  enabled: true\nlabels:\n  models: [{GPT}, {CLAUDE}, flux]\ntelemetry:\n  log_level: trace\n{probes}"
    )
}

/// Sends one request as a client would (the key where the LLM API takes it) and reads the whole
/// answer, a cut stream included: (status, headers, bytes).
async fn send(client: &reqwest::Client, url: &str, c: &Case, key: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let req = if c.get { client.get(url) } else { client.post(url).json(&c.body) };
    let req = match c.auth {
        Auth::Bearer => req.bearer_auth(key),
        Auth::XApiKey => req.header("x-api-key", key).header("anthropic-version", "2023-06-01"),
    };
    read_whole(req).await
}

/// Sends `req` and reads the whole answer, a cut stream included (a stream cut by the upstream
/// reaches the client cut): (status, headers, bytes).
async fn read_whole(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => body.extend_from_slice(&c),
            Err(_) => break,
        }
    }
    (status, headers, body)
}

/// A labelled sample of a scrape, 0 when absent.
fn sample(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sel = s.metric(name);
    for (k, v) in labels {
        sel = sel.label(k, v);
    }
    sel.sum()
}

/// What a row added to the agent's families for `source`, as (requests, errors, input tokens,
/// output tokens, finish reasons, first-token observations).
fn counted(before: &Scrape, after: &Scrape, source: &str, c: &Case) -> (f64, f64, f64, f64, f64, f64) {
    let endpoint = modelslab_sentinel::vocab::endpoint_template(c.path);
    let status = c.http_status.to_string();
    let at = |s: &Scrape| {
        let base = [("source", source), ("endpoint", endpoint.as_str())];
        let finish = c.finish.unwrap_or("stop");
        (
            sample(s, "modelslab_requests_total", &[base[0], base[1], ("http_status", &status), ("outcome", c.want.0)]),
            sample(s, "modelslab_errors_total", &[base[0], base[1], ("error_class", c.want.1), ("reason", c.want.2)]),
            sample(s, "modelslab_llm_tokens_total", &[base[0], base[1], ("kind", "input")]),
            sample(s, "modelslab_llm_tokens_total", &[base[0], base[1], ("kind", "output")]),
            sample(s, "modelslab_llm_finish_reasons_total", &[base[0], base[1], ("finish_reason", finish)]),
            sample(s, "modelslab_llm_time_to_first_token_seconds_count", &base),
        )
    };
    let (a, b) = (at(before), at(after));
    (b.0 - a.0, b.1 - a.1, b.2 - a.2, b.3 - a.3, b.4 - a.4, b.5 - a.5)
}

fn expected(c: &Case) -> (f64, f64, f64, f64, f64, f64) {
    // Every streamed answer whose content began (failures midway too) has a first token.
    let first_token = c.body.get("stream") == Some(&json!(true)) && c.http_status == 200;
    let (input, output) = c.tokens.unwrap_or((0, 0));
    (
        1.0,
        if c.want.0 == "error" { 1.0 } else { 0.0 },
        input as f64,
        output as f64,
        if c.finish.is_some() { 1.0 } else { 0.0 },
        if first_token { 1.0 } else { 0.0 },
    )
}

#[tokio::test]
async fn every_llm_shape_and_fault_is_classified_alike_by_probe_and_proxy() {
    let sim = emulator(Scenario::default()).await;
    let cases = corpus();
    let probes: String = cases.iter().map(probe_yaml).collect();
    let agent = Process::agent(&config(&sim.url, &probes), &[], &[]);
    let mut seen = String::new();
    let client = common::http();
    for c in &cases {
        sim.set_scenario(&format!("llm: {}", c.llm)).await;
        let key = c.own_key.unwrap_or(KEY);

        // Through the proxy, as a client.
        let before = agent.metrics().await;
        let (status, headers, body) = send(&client, &format!("{}{}", agent.proxy, c.path), c, key).await;
        assert_eq!(status, c.http_status, "{}: {}", c.name, String::from_utf8_lossy(&body));
        if c.want.2 == "other" && c.want.1 == "rate_limited" {
            assert_eq!(headers.get("retry-after").unwrap(), "3", "{}: the header passes", c.name);
        }
        let after = common::settled(
            Duration::from_secs(5),
            async || agent.metrics().await,
            |s| counted(&before, s, "proxy", c).0 >= 1.0,
        )
        .await;
        assert_eq!(counted(&before, &after, "proxy", c), expected(c), "{} through the proxy", c.name);

        // As a probe.
        let before = agent.metrics().await;
        let (code, report) = post(&format!("{}/api/v1/probes/{}/run", agent.admin, c.name), "").await;
        assert_eq!(code, 200, "{report}");
        let report: Value = serde_json::from_str(&report).unwrap();
        let exchange = &report["exchanges"][0];
        let got = (
            exchange["outcome"].as_str().unwrap_or("-"),
            exchange["error_class"].as_str().unwrap_or("-"),
            exchange["reason"].as_str().unwrap_or("-"),
        );
        assert_eq!(
            (exchange["http_status"].as_u64(), got),
            (Some(u64::from(c.http_status)), c.want),
            "{} as a probe",
            c.name
        );
        assert_eq!(report["result"], if c.want.0 == "success" { "success" } else { "failure" }, "{}", c.name);
        let after = agent.metrics().await;
        assert_eq!(counted(&before, &after, "probe", c), expected(c), "{} as a probe", c.name);
        seen.push_str(&report.to_string());
    }

    // The model label comes from `model`, as from `model_id`.
    let m = agent.metrics().await;
    assert!(sample(&m, "modelslab_llm_tokens_total", &[("source", "proxy"), ("model", GPT)]) > 0.0);
    assert!(sample(&m, "modelslab_llm_tokens_total", &[("source", "probe"), ("model", CLAUDE)]) > 0.0);
    assert_eq!(
        sample(&m, "modelslab_requests_total", &[("model", "none"), ("endpoint", "/api/v7/llm/chat/completions")]),
        0.0
    );
    assert_eq!(sample(&m, "modelslab_proxy_uninspected_responses_total", &[]), 0.0, "every stream was read");
    assert_eq!(sample(&m, "modelslab_proxy_synthetic_responses_total", &[]), 0.0);

    // No key, wherever it travelled, and no prompt, anywhere.
    let (_, status) = get(&format!("{}/api/v1/status", agent.admin)).await;
    let everything = format!("{}{seen}{status}{}", m.text(), agent.process.log());
    for secret in [KEY, "sim-invalid-corpus", "sim-broke-corpus", "three words about lighthouses"] {
        assert!(!everything.contains(secret), "{secret} was recorded");
    }
}

/// An `expect.llm` that does not hold fails the run with reason `expectation`, saying why.
#[tokio::test]
async fn llm_expectations_fail_a_probe_with_why() {
    let sim = emulator(Scenario::default()).await;
    sim.set_scenario("llm: {first_token: 300ms}").await;
    let probes = format!(
        "{}{}",
        format_args!(
            "  - name: slow\n    interval: 24h\n    timeout: 20s\n    request: {{ path: /api/v7/llm/chat/completions, inject_key: bearer, body: {} }}\n    expect: {{ llm: {{ max_time_to_first_token: 100ms, min_output_tokens: 1 }} }}\n",
            chat(GPT, &json!({"stream": true}))
        ),
        format_args!(
            "  - name: truncated\n    interval: 24h\n    timeout: 20s\n    request: {{ path: /api/v7/llm/v1/messages, inject_key: x_api_key, body: {} }}\n    expect: {{ llm: {{ finish_reasons: [end_turn], min_output_tokens: 5 }} }}\n",
            chat(CLAUDE, &json!({"max_tokens": 2}))
        ),
    );
    let agent = Process::agent(&config(&sim.url, &probes), &[], &[]);
    let run = async |name: &str| -> Value {
        let (code, report) = post(&format!("{}/api/v1/probes/{name}/run", agent.admin), "").await;
        assert_eq!(code, 200, "{report}");
        serde_json::from_str(&report).unwrap()
    };
    let slow = run("slow").await;
    assert_eq!((&slow["result"], &slow["failure_reason"]), (&json!("failure"), &json!("expectation")), "{slow}");
    let why = slow["failed_expectations"][0].as_str().unwrap();
    assert!(why.starts_with("first token after 3") && why.ends_with("more than 100ms"), "{why}");
    let truncated = run("truncated").await;
    assert_eq!(
        truncated["failed_expectations"],
        json!(["2 output tokens, expected at least 5", "finish reason max_tokens, expected one of end_turn"])
    );
    sim.set_scenario("llm: {first_token: 5ms}").await;
    assert_eq!(run("slow").await["result"], "success");
}

/// What a client saw of one exchange, classified by the same classifier the agent uses.
struct Seen {
    endpoint: String,
    classification: Classification,
}

/// One request of the mixed load; media submissions and polls, LLM plain and streamed.
async fn one_of_the_mix(client: &reqwest::Client, i: usize, base: &str, jobs: &std::sync::Mutex<Vec<String>>) -> Seen {
    let llm = |path: &str, body: Value, bearer: bool| {
        let req = client.post(format!("{base}{path}")).json(&body);
        if bearer { req.bearer_auth(KEY) } else { req.header("x-api-key", KEY) }
    };
    let (path, req, kind) = match i % 8 {
        0 | 1 => (
            "/api/v7/llm/chat/completions",
            llm("/api/v7/llm/chat/completions", chat(GPT, &json!({"stream": true})), true),
            RequestKind::Submit,
        ),
        2 => (
            "/api/v7/llm/chat/completions",
            llm("/api/v7/llm/chat/completions", chat(GPT, &json!({})), true),
            RequestKind::Submit,
        ),
        3 => (
            "/api/v7/llm/v1/messages",
            llm("/api/v7/llm/v1/messages", chat(CLAUDE, &json!({"max_tokens": 64, "stream": true})), false),
            RequestKind::Submit,
        ),
        4 => (
            "/api/v7/llm/v1/messages",
            llm("/api/v7/llm/v1/messages", chat(CLAUDE, &json!({"max_tokens": 6})), false),
            RequestKind::Submit,
        ),
        5 => {
            let body = json!({"key": KEY, "model_id": "flux", "prompt": "a lighthouse", "width": 512, "height": 512});
            (
                "/api/v6/images/text2img",
                client.post(format!("{base}/api/v6/images/text2img")).json(&body),
                RequestKind::Submit,
            )
        }
        6 => {
            let body = json!({"key": KEY, "model_id": "cogvideox", "prompt": "waves", "width": 512, "height": 288});
            (
                "/api/v6/video/text2video",
                client.post(format!("{base}/api/v6/video/text2video")).json(&body),
                RequestKind::Submit,
            )
        }
        _ => {
            let id = jobs.lock().unwrap().get(i % 64).cloned().unwrap_or_else(|| "1".into());
            let path = format!("/api/v6/images/fetch/{id}");
            (
                "/api/v6/images/fetch/{id}",
                client.post(format!("{base}{path}")).json(&json!({"key": KEY})),
                RequestKind::Fetch,
            )
        }
    };
    let (status, headers, body) = read_whole(req).await;
    let classification = classify::classify(status, &headers, &body, &Context::new(kind));
    if path == "/api/v6/images/text2img" {
        if let Some(id) = classification.details().id.clone() {
            jobs.lock().unwrap().push(id);
        }
    }
    Seen { endpoint: path.to_owned(), classification }
}

/// Time to the first content of a stream, as the client sees it.
async fn client_ttft(client: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let resp = client.post(url).bearer_auth(KEY).json(&chat(GPT, &json!({"stream": true}))).send().await.unwrap();
    let mut reader = classify::stream::Reader::new();
    let mut stream = resp.bytes_stream();
    let mut first = None;
    while let Some(Ok(chunk)) = stream.next().await {
        if reader.feed(&chunk) && first.is_none() {
            first = Some(started.elapsed());
        }
    }
    first.expect("a first token")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_concurrent_load_is_counted_exactly() {
    const EXCHANGES: usize = 2_000;
    let sim = emulator(Scenario::default()).await;
    sim.set_scenario(
        "job_duration: 50ms\nmodels: [flux, cogvideox]\nwallet: {balance: 1000000}\naccount: premium\nllm: {first_token: 2ms, token_interval: 1ms, faults: {cut: 0.05, error_event: 0.05, rate_limited: 0.03}}\n",
    )
    .await;
    // At the default log level: a trace line per exchange would be measured too.
    let agent = Process::agent(&config(&sim.url, "").replace("log_level: trace", "log_level: info"), &[], &[]);
    let before = agent.metrics().await;
    let t0 = Instant::now();
    let client = common::http();
    let jobs = std::sync::Mutex::new(Vec::new());
    let seen: Vec<Seen> = futures_util::stream::iter(0..EXCHANGES)
        .map(|i| one_of_the_mix(&client, i, &agent.proxy, &jobs))
        .buffer_unordered(32)
        .collect()
        .await;

    eprintln!("{EXCHANGES} exchanges in {:?}", t0.elapsed());
    // What the clients saw, by (endpoint, outcome, class, reason), and the tokens they were told.
    let mut want: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    let (mut input, mut output) = (0u64, 0u64);
    for s in &seen {
        let c = &s.classification;
        let class = c.error_class().map_or("-", |e| e.as_str()).to_owned();
        let reason = c.error().map_or("-", |e| e.reason.as_str()).to_owned();
        *want.entry((s.endpoint.clone(), c.outcome().as_str().to_owned(), class, reason)).or_default() += 1.0;
        if let (Some(l), classify::Outcome::Success) = (&c.details().llm, c.outcome()) {
            input += l.input_tokens.unwrap_or(0);
            output += l.output_tokens.unwrap_or(0);
        }
    }
    assert!(want.keys().any(|k| k.3 == "stream_interrupted") && want.keys().any(|k| k.1 == "processing"), "{want:?}");

    let after = common::settled(
        Duration::from_secs(10),
        async || agent.metrics().await,
        |s| {
            sample(s, "modelslab_requests_total", &[("source", "proxy")])
                - sample(&before, "modelslab_requests_total", &[("source", "proxy")])
                >= EXCHANGES as f64
        },
    )
    .await;
    let delta = |labels: &[(&str, &str)], name: &str| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(delta(&[("source", "proxy")], "modelslab_requests_total"), EXCHANGES as f64, "every exchange once");
    for ((endpoint, outcome, class, reason), n) in &want {
        let got =
            delta(&[("source", "proxy"), ("endpoint", endpoint), ("outcome", outcome)], "modelslab_requests_total");
        let total: f64 = want.iter().filter(|(k, _)| &k.0 == endpoint && &k.1 == outcome).map(|(_, v)| v).sum();
        assert_eq!(got, total, "{endpoint} {outcome}");
        if outcome == "error" {
            let labels = [
                ("source", "proxy"),
                ("endpoint", endpoint.as_str()),
                ("error_class", class.as_str()),
                ("reason", reason.as_str()),
            ];
            assert_eq!(delta(&labels, "modelslab_errors_total"), *n, "{endpoint} {class} {reason}");
        }
    }
    assert_eq!(delta(&[("source", "proxy"), ("kind", "input")], "modelslab_llm_tokens_total"), input as f64);
    assert_eq!(delta(&[("source", "proxy"), ("kind", "output")], "modelslab_llm_tokens_total"), output as f64);
    assert_eq!(delta(&[], "modelslab_proxy_synthetic_responses_total"), 0.0, "no answer of the proxy's own");
    assert_eq!(delta(&[], "modelslab_proxy_uninspected_responses_total"), 0.0);

    eprintln!("counted after {:?}", t0.elapsed());
    // Time to first token, client side, through the proxy and direct, alternating.
    sim.set_scenario("llm: {first_token: 5ms, token_interval: 5ms}\naccount: premium\n").await;
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..41 {
        direct.push(client_ttft(&client, &format!("{}/api/v7/llm/chat/completions", sim.url)).await);
        proxied.push(client_ttft(&client, &format!("{}/api/v7/llm/chat/completions", agent.proxy)).await);
    }
    let (direct, proxied) = (median(direct), median(proxied));
    let gap = proxied.as_secs_f64() - direct.as_secs_f64();
    eprintln!("time to first token, median of 41: direct {direct:?}, through the proxy {proxied:?}");
    assert!(gap.abs() < 0.001, "the proxy moved the first token by {:.2} ms", gap * 1e3);
}

/// Runs `tests/clients/llm_sdks.py` (the official `openai` and `anthropic` SDKs) against `base`.
async fn sdks(base: &str, phase: &str) -> Value {
    let (base, phase) = (format!("{base}/api/v7/llm"), phase.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["tests/clients/llm_sdks.py", &base, &phase])
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .expect("python3 with openai and anthropic is needed: pip install openai anthropic (scripts/test does)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the SDKs failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Requests the emulator has served, this one included (so two readings differ by one more
/// than what came between them).
async fn emulator_requests(sim: &str) -> f64 {
    let stats: Value = serde_json::from_str(&get(&format!("{sim}/_sim/stats")).await.1).unwrap();
    stats["requests"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_and_anthropic_sdks_see_the_same_api_through_the_proxy() {
    let sim = emulator(Scenario::default()).await;
    let agent = Process::agent(&config(&sim.url, ""), &[], &[]);

    // Plain calls, streams, lists, counts and errors: directly, then through the proxy.
    let direct = sdks(&sim.url, "calls").await;
    let before = (agent.metrics().await, emulator_requests(&sim.url).await);
    let proxied = sdks(&agent.proxy, "calls").await;
    let after = (agent.metrics().await, emulator_requests(&sim.url).await);
    assert_eq!(proxied, direct, "the SDKs saw other answers through the proxy");
    // Byte for byte, and what the SDKs made of them.
    assert!(direct["openai"]["plain"]["raw"].as_str().unwrap().contains("\"object\":\"chat.completion\""));
    assert_eq!(direct["openai"]["stream"]["finish"], "stop");
    assert_eq!(direct["openai"]["truncated"]["finish"], "length");
    assert_eq!(direct["anthropic"]["stream"]["finish"], "end_turn");
    assert!(direct["anthropic"]["count"].as_u64().unwrap() > 0);
    assert_eq!(direct["openai"]["models"], json!(["Qwen/Qwen2.5-VL-72B-Instruct-together", GPT, CLAUDE]));
    for sdk in ["openai", "anthropic"] {
        assert_eq!(direct[sdk]["revoked"], json!({"error": "AuthenticationError", "status": 401}), "{sdk}");
        assert_eq!(direct[sdk]["broke"]["status"], 402, "{sdk}");
    }
    assert_eq!(direct["openai"]["unknown_model"], json!({"error": "NotFoundError", "status": 404}));

    // Every exchange counted once, with its class, tokens and model.
    let (m0, m1) = (&before.0, &after.0);
    let delta = |name: &str, labels: &[(&str, &str)]| sample(m1, name, labels) - sample(m0, name, labels);
    let exchanges = after.1 - before.1 - 1.0;
    assert_eq!(delta("modelslab_requests_total", &[("source", "proxy")]), exchanges, "once each");
    assert_eq!(exchanges, 13.0, "OpenAI: 3 chats, a list, 3 errors; Anthropic: 2 messages, a count, a list, 2 errors");
    let class = |c: &str| delta("modelslab_errors_total", &[("source", "proxy"), ("error_class", c)]);
    assert_eq!((class("unauthorized"), class("payment_required"), class("not_found")), (2.0, 2.0, 1.0));
    let ok = delta("modelslab_requests_total", &[("source", "proxy"), ("outcome", "success")]);
    assert_eq!(ok, exchanges - 5.0);
    let tokens = |model: &str, kind: &str| {
        delta("modelslab_llm_tokens_total", &[("source", "proxy"), ("model", model), ("kind", kind)])
    };
    let usage = |sdk: &str, call: &str, k: &str| direct[sdk][call]["usage"][k].as_f64().unwrap_or(0.0);
    let gpt_out = usage("openai", "plain", "completion_tokens")
        + usage("openai", "stream", "completion_tokens")
        + usage("openai", "truncated", "completion_tokens");
    assert_eq!(tokens(GPT, "output"), gpt_out);
    let claude_out = usage("anthropic", "plain", "output_tokens") + usage("anthropic", "stream", "output_tokens");
    assert_eq!(tokens(CLAUDE, "output"), claude_out);
    assert_eq!(
        tokens(CLAUDE, "input"),
        usage("anthropic", "plain", "input_tokens") + usage("anthropic", "stream", "input_tokens"),
        "a token count adds no tokens"
    );
    let ttft = delta("modelslab_llm_time_to_first_token_seconds_count", &[("source", "proxy")]);
    assert_eq!(ttft, 2.0, "the two streams");

    // A 429: the SDKs retry it themselves (twice, after Retry-After), as they do directly.
    sim.set_scenario("llm: {faults: {rate_limited: 1.0}, retry_after: 1}").await;
    let n0 = emulator_requests(&sim.url).await;
    let direct = sdks(&sim.url, "limited").await;
    let n1 = emulator_requests(&sim.url).await;
    let m0 = agent.metrics().await;
    let proxied = sdks(&agent.proxy, "limited").await;
    let n2 = emulator_requests(&sim.url).await;
    assert_eq!(proxied, direct);
    assert_eq!(direct["openai"], json!({"error": "RateLimitError", "status": 429}));
    assert_eq!((n1 - n0 - 1.0, n2 - n1 - 1.0), (6.0, 6.0), "three attempts per SDK, with the proxy as without");
    let m1 = agent.metrics().await;
    let limited = sample(&m1, "modelslab_errors_total", &[("source", "proxy"), ("error_class", "rate_limited")])
        - sample(&m0, "modelslab_errors_total", &[("source", "proxy"), ("error_class", "rate_limited")]);
    assert_eq!(limited, 6.0, "each attempt counted");
    assert_eq!(sample(&m1, "modelslab_proxy_synthetic_responses_total", &[]), 0.0);
}
