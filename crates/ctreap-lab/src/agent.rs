//! Variant 4: the real agent, `ctreap run`, as a child process of the lab. It is the same
//! binary (`std::env::current_exe()`), watching the lab's API server and acting on the node
//! namespace, exactly as the DaemonSet would on a node.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The agent's node name in the lab (the world's Node object and EndpointSlices use it).
pub const NODE_NAME: &str = "lab-node";

/// A running `ctreap run`; killed on drop if [`AgentProcess::stop`] was not called.
pub struct AgentProcess {
    child: Option<Child>,
    listen: SocketAddr,
    log: PathBuf,
    /// The command line, for messages and the report.
    pub command: String,
}

/// A free port on 127.0.0.1 for the agent's HTTP endpoints.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free local port")?;
    Ok(l.local_addr()?.port())
}

/// GET `path` on `addr`: (status, body).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer from {addr}{path}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

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

impl AgentProcess {
    /// Starts `ctreap run --netns NODE_NS --kubeconfig FILE --node-name lab-node --listen
    /// 127.0.0.1:PORT`, its stderr (the log) going to `log`.
    pub fn start(node_ns: &Path, kubeconfig: &Path, log: &Path) -> Result<AgentProcess> {
        let exe = ctreap_binary()?;
        let port = free_port()?;
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let args: Vec<String> = vec![
            "run".into(),
            "--netns".into(),
            node_ns.display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--node-name".into(),
            NODE_NAME.into(),
            "--listen".into(),
            listen.to_string(),
        ];
        let command = format!("{} {}", exe.display(), args.join(" "));
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&exe)
            .args(&args)
            .env(
                "CTREAP_LOG",
                std::env::var("CTREAP_LOG").unwrap_or_else(|_| "info".into()),
            )
            // The log goes to a file people read: no terminal colours.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        Ok(AgentProcess {
            child: Some(child),
            listen,
            log: log.to_path_buf(),
            command,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The last lines of the agent's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until /readyz answers 200 (every watch synced, netlink working). Fails at once if
    /// the agent exits, with its log's last lines.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the agent exited before it was ready ({status}); its log:\n{}",
                    self.log_tail(20)
                );
            }
            let last = match http_get(self.listen, "/readyz", Duration::from_millis(500)) {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("{code} {}", body.trim()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the agent was not ready after {:?} (last /readyz: {last}); its log:\n{}",
                    timeout,
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's /metrics text.
    pub fn metrics(&self) -> Result<String> {
        let (code, body) = http_get(self.listen, "/metrics", Duration::from_secs(2))?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// SIGTERM (the agent exits within 1 s), then SIGKILL after 3 s.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().expect("stop is called once");
        // `kill -TERM` rather than libc::kill: no unsafe outside the socket/netns layer.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("the agent did not exit within 3 s of SIGTERM; killed ({status})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
