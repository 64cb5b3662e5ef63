//! The one rule every path deletes by: is this conntrack entry deletable now, and why.
//!
//! The watch path (pairs the live model recorded, [`planned`] with their [`Settle`] window,
//! then [`deletable_planned`]), the conntrack-event path and the full passes ([`deletable`])
//! all call this module; `ctreap stale` reports the same verdicts ([`classify`]). Pure: a map,
//! a flow and a policy in, a decision out.

use std::collections::HashMap;
use std::net::SocketAddr;

use ctnetlink::Entry;

use super::plan::{FlushKey, Policy};
use super::verdict::{Decision, Flow, StaleReason, Verdict, classify, untranslated_is_stale};
use crate::cluster::{Change, FrontendKey, Pair, Proto, ServiceMap, ServiceName};

/// Why an entry is deleted: the Service it concerns, its protocol, the reason, and the pair.
/// One log line and one set of metric labels per distinct value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stale {
    pub service: ServiceName,
    /// IP protocol number.
    pub proto: u8,
    pub reason: StaleReason,
    pub frontend: SocketAddr,
    pub backend: SocketAddr,
}

/// The verdict's view of a conntrack entry: `None` for entries without ports (ICMP, GRE),
/// which no Service translates.
pub fn flow_of(e: &Entry) -> Option<Flow> {
    Some(Flow {
        proto: e.orig.proto.num,
        orig_src: e.orig.src,
        orig_dst: e.orig.dst,
        orig_sport: e.orig.proto.src_port?,
        orig_dport: e.orig.proto.dst_port?,
        reply_src: e.reply.src,
        reply_dst: e.reply.dst,
        reply_sport: e.reply.proto.src_port?,
        reply_dport: e.reply.proto.dst_port?,
        zone: e.zone.unwrap_or(0),
    })
}

/// The (frontend, backend) pair of a flow, as a flush names it.
pub fn key_of(f: &Flow) -> FlushKey {
    FlushKey {
        proto: f.proto,
        orig_dst: f.orig_dst,
        orig_dport: f.orig_dport,
        reply_src: f.reply_src,
        reply_sport: f.reply_sport,
    }
}

/// The entry is stale under `map`, `policy` deletes that verdict for its protocol, and its
/// Service did not opt out ([`IGNORE_ANNOTATION`](crate::cluster::IGNORE_ANNOTATION)).
pub fn deletable(map: &ServiceMap, flow: &Flow, policy: &Policy) -> Option<Stale> {
    deletable_decision(&classify(map, flow), policy)
}

/// [`deletable`] for an entry already classified (`d` is `classify(map, flow)`): for callers
/// that also report the verdict (full passes, `ctreap stale`), so an entry is classified once.
///
/// A hostPort frontend's backend that the model does not list is never gone by this rule:
/// the portmap plugin writes a new pod's DNAT with its sandbox, before the kubelet reports the
/// pod's IP, so flows to a pod the API has not told of yet are normal there (for a Service,
/// kube-proxy writes its rules after the API tells of the endpoint). Only a backend seen
/// leaving goes ([`deletable_planned`]).
pub fn deletable_decision(d: &Decision, policy: &Policy) -> Option<Stale> {
    if unlisted_hostport_backend(d) {
        return None;
    }
    decision_deletes(d, policy)
}

/// The verdict is `gone` on a hostPort frontend (`cluster/pods.rs`): the backend may be a pod
/// whose IP the API has not reported yet.
pub fn unlisted_hostport_backend(d: &Decision) -> bool {
    d.verdict == Verdict::Stale(StaleReason::Gone)
        && d.port.is_some_and(|p| p.service().hostport_pod().is_some())
}

/// [`deletable_decision`] without the hostPort rule: for backends seen leaving.
fn decision_deletes(d: &Decision, policy: &Policy) -> Option<Stale> {
    let Verdict::Stale(reason) = d.verdict else {
        return None;
    };
    let port = d.port?;
    if !policy.deletes(d.verdict, d.proto) || port.ignored() {
        return None;
    }
    Some(Stale {
        service: port.service().clone(),
        proto: d.proto,
        reason,
        frontend: d.frontend,
        backend: d.backend,
    })
}

/// Watch-planned pairs, each with the Service it belonged to when its backend left.
pub type Planned = HashMap<FlushKey, ServiceName>;

/// How long a watch-planned pair waits before its flows are judged, on the newest view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Settle {
    /// `--grace`: the backend was already terminating or not serving before it left (the
    /// EndpointSlice controller reports a pod deleted the normal way so first), or it is still
    /// listed, now not serving.
    Grace,
    /// `--move-grace` (at least `--grace`): the backend vanished while ready, serving and not
    /// terminating. Two things do that: an endpoint moving between two EndpointSlices of its
    /// Service (listed in neither between the writer's two writes), and a force-deleted pod.
    /// Waiting tells them apart: a move comes back, a force-delete does not.
    Vanished,
}

/// The settle window of a recorded change: [`Settle::Vanished`] for a backend that was ready,
/// serving and not terminating just before it stopped being a backend of the frontend at all;
/// never for a hostPort's pod (`pod/NAME`), which has no slices to move between.
pub fn settle(c: &Change) -> Settle {
    if c.service.hostport_pod().is_some() {
        // A hostPort's pod does not move between slices: vanished is force-deleted.
        return Settle::Grace;
    }
    match (c.left_from, c.new) {
        (Some(old), None) if old.ready && old.serving && !old.terminating => Settle::Vanished,
        _ => Settle::Grace,
    }
}

/// The recorded changes `policy` deletes, by settle window:
/// - `changes`: a backend that got worse and is deletable now but was not before (what was
///   deletable already was an earlier flush's business), of a Service that did not opt out;
/// - `gained`: frontends that gained a serving backend (`ClusterState::take_gained`). Their
///   untranslated entries (made while nothing could translate them) are stale for the
///   protocols `untranslated_is_stale` names (UDP); one key each, the frontend as its own reply
///   source, settled with `--grace` (nothing about a gain can be undone by a second write).
pub fn planned(
    changes: HashMap<Pair, Change>,
    gained: HashMap<FrontendKey, ServiceName>,
    policy: &Policy,
) -> HashMap<Settle, Planned> {
    let mut out: HashMap<Settle, Planned> = HashMap::new();
    for (fe, service) in gained {
        if !untranslated_is_stale(fe.proto) || !policy.gone.contains(fe.proto) {
            continue;
        }
        let key = FlushKey::pair(fe, fe.addr());
        out.entry(Settle::Grace).or_default().insert(key, service);
    }
    for (p, c) in changes {
        let proto = p.frontend.proto;
        if c.ignored
            || !policy.deletes_backend(c.new, proto)
            || policy.deletes_backend(c.old, proto)
        {
            continue;
        }
        let key = FlushKey::pair(p.frontend, p.backend);
        let window = settle(&c);
        out.entry(window).or_default().insert(key, c.service);
    }
    out
}

/// For watch-planned pairs: is this entry one of `keys`, and still deletable under `map` (the
/// model as it is now)?
///
/// A frontend gone from `map` (its Service, port or node address deleted) has no rule left to
/// translate to the backend: its entries go, named after the Service `keys` remembers.
///
/// IP reuse: a backend that was removed and has come back (same IP and port) for this frontend
/// is serving again in `map`, and [`deletable`] keeps it. The remaining race: the endpoint is
/// added to the API server after `map` was read but before the kernel acknowledges the delete
/// (a millisecond or so). A flow to the reused IP can only exist once kube-proxy has
/// programmed the new endpoint, which it does from the same event, after its own sync delay;
/// losing that race would reset a connection that was at most a few milliseconds old, once.
pub fn deletable_planned(
    map: &ServiceMap,
    flow: &Flow,
    keys: &Planned,
    policy: &Policy,
) -> Option<Stale> {
    let service = keys.get(&key_of(flow))?;
    let proto = Proto::from_ip_proto(flow.proto)?;
    if map
        .frontend(proto, flow.orig_dst, flow.orig_dport)
        .is_none()
    {
        if flow.reply_src == flow.orig_dst && flow.reply_sport == flow.orig_dport {
            return None; // never translated: not the Service's NAT traffic
        }
        return Some(Stale {
            service: service.clone(),
            proto: flow.proto,
            reason: StaleReason::Gone,
            frontend: SocketAddr::new(flow.orig_dst, flow.orig_dport),
            backend: SocketAddr::new(flow.reply_src, flow.reply_sport),
        });
    }
    // Seen leaving: a hostPort backend goes too. Named after the Service the backend left
    // (`keys`), not the frontend's owner now: they differ where two own one frontend, as a
    // hostPort's old and new Pods do.
    decision_deletes(&classify(map, flow), policy).map(|s| Stale {
        service: service.clone(),
        ..s
    })
}
