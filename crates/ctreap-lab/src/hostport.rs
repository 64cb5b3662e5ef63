//! Variants 8 to 11: the outage's second door, a hostPort. A DaemonSet pod (`statsd`:
//! 8125/UDP and 80/TCP on every node address, DNATed by the CNI portmap plugin to the pod) is
//! replaced on the clients' node, the way a DaemonSet rolls it, while clients that keep
//! their source port talk to the node's address:hostPort. No Service and no kube-proxy: the
//! plugin's DNAT ([`Portmap`]) is the only NAT.
//!
//! The roll, as the kubelet, the DaemonSet controller and the plugin run it (seconds are
//! since the clients' first request):
//!
//! 1. warm-up (3 s): the old pod serves; the clients settle on it;
//! 2. the DaemonSet controller deletes the old pod: terminating (`deletionTimestamp`), still
//!    running, its rule in place ([`TERMINATION`]);
//! 3. its containers stop (the network first: no FIN, no RST) and its sandbox goes
//!    ([`DEL_AFTER_DEATH`]): the plugin's DEL removes its rules and leaves conntrack alone.
//!    The kubelet confirms the deletion and the pod leaves the API
//!    [`ENDPOINT_REMOVAL_DELAY`] after its death. The report measures every error window
//!    from the death;
//! 4. the DaemonSet controller creates the new pod (bound to the node, pending: a hostPort
//!    cannot be held twice, so it waits for the old pod, as `maxSurge` cannot help here);
//!    [`SANDBOX_DELAY`] after the old pod left the API, its sandbox comes up: the plugin's
//!    ADD writes its rules and, as it ships, deletes the UDP entries to its UDP hostPort
//!    ([`AddFlush`]); the kubelet reports its IP [`POD_IP_DELAY`] later;
//! 5. traffic runs until `--duration`.
//!
//! Between DEL and ADD nothing can answer: UDP sent then meets no rule, reaches the node
//! itself (port unreachable) and makes an untranslated entry that its client keeps alive.
//! Whether the client reaches the new pod after the ADD depends on who deletes the entries:
//! the plugin's ADD flush (both kinds), or ctreap (the old pod's entry once it leaves the
//! API, the untranslated one once the new pod's IP is reported).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ctnetlink::Filter;
use tokio::runtime::Runtime;

use super::clients::{ClientKind, ClientLog, Dial, Target};
use super::report::{Milestones, PodDeath, VariantReport, round3};
use super::scenario::{
    ENDPOINT_REMOVAL_DELAY, Plan, Progress, Variant, is_closed, node_entries_to, secs_since,
    sleep_until, start_agent, start_api, start_traffic, stop_agent, summarize_entries,
};
use super::world::objects::{
    self, DNS_TARGET_PORT, HOSTPORT_TCP, HOSTPORT_UDP, HTTP_TARGET_PORT, PodPhase,
};
use super::world::{AddFlush, HostPortMapping, Kill, NodeId, Portmap, World, WorldConfig};
use ctreap::cluster::Proto;

/// The old pod terminating and still running, before its containers stop.
pub const TERMINATION: Duration = Duration::from_secs(1);
/// From the old pod's death (its containers stopped) to the plugin's DEL (its sandbox torn
/// down).
pub const DEL_AFTER_DEATH: Duration = Duration::from_millis(20);
/// From the old pod leaving the API to the new pod's ADD: the DaemonSet controller creating
/// it, the scheduler binding it, the kubelet starting its sandbox.
pub const SANDBOX_DELAY: Duration = Duration::from_secs(1);
/// From the new pod's ADD to its IP in the API (the kubelet's status update).
pub const POD_IP_DELAY: Duration = Duration::from_millis(100);

pub const OLD_POD: &str = "statsd-old";
pub const NEW_POD: &str = "statsd-new";

/// The DaemonSet's hostPorts, as its pod spec declares them.
pub const MAPPINGS: [HostPortMapping; 2] = [
    HostPortMapping {
        host_port: HOSTPORT_UDP,
        container_port: DNS_TARGET_PORT,
        proto: Proto::Udp,
    },
    HostPortMapping {
        host_port: HOSTPORT_TCP,
        container_port: HTTP_TARGET_PORT,
        proto: Proto::Tcp,
    },
];

/// How many of the node's UDP entries to the hostPort met no DNAT (their reply comes from the
/// node itself).
fn untranslated(world: &World) -> Result<usize> {
    let filter = Filter {
        family: Some(libc::AF_INET as u8),
        proto: Some(libc::IPPROTO_UDP as u8),
        orig_dst_port: Some(HOSTPORT_UDP),
        ..Filter::default()
    };
    Ok(world
        .node_flows(&filter)?
        .iter()
        .filter(|e| e.reply.src == e.orig.dst)
        .count())
}

/// Runs one of the hostPort variants in a fresh world (see the module documentation).
pub(crate) fn run_inner(
    rt: &Runtime,
    plan: &Plan,
    variant: Variant,
    report: &mut VariantReport,
) -> Result<BTreeMap<ClientKind, ClientLog>> {
    let Some((flush, with_agent)) = variant.hostport() else {
        bail!("{variant} is not a hostPort variant");
    };
    let mut progress = Progress {
        variant,
        epoch: None,
        plan,
    };
    progress.say(format!("{}: building the world", variant.title()));
    let kinds: Vec<ClientKind> = plan
        .clients
        .iter()
        .copied()
        .filter(|k| *k != ClientKind::Lb)
        .collect();
    if kinds.is_empty() {
        bail!("the hostPort roll needs a client other than lb (udp, keepalive, pooled, fresh)");
    }
    let (server, kubeconfig) = start_api(variant)?;
    let mut world = World::create(WorldConfig {
        backend: plan.nat,
        second_node: false,
    })?;
    let mut targets = Vec::new();
    for &k in &kinds {
        let c = world.add_client(k.name())?;
        // The clients send to the node's address on their link, where the hostPort answers.
        targets.push((
            k,
            Target {
                ns: c.netns_handle(),
                udp: SocketAddr::from((c.gateway, HOSTPORT_UDP)),
                http: SocketAddr::from((c.gateway, HOSTPORT_TCP)),
                lb_pool: plan.lb_pool,
                dial: Dial::Service,
            },
        ));
    }
    objects::apply_node(&server, &world.node_addresses())?;
    let mut portmap = Portmap::new(world.node_netns(), plan.nat, flush)?;
    let old = world.add_pod_on(OLD_POD, NodeId::A)?;
    portmap.add(OLD_POD, old.ip, &MAPPINGS)?;
    objects::apply_hostport_pod(&server, OLD_POD, Some(old.ip), PodPhase::Running)?;
    report.old_pods = vec![OLD_POD.into()];
    report.new_pods = vec![NEW_POD.into()];
    report.notes.push(format!(
        "portmap stand-in ({} backend): {}",
        plan.nat,
        match flush {
            AddFlush::Udp => format!("ADD writes the rules, then deletes the UDP entries to {HOSTPORT_UDP} (as the plugin ships since 2020); DEL removes the rules"),
            AddFlush::None => "ADD writes the rules and flushes nothing (the plugin before 2020); DEL removes the rules".into(),
        }
    ));
    progress.say(format!(
        "node {} ({} portmap DNAT {HOSTPORT_UDP}/udp and {HOSTPORT_TCP}/tcp on every node address), pod {OLD_POD} {}",
        world.node_netns(),
        plan.nat,
        old.ip
    ));

    let _rt_guard = rt.enter();
    let mut agent = None;
    if with_agent {
        agent = Some(start_agent(&world, &kubeconfig.0, &progress, report)?);
    }

    let (clients, epoch) = start_traffic(&mut progress, &targets)?;

    // 2. The DaemonSet controller deletes the old pod: terminating, still running.
    objects::apply_hostport_pod(&server, OLD_POD, Some(old.ip), PodPhase::Terminating)?;
    let m_term = epoch.elapsed().as_secs_f64();
    progress.say(format!("roll: {OLD_POD} terminating (still running)"));
    progress.wait_until(epoch.elapsed() + TERMINATION, &clients);

    // 3. Its containers stop and its sandbox goes (DEL, DEL_AFTER_DEATH later); it leaves the
    // API ENDPOINT_REMOVAL_DELAY after its death. A thread of their own, so that the time
    // kill_pod takes to reap the pod's threads after its network is cut delays neither.
    let died = Instant::now();
    let (killed, removed) = std::thread::scope(|scope| {
        let (server, portmap) = (&server, &mut portmap);
        let sandbox = scope.spawn(move || -> Result<Instant> {
            sleep_until(died, DEL_AFTER_DEATH);
            portmap.del(OLD_POD)?;
            sleep_until(died, ENDPOINT_REMOVAL_DELAY);
            objects::delete_pod(server, OLD_POD)?;
            Ok(Instant::now())
        });
        let killed = world.kill_pod(OLD_POD, Kill::Abrupt);
        let removed = sandbox
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (killed, removed)
    });
    let (k, removed) = (killed?, removed?);
    let m_dead = secs_since(epoch, died);
    let m_removed = secs_since(epoch, removed);
    report.notes.push(format!(
        "killed {OLD_POD} ({}) at {m_dead:.3}s: {} open connections, reaped in {} ms; the plugin's DEL {} ms later, gone from the API at {m_removed:.3}s",
        k.ip,
        k.connections_open,
        k.elapsed.as_millis(),
        DEL_AFTER_DEATH.as_millis()
    ));
    progress.say(format!(
        "roll: {OLD_POD} dead, its DEL ran, gone from the API {:.0} ms after its death",
        (m_removed - m_dead) * 1000.0
    ));

    // 4. The new pod: bound and pending at once, its sandbox (ADD) after SANDBOX_DELAY, its
    // IP in the API after POD_IP_DELAY.
    objects::apply_hostport_pod(&server, NEW_POD, None, PodPhase::Pending)?;
    sleep_until(removed, SANDBOX_DELAY);
    let new = world.add_pod_on(NEW_POD, NodeId::A)?;
    let add = portmap.add(NEW_POD, new.ip, &MAPPINGS)?;
    let added = Instant::now();
    let m_add = secs_since(epoch, added);
    let note = format!(
        "{NEW_POD} ({}) sandbox up and the plugin's ADD at {m_add:.3}s: its rules, {} UDP entries to {HOSTPORT_UDP} flushed",
        new.ip, add.flushed
    );
    progress.say(&note);
    report.notes.push(note);
    sleep_until(added, POD_IP_DELAY);
    objects::apply_hostport_pod(&server, NEW_POD, Some(new.ip), PodPhase::Running)?;
    let m_ip = epoch.elapsed().as_secs_f64();
    report.notes.push(format!(
        "{NEW_POD}'s IP in the API at {m_ip:.3}s ({} ms after its ADD)",
        POD_IP_DELAY.as_millis()
    ));

    // 5. Traffic until the end.
    progress.wait_until(plan.duration, &clients);
    let m_end = epoch.elapsed().as_secs_f64();
    let logs = clients.stop();
    progress.say("clients stopped");

    let left = node_entries_to(&world, old.ip)?;
    report.notes.push(summarize_entries(
        &format!("at the end, node conntrack entries to dead {}", old.ip),
        &left,
    ));
    for l in left.iter().filter(|l| !is_closed(l)).take(6) {
        report.notes.push(format!("  {l}"));
    }
    report.notes.push(format!(
        "at the end, untranslated UDP entries to the hostPort (reply from the node itself): {}",
        untranslated(&world)?
    ));
    if let Some(a) = agent.take() {
        stop_agent(a, &progress, report)?;
    }
    world.cleanup()?;
    drop(server);

    report.pod_deaths = vec![PodDeath {
        pod: OLD_POD.into(),
        ip: old.ip.to_string(),
        died: round3(m_dead),
        removed_from_slice: round3(m_removed),
    }];
    report.measure(
        Milestones {
            new_pods_added: m_add,
            old_pods_terminating: m_term,
            old_pods_removed: m_dead,
            slice_updated: m_removed,
            end: m_end,
        },
        &logs,
    );
    Ok(logs)
}
