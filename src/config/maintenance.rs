//! The `maintenance` section: planned windows (a cron schedule or one start, each with a
//! duration, in UTC), whether the vendor's own maintenance counts, and which probes pause. Which
//! window is on at an instant is a pure function of the section ([`Maintenance::window_at`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::schema::{DurationText, duration, secs};

/// Planned maintenance: during a window paid probes pause (so that no credits are spent on
/// answers nobody will act on) and `ModelslabMaintenance` holds the pages back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Maintenance {
    /// The planned windows.
    pub windows: Vec<Window>,
    /// The vendor's maintenance in progress (on its status page) counts as a window too.
    pub follow_vendor: bool,
    /// Which probes pause during a window.
    pub pause_probes: PauseProbes,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance { windows: Vec::new(), follow_vendor: true, pause_probes: PauseProbes::Paid }
    }
}

/// One window: `cron` (each occurrence starts one) or `start` (once), lasting `duration`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Its name (`[a-z0-9_-]`), in logs, the status page and the alert.
    pub name: String,
    /// A five-field cron schedule in UTC (`0 2 * * SUN`): each occurrence starts the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub cron: Option<CronSchedule>,
    /// One start, RFC 3339 (`2026-12-05T02:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub start: Option<Start>,
    /// How long each window lasts.
    #[serde(with = "duration", default = "one_hour")]
    #[schemars(with = "DurationText")]
    pub duration: Duration,
}

fn one_hour() -> Duration {
    secs(3600)
}

/// Which probes a window pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PauseProbes {
    /// Probes that spend credits (`max_runs_per_day > 0`).
    #[default]
    Paid,
    /// Every probe.
    All,
    /// None: probes go on and their failures count.
    None,
}

/// A cron schedule, kept with the text it was read from.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    text: String,
    cron: croner::Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronSchedule {
    /// Reads a five-field schedule (`minute hour day-of-month month day-of-week`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.split_whitespace().count() != 5 {
            return Err(format!(
                "`{text}` is not a five-field cron schedule (minute hour day-of-month month day-of-week, e.g. `0 2 * * SUN`)"
            ));
        }
        let cron = text.parse::<croner::Cron>().map_err(|e| format!("`{text}` is not a cron schedule: {e}"))?;
        Ok(CronSchedule { text: text.to_owned(), cron })
    }

    /// The last occurrence at or before `now`.
    pub fn previous(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&now, true).ok()
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CronSchedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A window's one start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start(pub DateTime<Utc>);

impl Serialize for Start {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(s.trim()).map(|t| Start(t.with_timezone(&Utc))).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time ({e}): write e.g. 2026-12-05T02:00:00Z"))
        })
    }
}

/// A window that is on: which, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnWindow<'a> {
    /// The window's name.
    pub name: &'a str,
    /// When this occurrence ends.
    pub until: DateTime<Utc>,
}

impl Window {
    /// This window's occurrence covering `now`, if one does (a window already running when the
    /// agent starts counts).
    pub fn on_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let length = chrono::Duration::from_std(self.duration).ok()?;
        let began = match (&self.cron, &self.start) {
            (Some(c), _) => c.previous(now)?,
            (None, Some(s)) => s.0,
            (None, None) => return None,
        };
        let until = began.checked_add_signed(length)?;
        (began <= now && now < until).then_some(until)
    }
}

impl Maintenance {
    /// The window on at `now` (the one ending last, when several overlap).
    pub fn window_at(&self, now: DateTime<Utc>) -> Option<OnWindow<'_>> {
        self.windows
            .iter()
            .filter_map(|w| w.on_at(now).map(|until| OnWindow { name: &w.name, until }))
            .max_by_key(|w| w.until)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap()
    }

    fn weekly() -> Window {
        Window {
            name: "weekly-deploy".into(),
            cron: Some(CronSchedule::parse("0 2 * * SUN").unwrap()),
            start: None,
            duration: secs(3600),
        }
    }

    #[test]
    fn a_cron_window_covers_each_occurrence_for_its_duration() {
        // 2026-12-06 is a Sunday.
        let w = weekly();
        for (now, on) in [
            (at(6, 1, 59), false),
            (at(6, 2, 0), true),
            (at(6, 2, 59), true),
            (at(6, 3, 0), false),
            (at(7, 2, 30), false),
            (at(13, 2, 30), true),
        ] {
            assert_eq!(w.on_at(now).is_some(), on, "{now}");
        }
        assert_eq!(w.on_at(at(6, 2, 30)), Some(at(6, 3, 0)));
    }

    #[test]
    fn a_one_off_window_and_overlaps() {
        let once =
            Window { name: "migration".into(), cron: None, start: Some(Start(at(6, 2, 30))), duration: secs(7200) };
        assert_eq!(once.on_at(at(6, 2, 29)), None);
        assert_eq!(once.on_at(at(6, 4, 29)), Some(at(6, 4, 30)));
        assert_eq!(once.on_at(at(6, 4, 30)), None);
        let m = Maintenance { windows: vec![weekly(), once], ..Maintenance::default() };
        assert_eq!(m.window_at(at(6, 2, 45)), Some(OnWindow { name: "migration", until: at(6, 4, 30) }));
        assert_eq!(m.window_at(at(6, 2, 10)), Some(OnWindow { name: "weekly-deploy", until: at(6, 3, 0) }));
        assert_eq!(m.window_at(at(8, 2, 10)), None);
    }

    #[test]
    fn bad_schedules_say_how_to_write_one() {
        assert!(CronSchedule::parse("0 2 * *").unwrap_err().contains("five-field"));
        assert!(CronSchedule::parse("0 0 2 * * SUN").unwrap_err().contains("five-field"));
        assert!(CronSchedule::parse("61 2 * * *").unwrap_err().contains("not a cron schedule"));
        let e = serde_json::from_str::<Start>("\"tomorrow\"").unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
    }
}
