//! Alerts that reach people: each drill runs the emulator, the agent (probes, proxy with
//! traffic, status page), a real Prometheus loading the shipped rules (rendered with shorter `for`
//! durations, the same expressions) and a real Alertmanager with the shipped example config (its
//! receivers pointed at this test, its group waits shortened), then breaks the API one way and
//! measures what a person receives: fault → page and recovery → resolved. The drills run side by
//! side, each on its own stack; the figures go to target/alerting-report.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::post;
use common::*;
use modelslab_sentinel::sim::{Faults, PageState, Scenario, Span};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-alerting-drill-key";
/// Every `for:` of the rendered copy (the files keep their production durations).
const FOR: Duration = Duration::from_secs(6);
const SCRAPE: Duration = Duration::from_secs(1);
const EVALUATION: Duration = Duration::from_secs(2);
/// Alertmanager's `group_wait` in the test's copy of the example.
const GROUP_WAIT: Duration = Duration::from_secs(1);
const GEN: &str = "/api/v6/images/text2img";

/// The longest a page may take: the rule's `for`, two evaluation intervals, and the pipeline's
/// fixed delays (one scrape, Alertmanager's group wait).
fn page_bound() -> Duration {
    FOR + 2 * EVALUATION + SCRAPE + GROUP_WAIT
}

/// One notification as the webhook receiver got it.
#[derive(Debug, Clone)]
struct Note {
    at: Instant,
    receiver: String,
    body: Value,
}

impl Note {
    fn alerts(&self) -> impl Iterator<Item = &Value> {
        self.body["alerts"].as_array().into_iter().flatten()
    }
}

type Notes = Arc<Mutex<Vec<Note>>>;

/// A child process killed on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server of a Debian package, quiet but for warnings, killed on drop.
fn spawn(program: &str, package: &str, args: &[&str]) -> Kill {
    let child = Command::new(program)
        .args(args)
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed: apt-get install {package} (scripts/test does): {e}"));
    Kill(child)
}

/// One drill's world.
struct Stack {
    sim: Emulator,
    agent: Agent,
    prometheus: String,
    alertmanager: String,
    notes: Notes,
    rate: Arc<AtomicU64>,
    traffic: CancellationToken,
    _receiver: Served,
    _processes: (Kill, Kill),
    _dir: tempfile::TempDir,
}

fn calm() -> Scenario {
    Scenario { sync_ratio: 1.0, job_duration: Span::fixed(Duration::from_millis(200)), ..Scenario::default() }
}

/// The rules with every `for` at [`FOR`] (the maintenance notice keeps its 0m).
fn rules(dir: &std::path::Path) -> String {
    let list = Command::new(BIN).args(["alert-rules", "--list"]).output().unwrap();
    let mut args = vec!["alert-rules".to_owned()];
    for line in String::from_utf8(list.stdout).unwrap().lines() {
        let name = line.split(" = ").next().unwrap();
        if name.ends_with("_for") && name != "maintenance_for" {
            args.push("--set".into());
            args.push(format!("{name}={}s", FOR.as_secs()));
        }
    }
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    write(dir, "rules.yml", &String::from_utf8(out.stdout).unwrap())
}

/// The shipped example, its receivers pointed at `receiver` and its waits shortened.
fn alertmanager_config(dir: &std::path::Path, receiver: &str) -> String {
    let text = std::fs::read_to_string("alerts/alertmanager.example.yml").unwrap();
    let text = text
        .replace("http://alert-relay.monitoring.svc:8080", receiver)
        .replace("group_wait: 30s", &format!("group_wait: {}s", GROUP_WAIT.as_secs()))
        .replace("group_interval: 5m", "group_interval: 1s");
    assert!(text.contains(receiver) && text.contains("group_interval: 1s"), "the example changed shape");
    write(dir, "alertmanager.yml", &text)
}

async fn ready(url: &str, what: &str) {
    eventually(Duration::from_secs(30), what, async || {
        http().get(format!("{url}/-/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

impl Stack {
    async fn start(scenario: Scenario, extra_config: &str) -> Stack {
        Stack::start_with(scenario, "", extra_config).await
    }

    /// With more probes (`  - name: …` items) and more sections.
    async fn start_with(scenario: Scenario, extra_probes: &str, extra_config: &str) -> Stack {
        let sim = emulator(scenario).await;
        let cfg = format!(
            "upstream:\n  base_url: {url}\n  api_key: {KEY}\n  timeout: 3s\nproxy:\n  enabled: true\n\
             probes:\n\
             \x20 - name: generate\n    interval: 2s\n    timeout: 1500ms\n    max_runs_per_day: 100000\n\
             \x20   request: {{ path: {GEN}, body: {{ model_id: flux, prompt: a lighthouse, width: 256, height: 256 }} }}\n\
             \x20   expect: {{ status: success }}\n{extra_probes}\
             status_page:\n  url: {url}/api/v2/summary.json\n  interval: 1s\n  timeout: 900ms\n{extra_config}",
            url = sim.url
        );
        let agent = Agent::start(&cfg).await;
        let dir = tempfile::tempdir().unwrap();
        let notes: Notes = Arc::default();
        let receiver = serve(
            axum::Router::new()
                .route(
                    "/{receiver}",
                    post(|State(notes): State<Notes>, Path(receiver): Path<String>, body: String| async move {
                        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        notes.lock().unwrap().push(Note { at: Instant::now(), receiver, body });
                    }),
                )
                .with_state(notes.clone()),
        )
        .await;

        let am_port = free_port();
        let am = spawn(
            "prometheus-alertmanager",
            "prometheus-alertmanager",
            &[
                &format!("--config.file={}", alertmanager_config(dir.path(), &receiver.url)),
                &format!("--storage.path={}", dir.path().join("am").display()),
                &format!("--web.listen-address=127.0.0.1:{am_port}"),
                "--cluster.listen-address=",
            ],
        );
        let alertmanager = format!("http://127.0.0.1:{am_port}");
        let prom_port = free_port();
        let target = agent.admin.trim_start_matches("http://").to_owned();
        let prom_cfg = write(
            dir.path(),
            "prometheus.yml",
            &format!(
                "global: {{ scrape_interval: {}s, evaluation_interval: {}s }}\nrule_files: [\"{}\"]\n\
                 alerting:\n  alertmanagers:\n    - static_configs: [ {{ targets: [\"127.0.0.1:{am_port}\"] }} ]\n\
                 scrape_configs:\n  - job_name: modelslab-sentinel\n    static_configs: [ {{ targets: [\"{target}\"] }} ]\n",
                SCRAPE.as_secs(),
                EVALUATION.as_secs(),
                rules(dir.path())
            ),
        );
        let prom = spawn(
            "prometheus",
            "prometheus",
            &[
                &format!("--config.file={prom_cfg}"),
                &format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
                &format!("--web.listen-address=127.0.0.1:{prom_port}"),
                "--rules.alert.resend-delay=1s",
            ],
        );
        let prometheus = format!("http://127.0.0.1:{prom_port}");
        ready(&alertmanager, "alertmanager ready").await;
        ready(&prometheus, "prometheus ready").await;

        let rate = Arc::new(AtomicU64::new(0));
        let traffic = CancellationToken::new();
        tokio::spawn(send_traffic(agent.proxy.clone(), rate.clone(), traffic.clone()));
        Stack {
            sim,
            agent,
            prometheus,
            alertmanager,
            notes,
            rate,
            traffic,
            _receiver: receiver,
            _processes: (am, prom),
            _dir: dir,
        }
    }

    fn set_rate(&self, per_second: u64) {
        self.rate.store(per_second, Ordering::Release);
    }

    async fn scenario(&self, s: &Scenario) {
        self.sim.set_scenario(&serde_json::to_string(s).unwrap()).await;
    }

    /// Waits until Prometheus has scraped the agent, the probe passes, the status page is read
    /// and no alert is pending or firing.
    async fn healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let one = |r: &[Value]| r.first().is_some_and(|s| s["value"][1] == "1");
            let up = self.query("up").await;
            let probe = self.query("modelslab_probe_success").await;
            let page = self.query("modelslab_status_page_up").await;
            let alerts = self.query("ALERTS").await;
            if one(&up) && one(&probe) && one(&page) && alerts.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not healthy within 60 s: up {up:?}, probe {probe:?}, status page {page:?}, alerts {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn query(&self, q: &str) -> Vec<Value> {
        query(&self.prometheus, q).await
    }

    /// The first notification at or after `since` with `alertname` in `status`.
    async fn note(&self, since: Instant, alertname: &str, status: &str, timeout: Duration) -> (Note, Value) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(found) = self.find(since, alertname, status) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // What Prometheus and Alertmanager saw, for the failure to say why.
        let alerts = self.query("ALERTS").await;
        let errors = self.query("sum by (source, error_class) (rate(modelslab_errors_total[5m]))").await;
        let requests = self.query("sum by (source) (rate(modelslab_requests_total[5m]))").await;
        let manager = self.alertmanager_alerts().await;
        let notes: Vec<String> = self.notes.lock().unwrap().iter().map(|n| format!("{n:?}")).collect();
        panic!(
            "not within {timeout:?}: {alertname} {status} notified\nALERTS {alerts:?}\nerrors {errors:?}\nrequests {requests:?}\nalertmanager {manager:?}\nnotes {notes:?}"
        );
    }

    fn find(&self, since: Instant, alertname: &str, status: &str) -> Option<(Note, Value)> {
        let notes = self.notes.lock().unwrap();
        notes.iter().filter(|n| n.at >= since).find_map(|n| {
            let alert = n.alerts().find(|a| a["labels"]["alertname"] == alertname && a["status"] == status)?;
            Some((n.clone(), alert.clone()))
        })
    }

    /// Notifications since `since` to `receiver` (firing ones).
    fn firing_to(&self, since: Instant, receivers: &[&str]) -> Vec<String> {
        let notes = self.notes.lock().unwrap();
        notes
            .iter()
            .filter(|n| n.at >= since && receivers.contains(&n.receiver.as_str()))
            .flat_map(|n| n.alerts().filter(|a| a["status"] == "firing").map(|a| a["labels"]["alertname"].to_string()))
            .collect()
    }

    /// Alertmanager's view of the alerts: name → (state, inhibited by anything).
    async fn alertmanager_alerts(&self) -> Vec<(String, String, bool)> {
        let r = http()
            .get(format!("{}/api/v2/alerts?active=true&silenced=true&inhibited=true", self.alertmanager))
            .send()
            .await;
        let Ok(r) = r else { return Vec::new() };
        let v: Value = r.json().await.unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["status"]["state"].as_str().unwrap_or("").to_owned(),
                    a["status"]["inhibitedBy"].as_array().is_some_and(|i| !i.is_empty()),
                )
            })
            .collect()
    }

    async fn stop(self) {
        self.traffic.cancel();
        self.agent.stop().await;
    }
}

/// An instant query's result (empty while Prometheus cannot answer).
async fn query(prometheus: &str, q: &str) -> Vec<Value> {
    let url = url::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), &[("query", q)]).unwrap();
    let Ok(r) = http().get(url).send().await else { return Vec::new() };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Generations through the proxy at the stack's rate (bounded: 15 minutes at most).
async fn send_traffic(proxy: String, rate: Arc<AtomicU64>, stop: CancellationToken) {
    let client = http();
    let body =
        serde_json::json!({ "key": KEY, "model_id": "flux", "prompt": "p", "width": 256, "height": 256 }).to_string();
    let deadline = Instant::now() + Duration::from_secs(900);
    while !stop.is_cancelled() && Instant::now() < deadline {
        let per_second = rate.load(Ordering::Acquire);
        if per_second == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let started = Instant::now();
        let _ = client
            .post(format!("{proxy}{GEN}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let gap = Duration::from_secs_f64(1.0 / per_second as f64).saturating_sub(started.elapsed());
        tokio::time::sleep(gap).await;
    }
}

/// One line of the README's table.
struct Row {
    drill: &'static str,
    alert: &'static str,
    to_page: Duration,
    to_resolved: Option<Duration>,
    traffic: &'static str,
}

/// A drill's first half: a healthy stack with traffic at `rate`, broken by `fault`, until
/// `alertname` reaches `receiver` with `severity` — in time. The stack, when the fault began, how
/// long the notification took, and the alert as notified.
struct Paged {
    stack: Stack,
    fault: Instant,
    to_page: Duration,
    alert: Value,
}

async fn paged(rate: u64, fault: &Scenario, alertname: &str, receiver: &str, severity: &str) -> Paged {
    let stack = Stack::start(calm(), "").await;
    stack.set_rate(rate);
    stack.healthy().await;
    let began = Instant::now();
    stack.scenario(fault).await;
    let (note, alert) = stack.note(began, alertname, "firing", Duration::from_secs(60)).await;
    assert_eq!((note.receiver.as_str(), alert["labels"]["severity"].as_str()), (receiver, Some(severity)), "{alert}");
    let anchor = format!("docs/runbook.md#{}", alertname.to_lowercase().replace("warning", "").replace("critical", ""));
    assert!(alert["annotations"]["runbook_url"].as_str().unwrap().ends_with(&anchor), "{alert}");
    let to_page = note.at - began;
    assert!(
        to_page <= page_bound(),
        "{alertname}: {to_page:?} > for {FOR:?} + 2 × {EVALUATION:?} + scrape + group wait"
    );
    Paged { stack, fault: began, to_page, alert }
}

async fn storm_5xx() -> Vec<Row> {
    let storm = Scenario { faults: Faults { server_error: 1.0, ..Faults::default() }, ..calm() };
    let Paged { stack, fault, to_page, alert } =
        paged(10, &storm, "ModelslabApiServerErrorsCritical", "page", "critical").await;
    let (ticket, _) = stack.note(fault, "ModelslabApiServerErrorsWarning", "firing", Duration::from_secs(30)).await;
    assert_eq!(ticket.receiver, "ticket", "warnings make tickets");
    let (probe, _) = stack.note(fault, "ModelslabProbeFailing", "firing", Duration::from_secs(30)).await;
    assert_eq!(probe.receiver, "page");
    assert_eq!(alert["labels"]["endpoint"], GEN, "the page names the endpoint: {alert}");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("server errors above 20 %") && summary.contains(GEN), "{summary}");
    // Recovery: the errors stay in the 5-minute window; good traffic dilutes them.
    stack.set_rate(100);
    let recovery = Instant::now();
    stack.scenario(&calm()).await;
    let (resolved, _) =
        stack.note(recovery, "ModelslabApiServerErrorsCritical", "resolved", Duration::from_secs(120)).await;
    stack.stop().await;
    vec![Row {
        drill: "5xx storm (every generation 500)",
        alert: "ModelslabApiServerErrorsCritical",
        to_page,
        to_resolved: Some(resolved.at - recovery),
        traffic: "10 req/s in the storm, 100 req/s after",
    }]
}

async fn out_of_credits() -> Vec<Row> {
    let broke = Scenario { wallet: modelslab_sentinel::sim::Wallet { balance: 0.0, cost: 1.0 }, ..calm() };
    let Paged { stack, to_page, .. } = paged(5, &broke, "ModelslabCreditsExhausted", "page", "critical").await;
    // Credits added: the proxy's traffic succeeds again; the paid probe stays paused.
    let before = stack.agent.metrics();
    let ok =
        |m: &Scrape| m.metric("modelslab_requests_total").label("source", "proxy").label("outcome", "success").sum();
    let runs = |m: &Scrape| m.metric("modelslab_probe_runs_total").label("probe", "generate").sum();
    stack.scenario(&calm()).await;
    eventually(Duration::from_secs(20), "proxy traffic succeeds again", async || {
        ok(&stack.agent.metrics()) >= ok(&before) + 20.0
    })
    .await;
    assert_eq!(runs(&stack.agent.metrics()), runs(&before), "the paid probe stays paused after a 402");
    assert!(stack.agent.metrics().metric("modelslab_probe_skipped_total").label("reason", "backoff").sum() > 0.0);
    stack.stop().await;
    vec![Row {
        drill: "out of credits (402 on the probe and the proxy)",
        alert: "ModelslabCreditsExhausted",
        to_page,
        to_resolved: None,
        traffic: "5 req/s",
    }]
}

async fn queue_full() -> Vec<Row> {
    // Jobs that take 12 s fill the account's queue of 5: the rest get 429 with retry_after.
    let slow = Scenario { sync_ratio: 0.0, job_duration: Span::fixed(Duration::from_secs(12)), ..calm() };
    let Paged { stack, fault, to_page, .. } = paged(10, &slow, "ModelslabRateLimited", "ticket", "warning").await;
    let recovery = Instant::now();
    stack.scenario(&calm()).await;
    stack.set_rate(100);
    let (resolved, _) = stack.note(recovery, "ModelslabRateLimited", "resolved", Duration::from_secs(120)).await;
    let server_errors = stack.firing_to(fault, &["page", "ticket"]);
    assert!(
        !server_errors.iter().any(|a| a.contains("ServerErrors")),
        "a full queue is not a 5xx storm: {server_errors:?}"
    );
    stack.stop().await;
    vec![Row {
        drill: "queue full (429 with retry_after)",
        alert: "ModelslabRateLimited",
        to_page,
        to_resolved: Some(resolved.at - recovery),
        traffic: "10 req/s in the storm, 100 req/s after (the queued jobs end within 12 s)",
    }]
}

/// A second client of the same key fills the account's queue of 5 *without* the proxy, one job
/// every 10 s: the agent polls `request_count` (every 2 s, the API's 30 a minute) and the ticket
/// comes before that client's first 429; the poller never gets a 429 of its own.
async fn queue_filled_outside_the_proxy() -> Vec<Row> {
    let stack = Stack::start(calm(), "account:\n  queue: { enabled: true, interval: 2s, limit: 5 }\n").await;
    stack.set_rate(2);
    stack.healthy().await;
    // Its video model always queues, for two minutes; the probe's and the traffic's images
    // still answer at once.
    let videos = Scenario {
        model_sync: [("cogvideox".to_owned(), 0.0)].into(),
        job_duration: Span::fixed(Duration::from_secs(120)),
        ..calm()
    };
    stack.scenario(&videos).await;
    let other = serde_json::json!({ "key": KEY, "model_id": "cogvideox", "prompt": "a wave" }).to_string();
    let began = Instant::now();
    let (mut at_80, mut first_429) = (None, None);
    for n in 1..=8 {
        let (code, answer) = common::post(&format!("{}/api/v6/video/text2video", stack.sim.url), &other).await;
        if code == 429 {
            assert!(answer.contains("Maximum 5 queued requests"), "{answer}");
            first_429 = Some(Instant::now());
            break;
        }
        assert!(answer.contains("processing"), "{code} {answer}");
        if n == 4 {
            at_80 = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let (at_80, first_429) = (at_80.unwrap(), first_429.expect("the sixth job is refused"));
    let (note, alert) = stack.note(began, "ModelslabQueueNearLimit", "firing", Duration::from_millis(100)).await;
    assert_eq!((note.receiver.as_str(), alert["labels"]["severity"].as_str()), ("ticket", Some("warning")), "{alert}");
    assert!(note.at < first_429, "the ticket came {:?} after the first 429", note.at - first_429);
    let to_page = note.at.saturating_duration_since(at_80);
    let poll = Duration::from_secs(2);
    assert!(to_page <= page_bound() + poll, "{to_page:?} > the page bound and one poll interval");
    let stats: Value = serde_json::from_str(&get(&format!("{}/_sim/stats", stack.sim.url)).await.1).unwrap();
    assert!(stats["request_count"].as_u64().unwrap() >= 20, "{stats}");
    assert_eq!(stats["request_count_refused"], 0, "the poller never got a 429 of its own: {stats}");
    stack.stop().await;
    vec![Row {
        drill: format!(
            "queue filled by a client outside the proxy (ticket {:.0} s before its first 429)",
            (first_429 - note.at).as_secs_f64()
        )
        .leak(),
        alert: "ModelslabQueueNearLimit",
        to_page,
        to_resolved: None,
        traffic: "2 req/s through the proxy; the other client 1 job / 10 s direct (from its 4th job, 80 %)",
    }]
}

async fn unacknowledged_then_declared() -> Vec<Row> {
    let lag = Duration::from_secs(25);
    let outage = Scenario {
        faults: Faults { server_error: 1.0, ..Faults::default() },
        status_page: PageState::MajorOutage,
        status_page_lag: lag,
        ..calm()
    };
    let Paged { stack, fault, to_page, .. } =
        paged(10, &outage, "ModelslabOutageUnacknowledged", "page", "critical").await;
    assert!(to_page < lag, "before the vendor says so");
    // The unacknowledged page ends in Prometheus once the vendor has spoken. Alertmanager sends no
    // resolved notification for it: it is inhibited by then, and an inhibited alert's notifications,
    // resolved ones included, are held back.
    eventually(lag + Duration::from_secs(30), "the unacknowledged page ends", async || {
        stack.query("ALERTS{alertname=\"ModelslabOutageUnacknowledged\"}").await.is_empty()
    })
    .await;
    let unacknowledged_ended = Instant::now().saturating_duration_since(fault + lag);
    // The vendor declares the outage: its page stands for ours.
    let (declared, _) = stack.note(fault, "ModelslabStatusPageOutage", "firing", Duration::from_secs(60)).await;
    let declared_after = declared.at - fault;
    assert!(declared_after >= lag, "{declared_after:?}");
    let mut seen = Vec::new();
    eventually(Duration::from_secs(20), "our outage pages held back by the vendor's", async || {
        seen = stack.alertmanager_alerts().await;
        ["ModelslabApiServerErrorsCritical", "ModelslabProbeFailing"]
            .iter()
            .all(|name| seen.iter().any(|(n, state, inhibited)| n == name && state == "suppressed" && *inhibited))
    })
    .await;
    assert!(
        seen.iter().any(|(n, state, _)| n == "ModelslabStatusPageOutage" && state == "active"),
        "the vendor's page is the one active: {seen:?}"
    );
    let since_declared = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ours = stack.firing_to(since_declared, &["page"]);
    assert!(
        ours.iter().all(|a| a.contains("ModelslabStatusPageOutage")),
        "only the vendor's page is sent while it lasts: {ours:?}"
    );
    stack.stop().await;
    vec![
        Row {
            drill: "outage the vendor has not acknowledged (page lags 25 s)",
            alert: "ModelslabOutageUnacknowledged",
            to_page,
            to_resolved: Some(unacknowledged_ended),
            traffic: "10 req/s; \"resolved\": it ends in Prometheus after the page's change (Alertmanager holds back the resolve of an inhibited alert)",
        },
        Row {
            drill: "… then declared on the status page",
            alert: "ModelslabStatusPageOutage",
            to_page: declared_after - lag,
            to_resolved: None,
            traffic: "time from the page's change; it inhibits the 5xx, probe and unacknowledged pages",
        },
    ]
}

async fn maintenance_window() -> Vec<Row> {
    let opens_in = Duration::from_secs(12);
    let length = Duration::from_secs(40);
    let start = chrono::Utc::now() + chrono::Duration::from_std(opens_in).unwrap();
    let start_at = Instant::now() + opens_in;
    let window = format!(
        "maintenance:\n  pause_probes: paid\n  windows:\n    - {{ name: drill, start: \"{}\", duration: {}s }}\n",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        length.as_secs()
    );
    let stack = Stack::start(calm(), &window).await;
    stack.set_rate(10);
    stack.healthy().await;
    // The vendor's maintenance breaks generations while the window lasts.
    let (note, alert) =
        stack.note(Instant::now(), "ModelslabMaintenance", "firing", opens_in + Duration::from_secs(20)).await;
    let to_page = note.at.saturating_duration_since(start_at);
    assert_eq!((note.receiver.as_str(), alert["labels"]["severity"].as_str()), ("notice", Some("info")));
    assert_eq!(alert["labels"]["source"], "config");
    let during = Instant::now();
    stack.scenario(&Scenario { faults: Faults { server_error: 1.0, ..Faults::default() }, ..calm() }).await;
    eventually(Duration::from_secs(25), "5xx alerts firing in Prometheus, held back by the window", async || {
        let seen = stack.alertmanager_alerts().await;
        seen.iter()
            .any(|(n, state, inhibited)| n == "ModelslabApiServerErrorsCritical" && state == "suppressed" && *inhibited)
    })
    .await;
    let skipped = stack.agent.metrics().metric("modelslab_probe_skipped_total").label("reason", "maintenance").sum();
    assert!(skipped > 0.0, "the paid probe pauses in the window");
    let status: Value = serde_json::from_str(&get(&format!("{}/api/v1/status", stack.agent.admin)).await.1).unwrap();
    assert_eq!(status["maintenance"]["window"], "drill", "{}", status["maintenance"]);
    // Before the window ends: the API is back and good traffic dilutes the errors.
    let left = (start_at + length).saturating_duration_since(Instant::now());
    tokio::time::sleep(left.saturating_sub(Duration::from_secs(8))).await;
    stack.scenario(&calm()).await;
    stack.set_rate(100);
    tokio::time::sleep((start_at + length).saturating_duration_since(Instant::now())).await;
    let pages = stack.firing_to(during, &["page", "ticket"]);
    assert!(pages.is_empty(), "nothing but the notice during the window: {pages:?}");
    let end = start_at + length;
    let (resolved, _) = stack.note(end, "ModelslabMaintenance", "resolved", Duration::from_secs(30)).await;
    let runs =
        |m: &Scrape| m.metric("modelslab_probe_runs_total").label("probe", "generate").label("result", "success").sum();
    let after = runs(&stack.agent.metrics());
    eventually(Duration::from_secs(15), "the paid probe runs again after the window", async || {
        runs(&stack.agent.metrics()) > after
    })
    .await;
    stack.stop().await;
    vec![Row {
        drill: "maintenance window (config, 40 s; 5xx inside it)",
        alert: "ModelslabMaintenance",
        to_page,
        to_resolved: Some(resolved.at.saturating_duration_since(end)),
        traffic: "10 req/s, 100 req/s from 8 s before its end; pages held back, paid probe paused",
    }]
}

async fn vendor_maintenance() -> Vec<Row> {
    let stack = Stack::start(calm(), "").await;
    stack.healthy().await;
    let announced = Instant::now();
    let (starts_in, lasts) = (Duration::from_secs(8), Duration::from_secs(20));
    let planned = Scenario {
        status_page_maintenance: Some(modelslab_sentinel::sim::PageMaintenance { starts_in, lasts }),
        ..calm()
    };
    stack.scenario(&planned).await;
    let vendor = |m: &Scrape| m.metric("modelslab_maintenance_active").label("source", "vendor").value();
    // Announced but not begun: nothing changes.
    tokio::time::sleep(starts_in / 2).await;
    assert_eq!(vendor(&stack.agent.metrics()), Some(0.0), "a scheduled maintenance is not one in progress");
    let start = announced + starts_in;
    let (note, alert) =
        stack.note(announced, "ModelslabMaintenance", "firing", starts_in + Duration::from_secs(20)).await;
    assert_eq!((note.receiver.as_str(), alert["labels"]["source"].as_str()), ("notice", Some("vendor")));
    let skipped = |m: &Scrape| m.metric("modelslab_probe_skipped_total").label("reason", "maintenance").sum();
    eventually(Duration::from_secs(10), "the paid probe pauses", async || skipped(&stack.agent.metrics()) > 0.0).await;
    let end = start + lasts;
    let (resolved, _) = stack.note(end, "ModelslabMaintenance", "resolved", lasts + Duration::from_secs(30)).await;
    assert_eq!(vendor(&stack.agent.metrics()), Some(0.0));
    stack.stop().await;
    vec![Row {
        drill: "the vendor's scheduled maintenance (announced 8 s ahead, 20 s long)",
        alert: "ModelslabMaintenance",
        to_page: note.at.saturating_duration_since(start),
        to_resolved: Some(resolved.at.saturating_duration_since(end)),
        traffic: "none; the status page polled every second",
    }]
}

async fn no_flapping() -> Vec<Row> {
    let slo = "slos:\n  - { name: proxy-availability, objective: 99, min_events: 50, sli: { requests: { source: proxy } } }\n";
    let stack = Stack::start(calm(), slo).await;
    // The SLO judges proxy traffic only: until some has passed, `ModelslabSloNoEvents` is right to
    // fire. A few good requests, no more than it takes for Prometheus to count them, to another
    // endpoint than the burst's (whose server-error share stays among under 10 requests).
    let balance = serde_json::json!({ "key": KEY }).to_string();
    eventually(Duration::from_secs(60), "the SLO counts its first events", async || {
        let _ = http().post(format!("{}/api/wallet_balance", stack.agent.proxy)).body(balance.clone()).send().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        !stack.query("slo:sli_events:count1h > 0").await.is_empty()
    })
    .await;
    stack.healthy().await;
    let since = Instant::now();
    // One failed probe run: the next one passes before `for` is over.
    let broken = Scenario { faults: Faults { server_error: 1.0, ..Faults::default() }, ..calm() };
    stack.scenario(&broken).await;
    let failures =
        |m: &Scrape| m.metric("modelslab_probe_runs_total").label("probe", "generate").label("result", "failure").sum();
    let before = failures(&stack.agent.metrics());
    eventually(Duration::from_secs(10), "one probe run failed", async || failures(&stack.agent.metrics()) > before)
        .await;
    stack.scenario(&calm()).await;
    // A burst of 5 server errors through the proxy, under the rules' and the SLO's minimums.
    stack.scenario(&broken).await;
    let body = serde_json::json!({ "key": KEY, "model_id": "flux", "prompt": "p" }).to_string();
    for _ in 0..5 {
        let _ = http().post(format!("{}{GEN}", stack.agent.proxy)).body(body.clone()).send().await;
    }
    stack.scenario(&calm()).await;
    tokio::time::sleep(3 * FOR + 2 * EVALUATION).await;
    let firing = stack.query("ALERTS{alertstate=\"firing\"}").await;
    let status = get(&format!("{}/api/v1/status", stack.agent.admin)).await.1;
    assert!(firing.is_empty(), "nothing fires: {firing:?}\n{status}");
    let sent = stack.firing_to(since, &["page", "ticket", "notice"]);
    assert!(sent.is_empty(), "nobody is notified: {sent:?}");
    assert!(
        failures(&stack.agent.metrics()) >= 1.0
            && stack.agent.metrics().metric("modelslab_errors_total").label("source", "proxy").sum() >= 5.0,
        "the faults happened"
    );
    stack.stop().await;
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_page_a_person_through_a_real_prometheus_and_alertmanager() {
    let started = Instant::now();
    let (a, b, c, d, e, f, g, h) = tokio::join!(
        storm_5xx(),
        out_of_credits(),
        queue_full(),
        queue_filled_outside_the_proxy(),
        unacknowledged_then_declared(),
        maintenance_window(),
        vendor_maintenance(),
        no_flapping()
    );
    let rows: Vec<Row> = [a, b, c, d, e, f, g, h].into_iter().flatten().collect();
    let mut report =
        "| drill | alert | fault → notification | recovery → resolved | traffic |\n|---|---|---|---|---|\n".to_owned();
    for r in &rows {
        report.push_str(&format!(
            "| {} | `{}` | {:.1} s | {} | {} |\n",
            r.drill,
            r.alert,
            r.to_page.as_secs_f64(),
            r.to_resolved.map_or("—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            r.traffic
        ));
    }
    report.push_str(&format!(
        "\n`for:` {}s in the rendered copy, scrape {}s, evaluation {}s, group_wait {}s: a page is due within {:.0} s. \
         All drills side by side in {:.0} s.\n",
        FOR.as_secs(),
        SCRAPE.as_secs(),
        EVALUATION.as_secs(),
        GROUP_WAIT.as_secs(),
        page_bound().as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    let _ = std::fs::create_dir_all("target");
    std::fs::write("target/alerting-report.md", &report).unwrap();
    println!("{report}");
}

/// The alerts the drills above see notified.
const DRILLED: &[&str] = &[
    "ModelslabApiServerErrorsCritical",
    "ModelslabApiServerErrorsWarning",
    "ModelslabProbeFailing",
    "ModelslabCreditsExhausted",
    "ModelslabRateLimited",
    "ModelslabQueueNearLimit",
    "ModelslabOutageUnacknowledged",
    "ModelslabStatusPageOutage",
    "ModelslabMaintenance",
];

/// The alerts the next test fires, phase by phase.
const PHASE_BROKEN: &[&str] = &[
    "ModelslabAuthFailing",
    "ModelslabJobsOverEta",
    "ModelslabJobsFailing",
    "ModelslabOutputChecksFailing",
    "ModelslabWebhooksMissing",
    "ModelslabStatusPageDegraded",
    "ModelslabSloBurnRatePage",
    "ModelslabSloBurnRateTicket",
    "ModelslabSloNoEvents",
    "ModelslabCreditsLow",
    "ModelslabCreditsRunOutSoon",
    "ModelslabSentinelConfigReloadFailed",
    "ModelslabModelDelisted",
];
/// (`ModelslabQueueNearLimit` fires here too, on this agent's own jobs in flight without
/// `account.queue`.)
const PHASE_UNREADABLE: &[&str] = &["ModelslabStatusPageUnreachable", "ModelslabBalancePollFailing"];
const PHASE_DOWN: &[&str] = &["ModelslabSentinelDown"];

/// Every alert of the rule file.
fn every_alert() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string("alerts/modelslab-sentinel.rules.yml")
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_alert_fires_in_a_live_prometheus() {
    let all: Vec<&str> = [DRILLED, PHASE_BROKEN, PHASE_UNREADABLE, PHASE_DOWN].concat();
    assert_eq!(
        every_alert(),
        all.iter().map(|s| s.to_string()).collect(),
        "every alert of the rule file is fired by a test against a live Prometheus"
    );
    // Jobs run 300 ms against an eta of a fifth of that, half of them fail, their files are blank,
    // their webhooks never come; the credits are low and falling; the vendor admits degradation.
    let broken = Scenario {
        sync_ratio: 0.0,
        job_duration: Span::fixed(Duration::from_millis(300)),
        eta_bias: 0.2,
        failure_ratio: 0.5,
        status_page: PageState::DegradedPerformance,
        wallet: modelslab_sentinel::sim::Wallet { balance: 4.0, cost: 0.002 },
        catalogue_drops: vec![modelslab_sentinel::sim::CatalogueDrop {
            model: "claude-sonnet".into(),
            after: Duration::from_secs(8),
        }],
        outputs: modelslab_sentinel::sim::Outputs { blank: 1.0, ..Default::default() },
        webhooks: modelslab_sentinel::sim::Hooks { drop: 1.0, ..Default::default() },
        ..calm()
    };
    let follow = "follow: { poll_interval: 100ms, max_wait: 2s }";
    let probes = format!(
        "  - name: jobs\n    interval: 3s\n    timeout: 2500ms\n    max_runs_per_day: 100000\n\
         \x20   request: {{ path: {GEN}, body: {{ model_id: flux, prompt: p, width: 256, height: 256 }} }}\n    {follow}\n\
         \x20 - name: outputs\n    interval: 3s\n    timeout: 2500ms\n    max_runs_per_day: 100000\n\
         \x20   request: {{ path: {GEN}, body: {{ model_id: flux, prompt: p, width: 256, height: 256 }} }}\n    {follow}\n\
         \x20   expect: {{ output: {{ count: 1, not_blank: true, timeout: 2s }} }}\n\
         \x20 - name: hooks\n    interval: 3s\n    timeout: 2500ms\n    max_runs_per_day: 100000\n\
         \x20   request: {{ path: {GEN}, body: {{ model_id: flux, prompt: p, width: 256, height: 256 }} }}\n\
         \x20   follow: {{ poll_interval: 100ms, max_wait: 2s, webhook: true }}\n"
    );
    let sections = "account:\n  balance: { enabled: true, interval: 1s, timeout: 900ms }\n\
        \x20 models: { enabled: true, interval: 10s }\n\
        labels:\n  models: [flux, claude-sonnet]\n\
        webhooks:\n  listen: 127.0.0.1:0\n  grace: 1s\n\
        slos:\n\
        \x20 - { name: jobs-ok, objective: 99, min_events: 1, sli: { jobs: { source: any, max_duration: 60s } } }\n\
        \x20 - { name: idle, objective: 99, sli: { requests: { source: proxy, endpoints: [/api/v6/video/text2video] } } }\n";
    let stack = Stack::start_with(broken, &probes, sections).await;
    let prometheus = stack.prometheus.clone();
    let fired = async |names: &[&str], within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let firing: Vec<String> =
                query(&prometheus, "count by (alertname) (count_over_time(ALERTS{alertstate=\"firing\"}[30m]))")
                    .await
                    .iter()
                    .map(|r| r["metric"]["alertname"].as_str().unwrap_or("").to_owned())
                    .collect();
            let missing: Vec<&str> = names.iter().copied().filter(|n| !firing.iter().any(|f| f == n)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "not fired within {within:?}: {missing:?} (fired: {firing:?})");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    // Live traffic with a revoked key (one first, so that Prometheus sees its counter grow); a
    // reload that fails.
    eventually(Duration::from_secs(30), "scraped", async || !query(&prometheus, "up == 1").await.is_empty()).await;
    for i in 0..5 {
        if i == 1 {
            tokio::time::sleep(3 * SCRAPE).await;
        }
        let body = serde_json::json!({ "key": "sim-invalid-drill", "model_id": "flux", "prompt": "p" }).to_string();
        let (code, _) = common::post(&format!("{}{GEN}", stack.agent.proxy), &body).await;
        assert_eq!(code, 401);
    }
    assert!(stack.agent.reload("upstream: [not, a, mapping]\n").await.is_err());
    fired(PHASE_BROKEN, Duration::from_secs(90)).await;

    // The status page and the balance cannot be read; jobs of 30 s fill the account's queue.
    let good = stack.agent.text.clone();
    let unreadable = good
        .replace("/api/v2/summary.json", "/api/v2/gone.json")
        .replace("  balance: { enabled: true,", "  balance: { enabled: true, path: /api/v6/gone,");
    assert_ne!(unreadable, good);
    stack.agent.reload(&unreadable).await.unwrap();
    stack.scenario(&Scenario { sync_ratio: 0.0, job_duration: Span::fixed(Duration::from_secs(30)), ..calm() }).await;
    // A key of its own (a plan with 10 slots), so that the probes' jobs take none of them.
    let body = serde_json::json!({ "key": "sim-standard-queue", "model_id": "flux", "prompt": "p" }).to_string();
    let mut refused = 0;
    for _ in 0..13 {
        let (code, answer) = common::post(&format!("{}{GEN}", stack.agent.proxy), &body).await;
        refused += u32::from(code == 429 || answer.contains("queued requests"));
    }
    assert!(refused > 0, "the queue filled");
    fired(&[PHASE_UNREADABLE, &["ModelslabQueueNearLimit"]].concat(), Duration::from_secs(60)).await;

    // The agent stops: Prometheus cannot scrape it.
    let Stack { agent, traffic, _processes, .. } = stack;
    traffic.cancel();
    agent.stop().await;
    fired(PHASE_DOWN, Duration::from_secs(40)).await;
    drop(_processes);
}
