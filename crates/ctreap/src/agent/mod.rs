//! `ctreap run`: the node agent. Watches Services and EndpointSlices and deletes the conntrack
//! entries whose backend is gone, within milliseconds, safely.

pub mod config;

pub use config::{LogFormat, RunCmd};

use anyhow::Result;

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cmd: RunCmd) -> Result<()> {
    let _ = cmd;
    anyhow::bail!("ctreap run: not built yet")
}
