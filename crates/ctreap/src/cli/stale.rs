//! `ctreap stale` and `ctreap watch`: the node's conntrack table judged against the live
//! cluster, with the same verdict code the agent uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use ctnetlink::codec::format::proto_name;
use ctnetlink::{Conntrack, Filter};
use serde::Serialize;

use crate::args::{KubeArgs, NetnsArg, PolicyArgs, parse_duration, snapshot};
use crate::cluster::ServiceMap;
use crate::reconcile::{
    Decision, Policy, Verdict, VerdictCounts, classify, deletable_decision, flow_of,
    unlisted_hostport_backend,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StaleFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Scope {
    /// Only Services in this namespace (default: every namespace; flows are the node's, not a
    /// namespace's, so unlike kubectl the context's namespace is not applied).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace (the default), as kubectl spells it.
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only this Service (name; with --namespace to be exact).
    #[arg(long)]
    pub service: Option<String>,
}

#[derive(Debug, Args)]
pub struct StaleCmd {
    #[command(flatten)]
    pub scope: Scope,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: StaleFormat,
    /// Exit 1 when a flow exists that the agent would delete (for scripts and monitoring):
    /// stale flows the agent leaves alone (an ignored or held Service, a not-serving TCP
    /// backend without --delete-not-serving) do not count.
    #[arg(long)]
    pub fail_on_stale: bool,
    /// The agent's deletion flags, to judge as an agent run with them does.
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub ns: NetnsArg,
}

#[derive(Debug, Args)]
pub struct WatchCmd {
    #[command(flatten)]
    pub scope: Scope,
    /// Time between two lines.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "1s")]
    pub interval: Duration,
    /// Stop after this many lines (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub ns: NetnsArg,
}

/// Flows of one (Service, protocol, frontend, backend, verdict).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Group {
    pub namespace: String,
    pub service: String,
    pub protocol: &'static str,
    pub frontend: SocketAddr,
    pub backend: SocketAddr,
    pub verdict: &'static str,
    /// What the agent does with these flows ([`action`]).
    pub action: &'static str,
    pub flows: u64,
    /// Packets and bytes in both directions; present only with nf_conntrack_acct=1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Flows the agent would delete (with the same policy flags): what --fail-on-stale fails on.
    pub deletable: u64,
    pub live: u64,
    pub draining: u64,
    pub stale_gone: u64,
    pub stale_not_serving: u64,
    pub stale_not_translated: u64,
    pub not_service: u64,
    /// Every Service flow, grouped; stale groups first.
    pub groups: Vec<Group>,
    /// The table changed during the dump (NLM_F_DUMP_INTR): counts may be off by a few.
    pub dump_interrupted: bool,
}

impl Report {
    pub fn stale(&self) -> u64 {
        self.stale_gone + self.stale_not_serving + self.stale_not_translated
    }
}

fn in_scope(scope: &Scope, ns: &str, name: &str) -> bool {
    scope.namespace.as_deref().is_none_or(|n| n == ns)
        && scope.service.as_deref().is_none_or(|s| s == name)
}

/// What the agent does with a flow, by the rule it deletes by (`reconcile::deletable`):
/// `delete`, or `keep` with why a stale flow stays: `keep: ignored` (the Service is annotated
/// `ctreap.io/ignore`, or held because one of its slices did not decode), `keep: policy` (the
/// protocol or verdict is not deleted with these flags), `keep: hostPort` (a hostPort's backend
/// the API has not listed: maybe a new pod whose IP is not reported yet; the agent deletes
/// only a hostPort backend it saw leave).
pub fn action(d: &Decision, policy: &Policy) -> &'static str {
    if deletable_decision(d, policy).is_some() {
        return "delete";
    }
    if unlisted_hostport_backend(d) {
        return "keep: hostPort";
    }
    match (d.verdict, d.port) {
        (Verdict::Stale(_), Some(p)) if p.ignored() => "keep: ignored",
        (Verdict::Stale(_), _) => "keep: policy",
        _ => "keep",
    }
}

/// Streams the table through the verdict (constant memory in the table size: only groups are
/// kept).
pub fn judge_table(
    ct: &mut Conntrack,
    map: &ServiceMap,
    scope: &Scope,
    policy: &Policy,
) -> Result<Report> {
    type Key = (
        String,
        String,
        u8,
        SocketAddr,
        SocketAddr,
        Verdict,
        &'static str,
    );
    let mut deletable = 0u64;
    let mut groups: BTreeMap<Key, (u64, Option<u64>, Option<u64>)> = BTreeMap::new();
    let mut counts = VerdictCounts::default();
    let summary = ct.dump(&Filter::default(), |e| {
        let Some(flow) = flow_of(&e) else {
            counts.add(Verdict::NotService(
                crate::reconcile::NotServiceReason::Protocol,
            ));
            return ControlFlow::Continue(());
        };
        let d = classify(map, &flow);
        let svc = match (d.verdict, d.service()) {
            // Not a Service's NAT traffic: counted whatever the scope, never grouped.
            (Verdict::NotService(_), _) | (_, None) => {
                counts.add(d.verdict);
                return ControlFlow::Continue(());
            }
            (_, Some(svc)) if !in_scope(scope, &svc.namespace, &svc.name) => {
                return ControlFlow::Continue(());
            }
            (_, Some(svc)) => svc,
        };
        counts.add(d.verdict);
        let act = action(&d, policy);
        if act == "delete" {
            deletable += 1;
        }
        let g = groups
            .entry((
                svc.namespace.to_string(),
                svc.name.to_string(),
                d.proto,
                d.frontend,
                d.backend,
                d.verdict,
                act,
            ))
            .or_insert((0, None, None));
        g.0 += 1;
        if let (Some(o), Some(r)) = (e.counters_orig, e.counters_reply) {
            *g.1.get_or_insert(0) += o.packets + r.packets;
            *g.2.get_or_insert(0) += o.bytes + r.bytes;
        }
        ControlFlow::Continue(())
    })?;
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(
            |(
                (namespace, service, proto, frontend, backend, v, action),
                (flows, packets, bytes),
            )| Group {
                namespace,
                service,
                protocol: proto_name(proto),
                frontend,
                backend,
                verdict: v.as_str(),
                action,
                flows,
                packets,
                bytes,
            },
        )
        .collect();
    out.sort_by_key(|g| !g.verdict.starts_with("stale"));
    Ok(Report {
        deletable,
        live: counts.live,
        draining: counts.draining,
        stale_gone: counts.stale_gone,
        stale_not_serving: counts.stale_not_serving,
        stale_not_translated: counts.stale_not_translated,
        not_service: counts.not_service,
        groups: out,
        dump_interrupted: summary.interrupted,
    })
}

/// Runs `ctreap stale`; returns whether stale flows were found.
pub async fn stale(cmd: StaleCmd) -> Result<bool> {
    let netns = cmd.ns.netns();
    let watch = cmd.kube.synced_watch(netns.as_ref()).await?;
    let snap = snapshot(&watch)?;
    for w in &snap.warnings {
        tracing::warn!("{w}");
    }
    let mut ct = cmd.ns.open()?;
    let scope = cmd.scope.clone();
    let policy = cmd.policy.policy();
    let report =
        tokio::task::spawn_blocking(move || judge_table(&mut ct, &snap.map, &scope, &policy))
            .await??;
    match cmd.output {
        StaleFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        StaleFormat::Table => print_table(&report),
    }
    Ok(report.deletable > 0)
}

fn print_table(r: &Report) {
    let stale: Vec<&Group> = r
        .groups
        .iter()
        .filter(|g| g.verdict.starts_with("stale"))
        .collect();
    if stale.is_empty() {
        println!("no stale flows");
    } else {
        println!(
            "{:<40} {:<6} {:<45} {:<45} {:<18} {:<14} {:>7} {:>10} {:>12}",
            "SERVICE",
            "PROTO",
            "FRONTEND",
            "BACKEND",
            "REASON",
            "AGENT",
            "FLOWS",
            "PACKETS",
            "BYTES"
        );
        for g in stale {
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            println!(
                "{:<40} {:<6} {:<45} {:<45} {:<18} {:<14} {:>7} {:>10} {:>12}",
                format!("{}/{}", g.namespace, g.service),
                g.protocol,
                g.frontend.to_string(),
                g.backend.to_string(),
                g.verdict.trim_start_matches("stale_"),
                g.action,
                g.flows,
                opt(g.packets),
                opt(g.bytes)
            );
        }
    }
    println!(
        "flows: live={} draining={} stale={} (gone={} not-serving={} not-translated={}; the agent deletes {}) not-service={}",
        r.live,
        r.draining,
        r.stale(),
        r.stale_gone,
        r.stale_not_serving,
        r.stale_not_translated,
        r.deletable,
        r.not_service
    );
}

/// Backends (per Service) in a map, to report endpoint changes between two lines.
fn backends(map: &ServiceMap, scope: &Scope) -> BTreeSet<(String, SocketAddr)> {
    let mut out = BTreeSet::new();
    for p in map.ports() {
        let svc = p.service();
        if !in_scope(scope, &svc.namespace, &svc.name) {
            continue;
        }
        for b in p.backends() {
            out.insert((svc.to_string(), SocketAddr::new(b.ip, b.port)));
        }
    }
    out
}

/// RFC 3339 UTC time of day for the watch lines.
pub fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Runs `ctreap watch`: one line per interval.
pub async fn watch(cmd: WatchCmd) -> Result<()> {
    let netns = cmd.ns.netns();
    let watch = cmd.kube.synced_watch(netns.as_ref()).await?;
    let mut ct = Some(cmd.ns.open()?);
    let mut prev = backends(&snapshot(&watch)?.map, &cmd.scope);
    let mut tick = tokio::time::interval(cmd.interval);
    let mut lines = 0u64;
    loop {
        tick.tick().await;
        let snap = snapshot(&watch)?;
        let now = backends(&snap.map, &cmd.scope);
        let added = now.difference(&prev).count();
        let removed = prev.difference(&now).count();
        prev = now;
        let mut conn = ct.take().expect("socket returned by the previous pass");
        let scope = cmd.scope.clone();
        let relisting = !snap.status.current();
        let (conn, report) = tokio::task::spawn_blocking(move || {
            let r = judge_table(&mut conn, &snap.map, &scope, &Policy::default());
            (conn, r)
        })
        .await?;
        ct = Some(conn);
        let report = report?;
        let mut per_svc: BTreeMap<String, [u64; 3]> = BTreeMap::new();
        let mut dead: Vec<String> = Vec::new();
        for g in &report.groups {
            let c = per_svc
                .entry(format!("{}/{}", g.namespace, g.service))
                .or_default();
            match g.verdict {
                "live" => c[0] += g.flows,
                "draining" => c[1] += g.flows,
                _ => {
                    c[2] += g.flows;
                    dead.push(format!(
                        "{} ({} {}, {} flows)",
                        g.backend,
                        g.protocol,
                        g.verdict.trim_start_matches("stale_"),
                        g.flows
                    ));
                }
            }
        }
        let svcs: Vec<String> = per_svc
            .iter()
            .map(|(s, c)| format!("{s} live={} draining={} stale={}", c[0], c[1], c[2]))
            .collect();
        let mut line = format!(
            "{} endpoints +{added} -{removed} | {}",
            utc_now(),
            if svcs.is_empty() {
                "no service flows".to_string()
            } else {
                svcs.join(", ")
            }
        );
        if !dead.is_empty() {
            line.push_str(&format!(
                " | dead backends still receiving: {}",
                dead.join(", ")
            ));
        }
        if relisting {
            line.push_str(" | (a watch is re-listing; view may lag)");
        }
        println!("{line}");
        lines += 1;
        if cmd.count.is_some_and(|c| lines >= c) {
            return Ok(());
        }
    }
}
