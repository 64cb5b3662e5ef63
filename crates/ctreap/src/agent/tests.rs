//! Unit tests of the agent's pure decisions: which entries a watch-planned pass deletes, how
//! keys become kernel filters, which Services count as emptied for the breaker.

use std::collections::HashMap;
use std::net::IpAddr;

use ctnetlink::Filter;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::executor::key_filters;
use super::pass::emptied_services;
use super::*;
use crate::cluster::{ServiceLite, ServiceMap, SliceLite};
use crate::reconcile::{Flow, ProtoSet, StaleReason, Verdict, classify, deletable_planned};

const UDP: u8 = 17;
const TCP: u8 = 6;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn flow(proto: u8, dst: &str, dport: u16, backend: &str, bport: u16) -> Flow {
    Flow {
        proto,
        orig_src: ip("198.18.0.9"),
        orig_dst: ip(dst),
        orig_sport: 40000,
        orig_dport: dport,
        reply_src: ip(backend),
        reply_dst: ip("198.18.0.9"),
        reply_sport: bport,
        reply_dport: 40000,
        zone: 0,
    }
}

fn service(name: &str, vip: &str, annotations: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name, "annotations": annotations},
        "spec": {"clusterIPs": [vip],
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                           {"name": "web", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .expect("Service JSON")
}

fn slice(service: &str, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{service}-x"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                  {"name": "web", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .expect("slice JSON")
}

fn ready(addr: &str) -> Value {
    json!({"addresses": [addr], "conditions": {"ready": true}})
}

fn map(services: &[Service], slices: &[EndpointSlice]) -> ServiceMap {
    let (m, w) = ServiceMap::build(services, slices, None, &[]);
    assert!(w.is_empty(), "{w:?}");
    m
}

/// The live model holding `services` and `slices`, its changes taken.
fn model(services: &[Service], slices: &[EndpointSlice]) -> ClusterState {
    let mut st = ClusterState::new(Vec::new());
    st.replace_services(services.iter().cloned().map(ServiceLite::from).collect());
    st.replace_slices(slices.iter().cloned().map(SliceLite::from).collect());
    assert!(st.warnings().is_empty(), "{:?}", st.warnings());
    st.take_changes();
    st.take_gained();
    st
}

/// What the watch path plans when `st` moves to `services` and `slices` (as after a re-list):
/// the recorded changes the default policy deletes.
fn plan_move(st: &mut ClusterState, services: &[Service], slices: &[EndpointSlice]) -> Planned {
    plan_windows(st, services, slices)
        .into_values()
        .flatten()
        .collect()
}

/// [`plan_move`], by settle window.
fn plan_windows(
    st: &mut ClusterState,
    services: &[Service],
    slices: &[EndpointSlice],
) -> HashMap<Settle, Planned> {
    st.replace_services(services.iter().cloned().map(ServiceLite::from).collect());
    st.replace_slices(slices.iter().cloned().map(SliceLite::from).collect());
    planned(st.take_changes(), st.take_gained(), &Policy::default())
}

/// The settle window follows what the API said before the backend left: a pod deleted the
/// normal way (reported terminating first) takes --grace; one that vanished while ready,
/// serving and not terminating (a move between slices, or a force-delete) takes --move-grace.
#[test]
fn a_backend_that_vanished_while_serving_waits_the_move_window() {
    let svc = service("a", "198.19.0.10", json!({}));
    let svcs = std::slice::from_ref(&svc);
    let terminating = json!({"addresses": ["192.0.2.2"],
                             "conditions": {"ready": false, "serving": true, "terminating": true}});
    let mut st = model(
        svcs,
        &[slice(
            "a",
            json!([ready("192.0.2.1"), terminating, ready("192.0.2.3")]),
        )],
    );
    let windows = plan_windows(&mut st, svcs, &[slice("a", json!([ready("192.0.2.3")]))]);
    let backends = |w: Settle| -> std::collections::BTreeSet<String> {
        windows
            .get(&w)
            .into_iter()
            .flat_map(|p| p.keys())
            .map(|k| k.reply_src.to_string())
            .collect()
    };
    assert_eq!(
        backends(Settle::Vanished),
        ["192.0.2.1".to_string()].into(),
        "ready, then gone: {windows:?}"
    );
    assert_eq!(
        backends(Settle::Grace),
        ["192.0.2.2".to_string()].into(),
        "terminating, then gone: {windows:?}"
    );
    // Both ports of each backend are planned.
    assert!(windows.values().all(|p| p.len() == 2), "{windows:?}");
}

#[test]
fn removed_backend_is_deleted_on_both_ports_and_nothing_else() {
    let svc = service("a", "198.19.0.10", json!({}));
    let mut st = model(
        std::slice::from_ref(&svc),
        &[slice("a", json!([ready("192.0.2.1"), ready("192.0.2.2")]))],
    );
    let keys = plan_move(
        &mut st,
        std::slice::from_ref(&svc),
        &[slice("a", json!([ready("192.0.2.2")]))],
    );
    let new = st.map();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let p = Policy::default();
    let gone_udp = deletable_planned(
        new,
        &flow(UDP, "198.19.0.10", 53, "192.0.2.1", 5353),
        &keys,
        &p,
    )
    .expect("flow to the removed backend is deleted");
    assert_eq!(gone_udp.reason, StaleReason::Gone);
    assert_eq!(gone_udp.service.to_string(), "default/a");
    assert!(
        deletable_planned(
            new,
            &flow(TCP, "198.19.0.10", 80, "192.0.2.1", 8080),
            &keys,
            &p
        )
        .is_some()
    );
    assert!(
        deletable_planned(
            new,
            &flow(UDP, "198.19.0.10", 53, "192.0.2.2", 5353),
            &keys,
            &p
        )
        .is_none(),
        "a live backend is never in the plan"
    );
}

#[test]
fn a_backend_that_came_back_keeps_its_flows() {
    // Planned while 192.0.2.1 was gone; by the time the entries are judged it is back (IP
    // reuse, or a flapping endpoint): the newest map wins.
    let svc = service("a", "198.19.0.10", json!({}));
    let with = map(
        std::slice::from_ref(&svc),
        &[slice("a", json!([ready("192.0.2.1")]))],
    );
    let mut st = model(
        std::slice::from_ref(&svc),
        &[slice("a", json!([ready("192.0.2.1")]))],
    );
    let keys = plan_move(
        &mut st,
        std::slice::from_ref(&svc),
        &[slice("a", json!([]))],
    );
    let without = st.map();
    assert_eq!(keys.len(), 2);
    let f = flow(UDP, "198.19.0.10", 53, "192.0.2.1", 5353);
    assert!(deletable_planned(without, &f, &keys, &Policy::default()).is_some());
    assert!(deletable_planned(&with, &f, &keys, &Policy::default()).is_none());
}

#[test]
fn a_deleted_service_is_flushed_from_the_old_maps_memory() {
    let svc = service("a", "198.19.0.10", json!({}));
    let mut st = model(
        std::slice::from_ref(&svc),
        &[slice("a", json!([ready("192.0.2.1")]))],
    );
    let keys = plan_move(&mut st, &[], &[]);
    let new = st.map();
    let g = deletable_planned(
        new,
        &flow(UDP, "198.19.0.10", 53, "192.0.2.1", 5353),
        &keys,
        &Policy::default(),
    )
    .expect("a deleted Service's flows go");
    assert_eq!(g.service.to_string(), "default/a");
    assert_eq!(g.reason, StaleReason::Gone);
    // An entry that was never translated is not the Service's NAT traffic.
    let untranslated = flow(UDP, "198.19.0.10", 53, "198.19.0.10", 53);
    assert!(deletable_planned(new, &untranslated, &keys, &Policy::default()).is_none());
}

#[test]
fn ignored_services_are_never_planned_or_deleted() {
    let svc = service("a", "198.19.0.10", json!({"ctreap.io/ignore": "true"}));
    let mut st = model(
        std::slice::from_ref(&svc),
        &[slice("a", json!([ready("192.0.2.1")]))],
    );
    st.replace_slices(vec![SliceLite::from(slice("a", json!([])))]);
    let changes = st.take_changes();
    assert!(
        changes.values().all(|c| c.ignored) && !changes.is_empty(),
        "the model records the change and marks it ignored: {changes:?}"
    );
    assert!(
        planned(changes, st.take_gained(), &Policy::default()).is_empty(),
        "the plan drops ignored Services"
    );
    let new = st.map();
    let f = flow(UDP, "198.19.0.10", 53, "192.0.2.1", 5353);
    assert_eq!(classify(new, &f).verdict, Verdict::Stale(StaleReason::Gone));
    assert!(deletable(new, &f, &Policy::default()).is_none());
}

#[test]
fn draining_and_not_serving_follow_the_policy() {
    let svc = service("a", "198.19.0.10", json!({}));
    let m = map(
        std::slice::from_ref(&svc),
        &[slice(
            "a",
            json!([
                {"addresses": ["192.0.2.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["192.0.2.4"], "conditions": {"ready": false, "serving": false}}
            ]),
        )],
    );
    let all = ProtoSet::ALL;
    let keep = Policy {
        gone: all,
        not_serving: ProtoSet::NONE,
    };
    let strict = Policy {
        not_serving: all,
        ..keep
    };
    let draining = flow(TCP, "198.19.0.10", 80, "192.0.2.3", 8080);
    let not_serving = flow(TCP, "198.19.0.10", 80, "192.0.2.4", 8080);
    assert!(
        deletable(&m, &draining, &strict).is_none(),
        "draining flows are kept"
    );
    assert!(deletable(&m, &not_serving, &keep).is_none());
    assert_eq!(
        deletable(&m, &not_serving, &strict).map(|g| g.reason),
        Some(StaleReason::NotServing)
    );
}

#[test]
fn keys_become_one_dump_per_backend_address() {
    let mk = |proto, dst: &str, dport, src: &str, sport| FlushKey {
        proto,
        orig_dst: ip(dst),
        orig_dport: dport,
        reply_src: ip(src),
        reply_sport: sport,
    };
    let info = || ServiceName {
        namespace: "default".into(),
        name: "a".into(),
    };
    let keys: Planned = [
        mk(UDP, "198.19.0.10", 53, "192.0.2.1", 5353),
        mk(UDP, "192.0.2.200", 30053, "192.0.2.1", 5353), // a NodePort: same backend
        mk(TCP, "198.19.0.10", 80, "192.0.2.1", 8080),
        mk(UDP, "2001:db8::10", 53, "2001:db8:1::1", 5353),
    ]
    .into_iter()
    .map(|k| (k, info()))
    .collect();
    let mut filters = key_filters(&keys);
    filters.sort_by_key(|f| f.reply_src);
    let expect = [ip("192.0.2.1"), ip("2001:db8:1::1")].map(|a| Filter {
        reply_src: Some(a),
        ..Filter::default()
    });
    assert_eq!(filters, expect, "one kernel walk per backend address");
}

#[test]
fn emptied_services_are_those_without_a_serving_backend() {
    let a = service("a", "198.19.0.10", json!({}));
    let b = service("b", "198.19.0.11", json!({}));
    let m = map(
        &[a, b],
        &[
            slice("a", json!([ready("192.0.2.1")])),
            slice(
                "b",
                json!([{"addresses": ["192.0.2.9"], "conditions": {"ready": false, "serving": false}}]),
            ),
        ],
    );
    let name = |n: &str| ServiceName {
        namespace: "default".into(),
        name: n.into(),
    };
    let (a, b, gone) = (name("a"), name("b"), name("deleted"));
    assert_eq!(
        emptied_services(&m, [&a, &b, &b, &gone]),
        2,
        "b (no serving backend) and a Service that no longer exists, each counted once"
    );
}

/// A frontend that gains a serving backend (from none, or from not existing) plans one key
/// for its untranslated UDP entries (reply source = the frontend itself), with --grace; TCP
/// gets none (kube-proxy's parity is UDP's), nor does a frontend that already had one, nor an
/// ignored Service.
#[test]
fn frontends_gaining_a_serving_backend_plan_their_untranslated_udp_entries() {
    let svc = service("a", "198.19.0.10", json!({}));
    let svcs = std::slice::from_ref(&svc);
    let untranslated = |w: &HashMap<Settle, Planned>| -> Vec<FlushKey> {
        let mut v: Vec<FlushKey> = w
            .values()
            .flat_map(|p| p.keys())
            .filter(|k| k.untranslated())
            .copied()
            .collect();
        v.sort();
        v
    };
    let udp_key = FlushKey {
        proto: UDP,
        orig_dst: ip("198.19.0.10"),
        orig_dport: 53,
        reply_src: ip("198.19.0.10"),
        reply_sport: 53,
    };
    // An empty slice first, then an endpoint.
    let mut st = model(svcs, &[slice("a", json!([]))]);
    let w = plan_windows(&mut st, svcs, &[slice("a", json!([ready("192.0.2.1")]))]);
    assert_eq!(untranslated(&w), [udp_key]);
    assert!(w[&Settle::Grace].contains_key(&udp_key), "{w:?}");
    // A second endpoint: the frontend had one already.
    let w = plan_windows(
        &mut st,
        svcs,
        &[slice("a", json!([ready("192.0.2.1"), ready("192.0.2.2")]))],
    );
    assert_eq!(untranslated(&w), []);
    // No slice at all before: the Service and its endpoint arrive together.
    let mut st = model(&[], &[]);
    let w = plan_windows(&mut st, svcs, &[slice("a", json!([ready("192.0.2.1")]))]);
    assert_eq!(untranslated(&w), [udp_key]);
    // Not serving is no gain.
    let mut st = model(svcs, &[slice("a", json!([]))]);
    let not_ready = json!({"addresses": ["192.0.2.1"], "conditions": {"ready": false}});
    let w = plan_windows(&mut st, svcs, &[slice("a", json!([not_ready]))]);
    assert_eq!(untranslated(&w), []);
    // An ignored Service: never.
    let ignored = service("a", "198.19.0.10", json!({"ctreap.io/ignore": "true"}));
    let mut st = model(std::slice::from_ref(&ignored), &[slice("a", json!([]))]);
    let w = plan_windows(
        &mut st,
        std::slice::from_ref(&ignored),
        &[slice("a", json!([ready("192.0.2.1")]))],
    );
    assert_eq!(untranslated(&w), []);
}
