//! Logging and trace export for the agent process.
//!
//! Logs go to stderr as text or JSON at `telemetry.log_level` (`RUST_LOG` overrides it). The
//! HTTP libraries are held at `warn` whatever the level, because at trace level they print request
//! headers, and a header may carry the API key. Spans (see `trace`) are exported over OTLP when an
//! endpoint is configured (`telemetry.otlp.endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`): batched on
//! a thread of their own with a bounded queue, so an unreachable collector never slows probing or
//! proxying; failed exports are counted and warned about at most once a minute.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, OtlpProtocol, Telemetry};

/// Libraries that log raw headers at debug/trace, or whose export errors we report ourselves.
const QUIET_LIBRARIES: &str = "h2=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn,tonic=warn,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";
/// Spans waiting for export at most; beyond, new spans are dropped.
const MAX_QUEUE: usize = 4096;
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans in batches the collector did not take.
static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans lost to failed exports since start.
pub fn spans_dropped() -> u64 {
    SPANS_DROPPED.load(Ordering::Relaxed)
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter for {endpoint}: {reason} (check telemetry.otlp)")]
    Exporter {
        /// The collector's address.
        endpoint: String,
        /// Why the exporter could not be built.
        reason: String,
    },
}

/// Keeps telemetry running; [`TelemetryGuard::shutdown`] flushes pending spans.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn traces_on(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter (within a few seconds, collector or not).
    pub fn shutdown(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The filter directives for a configured level (or `RUST_LOG`), with the libraries held quiet.
pub fn filter_directives(level: &str, rust_log: Option<&str>) -> String {
    let base = rust_log
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("warn,modelslab_sentinel={level}"));
    format!("{base},{QUIET_LIBRARIES}")
}

/// The OTLP endpoint in use: the config's, else `OTEL_EXPORTER_OTLP_ENDPOINT`; `None`: traces off.
pub fn endpoint(t: &Telemetry) -> Option<String> {
    let configured = t.otlp.endpoint.trim();
    if !configured.is_empty() {
        return Some(configured.to_owned());
    }
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// Installs the global subscriber: logs, plus span export when an endpoint is set. Call it within
/// the tokio runtime (the gRPC exporter needs one). A second call (tests) keeps the first.
pub fn init(t: &Telemetry) -> Result<TelemetryGuard, TelemetryError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = filter_directives(t.log_level.as_str(), rust_log.as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: RUST_LOG is not a valid filter ({e}); using telemetry.log_level");
        EnvFilter::new(filter_directives(t.log_level.as_str(), None))
    });
    let provider = match endpoint(t) {
        Some(endpoint) => Some(provider(t, &endpoint)?),
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("modelslab-sentinel")));
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // Logs are events only: spans exist for trace export, and with it off they cost nothing
    // (no layer wants them, so they are never built, and their fields never formatted).
    let events_only = filter_fn(|meta| meta.is_event());
    let _ = match t.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(ansi)
                    .with_span_events(FmtSpan::NONE)
                    .with_filter(events_only),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(events_only),
            )
            .try_init(),
    };
    if let Some(e) = endpoint(t) {
        tracing::info!(endpoint = %e, protocol = ?t.otlp.protocol, sample_ratio = t.otlp.sample_ratio, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { provider })
}

fn provider(t: &Telemetry, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let err = |reason: String| TelemetryError::Exporter { endpoint: endpoint.to_owned(), reason };
    let headers: HashMap<String, String> =
        t.otlp.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect();
    let exporter = match t.otlp.protocol {
        OtlpProtocol::Grpc => {
            let mut map = http::HeaderMap::new();
            for (k, v) in &headers {
                let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| err(format!("bad header name {k}")))?;
                let value = http::HeaderValue::from_str(v).map_err(|_| err(format!("bad value for header {k}")))?;
                map.insert(name, value);
            }
            let metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(http_traces_url(endpoint))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(headers)
            .build(),
    }
    .map_err(|e| err(e.to_string()))?;
    let processor = BatchSpanProcessor::builder(Counting { inner: exporter, last_warning: Mutex::new(None) })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    let service =
        std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| t.service_name.clone());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(t.otlp.sample_ratio))))
        .with_resource(resource)
        .build())
}

/// For HTTP the SDK uses a configured endpoint as-is: add `/v1/traces` to a bare collector URL.
fn http_traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(u) if u.path() == "/" || u.path().is_empty() => format!("{trimmed}/v1/traces"),
        _ => trimmed.to_owned(),
    }
}

/// Counts the spans of failed exports and warns about them at most once a minute.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    last_warning: Mutex<Option<Instant>>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            SPANS_DROPPED.fetch_add(n, Ordering::Relaxed);
            let mut last = self.last_warning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                *last = Some(Instant::now());
                tracing::warn!(
                    spans_dropped = spans_dropped(),
                    "cannot export traces, spans are dropped (next warning in a minute at the earliest): {e}"
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_stay_quiet_at_any_level() {
        assert_eq!(filter_directives("trace", None), format!("warn,modelslab_sentinel=trace,{QUIET_LIBRARIES}"));
        let d = filter_directives("info", Some("trace"));
        assert!(d.starts_with("trace,") && d.ends_with("opentelemetry_otlp=off"), "{d}");
        assert!(EnvFilter::try_new(filter_directives("debug", None)).is_ok());
    }

    #[test]
    fn http_endpoints_get_the_traces_path() {
        assert_eq!(http_traces_url("http://collector:4318"), "http://collector:4318/v1/traces");
        assert_eq!(http_traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(http_traces_url("https://api.vendor.io/otlp/v1/traces"), "https://api.vendor.io/otlp/v1/traces");
    }
}
