use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use ctreap::args::UsageError;

#[derive(Debug, Parser)]
#[command(name = "ctreap", version, about = "Deletes conntrack NAT entries that point at Kubernetes backends that are gone", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read and change the node's conntrack table over ctnetlink (like conntrack-tools).
    Conntrack(ctreap::cli::conntrack::ConntrackCmd),
    /// Stale flows on this node: conntrack entries whose backend is gone, by Service.
    Stale(ctreap::cli::stale::StaleCmd),
    /// During a rollout: one line per interval with endpoint changes and live/draining/stale
    /// flows per Service, naming the dead backends that still receive flows.
    Watch(ctreap::cli::stale::WatchCmd),
    /// Check the node for the outage's conditions and for what ctreap needs.
    Doctor(ctreap::cli::doctor::DoctorCmd),
    /// The node agent (a DaemonSet): delete stale flows as backends go, with metrics.
    Run(ctreap::agent::RunCmd),
    /// Print a shell completion script: `source <(ctreap completion bash)`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `ctreap man | man -l -`.
    Man,
}

/// EX_USAGE from sysexits.h: a bad flag or configuration.
const EXIT_USAGE: u8 = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

/// Logs to stderr, filtered by $CTREAP_LOG (tracing's env-filter syntax), `default` if unset.
fn init_logging(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CTREAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal (and not with NO_COLOR): kubectl logs, journald
    // and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
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
            // clap's first line, and the valid values or its suggestion when it has them.
            let msg = e.to_string();
            let mut lines = msg.lines();
            let mut line = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_owned();
            for extra in lines.map(str::trim) {
                if extra.starts_with("[possible values") || extra.starts_with("tip:") {
                    line.push_str("; ");
                    line.push_str(extra.trim_start_matches('[').trim_end_matches(']'));
                }
            }
            eprintln!("ctreap: {line} (see --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match &cli.cmd {
        // The agent logs what it does; the commands only what went wrong.
        Command::Run(c) => init_logging("info", c.log_format == ctreap::agent::LogFormat::Json),
        // kube's client logs every failed request at ERROR; the commands name the failure
        // once themselves (the agent keeps the line: it retries, and the log is its record).
        _ => init_logging("warn,kube_client::client::builder=off", false),
    }
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
        Command::Run(c) => {
            let rt = runtime();
            let res = rt.block_on(ctreap::agent::run(c));
            // SIGTERM must end the process within a second: do not wait for watch streams or
            // connections the runtime still holds.
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            res.map(|()| ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ctreap", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
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
