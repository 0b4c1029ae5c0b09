//! The live-traffic proxy (SPEC §6): a transparent reverse proxy to `upstream.base_url` that
//! classifies every answer without changing it. Bytes stream in both directions; a bounded copy
//! of each answer is classified when it ends. Jobs are followed across the client's own fetch
//! polls. When the proxy must answer itself (timeout, unreachable upstream, body too large,
//! refused request) the answer has the API's shape and the `x-modelslab-sentinel: synthetic`
//! header.
//!
//! Only the configured upstream is ever contacted; the request's `Host` is never used for routing.
//! Nothing here logs a header value, a body or a query string.

mod body;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use body::{BoxError, End, Finish, RequestSeen, RequestTap, ResponseTap};

use crate::classify::{self, ApiStatus, Classification, Context, ErrorClass, Failure, Outcome, Reason, RequestKind};
use crate::config::Config;
use crate::jobs::{JobTracker, Tracked};
use crate::metrics::{Exchange, JobResult, Metrics, Source, SyntheticReason, UninspectedReason};

/// The body type the proxy answers with.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// The header on every answer the proxy makes itself.
pub const SYNTHETIC_HEADER: &str = "x-modelslab-sentinel";
/// How much of a request body is kept to read `model_id` and `request_id`.
const REQUEST_HEAD: usize = 64 * 1024;
/// Largest request header block accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The proxy component.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: watch::Receiver<Arc<Config>>,
    metrics: Arc<Metrics>,
    jobs: Arc<JobTracker>,
    client: UpstreamClient,
    local: SocketAddr,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy listener has no local address: {0}")]
    Listener(std::io::Error),
}

impl Proxy {
    /// A proxy for connections accepted on `listener` (bound by the caller).
    pub fn new(
        listener: &TcpListener,
        config: watch::Receiver<Arc<Config>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ProxyError> {
        let local = listener.local_addr().map_err(ProxyError::Listener)?;
        let jobs_cfg = config.borrow().jobs.clone();
        let jobs = Arc::new(JobTracker::new(Source::Proxy, metrics.clone(), jobs_cfg.ttl, jobs_cfg.max_tracked));
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(4096)
            .build(https);
        Ok(Proxy { inner: Arc::new(Inner { config, metrics, jobs, client, local }) })
    }

    /// The jobs the proxy follows.
    pub fn jobs(&self) -> &Arc<JobTracker> {
        &self.inner.jobs
    }

    /// Accepts connections until `shutdown`; in-flight requests finish on their connection
    /// tasks, which `tracker` tracks (the app waits for them with its grace period).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken, tracker: TaskTracker) {
        let max = self.inner.config.borrow().proxy.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        tracker.spawn(self.clone().expire_jobs(shutdown.clone()));
        tracker.spawn(self.clone().follow_config(shutdown.clone()));
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let (stream, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy: accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().max_buf_size(MAX_HEADER_BYTES).timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
                builder.http2().max_header_list_size(MAX_HEADER_BYTES as u32);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(%remote, error = %e, "proxy connection ended with an error"); } return; }
                    _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
        tracing::info!("proxy stopped accepting");
    }

    async fn expire_jobs(self, shutdown: CancellationToken) {
        // Often enough that a job is counted expired within a quarter of the TTL after it.
        let ttl = self.inner.config.borrow().jobs.ttl;
        let mut tick = tokio::time::interval((ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => { self.inner.jobs.expire(Instant::now()); }
            }
        }
    }

    async fn follow_config(self, shutdown: CancellationToken) {
        let mut rx = self.inner.config.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = rx.changed() => {
                    if changed.is_err() { return; }
                    let jobs = rx.borrow_and_update().jobs.clone();
                    self.inner.jobs.set_limits(jobs.ttl, jobs.max_tracked);
                }
            }
        }
    }

    /// Handles one request; never fails (failures become synthetic answers).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let config = self.inner.config.borrow().clone();
        let endpoint = self.inner.metrics.endpoint_label(req.uri().path());
        let server = crate::trace::server_span(req.method().as_str(), req.uri().path(), &endpoint, req.headers());
        if let Some(why) = self.refusal(&req, &config) {
            crate::trace::record_server(&server, 400, Some("rejected"));
            return self.synthetic(StatusCode::BAD_REQUEST, SyntheticReason::Rejected, why);
        }
        let max_body = config.proxy.max_request_body.as_u64();
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            crate::trace::record_server(&server, 413, Some("body_too_large"));
            return self.synthetic(
                StatusCode::PAYLOAD_TOO_LARGE,
                SyntheticReason::BodyTooLarge,
                "Request body too large for the proxy (proxy.max_request_body)",
            );
        }

        let (parts, incoming) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let kind = if is_fetch_path(&path) { RequestKind::Fetch } else { RequestKind::Submit };
        let seen = Arc::new(RequestSeen::default());
        let tap = RequestTap::new(incoming, max_body, REQUEST_HEAD, seen.clone());
        let exchange = Pending::new(self.clone(), &parts, path, endpoint, kind, seen.clone(), config.clone(), server);

        let retry = &config.proxy.retry_rate_limited;
        if retry.enabled {
            // Held requests are replayed, so their body is read first (within the limit).
            let body = match tap.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) if seen.too_large.load(Ordering::Acquire) => {
                    return self.synthetic(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        SyntheticReason::BodyTooLarge,
                        "Request body too large for the proxy (proxy.max_request_body)",
                    );
                }
                Err(_) => {
                    return self.synthetic(
                        StatusCode::BAD_REQUEST,
                        SyntheticReason::Rejected,
                        "The request body could not be read",
                    );
                }
            };
            return self.forward_with_retries(parts, body, exchange, retry.max_wait).await;
        }
        let upstream_req = match self.upstream_request(&parts, tap.boxed(), &config) {
            Ok(r) => r,
            Err(why) => return self.synthetic(StatusCode::BAD_REQUEST, SyntheticReason::Rejected, why),
        };
        self.forward(upstream_req, exchange).await
    }

    /// Why a request must not be forwarded, if it must not.
    fn refusal(&self, req: &Request<Incoming>, config: &Config) -> Option<&'static str> {
        if req.method() == Method::CONNECT {
            return Some("CONNECT is not supported: this proxy only forwards to its configured API");
        }
        if let Some(authority) = req.uri().authority() {
            let upstream = &config.upstream.base_url;
            let port = authority.port_u16().unwrap_or(if req.uri().scheme_str() == Some("https") { 443 } else { 80 });
            let upstream_itself = upstream.host_str().is_some_and(|h| h.eq_ignore_ascii_case(authority.host()))
                && upstream.port_or_known_default() == Some(port);
            let ours = authority.as_str() == self.inner.local.to_string();
            if !upstream_itself && !ours {
                return Some(
                    "Absolute URLs naming another host are refused: this proxy only forwards to its configured API",
                );
            }
        }
        None
    }

    fn upstream_request(
        &self,
        parts: &http::request::Parts,
        body: ProxyBody,
        config: &Config,
    ) -> Result<Request<ProxyBody>, &'static str> {
        let base = &config.upstream.base_url;
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("{}{}", base.as_str().trim_end_matches('/'), path_and_query)
            .parse()
            .map_err(|_| "The request path is not valid")?;
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        let host = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        headers.insert(header::HOST, HeaderValue::from_str(&host).map_err(|_| "bad upstream host")?);
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(body)
            .map_err(|_| "The request could not be rebuilt")?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    /// Sends one request upstream and streams the answer back, classifying it as it ends.
    async fn forward(&self, req: Request<ProxyBody>, exchange: Pending) -> Response<ProxyBody> {
        let timeout = exchange.config.proxy.upstream_timeout;
        let response =
            match tokio::time::timeout(timeout, self.inner.client.request(req).instrument(exchange.client.clone()))
                .await
            {
                Err(_) => return exchange.failed(Failure::Timeout),
                Ok(Err(_)) if exchange.seen.too_large.load(Ordering::Acquire) => {
                    return self.synthetic(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        SyntheticReason::BodyTooLarge,
                        "Request body too large for the proxy (proxy.max_request_body)",
                    );
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, endpoint = %exchange.endpoint(), "upstream unreachable");
                    return exchange.failed(Failure::Transport);
                }
                Ok(Ok(r)) => r,
            };
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let inspect = exchange.config.proxy.inspect_limit.as_u64() as usize;
        let uninspected = uninspected_reason(&parts.headers);
        if exchange.config.proxy.rewrite_fetch_result && uninspected.is_none() && rewritable(&parts.headers, inspect) {
            return exchange.rewritten(parts, incoming, inspect).await;
        }
        let keep = if uninspected.is_some() { 0 } else { inspect };
        let finish =
            Box::new(Finished { exchange, status: parts.status.as_u16(), headers: parts.headers.clone(), uninspected });
        let body = ResponseTap::new(incoming, keep, finish);
        Response::from_parts(parts, body.boxed())
    }

    /// Forwards a buffered request, holding and replaying it while the API answers 429 and its
    /// `retry_after` fits within `max_wait`.
    async fn forward_with_retries(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        exchange: Pending,
        max_wait: Duration,
    ) -> Response<ProxyBody> {
        let held_since = Instant::now();
        loop {
            let attempt = exchange.again();
            let req = match self.upstream_request(
                &parts,
                Full::new(body.clone()).map_err(|e| match e {}).boxed(),
                &attempt.config,
            ) {
                Ok(r) => r,
                Err(why) => return self.synthetic(StatusCode::BAD_REQUEST, SyntheticReason::Rejected, why),
            };
            let response = self.forward(req, attempt).await;
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                return response;
            }
            let (resp_parts, resp_body) = response.into_parts();
            let bytes = resp_body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let c = classify::classify(429, &resp_parts.headers, &bytes, &Context::new(RequestKind::Submit));
            let wait = Duration::from_secs_f64(c.retry_after.unwrap_or(1.0).max(0.1));
            if held_since.elapsed() + wait > max_wait {
                return Response::from_parts(resp_parts, Full::new(bytes).map_err(|e| match e {}).boxed());
            }
            self.inner.metrics.proxy_retried();
            tracing::debug!(wait_seconds = wait.as_secs_f64(), "holding a rate-limited request for retry_after");
            tokio::time::sleep(wait).await;
        }
    }

    fn synthetic(&self, status: StatusCode, reason: SyntheticReason, message: &str) -> Response<ProxyBody> {
        self.inner.metrics.proxy_synthetic(reason);
        synthetic_response(status, message)
    }
}

/// An answer in the API's own shape, marked as the proxy's.
fn synthetic_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "status": "error", "message": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(SYNTHETIC_HEADER, HeaderValue::from_static("synthetic"));
    r
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(listed.iter()) {
        headers.remove(name);
    }
    // `Upgrade` is hop-by-hop only as part of a Connection: upgrade handshake, which is not
    // forwarded; a stray one is dropped the same way.
    headers.remove(header::UPGRADE);
}

/// Whether a path polls a job: `…/fetch/{id}` or `…/fetch`.
fn is_fetch_path(path: &str) -> bool {
    path.trim_end_matches('/').rsplit('/').take(2).any(|seg| seg == "fetch")
}

/// The job id a fetch path names (`…/fetch/{id}`).
fn fetch_path_id(path: &str) -> Option<&str> {
    let mut segs = path.trim_end_matches('/').rsplit('/');
    let last = segs.next()?;
    (segs.next() == Some("fetch") && !last.is_empty()).then_some(last)
}

/// Answers the proxy passes through without classifying: binary content and event streams.
fn uninspected_reason(headers: &HeaderMap) -> Option<UninspectedReason> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())?.to_ascii_lowercase();
    if ct.starts_with("text/event-stream") {
        Some(UninspectedReason::Stream)
    } else if ["image/", "audio/", "video/", "application/octet-stream", "application/zip"]
        .iter()
        .any(|p| ct.starts_with(p))
    {
        Some(UninspectedReason::NotJson)
    } else {
        None
    }
}

/// Rewriting needs the whole answer in memory: only plain (not compressed) JSON within the limit.
fn rewritable(headers: &HeaderMap, limit: usize) -> bool {
    let plain = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|e| e.eq_ignore_ascii_case("identity"));
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("json"));
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|n| n <= limit);
    plain && json && small
}

static MODEL_ID: LazyLock<regex::Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a literal pattern, exercised by the tests
    regex::Regex::new(r#""model_id"\s*:\s*"([^"\\]{1,128})""#).expect("model_id pattern is valid")
});

/// What the proxy reads from a request body head (even a truncated one).
#[derive(Debug, Default, PartialEq)]
struct RequestFields {
    model_id: Option<String>,
    request_id: Option<String>,
    /// Only to scrub it from what is recorded.
    key: Option<String>,
}

fn request_fields(head: &[u8]) -> RequestFields {
    if head.is_empty() {
        return RequestFields::default();
    }
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(head) {
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let request_id = match m.get("request_id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        return RequestFields { model_id: text("model_id"), request_id, key: text("key") };
    }
    let text = String::from_utf8_lossy(head);
    RequestFields { model_id: MODEL_ID.captures(&text).map(|c| c[1].to_owned()), ..Default::default() }
}

/// The key as it travels outside the body (header `key`, `Authorization`, query `key`), only to
/// scrub it from what is recorded.
fn request_secrets(parts: &http::request::Parts) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = parts.headers.get("key").and_then(|v| v.to_str().ok()) {
        out.push(k.to_owned());
    }
    if let Some(a) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        out.push(a.split_whitespace().last().unwrap_or(a).to_owned());
    }
    if let Some(q) = parts.uri.query() {
        out.extend(url::form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == "key").map(|(_, v)| v.into_owned()));
    }
    out
}

/// An exchange on its way: what is known before the answer.
struct Pending {
    proxy: Proxy,
    method: String,
    path: String,
    endpoint: String,
    kind: RequestKind,
    seen: Arc<RequestSeen>,
    secrets: Vec<String>,
    started: Instant,
    config: Arc<Config>,
    /// The proxied request's span; ends when the answer's body has gone through.
    server: tracing::Span,
    /// The upstream exchange's span, a child of `server`.
    client: tracing::Span,
}

impl Pending {
    #[allow(clippy::too_many_arguments)]
    fn new(
        proxy: Proxy,
        parts: &http::request::Parts,
        path: String,
        endpoint: String,
        kind: RequestKind,
        seen: Arc<RequestSeen>,
        config: Arc<Config>,
        server: tracing::Span,
    ) -> Pending {
        let method = parts.method.as_str().to_owned();
        let client = Self::client_span(&server, &method, &path, &config);
        let secrets = request_secrets(parts);
        Pending { proxy, method, path, endpoint, kind, seen, secrets, started: Instant::now(), config, server, client }
    }

    fn client_span(server: &tracing::Span, method: &str, path: &str, config: &Config) -> tracing::Span {
        let host = config.upstream.base_url.host_str().unwrap_or("");
        server.in_scope(|| crate::trace::exchange_span(method, path, host, "proxy", None))
    }

    /// The same request, sent again (its own timing and client span).
    fn again(&self) -> Pending {
        Pending {
            proxy: self.proxy.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            endpoint: self.endpoint.clone(),
            kind: self.kind,
            seen: self.seen.clone(),
            secrets: self.secrets.clone(),
            started: Instant::now(),
            config: self.config.clone(),
            server: self.server.clone(),
            client: Self::client_span(&self.server, &self.method, &self.path, &self.config),
        }
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// No answer came: a synthetic 504/502, and the failure recorded as an upstream observation.
    fn failed(self, failure: Failure) -> Response<ProxyBody> {
        let (status, reason, message) = match failure {
            Failure::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                SyntheticReason::UpstreamTimeout,
                "The ModelsLab API did not answer in time (proxy.upstream_timeout)",
            ),
            Failure::Transport => (
                StatusCode::BAD_GATEWAY,
                SyntheticReason::UpstreamUnreachable,
                "The ModelsLab API could not be reached",
            ),
        };
        self.record(None, &classify::classify_failure(failure));
        crate::trace::record_server(&self.server, status.as_u16(), Some(reason.as_str()));
        self.proxy.synthetic(status, reason, message)
    }

    /// Reads a whole answer, rewrites its `fetch_result` to point at the proxy, and records it.
    async fn rewritten(
        self,
        mut parts: http::response::Parts,
        incoming: Incoming,
        limit: usize,
    ) -> Response<ProxyBody> {
        let bytes = match http_body_util::Limited::new(incoming, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return self.failed(Failure::Transport),
        };
        let status = parts.status.as_u16();
        let c = classify::classify(status, &parts.headers, &bytes, &self.context());
        self.record(Some(status), &c);
        let out = match (&c.fetch_result, self.config.upstream.base_url.host_str()) {
            (Some(url), Some(_)) => {
                rewrite_fetch_result(&bytes, url, &self.config, self.proxy.inner.local).unwrap_or(bytes)
            }
            _ => bytes,
        };
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Response::from_parts(parts, Full::new(out).map_err(|e| match e {}).boxed())
    }

    fn context(&self) -> Context {
        Context {
            kind: self.kind,
            decode_limit: self.config.proxy.inspect_limit.as_u64() as usize,
            ..Context::new(self.kind)
        }
    }

    /// Records the classified exchange (metrics and spans) and follows its job.
    fn record(&self, http_status: Option<u16>, c: &Classification) {
        let inner = &self.proxy.inner;
        let RequestFields { model_id, request_id, key } = request_fields(&self.seen.head());
        let mut secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        secrets.extend(key.as_deref());
        crate::trace::record(&self.client, http_status, c, &secrets);
        if let Some(m) = &model_id {
            self.client.record("gen_ai.request.model", classify::truncate(m, 64).as_str());
        }
        if let Some(status) = http_status {
            crate::trace::record_server(&self.server, status, c.error.as_ref().map(|e| e.class.as_str()));
        }
        let endpoint = self.endpoint();
        let job_id = match self.kind {
            RequestKind::Fetch => fetch_path_id(&self.path).map(str::to_owned).or(request_id).or_else(|| c.id.clone()),
            RequestKind::Submit => c.id.clone(),
        };
        // A fetch takes its job's model.
        let model = match (self.kind, &job_id) {
            (RequestKind::Fetch, Some(id)) => {
                inner.jobs.model_of(id).unwrap_or_else(|| inner.metrics.model_label(None))
            }
            _ => inner.metrics.model_label(model_id.as_deref()),
        };
        inner.metrics.record_exchange(&Exchange {
            source: Source::Proxy,
            endpoint: &endpoint,
            model: &model,
            http_status,
            classification: c,
            duration: self.started.elapsed(),
        });
        let Some(id) = job_id else { return };
        self.server.record("modelslab.job.id", id.as_str());
        let now = Instant::now();
        let ended = match (self.kind, c.outcome()) {
            (RequestKind::Submit, Outcome::Processing) => {
                let context: Arc<dyn std::any::Any + Send + Sync> = Arc::new(crate::trace::span_context(&self.server));
                let job =
                    Tracked { submitted: self.started, endpoint, model, first_eta: c.eta, context: Some(context) };
                inner.jobs.track(&id, job);
                None
            }
            (RequestKind::Fetch, Outcome::Success) => inner.jobs.complete(&id, JobResult::Success, now),
            (RequestKind::Fetch, Outcome::Error) if http_status.is_some_and(|s| (200..300).contains(&s)) => {
                let result = if c.api_status == Some(ApiStatus::Failed) { JobResult::Failed } else { JobResult::Error };
                inner.jobs.complete(&id, result, now)
            }
            _ => None,
        };
        // The fetch that completes a job links to the job's submission.
        let submitted = ended.and_then(|job| job.context);
        if let Some(cx) = submitted.as_deref().and_then(|c| c.downcast_ref::<opentelemetry::trace::SpanContext>()) {
            crate::trace::link(&self.server, cx);
        }
    }
}

/// Replaces the upstream origin of `fetch_result` with the proxy's own address, keeping every
/// other byte of the answer (PHP-style `\/` escapes included).
fn rewrite_fetch_result(body: &Bytes, url: &str, config: &Config, local: SocketAddr) -> Option<Bytes> {
    let origin = config.upstream.base_url.origin().ascii_serialization();
    let rest = url.strip_prefix(&origin)?;
    let new = format!("http://{local}{rest}");
    let text = std::str::from_utf8(body).ok()?;
    for (old, replacement) in [
        (serde_json::to_string(url).ok()?, serde_json::to_string(&new).ok()?),
        (serde_json::to_string(url).ok()?.replace('/', "\\/"), serde_json::to_string(&new).ok()?.replace('/', "\\/")),
    ] {
        if text.contains(&old) {
            return Some(Bytes::from(text.replacen(&old, &replacement, 1)));
        }
    }
    None
}

/// Records a streamed answer when its body ends.
struct Finished {
    exchange: Pending,
    status: u16,
    headers: HeaderMap,
    uninspected: Option<UninspectedReason>,
}

impl Finish for Finished {
    fn finish(self: Box<Self>, end: End) {
        let metrics = &self.exchange.proxy.inner.metrics;
        let c = match end {
            End::Complete { body: Some(body) } if self.uninspected.is_none() => {
                classify::classify(self.status, &self.headers, &body, &self.exchange.context())
            }
            End::Complete { .. } => {
                metrics.proxy_uninspected(self.uninspected.unwrap_or(UninspectedReason::TooLarge));
                by_status(self.status)
            }
            End::UpstreamError => classify::classify_failure(Failure::Transport),
            End::ClientGone => by_status(self.status),
        };
        self.exchange.record(Some(self.status), &c);
    }
}

/// A classification from the HTTP status alone, for answers that were not inspected.
fn by_status(status: u16) -> Classification {
    if (200..300).contains(&status) {
        Classification { outcome: Some(Outcome::Success), ..Default::default() }
    } else {
        Classification {
            outcome: Some(Outcome::Error),
            error: Some(classify::ErrorInfo {
                class: ErrorClass::from_http_status(status),
                reason: Reason::Other,
                fields: Vec::new(),
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_paths_and_ids() {
        assert!(is_fetch_path("/api/v6/images/fetch/123"));
        assert!(is_fetch_path("/api/v6/images/fetch"));
        assert!(is_fetch_path("/api/v7/video-fusion/fetch/abc-1"));
        assert!(!is_fetch_path("/api/v6/images/text2img"));
        assert!(!is_fetch_path("/api/v6/fetcher/1"));
        assert_eq!(fetch_path_id("/api/v6/images/fetch/123"), Some("123"));
        assert_eq!(fetch_path_id("/api/v6/images/fetch"), None);
    }

    #[test]
    fn request_fields_even_from_a_truncated_head() {
        let full = request_fields(br#"{"key":"k","model_id":"flux","request_id":7}"#);
        assert_eq!(
            (full.model_id.as_deref(), full.request_id.as_deref(), full.key.as_deref()),
            (Some("flux"), Some("7"), Some("k"))
        );
        let cut = request_fields(br#"{"key":"k","model_id":"sdxl","init_image":"data:image/png;base64,AAAA"#);
        assert_eq!((cut.model_id.as_deref(), cut.request_id), (Some("sdxl"), None));
        assert_eq!(request_fields(b"not json"), RequestFields::default());
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-drop-me"));
        h.insert("x-drop-me", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("key", HeaderValue::from_static("k"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["content-type", "key"]);
    }
}
