//! `ctreap doctor`: is this node exposed to the stale-NAT outage, and can ctreap act on it?
//! Every check prints OK, WARN or FAIL with its reason; the exit code is 1 when any FAILs.

use std::fmt;

use anyhow::Result;
use clap::Args;
use ctnetlink::Conntrack;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};

use crate::args::{KubeArgs, NetnsArg};
use crate::cluster::kube_client;

#[derive(Debug, Args)]
pub struct DoctorCmd {
    /// Check only the node, not the API server.
    #[arg(long)]
    pub skip_api: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub ns: NetnsArg,
    /// Where the BPF filesystem is mounted (Cilium's and Calico's eBPF maps are pinned there).
    #[arg(long, default_value = "/sys/fs/bpf", hide = true)]
    pub bpffs: std::path::PathBuf,
}

/// What each service proxy leaves on a node, as found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProxyEvidence {
    /// `table ip kube-proxy` (or ip6) in nftables: kube-proxy's nftables mode.
    pub nft_kube_proxy: bool,
    /// The `KUBE-SERVICES` chain in iptables' nat table: kube-proxy's iptables mode.
    pub iptables_kube_services: bool,
    /// IPVS virtual servers in /proc/net/ip_vs: kube-proxy's ipvs mode.
    pub ipvs_services: usize,
    /// Cilium's pinned maps (`tc/globals/cilium_*`).
    pub cilium_bpf: bool,
    /// Calico's eBPF data plane (`calico/` pinned maps).
    pub calico_bpf: bool,
}

/// Which service proxy programs the node, and whether ctreap applies there
/// (docs/compatibility.md).
pub fn proxy_check(e: &ProxyEvidence) -> Check {
    let mut netfilter = Vec::new();
    if e.nft_kube_proxy {
        netfilter.push("kube-proxy nftables mode (table ip kube-proxy)".to_string());
    }
    if e.iptables_kube_services {
        netfilter.push("kube-proxy iptables mode (nat KUBE-SERVICES)".to_string());
    }
    if e.ipvs_services > 0 {
        netfilter.push(format!(
            "kube-proxy ipvs mode ({} IPVS virtual servers)",
            e.ipvs_services
        ));
    }
    let mut ebpf = Vec::new();
    if e.cilium_bpf {
        ebpf.push("Cilium eBPF");
    }
    if e.calico_bpf {
        ebpf.push("Calico eBPF");
    }
    match (netfilter.is_empty(), ebpf.is_empty()) {
        (false, _) => check(
            Level::Ok,
            "service proxy",
            format!(
                "{}: Service NAT is netfilter DNAT, remembered in conntrack; ctreap applies{}",
                netfilter.join(", "),
                if ebpf.is_empty() {
                    String::new()
                } else {
                    format!(" (also found: {} maps)", ebpf.join(", "))
                }
            ),
        ),
        (true, false) => check(
            Level::Warn,
            "service proxy",
            format!(
                "{} kube-proxy replacement and no kube-proxy rules: Services are translated in BPF with their own connection tracking, so ctreap does not apply on this node (docs/compatibility.md)",
                ebpf.join(", ")
            ),
        ),
        (true, true) => check(
            Level::Warn,
            "service proxy",
            "none found (no kube-proxy nftables table, iptables KUBE-SERVICES chain or IPVS virtual servers; no Cilium or Calico eBPF maps): is this a node's network namespace (--netns)?",
        ),
    }
}

/// The CNI portmap plugin's hostPort DNAT on the node, as found: rules in the iptables chain
/// `CNI-HOSTPORT-DNAT` (its iptables backend), or its nftables table `cni_hostport`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PortmapEvidence {
    /// `-A CNI-HOSTPORT-DNAT` rules in the nat table (`None`: no such chain).
    pub iptables_rules: Option<usize>,
    /// The nftables table `cni_hostport` exists (any family).
    pub nft_table: bool,
}

/// Is there hostPort DNAT outside kube-proxy on this node, and does ctreap judge it?
pub fn hostport_check(e: &PortmapEvidence, hostports: bool) -> Check {
    let mut found = Vec::new();
    if let Some(n) = e.iptables_rules {
        let rules = if n == 1 { "rule" } else { "rules" };
        found.push(format!("iptables chain CNI-HOSTPORT-DNAT, {n} {rules}"));
    }
    if e.nft_table {
        found.push("nftables table cni_hostport".to_string());
    }
    match (found.is_empty(), hostports) {
        (true, _) => check(
            Level::Ok,
            "hostPort DNAT",
            "no CNI portmap rules (no hostPort pod on this node, or a CNI that does not use portmap): no hostPort flows to judge",
        ),
        (false, true) => check(
            Level::Ok,
            "hostPort DNAT",
            format!(
                "CNI portmap rules found ({}): no proxy or CNI deletes these flows when the pod goes; ctreap judges them (--hostports)",
                found.join(", ")
            ),
        ),
        (false, false) => check(
            Level::Warn,
            "hostPort DNAT",
            format!(
                "CNI portmap rules found ({}) and --hostports=false: flows to a replaced hostPort pod stay pinned to its old IP",
                found.join(", ")
            ),
        ),
    }
}

fn portmap_evidence(ns: &NetnsArg) -> PortmapEvidence {
    let out = |cmd: &[&str]| run_in(ns, cmd).filter(|o| o.status.success());
    let iptables_rules = out(&[
        "iptables",
        "-w",
        "5",
        "-t",
        "nat",
        "-S",
        "CNI-HOSTPORT-DNAT",
    ])
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("-A CNI-HOSTPORT-DNAT"))
            .count()
    });
    let nft_table = out(&["nft", "list", "tables"]).is_some_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim_end().ends_with(" cni_hostport"))
    });
    PortmapEvidence {
        iptables_rules,
        nft_table,
    }
}

/// Runs `cmd` in the network namespace (`nsenter --net`), or here; `None` if it could not run.
fn run_in(ns: &NetnsArg, cmd: &[&str]) -> Option<std::process::Output> {
    let mut c = match &ns.netns {
        Some(n) => {
            let path = if n.contains('/') {
                n.clone()
            } else {
                format!("/run/netns/{n}")
            };
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net={path}")).args(cmd);
            c
        }
        None => {
            let mut c = std::process::Command::new(cmd[0]);
            c.args(&cmd[1..]);
            c
        }
    };
    c.stdin(std::process::Stdio::null()).output().ok()
}

fn proxy_evidence(ns: &NetnsArg, bpffs: &std::path::Path) -> ProxyEvidence {
    let ok = |cmd: &[&str]| run_in(ns, cmd).is_some_and(|o| o.status.success());
    let ipvs_services = run_in(ns, &["cat", "/proc/net/ip_vs"])
        .filter(|o| o.status.success())
        .map_or(0, |o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| {
                    ["TCP ", "UDP ", "SCTP ", "FWM "]
                        .iter()
                        .any(|p| l.starts_with(p))
                })
                .count()
        });
    let cilium_bpf = std::fs::read_dir(bpffs.join("tc/globals")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("cilium_"))
    });
    ProxyEvidence {
        nft_kube_proxy: ok(&["nft", "list", "table", "ip", "kube-proxy"])
            || ok(&["nft", "list", "table", "ip6", "kube-proxy"]),
        iptables_kube_services: ok(&["iptables", "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES"]),
        ipvs_services,
        cilium_bpf,
        calico_bpf: bpffs.join("calico").is_dir(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub level: Level,
    pub name: &'static str,
    pub detail: String,
}

fn check(level: Level, name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level,
        name,
        detail: detail.into(),
    }
}

/// CAP_NET_ADMIN (bit 12) in the effective set, from /proc/self/status.
fn has_net_admin() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << 12) != 0)
}

/// The per-namespace sysctls the outage depends on, read in the namespace of the table.
#[derive(Debug, Default)]
struct Sysctls {
    acct: Option<u64>,
    timestamp: Option<u64>,
    events: Option<u64>,
    tcp_established: Option<u64>,
    udp: Option<u64>,
    udp_stream: Option<u64>,
}

fn read_sysctls() -> Sysctls {
    let r = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{k}"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
    };
    Sysctls {
        acct: r("nf_conntrack_acct"),
        timestamp: r("nf_conntrack_timestamp"),
        events: r("nf_conntrack_events"),
        tcp_established: r("nf_conntrack_tcp_timeout_established"),
        udp: r("nf_conntrack_udp_timeout"),
        udp_stream: r("nf_conntrack_udp_timeout_stream"),
    }
}

fn node_checks(ns: &NetnsArg) -> Vec<Check> {
    let mut out = Vec::new();
    match has_net_admin() {
        Some(true) => out.push(check(Level::Ok, "capability", "CAP_NET_ADMIN is in the effective set")),
        Some(false) => out.push(check(
            Level::Fail,
            "capability",
            "CAP_NET_ADMIN missing: conntrack cannot be read or changed (run as root, or add NET_ADMIN to the container)",
        )),
        None => out.push(check(Level::Warn, "capability", "could not read CapEff from /proc/self/status")),
    }
    let mut ct: Option<Conntrack> = None;
    match ns.open() {
        Ok(mut c) => {
            match c.stats() {
                Ok(s) => {
                    out.push(check(
                        Level::Ok,
                        "ctnetlink",
                        format!("nf_conntrack_netlink answers ({} entries)", s.entries),
                    ));
                    if let Some(max) = s.max_entries {
                        let fill = f64::from(s.entries) / f64::from(max.max(1));
                        let level = if fill >= 0.9 {
                            Level::Fail
                        } else if fill >= 0.75 {
                            Level::Warn
                        } else {
                            Level::Ok
                        };
                        out.push(check(
                            level,
                            "table fill",
                            format!(
                                "{} of nf_conntrack_max {} ({:.1}%)",
                                s.entries,
                                max,
                                fill * 100.0
                            ),
                        ));
                    }
                }
                Err(e) => out.push(check(Level::Fail, "ctnetlink", format!("{e:#}"))),
            }
            ct = Some(c);
        }
        Err(e) => out.push(check(Level::Fail, "ctnetlink", format!("{e:#}"))),
    }
    if let Some(c) = ct.as_mut() {
        match c.probe() {
            Ok(f) => {
                out.push(if f.dump_filter {
                    check(Level::Ok, "filtered dump", "CTA_FILTER supported: the kernel filters dumps")
                } else {
                    check(Level::Warn, "filtered dump", "CTA_FILTER unsupported (Linux < 5.8): dumps are filtered in userspace, slower")
                });
                out.push(if f.flush_filter {
                    check(Level::Ok, "filtered flush", "CT_DELETE with CTA_FILTER supported: one kernel walk per backend flush")
                } else {
                    check(Level::Warn, "filtered flush", "unsupported (Linux < 6.12): flushes use a filtered dump plus batched deletes")
                });
            }
            Err(e) => out.push(check(
                Level::Fail,
                "kernel features",
                format!("probe failed: {e}"),
            )),
        }
    }
    let sys = match ns.netns() {
        Some(n) => n.run(read_sysctls).unwrap_or_default(),
        None => read_sysctls(),
    };
    out.push(match sys.acct {
        Some(1) => check(Level::Ok, "nf_conntrack_acct", "1: stale flows are reported with packets and bytes"),
        Some(v) => check(Level::Warn, "nf_conntrack_acct", format!("{v}: no packet/byte counts for stale flows (sysctl -w net.netfilter.nf_conntrack_acct=1)")),
        None => check(Level::Warn, "nf_conntrack_acct", "unreadable"),
    });
    out.push(match sys.timestamp {
        Some(1) => check(
            Level::Ok,
            "nf_conntrack_timestamp",
            "1: flow start times are known",
        ),
        Some(v) => check(
            Level::Warn,
            "nf_conntrack_timestamp",
            format!("{v}: flow ages unknown (sysctl -w net.netfilter.nf_conntrack_timestamp=1)"),
        ),
        None => check(Level::Warn, "nf_conntrack_timestamp", "unreadable"),
    });
    out.push(match sys.events {
        Some(0) => check(Level::Warn, "nf_conntrack_events", "0: no conntrack events; the agent's event trigger cannot see new flows to dead backends"),
        Some(v) => check(Level::Ok, "nf_conntrack_events", format!("{v}: events delivered")),
        None => check(Level::Warn, "nf_conntrack_events", "unreadable"),
    });
    if let Some(t) = sys.tcp_established {
        let detail = format!(
            "{t} s ({:.1} days): a TCP entry to a dead pod lives this long unless deleted",
            t as f64 / 86_400.0
        );
        out.push(check(
            if t > 3600 { Level::Warn } else { Level::Ok },
            "tcp established timeout",
            detail,
        ));
    }
    if let (Some(u), Some(s)) = (sys.udp, sys.udp_stream) {
        out.push(check(
            Level::Warn,
            "udp timeouts",
            format!("{u} s / {s} s (stream): every packet refreshes them, so a UDP client that keeps its port reaches a dead pod forever"),
        ));
    }
    out
}

async fn api_checks(kube: &KubeArgs) -> Vec<Check> {
    let client = match kube_client(kube.kubeconfig.clone(), kube.context.clone()).await {
        Ok(c) => c,
        Err(e) => return vec![check(Level::Fail, "api server", format!("{e:#}"))],
    };
    let services: Api<Service> = Api::all(client);
    let listed =
        tokio::time::timeout(kube.sync_timeout, services.list(&ListParams::default())).await;
    let list = match listed {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            return vec![check(
                Level::Fail,
                "api server",
                format!("listing Services: {e}"),
            )];
        }
        Err(_) => {
            return vec![check(
                Level::Fail,
                "api server",
                format!("no answer within {:?}", kube.sync_timeout),
            )];
        }
    };
    let (mut nat, mut headless, mut udp) = (0, 0, 0);
    for s in &list.items {
        let Some(spec) = &s.spec else { continue };
        let is_headless = spec.cluster_ip.as_deref() == Some("None")
            || spec.type_.as_deref() == Some("ExternalName");
        if is_headless {
            headless += 1;
            continue;
        }
        nat += 1;
        if spec
            .ports
            .iter()
            .flatten()
            .any(|p| p.protocol.as_deref() == Some("UDP"))
        {
            udp += 1;
        }
    }
    vec![
        check(
            Level::Ok,
            "api server",
            format!("reachable; {} Services", list.items.len()),
        ),
        check(
            if udp > 0 { Level::Warn } else { Level::Ok },
            "services using NAT",
            format!(
                "{nat} use NAT ({udp} with UDP ports: exposed to the outage), {headless} headless/ExternalName (no NAT)"
            ),
        ),
    ]
}

/// Runs the checks, prints them, and returns the worst level.
pub async fn doctor(cmd: DoctorCmd) -> Result<Level> {
    let (ns, bpffs) = (cmd.ns.clone(), cmd.bpffs.clone());
    let hostports = cmd.kube.hostports;
    let mut checks = tokio::task::spawn_blocking(move || {
        let mut c = node_checks(&ns);
        c.push(proxy_check(&proxy_evidence(&ns, &bpffs)));
        c.push(hostport_check(&portmap_evidence(&ns), hostports));
        c
    })
    .await?;
    if !cmd.skip_api {
        checks.extend(api_checks(&cmd.kube).await);
    }
    for c in &checks {
        println!("{:<5} {:<24} {}", c.level.to_string(), c.name, c.detail);
    }
    Ok(checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostport_check_says_what_portmap_left_and_whether_it_is_judged() {
        let none = hostport_check(&PortmapEvidence::default(), true);
        assert_eq!(none.level, Level::Ok);
        assert!(
            none.detail.starts_with("no CNI portmap rules"),
            "{}",
            none.detail
        );
        let found = PortmapEvidence {
            iptables_rules: Some(2),
            nft_table: false,
        };
        let on = hostport_check(&found, true);
        assert_eq!(on.level, Level::Ok);
        assert!(
            on.detail.contains("CNI-HOSTPORT-DNAT, 2 rules")
                && on.detail.contains("ctreap judges them")
        );
        let off = hostport_check(&found, false);
        assert_eq!(off.level, Level::Warn);
        assert!(off.detail.contains("--hostports=false"), "{}", off.detail);
    }
}
