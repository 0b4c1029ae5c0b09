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
