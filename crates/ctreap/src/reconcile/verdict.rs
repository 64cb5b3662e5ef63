//! One conntrack entry against a [`ServiceMap`]: is it NAT traffic of a Service, and is its
//! DNAT target still a serving backend?

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::cluster::{BackendState, PortRef, Proto, ServiceMap, ServiceName};

/// A conntrack entry, reduced to what the verdict reads (decoupled from the netlink codec).
///
/// For `client:54321 -> svc:80` DNATed to `pod:8080`, `conntrack -L` prints
/// `src=client dst=svc sport=54321 dport=80 src=pod dst=client sport=8080 dport=54321`:
/// the first four are `orig_*`, the last four `reply_*`. The DNAT target is the reply
/// *source*; with SNAT/masquerade the reply destination is the node, not the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// IP protocol number: `IPPROTO_TCP` = 6, `IPPROTO_UDP` = 17, `IPPROTO_SCTP` = 132.
    pub proto: u8,
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub orig_sport: u16,
    pub orig_dport: u16,
    pub reply_src: IpAddr,
    pub reply_dst: IpAddr,
    pub reply_sport: u16,
    pub reply_dport: u16,
    /// Conntrack zone (`zone=` in `conntrack -L`); not used by the verdict, see [`classify`].
    pub zone: u16,
}

/// Why a flow with a Service frontend is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StaleReason {
    /// The DNAT target is no endpoint of the service port any more (pod deleted, or the
    /// Service's selector changed).
    Gone,
    /// The DNAT target is still in a slice, with `serving: false` (not ready, or terminating
    /// and done serving).
    NotServing,
    /// UDP to a frontend that has a serving backend now, never translated: the entry was made
    /// while the Service had no endpoint or before its rules existed, and while the client
    /// keeps sending it keeps the flow away from every backend. kube-proxy's reconciler
    /// deletes these too (`pkg/proxy/conntrack/cleanup.go`: reply source not a serving
    /// endpoint). TCP and SCTP ones stay `NotService(NoDnat)`.
    NotTranslated,
}

/// Why a flow is no Service's NAT traffic. Such flows are left alone, always.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotServiceReason {
    /// Not TCP, UDP or SCTP (ICMP, GRE...).
    Protocol,
    /// The original destination is no frontend of any Service.
    NotFrontend,
    /// Addressed to a frontend, but not translated: the reply comes from the frontend
    /// address and port themselves (`reply src:sport == orig dst:dport`).
    NoDnat,
}

/// The verdict on one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// The DNAT target is a serving, non-terminating backend of the frontend's service port.
    Live,
    /// The DNAT target is terminating but still serving: let it drain.
    Draining,
    /// The DNAT target is not a serving backend of the frontend any more.
    Stale(StaleReason),
    /// Not a Service's NAT traffic.
    NotService(NotServiceReason),
}

impl Verdict {
    /// A stable snake_case name, for metric labels and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Live => "live",
            Verdict::Draining => "draining",
            Verdict::Stale(StaleReason::Gone) => "stale_gone",
            Verdict::Stale(StaleReason::NotServing) => "stale_not_serving",
            Verdict::Stale(StaleReason::NotTranslated) => "stale_not_translated",
            Verdict::NotService(NotServiceReason::Protocol) => "not_service_protocol",
            Verdict::NotService(NotServiceReason::NotFrontend) => "not_service",
            Verdict::NotService(NotServiceReason::NoDnat) => "not_service_no_dnat",
        }
    }

    pub const fn is_stale(self) -> bool {
        matches!(self, Verdict::Stale(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict with what it was about, so callers can group and count by Service, frontend and
/// backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'m> {
    pub verdict: Verdict,
    /// IP protocol number, as in the flow.
    pub proto: u8,
    /// Original destination: the Service frontend (or whatever it was).
    pub frontend: SocketAddr,
    /// Reply source: the DNAT target.
    pub backend: SocketAddr,
    /// The service port that decided: the one where the backend is best off, or the
    /// frontend's first one when no port lists it. `None` when the destination is no
    /// frontend.
    pub port: Option<PortRef<'m>>,
}

impl<'m> Decision<'m> {
    pub fn service(&self) -> Option<&'m ServiceName> {
        self.port.map(|p| p.service())
    }
}

/// Whether an untranslated entry to a frontend with a serving backend is stale for this
/// protocol: UDP only, as kube-proxy's reconciler judges it. A TCP or SCTP entry that met no
/// rule ends on its own (no listener answers it); a UDP client keeps refreshing its entry.
pub(crate) const fn untranslated_is_stale(p: Proto) -> bool {
    matches!(p, Proto::Udp)
}

/// Classifies one flow.
///
/// Decisions worth knowing:
/// - **No DNAT** (`reply src:sport == orig dst:dport`) is `NotService(NoDnat)`, even when
///   `orig dst:dport` is a frontend: nothing was translated, so there is no NAT decision to
///   go stale (e.g. packets that met no kube-proxy rule because the rules were not yet
///   written, or a load-balancer IP that is routed, not DNATed). A DNAT that changes only the
///   port (hostNetwork backend on this node: `node:30080 -> node:8080`) is a translation and
///   is judged normally. One exception, as kube-proxy's own reconciler makes it: **UDP** to a
///   frontend that has a serving backend of its family now is `Stale(NotTranslated)`. The
///   entry was made before the Service could translate (no endpoint yet, rules not yet
///   written); a UDP client that keeps its port keeps refreshing it and never reaches a
///   backend. Deleting it lets the next packet meet the rules. Not when the frontend address
///   itself is listed as a backend (then the entry is that backend's).
/// - The **zone** is ignored: kube-proxy works in zone 0, and the kernel's flush filter
///   cannot match zones before Linux 6.8.
/// - When two Services publish the same frontend (same external IP and port), the backend
///   is judged by the Service where it fares best: live in any means live.
pub fn classify<'m>(map: &'m ServiceMap, flow: &Flow) -> Decision<'m> {
    let (verdict, port) = judge(
        map,
        flow.proto,
        flow.orig_dst,
        flow.orig_dport,
        flow.reply_src,
        flow.reply_sport,
    );
    Decision {
        verdict,
        proto: flow.proto,
        frontend: SocketAddr::new(flow.orig_dst, flow.orig_dport),
        backend: SocketAddr::new(flow.reply_src, flow.reply_sport),
        port,
    }
}

/// The verdict on a (frontend, backend) pair: shared by [`classify`] and the planners.
pub(crate) fn judge(
    map: &ServiceMap,
    proto: u8,
    orig_dst: IpAddr,
    orig_dport: u16,
    reply_src: IpAddr,
    reply_sport: u16,
) -> (Verdict, Option<PortRef<'_>>) {
    let Some(p) = Proto::from_ip_proto(proto) else {
        return (Verdict::NotService(NotServiceReason::Protocol), None);
    };
    let Some(fe) = map.frontend(p, orig_dst, orig_dport) else {
        return (Verdict::NotService(NotServiceReason::NotFrontend), None);
    };
    if reply_src == orig_dst && reply_sport == orig_dport {
        let verdict = if untranslated_is_stale(p)
            && fe.backend(reply_src, reply_sport).is_none()
            && fe.has_serving_backend()
        {
            Verdict::Stale(StaleReason::NotTranslated)
        } else {
            Verdict::NotService(NotServiceReason::NoDnat)
        };
        return (verdict, fe.first_port());
    }
    match fe.backend(reply_src, reply_sport) {
        None => (Verdict::Stale(StaleReason::Gone), fe.first_port()),
        Some((port, c)) => {
            let v = match c.state() {
                BackendState::Serving => Verdict::Live,
                BackendState::Draining => Verdict::Draining,
                BackendState::NotServing => Verdict::Stale(StaleReason::NotServing),
            };
            (v, Some(port))
        }
    }
}

/// Flow counts per verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VerdictCounts {
    pub live: u64,
    pub draining: u64,
    pub stale_gone: u64,
    pub stale_not_serving: u64,
    pub stale_not_translated: u64,
    pub not_service: u64,
}

impl VerdictCounts {
    pub fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Live => self.live += 1,
            Verdict::Draining => self.draining += 1,
            Verdict::Stale(StaleReason::Gone) => self.stale_gone += 1,
            Verdict::Stale(StaleReason::NotServing) => self.stale_not_serving += 1,
            Verdict::Stale(StaleReason::NotTranslated) => self.stale_not_translated += 1,
            Verdict::NotService(_) => self.not_service += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.live
            + self.draining
            + self.stale_gone
            + self.stale_not_serving
            + self.stale_not_translated
            + self.not_service
    }
}
