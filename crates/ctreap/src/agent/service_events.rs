//! The Service's own record of what the agent did for it: Kubernetes Events
//! (`events.k8s.io/v1`), what operators read first with `kubectl describe service` and
//! `kubectl get events`.
//!
//! - The flows of a backend that left were deleted: a `Normal` Event `StaleFlowsDeleted`
//!   regarding the Service, this node as the reporting instance, the backend, the flows per
//!   protocol and how long after its removal was seen in the note.
//! - A pass the circuit breaker held back: a `Warning` Event `StaleFlowsHeld` on each Service
//!   it would have emptied, once per hold.
//!
//! Bounded, so that a rollout cannot flood the API server ([`Limiter`]): one Event per Service
//! and reason per node, then at most one write a minute for it (repeats go into the Event's
//! `series.count`, as the kubelet's events do), and at most `--events-per-minute` writes a
//! minute from the node altogether. The loop hands reports over a bounded channel and never
//! waits for the API server: a full channel drops the report (counted).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::http::Health;
use crate::cluster::ServiceName;

/// `reportingController` of every Event the agent writes.
pub const CONTROLLER: &str = "ctreap.io/agent";
/// The reason of the Event for deleted flows.
pub const DELETED: &str = "StaleFlowsDeleted";
/// The reason of the Event for a pass the circuit breaker held.
pub const HELD: &str = "StaleFlowsHeld";

/// How long one Event collects its repeats before it is written again (tests shorten it with
/// the hidden `--debug-events-window`), and the window of the node's cap.
pub const WINDOW: Duration = Duration::from_secs(60);
/// A series with no repeat for this long is forgotten: the next occurrence is a new Event
/// (client-go's and kube-rs's event caches keep theirs 6 minutes).
const TTL: Duration = Duration::from_secs(6 * 60);
/// Reports waiting for the writer; past this, reports are dropped (counted).
const QUEUE: usize = 1024;

/// What the loop tells the writer.
#[derive(Clone, Debug)]
pub(super) enum Report {
    /// The flows of `backend` (every port of it) were deleted for `service`: counts by
    /// protocol (UDP, TCP, SCTP), and how long after the watch event that planned it.
    Flushed {
        service: ServiceName,
        backend: IpAddr,
        flows: [u64; 3],
        after: Option<Duration>,
    },
    /// The circuit breaker held a pass that would have left `service` without a serving
    /// backend.
    Held {
        service: ServiceName,
        to_delete: u64,
        nat_flows: u64,
    },
}

impl Report {
    fn key(&self) -> Key {
        match self {
            Report::Flushed { service, .. } => Key {
                service: service.clone(),
                reason: DELETED,
            },
            Report::Held { service, .. } => Key {
                service: service.clone(),
                reason: HELD,
            },
        }
    }

    /// The Event's note (at most 1 kB; these are far shorter).
    fn note(&self, node: &str) -> String {
        match self {
            Report::Flushed {
                backend,
                flows,
                after,
                ..
            } => {
                let total: u64 = flows.iter().sum();
                let mut note =
                    format!("backend {backend} left: {total} flows deleted on node {node} (");
                let mut first = true;
                for (n, p) in flows.iter().zip(["UDP", "TCP", "SCTP"]) {
                    if *n > 0 {
                        let _ = write!(note, "{}{n} {p}", if first { "" } else { ", " });
                        first = false;
                    }
                }
                note.push(')');
                if let Some(a) = after {
                    let _ = write!(note, ", {} ms after its removal was seen", a.as_millis());
                }
                note
            }
            Report::Held {
                to_delete,
                nat_flows,
                ..
            } => format!(
                "circuit breaker on node {node}: a pass would delete {to_delete} of the node's {nat_flows} NAT flows and leave this Service without a serving backend; held until a fresh list confirms the view"
            ),
        }
    }

    fn warning(&self) -> bool {
        matches!(self, Report::Held { .. })
    }
}

/// An Event's identity on this node: the Service and the reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) service: ServiceName,
    pub(super) reason: &'static str,
}

/// A write the limiter allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Write {
    /// A new Event for `key`.
    Create(Key),
    /// The Event `name` made for `key` has been seen `count` times.
    Series { key: Key, name: String, count: i32 },
}

#[derive(Debug)]
struct Series {
    /// The Event's name, once created.
    name: Option<String>,
    /// Occurrences the API server knows of.
    count: i32,
    /// Occurrences since.
    pending: i32,
    last_write: Instant,
    last_seen: Instant,
}

/// Which Event writes go out, and when: pure, the clock passed in.
#[derive(Debug)]
pub(super) struct Limiter {
    per_minute: usize,
    /// How long an Event collects repeats between two writes ([`WINDOW`]).
    every: Duration,
    series: HashMap<Key, Series>,
    /// The node's writes in the last minute.
    writes: VecDeque<Instant>,
    /// Creates refused by the cap since it was last reported.
    pub(super) capped: u64,
}

impl Limiter {
    pub(super) fn new(per_minute: u32, every: Duration) -> Limiter {
        Limiter {
            per_minute: per_minute as usize,
            every,
            series: HashMap::new(),
            writes: VecDeque::new(),
            capped: 0,
        }
    }

    /// Takes one write from the node's budget, if the last minute has room.
    fn allow(&mut self, now: Instant) -> bool {
        while self
            .writes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.writes.pop_front();
        }
        if self.writes.len() >= self.per_minute {
            return false;
        }
        self.writes.push_back(now);
        true
    }

    /// An occurrence of `key`: a new Event if it has none, else a repeat counted into its
    /// series (written by [`Limiter::due`]). `None` also when the node's cap refuses the
    /// create (counted in `capped`).
    pub(super) fn occur(&mut self, key: &Key, now: Instant) -> Option<Write> {
        if let Some(s) = self.series.get_mut(key) {
            s.pending += 1;
            s.last_seen = now;
            return None;
        }
        if !self.allow(now) {
            self.capped += 1;
            return None;
        }
        self.series.insert(
            key.clone(),
            Series {
                name: None,
                count: 1,
                pending: 0,
                last_write: now,
                last_seen: now,
            },
        );
        Some(Write::Create(key.clone()))
    }

    /// The Event for `key` was created as `name` (or, with `None`, could not be: the next
    /// occurrence tries again).
    pub(super) fn created(&mut self, key: &Key, name: Option<String>) {
        match name {
            Some(n) => {
                if let Some(s) = self.series.get_mut(key) {
                    s.name = Some(n);
                }
            }
            None => {
                self.series.remove(key);
            }
        }
    }

    /// The series writes due: repeats of an Event whose last write is a minute old, as the
    /// node's budget allows (the rest wait, still counted); and forgets series idle for
    /// [`TTL`].
    pub(super) fn due(&mut self, now: Instant) -> Vec<Write> {
        let mut ready: Vec<Key> = self
            .series
            .iter()
            .filter(|(_, s)| {
                s.pending > 0
                    && s.name.is_some()
                    && now.saturating_duration_since(s.last_write) >= self.every
            })
            .map(|(k, _)| k.clone())
            .collect();
        // The oldest first, so a capped node still writes every series in turn.
        ready.sort_by_key(|k| self.series[k].last_write);
        let mut out = Vec::new();
        for k in ready {
            if !self.allow(now) {
                break;
            }
            let s = self.series.get_mut(&k).expect("listed above");
            s.count += s.pending;
            s.pending = 0;
            s.last_write = now;
            out.push(Write::Series {
                key: k,
                name: s.name.clone().expect("filtered above"),
                count: s.count,
            });
        }
        self.series
            .retain(|_, s| s.pending > 0 || now.saturating_duration_since(s.last_seen) < TTL);
        out
    }
}

/// The loop's end of the writer: never blocks.
#[derive(Clone)]
pub(super) struct Recorder {
    tx: Option<mpsc::Sender<Report>>,
    health: Arc<Health>,
}

impl Recorder {
    /// A recorder that records nothing (`--events=false`).
    pub(super) fn off(health: Arc<Health>) -> Recorder {
        Recorder { tx: None, health }
    }

    pub(super) fn report(&self, r: Report) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(r).is_err() {
            self.health.metrics.kube_event("dropped");
        }
    }
}

/// Starts the writer task: Events in the Services' namespaces through `client`, reported by
/// `node`.
pub(super) fn spawn(
    client: kube::Client,
    node: String,
    per_minute: u32,
    every: Duration,
    health: Arc<Health>,
) -> Recorder {
    let (tx, mut rx) = mpsc::channel::<Report>(QUEUE);
    let h = health.clone();
    tokio::spawn(async move {
        let mut w = Writer {
            client,
            node,
            limiter: Limiter::new(per_minute, every),
            health: h,
            per_minute,
            unlogged: 0,
            cap_logged: None,
        };
        let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => w.on_report(r).await,
                    None => break,
                },
                _ = tick.tick() => w.on_tick().await,
            }
        }
        debug!("Kubernetes Events writer stopped");
    });
    Recorder {
        tx: Some(tx),
        health,
    }
}

struct Writer {
    client: kube::Client,
    node: String,
    limiter: Limiter,
    health: Arc<Health>,
    per_minute: u32,
    /// Creates the cap refused since the last WARN line, and when that line was.
    unlogged: u64,
    cap_logged: Option<Instant>,
}

impl Writer {
    async fn on_report(&mut self, r: Report) {
        let key = r.key();
        if let Some(Write::Create(key)) = self.limiter.occur(&key, Instant::now()) {
            let res = self.create(&key, r.note(&self.node), r.warning()).await;
            match res {
                Ok(name) => {
                    self.health.metrics.kube_event("created");
                    self.limiter.created(&key, Some(name));
                }
                Err(e) => {
                    self.health.metrics.kube_event("failed");
                    warn!(service = %key.service, reason = key.reason, error = %e, "recording a Kubernetes Event failed (RBAC: create on events.k8s.io events?)");
                    self.limiter.created(&key, None);
                }
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if self.limiter.capped > 0 {
            for _ in 0..self.limiter.capped {
                self.health.metrics.kube_event("capped");
            }
            self.unlogged += self.limiter.capped;
            self.limiter.capped = 0;
        }
        // One line a minute at most while the cap refuses Events.
        if self.unlogged > 0 && self.cap_logged.is_none_or(|t| now - t >= WINDOW) {
            warn!(
                not_recorded = self.unlogged,
                per_minute = self.per_minute,
                "Kubernetes Events: this node's cap of {} writes a minute is reached; {} Events not recorded (--events-per-minute)",
                self.per_minute,
                self.unlogged
            );
            self.unlogged = 0;
            self.cap_logged = Some(now);
        }
        // Only series writes come due; creates go out on their report.
        for w in self.limiter.due(now) {
            let Write::Series { key, name, count } = w else {
                continue;
            };
            let api: Api<Event> = Api::namespaced(self.client.clone(), &key.service.namespace);
            let patch = serde_json::json!({"series": {
                "count": count,
                "lastObservedTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.health.metrics.kube_event("series_updated"),
                Err(e) => {
                    self.health.metrics.kube_event("failed");
                    warn!(service = %key.service, event = %name, error = %e, "updating a Kubernetes Event's series failed (RBAC: patch on events.k8s.io events?)");
                }
            }
        }
    }

    /// The uid of object `ns/name` of type `K`, if it still exists.
    async fn uid_of<K>(&self, ns: &str, name: &str) -> Option<String>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::namespaced(self.client.clone(), ns)
            .get_metadata_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|m| m.metadata.uid)
    }

    /// Creates the Event for `key`; its name.
    async fn create(&self, key: &Key, note: String, warning: bool) -> Result<String, kube::Error> {
        let ns = &*key.service.namespace;
        // A hostPort's flows are the Pod's record (`cluster/pods.rs`).
        let (kind, name) = match key.service.hostport_pod() {
            Some(pod) => ("Pod", pod),
            None => ("Service", &*key.service.name),
        };
        // The object's uid, which `kubectl describe` selects its Events by; an object already
        // deleted (a replaced Pod) still gets its Event, without.
        let uid = if kind == "Pod" {
            self.uid_of::<Pod>(ns, name).await
        } else {
            self.uid_of::<Service>(ns, name).await
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.to_owned()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("DeleteFlows".into()),
            reason: Some(key.reason.into()),
            note: Some(note),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
                namespace: Some(ns.to_owned()),
                name: Some(name.to_owned()),
                uid,
                ..ObjectReference::default()
            }),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.node.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let made = api.create(&PostParams::default(), &ev).await?;
        info!(service = %key.service, reason = key.reason, event = made.metadata.name.as_deref().unwrap_or(""), "recorded a Kubernetes Event");
        Ok(made.metadata.name.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key {
            service: ServiceName {
                namespace: "default".into(),
                name: format!("svc-{i}").as_str().into(),
            },
            reason: DELETED,
        }
    }

    /// One Service flushed 100 times in a minute: one create, then one series write a
    /// minute later with every repeat in its count, then nothing until the next repeat.
    #[test]
    fn repeats_go_into_one_series_write_a_minute() {
        let t0 = Instant::now();
        let mut l = Limiter::new(10, WINDOW);
        assert_eq!(l.occur(&key(0), t0), Some(Write::Create(key(0))));
        l.created(&key(0), Some("svc-0.1".into()));
        for i in 1..100u64 {
            assert_eq!(l.occur(&key(0), t0 + Duration::from_millis(i * 500)), None);
        }
        assert!(
            l.due(t0 + Duration::from_secs(59)).is_empty(),
            "within the window"
        );
        assert_eq!(
            l.due(t0 + WINDOW),
            [Write::Series {
                key: key(0),
                name: "svc-0.1".into(),
                count: 100
            }]
        );
        assert!(l.due(t0 + WINDOW * 2).is_empty(), "no repeat since");
        // Forgotten after TTL without repeats: the next occurrence is a new Event.
        let later = t0 + WINDOW + TTL;
        assert!(l.due(later).is_empty());
        assert_eq!(l.occur(&key(0), later), Some(Write::Create(key(0))));
    }

    /// A burst of 1,000 departures over 500 Services within a minute: at most `per_minute`
    /// writes a minute from the node, every refused create counted, and every Service that got
    /// an Event still gets its series written, in turn, as the budget allows.
    #[test]
    fn the_node_cap_holds_under_a_burst_of_1000_departures() {
        let t0 = Instant::now();
        let mut l = Limiter::new(10, WINDOW);
        let mut writes: Vec<(Instant, Write)> = Vec::new();
        for i in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 50); // 1,000 in 50 s
            if let Some(w) = l.occur(&key(i % 500), now) {
                if let Write::Create(k) = &w {
                    l.created(k, Some(format!("{}.x", k.service.name)));
                }
                writes.push((now, w));
            }
            writes.extend(l.due(now).into_iter().map(|w| (now, w)));
        }
        for s in 0..600u64 {
            let now = t0 + Duration::from_secs(50 + s);
            writes.extend(l.due(now).into_iter().map(|w| (now, w)));
        }
        // The cap, over every minute-long window.
        for (i, (t, _)) in writes.iter().enumerate() {
            let in_window = writes[i..]
                .iter()
                .take_while(|(u, _)| u.saturating_duration_since(*t) < WINDOW)
                .count();
            assert!(
                in_window <= 10,
                "{in_window} writes within a minute from {t:?}"
            );
        }
        let creates = writes
            .iter()
            .filter(|(_, w)| matches!(w, Write::Create(_)))
            .count();
        assert_eq!(creates, 10, "the first minute's budget");
        assert_eq!(
            l.capped,
            1000 - 10 - 10,
            "refused creates (10 repeats of created Events counted, not refused)"
        );
        // Every created Event's repeats were written once the budget allowed.
        let series: Vec<i32> = writes
            .iter()
            .filter_map(|(_, w)| match w {
                Write::Series { count, .. } => Some(*count),
                _ => None,
            })
            .collect();
        assert_eq!(series.len(), 10, "{series:?}");
        assert!(series.iter().all(|c| *c == 2), "{series:?}");
    }

    #[test]
    fn notes_name_the_backend_the_flows_and_the_delay() {
        let r = Report::Flushed {
            service: key(0).service,
            backend: "10.244.1.5".parse().expect("addr"),
            flows: [10, 2, 0],
            after: Some(Duration::from_millis(57)),
        };
        assert_eq!(
            r.note("node-1"),
            "backend 10.244.1.5 left: 12 flows deleted on node node-1 (10 UDP, 2 TCP), 57 ms after its removal was seen"
        );
    }
}
