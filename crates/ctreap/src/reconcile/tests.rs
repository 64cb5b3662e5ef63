//! Unit tests of verdicts and plans over small hand-built maps.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;
use crate::cluster::{Conditions, Proto, ServiceMap};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// `client:sport -> dst:dport` translated to `backend:bport`, masqueraded or not.
fn flow(proto: u8, dst: &str, dport: u16, backend: &str, bport: u16) -> Flow {
    Flow {
        proto,
        orig_src: ip("10.244.9.9"),
        orig_dst: ip(dst),
        orig_sport: 40000,
        orig_dport: dport,
        reply_src: ip(backend),
        reply_dst: ip("10.244.9.9"),
        reply_sport: bport,
        reply_dport: 40000,
        zone: 0,
    }
}

/// `dns` (UDP 53 -> 5353 by name) with one ready, one draining, one not-serving endpoint.
fn dns_map(extra_eps: serde_json::Value) -> ServiceMap {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "kube-system", "name": "dns"},
        "spec": {"clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"}]}
    }))
    .expect("Service JSON");
    let mut eps = vec![
        json!({"addresses": ["10.244.1.5"], "conditions": {"ready": true}}),
        json!({"addresses": ["10.244.1.6"],
               "conditions": {"ready": false, "serving": true, "terminating": true}}),
        json!({"addresses": ["10.244.1.7"], "conditions": {"ready": false}}),
    ];
    if let serde_json::Value::Array(more) = extra_eps {
        eps.extend(more);
    }
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "kube-system", "name": "dns-abc",
                     "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                  {"name": "dns-tcp", "port": 5353, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .expect("slice JSON");
    let (map, warnings) = ServiceMap::build(&[svc], &[slice], None, &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    map
}

#[test]
fn verdicts_by_condition() {
    let map = dns_map(json!([]));
    let cases = [
        (
            "ready",
            flow(UDP, "10.96.0.10", 53, "10.244.1.5", 5353),
            Verdict::Live,
        ),
        (
            "draining",
            flow(UDP, "10.96.0.10", 53, "10.244.1.6", 5353),
            Verdict::Draining,
        ),
        (
            "not serving",
            flow(UDP, "10.96.0.10", 53, "10.244.1.7", 5353),
            Verdict::Stale(StaleReason::NotServing),
        ),
        (
            "gone",
            flow(UDP, "10.96.0.10", 53, "10.244.1.8", 5353),
            Verdict::Stale(StaleReason::Gone),
        ),
        (
            "right pod, wrong port",
            flow(UDP, "10.96.0.10", 53, "10.244.1.5", 53),
            Verdict::Stale(StaleReason::Gone),
        ),
        (
            "tcp port by name",
            flow(TCP, "10.96.0.10", 53, "10.244.1.5", 5353),
            Verdict::Live,
        ),
        (
            "not a frontend port",
            flow(UDP, "10.96.0.10", 54, "10.244.1.5", 5353),
            Verdict::NotService(NotServiceReason::NotFrontend),
        ),
        (
            "not a frontend ip",
            flow(UDP, "10.96.0.11", 53, "10.244.1.5", 5353),
            Verdict::NotService(NotServiceReason::NotFrontend),
        ),
        (
            "no dnat, tcp",
            flow(TCP, "10.96.0.10", 53, "10.96.0.10", 53),
            Verdict::NotService(NotServiceReason::NoDnat),
        ),
        (
            "no dnat, udp, the frontend has a serving backend",
            flow(UDP, "10.96.0.10", 53, "10.96.0.10", 53),
            Verdict::Stale(StaleReason::NotTranslated),
        ),
        (
            "icmp",
            flow(1, "10.96.0.10", 0, "10.244.1.5", 0),
            Verdict::NotService(NotServiceReason::Protocol),
        ),
    ];
    for (what, f, want) in cases {
        let d = classify(&map, &f);
        assert_eq!(d.verdict, want, "{what}: {f:?}");
        if !matches!(
            want,
            Verdict::NotService(NotServiceReason::NotFrontend | NotServiceReason::Protocol)
        ) {
            let svc = d
                .service()
                .unwrap_or_else(|| panic!("{what}: no service in {d:?}"));
            assert_eq!(svc.to_string(), "kube-system/dns", "{what}");
        }
    }
}

#[test]
fn decision_names_the_port_that_decided() {
    let map = dns_map(json!([]));
    let d = classify(&map, &flow(TCP, "10.96.0.10", 53, "10.244.1.5", 5353));
    let port = d.port.expect("port");
    assert_eq!(port.to_string(), "kube-system/dns:dns-tcp");
    assert_eq!(d.frontend.to_string(), "10.96.0.10:53");
    assert_eq!(d.backend.to_string(), "10.244.1.5:5353");
}

#[test]
fn default_policy_deletes_gone_everywhere_not_serving_for_udp_only() {
    let map = dns_map(json!([]));
    let flows = [
        flow(UDP, "10.96.0.10", 53, "10.244.1.5", 5353), // live
        flow(UDP, "10.96.0.10", 53, "10.244.1.6", 5353), // draining
        flow(UDP, "10.96.0.10", 53, "10.244.1.7", 5353), // not serving, UDP
        flow(TCP, "10.96.0.10", 53, "10.244.1.7", 5353), // not serving, TCP
        flow(TCP, "10.96.0.10", 53, "10.244.1.8", 5353), // gone, TCP
        flow(UDP, "10.96.0.10", 53, "10.244.1.8", 5353), // gone, UDP
    ];
    let reasons = |policy: &Policy| -> Vec<Option<StaleReason>> {
        flows
            .iter()
            .map(|f| deletable(&map, f, policy).map(|s| s.reason))
            .collect()
    };
    use StaleReason::{Gone, NotServing};
    assert_eq!(
        reasons(&Policy::default()),
        [None, None, Some(NotServing), None, Some(Gone), Some(Gone)]
    );
    let all = Policy {
        gone: ProtoSet::ALL,
        not_serving: ProtoSet::ALL,
    };
    assert_eq!(
        reasons(&all),
        [
            None,
            None,
            Some(NotServing),
            Some(NotServing),
            Some(Gone),
            Some(Gone)
        ],
        "everything stale; never the draining backend, which still serves"
    );
    let none = Policy {
        gone: ProtoSet::NONE,
        not_serving: ProtoSet::NONE,
    };
    assert_eq!(reasons(&none), [None; 6]);
    // The pair a flush deletes, as `conntrack -D` names it.
    assert_eq!(
        key_of(&flows[4]).to_string(),
        "-p tcp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.8 --reply-port-src 5353"
    );
}

#[test]
fn a_flow_is_judged_on_the_map_it_is_deleted_against() {
    let old = dns_map(json!([]));
    let f = flow(UDP, "10.96.0.10", 53, "10.244.1.8", 5353);
    assert_eq!(
        classify(&old, &f).verdict,
        Verdict::Stale(StaleReason::Gone)
    );
    let new = dns_map(json!([{"addresses": ["10.244.1.8"]}]));
    assert_eq!(
        deletable(&new, &f, &Policy::default()),
        None,
        "10.244.1.8 is back and serving in the newer map"
    );
    assert!(deletable(&old, &f, &Policy::default()).is_some());
}

#[test]
fn diff_flushes_what_left_and_only_that() {
    let old = dns_map(json!([{"addresses": ["10.244.1.8"]}]));
    let new = dns_map(json!([]));
    let keys = plan_diff(&old, &new, &Policy::default());
    let shown: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        shown,
        [
            "-p tcp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.8 --reply-port-src 5353",
            "-p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.8 --reply-port-src 5353",
        ],
        "10.244.1.7 was already not serving: an earlier plan's business"
    );
    assert!(
        plan_diff(&new, &new, &Policy::default()).is_empty(),
        "no change, no flush"
    );
    assert!(
        plan_diff(&new, &old, &Policy::default()).is_empty(),
        "an arrival flushes nothing"
    );
}

#[test]
fn diff_of_a_deleted_service_flushes_all_its_backends() {
    let old = dns_map(json!([]));
    let keys = plan_diff(&old, &ServiceMap::empty(), &Policy::default());
    // Gone from every frontend: 3 backends x 2 protocols, except the UDP not-serving one,
    // already deletable before.
    assert_eq!(keys.len(), 5, "{keys:#?}");
}

#[test]
fn counts_add_up() {
    let map = dns_map(json!([]));
    let mut counts = VerdictCounts::default();
    for f in [
        flow(UDP, "10.96.0.10", 53, "10.244.1.5", 5353),
        flow(UDP, "10.96.0.10", 53, "10.244.1.6", 5353),
        flow(UDP, "10.96.0.10", 53, "10.244.1.7", 5353),
        flow(UDP, "10.96.0.10", 53, "10.244.1.8", 5353),
        flow(UDP, "1.1.1.1", 53, "1.1.1.1", 53),
    ] {
        counts.add(classify(&map, &f).verdict);
    }
    assert_eq!(
        counts,
        VerdictCounts {
            live: 1,
            draining: 1,
            stale_gone: 1,
            stale_not_serving: 1,
            stale_not_translated: 0,
            not_service: 1
        }
    );
    assert_eq!(counts.total(), 5);
}

/// Untranslated entries (the frontend is its own reply source): UDP to a frontend that has a
/// serving backend is stale and deleted by default, as kube-proxy's reconciler deletes it; TCP
/// is left; with no serving backend nothing could have translated it, so both are left; a
/// frontend address listed as its own backend keeps its entry.
#[test]
fn untranslated_udp_to_a_frontend_with_a_serving_backend_is_stale() {
    let with = dns_map(json!([]));
    let udp = flow(UDP, "10.96.0.10", 53, "10.96.0.10", 53);
    let tcp = flow(TCP, "10.96.0.10", 53, "10.96.0.10", 53);
    assert_eq!(
        classify(&with, &udp).verdict,
        Verdict::Stale(StaleReason::NotTranslated)
    );
    let s = deletable(&with, &udp, &Policy::default()).expect("deleted by default");
    assert_eq!(s.reason, StaleReason::NotTranslated);
    assert_eq!(
        classify(&with, &tcp).verdict,
        Verdict::NotService(NotServiceReason::NoDnat)
    );
    assert!(deletable(&with, &tcp, &Policy::default()).is_none());
    let udp_only_tcp = Policy {
        gone: ProtoSet::TCP,
        ..Policy::default()
    };
    assert!(
        deletable(&with, &udp, &udp_only_tcp).is_none(),
        "--protocols tcp"
    );

    // A Service with no endpoint at all.
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "kube-system", "name": "dns"},
        "spec": {"clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}
    }))
    .expect("Service JSON");
    let no_slices: &[EndpointSlice] = &[];
    let (without, _) = ServiceMap::build(std::slice::from_ref(&svc), no_slices, None, &[]);
    assert_eq!(
        classify(&without, &udp).verdict,
        Verdict::NotService(NotServiceReason::NoDnat)
    );
    // The frontend address listed as a backend of itself: its entry is that backend's.
    let own: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "kube-system", "name": "dns-own",
                     "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "ports": [{"port": 53, "protocol": "UDP"}],
        "endpoints": [{"addresses": ["10.96.0.10"], "conditions": {"ready": true}}]
    }))
    .expect("slice JSON");
    let (own, _) = ServiceMap::build(&[svc], &[own], None, &[]);
    assert_eq!(
        classify(&own, &udp).verdict,
        Verdict::NotService(NotServiceReason::NoDnat)
    );
}

#[test]
fn proto_set() {
    assert!(ProtoSet::ALL.contains(crate::cluster::Proto::Sctp));
    assert!(!ProtoSet::UDP.contains(crate::cluster::Proto::Tcp));
    assert!(
        ProtoSet::TCP
            .with(crate::cluster::Proto::Udp)
            .contains(crate::cluster::Proto::Udp)
    );
    assert!(
        !Policy::default().deletes(Verdict::Stale(StaleReason::Gone), 1),
        "ICMP never"
    );
}

/// A draining backend (terminating, still serving) keeps its flows on every path: the full
/// pass judges verdicts (`deletes`), the watch path conditions (`deletes_backend`). No policy
/// can say otherwise, so the two cannot disagree.
#[test]
fn no_policy_deletes_a_draining_backend() {
    let strictest = Policy {
        gone: ProtoSet::ALL,
        not_serving: ProtoSet::ALL,
    };
    let draining = Conditions {
        ready: false,
        serving: true,
        terminating: true,
    };
    for (p, n) in [(Proto::Tcp, 6), (Proto::Udp, 17), (Proto::Sctp, 132)] {
        assert!(!strictest.deletes(Verdict::Draining, n), "{p:?}");
        assert!(!strictest.deletes_backend(Some(draining), p), "{p:?}");
        assert!(strictest.deletes_backend(None, p), "{p:?}: gone is deleted");
    }
}

/// hostPort frontends (issue 21): a backend the model does not list is not gone by the rule
/// full passes, conntrack events and `ctreap stale` apply (the portmap DNAT comes with the
/// sandbox, before the API reports the pod's IP); a backend seen leaving, planned by the
/// watch, goes. The same flow to a Service frontend is gone by both (the control).
#[test]
fn an_unlisted_hostport_backend_goes_only_when_seen_leaving() {
    use crate::cluster::{ClusterState, PodLite};
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "statsd-new"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "s", "ports": [
            {"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "podIP": "10.244.5.9", "podIPs": [{"ip": "10.244.5.9"}]}
    }))
    .expect("Pod JSON");
    let mut st = ClusterState::new(vec![ip("198.51.100.10")]);
    st.apply_pod(PodLite::from(pod));
    let map = st.map();
    let policy = Policy::default();
    // 10.244.5.7: the old pod, or a new one not reported yet.
    let f = flow(17, "198.51.100.10", 8125, "10.244.5.7", 8125);
    let d = classify(map, &f);
    assert_eq!(d.verdict, Verdict::Stale(StaleReason::Gone));
    assert!(unlisted_hostport_backend(&d));
    assert_eq!(
        deletable(map, &f, &policy),
        None,
        "not by a pass or an event"
    );
    let planned: Planned = [(
        key_of(&f),
        crate::cluster::ServiceName {
            namespace: "default".into(),
            name: "pod/statsd-old".into(),
        },
    )]
    .into();
    let s = deletable_planned(map, &f, &planned, &policy).expect("seen leaving: deleted");
    assert_eq!(
        s.service.to_string(),
        "default/pod/statsd-old",
        "named after the pod it left"
    );
    // The new pod's flows are live.
    let live = flow(17, "198.51.100.10", 8125, "10.244.5.9", 8125);
    assert_eq!(classify(map, &live).verdict, Verdict::Live);
}

/// A hostPort pod that vanishes while running (force-deleted) settles with --grace: there are
/// no slices for it to move between. A Service's backend that vanishes waits --move-grace
/// (the control).
#[test]
fn a_vanished_hostport_pod_settles_with_grace() {
    use crate::cluster::{Change, ServiceName};
    let change = |name: &str| Change {
        service: ServiceName {
            namespace: "default".into(),
            name: name.into(),
        },
        ignored: false,
        old: Some(Conditions::READY),
        left_from: Some(Conditions::READY),
        new: None,
    };
    assert_eq!(settle(&change("pod/statsd-x")), Settle::Grace);
    assert_eq!(settle(&change("statsd")), Settle::Vanished);
}
