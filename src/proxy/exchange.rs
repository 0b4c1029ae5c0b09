//! The bookkeeping of one proxied exchange: what is known before the answer, and what happens
//! when it ends (or never comes): one `observe` event for the exchange, the server and client
//! spans, and the job it submits or polls. It knows nothing of how the request was forwarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Span;

use super::body::{BoxError, End, Finish, RequestSeen, Seen as BodySeen, broken, full};
use super::inspect::{RequestFields, fetch_path_id, request_fields, request_secrets, rewrite_fetch_result};
use super::jobs::Tracked;
use super::upstream::Slot;
use super::{Proxy, ProxyBody, Synthetic};
use crate::classify::{self, ApiStatus, Classification, Context, Failure, Outcome, RequestKind};
use crate::clock;
use crate::cluster::{Ask, SharedJob, Unanswered};
use crate::config::Config;
use crate::observe::{self, JobResult, ResponseUninspected, Source, UninspectedReason};

/// An exchange on its way: what is known before the answer.
pub(super) struct Exchange {
    proxy: Proxy,
    method: http::Method,
    /// The request's URI (its path is read; shared, not copied).
    uri: http::Uri,
    pub endpoint: String,
    kind: RequestKind,
    seen: Arc<RequestSeen>,
    secrets: Vec<String>,
    started: Instant,
    /// Wall-clock start (jobs are timed from it, possibly by another replica).
    started_ms: u64,
    pub config: Arc<Config>,
    /// The proxied request's span; ends when the answer's body has gone through.
    pub server: Span,
    /// The upstream exchange's span, a child of `server`.
    pub client: Span,
}

impl Exchange {
    pub(super) fn new(
        proxy: Proxy,
        parts: &http::request::Parts,
        endpoint: String,
        kind: RequestKind,
        seen: Arc<RequestSeen>,
        config: Arc<Config>,
        server: Span,
    ) -> Exchange {
        let method = parts.method.clone();
        let uri = parts.uri.clone();
        let client = Self::client_span(&server, method.as_str(), uri.path(), &config);
        let secrets = request_secrets(parts);
        Exchange {
            proxy,
            method,
            uri,
            endpoint,
            kind,
            seen,
            secrets,
            started: Instant::now(),
            started_ms: clock::unix_millis(),
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
    pub(super) fn again(&self) -> Exchange {
        Exchange {
            proxy: self.proxy.clone(),
            method: self.method.clone(),
            uri: self.uri.clone(),
            endpoint: self.endpoint.clone(),
            kind: self.kind,
            seen: self.seen.clone(),
            secrets: self.secrets.clone(),
            started: Instant::now(),
            started_ms: clock::unix_millis(),
            config: self.config.clone(),
            server: self.server.clone(),
            client: Self::client_span(&self.server, self.method.as_str(), self.uri.path(), &self.config),
        }
    }

    /// The request goes to the upstream now: its duration starts here (a wait for a free upstream
    /// connection is the proxy's, not the API's).
    pub(super) fn sent_now(&mut self) {
        self.started = Instant::now();
        self.started_ms = clock::unix_millis();
    }

    /// No answer came: a synthetic 504/502, and the failure recorded as an upstream observation.
    pub(super) fn failed(self, failure: Failure) -> Response<ProxyBody> {
        let (proxy, server) = (self.proxy.clone(), self.server.clone());
        self.record(None, classify::classify_failure(failure), None);
        let answer = match failure {
            Failure::Timeout => Synthetic::UpstreamTimeout,
            Failure::Transport => Synthetic::UpstreamUnreachable,
        };
        proxy.synthetic(answer, &server)
    }

    /// Reads a whole answer (within what is left of `timeout`), rewrites its `fetch_result` to point at the proxy
    /// when `rewrite` says, records it and answers it from memory: the upstream connection is
    /// free at once, whatever pace the client reads at.
    pub(super) async fn whole(
        self,
        mut parts: http::response::Parts,
        incoming: Incoming,
        limit: usize,
        rewrite: bool,
        timeout: Duration,
        slot: Slot,
    ) -> Response<ProxyBody> {
        let within = timeout.saturating_sub(self.started.elapsed());
        let status = parts.status.as_u16();
        let read = tokio::time::timeout(within, read_whole(incoming, limit)).await;
        // The connection is free (back in the pool, or closed): the next request may have it.
        drop(slot);
        let bytes = match read {
            Ok(Ok(b)) => b,
            // Cut mid-body: the client gets the head and what came, then the same break, as when
            // the answer streams; counted as the API's transport error.
            Ok(Err((came, e))) => {
                self.record(Some(status), classify::classify_failure(Failure::Transport), None);
                return Response::from_parts(parts, broken(came, e));
            }
            Err(_) => return self.failed(Failure::Timeout),
        };
        let c = classify::classify(status, &parts.headers, &bytes, &self.context());
        let local = self.proxy.inner.local;
        let out = if rewrite {
            c.fetch_result().and_then(|url| rewrite_fetch_result(&bytes, url, &self.config, local)).unwrap_or(bytes)
        } else {
            bytes
        };
        self.record(Some(status), c, None);
        // Said again only when it changed (a rewrite) or was not said.
        let said = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if said != Some(out.len()) {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        }
        Response::from_parts(parts, full(out))
    }

    fn context(&self) -> Context {
        Context { decode_limit: self.config.proxy.inspect_limit.as_u64() as usize, ..Context::new(self.kind) }
    }

    /// Records the classified exchange (one event: metrics, both spans, the log) and follows its
    /// job. A poll is recorded once the job it polls is looked up (its model labels the poll, and
    /// a terminal answer ends it): at once with state in memory, off the response path when the
    /// lookup waits for Redis.
    fn record(self, http_status: Option<u16>, classification: Classification, first_token: Option<Instant>) {
        let RequestFields { model_id, request_id, key } = self.seen.with_head(request_fields);
        let mut secrets = self.secrets;
        secrets.extend(key);
        let job_id = match self.kind {
            RequestKind::Fetch => fetch_path_id(self.uri.path())
                .map(str::to_owned)
                .or(request_id)
                .or_else(|| classification.details().id.clone()),
            RequestKind::Submit => classification.details().id.clone(),
        };
        let seen = Seen {
            proxy: self.proxy,
            endpoint: self.endpoint,
            server: self.server,
            client: self.client,
            secrets,
            request_model: model_id,
            http_status,
            duration: self.started.elapsed(),
            time_to_first_token: first_token.map(|t| t.saturating_duration_since(self.started)),
            classification,
        };
        let inner = seen.proxy.inner.clone();
        match (self.kind, job_id) {
            (RequestKind::Fetch, Some(id)) => {
                let ends = job_end(http_status, &seen.classification);
                let ask = if ends.is_some() { Ask::end() } else { Ask::Read };
                let lookup = inner.jobs.lookup(&id, &ask);
                let seen_ms = clock::unix_millis();
                let jobs = inner.jobs.clone();
                inner.tasks.finish_or_spawn(async move {
                    match (lookup.await, ends) {
                        (Ok(job), _) => seen.poll(&id, job, ends),
                        (Err(Unanswered), None) => seen.poll(&id, None, None),
                        // Recorded now; the end once Redis answers (a stall, a failover).
                        (Err(Unanswered), Some(result)) => {
                            let (span, answer) = (seen.server.clone(), seen.classification.clone());
                            seen.poll(&id, None, None);
                            jobs.end_when_answered(&id, &ask, seen_ms, result, Some(&span), Some(&answer)).await;
                        }
                    }
                });
            }
            (kind, job_id) => seen.submission(kind, job_id.as_deref(), self.started_ms),
        }
    }
}

/// An answer's body, whole (at most `limit` bytes); when it breaks off, what came and the error.
async fn read_whole(incoming: Incoming, limit: usize) -> Result<Bytes, (Bytes, BoxError)> {
    let mut body = http_body_util::Limited::new(incoming, limit);
    // The first piece as it came (nearly always the whole answer: no copy); later ones joined.
    let mut first = Bytes::new();
    let mut more: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) if first.is_empty() && more.is_empty() => first = data,
                Ok(data) => {
                    if more.is_empty() {
                        more.extend_from_slice(&first);
                    }
                    more.extend_from_slice(&data);
                }
                Err(_) => {}
            },
            Err(e) => return Err((if more.is_empty() { first } else { Bytes::from(more) }, e)),
        }
    }
    Ok(if more.is_empty() { first } else { Bytes::from(more) })
}

/// How the job a poll asks about ended, if this answer ends it: `success`, or a 2xx error
/// (`failed` or `error`). Other errors (a 5xx, a timeout) say nothing about the job.
fn job_end(http_status: Option<u16>, c: &Classification) -> Option<JobResult> {
    match c.outcome() {
        Outcome::Success => Some(JobResult::Success),
        Outcome::Error if http_status.is_some_and(|s| (200..300).contains(&s)) => {
            Some(if c.details().api_status == Some(ApiStatus::Failed) { JobResult::Failed } else { JobResult::Error })
        }
        _ => None,
    }
}

/// A classified exchange, ready to be recorded.
struct Seen {
    proxy: Proxy,
    endpoint: String,
    server: Span,
    client: Span,
    /// The request's key wherever it travelled, scrubbed from what is recorded.
    secrets: Vec<String>,
    /// The model the request body named.
    request_model: Option<String>,
    http_status: Option<u16>,
    duration: Duration,
    /// Of a streamed LLM answer.
    time_to_first_token: Option<Duration>,
    classification: Classification,
}

impl Seen {
    fn emit(&self, model: &str, job_id: Option<&str>) {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        self.proxy.inner.observer.emit(observe::ExchangeObserved {
            exchange: observe::Exchange {
                source: Source::Proxy,
                endpoint: &self.endpoint,
                model,
                http_status: self.http_status,
                classification: &self.classification,
                duration: self.duration,
                time_to_first_token: self.time_to_first_token,
            },
            span: &self.client,
            server: Some(&self.server),
            secrets: &secrets,
            request_model: self.request_model.as_deref(),
            job_id,
        });
    }

    /// Any exchange but a poll: recorded with the model its body named; a `processing` answer
    /// starts a job.
    fn submission(self, kind: RequestKind, job_id: Option<&str>, started_ms: u64) {
        let inner = &self.proxy.inner;
        let model = inner.observer.model_label(self.request_model.as_deref());
        self.emit(&model, job_id);
        if kind == RequestKind::Submit {
            // A synchronous success delivers at once.
            inner.observer.delivered(Source::Proxy, &self.endpoint, &model, self.duration, &self.classification);
        }
        if let (RequestKind::Submit, Some(id), Outcome::Processing) = (kind, job_id, self.classification.outcome()) {
            let job = Tracked {
                submitted_ms: started_ms,
                endpoint: self.endpoint.clone(),
                model,
                first_eta: self.classification.eta(),
                context: observe::span_context(&self.server),
            };
            inner.jobs.track(id, job);
        }
    }

    /// A poll of job `id` (`job`: its record, when it is followed), labelled with the job's model;
    /// `ends` says whether and how this answer ends the job.
    fn poll(self, id: &str, job: Option<SharedJob>, ends: Option<JobResult>) {
        let inner = self.proxy.inner.clone();
        let model = job.as_ref().map_or_else(|| inner.observer.model_label(None), |j| j.model.clone());
        self.emit(&model, Some(id));
        if let (Some(job), Some(result)) = (job, ends) {
            inner.jobs.end(&job, result, Some(&self.server), Some(&self.classification));
        }
    }
}

/// Records a streamed answer when its body ends.
pub(super) struct Finished {
    pub exchange: Exchange,
    pub status: u16,
    pub headers: HeaderMap,
    pub uninspected: Option<UninspectedReason>,
    /// The upstream connection's slot, given back when the body has gone through.
    pub _slot: Slot,
}

impl Finish for Finished {
    fn finish(self: Box<Self>, end: End) {
        let (c, first_token) = match end {
            End::Complete(BodySeen::Copy(Some(body))) if self.uninspected.is_none() => {
                (classify::classify(self.status, &self.headers, &body, &self.exchange.context()), None)
            }
            End::Complete(BodySeen::Copy(_)) => {
                let reason = self.uninspected.unwrap_or(UninspectedReason::TooLarge);
                self.exchange.proxy.inner.observer.emit(ResponseUninspected { reason });
                (Classification::by_status(self.status), None)
            }
            // Ended properly, with an error event, or cut (the upstream failed mid-stream).
            End::Complete(BodySeen::Events { reader, first_content })
            | End::UpstreamError(BodySeen::Events { reader, first_content }) => (reader.finish(), first_content),
            End::UpstreamError(BodySeen::Copy(_)) => (classify::classify_failure(Failure::Transport), None),
            End::ClientGone => (Classification::by_status(self.status), None),
        };
        self.exchange.record(Some(self.status), c, first_token);
    }
}
