//! Status-page documents → one [`Snapshot`]: Atlassian Statuspage (`summary.json`,
//! `status.json`), Instatus (`summary.json`, `v2/components.json`), Better Stack (`index.json`)
//! and HTML keyword rules. Pure functions; any bytes give a snapshot or an error, never a panic.

use serde_json::Value;

use crate::classify::PageStatus;
use crate::config::{HtmlRule, PageFormat};

/// What a status page says.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The page indicator or the worst component, whichever is worse.
    pub status: PageStatus,
    /// Components in page order.
    pub components: Vec<(String, PageStatus)>,
    /// Incidents open (not resolved).
    pub incidents_open: u32,
    /// The vendor declares maintenance in progress: a maintenance under way, the page's
    /// indicator, or a component under maintenance (announced ones not yet begun do not count).
    pub maintenance: bool,
}

impl Snapshot {
    fn new(page: PageStatus, components: Vec<(String, PageStatus)>, incidents: usize) -> Snapshot {
        let maintenance =
            page == PageStatus::Maintenance || components.iter().any(|(_, s)| *s == PageStatus::Maintenance);
        Snapshot {
            status: overall(page, &components),
            components,
            incidents_open: u32::try_from(incidents).unwrap_or(u32::MAX),
            maintenance,
        }
    }

    fn in_maintenance(mut self, in_progress: bool) -> Snapshot {
        self.maintenance |= in_progress;
        self
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The document is not JSON.
    #[error("not JSON")]
    NotJson,
    /// A field the format needs is missing or of another kind: which, and what it should be.
    #[error("not a {0} document: {1}")]
    Shape(&'static str, &'static str),
    /// No phrase of the HTML rules is on the page.
    #[error("no status phrase found on the HTML page")]
    NoPhrase,
}

fn worst(a: PageStatus, b: PageStatus) -> PageStatus {
    if b.level() > a.level() { b } else { a }
}

fn json(body: &[u8]) -> Result<Value, ParseError> {
    serde_json::from_slice(body).map_err(|_| ParseError::NotJson)
}

/// Which JSON format a document is, from its shape.
pub fn detect(body: &[u8]) -> Option<PageFormat> {
    let v = json(body).ok()?;
    if v.pointer("/status/indicator").is_some_and(Value::is_string) {
        Some(PageFormat::Statuspage)
    } else if v.pointer("/page/status").is_some_and(Value::is_string) || v.get("activeIncidents").is_some() {
        Some(PageFormat::Instatus)
    } else if v.pointer("/data/attributes/aggregate_state").is_some_and(Value::is_string) {
        Some(PageFormat::Betterstack)
    } else if v.get("components").is_some_and(Value::is_array) {
        // Instatus' v2/components.json alone.
        Some(PageFormat::Instatus)
    } else {
        None
    }
}

/// Parses one document of `format`.
pub fn parse(format: PageFormat, body: &[u8], rules: &[HtmlRule]) -> Result<Snapshot, ParseError> {
    match format {
        PageFormat::Statuspage => statuspage(&json(body)?),
        PageFormat::Instatus => instatus(&json(body)?, None),
        PageFormat::Betterstack => betterstack(&json(body)?),
        PageFormat::Html => html(body, rules),
    }
}

fn component_list(
    v: &Value,
    name_key: &str,
    status_of: impl Fn(&Value) -> Option<PageStatus>,
) -> Vec<(String, PageStatus)> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter(|c| !c.get("group").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|c| {
                    let name = c.get(name_key).and_then(Value::as_str)?.trim();
                    (!name.is_empty())
                        .then(|| (name.chars().take(100).collect(), status_of(c).unwrap_or(PageStatus::Operational)))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn overall(page: PageStatus, components: &[(String, PageStatus)]) -> PageStatus {
    components.iter().fold(page, |acc, (_, s)| worst(acc, *s))
}

fn statuspage(v: &Value) -> Result<Snapshot, ParseError> {
    let indicator = v
        .pointer("/status/indicator")
        .and_then(Value::as_str)
        .ok_or(ParseError::Shape("statuspage", "no status.indicator"))?;
    let page = match indicator {
        "none" => PageStatus::Operational,
        "minor" => PageStatus::Degraded,
        "major" => PageStatus::PartialOutage,
        "critical" => PageStatus::MajorOutage,
        "maintenance" => PageStatus::Maintenance,
        _ => return Err(ParseError::Shape("statuspage", "unknown status.indicator")),
    };
    let components = component_list(v.get("components").unwrap_or(&Value::Null), "name", |c| {
        Some(match c.get("status")?.as_str()? {
            "operational" => PageStatus::Operational,
            "degraded_performance" => PageStatus::Degraded,
            "partial_outage" => PageStatus::PartialOutage,
            "major_outage" => PageStatus::MajorOutage,
            "under_maintenance" => PageStatus::Maintenance,
            _ => return None,
        })
    });
    let open = |key: &str, closed: &[&str]| {
        v.get(key)
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter(|i| i.get("status").and_then(Value::as_str).is_none_or(|s| !closed.contains(&s)))
                    .count()
            })
            .unwrap_or(0)
    };
    let incidents = open("incidents", &["resolved", "postmortem", "completed"]);
    let maintenance = open("scheduled_maintenances", &["scheduled", "completed", "resolved"]) > 0;
    let page = if maintenance { worst(page, PageStatus::Maintenance) } else { page };
    Ok(Snapshot::new(page, components, incidents).in_maintenance(maintenance))
}

fn instatus_status(s: &str) -> Option<PageStatus> {
    Some(match s.to_ascii_uppercase().as_str() {
        "OPERATIONAL" | "UP" => PageStatus::Operational,
        "DEGRADEDPERFORMANCE" | "HASISSUES" => PageStatus::Degraded,
        "PARTIALOUTAGE" => PageStatus::PartialOutage,
        "MAJOROUTAGE" | "DOWN" => PageStatus::MajorOutage,
        "UNDERMAINTENANCE" => PageStatus::Maintenance,
        _ => return None,
    })
}

/// `summary.json`, optionally with `v2/components.json` beside it.
pub(super) fn instatus(summary: &Value, components_doc: Option<&Value>) -> Result<Snapshot, ParseError> {
    let page = match summary.pointer("/page/status").and_then(Value::as_str) {
        Some(s) => instatus_status(s).ok_or(ParseError::Shape("instatus", "unknown page.status"))?,
        None if summary.get("components").is_some() => PageStatus::Operational,
        None => return Err(ParseError::Shape("instatus", "no page.status")),
    };
    let source = components_doc.and_then(|d| d.get("components")).or_else(|| summary.get("components"));
    let components = component_list(source.unwrap_or(&Value::Null), "name", |c| {
        c.get("status").and_then(Value::as_str).and_then(instatus_status)
    });
    let incidents = summary.get("activeIncidents").and_then(Value::as_array).map_or(0, Vec::len);
    let maintenance = summary.get("activeMaintenances").and_then(Value::as_array).is_some_and(|m| !m.is_empty());
    let page = if maintenance { worst(page, PageStatus::Maintenance) } else { page };
    Ok(Snapshot::new(page, components, incidents).in_maintenance(maintenance))
}

fn betterstack_status(s: &str) -> Option<PageStatus> {
    Some(match s {
        "operational" => PageStatus::Operational,
        "degraded" => PageStatus::Degraded,
        "downtime" => PageStatus::MajorOutage,
        "maintenance" => PageStatus::Maintenance,
        _ => return None,
    })
}

fn betterstack(v: &Value) -> Result<Snapshot, ParseError> {
    let state = v
        .pointer("/data/attributes/aggregate_state")
        .and_then(Value::as_str)
        .ok_or(ParseError::Shape("betterstack", "no data.attributes.aggregate_state"))?;
    let page = betterstack_status(state).ok_or(ParseError::Shape("betterstack", "unknown aggregate_state"))?;
    let included = v.get("included").and_then(Value::as_array).cloned().unwrap_or_default();
    let resources: Vec<Value> = included
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("status_page_resource"))
        .filter_map(|i| i.get("attributes").cloned())
        .collect();
    let components = component_list(&Value::Array(resources), "public_name", |a| {
        a.get("status").and_then(Value::as_str).and_then(betterstack_status)
    });
    let incidents = included
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("status_report"))
        .filter(|i| {
            i.pointer("/attributes/aggregate_state")
                .and_then(Value::as_str)
                .is_none_or(|s| s != "resolved" && s != "operational")
        })
        .count();
    Ok(Snapshot::new(page, components, incidents))
}

/// The built-in phrases of HTML status pages.
pub fn default_html_rules() -> Vec<HtmlRule> {
    [
        ("All Systems Operational", PageStatus::Operational),
        ("All systems are operational", PageStatus::Operational),
        ("Under Maintenance", PageStatus::Maintenance),
        ("Scheduled Maintenance", PageStatus::Maintenance),
        ("Degraded", PageStatus::Degraded),
        ("Minor Service Outage", PageStatus::Degraded),
        ("Partial Outage", PageStatus::PartialOutage),
        ("Partial System Outage", PageStatus::PartialOutage),
        ("Major Outage", PageStatus::MajorOutage),
        ("Major Service Outage", PageStatus::MajorOutage),
    ]
    .into_iter()
    .map(|(contains, status)| HtmlRule { contains: contains.to_owned(), status })
    .collect()
}

fn html(body: &[u8], rules: &[HtmlRule]) -> Result<Snapshot, ParseError> {
    let text = String::from_utf8_lossy(body).to_lowercase();
    let defaults;
    let rules = if rules.is_empty() {
        defaults = default_html_rules();
        &defaults
    } else {
        rules
    };
    let status = rules
        .iter()
        .filter(|r| !r.contains.is_empty() && text.contains(&r.contains.to_lowercase()))
        .map(|r| r.status)
        .reduce(worst)
        .ok_or(ParseError::NoPhrase)?;
    Ok(Snapshot::new(status, Vec::new(), 0))
}

#[cfg(test)]
mod tests;
