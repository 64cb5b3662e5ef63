//! Message framing: struct nlmsghdr (read through netlink-packet-core's `NetlinkBuffer`) and
//! struct nfgenmsg (include/uapi/linux/netfilter/nfnetlink.h), request building, and the
//! classification of what the kernel sends back.

use netlink_packet_core::NetlinkBuffer;
use serde::Serialize;

use super::entry::Entry;
use super::nla::{self, NlaIter, NlaWriter};
use crate::consts::*;
use crate::error::DecodeError;

/// The nlmsg_type of a ctnetlink message: (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_*.
pub const fn ct_msg_type(msg: u8) -> u16 {
    ((NFNL_SUBSYS_CTNETLINK as u16) << 8) | msg as u16
}

/// Appends one request (nlmsghdr + nfgenmsg + attributes) to `buf`; several requests in one
/// buffer form a batch sent with a single sendmsg.
pub fn append_request(
    buf: &mut Vec<u8>,
    msg: u8,
    flags: u16,
    seq: u32,
    family: u8,
    version: u8,
    attrs: impl FnOnce(&mut NlaWriter<'_>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
    buf.extend_from_slice(&[family, version, 0, 0]); // nfgenmsg: res_id (be16) = 0
    attrs(&mut NlaWriter::new(buf));
    let len = buf.len() - start;
    let mut hdr = NetlinkBuffer::new(&mut buf[start..start + NLMSG_HDRLEN]);
    hdr.set_length(len as u32);
    hdr.set_message_type(ct_msg_type(msg));
    hdr.set_flags(flags);
    hdr.set_sequence_number(seq);
    hdr.set_port_number(0);
}

/// What one netlink message from the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A ctnetlink message: an entry (CT_NEW/CT_DELETE), stats, ...
    Conntrack(CtMessage<'a>),
    /// NLMSG_DONE: the end of a dump.
    Done,
    /// NLMSG_ERROR with error 0: the acknowledgement of a request.
    Ack,
    /// NLMSG_ERROR with a negative errno (stored positive here).
    Error(i32),
    /// NLMSG_NOOP, NLMSG_OVERRUN or a type of another subsystem: nothing to act on.
    Ignored,
}

/// One ctnetlink message: header fields and the attributes after nfgenmsg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtMessage<'a> {
    /// IPCTNL_MSG_* (the low byte of nlmsg_type).
    pub msg: u8,
    pub flags: u16,
    pub seq: u32,
    pub family: u8,
    pub version: u8,
    /// nfgenmsg res_id (the CPU number in CT_GET_STATS_CPU replies).
    pub res_id: u16,
    pub attrs: &'a [u8],
}

/// A received message with its header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    pub flags: u16,
    pub seq: u32,
    pub reply: Reply<'a>,
}

impl Received<'_> {
    /// NLM_F_DUMP_INTR: the table changed during the dump; it may have missed or repeated entries.
    pub fn dump_interrupted(&self) -> bool {
        self.flags & NLM_F_DUMP_INTR != 0
    }
}

/// Iterates over the netlink messages in one datagram.
#[derive(Debug, Clone)]
pub struct MessageIter<'a> {
    buf: &'a [u8],
}

impl<'a> MessageIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = Result<Received<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let hdr = match NetlinkBuffer::new_checked(self.buf) {
            Ok(h) => h,
            Err(e) => {
                self.buf = &[];
                return Some(Err(DecodeError::new("nlmsghdr", e.to_string())));
            }
        };
        let len = hdr.length() as usize;
        let (ty, flags, seq) = (hdr.message_type(), hdr.flags(), hdr.sequence_number());
        let payload = &self.buf[NLMSG_HDRLEN..len];
        self.buf = &self.buf[nla::align(len).min(self.buf.len())..];
        Some(classify(ty, flags, seq, payload).map(|reply| Received { flags, seq, reply }))
    }
}

fn classify(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Result<Reply<'_>, DecodeError> {
    match ty {
        NLMSG_DONE => Ok(Reply::Done),
        NLMSG_ERROR => {
            let code = payload
                .get(..4)
                .ok_or_else(|| DecodeError::new("NLMSG_ERROR", "shorter than its error code"))?;
            let code = i32::from_ne_bytes(code.try_into().expect("slice of 4"));
            match code {
                0 => Ok(Reply::Ack),
                // A negative errno; i32::MIN has no positive twin and is no errno.
                c if c < 0 && c != i32::MIN => Ok(Reply::Error(-c)),
                c => Err(DecodeError::new(
                    "NLMSG_ERROR",
                    format!("error code {c} is not a negative errno"),
                )),
            }
        }
        NLMSG_NOOP | NLMSG_OVERRUN => Ok(Reply::Ignored),
        _ if ty >> 8 == NFNL_SUBSYS_CTNETLINK as u16 => {
            let nfg = payload.get(..NFGENMSG_LEN).ok_or_else(|| {
                DecodeError::new(
                    "nfgenmsg",
                    format!("{} bytes, need {NFGENMSG_LEN}", payload.len()),
                )
            })?;
            Ok(Reply::Conntrack(CtMessage {
                msg: (ty & 0xff) as u8,
                flags,
                seq,
                family: nfg[0],
                version: nfg[1],
                res_id: u16::from_be_bytes([nfg[2], nfg[3]]),
                attrs: &payload[NFGENMSG_LEN..],
            }))
        }
        _ => Ok(Reply::Ignored),
    }
}

/// The kind of a conntrack event (`conntrack -E` prints it as [NEW], [UPDATE], [DESTROY]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    New,
    Update,
    Destroy,
}

impl EventKind {
    /// The kernel marks a NEW event with NLM_F_CREATE|NLM_F_EXCL on a CT_NEW message; a CT_NEW
    /// without them is an UPDATE; CT_DELETE is DESTROY (ctnetlink_conntrack_event).
    pub fn of(m: &CtMessage<'_>) -> Option<EventKind> {
        match m.msg {
            IPCTNL_MSG_CT_NEW if m.flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => Some(EventKind::New),
            IPCTNL_MSG_CT_NEW => Some(EventKind::Update),
            IPCTNL_MSG_CT_DELETE => Some(EventKind::Destroy),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "NEW",
            EventKind::Update => "UPDATE",
            EventKind::Destroy => "DESTROY",
        }
    }
}

impl CtMessage<'_> {
    /// Decodes an entry message (CT_NEW in dumps and NEW/UPDATE events, CT_DELETE in DESTROY).
    pub fn entry(&self) -> Result<Entry, DecodeError> {
        Entry::parse(self.family, self.attrs)
    }
}

/// Table-wide counts (IPCTNL_MSG_CT_GET_STATS; `conntrack -C` prints `entries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GlobalStats {
    pub entries: u32,
    /// nf_conntrack_max; absent on kernels before 4.8.
    pub max_entries: Option<u32>,
}

impl GlobalStats {
    pub fn parse(attrs: &[u8]) -> Result<GlobalStats, DecodeError> {
        const CTX: &str = "CT_GET_STATS";
        let mut s = GlobalStats::default();
        for a in NlaIter::new(attrs, CTX) {
            let a = a?;
            match a.kind {
                CTA_STATS_GLOBAL_ENTRIES => {
                    s.entries = nla::be32(a.payload, CTX, "CTA_STATS_GLOBAL_ENTRIES")?
                }
                CTA_STATS_GLOBAL_MAX_ENTRIES => {
                    s.max_entries = Some(nla::be32(a.payload, CTX, "CTA_STATS_GLOBAL_MAX_ENTRIES")?)
                }
                _ => {}
            }
        }
        Ok(s)
    }
}

/// Per-CPU statistics (IPCTNL_MSG_CT_GET_STATS_CPU; `conntrack -S` prints one line per CPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    pub cpu: u16,
    pub found: u32,
    pub invalid: u32,
    pub insert: u32,
    pub insert_failed: u32,
    pub drop: u32,
    pub early_drop: u32,
    pub error: u32,
    pub search_restart: u32,
    pub clash_resolve: u32,
    pub chaintoolong: u32,
}

impl CpuStats {
    pub fn parse(cpu: u16, attrs: &[u8]) -> Result<CpuStats, DecodeError> {
        const CTX: &str = "CT_GET_STATS_CPU";
        let mut s = CpuStats {
            cpu,
            ..CpuStats::default()
        };
        for a in NlaIter::new(attrs, CTX) {
            let a = a?;
            // Only known counters are read: a newer kernel may add attributes of other sizes.
            let (field, name) = match a.kind {
                CTA_STATS_FOUND => (&mut s.found, "CTA_STATS_FOUND"),
                CTA_STATS_INVALID => (&mut s.invalid, "CTA_STATS_INVALID"),
                CTA_STATS_INSERT => (&mut s.insert, "CTA_STATS_INSERT"),
                CTA_STATS_INSERT_FAILED => (&mut s.insert_failed, "CTA_STATS_INSERT_FAILED"),
                CTA_STATS_DROP => (&mut s.drop, "CTA_STATS_DROP"),
                CTA_STATS_EARLY_DROP => (&mut s.early_drop, "CTA_STATS_EARLY_DROP"),
                CTA_STATS_ERROR => (&mut s.error, "CTA_STATS_ERROR"),
                CTA_STATS_SEARCH_RESTART => (&mut s.search_restart, "CTA_STATS_SEARCH_RESTART"),
                CTA_STATS_CLASH_RESOLVE => (&mut s.clash_resolve, "CTA_STATS_CLASH_RESOLVE"),
                CTA_STATS_CHAIN_TOOLONG => (&mut s.chaintoolong, "CTA_STATS_CHAIN_TOOLONG"),
                _ => continue,
            };
            *field = nla::be32(a.payload, CTX, name)?;
        }
        Ok(s)
    }
}
