//! Variants 4, 9 and 11: the real agent, `ctreap run`, as a child process of the lab. It is the same
//! binary (`std::env::current_exe()`), watching the lab's API server and acting on the node
//! namespace, exactly as the DaemonSet would on a node.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
pub use ctreap_agent_process::AgentProcess;
use ctreap_agent_process::Launch;

/// The agent's node name in the lab (the world's Node object and EndpointSlices use it).
pub const NODE_NAME: &str = "lab-node";

/// The `ctreap` binary the lab runs as the agent: `$CTREAP_BIN`, else `ctreap` beside this
/// program (cargo builds both into the same directory; scripts/lab builds both).
pub fn ctreap_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CTREAP_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("finding this program")?;
    let p = me
        .parent()
        .map(|d| d.join("ctreap"))
        .context("the directory of this program")?;
    if !p.is_file() {
        bail!(
            "{} not found: the lab runs the ctreap binary as its agent; build it beside \
             ctreap-lab (cargo build -p ctreap, with the same profile; scripts/lab does) or \
             set CTREAP_BIN",
            p.display()
        );
    }
    Ok(p)
}

/// Starts `ctreap run --netns NODE_NS --kubeconfig FILE --node-name lab-node --listen
/// 127.0.0.1:PORT` (the shared [`AgentProcess`]), its log going to `log`.
pub fn start(node_ns: &str, kubeconfig: &Path, log: &Path) -> Result<AgentProcess> {
    let bin = ctreap_binary()?;
    AgentProcess::start(Launch {
        bin: &bin,
        netns: node_ns,
        kubeconfig,
        node: NODE_NAME,
        extra: &[],
        log,
    })
    .with_context(|| format!("starting the agent, its log in {}", log.display()))
}

/// Waits until /readyz answers 200 (every watch synced, netlink working); fails at once if
/// the agent exits, with its log's last lines.
pub fn wait_ready(a: &mut AgentProcess, timeout: Duration) -> Result<()> {
    a.wait_ready(timeout).map(|_| ()).map_err(|e| anyhow!(e))
}

/// The agent's /metrics text.
pub fn metrics(a: &AgentProcess) -> Result<String> {
    let (code, body) = a.get("/metrics")?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    Ok(body)
}

/// SIGTERM (the agent exits within 1 s); SIGKILL after 3 s is an error.
pub fn stop(mut a: AgentProcess) -> Result<ExitStatus> {
    match a.terminate(Duration::from_secs(3))? {
        (_, Some(status)) => Ok(status),
        (took, None) => bail!("the agent did not exit within {took:?} of SIGTERM; killed"),
    }
}

/// The agent's "flushed" log lines, for the report's notes.
pub fn flush_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("flushed") || l.contains("would delete"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The metric lines the report keeps: deletions and flush latency counts.
pub fn deletion_metrics(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| {
            // The counters start at 0 for every label set; the report names what happened.
            !l.starts_with('#')
                && !l.ends_with(" 0")
                && (l.starts_with("ctreap_flows_deleted_total")
                    || l.starts_with("ctreap_hostport_flows_deleted_total")
                    || l.starts_with("ctreap_flush_latency_seconds_count")
                    || l.starts_with("ctreap_flush_latency_seconds_sum")
                    || l.starts_with("ctreap_netlink_errors_total"))
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines() {
        let m = "# HELP x\nctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 1\nctreap_flows_deleted_total{protocol=\"tcp\",reason=\"gone\",trigger=\"watch\"} 0\nctreap_ready 1\n# EOF\n";
        assert_eq!(
            deletion_metrics(m),
            vec![
                "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 1"
            ]
        );
    }
}
