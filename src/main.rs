//! The `modelslab-sentinel` binary: parses the command line, loads the config, starts telemetry,
//! calls the library, and maps errors to exit codes (0 ok, 64 configuration or usage, 1 runtime).

use std::process::ExitCode;

use clap::Parser;
use modelslab_sentinel::cli::{Cli, Command, ConfigArgs, RunArgs};
use modelslab_sentinel::{app, config, telemetry};
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
        Command::Run(args) => run(args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Sim(_) | Command::Demo(_) => {
            eprintln!("error: this build has no emulator yet");
            ExitCode::FAILURE
        }
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

fn run(args: RunArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _telemetry = telemetry::init(&config.telemetry);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = app::Options { config, config_path: args.config.config.clone(), grace_period: args.grace_period };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        app::cancel_on_shutdown_signals(shutdown.clone());
        app::run(opts, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
