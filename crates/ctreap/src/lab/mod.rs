//! `ctreap lab`: the seed's outage reproduced on the real kernel in network namespaces, and
//! every fix compared.

pub mod world;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct LabCmd {}

/// Runs the lab.
pub fn run(cmd: LabCmd) -> Result<()> {
    let _ = cmd;
    anyhow::bail!("ctreap lab: not built yet")
}
