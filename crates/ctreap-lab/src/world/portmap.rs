//! The CNI portmap plugin's hostPort DNAT in the node namespace: our stand-in for what the
//! plugin does on a pod sandbox's ADD and DEL, in both of its backends.
//!
//! - iptables (the plugin's default): a `CNI-HOSTPORT-DNAT` chain jumped to from `PREROUTING`
//!   and `OUTPUT` for local destinations, one rule per pod and protocol in it
//!   (`-m multiport --dports ... -j CNI-DN-<pod>`, commented with the pod), and one
//!   `CNI-DN-<pod>` chain per pod with a `DNAT --to-destination POD:containerPort` per
//!   hostPort. ADD adds the pod's chain and its jumps, DEL removes them, one `iptables` call
//!   at a time as the plugin's go-iptables does;
//! - nftables (the plugin's `backend: nftables`): the table `ip cni_hostport`, one rule per
//!   hostPort in a `hostports` chain from the `dstnat` hooks, commented with the pod. The
//!   stand-in replaces the whole table atomically on each ADD and DEL.
//!
//! [`AddFlush::Udp`] is the plugin since containernetworking/plugins#553 (2020): after writing
//! the rules of an ADD, it deletes the UDP conntrack entries whose original destination port
//! is one of the pod's UDP hostPorts, whatever their target. [`AddFlush::None`] is the plugin
//! before it, and every hostPort implementation that does not flush (or flushes the wrong
//! port). No version flushes on DEL (containernetworking/plugins#1277 is open).
//!
//! The node namespace belongs to the lab: nothing here touches the host's tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ctnetlink::{Conntrack, Filter, Netns};
use ctreap::cluster::Proto;

use super::Error;
use super::cmd;
use super::nat::{NatBackend, nft_proto};

/// The table of the plugin's nftables backend.
pub const NFT_TABLE: &str = "cni_hostport";
/// The chain the plugin's iptables backend jumps to for local destinations.
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";

/// One `ports[]` entry of a container with a `hostPort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// What ADD does to conntrack after writing the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddFlush {
    /// Deletes the UDP entries to each UDP hostPort (the plugin since 2020).
    Udp,
    /// Nothing (the plugin before; hostPort implementations without the flush).
    None,
}

/// The plugin on one node: the pods it has mapped, and how it writes them.
pub struct Portmap {
    netns: String,
    backend: NatBackend,
    flush: AddFlush,
    pods: BTreeMap<String, (Ipv4Addr, Vec<HostPortMapping>)>,
}

/// What an ADD did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddReport {
    /// UDP entries the flush deleted (0 with [`AddFlush::None`]).
    pub flushed: u64,
}

/// `CNI-DN-<pod>`: pod names are at most 13 characters, well within iptables' 28.
fn pod_chain(pod: &str) -> String {
    format!("CNI-DN-{pod}")
}

impl Portmap {
    /// The plugin's base rules in `netns` (the node namespace): the `CNI-HOSTPORT-DNAT` chain
    /// and its jumps, or an empty `cni_hostport` table.
    pub fn new(netns: &str, backend: NatBackend, flush: AddFlush) -> Result<Portmap, Error> {
        let pm = Portmap {
            netns: netns.to_string(),
            backend,
            flush,
            pods: BTreeMap::new(),
        };
        match backend {
            NatBackend::Nftables => pm.apply_nft()?,
            NatBackend::IptablesNft => {
                pm.iptables(&["-N", DNAT_CHAIN])?;
                for hook in ["PREROUTING", "OUTPUT"] {
                    pm.iptables(&[
                        "-A",
                        hook,
                        "-m",
                        "addrtype",
                        "--dst-type",
                        "LOCAL",
                        "-j",
                        DNAT_CHAIN,
                    ])?;
                }
            }
        }
        Ok(pm)
    }

    fn iptables(&self, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["-w", "5", "-t", "nat"];
        all.extend_from_slice(args);
        cmd::in_ns(&self.netns, "iptables", &all)
    }

    /// CNI ADD for `pod` at `ip`: its DNAT rules, then (with [`AddFlush::Udp`]) the flush.
    pub fn add(
        &mut self,
        pod: &str,
        ip: Ipv4Addr,
        mappings: &[HostPortMapping],
    ) -> Result<AddReport, Error> {
        if self.pods.contains_key(pod) {
            return Err(Error::Invalid(format!("portmap: {pod} is mapped already")));
        }
        self.pods.insert(pod.to_string(), (ip, mappings.to_vec()));
        match self.backend {
            NatBackend::Nftables => self.apply_nft()?,
            NatBackend::IptablesNft => {
                let chain = pod_chain(pod);
                self.iptables(&["-N", &chain])?;
                for m in mappings {
                    let (l4, dport) = (nft_proto(m.proto), m.host_port.to_string());
                    let to = format!("{ip}:{}", m.container_port);
                    self.iptables(&[
                        "-A",
                        &chain,
                        "-p",
                        l4,
                        "-m",
                        l4,
                        "--dport",
                        &dport,
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &to,
                    ])?;
                }
                for rule in jump_rules(pod, mappings) {
                    let mut args = vec!["-A", DNAT_CHAIN];
                    args.extend(rule.iter().map(String::as_str));
                    self.iptables(&args)?;
                }
            }
        }
        let mut report = AddReport::default();
        if self.flush == AddFlush::Udp {
            let mut ct = Conntrack::open_in(Some(&Netns::named(&self.netns)))?;
            for m in mappings.iter().filter(|m| m.proto == Proto::Udp) {
                let r = ct.flush(&Filter {
                    family: Some(libc::AF_INET as u8),
                    proto: Some(libc::IPPROTO_UDP as u8),
                    orig_dst_port: Some(m.host_port),
                    ..Filter::default()
                })?;
                report.flushed += r.deleted;
            }
        }
        Ok(report)
    }

    /// CNI DEL for `pod`: its rules go; conntrack is left as it is (no version flushes on
    /// DEL). Unknown pods are fine, as DEL must be idempotent.
    pub fn del(&mut self, pod: &str) -> Result<(), Error> {
        let Some((_, mappings)) = self.pods.remove(pod) else {
            return Ok(());
        };
        match self.backend {
            NatBackend::Nftables => self.apply_nft()?,
            NatBackend::IptablesNft => {
                for rule in jump_rules(pod, &mappings) {
                    let mut args = vec!["-D", DNAT_CHAIN];
                    args.extend(rule.iter().map(String::as_str));
                    self.iptables(&args)?;
                }
                let chain = pod_chain(pod);
                self.iptables(&["-F", &chain])?;
                self.iptables(&["-X", &chain])?;
            }
        }
        Ok(())
    }

    /// The `cni_hostport` table for the pods mapped now.
    pub fn render_nft(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "add table ip {NFT_TABLE}");
        let _ = writeln!(s, "delete table ip {NFT_TABLE}");
        let _ = writeln!(s, "table ip {NFT_TABLE} {{");
        let _ = writeln!(s, "\tchain hostports {{");
        for (pod, (ip, mappings)) in &self.pods {
            for m in mappings {
                let _ = writeln!(
                    s,
                    "\t\t{} dport {} dnat to {ip}:{} comment \"{pod}\"",
                    nft_proto(m.proto),
                    m.host_port,
                    m.container_port
                );
            }
        }
        let _ = writeln!(s, "\t}}");
        for (hook, prio) in [("prerouting", "dstnat"), ("output", "-100")] {
            let _ = writeln!(s, "\tchain {hook} {{");
            let _ = writeln!(
                s,
                "\t\ttype nat hook {hook} priority {prio}; policy accept;"
            );
            let _ = writeln!(s, "\t\tfib daddr type local jump hostports");
            let _ = writeln!(s, "\t}}");
        }
        let _ = writeln!(s, "}}");
        s
    }

    fn apply_nft(&self) -> Result<(), Error> {
        cmd::in_ns_with_input(&self.netns, "nft", &["-f", "-"], Some(&self.render_nft()))?;
        Ok(())
    }
}

/// The pod's rules in `CNI-HOSTPORT-DNAT`: one per protocol, as the plugin writes them.
fn jump_rules(pod: &str, mappings: &[HostPortMapping]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
        let ports: Vec<String> = mappings
            .iter()
            .filter(|m| m.proto == proto)
            .map(|m| m.host_port.to_string())
            .collect();
        if ports.is_empty() {
            continue;
        }
        let comment = format!("dnat name: \"lab\" id: \"{pod}\"");
        out.push(
            [
                "-p",
                nft_proto(proto),
                "-m",
                "comment",
                "--comment",
                &comment,
                "-m",
                "multiport",
                "--dports",
                &ports.join(","),
                "-j",
                &pod_chain(pod),
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATSD: [HostPortMapping; 2] = [
        HostPortMapping {
            host_port: 8125,
            container_port: 5353,
            proto: Proto::Udp,
        },
        HostPortMapping {
            host_port: 8080,
            container_port: 8080,
            proto: Proto::Tcp,
        },
    ];

    #[test]
    fn rules_name_the_pod_and_map_host_to_container_ports() {
        let mut pm = Portmap {
            netns: "unused".into(),
            backend: NatBackend::Nftables,
            flush: AddFlush::None,
            pods: BTreeMap::new(),
        };
        pm.pods.insert(
            "hp-old".into(),
            (Ipv4Addr::new(192, 0, 2, 10), STATSD.to_vec()),
        );
        let nft = pm.render_nft();
        assert!(
            nft.contains("udp dport 8125 dnat to 192.0.2.10:5353 comment \"hp-old\""),
            "{nft}"
        );
        assert!(
            nft.contains("tcp dport 8080 dnat to 192.0.2.10:8080"),
            "{nft}"
        );
        assert!(nft.contains("fib daddr type local jump hostports"), "{nft}");
        let rules = jump_rules("hp-old", &STATSD);
        assert_eq!(rules.len(), 2, "one rule per protocol");
        assert_eq!(
            rules[1].join(" ").split(" -j ").nth(1),
            Some("CNI-DN-hp-old")
        );
        assert!(rules[1].join(" ").contains("-p udp"));
    }
}
