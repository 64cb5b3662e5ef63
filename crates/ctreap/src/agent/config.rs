//! `ctreap run` flags. Defaults are the safe choice; every flag is also a Helm value.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::args::{KubeArgs, NetnsArg, PolicyArgs, parse_duration};
use crate::reconcile::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RunCmd {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub ns: NetnsArg,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9742")]
    pub listen: SocketAddr,
    /// Time between two full reconciles (the safety net behind the watch and event triggers).
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "60s")]
    pub resync: Duration,
    /// Compute and report everything; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Wait this long after a backend is gone before its flows are deleted; each flow is then
    /// judged on the newest view. The default covers an endpoint that moves between two
    /// EndpointSlices (slice writers update one object at a time); 0s deletes at once, and can
    /// then cut a live pod's flows during such a move.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "50ms")]
    pub grace: Duration,
    /// Wait this long (at least --grace) before deleting the flows of a backend that vanished
    /// while ready, serving and not terminating. A pod deleted the normal way is reported
    /// terminating first and takes --grace; only an endpoint moving between two EndpointSlices
    /// (in neither between the two writes) or a force-deleted pod vanishes while serving. The
    /// default keeps a move with up to about a second between its writes, and flushes a
    /// force-deleted pod's flows within 1.5 s.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "1300ms")]
    pub move_grace: Duration,
    /// Circuit breaker: hold back a pass that would delete more than this share of the node's
    /// NAT (translated) flows (and more than --max-delete-min flows) until a fresh re-list
    /// confirms it.
    #[arg(long, value_parser = parse_share, default_value = "50%")]
    pub max_delete_share: f64,
    /// Circuit breaker: passes deleting at most this many flows are never held back.
    #[arg(long, default_value_t = 1000)]
    pub max_delete_min: u64,
    /// Circuit breaker: how long a held pass waits before the watches re-list to confirm it.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "10s")]
    pub breaker_hold: Duration,
    /// /healthz fails (503) when the agent's main loop has made no progress for this long (a
    /// wedged loop, so that the kubelet restarts the pod). Passes count as progress as they
    /// read the table.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "60s")]
    pub liveness_timeout: Duration,
    /// Fault injection for tests: the main loop stops making progress this long after start.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, hide = true)]
    pub debug_stall_after: Option<Duration>,
    /// Do not listen for conntrack NEW events (flows created towards gone backends are then
    /// caught by the next full reconcile only).
    #[arg(long)]
    pub no_events: bool,
    /// Record Kubernetes Events on the Services whose flows were deleted (and on those a
    /// held pass would have emptied), for `kubectl describe service` and `kubectl get
    /// events`; `--events=false` turns them off. Not the conntrack events of --no-events.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub events: bool,
    /// At most this many Kubernetes Event writes a minute from this node (creates and series
    /// updates); one Service gets at most one a minute.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub events_per_minute: u32,
    /// For tests: how long a Kubernetes Event collects repeats before its series is written
    /// (60 s).
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub debug_events_window: Option<Duration>,
    /// Receive buffer of the event socket, in bytes (tests shrink it to force an overrun).
    #[arg(long, hide = true, default_value_t = super::EVENT_RCVBUF)]
    pub event_rcvbuf: usize,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// "50%", "50" (percent) or "0.5".
fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map(|v| v / 100.0)
    } else {
        t.parse::<f64>()
            .map(|v| if v > 1.0 { v / 100.0 } else { v })
    }
    .map_err(|_| format!("{s:?} is not a share (e.g. 50% or 0.5)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?}: a share is between 0% and 100%"));
    }
    Ok(v)
}

impl RunCmd {
    /// The deletion policy these flags ask for ([`PolicyArgs::policy`]).
    pub fn policy(&self) -> Policy {
        self.policy.policy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--events` is on by default, `--events=false` (as a Helm value renders it) turns it off.
    #[test]
    fn events_flag_takes_a_bool() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            cmd: RunCmd,
        }
        let parse = |extra: &[&str]| {
            use clap::Parser;
            let mut args = vec!["ctreap"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| (c.cmd.events, c.cmd.events_per_minute))
        };
        assert_eq!(parse(&[]).expect("default"), (true, 10));
        assert_eq!(parse(&["--events=false"]).expect("off"), (false, 10));
        assert!(parse(&["--events"]).expect("on").0);
        assert_eq!(parse(&["--events-per-minute", "30"]).expect("cap").1, 30);
        assert!(parse(&["--events=maybe"]).is_err());
    }

    #[test]
    fn shares() {
        assert_eq!(parse_share("50%"), Ok(0.5));
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert_eq!(parse_share("75"), Ok(0.75));
        assert!(parse_share("150%").is_err());
        assert!(parse_share("half").is_err());
    }
}
