//! Maintenance: whether a window is on now — one of the configuration's (`maintenance.windows`)
//! or the vendor's maintenance in progress on its status page (with `follow_vendor`) — the gate
//! probes ask before a run, and the clock that reports each window's start and end (metric
//! `modelslab_maintenance_active`, a log line, the status document).
//!
//! The status-page poller tells it what the vendor says; the probes ask it; neither knows the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PauseProbes, Probe};
use crate::observe::{self, Observer};
use crate::vocab::MaintenanceSource;

/// How often the clock looks for a window's start or end.
const TICK: Duration = Duration::from_secs(1);

/// The shared maintenance state (cheap to clone).
#[derive(Clone, Default)]
pub struct Maintenance {
    vendor: Arc<AtomicBool>,
}

/// What is on at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Now {
    /// The configuration's window on, and until when.
    pub window: Option<(String, DateTime<Utc>)>,
    /// The vendor's maintenance is in progress (and `follow_vendor` is on).
    pub vendor: bool,
}

impl Now {
    /// Whether any maintenance is on.
    pub fn active(&self) -> bool {
        self.window.is_some() || self.vendor
    }
}

/// Maintenance as the status document shows it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MaintenanceView {
    /// Whether a window is on.
    pub active: bool,
    /// The configuration's window on.
    pub window: Option<String>,
    /// When it ends (RFC 3339).
    pub until: Option<String>,
    /// The vendor's maintenance is in progress and counts.
    pub vendor: bool,
    /// Which probes a window pauses.
    pub pause_probes: PauseProbes,
    /// The windows configured.
    pub windows: usize,
}

impl Maintenance {
    /// No maintenance known yet.
    pub fn new() -> Self {
        Maintenance::default()
    }

    /// What the vendor's status page says, at each successful poll.
    pub fn set_vendor(&self, in_progress: bool) {
        self.vendor.store(in_progress, Ordering::Release);
    }

    /// What is on at `at` under `config`.
    pub fn at(&self, config: &Config, at: DateTime<Utc>) -> Now {
        let m = &config.maintenance;
        Now {
            window: m.window_at(at).map(|w| (w.name.to_owned(), w.until)),
            vendor: m.follow_vendor && self.vendor.load(Ordering::Acquire),
        }
    }

    /// Whether `probe` must skip this tick.
    pub fn pauses(&self, config: &Config, probe: &Probe) -> bool {
        let applies = match config.maintenance.pause_probes {
            PauseProbes::None => false,
            PauseProbes::All => true,
            PauseProbes::Paid => probe.max_runs_per_day > 0,
        };
        applies && self.at(config, Utc::now()).active()
    }

    /// For the status document.
    pub fn view(&self, config: &Config) -> MaintenanceView {
        let now = self.at(config, Utc::now());
        MaintenanceView {
            active: now.active(),
            until: now.window.as_ref().map(|(_, until)| until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            window: now.window.map(|(name, _)| name),
            vendor: now.vendor,
            pause_probes: config.maintenance.pause_probes,
            windows: config.maintenance.windows.len(),
        }
    }

    /// Reports each window's start and end until `shutdown`.
    pub async fn clock(self, config: watch::Receiver<Arc<Config>>, observer: Observer, shutdown: CancellationToken) {
        let mut shown = Now::default();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = self.at(&config.borrow(), Utc::now());
            if now.window.as_ref().map(|w| &w.0) != shown.window.as_ref().map(|w| &w.0) {
                observer.emit(observe::MaintenanceChanged {
                    source: MaintenanceSource::Config,
                    window: now.window.as_ref().map(|(name, _)| name.as_str()),
                    ended: shown.window.as_ref().map(|(name, _)| name.as_str()),
                });
            }
            if now.vendor != shown.vendor {
                let name = now.vendor.then_some("vendor");
                observer.emit(observe::MaintenanceChanged {
                    source: MaintenanceSource::Vendor,
                    window: name,
                    ended: (!now.vendor).then_some("vendor"),
                });
            }
            shown = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::config::{self, Environment};

    fn config(text: &str) -> Config {
        let var = |_: &str| None;
        config::from_yaml(text, "t", &Environment { var: &var, base_dir: ".".into() }).unwrap()
    }

    const PROBES: &str = "upstream: { base_url: http://127.0.0.1:9, api_key: k }\n\
        probes:\n\
        \x20 - { name: paid, interval: 1m, max_runs_per_day: 10, request: { path: /api/v6/images/text2img, body: { prompt: p } } }\n\
        \x20 - { name: free, interval: 1m, request: { path: /api/v6/images/text2img, body: { model_id: flux } } }\n";

    #[test]
    fn windows_and_the_vendor_pause_the_probes_they_name() {
        let m = Maintenance::new();
        let with = |pause: &str, follow: bool| {
            config(&format!(
                "{PROBES}maintenance:\n  pause_probes: {pause}\n  follow_vendor: {follow}\n  windows:\n\
                 \x20   - {{ name: now, start: \"2000-01-01T00:00:00Z\", duration: 1000000h }}\n"
            ))
        };
        for (pause, paid, free) in [("paid", true, false), ("all", true, true), ("none", false, false)] {
            let c = with(pause, true);
            assert_eq!(m.pauses(&c, &c.probes[0]), paid, "{pause}: paid probe");
            assert_eq!(m.pauses(&c, &c.probes[1]), free, "{pause}: free probe");
        }
        // No window: only the vendor's maintenance, when followed.
        let quiet = config(&format!("{PROBES}maintenance: {{ follow_vendor: true }}\n"));
        assert!(!m.pauses(&quiet, &quiet.probes[0]));
        m.set_vendor(true);
        assert!(m.pauses(&quiet, &quiet.probes[0]));
        let ignoring = config(&format!("{PROBES}maintenance: {{ follow_vendor: false }}\n"));
        assert!(!m.pauses(&ignoring, &ignoring.probes[0]));
        let view = m.view(&quiet);
        assert!(view.active && view.vendor && view.window.is_none());
    }

    #[test]
    fn the_view_names_the_window_and_its_end() {
        let c = config(&format!(
            "{PROBES}maintenance:\n  windows:\n    - {{ name: weekly-deploy, cron: \"0 2 * * SUN\", duration: 1h }}\n"
        ));
        let m = Maintenance::new();
        let sunday = Utc.with_ymd_and_hms(2026, 12, 6, 2, 15, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 12, 6, 3, 0, 0).unwrap();
        assert_eq!(m.at(&c, sunday), Now { window: Some(("weekly-deploy".into(), end)), vendor: false });
        assert!(!m.at(&c, end).active());
    }
}
