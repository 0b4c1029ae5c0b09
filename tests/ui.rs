//! The status page in a real browser: headless Chromium (Debian `chromium`) loads `/` from a
//! running agent watching the emulator, in three states — healthy, degraded, failing — and the
//! rendered DOM is checked (the verdict, probe rows, error classes), the Content-Security-Policy
//! must not block anything, and a screenshot of each state is saved under `target/ui/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use modelslab_sentinel::sim::{Faults, PageState, Scenario, Span};
use serde_json::{Value, json};

const KEY: &str = "ui-test-secret-key";

/// What Chromium rendered: the DOM, and its console (where CSP violations are reported).
struct Rendered {
    dom: String,
    console: String,
}

/// Loads `url` in headless Chromium: dumps the DOM, and takes a screenshot to `shot`.
async fn chromium(url: &str, shot: Option<&PathBuf>, width: u32) -> Rendered {
    let (url, shot) = (url.to_owned(), shot.cloned());
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--hide-scrollbars".into(),
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},2200"),
        ];
        match &shot {
            Some(path) => args.push(format!("--screenshot={}", path.display())),
            None => args.push("--dump-dom".into()),
        }
        args.push(url);
        let out = Command::new("chromium")
            .args(&args)
            .output()
            .expect("chromium is needed: apt-get install chromium (scripts/test does)");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        Rendered {
            dom: String::from_utf8_lossy(&out.stdout).into_owned(),
            console: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// Renders the page (DOM and a screenshot named `state`), checks what every state shares, and
/// answers the DOM.
async fn render(admin: &str, state: &str) -> String {
    let page = chromium(&format!("{admin}/"), None, 1280).await;
    let dir = std::env::current_dir().unwrap().join("target/ui");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(format!("{state}.png"));
    let _ = std::fs::remove_file(&shot);
    let shown = chromium(&format!("{admin}/"), Some(&shot), 1280).await;
    let phone = dir.join(format!("{state}-phone.png"));
    chromium(&format!("{admin}/"), Some(&phone), 390).await;
    for (what, console) in [("dom", &page.console), ("screenshot", &shown.console)] {
        assert!(
            !console.contains("Content Security Policy"),
            "{state}: the page breaks its own CSP ({what}):\n{console}"
        );
    }
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "{state}: a screenshot of a real page, not a blank one ({size} bytes)");
    println!("screenshot of the {state} state: {}", shot.display());
    let dom = page.dom;
    assert!(dom.contains(&format!("<h1>{state}</h1>")), "{state}: {dom}");
    assert!(dom.contains(&format!("class=\"overall {state}\"")));
    assert!(!dom.contains(KEY), "{state}: the key is on the page");
    assert!(!dom.contains("a lighthouse"), "{state}: a prompt is on the page");
    for section in
        ["probes", "traffic", "llm", "jobs", "time-and-money", "rate-limits", "credits", "slos", "status-page", "agent"]
    {
        assert!(dom.contains(&format!("<section id=\"{section}\"")), "{state}: no {section} section");
    }
    dom
}

fn probe_row<'a>(dom: &'a str, name: &str) -> &'a str {
    let id = dom.find(&format!("id=\"probe-{name}\"")).unwrap_or_else(|| panic!("no row for {name}"));
    let start = dom[..id].rfind("<tr").unwrap();
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

async fn traffic(proxy: &str, n: usize) {
    let c = http();
    for i in 0..n {
        // LLM chats beside the media jobs: streamed (read to the end) and cut by max_tokens.
        if i % 3 == 0 {
            let chat = json!({"model": "claude-sonnet", "max_tokens": 2 + i * 4, "stream": i % 2 == 0,
                              "messages": [{"role": "user", "content": "a lighthouse"}]});
            let r = c.post(format!("{proxy}/api/v7/llm/v1/messages")).header("x-api-key", "ui-user").json(&chat);
            let _ = r.send().await.unwrap().bytes().await;
        }
        let body = json!({"key": "ui-user", "model_id": "flux", "prompt": "a lighthouse", "width": 512, "height": 512});
        let v = post_json(&format!("{proxy}/api/v6/images/text2img"), &body).await;
        if i % 4 == 0 {
            if let Some(id) = v["id"].as_u64() {
                let fetch = format!("{proxy}/api/v6/images/fetch/{id}");
                poll_job(&fetch, &json!({"key": "ui-user"}), Duration::from_millis(100), 30).await;
            }
        }
    }
}

async fn run_probes(admin: &str) {
    for name in ["validation", "auth", "generate"] {
        let (code, report) = post(&format!("{admin}/api/v1/probes/{name}/run"), "").await;
        assert_eq!(code, 200, "{report}");
    }
}

async fn document(admin: &str) -> Value {
    serde_json::from_str(&get(&format!("{admin}/api/v1/status")).await.1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_healthy_degraded_and_failing_in_a_real_browser() {
    let calm = Scenario { job_duration: Span::fixed(Duration::from_millis(300)), ..Scenario::default() };
    let sim = emulator(calm.clone()).await;
    let cfg = format!(
        "upstream:\n  base_url: {url}\n  api_key: {KEY}\n  timeout: 3s\nproxy:\n  enabled: true\n\
         probes:\n\
         \x20 - {{ name: validation, interval: 1h, timeout: 5s, request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux }} }}, expect: {{ reason: missing_parameter }} }}\n\
         \x20 - {{ name: auth, interval: 1h, timeout: 5s, request: {{ path: /api/v6/images/text2img, body: {{ key: sim-invalid-ui, prompt: p }} }}, expect: {{ error_class: unauthorized }} }}\n\
         \x20 - name: generate\n    interval: 1h\n    timeout: 20s\n\
         \x20   request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux, prompt: a lighthouse, width: 256, height: 256 }} }}\n\
         \x20   follow: {{ fetch_path: \"/api/v6/images/fetch/{{id}}\", poll_interval: 100ms, max_wait: 10s }}\n\
         \x20   expect: {{ status: success, output: {{ count: 1 }} }}\n\
         status_page:\n  url: {url}/status\n  interval: 1s\n  timeout: 900ms\n\
         account:\n  balance: {{ enabled: true, interval: 1s, timeout: 900ms }}\n\
         \x20 queue: {{ enabled: true, interval: 2s, limit: 5 }}\n  models: {{ enabled: true, interval: 10s }}\n\
         labels:\n  models: [flux, claude-sonnet]\n\
         slos:\n  - {{ name: proxy-availability, objective: 99, sli: {{ requests: {{ source: proxy }} }} }}\n\
         maintenance:\n  pause_probes: none\n  windows: [ {{ name: ui-window, start: \"2026-01-01T00:00:00Z\", duration: 1000000h }} ]\n",
        url = sim.url
    );
    let agent = Agent::start(&cfg).await;
    let admin = agent.admin.clone();

    // Healthy: every probe passes, traffic succeeds, the status page is operational.
    run_probes(&admin).await;
    traffic(&agent.proxy, 12).await;
    eventually(Duration::from_secs(10), "healthy with the balance polled", async || {
        let d = document(&admin).await;
        d["overall"]["state"] == "healthy"
            && d["account"]["balance"]["up"] == true
            && d["account"]["queue"]["up"] == true
            && d["account"]["models"]["up"] == true
    })
    .await;
    let dom = render(&admin, "healthy").await;
    for name in ["validation", "auth", "generate"] {
        assert!(probe_row(&dom, name).contains("class=\"probe ok\""), "{name}: {}", probe_row(&dom, name));
    }
    assert!(dom.contains("3 of 3 probes passing"), "the one-line why: {dom}");
    assert!(dom.contains("maintenance window ui-window until"), "the window is named, and changes no verdict: {dom}");
    assert!(dom.contains("class=\"run ok\""), "the strips show the runs");
    assert!(dom.contains("Where the time and the money go"), "{dom}");
    assert!(dom.contains("<td>flux</td>"), "the generate probe's job in the time table: {dom}");
    assert!(dom.contains("account queue") && dom.contains("0 of 5"), "the account's queue: {dom}");
    assert!(dom.contains("1 of 1 watched"), "claude-sonnet listed (flux is not in the LLM catalogue): {dom}");
    for reason in ["end_turn", "max_tokens"] {
        assert!(dom.contains(&format!("data-finish-reason=\"{reason}\"")), "LLM finish reason {reason} listed: {dom}");
    }

    // Degraded: jobs fail and the vendor says so.
    let degraded = Scenario { failure_ratio: 1.0, status_page: PageState::DegradedPerformance, ..calm.clone() };
    sim.set_scenario(&serde_json::to_string(&degraded).unwrap()).await;
    run_probes(&admin).await;
    eventually(Duration::from_secs(10), "degraded, with the vendor's page polled", async || {
        let d = document(&admin).await;
        d["overall"]["state"] == "degraded" && d["status_page"]["status"] == "degraded"
    })
    .await;
    let dom = render(&admin, "degraded").await;
    let generate = probe_row(&dom, "generate");
    assert!(generate.contains("class=\"probe failing\"") && generate.contains("job_failed"), "{generate}");
    assert!(probe_row(&dom, "validation").contains("class=\"probe ok\""));
    assert!(dom.contains("the status page reports degraded"), "{dom}");

    // Failing: 5xx everywhere and a major outage.
    let outage = Scenario {
        faults: Faults { server_error: 0.7, unavailable: 0.3, ..Faults::default() },
        status_page: PageState::MajorOutage,
        ..calm
    };
    sim.set_scenario(&serde_json::to_string(&outage).unwrap()).await;
    traffic(&agent.proxy, 20).await;
    run_probes(&admin).await;
    // 5xx traffic alone makes the verdict failing; wait for the page's outage as well.
    eventually(Duration::from_secs(10), "failing, with the vendor's page polled", async || {
        let d = document(&admin).await;
        d["overall"]["state"] == "failing" && d["status_page"]["status"] == "major_outage"
    })
    .await;
    let dom = render(&admin, "failing").await;
    for class in ["server_error", "unavailable"] {
        assert!(dom.contains(&format!("data-class=\"{class}\"")), "error class {class} listed: {dom}");
    }
    assert!(dom.contains("the status page reports a major outage"));
    assert!(dom.contains("class=\"s-server_error\""), "the class chart has server_error bars");
    agent.stop().await;
}

#[tokio::test]
async fn the_page_and_the_api_tell_the_same_story_and_the_headers_lock_it_down() {
    let sim = emulator(Scenario::default()).await;
    let cfg = format!(
        "upstream:\n  base_url: {}\n  api_key: {KEY}\nprobes:\n\
         \x20 - {{ name: validation, interval: 1h, timeout: 5s, request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux }} }}, expect: {{ reason: missing_parameter }} }}\n",
        sim.url
    );
    let agent = Agent::start(&cfg).await;
    run_one(&agent.admin, "validation").await;
    let r = http().get(format!("{}/", agent.admin)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    for d in ["default-src 'none'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'none'"] {
        assert!(csp.contains(d), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    let doc = document(&agent.admin).await;
    assert!(html.contains(&format!("<h1>{}</h1>", doc["overall"]["state"].as_str().unwrap())));
    assert!(html.contains(doc["overall"]["why"].as_str().unwrap()), "the same verdict: {html}");
    assert!(html.contains("http-equiv=\"refresh\""), "refreshes itself");
    assert!(!html.contains("<script"), "works without JavaScript");
    assert!(html.contains("/api/v1/status") && html.contains("/metrics"), "lists the endpoints");
    let runs = doc["probes"][0]["recent_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(doc["recent"]["traffic"].as_array().unwrap().len(), 60, "15 minutes of 15-second buckets");
    let (code, css) = get(&format!("{}/-/ui.css", agent.admin)).await;
    assert_eq!(code, 200);
    assert!(css.contains(".overall.failing"));
    agent.stop().await;
}

async fn run_one(admin: &str, name: &str) {
    let (code, report) = post(&format!("{admin}/api/v1/probes/{name}/run"), "").await;
    assert_eq!(code, 200, "{report}");
}
