//! End-to-end: the real `ctreap run` against the local API server and a private network
//! namespace's conntrack table, one test per behaviour of docs/agent.md and per
//! safety rule of issue 5.
//!
//! Each test builds the same small cluster ([`cluster`]): `dns` (UDP, 3 backends), `web`
//! (TCP, dual-stack, 2 backends per family), `sig` (SCTP, 2 backends), with three NAT flows per
//! (frontend, backend) plus flows that are no Service's NAT traffic. It compares the whole
//! table before and after each step: the flows that must go, and nothing else.
//!
//! Each safety test says in a comment how it would fail if the rule it covers were removed.
//! The kernel tests' rule applies: without root they fail, they never skip.

#[path = "support/agent.rs"]
mod agent;
use ctnetlink_testns as common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agent::{
    Agent, Api, Flow, Metrics, assert_table, create, ep, ep_cond, eventually, eventually_with,
    never, present, service, slice, slice_ips, table,
};
use common::TestNs;
use ctnetlink::Conntrack;
use ctnetlink::consts::*;
use kube_testserver::{Fault, ResourceKind, ServerConfig};
use serde_json::{Value, json};

const DNS: &str = "10.96.0.10:53";
const WEB4: &str = "10.96.0.20:80";
const WEB6: &str = "[fd00::20]:80";
const SIG: &str = "10.96.0.30:3868";

/// How long a watch-driven flush may take here (debug build, two shared cores, tests in
/// parallel); the benchmark measures the real latency.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
/// How long the agent gets to become ready.
const READY: Duration = Duration::from_secs(30);

fn dns_slice(ips: &[&str]) -> Value {
    slice_ips("dns-a", "dns", &[("dns", 5353, "UDP")], ips)
}

fn web4_slice(ips: &[&str]) -> Value {
    slice_ips("web-v4", "web", &[("http", 8080, "TCP")], ips)
}

fn web6_slice(ips: &[&str]) -> Value {
    let mut s = slice_ips("web-v6", "web", &[("http", 8080, "TCP")], ips);
    s["addressType"] = json!("IPv6");
    s
}

fn sig_slice(ips: &[&str]) -> Value {
    slice_ips("sig-a", "sig", &[("diameter", 3868, "SCTP")], ips)
}

/// Restarts the API server with `downtime`; runs `during` once it refuses connections and
/// returns its result after the server is back.
fn with_outage<T>(api: &Api, downtime: Duration, during: impl FnOnce() -> T) -> T {
    let addr = api.server.addr();
    std::thread::scope(|s| {
        let server = &api.server;
        let restart = s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(server.restart_with_downtime(downtime))
                .expect("restart");
        });
        eventually(
            Duration::from_secs(5),
            "the API server refuses connections",
            || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err(),
        );
        let out = during();
        restart.join().expect("restart thread");
        out
    })
}

/// The cluster every test starts from.
fn cluster(api: &Api) {
    api.apply(service("dns", &["10.96.0.10"], &[("dns", 53, "UDP", 5353)]));
    api.apply(dns_slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"]));
    api.apply(service(
        "web",
        &["10.96.0.20", "fd00::20"],
        &[("http", 80, "TCP", 8080)],
    ));
    api.apply(web4_slice(&["10.244.2.1", "10.244.2.2"]));
    api.apply(web6_slice(&["fd00:244::1", "fd00:244::2"]));
    api.apply(service(
        "sig",
        &["10.96.0.30"],
        &[("diameter", 3868, "SCTP", 3868)],
    ));
    api.apply(sig_slice(&["10.244.3.1", "10.244.3.2"]));
}

/// Three flows per (frontend, live backend), plus flows the agent must never touch: traffic to
/// a non-Service address, and untranslated TCP traffic to a frontend (no DNAT; untranslated UDP
/// to a frontend with a serving backend is stale, see
/// `untranslated_udp_entries_go_when_the_service_gains_an_endpoint`).
fn live_flows() -> Vec<Flow> {
    let mut v = Vec::new();
    for be in ["10.244.1.1:5353", "10.244.1.2:5353", "10.244.1.3:5353"] {
        v.extend(Flow::many(IPPROTO_UDP, DNS, be, 3));
    }
    for be in ["10.244.2.1:8080", "10.244.2.2:8080"] {
        v.extend(Flow::many(IPPROTO_TCP, WEB4, be, 3));
    }
    for be in ["[fd00:244::1]:8080", "[fd00:244::2]:8080"] {
        v.extend(Flow::many(IPPROTO_TCP, WEB6, be, 3));
    }
    for be in ["10.244.3.1:3868", "10.244.3.2:3868"] {
        v.extend(Flow::many(IPPROTO_SCTP, SIG, be, 3));
    }
    v.extend(Flow::many(
        IPPROTO_TCP,
        "203.0.113.50:443",
        "203.0.113.50:443",
        2,
    ));
    v.extend(Flow::many(IPPROTO_TCP, WEB4, WEB4, 2));
    v
}

/// One test's world: a namespace with the flows, the API server with the cluster.
struct World {
    ns: TestNs,
    ct: Conntrack,
    api: Api,
    flows: Vec<Flow>,
}

impl World {
    fn new(tag: &str) -> World {
        World::with_server(tag, ServerConfig::default())
    }

    fn with_server(tag: &str, config: ServerConfig) -> World {
        let ns = TestNs::new(tag);
        let mut ct = ns.ct();
        let flows = live_flows();
        create(&mut ct, &flows);
        let api = Api::start_with(config);
        cluster(&api);
        World { ns, ct, api, flows }
    }

    /// Adds flows to the table (and to `flows`).
    fn add(&mut self, flows: &[Flow]) {
        create(&mut self.ct, flows);
        self.flows.extend_from_slice(flows);
    }

    /// The flows created towards one (frontend, backend) pair.
    fn of(&self, frontend: &str, backend: &str) -> Vec<Flow> {
        let (fe, be) = (agent::sa(frontend), agent::sa(backend));
        let v: Vec<Flow> = self
            .flows
            .iter()
            .filter(|f| f.frontend == fe && f.backend == be)
            .copied()
            .collect();
        assert!(
            !v.is_empty(),
            "no flows {frontend} -> {backend} in the test"
        );
        v
    }

    fn table(&mut self) -> BTreeSet<Flow> {
        table(&mut self.ct)
    }

    fn agent(&self, extra: &[&str]) -> Agent {
        Agent::start(&self.api, &self.ns.name, extra)
    }

    /// `ctreap stale --kubeconfig K --netns NS --node-name node-1 EXTRA..`, run to the end.
    fn stale(&self, extra: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_ctreap"))
            .arg("stale")
            .arg("--kubeconfig")
            .arg(&self.api.kubeconfig)
            .args(["--netns", &self.ns.name, "--node-name", agent::NODE])
            .args(extra)
            .output()
            .expect("running ctreap stale")
    }

    /// Waits until none of `flows` is in the table; returns how long it took.
    fn wait_gone(
        &mut self,
        flows: &[Flow],
        within: Duration,
        what: &str,
        agent: &Agent,
    ) -> Duration {
        let ct = &mut self.ct;
        eventually_with(within, what, || match present(&table(ct), flows) {
            0 => Ok(()),
            left => Err(format!(
                "{left} of {} still present; log:\n{}",
                flows.len(),
                agent.log_tail(40)
            )),
        })
    }
}

/// A full pass (startup) has run: the agent's view of the table is settled. Returns a scrape
/// taken after the pass was seen to end (see [`after_pass`]).
fn wait_startup_pass(agent: &mut Agent) -> Metrics {
    agent.wait_metrics(READY, "the startup pass", |m| {
        m.or0("ctreap_reconciles_total{trigger=\"startup\"}") >= 1.0
    });
    after_pass(agent)
}

/// A scrape that shows all of a pass already seen to end. One scrape is not a snapshot: the
/// agent works while the families are encoded one after another, and the deletion counters are
/// encoded before `ctreap_reconciles_total`. The scrape that first shows a pass counted may
/// have read the deletions before the pass recorded them (seen in CI under load: startup 1,
/// its deletions 0). A scrape begun after that one reads them after.
fn after_pass(agent: &Agent) -> Metrics {
    agent.metrics()
}

/// Waits until two resync passes have ended after now (with `--resync 1s`): the second began
/// after the call, so the whole table has been judged on the view as it is now. Instead of
/// sleeping "a few resyncs".
fn two_resyncs(agent: &mut Agent, what: &str) {
    let series = "ctreap_reconciles_total{trigger=\"resync\"}";
    let from = agent.metrics().or0(series);
    agent.wait_metrics(Duration::from_secs(10), what, |m| {
        m.or0(series) >= from + 2.0
    });
}

fn assert_line(m: &Metrics, line: &str) {
    assert!(
        m.has_line(line),
        "/metrics has no line {line:?}; it has:\n{}",
        m.text
    );
}

/// Contract: an endpoint removed in the API server -> exactly its flows deleted (watch
/// trigger), every other flow untouched; the metric lines say so; SIGTERM exits 0 within 1 s.
#[test]
fn removed_endpoints_flows_go_and_nothing_else() {
    let mut w = World::new("run-basic");
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_http(READY);
    let (code, body) = agent.get("/healthz").expect("GET /healthz");
    assert_eq!((code, body.trim()), (200, "ok"), "/healthz");
    let ready_in = agent.wait_ready(READY);
    assert_eq!(agent.readyz(), (200, "ready\n".to_string()));
    let m = wait_startup_pass(&mut agent);
    assert_eq!(m.deleted(), 0.0, "nothing is stale at start:\n{}", m.text);
    let before = w.table();
    assert_eq!(
        before.len(),
        w.flows.len(),
        "the startup pass deleted nothing"
    );

    // UDP, IPv4.
    let gone = w.of(DNS, "10.244.1.2:5353");
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    let took_udp = w.wait_gone(
        &gone,
        FLUSH_DEADLINE,
        "dns 10.244.1.2's flows deleted",
        &agent,
    );
    let after = w.table();
    assert_table(&before, &gone, &after, "after removing 10.244.1.2 from dns");

    let m = agent.wait_metrics(FLUSH_DEADLINE, "the udp delete counted", |m| {
        m.deleted() >= 3.0
    });
    assert!(
        m.text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF:\n{}",
        m.text
    );
    assert_line(
        &m,
        "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 3",
    );
    assert_eq!(m.deleted(), 3.0, "only those 3:\n{}", m.text);
    for r in ["services", "endpointslices", "node"] {
        assert_line(&m, &format!("ctreap_watch_synced{{resource=\"{r}\"}} 1"));
    }
    assert_line(&m, "ctreap_ready 1");
    assert_line(&m, "ctreap_reconciles_total{trigger=\"startup\"} 1");
    let entries = m.value("ctreap_conntrack_entries");
    assert!(
        entries == before.len() as f64 || entries == after.len() as f64,
        "ctreap_conntrack_entries {entries}: the table held {} then {}",
        before.len(),
        after.len()
    );
    assert!(
        m.value("ctreap_conntrack_max") >= 65536.0,
        "ctreap_conntrack_max:\n{}",
        m.text
    );
    assert!(
        m.value("ctreap_flush_latency_seconds_count") >= 1.0,
        "one flush latency observed:\n{}",
        m.text
    );
    assert!(m.value("ctreap_reconcile_duration_seconds_count") >= 1.0);
    assert_eq!(
        m.sum("ctreap_netlink_errors_total", &[]),
        0.0,
        "no netlink errors:\n{}",
        m.text
    );
    let flushed = agent.log_lines_with("flushed");
    assert!(
        flushed.iter().any(|l| l.contains("default/dns")
            && l.contains("10.244.1.2:5353")
            && l.contains("10.96.0.10:53")
            && l.contains("watch")
            && l.contains("count=3")
            && l.contains("latency_ms")),
        "one info line per flush with service, frontend, backend, trigger, count, latency: {flushed:#?}\nlog:\n{}",
        agent.log()
    );

    // TCP, IPv6.
    let before = after;
    let gone = w.of(WEB6, "[fd00:244::2]:8080");
    w.api.apply(web6_slice(&["fd00:244::1"]));
    let took_tcp6 = w.wait_gone(
        &gone,
        FLUSH_DEADLINE,
        "web fd00:244::2's flows deleted",
        &agent,
    );
    let after = w.table();
    assert_table(
        &before,
        &gone,
        &after,
        "after removing fd00:244::2 from web",
    );

    // SCTP.
    let before = after;
    let gone = w.of(SIG, "10.244.3.2:3868");
    w.api.apply(sig_slice(&["10.244.3.1"]));
    let took_sctp = w.wait_gone(
        &gone,
        FLUSH_DEADLINE,
        "sig 10.244.3.2's flows deleted",
        &agent,
    );
    let after = w.table();
    assert_table(&before, &gone, &after, "after removing 10.244.3.2 from sig");

    let m = agent.wait_metrics(FLUSH_DEADLINE, "all deletes counted", |m| {
        m.deleted() >= 9.0
    });
    assert_line(
        &m,
        "ctreap_flows_deleted_total{protocol=\"tcp\",reason=\"gone\",trigger=\"watch\"} 3",
    );
    assert_line(
        &m,
        "ctreap_flows_deleted_total{protocol=\"sctp\",reason=\"gone\",trigger=\"watch\"} 3",
    );
    assert!(m.value("ctreap_flush_latency_seconds_count") >= 3.0);
    println!(
        "ready in {ready_in:?}; flows gone after the API write: udp {took_udp:?}, tcp/v6 {took_tcp6:?}, sctp {took_sctp:?} (polling a full dump)"
    );

    let took = agent.stop();
    println!("SIGTERM -> exit 0 in {took:?}");
}

/// Safety: nothing is deleted until every watch has delivered its initial list.
///
/// One resource type at a time answers 503 (the others list fine). The table has two truly
/// stale flows (a backend in no slice). While the list is missing, /readyz is 503,
/// `ctreap_watch_synced` for it is 0, and nothing is deleted, not even the stale flows; once
/// the fault is lifted, exactly the stale flows go (trigger startup).
///
/// Without the rule: with EndpointSlices missing every Service looks empty and the agent
/// deletes every Service flow; with Services missing the stale flows still go before the
/// list. Either way the `never` check fails.
#[test]
fn nothing_is_deleted_before_every_list_arrived() {
    for (kind, resource) in [
        (ResourceKind::EndpointSlice, "endpointslices"),
        (ResourceKind::Service, "services"),
        (ResourceKind::Node, "node"),
    ] {
        let mut w = World::new("run-partial");
        let stale = Flow::many(IPPROTO_UDP, DNS, "10.244.1.9:5353", 2);
        w.add(&stale);
        let before = w.table();
        w.api.server.set_fault(Fault::all(kind), true);
        let mut agent = w.agent(&["--resync", "1s"]);
        agent.wait_http(READY);
        partial_view_holds(&mut w, &agent, &before, resource, Duration::from_secs(3));
        w.api.server.clear_faults();
        agent.wait_ready(READY);
        w.wait_gone(
            &stale,
            FLUSH_DEADLINE,
            "the stale flows deleted after the list",
            &agent,
        );
        assert_table(&before, &stale, &w.table(), "after the list arrived");
        let m = agent.wait_metrics(FLUSH_DEADLINE, "startup deletes counted", |m| {
            m.deleted() >= 2.0
        });
        assert_eq!(
            m.or0(
                "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"startup\"}"
            ) + m.or0(
                "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"resync\"}"
            ),
            2.0,
            "{resource}: the two stale flows, by the first full pass:\n{}",
            m.text
        );
        agent.stop();
    }
}

/// For `period`: /readyz 503, watch_synced{resource} 0, nothing deleted.
fn partial_view_holds(
    w: &mut World,
    agent: &Agent,
    before: &BTreeSet<Flow>,
    resource: &str,
    period: Duration,
) {
    let ct = &mut w.ct;
    never(
        period,
        &format!("ctreap run acted while the {resource} list was incomplete"),
        || {
            let (code, body) = agent.readyz();
            if code != 503 {
                return Some(format!("/readyz {code} {body:?}"));
            }
            let now = table(ct);
            if &now != before {
                let lost: Vec<String> = before.difference(&now).map(|f| f.to_string()).collect();
                return Some(format!("{} flows deleted: {lost:#?}", lost.len()));
            }
            None
        },
    );
    let m = agent.metrics();
    assert_eq!(
        m.get(&format!("ctreap_watch_synced{{resource=\"{resource}\"}}")),
        Some(0.0),
        "{resource} not synced:\n{}",
        m.text
    );
    assert_eq!(m.get("ctreap_ready"), Some(0.0), "{}", m.text);
    assert_eq!(m.deleted(), 0.0, "{}", m.text);
    assert_eq!(
        m.sum("ctreap_dry_run_flows_total", &[]),
        0.0,
        "not even counted as deletable:\n{}",
        m.text
    );
}

/// Safety: a list that starts but never completes (forced one-item pages, the second page
/// answering 503) is no view: the first page's slice alone would make every other Service look
/// empty. Nothing is deleted until the list completes; then only the stale flows go.
///
/// Without the rule (or with a store that applies pages as they come) the agent would delete
/// the flows of every backend not on the first page.
#[test]
fn a_list_that_never_completes_is_no_view() {
    let mut w = World::new("run-pages");
    let stale = Flow::many(IPPROTO_TCP, WEB4, "10.244.2.9:8080", 2);
    w.add(&stale);
    let before = w.table();
    w.api.server.set_list_page_limit(1);
    w.api
        .server
        .set_fault(Fault::continued_pages(ResourceKind::EndpointSlice), true);
    let mut agent = w.agent(&["--resync", "1s"]);
    agent.wait_http(READY);
    partial_view_holds(
        &mut w,
        &agent,
        &before,
        "endpointslices",
        Duration::from_secs(4),
    );
    assert!(
        w.api
            .server
            .requests()
            .iter()
            .any(|r| r.kind == Some(ResourceKind::EndpointSlice)
                && r.status == 200
                && r.query.contains("limit")),
        "the first page was served"
    );
    w.api.server.clear_faults();
    agent.wait_ready(READY);
    w.wait_gone(
        &stale,
        FLUSH_DEADLINE,
        "the stale flows deleted after the list",
        &agent,
    );
    assert_table(&before, &stale, &w.table(), "after the list completed");
    agent.stop();
}

/// Safety: an API server restart mid-run. During the outage the cluster changes (through
/// another replica, as in an HA control plane): a backend leaves dns, a new one joins and gets
/// flows at once (kube-proxy on this node already follows another replica), Service sig is
/// deleted. Nothing is deleted during the outage (even with a resync every second and the event
/// listener on); afterwards the changes are applied: the removed backend's and the deleted
/// Service's flows go, the new backend's flows stay, everything else is untouched.
///
/// Without the rule (deleting on the last view while the watches fail), the resync or the event
/// listener would delete the new backend's flows during the outage: the last view does not
/// know it.
#[test]
fn api_server_restart_mid_run() {
    let mut w = World::new("run-restart");
    let mut agent = w.agent(&["--resync", "1s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let downtime = Duration::from_secs(4);
    let (during, new) = with_outage(&w.api, downtime, || {
        let server = &w.api.server;
        let t = Instant::now();
        w.api
            .apply(dns_slice(&["10.244.1.1", "10.244.1.3", "10.244.1.4"]));
        server
            .delete(ResourceKind::EndpointSlice, Some("default"), "sig-a")
            .expect("delete sig-a");
        server
            .delete(ResourceKind::Service, Some("default"), "sig")
            .expect("delete sig");
        let new = Flow::many(IPPROTO_UDP, DNS, "10.244.1.4:5353", 3);
        create(&mut w.ct, &new);
        let during = table(&mut w.ct);
        let ct = &mut w.ct;
        never(
            downtime.saturating_sub(t.elapsed() + Duration::from_millis(200)),
            "ctreap run deleted flows while the API server was down",
            || {
                let now = table(ct);
                (now != during).then(|| {
                    let lost: Vec<String> =
                        during.difference(&now).map(|f| f.to_string()).collect();
                    format!("deleted: {lost:#?}")
                })
            },
        );
        (during, new)
    });
    w.flows.extend(&new);
    let mut gone = w.of(DNS, "10.244.1.2:5353");
    gone.extend(w.of(SIG, "10.244.3.1:3868"));
    gone.extend(w.of(SIG, "10.244.3.2:3868"));
    let took = w.wait_gone(
        &gone,
        Duration::from_secs(30),
        "the outage's changes applied once the API server is back",
        &agent,
    );
    agent.wait_ready(READY);
    // Two resyncs later the table is still exactly that.
    two_resyncs(&mut agent, "two resyncs after the restart");
    assert_table(&during, &gone, &w.table(), "after the restart");
    assert_eq!(
        present(&w.table(), &new),
        new.len(),
        "the new backend keeps its flows"
    );
    println!("changes applied {took:?} after the API server came back");
    agent.stop();
}

/// Safety: a 410 Gone re-list. With periodic bookmarks off, the EndpointSlice watch is cut and
/// its type made unavailable; meanwhile a backend leaves dns, a new one joins, and the history
/// is compacted. The re-watch then gets 410 Expired and re-lists, and that LIST keeps failing
/// for a while. Once the re-list has begun (/readyz 503), kube-proxy (following its own watch)
/// sends flows to the new backend. During the re-list nothing is deleted (resync every second,
/// events on) and /readyz stays 503. Once the list completes, the removed backend's flows go
/// and the new backend's stay.
///
/// Without the rule, the resync or the event listener would delete the new backend's flows
/// during the re-list: the last trusted view does not know the new backend. (Flows created
/// during the watch error before the 410 are the restart test's business.)
#[test]
fn relist_after_410_deletes_nothing_until_complete() {
    let mut w = World::with_server(
        "run-410",
        ServerConfig::default().bookmark_interval(Duration::ZERO),
    );
    let mut agent = w.agent(&["--resync", "1s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let server = &w.api.server;
    let lists_before =
        server.request_count(ResourceKind::EndpointSlice, kube_testserver::Verb::List);
    let watch_fault = Fault::verb(ResourceKind::EndpointSlice, kube_testserver::Verb::Watch);
    let list_fault = Fault::verb(ResourceKind::EndpointSlice, kube_testserver::Verb::List);
    server.set_fault(watch_fault, true);
    server.set_fault(list_fault, true);
    server.drop_watches();
    // The gap.
    w.api
        .apply(dns_slice(&["10.244.1.1", "10.244.1.3", "10.244.1.4"]));
    w.api.server.compact();
    w.api.server.set_fault(watch_fault, false);
    // The re-watch meets 410 and the re-list starts (and fails): not ready.
    eventually_with(
        Duration::from_secs(40),
        "/readyz 503 while the EndpointSlices re-list",
        || match agent.readyz() {
            (503, _) => Ok(()),
            (code, body) => Err(format!(
                "/readyz {code} {body:?}; log:\n{}",
                agent.log_tail(30)
            )),
        },
    );
    let new = Flow::many(IPPROTO_UDP, DNS, "10.244.1.4:5353", 3);
    w.add(&new);
    let during = w.table();
    let ct = &mut w.ct;
    never(
        Duration::from_secs(3),
        "ctreap run deleted flows or claimed ready during the re-list",
        || {
            let (code, body) = agent.readyz();
            if code != 503 {
                return Some(format!("/readyz {code} {body}"));
            }
            let now = table(ct);
            (now != during).then(|| {
                let lost: Vec<String> = during.difference(&now).map(|f| f.to_string()).collect();
                format!("deleted: {lost:#?}")
            })
        },
    );
    let m = agent.metrics();
    assert_eq!(
        m.get("ctreap_watch_synced{resource=\"endpointslices\"}"),
        Some(0.0),
        "re-listing is not synced:\n{}",
        m.text
    );
    w.api.server.set_fault(list_fault, false);
    let gone = w.of(DNS, "10.244.1.2:5353");
    w.wait_gone(
        &gone,
        Duration::from_secs(40),
        "the gap's removal applied after the re-list",
        &agent,
    );
    agent.wait_ready(READY);
    two_resyncs(&mut agent, "two resyncs after the re-list");
    assert_table(&during, &gone, &w.table(), "after the re-list");
    assert!(
        w.api
            .server
            .request_count(ResourceKind::EndpointSlice, kube_testserver::Verb::List)
            > lists_before,
        "the EndpointSlices were listed again"
    );
    agent.stop();
}

/// Safety (IP reuse, one burst): an endpoint that moves between two slices of its Service in
/// one burst (the EndpointSlice controller rebalancing), or is removed and re-added in one
/// burst, never stops being a backend: its flows stay. Repeated several times; then a real
/// removal (control) deletes them.
///
/// Without coalescing (or without judging each entry against the newest map), the first write
/// of a burst alone says the backend is gone and its flows are flushed.
#[test]
fn a_backend_moved_or_readded_in_one_burst_keeps_its_flows() {
    let mut w = World::new("run-burst");
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    let dns_b = |ips: &[&str]| slice_ips("dns-b", "dns", &[("dns", 5353, "UDP")], ips);
    w.api.apply(dns_b(&[]));
    for round in 0..5 {
        // 10.244.1.2 moves to dns-b, then back.
        w.api.apply_all(vec![
            dns_slice(&["10.244.1.1", "10.244.1.3"]),
            dns_b(&["10.244.1.2"]),
        ]);
        std::thread::sleep(Duration::from_millis(200));
        w.api.apply_all(vec![
            dns_b(&[]),
            dns_slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"]),
        ]);
        std::thread::sleep(Duration::from_millis(200));
        // Removed and re-added in one burst.
        w.api.apply_all(vec![
            dns_slice(&["10.244.1.1", "10.244.1.3"]),
            dns_slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"]),
        ]);
        std::thread::sleep(Duration::from_millis(200));
        assert_table(
            &before,
            &[],
            &w.table(),
            &format!("after burst round {round}"),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_table(&before, &[], &w.table(), "after the bursts");
    assert_eq!(agent.metrics().deleted(), 0.0);
    // Control: a removal that stays.
    let gone = w.of(DNS, "10.244.1.2:5353");
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    w.wait_gone(&gone, FLUSH_DEADLINE, "a real removal flushed", &agent);
    assert_table(&before, &gone, &w.table(), "after the real removal");
    agent.stop();
}

/// Safety (IP reuse, --grace): with --grace 2s, two dns backends leave at once; one comes back
/// 0.5 s later as a new pod with the same IP and port, in another slice of the same Service.
/// Within the grace period both keep their flows; after it, the one that stayed gone loses
/// them (not before the grace period ended), the one that came back keeps them.
///
/// Without --grace both would be flushed at once (the 1.5 s check fails); without the
/// came-back check at the end of the grace period, 10.244.1.2 would be flushed at 2 s.
#[test]
fn grace_keeps_a_backend_whose_ip_comes_back() {
    let mut w = World::new("run-grace");
    let grace = Duration::from_secs(2);
    let mut agent = w.agent(&["--resync", "60s", "--grace", "2s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    let back = w.of(DNS, "10.244.1.2:5353");
    let gone = w.of(DNS, "10.244.1.3:5353");
    let t0 = Instant::now();
    w.api.apply(dns_slice(&["10.244.1.1"]));
    std::thread::sleep(Duration::from_millis(500));
    let mut reused = ep("10.244.1.2");
    reused["targetRef"] = json!({"kind": "Pod", "namespace": "default", "name": "dns-new-pod"});
    w.api
        .apply(slice("dns-b", "dns", &[("dns", 5353, "UDP")], vec![reused]));
    // Until 0.2 s before the grace period ends, nothing goes.
    let ct = &mut w.ct;
    never(
        grace.saturating_sub(t0.elapsed() + Duration::from_millis(200)),
        "flows deleted within --grace",
        || {
            let now = table(ct);
            (now != before).then(|| format!("{} flows gone", before.len() - now.len()))
        },
    );
    w.wait_gone(
        &gone,
        grace + FLUSH_DEADLINE,
        "10.244.1.3 flushed after --grace",
        &agent,
    );
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    assert_table(&before, &gone, &w.table(), "after the grace period");
    assert_eq!(present(&w.table(), &back), back.len());
    println!("10.244.1.3 flushed within {took:?} of its removal (--grace 2s)");
    agent.stop();
}

/// Builds a cluster of `n` UDP Services `svc-i` (10.96.1.i:53 -> one backend 10.244.100.i:53)
/// with `flows[i]` flows each; returns the flows per Service.
fn breaker_cluster(w: &mut World, flows: &[usize]) -> Vec<Vec<Flow>> {
    let mut out = Vec::new();
    for (i, &n) in flows.iter().enumerate() {
        let name = format!("svc-{i}");
        let fe = format!("10.96.1.{}", i + 1);
        let be = format!("10.244.100.{}", i + 1);
        w.api
            .apply(service(&name, &[&fe], &[("dns", 53, "UDP", 53)]));
        w.api.apply(breaker_slice(i, &[&be]));
        let f = Flow::many(IPPROTO_UDP, &format!("{fe}:53"), &format!("{be}:53"), n);
        w.add(&f);
        out.push(f);
    }
    out
}

fn breaker_slice(i: usize, ips: &[&str]) -> Value {
    slice(
        &format!("svc-{i}-a"),
        &format!("svc-{i}"),
        &[("dns", 53, "UDP")],
        ips.iter().map(|ip| ep(ip)).collect(),
    )
}

/// Safety (circuit breaker): two Services emptied in one burst, together 1400 of ~1830
/// Service flows (> 50 % and > 1000): nothing is deleted, the breaker is open for both
/// (`ctreap_circuit_breaker_open` 1, trips >= 1, a warn line). The slices come back before
/// --breaker-hold 3s ends: still nothing deleted, the breaker closes. The same burst again,
/// not restored: after the hold and the confirming re-list the flows go (trigger breaker).
///
/// Without the breaker the first burst's 1400 flows are deleted at once.
#[test]
fn circuit_breaker_holds_a_pass_that_empties_two_services() {
    let mut w = World::new("run-breaker");
    let per = breaker_cluster(&mut w, &[700, 700, 400]);
    let mut agent = w.agent(&["--resync", "60s", "--breaker-hold", "3s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    let empty = || vec![breaker_slice(0, &[]), breaker_slice(1, &[])];
    let full = || {
        vec![
            breaker_slice(0, &["10.244.100.1"]),
            breaker_slice(1, &["10.244.100.2"]),
        ]
    };

    let t0 = Instant::now();
    w.api.apply_all(empty());
    let m = agent.wait_metrics(Duration::from_secs(2), "the breaker open", |m| {
        m.or0("ctreap_circuit_breaker_open{namespace=\"default\",service=\"svc-0\"}") == 1.0
            && m.or0("ctreap_circuit_breaker_open{namespace=\"default\",service=\"svc-1\"}") == 1.0
    });
    assert!(
        m.value("ctreap_circuit_breaker_trips_total") >= 1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.or0("ctreap_circuit_breaker_open{namespace=\"default\",service=\"svc-2\"}"),
        0.0,
        "svc-2 is not in the held pass:\n{}",
        m.text
    );
    // The line says what its numbers are: the flows the pass would delete, of all the node's
    // NAT (translated) flows, whatever the new view still calls a Service.
    let nat = before.iter().filter(|f| f.backend != f.frontend).count();
    let want = format!(
        "would delete 1400 of this node's {nat} NAT flows (77%) and leaves 2 Services without a serving backend"
    );
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("circuit breaker open") && l.contains(&want)),
        "a warn line with {want:?}:\n{}",
        agent.log_tail(20)
    );
    let ct = &mut w.ct;
    never(
        Duration::from_millis(1000),
        "flows deleted while the breaker holds",
        || {
            let n = table(ct).len();
            (n != before.len()).then(|| format!("{} flows gone", before.len() - n))
        },
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "restored within the hold"
    );
    w.api.apply_all(full());
    let ct = &mut w.ct;
    never(
        Duration::from_secs(5),
        "flows deleted after the slices came back",
        || {
            let n = table(ct).len();
            (n != before.len()).then(|| format!("{} flows gone", before.len() - n))
        },
    );
    let m = agent.wait_metrics(FLUSH_DEADLINE, "the breaker closed", |m| {
        m.or0("ctreap_circuit_breaker_open{namespace=\"default\",service=\"svc-0\"}") == 0.0
            && m.or0("ctreap_circuit_breaker_open{namespace=\"default\",service=\"svc-1\"}") == 0.0
    });
    assert_eq!(m.deleted(), 0.0, "{}", m.text);
    agent.wait_ready(READY);
    assert_table(&before, &[], &w.table(), "after the restore");

    // The same, confirmed by the re-list.
    w.api.apply_all(empty());
    let m = agent.wait_metrics(Duration::from_secs(2), "the breaker open again", |m| {
        m.or0("ctreap_circuit_breaker_trips_total") >= 2.0
    });
    assert_eq!(m.deleted(), 0.0, "held again:\n{}", m.text);
    let mut gone = per[0].clone();
    gone.extend(&per[1]);
    let took = w.wait_gone(
        &gone,
        Duration::from_secs(3) + Duration::from_secs(15),
        "the confirmed pass runs after the hold",
        &agent,
    );
    assert_table(&before, &gone, &w.table(), "after the confirmed pass");
    let m = agent.wait_metrics(FLUSH_DEADLINE, "breaker deletes counted", |m| {
        m.deleted() >= 1400.0
    });
    assert_line(
        &m,
        "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"breaker\"} 1400",
    );
    println!("the confirmed pass deleted 1400 flows {took:?} after the second burst");
    agent.stop();
}

/// The breaker is not against normal events: a Service whose only backend is replaced, or that
/// loses every endpoint, has its flows flushed at once, even when they are most of the node's
/// Service flows (kubernetes #139628). --breaker-hold 30s, so a held pass would be obvious.
///
/// If the breaker held single Services, neither flush would happen within the deadline.
#[test]
fn a_single_service_emptied_is_flushed_at_once() {
    let mut w = World::new("run-single");
    let per = breaker_cluster(&mut w, &[1200, 200]);
    let mut agent = w.agent(&["--resync", "60s", "--breaker-hold", "30s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();

    // The only backend replaced.
    w.api.apply(breaker_slice(0, &["10.244.100.99"]));
    w.wait_gone(
        &per[0],
        FLUSH_DEADLINE,
        "the replaced backend's 1200 flows",
        &agent,
    );
    assert_table(&before, &per[0], &w.table(), "after the replacement");

    // Every endpoint gone.
    let fresh = Flow::many(IPPROTO_UDP, "10.96.1.1:53", "10.244.100.99:53", 1200);
    w.add(&fresh);
    let before = w.table();
    w.api.apply(breaker_slice(0, &[]));
    w.wait_gone(
        &fresh,
        FLUSH_DEADLINE,
        "the emptied Service's 1200 flows",
        &agent,
    );
    assert_table(&before, &fresh, &w.table(), "after emptying svc-0");
    let m = agent.metrics();
    assert_eq!(
        m.or0("ctreap_circuit_breaker_trips_total"),
        0.0,
        "{}",
        m.text
    );
    assert_line(
        &m,
        "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 2400",
    );
    agent.stop();
}

/// --dry-run: everything is computed and counted (`ctreap_dry_run_flows_total`, "would delete"
/// lines), nothing is deleted: not the stale flows at start-up, not a removed backend's. Each
/// flow is counted once: the resyncs that find the same flows again add nothing (issue 12).
///
/// Without the rule the table changes.
#[test]
fn dry_run_deletes_nothing_and_counts_what_it_would() {
    let mut w = World::new("run-dry");
    let stale = Flow::many(IPPROTO_UDP, DNS, "10.244.1.9:5353", 2);
    w.add(&stale);
    let before = w.table();
    let mut agent = w.agent(&["--resync", "1s", "--dry-run"]);
    agent.wait_ready(READY);
    let m = wait_startup_pass(&mut agent);
    assert_line(
        &m,
        "ctreap_dry_run_flows_total{protocol=\"udp\",reason=\"gone\",trigger=\"startup\"} 2",
    );
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    let m = agent.wait_metrics(FLUSH_DEADLINE, "the watch-triggered dry run counted", |m| {
        m.or0("ctreap_dry_run_flows_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"}")
            >= 3.0
    });
    assert_line(
        &m,
        "ctreap_dry_run_flows_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 3",
    );
    // Two resyncs later the same five flows have been found again, and counted once.
    let resyncs = |m: &Metrics| m.or0("ctreap_reconciles_total{trigger=\"resync\"}");
    let m = agent.wait_metrics(Duration::from_secs(15), "two resyncs", |m| {
        resyncs(m) >= 2.0
    });
    assert_eq!(
        m.sum("ctreap_dry_run_flows_total", &[]),
        5.0,
        "each flow counted once:\n{}",
        m.text
    );
    assert_table(&before, &[], &w.table(), "dry run");
    assert_eq!(agent.metrics().deleted(), 0.0);
    let lines = agent.log_lines_with("would delete");
    assert!(
        lines.iter().any(|l| l.contains("10.244.1.2:5353")),
        "a would-delete line for the removed backend:\n{}",
        agent.log()
    );
    assert_eq!(
        lines.len(),
        2,
        "one line per group, not one per pass:\n{}",
        agent.log()
    );
    assert!(
        agent.log_lines_with("flushed").is_empty(),
        "no flushed line in a dry run"
    );
    agent.stop();
}

/// Draining and not-serving backends, UDP and TCP: terminating but serving -> kept; serving
/// false (still in the slice) -> UDP deleted by default (reason not_serving), as kube-proxy's
/// own cleanup does, TCP kept without --delete-not-serving and deleted with it; removed from
/// the slice -> deleted (control).
///
/// Without the draining rule step 1 deletes; without the policy step 2 keeps the UDP flows (or
/// deletes the TCP ones without the flag).
fn draining(delete_not_serving: bool) {
    let mut w = World::new(if delete_not_serving {
        "run-ns"
    } else {
        "run-drain"
    });
    let mut args = vec!["--resync", "1s"];
    if delete_not_serving {
        args.push("--delete-not-serving");
    }
    let mut agent = w.agent(&args);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    let dns2 = w.of(DNS, "10.244.1.2:5353");
    let web2 = w.of(WEB4, "10.244.2.2:8080");
    let set = |w: &World, ready: bool, serving: bool, terminating: bool| {
        let mut d = dns_slice(&["10.244.1.1", "10.244.1.3"]);
        d["endpoints"]
            .as_array_mut()
            .expect("endpoints")
            .push(ep_cond("10.244.1.2", ready, serving, terminating));
        let mut t = web4_slice(&["10.244.2.1"]);
        t["endpoints"]
            .as_array_mut()
            .expect("endpoints")
            .push(ep_cond("10.244.2.2", ready, serving, terminating));
        w.api.apply_all(vec![d, t]);
    };
    // 1. Draining: terminating, still serving.
    set(&w, false, true, true);
    two_resyncs(&mut agent, "two resyncs with the backends draining");
    assert_table(
        &before,
        &[],
        &w.table(),
        "draining backends (two resyncs later)",
    );

    // 2. Done serving, still listed: UDP goes; TCP only with the flag.
    set(&w, false, false, true);
    let mut gone = dns2.clone();
    if delete_not_serving {
        gone.extend(&web2);
    }
    w.wait_gone(&gone, FLUSH_DEADLINE, "not-serving flows", &agent);
    two_resyncs(&mut agent, "two resyncs with the backends not serving");
    assert_table(
        &before,
        &gone,
        &w.table(),
        &format!("not serving, --delete-not-serving {delete_not_serving}"),
    );
    let m = agent.metrics();
    for (p, n) in [
        ("udp", 3.0),
        ("tcp", if delete_not_serving { 3.0 } else { 0.0 }),
    ] {
        assert_eq!(
            m.sum(
                "ctreap_flows_deleted_total",
                &[("protocol", p), ("reason", "not_serving")]
            ),
            n,
            "{p}:\n{}",
            m.text
        );
    }
    assert_eq!(m.deleted(), gone.len() as f64, "{}", m.text);
    if !delete_not_serving {
        // 3. Control: removed for good.
        w.api.apply_all(vec![
            dns_slice(&["10.244.1.1", "10.244.1.3"]),
            web4_slice(&["10.244.2.1"]),
        ]);
        gone.extend(&web2);
        w.wait_gone(&gone, FLUSH_DEADLINE, "removed backends' flows", &agent);
        assert_table(&before, &gone, &w.table(), "after the removal");
    }
    agent.stop();
}

#[test]
fn draining_is_kept_and_not_serving_udp_deleted_by_default() {
    draining(false);
}

#[test]
fn not_serving_is_deleted_with_the_flag() {
    draining(true);
}

/// Event overrun: with a 4 KiB event buffer a burst of 5000 creates overruns the socket:
/// `ctreap_event_overruns_total` >= 1 and a full pass (trigger overrun) follows, which deletes
/// the 20 flows created in the burst towards a backend removed before (some may be caught by
/// the event trigger first). --resync 10m: no periodic pass can be what deleted them.
///
/// Without the overrun handling the lost NEW events leave the stale flows in place until the
/// next resync, 10 minutes away.
#[test]
fn event_overrun_runs_a_full_pass() {
    let mut w = World::new("run-overrun");
    let mut agent = w.agent(&["--resync", "10m", "--event-rcvbuf", "4096"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let removed = w.of(DNS, "10.244.1.2:5353");
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    w.wait_gone(
        &removed,
        FLUSH_DEADLINE,
        "the removed backend's flows",
        &agent,
    );
    let before = w.table();
    let mut burst = Flow::many(IPPROTO_UDP, DNS, "10.244.1.1:5353", 2500);
    burst.extend(Flow::many(IPPROTO_TCP, WEB4, "10.244.2.1:8080", 2500));
    let stale = Flow::many(IPPROTO_UDP, DNS, "10.244.1.2:5353", 20);
    burst.extend(&stale);
    w.add(&burst);
    w.wait_gone(
        &stale,
        Duration::from_secs(20),
        "the burst's stale flows",
        &agent,
    );
    agent.wait_metrics(FLUSH_DEADLINE, "an overrun and its pass", |m| {
        m.or0("ctreap_event_overruns_total") >= 1.0
            && m.or0("ctreap_reconciles_total{trigger=\"overrun\"}") >= 1.0
    });
    let m = after_pass(&agent);
    assert_eq!(
        m.or0("ctreap_reconciles_total{trigger=\"resync\"}"),
        0.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.deleted_by("overrun") + m.deleted_by("event"),
        20.0,
        "the 20 stale flows, by the overrun pass or events:\n{}",
        m.text
    );
    let mut expect: BTreeSet<Flow> = before.clone();
    expect.extend(burst.iter().copied());
    assert_table(&expect, &stale, &w.table(), "after the overrun");
    println!(
        "overruns {}, deleted by overrun {}, by event {}",
        m.value("ctreap_event_overruns_total"),
        m.deleted_by("overrun"),
        m.deleted_by("event")
    );
    agent.stop();
}

/// Event trigger: a flow created towards a backend removed earlier (kube-proxy's rules lag) is
/// deleted by the NEW-event listener (trigger event), with --resync 10m so no full pass can be
/// what deleted it; a flow created at the same time towards a live backend stays.
#[test]
fn a_new_flow_towards_a_removed_backend_is_deleted_by_the_event() {
    let mut w = World::new("run-event");
    let mut agent = w.agent(&["--resync", "10m"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let removed = w.of(DNS, "10.244.1.2:5353");
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    w.wait_gone(
        &removed,
        FLUSH_DEADLINE,
        "the removed backend's flows",
        &agent,
    );
    let before = w.table();
    let late = Flow::many(IPPROTO_UDP, DNS, "10.244.1.2:5353", 1);
    let live = Flow::many(IPPROTO_UDP, DNS, "10.244.1.1:5353", 1);
    w.add(&late);
    w.add(&live);
    let took = w.wait_gone(
        &late,
        FLUSH_DEADLINE,
        "the late flow deleted by its NEW event",
        &agent,
    );
    let mut expect = before.clone();
    expect.extend(late.iter().chain(&live).copied());
    std::thread::sleep(Duration::from_millis(300));
    assert_table(&expect, &late, &w.table(), "after the event");
    let m = agent.wait_metrics(FLUSH_DEADLINE, "the event delete counted", |m| {
        m.deleted_by("event") >= 1.0
    });
    assert_line(
        &m,
        "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"event\"} 1",
    );
    assert_eq!(m.or0("ctreap_reconciles_total{trigger=\"resync\"}"), 0.0);
    println!("late flow deleted {took:?} after its creation");
    agent.stop();
}

/// `ctreap.io/ignore: "true"`: the Service's flows are never deleted (stale at start-up, its
/// backend removed, several resyncs), but counted in `ctreap_stale_flows`. A backend removed
/// from dns at the same moment is flushed (the control).
///
/// Without the rule the ignored Service's 5 stale flows go with dns's.
#[test]
fn an_ignored_service_is_never_flushed() {
    let mut w = World::new("run-ignore");
    let mut svc = service("legacy", &["10.96.0.40"], &[("dns", 53, "UDP", 53)]);
    svc["metadata"]["annotations"] = json!({"ctreap.io/ignore": "true"});
    w.api.apply(svc);
    let legacy_slice = |ips: &[&str]| slice_ips("legacy-a", "legacy", &[("dns", 53, "UDP")], ips);
    w.api.apply(legacy_slice(&["10.244.4.1", "10.244.4.2"]));
    let mut legacy = Flow::many(IPPROTO_UDP, "10.96.0.40:53", "10.244.4.1:53", 3);
    legacy.extend(Flow::many(IPPROTO_UDP, "10.96.0.40:53", "10.244.4.2:53", 3));
    legacy.extend(Flow::many(IPPROTO_UDP, "10.96.0.40:53", "10.244.4.9:53", 2));
    w.add(&legacy);
    let before = w.table();
    let mut agent = w.agent(&["--resync", "1s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let gone = w.of(DNS, "10.244.1.2:5353");
    w.api.apply_all(vec![
        legacy_slice(&["10.244.4.1"]),
        dns_slice(&["10.244.1.1", "10.244.1.3"]),
    ]);
    w.wait_gone(
        &gone,
        FLUSH_DEADLINE,
        "dns's removed backend (control)",
        &agent,
    );
    // The rule: two resyncs later the ignored Service still has every flow.
    two_resyncs(&mut agent, "two resyncs after the removals");
    assert_table(
        &before,
        &gone,
        &w.table(),
        "the ignored Service's flows stay",
    );
    let m = agent.metrics();
    assert_eq!(
        m.sum("ctreap_flows_deleted_total", &[]),
        3.0,
        "only dns's three:\n{}",
        m.text
    );
    // Left out of ctreap_stale_flows on purpose (docs/agent.md): the flows are kept by the
    // operator's choice, and CtreapStaleFlowsPersisting must not fire for them.
    assert_eq!(
        m.get("ctreap_stale_flows{namespace=\"default\",service=\"legacy\",protocol=\"udp\",reason=\"gone\"}"),
        None,
        "an ignored Service's stale flows are not counted:\n{}",
        m.text
    );
    agent.stop();
}

/// Shutdown mid-dump: 250,000 entries (under the default nf_conntrack_max of 262,144, which is
/// global and not raised by tests; the benchmark covers 1,000,000) and a full pass every
/// second; SIGTERM while the agent is busy (its CPU time moving) -> exit 0 within 1 s. Three
/// times, each on a new agent.
#[test]
fn sigterm_during_a_long_dump_exits_within_a_second() {
    let mut w = World::new("run-sigterm");
    let bulk = Flow::many(IPPROTO_UDP, DNS, "10.244.1.1:5353", 250_000 - w.flows.len());
    create(&mut w.ct, &bulk);
    for round in 0..3 {
        let mut agent = w.agent(&["--resync", "1s"]);
        agent.wait_ready(Duration::from_secs(120));
        // Busy: at least 20 ms of CPU within 50 ms, twice in a row, i.e. inside a pass.
        let t = Instant::now();
        let mut busy = 0;
        let mut last = agent.cpu_ticks();
        while busy < 2 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the agent never got busy with a pass; log:\n{}",
                agent.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
            let now = agent.cpu_ticks();
            busy = if now - last >= 2 { busy + 1 } else { 0 };
            last = now;
        }
        let took = agent.stop();
        println!("round {round}: SIGTERM during a pass over 250k entries -> exit 0 in {took:?}");
    }
    // The table is intact: there was nothing stale.
    assert_eq!(agent::table_count(&mut w.ct), 250_000);
}

/// The test's own /metrics parser (support/agent.rs) on the OpenMetrics shapes the agent
/// serves, so a parser bug cannot pass for an agent bug.
#[test]
fn metrics_text_parses() {
    let text = "# HELP ctreap_flows_deleted Flows deleted.\n\
# TYPE ctreap_flows_deleted counter\n\
ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 3\n\
ctreap_watch_synced{resource=\"endpointslices\"} 1\n\
ctreap_conntrack_entries 42\n\
ctreap_flush_latency_seconds_bucket{le=\"0.005\"} 1\n\
ctreap_flush_latency_seconds_bucket{le=\"+Inf\"} 2\n\
ctreap_flush_latency_seconds_sum 0.0123\n\
ctreap_flush_latency_seconds_count 2\n\
odd{a=\"x,y}\\\"z\"} 1.5 # {trace=\"1\"} 1\n\
# EOF\n";
    let m = agent::Metrics::parse(text);
    assert_eq!(
        m.get("ctreap_flows_deleted_total{trigger=\"watch\",reason=\"gone\",protocol=\"udp\"}"),
        Some(3.0)
    );
    assert_eq!(m.value("ctreap_conntrack_entries"), 42.0);
    assert_eq!(
        m.value("ctreap_flush_latency_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert_eq!(m.value("odd{a=\"x,y}\\\"z\"}"), 1.5);
    assert_eq!(m.deleted_by("watch"), 3.0);
    assert_eq!(m.or0("ctreap_flows_deleted_total{trigger=\"event\"}"), 0.0);
    assert!(m.has_line(
        "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 3"
    ));
}

/// The index of backends with flows here: a departed backend without flows on this node costs
/// no kernel walk, and flows the agent learned of only from NEW events (created after its
/// startup pass) are still flushed by the watch trigger. Without events (`--no-events`, or
/// `nf_conntrack_events` 0 in the node's namespace: the socket opens but the kernel sends
/// nothing) the index is never trusted and every departed backend is walked.
#[test]
fn a_removal_walks_only_backends_with_flows_here() {
    for (tag, no_events, sysctl_off) in [
        ("run-idx", false, false),
        ("run-idx-noev", true, false),
        ("run-idx-sysctl", false, true),
    ] {
        let mut w = World::new(tag);
        if sysctl_off {
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", &w.ns.name, "sysctl", "-qw"])
                .arg("net.netfilter.nf_conntrack_events=0")
                .status()
                .expect("running sysctl");
            assert!(
                st.success(),
                "sysctl nf_conntrack_events=0 in {}",
                w.ns.name
            );
        }
        let extra: &[&str] = if no_events {
            &["--resync", "60s", "--no-events"]
        } else {
            &["--resync", "60s"]
        };
        let no_events = no_events || sysctl_off;
        let mut agent = w.agent(extra);
        agent.wait_ready(READY);
        wait_startup_pass(&mut agent);
        // A new endpoint, and flows to it created after the startup pass.
        w.api.apply(dns_slice(&[
            "10.244.1.1",
            "10.244.1.2",
            "10.244.1.3",
            "10.244.1.4",
            "10.244.1.5",
        ]));
        std::thread::sleep(Duration::from_millis(300));
        let late = Flow::many(IPPROTO_UDP, DNS, "10.244.1.4:5353", 3);
        w.add(&late);
        std::thread::sleep(Duration::from_millis(300));
        let before = w.table();
        let m0 = agent.metrics();
        let dumps0 = m0.sum("ctreap_conntrack_dumps_total", &[("scope", "backend")]);

        // 10.244.1.5 has no flow here: no walk, unless the index cannot be trusted.
        w.api.apply(dns_slice(&[
            "10.244.1.1",
            "10.244.1.2",
            "10.244.1.3",
            "10.244.1.4",
        ]));
        let m = agent.wait_metrics(FLUSH_DEADLINE, "the removal handled", |m| {
            m.or0("ctreap_walks_skipped_total") >= 1.0
                || m.sum("ctreap_conntrack_dumps_total", &[("scope", "backend")]) > dumps0
        });
        let walked = m.sum("ctreap_conntrack_dumps_total", &[("scope", "backend")]) - dumps0;
        if no_events {
            assert_eq!(
                (walked, m.or0("ctreap_walks_skipped_total")),
                (1.0, 0.0),
                "without events every departed backend is walked:\n{}",
                m.text
            );
        } else {
            assert_eq!(
                (walked, m.or0("ctreap_walks_skipped_total")),
                (0.0, 1.0),
                "a backend without flows here is not walked:\n{}",
                m.text
            );
        }
        assert_eq!(
            w.table(),
            before,
            "nothing deleted for a backend without flows"
        );

        // 10.244.1.4's flows were created after the startup pass: known from events (or, with
        // --no-events, found by the walk every removal gets).
        w.api
            .apply(dns_slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"]));
        w.wait_gone(
            &late,
            FLUSH_DEADLINE,
            "flows created after the startup pass deleted by the watch trigger",
            &agent,
        );
        let after = w.table();
        assert_table(&before, &late, &after, "after removing 10.244.1.4");
        let m = agent.metrics();
        assert_eq!(m.deleted_by("watch"), 3.0, "{}", m.text);
        assert_eq!(m.deleted(), 3.0, "only those:\n{}", m.text);
    }
}

/// Node addresses that change (issue 10): kube-proxy with `nodePortAddresses` unset accepts
/// NodePorts on every local address whenever it appears. A NodePort flow to an address added
/// to the node after the agent started is a Service flow, and goes when its backend leaves;
/// removing the address takes the NodePort frontend on it away again.
#[test]
fn nodeports_follow_addresses_added_after_start() {
    let mut w = World::new("run-addrs");
    let mut np = service("np", &["10.96.0.40"], &[("dns", 53, "UDP", 5353)]);
    np["spec"]["type"] = json!("NodePort");
    np["spec"]["ports"][0]["nodePort"] = json!(30053);
    w.api.apply(np);
    let np_slice = |ips: &[&str]| slice_ips("np-a", "np", &[("dns", 5353, "UDP")], ips);
    w.api.apply(np_slice(&["10.244.5.1", "10.244.5.2"]));
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);

    let ns = w.ns.name.clone();
    let ip_addr = |op: &str| {
        let st = std::process::Command::new("ip")
            .args(["-n", &ns, "addr", op, "203.0.113.77/32", "dev", "lo"])
            .status()
            .expect("running ip addr");
        assert!(st.success(), "ip addr {op} 203.0.113.77/32 in {ns}");
    };
    ip_addr("add");
    // The agent logs the change once it has applied it.
    eventually_with(FLUSH_DEADLINE, "the agent sees the new address", || {
        if agent.log().contains("node addresses changed") {
            Ok(())
        } else {
            Err(agent.log_tail(10))
        }
    });
    let flows = Flow::many(IPPROTO_UDP, "203.0.113.77:30053", "10.244.5.1:5353", 3);
    let keep = Flow::many(IPPROTO_UDP, "203.0.113.77:30053", "10.244.5.2:5353", 2);
    w.add(&flows);
    w.add(&keep);
    let before = w.table();
    w.api.apply(np_slice(&["10.244.5.2"]));
    w.wait_gone(
        &flows,
        FLUSH_DEADLINE,
        "NodePort flows on the new address deleted with their backend",
        &agent,
    );
    let after = w.table();
    assert_table(&before, &flows, &after, "after removing 10.244.5.1 from np");

    // The address goes: no rule accepts NodePorts on it any more; its flows are deleted.
    ip_addr("del");
    w.wait_gone(
        &keep,
        FLUSH_DEADLINE,
        "NodePort flows on a removed address deleted",
        &agent,
    );
}

/// Objects the map skips in part (issue 10): one WARN line per object change naming kind,
/// namespace/name and reason, not repeated when the same object is rebuilt for another
/// reason, and `ctreap_cluster_warnings{kind,reason}`, back to 0 once the object is fixed. The
/// rest of the object is used: its good endpoint is a backend.
#[test]
fn skipped_objects_are_named_once_and_counted() {
    let mut w = World::new("run-warn");
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let bad = |eps: Vec<Value>| slice("dns-bad", "dns", &[("dns", 5353, "UDP")], eps);
    w.api.apply(bad(vec![
        ep("10.244.1.9"),
        json!({"addresses": ["not-an-ip"], "conditions": {"ready": true}}),
    ]));
    w.api.apply(slice(
        "ghost-a",
        "ghost",
        &[("dns", 5353, "UDP")],
        vec![ep("10.244.9.9")],
    ));
    let malformed = "ctreap_cluster_warnings{kind=\"EndpointSlice\",reason=\"malformed_address\"}";
    let unknown = "ctreap_cluster_warnings{kind=\"EndpointSlice\",reason=\"unknown_service\"}";
    agent.wait_metrics(FLUSH_DEADLINE, "the warnings counted", |m| {
        m.or0(malformed) == 1.0 && m.or0(unknown) == 1.0
    });
    // Another change of the same Service (its other slice) rebuilds it: no second line.
    w.api.apply(dns_slice(&[
        "10.244.1.1",
        "10.244.1.2",
        "10.244.1.3",
        "10.244.1.8",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    let lines = |what: &str| {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(what))
            .count()
    };
    assert_eq!(
        lines("default/dns-bad"),
        1,
        "one line for the bad slice:\n{}",
        agent.log_tail(20)
    );
    assert!(
        agent.log().lines().any(|l| l.contains("WARN")
            && l.contains("kind=\"EndpointSlice\"")
            && l.contains("default/dns-bad")
            && l.contains("reason=\"malformed_address\"")
            && l.contains("not-an-ip")),
        "kind, object, reason and the value:\n{}",
        agent.log_tail(20)
    );
    assert_eq!(lines("default/ghost-a"), 1, "{}", agent.log_tail(20));
    // The good endpoint of the bad slice is a backend: its flows are live, not deleted.
    let live = Flow::many(IPPROTO_UDP, DNS, "10.244.1.9:5353", 2);
    w.add(&live);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(present(&w.table(), &live), 2, "{}", agent.log_tail(20));

    // Fixed: the gauge goes back to 0.
    w.api.apply(bad(vec![ep("10.244.1.9")]));
    agent.wait_metrics(FLUSH_DEADLINE, "the warning resolved", |m| {
        m.get(malformed) == Some(0.0) && m.or0(unknown) == 1.0
    });
}

/// A wrong `--node-name` (issue 10): no such Node in the API server. The agent still works on
/// the node's interface addresses, and says so loudly: a WARN line at start and a warning in
/// `/readyz` (still 200: deleting on the interface addresses is still right); once the Node
/// appears the warning goes. `ctreap stale` warns too.
#[test]
fn a_node_that_does_not_exist_is_said_loudly() {
    let mut w = World::new("run-nonode");
    w.api
        .server
        .delete(ResourceKind::Node, None, agent::NODE)
        .expect("deleting the Node");
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let (code, body) = agent.readyz();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("ready; warning: Node \"node-1\" not found")
            && body.contains("--node-name"),
        "{body}"
    );
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("Node \"node-1\" not found")),
        "{}",
        agent.log_tail(10)
    );
    // The agent still deletes: a removed backend's flows go.
    let gone = w.of(DNS, "10.244.1.2:5353");
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    w.wait_gone(&gone, FLUSH_DEADLINE, "flows of a removed backend", &agent);

    let out = w.stale(&["--sync-timeout", "10s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("Node \"node-1\" not found"),
        "ctreap stale: {stderr}"
    );

    // The Node appears: the warning goes.
    w.api.apply(agent::node(agent::NODE, agent::NODE_IP));
    eventually_with(FLUSH_DEADLINE, "the readyz warning gone", || {
        match agent.readyz() {
            (200, b) if b == "ready\n" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// The API server goes away (issue 10): nothing is deleted until the fresh lists are complete,
/// and a flow created during the outage towards a backend that was already gone before it
/// goes as soon as the view is current again, not at the next resync (60 s here).
#[test]
fn flows_to_gone_backends_created_during_an_outage_go_when_the_view_is_back() {
    let mut w = World::new("run-outage");
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    // 10.244.1.2 leaves before the outage; its flows go at once.
    let gone = w.of(DNS, "10.244.1.2:5353");
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    w.wait_gone(&gone, FLUSH_DEADLINE, "10.244.1.2's flows", &agent);

    let late = Flow::many(IPPROTO_UDP, DNS, "10.244.1.2:5353", 2);
    with_outage(&w.api, Duration::from_secs(3), || {
        // A client still pinned to the dead backend (kube-proxy lagging) during the outage.
        create(&mut w.ct, &late);
    });
    w.flows.extend(&late);
    let took = w.wait_gone(
        &late,
        Duration::from_secs(15),
        "flows created during the outage towards a backend gone before it",
        &agent,
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    let m = agent.metrics();
    assert!(
        m.deleted_by("resync") >= 2.0,
        "deleted by the pass owed after the outage:\n{}",
        m.text
    );
    // One restart of the watches for the outage, not one per failed connection attempt.
    let restarts = agent
        .log()
        .lines()
        .filter(|l| l.contains("re-listing everything"))
        .count();
    assert!(
        (1..=2).contains(&restarts),
        "{restarts} watch restarts for one outage:\n{}",
        agent.log_tail(30)
    );
}

/// Safety (issue 20): an endpoint that moves between two EndpointSlices of its Service, the two
/// writes GAP apart (slice writers update one object at a time), keeps every flow, for GAP 0,
/// 50, 200, 500 and 1,000 ms, and 1,100 ms beyond the case named: 50 UDP flows (dns,
/// 10.244.1.2) and 50 TCP flows (web, 10.244.2.2), moved back and forth. A backend that
/// vanishes while ready, serving and not terminating waits --move-grace (1.3 s) before it is
/// judged; before that rule the settle window was --grace (50 ms), and a move with more than
/// that between its writes lost all 100 flows.
///
/// Each round proves the agent saw the move and judged it: a marker backend of a third Service,
/// reported terminating earlier, is removed after the move's second write and must be flushed
/// (the same EndpointSlice watch, in order), and `ctreap_settling_pairs` must be back to 0 (the
/// moved pairs' windows ended and they were judged) before the table is compared. The control:
/// with `--move-grace 50ms` this test fails at the 200 ms gap.
#[test]
fn an_endpoint_moving_between_slices_keeps_its_flows_at_every_gap() {
    const GAPS_MS: [u64; 6] = [0, 50, 200, 500, 1000, 1100];
    let mut w = World::new("run-move");
    let dns_b = |ips: &[&str]| slice_ips("dns-b", "dns", &[("dns", 5353, "UDP")], ips);
    let web_b = |ips: &[&str]| slice_ips("web-b", "web", &[("http", 8080, "TCP")], ips);
    w.api.apply_all(vec![dns_b(&[]), web_b(&[])]);
    let moved_dns = Flow::many(IPPROTO_UDP, DNS, "10.244.1.2:5353", 47);
    let moved_web = Flow::many(IPPROTO_TCP, WEB4, "10.244.2.2:8080", 47);
    w.add(&moved_dns);
    w.add(&moved_web);
    let moved: Vec<Flow> = [w.of(DNS, "10.244.1.2:5353"), w.of(WEB4, "10.244.2.2:8080")].concat();
    assert_eq!(moved.len(), 100);
    // The markers: one backend per round, terminating (serving) from the start.
    let markers: Vec<String> = (1..=GAPS_MS.len())
        .map(|i| format!("10.244.9.{i}"))
        .collect();
    let mark_slice = |left: &[String]| {
        slice(
            "mark-a",
            "mark",
            &[("dns", 53, "UDP")],
            left.iter()
                .map(|ip| ep_cond(ip, false, true, true))
                .collect(),
        )
    };
    w.api
        .apply(service("mark", &["10.96.0.40"], &[("dns", 53, "UDP", 53)]));
    w.api.apply(mark_slice(&markers));
    let marker_flows: Vec<Vec<Flow>> = markers
        .iter()
        .map(|ip| Flow::many(IPPROTO_UDP, "10.96.0.40:53", &format!("{ip}:53"), 3))
        .collect();
    for f in &marker_flows {
        w.add(f);
    }
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    assert_eq!(
        present(&before, &moved),
        100,
        "the moved backends' flows exist"
    );

    let mut gone: Vec<Flow> = Vec::new();
    for (round, gap_ms) in GAPS_MS.into_iter().enumerate() {
        let gap = Duration::from_millis(gap_ms);
        // Even rounds move a -> b, odd rounds b -> a.
        let (dns_from, dns_to, web_from, web_to) = if round % 2 == 0 {
            (
                dns_slice(&["10.244.1.1", "10.244.1.3"]),
                dns_b(&["10.244.1.2"]),
                web4_slice(&["10.244.2.1"]),
                web_b(&["10.244.2.2"]),
            )
        } else {
            (
                dns_b(&[]),
                dns_slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"]),
                web_b(&[]),
                web4_slice(&["10.244.2.1", "10.244.2.2"]),
            )
        };
        let t0 = Instant::now();
        w.api.apply_all(vec![dns_from, web_from]);
        // The gap is the case under test, timed from the first write.
        if let Some(rest) = gap.checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
        w.api.apply_all(vec![dns_to, web_to]);
        let second = t0.elapsed();
        // The marker, removed after the move: once it is flushed, the agent has seen the move.
        w.api.apply(mark_slice(&markers[round + 1..]));
        w.wait_gone(
            &marker_flows[round],
            FLUSH_DEADLINE,
            &format!("gap {gap_ms} ms: the marker {} flushed", markers[round]),
            &agent,
        );
        gone.extend_from_slice(&marker_flows[round]);
        agent.wait_metrics(
            Duration::from_millis(1300) + FLUSH_DEADLINE,
            &format!("gap {gap_ms} ms: no pair settling any more"),
            |m| m.value("ctreap_settling_pairs") == 0.0,
        );
        assert_table(
            &before,
            &gone,
            &w.table(),
            &format!("gap {gap_ms} ms (second write {second:?} after the first)"),
        );
        assert!(
            second >= gap && second < gap + Duration::from_millis(200),
            "the second write came {second:?} after the first, for a gap of {gap:?}"
        );
    }
    let m = agent.metrics();
    assert_eq!(
        m.deleted(),
        gone.len() as f64,
        "only the markers' flows were deleted; log:\n{}",
        agent.log_tail(20)
    );
    agent.stop();
}

/// `ctreap stale` and the agent agree on every flow (issue 20): on the same table and cluster,
/// the flows `ctreap stale -o json` marks `delete` are exactly the ones the agent deletes, and
/// every stale flow it marks `keep: ...` stays. The cluster has each case: gone backends (UDP,
/// TCP, SCTP), not serving (UDP deleted, TCP kept without --delete-not-serving), draining,
/// untranslated UDP, an ignored Service and a held one (a slice of it does not decode), each
/// of the last two with flows to a backend that left. `--fail-on-stale` fails before the agent
/// ran and passes after it, although stale flows the agent keeps remain.
///
/// Before, `ctreap stale --fail-on-stale` failed on the ignored Service's flows, which the
/// agent leaves (and says so nowhere).
#[test]
fn stale_and_the_agent_agree_on_every_flow() {
    let mut w = World::new("run-agree");
    w.api.apply(slice(
        "dns-a",
        "dns",
        &[("dns", 5353, "UDP")],
        vec![
            ep("10.244.1.1"),
            ep_cond("10.244.1.2", false, true, true),
            ep_cond("10.244.1.3", false, false, false),
        ],
    ));
    w.api.apply(slice(
        "web-v4",
        "web",
        &[("http", 8080, "TCP")],
        vec![ep("10.244.2.1"), ep_cond("10.244.2.2", false, false, false)],
    ));
    let mut quiet = service("quiet", &["10.96.0.60"], &[("dns", 53, "UDP", 5353)]);
    quiet["metadata"]["annotations"] = json!({"ctreap.io/ignore": "true"});
    w.api.apply(quiet);
    w.api.apply(slice_ips(
        "quiet-a",
        "quiet",
        &[("dns", 5353, "UDP")],
        &["10.244.7.1"],
    ));
    w.api.apply(service(
        "held",
        &["10.96.0.61"],
        &[("dns", 53, "UDP", 5353)],
    ));
    w.api.apply(slice_ips(
        "held-a",
        "held",
        &[("dns", 5353, "UDP")],
        &["10.244.8.1"],
    ));
    let mut junk = slice_ips("held-b", "held", &[("dns", 5353, "UDP")], &["10.244.8.2"]);
    junk["ports"][0]["port"] = json!("5353");
    w.api.apply(junk);
    for (proto, fe, be) in [
        (IPPROTO_UDP, DNS, "10.244.1.9:5353"),
        (IPPROTO_TCP, WEB4, "10.244.2.9:8080"),
        (IPPROTO_SCTP, SIG, "10.244.3.9:3868"),
        (IPPROTO_UDP, DNS, DNS),
        (IPPROTO_UDP, "10.96.0.60:53", "10.244.7.1:5353"),
        (IPPROTO_UDP, "10.96.0.60:53", "10.244.7.9:5353"),
        (IPPROTO_UDP, "10.96.0.61:53", "10.244.8.1:5353"),
        (IPPROTO_UDP, "10.96.0.61:53", "10.244.8.9:5353"),
    ] {
        w.add(&Flow::many(proto, fe, be, 3));
    }
    let before = w.table();

    // What `ctreap stale` says, before the agent runs.
    let (kubeconfig, netns) = (w.api.kubeconfig.clone(), w.ns.name.clone());
    let stale = |fail: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ctreap"));
        c.arg("stale").arg("--kubeconfig").arg(&kubeconfig).args([
            "--netns",
            &netns,
            "--node-name",
            agent::NODE,
            "-o",
            "json",
        ]);
        if fail {
            c.arg("--fail-on-stale");
        }
        let out = c.output().expect("running ctreap stale");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ctreap stale -o json: {e}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), report)
    };
    let (code, report) = stale(true);
    assert_eq!(
        code,
        Some(1),
        "--fail-on-stale with flows to delete: {report:#}"
    );
    let pair = |f: &Flow| {
        (
            agent::proto_name(f.proto).to_string(),
            f.frontend,
            f.backend,
        )
    };
    let mut actions: std::collections::BTreeMap<
        (String, std::net::SocketAddr, std::net::SocketAddr),
        String,
    > = Default::default();
    for g in report["groups"].as_array().expect("groups") {
        let key = (
            g["protocol"].as_str().expect("protocol").to_string(),
            g["frontend"]
                .as_str()
                .expect("frontend")
                .parse()
                .expect("frontend"),
            g["backend"]
                .as_str()
                .expect("backend")
                .parse()
                .expect("backend"),
        );
        actions.insert(key, g["action"].as_str().expect("action").to_string());
    }
    let said = |f: &Flow| {
        actions
            .get(&pair(f))
            .map_or("not listed", String::as_str)
            .to_string()
    };
    let to_delete: Vec<Flow> = before
        .iter()
        .filter(|f| said(f) == "delete")
        .copied()
        .collect();
    // Not vacuous: each case is said as expected.
    for (proto, fe, be, want) in [
        (IPPROTO_UDP, DNS, "10.244.1.9:5353", "delete"),
        (IPPROTO_TCP, WEB4, "10.244.2.9:8080", "delete"),
        (IPPROTO_SCTP, SIG, "10.244.3.9:3868", "delete"),
        (IPPROTO_UDP, DNS, "10.244.1.3:5353", "delete"),
        (IPPROTO_UDP, DNS, DNS, "delete"),
        (IPPROTO_TCP, WEB4, "10.244.2.2:8080", "keep: policy"),
        (IPPROTO_UDP, DNS, "10.244.1.2:5353", "keep"),
        (
            IPPROTO_UDP,
            "10.96.0.60:53",
            "10.244.7.9:5353",
            "keep: ignored",
        ),
        (
            IPPROTO_UDP,
            "10.96.0.61:53",
            "10.244.8.9:5353",
            "keep: ignored",
        ),
    ] {
        let f = Flow::new(proto, fe, be);
        assert_eq!(said(&f), want, "{fe} -> {be}: {report:#}");
    }
    assert_eq!(report["deletable"].as_u64(), Some(to_delete.len() as u64));

    // What the agent does on the same table.
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let m = agent.wait_metrics(FLUSH_DEADLINE, "nothing settling", |m| {
        m.value("ctreap_settling_pairs") == 0.0
    });
    assert_table(
        &before,
        &to_delete,
        &w.table(),
        "the agent deleted what stale said",
    );
    assert_eq!(m.deleted(), to_delete.len() as f64, "{}", m.text);

    // Afterwards: stale flows remain (kept on purpose), and --fail-on-stale passes.
    let (code, report) = stale(true);
    assert_eq!(
        code,
        Some(0),
        "nothing left the agent would delete: {report:#}"
    );
    assert_eq!(report["deletable"].as_u64(), Some(0));
    let stale_left = report["stale_gone"].as_u64().unwrap_or(0)
        + report["stale_not_serving"].as_u64().unwrap_or(0);
    assert_eq!(
        stale_left, 9,
        "ignored, held and TCP not-serving flows stay: {report:#}"
    );
    println!(
        "stale said delete for {} of {} flows; the agent deleted exactly those; {stale_left} stale flows kept on purpose",
        to_delete.len(),
        before.len()
    );
    agent.stop();
}

/// UDP parity with kube-proxy's reconciler (issue 20): untranslated entries to a Service's
/// ClusterIP (made while it had no endpoint, so no rule translated them; a UDP client that
/// keeps its port keeps them alive and never reaches a pod) are deleted as soon as the Service
/// has a serving endpoint, with an empty slice first (`late-a`) and with no slice at all
/// (`late-b`): 100 UDP flows each. The 100 untranslated TCP flows to each stay (TCP's rule is
/// unchanged). The startup pass, while neither Service has an endpoint, keeps all of them.
///
/// Without the rule the UDP flows stay (the wait for them fails); without the model's record
/// of frontends that gained an endpoint only the next full pass (--resync 60s) would find them.
#[test]
fn untranslated_udp_entries_go_when_the_service_gains_an_endpoint() {
    let mut w = World::new("run-unnat");
    let ports = [("dns", 53, "UDP", 5353), ("http", 80, "TCP", 8080)];
    let slice_ports = [("dns", 5353, "UDP"), ("http", 8080, "TCP")];
    w.api.apply(service("late-a", &["10.96.0.51"], &ports));
    w.api
        .apply(slice_ips("late-a-1", "late-a", &slice_ports, &[]));
    w.api.apply(service("late-b", &["10.96.0.52"], &ports));
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for ip in ["10.96.0.51", "10.96.0.52"] {
        let (u, t) = (format!("{ip}:53"), format!("{ip}:80"));
        udp.extend(Flow::many(IPPROTO_UDP, &u, &u, 100));
        tcp.extend(Flow::many(IPPROTO_TCP, &t, &t, 100));
    }
    w.add(&udp);
    w.add(&tcp);
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    assert_table(&before, &[], &before, "setup");
    assert_eq!(
        present(&before, &udp) + present(&before, &tcp),
        400,
        "the startup pass kept every untranslated flow: no endpoint could translate them"
    );
    let t0 = Instant::now();
    w.api.apply_all(vec![
        slice_ips("late-a-1", "late-a", &slice_ports, &["10.244.5.1"]),
        slice_ips("late-b-1", "late-b", &slice_ports, &["10.244.6.1"]),
    ]);
    w.wait_gone(&udp, FLUSH_DEADLINE, "the untranslated UDP flows", &agent);
    let took = t0.elapsed();
    let m = agent.wait_metrics(FLUSH_DEADLINE, "the watch pass done", |m| {
        m.value("ctreap_settling_pairs") == 0.0 && m.deleted() >= 200.0
    });
    assert_table(&before, &udp, &w.table(), "after the endpoints appeared");
    assert_line(
        &m,
        "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"not_translated\",trigger=\"watch\"} 200",
    );
    assert_eq!(m.deleted(), 200.0, "{}", m.text);
    println!("200 untranslated UDP flows gone {took:?} after the endpoints appeared");
    agent.stop();
}

/// A pod that is force-deleted (ready, serving, then gone with no terminating phase) looks like
/// the first half of a move: its flows wait out --move-grace (1.3 s) and then go, within 1.5 s
/// of the removal (issue 20). Not before the window ends: the move test relies on that.
#[test]
fn a_force_deleted_pod_is_flushed_after_the_move_window() {
    let mut w = World::new("run-force");
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    let gone = [w.of(DNS, "10.244.1.2:5353"), w.of(WEB4, "10.244.2.2:8080")].concat();
    let t0 = Instant::now();
    w.api.apply_all(vec![
        dns_slice(&["10.244.1.1", "10.244.1.3"]),
        web4_slice(&["10.244.2.1"]),
    ]);
    agent.wait_metrics(FLUSH_DEADLINE, "the removal settling", |m| {
        m.value("ctreap_settling_pairs") == 2.0
    });
    w.wait_gone(
        &gone,
        FLUSH_DEADLINE,
        "the force-deleted pods' flows",
        &agent,
    );
    let since = t0.elapsed();
    assert!(
        since >= Duration::from_millis(1300),
        "flushed {since:?} after the removal, before --move-grace ended"
    );
    assert_table(&before, &gone, &w.table(), "after the force-delete");
    println!("force-deleted pods' flows gone {since:?} after the removal (polled every 10 ms)");
    agent.stop();
}

/// Liveness (issue 10): /healthz follows the main loop's progress. A loop wedged on purpose
/// (the hidden fault-injection flag) makes it fail within --liveness-timeout, while /metrics
/// and /readyz, served by other tasks, still answer; an agent that is only idle stays healthy.
#[test]
fn healthz_fails_when_the_main_loop_is_wedged() {
    let w = World::new("run-live");
    let mut idle = w.agent(&["--resync", "60s", "--liveness-timeout", "2s"]);
    let mut agent = w.agent(&[
        "--resync",
        "60s",
        "--liveness-timeout",
        "2s",
        "--debug-stall-after",
        "1s",
    ]);
    agent.wait_ready(READY);
    idle.wait_ready(READY);
    let (code, _) = agent.get("/healthz").expect("GET /healthz");
    assert_eq!(code, 200, "healthy at first");
    eventually_with(Duration::from_secs(10), "/healthz fails", || {
        match agent.get("/healthz") {
            Ok((503, body)) if body.starts_with("stalled: ") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        agent.log().contains("--debug-stall-after"),
        "{}",
        agent.log_tail(5)
    );
    assert_eq!(agent.get("/metrics").expect("metrics").0, 200);
    // Idle for longer than the timeout: the heartbeat keeps it healthy.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        idle.get("/healthz").expect("GET /healthz"),
        (200, "ok\n".to_string()),
        "{}",
        idle.log_tail(5)
    );
}

/// An object that does not decode (issue 10): EndpointSlices whose port is a string. Each is
/// decoded on its own, so one such object no longer stops the whole watch: the agent becomes
/// ready with one in the first list, keeps acting on the rest of the view, names each bad
/// object in one WARN line and counts it in `ctreap_cluster_warnings`.
///
/// The Service a bad slice is labelled for is held: its endpoints are not all known, so none
/// of its flows is judged (without the hold the flows to 10.244.1.7, the bad slice's endpoint,
/// are deleted by the startup pass and the event path, and 10.244.1.2's on its removal). When
/// the hold lifts, the Service is judged against its backends from before the hold. A slice
/// that goes bad after it was good keeps its last decoded version (without that, web-v4's live
/// flows are deleted here); fixed, it is read again.
#[test]
fn an_object_that_does_not_decode_is_skipped_and_named() {
    let mut w = World::new("run-undec");
    let stringly = |mut s: Value, port: &str| {
        s["ports"][0]["port"] = json!(port);
        s
    };
    w.api.apply(stringly(
        slice(
            "dns-junk",
            "dns",
            &[("dns", 5353, "UDP")],
            vec![ep("10.244.1.7")],
        ),
        "5353",
    ));
    w.add(&Flow::many(IPPROTO_UDP, DNS, "10.244.1.7:5353", 2));
    let initial = w.table();
    let mut agent = w.agent(&["--resync", "60s"]);
    // Before: /readyz failed with the deserialization error for as long as the object existed.
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let undecodable = "ctreap_cluster_warnings{kind=\"EndpointSlice\",reason=\"undecodable\"}";
    agent.wait_metrics(FLUSH_DEADLINE, "the bad slice counted", |m| {
        m.or0(undecodable) == 1.0
    });

    // dns is held: a new flow to the bad slice's endpoint and a removal of 10.244.1.2 delete
    // nothing of it.
    let late = Flow::many(IPPROTO_UDP, DNS, "10.244.1.7:5353", 1);
    w.add(&late);
    w.api.apply(dns_slice(&["10.244.1.1", "10.244.1.3"]));
    // The rest of the view is current: a removal elsewhere is flushed.
    let sig_gone = w.of(SIG, "10.244.3.2:3868");
    w.api.apply(sig_slice(&["10.244.3.1"]));
    w.wait_gone(&sig_gone, FLUSH_DEADLINE, "10.244.3.2's flows", &agent);
    std::thread::sleep(Duration::from_millis(300));
    let held = w.table();
    let mut expected = initial.clone();
    expected.extend(late.iter().copied());
    assert_table(&expected, &sig_gone, &held, "while dns is held");

    // web-v4 goes bad, dropping 10.244.2.2 in the same write: the last decoded version stays,
    // so nothing of web is deleted.
    w.api.apply(stringly(web4_slice(&["10.244.2.1"]), "8080"));
    agent.wait_metrics(FLUSH_DEADLINE, "both bad slices counted", |m| {
        m.or0(undecodable) == 2.0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_table(&held, &[], &w.table(), "after web-v4 went bad");
    let warn_lines = |what: &str| {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(what) && l.contains("undecodable"))
            .count()
    };
    assert_eq!(warn_lines("default/dns-junk"), 1, "{}", agent.log_tail(20));
    assert_eq!(warn_lines("default/web-v4"), 1, "{}", agent.log_tail(20));
    assert!(
        agent.log().lines().any(|l| l.contains("default/web-v4")
            && l.contains("invalid type: string")
            && l.contains("last decoded version is kept")),
        "the decoder's message and what the agent does:\n{}",
        agent.log_tail(20)
    );
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("default/dns-junk") && l.contains("Service default/dns is held")),
        "{}",
        agent.log_tail(20)
    );
    let (code, body) = agent.readyz();
    assert_eq!(code, 200, "{body}");

    // Fixed (as the bad write meant): read again, and 10.244.2.2's flows go.
    let web_gone = w.of(WEB4, "10.244.2.2:8080");
    w.api.apply(web4_slice(&["10.244.2.1"]));
    w.wait_gone(&web_gone, FLUSH_DEADLINE, "10.244.2.2's flows", &agent);
    // The bad slice deleted: the hold lifts, and 10.244.1.2, gone since, is flushed. (The
    // flows to 10.244.1.7, never a backend the agent knew, wait for the next full pass.)
    w.api
        .server
        .delete(ResourceKind::EndpointSlice, Some("default"), "dns-junk")
        .expect("delete");
    agent.wait_metrics(FLUSH_DEADLINE, "no bad object left", |m| {
        m.get(undecodable) == Some(0.0)
    });
    let dns_gone = w.of(DNS, "10.244.1.2:5353");
    w.wait_gone(&dns_gone, FLUSH_DEADLINE, "10.244.1.2's flows", &agent);
    let all_gone: Vec<Flow> = [sig_gone, web_gone, dns_gone].concat();
    assert_table(&expected, &all_gone, &w.table(), "at the end");
}

/// The first scrape (issue 12): the standard process metrics, `ctreap_build_info` labelled with
/// the version and git revision, and the counters whose labels are known in advance already at
/// 0, so `rate()` and `increase()` see the first deletion.
#[test]
fn the_first_scrape_has_process_metrics_build_info_and_zero_counters() {
    let w = World::new("run-scrape");
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    let m = agent.metrics();
    assert!(m.value("process_resident_memory_bytes") > 1e6, "{}", m.text);
    assert!(m.get("process_cpu_seconds_total").is_some(), "{}", m.text);
    assert!(m.value("process_open_fds") >= 3.0, "{}", m.text);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = m.value("process_start_time_seconds");
    assert!(
        started <= now && started > now - 600.0,
        "{started} vs {now}"
    );
    let build = m.series_of("ctreap_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    let (labels, v) = &build[0];
    assert_eq!(*v, 1.0);
    assert!(
        labels.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && labels.contains("revision=\"")
            && !labels.contains("revision=\"\""),
        "{labels}"
    );
    for line in [
        "ctreap_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"} 0",
        "ctreap_flows_deleted_total{protocol=\"sctp\",reason=\"not_serving\",trigger=\"resync\"} 0",
        "ctreap_reconciles_total{trigger=\"overrun\"} 0",
        "ctreap_conntrack_dumps_total{scope=\"backend\"} 0",
    ] {
        assert_line(&m, line);
    }
    assert!(
        m.series_of("ctreap_dry_run_flows_total").is_empty(),
        "no dry-run series without --dry-run"
    );
}

/// The Service's own record (issue 21) after a rollout, read with the real kubectl: two
/// backends of `dns` leave one after the other (reported terminating, then removed), and
/// `kubectl get events --field-selector involvedObject.name=dns` shows one Event from this
/// node whose series counts both; `web`, untouched, has none. `--debug-events-window 1s` stands
/// for the minute between two writes of one Event.
#[test]
fn a_rollout_leaves_one_event_per_service_that_kubectl_reads() {
    let kubectl = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .find(|k| k.is_file())
        })
        .unwrap_or_else(|| {
            panic!("kubectl is not installed: `scripts/test` installs it (apt-get install kubectl)")
        });
    let mut w = World::new("run-events");
    let mut agent = w.agent(&["--resync", "60s", "--debug-events-window", "1s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    let mut gone = Vec::new();
    for (leaving, staying) in [
        ("10.244.1.2", vec!["10.244.1.1", "10.244.1.3"]),
        ("10.244.1.3", vec!["10.244.1.1"]),
    ] {
        let mut eps: Vec<Value> = staying.iter().map(|ip| ep(ip)).collect();
        eps.push(ep_cond(leaving, false, true, true));
        w.api
            .apply(slice("dns-a", "dns", &[("dns", 5353, "UDP")], eps));
        w.api.apply(dns_slice(&staying));
        let flows = w.of(DNS, &format!("{leaving}:5353"));
        w.wait_gone(
            &flows,
            FLUSH_DEADLINE,
            &format!("{leaving}'s flows"),
            &agent,
        );
        gone.extend(flows);
    }
    assert_table(&before, &gone, &w.table(), "after the rollout");

    let kubeconfig = w.api.kubeconfig.clone();
    let events_of = |name: &str| -> Result<String, String> {
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "events", "-n", "default", "--field-selector"])
            .arg(format!("involvedObject.name={name}"))
            .arg("-o")
            .arg("jsonpath={range .items[*]}{.reason}|{.type}|{.reportingInstance}|{.series.count}|{.message}{\"\\n\"}{end}")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let want = "StaleFlowsDeleted|Normal|node-1|2|backend 10.244.1.2 left: 3 flows deleted on node node-1 (3 UDP), ";
    eventually_with(
        Duration::from_secs(10),
        "one Event on dns, its series counting both departures",
        || match events_of("dns") {
            Ok(s) if s.starts_with(want) && !s.contains('\n') => Ok(()),
            Ok(s) => Err(format!("kubectl printed {s:?}")),
            Err(e) => Err(e),
        },
    );
    assert_eq!(
        events_of("web").as_deref(),
        Ok(""),
        "web lost no backend: no Event"
    );
    let m = agent.metrics();
    assert_eq!(
        m.or0("ctreap_kubernetes_events_total{result=\"created\"}"),
        1.0,
        "{}",
        m.text
    );
    agent.stop();
}

/// A Pod of node-1 with hostPort 8125/UDP (a StatsD DaemonSet's), `ip` its address.
fn statsd_pod(name: &str, ip: &str, terminating: bool) -> Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if terminating {
        meta["deletionTimestamp"] = json!("2026-12-05T10:00:00Z");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"nodeName": agent::NODE, "containers": [{"name": "statsd", "image": "statsd",
               "ports": [{"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// hostPort flows on the real table (issue 21): UDP clients of a StatsD DaemonSet's hostPort
/// (the portmap DNAT: the node's address 198.51.100.10:8125 -> pod:8125). The DaemonSet rolls:
/// while the old pod terminates its flows stay (`ctreap stale` lists them under their pod,
/// draining) beside the new pod's; once it is gone from the API they are deleted within 0.5 s,
/// and the new pod's stay.
#[test]
fn a_replaced_hostport_pods_udp_flows_go_within_half_a_second() {
    const FRONTEND: &str = "198.51.100.10:8125";
    let mut w = World::new("run-hostport");
    w.api.apply(statsd_pod("statsd-old", "10.244.5.7", false));
    let old: Vec<Flow> = (0..3)
        .map(|_| Flow::new(IPPROTO_UDP, FRONTEND, "10.244.5.7:8125"))
        .collect();
    w.add(&old);
    let mut agent = w.agent(&["--resync", "60s"]);
    agent.wait_ready(READY);
    wait_startup_pass(&mut agent);
    let before = w.table();
    assert_eq!(
        present(&before, &old),
        old.len(),
        "the startup pass kept the live pod's flows"
    );

    // The roll: the old pod terminating (still running); the new one's flows come before the
    // API reports its IP, as on a node (portmap writes the DNAT with the sandbox, the kubelet
    // reports the IP after): their NEW events must not look like flows to a gone backend.
    w.api.apply(statsd_pod("statsd-old", "10.244.5.7", true));
    let new: Vec<Flow> = (0..2)
        .map(|_| Flow::new(IPPROTO_UDP, FRONTEND, "10.244.5.9:8125"))
        .collect();
    w.add(&new);
    // Control, after them: a new flow to a Service backend that never was goes on its event;
    // the events before it have been judged by then.
    let control = [Flow::new(IPPROTO_UDP, DNS, "10.244.1.99:5353")];
    w.add(&control);
    w.wait_gone(
        &control,
        FLUSH_DEADLINE,
        "the control flow (its NEW event)",
        &agent,
    );
    assert_eq!(
        present(&w.table(), &new),
        new.len(),
        "flows to a pod the API has not listed yet were deleted"
    );
    w.api.apply(statsd_pod("statsd-new", "10.244.5.9", false));
    // `ctreap stale` lists both pods' hostPort flows under their pod, neither deleted.
    let out = w.stale(&["-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ctreap stale -o json: {e}; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut listed: Vec<String> = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["frontend"] == FRONTEND)
        .map(|g| {
            format!(
                "{} {} {} {} {}",
                g["service"].as_str().unwrap_or(""),
                g["backend"].as_str().unwrap_or(""),
                g["verdict"].as_str().unwrap_or(""),
                g["action"].as_str().unwrap_or(""),
                g["flows"]
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "pod/statsd-new 10.244.5.9:8125 live keep 2",
            "pod/statsd-old 10.244.5.7:8125 draining keep 3"
        ],
        "{report:#}"
    );

    w.api
        .server
        .delete(ResourceKind::Pod, Some("default"), "statsd-old")
        .expect("delete the old pod");
    let took = w.wait_gone(&old, FLUSH_DEADLINE, "the old pod's hostPort flows", &agent);
    assert!(
        took <= Duration::from_millis(500),
        "the old pod's flows went {took:?} after its deletion (issue 21: within 0.5 s)"
    );
    assert_table(
        &before.iter().chain(new.iter()).copied().collect(),
        &old,
        &w.table(),
        "after the old pod left",
    );
    let m = agent.wait_metrics(FLUSH_DEADLINE, "the hostPort deletes counted", |m| {
        m.or0("ctreap_hostport_flows_deleted_total{protocol=\"udp\",reason=\"gone\",trigger=\"watch\"}") == 3.0
    });
    assert_eq!(
        m.deleted(),
        4.0,
        "the old pod's 3 and the control: {}",
        m.text
    );
    println!(
        "hostPort: the replaced pod's 3 UDP flows gone {took:?} after its deletion (polled every 10 ms)"
    );
    agent.stop();
}
