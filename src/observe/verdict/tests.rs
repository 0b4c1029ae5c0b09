//! The verdict as a table: documents in, state and first reason out.

use super::*;
use crate::observe::history::SloView;
use crate::observe::status::{
    AccountView, AdminAccess, Backoff, BalanceView, ConfigState, ModelsView, Parts, ProbeView, QueueView,
    StatusDocument, StatusPageView,
};
use crate::vocab::{AnswerOutcome, BackoffReason, FinalAnswer, ProbeFailure, RunOutcome, RunReport};

fn config() -> ConfigState {
    ConfigState {
        file: "sentinel.yaml".into(),
        admin_access: AdminAccess::LoopbackOnly,
        last_reload_success: true,
        last_reload_success_timestamp_seconds: 0.0,
        last_reload_error: None,
        restart_required_for: Vec::new(),
    }
}

fn probe(name: &str, outcome: Option<(bool, Option<ErrorClass>)>) -> ProbeView {
    let last = outcome.map(|(success, class)| RunReport {
        probe: name.into(),
        outcome: if success {
            RunOutcome::Success
        } else {
            RunOutcome::Failure {
                reason: ProbeFailure::Expectation,
                failed_expectations: vec!["status is error, expected success".into()],
            }
        },
        duration_seconds: 1.0,
        started_at_unix: 0.0,
        answer: Some(FinalAnswer {
            http_status: Some(200),
            outcome: match class {
                Some(error_class) => AnswerOutcome::Error { error_class, reason: crate::classify::Reason::Other },
                None => AnswerOutcome::Success,
            },
            message: None,
            job_id: None,
            retry_after_seconds: None,
        }),
        exchanges: Vec::new(),
    });
    ProbeView { last, ..ProbeView::new(name, std::time::Duration::from_secs(60)) }
}

fn page(status: PageStatus) -> StatusPageView {
    StatusPageView {
        url: "http://x/status".into(),
        format: None,
        up: Some(true),
        status: Some(status),
        incidents_open: Some(0),
        components: Vec::new(),
        last_error: None,
        last_change: None,
    }
}

/// A healthy document: two passing probes, 40 requests of which 1 an API fault, an operational page.
fn healthy() -> StatusDocument {
    let mut parts = Parts {
        probes: vec![probe("a", Some((true, None))), probe("b", Some((true, None)))],
        status_page: Some(page(PageStatus::Operational)),
        ..Parts::default()
    };
    parts.recent.totals.requests = 40;
    parts.recent.totals.requests_5m = 40;
    parts.recent.totals.api_faults_5m = 1;
    StatusDocument::judge(true, config(), parts)
}

fn judged(mut doc: StatusDocument) -> Overall {
    doc.overall = Overall::default();
    assess(&doc)
}

#[test]
#[allow(clippy::too_many_lines)] // one table, one row per rule
fn each_rule_in_a_table() {
    type Change = fn(&mut StatusDocument);
    let table: &[(&str, Change, Health, &str)] = &[
        (
            "healthy",
            |_| {},
            Health::Healthy,
            "2 of 2 probes passing, 40 requests in the last 15 minutes, status page operational",
        ),
        ("not ready", |d| d.ready = false, Health::Degraded, "the agent is starting or shutting down"),
        (
            "a probe failing",
            |d| d.probes[1] = probe("b", Some((false, Some(ErrorClass::ServerError)))),
            Health::Degraded,
            "probe b failing: expectation (status is error, expected success)",
        ),
        (
            "every probe failing",
            |d| {
                d.probes[0] = probe("a", Some((false, None)));
                d.probes[1] = probe("b", Some((false, None)));
            },
            Health::Failing,
            "every probe is failing (2) (and 2 more)",
        ),
        (
            "out of credits",
            |d| d.probes[0] = probe("a", Some((false, Some(ErrorClass::PaymentRequired)))),
            Health::Failing,
            "probe a: the key is out of credits (402)",
        ),
        (
            "key refused",
            |d| d.probes[0] = probe("a", Some((false, Some(ErrorClass::Unauthorized)))),
            Health::Failing,
            "probe a: the key is refused (unauthorized)",
        ),
        (
            "backing off",
            |d| d.probes[0].backoff = Some(Backoff { reason: BackoffReason::RateLimited, remaining_seconds: 29.6 }),
            Health::Degraded,
            "probe a paused for 30 s after rate_limited",
        ),
        (
            "API faults over 5 %",
            |d| d.recent.totals.api_faults_5m = 4,
            Health::Degraded,
            "10 % of the last 5 minutes' 40 requests failed on the API's side",
        ),
        (
            "API faults over 25 %",
            |d| d.recent.totals.api_faults_5m = 20,
            Health::Failing,
            "50 % of the last 5 minutes' 40 requests failed on the API's side",
        ),
        (
            "few requests are not judged",
            |d| {
                d.recent.totals.requests_5m = 3;
                d.recent.totals.api_faults_5m = 3;
            },
            Health::Healthy,
            "2 of 2 probes passing, 40 requests in the last 15 minutes, status page operational",
        ),
        (
            "429s",
            |d| d.recent.totals.rate_limited_5m = 8,
            Health::Degraded,
            "20 % of requests hit the queue limit (429)",
        ),
        (
            "402s",
            |d| d.recent.totals.payment_required_5m = 8,
            Health::Degraded,
            "20 % of requests were refused for credits (402)",
        ),
        (
            "jobs late",
            |d| {
                d.recent.jobs.with_eta = 6;
                d.recent.jobs.over_twice_eta = 3;
            },
            Health::Degraded,
            "3 of 6 jobs took over twice their eta",
        ),
        (
            "webhook missing",
            |d| {
                d.recent.webhooks.insert(WebhookResult::Missing, 2);
            },
            Health::Degraded,
            "2 webhook(s) never came in the last 15 minutes",
        ),
        (
            "vendor major outage",
            |d| d.status_page = Some(page(PageStatus::MajorOutage)),
            Health::Failing,
            "the status page reports a major outage",
        ),
        (
            "vendor partial outage",
            |d| d.status_page = Some(page(PageStatus::PartialOutage)),
            Health::Degraded,
            "the status page reports partial outage",
        ),
        (
            "status page unreadable",
            |d| d.status_page.as_mut().unwrap().up = Some(false),
            Health::Degraded,
            "the status page cannot be read",
        ),
        (
            "no credits",
            |d| {
                d.account = Some(AccountView {
                    balance: Some(BalanceView {
                        balance: Some(0.0),
                        currency: Some("USD".into()),
                        up: Some(true),
                        last_error: None,
                        spent: 0.0,
                    }),
                    ..AccountView::default()
                });
            },
            Health::Failing,
            "no credits left",
        ),
        (
            "balance poll failing",
            |d| {
                d.account = Some(AccountView {
                    balance: Some(BalanceView { up: Some(false), ..BalanceView::default() }),
                    ..AccountView::default()
                });
            },
            Health::Degraded,
            "the credit balance cannot be polled",
        ),
        (
            "the account's queue nearly full",
            |d| {
                let queue = QueueView { depth: Some(4), limit: Some(5), up: Some(true), ..QueueView::default() };
                d.account = Some(AccountView { queue: Some(queue), ..AccountView::default() });
            },
            Health::Degraded,
            "the account's queue holds 4 of its 5 requests (every client of the key)",
        ),
        (
            "a model delisted",
            |d| {
                let models = ModelsView { delisted: vec!["flux".into()], up: Some(true), ..ModelsView::default() };
                d.account = Some(AccountView { models: Some(models), ..AccountView::default() });
            },
            Health::Degraded,
            "no longer in the model catalogue: flux",
        ),
        (
            "an SLO burning fast",
            |d| {
                d.recent.slos.push(SloView {
                    name: "avail".into(),
                    objective: 99.0,
                    min_events: 10,
                    good_total: 0,
                    bad_total: 0,
                    budget_spent_ratio: None,
                    events_15m: 20,
                    burn_rate_15m: Some(PAGE_BURN_RATE_FAST),
                });
            },
            Health::Degraded,
            "SLO avail burns its error budget at 14x",
        ),
        (
            "a failed reload",
            |d| d.config.last_reload_success = false,
            Health::Degraded,
            "the last config reload failed: the previous config runs",
        ),
    ];
    for (name, change, state, why) in table {
        let mut doc = healthy();
        change(&mut doc);
        let o = judged(doc);
        assert_eq!((o.state, o.why.as_str()), (*state, *why), "{name}: {o:?}");
    }
}

#[test]
fn an_empty_document_is_healthy_and_findings_come_worst_first() {
    let empty = StatusDocument::judge(true, config(), Parts::default());
    assert_eq!(empty.overall.state, Health::Healthy);
    let mut doc = healthy();
    doc.status_page = Some(page(PageStatus::PartialOutage));
    doc.probes[0] = probe("a", Some((false, Some(ErrorClass::PaymentRequired))));
    let o = judged(doc);
    let severities: Vec<Health> = o.findings.iter().map(|f| f.severity).collect();
    assert_eq!(severities, [Health::Failing, Health::Degraded]);
}

#[test]
fn maintenance_is_a_note_that_changes_no_verdict() {
    let mut doc = healthy();
    doc.maintenance = crate::maintenance::MaintenanceView {
        active: true,
        window: Some("weekly-deploy".into()),
        until: Some("2026-12-06T03:00:00Z".into()),
        vendor: false,
        pause_probes: PauseProbes::Paid,
        windows: 1,
    };
    let o = judged(doc.clone());
    assert_eq!(o.state, Health::Healthy);
    assert_eq!(
        o.why,
        "2 of 2 probes passing, 40 requests in the last 15 minutes, status page operational; \
         maintenance window weekly-deploy until 2026-12-06T03:00:00Z: paid probes pause"
    );
    doc.maintenance.vendor = true;
    doc.status_page = Some(page(PageStatus::MajorOutage));
    let o = judged(doc);
    assert_eq!((o.state, o.why.as_str()), (Health::Failing, "the status page reports a major outage"));
    // The notes stay among the findings.
}
