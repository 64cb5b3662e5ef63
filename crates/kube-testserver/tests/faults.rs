//! Failure injection for one resource type ([`Fault`]), forced list pages
//! ([`TestServer::set_list_page_limit`]) and write bursts ([`TestServer::apply_all`]): over
//! raw HTTP, and against the real `kube` watcher, which is what the agent's tests rely on.

mod common;

use std::time::Duration;

use common::{WAIT, bounded, client_with, endpoint_slice, get_json, raw_request, service};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube_testserver::{Fault, ResourceKind, TestServer, Verb};
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_fails_only_what_it_selects() {
    bounded(30, async {
        let server = TestServer::start().await;
        server
            .apply(&service("default", "web", 80, &[]))
            .expect("svc");
        for n in ["a", "b", "c"] {
            server
                .apply(&endpoint_slice("default", n, "web", &["10.0.0.1"]))
                .expect("slice");
        }
        let slices = "/apis/discovery.k8s.io/v1/endpointslices";

        // Every verb on EndpointSlices; Services unaffected.
        server.set_fault(Fault::all(ResourceKind::EndpointSlice), true);
        let (code, body) = get_json(&server, slices).await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(body["reason"], "ServiceUnavailable", "{body}");
        let r = raw_request(&server, "GET", &format!("{slices}?watch=true"), &[], None).await;
        assert_eq!(r.status, 503, "a watch on the faulted type fails too");
        let (code, body) = get_json(&server, "/api/v1/services").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(names(&body), ["web"]);
        server.set_fault(Fault::all(ResourceKind::EndpointSlice), false);
        let (code, _) = get_json(&server, slices).await;
        assert_eq!(code, 200, "the fault is off again");

        // One verb: LIST fails, WATCH starts.
        server.set_fault(Fault::verb(ResourceKind::EndpointSlice, Verb::List), true);
        let (code, _) = get_json(&server, slices).await;
        assert_eq!(code, 503);
        let r = raw_request(
            &server,
            "GET",
            &format!("{slices}?watch=true&timeoutSeconds=1"),
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "the watch is not selected");
        server.clear_faults();

        // Forced pages, and a fault on the pages after the first.
        server.set_list_page_limit(1);
        let (code, p1) = get_json(&server, slices).await;
        assert_eq!(code, 200, "{p1}");
        assert_eq!(names(&p1), ["a"], "one item per page without a limit");
        assert_eq!(p1["metadata"]["remainingItemCount"], 2);
        let token = p1["metadata"]["continue"]
            .as_str()
            .expect("a continue token")
            .to_string();
        let (_, p) = get_json(&server, &format!("{slices}?limit=500")).await;
        assert_eq!(names(&p), ["a"], "the page limit caps a larger limit");
        server.set_fault(Fault::continued_pages(ResourceKind::EndpointSlice), true);
        let (code, _) = get_json(&server, &format!("{slices}?continue={token}")).await;
        assert_eq!(code, 503, "the second page is faulted");
        let (code, p) = get_json(&server, slices).await;
        assert_eq!(
            (code, names(&p)),
            (200, vec!["a".to_string()]),
            "first pages are not"
        );
        server.clear_faults();
        let (code, p2) = get_json(&server, &format!("{slices}?continue={token}")).await;
        assert_eq!((code, names(&p2)), (200, vec!["b".to_string()]));
        server.set_list_page_limit(0);
        let (_, all) = get_json(&server, slices).await;
        assert_eq!(names(&all), ["a", "b", "c"], "page limit off again");

        let st = |kind| {
            server
                .requests()
                .iter()
                .filter(|r| r.kind == Some(kind) && r.status == 503)
                .count()
        };
        assert_eq!(st(ResourceKind::Service), 0);
        assert_eq!(st(ResourceKind::EndpointSlice), 4, "each 503 is recorded");
    })
    .await;
}

/// The kube watcher against forced pages whose continuation fails: it delivers `Init` and the
/// first page's `InitApply`, then only errors, never `InitDone`, until the fault is lifted.
/// This is the "list that never completes" the agent's start-up test needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_a_partial_list_that_never_completes() {
    bounded(60, async {
        let server = TestServer::start().await;
        for n in ["a", "b", "c"] {
            server
                .apply(&endpoint_slice("default", n, "web", &["10.0.0.1"]))
                .expect("slice");
        }
        server.set_list_page_limit(1);
        server.set_fault(Fault::continued_pages(ResourceKind::EndpointSlice), true);
        // Without kube's own retries, so the 503 surfaces as a watcher error at once.
        let api: Api<EndpointSlice> = Api::all(client_with(&server, false).await);
        let mut w = watcher::watcher(api, watcher::Config::default()).boxed();
        let mut seen = Vec::new();
        // The objects of the list attempt in progress, across both loops below: a retry
        // whose Init and first page the first loop consumed goes on in the second.
        let mut attempt: Vec<String> = Vec::new();
        let mut errors = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(200), w.next()).await {
                Ok(Some(Ok(Event::Init))) => {
                    seen.push("Init".to_string());
                    attempt.clear();
                }
                Ok(Some(Ok(Event::InitApply(s)))) => {
                    let name = s.metadata.name.unwrap_or_default();
                    seen.push(format!("InitApply({name})"));
                    attempt.push(name);
                }
                Ok(Some(Ok(Event::InitDone))) => panic!("InitDone despite the fault: {seen:?}"),
                Ok(Some(Ok(_))) => panic!("a watch event before the list completed: {seen:?}"),
                Ok(Some(Err(_))) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(None) => panic!("the watcher stream ended"),
                Err(_) => {}
            }
        }
        assert!(errors >= 1, "the continued page failed: {seen:?}");
        assert!(
            seen.iter().any(|s| s == "InitApply(a)"),
            "the first page arrived: {seen:?}"
        );
        assert!(
            !seen.iter().any(|s| s == "InitApply(b)"),
            "no later page arrived: {seen:?}"
        );
        server.clear_faults();
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut applied = attempt;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no InitDone");
            match tokio::time::timeout(WAIT, w.next()).await {
                Ok(Some(Ok(Event::InitApply(s)))) => {
                    applied.push(s.metadata.name.unwrap_or_default())
                }
                Ok(Some(Ok(Event::InitDone))) => break,
                Ok(Some(Ok(Event::Init))) => applied.clear(),
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(None) => panic!("the watcher stream ended"),
                Err(_) => panic!("no watcher event within {WAIT:?}"),
            }
        }
        applied.sort();
        assert_eq!(
            applied,
            ["a", "b", "c"],
            "the whole list once the fault is off"
        );
    })
    .await;
}

/// `apply_all` writes under one lock: a watcher sees the events with consecutive
/// resourceVersions and nothing between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_all_is_one_burst() {
    bounded(30, async {
        let server = TestServer::start().await;
        let slice = |name: &str, ip: &str| {
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip]}],
            })
        };
        let before = server.resource_version();
        let stored = server
            .apply_all(vec![slice("a", "10.0.0.1"), slice("b", "10.0.0.2")])
            .expect("burst");
        let rvs: Vec<u64> = stored
            .iter()
            .map(|o| {
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("rv")
            })
            .collect();
        assert_eq!(rvs, [before + 1, before + 2]);
        assert_eq!(server.list_json(ResourceKind::EndpointSlice).len(), 2);
        let err = server
            .apply_all(vec![
                slice("c", "10.0.0.3"),
                json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "x"}}),
            ])
            .expect_err("an unknown kind fails the burst before any write");
        assert!(err.to_string().contains("Widget"), "{err}");
        assert_eq!(
            server.list_json(ResourceKind::EndpointSlice).len(),
            2,
            "nothing of a burst with an unknown kind is written"
        );
    })
    .await;
}
