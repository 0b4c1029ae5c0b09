//! The one seam for state that replicas share: the proxy's jobs (so that a job submitted through
//! one replica and polled through another is counted once, by whichever sees its end), the probe
//! lease (`replicas: one` probes run on the holder only) with each probe's backoff, day budget and
//! rhythm, and the webhook runs (the API calls back whichever replica its Service picks).
//!
//! Where that state lives is decided here, once: in this process ([`memory`]) with one replica,
//! or in Redis ([`redis`], `cluster.redis_url`), which falls back to this process's memory for as
//! long as Redis does not answer. Components call the same methods either way and never ask which.
//! Methods that may wait for Redis return a future that the caller runs off its hot path; with
//! state in memory the work is done when the method is called and the future is ready at once.
//!
//! Redis being down or slow never crashes anything and never holds a proxied request: every
//! operation has a short deadline. The replica that last held the lease keeps probing; the others
//! stay standby. Uses `config`, `observe` and `vocab`.

mod memory;
mod redis;
mod scripts;

use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::clock;
use crate::config::Cluster as Settings;
use crate::observe::Observer;
use crate::observe::status::{ClusterRole, ClusterView};
use crate::vocab::BackoffReason;
use memory::Memory;
use redis::Redis;

/// Why the cluster client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL, or the client's refusal of it (never the URL itself: it may hold a password).
    #[error("cluster.redis_url cannot be used: {0}")]
    Url(String),
}

/// A job as replicas share it: what its end needs to be counted by any replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedJob {
    /// Unix milliseconds of the submission (wall clock: instants do not cross processes).
    pub submitted_ms: u64,
    /// The submit endpoint label.
    pub endpoint: String,
    /// The model label.
    pub model: String,
    /// The eta the first processing answer promised.
    pub first_eta: Option<f64>,
    /// The submission span as a W3C `traceparent`, for linking the completion to it.
    pub traceparent: Option<String>,
}

/// What starting to follow a job did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tracking {
    /// False when the job was followed already (its first submission stays).
    pub new: bool,
    /// Jobs pushed out beyond `jobs.max_tracked`, oldest first.
    pub evicted: Vec<SharedJob>,
}

/// What one sweep of the jobs took out.
pub use redis::Sweep;

/// What a look at a job's record asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Its record, left as it is.
    Read,
    /// Its record, taken out (the job ended); the token makes asking again safe.
    End(String),
}

impl Ask {
    /// An end with a fresh token.
    pub fn end() -> Ask {
        Ask::End(format!("{:016x}", rand::random::<u64>()))
    }
}

/// Redis did not answer in time (or answered with an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered;

/// A `replicas: one` probe's state as its last holder left it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedProbe {
    /// Until when (unix ms) it waits, and why (a 429's retry_after, a 402's pause).
    pub backoff: Option<(u64, BackoffReason)>,
    /// Runs counted against `max_runs_per_day` today.
    pub runs_today: u32,
    /// When the last run started (unix ms).
    pub last_run_ms: Option<u64>,
}

/// A webhook delivery as the run it belongs to saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The probe of the run.
    pub probe: String,
    /// Deliveries so far, this one included: more than 1 is a duplicate.
    pub count: u64,
    /// When the run's replica saw the job end (unix ms), if it has.
    pub finished_ms: Option<u64>,
}

/// The role of this replica for `replicas: one` probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// Whether this replica holds the lease.
    pub leader: bool,
    /// The lease holder as Redis last said (`replica#epoch`), if known.
    pub holder: Option<String>,
}

#[derive(Clone)]
enum Backend {
    /// One replica: it leads, always.
    Memory {
        state: Arc<Memory>,
        role: Arc<watch::Sender<Role>>,
    },
    Redis(Arc<Redis>),
}

/// The handle on shared state. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    backend: Backend,
}

fn done<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
    Box::pin(ready(value))
}

impl Cluster {
    /// One replica, state in memory.
    pub fn single() -> Self {
        let (role, _) = watch::channel(Role { leader: true, holder: None });
        Cluster { backend: Backend::Memory { state: Arc::default(), role: Arc::new(role) } }
    }

    /// The cluster the settings describe. With a Redis URL the client is lazy: Redis may be down
    /// when the agent starts.
    pub fn new(settings: &Settings, observer: Observer) -> Result<Self, ClusterError> {
        match settings.redis_url() {
            None => Ok(Cluster::single()),
            Some(url) => Ok(Cluster { backend: Backend::Redis(Arc::new(Redis::new(url, settings, observer)?)) }),
        }
    }

    /// Whether `replicas: one` probes run here: always with one replica; on the lease holder
    /// with several.
    pub fn leads(&self) -> bool {
        match &self.backend {
            Backend::Memory { .. } => true,
            Backend::Redis(r) => r.leads(),
        }
    }

    /// Role changes, for components that load shared state when they start leading.
    pub fn roles(&self) -> watch::Receiver<Role> {
        match &self.backend {
            Backend::Memory { role, .. } => role.subscribe(),
            Backend::Redis(r) => r.role.subscribe(),
        }
    }

    /// Keeps what shared state needs kept (the probe lease) until `shutdown`, then gives it up.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Backend::Redis(r) = &self.backend {
            r.run_lease(shutdown).await;
        }
    }

    /// What `/api/v1/status` shows of the replicas; `None` with one replica.
    pub fn status(&self) -> Option<ClusterView> {
        let Backend::Redis(r) = &self.backend else { return None };
        let role = r.role.borrow().clone();
        Some(ClusterView {
            replica: r.replica.clone(),
            role: if role.leader { ClusterRole::Leader } else { ClusterRole::Standby },
            lease_holder: role.holder,
            redis_up: r.is_up(),
            redis_cluster: r.is_cluster(),
            jobs_restored: r.restored.load(Ordering::Relaxed),
            epoch: r.epoch.load(Ordering::Relaxed),
        })
    }

    // ------------------------------------------------------------------ jobs

    /// Starts following a job (kept at most `ttl`; beyond `max` jobs the oldest are evicted).
    pub fn track_job(&self, id: &str, job: SharedJob, ttl: Duration, max: usize) -> BoxFuture<'static, Tracking> {
        match &self.backend {
            Backend::Memory { state, .. } => done(state.track_job(id, job, max)),
            Backend::Redis(r) => {
                let (r, id) = (r.clone(), id.to_owned());
                Box::pin(async move { r.track_job(&id, job, ttl, max).await })
            }
        }
    }

    /// A job's record, if it is followed; with [`Ask::End`], taken out so that exactly one replica
    /// ends it (its tombstone kept as long as a record tracked with `ttl`). `Err` when Redis did
    /// not answer: the same `Ask` may be asked again, and an end that Redis carried out after all
    /// is then still this caller's.
    pub fn job(&self, id: &str, ask: &Ask, ttl: Duration) -> BoxFuture<'static, Result<Option<SharedJob>, Unanswered>> {
        let end = matches!(ask, Ask::End(_));
        match &self.backend {
            Backend::Memory { state, .. } => done(Ok(state.job(id, end))),
            Backend::Redis(r) => match r.local.job(id, end) {
                // A job kept here while Redis was away is ended here (and its record taken out of
                // Redis too, should a write that timed out have reached it).
                Some(job) => {
                    if end {
                        r.ended_here(id);
                    }
                    done(Ok(Some(job)))
                }
                None => {
                    let (r, id, ask) = (r.clone(), id.to_owned(), ask.clone());
                    Box::pin(async move { r.job(&id, &ask, ttl).await })
                }
            },
        }
    }

    /// Takes out the jobs submitted before `cutoff_ms` (at most `limit`), which the caller counts
    /// `expired` (no other replica will), and any evicted while jobs kept here moved to Redis.
    pub fn sweep_jobs(&self, cutoff_ms: u64, limit: usize, ttl: Duration, max: usize) -> BoxFuture<'static, Sweep> {
        match &self.backend {
            Backend::Memory { state, .. } => {
                done(Sweep { expired: state.expire_jobs(cutoff_ms, limit), evicted: Vec::new() })
            }
            Backend::Redis(r) => {
                let r = r.clone();
                Box::pin(async move { r.sweep_jobs(cutoff_ms, limit, ttl, max).await })
            }
        }
    }

    /// Jobs this replica holds itself (all of them with one replica; with Redis, those kept
    /// while it did not answer).
    pub fn jobs_held(&self) -> usize {
        match &self.backend {
            Backend::Memory { state, .. } => state.jobs_held(),
            Backend::Redis(r) => r.local.jobs_held(),
        }
    }

    // ------------------------------------------------------------------ probe state

    /// A `replicas: one` probe's state as its last holder left it (`None` with one replica,
    /// where the probe's own state is the whole truth).
    pub fn probe_state(&self, probe: &str, day: u64) -> BoxFuture<'static, Option<SharedProbe>> {
        match &self.backend {
            Backend::Memory { .. } => done(None),
            Backend::Redis(r) => {
                let (r, probe) = (r.clone(), probe.to_owned());
                Box::pin(async move { r.probe_state(&probe, day).await })
            }
        }
    }

    /// Shares when a probe last started a run (unix ms).
    pub fn save_last_run(&self, probe: &str, at_ms: u64) -> BoxFuture<'static, ()> {
        match &self.backend {
            Backend::Memory { .. } => done(()),
            Backend::Redis(r) => {
                let (r, probe) = (r.clone(), probe.to_owned());
                Box::pin(async move { r.save_last_run(&probe, at_ms).await })
            }
        }
    }

    /// Shares a probe's backoff: until unix ms, and why.
    pub fn save_backoff(&self, probe: &str, until_ms: u64, reason: BackoffReason) -> BoxFuture<'static, ()> {
        match &self.backend {
            Backend::Memory { .. } => done(()),
            Backend::Redis(r) => {
                let (r, probe) = (r.clone(), probe.to_owned());
                Box::pin(async move { r.save_backoff(&probe, until_ms, reason).await })
            }
        }
    }

    /// Shares a probe's run count of `day`.
    pub fn save_runs(&self, probe: &str, day: u64, runs: u32) -> BoxFuture<'static, ()> {
        match &self.backend {
            Backend::Memory { .. } => done(()),
            Backend::Redis(r) => {
                let (r, probe) = (r.clone(), probe.to_owned());
                Box::pin(async move { r.save_runs(&probe, day, runs).await })
            }
        }
    }

    // ------------------------------------------------------------------ webhook runs

    /// Shares a run waiting for its webhook, kept at most `keep`, before the API is told of it.
    pub fn hook_expect(&self, token: &str, probe: &str, track_id: &str, keep: Duration) -> BoxFuture<'static, ()> {
        match &self.backend {
            Backend::Memory { state, .. } => {
                let now = clock::unix_millis();
                let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
                state.hook_expect(token, probe, track_id, now, now.saturating_add(keep_ms));
                done(())
            }
            Backend::Redis(r) => {
                let (r, token, probe, track) = (r.clone(), token.to_owned(), probe.to_owned(), track_id.to_owned());
                Box::pin(async move { r.hook_expect(&token, &probe, &track, keep).await })
            }
        }
    }

    /// Notes that the run's probe saw its job end at `at_ms`.
    pub fn hook_finished(&self, token: &str, at_ms: u64) -> BoxFuture<'static, ()> {
        match &self.backend {
            Backend::Memory { state, .. } => {
                state.hook_finished(token, at_ms);
                done(())
            }
            Backend::Redis(r) => {
                let (r, token) = (r.clone(), token.to_owned());
                Box::pin(async move { r.hook_finished(&token, at_ms).await })
            }
        }
    }

    /// Counts a delivery for `token`: the run it belongs to, or `None` when no run waits for it
    /// (a forged token, a replay after the run ended, another run's track id).
    pub fn hook_deliver(&self, token: &str, track_id: Option<&str>) -> BoxFuture<'static, Option<Delivery>> {
        match &self.backend {
            Backend::Memory { state, .. } => done(state.hook_deliver(token, track_id)),
            Backend::Redis(r) => {
                let (r, token, track) = (r.clone(), token.to_owned(), track_id.map(str::to_owned));
                Box::pin(async move { r.hook_deliver(&token, track.as_deref()).await })
            }
        }
    }

    /// Ends a run: how many deliveries it had (on any replica).
    pub fn hook_take(&self, token: &str) -> BoxFuture<'static, u64> {
        match &self.backend {
            Backend::Memory { state, .. } => done(state.hook_take(token)),
            Backend::Redis(r) => {
                let (r, token) = (r.clone(), token.to_owned());
                Box::pin(async move { r.hook_take(&token).await })
            }
        }
    }
}
