//! `ctreap run`: the node agent. Watches Services and EndpointSlices and deletes the conntrack
//! entries whose backend is gone, within milliseconds, safely.
//!
//! Four triggers feed one loop, which alone decides and deletes:
//! - **watch**: a change of the cluster, coalesced over [`COALESCE`]: the live model patched
//!   only the slices (or rebuilt only the Services) it names and recorded the (frontend,
//!   backend) pairs whose backend's view changed ([`ClusterState::take_changes`]); those the
//!   planner ([`planned`]) says the policy deletes are flushed after their
//!   settle window ([`Settle`]: `--grace`, or `--move-grace` for a backend that vanished while
//!   serving);
//! - **event**: a conntrack NEW event towards a backend already known gone (`events.rs`);
//! - **resync**: a full pass every `--resync`, streaming the table through the verdict;
//! - **startup**: one full pass once every watch has delivered its list.
//!
//! Safety, in the order the code applies it:
//! 1. Nothing is deleted until every watch has delivered its initial list, and nothing while
//!    any watch re-lists (the map is only *trusted* when [`WatchStatus::current`](crate::cluster::WatchStatus::current)).
//! 2. Every entry is judged against the newest trusted map right before it is deleted, entry by
//!    entry; a backend serving (or draining) for that frontend keeps its flows.
//! 3. The circuit breaker ([`breaker`]) holds back a pass that looks like a broken view.
//! 4. `--dry-run` runs everything but the delete.
//!
//! Data flows one way: watches -> live model -> pure decisions (`reconcile`) -> kernel.

pub mod breaker;
pub mod config;
mod events;
mod executor;
mod flows;
mod gate;
pub mod http;
mod kernel;
#[cfg(test)]
mod loop_tests;
pub mod malloc;
pub mod metrics;
mod pass;
mod process;
mod service_events;
#[cfg(test)]
mod table;

pub use config::{LogFormat, RunCmd};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ctnetlink::Netns;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;
use tracing::{debug, info, warn};

use self::breaker::Limits;
use self::events::{EventMsg, SharedView};
use self::executor::{DrySeen, Executor, Groups};
use self::flows::FlowIndex;
use self::gate::{Check, Confirm, Gate, Watches};
use self::http::Health;
use self::kernel::Kernel;
use self::pass::Scope;
use crate::cluster::{
    ClusterState, ClusterWatch, ServiceName, WatchConfig, Watched, addresses_in, kube_client,
    node_name,
};
use crate::reconcile::{FlushKey, Planned, Policy, Settle, deletable, key_of, planned};

/// How long a burst of watch events is gathered before it is diffed: a rollout step changes a
/// slice several times within a millisecond or two.
pub const COALESCE: Duration = Duration::from_millis(2);
/// Removals that leave a Service with no serving backend wait until no such removal has come
/// for this long, so that the circuit breaker judges a broken view's removals together even
/// when its watch events arrive some milliseconds apart (one Service emptied alone is still
/// flushed within milliseconds: kubernetes #139628).
const EMPTIED_SETTLE: Duration = Duration::from_millis(50);
/// ... but no longer than this after the first of them.
const EMPTIED_SETTLE_MAX: Duration = Duration::from_millis(500);
/// How long the startup pass waits for the event listener's socket (it opens in
/// milliseconds; a failure is retried by the listener and only costs walks until a full pass).
const LISTENER_WAIT: Duration = Duration::from_secs(2);
/// How often the main loop shows progress when nothing happens (/healthz).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often the table's size is read for the gauges.
const STATS_EVERY: Duration = Duration::from_secs(10);
/// Event socket receive buffer unless `--event-rcvbuf` says otherwise.
pub const EVENT_RCVBUF: usize = ctnetlink::events::DEFAULT_RCVBUF;

/// What made the agent delete: the `trigger` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    Watch,
    Event,
    Resync,
    Startup,
    Overrun,
    Breaker,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Watch,
        Trigger::Event,
        Trigger::Resync,
        Trigger::Startup,
        Trigger::Overrun,
        Trigger::Breaker,
    ];

    /// Triggers of full passes (`ctreap_reconciles_total`); the others delete by key.
    pub const fn runs_full_pass(self) -> bool {
        matches!(
            self,
            Trigger::Resync | Trigger::Startup | Trigger::Overrun | Trigger::Breaker
        )
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Watch => "watch",
            Trigger::Event => "event",
            Trigger::Resync => "resync",
            Trigger::Startup => "startup",
            Trigger::Overrun => "overrun",
            Trigger::Breaker => "breaker",
        }
    }
}

/// Watch-planned removals that empty their Service, gathered for the breaker.
struct Emptied {
    keys: Planned,
    first: Instant,
    due: Instant,
}

/// A watch-planned flush waiting out its settle window (`--grace` or `--move-grace`).
struct Pending {
    due: Instant,
    /// When the watch event that planned it arrived (the flush latency's start).
    arrival: Instant,
    service: ServiceName,
}

struct Agent {
    cmd: RunCmd,
    policy: Policy,
    limits: Limits,
    health: Arc<Health>,
    /// Sweeps and deletes.
    exec: Executor,
    /// May the agent delete now?
    gate: Gate,
    cancel: Arc<AtomicBool>,
    watch: ClusterWatch,
    /// This node's name (--node-name, $NODE_NAME or the hostname).
    node: String,
    /// The live model (the watch's, for the agent's whole life: a restart keeps it).
    model: Arc<RwLock<ClusterState>>,
    changes: watch::Receiver<u64>,
    /// What the event listener judges with, lent while deleting is allowed.
    view: SharedView,
    /// Which backend addresses have flows here: removals of the others need no walk.
    flows: Arc<FlowIndex>,
    pending: HashMap<FlushKey, Pending>,
    emptied: Option<Emptied>,
    /// Conntrack events from elsewhere than the kernel's socket (the loop tests).
    events_in: Option<mpsc::Receiver<EventMsg>>,
    /// Kubernetes Events on the Services (`--events`).
    recorder: service_events::Recorder,
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cmd: RunCmd) -> Result<()> {
    if cmd.resync.is_zero() {
        return Err(crate::args::UsageError(
            "--resync must be longer than 0 (the periodic pass is the safety net)".into(),
        )
        .into());
    }
    match malloc::tune() {
        malloc::Tuned::Fixed => debug!(
            bytes = malloc::MMAP_THRESHOLD,
            "malloc: mmap threshold fixed (large blocks go back to the kernel when freed)"
        ),
        malloc::Tuned::Operator => info!("malloc: mmap threshold set by the environment; kept"),
        malloc::Tuned::Unsupported => debug!("malloc: not glibc; its defaults kept"),
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let cancel = cancel.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
            }
            // Dumps in progress look at this flag between two entries.
            cancel.store(true, Ordering::Relaxed);
            let _ = stop_tx.send(true);
        });
    }

    let netns = cmd.ns.netns();
    let kernel = Kernel::open(netns.as_ref(), cancel.clone()).with_context(|| match &netns {
        Some(ns) => format!("opening ctnetlink in {ns}"),
        None => "opening ctnetlink".into(),
    })?;
    let client = kube_client(cmd.kube.kubeconfig.clone(), cmd.kube.context.clone()).await?;
    let res = serve(cmd, kernel, client, netns, cancel.clone(), stop_rx, None).await;
    cancel.store(true, Ordering::Relaxed);
    res
}

/// The agent on `kernel`'s table with `client`'s API server, until `stop` turns true: what
/// `run` runs once it has both, and what the loop tests run on an in-memory table.
async fn serve(
    cmd: RunCmd,
    kernel: Kernel,
    client: kube::Client,
    netns: Option<Netns>,
    cancel: Arc<AtomicBool>,
    stop_rx: watch::Receiver<bool>,
    events_in: Option<mpsc::Receiver<EventMsg>>,
) -> Result<()> {
    let kernel = Arc::new(Mutex::new(kernel));
    {
        let k = kernel.clone();
        let features = tokio::task::spawn_blocking(move || {
            k.lock().unwrap_or_else(|e| e.into_inner()).probe()
        })
        .await?
        .context("probing ctnetlink")?;
        info!(
            dump_filter = features.dump_filter,
            flush_filter = features.flush_filter,
            status_filter = features.status_filter,
            "ctnetlink ready"
        );
    }

    let health = Arc::new(Health::new());
    health.metrics.init_deleted(cmd.dry_run);
    health.set_liveness_timeout(cmd.liveness_timeout);
    health.beat();
    let listener = tokio::net::TcpListener::bind(cmd.listen)
        .await
        .with_context(|| format!("listening on {} (--listen)", cmd.listen))?;
    info!(listen = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    {
        let health = health.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = http::serve(listener, health, shutdown).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }

    let node = node_name(cmd.kube.node_name.clone())?;
    let node_local_addrs = addresses_in(netns.as_ref())?;
    let watch_config = WatchConfig {
        node_name: Some(node.clone()),
        hostports: cmd.kube.hostports,
        node_local_addrs,
    };
    let recorder = if cmd.events {
        service_events::spawn(
            client.clone(),
            node.clone(),
            cmd.events_per_minute,
            cmd.debug_events_window.unwrap_or(service_events::WINDOW),
            health.clone(),
        )
    } else {
        service_events::Recorder::off(health.clone())
    };
    let watch = ClusterWatch::start(client.clone(), watch_config);
    if let Err(e) = watch.follow_local_addresses(netns.clone()) {
        warn!(error = %e, "cannot follow the node's address changes (rtnetlink); NodePorts stay on the addresses read at start");
    }
    let changes = watch.changes();
    let model = watch.state().clone();
    let flows = Arc::new(FlowIndex::default());
    info!(node = %node, dry_run = cmd.dry_run, "watching Services, EndpointSlices and the Node");

    let exec = Executor {
        kernel,
        model: model.clone(),
        flows: flows.clone(),
        health: health.clone(),
        policy: cmd.policy(),
        dry: cmd
            .dry_run
            .then(|| Arc::new(Mutex::new(DrySeen::default()))),
    };
    let mut agent = Agent {
        policy: cmd.policy(),
        limits: Limits {
            share: cmd.max_delete_share,
            min: cmd.max_delete_min,
        },
        cmd,
        health,
        exec,
        gate: Gate::default(),
        cancel: cancel.clone(),
        watch,
        node,
        view: Arc::new(events::View::new(model.clone(), flows.clone())),
        flows,
        model,
        changes,
        pending: HashMap::new(),
        emptied: None,
        events_in,
        recorder,
    };
    agent.main(stop_rx, netns).await
}

impl Agent {
    async fn main(&mut self, mut stop: watch::Receiver<bool>, netns: Option<Netns>) -> Result<()> {
        // Wait for every watch's list; nothing is deleted before.
        self.health
            .set_not_ready(Some("waiting for the initial lists".into()));
        let mut warn_at = Instant::now() + self.cmd.kube.sync_timeout;
        // Waiting for the API server is progress too: a liveness failure would only restart
        // the wait.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            self.health.beat();
            self.observe_status();
            if self.watch.is_synced() {
                break;
            }
            // Errors while the first lists are pending are retried by the watches themselves.
            self.view_ok();
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = heartbeat.tick() => {}
                _ = self.changes.changed() => {}
                _ = sleep_until(warn_at.into()) => {
                    warn_at = Instant::now() + self.cmd.kube.sync_timeout;
                    warn!(waiting_for = %self.pending_watches(), "no complete list from the API server yet; deleting nothing until there is");
                }
            }
        }

        let (ev_tx, mut ev_rx) = mpsc::channel(4096);
        let listener = if let Some(rx) = self.events_in.take() {
            ev_rx = rx; // the loop tests' conntrack events
            None
        } else if self.cmd.no_events {
            None
        } else {
            Some(
                events::spawn(
                    netns,
                    self.cmd.event_rcvbuf,
                    self.view.clone(),
                    self.policy,
                    ev_tx,
                    self.cancel.clone(),
                )
                .context("starting the event listener")?,
            )
        };

        if listener.is_some() {
            // The startup pass builds the index of backends with flows here, which is trusted
            // only if the listener was reading when the walk began.
            let until = Instant::now() + LISTENER_WAIT;
            while !self.flows.is_listening() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if self.take_trusted() {
            self.pass(Scope::Full, Trigger::Startup, None).await;
        }

        let mut resync =
            tokio::time::interval_at((Instant::now() + self.cmd.resync).into(), self.cmd.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stats = tokio::time::interval(STATS_EVERY);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let stall_at = self.cmd.debug_stall_after.map(|d| Instant::now() + d);
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            let grace_due = self.pending.values().map(|p| p.due).min().unwrap_or(far);
            let emptied_due = self.emptied.as_ref().map_or(far, |e| e.due);
            let relist_due = self.gate.relist_due().unwrap_or(far);
            self.health
                .metrics
                .settling(self.pending.len() + self.emptied.as_ref().map_or(0, |e| e.keys.len()));
            self.health.beat();
            if stall_at.is_some_and(|t| Instant::now() >= t) {
                warn!("--debug-stall-after: the main loop stops making progress (fault injection)");
                std::future::pending::<()>().await;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = heartbeat.tick() => {}
                r = self.changes.changed() => {
                    if r.is_err() {
                        // Cannot happen while the watch lives (it holds the sender, and a
                        // restart keeps it); subscribe again rather than spin.
                        self.changes = self.watch.changes();
                        continue;
                    }
                    let arrival = Instant::now();
                    tokio::time::sleep(COALESCE).await;
                    self.on_change(arrival).await;
                }
                Some(msg) = ev_rx.recv() => {
                    let mut batch = vec![msg];
                    while let Ok(m) = ev_rx.try_recv() {
                        batch.push(m);
                        if batch.len() >= 4096 { break; }
                    }
                    self.on_events(batch).await;
                }
                _ = sleep_until(grace_due.into()) => self.on_grace_due().await,
                _ = sleep_until(emptied_due.into()) => self.on_emptied_due().await,
                _ = sleep_until(relist_due.into()) => self.relist_for_breaker(),
                _ = resync.tick() => {
                    if self.take_trusted() {
                        self.pass(Scope::Full, Trigger::Resync, None).await;
                    }
                }
                _ = stats.tick() => self.read_stats().await,
            }
        }
        self.health.set_not_ready(Some("shutting down".into()));
        drop(ev_rx);
        if let Some(t) = listener {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        info!("stopped");
        Ok(())
    }

    fn pending_watches(&self) -> String {
        let status = self.watch.status();
        let pending: Vec<String> = status
            .watches
            .iter()
            .filter(|(_, s)| !s.synced || s.relisting)
            .map(|(w, s)| match &s.last_error {
                Some(e) => format!("{}: {e}", w.as_str()),
                None => w.as_str().to_string(),
            })
            .collect();
        pending.join("; ")
    }

    /// Watch state -> metrics and readiness.
    fn observe_status(&self) {
        let counts = self
            .model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .warning_counts();
        self.health.metrics.cluster_warnings(&counts);
        let status = self.watch.status();
        let node = status.get(Watched::Node);
        let missing = (node.synced && node.objects == 0).then(|| {
            format!(
                "Node {:?} not found in the API server: NodePorts are judged on this node's interface addresses only, not on the Node's InternalIP/ExternalIP; check --node-name or NODE_NAME (the DaemonSet sets it from spec.nodeName)",
                self.node
            )
        });
        if self.health.set_warning(missing.clone()) {
            match &missing {
                Some(w) => warn!("{w}"),
                None => info!(node = %self.node, "Node found"),
            }
        }
        for w in Watched::ALL {
            let s = status.get(w);
            self.health
                .metrics
                .watch_synced(w.as_str(), s.synced && !s.relisting);
        }
        let not_ready = self
            .gate
            .readiness(Watches::from(&status), || self.pending_watches());
        self.health.set_not_ready(not_ready);
    }

    /// May the agent delete now? Asks the trust gate ([`gate`]), and restarts the watches (a
    /// fresh list of everything) when it says a watch failed after its list: the view may have
    /// missed events while the watch was broken (API server restart, network), and an endpoint
    /// added meanwhile must not be judged gone.
    fn view_ok(&mut self) -> bool {
        match self.gate.check(Watches::from(&self.watch.status())) {
            Check::Delete => true,
            Check::Wait(_) => false,
            Check::Restart => {
                self.restart_watch("a watch failed after its list; re-listing everything");
                false
            }
        }
    }

    /// Replaces the watches with fresh ones (a full list of every resource).
    fn restart_watch(&mut self, why: &str) {
        warn!("{why}; deleting nothing until the new lists are complete");
        self.watch.restart();
        self.gate.restarted();
        self.changes.mark_changed();
        self.publish(false);
        self.observe_status();
    }

    /// Whether deleting is allowed now ([`Self::view_ok`]); lends or withdraws the event
    /// listener's view to match.
    fn take_trusted(&mut self) -> bool {
        let ok = self.view_ok();
        self.observe_status();
        self.publish(ok);
        ok
    }

    fn publish(&self, trusted: bool) {
        self.view.set_trusted(trusted);
    }

    async fn on_change(&mut self, arrival: Instant) {
        match self.gate.confirm(Watches::from(&self.watch.status())) {
            Confirm::NotHeld => {}
            // The breaker's fresh re-list: once complete, it is the confirmed view.
            Confirm::Waiting => {
                self.observe_status();
                return;
            }
            Confirm::Confirmed(keys) => {
                if self.take_trusted() {
                    info!(
                        "circuit breaker: the fresh re-list confirmed the view; running the pass on it"
                    );
                    if let Some(keys) = keys {
                        self.pass(Scope::Keys(keys), Trigger::Breaker, None).await;
                    }
                    self.pass(Scope::Full, Trigger::Breaker, None).await;
                    self.gate.take_missed_events(); // that full pass saw them
                    self.health.metrics.breaker(&[]);
                }
                return;
            }
        }
        if !self.take_trusted() {
            // The changes stay recorded in the model until the view is current again.
            debug!("view not current (re-listing or breaker held): deleting nothing");
            return;
        }
        if self.gate.take_missed_events() {
            info!(
                "the view is current again; new flows towards backends already gone arrived meanwhile: running a full pass"
            );
            self.pass(Scope::Full, Trigger::Resync, None).await;
        }
        let (changes, gained) = {
            let mut model = self.model.write().unwrap_or_else(|e| e.into_inner());
            (model.take_changes(), model.take_gained())
        };
        for (window, keys) in planned(changes, gained, &self.policy) {
            let wait = match window {
                Settle::Grace => self.cmd.grace,
                Settle::Vanished => self.cmd.move_grace.max(self.cmd.grace),
            };
            if wait.is_zero() {
                self.dispatch(keys, arrival).await;
                continue;
            }
            let due = arrival + wait;
            for (k, service) in keys {
                self.pending.entry(k).or_insert(Pending {
                    due,
                    arrival,
                    service,
                });
            }
        }
    }

    /// Watch-planned keys past their settle window (`--grace`): those that leave their Service
    /// without a serving backend wait for each other briefly (the circuit breaker judges a
    /// broken view's removals together even when their events arrive apart); the others are
    /// flushed now.
    async fn dispatch(&mut self, mut planned: Planned, arrival: Instant) {
        let emptying: Planned = {
            let model = self.model.read().unwrap_or_else(|e| e.into_inner());
            let map = model.map();
            let mut emptying = Planned::new();
            planned.retain(|k, s| {
                if map.has_serving_backend(s) {
                    return true;
                }
                emptying.insert(*k, s.clone());
                false
            });
            emptying
        };
        if !emptying.is_empty() {
            let now = Instant::now();
            let e = self.emptied.get_or_insert_with(|| Emptied {
                keys: Planned::new(),
                first: arrival,
                due: now,
            });
            e.keys.extend(emptying);
            e.first = e.first.min(arrival);
            e.due = (now + EMPTIED_SETTLE).min(e.first + EMPTIED_SETTLE_MAX);
        }
        if !planned.is_empty() {
            self.pass(Scope::Keys(planned), Trigger::Watch, Some(arrival))
                .await;
        }
    }

    /// The removals that empty their Service, gathered for EMPTIED_SETTLE: one pass, so the
    /// breaker sees them together. Each entry is judged on the newest model.
    async fn on_emptied_due(&mut self) {
        let Some(e) = self.emptied.take() else { return };
        if !self.take_trusted() {
            // Deleting is not allowed now; keep them for when it is.
            self.emptied = Some(Emptied {
                due: Instant::now() + EMPTIED_SETTLE_MAX,
                ..e
            });
            return;
        }
        self.pass(Scope::Keys(e.keys), Trigger::Watch, Some(e.first))
            .await;
    }

    async fn on_grace_due(&mut self) {
        // Keys falling due within COALESCE of each other go in one pass.
        let now = Instant::now();
        let due: Vec<FlushKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now + COALESCE)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        if !self.take_trusted() {
            // Deleting is not allowed now: they wait (the model keeps what changed).
            for k in due {
                if let Some(p) = self.pending.get_mut(&k) {
                    p.due = now + EMPTIED_SETTLE_MAX;
                }
            }
            return;
        }
        let mut keys = HashMap::new();
        let mut first = now;
        for k in due {
            if let Some(p) = self.pending.remove(&k) {
                first = first.min(p.arrival);
                keys.insert(k, p.service);
            }
        }
        // Each entry is judged again on the newest map: a backend that came back during the
        // settle window (an endpoint moving between slices, IP reuse) keeps its flows.
        self.dispatch(keys, first).await;
    }

    async fn on_events(&mut self, batch: Vec<EventMsg>) {
        let mut flows = Vec::new();
        let mut overrun = false;
        for m in batch {
            match m {
                EventMsg::Flow { tuple, zone, flow } => flows.push((tuple, zone, flow)),
                EventMsg::Overrun => overrun = true,
                EventMsg::Failed(e) => {
                    self.health.metrics.netlink_error(&e);
                    warn!(error = %e, "conntrack event socket failed; retrying (the periodic pass still runs)");
                }
            }
        }
        if overrun {
            self.health.metrics.event_overrun();
            warn!("conntrack events overran the socket buffer (ENOBUFS): running a full pass");
            if self.take_trusted() {
                self.pass(Scope::Full, Trigger::Overrun, None).await;
            }
            return; // the full pass covered these flows too
        }
        // The listener judged with the view it had; judge again with the newest, and only while
        // deleting is allowed at all (not re-listing, no watch error, breaker closed). Flows
        // that arrive while it is not are owed a full pass once it is.
        if flows.is_empty() {
            return;
        }
        if !self.take_trusted() {
            self.gate.missed_events();
            return;
        }
        let mut groups: Groups = HashMap::new();
        {
            let model = self.model.read().unwrap_or_else(|e| e.into_inner());
            for (tuple, zone, flow) in flows {
                if self.pending.contains_key(&key_of(&flow)) {
                    continue; // within its settle window
                }
                if let Some(g) = deletable(model.map(), &flow, &self.policy) {
                    groups.entry(g).or_default().push((tuple, zone));
                }
            }
        }
        if !groups.is_empty() {
            self.delete(groups, Trigger::Event, None).await;
        }
    }

    /// The breaker's hold is over: re-list everything from scratch.
    fn relist_for_breaker(&mut self) {
        if !self.gate.begin_relist() {
            return;
        }
        self.restart_watch(
            "circuit breaker: re-listing Services, EndpointSlices and the Node to confirm the view",
        );
    }

    /// Reads the table's size for the gauges; doubles as the netlink health check.
    async fn read_stats(&mut self) {
        match self.exec.stats().await {
            Some(Ok(s)) => {
                self.health
                    .metrics
                    .conntrack(u64::from(s.entries), s.max_entries.map_or(0, u64::from));
                self.netlink_ok(None);
            }
            Some(Err(e)) => {
                self.health.metrics.netlink_error(&e);
                warn!(error = %e, "reading conntrack stats");
                self.netlink_ok(Some(e.to_string()));
            }
            None => warn!("stats task failed"),
        }
    }

    /// Records whether the last ctnetlink request worked, for /readyz.
    fn netlink_ok(&mut self, error: Option<String>) {
        if self.gate.netlink(error) {
            self.observe_status();
        }
    }
}

#[cfg(test)]
mod tests;
