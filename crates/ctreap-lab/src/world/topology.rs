//! The namespaces, links and addresses of one lab run, and the pods' lifecycles.
//!
//! Every step is an `ip` command (`ip netns add`, `ip -n NS link add ... type veth peer name
//! eth0 netns POD`, ...), so a failing step names the command to retry by hand. Veths are
//! created directly between two lab namespaces: no link ever exists in the host's namespace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ctnetlink::{Conntrack, Entry, Filter, Netns};
use serde::Serialize;

use super::cleanup::{self, Registration};
use super::nat::{NatBackend, NatRules, NatTarget};
use super::pod::{Kill, KillReport, PodServers, PodStats};
use super::seed::{self, ConntrackTimeouts, PreStopOutcome, SysctlChange};
use super::{Error, cmd};

/// The node's address on the pods' bridge: every pod's default gateway.
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The bridge in the node namespace.
pub const BRIDGE: &str = "br0";
/// The Service range routed on the node (it holds [`CLUSTER_IP`](super::objects::CLUSTER_IP)).
pub const SERVICE_RANGE: &str = "198.19.0.0/16";
/// The pods' subnet prefix length (192.0.2.0/24, RFC 5737 TEST-NET-1).
const POD_PREFIX_LEN: u8 = 24;
/// First and last pod host numbers: 192.0.2.10 .. 192.0.2.250. IPs are never reused in a run,
/// as a rolling update gives new pods new IPs.
const FIRST_POD_HOST: u8 = 10;
const LAST_POD_HOST: u8 = 250;
/// The second node's address on its pods' bridge, and their subnet (RFC 5737 TEST-NET-3).
pub const BRIDGE_B_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The link between the nodes (RFC 5737 TEST-NET-2): node A's end and node B's end, /30.
pub const NODE_A_LINK_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const NODE_B_LINK_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Client `i` (1..=250) gets 198.18.i.2/24, the node 198.18.i.1/24 on its side (RFC 2544).
const MAX_CLIENTS: u8 = 250;
/// Pod and client names: `[a-z0-9-]`, at most this long, so `p-NAME`/`c-NAME` fit IFNAMSIZ
/// (15 characters).
pub const MAX_NAME_LEN: usize = 13;

/// How the world is built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorldConfig {
    pub backend: NatBackend,
    /// A second node, `ctl-PID-N-node-b`, with pods of its own on 203.0.113.0/24, routed to
    /// and from the first over a link between the two, as a CNI routes pod subnets between
    /// nodes. Clients, the NAT and the agent stay on the first node: it is where the DNAT
    /// happens for every flow of the lab, whichever node the pod is on.
    pub second_node: bool,
}

/// Which node a pod runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeId {
    /// The node the clients, the NAT and the agent are on.
    #[default]
    A,
    /// The second node ([`WorldConfig::second_node`]).
    B,
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeId::A => "A",
            NodeId::B => "B",
        })
    }
}

/// A pod of the world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub name: String,
    /// Its namespace (`ip netns exec NETNS ...`).
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The node-side end of its veth, a port of [`BRIDGE`] (`p-NAME`).
    pub node_link: String,
    /// The node it runs on.
    pub node: NodeId,
    /// False once killed.
    pub alive: bool,
}

impl PodInfo {
    pub fn netns_handle(&self) -> Netns {
        Netns::named(&self.netns)
    }
}

/// A client of the world: a namespace routed through the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    pub name: String,
    /// Its namespace: create client sockets inside it with
    /// `client.netns_handle().run(|| UdpSocket::bind(..))`.
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The node's address on this client's link: its default gateway, and where the Service's
    /// NodePorts answer for it.
    pub gateway: Ipv4Addr,
    /// The node-side end of its veth (`c-NAME`).
    pub node_link: String,
}

impl ClientInfo {
    pub fn netns_handle(&self) -> Netns {
        Netns::named(&self.netns)
    }
}

struct PodSlot {
    info: PodInfo,
    servers: Option<PodServers>,
    /// The servers' counters when they stopped.
    final_stats: PodStats,
    registration: Option<Registration>,
}

/// One run's mini-cluster: a node namespace with a bridge, pods and clients. Dropping it (on
/// success, on error, while a panic unwinds) stops the pods' servers and deletes every
/// namespace it created, which removes every link, address, rule and conntrack entry in them.
pub struct World {
    prefix: String,
    node: String,
    backend: NatBackend,
    pods: BTreeMap<String, PodSlot>,
    clients: BTreeMap<String, (ClientInfo, Registration)>,
    next_pod_host: u8,
    next_pod_host_b: u8,
    next_client: u8,
    node_registration: Option<Registration>,
    /// The second node's namespace, if built.
    node_b: Option<(String, Registration)>,
}

/// Worlds created by this process so far: tests build several in one process.
static WORLDS: AtomicU32 = AtomicU32::new(0);

fn valid_name(kind: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{kind} name {name:?}: use 1 to {MAX_NAME_LEN} characters of [a-z0-9-]"
        )))
    }
}

impl World {
    /// Builds the node namespace `ctl-PID-N-node`: loopback up, bridge [`BRIDGE`] with
    /// [`BRIDGE_IP`]/24, `net.ipv4.ip_forward=1`, and an empty NAT rule set. Call
    /// [`check_prerequisites`](super::check_prerequisites) first.
    pub fn create(config: WorldConfig) -> Result<World, Error> {
        let seq = WORLDS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{}{}-{seq}", cleanup::ROOT_PREFIX, std::process::id());
        let node = format!("{prefix}-node");
        // Registered before it exists: a signal in the middle still removes it.
        let registration = cleanup::register(&node);
        cmd::ip(None, &["netns", "add", &node])?;
        let mut world = World {
            prefix,
            node: node.clone(),
            backend: config.backend,
            pods: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_pod_host: FIRST_POD_HOST,
            next_pod_host_b: FIRST_POD_HOST,
            next_client: 1,
            node_registration: Some(registration),
            node_b: None,
        };
        // From here on, `world` going out of scope on `?` removes what exists.
        let n = Some(node.as_str());
        cmd::ip(n, &["link", "set", "lo", "up"])?;
        cmd::ip(n, &["link", "add", BRIDGE, "type", "bridge"])?;
        let bridge_addr = format!("{BRIDGE_IP}/{POD_PREFIX_LEN}");
        cmd::ip(n, &["addr", "add", &bridge_addr, "dev", BRIDGE])?;
        cmd::ip(n, &["link", "set", BRIDGE, "up"])?;
        // In a real cluster a ClusterIP without endpoints reaches the filter hooks through the
        // node's default route and is rejected there (kube-proxy's no-endpoints REJECT); the
        // lab node has no default route, so the Service range gets a route of its own (onto
        // the bridge: nothing that is not DNATed or rejected is ever sent there).
        cmd::ip(n, &["route", "add", SERVICE_RANGE, "dev", BRIDGE])?;
        cmd::in_ns(&node, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        world.nat_target().apply(&NatRules::default())?;
        world.next_client = 1;
        if config.second_node {
            world.add_second_node()?;
        }
        Ok(world)
    }

    /// Node B: its namespace, its pods' bridge, and the routes between the nodes' pod subnets
    /// (node B's default route goes to node A, where the clients' subnets are).
    fn add_second_node(&mut self) -> Result<(), Error> {
        let b = format!("{}-node-b", self.prefix);
        let registration = cleanup::register(&b);
        cmd::ip(None, &["netns", "add", &b])?;
        self.node_b = Some((b.clone(), registration));
        let (na, nb) = (Some(self.node.as_str()), Some(b.as_str()));
        cmd::ip(nb, &["link", "set", "lo", "up"])?;
        cmd::ip(nb, &["link", "add", BRIDGE, "type", "bridge"])?;
        let bridge_addr = format!("{BRIDGE_B_IP}/{POD_PREFIX_LEN}");
        cmd::ip(nb, &["addr", "add", &bridge_addr, "dev", BRIDGE])?;
        cmd::ip(nb, &["link", "set", BRIDGE, "up"])?;
        cmd::in_ns(&b, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        cmd::ip(
            na,
            &[
                "link", "add", "n-b", "type", "veth", "peer", "name", "n-a", "netns", &b,
            ],
        )?;
        cmd::ip(
            na,
            &["addr", "add", &format!("{NODE_A_LINK_IP}/30"), "dev", "n-b"],
        )?;
        cmd::ip(na, &["link", "set", "n-b", "up"])?;
        cmd::ip(
            nb,
            &["addr", "add", &format!("{NODE_B_LINK_IP}/30"), "dev", "n-a"],
        )?;
        cmd::ip(nb, &["link", "set", "n-a", "up"])?;
        let pods_b = format!(
            "{}/{POD_PREFIX_LEN}",
            Ipv4Addr::from(u32::from(BRIDGE_B_IP) & !0xff)
        );
        cmd::ip(
            na,
            &["route", "add", &pods_b, "via", &NODE_B_LINK_IP.to_string()],
        )?;
        cmd::ip(
            nb,
            &[
                "route",
                "add",
                "default",
                "via",
                &NODE_A_LINK_IP.to_string(),
            ],
        )?;
        Ok(())
    }

    /// The namespace of node `id`.
    fn node_ns(&self, id: NodeId) -> Result<&str, Error> {
        match (id, &self.node_b) {
            (NodeId::A, _) => Ok(&self.node),
            (NodeId::B, Some((b, _))) => Ok(b),
            (NodeId::B, None) => Err(Error::Invalid(
                "this world has one node (WorldConfig::second_node is false)".into(),
            )),
        }
    }

    /// The second node's namespace, if any.
    pub fn node_b_netns(&self) -> Option<&str> {
        self.node_b.as_ref().map(|(b, _)| b.as_str())
    }

    /// `ctl-PID-N`: every namespace of this world starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The node namespace's name, for `ctreap run --netns NAME` and `ip netns exec NAME`.
    pub fn node_netns(&self) -> &str {
        &self.node
    }

    pub fn node_netns_handle(&self) -> Netns {
        Netns::named(&self.node)
    }

    pub fn backend(&self) -> NatBackend {
        self.backend
    }

    /// Where and how the NAT is programmed; give it to a [`Programmer`](super::Programmer).
    pub fn nat_target(&self) -> NatTarget {
        NatTarget {
            netns: self.node.clone(),
            backend: self.backend,
        }
    }

    /// Replaces the node's NAT with `rules` (what the programmer does on each sync).
    pub fn program_nat(&self, rules: &NatRules) -> Result<(), Error> {
        self.nat_target().apply(rules)
    }

    /// The node's addresses: the bridge address and every client link's address (NodePorts
    /// answer on all of them), e.g. for [`objects::node`](super::objects::node).
    pub fn node_addresses(&self) -> Vec<Ipv4Addr> {
        let mut v = vec![BRIDGE_IP];
        if self.node_b.is_some() {
            v.push(NODE_A_LINK_IP);
        }
        v.extend(self.clients.values().map(|(c, _)| c.gateway));
        v
    }

    /// Adds pod `name` (`[a-z0-9-]{1,13}`) with the next free IP of 192.0.2.10..=250: its
    /// namespace, a veth to the bridge, its default route via the node, and its servers
    /// (HTTP :8080, UDP :5353). Returns once the servers listen.
    pub fn add_pod(&mut self, name: &str) -> Result<PodInfo, Error> {
        self.add_pod_on(name, NodeId::A)
    }

    /// [`add_pod`](Self::add_pod) on node `node`: on node B, 203.0.113.10..=250 on its bridge.
    pub fn add_pod_on(&mut self, name: &str, node: NodeId) -> Result<PodInfo, Error> {
        valid_name("pod", name)?;
        let node_ns = self.node_ns(node)?.to_string();
        if self.pods.contains_key(name) {
            return Err(Error::Invalid(format!(
                "pod {name:?} exists already in this run (names are never reused)"
            )));
        }
        let (host, gateway) = match node {
            NodeId::A => (&mut self.next_pod_host, BRIDGE_IP),
            NodeId::B => (&mut self.next_pod_host_b, BRIDGE_B_IP),
        };
        if *host > LAST_POD_HOST {
            return Err(Error::Invalid(format!(
                "no pod IP left in {gateway}/{POD_PREFIX_LEN} for this run"
            )));
        }
        let [a, b, c, _] = gateway.octets();
        let ip = Ipv4Addr::new(a, b, c, *host);
        *host += 1;
        let netns = format!("{}-pod-{name}", self.prefix);
        let node_link = format!("p-{name}");
        let info = PodInfo {
            name: name.to_string(),
            netns: netns.clone(),
            ip,
            node_link: node_link.clone(),
            node,
            alive: true,
        };
        let registration = cleanup::register(&netns);
        cmd::ip(None, &["netns", "add", &netns])?;
        self.pods.insert(
            name.to_string(),
            PodSlot {
                info: info.clone(),
                servers: None,
                final_stats: PodStats::default(),
                registration: Some(registration),
            },
        );
        let n = Some(node_ns.as_str());
        let p = Some(netns.as_str());
        cmd::ip(
            n,
            &[
                "link", "add", &node_link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        cmd::ip(n, &["link", "set", &node_link, "master", BRIDGE, "up"])?;
        cmd::ip(p, &["link", "set", "lo", "up"])?;
        let addr = format!("{ip}/{POD_PREFIX_LEN}");
        cmd::ip(p, &["addr", "add", &addr, "dev", "eth0"])?;
        cmd::ip(p, &["link", "set", "eth0", "up"])?;
        let gw = gateway.to_string();
        cmd::ip(p, &["route", "add", "default", "via", &gw])?;
        let servers = PodServers::start(name, &info.netns_handle())?;
        if let Some(slot) = self.pods.get_mut(name) {
            slot.servers = Some(servers);
        }
        Ok(info)
    }

    /// Adds client `name` (`[a-z0-9-]{1,13}`): client `i` of the run gets 198.18.i.2/24, the
    /// node 198.18.i.1/24 on its side, default route via the node.
    pub fn add_client(&mut self, name: &str) -> Result<ClientInfo, Error> {
        valid_name("client", name)?;
        if self.clients.contains_key(name) {
            return Err(Error::Invalid(format!("client {name:?} exists already")));
        }
        if self.next_client > MAX_CLIENTS {
            return Err(Error::Invalid(
                "no client subnet left in 198.18.0.0/16".into(),
            ));
        }
        let i = self.next_client;
        self.next_client += 1;
        let netns = format!("{}-cl-{name}", self.prefix);
        let info = ClientInfo {
            name: name.to_string(),
            netns: netns.clone(),
            ip: Ipv4Addr::new(198, 18, i, 2),
            gateway: Ipv4Addr::new(198, 18, i, 1),
            node_link: format!("c-{name}"),
        };
        let registration = cleanup::register(&netns);
        cmd::ip(None, &["netns", "add", &netns])?;
        self.clients
            .insert(name.to_string(), (info.clone(), registration));
        let n = Some(self.node.as_str());
        let c = Some(netns.as_str());
        cmd::ip(
            n,
            &[
                "link",
                "add",
                &info.node_link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns,
            ],
        )?;
        let node_addr = format!("{}/24", info.gateway);
        cmd::ip(n, &["addr", "add", &node_addr, "dev", &info.node_link])?;
        cmd::ip(n, &["link", "set", &info.node_link, "up"])?;
        cmd::ip(c, &["link", "set", "lo", "up"])?;
        let addr = format!("{}/24", info.ip);
        cmd::ip(c, &["addr", "add", &addr, "dev", "eth0"])?;
        cmd::ip(c, &["link", "set", "eth0", "up"])?;
        let gw = info.gateway.to_string();
        cmd::ip(c, &["route", "add", "default", "via", &gw])?;
        Ok(info)
    }

    pub fn pod(&self, name: &str) -> Option<PodInfo> {
        self.pods.get(name).map(|s| s.info.clone())
    }

    /// Every pod of the run, dead ones included, by name.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.pods.values().map(|s| s.info.clone()).collect()
    }

    pub fn client(&self, name: &str) -> Option<ClientInfo> {
        self.clients.get(name).map(|(c, _)| c.clone())
    }

    pub fn clients(&self) -> Vec<ClientInfo> {
        self.clients.values().map(|(c, _)| c.clone()).collect()
    }

    /// What pod `name`'s servers have done (kept after its death).
    pub fn pod_stats(&self, name: &str) -> Option<PodStats> {
        let slot = self.pods.get(name)?;
        Some(
            slot.servers
                .as_ref()
                .map_or(slot.final_stats, PodServers::stats),
        )
    }

    /// Tells pod `name`'s application to drain (the seed's option 5, after its wait for the
    /// load balancer): its HTTP server closes each keep-alive connection after the next
    /// response, saying so. Its UDP server goes on as before.
    pub fn drain_pod(&mut self, name: &str) -> Result<(), Error> {
        if let Some(s) = &self.pod_slot(name)?.servers {
            s.drain();
        }
        Ok(())
    }

    fn pod_slot(&mut self, name: &str) -> Result<&mut PodSlot, Error> {
        self.pods.get_mut(name).ok_or_else(|| Error::Unknown {
            kind: "pod",
            name: name.to_string(),
        })
    }

    /// Kills pod `name` the way a deleted pod dies ([`Kill`]): its veth is deleted
    /// (`ip -n NODE link del p-NAME`, which removes both ends), its servers stop and close
    /// every socket, and its namespace is deleted. Killing a dead pod is an error.
    ///
    /// What then happens to packets the node still DNATs to it (measured on Linux 6.18): no
    /// reply, no RST. The node ARPs for the IP on the bridge (neighbour `INCOMPLETE`), and
    /// after the ARP retries (~3 s, `mcast_solicit` 3 x 1 s) answers the packets queued
    /// meanwhile with ICMP host unreachable (rate limited; later packets start a new round).
    /// - established TCP: a *soft* error (`SO_ERROR` = EHOSTUNREACH, reads do not fail); the
    ///   client retransmits with backoff until its own timeout, or `tcp_retries2` (~15 min);
    /// - a new TCP connection DNATed to it (rules not yet synced, or a reused tuple): the SYN
    ///   fails with EHOSTUNREACH after ~3 s;
    /// - connected UDP: nothing is reported (host unreachable is not a hard error for UDP
    ///   without `IP_RECVERR`); requests just time out.
    ///
    /// The conntrack entries stay, refreshed by every packet the client sends.
    pub fn kill_pod(&mut self, name: &str, how: Kill) -> Result<KillReport, Error> {
        let start = Instant::now();
        let pod_node = self.pods.get(name).map_or(NodeId::A, |s| s.info.node);
        let node = self.node_ns(pod_node)?.to_string();
        let slot = self.pod_slot(name)?;
        if !slot.info.alive {
            return Err(Error::Invalid(format!("pod {name:?} is dead already")));
        }
        let info = slot.info.clone();
        let servers = slot.servers.take();
        let connections_open = servers.as_ref().map_or(0, PodServers::open_connections);
        if let Some(s) = &servers {
            slot.final_stats = s.stats();
        }
        let wait = Duration::from_secs(1);
        let (joined, stuck) = match how {
            Kill::Abrupt => {
                cmd::ip(Some(&node), &["link", "del", &info.node_link])?;
                servers.map_or((0, 0), |s| s.stop(true, wait))
            }
            Kill::Graceful => {
                let r = servers.map_or((0, 0), |s| s.stop(false, wait));
                cmd::ip(Some(&node), &["link", "del", &info.node_link])?;
                r
            }
        };
        cmd::ip(None, &["netns", "del", &info.netns])?;
        let slot = self.pod_slot(name)?;
        slot.info.alive = false;
        slot.registration = None;
        Ok(KillReport {
            pod: info.name,
            ip: info.ip,
            how,
            connections_open,
            threads_joined: joined,
            threads_stuck: stuck,
            elapsed: start.elapsed(),
        })
    }

    /// The node's conntrack entries matching `filter`, read over ctnetlink in the node
    /// namespace (`ip netns exec NODE conntrack -L` with the same filter).
    pub fn node_flows(&self, filter: &Filter) -> Result<Vec<Entry>, Error> {
        let mut ct = Conntrack::open_in(Some(&self.node_netns_handle()))?;
        let mut out = Vec::new();
        ct.dump(filter, |e| {
            out.push(e);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The node's conntrack table as `conntrack -L` prints it (needs conntrack-tools).
    pub fn node_conntrack_list(&self) -> Result<String, Error> {
        cmd::in_ns(&self.node, "conntrack", &["-L"])
    }

    /// Runs the seed's preStop fix `conntrack -D -d POD_IP` inside pod `name`'s namespace, as
    /// the hook does (the pod must be alive). See [`seed`].
    pub fn seed_prestop(&self, name: &str) -> Result<PreStopOutcome, Error> {
        let slot = self.pods.get(name).ok_or_else(|| Error::Unknown {
            kind: "pod",
            name: name.to_string(),
        })?;
        if !slot.info.alive {
            return Err(Error::Invalid(format!(
                "pod {name:?} is dead: a preStop hook runs before the pod dies"
            )));
        }
        seed::prestop(&slot.info.netns, slot.info.ip)
    }

    /// Sets reduced conntrack timeouts in the node namespace (the seed's option 4); returns
    /// each sysctl's value before and after.
    pub fn set_conntrack_timeouts(
        &self,
        timeouts: &ConntrackTimeouts,
    ) -> Result<Vec<SysctlChange>, Error> {
        seed::set_timeouts(&self.node, timeouts)
    }

    /// Removes everything now and reports the first failure (dropping does the same and only
    /// logs failures).
    pub fn cleanup(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        let mut first_err = None;
        let mut note = |r: Result<String, Error>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "lab cleanup");
                first_err.get_or_insert(e);
            }
        };
        for slot in self.pods.values_mut() {
            if let Some(s) = slot.servers.take() {
                slot.final_stats = s.stats();
                s.stop(true, Duration::from_secs(1));
            }
            if slot.info.alive {
                note(cmd::ip(None, &["netns", "del", &slot.info.netns]));
                slot.info.alive = false;
            }
            slot.registration = None;
        }
        for (c, _) in self.clients.values() {
            note(cmd::ip(None, &["netns", "del", &c.netns]));
        }
        self.clients.clear();
        if let Some((b, _)) = self.node_b.take() {
            note(cmd::ip(None, &["netns", "del", &b]));
        }
        if self.node_registration.take().is_some() {
            note(cmd::ip(None, &["netns", "del", &self.node]));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("node", &self.node)
            .field("backend", &self.backend)
            .field("pods", &self.pods.keys().collect::<Vec<_>>())
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}
