//! Shared by the two benchmark programs, `crates/ctnetlink/benches/conntrack.rs` (`mod support;`)
//! and `crates/ctreap/benches/agent.rs` (by `#[path]`): their command-line conventions, the
//! workload of N NAT entries and its filling, the guards that undo what a run changes (a network
//! namespace, the global nf_conntrack sysctls, signals), the machine facts both print, and where
//! both write results.
// Shared by two programs that each use a part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ctnetlink::consts::*;
use ctnetlink::{Conntrack, Entry, L4, ProtoInfo, TcpInfo, Tuple};
use serde_json::{Value, json};

/// The Service every flow was sent to, and the port the backends listen on.
pub const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const SERVICE_PORT: u16 = 80;
pub const POD_PORT: u16 = 8080;
/// Clients: 100.64.0.0/10, PORTS_PER_CLIENT source ports each, so every flow is unique.
pub const CLIENT_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
pub const PORTS_PER_CLIENT: u64 = 50_000;
pub const FIRST_CLIENT_PORT: u16 = 10_000;
/// Long enough that nothing expires during a run.
pub const TIMEOUT_S: u32 = 3600;
/// Entries per create_batch call while filling.
pub const FILL_CHUNK: usize = 8192;

pub const NF_CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
pub const NF_CONNTRACK_HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";
pub const NF_CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

// ---------------------------------------------------------------------------------------------
// The command line.

/// Reads a benchmark's command line, `--flag value` or `--flag=value`. Takes what every
/// `harness = false` bench must accept itself (`--bench`, which `cargo bench` passes to each of
/// them; a name filter such as `cargo bench -p ctreap agent`; `-h`, which prints `usage` and
/// exits) and hands every other flag to `flag(name, value)`, where `value()` is its value and
/// `Ok(false)` means a flag the bench does not know.
pub fn parse_flags(
    mut it: impl Iterator<Item = String>,
    usage: &str,
    mut flag: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String>,
) -> Result<(), String> {
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "--bench" => continue,
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            f if !f.starts_with('-') => continue,
            _ => {}
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        if !flag(&name, &mut value)? {
            return Err(format!("unknown argument {name:?}; {usage}"));
        }
    }
    Ok(())
}

/// A bench's `main`: `parse` reads the command line (its error exits 64 with a one-line
/// message), `run` does the work (its error exits 1 with its causes); each line on stderr
/// starts with `name`.
pub fn bench_main<A>(
    name: &str,
    parse: impl FnOnce(std::iter::Skip<std::env::Args>) -> Result<A, String>,
    run: impl FnOnce(&A) -> Result<()>,
) {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{name}: {msg}");
            std::process::exit(64);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("{name}: FAILED: {e:#}");
        std::process::exit(1);
    }
}

/// A number, `_` allowed between digits (`--entries 1_000_000`).
pub fn num<T: std::str::FromStr>(v: &str, name: &str) -> Result<T, String> {
    v.replace('_', "")
        .parse()
        .map_err(|_| format!("{name}: {v:?} is not a number"))
}

/// `--runs R`, checked once every flag is read: each measurement is repeated at least once.
pub fn check_runs(runs: usize) -> Result<(), String> {
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(())
}

/// `--only a,b`, repeatable: the groups of measurements to run; none named means all.
#[derive(Debug, Clone, Default)]
pub struct Only(Vec<String>);

impl Only {
    /// Adds the groups of `v`, each one of the bench's `groups`.
    pub fn add(&mut self, v: &str, groups: &[&str]) -> Result<(), String> {
        for g in v.split(',') {
            if !groups.contains(&g) {
                return Err(format!(
                    "--only: unknown group {g:?} ({})",
                    groups.join(", ")
                ));
            }
            self.0.push(g.to_string());
        }
        Ok(())
    }

    pub fn wants(&self, group: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|g| g == group)
    }
}

// ---------------------------------------------------------------------------------------------
// Signals: a flag checked between operations, so that Ctrl-C still runs the guards.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn install_signal_handlers() {
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

pub fn check_interrupted() -> Result<()> {
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
pub fn note(msg: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Both benchmarks write the global sysctls and create namespaces.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "needs root (ip netns, global nf_conntrack sysctls)"
    );
    Ok(())
}

/// `ip netns add NAME`, and `ip netns del NAME` on drop.
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    pub fn add(name: &str) -> Result<NetnsGuard> {
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

/// Namespaces `PREFIX<pid>[-...]` left by a benchmark that was killed (SIGKILL skips the
/// guards): their PID is gone.
pub fn remove_stale_namespaces(prefix: &str) {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for d in dir.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|r| r.split('-').next()) else {
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
pub struct Knobs {
    restore: Vec<(&'static str, String)>,
    /// What each knob was and is during the run, for the JSON output.
    pub changes: Vec<Value>,
}

pub fn read_u64(path: &str) -> Result<u64> {
    let s = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    s.trim()
        .parse()
        .with_context(|| format!("{path}: {s:?} is not a number"))
}

impl Knobs {
    pub fn raise(&mut self, path: &'static str, want: u64) -> Result<()> {
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

    /// Room for a table of `entries`: the hash table to `entries` rounded up to a power of two,
    /// nf_conntrack_max to 4 x `entries`.
    pub fn raise_for_table(&mut self, entries: u64) -> Result<()> {
        self.raise(NF_CONNTRACK_HASHSIZE, entries.next_power_of_two())?;
        self.raise(NF_CONNTRACK_MAX, entries.saturating_mul(4))
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
pub struct Workload {
    pub entries: u64,
    pub backends: u32,
}

impl Workload {
    /// 10.244.0.10 + 256·b (the pod IP the Service DNATs to): 10.244.b.10 for b < 256,
    /// continuing into 10.245.x.10 and so on.
    pub fn backend_ip(&self, b: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 10)) + (b << 8))
    }

    /// Entries of backend `b`: ceil((N - b) / B).
    pub fn per_backend(&self, b: u32) -> u64 {
        (self.entries - u64::from(b)).div_ceil(u64::from(self.backends))
    }

    pub fn indices_of(&self, b: u32) -> impl Iterator<Item = u64> + use<> {
        (u64::from(b)..self.entries).step_by(self.backends as usize)
    }

    /// `client:port -> 198.18.0.10:80`, DNATed to `10.244.b.10:8080`; half UDP, half TCP
    /// (ESTABLISHED) in every backend.
    pub fn entry(&self, i: u64) -> Entry {
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
/// be accepted. `progress` counts on stderr when it is a terminal.
pub fn create_entries(
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

/// Fills the empty table with the whole workload and checks that it holds exactly that;
/// returns the seconds the filling took.
pub fn fill_table(ct: &mut Conntrack, w: &Workload, progress: bool) -> Result<f64> {
    let t = Instant::now();
    let created = create_entries(ct, w, 0..w.entries, progress)?;
    let fill_s = t.elapsed().as_secs_f64();
    let count = table_count(ct)?;
    ensure!(
        created == w.entries && count == w.entries,
        "WRONG COUNT after filling: created {created}, table holds {count}, wanted {}",
        w.entries
    );
    Ok(fill_s)
}

pub fn table_count(ct: &mut Conntrack) -> Result<u64> {
    Ok(u64::from(ct.stats().context("CT_GET_STATS")?.entries))
}

/// `ip netns exec NS PROGRAM`, arguments to be added.
pub fn in_netns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

// ---------------------------------------------------------------------------------------------
// Statistics.

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

pub fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Seconds as "1.234 s" from one second up, "12.3 ms" below; "n/a" for NaN.
pub fn fmt_s(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v >= 1.0 {
        format!("{v:.3} s")
    } else {
        format!("{:.1} ms", v * 1000.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Machine facts, and where the results go.

/// What both benchmarks print and record about the machine at the start.
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    /// `conntrack --version`, if conntrack-tools is installed.
    pub tools_version: Option<String>,
    pub date: String,
    pub load_before: String,
}

impl Machine {
    pub fn read() -> Machine {
        Machine {
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            cpu: cpu_model(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            tools_version: command_line("conntrack", &["--version"]),
            date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
            load_before: loadavg(),
        }
    }

    /// The line both print under their title.
    pub fn print(&self) {
        println!(
            "  machine: {}, {} cores, kernel {}, load average {} at start",
            self.cpu, self.cpus, self.kernel, self.load_before
        );
    }
}

/// The first line a command prints (stdout, or stderr when stdout is empty).
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
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

pub fn cpu_model() -> String {
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

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // target/release/deps/BENCH-HASH
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Writes `doc` to `target/bench/FILE` and prints where.
pub fn write_raw_samples(file: &str, doc: &Value) -> Result<()> {
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(file);
    fs::write(&path, serde_json::to_string_pretty(doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!();
    println!("raw samples: {}", path.display());
    Ok(())
}
