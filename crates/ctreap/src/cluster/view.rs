//! What [`ServiceMap::build`](super::ServiceMap::build) reads of a Service and of an
//! EndpointSlice, as read-only traits: the builder takes the API types (`kubectl get
//! svc,endpointslices -o json`, the fixtures, `ctreap stale`) and the compact forms the agent's
//! watch keeps ([`ServiceLite`](super::lite::ServiceLite),
//! [`SliceLite`](super::lite::SliceLite)) alike, and reads both the same way.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::build::{SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL};
use super::model::{IGNORE_ANNOTATION, Proto};

/// One entry of a Service's `spec.ports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServicePortRef<'a> {
    /// `spec.ports[].name`
    pub name: Option<&'a str>,
    /// `spec.ports[].protocol`, as sent.
    pub protocol: Option<&'a str>,
    /// `spec.ports[].port`
    pub port: i32,
    /// `spec.ports[].nodePort`
    pub node_port: Option<i32>,
}

/// One entry of a Service's `status.loadBalancer.ingress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngressRef<'a> {
    /// `ip`
    pub ip: Option<&'a str>,
    /// `ipMode`
    pub ip_mode: Option<&'a str>,
}

/// The fields of a Service the map is built from. Everything under `spec` reads as absent
/// when [`has_spec`](Self::has_spec) is false.
pub trait ServiceView {
    /// `metadata.namespace`
    fn namespace(&self) -> Option<&str>;
    /// `metadata.name`
    fn name(&self) -> Option<&str>;
    /// `metadata.labels["service.kubernetes.io/service-proxy-name"]`
    fn service_proxy_name(&self) -> Option<&str>;
    /// `metadata.annotations["ctreap.io/ignore"]` ([`IGNORE_ANNOTATION`])
    fn ignore_annotation(&self) -> Option<&str>;
    /// `spec` is present.
    fn has_spec(&self) -> bool;
    /// `spec.type` is `ExternalName`.
    fn is_external_name(&self) -> bool;
    /// `spec.clusterIPs`, or `spec.clusterIP` where `clusterIPs` is absent or empty (objects
    /// written before dual-stack), as sent.
    fn cluster_ips(&self) -> impl Iterator<Item = &str>;
    /// `spec.externalIPs`, as sent.
    fn external_ips(&self) -> impl Iterator<Item = &str>;
    /// `spec.ports`, in order.
    fn ports(&self) -> impl Iterator<Item = ServicePortRef<'_>>;
    /// `status.loadBalancer.ingress`, in order.
    fn ingress(&self) -> impl Iterator<Item = IngressRef<'_>>;
}

impl ServiceView for Service {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }

    fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }

    fn service_proxy_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL))
            .map(String::as_str)
    }

    fn ignore_annotation(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(IGNORE_ANNOTATION))
            .map(String::as_str)
    }

    fn has_spec(&self) -> bool {
        self.spec.is_some()
    }

    fn is_external_name(&self) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| s.type_.as_deref() == Some("ExternalName"))
    }

    fn cluster_ips(&self) -> impl Iterator<Item = &str> {
        let spec = self.spec.as_ref();
        let ips = match spec.and_then(|s| s.cluster_ips.as_deref()) {
            Some(ips) if !ips.is_empty() => ips,
            _ => spec
                .and_then(|s| s.cluster_ip.as_ref())
                .map_or(&[][..], std::slice::from_ref),
        };
        ips.iter().map(String::as_str)
    }

    fn external_ips(&self) -> impl Iterator<Item = &str> {
        let spec = self.spec.as_ref();
        let ips = spec.and_then(|s| s.external_ips.as_deref()).unwrap_or(&[]);
        ips.iter().map(String::as_str)
    }

    fn ports(&self) -> impl Iterator<Item = ServicePortRef<'_>> {
        let spec = self.spec.as_ref();
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        ports.iter().map(|p| ServicePortRef {
            name: p.name.as_deref(),
            protocol: p.protocol.as_deref(),
            port: p.port,
            node_port: p.node_port,
        })
    }

    fn ingress(&self) -> impl Iterator<Item = IngressRef<'_>> {
        let ingress = self
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_deref())
            .unwrap_or(&[]);
        ingress.iter().map(|i| IngressRef {
            ip: i.ip.as_deref(),
            ip_mode: i.ip_mode.as_deref(),
        })
    }
}

/// One entry of an EndpointSlice's `ports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlicePort<'a> {
    /// `ports[].name`
    pub name: Option<&'a str>,
    /// `ports[].protocol` as [`Proto::from_k8s`] reads it: absent means TCP, `None` here means
    /// a protocol no Service can use.
    pub proto: Option<Proto>,
    /// `ports[].port`
    pub port: Option<i32>,
}

/// The first of an endpoint's `addresses` (the only one kube-proxy reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceAddress<'a> {
    /// As the API server sent it, still to be parsed.
    Text(&'a str),
    /// Already parsed; the text was exactly `ip.to_string()`.
    Ip(IpAddr),
}

/// One entry of an EndpointSlice's `endpoints`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceEndpoint<'a> {
    /// `endpoints[].addresses[0]`, `None` when the list is empty.
    pub address: Option<SliceAddress<'a>>,
    /// `endpoints[].conditions.ready`
    pub ready: Option<bool>,
    /// `endpoints[].conditions.serving`
    pub serving: Option<bool>,
    /// `endpoints[].conditions.terminating`
    pub terminating: Option<bool>,
}

/// The fields of an EndpointSlice the map is built from (`kubectl get endpointslices -o
/// jsonpath` over exactly these).
pub trait SliceView {
    /// `metadata.namespace`
    fn namespace(&self) -> Option<&str>;
    /// `metadata.name`
    fn name(&self) -> Option<&str>;
    /// `metadata.labels["kubernetes.io/service-name"]`
    fn service_name(&self) -> Option<&str>;
    /// `addressType`
    fn address_type(&self) -> &str;
    /// `ports`, in order (absent and empty alike).
    fn ports(&self) -> impl Iterator<Item = SlicePort<'_>>;
    /// `endpoints`, in order.
    fn endpoints(&self) -> impl ExactSizeIterator<Item = SliceEndpoint<'_>>;
}

impl SliceView for EndpointSlice {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }

    fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }

    fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(String::as_str)
    }

    fn address_type(&self) -> &str {
        &self.address_type
    }

    fn ports(&self) -> impl Iterator<Item = SlicePort<'_>> {
        self.ports.iter().flatten().map(|p| SlicePort {
            name: p.name.as_deref(),
            proto: Proto::from_k8s(p.protocol.as_deref()),
            port: p.port,
        })
    }

    fn endpoints(&self) -> impl ExactSizeIterator<Item = SliceEndpoint<'_>> {
        self.endpoints.iter().map(|ep| {
            let c = ep.conditions.as_ref();
            SliceEndpoint {
                address: ep.addresses.first().map(|a| SliceAddress::Text(a.as_str())),
                ready: c.and_then(|c| c.ready),
                serving: c.and_then(|c| c.serving),
                terminating: c.and_then(|c| c.terminating),
            }
        })
    }
}

macro_rules! forward_views {
    ($($ptr:ty),*) => {$(
        impl<T: ServiceView + ?Sized> ServiceView for $ptr {
            fn namespace(&self) -> Option<&str> {
                (**self).namespace()
            }
            fn name(&self) -> Option<&str> {
                (**self).name()
            }
            fn service_proxy_name(&self) -> Option<&str> {
                (**self).service_proxy_name()
            }
            fn ignore_annotation(&self) -> Option<&str> {
                (**self).ignore_annotation()
            }
            fn has_spec(&self) -> bool {
                (**self).has_spec()
            }
            fn is_external_name(&self) -> bool {
                (**self).is_external_name()
            }
            fn cluster_ips(&self) -> impl Iterator<Item = &str> {
                (**self).cluster_ips()
            }
            fn external_ips(&self) -> impl Iterator<Item = &str> {
                (**self).external_ips()
            }
            fn ports(&self) -> impl Iterator<Item = ServicePortRef<'_>> {
                (**self).ports()
            }
            fn ingress(&self) -> impl Iterator<Item = IngressRef<'_>> {
                (**self).ingress()
            }
        }

        impl<T: SliceView + ?Sized> SliceView for $ptr {
            fn namespace(&self) -> Option<&str> {
                (**self).namespace()
            }
            fn name(&self) -> Option<&str> {
                (**self).name()
            }
            fn service_name(&self) -> Option<&str> {
                (**self).service_name()
            }
            fn address_type(&self) -> &str {
                (**self).address_type()
            }
            fn ports(&self) -> impl Iterator<Item = SlicePort<'_>> {
                (**self).ports()
            }
            fn endpoints(&self) -> impl ExactSizeIterator<Item = SliceEndpoint<'_>> {
                (**self).endpoints()
            }
        }
    )*};
}

// What `Borrow<Service>` and `Borrow<EndpointSlice>` used to accept: values, references, and
// the `Arc`s a reflector store hands out.
forward_views!(&T, Box<T>, Rc<T>, Arc<T>);
