//! The compact form in which the agent's watch keeps EndpointSlices: only what
//! [`ServiceMap::build`](super::ServiceMap::build) reads ([`SliceView`]).
//!
//! The agent holds every EndpointSlice of the cluster for its whole life. The API type spends
//! about 350 bytes inline per endpoint (target reference, hints, topology, hostname, node,
//! zone, all addresses) even with those fields emptied; [`SliceLite`] spends 20: the first
//! address parsed, and the three conditions. With 100,000 endpoints that is the difference
//! between 35 MB and 2 MB.

use std::borrow::Cow;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::runtime::reflector::Lookup;

use super::build::SERVICE_NAME_LABEL;
use super::model::Proto;
use super::view::{SliceAddress, SliceEndpoint, SlicePort, SliceView};

/// An EndpointSlice reduced to what the map reads; [`SliceView`] reads it exactly as it reads
/// the EndpointSlice it was made from (same map, same warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SliceLite {
    namespace: Option<Box<str>>,
    name: Option<Box<str>>,
    /// `metadata.labels["kubernetes.io/service-name"]`
    service_name: Option<Box<str>>,
    address_type: AddressType,
    ports: Box<[PortLite]>,
    endpoints: Box<[EndpointLite]>,
    /// The endpoints whose first address is not kept parsed in `endpoints`, by index, sorted:
    /// no address at all (`None`), or text that does not parse or is not spelled the way
    /// [`IpAddr`] prints it (kept as sent, for the builder's warning). Empty for any slice
    /// the EndpointSlice controller writes.
    odd_addresses: Box<[(usize, Option<Box<str>>)]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AddressType {
    IPv4,
    IPv6,
    Fqdn,
    Other(Box<str>),
}

impl AddressType {
    fn new(s: String) -> Self {
        match s.as_str() {
            "IPv4" => AddressType::IPv4,
            "IPv6" => AddressType::IPv6,
            "FQDN" => AddressType::Fqdn,
            _ => AddressType::Other(s.into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
            AddressType::Fqdn => "FQDN",
            AddressType::Other(s) => s,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PortLite {
    name: Option<Box<str>>,
    proto: Option<Proto>,
    port: Option<i32>,
}

/// 20 bytes: `Option<IpAddr>` is 17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EndpointLite {
    /// `None`: see [`SliceLite::odd_addresses`].
    ip: Option<IpAddr>,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

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
            .map(String::into_boxed_str);
        let mut odd_addresses = Vec::new();
        let endpoints = endpoints
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
                EndpointLite {
                    ip,
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                }
            })
            .collect();
        let ports = ports
            .into_iter()
            .flatten()
            .map(|p| PortLite {
                proto: Proto::from_k8s(p.protocol.as_deref()),
                name: boxed(p.name),
                port: p.port,
            })
            .collect();
        SliceLite {
            namespace: boxed(metadata.namespace),
            name: boxed(metadata.name),
            service_name,
            address_type: AddressType::new(address_type),
            ports,
            endpoints,
            odd_addresses: odd_addresses.into_boxed_slice(),
        }
    }
}

impl SliceLite {
    fn odd_address(&self, i: usize) -> Option<SliceAddress<'_>> {
        let at = self
            .odd_addresses
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()?;
        self.odd_addresses[at].1.as_deref().map(SliceAddress::Text)
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
        self.address_type.as_str()
    }

    fn ports(&self) -> impl Iterator<Item = SlicePort<'_>> {
        self.ports.iter().map(|p| SlicePort {
            name: p.name.as_deref(),
            proto: p.proto,
            port: p.port,
        })
    }

    fn endpoints(&self) -> impl ExactSizeIterator<Item = SliceEndpoint<'_>> {
        self.endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| SliceEndpoint {
                address: match ep.ip {
                    Some(ip) => Some(SliceAddress::Ip(ip)),
                    None => self.odd_address(i),
                },
                ready: ep.ready,
                serving: ep.serving,
                terminating: ep.terminating,
            })
    }
}

/// What a reflector store needs to key it: the EndpointSlice's kind and name.
impl Lookup for SliceLite {
    type DynamicType = ();

    fn kind(dt: &()) -> Cow<'_, str> {
        <EndpointSlice as Resource>::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        <EndpointSlice as Resource>::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        <EndpointSlice as Resource>::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        <EndpointSlice as Resource>::plural(dt)
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        self.name.as_deref().map(Cow::Borrowed)
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    /// Not kept: the store never reads it back.
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    /// Not kept: the store never reads it back.
    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ServiceMap, Warning};
    use k8s_openapi::api::core::v1::{Node, Service};
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
        let lite: Vec<SliceLite> = slices.into_iter().map(SliceLite::from).collect();
        let (lite_map, lite_warnings) = ServiceMap::build(services, &lite, node, &local);
        assert_eq!(warnings, lite_warnings, "same warnings, same order");
        assert_eq!(dump(&map), dump(&lite_map), "same map");
        (dump(&map), warnings)
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
            lite.odd_addresses
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
    fn an_endpoint_is_20_bytes() {
        assert_eq!(std::mem::size_of::<EndpointLite>(), 20);
    }
}
