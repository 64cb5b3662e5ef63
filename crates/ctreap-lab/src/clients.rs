//! The lab's clients: threads that entered a client network namespace and talk to the
//! Service's ClusterIP the way the seed's clients do, recording every request.
//!
//! - `udp`: a DNS-like resolver. One bound socket for the whole run, so its source port (and
//!   with it the node's conntrack entry) never changes; one query every 20 ms, 200 ms timeout.
//! - `keepalive`: one HTTP/1.1 keep-alive connection, a request every 50 ms, 1 s request
//!   timeout; after a timeout or error it closes and reconnects from a new source port, like
//!   most HTTP clients.
//! - `pooled`: like `keepalive`, but every connection is bound to the same source port
//!   (SO_REUSEADDR), as the seed's pools do; it closes abortively (SO_LINGER 0, an RST), the
//!   only way a port can be reused at once.
//! - `fresh`: the control: a new connection (new source port) for every request.
//! - `lb`: the seed's path, "Client -> Node:30080 -> iptables DNAT -> Pod:8080": a load
//!   balancer in its own namespace that holds a pool of keep-alive connections to the
//!   Service's NodePort on the node (DNAT plus masquerade, externalTrafficPolicy=Cluster), and
//!   [`LB_FRONT`] clients of its own that each send it a request every 50 ms. It answers them
//!   503 when the upstream request fails or times out; [`LbPool`] is its pool policy.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctnetlink::Netns;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Time between two UDP queries.
pub const UDP_INTERVAL: Duration = Duration::from_millis(20);
/// How long the resolver waits for an answer.
pub const UDP_TIMEOUT: Duration = Duration::from_millis(200);
/// Time between two HTTP requests of one TCP client.
pub const HTTP_INTERVAL: Duration = Duration::from_millis(50);
/// An HTTP request's budget, connect included.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(1);
/// The pooled client's fixed source port: below the ephemeral range (32768-60999), so no
/// other client's connection can take it.
pub const POOLED_SOURCE_PORT: u16 = 31000;
/// The load balancer's upstream connections to the NodePort.
pub const LB_POOL: usize = 16;
/// The load balancer's own clients, each a new connection per request (every 50 ms).
pub const LB_FRONT: usize = 8;
/// With [`LbPool::Seed`], an upstream connection's lifetime: the pool replaces each at this
/// age, the connections' ages spread evenly over it.
pub const LB_MAX_AGE: Duration = Duration::from_secs(120);

/// What the load balancer does with an upstream connection whose request failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbPool {
    /// Close it and answer 503; the next request on that slot opens a new connection (a new
    /// source port, so a new conntrack entry). HAProxy and Envoy close a connection on error.
    #[default]
    Evict,
    /// Close it and retry the request once on a new connection; 503 only if that fails too
    /// (HAProxy's `retry-on conn-failure response-timeout`, `retries 1`).
    Retry,
    /// The seed's shape: a timeout is taken for a slow backend, so the connection stays in the
    /// pool and fails again, until the pool replaces it at its maximum age ([`LB_MAX_AGE`]);
    /// only a reset or a close drops it. The 503s decay over two minutes as the pool turns
    /// over. Run it with `--duration 150s` or more to see the whole decay.
    Seed,
}

impl LbPool {
    pub fn name(self) -> &'static str {
        match self {
            LbPool::Evict => "evict",
            LbPool::Retry => "retry",
            LbPool::Seed => "seed",
        }
    }
}

impl FromStr for LbPool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "evict" => Ok(LbPool::Evict),
            "retry" => Ok(LbPool::Retry),
            "seed" => Ok(LbPool::Seed),
            other => Err(format!(
                "{other:?} is not a pool policy (evict, retry, seed)"
            )),
        }
    }
}

impl std::fmt::Display for LbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Udp,
    Keepalive,
    Pooled,
    Fresh,
    Lb,
}

impl ClientKind {
    pub const ALL: [ClientKind; 5] = [
        ClientKind::Udp,
        ClientKind::Keepalive,
        ClientKind::Pooled,
        ClientKind::Fresh,
        ClientKind::Lb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Udp => "udp",
            ClientKind::Keepalive => "keepalive",
            ClientKind::Pooled => "pooled",
            ClientKind::Fresh => "fresh",
            ClientKind::Lb => "lb",
        }
    }

    /// One line for the report: what the client does.
    pub fn describe(self) -> &'static str {
        match self {
            ClientKind::Udp => {
                "UDP resolver, one socket (source port kept), query every 20 ms, 200 ms timeout"
            }
            ClientKind::Keepalive => {
                "HTTP keep-alive, request every 50 ms, 1 s timeout, reconnects from a new port"
            }
            ClientKind::Pooled => {
                "HTTP pool reusing source port 31000 (SO_REUSEADDR, RST on close)"
            }
            ClientKind::Fresh => {
                "HTTP, a new connection (new source port) per request: the control"
            }
            ClientKind::Lb => {
                "load balancer, 16 keep-alive connections to NodePort 30080 on the node, 8 clients of its own every 50 ms, 503 on an upstream failure"
            }
        }
    }
}

impl FromStr for ClientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "udp" | "dns" => Ok(ClientKind::Udp),
            "keepalive" | "keep-alive" => Ok(ClientKind::Keepalive),
            "pooled" | "pool" => Ok(ClientKind::Pooled),
            "fresh" => Ok(ClientKind::Fresh),
            "lb" | "haproxy" | "load-balancer" => Ok(ClientKind::Lb),
            other => Err(format!(
                "{other:?} is not a client (udp, keepalive, pooled, fresh, lb)"
            )),
        }
    }
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// No answer within the client's timeout (packets went nowhere).
    Timeout,
    /// The connection was reset (an RST came back).
    Reset,
    /// Connection refused, host or network unreachable: an ICMP or RST answered the attempt.
    Refused,
    /// Anything else: a short read, a bad answer, an unexpected socket error.
    Error,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

/// One request as the client saw it. Times are seconds since the scenario's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the request started.
    pub t: f64,
    pub outcome: Outcome,
    /// Until the answer or the failure.
    pub latency_ms: f64,
    /// The pod that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The client's source port (0: no socket yet).
    pub sport: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status the load balancer answered (`lb` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl Sample {
    /// When the client knew the outcome.
    pub fn end(&self) -> f64 {
        self.t + self.latency_ms / 1000.0
    }
}

/// A connection the client opened (TCP clients only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connect {
    pub t: f64,
    pub sport: u16,
}

/// Everything one client recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientLog {
    pub samples: Vec<Sample>,
    pub connects: Vec<Connect>,
    /// Set when the client could not start at all (e.g. the namespace was missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_error: Option<String>,
}

/// Where the clients send their traffic.
#[derive(Debug, Clone)]
pub struct Target {
    /// The client namespace they run in.
    pub ns: Netns,
    /// ClusterIP:port of the UDP Service port.
    pub udp: SocketAddr,
    /// ClusterIP:port of the HTTP Service port (`lb`: the node's address and the NodePort).
    pub http: SocketAddr,
    /// The load balancer's pool policy (`lb` only).
    pub lb_pool: LbPool,
    /// Through the ClusterIP, or to pod IPs the client resolves itself.
    pub dial: Dial,
}

/// How a client finds a server.
#[derive(Clone, Debug, Default)]
pub enum Dial {
    /// The Service's ClusterIP: the node's NAT picks a pod for each new flow.
    #[default]
    Service,
    /// A headless Service (the seed's option 3): the client resolves the pod IPs itself, as
    /// cluster DNS answers them (`records`: the ready endpoints), and talks to one without NAT.
    Headless {
        records: Arc<Mutex<Vec<Ipv4Addr>>>,
        /// Resolve once and keep the answer for the whole run (a client that caches it);
        /// otherwise resolve again for every new connection, and for UDP after a timeout.
        cache: bool,
        udp_port: u16,
        http_port: u16,
    },
}

/// What a headless client sees when the Service has no ready endpoint to resolve to.
pub(super) const NO_ENDPOINT: &str = "resolve: the headless Service has no ready endpoint";

/// Picks the address of a client's next connection or query.
pub(super) struct Dialer {
    dial: Dial,
    /// The headless answer in use.
    current: Option<Ipv4Addr>,
    /// Rotates over the answers, as resolvers rotate A records.
    next: usize,
}

impl Dialer {
    pub(super) fn new(dial: Dial) -> Dialer {
        Dialer {
            dial,
            current: None,
            next: 0,
        }
    }

    /// The address for `service` (the ClusterIP:port): itself, or a pod's IP and port.
    /// `fresh`: the last attempt failed or a new connection starts (a re-resolving client asks
    /// again). `None`: the headless Service has no ready endpoint.
    pub(super) fn addr(
        &mut self,
        service: SocketAddr,
        udp: bool,
        fresh: bool,
    ) -> Option<SocketAddr> {
        let Dial::Headless {
            records,
            cache,
            udp_port,
            http_port,
        } = &self.dial
        else {
            return Some(service);
        };
        if self.current.is_none() || (fresh && !*cache) {
            let r = records.lock().unwrap_or_else(PoisonError::into_inner);
            if !r.is_empty() {
                self.current = Some(r[self.next % r.len()]);
                self.next += 1;
            } else if !*cache {
                self.current = None;
            }
        }
        let port = if udp { *udp_port } else { *http_port };
        self.current.map(|ip| SocketAddr::from((ip, port)))
    }
}

pub(super) type Shared = Arc<Mutex<ClientLog>>;

pub(super) fn lock(log: &Shared) -> std::sync::MutexGuard<'_, ClientLog> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Running clients; [`Clients::stop`] ends them and hands back their logs.
pub struct Clients {
    stop: Arc<AtomicBool>,
    running: Vec<(ClientKind, Shared, JoinHandle<()>)>,
}

/// Live counts for progress lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    /// Whether the latest request failed.
    pub failing: bool,
}

impl Clients {
    /// Starts one thread per client, each inside its target's namespace. `epoch` is the
    /// scenario's time zero.
    pub fn start(clients: &[(ClientKind, Target)], epoch: Instant) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let running = clients
            .iter()
            .map(|(kind, target)| {
                let kind = *kind;
                let log: Shared = Arc::default();
                let (t, s, l) = (target.clone(), stop.clone(), log.clone());
                let handle = std::thread::Builder::new()
                    .name(format!("lab-{kind}"))
                    .spawn(move || {
                        let ns = t.ns.clone();
                        let l2 = l.clone();
                        let res = ns.run(move || run_client(kind, &t, epoch, &s, &l2));
                        let err = match res {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(format!("{kind} client: {e}")),
                            Err(e) => Some(format!("{kind} client: {e}")),
                        };
                        if err.is_some() {
                            lock(&l).setup_error = err;
                        }
                    })
                    .expect("spawning a client thread");
                (kind, log, handle)
            })
            .collect();
        Clients { stop, running }
    }

    pub fn counts(&self) -> Vec<(ClientKind, Counts)> {
        self.running
            .iter()
            .map(|(k, log, _)| {
                let log = lock(log);
                let failed = log.samples.iter().filter(|s| !s.outcome.is_ok()).count();
                let c = Counts {
                    ok: log.samples.len() - failed,
                    failed,
                    failing: log.samples.last().is_some_and(|s| !s.outcome.is_ok()),
                };
                (*k, c)
            })
            .collect()
    }

    /// Client setup errors so far (a client that could not start).
    pub fn setup_errors(&self) -> Vec<String> {
        self.running
            .iter()
            .filter_map(|(_, log, _)| lock(log).setup_error.clone())
            .collect()
    }

    /// Stops every client (each ends within its request timeout) and returns the logs.
    pub fn stop(mut self) -> BTreeMap<ClientKind, ClientLog> {
        self.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut self.running)
            .into_iter()
            .map(|(k, log, h)| {
                let _ = h.join();
                let mut log = std::mem::take(&mut *lock(&log));
                // The load balancer's clients record concurrently: in order of start.
                log.samples.sort_by(|a, b| a.t.total_cmp(&b.t));
                (k, log)
            })
            .collect()
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub(super) fn secs(epoch: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(epoch).as_secs_f64()
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sleeps until `next` (advanced by `interval`), or returns at once when behind schedule.
fn pace(next: &mut Instant, interval: Duration) {
    *next += interval;
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else {
        *next = now;
    }
}

/// [`pace`] for the async clients: sleeps until `next` (advanced by `interval`), or returns at
/// once when behind schedule.
pub(super) async fn pace_async(next: &mut tokio::time::Instant, interval: Duration) {
    *next += interval;
    let now = tokio::time::Instant::now();
    if *next > now {
        tokio::time::sleep_until(*next).await;
    } else {
        *next = now;
    }
}

fn run_client(
    kind: ClientKind,
    target: &Target,
    epoch: Instant,
    stop: &AtomicBool,
    log: &Shared,
) -> io::Result<()> {
    match kind {
        ClientKind::Udp => udp_resolver(target, epoch, stop, log),
        _ => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            if kind == ClientKind::Lb {
                rt.block_on(super::lb::run(target, epoch, stop, log))?;
            } else {
                rt.block_on(http_client(kind, target, epoch, stop, log));
            }
            Ok(())
        }
    }
}

/// The pod name in a UDP answer to query `q`: the responder answers "POD QUERY".
pub fn parse_udp_answer(answer: &[u8], query: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(answer).ok()?;
    let q = std::str::from_utf8(query).ok()?;
    let pod = text.trim_end().strip_suffix(q)?.trim();
    (!pod.is_empty()).then(|| pod.to_string())
}

fn udp_resolver(
    target: &Target,
    epoch: Instant,
    stop: &AtomicBool,
    log: &Shared,
) -> io::Result<()> {
    let mut dialer = Dialer::new(target.dial.clone());
    let mut failed = false;
    // One socket for the whole run: its source port never changes, as a resolver's.
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    let sport = sock.local_addr()?.port();
    let mut buf = [0u8; 1500];
    let mut seq: u64 = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let query = format!("q{seq}");
        let start = Instant::now();
        let t = secs(epoch, start);
        let dest = dialer.addr(target.udp, true, failed);
        let sent = match dest {
            Some(a) => sock.send_to(query.as_bytes(), a),
            None => Err(io::Error::new(io::ErrorKind::HostUnreachable, NO_ENDPOINT)),
        };
        let (outcome, pod, error) = match sent {
            Err(e) => (classify_io(&e), None, Some(e.to_string())),
            Ok(_) => {
                let deadline = start + UDP_TIMEOUT;
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        break (Outcome::Timeout, None, None);
                    }
                    sock.set_read_timeout(Some(deadline - now))?;
                    match sock.recv_from(&mut buf) {
                        Ok((n, _)) => match parse_udp_answer(&buf[..n], query.as_bytes()) {
                            Some(pod) => break (Outcome::Ok, Some(pod), None),
                            // A late answer to an earlier query: keep waiting for ours.
                            None => continue,
                        },
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            break (Outcome::Timeout, None, None);
                        }
                        Err(e) => break (classify_io(&e), None, Some(e.to_string())),
                    }
                }
            }
        };
        failed = outcome != Outcome::Ok;
        lock(log).samples.push(Sample {
            t,
            outcome,
            latency_ms: ms(start.elapsed()),
            pod,
            sport,
            error,
            status: None,
        });
        pace(&mut next, UDP_INTERVAL);
    }
    Ok(())
}

pub(super) fn classify_io(e: &io::Error) -> Outcome {
    use io::ErrorKind::*;
    match e.kind() {
        TimedOut | WouldBlock => Outcome::Timeout,
        ConnectionReset | ConnectionAborted | BrokenPipe => Outcome::Reset,
        ConnectionRefused | HostUnreachable | NetworkUnreachable => Outcome::Refused,
        _ => Outcome::Error,
    }
}

/// A failed request: what the client saw.
pub(super) struct Failure {
    pub(super) outcome: Outcome,
    pub(super) error: String,
}

impl Failure {
    fn io(what: &str, e: &io::Error) -> Failure {
        Failure {
            outcome: classify_io(e),
            error: format!("{what}: {e}"),
        }
    }

    fn timeout(what: &str) -> Failure {
        Failure {
            outcome: Outcome::Timeout,
            error: format!("{what}: no answer within {} ms", HTTP_TIMEOUT.as_millis()),
        }
    }
}

/// One HTTP connection with its read buffer (bytes after the last response).
pub(super) struct Conn {
    stream: TcpStream,
    pub(super) sport: u16,
    pub(super) buf: Vec<u8>,
}

pub(super) async fn connect(kind: ClientKind, target: SocketAddr) -> io::Result<Conn> {
    let sock = TcpSocket::new_v4()?;
    if kind == ClientKind::Pooled {
        // The seed's pools: every connection from the same source port. SO_REUSEADDR lets
        // the port be bound again at once; an abortive close (RST) frees the 4-tuple, which
        // a graceful close would hold in FIN_WAIT for as long as the peer is silent.
        sock.set_reuseaddr(true)?;
        sock.set_zero_linger()?;
        sock.bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, POOLED_SOURCE_PORT).into())?;
    }
    let stream = sock.connect(target).await?;
    stream.set_nodelay(true)?;
    let sport = stream.local_addr()?.port();
    Ok(Conn {
        stream,
        sport,
        buf: Vec::new(),
    })
}

/// Parses one HTTP/1.1 response at the start of `buf`: (status, body, bytes used,
/// connection close), or None while it is incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<(u16, String, usize, bool)>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err("response header longer than 16 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "response header not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut len = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let len = len.ok_or("response without Content-Length")?;
    let body_start = head_end + 4;
    if buf.len() < body_start + len {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buf[body_start..body_start + len])
        .trim()
        .to_string();
    Ok(Some((status, body, body_start + len, close)))
}

/// Sends one GET and reads its response. Ok((pod, keep the connection)).
pub(super) async fn request(conn: &mut Conn, close: bool) -> Result<(String, bool), Failure> {
    let req = if close {
        "GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    } else {
        "GET / HTTP/1.1\r\nHost: lab\r\n\r\n"
    };
    conn.stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| Failure::io("send", &e))?;
    let mut chunk = [0u8; 4096];
    loop {
        match parse_response(&conn.buf) {
            Err(e) => {
                return Err(Failure {
                    outcome: Outcome::Error,
                    error: e,
                });
            }
            Ok(Some((status, body, used, server_close))) => {
                conn.buf.drain(..used);
                if status != 200 {
                    return Err(Failure {
                        outcome: Outcome::Error,
                        error: format!("HTTP {status}"),
                    });
                }
                return Ok((body, !server_close));
            }
            Ok(None) => {}
        }
        let n = conn
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| Failure::io("receive", &e))?;
        if n == 0 {
            return Err(Failure {
                outcome: Outcome::Reset,
                error: "receive: connection closed by the peer".into(),
            });
        }
        conn.buf.extend_from_slice(&chunk[..n]);
    }
}

async fn http_client(
    kind: ClientKind,
    target: &Target,
    epoch: Instant,
    stop: &AtomicBool,
    log: &Shared,
) {
    let mut dialer = Dialer::new(target.dial.clone());
    let mut conn: Option<Conn> = None;
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let start = Instant::now();
        let t = secs(epoch, start);
        let fresh = kind == ClientKind::Fresh;
        let attempt = async {
            if conn.is_none() {
                let dest = dialer
                    .addr(target.http, false, true)
                    .ok_or_else(|| Failure {
                        outcome: Outcome::Refused,
                        error: NO_ENDPOINT.into(),
                    })?;
                let c = connect(kind, dest)
                    .await
                    .map_err(|e| Failure::io("connect", &e))?;
                lock(log).connects.push(Connect {
                    t: secs(epoch, Instant::now()),
                    sport: c.sport,
                });
                conn = Some(c);
            }
            let c = conn.as_mut().expect("connected above");
            let sport = c.sport;
            request(c, fresh)
                .await
                .map(|(pod, keep)| (pod, keep, sport))
        };
        let res = tokio::time::timeout(HTTP_TIMEOUT, attempt).await;
        let sport = conn.as_ref().map_or(0, |c| c.sport);
        let sample = match res {
            Ok(Ok((pod, keep, sport))) => {
                if !keep || fresh {
                    conn = None;
                }
                Sample {
                    t,
                    outcome: Outcome::Ok,
                    latency_ms: ms(start.elapsed()),
                    pod: Some(pod),
                    sport,
                    error: None,
                    status: None,
                }
            }
            Ok(Err(f)) => {
                conn = None;
                Sample {
                    t,
                    outcome: f.outcome,
                    latency_ms: ms(start.elapsed()),
                    pod: None,
                    sport,
                    error: Some(f.error),
                    status: None,
                }
            }
            Err(_) => {
                let what = if conn.is_some() { "request" } else { "connect" };
                // A typical client gives up on the connection after a timeout.
                conn = None;
                let f = Failure::timeout(what);
                Sample {
                    t,
                    outcome: f.outcome,
                    latency_ms: ms(start.elapsed()),
                    pod: None,
                    sport,
                    error: Some(f.error),
                    status: None,
                }
            }
        };
        lock(log).samples.push(sample);
        pace_async(&mut next, HTTP_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_answers() {
        assert_eq!(
            parse_udp_answer(b"new-1 q17", b"q17"),
            Some("new-1".to_string())
        );
        assert_eq!(
            parse_udp_answer(b"new-1 q17\n", b"q17"),
            Some("new-1".into())
        );
        assert_eq!(parse_udp_answer(b"new-1 q16", b"q17"), None);
        assert_eq!(parse_udp_answer(b"q17", b"q17"), None);
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nold-0HTTP/1.1";
        assert_eq!(
            parse_response(r).unwrap(),
            Some((200, "old-0".to_string(), r.len() - 8, false))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nold").unwrap(),
            None
        );
        let closing = b"HTTP/1.1 503 Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            parse_response(closing).unwrap(),
            Some((503, String::new(), closing.len(), true))
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!("keep-alive".parse(), Ok(ClientKind::Keepalive));
        assert!("tcp".parse::<ClientKind>().is_err());
    }
}
