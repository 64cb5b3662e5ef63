//! The executor: walks the conntrack table (or serves departed backends from the flow
//! index) and deletes what the decision layer selects, on blocking threads. It decides nothing
//! about *whether* to delete: the loop asks the trust gate ([`super::gate`]) and the breaker
//! first, and the executor judges every entry against the newest model right before it is
//! deleted.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use ctnetlink::{Entry, Filter, GlobalStats, Tuple};

use super::flows::{self, FlowIndex};
use super::http::Health;
use super::kernel::{Kernel, Selected};
use super::pass::{proto_label, reason_label};
use crate::cluster::{ClusterState, ServiceName};
use crate::reconcile::{
    Flow, FlushKey, Planned, Policy, Stale, Verdict, classify, deletable, deletable_decision,
    deletable_planned, key_of,
};

/// Per-(Service, protocol, reason) stale counts of a full pass, for `ctreap_stale_flows`.
pub(super) type StaleCounts = HashMap<(ServiceName, &'static str, &'static str), u64>;

/// What the blocking part of a pass found.
pub(super) struct Found {
    pub selected: Vec<Selected<Stale>>,
    /// Service flows seen (any verdict but not-a-Service); counted on full-table dumps only.
    pub service_flows: Option<u64>,
    /// Translated (NAT) flows seen, Service or not in the current view: what the breaker
    /// weighs a deletion against (a view that lost every Service counts no Service flow).
    pub nat_flows: Option<u64>,
    pub stale: StaleCounts,
    pub entries: u64,
    pub interrupted: bool,
    pub cancelled: bool,
    pub decode_errors: u64,
}

/// Watch-planned keys, grouped into kernel-filterable dumps: one per backend address (all its
/// ports and protocols in one kernel walk; the userspace check picks the planned pairs).
/// IPv6 addresses are never sent to the kernel as a filter (Linux 6.18 compares them inverted,
/// see ctnetlink's `Filter::kernel_part`), so an IPv6 backend's dump is narrowed in userspace.
pub(super) fn key_filters(keys: &Planned) -> Vec<Filter> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for k in keys.keys() {
        if seen.insert(k.reply_src) {
            out.push(Filter {
                reply_src: Some(k.reply_src),
                ..Filter::default()
            });
        }
    }
    out
}

/// Why a sweep found nothing to act on.
pub(super) enum SweepFailed {
    /// The dump failed.
    Netlink(ctnetlink::Error),
    /// The blocking task panicked or was cancelled.
    Task(tokio::task::JoinError),
}

/// Entries grouped by what deletes them, with their original tuple and zone.
pub(super) type Groups = HashMap<Stale, Vec<(Tuple, Option<u16>)>>;

pub(super) struct Executor {
    pub kernel: Arc<Mutex<Kernel>>,
    pub model: Arc<RwLock<ClusterState>>,
    pub flows: Arc<FlowIndex>,
    pub health: Arc<Health>,
    pub policy: Policy,
    /// `--dry-run`: count instead of deleting, each flow once.
    pub dry: Option<Arc<Mutex<DrySeen>>>,
}

impl Executor {
    /// Walks what `filters` select and picks the entries to delete: with `keys`, those of the
    /// planned pairs; without, every entry the policy deletes except those of `skip` (within
    /// `--grace`). A walk of the whole table (one empty filter) also counts the node's Service
    /// and NAT flows (for the breaker), the stale flows by Service when `full` (for the gauge),
    /// and rebuilds the flow index. Hands `keys` back.
    pub async fn sweep(
        &self,
        filters: Vec<Filter>,
        keys: Option<Planned>,
        skip: HashSet<FlushKey>,
        full: bool,
    ) -> (Result<Found, SweepFailed>, Option<Planned>) {
        let counting = filters.len() == 1 && filters[0].is_empty();
        let policy = self.policy;
        let k = self.kernel.clone();
        let model = self.model.clone();
        let flows = self.flows.clone();
        let health = self.health.clone();
        let res = tokio::task::spawn_blocking(move || {
            let keys = keys;
            let mut read = 0u64;
            // A whole-table walk also rebuilds the index of flows by backend.
            let walk = counting.then(|| flows.begin_walk());
            let mut kernel = k.lock().unwrap_or_else(|e| e.into_inner());
            let mut service_flows = 0u64;
            let mut nat_flows = 0u64;
            let mut stale: StaleCounts = HashMap::new();
            let sweep = kernel.sweep(&filters, |flow, _e: &Entry| {
                // A long pass is progress (/healthz): the loop awaits it.
                read += 1;
                if read.is_multiple_of(65_536) {
                    health.beat();
                }
                // Each entry is judged with the model as it is now (the watches go on
                // updating it during a long pass); the lock is held for one entry.
                let model = model.read().unwrap_or_else(|e| e.into_inner());
                let map = model.map();
                if let Some(mark) = walk {
                    flows.walk_saw(mark, flow);
                }
                // A counting walk reports each entry's verdict and judges it for deletion
                // from the same classification.
                let decision = counting.then(|| classify(map, flow));
                if let Some(d) = &decision {
                    if flows::translated(flow) {
                        nat_flows += 1;
                    }
                    if !matches!(d.verdict, Verdict::NotService(_)) {
                        service_flows += 1;
                    }
                    // Opted-out Services are not counted: their stale flows are left on
                    // purpose, and the staleness alert must not fire for them.
                    if full
                        && let (Verdict::Stale(r), Some(port)) = (d.verdict, d.port)
                        && !port.ignored()
                    {
                        *stale
                            .entry((
                                port.service().clone(),
                                proto_label(d.proto),
                                reason_label(r),
                            ))
                            .or_default() += 1;
                    }
                }
                match &keys {
                    None => {
                        if skip.contains(&key_of(flow)) {
                            return None; // within its settle window
                        }
                        match &decision {
                            Some(d) => deletable_decision(d, &policy),
                            None => deletable(map, flow, &policy),
                        }
                    }
                    Some(keys) => deletable_planned(map, flow, keys, &policy),
                }
            });
            let sweep = match sweep {
                Ok(s) => s,
                Err(e) => {
                    if let Some(mark) = walk {
                        flows.end_walk(mark, false);
                    }
                    return (Err(SweepFailed::Netlink(e)), keys);
                }
            };
            if let Some(mark) = walk {
                let complete = !sweep.interrupted && !sweep.cancelled && sweep.decode_errors == 0;
                flows.end_walk(mark, complete);
            }
            let found = Found {
                selected: sweep.selected,
                service_flows: counting.then_some(service_flows),
                nat_flows: counting.then_some(nat_flows),
                stale,
                entries: sweep.entries,
                interrupted: sweep.interrupted,
                cancelled: sweep.cancelled,
                decode_errors: sweep.decode_errors,
            };
            (Ok(found), keys)
        })
        .await;
        match res {
            Ok(r) => r,
            Err(e) => (Err(SweepFailed::Task(e)), None),
        }
    }

    /// Deletes the planned pairs' entries that the flow index knows, backend by backend,
    /// without a walk, each judged against the model first; a backend with no flow here costs
    /// nothing. Returns what was executed, the keys the index could not serve (those must be
    /// walked) and how many backends needed nothing; `None` if the task failed.
    pub async fn delete_known(
        &self,
        backends: Vec<IpAddr>,
        keys: Planned,
    ) -> Option<(Vec<Executed>, Planned, u64)> {
        let (flows, model, k) = (self.flows.clone(), self.model.clone(), self.kernel.clone());
        let health = self.health.clone();
        let dry = self.dry.clone();
        let policy = self.policy;
        tokio::task::spawn_blocking(move || {
            let mut kernel = k.lock().unwrap_or_else(|e| e.into_inner());
            let (mut results, mut unknown, mut skipped) = (Vec::new(), Vec::new(), 0u64);
            for ip in backends {
                health.beat();
                let Some(list) = flows.flows_of(ip) else {
                    unknown.push(ip);
                    continue;
                };
                if list.is_empty() {
                    skipped += 1;
                    continue;
                }
                let mut groups: Groups = HashMap::new();
                {
                    let model = model.read().unwrap_or_else(|e| e.into_inner());
                    for f in &list {
                        if let Some(s) = deletable_planned(model.map(), f, &keys, &policy) {
                            groups.entry(s).or_default().push(tuple_of(f));
                        }
                    }
                }
                for (g, tuples) in groups {
                    execute(&mut kernel, g, &tuples, dry.as_deref(), &mut results);
                }
            }
            let mut keys = keys;
            keys.retain(|k, _| unknown.contains(&k.reply_src));
            (results, keys, skipped)
        })
        .await
        .ok()
    }

    /// Deletes each group's entries (or, under --dry-run, counts them); `None` if the task
    /// failed.
    pub async fn delete(&self, groups: Groups) -> Option<Vec<Executed>> {
        let dry = self.dry.clone();
        let k = self.kernel.clone();
        tokio::task::spawn_blocking(move || {
            let mut kernel = k.lock().unwrap_or_else(|e| e.into_inner());
            let mut results = Vec::with_capacity(groups.len());
            for (g, tuples) in groups {
                execute(&mut kernel, g, &tuples, dry.as_deref(), &mut results);
            }
            results
        })
        .await
        .ok()
    }

    /// The table's size (`conntrack -C`, `-S`); `None` if the task failed.
    pub async fn stats(&self) -> Option<Result<GlobalStats, ctnetlink::Error>> {
        let k = self.kernel.clone();
        tokio::task::spawn_blocking(move || k.lock().unwrap_or_else(|e| e.into_inner()).stats())
            .await
            .ok()
    }
}

/// Flows a --dry-run agent has counted: every pass finds a stale flow again (nothing deletes
/// it), but `ctreap_dry_run_flows_total` and the "would delete" lines count it once. Bounded:
/// past [`DRY_SEEN_MAX`] flows the set starts over (flows then may be counted again).
#[derive(Debug, Default)]
pub(super) struct DrySeen(std::collections::HashSet<(Tuple, Option<u16>)>);

const DRY_SEEN_MAX: usize = 1_000_000;

impl DrySeen {
    /// How many of `tuples` were not counted before (now they are).
    fn fresh(&mut self, tuples: &[(Tuple, Option<u16>)]) -> u64 {
        if self.0.len() + tuples.len() > DRY_SEEN_MAX {
            self.0.clear();
        }
        tuples.iter().filter(|t| self.0.insert(**t)).count() as u64
    }
}

/// One group of entries, deleted (or counted under --dry-run): the group, its size, the
/// kernel's report (`None` for a dry run) and when the kernel acknowledged it.
pub(super) type Executed = (
    Stale,
    u64,
    Option<Result<ctnetlink::BatchReport, ctnetlink::Error>>,
    Instant,
);

/// Deletes a group, or under --dry-run (`dry` set) counts the flows of it not counted before;
/// a dry group with nothing new leaves no result (no second log line for the same flows).
fn execute(
    kernel: &mut Kernel,
    g: Stale,
    tuples: &[(Tuple, Option<u16>)],
    dry: Option<&Mutex<DrySeen>>,
    out: &mut Vec<Executed>,
) {
    match dry {
        Some(seen) => {
            let n = seen.lock().unwrap_or_else(|e| e.into_inner()).fresh(tuples);
            if n > 0 {
                out.push((g, n, None, Instant::now()));
            }
        }
        None => {
            let report = kernel.delete(tuples);
            out.push((g, tuples.len() as u64, Some(report), Instant::now()));
        }
    }
}

/// The original tuple and zone a flow from the index is deleted by (zone 0 is the default
/// zone, which the kernel reports as no zone).
fn tuple_of(f: &Flow) -> (Tuple, Option<u16>) {
    let tuple = Tuple::new(
        f.orig_src,
        f.orig_dst,
        ctnetlink::L4::ports(f.proto, f.orig_sport, f.orig_dport),
    );
    (tuple, (f.zone != 0).then_some(f.zone))
}
