//! Kernel tests of the lab's world: real namespaces, veths, a bridge, nftables/iptables-nft
//! NAT and the node's conntrack table. They need root and fail (never skip) without it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctnetlink::Filter;
use ctreap::cluster::Proto;
use ctreap_lab::world::objects::{
    self, CLUSTER_IP, DNS_NODE_PORT, DNS_PORT, DNS_TARGET_PORT, HTTP_NODE_PORT, HTTP_PORT,
    HTTP_TARGET_PORT,
};
use ctreap_lab::world::pod::parse_udp_reply;
use ctreap_lab::world::{
    ClientInfo, ConntrackTimeouts, EndpointSpec, Kill, NatBackend, NatRules, NodeId, PodInfo,
    Programmer, ProgrammerConfig, Requirements, ServicePortRules, World, WorldConfig,
    check_prerequisites, sweep_stale,
};

/// Fails loudly, with what is missing and how to get it, when the tests cannot run here.
fn require(backend: NatBackend) {
    if let Err(e) = check_prerequisites(&Requirements {
        backend,
        conntrack_cli: true,
    }) {
        panic!("the lab's kernel tests cannot run: {e}\n(run them as root: `scripts/test`)");
    }
}

fn world(backend: NatBackend) -> World {
    require(backend);
    World::create(WorldConfig {
        backend,
        ..WorldConfig::default()
    })
    .expect("building the lab world")
}

fn rules_for(pods: &[&PodInfo]) -> NatRules {
    let eps = |port| -> Vec<SocketAddrV4> {
        pods.iter().map(|p| SocketAddrV4::new(p.ip, port)).collect()
    };
    NatRules {
        ports: vec![
            ServicePortRules {
                service: "default/web".into(),
                port_name: "http".into(),
                proto: Proto::Tcp,
                cluster_ip: CLUSTER_IP,
                port: HTTP_PORT,
                node_port: Some(HTTP_NODE_PORT),
                endpoints: eps(HTTP_TARGET_PORT),
            },
            ServicePortRules {
                service: "default/web".into(),
                port_name: "dns".into(),
                proto: Proto::Udp,
                cluster_ip: CLUSTER_IP,
                port: DNS_PORT,
                node_port: Some(DNS_NODE_PORT),
                endpoints: eps(DNS_TARGET_PORT),
            },
        ],
        ..NatRules::default()
    }
}

/// A UDP socket in the client's namespace, bound to `sport` (0: any), connected to `dst`.
fn udp_client(client: &ClientInfo, sport: u16, dst: SocketAddrV4) -> UdpSocket {
    let s = client
        .netns_handle()
        .run(move || {
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport))?;
            s.connect(dst)?;
            Ok::<_, std::io::Error>(s)
        })
        .expect("entering the client namespace")
        .expect("client UDP socket");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

/// One request-reply; returns the answering pod's name.
fn udp_ask(s: &UdpSocket, payload: &str) -> Option<String> {
    s.send(payload.as_bytes()).ok()?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).ok()?;
    let (pod, echoed) = parse_udp_reply(&buf[..n])?;
    assert_eq!(echoed, payload.as_bytes(), "the reply echoes the request");
    Some(pod.to_string())
}

fn tcp_client(client: &ClientInfo, dst: SocketAddrV4) -> TcpStream {
    let s = client
        .netns_handle()
        .run(move || TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_secs(3)))
        .expect("entering the client namespace")
        .unwrap_or_else(|e| panic!("TCP connect to {dst}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

/// One keep-alive GET on `s`; returns the body (the pod's name).
fn http_get(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive\r\n\r\n")?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut status = String::new();
    r.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("status line {status:?}")));
    }
    let mut len = 0usize;
    let mut keep_alive = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("Content-Length: ") {
            len = v.parse().expect("content length");
        }
        keep_alive |= h == "Connection: keep-alive";
    }
    assert!(keep_alive, "the pod answers Connection: keep-alive");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(String::from_utf8(body).expect("utf-8 body"))
}

/// `IcmpOutDestUnreachs` of `/proc/net/snmp` in namespace `ns`.
fn icmp_dest_unreachs_sent(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("reading /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp: "));
    let (Some(names), Some(values)) = (icmp.next(), icmp.next()) else {
        panic!("no Icmp lines in /proc/net/snmp:\n{text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDestUnreachs")
        .and_then(|(_, v)| v.parse().ok())
        .expect("OutDestUnreachs")
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

fn lab_namespaces(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

fn host_links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn serves_both_protocols(backend: NatBackend) {
    let mut w = world(backend);
    let a = w.add_pod("a1").expect("pod a1");
    let b = w.add_pod("a2").expect("pod a2");
    let c = w.add_client("c1").expect("client c1");
    w.program_nat(&rules_for(&[&a, &b]))
        .expect("programming NAT");
    let names = [a.name.clone(), b.name.clone()];

    // UDP to ClusterIP:53 from a fixed source port, as a resolver does.
    let udp = udp_client(&c, 40053, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    let pod = udp_ask(&udp, "q1").expect("a UDP answer through ClusterIP:53");
    assert!(names.contains(&pod), "answered by {pod}");
    assert_eq!(
        udp_ask(&udp, "q2").as_deref(),
        Some(pod.as_str()),
        "the same flow sticks to the same pod (the conntrack entry decides)"
    );

    // TCP keep-alive to ClusterIP:80: two requests on one connection.
    let mut tcp = tcp_client(&c, SocketAddrV4::new(CLUSTER_IP, HTTP_PORT));
    let body = http_get(&mut tcp).expect("GET through ClusterIP:80");
    assert!(names.contains(&body), "answered by {body}");
    assert_eq!(http_get(&mut tcp).expect("second GET"), body);

    // NodePorts on the node's address on the client's link.
    let np = SocketAddrV4::new(c.gateway, HTTP_NODE_PORT);
    let mut tcp_np = tcp_client(&c, np);
    assert!(names.contains(&http_get(&mut tcp_np).expect("GET through the NodePort")));
    let udp_np = udp_client(&c, 0, SocketAddrV4::new(c.gateway, DNS_NODE_PORT));
    assert!(udp_ask(&udp_np, "n1").is_some(), "UDP through the NodePort");

    // The node's conntrack table: the DNAT target is the reply tuple's source.
    let flows = w
        .node_flows(&Filter {
            orig_dst: Some(CLUSTER_IP.into()),
            ..Filter::default()
        })
        .expect("dumping the node's conntrack table");
    assert_eq!(flows.len(), 2, "{flows:#?}");
    let pod_ips = [a.ip.into(), b.ip.into()];
    for f in &flows {
        assert!(pod_ips.contains(&f.reply.src), "reply src {}", f.reply.src);
        assert_eq!(
            f.reply.dst,
            std::net::IpAddr::from(c.ip),
            "ClusterIP: no SNAT"
        );
    }
    let listing = w.node_conntrack_list().expect("conntrack -L in the node");
    let line = listing
        .lines()
        .find(|l| l.contains("dport=53 ") && l.contains("sport=40053"))
        .unwrap_or_else(|| panic!("the UDP flow in conntrack -L:\n{listing}"));
    let ip_of = |n: &str| if n == a.name { a.ip } else { b.ip };
    assert!(
        line.contains(&format!(
            "src={} dst={} sport={DNS_TARGET_PORT} dport=40053",
            ip_of(&pod),
            c.ip
        )),
        "reply direction = pod -> client: {line}"
    );
    let np_flows = w
        .node_flows(&Filter {
            orig_dst: Some(c.gateway.into()),
            ..Filter::default()
        })
        .expect("NodePort flows");
    assert_eq!(np_flows.len(), 2, "{np_flows:#?}");
    for f in &np_flows {
        assert!(pod_ips.contains(&f.reply.src));
        assert_eq!(
            f.reply.dst,
            std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 1)),
            "NodePort traffic is masqueraded to the node's bridge address"
        );
    }
    let ruleset = w.nat_target().list().expect("nft list ruleset");
    let second_endpoint = match backend {
        NatBackend::Nftables => {
            assert!(ruleset.contains("numgen random mod 2"), "{ruleset}");
            "sep-0-1"
        }
        NatBackend::IptablesNft => {
            assert!(ruleset.contains("KUBE-SVC-LAB0"), "{ruleset}");
            "KUBE-SEP-LAB0-1"
        }
    };
    assert!(ruleset.contains(second_endpoint), "{ruleset}");
    // A sync replaces everything: the second endpoint's chain is gone, not left behind.
    w.program_nat(&rules_for(&[&a])).expect("second sync");
    let ruleset = w.nat_target().list().expect("nft list ruleset");
    assert!(!ruleset.contains(second_endpoint), "{ruleset}");
    let fresh = udp_client(&c, 0, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    assert_eq!(udp_ask(&fresh, "q3").as_deref(), Some(a.name.as_str()));
    drop(w);
    assert!(!netns_exists(&a.netns) && !netns_exists(&c.netns));
}

#[test]
fn nftables_world_answers_through_cluster_ip_and_node_port() {
    serves_both_protocols(NatBackend::Nftables);
}

#[test]
fn iptables_nft_world_answers_through_cluster_ip_and_node_port() {
    serves_both_protocols(NatBackend::IptablesNft);
}

#[test]
fn a_killed_pod_is_dead_and_its_flows_go_into_a_black_hole() {
    let mut w = world(NatBackend::Nftables);
    let a = w.add_pod("old").expect("pod");
    let c = w.add_client("c1").expect("client");
    w.program_nat(&rules_for(&[&a])).expect("NAT");
    let udp = udp_client(&c, 40054, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    assert_eq!(udp_ask(&udp, "before").as_deref(), Some("old"));
    let mut tcp = tcp_client(&c, SocketAddrV4::new(CLUSTER_IP, HTTP_PORT));
    assert_eq!(http_get(&mut tcp).expect("GET"), "old");

    let report = w.kill_pod("old", Kill::Abrupt).expect("killing the pod");
    assert_eq!(report.connections_open, 1, "{report:?}");
    assert_eq!(report.threads_stuck, 0, "{report:?}");
    assert!(!netns_exists(&a.netns), "its namespace is deleted");
    assert!(!w.pod("old").expect("still listed").alive);
    let links = Command::new("ip")
        .args(["-n", w.node_netns(), "-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("p-old"), "its veth is gone: {links}");
    assert!(w.kill_pod("old", Kill::Abrupt).is_err(), "dead stays dead");

    // The old flows still point at it: that is the outage.
    let flows = w
        .node_flows(&Filter {
            reply_src: Some(a.ip.into()),
            ..Filter::default()
        })
        .expect("dump");
    assert_eq!(
        flows.len(),
        2,
        "UDP and TCP entries survive the pod: {flows:#?}"
    );
    // No FIN/RST reached the client, and nothing answers any more.
    let t0 = Instant::now();
    let r = http_get(&mut tcp);
    assert!(
        r.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "the keep-alive request hangs (timeout), not reset/closed: {r:?} after {:?}",
        t0.elapsed()
    );
    assert_eq!(udp_ask(&udp, "after"), None, "UDP gets no answer");
    // What the node does with them: ARP for the pod's IP fails on the bridge, and after the
    // ARP retries (~3 s) it answers the queued packets with ICMP host unreachable, which an
    // established TCP socket only keeps as a soft error: it goes on retransmitting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while icmp_dest_unreachs_sent(w.node_netns()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the node sent no ICMP destination unreachable"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let soft = tcp.take_error().expect("SO_ERROR");
    assert_eq!(
        soft.map(|e| e.kind()),
        Some(std::io::ErrorKind::HostUnreachable),
        "host unreachable, as a soft error"
    );
    // Nothing of the dead pod is left in the process either: no thread, no socket (its
    // namespace would otherwise live on without a name).
    assert_eq!(w.pod_stats("old").expect("stats").http_requests, 1);
}

/// A second node: its pods are reached from the first node's clients through the first
/// node's NAT (ClusterIP, and NodePort with masquerade), over the link between the nodes; a
/// pod killed there leaves its entries on node A, where the NAT decision was made; cleanup
/// removes node B too.
#[test]
fn a_second_nodes_pods_are_served_through_the_first_nodes_nat() {
    require(NatBackend::Nftables);
    let mut w = World::create(WorldConfig {
        backend: NatBackend::Nftables,
        second_node: true,
    })
    .expect("world");
    let b = w.add_pod_on("far", NodeId::B).expect("pod on node B");
    assert_eq!(b.node, NodeId::B);
    assert_eq!(b.ip, Ipv4Addr::new(203, 0, 113, 10));
    let c = w.add_client("c1").expect("client");
    w.program_nat(&rules_for(&[&b])).expect("NAT");
    let udp = udp_client(&c, 0, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    assert_eq!(udp_ask(&udp, "q1").as_deref(), Some("far"));
    let mut node_port = tcp_client(&c, SocketAddrV4::new(c.gateway, HTTP_NODE_PORT));
    assert_eq!(http_get(&mut node_port).expect("GET via NodePort"), "far");
    // The NodePort flow is masqueraded (externalTrafficPolicy=Cluster): the pod saw node A.
    let flows = w
        .node_flows(&Filter {
            reply_src: Some(b.ip.into()),
            ..Filter::default()
        })
        .expect("dump");
    assert_eq!(flows.len(), 2, "UDP and the NodePort TCP entry: {flows:#?}");
    assert!(
        w.node_addresses().contains(&Ipv4Addr::new(198, 51, 100, 1)),
        "node A's end of the link carries NodePorts too"
    );

    let node_b = w.node_b_netns().expect("node B").to_string();
    let report = w.kill_pod("far", Kill::Abrupt).expect("kill on node B");
    assert_eq!(report.connections_open, 1, "{report:?}");
    let links = Command::new("ip")
        .args(["-n", &node_b, "-o", "link", "show"])
        .output()
        .expect("ip link");
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("p-far"),
        "its veth on node B is gone"
    );
    assert_eq!(udp_ask(&udp, "q2"), None, "the dead pod answers nothing");
    let prefix = w.prefix().to_string();
    assert!(lab_namespaces(&prefix).contains(&node_b));
    w.cleanup().expect("cleanup");
    assert!(lab_namespaces(&prefix).is_empty(), "node B is removed too");
}

#[test]
fn cleanup_leaves_no_namespace_or_link_even_on_panic() {
    require(NatBackend::Nftables);
    let before = host_links();
    let prefix = std::panic::catch_unwind(|| {
        let mut w = World::create(WorldConfig::default()).expect("world");
        w.add_pod("a1").expect("pod");
        w.add_client("c1").expect("client");
        let prefix = w.prefix().to_string();
        assert_eq!(lab_namespaces(&prefix).len(), 3);
        std::panic::panic_any(prefix);
    })
    .expect_err("the closure panics")
    .downcast::<String>()
    .expect("the prefix");
    assert_eq!(
        lab_namespaces(&prefix),
        Vec::<String>::new(),
        "panic unwinding cleans up"
    );

    let mut w = World::create(WorldConfig::default()).expect("world");
    w.add_pod("b1").expect("pod");
    w.add_client("c1").expect("client");
    let prefix = w.prefix().to_string();
    w.cleanup().expect("explicit cleanup");
    assert!(lab_namespaces(&prefix).is_empty());
    let after = host_links();
    assert_eq!(
        before.lines().count(),
        after.lines().count(),
        "no link was ever made in the host namespace:\n{after}"
    );
    assert!(!after.contains("p-b1") && !after.contains("c-c1"));
}

const HELPER_ENV: &str = "CTREAP_LAB_WORLD_HELPER";

/// Run by `sweep_removes_the_namespaces_of_a_killed_run` in a child process, which it then
/// kills with SIGKILL. Does nothing when run any other way.
#[test]
#[ignore = "helper: run only as a child of sweep_removes_the_namespaces_of_a_killed_run"]
fn helper_world_that_gets_killed() {
    let Some(mode) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    if mode == "signal" {
        ctreap_lab::world::cleanup_on_signal().expect("installing the signal handler");
        ctreap_lab::world::on_signal(|| eprintln!("helper: signal hook ran"));
    }
    let mut w = World::create(WorldConfig::default()).expect("world");
    let a = w.add_pod("a1").expect("pod");
    let c = w.add_client("c1").expect("client");
    w.program_nat(&rules_for(&[&a])).expect("NAT");
    // Hold a connection so the pod's namespace has a live socket when we are killed.
    let mut tcp = tcp_client(&c, SocketAddrV4::new(CLUSTER_IP, HTTP_PORT));
    http_get(&mut tcp).expect("GET");
    println!("READY {}", w.prefix());
    std::io::stdout().flush().expect("flush");
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts the helper run in a child process; returns it and its world's prefix once built.
fn start_helper(mode: &str) -> (std::process::Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_world_that_gets_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the helper run");
    let stdout = child.stdout.take().expect("stdout");
    let mut prefix = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("helper output");
        // libtest prints `test NAME ... ` on the same line first.
        if let Some((_, p)) = line.split_once("READY ") {
            prefix = Some(p.trim().to_string());
            break;
        }
    }
    let prefix = prefix.expect("the helper run built its world");
    assert_eq!(lab_namespaces(&prefix).len(), 3);
    (child, prefix)
}

#[test]
fn sigterm_and_sigint_remove_the_namespaces() {
    require(NatBackend::Nftables);
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let (mut child, prefix) = start_helper("signal");
        let st = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let status = child.wait().expect("reaped");
        assert_eq!(status.code(), Some(code), "kill {signal}: {status:?}");
        assert!(
            lab_namespaces(&prefix).is_empty(),
            "kill {signal} left {:?}",
            lab_namespaces(&prefix)
        );
    }
}

#[test]
fn sweep_removes_the_namespaces_of_a_killed_run() {
    require(NatBackend::Nftables);
    let (mut child, prefix) = start_helper("kill");
    // A sweep while it runs leaves it alone.
    let report = sweep_stale().expect("sweep");
    assert!(
        report.removed.iter().all(|n| !n.starts_with(&prefix)),
        "{report:?}"
    );
    assert_eq!(
        report
            .live
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .count(),
        3
    );

    // SAFETY-free kill -9: std's Child::kill sends SIGKILL.
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(
        lab_namespaces(&prefix).len(),
        3,
        "nothing runs on SIGKILL: its namespaces stay"
    );
    let report = sweep_stale().expect("sweep after the kill");
    let mut removed: Vec<&String> = report
        .removed
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    removed.sort();
    assert_eq!(removed.len(), 3, "{report:?}");
    assert!(
        removed.last().is_some_and(|n| n.ends_with("-node")) || removed.len() == 3,
        "{report:?}"
    );
    assert!(lab_namespaces(&prefix).is_empty());
    // And a new run starts cleanly.
    let mut w = world(NatBackend::Nftables);
    let a = w.add_pod("a1").expect("pod after the sweep");
    let c = w.add_client("c1").expect("client after the sweep");
    w.program_nat(&rules_for(&[&a])).expect("NAT");
    let udp = udp_client(&c, 0, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    assert_eq!(udp_ask(&udp, "fresh").as_deref(), Some("a1"));
}

#[test]
fn seed_prestop_deletes_nothing_in_the_node_and_timeouts_are_per_netns() {
    let mut w = world(NatBackend::Nftables);
    let a = w.add_pod("a1").expect("pod");
    let c = w.add_client("c1").expect("client");
    w.program_nat(&rules_for(&[&a])).expect("NAT");
    let udp = udp_client(&c, 40055, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    assert_eq!(udp_ask(&udp, "x").as_deref(), Some("a1"));
    let to_pod = Filter {
        reply_src: Some(a.ip.into()),
        ..Filter::default()
    };
    assert_eq!(w.node_flows(&to_pod).expect("dump").len(), 1);

    let out = w.seed_prestop("a1").expect("running the preStop command");
    assert!(
        out.command.contains("conntrack -D -d 192.0.2.10"),
        "{out:?}"
    );
    assert_eq!(out.deleted.unwrap_or(0), 0, "{out:?}");
    assert_eq!(
        w.node_flows(&to_pod).expect("dump").len(),
        1,
        "the node's entry survives the seed's preStop: {out:?}"
    );

    let host_key = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream";
    let host_before = std::fs::read_to_string(host_key).expect("host sysctl");
    let changes = w
        .set_conntrack_timeouts(&ConntrackTimeouts::SEED_OPTION_4)
        .expect("timeouts are writable inside the node namespace");
    assert_eq!(changes.len(), 3, "{changes:?}");
    for ch in &changes {
        assert_ne!(ch.before, ch.after, "{ch:?}");
    }
    assert_eq!(
        std::fs::read_to_string(host_key).expect("host sysctl"),
        host_before,
        "the host's value is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programmer_follows_endpoint_slices_after_its_sync_delay() {
    let mut w = world(NatBackend::Nftables);
    let a = w.add_pod("a1").expect("pod a1");
    let b = w.add_pod("b1").expect("pod b1");
    let c = w.add_client("c1").expect("client");
    let server = kube_testserver::TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    objects::apply_service(&server).expect("Service");
    objects::apply_endpoints(&server, &[EndpointSpec::ready("a1", a.ip)]).expect("slice");

    let delay = Duration::from_millis(700);
    let mut config = ProgrammerConfig::new(&kubeconfig, w.nat_target());
    config.sync_delay = delay;
    let programmer = Programmer::start(config).await.expect("programmer");
    let initial = programmer.current_rules();
    assert_eq!(
        initial.endpoints_of(Proto::Udp, DNS_PORT),
        Some(&[SocketAddrV4::new(a.ip, DNS_TARGET_PORT)][..])
    );
    let udp = udp_client(&c, 40056, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    let ask = |p: &'static str| {
        let udp = udp.try_clone().expect("clone");
        tokio::task::spawn_blocking(move || udp_ask(&udp, p))
    };
    assert_eq!(ask("1").await.expect("task").as_deref(), Some("a1"));

    // Rolling update: b1 ready, a1 terminating (not serving), then gone.
    let changed = Instant::now();
    objects::apply_endpoints(
        &server,
        &[
            EndpointSpec::terminating("a1", a.ip),
            EndpointSpec::ready("b1", b.ip),
        ],
    )
    .expect("slice");
    let only_b = move |r: &NatRules| {
        r.endpoints_of(Proto::Udp, DNS_PORT)
            == Some(&[SocketAddrV4::new(b.ip, DNS_TARGET_PORT)][..])
    };
    let sync = programmer
        .wait_for(only_b, Duration::from_secs(10))
        .await
        .expect("a sync to b1 only");
    assert!(
        sync.applied.duration_since(changed) >= delay,
        "applied {:?} after the change, delay {delay:?}",
        sync.applied.duration_since(changed)
    );
    assert!(sync.applied.duration_since(sync.seen) >= delay);
    // The programmer did not touch conntrack: the old flow still goes to a1 ...
    let to_a = Filter {
        reply_src: Some(a.ip.into()),
        ..Filter::default()
    };
    assert_eq!(w.node_flows(&to_a).expect("dump").len(), 1);
    assert_eq!(ask("2").await.expect("task").as_deref(), Some("a1"));
    // ... while a new flow goes to b1.
    let fresh = udp_client(&c, 0, SocketAddrV4::new(CLUSTER_IP, DNS_PORT));
    assert_eq!(udp_ask(&fresh, "3").as_deref(), Some("b1"));

    // No endpoints at all: new connections are rejected, as kube-proxy does.
    objects::apply_endpoints(&server, &[]).expect("empty slice");
    programmer
        .wait_for(
            |r| {
                r.endpoints_of(Proto::Tcp, HTTP_PORT)
                    .is_some_and(<[_]>::is_empty)
            },
            Duration::from_secs(10),
        )
        .await
        .expect("a sync with no endpoints");
    let err = c
        .netns_handle()
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::V4(SocketAddrV4::new(CLUSTER_IP, HTTP_PORT)),
                Duration::from_secs(3),
            )
        })
        .expect("netns")
        .expect_err("rejected");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "reject answers at once: {err}"
    );
    let syncs = programmer.syncs();
    assert_eq!(syncs.len(), 3, "{syncs:#?}");
    assert!(syncs.iter().all(|s| s.error.is_none()));
    programmer.stop();
}
