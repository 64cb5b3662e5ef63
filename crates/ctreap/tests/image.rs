//! The image operators deploy, run the way the DaemonSet runs it.
//!
//! `scripts/image` builds `localhost/ctreap:VERSION` (scripts/test runs it before the tests).
//! These tests run that image with podman as the rendered Helm chart runs it: the capabilities,
//! the read-only root filesystem, the user, the environment, the arguments and the grace period
//! come from `helm template` output, not retyped, so what the chart asks for is what runs here.
//! Every field of the container's securityContext is translated or the test stops, so a setting
//! added to the chart cannot be skipped here unnoticed.
//!
//! The node is a private network namespace (the pod has hostNetwork: the container joins the
//! namespace), the API server a kube-testserver listening inside it. The one difference from a
//! pod: the agent reads a kubeconfig, mounted read-only, instead of a service account.
//!
//! The kernel tests' rule applies: without root, podman or the image these tests fail; they
//! never skip.

#[path = "support/agent.rs"]
mod agent;
use ctnetlink_testns as common;
#[path = "support/helm.rs"]
mod helm;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agent::{Api, Metrics, NODE, eventually_with, http_get, service, slice_ips};
use common::TestNs;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Capabilities, SecurityContext};
use serde::Deserialize;

/// The tag scripts/image gives the image, and the one the chart renders with
/// `image.repository=localhost/ctreap` (its appVersion is the crate's version).
fn image() -> String {
    format!("localhost/ctreap:{}", env!("CARGO_PKG_VERSION"))
}

/// Where the kubeconfig is mounted in the container.
const KUBECONFIG_IN_CONTAINER: &str = "/etc/ctreap/kubeconfig";

/// podman with the project's settings (scripts/podman/env.sh does the same for scripts/image):
/// vfs storage and scripts/podman/containers.conf, nothing of the machine's configuration.
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .env(
            "CONTAINERS_CONF",
            helm::repo().join("scripts/podman/containers.conf"),
        )
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running podman: {e}. Install it (`apt-get install podman`); scripts/test does")
        })
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn require_image() {
    common::require_kernel();
    let tag = image();
    let out = podman(&["image", "exists", &tag]);
    assert!(
        out.status.success(),
        "image {tag} not in root's podman store (vfs): build it with scripts/image \
         (scripts/test does before the tests); {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How the chart runs the agent, as a `podman run` command line.
struct Deployment {
    image: String,
    /// `podman run` flags: privileges, user, root filesystem, environment, limits.
    flags: Vec<String>,
    /// The container's arguments (the image's entrypoint is /ctreap).
    args: Vec<String>,
    grace: Duration,
    /// The `metrics` container port.
    port: u16,
}

/// `helm template` with the image pointed at the local one, translated into podman's terms for
/// a container in `netns` (the node) whose spec.nodeName is [`NODE`].
fn deployment(netns: &str, kubeconfig: &std::path::Path) -> Deployment {
    let text = helm::template(&["image.repository=localhost/ctreap"]);
    let ds: DaemonSet = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("helm template prints YAML"))
        .find(|d| d["kind"] == "DaemonSet")
        .map(|d| serde_yaml::from_value(d).expect("the chart's DaemonSet"))
        .expect("the chart renders a DaemonSet");
    let pod = ds
        .spec
        .and_then(|s| s.template.spec)
        .expect("the DaemonSet has a pod spec");
    assert_eq!(
        pod.host_network,
        Some(true),
        "the agent runs in the node's network namespace; this test gives it the test's"
    );
    assert!(
        pod.volumes.unwrap_or_default().is_empty() && pod.init_containers.is_none(),
        "the chart gained volumes or init containers: translate them here"
    );
    let grace = Duration::from_secs(
        pod.termination_grace_period_seconds
            .expect("terminationGracePeriodSeconds")
            .try_into()
            .expect("a positive grace period"),
    );
    let [c] = &pod.containers[..] else {
        panic!(
            "one container expected, the chart has {}",
            pod.containers.len()
        );
    };
    let mut flags: Vec<String> = vec![format!("--network=ns:/run/netns/{netns}")];
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), None) => v.clone(),
            (None, Some(from))
                if from.field_ref.as_ref().map(|f| f.field_path.as_str())
                    == Some("spec.nodeName") =>
            {
                NODE.to_string()
            }
            other => panic!("env {}: {other:?} is not translated here", e.name),
        };
        flags.push(format!("--env={}={value}", e.name));
    }
    assert!(
        c.volume_mounts.as_ref().is_none_or(Vec::is_empty),
        "the chart mounts volumes into the container: translate them here"
    );
    // The one addition: the API server's address, where a pod would use its service account.
    flags.push(format!(
        "--volume={}:{KUBECONFIG_IN_CONTAINER}:ro",
        kubeconfig.display()
    ));
    flags.push(format!("--env=KUBECONFIG={KUBECONFIG_IN_CONTAINER}"));
    flags.extend(security_flags(
        c.security_context
            .clone()
            .expect("the chart sets a securityContext"),
    ));
    if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        for (what, q) in limits {
            match what.as_str() {
                "memory" => flags.push(format!("--memory={}", bytes(&q.0))),
                "cpu" => flags.push(format!("--cpus={}", cpus(&q.0))),
                other => panic!("resource limit {other} is not translated here"),
            }
        }
    }
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .map(|p| u16::try_from(p.container_port).expect("a port"))
        .expect("a metrics port");
    Deployment {
        image: c.image.clone().expect("an image"),
        flags,
        args: c.args.clone().unwrap_or_default(),
        grace,
        port,
    }
}

/// Every field of the securityContext, as podman flags; a field this test does not know stops
/// it (the destructuring below does not compile when k8s-openapi adds one).
fn security_flags(sc: SecurityContext) -> Vec<String> {
    let SecurityContext {
        allow_privilege_escalation,
        app_armor_profile,
        capabilities,
        privileged,
        proc_mount,
        read_only_root_filesystem,
        run_as_group,
        run_as_non_root,
        run_as_user,
        se_linux_options,
        seccomp_profile,
        windows_options,
    } = sc;
    let mut flags = Vec::new();
    if allow_privilege_escalation == Some(false) {
        flags.push("--security-opt=no-new-privileges".to_string());
    }
    if privileged == Some(true) {
        flags.push("--privileged".to_string());
    }
    if let Some(Capabilities { add, drop }) = capabilities {
        flags.extend(
            drop.into_iter()
                .flatten()
                .map(|c| format!("--cap-drop={c}")),
        );
        flags.extend(add.into_iter().flatten().map(|c| format!("--cap-add={c}")));
    }
    if read_only_root_filesystem == Some(true) {
        flags.push("--read-only".to_string());
    }
    let user = run_as_user.expect("runAsUser: the agent's uid is explicit");
    flags.push(match run_as_group {
        Some(g) => format!("--user={user}:{g}"),
        None => format!("--user={user}"),
    });
    if run_as_non_root == Some(true) {
        assert_ne!(user, 0, "runAsNonRoot with runAsUser 0 never starts");
    }
    // RuntimeDefault is podman's default seccomp profile too.
    if let Some(p) = seccomp_profile {
        assert_eq!(
            p.type_, "RuntimeDefault",
            "seccompProfile {p:?} is not translated here"
        );
    }
    assert!(
        app_armor_profile.is_none()
            && proc_mount.is_none()
            && se_linux_options.is_none()
            && windows_options.is_none(),
        "the chart sets a securityContext field this test does not translate"
    );
    flags
}

/// A Kubernetes memory quantity in bytes (the forms the chart uses: Ki, Mi, Gi or plain).
fn bytes(q: &str) -> u64 {
    let (n, unit) = q
        .find(|c: char| !c.is_ascii_digit())
        .map_or((q, ""), |i| q.split_at(i));
    let n: u64 = n.parse().unwrap_or_else(|e| panic!("quantity {q:?}: {e}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("quantity unit {other:?} is not translated here"),
    }
}

/// A Kubernetes CPU quantity in cores (`500m`, `1`).
fn cpus(q: &str) -> f64 {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("millicores") / 1000.0,
        None => q.parse().expect("cores"),
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A container started with `podman run --detach`, removed on drop.
struct Container {
    name: String,
}

impl Container {
    fn start(d: &Deployment, without: &[&str]) -> Container {
        let name = format!(
            "ctreap-image-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut args: Vec<String> = vec!["run".into(), "--detach".into(), format!("--name={name}")];
        args.extend(
            d.flags
                .iter()
                .filter(|f| !without.contains(&f.as_str()))
                .cloned(),
        );
        args.push(d.image.clone());
        args.extend(d.args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman_ok(&args);
        Container { name }
    }

    /// What the container wrote (its stdout and stderr: the agent's log).
    fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn state(&self) -> (String, i64) {
        let out = podman_ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &self.name,
        ]);
        let (status, code) = out.trim().split_once(' ').expect("status and exit code");
        (status.to_string(), code.parse().expect("an exit code"))
    }

    /// Waits for the container to exit; its exit code.
    fn wait(&self, within: Duration) -> i64 {
        let mut code = None;
        eventually_with(within, "the container to exit", || {
            let (status, c) = self.state();
            code = Some(c);
            if status == "exited" {
                Ok(())
            } else {
                Err(format!("{status}; log:\n{}", self.logs()))
            }
        });
        code.expect("an exit code")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// `ip -n NS link set lo up`: the API server and the agent's HTTP port are on 127.0.0.1 there.
fn loopback_up(ns: &TestNs) {
    let st = Command::new("ip")
        .args(["-n", &ns.name, "link", "set", "lo", "up"])
        .status()
        .expect("running ip");
    assert!(st.success(), "ip -n {} link set lo up", ns.name);
}

/// GET on 127.0.0.1:PORT inside the namespace: (status, body), or (0, the error).
fn get_in(ns: &TestNs, port: u16, path: &'static str) -> (u16, String) {
    ns.netns()
        .run(move || http_get(([127, 0, 0, 1], port).into(), path))
        .expect("entering the test namespace")
        .unwrap_or_else(|e| (0, e.to_string()))
}

/// A node for the image: its namespace (loopback up), the API server listening inside it
/// (where the container reaches it), and the chart's deployment into it.
fn node(tag: &str) -> (TestNs, Api, Deployment) {
    require_image();
    let ns = TestNs::new(tag);
    loopback_up(&ns);
    let api = ns
        .netns()
        .run(Api::start)
        .expect("entering the test namespace");
    let d = deployment(&ns.name, &api.kubeconfig);
    (ns, api, d)
}

const SVC_IP: &str = "10.96.0.10";
const CLIENT: &str = "10.0.0.5";

/// A client's UDP flow to the DNS Service, DNATed to `backend`, made by conntrack-tools.
fn udp_flow(ns: &TestNs, sport: u16, backend: &str) {
    let sport = sport.to_string();
    ns.conntrack(&[
        "-I",
        "-p",
        "udp",
        "-s",
        CLIENT,
        "-d",
        SVC_IP,
        "--sport",
        &sport,
        "--dport",
        "53",
        "-r",
        backend,
        "-q",
        CLIENT,
        "--reply-port-src",
        "53",
        "--reply-port-dst",
        &sport,
        "-t",
        "600",
        "-u",
        "SEEN_REPLY",
    ]);
}

/// Entries whose reply source (the DNAT target) is `backend`, per `conntrack -L -r`.
fn flows_to(ns: &TestNs, backend: &str) -> usize {
    ns.conntrack(&["-L", "-r", backend]).lines().count()
}

/// The image as the chart runs it: ready, the stale flow deleted at start and the live ones
/// kept, a departing backend's flow deleted on the watch event, /metrics scraped, and SIGTERM
/// ending it cleanly within the chart's grace period.
#[test]
fn the_image_runs_as_the_chart_runs_it() {
    let (ns, api, d) = node("image");
    assert_eq!(
        d.image,
        image(),
        "the chart's image is the one scripts/image tags"
    );

    let (live, leaving, gone) = ("10.244.1.2", "10.244.1.3", "10.244.1.9");
    api.apply(service("dns", &[SVC_IP], &[("dns", 53, "UDP", 53)]));
    let ports = [("dns", 53, "UDP")];
    api.apply(slice_ips("dns-1", "dns", &ports, &[live, leaving]));
    udp_flow(&ns, 40001, live);
    udp_flow(&ns, 40002, leaving);
    udp_flow(&ns, 40003, gone);
    assert_eq!(
        [live, leaving, gone].map(|b| flows_to(&ns, b)),
        [1, 1, 1],
        "the flows as made"
    );

    let t = Instant::now();
    let c = Container::start(&d, &[]);
    eventually_with(Duration::from_secs(60), "/readyz 200", || {
        match get_in(&ns, d.port, "/readyz") {
            (200, _) => Ok(()),
            (code, body) => Err(format!("/readyz {code} {body}; log:\n{}", c.logs())),
        }
    });
    let ready = t.elapsed();
    // The startup pass: the flow to a backend the cluster does not have goes, the others stay.
    eventually_with(Duration::from_secs(10), "the stale flow deleted", || {
        let now = [live, leaving, gone].map(|b| flows_to(&ns, b));
        if now == [1, 1, 0] {
            Ok(())
        } else {
            Err(format!(
                "flows to live/leaving/gone: {now:?}; log:\n{}",
                c.logs()
            ))
        }
    });
    // A backend leaves: the watch event deletes its flow; the live backend's stays.
    api.apply(slice_ips("dns-1", "dns", &ports, &[live]));
    eventually_with(
        Duration::from_secs(5),
        "the departed backend's flow deleted",
        || {
            let now = [live, leaving, gone].map(|b| flows_to(&ns, b));
            if now == [1, 0, 0] {
                Ok(())
            } else {
                Err(format!(
                    "flows to live/leaving/gone: {now:?}; log:\n{}",
                    c.logs()
                ))
            }
        },
    );

    let (code, body) = get_in(&ns, d.port, "/metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    let m = Metrics::parse(&body);
    assert_eq!(m.deleted(), 2.0, "ctreap_flows_deleted_total:\n{body}");
    assert!(
        m.series_of("ctreap_build_info")
            .iter()
            .any(|(s, v)| *v == 1.0
                && s.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))),
        "ctreap_build_info with this version:\n{body}"
    );

    // Kubernetes sends SIGTERM and kills after terminationGracePeriodSeconds; podman stop does
    // the same with --time.
    let t = Instant::now();
    podman_ok(&["stop", "--time", &d.grace.as_secs().to_string(), &c.name]);
    let stopped = t.elapsed();
    let (status, exit) = c.state();
    assert_eq!(
        (status.as_str(), exit),
        ("exited", 0),
        "exit after SIGTERM (137 means killed at the grace period); log:\n{}",
        c.logs()
    );
    assert!(
        stopped < d.grace,
        "stopped in {stopped:?}, grace {:?}",
        d.grace
    );
    eprintln!(
        "image {}: ready in {ready:?}, stopped in {stopped:?} (grace {:?})",
        d.image, d.grace
    );
}

/// The same image and settings without CAP_NET_ADMIN: it stops at start with one line that
/// names the capability.
#[test]
fn without_net_admin_the_image_fails_at_start_naming_the_capability() {
    let (_ns, _api, d) = node("imgcap");
    assert!(
        d.flags.iter().any(|f| f == "--cap-add=NET_ADMIN"),
        "the chart adds NET_ADMIN: {:?}",
        d.flags
    );
    let c = Container::start(&d, &["--cap-add=NET_ADMIN"]);
    let code = c.wait(Duration::from_secs(30));
    let log = c.logs();
    assert_ne!(
        code, 0,
        "it must not run without CAP_NET_ADMIN; log:\n{log}"
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{log}");
    assert!(
        lines[0].contains("CAP_NET_ADMIN"),
        "names the capability: {log}"
    );
}
