//! The ctnetlink benchmark: a program, not a timed test (`harness = false`).
//!
//! ```text
//! cargo bench -p ctnetlink --bench conntrack [-- --entries N --runs R --backends B]
//! ```
//!
//! It creates a private network namespace (`ip netns add ctreap-bench-PID`), fills its conntrack
//! table with N NAT entries spread evenly over B backends (`client:port -> 198.18.0.10:80`, reply
//! source = the backend pod `10.244.b.10:8080`), and measures, R times each, median/min/max:
//!
//! 1. listing the whole table: this library (`Conntrack::dump`, every entry decoded) against
//!    `conntrack -L`, against a bare receive loop (the kernel's own cost, the floor) and
//!    `ctreap conntrack list` when target/release/ctreap is built;
//! 2. deleting every entry of one backend (reply source = the pod, N/B entries):
//!    `Conntrack::flush` (auto: the kernel's filtered flush on Linux >= 6.12) against
//!    `conntrack -D -r IP`, against a kube-proxy-style dump plus one acked CT_DELETE per entry,
//!    against the forced dump-delete path, and against the bare filtered flush (the floor);
//! 3. the peak RSS of a full list, in a child process so that filling the table does not count.
//!
//! It prints a table and PASS/FAIL per target (never exiting non-zero for a FAIL: the figures
//! are noisy on a shared machine, the ratios are what to read), and writes every raw sample to
//! `target/bench/conntrack.json`. A wrong count (an operation that deleted or listed more or
//! fewer entries than it should) fails the run loudly.
//!
//! Needs root: `ip netns`, and `nf_conntrack_max` / `nf_conntrack_buckets`, which are global and
//! writable only from the initial namespace. Whatever it changes (the namespace, the two
//! sysctls) is undone on exit, on error, on panic (guards), and on SIGINT/SIGTERM/SIGHUP (a flag
//! checked between operations turns the signal into an error, so the guards run).

use std::fs;
use std::hint::black_box;
use std::io::{BufWriter, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ctnetlink::codec::format::write_conntrack_line;
use ctnetlink::codec::message::append_request;
use ctnetlink::consts::*;
use ctnetlink::{Conntrack, Entry, Filter, FlushPath, L4, Netns, ProtoInfo, TcpInfo, Tuple};
use netlink_sys::{Socket, SocketAddr};
use serde_json::{Value, json};

const USAGE: &str = "usage: cargo bench -p ctnetlink --bench conntrack [-- --entries N] [--runs R] [--backends B] [--only list,rss,delete]";
const GROUPS: [&str; 3] = ["list", "rss", "delete"];

/// The Service every flow was sent to, and the port the backends listen on.
const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const SERVICE_PORT: u16 = 80;
const POD_PORT: u16 = 8080;
/// Clients: 100.64.0.0/10, PORTS_PER_CLIENT source ports each, so every flow is unique.
const CLIENT_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
const PORTS_PER_CLIENT: u64 = 50_000;
const FIRST_CLIENT_PORT: u16 = 10_000;
/// Long enough that nothing expires during a run.
const TIMEOUT_S: u32 = 3600;
/// Entries per create_batch call while filling.
const FILL_CHUNK: usize = 8192;

const NF_CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const NF_CONNTRACK_HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";
const NF_CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    entries: u64,
    runs: usize,
    backends: u32,
    /// Hidden: list the table of this namespace and report VmHWM (the peak-RSS child).
    child_list: Option<String>,
    /// Measure only these groups (default: all).
    only: Vec<String>,
}

impl Args {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        entries: 1_000_000,
        runs: 5,
        backends: 10,
        child_list: None,
        only: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn num<T: std::str::FromStr>(v: &str, name: &str) -> Result<T, String> {
            v.replace('_', "")
                .parse()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        }
        match flag.as_str() {
            "--entries" => a.entries = num(&value("--entries")?, "--entries")?,
            "--runs" => a.runs = num(&value("--runs")?, "--runs")?,
            "--backends" => a.backends = num(&value("--backends")?, "--backends")?,
            "--child-list" => a.child_list = Some(value("--child-list")?),
            "--only" => {
                for g in value("--only")?.split(',') {
                    if !GROUPS.contains(&g) {
                        return Err(format!("--only: unknown group {g:?} (list, rss, delete)"));
                    }
                    a.only.push(g.to_string());
                }
            }
            // `cargo bench` passes --bench to every harness = false target.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // A name filter (`cargo bench -p ctnetlink conntrack`): there is one benchmark.
            f if !f.starts_with('-') => {}
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if a.backends == 0 || a.backends > 4096 {
        return Err("--backends must be between 1 and 4096".into());
    }
    if a.entries < a.backends as u64 || a.entries > 50_000_000 {
        return Err("--entries must be between --backends and 50000000".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("conntrack bench: {msg}");
            std::process::exit(64);
        }
    };
    let res = match &args.child_list {
        Some(ns) => child_list(ns),
        None => {
            install_signal_handlers();
            run(&args)
        }
    };
    if let Err(e) = res {
        eprintln!("conntrack bench: FAILED: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Signals: a flag checked between operations, so that Ctrl-C still runs the guards.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; signal(2)
        // with a valid signal number and an `extern "C" fn(c_int)` handler.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted by a signal; cleaning up");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Guards: the namespace and the global sysctls.

/// A line on stderr that never panics: guards log from `drop`, possibly while unwinding from a
/// panic (a closed stdout makes `println!` panic, and a second panic would abort before the
/// remaining guards ran).
fn note(msg: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// `ip netns add NAME`, and `ip netns del NAME` on drop.
struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    fn add(name: &str) -> Result<NetnsGuard> {
        let st = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .context("running `ip netns add` (is iproute2 installed?)")?;
        ensure!(
            st.success(),
            "`ip netns add {name}` failed ({st}); needs root"
        );
        Ok(NetnsGuard { name: name.into() })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
        {
            Ok(st) if st.success() => note(format_args!("removed network namespace {}", self.name)),
            Ok(st) => note(format_args!(
                "WARNING: `ip netns del {}` failed ({st})",
                self.name
            )),
            Err(e) => note(format_args!("WARNING: `ip netns del {}`: {e}", self.name)),
        }
    }
}

/// Namespaces left by a benchmark that was killed (SIGKILL skips the guards): their PID is gone.
fn remove_stale_namespaces() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for d in dir.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("ctreap-bench-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let ok = Command::new("ip")
                .args(["netns", "del", &name])
                .status()
                .is_ok_and(|s| s.success());
            println!(
                "removed stale namespace {name} of a dead benchmark: {}",
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
}

/// Raises global knobs and puts the old values back on drop.
#[derive(Default)]
struct Knobs {
    restore: Vec<(&'static str, String)>,
    changes: Vec<Value>,
}

fn read_u64(path: &str) -> Result<u64> {
    let s = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    s.trim()
        .parse()
        .with_context(|| format!("{path}: {s:?} is not a number"))
}

impl Knobs {
    fn raise(&mut self, path: &'static str, want: u64) -> Result<()> {
        let cur = read_u64(path)?;
        if cur >= want {
            println!("{path} = {cur} (enough for this run, unchanged)");
            self.changes
                .push(json!({"path": path, "before": cur, "during": cur}));
            return Ok(());
        }
        fs::write(path, want.to_string()).with_context(|| {
            format!("raising {path} to {want} (global; needs root in the initial namespace)")
        })?;
        self.restore.push((path, cur.to_string()));
        let now = read_u64(path)?;
        println!("raised {path}: {cur} -> {now} (global; restored at exit)");
        self.changes
            .push(json!({"path": path, "before": cur, "during": now}));
        Ok(())
    }
}

impl Drop for Knobs {
    fn drop(&mut self) {
        for (path, v) in self.restore.iter().rev() {
            match fs::write(path, v) {
                Ok(()) => note(format_args!("restored {path} = {v}")),
                Err(e) => note(format_args!(
                    "WARNING: could not restore {path} to {v}: {e}"
                )),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workload: N NAT entries, entry i belongs to backend i % B.

#[derive(Debug, Clone, Copy)]
struct Workload {
    entries: u64,
    backends: u32,
}

impl Workload {
    /// 10.244.b.10 (the pod IP the Service DNATs to).
    fn backend_ip(&self, b: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 10)) + (b << 8))
    }

    /// Entries of backend `b`: ceil((N - b) / B).
    fn per_backend(&self, b: u32) -> u64 {
        (self.entries - u64::from(b)).div_ceil(u64::from(self.backends))
    }

    fn indices_of(&self, b: u32) -> impl Iterator<Item = u64> + use<> {
        (u64::from(b)..self.entries).step_by(self.backends as usize)
    }

    /// `client:port -> 198.18.0.10:80`, DNATed to `10.244.b.10:8080`; half UDP, half TCP
    /// (ESTABLISHED) in every backend.
    fn entry(&self, i: u64) -> Entry {
        let b = (i % u64::from(self.backends)) as u32;
        let backend = self.backend_ip(b);
        let client = Ipv4Addr::from(u32::from(CLIENT_BASE) + (i / PORTS_PER_CLIENT) as u32);
        let port = FIRST_CLIENT_PORT + (i % PORTS_PER_CLIENT) as u16;
        let tcp = (i / u64::from(self.backends)) % 2 == 1;
        let num = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        let orig = Tuple::new(
            client.into(),
            SERVICE.into(),
            L4::ports(num, port, SERVICE_PORT),
        );
        let reply = Tuple::new(
            backend.into(),
            client.into(),
            L4::ports(num, POD_PORT, port),
        );
        let mut e = Entry::new(orig, reply);
        e.timeout = Some(TIMEOUT_S);
        e.status = IPS_SEEN_REPLY | IPS_ASSURED;
        if tcp {
            e.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
                state: TCP_CONNTRACK_ESTABLISHED,
                ..TcpInfo::default()
            }));
        }
        e
    }
}

/// Creates the entries of `indices` with `create_batch`, FILL_CHUNK at a time; every one must
/// be accepted.
fn create_entries(
    ct: &mut Conntrack,
    w: &Workload,
    indices: impl Iterator<Item = u64>,
    progress: bool,
) -> Result<u64> {
    let mut chunk = Vec::with_capacity(FILL_CHUNK);
    let mut created = 0u64;
    let mut next_report = 100_000u64;
    let progress = progress && std::io::stderr().is_terminal();
    let mut send = |chunk: &mut Vec<Entry>, created: &mut u64| -> Result<()> {
        let r = ct.create_batch(chunk).context("create_batch")?;
        if let Some((idx, err)) = r.failed.first() {
            bail!(
                "creating {} -> {}: {err} ({} of {} failed)",
                chunk[*idx].orig.src,
                chunk[*idx].reply.src,
                r.failed.len(),
                chunk.len()
            );
        }
        ensure!(
            r.ok == chunk.len() as u64,
            "create_batch accepted {} of {}",
            r.ok,
            chunk.len()
        );
        *created += r.ok;
        chunk.clear();
        check_interrupted()
    };
    for i in indices {
        chunk.push(w.entry(i));
        if chunk.len() == FILL_CHUNK {
            send(&mut chunk, &mut created)?;
            if progress && created >= next_report {
                eprint!("\r  created {created} / {}", w.entries);
                next_report += 100_000;
            }
        }
    }
    if !chunk.is_empty() {
        send(&mut chunk, &mut created)?;
    }
    if progress && created >= 100_000 {
        eprintln!();
    }
    Ok(created)
}

fn table_count(ct: &mut Conntrack) -> Result<u64> {
    Ok(u64::from(ct.stats().context("CT_GET_STATS")?.entries))
}

// ---------------------------------------------------------------------------------------------
// The operations.

struct Bench {
    ns_name: String,
    ct: Conntrack,
    /// A plain netlink socket in the namespace, for the receive-only floor.
    raw: Socket,
    raw_buf: Vec<u8>,
    raw_seq: u32,
    w: Workload,
    ctreap: Option<PathBuf>,
    conntrack_tools: bool,
    time_v: bool,
    /// The kube-proxy-style delete's last (dump, deletes) split, in seconds.
    kube_proxy_phases: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListOp {
    Floor,
    DumpRaw,
    Decode,
    ConntrackTools,
    CtreapCli,
}

impl ListOp {
    fn key(self) -> &'static str {
        match self {
            ListOp::Floor => "list_floor_recv_only",
            ListOp::DumpRaw => "list_dump_raw_no_decode",
            ListOp::Decode => "list_ctnetlink_dump",
            ListOp::ConntrackTools => "list_conntrack_tools",
            ListOp::CtreapCli => "list_ctreap_cli",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ListOp::Floor => "receive-only loop, no parsing (floor)",
            ListOp::DumpRaw => "ctnetlink dump_raw, no-op callback",
            ListOp::Decode => "ctnetlink dump, every entry decoded",
            ListOp::ConntrackTools => "conntrack -L > /dev/null",
            ListOp::CtreapCli => "ctreap conntrack list > /dev/null",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeleteOp {
    KernelFlush,
    Flush,
    DumpDelete,
    ConntrackTools,
    KubeProxy,
}

impl DeleteOp {
    fn key(self) -> &'static str {
        match self {
            DeleteOp::KernelFlush => "delete_kernel_flush_bare",
            DeleteOp::Flush => "delete_ctnetlink_flush",
            DeleteOp::DumpDelete => "delete_ctnetlink_dump_delete",
            DeleteOp::ConntrackTools => "delete_conntrack_tools",
            DeleteOp::KubeProxy => "delete_kube_proxy_style",
        }
    }

    fn label(self) -> &'static str {
        match self {
            DeleteOp::KernelFlush => "kernel filtered flush, bare (floor)",
            DeleteOp::Flush => "ctnetlink flush (auto path)",
            DeleteOp::DumpDelete => "ctnetlink flush, forced dump-delete",
            DeleteOp::ConntrackTools => "conntrack -D -r IP",
            DeleteOp::KubeProxy => "kube-proxy style: dump + 1 acked delete each",
        }
    }
}

/// "N flow entries have been VERB." from conntrack-tools or ctreap on stderr.
fn reported_count(stderr: &str, verb: &str) -> Option<u64> {
    let tail = format!(" flow entries have been {verb}");
    stderr.lines().find_map(|l| {
        let head = &l[..l.find(&tail)?];
        head.rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Runs a command with stdout to /dev/null; returns (seconds, stderr).
fn timed_command(cmd: &mut Command) -> Result<(f64, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let dt = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        stderr.trim()
    );
    Ok((dt, stderr))
}

fn in_netns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

impl Bench {
    /// The floor: one CT_GET dump request on a plain socket, datagrams received into one
    /// 64 KiB buffer (as the library's), only the nlmsghdr lengths and types walked (to count
    /// the entries and find NLMSG_DONE), nothing decoded.
    fn raw_dump(&mut self) -> Result<u64> {
        self.raw_seq = self.raw_seq.wrapping_add(1);
        let seq = self.raw_seq;
        let mut req = Vec::with_capacity(32);
        append_request(
            &mut req,
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            AF_UNSPEC,
            NFNETLINK_V0,
            |_| {},
        );
        self.raw.send(&req, 0).context("send dump request")?;
        let buf = &mut self.raw_buf;
        let mut n = 0u64;
        loop {
            buf.clear();
            let len = match self.raw.recv(buf, 0) {
                Ok(len) => len.min(buf.len()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("recv"),
            };
            let mut off = 0;
            while off + NLMSG_HDRLEN <= len {
                let mlen = u32::from_ne_bytes(buf[off..off + 4].try_into()?) as usize;
                let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into()?);
                let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into()?);
                ensure!(
                    mlen >= NLMSG_HDRLEN && off + mlen <= len,
                    "malformed nlmsghdr"
                );
                if mseq == seq {
                    match ty {
                        NLMSG_DONE => return Ok(n),
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes(
                                buf.get(off + 16..off + 20)
                                    .context("short NLMSG_ERROR")?
                                    .try_into()?,
                            );
                            bail!("dump answered errno {}", -code);
                        }
                        _ => n += 1,
                    }
                }
                off += (mlen + 3) & !3;
            }
        }
    }

    fn list(&mut self, op: ListOp) -> Result<f64> {
        let want = self.w.entries;
        let (dt, got) = match op {
            ListOp::Floor => {
                let t = Instant::now();
                let n = self.raw_dump()?;
                (t.elapsed().as_secs_f64(), n)
            }
            ListOp::DumpRaw => {
                let mut n = 0u64;
                let t = Instant::now();
                let intr = self.ct.dump_raw(
                    AF_UNSPEC,
                    |_| {},
                    |m| {
                        black_box(m);
                        n += 1;
                        ControlFlow::Continue(())
                    },
                )?;
                let dt = t.elapsed().as_secs_f64();
                ensure!(!intr, "dump interrupted (NLM_F_DUMP_INTR)");
                (dt, n)
            }
            ListOp::Decode => {
                let mut n = 0u64;
                let t = Instant::now();
                let s = self.ct.dump(&Filter::default(), |e| {
                    black_box(e);
                    n += 1;
                    ControlFlow::Continue(())
                })?;
                let dt = t.elapsed().as_secs_f64();
                ensure!(
                    s.decode_errors == 0,
                    "{} decode errors, first: {:?}",
                    s.decode_errors,
                    s.first_decode_error
                );
                ensure!(!s.interrupted, "dump interrupted (NLM_F_DUMP_INTR)");
                ensure!(
                    s.entries == n,
                    "summary says {} entries, saw {n}",
                    s.entries
                );
                (dt, n)
            }
            ListOp::ConntrackTools => {
                let (dt, err) = timed_command(in_netns(&self.ns_name, "conntrack").arg("-L"))?;
                let n = reported_count(&err, "shown")
                    .with_context(|| format!("conntrack -L printed no count: {err:?}"))?;
                (dt, n)
            }
            ListOp::CtreapCli => {
                let bin = self.ctreap.as_ref().context("no ctreap binary")?;
                let (dt, err) = timed_command(Command::new(bin).args([
                    "conntrack",
                    "list",
                    "--netns",
                    &self.ns_name,
                    "-o",
                    "conntrack",
                ]))?;
                let n = reported_count(&err, "shown")
                    .with_context(|| format!("ctreap printed no count: {err:?}"))?;
                (dt, n)
            }
        };
        ensure!(
            got == want,
            "WRONG COUNT: {} listed {got} entries, the table holds {want}",
            op.label()
        );
        Ok(dt)
    }

    /// Deletes every entry whose reply source is `ip`; returns (seconds, the count the method
    /// itself reported, if it reports one).
    fn delete(&mut self, op: DeleteOp, ip: Ipv4Addr) -> Result<(f64, Option<u64>)> {
        let filter = Filter {
            reply_src: Some(IpAddr::V4(ip)),
            ..Filter::default()
        };
        match op {
            DeleteOp::KernelFlush => {
                let t = Instant::now();
                self.ct.kernel_flush(AF_INET, &filter)?;
                Ok((t.elapsed().as_secs_f64(), None))
            }
            DeleteOp::Flush | DeleteOp::DumpDelete => {
                let (forced, want_path) = match op {
                    DeleteOp::Flush => (None, FlushPath::Kernel),
                    _ => (Some(FlushPath::DumpDelete), FlushPath::DumpDelete),
                };
                self.ct.force_flush_path(forced);
                let t = Instant::now();
                let r = self.ct.flush(&filter);
                let dt = t.elapsed().as_secs_f64();
                self.ct.force_flush_path(None);
                let r = r?;
                ensure!(
                    r.path == want_path,
                    "{} took the {} path, expected {}",
                    op.label(),
                    r.path.as_str(),
                    want_path.as_str()
                );
                ensure!(!r.dump_interrupted, "dump interrupted (NLM_F_DUMP_INTR)");
                Ok((dt, Some(r.deleted)))
            }
            DeleteOp::ConntrackTools => {
                let ips = ip.to_string();
                let (dt, err) =
                    timed_command(in_netns(&self.ns_name, "conntrack").args(["-D", "-r", &ips]))?;
                let n = reported_count(&err, "deleted")
                    .with_context(|| format!("conntrack -D printed no count: {err:?}"))?;
                Ok((dt, Some(n)))
            }
            DeleteOp::KubeProxy => {
                // What kube-proxy does (vishvananda/netlink ConntrackDeleteFilters): dump the
                // whole table, decode and match every flow in userspace, then one CT_DELETE
                // per match, each a request of its own waiting for its ack.
                let t = Instant::now();
                let mut matches = Vec::new();
                let s = self.ct.dump(&Filter::default(), |e| {
                    if e.reply.src == IpAddr::V4(ip) {
                        matches.push((e.orig, e.zone));
                    }
                    ControlFlow::Continue(())
                })?;
                let dumped = t.elapsed().as_secs_f64();
                let mut deleted = 0u64;
                for (tuple, zone) in &matches {
                    if self.ct.delete(tuple, *zone)? {
                        deleted += 1;
                    }
                }
                let dt = t.elapsed().as_secs_f64();
                self.kube_proxy_phases = Some((dumped, dt - dumped));
                ensure!(!s.interrupted, "dump interrupted (NLM_F_DUMP_INTR)");
                Ok((dt, Some(deleted)))
            }
        }
    }

    /// Peak RSS (MiB) of a full list in a child process: this program re-executed with
    /// `--child-list` (dump, decode, format every entry as a `conntrack -L` line to
    /// /dev/null), reading its own VmHWM at the end.
    fn rss_child(&self) -> Result<f64> {
        let exe = std::env::current_exe().context("current_exe")?;
        let out = Command::new(&exe)
            .args(["--child-list", &self.ns_name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running the --child-list child")?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "child list failed ({}): {}",
            out.status,
            err.trim()
        );
        let line = err
            .lines()
            .find_map(|l| l.strip_prefix("CHILD-RESULT "))
            .with_context(|| format!("child printed no result: {err:?}"))?;
        let v: Value = serde_json::from_str(line).context("child result")?;
        let n = v["entries"].as_u64().context("child: entries")?;
        ensure!(
            n == self.w.entries,
            "WRONG COUNT: the child listed {n} entries, the table holds {}",
            self.w.entries
        );
        Ok(v["vm_hwm_kib"].as_f64().context("child: vm_hwm_kib")? / 1024.0)
    }

    /// Peak RSS (MiB) of a command under `/usr/bin/time -v` ("Maximum resident set size").
    fn rss_time_v(&self, argv: &[&str]) -> Result<f64> {
        let (_, err) = timed_command(Command::new("/usr/bin/time").arg("-v").args(argv))?;
        let kib: f64 = err
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes):")
                    .map(|v| v.trim().parse().ok())
            })
            .flatten()
            .with_context(|| format!("no maximum RSS in /usr/bin/time output: {err:?}"))?;
        ensure!(
            reported_count(&err, "shown") == Some(self.w.entries),
            "WRONG COUNT: {argv:?} did not list {} entries: {err:?}",
            self.w.entries
        );
        Ok(kib / 1024.0)
    }
}

/// Appends a sample to the series `key`.
fn record(all: &mut [Series], key: &str, v: f64) {
    all.iter_mut()
        .find(|s| s.key == key)
        .expect("series declared before it is recorded")
        .samples
        .push(v);
}

/// What the delete group did besides timing: which backend each run deleted, and how long each
/// re-creation of its entries took.
#[derive(Default)]
struct DeleteLog {
    backends: Vec<String>,
    refill_s: Vec<f64>,
    /// The kube-proxy-style runs split into (dump seconds, delete seconds).
    kube_proxy_phases: Vec<(f64, f64)>,
}

impl Bench {
    /// Group 1: list the whole table, every method once per run, the order rotated each run.
    fn measure_list(&mut self, runs: usize, all: &mut Vec<Series>) -> Result<()> {
        let mut ops = vec![ListOp::Floor, ListOp::DumpRaw, ListOp::Decode];
        if self.conntrack_tools {
            ops.push(ListOp::ConntrackTools);
        }
        if self.ctreap.is_some() {
            ops.push(ListOp::CtreapCli);
        }
        for op in &ops {
            all.push(Series::new("list", op.key(), op.label(), "s"));
        }
        // One untimed warm-up list, so the first timed run does not pay for cold caches alone.
        self.list(ListOp::Decode)?;
        println!("list: {runs} runs ...");
        for r in 0..runs {
            let mut order = ops.clone();
            let len = order.len();
            order.rotate_left(r % len);
            for op in order {
                check_interrupted()?;
                let dt = self.list(op)?;
                eprintln!("  run {r}: {:<46} {}", op.label(), fmt_value(dt, "s"));
                record(all, op.key(), dt);
            }
        }
        Ok(())
    }

    /// Group 3: peak RSS of a full list, in child processes (filling the table is not counted).
    fn measure_rss(&mut self, runs: usize, all: &mut Vec<Series>) -> Result<()> {
        let tools = self.time_v && self.conntrack_tools;
        let ctreap = self
            .ctreap
            .clone()
            .filter(|_| self.time_v)
            .map(|p| p.to_string_lossy().into_owned());
        let ns = self.ns_name.clone();
        all.push(Series::new(
            "rss",
            "rss_ctnetlink_list",
            "ctnetlink list (child: dump, decode, format)",
            "MiB",
        ));
        if tools {
            all.push(Series::new(
                "rss",
                "rss_conntrack_tools",
                "conntrack -L (/usr/bin/time -v)",
                "MiB",
            ));
        }
        if ctreap.is_some() {
            all.push(Series::new(
                "rss",
                "rss_ctreap_cli",
                "ctreap conntrack list (/usr/bin/time -v)",
                "MiB",
            ));
        }
        println!("peak RSS: {runs} runs ...");
        for r in 0..runs {
            check_interrupted()?;
            let mib = self.rss_child()?;
            eprintln!("  run {r}: ctnetlink list child {mib:.1} MiB");
            record(all, "rss_ctnetlink_list", mib);
            if tools {
                let mib = self.rss_time_v(&["ip", "netns", "exec", &ns, "conntrack", "-L"])?;
                eprintln!("  run {r}: conntrack -L {mib:.1} MiB");
                record(all, "rss_conntrack_tools", mib);
            }
            if let Some(bin) = &ctreap {
                let argv = [bin, "conntrack", "list", "--netns", &ns, "-o", "conntrack"];
                let mib = self.rss_time_v(&argv)?;
                eprintln!("  run {r}: ctreap conntrack list {mib:.1} MiB");
                record(all, "rss_ctreap_cli", mib);
            }
        }
        Ok(())
    }

    /// Group 2: delete one backend's entries (run r deletes backend r % B), every method once
    /// per run, the order rotated. Each delete is checked against the table's count (exactly
    /// N/B gone) and against the method's own report; then only that backend's entries are
    /// re-created.
    fn measure_delete(&mut self, runs: usize, all: &mut Vec<Series>) -> Result<DeleteLog> {
        let w = self.w;
        let mut ops = vec![DeleteOp::KernelFlush, DeleteOp::Flush, DeleteOp::DumpDelete];
        if self.conntrack_tools {
            ops.push(DeleteOp::ConntrackTools);
        }
        ops.push(DeleteOp::KubeProxy);
        for op in &ops {
            all.push(Series::new("delete", op.key(), op.label(), "s"));
        }
        let mut log = DeleteLog::default();
        // One untimed delete and re-creation first, as the list group's warm-up: the first
        // delete after the fill frees slab pages the timed runs should not pay for alone.
        let warm = w.backend_ip(0);
        self.ct.flush(&Filter {
            reply_src: Some(IpAddr::V4(warm)),
            ..Filter::default()
        })?;
        create_entries(&mut self.ct, &w, w.indices_of(0), false)?;
        let count = table_count(&mut self.ct)?;
        ensure!(
            count == w.entries,
            "after the warm-up delete of {warm}: the table holds {count}, wanted {}",
            w.entries
        );
        println!("delete one backend: {runs} runs ...");
        for r in 0..runs {
            let backend = (r % w.backends as usize) as u32;
            let ip = w.backend_ip(backend);
            let expected = w.per_backend(backend);
            log.backends.push(ip.to_string());
            let mut order = ops.clone();
            let len = order.len();
            order.rotate_left(r % len);
            for op in order {
                check_interrupted()?;
                let before = table_count(&mut self.ct)?;
                ensure!(
                    before == w.entries,
                    "table holds {before} entries before {}, wanted {}",
                    op.label(),
                    w.entries
                );
                let (dt, reported) = self.delete(op, ip)?;
                let gone = before - table_count(&mut self.ct)?;
                ensure!(
                    gone == expected,
                    "WRONG COUNT: {} removed {gone} entries of backend {ip}, wanted exactly {expected}",
                    op.label()
                );
                if let Some(n) = reported {
                    ensure!(
                        n == expected,
                        "WRONG COUNT: {} reported {n} deleted for backend {ip}, {expected} went",
                        op.label()
                    );
                }
                let phases = match self.kube_proxy_phases.take() {
                    Some((d, x)) if op == DeleteOp::KubeProxy => {
                        log.kube_proxy_phases.push((d, x));
                        format!(
                            "; dump {}, deletes {}",
                            fmt_value(d, "s"),
                            fmt_value(x, "s")
                        )
                    }
                    _ => String::new(),
                };
                eprintln!(
                    "  run {r}: {:<46} {} ({gone} deleted, backend {ip}{phases})",
                    op.label(),
                    fmt_value(dt, "s")
                );
                record(all, op.key(), dt);
                let t = Instant::now();
                let n = create_entries(&mut self.ct, &w, w.indices_of(backend), false)?;
                log.refill_s.push(t.elapsed().as_secs_f64());
                let count = table_count(&mut self.ct)?;
                ensure!(
                    n == expected && count == w.entries,
                    "refill of backend {ip}: created {n} (wanted {expected}), table holds {count}"
                );
            }
        }
        Ok(log)
    }
}

/// The `--child-list NS` mode.
fn child_list(ns: &str) -> Result<()> {
    let ns = Netns::named(ns);
    let mut ct = Conntrack::open_in(Some(&ns))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut line = String::with_capacity(256);
    let mut io_err = None;
    let s = ct.dump(&Filter::default(), |e| {
        line.clear();
        write_conntrack_line(&mut line, &e, now);
        line.push('\n');
        match out.write_all(line.as_bytes()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => {
                io_err = Some(err);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = io_err {
        return Err(e).context("writing the list");
    }
    out.flush()?;
    let hwm = vm_hwm_kib()?;
    eprintln!(
        "CHILD-RESULT {}",
        json!({"entries": s.entries, "vm_hwm_kib": hwm, "interrupted": s.interrupted})
    );
    Ok(())
}

fn vm_hwm_kib() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

// ---------------------------------------------------------------------------------------------
// Statistics and reporting.

struct Series {
    group: &'static str,
    key: &'static str,
    label: String,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Series {
    fn new(group: &'static str, key: &'static str, label: &str, unit: &'static str) -> Self {
        Series {
            group,
            key,
            label: label.into(),
            unit,
            samples: Vec::new(),
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

fn find<'a>(all: &'a [Series], key: &str) -> Option<&'a Series> {
    all.iter().find(|s| s.key == key && !s.samples.is_empty())
}

fn fmt_value(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    match unit {
        "s" if v >= 1.0 => format!("{v:.3} s"),
        "s" => format!("{:.1} ms", v * 1000.0),
        u => format!("{v:.1} {u}"),
    }
}

struct Group {
    id: &'static str,
    title: String,
    reference: &'static str,
    /// The conntrack-tools row, for a second comparison column.
    tools: Option<&'static str>,
}

struct TargetResult {
    name: &'static str,
    measured: String,
    verdict: &'static str,
    value: Option<f64>,
    limit: f64,
}

fn print_table(all: &[Series], groups: &[Group]) -> Vec<Value> {
    let mut rows = Vec::new();
    for g in groups {
        let Some(reference) = find(all, g.reference) else {
            continue;
        };
        let rmed = reference.median();
        let rmin = reference.min();
        let tools = g.tools.and_then(|k| find(all, k)).map(Series::median);
        let mut outliers = false;
        println!();
        println!("{}", g.title);
        println!(
            "  {:<46} {:>11} {:>11} {:>11} {:>9} {:>10} {:>11}",
            "operation",
            "median",
            "min",
            "max",
            "ratio",
            "ratio(min)",
            if tools.is_some() { "vs tools" } else { "" }
        );
        for s in all
            .iter()
            .filter(|s| s.group == g.id && !s.samples.is_empty())
        {
            let med = s.median();
            let ratio = med / rmed;
            let ratio_min = s.min() / rmin;
            // A sample over 3x the median is a stall of the machine, not the method's cost.
            let outlier = s.unit == "s" && s.max() > 3.0 * med;
            outliers |= outlier;
            let max = format!(
                "{}{}",
                fmt_value(s.max(), s.unit),
                if outlier { "!" } else { "" }
            );
            let vs_tools = tools
                .map(|t| format!("{:.2}x", t / med))
                .unwrap_or_default();
            println!(
                "  {:<46} {:>11} {:>11} {:>11} {:>8.2}x {:>9.2}x {:>11}",
                s.label,
                fmt_value(med, s.unit),
                fmt_value(s.min(), s.unit),
                max,
                ratio,
                ratio_min,
                vs_tools
            );
            rows.push(json!({
                "group": g.id,
                "key": s.key,
                "label": s.label,
                "unit": s.unit,
                "samples": s.samples,
                "median": med,
                "min": s.min(),
                "max": s.max(),
                "reference": g.reference,
                "ratio_vs_reference": ratio,
                "ratio_of_minimums": ratio_min,
                "conntrack_tools_over_this": tools.map(|t| t / med),
                "outlier": outlier,
            }));
        }
        if outliers {
            println!(
                "  ! max over 3x the median: the machine stalled during that sample (shared cores); the median ignores it"
            );
        }
        println!(
            "  (ratio = median / median of \"{}\", ratio(min) = min / its min{})",
            reference.label,
            if tools.is_some() {
                "; vs tools = conntrack-tools median / this median"
            } else {
                ""
            }
        );
    }
    rows
}

fn targets(all: &[Series]) -> Vec<TargetResult> {
    let med = |k: &str| find(all, k).map(Series::median);
    let min = |k: &str| find(all, k).map(Series::min);
    let mut out = Vec::new();
    let mut push =
        |name, value: Option<f64>, limit: f64, higher_better: bool, fmt: &dyn Fn(f64) -> String| {
            let (measured, verdict) = match value {
                None => ("not measured".to_string(), "SKIP"),
                Some(v) => {
                    let pass = if higher_better {
                        v >= limit
                    } else {
                        v <= limit
                    };
                    (fmt(v), if pass { "PASS" } else { "FAIL" })
                }
            };
            out.push(TargetResult {
                name,
                measured,
                verdict,
                value,
                limit,
            });
        };
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    push(
        "backend delete >= 5x faster than `conntrack -D -r`",
        ratio(
            med(DeleteOp::ConntrackTools.key()),
            med(DeleteOp::Flush.key()),
        ),
        5.0,
        true,
        &|v| {
            let m = ratio(
                min(DeleteOp::ConntrackTools.key()),
                min(DeleteOp::Flush.key()),
            );
            format!(
                "{v:.2}x faster (medians; {:.2}x by minimums)",
                m.unwrap_or(f64::NAN)
            )
        },
    );
    push(
        "backend delete within 1.3x of the bare kernel filtered flush",
        ratio(med(DeleteOp::Flush.key()), med(DeleteOp::KernelFlush.key())),
        1.3,
        false,
        &|v| {
            let m = ratio(min(DeleteOp::Flush.key()), min(DeleteOp::KernelFlush.key()));
            format!(
                "{v:.2}x the floor (medians; {:.2}x by minimums)",
                m.unwrap_or(f64::NAN)
            )
        },
    );
    push(
        "list within 1.5x of the bare receive-only dump",
        ratio(med(ListOp::Decode.key()), med(ListOp::Floor.key())),
        1.5,
        false,
        &|v| {
            let m = ratio(min(ListOp::Decode.key()), min(ListOp::Floor.key()));
            format!(
                "{v:.2}x the floor (medians; {:.2}x by minimums)",
                m.unwrap_or(f64::NAN)
            )
        },
    );
    push(
        "peak RSS of a full list < 32 MiB",
        find(all, "rss_ctnetlink_list").map(Series::max),
        32.0,
        false,
        &|v| format!("{v:.1} MiB (max of runs)"),
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Machine facts.

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    Some(
        String::from_utf8_lossy(&text)
            .lines()
            .next()?
            .trim()
            .to_string(),
    )
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // target/release/deps/conntrack-HASH
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// target/release/ctreap, beside the deps/ directory this bench runs from, if it was built.
fn ctreap_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("ctreap");
    p.is_file().then_some(p)
}

// ---------------------------------------------------------------------------------------------
// The run.

fn run(args: &Args) -> Result<()> {
    let w = Workload {
        entries: args.entries,
        backends: args.backends,
    };
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "needs root (ip netns, global nf_conntrack sysctls)"
    );

    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu = cpu_model();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let tools_version = command_line("conntrack", &["--version"]);
    let date = command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    let ctreap = ctreap_binary();
    let time_v = Path::new("/usr/bin/time").is_file();
    let load_before = loadavg();

    println!("ctnetlink conntrack benchmark");
    println!(
        "  machine: {cpu}, {cpus} cores, kernel {kernel}, load average {load_before} at start"
    );
    println!(
        "  conntrack-tools: {}",
        tools_version
            .as_deref()
            .unwrap_or("not installed (its rows are skipped)")
    );
    println!(
        "  ctreap CLI: {}",
        ctreap
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "target/release/ctreap not built (its rows are skipped)".into())
    );
    println!(
        "  workload: {} NAT entries over {} backends ({} per backend), runs {}",
        w.entries,
        w.backends,
        w.per_backend(0),
        args.runs
    );

    remove_stale_namespaces();
    // Drop order is the reverse of declaration: the namespace goes first, then the sysctls.
    let mut knobs = Knobs::default();
    knobs.raise(NF_CONNTRACK_HASHSIZE, w.entries.next_power_of_two())?;
    knobs.raise(NF_CONNTRACK_MAX, w.entries.saturating_mul(4))?;
    let ns_name = format!("ctreap-bench-{}", std::process::id());
    let _ns_guard = NetnsGuard::add(&ns_name)?;
    println!("created network namespace {ns_name} (removed at exit)");
    let ns = Netns::named(&ns_name);

    let mut ct = Conntrack::open_in(Some(&ns)).context("opening ctnetlink in the namespace")?;
    let features = ct.probe().context("probing kernel features")?;
    println!(
        "  kernel features: dump filter {}, flush filter {}, status filter {}",
        features.dump_filter, features.flush_filter, features.status_filter
    );
    let raw = ns
        .run(|| -> std::io::Result<Socket> {
            let mut s = Socket::new(NETLINK_NETFILTER)?;
            s.bind_auto()?;
            s.connect(&SocketAddr::new(0, 0))?;
            // The same receive buffer as the library's sockets (4 MiB; rmem_max permitting).
            s.set_rx_buf_sz::<libc::c_int>(4 << 20)?;
            Ok(s)
        })?
        .context("opening the raw netlink socket")?;

    // Fill.
    println!("filling {} entries with create_batch ...", w.entries);
    let t = Instant::now();
    let created = create_entries(&mut ct, &w, 0..w.entries, true)?;
    let fill_s = t.elapsed().as_secs_f64();
    let count = table_count(&mut ct)?;
    ensure!(
        created == w.entries && count == w.entries,
        "WRONG COUNT after filling: created {created}, table holds {count}, wanted {}",
        w.entries
    );
    let ns_count = ns
        .run(|| fs::read_to_string(NF_CONNTRACK_COUNT))?
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let init_count = fs::read_to_string(NF_CONNTRACK_COUNT)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    println!(
        "  filled in {} ({:.0} entries/s); nf_conntrack_count is per namespace: {ns_count} in {ns_name}, {init_count} in the initial one",
        fmt_value(fill_s, "s"),
        w.entries as f64 / fill_s
    );

    // What the auto flush adds to the bare kernel flush: two CT_GET_STATS round trips.
    const STATS_CALLS: u32 = 1000;
    let t = Instant::now();
    for _ in 0..STATS_CALLS {
        black_box(ct.stats()?);
    }
    let stats_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(STATS_CALLS);
    println!(
        "  CT_GET_STATS round trip: {stats_us:.1} us (ctnetlink flush's kernel path makes two per call, to count)"
    );

    let mut b = Bench {
        ns_name: ns_name.clone(),
        ct,
        raw,
        raw_buf: Vec::with_capacity(64 * 1024),
        raw_seq: 0,
        w,
        ctreap,
        conntrack_tools: tools_version.is_some(),
        time_v,
        kube_proxy_phases: None,
    };
    let mut all: Vec<Series> = Vec::new();
    if args.wants("list") {
        b.measure_list(args.runs, &mut all)?;
    }
    if args.wants("rss") {
        b.measure_rss(args.runs, &mut all)?;
    }
    let deletes = if args.wants("delete") {
        b.measure_delete(args.runs, &mut all)?
    } else {
        DeleteLog::default()
    };

    // Report.
    let groups = [
        Group {
            id: "list",
            title: format!("1. list the whole table ({} entries)", w.entries),
            reference: ListOp::Floor.key(),
            tools: Some(ListOp::ConntrackTools.key()),
        },
        Group {
            id: "delete",
            title: format!(
                "2. delete one backend's entries (reply-src = pod IP, {} of {})",
                w.per_backend(0),
                w.entries
            ),
            reference: DeleteOp::KernelFlush.key(),
            tools: Some(DeleteOp::ConntrackTools.key()),
        },
        Group {
            id: "rss",
            title: format!("3. peak RSS of a full list ({} entries)", w.entries),
            reference: if find(&all, "rss_conntrack_tools").is_some() {
                "rss_conntrack_tools"
            } else {
                "rss_ctnetlink_list"
            },
            tools: None,
        },
    ];
    let load_after = loadavg();
    println!();
    println!(
        "results: {} entries, {} backends, {} runs; kernel {kernel}; {cpu}, {cpus} cores; load average {load_before} -> {load_after}",
        w.entries, w.backends, args.runs
    );
    let rows = print_table(&all, &groups);
    let targets = targets(&all);
    println!();
    println!("targets:");
    for t in &targets {
        println!("  {:<4}  {:<62} {}", t.verdict, t.name, t.measured);
    }

    let doc = json!({
        "bench": "ctnetlink/conntrack",
        "date": date,
        "kernel": kernel,
        "conntrack_tools": tools_version,
        "cpu_model": cpu,
        "cpus": cpus,
        "load_average": {"start": load_before, "end": load_after},
        "entries": w.entries,
        "backends": w.backends,
        "entries_per_backend": w.per_backend(0),
        "runs": args.runs,
        "sysctls": knobs.changes,
        "kernel_features": features,
        "fill": {"seconds": fill_s, "entries_per_second": w.entries as f64 / fill_s},
        "stats_round_trip_us": stats_us,
        "refill_backend_seconds": deletes.refill_s,
        "delete_backend_per_run": deletes.backends,
        "kube_proxy_style_dump_and_delete_seconds": deletes.kube_proxy_phases,
        "results": rows,
        "targets": targets.iter().map(|t| json!({
            "name": t.name,
            "value": t.value,
            "limit": t.limit,
            "verdict": t.verdict,
            "measured": t.measured,
        })).collect::<Vec<_>>(),
    });
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("conntrack.json");
    fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!();
    println!("raw samples: {}", path.display());

    // Empty the table before the namespace goes, so the kernel does not free a million
    // entries in the background while the sysctls are being restored.
    let t = Instant::now();
    b.ct.flush(&Filter::default())?;
    println!(
        "flushed the table in {} before teardown",
        fmt_value(t.elapsed().as_secs_f64(), "s")
    );
    Ok(())
}
