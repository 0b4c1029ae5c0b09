//! Shared state in Redis: one Lua script per operation that must not race, every key under the
//! prefix's hash tag (`{prefix}:…`, so that all of them live in one slot), every operation under
//! a short deadline. When Redis does not answer, the operation falls back to this replica's own
//! memory ([`Memory`]): jobs tracked there move to Redis once it answers again, and webhook runs
//! are written to both, so that a delivery can be judged here while Redis is away.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::memory::Memory;
use super::{ClusterError, Delivery, Role, SharedJob, SharedProbe, Tracking, scripts};
use crate::clock;
use crate::config::Cluster as Settings;
use crate::observe::{self, Observer};
use crate::vocab::{BackoffReason, ClusterOp};

/// How long one Redis operation may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether Redis answered: not yet known, up, down.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

pub(super) struct Redis {
    conn: ConnectionManager,
    observer: Observer,
    prefix: String,
    lease_ttl: Duration,
    pub(super) replica: String,
    reachable: AtomicU8,
    /// The lease value this replica holds (`replica#epoch`), when it holds it.
    lease: Mutex<Option<String>>,
    pub(super) role: watch::Sender<Role>,
    pub(super) epoch: AtomicU64,
    /// Whether the role was published once (the leader gauge exists from the first step).
    reported: AtomicBool,
    /// What this replica keeps while Redis does not answer.
    pub(super) local: Memory,
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

impl Redis {
    /// A lazy client: Redis may be down when the agent starts.
    pub(super) fn new(url: &str, settings: &Settings, observer: Observer) -> Result<Redis, ClusterError> {
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
        Ok(Redis {
            conn,
            observer,
            prefix: settings.key_prefix.clone(),
            lease_ttl: settings.lease_ttl,
            replica: replica_name(),
            reachable: AtomicU8::new(UNKNOWN),
            lease: Mutex::new(None),
            role,
            epoch: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            local: Memory::default(),
        })
    }

    pub(super) fn is_up(&self) -> bool {
        self.reachable.load(Ordering::Acquire) == UP
    }

    pub(super) fn leads(&self) -> bool {
        self.role.borrow().leader
    }

    /// Runs one Redis operation under its deadline, recording Redis up or down (the gauge exists
    /// from the first operation on) and counting errors by `op`. `None`: Redis did not answer, or
    /// answered with an error.
    async fn run<T, F>(&self, op: ClusterOp, f: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = tokio::time::timeout(OP_TIMEOUT, f(self.conn.clone())).await;
        let ok = matches!(result, Ok(Ok(_)));
        let was = self.reachable.swap(if ok { UP } else { DOWN }, Ordering::AcqRel);
        if was != if ok { UP } else { DOWN } {
            let unusable = match &result {
                Ok(Err(e)) => unusable(e.kind()),
                _ => None,
            };
            self.observer.emit(observe::ClusterReachable { up: ok, unusable });
        }
        match result {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.observer.emit(observe::ClusterError { op, kind: format!("{:?}", e.kind()) });
                None
            }
            Err(_) => {
                self.observer.emit(observe::ClusterError { op, kind: "timeout".into() });
                None
            }
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    // ------------------------------------------------------------------ jobs

    pub(super) async fn track_job(&self, id: &str, job: SharedJob, ttl: Duration, max: usize) -> Tracking {
        match self.track_in_redis(id, &job, ttl, max).await {
            Some(t) => t,
            None => self.local.track_job(id, job, max),
        }
    }

    async fn track_in_redis(&self, id: &str, job: &SharedJob, ttl: Duration, max: usize) -> Option<Tracking> {
        let value = serde_json::to_string(job).ok()?;
        let (key, index, jobs) = (self.key(&format!("job:{id}")), self.key("jobs"), self.key("job:"));
        // Keys outlive the TTL a little, so that the sweep (not Redis) ends them and counts them.
        let keep = u64::try_from((ttl + Duration::from_secs(120)).as_millis()).unwrap_or(u64::MAX);
        let out: Vec<String> = self
            .run(ClusterOp::JobWrite, |mut c| async move {
                scripts::TRACK
                    .key(key)
                    .key(index)
                    .arg(value)
                    .arg(keep)
                    .arg(job.submitted_ms)
                    .arg(id)
                    .arg(max.max(1))
                    .arg(jobs)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let new = out.first().is_some_and(|f| f == "1");
        Some(Tracking { new, evicted: out.iter().skip(1).filter_map(|v| serde_json::from_str(v).ok()).collect() })
    }

    /// A job's record in Redis (taken out atomically with `end`, so that one replica ends it).
    pub(super) async fn job(&self, id: &str, end: bool) -> Option<SharedJob> {
        let (key, index) = (self.key(&format!("job:{id}")), self.key("jobs"));
        let v: Option<String> = self
            .run(ClusterOp::JobRead, |mut c| async move {
                scripts::FETCH.key(key).key(index).arg(id).arg(u8::from(end)).invoke_async(&mut c).await
            })
            .await
            .flatten();
        v.and_then(|v| serde_json::from_str(&v).ok())
    }

    /// Takes out the jobs past `cutoff_ms` (in Redis, whichever replica sweeps first counts each
    /// once; and those kept here), then moves the jobs kept here into Redis if it answers.
    pub(super) async fn sweep_jobs(&self, cutoff_ms: u64, limit: usize, ttl: Duration, max: usize) -> Sweep {
        let (index, jobs) = (self.key("jobs"), self.key("job:"));
        let out: Vec<String> = self
            .run(ClusterOp::JobSweep, |mut c| async move {
                scripts::SWEEP.key(index).arg(cutoff_ms).arg(jobs).arg(limit).invoke_async(&mut c).await
            })
            .await
            .unwrap_or_default();
        let mut sweep =
            Sweep { expired: out.iter().filter_map(|v| serde_json::from_str(v).ok()).collect(), evicted: Vec::new() };
        sweep.expired.extend(self.local.expire_jobs(cutoff_ms, limit));
        if self.is_up() {
            for (id, job) in self.local.jobs() {
                let Some(t) = self.track_in_redis(&id, &job, ttl, max).await else { break };
                self.local.job(&id, true);
                sweep.evicted.extend(t.evicted);
            }
        }
        sweep
    }

    // ------------------------------------------------------------------ probe state

    pub(super) async fn probe_state(&self, probe: &str, day: u64) -> Option<SharedProbe> {
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
        // Stored as `UNTIL_MS REASON`; a value this version cannot read is no backoff.
        let backoff = b.and_then(|v| {
            let (until, reason) = v.split_once(' ')?;
            Some((until.parse().ok()?, reason.parse::<BackoffReason>().ok()?))
        });
        Some(SharedProbe { backoff, runs_today: r.unwrap_or(0), last_run_ms: l })
    }

    pub(super) async fn save_last_run(&self, probe: &str, at_ms: u64) {
        let key = self.key(&format!("probe:{probe}:last"));
        let _: Option<()> = self
            .run(ClusterOp::ProbeState, |mut c| async move {
                redis::cmd("SET").arg(key).arg(at_ms).arg("EX").arg(2 * 86_400).query_async(&mut c).await
            })
            .await;
    }

    pub(super) async fn save_backoff(&self, probe: &str, until_ms: u64, reason: BackoffReason) {
        let key = self.key(&format!("probe:{probe}:backoff"));
        let ttl = until_ms.saturating_sub(clock::unix_millis()).max(1);
        let value = format!("{until_ms} {}", reason.as_str());
        let _: Option<()> = self
            .run(ClusterOp::ProbeState, |mut c| async move {
                redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl).query_async(&mut c).await
            })
            .await;
    }

    pub(super) async fn save_runs(&self, probe: &str, day: u64, runs: u32) {
        let key = self.key(&format!("probe:{probe}:runs:{day}"));
        let _: Option<()> = self
            .run(ClusterOp::ProbeState, |mut c| async move {
                redis::cmd("SET").arg(key).arg(runs).arg("EX").arg(2 * 86_400).query_async(&mut c).await
            })
            .await;
    }

    // ------------------------------------------------------------------ webhook runs

    fn hook_key(&self, token: &str) -> String {
        self.key(&format!("hook:{token}"))
    }

    pub(super) async fn hook_expect(&self, token: &str, probe: &str, track: &str, keep: Duration) {
        let now = clock::unix_millis();
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        self.local.hook_expect(token, probe, track, now, now.saturating_add(keep_ms));
        let key = self.hook_key(token);
        let (probe, track) = (probe.to_owned(), track.to_owned());
        let _: Option<()> = self
            .run(ClusterOp::Webhook, |mut c| async move {
                redis::pipe()
                    .atomic()
                    .hset_multiple(&key, &[("probe", probe.as_str()), ("track", track.as_str())])
                    .ignore()
                    .pexpire(&key, i64::try_from(keep_ms).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
    }

    pub(super) async fn hook_finished(&self, token: &str, at_ms: u64) {
        self.local.hook_finished(token, at_ms);
        let key = self.hook_key(token);
        let _: Option<i64> =
            self.run(ClusterOp::Webhook, |mut c| async move {
                scripts::FINISHED.key(key).arg(at_ms).invoke_async(&mut c).await
            })
            .await;
    }

    /// Records a delivery in Redis (any replica may take it); judged by what this replica knows
    /// while Redis does not answer.
    pub(super) async fn hook_deliver(&self, token: &str, track: Option<&str>) -> Option<Delivery> {
        let key = self.hook_key(token);
        let t = track.unwrap_or("").to_owned();
        let got: Option<Option<Vec<String>>> = self
            .run(ClusterOp::Webhook, |mut c| async move { scripts::DELIVER.key(key).arg(t).invoke_async(&mut c).await })
            .await;
        match got {
            None => self.local.hook_deliver(token, track),
            Some(None) => None,
            Some(Some(v)) => {
                // Known here too, should Redis be away when the run ends.
                self.local.hook_deliver(token, track);
                match v.as_slice() {
                    [probe, count, finished] => Some(Delivery {
                        probe: probe.clone(),
                        count: count.parse().ok()?,
                        finished_ms: finished.parse().ok(),
                    }),
                    _ => None,
                }
            }
        }
    }

    /// Ends a run: its deliveries, in Redis (made on any replica) or, while Redis does not
    /// answer, those this replica saw.
    pub(super) async fn hook_take(&self, token: &str) -> u64 {
        let here = self.local.hook_take(token);
        let key = self.hook_key(token);
        let there: Option<u64> = self
            .run(ClusterOp::Webhook, |mut c| async move { scripts::TAKE.key(key).invoke_async(&mut c).await })
            .await;
        there.unwrap_or(0).max(here)
    }

    // ------------------------------------------------------------------ the lease

    /// Holds, renews or waits for the probe lease until `shutdown`, then releases it.
    pub(super) async fn run_lease(&self, shutdown: CancellationToken) {
        loop {
            self.lease_step().await;
            // The holder renews every third of the TTL; a standby looks twice as often, so that it
            // takes over soon after a dead holder's lease ends.
            let every = if self.leads() { self.lease_ttl / 3 } else { self.lease_ttl / 6 };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        // Let another replica take over at once instead of after the TTL.
        let held = self.lease.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(value) = held {
            let key = self.key("lease");
            let _: Option<i64> = self
                .run(ClusterOp::Lease, |mut c| async move {
                    scripts::RELEASE.key(key).arg(value).invoke_async(&mut c).await
                })
                .await;
            self.set_role(false, None);
        }
    }

    async fn lease_step(&self) {
        let ttl = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let (key, epoch) = (self.key("lease"), self.key("lease:epoch"));
        let held = self.lease.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match held {
            Some(value) => {
                let v = value.clone();
                let renewed: Option<i64> = self
                    .run(ClusterOp::Lease, |mut c| async move {
                        scripts::RENEW.key(key).arg(v).arg(ttl).invoke_async(&mut c).await
                    })
                    .await;
                match renewed {
                    Some(1) => self.set_role(true, Some(&value)),
                    // Another replica holds it now (this one was cut off past the TTL).
                    Some(_) => {
                        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        let holder = self.holder().await;
                        self.set_role(false, holder.as_deref());
                    }
                    // Redis unreachable: the last holder keeps probing.
                    None => {}
                }
            }
            None => {
                let replica = self.replica.clone();
                let got: Option<Option<String>> = self
                    .run(ClusterOp::Lease, |mut c| async move {
                        scripts::ACQUIRE.key(key).key(epoch).arg(replica).arg(ttl).invoke_async(&mut c).await
                    })
                    .await;
                match got {
                    Some(Some(value)) => {
                        if let Some(e) = value.rsplit('#').next().and_then(|e| e.parse().ok()) {
                            self.epoch.store(e, Ordering::Relaxed);
                        }
                        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(value.clone());
                        self.set_role(true, Some(&value));
                    }
                    Some(None) => {
                        let holder = self.holder().await;
                        self.set_role(false, holder.as_deref());
                    }
                    // Redis unreachable: a standby stays standby (and says so from the start).
                    None => {
                        if !self.reported.load(Ordering::Acquire) {
                            self.set_role(false, None);
                        }
                    }
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

    fn set_role(&self, leader: bool, holder: Option<&str>) {
        let was = self.role.borrow().leader;
        self.role.send_if_modified(|r| {
            let changed = r.leader != leader || r.holder.as_deref() != holder;
            r.leader = leader;
            r.holder = holder.map(str::to_owned);
            changed
        });
        let first = !self.reported.swap(true, Ordering::AcqRel);
        if first || was != leader {
            self.observer.emit(observe::ClusterRole { replica: &self.replica, leader, holder });
        }
    }
}

/// Why a Redis that answers cannot be used, for the errors that say so: a Redis Cluster node (its
/// slot redirections), or a replica that refuses writes.
fn unusable(kind: redis::ErrorKind) -> Option<&'static str> {
    use redis::{ErrorKind, ServerErrorKind as S};
    match kind {
        ErrorKind::Server(S::Moved | S::Ask | S::TryAgain | S::ClusterDown | S::CrossSlot | S::MasterDown) => Some(
            "it answers as a Redis Cluster node (slot redirections): cluster.redis_url needs a standalone Redis or the primary of a Sentinel set",
        ),
        ErrorKind::Server(S::ReadOnly) => Some("it is a read-only replica: cluster.redis_url needs the primary"),
        ErrorKind::Server(S::NoPerm) => {
            Some("its user lacks a permission the agent needs (EVALSHA, GET, SET, DEL, ZADD)")
        }
        _ => None,
    }
}

/// What one sweep took out.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Jobs past the TTL: the caller counts them `expired`.
    pub expired: Vec<SharedJob>,
    /// Jobs evicted while jobs kept here moved into Redis.
    pub evicted: Vec<SharedJob>,
}
