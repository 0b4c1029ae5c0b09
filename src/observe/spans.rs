//! The span shapes of docs/traces.md, shared by probes and the proxy so that both trace alike: a root
//! span per probe run, a server span per proxied request, a client span per HTTP exchange with
//! OTel HTTP and GenAI attributes plus `modelslab.*`. Components create spans here; only the
//! events of this module's parent record on them. Spans are `tracing` spans; `telemetry` exports
//! them when OTLP is on.
//!
//! Nothing secret goes in: paths without their query string, the API's message cut to 256
//! characters and scrubbed of the request's key, never a body or a prompt.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
pub use opentelemetry::trace::SpanContext;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::classify::{self, Classification, Outcome};
use crate::vocab::Source;

/// Longest `modelslab.error.message` recorded.
pub const MAX_MESSAGE: usize = 256;

/// The root span of one probe run: every exchange of the run is its child.
pub fn probe_span(probe: &str) -> Span {
    tracing::info_span!(
        parent: None,
        "probe",
        otel.name = %format!("probe {probe}"),
        otel.status_code = Empty,
        "modelslab.probe.name" = %probe,
        "modelslab.source" = "probe",
    )
}

/// The client span of one HTTP exchange with the API (a child of the current span), linked to
/// `link_to` (a job's poll to its submission).
pub fn exchange_span(
    method: &str,
    path: &str,
    server: &str,
    source: Source,
    model: Option<&str>,
    link_to: Option<&SpanContext>,
) -> Span {
    let path = path.split('?').next().unwrap_or("");
    let llm = crate::vocab::is_llm_endpoint(path);
    let span = tracing::info_span!(
        "http.client",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = Empty,
        "http.request.method" = %method,
        "url.path" = %path,
        "server.address" = %server,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        "gen_ai.operation.name" = if llm { "chat" } else { "generate_content" },
        "gen_ai.provider.name" = "modelslab",
        "gen_ai.request.model" = model.map(|m| classify::truncate(m, 64)),
        "gen_ai.output.type" = if llm { "text" } else { "image" },
        "gen_ai.response.id" = Empty,
        "gen_ai.response.model" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "gen_ai.response.finish_reasons" = Empty,
        "modelslab.source" = source.as_str(),
        "modelslab.api.status" = Empty,
        "modelslab.error.reason" = Empty,
        "modelslab.error.message" = Empty,
        "modelslab.retry_after_s" = Empty,
        "modelslab.eta_s" = Empty,
        "modelslab.job.id" = Empty,
    );
    if let Some(to) = link_to {
        link(&span, to);
    }
    span
}

/// The server span of one proxied request, continuing the caller's `traceparent`.
pub fn server_span(method: &str, path: &str, endpoint: &str, headers: &http::HeaderMap) -> Span {
    let path = path.split('?').next().unwrap_or("");
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {endpoint}"),
        otel.kind = "server",
        otel.status_code = Empty,
        "http.request.method" = %method,
        "url.path" = %path,
        "http.route" = %endpoint,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        "modelslab.source" = "proxy",
        "modelslab.job.id" = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// Records what an exchange's answer (or failure) was on its span; `secrets` are scrubbed from
/// the message.
pub(super) fn record(span: &Span, http_status: Option<u16>, c: &Classification, secrets: &[&str]) {
    let d = c.details();
    if let Some(s) = http_status {
        span.record("http.response.status_code", s);
    }
    if let Some(api) = d.api_status {
        span.record("modelslab.api.status", api.as_str());
    }
    if let Some(id) = &d.id {
        span.record("gen_ai.response.id", id.as_str());
        span.record("modelslab.job.id", id.as_str());
    }
    if let Some(eta) = c.eta() {
        span.record("modelslab.eta_s", eta);
    }
    if let Some(r) = d.retry_after {
        span.record("modelslab.retry_after_s", r);
    }
    if let Some(llm) = &d.llm {
        if let Some(m) = &llm.model {
            span.record("gen_ai.response.model", m.as_str());
        }
        if let Some(n) = llm.input_tokens {
            span.record("gen_ai.usage.input_tokens", n);
        }
        if let Some(n) = llm.output_tokens {
            span.record("gen_ai.usage.output_tokens", n);
        }
        if !llm.finish_reasons.is_empty() {
            let reasons: Vec<&str> = llm.finish_reasons.iter().map(|r| r.as_str()).collect();
            span.record("gen_ai.response.finish_reasons", reasons.join(",").as_str());
        }
    }
    if let Some(e) = c.error() {
        debug_assert_eq!(c.outcome(), Outcome::Error);
        span.record("otel.status_code", "error");
        span.record("error.type", e.class.as_str());
        span.record("modelslab.error.reason", e.reason.as_str());
        if let Some(m) = &d.message {
            span.record("modelslab.error.message", scrub(m, secrets).as_str());
        }
    }
}

/// Records the model a request asked for (cut to 64 characters).
pub(super) fn record_model(span: &Span, model: &str) {
    span.record("gen_ai.request.model", classify::truncate(model, 64).as_str());
}

/// Records the job a request submitted or polled.
pub(super) fn record_job(span: &Span, id: &str) {
    span.record("modelslab.job.id", id);
}

/// Records the outcome of a whole proxied request on its server span.
pub(super) fn record_server(span: &Span, http_status: u16, error_class: Option<&str>) {
    span.record("http.response.status_code", http_status);
    if let Some(class) = error_class {
        span.record("otel.status_code", "error");
        span.record("error.type", class);
    }
}

/// The span's OpenTelemetry context, to link a job's completion to its submission.
pub fn span_context(span: &Span) -> SpanContext {
    span.context().span().span_context().clone()
}

/// A span context as a W3C `traceparent` (`00-TRACE-SPAN-FLAGS`), to keep it where spans cannot
/// go (Redis); `None` for an invalid context (tracing off).
pub fn traceparent(cx: &SpanContext) -> Option<String> {
    cx.is_valid().then(|| format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8()))
}

/// The span context a `traceparent` names (remote: it may come from another replica).
pub fn from_traceparent(text: &str) -> Option<SpanContext> {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = text.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

/// Links `span` to an earlier span (a job's submission).
pub(super) fn link(span: &Span, to: &SpanContext) {
    if to.is_valid() {
        span.add_link(to.clone());
    }
}

/// The message cut to [`MAX_MESSAGE`] characters, with any secret replaced.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut m = message.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        m = m.replace(*s, "<redacted>");
    }
    classify::truncate(&m, MAX_MESSAGE)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = from_traceparent(tp).unwrap();
        assert_eq!(traceparent(&cx).as_deref(), Some(tp));
        assert!(from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(from_traceparent("garbage").is_none());
        assert_eq!(traceparent(&SpanContext::empty_context()), None);
    }

    #[test]
    fn messages_are_cut_and_scrubbed() {
        assert_eq!(scrub("Invalid API key sk-123456", &["sk-123456"]), "Invalid API key <redacted>");
        assert_eq!(scrub(&"x".repeat(1000), &[]).len(), MAX_MESSAGE);
        assert_eq!(scrub("short key abc", &["abc"]), "short key abc", "too short to be a key");
    }
}
