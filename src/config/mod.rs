//! YAML configuration → typed [`Config`] (docs/configuration.md), fully checked before anything binds.
//!
//! Loading goes: parse YAML → substitute `${VAR}` in every string → deserialize each section (and
//! each probe) on its own, so that one typo does not hide the next → cross-field validation →
//! read `*_file` secrets. Every problem found is reported at once, each with its path
//! (`probes[1].expect.status`) and the line it is on. This is the only module that calls the YAML
//! library (`serde_yaml` is deprecated upstream; swapping it touches this file alone). It performs
//! no network I/O and knows nothing of the components.

mod env;
pub mod json_schema;
mod locate;
pub mod maintenance;
pub mod reload;
mod schema;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub use env::{SubstError, substitute};
pub use locate::{Seg, line_of, render as render_path};
pub use maintenance::{Maintenance, PauseProbes};
pub use schema::*;

/// One thing wrong with a configuration, where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `probes[1].expect.status`; empty for the document itself.
    pub path: String,
    /// 1-based line in the file, when it could be found.
    pub line: Option<usize>,
    /// What is wrong and what to write instead.
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
    /// The file could not be read.
    #[error("cannot read config file {}: {source} (pass --config FILE or set MODELSLAB_SENTINEL_CONFIG)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file was read and is not a valid configuration.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        /// The file, as given.
        file: String,
        /// Every problem found, in file order where it could be found.
        problems: Vec<Problem>,
    },
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
    /// Looks up an environment variable.
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
    "maintenance",
];

/// Each section on its own: `None` where it had a problem (reported), so that every section is
/// read and checked whatever the others hold.
struct Sections {
    upstream: Option<Upstream>,
    admin: Option<Admin>,
    proxy: Option<Proxy>,
    jobs: Option<Jobs>,
    labels: Option<Labels>,
    probes: Vec<Option<Probe>>,
    /// `Some(None)`: no status page.
    status_page: Option<Option<StatusPage>>,
    telemetry: Option<Telemetry>,
    cluster: Option<Cluster>,
    account: Option<Account>,
    slos: Vec<Option<Slo>>,
    webhooks: Option<Webhooks>,
    maintenance: Option<Maintenance>,
}

fn parse(text: &str, env: &Environment<'_>, problems: &mut Problems<'_>) -> Option<Config> {
    let value: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.list.push(yaml_syntax_problem(&e));
            return None;
        }
    };
    let Value::Mapping(top) = value else {
        let what = if value.is_null() { "the file is empty" } else { "the file is not a mapping of sections" };
        problems.add(&[], format!("{what}: at least `upstream.base_url` is required"));
        return None;
    };
    let sections = read_sections(top, env, problems);
    check(sections, env, problems)
}

/// Substitutes the environment into every section and deserialises it.
fn read_sections(mut top: serde_yaml::Mapping, env: &Environment<'_>, problems: &mut Problems<'_>) -> Sections {
    for k in top.keys() {
        match k.as_str() {
            Some(name) if SECTIONS.contains(&name) => {}
            Some(name) => problems
                .add(&[key(name)], format!("unknown section `{name}`, expected one of `{}`", SECTIONS.join("`, `"))),
            None => problems.add(&[], "section names must be strings"),
        }
    }
    let mut section = |name: &str, problems: &mut Problems<'_>| {
        top.remove(name).map(|mut v| {
            substitute_all(&mut v, &mut vec![key(name)], env, problems);
            v
        })
    };
    let upstream = match section("upstream", problems) {
        None | Some(Value::Null) => {
            problems.add(&[], "missing section `upstream` (at least `upstream.base_url` is required)");
            None
        }
        Some(v) => typed(v, &[key("upstream")], problems),
    };
    let status_page = match section("status_page", problems) {
        None => Some(None),
        Some(Value::Null) => Some(Some(StatusPage::default())),
        Some(v) => typed::<StatusPage>(v, &[key("status_page")], problems).map(Some),
    };
    let probes = section("probes", problems);
    let slos = section("slos", problems);
    Sections {
        upstream,
        admin: typed_or_default(section("admin", problems), "admin", problems),
        proxy: typed_or_default(section("proxy", problems), "proxy", problems),
        jobs: typed_or_default(section("jobs", problems), "jobs", problems),
        labels: typed_or_default(section("labels", problems), "labels", problems),
        probes: typed_list(probes, "probes", "probes", problems, check_method),
        status_page,
        telemetry: typed_or_default(section("telemetry", problems), "telemetry", problems),
        cluster: typed_or_default(section("cluster", problems), "cluster", problems),
        account: typed_or_default(section("account", problems), "account", problems),
        slos: typed_list(slos, "slos", "SLOs", problems, |_, _, _| {}),
        webhooks: typed_or_default(section("webhooks", problems), "webhooks", problems),
        maintenance: typed_or_default(section("maintenance", problems), "maintenance", problems),
    }
}

/// A list section (`- name: …` items), each item on its own after `prepare`.
fn typed_list<T: DeserializeOwned>(
    value: Option<Value>,
    name: &str,
    what: &str,
    problems: &mut Problems<'_>,
    prepare: impl Fn(&mut Value, &[Seg], &mut Problems<'_>),
) -> Vec<Option<T>> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                let at = [key(name), Seg::Index(i)];
                prepare(&mut item, &at, problems);
                typed::<T>(item, &at, problems)
            })
            .collect(),
        Some(_) => {
            problems.add(&[key(name)], format!("expected a list of {what} (`- name: …` items)"));
            Vec::new()
        }
    }
}

/// The rules across fields and sections, then the `*_file` secrets: the configuration, if
/// nothing was wrong.
fn check(sections: Sections, env: &Environment<'_>, problems: &mut Problems<'_>) -> Option<Config> {
    let Sections {
        mut upstream,
        mut admin,
        proxy,
        jobs,
        labels,
        probes,
        status_page,
        telemetry,
        mut cluster,
        account,
        slos,
        webhooks,
        maintenance,
    } = sections;
    if let Some(a) = &account {
        validate::check_account(a, problems);
    }
    validate::check_slos(&slos, &probes, problems);
    if let Some(w) = &webhooks {
        validate::check_webhooks(w, &probes, problems);
    }
    if let Some(m) = &maintenance {
        validate::check_maintenance(m, problems);
    }
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
    if let (Some(a), None) = (&account, &upstream.api_key) {
        for (poll, on, what) in [
            ("balance", a.balance.enabled, "the balance"),
            ("queue", a.queue.enabled, "the queue depth"),
            ("models", a.models.enabled, "the catalogue"),
        ] {
            if on {
                problems.add(
                    &[key("account"), key(poll), key("enabled")],
                    format!("{what} is polled with the API key: set upstream.api_key (or api_key_file)"),
                );
            }
        }
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
        maintenance: maintenance?,
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
    let Some(why) = method.as_str().and_then(method::problem) else { return };
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
    /// The API key, when one is configured and not empty.
    pub fn api_key(&self) -> Option<&str> {
        self.upstream.api_key.as_ref().map(Secret::expose).filter(|k| !k.is_empty())
    }
}

#[cfg(test)]
mod tests;
