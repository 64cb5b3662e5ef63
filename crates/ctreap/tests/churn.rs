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

#[path = "support/agent.rs"]
mod agent;
#[path = "../../ctnetlink/tests/common/mod.rs"]
mod common;

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
    /// Pool IP index -> since when it is an endpoint (None: not an endpoint).
    live_since: Vec<Option<Instant>>,
    /// Every (added, removed) interval of each pool IP; removed None = still an endpoint.
    history: Vec<Vec<(Instant, Option<Instant>)>>,
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
            .filter(|i| self.live_since[*i].is_some())
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
        if live {
            self.live_since[i] = Some(now);
            self.history[i].push((now, None));
        } else {
            self.live_since[i] = None;
            if let Some(last) = self.history[i].last_mut() {
                last.1 = Some(now);
            }
        }
    }

    /// Has pool IP `i` been an endpoint without interruption from `t` until now?
    fn live_throughout(&self, i: usize, t: Instant) -> bool {
        self.history[i]
            .last()
            .is_some_and(|(added, removed)| removed.is_none() && *added <= t)
    }
}

/// One tracked flow: which Service and pool IP it was sent to, when, and whether that IP was a
/// programmed endpoint then.
struct Tracked {
    flow: Flow,
    svc: usize,
    ip: usize,
    created: Instant,
    towards_live: bool,
}

#[test]
fn churn_deletes_no_live_flow_and_leaves_no_stale_one() {
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
                live_since: vec![None; POOL as usize],
                history: vec![Vec::new(); POOL as usize],
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
        api.apply(service(
            &svc.name,
            &[&svc.frontend.ip().to_string()],
            &[("p", port, svc.proto_name, svc.backend_port)],
        ));
        api.apply(svc.slice());
    }
    let mut tracked: Vec<Tracked> = Vec::new();
    let mut track =
        |ct: &mut ctnetlink::Conntrack, svcs: &[Svc], batch: Vec<(usize, usize, bool)>| {
            let now = Instant::now();
            let flows: Vec<(Flow, usize, usize, bool)> = batch
                .into_iter()
                .map(|(s, i, live)| {
                    let svc = &svcs[s];
                    let f = Flow::new(
                        svc.proto,
                        &svc.frontend.to_string(),
                        &svc.backend(i).to_string(),
                    );
                    (f, s, i, live)
                })
                .collect();
            let entries: Vec<Flow> = flows.iter().map(|(f, ..)| *f).collect();
            create(ct, &entries);
            for (flow, svc, ip, towards_live) in flows {
                tracked.push(Tracked {
                    flow,
                    svc,
                    ip,
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
                initial.push((s, i, true));
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
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_change {
            next_change += CHANGE_EVERY;
            let s = rng.below(svcs.len());
            let svc = &mut svcs[s];
            let current = svc.current();
            let absent: Vec<usize> = (0..POOL as usize)
                .filter(|i| svc.live_since[*i].is_none())
                .collect();
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
            for _ in 0..FLOWS_PER_TICK {
                let s = rng.below(svcs.len());
                let svc = &svcs[s];
                if rng.chance(10) {
                    let absent: Vec<usize> = (0..POOL as usize)
                        .filter(|i| svc.live_since[*i].is_none())
                        .collect();
                    if !absent.is_empty() {
                        batch.push((s, absent[rng.below(absent.len())], false));
                    }
                } else {
                    let programmed: Vec<usize> = (0..POOL as usize)
                        .filter(|i| {
                            svc.live_since[*i]
                                .is_some_and(|t| now.duration_since(t) >= PROGRAMMED_AFTER)
                        })
                        .collect();
                    if !programmed.is_empty() {
                        batch.push((s, programmed[rng.below(programmed.len())], true));
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
    agent.assert_running();
    let churn_took = start.elapsed();

    // Settle: no stale flow left (a resync every 5 s catches anything the other triggers
    // missed), then one more full pass to be sure nothing else goes.
    let stale_now = |table: &BTreeSet<Flow>| -> Vec<Flow> {
        let by_frontend: BTreeMap<SocketAddr, &Svc> =
            svcs.iter().map(|s| (s.frontend, s)).collect();
        table
            .iter()
            .filter(|f| {
                let svc = by_frontend
                    .get(&f.frontend)
                    .unwrap_or_else(|| panic!("a flow of no churn Service: {f}"));
                !svc.current().iter().any(|i| svc.backend(*i) == f.backend)
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
        let live = svc.live_throughout(t.ip, t.created);
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
    agent.stop();
}
