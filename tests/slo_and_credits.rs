//! Error budgets and credits, in the agent against the emulator: each SLO kind judging its events
//! (and a reload adding and removing SLOs), and the wallet balance polled through the API's error
//! model (a revoked key is a failed poll, not a balance of 0; the last balance stays).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use modelslab_sentinel::sim::{Faults, Scenario, Span, Wallet};
use serde_json::json;

fn slo_count(m: &Scrape, slo: &str, result: &str) -> f64 {
    m.metric("modelslab_slo_events_total").label("slo", slo).label("result", result).sum()
}

#[tokio::test]
async fn each_slo_judges_its_own_events_and_reloads_add_and_remove_them() {
    let sim = emulator(Scenario {
        job_duration: Span::fixed(Duration::from_millis(300)),
        faults: Faults { server_error: 0.5, ..Faults::default() },
        seed: 5,
        ..Scenario::default()
    })
    .await;
    let slos = concat!(
        "slos:\n",
        "  - name: proxy-availability\n    objective: 99.5\n    sli:\n      requests:\n        source: proxy\n        endpoints: [/api/v6/images/text2img]\n",
        "  - name: jobs-in-time\n    objective: 99\n    window: 28d\n    min_events: 3\n    sli:\n      jobs: { source: any, max_duration: 60s }\n",
        "  - name: validation-probe\n    objective: 99\n    window: 7d\n    sli:\n      probes: [validation]\n",
    );
    let probes = "probes:\n  - name: validation\n    interval: 1h\n    timeout: 5s\n    request: { path: /api/v6/images/text2img, body: { model_id: flux } }\n    expect: { reason: missing_parameter }\n";
    let text =
        format!("upstream:\n  base_url: {}\n  api_key: slo-key\nproxy:\n  enabled: true\n{probes}{slos}", sim.url);
    let a = Agent::start(&text).await;
    let m = a.metrics();
    for (slo, objective, window, min) in [
        ("proxy-availability", 0.995, 2_592_000.0, 10.0),
        ("jobs-in-time", 0.99, 2_419_200.0, 3.0),
        ("validation-probe", 0.99, 604_800.0, 10.0),
    ] {
        assert_eq!(m.metric("modelslab_slo_objective_ratio").label("slo", slo).value(), Some(objective));
        assert_eq!(m.metric("modelslab_slo_window_seconds").label("slo", slo).value(), Some(window));
        assert_eq!(m.metric("modelslab_slo_min_events").label("slo", slo).value(), Some(min));
        assert_eq!(
            m.metric("modelslab_slo_events_total").label("slo", slo).value(),
            Some(0.0),
            "series from the start"
        );
    }
    // 40 generations through the proxy, half of them answered with a 500 by the emulator; and 10
    // requests without a prompt (a 400 is the caller's fault, good for the API).
    let mut ids = Vec::new();
    for n in 0..40 {
        let v = post_json(
            &format!("{}/api/v6/images/text2img", a.proxy),
            &json!({"key": format!("sim-premium-{}", n / 10), "prompt": "p"}),
        )
        .await;
        if let Some(id) = v["id"].as_u64() {
            ids.push((id, format!("sim-premium-{}", n / 10)));
        }
    }
    for _ in 0..10 {
        http()
            .post(format!("{}/api/v6/images/text2img", a.proxy))
            .json(&json!({"key": "k", "model_id": "flux"}))
            .send()
            .await
            .unwrap();
    }
    let m = a.metrics();
    let errors = m.metric("modelslab_errors_total").label("source", "proxy").label("error_class", "server_error").sum();
    assert!(errors > 0.0);
    assert_eq!(slo_count(&m, "proxy-availability", "bad"), errors, "each 500 is bad");
    assert_eq!(slo_count(&m, "proxy-availability", "good") + errors, 50.0, "every exchange on the endpoint is judged");
    // The jobs end through polls (the faults over by now).
    sim.set_scenario("job_duration: 300ms\n").await;
    for (id, key) in &ids {
        let done = poll_job(
            &format!("{}/api/v6/images/fetch/{id}", a.proxy),
            &json!({"key": key}),
            Duration::from_millis(100),
            40,
        )
        .await;
        assert_eq!(done["status"], "success");
    }
    eventually(Duration::from_secs(5), "every job judged", async || {
        slo_count(&a.metrics(), "jobs-in-time", "good") == ids.len() as f64
    })
    .await;
    assert_eq!(slo_count(&a.metrics(), "jobs-in-time", "bad"), 0.0);
    assert_eq!(
        slo_count(&a.metrics(), "proxy-availability", "good") + slo_count(&a.metrics(), "proxy-availability", "bad"),
        50.0,
        "polls are another endpoint"
    );
    // A probe run, judged by the probes SLO.
    let report = post(&format!("{}/api/v1/probes/validation/run", a.admin), "").await.1;
    let success = report.contains("\"result\":\"success\"");
    let m = a.metrics();
    assert_eq!(slo_count(&m, "validation-probe", if success { "good" } else { "bad" }), 1.0, "{report}");

    // A reload drops one SLO (its series go) and adds another.
    let changed = text.replace(
        "  - name: jobs-in-time\n    objective: 99\n    window: 28d\n    min_events: 3\n    sli:\n      jobs: { source: any, max_duration: 60s }\n",
        "  - name: probe-requests\n    objective: 90\n    sli:\n      requests: { source: probe }\n",
    );
    assert_eq!(a.reload(&changed).await, Ok(()));
    let m = a.metrics();
    assert_eq!(m.metric("modelslab_slo_events_total").label("slo", "jobs-in-time").count(), 0, "removed");
    assert_eq!(m.metric("modelslab_slo_objective_ratio").label("slo", "probe-requests").value(), Some(0.9));
    assert!(slo_count(&m, "proxy-availability", "good") > 0.0, "kept SLOs keep their counts");
    a.stop().await;
}

#[tokio::test]
async fn the_balance_is_polled_through_the_error_model_and_kept_when_a_poll_fails() {
    let key = "sk-canary-wallet-key-33";
    let sim = emulator(Scenario {
        wallet: Wallet { balance: 10.0, cost: 0.5 },
        job_duration: Span::fixed(Duration::from_millis(200)),
        ..Scenario::default()
    })
    .await;
    let text = format!(
        "upstream:\n  base_url: {}\n  api_key: {key}\nproxy:\n  enabled: true\naccount:\n  balance:\n    enabled: true\n    interval: 300ms\n    timeout: 200ms\ntelemetry:\n  log_level: debug\n",
        sim.url
    );
    let a = Process::agent(&text, &[], &[]);
    eventually(Duration::from_secs(5), "the balance is read", async || {
        a.metrics().await.metric("modelslab_account_balance").label("currency", "USD").value() == Some(10.0)
    })
    .await;
    let m = a.metrics().await;
    assert_eq!(m.metric("modelslab_account_balance_up").value(), Some(1.0));
    assert!(m.metric("modelslab_account_balance_last_success_timestamp_seconds").value().unwrap() > 1.7e9);
    // The agent's own key spends: 4 images through the proxy.
    for _ in 0..2 {
        let r = http()
            .post(format!("{}/api/v6/images/text2img", a.proxy))
            .json(&json!({"key": key, "prompt": "p", "samples": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    eventually(Duration::from_secs(5), "the balance falls with the spend", async || {
        a.metrics().await.metric("modelslab_account_balance").label("currency", "USD").value() == Some(8.0)
    })
    .await;
    // The key is revoked: a failed poll (a key problem, not a balance of 0), the last balance kept.
    let revoked = Scenario { account: modelslab_sentinel::sim::scenario::Account::Revoked, ..Scenario::default() };
    sim.set_scenario(&serde_json::to_string(&revoked).unwrap()).await;
    eventually(Duration::from_secs(5), "the poll fails", async || {
        a.metrics().await.metric("modelslab_account_balance_up").value() == Some(0.0)
    })
    .await;
    let m = a.metrics().await;
    assert_eq!(m.metric("modelslab_account_balance").label("currency", "USD").value(), Some(8.0), "kept");
    let status: serde_json::Value = serde_json::from_str(&get(&format!("{}/api/v1/status", a.admin)).await.1).unwrap();
    let why = status["account"]["balance"]["last_error"].as_str().unwrap();
    assert_eq!(why, "HTTP 401, unauthorized/invalid_api_key: Invalid API key");
    let log = a.process.log();
    assert_eq!(log.matches("account balance poll failed").count(), 1, "warned once:\n{log}");
    // Credits again: up again.
    sim.set_scenario("wallet: { balance: 3, cost: 0.5 }\n").await;
    eventually(Duration::from_secs(5), "readable again", async || {
        let m = a.metrics().await;
        m.metric("modelslab_account_balance_up").value() == Some(1.0)
            && m.metric("modelslab_account_balance").label("currency", "USD").value() == Some(3.0)
    })
    .await;
    let everything =
        format!("{}{}{}", a.metrics().await, get(&format!("{}/api/v1/status", a.admin)).await.1, a.process.log());
    assert!(!everything.contains(key), "the key leaked");
}
