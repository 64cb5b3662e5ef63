//! [`Backends`]: a service port's backends, sorted by address, packed.
//!
//! The map holds every endpoint of the cluster once per service port that selects it. As
//! [`Backend`] values (`IpAddr`, port, three flags) that is 22 bytes each, 11 MB at 500,000
//! endpoints. Packed, an IPv4 backend takes 7 bytes: its address, its port and one byte of
//! conditions. A port with an IPv6 backend takes 19 bytes per backend, the IPv4 ones included,
//! so every record of a port has the same width and the sorted records can be searched.
//!
//! The box starts with one byte naming the width; an empty port holds no allocation.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use super::model::{Backend, Conditions};

const NARROW: u8 = 7;
const WIDE: u8 = 19;

const READY: u8 = 1;
const SERVING: u8 = 1 << 1;
const TERMINATING: u8 = 1 << 2;
/// The address is IPv6 (wide records only).
const V6: u8 = 1 << 3;

/// A service port's backends, sorted by `(ip, port)`, one per address; read as [`Backend`]
/// values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Backends(Box<[u8]>);

impl Backends {
    /// Packs `sorted`, which must be sorted by `(ip, port)` (checked in debug builds).
    pub(crate) fn from_sorted(sorted: &[Backend]) -> Backends {
        debug_assert!(
            sorted
                .windows(2)
                .all(|w| (w[0].ip, w[0].port) < (w[1].ip, w[1].port)),
            "backends sorted and distinct"
        );
        if sorted.is_empty() {
            return Backends::default();
        }
        let width = if sorted.iter().any(|b| b.ip.is_ipv6()) {
            WIDE
        } else {
            NARROW
        };
        let mut out = Vec::with_capacity(1 + sorted.len() * usize::from(width));
        out.push(width);
        for b in sorted {
            let c = b.conditions;
            let bit = |on: bool, flag: u8| if on { flag } else { 0 };
            let mut flags =
                bit(c.ready, READY) | bit(c.serving, SERVING) | bit(c.terminating, TERMINATING);
            match (b.ip, width) {
                (IpAddr::V4(a), NARROW) => out.extend_from_slice(&a.octets()),
                (IpAddr::V4(a), _) => {
                    out.extend_from_slice(&a.octets());
                    out.extend_from_slice(&[0; 12]);
                }
                (IpAddr::V6(a), _) => {
                    flags |= V6;
                    out.extend_from_slice(&a.octets());
                }
            }
            out.extend_from_slice(&b.port.to_be_bytes());
            out.push(flags);
        }
        Backends(out.into_boxed_slice())
    }

    fn width(&self) -> usize {
        self.0.first().map_or(1, |&w| usize::from(w))
    }

    pub fn len(&self) -> usize {
        self.0.len().saturating_sub(1) / self.width()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The backend at index `i` (in address order).
    pub fn get(&self, i: usize) -> Option<Backend> {
        (i < self.len()).then(|| self.at(i))
    }

    fn at(&self, i: usize) -> Backend {
        let w = self.width();
        let rec = &self.0[1 + i * w..1 + (i + 1) * w];
        let flags = rec[w - 1];
        let port = u16::from_be_bytes([rec[w - 3], rec[w - 2]]);
        let ip = if flags & V6 != 0 {
            let octets: [u8; 16] = rec[..16].try_into().expect("a wide record");
            IpAddr::from(octets)
        } else {
            let octets: [u8; 4] = rec[..4].try_into().expect("a record");
            IpAddr::from(octets)
        };
        Backend {
            ip,
            port,
            conditions: Conditions {
                ready: flags & READY != 0,
                serving: flags & SERVING != 0,
                terminating: flags & TERMINATING != 0,
            },
        }
    }

    /// The first index whose backend is not before `(ip, port)`.
    fn lower_bound(&self, ip: IpAddr, port: u16) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let b = self.at(mid);
            if (b.ip, b.port) < (ip, port) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The conditions of backend `ip:port` (binary search).
    pub fn find(&self, ip: IpAddr, port: u16) -> Option<Conditions> {
        let b = self.get(self.lower_bound(ip, port))?;
        (b.ip == ip && b.port == port).then_some(b.conditions)
    }

    /// Whether some backend has address `ip` (any port).
    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.get(self.lower_bound(ip, 0))
            .is_some_and(|b| b.ip == ip)
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            backends: self,
            range: 0..self.len(),
        }
    }
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The backends of a [`Backends`], in address order.
#[derive(Clone)]
pub struct Iter<'a> {
    backends: &'a Backends,
    range: Range<usize>,
}

impl Iterator for Iter<'_> {
    type Item = Backend;

    fn next(&mut self) -> Option<Backend> {
        self.range.next().map(|i| self.backends.at(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Backend> {
        self.range.next_back().map(|i| self.backends.at(i))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Backends {
    type Item = Backend;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_backend() -> impl Strategy<Value = Backend> {
        let ip = prop_oneof![
            3 => any::<[u8; 4]>().prop_map(IpAddr::from),
            1 => any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        (ip, any::<u16>(), any::<[bool; 3]>()).prop_map(|(ip, port, [r, s, t])| Backend {
            ip,
            port,
            conditions: Conditions {
                ready: r,
                serving: s,
                terminating: t,
            },
        })
    }

    proptest! {
        #[test]
        fn packed_backends_read_back_and_search_as_the_sorted_slice(
            mut v in proptest::collection::vec(arb_backend(), 0..60),
            probe in arb_backend(),
        ) {
            v.sort_by_key(|b| (b.ip, b.port));
            v.dedup_by_key(|b| (b.ip, b.port));
            let packed = Backends::from_sorted(&v);
            prop_assert_eq!(packed.len(), v.len());
            prop_assert_eq!(packed.is_empty(), v.is_empty());
            prop_assert_eq!(packed.iter().collect::<Vec<_>>(), v.clone());
            prop_assert_eq!(packed.iter().rev().collect::<Vec<_>>(), v.iter().rev().copied().collect::<Vec<_>>());
            prop_assert_eq!(packed.get(v.len()), None);
            prop_assert_eq!(format!("{packed:?}"), format!("{v:?}"));
            // Every backend is found, and a probe is found exactly when it is there.
            for b in &v {
                prop_assert_eq!(packed.find(b.ip, b.port), Some(b.conditions));
                prop_assert!(packed.has_ip(b.ip));
            }
            let want = v.iter().find(|b| (b.ip, b.port) == (probe.ip, probe.port)).map(|b| b.conditions);
            prop_assert_eq!(packed.find(probe.ip, probe.port), want);
            prop_assert_eq!(packed.has_ip(probe.ip), v.iter().any(|b| b.ip == probe.ip));
        }
    }

    #[test]
    fn an_ipv4_backend_takes_7_bytes_and_an_ipv6_port_19_each() {
        let b = |ip: &str, port| Backend {
            ip: ip.parse().expect("ip"),
            port,
            conditions: Conditions::READY,
        };
        let v4 = Backends::from_sorted(&[b("10.0.0.1", 80), b("10.0.0.2", 80)]);
        assert_eq!(v4.0.len(), 1 + 2 * 7);
        let mixed = Backends::from_sorted(&[b("10.0.0.1", 80), b("fd00::1", 80)]);
        assert_eq!(mixed.0.len(), 1 + 2 * 19);
        assert_eq!(Backends::from_sorted(&[]).0.len(), 0);
        assert_eq!(std::mem::size_of::<Backends>(), 16);
    }
}
