//! `ctreap conntrack ...`: the node's conntrack table, read and changed over ctnetlink.

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ctnetlink::codec::format::{
    proto_name, sctp_state_from_name, sctp_state_name, tcp_state_from_name, tcp_state_name,
    write_conntrack_line,
};
use ctnetlink::consts::*;
use ctnetlink::{Entry, EventSocket, FlushPath, Groups, L4, ProtoInfo, SctpInfo, TcpInfo, Tuple};

use super::filter::{FilterArgs, parse_proto, parse_status, status_names};
use crate::args::{NetnsArg, UsageError, parse_duration};

#[derive(Debug, Args)]
pub struct ConntrackCmd {
    #[command(subcommand)]
    pub cmd: ConntrackSub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Exactly the lines of `conntrack -L`.
    Conntrack,
    /// One JSON object per line (JSON Lines), streamed.
    Json,
    /// Aligned columns for people.
    Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventFormat {
    Conntrack,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathArg {
    Auto,
    Kernel,
    DumpDelete,
    Userspace,
}

#[derive(Debug, Subcommand)]
pub enum ConntrackSub {
    /// List entries (`conntrack -L`).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value = "conntrack")]
        output: ListFormat,
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Count entries (`conntrack -C`, or `conntrack -L FILTER | wc -l`).
    Count {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Delete every entry that matches the filter (`conntrack -D FILTER`).
    Flush {
        #[command(flatten)]
        filter: FilterArgs,
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow an empty filter: delete the whole table (`conntrack -F`).
        #[arg(long)]
        all: bool,
        /// Force the flush path (for comparisons); auto picks the fastest the kernel supports.
        #[arg(long, value_enum, default_value = "auto")]
        path: PathArg,
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Stream NEW, UPDATE and DESTROY events (`conntrack -E`).
    Events {
        #[command(flatten)]
        filter: FilterArgs,
        /// Event kinds, comma-separated: NEW,UPDATE,DESTROY.
        #[arg(
            short = 'e',
            long = "event",
            value_delimiter = ',',
            default_value = "NEW,UPDATE,DESTROY"
        )]
        events: Vec<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "conntrack")]
        output: EventFormat,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long (e.g. 10s, 500ms).
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<Duration>,
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Insert an entry (`conntrack -I`), with a NAT reply tuple if given.
    Create(CreateArgs),
    /// Per-CPU statistics (`conntrack -S`) and the table's size against nf_conntrack_max.
    Stats {
        #[command(flatten)]
        ns: NetnsArg,
    },
    /// Ask the kernel which ctnetlink features it supports (filtered dump, filtered flush).
    Probe {
        #[command(flatten)]
        ns: NetnsArg,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(short = 'p', long = "proto", value_parser = parse_proto)]
    pub proto: u8,
    #[arg(short = 's', long = "orig-src", alias = "src")]
    pub orig_src: IpAddr,
    #[arg(short = 'd', long = "orig-dst", alias = "dst")]
    pub orig_dst: IpAddr,
    /// Reply source: the NAT target. Default: the original destination (no DNAT).
    #[arg(short = 'r', long = "reply-src")]
    pub reply_src: Option<IpAddr>,
    /// Reply destination. Default: the original source (no SNAT).
    #[arg(short = 'q', long = "reply-dst")]
    pub reply_dst: Option<IpAddr>,
    #[arg(long = "orig-port-src", alias = "sport")]
    pub orig_port_src: Option<u16>,
    #[arg(long = "orig-port-dst", alias = "dport")]
    pub orig_port_dst: Option<u16>,
    #[arg(long = "reply-port-src")]
    pub reply_port_src: Option<u16>,
    #[arg(long = "reply-port-dst")]
    pub reply_port_dst: Option<u16>,
    #[arg(long = "icmp-type")]
    pub icmp_type: Option<u8>,
    #[arg(long = "icmp-code")]
    pub icmp_code: Option<u8>,
    #[arg(long = "icmp-id")]
    pub icmp_id: Option<u16>,
    /// Timeout in seconds.
    #[arg(short = 't', long = "timeout", default_value_t = 120)]
    pub timeout: u32,
    /// Status bits: ASSURED, SEEN_REPLY, ...
    #[arg(short = 'u', long = "status", value_parser = parse_status)]
    pub status: Option<u32>,
    /// TCP or SCTP state (ESTABLISHED, SYN_SENT, ...).
    #[arg(long = "state")]
    pub state: Option<String>,
    #[arg(short = 'm', long = "mark")]
    pub mark: Option<u32>,
    #[arg(short = 'w', long = "zone")]
    pub zone: Option<u16>,
    /// SCTP verification tag of the original direction (the kernel needs both tags with a state).
    #[arg(long = "orig-vtag", default_value_t = 0)]
    pub orig_vtag: u32,
    #[arg(long = "reply-vtag", default_value_t = 0)]
    pub reply_vtag: u32,
    #[command(flatten)]
    pub ns: NetnsArg,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn run(cmd: ConntrackCmd) -> Result<()> {
    match cmd.cmd {
        ConntrackSub::List { filter, output, ns } => list(&filter, output, &ns),
        ConntrackSub::Count { filter, ns } => {
            let f = filter.to_filter().map_err(UsageError)?;
            let n = ns.open()?.count(&f)?;
            println!("{n}");
            Ok(())
        }
        ConntrackSub::Flush {
            filter,
            dry_run,
            all,
            path,
            ns,
        } => flush(&filter, dry_run, all, path, &ns),
        ConntrackSub::Events {
            filter,
            events,
            output,
            count,
            timeout,
            ns,
        } => self::events(&filter, &events, output, count, timeout, &ns),
        ConntrackSub::Create(args) => create(args),
        ConntrackSub::Stats { ns } => stats(&ns),
        ConntrackSub::Probe { ns } => {
            let f = ns.open()?.probe()?;
            let yes = |b: bool| if b { "yes" } else { "no" };
            println!(
                "filtered dump (CTA_FILTER, Linux 5.8):        {}",
                yes(f.dump_filter)
            );
            println!(
                "status filter (CTA_STATUS, Linux 5.15):       {}",
                yes(f.status_filter)
            );
            println!(
                "filtered flush (CT_DELETE+CTA_FILTER, 6.12):  {}",
                yes(f.flush_filter)
            );
            Ok(())
        }
    }
}

fn list(filter: &FilterArgs, output: ListFormat, ns: &NetnsArg) -> Result<()> {
    let f = filter.to_filter().map_err(UsageError)?;
    let mut ct = ns.open()?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let now = now_secs();
    let mut line = String::with_capacity(256);
    let mut io_err = None;
    if output == ListFormat::Table {
        let _ = writeln!(
            out,
            "{:<7} {:<12} {:>7}  {:<45} {:<45} {:<45} FLAGS",
            "PROTO", "STATE", "TIMEOUT", "SOURCE", "DESTINATION", "REPLY-SOURCE"
        );
    }
    let summary = ct.dump(&f, |e| {
        line.clear();
        match output {
            ListFormat::Conntrack => write_conntrack_line(&mut line, &e, now),
            ListFormat::Json => line.push_str(&entry_json(&e).to_string()),
            ListFormat::Table => table_row(&mut line, &e),
        }
        line.push('\n');
        match out.write_all(line.as_bytes()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                io_err = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = io_err
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the list");
    }
    let _ = out.flush();
    eprintln!("ctreap: {} flow entries have been shown.", summary.entries);
    if summary.interrupted {
        eprintln!(
            "ctreap: warning: the table changed during the dump (NLM_F_DUMP_INTR); entries may be missing or repeated"
        );
    }
    if summary.decode_errors > 0 {
        eprintln!(
            "ctreap: warning: {} messages from the kernel did not decode and were skipped; first: {}",
            summary.decode_errors,
            summary.first_decode_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// `ip:port` (`[ip]:port` for IPv6), or the bare address for protocols without ports.
fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    port.map_or_else(|| ip.to_string(), |p| SocketAddr::new(ip, p).to_string())
}

fn table_row(line: &mut String, e: &Entry) {
    use std::fmt::Write as _;
    let state = match &e.protoinfo {
        Some(ProtoInfo::Tcp(t)) => ctnetlink::codec::format::tcp_state_name(t.state),
        Some(ProtoInfo::Sctp(s)) => ctnetlink::codec::format::sctp_state_name(s.state),
        _ => "-",
    };
    let mut flags = Vec::new();
    if e.status & IPS_ASSURED != 0 {
        flags.push("ASSURED");
    }
    if e.status & IPS_SEEN_REPLY == 0 {
        flags.push("UNREPLIED");
    }
    if e.is_dnat() {
        flags.push("DNAT");
    }
    let _ = write!(
        line,
        "{:<7} {:<12} {:>7}  {:<45} {:<45} {:<45} {}",
        proto_name(e.orig.proto.num),
        state,
        e.timeout.map_or("-".to_string(), |t| t.to_string()),
        endpoint(e.orig.src, e.orig.proto.src_port),
        endpoint(e.orig.dst, e.orig.proto.dst_port),
        endpoint(e.reply.src, e.reply.proto.src_port),
        flags.join(",")
    );
}

fn flush(
    filter: &FilterArgs,
    dry_run: bool,
    all: bool,
    path: PathArg,
    ns: &NetnsArg,
) -> Result<()> {
    let f = filter.to_filter().map_err(UsageError)?;
    if f.is_empty() && !all {
        return Err(UsageError(
            "refusing to flush with no filter: that deletes every entry; pass --all if you mean it"
                .into(),
        )
        .into());
    }
    let mut ct = ns.open()?;
    if dry_run {
        let n = ct.count(&f)?;
        println!("{n} flow entries would be deleted (dry run)");
        return Ok(());
    }
    ct.force_flush_path(match path {
        PathArg::Auto => None,
        PathArg::Kernel => Some(FlushPath::Kernel),
        PathArg::DumpDelete => Some(FlushPath::DumpDelete),
        PathArg::Userspace => Some(FlushPath::Userspace),
    });
    let r = ct.flush(&f)?;
    println!(
        "{} flow entries have been deleted (path: {})",
        r.deleted,
        r.path.as_str()
    );
    if r.dump_interrupted {
        eprintln!(
            "ctreap: warning: the table changed during the dump (NLM_F_DUMP_INTR); run again to catch entries it missed"
        );
    }
    Ok(())
}

fn events(
    filter: &FilterArgs,
    kinds: &[String],
    output: EventFormat,
    count: Option<u64>,
    timeout: Option<Duration>,
    ns: &NetnsArg,
) -> Result<()> {
    let f = filter.to_filter().map_err(UsageError)?;
    let mut groups = Groups {
        new: false,
        update: false,
        destroy: false,
    };
    for k in kinds {
        match k.trim().to_ascii_uppercase().as_str() {
            "NEW" => groups.new = true,
            "UPDATE" => groups.update = true,
            "DESTROY" => groups.destroy = true,
            "ALL" => groups = Groups::ALL,
            other => {
                return Err(UsageError(format!(
                    "--event: unknown event {other:?} (NEW, UPDATE, DESTROY)"
                ))
                .into());
            }
        }
    }
    let mut sock = EventSocket::open(
        ns.netns().as_ref(),
        groups,
        ctnetlink::events::DEFAULT_RCVBUF,
    )?;
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let stdout = io::stdout();
    let mut seen = 0u64;
    let mut line = String::new();
    loop {
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(left) => Some(left),
                None => return Ok(()),
            },
            None => None,
        };
        let mut out = stdout.lock();
        let mut broken = false;
        let res = sock.recv(wait, |ev| {
            if !f.matches(&ev.entry) || count.is_some_and(|c| seen >= c) {
                return;
            }
            seen += 1;
            line.clear();
            match output {
                EventFormat::Conntrack => {
                    line.push_str(&format!("{:>9} ", format!("[{}]", ev.kind.as_str())));
                    write_conntrack_line(&mut line, &ev.entry, now_secs());
                }
                EventFormat::Json => {
                    let mut v = serde_json::to_value(&ev).unwrap_or_default();
                    v["entry"] = entry_json(&ev.entry);
                    line.push_str(&v.to_string());
                }
            }
            line.push('\n');
            broken |= out
                .write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .is_err();
        });
        match res {
            Ok(_) => {}
            Err(ctnetlink::Error::Overrun) => {
                eprintln!(
                    "ctreap: warning: event socket overrun (ENOBUFS): events were lost, resync needed"
                );
            }
            Err(e) => return Err(e.into()),
        }
        if broken || count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
    }
}

fn create(a: CreateArgs) -> Result<()> {
    if a.orig_src.is_ipv4() != a.orig_dst.is_ipv4() {
        bail!(UsageError(
            "--orig-src and --orig-dst must be of the same family".into()
        ));
    }
    let l4 = match a.proto {
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let default_type = if a.proto == IPPROTO_ICMP { 8 } else { 128 };
            L4::icmp(
                a.proto,
                a.icmp_type.unwrap_or(default_type),
                a.icmp_code.unwrap_or(0),
                a.icmp_id.unwrap_or(0),
            )
        }
        p => {
            let (Some(s), Some(d)) = (a.orig_port_src, a.orig_port_dst) else {
                bail!(UsageError(
                    "--orig-port-src and --orig-port-dst are required for this protocol".into()
                ));
            };
            L4::ports(p, s, d)
        }
    };
    let orig = Tuple::new(a.orig_src, a.orig_dst, l4);
    let mut reply = orig.invert();
    if let Some(r) = a.reply_src {
        reply.src = r;
    }
    if let Some(r) = a.reply_dst {
        reply.dst = r;
    }
    if reply.src.is_ipv4() != orig.src.is_ipv4() || reply.dst.is_ipv4() != orig.src.is_ipv4() {
        bail!(UsageError(
            "reply addresses must be of the same family as the original ones".into()
        ));
    }
    if a.reply_port_src.is_some() {
        reply.proto.src_port = a.reply_port_src;
    }
    if a.reply_port_dst.is_some() {
        reply.proto.dst_port = a.reply_port_dst;
    }
    let mut e = Entry::new(orig, reply);
    e.timeout = Some(a.timeout);
    e.status = a.status.unwrap_or(0);
    e.mark = a.mark;
    e.zone = a.zone;
    if let Some(s) = &a.state {
        e.protoinfo = Some(match a.proto {
            IPPROTO_TCP => ProtoInfo::Tcp(TcpInfo {
                state: tcp_state_from_name(s)
                    .ok_or_else(|| UsageError(format!("--state: unknown TCP state {s:?}")))?,
                ..TcpInfo::default()
            }),
            IPPROTO_SCTP => ProtoInfo::Sctp(SctpInfo {
                state: sctp_state_from_name(s)
                    .ok_or_else(|| UsageError(format!("--state: unknown SCTP state {s:?}")))?,
                vtag_original: Some(a.orig_vtag),
                vtag_reply: Some(a.reply_vtag),
            }),
            _ => bail!(UsageError("--state applies to tcp and sctp only".into())),
        });
    }
    a.ns.open()?.create(&e)?;
    eprintln!("ctreap: 1 flow entries have been created.");
    Ok(())
}

fn stats(ns: &NetnsArg) -> Result<()> {
    let mut ct = ns.open()?;
    for s in ct.stats_cpu()? {
        println!(
            "cpu={:<4}\tfound={} invalid={} insert={} insert_failed={} drop={} early_drop={} error={} search_restart={} clash_resolve={} chaintoolong={}",
            s.cpu,
            s.found,
            s.invalid,
            s.insert,
            s.insert_failed,
            s.drop,
            s.early_drop,
            s.error,
            s.search_restart,
            s.clash_resolve,
            s.chaintoolong
        );
    }
    let g = ct.stats()?;
    match g.max_entries {
        Some(max) => println!(
            "entries={} max={} ({:.1}% full)",
            g.entries,
            max,
            100.0 * g.entries as f64 / max.max(1) as f64
        ),
        None => println!("entries={}", g.entries),
    }
    Ok(())
}

/// An entry as JSON, the numbers kept and the names conntrack users read beside them:
/// `family_name`, each tuple's `proto.name`, `status_flags` and the TCP/SCTP `state_name`.
fn entry_json(e: &Entry) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    let Some(o) = v.as_object_mut() else {
        return v;
    };
    let family = match e.family {
        AF_INET => "ipv4",
        AF_INET6 => "ipv6",
        _ => "unknown",
    };
    o.insert("family_name".into(), family.into());
    o.insert("status_flags".into(), status_names(e.status).into());
    for dir in ["orig", "reply"] {
        if let Some(p) = o.get_mut(dir).and_then(|t| t.get_mut("proto"))
            && let Some(num) = p.get("num").and_then(serde_json::Value::as_u64)
        {
            p["name"] = proto_name(num as u8).into();
        }
    }
    if let Some(pi) = o.get_mut("protoinfo") {
        for (proto, name) in [
            ("tcp", tcp_state_name as fn(u8) -> &'static str),
            ("sctp", sctp_state_name),
        ] {
            if let Some(info) = pi.get_mut(proto)
                && let Some(state) = info.get("state").and_then(serde_json::Value::as_u64)
            {
                info["state_name"] = name(state as u8).into();
            }
        }
    }
    v
}
