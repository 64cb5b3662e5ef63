//! A pod's servers: an HTTP/1.1 keep-alive server on :8080 and a UDP responder on :5353, on
//! threads of this process whose sockets were created inside the pod's namespace (a socket
//! belongs to the namespace it was created in, whichever thread later uses it).
//!
//! - HTTP: every request (any method and path) gets `200 OK`, body = the pod's name,
//!   `Connection: keep-alive` (or `close` if the client asked for it); connections are served
//!   until the client closes them or the pod is killed.
//! - UDP: every datagram is answered with `<pod name> <the request's bytes>` ([`udp_reply`],
//!   [`parse_udp_reply`]) so a client can match replies to requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctnetlink::Netns;
use serde::Serialize;

use super::Error;
use super::objects::{DNS_TARGET_PORT, HTTP_TARGET_PORT};

/// How a pod dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kill {
    /// The network goes first (its veth is deleted), then the servers stop with abortive
    /// closes, then the namespace is deleted. Nothing the dying pod's kernel sends reaches
    /// anyone: clients with open connections get no FIN and no RST, exactly like a pod whose
    /// node-side network was torn down first, or whose process was killed while unreachable.
    /// This is the case the seed describes: the client keeps sending into a black hole.
    #[default]
    Abrupt,
    /// The servers close every connection first (clients see FIN), wait up to 1 s for the
    /// threads to finish, then the network and the namespace go: a pod that shut down cleanly.
    Graceful,
}

/// What killing a pod did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KillReport {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub how: Kill,
    /// Open TCP connections the pod had when it died.
    pub connections_open: usize,
    /// Server threads that exited (all of them unless one was stuck; see `threads_stuck`).
    pub threads_joined: usize,
    pub threads_stuck: usize,
    /// From the call to the namespace being gone.
    pub elapsed: Duration,
}

/// What a pod's servers did, counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodStats {
    pub tcp_connections: u64,
    pub http_requests: u64,
    pub udp_datagrams: u64,
}

/// The UDP reply to `request` from pod `pod`: `<pod> <request bytes>`.
pub fn udp_reply(pod: &str, request: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pod.len() + 1 + request.len());
    out.extend_from_slice(pod.as_bytes());
    out.push(b' ');
    out.extend_from_slice(request);
    out
}

/// Splits a UDP reply into the answering pod's name and the echoed request.
pub fn parse_udp_reply(reply: &[u8]) -> Option<(&str, &[u8])> {
    let sp = reply.iter().position(|b| *b == b' ')?;
    let pod = std::str::from_utf8(&reply[..sp]).ok()?;
    Some((pod, &reply[sp + 1..]))
}

#[derive(Default)]
struct Counters {
    tcp_connections: AtomicU64,
    http_requests: AtomicU64,
    udp_datagrams: AtomicU64,
}

/// What every server thread of a pod looks at.
#[derive(Default)]
struct Switches {
    /// The pod stops: every thread ends.
    stop: AtomicBool,
    /// The application was told to terminate and drains: every response from now on says
    /// `Connection: close` and ends its connection (the seed's option 5).
    drain: AtomicBool,
}

/// The running servers of one pod.
pub(crate) struct PodServers {
    name: String,
    switches: Arc<Switches>,
    listener: TcpListener,
    conns: Arc<Mutex<Vec<(u64, TcpStream)>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    counters: Arc<Counters>,
}

impl PodServers {
    /// Binds 0.0.0.0:8080/TCP and 0.0.0.0:5353/UDP inside `netns` and starts serving.
    pub(crate) fn start(name: &str, netns: &Netns) -> Result<PodServers, Error> {
        let (listener, udp) = netns
            .run(|| -> std::io::Result<(TcpListener, UdpSocket)> {
                let l =
                    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, HTTP_TARGET_PORT))?;
                let u = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DNS_TARGET_PORT))?;
                Ok((l, u))
            })?
            .map_err(|source| Error::Io {
                context: format!("binding the servers of pod {name} in {netns}"),
                source,
            })?;
        let io = |context: &str, source| Error::Io {
            context: format!("pod {name}: {context}"),
            source,
        };
        // A backstop: every blocking wait wakes at least this often to look at `stop`.
        udp.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| io("UDP read timeout", e))?;
        let servers = PodServers {
            name: name.to_string(),
            switches: Arc::default(),
            listener: listener.try_clone().map_err(|e| io("listener", e))?,
            conns: Arc::new(Mutex::new(Vec::new())),
            threads: Arc::new(Mutex::new(Vec::new())),
            counters: Arc::new(Counters::default()),
        };
        let udp_thread = {
            let (name, switches, counters) = (
                servers.name.clone(),
                servers.switches.clone(),
                servers.counters.clone(),
            );
            std::thread::Builder::new()
                .name(format!("lab-pod-{name}-udp"))
                .spawn(move || serve_udp(&name, &udp, &switches.stop, &counters))
                .map_err(|e| io("starting the UDP thread", e))?
        };
        let accept_thread = {
            let (name, switches, counters, conns, threads) = (
                servers.name.clone(),
                servers.switches.clone(),
                servers.counters.clone(),
                servers.conns.clone(),
                servers.threads.clone(),
            );
            std::thread::Builder::new()
                .name(format!("lab-pod-{name}-http"))
                .spawn(move || {
                    accept_loop(&name, &listener, &switches, &counters, &conns, &threads)
                })
                .map_err(|e| io("starting the HTTP thread", e))?
        };
        lock(&servers.threads).extend([udp_thread, accept_thread]);
        Ok(servers)
    }

    pub(crate) fn stats(&self) -> PodStats {
        PodStats {
            tcp_connections: self.counters.tcp_connections.load(Ordering::Relaxed),
            http_requests: self.counters.http_requests.load(Ordering::Relaxed),
            udp_datagrams: self.counters.udp_datagrams.load(Ordering::Relaxed),
        }
    }

    /// Starts draining: each connection is closed after its next response, which says so
    /// (`Connection: close`), and new connections get one answer each. UDP is unaffected: it
    /// has no connection to close.
    pub(crate) fn drain(&self) {
        self.switches.drain.store(true, Ordering::SeqCst);
    }

    /// Open TCP connections right now.
    pub(crate) fn open_connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Stops every thread and closes every socket. `abortive`: connections are reset
    /// (SO_LINGER 0: the socket is freed at once, it lingers in no state that would keep the
    /// namespace alive); otherwise they get a FIN. Returns (joined, stuck) threads.
    pub(crate) fn stop(self, abortive: bool, wait: Duration) -> (usize, usize) {
        self.switches.stop.store(true, Ordering::SeqCst);
        for (_, c) in lock(&self.conns).iter() {
            if abortive {
                set_linger_zero(c);
            }
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        shutdown_fd(&self.listener);
        // Not shutdown(2) on the UDP socket: a recvfrom woken that way returns 0 bytes with no
        // source address, and std's UdpSocket::recv_from asserts on the address length. The
        // UDP thread's read timeout (500 ms) lets it see the stop flag instead.
        let deadline = Instant::now() + wait;
        let mut joined = 0;
        let mut stuck = 0;
        // Connection threads register themselves; take the list until it stays empty.
        loop {
            let batch: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.threads));
            if batch.is_empty() {
                break;
            }
            for t in batch {
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if t.is_finished() {
                    let _ = t.join();
                    joined += 1;
                } else {
                    stuck += 1;
                }
            }
        }
        lock(&self.conns).clear();
        (joined, stuck)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve_udp(name: &str, udp: &UdpSocket, stop: &AtomicBool, counters: &Counters) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        match udp.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                counters.udp_datagrams.fetch_add(1, Ordering::Relaxed);
                let _ = udp.send_to(&udp_reply(name, &buf[..n]), peer);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            // ICMP errors of earlier replies (ECONNREFUSED on an unconnected socket does not
            // happen, but EHOSTUNREACH may): keep serving.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn accept_loop(
    name: &str,
    listener: &TcpListener,
    switches: &Arc<Switches>,
    counters: &Arc<Counters>,
    conns: &Arc<Mutex<Vec<(u64, TcpStream)>>>,
    threads: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let stop = &switches.stop;
    let mut next_id = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            set_linger_zero(&stream);
            break;
        }
        counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        if let Ok(clone) = stream.try_clone() {
            lock(conns).push((id, clone));
        }
        let (name2, switches2, counters2, conns2) = (
            name.to_string(),
            switches.clone(),
            counters.clone(),
            conns.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("lab-pod-{name}-c{id}"))
            .spawn(move || {
                serve_http(&name2, stream, &switches2, &counters2);
                lock(&conns2).retain(|(i, _)| *i != id);
            });
        if let Ok(t) = spawned {
            let mut ts = lock(threads);
            ts.retain(|t| !t.is_finished());
            ts.push(t);
        }
    }
}

/// Serves HTTP/1.1 requests on one connection until the client closes it, asks to, or the pod
/// stops. Request bodies (`Content-Length`) are read and ignored; chunked bodies are not
/// supported (the lab's clients send none).
fn serve_http(name: &str, stream: TcpStream, switches: &Switches, counters: &Counters) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // Request line.
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue; // tolerated stray CRLF between requests (RFC 9112 2.2)
        }
        let mut content_length = 0usize;
        let mut close = line.trim_end().ends_with("HTTP/1.0");
        // Headers.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        if content_length > 0 {
            let mut body = (&mut reader).take(content_length as u64);
            if std::io::copy(&mut body, &mut std::io::sink()).is_err() {
                return;
            }
        }
        if switches.stop.load(Ordering::SeqCst) {
            return;
        }
        close |= switches.drain.load(Ordering::SeqCst);
        counters.http_requests.fetch_add(1, Ordering::Relaxed);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{name}",
            name.len(),
            if close { "close" } else { "keep-alive" }
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// `setsockopt(SO_LINGER, {on, 0})`: `close` then resets the connection and frees the socket
/// at once instead of leaving it in FIN_WAIT, where it would keep the namespace alive.
fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a file descriptor owned by `s` (alive for the call), with a
    // pointer to a properly initialized `linger` and its exact size.
    let _ = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// `shutdown(fd, SHUT_RDWR)` on a listening or UDP socket, which std does not offer: it wakes
/// a thread blocked in `accept`/`recv_from` on the same socket (Linux `inet_shutdown`).
fn shutdown_fd(s: &impl AsRawFd) {
    // SAFETY: shutdown(2) on a file descriptor owned by `s`, alive for the call; it changes
    // only the socket's state.
    let _ = unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_reply_round_trips() {
        let r = udp_reply("a1", b"q 42");
        assert_eq!(r, b"a1 q 42");
        assert_eq!(parse_udp_reply(&r), Some(("a1", &b"q 42"[..])));
        assert_eq!(parse_udp_reply(b"nospace"), None);
    }
}
