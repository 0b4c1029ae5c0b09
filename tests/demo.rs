//! `demo`: within 20 s of starting, /metrics shows probe and proxy traffic, at least three error
//! classes, finished jobs and the status page; `--duration` stops it with exit 0.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

fn has(metrics: &str, prefix: &str, needle: &str) -> bool {
    metrics.lines().any(|l| l.starts_with(prefix) && l.contains(needle) && !l.ends_with(" 0"))
}

#[tokio::test]
async fn the_demo_shows_everything_within_20_seconds_and_stops_by_itself() {
    let started = Instant::now();
    let mut demo = Process::start(&["demo", "--duration", "25s"], &[]);
    let metrics_url = demo.wait_for_log("metrics:   ", Duration::from_secs(20));
    assert!(metrics_url.starts_with("http://127.0.0.1:"), "{metrics_url}");
    let mut last = String::new();
    let mut ok = false;
    while started.elapsed() < Duration::from_secs(20) {
        last = get(&metrics_url).await.1;
        let classes: BTreeSet<&str> = last
            .lines()
            .filter(|l| l.starts_with("modelslab_errors_total{"))
            .filter_map(|l| l.split("error_class=\"").nth(1)?.split('"').next())
            .collect();
        ok = has(&last, "modelslab_requests_total{", "source=\"probe\"")
            && has(&last, "modelslab_requests_total{", "source=\"proxy\"")
            && classes.len() >= 3
            && has(&last, "modelslab_jobs_total{", "result=\"success\"")
            && last.contains("modelslab_status_page_up 1")
            && last.lines().any(|l| l.starts_with("modelslab_status_page_status "));
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ok, "after {:?} the demo's metrics lack something:\n{last}", started.elapsed());
    promtool_check_metrics(&last).unwrap_or_else(|e| panic!("{e}"));
    let status = demo.wait_exit(Duration::from_secs(40));
    assert_eq!(status.code(), Some(0), "{}", demo.log());
    assert!(demo.log().contains("demo stopped after"));
}
