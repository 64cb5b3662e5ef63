//! One pass of the agent: what a trigger covers (the whole table, or the pairs a watch
//! planned) is found, judged against the trusted map, weighed by the circuit breaker, deleted
//! by the executor and reported (metrics, one log line per group).
//!
//! The loop in `agent/mod.rs` decides when a pass runs; the trust gate (`gate.rs`) whether it
//! may delete; the executor (`executor.rs`) does the kernel work. This is what joins them for
//! one pass.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ctnetlink::Filter;
use tracing::{info, warn};

use super::executor::{Executed, Groups, SweepFailed, key_filters};
use super::{Agent, Trigger, breaker, service_events};
use crate::cluster::{Proto, ServiceMap, ServiceName};
use crate::reconcile::{FlushKey, Planned, StaleReason, deletable_planned};

/// Above this many backend addresses, one dump of the whole table is cheaper than a
/// filtered kernel walk per pair.
const MAX_FILTERED_WALKS: usize = 8;

/// What a pass looks at.
pub(super) enum Scope {
    /// The whole table, judged by the verdict.
    Full,
    /// Only the entries of these (frontend, backend) pairs.
    Keys(Planned),
}

pub(super) fn proto_label(p: u8) -> &'static str {
    match Proto::from_ip_proto(p) {
        Some(Proto::Tcp) => "tcp",
        Some(Proto::Udp) => "udp",
        Some(Proto::Sctp) => "sctp",
        None => "other",
    }
}

pub(super) fn reason_label(r: StaleReason) -> &'static str {
    match r {
        StaleReason::Gone => "gone",
        StaleReason::NotServing => "not_serving",
        StaleReason::NotTranslated => "not_translated",
    }
}

/// How many distinct Services among `services` have no serving (or draining) backend left in
/// `map`, or no longer exist in it: what the circuit breaker calls emptied. Proportional to
/// those Services.
pub(super) fn emptied_services<'a>(
    map: &ServiceMap,
    services: impl IntoIterator<Item = &'a ServiceName>,
) -> usize {
    services
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .filter(|s| !map.has_serving_backend(s))
        .count()
}

impl Agent {
    /// Dumps what `scope` covers, judges every entry against the trusted map, and deletes what
    /// the policy says (unless the breaker holds the pass).
    #[tracing::instrument(name = "pass", skip_all, fields(trigger = trigger.as_str(), full = matches!(scope, Scope::Full)))]
    pub(super) async fn pass(&mut self, scope: Scope, trigger: Trigger, arrival: Option<Instant>) {
        let started = Instant::now();
        let full = matches!(scope, Scope::Full);
        let skip: HashSet<FlushKey> = self.pending.keys().copied().collect();
        if full {
            // This pass judges every entry, untranslated ones included, on the newest model:
            // what frontends gained so far needs no walk of its own.
            drop(
                self.model
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .take_gained(),
            );
        }
        // A watch-driven pass that empties two or more Services may trip the breaker, which
        // needs the node's Service flow count: dump the whole table for it.
        let (filters, keys) = match scope {
            Scope::Full => (vec![Filter::default()], None),
            Scope::Keys(keys) => {
                // Untranslated entries are no backend's: the flow index does not hold them
                // (flows.rs), so their keys are always walked.
                let (mut walk, indexed): (Planned, Planned) =
                    keys.into_iter().partition(|(k, _)| k.untranslated());
                // The flow index knows the departed backends' flows: no walk.
                if !indexed.is_empty() {
                    match self.pass_known(indexed, trigger, arrival).await {
                        Some(left) => walk.extend(left),
                        // Served, held by the breaker, or deleting not allowed now.
                        None if walk.is_empty() || !self.view_ok() => return,
                        None => {}
                    }
                }
                let keys = walk;
                let emptied = {
                    let model = self.model.read().unwrap_or_else(|e| e.into_inner());
                    emptied_services(model.map(), keys.values())
                };
                let filters = key_filters(&keys);
                let filters = if emptied >= 2 || filters.len() > MAX_FILTERED_WALKS {
                    vec![Filter::default()]
                } else {
                    filters
                };
                (filters, Some(keys))
            }
        };
        let counting = filters.len() == 1 && filters[0].is_empty();
        let scope = if counting { "table" } else { "backend" };
        self.health.metrics.dumps(scope, filters.len() as u64);
        let (found, keys) = match self.exec.sweep(filters, keys, skip, full).await {
            (Ok(f), keys) => (f, keys),
            (Err(SweepFailed::Netlink(e)), _) => {
                self.health.metrics.netlink_error(&e);
                self.netlink_ok(Some(format!("conntrack dump failed: {e}")));
                warn!(trigger = trigger.as_str(), error = %e, "conntrack dump failed; deleting nothing this pass");
                return;
            }
            (Err(SweepFailed::Task(e)), _) => {
                warn!(error = %e, "pass task failed");
                return;
            }
        };
        if found.cancelled {
            return;
        }
        if found.decode_errors > 0 {
            warn!(
                decode_errors = found.decode_errors,
                "conntrack messages that did not decode were skipped"
            );
        }

        let mut groups: Groups = HashMap::new();
        for s in found.selected {
            groups.entry(s.label).or_default().push((s.tuple, s.zone));
        }
        let to_delete: u64 = groups.values().map(|v| v.len() as u64).sum();

        if trigger != Trigger::Breaker
            && let Some(nat_flows) = found.nat_flows
        {
            let emptied = {
                let model = self.model.read().unwrap_or_else(|e| e.into_inner());
                emptied_services(model.map(), groups.keys().map(|g| &g.service))
            };
            let mut services: Vec<ServiceName> = groups.keys().map(|g| g.service.clone()).collect();
            services.sort();
            services.dedup();
            if self.breaker_holds(trigger, to_delete, nat_flows, emptied, services) {
                self.hold(keys);
                return;
            }
        }

        self.netlink_ok(None);
        let deleted = self.delete(groups, trigger, arrival).await;
        if full {
            let mut stale = found.stale;
            for ((svc, proto, reason), n) in deleted {
                if let Some(c) = stale.get_mut(&(svc, proto, reason)) {
                    *c = c.saturating_sub(n);
                }
            }
            stale.retain(|_, n| *n > 0);
            self.health.metrics.set_stale_flows(&stale);
            self.health.metrics.reconciled(trigger, started.elapsed());
            self.read_stats().await;
            info!(
                trigger = trigger.as_str(),
                entries = found.entries,
                service_flows = found.service_flows.unwrap_or(0),
                deleted = to_delete,
                stale_left = stale.values().sum::<u64>(),
                backends_with_flows = self.flows.backends(),
                interrupted = found.interrupted,
                duration_ms = started.elapsed().as_secs_f64() * 1e3,
                "full pass"
            );
        }
    }

    /// Watch-planned keys served from the flow index: each departed backend's known flows are
    /// judged against the model and deleted by tuple, backend by backend, without a walk; a
    /// backend with no flow here costs nothing. Returns the keys the index could not serve
    /// (not trusted, or trust lost meanwhile): those are walked.
    async fn pass_known(
        &mut self,
        keys: Planned,
        trigger: Trigger,
        arrival: Option<Instant>,
    ) -> Option<Planned> {
        if self.flows.total().is_none() {
            return Some(keys);
        }
        if !self.view_ok() {
            return None;
        }
        let policy = self.policy;
        let backends: Vec<std::net::IpAddr> = {
            let set: HashSet<_> = keys.keys().map(|k| k.reply_src).collect();
            set.into_iter().collect()
        };
        // The breaker weighs a pass that empties two or more Services against the node's
        // Service flows: count first, delete only if it does not hold.
        let emptied = {
            let model = self.model.read().unwrap_or_else(|e| e.into_inner());
            emptied_services(model.map(), keys.values())
        };
        if trigger != Trigger::Breaker && emptied >= 2 {
            let Some(nat_flows) = self.flows.total() else {
                return Some(keys); // trust lost meanwhile: walk them
            };
            let model = self.model.read().unwrap_or_else(|e| e.into_inner());
            let mut to_delete = 0u64;
            let mut services: Vec<ServiceName> = Vec::new();
            for ip in &backends {
                for f in self.flows.flows_of(*ip).unwrap_or_default() {
                    if let Some(s) = deletable_planned(model.map(), &f, &keys, &policy) {
                        to_delete += 1;
                        services.push(s.service);
                    }
                }
            }
            services.sort();
            services.dedup();
            let emptied = emptied_services(model.map(), &services);
            drop(model);
            if self.breaker_holds(trigger, to_delete, nat_flows, emptied, services) {
                self.hold(Some(keys));
                return None;
            }
        }
        let Some((results, left, skipped)) = self.exec.delete_known(backends, keys).await else {
            warn!("delete task failed");
            return None;
        };
        self.health.metrics.walks_skipped(skipped);
        self.report(results, trigger, arrival);
        (!left.is_empty()).then_some(left)
    }

    /// Whether the breaker holds a pass deleting `to_delete` of the node's `nat_flows`
    /// translated flows and emptying `emptied` Services; logs and counts it if so.
    fn breaker_holds(
        &mut self,
        trigger: Trigger,
        to_delete: u64,
        nat_flows: u64,
        emptied: usize,
        services: Vec<ServiceName>,
    ) -> bool {
        if !breaker::holds(self.limits, to_delete, nat_flows, emptied) {
            return false;
        }
        let pct = to_delete as f64 * 100.0 / nat_flows.max(1) as f64;
        warn!(
            trigger = trigger.as_str(),
            to_delete,
            nat_flows,
            emptied_services = emptied,
            services = services.len(),
            hold_s = self.cmd.breaker_hold.as_secs_f64(),
            "circuit breaker open: this pass would delete {to_delete} of this node's {nat_flows} NAT flows ({pct:.0}%) and leaves {emptied} Services without a serving backend (deleted, or no endpoint serving); holding it for {:?}, then re-listing to confirm the view",
            self.cmd.breaker_hold
        );
        self.health.metrics.breaker_tripped();
        self.health.metrics.breaker(&services);
        for service in services {
            self.recorder.report(service_events::Report::Held {
                service,
                to_delete,
                nat_flows,
            });
        }
        true
    }

    /// Holds a pass the breaker stopped (with its watch-planned keys, judged again after the
    /// confirming re-list) and withdraws the event listener's view until then.
    fn hold(&mut self, keys: Option<Planned>) {
        self.gate.hold(Instant::now(), self.cmd.breaker_hold, keys);
        self.publish(false);
    }

    /// Deletes each group's entries (or, with --dry-run, counts them), one log line per group.
    #[tracing::instrument(name = "delete", skip_all, fields(trigger = trigger.as_str(), groups = groups.len()))]
    /// Returns the count per (Service, protocol, reason) of entries no longer in the table.
    pub(super) async fn delete(
        &mut self,
        groups: Groups,
        trigger: Trigger,
        arrival: Option<Instant>,
    ) -> HashMap<(ServiceName, &'static str, &'static str), u64> {
        let gone = HashMap::new();
        if groups.is_empty() {
            return gone;
        }
        // A full pass takes seconds on a large table: if a watch started re-listing or failed
        // meanwhile, what the pass found is not acted on.
        if !self.view_ok() {
            warn!(
                trigger = trigger.as_str(),
                "the view changed under the pass (re-list, watch error or breaker); deleting nothing"
            );
            return gone;
        }
        let Some(results) = self.exec.delete(groups).await else {
            warn!("delete task failed");
            return gone;
        };
        self.report(results, trigger, arrival)
    }

    /// Metrics and one log line per executed group; returns the count per (Service,
    /// protocol, reason) of entries no longer in the table.
    fn report(
        &mut self,
        results: Vec<Executed>,
        trigger: Trigger,
        arrival: Option<Instant>,
    ) -> HashMap<(ServiceName, &'static str, &'static str), u64> {
        let mut gone = HashMap::new();
        // Deleted flows by (Service, backend), by protocol, for the Services' Events.
        let mut recorded: HashMap<(ServiceName, IpAddr), ([u64; 3], Option<Duration>)> =
            HashMap::new();
        for (g, n, report, acked) in results {
            let protocol = proto_label(g.proto);
            let reason = reason_label(g.reason);
            let latency = arrival.map(|a| acked.saturating_duration_since(a));
            let latency_ms = latency.map_or(0.0, |l| l.as_secs_f64() * 1e3);
            match report {
                None => {
                    self.health
                        .metrics
                        .deleted(true, protocol, reason, trigger, n);
                    info!(
                        service = %g.service, frontend = %g.frontend, backend = %g.backend,
                        protocol, reason, trigger = trigger.as_str(), count = n,
                        "would delete (dry run)"
                    );
                }
                Some(Err(e)) => {
                    self.health.metrics.netlink_error(&e);
                    warn!(service = %g.service, backend = %g.backend, error = %e, "delete failed");
                }
                Some(Ok(r)) => {
                    for (_, e) in &r.failed {
                        self.health.metrics.netlink_error(e);
                    }
                    if let Some((_, e)) = r.failed.first() {
                        warn!(service = %g.service, backend = %g.backend, failed = r.failed.len(), error = %e, "some deletes failed");
                    }
                    // The latency before the count: a scrape encodes the deletion counters
                    // first, so one that shows these deletions shows their latency too.
                    if let Some(l) = latency {
                        self.health.metrics.flush_latency(l);
                    }
                    self.health
                        .metrics
                        .deleted(false, protocol, reason, trigger, r.ok);
                    if g.service.hostport_pod().is_some() {
                        self.health
                            .metrics
                            .hostport_deleted(protocol, reason, trigger, r.ok);
                    }
                    *gone
                        .entry((g.service.clone(), protocol, reason))
                        .or_default() += r.ok + r.not_found;
                    if r.ok > 0 {
                        let slot = match Proto::from_ip_proto(g.proto) {
                            Some(Proto::Udp) => Some(0),
                            Some(Proto::Tcp) => Some(1),
                            Some(Proto::Sctp) => Some(2),
                            None => None,
                        };
                        let e = recorded
                            .entry((g.service.clone(), g.backend.ip()))
                            .or_insert(([0; 3], latency));
                        if let Some(i) = slot {
                            e.0[i] += r.ok;
                        }
                    }
                    info!(
                        service = %g.service, frontend = %g.frontend, backend = %g.backend,
                        protocol, reason, trigger = trigger.as_str(), count = r.ok,
                        already_gone = r.not_found, latency_ms,
                        "flushed"
                    );
                }
            }
        }
        for ((service, backend), (flows, after)) in recorded {
            self.recorder.report(service_events::Report::Flushed {
                service,
                backend,
                flows,
                after,
            });
        }
        gone
    }
}
