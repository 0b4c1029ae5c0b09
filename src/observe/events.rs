//! The events, one struct each, with the one `emit` that logs, counts and records it.

use std::time::Duration;

use tracing::Span;

use super::history::RunMark;
use super::spans::{self, SpanContext};
use super::{Event, Observer};
use crate::classify::PageStatus;
use crate::vocab::{
    AccountPoll, ClusterOp, MaintenanceSource, OutputResult, ProbeFailure, RunReport, SkipReason, Source,
    SyntheticReason, UninspectedReason, WebhookResult,
};
pub use crate::vocab::{Exchange, Generated, JobEnd};

/// One HTTP exchange with the API was classified (a probe's submit or poll, a proxied request).
pub struct ExchangeObserved<'a> {
    /// What the metrics count (labels from [`Observer::endpoint_label`] and
    /// [`Observer::model_label`]).
    pub exchange: Exchange<'a>,
    /// The exchange's client span.
    pub span: &'a Span,
    /// The proxied request's server span: it takes the answer's status too.
    pub server: Option<&'a Span>,
    /// Values scrubbed from the message recorded on the span (the request's key).
    pub secrets: &'a [&'a str],
    /// The request's `model_id`, when only the request body told it (the proxy's case).
    pub request_model: Option<&'a str>,
    /// The job the exchange submitted or polled, recorded on the server span.
    pub job_id: Option<&'a str>,
}

impl Event for ExchangeObserved<'_> {
    const NAME: &'static str = "exchange_observed";

    fn emit(self, to: &Observer) {
        let ex = &self.exchange;
        let c = ex.classification;
        to.metrics.exchanges.record(ex);
        to.history.exchange(ex);
        let slos = to.slos();
        for (slo, good) in slos.exchange(ex) {
            to.slo_event(slo, good);
        }
        spans::record(self.span, ex.http_status, c, self.secrets);
        if let Some(model) = self.request_model {
            spans::record_model(self.span, model);
        }
        if let Some(server) = self.server {
            if let Some(status) = ex.http_status {
                spans::record_server(server, status, c.error_class().map(|e| e.as_str()));
            }
            if let Some(id) = self.job_id {
                spans::record_job(server, id);
            }
        }
        if let Some(e) = c.error() {
            tracing::debug!(
                source = ex.source.as_str(), endpoint = ex.endpoint,
                http_status = %crate::vocab::status_label(ex.http_status),
                error_class = e.class.as_str(), reason = e.reason.as_str(), "api error"
            );
        }
    }
}

/// The proxy answered a request itself (the upstream timed out or could not be reached, the body
/// was too large, the request was refused).
pub struct SyntheticAnswer<'a> {
    /// Why the proxy answered.
    pub reason: SyntheticReason,
    /// The status the proxy answered with.
    pub status: u16,
    /// The proxied request's server span.
    pub server: &'a Span,
}

impl Event for SyntheticAnswer<'_> {
    const NAME: &'static str = "synthetic_answer";

    fn emit(self, to: &Observer) {
        to.metrics.proxy.synthetic(self.reason);
        spans::record_server(self.server, self.status, Some(self.reason.as_str()));
        tracing::debug!(reason = self.reason.as_str(), status = self.status, "proxy answered itself");
    }
}

/// The proxy passed an answer through without classifying it.
pub struct ResponseUninspected {
    /// Why the answer was not classified.
    pub reason: UninspectedReason,
}

impl Event for ResponseUninspected {
    const NAME: &'static str = "response_uninspected";

    fn emit(self, to: &Observer) {
        to.metrics.proxy.uninspected(self.reason);
        tracing::trace!(reason = self.reason.as_str(), "answer passed through uninspected");
    }
}

/// The proxy held a rate-limited request and is sending it again after `retry_after`.
pub struct RateLimitRetry {
    /// How long it waits before sending again.
    pub wait: Duration,
}

impl Event for RateLimitRetry {
    const NAME: &'static str = "rate_limit_retry";

    fn emit(self, to: &Observer) {
        to.metrics.proxy.retried();
        tracing::debug!(wait_seconds = self.wait.as_secs_f64(), "rate limited: holding the request to retry it");
    }
}

/// An async job began to be followed.
pub struct JobStarted {
    /// Which component follows the job.
    pub source: Source,
}

impl Event for JobStarted {
    const NAME: &'static str = "job_started";

    fn emit(self, to: &Observer) {
        to.metrics.jobs.started(self.source);
        to.history.job_started();
    }
}

/// A followed job ended: a terminal answer was seen, or it expired or was evicted.
pub struct JobEnded<'a> {
    /// What the metrics count.
    pub job: JobEnd<'a>,
    /// The span of the exchange that saw the end, linked to the submission's.
    pub span: Option<&'a Span>,
    /// The submission's span (its context), when known.
    pub submitted: Option<&'a SpanContext>,
}

impl Event for JobEnded<'_> {
    const NAME: &'static str = "job_ended";

    fn emit(self, to: &Observer) {
        let job = &self.job;
        to.metrics.jobs.ended(job);
        to.history.job_ended(job);
        let slos = to.slos();
        for (slo, good) in slos.job(job) {
            to.slo_event(slo, good);
        }
        if let (Some(span), Some(cx)) = (self.span, self.submitted) {
            spans::link(span, cx);
        }
        tracing::debug!(
            source = job.source.as_str(),
            endpoint = job.endpoint,
            result = job.result.as_str(),
            duration_seconds = job.duration.as_secs_f64(),
            "job ended"
        );
    }
}

/// A generation delivered (a synchronous success or a job's success): its split of time between
/// the queue and the model, and its files.
pub struct GenerationDelivered<'a> {
    /// What the metrics count.
    pub generated: Generated<'a>,
}

impl Event for GenerationDelivered<'_> {
    const NAME: &'static str = "generation_delivered";

    fn emit(self, to: &Observer) {
        let g = &self.generated;
        to.metrics.jobs.generated(g);
        to.history.generated(g);
        tracing::trace!(
            source = g.source.as_str(),
            endpoint = g.endpoint,
            generation_seconds = g.generation_time,
            outputs = g.outputs,
            "generation delivered"
        );
    }
}

/// A probe was scheduled, or rescheduled after its definition changed.
pub struct ProbeScheduled<'a> {
    /// The probe's name.
    pub probe: &'a str,
    /// Its interval.
    pub interval: Duration,
    /// Whether it replaced a changed definition.
    pub changed: bool,
}

impl Event for ProbeScheduled<'_> {
    const NAME: &'static str = "probe_scheduled";

    fn emit(self, to: &Observer) {
        to.metrics.probes.registered(self.probe);
        if self.changed {
            tracing::info!(probe = %self.probe, "probe changed: rescheduled");
        } else {
            tracing::info!(probe = %self.probe, interval = %humantime::format_duration(self.interval), "probe scheduled");
        }
    }
}

/// A probe left the configuration.
pub struct ProbeRemoved<'a> {
    /// The probe's name.
    pub probe: &'a str,
}

impl Event for ProbeRemoved<'_> {
    const NAME: &'static str = "probe_removed";

    fn emit(self, to: &Observer) {
        to.metrics.probes.forget(self.probe);
        to.history.probe_removed(self.probe);
        tracing::info!(probe = %self.probe, "probe removed");
    }
}

/// This replica stopped running a `replicas: one` probe (another holds the lease): its last
/// result stops being exported here, so that a stale failure cannot keep an alert firing.
pub struct ProbeStandby<'a> {
    /// The probe's name.
    pub probe: &'a str,
}

impl Event for ProbeStandby<'_> {
    const NAME: &'static str = "probe_standby";

    fn emit(self, to: &Observer) {
        to.metrics.probes.forget_state(self.probe);
        tracing::debug!(probe = self.probe, "probe runs on the lease holder: its last result here is dropped");
    }
}

/// A probe tick did not run.
pub struct ProbeSkipped<'a> {
    /// The probe's name.
    pub probe: &'a str,
    /// Why the tick did not run.
    pub reason: SkipReason,
}

impl Event for ProbeSkipped<'_> {
    const NAME: &'static str = "probe_skipped";

    fn emit(self, to: &Observer) {
        to.metrics.probes.skipped(self.probe, self.reason);
        tracing::debug!(probe = self.probe, reason = self.reason.as_str(), "probe tick skipped");
    }
}

/// A probe run ended (its exchanges were observed on the way).
pub struct ProbeRunFinished<'a> {
    /// The run's report.
    pub report: &'a RunReport,
    /// Whether the previous run succeeded (`None`: the first run); changes are logged.
    pub previous_success: Option<bool>,
    /// The run's root span.
    pub span: &'a Span,
}

impl Event for ProbeRunFinished<'_> {
    const NAME: &'static str = "probe_run_finished";

    fn emit(self, to: &Observer) {
        let r = self.report;
        let probe = r.probe.as_str();
        let failure = r.outcome.failure();
        let duration = Duration::from_secs_f64(r.duration_seconds.max(0.0));
        to.metrics.probes.finished(probe, failure, duration, r.started_at_unix);
        if failure.is_some() {
            self.span.record("otel.status_code", "error");
        }
        to.history.probe_run(
            probe,
            RunMark {
                at_unix: r.started_at_unix,
                success: failure.is_none(),
                duration_seconds: r.duration_seconds,
                failure_reason: failure,
            },
        );
        let slos = to.slos();
        for (slo, good) in slos.probe(probe, failure.is_none()) {
            to.slo_event(slo, good);
        }
        let reason = failure.map_or("-", ProbeFailure::as_str);
        match (self.previous_success, failure.is_none()) {
            (Some(true) | None, false) => tracing::warn!(
                probe, reason, failed = %r.outcome.failed_expectations().join("; "), "probe failing"
            ),
            (Some(false), true) => tracing::info!(probe, "probe recovered"),
            _ => {}
        }
        tracing::debug!(
            probe,
            result = r.outcome.result().as_str(),
            reason,
            duration_seconds = r.duration_seconds,
            "probe run finished"
        );
    }
}

/// The status-page poller settled on a document format.
pub struct StatusPageDetected<'a> {
    /// The format settled on.
    pub format: &'a str,
    /// The document it is read from.
    pub url: &'a str,
}

impl Event for StatusPageDetected<'_> {
    const NAME: &'static str = "status_page_detected";

    fn emit(self, _: &Observer) {
        tracing::info!(format = self.format, url = self.url, "status page format detected");
    }
}

/// A status-page poll fetched and parsed.
pub struct StatusPagePolled<'a> {
    /// The format read.
    pub format: &'a str,
    /// The page's overall state.
    pub status: PageStatus,
    /// Each component's state.
    pub components: &'a [(String, PageStatus)],
    /// Components listed before and not any more: their series go.
    pub gone: &'a [String],
    /// Incidents open.
    pub incidents_open: u32,
    /// The state before this poll (`None`: the first poll that succeeded).
    pub previous: Option<PageStatus>,
    /// The page was unreachable before this poll.
    pub recovered: bool,
}

impl Event for StatusPagePolled<'_> {
    const NAME: &'static str = "status_page_polled";

    fn emit(self, to: &Observer) {
        to.metrics.status_page.state(self.status, self.components, self.gone, self.incidents_open);
        if self.previous != Some(self.status) {
            tracing::info!(
                format = self.format,
                incidents_open = self.incidents_open,
                "status page: {}",
                status_change(self.previous, self.status)
            );
        }
        if self.recovered {
            tracing::info!("status page reachable again");
        }
    }
}

/// `operational → major_outage`, or the state alone for the first one.
pub fn status_change(before: Option<PageStatus>, now: PageStatus) -> String {
    match before {
        Some(b) => format!("{} → {}", b.as_str(), now.as_str()),
        None => now.as_str().to_owned(),
    }
}

/// A status-page poll failed; the last known state stays.
pub struct StatusPageFailed<'a> {
    /// Why, in words (no body).
    pub error: &'a str,
    /// The poll before succeeded (or this is the first): the failure is logged once.
    pub first: bool,
}

impl Event for StatusPageFailed<'_> {
    const NAME: &'static str = "status_page_failed";

    fn emit(self, to: &Observer) {
        to.metrics.status_page.down();
        if self.first {
            tracing::warn!("status page unreachable, keeping the last known state: {}", self.error);
        }
    }
}

/// A maintenance window began or ended.
pub struct MaintenanceChanged<'a> {
    /// The configuration's window, or the vendor's maintenance.
    pub source: MaintenanceSource,
    /// The window now on, if one is.
    pub window: Option<&'a str>,
    /// The window that ended, if one did.
    pub ended: Option<&'a str>,
}

impl Event for MaintenanceChanged<'_> {
    const NAME: &'static str = "maintenance_changed";

    fn emit(self, to: &Observer) {
        to.metrics.maintenance.set(self.source, self.window.is_some());
        let source = self.source.as_str();
        if let Some(ended) = self.ended {
            tracing::info!(source, window = ended, "maintenance window ended");
        }
        if let Some(window) = self.window {
            tracing::info!(source, window, "maintenance window began: paused probes skip their runs");
        }
    }
}

/// A status-page component was dropped: `status_page.max_components` was reached.
pub struct ComponentOverflow<'a> {
    /// The component dropped.
    pub component: &'a str,
}

impl Event for ComponentOverflow<'_> {
    const NAME: &'static str = "component_overflow";

    fn emit(self, to: &Observer) {
        to.metrics.agent.label_overflow("component");
        tracing::debug!(component = self.component, "status page component over max_components: dropped");
    }
}

/// The configuration was (re)loaded.
pub struct ConfigReloaded<'a> {
    /// The configuration file.
    pub file: &'a str,
    /// Changed settings that only a restart applies.
    pub restart_required: &'a [String],
}

impl Event for ConfigReloaded<'_> {
    const NAME: &'static str = "config_reloaded";

    fn emit(self, to: &Observer) {
        to.metrics.agent.config_loaded(true);
        if !self.restart_required.is_empty() {
            tracing::warn!(
                settings = %self.restart_required.join(", "),
                "reloaded settings that only take effect after a restart"
            );
        }
        tracing::info!(file = self.file, "configuration reloaded");
    }
}

/// A reload found a bad configuration; the running one stays.
pub struct ConfigReloadFailed<'a> {
    /// Every problem, one per line.
    pub problems: &'a str,
}

impl Event for ConfigReloadFailed<'_> {
    const NAME: &'static str = "config_reload_failed";

    fn emit(self, to: &Observer) {
        to.metrics.agent.config_loaded(false);
        tracing::error!("configuration reload failed, keeping the running configuration: {}", self.problems);
    }
}

/// Redis answered again, or stopped answering (or answers in a way the agent cannot use).
pub struct ClusterReachable {
    /// Whether it answers.
    pub up: bool,
    /// Why a Redis that answers cannot be used, when its answer says.
    pub unusable: Option<&'static str>,
}

impl Event for ClusterReachable {
    const NAME: &'static str = "cluster_reachable";

    fn emit(self, to: &Observer) {
        to.metrics.cluster.up(self.up);
        if self.up {
            tracing::info!("cluster: Redis answers; job state and probe leadership are shared");
        } else if let Some(why) = self.unusable {
            tracing::warn!("cluster: Redis cannot be used: {why}; jobs are tracked locally until it can");
        } else {
            tracing::warn!(
                "cluster: Redis does not answer; jobs are tracked locally and the probe lease stays as it was until it does"
            );
        }
    }
}

/// `cluster.redis_url` turned out to name a Redis Cluster node: its slots are followed from now on.
pub struct ClusterFollowed;

impl Event for ClusterFollowed {
    const NAME: &'static str = "cluster_followed";

    fn emit(self, _: &Observer) {
        tracing::info!("cluster: cluster.redis_url names a Redis Cluster node; following its slots and failovers");
    }
}

/// Redis had lost its data (its marker key was gone): the jobs this replica saw submitted and
/// had not seen end were written back.
pub struct ClusterJobsRestored {
    /// How many were missing and written back.
    pub jobs: u64,
}

impl Event for ClusterJobsRestored {
    const NAME: &'static str = "cluster_jobs_restored";

    fn emit(self, to: &Observer) {
        to.metrics.cluster.restored(self.jobs);
        tracing::warn!(
            jobs = self.jobs,
            "cluster: Redis lost its data (restarted empty or flushed); this replica wrote back the jobs it saw submitted"
        );
    }
}

/// A Redis operation failed (`kind`: the client's error kind, or `timeout`; never a URL).
pub struct ClusterError {
    /// What was asked.
    pub op: ClusterOp,
    /// The client's error kind, or `timeout`.
    pub kind: String,
}

impl Event for ClusterError {
    const NAME: &'static str = "cluster_error";

    fn emit(self, to: &Observer) {
        to.metrics.cluster.error(self.op);
        tracing::debug!(op = self.op.as_str(), kind = %self.kind, "cluster: redis operation failed");
    }
}

/// This replica took or gave up the probe lease (or learned its role the first time).
pub struct ClusterRole<'a> {
    /// This replica's name.
    pub replica: &'a str,
    /// Whether it holds the lease now.
    pub leader: bool,
    /// The holder as Redis says (`replica#epoch`).
    pub holder: Option<&'a str>,
}

impl Event for ClusterRole<'_> {
    const NAME: &'static str = "cluster_role";

    fn emit(self, to: &Observer) {
        to.metrics.cluster.leader(self.leader);
        if self.leader {
            tracing::info!(
                replica = self.replica,
                lease = self.holder.unwrap_or("-"),
                "cluster: this replica holds the probe lease and runs the `replicas: one` probes"
            );
        } else {
            tracing::info!(
                replica = self.replica,
                lease_holder = self.holder.unwrap_or("-"),
                "cluster: standby; the lease holder runs the `replicas: one` probes"
            );
        }
    }
}

/// A wallet balance poll succeeded.
pub struct BalancePolled<'a> {
    /// The balance.
    pub balance: f64,
    /// Its currency (an ISO 4217 code, or `other`).
    pub currency: &'a str,
    /// How far it fell since the last read of the same currency (0 for a rise: a top-up).
    pub spent: f64,
    /// The poll before had failed.
    pub recovered: bool,
}

impl Event for BalancePolled<'_> {
    const NAME: &'static str = "balance_polled";

    fn emit(self, to: &Observer) {
        to.metrics.account.balance(self.balance, self.currency, self.spent);
        to.history.balance(self.balance);
        if self.recovered {
            tracing::info!("account balance readable again");
        }
        tracing::debug!(balance = self.balance, currency = self.currency, spent = self.spent, "account balance");
    }
}

/// The account's queue limit, configured or learned from a 429, at a queue poll.
pub struct QueueLimitKnown {
    /// Queued requests the plan allows.
    pub limit: u32,
}

impl Event for QueueLimitKnown {
    const NAME: &'static str = "queue_limit_known";

    fn emit(self, to: &Observer) {
        to.metrics.account.queue_limit(self.limit);
    }
}

/// An account-wide queue poll succeeded.
pub struct QueuePolled {
    /// Unfinished requests of every client of the key.
    pub depth: u32,
    /// The poll before had failed.
    pub recovered: bool,
}

impl Event for QueuePolled {
    const NAME: &'static str = "queue_polled";

    fn emit(self, to: &Observer) {
        to.metrics.account.queue(self.depth);
        if self.recovered {
            tracing::info!("account queue readable again");
        }
        tracing::debug!(depth = self.depth, "account queue");
    }
}

/// A catalogue poll succeeded.
pub struct CataloguePolled<'a> {
    /// Each watched model ever seen listed, and whether it is listed now.
    pub listed: &'a [(&'a str, bool)],
    /// Models no longer watched: their series go.
    pub forgotten: &'a [String],
    /// Models that left the catalogue with this poll.
    pub newly_delisted: &'a [&'a str],
    /// Models the catalogue lists.
    pub size: usize,
    /// The poll before had failed.
    pub recovered: bool,
}

impl Event for CataloguePolled<'_> {
    const NAME: &'static str = "catalogue_polled";

    fn emit(self, to: &Observer) {
        to.metrics.account.models(self.listed, self.forgotten);
        for model in self.newly_delisted {
            tracing::warn!(model, "model catalogue: a model of labels.models is no longer listed");
        }
        if self.recovered {
            tracing::info!("model catalogue readable again");
        }
        tracing::debug!(models = self.size, "model catalogue");
    }
}

/// An account poll failed; its last value stays.
pub struct AccountPollFailed<'a> {
    /// Which poll.
    pub poll: AccountPoll,
    /// In the error model's words (class/reason and the scrubbed message), never the raw answer.
    pub why: &'a str,
    /// The poll before succeeded (or this is the first): logged once.
    pub first: bool,
}

impl Event for AccountPollFailed<'_> {
    const NAME: &'static str = "account_poll_failed";

    fn emit(self, to: &Observer) {
        to.metrics.account.down(self.poll);
        if self.first {
            tracing::warn!("account {} poll failed, keeping the last value: {}", self.poll.as_str(), self.why);
        }
    }
}

/// A probe checked one generated file the answer pointed to.
pub struct OutputChecked<'a> {
    /// The probe.
    pub probe: &'a str,
    /// How the check ended.
    pub result: OutputResult,
    /// The URL without its query string (which may carry a signed token).
    pub url: &'a str,
    /// How long the download took, when one was made.
    pub download: Option<Duration>,
}

impl Event for OutputChecked<'_> {
    const NAME: &'static str = "output_checked";

    fn emit(self, to: &Observer) {
        to.metrics.delivery.output_checked(self.probe, self.result, self.download);
        to.history.output(self.result);
        tracing::debug!(probe = self.probe, result = self.result.as_str(), url = self.url, "output checked");
    }
}

/// A webhook delivery's verdict (`probe`: "none" for one no run waits for).
pub struct WebhookDelivery<'a> {
    /// The run's probe (`none` when no run waits for it).
    pub probe: &'a str,
    /// The verdict.
    pub result: WebhookResult,
    /// Arrival after the job was seen finished (0 when it came first).
    pub delay: Option<Duration>,
    /// The job it was about, when known.
    pub job_id: Option<&'a str>,
}

impl Event for WebhookDelivery<'_> {
    const NAME: &'static str = "webhook_delivery";

    fn emit(self, to: &Observer) {
        to.metrics.delivery.webhook(self.probe, self.result, self.delay);
        to.history.webhook(self.result);
        match self.result {
            WebhookResult::Missing => tracing::warn!(
                probe = self.probe,
                job_id = self.job_id.unwrap_or("-"),
                "webhook missing: the API did not call back within webhooks.grace"
            ),
            result => tracing::debug!(
                probe = self.probe,
                result = result.as_str(),
                job_id = self.job_id.unwrap_or("-"),
                "webhook delivery"
            ),
        }
    }
}
