//! The observation layer: everything the components see happen is one typed event, and each
//! event writes its log line, counts its metric samples and records its span attributes in one
//! [`Event::emit`] (in the manner of vector's internal events). Components hold an [`Observer`]
//! and call [`Observer::emit`]; they never reach for `metrics`, spans and `tracing` separately,
//! so a probe and the proxy cannot record the same thing differently.
//!
//! What an event carries is only what it needs: label values that are config names or closed
//! enums, durations, and the spans to annotate. Nothing here holds a key, a prompt or a body;
//! messages reach spans cut to 256 characters with the request's key scrubbed.

mod events;
pub mod history;
pub mod slo;
pub mod spans;
pub mod status;
pub mod verdict;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

pub use events::*;
pub use spans::{SpanContext, exchange_span, from_traceparent, probe_span, server_span, span_context, traceparent};

use crate::config::Slo;
use crate::metrics::Metrics;
pub use crate::vocab::{
    AccountPoll, BackoffReason, ClusterOp, JobResult, OutputResult, ProbeFailure, SkipReason, Source, SyntheticReason,
    UninspectedReason, WebhookResult,
};
use history::History;
use slo::SloSet;

/// Something that happened, with what its log line, metrics and span need.
pub trait Event {
    /// The event's name, as a test journal records it.
    const NAME: &'static str;
    /// Logs, counts and records the event.
    fn emit(self, to: &Observer);
}

/// Where the components send their events. Cheap to clone.
#[derive(Clone)]
pub struct Observer {
    metrics: Arc<Metrics>,
    /// The SLOs events are judged against (replaced on reload).
    slos: Arc<RwLock<Arc<SloSet>>>,
    /// The last minutes, for the status page.
    history: Arc<History>,
    journal: Option<Arc<Mutex<Vec<&'static str>>>>,
}

impl Observer {
    /// An observer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Observer { metrics, slos: Arc::default(), history: Arc::default(), journal: None }
    }

    /// An observer that also notes the name of every event emitted, for tests that check which
    /// events a piece of work produced.
    pub fn recording(metrics: Arc<Metrics>) -> (Self, Journal) {
        let journal = Arc::new(Mutex::new(Vec::new()));
        let observer =
            Observer { metrics, slos: Arc::default(), history: Arc::default(), journal: Some(journal.clone()) };
        (observer, Journal(journal))
    }

    /// Judges events against `slos` from now on: new SLOs get their series, removed ones lose
    /// them, changed ones are declared anew.
    pub fn set_slos(&self, slos: &[Slo]) {
        let mut current = self.slos.write().unwrap_or_else(PoisonError::into_inner);
        for old in current.names() {
            if !slos.iter().any(|s| s.name == old) {
                self.metrics.slos.removed(&old);
            }
        }
        for s in slos {
            self.metrics.slos.declared(&s.name, s.objective / 100.0, s.window.as_secs_f64(), s.min_events);
        }
        *current = Arc::new(SloSet::new(slos));
        let marks: Vec<(String, f64, u32)> = slos.iter().map(|s| (s.name.clone(), s.objective, s.min_events)).collect();
        self.history.set_slos(&marks);
    }

    /// One event judged by an SLO: counted, and remembered for the status page.
    fn slo_event(&self, slo: &str, good: bool) {
        self.metrics.slos.event(slo, crate::vocab::SloResult::of(good));
        self.history.slo_event(slo, good);
    }

    /// The last minutes (for the status page and `/api/v1/status`).
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The SLOs now in force.
    fn slos(&self) -> Arc<SloSet> {
        self.slos.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Emits one event.
    pub fn emit<E: Event>(&self, event: E) {
        if let Some(j) = &self.journal {
            j.lock().unwrap_or_else(PoisonError::into_inner).push(E::NAME);
        }
        event.emit(self);
    }

    /// Records what a success answer delivered (its files, and its time split when the API said
    /// `generationTime`), as [`GenerationDelivered`]; nothing for an answer that says neither.
    pub fn delivered(
        &self,
        source: Source,
        endpoint: &str,
        model: &str,
        duration: std::time::Duration,
        answer: &crate::classify::Classification,
    ) {
        if let Some(generated) = Generated::of(source, endpoint, model, duration, answer) {
            self.emit(GenerationDelivered { generated });
        }
    }

    /// The metric families (for the admin server's `/metrics`, and tests).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The `endpoint` label of a request path (see [`Metrics::endpoint_label`]).
    pub fn endpoint_label(&self, path: &str) -> String {
        self.metrics.endpoint_label(path)
    }

    /// The `model` label of a request's `model_id` (see [`Metrics::model_label`]).
    pub fn model_label(&self, model_id: Option<&str>) -> String {
        self.metrics.model_label(model_id)
    }
}

/// The names of the events an [`Observer::recording`] saw, in order.
#[derive(Clone)]
pub struct Journal(Arc<Mutex<Vec<&'static str>>>);

impl Journal {
    /// The events seen, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many times the event `name` was emitted.
    pub fn count(&self, name: &str) -> usize {
        self.names().iter().filter(|n| **n == name).count()
    }
}
