//! `ctreap-lab`: the main job (scripts/lab). See the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use ctreap::args::UsageError;

#[derive(Debug, Parser)]
#[command(
    name = "ctreap-lab",
    version,
    about = "Reproduce the outage in network namespaces and compare the fixes",
    long_about = None
)]
struct Cli {
    #[command(flatten)]
    cmd: ctreap_lab::LabCmd,
}

/// EX_USAGE from sysexits.h: a bad flag.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.to_string();
            let line = msg
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("ctreap-lab: {line} (see --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CTREAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match ctreap_lab::run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("ctreap-lab: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("ctreap-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
