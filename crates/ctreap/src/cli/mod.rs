//! The command line: `ctreap conntrack ...` and, as the other issues land, `stale`, `watch`,
//! `doctor`, `run` and `lab`.

pub mod conntrack;
pub mod filter;

use clap::{Parser, Subcommand};

/// A bad flag or flag combination: the binary exits 64 (EX_USAGE) with a one-line message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(name = "ctreap", version, about = "Deletes conntrack NAT entries that point at Kubernetes backends that are gone", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and change the node's conntrack table over ctnetlink (like conntrack-tools).
    Conntrack(conntrack::ConntrackCmd),
}
