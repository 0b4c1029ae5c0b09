//! The agent as a process: `run` on port 0, scraped over HTTP; reload by SIGHUP and POST;
//! graceful SIGTERM; the key kept out of everything it shows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use modelslab_sentinel::sim::{Hooks, Outputs, Scenario, Span as SimSpan};

const KEY: &str = "sk-canary-agent-7f3a9c";

fn config(models: &str, level: &str) -> String {
    format!(
        "upstream:\n  base_url: http://127.0.0.1:9\n  api_key: {KEY}\nadmin:\n  listen: 127.0.0.1:0\nlabels:\n  models: [{models}]\ntelemetry:\n  log_level: {level}\n"
    )
}

#[tokio::test]
async fn run_serves_metrics_health_and_status_on_port_0() {
    let agent = Process::agent(&config("flux", "info"), &[], &[]);
    let (base, path) = (agent.admin.clone(), agent.config_path.clone());

    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));
    assert_eq!(get(&format!("{base}/readyz")).await, (200, "ready\n".into()));
    let (code, index) = get(&format!("{base}/")).await;
    assert_eq!(code, 200);
    assert!(index.contains("/metrics") && index.contains("/-/reload"));
    assert_eq!(get(&format!("{base}/nope")).await.0, 404);

    let (code, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    let metrics = Scrape::parse(&text);
    assert_eq!(
        metrics.metric("modelslab_sentinel_build_info").label("version", env!("CARGO_PKG_VERSION")).value(),
        Some(1.0)
    );
    assert_eq!(metrics.metric("modelslab_sentinel_config_last_reload_success").value(), Some(1.0));
    assert!(metrics.metric("modelslab_sentinel_config_last_reload_success_timestamp_seconds").value().unwrap() > 1.7e9);
    assert!(metrics.metric("process_resident_memory_bytes").value().unwrap() > 0.0);
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("promtool check metrics:\n{e}\n{text}"));

    let (code, status) = get(&format!("{base}/api/v1/status")).await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["config"]["last_reload_success"], true);
    assert_eq!(status["config"]["file"], path.as_str());
}

#[tokio::test]
async fn a_bad_reload_keeps_the_running_config_and_a_good_one_applies() {
    let running = Process::agent(&config("flux", "info"), &[], &[]);
    let (agent, base, dir) = (&running.process, running.admin.clone(), running.dir.path());

    // SIGHUP with a broken file: reported, old config kept, still serving.
    write(dir, "sentinel.yaml", "upstream:\n  base_url: http://127.0.0.1:9\n  timeout: forever\n");
    agent.signal("HUP");
    eventually(Duration::from_secs(10), "reload failure shows in metrics", async || {
        scrape(&base).await.metric("modelslab_sentinel_config_last_reload_success").value() == Some(0.0)
    })
    .await;
    let status: serde_json::Value = serde_json::from_str(&get(&format!("{base}/api/v1/status")).await.1).unwrap();
    let error = status["config"]["last_reload_error"].as_str().unwrap();
    assert!(error.contains("sentinel.yaml:3: upstream.timeout: invalid duration `forever`"), "{error}");
    assert!(agent.log().contains("configuration reload failed, keeping the running configuration"), "{}", agent.log());
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // POST /-/reload with the same broken file: 400 with the problems.
    let (code, body) = post(&format!("{base}/-/reload"), "").await;
    assert_eq!(code, 400);
    assert!(body.contains("upstream.timeout") && body.contains("the running configuration is unchanged"), "{body}");

    // A good file: applied, and the change that needs a restart is named.
    let good = config("flux, sdxl", "info").replace("127.0.0.1:0", "127.0.0.1:1");
    write(dir, "sentinel.yaml", &good);
    assert_eq!(post(&format!("{base}/-/reload"), "").await, (200, "configuration reloaded\n".into()));
    let metrics = scrape(&base).await;
    assert_eq!(metrics.metric("modelslab_sentinel_config_last_reload_success").value(), Some(1.0));
    let status: serde_json::Value = serde_json::from_str(&get(&format!("{base}/api/v1/status")).await.1).unwrap();
    assert_eq!(status["config"]["last_reload_error"], serde_json::Value::Null);
    assert_eq!(status["config"]["restart_required_for"], serde_json::json!(["admin.listen"]));
    assert!(agent.log().contains("only take effect after a restart"));
    // Reloading is only by POST.
    assert_eq!(get(&format!("{base}/-/reload")).await.0, 405);
}

#[tokio::test]
async fn sigterm_and_sigint_stop_gracefully_with_exit_0() {
    for sig in ["TERM", "INT"] {
        let running = Process::agent(&config("flux", "info"), &["--grace-period", "5s"], &[]);
        assert_eq!(get(&format!("{}/readyz", running.admin)).await.0, 200);
        let mut agent = running.process;
        agent.signal(sig);
        let status = agent.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIG{sig}; log:\n{}", agent.log());
        assert!(agent.log().contains("stopped"));
    }
}

#[tokio::test]
async fn runtime_failures_exit_1_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "sentinel.yaml",
        &config("flux", "info").replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    let (code, _, stderr) = run_to_end(&["run", "--config", &path], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on admin.listen 127.0.0.1:{port}")), "{stderr}");
}

#[tokio::test]
async fn the_key_never_appears_in_logs_metrics_or_admin_endpoints() {
    let text = config("flux", "trace") + "  log_format: json\n";
    let running = Process::agent(&text, &[], &[]);
    let (mut agent, base, dir) = (running.process, running.admin, running.dir);
    let mut seen = String::new();
    for p in ["/metrics", "/api/v1/status", "/", "/healthz", "/readyz"] {
        seen.push_str(&get(&format!("{base}{p}")).await.1);
    }
    // A failed reload logs its problems; they must not carry the key either.
    write(
        dir.path(),
        "sentinel.yaml",
        &text.replace("base_url: http://127.0.0.1:9", "base_url: http://127.0.0.1:9/path"),
    );
    seen.push_str(&post(&format!("{base}/-/reload"), "").await.1);
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10));
    let log = agent.log();
    assert!(log.contains("\"level\":\"TRACE\"") || log.contains("\"level\":\"INFO\""), "JSON logs expected:\n{log}");
    assert!(!seen.contains(KEY), "the key was served:\n{seen}");
    assert!(!log.contains(KEY), "the key was logged:\n{log}");
}

#[tokio::test]
async fn posts_need_the_admin_token_when_one_is_set_and_gets_stay_open() {
    let token = "s3cret-admin-token-81f2";
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "admin-token", &format!("{token}\n"));
    for admin in [format!("  token: {token}\n"), format!("  token_file: {token_file}\n")] {
        let text = config("flux", "debug")
            .replace("admin:\n  listen: 127.0.0.1:0\n", &format!("admin:\n  listen: 127.0.0.1:0\n{admin}"));
        let agent = Process::agent(&text, &[], &[]);
        let base = &agent.admin;
        let c = http();
        let reload = format!("{base}/-/reload");
        let refused = c.post(&reload).send().await.unwrap();
        assert_eq!(refused.status(), 401, "no token");
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        assert_eq!(c.post(&reload).bearer_auth("wrong").send().await.unwrap().status(), 401);
        assert_eq!(c.post(&reload).bearer_auth(token).send().await.unwrap().status(), 200);
        let run = format!("{base}/api/v1/probes/nope/run");
        assert_eq!(c.post(&run).send().await.unwrap().status(), 401);
        assert_eq!(c.post(&run).bearer_auth(token).send().await.unwrap().status(), 404, "through, to an unknown probe");
        for path in ["/metrics", "/healthz", "/readyz", "/api/v1/status", "/"] {
            let (code, body) = get(&format!("{base}{path}")).await;
            assert_eq!(code, 200, "{path} stays open");
            assert!(!body.contains(token), "{path} shows the token");
        }
        let status: serde_json::Value = serde_json::from_str(&get(&format!("{base}/api/v1/status")).await.1).unwrap();
        assert_eq!(status["config"]["admin_access"], "token");
        let (code, shown, _) = run_to_end(&["check-config", "--config", &agent.config_path], &[]);
        assert_eq!(code, 0);
        assert!(!shown.contains(token) && !agent.process.log().contains(token), "the token leaked:\n{shown}");
    }
    // Without a token, loopback clients (as this test is) may POST.
    let open = Process::agent(&config("flux", "info"), &[], &[]);
    assert_eq!(post(&format!("{}/-/reload", open.admin), "").await.0, 200);
    let status: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/api/v1/status", open.admin)).await.1).unwrap();
    assert_eq!(status["config"]["admin_access"], "loopback_only");
}

/// The log after the line containing `mark`.
fn after<'a>(log: &'a str, mark: &str) -> &'a str {
    log.find(mark).map_or("", |i| &log[i..])
}

/// Waits until the probe `name` is in the middle of a run.
async fn until_running(admin: &str, name: &str) {
    eventually(Duration::from_secs(20), "the probe is running", async || {
        let (_, body) = get(&format!("{admin}/api/v1/status")).await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status["probes"].as_array().into_iter().flatten().any(|p| p["name"] == name && p["running"] == true)
    })
    .await;
}

/// Runs the agent on `text` (grace period 10 s), sends SIGTERM `into` a run of `probe`, and
/// waits for it to exit 0: its log, and how long it took after the signal.
async fn terminate_mid_run(text: &str, probe: &str, into: Duration) -> (String, Duration) {
    let running = Process::agent(text, &["--grace-period", "10s"], &[]);
    until_running(&running.admin, probe).await;
    tokio::time::sleep(into).await;
    let mut agent = running.process;
    let asked = std::time::Instant::now();
    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(15));
    let log = agent.log();
    assert_eq!(status.code(), Some(0), "{log}");
    (log, asked.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_probe_run_in_flight_finish_within_the_grace_period() {
    // Every API answer takes 2 s: a SIGTERM lands in the middle of a run.
    let sim = emulator(Scenario { latency: SimSpan::fixed(Duration::from_secs(2)), ..Scenario::default() }).await;
    let text = format!(
        "upstream:\n  base_url: {}\n  api_key: {KEY}\nprobes:\n  - name: slow\n    interval: 5s\n    timeout: 4s\n    request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux }} }}\n    expect: {{ reason: missing_parameter }}\ntelemetry:\n  log_level: debug\n",
        sim.url
    );
    let (log, took) = terminate_mid_run(&text, "slow", Duration::ZERO).await;
    let tail = after(&log, "shutting down");
    assert!(tail.contains("probe run finished"), "the run in flight ended and was recorded:\n{log}");
    assert!(!log.contains("grace period over"), "{log}");
    assert!(took < Duration::from_secs(10), "within the grace period: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_output_download_waits_for_it_and_gives_up_the_pending_webhook() {
    // The job ends at once, its file downloads in 2 s, and its webhook would come in a minute.
    let sim = emulator(Scenario {
        sync_ratio: 1.0,
        outputs: Outputs { delay: SimSpan::fixed(Duration::from_secs(2)), ..Outputs::default() },
        webhooks: Hooks { delay: SimSpan::fixed(Duration::from_secs(60)), ..Hooks::default() },
        ..Scenario::default()
    })
    .await;
    let text = format!(
        "upstream:\n  base_url: {}\n  api_key: {KEY}\nprobes:\n  - name: gen\n    interval: 6s\n    timeout: 5s\n    request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux, prompt: p, width: 256, height: 256 }} }}\n    follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 200ms, max_wait: 4s, webhook: true }}\n    expect: {{ output: {{ count: 1, timeout: 4s }} }}\nwebhooks:\n  listen: 127.0.0.1:0\ntelemetry:\n  log_level: debug\n",
        sim.url
    );
    // Submitting takes milliseconds; the download the rest.
    let (log, took) = terminate_mid_run(&text, "gen", Duration::from_millis(500)).await;
    let tail = after(&log, "shutting down");
    assert!(tail.contains("output checked"), "the download in flight finished and was judged:\n{log}");
    assert!(tail.contains("probe run finished"), "{log}");
    assert!(tail.contains("webhook runs still waiting are given up"), "{log}");
    assert!(!log.contains("grace period over"), "{log}");
    assert!(took < Duration::from_secs(8), "the webhook's minute is not waited for: {took:?}");
}
