use super::*;
use PageStatus as S;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/statuspage/", $name)).as_slice()
    };
}

fn names(s: &Snapshot) -> Vec<(&str, &str)> {
    s.components.iter().map(|(n, st)| (n.as_str(), st.as_str())).collect()
}

#[test]
fn atlassian_statuspage() {
    let ok = parse(PageFormat::Statuspage, fixture!("statuspage-operational.json"), &[]).unwrap();
    assert_eq!((ok.status, ok.incidents_open), (S::Operational, 0));
    assert_eq!(
        names(&ok),
        [("API", "operational"), ("Image Generation", "operational"), ("Website", "operational")],
        "groups are not components"
    );

    let partial = parse(PageFormat::Statuspage, fixture!("statuspage-partial-outage.json"), &[]).unwrap();
    assert_eq!(partial.status, S::PartialOutage, "the worst component beats the `minor` indicator");
    assert_eq!(partial.incidents_open, 1, "resolved incidents are not open");
    assert_eq!(names(&partial)[1], ("Image Generation", "partial_outage"));

    let maint = parse(PageFormat::Statuspage, fixture!("statuspage-maintenance.json"), &[]).unwrap();
    assert_eq!((maint.status, names(&maint)), (S::Maintenance, vec![("API", "maintenance")]));

    let critical = parse(PageFormat::Statuspage, fixture!("statuspage-status-critical.json"), &[]).unwrap();
    assert_eq!((critical.status, critical.components.len()), (S::MajorOutage, 0));
    assert_eq!(detect(fixture!("statuspage-status-critical.json")), Some(PageFormat::Statuspage));
}

#[test]
fn instatus() {
    let up = parse(PageFormat::Instatus, fixture!("instatus-summary-up.json"), &[]).unwrap();
    assert_eq!((up.status, up.incidents_open), (S::Operational, 0));
    let summary: Value = serde_json::from_slice(fixture!("instatus-summary-hasissues.json")).unwrap();
    let components: Value = serde_json::from_slice(fixture!("instatus-components.json")).unwrap();
    let s = super::instatus(&summary, Some(&components)).unwrap();
    assert_eq!((s.status, s.incidents_open), (S::MajorOutage, 1));
    assert_eq!(names(&s), [("API", "operational"), ("Image Generation", "major_outage"), ("Video", "degraded")]);
    assert_eq!(super::instatus(&summary, None).unwrap().status, S::Degraded);
    assert_eq!(detect(fixture!("instatus-summary-up.json")), Some(PageFormat::Instatus));
}

#[test]
fn better_stack() {
    let s = parse(PageFormat::Betterstack, fixture!("betterstack-degraded.json"), &[]).unwrap();
    assert_eq!((s.status, s.incidents_open), (S::MajorOutage, 1));
    assert_eq!(names(&s), [("API", "operational"), ("Image Generation", "degraded"), ("Video", "major_outage")]);
    assert_eq!(detect(fixture!("betterstack-degraded.json")), Some(PageFormat::Betterstack));
}

#[test]
fn html_keywords_default_and_configured() {
    assert_eq!(parse(PageFormat::Html, fixture!("html-operational.html"), &[]).unwrap().status, S::Operational);
    assert_eq!(
        parse(PageFormat::Html, fixture!("html-major.html"), &[]).unwrap().status,
        S::MajorOutage,
        "the worst phrase wins"
    );
    let rules = vec![
        HtmlRule { contains: "everything is fine".into(), status: S::Operational },
        HtmlRule { contains: "on fire".into(), status: S::MajorOutage },
    ];
    assert_eq!(parse(PageFormat::Html, b"<p>Everything is FINE</p>", &rules).unwrap().status, S::Operational);
    assert_eq!(
        parse(PageFormat::Html, b"<p>Everything is fine. The kitchen is on fire.</p>", &rules).unwrap().status,
        S::MajorOutage
    );
    assert_eq!(parse(PageFormat::Html, b"<p>hello</p>", &[]), Err(ParseError::NoPhrase));
    assert_eq!(detect(fixture!("html-operational.html")), None);
}

#[test]
fn malformed_and_truncated_documents_are_errors_not_panics() {
    let full = fixture!("statuspage-partial-outage.json").trim_ascii_end();
    for cut in [0, 1, 10, full.len() / 2, full.len() - 1] {
        assert!(parse(PageFormat::Statuspage, &full[..cut], &[]).is_err(), "cut at {cut}");
    }
    for (format, body) in [
        (PageFormat::Statuspage, &br#"{"status":{"indicator":"purple"}}"#[..]),
        (PageFormat::Statuspage, br#"[]"#),
        (PageFormat::Instatus, br#"{"page":{"status":42}}"#),
        (PageFormat::Betterstack, br#"{"data":{"attributes":{}}}"#),
        (PageFormat::Betterstack, b"\xff\xfe\x00garbage"),
        (PageFormat::Html, b""),
    ] {
        assert!(parse(format, body, &[]).is_err(), "{format:?} {body:?}");
    }
    // Odd but valid: components with missing names or unknown states are skipped or operational.
    let odd = br#"{"status":{"indicator":"none"},"components":[{"status":"operational"},{"name":"  ","status":"x"},{"name":"API","status":"weird"}]}"#;
    assert_eq!(names(&parse(PageFormat::Statuspage, odd, &[]).unwrap()), [("API", "operational")]);
}

proptest::proptest! {
    #[test]
    fn never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        for f in [PageFormat::Statuspage, PageFormat::Instatus, PageFormat::Betterstack, PageFormat::Html] {
            let _ = parse(f, &body, &[]);
        }
        let _ = detect(&body);
    }
}

#[test]
fn maintenance_in_progress_is_told_apart_from_maintenance_announced() {
    let maint = parse(PageFormat::Statuspage, fixture!("statuspage-maintenance.json"), &[]).unwrap();
    assert!(maint.maintenance);
    assert!(!parse(PageFormat::Statuspage, fixture!("statuspage-operational.json"), &[]).unwrap().maintenance);
    let doc = |maintenances: &str, status: &str| {
        format!(
            r#"{{"status":{{"indicator":"{status}"}},"components":[{{"name":"API","status":"operational"}}],"scheduled_maintenances":[{maintenances}]}}"#
        )
    };
    let announced = doc(r#"{"id":"m","status":"scheduled"}"#, "none");
    let under_way = doc(r#"{"id":"m","status":"in_progress"}"#, "none");
    let over = doc(r#"{"id":"m","status":"completed"}"#, "none");
    let during_an_outage = doc(r#"{"id":"m","status":"in_progress"}"#, "critical");
    let read = |d: &str| parse(PageFormat::Statuspage, d.as_bytes(), &[]).unwrap();
    assert_eq!((read(&announced).status, read(&announced).maintenance), (S::Operational, false));
    assert_eq!((read(&under_way).status, read(&under_way).maintenance), (S::Maintenance, true));
    assert!(!read(&over).maintenance);
    let worse = read(&during_an_outage);
    assert_eq!(
        (worse.status, worse.maintenance),
        (S::MajorOutage, true),
        "an outage shows, the maintenance still counts"
    );
    let html = parse(PageFormat::Html, b"<p>Service Under Maintenance</p>", &[]).unwrap();
    assert!(html.maintenance);
}
