//! The agent benchmark: the real `ctreap run` (bench profile) on a large table; a program, not
//! a timed test (`harness = false`).
//!
//! ```text
//! cargo bench -p ctreap --bench agent [-- --entries 100000,1000000 --runs 20 --backends 100
//!     --services 10000 --endpoints-per-service 10 --idle 30 --only latency,tools,idle,rss,sigterm]
//! ```
//!
//! For each table size N it creates a private network namespace (`ip netns add
//! ctreap-agentbench-PID`), fills its conntrack table with N NAT entries spread evenly over B
//! backends of one Service (`client:port -> 198.18.0.10:80`, DNATed to `10.244.b.10:8080`,
//! half UDP, half TCP ESTABLISHED, as in the ctnetlink benchmark), serves that Service from
//! kube-testserver, starts `ctreap run --netns ... --log-format json --resync 5m`, and measures:
//!
//! 1. **latency** (R runs): remove one backend from its EndpointSlice in the API server, as a
//!    rollout does (reported terminating 200 ms before, so the removal takes `--grace`); the time
//!    until the table has lost exactly that backend's N/B entries, polled every millisecond
//!    with CT_GET_STATS (then checked with a filtered count: zero left) -- external, API write
//!    to kernel; and the agent's own figure, watch event arrival to kernel ack, from its
//!    "flushed" log lines (`latency_ms`, one per protocol; the run's figure is the larger) and
//!    from the `ctreap_flush_latency_seconds` histogram (p50/p99 interpolated in its buckets).
//!    The backend is put back, the agent given 300 ms to see it, its entries re-created, and the
//!    table checked to hold N again (a re-created entry deleted by the event trigger fails the
//!    run).
//! 2. **tools**: the same deletion by `conntrack -D -r IP` (conntrack-tools), min(R, 5) runs,
//!    for the ratio.
//! 3. **idle**: utime+stime of the agent over `--idle` seconds without events (/proc/PID/stat),
//!    checked to contain no full pass; and the cost of a full pass (the startup pass's
//!    `ctreap_reconcile_duration_seconds`), amortized over the default --resync 60s.
//! 4. **rss**: VmHWM of that agent (one Service, N entries); then, with `--services` Services of
//!    `--endpoints-per-service` endpoints added to the API server, a fresh agent (--resync 10s)
//!    after its startup pass and one resync: VmHWM and the time to ready.
//! 5. **sigterm**: that agent gets SIGTERM while busy in a full pass over N entries: the time to
//!    exit (contract: 1 s).
//!
//! It prints a table and PASS/FAIL per target (never exiting non-zero for a FAIL: the figures
//! are noisy on a shared machine) and writes every raw sample to `target/bench/agent.json`. A
//! wrong count fails the run loudly.
//!
//! Needs root. Like the ctnetlink benchmark it raises the global `nf_conntrack_max` (to 4·N)
//! and `nf_conntrack_buckets` (to N rounded up to a power of two) when N needs it, prints both
//! changes, and restores them on exit, on error, on panic and on SIGINT/SIGTERM/SIGHUP; the
//! namespace is deleted the same way, and one left by a SIGKILLed run is removed by the next.

#[path = "../tests/support/agent.rs"]
mod agent;
#[path = "../../ctnetlink/benches/support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent::{Agent, Api, Metrics, ctreap_bin, ep, ep_cond, service, slice};
use anyhow::{Context, Result, ensure};
use ctnetlink::{Conntrack, Filter, Netns};
use serde_json::{Value, json};
use support::{
    Knobs, Machine, NetnsGuard, Only, POD_PORT, SERVICE, SERVICE_PORT, Workload, bench_main,
    check_interrupted, check_runs, create_entries, fill_table, fmt_s, in_netns,
    install_signal_handlers, loadavg, median, num, parse_flags, remove_stale_namespaces,
    require_root, sorted, table_count, write_raw_samples,
};

const USAGE: &str = "usage: cargo bench -p ctreap --bench agent [-- --entries N[,N..]] [--runs R] [--backends B] [--services S] [--endpoints-per-service E] [--idle SECONDS] [--only latency,tools,idle,rss,sigterm]";
const GROUPS: [&str; 5] = ["latency", "tools", "idle", "rss", "sigterm"];

/// Backends per EndpointSlice (the EndpointSlice controller's default is 100).
const PER_SLICE: u32 = 100;
/// The namespace of a table size is NS_PREFIX + the PID + "-N".
const NS_PREFIX: &str = "ctreap-agentbench-";

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    entries: Vec<u64>,
    runs: usize,
    backends: u32,
    services: u32,
    endpoints_per_service: u32,
    idle_s: u64,
    only: Only,
}

fn parse_args(it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        entries: vec![100_000, 1_000_000],
        runs: 20,
        backends: 100,
        services: 10_000,
        endpoints_per_service: 10,
        idle_s: 30,
        only: Only::default(),
    };
    parse_flags(it, USAGE, |flag, value| {
        match flag {
            "--entries" => {
                a.entries = value()?
                    .split(',')
                    .map(|v| num(v, flag))
                    .collect::<Result<_, _>>()?
            }
            "--runs" => a.runs = num(&value()?, flag)?,
            "--backends" => a.backends = num(&value()?, flag)?,
            "--services" => a.services = num(&value()?, flag)?,
            "--endpoints-per-service" => a.endpoints_per_service = num(&value()?, flag)?,
            "--idle" => a.idle_s = num(&value()?, flag)?,
            "--only" => a.only.add(&value()?, &GROUPS)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    check_runs(a.runs)?;
    if a.backends < 2 || a.backends > 25_000 {
        return Err("--backends must be between 2 and 25000".into());
    }
    if a.entries.is_empty()
        || a.entries
            .iter()
            .any(|n| *n < u64::from(a.backends) * 2 || *n > 20_000_000)
    {
        return Err("--entries: each between 2 x --backends and 20000000".into());
    }
    if a.services == 0 || a.services > 60_000 || a.endpoints_per_service == 0 {
        return Err("--services between 1 and 60000, --endpoints-per-service at least 1".into());
    }
    Ok(a)
}

fn main() {
    bench_main("agent bench", parse_args, |args| {
        install_signal_handlers();
        run(args)
    });
}

// ---------------------------------------------------------------------------------------------
// The workload (support::Workload) as EndpointSlices.

impl Workload {
    /// The EndpointSlices of the bench Service, `missing` left out.
    fn slices(&self, missing: Option<u32>) -> Vec<Value> {
        (0..self.backends.div_ceil(PER_SLICE))
            .map(|s| self.slice(s, missing, None))
            .collect()
    }

    /// Slice `s` without `missing`, `terminating` reported as a pod deleted the normal way is
    /// during its grace period (not ready, serving, terminating).
    fn slice(&self, s: u32, missing: Option<u32>, terminating: Option<u32>) -> Value {
        let eps: Vec<Value> = (s * PER_SLICE..((s + 1) * PER_SLICE).min(self.backends))
            .filter(|b| Some(*b) != missing)
            .map(|b| {
                let ip = self.backend_ip(b).to_string();
                if Some(b) == terminating {
                    ep_cond(&ip, false, true, true)
                } else {
                    ep(&ip)
                }
            })
            .collect();
        slice(
            &format!("bench-{s}"),
            "bench",
            &[("tcp", POD_PORT, "TCP"), ("udp", POD_PORT, "UDP")],
            eps,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics.

/// Nearest-rank percentile.
fn pct(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// The cumulative buckets of a histogram: (upper bound, count), sorted.
fn buckets(m: &Metrics, name: &str) -> Vec<(f64, f64)> {
    let mut b: Vec<(f64, f64)> = m
        .series_of(&format!("{name}_bucket"))
        .into_iter()
        .filter_map(|(k, v)| {
            let le = k.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// The p-th percentile of the observations between two scrapes of a histogram, interpolated
/// linearly inside its bucket (what Prometheus' histogram_quantile does).
fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> f64 {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - b)
        })
        .collect();
    let Some(&(_, total)) = delta.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = p / 100.0 * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let within = (rank - prev.1) / (n - prev.1).max(f64::MIN_POSITIVE);
            return prev.0 + (le - prev.0) * within;
        }
        prev = (le, n);
    }
    f64::NAN
}

// ---------------------------------------------------------------------------------------------
// One table size.

#[derive(Default)]
struct SizeResult {
    entries: u64,
    per_backend: u64,
    fill_s: f64,
    ready_s: f64,
    startup_pass_s: f64,
    external_s: Vec<f64>,
    agent_log_s: Vec<f64>,
    hist_p50: f64,
    hist_p99: f64,
    hist_count: f64,
    refill_s: Vec<f64>,
    tools_s: Vec<f64>,
    idle_cpu_pct: Option<f64>,
    idle_passes: f64,
    hwm_one_service_mib: Option<f64>,
    rss10k: Option<Value>,
    sigterm_exit_s: Option<f64>,
    sigterm_in_pass: bool,
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The "flushed" JSON log lines after byte `from` of the log: (backend, latency_ms, count).
fn flushed_since(log: &str, from: usize) -> Vec<(String, f64, u64)> {
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "flushed")
        .map(|v| {
            (
                v["backend"].as_str().unwrap_or("").to_string(),
                v["latency_ms"].as_f64().unwrap_or(f64::NAN),
                v["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn measure_size(args: &Args, n: u64, bin: &Path) -> Result<SizeResult> {
    let w = Workload {
        entries: n,
        backends: args.backends,
    };
    let mut res = SizeResult {
        entries: n,
        per_backend: w.per_backend(0),
        ..SizeResult::default()
    };
    let ns_name = format!("{NS_PREFIX}{}-{n}", std::process::id());
    let _ns_guard = NetnsGuard::add(&ns_name)?;
    let ns = Netns::named(&ns_name);
    let mut ct = Conntrack::open_in(Some(&ns)).context("opening ctnetlink in the namespace")?;

    println!();
    println!(
        "== {n} entries over {} backends ({} per backend), namespace {ns_name}",
        w.backends,
        w.per_backend(0)
    );
    res.fill_s = fill_table(&mut ct, &w, false)?;
    println!("  filled in {}", fmt_s(res.fill_s));

    let api = Api::start();
    api.apply(service(
        "bench",
        &[&SERVICE.to_string()],
        &[
            ("tcp", SERVICE_PORT, "TCP", POD_PORT),
            ("udp", SERVICE_PORT, "UDP", POD_PORT),
        ],
    ));
    api.apply_all(w.slices(None));

    let t = Instant::now();
    let mut agent = Agent::start_bin(
        bin,
        &api.kubeconfig,
        &ns_name,
        &["--resync", "5m", "--log-format", "json"],
    );
    agent.wait_ready(Duration::from_secs(120));
    let m = agent.wait_metrics(Duration::from_secs(300), "the startup pass", |m| {
        m.or0("ctreap_reconciles_total{trigger=\"startup\"}") >= 1.0
    });
    res.ready_s = t.elapsed().as_secs_f64();
    res.startup_pass_s = m.or0("ctreap_reconcile_duration_seconds_sum");
    ensure!(
        m.deleted() == 0.0 && table_count(&mut ct)? == n,
        "the startup pass deleted entries of live backends:\n{}",
        m.text
    );
    println!(
        "  agent ready and its startup pass done {} after start (pass {})",
        fmt_s(res.ready_s),
        fmt_s(res.startup_pass_s)
    );

    if args.only.wants("latency") {
        let before = agent.metrics();
        let hist_before = buckets(&before, "ctreap_flush_latency_seconds");
        let count_before = before.or0("ctreap_flush_latency_seconds_count");
        for r in 0..args.runs {
            check_interrupted()?;
            let b = (r as u32 * 37 + 11) % w.backends;
            let ip = w.backend_ip(b);
            let expected = w.per_backend(b);
            let log_from = agent.log().len();
            let count0 = table_count(&mut ct)?;
            ensure!(
                count0 == n,
                "table holds {count0} before run {r}, wanted {n}"
            );
            let s = b / PER_SLICE;
            // A rollout's removal: reported terminating first (the agent keeps a draining
            // backend's flows), removed 200 ms later; the removal is timed. A backend removed
            // while ready would wait --move-grace (it could be moving between slices).
            api.apply(w.slice(s, None, Some(b)));
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            api.apply(w.slice(s, Some(b), None));
            let target = count0 - expected;
            loop {
                let c = table_count(&mut ct)?;
                if c <= target {
                    ensure!(
                        c == target,
                        "WRONG COUNT: removing backend {ip} took the table from {count0} to {c}, wanted {target}"
                    );
                    break;
                }
                ensure!(
                    t.elapsed() < Duration::from_secs(60),
                    "backend {ip}'s entries not gone after 60 s ({} of {expected} left); log:\n{}",
                    c - target,
                    agent.log_tail(20)
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let external = t.elapsed().as_secs_f64();
            let left = ct.count(&Filter {
                reply_src: Some(IpAddr::V4(ip)),
                ..Filter::default()
            })?;
            ensure!(left == 0, "{left} entries of backend {ip} left");
            // The agent's log lines for this backend (both protocols).
            let mut lines = Vec::new();
            let t_log = Instant::now();
            while lines.len() < 2 && t_log.elapsed() < Duration::from_secs(2) {
                lines = flushed_since(&agent.log(), log_from)
                    .into_iter()
                    .filter(|(be, ..)| be.starts_with(&format!("{ip}:")))
                    .collect();
                std::thread::sleep(Duration::from_millis(5));
            }
            let agent_ms = lines.iter().map(|(_, l, _)| *l).fold(f64::NAN, f64::max);
            let logged: u64 = lines.iter().map(|(.., c)| *c).sum();
            ensure!(
                logged == expected,
                "the agent logged {logged} flushed entries for {ip}, {expected} went: {lines:?}"
            );
            res.external_s.push(external);
            res.agent_log_s.push(agent_ms / 1000.0);
            // Put it back; give the agent time to see it before its flows come back.
            api.apply(w.slice(s, None, None));
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            let made = create_entries(&mut ct, &w, w.indices_of(b), false)?;
            res.refill_s.push(t.elapsed().as_secs_f64());
            std::thread::sleep(Duration::from_millis(200));
            let c = table_count(&mut ct)?;
            ensure!(
                made == expected && c == n,
                "refill of {ip}: created {made} (wanted {expected}); table holds {c}, wanted {n} (re-created entries deleted?)"
            );
            eprintln!(
                "  run {r:>2}: backend {ip:<14} {expected} entries gone {} after the API write; agent {}",
                fmt_s(external),
                fmt_s(agent_ms / 1000.0)
            );
        }
        let after = agent.metrics();
        let hist_after = buckets(&after, "ctreap_flush_latency_seconds");
        res.hist_count = after.or0("ctreap_flush_latency_seconds_count") - count_before;
        res.hist_p50 = histogram_quantile(&hist_before, &hist_after, 50.0);
        res.hist_p99 = histogram_quantile(&hist_before, &hist_after, 99.0);
    }

    if args.only.wants("tools") {
        let runs = args.runs.min(5);
        for r in 0..runs {
            check_interrupted()?;
            let b = (r as u32 * 53 + 7) % w.backends;
            let ip = w.backend_ip(b).to_string();
            let expected = w.per_backend(b);
            let count0 = table_count(&mut ct)?;
            let mut cmd = in_netns(&ns_name, "conntrack");
            cmd.args(["-D", "-r", &ip])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let t = Instant::now();
            let out = cmd.output().context("running conntrack -D -r")?;
            let dt = t.elapsed().as_secs_f64();
            ensure!(
                out.status.success(),
                "conntrack -D -r {ip}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let gone = count0 - table_count(&mut ct)?;
            ensure!(
                gone == expected,
                "WRONG COUNT: conntrack -D -r {ip} deleted {gone}, wanted {expected}"
            );
            res.tools_s.push(dt);
            eprintln!("  conntrack -D -r {ip:<14} {}", fmt_s(dt));
            create_entries(&mut ct, &w, w.indices_of(b), false)?;
            std::thread::sleep(Duration::from_millis(100));
            ensure!(table_count(&mut ct)? == n, "refill after conntrack -D");
        }
    }

    if args.only.wants("idle") {
        check_interrupted()?;
        // Let the refills' NEW events drain first.
        std::thread::sleep(Duration::from_secs(2));
        let passes0 = agent.metrics().sum("ctreap_reconciles_total", &[]);
        let ticks0 = agent.cpu_ticks();
        let t = Instant::now();
        let until = t + Duration::from_secs(args.idle_s);
        while Instant::now() < until {
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(200));
        }
        let ticks = agent.cpu_ticks() - ticks0;
        let secs = t.elapsed().as_secs_f64();
        res.idle_passes = agent.metrics().sum("ctreap_reconciles_total", &[]) - passes0;
        res.idle_cpu_pct = Some(ticks as f64 / clk_tck() / secs * 100.0);
        println!(
            "  idle: {ticks} ticks of CPU in {secs:.1} s = {:.3} % of a core ({} full passes in the window)",
            res.idle_cpu_pct.unwrap_or(f64::NAN),
            res.idle_passes
        );
    }
    res.hwm_one_service_mib = Some(agent.status_kib("VmHWM") as f64 / 1024.0);
    agent.stop_quietly();

    if args.only.wants("rss") || args.only.wants("sigterm") {
        check_interrupted()?;
        // Many Services: svc-i at 10.100.x.y:80/TCP, E endpoints each in 10.200.0.0/14.
        let t = Instant::now();
        let mut objs = Vec::new();
        let mut next_ep = 0u32;
        for i in 0..args.services {
            let name = format!("svc-{i}");
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 1)) + i).to_string();
            objs.push(service(&name, &[&ip], &[("http", 80, "TCP", 8080)]));
            let eps: Vec<Value> = (0..args.endpoints_per_service)
                .map(|_| {
                    next_ep += 1;
                    ep(
                        &Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + next_ep)
                            .to_string(),
                    )
                })
                .collect();
            objs.push(slice(
                &format!("{name}-a"),
                &name,
                &[("http", 8080, "TCP")],
                eps,
            ));
            if objs.len() >= 2000 {
                api.apply_all(std::mem::take(&mut objs));
            }
        }
        api.apply_all(objs);
        println!(
            "  {} Services with {} endpoints added to the API server in {}",
            args.services,
            next_ep,
            fmt_s(t.elapsed().as_secs_f64())
        );
        let (mut agent, ready) = Agent::start_bin_passed(
            bin,
            &api.kubeconfig,
            &ns_name,
            &["--resync", "10s", "--log-format", "json"],
            "resync",
        );
        ensure!(
            table_count(&mut ct)? == n,
            "the many-Services agent deleted entries"
        );
        let hwm = agent.status_kib("VmHWM") as f64 / 1024.0;
        let rss = agent.status_kib("VmRSS") as f64 / 1024.0;
        println!(
            "  {} Services: ready in {}, VmHWM {hwm:.1} MiB, VmRSS {rss:.1} MiB after the startup pass and a resync",
            args.services,
            fmt_s(ready)
        );
        res.rss10k = Some(json!({
            "services": args.services, "endpoints": next_ep, "ready_s": ready,
            "vm_hwm_mib": hwm, "vm_rss_mib": rss,
        }));
        if args.only.wants("sigterm") {
            // Busy: CPU time moving for 3 x 50 ms in a row = inside a full pass.
            let t = Instant::now();
            let mut busy = 0;
            let mut last = agent.cpu_ticks();
            while busy < 3 && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(50));
                let now = agent.cpu_ticks();
                busy = if now - last >= 2 { busy + 1 } else { 0 };
                last = now;
            }
            res.sigterm_in_pass = busy >= 3;
            let (took, st) = agent.terminate(Duration::from_secs(30));
            ensure!(
                st.is_some_and(|s| s.success()),
                "SIGTERM: exit status {st:?} after {took:?}"
            );
            res.sigterm_exit_s = Some(took.as_secs_f64());
            println!(
                "  SIGTERM {} a full pass over {n} entries: exit 0 in {}",
                if res.sigterm_in_pass {
                    "during"
                } else {
                    "(not caught in)"
                },
                fmt_s(took.as_secs_f64())
            );
        } else {
            agent.stop_quietly();
        }
    }

    // Empty the table before the namespace goes.
    ct.flush(&Filter::default())?;
    Ok(res)
}

trait StopQuietly {
    fn stop_quietly(&mut self);
}

impl StopQuietly for Agent {
    /// SIGTERM and wait (up to 30 s), without the contract's 1 s assertion.
    fn stop_quietly(&mut self) {
        let _ = self.terminate(Duration::from_secs(30));
    }
}

// ---------------------------------------------------------------------------------------------
// Report.

fn run(args: &Args) -> Result<()> {
    require_root()?;
    let bin = ctreap_bin();
    let m = Machine::read();
    println!("ctreap agent benchmark");
    m.print();
    println!("  agent: {}", bin.display());
    println!(
        "  conntrack-tools: {}",
        m.tools_version.as_deref().unwrap_or("not installed")
    );
    if args.only.wants("tools") {
        ensure!(
            m.tools_version.is_some(),
            "the tools group needs conntrack-tools (apt-get install -y conntrack), or --only without it"
        );
    }
    remove_stale_namespaces(NS_PREFIX);
    let max = *args.entries.iter().max().expect("entries");
    let mut knobs = Knobs::default();
    knobs.raise_for_table(max)?;

    let mut results = Vec::new();
    for &n in &args.entries {
        check_interrupted()?;
        results.push(measure_size(args, n, &bin)?);
    }

    let load_after = loadavg();
    println!();
    println!(
        "results: kernel {}; {}, {} cores; load average {} -> {load_after}; {} runs, {} backends",
        m.kernel, m.cpu, m.cpus, m.load_before, args.runs, args.backends
    );
    println!();
    println!("1. remove one backend in the API server -> its entries gone from the kernel table");
    println!(
        "  {:>9} {:>8} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>11} {:>7}",
        "entries",
        "per be.",
        "ext. p50",
        "ext. p99",
        "ext. max",
        "agent p50",
        "agent p99",
        "hist. p50",
        "hist. p99",
        "conntrack-D",
        "ratio"
    );
    for r in &results {
        let tools = median(&r.tools_s);
        println!(
            "  {:>9} {:>8} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>11} {:>6.1}x",
            r.entries,
            r.per_backend,
            fmt_s(pct(&r.external_s, 50.0)),
            fmt_s(pct(&r.external_s, 99.0)),
            fmt_s(pct(&r.external_s, 100.0)),
            fmt_s(pct(&r.agent_log_s, 50.0)),
            fmt_s(pct(&r.agent_log_s, 99.0)),
            fmt_s(r.hist_p50),
            fmt_s(r.hist_p99),
            fmt_s(tools),
            tools / median(&r.external_s)
        );
    }
    println!(
        "  (ext. = API write -> table count dropped by the backend's entries, polled every 1 ms; agent = the larger of the two \"flushed\" lines' latency_ms, watch event -> kernel ack; hist. = ctreap_flush_latency_seconds, interpolated in its buckets, both protocols' flushes; conntrack-D = median of `conntrack -D -r IP` for the same deletion; ratio = conntrack-D / ext. p50)"
    );
    println!();
    println!("2. the agent's cost");
    for r in &results {
        println!(
            "  {:>9} entries: startup pass {}, idle CPU {} of a core over {} s ({} passes), full pass amortized over --resync 60s {:.2} % of a core, VmHWM {} (one Service), ready {} after start",
            r.entries,
            fmt_s(r.startup_pass_s),
            r.idle_cpu_pct.map_or("n/a".into(), |p| format!("{p:.3} %")),
            args.idle_s,
            r.idle_passes,
            r.startup_pass_s / 60.0 * 100.0,
            r.hwm_one_service_mib
                .map_or("n/a".into(), |m| format!("{m:.1} MiB")),
            fmt_s(r.ready_s),
        );
        if let Some(v) = &r.rss10k {
            println!(
                "  {:>9} entries, {} Services / {} endpoints: VmHWM {:.1} MiB, ready {}",
                r.entries,
                v["services"],
                v["endpoints"],
                v["vm_hwm_mib"].as_f64().unwrap_or(f64::NAN),
                fmt_s(v["ready_s"].as_f64().unwrap_or(f64::NAN))
            );
        }
        if let Some(s) = r.sigterm_exit_s {
            println!(
                "  {:>9} entries: SIGTERM {} a full pass -> exit in {}",
                r.entries,
                if r.sigterm_in_pass {
                    "during"
                } else {
                    "(maybe not in)"
                },
                fmt_s(s)
            );
        }
    }

    // Targets.
    let mut targets = Vec::new();
    let mut target = |name: String, value: f64, limit: f64, unit: &str| {
        let verdict = if value.is_nan() {
            "SKIP"
        } else if value < limit {
            "PASS"
        } else {
            "FAIL"
        };
        targets.push(
            json!({"name": name, "value": value, "limit": limit, "unit": unit, "verdict": verdict}),
        );
    };
    for r in &results {
        if r.external_s.is_empty() {
            continue;
        }
        let limit = if r.entries <= 100_000 { 0.1 } else { 1.0 };
        target(
            format!("p99 API write -> kernel, {} entries (external)", r.entries),
            pct(&r.external_s, 99.0),
            limit,
            "s",
        );
        target(
            format!(
                "p99 watch event -> kernel ack, {} entries (agent)",
                r.entries
            ),
            pct(&r.agent_log_s, 99.0),
            limit,
            "s",
        );
    }
    for r in &results {
        if let Some(v) = &r.rss10k {
            target(
                format!(
                    "VmHWM with {} Services ({} entries)",
                    v["services"], r.entries
                ),
                v["vm_hwm_mib"].as_f64().unwrap_or(f64::NAN),
                64.0,
                "MiB",
            );
        }
        if let Some(p) = r.idle_cpu_pct {
            target(
                format!("idle CPU between events ({} entries)", r.entries),
                p,
                1.0,
                "% of a core",
            );
        }
        if let Some(s) = r.sigterm_exit_s {
            target(
                format!("exit after SIGTERM mid-pass ({} entries)", r.entries),
                s,
                1.0,
                "s",
            );
        }
    }
    println!();
    println!("targets:");
    for t in &targets {
        println!(
            "  {:<4}  {:<58} {:.3} {} (limit {})",
            t["verdict"].as_str().unwrap_or(""),
            t["name"].as_str().unwrap_or(""),
            t["value"].as_f64().unwrap_or(f64::NAN),
            t["unit"].as_str().unwrap_or(""),
            t["limit"]
        );
    }

    let doc = json!({
        "bench": "ctreap/agent",
        "date": m.date,
        "kernel": m.kernel,
        "cpu_model": m.cpu,
        "cpus": m.cpus,
        "conntrack_tools": m.tools_version,
        "load_average": {"start": m.load_before, "end": load_after},
        "agent": bin.display().to_string(),
        "runs": args.runs,
        "backends": args.backends,
        "sysctls": knobs.changes,
        "sizes": results.iter().map(|r| json!({
            "entries": r.entries,
            "entries_per_backend": r.per_backend,
            "fill_s": r.fill_s,
            "ready_and_startup_pass_s": r.ready_s,
            "startup_pass_s": r.startup_pass_s,
            "external_s": r.external_s,
            "agent_log_latency_s": r.agent_log_s,
            "histogram": {"observations": r.hist_count, "p50_s": r.hist_p50, "p99_s": r.hist_p99},
            "refill_s": r.refill_s,
            "conntrack_tools_delete_s": r.tools_s,
            "idle": {"seconds": args.idle_s, "cpu_percent_of_a_core": r.idle_cpu_pct, "full_passes": r.idle_passes},
            "vm_hwm_one_service_mib": r.hwm_one_service_mib,
            "many_services": r.rss10k,
            "sigterm_exit_s": r.sigterm_exit_s,
            "sigterm_during_pass": r.sigterm_in_pass,
        })).collect::<Vec<_>>(),
        "targets": targets,
    });
    write_raw_samples("agent.json", &doc)?;
    Ok(())
}
