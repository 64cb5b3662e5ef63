//! Load: bounded churn against the real `ctreap run`.
//!
//! For a fixed time (20 s; `CTREAP_CHURN_SECS` to change it) endpoints of four Services (two
//! UDP, two TCP) are added and removed continuously, one change every 100 ms, while flows are
//! created at a steady 300 per second: nine in ten towards a current backend (one that has been
//! an endpoint for at least 500 ms, as kube-proxy needs its sync before it sends traffic
//! there), one in ten towards a backend that is not an endpoint (removed, or never added: what
//! lagging rules send to a dead pod). Every created flow is tracked. After the churn the agent
//! gets a settle period (at least one full pass, `--resync 5s`), then:
//!
//! - **zero live flows deleted**: no flow whose backend has been an endpoint of its Service
//!   without interruption from the flow's creation to the end has vanished;
//! - **zero stale flows left**: no flow in the table points at a backend that is not an
//!   endpoint of its Service now.
//!
//! The counts are printed (run with `--nocapture` to see them). The random sequence is fixed
//! (`CTREAP_CHURN_SEED` to change it), so a failure can be replayed.
//!
//! The chaos run (issue 10) does the same while the cluster misbehaves around the agent: the
//! API server restarts every 5 s (down 1.5 s each time; the churn goes on in its store), an
//! EndpointSlice that does not decode (a port that is a string) comes and goes every 2 s,
//! labelled for a churn Service (which it holds), and node addresses are added and removed on
//! the agent's namespace every 3 s. A fifth of the flows go to a NodePort on a node address
//! present for at least 500 ms. Flows whose node address was removed under them are not
//! live (their frontend is gone); the rest of the rules are the same.

#[path = "support/agent.rs"]
mod agent;
use ctnetlink_testns as common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agent::{Agent, Api, Flow, create, ep, eventually_with, service, slice, table};
use common::TestNs;
use ctnetlink::consts::*;

/// Backend IPs a Service may use (its pool); at least MIN_ENDPOINTS are endpoints at any time.
const POOL: u8 = 8;
const MIN_ENDPOINTS: usize = 2;
/// How long an endpoint must have existed before flows are sent to it (kube-proxy's lag).
const PROGRAMMED_AFTER: Duration = Duration::from_millis(500);
const CHANGE_EVERY: Duration = Duration::from_millis(100);
const CREATE_EVERY: Duration = Duration::from_millis(10);
const FLOWS_PER_TICK: usize = 3;

/// Node addresses the chaos run adds and removes (on `lo` of the agent's namespace).
const NODE_ADDRS: [&str; 3] = ["192.0.2.1", "192.0.2.2", "192.0.2.3"];
const RESTART_EVERY: Duration = Duration::from_secs(5);
const RESTART_DOWNTIME: Duration = Duration::from_millis(1500);
const JUNK_EVERY: Duration = Duration::from_secs(2);
const ADDR_EVERY: Duration = Duration::from_secs(3);

/// When something existed: every (from, until) interval, until None = still.
#[derive(Clone, Default)]
struct Life {
    since: Option<Instant>,
    history: Vec<(Instant, Option<Instant>)>,
}

impl Life {
    fn set(&mut self, live: bool, now: Instant) {
        if live {
            self.since = Some(now);
            self.history.push((now, None));
        } else {
            self.since = None;
            if let Some(last) = self.history.last_mut() {
                last.1 = Some(now);
            }
        }
    }

    /// Without interruption from `t` until now.
    fn throughout(&self, t: Instant) -> bool {
        self.history
            .last()
            .is_some_and(|(added, removed)| removed.is_none() && *added <= t)
    }

    /// For at least `d` (what kube-proxy needs before it sends traffic there).
    fn for_at_least(&self, d: Duration, now: Instant) -> bool {
        self.since.is_some_and(|t| now.duration_since(t) >= d)
    }
}

/// xorshift64*: a fixed, replayable sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Svc {
    name: String,
    proto: u8,
    proto_name: &'static str,
    frontend: SocketAddr,
    backend_port: u16,
    node_port: u16,
    /// Pool IP index -> when it was an endpoint.
    lives: Vec<Life>,
    index: usize,
}

impl Svc {
    fn backend(&self, i: usize) -> SocketAddr {
        SocketAddr::new(
            format!("10.244.{}.{}", 20 + self.index, i + 1)
                .parse()
                .expect("ip"),
            self.backend_port,
        )
    }

    fn current(&self) -> Vec<usize> {
        (0..POOL as usize)
            .filter(|i| self.lives[*i].since.is_some())
            .collect()
    }

    fn absent(&self) -> Vec<usize> {
        (0..POOL as usize)
            .filter(|i| self.lives[*i].since.is_none())
            .collect()
    }

    fn slice(&self) -> serde_json::Value {
        let ips: Vec<String> = self
            .current()
            .iter()
            .map(|i| self.backend(*i).ip().to_string())
            .collect();
        slice(
            &format!("{}-a", self.name),
            &self.name,
            &[("p", self.backend_port, self.proto_name)],
            ips.iter().map(|ip| ep(ip)).collect(),
        )
    }

    fn set(&mut self, i: usize, live: bool, now: Instant) {
        self.lives[i].set(live, now);
    }
}

/// One tracked flow: which Service and pool IP it was sent to, when, and whether that IP was a
/// programmed endpoint then.
struct Tracked {
    flow: Flow,
    svc: usize,
    ip: usize,
    /// The node address (index into [`NODE_ADDRS`]) of a NodePort flow.
    node_addr: Option<usize>,
    created: Instant,
    towards_live: bool,
}

#[test]
fn churn_deletes_no_live_flow_and_leaves_no_stale_one() {
    churn(false);
}

#[test]
fn chaos_deletes_no_live_flow_and_leaves_no_stale_one() {
    churn(true);
}

/// `ip addr add|del ADDR/32 dev lo` in namespace `ns`.
fn ip_addr(ns: &str, op: &str, addr: &str) {
    let st = std::process::Command::new("ip")
        .args(["-n", ns, "addr", op, &format!("{addr}/32"), "dev", "lo"])
        .status()
        .expect("running ip addr");
    assert!(st.success(), "ip -n {ns} addr {op} {addr}/32 dev lo");
}

fn churn(chaos: bool) {
    let secs: u64 = std::env::var("CTREAP_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CTREAP_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0ff_ee15_600d);
    let mut rng = Rng(seed | 1);

    let ns = TestNs::new("churn");
    let mut ct = ns.ct();
    let api = Api::start();
    let t0 = Instant::now();
    let mut svcs: Vec<Svc> = (0..4)
        .map(|s| {
            let udp = s < 2;
            Svc {
                name: format!("churn-{s}"),
                proto: if udp { IPPROTO_UDP } else { IPPROTO_TCP },
                proto_name: if udp { "UDP" } else { "TCP" },
                frontend: format!("10.96.2.{}:{}", s + 1, if udp { 53 } else { 80 })
                    .parse()
                    .expect("frontend"),
                backend_port: if udp { 5353 } else { 8080 },
                node_port: 30100 + s as u16,
                lives: vec![Life::default(); POOL as usize],
                index: s,
            }
        })
        .collect();
    // Four endpoints each to start with, programmed long ago.
    let long_ago = t0.checked_sub(Duration::from_secs(10)).unwrap_or(t0);
    for svc in &mut svcs {
        for i in 0..4 {
            svc.set(i, true, long_ago);
        }
        let port = svc.frontend.port();
        let mut obj = service(
            &svc.name,
            &[&svc.frontend.ip().to_string()],
            &[("p", port, svc.proto_name, svc.backend_port)],
        );
        obj["spec"]["type"] = serde_json::json!("NodePort");
        obj["spec"]["ports"][0]["nodePort"] = serde_json::json!(svc.node_port);
        api.apply(obj);
        api.apply(svc.slice());
    }
    // The chaos run's node addresses: the first from the start.
    let mut addrs = vec![Life::default(); NODE_ADDRS.len()];
    if chaos {
        ip_addr(&ns.name, "add", NODE_ADDRS[0]);
        addrs[0].set(true, long_ago);
    }
    let node_addr_of = |a: Option<usize>| a.map(|a| NODE_ADDRS[a]);
    let mut tracked: Vec<Tracked> = Vec::new();
    type Want = (usize, usize, Option<usize>, bool);
    let mut track = |ct: &mut ctnetlink::Conntrack, svcs: &[Svc], batch: Vec<Want>| {
        let now = Instant::now();
        let flows: Vec<(Flow, Want)> = batch
            .into_iter()
            .map(|want| {
                let (s, i, node_addr, _) = want;
                let svc = &svcs[s];
                let frontend = match node_addr_of(node_addr) {
                    Some(a) => format!("{a}:{}", svc.node_port),
                    None => svc.frontend.to_string(),
                };
                let f = Flow::new(svc.proto, &frontend, &svc.backend(i).to_string());
                (f, want)
            })
            .collect();
        let entries: Vec<Flow> = flows.iter().map(|(f, _)| *f).collect();
        create(ct, &entries);
        for (flow, (svc, ip, node_addr, towards_live)) in flows {
            tracked.push(Tracked {
                flow,
                svc,
                ip,
                node_addr,
                created: now,
                towards_live,
            });
        }
    };
    // Some flows to every initial backend before the agent starts.
    let mut initial = Vec::new();
    for (s, svc) in svcs.iter().enumerate() {
        for i in svc.current() {
            for _ in 0..5 {
                initial.push((s, i, None, true));
            }
        }
    }
    track(&mut ct, &svcs, initial);

    let mut agent = Agent::start(&api, &ns.name, &["--resync", "5s"]);
    agent.wait_ready(Duration::from_secs(30));

    let (mut adds, mut removes) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut next_change = start;
    let mut next_create = start;
    let mut next_junk = start + JUNK_EVERY;
    let mut next_addr = start + ADDR_EVERY;
    let mut junk: Option<String> = None;
    let (mut junk_applied, mut junk_deleted, mut addrs_added, mut addrs_removed) = (0, 0, 0, 0);
    // The API server restarts in the background, its store (and so the churn) going on.
    let delete_junk = |name: &str| {
        api.server
            .delete(
                kube_testserver::ResourceKind::EndpointSlice,
                Some("default"),
                name,
            )
            .expect("delete the junk slice");
    };
    let stop_restarts = std::sync::atomic::AtomicBool::new(false);
    let restarts = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        if chaos {
            let (server, stop, restarts) = (&api.server, &stop_restarts, &restarts);
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let mut next = Instant::now() + RESTART_EVERY;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if Instant::now() >= next {
                        rt.block_on(server.restart_with_downtime(RESTART_DOWNTIME))
                            .expect("restart");
                        restarts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        next = Instant::now() + RESTART_EVERY;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        while Instant::now() < end {
            let now = Instant::now();
            if chaos && now >= next_junk {
                next_junk += JUNK_EVERY;
                match junk.take() {
                    Some(name) => {
                        delete_junk(&name);
                        junk_deleted += 1;
                    }
                    None => {
                        let svc = &svcs[rng.below(svcs.len())];
                        let name = format!("{}-junk", svc.name);
                        let mut bad = slice(
                            &name,
                            &svc.name,
                            &[("p", svc.backend_port, svc.proto_name)],
                            vec![ep("10.244.99.1")],
                        );
                        bad["ports"][0]["port"] = serde_json::json!(svc.backend_port.to_string());
                        api.apply(bad);
                        junk = Some(name);
                        junk_applied += 1;
                    }
                }
            }
            if chaos && now >= next_addr {
                next_addr += ADDR_EVERY;
                let a = 1 + rng.below(NODE_ADDRS.len() - 1);
                let add = addrs[a].since.is_none();
                ip_addr(&ns.name, if add { "add" } else { "del" }, NODE_ADDRS[a]);
                addrs[a].set(add, Instant::now());
                if add {
                    addrs_added += 1;
                } else {
                    addrs_removed += 1;
                }
            }
            if now >= next_change {
                next_change += CHANGE_EVERY;
                let s = rng.below(svcs.len());
                let svc = &mut svcs[s];
                let current = svc.current();
                let absent = svc.absent();
                let remove = current.len() > MIN_ENDPOINTS && (absent.is_empty() || rng.chance(50));
                if remove {
                    let i = current[rng.below(current.len())];
                    svc.set(i, false, now);
                    removes += 1;
                } else {
                    let i = absent[rng.below(absent.len())];
                    svc.set(i, true, now);
                    adds += 1;
                }
                api.apply(svc.slice());
            }
            if now >= next_create {
                next_create += CREATE_EVERY;
                let mut batch = Vec::new();
                let programmed_addrs: Vec<usize> = (0..NODE_ADDRS.len())
                    .filter(|a| addrs[*a].for_at_least(PROGRAMMED_AFTER, now))
                    .collect();
                for _ in 0..FLOWS_PER_TICK {
                    let s = rng.below(svcs.len());
                    let svc = &svcs[s];
                    let node_addr = (chaos && !programmed_addrs.is_empty() && rng.chance(20))
                        .then(|| programmed_addrs[rng.below(programmed_addrs.len())]);
                    if rng.chance(10) {
                        let absent = svc.absent();
                        if !absent.is_empty() {
                            batch.push((s, absent[rng.below(absent.len())], node_addr, false));
                        }
                    } else {
                        let programmed: Vec<usize> = (0..POOL as usize)
                            .filter(|i| svc.lives[*i].for_at_least(PROGRAMMED_AFTER, now))
                            .collect();
                        if !programmed.is_empty() {
                            batch.push((
                                s,
                                programmed[rng.below(programmed.len())],
                                node_addr,
                                true,
                            ));
                        }
                    }
                }
                if !batch.is_empty() {
                    track(&mut ct, &svcs, batch);
                }
            }
            let wake = next_change.min(next_create);
            if let Some(d) = wake.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        stop_restarts.store(true, std::sync::atomic::Ordering::SeqCst);
        // The last bad slice goes too: while it exists its Service is held, rightly.
        if let Some(name) = junk.take() {
            delete_junk(&name);
            junk_deleted += 1;
        }
    });
    agent.assert_running();
    let churn_took = start.elapsed();

    // Settle: no stale flow left (a resync every 5 s catches anything the other triggers
    // missed), then one more full pass to be sure nothing else goes.
    // A node address removed is no frontend any more: its flows are not judged.
    let frontends: BTreeMap<SocketAddr, (&Svc, bool)> = svcs
        .iter()
        .flat_map(|s| {
            let by_addr = NODE_ADDRS.iter().zip(&addrs).map(move |(a, life)| {
                let fe = SocketAddr::new(a.parse().expect("ip"), s.node_port);
                (fe, (s, life.since.is_some()))
            });
            std::iter::once((s.frontend, (s, true))).chain(by_addr)
        })
        .collect();
    let stale_now = |table: &BTreeSet<Flow>| -> Vec<Flow> {
        table
            .iter()
            .filter(|f| {
                let (svc, frontend_now) = frontends
                    .get(&f.frontend)
                    .unwrap_or_else(|| panic!("a flow of no churn Service: {f}"));
                *frontend_now && !svc.current().iter().any(|i| svc.backend(*i) == f.backend)
            })
            .copied()
            .collect()
    };
    let settle = eventually_with(Duration::from_secs(20), "no stale flow left", || {
        let stale = stale_now(&table(&mut ct));
        if stale.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} stale flows left, e.g. {:?}",
                stale.len(),
                stale
                    .iter()
                    .take(5)
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
            ))
        }
    });
    let passes = |m: &agent::Metrics| m.sum("ctreap_reconciles_total", &[]);
    let before = passes(&agent.metrics());
    agent.wait_metrics(Duration::from_secs(15), "one more full pass", |m| {
        passes(m) > before
    });
    let final_table = table(&mut ct);
    let stale_left = stale_now(&final_table);

    // Which tracked flows vanished, and was any of them live throughout?
    let mut live_deleted = Vec::new();
    let (mut vanished, mut protected, mut towards_live, mut towards_removed) = (0, 0, 0, 0);
    for t in &tracked {
        if t.towards_live {
            towards_live += 1;
        } else {
            towards_removed += 1;
        }
        let svc = &svcs[t.svc];
        let live = svc.lives[t.ip].throughout(t.created)
            && t.node_addr.is_none_or(|a| addrs[a].throughout(t.created));
        protected += usize::from(live);
        if !final_table.contains(&t.flow) {
            vanished += 1;
            if live {
                live_deleted.push(t);
            }
        }
    }
    let m = agent.metrics();
    let by_trigger: Vec<String> = ["watch", "event", "resync", "startup", "overrun", "breaker"]
        .iter()
        .map(|tr| format!("{tr} {}", m.deleted_by(tr)))
        .collect();
    println!(
        "churn: {churn_took:.1?} of churn (seed {seed:#x}), {adds} endpoints added, {removes} removed; \
         {} flows created ({towards_live} towards programmed backends, {towards_removed} towards non-endpoints); \
         {vanished} deleted by the agent, {protected} whose backend stayed an endpoint throughout; \
         live flows deleted: {}; stale flows left: {} (settled {settle:.1?} after the churn); \
         agent deletes by trigger: {}; breaker trips {}; table at the end {}",
        tracked.len(),
        live_deleted.len(),
        stale_left.len(),
        by_trigger.join(", "),
        m.or0("ctreap_circuit_breaker_trips_total"),
        final_table.len(),
    );
    let nodeport_flows = tracked.iter().filter(|t| t.node_addr.is_some()).count();
    let watch_errors = agent
        .log()
        .lines()
        .filter(|l| l.contains("watch error"))
        .count();
    if chaos {
        println!(
            "chaos: {} API server restarts ({RESTART_DOWNTIME:?} down each; {watch_errors} watch errors logged by the agent), \
             {junk_applied} undecodable slices applied and {junk_deleted} deleted, \
             {addrs_added} node addresses added and {addrs_removed} removed, {nodeport_flows} flows via NodePorts on them",
            restarts.load(std::sync::atomic::Ordering::SeqCst),
        );
    }
    assert!(
        live_deleted.is_empty(),
        "{} live flows deleted, e.g.:\n{}",
        live_deleted.len(),
        live_deleted
            .iter()
            .take(10)
            .map(|t| format!(
                "  {} created {:?} after the start",
                t.flow,
                t.created.duration_since(start.min(t.created))
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stale_left.is_empty(),
        "{} stale flows left: {:?}",
        stale_left.len(),
        stale_left
            .iter()
            .take(10)
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        m.deleted(),
        vanished as f64,
        "the agent's delete count is the number of flows that vanished:\n{}",
        m.text
    );
    assert!(
        removes > 0 && adds > 0 && towards_removed > 0,
        "the churn churned"
    );
    if chaos {
        assert!(
            restarts.load(std::sync::atomic::Ordering::SeqCst) >= 2
                && junk_applied >= 3
                && addrs_added + addrs_removed >= 3
                && nodeport_flows > 0,
            "the chaos happened"
        );
    }
    agent.stop();
}
