//! The line format of `conntrack -L` (conntrack-tools 1.4, libnetfilter_conntrack's default
//! output), so that sorted outputs of `conntrack -L` and of this library are identical on the
//! same table.

use std::fmt::Write;

use super::entry::{Entry, ProtoInfo};
use super::nla::NlaIter;
use super::tuple::Tuple;
use crate::consts::*;

/// Name of a layer-4 protocol as `conntrack` prints it.
pub fn proto_name(num: u8) -> &'static str {
    match num {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_UDPLITE => "udplite",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        IPPROTO_SCTP => "sctp",
        IPPROTO_GRE => "gre",
        IPPROTO_DCCP => "dccp",
        _ => "unknown",
    }
}

/// The protocol number for a name `conntrack -p` accepts (or a number).
pub fn proto_from_name(name: &str) -> Option<u8> {
    let n = name.to_ascii_lowercase();
    Some(match n.as_str() {
        "tcp" => IPPROTO_TCP,
        "udp" => IPPROTO_UDP,
        "udplite" => IPPROTO_UDPLITE,
        "icmp" => IPPROTO_ICMP,
        "icmpv6" => IPPROTO_ICMPV6,
        "sctp" => IPPROTO_SCTP,
        "gre" => IPPROTO_GRE,
        "dccp" => IPPROTO_DCCP,
        _ => return n.parse().ok(),
    })
}

const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

const SCTP_STATES: [&str; 9] = [
    "NONE",
    "CLOSED",
    "COOKIE_WAIT",
    "COOKIE_ECHOED",
    "ESTABLISHED",
    "SHUTDOWN_SENT",
    "SHUTDOWN_RECD",
    "SHUTDOWN_ACK_SENT",
    "HEARTBEAT_SENT",
];

/// TCP_CONNTRACK_* by name, as `conntrack --state` spells it.
pub fn tcp_state_from_name(name: &str) -> Option<u8> {
    TCP_STATES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(name))
        .map(|i| i as u8)
}

/// SCTP_CONNTRACK_* by name.
pub fn sctp_state_from_name(name: &str) -> Option<u8> {
    SCTP_STATES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(name))
        .map(|i| i as u8)
}

pub fn tcp_state_name(s: u8) -> &'static str {
    TCP_STATES.get(s as usize).copied().unwrap_or("UNKNOWN")
}

pub fn sctp_state_name(s: u8) -> &'static str {
    SCTP_STATES.get(s as usize).copied().unwrap_or("UNKNOWN")
}

fn tuple(out: &mut String, t: &Tuple) {
    let _ = write!(out, "src={} dst={} ", t.src, t.dst);
    let p = &t.proto;
    match p.num {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP | IPPROTO_DCCP => {
            let _ = write!(
                out,
                "sport={} dport={} ",
                p.src_port.unwrap_or(0),
                p.dst_port.unwrap_or(0)
            );
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let _ = write!(
                out,
                "type={} code={} id={} ",
                p.icmp_type.unwrap_or(0),
                p.icmp_code.unwrap_or(0),
                p.icmp_id.unwrap_or(0)
            );
        }
        IPPROTO_GRE => {
            let _ = write!(
                out,
                "srckey=0x{:x} dstkey=0x{:x} ",
                p.src_port.unwrap_or(0),
                p.dst_port.unwrap_or(0)
            );
        }
        _ => {}
    }
}

fn helper_name(e: &Entry) -> Option<String> {
    let help = e.unknown.iter().find(|u| u.kind == CTA_HELP)?;
    // CTA_HELP_NAME (enum ctattr_help) = 1, a NUL-terminated string.
    let a = NlaIter::new(&help.payload, "CTA_HELP")
        .filter_map(Result::ok)
        .find(|a| a.kind == 1)?;
    let name = a.payload.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// Appends one line (without the newline) in `conntrack -L` format. `now_secs` (seconds since
/// the epoch) computes `delta-time=` when the entry has a start timestamp, as conntrack does.
pub fn write_conntrack_line(out: &mut String, e: &Entry, now_secs: u64) {
    let start = out.len();
    let num = e.orig.proto.num;
    let _ = write!(out, "{:<8} {} ", proto_name(num), num);
    if let Some(t) = e.timeout {
        let _ = write!(out, "{t} ");
    }
    match &e.protoinfo {
        Some(ProtoInfo::Tcp(t)) => {
            let _ = write!(out, "{} ", tcp_state_name(t.state));
        }
        Some(ProtoInfo::Sctp(s)) => {
            let _ = write!(out, "{} ", sctp_state_name(s.state));
        }
        _ => {}
    }
    tuple(out, &e.orig);
    if let Some(z) = e.orig.zone {
        let _ = write!(out, "zone-orig={z} ");
    }
    if let Some(c) = e.counters_orig {
        let _ = write!(out, "packets={} bytes={} ", c.packets, c.bytes);
    }
    if e.status & IPS_SEEN_REPLY == 0 {
        out.push_str("[UNREPLIED] ");
    }
    tuple(out, &e.reply);
    if let Some(z) = e.reply.zone {
        let _ = write!(out, "zone-reply={z} ");
    }
    if let Some(c) = e.counters_reply {
        let _ = write!(out, "packets={} bytes={} ", c.packets, c.bytes);
    }
    if e.status & IPS_HW_OFFLOAD != 0 {
        out.push_str("[HW_OFFLOAD] ");
    } else if e.status & IPS_OFFLOAD != 0 {
        out.push_str("[OFFLOAD] ");
    } else if e.status & IPS_ASSURED != 0 {
        out.push_str("[ASSURED] ");
    }
    if let Some(m) = e.mark {
        let _ = write!(out, "mark={m} ");
    }
    if let Some(m) = e.secmark {
        let _ = write!(out, "secmark={m} ");
    }
    if let Some(s) = &e.secctx {
        let _ = write!(out, "secctx={s} ");
    }
    if let Some(z) = e.zone {
        let _ = write!(out, "zone={z} ");
    }
    if let Some(ts) = e.timestamp {
        let stop = ts.stop.map_or(now_secs, |s| s / 1_000_000_000);
        let _ = write!(
            out,
            "delta-time={} ",
            stop.saturating_sub(ts.start / 1_000_000_000)
        );
    }
    if let Some(h) = helper_name(e) {
        let _ = write!(out, "helper={h} ");
    }
    if let Some(u) = e.use_count {
        let _ = write!(out, "use={u} ");
    }
    // conntrack deletes the last blank.
    if out.len() > start && out.ends_with(' ') {
        out.pop();
    }
}

/// One entry as a `conntrack -L` line.
pub fn conntrack_line(e: &Entry, now_secs: u64) -> String {
    let mut s = String::with_capacity(200);
    write_conntrack_line(&mut s, e, now_secs);
    s
}
