use std::time::Duration;

use http::HeaderMap;

use super::*;
use crate::classify::{Context, PageStatus, RequestKind, classify};
use crate::scrape::Scrape;
use crate::vocab::{Exchange, JobEnd, JobResult, Source};

fn metrics(max_endpoints: usize) -> Metrics {
    Metrics::new(&Labels { models: vec!["flux".into()], max_endpoints }).unwrap()
}

fn scrape(m: &Metrics) -> Scrape {
    Scrape::parse(&m.render().unwrap())
}

#[test]
fn endpoint_cap_overflows_to_other_and_counts() {
    let m = metrics(2);
    assert_eq!(m.endpoint_label("/a"), "/a");
    assert_eq!(m.endpoint_label("/b/1"), "/b/{id}");
    assert_eq!(m.endpoint_label("/c"), "other");
    assert_eq!(m.endpoint_label("/a"), "/a", "known values stay");
    assert_eq!(m.endpoint_label("/b/2"), "/b/{id}");
    let s = scrape(&m);
    assert_eq!(s.metric("modelslab_sentinel_label_overflow_total").label("label", "endpoint").value(), Some(1.0));
}

#[test]
fn model_allowlist() {
    let m = metrics(8);
    assert_eq!(m.model_label(Some("flux")), "flux");
    assert_eq!(m.model_label(Some("my-private-finetune")), "other");
    assert_eq!(m.model_label(None), "none");
    m.set_label_policy(&Labels { models: vec!["sdxl".into()], max_endpoints: 8 });
    assert_eq!(m.model_label(Some("flux")), "other");
    assert_eq!(m.model_label(Some("sdxl")), "sdxl");
}

fn record(m: &Metrics, status: u16, body: &str) {
    let c = classify(status, &HeaderMap::new(), body.as_bytes(), &Context::new(RequestKind::Submit));
    let endpoint = m.endpoint_label("/api/v6/images/text2img");
    m.exchanges.record(&Exchange {
        source: Source::Proxy,
        endpoint: &endpoint,
        model: "flux",
        http_status: Some(status),
        classification: &c,
        duration: Duration::from_millis(120),
        time_to_first_token: None,
    });
}

#[test]
fn an_exchange_counts_every_family_it_owns() {
    let m = metrics(8);
    record(&m, 200, r#"{"status":"error","message":"Internal server error. Please try again."}"#);
    record(
        &m,
        429,
        r#"{"status":"error","message":"Rate limit exceeded. Maximum 10 queued requests allowed.","retry_after":30}"#,
    );
    record(&m, 400, r#"{"status":"error","message":"width must be between 256 and 1024"}"#);
    record(&m, 200, r#"{"status":"processing","id":1,"eta":12.5}"#);
    let s = scrape(&m);
    let ep = ("endpoint", "/api/v6/images/text2img");
    let requests = |status, outcome| {
        s.metric("modelslab_requests_total")
            .label(ep.0, ep.1)
            .label("http_status", status)
            .label("outcome", outcome)
            .value()
    };
    assert_eq!(requests("200", "error"), Some(1.0));
    assert_eq!(requests("200", "processing"), Some(1.0));
    let errors = |status, class, reason| {
        s.metric("modelslab_errors_total")
            .label("http_status", status)
            .label("error_class", class)
            .label("reason", reason)
            .value()
    };
    assert_eq!(errors("200", "server_error", "internal_error"), Some(1.0));
    assert_eq!(errors("429", "rate_limited", "queue_full"), Some(1.0));
    assert_eq!(s.metric("modelslab_validation_errors_total").label("field", "width").value(), Some(1.0));
    assert_eq!(s.metric("modelslab_rate_limit_retry_after_seconds_sum").value(), Some(30.0));
    assert_eq!(s.metric("modelslab_rate_limit_queue_limit").value(), Some(10.0));
    assert_eq!(s.metric("modelslab_processing_eta_seconds_sum").value(), Some(12.5));
    assert_eq!(
        s.metric("modelslab_request_duration_seconds_count").label("outcome", "error").label(ep.0, ep.1).value(),
        Some(3.0)
    );
}

#[test]
fn a_job_end_updates_jobs_durations_ratio_and_in_flight() {
    let m = metrics(8);
    m.jobs.started(Source::Probe);
    m.jobs.started(Source::Probe);
    let end = |result, secs| JobEnd {
        source: Source::Probe,
        endpoint: "/api/v6/images/text2img",
        model: "flux",
        result,
        duration: Duration::from_secs(secs),
        first_eta: Some(10.0),
    };
    m.jobs.ended(&end(JobResult::Success, 30));
    m.jobs.ended(&end(JobResult::Expired, 1800));
    let s = scrape(&m);
    assert_eq!(s.metric("modelslab_jobs_in_flight").label("source", "probe").value(), Some(0.0));
    assert_eq!(s.metric("modelslab_jobs_total").label("result", "success").value(), Some(1.0));
    assert_eq!(s.metric("modelslab_job_eta_ratio_count").value(), Some(1.0), "expired jobs have no ratio");
    assert_eq!(s.metric("modelslab_job_eta_ratio_sum").value(), Some(3.0));
}

#[test]
fn status_page_components_that_vanish_lose_their_series() {
    let m = metrics(8);
    let comps = vec![("API".to_owned(), PageStatus::Degraded), ("Video".to_owned(), PageStatus::Operational)];
    m.status_page.state(PageStatus::Degraded, &comps, &[], 2);
    let s = scrape(&m);
    let component = |name, status| {
        s.metric("modelslab_status_page_component_status").label("component", name).label("status", status).value()
    };
    assert_eq!(component("API", "degraded"), Some(1.0));
    assert_eq!(component("API", "operational"), Some(0.0));
    m.status_page.state(PageStatus::Operational, &comps[..1], &["Video".to_owned()], 0);
    let s = scrape(&m);
    assert_eq!(s.metric("modelslab_status_page_component_status").label("component", "Video").count(), 0);
    assert_eq!(s.metric("modelslab_status_page_status").value(), Some(0.0));
    m.status_page.down();
    assert_eq!(scrape(&m).metric("modelslab_status_page_up").value(), Some(0.0));
}

#[test]
fn render_has_build_info_and_reload_state_but_no_unset_gauges() {
    let m = metrics(8);
    m.agent.config_loaded(true);
    let s = scrape(&m);
    assert_eq!(
        s.metric("modelslab_sentinel_build_info").label("version", env!("CARGO_PKG_VERSION")).value(),
        Some(1.0)
    );
    assert_eq!(s.metric("modelslab_sentinel_config_last_reload_success").value(), Some(1.0));
    assert!(!s.has("modelslab_status_page_up"), "no status page configured, no series");
    assert!(m.agent.config_last_reload_success());
    m.agent.config_loaded(false);
    assert!(!m.agent.config_last_reload_success());
    assert!(m.agent.config_last_reload_timestamp() > 1.7e9);
}
