//! The metric families, grouped by what they describe; each group registers its families and
//! records into them. Label values come in as config names, closed enums (`as_str()`) or the
//! bounded labels of [`super::Metrics`]: never a message, a URL, a key or a body.

use std::time::Duration;

use prometheus::{
    CounterVec, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::{MetricsError, buckets};
use crate::classify::{ErrorClass, Outcome, PageStatus};
use crate::clock;
use crate::vocab::{
    AccountPoll, ClusterOp, Exchange, Generated, JobEnd, JobResult, MaintenanceSource, OutputResult, ProbeFailure,
    RunResult, SkipReason, SloResult, Source, SyntheticReason, UninspectedReason, WebhookResult, status_label,
};

/// The label values of a family without labels.
pub(super) const NO_LABELS: &[&str] = &[];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Label-less gauges are vectors without label names, so that they appear only once set.
fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], b: &[f64]) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(b.to_vec()), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// What the API answered: requests, errors, durations, rate limits and etas.
pub struct ExchangeFamilies {
    pub(super) requests: IntCounterVec,
    pub(super) errors: IntCounterVec,
    pub(super) validation_errors: IntCounterVec,
    pub(super) request_duration: HistogramVec,
    pub(super) retry_after: HistogramVec,
    pub(super) queue_limit: GaugeVec,
    pub(super) processing_eta: HistogramVec,
    pub(super) llm_tokens: IntCounterVec,
    pub(super) llm_ttft: HistogramVec,
    pub(super) llm_finish: IntCounterVec,
}

impl ExchangeFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(ExchangeFamilies {
            requests: counter(
                r,
                "modelslab_requests_total",
                "API exchanges seen, by outcome (success, processing or error).",
                &["source", "endpoint", "model", "http_status", "outcome"],
            )?,
            errors: counter(
                r,
                "modelslab_errors_total",
                "API exchanges that were errors, by error class and reason (HTTP 200 errors keep http_status=\"200\").",
                &["source", "endpoint", "http_status", "error_class", "reason"],
            )?,
            validation_errors: counter(
                r,
                "modelslab_validation_errors_total",
                "Validation errors, by the request parameter they name.",
                &["source", "endpoint", "field"],
            )?,
            request_duration: histogram(
                r,
                "modelslab_request_duration_seconds",
                "Duration of one API exchange, request sent to answer read.",
                &["source", "endpoint", "outcome"],
                buckets::REQUEST_DURATION,
            )?,
            retry_after: histogram(
                r,
                "modelslab_rate_limit_retry_after_seconds",
                "retry_after of rate-limited answers (body field, else Retry-After header).",
                &["source", "endpoint"],
                buckets::RETRY_AFTER,
            )?,
            queue_limit: gauge(
                r,
                "modelslab_rate_limit_queue_limit",
                "The account's queue limit N, from the last \"Maximum N queued requests\" message.",
                &[],
            )?,
            processing_eta: histogram(
                r,
                "modelslab_processing_eta_seconds",
                "eta promised by processing answers.",
                &["source", "endpoint"],
                buckets::ETA,
            )?,
            llm_tokens: counter(
                r,
                "modelslab_llm_tokens_total",
                "LLM tokens successful answers counted, by kind (input or output; streams: the final usage).",
                &["source", "endpoint", "model", "kind"],
            )?,
            llm_ttft: histogram(
                r,
                "modelslab_llm_time_to_first_token_seconds",
                "Request sent to the first content delta of a streamed LLM answer.",
                &["source", "endpoint", "model"],
                buckets::TIME_TO_FIRST_TOKEN,
            )?,
            llm_finish: counter(
                r,
                "modelslab_llm_finish_reasons_total",
                "Why LLM answers stopped (length and max_tokens: a truncated answer).",
                &["source", "endpoint", "model", "finish_reason"],
            )?,
        })
    }

    /// Records one classified exchange: the one function probes and the proxy share.
    pub fn record(&self, ex: &Exchange<'_>) {
        let c = ex.classification;
        let source = ex.source.as_str();
        let outcome = c.outcome().as_str();
        let status = status_label(ex.http_status);
        self.requests.with_label_values(&[source, ex.endpoint, ex.model, &status, outcome]).inc();
        self.request_duration.with_label_values(&[source, ex.endpoint, outcome]).observe(ex.duration.as_secs_f64());
        let details = c.details();
        if let Some(e) = c.error() {
            self.errors.with_label_values(&[source, ex.endpoint, &status, e.class.as_str(), e.reason.as_str()]).inc();
            for field in &e.fields {
                self.validation_errors.with_label_values(&[source, ex.endpoint, field.as_str()]).inc();
            }
            if let (ErrorClass::RateLimited, Some(secs)) = (e.class, details.retry_after) {
                self.retry_after.with_label_values(&[source, ex.endpoint]).observe(secs);
            }
        }
        if let Some(n) = details.queue_limit {
            self.queue_limit.with_label_values(NO_LABELS).set(f64::from(n));
        }
        if let Some(eta) = c.eta() {
            self.processing_eta.with_label_values(&[source, ex.endpoint]).observe(eta);
        }
        // Tokens and finish reasons of whole answers only: a stream that failed midway said
        // its input tokens (Anthropic's `message_start`) but never its final usage.
        if let (Some(llm), Outcome::Success) = (&details.llm, c.outcome()) {
            for (kind, n) in [("input", llm.input_tokens), ("output", llm.output_tokens)] {
                if let Some(n) = n {
                    self.llm_tokens.with_label_values(&[source, ex.endpoint, ex.model, kind]).inc_by(n);
                }
            }
            for reason in &llm.finish_reasons {
                self.llm_finish.with_label_values(&[source, ex.endpoint, ex.model, reason.as_str()]).inc();
            }
        }
        if let Some(t) = ex.time_to_first_token {
            self.llm_ttft.with_label_values(&[source, ex.endpoint, ex.model]).observe(t.as_secs_f64());
        }
    }
}

/// Async jobs followed to their end.
pub struct JobFamilies {
    pub(super) jobs: IntCounterVec,
    pub(super) duration: HistogramVec,
    pub(super) eta_ratio: HistogramVec,
    pub(super) in_flight: IntGaugeVec,
    pub(super) generation: HistogramVec,
    pub(super) queue_wait: HistogramVec,
    pub(super) outputs: IntCounterVec,
}

impl JobFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(JobFamilies {
            jobs: counter(
                r,
                "modelslab_jobs_total",
                "Async jobs that ended, by result.",
                &["source", "endpoint", "model", "result"],
            )?,
            duration: histogram(
                r,
                "modelslab_job_duration_seconds",
                "Async job duration, submit to terminal answer seen (endpoint is the submit endpoint).",
                &["source", "endpoint", "model", "result"],
                buckets::JOB_DURATION,
            )?,
            eta_ratio: histogram(
                r,
                "modelslab_job_eta_ratio",
                "Actual job duration divided by the first eta promised.",
                &["source", "endpoint"],
                buckets::ETA_RATIO,
            )?,
            in_flight: int_gauge(
                r,
                "modelslab_jobs_in_flight",
                "Async jobs submitted and not yet ended.",
                &["source"],
            )?,
            generation: histogram(
                r,
                "modelslab_job_generation_seconds",
                "The API's generationTime of a finished job or a synchronous success (endpoint is the submit endpoint).",
                &["source", "endpoint", "model"],
                buckets::GENERATION,
            )?,
            queue_wait: histogram(
                r,
                "modelslab_job_queue_wait_seconds",
                "Job duration minus its generationTime: the time it waited in the account's queue.",
                &["source", "endpoint", "model"],
                buckets::GENERATION,
            )?,
            outputs: counter(
                r,
                "modelslab_outputs_delivered_total",
                "Output URLs in success answers and finished jobs, each counted once.",
                &["source", "endpoint", "model"],
            )?,
        })
    }

    /// A generation delivered: where its time went (when the API said) and its files.
    pub fn generated(&self, g: &Generated<'_>) {
        let labels = [g.source.as_str(), g.endpoint, g.model];
        if let (Some(generation), Some(wait)) = (g.generation_time, g.queue_wait()) {
            self.generation.with_label_values(&labels).observe(generation);
            self.queue_wait.with_label_values(&labels).observe(wait);
        }
        if g.outputs > 0 {
            self.outputs.with_label_values(&labels).inc_by(u64::from(g.outputs));
        }
    }

    /// A job started being tracked.
    pub fn started(&self, source: Source) {
        self.in_flight.with_label_values(&[source.as_str()]).inc();
    }

    /// A tracked job ended (terminal answer, expiry or eviction).
    pub fn ended(&self, end: &JobEnd<'_>) {
        let source = end.source.as_str();
        let result = end.result.as_str();
        self.in_flight.with_label_values(&[source]).dec();
        self.jobs.with_label_values(&[source, end.endpoint, end.model, result]).inc();
        let secs = end.duration.as_secs_f64();
        self.duration.with_label_values(&[source, end.endpoint, end.model, result]).observe(secs);
        if let Some(eta) = end.first_eta.filter(|e| *e > 0.0) {
            if matches!(end.result, JobResult::Success | JobResult::Failed | JobResult::Error) {
                self.eta_ratio.with_label_values(&[source, end.endpoint]).observe(secs / eta);
            }
        }
    }
}

/// The synthetic probes' runs.
pub struct ProbeFamilies {
    pub(super) success: GaugeVec,
    pub(super) duration: GaugeVec,
    pub(super) runs: IntCounterVec,
    pub(super) failures: IntCounterVec,
    pub(super) skipped: IntCounterVec,
    pub(super) last_run: GaugeVec,
}

impl ProbeFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(ProbeFamilies {
            success: gauge(
                r,
                "modelslab_probe_success",
                "1 if the probe's last run met its expectations, else 0.",
                &["probe"],
            )?,
            duration: gauge(
                r,
                "modelslab_probe_duration_seconds",
                "Duration of the probe's last run, submit to terminal answer.",
                &["probe"],
            )?,
            runs: counter(r, "modelslab_probe_runs_total", "Probe runs, by result.", &["probe", "result"])?,
            failures: counter(
                r,
                "modelslab_probe_failures_total",
                "Failed probe runs, by reason.",
                &["probe", "reason"],
            )?,
            skipped: counter(
                r,
                "modelslab_probe_skipped_total",
                "Probe ticks not run, by reason (overlap, budget, backoff).",
                &["probe", "reason"],
            )?,
            last_run: gauge(
                r,
                "modelslab_probe_last_run_timestamp_seconds",
                "Unix time of the probe's last run.",
                &["probe"],
            )?,
        })
    }

    /// A probe was (re)scheduled: its counters exist at 0, so rules see a series from the start.
    pub fn registered(&self, probe: &str) {
        for result in RunResult::ALL {
            self.runs.with_label_values(&[probe, result.as_str()]);
        }
        for reason in ProbeFailure::ALL {
            self.failures.with_label_values(&[probe, reason.as_str()]);
        }
        for reason in SkipReason::ALL {
            self.skipped.with_label_values(&[probe, reason.as_str()]);
        }
    }

    /// A probe run ended.
    pub fn finished(&self, probe: &str, failure: Option<ProbeFailure>, duration: Duration, started_at_unix: f64) {
        self.success.with_label_values(&[probe]).set(flag(failure.is_none()));
        self.duration.with_label_values(&[probe]).set(duration.as_secs_f64());
        self.last_run.with_label_values(&[probe]).set(started_at_unix);
        let result = if failure.is_none() { RunResult::Success } else { RunResult::Failure };
        self.runs.with_label_values(&[probe, result.as_str()]).inc();
        if let Some(reason) = failure {
            self.failures.with_label_values(&[probe, reason.as_str()]).inc();
        }
    }

    /// A probe tick did not run.
    pub fn skipped(&self, probe: &str, reason: SkipReason) {
        self.skipped.with_label_values(&[probe, reason.as_str()]).inc();
    }

    /// A probe's last-run gauges go (its counters stay): this replica stopped running it.
    pub fn forget_state(&self, probe: &str) {
        for g in [&self.success, &self.duration, &self.last_run] {
            let _ = g.remove_label_values(&[probe]);
        }
    }

    /// A probe was removed from the config: its series go too.
    pub fn forget(&self, probe: &str) {
        self.forget_state(probe);
        for result in RunResult::ALL {
            let _ = self.runs.remove_label_values(&[probe, result.as_str()]);
        }
        for reason in ProbeFailure::ALL {
            let _ = self.failures.remove_label_values(&[probe, reason.as_str()]);
        }
        for reason in SkipReason::ALL {
            let _ = self.skipped.remove_label_values(&[probe, reason.as_str()]);
        }
    }
}

/// The vendor's status page.
pub struct StatusPageFamilies {
    pub(super) up: GaugeVec,
    pub(super) status: GaugeVec,
    pub(super) component_status: GaugeVec,
    pub(super) incidents_open: GaugeVec,
    pub(super) last_success: GaugeVec,
}

impl StatusPageFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(StatusPageFamilies {
            up: gauge(
                r,
                "modelslab_status_page_up",
                "1 if the last status-page poll fetched and parsed, else 0.",
                &[],
            )?,
            status: gauge(
                r,
                "modelslab_status_page_status",
                "Status page state: 0 operational, 1 maintenance, 2 degraded, 3 partial outage, 4 major outage.",
                &[],
            )?,
            component_status: gauge(
                r,
                "modelslab_status_page_component_status",
                "Status of each status-page component (1 for its current status).",
                &["component", "status"],
            )?,
            incidents_open: gauge(
                r,
                "modelslab_status_page_incidents_open",
                "Incidents open on the status page.",
                &[],
            )?,
            last_success: gauge(
                r,
                "modelslab_status_page_last_success_timestamp_seconds",
                "Unix time of the last successful status-page poll.",
                &[],
            )?,
        })
    }

    /// A poll fetched and parsed: publish its state. Components not listed any more lose their
    /// series.
    pub fn state(&self, status: PageStatus, components: &[(String, PageStatus)], gone: &[String], incidents: u32) {
        self.up.with_label_values(NO_LABELS).set(1.0);
        self.status.with_label_values(NO_LABELS).set(f64::from(status.level()));
        self.incidents_open.with_label_values(NO_LABELS).set(f64::from(incidents));
        self.last_success.with_label_values(NO_LABELS).set(clock::unix_seconds());
        for (name, current) in components {
            for s in PageStatus::ALL {
                self.component_status.with_label_values(&[name.as_str(), s.as_str()]).set(flag(s == current));
            }
        }
        for name in gone {
            for s in PageStatus::ALL {
                let _ = self.component_status.remove_label_values(&[name.as_str(), s.as_str()]);
            }
        }
    }

    /// A poll failed: `up` goes to 0, the last known state stays.
    pub fn down(&self) {
        self.up.with_label_values(NO_LABELS).set(0.0);
    }
}

/// Maintenance windows.
pub struct MaintenanceFamilies {
    pub(super) active: GaugeVec,
}

impl MaintenanceFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        let active = gauge(
            r,
            "modelslab_maintenance_active",
            "1 while a maintenance window is on: one of the configuration's (source=config) or the vendor's maintenance in progress on its status page (source=vendor).",
            &["source"],
        )?;
        for source in MaintenanceSource::ALL {
            active.with_label_values(&[source.as_str()]).set(0.0);
        }
        Ok(MaintenanceFamilies { active })
    }

    /// A source's window began or ended.
    pub fn set(&self, source: MaintenanceSource, on: bool) {
        self.active.with_label_values(&[source.as_str()]).set(flag(on));
    }
}

/// What the proxy did besides passing answers through.
pub struct ProxyFamilies {
    pub(super) synthetic: IntCounterVec,
    pub(super) uninspected: IntCounterVec,
    pub(super) retries: IntCounterVec,
    pub(super) upstream_open: IntGaugeVec,
    pub(super) upstream_limit: IntGaugeVec,
    pub(super) upstream_waiting: IntGaugeVec,
    pub(super) upstream_wait: HistogramVec,
}

/// The handles the proxy's upstream pool updates as connections open and close and requests wait.
#[derive(Clone)]
pub struct UpstreamGauges {
    /// Connections open to the upstream.
    pub open: IntGauge,
    /// `proxy.upstream_max_connections`.
    pub limit: IntGauge,
    /// Requests waiting for a free connection.
    pub waiting: IntGauge,
    /// How long the requests that had to wait waited.
    pub wait: Histogram,
}

impl ProxyFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(ProxyFamilies {
            synthetic: counter(
                r,
                "modelslab_proxy_synthetic_responses_total",
                "Answers the proxy made itself, by reason.",
                &["reason"],
            )?,
            uninspected: counter(
                r,
                "modelslab_proxy_uninspected_responses_total",
                "Answers passed through without classification, by reason.",
                &["reason"],
            )?,
            retries: counter(
                r,
                "modelslab_proxy_rate_limit_retries_total",
                "Rate-limited requests the proxy held and sent again after retry_after (proxy.retry_rate_limited).",
                &[],
            )?,
            upstream_open: int_gauge(
                r,
                "modelslab_proxy_upstream_connections",
                "Connections the proxy has open to the upstream, busy or idle.",
                &[],
            )?,
            upstream_limit: int_gauge(
                r,
                "modelslab_proxy_upstream_connections_limit",
                "The most connections the proxy opens to the upstream (proxy.upstream_max_connections).",
                &[],
            )?,
            upstream_waiting: int_gauge(
                r,
                "modelslab_proxy_upstream_waiting",
                "Requests waiting for a free upstream connection (every one of upstream_max_connections busy).",
                &[],
            )?,
            upstream_wait: histogram(
                r,
                "modelslab_proxy_upstream_wait_seconds",
                "How long requests that found every upstream connection busy waited for one.",
                &[],
                buckets::UPSTREAM_WAIT,
            )?,
        })
    }

    /// The handles of the upstream pool's gauges (they appear once the proxy starts).
    pub fn upstream(&self) -> UpstreamGauges {
        let gauges = UpstreamGauges {
            open: self.upstream_open.with_label_values(NO_LABELS),
            limit: self.upstream_limit.with_label_values(NO_LABELS),
            waiting: self.upstream_waiting.with_label_values(NO_LABELS),
            wait: self.upstream_wait.with_label_values(NO_LABELS),
        };
        gauges.open.set(0);
        gauges.waiting.set(0);
        gauges
    }

    /// The proxy answered a request itself.
    pub fn synthetic(&self, reason: SyntheticReason) {
        self.synthetic.with_label_values(&[reason.as_str()]).inc();
    }

    /// The proxy passed an answer through without classifying it.
    pub fn uninspected(&self, reason: UninspectedReason) {
        self.uninspected.with_label_values(&[reason.as_str()]).inc();
    }

    /// The proxy held a rate-limited request and is sending it again.
    pub fn retried(&self) {
        self.retries.with_label_values(NO_LABELS).inc();
    }
}

/// Replicas sharing state through Redis.
pub struct ClusterFamilies {
    pub(super) up: GaugeVec,
    pub(super) leader: GaugeVec,
    pub(super) errors: IntCounterVec,
    pub(super) restored: IntCounterVec,
}

impl ClusterFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(ClusterFamilies {
            up: gauge(
                r,
                "modelslab_sentinel_cluster_up",
                "1 while Redis answers and is usable (cluster.redis_url), else 0.",
                &[],
            )?,
            leader: gauge(
                r,
                "modelslab_sentinel_cluster_leader",
                "1 on the replica holding the probe lease (it runs the `replicas: one` probes), else 0.",
                &[],
            )?,
            errors: counter(
                r,
                "modelslab_sentinel_cluster_errors_total",
                "Redis operations that failed or timed out, by operation.",
                &["op"],
            )?,
            restored: counter(
                r,
                "modelslab_sentinel_cluster_jobs_restored_total",
                "Jobs this replica saw submitted that Redis had lost (restarted empty, flushed), written back.",
                &[],
            )?,
        })
    }

    /// Redis answered (and is usable), or did not.
    pub fn up(&self, up: bool) {
        self.up.with_label_values(NO_LABELS).set(flag(up));
    }

    /// This replica took or lost the probe lease.
    pub fn leader(&self, leader: bool) {
        self.leader.with_label_values(NO_LABELS).set(flag(leader));
    }

    /// A Redis operation failed.
    pub fn error(&self, op: ClusterOp) {
        self.errors.with_label_values(&[op.as_str()]).inc();
    }

    /// Jobs written back into a Redis that had lost them.
    pub fn restored(&self, jobs: u64) {
        self.restored.with_label_values(NO_LABELS).inc_by(jobs);
    }
}

/// The SLOs the agent judges its events against.
pub struct SloFamilies {
    pub(super) events: IntCounterVec,
    pub(super) objective: GaugeVec,
    pub(super) window: GaugeVec,
    pub(super) min_events: GaugeVec,
}

impl SloFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(SloFamilies {
            events: counter(
                r,
                "modelslab_slo_events_total",
                "Events each SLO judged, good or bad (exchanges, jobs or probe runs, as the SLO says).",
                &["slo", "result"],
            )?,
            objective: gauge(
                r,
                "modelslab_slo_objective_ratio",
                "The SLO's objective as a ratio (99.5 % is 0.995).",
                &["slo"],
            )?,
            window: gauge(r, "modelslab_slo_window_seconds", "The period the SLO's error budget spans.", &["slo"])?,
            min_events: gauge(
                r,
                "modelslab_slo_min_events",
                "Events a burn-rate alert of the SLO needs in its long window before it may fire.",
                &["slo"],
            )?,
        })
    }

    /// An SLO is (re)declared: its objective, window and threshold, and its counters at 0.
    pub fn declared(&self, slo: &str, objective_ratio: f64, window_seconds: f64, min_events: u32) {
        self.objective.with_label_values(&[slo]).set(objective_ratio);
        self.window.with_label_values(&[slo]).set(window_seconds);
        self.min_events.with_label_values(&[slo]).set(f64::from(min_events));
        for result in SloResult::ALL {
            self.events.with_label_values(&[slo, result.as_str()]);
        }
    }

    /// An SLO left the configuration: its series go.
    pub fn removed(&self, slo: &str) {
        for g in [&self.objective, &self.window, &self.min_events] {
            let _ = g.remove_label_values(&[slo]);
        }
        for result in SloResult::ALL {
            let _ = self.events.remove_label_values(&[slo, result.as_str()]);
        }
    }

    /// An SLO judged one event.
    pub fn event(&self, slo: &str, result: SloResult) {
        self.events.with_label_values(&[slo, result.as_str()]).inc();
    }
}

/// The account as a whole: its credits, its queue, the model catalogue.
pub struct AccountFamilies {
    pub(super) balance: GaugeVec,
    pub(super) balance_up: GaugeVec,
    pub(super) balance_last_success: GaugeVec,
    pub(super) spent: CounterVec,
    pub(super) queue_depth: GaugeVec,
    pub(super) queue_limit: GaugeVec,
    pub(super) queue_up: GaugeVec,
    pub(super) model_listed: GaugeVec,
    pub(super) models_up: GaugeVec,
}

impl AccountFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(AccountFamilies {
            balance: gauge(
                r,
                "modelslab_account_balance",
                "The account's credit balance from the wallet endpoint (kept at the last value when a poll fails).",
                &["currency"],
            )?,
            balance_up: gauge(r, "modelslab_account_balance_up", "1 if the last balance poll succeeded, else 0.", &[])?,
            balance_last_success: gauge(
                r,
                "modelslab_account_balance_last_success_timestamp_seconds",
                "Unix time of the last successful balance poll.",
                &[],
            )?,
            spent: {
                let c = CounterVec::new(
                    Opts::new(
                        "modelslab_account_spent_total",
                        "Credits spent: the balance's falls between polls (a top-up never subtracts).",
                    ),
                    &["currency"],
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            queue_depth: gauge(
                r,
                "modelslab_account_queue_depth",
                "Unfinished requests of every client of the key (processing_count; kept when a poll fails).",
                &[],
            )?,
            queue_limit: gauge(
                r,
                "modelslab_account_queue_limit",
                "The account's queued-request limit: account.queue.limit, else learned from a 429.",
                &[],
            )?,
            queue_up: gauge(r, "modelslab_account_queue_up", "1 if the last queue poll succeeded, else 0.", &[])?,
            model_listed: gauge(
                r,
                "modelslab_model_listed",
                "1 while a model of labels.models is in the catalogue, 0 once it is gone.",
                &["model"],
            )?,
            models_up: gauge(r, "modelslab_account_models_up", "1 if the last catalogue poll succeeded, else 0.", &[])?,
        })
    }

    /// A balance poll succeeded, `spent` below the last read.
    pub fn balance(&self, balance: f64, currency: &str, spent: f64) {
        self.balance.with_label_values(&[currency]).set(balance);
        self.balance_up.with_label_values(NO_LABELS).set(1.0);
        self.balance_last_success.with_label_values(NO_LABELS).set(clock::unix_seconds());
        let spent_total = self.spent.with_label_values(&[currency]);
        if spent > 0.0 && spent.is_finite() {
            spent_total.inc_by(spent);
        }
    }

    /// A queue poll succeeded.
    pub fn queue(&self, depth: u32) {
        self.queue_depth.with_label_values(NO_LABELS).set(f64::from(depth));
        self.queue_up.with_label_values(NO_LABELS).set(1.0);
    }

    /// The queue limit became known (or changed).
    pub fn queue_limit(&self, limit: u32) {
        self.queue_limit.with_label_values(NO_LABELS).set(f64::from(limit));
    }

    /// A catalogue poll succeeded: each watched model ever listed, whether it is now; models no
    /// longer watched lose their series.
    pub fn models(&self, listed: &[(&str, bool)], forgotten: &[String]) {
        for (model, on) in listed {
            self.model_listed.with_label_values(&[*model]).set(flag(*on));
        }
        for model in forgotten {
            let _ = self.model_listed.remove_label_values(&[model.as_str()]);
        }
        self.models_up.with_label_values(NO_LABELS).set(1.0);
    }

    /// A poll failed: its `up` goes to 0, the last values stay.
    pub fn down(&self, poll: AccountPoll) {
        let up = match poll {
            AccountPoll::Balance => &self.balance_up,
            AccountPoll::Queue => &self.queue_up,
            AccountPoll::Models => &self.models_up,
        };
        up.with_label_values(NO_LABELS).set(0.0);
    }
}

/// What the API delivers: generated files and webhooks.
pub struct DeliveryFamilies {
    pub(super) output_checks: IntCounterVec,
    pub(super) output_download: HistogramVec,
    pub(super) webhook_deliveries: IntCounterVec,
    pub(super) webhook_delay: HistogramVec,
}

impl DeliveryFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        Ok(DeliveryFamilies {
            output_checks: counter(
                r,
                "modelslab_output_checks_total",
                "Generated files a probe downloaded and checked, by result.",
                &["probe", "result"],
            )?,
            output_download: histogram(
                r,
                "modelslab_output_download_duration_seconds",
                "Downloading one generated file from where the answer pointed.",
                &["probe"],
                buckets::DOWNLOAD,
            )?,
            webhook_deliveries: counter(
                r,
                "modelslab_webhook_deliveries_total",
                "Webhook deliveries of probe runs, by result (probe=\"none\" for unknown ones).",
                &["probe", "result"],
            )?,
            webhook_delay: histogram(
                r,
                "modelslab_webhook_delay_seconds",
                "A webhook's arrival after the job was seen finished (0 when it came first).",
                &["probe"],
                buckets::WEBHOOK_DELAY,
            )?,
        })
    }

    /// One generated file checked.
    pub fn output_checked(&self, probe: &str, result: OutputResult, download: Option<Duration>) {
        self.output_checks.with_label_values(&[probe, result.as_str()]).inc();
        if let Some(d) = download {
            self.output_download.with_label_values(&[probe]).observe(d.as_secs_f64());
        }
    }

    /// A webhook delivery's verdict.
    pub fn webhook(&self, probe: &str, result: WebhookResult, delay: Option<Duration>) {
        self.webhook_deliveries.with_label_values(&[probe, result.as_str()]).inc();
        if let Some(d) = delay {
            self.webhook_delay.with_label_values(&[probe]).observe(d.as_secs_f64());
        }
    }
}

/// The agent itself: its build, its configuration, its trace export, its label caps.
pub struct AgentFamilies {
    pub(super) config_reload_success: GaugeVec,
    pub(super) config_reload_timestamp: GaugeVec,
    pub(super) spans_dropped: IntCounterVec,
    pub(super) label_overflow: IntCounterVec,
}

impl AgentFamilies {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        let build = gauge(r, "modelslab_sentinel_build_info", "Build information; always 1.", &["version"])?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        Ok(AgentFamilies {
            config_reload_success: gauge(
                r,
                "modelslab_sentinel_config_last_reload_success",
                "1 if the last configuration (re)load succeeded, else 0.",
                &[],
            )?,
            config_reload_timestamp: gauge(
                r,
                "modelslab_sentinel_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration (re)load.",
                &[],
            )?,
            spans_dropped: counter(
                r,
                "modelslab_sentinel_trace_spans_dropped_total",
                "Spans lost because the OTLP collector did not take them.",
                &[],
            )?,
            label_overflow: counter(
                r,
                "modelslab_sentinel_label_overflow_total",
                "Label values folded into \"other\" because a cardinality cap was reached.",
                &["label"],
            )?,
        })
    }

    /// Records the result of a configuration (re)load.
    pub fn config_loaded(&self, success: bool) {
        self.config_reload_success.with_label_values(NO_LABELS).set(flag(success));
        if success {
            self.config_reload_timestamp.with_label_values(NO_LABELS).set(clock::unix_seconds());
        }
    }

    /// 1 if the last (re)load succeeded.
    pub fn config_last_reload_success(&self) -> bool {
        self.config_reload_success.with_label_values(NO_LABELS).get() > 0.0
    }

    /// Unix time of the last successful (re)load.
    pub fn config_last_reload_timestamp(&self) -> f64 {
        self.config_reload_timestamp.with_label_values(NO_LABELS).get()
    }

    /// Raises the dropped-spans counter to `total` (the exporter counts; this publishes).
    pub fn spans_dropped_total(&self, total: u64) {
        let c = self.spans_dropped.with_label_values(NO_LABELS);
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// A label value was folded into `other` (`label`: which label's cap was reached).
    pub fn label_overflow(&self, label: &str) {
        self.label_overflow.with_label_values(&[label]).inc();
    }
}
