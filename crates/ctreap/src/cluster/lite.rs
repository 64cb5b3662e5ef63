//! The compact forms in which the live model (`cluster::state`) keeps Services and EndpointSlices: only what
//! [`ServiceMap::build`](super::ServiceMap::build) reads ([`ServiceView`], [`SliceView`]).
//!
//! The agent holds every Service and EndpointSlice of the cluster for its whole life. The API
//! types are big inline whatever fields are emptied: an EndpointSlice spends about 350 bytes
//! per endpoint (target reference, hints, topology, hostname, node, zone, all addresses),
//! [`SliceLite`] 5 (IPv4) or 17: the first address parsed, and the three conditions packed in
//! one byte; a Service is 824 bytes before its strings, [`ServiceLite`] about 150. With 500,000
//! endpoints the slices alone are the difference between 175 MB and 2.5 MB.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::build::{SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL};
use super::few::Few;
use super::intern::{Interner, Name, intern_owned};
use super::model::{IGNORE_ANNOTATION, Proto};
use super::view::{
    IngressRef, ServicePortRef, ServiceView, SliceAddress, SliceEndpoint, SlicePort, SliceView,
};

/// A Service reduced to what the map reads; [`ServiceView`] reads it exactly as it reads the
/// Service it was made from (same map, same warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceLite {
    namespace: Option<Name>,
    name: Option<Name>,
    spec: Option<ServiceSpecLite>,
    /// What most Services do not have, out of line: 80 bytes inline instead of 136, paid
    /// twice per Service while a list is applied (the list and the store).
    extra: Option<Box<ServiceExtra>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceExtra {
    /// `metadata.labels["service.kubernetes.io/service-proxy-name"]`
    service_proxy_name: Option<Box<str>>,
    /// `metadata.annotations["ctreap.io/ignore"]`
    ignore_annotation: Option<Box<str>>,
    /// `spec.externalIPs`
    external_ips: Box<[Box<str>]>,
    ingress: Box<[IngressLite]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceSpecLite {
    external_name: bool,
    /// `clusterIPs`, or `clusterIP` where that is absent or empty.
    /// Almost always one: kept without the list's own allocation then.
    cluster_ips: Few<Box<str>>,
    /// Shared: most Services repeat another's ports ([`SERVICE_PORTS`]).
    ports: Arc<[ServicePortLite]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ServicePortLite {
    name: Option<Name>,
    protocol: Option<Protocol>,
    port: i32,
    node_port: Option<i32>,
}

/// A `protocol` field as sent, without an allocation for the three the API knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Protocol {
    Known(Proto),
    Other(Box<str>),
}

impl Protocol {
    fn new(s: String) -> Self {
        match Proto::from_k8s(Some(&s)) {
            Some(p) => Protocol::Known(p),
            None => Protocol::Other(s.into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Protocol::Known(p) => p.as_k8s(),
            Protocol::Other(s) => s,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct IngressLite {
    ip: Option<Box<str>>,
    ip_mode: Option<Box<str>>,
}

fn boxed_all(v: Option<Vec<String>>) -> Box<[Box<str>]> {
    v.into_iter()
        .flatten()
        .map(String::into_boxed_str)
        .collect()
}

impl From<Service> for ServiceLite {
    fn from(svc: Service) -> Self {
        let Service {
            metadata,
            spec,
            status,
        } = svc;
        let mut external_ips: Box<[Box<str>]> = Box::new([]);
        let spec = spec.map(|spec| {
            external_ips = boxed_all(spec.external_ips);
            let cluster_ips = match spec.cluster_ips {
                Some(ips) if !ips.is_empty() => ips,
                _ => spec.cluster_ip.into_iter().collect(),
            };
            ServiceSpecLite {
                external_name: spec.type_.as_deref() == Some("ExternalName"),
                cluster_ips: Few::from(
                    cluster_ips
                        .into_iter()
                        .map(String::into_boxed_str)
                        .collect::<Vec<_>>(),
                ),
                ports: SERVICE_PORTS.get(
                    &spec
                        .ports
                        .into_iter()
                        .flatten()
                        .map(|p| ServicePortLite {
                            name: intern_owned(p.name),
                            protocol: p.protocol.map(Protocol::new),
                            port: p.port,
                            node_port: p.node_port,
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        });
        let ingress = status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .into_iter()
            .flatten()
            .map(|i| IngressLite {
                ip: boxed(i.ip),
                ip_mode: boxed(i.ip_mode),
            })
            .collect();
        let extra = ServiceExtra {
            service_proxy_name: boxed(
                metadata
                    .labels
                    .and_then(|mut l| l.remove(SERVICE_PROXY_NAME_LABEL)),
            ),
            ignore_annotation: boxed(
                metadata
                    .annotations
                    .and_then(|mut a| a.remove(IGNORE_ANNOTATION)),
            ),
            external_ips,
            ingress,
        };
        ServiceLite {
            namespace: intern_owned(metadata.namespace),
            name: intern_owned(metadata.name),
            spec,
            extra: (extra != ServiceExtra::default()).then(|| Box::new(extra)),
        }
    }
}

impl super::store::Named for ServiceLite {
    fn names(&self) -> (&str, &str) {
        (
            self.namespace.as_deref().unwrap_or(""),
            self.name.as_deref().unwrap_or(""),
        )
    }
}

impl ServiceView for ServiceLite {
    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn service_proxy_name(&self) -> Option<&str> {
        self.extra.as_ref()?.service_proxy_name.as_deref()
    }

    fn ignore_annotation(&self) -> Option<&str> {
        self.extra.as_ref()?.ignore_annotation.as_deref()
    }

    fn has_spec(&self) -> bool {
        self.spec.is_some()
    }

    fn is_external_name(&self) -> bool {
        self.spec.as_ref().is_some_and(|s| s.external_name)
    }

    fn cluster_ips(&self) -> impl Iterator<Item = &str> {
        let ips: &[Box<str>] = self.spec.as_ref().map_or(&[][..], |s| &s.cluster_ips);
        ips.iter().map(|s| &**s)
    }

    fn external_ips(&self) -> impl Iterator<Item = &str> {
        let ips = self.extra.as_ref().map_or(&[][..], |e| &e.external_ips);
        ips.iter().map(|s| &**s)
    }

    fn ports(&self) -> impl Iterator<Item = ServicePortRef<'_>> {
        let ports = self.spec.as_ref().map_or(&[][..], |s| &s.ports);
        ports.iter().map(|p| ServicePortRef {
            name: p.name.as_deref(),
            protocol: p.protocol.as_ref().map(Protocol::as_str),
            port: p.port,
            node_port: p.node_port,
        })
    }

    fn ingress(&self) -> impl Iterator<Item = IngressRef<'_>> {
        let ingress = self.extra.as_ref().map_or(&[][..], |e| &e.ingress);
        ingress.iter().map(|i| IngressRef {
            ip: i.ip.as_deref(),
            ip_mode: i.ip_mode.as_deref(),
        })
    }
}

/// An EndpointSlice reduced to what the map reads; [`SliceView`] reads it exactly as it reads
/// the EndpointSlice it was made from (same map, same warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SliceLite {
    namespace: Option<Name>,
    name: Option<Name>,
    /// `metadata.labels["kubernetes.io/service-name"]`
    service_name: Option<Name>,
    address_type: AddressType,
    /// Whether `endpoints` holds 16-byte addresses ([`Packed`]).
    wide: bool,
    /// Shared: the slices of a Service, and of most Services, list the same ports
    /// ([`SLICE_PORTS`]).
    ports: Arc<[PortLite]>,
    /// The endpoints, packed ([`Packed`]).
    endpoints: Box<[u8]>,
    /// What slices the EndpointSlice controller writes never have, out of line.
    odd: Option<Box<SliceOdd>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SliceOdd {
    /// An `addressType` the API does not define, as sent.
    address_type: Option<Box<str>>,
    /// The endpoints whose first address is not kept parsed in `endpoints`, by index, sorted:
    /// no address at all (`None`), or text that does not parse or is not spelled the way
    /// [`IpAddr`] prints it (kept as sent, for the builder's warning).
    addresses: Box<[(usize, Option<Box<str>>)]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddressType {
    IPv4,
    IPv6,
    Fqdn,
    /// In [`SliceOdd::address_type`].
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PortLite {
    name: Option<Name>,
    proto: Option<Proto>,
    port: Option<i32>,
}

/// An endpoint as a slice keeps it: one byte of conditions and address kind, then its address,
/// 4 bytes when no endpoint of the slice has an IPv6 address ("narrow"), else 16 ("wide").
/// An IPv4 endpoint takes 5 bytes, where `Option<IpAddr>` and three `Option<bool>` take 20:
/// at 500,000 endpoints, 2.5 MB instead of 10.
///
/// The first byte: `ready`, `serving`, `terminating` in two bits each (0 absent, 1 false,
/// 2 true), then [`Packed::HAS_IP`] and [`Packed::V6`].
struct Packed;

impl Packed {
    const NARROW: usize = 5;
    const WIDE: usize = 17;
    /// The endpoint's address is kept parsed; without it see [`SliceLite::odd_address`].
    const HAS_IP: u8 = 1 << 6;
    /// The address is IPv6 (wide records only).
    const V6: u8 = 1 << 7;

    fn tri(b: Option<bool>) -> u8 {
        match b {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        }
    }

    fn untri(bits: u8) -> Option<bool> {
        match bits & 3 {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    /// Packs `(address, ready, serving, terminating)` records; returns (wide, bytes).
    fn pack(eps: &[(Option<IpAddr>, [Option<bool>; 3])]) -> (bool, Box<[u8]>) {
        let wide = eps.iter().any(|(ip, _)| matches!(ip, Some(IpAddr::V6(_))));
        let width = if wide { Self::WIDE } else { Self::NARROW };
        let mut out = Vec::with_capacity(eps.len() * width);
        for (ip, [ready, serving, terminating]) in eps {
            let mut head =
                Self::tri(*ready) | Self::tri(*serving) << 2 | Self::tri(*terminating) << 4;
            let start = out.len();
            out.push(0);
            match ip {
                Some(IpAddr::V4(a)) => {
                    head |= Self::HAS_IP;
                    out.extend_from_slice(&a.octets());
                }
                Some(IpAddr::V6(a)) => {
                    head |= Self::HAS_IP | Self::V6;
                    out.extend_from_slice(&a.octets());
                }
                None => {}
            }
            out.resize(start + width, 0);
            out[start] = head;
        }
        (wide, out.into_boxed_slice())
    }

    /// One record back: (address, ready, serving, terminating).
    fn unpack(rec: &[u8]) -> (Option<IpAddr>, [Option<bool>; 3]) {
        let head = rec[0];
        let ip = if head & Self::HAS_IP == 0 {
            None
        } else if head & Self::V6 != 0 {
            let octets: [u8; 16] = rec[1..17].try_into().expect("a wide record");
            Some(IpAddr::from(octets))
        } else {
            let octets: [u8; 4] = rec[1..5].try_into().expect("a record");
            Some(IpAddr::from(octets))
        };
        (
            ip,
            [
                Self::untri(head),
                Self::untri(head >> 2),
                Self::untri(head >> 4),
            ],
        )
    }
}

/// Services' port lists, shared: one allocation per distinct list instead of one per Service.
static SERVICE_PORTS: Interner<[ServicePortLite]> = Interner::new();
/// EndpointSlices' port lists, shared.
static SLICE_PORTS: Interner<[PortLite]> = Interner::new();

fn boxed(s: Option<String>) -> Option<Box<str>> {
    s.map(String::into_boxed_str)
}

impl From<EndpointSlice> for SliceLite {
    fn from(slice: EndpointSlice) -> Self {
        let EndpointSlice {
            address_type,
            endpoints,
            metadata,
            ports,
        } = slice;
        let service_name = metadata
            .labels
            .and_then(|mut l| l.remove(SERVICE_NAME_LABEL))
            .as_deref()
            .map(super::intern::intern);
        let mut odd_addresses = Vec::new();
        let endpoints: Vec<(Option<IpAddr>, [Option<bool>; 3])> = endpoints
            .into_iter()
            .enumerate()
            .map(|(i, ep)| {
                let ip = match ep.addresses.into_iter().next() {
                    None => {
                        odd_addresses.push((i, None));
                        None
                    }
                    Some(raw) => match raw.parse::<IpAddr>() {
                        // Kept parsed only if printing it gives back the text: the builder's
                        // warnings quote the address as sent.
                        Ok(ip) if ip.to_string() == raw => Some(ip),
                        _ => {
                            odd_addresses.push((i, Some(raw.into_boxed_str())));
                            None
                        }
                    },
                };
                let c = ep.conditions.unwrap_or_default();
                (ip, [c.ready, c.serving, c.terminating])
            })
            .collect();
        let (wide, endpoints) = Packed::pack(&endpoints);
        // Through the pool even when empty: an `Arc` allocates even for that.
        let ports = SLICE_PORTS.get(
            &ports
                .into_iter()
                .flatten()
                .map(|p| PortLite {
                    proto: Proto::from_k8s(p.protocol.as_deref()),
                    name: intern_owned(p.name),
                    port: p.port,
                })
                .collect::<Vec<_>>(),
        );
        let (address_type, other_type) = match address_type.as_str() {
            "IPv4" => (AddressType::IPv4, None),
            "IPv6" => (AddressType::IPv6, None),
            "FQDN" => (AddressType::Fqdn, None),
            _ => (AddressType::Other, Some(address_type.into_boxed_str())),
        };
        let odd = SliceOdd {
            address_type: other_type,
            addresses: odd_addresses.into_boxed_slice(),
        };
        SliceLite {
            namespace: intern_owned(metadata.namespace),
            name: intern_owned(metadata.name),
            service_name,
            address_type,
            wide,
            ports,
            endpoints,
            odd: (odd != SliceOdd::default()).then(|| Box::new(odd)),
        }
    }
}

impl SliceLite {
    fn odd_address(&self, i: usize) -> Option<SliceAddress<'_>> {
        let odd = &self.odd.as_ref()?.addresses;
        let at = odd.binary_search_by_key(&i, |(j, _)| *j).ok()?;
        odd[at].1.as_deref().map(SliceAddress::Text)
    }
}

impl super::store::Named for SliceLite {
    fn names(&self) -> (&str, &str) {
        (
            self.namespace.as_deref().unwrap_or(""),
            self.name.as_deref().unwrap_or(""),
        )
    }

    /// The Service the slice is labelled for.
    fn group(&self) -> Option<(&str, &str)> {
        super::build::slice_service(self, &mut super::build::Warnings::default())
    }
}

impl SliceView for SliceLite {
    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref()
    }

    fn address_type(&self) -> &str {
        match self.address_type {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
            AddressType::Fqdn => "FQDN",
            AddressType::Other => self
                .odd
                .as_ref()
                .and_then(|o| o.address_type.as_deref())
                .unwrap_or(""),
        }
    }

    fn ports(&self) -> impl Iterator<Item = SlicePort<'_>> {
        self.ports.iter().map(|p| SlicePort {
            name: p.name.as_deref(),
            proto: p.proto,
            port: p.port,
        })
    }

    fn endpoints(&self) -> impl ExactSizeIterator<Item = SliceEndpoint<'_>> {
        let width = if self.wide {
            Packed::WIDE
        } else {
            Packed::NARROW
        };
        self.endpoints
            .chunks_exact(width)
            .enumerate()
            .map(|(i, rec)| {
                let (ip, [ready, serving, terminating]) = Packed::unpack(rec);
                SliceEndpoint {
                    address: match ip {
                        Some(ip) => Some(SliceAddress::Ip(ip)),
                        None => self.odd_address(i),
                    },
                    ready,
                    serving,
                    terminating,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ServiceMap, Warning};
    use k8s_openapi::api::core::v1::{Node, Service};
    use proptest::prelude::*;
    use serde_json::json;

    fn items<T: serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
        #[derive(serde::Deserialize)]
        struct List<T> {
            items: Vec<T>,
        }
        let list: List<T> = serde_json::from_str(text).expect("fixture list");
        list.items
    }

    /// Everything a map answers, in an order that does not depend on hashing.
    fn dump(map: &ServiceMap) -> Vec<String> {
        let mut out: Vec<String> = map
            .ports()
            .map(|p| {
                format!(
                    "{p} id={} ignored={} node_port={:?} fe={:?} be={:?}",
                    p.id(),
                    p.ignored(),
                    p.node_port(),
                    p.frontends(),
                    p.backends()
                )
            })
            .collect();
        let mut fes: Vec<String> = map
            .frontends()
            .map(|f| {
                let ids: Vec<_> = f.ports().map(|p| p.id()).collect();
                format!("{} -> {ids:?}", f.key())
            })
            .collect();
        fes.sort();
        out.extend(fes);
        out.push(format!("{:?}", map.node_addresses()));
        out.push(format!("{:?}", map.stats()));
        out
    }

    /// Builds from the slices and from their compact form; both must agree in every detail.
    fn both(
        services: &[Service],
        slices: Vec<EndpointSlice>,
        node: Option<&Node>,
    ) -> (Vec<String>, Vec<Warning>) {
        let local: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("ip")];
        let (map, warnings) = ServiceMap::build(services, &slices, node, &local);
        let want = dump(&map);
        let services_lite: Vec<ServiceLite> =
            services.iter().cloned().map(ServiceLite::from).collect();
        let slices_lite: Vec<SliceLite> = slices.iter().cloned().map(SliceLite::from).collect();
        let cases = [
            (
                "compact Services",
                ServiceMap::build(&services_lite, &slices, node, &local),
            ),
            (
                "compact slices",
                ServiceMap::build(services, &slices_lite, node, &local),
            ),
            (
                "both compact",
                ServiceMap::build(&services_lite, &slices_lite, node, &local),
            ),
        ];
        for (what, (lite_map, lite_warnings)) in cases {
            assert_eq!(warnings, lite_warnings, "{what}: same warnings, same order");
            assert_eq!(want, dump(&lite_map), "{what}: same map");
        }
        (want, warnings)
    }

    #[test]
    fn the_fixture_cluster_is_the_same_from_the_compact_form() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cluster/");
        let read = |f: &str| {
            std::fs::read_to_string(format!("{dir}{f}")).unwrap_or_else(|e| panic!("{f}: {e}"))
        };
        let services: Vec<Service> = items(&read("services.json"));
        let slices: Vec<EndpointSlice> = items(&read("endpointslices.json"));
        let node: Node = serde_json::from_str(&read("node.json")).expect("node.json");
        let (map, warnings) = both(&services, slices, Some(&node));
        assert!(map.len() > 10, "the fixtures have a map: {map:#?}");
        assert_eq!(
            warnings.len(),
            5,
            "the fixtures' bad objects: {warnings:#?}"
        );
    }

    #[test]
    fn odd_addresses_warn_the_same_from_the_compact_form() {
        let web: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIPs": ["10.96.0.10"],
                     "ports": [{"name": "http", "port": 80},
                               {"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "no-number", "port": 81}]}
        }))
        .expect("Service JSON");
        let slice = |name: &str, address_type: &str, eps: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": name,
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": address_type,
                "ports": [{"name": "http", "port": 8080},
                          {"name": "dns", "port": 5353, "protocol": "UDP"},
                          {"name": "dns", "port": 5354, "protocol": "ICMP"},
                          {"name": "no-number"}],
                "endpoints": eps
            }))
            .expect("EndpointSlice JSON")
        };
        let slices = vec![
            slice(
                "web-a",
                "IPv4",
                json!([
                    {"addresses": ["10.244.1.5"]},
                    {"addresses": []},
                    {"addresses": ["10.0.0.999", "10.244.1.9"]},
                    {"addresses": ["fd00::1"]},
                    {"addresses": ["FD00::2"]},
                    {"addresses": ["10.244.1.5"], "conditions": {"ready": false}},
                    {"addresses": ["10.244.1.6"],
                     "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": [" 10.244.1.7"]}
                ]),
            ),
            slice("web-b", "Hostname", json!([{"addresses": ["10.244.1.8"]}])),
            slice("web-c", "IPv6", json!([{"addresses": ["10.244.1.10"]}])),
        ];
        let lite = SliceLite::from(slices[0].clone());
        assert_eq!(
            lite.odd
                .as_ref()
                .expect("odd addresses")
                .addresses
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            [1, 2, 4, 7],
            "only these are not kept parsed: {lite:?}"
        );
        let (_, warnings) = both(&[web], slices, None);
        let got: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "EndpointSlice default/web-a: ports[3] (\"no-number\") has no port number; port skipped",
                "EndpointSlice default/web-a: endpoints[1] has no address; skipped",
                "EndpointSlice default/web-a: endpoints[2] address \"10.0.0.999\": invalid IP address syntax; skipped",
                "EndpointSlice default/web-a: endpoints[3] address \"fd00::1\" in a slice of addressType IPv4; skipped",
                "EndpointSlice default/web-a: endpoints[4] address \"FD00::2\" in a slice of addressType IPv4; skipped",
                "EndpointSlice default/web-a: endpoints[7] address \" 10.244.1.7\": invalid IP address syntax; skipped",
                "EndpointSlice default/web-a: address 10.244.1.5 listed more than once; merged",
                "EndpointSlice default/web-b: addressType \"Hostname\" unsupported; slice ignored",
                "EndpointSlice default/web-c: ports[3] (\"no-number\") has no port number; port skipped",
                "EndpointSlice default/web-c: endpoints[0] address \"10.244.1.10\" in a slice of addressType IPv6; skipped",
            ]
        );
    }

    #[test]
    fn odd_services_read_the_same_from_the_compact_form() {
        let svc =
            |v: serde_json::Value| -> Service { serde_json::from_value(v).expect("Service JSON") };
        let services = vec![
            svc(json!({
                "metadata": {"namespace": "default", "name": "odd"},
                "spec": {"clusterIPs": ["10.96.0.30", "10.96.0.999"],
                         "externalIPs": ["fd00::1", "not-an-ip", "198.51.100.7"],
                         "ports": [{"name": "a", "port": 80, "protocol": "ICMP"},
                                   {"name": "b", "port": 70000},
                                   {"name": "c", "port": 53, "protocol": "UDP", "nodePort": -1},
                                   {"name": "d", "port": 54, "protocol": "tcp"},
                                   {"name": "e", "port": 55, "protocol": "SCTP"}]}
            })),
            svc(json!({"metadata": {"name": "nons"}, "spec": {"clusterIP": "10.96.0.1"}})),
            svc(json!({"metadata": {"namespace": "default", "name": "nospec"}})),
            svc(json!({
                "metadata": {"namespace": "default", "name": "odd"},
                "spec": {"clusterIP": "10.96.0.31", "ports": [{"port": 80}]}
            })),
            svc(json!({
                "metadata": {"namespace": "default", "name": "old",
                             "annotations": {"ctreap.io/ignore": " True ", "other": "x"}},
                "spec": {"clusterIP": "10.96.0.32", "clusterIPs": [],
                         "ports": [{"port": 80, "nodePort": 30080}]}
            })),
            svc(json!({
                "metadata": {"namespace": "default", "name": "cilium",
                             "labels": {"service.kubernetes.io/service-proxy-name": "cilium"}},
                "spec": {"clusterIP": "10.96.0.33", "ports": [{"port": 80}]}
            })),
            svc(json!({
                "metadata": {"namespace": "default", "name": "ext"},
                "spec": {"type": "ExternalName", "externalName": "example.com",
                         "clusterIP": "10.96.0.34", "ports": [{"port": 80}]}
            })),
            svc(json!({
                "metadata": {"namespace": "default", "name": "headless"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
            })),
            svc(json!({
                "metadata": {"namespace": "default", "name": "pending"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
            })),
            svc(json!({
                "metadata": {"namespace": "default", "name": "lb"},
                "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.35", "fd00:96::35"],
                         "ports": [{"name": "https", "port": 443, "nodePort": 30443}]},
                "status": {"loadBalancer": {"ingress": [
                    {"ip": "203.0.113.5"},
                    {"ip": "203.0.113.6", "ipMode": "Proxy"},
                    {"ip": "2001:db8::7", "ipMode": "VIP"},
                    {"ip": "203.0.113.999"},
                    {"hostname": "lb.example.com"}
                ]}}
            })),
        ];
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-a"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                                     {"type": "InternalIP", "address": "fd00::10"}]}
        }))
        .expect("Node JSON");
        let (map, warnings) = both(&services, Vec::new(), Some(&node));
        assert!(
            map.iter()
                .any(|l| l.contains("default/old:80/TCP") && l.contains("ignored=true")),
            "{map:#?}"
        );
        assert_eq!(warnings.len(), 11, "{warnings:#?}");
    }

    /// Endpoints as the API sends them, in any mix: IPv4, IPv6, text kept as sent, none; each
    /// condition absent, false or true.
    fn arb_endpoints() -> impl Strategy<Value = Vec<serde_json::Value>> {
        let address = prop_oneof![
            any::<[u8; 4]>().prop_map(|a| Some(std::net::Ipv4Addr::from(a).to_string())),
            any::<[u8; 16]>().prop_map(|a| Some(std::net::Ipv6Addr::from(a).to_string())),
            Just(Some("10.0.0.999".to_string())),
            Just(Some("FD00::2".to_string())),
            Just(None),
        ];
        let cond = proptest::option::of(any::<bool>());
        proptest::collection::vec((address, cond.clone(), cond.clone(), cond), 0..40).prop_map(
            |eps| {
                eps.into_iter()
                    .map(|(addr, ready, serving, terminating)| {
                        json!({
                            "addresses": addr.into_iter().collect::<Vec<_>>(),
                            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                        })
                    })
                    .collect()
            },
        )
    }

    fn read(s: &impl SliceView) -> Vec<(Option<String>, [Option<bool>; 3])> {
        s.endpoints()
            .map(|e| {
                let addr = e.address.map(|a| match a {
                    SliceAddress::Ip(ip) => ip.to_string(),
                    SliceAddress::Text(t) => t.to_string(),
                });
                (addr, [e.ready, e.serving, e.terminating])
            })
            .collect()
    }

    proptest! {
        #[test]
        fn packed_endpoints_read_as_sent(eps in arb_endpoints(), v6 in any::<bool>()) {
            let slice: EndpointSlice = serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "web-x"},
                "addressType": if v6 { "IPv6" } else { "IPv4" },
                "endpoints": eps,
            }))
            .expect("EndpointSlice JSON");
            let lite = SliceLite::from(slice.clone());
            let want = read(&slice);
            prop_assert_eq!(lite.endpoints().len(), want.len());
            prop_assert_eq!(read(&lite), want);
        }
    }

    #[test]
    fn an_ipv4_endpoint_takes_5_bytes_and_an_ipv6_one_17() {
        let slice = |addrs: &[&str]| -> SliceLite {
            let eps: Vec<_> = addrs
                .iter()
                .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
                .collect();
            SliceLite::from(
                serde_json::from_value::<EndpointSlice>(json!({
                    "metadata": {"namespace": "default", "name": "web-x"},
                    "addressType": "IPv4",
                    "endpoints": eps,
                }))
                .expect("EndpointSlice JSON"),
            )
        };
        assert_eq!(
            slice(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]).endpoints.len(),
            15
        );
        assert_eq!(
            slice(&["10.0.0.1", "fd00::1", "10.0.0.3"]).endpoints.len(),
            51
        );
        // The wide flag fits in the struct's padding.
        assert_eq!(std::mem::size_of::<SliceLite>(), 96);
        // One cluster IP inline costs the Service 8 bytes, where its own list cost an
        // allocation of 16 and the allocator's header.
        assert_eq!(std::mem::size_of::<ServiceLite>(), 88);
    }
}
