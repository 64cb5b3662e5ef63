//! plan_diff: what a watch-driven trigger flushes when the cluster of tests/data/cluster/
//! changes (an endpoint leaves, stops serving, a Service is deleted, a node address goes).

mod support;

use std::net::IpAddr;

use ctreap::cluster::ServiceMap;
use ctreap::reconcile::{Policy, plan_diff};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use support::{ip, read};

/// The fixture cluster as JSON values, to mutate before building.
#[derive(Clone)]
struct Cluster {
    services: Vec<Value>,
    slices: Vec<Value>,
    node: Value,
    local: Vec<IpAddr>,
}

impl Cluster {
    fn load() -> Cluster {
        let items = |rel: &str| -> Vec<Value> {
            let v: Value = serde_json::from_str(&read(rel)).expect("fixture JSON");
            v["items"].as_array().expect("items").clone()
        };
        Cluster {
            services: items("cluster/services.json"),
            slices: items("cluster/endpointslices.json"),
            node: serde_json::from_str(&read("cluster/node.json")).expect("node"),
            local: vec![ip("127.0.0.1"), ip("10.244.0.1")],
        }
    }

    fn map(&self) -> ServiceMap {
        let services: Vec<Service> = self
            .services
            .iter()
            .map(|v| serde_json::from_value(v.clone()).expect("Service"))
            .collect();
        let slices: Vec<EndpointSlice> = self
            .slices
            .iter()
            .map(|v| serde_json::from_value(v.clone()).expect("EndpointSlice"))
            .collect();
        let node: Node = serde_json::from_value(self.node.clone()).expect("Node");
        ServiceMap::build(&services, &slices, Some(&node), &self.local).0
    }

    fn slice(&mut self, name: &str) -> &mut Value {
        self.slices
            .iter_mut()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no slice {name}"))
    }

    fn endpoint(&mut self, slice: &str, addr: &str) -> &mut Value {
        self.slice(slice)["endpoints"]
            .as_array_mut()
            .expect("endpoints")
            .iter_mut()
            .find(|e| e["addresses"][0] == addr)
            .unwrap_or_else(|| panic!("no endpoint {addr} in {slice}"))
    }

    fn remove_endpoint(&mut self, slice: &str, addr: &str) {
        let eps = self.slice(slice)["endpoints"]
            .as_array_mut()
            .expect("endpoints");
        let before = eps.len();
        eps.retain(|e| e["addresses"][0] != addr);
        assert_eq!(eps.len() + 1, before, "{addr} in {slice}");
    }
}

fn diff(old: &Cluster, new: &Cluster) -> Vec<String> {
    plan_diff(&old.map(), &new.map(), &Policy::default())
        .iter()
        .map(|k| k.to_string())
        .collect()
}

#[test]
fn pod_leaving_one_of_two_services_flushes_only_that_service() {
    let old = Cluster::load();
    let mut new = old.clone();
    new.remove_endpoint("api-canary-p4n8w", "10.244.1.20");
    assert_eq!(
        diff(&old, &new),
        [
            "-p tcp --orig-dst 10.96.20.31 --orig-port-dst 80 --reply-src 10.244.1.20 --reply-port-src 8080"
        ],
        "shop/api still has 10.244.1.20: its flows stay"
    );
}

#[test]
fn stop_serving_flushes_udp_then_leaving_flushes_tcp() {
    let old = Cluster::load();
    let mut stopping = old.clone();
    *stopping.endpoint("kube-dns-8xk2p", "10.244.1.5") = json!({"addresses": ["10.244.1.5"], "conditions": {"ready": false, "serving": false, "terminating": true}});
    assert_eq!(
        diff(&old, &stopping),
        [
            "-p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.5 --reply-port-src 53"
        ],
        "TCP connections of a pod that stopped serving are left to finish"
    );
    let mut gone = stopping.clone();
    gone.remove_endpoint("kube-dns-8xk2p", "10.244.1.5");
    assert_eq!(
        diff(&stopping, &gone),
        [
            "-p tcp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.5 --reply-port-src 53",
            "-p tcp --orig-dst 10.96.0.10 --orig-port-dst 9153 --reply-src 10.244.1.5 --reply-port-src 9153",
        ],
        "UDP was flushed already"
    );
}

#[test]
fn draining_is_not_flushed_until_it_stops_serving() {
    let old = Cluster::load();
    let mut draining = old.clone();
    *draining.endpoint("web-v4-7bq8x", "10.244.1.10") = json!({"addresses": ["10.244.1.10"], "conditions": {"ready": false, "serving": true, "terminating": true}});
    assert!(diff(&old, &draining).is_empty());
    let mut gone = draining.clone();
    gone.remove_endpoint("web-v4-7bq8x", "10.244.1.10");
    let keys = diff(&draining, &gone);
    // http and https, each on 7 IPv4 frontends: ClusterIP, externalIP, LB VIP and NodePorts
    // on 4 node addresses.
    assert_eq!(keys.len(), 14, "{keys:#?}");
    assert!(
        keys.iter().all(|k| k.contains("--reply-src 10.244.1.10 ")),
        "{keys:#?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.contains("--orig-dst 127.0.0.1 --orig-port-dst 30443")),
        "{keys:#?}"
    );
}

#[test]
fn deleted_service_flushes_every_frontend_backend_pair_of_its_family() {
    let old = Cluster::load();
    let mut new = old.clone();
    new.services.retain(|s| s["metadata"]["name"] != "web");
    new.slices
        .retain(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] != "web");
    let keys = diff(&old, &new);
    // Per port: 7 IPv4 frontends x 3 IPv4 backends + 2 IPv6 frontends x 2 IPv6 backends.
    assert_eq!(keys.len(), 2 * (7 * 3 + 2 * 2), "{keys:#?}");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("--orig-dst 10.96.10.20") && k.contains("fd00")),
        "no IPv4 frontend with an IPv6 backend: {keys:#?}"
    );
}

#[test]
fn vanished_node_address_flushes_its_nodeports() {
    let old = Cluster::load();
    let mut new = old.clone();
    new.local.retain(|a| *a != ip("10.244.0.1"));
    let keys = diff(&old, &new);
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.contains("--orig-dst 10.244.0.1 ")),
        "only NodePorts on the vanished address: {keys:#?}"
    );
}

#[test]
fn shared_external_ip_keeps_a_backend_serving_in_either_service() {
    // Two Services claim 203.0.113.77:443 (kube-proxy programs both; the first rule wins).
    let svc = |name: &str| {
        json!({"metadata": {"namespace": "edge", "name": name},
               "spec": {"clusterIPs": [format!("10.96.77.{}", name.len())],
                        "externalIPs": ["203.0.113.77"],
                        "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}})
    };
    let slice = |name: &str, svc: &str, addrs: &[&str]| {
        let eps: Vec<Value> = addrs.iter().map(|a| json!({"addresses": [a]})).collect();
        json!({"metadata": {"namespace": "edge", "name": name,
                            "labels": {"kubernetes.io/service-name": svc}},
               "addressType": "IPv4",
               "ports": [{"name": "https", "port": 8443}],
               "endpoints": eps})
    };
    let old = Cluster {
        services: vec![svc("gw"), svc("gw-v2")],
        slices: vec![
            slice("gw-1", "gw", &["10.244.5.1", "10.244.5.2"]),
            slice("gw-v2-1", "gw-v2", &["10.244.5.1"]),
        ],
        node: json!({"metadata": {"name": "node-a"}}),
        local: vec![],
    };
    let mut new = old.clone();
    new.slices[0] = slice("gw-1", "gw", &[]);
    assert_eq!(
        diff(&old, &new),
        [
            "-p tcp --orig-dst 10.96.77.2 --orig-port-dst 443 --reply-src 10.244.5.1 --reply-port-src 8443",
            "-p tcp --orig-dst 10.96.77.2 --orig-port-dst 443 --reply-src 10.244.5.2 --reply-port-src 8443",
            "-p tcp --orig-dst 203.0.113.77 --orig-port-dst 443 --reply-src 10.244.5.2 --reply-port-src 8443",
        ],
        "10.244.5.1 still serves gw-v2 on the shared external IP"
    );
}
