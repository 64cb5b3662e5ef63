//! Verdict benchmark: a map of 10,000 Services and 100,000 endpoints, then verdicts for
//! 1,000,000 synthetic flows (live, stale, not-service), several runs, on one core.
//!
//! `cargo bench -p ctreap --bench verdict` prints a table and writes target/bench/verdict.json.
//! Environment: `CTREAP_BENCH_RUNS` (default 7), `CTREAP_BENCH_FLOWS` (default 1,000,000).
//!
//! Map memory is measured with a counting global allocator: live heap bytes after the build
//! minus before, with the input objects still alive on both sides and the warnings dropped.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ctreap::cluster::ServiceMap;
use ctreap::reconcile::{
    Flow, FlushKey, Policy, VerdictCounts, classify, deletable, key_of, plan_diff,
};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter only adds
// and subtracts the sizes of the layouts it was given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SERVICES: usize = 10_000;
const ENDPOINTS_PER_SERVICE: usize = 10;
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + i as u32)
}

fn pod_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + 1 + k as u32)
}

/// Service shapes: (name, proto, port, target port), by service index.
fn shape(i: usize) -> &'static [(&'static str, &'static str, i32, i32)] {
    match i % 10 {
        0 | 1 => &[("http", "TCP", 80, 8080), ("metrics", "TCP", 9090, 9090)],
        2 => &[("dns", "UDP", 53, 5353), ("dns-tcp", "TCP", 53, 5353)],
        _ => &[("http", "TCP", 80, 8080)],
    }
}

fn node_port_of(i: usize, p: usize) -> Option<i32> {
    // One Service in five is a NodePort; 30000 + (2i + p) stays unique below 32767... for
    // the first ones; the rest share ports on purpose (collisions are the map's business).
    (i % 5 == 4).then_some(30000 + ((2 * i + p) % 2768) as i32)
}

fn conditions(rng: &mut Rng) -> (bool, bool, bool) {
    match rng.below(100) {
        0..95 => (true, true, false),
        95..98 => (false, true, true),
        _ => (false, false, true),
    }
}

fn synth_cluster(rng: &mut Rng) -> (Vec<Service>, Vec<EndpointSlice>, Node) {
    let mut services = Vec::with_capacity(SERVICES);
    let mut slices = Vec::with_capacity(SERVICES + SERVICES / 10);
    for i in 0..SERVICES {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        let ports: Vec<ServicePort> = shape(i)
            .iter()
            .enumerate()
            .map(|(p, (pname, proto, port, target))| ServicePort {
                name: Some(pname.to_string()),
                protocol: Some(proto.to_string()),
                port: *port,
                target_port: Some(IntOrString::Int(*target)),
                node_port: node_port_of(i, p),
                ..ServicePort::default()
            })
            .collect();
        services.push(Service {
            metadata: ObjectMeta {
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(if i % 5 == 4 { "NodePort" } else { "ClusterIP" }.into()),
                cluster_ip: Some(cluster_ip(i).to_string()),
                cluster_ips: Some(vec![cluster_ip(i).to_string()]),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        });
        // One Service in ten spreads its endpoints over two slices.
        let split = if i % 10 == 7 { 2 } else { 1 };
        let per = ENDPOINTS_PER_SERVICE / split;
        for s in 0..split {
            let endpoints = (0..per)
                .map(|e| {
                    let k = i * ENDPOINTS_PER_SERVICE + s * per + e;
                    let (ready, serving, terminating) = conditions(rng);
                    Endpoint {
                        addresses: vec![pod_ip(k).to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            serving: Some(serving),
                            terminating: Some(terminating),
                        }),
                        node_name: Some(format!("node-{}", k % 50)),
                        ..Endpoint::default()
                    }
                })
                .collect();
            let ports = shape(i)
                .iter()
                .map(|(pname, proto, _, target)| EndpointPort {
                    name: Some(pname.to_string()),
                    protocol: Some(proto.to_string()),
                    port: Some(*target),
                    app_protocol: None,
                })
                .collect();
            slices.push(EndpointSlice {
                metadata: ObjectMeta {
                    namespace: Some(ns.clone()),
                    name: Some(format!("{name}-{s}")),
                    labels: Some(BTreeMap::from([(
                        "kubernetes.io/service-name".to_string(),
                        name.clone(),
                    )])),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(ports),
            });
        }
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-0".into()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: NODE_IP.to_string(),
            }]),
            ..NodeStatus::default()
        }),
        spec: None,
    };
    (services, slices, node)
}

fn ip_proto(proto: &str) -> u8 {
    if proto == "UDP" { 17 } else { 6 }
}

/// Flows: 60 % to a random endpoint of a random service port (so ~95 % live, ~3 % draining,
/// ~2 % not serving), 10 % NodePort flows likewise, 15 % stale (backend gone), 15 % not to
/// a Service at all.
fn synth_flows(n: usize, rng: &mut Rng) -> Vec<Flow> {
    let client = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1));
    let mut flows = Vec::with_capacity(n);
    for j in 0..n {
        let i = rng.below(SERVICES);
        let ports = shape(i);
        let p = rng.below(ports.len());
        let (_, proto, port, target) = ports[p];
        let e = rng.below(ENDPOINTS_PER_SERVICE);
        let sport = 10_000 + (j % 50_000) as u16;
        let (dst, dport, backend) = match rng.below(100) {
            0..60 => (
                cluster_ip(i),
                port as u16,
                pod_ip(i * ENDPOINTS_PER_SERVICE + e),
            ),
            60..70 => {
                let i = (i / 5) * 5 + 4; // a NodePort Service
                match node_port_of(i, p.min(shape(i).len() - 1)) {
                    Some(np) => (NODE_IP, np as u16, pod_ip(i * ENDPOINTS_PER_SERVICE + e)),
                    None => (
                        cluster_ip(i),
                        port as u16,
                        pod_ip(i * ENDPOINTS_PER_SERVICE + e),
                    ),
                }
            }
            70..85 => (
                cluster_ip(i),
                port as u16,
                // A pod IP beyond every endpoint: gone.
                pod_ip(SERVICES * ENDPOINTS_PER_SERVICE + rng.below(1_000_000)),
            ),
            _ => {
                let dst = Ipv4Addr::from(0x2000_0000 + rng.below(1 << 24) as u32);
                (dst, 443, dst)
            }
        };
        flows.push(Flow {
            proto: ip_proto(proto),
            orig_src: client,
            orig_dst: IpAddr::V4(dst),
            orig_sport: sport,
            orig_dport: dport,
            reply_src: IpAddr::V4(backend),
            reply_dst: client,
            reply_sport: if dst == backend { dport } else { target as u16 },
            reply_dport: sport,
            zone: 0,
        });
    }
    flows
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins this thread to one CPU, so "per core" means one core. Returns the CPU, if pinned.
fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments; cpu_set_t is plain data, zeroed then filled
    // with CPU_SET, and passed with its true size to sched_setaffinity for this thread (0).
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return None;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        (libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0)
            .then_some(cpu as usize)
    }
}

struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn measure<T>(f: impl FnOnce() -> T) -> (T, Sample) {
    let (w, c) = (Instant::now(), thread_cpu());
    let out = f();
    let s = Sample {
        wall: w.elapsed(),
        cpu: thread_cpu() - c,
    };
    (out, s)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/verdict-HASH
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "deps"))
                .and_then(|deps| deps.parent()?.parent().map(PathBuf::from))
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runs = env_usize("CTREAP_BENCH_RUNS", 7).max(1);
    let n_flows = env_usize("CTREAP_BENCH_FLOWS", 1_000_000).max(1);
    let cpu = pin_to_one_cpu();
    let mut rng = Rng(0x5eed);

    let (services, slices, node) = synth_cluster(&mut rng);
    let endpoints: usize = slices.iter().map(|s| s.endpoints.len()).sum();
    let local = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(NODE_IP)];

    // Build: memory of the first build, time over several.
    let before = LIVE.load(Ordering::Relaxed);
    let ((map, warnings), build_first) =
        measure(|| ServiceMap::build(&services, &slices, Some(&node), &local));
    assert!(
        warnings.is_empty(),
        "synthetic cluster warned: {:?}",
        &warnings[..1]
    );
    drop(warnings);
    let map_bytes = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let mut build_cpu = vec![build_first.cpu];
    for _ in 1..runs.min(3) {
        let (m, s) = measure(|| ServiceMap::build(&services, &slices, Some(&node), &local));
        black_box(&m);
        build_cpu.push(s.cpu);
    }
    let stats = map.stats();

    let flows = synth_flows(n_flows, &mut rng);
    let mut verdict_cpu = Vec::new();
    let mut verdict_wall = Vec::new();
    let mut counts = VerdictCounts::default();
    for _ in 0..runs {
        let (c, s) = measure(|| {
            let mut c = VerdictCounts::default();
            for f in &flows {
                c.add(black_box(classify(&map, black_box(f))).verdict);
            }
            c
        });
        counts = c;
        verdict_cpu.push(s.cpu);
        verdict_wall.push(s.wall);
    }
    let per_million = |d: Duration| d.mul_f64(1_000_000.0 / n_flows as f64);
    let verdict_cpu_m = per_million(median(verdict_cpu.clone()));
    let verdict_wall_m = per_million(median(verdict_wall));

    // What a full pass decides: each flow judged by the agent's rule, one flush key per pair.
    let (keys, plan_s) = measure(|| {
        flows
            .iter()
            .filter(|f| deletable(&map, f, &Policy::default()).is_some())
            .map(key_of)
            .collect::<std::collections::HashSet<FlushKey>>()
    });

    // A watch-driven diff: 1 % of the endpoints leave.
    let mut fewer = slices.clone();
    for (n, s) in fewer.iter_mut().enumerate() {
        if n % 10 == 0 {
            s.endpoints.truncate(s.endpoints.len().saturating_sub(1));
        }
    }
    let (map2, _) = ServiceMap::build(&services, &fewer, Some(&node), &local);
    let (diff_keys, diff_s) = measure(|| plan_diff(&map, &map2, &Policy::default()));

    let bytes_per_endpoint = map_bytes as f64 / endpoints as f64;
    let pass = verdict_cpu_m <= Duration::from_secs(1);
    println!(
        "ctreap verdict benchmark ({} runs, one thread, pinned to CPU {:?})",
        runs, cpu
    );
    println!("{:<44} {:>14}", "figure", "value");
    let row = |k: &str, v: String| println!("{k:<44} {v:>14}");
    row("services", stats.services.to_string());
    row("service ports", stats.service_ports.to_string());
    row("frontends", stats.frontends.to_string());
    row("endpoints (slice entries)", endpoints.to_string());
    row(
        "backend entries (port x endpoint)",
        stats.backends.to_string(),
    );
    row(
        "map build, median CPU (s)",
        format!("{:.3}", secs(median(build_cpu.clone()))),
    );
    row("map heap bytes", map_bytes.to_string());
    row("map bytes per endpoint", format!("{bytes_per_endpoint:.1}"));
    row("flows per run", n_flows.to_string());
    row(
        "verdicts: median CPU per 1M flows (s)",
        format!("{:.3}", secs(verdict_cpu_m)),
    );
    row(
        "verdicts: median wall per 1M flows (s)",
        format!("{:.3}", secs(verdict_wall_m)),
    );
    row(
        "verdicts: ns per flow (CPU)",
        format!("{:.0}", verdict_cpu_m.as_nanos() as f64 / 1e6),
    );
    row(
        "deletable over all flows, keyed, CPU (s)",
        format!("{:.3}", secs(plan_s.cpu)),
    );
    row("  flush keys", keys.len().to_string());
    row(
        "plan_diff, 1% endpoints left, CPU (s)",
        format!("{:.3}", secs(diff_s.cpu)),
    );
    row("  flush keys", diff_keys.len().to_string());
    row(
        "mix: live/draining/gone/not-serving/not-svc",
        format!(
            "{}/{}/{}/{}/{}",
            counts.live,
            counts.draining,
            counts.stale_gone,
            counts.stale_not_serving,
            counts.not_service
        ),
    );
    row(
        "target <= 1 s CPU per 1M flows",
        if pass { "met" } else { "MISSED" }.into(),
    );

    let json = serde_json::json!({
        "benchmark": "verdict",
        "runs": runs,
        "pinned_cpu": cpu,
        "services": stats.services,
        "service_ports": stats.service_ports,
        "frontends": stats.frontends,
        "endpoints": endpoints,
        "backend_entries": stats.backends,
        "map_build_cpu_s_median": secs(median(build_cpu)),
        "map_heap_bytes": map_bytes,
        "map_bytes_per_endpoint": bytes_per_endpoint,
        "flows": n_flows,
        "verdict_cpu_s_per_million_median": secs(verdict_cpu_m),
        "verdict_wall_s_per_million_median": secs(verdict_wall_m),
        "verdict_cpu_s_all_runs": verdict_cpu.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "deletable_keys_cpu_s": secs(plan_s.cpu),
        "deletable_keys": keys.len(),
        "plan_diff_cpu_s": secs(diff_s.cpu),
        "plan_diff_keys": diff_keys.len(),
        "verdicts": {
            "live": counts.live,
            "draining": counts.draining,
            "stale_gone": counts.stale_gone,
            "stale_not_serving": counts.stale_not_serving,
            "not_service": counts.not_service,
        },
        "target_cpu_s_per_million": 1.0,
        "target_met": pass,
    });
    let dir = target_dir().join("bench");
    let path = dir.join("verdict.json");
    match std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).expect("JSON") + "\n",
        )
    }) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
