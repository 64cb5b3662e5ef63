use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use ctreap::cli::{Cli, Command, UsageError};

/// EX_USAGE from sysexits.h: a bad flag or configuration.
const EXIT_USAGE: u8 = 64;

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
    let res = match cli.cmd {
        Command::Conntrack(c) => ctreap::cli::conntrack::run(c),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
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
