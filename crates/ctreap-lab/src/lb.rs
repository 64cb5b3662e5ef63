//! The `lb` client: the load balancer of the seed's incident, "Client -> Node:30080 ->
//! iptables DNAT -> Pod:8080", with its own clients in front of it.
//!
//! It runs in its own client namespace. Upstream, it keeps [`LB_POOL`] keep-alive connections
//! to the Service's NodePort on the node's address (externalTrafficPolicy=Cluster: the node
//! DNATs and masquerades them, as kube-proxy does); each request takes the next connection of
//! the pool, round robin. Downstream, it listens on the namespace's loopback, and
//! [`LB_FRONT`] clients each open a connection and send it a request every 50 ms. It answers
//! 200 with the pod's answer, or 503 when the upstream request failed or timed out: the 503s
//! are what the seed's users saw. [`LbPool`] says what it does with a connection that failed.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex as AsyncMutex;

use super::clients::{
    ClientKind, Conn, Connect, Dialer, HTTP_INTERVAL, HTTP_TIMEOUT, LB_FRONT, LB_MAX_AGE, LB_POOL,
    LbPool, NO_ENDPOINT, Outcome, Sample, Shared, Target, classify_io, connect, lock, ms,
    pace_async, parse_response, request, secs,
};

/// How long a front client waits for the load balancer: longer than a retried upstream
/// request, so that every answer it gets is the load balancer's own.
const FRONT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection of the pool.
struct Slot {
    conn: Option<Conn>,
    /// When the pool replaces it ([`LbPool::Seed`] only).
    expires: Option<Instant>,
}

struct Lb {
    slots: Vec<AsyncMutex<Slot>>,
    next: AtomicUsize,
    dialer: std::sync::Mutex<Dialer>,
    /// The node's address and the NodePort.
    upstream: SocketAddr,
    policy: LbPool,
    epoch: Instant,
    log: Shared,
}

impl Lb {
    fn new(target: &Target, epoch: Instant, log: &Shared) -> Lb {
        let start = Instant::now();
        let slots = (0..LB_POOL)
            .map(|i| {
                // The connections' ages are spread evenly, so the pool turns over steadily.
                let expires = (target.lb_pool == LbPool::Seed)
                    .then(|| start + LB_MAX_AGE.mul_f64((i + 1) as f64 / LB_POOL as f64));
                AsyncMutex::new(Slot {
                    conn: None,
                    expires,
                })
            })
            .collect();
        Lb {
            slots,
            next: AtomicUsize::new(0),
            dialer: std::sync::Mutex::new(Dialer::new(target.dial.clone())),
            upstream: target.http,
            policy: target.lb_pool,
            epoch,
            log: log.clone(),
        }
    }

    /// One request through the pool: the pod's answer, or why it failed.
    async fn forward(&self) -> Result<String, String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        let tries = if self.policy == LbPool::Retry { 2 } else { 1 };
        let mut why = String::new();
        for _ in 0..tries {
            if slot.expires.is_some_and(|e| Instant::now() >= e) {
                slot.conn = None;
                slot.expires = Some(Instant::now() + LB_MAX_AGE);
            }
            if slot.conn.is_none() {
                let dest = self
                    .dialer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .addr(self.upstream, false, true)
                    .ok_or_else(|| NO_ENDPOINT.to_string())?;
                match tokio::time::timeout(HTTP_TIMEOUT, connect(ClientKind::Lb, dest)).await {
                    Ok(Ok(c)) => {
                        lock(&self.log).connects.push(Connect {
                            t: secs(self.epoch, Instant::now()),
                            sport: c.sport,
                        });
                        slot.conn = Some(c);
                    }
                    Ok(Err(e)) => {
                        why = format!("upstream connect: {e}");
                        continue;
                    }
                    Err(_) => {
                        why = format!(
                            "upstream connect: no answer within {} ms",
                            HTTP_TIMEOUT.as_millis()
                        );
                        continue;
                    }
                }
            }
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            match tokio::time::timeout(HTTP_TIMEOUT, request(conn, false)).await {
                Ok(Ok((pod, keep))) => {
                    if !keep {
                        slot.conn = None;
                    }
                    return Ok(pod);
                }
                Ok(Err(f)) => {
                    // Reset or closed: no pool keeps a broken connection.
                    slot.conn = None;
                    why = format!("upstream {}", f.error);
                }
                Err(_) => {
                    why = format!(
                        "upstream request: no answer within {} ms",
                        HTTP_TIMEOUT.as_millis()
                    );
                    if self.policy == LbPool::Seed {
                        // A slow backend, as the seed's balancer took it: the connection stays.
                        conn.buf.clear();
                    } else {
                        slot.conn = None;
                    }
                }
            }
        }
        Err(why)
    }
}

/// Serves one front connection: reads a request head, answers, closes.
async fn serve(lb: Arc<Lb>, mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return;
        }
    }
    let (status, body) = match lb.forward().await {
        Ok(pod) => ("200 OK", pod),
        Err(why) => ("503 Service Unavailable", why),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// One front request: (status, body).
async fn ask(addr: SocketAddr) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match parse_response(&buf) {
            Ok(Some((status, body, _, _))) => return Ok((status, body)),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the load balancer closed the connection without an answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One of the load balancer's clients: a request every 50 ms, each recorded.
async fn front(
    addr: SocketAddr,
    offset: Duration,
    epoch: Instant,
    stop: &AtomicBool,
    log: &Shared,
) {
    let mut next = tokio::time::Instant::now() + offset;
    tokio::time::sleep_until(next).await;
    while !stop.load(Ordering::SeqCst) {
        let start = Instant::now();
        let t = secs(epoch, start);
        let res = tokio::time::timeout(FRONT_TIMEOUT, ask(addr)).await;
        let (outcome, pod, error, status) = match res {
            Ok(Ok((200, pod))) => (Outcome::Ok, Some(pod), None, Some(200)),
            Ok(Ok((status, why))) => (
                Outcome::Error,
                None,
                Some(format!("HTTP {status} from the load balancer: {why}")),
                Some(status),
            ),
            Ok(Err(e)) => (
                classify_io(&e),
                None,
                Some(format!("load balancer: {e}")),
                None,
            ),
            Err(_) => (
                Outcome::Timeout,
                None,
                Some(format!(
                    "load balancer: no answer within {} ms",
                    FRONT_TIMEOUT.as_millis()
                )),
                None,
            ),
        };
        lock(log).samples.push(Sample {
            t,
            outcome,
            latency_ms: ms(start.elapsed()),
            pod,
            sport: 0,
            error,
            status,
        });
        pace_async(&mut next, HTTP_INTERVAL).await;
    }
}

/// Runs the load balancer and its clients until `stop`.
pub(super) async fn run(
    target: &Target,
    epoch: Instant,
    stop: &AtomicBool,
    log: &Shared,
) -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let lb = Arc::new(Lb::new(target, epoch, log));
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(lb.clone(), s));
        }
    });
    let step = HTTP_INTERVAL / LB_FRONT as u32;
    futures::future::join_all(
        (0..LB_FRONT).map(|i| front(addr, step * i as u32, epoch, stop, log)),
    )
    .await;
    server.abort();
    Ok(())
}
