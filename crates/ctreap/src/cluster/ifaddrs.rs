//! The addresses of the current network namespace's interfaces (`ip -o addr show`).
//!
//! kube-proxy with `nodePortAddresses` unset accepts NodePort traffic on every local address
//! (`-m addrtype --dst-type LOCAL`), so these are NodePort frontends too.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
