//! Kubernetes watches -> [`ServiceMap`]: every NAT frontend kube-proxy programs on this node
//! (ClusterIPs, NodePorts on every node address, externalIPs, load-balancer IPs) and, per
//! service port, the backends from the EndpointSlices with their conditions.
//!
//! - [`ServiceMap::build`]: pure, from plain `Service`/`EndpointSlice`/`Node` values
//!   (what `kubectl get svc,endpointslices -A -o json` prints), or anything that reads like
//!   them ([`ServiceView`], [`SliceView`]);
//! - [`ClusterWatch`]: the live model, reflector stores fed by list/watch (holding compact
//!   forms of Services and EndpointSlices), snapshots on demand;
//! - [`local_addresses`]: the node's interface addresses, which carry NodePorts too;
//! - [`kube_client`], [`node_name`]: setup helpers for the binary.

mod build;
mod ifaddrs;
mod lite;
mod model;
mod view;
mod watch;

pub use build::{SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, Warning, WarningKind};
pub use ifaddrs::local_addresses;
pub use model::{
    Backend, BackendState, Conditions, Frontend, FrontendKey, FrontendKind, FrontendRef,
    IGNORE_ANNOTATION, MapStats, PortId, PortRef, Proto, ServiceMap, ServiceName,
};
pub use view::{
    IngressRef, ServicePortRef, ServiceView, SliceAddress, SliceEndpoint, SlicePort, SliceView,
};
pub use watch::{
    ClusterWatch, Error, Snapshot, WatchConfig, WatchState, WatchStatus, Watched, kube_client,
    node_name,
};
