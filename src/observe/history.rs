//! A short memory for people: the last 15 minutes in 15-second buckets (traffic by outcome and
//! error class, the LLM API's part of it with its tokens and finish reasons, jobs, webhooks,
//! output checks, SLO events), each probe's last runs, the last job ends, times to first token
//! and balance samples. The status page (`/`) and `/api/v1/status` show it; Prometheus keeps
//! the long history.
//!
//! Bounded whatever happens: a fixed number of buckets, runs per probe, jobs and samples; maps
//! are keyed by closed vocabularies or config names (probes, SLOs) only. Wall-clock time, so that
//! the page can say "at 14:02:15".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::classify::{Classification, ErrorClass, FinishReason, Outcome};
use crate::clock::unix_seconds as unix_now;
use crate::vocab::{
    Exchange, Generated, JobEnd, JobResult, OutputResult, ProbeFailure, WebhookResult, is_llm_endpoint,
};

/// Seconds one bucket spans (a typical scrape interval).
pub const BUCKET_SECONDS: u64 = 15;
/// Buckets kept: 15 minutes.
pub const BUCKETS: usize = 60;
/// Runs kept per probe.
const RUNS_KEPT: usize = 30;
/// Job ends kept (for duration and eta percentiles).
const JOBS_KEPT: usize = 500;
/// Balance samples kept (a poll every 5 min fills 15 minutes with 3; a demo's 5 s, with 180).
const BALANCE_KEPT: usize = 200;
/// Times to first token kept (for their percentiles).
const FIRST_TOKENS_KEPT: usize = 500;
/// Deliveries kept (for the generation and queue-wait percentiles by model).
const GENERATED_KEPT: usize = 500;

/// The error classes that are the API's fault (not a caller's bad request, key or full queue):
/// the default of a requests SLI.
pub const API_FAULTS: &[ErrorClass] = &[
    ErrorClass::ServerError,
    ErrorClass::Unavailable,
    ErrorClass::Timeout,
    ErrorClass::Transport,
    ErrorClass::InvalidResponse,
];

/// One 15-second slice of what happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Unix seconds the bucket starts at.
    pub start: u64,
    /// Exchanges that were successes.
    pub success: u32,
    /// Exchanges that were `processing`.
    pub processing: u32,
    /// Exchanges that were errors.
    pub error: u32,
    /// Errors by class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<ErrorClass, u32>,
    /// Jobs that ended, by result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<JobResult, u32>,
    /// Webhook verdicts, by result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub webhooks: BTreeMap<WebhookResult, u32>,
    /// Output checks, by result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<OutputResult, u32>,
    /// SLO events: `[good, bad]` by SLO.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slos: BTreeMap<String, [u32; 2]>,
    /// Output URLs delivered (synchronous successes and finished jobs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delivered: u32,
    /// The LLM API's part of the exchanges above.
    #[serde(default, skip_serializing_if = "LlmBucket::is_empty")]
    pub llm: LlmBucket,
}

/// The LLM API's exchanges (`/api/v7/llm/…`) of one bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmBucket {
    /// Exchanges.
    pub requests: u32,
    /// Of those, errors, by class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<ErrorClass, u32>,
    /// Tokens of successful answers: prompts.
    pub input_tokens: u64,
    /// Tokens of successful answers: the answers.
    pub output_tokens: u64,
    /// Why the answers stopped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub finish_reasons: BTreeMap<FinishReason, u32>,
}

impl LlmBucket {
    fn is_empty(&self) -> bool {
        self.requests == 0
    }

    fn add(&mut self, c: &Classification) {
        self.requests += 1;
        if let Some(e) = c.error() {
            *self.classes.entry(e.class).or_default() += 1;
        }
        if let (Some(llm), Outcome::Success) = (&c.details().llm, c.outcome()) {
            self.input_tokens += llm.input_tokens.unwrap_or(0);
            self.output_tokens += llm.output_tokens.unwrap_or(0);
            for r in &llm.finish_reasons {
                *self.finish_reasons.entry(*r).or_default() += 1;
            }
        }
    }
}

impl Bucket {
    fn requests(&self) -> u32 {
        self.success + self.processing + self.error
    }
}

/// One probe run, as the strip of recent runs shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMark {
    /// When the run started (Unix seconds).
    pub at_unix: f64,
    /// Whether it met its expectations.
    pub success: bool,
    /// How long it took.
    pub duration_seconds: f64,
    /// Why it failed, when it did.
    pub failure_reason: Option<ProbeFailure>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A delivery whose answer said its `generationTime`.
#[derive(Debug, Clone)]
struct GenerationMark {
    at: f64,
    model: String,
    generation: f64,
    queue_wait: f64,
}

#[derive(Debug, Clone, Copy)]
struct JobMark {
    at: f64,
    result: JobResult,
    duration: f64,
    eta: Option<f64>,
}

/// An SLO as the page needs it.
#[derive(Debug, Clone)]
struct SloMark {
    objective: f64,
    min_events: u32,
    good: u64,
    bad: u64,
}

#[derive(Default)]
struct Inner {
    /// Oldest first; starts are multiples of `BUCKET_SECONDS`, gaps left out.
    buckets: VecDeque<Bucket>,
    probes: HashMap<String, VecDeque<RunMark>>,
    jobs: VecDeque<JobMark>,
    in_flight: i64,
    balance: VecDeque<(f64, f64)>,
    /// The last 429's `retry_after` and when it came.
    retry_after: Option<(f64, f64)>,
    queue_limit: Option<u32>,
    slos: BTreeMap<String, SloMark>,
    /// (when, seconds) of streamed LLM answers' first tokens.
    first_tokens: VecDeque<(f64, f64)>,
    generated: VecDeque<GenerationMark>,
}

impl Inner {
    /// The bucket `at` falls in, created (and the oldest dropped) as time moves on.
    fn bucket(&mut self, at: f64) -> &mut Bucket {
        let start = (at.max(0.0) as u64) / BUCKET_SECONDS * BUCKET_SECONDS;
        let oldest_kept = start.saturating_sub(BUCKET_SECONDS * (BUCKETS as u64 - 1));
        while self.buckets.front().is_some_and(|b| b.start < oldest_kept) {
            self.buckets.pop_front();
        }
        // Late events (a clock step back) land in the newest bucket rather than reorder them.
        if self.buckets.back().is_none_or(|b| b.start < start) {
            self.buckets.push_back(Bucket { start, ..Bucket::default() });
        }
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }
}

/// The short history. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an observed exchange.
    pub fn exchange(&self, ex: &Exchange<'_>) {
        let first_token = ex.time_to_first_token.map(|t| t.as_secs_f64());
        self.exchange_at(ex.classification, is_llm_endpoint(ex.endpoint), first_token, unix_now());
    }

    fn exchange_at(&self, c: &Classification, llm: bool, first_token: Option<f64>, at: f64) {
        let mut h = self.lock();
        if let Some(t) = first_token {
            if h.first_tokens.len() == FIRST_TOKENS_KEPT {
                h.first_tokens.pop_front();
            }
            h.first_tokens.push_back((at, t));
        }
        let details = c.details();
        if let Some(limit) = details.queue_limit {
            h.queue_limit = Some(limit);
        }
        if c.error_class() == Some(ErrorClass::RateLimited) {
            if let Some(wait) = details.retry_after {
                h.retry_after = Some((wait, at));
            }
        }
        let b = h.bucket(at);
        if llm {
            b.llm.add(c);
        }
        match c {
            Classification::Success { .. } => b.success += 1,
            Classification::Processing { .. } => b.processing += 1,
            Classification::Error { error, .. } => {
                b.error += 1;
                *b.classes.entry(error.class).or_default() += 1;
            }
        }
    }

    /// N of the last `Maximum N queued requests` seen.
    pub fn queue_limit(&self) -> Option<u32> {
        self.lock().queue_limit
    }

    /// A job began to be followed.
    pub fn job_started(&self) {
        self.lock().in_flight += 1;
    }

    /// A followed job ended.
    pub fn job_ended(&self, job: &JobEnd<'_>) {
        self.job_ended_at(job.result, job.duration.as_secs_f64(), job.first_eta, unix_now());
    }

    fn job_ended_at(&self, result: JobResult, duration: f64, eta: Option<f64>, at: f64) {
        let mut h = self.lock();
        h.in_flight -= 1;
        if h.jobs.len() == JOBS_KEPT {
            h.jobs.pop_front();
        }
        h.jobs.push_back(JobMark { at, result, duration, eta });
        *h.bucket(at).jobs.entry(result).or_default() += 1;
    }

    /// A generation delivered: its files, and where its time went when the API said.
    pub fn generated(&self, g: &Generated<'_>) {
        self.generated_at(g, unix_now());
    }

    fn generated_at(&self, g: &Generated<'_>, at: f64) {
        let mut h = self.lock();
        h.bucket(at).delivered += g.outputs;
        if let (Some(generation), Some(queue_wait)) = (g.generation_time, g.queue_wait()) {
            // The oldest mark's model text is reused once the ring is full: no allocation per job.
            let mut model = if h.generated.len() == GENERATED_KEPT {
                h.generated.pop_front().map(|m| m.model).unwrap_or_default()
            } else {
                String::new()
            };
            model.clear();
            model.push_str(g.model);
            h.generated.push_back(GenerationMark { at, model, generation, queue_wait });
        }
    }

    /// Remembers a probe's run (the last 30).
    pub fn probe_run(&self, probe: &str, mark: RunMark) {
        let mut h = self.lock();
        let runs = h.probes.entry(probe.to_owned()).or_default();
        if runs.len() == RUNS_KEPT {
            runs.pop_front();
        }
        runs.push_back(mark);
    }

    /// Forgets a probe that left the configuration.
    pub fn probe_removed(&self, probe: &str) {
        self.lock().probes.remove(probe);
    }

    /// A probe's last runs, oldest first.
    pub fn probe_runs(&self, probe: &str) -> Vec<RunMark> {
        self.lock().probes.get(probe).map(|r| r.iter().cloned().collect()).unwrap_or_default()
    }

    /// Counts a webhook verdict.
    pub fn webhook(&self, result: WebhookResult) {
        let mut h = self.lock();
        *h.bucket(unix_now()).webhooks.entry(result).or_default() += 1;
    }

    /// Counts an output check.
    pub fn output(&self, result: OutputResult) {
        let mut h = self.lock();
        *h.bucket(unix_now()).outputs.entry(result).or_default() += 1;
    }

    /// Remembers a balance read.
    pub fn balance(&self, balance: f64) {
        self.balance_at(balance, unix_now());
    }

    fn balance_at(&self, balance: f64, at: f64) {
        let mut h = self.lock();
        if h.balance.len() == BALANCE_KEPT {
            h.balance.pop_front();
        }
        h.balance.push_back((at, balance));
    }

    /// The SLOs now in force: `(name, objective percent, min_events)`. Counts of SLOs that stay
    /// are kept.
    pub fn set_slos(&self, slos: &[(String, f64, u32)]) {
        let mut h = self.lock();
        let old = std::mem::take(&mut h.slos);
        for (name, objective, min_events) in slos {
            let (good, bad) = old.get(name).map_or((0, 0), |m| (m.good, m.bad));
            h.slos.insert(name.clone(), SloMark { objective: *objective, min_events: *min_events, good, bad });
        }
        for b in &mut h.buckets {
            b.slos.retain(|name, _| slos.iter().any(|(n, _, _)| n == name));
        }
    }

    /// Counts an SLO's judgement of one event.
    pub fn slo_event(&self, slo: &str, good: bool) {
        let mut h = self.lock();
        let Some(mark) = h.slos.get_mut(slo) else { return };
        if good {
            mark.good += 1;
        } else {
            mark.bad += 1;
        }
        let counts = h.bucket(unix_now()).slos.entry(slo.to_owned()).or_default();
        counts[usize::from(!good)] += 1;
    }

    /// What the last 15 minutes looked like.
    pub fn recent(&self) -> Recent {
        self.recent_at(unix_now())
    }

    fn recent_at(&self, now: f64) -> Recent {
        let h = self.lock();
        let newest = (now.max(0.0) as u64) / BUCKET_SECONDS * BUCKET_SECONDS;
        let oldest = newest.saturating_sub(BUCKET_SECONDS * (BUCKETS as u64 - 1));
        let traffic: Vec<Bucket> = (0..BUCKETS as u64)
            .map(|i| oldest + i * BUCKET_SECONDS)
            .map(|start| {
                h.buckets
                    .iter()
                    .find(|b| b.start == start)
                    .cloned()
                    .unwrap_or_else(|| Bucket { start, ..Bucket::default() })
            })
            .collect();
        let since = |minutes: u64| traffic.iter().filter(move |b| b.start + minutes * 60 > newest);
        fn sum<K: Ord + Copy>(traffic: &[Bucket], map: fn(&Bucket) -> &BTreeMap<K, u32>) -> BTreeMap<K, u32> {
            let mut out = BTreeMap::new();
            for b in traffic {
                for (k, v) in map(b) {
                    *out.entry(*k).or_default() += v;
                }
            }
            out
        }

        let five: Vec<&Bucket> = since(5).collect();
        let requests_5m: u32 = five.iter().map(|b| b.requests()).sum();
        let class_5m = |classes: &[ErrorClass]| -> u32 {
            five.iter().flat_map(|b| classes.iter().map(move |c| b.classes.get(c).copied().unwrap_or(0))).sum()
        };
        let totals = Totals {
            requests: traffic.iter().map(Bucket::requests).sum(),
            success: traffic.iter().map(|b| b.success).sum(),
            processing: traffic.iter().map(|b| b.processing).sum(),
            error: traffic.iter().map(|b| b.error).sum(),
            classes: sum(&traffic, |b| &b.classes),
            requests_5m,
            api_faults_5m: class_5m(API_FAULTS),
            rate_limited_5m: class_5m(&[ErrorClass::RateLimited]),
            payment_required_5m: class_5m(&[ErrorClass::PaymentRequired]),
        };

        let window_start = oldest as f64;
        let jobs: Vec<&JobMark> = h.jobs.iter().filter(|j| j.at >= window_start).collect();
        let mut durations: Vec<f64> =
            jobs.iter().filter(|j| j.result == JobResult::Success).map(|j| j.duration).collect();
        let mut ratios: Vec<f64> = jobs
            .iter()
            .filter(|j| j.result == JobResult::Success)
            .filter_map(|j| j.eta.filter(|e| *e > 0.0).map(|e| j.duration / e))
            .collect();
        let jobs_view = Jobs {
            in_flight: h.in_flight.max(0) as u64,
            finished: sum(&traffic, |b| &b.jobs),
            duration_p50_seconds: percentile(&mut durations, 0.5),
            duration_p95_seconds: percentile(&mut durations, 0.95),
            eta_ratio_p50: percentile(&mut ratios, 0.5),
            over_twice_eta: ratios.iter().filter(|r| **r > 2.0).count() as u32,
            with_eta: ratios.len() as u32,
        };

        let rate_limits = RateLimits {
            rate_limited: totals.classes.get(&ErrorClass::RateLimited).copied().unwrap_or(0),
            last_retry_after_seconds: h.retry_after.map(|(w, _)| w),
            last_retry_after_at_unix: h.retry_after.map(|(_, at)| at),
            queue_limit: h.queue_limit,
        };

        let slos = h
            .slos
            .iter()
            .map(|(name, m)| {
                let (good, bad) = traffic
                    .iter()
                    .filter_map(|b| b.slos.get(name))
                    .fold((0u32, 0u32), |(g, x), c| (g + c[0], x + c[1]));
                let allowed = 1.0 - m.objective / 100.0;
                let ratio = |bad: f64, total: f64| (total > 0.0 && allowed > 0.0).then(|| bad / total / allowed);
                SloView {
                    name: name.clone(),
                    objective: m.objective,
                    min_events: m.min_events,
                    good_total: m.good,
                    bad_total: m.bad,
                    budget_spent_ratio: ratio(m.bad as f64, (m.good + m.bad) as f64),
                    events_15m: good + bad,
                    burn_rate_15m: ratio(f64::from(bad), f64::from(good + bad)),
                }
            })
            .collect();

        let (webhooks, outputs) = (sum(&traffic, |b| &b.webhooks), sum(&traffic, |b| &b.outputs));
        let mut first_tokens: Vec<f64> =
            h.first_tokens.iter().filter(|(at, _)| *at >= window_start).map(|(_, t)| *t).collect();
        let finish_reasons = sum(&traffic, |b| &b.llm.finish_reasons);
        let llm = LlmView {
            requests: traffic.iter().map(|b| b.llm.requests).sum(),
            error: traffic.iter().map(|b| b.llm.classes.values().sum::<u32>()).sum(),
            classes: sum(&traffic, |b| &b.llm.classes),
            input_tokens: traffic.iter().map(|b| b.llm.input_tokens).sum(),
            output_tokens: traffic.iter().map(|b| b.llm.output_tokens).sum(),
            truncated: finish_reasons.iter().filter(|(r, _)| r.truncated()).map(|(_, n)| n).sum(),
            finish_reasons,
            streams: first_tokens.len() as u32,
            time_to_first_token_p50_seconds: percentile(&mut first_tokens, 0.5),
            time_to_first_token_p95_seconds: percentile(&mut first_tokens, 0.95),
        };
        let delivered: u32 = traffic.iter().map(|b| b.delivered).sum();
        let time = time_by_model(h.generated.iter().filter(|g| g.at >= window_start));
        Recent {
            bucket_seconds: BUCKET_SECONDS,
            traffic,
            totals,
            webhooks,
            outputs,
            jobs: jobs_view,
            rate_limits,
            credits: spend(&h.balance, window_start, delivered),
            delivered,
            time,
            slos,
            llm,
        }
    }
}

/// The `q` quantile of `values` (sorted in place), nearest rank.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// The spend rate over the samples since `from`, counting only falls (a top-up is not negative
/// spend), how long the last balance lasts at it, and what each of `delivered` outputs cost.
fn spend(samples: &VecDeque<(f64, f64)>, from: f64, delivered: u32) -> Option<Credits> {
    let window: Vec<&(f64, f64)> = samples.iter().filter(|(at, _)| *at >= from).collect();
    let (first, last) = (window.first()?, window.last()?);
    let span_hours = (last.0 - first.0) / 3600.0;
    if span_hours <= 0.0 {
        return None;
    }
    let spent: f64 = window.windows(2).map(|w| (w[0].1 - w[1].1).max(0.0)).sum();
    let per_hour = spent / span_hours;
    Some(Credits {
        spend_per_hour: per_hour,
        runway_hours: (per_hour > 0.0).then(|| last.1.max(0.0) / per_hour),
        spent,
        per_output: (delivered > 0).then(|| spent / f64::from(delivered)),
    })
}

/// Generation and queue-wait percentiles by model, models by name.
fn time_by_model<'a>(marks: impl Iterator<Item = &'a GenerationMark>) -> Vec<ModelTime> {
    let mut by_model: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for m in marks {
        let (generation, wait) = by_model.entry(m.model.as_str()).or_default();
        generation.push(m.generation);
        wait.push(m.queue_wait);
    }
    by_model
        .into_iter()
        .map(|(model, (mut generation, mut wait))| ModelTime {
            model: model.to_owned(),
            jobs: generation.len() as u32,
            generation_p50_seconds: percentile(&mut generation, 0.5),
            generation_p95_seconds: percentile(&mut generation, 0.95),
            queue_wait_p50_seconds: percentile(&mut wait, 0.5),
            queue_wait_p95_seconds: percentile(&mut wait, 0.95),
        })
        .collect()
}

/// The last 15 minutes, as `/api/v1/status` shows them under `recent`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recent {
    /// Seconds one bucket of `traffic` spans.
    pub bucket_seconds: u64,
    /// 60 buckets, oldest first, the current one last.
    pub traffic: Vec<Bucket>,
    /// Counts over the window, and over its last 5 minutes.
    pub totals: Totals,
    /// Webhook verdicts over the window.
    pub webhooks: BTreeMap<WebhookResult, u32>,
    /// Output checks over the window.
    pub outputs: BTreeMap<OutputResult, u32>,
    /// Jobs that ended in the window.
    pub jobs: Jobs,
    /// Rate limits met in the window.
    pub rate_limits: RateLimits,
    /// From the balance polls in the window (`account.balance`).
    pub credits: Option<Credits>,
    /// Output URLs delivered in the window.
    #[serde(default)]
    pub delivered: u32,
    /// Where the time of the window's deliveries went, by model (those whose answer said its
    /// `generationTime`).
    #[serde(default)]
    pub time: Vec<ModelTime>,
    /// Each SLO's events.
    pub slos: Vec<SloView>,
    /// The LLM API's part of the traffic.
    #[serde(default)]
    pub llm: LlmView,
}

/// The LLM API's exchanges over the window (a part of `totals`: the rest is the media API).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LlmView {
    /// Exchanges.
    pub requests: u32,
    /// Of those, errors.
    pub error: u32,
    /// Errors by class.
    pub classes: BTreeMap<ErrorClass, u32>,
    /// Prompt tokens of successful answers.
    pub input_tokens: u64,
    /// Answer tokens of successful answers.
    pub output_tokens: u64,
    /// Why the answers stopped.
    pub finish_reasons: BTreeMap<FinishReason, u32>,
    /// Answers cut at their token limit (`length`, `max_tokens`).
    pub truncated: u32,
    /// Streamed answers whose first token arrived.
    pub streams: u32,
    /// Request sent to the first content delta, over those streams.
    pub time_to_first_token_p50_seconds: Option<f64>,
    /// The 95th percentile of the same.
    pub time_to_first_token_p95_seconds: Option<f64>,
}

/// Exchanges over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    /// All of them.
    pub requests: u32,
    /// Successes.
    pub success: u32,
    /// Processing answers.
    pub processing: u32,
    /// Errors.
    pub error: u32,
    /// Errors by class.
    pub classes: BTreeMap<ErrorClass, u32>,
    /// The last 5 minutes: requests, and those that were the API's fault, 429s and 402s.
    pub requests_5m: u32,
    /// Of those, the API's own faults (server errors, unavailable, timeouts, transport, invalid answers).
    pub api_faults_5m: u32,
    /// Of those, 429s.
    pub rate_limited_5m: u32,
    /// Of those, 402s.
    pub payment_required_5m: u32,
}

/// Jobs that ended over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Jobs {
    /// Jobs this replica saw submitted and not yet ended.
    pub in_flight: u64,
    /// By result.
    pub finished: BTreeMap<JobResult, u32>,
    /// Of successful jobs in the window.
    pub duration_p50_seconds: Option<f64>,
    /// Of successful jobs in the window.
    pub duration_p95_seconds: Option<f64>,
    /// Actual duration / first eta.
    pub eta_ratio_p50: Option<f64>,
    /// How many took over twice their first eta.
    pub over_twice_eta: u32,
    /// How many had an eta to compare with.
    pub with_eta: u32,
}

/// Rate limits over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateLimits {
    /// 429s in the window.
    pub rate_limited: u32,
    /// The last 429's `retry_after`.
    pub last_retry_after_seconds: Option<f64>,
    /// When the last 429 came (Unix seconds).
    pub last_retry_after_at_unix: Option<f64>,
    /// N of the last `Maximum N queued requests`.
    pub queue_limit: Option<u32>,
}

/// What the credits cost, from the balance polls of the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credits {
    /// Spent per hour (top-ups are not negative spend).
    pub spend_per_hour: f64,
    /// At that rate; `None` when nothing was spent.
    pub runway_hours: Option<f64>,
    /// Spent over the window (balance falls between polls).
    #[serde(default)]
    pub spent: f64,
    /// Spent per output delivered in the window; `None` without deliveries.
    #[serde(default)]
    pub per_output: Option<f64>,
}

/// Where one model's generations spent their time over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelTime {
    /// The model label.
    pub model: String,
    /// Deliveries with a `generationTime`.
    pub jobs: u32,
    /// The API's `generationTime`: median.
    pub generation_p50_seconds: Option<f64>,
    /// The API's `generationTime`: 95th percentile.
    pub generation_p95_seconds: Option<f64>,
    /// In the account's queue (duration minus `generationTime`): median.
    pub queue_wait_p50_seconds: Option<f64>,
    /// In the account's queue: 95th percentile.
    pub queue_wait_p95_seconds: Option<f64>,
}

/// One SLO over the window and since the agent started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SloView {
    /// Its name.
    pub name: String,
    /// Percent.
    pub objective: f64,
    /// Burn-rate alerts need this many events.
    pub min_events: u32,
    /// Since the agent started.
    pub good_total: u64,
    /// Bad events since the agent started.
    pub bad_total: u64,
    /// Bad events over those the objective allows, since the agent started (1 = all spent).
    pub budget_spent_ratio: Option<f64>,
    /// Events in the window.
    pub events_15m: u32,
    /// The error ratio of the window over the allowed one (1 = spending exactly the budget).
    pub burn_rate_15m: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Details, ErrorInfo, Reason};

    fn error(class: ErrorClass, retry_after: Option<f64>, queue_limit: Option<u32>) -> Classification {
        Classification::Error {
            details: Details { retry_after, queue_limit, ..Details::default() },
            error: ErrorInfo { class, reason: Reason::Other, fields: Vec::new() },
        }
    }

    #[test]
    fn buckets_roll_over_and_only_the_last_fifteen_minutes_count() {
        let h = History::default();
        let t0 = 1_800_000_000.0;
        let ok = Classification::Success { details: Details::default() };
        h.exchange_at(&ok, false, None, t0);
        h.exchange_at(&error(ErrorClass::ServerError, None, None), false, None, t0 + 1.0);
        h.exchange_at(&error(ErrorClass::RateLimited, Some(12.0), Some(5)), false, None, t0 + 20.0);
        let r = h.recent_at(t0 + 30.0);
        assert_eq!(r.traffic.len(), BUCKETS);
        assert_eq!((r.totals.requests, r.totals.success, r.totals.error), (3, 1, 2));
        assert_eq!(r.totals.classes.get(&ErrorClass::ServerError), Some(&1));
        assert_eq!((r.totals.api_faults_5m, r.totals.rate_limited_5m), (1, 1));
        assert_eq!(r.rate_limits.last_retry_after_seconds, Some(12.0));
        assert_eq!(r.rate_limits.queue_limit, Some(5));
        assert_eq!(r.traffic.last().unwrap().start % BUCKET_SECONDS, 0);

        // Ten minutes on: outside the 5-minute figures, still in the window.
        let r = h.recent_at(t0 + 600.0);
        assert_eq!((r.totals.requests, r.totals.requests_5m), (3, 0));
        // Sixteen minutes on: gone, and the memory holds no more than the window.
        h.exchange_at(&ok, false, None, t0 + 960.0);
        let r = h.recent_at(t0 + 960.0);
        assert_eq!(r.totals.requests, 1);
        assert!(h.lock().buckets.len() <= BUCKETS);
        // Many buckets later, still bounded.
        for i in 0..500 {
            h.exchange_at(&ok, i % 2 == 0, Some(0.5), t0 + 1000.0 + f64::from(i) * 15.0);
        }
        assert!(h.lock().buckets.len() <= BUCKETS);
        assert_eq!(h.lock().first_tokens.len(), FIRST_TOKENS_KEPT);
    }

    #[test]
    fn llm_traffic_is_summarised_beside_the_rest() {
        let h = History::default();
        let t0 = 1_800_000_000.0;
        let answer = |output: u64, finish: FinishReason| Classification::Success {
            details: Details {
                llm: Some(crate::classify::LlmDetails {
                    input_tokens: Some(10),
                    output_tokens: Some(output),
                    finish_reasons: vec![finish],
                    model: None,
                }),
                ..Details::default()
            },
        };
        h.exchange_at(&answer(12, FinishReason::Stop), true, Some(0.2), t0);
        h.exchange_at(&answer(4, FinishReason::Length), true, Some(0.4), t0 + 1.0);
        h.exchange_at(&answer(7, FinishReason::EndTurn), true, None, t0 + 2.0);
        h.exchange_at(&error(ErrorClass::Unavailable, None, None), true, Some(0.3), t0 + 3.0);
        h.exchange_at(&error(ErrorClass::ServerError, None, None), false, None, t0 + 4.0);
        h.exchange_at(&Classification::Success { details: Details::default() }, false, None, t0 + 5.0);
        let r = h.recent_at(t0 + 10.0);
        assert_eq!((r.totals.requests, r.totals.error), (6, 2));
        let l = &r.llm;
        assert_eq!((l.requests, l.error, l.input_tokens, l.output_tokens, l.truncated), (4, 1, 30, 23, 1));
        assert_eq!(l.classes.get(&ErrorClass::Unavailable), Some(&1));
        assert_eq!(l.finish_reasons.len(), 3);
        assert_eq!(
            (l.streams, l.time_to_first_token_p50_seconds, l.time_to_first_token_p95_seconds),
            (3, Some(0.3), Some(0.4))
        );
    }

    #[test]
    fn jobs_runs_balance_and_slos_are_summarised() {
        let h = History::default();
        let t0 = unix_now();
        for (d, eta) in [(10.0, 5.0), (4.0, 5.0), (30.0, 10.0)] {
            h.job_started();
            h.job_ended_at(JobResult::Success, d, Some(eta), t0);
        }
        h.job_started();
        let r = h.recent_at(t0 + 1.0);
        assert_eq!(r.jobs.in_flight, 1);
        assert_eq!(r.jobs.finished.get(&JobResult::Success), Some(&3));
        assert_eq!((r.jobs.duration_p50_seconds, r.jobs.duration_p95_seconds), (Some(10.0), Some(30.0)));
        assert_eq!((r.jobs.eta_ratio_p50, r.jobs.over_twice_eta), (Some(2.0), 1));

        for i in 0..(RUNS_KEPT + 5) {
            h.probe_run(
                "p",
                RunMark { at_unix: i as f64, success: i % 2 == 0, duration_seconds: 1.0, failure_reason: None },
            );
        }
        let runs = h.probe_runs("p");
        assert_eq!(runs.len(), RUNS_KEPT);
        assert_eq!(runs.last().unwrap().at_unix, (RUNS_KEPT + 4) as f64);

        // 10 spent over an hour, with a top-up of 50 between: 10/h, and the last balance lasts 8 h.
        for (m, b) in [(0.0, 100.0), (20.0, 95.0), (21.0, 145.0), (60.0, 140.0)] {
            h.balance_at(b, t0 + m * 60.0 - 3600.0 + 1.0);
        }
        let c = spend(&h.lock().balance, 0.0, 0).unwrap();
        assert!((c.spend_per_hour - 10.0).abs() < 0.01, "{c:?}");
        assert!((c.runway_hours.unwrap() - 14.0).abs() < 0.01, "{c:?}");

        h.set_slos(&[("a".into(), 99.0, 10)]);
        for good in [true, true, true, false] {
            h.slo_event("a", good);
        }
        h.slo_event("not-declared", false);
        let r = h.recent();
        assert_eq!(r.slos.len(), 1);
        let s = &r.slos[0];
        assert_eq!((s.good_total, s.bad_total, s.events_15m), (3, 1, 4));
        assert!((s.burn_rate_15m.unwrap() - 25.0).abs() < 1e-9, "1 bad of 4 against 1 % allowed");
    }
}
