//! The seed's fixes, run exactly as written, so the lab can show what they do.
//!
//! - preStop (seed option 1): `conntrack -D -d $POD_IP` inside the pod. It runs in the pod's
//!   network namespace, whose conntrack table is not the node's (where the DNAT entry lives),
//!   and `-d` matches the *original* destination, which for Service traffic is the ClusterIP
//!   or the node, never the pod. It deletes nothing that matters.
//! - Reduced timeouts (seed option 4): `sysctl -w net.netfilter.nf_conntrack_*_timeout*` in the
//!   node namespace. These sysctls are per network namespace (each netns has its own
//!   `nf_conntrack_*_timeout` values, unlike `nf_conntrack_max`), so setting them in the lab's
//!   node namespace changes nothing on the host.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::{Error, cmd};

/// What the preStop command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreStopOutcome {
    /// The command as the hook runs it, with the namespace it ran in.
    pub command: String,
    /// `None` if killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// N from conntrack's `N flow entries have been deleted.`, if it printed it.
    pub deleted: Option<u64>,
}

/// `ip netns exec POD_NS conntrack -D -d POD_IP`. A non-zero exit is an outcome, not an error
/// (the seed's hook ends in `|| true`).
pub(crate) fn prestop(pod_netns: &str, pod_ip: Ipv4Addr) -> Result<PreStopOutcome, Error> {
    let ip = pod_ip.to_string();
    let args = ["netns", "exec", pod_netns, "conntrack", "-D", "-d", &ip];
    let out = cmd::output("ip", &args, None)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let deleted = parse_deleted(&stderr).or_else(|| parse_deleted(&stdout));
    Ok(PreStopOutcome {
        command: cmd::display("ip", &args),
        exit_code: out.status.code(),
        stdout,
        stderr,
        deleted,
    })
}

/// conntrack-tools prints `conntrack v1.4.7 (conntrack-tools): 0 flow entries have been
/// deleted.` on stderr.
fn parse_deleted(text: &str) -> Option<u64> {
    let i = text.find(" flow entries have been deleted")?;
    let head = &text[..i];
    let start = head
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |p| p + 1);
    head[start..].parse().ok()
}

/// Reduced conntrack timeouts, in seconds; `None` leaves a value as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConntrackTimeouts {
    /// `net.netfilter.nf_conntrack_udp_timeout` (UDP seen in one direction; default 30).
    pub udp: Option<u32>,
    /// `net.netfilter.nf_conntrack_udp_timeout_stream` (UDP seen both ways, "ASSURED";
    /// default 120). A client that keeps sending refreshes it on every packet.
    pub udp_stream: Option<u32>,
    /// `net.netfilter.nf_conntrack_tcp_timeout_established` (default 432000, 5 days); the
    /// seed's option 4 sets 120.
    pub tcp_established: Option<u32>,
}

impl ConntrackTimeouts {
    /// The seed's option 4 as written (`nf_conntrack_tcp_timeout_established=120`), plus the
    /// UDP timeouts cut to 10 s, the most a tuning guide would dare.
    pub const SEED_OPTION_4: ConntrackTimeouts = ConntrackTimeouts {
        udp: Some(10),
        udp_stream: Some(10),
        tcp_established: Some(120),
    };

    fn items(&self) -> Vec<(&'static str, u32)> {
        [
            ("net.netfilter.nf_conntrack_udp_timeout", self.udp),
            (
                "net.netfilter.nf_conntrack_udp_timeout_stream",
                self.udp_stream,
            ),
            (
                "net.netfilter.nf_conntrack_tcp_timeout_established",
                self.tcp_established,
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// One sysctl written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SysctlChange {
    pub key: String,
    pub before: String,
    /// Read back after writing.
    pub after: String,
}

/// `ip netns exec NODE sysctl -w KEY=VALUE` for each timeout, reading the value before and
/// after. Fails if a value does not stick.
pub(crate) fn set_timeouts(
    node_netns: &str,
    timeouts: &ConntrackTimeouts,
) -> Result<Vec<SysctlChange>, Error> {
    let mut out = Vec::new();
    for (key, value) in timeouts.items() {
        let read = || -> Result<String, Error> {
            Ok(cmd::in_ns(node_netns, "sysctl", &["-n", key])?
                .trim()
                .to_string())
        };
        let before = read()?;
        cmd::in_ns(
            node_netns,
            "sysctl",
            &["-q", "-w", &format!("{key}={value}")],
        )?;
        let after = read()?;
        if after != value.to_string() {
            return Err(Error::Invalid(format!(
                "{key} in {node_netns}: wrote {value}, reads back {after}"
            )));
        }
        out.push(SysctlChange {
            key: key.to_string(),
            before,
            after,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_count_is_read_from_conntrack_tools_output() {
        assert_eq!(
            parse_deleted(
                "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"
            ),
            Some(0)
        );
        assert_eq!(
            parse_deleted("conntrack v1.4.7 (conntrack-tools): 12 flow entries have been deleted."),
            Some(12)
        );
        assert_eq!(parse_deleted("conntrack: operation failed"), None);
    }
}
