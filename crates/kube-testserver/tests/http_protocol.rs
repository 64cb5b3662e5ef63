//! The wire protocol, checked with a hand-written HTTP/1.1 client.

mod common;

use std::time::Duration;

use common::{StreamEnd, bounded, get_json, node, raw_request, service};
use kube_testserver::{ResourceKind, ServerConfig, TestServer};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(5);

fn is_type(line: &Value, ty: &str) -> bool {
    line["type"] == ty
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_chunked_json_lines_with_periodic_bookmarks() {
    bounded(30, async {
        let server = TestServer::start_with(
            ServerConfig::default().bookmark_interval(Duration::from_millis(100)),
        )
        .await;
        server
            .apply(&service("default", "a", 80, &[]))
            .expect("apply a");
        let rv = server.resource_version();
        let mut w = raw_request(
            &server,
            "GET",
            &format!("/api/v1/services?watch=true&allowWatchBookmarks=true&resourceVersion={rv}"),
            &[],
            None,
        )
        .await;
        assert_eq!(w.status, 200);
        assert_eq!(w.header("transfer-encoding"), Some("chunked"));
        assert_eq!(w.header("content-type"), Some("application/json"));
        assert!(w.header("content-length").is_none());

        let bm = w.next_line(SHORT).await.expect("a bookmark");
        assert!(is_type(&bm, "BOOKMARK"), "{bm}");
        assert_eq!(bm["object"]["kind"], "Service");
        assert_eq!(bm["object"]["apiVersion"], "v1");
        assert_eq!(rv_of(&bm["object"]), rv);
        assert!(bm["object"]["metadata"].get("annotations").is_none());

        let b = server
            .apply(&service("default", "b", 80, &[]))
            .expect("apply b");
        let added = w.line_where(SHORT, |l| !is_type(l, "BOOKMARK")).await;
        assert!(is_type(&added, "ADDED"), "{added}");
        assert_eq!(added["object"]["kind"], "Service");
        assert_eq!(added["object"]["metadata"]["name"], "b");
        assert_eq!(
            added["object"]["metadata"]["resourceVersion"].as_str(),
            b.metadata.resource_version.as_deref()
        );

        // A change to another type moves the bookmark's resourceVersion too.
        server.apply(&node("n1")).expect("apply node");
        let now = server.resource_version();
        let bm = w
            .line_where(SHORT, |l| {
                is_type(l, "BOOKMARK") && rv_of(&l["object"]) == now
            })
            .await;
        assert_eq!(rv_of(&bm["object"]), now);

        // Without allowWatchBookmarks there are none: the next line is the change.
        let mut plain = raw_request(
            &server,
            "GET",
            &format!("/api/v1/services?watch=1&resourceVersion={now}"),
            &[],
            None,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        server
            .delete(ResourceKind::Service, Some("default"), "a")
            .expect("delete a");
        let del = plain.next_line(SHORT).await.expect("the delete");
        assert!(is_type(&del, "DELETED"), "{del}");
        assert_eq!(rv_of(&del["object"]), server.resource_version());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_start_points_replay_and_expiry() {
    bounded(30, async {
        let server = TestServer::start().await;
        let a = server.apply(&service("default", "a", 80, &[])).expect("a");
        let a_rv: u64 = a
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .expect("rv");
        server.apply(&service("default", "b", 80, &[])).expect("b");
        server.apply(&service("default", "a", 81, &[])).expect("a2");

        // From an exact resourceVersion: every later change, in order.
        let mut w = raw_request(
            &server,
            "GET",
            &format!("/api/v1/namespaces/default/services?watch=true&resourceVersion={a_rv}"),
            &[],
            None,
        )
        .await;
        let l1 = w.next_line(SHORT).await.expect("replayed");
        let l2 = w.next_line(SHORT).await.expect("replayed");
        assert_eq!(
            (
                l1["type"].as_str(),
                l1["object"]["metadata"]["name"].as_str()
            ),
            (Some("ADDED"), Some("b"))
        );
        assert_eq!(
            (
                l2["type"].as_str(),
                l2["object"]["metadata"]["name"].as_str()
            ),
            (Some("MODIFIED"), Some("a"))
        );

        // resourceVersion unset or 0: synthetic ADDED for the current state.
        for rv in ["", "&resourceVersion=0"] {
            let mut w = raw_request(
                &server,
                "GET",
                &format!("/api/v1/services?watch=true{rv}"),
                &[],
                None,
            )
            .await;
            let mut names = Vec::new();
            for _ in 0..2 {
                let l = w.next_line(SHORT).await.expect("initial");
                assert!(is_type(&l, "ADDED"), "{l}");
                names.push(
                    l["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
            assert_eq!(names, ["a", "b"]);
        }

        // Compacted: one ERROR event with a 410 Expired Status, then a clean end.
        let compacted = server.compact();
        let mut w = raw_request(
            &server,
            "GET",
            &format!("/api/v1/services?watch=true&resourceVersion={a_rv}"),
            &[],
            None,
        )
        .await;
        assert_eq!(w.status, 200);
        let err = w.next_line(SHORT).await.expect("the error event");
        assert!(is_type(&err, "ERROR"), "{err}");
        assert_status(&err["object"], 410, "Expired");
        assert_eq!(
            err["object"]["message"],
            format!("too old resource version: {a_rv} ({compacted})")
        );
        assert_eq!(w.next_line(SHORT).await.expect_err("end"), StreamEnd::Clean);
        assert_eq!(server.oldest_resource_version(), compacted);

        // From the compaction point itself: fine.
        let w = raw_request(
            &server,
            "GET",
            &format!("/api/v1/services?watch=true&resourceVersion={compacted}"),
            &[],
            None,
        )
        .await;
        assert_eq!(w.status, 200);

        // From the future: 504 Timeout, as the real server answers after waiting.
        let (code, body) = get_json(
            &server,
            &format!(
                "/api/v1/services?watch=true&resourceVersion={}",
                compacted + 100
            ),
        )
        .await;
        assert_eq!(code, 504);
        assert_status(&body, 504, "Timeout");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_timeout_ends_cleanly_and_drop_aborts() {
    bounded(30, async {
        let server = TestServer::start().await;
        let rv = server.resource_version();
        let started = std::time::Instant::now();
        let mut w = raw_request(
            &server,
            "GET",
            &format!("/api/v1/nodes?watch=true&timeoutSeconds=1&resourceVersion={rv}"),
            &[],
            None,
        )
        .await;
        assert_eq!(w.next_line(SHORT).await.expect_err("end"), StreamEnd::Clean);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{took:?}"
        );

        let mut w = raw_request(
            &server,
            "GET",
            &format!("/api/v1/nodes?watch=true&resourceVersion={rv}"),
            &[],
            None,
        )
        .await;
        assert!(server.wait_for_watches(ResourceKind::Node, 1, SHORT).await);
        server.drop_watches();
        assert_eq!(
            w.next_line(SHORT).await.expect_err("end"),
            StreamEnd::Aborted
        );
        common::eventually("the dropped watch is closed", || {
            server.open_watches(ResourceKind::Node) == 0
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_ends_initial_events_with_a_bookmark() {
    bounded(30, async {
        let server = TestServer::start_with(ServerConfig::default().bookmark_interval(Duration::ZERO)).await;
        server.apply(&service("default", "a", 80, &[("app", "x")])).expect("a");
        server.apply(&service("default", "b", 80, &[("app", "y")])).expect("b");
        let rv = server.resource_version();
        let mut w = raw_request(
            &server,
            "GET",
            "/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=&labelSelector=app%3Dx",
            &[],
            None,
        )
        .await;
        let added = w.next_line(SHORT).await.expect("initial event");
        assert!(is_type(&added, "ADDED"), "{added}");
        assert_eq!(added["object"]["metadata"]["name"], "a");
        let end = w.next_line(SHORT).await.expect("end bookmark");
        assert!(is_type(&end, "BOOKMARK"), "{end}");
        assert_eq!(
            end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        assert_eq!(rv_of(&end["object"]), rv);

        for (query, reason) in [
            ("watch=true&sendInitialEvents=true&allowWatchBookmarks=true", "Invalid"),
            ("watch=true&resourceVersionMatch=NotOlderThan&resourceVersion=1", "Invalid"),
            ("watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", "Invalid"),
            ("sendInitialEvents=true", "Invalid"),
        ] {
            let (code, body) = get_json(&server, &format!("/api/v1/services?{query}")).await;
            assert_eq!(code, 422, "{query}: {body}");
            assert_status(&body, 422, reason);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shape_pages_and_exact_reads() {
    bounded(30, async {
        let server = TestServer::start().await;
        for name in ["a", "b", "c", "d", "e"] {
            server
                .apply(&service("default", name, 80, &[]))
                .expect("apply");
        }
        let rv = server.resource_version();

        let (code, list) = get_json(&server, "/api/v1/namespaces/default/services").await;
        assert_eq!(code, 200);
        assert_eq!(list["kind"], "ServiceList");
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["metadata"]["resourceVersion"], rv.to_string());
        let items = list["items"].as_array().expect("items");
        assert_eq!(items.len(), 5);
        assert!(items[0].get("kind").is_none() && items[0].get("apiVersion").is_none());
        assert!(items[0]["metadata"]["uid"].is_string());

        // Pages come from one snapshot: a delete between pages does not show.
        let (_, p1) = get_json(&server, "/api/v1/services?limit=2").await;
        let names = |l: &Value| -> Vec<String> {
            l["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(names(&p1), ["a", "b"]);
        assert_eq!(p1["metadata"]["remainingItemCount"], 3);
        assert_eq!(p1["metadata"]["resourceVersion"], rv.to_string());
        let token = p1["metadata"]["continue"]
            .as_str()
            .expect("continue")
            .to_string();
        server
            .delete(ResourceKind::Service, Some("default"), "c")
            .expect("delete c");
        // Nor a create or an update in the pages still to come.
        server
            .apply(&service("default", "cc", 80, &[]))
            .expect("apply cc");
        server
            .apply(&service("default", "d", 8080, &[]))
            .expect("update d");
        let (_, p2) = get_json(
            &server,
            &format!("/api/v1/services?limit=2&continue={token}"),
        )
        .await;
        assert_eq!(names(&p2), ["c", "d"]);
        assert_eq!(
            p2["items"][1]["spec"]["ports"][0]["port"], 80,
            "d as it was"
        );
        let token2 = p2["metadata"]["continue"]
            .as_str()
            .expect("continue")
            .to_string();
        let (_, p3) = get_json(
            &server,
            &format!("/api/v1/services?limit=2&continue={token2}"),
        )
        .await;
        assert_eq!(names(&p3), ["e"]);
        assert!(p3["metadata"].get("continue").is_none());

        // An exact read of the past, then 410 once it is compacted.
        let (_, past) = get_json(
            &server,
            &format!("/api/v1/services?resourceVersion={rv}&resourceVersionMatch=Exact"),
        )
        .await;
        assert_eq!(names(&past).len(), 5);
        let (_, now) = get_json(
            &server,
            &format!("/api/v1/services?resourceVersion={rv}&resourceVersionMatch=NotOlderThan"),
        )
        .await;
        assert_eq!(names(&now).len(), 5, "c deleted, cc created");
        let compacted = server.compact();
        let (code, gone) = get_json(
            &server,
            &format!("/api/v1/services?resourceVersion={rv}&resourceVersionMatch=Exact"),
        )
        .await;
        assert_eq!(code, 410);
        assert_status(&gone, 410, "Expired");
        assert_eq!(
            gone["message"],
            format!("too old resource version: {rv} ({compacted})")
        );
        let (code, gone) = get_json(
            &server,
            &format!("/api/v1/services?limit=2&continue={token2}"),
        )
        .await;
        assert_eq!(code, 410);
        assert_status(&gone, 410, "Expired");

        // Selectors.
        server
            .apply(&service(
                "x",
                "web",
                80,
                &[("app", "web"), ("tier", "front")],
            ))
            .expect("web");
        server
            .apply(&service("x", "db", 80, &[("app", "db")]))
            .expect("db");
        for (selector, want) in [
            ("labelSelector=app%3Dweb", vec!["web"]),
            ("labelSelector=app%21%3Dweb", vec!["db"]),
            ("labelSelector=tier", vec!["web"]),
            ("labelSelector=%21tier", vec!["db"]),
            (
                "labelSelector=app+in+(db,web),tier+notin+(back)",
                vec!["db", "web"],
            ),
            ("fieldSelector=metadata.name%3Ddb", vec!["db"]),
            (
                "fieldSelector=metadata.namespace%21%3Dx&labelSelector=app",
                vec![],
            ),
        ] {
            let (code, l) = get_json(
                &server,
                &format!("/api/v1/namespaces/x/services?{selector}"),
            )
            .await;
            assert_eq!(code, 200, "{selector}: {l}");
            assert_eq!(names(&l), want, "{selector}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_objects() {
    bounded(30, async {
        let server = TestServer::start().await;
        server.apply(&node("n1")).expect("node");
        for (path, code, reason) in [
            ("/api/v1/widgets", 404, "NotFound"),
            ("/apis/apps/v1/deployments", 404, "NotFound"),
            ("/api/v1/nodes/missing", 404, "NotFound"),
            ("/api/v1/services/not-namespaced", 404, "NotFound"),
            ("/api/v1/nodes?limit=abc", 400, "BadRequest"),
            ("/api/v1/nodes?watch=maybe", 400, "BadRequest"),
            ("/api/v1/nodes?labelSelector=a+in", 400, "BadRequest"),
            (
                "/api/v1/nodes?fieldSelector=spec.nope%3D1",
                400,
                "BadRequest",
            ),
            ("/api/v1/nodes?resourceVersion=abc", 400, "BadRequest"),
            ("/api/v1/nodes?resourceVersionMatch=Exact", 422, "Invalid"),
            (
                "/api/v1/nodes?resourceVersionMatch=Sometimes&resourceVersion=1",
                422,
                "Invalid",
            ),
            (
                "/api/v1/nodes?resourceVersion=0&resourceVersionMatch=Exact",
                422,
                "Invalid",
            ),
            ("/api/v1/nodes?continue=bm90LWpzb24", 400, "BadRequest"),
            (
                "/api/v1/nodes?resourceVersion=999999&resourceVersionMatch=NotOlderThan",
                504,
                "Timeout",
            ),
        ] {
            let (got, body) = get_json(&server, path).await;
            assert_eq!(got, code, "{path}: {body}");
            assert_status(&body, code, reason);
        }
        let (_, missing) = get_json(&server, "/api/v1/nodes/missing").await;
        assert_eq!(missing["message"], "nodes \"missing\" not found");
        assert_eq!(
            missing["details"],
            json!({"name": "missing", "kind": "nodes"})
        );
        let (_, missing) = get_json(
            &server,
            "/apis/discovery.k8s.io/v1/namespaces/d/endpointslices/x",
        )
        .await;
        assert_eq!(
            missing["message"],
            "endpointslices.discovery.k8s.io \"x\" not found"
        );

        let r = raw_request(
            &server,
            "GET",
            "/api/v1/nodes",
            &[("Accept", "application/vnd.kubernetes.protobuf")],
            None,
        )
        .await;
        assert_eq!(r.status, 406);
        let r = raw_request(
            &server,
            "POST",
            "/api/v1/nodes",
            &[("Content-Type", "application/json")],
            Some("{not json"),
        )
        .await;
        assert_eq!(r.status, 400);
        assert_status(&r.json().await, 400, "BadRequest");
        let r = raw_request(
            &server,
            "POST",
            "/api/v1/nodes",
            &[],
            Some(r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"x"}}"#),
        )
        .await;
        assert_eq!(r.status, 400);
        let r = raw_request(
            &server,
            "PATCH",
            "/api/v1/nodes/n1",
            &[("Content-Type", "application/json-patch+json")],
            Some("[]"),
        )
        .await;
        assert_eq!(r.status, 415);
        let r = raw_request(&server, "DELETE", "/version", &[], None).await;
        assert_eq!(r.status, 405);

        server.set_unavailable(true);
        let (code, body) = get_json(&server, "/version").await;
        assert_eq!(code, 503);
        assert_status(&body, 503, "ServiceUnavailable");
        server.set_unavailable(false);
        assert!(!server.is_unavailable());
        let (code, _) = get_json(&server, "/version").await;
        assert_eq!(code, 200);
        assert!(
            server
                .requests()
                .iter()
                .any(|r| r.status == 503 && r.path == "/version")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_discovery_and_metadata_only_lists() {
    bounded(30, async {
        let server = TestServer::start().await;
        server.apply(&node("n1")).expect("node");
        let (_, v) = get_json(&server, "/version").await;
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("33"))
        );
        assert!(
            v["gitVersion"]
                .as_str()
                .is_some_and(|g| g.starts_with("v1.33."))
        );
        let (_, api) = get_json(&server, "/api").await;
        assert_eq!(api["versions"], json!(["v1"]));
        let (_, apis) = get_json(&server, "/apis").await;
        assert_eq!(apis["groups"][0]["name"], "discovery.k8s.io");
        let (_, core) = get_json(&server, "/api/v1").await;
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        for n in ["services", "nodes", "pods", "namespaces"] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        let (_, disc) = get_json(&server, "/apis/discovery.k8s.io/v1").await;
        assert_eq!(disc["resources"][0]["name"], "endpointslices");
        assert_eq!(disc["resources"][0]["namespaced"], true);

        let r = raw_request(
            &server,
            "GET",
            "/api/v1/nodes",
            &[(
                "Accept",
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )],
            None,
        )
        .await;
        let l = r.json().await;
        assert_eq!(l["kind"], "PartialObjectMetadataList");
        assert_eq!(l["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(l["items"][0]["metadata"]["name"], "n1");
        assert!(l["items"][0].get("spec").is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_objects_and_http_writes() {
    bounded(30, async {
        let server = TestServer::start().await;
        let created = server
            .apply_json(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"generateName": "web-", "namespace": "prod"},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.0.1"]}],
            }))
            .expect("apply json");
        let name = created["metadata"]["name"].as_str().expect("generated name").to_string();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert!(server.get_json(ResourceKind::EndpointSlice, Some("prod"), &name).is_some());
        assert!(server.apply_json(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}})).is_err());
        assert!(server.apply_json(json!({"apiVersion": "v1", "kind": "Service", "metadata": {}})).is_err());
        assert!(server.delete(ResourceKind::Service, None, "nope").is_err());

        let r = raw_request(
            &server,
            "POST",
            "/api/v1/namespaces/default/services",
            &[("Content-Type", "application/json")],
            Some(r#"{"metadata":{"name":"web"},"spec":{"ports":[{"port":80}]}}"#),
        )
        .await;
        assert_eq!(r.status, 201);
        let svc = r.json().await;
        assert_eq!(svc["metadata"]["namespace"], "default");
        let r = raw_request(
            &server,
            "PATCH",
            "/api/v1/namespaces/default/services/web",
            &[("Content-Type", "application/merge-patch+json")],
            Some(r#"{"metadata":{"labels":{"a":"b"}}}"#),
        )
        .await;
        assert_eq!(r.status, 200);
        let r = raw_request(
            &server,
            "DELETE",
            "/api/v1/namespaces/default/services/web",
            &[("Content-Type", "application/json")],
            Some(r#"{"preconditions":{"uid":"wrong"}}"#),
        )
        .await;
        assert_eq!(r.status, 409);
        let r = raw_request(&server, "DELETE", "/api/v1/namespaces/default/services/web", &[], None).await;
        assert_eq!(r.status, 200);
        assert!(server.get_json(ResourceKind::Service, Some("default"), "web").is_none());
        assert!(server.list_json(ResourceKind::Service).is_empty());
    })
    .await;
}
