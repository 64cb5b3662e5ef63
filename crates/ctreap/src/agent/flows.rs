//! Which backend addresses have translated flows on this node: lets a removal skip the kernel
//! walk when the backend that left has no flow here, which in a large cluster is almost every
//! removal (any node may hold flows to any pod, but a given node holds flows to few).
//!
//! Fed by the two things the agent reads anyway: every complete walk of the table (startup,
//! resync, overrun passes) and every conntrack NEW event. Trusted only while both hold: the
//! event socket has been reading without loss since the start of the last complete walk, and
//! that walk was not interrupted. Otherwise [`FlowIndex::may_have_flows`] answers yes for every
//! address and each removal is walked, as before. Memory is one entry per backend address with
//! flows here, not per flow.
//!
//! Ordering, for the flows created while a backend leaves: the listener records a NEW flow here
//! *before* it judges the flow against the model. If the agent read this index before the
//! record, the listener reads the model after the removal and judges the flow stale itself
//! (the `event` trigger); if after, the removal walks that backend. Either way the flow goes.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::reconcile::Flow;

#[derive(Debug, Default)]
struct Inner {
    /// Backend address -> the walk epoch it was last seen in (or during).
    ips: HashMap<IpAddr, u64>,
    epoch: u64,
    /// The event losses counted when the index became trusted; `None`: not trusted.
    trusted_at: Option<u64>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FlowIndex {
    inner: Mutex<Inner>,
    /// Event socket failures and overruns so far.
    losses: AtomicU64,
    /// The event socket is open and reading.
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
fn translated(f: &Flow) -> bool {
    !(f.reply_src == f.orig_dst && f.reply_sport == f.orig_dport)
}

impl FlowIndex {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A NEW event (the listener, before it judges the flow).
    pub fn saw(&self, flow: &Flow) {
        if translated(flow) {
            let mut inner = self.inner();
            let epoch = inner.epoch;
            inner.ips.insert(flow.reply_src, epoch);
        }
    }

    /// The event socket opened (`true`) or failed (`false`).
    pub fn listening(&self, on: bool) {
        if !on {
            self.lost();
        }
        self.listening.store(on, Ordering::SeqCst);
    }

    /// The event socket is open and reading.
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
        WalkMark {
            epoch: inner.epoch,
            losses: self.losses.load(Ordering::SeqCst),
            listening: self.listening.load(Ordering::SeqCst),
        }
    }

    /// The walk begun at `mark` ended having seen the translated flows' backends `seen`;
    /// `complete`: it read the whole table (not interrupted, not cancelled). Addresses neither
    /// seen by it nor in a NEW event since its start are forgotten.
    pub fn end_walk(&self, mark: WalkMark, seen: HashSet<IpAddr>, complete: bool) {
        let mut inner = self.inner();
        for ip in seen {
            let e = inner.ips.entry(ip).or_insert(mark.epoch);
            *e = (*e).max(mark.epoch);
        }
        if !complete {
            inner.trusted_at = None;
            return;
        }
        inner.ips.retain(|_, e| *e >= mark.epoch);
        let losses = self.losses.load(Ordering::SeqCst);
        let ok = mark.listening && self.listening.load(Ordering::SeqCst) && losses == mark.losses;
        inner.trusted_at = ok.then_some(losses);
    }

    /// May `ip` have translated flows on this node? Yes unless the index is trusted and has
    /// not seen it.
    pub fn may_have_flows(&self, ip: IpAddr) -> bool {
        let inner = self.inner();
        match inner.trusted_at {
            Some(l) if l == self.losses.load(Ordering::SeqCst) => inner.ips.contains_key(&ip),
            _ => true,
        }
    }

    /// Backend addresses known to have flows (for logs).
    pub fn len(&self) -> usize {
        self.inner().ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn flow(dst: &str, backend: &str) -> Flow {
        Flow {
            proto: 17,
            orig_src: ip("198.18.0.9"),
            orig_dst: ip(dst),
            orig_sport: 40000,
            orig_dport: 53,
            reply_src: ip(backend),
            reply_dst: ip("198.18.0.9"),
            reply_sport: 53,
            reply_dport: 40000,
            zone: 0,
        }
    }

    fn walk(ix: &FlowIndex, backends: &[&str], complete: bool) {
        let mark = ix.begin_walk();
        ix.end_walk(mark, backends.iter().map(|b| ip(b)).collect(), complete);
    }

    #[test]
    fn untrusted_until_a_complete_walk_with_the_listener_running() {
        let ix = FlowIndex::default();
        assert!(ix.may_have_flows(ip("10.0.0.1")), "nothing known yet");
        walk(&ix, &["10.0.0.2"], true);
        assert!(
            ix.may_have_flows(ip("10.0.0.1")),
            "the listener was not running during the walk"
        );
        ix.listening(true);
        walk(&ix, &["10.0.0.2"], false);
        assert!(ix.may_have_flows(ip("10.0.0.1")), "an interrupted walk");
        walk(&ix, &["10.0.0.2"], true);
        assert!(!ix.may_have_flows(ip("10.0.0.1")));
        assert!(ix.may_have_flows(ip("10.0.0.2")));
    }

    #[test]
    fn events_add_and_losses_distrust() {
        let ix = FlowIndex::default();
        ix.listening(true);
        walk(&ix, &[], true);
        assert!(!ix.may_have_flows(ip("10.0.0.3")));
        ix.saw(&flow("10.96.0.10", "10.0.0.3"));
        assert!(ix.may_have_flows(ip("10.0.0.3")), "a NEW event");
        ix.saw(&flow("10.0.0.4", "10.0.0.4"));
        assert!(
            !ix.may_have_flows(ip("10.0.0.4")),
            "an untranslated flow is no backend's"
        );
        ix.lost();
        assert!(ix.may_have_flows(ip("10.0.0.9")), "events lost: walk again");
        walk(&ix, &[], true);
        assert!(!ix.may_have_flows(ip("10.0.0.9")));
        ix.listening(false);
        assert!(ix.may_have_flows(ip("10.0.0.9")), "the socket failed");
    }

    #[test]
    fn a_walk_forgets_what_it_did_not_see_but_keeps_what_events_added_meanwhile() {
        let ix = FlowIndex::default();
        ix.listening(true);
        walk(&ix, &["10.0.0.1", "10.0.0.2"], true);
        let mark = ix.begin_walk();
        ix.saw(&flow("10.96.0.10", "10.0.0.5")); // created during the walk
        ix.end_walk(mark, [ip("10.0.0.1")].into_iter().collect(), true);
        assert!(ix.may_have_flows(ip("10.0.0.1")));
        assert!(!ix.may_have_flows(ip("10.0.0.2")), "its flows are gone");
        assert!(ix.may_have_flows(ip("10.0.0.5")));
        assert_eq!(ix.len(), 2);
    }
}
