//! The agent's Prometheus metrics. Names and labels are part of the interface (alerts and the
//! dashboard in deploy/ use them); `tests` below pins the rendered lines.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Trigger;
use crate::cluster::ServiceName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StaleLabels {
    pub namespace: String,
    pub service: String,
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeletedLabels {
    pub protocol: &'static str,
    pub reason: &'static str,
    pub trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetlinkErrorLabels {
    pub op: &'static str,
    pub errno: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub namespace: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WarningLabels {
    /// `Service`, `EndpointSlice` or `Node`.
    pub kind: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DumpLabels {
    /// `table` (every entry) or `backend` (filtered by reply source address).
    pub scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    /// The git revision the binary was built from (build.rs), or "unknown".
    pub revision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

/// Buckets for the flush latency: 0.5 ms to 5 s (a watch-driven flush takes milliseconds; a
/// flush behind a full-table walk of 1,000,000 entries takes about a second).
const FLUSH_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for full passes: 1 ms to 60 s.
const PASS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Every metric of the agent, registered once.
pub struct Metrics {
    registry: Registry,
    stale_flows: Family<StaleLabels, Gauge>,
    flows_deleted: Family<DeletedLabels, Counter>,
    dry_run_flows: Family<DeletedLabels, Counter>,
    flush_latency: Histogram,
    reconcile_duration: Histogram,
    reconciles: Family<TriggerLabels, Counter>,
    conntrack_entries: Gauge,
    conntrack_max: Gauge,
    netlink_errors: Family<NetlinkErrorLabels, Counter>,
    event_overruns: Counter,
    dumps: Family<DumpLabels, Counter>,
    cluster_warnings: Family<WarningLabels, Gauge>,
    /// Every (kind, reason) the warning gauge has a series for.
    warnings_known: Mutex<HashSet<WarningLabels>>,
    walks_skipped: Counter,
    breaker_open: Family<ServiceLabels, Gauge>,
    breaker_trips: Counter,
    kube_events: Family<ResultLabels, Counter>,
    hostport_deleted: Family<DeletedLabels, Counter>,
    /// Every Service the breaker gauge has a series for.
    breaker_known: Mutex<HashSet<ServiceLabels>>,
    watch_synced: Family<ResourceLabels, Gauge>,
    settling_pairs: Gauge,
    ready: Gauge,
    build_info: Family<BuildLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            stale_flows: Family::default(),
            flows_deleted: Family::default(),
            dry_run_flows: Family::default(),
            flush_latency: Histogram::new(FLUSH_BUCKETS),
            reconcile_duration: Histogram::new(PASS_BUCKETS),
            reconciles: Family::default(),
            conntrack_entries: Gauge::default(),
            conntrack_max: Gauge::default(),
            netlink_errors: Family::default(),
            event_overruns: Counter::default(),
            dumps: Family::default(),
            cluster_warnings: Family::default(),
            warnings_known: Mutex::new(HashSet::new()),
            walks_skipped: Counter::default(),
            breaker_open: Family::default(),
            breaker_trips: Counter::default(),
            kube_events: Family::default(),
            hostport_deleted: Family::default(),
            breaker_known: Mutex::new(HashSet::new()),
            watch_synced: Family::default(),
            settling_pairs: Gauge::default(),
            ready: Gauge::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ctreap_stale_flows",
            "Conntrack entries whose backend is gone or not serving, by Service, from the last full pass",
            m.stale_flows.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "ctreap_flows_deleted",
            "Conntrack entries deleted, by protocol, reason and trigger",
            m.flows_deleted.clone(),
        );
        registry.register(
            "ctreap_dry_run_flows",
            "Conntrack entries a --dry-run agent would have deleted",
            m.dry_run_flows.clone(),
        );
        registry.register(
            "ctreap_flush_latency_seconds",
            "From a watch event's arrival to the kernel's acknowledgement of the flush it caused",
            m.flush_latency.clone(),
        );
        registry.register(
            "ctreap_reconcile_duration_seconds",
            "Duration of a full pass: dump, verdicts and deletes",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "ctreap_reconciles",
            "Full passes run, by trigger",
            m.reconciles.clone(),
        );
        registry.register(
            "ctreap_conntrack_entries",
            "Entries in the node's conntrack table",
            m.conntrack_entries.clone(),
        );
        registry.register(
            "ctreap_conntrack_max",
            "nf_conntrack_max: the table's capacity",
            m.conntrack_max.clone(),
        );
        registry.register(
            "ctreap_netlink_errors",
            "ctnetlink requests the kernel refused, by operation and errno",
            m.netlink_errors.clone(),
        );
        registry.register(
            "ctreap_event_overruns",
            "Conntrack event socket overruns (ENOBUFS); each one triggers a full pass",
            m.event_overruns.clone(),
        );
        registry.register(
            "ctreap_conntrack_dumps",
            "Kernel walks of the conntrack table, by scope: the whole table, or one backend address",
            m.dumps.clone(),
        );
        registry.register(
            "ctreap_cluster_warnings",
            "API objects the Service map skips in part or whole (each is logged once per change), by kind and reason",
            m.cluster_warnings.clone(),
        );
        registry.register(
            "ctreap_walks_skipped",
            "Departed backend addresses that needed no kernel walk: no flow to them on this node",
            m.walks_skipped.clone(),
        );
        registry.register(
            "ctreap_circuit_breaker_open",
            "1 while a pass deleting this Service's flows is held back by the circuit breaker",
            m.breaker_open.clone(),
        );
        registry.register(
            "ctreap_circuit_breaker_trips",
            "Passes held back by the circuit breaker",
            m.breaker_trips.clone(),
        );
        registry.register(
            "ctreap_hostport_flows_deleted",
            "Of ctreap_flows_deleted_total, the entries of hostPort frontends (the CNI portmap plugin's DNAT to this node's Pods), by protocol, reason and trigger",
            m.hostport_deleted.clone(),
        );
        registry.register(
            "ctreap_kubernetes_events",
            "Kubernetes Events on Services (--events), by result: created, series_updated, capped (over --events-per-minute), dropped (queue full), failed (API error)",
            m.kube_events.clone(),
        );
        registry.register(
            "ctreap_watch_synced",
            "1 when the watch has delivered its list and is not re-listing",
            m.watch_synced.clone(),
        );
        registry.register(
            "ctreap_settling_pairs",
            "(frontend, backend) pairs whose backend left and that wait out their settle window (--grace, --move-grace) before their flows are judged",
            m.settling_pairs.clone(),
        );
        registry.register(
            "ctreap_ready",
            "1 when the agent is ready (the same as /readyz)",
            m.ready.clone(),
        );
        registry.register(
            "ctreap_build_info",
            "Always 1, labelled with the version and the git revision of the binary",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: env!("CTREAP_REVISION"),
            })
            .set(1);
        registry.register_collector(Box::new(super::process::Process));
        // Counters whose label values are known in advance start at 0, so rate() and
        // increase() see the first event.
        for trigger in super::Trigger::ALL {
            if trigger.runs_full_pass() {
                let _ = m.reconciles.get_or_create(&TriggerLabels {
                    trigger: trigger.as_str(),
                });
            }
        }
        for scope in ["table", "backend"] {
            let _ = m.dumps.get_or_create(&DumpLabels { scope });
        }
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Replaces the stale-flow gauges with the counts of a full pass (series of Services that
    /// have no stale flows any more disappear).
    pub fn set_stale_flows(
        &self,
        counts: &HashMap<(ServiceName, &'static str, &'static str), u64>,
    ) {
        self.stale_flows.clear();
        for ((svc, protocol, reason), n) in counts {
            self.stale_flows
                .get_or_create(&StaleLabels {
                    namespace: svc.namespace.to_string(),
                    service: svc.name.to_string(),
                    protocol,
                    reason,
                })
                .set(*n as i64);
        }
    }

    /// The deletion counters' series at 0 for every (protocol, reason, trigger) the agent can
    /// report: `ctreap_dry_run_flows_total` under --dry-run, else `ctreap_flows_deleted_total`.
    pub fn init_deleted(&self, dry_run: bool) {
        let family = self.deletions(dry_run);
        // not_translated is UDP's alone (reconcile::classify).
        let reasons = |protocol| match protocol {
            "udp" => &["gone", "not_serving", "not_translated"][..],
            _ => &["gone", "not_serving"][..],
        };
        for protocol in ["udp", "tcp", "sctp"] {
            for &reason in reasons(protocol) {
                for trigger in super::Trigger::ALL {
                    let _ = family.get_or_create(&DeletedLabels {
                        protocol,
                        reason,
                        trigger: trigger.as_str(),
                    });
                }
            }
        }
    }

    pub fn deleted(
        &self,
        dry_run: bool,
        protocol: &'static str,
        reason: &'static str,
        trigger: Trigger,
        n: u64,
    ) {
        self.deletions(dry_run)
            .get_or_create(&DeletedLabels {
                protocol,
                reason,
                trigger: trigger.as_str(),
            })
            .inc_by(n);
    }

    /// The counter deletions go to: `ctreap_dry_run_flows_total` under --dry-run, else
    /// `ctreap_flows_deleted_total`.
    fn deletions(&self, dry_run: bool) -> &Family<DeletedLabels, Counter> {
        if dry_run {
            &self.dry_run_flows
        } else {
            &self.flows_deleted
        }
    }

    pub fn flush_latency(&self, d: Duration) {
        self.flush_latency.observe(d.as_secs_f64());
    }

    pub fn reconciled(&self, trigger: Trigger, d: Duration) {
        self.reconcile_duration.observe(d.as_secs_f64());
        self.reconciles
            .get_or_create(&TriggerLabels {
                trigger: trigger.as_str(),
            })
            .inc();
    }

    pub fn conntrack(&self, entries: u64, max: u64) {
        self.conntrack_entries.set(entries as i64);
        self.conntrack_max.set(max as i64);
    }

    pub fn netlink_error(&self, e: &ctnetlink::Error) {
        if e.is_not_found() {
            return; // "already gone" is no error
        }
        let op = e.op().map_or("unknown", ctnetlink::Op::as_str);
        let errno = e.errno().map_or("none", ctnetlink::error::errno_name);
        self.netlink_errors
            .get_or_create(&NetlinkErrorLabels { op, errno })
            .inc();
    }

    pub fn event_overrun(&self) {
        self.event_overruns.inc();
    }

    /// `n` kernel walks of `scope` (`table` or `backend`).
    pub fn dumps(&self, scope: &'static str, n: u64) {
        self.dumps.get_or_create(&DumpLabels { scope }).inc_by(n);
    }

    /// Sets the warning gauges to `counts`; a (kind, reason) seen before and gone now is 0.
    pub fn cluster_warnings(
        &self,
        counts: &std::collections::BTreeMap<(&'static str, &'static str), u64>,
    ) {
        let mut known = self
            .warnings_known
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for l in known.iter() {
            if !counts.contains_key(&(l.kind, l.reason)) {
                self.cluster_warnings.get_or_create(l).set(0);
            }
        }
        for (&(kind, reason), &n) in counts {
            let l = WarningLabels { kind, reason };
            self.cluster_warnings.get_or_create(&l).set(n as i64);
            known.insert(l);
        }
    }

    pub fn walks_skipped(&self, n: u64) {
        self.walks_skipped.inc_by(n);
    }

    /// Sets the breaker gauge to 1 for `services` and to 0 for every other Service it was open
    /// for (a closed breaker keeps its series at 0, so alerts see it resolve).
    pub fn breaker(&self, services: &[ServiceName]) {
        let open: HashSet<ServiceLabels> = services
            .iter()
            .map(|s| ServiceLabels {
                namespace: s.namespace.to_string(),
                service: s.name.to_string(),
            })
            .collect();
        let mut previous = self.breaker_known.lock().unwrap_or_else(|e| e.into_inner());
        for l in previous.iter() {
            if !open.contains(l) {
                self.breaker_open.get_or_create(l).set(0);
            }
        }
        for l in &open {
            self.breaker_open.get_or_create(l).set(1);
        }
        previous.extend(open);
    }

    pub fn breaker_tripped(&self) {
        self.breaker_trips.inc();
    }

    /// Deletions of hostPort flows (counted in [`Metrics::deleted`] too).
    pub fn hostport_deleted(
        &self,
        protocol: &'static str,
        reason: &'static str,
        trigger: Trigger,
        n: u64,
    ) {
        self.hostport_deleted
            .get_or_create(&DeletedLabels {
                protocol,
                reason,
                trigger: trigger.as_str(),
            })
            .inc_by(n);
    }

    pub fn kube_event(&self, result: &'static str) {
        self.kube_events
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn settling(&self, pairs: usize) {
        self.settling_pairs
            .set(i64::try_from(pairs).unwrap_or(i64::MAX));
    }

    pub fn watch_synced(&self, resource: &'static str, synced: bool) {
        self.watch_synced
            .get_or_create(&ResourceLabels { resource })
            .set(i64::from(synced));
    }

    pub fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &Metrics) -> Vec<String> {
        m.encode().lines().map(str::to_owned).collect()
    }

    fn has(m: &Metrics, line: &str) {
        let all = lines(m);
        assert!(
            all.iter().any(|l| l == line),
            "no line {line:?} in:\n{}",
            all.join("\n")
        );
    }

    #[test]
    fn renders_the_names_the_alerts_use() {
        let m = Metrics::new();
        m.deleted(false, "udp", "gone", Trigger::Watch, 5);
        m.deleted(true, "tcp", "not_serving", Trigger::Resync, 2);
        m.flush_latency(Duration::from_millis(3));
        m.reconciled(Trigger::Startup, Duration::from_millis(20));
        m.conntrack(12, 262144);
        m.event_overrun();
        m.watch_synced("endpointslices", true);
        m.ready(true);
        let svc = ServiceName {
            namespace: "default".into(),
            name: "dns".into(),
        };
        let mut stale = HashMap::new();
        stale.insert((svc.clone(), "udp", "gone"), 7u64);
        m.set_stale_flows(&stale);
        m.breaker(std::slice::from_ref(&svc));

        has(
            &m,
            r#"ctreap_flows_deleted_total{protocol="udp",reason="gone",trigger="watch"} 5"#,
        );
        has(
            &m,
            r#"ctreap_dry_run_flows_total{protocol="tcp",reason="not_serving",trigger="resync"} 2"#,
        );
        has(&m, "ctreap_flush_latency_seconds_count 1");
        has(&m, r#"ctreap_flush_latency_seconds_bucket{le="0.005"} 1"#);
        has(&m, r#"ctreap_flush_latency_seconds_bucket{le="0.0025"} 0"#);
        has(&m, "ctreap_reconcile_duration_seconds_count 1");
        has(&m, r#"ctreap_reconciles_total{trigger="startup"} 1"#);
        has(&m, "ctreap_conntrack_entries 12");
        has(&m, "ctreap_conntrack_max 262144");
        has(&m, "ctreap_event_overruns_total 1");
        has(&m, r#"ctreap_watch_synced{resource="endpointslices"} 1"#);
        has(&m, "ctreap_ready 1");
        has(
            &m,
            r#"ctreap_stale_flows{namespace="default",service="dns",protocol="udp",reason="gone"} 7"#,
        );
        has(
            &m,
            r#"ctreap_circuit_breaker_open{namespace="default",service="dns"} 1"#,
        );
        assert_eq!(lines(&m).last().map(String::as_str), Some("# EOF"));

        // A closed breaker keeps its series at 0; a pass without stale flows clears the gauge.
        m.breaker(&[]);
        m.set_stale_flows(&HashMap::new());
        has(
            &m,
            r#"ctreap_circuit_breaker_open{namespace="default",service="dns"} 0"#,
        );
        assert!(!m.encode().contains("ctreap_stale_flows{"));
    }

    #[test]
    fn already_gone_is_no_netlink_error() {
        let m = Metrics::new();
        m.netlink_error(&ctnetlink::Error::Kernel {
            op: ctnetlink::Op::Delete,
            errno: libc::ENOENT,
        });
        m.netlink_error(&ctnetlink::Error::Kernel {
            op: ctnetlink::Op::Flush,
            errno: libc::EPERM,
        });
        assert!(!m.encode().contains(r#"errno="ENOENT""#));
        has(
            &m,
            r#"ctreap_netlink_errors_total{op="flush",errno="EPERM"} 1"#,
        );
    }
}
