//! modelslab-sentinel: a monitoring agent for the ModelsLab generation API.
//!
//! Data flows one way: `config → components (probe | proxy | pollers | webhook) → classify →
//! observe (log + metric + span) → admin / ui`.
//!
//! | module         | its job                                                               |
//! |----------------|-----------------------------------------------------------------------|
//! | [`cli`]        | clap definitions of the command line                                  |
//! | [`app`]        | binds listeners, starts the components on one task tracker, reloads, shuts down in order |
//! | [`config`]     | YAML → typed, validated [`config::Config`]; what a reload applies; the only user of the YAML library |
//! | [`classify`]   | the API's error model: pure functions over closed enums               |
//! | [`vocab`]      | the label enums and the records events carry (exchanges, job ends, run reports) |
//! | [`observe`]    | typed events: each one logs, counts and records its span in one call; a 15-minute history; the status document and its verdict |
//! | [`metrics`]    | the registry and its families, grouped by what they describe          |
//! | [`telemetry`]  | logging and OTLP trace export for the process                         |
//! | [`cluster`]    | the one seam for state replicas share: in memory, or in Redis         |
//! | [`probe`]      | synthetic probes: schedule, gates, one run with its job followed      |
//! | [`proxy`]      | the live-traffic proxy and the jobs it follows                        |
//! | [`poller`]     | the one loop of everything polled on an interval                      |
//! | [`statuspage`] | the vendor's status page as metrics (a poller)                        |
//! | [`account`]    | the account's credit balance (a poller)                               |
//! | [`maintenance`] | whether a maintenance window is on (configured or the vendor's): the probes' gate and its clock |
//! | [`webhook`]    | the webhook receiver: did the API call back, on time?                 |
//! | [`alerts`]     | the alert rules: one template, its thresholds in one place, rendered  |
//! | [`admin`]      | the status page, `/metrics`, `/healthz`, `/readyz`, `/api/v1/*`, `/-/reload` on their own port |
//! | [`ui`]         | the status page's HTML, from the status document                      |
//! | [`server`]     | serving HTTP on a listener with the same limits on every port (connections, header size and time) |
//! | [`clients`]    | the HTTP clients, built once: to the API, to public pages, for downloads |
//! | [`tasks`]      | the one task tracker every task of the agent runs on                  |
//! | [`clock`]      | the wall clock: Unix times and the UTC day                            |
//! | [`chain`]      | walking an error's source chain                                       |
//! | [`sim`]        | the ModelsLab emulator (tests, demo, drills); nothing else imports it |
//! | [`demo`]       | the emulator, the agent and a client load on an embedded config       |
//! | `fuzzing`      | entry points of the `cargo fuzz` targets in `fuzz/` (feature `fuzzing`) |
//!
//! The components (`probe`, `proxy`, `statuspage`, `account`, `webhook`) depend on `config`,
//! `classify`, `vocab`, `observe`, `cluster` and `maintenance`, never on one another; `app` and `demo` wire
//! everything together.

pub mod account;
pub mod admin;
pub mod alerts;
pub mod app;
pub mod chain;
pub mod classify;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod maintenance;
pub mod metrics;
pub mod observe;
pub mod poller;
pub mod probe;
pub mod proxy;
pub mod server;
pub mod sim;
pub mod statuspage;
pub mod tasks;
pub mod telemetry;
pub mod ui;
pub mod vocab;
pub mod webhook;

/// The integration tests' metric matcher, shared with the unit tests.
#[cfg(test)]
#[path = "../tests/common/scrape.rs"]
#[allow(dead_code, unreachable_pub)] // the integration tests use all of it, the unit tests a part
pub(crate) mod scrape;

/// A boxed future, for the traits that join components (`probe::Runner`, `admin::Components`,
/// `probe::WebhookWatch`, `poller::Polled`) and for the cluster's operations.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;
