//! End to end: the emulator in a faulty scenario, the agent with probes, proxy traffic and the
//! status page, and a real Prometheus scraping it with the alert rules loaded. After a warm-up,
//! every panel query of every dashboard (template variables and `$__rate_interval` substituted),
//! every template variable and every annotation query (over the last 5 minutes, as Grafana runs
//! annotations over the time range) must be valid PromQL that returns data.
//! The report (each panel, its query, data or not) is written to target/dashboard-report.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;
use modelslab_sentinel::sim::{Faults, PageState, Scenario, Span};
use serde_json::{Value, json};

/// Replaces Grafana's template variables with "everything".
fn substitute(expr: &str) -> String {
    let mut e = expr.replace("$__rate_interval", "1m");
    for v in ["$job", "$instance", "$source", "$endpoint", "$model"] {
        e = e.replace(v, ".*");
    }
    e
}

/// `label_values(metric{…}, label)` as a query that returns the label's values.
fn label_values_query(q: &str) -> String {
    let inner = q.trim().strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).unwrap();
    let (metric, label) = inner.rsplit_once(',').unwrap();
    format!("count by ({}) ({})", label.trim(), metric.trim())
}

async fn query(prom: &str, q: &str) -> Result<usize, String> {
    run_query(prom, "query", &[("query", q.to_owned())]).await
}

/// Over the last 5 minutes, as Grafana evaluates an annotation over the dashboard's time range.
async fn query_range(prom: &str, q: &str) -> Result<usize, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let params = [
        ("query", q.to_owned()),
        ("start", (now - 300).to_string()),
        ("end", now.to_string()),
        ("step", "5".to_owned()),
    ];
    run_query(prom, "query_range", &params).await
}

async fn run_query(prom: &str, api: &str, params: &[(&str, String)]) -> Result<usize, String> {
    let url = url::Url::parse_with_params(&format!("{prom}/api/v1/{api}"), params).map_err(|e| e.to_string())?;
    let r = http().get(url).send().await.map_err(|e| e.to_string())?;
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Realistic and faulty client traffic through the proxy until `until`.
async fn traffic(proxy: String, sim_base: String, until: Instant) {
    let c = http();
    let mut n = 0u32;
    let mut flipped = false;
    while Instant::now() < until {
        n += 1;
        let post = |path: &str, body: Value| c.post(format!("{proxy}{path}")).json(&body).send();
        let model = if n % 2 == 0 { "flux" } else { "sdxl" };
        // A generation polled to its end.
        if let Ok(r) = post("/api/v6/images/text2img", json!({"key": "user", "model_id": model, "prompt": "p"})).await {
            if let Ok(v) = r.json::<Value>().await {
                if let Some(id) = v["id"].as_u64() {
                    let fetch = format!("{proxy}/api/v6/images/fetch/{id}");
                    poll_job(&fetch, &json!({"key": "user"}), Duration::from_millis(150), 20).await;
                }
            }
        }
        // One never polled (it expires), broken parameters, bad keys, a plan without realtime.
        let _ = post("/api/v6/images/text2img", json!({"key": "forgetful", "model_id": "flux", "prompt": "p"})).await;
        let _ = post("/api/v6/images/text2img", json!({"key": "user", "model_id": "flux"})).await;
        let _ = post("/api/v6/images/text2img", json!({"key": "user", "prompt": "p", "width": 2000})).await;
        let _ = post("/api/v6/images/text2img", json!({"key": "sim-broke-1", "prompt": "p"})).await;
        let _ = post("/api/v6/images/text2img", json!({"key": "sim-invalid-1", "prompt": "p"})).await;
        let _ = post("/api/v6/realtime/text2img", json!({"key": "sim-basic-1", "prompt": "p"})).await;
        // The LLM API: chat plain and streamed (the stream read to its end), Anthropic messages
        // cut by max_tokens, a revoked key.
        let chat = |stream: bool| {
            json!({"model": "claude-sonnet", "max_tokens": 4 + n % 16, "stream": stream,
                                         "messages": [{"role": "user", "content": "hello there"}]})
        };
        let llm = |path: &str, body: Value, key: &str| {
            c.post(format!("{proxy}/api/v7/llm{path}")).bearer_auth(key).header("x-api-key", key).json(&body).send()
        };
        let _ = llm("/chat/completions", chat(false), "user").await;
        if let Ok(r) = llm("/chat/completions", chat(true), "user").await {
            let _ = r.bytes().await;
        }
        if let Ok(r) = llm("/v1/messages", chat(true), "user").await {
            let _ = r.bytes().await;
        }
        let _ = llm("/v1/messages", chat(false), "sim-invalid-2").await;
        // A burst on one key fills its queue: 429s with retry_after.
        for _ in 0..7 {
            let _ = post("/api/v6/images/text2img", json!({"key": format!("burst-{n}"), "prompt": "p"})).await;
        }
        // Halfway, once Prometheus has scraped the first state, the status page changes.
        if !flipped && Instant::now() + Duration::from_secs(10) > until {
            flipped = true;
            let _ = c.put(format!("{sim_base}/_sim/scenario")).body(scenario_yaml("partial_outage")).send().await;
        }
    }
}

fn scenario() -> Scenario {
    Scenario {
        seed: 11,
        latency: Span { min: Duration::from_millis(5), max: Duration::from_millis(30) },
        sync_ratio: 0.1,
        job_duration: Span { min: Duration::from_millis(300), max: Duration::from_millis(1500) },
        eta_bias: 0.5,
        failure_ratio: 0.3,
        faults: Faults {
            server_error: 0.05,
            soft_error: 0.05,
            unavailable: 0.03,
            reset: 0.05,
            gateway_html: 0.02,
            timeout: 0.0,
        },
        status_page: PageState::DegradedPerformance,
        ..Scenario::default()
    }
}

fn scenario_yaml(page: &str) -> String {
    let s = scenario();
    let mut v = serde_json::to_value(&s).unwrap();
    v["status_page"] = json!(page);
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let sim = emulator(scenario()).await;
    let sim_base = sim.url.clone();

    let cfg = format!(
        "upstream:\n  base_url: {sim_base}\n  api_key: e2e-key\n  timeout: 3s\n\
         proxy:\n  enabled: true\n  upstream_timeout: 3s\njobs:\n  ttl: 3s\nlabels:\n  models: [flux, sdxl, claude-sonnet]\n\
         probes:\n\
         \x20 - {{ name: validation, interval: 2s, timeout: 1s, request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux }} }}, expect: {{ reason: missing_parameter }} }}\n\
         \x20 - name: generate\n    interval: 4s\n    timeout: 3500ms\n    request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux, prompt: p, width: 256, height: 256 }} }}\n\
         \x20   follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 200ms, max_wait: 3s, webhook: true }}\n\
         \x20   expect: {{ output: {{ count: 1, timeout: 1s }} }}\n\
         webhooks:\n  listen: 127.0.0.1:0\n  grace: 3s\n\
         status_page:\n  url: {sim_base}/status\n  interval: 2s\n  timeout: 1s\n\
         account:\n  balance: {{ enabled: true, interval: 2s, timeout: 1s }}\n\
         \x20 queue: {{ enabled: true, interval: 2s, limit: 5 }}\n  models: {{ enabled: true, interval: 10s }}\n\
         slos:\n\
         \x20 - {{ name: proxy-availability, objective: 99, sli: {{ requests: {{ source: proxy }} }} }}\n\
         \x20 - {{ name: jobs-in-time, objective: 95, window: 28d, sli: {{ jobs: {{ max_duration: 10s }} }} }}\n\
         \x20 - {{ name: generate-probe, objective: 99, window: 7d, sli: {{ probes: [generate] }} }}\n\
         maintenance:\n  pause_probes: none\n  windows: [ {{ name: e2e, start: \"2026-01-01T00:00:00Z\", duration: 1000000h }} ]\n"
    );
    let agent = Process::agent(&cfg, &[], &[]);
    let (admin, proxy, dir) =
        (agent.admin.trim_start_matches("http://").to_owned(), agent.proxy.clone(), agent.dir.path());

    let prometheus = Prometheus::start(dir, &admin).await;
    let prom = prometheus.url.clone();

    traffic(proxy, sim_base, Instant::now() + Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The rules are loaded.
    let rules: Value = http().get(format!("{prom}/api/v1/rules")).send().await.unwrap().json().await.unwrap();
    let groups: Vec<&str> =
        rules["data"]["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    for g in [
        "modelslab-sentinel.api",
        "modelslab-sentinel.probes",
        "modelslab-sentinel.jobs",
        "modelslab-sentinel.status-page",
        "modelslab-sentinel.delivery",
        "modelslab-sentinel.slo-recordings",
        "modelslab-sentinel.slo",
        "modelslab-sentinel.credits",
        "modelslab-sentinel.agent",
    ] {
        assert!(groups.contains(&g), "rule group {g} not loaded: {groups:?}");
    }

    // The SLO recordings (Sloth's names, one series per SLO) and the balance.
    // Each holds once Prometheus has scraped and evaluated (a balance poll may time out now and
    // then on a busy machine: the next one, 2 s later, succeeds).
    for (q, want) in [
        ("slo:sli_error:ratio_rate5m", 3),
        ("slo:sli_error:ratio_rate30d", 3),
        ("slo:objective:ratio", 3),
        ("slo:error_budget:ratio", 3),
        ("slo:period_error_budget_remaining:ratio", 3),
        ("sloth_slo_info{sloth_service=\"modelslab\"}", 3),
        ("modelslab_account_balance{currency=\"USD\"}", 1),
        ("modelslab_account_balance_up == 1", 1),
    ] {
        let got = settled(Duration::from_secs(30), async || query(&prom, q).await, |r| *r == Ok(want)).await;
        assert_eq!(got, Ok(want), "{q}");
    }

    let (missing, report) =
        settled(Duration::from_secs(30), async || dashboard_queries(&prom).await, |(missing, _)| missing.is_empty())
            .await;
    let _ = std::fs::create_dir_all("target");
    std::fs::write("target/dashboard-report.md", &report).unwrap();
    println!("{report}");
    drop(prometheus);
    assert!(missing.is_empty(), "queries without data:\n{}\n\nreport:\n{report}", missing.join("\n"));
}

/// A real Prometheus scraping `target` every second with the alert rules loaded; killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Prometheus {
    async fn start(dir: &std::path::Path, target: &str) -> Prometheus {
        let rules = std::fs::canonicalize("alerts/modelslab-sentinel.rules.yml").unwrap();
        let port = free_port();
        let cfg = write(
            dir,
            "prometheus.yml",
            &format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [\"{}\"]\n\
                 scrape_configs:\n  - job_name: modelslab-sentinel\n    static_configs: [ {{ targets: [\"{target}\"] }} ]\n",
                rules.display()
            ),
        );
        let child = std::process::Command::new("prometheus")
            .args([
                &format!("--config.file={cfg}"),
                &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus is needed: apt-get install prometheus (scripts/test does)");
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(30), "prometheus ready", async || {
            http().get(format!("{url}/-/ready")).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        Prometheus { child, url }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every panel query of every dashboard (template variables substituted), every template
/// variable and every annotation query, run against `prom`: the ones without data, and a
/// Markdown report of all.
async fn dashboard_queries(prom: &str) -> (Vec<String>, String) {
    let mut report = String::from("| dashboard | panel | query | result |\n|---|---|---|---|\n");
    let mut missing = Vec::new();
    for file in ["dashboards/overview.json", "dashboards/jobs.json"] {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let mut checks: Vec<(String, String)> = Vec::new();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                checks.push((p["title"].as_str().unwrap().to_owned(), substitute(t["expr"].as_str().unwrap())));
            }
        }
        for v in d["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
            checks.push((
                format!("variable ${}", v["name"].as_str().unwrap()),
                substitute(&label_values_query(v["definition"].as_str().unwrap())),
            ));
        }
        for a in d["annotations"]["list"].as_array().unwrap().iter().filter(|a| a["expr"].is_string()) {
            checks
                .push((format!("annotation {}", a["name"].as_str().unwrap()), substitute(a["expr"].as_str().unwrap())));
        }
        for (panel, q) in checks {
            let answer =
                if panel.starts_with("annotation ") { query_range(prom, &q).await } else { query(prom, &q).await };
            let result = match answer {
                Ok(0) => "no data".to_owned(),
                Ok(n) => format!("{n} series"),
                Err(e) => format!("error: {e}"),
            };
            if !result.ends_with("series") {
                missing.push(format!("{file} / {panel}: {result}\n    {q}"));
            }
            report.push_str(&format!("| {file} | {panel} | `{}` | {result} |\n", q.replace('|', "\\|")));
        }
    }
    (missing, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_demo_every_dashboard_panel_has_data_within_70_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let prometheus = Prometheus::start(dir.path(), &admin).await;
    let port = admin_port.to_string();
    let started = Instant::now();
    let demo = Process::start(&["demo", "--duration", "150s"], &[("DEMO_ADMIN_PORT", &port)]);
    let deadline = started + Duration::from_secs(70);
    let mut last = (Vec::new(), String::new());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        last = dashboard_queries(&prometheus.url).await;
        if last.0.is_empty() {
            break;
        }
    }
    let took = started.elapsed();
    let (missing, report) = last;
    let _ = std::fs::write("target/dashboard-report-demo.md", &report);
    assert!(
        missing.is_empty(),
        "after {took:?} of the demo, queries without data:\n{}\n\ndemo log:\n{}",
        missing.join("\n"),
        demo.log()
    );
    println!("every panel had data after {took:?} of the demo");
    let log = demo.log();
    let first_url = log.lines().find(|l| l.contains("http://")).unwrap_or("");
    assert!(first_url.contains(&format!("status page: http://{admin}/")), "the status page URL first: {log}");
    assert!(log.contains("[  10s] "), "the 10-second status line: {log}");
}
