//! Logging (and, from the OTLP work on, trace export) for the agent process.
//!
//! Logs go to stderr as text or JSON at `telemetry.log_level` (`RUST_LOG` overrides it). The
//! HTTP libraries are held at `warn` whatever the level, because at trace level they print
//! request headers, and a header may carry the API key. Nothing here sees a secret.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, Telemetry};

/// Libraries that log raw headers at debug/trace: never allowed below `warn`.
const QUIET_LIBRARIES: &str = "h2=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn";

/// Keeps telemetry running; dropping it flushes what is pending.
#[derive(Debug)]
pub struct TelemetryGuard {
    _private: (),
}

/// The filter directives for a configured level (or `RUST_LOG`), with the libraries held quiet.
pub fn filter_directives(level: &str, rust_log: Option<&str>) -> String {
    let base = rust_log
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("warn,modelslab_sentinel={level}"));
    format!("{base},{QUIET_LIBRARIES}")
}

/// Installs the global subscriber. A second call (tests) keeps the first one.
pub fn init(t: &Telemetry) -> TelemetryGuard {
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = filter_directives(t.log_level.as_str(), rust_log.as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: RUST_LOG is not a valid filter ({e}); using telemetry.log_level");
        EnvFilter::new(filter_directives(t.log_level.as_str(), None))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match t.log_format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    TelemetryGuard { _private: () }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_stay_quiet_at_any_level() {
        assert_eq!(filter_directives("trace", None), format!("warn,modelslab_sentinel=trace,{QUIET_LIBRARIES}"));
        let d = filter_directives("info", Some("trace"));
        assert!(d.starts_with("trace,") && d.ends_with("rustls=warn"), "{d}");
        assert!(EnvFilter::try_new(filter_directives("debug", None)).is_ok());
    }
}
