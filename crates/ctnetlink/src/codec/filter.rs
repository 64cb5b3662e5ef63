//! Entry filters, evaluated by the kernel where it can (CTA_FILTER with the orig/reply tuples,
//! CTA_MARK/CTA_MARK_MASK, CTA_STATUS/CTA_STATUS_MASK, CTA_ZONE; see ctnetlink_alloc_filter in
//! net/netfilter/nf_conntrack_netlink.c) and by [`Filter::matches`] in userspace otherwise. Both
//! give the same answer: every set field must match exactly.
//!
//! The flags mirror conntrack-tools: `-p`, `-s/--orig-src`, `-d/--orig-dst`, `-r/--reply-src`,
//! `-q/--reply-dst`, `--orig-port-src`, `--orig-port-dst`, `--reply-port-src`, `--reply-port-dst`,
//! `-m/--mark VALUE[/MASK]`, `-w/--zone`, `-f/--family`.

use std::net::IpAddr;

use serde::Serialize;

use super::entry::Entry;
use super::nla::NlaWriter;
use super::tuple::emit_ip;
use crate::consts::*;

/// A conjunction of exact matches. `Filter::default()` matches everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Filter {
    /// AF_INET or AF_INET6; `None` with no address set means both families.
    pub family: Option<u8>,
    pub proto: Option<u8>,
    pub orig_src: Option<IpAddr>,
    pub orig_dst: Option<IpAddr>,
    pub reply_src: Option<IpAddr>,
    pub reply_dst: Option<IpAddr>,
    pub orig_src_port: Option<u16>,
    pub orig_dst_port: Option<u16>,
    pub reply_src_port: Option<u16>,
    pub reply_dst_port: Option<u16>,
    /// (value, mask): matches when `mark & mask == value`.
    pub mark: Option<(u32, u32)>,
    /// (value, mask): matches when `status & mask == value`.
    pub status: Option<(u32, u32)>,
    /// The entry's zone (CTA_ZONE); entries without one are in zone 0.
    pub zone: Option<u16>,
}

impl Filter {
    /// True when no field is set (matches every entry).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn addrs(&self) -> impl Iterator<Item = IpAddr> {
        [self.orig_src, self.orig_dst, self.reply_src, self.reply_dst]
            .into_iter()
            .flatten()
    }

    fn has_ports(&self) -> bool {
        self.orig_src_port.is_some()
            || self.orig_dst_port.is_some()
            || self.reply_src_port.is_some()
            || self.reply_dst_port.is_some()
    }

    /// Checks that the filter can be asked of the kernel and means what it says: addresses of
    /// one family (agreeing with `family`), and a protocol whenever ports are given (as
    /// `conntrack` requires `-p` with port options).
    pub fn validate(&self) -> Result<(), String> {
        let mut fam = self.family;
        if let Some(f) = fam
            && f != AF_INET
            && f != AF_INET6
        {
            return Err(format!("family {f} is neither ipv4 (2) nor ipv6 (10)"));
        }
        for a in self.addrs() {
            let af = if a.is_ipv4() { AF_INET } else { AF_INET6 };
            match fam {
                Some(f) if f != af => {
                    return Err(format!(
                        "address {a} is not of the filter's family ({})",
                        family_name(f)
                    ));
                }
                _ => fam = Some(af),
            }
        }
        if self.has_ports() && self.proto.is_none() {
            return Err("port filters need a protocol (-p/--proto tcp|udp|sctp)".into());
        }
        Ok(())
    }

    /// The families the kernel must be asked about, one request each: tuple filters need a
    /// family in nfgenmsg (the kernel answers EOPNOTSUPP for AF_UNSPEC), so a family-less tuple
    /// filter becomes one request for IPv4 and one for IPv6.
    pub fn request_families(&self) -> Vec<u8> {
        let fam = self.family.or_else(|| {
            self.addrs()
                .next()
                .map(|a| if a.is_ipv4() { AF_INET } else { AF_INET6 })
        });
        match fam {
            Some(f) => vec![f],
            None if self.needs_tuple_filter() => vec![AF_INET, AF_INET6],
            None => vec![AF_UNSPEC],
        }
    }

    fn orig_flags(&self) -> u32 {
        let mut f = 0;
        if self.orig_src.is_some() {
            f |= CTA_FILTER_F_CTA_IP_SRC;
        }
        if self.orig_dst.is_some() {
            f |= CTA_FILTER_F_CTA_IP_DST;
        }
        if self.proto.is_some() {
            f |= CTA_FILTER_F_CTA_PROTO_NUM;
        }
        if self.orig_src_port.is_some() {
            f |= CTA_FILTER_F_CTA_PROTO_SRC_PORT;
        }
        if self.orig_dst_port.is_some() {
            f |= CTA_FILTER_F_CTA_PROTO_DST_PORT;
        }
        f
    }

    fn reply_flags(&self) -> u32 {
        let mut f = 0;
        if self.reply_src.is_some() {
            f |= CTA_FILTER_F_CTA_IP_SRC;
        }
        if self.reply_dst.is_some() {
            f |= CTA_FILTER_F_CTA_IP_DST;
        }
        if self.reply_src_port.is_some() {
            f |= CTA_FILTER_F_CTA_PROTO_SRC_PORT;
        }
        if self.reply_dst_port.is_some() {
            f |= CTA_FILTER_F_CTA_PROTO_DST_PORT;
        }
        // The kernel cannot parse reply ports without the protocol number beside them.
        if f & (CTA_FILTER_F_CTA_PROTO_SRC_PORT | CTA_FILTER_F_CTA_PROTO_DST_PORT) != 0 {
            f |= CTA_FILTER_F_CTA_PROTO_NUM;
        }
        f
    }

    /// Whether the filter needs CTA_FILTER (any tuple field), which Linux 5.8 added.
    pub fn needs_tuple_filter(&self) -> bool {
        self.orig_flags() != 0 || self.reply_flags() != 0
    }

    /// The part of the filter the kernel can be trusted with. IPv6 addresses are left out:
    /// Linux (measured on 6.18) compares them inverted in ctnetlink_filter_match_tuple
    /// (`!ipv6_addr_cmp(...)` rejects the *equal* address), so a dump filtered on an IPv6
    /// address returns every other entry and a filtered flush deletes every other entry.
    /// Protocol and ports still narrow such requests in the kernel; addresses are matched here.
    pub fn kernel_part(&self) -> Filter {
        let v4 = |a: Option<IpAddr>| a.filter(IpAddr::is_ipv4);
        Filter {
            orig_src: v4(self.orig_src),
            orig_dst: v4(self.orig_dst),
            reply_src: v4(self.reply_src),
            reply_dst: v4(self.reply_dst),
            ..*self
        }
    }

    /// Whether the part sent to the kernel names the protocol and both addresses of one
    /// direction. Before Linux 6.12 a CT_DELETE carrying such a tuple is taken for the delete
    /// of that one entry, whatever else the filter says, so such a filter may go to the kernel
    /// flush only on a kernel known to support filtered flushes.
    pub fn has_complete_tuple(&self) -> bool {
        let k = self.kernel_part();
        k.proto.is_some()
            && ((k.orig_src.is_some() && k.orig_dst.is_some())
                || (k.reply_src.is_some() && k.reply_dst.is_some()))
    }

    /// Whether the kernel can evaluate the whole filter by itself, so that a kernel flush
    /// deletes exactly what [`Filter::matches`] selects.
    pub fn kernel_exact(&self) -> bool {
        self.kernel_part() == *self
    }

    /// Writes the filter attributes of a dump or flush request: the [`Filter::kernel_part`].
    /// With `tuples == false` only the attributes kernels before 5.8 understand are written
    /// (mark, status, zone). Either way the caller checks every entry with [`Filter::matches`],
    /// except on the kernel flush path, which requires [`Filter::kernel_exact`].
    ///
    /// CTA_FILTER is always present with `tuples == true`, even with no tuple field: a kernel
    /// before 6.12 then refuses a flush with EOPNOTSUPP instead of ignoring the attributes it
    /// does not know (CTA_ZONE before 6.8, for one) and flushing more than asked.
    pub fn emit(&self, w: &mut NlaWriter<'_>, tuples: bool) {
        let k = self.kernel_part();
        if tuples {
            let (of, rf) = (k.orig_flags(), k.reply_flags());
            if of != 0 {
                w.nested(CTA_TUPLE_ORIG, |w| {
                    k.emit_tuple(w, k.orig_src, k.orig_dst, k.orig_src_port, k.orig_dst_port)
                });
            }
            if rf != 0 {
                w.nested(CTA_TUPLE_REPLY, |w| {
                    k.emit_tuple(
                        w,
                        k.reply_src,
                        k.reply_dst,
                        k.reply_src_port,
                        k.reply_dst_port,
                    )
                });
            }
            w.nested(CTA_FILTER, |w| {
                w.put_ne32(CTA_FILTER_ORIG_FLAGS, of);
                w.put_ne32(CTA_FILTER_REPLY_FLAGS, rf);
            });
        }
        if let Some((v, m)) = self.mark {
            w.put_be32(CTA_MARK, v);
            w.put_be32(CTA_MARK_MASK, m);
        }
        if let Some((v, m)) = self.status {
            w.put_be32(CTA_STATUS, v);
            w.put_be32(CTA_STATUS_MASK, m);
        }
        if let Some(z) = self.zone {
            w.put_be16(CTA_ZONE, z);
        }
    }

    fn emit_tuple(
        &self,
        w: &mut NlaWriter<'_>,
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
        sport: Option<u16>,
        dport: Option<u16>,
    ) {
        if src.is_some() || dst.is_some() {
            w.nested(CTA_TUPLE_IP, |w| emit_ip(w, src, dst));
        }
        if let Some(p) = self.proto {
            w.nested(CTA_TUPLE_PROTO, |w| {
                w.put_u8(CTA_PROTO_NUM, p);
                if let Some(v) = sport {
                    w.put_be16(CTA_PROTO_SRC_PORT, v);
                }
                if let Some(v) = dport {
                    w.put_be16(CTA_PROTO_DST_PORT, v);
                }
            });
        }
    }

    /// The userspace twin of the kernel's filter (ctnetlink_filter_match).
    pub fn matches(&self, e: &Entry) -> bool {
        fn eq<T: PartialEq>(want: Option<T>, have: T) -> bool {
            want.is_none_or(|w| w == have)
        }
        fn eq_opt<T: PartialEq>(want: Option<T>, have: Option<T>) -> bool {
            want.is_none() || want == have
        }
        self.family.is_none_or(|f| f == e.family)
            && eq(self.proto, e.orig.proto.num)
            && eq(self.orig_src, e.orig.src)
            && eq(self.orig_dst, e.orig.dst)
            && eq(self.reply_src, e.reply.src)
            && eq(self.reply_dst, e.reply.dst)
            && eq_opt(self.orig_src_port, e.orig.proto.src_port)
            && eq_opt(self.orig_dst_port, e.orig.proto.dst_port)
            && eq_opt(self.reply_src_port, e.reply.proto.src_port)
            && eq_opt(self.reply_dst_port, e.reply.proto.dst_port)
            && self.mark.is_none_or(|(v, m)| e.mark.unwrap_or(0) & m == v)
            && self.status.is_none_or(|(v, m)| e.status & m == v)
            && eq(self.zone, e.zone.unwrap_or(0))
    }
}

/// "ipv4" / "ipv6" / "unspec", as `conntrack -f` spells families.
pub fn family_name(f: u8) -> &'static str {
    match f {
        AF_INET => "ipv4",
        AF_INET6 => "ipv6",
        _ => "unspec",
    }
}
