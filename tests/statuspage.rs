//! The status-page poller against the emulator's page (operational → partial outage → major
//! outage → unreachable, the last state kept), and auto-detection of the other formats.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::{Scrape, Served, emulator, load_config, observer, scrape_registry, serve};
use modelslab_sentinel::classify::PageStatus;
use modelslab_sentinel::clients::Clients;
use modelslab_sentinel::config::{Config, PageFormat};
use modelslab_sentinel::maintenance::Maintenance;
use modelslab_sentinel::metrics::Metrics;
use modelslab_sentinel::sim::Scenario;
use modelslab_sentinel::statuspage::StatusPage;

fn poller(url: &str, extra: &str) -> (StatusPage, Arc<Metrics>, Config) {
    let cfg = load_config(&format!(
        "upstream:\n  base_url: http://127.0.0.1:9\nstatus_page:\n  url: {url}\n  interval: 60s\n  timeout: 2s\n{extra}"
    ));
    let (observer, metrics) = observer(&cfg);
    (StatusPage::new(observer, Clients::new().unwrap().pages, Maintenance::new()), metrics, cfg)
}

fn component(m: &Scrape, name: &str, status: &str) -> Option<f64> {
    m.metric("modelslab_status_page_component_status").label("component", name).label("status", status).value()
}

#[tokio::test]
async fn operational_partial_major_then_unreachable_keeping_the_last_state() {
    let sim = emulator(Scenario::default()).await;
    let (page, metrics, cfg) = poller(&format!("{}/status", sim.url), "");
    let settings = cfg.status_page.clone().unwrap();

    page.poll_once(&settings).await;
    let m = scrape_registry(&metrics);
    assert_eq!(m.metric("modelslab_status_page_up").value(), Some(1.0));
    assert_eq!(m.metric("modelslab_status_page_status").value(), Some(0.0));
    assert_eq!(m.metric("modelslab_status_page_incidents_open").value(), Some(0.0));
    assert_eq!(component(&m, "Image Generation API", "operational"), Some(1.0));
    assert_eq!(component(&m, "Image Generation API", "major_outage"), Some(0.0));
    assert!(m.metric("modelslab_status_page_last_success_timestamp_seconds").value().unwrap() > 1.7e9);
    assert_eq!(
        page.status(&cfg).unwrap().format,
        Some(PageFormat::Statuspage),
        "found /api/v2/summary.json beside the HTML page"
    );

    sim.set_scenario("status_page: partial_outage\n").await;
    page.poll_once(&settings).await;
    let m = scrape_registry(&metrics);
    assert_eq!(m.metric("modelslab_status_page_status").value(), Some(3.0));
    assert_eq!(m.metric("modelslab_status_page_incidents_open").value(), Some(1.0));
    assert_eq!(component(&m, "Image Generation API", "partial_outage"), Some(1.0));
    assert_eq!(component(&m, "Image Generation API", "operational"), Some(0.0));
    assert_eq!(component(&m, "Dashboard", "operational"), Some(1.0));

    sim.set_scenario("status_page: major_outage\n").await;
    page.poll_once(&settings).await;
    let m = scrape_registry(&metrics);
    assert_eq!(m.metric("modelslab_status_page_status").value(), Some(4.0));
    assert_eq!(component(&m, "Image Generation API", "major_outage"), Some(1.0));
    let last_success = m.metric("modelslab_status_page_last_success_timestamp_seconds").value().unwrap();
    assert_eq!(page.status(&cfg).unwrap().last_change.as_deref(), Some("partial_outage → major_outage"));

    // The page goes away: up 0, and the last known state stays (no flapping to "operational").
    sim.stop().await;
    page.poll_once(&settings).await;
    let m = scrape_registry(&metrics);
    assert_eq!(m.metric("modelslab_status_page_up").value(), Some(0.0));
    assert_eq!(m.metric("modelslab_status_page_status").value(), Some(4.0));
    assert_eq!(component(&m, "Image Generation API", "major_outage"), Some(1.0));
    assert_eq!(m.metric("modelslab_status_page_last_success_timestamp_seconds").value(), Some(last_success));
    let status = page.status(&cfg).unwrap();
    assert_eq!((status.up, status.status), (Some(false), Some(PageStatus::MajorOutage)));
    assert!(status.last_error.unwrap().contains("cannot fetch"));
}

/// Serves fixed documents at fixed paths.
async fn pages(routes: Vec<(&'static str, &'static str, &'static str)>) -> Served {
    let mut app = axum::Router::new();
    for (path, content_type, body) in routes {
        app = app.route(path, axum::routing::get(move || async move { ([("content-type", content_type)], body) }));
    }
    serve(app).await
}

#[tokio::test]
async fn auto_detects_instatus_better_stack_and_html() {
    let served = pages(vec![
        ("/summary.json", "application/json", include_str!("fixtures/statuspage/instatus-summary-hasissues.json")),
        ("/v2/components.json", "application/json", include_str!("fixtures/statuspage/instatus-components.json")),
    ])
    .await;
    let (page, metrics, cfg) = poller(&format!("{}/summary.json", served.url), "");
    page.poll_once(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(page.status(&cfg).unwrap().format, Some(PageFormat::Instatus));
    let m = scrape_registry(&metrics);
    assert_eq!(m.metric("modelslab_status_page_status").value(), Some(4.0));
    assert_eq!(component(&m, "Image Generation", "major_outage"), Some(1.0));

    let served = pages(vec![
        ("/", "text/html", "<html><body>Loading…</body></html>"),
        ("/index.json", "application/json", include_str!("fixtures/statuspage/betterstack-degraded.json")),
    ])
    .await;
    let (page, _, cfg) = poller(&format!("{}/", served.url), "");
    page.poll_once(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(page.status(&cfg).unwrap().format, Some(PageFormat::Betterstack));

    let served = pages(vec![("/status", "text/html", include_str!("fixtures/statuspage/html-major.html"))]).await;
    let (page, metrics, cfg) = poller(&format!("{}/status", served.url), "");
    page.poll_once(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(page.status(&cfg).unwrap().format, Some(PageFormat::Html));
    assert_eq!(scrape_registry(&metrics).metric("modelslab_status_page_status").value(), Some(4.0));

    // Configured phrases replace the built-in ones.
    let served = pages(vec![("/status", "text/html", "<p>All good here</p>")]).await;
    let rules = "  format: html\n  html_rules:\n    - { contains: all good, status: operational }\n";
    let (page, metrics, cfg) = poller(&format!("{}/status", served.url), rules);
    page.poll_once(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(scrape_registry(&metrics).metric("modelslab_status_page_status").value(), Some(0.0));

    // Nothing recognisable: up 0, and the reason says what was tried.
    let served = pages(vec![("/status", "text/html", "<p>hello</p>")]).await;
    let (page, metrics, cfg) = poller(&format!("{}/status", served.url), "");
    page.poll_once(cfg.status_page.as_ref().unwrap()).await;
    assert_eq!(scrape_registry(&metrics).metric("modelslab_status_page_up").value(), Some(0.0));
    assert!(page.status(&cfg).unwrap().last_error.unwrap().contains("no status page format recognised"));
}

#[tokio::test]
async fn components_over_the_cap_are_dropped_and_counted_once() {
    let served = pages(vec![(
        "/api/v2/summary.json",
        "application/json",
        include_str!("fixtures/statuspage/statuspage-partial-outage.json"),
    )])
    .await;
    let (page, metrics, cfg) = poller(&format!("{}/api/v2/summary.json", served.url), "  max_components: 2\n");
    page.poll_once(cfg.status_page.as_ref().unwrap()).await;
    page.poll_once(cfg.status_page.as_ref().unwrap()).await;
    let m = scrape_registry(&metrics);
    assert_eq!(
        m.metric("modelslab_sentinel_label_overflow_total").label("label", "component").value(),
        Some(1.0),
        "counted once per component"
    );
    assert_eq!(m.metric("modelslab_status_page_component_status").label("component", "Website").count(), 0);
    assert_eq!(component(&m, "API", "degraded"), Some(1.0));
}
