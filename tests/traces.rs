//! OTLP export into real receivers built on `opentelemetry-proto` (a tonic gRPC server and an
//! HTTP `/v1/traces` endpoint): span names, parent/child structure, links, attributes, the
//! caller's trace continued, secrets absent from the exported bytes, and a collector that is down
//! slowing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use modelslab_sentinel::sim::{Scenario, Span as SimSpan};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};

const KEY: &str = "sk-canary-trace-4b7f10";
const PROMPT: &str = "a canary prompt for traces";

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    fn spans(&self) -> Vec<Span> {
        let all = self.0.lock().unwrap();
        all.iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().iter().flat_map(|r| r.encode_to_vec()).collect()
    }

    fn service_names(&self) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.iter()
            .flat_map(|r| r.resource_spans.iter())
            .filter_map(|rs| rs.resource.as_ref())
            .flat_map(|r| r.attributes.iter())
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn grpc_receiver() -> (String, Received, DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let token = CancellationToken::new();
    let (svc, t) = (TraceServiceServer::new(received.clone()), token.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), t.cancelled_owned())
            .await
            .unwrap();
    });
    (format!("http://{addr}"), received, token.drop_guard())
}

async fn http_receiver() -> (String, Received, Served) {
    let received = Received::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                r.0.lock().unwrap().push(ExportTraceServiceRequest::decode(body).unwrap());
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse { partial_success: None }.encode_to_vec(),
                )
            }
        }),
    );
    let server = serve(app).await;
    (server.url.clone(), received, server)
}

fn agent(base: &str, otlp: &str, protocol: &str) -> AgentProcess {
    let cfg = format!(
        "upstream:\n  base_url: {base}\n  api_key: {KEY}\nproxy:\n  enabled: true\n\
         probes:\n  - name: gen\n    interval: 1h\n    timeout: 30s\n    request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux, prompt: \"{PROMPT}\" }} }}\n\
         \x20   follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 200ms, max_wait: 10s }}\n\
         telemetry:\n  service_name: sentinel-under-test\n  otlp:\n    endpoint: \"{otlp}\"\n    protocol: {protocol}\n    headers: {{ x-vendor-token: tok-123 }}\n"
    );
    Process::agent(&cfg, &[], &[])
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_and_proxy_spans_over_grpc() {
    let sim =
        emulator(Scenario { job_duration: SimSpan::fixed(Duration::from_millis(300)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let (otlp, received, _rx) = grpc_receiver().await;
    let running = agent(&base, &otlp, "grpc");
    let (admin, proxy, mut agent) = (running.admin, running.proxy, running.process);

    // A probe run with a job to follow.
    let (code, report) = post(&format!("{admin}/api/v1/probes/gen/run"), "").await;
    assert_eq!(code, 200, "{report}");
    assert!(report.contains("\"result\":\"success\""), "{report}");

    // A proxied generation continuing the caller's trace, then its fetch polls to the end.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let c = http();
    let submitted: serde_json::Value = c
        .post(format!("{proxy}/api/v6/images/text2img"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("key", KEY)
        .json(&json!({"key": KEY, "model_id": "flux", "prompt": PROMPT}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_u64().unwrap();
    let done =
        poll_job(&format!("{proxy}/api/v6/images/fetch/{id}"), &json!({"key": KEY}), Duration::from_millis(150), 30)
            .await;
    assert_eq!(done["status"], "success");
    // An error answer gets an error status.
    c.post(format!("{proxy}/api/v6/images/text2img"))
        .json(&json!({"key": "sim-broke-x", "prompt": PROMPT}))
        .send()
        .await
        .unwrap();

    // Shutdown flushes what is pending.
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let spans = received.spans();
    assert!(received.service_names().iter().all(|s| s == "sentinel-under-test"));

    // Probe: a root `probe gen` with a client span per exchange.
    let root = spans.iter().find(|s| s.name == "probe gen").expect("a `probe gen` span");
    assert!(root.parent_span_id.is_empty(), "the probe run is a trace of its own");
    let children: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == root.span_id).collect();
    assert!(children.len() >= 2, "submit and at least one fetch: {}", children.len());
    let submit = children.iter().find(|s| attr(s, "url.path").as_deref() == Some("/api/v6/images/text2img")).unwrap();
    assert_eq!(submit.name, "POST");
    assert_eq!(submit.kind, SpanKind::Client as i32);
    assert_eq!(submit.trace_id, root.trace_id);
    for (k, v) in [
        ("http.request.method", "POST"),
        ("server.address", "127.0.0.1"),
        ("http.response.status_code", "200"),
        ("gen_ai.operation.name", "generate_content"),
        ("gen_ai.provider.name", "modelslab"),
        ("gen_ai.request.model", "flux"),
        ("modelslab.source", "probe"),
        ("modelslab.api.status", "processing"),
    ] {
        assert_eq!(attr(submit, k).as_deref(), Some(v), "{k}");
    }
    assert!(attr(submit, "modelslab.eta_s").is_some() && attr(submit, "modelslab.job.id").is_some());
    let fetch =
        children.iter().find(|s| attr(s, "url.path").is_some_and(|p| p.starts_with("/api/v6/images/fetch/"))).unwrap();
    assert!(fetch.links.iter().any(|l| l.span_id == submit.span_id), "a job's poll links to its submission");
    assert_eq!(attr(root, "modelslab.probe.name").as_deref(), Some("gen"));

    // Proxy: a server span continuing the caller's trace, with a client span for the upstream call.
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32 && hex(&s.trace_id) == trace_id)
        .expect("the proxied request continues the caller's trace");
    assert_eq!(hex(&server.parent_span_id), caller_span);
    assert_eq!(server.name, "POST /api/v6/images/text2img");
    let upstream =
        spans.iter().find(|s| s.parent_span_id == server.span_id).expect("a client span for the upstream call");
    assert_eq!(
        (upstream.kind, attr(upstream, "modelslab.source").as_deref()),
        (SpanKind::Client as i32, Some("proxy"))
    );
    assert_eq!(attr(upstream, "gen_ai.request.model").as_deref(), Some("flux"));
    let completion = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32 && s.name == "POST /api/v6/images/fetch/{id}")
        .find(|s| !s.links.is_empty())
        .unwrap_or_else(|| {
            let servers: Vec<(String, usize, String)> = spans
                .iter()
                .filter(|s| s.kind == SpanKind::Server as i32)
                .map(|s| {
                    (
                        s.name.clone(),
                        s.links.len(),
                        format!("{:?}", s.attributes.iter().map(|a| a.key.clone()).collect::<Vec<_>>()),
                    )
                })
                .collect();
            panic!("no fetch span links to the submission: {servers:?}")
        });
    assert!(completion.links.iter().any(|l| l.span_id == server.span_id), "completion links to the submission span");
    let broke = spans
        .iter()
        .find(|s| attr(s, "error.type").as_deref() == Some("payment_required") && s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(broke.status.as_ref().unwrap().code, 2, "span status error");
    assert_eq!(attr(broke, "modelslab.error.reason").as_deref(), Some("insufficient_credits"));

    // Nothing secret or private in any exported byte.
    let bytes = received.bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(KEY), "the key was exported");
    assert!(!text.contains(PROMPT), "the prompt was exported");
    assert!(!text.contains("tok-123"), "the collector token was exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_exchanges_carry_the_genai_attributes() {
    let sim = emulator(Scenario::default()).await;
    let (otlp, received, _rx) = grpc_receiver().await;
    let running = agent(&sim.url, &otlp, "grpc");
    let (proxy, mut agent) = (running.proxy, running.process);
    let c = http();
    // An LLM chat, streamed, with the key in both places the LLM API takes it.
    let chat = json!({"model": "claude-sonnet", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": PROMPT}]});
    let streamed = c
        .post(format!("{proxy}/api/v7/llm/v1/messages"))
        .header("x-api-key", KEY)
        .bearer_auth(KEY)
        .json(&chat)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(streamed.contains("message_stop"), "{streamed}");

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let spans = received.spans();
    let llm = spans
        .iter()
        .find(|s| {
            s.kind == SpanKind::Client as i32 && attr(s, "url.path").as_deref() == Some("/api/v7/llm/v1/messages")
        })
        .expect("a client span of the LLM call");
    for (k, v) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.output.type", "text"),
        ("gen_ai.request.model", "claude-sonnet"),
        ("gen_ai.response.model", "claude-sonnet"),
        ("gen_ai.usage.output_tokens", "12"),
        ("gen_ai.response.finish_reasons", "end_turn"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(attr(llm, k).as_deref(), Some(v), "{k}");
    }
    assert!(attr(llm, "gen_ai.usage.input_tokens").is_some_and(|n| n.parse::<u64>().unwrap() > 0));
    let text = String::from_utf8_lossy(&received.bytes()).into_owned();
    assert!(!text.contains(KEY) && !text.contains(PROMPT), "the key or the prompt was exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_http_protobuf() {
    let sim =
        emulator(Scenario { job_duration: SimSpan::fixed(Duration::from_millis(300)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let (otlp, received, _rx) = http_receiver().await;
    let running = agent(&base, &otlp, "http/protobuf");
    let (admin, mut agent) = (running.admin, running.process);
    assert_eq!(post(&format!("{admin}/api/v1/probes/gen/run"), "").await.0, 200);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(received.spans().iter().any(|s| s.name == "probe gen"), "spans arrive at /v1/traces");
    assert!(!String::from_utf8_lossy(&received.bytes()).contains(KEY));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn proxy_latencies(proxy: &str, n: usize) -> Vec<Duration> {
    let c = http();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        c.post(format!("{proxy}/api/v6/images/text2img"))
            .json(&json!({"key": "k", "model_id": "flux"}))
            .send()
            .await
            .unwrap();
        out.push(t.elapsed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_slows_nothing() {
    let sim =
        emulator(Scenario { job_duration: SimSpan::fixed(Duration::from_millis(300)), ..Scenario::default() }).await;
    let base = sim.url.clone();
    let dead = format!("http://127.0.0.1:{}", free_port()); // nothing listens there
    let with_dead = agent(&base, &dead, "grpc");
    let without = agent(&base, "", "grpc");
    let (admin, proxy, proxy_plain) = (&with_dead.admin, &with_dead.proxy, &without.proxy);
    // Warm both, then measure side by side.
    proxy_latencies(proxy, 5).await;
    proxy_latencies(proxy_plain, 5).await;
    let dead_median = median(proxy_latencies(proxy, 40).await);
    let plain_median = median(proxy_latencies(proxy_plain, 40).await);
    assert!(
        dead_median <= plain_median * 3 + Duration::from_millis(20),
        "collector down: {dead_median:?} vs {plain_median:?}"
    );
    // The probe still runs on demand at once, and failed exports are counted.
    let started = Instant::now();
    assert_eq!(post(&format!("{admin}/api/v1/probes/gen/run"), "").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually(Duration::from_secs(20), "dropped spans are counted", async || {
        scrape(admin).await.metric("modelslab_sentinel_trace_spans_dropped_total").value().is_some_and(|n| n > 0.0)
    })
    .await;
    let log = with_dead.process.log();
    let warnings = log.matches("cannot export traces").count();
    assert_eq!(warnings, 1, "warned once, not on every batch:\n{log}");
}

/// Every answer the proxy makes itself is recorded on the request's server span: its status,
/// `error.type` = the synthetic reason, and an error status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_synthetic_answer_has_its_server_span() {
    let slow = emulator(Scenario { latency: SimSpan::fixed(Duration::from_secs(2)), ..Scenario::default() }).await;
    let (otlp, received, _rx) = grpc_receiver().await;
    let proxy = |upstream: &str, extra: &str| {
        let cfg = format!(
            "upstream:\n  base_url: {upstream}\nproxy:\n  enabled: true\n  upstream_timeout: 300ms\n  max_request_body: 1KiB\n{extra}\
             telemetry:\n  otlp:\n    endpoint: \"{otlp}\"\n"
        );
        Process::agent(&cfg, &[], &[])
    };
    let streaming = proxy(&slow.url, "");
    let unreachable = proxy(&format!("http://127.0.0.1:{}", free_port()), "");
    let buffering = proxy(&slow.url, "  retry_rate_limited: { enabled: true, max_wait: 5s }\n");

    let big = "x".repeat(2048);
    let chunked = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{big}\r\n0\r\n\r\n"
        )
    };
    let (streaming_url, unreachable_url, buffering_url) =
        (streaming.proxy.clone(), unreachable.proxy.clone(), buffering.proxy.clone());
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (&streaming_url, "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n".into(), 400, "rejected"),
        (
            &streaming_url,
            "GET http://elsewhere.invalid/api/case-absolute HTTP/1.1\r\nHost: elsewhere.invalid\r\nConnection: close\r\n\r\n".into(),
            400,
            "rejected",
        ),
        (
            &streaming_url,
            "POST /api/case-declared HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nConnection: close\r\n\r\n".into(),
            413,
            "body_too_large",
        ),
        (&streaming_url, chunked("/api/case-chunked"), 413, "body_too_large"),
        (
            &streaming_url,
            "POST /api/case-timeout HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".into(),
            504,
            "upstream_timeout",
        ),
        (
            &unreachable_url,
            "POST /api/case-unreachable HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".into(),
            502,
            "upstream_unreachable",
        ),
        (&buffering_url, chunked("/api/case-held-chunked"), 413, "body_too_large"),
        (
            &buffering_url,
            "POST /api/case-unreadable HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nab"
                .into(),
            400,
            "rejected",
        ),
    ];
    for (proxy, request, status, _) in &cases {
        let mut stream = tokio::net::TcpStream::connect(proxy.trim_start_matches("http://")).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
        if request.ends_with("ab") {
            // A body cut off mid-chunk: the client goes quiet, then closes its side.
            tokio::io::AsyncWriteExt::shutdown(&mut stream).await.unwrap();
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{request:?} → {answer}");
        assert!(answer.contains("x-modelslab-sentinel: synthetic"), "{answer}");
    }
    for agent in [streaming, unreachable, buffering] {
        let mut p = agent.process;
        p.signal("TERM");
        assert_eq!(p.wait_exit(Duration::from_secs(20)).code(), Some(0));
    }
    let spans = received.spans();
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Server as i32).collect();
    for (_, request, status, reason) in &cases {
        let path = request.split_whitespace().nth(1).unwrap();
        let method = request.split_whitespace().next().unwrap();
        let span = servers
            .iter()
            .find(|s| {
                attr(s, "http.request.method").as_deref() == Some(method)
                    && (method == "CONNECT"
                        || attr(s, "url.path").as_deref() == Some(path.trim_start_matches("http://elsewhere.invalid")))
            })
            .unwrap_or_else(|| panic!("no server span for {method} {path}"));
        assert_eq!(attr(span, "http.response.status_code"), Some(status.to_string()), "{method} {path}");
        assert_eq!(attr(span, "error.type").as_deref(), Some(*reason), "{method} {path}");
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2), "{method} {path}: error status");
    }
}
