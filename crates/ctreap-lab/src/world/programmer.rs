//! The rule programmer: our stand-in for kube-proxy. It lists and watches Services and
//! EndpointSlices (the same [`ClusterWatch`] the agent uses) and rewrites the node's NAT to the
//! serving endpoints, `sync_delay` after it sees a change.
//!
//! Like kube-proxy it picks, per service port, the ready endpoints, or if there are none the
//! serving-and-terminating ones (KEP-1669). By default it never touches conntrack: in the lab,
//! what happens to conntrack is the variant's business. With
//! [`ProgrammerConfig::conntrack_cleanup`] it also runs kube-proxy's own UDP conntrack
//! reconciler after every sync ([`kube_proxy_stale`]), for the `kube-proxy` variant.
//!
//! Sync timing: the first sync happens as soon as every watch has listed; afterwards a change
//! seen at `t` is applied at `t + sync_delay` with whatever the stores hold then (changes within
//! the delay are coalesced, as kube-proxy's `minSyncPeriod` coalesces them). Each applied sync
//! is recorded ([`SyncRecord`]) for the report.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ctnetlink::{Conntrack, Entry, Filter, Netns};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use ctreap::cluster::{ClusterWatch, FrontendKind, Proto, ServiceMap, WatchConfig, kube_client};

use super::Error;
use super::nat::{NatRules, NatTarget, ServicePortRules};

/// How the programmer runs.
#[derive(Clone, Debug)]
pub struct ProgrammerConfig {
    /// A kubeconfig for the API server (kube-testserver's `write_kubeconfig`).
    pub kubeconfig: PathBuf,
    /// Where to program ([`World::nat_target`](super::World::nat_target)).
    pub nat: NatTarget,
    /// Delay between seeing a change and applying it (default 1 s).
    pub sync_delay: Duration,
    /// Give up waiting for the initial lists after this long (default 10 s).
    pub sync_timeout: Duration,
    /// Run kube-proxy's UDP conntrack reconciler in this namespace after every sync (the
    /// node's; `None`, the default: never touch conntrack).
    pub conntrack_cleanup: Option<Netns>,
}

impl ProgrammerConfig {
    pub fn new(kubeconfig: impl Into<PathBuf>, nat: NatTarget) -> ProgrammerConfig {
        ProgrammerConfig {
            kubeconfig: kubeconfig.into(),
            nat,
            sync_delay: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(10),
            conntrack_cleanup: None,
        }
    }
}

/// One sync of the node's rules.
#[derive(Clone, Debug, Serialize)]
pub struct SyncRecord {
    /// 0 for the initial sync, then 1, 2, ...
    pub seq: u64,
    /// When the first change this sync covers was seen (the start, for the initial sync).
    #[serde(skip)]
    pub seen: Instant,
    /// When the rules were in the kernel (the apply command returned).
    #[serde(skip)]
    pub applied: Instant,
    /// `applied` on the wall clock.
    pub applied_at: SystemTime,
    pub rules: NatRules,
    /// Why the apply failed, if it did (the next change retries).
    pub error: Option<String>,
    /// With [`ProgrammerConfig::conntrack_cleanup`]: the UDP entries the reconciler deleted
    /// after this sync, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack_cleared: Option<Result<u64, String>>,
}

/// The UDP frontends of a map with the IPs of their serving endpoints: what kube-proxy's
/// reconciler compares the table with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpFrontends {
    /// ClusterIP, external IP and load-balancer IP, with the service port.
    by_addr: HashMap<(IpAddr, u16), BTreeSet<IpAddr>>,
    /// NodePort, on any address.
    by_node_port: HashMap<u16, BTreeSet<IpAddr>>,
}

impl UdpFrontends {
    /// From the map: every UDP service port's frontends, and its endpoints that are serving
    /// (ready or not, terminating or not: kube-proxy's `IsServing`).
    pub fn of(map: &ServiceMap) -> UdpFrontends {
        let mut out = UdpFrontends::default();
        for port in map.ports() {
            if port.proto() != Proto::Udp {
                continue;
            }
            let serving: BTreeSet<IpAddr> = port
                .backends()
                .iter()
                .filter(|b| b.conditions.serving)
                .map(|b| b.ip)
                .collect();
            for f in port.frontends() {
                match f.kind {
                    FrontendKind::NodePort => {
                        out.by_node_port.insert(f.key.port, serving.clone());
                    }
                    _ => {
                        out.by_addr.insert((f.key.ip, f.key.port), serving.clone());
                    }
                }
            }
        }
        out
    }

    /// Adds, with no serving endpoint, the frontends of `before` that are gone now (their
    /// Service was deleted or lost the port).
    fn with_departed(&self, before: &UdpFrontends) -> UdpFrontends {
        let mut out = self.clone();
        for k in before.by_addr.keys() {
            out.by_addr.entry(*k).or_default();
        }
        for k in before.by_node_port.keys() {
            out.by_node_port.entry(*k).or_default();
        }
        out
    }
}

/// Whether kube-proxy's conntrack reconciler deletes entry `e`, the frontends being `now`.
///
/// It follows `CleanStaleEntries` in kube-proxy's `pkg/proxy/conntrack/cleanup.go` (the
/// iptables and nftables proxiers call it at the end of every sync since Kubernetes 1.32):
/// only UDP entries; an entry whose original destination is a UDP Service IP and port, or
/// whose original destination port is a UDP NodePort, is deleted when its reply source is not
/// the IP of a serving endpoint of that Service port. TCP and SCTP entries are never touched.
/// Two later fixes are included: a Service port left with no serving endpoint is cleaned too
/// (the 1.32 code skipped it, which left UDP clients black-holed, kubernetes #139628), and so
/// are the frontends of a Service deleted since the last sync (see [`UdpFrontends`]).
pub fn kube_proxy_stale(now: &UdpFrontends, e: &Entry) -> bool {
    let Some(dport) = e.orig.proto.dst_port else {
        return false;
    };
    if e.orig.proto.num != libc::IPPROTO_UDP as u8 {
        return false;
    }
    let reply_src = e.reply.src;
    let by_addr = now
        .by_addr
        .get(&(e.orig.dst, dport))
        .is_some_and(|ips| !ips.contains(&reply_src));
    let by_node_port = now
        .by_node_port
        .get(&dport)
        .is_some_and(|ips| !ips.contains(&reply_src));
    by_addr || by_node_port
}

/// One run of the reconciler in `netns`: dumps the UDP entries and deletes the stale ones.
fn reconcile_conntrack(netns: &Netns, now: &UdpFrontends) -> Result<u64, String> {
    let mut ct = Conntrack::open_in(Some(netns)).map_err(|e| e.to_string())?;
    let mut stale = Vec::new();
    let filter = Filter {
        proto: Some(libc::IPPROTO_UDP as u8),
        ..Filter::default()
    };
    ct.dump(&filter, |e| {
        if kube_proxy_stale(now, &e) {
            stale.push((e.orig, e.zone));
        }
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    if stale.is_empty() {
        return Ok(0);
    }
    let report = ct.delete_batch(&stale).map_err(|e| e.to_string())?;
    Ok(report.ok)
}

/// What the reconciler compares the table with; empty, and never a reason to sync, when it
/// does not run (every variant but `kube-proxy` syncs on rule changes only, as before it).
fn udp_frontends(config: &ProgrammerConfig, map: &ServiceMap) -> UdpFrontends {
    if config.conntrack_cleanup.is_some() {
        UdpFrontends::of(map)
    } else {
        UdpFrontends::default()
    }
}

async fn cleanup(netns: Option<&Netns>, now: &UdpFrontends) -> Option<Result<u64, String>> {
    let (netns, now) = (netns?.clone(), now.clone());
    Some(
        match tokio::task::spawn_blocking(move || reconcile_conntrack(&netns, &now)).await {
            Ok(r) => r,
            Err(e) => Err(format!("conntrack cleanup task: {e}")),
        },
    )
}

struct Shared {
    syncs: Mutex<Vec<SyncRecord>>,
    latest: watch::Sender<u64>,
}

impl Shared {
    fn syncs(&self) -> std::sync::MutexGuard<'_, Vec<SyncRecord>> {
        self.syncs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running programmer; dropping it stops it (the rules stay as last programmed).
pub struct Programmer {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// The node's NAT for `map`: per service port, its IPv4 ClusterIP frontends and the endpoints
/// kube-proxy would use: the ready ones, else the serving terminating ones. Pure.
pub fn rules_from_map(map: &ServiceMap) -> NatRules {
    let mut ports = Vec::new();
    for port in map.ports() {
        let ready: Vec<SocketAddrV4> =
            v4_endpoints(port.backends().iter().filter(|b| {
                b.conditions.ready && b.conditions.serving && !b.conditions.terminating
            }));
        let endpoints = if ready.is_empty() {
            v4_endpoints(
                port.backends()
                    .iter()
                    .filter(|b| b.conditions.serving && b.conditions.terminating),
            )
        } else {
            ready
        };
        for f in port.frontends() {
            let (FrontendKind::ClusterIp, IpAddr::V4(ip)) = (f.kind, f.key.ip) else {
                continue;
            };
            ports.push(ServicePortRules {
                service: port.service().to_string(),
                port_name: port.name().to_string(),
                proto: port.proto(),
                cluster_ip: ip,
                port: port.port(),
                node_port: port.node_port(),
                endpoints: endpoints.clone(),
            });
        }
    }
    ports.sort_by(|a, b| {
        (&a.service, &a.port_name, a.proto, a.cluster_ip, a.port).cmp(&(
            &b.service,
            &b.port_name,
            b.proto,
            b.cluster_ip,
            b.port,
        ))
    });
    NatRules {
        ports,
        ..NatRules::default()
    }
}

fn v4_endpoints(backends: impl Iterator<Item = ctreap::cluster::Backend>) -> Vec<SocketAddrV4> {
    let mut v: Vec<SocketAddrV4> = backends
        .filter_map(|b| match b.ip {
            IpAddr::V4(ip) => Some(SocketAddrV4::new(ip, b.port)),
            IpAddr::V6(_) => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

async fn apply(nat: &NatTarget, rules: &NatRules) -> Result<(), String> {
    let (nat, rules) = (nat.clone(), rules.clone());
    match tokio::task::spawn_blocking(move || nat.apply(&rules)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("apply task: {e}")),
    }
}

impl Programmer {
    /// Connects, waits for the initial lists, programs the initial rules and returns; then
    /// follows changes on a task of the current tokio runtime.
    pub async fn start(config: ProgrammerConfig) -> Result<Programmer, Error> {
        let start = Instant::now();
        let client = kube_client(Some(config.kubeconfig.clone()), None)
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        let cluster = ClusterWatch::start(client, WatchConfig::default());
        tokio::time::timeout(config.sync_timeout, cluster.wait_synced())
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "the rule programmer's watches did not list within {:?} ({:?})",
                    config.sync_timeout,
                    cluster.status()
                ))
            })?;
        let mut changes = cluster.changes();
        changes.borrow_and_update();
        let snap = cluster
            .snapshot()
            .ok_or_else(|| Error::Kube("no snapshot after sync".into()))?;
        let rules = rules_from_map(&snap.map);
        apply(&config.nat, &rules)
            .await
            .map_err(|e| Error::Command {
                command: format!("initial NAT sync in {}", config.nat.netns),
                status: "failed".into(),
                stderr: e,
            })?;
        let udp = udp_frontends(&config, &snap.map);
        let conntrack_cleared = cleanup(config.conntrack_cleanup.as_ref(), &udp).await;
        let shared = Arc::new(Shared {
            syncs: Mutex::new(vec![SyncRecord {
                seq: 0,
                seen: start,
                applied: Instant::now(),
                applied_at: SystemTime::now(),
                rules: rules.clone(),
                error: None,
                conntrack_cleared,
            }]),
            latest: watch::Sender::new(0),
        });
        let task = tokio::spawn(follow(
            cluster,
            changes,
            config,
            (rules, udp),
            shared.clone(),
        ));
        Ok(Programmer { shared, task })
    }

    /// Every sync so far, oldest first.
    pub fn syncs(&self) -> Vec<SyncRecord> {
        self.shared.syncs().clone()
    }

    /// The rules last programmed successfully.
    pub fn current_rules(&self) -> NatRules {
        self.shared
            .syncs()
            .iter()
            .rev()
            .find(|s| s.error.is_none())
            .map(|s| s.rules.clone())
            .unwrap_or_default()
    }

    /// Waits until a sync whose rules satisfy `pred` has been applied (including one already
    /// applied) and returns it.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&NatRules) -> bool,
        timeout: Duration,
    ) -> Result<SyncRecord, Error> {
        let mut rx = self.shared.latest.subscribe();
        let found = || {
            self.shared
                .syncs()
                .iter()
                .rev()
                .find(|s| s.error.is_none() && pred(&s.rules))
                .cloned()
        };
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(s) = found() {
                    return Some(s);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(Error::Kube("the rule programmer stopped".into())),
            Err(_) => Err(Error::Timeout(format!(
                "no NAT sync matching the condition within {timeout:?}"
            ))),
        }
    }

    /// Stops following changes.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Programmer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    cluster: ClusterWatch,
    mut changes: watch::Receiver<u64>,
    config: ProgrammerConfig,
    (mut last, mut last_udp): (NatRules, UdpFrontends),
    shared: Arc<Shared>,
) {
    let mut seq = 1;
    let mut last_failed = false;
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        let seen = Instant::now();
        tokio::time::sleep(config.sync_delay).await;
        changes.borrow_and_update();
        let Some(snap) = cluster.snapshot() else {
            continue;
        };
        let rules = rules_from_map(&snap.map);
        let udp = udp_frontends(&config, &snap.map);
        if rules == last && udp == last_udp && !last_failed {
            continue;
        }
        let result = apply(&config.nat, &rules).await;
        let applied = Instant::now();
        last_failed = result.is_err();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "lab rule programmer: sync failed");
        }
        // kube-proxy reconciles conntrack at the end of a sync, after the rules are in.
        let conntrack_cleared = if result.is_ok() {
            cleanup(
                config.conntrack_cleanup.as_ref(),
                &udp.with_departed(&last_udp),
            )
            .await
        } else {
            None
        };
        if let Some(Err(e)) = &conntrack_cleared {
            tracing::warn!(error = %e, "lab rule programmer: conntrack cleanup failed");
        }
        shared.syncs().push(SyncRecord {
            seq,
            seen,
            applied,
            applied_at: SystemTime::now(),
            rules: rules.clone(),
            error: result.err(),
            conntrack_cleared,
        });
        seq += 1;
        last = rules;
        last_udp = udp;
        shared.latest.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctnetlink::{L4, Tuple};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `client:40000 -> dst:dport`, answered by `backend:bport`.
    fn entry(proto: u8, dst: &str, dport: u16, backend: &str, bport: u16) -> Entry {
        let client = ip("198.18.1.2");
        Entry::new(
            Tuple::new(client, ip(dst), L4::ports(proto, 40000, dport)),
            Tuple::new(ip(backend), client, L4::ports(proto, bport, 40000)),
        )
    }

    const UDP: u8 = libc::IPPROTO_UDP as u8;
    const TCP: u8 = libc::IPPROTO_TCP as u8;

    fn frontends(serving: &[&str]) -> UdpFrontends {
        let ips: BTreeSet<IpAddr> = serving.iter().map(|s| ip(s)).collect();
        UdpFrontends {
            by_addr: [((ip("198.19.0.10"), 53), ips.clone())].into(),
            by_node_port: [(30053, ips)].into(),
        }
    }

    #[test]
    fn udp_entries_to_a_backend_that_is_not_serving_are_deleted() {
        let now = frontends(&["192.0.2.12"]);
        assert!(kube_proxy_stale(
            &now,
            &entry(UDP, "198.19.0.10", 53, "192.0.2.10", 5353)
        ));
        assert!(!kube_proxy_stale(
            &now,
            &entry(UDP, "198.19.0.10", 53, "192.0.2.12", 5353)
        ));
        // NodePort on any node address.
        assert!(kube_proxy_stale(
            &now,
            &entry(UDP, "198.18.1.1", 30053, "192.0.2.10", 5353)
        ));
        assert!(!kube_proxy_stale(
            &now,
            &entry(UDP, "198.18.1.1", 30053, "192.0.2.12", 5353)
        ));
        // Another port of the same IP is not this Service port.
        assert!(!kube_proxy_stale(
            &now,
            &entry(UDP, "198.19.0.10", 54, "192.0.2.10", 5353)
        ));
    }

    #[test]
    fn tcp_entries_are_never_touched() {
        let now = frontends(&["192.0.2.12"]);
        assert!(!kube_proxy_stale(
            &now,
            &entry(TCP, "198.19.0.10", 53, "192.0.2.10", 5353)
        ));
        assert!(!kube_proxy_stale(
            &now,
            &entry(TCP, "198.18.1.1", 30053, "192.0.2.10", 5353)
        ));
    }

    #[test]
    fn a_service_with_no_serving_endpoint_or_deleted_is_cleaned_too() {
        let empty = frontends(&[]);
        assert!(kube_proxy_stale(
            &empty,
            &entry(UDP, "198.19.0.10", 53, "192.0.2.10", 5353)
        ));
        let gone = UdpFrontends::default().with_departed(&frontends(&["192.0.2.12"]));
        assert!(kube_proxy_stale(
            &gone,
            &entry(UDP, "198.19.0.10", 53, "192.0.2.12", 5353)
        ));
        assert!(!kube_proxy_stale(
            &UdpFrontends::default(),
            &entry(UDP, "198.19.0.10", 53, "192.0.2.12", 5353)
        ));
    }
}
