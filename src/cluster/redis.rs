//! Shared state in Redis: one Lua script per operation that must not race, every key under the
//! prefix's hash tag (`{prefix}:…`, so that all of them live in one slot), every operation under
//! a short deadline. When Redis does not answer, the operation falls back to this replica's own
//! memory ([`Memory`]): jobs tracked there move to Redis once it answers again, and webhook runs
//! are written to both, so that a delivery can be judged here while Redis is away.
//!
//! `cluster.redis_url` may name a standalone Redis or any node of a Redis Cluster: the server
//! says which (`INFO cluster`, or a MOVED answer), and with a cluster the client follows slot
//! redirections and failovers.
//!
//! Redis may also lose what it held (restarted without persistence, flushed, a failover that lost
//! writes). Each replica keeps a shadow of the jobs it saw submitted until it knows them ended
//! (ending a job anywhere leaves a tombstone), and a marker key tells that Redis lost its data:
//! then every replica writes its shadowed jobs back, so that each is still counted once.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::memory::Memory;
use super::{Ask, ClusterError, Delivery, Role, SharedJob, SharedProbe, Tracking, Unanswered, scripts};
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

/// What `cluster.redis_url` names: not yet known, one server, a Redis Cluster.
const SINGLE: u8 = 1;
const CLUSTER: u8 = 2;

/// The connection: to one server (reconnecting on its own), or to a Redis Cluster (following
/// its slots). Cheap to clone: both are handles on one multiplexed connection.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub(super) struct Redis {
    conn: Mutex<Conn>,
    /// The client for a Redis Cluster, should the server turn out to be a cluster node (`None`
    /// when the URL cannot name one, a Unix socket).
    cluster: Option<ClusterClient>,
    /// [`UNKNOWN`], [`SINGLE`] or [`CLUSTER`].
    topology: AtomicU8,
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
    /// The jobs this replica saw submitted and tracked in Redis, until it knows them ended: what
    /// it writes back should Redis lose them.
    shadow: Memory,
    /// The value of the marker key when this replica last read it (Redis lost its data when the
    /// marker is gone or another).
    marker: Mutex<Option<String>>,
    /// Jobs written back after Redis lost them, since start.
    pub(super) restored: AtomicU64,
    /// Jobs tracked and ended here while Redis did not answer, whose records a write that timed
    /// out may still have put in Redis: taken out once it answers.
    ended_here: Mutex<Vec<String>>,
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
        let cluster = ClusterClient::builder([url.trim()])
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(OP_TIMEOUT)
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(250)
            .build()
            .ok();
        let (role, _) = watch::channel(Role { leader: false, holder: None });
        Ok(Redis {
            conn: Mutex::new(Conn::Single(conn)),
            cluster,
            topology: AtomicU8::new(UNKNOWN),
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
            shadow: Memory::default(),
            marker: Mutex::new(None),
            restored: AtomicU64::new(0),
            ended_here: Mutex::new(Vec::new()),
        })
    }

    fn conn(&self) -> Conn {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Asks the server whether it is a Redis Cluster node, once it answers.
    async fn learn_topology(&self) {
        if self.topology.load(Ordering::Acquire) != UNKNOWN {
            return;
        }
        let mut conn = self.conn();
        let mut ask = redis::cmd("INFO");
        ask.arg("cluster");
        if let Ok(Ok(info)) = tokio::time::timeout(OP_TIMEOUT, ask.query_async::<String>(&mut conn)).await {
            if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
                self.follow_cluster();
            } else {
                self.topology.store(SINGLE, Ordering::Release);
            }
        }
    }

    /// From now on, talks to the server as a Redis Cluster node.
    fn follow_cluster(&self) {
        let Some(client) = &self.cluster else { return };
        if self.topology.swap(CLUSTER, Ordering::AcqRel) == CLUSTER {
            return;
        }
        let config =
            ClusterConfig::new().set_connection_timeout(Duration::from_secs(1)).set_response_timeout(OP_TIMEOUT);
        let conn = Conn::Cluster(client.get_pending_async_connection_with_config(config));
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = conn;
        self.observer.emit(observe::ClusterFollowed);
    }

    /// Whether `cluster.redis_url` names a Redis Cluster (as far as known).
    pub(super) fn is_cluster(&self) -> bool {
        self.topology.load(Ordering::Acquire) == CLUSTER
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
    async fn run<T, F>(&self, op: ClusterOp, f: impl FnOnce(Conn) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = tokio::time::timeout(OP_TIMEOUT, f(self.conn())).await;
        if let Ok(Err(e)) = &result
            && matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask))
            && self.cluster.is_some()
        {
            // A cluster node: the next attempt follows its slots (this one counts as failed).
            self.follow_cluster();
        }
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

    /// How long a job's record (and then its tombstone) lives: a little longer than the TTL, so
    /// that the sweep (not Redis) ends it and counts it.
    fn keep_ms(ttl: Duration) -> u64 {
        u64::try_from((ttl + Duration::from_secs(120)).as_millis()).unwrap_or(u64::MAX)
    }

    async fn track_in_redis(&self, id: &str, job: &SharedJob, ttl: Duration, max: usize) -> Option<Tracking> {
        let value = serde_json::to_string(job).ok()?;
        let (key, index, jobs, ended) =
            (self.key(&format!("job:{id}")), self.key("jobs"), self.key("job:"), self.key("ended:"));
        let keep = Self::keep_ms(ttl);
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
                    .arg(ended)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let new = out.first().is_some_and(|f| f == "1");
        if new {
            // Kept until this replica knows the job ended (its shadow's own evictions are jobs
            // Redis evicts too).
            self.shadow.track_job(id, job.clone(), max);
        }
        Some(Tracking { new, evicted: out.iter().skip(1).filter_map(|v| serde_json::from_str(v).ok()).collect() })
    }

    /// A job's record in Redis (taken out atomically with an end, so that one replica ends it; a
    /// job Redis lost is ended from this replica's shadow, when it saw it submitted).
    pub(super) async fn job(&self, id: &str, ask: &Ask, ttl: Duration) -> Result<Option<SharedJob>, Unanswered> {
        let (key, index, tomb) = (self.key(&format!("job:{id}")), self.key("jobs"), self.key(&format!("ended:{id}")));
        let shadow = self.shadow.job(id, false).and_then(|j| serde_json::to_string(&j).ok()).unwrap_or_default();
        let keep = Self::keep_ms(ttl);
        let (end, token) = match ask {
            Ask::Read => (false, String::new()),
            Ask::End(token) => (true, token.clone()),
        };
        let answer: Option<Option<String>> = self
            .run(ClusterOp::JobRead, |mut c| async move {
                scripts::FETCH
                    .key(key)
                    .key(index)
                    .key(tomb)
                    .arg(id)
                    .arg(u8::from(end))
                    .arg(keep)
                    .arg(shadow)
                    .arg(token)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        let Some(answer) = answer else { return Err(Unanswered) };
        if end {
            // Ended now, here or (no record, a tombstone) elsewhere before.
            self.shadow.job(id, true);
        }
        Ok(answer.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Takes out the jobs past `cutoff_ms` (in Redis, whichever replica sweeps first counts each
    /// once; and those kept here), then moves the jobs kept here into Redis if it answers. First,
    /// should Redis have lost its data, writes back the jobs this replica saw submitted.
    pub(super) async fn sweep_jobs(&self, cutoff_ms: u64, limit: usize, ttl: Duration, max: usize) -> Sweep {
        if self.lost_data().await {
            self.restore(ttl).await;
        }
        let (index, jobs, ended) = (self.key("jobs"), self.key("job:"), self.key("ended:"));
        let keep = Self::keep_ms(ttl);
        let out: Option<Vec<String>> = self
            .run(ClusterOp::JobSweep, |mut c| async move {
                scripts::SWEEP
                    .key(index)
                    .arg(cutoff_ms)
                    .arg(jobs)
                    .arg(limit)
                    .arg(ended)
                    .arg(keep)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if out.is_some() {
            // Jobs this old were ended, or swept just now (tombstones either way).
            self.shadow.expire_jobs(cutoff_ms, usize::MAX);
        }
        let mut sweep = Sweep {
            expired: out.unwrap_or_default().iter().filter_map(|v| serde_json::from_str(v).ok()).collect(),
            evicted: Vec::new(),
        };
        sweep.expired.extend(self.local.expire_jobs(cutoff_ms, limit));
        if self.is_up() {
            self.forget_ended_here(ttl).await;
            for (id, job) in self.local.jobs() {
                let Some(t) = self.track_in_redis(&id, &job, ttl, max).await else { break };
                self.local.job(&id, true);
                // Seen submitted here: shadowed even when a write that timed out had put it there.
                self.shadow.track_job(&id, job, max);
                sweep.evicted.extend(t.evicted);
            }
        }
        sweep
    }

    /// Notes a job ended from this replica's memory (see `ended_here`).
    pub(super) fn ended_here(&self, id: &str) {
        let mut ended = self.ended_here.lock().unwrap_or_else(PoisonError::into_inner);
        if ended.len() < 100_000 {
            ended.push(id.to_owned());
        }
    }

    /// Takes out of Redis the records of jobs ended here meanwhile (nobody counts them again).
    async fn forget_ended_here(&self, ttl: Duration) {
        let ids = std::mem::take(&mut *self.ended_here.lock().unwrap_or_else(PoisonError::into_inner));
        for (n, id) in ids.iter().enumerate() {
            if self.job(id, &Ask::end(), ttl).await.is_err() {
                // Redis went away again: the rest wait for the next sweep.
                let mut ended = self.ended_here.lock().unwrap_or_else(PoisonError::into_inner);
                ended.extend(ids[n..].iter().cloned());
                return;
            }
        }
    }

    /// Whether Redis lost its data since this replica last looked (its marker key gone or
    /// another); true on the first look too, when the write-back finds nothing missing.
    async fn lost_data(&self) -> bool {
        let key = self.key("marker");
        let fresh = format!("{}-{}", self.replica, clock::unix_millis());
        let Some(now): Option<String> =
            self.run(ClusterOp::JobSweep, |mut c| async move {
                scripts::MARK.key(key).arg(fresh).invoke_async(&mut c).await
            })
            .await
        else {
            return false;
        };
        let mut known = self.marker.lock().unwrap_or_else(PoisonError::into_inner);
        let lost = known.as_deref() != Some(now.as_str());
        *known = Some(now);
        lost
    }

    /// Writes back the shadowed jobs Redis does not hold (nor knows ended), in batches; forgets
    /// those that ended elsewhere.
    async fn restore(&self, ttl: Duration) {
        const BATCH: usize = 500;
        let keep = Self::keep_ms(ttl);
        let mut restored = 0;
        let shadowed = self.shadow.jobs();
        for batch in shadowed.chunks(BATCH) {
            let (index, jobs, ended) = (self.key("jobs"), self.key("job:"), self.key("ended:"));
            let mut script = scripts::RESTORE.key(index);
            script.arg(jobs).arg(ended).arg(keep);
            for (id, job) in batch {
                script.arg(id).arg(job.submitted_ms).arg(serde_json::to_string(job).unwrap_or_default());
            }
            let Some(out): Option<Vec<u8>> =
                self.run(ClusterOp::JobWrite, |mut c| async move { script.invoke_async(&mut c).await }).await
            else {
                return;
            };
            for ((id, _), state) in batch.iter().zip(out) {
                match state {
                    1 => {
                        self.shadow.job(id, true);
                    }
                    2 => restored += 1,
                    _ => {}
                }
            }
        }
        if restored > 0 {
            self.restored.fetch_add(restored, Ordering::Relaxed);
            self.observer.emit(observe::ClusterJobsRestored { jobs: restored });
        }
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
        self.learn_topology().await;
        let ttl = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let (key, epoch) = (self.key("lease"), self.key("lease:epoch"));
        let held = self.lease.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match held {
            Some(value) => {
                let v = value.clone();
                let held_epoch = epoch_of(&value);
                let renewed: Option<i64> = self
                    .run(ClusterOp::Lease, |mut c| async move {
                        scripts::RENEW.key(key).key(epoch).arg(v).arg(ttl).arg(held_epoch).invoke_async(&mut c).await
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
                // Above any epoch this replica knows, should Redis have lost its counter.
                let known =
                    self.role.borrow().holder.as_deref().map_or(0, epoch_of).max(self.epoch.load(Ordering::Relaxed));
                let got: Option<Option<String>> = self
                    .run(ClusterOp::Lease, |mut c| async move {
                        scripts::ACQUIRE.key(key).key(epoch).arg(replica).arg(ttl).arg(known).invoke_async(&mut c).await
                    })
                    .await;
                match got {
                    Some(Some(value)) => {
                        self.epoch.store(epoch_of(&value), Ordering::Relaxed);
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

/// The fencing epoch of a lease value (`replica#epoch`), 0 when it has none.
fn epoch_of(value: &str) -> u64 {
    value.rsplit_once('#').and_then(|(_, e)| e.parse().ok()).unwrap_or(0)
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
