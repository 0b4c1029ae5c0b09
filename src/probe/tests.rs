//! The scheduler under paused time, with a runner that answers from a script.

use super::*;
use crate::BoxFuture;
use crate::classify::Reason;
use crate::config::{self, Environment};
use crate::metrics::Metrics;
use crate::observe::ProbeFailure;
use crate::scrape::Scrape;
use crate::vocab::{AnswerOutcome, FinalAnswer, RunOutcome};

type Script = Box<dyn Fn(&str, u32) -> RunReport + Send + Sync>;

/// Answers every run with `report(name, n)`, after `delay`, counting runs per probe.
struct FakeRunner {
    delay: Duration,
    runs: Mutex<HashMap<String, u32>>,
    answer: Script,
}

impl FakeRunner {
    fn new(delay: Duration, answer: impl Fn(&str, u32) -> RunReport + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(FakeRunner { delay, runs: Mutex::default(), answer: Box::new(answer) })
    }

    fn runs(&self, name: &str) -> u32 {
        lock(&self.runs).get(name).copied().unwrap_or(0)
    }
}

impl Runner for FakeRunner {
    fn run<'a>(&'a self, probe: &'a Probe, _: &'a Upstream) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let n = {
                let mut runs = lock(&self.runs);
                let n = runs.entry(probe.name.clone()).or_default();
                *n += 1;
                *n
            };
            tokio::time::sleep(self.delay).await;
            (self.answer)(&probe.name, n)
        })
    }
}

fn ok(name: &str) -> RunReport {
    RunReport {
        probe: name.to_owned(),
        outcome: RunOutcome::Success,
        duration_seconds: 0.0,
        started_at_unix: 0.0,
        answer: Some(FinalAnswer {
            http_status: Some(200),
            outcome: AnswerOutcome::Success,
            message: None,
            job_id: None,
            retry_after_seconds: None,
        }),
        exchanges: Vec::new(),
    }
}

fn failing(name: &str, class: ErrorClass, retry_after: Option<f64>) -> RunReport {
    RunReport {
        outcome: RunOutcome::Failure { reason: ProbeFailure::Expectation, failed_expectations: vec!["x".into()] },
        answer: Some(FinalAnswer {
            http_status: Some(200),
            outcome: AnswerOutcome::Error { error_class: class, reason: Reason::Other },
            message: None,
            job_id: None,
            retry_after_seconds: retry_after,
        }),
        ..ok(name)
    }
}

fn config(probes: &str) -> Arc<Config> {
    let text = format!("upstream:\n  base_url: http://127.0.0.1:9\n  api_key: k\nprobes:\n{probes}");
    let var = |_: &str| None;
    Arc::new(config::from_yaml(&text, "test", &Environment { var: &var, base_dir: ".".into() }).unwrap())
}

fn probe_yaml(name: &str, interval: &str, extra: &str) -> String {
    format!("  - name: {name}\n    interval: {interval}\n    timeout: 500ms\n    request: {{ path: /x }}\n{extra}")
}

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(&config::Labels::default()).unwrap())
}

/// The value of the series of `family` with the labels `labels` (`key=value` pairs), 0 if none.
fn counter(m: &Metrics, family: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = Scrape::parse(&m.render().unwrap());
    let mut selection = scrape.metric(family);
    for (k, v) in labels {
        selection = selection.label(k, v);
    }
    selection.sum()
}

struct Harness {
    tx: watch::Sender<Arc<Config>>,
    metrics: Arc<Metrics>,
    journal: observe::Journal,
    probes: Probes,
    shutdown: CancellationToken,
}

fn start(cfg: Arc<Config>, runner: Arc<FakeRunner>) -> Harness {
    let (tx, rx) = watch::channel(cfg);
    let metrics = metrics();
    let (observer, journal) = Observer::recording(metrics.clone());
    let probes = Probes::new(rx, observer, runner, Cluster::single(), Tasks::new(), Maintenance::new());
    let shutdown = CancellationToken::new();
    tokio::spawn(probes.clone().run(shutdown.clone()));
    Harness { tx, metrics, journal, probes, shutdown }
}

/// Advances paused time in small steps so that spawned tasks get to run.
async fn advance(total: Duration) {
    let step = Duration::from_millis(100);
    let mut left = total;
    while !left.is_zero() {
        let d = left.min(step);
        tokio::time::advance(d).await;
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        left -= d;
    }
}

#[tokio::test(start_paused = true)]
async fn runs_once_per_interval_after_a_jittered_start() {
    let runner = FakeRunner::new(Duration::from_millis(10), |n, _| ok(n));
    let h = start(config(&probe_yaml("a", "10s", "")), runner.clone());
    advance(Duration::from_secs(10)).await;
    assert_eq!(runner.runs("a"), 1, "the first run falls within the first interval");
    advance(Duration::from_secs(50)).await;
    assert!((5..=6).contains(&runner.runs("a")), "{} runs in 60 s at a 10 s interval", runner.runs("a"));
    assert_eq!(counter(&h.metrics, "modelslab_probe_success", &[("probe", "a")]), 1.0);
    assert_eq!(counter(&h.metrics, "modelslab_probe_runs_total", &[("probe", "a"), ("result", "failure")]), 0.0);
    // One event per run, after the one that scheduled the probe (a run just started ends first).
    advance(Duration::from_millis(100)).await;
    assert_eq!(h.journal.names()[0], "probe_scheduled");
    assert_eq!(h.journal.count("probe_run_finished") as u32, runner.runs("a"));
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_run_still_going_is_not_overlapped() {
    // Each run takes 2.5 s at a 1 s interval (the validator would refuse such a config; the
    // scheduler must still never overlap runs).
    let runner = FakeRunner::new(Duration::from_millis(2500), |n, _| ok(n));
    let mut cfg = config(&probe_yaml("slow", "1s", ""));
    Arc::make_mut(&mut cfg).probes[0].timeout = Duration::from_secs(10);
    let h = start(cfg, runner.clone());
    advance(Duration::from_secs(11)).await;
    let runs = runner.runs("slow");
    let overlaps = counter(&h.metrics, "modelslab_probe_skipped_total", &[("probe", "slow"), ("reason", "overlap")]);
    assert!((3..=5).contains(&runs), "{runs} runs");
    assert!(overlaps >= 6.0, "{overlaps} overlap skips");
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn the_hard_timeout_cuts_a_run() {
    let runner = FakeRunner::new(Duration::from_secs(5), |n, _| ok(n));
    let h = start(config(&probe_yaml("hang", "10s", "")), runner.clone());
    advance(Duration::from_secs(12)).await;
    // A run may have started just now: let it reach its timeout (500 ms) before counting.
    for _ in 0..10 {
        if !h.probes.status()[0].running {
            break;
        }
        advance(Duration::from_millis(100)).await;
    }
    let runs = f64::from(runner.runs("hang"));
    assert!(runs >= 1.0);
    assert_eq!(
        counter(&h.metrics, "modelslab_probe_failures_total", &[("probe", "hang"), ("reason", "timeout")]),
        runs
    );
    assert_eq!(counter(&h.metrics, "modelslab_probe_success", &[("probe", "hang")]), 0.0);
    let status = h.probes.status();
    assert_eq!(status[0].last.as_ref().unwrap().outcome.failure(), Some(ProbeFailure::Timeout));
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn max_runs_per_day_is_a_budget() {
    let runner = FakeRunner::new(Duration::from_millis(10), |n, _| ok(n));
    let h = start(config(&probe_yaml("paid", "1s", "    max_runs_per_day: 3\n")), runner.clone());
    advance(Duration::from_secs(10)).await;
    assert_eq!(runner.runs("paid"), 3);
    assert!(counter(&h.metrics, "modelslab_probe_skipped_total", &[("probe", "paid"), ("reason", "budget")]) >= 6.0);
    assert_eq!(h.probes.status()[0].runs_today, 3);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_retry_after_before_the_next_run() {
    // First run is rate limited with retry_after 5 s; later runs succeed.
    let runner = FakeRunner::new(Duration::from_millis(10), |n, i| {
        if i == 1 { failing(n, ErrorClass::RateLimited, Some(5.0)) } else { ok(n) }
    });
    let h = start(config(&probe_yaml("q", "1s", "")), runner.clone());
    advance(Duration::from_millis(1200)).await;
    assert_eq!(runner.runs("q"), 1);
    let status = h.probes.status();
    assert_eq!(status[0].backoff.map(|b| b.reason), Some(BackoffReason::RateLimited));
    advance(Duration::from_millis(3500)).await;
    assert_eq!(runner.runs("q"), 1, "no run during the wait");
    let backoffs = counter(&h.metrics, "modelslab_probe_skipped_total", &[("probe", "q"), ("reason", "backoff")]);
    assert!((3.0..=5.0).contains(&backoffs), "{backoffs} backoff skips");
    advance(Duration::from_secs(3)).await;
    assert!(runner.runs("q") >= 2, "runs again after retry_after");
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_402_pauses_credit_spending_probes_only() {
    let broke = |n: &str, _| failing(n, ErrorClass::PaymentRequired, None);
    let runner = FakeRunner::new(Duration::from_millis(10), broke);
    let probes = probe_yaml("paid", "10s", "    max_runs_per_day: 100\n") + &probe_yaml("free", "10s", "");
    let h = start(config(&probes), runner.clone());
    advance(Duration::from_secs(5 * 60)).await;
    assert_eq!(runner.runs("paid"), 1, "paused for 15 minutes after the 402");
    assert!(runner.runs("free") >= 29, "free probes keep running: {}", runner.runs("free"));
    advance(PAYMENT_PAUSE).await;
    assert!(runner.runs("paid") >= 2, "runs again after the pause");
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn reload_adds_removes_and_changes_probes_and_keeps_the_rest() {
    let runner = FakeRunner::new(Duration::from_millis(10), |n, _| ok(n));
    let h = start(
        config(&(probe_yaml("keep", "10s", "") + &probe_yaml("drop", "10s", "") + &probe_yaml("change", "10s", ""))),
        runner.clone(),
    );
    advance(Duration::from_secs(30)).await;
    let keep_before = runner.runs("keep");
    assert!(keep_before >= 2);
    assert_eq!(counter(&h.metrics, "modelslab_probe_success", &[("probe", "drop")]), 1.0);

    h.tx.send_replace(config(
        &(probe_yaml("keep", "10s", "") + &probe_yaml("change", "20s", "") + &probe_yaml("new", "10s", "")),
    ));
    advance(Duration::from_secs(20)).await;
    assert_eq!(runner.runs("keep"), keep_before + 2, "unchanged probe keeps its schedule");
    assert!(runner.runs("new") >= 1);
    let drop_runs = runner.runs("drop");
    advance(Duration::from_secs(30)).await;
    assert_eq!(runner.runs("drop"), drop_runs, "removed probe no longer runs");
    assert!(!h.metrics.render().unwrap().contains("probe=\"drop\""), "removed probe's series are gone");
    let names: Vec<String> = h.probes.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["keep", "change", "new"]);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn on_demand_runs_bypass_the_schedule() {
    let runner = FakeRunner::new(Duration::from_millis(10), |n, _| ok(n));
    let h = start(config(&probe_yaml("a", "1h", "")), runner.clone());
    advance(Duration::from_millis(100)).await;
    let report = h.probes.run_now("a").await.unwrap();
    assert!(report.outcome.is_success());
    assert!(h.probes.run_now("nope").await.is_none());
    assert_eq!(h.probes.status()[0].last.as_ref().unwrap().probe, "a");
    h.shutdown.cancel();
}
