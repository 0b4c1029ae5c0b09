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

pub(crate) mod media;
pub(crate) mod output;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use run::{Callback, RunContext, WebhookWatch};

use crate::BoxFuture;
use crate::classify::ErrorClass;
use crate::clients::Clients;
use crate::clock;
use crate::cluster::{Cluster, Role};
use crate::config::{Config, Probe, Replicas, Upstream};
use crate::maintenance::Maintenance;
use crate::observe::status::{Backoff, ProbeView};
use crate::observe::{self, BackoffReason, Observer, SkipReason};
use crate::tasks::Tasks;
use crate::vocab::RunReport;

/// How long a credit-spending probe pauses after a 402.
pub const PAYMENT_PAUSE: Duration = Duration::from_secs(15 * 60);

/// Runs one probe once. The HTTP runner in production; tests substitute their own.
pub trait Runner: Send + Sync + 'static {
    /// One run of `probe` against `upstream`, its report uniform whatever happened.
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
    /// A runner on the agent's clients: the API's, and the one for downloading outputs.
    pub fn new(observer: Observer, clients: &Clients) -> Self {
        HttpRunner(RunContext {
            client: clients.api.clone(),
            downloads: clients.downloads.clone(),
            observer,
            webhooks: None,
        })
    }

    /// Runs with `follow.webhook` ask the API to call this receiver.
    pub fn with_webhooks(mut self, webhooks: Arc<dyn WebhookWatch>) -> Self {
        self.0.webhooks = Some(webhooks);
        self
    }
}

#[derive(Default)]
struct Gates {
    /// Until when, and why, the probe waits.
    backoff: Option<(Instant, BackoffReason)>,
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

/// The probe component.
#[derive(Clone)]
pub struct Probes {
    inner: Arc<Inner>,
}

struct Inner {
    observer: Observer,
    cluster: Cluster,
    tasks: Tasks,
    /// Whether this replica runs the `replicas: one` probes: always with one replica; with
    /// several, once it holds the lease *and* has taken over their shared state.
    leading: AtomicBool,
    runner: Arc<dyn Runner>,
    config: watch::Receiver<Arc<Config>>,
    maintenance: Maintenance,
    states: Mutex<HashMap<String, Arc<ProbeState>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Probes {
    /// The probe component: `runner` makes the runs, `tasks` tracks them.
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        observer: Observer,
        runner: Arc<dyn Runner>,
        cluster: Cluster,
        tasks: Tasks,
        maintenance: Maintenance,
    ) -> Self {
        let leading = AtomicBool::new(cluster.leads());
        Probes {
            inner: Arc::new(Inner {
                observer,
                cluster,
                tasks,
                leading,
                runner,
                config,
                maintenance,
                states: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Schedules the configured probes and follows config changes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        self.inner.tasks.spawn(self.clone().follow_role(self.inner.cluster.roles(), shutdown.clone()));
        let mut config = self.inner.config.clone();
        let mut tasks: HashMap<String, (Probe, CancellationToken)> = HashMap::new();
        loop {
            let current = config.borrow_and_update().clone();
            self.apply(&current, &mut tasks, &shutdown);
            tokio::select! {
                // The schedules stop with `shutdown`; runs in flight may finish.
                _ = shutdown.cancelled() => return,
                changed = config.changed() => if changed.is_err() { return },
            }
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
            let stop = CancellationToken::new();
            self.inner.tasks.spawn(schedule(self.inner.clone(), state, def.clone(), stop.clone(), shutdown.clone()));
            tasks.insert(name.to_owned(), (def.clone(), stop));
        }
    }

    /// Follows this replica's role: each time it takes the probe lease it takes over the shared
    /// backoff and day budget of the `replicas: one` probes, so that the new holder neither runs
    /// early nor spends twice; when it loses it, their last results stop being exported here.
    async fn follow_role(self, mut roles: watch::Receiver<Role>, shutdown: CancellationToken) {
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
        let day = clock::utc_day();
        for p in probes {
            let Some(shared) = self.inner.cluster.probe_state(&p.name, day).await else { continue };
            let Some(state) = lock(&self.inner.states).get(&p.name).cloned() else { continue };
            if let Some(last_ms) = shared.last_run_ms {
                // Keep the last holder's rhythm: run when its next run was due (now, if past).
                let since = Duration::from_millis(clock::unix_millis().saturating_sub(last_ms));
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
                let until = Instant::now() + Duration::from_millis(until_ms.saturating_sub(clock::unix_millis()));
                if g.backoff.is_none_or(|(t, _)| t < until) {
                    g.backoff = Some((until, reason));
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

    /// Every configured probe's part of the status document, in config order.
    pub fn status(&self) -> Vec<ProbeView> {
        let config = self.inner.config.borrow().clone();
        let states = lock(&self.inner.states);
        let now = Instant::now();
        config
            .probes
            .iter()
            .filter_map(|p| {
                let s = states.get(&p.name)?;
                let gates = lock(&s.gates);
                Some(ProbeView {
                    name: p.name.clone(),
                    interval_seconds: p.interval.as_secs_f64(),
                    running: s.running.load(Ordering::Acquire),
                    runs_today: if gates.day == clock::utc_day() { gates.runs_today } else { 0 },
                    backoff: gates
                        .backoff
                        .filter(|(t, _)| *t > now)
                        .map(|(t, reason)| Backoff { reason, remaining_seconds: (t - now).as_secs_f64() }),
                    last: lock(&s.last).clone(),
                    recent_runs: self.inner.observer.history().probe_runs(&p.name),
                })
            })
            .collect()
    }
}

/// One probe's schedule: ticks every interval after a random first delay, until `stop` (the
/// probe was removed or changed) or `shutdown`. A run in flight at shutdown may finish within the
/// grace period (its result is recorded and its trace exported); one of a removed or changed probe
/// is cut.
async fn schedule(
    inner: Arc<Inner>,
    state: Arc<ProbeState>,
    def: Probe,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let jitter = rand::rng().random_range(Duration::ZERO..def.interval.max(Duration::from_millis(1)));
    let mut ticker = tokio::time::interval_at(Instant::now() + jitter, def.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shutdown.cancelled() => return,
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
        let run = {
            let (inner, state, def, stop) = (inner.clone(), state.clone(), def.clone(), stop.clone());
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = run_and_record(&inner, &state, &def) => {}
                }
                state.running.store(false, Ordering::Release);
            }
        };
        inner.tasks.spawn(run);
    }
}

/// Why this tick must not run, if it must not; counts the run against the day's budget if it may.
fn gate(inner: &Inner, state: &ProbeState, def: &Probe) -> Option<SkipReason> {
    if inner.maintenance.pauses(&inner.config.borrow(), def) {
        return Some(SkipReason::Maintenance);
    }
    let mut g = lock(&state.gates);
    if g.backoff.is_some_and(|(t, _)| Instant::now() < t) {
        return Some(SkipReason::Backoff);
    }
    if def.max_runs_per_day > 0 {
        let today = clock::utc_day();
        if g.day != today {
            g.day = today;
            g.runs_today = 0;
        }
        if g.runs_today >= def.max_runs_per_day {
            return Some(SkipReason::Budget);
        }
        g.runs_today += 1;
        if def.replicas == Replicas::One {
            inner.tasks.finish_or_spawn(inner.cluster.save_runs(&def.name, g.day, g.runs_today));
        }
    }
    None
}

/// Waits out a 429's `retry_after`, or pauses a credit-spending probe after a 402: here, and for
/// the replica that takes the probe over.
fn back_off(inner: &Inner, state: &ProbeState, def: &Probe, report: &RunReport) {
    let (wait, reason) = match report.error_class() {
        Some(ErrorClass::RateLimited) => (report.retry_after().unwrap_or(def.interval), BackoffReason::RateLimited),
        Some(ErrorClass::PaymentRequired) if def.max_runs_per_day > 0 => {
            (PAYMENT_PAUSE, BackoffReason::PaymentRequired)
        }
        _ => return,
    };
    lock(&state.gates).backoff = Some((Instant::now() + wait, reason));
    if def.replicas == Replicas::One {
        let until_ms = clock::unix_millis().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        inner.tasks.finish_or_spawn(inner.cluster.save_backoff(&def.name, until_ms, reason));
    }
}

async fn run_and_record(inner: &Inner, state: &ProbeState, def: &Probe) -> RunReport {
    let upstream = inner.config.borrow().upstream.clone();
    let started_at = clock::unix_seconds();
    if def.replicas == Replicas::One {
        inner.tasks.finish_or_spawn(inner.cluster.save_last_run(&def.name, clock::unix_millis()));
    }
    let root = observe::probe_span(&def.name);
    let run = tokio::time::timeout(def.timeout, inner.runner.run(def, &upstream)).instrument(root.clone());
    let report = match run.await {
        Ok(report) => report,
        Err(_) => RunReport::timed_out(&def.name, def.timeout, started_at),
    };
    back_off(inner, state, def, &report);
    let previous = lock(&state.last).replace(report.clone());
    inner.observer.emit(observe::ProbeRunFinished {
        report: &report,
        previous_success: previous.map(|p| p.outcome.is_success()),
        span: &root,
    });
    report
}

#[cfg(test)]
mod tests;
