//! The scale benchmark: what one EndpointSlice change costs the agent in a large cluster, and
//! how fast rollout bursts leave the table; a program, not a timed test (`harness = false`).
//!
//! ```text
//! cargo bench -p ctreap --bench scale [-- --clusters 10000x10,50000x10,100000x5,10000x10+20x5000 --updates 2000
//!     --rate 100 --seconds 60 --entries 100000 --removals 20 --burst-entries 1000000
//!     --burst-runs 3 --only model,churn,burst,pods]
//! ```
//!
//! A cluster `SxE` is S ClusterIP Services `svc-i` (10.100.0.1 + i, port 80/TCP) with one
//! EndpointSlice of E ready endpoints each (10.200.0.0/14, port 8080), as the agent benchmark's
//! many-Services group builds them. `SxE+LxM` adds L large Services `big-j` (10.101.0.1 + j) of
//! M endpoints in slices of 100 (issue 20); the churn then hits their slices, and every update
//! must be applied as a patch of its slice's backends, not a rebuild of its Service.
//!
//! 1. **model** (in process, no kernel): the live model ([`ClusterState`]) holding the cluster,
//!    then `--updates` EndpointSlice updates, each toggling one endpoint of a random Service
//!    (half removals, half re-adds). Timed per update: decoding the object from its JSON (as a
//!    watch event carries it), applying it, and taking the recorded changes: the model work of
//!    one update. Every removal must record exactly its one (frontend, backend) pair.
//! 2. **churn** (the real `ctreap run`, bench profile, private network namespace): the cluster in
//!    kube-testserver, plus Service `bench` (198.18.0.10:80, TCP and UDP) whose `--entries`
//!    NAT entries fill the node's table over 100 backends. Time to ready; then `--rate`
//!    EndpointSlice updates per second for `--seconds` (half removals) while, evenly spread,
//!    `--removals` backends of `bench` leave as a rollout removes them (reported terminating,
//!    then removed 200 ms later): removal (API write) -> its entries gone from the table,
//!    polled every millisecond. The agent's CPU share over the churn (utime+stime from
//!    /proc/PID/stat), CPU per update, and VmHWM idle and after the churn. Then a re-list of
//!    everything (the API server restarts with its watch history compacted, as after an etcd
//!    compaction): VmHWM once the agent is ready again, the old model and the new lists side by
//!    side, which is what a memory limit must leave room for.
//! 3. **burst** (real agent, `--burst-entries` entries; leaving backends are reported
//!    terminating 200 ms before they are removed, as in a rollout): (a) one Service with 200
//!    endpoints, 100 of them leave in one write: time from the write until the table holds
//!    exactly the other half; (b) 50 Services with 20 endpoints each (1,000 backends), 10
//!    endpoints of each of 10 Services leave in 10 writes within one second: time from the last
//!    write until the table holds exactly the rest.
//!
//! 4. **pods** (real agent): the Pod watch's cost (`--hostports`, issue 21): 10,000x10 with 110
//!    or 250 pods of this node, each with a hostPort, and 2,000 of another node, with and
//!    without `--hostports`: VmHWM, VmRSS and idle CPU.
//!
//! It prints a table with PASS/FAIL per target of issue 13 (never exiting non-zero for a FAIL:
//! the figures are noisy on a shared machine) and writes every raw sample to
//! `target/bench/scale.json`. A wrong count fails the run loudly.
//!
//! Needs root for churn and burst. Raises `nf_conntrack_max` and `nf_conntrack_buckets` for the
//! largest table and restores them on exit, error, panic and SIGINT/SIGTERM/SIGHUP; namespaces
//! are removed the same way, and one left by a SIGKILLed run by the next.

#[path = "../tests/support/agent.rs"]
mod agent;
#[path = "../../ctnetlink/benches/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::{Agent, Api, ctreap_bin, ep, ep_cond, service, slice};
use anyhow::{Context, Result, ensure};
use ctnetlink::{Conntrack, Entry, L4, Netns, Tuple};
use ctreap::cluster::ClusterState;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_testserver::{ResourceKind, Verb};
use serde_json::{Value, json};
use support::{
    Knobs, Machine, NetnsGuard, Only, POD_PORT, SERVICE, SERVICE_PORT, Workload, bench_main,
    check_interrupted, create_entries, fill_table, fmt_s, install_signal_handlers, loadavg, median,
    num, parse_flags, remove_stale_namespaces, require_root, sorted, table_count,
    write_raw_samples,
};

const USAGE: &str = "usage: cargo bench -p ctreap --bench scale [-- --clusters SxE[+LxM][,..]] [--updates U] [--rate R] [--seconds T] [--entries N] [--removals K] [--burst-entries N] [--burst-runs R] [--only model,churn,burst,pods]";
const GROUPS: [&str; 4] = ["model", "churn", "burst", "pods"];
const NS_PREFIX: &str = "ctreap-scalebench-";
/// Backends of the `bench` Service in the churn group, and per EndpointSlice.
const BENCH_BACKENDS: u32 = 100;
const PER_SLICE: u32 = 100;

#[derive(Debug, Clone)]
struct Args {
    clusters: Vec<Cluster>,
    updates: usize,
    rate: u32,
    seconds: u64,
    entries: u64,
    removals: usize,
    burst_entries: u64,
    burst_runs: usize,
    only: Only,
}

fn parse_args(it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        clusters: ["10000x10", "50000x10", "100000x5", "10000x10+20x5000"]
            .into_iter()
            .map(|c| parse_cluster(c).expect("default clusters"))
            .collect(),
        updates: 2000,
        rate: 100,
        seconds: 60,
        entries: 100_000,
        removals: 20,
        burst_entries: 1_000_000,
        burst_runs: 3,
        only: Only::default(),
    };
    parse_flags(it, USAGE, |flag, value| {
        match flag {
            "--clusters" => {
                a.clusters = value()?
                    .split(',')
                    .map(parse_cluster)
                    .collect::<Result<_, String>>()?
            }
            "--updates" => a.updates = num(&value()?, flag)?,
            "--rate" => a.rate = num(&value()?, flag)?,
            "--seconds" => a.seconds = num(&value()?, flag)?,
            "--entries" => a.entries = num(&value()?, flag)?,
            "--removals" => a.removals = num(&value()?, flag)?,
            "--burst-entries" => a.burst_entries = num(&value()?, flag)?,
            "--burst-runs" => a.burst_runs = num(&value()?, flag)?,
            "--only" => a.only.add(&value()?, &GROUPS)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if a.clusters.is_empty() {
        return Err("--clusters: at least one".into());
    }
    if a.rate == 0 || a.seconds == 0 || a.updates == 0 || a.removals == 0 || a.burst_runs == 0 {
        return Err(
            "--rate, --seconds, --updates, --removals, --burst-runs must be above 0".into(),
        );
    }
    if a.entries < u64::from(BENCH_BACKENDS) * 2 || a.burst_entries < 2000 {
        return Err("--entries at least 200, --burst-entries at least 2000".into());
    }
    Ok(a)
}

/// `SxE` or `SxE+LxM` (L large Services of M endpoints in slices of [`PER_SLICE`]).
fn parse_cluster(c: &str) -> Result<Cluster, String> {
    let shape = |part: &str| -> Result<(u32, u32), String> {
        let (s, e) = part
            .split_once('x')
            .ok_or_else(|| format!("--clusters: {c:?} is not SxE or SxE+LxM"))?;
        Ok((num(s, "--clusters")?, num(e, "--clusters")?))
    };
    let (small, large) = match c.split_once('+') {
        Some((a, b)) => (a, Some(b)),
        None => (c, None),
    };
    let (services, endpoints) = shape(small)?;
    let (large, large_endpoints) = large.map(shape).transpose()?.unwrap_or((0, 0));
    if services == 0 || services > 200_000 || endpoints == 0 || endpoints > 100 {
        return Err("--clusters: S between 1 and 200000, E between 1 and 100".into());
    }
    if large > 100 || (large > 0 && !(1..=20_000).contains(&large_endpoints)) {
        return Err("--clusters: L at most 100, M between 1 and 20000".into());
    }
    Ok(Cluster {
        services,
        endpoints,
        large,
        large_endpoints,
    })
}

fn main() {
    bench_main("scale bench", parse_args, |args| {
        install_signal_handlers();
        run(args)
    });
}

// ---------------------------------------------------------------------------------------------
// The cluster.

#[derive(Debug, Clone)]
struct Cluster {
    services: u32,
    endpoints: u32,
    /// Large Services `big-j` (10.101.0.1 + j, port 80/TCP), `large_endpoints` ready
    /// endpoints each in slices of [`PER_SLICE`]; when present, the churn hits their slices.
    large: u32,
    large_endpoints: u32,
}

impl Cluster {
    fn name(i: u32) -> String {
        format!("svc-{i}")
    }

    fn label(&self) -> String {
        let small = format!("{}x{}", self.services, self.endpoints);
        if self.large == 0 {
            small
        } else {
            format!("{small}+{}x{}", self.large, self.large_endpoints)
        }
    }

    fn service(&self, i: u32) -> Value {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 1)) + i).to_string();
        service(&Self::name(i), &[&ip], &[("http", 80, "TCP", 8080)])
    }

    fn endpoint_ip(&self, i: u32, j: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + i * self.endpoints + j)
    }

    /// Service i's one slice, endpoint `missing` left out.
    fn slice(&self, i: u32, missing: Option<u32>) -> Value {
        let eps: Vec<Value> = (0..self.endpoints)
            .filter(|j| Some(*j) != missing)
            .map(|j| ep(&self.endpoint_ip(i, j).to_string()))
            .collect();
        let name = Self::name(i);
        slice(&format!("{name}-a"), &name, &[("http", 8080, "TCP")], eps)
    }

    fn large_service(&self, j: u32) -> Value {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 101, 0, 1)) + j).to_string();
        service(&format!("big-{j}"), &[&ip], &[("http", 80, "TCP", 8080)])
    }

    fn slices_per_large(&self) -> u32 {
        self.large_endpoints.div_ceil(PER_SLICE)
    }

    /// Slice `s` of Service `big-j`, its endpoint `missing` (0..PER_SLICE) left out.
    fn large_slice(&self, j: u32, s: u32, missing: Option<u32>) -> Value {
        let base = u32::from(Ipv4Addr::new(10, 224, 0, 1)) + j * self.large_endpoints;
        let eps: Vec<Value> = (s * PER_SLICE..((s + 1) * PER_SLICE).min(self.large_endpoints))
            .filter(|k| Some(k - s * PER_SLICE) != missing)
            .map(|k| ep(&Ipv4Addr::from(base + k).to_string()))
            .collect();
        let name = format!("big-{j}");
        slice(&format!("{name}-{s}"), &name, &[("http", 8080, "TCP")], eps)
    }

    /// Every object of the cluster, Services before their slices.
    fn objects(&self) -> impl Iterator<Item = Value> + '_ {
        let small = (0..self.services).flat_map(|i| [self.service(i), self.slice(i, None)]);
        let large = (0..self.large).flat_map(move |j| {
            std::iter::once(self.large_service(j))
                .chain((0..self.slices_per_large()).map(move |s| self.large_slice(j, s, None)))
        });
        small.chain(large)
    }

    /// What the churn toggles endpoints in: each small Service's slice, or, with large
    /// Services, each of their slices.
    fn units(&self) -> u32 {
        if self.large == 0 {
            self.services
        } else {
            self.large * self.slices_per_large()
        }
    }

    fn per_unit(&self) -> u32 {
        if self.large == 0 {
            self.endpoints
        } else {
            PER_SLICE.min(self.large_endpoints)
        }
    }

    /// Unit `u` without its endpoint `missing`.
    fn unit_slice(&self, u: u32, missing: Option<u32>) -> Value {
        if self.large == 0 {
            self.slice(u, missing)
        } else {
            let per = self.slices_per_large();
            self.large_slice(u / per, u % per, missing)
        }
    }

    /// Endpoints per Service the churn hits: an update rebuilds at most that one Service.
    fn churned_service_size(&self) -> u32 {
        if self.large == 0 {
            self.endpoints
        } else {
            self.large_endpoints
        }
    }

    fn total(&self) -> u64 {
        u64::from(self.services) * u64::from(self.endpoints)
            + u64::from(self.large) * u64::from(self.large_endpoints)
    }
}

/// A small deterministic generator (64-bit LCG, Knuth's constants): the same updates every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(below)) as u32
    }
}

/// The churn: updates alternate between a removal (one endpoint of a random unit, a Service's
/// or a large Service's slice, that has none missing) and a re-add (the oldest endpoint
/// missing comes back), so half of them are removals.
struct Churn {
    rng: Lcg,
    missing: Vec<Option<u32>>,
    gone: std::collections::VecDeque<u32>,
    k: u64,
}

impl Churn {
    fn new(c: &Cluster) -> Churn {
        Churn {
            rng: Lcg(0x5eed),
            missing: vec![None; c.units() as usize],
            gone: std::collections::VecDeque::new(),
            k: 0,
        }
    }

    /// The next update: the unit's slice as it is now, and whether it is a removal.
    fn next(&mut self, c: &Cluster) -> (Value, bool) {
        self.k += 1;
        if self.k.is_multiple_of(2)
            && let Some(u) = self.gone.pop_front()
        {
            self.missing[u as usize] = None;
            return (c.unit_slice(u, None), false);
        }
        let units = c.units();
        let mut u = self.rng.next(units);
        while self.missing[u as usize].is_some() {
            u = (u + 1) % units;
        }
        let j = self.rng.next(c.per_unit());
        self.missing[u as usize] = Some(j);
        self.gone.push_back(u);
        (c.unit_slice(u, Some(j)), true)
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

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The system allocator, counting the bytes live on the heap: what the model holds, exactly,
/// whatever the allocator's fragmentation makes of VmRSS.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Microseconds, for the model's per-update work.
fn fmt_us(v: f64) -> String {
    format!("{:.1} µs", v * 1e6)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

// ---------------------------------------------------------------------------------------------
// 1. model

#[derive(Default)]
struct ModelResult {
    label: String,
    endpoints: u64,
    /// Endpoints per Service: an update rebuilds one Service, so its work follows this.
    per_service: u32,
    list_s: f64,
    /// Heap bytes the model holds once its inputs are freed.
    model_mib: f64,
    update_s: Vec<f64>,
}

fn measure_model(c: &Cluster, updates: usize) -> Result<ModelResult> {
    let label = c.label();
    println!();
    println!("== model: {label} ({} endpoints)", c.total());
    let heap0 = live_bytes();
    let mut services: Vec<Service> = Vec::with_capacity(c.services as usize);
    let mut slices: Vec<EndpointSlice> = Vec::with_capacity(c.services as usize);
    for obj in c.objects() {
        if obj["kind"] == "Service" {
            services.push(serde_json::from_value(obj).context("Service JSON")?);
        } else {
            slices.push(serde_json::from_value(obj).context("slice JSON")?);
        }
    }
    let mut st = ClusterState::new(Vec::new());
    let t = Instant::now();
    st.replace_objects(services, slices);
    let list_s = t.elapsed().as_secs_f64();
    let stats = st.map().stats();
    ensure!(
        stats.backends as u64 == c.total(),
        "the model holds {} backends, wanted {}",
        stats.backends,
        c.total()
    );
    st.take_changes();
    let model_mib = live_bytes().saturating_sub(heap0) as f64 / (1024.0 * 1024.0);
    println!(
        "  lists applied in {}; the model holds {model_mib:.1} MiB",
        fmt_s(list_s)
    );

    // The updates as a watch delivers them: JSON bytes, decoded in the timed part.
    let mut churn = Churn::new(c);
    let work: Vec<(Vec<u8>, bool)> = (0..updates)
        .map(|_| {
            let (slice, removal) = churn.next(c);
            (serde_json::to_vec(&slice).expect("JSON"), removal)
        })
        .collect();
    let mut update_s = Vec::with_capacity(updates);
    let patched0 = st.patched_updates();
    for (bytes, removal) in &work {
        let t = Instant::now();
        let slice: EndpointSlice = serde_json::from_slice(bytes).context("decoding a slice")?;
        st.apply_endpoint_slice(slice);
        let changes = st.take_changes();
        update_s.push(t.elapsed().as_secs_f64());
        let want = usize::from(*removal);
        ensure!(
            changes.len() == want,
            "an update recorded {} changed pairs, wanted {want}: {changes:?}",
            changes.len()
        );
    }
    // Each update lists its endpoints in one slice only: every one must have been a patch of
    // that slice's backends, not a rebuild of its Service.
    let patched = st.patched_updates() - patched0;
    ensure!(
        patched == updates as u64,
        "{patched} of {updates} updates patched their slice's backends; the rest rebuilt their Service"
    );
    println!(
        "  {updates} updates, each a patch of its slice's backends: model work per update p50 {} p99 {} max {}",
        fmt_us(pct(&update_s, 50.0)),
        fmt_us(pct(&update_s, 99.0)),
        fmt_us(pct(&update_s, 100.0))
    );
    Ok(ModelResult {
        label,
        per_service: c.churned_service_size(),
        endpoints: c.total(),
        list_s,
        model_mib,
        update_s,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. churn

#[derive(Default)]
struct ChurnResult {
    label: String,
    endpoints: u64,
    entries: u64,
    ready_s: f64,
    hwm_idle_mib: f64,
    hwm_churn_mib: f64,
    /// After a re-list of everything: the old model and the new lists side by side.
    hwm_relist_mib: f64,
    cpu_share: f64,
    updates: u64,
    removals_in_churn: u64,
    wall_s: f64,
    flush_s: Vec<f64>,
}

/// The `bench` Service's slices over `w.backends` backends, `missing` left out.
fn bench_slices(w: &Workload, missing: &[u32]) -> Vec<Value> {
    (0..w.backends.div_ceil(PER_SLICE))
        .map(|s| bench_slice(w, s, missing, &[]))
        .collect()
}

/// Slice `s` of `bench` without the `missing` backends, the `terminating` ones reported as a
/// pod deleted the normal way is during its grace period (not ready, serving, terminating).
fn bench_slice(w: &Workload, s: u32, missing: &[u32], terminating: &[u32]) -> Value {
    let eps: Vec<Value> = (s * PER_SLICE..((s + 1) * PER_SLICE).min(w.backends))
        .filter(|b| !missing.contains(b))
        .map(|b| endpoint(&w.backend_ip(b).to_string(), terminating.contains(&b)))
        .collect();
    slice(
        &format!("bench-{s}"),
        "bench",
        &[("tcp", POD_PORT, "TCP"), ("udp", POD_PORT, "UDP")],
        eps,
    )
}

/// A ready endpoint, or a terminating one (not ready, still serving).
fn endpoint(ip: &str, terminating: bool) -> Value {
    if terminating {
        ep_cond(ip, false, true, true)
    } else {
        ep(ip)
    }
}

/// How long a terminating write is left before the removal that follows it: a rollout's
/// removal comes seconds after the pod was reported terminating; the agent must have seen the
/// first write, or the two arrive together and look like a force-delete (`--move-grace`).
const TERMINATING_LEAD: Duration = Duration::from_millis(200);

fn bench_service() -> Value {
    service(
        "bench",
        &[&SERVICE.to_string()],
        &[
            ("tcp", SERVICE_PORT, "TCP", POD_PORT),
            ("udp", SERVICE_PORT, "UDP", POD_PORT),
        ],
    )
}

/// The agent as every group here runs it, ready and past its startup pass; and the seconds
/// to ready.
fn start_agent(bin: &std::path::Path, api: &Api, ns: &str) -> (Agent, f64) {
    Agent::start_bin_passed(
        bin,
        &api.kubeconfig,
        ns,
        &["--resync", "5m", "--log-format", "json"],
        "startup",
    )
}

fn apply_cluster(api: &Api, c: &Cluster) {
    let mut objs = Vec::new();
    for obj in c.objects() {
        objs.push(obj);
        if objs.len() >= 2000 {
            api.apply_all(std::mem::take(&mut objs));
        }
    }
    api.apply_all(objs);
}

/// Waits until the table holds `target` entries (fails on fewer: a wrong delete).
fn wait_count(ct: &mut Conntrack, target: u64, what: &str, agent: &Agent) -> Result<()> {
    let t = Instant::now();
    loop {
        let n = table_count(ct)?;
        ensure!(
            n >= target,
            "WRONG COUNT: {what}: the table went down to {n}, wanted {target}"
        );
        if n == target {
            return Ok(());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: {} entries too many after 60 s; log:\n{}",
            n - target,
            agent.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn measure_churn(args: &Args, c: &Cluster, bin: &std::path::Path) -> Result<ChurnResult> {
    let label = c.label();
    let n = args.entries;
    let w = Workload {
        entries: n,
        backends: BENCH_BACKENDS,
    };
    println!();
    println!(
        "== churn: {label} ({} endpoints), {n} entries on the node, {} updates/s for {} s",
        c.total(),
        args.rate,
        args.seconds
    );
    let ns_name = format!("{NS_PREFIX}{}-churn", std::process::id());
    let _ns_guard = NetnsGuard::add(&ns_name)?;
    let ns = Netns::named(&ns_name);
    let mut ct = Conntrack::open_in(Some(&ns)).context("opening ctnetlink in the namespace")?;
    fill_table(&mut ct, &w, false)?;
    let api = Api::start();
    api.apply(bench_service());
    api.apply_all(bench_slices(&w, &[]));
    let t = Instant::now();
    apply_cluster(&api, c);
    println!(
        "  cluster in the API server in {}",
        fmt_s(t.elapsed().as_secs_f64())
    );

    let (mut agent, ready_s) = start_agent(bin, &api, &ns_name);
    // The agent's own share of the time to ready (the API server here shares the 2 cores).
    let ready_cpu_s = agent.cpu_ticks() as f64 / clk_tck();
    ensure!(
        table_count(&mut ct)? == n,
        "the startup pass deleted live entries"
    );
    std::thread::sleep(Duration::from_secs(2));
    let hwm_idle_mib = mib(agent.status_kib("VmHWM"));
    // Resident now beside the peak, heap and the like (anon) apart from the binary (file): is
    // the peak the model at rest or something passing during the lists?
    println!(
        "  ready in {} (agent CPU until then {}), VmHWM idle {hwm_idle_mib:.1} MiB (VmRSS {:.1}: anon {:.1}, file {:.1})",
        fmt_s(ready_s),
        fmt_s(ready_cpu_s),
        mib(agent.status_kib("VmRSS")),
        mib(agent.status_kib("RssAnon")),
        mib(agent.status_kib("RssFile")),
    );

    let stop = AtomicBool::new(false);
    let updates = AtomicU64::new(0);
    let removals = AtomicU64::new(0);
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = u64::from(args.rate) * args.seconds;
    let ticks0 = agent.cpu_ticks();
    let t0 = Instant::now();
    let mut flush_s = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let churner = scope.spawn(|| {
            let mut churn = Churn::new(c);
            for k in 0..total {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let due = t0 + period * k as u32;
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let (slice, removal) = churn.next(c);
                api.apply(slice);
                updates.fetch_add(1, Ordering::Relaxed);
                if removal {
                    removals.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let res = (|| -> Result<()> {
            let every = Duration::from_secs(args.seconds).as_secs_f64() / args.removals as f64;
            for r in 0..args.removals {
                check_interrupted()?;
                let due = t0 + Duration::from_secs_f64(every * (r as f64 + 0.3));
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let b = (r as u32 * 37 + 11) % w.backends;
                let gone = w.per_backend(b);
                // A rollout's removal: terminating first, then removed (timed).
                api.apply(bench_slice(&w, b / PER_SLICE, &[], &[b]));
                std::thread::sleep(TERMINATING_LEAD);
                let t = Instant::now();
                api.apply(bench_slice(&w, b / PER_SLICE, &[b], &[]));
                wait_count(&mut ct, n - gone, "a removal under churn", &agent)?;
                flush_s.push(t.elapsed().as_secs_f64());
                api.apply(bench_slice(&w, b / PER_SLICE, &[], &[]));
                std::thread::sleep(Duration::from_millis(300));
                create_entries(&mut ct, &w, w.indices_of(b), false)?;
                std::thread::sleep(Duration::from_millis(100));
                ensure!(
                    table_count(&mut ct)? == n,
                    "refill of backend {b}: re-created entries deleted"
                );
            }
            Ok(())
        })();
        if res.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        churner.join().expect("churn thread");
        res
    })?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = (agent.cpu_ticks() - ticks0) as f64 / clk_tck();
    let hwm_churn_mib = mib(agent.status_kib("VmHWM"));
    let relist_s = relist(&api, &mut agent)?;
    let hwm_relist_mib = mib(agent.status_kib("VmHWM"));
    let _ = agent.terminate(Duration::from_secs(30));
    let res = ChurnResult {
        label,
        endpoints: c.total(),
        entries: n,
        ready_s,
        hwm_idle_mib,
        hwm_churn_mib,
        hwm_relist_mib,
        cpu_share: cpu_s / wall_s,
        updates: updates.load(Ordering::Relaxed),
        removals_in_churn: removals.load(Ordering::Relaxed),
        wall_s,
        flush_s,
    };
    println!(
        "  {} updates ({} removals) in {:.1} s: agent CPU {:.1} % of a core, {} per update; removal -> flush p50 {} p99 {}; VmHWM {:.1} MiB",
        res.updates,
        res.removals_in_churn,
        wall_s,
        res.cpu_share * 100.0,
        fmt_s(cpu_s / res.updates.max(1) as f64),
        fmt_s(pct(&res.flush_s, 50.0)),
        fmt_s(pct(&res.flush_s, 99.0)),
        hwm_churn_mib
    );
    println!(
        "  re-list of everything (API server restarted, history compacted): ready again within {}; VmHWM {hwm_relist_mib:.1} MiB",
        fmt_s(relist_s)
    );
    ct.flush(&ctnetlink::Filter::default())?;
    Ok(res)
}

/// Makes the agent list everything again, as after an API server restart that lost the watch
/// history (every watch fails after its list, and resuming meets 410 Gone), and waits until
/// it is ready on the new lists: every page of both lists served (no list request for a
/// second) and /readyz 200. Returns the seconds until then: an upper bound, by that second.
fn relist(api: &Api, agent: &mut Agent) -> Result<f64> {
    let kinds = [ResourceKind::Service, ResourceKind::EndpointSlice];
    let lists = || kinds.map(|k| api.server.request_count(k, Verb::List));
    let before = lists();
    let t = Instant::now();
    let compact_and_restart = || -> Result<Instant> {
        api.server.compact();
        api.server
            .restart_blocking()
            .context("restarting kube-testserver")?;
        Ok(Instant::now())
    };
    let mut compacted = compact_and_restart()?;
    let (mut last, mut still_since) = (before, Instant::now());
    loop {
        check_interrupted()?;
        let now = lists();
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
        let relisted = now.iter().zip(before).all(|(n, b)| *n > b);
        // A watch that took a bookmark between the compaction and the restart resumes at the
        // compacted revision, which is not expired, and does not list: compact again.
        if !relisted
            && still_since.elapsed() >= Duration::from_secs(3)
            && compacted.elapsed() >= Duration::from_secs(3)
        {
            println!("  (a watch resumed without listing: compacting again)");
            compacted = compact_and_restart()?;
        }
        if relisted && still_since.elapsed() >= Duration::from_secs(1) && agent.readyz().0 == 200 {
            return Ok(t.elapsed().as_secs_f64());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(300),
            "no complete re-list within 300 s (list requests {before:?} -> {now:?}); log:\n{}",
            agent.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. burst

#[derive(Default)]
struct BurstResult {
    one_service_s: Vec<f64>,
    ten_services_s: Vec<f64>,
    hwm_mib: f64,
}

/// Entry i of a table spread over `services` Services of `per` backends each: backend
/// b = i % (services·per) of Service b / per, whose frontend is 198.18.1.0 + s : 80.
fn multi_entry(w: &Workload, per: u32, i: u64) -> Entry {
    let b = (i % u64::from(w.backends)) as u32;
    let mut e = w.entry(i);
    let frontend = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + b / per);
    let l4 = e.orig.proto;
    let sport = l4.src_port.expect("workload entries have ports");
    e.orig = Tuple::new(
        e.orig.src,
        frontend.into(),
        L4::ports(l4.num, sport, SERVICE_PORT),
    );
    e
}

fn multi_service(s: u32) -> Value {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + s).to_string();
    service(
        &format!("multi-{s}"),
        &[&ip],
        &[
            ("tcp", SERVICE_PORT, "TCP", POD_PORT),
            ("udp", SERVICE_PORT, "UDP", POD_PORT),
        ],
    )
}

/// Slice of Service `multi-s` without its first `missing` backends, the next `terminating`
/// ones terminating (see [`bench_slice`]).
fn multi_slice(w: &Workload, per: u32, s: u32, missing: u32, terminating: u32) -> Value {
    let eps: Vec<Value> = (s * per..(s + 1) * per)
        .skip(missing as usize)
        .enumerate()
        .map(|(k, b)| endpoint(&w.backend_ip(b).to_string(), (k as u32) < terminating))
        .collect();
    slice(
        &format!("multi-{s}-a"),
        &format!("multi-{s}"),
        &[("tcp", POD_PORT, "TCP"), ("udp", POD_PORT, "UDP")],
        eps,
    )
}

fn create_multi(ct: &mut Conntrack, w: &Workload, per: u32, idx: Vec<u64>) -> Result<u64> {
    let mut made = 0;
    for chunk in idx.chunks(support::FILL_CHUNK) {
        let entries: Vec<Entry> = chunk.iter().map(|&i| multi_entry(w, per, i)).collect();
        let r = ct.create_batch(&entries).context("create_batch")?;
        ensure!(
            r.ok == entries.len() as u64,
            "create_batch accepted {} of {}: {:?}",
            r.ok,
            entries.len(),
            r.failed.first()
        );
        made += r.ok;
    }
    Ok(made)
}

fn measure_burst(args: &Args, bin: &std::path::Path) -> Result<BurstResult> {
    let n = args.burst_entries;
    let mut res = BurstResult::default();
    let ns_name = format!("{NS_PREFIX}{}-burst", std::process::id());
    let _ns_guard = NetnsGuard::add(&ns_name)?;
    let ns = Netns::named(&ns_name);
    let mut ct = Conntrack::open_in(Some(&ns)).context("opening ctnetlink in the namespace")?;

    // a. One Service, 200 endpoints, 100 leave in one write.
    println!();
    println!("== burst a: {n} entries over 200 backends of one Service; 100 leave in one write");
    let w = Workload {
        entries: n,
        backends: 200,
    };
    fill_table(&mut ct, &w, false)?;
    let api = Api::start();
    api.apply(bench_service());
    api.apply_all(bench_slices(&w, &[]));
    let (mut agent, _) = start_agent(bin, &api, &ns_name);
    let half: Vec<u32> = (0..PER_SLICE).collect();
    let gone: u64 = half.iter().map(|&b| w.per_backend(b)).sum();
    for r in 0..args.burst_runs {
        check_interrupted()?;
        ensure!(table_count(&mut ct)? == n, "table not full before run {r}");
        api.apply(bench_slice(&w, 0, &[], &half));
        std::thread::sleep(TERMINATING_LEAD);
        let t = Instant::now();
        api.apply(bench_slice(&w, 0, &half, &[]));
        wait_count(&mut ct, n - gone, "burst a", &agent)?;
        let dt = t.elapsed().as_secs_f64();
        res.one_service_s.push(dt);
        println!(
            "  run {r}: {gone} entries of 100 backends gone {} after the write",
            fmt_s(dt)
        );
        api.apply(bench_slice(&w, 0, &[], &[]));
        std::thread::sleep(Duration::from_millis(300));
        let idx = half.iter().flat_map(|&b| w.indices_of(b));
        create_entries(&mut ct, &w, idx, false)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    res.hwm_mib = mib(agent.status_kib("VmHWM"));
    let _ = agent.terminate(Duration::from_secs(30));
    ct.flush(&ctnetlink::Filter::default())?;
    drop(api);

    // b. 50 Services x 20 endpoints; 10 endpoints of each of 10 Services leave, 10 writes in 1 s.
    println!();
    println!(
        "== burst b: {n} entries over 1000 backends of 50 Services; 100 backends of 10 Services leave in 10 writes within 1 s"
    );
    let per = 20;
    let w = Workload {
        entries: n,
        backends: 1000,
    };
    create_multi(&mut ct, &w, per, (0..n).collect())?;
    ensure!(table_count(&mut ct)? == n, "burst b: table not filled");
    let api = Api::start();
    for s in 0..50 {
        api.apply(multi_service(s));
        api.apply(multi_slice(&w, per, s, 0, 0));
    }
    let (mut agent, _) = start_agent(bin, &api, &ns_name);
    for r in 0..args.burst_runs {
        check_interrupted()?;
        ensure!(table_count(&mut ct)? == n, "table not full before run {r}");
        // Services 5r.. (10 of them), their first 10 backends each.
        let services: Vec<u32> = (0..10).map(|k| (k * 5 + r as u32) % 50).collect();
        let leaving: Vec<u32> = services
            .iter()
            .flat_map(|&s| (s * per..s * per + 10).collect::<Vec<_>>())
            .collect();
        let gone: u64 = leaving.iter().map(|&b| w.per_backend(b)).sum();
        for &s in &services {
            api.apply(multi_slice(&w, per, s, 0, 10));
        }
        std::thread::sleep(TERMINATING_LEAD);
        let t0 = Instant::now();
        for (k, &s) in services.iter().enumerate() {
            let due = t0 + Duration::from_millis(100 * k as u64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            api.apply(multi_slice(&w, per, s, 10, 0));
        }
        let t = Instant::now();
        wait_count(&mut ct, n - gone, "burst b", &agent)?;
        let dt = t.elapsed().as_secs_f64();
        res.ten_services_s.push(dt);
        println!(
            "  run {r}: {gone} entries of 100 backends gone {} after the last of 10 writes",
            fmt_s(dt)
        );
        for &s in &services {
            api.apply(multi_slice(&w, per, s, 0, 0));
        }
        std::thread::sleep(Duration::from_millis(300));
        let idx: Vec<u64> = leaving.iter().flat_map(|&b| w.indices_of(b)).collect();
        create_multi(&mut ct, &w, per, idx)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    res.hwm_mib = res.hwm_mib.max(mib(agent.status_kib("VmHWM")));
    let _ = agent.terminate(Duration::from_secs(30));
    ct.flush(&ctnetlink::Filter::default())?;
    Ok(res)
}

// ---------------------------------------------------------------------------------------------
// 4. pods

/// How long the agent idles while its CPU is counted.
const PODS_IDLE: Duration = Duration::from_secs(30);

struct PodsResult {
    pods: u32,
    hostports: bool,
    hwm_mib: f64,
    rss_mib: f64,
    idle_cpu: f64,
}

/// A Pod of `node` with hostPort 9000 + i/UDP (a DaemonSet's, say), running, ready.
fn bench_pod(node: &str, i: u32) -> Value {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 1)) + i).to_string();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{node}-pod-{i}"), "namespace": "default",
                        "labels": {"app": "bench"}},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "bench",
               "ports": [{"containerPort": 9000, "hostPort": 9000 + i % 1000, "protocol": "UDP"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// The Pod watch's cost: the real agent on 10,000x10 with 110 or 250 pods of its node (each
/// with a hostPort: the worst case) and 2,000 pods of another node, with and without
/// --hostports: VmHWM and VmRSS once ready, and CPU over [`PODS_IDLE`] of idling.
fn measure_pods(bin: &std::path::Path) -> Result<Vec<PodsResult>> {
    let c = parse_cluster("10000x10").map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    for n in [110u32, 250] {
        for hostports in [false, true] {
            check_interrupted()?;
            println!();
            println!("== pods: {n} of this node's, --hostports={hostports}");
            let ns_name = format!("{NS_PREFIX}{}-pods", std::process::id());
            let _ns_guard = NetnsGuard::add(&ns_name)?;
            let api = Api::start();
            apply_cluster(&api, &c);
            let mut objs: Vec<Value> = (0..n).map(|i| bench_pod(agent::NODE, i)).collect();
            objs.extend((0..2000).map(|i| bench_pod("node-2", 1000 + i)));
            for chunk in objs.chunks(500) {
                api.apply_all(chunk.to_vec());
            }
            let flag = format!("--hostports={hostports}");
            let (agent, _) = Agent::start_bin_passed(
                bin,
                &api.kubeconfig,
                &ns_name,
                &["--resync", "5m", "--log-format", "json", &flag],
                "startup",
            );
            std::thread::sleep(Duration::from_secs(2));
            let ticks0 = agent.cpu_ticks();
            let t = Instant::now();
            std::thread::sleep(PODS_IDLE);
            let idle_cpu =
                (agent.cpu_ticks() - ticks0) as f64 / clk_tck() / t.elapsed().as_secs_f64();
            let r = PodsResult {
                pods: n,
                hostports,
                hwm_mib: mib(agent.status_kib("VmHWM")),
                rss_mib: mib(agent.status_kib("VmRSS")),
                idle_cpu,
            };
            println!(
                "  VmHWM {:.1} MiB, VmRSS {:.1} MiB, idle CPU {:.2}% of a core",
                r.hwm_mib,
                r.rss_mib,
                r.idle_cpu * 100.0
            );
            let mut agent = agent;
            let _ = agent.terminate(Duration::from_secs(30));
            out.push(r);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Report.

fn run(args: &Args) -> Result<()> {
    let m = Machine::read();
    println!("ctreap scale benchmark");
    m.print();
    let kernel_groups =
        args.only.wants("churn") || args.only.wants("burst") || args.only.wants("pods");
    let bin = if kernel_groups {
        require_root()?;
        let bin = ctreap_bin();
        println!("  agent: {}", bin.display());
        Some(bin)
    } else {
        None
    };
    remove_stale_namespaces(NS_PREFIX);
    let mut knobs = Knobs::default();
    if kernel_groups {
        knobs.raise_for_table(args.entries.max(args.burst_entries))?;
    }

    let mut models = Vec::new();
    let mut churns = Vec::new();
    let mut burst = None;
    let mut pods = Vec::new();
    for c in &args.clusters {
        if args.only.wants("model") {
            check_interrupted()?;
            models.push(measure_model(c, args.updates)?);
        }
        if let Some(bin) = &bin
            && args.only.wants("churn")
        {
            check_interrupted()?;
            churns.push(measure_churn(args, c, bin)?);
        }
    }
    if let Some(bin) = &bin
        && args.only.wants("burst")
    {
        check_interrupted()?;
        burst = Some(measure_burst(args, bin)?);
    }
    if let Some(bin) = &bin
        && args.only.wants("pods")
    {
        check_interrupted()?;
        pods = measure_pods(bin)?;
    }

    println!();
    println!(
        "results: kernel {}; {}, {} cores; load average {} -> {}",
        m.kernel,
        m.cpu,
        m.cpus,
        m.load_before,
        loadavg()
    );
    let mut targets: Vec<(String, String, bool)> = Vec::new();
    if !models.is_empty() {
        println!();
        println!("1. model work per EndpointSlice update (decode + apply + changes), in process");
        println!(
            "  {:>10} {:>10} | {:>9} {:>9} | {:>9} {:>9} {:>9}",
            "cluster", "endpoints", "lists", "model", "p50", "p99", "max"
        );
        for r in &models {
            println!(
                "  {:>10} {:>10} | {:>9} {:>5.1} MiB | {:>9} {:>9} {:>9}",
                r.label,
                r.endpoints,
                fmt_s(r.list_s),
                r.model_mib,
                fmt_us(pct(&r.update_s, 50.0)),
                fmt_us(pct(&r.update_s, 99.0)),
                fmt_us(pct(&r.update_s, 100.0))
            );
            let p50 = pct(&r.update_s, 50.0);
            targets.push((
                format!(
                    "model work per update, {} endpoints: median <= 1 ms",
                    r.endpoints
                ),
                fmt_us(p50),
                p50 <= 1e-3,
            ));
        }
        // An update rebuilds its one Service: compare cluster sizes at the same Service size
        // (10,000x10 with 50,000x10), not Services of 5 endpoints with Services of 10.
        let mut by_shape: BTreeMap<u32, Vec<&ModelResult>> = BTreeMap::new();
        for r in &models {
            by_shape.entry(r.per_service).or_default().push(r);
        }
        for (e, rs) in by_shape.into_iter().filter(|(_, rs)| rs.len() >= 2) {
            let (lo, hi) = rs
                .iter()
                .map(|r| pct(&r.update_s, 50.0))
                .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let labels: Vec<&str> = rs.iter().map(|r| r.label.as_str()).collect();
            targets.push((
                format!(
                    "model work per update: the same at every cluster size, {e} endpoints per Service ({}; largest / smallest median <= 2)",
                    labels.join(", ")
                ),
                format!("{:.2}x", hi / lo),
                hi / lo <= 2.0,
            ));
        }
    }
    if !churns.is_empty() {
        println!();
        println!("2. the real agent under EndpointSlice churn");
        println!(
            "  {:>10} {:>10} {:>8} | {:>8} | {:>7} {:>10} {:>9} | {:>9} {:>9} | {:>9} {:>9} {:>11}",
            "cluster",
            "endpoints",
            "entries",
            "ready",
            "updates",
            "CPU share",
            "CPU/upd",
            "flush p50",
            "flush p99",
            "HWM idle",
            "HWM churn",
            "HWM re-list"
        );
        for r in &churns {
            let cpu_per = r.cpu_share * r.wall_s / r.updates.max(1) as f64;
            println!(
                "  {:>10} {:>10} {:>8} | {:>8} | {:>7} {:>9.1}% {:>9} | {:>9} {:>9} | {:>5.1} MiB {:>5.1} MiB {:>7.1} MiB",
                r.label,
                r.endpoints,
                r.entries,
                fmt_s(r.ready_s),
                r.updates,
                r.cpu_share * 100.0,
                fmt_s(cpu_per),
                fmt_s(pct(&r.flush_s, 50.0)),
                fmt_s(pct(&r.flush_s, 99.0)),
                r.hwm_idle_mib,
                r.hwm_churn_mib,
                r.hwm_relist_mib
            );
            let big = r.endpoints >= 500_000;
            if big {
                targets.push((
                    format!(
                        "{} updates/s at {} endpoints: agent CPU <= 15% of a core",
                        args.rate, r.endpoints
                    ),
                    format!("{:.1} %", r.cpu_share * 100.0),
                    r.cpu_share <= 0.15,
                ));
                targets.push((
                    format!("time to ready at {} endpoints <= 15 s", r.endpoints),
                    fmt_s(r.ready_s),
                    r.ready_s <= 15.0,
                ));
            }
            if r.label.contains('+') {
                // Issue 20: an event costs its slice, not its (5,000-endpoint) Service.
                targets.push((
                    format!("{}: agent CPU per update <= 0.5 ms", r.label),
                    fmt_s(cpu_per),
                    cpu_per <= 0.5e-3,
                ));
                targets.push((
                    format!("{}: agent CPU <= 5% of a core", r.label),
                    format!("{:.1} %", r.cpu_share * 100.0),
                    r.cpu_share <= 0.05,
                ));
            }
            targets.push((
                format!("removal -> flush under churn, {}: p99 <= 100 ms", r.label),
                fmt_s(pct(&r.flush_s, 99.0)),
                pct(&r.flush_s, 99.0) <= 0.1,
            ));
            targets.push((
                format!("VmHWM idle and under churn, {}: <= 96 MiB", r.label),
                format!("{:.1} MiB", r.hwm_churn_mib.max(r.hwm_idle_mib)),
                r.hwm_churn_mib.max(r.hwm_idle_mib) <= 96.0,
            ));
        }
        println!(
            "  (CPU share = the agent's utime+stime over the churn window; CPU/upd = that over the updates; flush = API write removing one `bench` backend -> its {} entries gone, polled every 1 ms)",
            args.entries / u64::from(BENCH_BACKENDS)
        );
    }
    if !pods.is_empty() {
        println!();
        println!(
            "4. the Pod watch (--hostports): this node's pods, each with a hostPort, beside 2,000 pods of other nodes and 10,000x10; idle {} s",
            PODS_IDLE.as_secs()
        );
        println!(
            "  {:>5} {:>10} | {:>9} {:>9} {:>9}",
            "pods", "hostports", "VmHWM", "VmRSS", "idle CPU"
        );
        for r in &pods {
            println!(
                "  {:>5} {:>10} | {:>5.1} MiB {:>5.1} MiB {:>8.2}%",
                r.pods,
                r.hostports,
                r.hwm_mib,
                r.rss_mib,
                r.idle_cpu * 100.0
            );
        }
        for n in [110u32, 250] {
            let of = |on: bool| pods.iter().find(|r| r.pods == n && r.hostports == on);
            if let (Some(off), Some(on)) = (of(false), of(true)) {
                let rss = on.rss_mib - off.rss_mib;
                targets.push((
                    format!("the Pod watch at {n} pods: VmRSS over --hostports=false <= 2 MiB"),
                    format!("{rss:+.1} MiB"),
                    rss <= 2.0,
                ));
                let cpu = (on.idle_cpu - off.idle_cpu) * 100.0;
                targets.push((
                    format!("the Pod watch at {n} pods: idle CPU over --hostports=false <= 0.1% of a core"),
                    format!("{cpu:+.2} %"),
                    cpu <= 0.1,
                ));
            }
        }
    }
    if let Some(b) = &burst {
        println!();
        println!("3. bursts, {} entries", args.burst_entries);
        println!(
            "  a. 100 of 200 endpoints of one Service in one write: settled p50 {} max {}",
            fmt_s(median(&b.one_service_s)),
            fmt_s(pct(&b.one_service_s, 100.0))
        );
        println!(
            "  b. 100 backends of 10 Services in 10 writes within 1 s: settled after the last write p50 {} max {}",
            fmt_s(median(&b.ten_services_s)),
            fmt_s(pct(&b.ten_services_s, 100.0))
        );
        println!("  agent VmHWM {:.1} MiB", b.hwm_mib);
        targets.push((
            "burst a (one write, 500,000 deletes of 1M): settled <= 1.5 s".into(),
            fmt_s(pct(&b.one_service_s, 100.0)),
            pct(&b.one_service_s, 100.0) <= 1.5,
        ));
        targets.push((
            "burst b (10 writes in 1 s): settled <= 0.5 s after the last write".into(),
            fmt_s(pct(&b.ten_services_s, 100.0)),
            pct(&b.ten_services_s, 100.0) <= 0.5,
        ));
        targets.push((
            "VmHWM, small cluster and 1,000,000 entries <= 96 MiB".into(),
            format!("{:.1} MiB", b.hwm_mib),
            b.hwm_mib <= 96.0,
        ));
    }
    println!();
    println!("targets (issues 13 and 20)");
    for (what, got, ok) in &targets {
        println!("  {} {what}: {got}", verdict(*ok));
    }

    let doc = json!({
        "machine": {"kernel": m.kernel, "cpu": m.cpu, "cpus": m.cpus, "date": m.date,
                    "load_before": m.load_before},
        "args": {
            "clusters": args.clusters.iter().map(Cluster::label).collect::<Vec<_>>(),
            "updates": args.updates, "rate": args.rate, "seconds": args.seconds,
            "entries": args.entries, "removals": args.removals,
            "burst_entries": args.burst_entries, "burst_runs": args.burst_runs,
        },
        "model": models.iter().map(|r| json!({
            "cluster": r.label, "endpoints": r.endpoints, "lists_s": r.list_s,
            "model_mib": r.model_mib,
            "update_s": r.update_s,
        })).collect::<Vec<_>>(),
        "churn": churns.iter().map(|r| json!({
            "cluster": r.label, "endpoints": r.endpoints, "entries": r.entries,
            "ready_s": r.ready_s, "vm_hwm_idle_mib": r.hwm_idle_mib,
            "vm_hwm_churn_mib": r.hwm_churn_mib, "vm_hwm_relist_mib": r.hwm_relist_mib,
            "cpu_share": r.cpu_share,
            "updates": r.updates, "removals_in_churn": r.removals_in_churn,
            "wall_s": r.wall_s, "flush_s": r.flush_s,
        })).collect::<Vec<_>>(),
        "burst": burst.as_ref().map(|b| json!({
            "one_service_s": b.one_service_s, "ten_services_s": b.ten_services_s,
            "vm_hwm_mib": b.hwm_mib,
        })),
        "pods": pods.iter().map(|r| json!({
            "pods": r.pods, "hostports": r.hostports, "vm_hwm_mib": r.hwm_mib,
            "vm_rss_mib": r.rss_mib, "idle_cpu_share": r.idle_cpu,
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|(w, g, ok)| json!({"target": w, "measured": g, "pass": ok})).collect::<Vec<_>>(),
    });
    write_raw_samples("scale.json", &doc)?;
    drop(knobs);
    Ok(())
}
