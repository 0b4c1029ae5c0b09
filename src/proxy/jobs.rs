//! Tracks the async jobs the proxy sees `processing` until a terminal answer for their id is seen
//! (or they expire after `jobs.ttl`, or are evicted beyond `jobs.max_tracked`), and reports each
//! end as an event. The proxy sees a job's submission and its polls in separate exchanges, so it
//! follows them here; it keeps no request data but ids, labels and times.
//!
//! With one replica the jobs live here, in memory. With several (`cluster.redis_url`) they live in
//! Redis, so that whichever replica sees a job's end counts it, exactly once; Redis is only ever
//! waited for off the response path. While Redis does not answer, new jobs are tracked here (and
//! can be ended by this replica only); once it answers again they are moved there.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::Span;

use crate::cluster::{Cluster, SharedJob, unix_ms};
use crate::observe::{self, JobResult, Observer, Source, SpanContext};

/// A job being followed.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub submitted: Instant,
    /// The submission's wall-clock time (for Redis, where instants do not travel).
    pub submitted_ms: u64,
    /// The submit endpoint label.
    pub endpoint: String,
    pub model: String,
    pub first_eta: Option<f64>,
    /// The submission's span, for linking its completion to it.
    pub context: SpanContext,
    /// Kept here only because Redis did not answer: moved there once it does.
    pub fallback: bool,
}

impl Tracked {
    fn shared(&self) -> SharedJob {
        SharedJob {
            submitted_ms: self.submitted_ms,
            endpoint: self.endpoint.clone(),
            model: self.model.clone(),
            first_eta: self.first_eta,
            traceparent: observe::traceparent(&self.context),
        }
    }
}

struct Inner {
    jobs: HashMap<String, Tracked>,
    /// Ids in submission order; entries of jobs already ended are skipped when met.
    order: VecDeque<(Instant, String)>,
    ttl: Duration,
    max_tracked: usize,
}

/// The tracker of one source's jobs.
pub struct JobTracker {
    source: Source,
    observer: Observer,
    cluster: Cluster,
    inner: Mutex<Inner>,
}

impl JobTracker {
    pub fn new(source: Source, observer: Observer, cluster: Cluster, ttl: Duration, max_tracked: usize) -> Self {
        JobTracker {
            source,
            observer,
            cluster,
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                order: VecDeque::new(),
                ttl,
                max_tracked: max_tracked.max(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies reloaded `jobs` settings (to jobs already tracked too).
    pub fn set_limits(&self, ttl: Duration, max_tracked: usize) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        inner.max_tracked = max_tracked.max(1);
    }

    /// Whether jobs are shared with other replicas through Redis.
    pub fn is_shared(&self) -> bool {
        self.cluster.is_shared()
    }

    /// Starts following job `id`: in Redis when replicas share state (off the caller's path),
    /// else here. A job already followed keeps its first submission.
    pub fn track(self: &Arc<Self>, id: &str, job: Tracked) {
        if !self.cluster.is_shared() {
            return self.track_local(id, job);
        }
        let (this, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            let (ttl, max) = {
                let inner = this.lock();
                (inner.ttl, inner.max_tracked)
            };
            match this.cluster.track_job(&id, &job.shared(), ttl, max).await {
                Some((new, evicted)) => {
                    if new {
                        this.observer.emit(observe::JobStarted { source: this.source });
                    }
                    for e in evicted {
                        this.end_shared(&e, JobResult::Evicted, None);
                    }
                }
                None => this.track_local(&id, Tracked { fallback: true, ..job }),
            }
        });
    }

    fn track_local(&self, id: &str, job: Tracked) {
        let mut evicted = Vec::new();
        {
            let mut inner = self.lock();
            if inner.jobs.contains_key(id) {
                return;
            }
            inner.order.push_back((job.submitted, id.to_owned()));
            inner.jobs.insert(id.to_owned(), job);
            self.observer.emit(observe::JobStarted { source: self.source });
            while inner.jobs.len() > inner.max_tracked {
                let Some((_, oldest)) = inner.order.pop_front() else { break };
                if let Some(job) = inner.jobs.remove(&oldest) {
                    evicted.push(job);
                }
            }
        }
        for job in evicted {
            self.end(&job, JobResult::Evicted, Instant::now(), None);
        }
    }

    /// The shared record of job `id` (taken out with `end`, so that one replica ends it), when
    /// replicas share state and Redis answers.
    pub async fn shared(&self, id: &str, end: bool) -> Option<SharedJob> {
        self.cluster.job(id, end).await.flatten()
    }

    /// Counts the end of a job taken out of Redis, linking `span` to its submission.
    pub fn end_shared(&self, job: &SharedJob, result: JobResult, span: Option<&Span>) {
        let context = job.traceparent.as_deref().and_then(observe::from_traceparent);
        self.observer.emit(observe::JobEnded {
            job: observe::JobEnd {
                source: self.source,
                endpoint: &job.endpoint,
                model: &job.model,
                result,
                duration: Duration::from_millis(unix_ms().saturating_sub(job.submitted_ms)),
                first_eta: job.first_eta,
            },
            span,
            submitted: context.as_ref(),
        });
    }

    /// With shared state: ends the jobs past the TTL in Redis (whichever replica sweeps first
    /// counts each once), and moves jobs kept here while Redis was down into it.
    pub async fn sweep_shared(&self) {
        if !self.cluster.is_shared() {
            return;
        }
        let (ttl, max) = {
            let inner = self.lock();
            (inner.ttl, inner.max_tracked)
        };
        let cutoff = unix_ms().saturating_sub(ttl.as_millis() as u64);
        for job in self.cluster.sweep_jobs(cutoff, 1000).await {
            self.end_shared(&job, JobResult::Expired, None);
        }
        if !self.cluster.is_up() {
            return;
        }
        let fallback: Vec<(String, Tracked)> =
            self.lock().jobs.iter().filter(|(_, j)| j.fallback).map(|(id, j)| (id.clone(), j.clone())).collect();
        for (id, job) in fallback {
            let Some((_, evicted)) = self.cluster.track_job(&id, &job.shared(), ttl, max).await else { break };
            self.lock().jobs.remove(&id);
            for e in evicted {
                self.end_shared(&e, JobResult::Evicted, None);
            }
        }
    }

    /// Ends job `id` with `result` if it is tracked here, linking `span` (the exchange that saw
    /// the end) to the submission; returns the job.
    pub fn complete(&self, id: &str, result: JobResult, at: Instant, span: Option<&Span>) -> Option<Tracked> {
        let job = self.lock().jobs.remove(id)?;
        self.end(&job, result, at, span);
        Some(job)
    }

    /// Ends every job older than the TTL as `expired`; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut expired = Vec::new();
        {
            let mut inner = self.lock();
            let ttl = inner.ttl;
            while let Some((submitted, _)) = inner.order.front() {
                if now.saturating_duration_since(*submitted) < ttl {
                    break;
                }
                let Some((submitted, id)) = inner.order.pop_front() else { break };
                if inner.jobs.get(&id).is_some_and(|j| j.submitted == submitted) {
                    if let Some(job) = inner.jobs.remove(&id) {
                        expired.push(job);
                    }
                }
            }
            // Ended jobs leave stale ids behind; drop them once they outnumber live ones.
            if inner.order.len() > 2 * inner.jobs.len() + 1024 {
                let Inner { order, jobs, .. } = &mut *inner;
                order.retain(|(t, id)| jobs.get(id).is_some_and(|j| j.submitted == *t));
            }
        }
        let n = expired.len();
        for job in expired {
            self.end(&job, JobResult::Expired, now, None);
        }
        n
    }

    /// The model label of a job tracked here (a fetch is labelled with its job's model).
    pub fn model_of(&self, id: &str) -> Option<String> {
        self.lock().jobs.get(id).map(|j| j.model.clone())
    }

    /// Jobs followed now.
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn end(&self, job: &Tracked, result: JobResult, at: Instant, span: Option<&Span>) {
        self.observer.emit(observe::JobEnded {
            job: observe::JobEnd {
                source: self.source,
                endpoint: &job.endpoint,
                model: &job.model,
                result,
                duration: at.saturating_duration_since(job.submitted),
                first_eta: job.first_eta,
            },
            span,
            submitted: Some(&job.context),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Labels;
    use crate::metrics::Metrics;

    fn tracker(ttl: u64, max: usize) -> (Arc<JobTracker>, Arc<Metrics>) {
        let m = Arc::new(Metrics::new(&Labels::default()).unwrap());
        let observer = Observer::new(m.clone());
        (Arc::new(JobTracker::new(Source::Proxy, observer, Cluster::single(), Duration::from_secs(ttl), max)), m)
    }

    fn job(at: Instant) -> Tracked {
        Tracked {
            submitted: at,
            submitted_ms: 0,
            endpoint: "/api/v6/images/text2img".into(),
            model: "flux".into(),
            first_eta: Some(2.0),
            context: SpanContext::empty_context(),
            fallback: false,
        }
    }

    fn count(m: &Metrics, result: &str) -> f64 {
        let text = m.render().unwrap();
        let series = format!(
            "modelslab_jobs_total{{endpoint=\"/api/v6/images/text2img\",model=\"flux\",result=\"{result}\",source=\"proxy\"}} "
        );
        text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.parse().unwrap())
    }

    #[test]
    fn complete_expire_and_evict() {
        let (t, m) = tracker(60, 2);
        let t0 = Instant::now();
        t.track("1", job(t0));
        t.track("1", job(t0 + Duration::from_secs(5))); // a duplicate keeps the first
        t.track("2", job(t0 + Duration::from_secs(1)));
        assert_eq!(t.len(), 2);
        assert!(t.complete("1", JobResult::Success, t0 + Duration::from_secs(4), None).is_some());
        assert!(t.complete("1", JobResult::Success, t0, None).is_none(), "ends once");
        assert!(t.complete("unknown", JobResult::Success, t0, None).is_none());
        t.track("3", job(t0 + Duration::from_secs(2)));
        t.track("4", job(t0 + Duration::from_secs(3))); // over max_tracked: "2" is evicted
        assert_eq!(t.len(), 2);
        assert_eq!(t.expire(t0 + Duration::from_secs(62)), 1, "job 3 is past the TTL");
        assert_eq!(t.expire(t0 + Duration::from_secs(62)), 0);
        assert_eq!((count(&m, "success"), count(&m, "evicted"), count(&m, "expired")), (1.0, 1.0, 1.0));
        let text = m.render().unwrap();
        assert!(text.contains("modelslab_jobs_in_flight{source=\"proxy\"} 1"), "job 4 is still in flight");
        assert!(text.contains("modelslab_job_duration_seconds_sum{endpoint=\"/api/v6/images/text2img\",model=\"flux\",result=\"success\",source=\"proxy\"} 4"));
        assert!(
            text.contains("modelslab_job_eta_ratio_sum{endpoint=\"/api/v6/images/text2img\",source=\"proxy\"} 2"),
            "4 s / 2 s eta"
        );
    }

    #[test]
    fn stale_order_entries_do_not_grow_without_bound() {
        let (t, _) = tracker(3600, 10);
        let t0 = Instant::now();
        for i in 0..5000 {
            t.track(&i.to_string(), job(t0));
            t.complete(&i.to_string(), JobResult::Success, t0, None);
        }
        t.expire(t0);
        assert!(t.lock().order.len() <= 1024, "{}", t.lock().order.len());
    }
}
