//! The proxy, in-process on 127.0.0.1:0, against the emulator and against a hand-made upstream
//! whose answers are chosen per request (`x-canned` header).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Agent, Scrape, Served, emulator, http, poll_job, raw_http, serve};
use modelslab_sentinel::sim::{Faults, Scenario, Span};
use serde_json::{Value, json};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

// ---------------------------------------------------------------- upstreams

const CREDITS: &str = r#"{"status":"error","message":"Insufficient credits. Please add more credits to continue."}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// 5 MiB JSON success answer, as a base64 image would make it.
fn big_body() -> Vec<u8> {
    let mut b = br#"{"status":"success","id":7,"output":[""#.to_vec();
    b.extend(std::iter::repeat_n(b'A', 5 << 20));
    b.extend_from_slice(br#""]}"#);
    b
}

struct Canned {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    cancelled: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    _server: Served,
}

struct NotifyOnDrop(mpsc::UnboundedSender<()>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

async fn canned() -> Canned {
    let requests = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let count = requests.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let count = count.clone();
        let tx = tx.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let which = headers.get("x-canned").and_then(|v| v.to_str().ok()).unwrap_or("echo").to_owned();
            canned_answer(&which, method, uri, headers, body, tx).await
        }
    });
    let server = serve(app).await;
    Canned { addr: server.addr, requests, cancelled: tokio::sync::Mutex::new(rx), _server: server }
}

async fn canned_answer(
    which: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    tx: mpsc::UnboundedSender<()>,
) -> Response {
    let json_ct = [("content-type", "application/json")];
    match which {
        "echo" => {
            let hs: serde_json::Map<String, Value> =
                headers.iter().map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?")))).collect();
            let echo = json!({"status": "success", "method": method.as_str(), "uri": uri.to_string(), "headers": hs, "body": String::from_utf8_lossy(&body)});
            (json_ct, echo.to_string()).into_response()
        }
        "gzip-402" => (
            StatusCode::PAYMENT_REQUIRED,
            [("content-type", "application/json"), ("content-encoding", "gzip")],
            gzip(CREDITS.as_bytes()),
        )
            .into_response(),
        "chunked" => {
            let parts: Vec<Result<Bytes, std::io::Error>> = [
                r#"{"status":"processing","#,
                r#""id":"chunk-1","eta":3,"#,
                r#""messege":"Try to fetch request after seconds estimated"}"#,
            ]
            .into_iter()
            .map(|s| Ok(Bytes::from_static(s.as_bytes())))
            .collect();
            (json_ct, Body::from_stream(futures_util::stream::iter(parts))).into_response()
        }
        "big" => (json_ct, big_body()).into_response(),
        "slow-stream" => {
            let first = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"{\"status\":\"success\","))
            });
            let rest = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, std::io::Error>(Bytes::from_static(b"\"id\":1}"))
            });
            (json_ct, Body::from_stream(futures_util::StreamExt::chain(first, rest))).into_response()
        }
        "html-200" => ([("content-type", "text/html")], "<html><body>Welcome to nginx!</body></html>").into_response(),
        "no-status" => (json_ct, r#"{"output":[]}"#).into_response(),
        "png" => ([("content-type", "image/png")], vec![0x89u8, b'P', b'N', b'G', 0, 1, 2, 3]).into_response(),
        "sse" => ([("content-type", "text/event-stream")], "data: {\"status\":\"success\"}\n\n").into_response(),
        "ndjson" => ([("content-type", "application/x-ndjson")], "{\"status\":\"success\"}\n").into_response(),
        "not-found" => (StatusCode::NOT_FOUND, json_ct, r#"{"status":"error","message":"Not Found"}"#).into_response(),
        "teapot" => {
            (StatusCode::IM_A_TEAPOT, json_ct, r#"{"status":"error","message":"short and stout"}"#).into_response()
        }
        "hang" => {
            let _guard = NotifyOnDrop(tx);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        other => (StatusCode::BAD_REQUEST, format!("unknown canned answer {other}")).into_response(),
    }
}

// ---------------------------------------------------------------- the agent

/// The agent with its proxy on, in front of `base`.
async fn agent(base: &str, proxy_extra: &str, extra: &str) -> Agent {
    Agent::start(&format!(
        "upstream:\n  base_url: {base}\n  api_key: agent-key\nproxy:\n  enabled: true\n{proxy_extra}{extra}"
    ))
    .await
}

async fn send(url: &str, canned: &str, body: Value) -> reqwest::Response {
    http().post(url).header("x-canned", canned).json(&body).send().await.unwrap()
}

fn proxy_requests(m: &Scrape) -> f64 {
    m.metric("modelslab_requests_total").label("source", "proxy").sum()
}

fn error_count(m: &Scrape, class: &str, reason: &str) -> f64 {
    m.metric("modelslab_errors_total")
        .label("source", "proxy")
        .label("error_class", class)
        .label("reason", reason)
        .sum()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn every_class_and_reason_through_the_proxy() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(60)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let a = agent(&base, "", "").await;
    let gen_url = format!("{}/api/v6/images/text2img", a.proxy);
    let cases: Vec<(&str, Value)> = vec![
        ("/api/v6/images/text2img", json!({"key": "k", "model_id": "flux"})),
        ("/api/v6/images/text2img", json!({"key": "k", "prompt": 1})),
        ("/api/v6/images/text2img", json!({"key": "k", "prompt": "p", "width": 9000})),
        ("/api/v6/images/text2img", json!({"key": "k", "prompt": "p", "height": 300})),
        ("/api/v6/images/text2img", json!({"key": "k", "prompt": "p", "model_id": "nope"})),
        ("/api/v6/images/img2img", json!({"key": "k", "prompt": "p", "init_image": "https://x.invalid/a.png"})),
        ("/api/v6/images/text2img", json!({"key": "sim-invalid-1", "prompt": "p"})),
        ("/api/v6/images/text2img", json!({"key": "sim-broke-1", "prompt": "p"})),
        ("/api/v6/realtime/text2img", json!({"key": "sim-basic-1", "prompt": "p"})),
    ];
    for (path, body) in &cases {
        http().post(format!("{}{path}", a.proxy)).json(body).send().await.unwrap();
    }
    http().post(&gen_url).header("content-type", "application/json").body("{oops").send().await.unwrap();
    for _ in 0..6 {
        http().post(&gen_url).json(&json!({"key": "q", "prompt": "p"})).send().await.unwrap();
    }
    let m = a.metrics();
    for (class, reason) in [
        ("bad_request", "missing_parameter"),
        ("bad_request", "invalid_type"),
        ("bad_request", "out_of_range"),
        ("bad_request", "not_divisible"),
        ("bad_request", "model_not_found"),
        ("bad_request", "image_fetch_failed"),
        ("bad_request", "malformed_json"),
        ("unauthorized", "invalid_api_key"),
        ("payment_required", "insufficient_credits"),
        ("forbidden", "plan_required"),
        ("rate_limited", "queue_full"),
    ] {
        assert_eq!(error_count(&m, class, reason), 1.0, "{class}/{reason}\n{m}");
    }
    let generation = "/api/v6/images/text2img";
    assert_eq!(m.metric("modelslab_rate_limit_queue_limit").value(), Some(5.0));
    assert_eq!(
        m.metric("modelslab_rate_limit_retry_after_seconds_count")
            .label("endpoint", generation)
            .label("source", "proxy")
            .value(),
        Some(1.0)
    );
    assert_eq!(
        m.metric("modelslab_validation_errors_total")
            .label("endpoint", generation)
            .label("field", "width")
            .label("source", "proxy")
            .value(),
        Some(1.0)
    );
    assert_eq!(
        m.metric("modelslab_requests_total")
            .label("endpoint", generation)
            .label("http_status", "200")
            .label("model", "none")
            .label("outcome", "processing")
            .label("source", "proxy")
            .value(),
        Some(5.0)
    );
    a.stop().await;

    // Server-side classes, from the emulator's faults.
    for (faults, class, reason) in [
        (Faults { server_error: 1.0, ..Faults::default() }, "server_error", "internal_error"),
        (Faults { soft_error: 1.0, ..Faults::default() }, "server_error", "internal_error"),
        (Faults { unavailable: 1.0, ..Faults::default() }, "unavailable", "temporarily_unavailable"),
        (Faults { gateway_html: 1.0, ..Faults::default() }, "server_error", "non_json_body"),
    ] {
        let sim = emulator(Scenario { faults, ..Scenario::default() }).await;
        let base = sim.url.clone();
        let a = agent(&base, "", "").await;
        http()
            .post(format!("{}/api/v6/images/text2img", a.proxy))
            .json(&json!({"key": "k", "prompt": "p"}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_count(&a.metrics(), class, reason), 1.0, "{faults:?}");
        a.stop().await;
    }

    // The rest, from hand-made answers.
    let up = canned().await;
    let a = agent(&format!("http://{}", up.addr), "", "").await;
    let url = format!("{}/api/v6/images/text2img", a.proxy);
    for which in ["html-200", "no-status", "not-found", "teapot", "gzip-402"] {
        send(&url, which, json!({})).await.bytes().await.unwrap();
    }
    let m = a.metrics();
    assert_eq!(error_count(&m, "invalid_response", "non_json_body"), 1.0);
    assert_eq!(error_count(&m, "invalid_response", "other"), 1.0);
    assert_eq!(error_count(&m, "not_found", "other"), 1.0);
    assert_eq!(error_count(&m, "client_error", "other"), 1.0);
    assert_eq!(
        error_count(&m, "payment_required", "insufficient_credits"),
        1.0,
        "a gzip body is decoded to classify it"
    );
    a.stop().await;
}

#[tokio::test]
async fn requests_and_answers_pass_byte_for_byte() {
    let up = canned().await;
    let a = agent(&format!("http://{}", up.addr), "", "").await;

    // Request: method, path, query, headers (less hop-by-hop; Host rewritten) and body unchanged.
    let body = r#"{"key":"k","prompt":"a cat","model_id":"flux"}"#;
    let r = http()
        .put(format!("{}/api/v6/images/text2img?x=1&y=two", a.proxy))
        .header("x-canned", "echo")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["uri"], "/api/v6/images/text2img?x=1&y=two");
    assert_eq!(echo["body"], body);
    assert_eq!(echo["headers"]["x-custom"], "kept");
    assert_eq!(echo["headers"]["host"], up.addr.to_string());
    assert!(echo["headers"].get("x-hop").is_none() && echo["headers"].get("connection").is_none());

    // gzip answers arrive as they came (still compressed), with their headers.
    let r = send(&format!("{}/api/v6/images/text2img", a.proxy), "gzip-402", json!({})).await;
    assert_eq!((r.status().as_u16(), r.headers()["content-encoding"].to_str().unwrap()), (402, "gzip"));
    assert_eq!(&r.bytes().await.unwrap()[..], &gzip(CREDITS.as_bytes())[..]);

    // Chunked answers stay chunked and whole.
    let r = send(&format!("{}/api/v6/images/text2img", a.proxy), "chunked", json!({})).await;
    assert!(r.headers().get("content-length").is_none(), "streamed, not re-framed");
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["id"], "chunk-1");

    // 5 MiB answers pass whole and are still classified (within inspect_limit).
    let r = send(&format!("{}/api/v6/images/fetch/7", a.proxy), "big", json!({})).await;
    assert_eq!(&r.bytes().await.unwrap()[..], &big_body()[..]);

    // Streamed, not buffered: the first bytes arrive before the upstream has finished.
    let started = Instant::now();
    let mut r = send(&format!("{}/api/v6/images/text2img", a.proxy), "slow-stream", json!({})).await;
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"{\"status\":\"success\",");
    assert!(started.elapsed() < Duration::from_millis(1200), "first chunk after {:?}", started.elapsed());
    while r.chunk().await.unwrap().is_some() {}

    let m = a.metrics();
    assert_eq!(
        m.metric("modelslab_requests_total")
            .label("endpoint", "/api/v6/images/fetch/{id}")
            .label("http_status", "200")
            .label("model", "none")
            .label("outcome", "success")
            .label("source", "proxy")
            .value(),
        Some(1.0)
    );
    a.stop().await;
}

#[tokio::test]
async fn larger_and_non_json_answers_pass_uninspected_and_are_counted() {
    let up = canned().await;
    let a = agent(&format!("http://{}", up.addr), "  inspect_limit: 1KiB\n", "").await;
    let url = format!("{}/api/v6/images/text2img", a.proxy);
    assert_eq!(send(&url, "big", json!({})).await.bytes().await.unwrap().len(), big_body().len());
    assert_eq!(&send(&url, "png", json!({})).await.bytes().await.unwrap()[..4], b"\x89PNG");
    send(&url, "ndjson", json!({})).await.bytes().await.unwrap();
    // An event stream is read as it passes (this one ends without its terminator).
    send(&url, "sse", json!({})).await.bytes().await.unwrap();
    let m = a.metrics();
    for reason in ["too_large", "not_json", "stream"] {
        assert_eq!(
            m.metric("modelslab_proxy_uninspected_responses_total").label("reason", reason).value(),
            Some(1.0),
            "{reason}"
        );
    }
    assert_eq!(m.metric("modelslab_errors_total").label("reason", "stream_interrupted").value(), Some(1.0));
    assert_eq!(proxy_requests(&m), 4.0, "uninspected answers are still counted, by their status");
    a.stop().await;
}

#[tokio::test]
async fn jobs_are_followed_across_the_clients_fetch_polls() {
    let sim = emulator(Scenario {
        job_duration: Span::fixed(Duration::from_millis(600)),
        eta_bias: 0.5,
        ..Scenario::default()
    })
    .await;
    let base = sim.url.clone();
    let a = agent(&base, "", "labels:\n  models: [flux]\n").await;
    // Path form.
    let submit: Value = http()
        .post(format!("{}/api/v6/images/text2img", a.proxy))
        .json(&json!({"key": "k", "prompt": "p", "model_id": "flux"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submit["id"].as_u64().unwrap();
    // Body form (`request_id`), for a second job.
    let second: Value = http()
        .post(format!("{}/api/v6/images/text2img", a.proxy))
        .json(&json!({"key": "k", "prompt": "p", "model_id": "flux"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = a.metrics();
    assert_eq!(m.metric("modelslab_jobs_in_flight").label("source", "proxy").value(), Some(2.0));
    let every = Duration::from_millis(100);
    let f = poll_job(&format!("{}/api/v6/images/fetch/{id}", a.proxy), &json!({"key": "k"}), every, 50).await;
    assert_eq!(f["status"], "success");
    let by_body = json!({"key": "k", "request_id": second["id"]});
    assert_eq!(poll_job(&format!("{}/api/v6/images/fetch", a.proxy), &by_body, every, 50).await["status"], "success");
    let m = a.metrics();
    assert_eq!(
        m.metric("modelslab_jobs_total")
            .label("endpoint", "/api/v6/images/text2img")
            .label("model", "flux")
            .label("result", "success")
            .label("source", "proxy")
            .value(),
        Some(2.0),
        "{m}"
    );
    assert_eq!(m.metric("modelslab_jobs_in_flight").label("source", "proxy").value(), Some(0.0));
    let ratio_sum = m
        .metric("modelslab_job_eta_ratio_sum")
        .label("endpoint", "/api/v6/images/text2img")
        .label("source", "proxy")
        .value()
        .unwrap();
    assert!(ratio_sum > 3.0, "eta_bias 0.5 makes jobs take about twice their eta: sum {ratio_sum}");
    // Fetches are labelled with their job's model.
    assert!(
        m.metric("modelslab_requests_total")
            .label("endpoint", "/api/v6/images/fetch/{id}")
            .label("model", "flux")
            .label("outcome", "processing")
            .sum()
            > 0.0,
        "{m}"
    );
    a.stop().await;
}

#[tokio::test]
async fn unfinished_jobs_expire_and_the_oldest_are_evicted() {
    let sim = emulator(Scenario { job_duration: Span::fixed(Duration::from_secs(60)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let a = agent(&base, "", "jobs:\n  ttl: 1s\n  max_tracked: 2\n").await;
    for _ in 0..3 {
        http()
            .post(format!("{}/api/v6/images/text2img", a.proxy))
            .json(&json!({"key": "sim-premium", "prompt": "p"}))
            .send()
            .await
            .unwrap();
    }
    let m = a.metrics();
    assert_eq!(
        m.metric("modelslab_jobs_total")
            .label("endpoint", "/api/v6/images/text2img")
            .label("model", "none")
            .label("result", "evicted")
            .label("source", "proxy")
            .value(),
        Some(1.0)
    );
    common::eventually(Duration::from_secs(5), "the other two expire", async || {
        a.metrics()
            .metric("modelslab_jobs_total")
            .label("endpoint", "/api/v6/images/text2img")
            .label("model", "none")
            .label("result", "expired")
            .label("source", "proxy")
            .value()
            == Some(2.0)
    })
    .await;
    assert_eq!(a.metrics().metric("modelslab_jobs_in_flight").label("source", "proxy").value(), Some(0.0));
    a.stop().await;
}

/// Asserts the answer is the proxy's own, in the API's shape, with status `want`.
async fn assert_synthetic(r: reqwest::Response, want: u16) {
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.text().await.unwrap();
    assert_eq!(status, want, "{body}");
    assert_eq!(headers["x-modelslab-sentinel"], "synthetic");
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["status"], "error");
    assert!(j["message"].as_str().unwrap().len() > 10);
}

/// Submits a generation through the proxy.
async fn generate(proxy: &str, body: Value) -> reqwest::Response {
    http().post(format!("{proxy}/api/v6/images/text2img")).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn synthetic_answers_for_timeouts_unreachable_resets_and_large_bodies() {
    // Upstream timeout → 504, recorded as a timeout with no upstream status.
    let sim = emulator(Scenario { faults: Faults { timeout: 1.0, ..Faults::default() }, ..Scenario::default() }).await;
    let base = sim.url.clone();
    let a = agent(&base, "  upstream_timeout: 300ms\n", "").await;
    assert_synthetic(generate(&a.proxy, json!({"key": "k", "prompt": "p"})).await, 504).await;
    let m = a.metrics();
    assert_eq!(
        m.metric("modelslab_proxy_synthetic_responses_total").label("reason", "upstream_timeout").value(),
        Some(1.0)
    );
    assert_eq!(
        m.metric("modelslab_errors_total").label("error_class", "timeout").label("http_status", "none").sum(),
        1.0,
        "{m}"
    );
    assert_eq!(m.metric("modelslab_requests_total").label("http_status", "504").count(), 0, "never an upstream 504");
    a.stop().await;

    // Reset before any answer → 502, transport.
    let sim = emulator(Scenario { faults: Faults { reset: 1.0, ..Faults::default() }, ..Scenario::default() }).await;
    let base = sim.url.clone();
    let a = agent(&base, "", "").await;
    assert_synthetic(generate(&a.proxy, json!({"key": "k", "prompt": "p"})).await, 502).await;
    let m = a.metrics();
    assert_eq!(
        m.metric("modelslab_proxy_synthetic_responses_total").label("reason", "upstream_unreachable").value(),
        Some(1.0)
    );
    assert_eq!(
        m.metric("modelslab_errors_total").label("error_class", "transport").label("http_status", "none").sum(),
        1.0
    );
    assert_eq!(m.metric("modelslab_requests_total").label("http_status", "502").count(), 0, "never an upstream 502");
    a.stop().await;

    // Unreachable upstream → 502.
    let port = common::free_port(); // nothing listens there
    let a = agent(&format!("http://127.0.0.1:{port}"), "  max_request_body: 1KiB\n", "").await;
    assert_synthetic(generate(&a.proxy, json!({"key": "k"})).await, 502).await;

    // Bodies over max_request_body → 413, declared or chunked.
    let big = "x".repeat(2048);
    let r = http().post(format!("{}/api/v6/images/text2img", a.proxy)).body(big.clone()).send().await.unwrap();
    assert_synthetic(r, 413).await;
    let up = canned().await;
    let b = agent(&format!("http://{}", up.addr), "  max_request_body: 1KiB\n", "").await;
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big[..1000].to_owned()), Ok(big[1000..].to_owned())];
    let r = http()
        .post(format!("{}/api/v6/images/text2img", b.proxy))
        .header("x-canned", "echo")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_synthetic(r, 413).await;
    assert_eq!(
        b.metrics().metric("modelslab_proxy_synthetic_responses_total").label("reason", "body_too_large").value(),
        Some(1.0)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn it_is_not_an_open_proxy() {
    let up = canned().await;
    let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let contacted = Arc::new(AtomicUsize::new(0));
    let c = contacted.clone();
    tokio::spawn(async move {
        while elsewhere.accept().await.is_ok() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let a = agent(&format!("http://{}", up.addr), "", "").await;

    let connect =
        raw_http(&a.proxy, format!("CONNECT {elsewhere_addr} HTTP/1.1\r\nHost: {elsewhere_addr}\r\n\r\n").as_bytes())
            .await;
    assert!(connect.starts_with("HTTP/1.1 400") && connect.contains("x-modelslab-sentinel: synthetic"), "{connect}");
    let absolute = raw_http(&a.proxy, format!("GET http://{elsewhere_addr}/api/v6/images/text2img HTTP/1.1\r\nHost: {elsewhere_addr}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    // A Host header naming another host is forwarded to the configured upstream only.
    let tricked = raw_http(&a.proxy, format!("GET /api/v6/images/text2img HTTP/1.1\r\nHost: {elsewhere_addr}\r\nx-canned: echo\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(tricked.starts_with("HTTP/1.1 200") && tricked.contains(&format!("\"host\":\"{}\"", up.addr)), "{tricked}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(contacted.load(Ordering::SeqCst), 0, "the other host was never contacted");
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        a.metrics().metric("modelslab_proxy_synthetic_responses_total").label("reason", "rejected").value(),
        Some(2.0)
    );
    a.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let up = canned().await;
    let a = agent(&format!("http://{}", up.addr), "", "").await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let err = client
        .post(format!("{}/api/v6/images/text2img", a.proxy))
        .header("x-canned", "hang")
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let cancelled = tokio::time::timeout(Duration::from_secs(5), up.cancelled.lock().await.recv()).await;
    assert!(matches!(cancelled, Ok(Some(()))), "the upstream request was not cancelled");
    a.stop().await;
}

#[tokio::test]
async fn two_thousand_concurrent_mixed_requests_are_all_counted() {
    let sim = emulator(Scenario {
        job_duration: Span::fixed(Duration::from_millis(200)),
        faults: Faults { server_error: 0.05, soft_error: 0.05, reset: 0.02, gateway_html: 0.03, ..Faults::default() },
        ..Scenario::default()
    })
    .await;
    let base = sim.url.clone();
    let a = agent(&base, "", "").await;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(2000).timeout(Duration::from_secs(30)).build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..2000u32 {
        let (client, proxy) = (client.clone(), a.proxy.clone());
        tasks.push(tokio::spawn(async move {
            let (path, body) = match i % 5 {
                0 => ("/api/v6/images/text2img", json!({"key": format!("k{i}"), "prompt": "p"})),
                1 => ("/api/v6/images/text2img", json!({"key": "k", "model_id": "flux"})),
                2 => ("/api/v6/images/text2img", json!({"key": "sim-broke", "prompt": "p"})),
                3 => ("/api/v6/images/fetch/12345", json!({"key": "k"})),
                _ => ("/api/v7/images/text-to-image", json!({"key": format!("v{i}"), "prompt": "p", "width": 512})),
            };
            client.post(format!("{proxy}{path}")).json(&body).send().await.map(|r| r.status().as_u16())
        }));
    }
    let mut answered = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            answered += 1;
        }
    }
    assert_eq!(answered, 2000, "every request got an answer");
    common::eventually(Duration::from_secs(5), "all 2000 requests counted", async || {
        proxy_requests(&a.metrics()) == 2000.0
    })
    .await;
    a.stop().await;
}

#[tokio::test]
async fn opt_ins_rewrite_fetch_result_and_retry_rate_limited() {
    let sim =
        emulator(Scenario { job_duration: Span::fixed(Duration::from_millis(1200)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let a =
        agent(&base, "  rewrite_fetch_result: true\n  retry_rate_limited: { enabled: true, max_wait: 5s }\n", "").await;
    let url = format!("{}/api/v6/images/text2img", a.proxy);
    let r = http().post(&url).json(&json!({"key": "rl", "prompt": "p"})).send().await.unwrap();
    let declared: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(declared, text.len(), "Content-Length fixed");
    let j: Value = serde_json::from_str(&text).unwrap();
    let id = j["id"].as_u64().unwrap();
    assert_eq!(j["fetch_result"], format!("{}/api/v6/images/fetch/{id}", a.proxy));
    // Fill the key's queue (5), then the 6th is held until a slot frees, and succeeds.
    for _ in 0..4 {
        http().post(&url).json(&json!({"key": "rl", "prompt": "p"})).send().await.unwrap();
    }
    let started = Instant::now();
    let r = http().post(&url).json(&json!({"key": "rl", "prompt": "p"})).send().await.unwrap();
    assert_eq!(r.status(), 200, "held and retried instead of a 429");
    assert!(started.elapsed() >= Duration::from_millis(500));
    let m = a.metrics();
    assert!(m.metric("modelslab_proxy_rate_limit_retries_total").value().unwrap() >= 1.0);
    assert_eq!(
        error_count(&m, "rate_limited", "queue_full"),
        m.metric("modelslab_proxy_rate_limit_retries_total").value().unwrap(),
        "each 429 seen is still counted"
    );
    a.stop().await;
}

#[tokio::test]
async fn reloaded_settings_apply_to_new_requests() {
    let sim = emulator(Scenario { latency: Span::fixed(Duration::from_millis(400)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let a = agent(&base, "  upstream_timeout: 5s\n", "").await;
    let before =
        http().post(format!("{}/api/v6/images/text2img", a.proxy)).json(&json!({"key": "k"})).send().await.unwrap();
    assert_eq!(before.status(), 400, "answered within the 5 s timeout");
    assert_eq!(a.reload(&a.text.replace("upstream_timeout: 5s", "upstream_timeout: 100ms")).await, Ok(()));
    let after =
        http().post(format!("{}/api/v6/images/text2img", a.proxy)).json(&json!({"key": "k"})).send().await.unwrap();
    assert_eq!(after.status(), 504, "the reloaded 100 ms timeout applies to the next request");
    a.stop().await;
}
