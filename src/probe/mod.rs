//! Synthetic probes: each configured probe runs on its own interval (first runs spread with
//! jitter), never overlapping itself, under a hard timeout, and respecting the API (a 429 waits
//! `retry_after`; a 402 pauses credit-spending probes; `max_runs_per_day` caps them). Reloaded
//! configs add, remove and change probes without touching the unchanged ones.
//!
//! This module uses `config`, `classify` and `observe`; it knows nothing of the proxy, the status
//! page or the admin server (the app exposes [`Probes::status`] and [`Probes::run_now`]).

mod run;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use run::{ExchangeReport, RunContext, RunReport};

use crate::classify::ErrorClass;
use crate::config::{Config, Probe, Upstream};
use crate::observe::{self, BackoffReason, Observer, SkipReason};

/// How long a credit-spending probe pauses after a 402.
pub const PAYMENT_PAUSE: Duration = Duration::from_secs(15 * 60);

/// Runs one probe once. The HTTP runner in production; tests substitute their own.
pub trait Runner: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        probe: &'a Probe,
        upstream: &'a Upstream,
    ) -> Pin<Box<dyn Future<Output = RunReport> + Send + 'a>>;
}

/// The production runner: real HTTP exchanges.
pub struct HttpRunner(pub RunContext);

impl Runner for HttpRunner {
    fn run<'a>(
        &'a self,
        probe: &'a Probe,
        upstream: &'a Upstream,
    ) -> Pin<Box<dyn Future<Output = RunReport> + Send + 'a>> {
        Box::pin(run::run(probe, upstream, &self.0))
    }
}

impl HttpRunner {
    /// A runner with its own HTTP client.
    pub fn new(observer: Observer) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("modelslab-sentinel/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(HttpRunner(RunContext { client, observer }))
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
    pub fn new(config: watch::Receiver<Arc<Config>>, observer: Observer, runner: Arc<dyn Runner>) -> Self {
        Probes { inner: Arc::new(Inner { observer, runner, config, states: Mutex::new(HashMap::new()) }) }
    }

    /// Schedules the configured probes and follows config changes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
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
                    })
                })
                .clone();
            self.inner.observer.emit(observe::ProbeScheduled { probe: name, interval: def.interval, changed });
            let token = shutdown.child_token();
            tokio::spawn(schedule(self.inner.clone(), state, def.clone(), token.clone()));
            tasks.insert(name.to_owned(), (def.clone(), token));
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
        }
        if let Some(skip) = gate(&state, &def) {
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
fn gate(state: &ProbeState, def: &Probe) -> Option<SkipReason> {
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
    }
    None
}

async fn run_and_record(inner: &Inner, state: &ProbeState, def: &Probe) -> RunReport {
    let upstream = inner.config.borrow().upstream.clone();
    let started_at = crate::metrics::unix_now();
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
            }
            Some(ErrorClass::PaymentRequired) if def.max_runs_per_day > 0 => {
                g.backoff_until = Some(Instant::now() + PAYMENT_PAUSE);
                g.backoff_reason = Some(BackoffReason::PaymentRequired);
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
