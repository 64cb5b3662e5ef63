//! The server against the real `kube` 5 client, watcher and reflector.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{WAIT, bounded, client, client_with, endpoint_slice, eventually, node, service};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use kube_testserver::{ResourceKind, ServerConfig, TestServer, Verb};

/// The next watcher event, described as `Init`, `InitApply(name)`, ...; errors are `Err(text)`.
async fn next_event<K, S>(stream: &mut S) -> Result<String, String>
where
    K: Resource + Clone,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    match tokio::time::timeout(WAIT, stream.next()).await {
        Err(_) => panic!("no watcher event within {WAIT:?}"),
        Ok(None) => panic!("the watcher stream ended"),
        Ok(Some(Ok(ev))) => Ok(describe(&ev)),
        Ok(Some(Err(e))) => Err(e.to_string()),
    }
}

fn describe<K: Resource>(ev: &Event<K>) -> String {
    let name = |k: &K| k.meta().name.clone().unwrap_or_default();
    match ev {
        Event::Init => "Init".into(),
        Event::InitApply(k) => format!("InitApply({})", name(k)),
        Event::InitDone => "InitDone".into(),
        Event::Apply(k) => format!("Apply({})", name(k)),
        Event::Delete(k) => format!("Delete({})", name(k)),
    }
}

async fn expect_events<K, S>(stream: &mut S, want: &[&str])
where
    K: Resource + Clone,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    for w in want {
        let got = next_event(stream).await;
        assert_eq!(got.as_deref(), Ok(*w), "watcher events out of line");
    }
}

/// A short constant backoff, so a watcher whose requests fail does not spin.
struct Quick;

impl Iterator for Quick {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(20))
    }
}

impl Backoff for Quick {
    fn reset(&mut self) {}
}

/// Runs a reflector for `api` in the background; returns its store and the
/// errors the watcher reported.
fn run_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let errs = errors.clone();
    let stream = reflector::reflector(writer, watcher::watcher(api, config));
    let task = tokio::spawn(async move {
        stream
            .backoff(Quick)
            .for_each(|ev| {
                if let Err(e) = ev {
                    errs.lock().expect("errors lock").push(e.to_string());
                }
                futures::future::ready(())
            })
            .await;
    });
    (reader, errors, task)
}

/// `(namespace/name, resourceVersion)` of every object, sorted.
fn keys<K: Resource>(objs: impl IntoIterator<Item = impl AsRef<K>>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = objs
        .into_iter()
        .map(|o| {
            let m = o.as_ref().meta();
            (
                format!(
                    "{}/{}",
                    m.namespace.clone().unwrap_or_default(),
                    m.name.clone().unwrap_or_default()
                ),
                m.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn store_matches_server(store: &Store<Service>, server: &TestServer) -> bool {
    let want = keys::<Service>(
        server
            .list::<Service>()
            .expect("list services")
            .into_iter()
            .map(Box::new),
    );
    keys::<Service>(store.state()) == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_sees_initial_objects_and_changes() {
    bounded(30, async {
        let server = TestServer::start().await;
        server
            .apply(&service("default", "a", 80, &[]))
            .expect("apply a");
        server
            .apply(&service("other", "b", 81, &[]))
            .expect("apply b");
        let client = client(&server).await;
        let api: Api<Service> = Api::all(client);
        let mut w = watcher::watcher(api, watcher::Config::default()).boxed();

        // The watcher opens its watch only when polled after InitDone; it
        // resumes from the list's resourceVersion, so changes made before that
        // are replayed from history.
        expect_events(
            &mut w,
            &["Init", "InitApply(a)", "InitApply(b)", "InitDone"],
        )
        .await;

        let updated = server
            .apply(&service("default", "a", 8080, &[]))
            .expect("update a");
        server
            .apply(&service("default", "c", 82, &[]))
            .expect("apply c");
        server
            .delete(ResourceKind::Service, Some("other"), "b")
            .expect("delete b");
        expect_events(&mut w, &["Apply(a)", "Apply(c)", "Delete(b)"]).await;

        // The list and the watch used the real protocol parameters.
        let reqs = server.requests();
        let list = reqs
            .iter()
            .find(|r| r.verb == Verb::List)
            .expect("a LIST request");
        assert_eq!(list.path, "/api/v1/services");
        assert!(
            list.query.contains("limit=500"),
            "page size: {}",
            list.query
        );
        let watch = reqs
            .iter()
            .find(|r| r.verb == Verb::Watch)
            .expect("a WATCH request");
        assert!(
            watch.query.contains("allowWatchBookmarks=true"),
            "{}",
            watch.query
        );
        assert!(watch.query.contains("resourceVersion="), "{}", watch.query);
        assert_eq!(watch.status, 200);

        // Typed reads through the control API agree with what was written.
        let a: Service = server
            .get(Some("default"), "a")
            .expect("get a")
            .expect("a exists");
        assert_eq!(
            a.metadata.resource_version,
            updated.metadata.resource_version
        );
        assert_eq!(a.metadata.uid, updated.metadata.uid);
        assert!(
            server
                .get::<Service>(Some("other"), "b")
                .expect("get b")
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_and_nodes_list_and_watch() {
    bounded(30, async {
        let server = TestServer::start().await;
        server
            .apply(&endpoint_slice("default", "web-abc", "web", &["10.0.0.1"]))
            .expect("apply slice");
        server
            .apply(&endpoint_slice(
                "kube-system",
                "dns-xyz",
                "dns",
                &["10.0.0.2"],
            ))
            .expect("apply slice");
        server.apply(&node("node-1")).expect("apply node");
        let client = client(&server).await;

        // Namespaced EndpointSlice watch with a label selector.
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let cfg = watcher::Config::default().labels("kubernetes.io/service-name=web");
        let mut w = watcher::watcher(slices.clone(), cfg).boxed();
        expect_events(&mut w, &["Init", "InitApply(web-abc)", "InitDone"]).await;
        server
            .apply(&endpoint_slice(
                "default",
                "web-abc",
                "web",
                &["10.0.0.1", "10.0.0.3"],
            ))
            .expect("update slice");
        // Other namespace and other service: filtered out.
        server
            .apply(&endpoint_slice(
                "kube-system",
                "web-zzz",
                "web",
                &["10.0.0.9"],
            ))
            .expect("slice elsewhere");
        server
            .apply(&endpoint_slice("default", "api-1", "api", &["10.0.0.4"]))
            .expect("other service");
        // Relabelling out of the selection is seen as a delete, as from the watch cache.
        server
            .apply(&endpoint_slice(
                "default",
                "web-abc",
                "moved",
                &["10.0.0.1"],
            ))
            .expect("relabel slice");
        expect_events(&mut w, &["Apply(web-abc)", "Delete(web-abc)"]).await;
        let got = slices.get("api-1").await.expect("get a slice");
        assert_eq!(got.endpoints[0].addresses, ["10.0.0.4"]);

        // Nodes are cluster-scoped.
        let nodes: Api<Node> = Api::all(client.clone());
        let mut nw = watcher::watcher(nodes.clone(), watcher::Config::default()).boxed();
        expect_events(&mut nw, &["Init", "InitApply(node-1)", "InitDone"]).await;
        server.apply(&node("node-2")).expect("apply node-2");
        server
            .delete(ResourceKind::Node, None, "node-1")
            .expect("delete node-1");
        expect_events(&mut nw, &["Apply(node-2)", "Delete(node-1)"]).await;
        let n2 = nodes.get("node-2").await.expect("get node-2");
        assert!(n2.metadata.creation_timestamp.is_some());

        // Field selectors.
        let one = nodes
            .list(&ListParams::default().fields("metadata.name=node-2"))
            .await
            .expect("list by name");
        assert_eq!(one.items.len(), 1);
        let svc_api: Api<Service> = Api::all(client);
        server
            .apply(&service("default", "s1", 80, &[]))
            .expect("apply s1");
        let by_ns = svc_api
            .list(&ListParams::default().fields("metadata.namespace=default,spec.type=ClusterIP"))
            .await
            .expect("list by namespace");
        assert_eq!(by_ns.items.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_dropped_watches_force_a_relist_and_the_store_converges() {
    bounded(30, async {
        // No periodic bookmarks: they would move the watcher past the compaction.
        let server =
            TestServer::start_with(ServerConfig::default().bookmark_interval(Duration::ZERO)).await;
        server
            .apply(&service("default", "a", 80, &[]))
            .expect("apply a");
        server
            .apply(&service("default", "b", 80, &[]))
            .expect("apply b");
        let api: Api<Service> = Api::all(client(&server).await);
        let (store, errors, task) = run_reflector(api, watcher::Config::default());
        tokio::time::timeout(WAIT, store.wait_until_ready())
            .await
            .expect("reflector ready in time")
            .expect("reflector writer alive");
        assert!(
            server
                .wait_for_watches(ResourceKind::Service, 1, WAIT)
                .await
        );
        let lists_before = server.request_count(ResourceKind::Service, Verb::List);
        let watches_before = server.request_count(ResourceKind::Service, Verb::Watch);

        // Compact, cut the watch, and change things while the watcher reconnects.
        server.compact();
        server.drop_watches();
        server
            .apply(&service("default", "c", 80, &[]))
            .expect("apply c");
        server
            .delete(ResourceKind::Service, Some("default"), "a")
            .expect("delete a");
        server.compact();

        eventually("the watcher re-listed", || {
            server.request_count(ResourceKind::Service, Verb::List) > lists_before
        })
        .await;
        eventually("the reflector store converged to the server", || {
            store_matches_server(&store, &server)
        })
        .await;
        assert!(
            server.request_count(ResourceKind::Service, Verb::Watch) > watches_before,
            "the watcher re-watched"
        );
        let errs = errors.lock().expect("errors").clone();
        assert!(
            errs.iter().any(|e| e.contains("too old resource version")),
            "the watcher saw the 410 Expired error event, got {errs:?}"
        );

        // And it keeps following live changes after the re-list.
        assert!(
            server
                .wait_for_watches(ResourceKind::Service, 1, WAIT)
                .await
        );
        server
            .apply(&service("default", "d", 80, &[]))
            .expect("apply d");
        eventually("the store has d", || store_matches_server(&store, &server)).await;
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_keep_the_watcher_ahead_of_compaction() {
    bounded(30, async {
        let server = TestServer::start_with(
            ServerConfig::default().bookmark_interval(Duration::from_millis(50)),
        )
        .await;
        server
            .apply(&service("default", "a", 80, &[]))
            .expect("apply a");
        let api: Api<Service> = Api::all(client(&server).await);
        let (store, errors, task) = run_reflector(api, watcher::Config::default());
        tokio::time::timeout(WAIT, store.wait_until_ready())
            .await
            .expect("reflector ready in time")
            .expect("reflector writer alive");
        assert!(
            server
                .wait_for_watches(ResourceKind::Service, 1, WAIT)
                .await
        );
        let lists_before = server.request_count(ResourceKind::Service, Verb::List);
        let watches_before = server.request_count(ResourceKind::Service, Verb::Watch);

        // Changes to other types move the global resourceVersion; compaction
        // expires everything before it. Bookmarks carry the new resourceVersion
        // to the Service watcher, so its resumed watch is not expired.
        for i in 0..5 {
            server.apply(&node(&format!("n{i}"))).expect("apply node");
        }
        let compacted = server.compact();
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.drop_watches();
        eventually("the watcher re-watched", || {
            server.request_count(ResourceKind::Service, Verb::Watch) > watches_before
        })
        .await;
        let rewatch = server
            .requests()
            .into_iter()
            .rfind(|r| r.verb == Verb::Watch && r.kind == Some(ResourceKind::Service))
            .expect("the re-watch");
        let resumed_at: u64 = rewatch
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok())
            .expect("the re-watch has a resourceVersion");
        assert!(
            resumed_at >= compacted,
            "resumed at {resumed_at}, compacted at {compacted}"
        );
        // Give a (wrong) 410 the time to show up, then check nothing re-listed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            server.request_count(ResourceKind::Service, Verb::List),
            lists_before,
            "no re-list was needed"
        );
        assert!(
            errors
                .lock()
                .expect("errors")
                .iter()
                .all(|e| !e.contains("410") && !e.contains("too old")),
            "no expiry errors"
        );
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_initial_list_gets_every_object() {
    bounded(60, async {
        let server = TestServer::start().await;
        let total = 1203;
        for i in 0..total {
            server
                .apply(&service(
                    &format!("ns{}", i % 7),
                    &format!("svc-{i:04}"),
                    80,
                    &[],
                ))
                .expect("apply");
        }
        let api: Api<Service> = Api::all(client(&server).await);
        let mut w = watcher::watcher(api, watcher::Config::default()).boxed();
        assert_eq!(next_event(&mut w).await.as_deref(), Ok("Init"));
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let ev = next_event(&mut w).await.expect("no watcher error");
            if ev == "InitDone" {
                break;
            }
            let name = ev
                .strip_prefix("InitApply(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_else(|| panic!("unexpected event {ev}"))
                .to_string();
            assert!(seen.insert(name.clone()), "{name} listed twice");
        }
        assert_eq!(seen.len(), total, "every object listed once");
        let lists: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| r.verb == Verb::List)
            .collect();
        assert_eq!(lists.len(), 3, "three pages of at most 500");
        assert!(lists[1].query.contains("continue="), "{}", lists[1].query);
        assert!(lists[2].query.contains("continue="), "{}", lists[2].query);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    bounded(30, async {
        let server = TestServer::start().await;
        server
            .apply(&service("default", "a", 80, &[]))
            .expect("apply a");
        server
            .apply(&service("default", "b", 80, &[]))
            .expect("apply b");
        let api: Api<Service> = Api::all(client(&server).await);
        let mut w = watcher::watcher(api, watcher::Config::default().streaming_lists()).boxed();
        expect_events(
            &mut w,
            &["Init", "InitApply(a)", "InitApply(b)", "InitDone"],
        )
        .await;
        server
            .apply(&service("default", "c", 80, &[]))
            .expect("apply c");
        server
            .delete(ResourceKind::Service, Some("default"), "a")
            .expect("delete a");
        expect_events(&mut w, &["Apply(c)", "Delete(a)"]).await;
        assert_eq!(
            server.request_count(ResourceKind::Service, Verb::List),
            0,
            "a streaming list needs no LIST"
        );
        let watch = server
            .requests()
            .into_iter()
            .find(|r| r.verb == Verb::Watch)
            .expect("the watch");
        for p in [
            "sendInitialEvents=true",
            "resourceVersionMatch=NotOlderThan",
            "allowWatchBookmarks=true",
        ] {
            assert!(watch.query.contains(p), "{p} missing in {}", watch.query);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_server_answers_503_then_recovers() {
    bounded(60, async {
        let server = TestServer::start().await;
        server
            .apply(&service("default", "a", 80, &[]))
            .expect("apply a");

        // Without kube's retry layer the 503 surfaces as an API error.
        server.set_unavailable(true);
        let plain: Api<Service> = Api::all(client_with(&server, false).await);
        let err = plain
            .list(&ListParams::default())
            .await
            .expect_err("a 503 while unavailable");
        match err {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 503);
                assert_eq!(status.reason, "ServiceUnavailable");
            }
            other => panic!("expected an API error, got {other:?}"),
        }

        // A watcher (with kube's default retries and the watcher backoff)
        // started while unavailable syncs once the server is back.
        let api: Api<Service> = Api::all(client(&server).await);
        let (store, _errors, task) = run_reflector(api, watcher::Config::default());
        eventually("some requests were refused with 503", || {
            server
                .requests()
                .iter()
                .filter(|r| r.kind == Some(ResourceKind::Service) && r.status == 503)
                .count()
                >= 3
        })
        .await;
        assert!(store.is_empty());
        server.set_unavailable(false);
        tokio::time::timeout(Duration::from_secs(20), store.wait_until_ready())
            .await
            .expect("reflector ready after recovery")
            .expect("reflector writer alive");
        eventually("the store has a", || store_matches_server(&store, &server)).await;

        // Unavailable again with a live watch: the watch stays up; after a
        // drop, re-watches are refused until the server is back.
        assert!(
            server
                .wait_for_watches(ResourceKind::Service, 1, WAIT)
                .await
        );
        server.set_unavailable(true);
        server.drop_watches();
        let refused_before = server.requests().iter().filter(|r| r.status == 503).count();
        eventually("a re-watch was refused", || {
            server.requests().iter().filter(|r| r.status == 503).count() > refused_before
        })
        .await;
        server.set_unavailable(false);
        server
            .apply(&service("default", "b", 80, &[]))
            .expect("apply b");
        tokio::time::timeout(Duration::from_secs(20), async {
            while !store_matches_server(&store, &server) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the store caught up after the outage");
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_port_and_watchers_resume() {
    bounded(30, async {
        let server = TestServer::start().await;
        server
            .apply(&service("default", "a", 80, &[]))
            .expect("apply a");
        let addr = server.addr();
        let client = client(&server).await;
        let (store, _errors, task) = run_reflector(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        );
        tokio::time::timeout(WAIT, store.wait_until_ready())
            .await
            .expect("reflector ready in time")
            .expect("reflector writer alive");
        assert!(
            server
                .wait_for_watches(ResourceKind::Service, 1, WAIT)
                .await
        );
        let lists_before = server.request_count(ResourceKind::Service, Verb::List);
        let watches_before = server.request_count(ResourceKind::Service, Verb::Watch);

        server
            .restart_with_downtime(Duration::from_millis(200))
            .await
            .expect("restart");
        assert_eq!(server.addr(), addr);
        server
            .apply(&service("default", "b", 80, &[]))
            .expect("apply b");
        eventually("the store follows after the restart", || {
            store_matches_server(&store, &server)
        })
        .await;
        assert!(server.request_count(ResourceKind::Service, Verb::Watch) > watches_before);
        assert_eq!(
            server.request_count(ResourceKind::Service, Verb::List),
            lists_before,
            "history survived the restart, so resuming needed no re-list"
        );
        // Plain requests work on the same port too.
        let api: Api<Service> = Api::namespaced(client, "default");
        assert_eq!(api.get("b").await.expect("get b").name_any(), "b");
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_kube_api_and_errors_as_status() {
    bounded(30, async {
        let server = TestServer::start().await;
        let client = client(&server).await;
        let version = client.apiserver_version().await.expect("/version");
        assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));

        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let mut w = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        expect_events(&mut w, &["Init", "InitDone"]).await;

        let created = api
            .create(&PostParams::default(), &service("default", "web", 80, &[]))
            .await
            .expect("create");
        assert!(created.metadata.uid.is_some());
        let dup = api
            .create(&PostParams::default(), &service("default", "web", 80, &[]))
            .await
            .expect_err("duplicate create");
        assert!(matches!(&dup, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"), "{dup:?}");

        let mut stale = created.clone();
        let mut fresh = created.clone();
        fresh.spec.as_mut().expect("spec").ports.as_mut().expect("ports")[0].port = 81;
        api.replace("web", &PostParams::default(), &fresh)
            .await
            .expect("replace");
        stale.spec.as_mut().expect("spec").ports.as_mut().expect("ports")[0].port = 82;
        let conflict = api
            .replace("web", &PostParams::default(), &stale)
            .await
            .expect_err("stale replace");
        assert!(matches!(&conflict, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"), "{conflict:?}");

        let patched = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"tier": "front"}}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(patched.labels().get("tier").map(String::as_str), Some("front"));
        api.patch(
            "applied",
            &PatchParams::apply("test").force(),
            &Patch::Apply(service("default", "applied", 90, &[])),
        )
        .await
        .expect("server-side apply creates");

        api.delete("web", &DeleteParams::default())
            .await
            .expect("delete");
        expect_events(
            &mut w,
            &["Apply(web)", "Apply(web)", "Apply(web)", "Apply(applied)", "Delete(web)"],
        )
        .await;

        let missing = api.get("nope").await.expect_err("missing object");
        assert!(matches!(&missing, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound" && s.message == "services \"nope\" not found"), "{missing:?}");
        let bad = api
            .list(&ListParams::default().labels("a in"))
            .await
            .expect_err("bad selector");
        assert!(matches!(&bad, kube::Error::Api(s) if s.code == 400 && s.reason == "BadRequest"), "{bad:?}");
        let bad_field = api
            .list(&ListParams::default().fields("spec.ports=1"))
            .await
            .expect_err("unsupported field");
        assert!(matches!(&bad_field, kube::Error::Api(s) if s.code == 400 && s.message.contains("field label not supported")), "{bad_field:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_watcher_gets_partial_objects() {
    bounded(30, async {
        let server = TestServer::start().await;
        server.apply(&node("n1")).expect("apply n1");
        let api: Api<PartialObjectMeta<Node>> = Api::all(client(&server).await);
        let mut w = watcher::watcher(api, watcher::Config::default()).boxed();
        expect_events(&mut w, &["Init", "InitApply(n1)", "InitDone"]).await;
        server.apply(&node("n2")).expect("apply n2");
        expect_events(&mut w, &["Apply(n2)"]).await;
        let accept_seen = server
            .requests()
            .iter()
            .any(|r| r.verb == Verb::List && r.status == 200);
        assert!(accept_seen);
    })
    .await;
}

#[test]
fn background_server_serves_sync_callers_and_kubeconfig_files() {
    let server = TestServer::start_background();
    server.apply(&node("n1")).expect("apply from sync code");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).expect("write kubeconfig");
    let text = std::fs::read_to_string(&path).expect("read kubeconfig");
    assert!(text.contains(&server.url()), "{text}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bounded(20, async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig file");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config");
        assert_eq!(config.default_namespace, "default");
        let client = kube::Client::try_from(config).expect("client");
        let nodes: Api<Node> = Api::all(client);
        let list = nodes
            .list(&ListParams::default())
            .await
            .expect("list nodes");
        assert_eq!(list.items.len(), 1);
    }));
    server.restart_blocking().expect("restart from sync code");
    assert_eq!(server.list::<Node>().expect("list").len(), 1);
}
