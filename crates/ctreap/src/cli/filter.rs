//! FILTER flags, named after conntrack-tools so that `conntrack -D -r 10.1.1.100 -p udp` reads
//! the same as `ctreap conntrack flush -r 10.1.1.100 -p udp`.

use std::net::IpAddr;

use clap::Args;
use ctnetlink::Filter;
use ctnetlink::codec::format::proto_from_name;
use ctnetlink::consts::*;

#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Layer-4 protocol: tcp, udp, sctp, icmp, icmpv6, or a number.
    #[arg(short = 'p', long = "proto", value_parser = parse_proto, help_heading = "Filter")]
    pub proto: Option<u8>,
    /// Source address of the original direction (the client).
    #[arg(short = 's', long = "orig-src", alias = "src", help_heading = "Filter")]
    pub orig_src: Option<IpAddr>,
    /// Destination address of the original direction (a Service or node address for NAT flows).
    #[arg(short = 'd', long = "orig-dst", alias = "dst", help_heading = "Filter")]
    pub orig_dst: Option<IpAddr>,
    /// Source address of the reply direction: the DNAT target (the backend pod).
    #[arg(short = 'r', long = "reply-src", help_heading = "Filter")]
    pub reply_src: Option<IpAddr>,
    /// Destination address of the reply direction (the client, or the node with SNAT).
    #[arg(short = 'q', long = "reply-dst", help_heading = "Filter")]
    pub reply_dst: Option<IpAddr>,
    /// Source port of the original direction (the client's; needs -p).
    #[arg(
        long = "orig-port-src",
        visible_alias = "sport",
        help_heading = "Filter"
    )]
    pub orig_port_src: Option<u16>,
    /// Destination port of the original direction (the Service port or NodePort; needs -p).
    #[arg(
        long = "orig-port-dst",
        visible_alias = "dport",
        help_heading = "Filter"
    )]
    pub orig_port_dst: Option<u16>,
    /// Source port of the reply direction: the backend's port after DNAT (needs -p).
    #[arg(long = "reply-port-src", help_heading = "Filter")]
    pub reply_port_src: Option<u16>,
    /// Destination port of the reply direction (needs -p).
    #[arg(long = "reply-port-dst", help_heading = "Filter")]
    pub reply_port_dst: Option<u16>,
    /// Connection mark, VALUE[/MASK] (decimal or 0x hex).
    #[arg(short = 'm', long = "mark", value_parser = parse_mark, help_heading = "Filter")]
    pub mark: Option<(u32, u32)>,
    /// Conntrack zone.
    #[arg(short = 'w', long = "zone", help_heading = "Filter")]
    pub zone: Option<u16>,
    /// Status bits that must be set, comma-separated: ASSURED, SEEN_REPLY, ...
    #[arg(short = 'u', long = "status", value_parser = parse_status, help_heading = "Filter")]
    pub status: Option<u32>,
    /// Address family: ipv4 or ipv6 (default: both).
    #[arg(short = 'f', long = "family", value_parser = parse_family, help_heading = "Filter")]
    pub family: Option<u8>,
}

impl FilterArgs {
    pub fn to_filter(&self) -> Result<Filter, String> {
        let f = Filter {
            family: self.family,
            proto: self.proto,
            orig_src: self.orig_src,
            orig_dst: self.orig_dst,
            reply_src: self.reply_src,
            reply_dst: self.reply_dst,
            orig_src_port: self.orig_port_src,
            orig_dst_port: self.orig_port_dst,
            reply_src_port: self.reply_port_src,
            reply_dst_port: self.reply_port_dst,
            mark: self.mark,
            status: self.status.map(|s| (s, s)),
            zone: self.zone,
        };
        f.validate()?;
        Ok(f)
    }
}

pub fn parse_proto(s: &str) -> Result<u8, String> {
    proto_from_name(s)
        .ok_or_else(|| format!("unknown protocol {s:?} (tcp, udp, sctp, icmp, icmpv6 or a number)"))
}

pub fn parse_family(s: &str) -> Result<u8, String> {
    match s {
        "ipv4" | "inet" | "4" => Ok(AF_INET),
        "ipv6" | "inet6" | "6" => Ok(AF_INET6),
        _ => Err(format!("unknown family {s:?} (ipv4 or ipv6)")),
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a 32-bit number"))
}

pub fn parse_mark(s: &str) -> Result<(u32, u32), String> {
    match s.split_once('/') {
        Some((v, m)) => {
            let (v, m) = (parse_u32(v)?, parse_u32(m)?);
            Ok((v & m, m))
        }
        None => Ok((parse_u32(s)?, u32::MAX)),
    }
}

/// Status names as `conntrack -u` spells them.
/// The IPS_* status bits by the names conntrack-tools prints and takes.
pub const STATUS_NAMES: [(&str, u32); 15] = [
    ("EXPECTED", IPS_EXPECTED),
    ("SEEN_REPLY", IPS_SEEN_REPLY),
    ("ASSURED", IPS_ASSURED),
    ("CONFIRMED", IPS_CONFIRMED),
    ("SRC_NAT", IPS_SRC_NAT),
    ("DST_NAT", IPS_DST_NAT),
    ("SEQ_ADJUST", IPS_SEQ_ADJUST),
    ("SRC_NAT_DONE", IPS_SRC_NAT_DONE),
    ("DST_NAT_DONE", IPS_DST_NAT_DONE),
    ("DYING", IPS_DYING),
    ("FIXED_TIMEOUT", IPS_FIXED_TIMEOUT),
    ("TEMPLATE", IPS_TEMPLATE),
    ("UNTRACKED", IPS_UNTRACKED),
    ("OFFLOAD", IPS_OFFLOAD),
    ("HW_OFFLOAD", IPS_HW_OFFLOAD),
];

/// The names of the status bits set in `bits`, in bit order.
pub fn status_names(bits: u32) -> Vec<&'static str> {
    STATUS_NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect()
}

pub fn parse_status(s: &str) -> Result<u32, String> {
    let mut bits = 0;
    for name in s.split(',') {
        let name = name.trim().to_ascii_uppercase();
        let name = match name.as_str() {
            "SNAT" => "SRC_NAT",
            "DNAT" => "DST_NAT",
            n => n,
        };
        bits |= STATUS_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                format!("unknown status {name:?} (ASSURED, SEEN_REPLY, DST_NAT, ...)")
            })?;
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_with_mask_is_normalised() {
        assert_eq!(parse_mark("0x1ff/0xff"), Ok((0xff, 0xff)));
        assert_eq!(parse_mark("7"), Ok((7, u32::MAX)));
        assert!(parse_mark("x").is_err());
    }

    #[test]
    fn ports_without_protocol_are_refused() {
        let a = FilterArgs {
            orig_port_dst: Some(53),
            ..FilterArgs::default()
        };
        let err = a.to_filter().expect_err("needs -p");
        assert!(err.contains("-p/--proto"), "{err}");
    }

    #[test]
    fn mixed_families_are_refused() {
        let a = FilterArgs {
            orig_src: Some("192.0.2.1".parse().unwrap()),
            reply_src: Some("2001:db8::1".parse().unwrap()),
            ..FilterArgs::default()
        };
        assert!(a.to_filter().is_err());
    }
}
