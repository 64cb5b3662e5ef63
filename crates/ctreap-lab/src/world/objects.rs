//! The control plane's objects: the lab's Service and its EndpointSlice, as JSON the way
//! `kubectl get svc,endpointslice -o json` shows them, and helpers applying them to a
//! kube-testserver (`kubectl apply -f`).

use std::net::Ipv4Addr;

use kube_testserver::{ResourceKind, TestServer};
use serde::Serialize;
use serde_json::{Value, json};

use super::Error;

/// The Service's namespace.
pub const NAMESPACE: &str = "default";
/// The Service's name.
pub const SERVICE: &str = "web";
/// The EndpointSlice's name (the EndpointSlice controller would call it `web-xxxxx`).
pub const SLICE: &str = "web-lab";
/// The Service's ClusterIP, from 198.18.0.0/15 (RFC 2544), routed only inside the lab.
pub const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// `http`: 80/TCP -> 8080, NodePort [`HTTP_NODE_PORT`].
pub const HTTP_PORT: u16 = 80;
pub const HTTP_TARGET_PORT: u16 = 8080;
pub const HTTP_NODE_PORT: u16 = 30080;
/// `dns`: 53/UDP -> 5353, NodePort [`DNS_NODE_PORT`].
pub const DNS_PORT: u16 = 53;
pub const DNS_TARGET_PORT: u16 = 5353;
pub const DNS_NODE_PORT: u16 = 30053;
/// The Node object's name (what `ctreap run --node-name` gets).
pub const NODE_NAME: &str = "lab-node";

/// One endpoint of the EndpointSlice: a pod and its conditions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSpec {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl EndpointSpec {
    /// A running pod: ready, serving, not terminating.
    pub fn ready(pod: &str, ip: Ipv4Addr) -> EndpointSpec {
        EndpointSpec {
            pod: pod.to_string(),
            ip,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// A pod being deleted that still serves (draining): `ready: false, serving: true,
    /// terminating: true`, as the EndpointSlice controller publishes it during the grace period.
    pub fn draining(pod: &str, ip: Ipv4Addr) -> EndpointSpec {
        EndpointSpec {
            pod: pod.to_string(),
            ip,
            ready: false,
            serving: true,
            terminating: true,
        }
    }

    /// A pod being deleted that no longer serves: `ready: false, serving: false,
    /// terminating: true`.
    pub fn terminating(pod: &str, ip: Ipv4Addr) -> EndpointSpec {
        EndpointSpec {
            pod: pod.to_string(),
            ip,
            ready: false,
            serving: false,
            terminating: true,
        }
    }
}

/// The Service: ClusterIP [`CLUSTER_IP`], ports `http` 80/TCP -> 8080 (NodePort 30080) and
/// `dns` 53/UDP -> 5353 (NodePort 30053), type NodePort, `externalTrafficPolicy: Cluster`.
pub fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": { "app": SERVICE },
        },
        "spec": {
            "type": "NodePort",
            "selector": { "app": SERVICE },
            "clusterIP": CLUSTER_IP.to_string(),
            "clusterIPs": [CLUSTER_IP.to_string()],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "externalTrafficPolicy": "Cluster",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "ports": [
                {
                    "name": "http",
                    "protocol": "TCP",
                    "port": HTTP_PORT,
                    "targetPort": HTTP_TARGET_PORT,
                    "nodePort": HTTP_NODE_PORT,
                },
                {
                    "name": "dns",
                    "protocol": "UDP",
                    "port": DNS_PORT,
                    "targetPort": DNS_TARGET_PORT,
                    "nodePort": DNS_NODE_PORT,
                },
            ],
        },
    })
}

/// The Service's one EndpointSlice with `endpoints`, both ports resolved to the pods' 8080/TCP
/// and 5353/UDP. Pods on [`NODE_NAME`].
pub fn endpoint_slice(endpoints: &[EndpointSpec]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({
                "addresses": [e.ip.to_string()],
                "conditions": {
                    "ready": e.ready,
                    "serving": e.serving,
                    "terminating": e.terminating,
                },
                "nodeName": NODE_NAME,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": NAMESPACE,
                    "name": e.pod,
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SLICE,
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [
            { "name": "http", "protocol": "TCP", "port": HTTP_TARGET_PORT },
            { "name": "dns", "protocol": "UDP", "port": DNS_TARGET_PORT },
        ],
    })
}

/// The Node [`NODE_NAME`] with `addresses` as InternalIPs (where its NodePorts answer), for an
/// agent started with `--node-name lab-node`.
pub fn node(addresses: &[Ipv4Addr]) -> Value {
    let addrs: Vec<Value> = addresses
        .iter()
        .map(|a| json!({ "type": "InternalIP", "address": a.to_string() }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": NODE_NAME },
        "status": { "addresses": addrs },
    })
}

fn kube(e: kube_testserver::Error) -> Error {
    Error::Kube(e.to_string())
}

/// Applies [`service`] (`kubectl apply`).
pub fn apply_service(server: &TestServer) -> Result<(), Error> {
    server.apply_json(service()).map(|_| ()).map_err(kube)
}

/// Applies [`endpoint_slice`] with `endpoints`, replacing the previous list (one watch event).
pub fn apply_endpoints(server: &TestServer, endpoints: &[EndpointSpec]) -> Result<(), Error> {
    server
        .apply_json(endpoint_slice(endpoints))
        .map(|_| ())
        .map_err(kube)
}

/// Applies [`node`].
pub fn apply_node(server: &TestServer, addresses: &[Ipv4Addr]) -> Result<(), Error> {
    server.apply_json(node(addresses)).map(|_| ()).map_err(kube)
}

/// The hostPort DaemonSet's UDP port on the node (DogStatsD's 8125), DNATed by the portmap
/// plugin to the pod's UDP server ([`DNS_TARGET_PORT`]).
pub const HOSTPORT_UDP: u16 = 8125;
/// The hostPort DaemonSet's TCP port on the node (an ingress controller's 80), DNATed to the
/// pod's HTTP server ([`HTTP_TARGET_PORT`]).
pub const HOSTPORT_TCP: u16 = 80;

/// Where a hostPort pod is in its life, as its Pod object says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Bound to the node, its sandbox not up: no IP yet.
    Pending,
    /// Running with its IP.
    Running,
    /// Running, its deletion requested (`deletionTimestamp`): terminating.
    Terminating,
}

/// A pod of the hostPort DaemonSet `statsd` on [`NODE_NAME`]: 8125/UDP and 80/TCP on every
/// node address (no `hostIP`), to the pod's UDP server and HTTP server.
pub fn hostport_pod(name: &str, ip: Option<Ipv4Addr>, phase: PodPhase) -> Value {
    let mut meta = json!({"name": name, "namespace": NAMESPACE, "labels": {"app": "statsd"}});
    if phase == PodPhase::Terminating {
        meta["deletionTimestamp"] = json!("2026-12-05T10:00:00Z");
    }
    let status = match (phase, ip) {
        (PodPhase::Pending, _) | (_, None) => json!({"phase": "Pending"}),
        (_, Some(ip)) => json!({
            "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": NODE_NAME,
            "containers": [{"name": "statsd", "image": "statsd", "ports": [
                {"name": "statsd", "containerPort": DNS_TARGET_PORT, "hostPort": HOSTPORT_UDP, "protocol": "UDP"},
                {"name": "http", "containerPort": HTTP_TARGET_PORT, "hostPort": HOSTPORT_TCP, "protocol": "TCP"},
            ]}],
        },
        "status": status,
    })
}

/// Applies [`hostport_pod`].
pub fn apply_hostport_pod(
    server: &TestServer,
    name: &str,
    ip: Option<Ipv4Addr>,
    phase: PodPhase,
) -> Result<(), Error> {
    server
        .apply_json(hostport_pod(name, ip, phase))
        .map(|_| ())
        .map_err(kube)
}

/// Deletes pod `name` (its graceful deletion completing: the kubelet confirmed it gone).
pub fn delete_pod(server: &TestServer, name: &str) -> Result<(), Error> {
    server
        .delete(ResourceKind::Pod, Some(NAMESPACE), name)
        .map(|_| ())
        .map_err(kube)
}

/// Deletes the Service and its EndpointSlice (`kubectl delete svc web`); absent is fine.
pub fn delete_all(server: &TestServer) {
    let _ = server.delete(ResourceKind::EndpointSlice, Some(NAMESPACE), SLICE);
    let _ = server.delete(ResourceKind::Service, Some(NAMESPACE), SERVICE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctreap::cluster::{BackendState, Proto, ServiceMap};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    #[test]
    fn objects_build_the_map_the_agent_will_see() {
        let svc: Service = serde_json::from_value(service()).expect("Service JSON");
        let a = Ipv4Addr::new(192, 0, 2, 10);
        let b = Ipv4Addr::new(192, 0, 2, 11);
        let slice: EndpointSlice = serde_json::from_value(endpoint_slice(&[
            EndpointSpec::ready("a1", a),
            EndpointSpec::draining("b1", b),
        ]))
        .expect("EndpointSlice JSON");
        let node_ip = Ipv4Addr::new(198, 18, 1, 1);
        let (map, warnings) = ServiceMap::build(&[svc], &[slice], None, &[node_ip.into()]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let http = map
            .frontend(Proto::Tcp, CLUSTER_IP.into(), HTTP_PORT)
            .expect("ClusterIP:80/TCP is a frontend");
        let (_, c) = http.backend(a.into(), HTTP_TARGET_PORT).expect("a1:8080");
        assert_eq!(c.state(), BackendState::Serving);
        let (_, c) = http.backend(b.into(), HTTP_TARGET_PORT).expect("b1:8080");
        assert_eq!(c.state(), BackendState::Draining);
        assert!(
            map.frontend(Proto::Udp, CLUSTER_IP.into(), DNS_PORT)
                .is_some()
        );
        assert!(
            map.frontend(Proto::Tcp, node_ip.into(), HTTP_NODE_PORT)
                .is_some(),
            "the NodePort on the node's address"
        );
    }
}
