//! The NEW-event listener: catches flows created towards a backend that is already known gone.
//!
//! kube-proxy rewrites its rules up to its sync period after the API server changed, so for a
//! while new flows can still be sent to a dead backend. Each one shows up here as a NEW event;
//! the ones the current view judges deletable are handed to the agent loop, which checks them
//! again and deletes them. An overrun (ENOBUFS: events were lost) is handed on too: only a full
//! pass can tell what was missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use ctnetlink::{Error, EventKind, EventSocket, Groups, Netns, Tuple};
use tokio::sync::mpsc;

use super::flows::FlowIndex;
use crate::cluster::ClusterState;
use crate::reconcile::{Flow, Policy, deletable, flow_of};

/// What the listener hands to the agent loop.
pub enum EventMsg {
    /// A new flow the view judged deletable.
    Flow {
        tuple: Tuple,
        zone: Option<u16>,
        flow: Flow,
    },
    /// Events were lost: run a full pass.
    Overrun,
    /// The socket failed (opening or reading); the listener retries.
    Failed(Error),
}

/// The model the listener judges with, lent only while deleting is allowed (synced, not
/// re-listing, breaker closed).
pub struct View {
    trusted: AtomicBool,
    model: Arc<RwLock<ClusterState>>,
    /// Every NEW translated flow is recorded here, trusted or not.
    flows: Arc<FlowIndex>,
}

impl View {
    pub fn new(model: Arc<RwLock<ClusterState>>, flows: Arc<FlowIndex>) -> Self {
        View {
            trusted: AtomicBool::new(false),
            model,
            flows,
        }
    }

    pub fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::SeqCst);
    }
}

pub type SharedView = Arc<View>;

/// How often the listener looks at the shutdown flag while no event arrives.
const POLL: Duration = Duration::from_millis(100);
/// How often the listener reads `nf_conntrack_events` again (an administrator may turn events
/// off while the agent runs).
const SYSCTL_EVERY: Duration = Duration::from_secs(10);

/// `net.netfilter.nf_conntrack_events` in the node's namespace: 0 means the kernel sends no
/// conntrack events at all, though the socket opens and reads without error. `None`: unreadable.
fn events_sysctl(netns: Option<&Netns>) -> Option<u32> {
    fn read() -> Option<u32> {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_events")
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    match netns {
        Some(ns) => ns.run(read).ok().flatten(),
        None => read(),
    }
}

/// Whether the kernel delivers events to the socket, for the flow index; warns once per change.
fn check_sysctl(netns: Option<&Netns>, view: &SharedView, warned: &mut bool) -> bool {
    let v = events_sysctl(netns);
    let on = matches!(v, Some(n) if n > 0);
    if !on && !*warned {
        tracing::warn!(
            nf_conntrack_events = ?v,
            "net.netfilter.nf_conntrack_events is 0 or unreadable in the node's namespace: no conntrack events, so the event trigger sees no new flows and every departed backend is walked; set it to 1 or 2"
        );
    }
    *warned = !on;
    view.flows.listening(on);
    on
}

pub fn spawn(
    netns: Option<Netns>,
    rcvbuf: usize,
    view: SharedView,
    policy: Policy,
    tx: mpsc::Sender<EventMsg>,
    cancel: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ctreap-events".into())
        .spawn(move || listen(netns.as_ref(), rcvbuf, &view, policy, &tx, &cancel))
}

fn listen(
    netns: Option<&Netns>,
    rcvbuf: usize,
    view: &SharedView,
    policy: Policy,
    tx: &mpsc::Sender<EventMsg>,
    cancel: &AtomicBool,
) {
    let groups = Groups {
        new: true,
        update: false,
        destroy: false,
    };
    let mut warned = false;
    while !cancel.load(Ordering::Relaxed) {
        let mut sock = match EventSocket::open(netns, groups, rcvbuf) {
            Ok(s) => {
                check_sysctl(netns, view, &mut warned);
                s
            }
            Err(e) => {
                view.flows.listening(false);
                if tx.blocking_send(EventMsg::Failed(e)).is_err() {
                    return;
                }
                sleep_unless_cancelled(Duration::from_secs(5), cancel);
                continue;
            }
        };
        let mut sysctl_at = std::time::Instant::now() + SYSCTL_EVERY;
        while !cancel.load(Ordering::Relaxed) {
            if std::time::Instant::now() >= sysctl_at {
                sysctl_at = std::time::Instant::now() + SYSCTL_EVERY;
                let was = view.flows.is_listening();
                if !check_sysctl(netns, view, &mut warned) && was {
                    // Events may have been missed since it went off.
                    view.flows.lost();
                }
            }
            let mut out = Vec::new();
            // The view is read when each event is judged, not before the wait: a view taken
            // before a 100 ms wait would judge flows created after a backend left with the map
            // from before it left (and flows during a re-list with a map that is withdrawn).
            let res = sock.recv(Some(POLL), |ev| {
                if ev.kind != EventKind::New {
                    return;
                }
                let Some(flow) = flow_of(&ev.entry) else {
                    return;
                };
                // Recorded before the model is read: see `flows`. Judged even while the view is
                // not trusted (re-listing after an outage): the agent deletes nothing then, but
                // learns that a full pass is owed once the view is current again.
                view.flows.saw(&flow);
                let model = view.model.read().unwrap_or_else(|e| e.into_inner());
                if deletable(model.map(), &flow, &policy).is_some() {
                    out.push(EventMsg::Flow {
                        tuple: ev.entry.orig,
                        zone: ev.entry.zone,
                        flow,
                    });
                }
            });
            match res {
                Ok(_) => {}
                Err(Error::Overrun) => {
                    view.flows.lost();
                    out.push(EventMsg::Overrun)
                }
                Err(e) => {
                    view.flows.listening(false);
                    let _ = tx.blocking_send(EventMsg::Failed(e));
                    sleep_unless_cancelled(Duration::from_secs(1), cancel);
                    break; // reopen
                }
            }
            for m in out {
                // Blocking here when the loop is busy lets the kernel's buffer fill, and an
                // overrun then asks for the full pass that catches up.
                if tx.blocking_send(m).is_err() {
                    return;
                }
            }
        }
    }
}

fn sleep_unless_cancelled(d: Duration, cancel: &AtomicBool) {
    let mut left = d;
    while !left.is_zero() && !cancel.load(Ordering::Relaxed) {
        let step = left.min(POLL);
        std::thread::sleep(step);
        left -= step;
    }
}
