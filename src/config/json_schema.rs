//! The JSON Schema of the configuration file, derived from the types that read it (schemars), so
//! that it cannot drift from them: `modelslab-sentinel schema` prints it (for editors, or a CI
//! check of a config repository), and the Helm chart's `values.schema.json` holds it under
//! `config` (a test keeps the two equal; `scripts/update-chart-schema` rewrites the chart's).
//!
//! Every string may hold `${VAR}` substitutions, so the patterns of durations and sizes also let
//! a string with `${` through; the agent checks the substituted value when it loads the file.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use super::schema::*;

/// A humantime duration (`500ms`, `60s`, `5m`, `1h 30m`).
const DURATION: &str =
    r"^\s*([0-9]+(\.[0-9]+)?\s*(ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|days?|w|weeks?)\s*)+$|\$\{";
/// A size (`512KiB`, `32MiB`) or a plain number of bytes.
const SIZE: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGT]i?B|[kmgt]i?b|B)?\s*$|\$\{";

/// A duration as the configuration writes it.
pub(crate) struct DurationText;

impl JsonSchema for DurationText {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": DURATION, "examples": ["500ms", "60s", "5m"] })
    }
}

/// A size as the configuration writes it.
pub(crate) struct SizeText;

impl JsonSchema for SizeText {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "pattern": SIZE, "examples": ["512KiB", "32MiB"] },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// An HTTP method, in capitals.
pub(crate) struct MethodText;

impl JsonSchema for MethodText {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Method".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": r"^[A-Z]+$|\$\{", "examples": ["GET", "POST"] })
    }
}

/// A URL.
pub(crate) struct UrlText;

impl JsonSchema for UrlText {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Url".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": r"^[a-zA-Z][a-zA-Z0-9+.-]*://|\$\{" })
    }
}

/// `status_page.format`.
pub(crate) struct PageFormatText;

impl JsonSchema for PageFormatText {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "PageFormat".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut names = vec![Value::from("auto")];
        names.extend(PageFormat::ALL.iter().map(|f| Value::from(f.as_str())));
        json_schema!({ "type": "string", "enum": names })
    }
}

impl JsonSchema for InjectKey {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "InjectKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "enum": ["body", "bearer", "x_api_key", "query", "none"] },
                { "type": "boolean" }
            ]
        })
    }
}

impl JsonSchema for Secret {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "writeOnly": true })
    }
}

impl JsonSchema for Pattern {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Pattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "regex" })
    }
}

impl JsonSchema for OutputSize {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "OutputSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let pixels = json_schema!({ "type": "integer", "minimum": 1 });
        json_schema!({
            "anyOf": [
                { "type": "string", "enum": ["from_request", "any"] },
                {
                    "type": "object",
                    "properties": { "width": pixels, "height": pixels },
                    "required": ["width", "height"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl JsonSchema for Sli {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Sli".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = generator.subschema_for::<RawSli>();
        schema.insert("minProperties".into(), 1.into());
        schema.insert("maxProperties".into(), 1.into());
        schema
    }
}

/// The sections of the file, in the order docs/configuration.md gives them, with whether they
/// may be left out.
fn sections(g: &mut SchemaGenerator) -> Vec<(&'static str, Schema)> {
    let mut status_page = g.subschema_for::<StatusPage>();
    // `status_page:` with nothing under it polls the default page.
    status_page.insert("type".into(), Value::from(vec!["object", "null"]));
    vec![
        ("upstream", g.subschema_for::<Upstream>()),
        ("admin", g.subschema_for::<Admin>()),
        ("proxy", g.subschema_for::<Proxy>()),
        ("jobs", g.subschema_for::<Jobs>()),
        ("labels", g.subschema_for::<Labels>()),
        ("probes", g.subschema_for::<Vec<Probe>>()),
        ("status_page", status_page),
        ("telemetry", g.subschema_for::<Telemetry>()),
        ("cluster", g.subschema_for::<Cluster>()),
        ("account", g.subschema_for::<Account>()),
        ("slos", g.subschema_for::<Vec<Slo>>()),
        ("webhooks", g.subschema_for::<Webhooks>()),
        ("maintenance", g.subschema_for::<super::Maintenance>()),
    ]
}

/// The JSON Schema (draft 7, every subschema inline) of the configuration file.
pub fn config_schema() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.inline_subschemas = true;
    let mut generator = settings.into_generator();
    let mut properties = Map::new();
    for (name, schema) in sections(&mut generator) {
        properties.insert(name.to_owned(), schema.to_value());
    }
    serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "modelslab-sentinel configuration",
        "description": "The agent's configuration file (docs/configuration.md). Every section but `upstream` may be left out; strings may hold ${VAR} and ${VAR:-default}.",
        "type": "object",
        "properties": properties,
        "required": ["upstream"],
        "additionalProperties": false
    })
}
