//! hostPort frontends: the second door of the outage (issue 21).
//!
//! A container port with a `hostPort` is reached through the CNI portmap plugin's DNAT (node
//! address:hostPort -> pod IP:containerPort; chains `CNI-HOSTPORT-DNAT` / `CNI-DN-*`, or the
//! nftables table `cni_hostport`), outside kube-proxy. When the pod is replaced (a DaemonSet
//! rolls), flows that keep their 5-tuple stay pinned to the old pod's IP: the plugin flushes
//! UDP entries when a pod is added, not when it is deleted.
//!
//! The model holds this node's Pods (watched with `fieldSelector spec.nodeName=NODE`) in a
//! compact form, and judges each pod's hostPorts as a Service of its own, `pod/NAME` in the
//! pod's namespace (no Service name has a `/`): its ports are the hostPorts, their frontends
//! `hostIP` (or every node address of the pod's family when it is unset or unspecified), their
//! backends the pod's IPs at the containerPort. The old and the new pod of a DaemonSet publish
//! the same frontend, as two Services may share an external IP; when the old pod goes, its
//! backend is gone from the frontend and its flows go, through the same planner, settle windows
//! and breaker as every Service's.
//!
//! A pod's backend conditions follow what keeps its DNAT rule: present while the pod has an IP
//! and has not finished (portmap adds the rule with the sandbox, whatever the readiness; ready
//! only reports the Ready condition); draining while it is terminating and still running; not
//! serving once it has finished (Succeeded, Failed).
//!
//! A hostNetwork pod has no hostPorts here: no CNI plugin runs for it, so nothing DNATs to it.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use super::backends::Backends;
use super::build::port_u16;
use super::few::Few;
use super::intern::{Name, intern};
use super::model::{
    Backend, Conditions, Frontend, FrontendKey, FrontendKind, IGNORE_ANNOTATION, PortEntry, Proto,
    ServiceName,
};

/// The prefix of the Service name a pod's hostPorts are judged as.
pub const POD_PREFIX: &str = "pod/";

/// One hostPort of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HostPort {
    /// `ports[].hostIP`; `None` when unset or unspecified (every node address).
    pub(crate) host_ip: Option<IpAddr>,
    pub(crate) host_port: u16,
    pub(crate) container_port: u16,
    pub(crate) proto: Proto,
}

/// What the model keeps of a Pod of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodLite {
    pub(crate) namespace: Option<Name>,
    pub(crate) name: Option<Name>,
    /// `status.podIPs` (or `status.podIP`).
    pub(crate) ips: Few<IpAddr>,
    pub(crate) host_ports: Few<HostPort>,
    pub(crate) conditions: Conditions,
    pub(crate) ignored: bool,
}

impl From<Pod> for PodLite {
    fn from(p: Pod) -> PodLite {
        let meta = &p.metadata;
        let mut host_ports = Vec::new();
        // A hostNetwork pod's ports are the node's own sockets: no CNI plugin runs for it, so
        // no DNAT exists (the API defaults its hostPorts to its containerPorts all the same).
        // Judged as a hostPort, every UDP flow to another node address would look untranslated.
        if let Some(spec) = p.spec.as_ref().filter(|s| s.host_network != Some(true)) {
            for c in spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
            {
                for port in c.ports.iter().flatten() {
                    let (Some(host_port), Some(container_port)) = (
                        port.host_port.and_then(port_u16),
                        port_u16(port.container_port),
                    ) else {
                        continue;
                    };
                    let Some(proto) = Proto::from_k8s(port.protocol.as_deref()) else {
                        continue;
                    };
                    let host_ip = port
                        .host_ip
                        .as_deref()
                        .and_then(|s| s.parse::<IpAddr>().ok())
                        .filter(|ip| !ip.is_unspecified());
                    host_ports.push(HostPort {
                        host_ip,
                        host_port,
                        container_port,
                        proto,
                    });
                }
            }
        }
        host_ports.sort_by_key(|h| (h.host_port, h.proto as u8, h.host_ip));
        host_ports.dedup();
        let status = p.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse().ok())
        {
            ips.push(ip);
        }
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        let finished = matches!(phase, "Succeeded" | "Failed");
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let conditions = Conditions {
            ready: ready && !finished,
            serving: !finished,
            terminating: meta.deletion_timestamp.is_some(),
        };
        let ignored = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(IGNORE_ANNOTATION))
            .is_some_and(|v| v == "true");
        PodLite {
            namespace: meta.namespace.as_deref().map(intern),
            name: meta.name.as_deref().map(intern),
            ips: Few::from(ips),
            host_ports: Few::from(host_ports),
            conditions,
            ignored,
        }
    }
}

impl PodLite {
    /// The Service name its hostPorts are judged as (`pod/NAME` in its namespace).
    pub(crate) fn service_name(ns: &Name, name: &Name) -> ServiceName {
        ServiceName {
            namespace: ns.clone(),
            name: intern(&format!("{POD_PREFIX}{name}")),
        }
    }

    /// Its hostPorts as service ports: frontends on `host_ip`, or on every node address of a
    /// family the pod has an IP of; backends its IPs at the containerPort.
    pub(crate) fn ports(&self, node_addrs: &[IpAddr]) -> Vec<PortEntry> {
        let mut out = Vec::new();
        for h in self.host_ports.iter() {
            let fronts: Vec<IpAddr> = match h.host_ip {
                Some(ip) => vec![ip],
                None => node_addrs
                    .iter()
                    .copied()
                    .filter(|a| self.ips.iter().any(|p| p.is_ipv4() == a.is_ipv4()))
                    .collect(),
            };
            let mut backends: Vec<Backend> = self
                .ips
                .iter()
                .map(|&ip| Backend {
                    ip,
                    port: h.container_port,
                    conditions: self.conditions,
                })
                .collect();
            backends.sort_by_key(|b| (b.ip, b.port));
            backends.dedup_by_key(|b| (b.ip, b.port));
            let frontends: Vec<Frontend> = fronts
                .into_iter()
                .map(|ip| Frontend {
                    key: FrontendKey {
                        proto: h.proto,
                        ip,
                        port: h.host_port,
                    },
                    kind: FrontendKind::HostPort,
                })
                .collect();
            if frontends.is_empty() {
                continue;
            }
            out.push(PortEntry {
                service: 0,
                name: intern(&format!("{}/{}", h.host_port, h.proto)),
                proto: h.proto,
                port: h.host_port,
                node_port: None,
                frontends: Few::from(frontends),
                backends: Backends::from_sorted(&backends),
                ignored: self.ignored,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodLite {
        PodLite::from(serde_json::from_value::<Pod>(v).expect("Pod JSON"))
    }

    fn statsd(extra_status: serde_json::Value, deleting: bool) -> serde_json::Value {
        let mut meta = json!({"namespace": "monitoring", "name": "statsd-x7k2p"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-12-05T10:00:00Z");
        }
        let mut status = json!({"phase": "Running", "podIP": "10.244.1.7",
                                "podIPs": [{"ip": "10.244.1.7"}],
                                "conditions": [{"type": "Ready", "status": "True"}]});
        if let Some(o) = extra_status.as_object() {
            for (k, v) in o {
                status[k] = v.clone();
            }
        }
        json!({"metadata": meta,
               "spec": {"nodeName": "node-1", "containers": [{"name": "statsd", "ports": [
                   {"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"},
                   {"containerPort": 9102, "protocol": "TCP"},
                   {"containerPort": 8126, "hostPort": 18126, "hostIP": "192.0.2.10"}]}]},
               "status": status})
    }

    #[test]
    fn host_ports_become_frontends_on_the_node_addresses_or_the_host_ip() {
        let p = pod(statsd(json!({}), false));
        let node: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "192.0.2.11".parse().unwrap(),
            "fd00::10".parse().unwrap(),
        ];
        let ports = p.ports(&node);
        let shown: Vec<String> = ports
            .iter()
            .map(|pe| {
                let fes: Vec<String> = pe.frontends.iter().map(|f| f.key.to_string()).collect();
                let bes: Vec<String> = pe.backends.iter().map(|b| b.addr().to_string()).collect();
                format!("{} {} -> {}", pe.name, fes.join(","), bes.join(","))
            })
            .collect();
        assert_eq!(
            shown,
            [
                "8125/UDP 192.0.2.10:8125/UDP,192.0.2.11:8125/UDP -> 10.244.1.7:8125",
                "18126/TCP 192.0.2.10:18126/TCP -> 10.244.1.7:8126",
            ],
            "no containerPort without a hostPort; an IPv4 pod gets no IPv6 frontend"
        );
        assert_eq!(
            PodLite::service_name(p.namespace.as_ref().unwrap(), p.name.as_ref().unwrap())
                .to_string(),
            "monitoring/pod/statsd-x7k2p"
        );
    }

    #[test]
    fn a_host_network_pod_has_no_host_ports() {
        let mut v = statsd(json!({}), false);
        v["spec"]["hostNetwork"] = json!(true);
        v["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(8125);
        let p = pod(v);
        assert!(p.host_ports.is_empty(), "{:?}", p.host_ports);
        // The control: the same pod without hostNetwork has its two hostPorts.
        assert_eq!(pod(statsd(json!({}), false)).host_ports.len(), 2);
    }

    #[test]
    fn conditions_follow_what_keeps_the_dnat_rule() {
        let running = pod(statsd(json!({}), false)).conditions;
        assert_eq!(running, Conditions::READY);
        let draining = pod(statsd(json!({}), true)).conditions;
        assert_eq!(draining.state(), crate::cluster::BackendState::Draining);
        let not_ready = pod(statsd(
            json!({"conditions": [{"type": "Ready", "status": "False"}]}),
            false,
        ));
        assert_eq!(
            not_ready.conditions.state(),
            crate::cluster::BackendState::Serving,
            "portmap's rule does not follow readiness"
        );
        let done = pod(statsd(json!({"phase": "Failed"}), true)).conditions;
        assert_eq!(done.state(), crate::cluster::BackendState::NotServing);
    }
}
