//! The bookkeeping of one proxied exchange: what is known before the answer, and what happens
//! when it ends (or never comes): one `observe` event for the exchange, the server and client
//! spans, and the job it submits or polls.

use std::sync::Arc;
use std::time::Instant;

use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Span;

use super::body::{End, Finish, RequestSeen};
use super::forward::full;
use super::inspect::{RequestFields, fetch_path_id, request_fields, request_secrets, rewrite_fetch_result};
use super::jobs::Tracked;
use super::{Proxy, ProxyBody, Synthetic};
use crate::classify::{self, ApiStatus, Classification, Context, Failure, Outcome, RequestKind};
use crate::cluster::unix_ms;
use crate::config::Config;
use crate::observe::{self, JobResult, ResponseUninspected, Source, UninspectedReason};

/// An exchange on its way: what is known before the answer.
pub(super) struct Exchange {
    proxy: Proxy,
    method: String,
    path: String,
    pub endpoint: String,
    kind: RequestKind,
    seen: Arc<RequestSeen>,
    secrets: Vec<String>,
    started: Instant,
    /// Wall-clock start (jobs shared through Redis measure from it).
    started_ms: u64,
    pub config: Arc<Config>,
    /// The proxied request's span; ends when the answer's body has gone through.
    pub server: Span,
    /// The upstream exchange's span, a child of `server`.
    pub client: Span,
}

impl Exchange {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        proxy: Proxy,
        parts: &http::request::Parts,
        path: String,
        endpoint: String,
        kind: RequestKind,
        seen: Arc<RequestSeen>,
        config: Arc<Config>,
        server: Span,
    ) -> Exchange {
        let method = parts.method.as_str().to_owned();
        let client = Self::client_span(&server, &method, &path, &config);
        let secrets = request_secrets(parts);
        Exchange {
            proxy,
            method,
            path,
            endpoint,
            kind,
            seen,
            secrets,
            started: Instant::now(),
            started_ms: unix_ms(),
            config,
            server,
            client,
        }
    }

    fn client_span(server: &Span, method: &str, path: &str, config: &Config) -> Span {
        let host = config.upstream.base_url.host_str().unwrap_or("");
        server.in_scope(|| observe::exchange_span(method, path, host, Source::Proxy, None, None))
    }

    /// The same request, sent again (its own timing and client span).
    pub fn again(&self) -> Exchange {
        Exchange {
            proxy: self.proxy.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            endpoint: self.endpoint.clone(),
            kind: self.kind,
            seen: self.seen.clone(),
            secrets: self.secrets.clone(),
            started: Instant::now(),
            started_ms: unix_ms(),
            config: self.config.clone(),
            server: self.server.clone(),
            client: Self::client_span(&self.server, &self.method, &self.path, &self.config),
        }
    }

    /// No answer came: a synthetic 504/502, and the failure recorded as an upstream observation.
    pub fn failed(self, failure: Failure) -> Response<ProxyBody> {
        self.record(None, &classify::classify_failure(failure));
        let answer = match failure {
            Failure::Timeout => Synthetic::UpstreamTimeout,
            Failure::Transport => Synthetic::UpstreamUnreachable,
        };
        self.proxy.synthetic(answer, &self.server)
    }

    /// Reads a whole answer, rewrites its `fetch_result` to point at the proxy, and records it.
    pub async fn rewritten(
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
        let local = self.proxy.inner.local;
        let out =
            c.fetch_result().and_then(|url| rewrite_fetch_result(&bytes, url, &self.config, local)).unwrap_or(bytes);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Response::from_parts(parts, full(out))
    }

    fn context(&self) -> Context {
        Context { decode_limit: self.config.proxy.inspect_limit.as_u64() as usize, ..Context::new(self.kind) }
    }

    /// Records the classified exchange (one event: metrics, both spans, the log) and follows its
    /// job. A poll of a job this replica does not know, with replicas sharing state, is recorded
    /// once Redis has said which job it is: off the response path, in a task of its own.
    fn record(&self, http_status: Option<u16>, c: &Classification) {
        let inner = &self.proxy.inner;
        let RequestFields { model_id, request_id, key } = request_fields(&self.seen.head());
        let job_id = match self.kind {
            RequestKind::Fetch => {
                fetch_path_id(&self.path).map(str::to_owned).or(request_id).or_else(|| c.details().id.clone())
            }
            RequestKind::Submit => c.details().id.clone(),
        };
        let ends = job_end(self.kind, http_status, c);
        let duration = self.started.elapsed();
        if let (RequestKind::Fetch, Some(id)) = (self.kind, &job_id) {
            if inner.jobs.model_of(id).is_none() && inner.jobs.is_shared() {
                let mut secrets = self.secrets.clone();
                secrets.extend(key);
                let later = Later {
                    proxy: self.proxy.clone(),
                    endpoint: self.endpoint.clone(),
                    server: self.server.clone(),
                    client: self.client.clone(),
                    secrets,
                    request_model: model_id,
                    http_status,
                    classification: c.clone(),
                    duration,
                };
                let id = id.clone();
                tokio::spawn(async move { later.record(id, ends).await });
                return;
            }
        }
        let mut secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        secrets.extend(key.as_deref());
        // A fetch takes its job's model.
        let model = match (self.kind, &job_id) {
            (RequestKind::Fetch, Some(id)) => {
                inner.jobs.model_of(id).unwrap_or_else(|| inner.observer.model_label(None))
            }
            _ => inner.observer.model_label(model_id.as_deref()),
        };
        inner.observer.emit(observe::ExchangeObserved {
            exchange: observe::Exchange {
                source: Source::Proxy,
                endpoint: &self.endpoint,
                model: &model,
                http_status,
                classification: c,
                duration,
            },
            span: &self.client,
            server: Some(&self.server),
            secrets: &secrets,
            request_model: model_id.as_deref(),
            job_id: job_id.as_deref(),
        });
        let Some(id) = job_id else { return };
        if self.kind == RequestKind::Submit && c.outcome() == Outcome::Processing {
            let job = Tracked {
                submitted: self.started,
                submitted_ms: self.started_ms,
                endpoint: self.endpoint.clone(),
                model,
                first_eta: c.eta(),
                context: observe::span_context(&self.server),
                fallback: false,
            };
            inner.jobs.track(&id, job);
        } else if let Some(result) = ends {
            inner.jobs.complete(&id, result, Instant::now(), Some(&self.server));
        }
    }
}

/// How the job a fetch polls ended, if this answer ends it: `success`, or a 2xx error (`failed`
/// or `error`). Other errors (a 5xx, a timeout) say nothing about the job.
fn job_end(kind: RequestKind, http_status: Option<u16>, c: &Classification) -> Option<JobResult> {
    if kind != RequestKind::Fetch {
        return None;
    }
    match c.outcome() {
        Outcome::Success => Some(JobResult::Success),
        Outcome::Error if http_status.is_some_and(|s| (200..300).contains(&s)) => {
            Some(if c.details().api_status == Some(ApiStatus::Failed) { JobResult::Failed } else { JobResult::Error })
        }
        _ => None,
    }
}

/// A poll's exchange recorded once Redis has said which job it polls (shared state).
struct Later {
    proxy: Proxy,
    endpoint: String,
    server: Span,
    client: Span,
    secrets: Vec<String>,
    request_model: Option<String>,
    http_status: Option<u16>,
    classification: Classification,
    duration: std::time::Duration,
}

impl Later {
    async fn record(self, id: String, ends: Option<JobResult>) {
        let inner = &self.proxy.inner;
        let job = inner.jobs.shared(&id, ends.is_some()).await;
        let model = job.as_ref().map_or_else(|| inner.observer.model_label(None), |j| j.model.clone());
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        inner.observer.emit(observe::ExchangeObserved {
            exchange: observe::Exchange {
                source: Source::Proxy,
                endpoint: &self.endpoint,
                model: &model,
                http_status: self.http_status,
                classification: &self.classification,
                duration: self.duration,
            },
            span: &self.client,
            server: Some(&self.server),
            secrets: &secrets,
            request_model: self.request_model.as_deref(),
            job_id: Some(&id),
        });
        if let (Some(job), Some(result)) = (job, ends) {
            inner.jobs.end_shared(&job, result, Some(&self.server));
        }
    }
}

/// Records a streamed answer when its body ends.
pub(super) struct Finished {
    pub exchange: Exchange,
    pub status: u16,
    pub headers: HeaderMap,
    pub uninspected: Option<UninspectedReason>,
}

impl Finish for Finished {
    fn finish(self: Box<Self>, end: End) {
        let c = match end {
            End::Complete { body: Some(body) } if self.uninspected.is_none() => {
                classify::classify(self.status, &self.headers, &body, &self.exchange.context())
            }
            End::Complete { .. } => {
                let reason = self.uninspected.unwrap_or(UninspectedReason::TooLarge);
                self.exchange.proxy.inner.observer.emit(ResponseUninspected { reason });
                Classification::by_status(self.status)
            }
            End::UpstreamError => classify::classify_failure(Failure::Transport),
            End::ClientGone => Classification::by_status(self.status),
        };
        self.exchange.record(Some(self.status), &c);
    }
}
