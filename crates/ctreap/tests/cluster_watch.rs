//! ClusterWatch against kube-testserver (a local API server speaking real list/watch):
//! initial sync, live updates, and recovery from compaction (410 Gone) with a full re-list.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ctreap::cluster::{ClusterWatch, ServiceMap, Snapshot, WatchConfig, Watched, kube_client};
use ctreap::reconcile::{Policy, plan_diff};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_testserver::{ResourceKind, TestServer, Verb};
use serde_json::Value;
use support::{items, read};

const WAIT: Duration = Duration::from_secs(20);

fn local() -> Vec<IpAddr> {
    vec!["127.0.0.1".parse().expect("ip")]
}

/// A readable, order-independent picture of a map: per service port, its frontends and
/// backends.
fn dump(map: &ServiceMap) -> Vec<String> {
    let mut out: Vec<String> = map
        .ports()
        .map(|p| {
            let mut fes: Vec<String> = p.frontends().iter().map(|f| f.key.to_string()).collect();
            fes.sort();
            let bes: Vec<String> = p
                .backends()
                .iter()
                .map(|b| format!("{}={:?}", b.addr(), b.conditions.state()))
                .collect();
            format!("{p} fe={fes:?} be={bes:?}")
        })
        .collect();
    out.sort();
    out
}

/// What the pure builder makes of the server's current objects: the expected snapshot.
fn expected(server: &TestServer) -> Vec<String> {
    let services: Vec<Service> = server.list().expect("list services");
    let slices: Vec<EndpointSlice> = server.list().expect("list slices");
    let node: Option<Node> = server.get(None, "node-a").expect("get node");
    dump(&ServiceMap::build(&services, &slices, node.as_ref(), &local()).0)
}

async fn load_fixtures() -> (TestServer, tempfile::TempDir, ClusterWatch) {
    let server = TestServer::start().await;
    for obj in items::<Value>("cluster/services.json")
        .into_iter()
        .chain(items::<Value>("cluster/endpointslices.json"))
    {
        server.apply_json(obj).expect("apply fixture");
    }
    let node_a: Value = serde_json::from_str(&read("cluster/node.json")).expect("node.json");
    let mut node_b = node_a.clone();
    node_b["metadata"]["name"] = "node-b".into();
    node_b["status"]["addresses"] =
        serde_json::json!([{"type": "InternalIP", "address": "192.168.10.12"}]);
    server.apply_json(node_a).expect("apply node-a");
    server.apply_json(node_b).expect("apply node-b");

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = kube_client(Some(kubeconfig), None).await.expect("client");
    let watch = ClusterWatch::start(
        client,
        WatchConfig {
            node_name: Some("node-a".into()),
            hostports: true,
            node_local_addrs: local(),
        },
    );
    (server, dir, watch)
}

/// Waits (on change notifications) until `ok` holds for a snapshot; panics with `what`.
async fn wait_for(
    watch: &ClusterWatch,
    what: &str,
    ok: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut changes = watch.changes();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(snap) = watch.snapshot()
                && ok(&snap)
            {
                return snap;
            }
            changes.changed().await.expect("watch alive");
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}; status {:#?}", watch.status()))
}

#[tokio::test]
async fn syncs_follows_changes_and_survives_a_relist() {
    let (server, _dir, watch) = load_fixtures().await;

    tokio::time::timeout(WAIT, watch.wait_synced())
        .await
        .unwrap_or_else(|_| panic!("no initial sync; status {:#?}", watch.status()));
    let first = watch.snapshot().expect("synced, so a snapshot");
    assert!(first.status.current(), "{:#?}", first.status);
    assert_eq!(dump(&first.map), expected(&server), "initial map");
    assert_eq!(
        first.warnings.len(),
        5,
        "the fixture's bad objects: {:#?}",
        first.warnings
    );
    assert!(
        !first
            .map
            .node_addresses()
            .contains(&"192.168.10.12".parse().expect("ip")),
        "node-b's address must not carry NodePorts here: {:?}",
        first.map.node_addresses()
    );
    assert!(
        Arc::ptr_eq(&first, &watch.snapshot().expect("snapshot")),
        "no change, same snapshot"
    );

    // An endpoint leaves: the snapshot follows and the diff flushes exactly it.
    let mut canary: EndpointSlice = server
        .get(Some("shop"), "api-canary-p4n8w")
        .expect("get")
        .expect("slice exists");
    canary.endpoints.clear();
    server.apply(&canary).expect("apply");
    let second = wait_for(&watch, "api-canary to lose 10.244.1.20", |s| {
        s.map
            .frontend(
                ctreap::cluster::Proto::Tcp,
                "10.96.20.31".parse().expect("ip"),
                80,
            )
            .is_some_and(|f| f.ports().all(|p| p.backends().is_empty()))
    })
    .await;
    assert_eq!(dump(&second.map), expected(&server));
    let keys: Vec<String> = plan_diff(&first.map, &second.map, &Policy::default())
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "-p tcp --orig-dst 10.96.20.31 --orig-port-dst 80 --reply-src 10.244.1.20 --reply-port-src 8080"
        ]
    );

    // A Service is deleted.
    server
        .delete(ResourceKind::Service, Some("monitoring"), "statsd")
        .expect("delete statsd");
    let third = wait_for(&watch, "statsd to disappear", |s| {
        !s.map.ports().any(|p| &*p.service().name == "statsd")
    })
    .await;
    assert_eq!(dump(&third.map), expected(&server));

    // Compaction, then every watch connection drops: the watchers resume from a compacted
    // resourceVersion, get 410 Gone, and must re-list.
    server.compact();
    server.drop_watches();
    let relisted = wait_for(&watch, "every watch to re-list", |s| {
        s.status.current() && Watched::ALL.iter().all(|w| s.status.get(*w).relists >= 1)
    })
    .await;
    assert_eq!(
        dump(&relisted.map),
        expected(&server),
        "map after the re-list"
    );
    for w in Watched::ALL {
        let st = relisted.status.get(w);
        assert!(st.errors >= 1, "{w:?} saw the 410: {st:?}");
    }

    // And the watches work after it.
    server
        .delete(
            ResourceKind::EndpointSlice,
            Some("kube-system"),
            "kube-dns-8xk2p",
        )
        .expect("delete slice");
    let last = wait_for(&watch, "kube-dns to lose 10.244.1.5", |s| {
        s.map
            .frontend(
                ctreap::cluster::Proto::Udp,
                "10.96.0.10".parse().expect("ip"),
                53,
            )
            .is_some_and(|f| f.backend("10.244.1.5".parse().expect("ip"), 53).is_none())
    })
    .await;
    assert_eq!(dump(&last.map), expected(&server));
}

#[tokio::test]
async fn no_snapshot_before_the_initial_list() {
    let server = TestServer::start().await;
    for obj in items::<Value>("cluster/services.json") {
        server.apply_json(obj).expect("apply fixture");
    }
    server.set_unavailable(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = kube_client(Some(kubeconfig), None).await.expect("client");
    let watch = ClusterWatch::start(client, WatchConfig::default());
    // The Services and EndpointSlices lists were asked for and answered 503: only then does
    // "not synced" say something.
    tokio::time::timeout(Duration::from_secs(30), async {
        while [ResourceKind::Service, ResourceKind::EndpointSlice]
            .iter()
            .any(|&k| server.request_count(k, Verb::List) == 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the lists were never asked for: {:#?}", server.requests()));
    assert!(!watch.is_synced(), "{:#?}", watch.status());
    assert!(
        watch.snapshot().is_none(),
        "a half-built map must not be exposed"
    );
    server.set_unavailable(false);
    tokio::time::timeout(Duration::from_secs(60), watch.wait_synced())
        .await
        .unwrap_or_else(|_| panic!("no sync after the server came back: {:#?}", watch.status()));
    let snap = watch.snapshot().expect("snapshot");
    assert_eq!(
        snap.map.stats().services,
        8,
        "every Service with NAT frontends"
    );
}

/// The opt-out annotation survives the watch's stripping of metadata, both ways.
#[tokio::test]
async fn the_ignore_annotation_reaches_the_map() {
    let (server, _dir, watch) = load_fixtures().await;
    tokio::time::timeout(WAIT, watch.wait_synced())
        .await
        .unwrap_or_else(|_| panic!("no initial sync; status {:#?}", watch.status()));
    let snap = watch.snapshot().expect("synced");
    let port = snap.map.ports().next().expect("a service port");
    let (ns, name) = (
        port.service().namespace.clone(),
        port.service().name.clone(),
    );
    assert!(!port.ignored());
    let is_ignored = |snap: &Snapshot, want: bool| {
        snap.map
            .ports()
            .filter(|p| p.service().namespace == ns && p.service().name == name)
            .all(|p| p.ignored() == want)
    };

    let mut svc: Value = serde_json::to_value(
        server
            .get::<Service>(Some(&ns), &name)
            .expect("get")
            .expect("the service exists"),
    )
    .expect("to json");
    svc["metadata"]["annotations"] = serde_json::json!({
        "ctreap.io/ignore": "true",
        "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}"
    });
    server.apply_json(svc.clone()).expect("annotate");
    wait_for(&watch, "the Service to be ignored", |s| is_ignored(s, true)).await;

    svc["metadata"]["annotations"] = serde_json::json!({"ctreap.io/ignore": "false"});
    server.apply_json(svc).expect("un-annotate");
    wait_for(&watch, "the Service to be judged again", |s| {
        is_ignored(s, false)
    })
    .await;
}
