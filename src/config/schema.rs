//! The typed configuration (docs/configuration.md): every section and key, with its default. Serialising a
//! [`Config`] gives the effective configuration with secrets shown as `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) use super::json_schema::{DurationText, MethodText, PageFormatText, SizeText};

use crate::classify::{ErrorClass, FinishReason, Outcome, Reason};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Where the API is and how probes reach it.
    pub upstream: Upstream,
    /// The admin port.
    pub admin: Admin,
    /// The live-traffic proxy.
    pub proxy: Proxy,
    /// The async jobs the proxy follows.
    pub jobs: Jobs,
    /// The bounds of the `model` and `endpoint` labels.
    pub labels: Labels,
    /// The synthetic probes.
    pub probes: Vec<Probe>,
    /// `None`: no status-page poller.
    pub status_page: Option<StatusPage>,
    /// Logs and traces.
    pub telemetry: Telemetry,
    /// Several replicas sharing state (Redis).
    pub cluster: Cluster,
    /// The account: its credits.
    pub account: Account,
    /// Service-level objectives the agent judges its events against.
    pub slos: Vec<Slo>,
    /// The webhook receiver.
    pub webhooks: Webhooks,
    /// Planned maintenance windows.
    pub maintenance: super::Maintenance,
}

/// A value that must never be shown: `Debug` and `Serialize` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an unset `${VAR:-}`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match super::reload::secret_digest(&self.0) {
            Some(digest) => s.serialize_str(&digest),
            None => s.serialize_str("<redacted>"),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A regular expression compiled when the config is loaded.
#[derive(Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        compile(&s).map(Pattern).map_err(|why| serde::de::Error::custom(format!("invalid regular expression: {why}")))
    }
}

/// Compiles a pattern, or says why not in one line.
fn compile(s: &str) -> Result<regex::Regex, String> {
    // In fuzz builds, without Unicode classes and case folding: folding the large classes a
    // mutated pattern soon holds (`(?i)\p{L}`, `(?ui)[^a]`: the regex crate's own work, fuzzed by
    // its project) took three quarters of the config target's time, and most of it again when a
    // pattern turned Unicode back on inline, so such a pattern is refused there. The loader's
    // path is the same: a pattern compiles or is refused with a one-line reason.
    #[cfg(feature = "fuzzing")]
    if fuzz_only::turns_unicode_on(s) {
        return Err("Unicode turned on inline (refused in fuzz builds only)".to_owned());
    }
    regex::RegexBuilder::new(s).unicode(!cfg!(feature = "fuzzing")).build().map_err(|e| {
        // The regex crate's message spans several lines; keep its last, the diagnosis.
        e.to_string().lines().last().unwrap_or("invalid").trim().to_owned()
    })
}

#[cfg(feature = "fuzzing")]
mod fuzz_only {
    use regex_syntax::ast::{Ast, Flag, GroupKind, Visitor, parse::Parser, visit};

    /// Whether a pattern sets the `u` flag anywhere (`(?u)`, `(?ui:…)`); `false` when it does not
    /// parse (the regex crate says why).
    pub(super) fn turns_unicode_on(pattern: &str) -> bool {
        struct Finder;
        impl Visitor for Finder {
            type Output = ();
            type Err = ();
            fn finish(self) -> Result<(), ()> {
                Ok(())
            }
            fn visit_pre(&mut self, ast: &Ast) -> Result<(), ()> {
                let flags = match ast {
                    Ast::Flags(set) => &set.flags,
                    Ast::Group(group) => match &group.kind {
                        GroupKind::NonCapturing(flags) => flags,
                        _ => return Ok(()),
                    },
                    _ => return Ok(()),
                };
                if flags.flag_state(Flag::Unicode) == Some(true) { Err(()) } else { Ok(()) }
            }
        }
        Parser::new().parse(pattern).is_ok_and(|ast| visit(&ast, Finder).is_err())
    }

    #[cfg(test)]
    mod tests {
        use super::turns_unicode_on;

        #[test]
        fn an_inline_unicode_flag_is_seen_wherever_it_is_and_nothing_else_is_taken_for_one() {
            for on in ["(?u)a", "(?sui)x", "a(?u:b)", "(?i)(?-s:(?u)x)", "((?iu)[^a])+", "(?x) a (?u) b"] {
                assert!(turns_unicode_on(on), "{on}");
            }
            for off in ["a", "(?i)u", "(?-u)x", "(?i-u:x)", "\\(?u", "[(?u)]", "(?u", "u+", "(?P<u>x)"] {
                assert!(!turns_unicode_on(off), "{off}");
            }
        }

        #[test]
        fn a_pattern_turning_unicode_on_is_refused_in_fuzz_builds_with_a_reason() {
            assert_eq!(
                super::super::compile("(?ui)[^a]").unwrap_err(),
                "Unicode turned on inline (refused in fuzz builds only)"
            );
            assert!(super::super::compile("(?i)[a-z]+").is_ok());
        }
    }
}

/// Durations are written the humantime way: `500ms`, `60s`, `5m`, `1h 30m`. Public for the
/// other documents the agent reads (the emulator's scenarios).
pub mod duration {
    use super::*;

    /// Writes a duration the humantime way (`1m 30s`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads a humantime duration, saying how to write one when it cannot.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a duration such as `500ms`, `60s` or `5m`"))?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration `{s}`: {e} (write e.g. `500ms`, `60s`, `5m`)"))
        })
    }

    /// An optional duration (`None` when the key is absent).
    pub mod option {
        use super::*;

        /// Writes an optional duration.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// Sizes are written `512KiB`, `32MiB` (or a plain number of bytes).
mod size {
    use super::*;

    pub(super) fn serialize<S: Serializer>(b: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        let n = b.as_u64();
        let text = match n {
            0 => "0".to_owned(),
            n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
            n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
            n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
            n => n.to_string(),
        };
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a size such as `512KiB` or `32MiB`"))?
        {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.trim().parse::<ByteSize>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid size `{s}`: write a number and a unit, e.g. `512KiB`, `32MiB`"
                ))
            }),
        }
    }
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The API's origin, the key and the probes' exchange timeout (`upstream`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `scheme://host[:port]`, no path: the API's origin.
    #[schemars(with = "super::json_schema::UrlText")]
    pub base_url: url::Url,
    /// The key probes inject; never logged or exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// A file holding the key (a mounted Kubernetes Secret); read at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Bounds each HTTP exchange a probe makes.
    #[serde(default = "Upstream::default_timeout", with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
}

impl Upstream {
    fn default_timeout() -> Duration {
        secs(60)
    }
}

/// The admin port (`admin`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Where `/metrics`, `/healthz`, `/readyz`, `/api/v1/*` and `/-/reload` are served.
    pub listen: SocketAddr,
    /// Bearer token the `POST` endpoints require. Without one they answer loopback clients only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token (a mounted Kubernetes Secret); read at load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { listen: SocketAddr::from(([0, 0, 0, 0], 9477)), token: None, token_file: None }
    }
}

impl Admin {
    /// The token the `POST` endpoints require, when one is set and not empty.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(Secret::expose).filter(|t| !t.is_empty())
    }
}

/// The live-traffic proxy (`proxy`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// Serve the proxy (a restart applies a change).
    pub enabled: bool,
    /// Where the proxy listens (`IP:PORT`).
    pub listen: SocketAddr,
    /// A request without a complete upstream answer by then gets a synthetic 504.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub upstream_timeout: Duration,
    /// Larger request bodies get a synthetic 413 without reaching the API.
    #[serde(with = "size")]
    #[schemars(with = "SizeText")]
    pub max_request_body: ByteSize,
    /// Larger responses pass through unclassified (and are counted).
    #[serde(with = "size")]
    #[schemars(with = "SizeText")]
    pub inspect_limit: ByteSize,
    /// Open client connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections open to the upstream at most; a request beyond waits for a free one (within
    /// `upstream_timeout`), never answered by the proxy while it waits.
    pub upstream_max_connections: usize,
    /// Idle upstream connections kept for reuse at most (within `upstream_max_connections`); more
    /// are closed as they go idle (a restart applies a change).
    pub upstream_max_idle: usize,
    /// Opt-in: point `fetch_result` URLs in answers at the proxy.
    pub rewrite_fetch_result: bool,
    /// Opt-in: hold a 429'd request and retry it after `retry_after`.
    pub retry_rate_limited: RetryRateLimited,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream_timeout: secs(300),
            max_request_body: ByteSize::mib(32),
            inspect_limit: ByteSize::mib(4),
            max_connections: 4096,
            upstream_max_connections: 256,
            upstream_max_idle: 64,
            rewrite_fetch_result: false,
            retry_rate_limited: RetryRateLimited::default(),
        }
    }
}

/// Holding rate-limited requests to retry them (`proxy.retry_rate_limited`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryRateLimited {
    /// Hold a 429'd request and send it again after its `retry_after`.
    pub enabled: bool,
    /// The longest a request is held in all; a longer `retry_after` is passed through.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub max_wait: Duration,
}

impl Default for RetryRateLimited {
    fn default() -> Self {
        RetryRateLimited { enabled: false, max_wait: secs(60) }
    }
}

/// The async jobs the proxy follows (`jobs`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// A processing job not finished by then is counted `expired`.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub ttl: Duration,
    /// Beyond this many tracked jobs the oldest are evicted (and counted).
    pub max_tracked: usize,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs { ttl: secs(30 * 60), max_tracked: 100_000 }
    }
}

/// The bounds of the `model` and `endpoint` labels (`labels`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Labels {
    /// `model_id` values kept as label values; any other becomes `other`.
    pub models: Vec<String>,
    /// Distinct `endpoint` label values; beyond it, `other`.
    pub max_endpoints: usize,
}

impl Default for Labels {
    fn default() -> Self {
        Labels { models: vec!["flux".into(), "sdxl".into()], max_endpoints: 64 }
    }
}

/// One synthetic probe (`probes[]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// `[a-z0-9_-]`, unique: the `probe` label.
    #[schemars(regex(pattern = r"^[a-z0-9_-]{1,63}$|\$\{"))]
    pub name: String,
    /// How often the probe runs (the first run falls at random within the first interval).
    #[serde(default = "Probe::default_interval", with = "duration")]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
    /// Hard deadline of one run, submit to terminal answer; below `interval`.
    #[serde(default = "Probe::default_timeout", with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// What the probe sends.
    pub request: ProbeRequest,
    /// Follow an async job to its end (`fetch_path` with `{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<Follow>,
    /// Without it a probe succeeds on outcome `success` (after following).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// 0 = no cap; set it on probes that spend credits.
    #[serde(default)]
    pub max_runs_per_day: u32,
    /// With several replicas: run on the lease holder only (`one`), or on every replica (`all`).
    #[serde(default)]
    pub replicas: Replicas,
}

/// Which replicas run a probe (`cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Replicas {
    /// Only the replica holding the probe lease: N replicas spend what one would.
    #[default]
    One,
    /// Every replica, e.g. to measure each node's path to the API.
    All,
}

impl Probe {
    /// Where its job is polled (with `{id}`): `follow.fetch_path`, else the family's own fetch
    /// endpoint beside the request path; `None` without `follow` or for a one-segment path.
    pub fn fetch_path(&self) -> Option<String> {
        let follow = self.follow.as_ref()?;
        if let Some(p) = &follow.fetch_path {
            return Some(p.clone());
        }
        let path = self.request.path.split(['?', '#']).next().unwrap_or("").trim_end_matches('/');
        let (family, _) = path.rsplit_once('/').filter(|(family, _)| !family.is_empty())?;
        Some(format!("{family}/fetch/{{id}}"))
    }

    fn default_interval() -> Duration {
        secs(60)
    }
    fn default_timeout() -> Duration {
        secs(30)
    }
}

/// What a probe sends (`probes[].request`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// `POST` unless said otherwise.
    #[serde(default = "ProbeRequest::default_method", with = "method")]
    #[schemars(with = "MethodText")]
    pub method: http::Method,
    /// Joined to `upstream.base_url`; may carry a query string.
    pub path: String,
    /// Extra request headers (credential values are never shown).
    #[serde(default)]
    pub headers: Headers,
    /// JSON body (written as YAML); the key is injected as `inject_key` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Where the configured key goes: `body` (as `key`, the media API's way; the default, and
    /// what `true` means), `bearer` (`Authorization: Bearer`, the LLM API's chat completions),
    /// `x_api_key` (the LLM API's messages and models), `query` (`?key=`), or `none` (`false`).
    /// A key the body or the headers already carry is left as it is (an auth probe's wrong key).
    #[serde(default)]
    pub inject_key: InjectKey,
}

/// Where a probe puts the configured key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectKey {
    /// `key` in the JSON body.
    #[default]
    Body,
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `x-api-key: <key>`.
    XApiKey,
    /// `?key=<key>` on the path.
    Query,
    /// Not at all.
    None,
}

impl InjectKey {
    /// Whether the key is sent at all.
    pub fn injects(self) -> bool {
        self != InjectKey::None
    }
}

impl<'de> Deserialize<'de> for InjectKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Word(String),
        }
        let fail = || {
            serde::de::Error::custom("expected `body`, `bearer`, `x_api_key`, `query` or `none` (or `true`/`false`)")
        };
        match Raw::deserialize(d).map_err(|_| fail())? {
            Raw::Flag(true) => Ok(InjectKey::Body),
            Raw::Flag(false) => Ok(InjectKey::None),
            Raw::Word(w) => match w.as_str() {
                "body" => Ok(InjectKey::Body),
                "bearer" => Ok(InjectKey::Bearer),
                "x_api_key" => Ok(InjectKey::XApiKey),
                "query" => Ok(InjectKey::Query),
                "none" => Ok(InjectKey::None),
                _ => Err(fail()),
            },
        }
    }
}

impl ProbeRequest {
    fn default_method() -> http::Method {
        http::Method::POST
    }

    /// The key the request carries itself (an auth probe's wrong key): the body's `key`, or an
    /// `Authorization`/`x-api-key`/`key` header, whichever `inject_key` would otherwise fill.
    pub fn own_key(&self) -> Option<&str> {
        let header =
            |name: &str| self.headers.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        match self.inject_key {
            InjectKey::Bearer => header("authorization").map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim()),
            InjectKey::XApiKey => header("x-api-key"),
            InjectKey::Body | InjectKey::Query | InjectKey::None => self
                .body
                .as_ref()
                .and_then(|b| b.get("key"))
                .and_then(serde_json::Value::as_str)
                .or_else(|| header("key")),
        }
    }

    /// Whether the request carries a key of its own.
    pub fn carries_a_key(&self) -> bool {
        self.own_key().is_some()
    }
}

/// An HTTP method, written in capitals (`GET`, `POST`, …).
pub(crate) mod method {
    use super::*;

    /// Why `text` is not a method a probe can use, if it is not.
    pub(crate) fn problem(text: &str) -> Option<String> {
        let valid = http::Method::from_bytes(text.as_bytes()).is_ok() && !text.bytes().any(|b| b.is_ascii_lowercase());
        (!valid).then(|| format!("`{text}` is not an HTTP method: use GET, POST, PUT, PATCH or DELETE in capitals"))
    }

    pub(crate) fn serialize<S: Serializer>(m: &http::Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<http::Method, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(why) = problem(&s) {
            return Err(serde::de::Error::custom(why));
        }
        http::Method::from_bytes(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Header names whose values are credentials, shown as `<redacted>` in the effective config.
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "key"
        || n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || n.contains("token")
        || n.contains("secret")
        || n.contains("api-key")
        || n.contains("apikey")
}

/// Extra request headers. Values of credential headers ([`is_sensitive_header`]) never print.
#[derive(Clone, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl Headers {
    fn shown(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), if is_sensitive_header(k) { "<redacted>" } else { v.as_str() }))
            .collect()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let digests: BTreeMap<&str, String> = self
            .0
            .iter()
            .filter(|(k, _)| is_sensitive_header(k))
            .filter_map(|(k, v)| Some((k.as_str(), super::reload::secret_digest(v)?)))
            .collect();
        let mut shown = self.shown();
        for (k, d) in &digests {
            shown.insert(k, d.as_str());
        }
        shown.serialize(s)
    }
}

/// Following a job to its end (`probes[].follow`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Follow {
    /// Fetch path with `{id}`, e.g. `/api/v6/images/fetch/{id}`. Default: the family's own,
    /// the request path with its last segment replaced by `fetch/{id}`
    /// (`/api/v6/video/text2video` → `/api/v6/video/fetch/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_path: Option<String>,
    /// Floor between polls; the API's `eta` is honoured when longer (capped at 30 s).
    #[serde(default = "Follow::default_poll_interval", with = "duration")]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// Give up (`job_timeout`) after this long.
    #[serde(default = "Follow::default_max_wait", with = "duration")]
    #[schemars(with = "DurationText")]
    pub max_wait: Duration,
    /// Ask the API to call a webhook (`webhooks.listen`) when the job ends, and check it does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub webhook: bool,
}

impl Follow {
    fn default_poll_interval() -> Duration {
        secs(5)
    }
    fn default_max_wait() -> Duration {
        secs(600)
    }
}

/// What must hold of the final answer (`probes[].expect`); every one given must.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The final answer's HTTP status is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The outcome of the final answer.
    pub status: Option<Outcome>,
    /// The error class of the final answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The error reason of the final answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// A regular expression the API's message must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_matches: Option<Pattern>,
    /// Submit to terminal answer within this.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    #[schemars(with = "Option<DurationText>")]
    pub max_duration: Option<Duration>,
    /// Checks on the final answer's JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonCheck>,
    /// Download and check the media the final answer names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputCheck>,
    /// What an LLM answer must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmExpect>,
}

/// What an LLM answer must hold (`probes[].expect.llm`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmExpect {
    /// At least this many output tokens (from the answer's `usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_output_tokens: Option<u64>,
    /// Every finish reason of the answer is one of these (e.g. `[stop, end_turn]`: a `length`
    /// answer was truncated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finish_reasons: Vec<FinishReason>,
    /// A streamed answer's first content within this (for `"stream": true` bodies).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    #[schemars(with = "Option<DurationText>")]
    pub max_time_to_first_token: Option<Duration>,
}

/// Checks of the generated media the final answer links to (`output`, else `future_links` or
/// `proxy_links`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutputCheck {
    /// At least this many URLs.
    pub count: usize,
    /// Images must decode (PNG, JPEG, WebP, GIF).
    pub decodes: bool,
    /// The size images must have.
    pub size: OutputSize,
    /// Fails a near-uniform image (a black frame, a flat placeholder).
    pub not_blank: bool,
    /// Largest download; a larger one fails as `too_large`.
    #[serde(with = "size")]
    #[schemars(with = "SizeText")]
    pub max_bytes: ByteSize,
    /// Bounds each download.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// If not empty, the only hosts downloads may go to (the CDN's); others fail the check.
    #[serde(skip_serializing_if = "Vec::is_empty", alias = "output_hosts")]
    pub hosts: Vec<String>,
}

impl Default for OutputCheck {
    fn default() -> Self {
        OutputCheck {
            count: 1,
            decodes: true,
            size: OutputSize::FromRequest,
            not_blank: true,
            max_bytes: ByteSize::mib(20),
            timeout: secs(30),
            hosts: Vec::new(),
        }
    }
}

/// The size generated images must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSize {
    /// The request's `width` × `height` (unchecked when the request names none).
    FromRequest,
    /// Whatever size.
    Any,
    /// This width and height, in pixels.
    Fixed {
        /// Pixels.
        width: u32,
        /// Pixels.
        height: u32,
    },
}

impl Serialize for OutputSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Fixed {
            width: u32,
            height: u32,
        }
        match self {
            OutputSize::FromRequest => s.serialize_str("from_request"),
            OutputSize::Any => s.serialize_str("any"),
            OutputSize::Fixed { width, height } => Fixed { width: *width, height: *height }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OutputSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fixed {
            width: u32,
            height: u32,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Fixed(Fixed),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected `from_request`, `any` or `{width: W, height: H}`"))?
        {
            Raw::Word(w) if w == "from_request" => Ok(OutputSize::FromRequest),
            Raw::Word(w) if w == "any" => Ok(OutputSize::Any),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "unknown size `{w}`: expected `from_request`, `any` or `{{width: W, height: H}}`"
            ))),
            Raw::Fixed(f) => Ok(OutputSize::Fixed { width: f.width, height: f.height }),
        }
    }
}

/// A check on the final answer's JSON at an RFC 6901 pointer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonCheck {
    /// An RFC 6901 JSON pointer, e.g. `/output/0`.
    pub pointer: String,
    /// Whether the pointer must (or must not) find a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The value it must find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
}

crate::classify::label_enum! {
    /// A status-page provider's document format.
    pub enum PageFormat {
        /// Atlassian Statuspage: `summary.json`, `status.json`.
        Statuspage => "statuspage",
        /// Instatus: `summary.json`, `v2/components.json`.
        Instatus => "instatus",
        /// Better Stack: `index.json`.
        Betterstack => "betterstack",
        /// Any other page, read with keyword rules.
        Html => "html",
    }
}

/// `format:` of the status page: `auto` (detect it, written as `None`) or one [`PageFormat`].
mod page_format {
    use super::*;

    pub(super) fn serialize<S: Serializer>(f: &Option<PageFormat>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(f.map_or("auto", PageFormat::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PageFormat>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "auto" {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown format `{s}`, expected one of `auto`, `statuspage`, `instatus`, `betterstack`, `html`"
            ))
        })
    }
}

/// The vendor's status page (`status_page`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StatusPage {
    /// The page people open; the providers' JSON documents are found beside it.
    #[schemars(with = "super::json_schema::UrlText")]
    pub url: url::Url,
    /// `None`: detect it (`auto`).
    #[serde(with = "page_format")]
    #[schemars(with = "PageFormatText")]
    pub format: Option<PageFormat>,
    /// How often the page is polled.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
    /// A poll without an answer by then failed (the last state is kept).
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Distinct component label values; beyond it components are dropped and counted.
    pub max_components: usize,
    /// For `html` pages: phrases and the state they mean (the worst phrase found wins). Empty:
    /// the built-in rules ("All Systems Operational", "Degraded", "Partial Outage", …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub html_rules: Vec<HtmlRule>,
}

/// A phrase of an HTML status page and the state it means.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HtmlRule {
    /// Matched case-insensitively against the page's text.
    pub contains: String,
    /// The state the phrase means.
    pub status: crate::classify::PageStatus,
}

impl Default for StatusPage {
    fn default() -> Self {
        StatusPage {
            // A literal URL, parsed by the test `status_page_default_url_parses`.
            #[allow(clippy::expect_used)]
            url: url::Url::parse("https://modelslab.com/status").expect("literal URL is valid"),
            format: None,
            interval: secs(60),
            timeout: secs(10),
            max_components: 50,
            html_rules: Vec::new(),
        }
    }
}

/// The webhook receiver: probes with `follow.webhook` check that the API calls back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// Its own port (so that only it need be exposed, e.g. through an Ingress); `None`: off.
    #[serde(with = "optional_addr")]
    #[schemars(with = "String")]
    pub listen: Option<SocketAddr>,
    /// What the API is told to call (`<public_url>/hooks/<token>`); empty: the listener's own
    /// address (enough when the API can reach it directly, as the emulator does).
    pub public_url: String,
    /// After the job is seen finished, a webhook still counts as `late` until then (`missing` after).
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub grace: Duration,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks { listen: None, public_url: String::new(), grace: secs(120) }
    }
}

/// `listen: ""` means off.
mod optional_addr {
    use super::*;

    pub(super) fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.map(|a| a.to_string()).unwrap_or_default())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        s.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not an address: write IP:PORT, e.g. 0.0.0.0:9478 (or empty for off)"
            ))
        })
    }
}

/// The account as a whole: its credits, its queue across every client of the key, the model
/// catalogue. Each is polled on the lease holder only.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Account {
    /// Polling the wallet balance.
    pub balance: Balance,
    /// Polling the account-wide queue depth.
    pub queue: Queue,
    /// Polling the model catalogue.
    pub models: Catalogue,
}

/// The API's own limit on `request_count` calls: 30 a minute, so polls at least 2 s apart.
pub const QUEUE_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// The least interval of catalogue polls (a list that changes in days needs no more).
pub const MODELS_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Polling the queue of the whole account (every client of the key, not only this agent's
/// traffic), to see it fill before the first 429.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// Poll the queue depth (with the API key).
    pub enabled: bool,
    /// `POST` with `{"key": …}`; answers `{"status":"success","processing_count":3,…}`.
    pub path: String,
    /// How often (on the lease holder only). The API allows 30 calls a minute: at least 2s.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
    /// The plan's queued-request limit (5 pay-as-you-go, 10 standard, 15 premium); 0 learns it
    /// from the first 429's `Maximum N queued requests`.
    pub limit: u32,
}

impl Default for Queue {
    fn default() -> Self {
        Queue { enabled: false, path: "/api/v6/processing/request_count".into(), interval: secs(15), limit: 0 }
    }
}

/// Polling the model catalogue, to see a model of `labels.models` leave it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Catalogue {
    /// Poll the catalogue (with the API key, as `x-api-key`).
    pub enabled: bool,
    /// `GET`; answers `{"data":[{"id":…}]}`, `{"models":[{"model_id":…}]}` or a bare array.
    pub path: String,
    /// How often (on the lease holder only); at least 10s.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue { enabled: false, path: "/api/v7/llm/v1/models".into(), interval: secs(600) }
    }
}

/// Polling the wallet balance, to see the credits run out before the first 402.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Balance {
    /// Poll the balance (with the API key).
    pub enabled: bool,
    /// `POST` with `{"key": …}`; answers `{"status":"success","data":{"balance":43.6,"currency":"USD"}}`.
    pub path: String,
    /// How often (on the lease holder only).
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
    /// A poll without an answer by then failed (the last balance is kept).
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
}

impl Default for Balance {
    fn default() -> Self {
        Balance { enabled: false, path: "/api/wallet_balance".into(), interval: secs(300), timeout: secs(30) }
    }
}

/// A service-level objective: a share of good events over a window.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// `[a-z0-9_-]`, unique: the `slo` label.
    #[schemars(regex(pattern = r"^[a-z0-9_-]{1,63}$|\$\{"))]
    pub name: String,
    /// Percent of good events, e.g. 99.5.
    pub objective: f64,
    /// The period the error budget spans: 7d, 28d or 30d.
    #[serde(default = "Slo::default_window", with = "duration")]
    #[schemars(with = "DurationText")]
    pub window: Duration,
    /// Burn-rate alerts need at least this many events in their long window.
    #[serde(default = "Slo::default_min_events")]
    pub min_events: u32,
    /// What counts as an event, and when it is good.
    pub sli: Sli,
}

impl Slo {
    fn default_window() -> Duration {
        secs(30 * 86_400)
    }
    fn default_min_events() -> u32 {
        10
    }
    /// The windows the static rule file computes error ratios over.
    pub const WINDOWS: [(&'static str, u64); 3] = [("7d", 7 * 86_400), ("28d", 28 * 86_400), ("30d", 30 * 86_400)];
}

/// What an SLO counts: exactly one kind of event. Written as a mapping with one key
/// (`requests:`, `jobs:` or `probes:`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", try_from = "RawSli")]
pub enum Sli {
    /// API exchanges: bad when their error class is one of `bad_classes`.
    Requests(RequestsSli),
    /// Async jobs: good when they succeed within `max_duration`.
    Jobs(JobsSli),
    /// Probe runs of these probes: good when they succeed.
    Probes(Vec<String>),
}

/// `sli:` as written, before it is known to name exactly one kind.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSli {
    requests: Option<RequestsSli>,
    jobs: Option<JobsSli>,
    probes: Option<Vec<String>>,
}

impl TryFrom<RawSli> for Sli {
    type Error = String;

    fn try_from(raw: RawSli) -> Result<Self, String> {
        match (raw.requests, raw.jobs, raw.probes) {
            (Some(r), None, None) => Ok(Sli::Requests(r)),
            (None, Some(j), None) => Ok(Sli::Jobs(j)),
            (None, None, Some(p)) => Ok(Sli::Probes(p)),
            _ => Err("give exactly one of `requests`, `jobs` or `probes`".into()),
        }
    }
}

/// Which component's events an SLI counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SliSource {
    /// Exchanges of the proxy (live traffic) only.
    Proxy,
    /// Exchanges of the probes only.
    Probe,
    /// Both.
    #[default]
    Any,
}

/// An SLI of API exchanges (`sli.requests`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestsSli {
    /// Whose exchanges count.
    #[serde(default)]
    pub source: SliSource,
    /// Endpoint templates (`/api/v6/images/text2img`, `/api/v6/images/fetch/{id}`); empty = all.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Error classes that are the API's fault. A 400 from a bad request is the caller's.
    #[serde(default = "RequestsSli::default_bad_classes")]
    pub bad_classes: Vec<ErrorClass>,
}

impl RequestsSli {
    /// The error classes that are the API's fault (5xx, timeouts, transport, invalid answers).
    pub fn default_bad_classes() -> Vec<ErrorClass> {
        vec![
            ErrorClass::ServerError,
            ErrorClass::Unavailable,
            ErrorClass::Timeout,
            ErrorClass::Transport,
            ErrorClass::InvalidResponse,
        ]
    }
}

/// An SLI of async jobs (`sli.jobs`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsSli {
    /// Whose jobs count.
    #[serde(default)]
    pub source: SliSource,
    /// A job that succeeds later than this is bad too; none = any success is good.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    #[schemars(with = "Option<DurationText>")]
    pub max_duration: Option<Duration>,
}

/// Several replicas sharing job state and probe leadership through Redis.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// `redis://[:password@]host:port[/db]` or `rediss://…`; `None`: one replica, state in memory.
    /// A secret, since the URL may carry a password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<Secret>,
    /// A file holding the URL (a mounted Kubernetes Secret); read at load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url_file: Option<PathBuf>,
    /// Prefix of every key, so that several deployments may share one Redis.
    pub key_prefix: String,
    /// How long the probe lease lasts without renewal (renewed every third of it): another
    /// replica takes over within this after the holder dies.
    #[serde(with = "duration")]
    #[schemars(with = "DurationText")]
    pub lease_ttl: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster { redis_url: None, redis_url_file: None, key_prefix: "modelslab-sentinel".into(), lease_ttl: secs(15) }
    }
}

impl Cluster {
    /// The Redis URL, when several replicas share state.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_ref().map(Secret::expose).filter(|u| !u.is_empty())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The least severe log level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything (no header value or body even then).
    Trace,
    /// Each API error and job end.
    Debug,
    /// Start, reloads, state changes.
    Info,
    /// Failures that need a look.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The level as the `tracing` filter names it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Logs and traces (`telemetry`; a restart applies a change).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// `service.name` of the traces.
    pub service_name: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The least severe level written.
    pub log_level: LogLevel,
    /// OTLP trace export.
    pub otlp: Otlp,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            service_name: "modelslab-sentinel".into(),
            log_format: LogFormat::Text,
            log_level: LogLevel::Info,
            otlp: Otlp::default(),
        }
    }
}

/// How traces are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// OTLP trace export (`telemetry.otlp`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    /// Empty: traces off (unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
    pub endpoint: String,
    /// gRPC or HTTP.
    pub protocol: OtlpProtocol,
    /// Parent-based sampling ratio, 0.0 to 1.0.
    pub sample_ratio: f64,
    /// Sent with every export (vendor tokens); values redacted when shown.
    pub headers: BTreeMap<String, Secret>,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp { endpoint: String::new(), protocol: OtlpProtocol::Grpc, sample_ratio: 1.0, headers: BTreeMap::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_page_default_url_parses() {
        assert_eq!(StatusPage::default().url.as_str(), "https://modelslab.com/status");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-canary");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "sk-canary");
    }
}
