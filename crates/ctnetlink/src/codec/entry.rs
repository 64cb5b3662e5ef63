//! A conntrack entry: the attributes of one IPCTNL_MSG_CT_NEW message, as the kernel sends it in
//! dumps and events (ctnetlink_fill_info) and as `conntrack -I` sends it to create one.

use serde::Serialize;

use super::nla::{self, Nla, NlaIter, NlaWriter};
use super::tuple::Tuple;
use crate::consts::*;
use crate::error::DecodeError;

/// Packet and byte counters of one direction (CTA_COUNTERS_ORIG / CTA_COUNTERS_REPLY). The kernel
/// sends them only with `net.netfilter.nf_conntrack_acct=1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// CTA_TIMESTAMP: nanoseconds since the epoch; only with `net.netfilter.nf_conntrack_timestamp=1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timestamp {
    pub start: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<u64>,
}

/// CTA_PROTOINFO_TCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpInfo {
    /// TCP_CONNTRACK_* (nf_conntrack_tcp.h).
    pub state: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wscale_original: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wscale_reply: Option<u8>,
    /// struct nf_ct_tcp_flags { flags, mask }.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags_original: Option<[u8; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags_reply: Option<[u8; 2]>,
}

/// CTA_PROTOINFO_SCTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SctpInfo {
    /// SCTP_CONNTRACK_* (nf_conntrack_sctp.h).
    pub state: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vtag_original: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vtag_reply: Option<u32>,
}

/// CTA_SYNPROXY (enum ctattr_synproxy): the SYN proxy's sequence adjustment. The kernel gives
/// every entry created over ctnetlink this extension, so dumps of such entries carry it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Synproxy {
    /// CTA_SYNPROXY_ISN
    pub isn: u32,
    /// CTA_SYNPROXY_ITS
    pub its: u32,
    /// CTA_SYNPROXY_TSOFF
    pub tsoff: u32,
}

/// CTA_PROTOINFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProtoInfo {
    Tcp(TcpInfo),
    Sctp(SctpInfo),
    /// DCCP or a protocol this library does not decode; kept as it came.
    Other(RawAttr),
}

/// An attribute kept as bytes: unknown to this library, or one it does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawAttr {
    pub kind: u16,
    pub nested: bool,
    pub payload: Vec<u8>,
}

impl From<Nla<'_>> for RawAttr {
    fn from(a: Nla<'_>) -> Self {
        RawAttr {
            kind: a.kind,
            nested: a.nested,
            payload: a.payload.to_vec(),
        }
    }
}

/// One conntrack entry. The field comments name the attribute each comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// nfgenmsg family: AF_INET (2) or AF_INET6 (10).
    pub family: u8,
    /// CTA_TUPLE_ORIG: the tuple as the first packet had it (before NAT).
    pub orig: Tuple,
    /// CTA_TUPLE_REPLY: what replies look like. With DNAT, `reply.src` is the NAT target.
    pub reply: Tuple,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<Tuple>,
    /// CTA_STATUS: IPS_* bits.
    pub status: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protoinfo: Option<ProtoInfo>,
    /// CTA_TIMEOUT: seconds left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secmark: Option<u32>,
    /// CTA_ZONE: the zone of the whole entry (sent only when not the default zone 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// CTA_USE: reference count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters_orig: Option<Counters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters_reply: Option<Counters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// CTA_LABELS: the connlabel bitmap, raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<u8>>,
    /// CTA_SECCTX / CTA_SECCTX_NAME.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secctx: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synproxy: Option<Synproxy>,
    /// Attributes this library does not decode (helper, NAT sequence adjustment, ones a
    /// newer kernel adds), in the order they came.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<RawAttr>,
}

impl Entry {
    /// An entry with just the two tuples, as needed to create one.
    pub fn new(orig: Tuple, reply: Tuple) -> Self {
        Entry {
            family: orig.family(),
            orig,
            reply,
            master: None,
            status: 0,
            protoinfo: None,
            timeout: None,
            mark: None,
            secmark: None,
            zone: None,
            id: None,
            use_count: None,
            counters_orig: None,
            counters_reply: None,
            timestamp: None,
            labels: None,
            secctx: None,
            synproxy: None,
            unknown: Vec::new(),
        }
    }

    /// Whether DNAT happened: the reply comes from somewhere other than where the original
    /// packet was sent.
    pub fn is_dnat(&self) -> bool {
        self.reply.src != self.orig.dst || self.reply.proto.src_port != self.orig.proto.dst_port
    }

    pub fn tcp_state(&self) -> Option<u8> {
        match &self.protoinfo {
            Some(ProtoInfo::Tcp(t)) => Some(t.state),
            _ => None,
        }
    }

    /// Decodes the attributes that follow the nfgenmsg header of a CT_NEW/CT_DELETE message.
    pub fn parse(family: u8, attrs: &[u8]) -> Result<Entry, DecodeError> {
        const CTX: &str = "conntrack entry";
        let mut orig = None;
        let mut reply = None;
        let mut e = Entry::new(
            Tuple::new([0u8; 4].into(), [0u8; 4].into(), Default::default()),
            Tuple::new([0u8; 4].into(), [0u8; 4].into(), Default::default()),
        );
        e.family = family;
        for a in NlaIter::named(attrs, CTX, crate::consts::cta_name) {
            let a = a?;
            let p = a.payload;
            match a.kind {
                CTA_TUPLE_ORIG => orig = Some(Tuple::parse(p, "CTA_TUPLE_ORIG")?),
                CTA_TUPLE_REPLY => reply = Some(Tuple::parse(p, "CTA_TUPLE_REPLY")?),
                CTA_TUPLE_MASTER => e.master = Some(Tuple::parse(p, "CTA_TUPLE_MASTER")?),
                CTA_STATUS => e.status = nla::be32(p, CTX, "CTA_STATUS")?,
                CTA_PROTOINFO => e.protoinfo = parse_protoinfo(p)?,
                CTA_TIMEOUT => e.timeout = Some(nla::be32(p, CTX, "CTA_TIMEOUT")?),
                CTA_MARK => e.mark = Some(nla::be32(p, CTX, "CTA_MARK")?),
                CTA_SECMARK => e.secmark = Some(nla::be32(p, CTX, "CTA_SECMARK")?),
                CTA_ZONE => e.zone = Some(nla::be16(p, CTX, "CTA_ZONE")?),
                CTA_ID => e.id = Some(nla::be32(p, CTX, "CTA_ID")?),
                CTA_USE => e.use_count = Some(nla::be32(p, CTX, "CTA_USE")?),
                CTA_COUNTERS_ORIG => {
                    e.counters_orig = Some(parse_counters(p, "CTA_COUNTERS_ORIG")?)
                }
                CTA_COUNTERS_REPLY => {
                    e.counters_reply = Some(parse_counters(p, "CTA_COUNTERS_REPLY")?)
                }
                CTA_TIMESTAMP => e.timestamp = Some(parse_timestamp(p)?),
                CTA_LABELS => e.labels = Some(p.to_vec()),
                CTA_SECCTX => e.secctx = parse_secctx(p)?,
                CTA_SYNPROXY => e.synproxy = Some(parse_synproxy(p)?),
                _ => e.unknown.push(a.into()),
            }
        }
        e.orig = orig.ok_or_else(|| DecodeError::new(CTX, "no CTA_TUPLE_ORIG"))?;
        e.reply = reply.ok_or_else(|| DecodeError::new(CTX, "no CTA_TUPLE_REPLY"))?;
        Ok(e)
    }

    /// Encodes the entry's attributes in the order ctnetlink_fill_info writes them, so that an
    /// entry parsed from the kernel encodes back to the same bytes.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let mut w = NlaWriter::new(buf);
        w.nested(CTA_TUPLE_ORIG, |w| self.orig.emit(w));
        w.nested(CTA_TUPLE_REPLY, |w| self.reply.emit(w));
        if let Some(z) = self.zone {
            w.put_be16(CTA_ZONE, z);
        }
        w.put_be32(CTA_STATUS, self.status);
        if let Some(v) = self.mark {
            w.put_be32(CTA_MARK, v);
        }
        if let Some(s) = &self.secctx {
            w.nested(CTA_SECCTX, |w| {
                let mut name = s.as_bytes().to_vec();
                name.push(0);
                w.put(CTA_SECCTX_NAME, &name);
            });
        }
        if let Some(v) = self.id {
            w.put_be32(CTA_ID, v);
        }
        if let Some(v) = self.use_count {
            w.put_be32(CTA_USE, v);
        }
        if let Some(m) = &self.master {
            w.nested(CTA_TUPLE_MASTER, |w| m.emit(w));
        }
        if let Some(v) = self.timeout {
            w.put_be32(CTA_TIMEOUT, v);
        }
        if let Some(p) = &self.protoinfo {
            emit_protoinfo(&mut w, p);
        }
        for (kind, c) in [
            (CTA_COUNTERS_ORIG, &self.counters_orig),
            (CTA_COUNTERS_REPLY, &self.counters_reply),
        ] {
            if let Some(c) = c {
                w.nested(kind, |w| {
                    w.put_be64(CTA_COUNTERS_PACKETS, c.packets);
                    w.put_be64(CTA_COUNTERS_BYTES, c.bytes);
                });
            }
        }
        if let Some(t) = &self.timestamp {
            w.nested(CTA_TIMESTAMP, |w| {
                w.put_be64(CTA_TIMESTAMP_START, t.start);
                if let Some(s) = t.stop {
                    w.put_be64(CTA_TIMESTAMP_STOP, s);
                }
            });
        }
        if let Some(v) = self.secmark {
            w.put_be32(CTA_SECMARK, v);
        }
        if let Some(l) = &self.labels {
            w.put(CTA_LABELS, l);
        }
        for u in &self.unknown {
            if u.nested {
                w.nested(u.kind, |w| w.raw(&u.payload));
            } else {
                w.put(u.kind, &u.payload);
            }
        }
        // Last, as ctnetlink_fill_info writes it: after the helper and the sequence adjustment,
        // which are kept in `unknown`.
        if let Some(s) = &self.synproxy {
            w.nested(CTA_SYNPROXY, |w| {
                w.put_be32(CTA_SYNPROXY_ISN, s.isn);
                w.put_be32(CTA_SYNPROXY_ITS, s.its);
                w.put_be32(CTA_SYNPROXY_TSOFF, s.tsoff);
            });
        }
    }
}

/// CTA_SYNPROXY's three values; one that is absent reads as 0, attributes a newer kernel adds
/// are skipped.
fn parse_synproxy(p: &[u8]) -> Result<Synproxy, DecodeError> {
    const C: &str = "CTA_SYNPROXY";
    let mut s = Synproxy::default();
    for a in NlaIter::new(p, C) {
        let a = a?;
        match a.kind {
            CTA_SYNPROXY_ISN => s.isn = nla::be32(a.payload, C, "CTA_SYNPROXY_ISN")?,
            CTA_SYNPROXY_ITS => s.its = nla::be32(a.payload, C, "CTA_SYNPROXY_ITS")?,
            CTA_SYNPROXY_TSOFF => s.tsoff = nla::be32(a.payload, C, "CTA_SYNPROXY_TSOFF")?,
            _ => {}
        }
    }
    Ok(s)
}

fn parse_counters(p: &[u8], ctx: &'static str) -> Result<Counters, DecodeError> {
    let mut c = Counters::default();
    for a in NlaIter::new(p, ctx) {
        let a = a?;
        match a.kind {
            CTA_COUNTERS_PACKETS => c.packets = nla::be64(a.payload, ctx, "CTA_COUNTERS_PACKETS")?,
            CTA_COUNTERS_BYTES => c.bytes = nla::be64(a.payload, ctx, "CTA_COUNTERS_BYTES")?,
            CTA_COUNTERS32_PACKETS => {
                c.packets = nla::be32(a.payload, ctx, "CTA_COUNTERS32_PACKETS")?.into()
            }
            CTA_COUNTERS32_BYTES => {
                c.bytes = nla::be32(a.payload, ctx, "CTA_COUNTERS32_BYTES")?.into()
            }
            _ => {}
        }
    }
    Ok(c)
}

fn parse_timestamp(p: &[u8]) -> Result<Timestamp, DecodeError> {
    const CTX: &str = "CTA_TIMESTAMP";
    let mut t = Timestamp::default();
    for a in NlaIter::new(p, CTX) {
        let a = a?;
        match a.kind {
            CTA_TIMESTAMP_START => t.start = nla::be64(a.payload, CTX, "CTA_TIMESTAMP_START")?,
            CTA_TIMESTAMP_STOP => t.stop = Some(nla::be64(a.payload, CTX, "CTA_TIMESTAMP_STOP")?),
            _ => {}
        }
    }
    Ok(t)
}

fn parse_secctx(p: &[u8]) -> Result<Option<String>, DecodeError> {
    for a in NlaIter::new(p, "CTA_SECCTX") {
        let a = a?;
        if a.kind == CTA_SECCTX_NAME {
            let name = a.payload.split(|b| *b == 0).next().unwrap_or_default();
            return Ok(Some(String::from_utf8_lossy(name).into_owned()));
        }
    }
    Ok(None)
}

fn parse_protoinfo(p: &[u8]) -> Result<Option<ProtoInfo>, DecodeError> {
    const CTX: &str = "CTA_PROTOINFO";
    let mut out = None;
    for a in NlaIter::new(p, CTX) {
        let a = a?;
        match a.kind {
            CTA_PROTOINFO_TCP => {
                const C: &str = "CTA_PROTOINFO_TCP";
                let mut t = TcpInfo::default();
                for b in NlaIter::new(a.payload, C) {
                    let b = b?;
                    let q = b.payload;
                    match b.kind {
                        CTA_PROTOINFO_TCP_STATE => {
                            t.state = nla::u8_(q, C, "CTA_PROTOINFO_TCP_STATE")?
                        }
                        CTA_PROTOINFO_TCP_WSCALE_ORIGINAL => {
                            t.wscale_original = Some(nla::u8_(q, C, "WSCALE_ORIGINAL")?)
                        }
                        CTA_PROTOINFO_TCP_WSCALE_REPLY => {
                            t.wscale_reply = Some(nla::u8_(q, C, "WSCALE_REPLY")?)
                        }
                        CTA_PROTOINFO_TCP_FLAGS_ORIGINAL => {
                            t.flags_original = Some(nla::array::<2>(q, C, "FLAGS_ORIGINAL")?)
                        }
                        CTA_PROTOINFO_TCP_FLAGS_REPLY => {
                            t.flags_reply = Some(nla::array::<2>(q, C, "FLAGS_REPLY")?)
                        }
                        _ => {}
                    }
                }
                out = Some(ProtoInfo::Tcp(t));
            }
            CTA_PROTOINFO_SCTP => {
                const C: &str = "CTA_PROTOINFO_SCTP";
                let mut s = SctpInfo::default();
                for b in NlaIter::new(a.payload, C) {
                    let b = b?;
                    let q = b.payload;
                    match b.kind {
                        CTA_PROTOINFO_SCTP_STATE => {
                            s.state = nla::u8_(q, C, "CTA_PROTOINFO_SCTP_STATE")?
                        }
                        CTA_PROTOINFO_SCTP_VTAG_ORIGINAL => {
                            s.vtag_original = Some(nla::be32(q, C, "VTAG_ORIGINAL")?)
                        }
                        CTA_PROTOINFO_SCTP_VTAG_REPLY => {
                            s.vtag_reply = Some(nla::be32(q, C, "VTAG_REPLY")?)
                        }
                        _ => {}
                    }
                }
                out = Some(ProtoInfo::Sctp(s));
            }
            _ => out = Some(ProtoInfo::Other(a.into())),
        }
    }
    Ok(out)
}

pub(crate) fn emit_protoinfo(w: &mut NlaWriter<'_>, p: &ProtoInfo) {
    w.nested(CTA_PROTOINFO, |w| match p {
        ProtoInfo::Tcp(t) => w.nested(CTA_PROTOINFO_TCP, |w| {
            w.put_u8(CTA_PROTOINFO_TCP_STATE, t.state);
            if let Some(v) = t.wscale_original {
                w.put_u8(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, v);
            }
            if let Some(v) = t.wscale_reply {
                w.put_u8(CTA_PROTOINFO_TCP_WSCALE_REPLY, v);
            }
            if let Some(v) = t.flags_original {
                w.put(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &v);
            }
            if let Some(v) = t.flags_reply {
                w.put(CTA_PROTOINFO_TCP_FLAGS_REPLY, &v);
            }
        }),
        ProtoInfo::Sctp(s) => w.nested(CTA_PROTOINFO_SCTP, |w| {
            w.put_u8(CTA_PROTOINFO_SCTP_STATE, s.state);
            if let Some(v) = s.vtag_original {
                w.put_be32(CTA_PROTOINFO_SCTP_VTAG_ORIGINAL, v);
            }
            if let Some(v) = s.vtag_reply {
                w.put_be32(CTA_PROTOINFO_SCTP_VTAG_REPLY, v);
            }
        }),
        ProtoInfo::Other(r) => {
            if r.nested {
                w.nested(r.kind, |w| w.raw(&r.payload));
            } else {
                w.put(r.kind, &r.payload);
            }
        }
    });
}
