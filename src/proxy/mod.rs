//! The live-traffic proxy (docs/proxy.md): a transparent reverse proxy to `upstream.base_url` that
//! classifies every answer without changing it. Bytes stream in both directions; a bounded copy
//! of each answer is classified when it ends. Jobs are followed across the client's own fetch
//! polls. When the proxy must answer itself (timeout, unreachable upstream, body too large,
//! refused request) the answer has the API's shape and the `x-modelslab-sentinel: synthetic`
//! header.
//!
//! Only the configured upstream is ever contacted; the request's `Host` is never used for routing.
//! Nothing here logs a header value, a body or a query string.
//!
//! | file         | its job                                                              |
//! |--------------|----------------------------------------------------------------------|
//! | `mod.rs`     | serving: connections, limits, housekeeping, the synthetic answers    |
//! | `forward.rs` | one request: refusals, the upstream request, forwarding and retries  |
//! | `exchange.rs`| the bookkeeping of an exchange: its events, spans and job tracking   |
//! | `inspect.rs` | what is read from requests and answers (model, ids, keys to scrub)   |
//! | `body.rs`    | body wrappers that stream bytes through and keep a bounded copy      |
//! | `jobs.rs`    | the jobs followed from their submission to their terminal answer     |
//! | `upstream.rs`| the upstream connection pool, and when a request is sent once more   |

mod body;
mod exchange;
mod forward;
pub(crate) mod inspect;
pub mod jobs;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use body::BoxError;
pub use jobs::{JobTracker, Tracked};
use upstream::Upstream;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::observe::status::ProxyView;
use crate::observe::{self, Observer, Source, SyntheticReason};
use crate::server::{self, ConnectionLimit};
use crate::tasks::Tasks;

/// The body type the proxy answers with.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The header on every answer the proxy makes itself.
pub const SYNTHETIC_HEADER: &str = "x-modelslab-sentinel";
/// How much of a request body is kept to read `model_id` and `request_id`.
const REQUEST_HEAD: usize = 64 * 1024;

/// The proxy component.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: watch::Receiver<Arc<Config>>,
    observer: Observer,
    jobs: Arc<JobTracker>,
    tasks: Tasks,
    upstream: Upstream,
    local: SocketAddr,
    /// `proxy.max_connections`, as reloaded.
    connections: Arc<ConnectionLimit>,
    /// The upstream target of the config in force (`forward::Target`).
    target: std::sync::RwLock<Option<Arc<forward::Target>>>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listener is not bound.
    #[error("proxy listener has no local address: {0}")]
    Listener(std::io::Error),
}

/// Why a request is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("CONNECT is not supported: this proxy only forwards to its configured API")]
    Connect,
    #[error("Absolute URLs naming another host are refused: this proxy only forwards to its configured API")]
    OtherHost,
    #[error("The request path is not valid")]
    BadPath,
    #[error("The upstream's host cannot be a Host header")]
    BadUpstreamHost,
    #[error("The request could not be rebuilt")]
    Unbuildable,
}

/// An answer the proxy makes itself, in the API's own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synthetic {
    /// A request this proxy must not forward.
    Refused(Refusal),
    /// A body over `proxy.max_request_body`.
    BodyTooLarge,
    /// A body that could not be read (the client failed mid-body).
    BodyUnreadable,
    /// No complete upstream answer within `proxy.upstream_timeout`.
    UpstreamTimeout,
    /// The upstream could not be reached, or failed before answering.
    UpstreamUnreachable,
}

impl Synthetic {
    fn status(self) -> StatusCode {
        match self {
            Synthetic::Refused(_) | Synthetic::BodyUnreadable => StatusCode::BAD_REQUEST,
            Synthetic::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Synthetic::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Synthetic::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
        }
    }

    fn reason(self) -> SyntheticReason {
        match self {
            Synthetic::Refused(_) | Synthetic::BodyUnreadable => SyntheticReason::Rejected,
            Synthetic::BodyTooLarge => SyntheticReason::BodyTooLarge,
            Synthetic::UpstreamTimeout => SyntheticReason::UpstreamTimeout,
            Synthetic::UpstreamUnreachable => SyntheticReason::UpstreamUnreachable,
        }
    }

    fn message(self) -> String {
        match self {
            Synthetic::Refused(why) => why.to_string(),
            Synthetic::BodyTooLarge => "Request body too large for the proxy (proxy.max_request_body)".into(),
            Synthetic::BodyUnreadable => "The request body could not be read".into(),
            Synthetic::UpstreamTimeout => "The ModelsLab API did not answer in time (proxy.upstream_timeout)".into(),
            Synthetic::UpstreamUnreachable => "The ModelsLab API could not be reached".into(),
        }
    }

    /// The answer: `{"status":"error","message":"…"}`, marked as the proxy's.
    fn response(self) -> Response<ProxyBody> {
        let body = serde_json::json!({ "status": "error", "message": self.message() }).to_string();
        let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
        *r.status_mut() = self.status();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().insert(SYNTHETIC_HEADER, HeaderValue::from_static("synthetic"));
        r
    }
}

impl Proxy {
    /// A proxy for connections accepted on `listener` (bound by the caller).
    pub fn new(
        listener: &TcpListener,
        config: watch::Receiver<Arc<Config>>,
        observer: Observer,
        cluster: Cluster,
        tasks: Tasks,
    ) -> Result<Self, ProxyError> {
        let local = listener.local_addr().map_err(ProxyError::Listener)?;
        let (jobs_cfg, proxy_cfg) = {
            let c = config.borrow();
            (c.jobs.clone(), c.proxy.clone())
        };
        let jobs = Arc::new(JobTracker::new(
            Source::Proxy,
            observer.clone(),
            cluster,
            tasks.clone(),
            jobs_cfg.ttl,
            jobs_cfg.max_tracked,
        ));
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let upstream = Upstream::new(
            https,
            proxy_cfg.upstream_max_connections,
            proxy_cfg.upstream_max_idle,
            observer.metrics().proxy.upstream(),
        );
        let connections = ConnectionLimit::new(proxy_cfg.max_connections);
        let target = std::sync::RwLock::new(None);
        Ok(Proxy { inner: Arc::new(Inner { config, observer, jobs, tasks, upstream, local, connections, target }) })
    }

    /// The proxy's part of `/api/v1/status`.
    pub fn status(&self) -> ProxyView {
        ProxyView { jobs_tracked: self.inner.jobs.held() }
    }

    /// Accepts connections until `shutdown` (with the limits of [`crate::server`]); in-flight
    /// requests finish on their connection tasks, which the agent's tracker tracks (the app waits
    /// for them with its grace period).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let limits = server::Limits::with_connections(self.inner.connections.clone());
        let tasks = self.inner.tasks.clone();
        tasks.spawn(self.clone().expire_jobs(shutdown.clone()));
        tasks.spawn(self.clone().follow_config(shutdown.clone()));
        server::serve(listener, "proxy", limits, shutdown, tasks.tracker().clone(), move |_peer| {
            let proxy = self.clone();
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
            })
        })
        .await;
        tracing::info!("proxy stopped accepting");
    }

    async fn expire_jobs(self, shutdown: CancellationToken) {
        // Often enough that a job is counted expired within a quarter of the TTL after it.
        let ttl = self.inner.config.borrow().jobs.ttl;
        let mut tick = tokio::time::interval((ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.inner.jobs.sweep().await,
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
                    let config = rx.borrow_and_update().clone();
                    self.inner.jobs.set_limits(config.jobs.ttl, config.jobs.max_tracked);
                    self.inner.connections.set(config.proxy.max_connections);
                    self.inner.upstream.set_max_connections(config.proxy.upstream_max_connections);
                }
            }
        }
    }

    /// Answers a request itself: every synthetic answer is counted and recorded on the request's
    /// server span here, and nowhere else.
    fn synthetic(&self, answer: Synthetic, server: &tracing::Span) -> Response<ProxyBody> {
        self.inner.observer.emit(observe::SyntheticAnswer {
            reason: answer.reason(),
            status: answer.status().as_u16(),
            server,
        });
        answer.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_answers_have_the_apis_shape_and_the_marker() {
        for answer in [
            Synthetic::Refused(Refusal::Connect),
            Synthetic::BodyTooLarge,
            Synthetic::BodyUnreadable,
            Synthetic::UpstreamTimeout,
            Synthetic::UpstreamUnreachable,
        ] {
            let r = answer.response();
            assert_eq!(r.status(), answer.status());
            assert_eq!(r.headers()[SYNTHETIC_HEADER], "synthetic");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        }
        assert_eq!(Synthetic::UpstreamTimeout.status(), 504);
        assert_eq!(Synthetic::UpstreamUnreachable.reason(), SyntheticReason::UpstreamUnreachable);
    }
}
