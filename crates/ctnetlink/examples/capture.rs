//! Captures ctnetlink messages from the running kernel as test fixtures
//! (`crates/ctnetlink/tests/fixtures`, used by `tests/codec_fixtures.rs`).
//!
//! Every fixture file `NAME.bin` holds exactly one netlink message as the kernel sent it (or as
//! conntrack-tools sent it, for `request`): `struct nlmsghdr`, then for ctnetlink messages
//! `struct nfgenmsg` and the attributes, byte for byte, including the sequence number and port id
//! of the capture. A sidecar `NAME.txt` names the kernel, the conntrack-tools version and the exact
//! commands that produced the fixture, and what conntrack-tools printed for it.
//!
//! It must run as root inside a fresh private network namespace, so that the table holds only
//! what the `--run` commands create; it refuses to touch the initial namespace:
//!
//! ```text
//! cargo build -p ctnetlink --example capture
//! unshare -n target/debug/examples/capture \
//!     --run 'conntrack -I -p udp -s 192.0.2.1 -d 198.18.0.10 --sport 5000 --dport 53 ...' \
//!     entry udp_dnat
//! ```
//!
//! `tests/fixtures/capture.sh` produces every fixture this way.
//!
//! Modes (what is sent, what is written):
//!
//! | mode | request | writes |
//! |---|---|---|
//! | `entry NAME` | CT_GET dump, AF_UNSPEC | the one CT_NEW message; `conntrack -L` lines from the same second |
//! | `done NAME` | CT_GET dump of an empty table | the NLMSG_DONE message |
//! | `stats NAME` | CT_GET_STATS | the reply; `conntrack -C` |
//! | `stats-cpu NAME` | CT_GET_STATS_CPU dump | `NAME-cpuN.bin` per CPU; `conntrack -S` |
//! | `destroy-event NAME` | (event socket, NFNLGRP_CONNTRACK_DESTROY) | the one DESTROY event; `conntrack -E` |
//! | `error-delete NAME` | CT_DELETE of a tuple that does not exist | the NLMSG_ERROR reply |
//! | `request NAME` | (none: runs `--traced CMD` under `strace -e write=`) | the one message CMD sent |

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ctnetlink::codec::message::{MessageIter, Reply, append_request};
use ctnetlink::codec::nla::align;
use ctnetlink::consts::*;
use netlink_sys::{Socket, SocketAddr};

const USAGE: &str = "usage: capture [--dir DIR] [--run CMD]... [--traced CMD] \
MODE NAME\n  MODE: entry | done | stats | stats-cpu | destroy-event | error-delete | request";

fn main() {
    if let Err(e) = run() {
        eprintln!("capture: {e}");
        std::process::exit(1);
    }
}

struct Args {
    dir: PathBuf,
    runs: Vec<String>,
    traced: Option<String>,
    mode: String,
    name: String,
    argv: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let mut runs = Vec::new();
    let mut traced = None;
    let mut pos = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--dir" => dir = PathBuf::from(value("--dir")?),
            "--run" => runs.push(value("--run")?),
            "--traced" => traced = Some(value("--traced")?),
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown flag {s}\n{USAGE}")),
            s => pos.push(s.to_owned()),
        }
    }
    let [mode, name] = <[String; 2]>::try_from(pos).map_err(|_| USAGE.to_owned())?;
    Ok(Args {
        dir,
        runs,
        traced,
        mode,
        name,
        argv,
    })
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    refuse_initial_netns()?;
    fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let mut sock = Nl::open()?;
    let before = sock.dump_entries()?;
    if !before.is_empty() {
        return Err(format!(
            "the conntrack table already holds {} entries: run in a fresh `unshare -n`",
            before.len()
        ));
    }

    let mut side = Sidecar::new(&args);
    let out = |suffix: &str| args.dir.join(format!("{}{suffix}", args.name));

    // The event socket must be subscribed before the commands run.
    let events = if args.mode == "destroy-event" {
        Some((
            Nl::events(NFNLGRP_CONNTRACK_DESTROY)?,
            spawn_event_listener()?,
        ))
    } else {
        None
    };
    for cmd in &args.runs {
        sh(cmd)?;
        side.kv("run", cmd);
    }

    match args.mode.as_str() {
        "entry" => {
            let (msg, lines) = entry_with_lines(&mut sock)?;
            write(&out(".bin"), &msg)?;
            side.file(&args.name, ".bin", "the CT_NEW message of the dump");
            side.kv("now_secs", &lines.now_secs.to_string());
            side.kv("conntrack-L", &lines.default);
            side.kv("conntrack-L-extended-id", &lines.extended);
        }
        "done" => {
            let msgs = sock.request_all(IPCTNL_MSG_CT_GET, NLM_F_DUMP, AF_UNSPEC)?;
            let [done] = <[Vec<u8>; 1]>::try_from(msgs)
                .map_err(|m| format!("expected only NLMSG_DONE, got {} messages", m.len()))?;
            expect_type(&done, NLMSG_DONE)?;
            write(&out(".bin"), &done)?;
            side.file(
                &args.name,
                ".bin",
                "the NLMSG_DONE ending a dump of an empty table",
            );
        }
        "stats" => {
            let msgs = sock.request_all(IPCTNL_MSG_CT_GET_STATS, 0, AF_UNSPEC)?;
            let reply = msgs
                .into_iter()
                .find(|m| msg_type(m) == ct_type(IPCTNL_MSG_CT_GET_STATS))
                .ok_or("no CT_GET_STATS reply")?;
            write(&out(".bin"), &reply)?;
            side.file(&args.name, ".bin", "the CT_GET_STATS reply");
            side.kv("conntrack-C", output(&["conntrack", "-C"])?.trim());
            side.kv(
                "nf_conntrack_max",
                output(&["sysctl", "-n", "net.netfilter.nf_conntrack_max"])?.trim(),
            );
        }
        "stats-cpu" => {
            let msgs = sock.request_all(IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_DUMP, AF_UNSPEC)?;
            for m in msgs
                .iter()
                .filter(|m| msg_type(m) == ct_type(IPCTNL_MSG_CT_GET_STATS_CPU))
            {
                // nfgenmsg res_id (big-endian) is the CPU number.
                let cpu = u16::from_be_bytes([m[18], m[19]]);
                let suffix = format!("-cpu{cpu}.bin");
                write(&out(&suffix), m)?;
                side.file(
                    &args.name,
                    &suffix,
                    &format!("the CT_GET_STATS_CPU reply for CPU {cpu}"),
                );
            }
            for line in output(&["conntrack", "-S"])?.lines() {
                side.kv("conntrack-S", line.trim_end());
            }
        }
        "destroy-event" => {
            let (mut ev, listener) = events.expect("opened above");
            let msgs = ev.collect_events(Duration::from_secs(1))?;
            let [msg] = <[Vec<u8>; 1]>::try_from(msgs)
                .map_err(|m| format!("expected one DESTROY event, got {}", m.len()))?;
            write(&out(".bin"), &msg)?;
            side.file(&args.name, ".bin", "the DESTROY event (CT_DELETE message)");
            side.kv("event-listener", "conntrack -E -e DESTROY");
            for line in stop_event_listener(listener)?.lines() {
                side.kv("conntrack-E", line.trim_end());
            }
        }
        "error-delete" => {
            sock.sock
                .set_cap_ack(true)
                .map_err(|e| format!("NETLINK_CAP_ACK: {e}"))?;
            let msgs = sock.request_delete_missing()?;
            let [err] = <[Vec<u8>; 1]>::try_from(msgs)
                .map_err(|m| format!("expected one NLMSG_ERROR, got {}", m.len()))?;
            expect_type(&err, NLMSG_ERROR)?;
            write(&out(".bin"), &err)?;
            side.file(
                &args.name,
                ".bin",
                "the NLMSG_ERROR answering CT_DELETE (NLM_F_REQUEST|NLM_F_ACK, NETLINK_CAP_ACK set, \
                 as the library's socket) of udp 192.0.2.99:9 -> 198.18.0.99:9, which does not exist",
            );
        }
        "request" => {
            let cmd = args.traced.as_deref().ok_or("request needs --traced CMD")?;
            let msg = strace_sent_message(cmd)?;
            write(&out(".bin"), &msg)?;
            side.kv("traced", cmd);
            side.file(
                &args.name,
                ".bin",
                "the message the traced command sent (strace -e write=)",
            );
        }
        m => return Err(format!("unknown mode {m}\n{USAGE}")),
    }
    write(&out(".txt"), side.text.as_bytes())?;
    eprintln!("capture: wrote {}", out(".txt").display());
    Ok(())
}

/// Fixtures must come from an empty private table: never run in the initial network namespace.
/// Where /proc/1 cannot be read (a sandbox), insist on a namespace with no interface but `lo`,
/// as `unshare -n` makes.
fn refuse_initial_netns() -> Result<(), String> {
    let me = fs::read_link("/proc/self/ns/net").map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    if let Ok(init) = fs::read_link("/proc/1/ns/net") {
        if me == init {
            return Err(
                "refusing to run in the initial network namespace: use `unshare -n`".into(),
            );
        }
        return Ok(());
    }
    let dev =
        fs::read_to_string("/proc/self/net/dev").map_err(|e| format!("/proc/self/net/dev: {e}"))?;
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    if ifaces != ["lo"] {
        return Err(format!(
            "this namespace has interfaces {ifaces:?}: run in a fresh `unshare -n`"
        ));
    }
    Ok(())
}

struct Sidecar {
    text: String,
}

impl Sidecar {
    fn new(args: &Args) -> Sidecar {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# Fixture {name}: see crates/ctnetlink/examples/capture.rs for the file format.\n\
             # Produced as root in a fresh private network namespace (`unshare -n`), in order:\n\
             # the `run:` commands, then the capture tool (`capture:`).",
            name = args.name
        );
        let mut side = Sidecar { text };
        side.kv("kernel", &uname_r());
        side.kv(
            "conntrack-tools",
            output(&["conntrack", "--version"])
                .unwrap_or_default()
                .trim(),
        );
        side.kv("netns", "unshare -n");
        let quoted: Vec<String> = args.argv.iter().map(|a| shell_quote(a)).collect();
        side.kv("capture", &format!("capture {}", quoted.join(" ")));
        side
    }

    /// One `key: value` line; a value never spans lines (the tests read the file line by line).
    fn kv(&mut self, key: &str, value: &str) {
        assert!(
            !value.contains('\n'),
            "sidecar value for {key} spans lines: {value:?}"
        );
        let _ = writeln!(self.text, "{key}: {value}");
    }

    fn file(&mut self, name: &str, suffix: &str, what: &str) {
        self.kv("file", &format!("{name}{suffix}: {what}"));
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn uname_r() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn sh(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("sh -c {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn output(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // conntrack prints its summary ("N flow entries have been shown") on stderr; keep stdout.
    String::from_utf8(out.stdout).map_err(|e| format!("{}: {e}", argv.join(" ")))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn msg_type(m: &[u8]) -> u16 {
    u16::from_ne_bytes([m[4], m[5]])
}

fn ct_type(msg: u8) -> u16 {
    ((NFNL_SUBSYS_CTNETLINK as u16) << 8) | msg as u16
}

fn expect_type(m: &[u8], ty: u16) -> Result<(), String> {
    if msg_type(m) == ty {
        Ok(())
    } else {
        Err(format!("expected message type {ty}, got {}", msg_type(m)))
    }
}

/// Splits a datagram into its netlink messages, as raw bytes.
fn split(mut buf: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(format!("bad nlmsg_len {len} with {} bytes left", buf.len()));
        }
        out.push(buf[..len].to_vec());
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

struct Lines {
    default: String,
    extended: String,
    now_secs: u64,
}

/// Dumps the table (one entry) and runs `conntrack -L` around the dump until both `conntrack -L`
/// runs print the same line within one wall-clock second: then the timeout (and delta-time) in
/// the line are those of the captured bytes.
fn entry_with_lines(sock: &mut Nl) -> Result<(Vec<u8>, Lines), String> {
    for _ in 0..20 {
        let t0 = now_secs();
        let first = output(&["conntrack", "-L"])?;
        let extended = output(&["conntrack", "-L", "-o", "extended,id"])?;
        let msgs = sock.dump_entries()?;
        let second = output(&["conntrack", "-L"])?;
        let t1 = now_secs();
        let [msg] = <[Vec<u8>; 1]>::try_from(msgs)
            .map_err(|m| format!("expected exactly one entry in the table, found {}", m.len()))?;
        if first == second && t0 == t1 {
            let one = |s: &str| -> Result<String, String> {
                let lines: Vec<&str> = s.lines().collect();
                match lines[..] {
                    [l] => Ok(l.trim_end().to_owned()),
                    _ => Err(format!("conntrack -L printed {} lines", lines.len())),
                }
            };
            return Ok((
                msg,
                Lines {
                    default: one(&first)?,
                    extended: one(&extended)?,
                    now_secs: t0,
                },
            ));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    Err("could not get a dump and conntrack -L within one second".into())
}

fn spawn_event_listener() -> Result<Child, String> {
    let child = Command::new("conntrack")
        .args(["-E", "-e", "DESTROY"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("conntrack -E: {e}"))?;
    // Give it time to subscribe before the commands run.
    std::thread::sleep(Duration::from_millis(300));
    Ok(child)
}

/// Stops `conntrack -E` with SIGINT (it flushes its output and exits) and returns what it printed.
fn stop_event_listener(mut child: Child) -> Result<String, String> {
    std::thread::sleep(Duration::from_millis(300));
    sh(&format!("kill -INT {}", child.id()))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout")?
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Runs `cmd` under `strace -e write=` on every fd and returns the one netlink message it sent.
fn strace_sent_message(cmd: &str) -> Result<Vec<u8>, String> {
    let log = std::env::temp_dir().join(format!("capture-strace-{}.log", std::process::id()));
    let fds: Vec<String> = (3..16).map(|n| n.to_string()).collect();
    let st = Command::new("strace")
        .args(["-xx", "-e", "trace=sendto,sendmsg", "-e"])
        .arg(format!("write={}", fds.join(",")))
        .arg("-o")
        .arg(&log)
        // `exec`: strace follows only the process it started, not children.
        .args(["sh", "-c", &format!("exec {cmd}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("strace: {e}"))?;
    let text = fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let _ = fs::remove_file(&log);
    if !st.success() {
        return Err(format!("`{cmd}` under strace failed ({st}):\n{text}"));
    }
    // strace's hex dump lines: " | 00000  9c 00 00 00 ... 00  ascii... |"; the hex columns are
    // the 49 characters after the offset.
    let mut sends = Vec::new();
    for line in text.lines() {
        if line.starts_with("sendto(") || line.starts_with("sendmsg(") {
            sends.push(Vec::new());
        } else if let Some(rest) = line.strip_prefix(" | ")
            && let Some(cur) = sends.last_mut()
        {
            let hex = rest
                .get(7..56)
                .ok_or_else(|| format!("short dump line {line:?}"))?;
            for tok in hex.split_whitespace() {
                cur.push(u8::from_str_radix(tok, 16).map_err(|e| format!("{tok:?}: {e}"))?);
            }
        }
    }
    let [sent] = <[Vec<u8>; 1]>::try_from(sends)
        .map_err(|s| format!("expected one send, strace saw {}:\n{text}", s.len()))?;
    let [msg] = <[Vec<u8>; 1]>::try_from(split(&sent)?)
        .map_err(|m| format!("expected one message in the send, got {}", m.len()))?;
    Ok(msg)
}

/// A raw NETLINK_NETFILTER socket: the library's framing, but every received message is kept as
/// bytes.
struct Nl {
    sock: Socket,
    seq: u32,
}

impl Nl {
    fn open() -> Result<Nl, String> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("socket: {e}"))?;
        sock.bind_auto().map_err(|e| format!("bind: {e}"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| format!("connect: {e}"))?;
        Ok(Nl { sock, seq: 0 })
    }

    fn events(group: u32) -> Result<Nl, String> {
        let nl = Nl::open()?;
        nl.sock
            .add_membership(group)
            .map_err(|e| format!("joining group {group}: {e}"))?;
        Ok(nl)
    }

    fn recv(&self) -> Result<Vec<u8>, String> {
        let mut buf = Vec::with_capacity(64 * 1024);
        self.sock
            .recv(&mut buf, 0)
            .map_err(|e| format!("recv: {e}"))?;
        Ok(buf)
    }

    /// Sends a request with no attributes and returns every message of the answer, up to and
    /// including NLMSG_DONE (dumps) or the reply that ends it.
    fn request_all(&mut self, msg: u8, flags: u16, family: u8) -> Result<Vec<Vec<u8>>, String> {
        self.seq += 1;
        let mut req = Vec::new();
        append_request(
            &mut req,
            msg,
            NLM_F_REQUEST | flags,
            self.seq,
            family,
            NFNETLINK_V0,
            |_| {},
        );
        self.sock.send(&req, 0).map_err(|e| format!("send: {e}"))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let buf = self.recv()?;
            let msgs = split(&buf)?;
            let mut end = !dump;
            for m in msgs {
                let ty = msg_type(&m);
                end |= ty == NLMSG_DONE || ty == NLMSG_ERROR;
                out.push(m);
            }
            if end {
                return Ok(out);
            }
        }
    }

    /// The CT_NEW messages of a full dump.
    fn dump_entries(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let msgs = self.request_all(IPCTNL_MSG_CT_GET, NLM_F_DUMP, AF_UNSPEC)?;
        let mut out = Vec::new();
        for m in msgs {
            match MessageIter::new(&m).next() {
                Some(Ok(r)) => match r.reply {
                    Reply::Conntrack(_) => out.push(m),
                    Reply::Error(e) => return Err(format!("dump failed: errno {e}")),
                    _ => {}
                },
                Some(Err(e)) => return Err(format!("undecodable message in dump: {e}")),
                None => {}
            }
        }
        Ok(out)
    }

    fn request_delete_missing(&mut self) -> Result<Vec<Vec<u8>>, String> {
        self.seq += 1;
        let tuple = ctnetlink::Tuple::new(
            [192, 0, 2, 99].into(),
            [198, 18, 0, 99].into(),
            ctnetlink::L4::ports(IPPROTO_UDP, 9, 9),
        );
        let mut req = Vec::new();
        append_request(
            &mut req,
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            self.seq,
            AF_INET,
            NFNETLINK_V0,
            |w| w.nested(CTA_TUPLE_ORIG, |w| tuple.emit(w)),
        );
        self.sock.send(&req, 0).map_err(|e| format!("send: {e}"))?;
        split(&self.recv()?)
    }

    /// Reads event datagrams until none arrives for `quiet` (polling a non-blocking socket, so
    /// this tool needs no `unsafe`).
    fn collect_events(&mut self, quiet: Duration) -> Result<Vec<Vec<u8>>, String> {
        self.sock
            .set_non_blocking(true)
            .map_err(|e| format!("O_NONBLOCK: {e}"))?;
        let mut out = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            let mut buf = Vec::with_capacity(64 * 1024);
            match self.sock.recv(&mut buf, 0) {
                Ok(_) => {
                    out.extend(split(&buf)?);
                    last = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        Ok(out)
    }
}
