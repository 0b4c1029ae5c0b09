//! `demo`: within 20 s of starting, /metrics shows probe and proxy traffic, at least three error
//! classes, finished jobs and the status page; the status page URL comes first, a status line every
//! 10 s; `--duration` stops it with exit 0. (The dashboards against the demo: prometheus_e2e.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Whether some series of `name` with `label` = `value` is not 0.
fn seen(m: &Scrape, name: &str, label: &str, value: &str) -> bool {
    m.metric(name).label(label, value).sum() > 0.0
}

#[tokio::test]
async fn the_demo_shows_everything_within_20_seconds_and_stops_by_itself() {
    let started = Instant::now();
    let mut demo = Process::start(&["demo", "--duration", "25s"], &[]);
    let page = demo.wait_for_log("status page: ", Duration::from_secs(20));
    assert!(page.starts_with("http://127.0.0.1:") && page.ends_with('/'), "{page}");
    let admin = page.trim_end_matches('/').to_owned();
    let mut last = None;
    let within = Duration::from_secs(20).saturating_sub(started.elapsed());
    eventually(within, "the demo's metrics show every kind of signal within 20 s of its start", async || {
        let m = scrape(&admin).await;
        let classes = m.metric("modelslab_errors_total").nonzero_values_of("error_class");
        let ok = seen(&m, "modelslab_requests_total", "source", "probe")
            && seen(&m, "modelslab_requests_total", "source", "proxy")
            && classes.len() >= 3
            && seen(&m, "modelslab_jobs_total", "result", "success")
            && m.metric("modelslab_status_page_up").value() == Some(1.0)
            && m.has("modelslab_status_page_status");
        last = Some(m);
        ok
    })
    .await;
    let last = last.unwrap();
    promtool_check_metrics(last.text()).unwrap_or_else(|e| panic!("{e}"));
    let (code, html) = get(&page).await;
    assert_eq!(code, 200);
    assert!(html.contains("id=\"probe-text2img-generate\"") && html.contains("<h1>"), "{html}");
    let status = demo.wait_exit(Duration::from_secs(40));
    assert_eq!(status.code(), Some(0), "{}", demo.log());
    let log = demo.log();
    assert!(log.contains("demo stopped after"));
    let line = log.lines().find(|l| l.starts_with("[  10s] ")).unwrap_or_else(|| panic!("no 10-second line: {log}"));
    for part in ["requests", "errors (", "jobs done", "probes ", "status page "] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
}
