//! The addresses of the current network namespace's interfaces (`ip -o addr show`), read once
//! or followed as they change (`ip monitor address`).
//!
//! kube-proxy with `nodePortAddresses` unset accepts NodePort traffic on every local address
//! (`-m addrtype --dst-type LOCAL`), so these are NodePort frontends too.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ctnetlink::Netns;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How often the follower looks at its stop flag while no notification arrives.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// Every IPv4 and IPv6 address configured on an interface of the calling thread's network
/// namespace (loopback included), sorted and deduplicated.
///
/// A plain function over the current namespace: a caller that entered another namespace
/// (`setns`) on this thread gets that namespace's addresses, because `getifaddrs(3)` asks the
/// kernel over a fresh netlink socket, which belongs to the caller's namespace.
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocated into `head`, or returns -1
    // and leaves it untouched; we free the list exactly once below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned, alive until
        // freeifaddrs; the fields are read, never written.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points at a sockaddr whose sa_family says
            // which larger sockaddr it is; we read the larger type only for that family.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET means ifa_addr points at a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 means ifa_addr points at a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once; no reference into
    // the list outlives this point (addresses were copied out).
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

/// The addresses of `netns` (or of the current namespace).
pub fn addresses_in(netns: Option<&Netns>) -> io::Result<Vec<IpAddr>> {
    match netns {
        Some(ns) => ns.run(local_addresses).map_err(io::Error::other)?,
        None => local_addresses(),
    }
}

/// An rtnetlink socket in `netns` subscribed to address changes (`ip monitor address`).
fn address_socket(netns: Option<&Netns>) -> io::Result<Socket> {
    fn open() -> io::Result<Socket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        // Bound first: the kernel delivers multicast only to bound netlink sockets.
        sock.bind(&SocketAddr::new(0, 0))?;
        sock.add_membership(libc::RTNLGRP_IPV4_IFADDR)?;
        sock.add_membership(libc::RTNLGRP_IPV6_IFADDR)?;
        sock.set_non_blocking(true)?;
        Ok(sock)
    }
    match netns {
        Some(ns) => ns.run(open).map_err(io::Error::other)?,
        None => open(),
    }
}

/// Follows the addresses of `netns` (or the current namespace): each time one is added or
/// removed (RTM_NEWADDR, RTM_DELADDR), reads them all again and hands them to `changed`, until
/// `stop` is set. kube-proxy with `nodePortAddresses` unset accepts NodePorts on every local
/// address whenever it appears, so the map must follow. A burst of notifications (an
/// interface with several addresses going down) is read as one change. A lost notification
/// (ENOBUFS) reads the addresses again too.
pub fn follow_addresses(
    netns: Option<Netns>,
    stop: Arc<AtomicBool>,
    mut changed: impl FnMut(Vec<IpAddr>) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let sock = address_socket(netns.as_ref())?;
    std::thread::Builder::new()
        .name("ctreap-addrs".into())
        .spawn(move || {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            let mut dirty = false;
            while !stop.load(Ordering::Relaxed) {
                buf.clear();
                match sock.recv(&mut buf, 0) {
                    Ok(_) => dirty = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if dirty {
                            dirty = false;
                            match addresses_in(netns.as_ref()) {
                                Ok(addrs) => changed(addrs),
                                Err(e) => {
                                    tracing::warn!(error = %e, "reading the node's addresses after a change; retrying");
                                    dirty = true;
                                }
                            }
                        }
                        std::thread::sleep(FOLLOW_POLL);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => dirty = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "rtnetlink address notifications failed; node addresses are read again in 1 s");
                        dirty = true;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own list of IPv6 addresses (`/proc/net/if_inet6`: 32 hex digits first).
    fn proc_if_inet6() -> Vec<IpAddr> {
        let text = std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
            .map(|n| IpAddr::V6(Ipv6Addr::from(n)))
            .collect()
    }

    #[test]
    fn agrees_with_proc_net_if_inet6() {
        let addrs = local_addresses().expect("getifaddrs");
        assert!(
            addrs.windows(2).all(|w| w[0] < w[1]),
            "sorted, unique: {addrs:?}"
        );
        for v6 in proc_if_inet6() {
            assert!(
                addrs.contains(&v6),
                "{v6} (from /proc/net/if_inet6) missing from {addrs:?}"
            );
        }
        if addrs.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)) {
            assert!(
                addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
                "lo is up (::1) but 127.0.0.1 is missing from {addrs:?}"
            );
        }
    }
}
/// A kernel test: needs root (a network namespace of its own); fails, never skips, without.
#[cfg(test)]
mod follow_tests {
    use std::process::Command;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    /// `ip netns add NAME`, deleted on drop.
    struct Ns(String);

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("running ip");
        assert!(
            st.success(),
            "ip {args:?} failed (root needed: run scripts/test)"
        );
    }

    #[test]
    fn follows_addresses_added_and_removed() {
        let ns = Ns(format!("ctreap-ifaddrs-{}", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let _t = super::follow_addresses(
            Some(ctnetlink::Netns::named(&ns.0)),
            stop.clone(),
            move |a| {
                let _ = tx.send(a);
            },
        )
        .expect("following addresses");
        let addr: std::net::IpAddr = "203.0.113.77".parse().expect("IP");
        ip(&["-n", &ns.0, "addr", "add", "203.0.113.77/32", "dev", "lo"]);
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a change after add");
        assert!(got.contains(&addr), "{got:?}");
        ip(&["-n", &ns.0, "addr", "del", "203.0.113.77/32", "dev", "lo"]);
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a change after del");
        assert!(!got.contains(&addr), "{got:?}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
