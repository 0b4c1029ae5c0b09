//! Synthetic probes: each configured probe runs on its own interval (first runs spread with
//! jitter), never overlapping itself, under a hard timeout, and respecting the API (a 429 waits
//! `retry_after`; a 402 pauses credit-spending probes; `max_runs_per_day` caps them). Reloaded
//! configs add, remove and change probes without touching the unchanged ones.
//!
//! With several replicas (`cluster`), `replicas: one` probes run only on the replica that holds
//! the probe lease; their backoff and day budget are shared through Redis, so that a failover
//! neither runs early nor spends twice.
//!
//! This module uses `config`, `classify`, `cluster` and `observe`; it knows nothing of the proxy,
//! the status page or the admin server (the app exposes [`Probes::status`] and
//! [`Probes::run_now`]).

pub(crate) mod output;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use run::{Callback, ExchangeReport, RunContext, RunReport, WebhookWatch};

use crate::BoxFuture;
use crate::classify::ErrorClass;
use crate::cluster::{Cluster, unix_ms};
use crate::config::{Config, Probe, Replicas, Upstream};
use crate::observe::{self, BackoffReason, Observer, SkipReason};

/// How long a credit-spending probe pauses after a 402.
pub const PAYMENT_PAUSE: Duration = Duration::from_secs(15 * 60);

/// Runs one probe once. The HTTP runner in production; tests substitute their own.
pub trait Runner: Send + Sync + 'static {
    fn run<'a>(&'a self, probe: &'a Probe, upstream: &'a Upstream) -> BoxFuture<'a, RunReport>;
}

/// The production runner: real HTTP exchanges.
pub struct HttpRunner(pub RunContext);

impl Runner for HttpRunner {
    fn run<'a>(&'a self, probe: &'a Probe, upstream: &'a Upstream) -> BoxFuture<'a, RunReport> {
        Box::pin(run::run(probe, upstream, &self.0))
    }
}

impl HttpRunner {
    /// A runner with its own HTTP clients: one for the API, one for downloading outputs.
    pub fn new(observer: Observer) -> Result<Self, reqwest::Error> {
        let agent = concat!("modelslab-sentinel/", env!("CARGO_PKG_VERSION"));
        let client = reqwest::Client::builder().user_agent(agent).pool_idle_timeout(Duration::from_secs(90)).build()?;
        let downloads = reqwest::Client::builder()
            .user_agent(agent)
            // output::download follows redirects itself, checking each hop against the allowlist.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(HttpRunner(RunContext { client, downloads, observer, webhooks: None }))
    }

    /// Runs with `follow.webhook` ask the API to call this receiver.
    pub fn with_webhooks(mut self, webhooks: Arc<dyn WebhookWatch>) -> Self {
        self.0.webhooks = Some(webhooks);
        self
    }
}

#[derive(Default)]
struct Gates {
    backoff_until: Option<Instant>,
    backoff_reason: Option<BackoffReason>,
    day: u64,
    runs_today: u32,
}

struct ProbeState {
    running: AtomicBool,
    gates: Mutex<Gates>,
    last: Mutex<Option<RunReport>>,
    /// Set when this replica takes over a `replicas: one` probe: when its next run is due, from
    /// the last run of the replica that held it. The schedule picks it up at once.
    resume_at: Mutex<Option<Instant>>,
    resume: tokio::sync::Notify,
}

/// A probe's state as `/api/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    pub name: String,
    pub interval_seconds: f64,
    pub running: bool,
    pub runs_today: u32,
    /// Seconds until the probe runs again after a 429 or a 402.
    pub backoff_remaining_seconds: Option<f64>,
    pub backoff_reason: Option<BackoffReason>,
    pub last: Option<RunReport>,
}

/// The probe component.
#[derive(Clone)]
pub struct Probes {
    inner: Arc<Inner>,
}

struct Inner {
    observer: Observer,
    cluster: Cluster,
    /// Whether this replica runs the `replicas: one` probes: always with one replica; with
    /// several, once it holds the lease *and* has taken over their shared state.
    leading: AtomicBool,
    runner: Arc<dyn Runner>,
    config: watch::Receiver<Arc<Config>>,
    states: Mutex<HashMap<String, Arc<ProbeState>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn utc_day() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
}

impl Probes {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        observer: Observer,
        runner: Arc<dyn Runner>,
        cluster: Cluster,
    ) -> Self {
        let leading = AtomicBool::new(!cluster.is_shared());
        Probes {
            inner: Arc::new(Inner { observer, cluster, leading, runner, config, states: Mutex::new(HashMap::new()) }),
        }
    }

    /// Schedules the configured probes and follows config changes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Some(roles) = self.inner.cluster.roles() {
            tokio::spawn(self.clone().adopt_shared_state(roles, shutdown.clone()));
        }
        let mut config = self.inner.config.clone();
        let mut tasks: HashMap<String, (Probe, CancellationToken)> = HashMap::new();
        loop {
            let current = config.borrow_and_update().clone();
            self.apply(&current, &mut tasks, &shutdown);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = config.changed() => if changed.is_err() { break },
            }
        }
        for (_, (_, token)) in tasks {
            token.cancel();
        }
    }

    fn apply(
        &self,
        config: &Config,
        tasks: &mut HashMap<String, (Probe, CancellationToken)>,
        shutdown: &CancellationToken,
    ) {
        let wanted: HashMap<&str, &Probe> = config.probes.iter().map(|p| (p.name.as_str(), p)).collect();
        tasks.retain(|name, (_, token)| {
            if wanted.contains_key(name.as_str()) {
                return true;
            }
            token.cancel();
            lock(&self.inner.states).remove(name);
            self.inner.observer.emit(observe::ProbeRemoved { probe: name });
            false
        });
        for (name, def) in wanted {
            let changed = match tasks.get(name) {
                Some((old, _)) if old == def => continue,
                Some((_, token)) => {
                    token.cancel();
                    true
                }
                None => false,
            };
            let state = lock(&self.inner.states)
                .entry(name.to_owned())
                .or_insert_with(|| {
                    Arc::new(ProbeState {
                        running: AtomicBool::new(false),
                        gates: Mutex::default(),
                        last: Mutex::new(None),
                        resume_at: Mutex::new(None),
                        resume: tokio::sync::Notify::new(),
                    })
                })
                .clone();
            self.inner.observer.emit(observe::ProbeScheduled { probe: name, interval: def.interval, changed });
            let token = shutdown.child_token();
            tokio::spawn(schedule(self.inner.clone(), state, def.clone(), token.clone()));
            tasks.insert(name.to_owned(), (def.clone(), token));
        }
    }

    /// Each time this replica takes the probe lease, takes over the shared backoff and day budget
    /// of the `replicas: one` probes, so that the new holder neither runs early nor spends twice.
    async fn adopt_shared_state(self, mut roles: watch::Receiver<crate::cluster::Role>, shutdown: CancellationToken) {
        loop {
            let leader = roles.borrow_and_update().leader;
            if !leader {
                if self.inner.leading.swap(false, Ordering::AcqRel) {
                    let probes = self.inner.config.borrow().probes.clone();
                    for p in probes.iter().filter(|p| p.replicas == Replicas::One) {
                        self.inner.observer.emit(observe::ProbeStandby { probe: &p.name });
                    }
                }
            } else if !self.inner.leading.load(Ordering::Acquire) {
                self.adopt().await;
                self.inner.leading.store(roles.borrow().leader, Ordering::Release);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = roles.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Takes over the shared backoff, day budget and rhythm of every `replicas: one` probe.
    async fn adopt(&self) {
        let probes: Vec<Probe> =
            self.inner.config.borrow().probes.iter().filter(|p| p.replicas == Replicas::One).cloned().collect();
        let day = utc_day();
        for p in probes {
            let Some(shared) = self.inner.cluster.probe_state(&p.name, day).await else { continue };
            let Some(state) = lock(&self.inner.states).get(&p.name).cloned() else { continue };
            if let Some(last_ms) = shared.last_run_ms {
                // Keep the last holder's rhythm: run when its next run was due (now, if past).
                let since = Duration::from_millis(unix_ms().saturating_sub(last_ms));
                *lock(&state.resume_at) = Some(Instant::now() + p.interval.saturating_sub(since));
                state.resume.notify_one();
            }
            let mut g = lock(&state.gates);
            if g.day != day {
                g.day = day;
                g.runs_today = 0;
            }
            g.runs_today = g.runs_today.max(shared.runs_today);
            if let Some((until_ms, reason)) = shared.backoff {
                let until = Instant::now() + Duration::from_millis(until_ms.saturating_sub(unix_ms()));
                if g.backoff_until.is_none_or(|t| t < until) {
                    g.backoff_until = Some(until);
                    g.backoff_reason = reason.parse().ok();
                }
            }
        }
    }

    /// Runs probe `name` now (outside its schedule and gates); `None` if there is no such probe.
    pub async fn run_now(&self, name: &str) -> Option<RunReport> {
        let def = self.inner.config.borrow().probes.iter().find(|p| p.name == name).cloned()?;
        let state = lock(&self.inner.states).get(name).cloned()?;
        let was_running = state.running.swap(true, Ordering::AcqRel);
        let report = run_and_record(&self.inner, &state, &def).await;
        if !was_running {
            state.running.store(false, Ordering::Release);
        }
        Some(report)
    }

    /// Every configured probe's state, in config order.
    pub fn status(&self) -> Vec<ProbeStatus> {
        let config = self.inner.config.borrow().clone();
        let states = lock(&self.inner.states);
        let now = Instant::now();
        config
            .probes
            .iter()
            .filter_map(|p| {
                let s = states.get(&p.name)?;
                let gates = lock(&s.gates);
                let backoff = gates.backoff_until.filter(|t| *t > now);
                Some(ProbeStatus {
                    name: p.name.clone(),
                    interval_seconds: p.interval.as_secs_f64(),
                    running: s.running.load(Ordering::Acquire),
                    runs_today: if gates.day == utc_day() { gates.runs_today } else { 0 },
                    backoff_remaining_seconds: backoff.map(|t| (t - now).as_secs_f64()),
                    backoff_reason: backoff.and(gates.backoff_reason),
                    last: lock(&s.last).clone(),
                })
            })
            .collect()
    }
}

/// One probe's schedule: ticks every interval after a random first delay.
async fn schedule(inner: Arc<Inner>, state: Arc<ProbeState>, def: Probe, token: CancellationToken) {
    let jitter = rand::rng().random_range(Duration::ZERO..def.interval.max(Duration::from_millis(1)));
    let mut ticker = tokio::time::interval_at(Instant::now() + jitter, def.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = ticker.tick() => {}
            _ = state.resume.notified() => {
                // Taken over from another replica: keep its rhythm, and catch up if it is due.
                if let Some(at) = lock(&state.resume_at).take() {
                    ticker.reset_at(at);
                }
                continue;
            }
        }
        // With several replicas, a `replicas: one` probe runs on the lease holder only.
        if def.replicas == Replicas::One && !inner.leading.load(Ordering::Acquire) {
            continue;
        }
        if let Some(skip) = gate(&inner, &state, &def) {
            inner.observer.emit(observe::ProbeSkipped { probe: &def.name, reason: skip });
            continue;
        }
        if state.running.swap(true, Ordering::AcqRel) {
            inner.observer.emit(observe::ProbeSkipped { probe: &def.name, reason: SkipReason::Overlap });
            continue;
        }
        let (inner, state, def, token) = (inner.clone(), state.clone(), def.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = run_and_record(&inner, &state, &def) => {}
            }
            state.running.store(false, Ordering::Release);
        });
    }
}

/// Why this tick must not run, if it must not; counts the run against the day's budget if it may.
fn gate(inner: &Inner, state: &ProbeState, def: &Probe) -> Option<SkipReason> {
    let mut g = lock(&state.gates);
    if g.backoff_until.is_some_and(|t| Instant::now() < t) {
        return Some(SkipReason::Backoff);
    }
    if def.max_runs_per_day > 0 {
        let today = utc_day();
        if g.day != today {
            g.day = today;
            g.runs_today = 0;
        }
        if g.runs_today >= def.max_runs_per_day {
            return Some(SkipReason::Budget);
        }
        g.runs_today += 1;
        share(inner, def, |c, name| {
            let (day, runs) = (g.day, g.runs_today);
            async move { c.save_runs(&name, day, runs).await }
        });
    }
    None
}

/// Writes a `replicas: one` probe's state to Redis (off the scheduler's path), when replicas share
/// state.
fn share<F, Fut>(inner: &Inner, def: &Probe, write: F)
where
    F: FnOnce(Cluster, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if inner.cluster.is_shared() && def.replicas == Replicas::One {
        tokio::spawn(write(inner.cluster.clone(), def.name.clone()));
    }
}

fn share_backoff(inner: &Inner, def: &Probe, wait: Duration, reason: BackoffReason) {
    let until_ms = unix_ms() + wait.as_millis() as u64;
    share(inner, def, |c, name| async move { c.save_backoff(&name, until_ms, reason.as_str()).await });
}

async fn run_and_record(inner: &Inner, state: &ProbeState, def: &Probe) -> RunReport {
    let upstream = inner.config.borrow().upstream.clone();
    let started_at = crate::metrics::unix_now();
    let started_ms = unix_ms();
    share(inner, def, |c, name| async move { c.save_last_run(&name, started_ms).await });
    let root = observe::probe_span(&def.name);
    let run = tokio::time::timeout(def.timeout, inner.runner.run(def, &upstream)).instrument(root.clone());
    let report = match run.await {
        Ok(report) => report,
        Err(_) => RunReport::timed_out(&def.name, def.timeout, started_at),
    };

    // Respect the API: wait out a 429's retry_after; pause credit spending after a 402.
    {
        let mut g = lock(&state.gates);
        match report.error_class {
            Some(ErrorClass::RateLimited) => {
                let wait = report.retry_after_seconds.map(Duration::from_secs_f64).unwrap_or(def.interval);
                g.backoff_until = Some(Instant::now() + wait);
                g.backoff_reason = Some(BackoffReason::RateLimited);
                share_backoff(inner, def, wait, BackoffReason::RateLimited);
            }
            Some(ErrorClass::PaymentRequired) if def.max_runs_per_day > 0 => {
                g.backoff_until = Some(Instant::now() + PAYMENT_PAUSE);
                g.backoff_reason = Some(BackoffReason::PaymentRequired);
                share_backoff(inner, def, PAYMENT_PAUSE, BackoffReason::PaymentRequired);
            }
            _ => {}
        }
    }

    let previous = lock(&state.last).replace(report.clone());
    inner.observer.emit(observe::ProbeRunFinished {
        probe: &def.name,
        success: report.success,
        failure: report.failure_reason,
        failed_expectations: &report.failed_expectations,
        duration: Duration::from_secs_f64(report.duration_seconds),
        started_at_unix: report.started_at_unix,
        previous_success: previous.map(|p| p.success),
        span: &root,
    });
    report
}

#[cfg(test)]
mod tests;
