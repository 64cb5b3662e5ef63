//! What [`ServiceMap::build`](super::ServiceMap::build) reads of an EndpointSlice, as a
//! read-only trait: the builder takes the API type (`kubectl get endpointslices -o json`, the
//! fixtures, `ctreap stale`) and the compact form the agent's watch keeps
//! ([`SliceLite`](super::lite::SliceLite)) alike, and reads both the same way.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::build::SERVICE_NAME_LABEL;
use super::model::Proto;

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

macro_rules! forward_slice_view {
    ($($ptr:ty),*) => {$(
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

// What `Borrow<EndpointSlice>` used to accept: values, references, and the `Arc`s a reflector
// store hands out.
forward_slice_view!(&T, Box<T>, Rc<T>, Arc<T>);
