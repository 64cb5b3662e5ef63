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
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use super::backends::Backends;
use super::few::Few;
use super::intern::Name;

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
    /// a node address (or `hostIP`) : a Pod's `hostPort`, the CNI portmap plugin's DNAT
    /// (`cluster/pods.rs`)
    HostPort,
}

impl FrontendKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
            FrontendKind::HostPort => "hostPort",
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
    pub namespace: Name,
    pub name: Name,
}

impl ServiceName {
    /// The Pod whose hostPorts this name stands for (`pod/NAME`, `cluster/pods.rs`), or
    /// `None` for a Service.
    pub fn hostport_pod(&self) -> Option<&str> {
        self.name.strip_prefix(super::pods::POD_PREFIX)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Index of a service port in a [`ServiceMap`]; valid until its Service changes (a Service's
/// update gives its ports new ids, and freed ids are reused).
pub type PortId = u32;

/// One entry of `spec.ports` of a Service that has NAT frontends, with its frontends and its
/// backends (sorted by address, one per (ip, port), conditions merged across slices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortEntry {
    /// The map's index of the Service; the builder leaves it 0, [`ServiceMap::insert_service`]
    /// sets it.
    pub(crate) service: u32,
    /// `spec.ports[].name`; empty when unnamed (single-port Services).
    pub(crate) name: Name,
    pub(crate) proto: Proto,
    pub(crate) port: u16,
    pub(crate) node_port: Option<u16>,
    pub(crate) frontends: Few<Frontend>,
    pub(crate) backends: Backends,
    /// The Service is annotated [`IGNORE_ANNOTATION`]`: "true"`.
    pub(crate) ignored: bool,
}

impl PortEntry {
    /// The conditions of backend `ip:port` (binary search: the backends are sorted).
    pub(crate) fn backend(&self, ip: IpAddr, port: u16) -> Option<Conditions> {
        self.backends.find(ip, port)
    }

    /// A backend of this family (IPv4 if `v4`) is serving or draining: the service proxy
    /// translates this port's traffic of that family. Stops at the first one.
    pub(crate) fn serves(&self, v4: bool) -> bool {
        self.backends
            .iter()
            .any(|b| b.ip.is_ipv4() == v4 && b.conditions.state() != BackendState::NotServing)
    }
}

/// A Service with this annotation set to `"true"` is judged like any other, but the agent never
/// deletes its flows (an opt-out for Services whose clients must not be reset).
pub const IGNORE_ANNOTATION: &str = "ctreap.io/ignore";

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

/// Service name -> index in [`ServiceMap::services`], filed under the name the slot holds:
/// a `HashMap<ServiceName, u32>` would keep a second copy of every name (32 bytes a Service).
#[derive(Clone, Debug, Default)]
struct ServiceIds {
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

fn hash_name(hasher: &std::hash::RandomState, name: &ServiceName) -> u64 {
    hasher.hash_one((&*name.namespace, &*name.name))
}

fn slot_name(services: &[Option<ServiceSlot>], si: u32) -> &ServiceName {
    &services[si as usize]
        .as_ref()
        .expect("a filed index has its slot")
        .name
}

impl ServiceIds {
    fn hash(&self, name: &ServiceName) -> u64 {
        hash_name(&self.hasher, name)
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn reserve(&mut self, n: usize, services: &[Option<ServiceSlot>]) {
        let hasher = &self.hasher;
        self.table
            .reserve(n, |&si| hash_name(hasher, slot_name(services, si)));
    }

    fn get(&self, services: &[Option<ServiceSlot>], name: &ServiceName) -> Option<u32> {
        self.table
            .find(self.hash(name), |&si| slot_name(services, si) == name)
            .copied()
    }

    /// Files index `si`, whose slot is set.
    fn insert(&mut self, services: &[Option<ServiceSlot>], si: u32) {
        let hash = self.hash(slot_name(services, si));
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, si, |&i| hash_name(hasher, slot_name(services, i)));
    }

    fn remove(&mut self, services: &[Option<ServiceSlot>], name: &ServiceName) -> Option<u32> {
        match self
            .table
            .find_entry(self.hash(name), |&si| slot_name(services, si) == name)
        {
            Ok(e) => Some(e.remove().0),
            Err(_) => None,
        }
    }
}

/// A Service with NAT frontends: its name and its ports' ids.
#[derive(Clone, Debug)]
struct ServiceSlot {
    name: ServiceName,
    ports: Few<PortId>,
}

/// Every NAT frontend of the cluster as seen from one node, and the backends behind each.
///
/// Built by [`ServiceMap::build`](crate::cluster::ServiceMap::build) from Service,
/// EndpointSlice and Node objects, or kept current one Service at a time by the live model
/// (`cluster::state`): each Service's ports live in slots of their own, so replacing one
/// Service costs in proportion to that Service, never to the cluster.
#[derive(Clone, Debug, Default)]
pub struct ServiceMap {
    /// Slots by service index; `None` is free (listed in `free_services`).
    services: Vec<Option<ServiceSlot>>,
    free_services: Vec<u32>,
    service_ids: ServiceIds,
    /// Slots by [`PortId`]; `None` is free (listed in `free_ports`).
    ports: Vec<Option<PortEntry>>,
    free_ports: Vec<PortId>,
    /// Frontend key -> the service ports published on it (almost always one).
    frontends: HashMap<FrontendKey, Few<PortId>>,
    node_addrs: Vec<IpAddr>,
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
        let ports = self.frontends.get(&key)?;
        Some(FrontendRef {
            map: self,
            key,
            ports,
        })
    }

    /// All frontends, in no particular order.
    pub fn frontends(&self) -> impl Iterator<Item = FrontendRef<'_>> + '_ {
        self.frontends.iter().map(move |(key, ports)| FrontendRef {
            map: self,
            key: *key,
            ports,
        })
    }

    /// All service ports with NAT frontends, ordered by Service (namespace, name) then
    /// `spec.ports` order. Sorts: O(ports log ports), for reports, not for hot paths.
    pub fn ports(&self) -> impl ExactSizeIterator<Item = PortRef<'_>> + '_ {
        let mut slots: Vec<&ServiceSlot> = self.services.iter().flatten().collect();
        slots.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let ids: Vec<PortId> = slots.iter().flat_map(|s| s.ports.iter().copied()).collect();
        ids.into_iter().map(move |id| PortRef { map: self, id })
    }

    /// The service port with this id, if the id is in use in this map.
    pub fn port(&self, id: PortId) -> Option<PortRef<'_>> {
        self.ports
            .get(id as usize)
            .is_some_and(Option::is_some)
            .then_some(PortRef { map: self, id })
    }

    /// The ports of the Service `name`, in `spec.ports` order; empty if it has no NAT
    /// frontends (or does not exist).
    pub fn service_ports(&self, name: &ServiceName) -> impl Iterator<Item = PortRef<'_>> + '_ {
        self.service_port_ids(name)
            .iter()
            .map(move |&id| PortRef { map: self, id })
    }

    /// The Service has a serving (or draining) backend on some port: what the circuit breaker
    /// asks of each Service a pass would touch. Proportional to that Service.
    pub fn has_serving_backend(&self, name: &ServiceName) -> bool {
        self.service_ports(name).any(|p| {
            p.backends()
                .iter()
                .any(|b| b.conditions.state() != BackendState::NotServing)
        })
    }

    /// The service ports that list `ip` as a backend (any port, any condition): which
    /// Services a pod IP serves (`kubectl get endpointslices -A | grep IP`). Walks every
    /// port: for reports and tests, not for hot paths.
    pub fn ports_of_backend_ip(&self, ip: IpAddr) -> impl Iterator<Item = PortRef<'_>> + '_ {
        self.ports().filter(move |p| p.backends().has_ip(ip))
    }

    /// The node addresses NodePorts were published on (Node status + local interfaces).
    pub fn node_addresses(&self) -> &[IpAddr] {
        &self.node_addrs
    }

    pub fn stats(&self) -> MapStats {
        let mut ips = std::collections::HashSet::new();
        let mut stats = MapStats {
            services: self.service_ids.len(),
            frontends: self.frontends.len(),
            ..MapStats::default()
        };
        for p in self.ports.iter().flatten() {
            stats.service_ports += 1;
            stats.backends += p.backends.len();
            ips.extend(p.backends.iter().map(|b| b.ip));
        }
        stats.backend_ips = ips.len();
        stats
    }

    fn entry(&self, id: PortId) -> &PortEntry {
        self.ports[id as usize]
            .as_ref()
            .expect("a PortRef names a port in use")
    }

    pub(crate) fn backend_conditions(
        &self,
        id: PortId,
        ip: IpAddr,
        port: u16,
    ) -> Option<Conditions> {
        self.entry(id).backend(ip, port)
    }

    pub(crate) fn set_node_addrs(&mut self, addrs: Vec<IpAddr>) {
        self.node_addrs = addrs;
    }

    /// Takes Service `name` out of the map; returns its ports as they were (their service
    /// index is stale). Proportional to the Service.
    pub(crate) fn remove_service(&mut self, name: &ServiceName) -> Vec<PortEntry> {
        let Some(si) = self.service_ids.remove(&self.services, name) else {
            return Vec::new();
        };
        let Some(slot) = self.services[si as usize].take() else {
            return Vec::new();
        };
        self.free_services.push(si);
        let mut out = Vec::with_capacity(slot.ports.len());
        for &id in slot.ports.iter() {
            let Some(entry) = self.ports[id as usize].take() else {
                continue;
            };
            for fe in entry.frontends.iter() {
                if let std::collections::hash_map::Entry::Occupied(mut o) =
                    self.frontends.entry(fe.key)
                {
                    o.get_mut().retain(|&p| p != id);
                    if o.get().is_empty() {
                        o.remove();
                    }
                }
            }
            self.free_ports.push(id);
            out.push(entry);
        }
        out
    }

    /// Puts Service `name` with `ports` into the map (replacing nothing: remove it first).
    /// A Service without ports takes no slot. Proportional to the Service.
    pub(crate) fn insert_service(&mut self, name: ServiceName, ports: Vec<PortEntry>) {
        debug_assert!(
            self.service_ids.get(&self.services, &name).is_none(),
            "insert after remove"
        );
        if ports.is_empty() {
            return;
        }
        let si = match self.free_services.pop() {
            Some(i) => i,
            None => {
                self.services.push(None);
                (self.services.len() - 1) as u32
            }
        };
        let mut ids = Vec::with_capacity(ports.len());
        for p in ports {
            let id = match self.free_ports.pop() {
                Some(i) => i,
                None => {
                    self.ports.push(None);
                    (self.ports.len() - 1) as PortId
                }
            };
            for fe in p.frontends.iter() {
                self.frontends.entry(fe.key).or_default().push(id);
            }
            self.ports[id as usize] = Some(PortEntry { service: si, ..p });
            ids.push(id);
        }
        self.services[si as usize] = Some(ServiceSlot {
            name,
            ports: Few::from(ids),
        });
        self.service_ids.insert(&self.services, si);
    }

    /// Room for `n` more Services of one port each, so that a full list fills the map without
    /// the doubling that would leave up to half of each table empty.
    pub(crate) fn reserve(&mut self, n: usize) {
        let free = self.free_services.len();
        if n <= free {
            return;
        }
        let more = n - free;
        self.services.reserve_exact(more);
        self.ports
            .reserve_exact(more.saturating_sub(self.free_ports.len()));
        self.service_ids.reserve(more, &self.services);
        self.frontends.reserve(more);
    }

    /// The ids of Service `name`'s ports, in `spec.ports` order.
    pub(crate) fn service_port_ids(&self, name: &ServiceName) -> &[PortId] {
        self.service_ids
            .get(&self.services, name)
            .and_then(|i| self.services[i as usize].as_ref())
            .map_or(&[], |s| &s.ports)
    }

    /// The port `id` (in use).
    pub(crate) fn port_entry(&self, id: PortId) -> &PortEntry {
        self.entry(id)
    }

    /// Applies `edits` to the backends of port `id` (in use): see [`Backends::patch`].
    pub(crate) fn patch_backends(&mut self, id: PortId, edits: &[super::backends::Edit]) {
        if let Some(p) = self.ports[id as usize].as_mut() {
            p.backends.patch(edits);
        }
    }

    /// The service index of a port (for telling one Service's ports from another's).
    pub(crate) fn service_index(&self, name: &ServiceName) -> Option<u32> {
        self.service_ids.get(&self.services, name)
    }

    fn service_name(&self, si: u32) -> &ServiceName {
        &self.services[si as usize]
            .as_ref()
            .expect("a port's Service is in use")
            .name
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

    /// A backend of the frontend's address family is serving (or draining) on one of its
    /// service ports: the service proxy translates traffic to this frontend (what kube-proxy
    /// calls a Service with endpoints). Stops at the first one.
    pub fn has_serving_backend(&self) -> bool {
        let v4 = self.key.ip.is_ipv4();
        self.ports().any(|p| p.entry().serves(v4))
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
        self.map.entry(self.id)
    }

    pub fn id(&self) -> PortId {
        self.id
    }

    /// The map's index of this port's Service (tells one Service's ports from another's).
    pub(crate) fn service_index(&self) -> u32 {
        self.entry().service
    }

    pub fn service(&self) -> &'m ServiceName {
        self.map.service_name(self.entry().service)
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
        &self.entry().frontends
    }

    /// Backends sorted by address.
    pub fn backends(&self) -> &'m Backends {
        &self.entry().backends
    }

    pub fn backend(&self, ip: IpAddr, port: u16) -> Option<Conditions> {
        self.entry().backend(ip, port)
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
