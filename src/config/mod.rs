//! YAML configuration → typed [`Config`] (docs/configuration.md), fully checked before anything binds.
//!
//! Loading goes: parse YAML → substitute `${VAR}` in every string → deserialize each section (and
//! each probe) on its own, so that one typo does not hide the next → cross-field validation →
//! read `*_file` secrets. Every problem found is reported at once, each with its path
//! (`probes[1].expect.status`) and the line it is on. This is the only module that calls the YAML
//! library (`serde_yaml` is deprecated upstream; swapping it touches this file alone). It performs
//! no network I/O and knows nothing of the components.

mod env;
mod locate;
mod schema;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub use env::{SubstError, substitute};
pub use locate::{Seg, line_of, render as render_path};
pub use schema::*;

/// One thing wrong with a configuration, where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `probes[1].expect.status`; empty for the document itself.
    pub path: String,
    /// 1-based line in the file, when it could be found.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "{line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source} (pass --config FILE or set MODELSLAB_SENTINEL_CONFIG)", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render_problems(file, problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems, one per line as `FILE:LINE: PATH: MESSAGE`.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let n = problems.len();
    let mut out = format!("invalid configuration {file}: {n} problem{}", if n == 1 { "" } else { "s" });
    for p in problems {
        let sep = if p.line.is_some() { ":" } else { ": " };
        out.push_str(&format!("\n{file}{sep}{p}"));
    }
    out
}

/// How a load looks up what lies outside the file: environment variables and `*_file` secrets.
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// Relative `*_file` paths are resolved against this folder (the config file's).
    pub base_dir: PathBuf,
}

impl Environment<'_> {
    /// The process environment, with `*_file` paths relative to `config_file`'s folder.
    pub fn process(config_file: &Path) -> Environment<'static> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok()
        }
        Environment { var: &var, base_dir: config_file.parent().map(Path::to_path_buf).unwrap_or_default() }
    }
}

/// Loads and checks the file at `path`, with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    from_yaml(&text, &path.display().to_string(), &Environment::process(path))
}

/// Loads and checks configuration text; `source` names it in messages.
pub fn from_yaml(text: &str, source: &str, env: &Environment<'_>) -> Result<Config, ConfigError> {
    let mut problems = Problems { text, list: Vec::new() };
    let config = parse(text, env, &mut problems);
    match config {
        Some(config) if problems.list.is_empty() => Ok(config),
        _ => Err(ConfigError::Invalid { file: source.to_owned(), problems: problems.list }),
    }
}

/// The effective configuration as YAML, secrets shown as `<redacted>`.
pub fn to_redacted_yaml(config: &Config) -> String {
    serde_yaml::to_string(config).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
}

/// Parses a config fragment given as YAML or JSON text into any type (used for data files the
/// agent reads besides its config, such as the emulator's scenarios). The first problem found
/// is returned with its path.
pub fn parse_document<T: DeserializeOwned>(text: &str) -> Result<T, Problem> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| yaml_syntax_problem(&e))?;
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = segs(e.path());
        Problem { line: line_of(text, &path), path: render_path(&path), message: e.into_inner().to_string() }
    })
}

/// Collects problems, finding each one's line.
pub(crate) struct Problems<'a> {
    text: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    pub(crate) fn add(&mut self, path: &[Seg], message: impl Into<String>) {
        self.list.push(Problem { path: render_path(path), line: line_of(self.text, path), message: message.into() });
    }
}

/// A key step of a path.
pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

fn yaml_syntax_problem(e: &serde_yaml::Error) -> Problem {
    let message = e.to_string();
    // serde_yaml appends "at line L column C"; the line is reported on its own.
    let message = match message.find(" at line ") {
        Some(i) => {
            let (head, tail) = message.split_at(i);
            let after = tail.trim_start_matches(" at line ").split_once(',').map(|(_, rest)| format!(",{rest}"));
            format!("{head}{}", after.unwrap_or_default())
        }
        None => message,
    };
    Problem { path: String::new(), line: e.location().map(|l| l.line()), message: format!("invalid YAML: {message}") }
}

fn segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

const SECTIONS: &[&str] = &[
    "upstream",
    "admin",
    "proxy",
    "jobs",
    "labels",
    "probes",
    "status_page",
    "telemetry",
    "cluster",
    "account",
    "slos",
    "webhooks",
];

fn parse(text: &str, env: &Environment<'_>, problems: &mut Problems<'_>) -> Option<Config> {
    let value: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.list.push(yaml_syntax_problem(&e));
            return None;
        }
    };
    let Value::Mapping(mut top) = value else {
        let what = if value.is_null() { "the file is empty" } else { "the file is not a mapping of sections" };
        problems.add(&[], format!("{what}: at least `upstream.base_url` is required"));
        return None;
    };
    for k in top.keys() {
        match k.as_str() {
            Some(name) if SECTIONS.contains(&name) => {}
            Some(name) => problems
                .add(&[key(name)], format!("unknown section `{name}`, expected one of `{}`", SECTIONS.join("`, `"))),
            None => problems.add(&[], "section names must be strings"),
        }
    }
    let mut section = |name: &str| {
        top.remove(name).map(|mut v| {
            substitute_all(&mut v, &mut vec![key(name)], env, problems);
            v
        })
    };

    let upstream_value = section("upstream");
    let admin_value = section("admin");
    let proxy_value = section("proxy");
    let jobs_value = section("jobs");
    let labels_value = section("labels");
    let probes_value = section("probes");
    let status_value = section("status_page");
    let telemetry_value = section("telemetry");
    let cluster_value = section("cluster");
    let account_value = section("account");
    let slos_value = section("slos");
    let webhooks_value = section("webhooks");

    let upstream: Option<Upstream> = match upstream_value {
        None | Some(Value::Null) => {
            problems.add(&[], "missing section `upstream` (at least `upstream.base_url` is required)");
            None
        }
        Some(v) => typed(v, &[key("upstream")], problems),
    };
    let admin = typed_or_default::<Admin>(admin_value, "admin", problems);
    let proxy = typed_or_default::<Proxy>(proxy_value, "proxy", problems);
    let jobs = typed_or_default::<Jobs>(jobs_value, "jobs", problems);
    let labels = typed_or_default::<Labels>(labels_value, "labels", problems);
    let telemetry = typed_or_default::<Telemetry>(telemetry_value, "telemetry", problems);
    let cluster = typed_or_default::<Cluster>(cluster_value, "cluster", problems);
    let account = typed_or_default::<Account>(account_value, "account", problems);
    let webhooks = typed_or_default::<Webhooks>(webhooks_value, "webhooks", problems);
    let slos: Vec<Option<Slo>> = match slos_value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| typed::<Slo>(item, &[key("slos"), Seg::Index(i)], problems))
            .collect(),
        Some(_) => {
            problems.add(&[key("slos")], "expected a list of SLOs (`- name: …` items)");
            Vec::new()
        }
    };
    if let Some(a) = &account {
        validate::check_account(a, problems);
    }
    let status_page = match status_value {
        None => Some(None),
        Some(Value::Null) => Some(Some(StatusPage::default())),
        Some(v) => typed::<StatusPage>(v, &[key("status_page")], problems).map(Some),
    };
    let probes: Vec<Option<Probe>> = match probes_value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                let at = [key("probes"), Seg::Index(i)];
                check_method(&mut item, &at, problems);
                typed::<Probe>(item, &at, problems)
            })
            .collect(),
        Some(_) => {
            problems.add(&[key("probes")], "expected a list of probes (`- name: …` items)");
            Vec::new()
        }
    };

    validate::check_slos(&slos, &probes, problems);
    if let Some(w) = &webhooks {
        validate::check_webhooks(w, &probes, problems);
    }
    let (mut upstream, mut admin, mut cluster) = (upstream, admin, cluster);
    if let Some(c) = &mut cluster {
        validate::check_cluster(c, problems);
    }
    validate::all(
        upstream.as_mut(),
        admin.as_mut(),
        proxy.as_ref(),
        jobs.as_ref(),
        labels.as_ref(),
        &probes,
        status_page.as_ref().and_then(Option::as_ref),
        telemetry.as_ref(),
        problems,
    );
    let mut upstream = upstream?;
    if upstream.api_key.is_none() {
        upstream.api_key =
            read_secret_file(upstream.api_key_file.as_deref(), &["upstream", "api_key_file"], env, problems);
    }
    validate::key_needed(&upstream, &probes, problems);
    if account.as_ref().is_some_and(|a| a.balance.enabled) && upstream.api_key.is_none() {
        problems.add(
            &[key("account"), key("balance"), key("enabled")],
            "the balance is polled with the API key: set upstream.api_key (or api_key_file)",
        );
    }
    let mut admin = admin?;
    if admin.token.is_none() {
        admin.token = read_secret_file(admin.token_file.as_deref(), &["admin", "token_file"], env, problems);
    }
    let mut cluster = cluster?;
    if cluster.redis_url.is_none() {
        cluster.redis_url =
            read_secret_file(cluster.redis_url_file.as_deref(), &["cluster", "redis_url_file"], env, problems);
        validate::check_redis_url(&cluster, problems);
    }

    Some(Config {
        upstream,
        admin,
        proxy: proxy?,
        jobs: jobs?,
        labels: labels?,
        probes: probes.into_iter().collect::<Option<Vec<_>>>()?,
        status_page: status_page?,
        telemetry: telemetry?,
        cluster,
        account: account?,
        slos: slos.into_iter().collect::<Option<Vec<_>>>()?,
        webhooks: webhooks?,
    })
}

fn typed<T: DeserializeOwned>(value: Value, at: &[Seg], problems: &mut Problems<'_>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let mut path = at.to_vec();
            path.extend(segs(e.path()));
            let mut message = e.into_inner().to_string();
            if message == "invalid socket address syntax" {
                message.push_str(": write IP:PORT, e.g. 0.0.0.0:9477 or 127.0.0.1:0");
            }
            problems.add(&path, message);
            None
        }
    }
}

fn typed_or_default<T: DeserializeOwned + Default>(
    value: Option<Value>,
    name: &str,
    problems: &mut Problems<'_>,
) -> Option<T> {
    match value {
        None | Some(Value::Null) => Some(T::default()),
        Some(v) => typed(v, &[key(name)], problems),
    }
}

/// Reports a probe's `request.method` that is not a method, then stands `POST` in for it, so that
/// the probe's other problems are found too (the configuration is refused either way).
fn check_method(probe: &mut Value, at: &[Seg], problems: &mut Problems<'_>) {
    let Some(method) = probe.get_mut("request").and_then(|r| r.get_mut("method")) else { return };
    let Some(why) = method.as_str().and_then(schema::method::problem) else { return };
    let mut path = at.to_vec();
    path.extend([key("request"), key("method")]);
    problems.add(&path, why);
    *method = Value::String("POST".into());
}

/// Substitutes `${VAR}` in every string scalar under `value` (keys are left alone).
fn substitute_all(value: &mut Value, path: &mut Vec<Seg>, env: &Environment<'_>, problems: &mut Problems<'_>) {
    match value {
        Value::String(s) => match substitute(s, env.var) {
            Ok(new) => *s = new,
            Err(e) => problems.add(path, e.to_string()),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                substitute_all(item, path, env, problems);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                path.push(Seg::Key(k.as_str().unwrap_or("?").to_owned()));
                substitute_all(v, path, env, problems);
                path.pop();
            }
        }
        Value::Tagged(tagged) => substitute_all(&mut tagged.value, path, env, problems),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Reads a `*_file` secret (a mounted Kubernetes Secret): relative paths from the config file's
/// folder, trailing newlines dropped.
fn read_secret_file(
    file: Option<&Path>,
    at: &[&str],
    env: &Environment<'_>,
    problems: &mut Problems<'_>,
) -> Option<Secret> {
    let file = file?;
    let path = if file.is_absolute() { file.to_owned() } else { env.base_dir.join(file) };
    let at: Vec<Seg> = at.iter().map(|k| key(k)).collect();
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().is_empty() => {
            problems.add(&at, format!("{} is empty", path.display()));
            None
        }
        Ok(s) => Some(Secret::new(s.trim_end_matches(['\r', '\n']))),
        Err(e) => {
            problems.add(&at, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

impl Config {
    /// Settings a reload cannot apply to a running agent (they need a restart).
    pub fn restart_required_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.admin.listen != new.admin.listen {
            out.push("admin.listen");
        }
        if self.proxy.enabled != new.proxy.enabled {
            out.push("proxy.enabled");
        }
        if self.proxy.listen != new.proxy.listen {
            out.push("proxy.listen");
        }
        if self.telemetry != new.telemetry {
            out.push("telemetry");
        }
        if self.cluster != new.cluster {
            out.push("cluster");
        }
        if self.webhooks.listen != new.webhooks.listen {
            out.push("webhooks.listen");
        }
        out
    }

    /// The API key, when one is configured and not empty.
    pub fn api_key(&self) -> Option<&str> {
        self.upstream.api_key.as_ref().map(Secret::expose).filter(|k| !k.is_empty())
    }
}

#[cfg(test)]
mod tests;
