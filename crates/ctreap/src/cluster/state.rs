//! The live model: the cluster's Services, EndpointSlices and this node's Node in their compact
//! forms, and the [`ServiceMap`] kept current one Service at a time.
//!
//! A watch event costs in proportion to the object it names. An EndpointSlice update patches
//! the backends that slice lists, and only those, in the ports of the Service it is labelled
//! for ([`Backends::patched`]); it rebuilds that one Service (from the Service and all its
//! slices) only where the patch cannot be exact: the slice moved between Services, a backend
//! it changes is listed by another slice too, the Service is held, or either version of the
//! slice has a warning. Never the map.
//!
//! The model reports state, not verdicts: each change records the (frontend, backend) pairs
//! whose backend's view changed, with its conditions before and now, and
//! [`ClusterState::take_changes`] hands them to the agent, whose planner
//! (`reconcile::planned`) decides what its policy deletes. kube-proxy does the same with its
//! per-Service change trackers (`pkg/proxy/endpointschangetracker.go`). A full rebuild happens
//! only on a re-list ([`ClusterState::replace_services`], [`ClusterState::replace_slices`]),
//! and even then only the Services whose objects differ are rebuilt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::backends::{Backends, Edit};
use super::build::{
    SliceBackends, Warning, Warnings, add_slice, annotated_ignore, namespaced, node_addresses,
    port_names, service_ports, unknown_service,
};
use super::few::Few;
use super::intern::{Name, intern};
use super::lite::{ServiceLite, SliceLite};
#[cfg(test)]
use super::model::Proto;
use super::model::{Backend, Conditions, FrontendKey, PortEntry, ServiceMap, ServiceName};
use super::pods::PodLite;
use super::store::{self, Named, Store};
use super::view::{ServiceView, SliceView};

/// An object's namespace and name, shared with everything else that holds them.
type ObjKey = (Name, Name);

fn obj_key(ns: &str, name: &str) -> ObjKey {
    (intern(ns), intern(name))
}

/// The key of the Service a slice is labelled for (its group in the slice store).
fn service_of(slice: &SliceLite) -> Option<ObjKey> {
    slice.group().map(|(ns, name)| obj_key(ns, name))
}

/// An object a watch could not decode.
#[derive(Clone, Debug)]
pub(crate) struct BadObject {
    pub(crate) kind: &'static str,
    /// `namespace/name`, or `name`.
    pub(crate) object: String,
    /// The decoder's message and what the model does about it.
    pub(crate) why: String,
    /// The Service (namespace, name) an EndpointSlice is labelled for: held until it decodes.
    pub(crate) holds: Option<(String, String)>,
}

/// A (frontend, backend) pair: the entries `conntrack -D -p P --orig-dst F --orig-port-dst FP
/// --reply-src B --reply-port-src BP` deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    pub frontend: FrontendKey,
    pub backend: SocketAddr,
}

/// A pair whose backend's view changed since the changes were last taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The Service the pair belonged to before the change.
    pub service: ServiceName,
    /// That Service opted out of deletions ([`IGNORE_ANNOTATION`](super::IGNORE_ANNOTATION)).
    pub ignored: bool,
    /// The backend's best conditions on the frontend before the first change.
    pub old: Option<Conditions>,
    /// Its conditions just before the last change: what it left from, when changes came
    /// faster than they were taken (terminating, then removed, is not a backend that
    /// vanished while serving).
    pub left_from: Option<Conditions>,
    /// Its best conditions now (`None`: not a backend of the frontend any more).
    pub new: Option<Conditions>,
}

/// The cluster as the watches delivered it, and the map derived from it.
#[derive(Debug, Default)]
pub struct ClusterState {
    services: Store<ServiceLite>,
    slices: Store<SliceLite>,
    node: Option<Node>,
    local_addrs: Vec<IpAddr>,
    /// The Services have been listed: before that, every slice's Service looks missing.
    services_listed: bool,
    map: ServiceMap,
    /// The current warnings of each Service (its own and its slices'), and of slices labelled
    /// for a Service that does not exist, by (namespace, Service name).
    warnings: BTreeMap<ObjKey, Vec<Warning>>,
    node_warnings: Vec<Warning>,
    /// Objects the watches could not decode, by (kind, `namespace/name`): their last decoded
    /// version, if any, stays in the model.
    undecodable: BTreeMap<(&'static str, String), (Warning, Option<ObjKey>)>,
    /// Every frontend and backend each held Service had while held (and just before): when
    /// the hold lifts, the Service is judged against them, so backends that left meanwhile are
    /// recorded.
    held_at: HashMap<ObjKey, Vec<PortEntry>>,
    changes: HashMap<Pair, Change>,
    /// Frontends that gained a serving backend, with the Service that gave them one; recorded
    /// only once [`ClusterState::take_gained`] was first called (`None` before). The initial
    /// lists are a full pass's business: recording every Service's first endpoints raised the
    /// agent's peak by 6 MiB at 100,000 Services (VmHWM 89.1 against 83.1 MiB).
    gained: Option<HashMap<FrontendKey, ServiceName>>,
    /// EndpointSlice updates applied by patching their backends (the rest rebuilt their
    /// Service).
    patched: u64,
    /// This node's Pods (`cluster/pods.rs`), by (namespace, name): each one's hostPorts are a
    /// Service `pod/NAME` of the map.
    pods: BTreeMap<ObjKey, PodLite>,
}

impl ClusterState {
    /// An empty cluster on a node with these interface addresses.
    pub fn new(local_addrs: Vec<IpAddr>) -> Self {
        let mut st = ClusterState {
            local_addrs,
            ..ClusterState::default()
        };
        st.node_changed();
        st
    }

    pub fn map(&self) -> &ServiceMap {
        &self.map
    }

    /// Every current warning: the Node's, then by Service.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = self.node_warnings.clone();
        out.extend(self.warnings.values().flatten().cloned());
        out.extend(self.undecodable.values().map(|(w, _)| w.clone()));
        out
    }

    /// How many current warnings there are, by object kind and reason
    /// (`ctreap_cluster_warnings`).
    pub fn warning_counts(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        let mut out = BTreeMap::new();
        for w in self
            .node_warnings
            .iter()
            .chain(self.warnings.values().flatten())
            .chain(self.undecodable.values().map(|(w, _)| w))
        {
            *out.entry((w.object_kind, w.kind.as_str())).or_default() += 1;
        }
        out
    }

    /// This node's Node object has been seen.
    pub fn has_node(&self) -> bool {
        self.node.is_some()
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// This node's Pods the model holds.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// A Pod of this node was added or changed.
    pub(crate) fn apply_pod(&mut self, pod: PodLite) {
        let Some(key) = self.key_of(pod.namespace.as_deref(), pod.name.as_deref(), "Pod") else {
            return;
        };
        if self.pods.get(&key) == Some(&pod) {
            return;
        }
        let had_ports = self
            .pods
            .get(&key)
            .is_some_and(|p| !p.host_ports.is_empty());
        let has_ports = !pod.host_ports.is_empty();
        self.pods.insert(key.clone(), pod);
        if had_ports || has_ports {
            self.rebuild_pod(&key);
        }
    }

    /// A Pod of this node is gone.
    pub(crate) fn delete_pod(&mut self, ns: Option<&str>, name: Option<&str>) {
        let Some(key) = self.key_of(ns, name, "Pod") else {
            return;
        };
        if self
            .pods
            .remove(&key)
            .is_some_and(|p| !p.host_ports.is_empty())
        {
            self.rebuild_pod(&key);
        }
    }

    /// A complete list of this node's Pods.
    pub(crate) fn replace_pods(&mut self, list: Vec<PodLite>) {
        let mut new = BTreeMap::new();
        for p in list {
            if let Some(key) = self.key_of(p.namespace.as_deref(), p.name.as_deref(), "Pod") {
                new.insert(key, p);
            }
        }
        let old = std::mem::replace(&mut self.pods, new);
        let mut touched: Vec<ObjKey> = Vec::new();
        for (k, p) in &old {
            if self.pods.get(k) != Some(p) && !p.host_ports.is_empty() {
                touched.push(k.clone());
            }
        }
        for (k, p) in &self.pods {
            if old.get(k) != Some(p) && !p.host_ports.is_empty() {
                touched.push(k.clone());
            }
        }
        touched.sort();
        touched.dedup();
        for k in touched {
            self.rebuild_pod(&k);
        }
    }

    /// The Pod, if the model holds it.
    pub(crate) fn pod(&self, ns: &str, name: &str) -> Option<&PodLite> {
        self.pods.get(&obj_key(ns, name))
    }

    /// Rebuilds the Service `pod/NAME` of one Pod's hostPorts and records what changed, as
    /// [`ClusterState::rebuild`] does for a Service.
    fn rebuild_pod(&mut self, key: &ObjKey) {
        let name = PodLite::service_name(&key.0, &key.1);
        let removed = self.map.remove_service(&name);
        if let Some(p) = self.pods.get(key) {
            let ports = p.ports(self.map.node_addresses());
            // A hostPort that gains a pod is a frontend that gains a serving backend: UDP sent
            // to it before (between the old pod's DEL and the new pod's ADD) met no DNAT and
            // stays untranslated for as long as its client sends, unless the plugin flushes
            // on ADD (not every version or CNI does).
            self.record_gained(&name, &removed, &ports);
            self.map.insert_service(name.clone(), ports);
        }
        self.record(&name, removed);
    }

    /// How many EndpointSlice updates were applied by patching the backends they list,
    /// without rebuilding their Service.
    pub fn patched_updates(&self) -> u64 {
        self.patched
    }

    /// The frontends that went from no serving backend (or not existing) to having one since
    /// the last call, and still have one: what traffic sent to them before could not be
    /// translated (see `reconcile::classify`, `NotTranslated`). A full pass judges every entry
    /// and may take them unread. Recording starts with the first call.
    pub fn take_gained(&mut self) -> HashMap<FrontendKey, ServiceName> {
        let mut out = self.gained.replace(HashMap::new()).unwrap_or_default();
        out.retain(|k, _| {
            self.map
                .frontend(k.proto, k.ip, k.port)
                .is_some_and(|f| f.has_serving_backend())
        });
        out
    }

    /// The pairs whose backend's view changed since the last call (gone, or its conditions),
    /// with their state before the first change and now. Backends that were added are not
    /// pairs of a change: nothing about them can be stale.
    pub fn take_changes(&mut self) -> HashMap<Pair, Change> {
        let mut out = std::mem::take(&mut self.changes);
        for (pair, c) in out.iter_mut() {
            let fe = pair.frontend;
            c.new = self
                .map
                .frontend(fe.proto, fe.ip, fe.port)
                .and_then(|f| f.backend(pair.backend.ip(), pair.backend.port()))
                .map(|(_, c)| c);
        }
        out.retain(|_, c| c.new != c.old);
        out
    }

    /// The Services watch begins a list (its first, or a re-list after an error or 410 Gone).
    /// Until it completes, a slice whose Service the model does not hold may be labelled for
    /// one the list has not delivered yet (created while the watch was down): its "unknown
    /// Service" warning waits for the list, which then rebuilds every Service with slices to
    /// decide, as for the first list.
    pub fn services_listing(&mut self) {
        self.services_listed = false;
    }

    /// An EndpointSlice was added or changed (a watch's Apply event).
    pub fn apply_endpoint_slice(&mut self, slice: EndpointSlice) {
        self.apply_slice(SliceLite::from(slice));
    }

    /// Complete lists of Services and EndpointSlices (a watch's list, or a re-list).
    pub fn replace_objects(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        self.replace_services(services.into_iter().map(ServiceLite::from).collect());
        self.replace_slices(slices.into_iter().map(SliceLite::from).collect());
    }

    pub(crate) fn apply_service(&mut self, svc: ServiceLite) {
        let Some(key) = self.key_of(svc.namespace(), svc.name(), "Service") else {
            return;
        };
        if self.services.get(&key) == Some(&svc) {
            return;
        }
        self.services.insert(svc);
        self.rebuild(&key);
    }

    pub(crate) fn delete_service(&mut self, ns: Option<&str>, name: Option<&str>) {
        let Some(key) = self.key_of(ns, name, "Service") else {
            return;
        };
        if self.services.remove(&key).is_some() {
            self.rebuild(&key);
        }
    }

    pub(crate) fn apply_slice(&mut self, slice: SliceLite) {
        let Some(key) = self.key_of(slice.namespace(), slice.name(), "EndpointSlice") else {
            return;
        };
        let old = self.slices.remove(&key);
        if old.as_ref() == Some(&slice) {
            self.slices.insert(slice);
            return;
        }
        if let Some(old) = &old
            && self.patch_slice(old, &slice)
        {
            self.patched += 1;
            self.slices.insert(slice);
            return;
        }
        let mut touched = Vec::with_capacity(2);
        if let Some(old) = &old {
            touched.extend(service_of(old));
        }
        touched.extend(service_of(&slice));
        self.slices.insert(slice);
        touched.dedup();
        for svc in touched {
            self.rebuild(&svc);
        }
    }

    pub(crate) fn delete_slice(&mut self, ns: Option<&str>, name: Option<&str>) {
        let Some(key) = self.key_of(ns, name, "EndpointSlice") else {
            return;
        };
        if let Some(old) = self.slices.remove(&key)
            && let Some(svc) = service_of(&old)
        {
            self.rebuild(&svc);
        }
    }

    /// The Service the model holds under this name, if any.
    pub(crate) fn service(&self, ns: &str, name: &str) -> Option<&ServiceLite> {
        self.services.get_str(ns, name)
    }

    /// The EndpointSlice the model holds under this name, if any.
    pub(crate) fn slice(&self, ns: &str, name: &str) -> Option<&SliceLite> {
        self.slices.get_str(ns, name)
    }

    /// The Node, if seen.
    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// An object arrived in a form that does not decode: one WARN line when this is news, a
    /// warning while it lasts, and the Service it names held (no deletions) until then.
    pub(crate) fn set_undecodable(&mut self, bad: BadObject) {
        let w = Warning {
            kind: super::build::WarningKind::Undecodable,
            object_kind: bad.kind,
            object: bad.object.clone(),
            message: bad.why,
        };
        let holds = bad.holds.map(|(ns, name)| obj_key(&ns, &name));
        let key = (bad.kind, bad.object);
        let entry = (w, holds);
        let old = self.undecodable.get(&key);
        if old == Some(&entry) {
            return;
        }
        log_new(&[], std::slice::from_ref(&entry.0));
        let old_holds = old.and_then(|(_, h)| h.clone());
        let new_holds = entry.1.clone();
        self.undecodable.insert(key, entry);
        for k in [old_holds, new_holds].into_iter().flatten() {
            self.rebuild(&k);
        }
    }

    /// The object `ns/name` of `kind` decoded, or is gone: called on every watch event, so
    /// nothing is built unless some object is undecodable.
    pub(crate) fn decoded(&mut self, kind: &'static str, ns: Option<&str>, name: Option<&str>) {
        if !self.undecodable.is_empty() {
            self.clear_undecodable(kind, &super::decode::object_of(ns, name));
        }
    }

    /// `object` of `kind` decoded again, or is gone.
    pub(crate) fn clear_undecodable(&mut self, kind: &'static str, object: &str) {
        if let Some((_, holds)) = self.undecodable.remove(&(kind, object.to_owned())) {
            tracing::info!(kind, object, "decodes again, or is gone");
            if let Some(k) = holds {
                self.rebuild(&k);
            }
        }
    }

    /// A complete list of `kind` arrived: these are the objects of it that did not decode.
    pub(crate) fn replace_undecodable(&mut self, kind: &'static str, bad: Vec<BadObject>) {
        let now: HashSet<&str> = bad.iter().map(|b| b.object.as_str()).collect();
        let gone: Vec<String> = self
            .undecodable
            .keys()
            .filter(|(k, o)| *k == kind && !now.contains(o.as_str()))
            .map(|(_, o)| o.clone())
            .collect();
        for o in gone {
            self.clear_undecodable(kind, &o);
        }
        for b in bad {
            self.set_undecodable(b);
        }
    }

    /// A Service that an undecodable EndpointSlice is labelled for: its endpoints are not all
    /// known, so none of its flows may be judged.
    fn held(&self, key: &ObjKey) -> bool {
        self.undecodable
            .values()
            .any(|(_, h)| h.as_ref() == Some(key))
    }

    /// A fresh list of every Service: rebuilds the Services that were added, removed or
    /// changed since the last view.
    pub(crate) fn replace_services(&mut self, list: Vec<ServiceLite>) {
        let mut new: Store<ServiceLite> = Store::with_capacity(list.len());
        for svc in list {
            if self
                .key_of(svc.namespace(), svc.name(), "Service")
                .is_some()
            {
                new.insert(svc);
            }
        }
        let mut touched: Vec<ObjKey> = self
            .services
            .values()
            .filter(|s| {
                let (ns, name) = s.names();
                new.get_str(ns, name).is_none()
            })
            .map(store::key)
            .collect();
        touched.extend(
            new.values()
                .filter(|s| !self.services.holds(s))
                .map(store::key),
        );
        self.services = new;
        if !self.services_listed {
            // Slices listed before the Services: their "unknown Service" warnings were held
            // back until now; every Service with slices is rebuilt to decide.
            self.services_listed = true;
            touched.extend(self.slices.groups().map(|(ns, name)| obj_key(ns, name)));
            touched.sort();
            touched.dedup();
        }
        self.reserve_for(&touched);
        for k in touched {
            self.rebuild(&k);
        }
    }

    /// A fresh list of every EndpointSlice: rebuilds the Services whose slices were added,
    /// removed or changed since the last view.
    pub(crate) fn replace_slices(&mut self, list: Vec<SliceLite>) {
        let mut new: Store<SliceLite> = Store::with_capacity(list.len());
        for slice in list {
            if self
                .key_of(slice.namespace(), slice.name(), "EndpointSlice")
                .is_some()
            {
                new.insert(slice);
            }
        }
        let mut touched: HashSet<ObjKey> = HashSet::new();
        let old = std::mem::take(&mut self.slices);
        for s in old.values().filter(|s| !new.holds(s)) {
            if let Some(svc) = service_of(s) {
                touched.insert(svc);
            }
        }
        for s in new.values().filter(|s| !old.holds(s)) {
            if let Some(svc) = service_of(s) {
                touched.insert(svc);
            }
        }
        self.slices = new;
        let mut touched: Vec<ObjKey> = touched.into_iter().collect();
        touched.sort();
        self.reserve_for(&touched);
        for k in touched {
            self.rebuild(&k);
        }
    }

    /// Makes room in the map for the Services of `touched` it does not hold yet: a first list
    /// fills it without doubling its tables.
    fn reserve_for(&mut self, touched: &[ObjKey]) {
        let new = touched
            .iter()
            .filter(|(ns, name)| {
                let name = ServiceName {
                    namespace: ns.clone(),
                    name: name.clone(),
                };
                self.map.service_index(&name).is_none()
            })
            .count();
        self.map.reserve(new);
    }

    /// This node's Node object changed (or is gone): NodePorts follow its addresses.
    pub(crate) fn set_node(&mut self, node: Option<Node>) {
        self.node = node;
        self.node_changed();
    }

    /// The node's interface addresses changed: NodePorts follow them.
    pub fn set_local_addrs(&mut self, addrs: Vec<IpAddr>) {
        self.local_addrs = addrs;
        self.node_changed();
    }

    fn node_changed(&mut self) {
        let mut w = Warnings::default();
        let addrs = node_addresses(self.node.as_ref(), &self.local_addrs, &mut w);
        if self.node_warnings != w.list {
            log_new(&self.node_warnings, &w.list);
            self.node_warnings = w.list;
        }
        if addrs.as_slice() == self.map.node_addresses() {
            return;
        }
        self.map.set_node_addrs(addrs);
        // Only Services with a nodePort have frontends on node addresses.
        let mut touched: Vec<ObjKey> = self
            .services
            .values()
            .filter(|s| s.ports().any(|p| p.node_port.is_some()))
            .map(store::key)
            .collect();
        touched.sort();
        for k in touched {
            self.rebuild(&k);
        }
        // hostPorts without a hostIP answer on every node address too.
        let pods: Vec<ObjKey> = self
            .pods
            .iter()
            .filter(|(_, p)| p.host_ports.iter().any(|h| h.host_ip.is_none()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in pods {
            self.rebuild_pod(&k);
        }
    }

    /// The key of an object, or `None` (and a warning) when its metadata lacks one.
    fn key_of(&self, ns: Option<&str>, name: Option<&str>, kind: &'static str) -> Option<ObjKey> {
        let mut w = Warnings::default();
        match namespaced(ns, name, kind, &mut w) {
            Some((ns, name)) => Some(obj_key(ns, name)),
            None => {
                log_new(&[], &w.list);
                None
            }
        }
    }

    /// Rebuilds one Service's ports from its object and its slices, and records the pairs
    /// whose backend got worse. Proportional to that Service.
    fn rebuild(&mut self, key: &ObjKey) {
        let name = ServiceName {
            namespace: key.0.clone(),
            name: key.1.clone(),
        };
        let removed = self.map.remove_service(&name);
        let held = self.held(key);
        let old = match (held, self.held_at.remove(key)) {
            (true, seen) => {
                let mut seen = seen.unwrap_or_default();
                merge_ports(&mut seen, &removed);
                self.held_at.insert(key.clone(), seen);
                removed
            }
            (false, Some(mut seen)) => {
                merge_ports(&mut seen, &removed);
                // Judged as the Service's own annotation says, not as while held.
                let ignored = self.services.get(key).is_some_and(annotated_ignore);
                for p in &mut seen {
                    p.ignored = ignored;
                }
                seen
            }
            (false, None) => removed,
        };
        let mut w = Warnings::default();
        let mut slices: Vec<&SliceLite> = self.slices.group(&key.0, &key.1).collect();
        // The store's order is its own: the warnings come in the slices' name order.
        slices.sort_unstable_by(|a, b| a.names().cmp(&b.names()));
        match self.services.get(key) {
            Some(svc) => {
                let addrs = self.map.node_addresses().to_vec();
                let mut ports = service_ports(svc, &key.0, &key.1, &slices, &addrs, &mut w);
                if held {
                    if let Some(seen) = self.held_at.get_mut(key) {
                        merge_ports(seen, &ports);
                    }
                    for p in &mut ports {
                        p.ignored = true;
                    }
                }
                self.record_gained(&name, &old, &ports);
                self.map.insert_service(name.clone(), ports);
            }
            None if self.services_listed => {
                for s in &slices {
                    unknown_service(*s, &mut w);
                }
            }
            None => {}
        }
        let before = self.warnings.get(key).map_or(&[][..], Vec::as_slice);
        if before != w.list.as_slice() {
            log_new(before, &w.list);
            if w.list.is_empty() {
                self.warnings.remove(key);
            } else {
                self.warnings.insert(key.clone(), w.list);
            }
        }
        self.record(&name, old);
    }

    /// Records the frontends of `new` (the Service's ports after its rebuild, not ignored or
    /// held) that have a serving backend of their family and had none in `old`. Proportional
    /// to the Service.
    fn record_gained(&mut self, name: &ServiceName, old: &[PortEntry], new: &[PortEntry]) {
        let Some(gained) = self.gained.as_mut() else {
            return;
        };
        for p in new.iter().filter(|p| !p.ignored) {
            for fe in p.frontends.iter() {
                let v4 = fe.key.ip.is_ipv4();
                if !p.serves(v4) {
                    continue;
                }
                let before = old
                    .iter()
                    .any(|o| o.frontends.iter().any(|f| f.key == fe.key) && o.serves(v4));
                if !before {
                    gained.entry(fe.key).or_insert_with(|| name.clone());
                }
            }
        }
    }

    /// Records the pairs of `old` (the Service's ports before its rebuild) whose backend's
    /// view changed in the map, keeping each pair's first `old` view until it is taken.
    fn record(&mut self, name: &ServiceName, old: Vec<PortEntry>) {
        let me = self.map.service_index(name);
        for port in old {
            for fe in port.frontends.iter() {
                for b in port.backends.iter() {
                    self.record_pair(name, me, port.ignored, fe.key, b);
                }
            }
        }
    }

    /// Records pair (`frontend`, `before`'s address) if the backend's view on the frontend is
    /// not `before`'s conditions any more. `me` is the Service's index in the map now.
    fn record_pair(
        &mut self,
        name: &ServiceName,
        me: Option<u32>,
        ignored: bool,
        frontend: FrontendKey,
        before: Backend,
    ) {
        let b = before;
        if b.ip.is_ipv4() != frontend.ip.is_ipv4() {
            return; // a dual-stack port: no NAT crosses families
        }
        if b.ip == frontend.ip && b.port == frontend.port {
            return; // would match untranslated traffic; see `classify`
        }
        let now = self
            .map
            .frontend(frontend.proto, frontend.ip, frontend.port);
        let new_c = now.and_then(|f| f.backend(b.ip, b.port)).map(|(_, c)| c);
        // Before: this port's view, or a better one of another Service on the same frontend
        // (unchanged by this Service's change).
        let other = now.and_then(|f| {
            f.ports()
                .filter(|p| Some(p.service_index()) != me)
                .filter_map(|p| p.backend(b.ip, b.port))
                .max_by_key(|c| c.state())
        });
        let old_c = match other {
            Some(o) if o.state() > b.conditions.state() => o,
            _ => b.conditions,
        };
        if new_c == Some(old_c) {
            return;
        }
        let pair = Pair {
            frontend,
            backend: SocketAddr::new(b.ip, b.port),
        };
        self.changes
            .entry(pair)
            .and_modify(|c| c.left_from = Some(old_c))
            .or_insert(Change {
                service: name.clone(),
                ignored,
                old: Some(old_c),
                left_from: Some(old_c),
                new: new_c,
            });
    }

    /// Applies the change from slice `old` to `new` of one Service by patching the backends
    /// the two list, when that is exact; `false` (nothing changed) when the Service must be
    /// rebuilt instead (see the module's doc). Proportional to the two slices, plus one copy
    /// of the bytes of each port they touch.
    fn patch_slice(&mut self, old: &SliceLite, new: &SliceLite) -> bool {
        let Some(key) = service_of(new) else {
            return false;
        };
        if service_of(old).as_ref() != Some(&key)
            || !self.services_listed
            || self.held(&key)
            || self.held_at.contains_key(&key)
        {
            return false;
        }
        let Some(svc) = self.services.get(&key) else {
            return false;
        };
        let ignored = annotated_ignore(svc);
        let name = ServiceName {
            namespace: key.0.clone(),
            name: key.1.clone(),
        };
        let ids: Vec<u32> = self.map.service_port_ids(&name).to_vec();
        if ids.is_empty() {
            return false;
        }
        let names = port_names(ids.iter().map(|&id| self.map.port_entry(id)));
        let mut w = Warnings::default();
        let mut was: SliceBackends = HashMap::new();
        add_slice(old, &names, &mut was, &mut w);
        let mut is: SliceBackends = HashMap::new();
        add_slice(new, &names, &mut is, &mut w);
        if !w.list.is_empty() {
            return false; // the Service's warnings may change: rebuilt
        }
        // Per port: the edits, each with the backend as the map held it.
        let mut per_port: Vec<Vec<(Edit, Option<Conditions>)>> = vec![Vec::new(); ids.len()];
        for (&(pi, ip, port), &(c, _)) in &was {
            let now = is.get(&(pi, ip, port)).map(|&(c, _)| c);
            if now == Some(c) {
                continue;
            }
            let held = self.map.port_entry(ids[pi]).backends.find_marked(ip, port);
            match held {
                Some((_, false)) => per_port[pi].push(((ip, port, now), held.map(|h| h.0))),
                _ => return false, // another slice lists it too (or the map disagrees)
            }
        }
        for (&(pi, ip, port), &(c, _)) in &is {
            if was.contains_key(&(pi, ip, port)) {
                continue;
            }
            match self.map.port_entry(ids[pi]).backends.find_marked(ip, port) {
                None => per_port[pi].push(((ip, port, Some(c)), None)),
                Some(_) => return false, // now listed by two slices
            }
        }
        if per_port.iter().all(Vec::is_empty) {
            return true;
        }
        let me = self.map.service_index(&name);
        for (pi, mut edits) in per_port.into_iter().enumerate() {
            if edits.is_empty() {
                continue;
            }
            edits.sort_unstable_by_key(|((ip, port, _), _)| (*ip, *port));
            let id = ids[pi];
            let entry = self.map.port_entry(id);
            let frontends: Vec<FrontendKey> = entry.frontends.iter().map(|f| f.key).collect();
            // The families whose frontends may gain a serving backend: those of the port's
            // frontends (a scan for a family the port has no backend of walks every backend).
            let watch_gain = self.gained.is_some() && !ignored;
            let families: Vec<(bool, bool)> = [true, false]
                .into_iter()
                .filter(|&v4| watch_gain && frontends.iter().any(|f| f.ip.is_ipv4() == v4))
                .map(|v4| (v4, entry.serves(v4)))
                .collect();
            self.map
                .patch_backends(id, &edits.iter().map(|(e, _)| *e).collect::<Vec<_>>());
            let entry = self.map.port_entry(id);
            if let Some(gained) = self.gained.as_mut() {
                for (v4, before) in families {
                    if before || !entry.serves(v4) {
                        continue;
                    }
                    for fe in frontends.iter().filter(|f| f.ip.is_ipv4() == v4) {
                        gained.entry(*fe).or_insert_with(|| name.clone());
                    }
                }
            }
            for ((ip, port, _), before) in edits {
                let Some(conditions) = before else { continue };
                let b = Backend {
                    ip,
                    port,
                    conditions,
                };
                for &fe in &frontends {
                    self.record_pair(&name, me, ignored, fe, b);
                }
            }
        }
        true
    }
}

/// Adds the frontends and backends of `ports` to `acc`, port by port, keeping each backend's
/// best conditions and the `ignored` of the Service's own annotation.
fn merge_ports(acc: &mut Vec<PortEntry>, ports: &[PortEntry]) {
    for p in ports {
        let Some(a) = acc
            .iter_mut()
            .find(|a| (&a.name, a.proto, a.port) == (&p.name, p.proto, p.port))
        else {
            acc.push(p.clone());
            continue;
        };
        let mut fes: Vec<_> = a
            .frontends
            .iter()
            .chain(p.frontends.iter())
            .copied()
            .collect();
        let mut seen = HashSet::with_capacity(fes.len());
        fes.retain(|f| seen.insert(f.key));
        a.frontends = Few::from(fes);
        let mut bes: Vec<_> = a.backends.iter().chain(p.backends.iter()).collect();
        // Best first within each address, then one per address.
        bes.sort_by(|x, y| {
            (x.ip, x.port)
                .cmp(&(y.ip, y.port))
                .then(y.conditions.state().cmp(&x.conditions.state()))
        });
        bes.dedup_by_key(|b| (b.ip, b.port));
        a.backends = Backends::from_sorted(&bes);
    }
}

/// One WARN line for each warning of `now` that was not in `before`: a bad object is named
/// once per change, not on every rebuild.
fn log_new(before: &[Warning], now: &[Warning]) {
    for w in now.iter().filter(|w| !before.contains(w)) {
        tracing::warn!(
            kind = w.object_kind,
            object = %w.object,
            reason = w.kind.as_str(),
            "{}; the rest of the view is used",
            w.message
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ServiceLite as SvcLite;
    use crate::reconcile::{FlushKey, Policy, plan_diff};
    use proptest::prelude::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    /// Service `s{n}`: UDP `dns` and TCP `web`, a NodePort on `web` if `node_port`, the shared
    /// externalIP 198.51.100.1 if `shared`, opted out if `ignored`.
    fn service(n: u8, node_port: bool, shared: bool, ignored: bool) -> SvcLite {
        let mut web = json!({"name": "web", "port": 80, "protocol": "TCP"});
        if node_port {
            web["nodePort"] = json!(30080 + u16::from(n));
        }
        let annotations = if ignored {
            json!({"ctreap.io/ignore": "true"})
        } else {
            json!({})
        };
        let external: Vec<&str> = if shared { vec!["198.51.100.1"] } else { vec![] };
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": format!("s{n}"), "annotations": annotations},
            "spec": {"clusterIPs": [format!("10.96.0.{}", 10 + n)], "externalIPs": external,
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, web]}
        }))
        .expect("Service JSON");
        SvcLite::from(svc)
    }

    /// A re-list of the Services (issue 20): a slice of a Service created while the watch was
    /// down arrives before the Services' list delivers it. No "unknown Service" warning while
    /// the Services list, and the Service is built once it arrives. Control: the same slice
    /// outside a Services list warns, and still does after the list if its Service is absent.
    #[test]
    fn a_slice_listed_before_its_service_during_a_relist_warns_nothing() {
        let unknown = |st: &ClusterState| {
            st.warnings()
                .iter()
                .filter(|w| w.kind == crate::cluster::WarningKind::UnknownService)
                .count()
        };
        let mut st = ClusterState::new(Vec::new());
        st.replace_services(vec![service(1, false, false, false)]);
        st.replace_slices(vec![slice(1, 1, &[(1, 0)])]);
        // Control: outside a Services list, a slice of an absent Service warns.
        st.apply_slice(slice(9, 9, &[(9, 0)]));
        assert_eq!(unknown(&st), 1);
        st.delete_slice(Some("ns"), Some("e9"));
        assert_eq!(unknown(&st), 0);

        st.services_listing();
        st.replace_slices(vec![slice(1, 1, &[(1, 0)]), slice(2, 2, &[(2, 0)])]);
        assert_eq!(unknown(&st), 0, "{:?}", st.warnings());
        st.replace_services(vec![
            service(1, false, false, false),
            service(2, false, false, false),
        ]);
        assert_eq!(unknown(&st), 0, "{:?}", st.warnings());
        assert!(
            st.map()
                .frontend(Proto::Udp, ip("10.96.0.12"), 53)
                .is_some_and(|f| f.backend(ip("10.244.0.2"), 5353).is_some())
        );

        // A slice whose Service the list did not deliver warns once the list is done.
        st.services_listing();
        st.replace_slices(vec![slice(1, 1, &[(1, 0)]), slice(3, 3, &[(3, 0)])]);
        assert_eq!(unknown(&st), 0);
        st.replace_services(vec![service(1, false, false, false)]);
        assert_eq!(unknown(&st), 1, "{:?}", st.warnings());
    }

    /// An update patches its slice's backends in place, and rebuilds the Service where a
    /// patch could not be exact: a backend listed by two slices, added to a second slice or
    /// removed from one of two. After every step the map equals a full build.
    #[test]
    fn a_slice_update_patches_its_backends_and_rebuilds_only_where_it_must() {
        let svc = service(0, false, false, false);
        let mut st = ClusterState::new(Vec::new());
        st.replace_services(vec![svc.clone()]);
        st.replace_slices(vec![slice(0, 0, &[(1, 0), (2, 0)]), slice(1, 0, &[(3, 0)])]);
        st.take_changes();
        let mut slices = BTreeMap::from([
            (0, slice(0, 0, &[(1, 0), (2, 0)])),
            (1, slice(1, 0, &[(3, 0)])),
        ]);
        let mut step = |st: &mut ClusterState, n: u8, eps: &[(u8, u8)], patched: bool| {
            let before = st.patched_updates();
            slices.insert(n, slice(n, 0, eps));
            st.apply_slice(slice(n, 0, eps));
            assert_eq!(st.patched_updates() > before, patched, "e{n} {eps:?}");
            let all: Vec<&SliceLite> = slices.values().collect();
            let (want, _) = ServiceMap::build(&[&svc], &all, None, &[]);
            assert_eq!(describe(st.map()), describe(&want), "e{n} {eps:?}");
            let mut out: Vec<String> = st
                .take_changes()
                .iter()
                .map(|(p, c)| {
                    format!(
                        "{}->{} {:?}",
                        p.frontend,
                        p.backend.ip(),
                        c.new.map(|c| c.state())
                    )
                })
                .collect();
            out.sort();
            out
        };
        // 2 leaves e0: patched, both frontends' pairs recorded.
        assert_eq!(
            step(&mut st, 0, &[(1, 0)], true),
            [
                "10.96.0.10:53/UDP->10.244.0.2 None",
                "10.96.0.10:80/TCP->10.244.0.2 None"
            ]
        );
        // 1 also listed by e1, draining: two slices list it, rebuilt; its best view is e0's.
        assert!(step(&mut st, 1, &[(3, 0), (1, 1)], false).is_empty());
        // 1 leaves e0: one of two, rebuilt; now e1's draining view.
        assert_eq!(
            step(&mut st, 0, &[], false),
            [
                "10.96.0.10:53/UDP->10.244.0.1 Some(Draining)",
                "10.96.0.10:80/TCP->10.244.0.1 Some(Draining)"
            ]
        );
        // 1 serving again in e1, its one slice: patched; better is a change too.
        assert_eq!(step(&mut st, 1, &[(3, 0), (1, 0)], true).len(), 2);
        // 4 added, 3 not serving: patched.
        assert_eq!(step(&mut st, 1, &[(3, 2), (1, 0), (4, 0)], true).len(), 2);
    }

    /// Changes coalesce until taken: a backend reported terminating and then removed before
    /// the agent took the first change left from terminating, and settles with `--grace`;
    /// one removed while serving vanished (`--move-grace`).
    #[test]
    fn terminating_then_removed_between_two_takes_is_not_a_vanished_backend() {
        use crate::reconcile::{Settle, settle};
        let mut st = ClusterState::new(Vec::new());
        st.replace_services(vec![service(0, false, false, false)]);
        st.replace_slices(vec![slice(0, 0, &[(1, 0), (2, 0)])]);
        st.take_changes();
        st.apply_slice(slice(0, 0, &[(1, 1), (2, 0)]));
        st.apply_slice(slice(0, 0, &[(2, 0)]));
        let mut windows: Vec<(String, Settle)> = st
            .take_changes()
            .iter()
            .map(|(p, c)| (p.frontend.to_string(), settle(c)))
            .collect();
        windows.sort_by_key(|w| w.0.clone());
        assert_eq!(
            windows,
            [
                ("10.96.0.10:53/UDP".to_owned(), Settle::Grace),
                ("10.96.0.10:80/TCP".to_owned(), Settle::Grace)
            ]
        );
        // Control: removed while serving.
        st.apply_slice(slice(0, 0, &[]));
        assert!(
            st.take_changes()
                .values()
                .all(|c| settle(c) == Settle::Vanished)
        );
    }

    /// Slice `e{n}` labelled for `s{svc}` with endpoints 10.244.0.{i} for each `(i, c)`,
    /// `c` = 0 ready, 1 draining, 2 not serving.
    fn slice(n: u8, svc: u8, eps: &[(u8, u8)]) -> SliceLite {
        let eps: Vec<_> = eps
            .iter()
            .map(|&(i, c)| {
                let cond = match c {
                    0 => json!({"ready": true}),
                    1 => json!({"ready": false, "serving": true, "terminating": true}),
                    _ => json!({"ready": false, "serving": false}),
                };
                json!({"addresses": [format!("10.244.0.{i}")], "conditions": cond})
            })
            .collect();
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": format!("e{n}"),
                         "labels": {"kubernetes.io/service-name": format!("s{svc}")}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"},
                      {"name": "web", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps
        }))
        .expect("slice JSON");
        SliceLite::from(s)
    }

    /// A map's content in a canonical form: port ids and slot order left out.
    fn describe(m: &ServiceMap) -> Vec<String> {
        let mut out: Vec<String> = m
            .frontends()
            .map(|f| {
                let mut ports: Vec<String> = f
                    .ports()
                    .map(|p| {
                        format!(
                            "{p} ignored={} np={:?} fes={:?} bes={:?}",
                            p.ignored(),
                            p.node_port(),
                            p.frontends(),
                            p.backends()
                        )
                    })
                    .collect();
                ports.sort();
                format!("{} -> {ports:?}", f.key())
            })
            .collect();
        out.sort();
        out.push(format!("node {:?}", m.node_addresses()));
        out.push(format!("{:?}", m.stats()));
        out
    }

    #[derive(Clone, Debug)]
    enum Op {
        Service(u8, bool, bool, bool),
        DeleteService(u8),
        Slice(u8, u8, Vec<(u8, u8)>),
        DeleteSlice(u8),
        LocalAddrs(bool, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0..3u8,
                any::<bool>(),
                any::<bool>(),
                prop::bool::weighted(0.2)
            )
                .prop_map(|(n, np, sh, ig)| Op::Service(n, np, sh, ig)),
            (0..3u8).prop_map(Op::DeleteService),
            (
                0..4u8,
                0..4u8,
                prop::collection::vec((1..6u8, 0..3u8), 0..5)
            )
                .prop_map(|(n, s, e)| Op::Slice(n, s, e)),
            (0..4u8).prop_map(Op::DeleteSlice),
            (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Op::LocalAddrs(a, b)),
        ]
    }

    /// The objects an op sequence leaves, for a full build to compare with.
    #[derive(Default)]
    struct World {
        services: BTreeMap<u8, SvcLite>,
        slices: BTreeMap<u8, SliceLite>,
        local: Vec<IpAddr>,
    }

    impl World {
        fn apply(&mut self, st: &mut ClusterState, op: &Op) {
            match op.clone() {
                Op::Service(n, np, sh, ig) => {
                    let s = service(n, np, sh, ig);
                    self.services.insert(n, s.clone());
                    st.apply_service(s);
                }
                Op::DeleteService(n) => {
                    if let Some(s) = self.services.remove(&n) {
                        st.delete_service(s.namespace(), s.name());
                    }
                }
                Op::Slice(n, svc, eps) => {
                    let s = slice(n, svc, &eps);
                    self.slices.insert(n, s.clone());
                    st.apply_slice(s);
                }
                Op::DeleteSlice(n) => {
                    if let Some(s) = self.slices.remove(&n) {
                        st.delete_slice(s.namespace(), s.name());
                    }
                }
                Op::LocalAddrs(a, b) => {
                    let mut addrs = Vec::new();
                    if a {
                        addrs.push(ip("192.168.1.10"));
                    }
                    if b {
                        addrs.push(ip("192.168.1.11"));
                    }
                    self.local = addrs.clone();
                    st.set_local_addrs(addrs);
                }
            }
        }

        fn build(&self) -> (ServiceMap, Vec<Warning>) {
            let services: Vec<&SvcLite> = self.services.values().collect();
            let slices: Vec<&SliceLite> = self.slices.values().collect();
            ServiceMap::build(&services, &slices, None, &self.local)
        }
    }

    fn sorted_keys(keys: impl IntoIterator<Item = FlushKey>) -> Vec<FlushKey> {
        let mut v: Vec<FlushKey> = keys.into_iter().collect();
        v.sort();
        v.dedup();
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// After every op the live map equals a full build of the same objects, with the same
        /// warnings; and the changes it recorded are exactly what `plan_diff` finds between
        /// the full builds before and after the op (under any policy).
        #[test]
        fn incremental_equals_full_build(ops in prop::collection::vec(op(), 1..40)) {
            let mut st = ClusterState::new(Vec::new());
            st.replace_services(Vec::new());
            st.replace_slices(Vec::new());
            let mut world = World::default();
            let strict = Policy { not_serving: crate::reconcile::ProtoSet::ALL, ..Policy::default() };
            for op in &ops {
                let (before, _) = world.build();
                world.apply(&mut st, op);
                let (after, warnings) = world.build();
                prop_assert_eq!(describe(st.map()), describe(&after), "after {:?}", op);
                let mut got = st.warnings();
                let mut want = warnings;
                got.sort_by_key(|w| w.to_string());
                want.sort_by_key(|w| w.to_string());
                prop_assert_eq!(got, want, "warnings after {:?}", op);
                let changes = st.take_changes();
                for policy in [Policy::default(), strict] {
                    let planned = sorted_keys(changes.iter().filter(|(p, c)| {
                        policy.deletes_backend(c.new, p.frontend.proto)
                            && !policy.deletes_backend(c.old, p.frontend.proto)
                    }).map(|(p, _)| FlushKey::pair(p.frontend, p.backend)));
                    let diff = sorted_keys(plan_diff(&before, &after, &policy));
                    prop_assert_eq!(planned, diff, "changes after {:?}", op);
                }
            }
        }
    }

    #[test]
    fn a_node_address_added_later_carries_nodeports_and_its_removal_is_recorded() {
        let mut st = ClusterState::new(vec![ip("192.168.1.10")]);
        st.replace_services(vec![service(0, true, false, false)]);
        st.replace_slices(vec![slice(0, 0, &[(1, 0)])]);
        st.take_changes();
        assert!(
            st.map()
                .frontend(Proto::Tcp, ip("192.168.1.11"), 30080)
                .is_none()
        );
        st.set_local_addrs(vec![ip("192.168.1.10"), ip("192.168.1.11")]);
        let fe = st
            .map()
            .frontend(Proto::Tcp, ip("192.168.1.11"), 30080)
            .expect("the new address carries the NodePort");
        assert!(fe.backend(ip("10.244.0.1"), 8080).is_some());
        st.set_local_addrs(vec![ip("192.168.1.10")]);
        let changes = st.take_changes();
        let pairs: Vec<String> = changes
            .keys()
            .map(|p| format!("{}->{}", p.frontend, p.backend))
            .collect();
        assert_eq!(pairs, ["192.168.1.11:30080/TCP->10.244.0.1:8080"]);
    }

    fn bad_slice_of(svc: u8) -> BadObject {
        BadObject {
            kind: "EndpointSlice",
            object: "ns/junk".into(),
            why: "cannot be decoded".into(),
            holds: Some(("ns".into(), format!("s{svc}"))),
        }
    }

    /// The backends of `svc`'s UDP frontend and whether deletions are held there.
    fn udp_backends(st: &ClusterState, n: u8) -> (Vec<String>, bool) {
        let fe = st
            .map()
            .frontend(Proto::Udp, ip(&format!("10.96.0.{}", 10 + n)), 53)
            .expect("frontend");
        let port = fe.ports().next().expect("a port");
        let bes = port.backends().iter().map(|b| b.ip.to_string()).collect();
        (bes, port.ignored())
    }

    #[test]
    fn a_service_with_an_undecodable_slice_is_held_and_judged_when_it_lifts() {
        let mut st = ClusterState::new(Vec::new());
        st.replace_services(vec![service(0, false, false, false)]);
        st.replace_slices(vec![slice(0, 0, &[(1, 0), (2, 0), (3, 0)])]);
        st.take_changes();
        st.set_undecodable(bad_slice_of(0));
        assert!(udp_backends(&st, 0).1, "held");
        // While held: 2 leaves, 4 comes and leaves again. Nothing is flushable.
        st.apply_slice(slice(0, 0, &[(1, 0), (3, 0)]));
        st.apply_slice(slice(0, 0, &[(1, 0), (3, 0), (4, 0)]));
        st.apply_slice(slice(0, 0, &[(1, 0), (3, 0)]));
        assert!(st.take_changes().values().all(|c| c.ignored));
        // The hold lifts: both departures are recorded, flushable.
        st.clear_undecodable("EndpointSlice", "ns/junk");
        assert_eq!(
            udp_backends(&st, 0),
            (vec!["10.244.0.1".into(), "10.244.0.3".into()], false)
        );
        let mut gone: Vec<String> = st
            .take_changes()
            .into_iter()
            .filter(|(p, c)| p.frontend.proto == Proto::Udp && !c.ignored && c.new.is_none())
            .map(|(p, _)| p.backend.ip().to_string())
            .collect();
        gone.sort();
        assert_eq!(gone, ["10.244.0.2", "10.244.0.4"]);
        // A Service annotated ignore stays so after a hold.
        st.apply_service(service(0, false, false, true));
        st.set_undecodable(bad_slice_of(0));
        st.apply_slice(slice(0, 0, &[(1, 0)]));
        st.take_changes();
        st.clear_undecodable("EndpointSlice", "ns/junk");
        assert!(st.take_changes().values().all(|c| c.ignored));
        assert!(udp_backends(&st, 0).1, "ignored after the hold");
    }

    #[test]
    fn an_endpoint_that_moves_between_slices_is_recorded_only_while_it_is_missing() {
        let mut st = ClusterState::new(Vec::new());
        st.replace_services(vec![service(0, false, false, false)]);
        st.replace_slices(vec![slice(0, 0, &[(1, 0), (2, 0)]), slice(1, 0, &[(3, 0)])]);
        st.take_changes();
        // Removed from e0 first, added to e1 later: in between it is gone.
        st.apply_slice(slice(0, 0, &[(1, 0)]));
        st.apply_slice(slice(1, 0, &[(3, 0), (2, 0)]));
        assert!(
            st.take_changes().is_empty(),
            "taken after both writes, the move is no change"
        );
    }

    #[test]
    fn slices_listed_before_their_services_warn_only_if_the_service_stays_missing() {
        let mut st = ClusterState::new(Vec::new());
        st.replace_slices(vec![slice(0, 0, &[(1, 0)]), slice(1, 7, &[(2, 0)])]);
        assert!(st.warnings().is_empty(), "Services not listed yet");
        st.replace_services(vec![service(0, false, false, false)]);
        let w: Vec<String> = st.warnings().iter().map(|w| w.to_string()).collect();
        assert_eq!(
            w,
            ["EndpointSlice ns/e1: labelled for Service ns/s7, which does not exist; ignored"]
        );
    }
}
