use std::time::Duration;

use super::*;
use crate::classify::Outcome;

fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
}

fn load_with(text: &str, vars: &'static [(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    let var = env_with(vars);
    from_yaml(text, "test.yaml", &Environment { var: &var, base_dir: PathBuf::from(".") })
}

fn problems(text: &str) -> Vec<String> {
    match load_with(text, &[]) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_config_takes_every_default() {
    let c = load_with("upstream:\n  base_url: https://modelslab.com\n", &[]).unwrap();
    assert_eq!(c.upstream.timeout, Duration::from_secs(60));
    assert_eq!(c.admin.listen.to_string(), "0.0.0.0:9477");
    assert!(!c.proxy.enabled);
    assert_eq!(c.proxy.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.proxy.upstream_timeout, Duration::from_secs(300));
    assert_eq!(c.proxy.max_request_body.as_u64(), 32 << 20);
    assert_eq!(c.proxy.inspect_limit.as_u64(), 4 << 20);
    assert_eq!(c.proxy.max_connections, 4096);
    assert_eq!(c.proxy.upstream_max_connections, 256);
    assert_eq!(c.proxy.upstream_max_idle, 64);
    assert_eq!(c.proxy.retry_rate_limited.max_wait, Duration::from_secs(60));
    assert_eq!(c.jobs.ttl, Duration::from_secs(1800));
    assert_eq!(c.jobs.max_tracked, 100_000);
    assert_eq!(c.labels.models, ["flux", "sdxl"]);
    assert_eq!(c.labels.max_endpoints, 64);
    assert!(c.probes.is_empty());
    assert_eq!(c.status_page, None);
    assert_eq!(c.telemetry.log_level, LogLevel::Info);
    assert_eq!(c.telemetry.otlp.protocol, OtlpProtocol::Grpc);
    assert_eq!(c.api_key(), None);
}

#[test]
fn example_documents_every_key_and_loads() {
    let text = include_str!("../../config/example.yaml");
    let c = load_with(text, &[("MODELSLAB_API_KEY", "sk-example")]).unwrap();
    assert_eq!(c.api_key(), Some("sk-example"));
    assert_eq!(c.probes.len(), 3);
    assert_eq!(c.probes[1].follow.as_ref().unwrap().max_wait, Duration::from_secs(240));
    assert_eq!(c.probes[2].request.inject_key, InjectKey::Bearer);
    let llm = c.probes[2].expect.as_ref().and_then(|e| e.llm.as_ref()).unwrap();
    assert_eq!(llm.max_time_to_first_token, Some(Duration::from_secs(10)));
    assert_eq!(c.status_page.as_ref().unwrap().format, None, "auto");
    // Every key of the effective config appears in the example (so the example documents it).
    let rendered = to_redacted_yaml(&c);
    for line in rendered.lines() {
        let Some((k, _)) = line.trim_start().trim_start_matches("- ").split_once(':') else { continue };
        if k.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !k.is_empty() {
            assert!(text.contains(&format!("{k}:")), "config/example.yaml does not document `{k}`");
        }
    }
    // And every key of the schema defaults appears too, including the optional ones.
    for k in [
        "api_key_file",
        "token",
        "token_file",
        "retry_rate_limited",
        "max_tracked",
        "max_endpoints",
        "message_matches",
        "json",
        "max_runs_per_day",
        "max_components",
        "sample_ratio",
        "inject_key",
        "min_output_tokens",
        "finish_reasons",
        "max_time_to_first_token",
    ] {
        assert!(text.contains(&format!("{k}:")), "config/example.yaml does not document `{k}`");
    }
}

#[test]
fn cluster_settings_are_checked_and_never_show_the_password() {
    let base = "upstream:\n  base_url: https://modelslab.com\n";
    let ok = load_with(&format!("{base}cluster:\n  redis_url: redis://:s3cret@redis:6379/2\n"), &[]).unwrap();
    assert_eq!(ok.cluster.redis_url(), Some("redis://:s3cret@redis:6379/2"));
    assert!(!to_redacted_yaml(&ok).contains("s3cret"), "the URL's password is never shown");
    let unset = load_with(&format!("{base}cluster:\n  redis_url: ${{SENTINEL_REDIS_URL:-}}\n"), &[]).unwrap();
    assert_eq!(unset.cluster.redis_url(), None, "an empty URL: one replica");
    let bad = problems(&format!(
        "{base}cluster:\n  redis_url: http://:s3cret@redis:6379\n  key_prefix: \"a b\"\n  lease_ttl: 1s\n"
    ));
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(bad[0].contains("cluster.redis_url: scheme must be redis or rediss, not `http`"), "{bad:?}");
    assert!(bad[1].contains("cluster.key_prefix: `a b` must be 1 to 64 of"), "{bad:?}");
    assert!(bad[2].contains("cluster.lease_ttl: 1s is too short"), "{bad:?}");
    assert!(!bad.concat().contains("s3cret"));
    let replicas = load_with(
        &format!("{base}probes:\n  - {{ name: a, request: {{ path: /x, inject_key: false }}, replicas: all }}\n  - {{ name: b, request: {{ path: /x, inject_key: false }} }}\n"),
        &[],
    )
    .unwrap();
    assert_eq!((replicas.probes[0].replicas, replicas.probes[1].replicas), (Replicas::All, Replicas::One));
}

#[test]
fn shipped_production_config_loads_and_spends_no_credits() {
    let c = load_with(include_str!("../../config/sentinel.yaml"), &[("MODELSLAB_API_KEY", "sk-prod")]).unwrap();
    assert_eq!(c.upstream.base_url.as_str(), "https://modelslab.com/");
    for p in &c.probes {
        assert_eq!(p.max_runs_per_day, 0, "{} is uncapped, so it must be free", p.name);
        let e = p.expect.as_ref().unwrap();
        assert_eq!(e.status, Some(Outcome::Error), "{} must expect an error answer (free)", p.name);
    }
    let names: Vec<&str> = c.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["text2img-validation", "auth-rejects-bad-key"]);
}

#[test]
fn env_substitution_and_missing_variables() {
    let text = "upstream:\n  base_url: ${BASE:-http://127.0.0.1:9}\n  api_key: ${KEY}\n  timeout: ${T:-5s}\n";
    let c = load_with(text, &[("KEY", "sk-env")]).unwrap();
    assert_eq!(c.upstream.base_url.as_str(), "http://127.0.0.1:9/");
    assert_eq!(c.upstream.timeout, Duration::from_secs(5));
    assert_eq!(c.api_key(), Some("sk-env"));
    let p = problems(text);
    assert_eq!(
        p,
        [
            "3: upstream.api_key: environment variable `KEY` is not set (set it, or give a default with `${KEY:-default}`)"
        ]
    );
}

#[test]
fn secrets_are_redacted_when_shown() {
    let text = "upstream:\n  base_url: https://modelslab.com\n  api_key: sk-canary-123\nprobes:\n  - name: a\n    request:\n      path: /x\n      headers: { Authorization: Bearer sk-canary-123, X-Trace: visible }\ntelemetry:\n  otlp:\n    headers: { x-honeycomb-team: sk-canary-123 }\n";
    let c = load_with(text, &[]).unwrap();
    let shown = to_redacted_yaml(&c);
    assert!(!shown.contains("sk-canary-123"), "{shown}");
    assert!(shown.contains("<redacted>"));
    assert!(shown.contains("visible"));
    assert!(!format!("{c:?}").contains("sk-canary-123"));
    // The rendered config is itself a valid config (with the secrets to be filled in).
    if let Err(e) = load_with(&shown, &[]) {
        panic!("{e}\n{shown}");
    }
}

#[test]
fn api_key_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), "sk-from-file\n").unwrap();
    let var = env_with(&[]);
    let env = Environment { var: &var, base_dir: dir.path().to_owned() };
    let c = from_yaml("upstream:\n  base_url: https://modelslab.com\n  api_key_file: key.txt\n", "t", &env).unwrap();
    assert_eq!(c.api_key(), Some("sk-from-file"));
    let e =
        from_yaml("upstream:\n  base_url: https://modelslab.com\n  api_key_file: nope.txt\n", "t", &env).unwrap_err();
    assert!(e.to_string().contains("t:3: upstream.api_key_file: cannot read "), "{e}");
    let both =
        from_yaml("upstream:\n  base_url: https://modelslab.com\n  api_key: a\n  api_key_file: key.txt\n", "t", &env)
            .unwrap_err();
    assert!(both.to_string().contains("give either `api_key` or `api_key_file`, not both"), "{both}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = "\
upstream:
  base_url: https://modelslab.com/api
  timeout: soon
probes:
  - name: Bad Name
    interval: 10s
    timeout: 20s
    request: { path: /a }
  - name: ok
    request:
      path: /b
    expect:
      status: ok
  - name: ok
    request: { path: c }
    follow:
      fetch_path: /fetch
unknown: 1
";
    let p = problems(text);
    assert_eq!(
        p,
        [
            "18: unknown: unknown section `unknown`, expected one of `upstream`, `admin`, `proxy`, `jobs`, `labels`, `probes`, `status_page`, `telemetry`, `cluster`, `account`, `slos`, `webhooks`, `maintenance`",
            "3: upstream.timeout: invalid duration `soon`: expected number at 0 (write e.g. `500ms`, `60s`, `5m`)",
            "13: probes[1].expect.status: unknown value `ok`, expected one of: success, processing, error",
            "5: probes[0].name: `Bad Name` is not a valid probe name: use 1 to 63 of a-z, 0-9, `_` and `-`",
            "7: probes[0].timeout: 20s must be shorter than the interval (10s) so that runs cannot overlap",
            "15: probes[2].request.path: `c` must be a path starting with `/` (the host comes from upstream.base_url)",
            "17: probes[2].follow.fetch_path: `/fetch` must be a path containing `{id}`, e.g. /api/v6/images/fetch/{id}",
            "16: probes[2].follow.max_wait: 10m is not shorter than the probe's timeout (30s): the run would be cut by the timeout first; raise timeout (and interval) or lower max_wait",
        ]
    );
}

#[test]
fn base_url_rules() {
    let bad = |url: &str| problems(&format!("upstream:\n  base_url: {url}\n")).join("\n");
    assert!(bad("https://modelslab.com/api").contains("with no path (got path `/api`)"));
    assert!(bad("ftp://modelslab.com").contains("scheme must be http or https, not `ftp`"));
    assert!(bad("https://u:p@modelslab.com").contains("must not carry credentials"));
    assert!(bad("https://modelslab.com/?a=1").contains("must not have a query string"));
    assert!(bad("not a url").contains("upstream.base_url: relative URL without a base"));
    assert!(load_with("upstream:\n  base_url: http://127.0.0.1:8181/\n", &[]).is_ok());
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let p = problems("upstream:\n  base_url: [\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("3: invalid YAML: "), "{p:?}");
    assert_eq!(problems(""), ["the file is empty: at least `upstream.base_url` is required"]);
    assert_eq!(problems("- a\n"), ["the file is not a mapping of sections: at least `upstream.base_url` is required"]);
}

#[test]
fn probes_that_inject_the_key_need_one() {
    let text = "upstream:\n  base_url: https://x.test\nprobes:\n  - name: a\n    request: { path: /a }\n  - name: b\n    request: { path: /b, inject_key: false }\n  - name: c\n    request: { path: /c, body: { key: wrong } }\n";
    assert_eq!(
        problems(text),
        [
            "1: upstream: no api_key (or api_key_file), but probe `a` injects it: set one, or `inject_key: none` on the probe"
        ]
    );
}

#[test]
fn restart_required_changes_are_named() {
    let a = load_with("upstream:\n  base_url: https://x.test\n", &[]).unwrap();
    let b = load_with(
        "upstream:\n  base_url: https://x.test\nadmin: { listen: 127.0.0.1:1 }\nlabels: { models: [x] }\n",
        &[],
    )
    .unwrap();
    assert_eq!(a.restart_required_changes(&b), ["admin.listen"]);
    assert!(a.restart_required_changes(&a).is_empty());
}

#[test]
fn upstream_connection_bounds_are_checked_and_the_idle_cap_needs_a_restart() {
    let p = problems("upstream:\n  base_url: https://x.test\nproxy:\n  upstream_max_connections: 0\n");
    assert_eq!(p, ["4: proxy.upstream_max_connections: must be at least 1 (e.g. `256`)"]);
    let a = load_with("upstream:\n  base_url: https://x.test\n", &[]).unwrap();
    let b = load_with(
        "upstream:\n  base_url: https://x.test\nproxy: { upstream_max_connections: 8, upstream_max_idle: 2 }\n",
        &[],
    )
    .unwrap();
    assert_eq!(a.restart_required_changes(&b), ["proxy.upstream_max_idle"]);
}

#[test]
fn parse_document_reports_the_path() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: u32,
    }
    let e = parse_document::<Doc>("a: x\n").unwrap_err();
    assert_eq!(e.to_string(), "1: a: invalid type: string \"x\", expected u32");
    assert!(parse_document::<Doc>("{\"a\": 1}").is_ok());
}

const GENERATE: &str = "upstream: { base_url: https://x.test, api_key: k }\nprobes:\n  - name: gen\n    interval: 5m\n    timeout: 2m\n    request: { path: /api/v6/images/text2img, body: { width: 512, height: 512 } }\n";

#[test]
fn output_checks_take_defaults_and_an_allowlist_under_either_name() {
    let c = load_with(&format!("{GENERATE}    expect: {{ output: {{}} }}\n"), &[]).unwrap();
    let o = c.probes[0].expect.as_ref().and_then(|e| e.output.as_ref()).unwrap();
    assert_eq!((o.count, o.decodes, o.not_blank, o.size), (1, true, true, OutputSize::FromRequest));
    assert_eq!((o.max_bytes.as_u64(), o.timeout), (20 << 20, Duration::from_secs(30)));
    for name in ["hosts", "output_hosts"] {
        let text = format!(
            "{GENERATE}    expect: {{ output: {{ size: {{ width: 64, height: 32 }}, {name}: [cdn.test] }} }}\n"
        );
        let o = load_with(&text, &[]).unwrap().probes[0].expect.clone().and_then(|e| e.output).unwrap();
        assert_eq!(o.size, OutputSize::Fixed { width: 64, height: 32 });
        assert_eq!(o.hosts, ["cdn.test"]);
    }
}

#[test]
fn bad_output_checks_and_webhooks_name_their_path() {
    let got = problems(&format!(
        "{GENERATE}    follow: {{ fetch_path: '/f/{{id}}', webhook: true }}\n    expect:\n      status: error\n      output: {{ count: 0, max_bytes: 0, timeout: 0s, size: {{ width: 0, height: 8 }}, hosts: ['https://cdn.test/x'] }}\nwebhooks: {{ public_url: 'ftp://x', grace: 0s }}\n"
    ));
    let want = [
        "probes[0].expect.output.count",
        "probes[0].expect.output.max_bytes",
        "probes[0].expect.output.timeout",
        "probes[0].expect.output.size",
        "probes[0].expect.output.hosts[0]",
        "probes[0].expect.output:",
        "webhooks.public_url",
        "webhooks.grace",
        "probes[0].follow.webhook",
    ];
    for w in want {
        assert!(got.iter().any(|g| g.contains(w)), "no problem at {w} in {got:#?}");
    }
}

#[test]
fn webhook_listen_needs_a_restart() {
    let a = load_with(GENERATE, &[]).unwrap();
    let b = load_with(&format!("{GENERATE}webhooks: {{ listen: 127.0.0.1:0 }}\n"), &[]).unwrap();
    assert_eq!(a.restart_required_changes(&b), ["webhooks.listen"]);
    assert_eq!(b.webhooks.grace, Duration::from_secs(120));
}

#[test]
fn duplicate_probe_names() {
    let text = "upstream:\n  base_url: https://x.test\n  api_key: k\nprobes:\n  - name: a\n    request: { path: /a }\n  - name: a\n    request: { path: /b }\n";
    assert_eq!(problems(text), ["7: probes[1].name: duplicate probe name `a` (also probes[0]): names must be unique"]);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    /// YAML-ish text built from the schema's own keys, indentation, dashes and odd scalars.
    fn yamlish() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "upstream:",
            "base_url: http://x",
            "probes:",
            "- name: a",
            "  request:",
            "    path: /x",
            "expect:",
            "status: ok",
            "  ",
            "- ",
            "{",
            "}",
            "[",
            "]",
            ": ",
            "${",
            "${A:-",
            "$${",
            "#",
            "\t",
            "\"",
            "'",
            "*a",
            "&a",
            "!!binary",
            "? ",
            "|",
            ">",
            "\u{feff}",
            "timeout: 5",
            "interval: -1s",
            "json: [ { pointer: / } ]",
        ]);
        prop::collection::vec((token, prop::bool::ANY), 0..40).prop_map(|parts| {
            parts.into_iter().map(|(t, nl)| if nl { format!("{t}\n") } else { t.to_owned() }).collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

        #[test]
        fn on_any_text(text in ".{0,400}") {
            let _ = load_with(&text, &[]);
        }

        #[test]
        fn on_yaml_shaped_text(text in yamlish()) {
            if let Err(e) = load_with(&text, &[("A", "1")]) {
                prop_assert!(!e.to_string().is_empty());
            }
            let _ = line_of(&text, &[Seg::Key("probes".into()), Seg::Index(3), Seg::Key("expect".into())]);
        }
    }
}

#[test]
fn a_followed_job_is_polled_on_its_own_family_by_default() {
    let probe = |request: &str, follow: &str| {
        let text = format!(
            "upstream:\n  base_url: https://x.test\n  api_key: k\nprobes:\n  - name: p\n    interval: 10m\n    timeout: 5m\n    request: {request}\n    follow: {follow}\n"
        );
        load_with(&text, &[]).map(|c| c.probes[0].fetch_path())
    };
    let table = [
        ("/api/v6/video/text2video", "/api/v6/video/fetch/{id}"),
        ("/api/v7/video-fusion/text-to-video", "/api/v7/video-fusion/fetch/{id}"),
        ("/api/v6/3d/text_to_3d?x=1", "/api/v6/3d/fetch/{id}"),
        ("/api/v7/voice/text-to-speech/", "/api/v7/voice/fetch/{id}"),
    ];
    for (path, want) in table {
        assert_eq!(
            probe(&format!("{{ path: '{path}' }}"), "{ max_wait: 1m }").unwrap(),
            Some(want.to_owned()),
            "{path}"
        );
    }
    let given =
        probe("{ path: /api/v6/images/text2img }", "{ fetch_path: '/api/v6/images/fetch/{id}?v=2', max_wait: 1m }");
    assert_eq!(given.unwrap().as_deref(), Some("/api/v6/images/fetch/{id}?v=2"));
    let err = probe("{ path: /generate }", "{ max_wait: 1m }").unwrap_err().to_string();
    assert!(err.contains("probes[0].follow.fetch_path: `/generate` names no family to poll beside: set one"), "{err}");
}

#[test]
fn maintenance_windows_are_checked_where_they_are_written() {
    let text = "upstream: { base_url: http://127.0.0.1:9 }
maintenance:
  windows:
    - { name: Weekly, cron: \"0 2 * * SUN\", duration: 1h }
    - { name: both, cron: \"0 2 * * SUN\", start: \"2026-12-05T02:00:00Z\" }
    - { name: neither, duration: 0s }
    - { name: six, cron: \"0 0 2 * * SUN\" }
    - { name: when, start: tomorrow }
";
    let p = problems(text);
    assert_eq!(
        p,
        [
            "7: maintenance.windows[3].cron: `0 0 2 * * SUN` is not a five-field cron schedule (minute hour day-of-month month day-of-week, e.g. `0 2 * * SUN`)",
        ],
        "a type error stops the section first"
    );
    let p = problems(
        &text
            .replace("    - { name: six, cron: \"0 0 2 * * SUN\" }\n", "")
            .replace("    - { name: when, start: tomorrow }\n", ""),
    );
    assert_eq!(
        p,
        [
            "4: maintenance.windows[0].name: `Weekly` must be 1-64 of [a-z0-9_-], e.g. weekly-deploy",
            "5: maintenance.windows[1]: give `cron` or `start`, not both",
            "6: maintenance.windows[2]: give `cron` (e.g. \"0 2 * * SUN\") or `start` (e.g. 2026-12-05T02:00:00Z)",
            "6: maintenance.windows[2].duration: must be longer than 0s (e.g. `1h`)",
        ]
    );
}

#[test]
fn account_polls_stay_within_the_apis_limits_under_every_accepted_config() {
    let with =
        |account: &str| format!("upstream:\n  base_url: https://modelslab.com\n  api_key: k\naccount:\n{account}");
    // request_count allows 30 calls a minute: an interval under 2 s is refused, 2 s is the most.
    for (interval, accepted) in [("1999ms", false), ("1s", false), ("0s", false), ("2s", true), ("15s", true)] {
        let text = with(&format!("  queue: {{ enabled: true, interval: {interval} }}\n"));
        match load_with(&text, &[]) {
            Ok(c) => {
                assert!(accepted, "{interval} accepted");
                let per_minute = 60.0 / c.account.queue.interval.as_secs_f64();
                assert!(per_minute <= 30.0, "{interval}: {per_minute} calls a minute");
            }
            Err(e) => {
                assert!(!accepted, "{interval}: {e}");
                assert!(e.to_string().contains("account.queue.interval"), "{e}");
                assert!(e.to_string().contains("30 request_count calls a minute"), "{e}");
            }
        }
    }
    let p = problems(&with("  models: { enabled: true, interval: 5s, path: api/models }\n"));
    assert!(p.iter().any(|p| p.contains("account.models.interval") && p.contains("at least 10s")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("account.models.path")), "{p:?}");
    // Every poll needs the key.
    let p = problems(
        "upstream:\n  base_url: https://modelslab.com\naccount:\n  queue: { enabled: true }\n  models: { enabled: true }\n",
    );
    assert!(p.iter().any(|p| p.contains("account.queue.enabled") && p.contains("the queue depth")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("account.models.enabled") && p.contains("the catalogue")), "{p:?}");
    let c = load_with(&with("  queue: { enabled: true }\n"), &[]).unwrap();
    assert_eq!(
        (c.account.queue.path.as_str(), c.account.queue.interval, c.account.queue.limit),
        ("/api/v6/processing/request_count", Duration::from_secs(15), 0)
    );
    assert_eq!(
        (c.account.models.path.as_str(), c.account.models.interval),
        ("/api/v7/llm/v1/models", Duration::from_secs(600))
    );
}
