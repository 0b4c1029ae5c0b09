//! The Prometheus alert rules, in the manner of a monitoring mixin: one template
//! (`alerts/rules.template.yml`) and the settings it is rendered with — every threshold, every
//! `for` duration, the agent's job selector and the runbook's address — in one place,
//! [`Settings`]. `modelslab-sentinel alert-rules` renders them (with `--set NAME=VALUE` and
//! `--runbook-url`); `alerts/modelslab-sentinel.rules.yml` and the chart's copy are the rendering
//! of the defaults, which a test keeps true.
//!
//! Uses `observe::slo` for the burn rates the status page's verdict shares; nothing else.

use std::collections::BTreeMap;

use crate::observe::slo::PAGE_BURN_RATE_FAST;
use crate::observe::verdict::QUEUE_NEAR_LIMIT;

/// The template, as shipped.
pub const TEMPLATE: &str = include_str!("../alerts/rules.template.yml");

/// The runbook's address when none is given: `docs/runbook.md` of the project's repository.
pub const RUNBOOK_URL: &str = "https://github.com/modelslab-sentinel/modelslab-sentinel/blob/main/docs/runbook.md";

/// One setting: its default and what it means.
struct Setting {
    name: &'static str,
    default: &'static str,
    what: &'static str,
}

const fn s(name: &'static str, default: &'static str, what: &'static str) -> Setting {
    Setting { name, default, what }
}

/// Every setting of the template. Ratios are fractions (0.05 is 5 %); durations are Prometheus's
/// (`5m`).
const SETTINGS: &[Setting] = &[
    s("agent_selector", r#"job="modelslab-sentinel""#, "selects the agent's own `up` series (ModelslabSentinelDown)"),
    s("runbook_url", RUNBOOK_URL, "the runbook every alert links to; each alert adds its `#anchor`"),
    s(
        "server_errors_warning",
        "0.05",
        "share of answers that are server errors (5xx, or 200s with a server-error message), warning",
    ),
    s("server_errors_warning_for", "10m", "how long before the warning fires"),
    s("server_errors_critical", "0.2", "the same share, critical"),
    s("server_errors_critical_for", "5m", "how long before the page"),
    s(
        "server_errors_min_requests",
        "10",
        "requests to an endpoint in 5 minutes under which its server-error share pages nobody (a burst among a few)",
    ),
    s("credits_exhausted_for", "1m", "402s for this long page (ModelslabCreditsExhausted)"),
    s("auth_failing_for", "2m", "401s/403s of live traffic for this long page (ModelslabAuthFailing)"),
    s("rate_limited", "0.1", "share of answers that are 429s (ModelslabRateLimited)"),
    s("rate_limited_for", "10m", "how long before it fires"),
    s(
        "queue_near_limit",
        "",
        "the account's queue depth (else this agent's jobs in flight) over its limit (ModelslabQueueNearLimit)",
    ),
    s("queue_near_limit_for", "2m", "how long before it fires"),
    s(
        "model_delisted_for",
        "15m",
        "a model of labels.models out of the catalogue for this long (ModelslabModelDelisted)",
    ),
    s("probe_failing_for", "3m", "a probe failing for this long pages (ModelslabProbeFailing)"),
    s("output_checks_failing_for", "10m", "failing output checks for this long (ModelslabOutputChecksFailing)"),
    s("webhooks_missing_for", "5m", "a missing webhook in the last hour for this long (ModelslabWebhooksMissing)"),
    s("jobs_over_eta", "3", "p90 of actual job duration over the promised eta (ModelslabJobsOverEta)"),
    s("jobs_over_eta_for", "15m", "how long before it fires"),
    s("jobs_failing", "0.2", "share of jobs ending failed, in error or expired (ModelslabJobsFailing)"),
    s("jobs_failing_for", "10m", "how long before it fires"),
    s("status_page_degraded_for", "5m", "the vendor's page saying degraded for this long"),
    s("status_page_outage_for", "2m", "the vendor's page saying partial or major outage for this long (pages)"),
    s("status_page_unreachable_for", "10m", "the status page unreadable for this long"),
    s(
        "outage_unacknowledged_for",
        "10m",
        "the API failing while the vendor's page says operational for this long pages (ModelslabOutageUnacknowledged)",
    ),
    s("maintenance_for", "0m", "a maintenance window on for this long sends the notice (ModelslabMaintenance)"),
    s(
        "slo_page_burn_fast",
        "",
        "the page's burn rate over 1h and 5m (Google SRE workbook; the status page uses it too)",
    ),
    s("slo_page_burn_slow", "6", "the page's burn rate over 6h and 30m"),
    s("slo_page_for", "2m", "how long before the SLO page fires"),
    s("slo_ticket_burn_fast", "3", "the ticket's burn rate over 1d and 2h"),
    s("slo_ticket_burn_slow", "1", "the ticket's burn rate over 3d and 6h"),
    s("slo_ticket_for", "15m", "how long before the SLO ticket fires"),
    s("slo_no_events_for", "30m", "an SLO without events in the last hour for this long"),
    s(
        "credits_run_out_hours",
        "24",
        "the balance predicted below 0 within this many hours (ModelslabCreditsRunOutSoon)",
    ),
    s("credits_run_out_for", "30m", "how long before it fires"),
    s("credits_low", "5", "a balance below this, in the account's currency (ModelslabCreditsLow)"),
    s("credits_low_for", "15m", "how long before it fires"),
    s("balance_poll_failing_for", "15m", "the balance unreadable for this long"),
    s("sentinel_down_for", "5m", "the agent not scraped for this long pages (ModelslabSentinelDown)"),
    s("config_reload_failed_for", "5m", "a failed reload for this long (ModelslabSentinelConfigReloadFailed)"),
];

/// Why the rules could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertsError {
    /// `--set` named a setting the template does not have.
    #[error("unknown setting `{0}`: `modelslab-sentinel alert-rules --list` shows them")]
    Unknown(String),
    /// `--set` without `=`.
    #[error("`{0}` is not NAME=VALUE")]
    NotAssignment(String),
    /// A ratio that is not a number.
    #[error("`{name}` is a ratio: `{value}` is not a number")]
    NotANumber {
        /// The setting.
        name: String,
        /// What was given.
        value: String,
    },
    /// The template names a setting that does not exist (a defect caught by the tests).
    #[error("the template uses `[[{0}]]`, which is not a setting")]
    Undefined(String),
}

/// The settings the rules are rendered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    values: BTreeMap<&'static str, String>,
}

impl Default for Settings {
    fn default() -> Self {
        let values = SETTINGS
            .iter()
            .map(|s| {
                let default = match s.name {
                    "slo_page_burn_fast" => PAGE_BURN_RATE_FAST.to_string(),
                    "queue_near_limit" => QUEUE_NEAR_LIMIT.to_string(),
                    _ => s.default.to_owned(),
                };
                (s.name, default)
            })
            .collect();
        Settings { values }
    }
}

impl Settings {
    /// Sets `NAME=VALUE`.
    pub fn set(&mut self, assignment: &str) -> Result<(), AlertsError> {
        let (name, value) =
            assignment.split_once('=').ok_or_else(|| AlertsError::NotAssignment(assignment.to_owned()))?;
        let (name, value) = (name.trim(), value.trim());
        let slot =
            self.values.iter_mut().find(|(k, _)| **k == name).ok_or_else(|| AlertsError::Unknown(name.to_owned()))?;
        if is_ratio(name) && value.parse::<f64>().is_err() {
            return Err(AlertsError::NotANumber { name: name.to_owned(), value: value.to_owned() });
        }
        *slot.1 = value.to_owned();
        Ok(())
    }

    /// Every setting with its value and meaning, one per line.
    pub fn list(&self) -> String {
        SETTINGS
            .iter()
            .map(|s| format!("{} = {}  ({})\n", s.name, self.values.get(s.name).map_or("", String::as_str), s.what))
            .collect()
    }

    /// The rules: the template with every `[[name]]` (and `[[name_pct]]`) filled in, under a
    /// header that says where they come from and lists the settings.
    pub fn render(&self) -> Result<String, AlertsError> {
        let mut out = String::from(
            "# Prometheus alert rules for modelslab-sentinel, rendered by `modelslab-sentinel alert-rules` from\n\
             # alerts/rules.template.yml: do not edit by hand. The Helm chart's PrometheusRule renders these\n\
             # groups. Unit tests: tests/alerts/*.test.yml (promtool test rules).\n#\n# Settings:\n",
        );
        for line in self.list().lines() {
            out.push_str(&format!("#   {}\n", line.trim_end()));
        }
        out.push_str(
            "# Errors are selected by error_class, never by http_status: the API sends errors as HTTP 200 too.\n",
        );
        let body = TEMPLATE.split_once("\ngroups:").map_or(TEMPLATE, |(_, rest)| rest);
        let mut rest = body;
        out.push_str("groups:");
        while let Some(start) = rest.find("[[") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("]]").ok_or_else(|| AlertsError::Undefined(after.chars().take(20).collect()))?;
            let name = &after[..end];
            out.push_str(&self.value(name)?);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn value(&self, name: &str) -> Result<String, AlertsError> {
        if let Some(v) = self.values.get(name) {
            return Ok(v.clone());
        }
        let base = name.strip_suffix("_pct").filter(|b| is_ratio(b));
        let ratio = base.and_then(|b| self.values.get(b)).and_then(|v| v.parse::<f64>().ok());
        match ratio {
            Some(r) => Ok(format!("{}", (r * 1000.0).round() / 10.0)),
            None => Err(AlertsError::Undefined(name.to_owned())),
        }
    }
}

/// Settings that are numbers (the rest are durations, selectors and URLs).
fn is_ratio(name: &str) -> bool {
    !name.ends_with("_for") && !matches!(name, "agent_selector" | "runbook_url")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_render_every_placeholder_and_settings_change_the_rules() {
        let default = Settings::default().render().unwrap();
        assert!(!default.contains("[["), "every placeholder is filled");
        assert!(default.contains("> 0.05\n") && default.contains(">= 10\n        for: 10m"), "{default}");
        assert!(default.contains("server errors above 5 %"));
        assert!(default.contains(&format!("> {PAGE_BURN_RATE_FAST})")));
        assert!(default.contains(&format!(") >= {QUEUE_NEAR_LIMIT}\n")), "the verdict's threshold is the alert's");
        let mut s = Settings::default();
        s.set("server_errors_warning=0.125").unwrap();
        s.set("runbook_url = https://wiki.example.com/modelslab").unwrap();
        let changed = s.render().unwrap();
        assert!(changed.contains("> 0.125\n") && changed.contains("server errors above 12.5 %"));
        s.set("server_errors_min_requests=50").unwrap();
        assert!(s.render().unwrap().contains(">= 50\n        for: 10m"));
        assert!(changed.contains("runbook_url: \"https://wiki.example.com/modelslab#modelslabapiservererrors\""));
        assert_eq!(s.set("colour=blue"), Err(AlertsError::Unknown("colour".into())));
        assert_eq!(s.set("credits_low"), Err(AlertsError::NotAssignment("credits_low".into())));
        assert!(matches!(s.set("credits_low=lots"), Err(AlertsError::NotANumber { .. })));
        assert!(Settings::default().list().lines().count() == SETTINGS.len());
    }
}
