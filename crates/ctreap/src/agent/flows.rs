//! The translated flows on this node, by backend address: a departed backend's entries are
//! judged and deleted by their tuples, without a walk of the table; a backend with no flow
//! here (in a large cluster, almost every backend that leaves) costs nothing at all.
//!
//! Fed by the two things the agent reads anyway: every complete walk of the table (startup,
//! resync, overrun passes) and every conntrack NEW event. Trusted only while both hold: the
//! event socket has been reading without loss since the start of the last complete walk
//! (`nf_conntrack_events` on), and that walk was not interrupted. Otherwise
//! [`FlowIndex::flows_of`] answers "unknown" and each departed backend is walked, as before.
//!
//! A flow is kept compactly: its original tuple, zone and backend port (about 26 bytes for
//! IPv4, so 1,000,000 flows take about 26 MB). DESTROY events are not read: flows that ended
//! stay until the next complete walk prunes them, and deleting one costs an ENOENT. Above
//! [`MAX_FLOWS`] the index stops recording and is not trusted until a walk finds fewer.
//!
//! Ordering, for the flows created while a backend leaves: the listener records a NEW flow here
//! *before* it judges the flow against the model. If the agent read this index before the
//! record, the listener reads the model after the removal and judges the flow stale itself
//! (the `event` trigger); if after, the removal finds the flow here. Either way the flow goes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::reconcile::Flow;

/// Flows kept at most; beyond, the index is not trusted (every departed backend is walked).
pub const MAX_FLOWS: usize = 2_000_000;

/// One flow of a backend, without the backend address (the map key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key<A> {
    src: A,
    dst: A,
    sport: u16,
    dport: u16,
    /// The backend's port (reply source port).
    bport: u16,
    zone: u16,
    proto: u8,
}

/// A backend's flows, each with the walk epoch (mod 256) it was last seen in.
#[derive(Debug)]
enum Tuples {
    V4(HashMap<Key<[u8; 4]>, u8>),
    V6(HashMap<Key<[u8; 16]>, u8>),
}

impl Tuples {
    fn len(&self) -> usize {
        match self {
            Tuples::V4(m) => m.len(),
            Tuples::V6(m) => m.len(),
        }
    }

    /// Inserts (or refreshes) `f`; returns whether it is new. `None`: the flow's addresses
    /// are not of this backend's family (no NAT crosses families: not indexed).
    fn insert(&mut self, f: &Flow, epoch: u8) -> Option<bool> {
        match (self, f.orig_src, f.orig_dst) {
            (Tuples::V4(m), IpAddr::V4(s), IpAddr::V4(d)) => {
                Some(m.insert(key(f, s.octets(), d.octets()), epoch).is_none())
            }
            (Tuples::V6(m), IpAddr::V6(s), IpAddr::V6(d)) => {
                Some(m.insert(key(f, s.octets(), d.octets()), epoch).is_none())
            }
            _ => None,
        }
    }

    fn retain(&mut self, epoch: u8) {
        match self {
            Tuples::V4(m) => m.retain(|_, e| *e == epoch),
            Tuples::V6(m) => m.retain(|_, e| *e == epoch),
        }
    }

    fn flows(&self, backend: IpAddr, out: &mut Vec<Flow>) {
        match self {
            Tuples::V4(m) => out.extend(
                m.keys()
                    .map(|k| flow(k, backend, |a| Ipv4Addr::from(a).into())),
            ),
            Tuples::V6(m) => out.extend(
                m.keys()
                    .map(|k| flow(k, backend, |a| Ipv6Addr::from(a).into())),
            ),
        }
    }
}

fn key<A>(f: &Flow, src: A, dst: A) -> Key<A> {
    Key {
        src,
        dst,
        sport: f.orig_sport,
        dport: f.orig_dport,
        bport: f.reply_sport,
        zone: f.zone,
        proto: f.proto,
    }
}

/// The flow a key stands for. The reply destination is not kept (the verdict does not read
/// it): it is given as the original source.
fn flow<A: Copy>(k: &Key<A>, backend: IpAddr, ip: impl Fn(A) -> IpAddr) -> Flow {
    Flow {
        proto: k.proto,
        orig_src: ip(k.src),
        orig_dst: ip(k.dst),
        orig_sport: k.sport,
        orig_dport: k.dport,
        reply_src: backend,
        reply_dst: ip(k.src),
        reply_sport: k.bport,
        reply_dport: k.sport,
        zone: k.zone,
    }
}

#[derive(Debug, Default)]
struct Inner {
    backends: HashMap<IpAddr, Tuples>,
    flows: usize,
    epoch: u64,
    /// More than MAX_FLOWS were offered since the last walk began.
    full: bool,
    /// The event losses counted when the index became trusted; `None`: not trusted.
    trusted_at: Option<u64>,
}

impl Inner {
    fn insert(&mut self, f: &Flow, epoch: u64) {
        if !translated(f) {
            return;
        }
        if self.flows >= MAX_FLOWS {
            self.full = true;
            return;
        }
        let tuples = self.backends.entry(f.reply_src).or_insert_with(|| {
            if f.reply_src.is_ipv4() {
                Tuples::V4(HashMap::new())
            } else {
                Tuples::V6(HashMap::new())
            }
        });
        if tuples.insert(f, epoch as u8) == Some(true) {
            self.flows += 1;
        }
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FlowIndex {
    inner: Mutex<Inner>,
    /// Event socket failures, overruns and events turned off, so far.
    losses: AtomicU64,
    /// The event socket is open and the kernel sends events.
    listening: AtomicBool,
}

/// What a complete walk remembers from its start.
#[derive(Clone, Copy, Debug)]
pub struct WalkMark {
    epoch: u64,
    losses: u64,
    listening: bool,
}

/// A flow translated by NAT: its reply source is not its original destination.
pub fn translated(f: &Flow) -> bool {
    !(f.reply_src == f.orig_dst && f.reply_sport == f.orig_dport)
}

impl FlowIndex {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A NEW event (the listener, before it judges the flow).
    pub fn saw(&self, flow: &Flow) {
        let mut inner = self.inner();
        let epoch = inner.epoch;
        inner.insert(flow, epoch);
    }

    /// The event socket opened and the kernel sends events (`true`), or the socket failed or
    /// events are off (`false`).
    pub fn listening(&self, on: bool) {
        if !on {
            self.lost();
        }
        self.listening.store(on, Ordering::SeqCst);
    }

    /// The event socket is open and the kernel sends events.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Events were lost (ENOBUFS).
    pub fn lost(&self) {
        self.losses.fetch_add(1, Ordering::SeqCst);
    }

    /// A complete walk of the table starts.
    pub fn begin_walk(&self) -> WalkMark {
        let mut inner = self.inner();
        inner.epoch += 1;
        inner.full = false;
        WalkMark {
            epoch: inner.epoch,
            losses: self.losses.load(Ordering::SeqCst),
            listening: self.listening.load(Ordering::SeqCst),
        }
    }

    /// An entry the walk begun at `mark` read.
    pub fn walk_saw(&self, mark: WalkMark, flow: &Flow) {
        self.inner().insert(flow, mark.epoch);
    }

    /// The walk begun at `mark` ended; `complete`: it read the whole table (not interrupted,
    /// not cancelled). Flows neither read by it nor in a NEW event since its start are
    /// forgotten.
    pub fn end_walk(&self, mark: WalkMark, complete: bool) {
        let mut inner = self.inner();
        if !complete {
            inner.trusted_at = None;
            return;
        }
        let epoch = mark.epoch as u8;
        let mut flows = 0;
        inner.backends.retain(|_, t| {
            t.retain(epoch);
            flows += t.len();
            t.len() > 0
        });
        inner.flows = flows;
        let losses = self.losses.load(Ordering::SeqCst);
        let ok = mark.listening
            && self.listening.load(Ordering::SeqCst)
            && losses == mark.losses
            && !inner.full;
        inner.trusted_at = ok.then_some(losses);
    }

    fn trusted(&self, inner: &Inner) -> bool {
        inner.trusted_at == Some(self.losses.load(Ordering::SeqCst))
    }

    /// The translated flows towards `backend` on this node (their tuples as last seen), or
    /// `None` when the index cannot say (not trusted): then walk.
    pub fn flows_of(&self, backend: IpAddr) -> Option<Vec<Flow>> {
        let inner = self.inner();
        if !self.trusted(&inner) {
            return None;
        }
        let mut out = Vec::new();
        if let Some(t) = inner.backends.get(&backend) {
            out.reserve(t.len());
            t.flows(backend, &mut out);
        }
        Some(out)
    }

    /// Translated flows known, if the index is trusted (the node's Service flows, as near as
    /// the index knows them: what the circuit breaker weighs a deletion against).
    pub fn total(&self) -> Option<u64> {
        let inner = self.inner();
        self.trusted(&inner).then_some(inner.flows as u64)
    }

    /// Backend addresses with flows here (for logs).
    pub fn backends(&self) -> usize {
        self.inner().backends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn flow(dst: &str, backend: &str, sport: u16) -> Flow {
        let v6 = dst.contains(':');
        let client = if v6 { ip("fd00::9") } else { ip("198.18.0.9") };
        Flow {
            proto: 17,
            orig_src: client,
            orig_dst: ip(dst),
            orig_sport: sport,
            orig_dport: 53,
            reply_src: ip(backend),
            reply_dst: client,
            reply_sport: 5353,
            reply_dport: sport,
            zone: 0,
        }
    }

    fn walk(ix: &FlowIndex, flows: &[Flow], complete: bool) {
        let mark = ix.begin_walk();
        for f in flows {
            ix.walk_saw(mark, f);
        }
        ix.end_walk(mark, complete);
    }

    #[test]
    fn untrusted_until_a_complete_walk_with_the_listener_running() {
        let ix = FlowIndex::default();
        let f = flow("10.96.0.10", "10.0.0.2", 40000);
        assert_eq!(ix.flows_of(ip("10.0.0.1")), None, "nothing known yet");
        walk(&ix, &[f], true);
        assert_eq!(
            ix.flows_of(ip("10.0.0.1")),
            None,
            "the listener was not running during the walk"
        );
        ix.listening(true);
        walk(&ix, &[f], false);
        assert_eq!(ix.flows_of(ip("10.0.0.1")), None, "an interrupted walk");
        walk(&ix, &[f], true);
        assert_eq!(ix.flows_of(ip("10.0.0.1")), Some(vec![]));
        assert_eq!(ix.flows_of(ip("10.0.0.2")), Some(vec![f]));
        assert_eq!(ix.total(), Some(1));
    }

    #[test]
    fn events_add_and_losses_distrust() {
        let ix = FlowIndex::default();
        ix.listening(true);
        walk(&ix, &[], true);
        let f = flow("10.96.0.10", "10.0.0.3", 40001);
        ix.saw(&f);
        assert_eq!(ix.flows_of(ip("10.0.0.3")), Some(vec![f]), "a NEW event");
        ix.saw(&flow("10.0.0.4", "10.0.0.4", 40002).clone());
        let untranslated = Flow {
            reply_sport: 53,
            ..flow("10.0.0.4", "10.0.0.4", 40002)
        };
        ix.saw(&untranslated);
        assert_eq!(
            ix.flows_of(ip("10.0.0.5")),
            Some(vec![]),
            "an untranslated flow is no backend's"
        );
        ix.lost();
        assert_eq!(ix.flows_of(ip("10.0.0.3")), None, "events lost: walk again");
        walk(&ix, &[f], true);
        assert_eq!(ix.flows_of(ip("10.0.0.3")), Some(vec![f]));
        ix.listening(false);
        assert_eq!(ix.flows_of(ip("10.0.0.3")), None, "the socket failed");
    }

    #[test]
    fn a_walk_forgets_what_it_did_not_see_but_keeps_what_events_added_meanwhile() {
        let ix = FlowIndex::default();
        ix.listening(true);
        let a = flow("10.96.0.10", "10.0.0.1", 40000);
        let b = flow("10.96.0.10", "10.0.0.2", 40001);
        let c = flow("fd00::10", "fd00::5", 40002);
        walk(&ix, &[a, b], true);
        let mark = ix.begin_walk();
        ix.saw(&c); // created during the walk
        ix.walk_saw(mark, &a);
        ix.end_walk(mark, true);
        assert_eq!(ix.flows_of(ip("10.0.0.1")), Some(vec![a]));
        assert_eq!(ix.flows_of(ip("10.0.0.2")), Some(vec![]), "its flow ended");
        assert_eq!(ix.flows_of(ip("fd00::5")), Some(vec![c]), "IPv6 kept too");
        assert_eq!((ix.backends(), ix.total()), (2, Some(2)));
    }

    #[test]
    fn the_reconstructed_flow_is_judged_and_deleted_like_the_entry() {
        let ix = FlowIndex::default();
        ix.listening(true);
        let f = Flow {
            zone: 7,
            ..flow("10.96.0.10", "10.0.0.1", 40000)
        };
        walk(&ix, &[f], true);
        let got = ix.flows_of(ip("10.0.0.1")).expect("trusted");
        assert_eq!(got, vec![f], "every field the verdict and the delete read");
    }
}
