//! Several replicas, one truth (`cluster.redis_url`): the proxy's jobs live in Redis so that a
//! job submitted through one replica and polled through another is counted once, by whichever
//! sees its end; `replicas: one` probes run on the replica that holds a lease (`SET NX PX` with a
//! fencing epoch, renewed every third of `lease_ttl`); a probe's backoff and day budget are shared
//! so that a failover does not spend twice. Without a Redis URL this module is inert: state stays
//! in memory, as for one replica.
//!
//! Redis being down or slow never crashes anything and never holds a proxied request: every
//! operation has a short deadline and callers fall back to local state (see `proxy::jobs`). The
//! replica that last held the lease keeps probing; the others stay standby.
//!
//! Atomicity comes from Redis itself: one Lua script per operation that must not race (track
//! with eviction, get-and-delete of a terminal job, the expiry sweep, lease acquire/renew/release).
//! Every key carries the prefix in a hash tag (`{prefix}:…`), so all of them live in one slot.

mod hooks;
mod scripts;

pub use hooks::SharedDelivery;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Cluster as Settings;
use crate::observe::{self, ClusterOp, Observer};

/// How long one Redis operation may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the cluster client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis_url cannot be used: {0}")]
    Url(String),
}

/// A job as Redis holds it: what its end needs to be counted by any replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedJob {
    /// Unix milliseconds of the submission (wall clock: instants do not cross processes).
    pub submitted_ms: u64,
    pub endpoint: String,
    pub model: String,
    pub first_eta: Option<f64>,
    /// The submission span as a W3C `traceparent`, for linking the completion to it.
    pub traceparent: Option<String>,
}

/// A `replicas: one` probe's state as replicas share it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedProbe {
    /// Until when (unix ms) it waits, and why (a 429's retry_after, a 402's pause).
    pub backoff: Option<(u64, String)>,
    /// Runs counted against `max_runs_per_day` today.
    pub runs_today: u32,
    /// When the last run started (unix ms).
    pub last_run_ms: Option<u64>,
}

/// The role of this replica for `replicas: one` probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub leader: bool,
    /// The lease holder as Redis last said (`replica#epoch`), if known.
    pub holder: Option<String>,
}

/// The cluster handle: cheap to clone; inert without Redis.
#[derive(Clone)]
pub struct Cluster {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    conn: ConnectionManager,
    observer: Observer,
    prefix: String,
    lease_ttl: Duration,
    replica: String,
    up: AtomicBool,
    /// The lease value this replica holds (`replica#epoch`), when it holds it.
    lease: Mutex<Option<String>>,
    role: watch::Sender<Role>,
    epoch: AtomicU64,
    /// Whether the role was published once (the leader gauge exists from the first step).
    reported: AtomicBool,
}

/// This process's replica name: the pod's name when Kubernetes gives it, else the host's, and a
/// random suffix so that two processes never share one.
fn replica_name() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_owned());
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').take(63).collect();
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Cluster {
    /// One replica, state in memory.
    pub fn single() -> Self {
        Cluster { inner: None }
    }

    /// The cluster the settings describe. With a Redis URL the client is lazy: Redis may be down
    /// when the agent starts.
    pub fn new(settings: &Settings, observer: Observer) -> Result<Self, ClusterError> {
        let Some(url) = settings.redis_url() else { return Ok(Cluster::single()) };
        // The error text of a URL may repeat it (and its password): never show it.
        let client = redis::Client::open(url.trim()).map_err(|e| ClusterError::Url(format!("{:?}", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ClusterError::Url(format!("{:?}", e.kind())))?;
        let (role, _) = watch::channel(Role { leader: false, holder: None });
        Ok(Cluster {
            inner: Some(Arc::new(Inner {
                conn,
                observer,
                prefix: settings.key_prefix.clone(),
                lease_ttl: settings.lease_ttl,
                replica: replica_name(),
                up: AtomicBool::new(false),
                lease: Mutex::new(None),
                role,
                epoch: AtomicU64::new(0),
                reported: AtomicBool::new(false),
            })),
        })
    }

    /// Whether state is shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether `replicas: one` probes run here: always with one replica; on the lease holder
    /// with Redis.
    pub fn leads(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.role.borrow().leader)
    }

    /// Role changes, for components that load shared state when they start leading.
    pub fn roles(&self) -> Option<watch::Receiver<Role>> {
        self.inner.as_ref().map(|i| i.role.subscribe())
    }

    /// Whether Redis answered the last operation.
    pub fn is_up(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.up.load(Ordering::Acquire))
    }

    /// What `/api/v1/status` shows.
    pub fn status(&self) -> Option<serde_json::Value> {
        let i = self.inner.as_ref()?;
        let role = i.role.borrow().clone();
        Some(serde_json::json!({
            "mode": "redis",
            "replica": i.replica,
            "role": if role.leader { "leader" } else { "standby" },
            "lease_holder": role.holder,
            "redis_up": i.up.load(Ordering::Acquire),
            "epoch": i.epoch.load(Ordering::Relaxed),
        }))
    }

    /// Runs one Redis operation under its deadline, recording Redis up or down and counting
    /// errors by `op`.
    async fn run<T, F>(&self, op: ClusterOp, f: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let i = self.inner.as_ref()?;
        let result = tokio::time::timeout(OP_TIMEOUT, f(i.conn.clone())).await;
        let ok = matches!(result, Ok(Ok(_)));
        let was = i.up.swap(ok, Ordering::AcqRel);
        if was != ok {
            i.observer.emit(observe::ClusterReachable { up: ok });
        }
        match result {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                i.observer.emit(observe::ClusterError { op, kind: format!("{:?}", e.kind()) });
                None
            }
            Err(_) => {
                i.observer.emit(observe::ClusterError { op, kind: "timeout".into() });
                None
            }
        }
    }

    fn key(&self, rest: &str) -> String {
        let prefix = self.inner.as_ref().map_or("", |i| i.prefix.as_str());
        format!("{{{prefix}}}:{rest}")
    }

    // ------------------------------------------------------------------ jobs

    /// Starts following a job in Redis; `None` when Redis could not be reached (the caller keeps
    /// it locally), else whether it is new and the jobs evicted beyond `max_tracked`.
    pub async fn track_job(
        &self,
        id: &str,
        job: &SharedJob,
        ttl: Duration,
        max_tracked: usize,
    ) -> Option<(bool, Vec<SharedJob>)> {
        let value = serde_json::to_string(job).ok()?;
        let (key, index, jobs) = (self.key(&format!("job:{id}")), self.key("jobs"), self.key("job:"));
        // Keys outlive the TTL a little, so that the sweep (not Redis) ends them and counts them.
        let keep = (ttl + Duration::from_secs(120)).as_millis() as u64;
        let out: Vec<String> = self
            .run(ClusterOp::JobWrite, |mut c| async move {
                scripts::TRACK
                    .key(key)
                    .key(index)
                    .arg(value)
                    .arg(keep)
                    .arg(job.submitted_ms)
                    .arg(id)
                    .arg(max_tracked.max(1))
                    .arg(jobs)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let new = out.first().is_some_and(|f| f == "1");
        Some((new, out.iter().skip(1).filter_map(|v| serde_json::from_str(v).ok()).collect()))
    }

    /// A job's shared record; with `end`, taken out atomically, so that exactly one replica ends
    /// it. Outer `None`: Redis could not be reached; inner `None`: no such job (never tracked,
    /// or already ended elsewhere).
    pub async fn job(&self, id: &str, end: bool) -> Option<Option<SharedJob>> {
        let (key, index) = (self.key(&format!("job:{id}")), self.key("jobs"));
        let v: Option<String> = self
            .run(ClusterOp::JobRead, |mut c| async move {
                scripts::FETCH.key(key).key(index).arg(id).arg(u8::from(end)).invoke_async(&mut c).await
            })
            .await?;
        Some(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Takes out every job submitted before `cutoff_ms` (at most `limit`): this caller counts
    /// them `expired`, no other replica will.
    pub async fn sweep_jobs(&self, cutoff_ms: u64, limit: usize) -> Vec<SharedJob> {
        let (index, jobs) = (self.key("jobs"), self.key("job:"));
        let out: Vec<String> = self
            .run(ClusterOp::JobSweep, |mut c| async move {
                scripts::SWEEP.key(index).arg(cutoff_ms).arg(jobs).arg(limit).invoke_async(&mut c).await
            })
            .await
            .unwrap_or_default();
        out.iter().filter_map(|v| serde_json::from_str(v).ok()).collect()
    }

    // ------------------------------------------------------------------ probe state

    /// A `replicas: one` probe's shared state, as its last holder left it.
    pub async fn probe_state(&self, probe: &str, day: u64) -> Option<SharedProbe> {
        let keys = [
            self.key(&format!("probe:{probe}:backoff")),
            self.key(&format!("probe:{probe}:runs:{day}")),
            self.key(&format!("probe:{probe}:last")),
        ];
        let (b, r, l): (Option<String>, Option<u32>, Option<u64>) = self
            .run(ClusterOp::ProbeState, |mut c| async move {
                let [backoff, runs, last] = keys;
                redis::pipe().get(backoff).get(runs).get(last).query_async(&mut c).await
            })
            .await?;
        let backoff = b.and_then(|v| {
            let (until, reason) = v.split_once(' ')?;
            Some((until.parse().ok()?, reason.to_owned()))
        });
        Some(SharedProbe { backoff, runs_today: r.unwrap_or(0), last_run_ms: l })
    }

    /// Shares when a probe last started a run (unix ms).
    pub async fn save_last_run(&self, probe: &str, at_ms: u64) {
        let key = self.key(&format!("probe:{probe}:last"));
        let _: Option<()> = self
            .run(ClusterOp::ProbeState, |mut c| async move {
                redis::cmd("SET").arg(key).arg(at_ms).arg("EX").arg(2 * 86_400).query_async(&mut c).await
            })
            .await;
    }

    /// Shares a probe's backoff (until unix ms, for `reason`).
    pub async fn save_backoff(&self, probe: &str, until_ms: u64, reason: &str) {
        let key = self.key(&format!("probe:{probe}:backoff"));
        let ttl = until_ms.saturating_sub(unix_ms()).max(1);
        let value = format!("{until_ms} {reason}");
        let _: Option<()> = self
            .run(ClusterOp::ProbeState, |mut c| async move {
                redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl).query_async(&mut c).await
            })
            .await;
    }

    /// Shares a probe's run count of `day`.
    pub async fn save_runs(&self, probe: &str, day: u64, runs: u32) {
        let key = self.key(&format!("probe:{probe}:runs:{day}"));
        let _: Option<()> = self
            .run(ClusterOp::ProbeState, |mut c| async move {
                redis::cmd("SET").arg(key).arg(runs).arg("EX").arg(2 * 86_400).query_async(&mut c).await
            })
            .await;
    }

    // ------------------------------------------------------------------ the lease

    /// Holds, renews or waits for the probe lease until `shutdown`, then releases it.
    pub async fn run_lease(self, shutdown: CancellationToken) {
        let Some(i) = self.inner.clone() else { return };
        loop {
            self.lease_step(&i).await;
            // The holder renews every third of the TTL; a standby looks twice as often, so that it
            // takes over soon after a dead holder's lease ends.
            let every = if self.leads() { i.lease_ttl / 3 } else { i.lease_ttl / 6 };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        // Let another replica take over at once instead of after the TTL.
        let held = i.lease.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(value) = held {
            let key = self.key("lease");
            let _: Option<i64> = self
                .run(ClusterOp::Lease, |mut c| async move {
                    scripts::RELEASE.key(key).arg(value).invoke_async(&mut c).await
                })
                .await;
            self.set_role(&i, false, None);
        }
    }

    async fn lease_step(&self, i: &Inner) {
        let ttl = i.lease_ttl.as_millis() as u64;
        let (key, epoch) = (self.key("lease"), self.key("lease:epoch"));
        let held = i.lease.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match held {
            Some(value) => {
                let v = value.clone();
                let renewed: Option<i64> = self
                    .run(ClusterOp::Lease, |mut c| async move {
                        scripts::RENEW.key(key).arg(v).arg(ttl).invoke_async(&mut c).await
                    })
                    .await;
                match renewed {
                    Some(1) => self.set_role(i, true, Some(value)),
                    // Another replica holds it now (this one was cut off past the TTL).
                    Some(_) => {
                        *i.lease.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        let holder = self.holder().await;
                        self.set_role(i, false, holder);
                    }
                    // Redis unreachable: the last holder keeps probing.
                    None => {}
                }
            }
            None => {
                let replica = i.replica.clone();
                let got: Option<Option<String>> = self
                    .run(ClusterOp::Lease, |mut c| async move {
                        scripts::ACQUIRE.key(key).key(epoch).arg(replica).arg(ttl).invoke_async(&mut c).await
                    })
                    .await;
                match got {
                    Some(Some(value)) => {
                        if let Some(e) = value.rsplit('#').next().and_then(|e| e.parse().ok()) {
                            i.epoch.store(e, Ordering::Relaxed);
                        }
                        *i.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(value.clone());
                        self.set_role(i, true, Some(value));
                    }
                    Some(None) => {
                        let holder = self.holder().await;
                        self.set_role(i, false, holder);
                    }
                    // Redis unreachable: a standby stays standby.
                    None => {}
                }
            }
        }
    }

    async fn holder(&self) -> Option<String> {
        let key = self.key("lease");
        self.run(ClusterOp::Lease, |mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .flatten()
    }

    fn set_role(&self, i: &Inner, leader: bool, holder: Option<String>) {
        let was = i.role.borrow().leader;
        i.role.send_if_modified(|r| {
            let changed = r.leader != leader || r.holder != holder;
            r.leader = leader;
            r.holder = holder.clone();
            changed
        });
        let first = !i.reported.swap(true, Ordering::AcqRel);
        if first || was != leader {
            i.observer.emit(observe::ClusterRole { replica: &i.replica, leader, holder: holder.as_deref() });
        }
    }
}
