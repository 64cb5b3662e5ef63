//! Shared by ctreap's integration tests: the fixture files of tests/data/ and the cluster they
//! describe.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use ctreap::cluster::{ServiceMap, Warning};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;

/// A file under tests/data/, as text.
pub fn read(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `items` of a `kubectl get -o json` list under tests/data/.
pub fn items<T: DeserializeOwned>(rel: &str) -> Vec<T> {
    #[derive(serde::Deserialize)]
    struct List<T> {
        items: Vec<T>,
    }
    let list: List<T> = serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    list.items
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// The cluster of tests/data/cluster/ seen from node-a, whose interfaces carry `local`.
pub fn fixture_cluster(local: &[IpAddr]) -> (ServiceMap, Vec<Warning>) {
    let services: Vec<Service> = items("cluster/services.json");
    let slices: Vec<EndpointSlice> = items("cluster/endpointslices.json");
    let node: Node = serde_json::from_str(&read("cluster/node.json")).expect("node.json");
    ServiceMap::build(&services, &slices, Some(&node), local)
}
