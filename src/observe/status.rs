//! The status document: what `GET /api/v1/status` serialises and the status page renders, one
//! typed struct for both (so that the page never reads back the JSON by string keys). Each
//! component contributes its part ([`ProbeView`], [`StatusPageView`], …); the verdict at the top
//! ([`Overall`]) is judged from the rest by [`super::verdict`].
//!
//! Nothing here holds a key, a prompt or a body: messages are the API's, classified and scrubbed.

use serde::{Deserialize, Serialize};

use super::history::{Recent, RunMark};
use super::verdict::{self, Overall};
use crate::classify::PageStatus;
use crate::config::PageFormat;
pub use crate::maintenance::MaintenanceView;
use crate::vocab::{BackoffReason, RunReport};

/// The agent's state, as one document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDocument {
    /// The agent's version.
    pub version: String,
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// The configuration in force.
    pub config: ConfigState,
    /// Every configured probe, in config order.
    pub probes: Vec<ProbeView>,
    /// The last 15 minutes.
    pub recent: Recent,
    /// The vendor's status page, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page: Option<StatusPageView>,
    /// The proxy, when it is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyView>,
    /// The account, when it is polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountView>,
    /// With several replicas (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
    /// The webhook receiver, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhooksView>,
    /// Maintenance windows.
    pub maintenance: MaintenanceView,
    /// The verdict the page shows at the top.
    pub overall: Overall,
}

/// What the components contribute to the document.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// Every configured probe.
    pub probes: Vec<ProbeView>,
    /// The last 15 minutes.
    pub recent: Recent,
    /// The vendor's status page, when one is configured.
    pub status_page: Option<StatusPageView>,
    /// The proxy, when it is enabled.
    pub proxy: Option<ProxyView>,
    /// The account, when it is polled.
    pub account: Option<AccountView>,
    /// With several replicas (Redis).
    pub cluster: Option<ClusterView>,
    /// The webhook receiver, when it is on.
    pub webhooks: Option<WebhooksView>,
    /// Maintenance windows.
    pub maintenance: MaintenanceView,
}

impl StatusDocument {
    /// The document for the agent's own state and its components' parts, with its verdict.
    pub fn judge(ready: bool, config: ConfigState, parts: Parts) -> StatusDocument {
        let mut doc = StatusDocument {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ready,
            config,
            probes: parts.probes,
            recent: parts.recent,
            status_page: parts.status_page,
            proxy: parts.proxy,
            account: parts.account,
            cluster: parts.cluster,
            webhooks: parts.webhooks,
            maintenance: parts.maintenance,
            overall: Overall::default(),
        };
        doc.overall = verdict::assess(&doc);
        doc
    }
}

/// How the admin `POST`s are guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAccess {
    /// `Authorization: Bearer <admin.token>`.
    Token,
    /// No token: loopback clients only.
    LoopbackOnly,
}

/// The configuration in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigState {
    /// The configuration file.
    pub file: String,
    /// How the `POST` endpoints are guarded.
    pub admin_access: AdminAccess,
    /// Whether the last (re)load succeeded.
    pub last_reload_success: bool,
    /// When the last successful (re)load was (Unix seconds).
    pub last_reload_success_timestamp_seconds: f64,
    /// The problems of the last failed reload, until a reload succeeds.
    pub last_reload_error: Option<String>,
    /// Settings changed by a reload that only a restart applies.
    pub restart_required_for: Vec<String>,
}

/// A probe waiting out a 429 or a 402.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Why it waits.
    pub reason: BackoffReason,
    /// How much longer.
    pub remaining_seconds: f64,
}

/// One probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeView {
    /// The probe's name.
    pub name: String,
    /// Its interval.
    pub interval_seconds: f64,
    /// Whether a run is in flight.
    pub running: bool,
    /// Runs counted against `max_runs_per_day` today.
    pub runs_today: u32,
    /// The wait after a 429 or a 402, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// The last run's report (on this replica).
    pub last: Option<RunReport>,
    /// The last runs, oldest first.
    pub recent_runs: Vec<RunMark>,
}

impl ProbeView {
    /// A probe that has not run yet.
    pub fn new(name: &str, interval: std::time::Duration) -> ProbeView {
        ProbeView {
            name: name.to_owned(),
            interval_seconds: interval.as_secs_f64(),
            running: false,
            runs_today: 0,
            backoff: None,
            last: None,
            recent_runs: Vec::new(),
        }
    }
}

/// The vendor's status page, as last polled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusPageView {
    /// The page configured.
    pub url: String,
    /// The format read (detected with `auto`).
    pub format: Option<PageFormat>,
    /// Whether the last poll succeeded (`None` before the first).
    pub up: Option<bool>,
    /// Its overall state.
    pub status: Option<PageStatus>,
    /// Incidents open.
    pub incidents_open: Option<u32>,
    /// Each component's state.
    pub components: Vec<(String, PageStatus)>,
    /// Why the last poll failed.
    pub last_error: Option<String>,
    /// The last change of state, `operational → degraded`.
    pub last_change: Option<String>,
}

/// The proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyView {
    /// Jobs this replica holds (all of them with one replica).
    pub jobs_tracked: usize,
}

/// The account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountView {
    /// With `account.balance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceView>,
    /// With `account.queue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueView>,
    /// With `account.models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelsView>,
}

/// Where the queue limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// `account.queue.limit`.
    Config,
    /// A 429's `Maximum N queued requests`.
    Learned,
}

/// The account-wide queue poll.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueView {
    /// The last depth read (kept when a poll fails): every client of the key.
    pub depth: Option<u32>,
    /// The limit it is judged against, when known.
    pub limit: Option<u32>,
    /// Where the limit comes from.
    pub limit_source: Option<LimitSource>,
    /// Whether the last poll succeeded (`None` before the first).
    pub up: Option<bool>,
    /// Why the last poll failed, in the error model's words.
    pub last_error: Option<String>,
}

/// The catalogue poll.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelsView {
    /// Models of `labels.models` the catalogue lists.
    pub listed: Vec<String>,
    /// Models of `labels.models` it listed once and no longer does.
    pub delisted: Vec<String>,
    /// Models the catalogue lists, all told.
    pub catalogue_size: Option<usize>,
    /// Whether the last poll succeeded (`None` before the first).
    pub up: Option<bool>,
    /// Why the last poll failed, in the error model's words.
    pub last_error: Option<String>,
}

/// The balance poll.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BalanceView {
    /// The last balance read (kept when a poll fails).
    pub balance: Option<f64>,
    /// Its currency.
    pub currency: Option<String>,
    /// Whether the last poll succeeded (`None` before the first).
    pub up: Option<bool>,
    /// Why the last poll failed, in the error model's words (never the raw answer).
    pub last_error: Option<String>,
    /// Spent since the agent started (the balance's falls; top-ups never subtract).
    #[serde(default)]
    pub spent: f64,
}

/// This replica's role for `replicas: one` probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRole {
    /// It holds the probe lease: it runs the `replicas: one` probes.
    Leader,
    /// Another replica holds it.
    Standby,
}

/// Replicas sharing state through Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// This replica's name (the pod's, and a random suffix).
    pub replica: String,
    /// Its role.
    pub role: ClusterRole,
    /// The lease holder as Redis last said (`replica#epoch`).
    pub lease_holder: Option<String>,
    /// Whether Redis answers.
    pub redis_up: bool,
    /// Whether `cluster.redis_url` names a Redis Cluster (its slots and failovers followed).
    #[serde(default)]
    pub redis_cluster: bool,
    /// Jobs this replica wrote back since it started, after Redis lost its data (restarted
    /// empty, flushed).
    #[serde(default)]
    pub jobs_restored: u64,
    /// The lease's fencing epoch as this replica last took it.
    pub epoch: u64,
}

/// The webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhooksView {
    /// Runs waiting for a delivery.
    pub waiting: usize,
}
