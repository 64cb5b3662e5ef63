//! One variant of the lab: a fresh world, a rolling update under traffic, the variant's fix,
//! and every request recorded.
//!
//! The rollout, as Kubernetes runs it (seconds are since the clients' first request):
//!
//! 1. warm-up (3 s): 2 old pods serve, the clients settle on them (each keeps its flow);
//! 2. 2 new pods start and join the EndpointSlice as ready; the programmer (kube-proxy) adds
//!    them to the rules after its sync delay;
//! 3. 1 s later the old pods are marked terminating (`ready: false, serving: true,
//!    terminating: true`): kube-proxy stops choosing them for new flows; existing flows drain;
//! 4. once that sync is in the kernel (+0.5 s), the old pods die (their network goes first:
//!    no FIN, no RST) and leave the EndpointSlice, as the kubelet and the EndpointSlice
//!    controller do after the grace period. The report measures every error window from here.
//! 5. traffic runs until `--duration`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ctnetlink::Filter;
use ctnetlink::codec::format::conntrack_line;
use kube_testserver::{ServerConfig, TestServer};
use serde::Serialize;
use tokio::runtime::Runtime;

use super::agent::{self, deletion_metrics, flush_lines};
use super::clients::{ClientKind, ClientLog, Clients, Dial, LbPool, Target};
use super::report::{Milestones, PodDeath, VariantReport, round3};
use super::world::objects::{
    self, CLUSTER_IP, DNS_PORT, DNS_TARGET_PORT, EndpointSpec, HTTP_NODE_PORT, HTTP_PORT,
    HTTP_TARGET_PORT,
};
use super::world::{
    AddFlush, ConntrackTimeouts, Kill, NatBackend, NodeId, Programmer, ProgrammerConfig, World,
    WorldConfig,
};
use ctreap::cluster::Proto;

/// How long the clients talk to the old pods before the rollout starts.
pub const WARMUP: Duration = Duration::from_secs(3);
/// How long new and old pods serve side by side before the old ones are marked terminating.
pub const OVERLAP: Duration = Duration::from_secs(1);
/// From the sync that stopped new flows to the old pods to their death (the grace period).
pub const GRACE: Duration = Duration::from_millis(500);
/// From a pod's death to its removal from the EndpointSlice: the kubelet reporting the pod
/// gone and the EndpointSlice controller publishing it. In a real cluster this is the
/// latency of those two components (typically a fraction of a second); every error window
/// of variant 4 includes it, as the agent can only act on what the API server says.
pub const ENDPOINT_REMOVAL_DELAY: Duration = Duration::from_millis(100);
/// Traffic the report needs after the old pods die, at least.
pub const AFTER_DEATH_MIN: Duration = Duration::from_secs(3);

pub const OLD_PODS: [&str; 2] = ["old-1", "old-2"];
pub const NEW_PODS: [&str; 2] = ["new-1", "new-2"];

/// The node each pod runs on: `-1` on node A (the clients' node), `-2` on node B, so that
/// each node loses one old pod and gets one new one.
pub fn node_of(pod: &str) -> NodeId {
    if pod.ends_with('2') {
        NodeId::B
    } else {
        NodeId::A
    }
}

/// The shortest `--duration` that fits the rollout with `sync_delay` (each of the two syncs
/// is waited for) and a few seconds of traffic after the old pods die.
pub fn min_duration(sync_delay: Duration) -> Duration {
    WARMUP + OVERLAP + GRACE + 2 * sync_delay + Duration::from_secs(1) + AFTER_DEATH_MIN
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// No fix: the outage.
    Nothing,
    /// The seed's preStop hook, `conntrack -D -d $POD_IP` inside each old pod.
    Prestop,
    /// The seed's option 4: reduced conntrack timeouts in the node namespace.
    Timeouts,
    /// ctreap's agent, `ctreap run`, watching the API server and the node's table.
    Ctreap,
    /// kube-proxy >= 1.32's own UDP conntrack reconciler, run by the rule programmer after
    /// every sync ([`kube_proxy_stale`](super::world::kube_proxy_stale)).
    KubeProxy,
    /// The seed's option 5: the application drains its keep-alive connections once the
    /// rules no longer send it new flows, before it dies.
    Drain,
    /// The seed's option 3: a headless Service. The clients resolve the ready pod IPs and
    /// talk to them without NAT; `udp` and `keepalive` cache their answer, `pooled` and
    /// `fresh` resolve again for every new connection.
    Headless,
    /// The second door ([`hostport`](super::hostport)): a hostPort DaemonSet pod replaced on
    /// the clients' node, the portmap plugin as it ships (UDP flush on ADD), no ctreap.
    Hostport,
    /// The same roll with `ctreap run` on the node.
    HostportCtreap,
    /// The same roll, the portmap plugin without its UDP flush on ADD (before 2020, and
    /// hostPort implementations without it), no ctreap.
    HostportNoflush,
    /// The same roll without the flush, `ctreap run` on the node.
    HostportNoflushCtreap,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Nothing,
        Variant::Prestop,
        Variant::Timeouts,
        Variant::Ctreap,
        Variant::KubeProxy,
        Variant::Drain,
        Variant::Headless,
        Variant::Hostport,
        Variant::HostportCtreap,
        Variant::HostportNoflush,
        Variant::HostportNoflushCtreap,
    ];

    /// For the hostPort roll: the portmap plugin's ADD flush, and whether ctreap runs.
    pub fn hostport(self) -> Option<(AddFlush, bool)> {
        match self {
            Variant::Hostport => Some((AddFlush::Udp, false)),
            Variant::HostportCtreap => Some((AddFlush::Udp, true)),
            Variant::HostportNoflush => Some((AddFlush::None, false)),
            Variant::HostportNoflushCtreap => Some((AddFlush::None, true)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Nothing => "nothing",
            Variant::Prestop => "prestop",
            Variant::Timeouts => "timeouts",
            Variant::Ctreap => "ctreap",
            Variant::KubeProxy => "kube-proxy",
            Variant::Drain => "drain",
            Variant::Headless => "headless",
            Variant::Hostport => "hostport",
            Variant::HostportCtreap => "hostport-ctreap",
            Variant::HostportNoflush => "hostport-noflush",
            Variant::HostportNoflushCtreap => "hostport-noflush-ctreap",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Variant::Nothing => "1. nothing: the outage",
            Variant::Prestop => "2. the seed's preStop: conntrack -D -d $POD_IP inside the pod",
            Variant::Timeouts => "3. the seed's option 4: reduced conntrack timeouts on the node",
            Variant::Ctreap => "4. ctreap run on the node",
            Variant::KubeProxy => "5. kube-proxy >= 1.32's own UDP conntrack cleanup, no ctreap",
            Variant::Drain => {
                "6. the seed's option 5: the app drains its keep-alive connections before it dies"
            }
            Variant::Headless => {
                "7. the seed's option 3: a headless Service, clients resolve pod IPs (no NAT)"
            }
            Variant::Hostport => {
                "8. hostPort roll, the portmap plugin as it ships (UDP flush on ADD), no ctreap"
            }
            Variant::HostportCtreap => {
                "9. hostPort roll, the portmap plugin as it ships, ctreap run on the node"
            }
            Variant::HostportNoflush => {
                "10. hostPort roll, portmap without its ADD flush (before 2020, others), no ctreap"
            }
            Variant::HostportNoflushCtreap => {
                "11. hostPort roll, portmap without its ADD flush, ctreap run on the node"
            }
        }
    }
}

impl FromStr for Variant {
    type Err = String;
    /// A variant by its name or its number (`1` to `11`, its place in [`Variant::ALL`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        Variant::ALL
            .iter()
            .enumerate()
            .find(|(i, v)| v.name() == s || (i + 1).to_string() == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
                format!("{s:?} is not a variant ({})", names.join(", "))
            })
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What every variant of a run shares.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: Vec<ClientKind>,
    /// The lb client's pool policy.
    pub lb_pool: LbPool,
    pub duration: Duration,
    pub sync_delay: Duration,
    pub nat: NatBackend,
    pub report_dir: PathBuf,
}

/// Progress lines on stderr, prefixed with the variant and the scenario time.
pub(crate) struct Progress<'a> {
    pub(crate) variant: Variant,
    pub(crate) epoch: Option<Instant>,
    pub(crate) plan: &'a Plan,
}

impl Progress<'_> {
    pub(crate) fn say(&self, msg: impl AsRef<str>) {
        match self.epoch {
            Some(e) => eprintln!(
                "[lab {:<8} {:>5.1}s] {}",
                self.variant.name(),
                e.elapsed().as_secs_f64(),
                msg.as_ref()
            ),
            None => eprintln!("[lab {:<8}  setup] {}", self.variant.name(), msg.as_ref()),
        }
    }

    pub(crate) fn status(&self, clients: &Clients) {
        let parts: Vec<String> = clients
            .counts()
            .into_iter()
            .map(|(k, c)| {
                format!(
                    "{k} {}/{} failed{}",
                    c.failed,
                    c.ok + c.failed,
                    if c.failing { " (FAILING)" } else { "" }
                )
            })
            .collect();
        self.say(parts.join(" · "));
    }

    /// Sleeps until `at` (scenario time), printing a status line every 5 s.
    pub(crate) fn wait_until(&self, at: Duration, clients: &Clients) {
        let epoch = self.epoch.expect("clients started");
        let _ = self.plan;
        loop {
            let now = epoch.elapsed();
            if now >= at {
                return;
            }
            let next_status = Duration::from_secs(now.as_secs() / 5 * 5 + 5);
            let wake = next_status.min(at);
            std::thread::sleep(wake - now);
            if wake == next_status && wake < at {
                self.status(clients);
            }
        }
    }
}

fn endpoints(
    world: &World,
    old: fn(&str, Ipv4Addr) -> EndpointSpec,
    with_new: bool,
    with_old: bool,
) -> Vec<EndpointSpec> {
    let mut v = Vec::new();
    if with_old {
        for p in OLD_PODS {
            if let Some(info) = world.pod(p) {
                v.push(old(p, info.ip));
            }
        }
    }
    if with_new {
        for p in NEW_PODS {
            if let Some(info) = world.pod(p) {
                v.push(EndpointSpec::ready(p, info.ip));
            }
        }
    }
    v
}

fn ips_of(world: &World, pods: &[&str]) -> Vec<Ipv4Addr> {
    pods.iter()
        .filter_map(|p| world.pod(p))
        .map(|p| p.ip)
        .collect()
}

/// Sleeps until `at` after `from` (not at all if that has passed).
pub(crate) fn sleep_until(from: Instant, at: Duration) {
    let now = from.elapsed();
    if at > now {
        std::thread::sleep(at - now);
    }
}

pub(crate) fn secs_since(epoch: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(epoch).as_secs_f64()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The node's conntrack entries whose DNAT target (reply source) is `ip`, as `conntrack -L`
/// lines.
pub(crate) fn node_entries_to(world: &World, ip: Ipv4Addr) -> Result<Vec<String>> {
    let filter = Filter {
        reply_src: Some(IpAddr::V4(ip)),
        ..Filter::default()
    };
    let now = now_secs();
    Ok(world
        .node_flows(&filter)
        .with_context(|| format!("dumping the node's conntrack entries to {ip}"))?
        .iter()
        .map(|e| conntrack_line(e, now))
        .collect())
}

/// A TCP entry of a closed connection (`TIME_WAIT`, `CLOSE`): harmless, it only waits out
/// its timer.
pub(crate) fn is_closed(line: &str) -> bool {
    line.contains(" TIME_WAIT ") || line.contains(" CLOSE ")
}

/// "what: N (udp 1, tcp ESTABLISHED 1, tcp TIME_WAIT 42)".
pub(crate) fn summarize_entries(what: &str, lines: &[String]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        let mut words = l.split_whitespace();
        let proto = words.next().unwrap_or("?");
        let key = if proto == "tcp" {
            // tcp 6 TIMEOUT STATE ...
            format!("tcp {}", words.nth(2).unwrap_or("?"))
        } else {
            proto.to_string()
        };
        *by.entry(key).or_insert(0) += 1;
    }
    let parts: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
    if parts.is_empty() {
        format!("{what}: 0")
    } else {
        format!("{what}: {} ({})", lines.len(), parts.join(", "))
    }
}

/// Removes the kubeconfig file when the variant ends.
pub(crate) struct TempFile(pub(crate) PathBuf);

impl TempFile {
    pub(crate) fn new(path: PathBuf) -> TempFile {
        super::track_temp_file(&path, true);
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        super::track_temp_file(&self.0, false);
    }
}

/// The result of one variant: its report and every client's samples.
pub struct VariantRun {
    pub report: VariantReport,
    pub logs: BTreeMap<ClientKind, ClientLog>,
}

/// Runs `variant` in a fresh world. An error means the variant could not run (the report
/// says why); a variant whose fix does not help is not an error.
pub fn run_variant(
    rt: &Runtime,
    plan: &Plan,
    variant: Variant,
) -> (VariantReport, BTreeMap<ClientKind, ClientLog>) {
    let mut report = VariantReport {
        variant: variant.name().into(),
        title: variant.title().into(),
        ..VariantReport::default()
    };
    let result = if variant.hostport().is_some() {
        super::hostport::run_inner(rt, plan, variant, &mut report)
    } else {
        run_inner(rt, plan, variant, &mut report)
    };
    // The agent (if any) is gone by now, on every path.
    super::set_agent_pid(None);
    match result {
        Ok(logs) => {
            report.ran = true;
            (report, logs)
        }
        Err(e) => {
            eprintln!("[lab {:<8}] could not run: {e:#}", variant.name());
            report.ran = false;
            report.error = Some(format!("{e:#}"));
            (report, BTreeMap::new())
        }
    }
}

/// The variant's control plane: a local API server, as kubectl and the agent talk to it,
/// and a kubeconfig for it (removed when the variant ends).
pub(crate) fn start_api(variant: Variant) -> Result<(TestServer, TempFile)> {
    let server = TestServer::try_start_background_with(ServerConfig::default())
        .map_err(|e| anyhow::anyhow!("starting the lab's API server: {e}"))?;
    let kubeconfig = TempFile::new(std::env::temp_dir().join(format!(
        "ctreap-lab-{}-{}.kubeconfig",
        std::process::id(),
        variant.name()
    )));
    server
        .write_kubeconfig(&kubeconfig.0)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", kubeconfig.0.display()))?;
    Ok((server, kubeconfig))
}

/// Starts the clients on `targets` and runs the warm-up ([`WARMUP`]): fails if a client could
/// not start or got no answer at all (the world is broken, not the variant). Returns the
/// clients and their epoch (scenario time 0), which `progress` now prints.
pub(crate) fn start_traffic(
    progress: &mut Progress,
    targets: &[(ClientKind, Target)],
) -> Result<(Clients, Instant)> {
    let epoch = Instant::now();
    let clients = Clients::start(targets, epoch);
    progress.epoch = Some(epoch);
    progress.say(format!(
        "clients started: {}",
        targets
            .iter()
            .map(|(k, _)| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    progress.wait_until(WARMUP, &clients);
    let errs = clients.setup_errors();
    if !errs.is_empty() {
        bail!("clients could not start: {}", errs.join("; "));
    }
    let silent: Vec<String> = clients
        .counts()
        .into_iter()
        .filter(|(_, c)| c.ok == 0)
        .map(|(k, _)| k.to_string())
        .collect();
    if !silent.is_empty() {
        bail!(
            "no answer at all during the warm-up for: {} (the world is broken, not the variant)",
            silent.join(", ")
        );
    }
    progress.status(&clients);
    Ok((clients, epoch))
}

/// The agent's log file for `variant`, in the report directory.
pub(crate) fn agent_log_name(variant: Variant) -> String {
    format!("agent-{}.log", variant.name())
}

/// Starts `ctreap run` on the world's node and waits for /readyz.
pub(crate) fn start_agent(
    world: &World,
    kubeconfig: &std::path::Path,
    progress: &Progress,
    report: &mut VariantReport,
) -> Result<agent::AgentProcess> {
    let name = agent_log_name(progress.variant);
    let log = progress.plan.report_dir.join(&name);
    let mut a = agent::start(world.node_netns(), kubeconfig, &log)?;
    super::set_agent_pid(Some(a.pid()));
    progress.say(format!("started the agent: {}", a.command()));
    agent::wait_ready(&mut a, Duration::from_secs(20))?;
    progress.say("agent ready (/readyz 200)");
    report.notes.push(format!("agent: {}", a.command()));
    report.files.push(name);
    Ok(a)
}

/// Reads the agent's deletion metrics, stops it, and notes its flush lines; an agent that
/// does not exit cleanly fails the variant.
pub(crate) fn stop_agent(
    a: agent::AgentProcess,
    progress: &Progress,
    report: &mut VariantReport,
) -> Result<()> {
    match agent::metrics(&a) {
        Ok(m) => report.notes.extend(
            deletion_metrics(&m)
                .into_iter()
                .map(|l| format!("agent metric: {l}")),
        ),
        Err(e) => report
            .notes
            .push(format!("agent metrics unavailable: {e:#}")),
    }
    let log = progress
        .plan
        .report_dir
        .join(agent_log_name(progress.variant));
    let status = agent::stop(a);
    super::set_agent_pid(None);
    let status = status?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for l in flush_lines(&text) {
        report.notes.push(format!("agent log: {l}"));
    }
    if !status.success() {
        bail!("the agent exited with {status}; see {}", log.display());
    }
    Ok(())
}

fn run_inner(
    rt: &Runtime,
    plan: &Plan,
    variant: Variant,
    report: &mut VariantReport,
) -> Result<BTreeMap<ClientKind, ClientLog>> {
    let mut progress = Progress {
        variant,
        epoch: None,
        plan,
    };
    progress.say(format!("{}: building the world", variant.title()));

    // The control plane: a local API server, as kubectl and the agent talk to it.
    let (server, kubeconfig) = start_api(variant)?;

    let mut world = World::create(WorldConfig {
        backend: plan.nat,
        second_node: true,
    })?;
    for p in OLD_PODS {
        world.add_pod_on(p, node_of(p))?;
    }
    // The headless Service's DNS answer: its ready endpoints, as cluster DNS serves them
    // (it watches EndpointSlices; no sync delay).
    let records = Arc::new(Mutex::new(ips_of(&world, &OLD_PODS)));
    let set_records = |pods: &[&str], world: &World| {
        *records.lock().unwrap_or_else(PoisonError::into_inner) = ips_of(world, pods);
    };
    let mut targets = BTreeMap::new();
    for &k in &plan.clients {
        let c = world.add_client(k.name())?;
        let dial = match variant {
            Variant::Headless => Dial::Headless {
                records: records.clone(),
                // The load balancer resolves for every new upstream connection, as ingress
                // controllers that talk to pod IPs do.
                cache: matches!(k, ClientKind::Udp | ClientKind::Keepalive),
                udp_port: DNS_TARGET_PORT,
                http_port: HTTP_TARGET_PORT,
            },
            _ => Dial::Service,
        };
        // The load balancer is outside the cluster: it reaches the Service on the node's
        // address and its NodePort, as in the seed.
        let http = match k {
            ClientKind::Lb => SocketAddr::from((c.gateway, HTTP_NODE_PORT)),
            _ => SocketAddr::from((CLUSTER_IP, HTTP_PORT)),
        };
        targets.insert(
            k,
            Target {
                ns: c.netns_handle(),
                udp: SocketAddr::from((CLUSTER_IP, DNS_PORT)),
                http,
                lb_pool: plan.lb_pool,
                dial,
            },
        );
    }
    if variant == Variant::Headless {
        report.notes.push(
            "headless: udp and keepalive resolve once and keep the answer; pooled and fresh resolve again for every new connection (udp: after a timeout)".into(),
        );
    }
    report.old_pods = OLD_PODS.iter().map(|s| s.to_string()).collect();
    report.new_pods = NEW_PODS.iter().map(|s| s.to_string()).collect();
    objects::apply_service(&server)?;
    objects::apply_node(&server, &world.node_addresses())?;
    objects::apply_endpoints(
        &server,
        &endpoints(&world, EndpointSpec::ready, false, true),
    )?;
    let mut pcfg = ProgrammerConfig::new(&kubeconfig.0, world.nat_target());
    pcfg.sync_delay = plan.sync_delay;
    if variant == Variant::KubeProxy {
        pcfg.conntrack_cleanup = Some(world.node_netns_handle());
    }
    let _rt_guard = rt.enter();
    let programmer = rt.block_on(Programmer::start(pcfg))?;
    progress.say(format!(
        "node A {} ({} NAT, the clients, the agent), node B {}; pods {}, Service {}:{}/udp and :{}/tcp",
        world.node_netns(),
        world.backend(),
        world.node_b_netns().unwrap_or("-"),
        OLD_PODS
            .iter()
            .map(|p| {
                let ip = world.pod(p).map(|i| i.ip.to_string()).unwrap_or_default();
                format!("{p} {ip} on {}", node_of(p))
            })
            .collect::<Vec<_>>()
            .join(", "),
        CLUSTER_IP,
        DNS_PORT,
        HTTP_PORT
    ));

    if variant == Variant::Timeouts {
        let changes = world.set_conntrack_timeouts(&ConntrackTimeouts::SEED_OPTION_4)?;
        for c in changes {
            let note = format!(
                "sysctl -w {}={} (was {}) in the node namespace",
                c.key, c.after, c.before
            );
            progress.say(&note);
            report.notes.push(note);
        }
    }

    let mut agent = None;
    if variant == Variant::Ctreap {
        agent = Some(start_agent(&world, &kubeconfig.0, &progress, report)?);
    }

    // Traffic.
    let (clients, epoch) = start_traffic(&mut progress, &targets.into_iter().collect::<Vec<_>>())?;

    // 2. New pods.
    for p in NEW_PODS {
        world.add_pod_on(p, node_of(p))?;
    }
    objects::apply_endpoints(&server, &endpoints(&world, EndpointSpec::ready, true, true))?;
    set_records(&[OLD_PODS, NEW_PODS].concat(), &world);
    let m_new = epoch.elapsed().as_secs_f64();
    progress.say(format!(
        "rollout: {} started and added to the EndpointSlice",
        NEW_PODS.join(", ")
    ));
    let wait = plan.sync_delay + Duration::from_secs(5);
    let sync = rt.block_on(programmer.wait_for(
        |r| {
            r.endpoints_of(Proto::Udp, DNS_PORT)
                .is_some_and(|e| e.len() == 4)
        },
        wait,
    ))?;
    progress.say(format!(
        "kube-proxy stand-in synced: 4 endpoints ({:.2}s after the change)",
        sync.applied
            .saturating_duration_since(sync.seen)
            .as_secs_f64()
    ));
    std::thread::sleep(OVERLAP);

    // 3. Old pods terminating.
    objects::apply_endpoints(
        &server,
        &endpoints(&world, EndpointSpec::draining, true, true),
    )?;
    set_records(&NEW_PODS, &world);
    let m_term = epoch.elapsed().as_secs_f64();
    progress.say(format!(
        "rollout: {} terminating (serving, not ready)",
        OLD_PODS.join(", ")
    ));
    let old_ips = ips_of(&world, &OLD_PODS);
    rt.block_on(programmer.wait_for(
        |r| {
            r.endpoints_of(Proto::Udp, DNS_PORT)
                .is_some_and(|e| e.len() == 2 && e.iter().all(|a| !old_ips.contains(a.ip())))
        },
        wait,
    ))?;
    progress.say("kube-proxy stand-in synced: new flows go to the new pods only");
    // The seed's option 5: the application stopped reporting healthy when it was told to
    // terminate and waited for the load balancer (here: until the rules no longer send it new
    // flows); now it closes its keep-alive connections, and its clients reconnect to the
    // rules of now.
    if variant == Variant::Drain {
        for p in OLD_PODS {
            world.drain_pod(p)?;
        }
        let note = format!(
            "{} drain their keep-alive connections at t={:.2}s, after the sync that took them out of the rules",
            OLD_PODS.join(", "),
            epoch.elapsed().as_secs_f64()
        );
        progress.say(&note);
        report.notes.push(note);
    }
    std::thread::sleep(GRACE);

    // The preStop hooks run before the pods die.
    if variant == Variant::Prestop {
        for (p, ip) in OLD_PODS.iter().zip(&old_ips) {
            let before = node_entries_to(&world, *ip)?;
            let out = world.seed_prestop(p)?;
            let after = node_entries_to(&world, *ip)?;
            let said = format!("{}{}", out.stdout.trim(), out.stderr.trim());
            let note = format!(
                "preStop of {p}: `{}` exit {} said {:?}; node entries to {ip}: {} before, {} after",
                out.command,
                out.exit_code.map_or("signal".into(), |c| c.to_string()),
                said,
                before.len(),
                after.len()
            );
            progress.say(&note);
            report.notes.push(note);
            report.notes.push(summarize_entries(
                &format!("  node entries to {ip} after the preStop"),
                &after,
            ));
            for l in after.iter().filter(|l| !is_closed(l)).take(6) {
                report.notes.push(format!("    {l}"));
            }
        }
    }

    // 4. The old pods die, one after the other; each leaves the EndpointSlice
    // ENDPOINT_REMOVAL_DELAY after its death, as the kubelet reports it gone and the
    // EndpointSlice controller drops it. A separate thread publishes the removals so that
    // the time kill_pod takes to reap a pod's threads after its network is cut does not
    // delay them.
    let new_ready = endpoints(&world, EndpointSpec::ready, true, false);
    let old_draining = endpoints(&world, EndpointSpec::draining, false, true);
    let m_dead = epoch.elapsed().as_secs_f64();
    let mut deaths = Vec::new();
    let removed_at: Vec<f64> = std::thread::scope(|scope| -> Result<Vec<f64>> {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
        let server = &server;
        let (old_draining, new_ready) = (&old_draining, &new_ready);
        let remover = scope.spawn(move || -> Result<Vec<f64>> {
            let mut times = Vec::new();
            for (i, died) in rx {
                sleep_until(died, ENDPOINT_REMOVAL_DELAY);
                let mut eps: Vec<EndpointSpec> = old_draining[i + 1..].to_vec();
                eps.extend(new_ready.iter().cloned());
                objects::apply_endpoints(server, &eps)?;
                times.push(epoch.elapsed().as_secs_f64());
            }
            Ok(times)
        });
        let killed = (|| -> Result<()> {
            for (i, p) in OLD_PODS.iter().enumerate() {
                let died = Instant::now();
                // kill_pod cuts the pod's network first, then reaps its servers.
                let _ = tx.send((i, died));
                let k = world.kill_pod(p, Kill::Abrupt)?;
                deaths.push((p.to_string(), k.ip, secs_since(epoch, died)));
                report.notes.push(format!(
                    "killed {} ({}, node {}) at {:.3}s: {} open connections, reaped in {} ms",
                    k.pod,
                    k.ip,
                    node_of(p),
                    secs_since(epoch, died),
                    k.connections_open,
                    k.elapsed.as_millis()
                ));
            }
            Ok(())
        })();
        drop(tx);
        let times = remover
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        killed?;
        times
    })?;
    report.pod_deaths = deaths
        .into_iter()
        .zip(removed_at.iter().chain(std::iter::repeat(&f64::NAN)))
        .map(|((pod, ip, died), removed)| PodDeath {
            pod,
            ip: ip.to_string(),
            died: round3(died),
            removed_from_slice: round3(*removed),
        })
        .collect();
    let m_removed = removed_at.last().copied().unwrap_or(m_dead);
    progress.say(format!(
        "rollout: {} dead, each removed from the EndpointSlice {} ms after its death",
        OLD_PODS.join(", "),
        ENDPOINT_REMOVAL_DELAY.as_millis()
    ));

    // 5. Traffic until the end.
    progress.wait_until(plan.duration, &clients);
    let m_end = epoch.elapsed().as_secs_f64();
    let logs = clients.stop();
    progress.say("clients stopped");

    for ip in &old_ips {
        let left = node_entries_to(&world, *ip)?;
        report.notes.push(summarize_entries(
            &format!("at the end, node conntrack entries to dead {ip}"),
            &left,
        ));
        // Closed connections (TIME_WAIT, CLOSE) are harmless; the live ones are the outage.
        for l in left.iter().filter(|l| !is_closed(l)).take(6) {
            report.notes.push(format!("  {l}"));
        }
    }

    if let Some(a) = agent.take() {
        stop_agent(a, &progress, report)?;
    }

    if variant == Variant::KubeProxy {
        for sync in programmer.syncs() {
            let at = secs_since(epoch, sync.applied);
            match &sync.conntrack_cleared {
                Some(Ok(n)) => report.notes.push(format!(
                    "kube-proxy conntrack reconciler after sync {} (t={at:.2}s): UDP entries deleted: {n}",
                    sync.seq
                )),
                Some(Err(e)) => bail!(
                    "the emulated kube-proxy conntrack reconciler failed after sync {}: {e}",
                    sync.seq
                ),
                None => {}
            }
        }
    }
    programmer.stop();
    world.cleanup()?;
    drop(server);

    report.measure(
        Milestones {
            new_pods_added: m_new,
            old_pods_terminating: m_term,
            old_pods_removed: m_dead,
            slice_updated: m_removed,
            end: m_end,
        },
        &logs,
    );
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_by_name_and_number_and_serialize_as_named() {
        for (i, v) in Variant::ALL.iter().enumerate() {
            assert_eq!(v.name().parse::<Variant>(), Ok(*v));
            assert_eq!((i + 1).to_string().parse::<Variant>(), Ok(*v));
            assert_eq!(format!(" {} ", v.name().to_uppercase()).parse(), Ok(*v));
            assert_eq!(
                serde_json::to_value(v).expect("serializes"),
                serde_json::json!(v.name())
            );
        }
        assert_eq!(
            "12".parse::<Variant>(),
            Err("\"12\" is not a variant (nothing, prestop, timeouts, ctreap, kube-proxy, drain, headless, hostport, hostport-ctreap, hostport-noflush, hostport-noflush-ctreap)".to_string())
        );
    }
}
