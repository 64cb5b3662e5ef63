//! Kernel tests: the real conntrack table of a private network namespace, cross-checked with
//! conntrack-tools. They need root; under CI they fail (never skip) when they cannot run.

use ctnetlink_testns as common;

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestNs, stable_lines};
use ctnetlink::codec::format::conntrack_line;
use ctnetlink::consts::*;
use ctnetlink::{
    Entry, EventKind, EventSocket, Filter, FlushPath, Groups, L4, ProtoInfo, SctpInfo, TcpInfo,
    Tuple,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A NAT entry: `src:sport -> dst:dport` DNATed to `to:to_port`, replies to `reply_dst`.
fn nat(
    proto: u8,
    (src, sport): (&str, u16),
    (dst, dport): (&str, u16),
    (to, to_port): (&str, u16),
    reply_dst: &str,
) -> Entry {
    let orig = Tuple::new(ip(src), ip(dst), L4::ports(proto, sport, dport));
    let reply = Tuple::new(ip(to), ip(reply_dst), L4::ports(proto, to_port, sport));
    let mut e = Entry::new(orig, reply);
    e.timeout = Some(600);
    e
}

/// The table every test starts from: v4 and v6; UDP, TCP, SCTP, ICMP, ICMPv6; DNAT and SNAT;
/// marks, a zone, assured and unreplied entries.
fn standard_entries() -> Vec<Entry> {
    let mut v = Vec::new();
    let mut e = nat(
        IPPROTO_UDP,
        ("192.0.2.1", 5000),
        ("198.18.0.10", 53),
        ("10.0.0.5", 5353),
        "192.0.2.1",
    );
    e.status = IPS_ASSURED | IPS_SEEN_REPLY;
    e.mark = Some(7);
    v.push(e);
    let mut e = nat(
        IPPROTO_UDP,
        ("192.0.2.2", 5001),
        ("198.18.0.10", 53),
        ("10.0.0.6", 5353),
        "192.0.2.2",
    );
    e.mark = Some(0x107);
    v.push(e);
    let mut e = nat(
        IPPROTO_TCP,
        ("192.0.2.1", 40000),
        ("198.18.0.11", 80),
        ("10.0.0.5", 8080),
        "192.0.2.254",
    );
    e.status = IPS_ASSURED | IPS_SEEN_REPLY;
    e.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
        state: TCP_CONNTRACK_ESTABLISHED,
        ..TcpInfo::default()
    }));
    v.push(e);
    let mut e = nat(
        IPPROTO_TCP,
        ("192.0.2.3", 40001),
        ("198.18.0.11", 80),
        ("10.0.0.7", 8080),
        "192.0.2.3",
    );
    e.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
        state: TCP_CONNTRACK_SYN_SENT,
        ..TcpInfo::default()
    }));
    v.push(e);
    let mut e = nat(
        IPPROTO_SCTP,
        ("192.0.2.1", 3868),
        ("198.18.0.12", 3868),
        ("10.0.0.5", 3868),
        "192.0.2.1",
    );
    e.protoinfo = Some(ProtoInfo::Sctp(SctpInfo {
        state: SCTP_CONNTRACK_ESTABLISHED,
        vtag_original: Some(1),
        vtag_reply: Some(2),
    }));
    v.push(e);
    let orig = Tuple::new(
        ip("192.0.2.1"),
        ip("198.18.0.10"),
        L4::icmp(IPPROTO_ICMP, 8, 0, 77),
    );
    let mut e = Entry::new(orig, orig.invert());
    e.timeout = Some(600);
    v.push(e);
    let mut e = nat(
        IPPROTO_UDP,
        ("192.0.2.9", 1),
        ("198.18.0.10", 53),
        ("10.0.0.5", 5353),
        "192.0.2.9",
    );
    e.zone = Some(5);
    v.push(e);
    let mut e = nat(
        IPPROTO_UDP,
        ("2001:db8::1", 5000),
        ("2001:db8:ffff::10", 53),
        ("2001:db8:a::5", 5353),
        "2001:db8::1",
    );
    e.status = IPS_ASSURED | IPS_SEEN_REPLY;
    v.push(e);
    let mut e = nat(
        IPPROTO_TCP,
        ("2001:db8::2", 40000),
        ("2001:db8:ffff::11", 80),
        ("2001:db8:a::6", 8080),
        "2001:db8::2",
    );
    e.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
        state: TCP_CONNTRACK_ESTABLISHED,
        ..TcpInfo::default()
    }));
    v.push(e);
    let orig = Tuple::new(
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        L4::icmp(IPPROTO_ICMPV6, 128, 0, 9),
    );
    let mut e = Entry::new(orig, orig.invert());
    e.timeout = Some(600);
    v.push(e);
    let mut e = nat(
        IPPROTO_SCTP,
        ("2001:db8::3", 1000),
        ("2001:db8:ffff::12", 2000),
        ("2001:db8:a::5", 2001),
        "2001:db8::3",
    );
    e.protoinfo = Some(ProtoInfo::Sctp(SctpInfo {
        state: SCTP_CONNTRACK_COOKIE_WAIT,
        vtag_original: Some(5),
        vtag_reply: Some(6),
    }));
    v.push(e);
    v
}

fn fill(ns: &TestNs) -> usize {
    let entries = standard_entries();
    let r = ns.ct().create_batch(&entries).expect("create batch");
    assert!(r.failed.is_empty(), "creates failed: {:?}", r.failed);
    assert_eq!(r.ok as usize, entries.len());
    entries.len()
}

fn our_lines(ns: &TestNs, filter: &Filter) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut out = String::new();
    ns.ct()
        .dump(filter, |e| {
            out.push_str(&conntrack_line(&e, now));
            out.push('\n');
            ControlFlow::Continue(())
        })
        .expect("dump");
    out
}

fn assert_list_matches(ns: &TestNs) {
    common::assert_same_lines(&our_lines(ns, &Filter::default()), &ns.conntrack(&["-L"]));
}

#[test]
fn list_matches_conntrack_tools_line_for_line() {
    let ns = TestNs::new("list");
    let n = fill(&ns);
    // Entries made by conntrack-tools too, so both creators are covered.
    ns.conntrack(&[
        "-I",
        "-p",
        "udp",
        "-s",
        "192.0.2.50",
        "-d",
        "198.18.0.20",
        "--sport",
        "7",
        "--dport",
        "53",
        "-r",
        "10.0.1.1",
        "-q",
        "192.0.2.50",
        "--reply-port-src",
        "53",
        "--reply-port-dst",
        "7",
        "-t",
        "600",
        "-u",
        "SEEN_REPLY",
        "-m",
        "3",
    ]);
    ns.conntrack(&[
        "-I",
        "-p",
        "tcp",
        "-s",
        "2001:db8::50",
        "-d",
        "2001:db8::51",
        "--sport",
        "1",
        "--dport",
        "2",
        "--state",
        "TIME_WAIT",
        "-t",
        "600",
    ]);
    assert_eq!(ns.ct().stats().expect("stats").entries as usize, n + 2);
    assert_list_matches(&ns);
}

#[test]
fn list_matches_with_counters_and_timestamps() {
    let ns = TestNs::new("acct");
    ns.sysctl("net.netfilter.nf_conntrack_acct", "1");
    ns.sysctl("net.netfilter.nf_conntrack_timestamp", "1");
    fill(&ns);
    assert_list_matches(&ns);
    let mut with_counters = 0;
    ns.ct()
        .dump(&Filter::default(), |e| {
            assert!(
                e.timestamp.is_some_and(|t| t.start > 0),
                "timestamp missing: {e:?}"
            );
            with_counters += usize::from(e.counters_orig.is_some() && e.counters_reply.is_some());
            ControlFlow::Continue(())
        })
        .expect("dump");
    assert_eq!(with_counters, standard_entries().len());
}

#[test]
fn created_entries_read_back_with_every_field() {
    let ns = TestNs::new("roundtrip");
    fill(&ns);
    let mut ct = ns.ct();
    for want in standard_entries() {
        let got = ct
            .get(&want.orig, want.zone)
            .expect("get")
            .unwrap_or_else(|| panic!("entry missing: {want:?}"));
        assert_eq!(got.orig, want.orig);
        assert_eq!(got.reply, want.reply);
        assert_eq!(got.mark.unwrap_or(0), want.mark.unwrap_or(0));
        assert_eq!(got.zone, want.zone);
        assert_eq!(got.status & (IPS_ASSURED | IPS_SEEN_REPLY), want.status);
        assert_eq!(
            got.protoinfo.as_ref().map(state_of),
            want.protoinfo.as_ref().map(state_of),
            "{got:?}"
        );
        assert!(
            got.timeout.is_some_and(|t| t > 500 && t <= 600),
            "timeout {:?}",
            got.timeout
        );
    }
}

fn state_of(p: &ProtoInfo) -> u8 {
    match p {
        ProtoInfo::Tcp(t) => t.state,
        ProtoInfo::Sctp(s) => s.state,
        _ => 255,
    }
}

struct Case {
    name: &'static str,
    conntrack_args: &'static [&'static str],
    filter: Filter,
}

fn cases() -> Vec<Case> {
    let f = Filter::default;
    vec![
        Case {
            name: "proto",
            conntrack_args: &["-p", "udp"],
            filter: Filter {
                proto: Some(IPPROTO_UDP),
                ..f()
            },
        },
        Case {
            name: "orig-src",
            conntrack_args: &["-s", "192.0.2.1"],
            filter: Filter {
                orig_src: Some(ip("192.0.2.1")),
                ..f()
            },
        },
        Case {
            name: "orig-dst",
            conntrack_args: &["-d", "198.18.0.11"],
            filter: Filter {
                orig_dst: Some(ip("198.18.0.11")),
                ..f()
            },
        },
        Case {
            name: "reply-src",
            conntrack_args: &["-r", "10.0.0.5"],
            filter: Filter {
                reply_src: Some(ip("10.0.0.5")),
                ..f()
            },
        },
        Case {
            name: "reply-dst",
            conntrack_args: &["-q", "192.0.2.254"],
            filter: Filter {
                reply_dst: Some(ip("192.0.2.254")),
                ..f()
            },
        },
        Case {
            name: "reply-src-v6",
            conntrack_args: &["-r", "2001:db8:a::5"],
            filter: Filter {
                reply_src: Some(ip("2001:db8:a::5")),
                ..f()
            },
        },
        Case {
            name: "orig-port-src",
            conntrack_args: &["-p", "udp", "--orig-port-src", "5000"],
            filter: Filter {
                proto: Some(IPPROTO_UDP),
                orig_src_port: Some(5000),
                ..f()
            },
        },
        Case {
            name: "orig-port-dst",
            conntrack_args: &["-p", "tcp", "--orig-port-dst", "80"],
            filter: Filter {
                proto: Some(IPPROTO_TCP),
                orig_dst_port: Some(80),
                ..f()
            },
        },
        Case {
            name: "reply-port-src",
            conntrack_args: &["-p", "udp", "--reply-port-src", "5353"],
            filter: Filter {
                proto: Some(IPPROTO_UDP),
                reply_src_port: Some(5353),
                ..f()
            },
        },
        Case {
            name: "reply-port-dst",
            conntrack_args: &["-p", "tcp", "--reply-port-dst", "40000"],
            filter: Filter {
                proto: Some(IPPROTO_TCP),
                reply_dst_port: Some(40000),
                ..f()
            },
        },
        Case {
            name: "mark",
            conntrack_args: &["-m", "7"],
            filter: Filter {
                mark: Some((7, u32::MAX)),
                ..f()
            },
        },
        Case {
            name: "mark-mask",
            conntrack_args: &["-m", "7/0xff"],
            filter: Filter {
                mark: Some((7, 0xff)),
                ..f()
            },
        },
        Case {
            name: "zone",
            conntrack_args: &["-w", "5"],
            filter: Filter {
                zone: Some(5),
                ..f()
            },
        },
        Case {
            name: "family",
            conntrack_args: &["-f", "ipv6"],
            filter: Filter {
                family: Some(AF_INET6),
                ..f()
            },
        },
        Case {
            name: "status",
            conntrack_args: &["-u", "ASSURED"],
            filter: Filter {
                status: Some((IPS_ASSURED, IPS_ASSURED)),
                ..f()
            },
        },
        Case {
            // Exactly the key ctreap's agent flushes: a Service frontend and a gone backend.
            name: "frontend-backend",
            conntrack_args: &[
                "-p",
                "udp",
                "-d",
                "198.18.0.10",
                "--orig-port-dst",
                "53",
                "-r",
                "10.0.0.5",
                "--reply-port-src",
                "5353",
            ],
            filter: Filter {
                proto: Some(IPPROTO_UDP),
                orig_dst: Some(ip("198.18.0.10")),
                orig_dst_port: Some(53),
                reply_src: Some(ip("10.0.0.5")),
                reply_src_port: Some(5353),
                ..f()
            },
        },
    ]
}

/// Flushes with `path` and checks with conntrack-tools that exactly the entries `conntrack -L
/// FILTER` listed are gone, and no other.
fn check_flush(case: &Case, path: FlushPath) {
    let ns = TestNs::new("flush");
    fill(&ns);
    let before = stable_lines(&ns.conntrack(&["-L"]));
    let mut args = vec!["-L"];
    args.extend_from_slice(case.conntrack_args);
    let expected_gone = stable_lines(&ns.conntrack(&args));
    assert!(
        !expected_gone.is_empty(),
        "{}: the filter should match something",
        case.name
    );
    assert!(
        expected_gone.len() < before.len(),
        "{}: the filter should not match everything",
        case.name
    );
    let mut ct = ns.ct();
    ct.force_flush_path(Some(path));
    let mut path = path;
    if path == FlushPath::Kernel && !case.filter.kernel_exact() {
        // IPv6 addresses: the kernel compares them inverted, so its flush must be refused and
        // the automatic choice must go through the dump.
        let err = ct
            .flush(&case.filter)
            .expect_err("kernel flush of an IPv6 address filter must be refused");
        assert!(err.to_string().contains("IPv6"), "{err}");
        assert_eq!(
            stable_lines(&ns.conntrack(&["-L"])),
            before,
            "{}: the refused flush deleted something",
            case.name
        );
        ct.force_flush_path(None);
        path = FlushPath::DumpDelete;
    }
    let report = ct
        .flush(&case.filter)
        .unwrap_or_else(|e| panic!("{} via {path:?}: {e}", case.name));
    let after = stable_lines(&ns.conntrack(&["-L"]));
    let expected_after: Vec<String> = before
        .iter()
        .filter(|l| !expected_gone.contains(l))
        .cloned()
        .collect();
    assert_eq!(
        after, expected_after,
        "{} via {path:?}: wrong entries left",
        case.name
    );
    assert_eq!(
        report.deleted as usize,
        expected_gone.len(),
        "{} via {path:?}: reported count",
        case.name
    );
    assert_eq!(report.path, path, "{}", case.name);
}

#[test]
fn kernel_flush_deletes_exactly_each_filter_kind() {
    for case in cases() {
        check_flush(&case, FlushPath::Kernel);
    }
}

#[test]
fn dump_delete_fallback_matches_kernel_flush() {
    for case in cases() {
        check_flush(&case, FlushPath::DumpDelete);
    }
}

#[test]
fn userspace_fallback_matches_kernel_flush() {
    for case in cases() {
        check_flush(&case, FlushPath::Userspace);
    }
}

#[test]
fn filtered_dump_lists_what_conntrack_tools_lists() {
    let ns = TestNs::new("filter");
    fill(&ns);
    for case in cases() {
        let mut args = vec!["-L"];
        args.extend_from_slice(case.conntrack_args);
        let theirs = stable_lines(&ns.conntrack(&args));
        let ours = stable_lines(&our_lines(&ns, &case.filter));
        assert_eq!(ours, theirs, "filter {}", case.name);
        assert_eq!(
            ns.ct().count(&case.filter).expect("count") as usize,
            theirs.len(),
            "count {}",
            case.name
        );
    }
}

#[test]
fn automatic_flush_takes_the_kernel_path_here_and_refuses_bad_filters() {
    let ns = TestNs::new("auto");
    fill(&ns);
    let mut ct = ns.ct();
    let features = ct.probe().expect("probe");
    assert!(
        features.dump_filter && features.flush_filter,
        "this kernel (6.18) has both: {features:?}"
    );
    let r = ct
        .flush(&Filter {
            reply_src: Some(ip("10.0.0.6")),
            ..Filter::default()
        })
        .expect("flush");
    assert_eq!((r.deleted, r.path), (1, FlushPath::Kernel));
    let bad = Filter {
        orig_dst_port: Some(53),
        ..Filter::default()
    };
    let err = ct
        .flush(&bad)
        .expect_err("ports without a protocol are refused");
    assert!(err.to_string().contains("-p/--proto"), "{err}");
    assert_eq!(
        ct.stats().expect("stats").entries as usize,
        standard_entries().len() - 1,
        "the refused flush deleted nothing"
    );
}

#[test]
fn a_complete_tuple_filter_still_honours_the_rest_of_the_filter() {
    // Before Linux 6.12 such a CT_DELETE would delete the tuple's entry and ignore the reply
    // source; the flush probes first, and on this kernel the filter must hold in full.
    let ns = TestNs::new("complete");
    let n = fill(&ns);
    let mut ct = ns.ct();
    let e = &standard_entries()[0];
    let mut f = Filter {
        proto: Some(IPPROTO_UDP),
        orig_src: Some(e.orig.src),
        orig_dst: Some(e.orig.dst),
        orig_src_port: e.orig.proto.src_port,
        orig_dst_port: e.orig.proto.dst_port,
        reply_src: Some(ip("10.0.0.99")),
        ..Filter::default()
    };
    let r = ct.flush(&f).expect("flush with another backend");
    assert_eq!((r.deleted, r.path), (0, FlushPath::Kernel));
    assert!(
        ct.get(&e.orig, None).expect("get").is_some(),
        "the entry of another backend stays"
    );
    f.reply_src = Some(e.reply.src);
    let r = ct.flush(&f).expect("flush with its backend");
    assert_eq!((r.deleted, r.path), (1, FlushPath::Kernel));
    assert_eq!(ct.stats().expect("stats").entries as usize, n - 1);
}

#[test]
fn delete_by_tuple_reports_already_gone() {
    let ns = TestNs::new("delete");
    fill(&ns);
    let mut ct = ns.ct();
    let e = &standard_entries()[0];
    assert!(
        ct.delete(&e.orig, None).expect("delete"),
        "first delete removes it"
    );
    assert!(
        !ct.delete(&e.orig, None).expect("second delete"),
        "second delete: ENOENT means already gone"
    );
    assert!(ct.get(&e.orig, None).expect("get").is_none());
    let zoned = standard_entries()
        .into_iter()
        .find(|e| e.zone.is_some())
        .expect("a zoned entry");
    assert!(
        !ct.delete(&zoned.orig, None).expect("wrong zone"),
        "zone 0 has no such entry"
    );
    assert!(ct.delete(&zoned.orig, zoned.zone).expect("right zone"));
}

#[test]
fn creating_a_duplicate_is_eexist() {
    let ns = TestNs::new("dup");
    fill(&ns);
    let err = ns
        .ct()
        .create(&standard_entries()[0])
        .expect_err("duplicate");
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
}

#[test]
fn stats_agree_with_conntrack_tools() {
    let ns = TestNs::new("stats");
    let n = fill(&ns);
    let mut ct = ns.ct();
    let g = ct.stats().expect("stats");
    assert_eq!(g.entries as usize, n);
    assert_eq!(ns.conntrack(&["-C"]).trim(), n.to_string());
    assert!(g.max_entries.is_some_and(|m| m > 0));
    let cpus = ct.stats_cpu().expect("stats cpu");
    assert_eq!(
        cpus.len(),
        ns.conntrack(&["-S"]).lines().count(),
        "one line per CPU as conntrack -S"
    );
}

#[test]
fn events_arrive_for_create_and_delete() {
    let ns = TestNs::new("events");
    let mut ev = EventSocket::open(Some(&ns.netns()), Groups::ALL, 1 << 20).expect("event socket");
    let e = &standard_entries()[0];
    ns.ct().create(e).expect("create");
    assert!(ns.ct().delete(&e.orig, None).expect("delete"));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && Instant::now() < deadline {
        ev.recv(Some(Duration::from_millis(200)), |x| got.push(x))
            .expect("recv");
    }
    let kinds: Vec<EventKind> = got.iter().map(|x| x.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::New, EventKind::Destroy],
        "events: {got:?}"
    );
    for x in &got {
        assert_eq!(x.entry.orig, e.orig);
        assert_eq!(x.entry.reply, e.reply);
    }
}

#[test]
fn event_overrun_is_reported_as_resync_needed() {
    let ns = TestNs::new("overrun");
    // The smallest buffer the kernel allows fills after a few events.
    let mut ev = EventSocket::open(Some(&ns.netns()), Groups::ALL, 4096).expect("event socket");
    let entries: Vec<Entry> = (0..2000u16)
        .map(|i| {
            nat(
                IPPROTO_UDP,
                ("192.0.2.1", 10000 + i),
                ("198.18.0.10", 53),
                ("10.0.0.5", 5353),
                "192.0.2.1",
            )
        })
        .collect();
    let r = ns.ct().create_batch(&entries).expect("create batch");
    assert_eq!(r.ok, 2000);
    let mut overrun = false;
    for _ in 0..10_000 {
        match ev.recv(Some(Duration::from_millis(50)), |_| {}) {
            Err(ctnetlink::Error::Overrun) => {
                overrun = true;
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(0) => break,
            Ok(_) => {}
        }
    }
    assert!(overrun, "2000 events into a 4 KiB buffer must overrun");
    let msg = ctnetlink::Error::Overrun.to_string();
    assert!(msg.contains("resync needed"), "{msg}");
}

#[test]
fn missing_namespace_is_a_clear_error() {
    common::require_kernel();
    let err =
        ctnetlink::Conntrack::open_in(Some(&ctnetlink::Netns::named("ctreap-does-not-exist")))
            .expect_err("no such netns");
    let msg = err.to_string();
    assert!(
        msg.contains("/run/netns/ctreap-does-not-exist") && msg.contains("ip netns"),
        "{msg}"
    );
}

#[test]
fn dump_streams_a_large_table_and_stops_early_on_request() {
    let ns = TestNs::new("large");
    let entries: Vec<Entry> = (0..20_000u32)
        .map(|i| {
            let client = format!("192.0.{}.{}", 2 + i / 250 / 250, (i / 250) % 250);
            nat(
                IPPROTO_TCP,
                (&client, 1024 + (i % 250) as u16),
                ("198.18.0.10", 80),
                ("10.0.0.5", 8080),
                &client,
            )
        })
        .collect();
    let r = ns.ct().create_batch(&entries).expect("create");
    assert_eq!(r.ok, 20_000, "failed: {:?}", r.failed.first());
    let mut ct = ns.ct();
    let s = ct
        .dump(&Filter::default(), |_| ControlFlow::Continue(()))
        .expect("dump");
    assert_eq!(s.entries, 20_000);
    assert_eq!(s.decode_errors, 0);
    let mut seen = 0;
    let s = ct
        .dump(&Filter::default(), |_| {
            seen += 1;
            if seen == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("dump with break");
    assert_eq!((seen, s.entries), (10, 10));
    // The socket is still usable after an early stop.
    assert_eq!(ct.stats().expect("stats").entries, 20_000);
    assert_eq!(
        ct.count(&Filter {
            reply_src: Some(ip("10.0.0.5")),
            ..Filter::default()
        })
        .expect("count"),
        20_000
    );
}
