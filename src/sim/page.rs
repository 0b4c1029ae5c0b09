//! The emulated status page, in Atlassian Statuspage's JSON (`/api/v2/summary.json`,
//! `/api/v2/status.json`) and as an HTML page (`/status`).

use serde_json::{Value, json};

use super::scenario::PageState;

/// A maintenance's phase on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Announced, not begun: listed, and the page's state unchanged.
    Scheduled,
    /// Under way: the page says so unless something worse is on.
    InProgress,
}

/// What the page shows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct View {
    pub(super) state: PageState,
    pub(super) maintenance: Option<Phase>,
}

impl View {
    /// The state shown: maintenance in progress on an otherwise operational page.
    fn state(self) -> PageState {
        match (self.state, self.maintenance) {
            (PageState::Operational, Some(Phase::InProgress)) => PageState::UnderMaintenance,
            (s, _) => s,
        }
    }
}

const COMPONENTS: [&str; 3] = ["Image Generation API", "Video & Audio API", "Dashboard"];

fn indicator(state: PageState) -> (&'static str, &'static str) {
    match state {
        PageState::Operational => ("none", "All Systems Operational"),
        PageState::DegradedPerformance => ("minor", "Minor Service Outage"),
        PageState::PartialOutage => ("major", "Partial System Outage"),
        PageState::MajorOutage => ("critical", "Major Service Outage"),
        PageState::UnderMaintenance => ("maintenance", "Service Under Maintenance"),
    }
}

/// The status of the image API component; the others stay operational.
fn component_status(state: PageState) -> &'static str {
    match state {
        PageState::Operational => "operational",
        PageState::DegradedPerformance => "degraded_performance",
        PageState::PartialOutage => "partial_outage",
        PageState::MajorOutage => "major_outage",
        PageState::UnderMaintenance => "under_maintenance",
    }
}

fn page() -> Value {
    json!({"id": "sim0modelslab", "name": "ModelsLab", "url": "https://modelslab.com/status", "time_zone": "Etc/UTC", "updated_at": "2026-01-01T00:00:00.000Z"})
}

/// `/api/v2/status.json`.
pub(super) fn status_json(view: View) -> Value {
    let (indicator, description) = indicator(view.state());
    json!({"page": page(), "status": {"indicator": indicator, "description": description}})
}

/// `/api/v2/summary.json`.
pub(super) fn summary_json(view: View) -> Value {
    let state = view.state();
    let (indicator, description) = indicator(state);
    let components: Vec<Value> = COMPONENTS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let status = if i == 0 { component_status(state) } else { "operational" };
            json!({"id": format!("cmp{i}"), "name": name, "status": status, "position": i + 1,
                   "group": false, "only_show_if_degraded": false, "showcase": true})
        })
        .collect();
    let incidents: Vec<Value> = match state {
        PageState::Operational | PageState::UnderMaintenance => Vec::new(),
        _ => vec![json!({"id": "inc1", "name": "Elevated error rates on image generation", "status": "investigating",
                         "impact": indicator, "shortlink": "https://stspg.io/sim"})],
    };
    let phase = match (state, view.maintenance) {
        (_, Some(Phase::Scheduled)) => Some("scheduled"),
        (PageState::UnderMaintenance, _) | (_, Some(Phase::InProgress)) => Some("in_progress"),
        _ => None,
    };
    let maintenances: Vec<Value> = phase
        .map(|status| json!({"id": "mnt1", "name": "Database upgrade", "status": status, "impact": "maintenance"}))
        .into_iter()
        .collect();
    json!({"page": page(), "status": {"indicator": indicator, "description": description},
           "components": components, "incidents": incidents, "scheduled_maintenances": maintenances})
}

/// `/status`: an HTML page with the overall status in words.
pub(super) fn html(view: View) -> String {
    let state = view.state();
    let (_, description) = indicator(state);
    format!(
        "<!doctype html><html><head><title>ModelsLab Status</title></head><body>\
         <h1>ModelsLab</h1><div class=\"page-status\"><span class=\"status\">{description}</span></div>\
         <ul>{}</ul></body></html>",
        COMPONENTS
            .iter()
            .enumerate()
            .map(|(i, c)| format!("<li>{c}: {}</li>", if i == 0 { component_status(state) } else { "operational" }))
            .collect::<String>()
    )
}
