//! The `modelslab-sentinel` binary: parses the command line, loads the config, starts telemetry,
//! calls the library, and maps errors to exit codes (0 ok, 64 configuration or usage, 1 runtime).

use std::process::ExitCode;

use clap::Parser;
use modelslab_sentinel::cli::{AlertRulesArgs, Cli, Command, ConfigArgs, DemoArgs, RunArgs, SimArgs};
use modelslab_sentinel::{alerts, app, config, demo, sim, telemetry};
use tokio_util::sync::CancellationToken;

const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::AlertRules(args) => alert_rules(&args),
        Command::Schema => {
            let schema = config::json_schema::config_schema();
            println!("{}", serde_json::to_string_pretty(&schema).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Sim(args) => sim(&args),
        Command::Demo(args) => demo(&args),
    }
}

fn load(args: &ConfigArgs) -> Result<config::Config, ExitCode> {
    config::load(&args.config).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    match load(args) {
        Ok(config) => {
            print!("{}", config::to_redacted_yaml(&config));
            eprintln!("{}: configuration is valid", args.config.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn alert_rules(args: &AlertRulesArgs) -> ExitCode {
    let mut settings = alerts::Settings::default();
    let assignments = args.runbook_url.iter().map(|u| format!("runbook_url={u}")).chain(args.set.iter().cloned());
    for assignment in assignments {
        if let Err(e) = settings.set(&assignment) {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if args.list {
        print!("{}", settings.list());
        return ExitCode::SUCCESS;
    }
    match settings.render() {
        Ok(rules) => {
            print!("{rules}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn sim(args: &SimArgs) -> ExitCode {
    let scenario = match &args.scenario {
        None => sim::Scenario::default(),
        Some(path) => match std::fs::read_to_string(path) {
            Err(e) => {
                eprintln!("error: cannot read scenario {}: {e}", path.display());
                return ExitCode::from(EXIT_USAGE);
            }
            Ok(text) => match sim::Scenario::parse(&text) {
                Ok(s) => s,
                Err(problems) => {
                    eprintln!("error: invalid scenario {}:\n{problems}", path.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            },
        },
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _telemetry = match init_telemetry(&runtime, &config::Telemetry::default()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let shutdown = CancellationToken::new();
        app::cancel_on_shutdown_signals(shutdown.clone());
        let handle = sim::spawn(listener, scenario, shutdown.clone())?;
        tracing::info!("sim listening on http://{}", handle.addr);
        shutdown.cancelled().await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let quiet = config::Telemetry { log_level: config::LogLevel::Warn, ..Default::default() };
    let _telemetry = match init_telemetry(&runtime, &quiet) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match runtime.block_on(demo::run(args.duration)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut telemetry = match init_telemetry(&runtime, &config.telemetry) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let opts = app::Options {
        config,
        config_path: args.config.config.clone(),
        grace_period: args.grace_period,
        drain_delay: args.drain_delay,
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        app::cancel_on_shutdown_signals(shutdown.clone());
        app::run(opts, shutdown).await
    });
    // Flush pending spans while the runtime (which the gRPC exporter needs) still runs.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts logging and trace export inside the runtime (the gRPC exporter needs one).
fn init_telemetry(
    runtime: &tokio::runtime::Runtime,
    t: &config::Telemetry,
) -> Result<telemetry::TelemetryGuard, ExitCode> {
    let _inside = runtime.enter();
    telemetry::init(t).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}
