//! The Service's NAT in the node namespace, written the way kube-proxy writes it.
//!
//! Two backends, as kube-proxy has two Linux modes:
//! - [`NatBackend::Nftables`]: table `ip ctreap-lab` (kube-proxy's `--proxy-mode nftables` uses
//!   `ip kube-proxy`): a `services` chain matched from the `dstnat` prerouting hook, one
//!   `svc-*` chain per service port choosing an endpoint with
//!   `numgen random mod N vmap { 0 : goto sep-..., ... }`, one `sep-*` chain per endpoint with
//!   its `dnat to`;
//! - [`NatBackend::IptablesNft`]: `iptables-restore` of `KUBE-SERVICES`, `KUBE-SVC-*` and
//!   `KUBE-SEP-*` chains with `-m statistic --mode random --probability 1/(N-i)`, exactly the
//!   shape of kube-proxy's iptables mode (iptables-nft turns it into nf_tables rules).
//!
//! Frontends: ClusterIP:port from the `dstnat` prerouting hook, and NodePort on every local
//! address (`fib daddr type local` / `-m addrtype --dst-type LOCAL`, as kube-proxy does when
//! `nodePortAddresses` is unset). A service port without endpoints rejects new connections
//! (kube-proxy's `no-endpoint-services` / `KUBE-SERVICES` REJECT in the filter table).
//!
//! Source NAT, explicitly: ClusterIP traffic is *not* masqueraded. Clients (198.18.0.0/15) and
//! pods (192.0.2.0/24) are in different subnets routed by the node, and each pod's default
//! route is the node, so replies come back through the node's conntrack entry without SNAT;
//! kube-proxy likewise masquerades ClusterIP traffic only from outside the cluster CIDR with
//! `--masquerade-all` or a `clusterCIDR` it does not know here. NodePort traffic *is* marked
//! and masqueraded (`masquerade_node_ports`, default true), as kube-proxy does for
//! `externalTrafficPolicy: Cluster`; the entry's reply source is still the pod either way.
//!
//! Every apply replaces the whole rule set in one transaction: `nft -f` with
//! `add table` + `delete table` + the new table, or one `iptables-restore` of the `nat` and
//! `filter` tables. Packets never see half a rule set. Nothing here touches conntrack.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;

use ctreap::cluster::Proto;

use super::Error;
use super::cmd;

/// The nftables table the lab owns in the node namespace.
pub const NFT_TABLE: &str = "ctreap-lab";

/// The packet mark bit for "masquerade me" (kube-proxy's `KUBE-MARK-MASQ` uses `0x4000`).
pub const MASQ_MARK: u32 = 0x4000;

/// How the node's NAT is programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatBackend {
    /// `nft -f`, kube-proxy's nftables mode.
    #[default]
    Nftables,
    /// `iptables-restore` on the nf_tables backend, kube-proxy's iptables mode.
    IptablesNft,
}

impl NatBackend {
    pub const fn as_str(self) -> &'static str {
        match self {
            NatBackend::Nftables => "nftables",
            NatBackend::IptablesNft => "iptables-nft",
        }
    }
}

impl std::fmt::Display for NatBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NatBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nftables" | "nft" => Ok(NatBackend::Nftables),
            "iptables-nft" | "iptables" => Ok(NatBackend::IptablesNft),
            other => Err(format!(
                "unknown NAT backend {other:?} (expected nftables or iptables-nft)"
            )),
        }
    }
}

/// The NAT of one service port: its frontends and the endpoints traffic is spread over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePortRules {
    /// `namespace/name` of the Service.
    pub service: String,
    /// `spec.ports[].name` (may be empty).
    pub port_name: String,
    #[serde(serialize_with = "proto_k8s")]
    pub proto: Proto,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// The endpoints new flows are DNATed to, chosen at random; empty means reject.
    pub endpoints: Vec<SocketAddrV4>,
}

/// The node's whole NAT rule set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct NatRules {
    /// Sorted by (service, port name, protocol) for stable output.
    pub ports: Vec<ServicePortRules>,
    /// Masquerade NodePort traffic (kube-proxy's `externalTrafficPolicy: Cluster`).
    pub masquerade_node_ports: bool,
}

impl Default for NatRules {
    fn default() -> Self {
        NatRules {
            ports: Vec::new(),
            masquerade_node_ports: true,
        }
    }
}

impl NatRules {
    /// The endpoints of the port `(proto, cluster_ip, port)`, if it is programmed.
    pub fn endpoints_of(&self, proto: Proto, port: u16) -> Option<&[SocketAddrV4]> {
        self.ports
            .iter()
            .find(|p| p.proto == proto && p.port == port)
            .map(|p| p.endpoints.as_slice())
    }

    /// The text `nft -f -` reads to replace the lab table atomically.
    pub fn render_nft(&self) -> String {
        let mut s = String::new();
        // `add` first so that `delete` never fails on the first sync; the three statements
        // are one transaction.
        let _ = writeln!(s, "add table ip {NFT_TABLE}");
        let _ = writeln!(s, "delete table ip {NFT_TABLE}");
        let _ = writeln!(s, "table ip {NFT_TABLE} {{");
        // Reject for ports without endpoints, from the filter hooks (reject is not allowed in
        // a nat chain).
        let _ = writeln!(s, "\tchain reject-chain {{");
        let _ = writeln!(s, "\t\treject");
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "\tchain endpoints-check {{");
        for p in self.ports.iter().filter(|p| p.endpoints.is_empty()) {
            let l4 = nft_proto(p.proto);
            let _ = writeln!(
                s,
                "\t\tip daddr {} {l4} dport {} goto reject-chain",
                p.cluster_ip, p.port
            );
            if let Some(np) = p.node_port {
                let _ = writeln!(
                    s,
                    "\t\tfib daddr type local {l4} dport {np} goto reject-chain"
                );
            }
        }
        let _ = writeln!(s, "\t}}");
        for (hook, prio) in [("forward", "-10"), ("input", "-10"), ("output", "-10")] {
            let _ = writeln!(s, "\tchain filter-{hook} {{");
            let _ = writeln!(
                s,
                "\t\ttype filter hook {hook} priority {prio}; policy accept;"
            );
            let _ = writeln!(s, "\t\tct state new jump endpoints-check");
            let _ = writeln!(s, "\t}}");
        }
        let _ = writeln!(s, "\tchain services {{");
        for (i, p) in self.ports.iter().enumerate() {
            if p.endpoints.is_empty() {
                continue;
            }
            let l4 = nft_proto(p.proto);
            let _ = writeln!(
                s,
                "\t\tip daddr {} {l4} dport {} goto svc-{i}",
                p.cluster_ip, p.port
            );
        }
        // NodePorts last, as kube-proxy's `nodeports` chain is jumped to after the ClusterIPs.
        for (i, p) in self.ports.iter().enumerate() {
            let (Some(np), false) = (p.node_port, p.endpoints.is_empty()) else {
                continue;
            };
            let l4 = nft_proto(p.proto);
            if self.masquerade_node_ports {
                let _ = writeln!(
                    s,
                    "\t\tfib daddr type local {l4} dport {np} meta mark set mark or {MASQ_MARK:#x} goto svc-{i}"
                );
            } else {
                let _ = writeln!(s, "\t\tfib daddr type local {l4} dport {np} goto svc-{i}");
            }
        }
        let _ = writeln!(s, "\t}}");
        for (i, p) in self.ports.iter().enumerate() {
            if p.endpoints.is_empty() {
                continue;
            }
            let _ = writeln!(s, "\tchain svc-{i} {{");
            let _ = writeln!(s, "\t\tcomment \"{} {}\"", p.service, p.port_name);
            let arms: Vec<String> = (0..p.endpoints.len())
                .map(|j| format!("{j} : goto sep-{i}-{j}"))
                .collect();
            let _ = writeln!(
                s,
                "\t\tnumgen random mod {} vmap {{ {} }}",
                p.endpoints.len(),
                arms.join(", ")
            );
            let _ = writeln!(s, "\t}}");
            for (j, ep) in p.endpoints.iter().enumerate() {
                let _ = writeln!(s, "\tchain sep-{i}-{j} {{");
                let _ = writeln!(s, "\t\tmeta l4proto {} dnat to {ep}", nft_proto(p.proto));
                let _ = writeln!(s, "\t}}");
            }
        }
        let _ = writeln!(s, "\tchain nat-prerouting {{");
        let _ = writeln!(
            s,
            "\t\ttype nat hook prerouting priority dstnat; policy accept;"
        );
        let _ = writeln!(s, "\t\tjump services");
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "\tchain nat-output {{");
        let _ = writeln!(s, "\t\ttype nat hook output priority -100; policy accept;");
        let _ = writeln!(s, "\t\tjump services");
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "\tchain nat-postrouting {{");
        let _ = writeln!(
            s,
            "\t\ttype nat hook postrouting priority srcnat; policy accept;"
        );
        let _ = writeln!(
            s,
            "\t\tmeta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade"
        );
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
        s
    }

    /// The text `iptables-restore` reads to replace the node's `nat` and `filter` tables
    /// (the node namespace belongs to the lab, so whole tables are ours).
    pub fn render_iptables(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "*filter");
        let _ = writeln!(s, ":INPUT ACCEPT [0:0]");
        let _ = writeln!(s, ":FORWARD ACCEPT [0:0]");
        let _ = writeln!(s, ":OUTPUT ACCEPT [0:0]");
        let _ = writeln!(s, ":KUBE-SERVICES - [0:0]");
        for chain in ["INPUT", "FORWARD", "OUTPUT"] {
            let _ = writeln!(s, "-A {chain} -m conntrack --ctstate NEW -j KUBE-SERVICES");
        }
        for p in self.ports.iter().filter(|p| p.endpoints.is_empty()) {
            let l4 = ipt_proto(p.proto);
            let _ = writeln!(
                s,
                "-A KUBE-SERVICES -d {}/32 -p {l4} -m {l4} --dport {} -m comment --comment \"{} {} has no endpoints\" -j REJECT",
                p.cluster_ip, p.port, p.service, p.port_name
            );
            if let Some(np) = p.node_port {
                let _ = writeln!(
                    s,
                    "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -p {l4} -m {l4} --dport {np} -j REJECT"
                );
            }
        }
        let _ = writeln!(s, "COMMIT");
        let _ = writeln!(s, "*nat");
        let _ = writeln!(s, ":PREROUTING ACCEPT [0:0]");
        let _ = writeln!(s, ":INPUT ACCEPT [0:0]");
        let _ = writeln!(s, ":OUTPUT ACCEPT [0:0]");
        let _ = writeln!(s, ":POSTROUTING ACCEPT [0:0]");
        let _ = writeln!(s, ":KUBE-SERVICES - [0:0]");
        let _ = writeln!(s, ":KUBE-NODEPORTS - [0:0]");
        let _ = writeln!(s, ":KUBE-MARK-MASQ - [0:0]");
        let _ = writeln!(s, ":KUBE-POSTROUTING - [0:0]");
        for (i, p) in self.ports.iter().enumerate() {
            if p.endpoints.is_empty() {
                continue;
            }
            let _ = writeln!(s, ":{} - [0:0]", svc_chain(i));
            for j in 0..p.endpoints.len() {
                let _ = writeln!(s, ":{} - [0:0]", sep_chain(i, j));
            }
        }
        let _ = writeln!(s, "-A PREROUTING -j KUBE-SERVICES");
        let _ = writeln!(s, "-A OUTPUT -j KUBE-SERVICES");
        let _ = writeln!(s, "-A POSTROUTING -j KUBE-POSTROUTING");
        let _ = writeln!(
            s,
            "-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK:#x}/{MASQ_MARK:#x}"
        );
        let _ = writeln!(
            s,
            "-A KUBE-POSTROUTING -m mark --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j MASQUERADE"
        );
        for (i, p) in self.ports.iter().enumerate() {
            if p.endpoints.is_empty() {
                continue;
            }
            let l4 = ipt_proto(p.proto);
            let _ = writeln!(
                s,
                "-A KUBE-SERVICES -d {}/32 -p {l4} -m {l4} --dport {} -m comment --comment \"{} {} cluster IP\" -j {}",
                p.cluster_ip,
                p.port,
                p.service,
                p.port_name,
                svc_chain(i)
            );
            if let Some(np) = p.node_port {
                if self.masquerade_node_ports {
                    let _ = writeln!(
                        s,
                        "-A KUBE-NODEPORTS -p {l4} -m {l4} --dport {np} -j KUBE-MARK-MASQ"
                    );
                }
                let _ = writeln!(
                    s,
                    "-A KUBE-NODEPORTS -p {l4} -m {l4} --dport {np} -j {}",
                    svc_chain(i)
                );
            }
            let n = p.endpoints.len();
            for (j, ep) in p.endpoints.iter().enumerate() {
                let rest = n - j;
                if rest > 1 {
                    let _ = writeln!(
                        s,
                        "-A {} -m statistic --mode random --probability {:.10} -j {}",
                        svc_chain(i),
                        1.0 / rest as f64,
                        sep_chain(i, j)
                    );
                } else {
                    let _ = writeln!(s, "-A {} -j {}", svc_chain(i), sep_chain(i, j));
                }
                let _ = writeln!(
                    s,
                    "-A {} -p {l4} -m {l4} -j DNAT --to-destination {ep}",
                    sep_chain(i, j)
                );
            }
        }
        // As kube-proxy: NodePorts last, on local destinations only.
        let _ = writeln!(
            s,
            "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
        );
        let _ = writeln!(s, "COMMIT");
        s
    }
}

/// `TCP`, `UDP`, `SCTP` in JSON, as Kubernetes spells them.
fn proto_k8s<S: serde::Serializer>(p: &Proto, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_k8s())
}

/// The protocol's name in nft and iptables rules (`tcp`, `udp`, `sctp`); the portmap
/// stand-in writes it too.
pub(super) fn nft_proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Sctp => "sctp",
    }
}

fn ipt_proto(p: Proto) -> &'static str {
    nft_proto(p)
}

fn svc_chain(i: usize) -> String {
    format!("KUBE-SVC-LAB{i}")
}

fn sep_chain(i: usize, j: usize) -> String {
    format!("KUBE-SEP-LAB{i}-{j}")
}

/// Where the NAT lives: the node namespace and the backend. Cheap to clone, `Send`; the
/// [`Programmer`](super::Programmer) holds one while the [`World`](super::World) keeps changing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatTarget {
    /// The node namespace's name (`ip netns` name).
    pub netns: String,
    pub backend: NatBackend,
}

impl NatTarget {
    /// Replaces the node's whole rule set with `rules`, atomically (`ip netns exec NODE nft -f -`
    /// or `ip netns exec NODE iptables-restore`).
    pub fn apply(&self, rules: &NatRules) -> Result<(), Error> {
        match self.backend {
            NatBackend::Nftables => {
                cmd::in_ns_with_input(&self.netns, "nft", &["-f", "-"], Some(&rules.render_nft()))?;
            }
            NatBackend::IptablesNft => {
                cmd::in_ns_with_input(
                    &self.netns,
                    "iptables-restore",
                    &["-w", "5"],
                    Some(&rules.render_iptables()),
                )?;
            }
        }
        Ok(())
    }

    /// The rule set as the kernel holds it (`nft list ruleset` in the node namespace; both
    /// backends end up in nf_tables), for reports and debugging.
    pub fn list(&self) -> Result<String, Error> {
        cmd::in_ns(&self.netns, "nft", &["list", "ruleset"])
            .or_else(|_| cmd::in_ns(&self.netns, "iptables-save", &[]))
    }
}
