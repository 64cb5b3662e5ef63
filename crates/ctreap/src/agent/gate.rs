//! The trust gate: may the agent delete now, and if not, why. Pure: it reads the watches'
//! state as plain values ([`Watches`]) and the time as an argument, and tells the loop what
//! to do ([`Check`]); the loop does the I/O (restarting the watches, re-listing, passes).
//!
//! The states, in the order they are judged ([`Gate::trust`]):
//!
//! | state | when | deleting |
//! |---|---|---|
//! | [`Trust::Listing`] | some watch has not delivered its first list | no |
//! | [`Trust::Relisting`] | some watch lists again (410 Gone, a restart, the breaker's re-list) | no |
//! | [`Trust::BreakerHeld`] | the breaker held a pass; it re-lists at `relist_at`, then the held pass runs on the fresh view | no |
//! | [`Trust::Current`] | every watch current, nothing held | yes |
//!
//! A watch error after the lists were complete means events may have been missed: the gate
//! answers [`Check::Restart`] once, and the loop replaces the watches (a fresh list of
//! everything). Errors while a list is still pending are the watches' own retries and do not
//! restart anything.
//!
//! ctnetlink being broken is a readiness state ([`Gate::readiness`]), not a gate state: a pass
//! that cannot dump deletes nothing anyway, and each request (the next pass, the periodic stats
//! read) is the probe that ends it. Closing the gate on it would stop those probes.

use std::time::{Duration, Instant};

use crate::cluster::WatchStatus;
use crate::reconcile::Planned;

/// What the watches report, as plain values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Watches {
    /// Every watch has delivered its first list.
    pub synced: bool,
    /// Some watch is listing again.
    pub relisting: bool,
    /// Errors of the current set of watches, summed.
    pub errors: u64,
}

impl From<&WatchStatus> for Watches {
    fn from(s: &WatchStatus) -> Self {
        Watches {
            synced: s.synced(),
            relisting: s.relisting(),
            errors: s.watches.values().map(|w| w.errors).sum(),
        }
    }
}

/// Whether deleting is allowed, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    Listing,
    Relisting,
    BreakerHeld,
    Current,
}

/// The gate's answer to "may I delete now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Delete,
    Wait(Trust),
    /// A watch failed after its list: replace the watches, then call [`Gate::restarted`].
    Restart,
}

/// A pass held back by the circuit breaker.
#[derive(Debug)]
struct Held {
    /// When the watches re-list to confirm the view.
    relist_at: Instant,
    relisting: bool,
    /// The watch-planned keys of the held pass: after the re-list they are judged again on
    /// the fresh map (a full pass cannot see the flows of a Service that no longer exists).
    keys: Option<Planned>,
}

/// What the breaker's confirming re-list has come to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Confirm {
    /// No breaker re-list is under way.
    NotHeld,
    /// The re-list is not complete yet.
    Waiting,
    /// The re-list is complete: the hold is lifted; run the held keys (if any), then a full
    /// pass, on the fresh view.
    Confirmed(Option<Planned>),
}

#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Watch errors already accounted for (of the current set of watches).
    errors_seen: u64,
    held: Option<Held>,
    /// The last ctnetlink request (dump or stats) failed.
    netlink_error: Option<String>,
    /// NEW flows towards backends already gone arrived while deleting was not allowed: a full
    /// pass is owed once it is.
    missed_events: bool,
}

impl Gate {
    /// The state, without side effects.
    pub fn trust(&self, w: Watches) -> Trust {
        if !w.synced {
            Trust::Listing
        } else if w.relisting {
            Trust::Relisting
        } else if self.held.is_some() {
            Trust::BreakerHeld
        } else {
            Trust::Current
        }
    }

    /// May the agent delete now? Accounts for the watch errors seen so far.
    pub fn check(&mut self, w: Watches) -> Check {
        if !w.synced || w.relisting {
            // The list comes after these errors, and the view is trusted only once it is
            // complete. Restarting again here would loop for as long as the API server is away.
            self.errors_seen = w.errors;
            return Check::Wait(self.trust(w));
        }
        if w.errors > self.errors_seen {
            return Check::Restart;
        }
        match self.trust(w) {
            Trust::Current => Check::Delete,
            t => Check::Wait(t),
        }
    }

    /// The watches were replaced: their error counts start from 0.
    pub fn restarted(&mut self) {
        self.errors_seen = 0;
    }

    /// The breaker holds a pass (with its watch-planned keys) for `hold` from `now`.
    pub fn hold(&mut self, now: Instant, hold: Duration, keys: Option<Planned>) {
        self.held = Some(Held {
            relist_at: now + hold,
            relisting: false,
            keys,
        });
    }

    /// When the held pass's confirming re-list is due (not yet started).
    pub fn relist_due(&self) -> Option<Instant> {
        self.held
            .as_ref()
            .filter(|h| !h.relisting)
            .map(|h| h.relist_at)
    }

    /// The confirming re-list starts now; false if nothing is held or it already started.
    pub fn begin_relist(&mut self) -> bool {
        match &mut self.held {
            Some(h) if !h.relisting => {
                h.relisting = true;
                true
            }
            _ => false,
        }
    }

    /// After a change of the watches: has the breaker's re-list completed?
    pub fn confirm(&mut self, w: Watches) -> Confirm {
        match &self.held {
            Some(h) if h.relisting => {
                if !w.synced || w.relisting {
                    Confirm::Waiting
                } else {
                    Confirm::Confirmed(self.held.take().and_then(|h| h.keys))
                }
            }
            _ => Confirm::NotHeld,
        }
    }

    /// Records the outcome of the last ctnetlink request; true if that changed readiness.
    pub fn netlink(&mut self, error: Option<String>) -> bool {
        if self.netlink_error == error {
            return false;
        }
        self.netlink_error = error;
        true
    }

    /// Flows that needed judging arrived while deleting was not allowed.
    pub fn missed_events(&mut self) {
        self.missed_events = true;
    }

    /// Whether a full pass is owed for missed events; clears it.
    pub fn take_missed_events(&mut self) -> bool {
        std::mem::take(&mut self.missed_events)
    }

    /// Why the agent is not ready (`/readyz`), or `None` if it is. `pending` names the watches
    /// that are listing.
    pub fn readiness(&self, w: Watches, pending: impl FnOnce() -> String) -> Option<String> {
        if let Some(e) = &self.netlink_error {
            return Some(format!("ctnetlink unusable: {e}"));
        }
        match self.trust(w) {
            Trust::Listing => Some(format!("waiting for the list of {}", pending())),
            Trust::Relisting => Some(format!("re-listing {}", pending())),
            // A held breaker is not a reason to take the pod out of service: the agent is
            // working as designed and reports the hold in its metrics.
            Trust::BreakerHeld | Trust::Current => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: Watches = Watches {
        synced: false,
        relisting: true,
        errors: 0,
    };
    const CURRENT: Watches = Watches {
        synced: true,
        relisting: false,
        errors: 0,
    };

    fn errors(w: Watches, errors: u64) -> Watches {
        Watches { errors, ..w }
    }

    fn relisting(errors: u64) -> Watches {
        Watches {
            synced: true,
            relisting: true,
            errors,
        }
    }

    #[test]
    fn nothing_is_deleted_before_every_first_list() {
        let mut g = Gate::default();
        assert_eq!(g.check(LISTING), Check::Wait(Trust::Listing));
        // Errors while listing are the watches' retries: no restart, then or after.
        assert_eq!(g.check(errors(LISTING, 3)), Check::Wait(Trust::Listing));
        assert_eq!(g.check(errors(CURRENT, 3)), Check::Delete);
    }

    #[test]
    fn a_watch_error_after_the_list_restarts_the_watches_once() {
        let mut g = Gate::default();
        assert_eq!(g.check(CURRENT), Check::Delete);
        assert_eq!(g.check(errors(CURRENT, 1)), Check::Restart);
        // Still restart until the loop says it did.
        assert_eq!(g.check(errors(CURRENT, 1)), Check::Restart);
        g.restarted();
        // The new watches list from scratch, their own errors from 0.
        assert_eq!(g.check(LISTING), Check::Wait(Trust::Listing));
        assert_eq!(g.check(CURRENT), Check::Delete);
    }

    #[test]
    fn a_relist_closes_the_gate_and_its_errors_do_not_restart() {
        let mut g = Gate::default();
        assert_eq!(g.check(relisting(0)), Check::Wait(Trust::Relisting));
        assert_eq!(g.check(relisting(5)), Check::Wait(Trust::Relisting));
        assert_eq!(g.check(errors(CURRENT, 5)), Check::Delete);
        assert_eq!(g.check(errors(CURRENT, 6)), Check::Restart);
    }

    #[test]
    fn the_breaker_holds_until_its_relist_confirms_the_view() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        assert_eq!(g.confirm(CURRENT), Confirm::NotHeld);
        assert_eq!(g.relist_due(), None);
        let mut keys = Planned::new();
        keys.insert(
            crate::reconcile::FlushKey {
                proto: 17,
                orig_dst: "10.96.0.10".parse().unwrap(),
                orig_dport: 53,
                reply_src: "10.244.1.5".parse().unwrap(),
                reply_sport: 53,
            },
            crate::cluster::ServiceName {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
            },
        );
        g.hold(t0, Duration::from_secs(2), Some(keys.clone()));
        assert_eq!(g.check(CURRENT), Check::Wait(Trust::BreakerHeld));
        assert_eq!(g.relist_due(), Some(t0 + Duration::from_secs(2)));
        // Before the re-list starts, a change confirms nothing.
        assert_eq!(g.confirm(CURRENT), Confirm::NotHeld);
        assert!(g.begin_relist());
        assert!(!g.begin_relist(), "one re-list per hold");
        assert_eq!(g.relist_due(), None);
        g.restarted();
        assert_eq!(g.confirm(LISTING), Confirm::Waiting);
        assert_eq!(g.check(LISTING), Check::Wait(Trust::Listing));
        assert_eq!(g.confirm(relisting(0)), Confirm::Waiting);
        assert_eq!(g.check(CURRENT), Check::Wait(Trust::BreakerHeld));
        assert_eq!(g.confirm(CURRENT), Confirm::Confirmed(Some(keys)));
        assert_eq!(g.check(CURRENT), Check::Delete);
        assert_eq!(g.confirm(CURRENT), Confirm::NotHeld);
    }

    #[test]
    fn readiness_names_the_first_reason() {
        let mut g = Gate::default();
        let pending = || "EndpointSlices".to_string();
        assert_eq!(
            g.readiness(LISTING, pending).as_deref(),
            Some("waiting for the list of EndpointSlices")
        );
        assert_eq!(
            g.readiness(relisting(0), pending).as_deref(),
            Some("re-listing EndpointSlices")
        );
        assert_eq!(g.readiness(CURRENT, pending), None);
        assert!(g.netlink(Some("EPERM".into())));
        assert!(!g.netlink(Some("EPERM".into())), "unchanged");
        assert_eq!(
            g.readiness(LISTING, pending).as_deref(),
            Some("ctnetlink unusable: EPERM")
        );
        // ctnetlink is a readiness state, not a gate state: passes still probe it.
        assert_eq!(g.check(CURRENT), Check::Delete);
        assert!(g.netlink(None));
        g.hold(Instant::now(), Duration::from_secs(1), None);
        assert_eq!(g.readiness(CURRENT, pending), None);
    }

    #[test]
    fn missed_events_are_owed_once() {
        let mut g = Gate::default();
        assert!(!g.take_missed_events());
        g.missed_events();
        g.missed_events();
        assert!(g.take_missed_events());
        assert!(!g.take_missed_events());
    }
}
