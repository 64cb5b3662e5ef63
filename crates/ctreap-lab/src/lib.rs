//! `ctreap-lab` (scripts/lab, the README's main job): the seed's outage reproduced on the real
//! kernel in network namespaces, and every fix compared. Its own crate on top of `ctreap`, so
//! that the product binary links no test server; it runs the `ctreap` binary as the agent.
//!
//! `world` builds the mini-cluster (node namespace with kube-proxy-like NAT, pods, clients,
//! the API server objects, the rule programmer, the portmap plugin's hostPort DNAT); `clients`
//! sends the traffic; `scenario` runs one variant's rolling update, and `hostport` the
//! hostPort DaemonSet's roll of variants 8 to 11; `agent` starts `ctreap run`; `report`
//! and `plot` turn the samples into figures, report.json, the table, timeline.svg and
//! lb-503.svg; `lb` is the load balancer client.

pub mod agent;
pub mod clients;
mod hostport;
mod lb;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod world;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use clients::{ClientKind, LbPool};
use ctreap::args::{UsageError, parse_duration};
use report::{Report, Samples};
use scenario::{Plan, Variant};
use world::{NatBackend, Requirements};

#[derive(Debug, Clone, Args)]
pub struct LabCmd {
    /// Variants to run, in order: nothing (the outage), prestop (the seed's preStop hook),
    /// timeouts (the seed's reduced conntrack timeouts), ctreap (the agent), kube-proxy
    /// (kube-proxy >= 1.32's own UDP conntrack cleanup, without ctreap), drain (the seed's
    /// graceful connection draining in the application), headless (the seed's headless
    /// Service: clients resolve pod IPs, no NAT); the hostPort DaemonSet's roll with the
    /// portmap plugin as it ships (flush on ADD): hostport (no fix), hostport-ctreap; and
    /// without its ADD flush: hostport-noflush, hostport-noflush-ctreap (the lb client does
    /// not take part in them).
    #[arg(
        long = "variant",
        visible_alias = "variants",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "nothing,prestop,timeouts,ctreap,kube-proxy,drain,headless,hostport,hostport-ctreap,hostport-noflush,hostport-noflush-ctreap"
    )]
    pub variants: Vec<Variant>,
    /// Clients: udp (a resolver keeping its source port), keepalive (HTTP keep-alive),
    /// pooled (HTTP, reusing its source port), fresh (a new connection per request), lb (a
    /// load balancer pooling keep-alive connections to the NodePort, answering its own
    /// clients 503 on an upstream failure).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "udp,keepalive,pooled,fresh,lb"
    )]
    pub clients: Vec<ClientKind>,
    /// The lb client's pool policy after a failed upstream request: evict (close the
    /// connection, answer 503), retry (close it, retry once on a new connection), seed (keep
    /// it after a timeout until the pool replaces it at 120 s of age: the seed's two minutes
    /// of decaying 503s; the duration defaults to 150s).
    #[arg(long, value_name = "evict|retry|seed", default_value = "evict")]
    pub lb_pool: LbPool,
    /// Traffic time of each variant (the rollout happens inside it; world setup comes on top).
    /// Default 25s, 150s with --lb-pool seed.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Directory for report.json, samples.json, timeline.svg, lb-503.svg and the agent's log.
    #[arg(long, value_name = "DIR", default_value = "lab-report")]
    pub report: PathBuf,
    /// How the node's Service NAT is programmed, like kube-proxy's --proxy-mode.
    #[arg(long, value_name = "nftables|iptables", default_value = "nftables")]
    pub nat: NatBackend,
    /// The rule programmer's delay between an EndpointSlice change and the new rules
    /// (kube-proxy's sync latency).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true, default_value = "1s")]
    pub sync_delay: Duration,
}

/// The pid of the agent child running now, so that a signal handler can stop it.
static AGENT_PID: Mutex<Option<u32>> = Mutex::new(None);

pub(crate) fn set_agent_pid(pid: Option<u32>) {
    *AGENT_PID.lock().unwrap_or_else(|e| e.into_inner()) = pid;
}

/// Files of the running variant (its kubeconfig), removed by the signal handler too.
static TEMP_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub(crate) fn track_temp_file(path: &std::path::Path, keep: bool) {
    let mut files = TEMP_FILES.lock().unwrap_or_else(|e| e.into_inner());
    files.retain(|p| p != path);
    if keep {
        files.push(path.to_path_buf());
    }
}

/// The signal handler's hook (before the namespaces go): stop the agent child, remove the
/// temporary files.
fn on_interrupt() {
    let pid = *AGENT_PID.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pid) = pid {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    for f in TEMP_FILES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        let _ = std::fs::remove_file(f);
    }
}

fn dedup<T: PartialEq + Copy>(v: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(*x);
        }
    }
    out
}

fn validate(cmd: &LabCmd) -> Result<Plan> {
    let variants = dedup(&cmd.variants);
    if variants.is_empty() {
        return Err(UsageError("--variant: give at least one variant".into()).into());
    }
    let clients = dedup(&cmd.clients);
    if clients.is_empty() {
        return Err(UsageError("--clients: give at least one client".into()).into());
    }
    if cmd.sync_delay > Duration::from_secs(10) {
        return Err(UsageError(format!(
            "--sync-delay {:?}: at most 10s (kube-proxy syncs within a second or two)",
            cmd.sync_delay
        ))
        .into());
    }
    let duration = cmd.duration.unwrap_or(match cmd.lb_pool {
        LbPool::Seed => Duration::from_secs(150),
        _ => Duration::from_secs(25),
    });
    let min = scenario::min_duration(cmd.sync_delay);
    if duration < min {
        return Err(UsageError(format!(
            "--duration {:?} is too short: the rollout with --sync-delay {:?} needs at least {}s",
            duration,
            cmd.sync_delay,
            min.as_secs_f64().ceil()
        ))
        .into());
    }
    if duration > Duration::from_secs(600) {
        return Err(UsageError(format!("--duration {duration:?}: at most 10m per variant")).into());
    }
    Ok(Plan {
        clients,
        lb_pool: cmd.lb_pool,
        duration,
        sync_delay: cmd.sync_delay,
        nat: cmd.nat,
        report_dir: cmd.report.clone(),
    })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the lab: every variant in a fresh world, then the report. Fails (exit 1) if any
/// variant could not run; the figures of those that ran are written anyway.
pub fn run(cmd: LabCmd) -> Result<()> {
    let plan = validate(&cmd)?;
    let variants = dedup(&cmd.variants);
    world::check_prerequisites(&Requirements {
        backend: plan.nat,
        conntrack_cli: variants.contains(&Variant::Prestop),
    })?;
    std::fs::create_dir_all(&plan.report_dir).with_context(|| {
        format!(
            "creating the report directory {}",
            plan.report_dir.display()
        )
    })?;
    world::on_signal(on_interrupt);
    world::cleanup_on_signal()?;
    let swept = world::sweep_stale()?;
    if !swept.removed.is_empty() {
        eprintln!(
            "[lab] removed {} namespace(s) left by an earlier killed run: {}",
            swept.removed.len(),
            swept.removed.join(", ")
        );
    }
    for (name, why) in &swept.failed {
        eprintln!("[lab] could not remove stale namespace {name}: {why}");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let started = Instant::now();
    eprintln!(
        "[lab] {} variant(s) × {:?} of traffic; clients {}; {} NAT, sync delay {:?}; report in {}",
        variants.len(),
        plan.duration,
        plan.clients
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(","),
        plan.nat,
        plan.sync_delay,
        plan.report_dir.display()
    );
    let mut report = Report {
        kernel: kernel_release(),
        nat: plan.nat.to_string(),
        duration_s: plan.duration.as_secs_f64(),
        sync_delay_s: plan.sync_delay.as_secs_f64(),
        clients: plan.clients.iter().map(|c| c.name().to_string()).collect(),
        client_descriptions: plan
            .clients
            .iter()
            .map(|c| format!("{}: {}", c.name(), c.describe()))
            .collect(),
        samples_file: "samples.json".into(),
        variants: Vec::new(),
    };
    let mut samples = Samples::default();
    for v in &variants {
        let (vr, logs) = scenario::run_variant(&rt, &plan, *v);
        samples.variants.insert(v.name().to_string(), logs);
        report.variants.push(vr);
        // Written after every variant: an interrupted run keeps what it measured.
        write_report(&plan.report_dir, &report, &samples)?;
    }
    drop(rt);
    println!("{}", report::table(&report));
    for v in &report.variants {
        if v.ran {
            eprintln!("[lab] {}:", v.title);
            for n in &v.notes {
                eprintln!("    {n}");
            }
        }
    }
    eprintln!(
        "[lab] done in {:.0}s; report: {dir}/report.json, timeline: {dir}/timeline.svg{}",
        started.elapsed().as_secs_f64(),
        if plan.clients.contains(&ClientKind::Lb) {
            format!(
                ", the load balancer's 503s: {}/lb-503.svg",
                plan.report_dir.display()
            )
        } else {
            String::new()
        },
        dir = plan.report_dir.display(),
    );
    let failed: Vec<&str> = report
        .variants
        .iter()
        .filter(|v| !v.ran)
        .map(|v| v.variant.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("variant(s) could not run: {}", failed.join(", "));
    }
    Ok(())
}

fn write_report(dir: &std::path::Path, report: &Report, samples: &Samples) -> Result<()> {
    let write = |name: &str, bytes: Vec<u8>| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write("report.json", serde_json::to_vec_pretty(report)?)?;
    write("samples.json", serde_json::to_vec(samples)?)?;
    write(
        "timeline.svg",
        plot::timeline(report, &samples.variants).into_bytes(),
    )?;
    if let Some(svg) = plot::rate_503(report, &samples.variants) {
        write("lb-503.svg", svg.into_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        lab: LabCmd,
    }

    fn parse(args: &[&str]) -> LabCmd {
        T::try_parse_from(std::iter::once("lab").chain(args.iter().copied()))
            .expect("valid flags")
            .lab
    }

    #[test]
    fn defaults_run_everything() {
        let c = parse(&[]);
        assert_eq!(c.variants, Variant::ALL);
        assert_eq!(c.clients, ClientKind::ALL);
        assert_eq!(c.duration, None);
        assert_eq!(c.lb_pool, LbPool::Evict);
        assert_eq!(c.nat, NatBackend::Nftables);
        let plan = validate(&c).expect("defaults are valid");
        assert_eq!(plan.duration, Duration::from_secs(25));
        assert!(plan.duration >= scenario::min_duration(plan.sync_delay));
        // The seed's pool needs two minutes to turn over.
        let plan = validate(&parse(&["--lb-pool", "seed"])).expect("valid");
        assert_eq!(plan.duration, Duration::from_secs(150));
        let plan = validate(&parse(&["--lb-pool", "seed", "--duration", "30s"])).expect("valid");
        assert_eq!(plan.duration, Duration::from_secs(30));
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        let c = parse(&["--duration", "3s"]);
        let e = validate(&c).expect_err("too short");
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(e.to_string().contains("--duration"), "{e}");
        assert!(T::try_parse_from(["lab", "--variant", "magic"]).is_err());
        assert!(T::try_parse_from(["lab", "--clients", "tcp"]).is_err());
        assert!(T::try_parse_from(["lab", "--nat", "ipvs"]).is_err());
        assert!(T::try_parse_from(["lab", "--lb-pool", "never"]).is_err());
        let c = parse(&["--variant", "ctreap,nothing,ctreap", "--nat", "iptables"]);
        assert_eq!(dedup(&c.variants), vec![Variant::Ctreap, Variant::Nothing]);
        assert_eq!(c.nat, NatBackend::IptablesNft);
    }
}
