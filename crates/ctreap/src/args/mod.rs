//! What the commands share, whichever they are: usage errors, durations, the network
//! namespace flag, the Kubernetes flags and the deletion policy's flags. `cli/` and `agent/`
//! (and the lab crate) import from here, never from each other.

mod kube;
mod policy;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ctnetlink::{Conntrack, Netns};

pub use kube::{KubeArgs, snapshot};
pub use policy::PolicyArgs;

/// A bad flag or flag combination: the binary exits 64 (EX_USAGE) with a one-line message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Clone, Args)]
pub struct NetnsArg {
    /// Network namespace: a name from `ip netns` (/run/netns/NAME) or a path such as
    /// /proc/PID/ns/net. Default: the current namespace.
    #[arg(long = "netns", value_name = "NAME|PATH", global = true)]
    pub netns: Option<String>,
}

impl NetnsArg {
    pub fn netns(&self) -> Option<Netns> {
        self.netns.as_deref().map(Netns::named)
    }

    pub fn open(&self) -> Result<Conntrack> {
        let ns = self.netns();
        Conntrack::open_in(ns.as_ref()).with_context(|| match &ns {
            Some(ns) => format!("opening ctnetlink in {ns}"),
            None => "opening ctnetlink".to_string(),
        })
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.starts_with('-') {
        return Err(format!(
            "{s:?}: a duration cannot be negative (e.g. 0s, 500ms, 10s, 2m)"
        ));
    }
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}
