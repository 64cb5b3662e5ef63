//! End-to-end: the real `ctreap stale` binary against the local API server and a private
//! network namespace's conntrack table, asserting the exact verdicts.

use ctnetlink_testns as common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestNs;
use ctnetlink::consts::*;
use ctnetlink::{Entry, L4, Tuple};
use kube_testserver::TestServer;
use serde_json::{Value, json};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn nat(
    proto: u8,
    (client, sport): (&str, u16),
    (fe, fport): (&str, u16),
    (be, bport): (&str, u16),
    reply_dst: &str,
) -> Entry {
    let orig = Tuple::new(ip(client), ip(fe), L4::ports(proto, sport, fport));
    let reply = Tuple::new(ip(be), ip(reply_dst), L4::ports(proto, bport, sport));
    let mut e = Entry::new(orig, reply);
    e.timeout = Some(600);
    e
}

fn slice(
    name: &str,
    svc: &str,
    family: &str,
    port_name: &str,
    proto: &str,
    port: u16,
    endpoints: Value,
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "ports": [{"name": port_name, "port": port, "protocol": proto}],
        "endpoints": endpoints,
    })
}

/// The cluster: `dns` (ClusterIP, UDP, named target port) with a ready, a terminating-serving
/// and a not-serving endpoint; `web` (dual-stack NodePort) backed by a pod that also backs
/// `dns`.
fn serve(server: &TestServer) {
    let objs = [
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
               "status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.10"}, {"type": "Hostname", "address": "node-1"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns", "namespace": "default"},
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
        slice(
            "dns-a",
            "dns",
            "IPv4",
            "dns",
            "UDP",
            5353,
            json!([
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]),
        ),
        slice(
            "dns-b",
            "dns",
            "IPv4",
            "dns",
            "UDP",
            5353,
            json!([
                {"addresses": ["10.244.2.7"], "conditions": {"ready": false, "serving": false, "terminating": false}},
            ]),
        ),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                        "ipFamilies": ["IPv4", "IPv6"],
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}}),
        slice(
            "web-v4",
            "web",
            "IPv4",
            "http",
            "TCP",
            8080,
            json!([
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
            ]),
        ),
        slice(
            "web-v6",
            "web",
            "IPv6",
            "http",
            "TCP",
            8080,
            json!([
                {"addresses": ["fd00:244::5"], "conditions": {"ready": true}},
            ]),
        ),
    ];
    for o in objs {
        server.apply_json(o).expect("apply");
    }
}

fn flows() -> Vec<Entry> {
    vec![
        nat(
            IPPROTO_UDP,
            ("192.0.2.1", 5000),
            ("10.96.0.10", 53),
            ("10.244.1.5", 5353),
            "192.0.2.1",
        ), // live
        nat(
            IPPROTO_UDP,
            ("192.0.2.2", 5001),
            ("10.96.0.10", 53),
            ("10.244.9.9", 5353),
            "192.0.2.2",
        ), // gone
        nat(
            IPPROTO_UDP,
            ("192.0.2.3", 5002),
            ("10.96.0.10", 53),
            ("10.244.1.6", 5353),
            "192.0.2.3",
        ), // draining
        nat(
            IPPROTO_UDP,
            ("192.0.2.4", 5003),
            ("10.96.0.10", 53),
            ("10.244.2.7", 5353),
            "192.0.2.4",
        ), // not serving
        // NodePort on the node address, masqueraded: the reply goes to the node.
        nat(
            IPPROTO_TCP,
            ("192.0.2.1", 40000),
            ("198.51.100.10", 30080),
            ("10.244.1.5", 8080),
            "198.51.100.10",
        ), // live
        nat(
            IPPROTO_TCP,
            ("192.0.2.1", 40001),
            ("198.51.100.10", 30080),
            ("10.244.3.3", 8080),
            "198.51.100.10",
        ), // gone
        nat(
            IPPROTO_TCP,
            ("2001:db8::1", 40000),
            ("fd00::20", 80),
            ("fd00:244::5", 8080),
            "2001:db8::1",
        ), // live
        nat(
            IPPROTO_TCP,
            ("2001:db8::1", 40001),
            ("fd00::20", 80),
            ("fd00:244::99", 8080),
            "2001:db8::1",
        ), // gone
        nat(
            IPPROTO_TCP,
            ("192.0.2.9", 1234),
            ("203.0.113.50", 443),
            ("203.0.113.50", 443),
            "192.0.2.9",
        ), // not a service
    ]
}

/// The local API server serving [`serve`]'s cluster, and a kubeconfig that points at it.
struct Api {
    server: TestServer,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Api {
    fn start() -> Api {
        let server = TestServer::start_background();
        serve(&server);
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Api {
            server,
            kubeconfig,
            _dir: dir,
        }
    }
}

/// `ctreap SUBCOMMAND --kubeconfig KC --netns NS`, the way every test here runs it.
fn ctreap(sub: &str, kubeconfig: &Path, ns: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ctreap"));
    c.arg(sub)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--netns", ns]);
    c
}

fn stale(kubeconfig: &Path, ns: &TestNs, extra: &[&str]) -> Output {
    ctreap("stale", kubeconfig, &ns.name)
        .args(["--node-name", "node-1", "--sync-timeout", "10s"])
        .args(extra)
        .output()
        .expect("running ctreap stale")
}

#[test]
fn stale_json_gives_the_exact_verdicts() {
    let ns = TestNs::new("stale");
    let r = ns.ct().create_batch(&flows()).expect("create");
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let api = Api::start();
    let kc = api.kubeconfig.as_path();

    let out = stale(kc, &ns, &["-o", "json"]);
    assert!(
        out.status.success(),
        "stale failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let counts: Vec<u64> = [
        "live",
        "draining",
        "stale_gone",
        "stale_not_serving",
        "not_service",
    ]
    .iter()
    .map(|k| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {report}"))
    })
    .collect();
    assert_eq!(counts, [3, 1, 3, 1, 1], "{report:#}");
    let mut groups: Vec<(String, String, String, String)> = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["service"].as_str().unwrap().to_owned(),
                g["frontend"].as_str().unwrap().to_owned(),
                g["backend"].as_str().unwrap().to_owned(),
                g["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    groups.sort();
    let want: Vec<(String, String, String, String)> = [
        ("dns", "10.96.0.10:53", "10.244.1.5:5353", "live"),
        ("dns", "10.96.0.10:53", "10.244.1.6:5353", "draining"),
        (
            "dns",
            "10.96.0.10:53",
            "10.244.2.7:5353",
            "stale_not_serving",
        ),
        ("dns", "10.96.0.10:53", "10.244.9.9:5353", "stale_gone"),
        ("web", "198.51.100.10:30080", "10.244.1.5:8080", "live"),
        (
            "web",
            "198.51.100.10:30080",
            "10.244.3.3:8080",
            "stale_gone",
        ),
        ("web", "[fd00::20]:80", "[fd00:244::5]:8080", "live"),
        ("web", "[fd00::20]:80", "[fd00:244::99]:8080", "stale_gone"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(groups, want);

    // --fail-on-stale exits 1 while stale flows exist; --service narrows the report.
    let out = stale(kc, &ns, &["--fail-on-stale"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("default/web")
            && table.contains("10.244.3.3:8080")
            && table.contains("gone"),
        "{table}"
    );
    let out = stale(
        kc,
        &ns,
        &["-o", "json", "--namespace", "default", "--service", "dns"],
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(
        report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["service"] == "dns"),
        "{report:#}"
    );

    // Once the gone backends' flows are flushed, nothing is stale.
    let mut ct = ns.ct();
    for (fe, port, be, bport, proto) in [
        ("10.96.0.10", 53, "10.244.9.9", 5353, IPPROTO_UDP),
        ("10.96.0.10", 53, "10.244.2.7", 5353, IPPROTO_UDP),
        ("198.51.100.10", 30080, "10.244.3.3", 8080, IPPROTO_TCP),
        ("fd00::20", 80, "fd00:244::99", 8080, IPPROTO_TCP),
    ] {
        let f = ctnetlink::Filter {
            proto: Some(proto),
            orig_dst: Some(ip(fe)),
            orig_dst_port: Some(port),
            reply_src: Some(ip(be)),
            reply_src_port: Some(bport),
            ..ctnetlink::Filter::default()
        };
        assert_eq!(ct.flush(&f).expect("flush").deleted, 1);
    }
    let out = stale(kc, &ns, &["--fail-on-stale"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no stale flows"));
}

#[test]
fn stale_without_an_api_server_says_so() {
    let ns = TestNs::new("noapi");
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\ncurrent-context: c\n",
    )
    .expect("write kubeconfig");
    let out = ctreap("stale", &kc, &ns.name)
        .args(["--node-name", "node-1", "--sync-timeout", "2s"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the API server at http://127.0.0.1:9/")
            && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn watch_prints_one_line_per_interval_naming_dead_backends() {
    let ns = TestNs::new("watch");
    ns.ct().create_batch(&flows()).expect("create");
    let api = Api::start();
    let (server, kc) = (&api.server, api.kubeconfig.as_path());
    let child = ctreap("watch", kc, &ns.name)
        .args([
            "--node-name",
            "node-1",
            "--interval",
            "500ms",
            "--count",
            "3",
            "-n",
            "default",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn watch");
    // A rollout step while it runs: the draining dns endpoint leaves.
    std::thread::sleep(std::time::Duration::from_millis(700));
    server
        .apply_json(slice(
            "dns-a",
            "dns",
            "IPv4",
            "dns",
            "UDP",
            5353,
            json!([
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
            ]),
        ))
        .expect("apply");
    let out = child.wait_with_output().expect("watch output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("endpoints +0 -0"), "{text}");
    assert!(
        lines[0].contains("default/dns live=1 draining=1 stale=2"),
        "{text}"
    );
    assert!(
        lines[0].contains("10.244.9.9:5353 (udp gone, 1 flows)"),
        "{text}"
    );
    assert!(
        lines[0].contains("10.244.2.7:5353 (udp not_serving, 1 flows)"),
        "{text}"
    );
    let last = lines[2];
    assert!(
        text.contains("endpoints +0 -1"),
        "the removed endpoint is reported: {text}"
    );
    assert!(
        last.contains("default/dns live=1 draining=0 stale=3"),
        "{text}"
    );
    assert!(
        last.contains("10.244.1.6:5353 (udp gone, 1 flows)"),
        "{text}"
    );
    assert!(last.starts_with("20"), "timestamped: {last}");
}

#[test]
fn doctor_reports_node_and_api_checks() {
    let ns = TestNs::new("doctor");
    ns.sysctl("net.netfilter.nf_conntrack_acct", "1");
    let api = Api::start();
    let kc = api.kubeconfig.as_path();
    let out = ctreap("doctor", kc, &ns.name).output().expect("run doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "no check should FAIL here: {text}");
    let level = |name: &str| {
        text.lines()
            .find(|l| l.get(6..).is_some_and(|r| r.starts_with(name)))
            .unwrap_or_else(|| panic!("no {name} line: {text}"))
            .split_whitespace()
            .next()
            .expect("level")
            .to_owned()
    };
    assert_eq!(level("ctnetlink"), "OK");
    assert_eq!(level("filtered flush"), "OK");
    assert_eq!(
        level("nf_conntrack_acct"),
        "OK",
        "set to 1 in this namespace"
    );
    assert_eq!(level("nf_conntrack_timestamp"), "WARN");
    assert_eq!(level("api server"), "OK");
    assert_eq!(level("services using NAT"), "WARN", "dns has a UDP port");
    assert!(text.contains("2 use NAT (1 with UDP ports"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_ctreap"))
        .args(["doctor", "--skip-api", "--netns", "ctreap-no-such-ns"])
        .output()
        .expect("run doctor");
    assert_eq!(out.status.code(), Some(1), "a missing namespace is a FAIL");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  ctnetlink"));
}

/// The line of `ctreap doctor --skip-api --netns NS EXTRA..` that names `check`.
fn doctor_line(ns: &TestNs, check: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ctreap"))
        .args(["doctor", "--skip-api", "--netns", &ns.name])
        .args(extra)
        .output()
        .expect("run doctor");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no {check} line: {out:?}"))
        .to_owned()
}

/// Runs `args` in the namespace (`ip netns exec`); fails the test if it fails.
fn in_ns(ns: &TestNs, args: &[&str]) {
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .status()
        .expect("ip netns exec");
    assert!(st.success(), "{args:?}");
}

/// `ctreap doctor` names the service proxy programming the node's namespace and whether ctreap
/// applies there (issue 12; docs/compatibility.md): nothing found, kube-proxy's nftables table,
/// its iptables chain, and Cilium's eBPF maps alone (ctreap does not apply).
#[test]
fn doctor_names_the_service_proxy() {
    let ns = TestNs::new("doctor-proxy");
    let bpf = tempfile::tempdir().expect("tempdir");
    let bpffs = bpf.path().to_str().expect("a UTF-8 path").to_owned();
    let proxy_line = || doctor_line(&ns, "service proxy", &["--bpffs", &bpffs]);
    let in_ns = |args: &[&str]| in_ns(&ns, args);
    let line = proxy_line();
    assert!(
        line.starts_with("WARN") && line.contains("none found"),
        "{line}"
    );

    // Cilium's maps alone: an eBPF proxy, ctreap does not apply.
    std::fs::create_dir_all(bpf.path().join("tc/globals")).expect("mkdir");
    std::fs::write(bpf.path().join("tc/globals/cilium_lb4_services_v2"), "").expect("write");
    let line = proxy_line();
    assert!(
        line.starts_with("WARN") && line.contains("Cilium eBPF") && line.contains("does not apply"),
        "{line}"
    );

    in_ns(&["nft", "add", "table", "ip", "kube-proxy"]);
    let line = proxy_line();
    assert!(
        line.starts_with("OK")
            && line.contains("kube-proxy nftables mode")
            && line.contains("ctreap applies"),
        "{line}"
    );
    in_ns(&["nft", "delete", "table", "ip", "kube-proxy"]);
    in_ns(&["iptables", "-t", "nat", "-N", "KUBE-SERVICES"]);
    let line = proxy_line();
    assert!(
        line.starts_with("OK") && line.contains("kube-proxy iptables mode"),
        "{line}"
    );
}

/// `ctreap doctor` says whether the CNI portmap plugin's hostPort DNAT is on the node (issue
/// 21): none; the plugin's iptables chain with one rule, as it writes it; its nftables table;
/// and the same with `--hostports=false`, a warning.
#[test]
fn doctor_finds_the_portmap_plugins_hostport_dnat() {
    let ns = TestNs::new("doctor-portmap");
    let line = |extra: &[&str]| doctor_line(&ns, "hostPort DNAT", extra);
    let in_ns = |args: &[&str]| in_ns(&ns, args);
    let l = line(&[]);
    assert!(
        l.starts_with("OK") && l.contains("no CNI portmap rules"),
        "{l}"
    );

    in_ns(&["iptables", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT"]);
    in_ns(&["iptables", "-t", "nat", "-N", "CNI-DN-0123456789abcdef"]);
    in_ns(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "CNI-HOSTPORT-DNAT",
        "-p",
        "udp",
        "-m",
        "multiport",
        "--destination-ports",
        "8125",
        "-j",
        "CNI-DN-0123456789abcdef",
    ]);
    in_ns(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "CNI-DN-0123456789abcdef",
        "-p",
        "udp",
        "--dport",
        "8125",
        "-j",
        "DNAT",
        "--to-destination",
        "10.244.5.7:8125",
    ]);
    let l = line(&[]);
    assert!(
        l.starts_with("OK")
            && l.contains("CNI-HOSTPORT-DNAT, 1 rule)")
            && l.contains("ctreap judges them"),
        "{l}"
    );
    let l = line(&["--hostports=false"]);
    assert!(
        l.starts_with("WARN") && l.contains("--hostports=false"),
        "{l}"
    );

    in_ns(&["iptables", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT"]);
    in_ns(&["iptables", "-t", "nat", "-X", "CNI-HOSTPORT-DNAT"]);
    in_ns(&["nft", "add", "table", "inet", "cni_hostport"]);
    let l = line(&[]);
    assert!(
        l.starts_with("OK") && l.contains("nftables table cni_hostport"),
        "{l}"
    );
}

/// The Pod watch failing (503): the commands wait for it like any other (nothing is judged on
/// a half-listed cluster), then fail naming it and the way out; with `--hostports=false` they
/// do without it. Refused by RBAC (403): they go on without hostPorts, saying so.
#[test]
fn a_pod_watch_that_cannot_list_is_named_with_the_way_out() {
    use kube_testserver::{Fault, ResourceKind, ServerConfig};
    let ns = TestNs::new("stale-nopods");
    let server = TestServer::try_start_background_with(ServerConfig::default()).expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).expect("kubeconfig");
    server.set_fault(Fault::all(ResourceKind::Pod), true);
    let stale = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ctreap"))
            .args(["stale", "--kubeconfig"])
            .arg(&kc)
            .args([
                "--node-name",
                "node-1",
                "--netns",
                &ns.name,
                "--sync-timeout",
                "2s",
            ])
            .args(extra)
            .output()
            .expect("run stale")
    };
    let out = stale(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("waiting for pods")
            && err.contains("--hostports=false does without the Pod watch"),
        "{err}"
    );
    let out = stale(&["--hostports=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Refused by RBAC (403), not failing: nothing to wait for. Services are judged, hostPorts
    // not, and the warning says so and what to grant.
    server.set_fault(Fault::all(ResourceKind::Pod), false);
    server.set_fault(Fault::forbidden(ResourceKind::Pod), true);
    let out = stale(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("cannot watch this node's Pods (403 Forbidden)")
            && err.contains("pods is forbidden")
            && err.contains("--hostports=false"),
        "{err}"
    );
}
