//! Service, EndpointSlice and Node objects -> [`ServiceMap`], the way kube-proxy reads them.
//!
//! Pure: plain values in, a map and a list of warnings out. Nothing from the API server is
//! trusted to be well formed: a bad field costs a warning and that one item, never the map.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use super::backends::Backends;
use super::few::Few;
use super::intern::Name;
use super::model::{
    Backend, Conditions, Frontend, FrontendKey, FrontendKind, PortEntry, Proto, ServiceMap,
    ServiceName,
};
use super::view::{ServiceView, SliceAddress, SliceView};

/// The label that ties an EndpointSlice to its Service (`kubernetes.io/service-name`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Services with this label are programmed by another proxy, not kube-proxy, which ignores
/// them (`service.kubernetes.io/service-proxy-name`, KEP-2447); so do we: their flows are
/// left alone.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// What was wrong with an object the builder had to skip (in part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WarningKind {
    /// A required field is absent (name, namespace, spec, slice port number).
    MissingField,
    /// An address that does not parse as an IP.
    MalformedAddress,
    /// A port outside 1..=65535.
    InvalidPort,
    /// A protocol other than TCP, UDP, SCTP.
    UnsupportedProtocol,
    /// An address of the other IP family than the slice or Service.
    FamilyMismatch,
    /// An EndpointSlice labelled with a Service that does not exist.
    UnknownService,
    /// The same address twice in one EndpointSlice (merged: serving if serving in any).
    DuplicateEndpoint,
    /// Two objects with the same namespace and name (the second is ignored).
    DuplicateObject,
    /// An EndpointSlice `addressType` other than IPv4, IPv6, FQDN.
    UnsupportedAddressType,
    /// An object that is not a valid API object of its kind (a port that is a string): its
    /// last decoded version, if any, stays in the view.
    Undecodable,
}

impl WarningKind {
    /// A stable snake_case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            WarningKind::MissingField => "missing_field",
            WarningKind::MalformedAddress => "malformed_address",
            WarningKind::InvalidPort => "invalid_port",
            WarningKind::UnsupportedProtocol => "unsupported_protocol",
            WarningKind::FamilyMismatch => "family_mismatch",
            WarningKind::UnknownService => "unknown_service",
            WarningKind::DuplicateEndpoint => "duplicate_endpoint",
            WarningKind::DuplicateObject => "duplicate_object",
            WarningKind::UnsupportedAddressType => "unsupported_address_type",
            WarningKind::Undecodable => "undecodable",
        }
    }
}

/// A problem in one API object; the builder skipped the offending part and went on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    /// `Service`, `EndpointSlice` or `Node`.
    pub object_kind: &'static str,
    /// `namespace/name` (or `name` for a Node); `?` where the object had none.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.object_kind, self.object, self.message)
    }
}

/// The warnings of one build, in the order they were found.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    pub(crate) list: Vec<Warning>,
}

impl Warnings {
    pub(crate) fn push(
        &mut self,
        kind: WarningKind,
        object_kind: &'static str,
        object: &str,
        message: String,
    ) {
        self.list.push(Warning {
            kind,
            object_kind,
            object: object.to_owned(),
            message,
        });
    }
}

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

pub(crate) fn port_u16(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The node's NodePort addresses: `status.addresses` of types InternalIP and ExternalIP plus
/// the local interface addresses, sorted and deduplicated. kube-proxy with
/// `nodePortAddresses` unset accepts NodePorts on every local address (`--dst-type LOCAL`).
pub(crate) fn node_addresses(
    node: Option<&Node>,
    local: &[IpAddr],
    w: &mut Warnings,
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = local.to_vec();
    if let Some(node) = node {
        let name = node.metadata.name.as_deref().unwrap_or("?");
        let addrs = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for a in addrs.into_iter().flatten() {
            if a.type_ != "InternalIP" && a.type_ != "ExternalIP" {
                continue;
            }
            match a.address.parse::<IpAddr>() {
                Ok(ip) => out.push(ip),
                Err(e) => w.push(
                    WarningKind::MalformedAddress,
                    "Node",
                    name,
                    format!("status.addresses {} {:?}: {e}", a.type_, a.address),
                ),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

impl ServiceMap {
    /// Builds the map from the cluster's objects, as kube-proxy on this node would program
    /// its NAT rules (`kubectl get svc,endpointslices -A -o json` and `kubectl get node NODE`).
    ///
    /// `node` is this node's Node object (its InternalIP/ExternalIP addresses carry
    /// NodePorts); `node_local_addrs` are the addresses of the node's interfaces (see
    /// [`local_addresses`](crate::cluster::local_addresses)), which carry NodePorts too.
    ///
    /// Accepts any [`ServiceView`] and [`SliceView`]: `Service`s and `EndpointSlice`s,
    /// references or `Arc`s of them, or the compact forms the agent's watch keeps. The live
    /// model builds each Service with the same `service_ports`, one Service at a time.
    pub fn build<S, E>(
        services: &[S],
        slices: &[E],
        node: Option<&Node>,
        node_local_addrs: &[IpAddr],
    ) -> (ServiceMap, Vec<Warning>)
    where
        S: ServiceView,
        E: SliceView,
    {
        let mut w = Warnings::default();
        let node_addrs = node_addresses(node, node_local_addrs, &mut w);
        let mut map = ServiceMap::empty();
        map.set_node_addrs(node_addrs.clone());
        // Slices by the Service they are labelled for, keyed by the objects' own strings.
        let mut slices_of: HashMap<(&str, &str), Vec<(usize, &E)>> = HashMap::new();
        for (i, slice) in slices.iter().enumerate() {
            if let Some(key) = slice_service(slice, &mut w) {
                slices_of.entry(key).or_default().push((i, slice));
            }
        }
        let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(services.len());
        let mut batch: Vec<&E> = Vec::new();
        for svc in services {
            let Some((ns, name)) = namespaced(svc.namespace(), svc.name(), "Service", &mut w)
            else {
                continue;
            };
            if !seen.insert((ns, name)) {
                w.push(
                    WarningKind::DuplicateObject,
                    "Service",
                    &format!("{ns}/{name}"),
                    "listed twice; the first one is used".into(),
                );
                continue;
            }
            batch.clear();
            if let Some(of) = slices_of.remove(&(ns, name)) {
                batch.extend(of.into_iter().map(|(_, e)| e));
            }
            let ports = service_ports(svc, ns, name, &batch, &node_addrs, &mut w);
            map.insert_service(
                ServiceName {
                    namespace: super::intern::intern(ns),
                    name: super::intern::intern(name),
                },
                ports,
            );
        }
        // What is left is labelled for Services that do not exist; reported in slice order.
        let mut orphans: Vec<(usize, &E)> = slices_of.into_values().flatten().collect();
        orphans.sort_by_key(|(i, _)| *i);
        for (_, slice) in orphans {
            unknown_service(slice, &mut w);
        }
        (map, w.list)
    }
}

/// The (namespace, Service name) an EndpointSlice is labelled for; `None` (with a warning if
/// its metadata is incomplete) when it belongs to no Service: slices without the label are
/// ignored, as kube-proxy ignores them.
pub(crate) fn slice_service<'a>(
    slice: &'a impl SliceView,
    w: &mut Warnings,
) -> Option<(&'a str, &'a str)> {
    let (ns, _) = namespaced(slice.namespace(), slice.name(), "EndpointSlice", w)?;
    let svc = slice.service_name().filter(|s| !s.is_empty())?;
    Some((ns, svc))
}

/// The warning for a slice labelled for a Service that does not exist.
pub(crate) fn unknown_service(slice: &impl SliceView, w: &mut Warnings) {
    let (Some(ns), Some(name), Some(svc)) = (slice.namespace(), slice.name(), slice.service_name())
    else {
        return;
    };
    w.push(
        WarningKind::UnknownService,
        "EndpointSlice",
        &format!("{ns}/{name}"),
        format!("labelled for Service {ns}/{svc}, which does not exist; ignored"),
    );
}

/// The namespace and name of a namespaced object, or a warning naming what is missing.
pub(crate) fn namespaced<'a>(
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    kind: &'static str,
    w: &mut Warnings,
) -> Option<(&'a str, &'a str)> {
    match (namespace, name) {
        (Some(ns), Some(name)) => Some((ns, name)),
        (ns, name) => {
            let what = format!("{}/{}", ns.unwrap_or("?"), name.unwrap_or("?"));
            w.push(
                WarningKind::MissingField,
                kind,
                &what,
                "metadata.namespace or metadata.name missing".into(),
            );
            None
        }
    }
}

/// One Service's ports with their frontends and backends, from the Service and the slices
/// labelled for it, as kube-proxy programs them. Empty for Services with no NAT (headless,
/// ExternalName, not yet allocated, another proxy's). Costs in proportion to this Service.
/// The Service opts out of deletions ([`IGNORE_ANNOTATION`]` = "true"`).
pub(crate) fn annotated_ignore(svc: &impl ServiceView) -> bool {
    svc.ignore_annotation()
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

pub(crate) fn service_ports<S: ServiceView, E: SliceView>(
    svc: &S,
    ns: &str,
    name: &str,
    slices: &[&E],
    node_addrs: &[IpAddr],
    w: &mut Warnings,
) -> Vec<PortEntry> {
    let id = format!("{ns}/{name}");
    let mut ports = service_frontends(svc, &id, node_addrs, w);
    if ports.is_empty() {
        return Vec::new();
    }
    let mut backends: SliceBackends = HashMap::new();
    let names = port_names(&ports);
    for slice in slices {
        add_slice(*slice, &names, &mut backends, w);
    }
    let mut per_port: Vec<Vec<(Backend, bool)>> = vec![Vec::new(); ports.len()];
    for ((i, ip, port), (conditions, shared)) in backends {
        let b = Backend {
            ip,
            port,
            conditions,
        };
        per_port[i].push((b, shared));
    }
    for (p, mut b) in ports.iter_mut().zip(per_port) {
        b.sort_unstable_by_key(|(b, _)| (b.ip, b.port));
        p.backends = Backends::from_marked(b.into_iter());
    }
    ports
}

/// A Service's ports and frontends, without backends.
fn service_frontends(
    svc: &impl ServiceView,
    id: &str,
    node_addrs: &[IpAddr],
    w: &mut Warnings,
) -> Vec<PortEntry> {
    const KIND: &str = "Service";
    if svc.service_proxy_name().is_some() {
        return Vec::new();
    }
    if !svc.has_spec() {
        w.push(WarningKind::MissingField, KIND, id, "spec missing".into());
        return Vec::new();
    }
    // kube-proxy's ShouldSkipService: ExternalName, headless (None) and not yet
    // allocated ("") Services get no rules, whatever else they say.
    if svc.is_external_name() {
        return Vec::new();
    }
    let raw_ips: Vec<&str> = svc.cluster_ips().collect();
    if raw_ips.is_empty() || raw_ips.iter().any(|ip| *ip == "None" || ip.is_empty()) {
        return Vec::new();
    }
    let mut cluster_ips = Vec::with_capacity(raw_ips.len());
    for raw in raw_ips {
        match raw.parse::<IpAddr>() {
            Ok(ip) => cluster_ips.push(ip),
            Err(e) => w.push(
                WarningKind::MalformedAddress,
                KIND,
                id,
                format!("spec.clusterIPs {raw:?}: {e}"),
            ),
        }
    }
    if cluster_ips.is_empty() {
        return Vec::new();
    }
    // A Service serves only the IP families of its ClusterIPs (kube-proxy runs one
    // proxier per family and each skips Services without a ClusterIP of its family).
    let has_family = |ip: &IpAddr| cluster_ips.iter().any(|c| family(c) == family(ip));

    // externalIPs and load-balancer IPs: frontends on the service port, like ClusterIPs.
    let mut extra: Vec<(IpAddr, FrontendKind)> = Vec::new();
    let mut extra_ips = |raw: &str, kind: FrontendKind, field: &str, w: &mut Warnings| match raw
        .parse::<IpAddr>(
    ) {
        Ok(ip) if has_family(&ip) => extra.push((ip, kind)),
        Ok(_) => w.push(
            WarningKind::FamilyMismatch,
            KIND,
            id,
            format!("{field} {raw:?} is of no IP family of the Service's clusterIPs; ignored"),
        ),
        Err(e) => w.push(
            WarningKind::MalformedAddress,
            KIND,
            id,
            format!("{field} {raw:?}: {e}"),
        ),
    };
    for raw in svc.external_ips() {
        extra_ips(raw, FrontendKind::ExternalIp, "spec.externalIPs", w);
    }
    for ing in svc.ingress() {
        // ipMode Proxy: the load balancer proxies to the NodePort; kube-proxy programs no
        // rule for the LB IP itself. Hostname-only ingress has no IP to match.
        if ing.ip_mode == Some("Proxy") {
            continue;
        }
        if let Some(raw) = ing.ip {
            extra_ips(
                raw,
                FrontendKind::LoadBalancer,
                "status.loadBalancer.ingress[].ip",
                w,
            );
        }
    }

    let ignored = annotated_ignore(svc);
    let mut ports = Vec::new();
    for (i, sp) in svc.ports().enumerate() {
        let Some(proto) = Proto::from_k8s(sp.protocol) else {
            w.push(
                WarningKind::UnsupportedProtocol,
                KIND,
                id,
                format!(
                    "spec.ports[{i}].protocol {:?} unsupported; port skipped",
                    sp.protocol.unwrap_or("")
                ),
            );
            continue;
        };
        let Some(port) = port_u16(sp.port) else {
            w.push(
                WarningKind::InvalidPort,
                KIND,
                id,
                format!(
                    "spec.ports[{i}].port {} out of range; port skipped",
                    sp.port
                ),
            );
            continue;
        };
        let node_port = match sp.node_port {
            None => None,
            Some(n) => match port_u16(n) {
                Some(p) => Some(p),
                None => {
                    w.push(
                        WarningKind::InvalidPort,
                        KIND,
                        id,
                        format!("spec.ports[{i}].nodePort {n} out of range; ignored"),
                    );
                    None
                }
            },
        };
        let mut fes: Vec<Frontend> = Vec::new();
        let mut add = |ip: IpAddr, port: u16, kind: FrontendKind| {
            fes.push(Frontend {
                key: FrontendKey { proto, ip, port },
                kind,
            })
        };
        for ip in &cluster_ips {
            add(*ip, port, FrontendKind::ClusterIp);
        }
        for &(ip, kind) in &extra {
            add(ip, port, kind);
        }
        if let Some(np) = node_port {
            for ip in node_addrs.iter().filter(|ip| has_family(ip)) {
                add(*ip, np, FrontendKind::NodePort);
            }
        }
        // The same address can be both, e.g. an externalIP that is a node address and a
        // port equal to the nodePort: keep the first kind.
        let mut seen = HashSet::with_capacity(fes.len());
        fes.retain(|f| seen.insert(f.key));
        ports.push(PortEntry {
            service: 0,
            name: super::intern::intern(sp.name.unwrap_or_default()),
            proto,
            port,
            node_port,
            frontends: Few::from(fes),
            backends: Backends::default(),
            ignored,
        });
    }
    ports
}

/// One slice's endpoints, added to the backends of the Service's `ports` (by index).
/// Backends by (index of the Service port, address, port): their conditions merged across
/// the slices added, and whether more than one slice listed them.
pub(crate) type SliceBackends = HashMap<(usize, IpAddr, u16), (Conditions, bool)>;

/// The (name, protocol) of each Service port: what a slice's ports are matched by.
pub(crate) fn port_names<'a>(ports: impl IntoIterator<Item = &'a PortEntry>) -> Vec<(Name, Proto)> {
    ports
        .into_iter()
        .map(|p| (p.name.clone(), p.proto))
        .collect()
}

/// Adds the backends `slice` gives the Service ports `ports` (by [`port_names`]).
pub(crate) fn add_slice(
    slice: &impl SliceView,
    ports: &[(Name, Proto)],
    backends: &mut SliceBackends,
    w: &mut Warnings,
) {
    const KIND: &str = "EndpointSlice";
    let (Some(ns), Some(name)) = (slice.namespace(), slice.name()) else {
        return;
    };
    let id = format!("{ns}/{name}");
    let fam = match slice.address_type() {
        "IPv4" => 4,
        "IPv6" => 6,
        "FQDN" => return,
        other => {
            w.push(
                WarningKind::UnsupportedAddressType,
                KIND,
                &id,
                format!("addressType {other:?} unsupported; slice ignored"),
            );
            return;
        }
    };
    if slice.ports().next().is_none() {
        return;
    }

    // Which port number each service port resolves to in this slice: the slice port
    // whose name equals the service port's name, same protocol (kube-proxy matches by
    // name; the slice port number is the resolved targetPort).
    let mut resolved: Vec<(usize, u16)> = Vec::with_capacity(ports.len());
    for (pi, (pname, proto)) in ports.iter().enumerate() {
        let found = slice
            .ports()
            .enumerate()
            .find(|(_, p)| p.name.unwrap_or("") == &**pname && p.proto == Some(*proto));
        let Some((i, sp)) = found else { continue };
        match sp.port {
            Some(n) => match port_u16(n) {
                Some(p) => resolved.push((pi, p)),
                None => w.push(
                    WarningKind::InvalidPort,
                    KIND,
                    &id,
                    format!("ports[{i}].port {n} out of range; port skipped"),
                ),
            },
            None => w.push(
                WarningKind::MissingField,
                KIND,
                &id,
                format!("ports[{i}] ({:?}) has no port number; port skipped", pname),
            ),
        }
    }
    if resolved.is_empty() {
        return;
    }

    let mut eps: Vec<(IpAddr, Conditions)> = Vec::with_capacity(slice.endpoints().len());
    for (i, ep) in slice.endpoints().enumerate() {
        // Only the first address counts: "No semantics are defined for additional
        // addresses beyond the first, and kube-proxy does not look at them."
        let Some(addr) = ep.address else {
            w.push(
                WarningKind::MissingField,
                KIND,
                &id,
                format!("endpoints[{i}] has no address; skipped"),
            );
            continue;
        };
        let ip = match addr {
            SliceAddress::Ip(ip) => ip,
            SliceAddress::Text(raw) => match raw.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(e) => {
                    w.push(
                        WarningKind::MalformedAddress,
                        KIND,
                        &id,
                        format!("endpoints[{i}] address {raw:?}: {e}; skipped"),
                    );
                    continue;
                }
            },
        };
        if family(&ip) != fam {
            // The address as sent: a parsed one was spelled exactly as it prints.
            let raw = match addr {
                SliceAddress::Text(raw) => raw.to_owned(),
                SliceAddress::Ip(ip) => ip.to_string(),
            };
            w.push(
                WarningKind::FamilyMismatch,
                KIND,
                &id,
                format!(
                    "endpoints[{i}] address {raw:?} in a slice of addressType {}; skipped",
                    slice.address_type()
                ),
            );
            continue;
        }
        let cond = Conditions::from_api(ep.ready, ep.serving, ep.terminating);
        eps.push((ip, cond));
    }
    // Duplicates inside one slice are an error of whoever wrote it; across slices they
    // are normal during updates (the docs ask consumers to tolerate them) and merged
    // silently below.
    eps.sort_by_key(|(ip, _)| *ip);
    let mut merged: Vec<(IpAddr, Conditions)> = Vec::with_capacity(eps.len());
    for (ip, cond) in eps {
        match merged.last_mut() {
            Some((last, c)) if *last == ip => {
                w.push(
                    WarningKind::DuplicateEndpoint,
                    KIND,
                    &id,
                    format!("address {ip} listed more than once; merged"),
                );
                *c = c.merge(cond);
            }
            _ => merged.push((ip, cond)),
        }
    }
    for (pi, port) in resolved {
        for &(ip, cond) in &merged {
            backends
                .entry((pi, ip, port))
                .and_modify(|(c, shared)| (*c, *shared) = (c.merge(cond), true))
                .or_insert((cond, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("test Service JSON")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("test EndpointSlice JSON")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
    }

    fn web_slice(name: &str, ports: serde_json::Value, eps: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "default", "name": name,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": eps
        }))
    }

    #[test]
    fn port_is_resolved_by_name_not_by_position() {
        let s = web_slice(
            "web-1",
            json!([{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]),
            json!([{"addresses": ["10.244.1.5"]}]),
        );
        let (map, warnings) = ServiceMap::build(&[web()], &[s], None, &[]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let fe = map
            .frontend(Proto::Tcp, ip("10.96.0.10"), 80)
            .expect("ClusterIP frontend");
        assert!(fe.backend(ip("10.244.1.5"), 8080).is_some(), "named port");
        assert!(fe.backend(ip("10.244.1.5"), 9090).is_none(), "other port");
    }

    #[test]
    fn protocol_must_match_too() {
        let s = web_slice(
            "web-1",
            json!([{"name": "http", "port": 8080, "protocol": "UDP"}]),
            json!([{"addresses": ["10.244.1.5"]}]),
        );
        let (map, _) = ServiceMap::build(&[web()], &[s], None, &[]);
        let fe = map
            .frontend(Proto::Tcp, ip("10.96.0.10"), 80)
            .expect("frontend");
        assert!(fe.backend(ip("10.244.1.5"), 8080).is_none());
    }

    #[test]
    fn slice_port_without_number_warns() {
        let s = web_slice(
            "web-1",
            json!([{"name": "http"}]),
            json!([{"addresses": ["10.244.1.5"]}]),
        );
        let (map, warnings) = ServiceMap::build(&[web()], &[s], None, &[]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].kind, WarningKind::MissingField);
        assert_eq!(map.stats().backends, 0);
    }

    #[test]
    fn only_the_first_address_counts() {
        let s = web_slice(
            "web-1",
            json!([{"name": "http", "port": 8080}]),
            json!([{"addresses": ["10.244.1.5", "10.244.1.6"]}]),
        );
        let (map, _) = ServiceMap::build(&[web()], &[s], None, &[]);
        let fe = map
            .frontend(Proto::Tcp, ip("10.96.0.10"), 80)
            .expect("frontend");
        assert!(fe.backend(ip("10.244.1.5"), 8080).is_some());
        assert!(fe.backend(ip("10.244.1.6"), 8080).is_none());
    }

    #[test]
    fn nodeport_follows_service_families() {
        let s = svc(json!({
            "metadata": {"namespace": "default", "name": "np"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "UDP"}]}
        }));
        let (map, warnings) = ServiceMap::build(
            &[s],
            &[] as &[EndpointSlice],
            None,
            &[ip("192.168.1.10"), ip("fd00::10")],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(
            map.frontend(Proto::Udp, ip("192.168.1.10"), 30080)
                .is_some()
        );
        assert!(
            map.frontend(Proto::Udp, ip("fd00::10"), 30080).is_none(),
            "a single-stack IPv4 Service has no IPv6 NodePort"
        );
        assert!(
            map.frontend(Proto::Tcp, ip("192.168.1.10"), 30080)
                .is_none()
        );
    }

    #[test]
    fn node_status_addresses_carry_nodeports() {
        let s = svc(json!({
            "metadata": {"namespace": "default", "name": "np"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"port": 80, "nodePort": 30080}]}
        }));
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-a"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.168.1.10"},
                {"type": "ExternalIP", "address": "203.0.113.10"},
                {"type": "Hostname", "address": "node-a"},
                {"type": "InternalIP", "address": "192.168.1.999"}
            ]}
        }))
        .expect("node JSON");
        let (map, warnings) = ServiceMap::build(&[s], &[] as &[EndpointSlice], Some(&node), &[]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].kind, WarningKind::MalformedAddress);
        assert_eq!(
            map.node_addresses(),
            &[ip("192.168.1.10"), ip("203.0.113.10")]
        );
        assert!(
            map.frontend(Proto::Tcp, ip("203.0.113.10"), 30080)
                .is_some()
        );
    }

    #[test]
    fn external_name_and_unallocated_have_no_frontends() {
        let ext = svc(json!({
            "metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com",
                     "ports": [{"port": 80}]}
        }));
        let pending = svc(json!({
            "metadata": {"namespace": "default", "name": "pending"},
            "spec": {"ports": [{"port": 80}]}
        }));
        let (map, warnings) =
            ServiceMap::build(&[ext, pending], &[] as &[EndpointSlice], None, &[]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(map.stats().frontends, 0);
    }

    #[test]
    fn services_of_another_proxy_are_left_alone() {
        let mut s = web();
        s.metadata.labels = Some(
            [(SERVICE_PROXY_NAME_LABEL.to_owned(), "cilium".to_owned())]
                .into_iter()
                .collect(),
        );
        let sl = web_slice(
            "web-1",
            json!([{"name": "http", "port": 8080}]),
            json!([{"addresses": ["10.244.1.5"]}]),
        );
        let (map, warnings) = ServiceMap::build(&[s], &[sl], None, &[]);
        assert!(
            warnings.is_empty(),
            "its slices are no unknown Service's: {warnings:?}"
        );
        assert!(map.frontend(Proto::Tcp, ip("10.96.0.10"), 80).is_none());
    }

    #[test]
    fn bad_service_fields_cost_only_themselves() {
        let s = svc(json!({
            "metadata": {"namespace": "default", "name": "odd"},
            "spec": {"clusterIPs": ["10.96.0.30", "10.96.0.999"],
                     "externalIPs": ["fd00::1", "not-an-ip", "198.51.100.7"],
                     "ports": [{"name": "a", "port": 80, "protocol": "ICMP"},
                               {"name": "b", "port": 70000},
                               {"name": "c", "port": 53, "protocol": "UDP", "nodePort": -1}]}
        }));
        let (map, warnings) =
            ServiceMap::build(&[s], &[] as &[EndpointSlice], None, &[ip("192.168.1.10")]);
        let kinds: Vec<_> = warnings.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [
                WarningKind::MalformedAddress,
                WarningKind::FamilyMismatch,
                WarningKind::MalformedAddress,
                WarningKind::UnsupportedProtocol,
                WarningKind::InvalidPort,
                WarningKind::InvalidPort,
            ],
            "{warnings:#?}"
        );
        assert!(map.frontend(Proto::Udp, ip("10.96.0.30"), 53).is_some());
        assert!(map.frontend(Proto::Udp, ip("198.51.100.7"), 53).is_some());
        assert_eq!(map.stats().frontends, 2);
    }

    #[test]
    fn missing_metadata_warns() {
        let s = svc(json!({"metadata": {"name": "nons"}, "spec": {"clusterIP": "10.96.0.1"}}));
        let (_, warnings) = ServiceMap::build(&[s], &[] as &[EndpointSlice], None, &[]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "Service ?/nons: metadata.namespace or metadata.name missing"
        );
    }

    #[test]
    fn duplicate_service_warns_and_keeps_first() {
        let (map, warnings) =
            ServiceMap::build(&[web(), web()], &[] as &[EndpointSlice], None, &[]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].kind, WarningKind::DuplicateObject);
        assert_eq!(map.stats().service_ports, 1);
    }

    #[test]
    fn backend_ip_index() {
        let s = web_slice(
            "web-1",
            json!([{"name": "http", "port": 8080}]),
            json!([{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.1.6"]}]),
        );
        let (map, _) = ServiceMap::build(&[web()], &[s], None, &[]);
        let ports: Vec<String> = map
            .ports_of_backend_ip(ip("10.244.1.6"))
            .map(|p| p.to_string())
            .collect();
        assert_eq!(ports, ["default/web:http"]);
        assert_eq!(map.ports_of_backend_ip(ip("10.244.1.7")).count(), 0);
        let stats = map.stats();
        assert_eq!(
            (stats.services, stats.backends, stats.backend_ips),
            (1, 2, 2)
        );
    }
}
