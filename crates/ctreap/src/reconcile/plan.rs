//! Delete plans: the kernel filters to flush, not the flows themselves.
//!
//! One [`FlushKey`] per (frontend, stale backend) pair becomes one filtered `CT_DELETE`
//! (Linux 6.12+: one kernel walk deletes every match), the equivalent of
//! `conntrack -D -p udp --orig-dst SVC --orig-port-dst 53 --reply-src POD --reply-port-src 53`.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::verdict::{StaleReason, Verdict};
use crate::cluster::{BackendState, Conditions, FrontendKey, Proto, ServiceMap};

/// A set of protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ProtoSet(u8);

impl ProtoSet {
    pub const NONE: ProtoSet = ProtoSet(0);
    pub const ALL: ProtoSet = ProtoSet(0b111);
    pub const TCP: ProtoSet = ProtoSet::NONE.with(Proto::Tcp);
    pub const UDP: ProtoSet = ProtoSet::NONE.with(Proto::Udp);
    pub const SCTP: ProtoSet = ProtoSet::NONE.with(Proto::Sctp);

    const fn bit(p: Proto) -> u8 {
        match p {
            Proto::Tcp => 1,
            Proto::Udp => 2,
            Proto::Sctp => 4,
        }
    }

    #[must_use]
    pub const fn with(self, p: Proto) -> ProtoSet {
        ProtoSet(self.0 | Self::bit(p))
    }

    pub const fn contains(self, p: Proto) -> bool {
        self.0 & Self::bit(p) != 0
    }

    /// The protocols in both sets.
    #[must_use]
    pub const fn intersect(self, other: ProtoSet) -> ProtoSet {
        ProtoSet(self.0 & other.0)
    }
}

/// Which stale verdicts, for which protocols, the agent deletes. A draining backend
/// (terminating but still serving) is not stale: no policy deletes its flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Backend absent from every slice of the frontend's Services.
    pub gone: ProtoSet,
    /// Backend in a slice with `serving: false`.
    pub not_serving: ProtoSet,
}

impl Default for Policy {
    /// Gone: every protocol (nothing can answer; a fresh NAT decision is the only way out).
    /// Not serving: UDP only, as kube-proxy does; a TCP or SCTP connection to a pod that is
    /// merely not ready may still be working, and deleting its entry would reset it.
    fn default() -> Self {
        Policy {
            gone: ProtoSet::ALL,
            not_serving: ProtoSet::UDP,
        }
    }
}

impl Policy {
    /// Does this policy delete flows with this verdict and IP protocol number?
    pub fn deletes(&self, verdict: Verdict, proto: u8) -> bool {
        let Some(p) = Proto::from_ip_proto(proto) else {
            return false;
        };
        match verdict {
            // The verdict is UDP's alone, and as final as a backend that is gone.
            Verdict::Stale(StaleReason::Gone | StaleReason::NotTranslated) => self.gone.contains(p),
            Verdict::Stale(StaleReason::NotServing) => self.not_serving.contains(p),
            Verdict::Live | Verdict::Draining | Verdict::NotService(_) => false,
        }
    }

    /// The same question for a backend's conditions on a frontend (`None`: not listed).
    pub fn deletes_backend(&self, c: Option<Conditions>, p: Proto) -> bool {
        match c.map(Conditions::state) {
            None => self.gone.contains(p),
            Some(BackendState::NotServing) => self.not_serving.contains(p),
            Some(BackendState::Draining | BackendState::Serving) => false,
        }
    }
}

/// One filtered flush: every entry of `proto` with original destination
/// `orig_dst:orig_dport` (the frontend) and reply source `reply_src:reply_sport` (the
/// backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlushKey {
    /// IP protocol number.
    pub proto: u8,
    pub orig_dst: IpAddr,
    pub orig_dport: u16,
    pub reply_src: IpAddr,
    pub reply_sport: u16,
}

impl FlushKey {
    /// The entries of `frontend` translated to `backend`.
    pub fn pair(frontend: FrontendKey, backend: SocketAddr) -> FlushKey {
        FlushKey {
            proto: frontend.proto.ip_proto(),
            orig_dst: frontend.ip,
            orig_dport: frontend.port,
            reply_src: backend.ip(),
            reply_sport: backend.port(),
        }
    }

    /// The key of untranslated entries: the frontend is its own reply source.
    pub fn untranslated(&self) -> bool {
        self.reply_src == self.orig_dst && self.reply_sport == self.orig_dport
    }
}

impl fmt::Display for FlushKey {
    /// The `conntrack -D` arguments that delete the same entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match Proto::from_ip_proto(self.proto) {
            Some(Proto::Tcp) => "tcp".to_owned(),
            Some(Proto::Udp) => "udp".to_owned(),
            Some(Proto::Sctp) => "sctp".to_owned(),
            None => self.proto.to_string(),
        };
        write!(
            f,
            "-p {proto} --orig-dst {} --orig-port-dst {} --reply-src {} --reply-port-src {}",
            self.orig_dst, self.orig_dport, self.reply_src, self.reply_sport
        )
    }
}

/// The flushes a change from `old` to `new` calls for, without looking at the table: for every
/// frontend of `old`, each backend that was not deletable under `policy` in `old` and is in
/// `new` (absent from the frontend's service ports, or its conditions got worse). A frontend
/// missing from `new` (Service deleted, port removed, node address gone) loses all its
/// backends.
///
/// For watch-driven triggers: flush what just left, before clients notice. Backends that were
/// already deletable in `old` were the business of an earlier plan.
pub fn plan_diff(old: &ServiceMap, new: &ServiceMap, policy: &Policy) -> Vec<FlushKey> {
    let mut keys = HashSet::new();
    for fe in old.frontends() {
        let key = fe.key();
        let new_fe = new.frontend(key.proto, key.ip, key.port);
        let single = fe.ports().len() == 1;
        for port in fe.ports() {
            for b in port.backends() {
                if b.ip.is_ipv4() != key.ip.is_ipv4() {
                    continue; // a dual-stack port: no NAT crosses families
                }
                if b.ip == key.ip && b.port == key.port {
                    continue; // would match untranslated traffic; see `classify`
                }
                let new_c = new_fe.and_then(|f| f.backend(b.ip, b.port)).map(|(_, c)| c);
                if !policy.deletes_backend(new_c, key.proto) {
                    continue;
                }
                let old_c = if single {
                    Some(b.conditions)
                } else {
                    fe.backend(b.ip, b.port).map(|(_, c)| c)
                };
                if policy.deletes_backend(old_c, key.proto) {
                    continue;
                }
                keys.insert(FlushKey::pair(key, SocketAddr::new(b.ip, b.port)));
            }
        }
    }
    let mut out: Vec<FlushKey> = keys.into_iter().collect();
    out.sort_unstable();
    out
}
