use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use ctreap::cli::{Cli, Command, UsageError};

/// EX_USAGE from sysexits.h: a bad flag or configuration.
const EXIT_USAGE: u8 = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CTREAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("ctreap: {first} (see --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging();
    let res = match cli.cmd {
        Command::Conntrack(c) => ctreap::cli::conntrack::run(c).map(|()| ExitCode::SUCCESS),
        Command::Stale(c) => {
            let fail_on_stale = c.fail_on_stale;
            runtime()
                .block_on(ctreap::cli::stale::stale(c))
                .map(|stale| {
                    if stale && fail_on_stale {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                })
        }
        Command::Watch(c) => runtime()
            .block_on(ctreap::cli::stale::watch(c))
            .map(|()| ExitCode::SUCCESS),
        Command::Doctor(c) => runtime()
            .block_on(ctreap::cli::doctor::doctor(c))
            .map(|worst| {
                if worst == ctreap::cli::doctor::Level::Fail {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }),
    };
    match res {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("ctreap: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("ctreap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
