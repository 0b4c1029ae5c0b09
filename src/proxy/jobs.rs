//! The async jobs the proxy sees `processing`, followed until a terminal answer for their id is
//! seen (or they expire after `jobs.ttl`, or are evicted beyond `jobs.max_tracked`); each end is
//! reported as an event. The proxy sees a job's submission and its polls in separate exchanges,
//! so it follows them here; it keeps no request data but ids, labels and times.
//!
//! Where the jobs live is the cluster's business (`cluster`): in memory with one replica, in Redis
//! with several, so that whichever replica sees a job's end counts it, exactly once. Nothing here
//! ever holds a proxied request waiting for Redis.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::Span;

use crate::BoxFuture;
use crate::classify::Classification;
use crate::clock;
use crate::cluster::{Ask, Cluster, SharedJob, Unanswered};
use crate::observe::{self, JobResult, Observer, Source, SpanContext};
use crate::tasks::Tasks;

/// Jobs ended per sweep at most (a sweep runs every few seconds).
const SWEEP_LIMIT: usize = 1000;

/// How long a job's end seen while Redis does not answer is asked again, and how often.
const END_RETRY_FOR: Duration = Duration::from_secs(60);
const END_RETRY_EVERY: Duration = Duration::from_millis(500);

/// A job as the exchange that submitted it knows it.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The submission's wall-clock time (unix ms: it may be ended by another replica).
    pub submitted_ms: u64,
    /// The submit endpoint label.
    pub endpoint: String,
    /// The model label.
    pub model: String,
    /// The eta the processing answer promised.
    pub first_eta: Option<f64>,
    /// The submission's span, for linking its completion to it.
    pub context: SpanContext,
}

impl Tracked {
    fn shared(self) -> SharedJob {
        SharedJob {
            submitted_ms: self.submitted_ms,
            endpoint: self.endpoint,
            model: self.model,
            first_eta: self.first_eta,
            traceparent: observe::traceparent(&self.context),
        }
    }
}

/// The tracker of one source's jobs.
pub struct JobTracker {
    source: Source,
    observer: Observer,
    cluster: Cluster,
    tasks: Tasks,
    /// `jobs.ttl` and `jobs.max_tracked`, as reloaded.
    limits: Mutex<(Duration, usize)>,
}

impl JobTracker {
    /// The tracker of `source`'s jobs, kept where `cluster` keeps shared state.
    pub fn new(
        source: Source,
        observer: Observer,
        cluster: Cluster,
        tasks: Tasks,
        ttl: Duration,
        max_tracked: usize,
    ) -> Self {
        JobTracker { source, observer, cluster, tasks, limits: Mutex::new((ttl, max_tracked.max(1))) }
    }

    fn limits(&self) -> (Duration, usize) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies reloaded `jobs` settings (to jobs already followed too).
    pub fn set_limits(&self, ttl: Duration, max_tracked: usize) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = (ttl, max_tracked.max(1));
    }

    /// Starts following job `id`. A job already followed keeps its first submission.
    pub fn track(self: &Arc<Self>, id: &str, job: Tracked) {
        let (ttl, max) = self.limits();
        let tracking = self.cluster.track_job(id, job.shared(), ttl, max);
        let this = self.clone();
        self.tasks.finish_or_spawn(async move {
            let t = tracking.await;
            if t.new {
                this.observer.emit(observe::JobStarted { source: this.source });
            }
            for job in t.evicted {
                this.end(&job, JobResult::Evicted, None, None);
            }
        });
    }

    /// The record of job `id` (taken out with [`Ask::End`], so that exactly one replica ends
    /// it); `Ok(None)` for a job not followed (never seen submitted, or ended already), `Err`
    /// when Redis did not answer.
    pub fn lookup(&self, id: &str, ask: &Ask) -> BoxFuture<'static, Result<Option<SharedJob>, Unanswered>> {
        self.cluster.job(id, ask, self.limits().0)
    }

    /// Ends job `id`, seen ending at `seen_ms`, once Redis answers a lookup that it did not
    /// answer (stalled, failing over): asked again with the same [`Ask`] for up to
    /// [`END_RETRY_FOR`], so that the end is counted once even when Redis carried out the first
    /// ask after its deadline.
    pub async fn end_when_answered(
        &self,
        id: &str,
        ask: &Ask,
        seen_ms: u64,
        result: JobResult,
        span: Option<&Span>,
        answer: Option<&Classification>,
    ) {
        let deadline = tokio::time::Instant::now() + END_RETRY_FOR;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(END_RETRY_EVERY).await;
            match self.lookup(id, ask).await {
                Ok(Some(job)) => return self.end_at(&job, result, span, answer, seen_ms),
                Ok(None) => return,
                Err(Unanswered) => {}
            }
        }
    }

    /// Counts the end of a job, linking `span` (the exchange that saw it) to its submission;
    /// `answer` is the terminal answer seen (none for an expired or evicted job): a success's
    /// files and time split are recorded with the same duration.
    pub fn end(&self, job: &SharedJob, result: JobResult, span: Option<&Span>, answer: Option<&Classification>) {
        self.end_at(job, result, span, answer, clock::unix_millis());
    }

    /// [`JobTracker::end`] of a job seen ending at `ended_ms`.
    fn end_at(
        &self,
        job: &SharedJob,
        result: JobResult,
        span: Option<&Span>,
        answer: Option<&Classification>,
        ended_ms: u64,
    ) {
        let context = job.traceparent.as_deref().and_then(observe::from_traceparent);
        let duration = Duration::from_millis(ended_ms.saturating_sub(job.submitted_ms));
        self.observer.emit(observe::JobEnded {
            job: observe::JobEnd {
                source: self.source,
                endpoint: &job.endpoint,
                model: &job.model,
                result,
                duration,
                first_eta: job.first_eta,
            },
            span,
            submitted: context.as_ref(),
        });
        if let (JobResult::Success, Some(answer)) = (result, answer) {
            self.observer.delivered(self.source, &job.endpoint, &job.model, duration, answer);
        }
    }

    /// Ends the jobs past the TTL as `expired` (with several replicas, whichever sweeps first
    /// counts each once).
    pub async fn sweep(&self) {
        let (ttl, max) = self.limits();
        let cutoff = clock::unix_millis().saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let sweep = self.cluster.sweep_jobs(cutoff, SWEEP_LIMIT, ttl, max).await;
        for job in &sweep.expired {
            self.end(job, JobResult::Expired, None, None);
        }
        for job in &sweep.evicted {
            self.end(job, JobResult::Evicted, None, None);
        }
    }

    /// Jobs this replica holds itself.
    pub fn held(&self) -> usize {
        self.cluster.jobs_held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Labels;
    use crate::metrics::Metrics;
    use crate::scrape::Scrape;

    fn tracker(ttl: u64, max: usize) -> (Arc<JobTracker>, Arc<Metrics>) {
        let m = Arc::new(Metrics::new(&Labels::default()).unwrap());
        let observer = Observer::new(m.clone());
        let t =
            JobTracker::new(Source::Proxy, observer, Cluster::single(), Tasks::new(), Duration::from_secs(ttl), max);
        (Arc::new(t), m)
    }

    fn job(ms_ago: u64) -> Tracked {
        Tracked {
            submitted_ms: clock::unix_millis() - ms_ago,
            endpoint: "/api/v6/images/text2img".into(),
            model: "flux".into(),
            first_eta: Some(2.0),
            context: SpanContext::empty_context(),
        }
    }

    fn jobs(m: &Metrics, result: &str) -> f64 {
        Scrape::parse(&m.render().unwrap()).metric("modelslab_jobs_total").label("result", result).sum()
    }

    #[tokio::test]
    async fn complete_expire_and_evict() {
        let (t, m) = tracker(60, 2);
        t.track("1", job(4_000));
        t.track("1", job(0)); // a duplicate keeps the first
        t.track("2", job(3_000));
        assert_eq!(t.held(), 2);
        let one = t.lookup("1", &Ask::end()).await.unwrap().unwrap();
        t.end(&one, JobResult::Success, None, None);
        assert!(t.lookup("1", &Ask::end()).await.unwrap().is_none(), "ends once");
        assert!(t.lookup("unknown", &Ask::end()).await.unwrap().is_none());
        t.track("3", job(120_000)); // submitted two minutes ago: past the 60 s TTL
        t.track("4", job(0)); // over max_tracked: the first tracked of those left, "2", is evicted
        assert_eq!(t.held(), 2);
        t.sweep().await; // "3" is past the TTL
        assert_eq!((jobs(&m, "success"), jobs(&m, "evicted"), jobs(&m, "expired")), (1.0, 1.0, 1.0));
        let s = Scrape::parse(&m.render().unwrap());
        assert_eq!(s.metric("modelslab_jobs_in_flight").label("source", "proxy").value(), Some(1.0), "job 4");
        let took = s.metric("modelslab_job_duration_seconds_sum").label("result", "success").sum();
        assert!((4.0..5.0).contains(&took), "submitted 4 s before it ended: {took}");
        let ratio = s.metric("modelslab_job_eta_ratio_sum").sum();
        assert!((2.0..2.5).contains(&ratio), "4 s / 2 s eta; evicted and expired jobs have no ratio: {ratio}");
    }
}
