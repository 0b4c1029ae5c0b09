//! The command line (docs/cli.md), as clap definitions only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Monitoring agent for the ModelsLab generation API: synthetic probes, a classifying proxy and
/// the vendor's status page, as Prometheus metrics and OTLP traces.
#[derive(Debug, Parser)]
#[command(
    name = "modelslab-sentinel",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Without a command, `run` is assumed.\n\nExit codes: 0 ok, 64 bad configuration or usage, 1 runtime failure.\nDocs: config/example.yaml documents every configuration key."
)]
pub struct Cli {
    /// The command (`run` when none is given).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s options, for the command line without a command.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: probes, proxy and status-page poller as configured (the default).
    Run(RunArgs),
    /// Parse and validate a configuration: print every problem (exit 64), or the effective
    /// configuration with secrets redacted (exit 0).
    CheckConfig(ConfigArgs),
    /// Print the Prometheus alert rules, with the thresholds, `for` durations, selector and
    /// runbook address given (the defaults are alerts/modelslab-sentinel.rules.yml).
    AlertRules(AlertRulesArgs),
    /// Print the JSON Schema of the configuration file (for editors and CI checks of configs; the
    /// Helm chart's values.schema.json holds the same under `config`).
    Schema,
    /// A ModelsLab-compatible API emulator with fault injection, for tests, demos and alert drills.
    Sim(SimArgs),
    /// Emulator + agent + a small client load through the proxy, on an embedded configuration.
    Demo(DemoArgs),
}

/// Where the configuration is.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// Configuration file (YAML).
    #[arg(long, short = 'c', env = "MODELSLAB_SENTINEL_CONFIG", default_value = "config/sentinel.yaml")]
    pub config: PathBuf,
}

/// The agent's options.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// On SIGTERM/SIGINT, how long in-flight work may take to finish before the agent exits.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// On SIGTERM/SIGINT, how long to keep serving with /readyz at 503 before the listeners close,
    /// so that load balancers and Kubernetes endpoints stop sending first (e.g. `5s`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
}

/// The emulator's options.
#[derive(Debug, Args, Clone)]
pub struct SimArgs {
    /// Address to serve the emulated API on.
    #[arg(long, default_value = "127.0.0.1:8181")]
    pub listen: SocketAddr,
    /// Scenario file (YAML): latency, job durations, failure ratios, faults, status page.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
}

/// The demo's options.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Stop by itself after this long (e.g. `30s`); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Args, Clone)]
/// What `alert-rules` renders.
pub struct AlertRulesArgs {
    /// Change a setting (repeatable), e.g. `--set server_errors_critical=0.3 --set probe_failing_for=5m`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Where the runbook is (each alert adds its `#anchor`), e.g. your wiki's copy of docs/runbook.md.
    #[arg(long, value_name = "URL")]
    pub runbook_url: Option<String>,
    /// List the settings, their values and what they mean, instead of the rules.
    #[arg(long)]
    pub list: bool,
}
