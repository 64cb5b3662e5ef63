//! Connection tuples: CTA_TUPLE_ORIG / CTA_TUPLE_REPLY / CTA_TUPLE_MASTER
//! (enum ctattr_tuple, ctattr_ip, ctattr_l4proto in nfnetlink_conntrack.h).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::nla::{self, NlaIter, NlaWriter};
use crate::consts::*;
use crate::error::DecodeError;

/// Layer-4 part of a tuple. Which fields are set depends on the protocol: ports for TCP, UDP,
/// UDP-Lite, SCTP and DCCP; id/type/code for ICMP and ICMPv6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct L4 {
    /// IPPROTO_* number (CTA_PROTO_NUM).
    pub num: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

impl L4 {
    pub fn ports(num: u8, src: u16, dst: u16) -> Self {
        Self {
            num,
            src_port: Some(src),
            dst_port: Some(dst),
            ..Self::default()
        }
    }
    pub fn icmp(num: u8, icmp_type: u8, code: u8, id: u16) -> Self {
        Self {
            num,
            icmp_id: Some(id),
            icmp_type: Some(icmp_type),
            icmp_code: Some(code),
            ..Self::default()
        }
    }
}

/// A conntrack tuple: addresses, layer-4 fields and the optional per-direction zone
/// (CTA_TUPLE_ZONE, set only when a zone applies to one direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: L4,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
}

impl Tuple {
    pub fn new(src: IpAddr, dst: IpAddr, proto: L4) -> Self {
        Self {
            src,
            dst,
            proto,
            zone: None,
        }
    }

    /// The tuple as seen from the other side, as the kernel computes a reply tuple without NAT
    /// (nf_ct_invert_tuple): addresses and ports swapped, ICMP echo types mapped to replies.
    pub fn invert(&self) -> Tuple {
        let mut p = self.proto;
        std::mem::swap(&mut p.src_port, &mut p.dst_port);
        if let Some(t) = p.icmp_type {
            p.icmp_type = Some(invert_icmp_type(p.num, t));
        }
        Tuple {
            src: self.dst,
            dst: self.src,
            proto: p,
            zone: self.zone,
        }
    }

    /// nfgenmsg family of this tuple (AF_INET or AF_INET6).
    pub fn family(&self) -> u8 {
        if self.src.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        }
    }

    pub fn parse(buf: &[u8], ctx: &'static str) -> Result<Tuple, DecodeError> {
        let mut src = None;
        let mut dst = None;
        let mut proto = None;
        let mut zone = None;
        for a in NlaIter::new(buf, ctx) {
            let a = a?;
            match a.kind {
                CTA_TUPLE_IP => {
                    let (s, d) = parse_ip(a.payload).map_err(|e| e.within(ctx))?;
                    src = s;
                    dst = d;
                }
                CTA_TUPLE_PROTO => proto = Some(parse_proto(a.payload).map_err(|e| e.within(ctx))?),
                CTA_TUPLE_ZONE => zone = Some(nla::be16(a.payload, ctx, "CTA_TUPLE_ZONE")?),
                _ => {} // newer kernels may add fields; they do not change the tuple's identity
            }
        }
        let src = src.ok_or_else(|| {
            DecodeError::new(ctx, "no source address (CTA_IP_V4_SRC/CTA_IP_V6_SRC)")
        })?;
        let dst = dst.ok_or_else(|| {
            DecodeError::new(ctx, "no destination address (CTA_IP_V4_DST/CTA_IP_V6_DST)")
        })?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(DecodeError::new(
                ctx,
                "source and destination addresses of different families",
            ));
        }
        let proto = proto.ok_or_else(|| DecodeError::new(ctx, "no CTA_TUPLE_PROTO"))?;
        Ok(Tuple {
            src,
            dst,
            proto,
            zone,
        })
    }

    /// Writes the tuple's contents (the caller opens the CTA_TUPLE_* nest).
    pub fn emit(&self, w: &mut NlaWriter<'_>) {
        w.nested(CTA_TUPLE_IP, |w| emit_ip(w, Some(self.src), Some(self.dst)));
        w.nested(CTA_TUPLE_PROTO, |w| emit_proto(w, &self.proto));
        if let Some(z) = self.zone {
            w.put_be16(CTA_TUPLE_ZONE, z);
        }
    }
}

fn invert_icmp_type(num: u8, t: u8) -> u8 {
    // net/ipv4/netfilter/nf_conntrack_proto_icmp.c invmap / icmpv6 invmap
    match (num, t) {
        (IPPROTO_ICMP, 8) => 0,
        (IPPROTO_ICMP, 0) => 8,
        (IPPROTO_ICMP, 13) => 14,
        (IPPROTO_ICMP, 14) => 13,
        (IPPROTO_ICMP, 15) => 16,
        (IPPROTO_ICMP, 16) => 15,
        (IPPROTO_ICMP, 17) => 18,
        (IPPROTO_ICMP, 18) => 17,
        (IPPROTO_ICMPV6, 128) => 129,
        (IPPROTO_ICMPV6, 129) => 128,
        (IPPROTO_ICMPV6, 130) => 131,
        (IPPROTO_ICMPV6, 131) => 130,
        (_, t) => t,
    }
}

/// Parses CTA_TUPLE_IP; either address may be absent (filters carry only what they match).
pub(crate) fn parse_ip(buf: &[u8]) -> Result<(Option<IpAddr>, Option<IpAddr>), DecodeError> {
    const CTX: &str = "CTA_TUPLE_IP";
    let (mut s, mut d) = (None, None);
    for a in NlaIter::new(buf, CTX) {
        let a = a?;
        match a.kind {
            CTA_IP_V4_SRC => {
                s = Some(IpAddr::V4(Ipv4Addr::from(nla::array::<4>(
                    a.payload,
                    CTX,
                    "CTA_IP_V4_SRC",
                )?)))
            }
            CTA_IP_V4_DST => {
                d = Some(IpAddr::V4(Ipv4Addr::from(nla::array::<4>(
                    a.payload,
                    CTX,
                    "CTA_IP_V4_DST",
                )?)))
            }
            CTA_IP_V6_SRC => {
                s = Some(IpAddr::V6(Ipv6Addr::from(nla::array::<16>(
                    a.payload,
                    CTX,
                    "CTA_IP_V6_SRC",
                )?)))
            }
            CTA_IP_V6_DST => {
                d = Some(IpAddr::V6(Ipv6Addr::from(nla::array::<16>(
                    a.payload,
                    CTX,
                    "CTA_IP_V6_DST",
                )?)))
            }
            _ => {}
        }
    }
    Ok((s, d))
}

pub(crate) fn emit_ip(w: &mut NlaWriter<'_>, src: Option<IpAddr>, dst: Option<IpAddr>) {
    if let Some(a) = src {
        match a {
            IpAddr::V4(v) => w.put(CTA_IP_V4_SRC, &v.octets()),
            IpAddr::V6(v) => w.put(CTA_IP_V6_SRC, &v.octets()),
        }
    }
    if let Some(a) = dst {
        match a {
            IpAddr::V4(v) => w.put(CTA_IP_V4_DST, &v.octets()),
            IpAddr::V6(v) => w.put(CTA_IP_V6_DST, &v.octets()),
        }
    }
}

pub(crate) fn parse_proto(buf: &[u8]) -> Result<L4, DecodeError> {
    const CTX: &str = "CTA_TUPLE_PROTO";
    let mut l4 = L4::default();
    let mut have_num = false;
    for a in NlaIter::new(buf, CTX) {
        let a = a?;
        let p = a.payload;
        match a.kind {
            CTA_PROTO_NUM => {
                l4.num = nla::u8_(p, CTX, "CTA_PROTO_NUM")?;
                have_num = true;
            }
            CTA_PROTO_SRC_PORT => l4.src_port = Some(nla::be16(p, CTX, "CTA_PROTO_SRC_PORT")?),
            CTA_PROTO_DST_PORT => l4.dst_port = Some(nla::be16(p, CTX, "CTA_PROTO_DST_PORT")?),
            CTA_PROTO_ICMP_ID => l4.icmp_id = Some(nla::be16(p, CTX, "CTA_PROTO_ICMP_ID")?),
            CTA_PROTO_ICMP_TYPE => l4.icmp_type = Some(nla::u8_(p, CTX, "CTA_PROTO_ICMP_TYPE")?),
            CTA_PROTO_ICMP_CODE => l4.icmp_code = Some(nla::u8_(p, CTX, "CTA_PROTO_ICMP_CODE")?),
            CTA_PROTO_ICMPV6_ID => l4.icmp_id = Some(nla::be16(p, CTX, "CTA_PROTO_ICMPV6_ID")?),
            CTA_PROTO_ICMPV6_TYPE => {
                l4.icmp_type = Some(nla::u8_(p, CTX, "CTA_PROTO_ICMPV6_TYPE")?)
            }
            CTA_PROTO_ICMPV6_CODE => {
                l4.icmp_code = Some(nla::u8_(p, CTX, "CTA_PROTO_ICMPV6_CODE")?)
            }
            _ => {}
        }
    }
    if !have_num {
        return Err(DecodeError::new(CTX, "no CTA_PROTO_NUM"));
    }
    Ok(l4)
}

/// Writes the CTA_TUPLE_PROTO contents in the kernel's own order (num, then the protocol's
/// fields as its tuple_to_nlattr writes them).
pub(crate) fn emit_proto(w: &mut NlaWriter<'_>, l4: &L4) {
    w.put_u8(CTA_PROTO_NUM, l4.num);
    let (id, ty, code) = if l4.num == IPPROTO_ICMPV6 {
        (
            CTA_PROTO_ICMPV6_ID,
            CTA_PROTO_ICMPV6_TYPE,
            CTA_PROTO_ICMPV6_CODE,
        )
    } else {
        (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE)
    };
    if let Some(v) = l4.src_port {
        w.put_be16(CTA_PROTO_SRC_PORT, v);
    }
    if let Some(v) = l4.dst_port {
        w.put_be16(CTA_PROTO_DST_PORT, v);
    }
    if let Some(v) = l4.icmp_id {
        w.put_be16(id, v);
    }
    if let Some(v) = l4.icmp_type {
        w.put_u8(ty, v);
    }
    if let Some(v) = l4.icmp_code {
        w.put_u8(code, v);
    }
}
