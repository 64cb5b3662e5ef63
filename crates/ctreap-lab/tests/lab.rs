//! End-to-end: `ctreap-lab` on the real kernel, a short run of variants 1 (nothing), 4
//! (ctreap), 5 (kube-proxy's own UDP cleanup), 6 (the application drains) and 7 (a headless
//! Service) with the UDP, keep-alive and pooled clients and the load balancer in front of the
//! NodePort, and of the hostPort roll's variants 8 to 11, asserting the issues' figures from
//! report.json. Needs root (network namespaces, NAT, conntrack): without it these tests fail,
//! they never skip.

use std::process::Command;

use ctreap_lab::clients::ClientKind;
use ctreap_lab::report::{ClientFigures, Report, VariantReport};

/// Seconds of traffic per variant: the rollout takes ~7 s with the default 1 s sync delay,
/// which leaves ~5 s after the old pods die.
const DURATION: &str = "12s";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn variant<'a>(r: &'a Report, name: &str) -> &'a VariantReport {
    let v = r
        .variants
        .iter()
        .find(|v| v.variant == name)
        .unwrap_or_else(|| panic!("variant {name} missing from report.json"));
    assert!(v.ran, "variant {name} did not run: {:?}", v.error);
    v
}

fn client(v: &VariantReport, kind: ClientKind) -> &ClientFigures {
    let c = v
        .clients
        .iter()
        .find(|c| c.client == kind)
        .unwrap_or_else(|| panic!("{}: client {kind} missing", v.variant));
    assert!(
        c.setup_error.is_none(),
        "{} {kind}: {:?}",
        v.variant,
        c.setup_error
    );
    c
}

fn only_new_pods(v: &VariantReport, c: &ClientFigures) {
    assert!(
        !c.pods_after_removal.is_empty()
            && c.pods_after_removal.keys().all(|p| v.new_pods.contains(p)),
        "{} {}: after the old pods died only new pods should answer: {:?}",
        v.variant,
        c.client,
        c.pods_after_removal
    );
}

/// When the pod this client was talking to died.
fn own_pod_death(v: &VariantReport, c: &ClientFigures) -> f64 {
    let pod = c
        .pod_at_removal
        .as_deref()
        .unwrap_or_else(|| panic!("{} {}: no answer before the death", v.variant, c.client));
    v.pod_deaths
        .iter()
        .find(|d| d.pod == pod)
        .unwrap_or_else(|| {
            panic!(
                "{} {}: talking to {pod}, which is not an old pod",
                v.variant, c.client
            )
        })
        .died
}

fn no_failure_before_the_death(v: &VariantReport, c: &ClientFigures) {
    assert_eq!(
        c.failed, c.failed_after_removal,
        "{} {}: requests failed before the old pods died (the rollout itself must be \
         clean): {:?}",
        v.variant, c.client, c.error_windows
    );
}

/// One lab at a time: their figures are timings, and two worlds on two cores would skew them.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `ctreap-lab` as root with `args`, `--duration DURATION` and `--report` a temporary
/// directory; fails unless it succeeds and leaves no namespace behind. Returns report.json,
/// the printed table and the report directory (removed when dropped).
fn run_lab(args: &[&str]) -> (Report, String, tempfile::TempDir) {
    assert!(
        is_root(),
        "the lab test needs root (network namespaces, nftables, conntrack): run `scripts/test`"
    );
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let report_dir = dir.path().join("report");
    let child = Command::new(env!("CARGO_BIN_EXE_ctreap-lab"))
        .args(args)
        .args(["--duration", DURATION, "--report"])
        .arg(&report_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting ctreap-lab");
    let pid = child.id();
    let out = child.wait_with_output().expect("running ctreap-lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctreap-lab failed ({}):\n{stderr}\n{stdout}",
        out.status
    );

    // Nothing left behind: every namespace of this run is gone.
    let prefix = format!("ctl-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");

    let text = std::fs::read_to_string(report_dir.join("report.json")).expect("report.json");
    let report: Report = serde_json::from_str(&text).expect("report.json parses");
    (report, stdout, dir)
}

#[test]
fn lab_ctreap_ends_the_outage_that_nothing_leaves() {
    let (report, stdout, dir) = run_lab(&[
        "--variant",
        "nothing,ctreap,kube-proxy,drain,headless",
        "--clients",
        "udp,keepalive,pooled,lb",
    ]);
    let report_dir = dir.path().join("report");
    for f in [
        "samples.json",
        "timeline.svg",
        "lb-503.svg",
        "agent-ctreap.log",
    ] {
        assert!(report_dir.join(f).is_file(), "{f} missing from the report");
    }
    let svg = std::fs::read_to_string(report_dir.join("timeline.svg")).expect("timeline.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let rate = std::fs::read_to_string(report_dir.join("lb-503.svg")).expect("lb-503.svg");
    assert!(rate.starts_with("<svg") && rate.trim_end().ends_with("</svg>"));
    for v in ["nothing", "ctreap", "kube-proxy", "drain", "headless"] {
        assert!(
            rate.contains(&format!(">{v}</tspan>")),
            "lb-503.svg has no panel for {v}"
        );
    }
    let agent_log = std::fs::read_to_string(report_dir.join("agent-ctreap.log")).expect("log");
    assert!(
        agent_log.contains("flushed"),
        "the agent logged no flush:\n{agent_log}"
    );
    assert!(
        stdout.contains("longest error window"),
        "the table is printed:\n{stdout}"
    );
    let story = format!(
        "{stdout}\n{}",
        serde_json::to_string_pretty(&report.variants).unwrap_or_default()
    );

    // Variant 1, nothing: the UDP resolver fails from its pod's death until the end.
    let nothing = variant(&report, "nothing");
    let m = &nothing.milestones;
    let udp = client(nothing, ClientKind::Udp);
    no_failure_before_the_death(nothing, udp);
    let death = own_pod_death(nothing, udp);
    assert!(!udp.recovered, "nothing/udp recovered:\n{story}");
    let last = udp
        .error_windows
        .last()
        .expect("nothing/udp has an error window");
    assert!(
        !last.closed && last.start <= death + 0.3,
        "nothing/udp: the last window should open when its pod dies ({death:.3}) and never \
         close: {last:?}\n{story}"
    );
    assert!(
        last.end - last.start >= m.end - death - 0.3,
        "nothing/udp: failing {:.2}s of the {:.2}s after its pod died\n{story}",
        last.end - last.start,
        m.end - death
    );
    // The keep-alive client fails until it gives up on the connection (1 s request timeout)
    // and reconnects from a new source port; then it reaches a new pod.
    let ka = client(nothing, ClientKind::Keepalive);
    no_failure_before_the_death(nothing, ka);
    assert!(ka.recovered, "nothing/keepalive never reconnected\n{story}");
    assert!(
        ka.longest_error_window_after_removal_s >= 0.9
            && ka.longest_error_window_after_removal_s < 3.0,
        "nothing/keepalive: expected one window of about its 1 s timeout, got {:.2}s\n{story}",
        ka.longest_error_window_after_removal_s
    );
    assert!(
        ka.connects >= 2 && ka.source_ports >= 2,
        "nothing/keepalive recovered without a new connection?\n{story}"
    );
    only_new_pods(nothing, ka);
    // The load balancer answers 503 for every request sent on a pooled connection to a dead
    // pod, until its 1 s upstream timeout evicts the connection.
    let lb = client(nothing, ClientKind::Lb);
    no_failure_before_the_death(nothing, lb);
    assert!(
        lb.http_503 > 0 && lb.http_503 == lb.failed,
        "nothing/lb: expected 503s and nothing else: {} 503s of {} failures\n{story}",
        lb.http_503,
        lb.failed
    );
    assert!(
        lb.removal_to_last_error_s >= 0.9 && lb.recovered,
        "nothing/lb: expected 503s until the 1 s upstream timeout, got {:.2}s\n{story}",
        lb.removal_to_last_error_s
    );
    only_new_pods(nothing, lb);

    // Variant 4, ctreap: every client recovers in under a second, on new pods.
    let ct = variant(&report, "ctreap");
    for kind in [ClientKind::Udp, ClientKind::Keepalive, ClientKind::Pooled] {
        let c = client(ct, kind);
        no_failure_before_the_death(ct, c);
        assert!(c.recovered, "ctreap/{kind} did not recover\n{story}");
        assert!(
            c.longest_error_window_after_removal_s < 1.0,
            "ctreap/{kind}: error window {:.2}s after the death, expected < 1 s\n{story}",
            c.longest_error_window_after_removal_s
        );
        assert!(
            c.removal_to_last_error_s < 1.5,
            "ctreap/{kind}: last error {:.2}s after the death\n{story}",
            c.removal_to_last_error_s
        );
        only_new_pods(ct, c);
    }
    // The load balancer's pooled connections through the NodePort (DNAT and masquerade):
    // each one to a dead pod fails once, at once (a reset instead of a timeout).
    let lb = client(ct, ClientKind::Lb);
    no_failure_before_the_death(ct, lb);
    assert!(lb.recovered, "ctreap/lb did not recover\n{story}");
    // The old pods ran on both nodes (old-1 on A, old-2 on B): each node's path recovers.
    let ips: Vec<&str> = ct.pod_deaths.iter().map(|d| d.ip.as_str()).collect();
    assert!(
        ips.iter().any(|ip| ip.starts_with("192.0.2."))
            && ips.iter().any(|ip| ip.starts_with("203.0.113.")),
        "ctreap: the old pods should die on both nodes: {ips:?}"
    );
    for d in &ct.pod_deaths {
        let after = lb.death_to_last_error_s.get(&d.pod).copied();
        assert!(
            after.is_some_and(|s| s < 1.0),
            "ctreap/lb: 503s for {after:?}s after {} ({}) died, expected < 1 s\n{story}",
            d.pod,
            d.ip
        );
    }
    only_new_pods(ct, lb);
    // The UDP resolver kept its source port: ctreap fixed the flow, not the client.
    assert_eq!(client(ct, ClientKind::Udp).source_ports, 1);

    // Variant 5, kube-proxy >= 1.32's reconciler: UDP recovers after the sync that follows
    // the removal (1 s sync delay), on the same source port; the keep-alive TCP client is
    // left alone and recovers no sooner than with nothing.
    let kp = variant(&report, "kube-proxy");
    let udp = client(kp, ClientKind::Udp);
    no_failure_before_the_death(kp, udp);
    assert!(udp.recovered, "kube-proxy/udp did not recover\n{story}");
    assert_eq!(
        udp.source_ports, 1,
        "kube-proxy/udp changed its source port"
    );
    assert!(
        udp.removal_to_last_error_s < 2.5,
        "kube-proxy/udp: last error {:.2}s after the death, expected within the sync delay \
         plus a second\n{story}",
        udp.removal_to_last_error_s
    );
    only_new_pods(kp, udp);
    assert!(
        kp.notes
            .iter()
            .any(|n| n.contains("conntrack reconciler") && !n.ends_with("UDP entries deleted: 0")),
        "kube-proxy: no reconciler run deleted anything: {:?}",
        kp.notes
    );
    let ka = client(kp, ClientKind::Keepalive);
    no_failure_before_the_death(kp, ka);
    let nothing_ka = client(nothing, ClientKind::Keepalive);
    assert!(
        ka.longest_error_window_after_removal_s
            >= (nothing_ka.longest_error_window_after_removal_s - 0.3).min(0.9),
        "kube-proxy/keepalive recovered sooner ({:.2}s) than with nothing ({:.2}s): TCP is \
         not kube-proxy's to clean\n{story}",
        ka.longest_error_window_after_removal_s,
        nothing_ka.longest_error_window_after_removal_s
    );
    let lb = client(kp, ClientKind::Lb);
    let nothing_lb = client(nothing, ClientKind::Lb);
    assert!(
        lb.http_503 > 0
            && lb.removal_to_last_error_s >= (nothing_lb.removal_to_last_error_s - 0.3).min(0.9),
        "kube-proxy/lb recovered sooner ({:.2}s, {} 503s) than with nothing ({:.2}s): its \
         pooled TCP connections are not kube-proxy's to clean\n{story}",
        lb.removal_to_last_error_s,
        lb.http_503,
        nothing_lb.removal_to_last_error_s
    );

    // Variant 6, drain: the keep-alive client was moved to a new pod before the old ones
    // died, so it never fails; the UDP resolver has no connection to close and fails until
    // the end, as with nothing.
    let dr = variant(&report, "drain");
    let ka = client(dr, ClientKind::Keepalive);
    assert_eq!(
        ka.failed, 0,
        "drain/keepalive failed: {:?}\n{story}",
        ka.error_windows
    );
    assert!(
        ka.connects >= 2,
        "drain/keepalive never reconnected\n{story}"
    );
    only_new_pods(dr, ka);
    let udp = client(dr, ClientKind::Udp);
    no_failure_before_the_death(dr, udp);
    assert!(
        !udp.recovered,
        "drain/udp recovered: draining cannot move UDP\n{story}"
    );

    // Variant 7, headless: no NAT, so no stale entry, but the clients' own answers go stale.
    // The resolver and the keep-alive client cached theirs and fail until the end; the pool
    // resolves again for its new connection after its 1 s timeout and ends on a new pod.
    let hl = variant(&report, "headless");
    for kind in [ClientKind::Udp, ClientKind::Keepalive] {
        let c = client(hl, kind);
        no_failure_before_the_death(hl, c);
        assert!(
            !c.recovered,
            "headless/{kind} cached a dead pod's address and still recovered?\n{story}"
        );
    }
    let pooled = client(hl, ClientKind::Pooled);
    no_failure_before_the_death(hl, pooled);
    assert!(
        pooled.recovered,
        "headless/pooled did not re-resolve\n{story}"
    );
    assert!(
        pooled.longest_error_window_after_removal_s >= 0.9,
        "headless/pooled: expected its 1 s timeout before re-resolving, got {:.2}s\n{story}",
        pooled.longest_error_window_after_removal_s
    );
    only_new_pods(hl, pooled);
}

/// The end of the client's last error window: when it last failed.
fn last_error_end(v: &VariantReport, c: &ClientFigures) -> f64 {
    c.error_windows
        .last()
        .unwrap_or_else(|| panic!("{} {}: no error window at all", v.variant, c.client))
        .end
}

/// The agent's flush log lines of `variant` for `service` and `protocol`, with their
/// `reason` and `latency_ms`.
fn flushes(v: &VariantReport, service: &str, protocol: &str) -> Vec<(String, f64)> {
    v.notes
        .iter()
        .filter(|n| {
            n.starts_with("agent log:")
                && n.contains(&format!("service={service} "))
                && n.contains(&format!("protocol=\"{protocol}\""))
        })
        .map(|n| {
            let field = |k: &str| {
                n.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_else(|| panic!("no {k} in {n}"))
                    .trim_matches('"')
                    .to_string()
            };
            let latency = field("latency_ms=").parse().expect("latency_ms");
            (field("reason="), latency)
        })
        .collect()
}

/// Issue 21's lab: a hostPort DaemonSet pod replaced on the clients' node, with the portmap
/// plugin as it ships (UDP flush on ADD) and without that flush, each with and without ctreap.
/// - Without the flush and without ctreap, the UDP client (source port kept) fails from the
///   old pod's death to the end: its entry stays pinned to the dead pod.
/// - Without the flush, with ctreap, it recovers within 0.5 s of the new pod's ADD (the
///   earliest it can: nothing answers before): ctreap deletes the old pod's entry within
///   0.5 s of its deletion, and the untranslated entry made between DEL and ADD once the
///   new pod's IP is reported. No entry to the dead pod is left.
/// - With the flush, the plugin's ADD already sends UDP to the new pod, with or without
///   ctreap: that control shows the variants measure the flush, not a quirk of the lab.
///
/// Every client: no failure while the old pod terminates (its flows are kept) and none once
/// it recovered on the new pod (the new pod's flows are kept).
#[test]
fn lab_hostport_roll_ctreap_recovers_udp_that_the_plugin_leaves_pinned() {
    let (report, stdout, _dir) = run_lab(&[
        "--variant",
        "hostport-noflush,hostport-noflush-ctreap,hostport,hostport-ctreap",
        "--clients",
        "udp,keepalive",
    ]);
    let story = format!(
        "{stdout}\n{}",
        serde_json::to_string_pretty(&report.variants).unwrap_or_default()
    );
    for name in [
        "hostport-noflush",
        "hostport-noflush-ctreap",
        "hostport",
        "hostport-ctreap",
    ] {
        let v = variant(&report, name);
        assert_eq!(v.new_pods, ["statsd-new"], "{name}");
        for kind in [ClientKind::Udp, ClientKind::Keepalive] {
            let c = client(v, kind);
            no_failure_before_the_death(v, c);
            assert_eq!(
                c.pod_at_removal.as_deref(),
                Some("statsd-old"),
                "{name}/{kind}"
            );
        }
        let ka = client(v, ClientKind::Keepalive);
        assert!(ka.recovered, "{name}/keepalive did not recover\n{story}");
        only_new_pods(v, ka);
    }

    // Without the flush, nothing: fails from the death to the end, pinned to the dead pod.
    let nf = variant(&report, "hostport-noflush");
    let udp = client(nf, ClientKind::Udp);
    let death = own_pod_death(nf, udp);
    assert!(!udp.recovered, "hostport-noflush/udp recovered\n{story}");
    let last = udp.error_windows.last().expect("an error window");
    assert!(
        last.start <= death + 0.3 && last.end - last.start >= nf.milestones.end - death - 0.3,
        "hostport-noflush/udp: the last window should run from its pod's death ({death:.3}) to \
         the end: {last:?}\n{story}"
    );
    assert!(
        nf.notes.iter().any(
            |n| n.starts_with("at the end, node conntrack entries to dead") && n.contains("udp 1")
        ),
        "hostport-noflush: the UDP entry to the dead pod should be left: {:?}",
        nf.notes
    );

    // Without the flush, ctreap: recovers within 0.5 s of the ADD, on the same source port.
    let nc = variant(&report, "hostport-noflush-ctreap");
    let udp = client(nc, ClientKind::Udp);
    assert!(
        udp.recovered,
        "hostport-noflush-ctreap/udp did not recover\n{story}"
    );
    let add = nc.milestones.new_pods_added;
    let after_add = last_error_end(nc, udp) - add;
    assert!(
        after_add <= 0.5,
        "hostport-noflush-ctreap/udp: last error {after_add:.3}s after the new pod's ADD \
         (issue 21: within 0.5 s)\n{story}"
    );
    assert_eq!(udp.source_ports, 1, "ctreap fixed the flow, not the client");
    only_new_pods(nc, udp);
    let old = flushes(nc, "default/pod/statsd-old", "udp");
    assert!(
        old.len() == 1 && old[0].0 == "gone" && old[0].1 <= 500.0,
        "hostport-noflush-ctreap: the old pod's UDP flow should go within 0.5 s of its \
         deletion, once: {old:?}\n{story}"
    );
    let new = flushes(nc, "default/pod/statsd-new", "udp");
    assert!(
        new.len() == 1 && new[0].0 == "not_translated",
        "hostport-noflush-ctreap: the untranslated entry should go once the new pod serves: \
         {new:?}\n{story}"
    );
    assert!(
        nc.notes.iter().any(
            |n| n.starts_with("at the end, node conntrack entries to dead") && n.ends_with(": 0")
        ),
        "hostport-noflush-ctreap: entries to the dead pod were left: {:?}",
        nc.notes
    );

    // With the plugin's flush (the control): UDP recovers at the ADD, ctreap or not.
    for name in ["hostport", "hostport-ctreap"] {
        let v = variant(&report, name);
        let udp = client(v, ClientKind::Udp);
        assert!(udp.recovered, "{name}/udp did not recover\n{story}");
        let after_add = last_error_end(v, udp) - v.milestones.new_pods_added;
        assert!(
            after_add <= 0.5,
            "{name}/udp: last error {after_add:.3}s after the ADD that flushed\n{story}"
        );
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("UDP entries to 8125 flushed") && !n.contains(" 0 UDP")),
            "{name}: the ADD should flush the client's entry: {:?}",
            v.notes
        );
        only_new_pods(v, udp);
    }
    // The new pod's flows are never touched: of its hostPorts, only entries that met no rule
    // (their reply from the node itself, not the pod) are deleted.
    for v in [nc, variant(&report, "hostport-ctreap")] {
        let new_tcp = flushes(v, "default/pod/statsd-new", "tcp");
        let new_udp = flushes(v, "default/pod/statsd-new", "udp");
        assert!(
            new_tcp.is_empty() && new_udp.iter().all(|(reason, _)| reason == "not_translated"),
            "{}: flows of the new pod were deleted: tcp {new_tcp:?}, udp {new_udp:?}\n{story}",
            v.variant
        );
    }
    let hc = variant(&report, "hostport-ctreap");
    let old = flushes(hc, "default/pod/statsd-old", "udp");
    assert!(
        old.len() == 1 && old[0].1 <= 500.0,
        "hostport-ctreap: the old pod's UDP flow should go within 0.5 s: {old:?}\n{story}"
    );
    println!(
        "hostPort roll: without the ADD flush, nothing: UDP failing {:.2}s to the end; ctreap: \
         recovered {after_add:.3}s after the ADD, the old pod's entry deleted {:.0} ms after \
         its deletion",
        last.end - last.start,
        flushes(nc, "default/pod/statsd-old", "udp")[0].1
    );
}
