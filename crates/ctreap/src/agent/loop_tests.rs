//! The agent's loop on an in-memory table ([`MemTable`]): from watch events (a real list/watch
//! API server, kube-testserver, in process) to the deletes the table records. No kernel, no
//! root: what the kernel tests show on the real table, these show for the loop's own rules
//! (the settle windows, the circuit breaker), each beside its positive control.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Parser;
use ctnetlink::{Entry, L4, Tuple};
use kube_testserver::{ResourceKind, ServerConfig, TestServer, Verb};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::events::EventMsg;
use super::kernel::Kernel;
use super::table::MemTable;
use super::{RunCmd, serve};

const UDP: u8 = 17;
const TCP: u8 = 6;
const NODE: &str = "node-1";
/// Service a's two ready backends, as most tests start.
const BOTH: [(&str, &str); 2] = [("192.0.2.1", "ready"), ("192.0.2.2", "ready")];

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    cmd: RunCmd,
}

struct Running {
    api: Arc<TestServer>,
    table: MemTable,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// The agent on `table` with `api`, flags `extra` after the test's own (no events listener,
    /// a free port, an hour between resyncs so that only the watch path deletes), past its
    /// startup pass.
    async fn start(api: Arc<TestServer>, table: MemTable, extra: &[&str]) -> Running {
        Running::start_with_events(api, table, extra, None).await
    }

    /// [`Running::start`], conntrack events coming from `events` (none without).
    async fn start_with_events(
        api: Arc<TestServer>,
        table: MemTable,
        extra: &[&str],
        events: Option<mpsc::Receiver<EventMsg>>,
    ) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let mut args = vec![
            "ctreap".to_owned(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--node-name".into(),
            NODE.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--no-events".into(),
            "--resync".into(),
            "1h".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let cmd = Cli::try_parse_from(args).expect("flags").cmd;
        let client = crate::cluster::kube_client(cmd.kube.kubeconfig.clone(), None)
            .await
            .expect("client");
        let kernel = Kernel::on(Box::new(table.clone()), Arc::new(AtomicBool::new(false)));
        let (stop, stop_rx) = watch::channel(false);
        let cancel = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(serve(cmd, kernel, client, None, cancel, stop_rx, events));
        let r = Running {
            api,
            table,
            stop,
            task,
            _dir: dir,
        };
        r.until("the startup pass", Duration::from_secs(10), |t| {
            t.full_dumps >= 1
        })
        .await;
        r
    }

    /// Waits until `cond` holds on the table's record; fails after `within`.
    async fn until(
        &self,
        what: &str,
        within: Duration,
        cond: impl Fn(&super::table::Record) -> bool,
    ) -> Duration {
        let t = Instant::now();
        loop {
            if cond(&self.table.lock()) {
                return t.elapsed();
            }
            assert!(
                !self.task.is_finished(),
                "the agent stopped waiting for {what}"
            );
            assert!(
                t.elapsed() < within,
                "timed out after {within:?} waiting for {what}; deleted: {:?}",
                deleted_backends(&self.table)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn apply(&self, obj: Value) {
        self.api.apply_json(obj).expect("apply");
    }

    /// Service a's second backend (of [`BOTH`]) removed the normal way, terminating then
    /// gone; waits until its `n` flows are deleted.
    async fn remove_second_backend(&self, n: usize) {
        self.apply(slice(
            "a-1",
            "a",
            &[("192.0.2.1", "ready"), ("192.0.2.2", "terminating")],
        ));
        self.apply(slice("a-1", "a", &[("192.0.2.1", "ready")]));
        self.until(
            &format!("192.0.2.2's {n} flows deleted"),
            Duration::from_secs(5),
            |r| deleted_of(r, "192.0.2.2") == n,
        )
        .await;
    }

    /// The core/v1 Events in `default` that `fields` selects, once `done` holds for them
    /// (read as `kubectl get events --field-selector` reads them); fails after 5 s.
    async fn events_until(
        &self,
        fields: &str,
        done: impl Fn(&[k8s_openapi::api::core::v1::Event]) -> bool,
        what: &str,
    ) -> Vec<k8s_openapi::api::core::v1::Event> {
        let kubeconfig = self._dir.path().join("kubeconfig");
        let client = crate::cluster::kube_client(Some(kubeconfig), None)
            .await
            .expect("client");
        let events: kube::Api<k8s_openapi::api::core::v1::Event> =
            kube::Api::namespaced(client, "default");
        let t = Instant::now();
        loop {
            let items = events
                .list(&kube::api::ListParams::default().fields(fields))
                .await
                .expect("list events")
                .items;
            if done(&items) {
                return items;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "no {what} within 5 s: {items:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let res = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the agent stops");
        res.expect("agent task").expect("agent result");
    }
}

fn api() -> Arc<TestServer> {
    let s = TestServer::try_start_background_with(ServerConfig::default()).expect("testserver");
    s.apply_json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
                        "status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.10"}]}}))
        .expect("node");
    Arc::new(s)
}

/// Service `name` on `vip`: dns 53/UDP -> 5353, web 80/TCP -> 8080.
fn service(name: &str, vip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"type": "ClusterIP", "clusterIP": vip, "clusterIPs": [vip],
                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                              {"name": "web", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
}

/// Slice `name` of Service `svc`; each endpoint (address, state): "ready", "terminating" or
/// "not-serving".
fn slice(name: &str, svc: &str, eps: &[(&str, &str)]) -> Value {
    let eps: Vec<Value> = eps
        .iter()
        .map(|(ip, state)| {
            let (ready, serving, terminating) = match *state {
                "ready" => (true, true, false),
                "terminating" => (false, true, true),
                _ => (false, false, false),
            };
            json!({"addresses": [ip], "nodeName": NODE,
                   "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": "default",
                        "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4",
           "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                     {"name": "web", "port": 8080, "protocol": "TCP"}],
           "endpoints": eps})
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// `n` flows of each protocol to `vip`, translated to `backend`, from client 198.18.V.B (the
/// last bytes of the frontend and backend: every original tuple is distinct, as in the
/// kernel's table).
fn flows(vip: &str, backend: &str, n: u16) -> Vec<Entry> {
    let last = |s: &str| s.rsplit('.').next().expect("an IPv4 address").to_owned();
    let client = ip(&format!("198.18.{}.{}", last(vip), last(backend)));
    let mut out = Vec::new();
    for (proto, port, bport) in [(UDP, 53, 5353), (TCP, 80, 8080)] {
        for k in 0..n {
            let sport = 40_000 + k;
            let orig = Tuple::new(client, ip(vip), L4::ports(proto, sport, port));
            let reply = Tuple::new(ip(backend), client, L4::ports(proto, bport, sport));
            out.push(Entry::new(orig, reply));
        }
    }
    out
}

/// The backend addresses of the deleted entries, in order, each once.
fn deleted_backends(t: &MemTable) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (e, _) in &t.lock().deleted {
        let b = e.reply.src.to_string();
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

fn deleted_of(r: &super::table::Record, backend: &str) -> usize {
    r.deleted
        .iter()
        .filter(|(e, _)| e.reply.src == ip(backend))
        .count()
}

/// A backend removed the normal way (terminating, then gone) loses its flows, both protocols,
/// and nothing else does; the loop goes on to the next removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_loses_its_flows_and_only_those() {
    let api = api();
    api.apply_json(service("a", "198.19.0.10")).expect("svc");
    api.apply_json(slice("a-1", "a", &BOTH)).expect("slice");
    let mut entries = flows("198.19.0.10", "192.0.2.1", 5);
    entries.extend(flows("198.19.0.10", "192.0.2.2", 5));
    // Not a Service's: the same backend address behind another frontend.
    entries.extend(flows("203.0.113.7", "192.0.2.2", 3));
    let run = Running::start(api, MemTable::new(entries), &[]).await;
    assert!(
        run.table.lock().deleted.is_empty(),
        "the startup pass found nothing stale"
    );

    run.remove_second_backend(10).await;
    // The next removal is served too: the loop went on, and still left the others alone.
    run.apply(slice("a-1", "a", &[("192.0.2.1", "terminating")]));
    run.apply(slice("a-1", "a", &[]));
    run.until(
        "192.0.2.1's 10 flows deleted",
        Duration::from_secs(5),
        |r| deleted_of(r, "192.0.2.1") == 10,
    )
    .await;
    {
        let r = run.table.lock();
        assert_eq!(r.deleted.len(), 20, "{:?}", deleted_backends(&run.table));
        assert_eq!(r.entries.len(), 6, "the other frontend's flows stay");
        assert!(r.entries.iter().all(|e| e.orig.dst == ip("203.0.113.7")));
    }
    run.stop().await;
}

/// An endpoint moving between two slices of its Service (gone from one, then listed by the
/// other) keeps its flows at every gap between the two writes issue 20 names (0, 50, 200, 500
/// and 1,000 ms, under the default --move-grace); a backend that vanishes while serving and
/// does not come back (a force-deleted pod) loses its flows once --move-grace has passed: the
/// positive control, in the same run. With the rule removed (--move-grace 50ms) this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_between_slices_keep_their_flows_and_a_force_delete_does_not() {
    const GAPS_MS: [u64; 5] = [0, 50, 200, 500, 1000];
    let movers: Vec<String> = (0..GAPS_MS.len())
        .map(|i| format!("192.0.2.{}", 11 + i))
        .collect();
    let api = api();
    api.apply_json(service("a", "198.19.0.10")).expect("svc");
    let mut a1: Vec<(&str, &str)> = movers.iter().map(|m| (m.as_str(), "ready")).collect();
    a1.push(("192.0.2.3", "ready"));
    api.apply_json(slice("a-1", "a", &a1)).expect("slice");
    let mut a2: Vec<(&str, &str)> = vec![("192.0.2.2", "ready")];
    api.apply_json(slice("a-2", "a", &a2)).expect("slice");
    let mut entries = flows("198.19.0.10", "192.0.2.3", 5);
    for m in &movers {
        entries.extend(flows("198.19.0.10", m, 5));
    }
    let run = Running::start(api, MemTable::new(entries), &[]).await;

    for (i, gap) in GAPS_MS.iter().enumerate() {
        a1.retain(|(ip, _)| *ip != movers[i]);
        if i == GAPS_MS.len() - 1 {
            a1.retain(|(ip, _)| *ip != "192.0.2.3"); // force-deleted, never back
        }
        run.apply(slice("a-1", "a", &a1));
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(*gap)).await;
        a2.push((movers[i].as_str(), "ready"));
        run.apply(slice("a-2", "a", &a2));
        if i == GAPS_MS.len() - 1 {
            run.until(
                "the force-deleted backend's 10 flows deleted",
                Duration::from_secs(5),
                |r| deleted_of(r, "192.0.2.3") == 10,
            )
            .await;
            let after = t.elapsed();
            assert!(
                after >= Duration::from_millis(1300),
                "deleted {after:?} after the write, before the default --move-grace"
            );
        }
    }
    assert_eq!(
        deleted_backends(&run.table),
        ["192.0.2.3"],
        "every moved endpoint kept its flows"
    );
    run.stop().await;
}

/// The circuit breaker: two Services emptied at once, with most of the node's flows, are held
/// until a fresh list confirms the view, then deleted; one Service emptied alone (the positive
/// control, same flags) is deleted at once, with no list in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_emptied_at_once_wait_for_a_fresh_list_and_one_does_not() {
    let api = api();
    for (name, vip, backend) in [
        ("a", "198.19.0.10", "192.0.2.1"),
        ("b", "198.19.0.11", "192.0.2.2"),
        ("c", "198.19.0.12", "192.0.2.3"),
    ] {
        api.apply_json(service(name, vip)).expect("svc");
        api.apply_json(slice(
            &format!("{name}-1"),
            name,
            &[(backend, "terminating")],
        ))
        .expect("slice");
    }
    let mut entries = flows("198.19.0.10", "192.0.2.1", 20);
    entries.extend(flows("198.19.0.11", "192.0.2.2", 20));
    entries.extend(flows("198.19.0.12", "192.0.2.3", 20));
    let lists = {
        let api = api.clone();
        move || api.request_count(ResourceKind::EndpointSlice, Verb::List) as u64
    };
    let table = MemTable::new(entries).with_probe(lists.clone());
    let flags = ["--max-delete-min", "10", "--max-delete-share", "50%"];
    let run = Running::start(api, table, &flags).await;

    // Control: c alone loses its only backend: deleted with no list since the start.
    let lists_before = lists();
    run.apply(slice("c-1", "c", &[]));
    run.until("c's 40 flows deleted", Duration::from_secs(5), |r| {
        deleted_of(r, "192.0.2.3") == 40
    })
    .await;
    assert!(
        run.table
            .lock()
            .deleted
            .iter()
            .all(|(_, l)| *l == lists_before),
        "one emptied Service is not held"
    );

    // a and b lose theirs together: 80 of 80 remaining flows from two emptied Services.
    let lists_before = lists();
    run.api
        .apply_all(vec![slice("a-1", "a", &[]), slice("b-1", "b", &[])])
        .expect("burst");
    run.until(
        "a's and b's 80 flows deleted",
        Duration::from_secs(20),
        |r| deleted_of(r, "192.0.2.1") + deleted_of(r, "192.0.2.2") == 80,
    )
    .await;
    let held: Vec<u64> = run
        .table
        .lock()
        .deleted
        .iter()
        .filter(|(e, _)| e.reply.src != ip("192.0.2.3"))
        .map(|(_, l)| *l)
        .collect();
    assert!(
        held.iter().all(|l| *l > lists_before),
        "deleted before a fresh list confirmed the view: lists at each delete {held:?}, {lists_before} before"
    );
    // The hold is on the held Services' own record: one Warning each; c, not held, has none.
    let held_events = run
        .events_until(
            "reason=StaleFlowsHeld",
            |e| e.len() == 2,
            "a StaleFlowsHeld Warning on a and on b",
        )
        .await;
    let mut on: Vec<(String, String)> = held_events
        .iter()
        .map(|e| {
            (
                e.involved_object.name.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
            )
        })
        .collect();
    on.sort();
    assert_eq!(
        on,
        [
            ("a".into(), "Warning".into()),
            ("b".into(), "Warning".into())
        ]
    );
    run.stop().await;
}

/// Conntrack events (from a channel here; from the kernel's socket in the agent): a NEW flow
/// towards a backend already gone is deleted on its event, and only that flow; an overrun
/// (events lost) runs a full pass, which finds the flows no event told of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_deletes_its_flow_and_an_overrun_runs_a_full_pass() {
    let api = api();
    api.apply_json(service("a", "198.19.0.10")).expect("svc");
    api.apply_json(slice("a-1", "a", &[("192.0.2.1", "ready")]))
        .expect("slice");
    let (tx, rx) = mpsc::channel(16);
    let table = MemTable::new(flows("198.19.0.10", "192.0.2.1", 3));
    let run = Running::start_with_events(api, table, &[], Some(rx)).await;
    // Flows towards 192.0.2.9, never a backend, made after the startup pass.
    let late = flows("198.19.0.10", "192.0.2.9", 2);
    run.table.lock().entries.extend(late.iter().cloned());
    let full = run.table.lock().full_dumps;

    let e = &late[0];
    let flow = crate::reconcile::flow_of(e).expect("a flow with ports");
    tx.send(EventMsg::Flow {
        tuple: e.orig,
        zone: None,
        flow,
    })
    .await
    .expect("send");
    run.until("the event's flow deleted", Duration::from_secs(5), |r| {
        deleted_of(r, "192.0.2.9") == 1
    })
    .await;
    {
        let r = run.table.lock();
        assert_eq!(r.deleted[0].0.orig, e.orig, "the flow the event named");
        assert_eq!(r.full_dumps, full, "an event runs no full pass");
    }

    tx.send(EventMsg::Overrun).await.expect("send");
    run.until(
        "a full pass deleting the 3 other late flows",
        Duration::from_secs(5),
        |r| r.full_dumps > full && deleted_of(r, "192.0.2.9") == 4,
    )
    .await;
    assert_eq!(
        deleted_backends(&run.table),
        ["192.0.2.9"],
        "the live flows stay"
    );
    run.stop().await;
}

/// The Service's own record (issue 21): the flows of a backend that left give the Service one
/// Event, reported by this node, which reads back in the form `kubectl describe` reads
/// (core/v1, selected by involvedObject kind, name and uid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_is_recorded_as_an_event_on_its_service() {
    let api = api();
    let svc = api.apply_json(service("a", "198.19.0.10")).expect("svc");
    let uid = svc["metadata"]["uid"].as_str().expect("uid").to_owned();
    api.apply_json(slice("a-1", "a", &BOTH)).expect("slice");
    let mut entries = flows("198.19.0.10", "192.0.2.1", 3);
    entries.extend(flows("198.19.0.10", "192.0.2.2", 5));
    let run = Running::start(api, MemTable::new(entries), &[]).await;

    run.remove_second_backend(10).await;
    let sel = format!("involvedObject.kind=Service,involvedObject.name=a,involvedObject.uid={uid}");
    let got = run
        .events_until(&sel, |e| !e.is_empty(), "an Event on Service a")
        .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!(e.reason.as_deref(), Some("StaleFlowsDeleted"));
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(e.reporting_component.as_deref(), Some("ctreap.io/agent"));
    assert_eq!(e.reporting_instance.as_deref(), Some(NODE));
    let note = e.message.as_deref().unwrap_or_default();
    assert!(
        note.starts_with(
            "backend 192.0.2.2 left: 10 flows deleted on node node-1 (5 UDP, 5 TCP), "
        ),
        "{note}"
    );
    run.stop().await;
}

/// A Pod of this node with a hostPort (issue 21): `node address:8125/UDP` DNATed to the pod
/// by the CNI portmap plugin, outside any Service.
fn statsd_pod(name: &str, ip: &str, terminating: bool) -> Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if terminating {
        meta["deletionTimestamp"] = json!("2026-12-05T10:00:00Z");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"nodeName": NODE, "containers": [{"name": "statsd", "image": "statsd",
               "ports": [{"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// `n` UDP flows from 198.18.7.B to the node's address 198.51.100.10:8125, DNATed to
/// `pod`:8125, as the portmap plugin's rule makes them.
fn hostport_flows(pod: &str, n: u16) -> Vec<Entry> {
    let last = pod.rsplit('.').next().expect("IPv4");
    let client = ip(&format!("198.18.7.{last}"));
    (0..n)
        .map(|k| {
            let sport = 50_000 + k;
            let orig = Tuple::new(client, ip("198.51.100.10"), L4::ports(UDP, sport, 8125));
            let reply = Tuple::new(ip(pod), client, L4::ports(UDP, 8125, sport));
            Entry::new(orig, reply)
        })
        .collect()
}

/// A DaemonSet's hostPort pod replaced (issue 21): while the old pod terminates (running)
/// its flows stay, beside the new pod's; once it is gone from the API its flows go, and only
/// them, and its Event is on the Pod. With --hostports=false (the control) nothing of it is
/// judged: the old pod's flows stay after it is gone, while a Service's removal in the same
/// run is still flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_hostport_pod_loses_its_flows_and_the_new_one_keeps_its() {
    for hostports in [true, false] {
        let api = api();
        api.apply_json(statsd_pod("statsd-old", "10.244.1.7", false))
            .expect("pod");
        api.apply_json(service("a", "198.19.0.10")).expect("svc");
        api.apply_json(slice("a-1", "a", &BOTH)).expect("slice");
        let mut entries = hostport_flows("10.244.1.7", 4);
        entries.extend(flows("198.19.0.10", "192.0.2.2", 1));
        let flag = format!("--hostports={hostports}");
        let run = Running::start(api, MemTable::new(entries), &[&flag]).await;

        // The DaemonSet rolls: the old pod terminates, the new one starts with a new IP.
        run.apply(statsd_pod("statsd-old", "10.244.1.7", true));
        run.apply(statsd_pod("statsd-new", "10.244.1.9", false));
        run.table
            .lock()
            .entries
            .extend(hostport_flows("10.244.1.9", 3));
        run.api
            .delete(ResourceKind::Pod, Some("default"), "statsd-old")
            .expect("delete the old pod");
        // A Service's removal after it: the loop has seen the pod's deletion by then.
        run.remove_second_backend(2).await;
        if hostports {
            run.until(
                "the old pod's 4 flows deleted",
                Duration::from_secs(5),
                |r| deleted_of(r, "10.244.1.7") == 4,
            )
            .await;
            let events = run
                .events_until(
                    "involvedObject.kind=Pod,involvedObject.name=statsd-old",
                    |e| !e.is_empty(),
                    "an Event on the old Pod",
                )
                .await;
            assert_eq!(events[0].reason.as_deref(), Some("StaleFlowsDeleted"));
        }
        let (old, new) = {
            let r = run.table.lock();
            (deleted_of(&r, "10.244.1.7"), deleted_of(&r, "10.244.1.9"))
        };
        assert_eq!(
            old,
            if hostports { 4 } else { 0 },
            "--hostports={hostports}"
        );
        assert_eq!(new, 0, "the new pod keeps its flows");
        run.stop().await;
    }
}

/// A flow to the node's 198.51.100.10:`port` that met no DNAT rule (its reply comes from the
/// node's own address), as a client's packets between the old hostPort pod's DEL and the new
/// one's ADD make it.
fn untranslated_hostport(proto: u8, port: u16, sport: u16) -> Entry {
    let (client, node) = (ip("198.18.7.1"), ip("198.51.100.10"));
    Entry::new(
        Tuple::new(client, node, L4::ports(proto, sport, port)),
        Tuple::new(node, client, L4::ports(proto, port, sport)),
    )
}

/// The gap of a hostPort roll (issue 21): the old pod is gone and its DNAT with it, so the
/// UDP client's packets to the node's address meet no rule and make an untranslated entry,
/// which its client keeps alive. The new pod's ADD writes the rule, but only a flush sends the
/// client there (the portmap plugin flushes on ADD; not every version or CNI does). The agent
/// deletes it once the API reports the new pod's IP, not before (pending: no IP, the rule may
/// not exist yet), and leaves TCP alone (an untranslated TCP flow was refused, not pinned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostport_that_gains_its_pod_loses_its_untranslated_udp_entry() {
    let api = api();
    api.apply_json(service("a", "198.19.0.10")).expect("svc");
    api.apply_json(slice("a-1", "a", &BOTH)).expect("slice");
    let udp = untranslated_hostport(UDP, 8125, 50_100);
    let tcp = untranslated_hostport(TCP, 8125, 50_101);
    let mut entries = vec![udp.clone(), tcp.clone()];
    entries.extend(flows("198.19.0.10", "192.0.2.2", 1));
    let run = Running::start(api, MemTable::new(entries), &[]).await;
    let mut pending = statsd_pod("statsd-new", "10.244.1.9", false);
    pending["status"] = json!({"phase": "Pending"});
    run.apply(pending);
    // The loop has taken the pending pod by the time it flushes a Service's removal after it.
    run.remove_second_backend(2).await;
    assert!(
        run.table.lock().entries.contains(&udp),
        "the untranslated entry went before the new pod had an IP: {:?}",
        deleted_backends(&run.table)
    );
    run.apply(statsd_pod("statsd-new", "10.244.1.9", false));
    run.until(
        "the untranslated UDP entry deleted",
        Duration::from_secs(5),
        |r| r.deleted.iter().any(|(e, _)| *e == udp),
    )
    .await;
    let (tcp_kept, deleted) = {
        let r = run.table.lock();
        (r.entries.contains(&tcp), r.deleted.len())
    };
    assert!(tcp_kept, "the untranslated TCP entry went");
    assert_eq!(deleted, 3, "192.0.2.2's 2 and the UDP entry");
    run.stop().await;
}

/// RBAC refuses the Pod watch (403, an agent upgraded before its ClusterRole): the agent does
/// not wait for it. It becomes ready (its startup pass runs) and judges Services; only hostPort
/// flows go unjudged. A 503 would be waited for, like any watch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_pod_watch_leaves_services_judged() {
    let api = api();
    api.set_fault(kube_testserver::Fault::forbidden(ResourceKind::Pod), true);
    api.apply_json(service("a", "198.19.0.10")).expect("svc");
    api.apply_json(slice("a-1", "a", &BOTH)).expect("slice");
    let run = Running::start(
        api,
        MemTable::new(flows("198.19.0.10", "192.0.2.2", 2)),
        &[],
    )
    .await;
    run.remove_second_backend(4).await;
    run.stop().await;
}
