//! The Helm chart: `helm lint` (through helm-sdkpy) with the default and ci/ values, the values
//! schema (accepting ours, refusing wrong types), the chart's agent config accepted by
//! `check-config`, and the PrometheusRule and dashboards carrying exactly the repository's files.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::Command;

const CHART: &str = "helm/modelslab-sentinel";

#[test]
fn helm_lint_and_the_values_schema() {
    let out = Command::new("python3").arg("scripts/helm-check.py").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}\n(scripts/test installs helm-sdkpy, cffi, jsonschema and pyyaml)");
    for line in [
        "helm lint ok: values.yaml",
        "helm lint ok: ci/probe-only-values.yaml",
        "helm lint ok: ci/proxy-values.yaml",
        "schema refuses: replicaCount as a string",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

fn values_config(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(file).unwrap();
    let values: serde_json::Value = modelslab_sentinel::config::parse_document(&text).unwrap();
    values["config"].clone()
}

#[test]
fn the_charts_agent_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    for file in [format!("{CHART}/values.yaml"), format!("{CHART}/ci/proxy-values.yaml")] {
        // JSON is YAML: the config as the ConfigMap would carry it.
        let path = common::write(dir.path(), "sentinel.yaml", &values_config(&file).to_string());
        let (code, stdout, stderr) =
            common::run_to_end(&["check-config", "--config", &path], &[("MODELSLAB_API_KEY", "sk-chart")]);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(!stdout.contains("sk-chart"));
    }
    // The chart's defaults are config/sentinel.yaml's free probes.
    let chart: Vec<String> = values_config(&format!("{CHART}/values.yaml"))["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let repo: serde_json::Value =
        modelslab_sentinel::config::parse_document(&std::fs::read_to_string("config/sentinel.yaml").unwrap()).unwrap();
    let repo: Vec<String> =
        repo["probes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(chart, repo);
}

#[test]
fn rules_and_dashboards_in_the_chart_are_the_repositorys_own() {
    let same = |a: &str, b: &str| {
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{a} differs from {b}: copy it again")
    };
    same("alerts/modelslab-sentinel.rules.yml", &format!("{CHART}/files/modelslab-sentinel.rules.yml"));
    for d in ["overview.json", "jobs.json"] {
        same(&format!("dashboards/{d}"), &format!("{CHART}/files/dashboards/{d}"));
    }
    let rule = std::fs::read_to_string(format!("{CHART}/templates/prometheusrule.yaml")).unwrap();
    assert!(rule.contains(".Files.Get \"files/modelslab-sentinel.rules.yml\""));
    let dash = std::fs::read_to_string(format!("{CHART}/templates/dashboards-configmap.yaml")).unwrap();
    assert!(dash.contains(".Files.Glob \"files/dashboards/*.json\"") && !dash.contains("grafana_dashboard"));
    let values = std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap();
    assert!(values.contains("grafana_dashboard: \"1\""), "the Grafana sidecar label");
    let deploy = std::fs::read_to_string(format!("{CHART}/templates/deployment.yaml")).unwrap();
    for needle in ["checksum/config", "readOnlyRootFilesystem", "/healthz", "/readyz", "automountServiceAccountToken"] {
        assert!(deploy.contains(needle) || values.contains(needle), "deployment: {needle}");
    }
}
