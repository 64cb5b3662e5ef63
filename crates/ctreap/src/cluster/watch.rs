//! List/watch Services, EndpointSlices and this node's Node into the live model
//! ([`ClusterState`]: compact objects and the [`ServiceMap`], updated one Service per event),
//! and copy [`ServiceMap`] snapshots from it on demand for the CLI
//! (`kubectl get svc,endpointslices -A --watch`, `kubectl get node NODE --watch`).
//!
//! Safety rules this module enforces or exposes:
//! - no snapshot until every watch has delivered its initial list (a half-listed cluster
//!   would make every endpoint not yet listed look gone);
//! - while a watch re-lists (after a 410 Gone or a failed watch restart) the model keeps the
//!   previous complete list, and [`WatchStatus::current`] is false: the agent must not delete
//!   then, since backends added meanwhile are not in the map yet. The list, once complete, is
//!   applied as a diff, so what changed meanwhile is recorded like any other change.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::build::{SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, Warning};
use super::decode::{Decoded, Undecodable};
use super::lite::{ServiceLite, SliceLite};
use super::model::{IGNORE_ANNOTATION, ServiceMap};
use super::pods::PodLite;
use super::state::{BadObject, ClusterState};
use super::view::{ServiceView, SliceView};

/// Errors of client setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The message is the innermost cause only: kube's errors repeat their source in their
    /// own text, which printed the same cause two or three times.
    #[error("kubeconfig {path}: {reason} (check --kubeconfig, or $KUBECONFIG as kubectl reads it)")]
    Kubeconfig { path: String, reason: String },
    #[error(
        "no Kubernetes configuration: {reason} (pass --kubeconfig PATH, set $KUBECONFIG, or run in a pod with a service account)"
    )]
    Infer { reason: String },
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("no node name: not given, NODE_NAME unset, and the hostname is unreadable: {0}")]
    NodeName(#[source] std::io::Error),
}

/// A Kubernetes client the way `kubectl` finds one: `kubeconfig` if given (with `context`, or
/// its current context); otherwise `context` from the default kubeconfig (`$KUBECONFIG`,
/// `~/.kube/config`); otherwise the default kubeconfig or, failing that, the in-cluster
/// service account (`kube::Config::infer`).
pub async fn kube_client(
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
) -> Result<kube::Client, Error> {
    kube::Client::try_from(kube_config(kubeconfig, context).await?).map_err(Error::Client)
}

/// The configuration [`kube_client`] builds its client from (the server's URL among it).
pub async fn kube_config(
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
) -> Result<kube::Config, Error> {
    let options = KubeConfigOptions {
        context,
        cluster: None,
        user: None,
    };
    let config = match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let kc = Kubeconfig::read_from(&path).map_err(|e| Error::Kubeconfig {
                path: shown.clone(),
                reason: innermost(&e),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: shown,
                    reason: innermost(&e),
                })?
        }
        None if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) => {
            let kc = kubeconfig_from_env()?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: "$KUBECONFIG".into(),
                    reason: innermost(&e),
                })?
        }
        None if options.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Kubeconfig {
                path: "$KUBECONFIG or ~/.kube/config".into(),
                reason: innermost(&e),
            })?,
        None => kube::Config::infer().await.map_err(|e| Error::Infer {
            reason: innermost(&e),
        })?,
    };
    Ok(config)
}

/// `$KUBECONFIG` as kubectl reads it: a list of files (`:`-separated), merged, the first to
/// set a value winning; empty entries and files that do not exist are skipped.
fn kubeconfig_from_env() -> Result<Kubeconfig, Error> {
    let value = std::env::var_os("KUBECONFIG").unwrap_or_default();
    let listed: Vec<PathBuf> = std::env::split_paths(&value)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let existing: Vec<&PathBuf> = listed.iter().filter(|p| p.exists()).collect();
    if existing.is_empty() {
        return Err(Error::Infer {
            reason: format!(
                "none of the files in $KUBECONFIG exists ({})",
                value.to_string_lossy()
            ),
        });
    }
    let mut merged = Kubeconfig::default();
    for p in existing {
        let kc = Kubeconfig::read_from(p).map_err(|e| Error::Kubeconfig {
            path: p.display().to_string(),
            reason: innermost(&e),
        })?;
        merged = merged.merge(kc).map_err(|e| Error::Kubeconfig {
            path: p.display().to_string(),
            reason: innermost(&e),
        })?;
    }
    Ok(merged)
}

/// The message of the innermost error in `e`'s source chain: the cause, said once. An HTTP
/// error status from the server is said as [`answered`] says it.
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    loop {
        if let Some(status) = api_status(cur) {
            return format!("the server answered {}", answered(status));
        }
        match cur.source() {
            Some(next) => cur = next,
            None => return cur.to_string(),
        }
    }
}

/// The HTTP status code somewhere in `e`'s chain of causes, if the server answered one.
fn status_code(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(s) = api_status(cur) {
            return Some(s.code);
        }
        cur = cur.source()?;
    }
}

/// The HTTP error status in `e`, if it is one (kube's `Error::Api`, or the `Status` it holds).
pub(crate) fn api_status<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Status> {
    if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
        return Some(status);
    }
    e.downcast_ref::<Status>()
        .or_else(|| e.downcast_ref::<Box<Status>>().map(|b| &**b))
}

/// What kube calls a reply whose body is not a Kubernetes `Status` (an HTML page, plain text).
const NOT_A_STATUS: &str = "Failed to parse error data";

/// One line for an HTTP error status, as kubectl would say it, with what it usually means:
/// `404 Not Found: ...`. The body is quoted only when it is a Kubernetes `Status` (its
/// message); a web server's HTML page is never printed.
pub(crate) fn answered(s: &Status) -> String {
    let reason = axum::http::StatusCode::from_u16(s.code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    let mut line = format!("{} {reason}", s.code).trim_end().to_string();
    let message = s.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.reason != NOT_A_STATUS && !message.is_empty() {
        line.push_str(&format!(" ({message})"));
    }
    let meaning = match s.code {
        404 if s.reason == NOT_A_STATUS => {
            "not a Kubernetes API server: check the kubeconfig's server URL (a proxy's path prefix missing?)"
        }
        404 => {
            "the API server lacks this resource or the URL has a wrong path prefix: check the kubeconfig's server URL"
        }
        401 => "the kubeconfig's credentials were refused (an expired token or certificate?)",
        403 => {
            "the credentials are not allowed this request (RBAC: deploy/kubernetes/20-clusterrole.yaml)"
        }
        429 | 500..=599 => "the API server is overloaded or not ready yet",
        _ => "",
    };
    if !meaning.is_empty() {
        line.push_str(": ");
        line.push_str(meaning);
    }
    line
}

/// This node's name, as kubelet registers it: `flag` if given, else `$NODE_NAME` (the
/// DaemonSet sets it from `spec.nodeName`), else the hostname, trimmed and lower-cased.
pub fn node_name(flag: Option<String>) -> Result<String, Error> {
    node_name_from(flag, std::env::var("NODE_NAME").ok(), read_hostname)
}

fn read_hostname() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
}

fn node_name_from(
    flag: Option<String>,
    env: Option<String>,
    hostname: impl FnOnce() -> std::io::Result<String>,
) -> Result<String, Error> {
    let given = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if let Some(name) = given(flag).or_else(|| given(env)) {
        return Ok(name);
    }
    let host = hostname().map_err(Error::NodeName)?;
    let host = host.trim().to_lowercase();
    if host.is_empty() {
        return Err(Error::NodeName(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "empty hostname",
        )));
    }
    Ok(host)
}

/// The resources a [`ClusterWatch`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Watched {
    Services,
    EndpointSlices,
    Node,
    /// This node's Pods, for their hostPorts (`cluster/pods.rs`).
    Pods,
}

impl Watched {
    pub const ALL: [Watched; 4] = [
        Watched::Services,
        Watched::EndpointSlices,
        Watched::Node,
        Watched::Pods,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Watched::Services => "services",
            Watched::EndpointSlices => "endpointslices",
            Watched::Node => "node",
            Watched::Pods => "pods",
        }
    }
}

/// The state of one watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchState {
    /// The initial list has been delivered (stays true through later re-lists).
    pub synced: bool,
    /// A list is in progress (initial, or a re-list after 410 Gone / a failed watch); the
    /// model holds the previous complete list until it ends.
    pub relisting: bool,
    /// Completed lists after the first one.
    pub relists: u64,
    /// Watch errors seen (each is retried with backoff).
    pub errors: u64,
    /// The latest error, cleared by the next successful event.
    pub last_error: Option<String>,
    /// Objects in the model.
    pub objects: usize,
}

/// The state of every watch of a [`ClusterWatch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchStatus {
    pub watches: BTreeMap<Watched, WatchState>,
}

impl WatchStatus {
    /// Every watch has delivered its initial list.
    pub fn synced(&self) -> bool {
        Watched::ALL
            .iter()
            .all(|w| self.watches.get(w).is_some_and(|s| s.synced))
    }

    /// Some watch is listing again; the map may miss what changed meanwhile.
    pub fn relisting(&self) -> bool {
        self.watches.values().any(|s| s.relisting)
    }

    /// Synced and nobody re-listing: the only state in which deleting is allowed.
    pub fn current(&self) -> bool {
        self.synced() && !self.relisting()
    }

    pub fn get(&self, w: Watched) -> WatchState {
        self.watches.get(&w).cloned().unwrap_or_default()
    }
}

/// A copy of the live map, with its current warnings and the watch state when it was taken.
#[derive(Debug)]
pub struct Snapshot {
    pub map: ServiceMap,
    pub warnings: Vec<Warning>,
    /// The change counter ([`ClusterWatch::changes`]) the snapshot is at least as new as.
    pub generation: u64,
    pub status: WatchStatus,
}

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct WatchConfig {
    /// This node's name; `None` watches no Node (NodePorts then only on `node_local_addrs`)
    /// and no Pods.
    pub node_name: Option<String>,
    /// Watch this node's Pods for their hostPorts (needs `node_name`).
    pub hostports: bool,
    /// The node's interface addresses ([`local_addresses`](super::local_addresses)).
    pub node_local_addrs: Vec<IpAddr>,
}

impl WatchConfig {
    /// Whether this configuration runs the watch `w`.
    fn watches(&self, w: Watched) -> bool {
        match w {
            Watched::Services | Watched::EndpointSlices => true,
            Watched::Node => self.node_name.is_some(),
            Watched::Pods => self.node_name.is_some() && self.hostports,
        }
    }
}

struct Shared {
    status: Mutex<WatchStatus>,
    changes: watch::Sender<u64>,
    /// Bumped (under the state's write lock) when the watches restart: a task of an older
    /// epoch writes nothing more.
    epoch: AtomicU64,
}

impl Shared {
    fn status(&self) -> MutexGuard<'_, WatchStatus> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    fn on_event<K>(&self, which: Watched, ev: &Event<K>, objects: usize) {
        let changed = {
            let mut status = self.status();
            let st = status.watches.entry(which).or_default();
            match ev {
                Event::Init => {
                    st.relisting = true;
                    true
                }
                Event::InitApply(_) => false,
                Event::InitDone => {
                    if st.synced {
                        st.relists += 1;
                    }
                    st.synced = true;
                    st.relisting = false;
                    st.last_error = None;
                    st.objects = objects;
                    tracing::debug!(
                        watch = which.as_str(),
                        objects,
                        relists = st.relists,
                        "listed"
                    );
                    true
                }
                Event::Apply(_) | Event::Delete(_) => {
                    st.last_error = None;
                    st.objects = objects;
                    true
                }
            }
        };
        if changed {
            self.bump();
        }
    }

    /// The Pod watch is refused by RBAC (403): hostPorts are not judged, and the rest of the
    /// view does not wait for it (every other watch is trusted as before). One WARN line.
    fn pods_forbidden(&self, err: &watcher::Error) {
        {
            let mut status = self.status();
            let st = status.watches.entry(Watched::Pods).or_default();
            st.synced = true;
            st.relisting = false;
            st.objects = 0;
            st.last_error = Some(format!(
                "forbidden, hostPorts not judged: {}",
                innermost(err)
            ));
        }
        tracing::warn!(
            watch = Watched::Pods.as_str(),
            error = %innermost(err),
            "cannot watch this node's Pods (403 Forbidden): hostPort flows are not judged; Services are. Grant get, list and watch on pods (the chart and the manifests do), or set --hostports=false"
        );
        self.bump();
    }

    fn on_error(&self, which: Watched, err: &watcher::Error) {
        {
            let mut status = self.status();
            let st = status.watches.entry(which).or_default();
            st.errors += 1;
            st.last_error = Some(err.to_string());
            // 410 Gone: the watcher's next step is a full re-list; say so now rather than
            // when the Init event arrives.
            if let watcher::Error::WatchError(s) = err
                && s.code == 410
            {
                st.relisting = true;
            }
        }
        tracing::warn!(watch = which.as_str(), error = %err, "watch error; retrying with backoff");
        self.bump();
    }
}

/// The shared live model.
pub(crate) type SharedState = Arc<RwLock<ClusterState>>;

/// Reads the live model; a poisoned lock (a panic mid-update elsewhere) still holds a
/// consistent map, since every update replaces whole Services.
pub(crate) fn read_state(state: &SharedState) -> RwLockReadGuard<'_, ClusterState> {
    state.read().unwrap_or_else(|e| e.into_inner())
}

fn write_state(state: &SharedState) -> RwLockWriteGuard<'_, ClusterState> {
    state.write().unwrap_or_else(|e| e.into_inner())
}

/// Services, EndpointSlices and this node's Node, watched into one live [`ClusterState`];
/// [`ServiceMap`] snapshots on demand.
///
/// Dropping it stops the watches.
pub struct ClusterWatch {
    shared: Arc<Shared>,
    /// Stops the address follower, if one runs.
    stop_addrs: Arc<std::sync::atomic::AtomicBool>,
    state: SharedState,
    client: kube::Client,
    config: WatchConfig,
    cache: Mutex<Option<Arc<Snapshot>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterWatch {
    /// Starts the watches on the current tokio runtime; returns at once.
    pub fn start(client: kube::Client, config: WatchConfig) -> ClusterWatch {
        let (changes, _) = watch::channel(0u64);
        let mut status = WatchStatus::default();
        for w in Watched::ALL {
            status.watches.insert(w, WatchState::default());
        }
        for w in [Watched::Node, Watched::Pods] {
            if !config.watches(w) {
                // Nothing to wait for.
                status.watches.insert(
                    w,
                    WatchState {
                        synced: true,
                        ..WatchState::default()
                    },
                );
            }
        }
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            changes,
            epoch: AtomicU64::new(0),
        });
        let state = Arc::new(RwLock::new(ClusterState::new(
            config.node_local_addrs.clone(),
        )));
        let mut w = ClusterWatch {
            shared,
            stop_addrs: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            state,
            client,
            config,
            cache: Mutex::new(None),
            tasks: Vec::new(),
        };
        w.spawn(0);
        w
    }

    fn spawn(&mut self, epoch: u64) {
        let client = &self.client;
        let task = |which| Task {
            shared: self.shared.clone(),
            state: self.state.clone(),
            which,
            epoch,
        };
        self.tasks.push(tokio::spawn(run::<Service>(
            Api::all(client.clone()),
            watcher::Config::default(),
            task(Watched::Services),
        )));
        self.tasks.push(tokio::spawn(run::<EndpointSlice>(
            Api::all(client.clone()),
            watcher::Config::default(),
            task(Watched::EndpointSlices),
        )));
        if let Some(name) = &self.config.node_name {
            self.tasks.push(tokio::spawn(run::<Node>(
                Api::all(client.clone()),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                task(Watched::Node),
            )));
            if self.config.hostports {
                self.tasks.push(tokio::spawn(run::<Pod>(
                    Api::all(client.clone()),
                    watcher::Config::default().fields(&format!("spec.nodeName={name}")),
                    task(Watched::Pods),
                )));
            }
        }
    }

    /// Restarts every watch with a fresh list, keeping the model: until the new lists are
    /// complete the status says re-listing, and each list, once complete, is applied as a
    /// diff against the model (what changed while the watches were broken is recorded like
    /// any other change).
    pub fn restart(&mut self) {
        {
            let state = self.state.clone();
            let _model = write_state(&state);
            let epoch = self.shared.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            let mut status = self.shared.status();
            for (w, st) in status.watches.iter_mut() {
                if !self.config.watches(*w) {
                    continue;
                }
                st.relisting = true;
                st.errors = 0;
                st.last_error = None;
            }
            drop(status);
            for t in self.tasks.drain(..) {
                t.abort();
            }
            self.spawn(epoch);
        }
        self.shared.bump();
    }

    pub fn status(&self) -> WatchStatus {
        self.shared.status().clone()
    }

    /// Keeps the model's node interface addresses current: follows address changes in
    /// `netns` (or the current namespace) until the watch is dropped. Reads them once now, so
    /// nothing that changed since [`WatchConfig::node_local_addrs`] was read is missed.
    pub fn follow_local_addresses(&self, netns: Option<ctnetlink::Netns>) -> std::io::Result<()> {
        let state = self.state.clone();
        let shared = self.shared.clone();
        let apply = move |addrs: Vec<IpAddr>| {
            let mut model = write_state(&state);
            let before = model.map().node_addresses().to_vec();
            model.set_local_addrs(addrs);
            let after = model.map().node_addresses().to_vec();
            drop(model);
            if before != after {
                tracing::info!(?before, ?after, "node addresses changed; NodePorts follow");
                shared.bump();
            }
        };
        let apply_now = apply.clone();
        super::ifaddrs::follow_addresses(netns.clone(), self.stop_addrs.clone(), apply)?;
        apply_now(super::ifaddrs::addresses_in(netns.as_ref())?);
        Ok(())
    }

    /// The live model, shared with the watches (which write it under the lock).
    pub(crate) fn state(&self) -> &SharedState {
        &self.state
    }

    /// Every watch has delivered its initial list.
    pub fn is_synced(&self) -> bool {
        self.shared.status().synced()
    }

    /// Waits until every watch has delivered its initial list (forever if the API server is
    /// unreachable: wrap in a timeout).
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.changes.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|_| self.is_synced()).await;
    }

    /// A counter that moves on every change of the model or of the watch status:
    /// `changed().await` on it, then read the model again.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// A copy of the map as of now, `None` until every watch has delivered its initial list.
    ///
    /// Copied only when something changed since the last call, otherwise the same `Arc`. A
    /// copy is proportional to the cluster: for the CLI and the lab; the agent reads the live
    /// model instead.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let generation = *self.shared.changes.borrow();
        if let Some(snap) = cache.as_ref()
            && snap.generation == generation
        {
            return Some(snap.clone());
        }
        let model = read_state(&self.state);
        let status = self.status();
        if !status.synced() {
            return None;
        }
        let snap = Arc::new(Snapshot {
            map: model.map().clone(),
            warnings: model.warnings(),
            generation,
            status,
        });
        *cache = Some(snap.clone());
        Some(snap)
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.stop_addrs
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the model keeps of an object: only what [`ServiceMap::build`] reads. The agent holds
/// every Service and EndpointSlice of the cluster for its whole life, so every field kept is
/// paid for per object (10,000 Services with 100,000 endpoints took 108 MiB before this).
pub(crate) trait Keep {
    /// The form the model holds.
    type Kept;
    fn keep(self) -> Self::Kept;
}

/// Metadata (of the Node): name, namespace and resourceVersion, the labels the map reads
/// (`kubernetes.io/service-name`, `service.kubernetes.io/service-proxy-name`) and the one
/// annotation it reads ([`IGNORE_ANNOTATION`]). Managed fields and
/// `kubectl.kubernetes.io/last-applied-configuration` alone can be kilobytes per object.
fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| k == IGNORE_ANNOTATION);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
    if let Some(l) = meta.labels.as_mut() {
        l.retain(|k, _| k == SERVICE_NAME_LABEL || k == SERVICE_PROXY_NAME_LABEL);
        if l.is_empty() {
            meta.labels = None;
        }
    }
}

/// The compact form: emptying the API type's fields would still leave 824 bytes inline.
impl Keep for Service {
    type Kept = ServiceLite;

    fn keep(self) -> ServiceLite {
        ServiceLite::from(self)
    }
}

/// The compact form: emptying the API type's fields would still leave ~350 bytes inline per
/// endpoint.
impl Keep for EndpointSlice {
    type Kept = SliceLite;

    fn keep(self) -> SliceLite {
        SliceLite::from(self)
    }
}

/// Only what [`PodLite`] reads: this node's pods, their hostPorts, IPs and state.
impl Keep for Pod {
    type Kept = PodLite;

    fn keep(self) -> PodLite {
        PodLite::from(self)
    }
}

impl Keep for Node {
    type Kept = Node;

    fn keep(mut self) -> Node {
        strip_meta(&mut self.metadata);
        self.spec = None;
        if let Some(status) = self.status.as_mut() {
            // Only status.addresses carries NodePorts; the image list alone can be 100 KB.
            let addresses = status.addresses.take();
            *status = Default::default();
            status.addresses = addresses;
        }
        self
    }
}

/// How a compact form enters the model.
pub(crate) trait Model: Sized + Clone {
    fn apply(self, st: &mut ClusterState);
    /// The object of this name is gone.
    fn delete(st: &mut ClusterState, ns: Option<&str>, name: Option<&str>);
    fn replace(list: Vec<Self>, st: &mut ClusterState);
    fn count(st: &ClusterState) -> usize;
    /// The version of the object of this name the model holds.
    fn current<'s>(st: &'s ClusterState, ns: Option<&str>, name: &str) -> Option<&'s Self>;
    /// Namespace and name.
    fn ident(&self) -> (Option<&str>, Option<&str>);
    /// This kind's watch begins a list (see [`ClusterState::services_listing`]).
    fn list_begins(_st: &mut ClusterState) {}
}

impl Model for ServiceLite {
    fn ident(&self) -> (Option<&str>, Option<&str>) {
        (ServiceView::namespace(self), ServiceView::name(self))
    }

    fn apply(self, st: &mut ClusterState) {
        st.apply_service(self);
    }

    fn delete(st: &mut ClusterState, ns: Option<&str>, name: Option<&str>) {
        st.delete_service(ns, name);
    }

    fn replace(list: Vec<Self>, st: &mut ClusterState) {
        st.replace_services(list);
    }

    fn list_begins(st: &mut ClusterState) {
        st.services_listing();
    }

    fn count(st: &ClusterState) -> usize {
        st.service_count()
    }

    fn current<'s>(st: &'s ClusterState, ns: Option<&str>, name: &str) -> Option<&'s Self> {
        st.service(ns?, name)
    }
}

impl Model for SliceLite {
    fn ident(&self) -> (Option<&str>, Option<&str>) {
        (SliceView::namespace(self), SliceView::name(self))
    }

    fn apply(self, st: &mut ClusterState) {
        st.apply_slice(self);
    }

    fn delete(st: &mut ClusterState, ns: Option<&str>, name: Option<&str>) {
        st.delete_slice(ns, name);
    }

    fn replace(list: Vec<Self>, st: &mut ClusterState) {
        st.replace_slices(list);
    }

    fn count(st: &ClusterState) -> usize {
        st.slice_count()
    }

    fn current<'s>(st: &'s ClusterState, ns: Option<&str>, name: &str) -> Option<&'s Self> {
        st.slice(ns?, name)
    }
}

impl Model for Node {
    fn ident(&self) -> (Option<&str>, Option<&str>) {
        (None, self.metadata.name.as_deref())
    }

    fn apply(self, st: &mut ClusterState) {
        st.set_node(Some(self));
    }

    fn delete(st: &mut ClusterState, _: Option<&str>, _: Option<&str>) {
        st.set_node(None);
    }

    fn replace(list: Vec<Self>, st: &mut ClusterState) {
        st.set_node(list.into_iter().next());
    }

    fn count(st: &ClusterState) -> usize {
        usize::from(st.has_node())
    }

    fn current<'s>(st: &'s ClusterState, _: Option<&str>, name: &str) -> Option<&'s Self> {
        st.node()
            .filter(|n| n.metadata.name.as_deref() == Some(name))
    }
}

impl Model for PodLite {
    fn ident(&self) -> (Option<&str>, Option<&str>) {
        (self.namespace.as_deref(), self.name.as_deref())
    }

    fn apply(self, st: &mut ClusterState) {
        st.apply_pod(self);
    }

    fn delete(st: &mut ClusterState, ns: Option<&str>, name: Option<&str>) {
        st.delete_pod(ns, name);
    }

    fn replace(list: Vec<Self>, st: &mut ClusterState) {
        st.replace_pods(list);
    }

    fn count(st: &ClusterState) -> usize {
        st.pod_count()
    }

    fn current<'s>(st: &'s ClusterState, ns: Option<&str>, name: &str) -> Option<&'s Self> {
        st.pod(ns?, name)
    }
}

/// The model's record of an object that does not decode, saying what it does instead.
fn bad_object(kind: &'static str, bad: &Undecodable, kept: bool) -> BadObject {
    let holds = (kind == "EndpointSlice").then(|| bad.service()).flatten();
    let mut then = String::from(if kept {
        "its last decoded version is kept"
    } else {
        "it is skipped"
    });
    if let Some((ns, svc)) = &holds {
        then.push_str(&format!(
            " and Service {ns}/{svc} is held (none of its flows deleted)"
        ));
    }
    BadObject {
        kind,
        object: bad.object(),
        why: format!(
            "cannot be decoded ({}); {then} until it is fixed or deleted",
            bad.error
        ),
        holds,
    }
}

/// What one watch task writes to.
struct Task {
    shared: Arc<Shared>,
    state: SharedState,
    which: Watched,
    epoch: u64,
}

async fn run<K>(api: Api<Decoded<K>>, config: watcher::Config, task: Task)
where
    K: Resource<DynamicType = ()>
        + Keep
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::Kept: Model + Send + 'static,
{
    let kind: &'static str = match K::kind(&()) {
        std::borrow::Cow::Borrowed(k) => k,
        std::borrow::Cow::Owned(_) => "object",
    };
    let mut events = kube::runtime::watcher(api, config)
        .default_backoff()
        .boxed();
    // A list in progress: the model keeps the previous complete one until it ends.
    let mut listing: Vec<K::Kept> = Vec::new();
    let mut listing_bad: Vec<Box<Undecodable>> = Vec::new();
    while let Some(item) = events.next().await {
        let ev = match item {
            Ok(ev) => ev,
            Err(err) => {
                if task.shared.epoch.load(Ordering::SeqCst) != task.epoch {
                    return;
                }
                if task.which == Watched::Pods && status_code(&err) == Some(403) {
                    task.shared.pods_forbidden(&err);
                    return; // nothing to retry: RBAC does not change by itself
                }
                task.shared.on_error(task.which, &err);
                continue;
            }
        };
        // Reduced before anything keeps it.
        let (tag, kept): (Event<()>, Option<Decoded<K::Kept>>) = match ev {
            Event::Init => {
                listing.clear();
                listing_bad.clear();
                (Event::Init, None)
            }
            Event::InitApply(Decoded::Ok(k)) => {
                listing.push(k.keep());
                continue;
            }
            Event::InitApply(Decoded::Bad(b)) => {
                listing_bad.push(b);
                continue;
            }
            Event::InitDone => (Event::InitDone, None),
            Event::Apply(k) => (Event::Apply(()), Some(k.map_ok(Keep::keep))),
            Event::Delete(k) => (Event::Delete(()), Some(k.map_ok(Keep::keep))),
        };
        let mut model = write_state(&task.state);
        if task.shared.epoch.load(Ordering::SeqCst) != task.epoch {
            return; // restarted: a newer task owns this watch
        }
        match (tag.clone(), kept) {
            (Event::Init, _) => K::Kept::list_begins(&mut model),
            (Event::InitDone, _) => {
                let mut bad = Vec::with_capacity(listing_bad.len());
                for b in listing_bad.drain(..) {
                    // What the model holds of it stays, rather than its backends looking gone.
                    let held = b.meta.name.as_deref().and_then(|name| {
                        K::Kept::current(&model, b.meta.namespace.as_deref(), name).cloned()
                    });
                    bad.push(bad_object(kind, &b, held.is_some()));
                    listing.extend(held);
                }
                K::Kept::replace(std::mem::take(&mut listing), &mut model);
                model.replace_undecodable(kind, bad);
            }
            (Event::Apply(()), Some(Decoded::Ok(k))) => {
                let (ns, name) = k.ident();
                model.decoded(kind, ns, name);
                k.apply(&mut model);
            }
            (Event::Apply(()), Some(Decoded::Bad(b))) => {
                let held = b.meta.name.as_deref().is_some_and(|name| {
                    K::Kept::current(&model, b.meta.namespace.as_deref(), name).is_some()
                });
                model.set_undecodable(bad_object(kind, &b, held));
            }
            (Event::Delete(()), Some(d)) => {
                let (ns, name) = match &d {
                    Decoded::Ok(k) => k.ident(),
                    Decoded::Bad(b) => (b.meta.namespace.as_deref(), b.meta.name.as_deref()),
                };
                model.decoded(kind, ns, name);
                K::Kept::delete(&mut model, ns, name);
            }
            _ => {}
        }
        let objects = K::Kept::count(&model);
        // The status moves while the model is locked: whoever sees "current" sees the model
        // that made it so.
        task.shared.on_event(task.which, &tag, objects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_host() -> std::io::Result<String> {
        Err(std::io::Error::other("no hostname in this test"))
    }

    #[test]
    fn node_name_prefers_flag_then_env_then_hostname() {
        let name = node_name_from(Some("from-flag".into()), Some("from-env".into()), no_host);
        assert_eq!(name.expect("flag"), "from-flag");
        let name = node_name_from(None, Some("from-env".into()), no_host);
        assert_eq!(name.expect("env"), "from-env");
        let name = node_name_from(Some(" ".into()), Some(String::new()), || {
            Ok("Worker-1\n".into())
        });
        assert_eq!(
            name.expect("hostname"),
            "worker-1",
            "kubelet lower-cases the hostname"
        );
        let err = node_name_from(None, None, no_host).expect_err("nothing to go on");
        assert!(err.to_string().contains("NODE_NAME"), "{err}");
    }

    #[test]
    fn status_current_needs_all_synced_and_none_relisting() {
        let mut status = WatchStatus::default();
        assert!(!status.synced());
        for w in Watched::ALL {
            status.watches.insert(
                w,
                WatchState {
                    synced: true,
                    ..WatchState::default()
                },
            );
        }
        assert!(status.current());
        status
            .watches
            .get_mut(&Watched::EndpointSlices)
            .expect("present")
            .relisting = true;
        assert!(status.synced() && !status.current());
    }

    #[test]
    fn events_drive_the_status() {
        let (changes, rx) = watch::channel(0);
        let shared = Shared {
            status: Mutex::new(WatchStatus::default()),
            changes,
            epoch: AtomicU64::new(0),
        };
        let w = Watched::Services;
        shared.on_event::<Service>(w, &Event::Init, 0);
        assert!(shared.status().get(w).relisting);
        shared.on_event::<Service>(w, &Event::InitApply(Service::default()), 0);
        shared.on_event::<Service>(w, &Event::InitDone, 1);
        let st = shared.status().get(w);
        assert!(
            st.synced && !st.relisting && st.relists == 0 && st.objects == 1,
            "{st:?}"
        );
        let gone =
            kube::core::Status::failure("too old resource version", "Expired").with_code(410);
        shared.on_error(w, &watcher::Error::WatchError(Box::new(gone)));
        let st = shared.status().get(w);
        assert!(
            st.relisting && st.errors == 1 && st.last_error.is_some(),
            "{st:?}"
        );
        shared.on_event::<Service>(w, &Event::Init, 1);
        shared.on_event::<Service>(w, &Event::InitDone, 1);
        let st = shared.status().get(w);
        assert!(
            !st.relisting && st.relists == 1 && st.last_error.is_none(),
            "{st:?}"
        );
        assert_eq!(
            *rx.borrow(),
            5,
            "Init, InitDone, error, Init, InitDone each signal"
        );
    }
}
