//! OTLP export into real receivers built on `opentelemetry-proto` (a tonic gRPC server and an
//! HTTP `/v1/traces` endpoint): span names, parent/child structure, links, attributes, the
//! caller's trace continued, secrets absent from the exported bytes, and a collector that is down
//! slowing nothing.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

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

async fn http_receiver() -> (String, Received, DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(t.cancelled_owned()).await.unwrap() });
    (format!("http://{addr}"), received, token.drop_guard())
}

fn agent(base: &str, otlp: &str, protocol: &str) -> (Process, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "upstream:\n  base_url: {base}\n  api_key: {KEY}\nadmin:\n  listen: 127.0.0.1:0\nproxy:\n  enabled: true\n  listen: 127.0.0.1:0\n\
         probes:\n  - name: gen\n    interval: 1h\n    timeout: 30s\n    request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux, prompt: \"{PROMPT}\" }} }}\n\
         \x20   follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 200ms, max_wait: 10s }}\n\
         telemetry:\n  service_name: sentinel-under-test\n  otlp:\n    endpoint: \"{otlp}\"\n    protocol: {protocol}\n    headers: {{ x-vendor-token: tok-123 }}\n"
    );
    let path = write(dir.path(), "sentinel.yaml", &cfg);
    let p = Process::start(&["run", "--config", &path], &[]);
    let admin = format!("http://{}", p.admin_addr());
    let proxy = format!("http://{}", p.wait_for_log("proxy listening on http://", Duration::from_secs(10)));
    (p, admin, proxy, dir)
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
    let (base, _sim) =
        emulator(Scenario { job_duration: SimSpan::fixed(Duration::from_millis(300)), ..Scenario::default() }).await;
    let (otlp, received, _rx) = grpc_receiver().await;
    let (mut agent, admin, proxy, _dir) = agent(&base, &otlp, "grpc");

    // A probe run with a job to follow.
    let (code, report) = post(&format!("{admin}/api/v1/probes/gen/run"), "").await;
    assert_eq!(code, 200, "{report}");
    assert!(report.contains("\"success\":true"), "{report}");

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
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let f: serde_json::Value = c
            .post(format!("{proxy}/api/v6/images/fetch/{id}"))
            .json(&json!({"key": KEY}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if f["status"] == "success" {
            break;
        }
    }
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
async fn spans_over_http_protobuf() {
    let (base, _sim) =
        emulator(Scenario { job_duration: SimSpan::fixed(Duration::from_millis(300)), ..Scenario::default() }).await;
    let (otlp, received, _rx) = http_receiver().await;
    let (mut agent, admin, _proxy, _dir) = agent(&base, &otlp, "http/protobuf");
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
    let (base, _sim) =
        emulator(Scenario { job_duration: SimSpan::fixed(Duration::from_millis(300)), ..Scenario::default() }).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (with_dead, admin, proxy, _d1) = agent(&base, &dead, "grpc");
    let (_without, _, proxy_plain, _d2) = agent(&base, "", "grpc");
    // Warm both, then measure side by side.
    proxy_latencies(&proxy, 5).await;
    proxy_latencies(&proxy_plain, 5).await;
    let dead_median = median(proxy_latencies(&proxy, 40).await);
    let plain_median = median(proxy_latencies(&proxy_plain, 40).await);
    assert!(
        dead_median <= plain_median * 3 + Duration::from_millis(20),
        "collector down: {dead_median:?} vs {plain_median:?}"
    );
    // The probe still runs on demand at once, and failed exports are counted.
    let started = Instant::now();
    assert_eq!(post(&format!("{admin}/api/v1/probes/gen/run"), "").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually(Duration::from_secs(20), "dropped spans are counted", async || {
        sample(&get(&format!("{admin}/metrics")).await.1, "modelslab_sentinel_trace_spans_dropped_total")
            .is_some_and(|n| n > 0.0)
    })
    .await;
    let warnings = with_dead.log().matches("cannot export traces").count();
    assert_eq!(warnings, 1, "warned once, not on every batch:\n{}", with_dead.log());
}
