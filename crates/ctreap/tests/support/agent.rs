//! Shared by the agent's end-to-end tests, its churn test and its benchmark: the real
//! `ctreap run` as a child process (HTTP endpoints, parsed metrics, SIGTERM), the cluster it
//! watches in the local API server (JSON builders), and the namespace's conntrack table as a
//! set of flows.
//!
//! Included with `#[path = "support/agent.rs"] mod agent;` (tests) or
//! `#[path = "../tests/support/agent.rs"]` (the benchmark), so it depends on nothing of the
//! other test helpers. Everything here panics with a message on failure, as the tests do.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ctnetlink::consts::*;
use ctnetlink::{Conntrack, Entry, Filter, L4, ProtoInfo, SctpInfo, TcpInfo, Tuple};
use ctreap_agent_process::{AgentProcess, Launch};
use kube_testserver::{ServerConfig, TestServer};
use serde_json::{Value, json};

/// The node every test cluster has, and its InternalIP.
pub const NODE: &str = "node-1";
pub const NODE_IP: &str = "198.51.100.10";

// ---------------------------------------------------------------------------------------------
// Waiting.

/// Polls `cond` every 10 ms until it holds; panics with `what` after `within`. Returns how
/// long it took.
pub fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    eventually_with(within, what, || {
        if cond() { Ok(()) } else { Err(String::new()) }
    })
}

/// [`eventually`] for a check that says why it does not hold yet (`Err(detail)`); the last
/// detail goes into the panic message.
pub fn eventually_with(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let t = Instant::now();
    loop {
        let detail = match check() {
            Ok(()) => return t.elapsed(),
            Err(d) => d,
        };
        if t.elapsed() > within {
            panic!("timed out after {within:?} waiting for: {what}\n{detail}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks `bad` every 20 ms for `period`; panics with `what` the first time it holds.
pub fn never(period: Duration, what: &str, mut bad: impl FnMut() -> Option<String>) {
    let t = Instant::now();
    while t.elapsed() < period {
        if let Some(detail) = bad() {
            panic!("{what} (after {:?} of {period:?}):\n{detail}", t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The API server.

/// The local API server with a kubeconfig pointing at it.
pub struct Api {
    pub server: TestServer,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Api {
    pub fn start() -> Api {
        Api::start_with(ServerConfig::default())
    }

    pub fn start_with(config: ServerConfig) -> Api {
        let server = TestServer::try_start_background_with(config)
            .unwrap_or_else(|e| panic!("kube-testserver: cannot start: {e}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        server.apply_json(node(NODE, NODE_IP)).expect("node");
        Api {
            server,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn apply(&self, obj: Value) {
        let what = format!("{}/{}", obj["kind"], obj["metadata"]["name"]);
        self.server
            .apply_json(obj)
            .unwrap_or_else(|e| panic!("applying {what}: {e}"));
    }

    /// Several objects in one burst (one lock: the watch events go out back to back).
    pub fn apply_all(&self, objs: Vec<Value>) {
        self.server
            .apply_all(objs)
            .unwrap_or_else(|e| panic!("applying a burst: {e}"));
    }
}

pub fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                    {"type": "Hostname", "address": name}]}})
}

/// A ClusterIP Service in `default`: `ips` its clusterIPs (one per family), `ports` as
/// (name, port, protocol, targetPort).
pub fn service(name: &str, ips: &[&str], ports: &[(&str, u16, &str, u16)]) -> Value {
    let families: Vec<&str> = ips
        .iter()
        .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto, target)| {
            json!({"name": n, "port": p, "protocol": proto, "targetPort": target})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"type": "ClusterIP", "clusterIP": ips[0], "clusterIPs": ips,
                    "ipFamilies": families, "ports": ports}})
}

/// An EndpointSlice of Service `svc` in `default`; `ports` as (name, port, protocol).
pub fn slice(name: &str, svc: &str, ports: &[(&str, u16, &str)], endpoints: Vec<Value>) -> Value {
    let v6 = endpoints
        .first()
        .and_then(|e| e["addresses"][0].as_str())
        .is_some_and(|a| a.contains(':'));
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": "default",
                        "labels": {"kubernetes.io/service-name": svc}},
           "addressType": if v6 { "IPv6" } else { "IPv4" },
           "ports": ports, "endpoints": endpoints})
}

/// [`slice`] with a ready endpoint per address.
pub fn slice_ips(name: &str, svc: &str, ports: &[(&str, u16, &str)], ips: &[&str]) -> Value {
    slice(name, svc, ports, ips.iter().map(|i| ep(i)).collect())
}

/// A ready endpoint on this node.
pub fn ep(ip: &str) -> Value {
    ep_cond(ip, true, true, false)
}

pub fn ep_cond(ip: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({"addresses": [ip], "nodeName": NODE,
           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

// ---------------------------------------------------------------------------------------------
// Flows.

/// A DNATed flow as the tests create it: `client -> frontend`, translated to `backend`, the
/// reply going back to the client (no masquerade).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub proto: u8,
    pub client: SocketAddr,
    pub frontend: SocketAddr,
    pub backend: SocketAddr,
    /// The reply destination (the client, unless the flow was masqueraded).
    pub reply_dst: SocketAddr,
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_SCTP => "sctp",
        _ => "other",
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} (backend {})",
            proto_name(self.proto),
            self.client,
            self.frontend,
            self.backend
        )
    }
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is no socket address: {e}"))
}

/// Unique client addresses for the whole test process: no two flows share an original tuple.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// A fresh client address of the frontend's family: 100.64.0.0/10 or 2001:db8:c::/64, ports
/// 10000-59999.
pub fn client_for(frontend: SocketAddr) -> SocketAddr {
    let n = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let port = 10_000 + (n % 50_000) as u16;
    let host = (n / 50_000) as u32;
    match frontend {
        SocketAddr::V4(_) => SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(100, 64, 0, 1)) + host,
            )),
            port,
        ),
        SocketAddr::V6(_) => SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xc,
                0,
                0,
                0,
                0,
                1 + host as u16,
            )),
            port,
        ),
    }
}

impl Flow {
    /// A new flow from a fresh client.
    pub fn new(proto: u8, frontend: &str, backend: &str) -> Flow {
        let frontend = sa(frontend);
        let client = client_for(frontend);
        Flow {
            proto,
            client,
            frontend,
            backend: sa(backend),
            reply_dst: client,
        }
    }

    /// `n` new flows of one (frontend, backend) pair.
    pub fn many(proto: u8, frontend: &str, backend: &str, n: usize) -> Vec<Flow> {
        (0..n)
            .map(|_| Flow::new(proto, frontend, backend))
            .collect()
    }

    /// The conntrack entry: timeout 600 s, TCP ESTABLISHED, SCTP ESTABLISHED.
    pub fn entry(&self) -> Entry {
        let orig = Tuple::new(
            self.client.ip(),
            self.frontend.ip(),
            L4::ports(self.proto, self.client.port(), self.frontend.port()),
        );
        let reply = Tuple::new(
            self.backend.ip(),
            self.reply_dst.ip(),
            L4::ports(self.proto, self.backend.port(), self.reply_dst.port()),
        );
        let mut e = Entry::new(orig, reply);
        e.timeout = Some(600);
        e.status = IPS_SEEN_REPLY | IPS_ASSURED;
        e.protoinfo = match self.proto {
            IPPROTO_TCP => Some(ProtoInfo::Tcp(TcpInfo {
                state: TCP_CONNTRACK_ESTABLISHED,
                ..TcpInfo::default()
            })),
            IPPROTO_SCTP => Some(ProtoInfo::Sctp(SctpInfo {
                state: SCTP_CONNTRACK_ESTABLISHED,
                vtag_original: Some(1),
                vtag_reply: Some(2),
            })),
            _ => None,
        };
        e
    }

    /// The flow an entry is (ports 0 for portless protocols).
    pub fn of(e: &Entry) -> Flow {
        let port = |p: Option<u16>| p.unwrap_or(0);
        Flow {
            proto: e.orig.proto.num,
            client: SocketAddr::new(e.orig.src, port(e.orig.proto.src_port)),
            frontend: SocketAddr::new(e.orig.dst, port(e.orig.proto.dst_port)),
            backend: SocketAddr::new(e.reply.src, port(e.reply.proto.src_port)),
            reply_dst: SocketAddr::new(e.reply.dst, port(e.reply.proto.dst_port)),
        }
    }
}

/// Creates the flows; every one must be accepted.
pub fn create(ct: &mut Conntrack, flows: &[Flow]) {
    let entries: Vec<Entry> = flows.iter().map(Flow::entry).collect();
    for chunk in entries.chunks(8192) {
        let r = ct.create_batch(chunk).expect("create_batch");
        assert!(
            r.failed.is_empty(),
            "creating flows: {} of {} failed, first: {:?}",
            r.failed.len(),
            chunk.len(),
            r.failed
                .first()
                .map(|(i, e)| (Flow::of(&chunk[*i]), e.to_string()))
        );
    }
}

/// The whole table as a set of flows.
pub fn table(ct: &mut Conntrack) -> BTreeSet<Flow> {
    let mut set = BTreeSet::new();
    let s = ct
        .dump(&Filter::default(), |e| {
            set.insert(Flow::of(&e));
            ControlFlow::Continue(())
        })
        .expect("dumping the table");
    assert_eq!(s.decode_errors, 0, "decode errors: {s:?}");
    set
}

/// Entries in the table (CT_GET_STATS).
pub fn table_count(ct: &mut Conntrack) -> u64 {
    u64::from(ct.stats().expect("CT_GET_STATS").entries)
}

/// How many of `flows` are in `table`.
pub fn present(table: &BTreeSet<Flow>, flows: &[Flow]) -> usize {
    flows.iter().filter(|f| table.contains(f)).count()
}

/// Asserts that `after` is exactly `before` without `gone`, naming every difference.
pub fn assert_table(before: &BTreeSet<Flow>, gone: &[Flow], after: &BTreeSet<Flow>, when: &str) {
    let gone: BTreeSet<Flow> = gone.iter().copied().collect();
    let want: BTreeSet<Flow> = before.difference(&gone).copied().collect();
    if &want == after {
        return;
    }
    let wrongly_deleted: Vec<String> = want.difference(after).map(|f| f.to_string()).collect();
    let wrongly_kept: Vec<String> = after.difference(&want).map(|f| f.to_string()).collect();
    panic!(
        "{when}: the table is not the expected one.\n  {} flows deleted that should have stayed:\n    {}\n  {} flows present that should be gone (or were never there):\n    {}",
        wrongly_deleted.len(),
        wrongly_deleted.join("\n    "),
        wrongly_kept.len(),
        wrongly_kept.join("\n    ")
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP and metrics.

#[allow(unused_imports)] // not every test binary asks for it
pub use ctreap_agent_process::http_get;

/// A scrape of /metrics: every sample by its canonical key, `name{a="x",b="y"}` with the labels
/// sorted by name (or just `name`), and the text as served.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub text: String,
    pub samples: BTreeMap<String, f64>,
}

/// Splits `name{labels}` into the name and its labels, unescaping values.
fn parse_series(s: &str) -> Option<(String, Vec<(String, String)>)> {
    let Some(open) = s.find('{') else {
        return Some((s.to_string(), Vec::new()));
    };
    let name = s[..open].to_string();
    let inner = s[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim().to_string(), value));
    }
    Some((name, labels))
}

fn canonical(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut l: Vec<&(String, String)> = labels.iter().collect();
    l.sort();
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The canonical form of a series written by hand (labels in any order).
pub fn key(series: &str) -> String {
    let (name, labels) =
        parse_series(series).unwrap_or_else(|| panic!("{series:?} is no metric series"));
    canonical(&name, &labels)
}

impl Metrics {
    /// Parses the Prometheus/OpenMetrics text format; panics on a sample line it cannot read.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // An exemplar follows " # ".
            let line = line.split(" # ").next().unwrap_or(line);
            // The series ends at the last '}' if there are labels, else at the first space.
            let (series, rest) = match line.rfind('}') {
                Some(i) if line.contains('{') => (&line[..=i], &line[i + 1..]),
                _ => line
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("metric line without a value: {line:?}")),
            };
            let value_text = rest
                .split_whitespace()
                .next()
                .unwrap_or_else(|| panic!("metric line without a value: {line:?}"));
            let value: f64 = match value_text {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("metric value {v:?} is no number: {line:?}")),
            };
            let (name, labels) = parse_series(series)
                .unwrap_or_else(|| panic!("metric series does not parse: {line:?}"));
            samples.insert(canonical(&name, &labels), value);
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of one series (labels in any order), if served.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(&key(series)).copied()
    }

    /// The value of one series; panics with the scrape if it is missing.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{}", self.text))
    }

    /// The value, 0 when the series is not served (counters with labels appear on first use).
    pub fn or0(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// The sum over every series of `name` whose labels include all of `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter_map(|(k, v)| {
                let (n, labels) = parse_series(k)?;
                (n == name
                    && with
                        .iter()
                        .all(|(wk, wv)| labels.iter().any(|(lk, lv)| lk == wk && lv == wv)))
                .then_some(*v)
            })
            .sum::<f64>()
            + 0.0 // an empty f64 sum is -0.0
    }

    /// Every series of `name` with its value, for messages.
    pub fn series_of(&self, name: &str) -> Vec<(String, f64)> {
        self.samples
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Whether the served text has exactly this line.
    pub fn has_line(&self, line: &str) -> bool {
        self.text.lines().any(|l| l.trim_end() == line)
    }

    /// Flows deleted, all labels.
    pub fn deleted(&self) -> f64 {
        self.sum("ctreap_flows_deleted_total", &[])
    }

    /// Flows deleted by one trigger.
    pub fn deleted_by(&self, trigger: &str) -> f64 {
        self.sum("ctreap_flows_deleted_total", &[("trigger", trigger)])
    }
}

// ---------------------------------------------------------------------------------------------
// The agent.

/// A free port on 127.0.0.1 (bound and released: the agent binds it a moment later).
pub fn free_port() -> u16 {
    ctreap_agent_process::free_port().expect("a free port on 127.0.0.1")
}

/// `ctreap run` as a child process ([`AgentProcess`], shared with the lab), its log in a
/// temporary file; every failure a panic with the log's tail.
pub struct Agent {
    proc: AgentProcess,
    pub pid: u32,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The ctreap binary: the one cargo built for these tests, or (for the benchmark, which cargo
/// gives no CARGO_BIN_EXE_ for) `$CTREAP_BIN`, or target/<profile>/ctreap beside the running
/// executable's deps/ directory.
pub fn ctreap_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_ctreap") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("CTREAP_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ctreap"))
        .expect("target directory");
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --release -p ctreap` first, or set CTREAP_BIN",
        p.display()
    );
    p
}

impl Agent {
    /// `ctreap run --netns NS --kubeconfig K --node-name node-1 --listen 127.0.0.1:PORT EXTRA..`
    /// (CTREAP_LOG defaults to info). Returns at once; see [`Agent::wait_ready`].
    pub fn start(api: &Api, netns: &str, extra: &[&str]) -> Agent {
        Agent::start_bin(&ctreap_bin(), &api.kubeconfig, netns, extra)
    }

    pub fn start_bin(bin: &Path, kubeconfig: &Path, netns: &str, extra: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        let proc = AgentProcess::start(Launch {
            bin,
            netns,
            kubeconfig,
            node: NODE,
            extra,
            log: &log,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Agent {
            pid: proc.pid(),
            addr: proc.addr(),
            proc,
            _dir: dir,
        }
    }

    /// The log so far (colour escapes removed, should the logger emit them).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.proc.exited().expect("agent already stopped") {
            panic!(
                "ctreap run exited unexpectedly ({st}) after {:?}; log:\n{}",
                self.proc.age(),
                self.log_tail(80)
            );
        }
    }

    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.proc.get(path)
    }

    /// GET /readyz: (status, body); (0, error) if the listener does not answer.
    pub fn readyz(&self) -> (u16, String) {
        self.proc.readyz()
    }

    /// Waits for /readyz 200.
    pub fn wait_ready(&mut self, within: Duration) -> Duration {
        self.proc
            .wait_ready(within)
            .unwrap_or_else(|e| panic!("ctreap run not ready: {e}"))
    }

    /// Waits until /healthz answers (the HTTP server is up).
    pub fn wait_http(&mut self, within: Duration) {
        self.proc
            .wait_for(within, "/healthz 200", |a| match a.get("/healthz") {
                Ok((200, _)) => Ok(()),
                Ok((code, body)) => Err(format!("{code} {body:?}")),
                Err(e) => Err(e.to_string()),
            })
            .unwrap_or_else(|e| panic!("ctreap run's /healthz: {e}"));
    }

    /// A scrape of /metrics.
    pub fn metrics(&self) -> Metrics {
        let (code, body) = self
            .get("/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics failed: {e}; log:\n{}", self.log_tail(40)));
        assert_eq!(code, 200, "GET /metrics answered {code}: {body}");
        Metrics::parse(&body)
    }

    /// Polls /metrics until `cond` holds; returns that scrape.
    pub fn wait_metrics(
        &mut self,
        within: Duration,
        what: &str,
        mut cond: impl FnMut(&Metrics) -> bool,
    ) -> Metrics {
        let mut last = Metrics::default();
        let res = self.proc.wait_for(within, what, |a| {
            let (code, body) = a.get("/metrics").map_err(|e| e.to_string())?;
            last = Metrics::parse(&body);
            if code == 200 && cond(&last) {
                Ok(())
            } else {
                Err(format!("/metrics {code}"))
            }
        });
        if let Err(e) = res {
            panic!("waiting for metrics: {e}\n/metrics:\n{}", last.text);
        }
        last
    }

    /// [`Agent::start_bin`], then waits up to 300 s for `/readyz` and for a full pass of
    /// `trigger` (`startup`, `resync`); returns the agent and the seconds it took to be ready.
    pub fn start_bin_passed(
        bin: &Path,
        kubeconfig: &Path,
        netns: &str,
        extra: &[&str],
        trigger: &str,
    ) -> (Agent, f64) {
        let t = Instant::now();
        let mut agent = Agent::start_bin(bin, kubeconfig, netns, extra);
        agent.wait_ready(Duration::from_secs(300));
        let ready = t.elapsed().as_secs_f64();
        let series = format!("ctreap_reconciles_total{{trigger=\"{trigger}\"}}");
        agent.wait_metrics(
            Duration::from_secs(300),
            &format!("a {trigger} pass"),
            |m| m.or0(&series) >= 1.0,
        );
        (agent, ready)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.proc.sigterm().expect("kill(SIGTERM)");
    }

    /// SIGTERM, then waits for the exit (killing the process after `kill_after`); returns how
    /// long the exit took and the status (`None`: killed).
    pub fn terminate(&mut self, kill_after: Duration) -> (Duration, Option<ExitStatus>) {
        self.assert_running();
        self.proc
            .terminate(kill_after)
            .expect("terminating the agent")
    }

    /// The contract's shutdown: SIGTERM, exit within 1 s, status 0. (Waits up to 10 s to say
    /// how long a slow exit took.)
    pub fn stop(&mut self) -> Duration {
        let (took, st) = self.terminate(Duration::from_secs(10));
        let log = self.log_tail(30);
        let st = st.unwrap_or_else(|| {
            panic!("ctreap run did not exit within {took:?} of SIGTERM (killed); log:\n{log}")
        });
        assert!(
            took <= Duration::from_secs(1),
            "ctreap run took {took:?} to exit after SIGTERM (contract: within 1 s); log:\n{log}"
        );
        assert!(
            st.success(),
            "ctreap run exited with {st} after SIGTERM (want 0); log:\n{log}"
        );
        took
    }

    /// utime + stime of the process so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.proc.cpu_ticks().expect("reading /proc/PID/stat")
    }

    /// A field of /proc/PID/status in KiB (VmHWM, VmRSS).
    pub fn status_kib(&self, field: &str) -> u64 {
        self.proc
            .status_kib(field)
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid))
    }

    /// The log lines whose message is `msg`.
    pub fn log_lines_with(&self, msg: &str) -> Vec<String> {
        self.proc.log_lines_with(msg)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- ctreap run log (last 60 lines) ----\n{}\n----",
                self.log_tail(60)
            );
        }
    }
}
