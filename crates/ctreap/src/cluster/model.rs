//! The `ServiceMap`: every NAT frontend of every Service and, per service port, its backends
//! with their EndpointSlice conditions.
//!
//! Layout, chosen for the verdict's hot path (one lookup per conntrack entry):
//!
//! - `frontends`: `(proto, ip, port)` -> the service ports published on it (almost always one),
//!   one hash probe per flow;
//! - `backend_index`: `(service port, ip, port)` -> conditions, one hash probe per flow;
//! - two arenas (`frontend_list`, `backends`) give each service port its frontends and its
//!   backends as contiguous slices, for diffs and reports;
//! - `by_backend_ip`: indices into `backends` sorted by IP, the reverse index "which service
//!   ports is this pod IP a backend of" (binary search, not on the hot path; 4 bytes each).
//!
//! Memory is linear in endpoints × service ports plus frontends; no Kubernetes object is kept.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// A transport protocol that a Service port can use, numbered as in `netinet/in.h`
/// (`IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_SCTP`): the numbers conntrack reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    /// `IPPROTO_TCP`
    Tcp = 6,
    /// `IPPROTO_UDP`
    Udp = 17,
    /// `IPPROTO_SCTP`
    Sctp = 132,
}

impl Proto {
    /// All protocols a Service can use.
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// From an IP protocol number (`conntrack -L` prints it after the name: `tcp 6`).
    pub const fn from_ip_proto(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// The IP protocol number.
    pub const fn ip_proto(self) -> u8 {
        self as u8
    }

    /// From a Kubernetes `protocol` field; absent means `TCP` (the API default).
    pub fn from_k8s(protocol: Option<&str>) -> Option<Proto> {
        match protocol {
            None | Some("TCP") => Some(Proto::Tcp),
            Some("UDP") => Some(Proto::Udp),
            Some("SCTP") => Some(Proto::Sctp),
            Some(_) => None,
        }
    }

    /// The Kubernetes spelling: `TCP`, `UDP`, `SCTP`.
    pub const fn as_k8s(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_k8s())
    }
}

/// A NAT frontend: what a client connects to, the original destination of a conntrack entry
/// (`conntrack -L`: the first `dst=` and `dport=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
}

impl FrontendKey {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.proto)
    }
}

/// Why an address:port is a frontend of a service port (the kube-proxy rule that DNATs it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrontendKind {
    /// `spec.clusterIPs[]` : `spec.ports[].port`
    ClusterIp,
    /// any node address : `spec.ports[].nodePort`
    NodePort,
    /// `spec.externalIPs[]` : `spec.ports[].port`
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip` : `spec.ports[].port`
    LoadBalancer,
}

impl FrontendKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        }
    }
}

/// One frontend of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frontend {
    pub key: FrontendKey,
    pub kind: FrontendKind,
}

/// EndpointSlice endpoint conditions, with the API's defaults applied
/// (`discovery.k8s.io/v1` `EndpointConditions`: nil `ready` means true, nil `serving` means
/// the value of `ready`, nil `terminating` means false).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Conditions {
    /// Ready, serving, not terminating: a normal endpoint.
    pub const READY: Conditions = Conditions {
        ready: true,
        serving: true,
        terminating: false,
    };

    /// Applies the documented defaults to the API's optional fields.
    pub fn from_api(ready: Option<bool>, serving: Option<bool>, terminating: Option<bool>) -> Self {
        let ready = ready.unwrap_or(true);
        Conditions {
            ready,
            serving: serving.unwrap_or(ready),
            terminating: terminating.unwrap_or(false),
        }
    }

    /// What these conditions mean for traffic already pinned to the endpoint.
    pub fn state(self) -> BackendState {
        match (self.serving, self.terminating) {
            (true, false) => BackendState::Serving,
            (true, true) => BackendState::Draining,
            (false, _) => BackendState::NotServing,
        }
    }

    /// Merges two observations of the same endpoint (it may appear in several slices, or
    /// twice in one): the more useful one wins, serving if serving in any.
    pub fn merge(self, other: Conditions) -> Conditions {
        match self.state().cmp(&other.state()) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => Conditions {
                ready: self.ready || other.ready,
                serving: self.serving || other.serving,
                terminating: self.terminating && other.terminating,
            },
        }
    }
}

/// A backend's usefulness, ordered: `NotServing < Draining < Serving`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendState {
    /// In a slice with `serving: false`: not ready, or terminating and no longer serving.
    NotServing,
    /// Terminating but still serving: kube-proxy may still send it traffic; let it drain.
    Draining,
    /// Serving and not terminating.
    Serving,
}

/// One backend (EndpointSlice endpoint, resolved port) of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    pub conditions: Conditions,
}

impl Backend {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Index of a service port in a [`ServiceMap`]; valid only for the map that produced it.
pub type PortId = u32;

/// One entry of `spec.ports` of a Service that has NAT frontends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortEntry {
    pub(crate) service: u32,
    /// `spec.ports[].name`; empty when unnamed (single-port Services).
    pub(crate) name: String,
    pub(crate) proto: Proto,
    pub(crate) port: u16,
    pub(crate) node_port: Option<u16>,
    pub(crate) frontends: Range<u32>,
    pub(crate) backends: Range<u32>,
    /// The Service is annotated [`IGNORE_ANNOTATION`]`: "true"`.
    pub(crate) ignored: bool,
}

/// A Service with this annotation set to `"true"` is judged like any other, but the agent never
/// deletes its flows (an opt-out for Services whose clients must not be reset).
pub const IGNORE_ANNOTATION: &str = "ctreap.io/ignore";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BackendKey {
    pub(crate) port_id: PortId,
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
}

/// Sizes of a [`ServiceMap`], for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MapStats {
    /// Services with at least one NAT frontend.
    pub services: usize,
    pub service_ports: usize,
    /// Distinct `(proto, ip, port)` frontends.
    pub frontends: usize,
    /// `(service port, backend ip, backend port)` entries.
    pub backends: usize,
    /// Distinct backend IPs.
    pub backend_ips: usize,
}

/// Every NAT frontend of the cluster as seen from one node, and the backends behind each.
///
/// Built by [`ServiceMap::build`](crate::cluster::ServiceMap::build) from Service,
/// EndpointSlice and Node objects; immutable afterwards (a new snapshot is a new map).
#[derive(Clone, Debug, Default)]
pub struct ServiceMap {
    pub(crate) services: Vec<ServiceName>,
    pub(crate) ports: Vec<PortEntry>,
    pub(crate) frontend_list: Vec<Frontend>,
    pub(crate) backends: Vec<Backend>,
    /// Frontend key -> range in `frontend_ports`.
    pub(crate) frontends: HashMap<FrontendKey, (u32, u32)>,
    pub(crate) frontend_ports: Vec<PortId>,
    pub(crate) backend_index: HashMap<BackendKey, Conditions>,
    /// Indices into `backends`, sorted by (IP, service port).
    pub(crate) by_backend_ip: Vec<u32>,
    pub(crate) node_addrs: Vec<IpAddr>,
}

impl ServiceMap {
    /// An empty map: nothing is a Service.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The service ports published on `proto ip:port`, or `None` if no Service uses it
    /// (the question `iptables -t nat -L KUBE-SERVICES` answers).
    pub fn frontend(&self, proto: Proto, ip: IpAddr, port: u16) -> Option<FrontendRef<'_>> {
        let key = FrontendKey { proto, ip, port };
        let &(start, end) = self.frontends.get(&key)?;
        Some(FrontendRef {
            map: self,
            key,
            ports: &self.frontend_ports[start as usize..end as usize],
        })
    }

    /// All frontends, in no particular order.
    pub fn frontends(&self) -> impl Iterator<Item = FrontendRef<'_>> + '_ {
        self.frontends
            .iter()
            .map(move |(key, &(start, end))| FrontendRef {
                map: self,
                key: *key,
                ports: &self.frontend_ports[start as usize..end as usize],
            })
    }

    /// All service ports with NAT frontends, ordered by Service then `spec.ports` order.
    pub fn ports(&self) -> impl ExactSizeIterator<Item = PortRef<'_>> + '_ {
        (0..self.ports.len()).map(move |i| PortRef {
            map: self,
            id: i as PortId,
        })
    }

    /// The service port with this id, if the id belongs to this map.
    pub fn port(&self, id: PortId) -> Option<PortRef<'_>> {
        ((id as usize) < self.ports.len()).then_some(PortRef { map: self, id })
    }

    /// The service ports that list `ip` as a backend (any port, any condition): which
    /// Services a pod IP serves (`kubectl get endpointslices -A | grep IP`).
    pub fn ports_of_backend_ip(&self, ip: IpAddr) -> impl Iterator<Item = PortRef<'_>> + '_ {
        let start = self
            .by_backend_ip
            .partition_point(|&i| self.backends[i as usize].ip < ip);
        let mut last = None;
        self.by_backend_ip[start..]
            .iter()
            .take_while(move |&&i| self.backends[i as usize].ip == ip)
            .filter_map(move |&i| {
                // Same IP, several target ports of one service port: report the port once.
                let id = self.port_of_backend(i);
                (last.replace(id) != Some(id)).then_some(PortRef { map: self, id })
            })
    }

    /// The service port whose arena range holds backend `i` (ranges are contiguous and
    /// ordered by port id).
    fn port_of_backend(&self, i: u32) -> PortId {
        self.ports.partition_point(|p| p.backends.end <= i) as PortId
    }

    /// The node addresses NodePorts were published on (Node status + local interfaces).
    pub fn node_addresses(&self) -> &[IpAddr] {
        &self.node_addrs
    }

    pub fn stats(&self) -> MapStats {
        let mut services = 0;
        let mut last = None;
        for p in &self.ports {
            if last != Some(p.service) {
                services += 1;
                last = Some(p.service);
            }
        }
        let mut backend_ips = 0;
        let mut last_ip = None;
        for &i in &self.by_backend_ip {
            let ip = &self.backends[i as usize].ip;
            if last_ip != Some(ip) {
                backend_ips += 1;
                last_ip = Some(ip);
            }
        }
        MapStats {
            services,
            service_ports: self.ports.len(),
            frontends: self.frontends.len(),
            backends: self.backends.len(),
            backend_ips,
        }
    }

    pub(crate) fn backend_conditions(
        &self,
        id: PortId,
        ip: IpAddr,
        port: u16,
    ) -> Option<Conditions> {
        self.backend_index
            .get(&BackendKey {
                port_id: id,
                ip,
                port,
            })
            .copied()
    }
}

/// A frontend and the service ports behind it.
#[derive(Clone, Copy)]
pub struct FrontendRef<'m> {
    map: &'m ServiceMap,
    key: FrontendKey,
    ports: &'m [PortId],
}

impl<'m> FrontendRef<'m> {
    pub fn key(&self) -> FrontendKey {
        self.key
    }

    /// The service ports published on this frontend: one, unless two Services claim the same
    /// external or load-balancer IP and port.
    pub fn ports(&self) -> impl ExactSizeIterator<Item = PortRef<'m>> + 'm {
        let map = self.map;
        self.ports.iter().map(move |&id| PortRef { map, id })
    }

    /// The first service port (the one a report names when no backend matches).
    pub fn first_port(&self) -> Option<PortRef<'m>> {
        self.ports.first().map(|&id| PortRef { map: self.map, id })
    }

    /// The best view of backend `ip:port` across every service port of this frontend:
    /// serving in any wins. `None`: no service port of this frontend lists it.
    pub fn backend(&self, ip: IpAddr, port: u16) -> Option<(PortRef<'m>, Conditions)> {
        let mut best: Option<(PortRef<'m>, Conditions)> = None;
        for &id in self.ports {
            if let Some(c) = self.map.backend_conditions(id, ip, port) {
                let better = match &best {
                    None => true,
                    Some((_, b)) => c.state() > b.state(),
                };
                if better {
                    best = Some((PortRef { map: self.map, id }, c));
                }
            }
        }
        best
    }
}

impl fmt::Debug for FrontendRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontendRef")
            .field("key", &self.key)
            .field("ports", &self.ports().collect::<Vec<_>>())
            .finish()
    }
}

/// One service port (`namespace/name:port-name`) of a [`ServiceMap`].
#[derive(Clone, Copy)]
pub struct PortRef<'m> {
    map: &'m ServiceMap,
    id: PortId,
}

impl<'m> PortRef<'m> {
    fn entry(&self) -> &'m PortEntry {
        &self.map.ports[self.id as usize]
    }

    pub fn id(&self) -> PortId {
        self.id
    }

    pub fn service(&self) -> &'m ServiceName {
        &self.map.services[self.entry().service as usize]
    }

    /// `spec.ports[].name`, empty when unnamed.
    pub fn name(&self) -> &'m str {
        &self.entry().name
    }

    pub fn proto(&self) -> Proto {
        self.entry().proto
    }

    /// The Service opted out of deletions ([`IGNORE_ANNOTATION`]).
    pub fn ignored(&self) -> bool {
        self.entry().ignored
    }

    /// `spec.ports[].port`
    pub fn port(&self) -> u16 {
        self.entry().port
    }

    /// `spec.ports[].nodePort`
    pub fn node_port(&self) -> Option<u16> {
        self.entry().node_port
    }

    pub fn frontends(&self) -> &'m [Frontend] {
        let r = &self.entry().frontends;
        &self.map.frontend_list[r.start as usize..r.end as usize]
    }

    /// Backends sorted by address.
    pub fn backends(&self) -> &'m [Backend] {
        let r = &self.entry().backends;
        &self.map.backends[r.start as usize..r.end as usize]
    }

    pub fn backend(&self, ip: IpAddr, port: u16) -> Option<Conditions> {
        self.map.backend_conditions(self.id, ip, port)
    }
}

impl PartialEq for PortRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.map, other.map) && self.id == other.id
    }
}

impl Eq for PortRef<'_> {}

impl fmt::Display for PortRef<'_> {
    /// `namespace/name:port-name` (or `namespace/name:port/PROTO` when unnamed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.entry();
        if e.name.is_empty() {
            write!(f, "{}:{}/{}", self.service(), e.port, e.proto)
        } else {
            write!(f, "{}:{}", self.service(), e.name)
        }
    }
}

impl fmt::Debug for PortRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_numbers_match_netinet_in() {
        for p in Proto::ALL {
            assert_eq!(Proto::from_ip_proto(p.ip_proto()), Some(p), "{p}");
            assert_eq!(Proto::from_k8s(Some(p.as_k8s())), Some(p), "{p}");
        }
        assert_eq!(Proto::from_ip_proto(1), None, "ICMP is no Service protocol");
        assert_eq!(
            Proto::from_k8s(None),
            Some(Proto::Tcp),
            "API default is TCP"
        );
        assert_eq!(
            Proto::from_k8s(Some("tcp")),
            None,
            "the API spelling is upper case"
        );
    }

    #[test]
    fn conditions_defaults_follow_the_api_docs() {
        assert_eq!(Conditions::from_api(None, None, None), Conditions::READY);
        let not_ready = Conditions::from_api(Some(false), None, None);
        assert!(!not_ready.serving, "nil serving takes the value of ready");
        assert_eq!(not_ready.state(), BackendState::NotServing);
        let draining = Conditions::from_api(Some(false), Some(true), Some(true));
        assert_eq!(draining.state(), BackendState::Draining);
        let gone_soon = Conditions::from_api(Some(false), Some(false), Some(true));
        assert_eq!(gone_soon.state(), BackendState::NotServing);
    }

    #[test]
    fn merge_prefers_serving_in_any() {
        let draining = Conditions::from_api(Some(false), Some(true), Some(true));
        let not_serving = Conditions::from_api(Some(false), Some(false), Some(false));
        assert_eq!(not_serving.merge(draining), draining);
        assert_eq!(draining.merge(Conditions::READY), Conditions::READY);
        assert_eq!(Conditions::READY.merge(not_serving), Conditions::READY);
        assert_eq!(draining.merge(draining), draining);
    }
}
