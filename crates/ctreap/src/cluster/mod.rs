//! Kubernetes watches -> [`ServiceMap`]: every NAT frontend kube-proxy programs on this node
//! (ClusterIPs, NodePorts on every node address, externalIPs, load-balancer IPs) and, per
//! service port, the backends from the EndpointSlices with their conditions.
//!
//! - [`ServiceMap::build`]: pure, from plain `Service`/`EndpointSlice`/`Node` values
//!   (what `kubectl get svc,endpointslices -A -o json` prints), or anything that reads like
//!   them ([`ServiceView`], [`SliceView`]);
//! - [`ClusterState`]: the live model, compact Services and EndpointSlices and the map kept
//!   current one Service per event, recording the (frontend, backend) pairs that got worse;
//! - [`ClusterWatch`]: list/watch into a [`ClusterState`], snapshots on demand;
//! - [`local_addresses`]: the node's interface addresses, which carry NodePorts too;
//! - [`kube_client`], [`node_name`]: setup helpers for the binary.

mod backends;
mod build;
mod decode;
mod few;
mod ifaddrs;
mod intern;
mod lite;
mod model;
mod pods;
mod state;
mod store;
mod view;
mod watch;

pub use backends::Backends;
pub use build::{SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, Warning, WarningKind};
pub use ifaddrs::{addresses_in, local_addresses};
pub use intern::Name;
#[cfg(test)]
pub(crate) use lite::{ServiceLite, SliceLite};
pub use model::{
    Backend, BackendState, Conditions, Frontend, FrontendKey, FrontendKind, FrontendRef,
    IGNORE_ANNOTATION, MapStats, PortId, PortRef, Proto, ServiceMap, ServiceName,
};
pub use pods::POD_PREFIX;
#[cfg(test)]
pub(crate) use pods::PodLite;
pub use state::{Change, ClusterState, Pair};
pub use view::{
    IngressRef, ServicePortRef, ServiceView, SliceAddress, SliceEndpoint, SlicePort, SliceView,
};
pub use watch::{
    ClusterWatch, Error, Snapshot, WatchConfig, WatchState, WatchStatus, Watched, kube_client,
    kube_config, node_name,
};
pub(crate) use watch::{answered, api_status, innermost};
