//! The server process: listener, connections, shared state, and the
//! test-control API.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::resource::ResourceKind;
use crate::store::{Preconditions, Store, WriteError, WriteMode};

/// Locks a mutex, ignoring poisoning (state stays usable after a panicking test thread).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kind of API request, as the real server's `RequestInfo.Verb` classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verb {
    /// `GET` on a collection.
    List,
    /// `GET` on a collection (or object) with `watch=true`, or under `/watch/`.
    Watch,
    /// `GET` on one object.
    Get,
    /// `POST` on a collection.
    Create,
    /// `PUT` on an object.
    Update,
    /// `PATCH` on an object.
    Patch,
    /// `DELETE` on an object.
    Delete,
    /// Anything else: `/version`, discovery, health checks, unknown paths.
    Other,
}

impl Verb {
    /// The verb as RBAC names it (`list`, `watch`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::Other => "get",
        }
    }
}

/// One HTTP request the server answered, for assertions in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method.
    pub method: String,
    /// The URL path.
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// What kind of request it was.
    pub verb: Verb,
    /// The resource type addressed, if the path named a served one.
    pub kind: Option<ResourceKind>,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The HTTP status answered (for a watch, the status the stream started with).
    pub status: u16,
}

/// Which requests [`TestServer::set_fault`] answers with `503 ServiceUnavailable`: the
/// requests on one resource type, optionally only one verb, optionally only the pages after
/// the first of a paged LIST. Unlike [`TestServer::set_unavailable`], it lets the other types
/// work on, the way one broken resource (a slow etcd range, an aggregated API, a webhook) fails
/// alone. Open watches keep running; use [`TestServer::drop_watches`] to make them reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    kind: ResourceKind,
    verb: Option<Verb>,
    continued_only: bool,
    /// Answer `403 Forbidden` (RBAC refuses) instead of 503.
    forbidden: bool,
}

impl Fault {
    /// Every request on `kind`: LIST, WATCH, GET and writes.
    pub fn all(kind: ResourceKind) -> Fault {
        Fault {
            kind,
            verb: None,
            continued_only: false,
            forbidden: false,
        }
    }

    /// Every request on `kind` answered `403 Forbidden`, as when the caller's RBAC does not
    /// grant the resource (the real server's message, for the test server's anonymous user).
    pub fn forbidden(kind: ResourceKind) -> Fault {
        Fault {
            forbidden: true,
            ..Fault::all(kind)
        }
    }

    /// Requests of one verb on `kind` (e.g. only LISTs, so that a re-list fails while a
    /// watch could start).
    pub fn verb(kind: ResourceKind, verb: Verb) -> Fault {
        Fault {
            kind,
            verb: Some(verb),
            continued_only: false,
            forbidden: false,
        }
    }

    /// LIST requests on `kind` that carry a `continue` token: a paged list's first page
    /// arrives, the rest never does (with [`TestServer::set_list_page_limit`] to force pages).
    pub fn continued_pages(kind: ResourceKind) -> Fault {
        Fault {
            kind,
            verb: Some(Verb::List),
            continued_only: true,
            forbidden: false,
        }
    }

    fn matches(&self, kind: ResourceKind, verb: Verb, raw_query: &str) -> bool {
        self.kind == kind
            && self.verb.is_none_or(|v| v == verb)
            && (!self.continued_only
                || form_urlencoded::parse(raw_query.as_bytes())
                    .any(|(k, v)| k == "continue" && !v.is_empty()))
    }
}

/// Settings of a [`TestServer`]; start one with [`TestServer::start_with`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) history_limit: usize,
    pub(crate) bookmark_interval: Duration,
    pub(crate) watch_buffer: usize,
    pub(crate) port: u16,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            history_limit: 4096,
            bookmark_interval: Duration::from_secs(1),
            watch_buffer: 4096,
            port: 0,
        }
    }
}

impl ServerConfig {
    /// How many change events to retain for resuming watches (default 4096).
    /// Older ones are compacted: a watch or exact read from before them gets
    /// `410 Expired`, like the real server's watch cache window plus etcd
    /// compaction.
    #[must_use]
    pub fn history_limit(mut self, events: usize) -> ServerConfig {
        self.history_limit = events.max(1);
        self
    }

    /// The interval of `BOOKMARK` events on watches that asked for
    /// `allowWatchBookmarks=true` (default 1 s; the real server sends them
    /// about once a minute). [`Duration::ZERO`] disables periodic bookmarks.
    #[must_use]
    pub fn bookmark_interval(mut self, interval: Duration) -> ServerConfig {
        self.bookmark_interval = interval;
        self
    }

    /// How many live events a watch may fall behind before the server closes
    /// it, as the real server closes unresponsive watchers (default 4096).
    #[must_use]
    pub fn watch_buffer(mut self, events: usize) -> ServerConfig {
        self.watch_buffer = events.max(16);
        self
    }

    /// The port on 127.0.0.1 to listen on (default 0: any free port).
    #[must_use]
    pub fn port(mut self, port: u16) -> ServerConfig {
        self.port = port;
        self
    }
}

pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) unavailable: AtomicBool,
    pub(crate) bookmark_interval: watch::Sender<Duration>,
    /// Bumped by `drop_watches`: every open watch aborts.
    pub(crate) drop_watches: watch::Sender<u64>,
    /// Bumped by restart and shutdown: the accept loop and every connection stop.
    pub(crate) generation: watch::Sender<u64>,
    pub(crate) requests: Mutex<Vec<RequestRecord>>,
    pub(crate) open_watches: Mutex<HashMap<ResourceKind, usize>>,
    pub(crate) faults: Mutex<HashSet<Fault>>,
    /// Most items per LIST page (0: as many as `limit` asks).
    pub(crate) list_page_limit: AtomicU64,
}

/// Keeps the requests log from growing without bound in long-running use.
const MAX_REQUEST_LOG: usize = 100_000;

impl Shared {
    pub(crate) fn record(&self, r: RequestRecord) {
        let mut log = lock(&self.requests);
        if log.len() >= MAX_REQUEST_LOG {
            log.drain(..MAX_REQUEST_LOG / 2);
        }
        log.push(r);
    }

    /// The [`Fault`] set by the test that answers this request, if any: `Some(true)` for 403,
    /// `Some(false)` for 503.
    pub(crate) fn faulted(&self, kind: ResourceKind, verb: Verb, raw_query: &str) -> Option<bool> {
        let faults = lock(&self.faults);
        faults
            .iter()
            .filter(|f| f.matches(kind, verb, raw_query))
            .map(|f| f.forbidden)
            .max()
    }
}

struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A local Kubernetes API server for tests, listening on `127.0.0.1` over plain HTTP.
///
/// It serves the list/watch protocol of the real API server for the
/// [`ResourceKind`]s, so unmodified `kube` clients (`Api`, `watcher`,
/// `reflector`) run against it, and lets tests change objects and inject
/// failures directly. Dropping it stops the server and closes every connection.
///
/// ```no_run
/// # async fn demo() {
/// use k8s_openapi::api::core::v1::Service;
/// let server = kube_testserver::TestServer::start().await;
/// let mut svc = Service::default();
/// svc.metadata.name = Some("web".into());
/// svc.metadata.namespace = Some("default".into());
/// server.apply(&svc).expect("apply");
/// server.write_kubeconfig("/tmp/kubeconfig").expect("kubeconfig");
/// # }
/// ```
pub struct TestServer {
    core: Arc<Core>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    background: Option<Background>,
}

/// What a restart needs; shared with tasks that run one.
struct Core {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: Handle,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Core {
    async fn restart(&self, downtime: Duration) -> Result<(), Error> {
        let old = lock(&self.accept_task).take();
        self.shared.generation.send_modify(|g| *g += 1);
        if let Some(task) = old {
            let _ = task.await;
        }
        if !downtime.is_zero() {
            tokio::time::sleep(downtime).await;
        }
        let mut attempt = 0;
        let listener = loop {
            match bind_std(self.addr) {
                Ok(l) => break l,
                Err(e) if attempt >= 50 => return Err(Error::Io(e)),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let task = spawn_accept_loop(&self.handle, listener, self.shared.clone());
        *lock(&self.accept_task) = Some(task);
        Ok(())
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("background", &self.background.is_some())
            .finish_non_exhaustive()
    }
}

fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn spawn_accept_loop(
    handle: &Handle,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
    // Subscribe before spawning so that a restart racing with the spawn still stops it.
    let generation = shared.generation.subscribe();
    handle.spawn(accept_loop(listener, shared, generation))
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut generation: watch::Receiver<u64>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "kube-testserver: cannot register listener");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = generation.changed() => break,
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    let generation = generation.clone();
                    tokio::spawn(serve_connection(stream, shared, generation));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "kube-testserver: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    mut generation: watch::Receiver<u64>,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(crate::api::handle(shared, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "kube-testserver: connection ended with an error");
            }
        }
        // Restart or shutdown: drop the connection without a goodbye, as a dying server does.
        _ = generation.changed() => {}
    }
}

impl TestServer {
    /// Starts a server with default settings on `127.0.0.1:0`, on the current
    /// tokio runtime.
    ///
    /// # Panics
    ///
    /// If no port can be bound or there is no current tokio runtime (a test
    /// environment problem); use [`TestServer::try_start_with`] to handle that.
    pub async fn start() -> TestServer {
        match TestServer::try_start_with(ServerConfig::default()).await {
            Ok(s) => s,
            Err(e) => panic!("kube-testserver: cannot start: {e}"),
        }
    }

    /// Starts a server with `config` on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// As [`TestServer::start`].
    pub async fn start_with(config: ServerConfig) -> TestServer {
        match TestServer::try_start_with(config).await {
            Ok(s) => s,
            Err(e) => panic!("kube-testserver: cannot start: {e}"),
        }
    }

    /// Starts a server with `config` on the current tokio runtime, reporting
    /// a failure to bind instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if 127.0.0.1:PORT cannot be bound; [`Error::NoRuntime`] outside a tokio runtime.
    pub async fn try_start_with(config: ServerConfig) -> Result<TestServer, Error> {
        let handle = Handle::try_current().map_err(|e| Error::NoRuntime(e.to_string()))?;
        TestServer::start_on(handle, config)
    }

    fn start_on(handle: Handle, config: ServerConfig) -> Result<TestServer, Error> {
        let listener = bind_std(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            config.port,
        )))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(config.history_limit, config.watch_buffer)),
            unavailable: AtomicBool::new(false),
            bookmark_interval: watch::Sender::new(config.bookmark_interval),
            drop_watches: watch::Sender::new(0),
            generation: watch::Sender::new(0),
            requests: Mutex::new(Vec::new()),
            open_watches: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashSet::new()),
            list_page_limit: AtomicU64::new(0),
        });
        let task = spawn_accept_loop(&handle, listener, shared.clone());
        Ok(TestServer {
            core: Arc::new(Core {
                shared: shared.clone(),
                addr,
                handle,
                accept_task: Mutex::new(Some(task)),
            }),
            shared,
            addr,
            background: None,
        })
    }

    /// Starts a server with default settings on a runtime thread of its own,
    /// for synchronous tests (or tests whose runtime is torn down before the
    /// server should be). Every control method works from any thread.
    ///
    /// # Panics
    ///
    /// As [`TestServer::start`].
    pub fn start_background() -> TestServer {
        match TestServer::try_start_background_with(ServerConfig::default()) {
            Ok(s) => s,
            Err(e) => panic!("kube-testserver: cannot start: {e}"),
        }
    }

    /// [`TestServer::start_background`] with settings, reporting failures.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the runtime thread cannot start or the port cannot be bound.
    pub fn try_start_background_with(config: ServerConfig) -> Result<TestServer, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-testserver")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kube-testserver-rt".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        let mut server = match TestServer::start_on(handle, config) {
            Ok(s) => s,
            Err(e) => {
                let _ = stop_tx.send(());
                let _ = thread.join();
                return Err(e);
            }
        };
        server.background = Some(Background {
            stop: Some(stop_tx),
            thread: Some(thread),
        });
        Ok(server)
    }

    /// The listening address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://127.0.0.1:PORT`, as a kubeconfig's `server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig with one cluster (`server: http://127.0.0.1:PORT`), one
    /// user without credentials, and a current context using them with
    /// namespace `default`. `kube::Config::from_custom_kubeconfig`, `kubectl`
    /// and `ctreap --kubeconfig` accept it.
    pub fn kubeconfig_yaml(&self) -> String {
        crate::kubeconfig::render(&self.url())
    }

    /// Writes [`TestServer::kubeconfig_yaml`] to `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be written.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig_yaml())?;
        Ok(())
    }

    // ---- objects -------------------------------------------------------

    /// Creates or replaces a typed object (a `k8s-openapi` `Service`,
    /// `EndpointSlice`, `Node`, `Pod` or `Namespace`), like a `PUT` that
    /// creates when missing and ignores `resourceVersion` (no conflicts).
    ///
    /// As in the real server, the write bumps the global resourceVersion and
    /// stamps it on the object; a create sets `uid` and `creationTimestamp`
    /// when missing, a replace keeps the stored ones; a namespaced object
    /// without a namespace goes to `default`. Watchers see `ADDED` or
    /// `MODIFIED`. A replace that changes nothing is a no-op without an event.
    /// Returns the stored object.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedKind`] for a type that is not served, [`Error::Invalid`] for an object without a usable name, [`Error::Json`] if the object does not convert.
    pub fn apply<K>(&self, obj: &K) -> Result<K, Error>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let kind = kind_of::<K>()?;
        let stored = self.write(kind, serde_json::to_value(obj)?, WriteMode::Upsert)?;
        Ok(serde_json::from_value(stored)?)
    }

    /// [`TestServer::apply`] for a JSON object; its `apiVersion` and `kind`
    /// pick the resource type.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedKind`] if `apiVersion`/`kind` name no served type, [`Error::Invalid`] for an object without a usable name.
    pub fn apply_json(&self, obj: Value) -> Result<Value, Error> {
        let kind = kind_of_json(&obj)?;
        self.write(kind, obj, WriteMode::Upsert)
    }

    /// Applies every object of a manifest, in order: JSON (an object, an
    /// array, or a `List`) or YAML (one or more `---`-separated documents,
    /// each an object or a `List`), as `kubectl apply -f` reads them.
    /// Returns the stored objects.
    ///
    /// # Errors
    ///
    /// [`Error::Manifest`] if the text parses as neither JSON nor YAML; otherwise as [`TestServer::apply_json`], stopping at the first object that fails (earlier ones stay applied).
    pub fn apply_manifest(&self, text: &str) -> Result<Vec<Value>, Error> {
        let docs: Vec<Value> = match serde_json::from_str::<Value>(text) {
            Ok(v) => vec![v],
            Err(_) => serde_saphyr::from_multiple::<Value>(text)
                .map_err(|e| Error::Manifest(e.to_string()))?,
        };
        let mut objects = Vec::new();
        for doc in docs {
            flatten_manifest(doc, &mut objects);
        }
        objects.into_iter().map(|o| self.apply_json(o)).collect()
    }

    /// [`TestServer::apply_json`] for several objects as one burst: every write happens under
    /// one lock, so watchers receive the events back to back (consecutive resourceVersions,
    /// nothing in between), as when a controller writes several EndpointSlices at once.
    /// Stops at the first object that fails; earlier ones stay applied.
    ///
    /// # Errors
    ///
    /// As [`TestServer::apply_json`].
    pub fn apply_all(&self, objs: Vec<Value>) -> Result<Vec<Value>, Error> {
        let mut typed = Vec::with_capacity(objs.len());
        for obj in objs {
            typed.push((kind_of_json(&obj)?, obj));
        }
        let mut store = lock(&self.shared.store);
        let mut out = Vec::with_capacity(typed.len());
        for (kind, obj) in typed {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match store.write(kind, obj, WriteMode::Upsert) {
                Ok(v) => out.push((*v).clone()),
                Err(e) => {
                    return Err(Error::Invalid {
                        kind,
                        message: e.to_api(kind, &name).message,
                    });
                }
            }
        }
        Ok(out)
    }

    fn write(&self, kind: ResourceKind, obj: Value, mode: WriteMode) -> Result<Value, Error> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = lock(&self.shared.store).write(kind, obj, mode);
        match res {
            Ok(v) => Ok((*v).clone()),
            Err(WriteError::NotFound) => Err(Error::NotFound {
                kind,
                namespace,
                name,
            }),
            Err(e) => Err(Error::Invalid {
                kind,
                message: e.to_api(kind, &name).message,
            }),
        }
    }

    /// Deletes an object immediately (no finalizers or grace period, as for
    /// objects without finalizers); watchers see `DELETED` with the last state
    /// at the deletion's resourceVersion. `namespace` is ignored for
    /// cluster-scoped types; `None` means `default` for namespaced ones.
    /// Returns the deleted object.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such object.
    pub fn delete(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, Error> {
        let ns = effective_namespace(kind, namespace);
        let res = lock(&self.shared.store).remove(kind, &ns, name, &Preconditions::default());
        res.map(|v| (*v).clone()).map_err(|_| Error::NotFound {
            kind,
            namespace: ns,
            name: name.to_string(),
        })
    }

    /// The stored object, typed; `Ok(None)` if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedKind`] for a type that is not served, [`Error::Json`] if the stored object does not deserialize as `K`.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Result<Option<K>, Error>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let kind = kind_of::<K>()?;
        self.get_json(kind, namespace, name)
            .map(serde_json::from_value)
            .transpose()
            .map_err(Error::from)
    }

    /// The stored object as JSON (with `kind` and `apiVersion`).
    pub fn get_json(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let ns = effective_namespace(kind, namespace);
        lock(&self.shared.store)
            .get(kind, &ns, name)
            .map(|v| (*v).clone())
    }

    /// Every stored object of the type, typed, in LIST order (namespace, name).
    ///
    /// # Errors
    ///
    /// As [`TestServer::get`].
    pub fn list<K>(&self) -> Result<Vec<K>, Error>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let kind = kind_of::<K>()?;
        self.list_json(kind)
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(Error::from))
            .collect()
    }

    /// Every stored object of the type as JSON, in LIST order.
    pub fn list_json(&self, kind: ResourceKind) -> Vec<Value> {
        lock(&self.shared.store)
            .objects(kind)
            .map(|m| m.values().map(|v| (**v).clone()).collect())
            .unwrap_or_default()
    }

    /// The current global resourceVersion (what a LIST would report).
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }

    /// The oldest resourceVersion a watch can still resume from (older ones
    /// get `410 Expired`).
    pub fn oldest_resource_version(&self) -> u64 {
        lock(&self.shared.store).compact_rev()
    }

    // ---- failure injection ---------------------------------------------

    /// Compacts the history, like the real server's periodic etcd compaction
    /// (which writes its `compact_rev_key` first, so the resourceVersion
    /// advances by one). Afterwards, a watch from any older resourceVersion
    /// gets an `ERROR` event with a `410 Expired` `Status` ("too old resource
    /// version"), and a LIST with `resourceVersionMatch=Exact` or a `continue`
    /// token from before gets HTTP `410`. Open watches are not affected (use
    /// [`TestServer::drop_watches`] to make them resume). Returns the
    /// compaction resourceVersion, the oldest one still usable.
    pub fn compact(&self) -> u64 {
        lock(&self.shared.store).compact()
    }

    /// Retains only the last `events` changes for resuming watches; older
    /// resourceVersions expire as with [`TestServer::compact`].
    pub fn set_history_limit(&self, events: usize) {
        lock(&self.shared.store).set_history_limit(events);
    }

    /// Aborts every open watch stream without the terminating chunk, as when
    /// the API server (or a proxy) goes away mid-stream. Clients see an
    /// unexpected EOF and re-watch from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|g| *g += 1);
    }

    /// While `true`, every request is answered `503 ServiceUnavailable` with a
    /// `Status` body (open watches keep running). Note that `kube` clients
    /// retry 503 by default with exponential backoff for a long time before
    /// reporting an error.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Turns a [`Fault`] on or off: while on, the requests it selects are answered
    /// `503 ServiceUnavailable`, the others are served normally.
    pub fn set_fault(&self, fault: Fault, on: bool) {
        let mut faults = lock(&self.shared.faults);
        if on {
            faults.insert(fault);
        } else {
            faults.remove(&fault);
        }
    }

    /// Turns every [`Fault`] off.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// LIST pages hold at most `items` objects from now on, with a `continue` token for the
    /// rest, whatever `limit` the client asked for (the real server may return fewer items
    /// than `limit`; clients must follow the token). `0` restores the default (as many as
    /// `limit` asks, all without one).
    pub fn set_list_page_limit(&self, items: u64) {
        self.shared.list_page_limit.store(items, Ordering::SeqCst);
    }

    /// Whether [`TestServer::set_unavailable`] is on.
    pub fn is_unavailable(&self) -> bool {
        self.shared.unavailable.load(Ordering::SeqCst)
    }

    /// Changes the `BOOKMARK` interval, also for open watches.
    /// [`Duration::ZERO`] stops periodic bookmarks.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.bookmark_interval.send_replace(interval);
    }

    // ---- observation ---------------------------------------------------

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests of `verb` on `kind` were answered (any namespace, any status).
    pub fn request_count(&self, kind: ResourceKind, verb: Verb) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.kind == Some(kind) && r.verb == verb)
            .count()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// How many watch streams on `kind` are open now.
    pub fn open_watches(&self, kind: ResourceKind) -> usize {
        lock(&self.shared.open_watches)
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until at least `count` watches on `kind` are open, polling every
    /// 10 ms; `false` if that did not happen within `timeout`.
    pub async fn wait_for_watches(
        &self,
        kind: ResourceKind,
        count: usize,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.open_watches(kind) >= count {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- restart -------------------------------------------------------

    /// Simulates an API server restart on the same port: stops accepting,
    /// closes every connection (open watches end without the terminating
    /// chunk, idle keep-alive connections are closed), then listens again.
    /// Stored objects and history survive, like etcd does.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the port cannot be bound again within about a second.
    pub async fn restart(&self) -> Result<(), Error> {
        self.restart_with_downtime(Duration::ZERO).await
    }

    /// [`TestServer::restart`], refusing connections for `downtime` in between.
    ///
    /// # Errors
    ///
    /// As [`TestServer::restart`].
    pub async fn restart_with_downtime(&self, downtime: Duration) -> Result<(), Error> {
        self.core.restart(downtime).await
    }

    /// [`TestServer::restart`] for synchronous code: runs the restart on the
    /// server's runtime and blocks until it is done. Do not call it from a
    /// task of a single-threaded runtime that the server runs on (it would
    /// wait for itself); from async code, use [`TestServer::restart`].
    ///
    /// # Errors
    ///
    /// As [`TestServer::restart`]; [`Error::ShutDown`] if the server's runtime is gone.
    pub fn restart_blocking(&self) -> Result<(), Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        let core = self.core.clone();
        self.core.handle.spawn(async move {
            let _ = tx.send(core.restart(Duration::ZERO).await);
        });
        rx.recv().map_err(|_| Error::ShutDown)?
    }
}

/// Expands arrays and `List` objects (`kind: List`, `ServiceList`, ...) into their items.
fn flatten_manifest(doc: Value, out: &mut Vec<Value>) {
    match doc {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                flatten_manifest(item, out);
            }
        }
        Value::Object(mut o)
            if o.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && o.get("items").is_some_and(Value::is_array) =>
        {
            let list_kind = o
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let api_version = o.get("apiVersion").cloned();
            let items = o.remove("items").unwrap_or(Value::Null);
            for mut item in items.as_array().cloned().unwrap_or_default() {
                // Items of a typed list may omit their type meta.
                if let Some(io) = item.as_object_mut()
                    && list_kind != "List"
                {
                    if !io.contains_key("kind") {
                        let k = list_kind.trim_end_matches("List").to_string();
                        io.insert("kind".into(), Value::String(k));
                    }
                    if let Some(av) = &api_version
                        && !io.contains_key("apiVersion")
                    {
                        io.insert("apiVersion".into(), av.clone());
                    }
                }
                flatten_manifest(item, out);
            }
        }
        other => out.push(other),
    }
}

fn kind_of<K: k8s_openapi::Resource>() -> Result<ResourceKind, Error> {
    ResourceKind::of::<K>().ok_or_else(|| Error::UnsupportedKind {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
    })
}

fn effective_namespace(kind: ResourceKind, namespace: Option<&str>) -> String {
    if kind.namespaced() {
        namespace
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.generation.send_modify(|g| *g += 1);
        if let Some(task) = lock(&self.core.accept_task).take() {
            task.abort();
        }
        if let Some(bg) = &mut self.background {
            if let Some(stop) = bg.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = bg.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The served type an object names with its `apiVersion` and `kind`.
fn kind_of_json(obj: &Value) -> Result<ResourceKind, Error> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind_name = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    ResourceKind::from_api_version_kind(api_version, kind_name).ok_or_else(|| {
        Error::UnsupportedKind {
            api_version: api_version.to_string(),
            kind: kind_name.to_string(),
        }
    })
}
