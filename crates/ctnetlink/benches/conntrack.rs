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

mod support;

use std::fs;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ctnetlink::codec::format::write_conntrack_line;
use ctnetlink::codec::message::append_request;
use ctnetlink::consts::*;
use ctnetlink::{Conntrack, Filter, FlushPath, Netns};
use netlink_sys::{Socket, SocketAddr};
use serde_json::{Value, json};
use support::{
    Knobs, Machine, NF_CONNTRACK_COUNT, NetnsGuard, Only, Workload, bench_main, check_interrupted,
    check_runs, create_entries, fill_table, fmt_s, in_netns, install_signal_handlers, loadavg,
    median, num, parse_flags, remove_stale_namespaces, require_root, sorted, table_count,
    write_raw_samples,
};

const USAGE: &str = "usage: cargo bench -p ctnetlink --bench conntrack [-- --entries N] [--runs R] [--backends B] [--only list,rss,delete]";
const GROUPS: [&str; 3] = ["list", "rss", "delete"];
/// The namespace is NS_PREFIX + the PID.
const NS_PREFIX: &str = "ctreap-bench-";

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
    only: Only,
}

fn parse_args(it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        entries: 1_000_000,
        runs: 5,
        backends: 10,
        child_list: None,
        only: Only::default(),
    };
    parse_flags(it, USAGE, |flag, value| {
        match flag {
            "--entries" => a.entries = num(&value()?, flag)?,
            "--runs" => a.runs = num(&value()?, flag)?,
            "--backends" => a.backends = num(&value()?, flag)?,
            "--child-list" => a.child_list = Some(value()?),
            "--only" => a.only.add(&value()?, &GROUPS)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    check_runs(a.runs)?;
    if a.backends == 0 || a.backends > 4096 {
        return Err("--backends must be between 1 and 4096".into());
    }
    if a.entries < a.backends as u64 || a.entries > 50_000_000 {
        return Err("--entries must be between --backends and 50000000".into());
    }
    Ok(a)
}

fn main() {
    bench_main("conntrack bench", parse_args, |args| {
        match &args.child_list {
            Some(ns) => child_list(ns),
            None => {
                install_signal_handlers();
                run(args)
            }
        }
    });
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
    /// nlink's connection in the namespace, on a current-thread runtime of its own.
    nlink: (
        tokio::runtime::Runtime,
        nlink::Connection<nlink::netlink::Netfilter>,
    ),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListOp {
    Floor,
    DumpRaw,
    Decode,
    Nlink,
    ConntrackTools,
    CtreapCli,
}

impl ListOp {
    fn key(self) -> &'static str {
        match self {
            ListOp::Floor => "list_floor_recv_only",
            ListOp::DumpRaw => "list_dump_raw_no_decode",
            ListOp::Decode => "list_ctnetlink_dump",
            ListOp::Nlink => "list_nlink_stream_conntrack",
            ListOp::ConntrackTools => "list_conntrack_tools",
            ListOp::CtreapCli => "list_ctreap_cli",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ListOp::Floor => "receive-only loop, no parsing (floor)",
            ListOp::DumpRaw => "ctnetlink dump_raw, no-op callback",
            ListOp::Decode => "ctnetlink dump, every entry decoded",
            ListOp::Nlink => "nlink 0.33 stream_conntrack, every entry",
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
            ListOp::Nlink => {
                let (rt, conn) = &self.nlink;
                rt.block_on(async {
                    use futures::StreamExt;
                    let mut n = 0u64;
                    let t = Instant::now();
                    let mut s = conn
                        .stream_conntrack(AF_UNSPEC)
                        .await
                        .context("nlink stream_conntrack")?;
                    while let Some(e) = s.next().await {
                        black_box(e.context("nlink: an entry")?);
                        n += 1;
                    }
                    Ok::<_, anyhow::Error>((t.elapsed().as_secs_f64(), n))
                })?
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
        let mut ops = vec![
            ListOp::Floor,
            ListOp::DumpRaw,
            ListOp::Decode,
            ListOp::Nlink,
        ];
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

    fn median(&self) -> f64 {
        median(&self.samples)
    }

    fn min(&self) -> f64 {
        sorted(&self.samples).first().copied().unwrap_or(f64::NAN)
    }

    fn max(&self) -> f64 {
        sorted(&self.samples).last().copied().unwrap_or(f64::NAN)
    }
}

fn find<'a>(all: &'a [Series], key: &str) -> Option<&'a Series> {
    all.iter().find(|s| s.key == key && !s.samples.is_empty())
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "s" => fmt_s(v),
        _ if v.is_nan() => "n/a".into(),
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
    // A target on the ratio of two methods' times: judged on the medians, the ratio of the
    // minimums shown beside.
    let mut push_ratio =
        |name, (a, b): (&str, &str), limit, higher_better, what: &dyn Fn(f64, f64) -> String| {
            let by_min = ratio(min(a), min(b)).unwrap_or(f64::NAN);
            push(name, ratio(med(a), med(b)), limit, higher_better, &|v| {
                what(v, by_min)
            });
        };
    push_ratio(
        "backend delete >= 5x faster than `conntrack -D -r`",
        (DeleteOp::ConntrackTools.key(), DeleteOp::Flush.key()),
        5.0,
        true,
        &|v, m| format!("{v:.2}x faster (medians; {m:.2}x by minimums)"),
    );
    push_ratio(
        "backend delete within 1.3x of the bare kernel filtered flush",
        (DeleteOp::Flush.key(), DeleteOp::KernelFlush.key()),
        1.3,
        false,
        &|v, m| format!("{v:.2}x the floor (medians; {m:.2}x by minimums)"),
    );
    push_ratio(
        "list within 1.5x of the bare receive-only dump",
        (ListOp::Decode.key(), ListOp::Floor.key()),
        1.5,
        false,
        &|v, m| format!("{v:.2}x the floor (medians; {m:.2}x by minimums)"),
    );
    push_ratio(
        "full decoded list at least as fast as nlink 0.33's stream_conntrack",
        (ListOp::Nlink.key(), ListOp::Decode.key()),
        1.0,
        true,
        &|v, m| format!("nlink takes {v:.2}x our time (medians; {m:.2}x by minimums)"),
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
// The ctreap CLI.

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
    require_root()?;

    let ctreap = ctreap_binary();
    let time_v = Path::new("/usr/bin/time").is_file();
    let m = Machine::read();

    println!("ctnetlink conntrack benchmark");
    m.print();
    println!(
        "  conntrack-tools: {}",
        m.tools_version
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

    remove_stale_namespaces(NS_PREFIX);
    // Drop order is the reverse of declaration: the namespace goes first, then the sysctls.
    let mut knobs = Knobs::default();
    knobs.raise_for_table(w.entries)?;
    let ns_name = format!("{NS_PREFIX}{}", std::process::id());
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

    let nlink = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a runtime for nlink")?;
        let conn = rt
            .block_on(async {
                nlink::Connection::<nlink::netlink::Netfilter>::new_in(std::path::PathBuf::from(
                    format!("/var/run/netns/{ns_name}"),
                ))
            })
            .context("opening nlink's netfilter connection in the namespace")?;
        (rt, conn)
    };

    // Fill.
    println!("filling {} entries with create_batch ...", w.entries);
    let fill_s = fill_table(&mut ct, &w, true)?;
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
        conntrack_tools: m.tools_version.is_some(),
        time_v,
        kube_proxy_phases: None,
        nlink,
    };
    let mut all: Vec<Series> = Vec::new();
    if args.only.wants("list") {
        b.measure_list(args.runs, &mut all)?;
    }
    if args.only.wants("rss") {
        b.measure_rss(args.runs, &mut all)?;
    }
    let deletes = if args.only.wants("delete") {
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
        "results: {} entries, {} backends, {} runs; kernel {}; {}, {} cores; load average {} -> {load_after}",
        w.entries, w.backends, args.runs, m.kernel, m.cpu, m.cpus, m.load_before
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
        "date": m.date,
        "kernel": m.kernel,
        "conntrack_tools": m.tools_version,
        "cpu_model": m.cpu,
        "cpus": m.cpus,
        "load_average": {"start": m.load_before, "end": load_after},
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
    write_raw_samples("conntrack.json", &doc)?;

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
