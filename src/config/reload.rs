//! What a reload does with each setting: applied to the running agent, or named as waiting for a
//! restart. Every leaf of the configuration falls under one rule of [`RULES`] (a test walks every
//! key of `config/example.yaml` to hold this), so that a new setting cannot be forgotten: one
//! without a rule counts as needing a restart, and the test fails until it has one.

use std::cell::Cell;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::Config;

/// How a reload treats a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The running agent uses the new value (read per request, per run, or pushed to the
    /// component that holds it).
    Live,
    /// Only a restart uses it (a listener, the telemetry pipeline, the Redis client).
    Restart,
}

use Applied::{Live, Restart};

/// Settings by path prefix (list indices and map keys left out), the longest prefix deciding.
pub const RULES: &[(&str, Applied)] = &[
    // Read per request and per run.
    ("upstream", Live),
    ("admin.listen", Restart),
    // Read at each guarded request.
    ("admin.token", Live),
    ("admin.token_file", Live),
    ("proxy.enabled", Restart),
    ("proxy.listen", Restart),
    // Read per request.
    ("proxy.upstream_timeout", Live),
    ("proxy.max_request_body", Live),
    ("proxy.inspect_limit", Live),
    ("proxy.rewrite_fetch_result", Live),
    ("proxy.retry_rate_limited", Live),
    // Pushed to the connection limit (a lower one takes effect as connections close).
    ("proxy.max_connections", Live),
    // Pushed to the upstream's connection bound, the same way.
    ("proxy.upstream_max_connections", Live),
    // Built into the upstream connection pool.
    ("proxy.upstream_max_idle", Restart),
    // Pushed to the job tracker.
    ("jobs", Live),
    // Pushed to the metrics' label policy.
    ("labels", Live),
    // Rescheduled: added, removed and changed probes; the others keep their rhythm.
    ("probes", Live),
    // Read at each poll.
    ("status_page", Live),
    ("account", Live),
    // Pushed to the observer.
    ("slos", Live),
    ("telemetry", Restart),
    ("cluster", Restart),
    ("webhooks.listen", Restart),
    // Read for each run that asks for a webhook, and at each sweep.
    ("webhooks.public_url", Live),
    ("webhooks.grace", Live),
    // Read at each tick of the maintenance clock and at each probe run.
    ("maintenance", Live),
];

/// How a reload treats the setting at `path` (`probes[2].request.body.prompt`), and the rule's
/// name; `None` when no rule covers it.
pub fn rule_of(path: &str) -> Option<(&'static str, Applied)> {
    let dotted: String = {
        let mut out = String::with_capacity(path.len());
        let mut in_index = false;
        for c in path.chars() {
            match c {
                '[' => in_index = true,
                ']' => in_index = false,
                c if !in_index => out.push(c),
                _ => {}
            }
        }
        out
    };
    RULES
        .iter()
        .filter(|(prefix, _)| dotted == *prefix || dotted.starts_with(&format!("{prefix}.")))
        .max_by_key(|(prefix, _)| prefix.len())
        .copied()
}

thread_local! {
    /// Set while a configuration is fingerprinted: secrets serialise as digests, not as
    /// `<redacted>`, so that a changed key is seen as a change.
    static FINGERPRINTING: Cell<bool> = const { Cell::new(false) };
}

/// How a secret serialises now: a digest while fingerprinting (compared in this process only,
/// never shown), else `None` (show `<redacted>`).
pub(super) fn secret_digest(value: &str) -> Option<String> {
    FINGERPRINTING.with(Cell::get).then(|| {
        let mut h = std::hash::DefaultHasher::new();
        value.hash(&mut h);
        format!("<secret {:016x}>", h.finish())
    })
}

/// The configuration as a JSON tree in which every change shows, secrets included.
pub fn fingerprint(config: &Config) -> Value {
    FINGERPRINTING.with(|f| f.set(true));
    let v = serde_json::to_value(config).unwrap_or(Value::Null);
    FINGERPRINTING.with(|f| f.set(false));
    v
}

/// Every leaf path of a JSON tree (`a.b[0].c`), with its value; empty lists and maps are leaves.
pub fn leaves(v: &Value) -> Vec<(String, Value)> {
    fn walk(v: &Value, path: &mut String, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (i, child) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            leaf => out.push((path.clone(), leaf.clone())),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out
}

/// What reloading from `old` to `new` does: the rules of the settings that changed, each once,
/// applied live or waiting for a restart.
pub fn plan(old: &Config, new: &Config) -> Vec<(&'static str, Applied)> {
    let (a, b) = (leaves(&fingerprint(old)), leaves(&fingerprint(new)));
    let a: std::collections::BTreeMap<String, Value> = a.into_iter().collect();
    let b: std::collections::BTreeMap<String, Value> = b.into_iter().collect();
    let mut out: Vec<(&'static str, Applied)> = Vec::new();
    let changed = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k));
    for path in changed {
        let rule = rule_of(path).unwrap_or_else(|| {
            tracing::warn!(setting = %path, "a setting without a reload rule changed: treated as needing a restart");
            ("(unknown setting)", Restart)
        });
        if !out.contains(&rule) {
            out.push(rule);
        }
    }
    out
}

impl Config {
    /// Settings a reload from `self` to `new` changed that only a restart applies.
    pub fn restart_required_changes(&self, new: &Config) -> Vec<String> {
        plan(self, new).into_iter().filter(|(_, a)| *a == Restart).map(|(name, _)| name.to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_yaml::Value as Yaml;

    use super::*;
    use crate::config::{Environment, from_yaml};

    const EXAMPLE: &str = include_str!("../../config/example.yaml");

    /// The settings the example leaves at their defaults or out: every optional key set.
    const THE_REST: &str = r#"
upstream: { base_url: "https://modelslab.com", api_key_file: key.txt }
admin: { listen: "0.0.0.0:9477", token: admin-secret }
probes:
  - name: generate
    request:
      path: /api/v6/images/text2img
      headers: { x-trace: "1", authorization: "Bearer other-secret" }
      body: { prompt: a fox, width: 512, height: 512 }
    follow: { fetch_path: "/api/v6/images/fetch/{id}", webhook: true, max_wait: 20s }
    timeout: 25s
    expect:
      status: success
      output: { size: { width: 512, height: 512 }, hosts: [cdn.example.com] }
    replicas: all
status_page:
  url: https://status.example.com
  format: html
  html_rules: [ { contains: "all good", status: operational } ]
telemetry: { otlp: { endpoint: "http://collector:4317", headers: { x-token: secret } } }
cluster: { redis_url: "redis://:pw@redis:6379/0" }
webhooks: { listen: "0.0.0.0:9478", public_url: "https://sentinel.example.com" }
slos:
  - { name: jobs, objective: 99, sli: { jobs: { source: proxy, max_duration: 60s } } }
  - { name: gen, objective: 99, sli: { probes: [generate] } }
"#;

    fn load(text: &str) -> Option<Config> {
        // Written once: tests run in parallel, and a rewrite (truncate, then write) could be read
        // half done by another.
        static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("sentinel-reload-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join("key.txt"), "sk-from-file");
            dir
        });
        let var = |name: &str| (name == "MODELSLAB_API_KEY").then(|| "sk-example".to_owned());
        from_yaml(text, "test", &Environment { var: &var, base_dir: dir.clone() }).ok()
    }

    #[test]
    fn every_setting_has_a_reload_rule() {
        for text in [EXAMPLE, THE_REST] {
            let config = load(text).expect("the test configurations load");
            let leaves = leaves(&fingerprint(&config));
            assert!(leaves.len() > 80, "{} settings", leaves.len());
            let without: Vec<&str> = leaves.iter().map(|(p, _)| p.as_str()).filter(|p| rule_of(p).is_none()).collect();
            assert!(without.is_empty(), "settings no reload rule covers (add them to RULES): {without:?}");
        }
        assert_eq!(rule_of("probes[3].request.body.prompt"), Some(("probes", Live)));
        assert_eq!(rule_of("proxy.listen"), Some(("proxy.listen", Restart)));
        assert_eq!(rule_of("proxy.listener"), None, "a prefix is a whole segment");
    }

    /// A different value of the same kind, as the configuration would take it.
    fn changed(v: &Yaml) -> Option<Yaml> {
        const WORDS: &[(&str, &str)] = &[
            ("POST", "GET"),
            ("one", "all"),
            ("auto", "statuspage"),
            ("html", "statuspage"),
            ("text", "json"),
            ("info", "debug"),
            ("grpc", "http/protobuf"),
            ("proxy", "probe"),
            ("any", "proxy"),
            ("30d", "28d"),
            ("7d", "28d"),
            ("operational", "degraded"),
            ("bad_request", "client_error"),
            ("server_error", "unknown"),
            ("missing_parameter", "out_of_range"),
            ("from_request", "any"),
        ];
        Some(match v {
            Yaml::Bool(b) => Yaml::Bool(!b),
            Yaml::Number(n) if n.is_u64() => {
                let n = n.as_u64()?;
                Yaml::Number((if n >= 2 { n - 1 } else { n + 1 }).into())
            }
            Yaml::Number(n) => Yaml::Number((n.as_f64()? * 0.5).into()),
            Yaml::String(s) => {
                let s = s.as_str();
                let new = if let Some((_, to)) = WORDS.iter().find(|(from, _)| *from == s) {
                    (*to).to_owned()
                } else if let Ok(d) = humantime::parse_duration(s) {
                    humantime::format_duration(d + std::time::Duration::from_secs(1)).to_string()
                } else if let Some(n) = ["KiB", "MiB", "GiB"].iter().find_map(|u| s.strip_suffix(u)) {
                    format!("{}{}", n.parse::<u64>().ok()? + 1, &s[n.len()..])
                } else if let Ok(mut url) =
                    url::Url::parse(s).map_err(|_| ()).and_then(|u| if u.has_host() { Ok(u) } else { Err(()) })
                {
                    let port = url.port_or_known_default().map_or(444, |p| p + 1);
                    url.set_port(Some(port)).ok()?;
                    url.to_string()
                } else if let Some(port) = s.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()) {
                    format!("{}:{}", s.rsplit_once(':')?.0, port + 1)
                } else if s.is_empty() {
                    return None;
                } else {
                    format!("{s}x")
                };
                Yaml::String(new)
            }
            _ => return None,
        })
    }

    /// Every scalar of a YAML tree, as a path of keys and indices.
    fn scalars(v: &Yaml, path: &mut Vec<Yaml>, out: &mut Vec<Vec<Yaml>>) {
        match v {
            Yaml::Mapping(m) => {
                for (k, child) in m {
                    path.push(k.clone());
                    scalars(child, path, out);
                    path.pop();
                }
            }
            Yaml::Sequence(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(Yaml::Number(i.into()));
                    scalars(child, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }

    fn at<'a>(v: &'a mut Yaml, path: &[Yaml]) -> Option<&'a mut Yaml> {
        path.iter().try_fold(v, |v, k| match (v, k) {
            (Yaml::Sequence(items), Yaml::Number(i)) => items.get_mut(usize::try_from(i.as_u64()?).ok()?),
            (Yaml::Mapping(m), k) => m.get_mut(k),
            _ => None,
        })
    }

    /// Changes every setting of both configurations, one at a time, and reloads: each change
    /// is seen (secrets and credential headers too) and named by the rule of its own key.
    #[test]
    fn every_change_is_applied_or_named_for_a_restart() {
        let (mut tried, mut seen) = (0, 0);
        for text in [EXAMPLE, THE_REST] {
            let old = load(text).expect("the test configurations load");
            let tree: Yaml = serde_yaml::from_str(text).expect("YAML");
            let mut paths = Vec::new();
            scalars(&tree, &mut Vec::new(), &mut paths);
            for path in paths {
                let mut new_tree = tree.clone();
                let Some(slot) = at(&mut new_tree, &path) else { continue };
                let Some(value) = changed(slot) else { continue };
                *slot = value;
                tried += 1;
                // Some changes make the file invalid (a name the validator refuses, a timeout
                // past its interval): a reload keeps the old configuration, and that is tested
                // elsewhere.
                let Some(new) = load(&serde_yaml::to_string(&new_tree).expect("YAML")) else { continue };
                seen += 1;
                let keys: Vec<String> =
                    path.iter().map(|k| k.as_str().map_or_else(|| "[i]".to_owned(), str::to_owned)).collect();
                let dotted = keys.join(".").replace(".[i]", "[0]");
                let plan = plan(&old, &new);
                let rule = rule_of(&dotted).unwrap_or_else(|| panic!("no rule for {dotted}"));
                assert!(plan.contains(&rule), "changing {dotted}: {plan:?} does not name {rule:?}");
                let restart = old.restart_required_changes(&new);
                assert_eq!(restart.contains(&rule.0.to_owned()), rule.1 == Restart, "{dotted}: {restart:?}");
            }
        }
        assert!(tried > 100 && seen * 10 >= tried * 7, "{seen} of {tried} changes made a valid configuration");
    }
}
