//! The lab's world: a mini-cluster of one node, or two ([`WorldConfig::second_node`]), built
//! from network namespaces on the real kernel.
//!
//! ```text
//!   client ns (ctl-PID-N-cl-c1)            node ns (ctl-PID-N-node)               pod ns (ctl-PID-N-pod-a1)
//!   eth0 198.18.1.2/24  ── veth ──  c-c1 198.18.1.1/24                           eth0 192.0.2.10/24
//!   default via 198.18.1.1            ip_forward=1                                default via 192.0.2.1
//!                                     table ip ctreap-lab (DNAT, like kube-proxy)   HTTP :8080, UDP :5353
//!                                     route 198.19.0.0/16 dev br0 (Service range)
//!                                     br0 192.0.2.1/24  ── p-a1 ── veth ────────── eth0
//!                                     conntrack table: the one that matters
//!                                     n-b 198.51.100.1/30 ── veth ── n-a 198.51.100.2/30  node B (ctl-PID-N-node-b)
//!                                     route 203.0.113.0/24 via node B      br0 203.0.113.1/24, its pods
//!                                                                          default via 198.51.100.1
//! ```
//!
//! Everything lives inside namespaces named `ctl-<pid>-<n>-...` (`n` counts the worlds of one
//! process; [`cleanup::ROOT_PREFIX`]); the
//! host's own namespace gets no link, address, rule or sysctl. Addresses come only from the
//! documentation and benchmarking ranges: pods 192.0.2.0/24, clients and node 198.18.0.0/15,
//! the Service's ClusterIP [`objects::CLUSTER_IP`] (198.19.0.10).
//!
//! Pieces, each usable alone:
//! - [`check_prerequisites`]: root, `ip`, `nft`/`iptables`, `conntrack`, nf_conntrack; nothing
//!   is touched when it fails;
//! - [`World`]: the namespaces, links and pod servers; [`World::kill_pod`] kills a pod the way
//!   a deleted pod dies;
//! - [`nat`]: the Service's NAT the way kube-proxy writes it (nftables or iptables-nft), replaced
//!   atomically on every sync;
//! - [`objects`]: the Service, EndpointSlice, Node and Pod objects, applied to a kube-testserver;
//! - [`portmap`]: the CNI portmap plugin's hostPort DNAT, added and deleted with a pod's
//!   sandbox, with or without its UDP flush on ADD;
//! - [`Programmer`]: our stand-in for kube-proxy, watching the API server and rewriting the
//!   node's NAT after a sync delay; it never touches conntrack;
//! - [`seed`]: the seed's fixes as written: the preStop `conntrack -D -d $POD_IP` inside the pod,
//!   and reduced conntrack timeouts (per network namespace);
//! - [`cleanup`]: removal on drop, on panic, on SIGINT/SIGTERM ([`cleanup_on_signal`]), and of an
//!   earlier killed run's namespaces ([`sweep_stale`]).

pub mod cleanup;
pub mod nat;
pub mod objects;
pub mod pod;
pub mod portmap;
pub mod prereq;
pub mod programmer;
pub mod seed;
pub mod topology;

mod cmd;

pub use cleanup::{SweepReport, cleanup_on_signal, on_signal, sweep_stale};
pub use nat::{NatBackend, NatRules, NatTarget, ServicePortRules};
pub use objects::EndpointSpec;
pub use pod::{Kill, KillReport, PodStats};
pub use portmap::{AddFlush, HostPortMapping, Portmap};
pub use prereq::{Requirements, check_prerequisites};
pub use programmer::{Programmer, ProgrammerConfig, SyncRecord, UdpFrontends, kube_proxy_stale};
pub use seed::{ConntrackTimeouts, PreStopOutcome, SysctlChange};
pub use topology::{ClientInfo, NodeId, PodInfo, World, WorldConfig};

/// What went wrong building, driving or removing the world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A prerequisite is missing; nothing was touched. One line per missing item, each with
    /// how to get it.
    #[error("ctreap lab cannot run on this machine:\n{}", .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Missing(Vec<prereq::Missing>),
    /// An external command (`ip`, `nft`, `iptables-restore`, `sysctl`, `conntrack`) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// An external command could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Entering a namespace failed.
    #[error("network namespace: {0}")]
    Netns(#[from] ctnetlink::Error),
    /// A bad name or an exhausted address range.
    #[error("{0}")]
    Invalid(String),
    /// No such pod or client in this world.
    #[error("no {kind} named {name:?} in this lab")]
    Unknown { kind: &'static str, name: String },
    /// The API server side (kubeconfig, client, kube-testserver).
    #[error("kubernetes: {0}")]
    Kube(String),
    /// Waited too long for something (a sync, a pod's threads).
    #[error("timed out: {0}")]
    Timeout(String),
}
