//! How the emulator behaves: latency, job durations, how honest its etas are, failure and fault
//! ratios, the message key spelling and the status page. Given as YAML or JSON (`--scenario`,
//! `PUT /_sim/scenario`); every field has a calm default.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::duration;

/// The emulator's behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Seeds the random draws (latency, durations, faults), so runs repeat.
    pub seed: u64,
    /// Added before answering each API request.
    pub latency: Span,
    /// Share of valid generations answered `success` at once (no async job).
    pub sync_ratio: f64,
    /// How long an async job's generation runs (its `generationTime`), before `model_pace`.
    pub job_duration: Span,
    /// How long a job waits in the account's queue before its generation starts (its duration
    /// is the wait plus the generation).
    pub queue_wait: Span,
    /// Generation time by `model_id`, as a factor of `job_duration` (models not named: 1).
    pub model_pace: BTreeMap<String, f64>,
    /// Share of answers given at once by `model_id`, instead of `sync_ratio` (a video model that
    /// always queues next to an image model that answers at once).
    pub model_sync: BTreeMap<String, f64>,
    /// Models that leave the LLM catalogue (`/api/v7/llm/v1/models`), each `after` the scenario
    /// was set (a scenario replaced with the same drops keeps their clock); requests for them are
    /// then refused as unknown models.
    pub catalogue_drops: Vec<CatalogueDrop>,
    /// Promised eta = real duration × eta_bias: below 1 the API is optimistic (jobs overrun).
    pub eta_bias: f64,
    /// Share of jobs that end `failed` or `error` instead of `success`.
    pub failure_ratio: f64,
    /// Shares of requests answered with a fault instead.
    pub faults: Faults,
    /// Spell the message key `messege`, as older endpoints do.
    pub legacy_messege: bool,
    /// What the status page says.
    pub status_page: PageState,
    /// How long the status page takes to show a change of `status_page` (a vendor slow to
    /// acknowledge an outage, or to declare it over).
    #[serde(with = "duration")]
    pub status_page_lag: Duration,
    /// A maintenance the status page announces (`scheduled`) and then shows in progress, from
    /// when the scenario is set.
    pub status_page_maintenance: Option<PageMaintenance>,
    /// `model_id` values that exist; others get `Model not found: <id>`.
    pub models: Vec<String>,
    /// The account every key belongs to, unless a magic key prefix (`sim-broke…`) says otherwise.
    pub account: Account,
    /// Each key's credits: they start at `balance` and every generated image costs `cost`; a
    /// generation the wallet cannot pay for answers 402.
    pub wallet: Wallet,
    /// What the output URLs serve: real images of the requested size, or broken ones.
    pub outputs: Outputs,
    /// How the webhooks of requests that carry one are called.
    pub webhooks: Hooks,
    /// The LLM API (`/api/v7/llm/…`): its models, its pace and its faults.
    pub llm: Llm,
}

/// A model leaving the catalogue while the emulator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueDrop {
    /// The model id (of `llm.models`).
    pub model: String,
    /// After this long from when the scenario was set.
    #[serde(with = "duration")]
    pub after: Duration,
}

/// How the emulated LLM API answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Llm {
    /// Model ids that exist; others get `model_not_found`.
    pub models: Vec<String>,
    /// Before a streamed answer's first content (and before a whole answer).
    pub first_token: Span,
    /// Between the content events of a stream.
    pub token_interval: Span,
    /// Words of an answer when `max_tokens` does not cut it (each word is a token).
    pub answer_tokens: u32,
    /// Shares of LLM requests answered with a fault instead (together at most 1).
    pub faults: LlmFaults,
    /// `Retry-After` of a rate-limited answer, in seconds.
    pub retry_after: u32,
}

impl Default for Llm {
    fn default() -> Self {
        Llm {
            models: [
                "Qwen/Qwen2.5-VL-72B-Instruct-together",
                "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                "claude-sonnet",
            ]
            .map(String::from)
            .to_vec(),
            first_token: Span::fixed(Duration::from_millis(20)),
            token_interval: Span::fixed(Duration::from_millis(2)),
            answer_tokens: 12,
            faults: LlmFaults::default(),
            retry_after: 1,
        }
    }
}

/// Shares of LLM requests answered with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmFaults {
    /// HTTP 429 with `Retry-After` and a rate-limit error.
    pub rate_limited: f64,
    /// HTTP 529 `overloaded_error`.
    pub overloaded: f64,
    /// A stream that carries an `error` event in its middle (non-streamed: an HTTP 200 error).
    pub error_event: f64,
    /// A stream cut in its middle (the connection drops before the terminator).
    pub cut: f64,
}

/// A fault of the LLM API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmFault {
    /// 429.
    RateLimited,
    /// 529.
    Overloaded,
    /// An error in the answer.
    ErrorEvent,
    /// The stream breaks off.
    Cut,
}

impl LlmFaults {
    fn shares(&self) -> [(LlmFault, &'static str, f64); 4] {
        [
            (LlmFault::RateLimited, "rate_limited", self.rate_limited),
            (LlmFault::Overloaded, "overloaded", self.overloaded),
            (LlmFault::ErrorEvent, "error_event", self.error_event),
            (LlmFault::Cut, "cut", self.cut),
        ]
    }

    /// The fault a uniform draw in [0, 1) lands on, if any.
    pub fn pick(&self, draw: f64) -> Option<LlmFault> {
        pick(self.shares().map(|(fault, _, share)| (fault, share)), draw)
    }
}

/// Shares of generated files served broken (together at most 1), and how slowly.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outputs {
    /// 404, as a CDN that lost the file.
    pub missing: f64,
    /// The first half of the file only.
    pub truncated: f64,
    /// A black frame, as a placeholder for filtered content.
    pub blank: f64,
    /// Half the requested width.
    pub wrong_size: f64,
    /// Added before serving a file.
    pub delay: Span,
}

/// What a generated file is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFault {
    /// 404.
    Missing,
    /// The first half of the file.
    Truncated,
    /// A black frame.
    Blank,
    /// Half the requested width.
    WrongSize,
}

impl Outputs {
    fn shares(&self) -> [(OutputFault, &'static str, f64); 4] {
        [
            (OutputFault::Missing, "missing", self.missing),
            (OutputFault::Truncated, "truncated", self.truncated),
            (OutputFault::Blank, "blank", self.blank),
            (OutputFault::WrongSize, "wrong_size", self.wrong_size),
        ]
    }

    /// The fault a uniform draw in [0, 1) lands on, if any.
    pub fn pick(&self, draw: f64) -> Option<OutputFault> {
        pick(self.shares().map(|(fault, _, share)| (fault, share)), draw)
    }
}

/// Webhook calls: after the job ends (plus `delay`), some dropped, some sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// Added before calling.
    pub delay: Span,
    /// Share of webhooks never sent (the API documents them as best-effort).
    pub drop: f64,
    /// Share of webhooks sent twice (the API documents duplicates as possible).
    pub duplicate: f64,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { delay: Span::fixed(Duration::ZERO), drop: 0.0, duplicate: 0.0 }
    }
}

impl Default for Span {
    fn default() -> Self {
        Span::fixed(Duration::ZERO)
    }
}

/// Credits per key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wallet {
    /// A key's credits before its first generation (USD).
    pub balance: f64,
    /// What one generated image costs.
    pub cost: f64,
}

impl Default for Wallet {
    fn default() -> Self {
        Wallet { balance: 42.5, cost: 0.002 }
    }
}

/// An account's plan and standing: decides queue limits, 402s, 401s and 403s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// Queue limit 5.
    #[default]
    PayAsYouGo,
    /// Queue limit 10.
    Standard,
    /// Queue limit 15.
    Premium,
    /// No realtime endpoints (403).
    Basic,
    /// Out of credits (402).
    Broke,
    /// The key was revoked (401).
    Revoked,
}

impl Account {
    /// The account of a key: its magic prefix, else the scenario's account.
    pub fn of_key(key: &str, default: Account) -> Account {
        [
            ("sim-invalid", Account::Revoked),
            ("sim-broke", Account::Broke),
            ("sim-basic", Account::Basic),
            ("sim-standard", Account::Standard),
            ("sim-premium", Account::Premium),
        ]
        .into_iter()
        .find(|(prefix, _)| key.starts_with(prefix))
        .map_or(default, |(_, a)| a)
    }

    /// How many unfinished jobs the account may have.
    pub fn queue_limit(self) -> usize {
        match self {
            Account::Standard => 10,
            Account::Premium => 15,
            _ => 5,
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            latency: Span::fixed(Duration::ZERO),
            sync_ratio: 0.0,
            job_duration: Span { min: Duration::from_secs(2), max: Duration::from_secs(8) },
            queue_wait: Span::fixed(Duration::ZERO),
            model_pace: BTreeMap::new(),
            model_sync: BTreeMap::new(),
            catalogue_drops: Vec::new(),
            eta_bias: 1.0,
            failure_ratio: 0.0,
            faults: Faults::default(),
            legacy_messege: false,
            status_page: PageState::Operational,
            status_page_lag: Duration::ZERO,
            status_page_maintenance: None,
            models: [
                "flux",
                "sdxl",
                "sd-1.5",
                "realistic-vision-v51",
                "dreamshaper-8",
                "cogvideox",
                "wan-2.1",
                "bark",
                "trellis",
            ]
            .map(String::from)
            .to_vec(),
            account: Account::PayAsYouGo,
            wallet: Wallet::default(),
            outputs: Outputs::default(),
            webhooks: Hooks::default(),
            llm: Llm::default(),
        }
    }
}

/// A maintenance on the emulated status page, relative to when the scenario was set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageMaintenance {
    /// Until then it is announced as `scheduled`.
    #[serde(with = "duration")]
    pub starts_in: Duration,
    /// It is `in_progress` this long, then `completed`.
    #[serde(with = "duration")]
    pub lasts: Duration,
}

/// A range of durations drawn uniformly; `50ms` alone means exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    /// The shortest.
    #[serde(with = "duration")]
    pub min: Duration,
    /// The longest.
    #[serde(with = "duration")]
    pub max: Duration,
}

impl Span {
    /// Exactly `d`.
    pub fn fixed(d: Duration) -> Self {
        Span { min: d, max: d }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Range {
            #[serde(with = "duration")]
            min: Duration,
            #[serde(with = "duration")]
            max: Duration,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Range(Range),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a duration (`50ms`) or a range (`{min: 1s, max: 5s}`)"))?
        {
            Raw::One(s) => humantime::parse_duration(s.trim())
                .map(Span::fixed)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration `{s}`: {e}"))),
            Raw::Range(r) => Ok(Span { min: r.min, max: r.max }),
        }
    }
}

/// Shares of API requests answered with a fault instead of normally (together at most 1).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// HTTP 500 `Internal server error. Please try again.`
    pub server_error: f64,
    /// HTTP 503 `Service temporarily unavailable. Please try again later.`
    pub unavailable: f64,
    /// HTTP 502 with an HTML page, as a gateway in front of the API sends.
    pub gateway_html: f64,
    /// HTTP 200 with `"status":"error"` and a server-error message.
    pub soft_error: f64,
    /// No answer until the client gives up.
    pub timeout: f64,
    /// The connection is closed without an answer.
    pub reset: f64,
}

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 with the API's internal error message.
    ServerError,
    /// HTTP 503.
    Unavailable,
    /// HTTP 502 with an HTML page.
    GatewayHtml,
    /// HTTP 200 with `"status":"error"`.
    SoftError,
    /// No answer until the client gives up.
    Timeout,
    /// The connection closed without an answer.
    Reset,
}

/// The share a uniform draw in [0, 1) lands on, taking the shares in order, if any.
fn pick<T>(shares: impl IntoIterator<Item = (T, f64)>, draw: f64) -> Option<T> {
    let mut acc = 0.0;
    for (what, share) in shares {
        acc += share;
        if draw < acc {
            return Some(what);
        }
    }
    None
}

impl Faults {
    fn shares(&self) -> [(Fault, f64); 6] {
        [
            (Fault::ServerError, self.server_error),
            (Fault::Unavailable, self.unavailable),
            (Fault::GatewayHtml, self.gateway_html),
            (Fault::SoftError, self.soft_error),
            (Fault::Timeout, self.timeout),
            (Fault::Reset, self.reset),
        ]
    }

    /// The fault a uniform draw in [0, 1) lands on, if any.
    pub fn pick(&self, draw: f64) -> Option<Fault> {
        pick(self.shares(), draw)
    }
}

/// What the emulated status page says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageState {
    /// All systems operational.
    Operational,
    /// Degraded performance.
    DegradedPerformance,
    /// A partial outage.
    PartialOutage,
    /// A major outage.
    MajorOutage,
    /// Under maintenance.
    UnderMaintenance,
}

impl Scenario {
    /// Parses a scenario from YAML or JSON text and checks it.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = crate::config::parse_document(text).map_err(|p| p.to_string())?;
        s.check()?;
        Ok(s)
    }

    /// Every problem, one per line.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut ratio = |name: &str, v: f64| {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{name}: {v} is not a ratio between 0 and 1"));
            }
        };
        ratio("sync_ratio", self.sync_ratio);
        ratio("failure_ratio", self.failure_ratio);
        for (fault, share) in self.faults.shares() {
            ratio(&format!("faults.{}", fault_name(fault)), share);
        }
        for (_, name, share) in self.outputs.shares() {
            ratio(&format!("outputs.{name}"), share);
        }
        for (_, name, share) in self.llm.faults.shares() {
            ratio(&format!("llm.faults.{name}"), share);
        }
        ratio("webhooks.drop", self.webhooks.drop);
        for (model, share) in &self.model_sync {
            ratio(&format!("model_sync.{model}"), *share);
        }
        ratio("webhooks.duplicate", self.webhooks.duplicate);
        for (name, total) in [
            ("faults", self.faults.shares().iter().map(|(_, s)| s).sum::<f64>()),
            ("llm.faults", self.llm.faults.shares().iter().map(|(_, _, s)| s).sum()),
            ("outputs", self.outputs.shares().iter().map(|(_, _, s)| s).sum()),
        ] {
            if total > 1.0 + 1e-9 {
                problems.push(format!("{name}: the shares add up to {total:.2}, more than 1"));
            }
        }
        if self.llm.models.is_empty() {
            problems.push("llm.models: list at least one model id".to_owned());
        }
        for (name, span) in [
            ("latency", self.latency),
            ("job_duration", self.job_duration),
            ("queue_wait", self.queue_wait),
            ("outputs.delay", self.outputs.delay),
            ("webhooks.delay", self.webhooks.delay),
            ("llm.first_token", self.llm.first_token),
            ("llm.token_interval", self.llm.token_interval),
        ] {
            if span.min > span.max {
                problems.push(format!("{name}: min is longer than max"));
            }
        }
        if !(self.eta_bias.is_finite() && self.eta_bias > 0.0) {
            problems.push(format!("eta_bias: {} must be a number above 0 (1 = honest)", self.eta_bias));
        }
        for (name, v) in [("wallet.balance", self.wallet.balance), ("wallet.cost", self.wallet.cost)] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{name}: {v} must be a number of credits, 0 or more"));
            }
        }
        if self.models.is_empty() {
            problems.push("models: list at least one model id".to_owned());
        }
        for (model, pace) in &self.model_pace {
            if !(pace.is_finite() && *pace > 0.0) {
                problems.push(format!("model_pace.{model}: {pace} must be a number above 0 (1 = job_duration)"));
            }
        }
        for (i, d) in self.catalogue_drops.iter().enumerate() {
            if !self.llm.models.contains(&d.model) {
                problems.push(format!("catalogue_drops[{i}].model: `{}` is not one of llm.models", d.model));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }
}

fn fault_name(f: Fault) -> &'static str {
    match f {
        Fault::ServerError => "server_error",
        Fault::Unavailable => "unavailable",
        Fault::GatewayHtml => "gateway_html",
        Fault::SoftError => "soft_error",
        Fault::Timeout => "timeout",
        Fault::Reset => "reset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_json_with_defaults() {
        let s =
            Scenario::parse("seed: 7\nlatency: 5ms\njob_duration: {min: 1s, max: 2s}\nfaults: {reset: 0.5}\n").unwrap();
        assert_eq!(s.seed, 7);
        assert_eq!(s.latency, Span::fixed(Duration::from_millis(5)));
        assert_eq!(s.job_duration.max, Duration::from_secs(2));
        assert_eq!(s.status_page, PageState::Operational);
        let j = Scenario::parse(r#"{"status_page":"major_outage","legacy_messege":true}"#).unwrap();
        assert_eq!((j.status_page, j.legacy_messege), (PageState::MajorOutage, true));
    }

    #[test]
    fn refuses_nonsense_with_the_reason() {
        assert!(
            Scenario::parse("faults: {server_error: 0.7, reset: 0.6}\n")
                .unwrap_err()
                .contains("add up to 1.30, more than 1")
        );
        assert!(Scenario::parse("sync_ratio: 2\n").unwrap_err().contains("sync_ratio: 2 is not a ratio"));
        assert!(Scenario::parse("job_duration: {min: 5s, max: 1s}\n").unwrap_err().contains("min is longer than max"));
        assert!(Scenario::parse("colour: red\n").unwrap_err().contains("unknown field `colour`"));
        assert!(Scenario::parse("status_page: sunny\n").unwrap_err().contains("status_page"));
    }

    #[test]
    fn fault_draws() {
        let f = Faults { server_error: 0.25, reset: 0.25, ..Faults::default() };
        assert_eq!(f.pick(0.1), Some(Fault::ServerError));
        assert_eq!(f.pick(0.3), Some(Fault::Reset));
        assert_eq!(f.pick(0.6), None);
        assert_eq!(Faults::default().pick(0.0), None);
    }
}
