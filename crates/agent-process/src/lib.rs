//! `ctreap run` as a child process, as the lab runs it and as the tests and benchmarks do:
//! started with its log in a file, asked over HTTP (`/readyz`, `/metrics`, chunked or not),
//! measured from `/proc` (CPU ticks, VmHWM), stopped with SIGTERM. Errors are values here;
//! the tests' wrapper turns them into panics with the log's tail.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start the agent: `BIN run --netns NETNS --kubeconfig FILE --node-name NODE --listen
/// 127.0.0.1:PORT EXTRA..`, its stdout and stderr (the log) going to `log`.
pub struct Launch<'a> {
    pub bin: &'a Path,
    pub netns: &'a str,
    pub kubeconfig: &'a Path,
    pub node: &'a str,
    pub extra: &'a [&'a str],
    pub log: &'a Path,
}

/// A running `ctreap run`; killed on drop unless it was terminated.
pub struct AgentProcess {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
    started: Instant,
    command: String,
}

impl AgentProcess {
    /// Starts the agent on a free local port. `CTREAP_LOG` is `info` unless set; the log has
    /// no terminal colours.
    pub fn start(l: Launch<'_>) -> io::Result<AgentProcess> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--netns".into(),
            l.netns.into(),
            "--kubeconfig".into(),
            l.kubeconfig.display().to_string(),
            "--node-name".into(),
            l.node.into(),
            "--listen".into(),
            addr.to_string(),
        ];
        args.extend(l.extra.iter().map(|s| (*s).to_owned()));
        let command = format!("{} {}", l.bin.display(), args.join(" "));
        let file = File::create(l.log)?;
        let mut cmd = Command::new(l.bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .env("NO_COLOR", "1");
        if std::env::var_os("CTREAP_LOG").is_none() {
            cmd.env("CTREAP_LOG", "info");
        }
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting `{command}`: {e}")))?;
        Ok(AgentProcess {
            pid: child.id(),
            child: Some(child),
            addr,
            log: l.log.to_path_buf(),
            started: Instant::now(),
            command,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The command line, for messages and reports.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// How long ago it was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// The log so far (colour escapes removed, should the logger emit them).
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The log lines whose message is `msg` (text: the message follows the level and target;
    /// JSON: `"message":"msg"`).
    pub fn log_lines_with(&self, msg: &str) -> Vec<String> {
        let json = format!("\"message\":\"{msg}\"");
        let text = format!(": {msg}");
        let spaced = format!(" {msg} ");
        self.log()
            .lines()
            .filter(|l| l.contains(&json) || l.contains(&text) || l.contains(&spaced))
            .map(str::to_owned)
            .collect()
    }

    /// `Some(status)` once the process has exited (or was terminated).
    pub fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Err(io::Error::other("the agent was already stopped")),
        }
    }

    /// `GET path` on the agent's listener.
    pub fn get(&self, path: &str) -> io::Result<(u16, String)> {
        http_get(self.addr, path)
    }

    /// GET /readyz: (status, body); (0, error) if the listener does not answer.
    pub fn readyz(&self) -> (u16, String) {
        self.get("/readyz").unwrap_or_else(|e| (0, e.to_string()))
    }

    /// Waits until `/readyz` answers 200; an error (with the last answer and the log's tail)
    /// if the process exits first or `within` passes.
    pub fn wait_ready(&mut self, within: Duration) -> Result<Duration, String> {
        self.wait_for(within, "/readyz 200", |a| match a.readyz() {
            (200, _) => Ok(()),
            (code, body) => Err(format!("/readyz {code} {:?}", body.trim())),
        })
    }

    /// Polls `check` every 10 ms until it is `Ok`; an error (naming `what`, with `check`'s
    /// last message and the log's tail) if the process exits first or `within` passes.
    pub fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&AgentProcess) -> Result<(), String>,
    ) -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.exited().map_err(|e| e.to_string())? {
                return Err(format!(
                    "ctreap run exited ({st}) after {:?}, waiting for {what}; log:\n{}",
                    self.age(),
                    self.log_tail(60)
                ));
            }
            let last = match check(self) {
                Ok(()) => return Ok(t.elapsed()),
                Err(m) => m,
            };
            if t.elapsed() > within {
                return Err(format!(
                    "no {what} after {within:?} (last: {last}); log:\n{}",
                    self.log_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM, with `kill -TERM` (no `unsafe` outside the socket/netns layer).
    pub fn sigterm(&self) -> io::Result<()> {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()?;
        if st.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -TERM {} failed ({st})",
                self.pid
            )))
        }
    }

    /// SIGTERM, then waits for the exit, killing the process after `kill_after`: how long the
    /// exit took and its status (`None`: killed).
    pub fn terminate(
        &mut self,
        kill_after: Duration,
    ) -> io::Result<(Duration, Option<ExitStatus>)> {
        if self.child.is_none() {
            return Err(io::Error::other("the agent was already stopped"));
        }
        self.sigterm()?;
        let t = Instant::now();
        let child = self.child.as_mut().expect("checked above");
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok((t.elapsed(), Some(st)));
            }
            if t.elapsed() > kill_after {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Ok((t.elapsed(), None));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// utime + stime of the process so far, in clock ticks (/proc/PID/stat fields 14 and 15).
    pub fn cpu_ticks(&self) -> io::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "/proc/PID/stat format");
        // The command name (field 2) may hold spaces: count from the closing parenthesis.
        let rest = stat
            .get(stat.rfind(')').ok_or_else(bad)? + 2..)
            .ok_or_else(bad)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state): utime is field 14 -> index 11.
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
        Ok(field(11)? + field(12)?)
    }

    /// A field of /proc/PID/status in KiB (VmHWM, VmRSS); `None` if absent.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
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

/// A free port on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `GET path` over a fresh HTTP/1.1 connection: (status, body), a chunked body decoded.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{addr}{path}: {m}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes a chunked HTTP/1.1 body; `None` if it is not one.
pub fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Removes `ESC [ ... letter` sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_and_bad_ones_do_not() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"5\r\nab"), None, "cut short");
        assert_eq!(dechunk(b"zz\r\n"), None, "not a size");
    }

    #[test]
    fn colour_escapes_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[2mts\u{1b}[0m INFO x"), "ts INFO x");
    }

    /// A chunked answer from a real socket: what the lab's old helper could not read.
    #[test]
    fn http_get_reads_a_chunked_answer() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).expect("request");
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nok\n\n\r\n0\r\n\r\n",
            )
            .expect("answer");
        });
        assert_eq!(http_get(addr, "/x").expect("get"), (200, "ok\n\n".into()));
        server.join().expect("server");
    }
}
