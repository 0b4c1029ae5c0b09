//! One probe run: submit, follow the async job if asked, check the expectations. Every exchange
//! is an `observe` event with `source="probe"`. The run returns a uniform [`RunReport`]; the
//! caller puts it under the hard `timeout` and inside the run's root span. Durations are taken on
//! the runtime's clock, as the scheduler's are.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use super::output;
use crate::BoxFuture;
use crate::classify::{self, ApiStatus, Classification, Context, ErrorClass, Failure, Outcome, RequestKind};
use crate::clock;
use crate::config::{Expect, Follow, InjectKey, LlmExpect, Probe, ProbeRequest, Upstream};
use crate::observe::{self, JobResult, Observer, ProbeFailure, Source, SpanContext};
use crate::vocab::{AnswerOutcome, ExchangeReport, FinalAnswer, RunOutcome, RunReport};

/// Longest answer body a probe reads; API answers are a few KiB.
const MAX_BODY: usize = 8 << 20;
/// Longest wait between polls, whatever the eta says.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// What a run needs from the agent.
pub struct RunContext {
    /// Talks to the API.
    pub client: reqwest::Client,
    /// Downloads generated files from wherever answers point (never with the key).
    pub downloads: reqwest::Client,
    /// Where the run's events go.
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
    /// Of a streamed LLM answer.
    time_to_first_token: Option<Duration>,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        let body = self.body.as_ref()?;
        let decoded = classify::decode(self.content_encoding.as_deref(), body, MAX_BODY).ok()?;
        serde_json::from_slice(&decoded).ok()
    }
}

/// Runs `probe` once against `upstream`, within the current span (the run's root).
pub(super) async fn run(probe: &Probe, upstream: &Upstream, ctx: &RunContext) -> RunReport {
    let started = Instant::now();
    let started_at_unix = clock::unix_seconds();
    let mut exchanges = Vec::new();
    let key = key_for(probe, upstream);
    let mut body = request_body(probe, key.as_deref());
    let callback = ask_for_webhook(probe, ctx, &mut body).await;
    let model =
        probe.request.body.as_ref().and_then(|b| b.get("model_id").or_else(|| b.get("model"))).and_then(Value::as_str);
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
    let job = match (&probe.follow, submit.classification.outcome(), submit.classification.details().id.clone()) {
        (Some(follow), Outcome::Processing, Some(id)) => {
            Some(follow_job(&call, follow, &submit, &id, &submit_endpoint, started, &mut exchanges).await)
        }
        _ => {
            // A synchronous success delivers at once.
            ctx.observer.delivered(
                Source::Probe,
                &submit_endpoint,
                &model_label,
                started.elapsed(),
                &submit.classification,
            );
            None
        }
    };
    let (last, job_failure, job_id) = match job {
        Some(j) => (j.last, j.failure, Some(j.id)),
        None => (submit.clone(), None, submit.classification.details().id.clone()),
    };
    if let Some((w, cb)) = &callback {
        if submit.classification.outcome() == Outcome::Error {
            w.abandon(&cb.token);
        } else {
            // A job was started: its webhook is due from the moment its end was seen.
            w.finished(&cb.token, job_id.as_deref());
        }
    }

    let duration = started.elapsed();
    let outcome = judge(probe, ctx, &last, duration, job_failure).await;
    let c = &last.classification;
    RunReport {
        probe: probe.name.clone(),
        outcome,
        duration_seconds: duration.as_secs_f64(),
        started_at_unix,
        answer: Some(FinalAnswer {
            http_status: last.http_status,
            outcome: AnswerOutcome::of(c),
            message: c.details().message.as_deref().map(|m| classify::truncate(m, 256)),
            job_id,
            retry_after_seconds: c.details().retry_after,
        }),
        exchanges,
    }
}

/// With `follow.webhook`, asks the API for a webhook: a URL with a token of this run's own, and
/// a track id.
async fn ask_for_webhook<'a>(
    probe: &Probe,
    ctx: &'a RunContext,
    body: &mut Option<Value>,
) -> Option<(&'a Arc<dyn WebhookWatch>, Callback)> {
    let (Some(follow), Some(w)) = (&probe.follow, &ctx.webhooks) else { return None };
    if !follow.webhook {
        return None;
    }
    let cb = w.expect(&probe.name).await;
    if let Some(map) = body.get_or_insert_with(|| Value::Object(Default::default())).as_object_mut() {
        map.insert("webhook".into(), Value::String(cb.url.clone()));
        map.insert("track_id".into(), Value::String(cb.track_id.clone()));
    }
    Some((w, cb))
}

/// A followed job's end.
struct JobOutcome {
    /// The terminal answer (or the last one, when the wait ran out).
    last: Answer,
    failure: Option<ProbeFailure>,
    id: String,
}

/// Polls the job `id` at its fetch path until a terminal answer or `max_wait`, honouring the
/// eta; the job's end feeds the shared job metrics.
async fn follow_job(
    call: &Call<'_>,
    follow: &Follow,
    submit: &Answer,
    id: &str,
    submit_endpoint: &str,
    submitted: Instant,
    exchanges: &mut Vec<ExchangeReport>,
) -> JobOutcome {
    let observer = &call.ctx.observer;
    observer.emit(observe::JobStarted { source: Source::Probe });
    let first_eta = submit.classification.eta();
    let fetch_path = call.probe.fetch_path().unwrap_or_default().replace("{id}", id);
    let fetch_endpoint = observer.endpoint_label(&fetch_path);
    let fetch_body = call.key.map(|k| serde_json::json!({ "key": k }));
    let started = Instant::now();
    let mut last = submit.clone();
    let mut failure = None;
    let result = loop {
        let wait = last.classification.eta().map(Duration::from_secs_f64).unwrap_or(follow.poll_interval);
        let wait = wait.clamp(follow.poll_interval, MAX_POLL_WAIT.max(follow.poll_interval));
        if started.elapsed() + wait > follow.max_wait {
            failure = Some(ProbeFailure::JobTimeout);
            break JobResult::Expired;
        }
        tokio::time::sleep(wait).await;
        last = call
            .exchange(
                &http::Method::POST,
                &fetch_path,
                fetch_body.as_ref(),
                RequestKind::Fetch,
                &fetch_endpoint,
                Some(&submit.span),
                exchanges,
            )
            .await;
        match last.classification.outcome() {
            Outcome::Processing => continue,
            Outcome::Success => break JobResult::Success,
            Outcome::Error => {
                failure = Some(match last.http_status {
                    None => failure_of(&last.classification),
                    Some(_) => ProbeFailure::JobFailed,
                });
                let failed = last.classification.details().api_status == Some(ApiStatus::Failed);
                break if failed { JobResult::Failed } else { JobResult::Error };
            }
        }
    };
    // Submit to the terminal answer, as the proxy measures its jobs.
    let duration = submitted.elapsed();
    observer.emit(observe::JobEnded {
        job: observe::JobEnd {
            source: Source::Probe,
            endpoint: submit_endpoint,
            model: call.model_label,
            result,
            duration,
            first_eta,
        },
        span: None,
        submitted: None,
    });
    observer.delivered(Source::Probe, submit_endpoint, call.model_label, duration, &last.classification);
    let id = last.classification.details().id.clone().unwrap_or_else(|| id.to_owned());
    JobOutcome { last, failure, id }
}

/// The run's verdict: every expectation on the final answer, then the output checks (only of a
/// success that met the rest).
async fn judge(
    probe: &Probe,
    ctx: &RunContext,
    last: &Answer,
    duration: Duration,
    job_failure: Option<ProbeFailure>,
) -> RunOutcome {
    let mut failed = check(probe.expect.as_ref(), last, duration);
    let mut output_failed = false;
    if let (Some(wanted), true, Outcome::Success) =
        (probe.expect.as_ref().and_then(|e| e.output.as_ref()), failed.is_empty(), last.classification.outcome())
    {
        let answer = last.json().unwrap_or(Value::Null);
        let found =
            output::check(&probe.name, wanted, &answer, probe.request.body.as_ref(), &ctx.downloads, &ctx.observer)
                .await;
        output_failed = !found.is_empty();
        failed.extend(found);
    }
    if failed.is_empty() {
        return RunOutcome::Success;
    }
    let reason = if last.http_status.is_none() {
        failure_of(&last.classification)
    } else if output_failed {
        ProbeFailure::Output
    } else {
        job_failure.unwrap_or(ProbeFailure::Expectation)
    };
    RunOutcome::Failure { reason, failed_expectations: failed }
}

fn failure_of(c: &Classification) -> ProbeFailure {
    match c.error_class() {
        Some(ErrorClass::Timeout) => ProbeFailure::Timeout,
        _ => ProbeFailure::Transport,
    }
}

/// The key this probe's requests carry: the request's own (an auth probe's wrong key), else the
/// configured one when the probe injects it.
fn key_for(probe: &Probe, upstream: &Upstream) -> Option<String> {
    match probe.request.own_key() {
        Some(k) => Some(k.to_owned()),
        None if probe.request.inject_key.injects() => upstream.api_key.as_ref().map(|k| k.expose().to_owned()),
        None => None,
    }
}

fn request_body(probe: &Probe, key: Option<&str>) -> Option<Value> {
    let mut body = probe.request.body.clone();
    if let (InjectKey::Body, Some(key)) = (probe.request.inject_key, key) {
        let obj = body.get_or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = obj.as_object_mut() {
            map.entry("key").or_insert_with(|| Value::String(key.to_owned()));
        }
    }
    body
}

/// The request's key where `inject_key` puts it outside the body (a header, or the query of
/// `url`), unless the request carries its own.
fn place_key(
    client: &reqwest::Client,
    method: &http::Method,
    mut url: url::Url,
    request: &ProbeRequest,
    key: Option<&str>,
) -> reqwest::RequestBuilder {
    let key = key.filter(|_| !request.carries_a_key());
    if let (InjectKey::Query, Some(key)) = (request.inject_key, key) {
        url.query_pairs_mut().append_pair("key", key);
    }
    let req = client.request(method.clone(), url);
    match (request.inject_key, key) {
        (InjectKey::Bearer, Some(key)) => req.bearer_auth(key),
        (InjectKey::XApiKey, Some(key)) => req.header("x-api-key", key),
        _ => req,
    }
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
        let mut req = match url::Url::parse(&url) {
            Ok(u) if kind == RequestKind::Submit => {
                place_key(&self.ctx.client, method, u, &self.probe.request, self.key)
            }
            _ => self.ctx.client.request(method.clone(), &url),
        }
        .timeout(self.upstream.timeout);
        for (name, value) in &self.probe.request.headers.0 {
            req = req.header(name, value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let (http_status, classification, body, content_encoding, first_token) =
            match send(req, started).instrument(span.clone()).await {
                Ok(r) => {
                    let classification = classify::classify(r.status, &r.headers, &r.body, &Context::new(kind));
                    let content_encoding =
                        r.headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    (Some(r.status), classification, Some(r.body), content_encoding, r.first_token)
                }
                Err(failure) => (None, classify::classify_failure(failure), None, None, None),
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
                time_to_first_token: first_token,
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
            outcome: AnswerOutcome::of(&classification),
            duration_seconds: duration.as_secs_f64(),
        });
        Answer {
            http_status,
            classification,
            body,
            content_encoding,
            span: observe::span_context(&span),
            time_to_first_token: first_token,
        }
    }
}

/// A whole answer.
struct Received {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    /// `started` to the first content delta, when the answer is an event stream.
    first_token: Option<Duration>,
}

/// Sends and reads the whole answer (up to [`MAX_BODY`]); an event stream is read as it arrives,
/// for its time to first token. A stream cut midway is still an answer: the classifier says it
/// was interrupted.
async fn send(req: reqwest::RequestBuilder, started: Instant) -> Result<Received, Failure> {
    let mut resp = req.send().await.map_err(|e| if e.is_timeout() { Failure::Timeout } else { Failure::Transport })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut events =
        (resp.status().is_success() && classify::stream::is_event_stream(&headers)).then(classify::stream::Reader::new);
    let mut first_token = None;
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if events.as_mut().is_some_and(|r| r.feed(&chunk)) {
                    first_token = Some(started.elapsed());
                }
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) if events.is_some() => break,
            Err(e) => return Err(if e.is_timeout() { Failure::Timeout } else { Failure::Transport }),
        }
    }
    Ok(Received { status, headers, body: Bytes::from(body), first_token })
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
    if let Some(llm) = &e.llm {
        check_llm(llm, answer, &mut failed);
    }
    failed
}

/// `expect.llm`: the answer's output tokens, finish reasons and time to first token.
fn check_llm(want: &LlmExpect, answer: &Answer, failed: &mut Vec<String>) {
    let details = answer.classification.details().llm.clone().unwrap_or_default();
    if let Some(min) = want.min_output_tokens {
        match details.output_tokens {
            Some(n) if n >= min => {}
            Some(n) => failed.push(format!("{n} output tokens, expected at least {min}")),
            None => failed.push(format!("the answer counts no output tokens, expected at least {min}")),
        }
    }
    if !want.finish_reasons.is_empty() {
        let unexpected: Vec<&str> =
            details.finish_reasons.iter().filter(|r| !want.finish_reasons.contains(r)).map(|r| r.as_str()).collect();
        if !unexpected.is_empty() || details.finish_reasons.is_empty() {
            let got = if details.finish_reasons.is_empty() { "none".to_owned() } else { unexpected.join(", ") };
            let allowed: Vec<&str> = want.finish_reasons.iter().map(|r| r.as_str()).collect();
            failed.push(format!("finish reason {got}, expected one of {}", allowed.join(", ")));
        }
    }
    if let Some(max) = want.max_time_to_first_token {
        let ms = |d: Duration| humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string();
        match answer.time_to_first_token {
            Some(t) if t <= max => {}
            Some(t) => failed.push(format!("first token after {}, more than {}", ms(t), ms(max))),
            None => failed.push("no streamed content arrived (max_time_to_first_token needs a stream)".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn answer(status: Option<u16>, body: &str) -> Answer {
        let classification = match status {
            Some(s) => classify::classify(s, &HeaderMap::new(), body.as_bytes(), &Context::new(RequestKind::Submit)),
            None => classify::classify_failure(Failure::Timeout),
        };
        Answer {
            http_status: status,
            classification,
            body: status.map(|_| Bytes::from(body.to_owned())),
            content_encoding: None,
            span: SpanContext::empty_context(),
            time_to_first_token: None,
        }
    }

    fn expect(yaml: &str) -> Expect {
        crate::config::parse_document(yaml).unwrap()
    }

    #[test]
    fn every_expectation_holds_or_says_why() {
        let missing = r#"{"status":"error","message":"prompt is required"}"#;
        let done = r#"{"status":"success","id":7,"output":["https://cdn/x.png"],"meta":{"W":512}}"#;
        let second = Duration::from_secs(1);
        // The `expect` section, the answer's status (`None`: no answer) and body, the run's
        // duration, and the expectations that fail.
        type Row<'a> = (&'a str, Option<u16>, &'a str, Duration, &'a [&'a str]);
        let table: &[Row<'_>] = &[
            // Without `expect`: outcome success.
            ("", Some(200), done, second, &[]),
            ("", Some(400), missing, second, &["outcome is error (bad_request/missing_parameter), expected success"]),
            ("", None, "", second, &["outcome is error (timeout/other), expected success"]),
            ("http_status: [400]", Some(400), missing, second, &[]),
            ("http_status: [400, 422]", Some(200), done, second, &["http_status is 200, expected one of [400, 422]"]),
            ("http_status: [400]", None, "", second, &["http_status is no response, expected one of [400]"]),
            ("status: error", Some(400), missing, second, &[]),
            ("status: processing", Some(200), done, second, &["status is success, expected processing"]),
            ("error_class: bad_request", Some(400), missing, second, &[]),
            ("error_class: unauthorized", Some(200), done, second, &["error_class is none, expected unauthorized"]),
            ("reason: missing_parameter", Some(400), missing, second, &[]),
            (
                "reason: out_of_range",
                Some(400),
                missing,
                second,
                &["reason is missing_parameter, expected out_of_range"],
            ),
            ("message_matches: '(?i)PROMPT'", Some(400), missing, second, &[]),
            ("message_matches: width", Some(400), missing, second, &["message does not match /width/"]),
            ("max_duration: 2s", Some(200), done, second, &[]),
            ("max_duration: 500ms", Some(200), done, second, &["took 1s, more than max_duration 500ms"]),
            ("json: [{pointer: /output/0, exists: true}]", Some(200), done, second, &[]),
            ("json: [{pointer: /output/1, exists: true}]", Some(200), done, second, &["/output/1 is missing"]),
            ("json: [{pointer: /id, exists: false}]", Some(200), done, second, &["/id exists"]),
            ("json: [{pointer: /meta/W, equals: 512}]", Some(200), done, second, &[]),
            ("json: [{pointer: /meta/W, equals: 1024}]", Some(200), done, second, &["/meta/W is 512, expected 1024"]),
            ("json: [{pointer: /meta/H, equals: 512}]", Some(200), done, second, &["/meta/H is missing, expected 512"]),
            (
                "{ http_status: [200], status: success, max_duration: 1ms }",
                Some(400),
                missing,
                second,
                &[
                    "http_status is 400, expected one of [200]",
                    "status is error, expected success",
                    "took 1s, more than max_duration 1ms",
                ],
            ),
        ];
        for (yaml, status, body, took, want) in table {
            let e = (!yaml.is_empty()).then(|| expect(yaml));
            let got = check(e.as_ref(), &answer(*status, body), *took);
            assert_eq!(got, *want, "expect {yaml:?} on {status:?} {body}");
        }
    }
}
