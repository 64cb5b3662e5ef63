//! Kernel constants, named exactly as in the uapi headers they come from.

// include/uapi/linux/netlink.h
pub const NLMSG_ALIGNTO: usize = 4;
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_CAPPED: u16 = 0x100;
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
pub const NLA_ALIGNTO: usize = 4;
pub const NLA_HDRLEN: usize = 4;
pub const NETLINK_NETFILTER: isize = 12;
pub const NETLINK_EXT_ACK: libc::c_int = 11;
pub const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

// include/uapi/linux/netfilter/nfnetlink.h
pub const NFNETLINK_V0: u8 = 0;
/// Version 1 in nfgenmsg asks the kernel to honour the family on a flush.
pub const NFNETLINK_V1: u8 = 1;
pub const NFGENMSG_LEN: usize = 4;
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

// include/uapi/linux/netfilter/nfnetlink_conntrack.h: enum cntl_msg_types
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
pub const IPCTNL_MSG_CT_GET: u8 = 1;
pub const IPCTNL_MSG_CT_DELETE: u8 = 2;
pub const IPCTNL_MSG_CT_GET_CTRZERO: u8 = 3;
pub const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
pub const IPCTNL_MSG_CT_GET_STATS: u8 = 5;
pub const IPCTNL_MSG_CT_GET_DYING: u8 = 6;
pub const IPCTNL_MSG_CT_GET_UNCONFIRMED: u8 = 7;

// include/uapi/linux/netfilter/nfnetlink_conntrack.h: enum ctattr_type
pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
pub const CTA_STATUS: u16 = 3;
pub const CTA_PROTOINFO: u16 = 4;
pub const CTA_HELP: u16 = 5;
pub const CTA_NAT_SRC: u16 = 6;
pub const CTA_TIMEOUT: u16 = 7;
pub const CTA_MARK: u16 = 8;
pub const CTA_COUNTERS_ORIG: u16 = 9;
pub const CTA_COUNTERS_REPLY: u16 = 10;
pub const CTA_USE: u16 = 11;
pub const CTA_ID: u16 = 12;
pub const CTA_NAT_DST: u16 = 13;
pub const CTA_TUPLE_MASTER: u16 = 14;
pub const CTA_SEQ_ADJ_ORIG: u16 = 15;
pub const CTA_SEQ_ADJ_REPLY: u16 = 16;
pub const CTA_SECMARK: u16 = 17;
pub const CTA_ZONE: u16 = 18;
pub const CTA_SECCTX: u16 = 19;
pub const CTA_TIMESTAMP: u16 = 20;
pub const CTA_MARK_MASK: u16 = 21;
pub const CTA_LABELS: u16 = 22;
pub const CTA_LABELS_MASK: u16 = 23;
pub const CTA_SYNPROXY: u16 = 24;
pub const CTA_FILTER: u16 = 25;
pub const CTA_STATUS_MASK: u16 = 26;
pub const CTA_TIMESTAMP_EVENT: u16 = 27;

/// The uapi name of a top-level `CTA_*` attribute (enum ctattr_type), for decode errors.
pub const fn cta_name(kind: u16) -> Option<&'static str> {
    Some(match kind {
        CTA_TUPLE_ORIG => "CTA_TUPLE_ORIG",
        CTA_TUPLE_REPLY => "CTA_TUPLE_REPLY",
        CTA_STATUS => "CTA_STATUS",
        CTA_PROTOINFO => "CTA_PROTOINFO",
        CTA_HELP => "CTA_HELP",
        CTA_NAT_SRC => "CTA_NAT_SRC",
        CTA_TIMEOUT => "CTA_TIMEOUT",
        CTA_MARK => "CTA_MARK",
        CTA_COUNTERS_ORIG => "CTA_COUNTERS_ORIG",
        CTA_COUNTERS_REPLY => "CTA_COUNTERS_REPLY",
        CTA_USE => "CTA_USE",
        CTA_ID => "CTA_ID",
        CTA_NAT_DST => "CTA_NAT_DST",
        CTA_TUPLE_MASTER => "CTA_TUPLE_MASTER",
        CTA_SEQ_ADJ_ORIG => "CTA_SEQ_ADJ_ORIG",
        CTA_SEQ_ADJ_REPLY => "CTA_SEQ_ADJ_REPLY",
        CTA_SECMARK => "CTA_SECMARK",
        CTA_ZONE => "CTA_ZONE",
        CTA_SECCTX => "CTA_SECCTX",
        CTA_TIMESTAMP => "CTA_TIMESTAMP",
        CTA_MARK_MASK => "CTA_MARK_MASK",
        CTA_LABELS => "CTA_LABELS",
        CTA_LABELS_MASK => "CTA_LABELS_MASK",
        CTA_SYNPROXY => "CTA_SYNPROXY",
        CTA_FILTER => "CTA_FILTER",
        CTA_STATUS_MASK => "CTA_STATUS_MASK",
        CTA_TIMESTAMP_EVENT => "CTA_TIMESTAMP_EVENT",
        _ => return None,
    })
}

// enum ctattr_tuple
pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;
pub const CTA_TUPLE_ZONE: u16 = 3;

// enum ctattr_ip
pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;

// enum ctattr_l4proto
pub const CTA_PROTO_NUM: u16 = 1;
pub const CTA_PROTO_SRC_PORT: u16 = 2;
pub const CTA_PROTO_DST_PORT: u16 = 3;
pub const CTA_PROTO_ICMP_ID: u16 = 4;
pub const CTA_PROTO_ICMP_TYPE: u16 = 5;
pub const CTA_PROTO_ICMP_CODE: u16 = 6;
pub const CTA_PROTO_ICMPV6_ID: u16 = 7;
pub const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
pub const CTA_PROTO_ICMPV6_CODE: u16 = 9;

// enum ctattr_protoinfo
pub const CTA_PROTOINFO_TCP: u16 = 1;
pub const CTA_PROTOINFO_DCCP: u16 = 2;
pub const CTA_PROTOINFO_SCTP: u16 = 3;

// enum ctattr_protoinfo_tcp
pub const CTA_PROTOINFO_TCP_STATE: u16 = 1;
pub const CTA_PROTOINFO_TCP_WSCALE_ORIGINAL: u16 = 2;
pub const CTA_PROTOINFO_TCP_WSCALE_REPLY: u16 = 3;
pub const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
pub const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;

// enum ctattr_protoinfo_sctp
pub const CTA_PROTOINFO_SCTP_STATE: u16 = 1;
pub const CTA_PROTOINFO_SCTP_VTAG_ORIGINAL: u16 = 2;
pub const CTA_PROTOINFO_SCTP_VTAG_REPLY: u16 = 3;

// enum ctattr_counters
pub const CTA_COUNTERS_PACKETS: u16 = 1;
pub const CTA_COUNTERS_BYTES: u16 = 2;
pub const CTA_COUNTERS32_PACKETS: u16 = 3;
pub const CTA_COUNTERS32_BYTES: u16 = 4;

// enum ctattr_tstamp
pub const CTA_TIMESTAMP_START: u16 = 1;
pub const CTA_TIMESTAMP_STOP: u16 = 2;

// enum ctattr_secctx
pub const CTA_SECCTX_NAME: u16 = 1;

// enum ctattr_synproxy
pub const CTA_SYNPROXY_ISN: u16 = 1;
pub const CTA_SYNPROXY_ITS: u16 = 2;
pub const CTA_SYNPROXY_TSOFF: u16 = 3;

// enum ctattr_stats_cpu
pub const CTA_STATS_SEARCHED: u16 = 1;
pub const CTA_STATS_FOUND: u16 = 2;
pub const CTA_STATS_NEW: u16 = 3;
pub const CTA_STATS_INVALID: u16 = 4;
pub const CTA_STATS_IGNORE: u16 = 5;
pub const CTA_STATS_DELETE: u16 = 6;
pub const CTA_STATS_DELETE_LIST: u16 = 7;
pub const CTA_STATS_INSERT: u16 = 8;
pub const CTA_STATS_INSERT_FAILED: u16 = 9;
pub const CTA_STATS_DROP: u16 = 10;
pub const CTA_STATS_EARLY_DROP: u16 = 11;
pub const CTA_STATS_ERROR: u16 = 12;
pub const CTA_STATS_SEARCH_RESTART: u16 = 13;
pub const CTA_STATS_CLASH_RESOLVE: u16 = 14;
pub const CTA_STATS_CHAIN_TOOLONG: u16 = 15;

// enum ctattr_stats_global
pub const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
pub const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;

// enum ctattr_filter
pub const CTA_FILTER_ORIG_FLAGS: u16 = 1;
pub const CTA_FILTER_REPLY_FLAGS: u16 = 2;

// net/netfilter/nf_conntrack_netlink.c: CTA_FILTER_F_* (the kernel's filter flag bits; the same
// values are carried by libnetfilter_conntrack)
pub const CTA_FILTER_F_CTA_IP_SRC: u32 = 1 << 0;
pub const CTA_FILTER_F_CTA_IP_DST: u32 = 1 << 1;
pub const CTA_FILTER_F_CTA_TUPLE_ZONE: u32 = 1 << 2;
pub const CTA_FILTER_F_CTA_PROTO_NUM: u32 = 1 << 3;
pub const CTA_FILTER_F_CTA_PROTO_SRC_PORT: u32 = 1 << 4;
pub const CTA_FILTER_F_CTA_PROTO_DST_PORT: u32 = 1 << 5;
pub const CTA_FILTER_F_CTA_PROTO_ICMP_TYPE: u32 = 1 << 6;
pub const CTA_FILTER_F_CTA_PROTO_ICMP_CODE: u32 = 1 << 7;
pub const CTA_FILTER_F_CTA_PROTO_ICMP_ID: u32 = 1 << 8;
pub const CTA_FILTER_F_CTA_PROTO_ICMPV6_TYPE: u32 = 1 << 9;
pub const CTA_FILTER_F_CTA_PROTO_ICMPV6_CODE: u32 = 1 << 10;
pub const CTA_FILTER_F_CTA_PROTO_ICMPV6_ID: u32 = 1 << 11;

// include/uapi/linux/netfilter/nf_conntrack_common.h: enum ip_conntrack_status
pub const IPS_EXPECTED: u32 = 1 << 0;
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
pub const IPS_ASSURED: u32 = 1 << 2;
pub const IPS_CONFIRMED: u32 = 1 << 3;
pub const IPS_SRC_NAT: u32 = 1 << 4;
pub const IPS_DST_NAT: u32 = 1 << 5;
pub const IPS_SEQ_ADJUST: u32 = 1 << 6;
pub const IPS_SRC_NAT_DONE: u32 = 1 << 7;
pub const IPS_DST_NAT_DONE: u32 = 1 << 8;
pub const IPS_DYING: u32 = 1 << 9;
pub const IPS_FIXED_TIMEOUT: u32 = 1 << 10;
pub const IPS_TEMPLATE: u32 = 1 << 11;
pub const IPS_UNTRACKED: u32 = 1 << 12;
pub const IPS_HELPER: u32 = 1 << 13;
pub const IPS_OFFLOAD: u32 = 1 << 14;
pub const IPS_HW_OFFLOAD: u32 = 1 << 15;

// include/uapi/linux/netfilter/nf_conntrack_tcp.h: enum tcp_conntrack
pub const TCP_CONNTRACK_NONE: u8 = 0;
pub const TCP_CONNTRACK_SYN_SENT: u8 = 1;
pub const TCP_CONNTRACK_SYN_RECV: u8 = 2;
pub const TCP_CONNTRACK_ESTABLISHED: u8 = 3;
pub const TCP_CONNTRACK_FIN_WAIT: u8 = 4;
pub const TCP_CONNTRACK_CLOSE_WAIT: u8 = 5;
pub const TCP_CONNTRACK_LAST_ACK: u8 = 6;
pub const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
pub const TCP_CONNTRACK_CLOSE: u8 = 8;
pub const TCP_CONNTRACK_SYN_SENT2: u8 = 9;

// include/uapi/linux/netfilter/nf_conntrack_sctp.h: enum sctp_conntrack
pub const SCTP_CONNTRACK_NONE: u8 = 0;
pub const SCTP_CONNTRACK_CLOSED: u8 = 1;
pub const SCTP_CONNTRACK_COOKIE_WAIT: u8 = 2;
pub const SCTP_CONNTRACK_COOKIE_ECHOED: u8 = 3;
pub const SCTP_CONNTRACK_ESTABLISHED: u8 = 4;
pub const SCTP_CONNTRACK_SHUTDOWN_SENT: u8 = 5;
pub const SCTP_CONNTRACK_SHUTDOWN_RECD: u8 = 6;
pub const SCTP_CONNTRACK_SHUTDOWN_ACK_SENT: u8 = 7;
pub const SCTP_CONNTRACK_HEARTBEAT_SENT: u8 = 8;

// include/uapi/linux/in.h, in6.h
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_UDPLITE: u8 = 136;

// include/linux/socket.h
pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
