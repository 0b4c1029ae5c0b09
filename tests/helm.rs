//! The Helm chart as a Kubernetes user gets it: rendered by a real `helm template` (Helm v4) with
//! the default values of the README's install, each `ci/*-values.yaml`, and values that turn every
//! option on; every object validated against the Kubernetes schemas of several versions (PyPI
//! `kubernetes-validate`, strict) and the Prometheus Operator's (npm
//! `@kubernetes-models/prometheus-operator`); the rendered agent config through `check-config`,
//! the rendered PrometheusRule through `promtool check rules`; selectors, ports, probes and names
//! checked against each other. Then the defects rendering once found, each with its own check.
//! `scripts/test` installs helm, kubernetes-validate and the npm package when they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::render_chart;
use serde_json::{Value, json};

const CHART: &str = "helm/modelslab-sentinel";
/// The install the README shows: an image you pushed and the key from a Secret you made.
const README_INSTALL: &[&str] =
    &["image.repository=registry.example.com/platform/modelslab-sentinel", "apiKey.existingSecret=modelslab-api-key"];
/// Kubernetes versions the objects are validated against (the chart says >= 1.23; the oldest
/// schema kubernetes-validate ships is 1.25).
const KUBE_VERSIONS: &[&str] = &["1.25.0", "1.30.0", "1.35.0"];

fn render(files: &[&str], sets: &[&str]) -> Result<Vec<Value>, String> {
    render_chart(CHART, "sentinel", files, sets)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let all = of_kind(objects, kind);
    assert_eq!(all.len(), 1, "exactly one {kind}");
    all[0]
}

/// Feeds `objects` as JSON to a checker program; its output, and whether it passed.
fn checker(program: &str, args: &[&str], objects: &[&Value]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed (scripts/test installs it): {e}"));
    child.stdin.take().unwrap().write_all(serde_json::to_string(objects).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Every object valid for Kubernetes (strict, several versions) or the Prometheus Operator.
fn validate_schemas(objects: &[Value]) {
    let (crds, core): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| o["apiVersion"].as_str().is_some_and(|v| v.starts_with("monitoring.coreos.com")));
    let mut args = vec!["tests/k8s/validate.py"];
    args.extend_from_slice(KUBE_VERSIONS);
    let (ok, out) = checker("python3", &args, &core);
    assert!(ok, "kubernetes-validate:\n{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("valid ")).count(), core.len() * KUBE_VERSIONS.len(), "{out}");
    if !crds.is_empty() {
        let (ok, out) = checker("node", &["tests/k8s/validate-crds.mjs"], &crds);
        assert!(ok, "prometheus-operator schemas:\n{out}");
    }
}

/// The Deployment's container.
fn container(objects: &[Value]) -> &Value {
    &one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// The rendered agent config passes `check-config`, with the environment the pod would have.
fn check_agent_config(objects: &[Value]) -> String {
    let configmap = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| c["data"]["sentinel.yaml"].is_string())
        .expect("the agent's ConfigMap");
    let mut text = configmap["data"]["sentinel.yaml"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    // A key file must lie under one of the container's mounts; here it becomes a temporary file.
    let config: Value = modelslab_sentinel::config::parse_document(&text).unwrap();
    if let Some(file) = config["upstream"]["api_key_file"].as_str() {
        let mounts = container(objects)["volumeMounts"].as_array().unwrap();
        assert!(
            mounts.iter().any(|m| file.starts_with(m["mountPath"].as_str().unwrap())),
            "api_key_file {file} is not under any volumeMount: {mounts:?}"
        );
        let local = common::write(dir.path(), "api-key", "sk-from-a-mounted-secret\n");
        text = text.replace(file, &local);
    }
    let path = common::write(dir.path(), "sentinel.yaml", &text);
    let env: Vec<String> = container(objects)["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["valueFrom"]["secretKeyRef"].is_object())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    // What each Secret would hold.
    let value =
        |name: &str| if name == "SENTINEL_REDIS_URL" { "redis://127.0.0.1:6379/0" } else { "sk-from-the-secret" };
    let envs: Vec<(&str, &str)> = env.iter().map(|name| (name.as_str(), value(name))).collect();
    let (code, stdout, stderr) = common::run_to_end(&["check-config", "--config", &path], &envs);
    assert_eq!(code, 0, "the rendered config:\n{text}\n{stderr}");
    assert!(!stdout.contains("sk-from-the-secret") && !stdout.contains("sk-from-a-mounted-secret"));
    stdout
}

/// `promtool check rules` on the rendered PrometheusRule's groups.
fn check_rules(objects: &[Value]) {
    for rule in of_kind(objects, "PrometheusRule") {
        let dir = tempfile::tempdir().unwrap();
        let path = common::write(dir.path(), "rules.yml", &json!({ "groups": rule["spec"]["groups"] }).to_string());
        let out = Command::new("promtool").args(["check", "rules", &path]).output().unwrap();
        assert!(out.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

/// Whether `selector` (matchLabels) selects `target`'s labels.
fn selects(selector: &Value, target: &BTreeMap<String, String>) -> bool {
    let wanted = labels(selector);
    !wanted.is_empty() && wanted.iter().all(|(k, v)| target.get(k) == Some(v))
}

/// Selectors, ports, probes, names and environment agree with each other.
fn cross_check(objects: &[Value]) {
    let deployment = one(objects, "Deployment");
    let pod = &deployment["spec"]["template"];
    let pod_labels = labels(&pod["metadata"]["labels"]);
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"], &pod_labels), "the Deployment selects its pods");
    let c = container(objects);
    let ports: BTreeMap<String, i64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_i64().unwrap()))
        .collect();
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = c[probe]["httpGet"]["port"].as_str().unwrap();
        assert!(ports.contains_key(port), "{probe} uses port {port}, not one of {ports:?}");
    }
    // Kubernetes expands $(VAR) only from variables defined earlier in the list.
    let mut defined: Vec<&str> = Vec::new();
    for e in c["env"].as_array().unwrap() {
        for reference in e["value"].as_str().unwrap_or("").split("$(").skip(1) {
            let name = reference.split(')').next().unwrap();
            assert!(defined.contains(&name), "env {} uses $({name}) before it is defined", e["name"]);
        }
        defined.push(e["name"].as_str().unwrap());
    }
    let mounts: Vec<&str> = c["volumeMounts"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    let volumes: Vec<&str> =
        pod["spec"]["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    for m in &mounts {
        assert!(volumes.contains(m), "volumeMount {m} has no volume");
    }
    assert!(pod["metadata"]["annotations"]["checksum/config"].is_string());
    let services = of_kind(objects, "Service");
    for s in &services {
        assert!(selects(&s["spec"]["selector"], &pod_labels), "Service {} selects the pods", s["metadata"]["name"]);
        for p in s["spec"]["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_str().unwrap();
            assert!(ports.contains_key(target), "Service port {target} is not a container port");
        }
    }
    for sm in of_kind(objects, "ServiceMonitor") {
        let selected: Vec<&&Value> = services
            .iter()
            .filter(|s| selects(&sm["spec"]["selector"]["matchLabels"], &labels(&s["metadata"]["labels"])))
            .collect();
        assert_eq!(selected.len(), 1, "the ServiceMonitor selects the metrics Service alone");
        let service = selected[0];
        let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
        assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == port));
        // The job label Prometheus gets is the one the alert rules select.
        let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
        assert_eq!(service["metadata"]["labels"][job_label], "modelslab-sentinel", "the job label");
    }
    for k in ["PodDisruptionBudget", "NetworkPolicy"] {
        for o in of_kind(objects, k) {
            let selector = if k == "NetworkPolicy" {
                &o["spec"]["podSelector"]["matchLabels"]
            } else {
                &o["spec"]["selector"]["matchLabels"]
            };
            assert!(selects(selector, &pod_labels), "{k} selects the pods");
        }
    }
    for np in of_kind(objects, "NetworkPolicy") {
        for rule in np["spec"]["ingress"].as_array().unwrap() {
            assert!(rule["from"].as_array().is_some_and(|f| !f.is_empty()), "every ingress rule names its peers");
            let port = rule["ports"][0]["port"].as_str().unwrap();
            assert!(ports.contains_key(port));
        }
    }
    for ingress in of_kind(objects, "Ingress") {
        for rule in ingress["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                let backend = &path["backend"]["service"];
                let service = services
                    .iter()
                    .find(|s| s["metadata"]["name"] == backend["name"])
                    .unwrap_or_else(|| panic!("Ingress backend {} is no Service", backend["name"]));
                let port = backend["port"]["name"].as_str().unwrap();
                assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == port));
                assert_eq!(path["path"], "/hooks/", "only the receiver's paths are exposed");
            }
        }
    }
    for hpa in of_kind(objects, "HorizontalPodAutoscaler") {
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"]);
        assert!(hpa["spec"]["minReplicas"].as_i64() <= hpa["spec"]["maxReplicas"].as_i64());
    }
    let secret_names: Vec<&str> =
        of_kind(objects, "Secret").iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    for e in c["env"].as_array().unwrap() {
        if let Some(name) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
            let ours = of_kind(objects, "Secret").into_iter().find(|s| s["metadata"]["name"] == name);
            if let Some(secret) = ours {
                let key = e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
                assert!(secret["data"][key].is_string(), "Secret {name} has no key {key} ({secret_names:?})");
            }
        }
    }
    for o in objects {
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(name.len() <= 63, "{} {name} is longer than 63 characters", o["kind"]);
    }
    let admin = c["ports"].as_array().unwrap().iter().find(|p| p["name"] == "http-metrics").unwrap();
    let grace = pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap();
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let secs = |flag: &str| -> i64 {
        args.iter().find_map(|a| a.strip_prefix(flag)).unwrap().trim_end_matches('s').parse().unwrap()
    };
    assert!(grace > secs("--drain-delay=") + secs("--grace-period="), "the kubelet waits for drain and grace");
    assert!(admin["containerPort"].as_i64().unwrap() > 0);
}

/// Everything a values set must pass.
fn check_all(what: &str, objects: &[Value]) {
    assert!(!objects.is_empty(), "{what}: nothing rendered");
    validate_schemas(objects);
    check_agent_config(objects);
    check_rules(objects);
    cross_check(objects);
}

#[test]
fn every_values_set_renders_objects_that_are_valid_and_agree() {
    let readme = render(&[], README_INSTALL).unwrap();
    check_all("the README's install", &readme);
    let kinds: Vec<&str> = readme.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for k in ["ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let mut files: Vec<String> = std::fs::read_dir(format!("{CHART}/ci"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("everything-values.yaml")));
    for file in &files {
        let objects = render(&[file], &[]).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_all(file, &objects);
    }
    let everything = render(&[&format!("{CHART}/ci/everything-values.yaml")], &[]).unwrap();
    let kinds: Vec<&str> = everything.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for k in [
        "Secret",
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
    ] {
        assert!(kinds.contains(&k), "everything-values renders a {k}: {kinds:?}");
    }
    assert_eq!(of_kind(&everything, "Service").len(), 3, "the metrics, proxy and webhook Services");
    assert_eq!(of_kind(&everything, "Ingress").len(), 1, "the webhook receiver's Ingress");
    assert_eq!(of_kind(&everything, "ConfigMap").len(), 2, "the config and the dashboards");
}

#[test]
fn defect_1_a_default_install_fails_at_render_with_the_reason_instead_of_crash_looping() {
    let bare = render(&[], &[]).unwrap_err();
    assert!(bare.contains("image.repository is required"), "{bare}");
    let no_key = render(&[], &[README_INSTALL[0]]).unwrap_err();
    assert!(no_key.contains("probe \"text2img-validation\" sends the API key, but none is given"), "{no_key}");
    // Probes that bring no key need none.
    let keyless = render(
        &[],
        &[
            README_INSTALL[0],
            "config.probes[0].name=auth",
            "config.probes[0].request.path=/x",
            "config.probes[0].request.inject_key=false",
        ],
    );
    assert!(keyless.is_ok(), "{keyless:?}");
}

#[test]
fn defect_2_the_pod_name_is_defined_before_the_otel_resource_attributes_that_use_it() {
    let objects = render(&[], README_INSTALL).unwrap();
    let env: Vec<&str> =
        container(&objects)["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    let at = |n: &str| env.iter().position(|e| *e == n).unwrap();
    assert!(at("POD_NAME") < at("OTEL_RESOURCE_ATTRIBUTES") && at("POD_NAMESPACE") < at("OTEL_RESOURCE_ATTRIBUTES"));
}

#[test]
fn defect_3_the_chart_works_as_a_subchart_with_global_values() {
    let parent = tempfile::tempdir().unwrap();
    let charts = parent.path().join("charts");
    std::fs::create_dir(&charts).unwrap();
    let copy = Command::new("cp").args(["-r", CHART]).arg(&charts).status().unwrap();
    assert!(copy.success());
    common::write(
        parent.path(),
        "Chart.yaml",
        "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n  - name: modelslab-sentinel\n    version: 0.1.0\n",
    );
    common::write(
        parent.path(),
        "values.yaml",
        "global:\n  imageRegistry: registry.example.com\nmodelslab-sentinel:\n  image:\n    repository: registry.example.com/modelslab-sentinel\n  apiKey:\n    existingSecret: modelslab-api-key\n",
    );
    let objects = render_chart(parent.path().to_str().unwrap(), "platform", &[], &[]).unwrap();
    check_all("as a subchart", &objects);
}

#[test]
fn defect_4_names_stay_within_63_characters_for_long_release_names() {
    let release = "a-release-name-that-is-quite-long-indeed-for-a-chart";
    assert!(release.len() <= 53, "helm's own limit");
    let mut sets = README_INSTALL.to_vec();
    sets.extend(["config.proxy.enabled=true", "dashboards.enabled=true", "serviceMonitor.enabled=true"]);
    let objects = render_chart(CHART, release, &[], &sets).unwrap();
    let proxy =
        of_kind(&objects, "Service").into_iter().find(|s| s["metadata"]["name"].as_str().unwrap().ends_with("-proxy"));
    assert!(proxy.is_some(), "the proxy Service keeps its -proxy suffix");
    cross_check(&objects);
    validate_schemas(&objects);
}

#[test]
fn defect_5_autoscaling_min_above_max_fails_at_render() {
    let mut sets = README_INSTALL.to_vec();
    sets.extend([
        "autoscaling.enabled=true",
        "autoscaling.minReplicas=5",
        "autoscaling.maxReplicas=2",
        "cluster.existingSecret=redis",
    ]);
    let e = render(&[], &sets).unwrap_err();
    assert!(e.contains("autoscaling.minReplicas (5) is above autoscaling.maxReplicas (2)"), "{e}");
}

#[test]
fn defect_6_the_key_can_come_from_a_mounted_file() {
    let dir = tempfile::tempdir().unwrap();
    let values = common::write(
        dir.path(),
        "values.yaml",
        "image:\n  repository: registry.example.com/modelslab-sentinel\nconfig:\n  upstream:\n    base_url: https://modelslab.com\n    api_key_file: /var/run/secrets/modelslab/api-key\n\
         extraVolumes:\n  - { name: api-key, secret: { secretName: modelslab-api-key } }\n\
         extraVolumeMounts:\n  - { name: api-key, mountPath: /var/run/secrets/modelslab, readOnly: true }\n",
    );
    let objects = render(&[&values], &[]).unwrap();
    let shown = check_agent_config(&objects);
    assert!(shown.contains("api_key: <redacted>"), "the key was read from the file:\n{shown}");
    let config = one(&objects, "ConfigMap")["data"]["sentinel.yaml"].as_str().unwrap();
    assert!(!config.contains("api_key: "), "no api_key beside api_key_file:\n{config}");
    cross_check(&objects);
    validate_schemas(&objects);
}

#[test]
fn defect_7_name_override_keeps_the_job_label_the_alert_rules_select() {
    let rules = std::fs::read_to_string("alerts/modelslab-sentinel.rules.yml").unwrap();
    assert!(rules.contains("job=\"modelslab-sentinel\""), "the rules select job=\"modelslab-sentinel\"");
    for name in ["", "sentinel", "something-else"] {
        let mut sets = README_INSTALL.to_vec();
        let o = format!("nameOverride={name}");
        sets.extend(["serviceMonitor.enabled=true", o.as_str()]);
        let objects = render(&[], &sets).unwrap();
        cross_check(&objects); // checks the ServiceMonitor's job label resolves to modelslab-sentinel
    }
}

#[test]
fn defect_8_a_loopback_admin_address_fails_at_render() {
    for listen in ["127.0.0.1:9477", "[::1]:9477", "localhost:9477"] {
        let mut sets = README_INSTALL.to_vec();
        let l = format!("config.admin.listen={listen}");
        sets.push(&l);
        let e = render(&[], &sets).unwrap_err();
        assert!(e.contains("is a loopback address: the kubelet's liveness and readiness probes"), "{listen}: {e}");
    }
}

#[test]
fn several_replicas_need_redis_or_an_explicit_no() {
    for several in [vec!["replicaCount=3"], vec!["autoscaling.enabled=true", "autoscaling.maxReplicas=4"]] {
        let mut sets = README_INSTALL.to_vec();
        sets.extend(several.iter().copied());
        let e = render(&[], &sets).unwrap_err();
        assert!(e.contains("several replicas need Redis to agree"), "{several:?}: {e}");
        let mut with_redis = sets.clone();
        with_redis.push("cluster.existingSecret=sentinel-redis");
        let objects = render(&[], &with_redis).unwrap();
        let env = container(&objects)["env"].as_array().unwrap().clone();
        let url = env.iter().find(|e| e["name"] == "SENTINEL_REDIS_URL").expect("SENTINEL_REDIS_URL");
        assert_eq!(url["valueFrom"]["secretKeyRef"], json!({"name": "sentinel-redis", "key": "redis-url"}));
        let config = one(&objects, "ConfigMap")["data"]["sentinel.yaml"].as_str().unwrap();
        assert!(config.contains("redis_url: ${SENTINEL_REDIS_URL}"), "{config}");
        check_all("several replicas with Redis", &objects);
        sets.push("cluster.allowReplicasWithoutRedis=true");
        assert!(render(&[], &sets).is_ok(), "said so explicitly");
    }
}

#[test]
fn the_webhook_receiver_is_exposed_by_its_own_service_and_ingress() {
    let mut sets = README_INSTALL.to_vec();
    sets.push("config.webhooks.listen=0.0.0.0:9478");
    let e = render(&[], &sets).unwrap_err();
    assert!(e.contains("nothing tells the API where to call"), "{e}");
    let with_ingress = [
        "webhooks.ingress.enabled=true",
        "webhooks.ingress.host=hooks.example.com",
        "webhooks.ingress.tls[0].secretName=hooks-tls",
        "webhooks.ingress.tls[0].hosts[0]=hooks.example.com",
    ];
    sets.extend(with_ingress);
    let objects = render(&[], &sets).unwrap();
    let config = one(&objects, "ConfigMap")["data"]["sentinel.yaml"].as_str().unwrap();
    assert!(config.contains("public_url: https://hooks.example.com"), "{config}");
    let ingress = one(&objects, "Ingress");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "hooks.example.com");
    check_all("the webhook receiver behind an Ingress", &objects);
    // An Ingress without the receiver, or without a host, is refused.
    let mut no_listen = README_INSTALL.to_vec();
    no_listen.extend(with_ingress);
    let e = render(&[], &no_listen).unwrap_err();
    assert!(e.contains("the receiver is off"), "{e}");
}

#[test]
fn a_network_policy_names_its_peers_or_refuses_to_render() {
    let mut sets = README_INSTALL.to_vec();
    sets.push("networkPolicy.enabled=true");
    let e = render(&[], &sets).unwrap_err();
    assert!(e.contains("networkPolicy.metricsFrom is empty"), "{e}");
    sets.push("networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus");
    let objects = render(&[], &sets).unwrap();
    let np = one(&objects, "NetworkPolicy");
    assert_eq!(np["spec"]["ingress"][0]["from"], json!([{"podSelector": {"matchLabels": {"app": "prometheus"}}}]));
    sets.push("config.proxy.enabled=true");
    let e = render(&[], &sets).unwrap_err();
    assert!(e.contains("networkPolicy.proxyFrom is empty"), "{e}");
}

#[test]
fn the_admin_token_reaches_the_agent_from_a_secret() {
    let mut sets = README_INSTALL.to_vec();
    sets.push("adminToken.existingSecret=sentinel-admin");
    let objects = render(&[], &sets).unwrap();
    let env = container(&objects)["env"].as_array().unwrap().clone();
    let token = env.iter().find(|e| e["name"] == "SENTINEL_ADMIN_TOKEN").expect("SENTINEL_ADMIN_TOKEN");
    assert_eq!(token["valueFrom"]["secretKeyRef"], json!({"name": "sentinel-admin", "key": "admin-token"}));
    let shown = check_agent_config(&objects);
    assert!(shown.contains("token: <redacted>"), "the config takes it:\n{shown}");
    // A token given as a value goes into the chart's own Secret, beside the key.
    let objects = render(&[], &["image.repository=r/x", "apiKey.value=k", "adminToken.value=t"]).unwrap();
    let secret = one(&objects, "Secret");
    assert!(secret["data"]["api-key"].is_string() && secret["data"]["admin-token"].is_string());
    cross_check(&objects);
}

#[test]
fn the_values_schema_refuses_wrong_types() {
    for (set, why) in [
        ("replicaCount=two", "replicaCount as a string"),
        ("image.pullPolicy=Sometimes", "an unknown pullPolicy"),
        ("config.telemetry.log_level=loud", "an unknown log level"),
        ("serviceMonitor.enabled=yes", "a string for a boolean"),
        ("colour=blue", "an unknown top-level key"),
        ("config.probes[0].name=Bad Name", "a bad probe name"),
    ] {
        let mut sets = README_INSTALL.to_vec();
        sets.push(set);
        let e = render(&[], &sets).unwrap_err();
        assert!(e.contains("schema"), "{why}: {e}");
    }
}

#[test]
fn rules_and_dashboards_in_the_chart_are_the_repositorys_own() {
    let same = |a: &str, b: &str| {
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{a} differs from {b}: copy it again");
    };
    same("alerts/modelslab-sentinel.rules.yml", &format!("{CHART}/files/modelslab-sentinel.rules.yml"));
    for d in ["overview.json", "jobs.json"] {
        same(&format!("dashboards/{d}"), &format!("{CHART}/files/dashboards/{d}"));
    }
    let objects = render(&[&format!("{CHART}/ci/everything-values.yaml")], &[]).unwrap();
    let rule = one(&objects, "PrometheusRule");
    let repo: Value = modelslab_sentinel::config::parse_document(
        &std::fs::read_to_string("alerts/modelslab-sentinel.rules.yml").unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"]["groups"], repo["groups"], "the rendered rules are the repository's");
    let dashboards = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .unwrap();
    for d in ["overview.json", "jobs.json"] {
        let rendered = dashboards["data"][format!("modelslab-sentinel-{d}")].as_str().unwrap();
        assert_eq!(rendered.trim_end(), std::fs::read_to_string(format!("dashboards/{d}")).unwrap().trim_end());
    }
}

/// The configuration's JSON Schema, as the agent derives it from its types.
fn config_schema() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_modelslab-sentinel")).arg("schema").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_charts_config_schema_is_the_one_derived_from_the_config_types() {
    let mut derived = config_schema();
    derived.as_object_mut().unwrap().remove("$schema");
    let chart: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{CHART}/values.schema.json")).unwrap()).unwrap();
    assert!(
        chart["properties"]["config"] == derived,
        "helm/modelslab-sentinel/values.schema.json differs from `modelslab-sentinel schema` under `config`: run scripts/update-chart-schema"
    );
}

#[test]
fn the_derived_schema_takes_every_shipped_config_and_refuses_a_wrong_one() {
    let schema = config_schema();
    let dir = tempfile::tempdir().unwrap();
    let schema_path = dir.path().join("schema.json");
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "upstream: { base_url: https://x, timeout: soon }\nproxy: { max_connections: many }\ncolour: blue\n",
    )
    .unwrap();
    let script = "import json, sys, yaml, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        v = jsonschema.Draft7Validator(schema)\n\
        for path in sys.argv[2:]:\n\
        \x20   errors = sorted(e.message for e in v.iter_errors(yaml.safe_load(open(path))))\n\
        \x20   print(path, len(errors), '; '.join(errors))\n";
    let mut args = vec!["-c", script, schema_path.to_str().unwrap()];
    args.extend(
        ["config/example.yaml", "config/sentinel.yaml", "tests/fixtures/config/valid.yaml"]
            .iter()
            .filter(|p| Path::new(p).exists()),
    );
    args.push(wrong.to_str().unwrap());
    let out = Command::new("python3").args(&args).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    for line in report.lines() {
        let (path, rest) = line.split_once(' ').unwrap();
        let errors: usize = rest.split(' ').next().unwrap().parse().unwrap();
        if path.ends_with("wrong.yaml") {
            assert_eq!(errors, 3, "a bad duration, a string for a number, an unknown section: {line}");
        } else {
            assert_eq!(errors, 0, "{line}");
        }
    }
}

#[test]
fn the_prometheus_rule_links_to_the_runbook_url_given() {
    let mut sets = README_INSTALL.to_vec();
    sets.extend(["prometheusRule.enabled=true", "prometheusRule.runbookUrl=https://wiki.example.com/sentinel"]);
    let objects = render(&[], &sets).unwrap();
    let rule = one(&objects, "PrometheusRule");
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap().iter().filter(|r| r["alert"].is_string()) {
            alerts += 1;
            let url = r["annotations"]["runbook_url"].as_str().unwrap();
            assert!(url.starts_with("https://wiki.example.com/sentinel#"), "{url}");
        }
    }
    assert!(alerts > 20, "{alerts} alerts");
    check_rules(&objects);
}

#[test]
fn the_alertmanager_config_is_the_example_routing_for_the_operator() {
    let mut sets = README_INSTALL.to_vec();
    sets.push("alertmanagerConfig.enabled=true");
    let missing = render(&[], &sets).unwrap_err();
    assert!(missing.contains("alertmanagerConfig.receivers.page"), "a receiver URL is required: {missing}");
    sets.extend([
        "alertmanagerConfig.receivers.page=https://events.example.com/page",
        "alertmanagerConfig.receivers.ticket=https://events.example.com/ticket",
        "alertmanagerConfig.receivers.notice=https://events.example.com/notice",
    ]);
    let objects = render(&[], &sets).unwrap();
    validate_schemas(&objects);
    let amc = one(&objects, "AlertmanagerConfig");
    // The same routing as alerts/alertmanager.example.yml.
    let example: Value = modelslab_sentinel::config::parse_document(
        &std::fs::read_to_string("alerts/alertmanager.example.yml").unwrap(),
    )
    .unwrap();
    let spec = &amc["spec"];
    assert_eq!(spec["route"]["receiver"], example["route"]["receiver"]);
    assert_eq!(spec["route"]["groupBy"], example["route"]["group_by"]);
    let matchers = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|m| match m.as_str() {
                Some(s) => s.to_owned(),
                None => format!(
                    "{}{}\"{}\"",
                    m["name"].as_str().unwrap(),
                    m["matchType"].as_str().unwrap(),
                    m["value"].as_str().unwrap()
                ),
            })
            .collect()
    };
    let routes = |v: &Value| -> Vec<(String, Vec<String>)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["receiver"].as_str().unwrap().to_owned(), matchers(&r["matchers"])))
            .collect()
    };
    assert_eq!(routes(&spec["route"]["routes"]), routes(&example["route"]["routes"]));
    let ours = spec["inhibitRules"].as_array().unwrap();
    let theirs = example["inhibit_rules"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(matchers(&o["sourceMatch"]), matchers(&t["source_matchers"]));
        assert_eq!(matchers(&o["targetMatch"]), matchers(&t["target_matchers"]));
    }
    let urls: Vec<&str> =
        spec["receivers"].as_array().unwrap().iter().map(|r| r["webhookConfigs"][0]["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls,
        ["https://events.example.com/page", "https://events.example.com/ticket", "https://events.example.com/notice"]
    );
}
