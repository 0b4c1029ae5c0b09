//! The registry and every metric family of docs/metrics.md, grouped by what they describe
//! ([`families`]), and the two bounded label helpers ([`Metrics::endpoint_label`],
//! [`Metrics::model_label`]). The vocabulary the families are labelled with lives in `vocab`.
//!
//! Components do not call this module: they emit `observe` events, whose `emit` records here.

pub mod families;

use std::collections::HashSet;
use std::sync::RwLock;

use prometheus::{Encoder, Registry, TextEncoder};

use crate::config::Labels;
use crate::vocab::{NONE, OTHER, endpoint_template};
pub use families::{
    AccountFamilies, AgentFamilies, ClusterFamilies, DeliveryFamilies, ExchangeFamilies, JobFamilies,
    MaintenanceFamilies, ProbeFamilies, ProxyFamilies, SloFamilies, StatusPageFamilies, UpstreamGauges,
};

/// Bucket boundaries, in the unit of each family, chosen for the quantity they measure.
pub mod buckets {
    /// One HTTP exchange: sub-second validation errors up to synchronous generations that the
    /// proxy allows 300 s for.
    pub const REQUEST_DURATION: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
    /// A request's wait for a free upstream connection: a millisecond in a burst to the
    /// `proxy.upstream_timeout` it may last.
    pub const UPSTREAM_WAIT: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 300.0];
    /// `retry_after` of a 429: the API has sent 30 s; queues drain in seconds to minutes.
    pub const RETRY_AFTER: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
    /// `eta` of a processing answer: seen from 1.25 s to 416.94 s.
    pub const ETA: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
    /// Submit to terminal answer of an async job: seconds to the 30 min default `jobs.ttl`.
    pub const JOB_DURATION: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0];
    /// Actual job duration / first promised eta: 1 is on time; alerts look at 2 and beyond.
    pub const ETA_RATIO: &[f64] = &[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0];
    /// Downloading a generated image or video from the CDN: tens of milliseconds to the 30 s
    /// default timeout of an output check.
    pub const DOWNLOAD: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    /// A webhook's arrival after the job was seen finished: usually under a second (it may come
    /// before the poll), late ones up to the default 120 s grace.
    pub const WEBHOOK_DELAY: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
    /// A streamed LLM answer's first content: tens of milliseconds for a warm small model to tens
    /// of seconds for a queued large one.
    pub const TIME_TO_FIRST_TOKEN: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0];
    /// A job's `generationTime`, and its wait in the account's queue: no wait at all (an idle
    /// queue, a synchronous answer) up to the 30 min default `jobs.ttl`.
    pub const GENERATION: &[f64] =
        &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0];
}

/// Why the registry could not be built (a programming error caught by every test run).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A family could not be registered (a name or label clash).
    #[error("cannot register metric family: {0}")]
    Register(#[from] prometheus::Error),
    /// The registry could not be written out.
    #[error("cannot encode metrics: {0}")]
    Encode(String),
}

struct LabelPolicy {
    models: HashSet<String>,
    max_endpoints: usize,
}

impl From<&Labels> for LabelPolicy {
    fn from(l: &Labels) -> Self {
        LabelPolicy { models: l.models.iter().cloned().collect(), max_endpoints: l.max_endpoints }
    }
}

/// The agent's metrics. Create one per agent; it owns its registry.
pub struct Metrics {
    registry: Registry,
    policy: RwLock<LabelPolicy>,
    endpoints: RwLock<HashSet<String>>,
    /// What the API answered.
    pub exchanges: ExchangeFamilies,
    /// The async jobs followed.
    pub jobs: JobFamilies,
    /// The synthetic probes.
    pub probes: ProbeFamilies,
    /// The vendor's status page.
    pub status_page: StatusPageFamilies,
    /// What the proxy did besides passing answers through.
    pub proxy: ProxyFamilies,
    /// Replicas sharing state.
    pub cluster: ClusterFamilies,
    /// The SLOs.
    pub slos: SloFamilies,
    /// The account.
    pub account: AccountFamilies,
    /// What the API delivers.
    pub delivery: DeliveryFamilies,
    /// Maintenance windows.
    pub maintenance: MaintenanceFamilies,
    /// The agent itself.
    pub agent: AgentFamilies,
}

impl Metrics {
    /// Declares every family. Families without labels are vectors with no label names, so that
    /// they appear only once something sets them (no `status_page_up 0` without a status page).
    pub fn new(labels: &Labels) -> Result<Self, MetricsError> {
        let r = Registry::new();
        let m = Metrics {
            policy: RwLock::new(LabelPolicy::from(labels)),
            endpoints: RwLock::new(HashSet::new()),
            exchanges: ExchangeFamilies::register(&r)?,
            jobs: JobFamilies::register(&r)?,
            probes: ProbeFamilies::register(&r)?,
            status_page: StatusPageFamilies::register(&r)?,
            proxy: ProxyFamilies::register(&r)?,
            cluster: ClusterFamilies::register(&r)?,
            slos: SloFamilies::register(&r)?,
            account: AccountFamilies::register(&r)?,
            delivery: DeliveryFamilies::register(&r)?,
            maintenance: MaintenanceFamilies::register(&r)?,
            agent: AgentFamilies::register(&r)?,
            registry: r,
        };
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(m)
    }

    /// Applies the `labels` section of a (re)loaded config to new observations.
    pub fn set_label_policy(&self, labels: &Labels) {
        if let Ok(mut p) = self.policy.write() {
            *p = LabelPolicy::from(labels);
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| MetricsError::Encode(e.to_string()))?;
        String::from_utf8(buf).map_err(|e| MetricsError::Encode(e.to_string()))
    }

    /// The `endpoint` label for a request path: id-like segments become `{id}`, the query is
    /// dropped, and beyond `labels.max_endpoints` distinct values new ones become `other`.
    pub fn endpoint_label(&self, path: &str) -> String {
        let template = endpoint_template(path);
        if self.endpoints.read().is_ok_and(|set| set.contains(&template)) {
            return template;
        }
        let max = self.policy.read().map(|p| p.max_endpoints).unwrap_or(0);
        let Ok(mut set) = self.endpoints.write() else { return OTHER.to_owned() };
        if set.contains(&template) || set.len() < max {
            set.insert(template.clone());
            template
        } else {
            self.agent.label_overflow("endpoint");
            tracing::debug!(endpoint = %template, max, "endpoint label cap reached: counted as other");
            OTHER.to_owned()
        }
    }

    /// The `model` label for a request's model (`model_id` of the media API, `model` of the LLM
    /// API): listed ids as themselves, others `other`, no model `none`.
    pub fn model_label(&self, model: Option<&str>) -> String {
        match model {
            None => NONE.to_owned(),
            Some(id) if self.policy.read().is_ok_and(|p| p.models.contains(id)) => id.to_owned(),
            Some(_) => OTHER.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
