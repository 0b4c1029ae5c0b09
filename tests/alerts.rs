//! The alert rules: `promtool check rules` clean, `promtool test rules` passing, and every alert
//! complete (for, severity, summary, description, runbook_url pointing at a runbook section).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::process::Command;

const RULES: &str = "alerts/modelslab-sentinel.rules.yml";
const TESTS: &[&str] = &[
    "tests/alerts/modelslab-sentinel.test.yml",
    "tests/alerts/slo-and-credits.test.yml",
    "tests/alerts/slo-and-credits-long.test.yml",
];

/// Runs a tool of a Debian package: whether it passed, and what it printed.
fn tool(program: &str, package: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed: apt-get install {package} (scripts/test does): {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn promtool(args: &[&str]) -> (bool, String) {
    tool("promtool", "prometheus", args)
}

#[test]
fn rules_are_valid_and_their_unit_tests_pass() {
    let (ok, out) = promtool(&["check", "rules", RULES]);
    assert!(ok, "{out}");
    for tests in TESTS {
        let (ok, out) = promtool(&["test", "rules", tests]);
        assert!(ok, "{tests}: {out}");
    }
}

#[test]
fn every_alert_is_complete_tested_and_has_a_runbook_section() {
    let rules: serde_json::Value = serde_json::to_value(read_yaml(RULES)).unwrap();
    let runbook = std::fs::read_to_string("docs/runbook.md").unwrap();
    let anchors: Vec<String> =
        runbook.lines().filter_map(|l| l.strip_prefix("## ")).map(|h| h.trim().to_lowercase()).collect();
    let tests: String = TESTS.iter().map(|t| std::fs::read_to_string(t).unwrap()).collect();
    let mut n = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let Some(name) = rule["alert"].as_str() else {
                // A recording rule: Sloth's names for the SLO series, or this project's
                // (level:metric:operations, each with a unit test of its value).
                let record = rule["record"].as_str().unwrap();
                let ours = record.starts_with("modelslab:") && record.split(':').count() == 3;
                assert!(record.starts_with("slo:") || record == "sloth_slo_info" || ours, "{record}");
                if ours {
                    assert!(tests.contains(&format!("expr: round({record},")), "{record}: no unit test of its value");
                }
                continue;
            };
            n += 1;
            assert!(rule["for"].is_string(), "{name}: no `for`");
            assert!(
                ["info", "warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            for key in ["summary", "description", "runbook_url"] {
                assert!(rule["annotations"][key].as_str().is_some_and(|s| s.len() > 10), "{name}: {key}");
            }
            let url = rule["annotations"]["runbook_url"].as_str().unwrap();
            let anchor = url.rsplit('#').next().unwrap();
            assert!(
                url.contains("docs/runbook.md#") && anchors.iter().any(|a| a == anchor),
                "{name}: no runbook section #{anchor}"
            );
            assert!(
                !rule["expr"].as_str().unwrap().contains("http_status=~\"5"),
                "{name}: select errors by error_class"
            );
            assert!(tests.contains(&format!("alertname: {name}\n")), "{name}: no firing unit test");
        }
    }
    assert!(n >= 18, "{n} alerts");
}

fn read_yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    modelslab_sentinel::config::parse_document::<serde_json::Value>(&text).unwrap()
}

#[test]
fn dashboards_use_a_datasource_variable_units_and_descriptions() {
    for file in ["dashboards/overview.json", "dashboards/jobs.json"] {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let vars: Vec<&str> =
            d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        for v in ["datasource", "job", "instance", "source", "endpoint", "model"] {
            assert!(vars.contains(&v), "{file}: no ${v} variable");
        }
        assert!(
            d["annotations"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["expr"].as_str().is_some_and(|e| e.contains("modelslab_status_page_status")))
        );
        for p in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap();
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file} / {title}: hard-coded datasource");
            assert!(p["description"].as_str().is_some_and(|s| s.len() > 20), "{file} / {title}: description");
            assert!(p["fieldConfig"]["defaults"]["unit"].is_string(), "{file} / {title}: unit");
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                // The SLO recordings (slo:…) are already one series per SLO over the agent's replicas.
                assert!(
                    expr.contains("$job") || expr.contains("job=~") || expr.starts_with("slo:"),
                    "{file} / {title}: not filtered by $job"
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}");
            }
        }
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !text.contains("\"uid\": \"P") && !text.contains("grafanacloud"),
            "{file}: a hard-coded datasource uid"
        );
    }
    let overview = std::fs::read_to_string("dashboards/overview.json").unwrap();
    assert!(overview.contains("\"state-timeline\""), "status page as a state timeline");
    for title in [
        "Error budget remaining",
        "Burn rate",
        "SLO events",
        "Balance",
        "Spend per hour",
        "Runway",
        "LLM requests by outcome",
        "LLM errors by class",
        "Tokens per second by model",
        "Time to first token p50 / p95",
        "Finish reasons",
    ] {
        assert!(overview.contains(&format!("\"title\": \"{title}\"")), "overview: no {title} panel");
    }
}

#[test]
fn the_rule_file_is_the_template_rendered_with_the_default_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_modelslab-sentinel")).arg("alert-rules").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(RULES).unwrap();
    assert!(
        committed == String::from_utf8(out.stdout).unwrap(),
        "{RULES} is not `modelslab-sentinel alert-rules`: edit alerts/rules.template.yml or src/alerts.rs, then run `cargo run -- alert-rules > {RULES}`"
    );
    // Settings reach the rules; a wrong one is refused with exit 64.
    let out = Command::new(env!("CARGO_BIN_EXE_modelslab-sentinel"))
        .args(["alert-rules", "--runbook-url", "https://wiki.example.com/sentinel", "--set", "credits_low=20"])
        .output()
        .unwrap();
    let rules = String::from_utf8(out.stdout).unwrap();
    assert!(rules.contains("modelslab_account_balance < 20\n"), "{rules}");
    assert!(rules.contains("runbook_url: \"https://wiki.example.com/sentinel#modelslabcreditslow\""), "{rules}");
    let (ok, check) = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yml");
        std::fs::write(&path, &rules).unwrap();
        promtool(&["check", "rules", path.to_str().unwrap()])
    };
    assert!(ok, "{check}");
    let out = Command::new(env!("CARGO_BIN_EXE_modelslab-sentinel"))
        .args(["alert-rules", "--set", "colour=blue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting `colour`"));
}

const ALERTMANAGER: &str = "alerts/alertmanager.example.yml";

fn amtool(args: &[&str]) -> (bool, String) {
    tool("amtool", "prometheus-alertmanager", args)
}

#[test]
fn the_example_alertmanager_config_is_valid_and_routes_by_severity() {
    let (ok, out) = amtool(&["check-config", ALERTMANAGER]);
    assert!(ok, "{out}");
    assert!(out.contains("2 inhibit rules") && out.contains("3 receivers"), "{out}");
    let config = format!("--config.file={ALERTMANAGER}");
    for (labels, receiver) in [
        (
            &["severity=critical", "alertname=ModelslabApiServerErrorsCritical", "endpoint=/api/v6/images/text2img"][..],
            "page",
        ),
        (&["severity=critical", "alertname=ModelslabSentinelDown"][..], "page"),
        (&["severity=warning", "alertname=ModelslabRateLimited"][..], "ticket"),
        (&["severity=info", "alertname=ModelslabMaintenance", "source=config"][..], "notice"),
        // Without a known severity it still reaches someone.
        (&["alertname=SomethingElse"][..], "ticket"),
    ] {
        let mut args = vec!["config", "routes", "test", config.as_str()];
        let verify = format!("--verify.receivers={receiver}");
        args.push(&verify);
        args.extend_from_slice(labels);
        let (ok, out) = amtool(&args);
        assert!(ok, "{labels:?} should reach {receiver}: {out}");
    }
    // Every alert of the rule files has a severity the routes know.
    let rules = std::fs::read_to_string(RULES).unwrap();
    for severity in rules.lines().filter_map(|l| l.trim().strip_prefix("labels: { severity: ")) {
        let severity = severity.trim_end_matches(" }");
        assert!(["critical", "warning", "info"].contains(&severity), "{severity}");
    }
}
