//! The resource types the server knows about, and how each is addressed.

use std::fmt;

/// A resource type served by the test server.
///
/// Each variant corresponds to one REST collection of the real API server, at the
/// same URL paths (see [`ResourceKind::collection_path`]). The set is closed: the
/// server answers `404 NotFound` for any other collection, as a real API server
/// does for a resource that is not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ResourceKind {
    /// `core/v1` `Service` (namespaced), at `/api/v1/services`.
    Service,
    /// `discovery.k8s.io/v1` `EndpointSlice` (namespaced), at
    /// `/apis/discovery.k8s.io/v1/endpointslices`.
    EndpointSlice,
    /// `core/v1` `Node` (cluster-scoped), at `/api/v1/nodes`.
    Node,
    /// `core/v1` `Pod` (namespaced), at `/api/v1/pods`.
    Pod,
    /// `core/v1` `Namespace` (cluster-scoped), at `/api/v1/namespaces`.
    Namespace,
    /// `events.k8s.io/v1` `Event` (namespaced), at `/apis/events.k8s.io/v1/events`: what
    /// controllers write (kube-rs's `Recorder`, client-go's new events library).
    Event,
    /// `core/v1` `Event` (namespaced), at `/api/v1/events`: the same objects as
    /// [`ResourceKind::Event`] in the older form, which `kubectl get events` and `kubectl
    /// describe` read. As in the real server, a write to either is seen in both.
    CoreEvent,
}

impl ResourceKind {
    /// Every served resource type.
    pub const ALL: [ResourceKind; 7] = [
        ResourceKind::Service,
        ResourceKind::EndpointSlice,
        ResourceKind::Node,
        ResourceKind::Pod,
        ResourceKind::Namespace,
        ResourceKind::CoreEvent,
        ResourceKind::Event,
    ];

    /// The other form of the same objects, stored with them: the two Event kinds.
    pub(crate) fn twin(self) -> Option<ResourceKind> {
        match self {
            ResourceKind::Event => Some(ResourceKind::CoreEvent),
            ResourceKind::CoreEvent => Some(ResourceKind::Event),
            _ => None,
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "discovery.k8s.io",
            ResourceKind::Event => "events.k8s.io",
            _ => "",
        }
    }

    /// The API version within the group.
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// The `apiVersion` field value (`group/version`, or `version` for the core group).
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::EndpointSlice => "discovery.k8s.io/v1",
            ResourceKind::Event => "events.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The `kind` field value of a single object.
    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::Service => "Service",
            ResourceKind::EndpointSlice => "EndpointSlice",
            ResourceKind::Node => "Node",
            ResourceKind::Pod => "Pod",
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Event | ResourceKind::CoreEvent => "Event",
        }
    }

    /// The `kind` of a list response (`ServiceList`, ...).
    pub fn list_kind(self) -> &'static str {
        match self {
            ResourceKind::Service => "ServiceList",
            ResourceKind::EndpointSlice => "EndpointSliceList",
            ResourceKind::Node => "NodeList",
            ResourceKind::Pod => "PodList",
            ResourceKind::Namespace => "NamespaceList",
            ResourceKind::Event | ResourceKind::CoreEvent => "EventList",
        }
    }

    /// The plural resource name used in URLs (`services`, ...).
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Service => "services",
            ResourceKind::EndpointSlice => "endpointslices",
            ResourceKind::Node => "nodes",
            ResourceKind::Pod => "pods",
            ResourceKind::Namespace => "namespaces",
            ResourceKind::Event | ResourceKind::CoreEvent => "events",
        }
    }

    /// The singular resource name, as listed by discovery.
    pub fn singular(self) -> &'static str {
        match self {
            ResourceKind::Service => "service",
            ResourceKind::EndpointSlice => "endpointslice",
            ResourceKind::Node => "node",
            ResourceKind::Pod => "pod",
            ResourceKind::Namespace => "namespace",
            ResourceKind::Event | ResourceKind::CoreEvent => "event",
        }
    }

    /// Short names, as listed by discovery.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Service => &["svc"],
            ResourceKind::EndpointSlice => &[],
            ResourceKind::Node => &["no"],
            ResourceKind::Pod => &["po"],
            ResourceKind::Namespace => &["ns"],
            ResourceKind::Event | ResourceKind::CoreEvent => &["ev"],
        }
    }

    /// Whether objects of this type live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            ResourceKind::Service
                | ResourceKind::EndpointSlice
                | ResourceKind::Pod
                | ResourceKind::Event
                | ResourceKind::CoreEvent
        )
    }

    /// The cluster-wide collection path, e.g. `/api/v1/services`.
    pub fn collection_path(self) -> String {
        format!("{}/{}", self.group_version_path(), self.plural())
    }

    /// `/api/v1` for the core group, `/apis/{group}/{version}` otherwise.
    pub fn group_version_path(self) -> String {
        if self.group().is_empty() {
            format!("/api/{}", self.version())
        } else {
            format!("/apis/{}/{}", self.group(), self.version())
        }
    }

    /// The `resource[.group]` form used in API server messages, e.g.
    /// `services` or `endpointslices.discovery.k8s.io`.
    pub fn qualified_resource(self) -> String {
        if self.group().is_empty() {
            self.plural().to_string()
        } else {
            format!("{}.{}", self.plural(), self.group())
        }
    }

    /// Looks a type up by `apiVersion` and `kind`.
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<ResourceKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.kind() == kind)
    }

    /// Looks a type up by group, version and plural, as in a URL path.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<ResourceKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.group() == group && k.version() == version && k.plural() == plural)
    }

    /// The kind matching a `k8s-openapi` resource type, if it is served.
    pub fn of<K: k8s_openapi::Resource>() -> Option<ResourceKind> {
        Self::from_api_version_kind(K::API_VERSION, K::KIND)
    }

    /// Field selector labels this type supports besides `metadata.name` and
    /// `metadata.namespace`, as the real API server's field label conversion
    /// functions for the type do.
    pub(crate) fn extra_field_labels(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Service => &["spec.clusterIP", "spec.type"],
            ResourceKind::Node => &["spec.unschedulable"],
            ResourceKind::Pod => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            ResourceKind::Namespace => &["status.phase"],
            ResourceKind::EndpointSlice => &[],
            // pkg/apis/core/v1/conversion.go, AddFieldLabelConversionsForEvent.
            ResourceKind::CoreEvent => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            // The same fields under the events.k8s.io names.
            ResourceKind::Event => &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reason",
                "reportingController",
                "deprecatedSource",
                "type",
            ],
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
