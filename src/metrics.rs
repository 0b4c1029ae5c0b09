//! Every metric family of docs/metrics.md, on a registry the app owns, and the label helpers that keep
//! their cardinality bounded.
//!
//! Label values come only from config names and closed enums (`as_str()`), or from the two
//! bounded helpers here ([`Metrics::endpoint_label`], [`Metrics::model_label`]): never a message,
//! a URL, a key or a body. Probes and the proxy record exchanges through the one function
//! [`Metrics::record_exchange`], so they can never count differently. Components do not call
//! this module: they emit `observe` events, whose `emit` counts here.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::classify::{Classification, ErrorClass, PageStatus, label_enum};
use crate::config::Labels;

/// Bucket boundaries, in the unit of each family, chosen for the quantity they measure.
pub mod buckets {
    /// One HTTP exchange: sub-second validation errors up to synchronous generations that the
    /// proxy allows 300 s for.
    pub const REQUEST_DURATION: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
    /// `retry_after` of a 429: the API has sent 30 s; queues drain in seconds to minutes.
    pub const RETRY_AFTER: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
    /// `eta` of a processing answer: seen from 1.25 s to 416.94 s.
    pub const ETA: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
    /// Submit to terminal answer of an async job: seconds to the 30 min default `jobs.ttl`.
    pub const JOB_DURATION: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0];
    /// Actual job duration / first promised eta: 1 is on time; alerts look at 2 and beyond.
    pub const ETA_RATIO: &[f64] = &[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0];
    /// Downloading a generated image or video from the CDN: tens of milliseconds to the 30 s
    /// default timeout of an output check.
    pub const DOWNLOAD: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    /// A webhook's arrival after the job was seen finished: usually under a second (it may come
    /// before the poll), late ones up to the default 120 s grace.
    pub const WEBHOOK_DELAY: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
}

label_enum! {
    /// Which component saw an exchange (`source` label).
    pub enum Source {
        Probe => "probe",
        Proxy => "proxy",
    }
}

label_enum! {
    /// How an async job ended (`result` label of the job families).
    pub enum JobResult {
        Success => "success",
        Failed => "failed",
        Error => "error",
        Expired => "expired",
        Evicted => "evicted",
    }
}

label_enum! {
    /// Why a probe run failed.
    pub enum ProbeFailure {
        Expectation => "expectation",
        Timeout => "timeout",
        Transport => "transport",
        JobFailed => "job_failed",
        JobTimeout => "job_timeout",
        /// An output check failed: the media the answer names is missing, broken or wrong.
        Output => "output",
    }
}

label_enum! {
    /// How checking one generated file ended (`result` of the output checks).
    pub enum OutputResult {
        Ok => "ok",
        /// Fewer URLs than expected, or the URL answers 404.
        NotFound => "not_found",
        /// The download failed (transport, timeout, another status, a host not allowed).
        DownloadFailed => "download_failed",
        TooLarge => "too_large",
        Undecodable => "undecodable",
        WrongSize => "wrong_size",
        /// A near-uniform image: a black frame, a flat placeholder.
        Blank => "blank",
    }
}

label_enum! {
    /// How a run's webhook delivery ended (`result` of the webhook deliveries).
    pub enum WebhookResult {
        /// Before the job was seen finished (or just after).
        OnTime => "on_time",
        /// After, within `webhooks.grace`.
        Late => "late",
        /// Not within `webhooks.grace`.
        Missing => "missing",
        /// A delivery after the first.
        Duplicate => "duplicate",
        /// No run waits for it: forged, replayed, malformed, or over the size limit.
        Unknown => "unknown",
    }
}

label_enum! {
    /// Why a probe waits before it runs again.
    pub enum BackoffReason {
        /// A 429: it waits the answer's `retry_after`.
        RateLimited => "rate_limited",
        /// A 402 on a credit-spending probe: it pauses.
        PaymentRequired => "payment_required",
    }
}

label_enum! {
    /// What a replica asked Redis for (`op` label of the cluster errors).
    pub enum ClusterOp {
        /// Take, renew or give up the probe lease.
        Lease => "lease",
        /// Track a job.
        JobWrite => "job_write",
        /// Read or end a job.
        JobRead => "job_read",
        /// End expired jobs.
        JobSweep => "job_sweep",
        /// Share a probe's backoff and day budget.
        ProbeState => "probe_state",
        /// Share, judge or end a webhook run.
        Webhook => "webhook",
    }
}

label_enum! {
    /// Why a probe tick did not run.
    pub enum SkipReason {
        Overlap => "overlap",
        Budget => "budget",
        Backoff => "backoff",
    }
}

label_enum! {
    /// Why the proxy answered a request itself.
    pub enum SyntheticReason {
        UpstreamTimeout => "upstream_timeout",
        UpstreamUnreachable => "upstream_unreachable",
        BodyTooLarge => "body_too_large",
        Rejected => "rejected",
    }
}

label_enum! {
    /// Why the proxy passed an answer through without classifying it.
    pub enum UninspectedReason {
        TooLarge => "too_large",
        NotJson => "not_json",
        Stream => "stream",
    }
}

/// Label value for "not in the allowlist" / "over the cap".
pub const OTHER: &str = "other";
/// Label value for "the request had none" / "no response".
pub const NONE: &str = "none";
/// The label values of a family without labels.
pub const NO_LABELS: &[&str] = &[];
/// Longest endpoint label kept; longer paths are not API endpoints.
const MAX_ENDPOINT_CHARS: usize = 128;

/// One classified HTTP exchange, as probes and the proxy report it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub source: Source,
    /// From [`Metrics::endpoint_label`].
    pub endpoint: &'a str,
    /// From [`Metrics::model_label`].
    pub model: &'a str,
    /// `None` when no response arrived.
    pub http_status: Option<u16>,
    pub classification: &'a Classification,
    pub duration: Duration,
}

/// A finished (or abandoned) async job.
#[derive(Debug, Clone, Copy)]
pub struct JobEnd<'a> {
    pub source: Source,
    /// The submit endpoint.
    pub endpoint: &'a str,
    pub model: &'a str,
    pub result: JobResult,
    /// Submit to the terminal answer seen (or to expiry/eviction).
    pub duration: Duration,
    /// The eta the first processing answer promised.
    pub first_eta: Option<f64>,
}

struct LabelPolicy {
    models: HashSet<String>,
    max_endpoints: usize,
}

/// The agent's metrics. Create one per agent; it owns its registry.
pub struct Metrics {
    registry: Registry,
    policy: RwLock<LabelPolicy>,
    endpoints: RwLock<HashSet<String>>,

    requests: IntCounterVec,
    errors: IntCounterVec,
    validation_errors: IntCounterVec,
    request_duration: HistogramVec,
    retry_after: HistogramVec,
    queue_limit: GaugeVec,
    processing_eta: HistogramVec,

    jobs: IntCounterVec,
    job_duration: HistogramVec,
    job_eta_ratio: HistogramVec,
    jobs_in_flight: IntGaugeVec,

    probe_success: GaugeVec,
    probe_duration: GaugeVec,
    probe_runs: IntCounterVec,
    probe_failures: IntCounterVec,
    probe_skipped: IntCounterVec,
    probe_last_run: GaugeVec,

    status_page_up: GaugeVec,
    status_page_status: GaugeVec,
    status_page_component_status: GaugeVec,
    status_page_incidents_open: GaugeVec,
    status_page_last_success: GaugeVec,

    proxy_synthetic: IntCounterVec,
    proxy_uninspected: IntCounterVec,
    proxy_retries: IntCounterVec,

    cluster_up: GaugeVec,
    cluster_leader: GaugeVec,
    cluster_errors: IntCounterVec,

    slo_events: IntCounterVec,
    slo_objective: GaugeVec,
    slo_window: GaugeVec,
    slo_min_events: GaugeVec,

    balance: GaugeVec,
    balance_up: GaugeVec,
    balance_last_success: GaugeVec,

    output_checks: IntCounterVec,
    output_download: HistogramVec,
    webhook_deliveries: IntCounterVec,
    webhook_delay: HistogramVec,

    config_reload_success: GaugeVec,
    config_reload_timestamp: GaugeVec,
    spans_dropped: IntCounterVec,
    label_overflow: IntCounterVec,
}

/// Why the registry could not be built (a programming error caught by every test run).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot register metric family: {0}")]
    Register(#[from] prometheus::Error),
    #[error("cannot encode metrics: {0}")]
    Encode(String),
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

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

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Declares every family. Families without labels are vectors with no label names, so that
    /// they appear only once something sets them (no `status_page_up 0` without a status page).
    pub fn new(labels: &Labels) -> Result<Self, MetricsError> {
        let r = Registry::new();
        let m = Metrics {
            policy: RwLock::new(LabelPolicy::from(labels)),
            endpoints: RwLock::new(HashSet::new()),
            requests: counter(
                &r,
                "modelslab_requests_total",
                "API exchanges seen, by outcome (success, processing or error).",
                &["source", "endpoint", "model", "http_status", "outcome"],
            )?,
            errors: counter(
                &r,
                "modelslab_errors_total",
                "API exchanges that were errors, by error class and reason (HTTP 200 errors keep http_status=\"200\").",
                &["source", "endpoint", "http_status", "error_class", "reason"],
            )?,
            validation_errors: counter(
                &r,
                "modelslab_validation_errors_total",
                "Validation errors, by the request parameter they name.",
                &["source", "endpoint", "field"],
            )?,
            request_duration: histogram(
                &r,
                "modelslab_request_duration_seconds",
                "Duration of one API exchange, request sent to answer read.",
                &["source", "endpoint", "outcome"],
                buckets::REQUEST_DURATION,
            )?,
            retry_after: histogram(
                &r,
                "modelslab_rate_limit_retry_after_seconds",
                "retry_after of rate-limited answers (body field, else Retry-After header).",
                &["source", "endpoint"],
                buckets::RETRY_AFTER,
            )?,
            queue_limit: gauge(
                &r,
                "modelslab_rate_limit_queue_limit",
                "The account's queue limit N, from the last \"Maximum N queued requests\" message.",
                &[],
            )?,
            processing_eta: histogram(
                &r,
                "modelslab_processing_eta_seconds",
                "eta promised by processing answers.",
                &["source", "endpoint"],
                buckets::ETA,
            )?,
            jobs: counter(
                &r,
                "modelslab_jobs_total",
                "Async jobs that ended, by result.",
                &["source", "endpoint", "model", "result"],
            )?,
            job_duration: histogram(
                &r,
                "modelslab_job_duration_seconds",
                "Async job duration, submit to terminal answer seen (endpoint is the submit endpoint).",
                &["source", "endpoint", "model", "result"],
                buckets::JOB_DURATION,
            )?,
            job_eta_ratio: histogram(
                &r,
                "modelslab_job_eta_ratio",
                "Actual job duration divided by the first eta promised.",
                &["source", "endpoint"],
                buckets::ETA_RATIO,
            )?,
            jobs_in_flight: int_gauge(
                &r,
                "modelslab_jobs_in_flight",
                "Async jobs submitted and not yet ended.",
                &["source"],
            )?,
            probe_success: gauge(
                &r,
                "modelslab_probe_success",
                "1 if the probe's last run met its expectations, else 0.",
                &["probe"],
            )?,
            probe_duration: gauge(
                &r,
                "modelslab_probe_duration_seconds",
                "Duration of the probe's last run, submit to terminal answer.",
                &["probe"],
            )?,
            probe_runs: counter(&r, "modelslab_probe_runs_total", "Probe runs, by result.", &["probe", "result"])?,
            probe_failures: counter(
                &r,
                "modelslab_probe_failures_total",
                "Failed probe runs, by reason.",
                &["probe", "reason"],
            )?,
            probe_skipped: counter(
                &r,
                "modelslab_probe_skipped_total",
                "Probe ticks not run, by reason (overlap, budget, backoff).",
                &["probe", "reason"],
            )?,
            probe_last_run: gauge(
                &r,
                "modelslab_probe_last_run_timestamp_seconds",
                "Unix time of the probe's last run.",
                &["probe"],
            )?,
            status_page_up: gauge(
                &r,
                "modelslab_status_page_up",
                "1 if the last status-page poll fetched and parsed, else 0.",
                &[],
            )?,
            status_page_status: gauge(
                &r,
                "modelslab_status_page_status",
                "Status page state: 0 operational, 1 maintenance, 2 degraded, 3 partial outage, 4 major outage.",
                &[],
            )?,
            status_page_component_status: gauge(
                &r,
                "modelslab_status_page_component_status",
                "Status of each status-page component (1 for its current status).",
                &["component", "status"],
            )?,
            status_page_incidents_open: gauge(
                &r,
                "modelslab_status_page_incidents_open",
                "Incidents open on the status page.",
                &[],
            )?,
            status_page_last_success: gauge(
                &r,
                "modelslab_status_page_last_success_timestamp_seconds",
                "Unix time of the last successful status-page poll.",
                &[],
            )?,
            proxy_synthetic: counter(
                &r,
                "modelslab_proxy_synthetic_responses_total",
                "Answers the proxy made itself, by reason.",
                &["reason"],
            )?,
            proxy_uninspected: counter(
                &r,
                "modelslab_proxy_uninspected_responses_total",
                "Answers passed through without classification, by reason.",
                &["reason"],
            )?,
            proxy_retries: counter(
                &r,
                "modelslab_proxy_rate_limit_retries_total",
                "Rate-limited requests the proxy held and sent again after retry_after (proxy.retry_rate_limited).",
                &[],
            )?,
            cluster_up: gauge(
                &r,
                "modelslab_sentinel_cluster_up",
                "1 while Redis answers (cluster.redis_url), else 0.",
                &[],
            )?,
            cluster_leader: gauge(
                &r,
                "modelslab_sentinel_cluster_leader",
                "1 on the replica holding the probe lease (it runs the `replicas: one` probes), else 0.",
                &[],
            )?,
            cluster_errors: counter(
                &r,
                "modelslab_sentinel_cluster_errors_total",
                "Redis operations that failed or timed out, by operation.",
                &["op"],
            )?,
            slo_events: counter(
                &r,
                "modelslab_slo_events_total",
                "Events each SLO judged, good or bad (exchanges, jobs or probe runs, as the SLO says).",
                &["slo", "result"],
            )?,
            slo_objective: gauge(
                &r,
                "modelslab_slo_objective_ratio",
                "The SLO's objective as a ratio (99.5 % is 0.995).",
                &["slo"],
            )?,
            slo_window: gauge(
                &r,
                "modelslab_slo_window_seconds",
                "The period the SLO's error budget spans.",
                &["slo"],
            )?,
            slo_min_events: gauge(
                &r,
                "modelslab_slo_min_events",
                "Events a burn-rate alert of the SLO needs in its long window before it may fire.",
                &["slo"],
            )?,
            balance: gauge(
                &r,
                "modelslab_account_balance",
                "The account's credit balance from the wallet endpoint (kept at the last value when a poll fails).",
                &["currency"],
            )?,
            balance_up: gauge(
                &r,
                "modelslab_account_balance_up",
                "1 if the last balance poll succeeded, else 0.",
                &[],
            )?,
            balance_last_success: gauge(
                &r,
                "modelslab_account_balance_last_success_timestamp_seconds",
                "Unix time of the last successful balance poll.",
                &[],
            )?,
            output_checks: counter(
                &r,
                "modelslab_output_checks_total",
                "Generated files a probe downloaded and checked, by result.",
                &["probe", "result"],
            )?,
            output_download: histogram(
                &r,
                "modelslab_output_download_duration_seconds",
                "Downloading one generated file from where the answer pointed.",
                &["probe"],
                buckets::DOWNLOAD,
            )?,
            webhook_deliveries: counter(
                &r,
                "modelslab_webhook_deliveries_total",
                "Webhook deliveries of probe runs, by result (probe=\"none\" for unknown ones).",
                &["probe", "result"],
            )?,
            webhook_delay: histogram(
                &r,
                "modelslab_webhook_delay_seconds",
                "A webhook's arrival after the job was seen finished (0 when it came first).",
                &["probe"],
                buckets::WEBHOOK_DELAY,
            )?,
            config_reload_success: gauge(
                &r,
                "modelslab_sentinel_config_last_reload_success",
                "1 if the last configuration (re)load succeeded, else 0.",
                &[],
            )?,
            config_reload_timestamp: gauge(
                &r,
                "modelslab_sentinel_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration (re)load.",
                &[],
            )?,
            spans_dropped: counter(
                &r,
                "modelslab_sentinel_trace_spans_dropped_total",
                "Spans lost because the OTLP collector did not take them.",
                &[],
            )?,
            label_overflow: counter(
                &r,
                "modelslab_sentinel_label_overflow_total",
                "Label values folded into \"other\" because a cardinality cap was reached.",
                &["label"],
            )?,
            registry: r,
        };
        let build = gauge(&m.registry, "modelslab_sentinel_build_info", "Build information; always 1.", &["version"])?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(m)
    }

    /// Applies the `labels` section of a (re)loaded config to new observations.
    pub fn set_label_policy(&self, labels: &Labels) {
        if let Ok(mut p) = self.policy.write() {
            *p = LabelPolicy::from(labels);
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| MetricsError::Encode(e.to_string()))?;
        String::from_utf8(buf).map_err(|e| MetricsError::Encode(e.to_string()))
    }

    /// The `endpoint` label for a request path: id-like segments become `{id}`, the query is
    /// dropped, and beyond `labels.max_endpoints` distinct values new ones become `other`.
    pub fn endpoint_label(&self, path: &str) -> String {
        let template = endpoint_template(path);
        if self.endpoints.read().is_ok_and(|set| set.contains(&template)) {
            return template;
        }
        let max = self.policy.read().map(|p| p.max_endpoints).unwrap_or(0);
        let Ok(mut set) = self.endpoints.write() else { return OTHER.to_owned() };
        if set.contains(&template) || set.len() < max {
            set.insert(template.clone());
            template
        } else {
            self.label_overflow.with_label_values(&["endpoint"]).inc();
            tracing::debug!(endpoint = %template, max, "endpoint label cap reached: counted as other");
            OTHER.to_owned()
        }
    }

    /// The `model` label for a request's `model_id`: listed ids as themselves, others `other`,
    /// no model `none`.
    pub fn model_label(&self, model_id: Option<&str>) -> String {
        match model_id {
            None => NONE.to_owned(),
            Some(id) if self.policy.read().is_ok_and(|p| p.models.contains(id)) => id.to_owned(),
            Some(_) => OTHER.to_owned(),
        }
    }

    /// Records one classified exchange: requests, errors, validation fields, durations,
    /// retry_after, the queue limit and etas. The one function probes and the proxy share.
    pub fn record_exchange(&self, ex: &Exchange<'_>) {
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
            if e.class == ErrorClass::RateLimited {
                if let Some(secs) = details.retry_after {
                    self.retry_after.with_label_values(&[source, ex.endpoint]).observe(secs);
                }
            }
        }
        if let Some(n) = details.queue_limit {
            self.queue_limit.with_label_values(NO_LABELS).set(f64::from(n));
        }
        if let Some(eta) = c.eta() {
            self.processing_eta.with_label_values(&[source, ex.endpoint]).observe(eta);
        }
    }

    /// A job started being tracked.
    pub fn job_started(&self, source: Source) {
        self.jobs_in_flight.with_label_values(&[source.as_str()]).inc();
    }

    /// A tracked job ended (terminal answer, expiry or eviction).
    pub fn job_ended(&self, end: &JobEnd<'_>) {
        let source = end.source.as_str();
        let result = end.result.as_str();
        self.jobs_in_flight.with_label_values(&[source]).dec();
        self.jobs.with_label_values(&[source, end.endpoint, end.model, result]).inc();
        let secs = end.duration.as_secs_f64();
        self.job_duration.with_label_values(&[source, end.endpoint, end.model, result]).observe(secs);
        if let Some(eta) = end.first_eta.filter(|e| *e > 0.0) {
            if matches!(end.result, JobResult::Success | JobResult::Failed | JobResult::Error) {
                self.job_eta_ratio.with_label_values(&[source, end.endpoint]).observe(secs / eta);
            }
        }
    }

    /// The proxy answered a request itself.
    pub fn proxy_synthetic(&self, reason: SyntheticReason) {
        self.proxy_synthetic.with_label_values(&[reason.as_str()]).inc();
    }

    /// The proxy passed an answer through without classifying it.
    pub fn proxy_uninspected(&self, reason: UninspectedReason) {
        self.proxy_uninspected.with_label_values(&[reason.as_str()]).inc();
    }

    /// The proxy held a rate-limited request and is sending it again.
    pub fn proxy_retried(&self) {
        self.proxy_retries.with_label_values(NO_LABELS).inc();
    }

    /// A status-page poll fetched and parsed: publish its state. Components not listed any more
    /// lose their series.
    pub fn status_page_state(
        &self,
        status: PageStatus,
        components: &[(String, PageStatus)],
        gone: &[String],
        incidents_open: u32,
    ) {
        self.status_page_up.with_label_values(NO_LABELS).set(1.0);
        self.status_page_status.with_label_values(NO_LABELS).set(f64::from(status.level()));
        self.status_page_incidents_open.with_label_values(NO_LABELS).set(f64::from(incidents_open));
        self.status_page_last_success.with_label_values(NO_LABELS).set(unix_now());
        for (name, current) in components {
            for s in PageStatus::ALL {
                let v = if s == current { 1.0 } else { 0.0 };
                self.status_page_component_status.with_label_values(&[name.as_str(), s.as_str()]).set(v);
            }
        }
        for name in gone {
            for s in PageStatus::ALL {
                let _ = self.status_page_component_status.remove_label_values(&[name.as_str(), s.as_str()]);
            }
        }
    }

    /// A status-page poll failed: `up` goes to 0, the last known state stays.
    pub fn status_page_down(&self) {
        self.status_page_up.with_label_values(NO_LABELS).set(0.0);
    }

    /// A status-page component was dropped because `status_page.max_components` was reached.
    pub fn component_overflow(&self) {
        self.label_overflow.with_label_values(&["component"]).inc();
    }

    /// A probe was (re)scheduled: its counters exist at 0, so rules see a series from the start.
    pub fn probe_registered(&self, probe: &str) {
        for result in ["success", "failure"] {
            self.probe_runs.with_label_values(&[probe, result]);
        }
        for reason in ProbeFailure::ALL {
            self.probe_failures.with_label_values(&[probe, reason.as_str()]);
        }
        for reason in SkipReason::ALL {
            self.probe_skipped.with_label_values(&[probe, reason.as_str()]);
        }
    }

    /// A probe run ended.
    pub fn probe_finished(
        &self,
        probe: &str,
        success: bool,
        failure: Option<ProbeFailure>,
        duration_seconds: f64,
        started_at_unix: f64,
    ) {
        self.probe_success.with_label_values(&[probe]).set(if success { 1.0 } else { 0.0 });
        self.probe_duration.with_label_values(&[probe]).set(duration_seconds);
        self.probe_last_run.with_label_values(&[probe]).set(started_at_unix);
        self.probe_runs.with_label_values(&[probe, if success { "success" } else { "failure" }]).inc();
        if let Some(reason) = failure {
            self.probe_failures.with_label_values(&[probe, reason.as_str()]).inc();
        }
    }

    /// A probe tick did not run.
    pub fn probe_skipped(&self, probe: &str, reason: SkipReason) {
        self.probe_skipped.with_label_values(&[probe, reason.as_str()]).inc();
    }

    /// A probe was removed from the config: its series go too.
    pub fn forget_probe(&self, probe: &str) {
        self.forget_probe_state(probe);
        for result in ["success", "failure"] {
            let _ = self.probe_runs.remove_label_values(&[probe, result]);
        }
        for reason in ProbeFailure::ALL {
            let _ = self.probe_failures.remove_label_values(&[probe, reason.as_str()]);
        }
        for reason in SkipReason::ALL {
            let _ = self.probe_skipped.remove_label_values(&[probe, reason.as_str()]);
        }
    }

    /// An SLO is (re)declared: its objective, window and threshold, and its counters at 0.
    pub fn slo_declared(&self, slo: &str, objective_ratio: f64, window_seconds: f64, min_events: u32) {
        self.slo_objective.with_label_values(&[slo]).set(objective_ratio);
        self.slo_window.with_label_values(&[slo]).set(window_seconds);
        self.slo_min_events.with_label_values(&[slo]).set(f64::from(min_events));
        for result in ["good", "bad"] {
            self.slo_events.with_label_values(&[slo, result]);
        }
    }

    /// An SLO left the configuration: its series go.
    pub fn slo_removed(&self, slo: &str) {
        for g in [&self.slo_objective, &self.slo_window, &self.slo_min_events] {
            let _ = g.remove_label_values(&[slo]);
        }
        for result in ["good", "bad"] {
            let _ = self.slo_events.remove_label_values(&[slo, result]);
        }
    }

    /// An SLO judged one event.
    pub fn slo_event(&self, slo: &str, good: bool) {
        self.slo_events.with_label_values(&[slo, if good { "good" } else { "bad" }]).inc();
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

    /// A balance poll succeeded.
    pub fn balance(&self, balance: f64, currency: &str) {
        self.balance.with_label_values(&[currency]).set(balance);
        self.balance_up.with_label_values(NO_LABELS).set(1.0);
        self.balance_last_success.with_label_values(NO_LABELS).set(unix_now());
    }

    /// A balance poll failed: `up` goes to 0, the last value stays.
    pub fn balance_down(&self) {
        self.balance_up.with_label_values(NO_LABELS).set(0.0);
    }

    /// A probe's last-run gauges go (its counters stay): this replica stopped running it.
    pub fn forget_probe_state(&self, probe: &str) {
        for g in [&self.probe_success, &self.probe_duration, &self.probe_last_run] {
            let _ = g.remove_label_values(&[probe]);
        }
    }

    /// Redis answered, or stopped answering.
    pub fn cluster_up(&self, up: bool) {
        self.cluster_up.with_label_values(NO_LABELS).set(if up { 1.0 } else { 0.0 });
    }

    /// This replica took or lost the probe lease.
    pub fn cluster_leader(&self, leader: bool) {
        self.cluster_leader.with_label_values(NO_LABELS).set(if leader { 1.0 } else { 0.0 });
    }

    /// A Redis operation failed.
    pub fn cluster_error(&self, op: ClusterOp) {
        self.cluster_errors.with_label_values(&[op.as_str()]).inc();
    }

    /// Raises the dropped-spans counter to `total` (the exporter counts; this publishes).
    pub fn spans_dropped_total(&self, total: u64) {
        let c = self.spans_dropped.with_label_values(NO_LABELS);
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// Records the result of a configuration (re)load.
    pub fn config_loaded(&self, success: bool) {
        self.config_reload_success.with_label_values(NO_LABELS).set(if success { 1.0 } else { 0.0 });
        if success {
            self.config_reload_timestamp.with_label_values(NO_LABELS).set(unix_now());
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
}

impl From<&Labels> for LabelPolicy {
    fn from(l: &Labels) -> Self {
        LabelPolicy { models: l.models.iter().cloned().collect(), max_endpoints: l.max_endpoints }
    }
}

/// Seconds since the Unix epoch, for `*_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `http_status` label: the code, or `none` when no response arrived.
pub fn status_label(status: Option<u16>) -> String {
    status.map_or_else(|| NONE.to_owned(), |s| s.to_string())
}

/// Whether a path segment is a job or resource id rather than part of the route.
fn is_id_like(seg: &str) -> bool {
    let len = seg.len();
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    (len > 0 && digits == len)
        || (len >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        || (len >= 8 && digits >= 3)
        || len > 40
}

/// The route of a request path: no query, id-like segments as `{id}`, at most 128 characters.
pub fn endpoint_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(if is_id_like(seg) { "{id}" } else { seg });
    }
    if out.is_empty() {
        out.push('/');
    }
    if out.len() > MAX_ENDPOINT_CHARS { OTHER.to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::classify::{Context, RequestKind, classify};

    fn metrics(max_endpoints: usize) -> Metrics {
        Metrics::new(&Labels { models: vec!["flux".into()], max_endpoints }).unwrap()
    }

    #[test]
    fn endpoint_templates() {
        let table = [
            ("/api/v6/images/text2img", "/api/v6/images/text2img"),
            ("/api/v6/images/fetch/134701497", "/api/v6/images/fetch/{id}"),
            ("/api/v6/images/fetch/abc123-def456", "/api/v6/images/fetch/{id}"),
            ("/api/v6/images/fetch/3f2b8c1e-9d4a-4e6b-8c2d-1a2b3c4d5e6f", "/api/v6/images/fetch/{id}"),
            ("/api/v7/images/image-to-image", "/api/v7/images/image-to-image"),
            ("/api/v7/video-fusion/fetch/77?key=secret", "/api/v7/video-fusion/fetch/{id}"),
            ("/api/v7/models?key=sk-secret", "/api/v7/models"),
            ("//api//v6/realtime/img2img/", "/api/v6/realtime/img2img"),
            ("/", "/"),
            ("", "/"),
        ];
        for (path, want) in table {
            assert_eq!(endpoint_template(path), want, "{path}");
        }
        assert_eq!(endpoint_template(&format!("/{}", "a/".repeat(100))), OTHER);
    }

    #[test]
    fn endpoint_cap_overflows_to_other_and_counts() {
        let m = metrics(2);
        assert_eq!(m.endpoint_label("/a"), "/a");
        assert_eq!(m.endpoint_label("/b/1"), "/b/{id}");
        assert_eq!(m.endpoint_label("/c"), "other");
        assert_eq!(m.endpoint_label("/a"), "/a", "known values stay");
        assert_eq!(m.endpoint_label("/b/2"), "/b/{id}");
        assert_eq!(m.label_overflow.with_label_values(&["endpoint"]).get(), 1);
    }

    #[test]
    fn model_allowlist() {
        let m = metrics(8);
        assert_eq!(m.model_label(Some("flux")), "flux");
        assert_eq!(m.model_label(Some("my-private-finetune")), "other");
        assert_eq!(m.model_label(None), "none");
        m.set_label_policy(&Labels { models: vec!["sdxl".into()], max_endpoints: 8 });
        assert_eq!(m.model_label(Some("flux")), "other");
        assert_eq!(m.model_label(Some("sdxl")), "sdxl");
    }

    fn record(m: &Metrics, status: u16, body: &str) {
        let c = classify(status, &HeaderMap::new(), body.as_bytes(), &Context::new(RequestKind::Submit));
        let endpoint = m.endpoint_label("/api/v6/images/text2img");
        m.record_exchange(&Exchange {
            source: Source::Proxy,
            endpoint: &endpoint,
            model: "flux",
            http_status: Some(status),
            classification: &c,
            duration: Duration::from_millis(120),
        });
    }

    #[test]
    fn record_exchange_counts_every_family_it_owns() {
        let m = metrics(8);
        record(&m, 200, r#"{"status":"error","message":"Internal server error. Please try again."}"#);
        record(
            &m,
            429,
            r#"{"status":"error","message":"Rate limit exceeded. Maximum 10 queued requests allowed.","retry_after":30}"#,
        );
        record(&m, 400, r#"{"status":"error","message":"width must be between 256 and 1024"}"#);
        record(&m, 200, r#"{"status":"processing","id":1,"eta":12.5}"#);
        let ep = "/api/v6/images/text2img";
        assert_eq!(m.requests.with_label_values(&["proxy", ep, "flux", "200", "error"]).get(), 1);
        assert_eq!(m.requests.with_label_values(&["proxy", ep, "flux", "200", "processing"]).get(), 1);
        assert_eq!(m.errors.with_label_values(&["proxy", ep, "200", "server_error", "internal_error"]).get(), 1);
        assert_eq!(m.errors.with_label_values(&["proxy", ep, "429", "rate_limited", "queue_full"]).get(), 1);
        assert_eq!(m.validation_errors.with_label_values(&["proxy", ep, "width"]).get(), 1);
        assert_eq!(m.retry_after.with_label_values(&["proxy", ep]).get_sample_sum(), 30.0);
        assert_eq!(m.queue_limit.with_label_values(NO_LABELS).get(), 10.0);
        assert_eq!(m.processing_eta.with_label_values(&["proxy", ep]).get_sample_sum(), 12.5);
        assert_eq!(m.request_duration.with_label_values(&["proxy", ep, "error"]).get_sample_count(), 3);
    }

    #[test]
    fn job_end_updates_jobs_durations_ratio_and_in_flight() {
        let m = metrics(8);
        m.job_started(Source::Probe);
        m.job_started(Source::Probe);
        let end = |result, secs| JobEnd {
            source: Source::Probe,
            endpoint: "/api/v6/images/text2img",
            model: "flux",
            result,
            duration: Duration::from_secs(secs),
            first_eta: Some(10.0),
        };
        m.job_ended(&end(JobResult::Success, 30));
        m.job_ended(&end(JobResult::Expired, 1800));
        assert_eq!(m.jobs_in_flight.with_label_values(&["probe"]).get(), 0);
        assert_eq!(m.jobs.with_label_values(&["probe", "/api/v6/images/text2img", "flux", "success"]).get(), 1);
        let ratio = m.job_eta_ratio.with_label_values(&["probe", "/api/v6/images/text2img"]);
        assert_eq!((ratio.get_sample_count(), ratio.get_sample_sum()), (1, 3.0), "expired jobs have no ratio");
    }

    #[test]
    fn status_page_components_that_vanish_lose_their_series() {
        let m = metrics(8);
        let comps = vec![("API".to_owned(), PageStatus::Degraded), ("Video".to_owned(), PageStatus::Operational)];
        m.status_page_state(PageStatus::Degraded, &comps, &[], 2);
        let text = m.render().unwrap();
        assert!(text.contains("modelslab_status_page_component_status{component=\"API\",status=\"degraded\"} 1"));
        assert!(text.contains("modelslab_status_page_component_status{component=\"API\",status=\"operational\"} 0"));
        m.status_page_state(PageStatus::Operational, &comps[..1], &["Video".to_owned()], 0);
        let text = m.render().unwrap();
        assert!(!text.contains("component=\"Video\""));
        assert!(text.contains("modelslab_status_page_status 0"));
        m.status_page_down();
        assert!(m.render().unwrap().contains("modelslab_status_page_up 0"));
    }

    #[test]
    fn render_has_build_info_and_reload_state_but_no_unset_gauges() {
        let m = metrics(8);
        m.config_loaded(true);
        let text = m.render().unwrap();
        assert!(
            text.contains(&format!("modelslab_sentinel_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")))
        );
        assert!(text.contains("modelslab_sentinel_config_last_reload_success 1"));
        assert!(!text.contains("modelslab_status_page_up"), "no status page configured, no series");
        assert!(m.config_last_reload_success());
        m.config_loaded(false);
        assert!(!m.config_last_reload_success());
        assert!(m.config_last_reload_timestamp() > 1.7e9);
    }
}
