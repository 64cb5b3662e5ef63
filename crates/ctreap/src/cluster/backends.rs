//! [`Backends`]: a service port's backends, sorted by address, packed.
//!
//! The map holds every endpoint of the cluster once per service port that selects it. As
//! [`Backend`] values (`IpAddr`, port, three flags) that is 22 bytes each, 11 MB at 500,000
//! endpoints. Packed, an IPv4 backend takes 7 bytes: its address, its port and one byte of
//! conditions. A port with an IPv6 backend takes 19 bytes per backend, the IPv4 ones included,
//! so every record of a port has the same width and the sorted records can be searched.
//!
//! The box starts with one byte naming the width; an empty port holds no allocation.
//!
//! A record also says whether more than one EndpointSlice of the Service lists the backend
//! (its conditions are then merged across them): the live model patches one slice's backends
//! in place only where that slice is their one source ([`Backends::patched`]).

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
/// More than one EndpointSlice (or one slice twice) lists the backend.
const SHARED: u8 = 1 << 4;

/// A backend edit for [`Backends::patched`]: `(ip, port)` gets these conditions, or goes
/// (`None`).
pub(crate) type Edit = (IpAddr, u16, Option<Conditions>);

/// A service port's backends, sorted by `(ip, port)`, one per address; read as [`Backend`]
/// values.
#[derive(Clone, Default)]
pub struct Backends(Box<[u8]>);

/// Equal when they hold the same backends with the same marks, whatever their width: a
/// patched port keeps its wide records after its last IPv6 backend left.
impl PartialEq for Backends {
    fn eq(&self, other: &Backends) -> bool {
        let marked = |b: &Backends| {
            (0..b.len())
                .map(|i| (b.at(i), b.shared_at(i)))
                .collect::<Vec<_>>()
        };
        self.len() == other.len() && (self.0 == other.0 || marked(self) == marked(other))
    }
}

impl Eq for Backends {}

impl Backends {
    /// Packs `sorted`, which must be sorted by `(ip, port)` (checked in debug builds).
    pub(crate) fn from_sorted(sorted: &[Backend]) -> Backends {
        Self::from_marked(sorted.iter().map(|&b| (b, false)))
    }

    /// Packs backends sorted by `(ip, port)`, each with whether more than one slice lists it.
    pub(crate) fn from_marked(
        sorted: impl ExactSizeIterator<Item = (Backend, bool)> + Clone,
    ) -> Backends {
        debug_assert!(
            sorted
                .clone()
                .zip(sorted.clone().skip(1))
                .all(|((a, _), (b, _))| (a.ip, a.port) < (b.ip, b.port)),
            "backends sorted and distinct"
        );
        if sorted.len() == 0 {
            return Backends::default();
        }
        let width = if sorted.clone().any(|(b, _)| b.ip.is_ipv6()) {
            WIDE
        } else {
            NARROW
        };
        let mut out = Vec::with_capacity(1 + sorted.len() * usize::from(width));
        out.push(width);
        for (b, shared) in sorted {
            push_record(&mut out, width, b.ip, b.port, b.conditions, shared);
        }
        Backends(out.into_boxed_slice())
    }

    /// Applies `edits` (sorted by `(ip, port)`, one per address): each edited backend is set
    /// to its conditions, listed by one slice, or removed. In place, from the last edit to the
    /// first: proportional to the edits plus one move of the bytes after each, with no
    /// decoding and, for a change or a removal, no new allocation.
    pub(crate) fn patch(&mut self, edits: &[Edit]) {
        debug_assert!(
            edits
                .windows(2)
                .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)),
            "edits sorted and distinct"
        );
        let w = self.width();
        let set_v6 = edits.iter().any(|(ip, _, c)| c.is_some() && ip.is_ipv6());
        if self.is_empty() || (set_v6 && w == usize::from(NARROW)) {
            // Records get wider: unpack, edit, pack. (Narrower is never needed: a wide
            // record holds an IPv4 backend too.)
            *self = self.patched_slowly(edits);
            return;
        }
        let adds = edits
            .iter()
            .filter(|&&(ip, port, c)| c.is_some() && self.find(ip, port).is_none())
            .count();
        let mut bytes = Vec::from(std::mem::take(&mut self.0));
        bytes.reserve_exact(adds * w);
        for &(ip, port, c) in edits.iter().rev() {
            let at = Backends::lower_bound_in(&bytes, ip, port);
            let start = 1 + at * w;
            let here =
                Backends::record_in(&bytes, at).is_some_and(|b| (b.ip, b.port) == (ip, port));
            let mut rec = Vec::with_capacity(w);
            if let Some(c) = c {
                push_record(&mut rec, bytes[0], ip, port, c, false);
            }
            let end = if here { start + w } else { start };
            bytes.splice(start..end, rec);
        }
        if bytes.len() > 1 {
            self.0 = bytes.into_boxed_slice();
        }
    }

    #[cfg(test)]
    fn patched(&self, edits: &[Edit]) -> Backends {
        let mut b = self.clone();
        b.patch(edits);
        b
    }

    fn patched_slowly(&self, edits: &[Edit]) -> Backends {
        let mut all: Vec<(Backend, bool)> = self
            .iter()
            .enumerate()
            .map(|(i, b)| (b, self.shared_at(i)))
            .filter(|(b, _)| {
                edits
                    .binary_search_by(|e| (e.0, e.1).cmp(&(b.ip, b.port)))
                    .is_err()
            })
            .collect();
        all.extend(edits.iter().filter_map(|&(ip, port, c)| {
            Some((
                Backend {
                    ip,
                    port,
                    conditions: c?,
                },
                false,
            ))
        }));
        all.sort_unstable_by_key(|(b, _)| (b.ip, b.port));
        Self::from_marked(all.into_iter())
    }

    fn width(&self) -> usize {
        BytesRef(&self.0).width()
    }

    pub fn len(&self) -> usize {
        BytesRef(&self.0).len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The backend at index `i` (in address order).
    pub fn get(&self, i: usize) -> Option<Backend> {
        (i < self.len()).then(|| self.at(i))
    }

    fn at(&self, i: usize) -> Backend {
        BytesRef(&self.0).at(i)
    }

    /// The first index whose backend is not before `(ip, port)`.
    fn lower_bound(&self, ip: IpAddr, port: u16) -> usize {
        Backends::lower_bound_in(&self.0, ip, port)
    }

    /// [`Backends::lower_bound`] over packed bytes.
    fn lower_bound_in(bytes: &[u8], ip: IpAddr, port: u16) -> usize {
        let view = BytesRef(bytes);
        let (mut lo, mut hi) = (0, view.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let b = view.at(mid);
            if (b.ip, b.port) < (ip, port) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The record at index `i` of packed bytes, if there is one.
    fn record_in(bytes: &[u8], i: usize) -> Option<Backend> {
        let view = BytesRef(bytes);
        (i < view.len()).then(|| view.at(i))
    }

    /// The conditions of backend `ip:port` (binary search).
    pub fn find(&self, ip: IpAddr, port: u16) -> Option<Conditions> {
        self.find_marked(ip, port).map(|(c, _)| c)
    }

    /// The conditions of backend `ip:port`, and whether more than one slice lists it.
    pub(crate) fn find_marked(&self, ip: IpAddr, port: u16) -> Option<(Conditions, bool)> {
        let i = self.lower_bound(ip, port);
        let b = self.get(i)?;
        (b.ip == ip && b.port == port).then(|| (b.conditions, self.shared_at(i)))
    }

    fn shared_at(&self, i: usize) -> bool {
        let w = self.width();
        self.0[(i + 1) * w] & SHARED != 0
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

/// Packed records being read: a [`Backends`]' bytes, or bytes being patched.
#[derive(Clone, Copy)]
struct BytesRef<'a>(&'a [u8]);

impl BytesRef<'_> {
    fn width(self) -> usize {
        self.0.first().map_or(1, |&w| usize::from(w))
    }

    fn len(self) -> usize {
        self.0.len().saturating_sub(1) / self.width()
    }

    fn at(self, i: usize) -> Backend {
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
}

/// Appends one record of `width` bytes.
fn push_record(out: &mut Vec<u8>, width: u8, ip: IpAddr, port: u16, c: Conditions, shared: bool) {
    let bit = |on: bool, flag: u8| if on { flag } else { 0 };
    let mut flags = bit(c.ready, READY)
        | bit(c.serving, SERVING)
        | bit(c.terminating, TERMINATING)
        | bit(shared, SHARED);
    match (ip, width) {
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
    out.extend_from_slice(&port.to_be_bytes());
    out.push(flags);
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

    proptest! {
        /// Patching equals packing the edited list: same backends, same marks, and the same
        /// bytes (width included) as packing it afresh.
        #[test]
        fn patched_backends_equal_the_edited_list_packed(
            v in proptest::collection::vec((arb_backend(), any::<bool>()), 0..40),
            edits in proptest::collection::vec((arb_backend(), any::<bool>(), any::<bool>()), 0..12),
        ) {
            let mut v = v;
            // Edits hit listed backends half the time.
            let mut edits: Vec<Edit> = edits
                .into_iter()
                .enumerate()
                .map(|(i, (b, keep, listed))| {
                    let (ip, port) = match v.get(i) {
                        Some((l, _)) if listed => (l.ip, l.port),
                        _ => (b.ip, b.port),
                    };
                    (ip, port, keep.then_some(b.conditions))
                })
                .collect();
            v.sort_by_key(|(b, _)| (b.ip, b.port));
            v.dedup_by_key(|(b, _)| (b.ip, b.port));
            edits.sort_by_key(|e| (e.0, e.1));
            edits.dedup_by_key(|e| (e.0, e.1));
            let packed = Backends::from_marked(v.iter().copied());
            let mut want: Vec<(Backend, bool)> = v
                .iter()
                .copied()
                .filter(|(b, _)| !edits.iter().any(|e| (e.0, e.1) == (b.ip, b.port)))
                .collect();
            want.extend(edits.iter().filter_map(|&(ip, port, c)| {
                Some((Backend { ip, port, conditions: c? }, false))
            }));
            want.sort_by_key(|(b, _)| (b.ip, b.port));
            let got = packed.patched(&edits);
            prop_assert_eq!(got.iter().collect::<Vec<_>>(), want.iter().map(|(b, _)| *b).collect::<Vec<_>>());
            for (b, shared) in &want {
                prop_assert_eq!(got.find_marked(b.ip, b.port), Some((b.conditions, *shared)));
            }
            prop_assert_eq!(got, Backends::from_marked(want.into_iter()));
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
