//! ServiceMap::build over the realistic cluster of tests/data/cluster/: frontends, backends,
//! and the warnings for the bad objects in it.

mod support;

use ctreap::cluster::{Conditions, FrontendKind, Proto, ServiceMap, WarningKind};
use support::{fixture_cluster, ip};

fn build() -> (ServiceMap, Vec<ctreap::cluster::Warning>) {
    fixture_cluster(&[ip("127.0.0.1"), ip("10.244.0.1")])
}

#[test]
fn bad_objects_warn_and_cost_only_themselves() {
    let (_, warnings) = build();
    let got: Vec<(WarningKind, String)> = warnings
        .iter()
        .map(|w| (w.kind, format!("{} {}", w.object_kind, w.object)))
        .collect();
    let want = [
        (
            WarningKind::MalformedAddress,
            "EndpointSlice shop/web-v4-7bq8x",
        ),
        (
            WarningKind::FamilyMismatch,
            "EndpointSlice shop/web-v6-m2d4k",
        ),
        (
            WarningKind::DuplicateEndpoint,
            "EndpointSlice shop/api-x7k2m",
        ),
        (
            WarningKind::MissingField,
            "EndpointSlice monitoring/node-exporter-r8f3v",
        ),
        (
            WarningKind::UnknownService,
            "EndpointSlice shop/checkout-4hj7d",
        ),
    ];
    let want: Vec<(WarningKind, String)> = want.iter().map(|(k, o)| (*k, o.to_string())).collect();
    assert_eq!(got, want, "{warnings:#?}");
    assert!(
        warnings[0].to_string().contains("\"10.0.0.999\""),
        "the message names the bad address: {}",
        warnings[0]
    );
}

#[test]
fn frontends_of_a_dual_stack_load_balancer() {
    let (map, _) = build();
    let http = map
        .frontend(Proto::Tcp, ip("10.96.10.20"), 80)
        .expect("web ClusterIP")
        .first_port()
        .expect("a port");
    assert_eq!(http.to_string(), "shop/web:http");
    let mut got: Vec<String> = http
        .frontends()
        .iter()
        .map(|f| format!("{} {}", f.kind.as_str(), f.key))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "ClusterIP 10.96.10.20:80/TCP",
            "ClusterIP [fd00:96::20]:80/TCP",
            "ExternalIP 203.0.113.50:80/TCP",
            "LoadBalancer 198.51.100.20:80/TCP",
            "NodePort 10.244.0.1:30080/TCP",
            "NodePort 127.0.0.1:30080/TCP",
            "NodePort 192.168.10.11:30080/TCP",
            "NodePort 203.0.113.11:30080/TCP",
            "NodePort [fd00:10::11]:30080/TCP",
        ],
        "no frontend for the ipMode=Proxy ingress nor the hostname one"
    );
    let backends: Vec<String> = http
        .backends()
        .iter()
        .map(|b| format!("{} {:?}", b.addr(), b.conditions.state()))
        .collect();
    assert_eq!(
        backends,
        [
            "10.244.1.10:8080 Serving",
            "10.244.2.11:8080 Draining",
            "10.244.2.12:8080 NotServing",
            "[fd00:244:1::10]:8080 Serving",
            "[fd00:244:2::11]:8080 Serving",
        ]
    );
}

#[test]
fn headless_external_name_and_fqdn_make_no_nat() {
    let (map, _) = build();
    let services: Vec<String> = {
        let mut v: Vec<String> = map.ports().map(|p| p.service().to_string()).collect();
        v.dedup();
        v
    };
    assert!(
        !services.iter().any(|s| s == "shop/postgres"),
        "headless: {services:?}"
    );
    assert!(
        !services.iter().any(|s| s == "shop/payments-provider"),
        "ExternalName: {services:?}"
    );
    let legacy = map
        .frontend(Proto::Tcp, ip("10.96.30.40"), 80)
        .expect("legacy has a ClusterIP")
        .first_port()
        .expect("port");
    assert!(
        legacy.backends().is_empty(),
        "FQDN and port-less slices give no backends"
    );
    assert_eq!(
        map.ports_of_backend_ip(ip("10.244.3.40")).count(),
        0,
        "headless pod"
    );
}

#[test]
fn pod_behind_two_services_is_indexed_under_both() {
    let (map, _) = build();
    let mut ports: Vec<String> = map
        .ports_of_backend_ip(ip("10.244.1.20"))
        .map(|p| p.to_string())
        .collect();
    ports.sort();
    assert_eq!(ports, ["shop/api-canary:80/TCP", "shop/api:8080/TCP"]);
    let canary = map
        .frontend(Proto::Tcp, ip("10.96.20.31"), 80)
        .expect("canary frontend");
    assert!(canary.backend(ip("10.244.1.21"), 8080).is_none());
    assert_eq!(
        map.frontend(Proto::Tcp, ip("10.96.20.30"), 8080)
            .expect("api frontend")
            .backend(ip("10.244.1.21"), 8080)
            .map(|(_, c)| c),
        Some(Conditions::READY)
    );
}

#[test]
fn endpoint_in_two_slices_is_serving_if_serving_in_any() {
    let (map, _) = build();
    let dns = map
        .frontend(Proto::Udp, ip("10.96.0.10"), 53)
        .expect("kube-dns UDP");
    let (_, c) = dns
        .backend(ip("10.244.2.7"), 53)
        .expect("10.244.2.7 listed");
    assert!(c.serving, "{c:?}");
}

#[test]
fn stats_count_what_was_built() {
    let (map, _) = build();
    let s = map.stats();
    // kube-dns(3) web(2) api(1) api-canary(1) legacy(1) statsd(1) node-exporter(1) signalling(1)
    assert_eq!(s.service_ports, 11, "{s:?}");
    assert_eq!(s.services, 8, "{s:?}");
    assert_eq!(
        map.node_addresses(),
        &[
            ip("10.244.0.1"),
            ip("127.0.0.1"),
            ip("192.168.10.11"),
            ip("203.0.113.11"),
            ip("fd00:10::11")
        ]
    );
    assert!(
        map.frontends().any(|f| f.key().ip == ip("10.96.40.60")
            && f.first_port().is_some_and(|p| p
                .frontends()
                .iter()
                .any(|fe| fe.kind == FrontendKind::NodePort))),
        "node-exporter NodePort"
    );
}
