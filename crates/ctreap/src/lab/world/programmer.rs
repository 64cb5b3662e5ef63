//! The rule programmer: our stand-in for kube-proxy. It lists and watches Services and
//! EndpointSlices (the same [`ClusterWatch`] the agent uses) and rewrites the node's NAT to the
//! serving endpoints, `sync_delay` after it sees a change.
//!
//! Like kube-proxy it picks, per service port, the ready endpoints, or if there are none the
//! serving-and-terminating ones (KEP-1669); unlike kube-proxy (which clears UDP entries) it never
//! touches conntrack at all: in the lab, what happens to conntrack is the variant's business.
//!
//! Sync timing: the first sync happens as soon as every watch has listed; afterwards a change
//! seen at `t` is applied at `t + sync_delay` with whatever the stores hold then (changes within
//! the delay are coalesced, as kube-proxy's `minSyncPeriod` coalesces them). Each applied sync
//! is recorded ([`SyncRecord`]) for the report.

use std::net::{IpAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{ClusterWatch, FrontendKind, ServiceMap, WatchConfig, kube_client};

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
}

impl ProgrammerConfig {
    pub fn new(kubeconfig: impl Into<PathBuf>, nat: NatTarget) -> ProgrammerConfig {
        ProgrammerConfig {
            kubeconfig: kubeconfig.into(),
            nat,
            sync_delay: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(10),
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

fn v4_endpoints<'a>(
    backends: impl Iterator<Item = &'a crate::cluster::Backend>,
) -> Vec<SocketAddrV4> {
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
        let shared = Arc::new(Shared {
            syncs: Mutex::new(vec![SyncRecord {
                seq: 0,
                seen: start,
                applied: Instant::now(),
                applied_at: SystemTime::now(),
                rules: rules.clone(),
                error: None,
            }]),
            latest: watch::Sender::new(0),
        });
        let task = tokio::spawn(follow(cluster, changes, config, rules, shared.clone()));
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
    mut last: NatRules,
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
        if rules == last && !last_failed {
            continue;
        }
        let result = apply(&config.nat, &rules).await;
        let applied = Instant::now();
        last_failed = result.is_err();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "lab rule programmer: sync failed");
        }
        shared.syncs().push(SyncRecord {
            seq,
            seen,
            applied,
            applied_at: SystemTime::now(),
            rules: rules.clone(),
            error: result.err(),
        });
        seq += 1;
        last = rules;
        shared.latest.send_modify(|n| *n += 1);
    }
}
