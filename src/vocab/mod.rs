//! The agent's vocabulary: the closed label enums and the records that events carry (an observed
//! exchange, a job's end, a probe run's report), and the rules that turn a request into bounded
//! label values (`endpoint` templates, `http_status`). Components speak it to `observe`, `observe`
//! to `metrics` and the status document; it knows nothing of any of them.
//!
//! Every enum here may become a Prometheus label value: each is closed and has a stable
//! `as_str()`. Uses `classify` (the error model's own vocabulary) and nothing else of the agent.

mod endpoint;
mod records;

pub use endpoint::{endpoint_template, is_llm_endpoint, status_label};
pub use records::{AnswerOutcome, Exchange, ExchangeReport, FinalAnswer, Generated, JobEnd, RunOutcome, RunReport};

use crate::classify::label_enum;

/// Label value for "not in the allowlist" / "over the cap".
pub const OTHER: &str = "other";
/// Label value for "the request had none" / "no response".
pub const NONE: &str = "none";

label_enum! {
    /// Which component saw an exchange (`source` label).
    pub enum Source {
        Probe => "probe",
        Proxy => "proxy",
    }
}

label_enum! {
    /// How an async job ended (`result` label of the job families).
    pub enum JobResult {
        Success => "success",
        Failed => "failed",
        Error => "error",
        Expired => "expired",
        Evicted => "evicted",
    }
}

label_enum! {
    /// Why a probe run failed.
    pub enum ProbeFailure {
        Expectation => "expectation",
        Timeout => "timeout",
        Transport => "transport",
        JobFailed => "job_failed",
        JobTimeout => "job_timeout",
        /// An output check failed: the media the answer names is missing, broken or wrong.
        Output => "output",
    }
}

label_enum! {
    /// How checking one generated file ended (`result` of the output checks).
    pub enum OutputResult {
        Ok => "ok",
        /// Fewer URLs than expected, or the URL answers 404.
        NotFound => "not_found",
        /// The download failed (transport, timeout, another status, a host not allowed).
        DownloadFailed => "download_failed",
        TooLarge => "too_large",
        Undecodable => "undecodable",
        WrongSize => "wrong_size",
        /// A near-uniform image: a black frame, a flat placeholder.
        Blank => "blank",
    }
}

label_enum! {
    /// How a run's webhook delivery ended (`result` of the webhook deliveries).
    pub enum WebhookResult {
        /// Before the job was seen finished (or just after).
        OnTime => "on_time",
        /// After, within `webhooks.grace`.
        Late => "late",
        /// Not within `webhooks.grace`.
        Missing => "missing",
        /// A delivery after the first.
        Duplicate => "duplicate",
        /// No run waits for it: forged, replayed, malformed, or over the size limit.
        Unknown => "unknown",
    }
}

label_enum! {
    /// Why a probe waits before it runs again.
    pub enum BackoffReason {
        /// A 429: it waits the answer's `retry_after`.
        RateLimited => "rate_limited",
        /// A 402 on a credit-spending probe: it pauses.
        PaymentRequired => "payment_required",
    }
}

label_enum! {
    /// What a replica asked Redis for (`op` label of the cluster errors).
    pub enum ClusterOp {
        /// Take, renew or give up the probe lease.
        Lease => "lease",
        /// Track a job.
        JobWrite => "job_write",
        /// Read or end a job.
        JobRead => "job_read",
        /// End expired jobs.
        JobSweep => "job_sweep",
        /// Share a probe's backoff and day budget.
        ProbeState => "probe_state",
        /// Share, judge or end a webhook run.
        Webhook => "webhook",
    }
}

label_enum! {
    /// Why a probe tick did not run.
    pub enum SkipReason {
        Overlap => "overlap",
        Budget => "budget",
        Backoff => "backoff",
        Maintenance => "maintenance",
    }
}

label_enum! {
    /// One of the account's polls (`account.*`).
    pub enum AccountPoll {
        Balance => "balance",
        Queue => "queue",
        Models => "models",
    }
}

label_enum! {
    /// Where a maintenance window comes from (`source` of `modelslab_maintenance_active`).
    pub enum MaintenanceSource {
        Config => "config",
        Vendor => "vendor",
    }
}

label_enum! {
    /// Why the proxy answered a request itself.
    pub enum SyntheticReason {
        UpstreamTimeout => "upstream_timeout",
        UpstreamUnreachable => "upstream_unreachable",
        BodyTooLarge => "body_too_large",
        Rejected => "rejected",
    }
}

label_enum! {
    /// Why the proxy passed an answer through without classifying it.
    pub enum UninspectedReason {
        TooLarge => "too_large",
        NotJson => "not_json",
        Stream => "stream",
    }
}

label_enum! {
    /// A probe run's result (`result` of the probe runs).
    pub enum RunResult {
        Success => "success",
        Failure => "failure",
    }
}

label_enum! {
    /// How an SLO judged one event (`result` of the SLO events).
    pub enum SloResult {
        Good => "good",
        Bad => "bad",
    }
}

impl SloResult {
    /// `good` when the event met the objective.
    pub fn of(good: bool) -> SloResult {
        if good { SloResult::Good } else { SloResult::Bad }
    }
}
