//! The records events carry: one classified exchange, one job's end, one probe run's report. Each
//! holds label values (config names, closed enums) and measurements, never a key, a prompt or a
//! body; the report's message is the API's own, already cut and scrubbed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{JobResult, ProbeFailure, RunResult, Source};
use crate::classify::{Classification, ErrorClass, Outcome, Reason, RequestKind};

/// One classified HTTP exchange, as probes and the proxy report it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// Who saw it.
    pub source: Source,
    /// The bounded `endpoint` label (`Metrics::endpoint_label`).
    pub endpoint: &'a str,
    /// The bounded `model` label (`Metrics::model_label`).
    pub model: &'a str,
    /// `None` when no response arrived.
    pub http_status: Option<u16>,
    /// What the answer meant.
    pub classification: &'a Classification,
    /// Request sent to answer read.
    pub duration: Duration,
    /// Request sent to the first content delta of a streamed LLM answer.
    pub time_to_first_token: Option<Duration>,
}

/// A finished (or abandoned) async job.
#[derive(Debug, Clone, Copy)]
pub struct JobEnd<'a> {
    /// Who followed the job.
    pub source: Source,
    /// The submit endpoint.
    pub endpoint: &'a str,
    /// The model label of the submission.
    pub model: &'a str,
    /// How it ended.
    pub result: JobResult,
    /// Submit to the terminal answer seen (or to expiry/eviction).
    pub duration: Duration,
    /// The eta the first processing answer promised.
    pub first_eta: Option<f64>,
}

/// A generation that delivered: a synchronous success, or a job that ended in success. Where its
/// time went and how many files it made.
#[derive(Debug, Clone, Copy)]
pub struct Generated<'a> {
    /// Who saw it.
    pub source: Source,
    /// The submit endpoint.
    pub endpoint: &'a str,
    /// The model label of the submission.
    pub model: &'a str,
    /// Submit to the success seen (the exchange's duration when the answer came at once).
    pub duration: Duration,
    /// The answer's `generationTime`, when it had one.
    pub generation_time: Option<f64>,
    /// Distinct output URLs of the success.
    pub outputs: u32,
}

impl<'a> Generated<'a> {
    /// What a success answer delivered, if it says anything of it (output URLs or a
    /// `generationTime`: an LLM answer or a wallet read says neither).
    pub fn of(
        source: Source,
        endpoint: &'a str,
        model: &'a str,
        duration: Duration,
        answer: &Classification,
    ) -> Option<Self> {
        let Classification::Success { details } = answer else { return None };
        (details.outputs > 0 || details.generation_time.is_some()).then_some(Generated {
            source,
            endpoint,
            model,
            duration,
            generation_time: details.generation_time,
            outputs: details.outputs,
        })
    }

    /// The time in the account's queue: the duration minus `generationTime`, never below 0;
    /// `None` without a `generationTime`.
    pub fn queue_wait(&self) -> Option<f64> {
        self.generation_time.map(|g| (self.duration.as_secs_f64() - g).max(0.0))
    }
}

/// What an answer meant, as reports show it: an error always has its class and reason, and only
/// an error has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AnswerOutcome {
    /// `"status":"success"`.
    Success,
    /// `"status":"processing"`.
    Processing,
    /// An error.
    Error {
        /// Its class.
        error_class: ErrorClass,
        /// Its reason.
        reason: Reason,
    },
}

impl AnswerOutcome {
    /// The outcome of a classified answer.
    pub fn of(c: &Classification) -> AnswerOutcome {
        match c {
            Classification::Success { .. } => AnswerOutcome::Success,
            Classification::Processing { .. } => AnswerOutcome::Processing,
            Classification::Error { error, .. } => {
                AnswerOutcome::Error { error_class: error.class, reason: error.reason }
            }
        }
    }

    /// The `outcome` label.
    pub fn outcome(self) -> Outcome {
        match self {
            AnswerOutcome::Success => Outcome::Success,
            AnswerOutcome::Processing => Outcome::Processing,
            AnswerOutcome::Error { .. } => Outcome::Error,
        }
    }

    /// The class, when it is an error.
    pub fn error_class(self) -> Option<ErrorClass> {
        match self {
            AnswerOutcome::Error { error_class, .. } => Some(error_class),
            _ => None,
        }
    }
}

/// What one HTTP exchange of a probe run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeReport {
    /// A submission or a poll.
    pub kind: RequestKind,
    /// The HTTP method.
    pub method: String,
    /// The endpoint label (id-like segments as `{id}`, no query).
    pub endpoint: String,
    /// `None` when no response arrived.
    pub http_status: Option<u16>,
    /// What the answer meant.
    #[serde(flatten)]
    pub outcome: AnswerOutcome,
    /// Request sent to answer read.
    pub duration_seconds: f64,
}

/// The last answer of a run, as far as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalAnswer {
    /// `None` when no response arrived (a transport failure or the exchange's own timeout).
    pub http_status: Option<u16>,
    /// What the answer meant.
    #[serde(flatten)]
    pub outcome: AnswerOutcome,
    /// The API's message, at most 256 characters, the key scrubbed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The job the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `retry_after` of the answer (the scheduler backs off by it after a 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<f64>,
}

/// How a run ended: a success, or a failure for one reason with every expectation that did not
/// hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every expectation held.
    Success,
    /// Some did not.
    Failure {
        /// Why, as the `reason` label says it.
        #[serde(rename = "failure_reason")]
        reason: ProbeFailure,
        /// Why, one line each (at least one).
        failed_expectations: Vec<String>,
    },
}

impl RunOutcome {
    /// The `result` label.
    pub fn result(&self) -> RunResult {
        match self {
            RunOutcome::Success => RunResult::Success,
            RunOutcome::Failure { .. } => RunResult::Failure,
        }
    }

    /// Whether every expectation held.
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Success)
    }

    /// Why the run failed, when it did.
    pub fn failure(&self) -> Option<ProbeFailure> {
        match self {
            RunOutcome::Success => None,
            RunOutcome::Failure { reason, .. } => Some(*reason),
        }
    }

    /// The expectations that did not hold (empty on success).
    pub fn failed_expectations(&self) -> &[String] {
        match self {
            RunOutcome::Success => &[],
            RunOutcome::Failure { failed_expectations, .. } => failed_expectations,
        }
    }
}

/// The uniform result of one probe run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The probe's name.
    pub probe: String,
    /// Success, or failure and why.
    #[serde(flatten)]
    pub outcome: RunOutcome,
    /// Submit to terminal answer (and output checks).
    pub duration_seconds: f64,
    /// When the run started (Unix seconds).
    pub started_at_unix: f64,
    /// The final answer; `None` when the run was cut by its timeout before one came.
    pub answer: Option<FinalAnswer>,
    /// Every exchange of the run, in order.
    pub exchanges: Vec<ExchangeReport>,
}

impl RunReport {
    /// A run cut by the probe's hard timeout.
    pub fn timed_out(probe: &str, timeout: Duration, started_at_unix: f64) -> Self {
        RunReport {
            probe: probe.to_owned(),
            outcome: RunOutcome::Failure {
                reason: ProbeFailure::Timeout,
                failed_expectations: vec![format!(
                    "no result within the probe's timeout ({})",
                    humantime::format_duration(timeout)
                )],
            },
            duration_seconds: timeout.as_secs_f64(),
            started_at_unix,
            answer: None,
            exchanges: Vec::new(),
        }
    }

    /// The error class of the final answer (a run cut by its timeout counts as `timeout`).
    pub fn error_class(&self) -> Option<ErrorClass> {
        match &self.answer {
            Some(a) => a.outcome.error_class(),
            None => self.outcome.failure().is_some().then_some(ErrorClass::Timeout),
        }
    }

    /// Whether the run met its expectations.
    pub fn success(&self) -> bool {
        self.outcome.is_success()
    }

    /// Why it failed, when it did.
    pub fn failure_reason(&self) -> Option<ProbeFailure> {
        self.outcome.failure()
    }

    /// The expectations that did not hold.
    pub fn failed_expectations(&self) -> &[String] {
        self.outcome.failed_expectations()
    }

    /// The final answer's HTTP status (`None`: no answer).
    pub fn http_status(&self) -> Option<u16> {
        self.answer.as_ref().and_then(|a| a.http_status)
    }

    /// The final answer's reason, when it was an error.
    pub fn reason(&self) -> Option<Reason> {
        match self.answer.as_ref().map(|a| a.outcome) {
            Some(AnswerOutcome::Error { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    /// The API's message in the final answer.
    pub fn message(&self) -> Option<&str> {
        self.answer.as_ref().and_then(|a| a.message.as_deref())
    }

    /// `retry_after` of the final answer.
    pub fn retry_after(&self) -> Option<Duration> {
        self.answer.as_ref().and_then(|a| a.retry_after_seconds).map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_serialise_their_outcome_flat_and_read_back() {
        let report = RunReport {
            probe: "gen".into(),
            outcome: RunOutcome::Failure {
                reason: ProbeFailure::Expectation,
                failed_expectations: vec!["status is error, expected success".into()],
            },
            duration_seconds: 1.5,
            started_at_unix: 1_800_000_000.0,
            answer: Some(FinalAnswer {
                http_status: Some(200),
                outcome: AnswerOutcome::Error { error_class: ErrorClass::ServerError, reason: Reason::InternalError },
                message: Some("Internal server error".into()),
                job_id: None,
                retry_after_seconds: None,
            }),
            exchanges: Vec::new(),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["result"], "failure");
        assert_eq!(json["failure_reason"], "expectation");
        assert_eq!(json["answer"]["outcome"], "error");
        assert_eq!(json["answer"]["error_class"], "server_error");
        assert_eq!(serde_json::from_value::<RunReport>(json).unwrap(), report);
        assert_eq!(report.error_class(), Some(ErrorClass::ServerError));

        let cut = RunReport::timed_out("gen", Duration::from_secs(3), 0.0);
        assert_eq!(cut.error_class(), Some(ErrorClass::Timeout));
        let json = serde_json::to_value(&cut).unwrap();
        assert_eq!((json["result"].as_str(), json["answer"].is_null()), (Some("failure"), true));
        let ok = serde_json::json!({"probe": "p", "result": "success", "duration_seconds": 1.0,
                                   "started_at_unix": 2.0, "answer": null, "exchanges": []});
        assert_eq!(serde_json::from_value::<RunReport>(ok).unwrap().outcome, RunOutcome::Success);
    }
}
