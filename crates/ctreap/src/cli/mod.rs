//! The command line: `ctreap conntrack ...` and, as the other issues land, `stale`, `watch`,
//! `doctor`, `run` and `lab`.

pub mod conntrack;
pub mod doctor;
pub mod filter;
pub mod kube_args;
pub mod stale;

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
    /// Stale flows on this node: conntrack entries whose backend is gone, by Service.
    Stale(stale::StaleCmd),
    /// During a rollout: one line per interval with endpoint changes and live/draining/stale
    /// flows per Service, naming the dead backends that still receive flows.
    Watch(stale::WatchCmd),
    /// Check the node for the outage's conditions and for what ctreap needs.
    Doctor(doctor::DoctorCmd),
    /// The node agent (a DaemonSet): delete stale flows as backends go, with metrics.
    Run(crate::agent::RunCmd),
    /// Reproduce the outage in network namespaces and compare the fixes.
    Lab(crate::lab::LabCmd),
}
