//! modelslab-sentinel: a monitoring agent for the ModelsLab generation API.
//!
//! Data flows one way: `config → components → classify → metrics / traces`.
//!
//! | module      | its job                                                                 |
//! |-------------|-------------------------------------------------------------------------|
//! | [`cli`]     | clap definitions of the command line                                    |
//! | [`app`]     | binds listeners, spawns components with cancellation tokens, reloads, shuts down in order |
//! | [`config`]  | YAML → typed, validated [`config::Config`]; the only user of the YAML library |
//! | [`classify`]| the API's error model: pure functions over closed enums                 |
//! | [`metrics`] | every metric family and the bounded label helpers                       |
//! | [`telemetry`]| logging (and trace export)                                             |
//! | [`admin`]   | `/metrics`, `/healthz`, `/readyz`, `/api/v1/*`, `/-/reload` on their own port |
//!
//! The components (synthetic probes, the live-traffic proxy, the status-page poller), the job
//! tracker they share and the emulator (`sim`) are added beside these, each depending only on
//! `config`, `classify` and `metrics`, never on one another.

pub mod admin;
pub mod app;
pub mod classify;
pub mod cli;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod observe;
pub mod probe;
pub mod proxy;
pub mod sim;
pub mod statuspage;
pub mod telemetry;
