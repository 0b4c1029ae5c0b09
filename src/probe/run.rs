//! One probe run: submit, follow the async job if asked, check the expectations. Every exchange
//! is an `observe` event with `source="probe"`. The run returns a uniform [`RunReport`]; the
//! caller puts it under the hard `timeout` and inside the run's root span. Durations are taken on
//! the runtime's clock, as the scheduler's are.

use std::sync::Arc;
use std::time::Duration;

use crate::BoxFuture;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use tokio::time::Instant;
use tracing::Instrument;

use super::output;
use crate::classify::{self, ApiStatus, Classification, Context, ErrorClass, Failure, Outcome, Reason, RequestKind};
use crate::config::{Expect, ExpectStatus, Probe, Upstream};
use crate::observe::{self, JobResult, Observer, ProbeFailure, Source, SpanContext};

/// Longest answer body a probe reads; API answers are a few KiB.
const MAX_BODY: usize = 8 << 20;
/// Longest wait between polls, whatever the eta says.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// What one HTTP exchange of a run did (never the key, a prompt or a body).
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeReport {
    pub kind: RequestKind,
    pub method: String,
    /// The endpoint label (id-like segments as `{id}`, no query).
    pub endpoint: String,
    pub http_status: Option<u16>,
    pub outcome: Outcome,
    pub error_class: Option<ErrorClass>,
    pub reason: Option<Reason>,
    pub duration_seconds: f64,
}

/// The uniform result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub probe: String,
    pub success: bool,
    pub failure_reason: Option<ProbeFailure>,
    /// Why expectations failed, one line each.
    pub failed_expectations: Vec<String>,
    pub duration_seconds: f64,
    pub started_at_unix: f64,
    /// The final answer's classification.
    pub http_status: Option<u16>,
    pub outcome: Option<Outcome>,
    pub error_class: Option<ErrorClass>,
    pub reason: Option<Reason>,
    /// The API's message, at most 256 characters.
    pub message: Option<String>,
    pub job_id: Option<String>,
    /// `retry_after` of the final answer (the scheduler backs off by it after a 429).
    pub retry_after_seconds: Option<f64>,
    pub exchanges: Vec<ExchangeReport>,
}

impl RunReport {
    /// A run cut by the probe's hard timeout.
    pub fn timed_out(probe: &str, timeout: Duration, started_at_unix: f64) -> Self {
        RunReport {
            probe: probe.to_owned(),
            success: false,
            failure_reason: Some(ProbeFailure::Timeout),
            failed_expectations: vec![format!(
                "no result within the probe's timeout ({})",
                humantime::format_duration(timeout)
            )],
            duration_seconds: timeout.as_secs_f64(),
            started_at_unix,
            http_status: None,
            outcome: None,
            error_class: Some(ErrorClass::Timeout),
            reason: None,
            message: None,
            job_id: None,
            retry_after_seconds: None,
            exchanges: Vec::new(),
        }
    }
}

/// What a run needs from the agent.
pub struct RunContext {
    /// Talks to the API.
    pub client: reqwest::Client,
    /// Downloads generated files from wherever answers point (never with the key).
    pub downloads: reqwest::Client,
    pub observer: Observer,
    /// The webhook receiver, for probes with `follow.webhook`.
    pub webhooks: Option<Arc<dyn WebhookWatch>>,
}

/// The webhook a run asks the API for.
#[derive(Debug, Clone)]
pub struct Callback {
    /// What the API is told to call.
    pub url: String,
    /// Unique per run: the delivery must carry it back.
    pub track_id: String,
    /// The receiver's handle on the run.
    pub token: String,
}

/// The webhook receiver as runs see it: the app wires the `webhook` component in.
pub trait WebhookWatch: Send + Sync {
    /// Registers a run of `probe` that will ask for a webhook.
    fn expect<'a>(&'a self, probe: &'a str) -> BoxFuture<'a, Callback>;
    /// The run saw its job end (or gave up on it): its delivery is judged against now.
    fn finished(&self, token: &str, job_id: Option<&str>);
    /// The run started no job: no delivery is expected.
    fn abandon(&self, token: &str);
}

/// One exchange's outcome as the run sees it.
#[derive(Clone)]
struct Answer {
    http_status: Option<u16>,
    classification: Classification,
    body: Option<Bytes>,
    content_encoding: Option<String>,
    /// The exchange's span, for the job's later polls to link to.
    span: SpanContext,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        let body = self.body.as_ref()?;
        let decoded = classify::decode(self.content_encoding.as_deref(), body, MAX_BODY).ok()?;
        serde_json::from_slice(&decoded).ok()
    }
}

/// Runs `probe` once against `upstream`, within the current span (the run's root).
pub async fn run(probe: &Probe, upstream: &Upstream, ctx: &RunContext) -> RunReport {
    let started = Instant::now();
    let started_at_unix = crate::metrics::unix_now();
    let mut exchanges = Vec::new();
    let key = key_for(probe, upstream);
    let mut body = request_body(probe, key.as_deref());
    // Ask for a webhook: a URL with a token of this run's own, and a track id.
    let callback = match (&probe.follow, &ctx.webhooks) {
        (Some(f), Some(w)) if f.webhook => {
            let cb = w.expect(&probe.name).await;
            if let Some(map) = body.get_or_insert_with(|| Value::Object(Default::default())).as_object_mut() {
                map.insert("webhook".into(), Value::String(cb.url.clone()));
                map.insert("track_id".into(), Value::String(cb.track_id.clone()));
            }
            Some((w, cb))
        }
        _ => None,
    };
    let model = probe.request.body.as_ref().and_then(|b| b.get("model_id")).and_then(Value::as_str);
    let model_label = ctx.observer.model_label(model);
    let submit_endpoint = ctx.observer.endpoint_label(&probe.request.path);

    let call = Call { ctx, upstream, probe, key: key.as_deref(), model, model_label: &model_label };
    let submit = call
        .exchange(
            &probe.request.method,
            &probe.request.path,
            body.as_ref(),
            RequestKind::Submit,
            &submit_endpoint,
            None,
            &mut exchanges,
        )
        .await;

    let mut job_failure: Option<ProbeFailure> = None;
    let mut job_id = submit.classification.details().id.clone();
    let mut last = submit.clone();
    if let (Some(follow), Outcome::Processing, Some(id)) =
        (&probe.follow, last.classification.outcome(), job_id.clone())
    {
        ctx.observer.emit(observe::JobStarted { source: Source::Probe });
        let first_eta = last.classification.eta();
        let fetch_path = follow.fetch_path.replace("{id}", &id);
        let fetch_endpoint = ctx.observer.endpoint_label(&fetch_path);
        let fetch_body = key.as_ref().map(|k| serde_json::json!({ "key": k }));
        let job_started = Instant::now();
        let result = loop {
            let wait = last.classification.eta().map(Duration::from_secs_f64).unwrap_or(follow.poll_interval);
            let wait = wait.clamp(follow.poll_interval, MAX_POLL_WAIT.max(follow.poll_interval));
            if job_started.elapsed() + wait > follow.max_wait {
                job_failure = Some(ProbeFailure::JobTimeout);
                break JobResult::Expired;
            }
            tokio::time::sleep(wait).await;
            let answer = call
                .exchange(
                    &http::Method::POST,
                    &fetch_path,
                    fetch_body.as_ref(),
                    RequestKind::Fetch,
                    &fetch_endpoint,
                    Some(&submit.span),
                    &mut exchanges,
                )
                .await;
            let outcome = answer.classification.outcome();
            last = answer;
            match outcome {
                Outcome::Processing => continue,
                Outcome::Success => break JobResult::Success,
                Outcome::Error => {
                    job_failure = Some(match last.http_status {
                        None => failure_of(&last.classification),
                        Some(_) => ProbeFailure::JobFailed,
                    });
                    break if last.classification.details().api_status == Some(ApiStatus::Failed) {
                        JobResult::Failed
                    } else {
                        JobResult::Error
                    };
                }
            }
        };
        ctx.observer.emit(observe::JobEnded {
            job: observe::JobEnd {
                source: Source::Probe,
                endpoint: &submit_endpoint,
                model: &model_label,
                result,
                duration: job_started.elapsed(),
                first_eta,
            },
            span: None,
            submitted: None,
        });
        if let Some(id) = &last.classification.details().id {
            job_id = Some(id.clone());
        }
    }
    if let Some((w, cb)) = &callback {
        if submit.classification.outcome() == Outcome::Error {
            w.abandon(&cb.token);
        } else {
            // A job was started: its webhook is due from the moment its end was seen.
            w.finished(&cb.token, job_id.as_deref());
        }
    }

    let duration = started.elapsed();
    let mut failed_expectations = check(probe.expect.as_ref(), &last, duration);
    let mut output_failed = false;
    if let (Some(wanted), true, Outcome::Success) = (
        probe.expect.as_ref().and_then(|e| e.output.as_ref()),
        failed_expectations.is_empty(),
        last.classification.outcome(),
    ) {
        let answer = last.json().unwrap_or(Value::Null);
        let failed =
            output::check(&probe.name, wanted, &answer, probe.request.body.as_ref(), &ctx.downloads, &ctx.observer)
                .await;
        output_failed = !failed.is_empty();
        failed_expectations.extend(failed);
    }
    let success = failed_expectations.is_empty();
    let failure_reason = if success {
        None
    } else if last.http_status.is_none() {
        Some(failure_of(&last.classification))
    } else if output_failed {
        Some(ProbeFailure::Output)
    } else {
        Some(job_failure.unwrap_or(ProbeFailure::Expectation))
    };
    let c = &last.classification;
    RunReport {
        probe: probe.name.clone(),
        success,
        failure_reason,
        failed_expectations,
        duration_seconds: duration.as_secs_f64(),
        started_at_unix,
        http_status: last.http_status,
        outcome: Some(c.outcome()),
        error_class: c.error_class(),
        reason: c.error().map(|e| e.reason),
        message: c.details().message.as_deref().map(|m| classify::truncate(m, 256)),
        job_id,
        retry_after_seconds: c.details().retry_after,
        exchanges,
    }
}

fn failure_of(c: &Classification) -> ProbeFailure {
    match c.error_class() {
        Some(ErrorClass::Timeout) => ProbeFailure::Timeout,
        _ => ProbeFailure::Transport,
    }
}

/// The key this probe's requests carry: the body's own `key` (an auth probe's wrong key), else
/// the configured one when the probe injects it.
fn key_for(probe: &Probe, upstream: &Upstream) -> Option<String> {
    let own = probe.request.body.as_ref().and_then(|b| b.get("key")).and_then(Value::as_str);
    match own {
        Some(k) => Some(k.to_owned()),
        None if probe.request.inject_key => upstream.api_key.as_ref().map(|k| k.expose().to_owned()),
        None => None,
    }
}

fn request_body(probe: &Probe, key: Option<&str>) -> Option<Value> {
    let mut body = probe.request.body.clone();
    if probe.request.inject_key {
        if let Some(key) = key {
            let obj = body.get_or_insert_with(|| Value::Object(Default::default()));
            if let Some(map) = obj.as_object_mut() {
                map.entry("key").or_insert_with(|| Value::String(key.to_owned()));
            }
        }
    }
    body
}

/// What every exchange of one run shares.
struct Call<'a> {
    ctx: &'a RunContext,
    upstream: &'a Upstream,
    probe: &'a Probe,
    key: Option<&'a str>,
    model: Option<&'a str>,
    model_label: &'a str,
}

impl Call<'_> {
    /// One HTTP exchange under its own client span (a fetch's span links to the submission's).
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        method: &http::Method,
        path: &str,
        body: Option<&Value>,
        kind: RequestKind,
        endpoint: &str,
        link_to: Option<&SpanContext>,
        reports: &mut Vec<ExchangeReport>,
    ) -> Answer {
        let started = Instant::now();
        let base = self.upstream.base_url.as_str().trim_end_matches('/');
        let url = format!("{base}{path}");
        let server = self.upstream.base_url.host_str().unwrap_or("");
        let span = observe::exchange_span(method.as_str(), path, server, Source::Probe, self.model, link_to);
        let mut req = self.ctx.client.request(method.clone(), &url).timeout(self.upstream.timeout);
        for (name, value) in &self.probe.request.headers.0 {
            req = req.header(name, value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let (http_status, classification, body, content_encoding) = match send(req).instrument(span.clone()).await {
            Ok((status, headers, bytes)) => {
                let classification = classify::classify(status, &headers, &bytes, &Context::new(kind));
                let content_encoding =
                    headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_owned);
                (Some(status), classification, Some(bytes), content_encoding)
            }
            Err(failure) => (None, classify::classify_failure(failure), None, None),
        };
        let duration = started.elapsed();
        let secrets: Vec<&str> = self.key.into_iter().collect();
        self.ctx.observer.emit(observe::ExchangeObserved {
            exchange: observe::Exchange {
                source: Source::Probe,
                endpoint,
                model: self.model_label,
                http_status,
                classification: &classification,
                duration,
            },
            span: &span,
            server: None,
            secrets: &secrets,
            request_model: None,
            job_id: None,
        });
        reports.push(ExchangeReport {
            kind,
            method: method.to_string(),
            endpoint: endpoint.to_owned(),
            http_status,
            outcome: classification.outcome(),
            error_class: classification.error_class(),
            reason: classification.error().map(|e| e.reason),
            duration_seconds: duration.as_secs_f64(),
        });
        Answer { http_status, classification, body, content_encoding, span: observe::span_context(&span) }
    }
}

/// Sends and reads the whole answer (up to [`MAX_BODY`]).
async fn send(req: reqwest::RequestBuilder) -> Result<(u16, http::HeaderMap, Bytes), Failure> {
    let mut resp = req.send().await.map_err(|e| if e.is_timeout() { Failure::Timeout } else { Failure::Transport })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(if e.is_timeout() { Failure::Timeout } else { Failure::Transport }),
        }
    }
    Ok((status, headers, Bytes::from(body)))
}

/// Every expectation that does not hold, in words. Without `expect`: outcome `success`.
fn check(expect: Option<&Expect>, answer: &Answer, duration: Duration) -> Vec<String> {
    let c = &answer.classification;
    let status_text = answer.http_status.map_or_else(|| "no response".to_owned(), |s| s.to_string());
    let Some(e) = expect else {
        return match c.outcome() {
            Outcome::Success => Vec::new(),
            other => vec![format!(
                "outcome is {} ({}), expected success",
                other.as_str(),
                c.error().map_or_else(|| status_text.clone(), |e| format!("{}/{}", e.class, e.reason))
            )],
        };
    };
    let mut failed = Vec::new();
    if !e.http_status.is_empty() && !answer.http_status.is_some_and(|s| e.http_status.contains(&s)) {
        failed.push(format!("http_status is {status_text}, expected one of {:?}", e.http_status));
    }
    if let Some(want) = e.status {
        let want = match want {
            ExpectStatus::Success => Outcome::Success,
            ExpectStatus::Processing => Outcome::Processing,
            ExpectStatus::Error => Outcome::Error,
        };
        if c.outcome() != want {
            failed.push(format!("status is {}, expected {}", c.outcome(), want));
        }
    }
    let class = c.error_class();
    if let Some(want) = e.error_class {
        if class != Some(want) {
            failed.push(format!("error_class is {}, expected {want}", class.map_or("none", |c| c.as_str())));
        }
    }
    let reason = c.error().map(|e| e.reason);
    if let Some(want) = e.reason {
        if reason != Some(want) {
            failed.push(format!("reason is {}, expected {want}", reason.map_or("none", |r| r.as_str())));
        }
    }
    if let Some(pattern) = &e.message_matches {
        if !c.details().message.as_deref().is_some_and(|m| pattern.0.is_match(m)) {
            failed.push(format!("message does not match /{}/", pattern.0.as_str()));
        }
    }
    if let Some(max) = e.max_duration {
        if duration > max {
            failed.push(format!(
                "took {}, more than max_duration {}",
                humantime::format_duration(Duration::from_millis(duration.as_millis() as u64)),
                humantime::format_duration(max)
            ));
        }
    }
    if !e.json.is_empty() {
        let json = answer.json();
        for check in &e.json {
            let found = json.as_ref().and_then(|j| j.pointer(&check.pointer));
            if let Some(exists) = check.exists {
                if found.is_some() != exists {
                    failed.push(format!("{} {}", check.pointer, if exists { "is missing" } else { "exists" }));
                }
            }
            if let Some(want) = &check.equals {
                if found != Some(want) {
                    failed.push(format!(
                        "{} is {}, expected {want}",
                        check.pointer,
                        found.map_or("missing".into(), Value::to_string)
                    ));
                }
            }
        }
    }
    failed
}
