//! modelslab-sentinel: a monitoring agent for the ModelsLab generation API.
//!
//! Data flows one way: `config → components → classify → observe (metrics, spans, logs)`.
//!
//! | module         | its job                                                               |
//! |----------------|-----------------------------------------------------------------------|
//! | [`cli`]        | clap definitions of the command line                                  |
//! | [`app`]        | binds listeners, spawns components with cancellation tokens, reloads, shuts down in order |
//! | [`config`]     | YAML → typed, validated [`config::Config`]; the only user of the YAML library |
//! | [`classify`]   | the API's error model: pure functions over closed enums               |
//! | [`metrics`]    | every metric family and the bounded label helpers                     |
//! | [`observe`]    | typed events: each one logs, counts and records its span in one call; a 15-minute history |
//! | [`telemetry`]  | logging and OTLP trace export for the process                         |
//! | [`cluster`]    | state shared by replicas through Redis: jobs, the probe lease         |
//! | [`probe`]      | synthetic probes: schedule, gates, one run with its job followed      |
//! | [`proxy`]      | the live-traffic proxy and the jobs it follows                        |
//! | [`statuspage`] | the vendor's status page as metrics                                   |
//! | [`account`]    | the account's credit balance, polled                                  |
//! | [`webhook`]    | the webhook receiver: did the API call back, on time?                 |
//! | [`admin`]      | the status page, `/metrics`, `/healthz`, `/readyz`, `/api/v1/*`, `/-/reload` on their own port |
//! | [`ui`]         | the status page's HTML and its overall verdict, from the status document |
//! | [`server`]     | serving HTTP on a listener with the same limits on every port (connections, header size and time) |
//! | [`sim`]        | the ModelsLab emulator (tests, demo, drills); nothing else imports it |
//! | [`demo`]       | the emulator, the agent and a client load on an embedded config       |
//! | `fuzzing`      | entry points of the `cargo fuzz` targets in `fuzz/` (feature `fuzzing`) |
//!
//! The components (`probe`, `proxy`, `statuspage`, `account`) depend on `config`, `classify`,
//! `observe` and `cluster`, never on one another; `app` and `demo` wire everything together.

pub mod account;
pub mod admin;
pub mod app;
pub mod classify;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod observe;
pub mod probe;
pub mod proxy;
pub mod server;
pub mod sim;
pub mod statuspage;
pub mod telemetry;
pub mod ui;
pub mod webhook;

/// A boxed future, for the traits that join components (`probe::Runner`, `admin::Components`,
/// `probe::WebhookWatch`) and so must be object-safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
