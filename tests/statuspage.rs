//! The status-page poller against the emulator's page (operational → partial outage → major
//! outage → unreachable, the last state kept), and auto-detection of the other formats.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::sample;
use modelslab_sentinel::config::{self, Config, Environment};
use modelslab_sentinel::metrics::Metrics;
use modelslab_sentinel::sim::{self, Scenario};
use modelslab_sentinel::statuspage::StatusPage;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn load(text: &str) -> Config {
    let var = |_: &str| None;
    config::from_yaml(text, "test", &Environment { var: &var, base_dir: ".".into() }).unwrap_or_else(|e| panic!("{e}"))
}

fn poller(url: &str, extra: &str) -> (StatusPage, Arc<Metrics>, Config) {
    let cfg = load(&format!(
        "upstream:\n  base_url: http://127.0.0.1:9\nstatus_page:\n  url: {url}\n  interval: 60s\n  timeout: 2s\n{extra}"
    ));
    let metrics = Arc::new(Metrics::new(&cfg.labels).unwrap());
    let (tx, rx) = watch::channel(Arc::new(cfg.clone()));
    std::mem::forget(tx);
    (StatusPage::new(rx, metrics.clone()).unwrap(), metrics, cfg)
}

async fn put_scenario(base: &str, yaml: &str) {
    let r = common::http().put(format!("{base}/_sim/scenario")).body(yaml.to_owned()).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

fn component(m: &str, name: &str, status: &str) -> Option<f64> {
    sample(m, &format!("modelslab_status_page_component_status{{component=\"{name}\",status=\"{status}\"}}"))
}

#[tokio::test]
async fn operational_partial_major_then_unreachable_keeping_the_last_state() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let handle = sim::spawn(listener, Scenario::default(), token.clone()).unwrap();
    let base = format!("http://{}", handle.addr);
    let (page, metrics, cfg) = poller(&format!("{base}/status"), "");
    let settings = cfg.status_page.clone().unwrap();

    page.poll(&settings).await;
    let m = metrics.render().unwrap();
    assert_eq!(sample(&m, "modelslab_status_page_up"), Some(1.0));
    assert_eq!(sample(&m, "modelslab_status_page_status"), Some(0.0));
    assert_eq!(sample(&m, "modelslab_status_page_incidents_open"), Some(0.0));
    assert_eq!(component(&m, "Image Generation API", "operational"), Some(1.0));
    assert_eq!(component(&m, "Image Generation API", "major_outage"), Some(0.0));
    assert!(sample(&m, "modelslab_status_page_last_success_timestamp_seconds").unwrap() > 1.7e9);
    assert_eq!(page.status().unwrap().format, Some("statuspage"), "found /api/v2/summary.json beside the HTML page");

    put_scenario(&base, "status_page: partial_outage\n").await;
    page.poll(&settings).await;
    let m = metrics.render().unwrap();
    assert_eq!(sample(&m, "modelslab_status_page_status"), Some(3.0));
    assert_eq!(sample(&m, "modelslab_status_page_incidents_open"), Some(1.0));
    assert_eq!(component(&m, "Image Generation API", "partial_outage"), Some(1.0));
    assert_eq!(component(&m, "Image Generation API", "operational"), Some(0.0));
    assert_eq!(component(&m, "Dashboard", "operational"), Some(1.0));

    put_scenario(&base, "status_page: major_outage\n").await;
    page.poll(&settings).await;
    let m = metrics.render().unwrap();
    assert_eq!(sample(&m, "modelslab_status_page_status"), Some(4.0));
    assert_eq!(component(&m, "Image Generation API", "major_outage"), Some(1.0));
    let last_success = sample(&m, "modelslab_status_page_last_success_timestamp_seconds").unwrap();
    assert_eq!(page.status().unwrap().last_change.as_deref(), Some("partial_outage → major_outage"));

    // The page goes away: up 0, and the last known state stays (no flapping to "operational").
    token.cancel();
    handle.task.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    page.poll(&settings).await;
    let m = metrics.render().unwrap();
    assert_eq!(sample(&m, "modelslab_status_page_up"), Some(0.0));
    assert_eq!(sample(&m, "modelslab_status_page_status"), Some(4.0));
    assert_eq!(component(&m, "Image Generation API", "major_outage"), Some(1.0));
    assert_eq!(sample(&m, "modelslab_status_page_last_success_timestamp_seconds"), Some(last_success));
    let status = page.status().unwrap();
    assert_eq!((status.up, status.status), (Some(false), Some("major_outage")));
    assert!(status.last_error.unwrap().contains("cannot fetch"));
}

/// Serves fixed documents at fixed paths.
async fn pages(routes: Vec<(&'static str, &'static str, &'static str)>) -> (String, tokio_util::sync::DropGuard) {
    let mut app = axum::Router::new();
    for (path, content_type, body) in routes {
        app = app.route(path, axum::routing::get(move || async move { ([("content-type", content_type)], body) }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(t.cancelled_owned()).await.unwrap() });
    (format!("http://{addr}"), token.drop_guard())
}

#[tokio::test]
async fn auto_detects_instatus_better_stack_and_html() {
    let (base, _g) = pages(vec![
        ("/summary.json", "application/json", include_str!("fixtures/statuspage/instatus-summary-hasissues.json")),
        ("/v2/components.json", "application/json", include_str!("fixtures/statuspage/instatus-components.json")),
    ])
    .await;
    let (page, metrics, cfg) = poller(&format!("{base}/summary.json"), "");
    page.poll(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(page.status().unwrap().format, Some("instatus"));
    let m = metrics.render().unwrap();
    assert_eq!(sample(&m, "modelslab_status_page_status"), Some(4.0));
    assert_eq!(component(&m, "Image Generation", "major_outage"), Some(1.0));

    let (base, _g) = pages(vec![
        ("/", "text/html", "<html><body>Loading…</body></html>"),
        ("/index.json", "application/json", include_str!("fixtures/statuspage/betterstack-degraded.json")),
    ])
    .await;
    let (page, _, cfg) = poller(&format!("{base}/"), "");
    page.poll(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(page.status().unwrap().format, Some("betterstack"));

    let (base, _g) = pages(vec![("/status", "text/html", include_str!("fixtures/statuspage/html-major.html"))]).await;
    let (page, metrics, cfg) = poller(&format!("{base}/status"), "");
    page.poll(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(page.status().unwrap().format, Some("html"));
    assert_eq!(sample(&metrics.render().unwrap(), "modelslab_status_page_status"), Some(4.0));

    // Configured phrases replace the built-in ones.
    let (base, _g) = pages(vec![("/status", "text/html", "<p>All good here</p>")]).await;
    let rules = "  format: html\n  html_rules:\n    - { contains: all good, status: operational }\n";
    let (page, metrics, cfg) = poller(&format!("{base}/status"), rules);
    page.poll(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(sample(&metrics.render().unwrap(), "modelslab_status_page_status"), Some(0.0));

    // Nothing recognisable: up 0, and the reason says what was tried.
    let (base, _g) = pages(vec![("/status", "text/html", "<p>hello</p>")]).await;
    let (page, metrics, cfg) = poller(&format!("{base}/status"), "");
    page.poll(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(sample(&metrics.render().unwrap(), "modelslab_status_page_up"), Some(0.0));
    assert!(page.status().unwrap().last_error.unwrap().contains("no status page format recognised"));
}

#[tokio::test]
async fn components_over_the_cap_are_dropped_and_counted_once() {
    let (base, _g) = pages(vec![(
        "/api/v2/summary.json",
        "application/json",
        include_str!("fixtures/statuspage/statuspage-partial-outage.json"),
    )])
    .await;
    let (page, metrics, cfg) = poller(&format!("{base}/api/v2/summary.json"), "  max_components: 2\n");
    page.poll(cfg.status_page.as_ref().unwrap()).await;
    page.poll(cfg.status_page.as_ref().unwrap()).await;
    let m = metrics.render().unwrap();
    assert_eq!(
        sample(&m, "modelslab_sentinel_label_overflow_total{label=\"component\"}"),
        Some(1.0),
        "counted once per component"
    );
    assert!(!m.contains("component=\"Website\""));
    assert_eq!(component(&m, "API", "degraded"), Some(1.0));
}
