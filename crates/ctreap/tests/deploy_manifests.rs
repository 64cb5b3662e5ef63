//! The files under deploy/ checked against what they describe:
//!
//! - deploy/kubernetes/: every document parsed into its typed k8s-openapi object and
//!   re-serialized; the result must equal the original, so a misspelt or misplaced field (which
//!   k8s-openapi would silently drop) fails. Then the safety properties of the DaemonSet and
//!   the RBAC, and the DaemonSet's arguments parsed by the real `ctreap run`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, ResourceQuota, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

// ---------------------------------------------------------------------------------------------
// Files.

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Yaml::deserialize(d).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}")))
        .filter(|d| !d.is_null())
        .collect()
}

fn files_in(rel_dir: &str, ext: &[&str]) -> Vec<String> {
    let dir = repo().join(rel_dir);
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ext.contains(&x))
        })
        .map(|p| {
            p.strip_prefix(repo())
                .expect("under the repository")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    out.sort();
    out
}

/// `path` inside a YAML value (mapping keys only).
fn at<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_at<'a>(v: &'a Yaml, path: &[&str]) -> &'a str {
    at(v, path)
        .and_then(Yaml::as_str)
        .unwrap_or_else(|| panic!("no string at {}", path.join(".")))
}

// ---------------------------------------------------------------------------------------------
// deploy/kubernetes/: typed and strict.

/// Where `typed` and `original` differ, as JSON paths.
fn differences(original: &Json, typed: &Json, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Json::Object(a), Json::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => differences(v, w, &p, out),
                    None => out.push(format!(
                        "{p}: not a field of the typed object (misspelt or misplaced?)"
                    )),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: added by the typed object"));
            }
        }
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                differences(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} became {b}")),
        _ => {}
    }
}

/// `doc` as the typed object, if it survives a round trip unchanged.
fn strict<T: DeserializeOwned + Serialize>(doc: &Yaml) -> Result<T, String> {
    let obj: T = serde_yaml::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let original = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
    let mut diffs = Vec::new();
    differences(&original, &back, "", &mut diffs);
    if diffs.is_empty() {
        Ok(obj)
    } else {
        Err(diffs.join("; "))
    }
}

struct Manifests {
    namespace: Namespace,
    quota: ResourceQuota,
    service_account: ServiceAccount,
    cluster_role: ClusterRole,
    binding: ClusterRoleBinding,
    daemonset: DaemonSet,
    /// The DaemonSet as written, for comparisons with the chart's values.
    daemonset_yaml: Yaml,
}

fn one<T>(slot: &mut Option<T>, value: T, what: &str) {
    assert!(slot.is_none(), "deploy/kubernetes/ has two {what} objects");
    *slot = Some(value);
}

fn load<T: DeserializeOwned + Serialize>(file: &str, doc: &Yaml) -> T {
    strict(doc).unwrap_or_else(|e| panic!("{file}: {}: {e}", str_at(doc, &["kind"])))
}

fn manifests() -> Manifests {
    let (mut ns, mut quota, mut sa, mut role, mut binding, mut ds, mut ds_yaml) =
        (None, None, None, None, None, None, None);
    let files = files_in("deploy/kubernetes", &["yaml", "yml"]);
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes/");
    for file in &files {
        for doc in yaml_docs(file) {
            let kind = str_at(&doc, &["kind"]).to_string();
            match kind.as_str() {
                "Namespace" => one(&mut ns, load(file, &doc), &kind),
                "ResourceQuota" => one(&mut quota, load(file, &doc), &kind),
                "ServiceAccount" => one(&mut sa, load(file, &doc), &kind),
                "ClusterRole" => one(&mut role, load(file, &doc), &kind),
                "ClusterRoleBinding" => one(&mut binding, load(file, &doc), &kind),
                "DaemonSet" => {
                    one(&mut ds, load(file, &doc), &kind);
                    ds_yaml = Some(doc);
                }
                other => panic!("{file}: {other} is not a kind this test knows; add it here"),
            }
        }
    }
    Manifests {
        namespace: ns.expect("deploy/kubernetes/ has no Namespace"),
        quota: quota.expect("deploy/kubernetes/ has no ResourceQuota"),
        service_account: sa.expect("deploy/kubernetes/ has no ServiceAccount"),
        cluster_role: role.expect("deploy/kubernetes/ has no ClusterRole"),
        binding: binding.expect("deploy/kubernetes/ has no ClusterRoleBinding"),
        daemonset: ds.expect("deploy/kubernetes/ has no DaemonSet"),
        daemonset_yaml: ds_yaml.expect("deploy/kubernetes/ has no DaemonSet"),
    }
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("DaemonSet without a pod spec")
}

fn agent(ds: &DaemonSet) -> &Container {
    let pod = pod_spec(ds);
    assert_eq!(pod.containers.len(), 1, "one container, the agent");
    &pod.containers[0]
}

#[test]
fn strict_parsing_catches_a_misspelt_or_misplaced_field() {
    let m = manifests();
    let good = m.daemonset_yaml;
    assert!(strict::<DaemonSet>(&good).is_ok());

    let mut misspelt = good.clone();
    misspelt["spec"]["template"]["spec"]["hostNetwrok"] = Yaml::Bool(true);
    let err = strict::<DaemonSet>(&misspelt).expect_err("a misspelt field must fail");
    assert!(err.contains("hostNetwrok"), "{err}");

    let mut misplaced = good.clone();
    misplaced["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] =
        Yaml::Bool(true);
    let err = strict::<DaemonSet>(&misplaced).expect_err("a field at the wrong level must fail");
    assert!(err.contains("readOnlyRootFilesystem"), "{err}");

    let mut wrong_type = good;
    wrong_type["spec"]["template"]["spec"]["hostNetwork"] = Yaml::String("yes".into());
    assert!(
        strict::<DaemonSet>(&wrong_type).is_err(),
        "a wrong type must fail"
    );
}

#[test]
fn daemonset_runs_on_every_node_with_net_admin_only() {
    let m = manifests();
    let ds = &m.daemonset;
    let pod = pod_spec(ds);
    assert_eq!(pod.host_network, Some(true), "the node's conntrack table");
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let grace = pod
        .termination_grace_period_seconds
        .expect("a termination grace period");
    assert!(
        (2..=10).contains(&grace),
        "the agent exits within 1 s; grace {grace}"
    );
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    assert_eq!(tolerations.len(), 1, "{tolerations:?}");
    let t = &tolerations[0];
    assert_eq!(t.operator.as_deref(), Some("Exists"));
    assert!(
        t.key.is_none() && t.effect.is_none(),
        "tolerate every taint: {t:?}"
    );

    // Nothing of the host but its network namespace.
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    assert!(pod.volumes.is_none(), "no volumes: {:?}", pod.volumes);
    assert!(pod.init_containers.is_none());
    if let Some(psc) = &pod.security_context {
        assert!(psc.sysctls.is_none(), "no sysctls: {psc:?}");
    }

    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .expect("an update strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::String("10%".into()))
    );

    let c = agent(ds);
    let sc = c.security_context.as_ref().expect("a securityContext");
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "netlink's CAP_NET_ADMIN needs uid 0"
    );
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );

    let res = c.resources.as_ref().expect("resources");
    let q = |m: &Option<BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("10m"));
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("128Mi"));
    assert_eq!(
        q(&res.limits, "cpu"),
        None,
        "a CPU limit would throttle flushes"
    );

    let image = c.image.as_deref().expect("an image");
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "image {image} is not the crate's version {}",
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn daemonset_probes_port_and_node_name() {
    let m = manifests();
    let c = agent(&m.daemonset);
    let ports = c.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].name.as_deref(), Some("metrics"));
    assert_eq!(ports[0].container_port, 9742);
    assert!(
        c.args
            .as_deref()
            .unwrap_or_default()
            .contains(&"--listen=0.0.0.0:9742".to_string()),
        "the agent must listen on the port the probes use: {:?}",
        c.args
    );
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no httpGet probe for {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("metrics".into()), "{path}");
    }
    let env = c.env.as_deref().unwrap_or_default();
    let node = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME in the environment");
    let field = node
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");
}

#[test]
fn rbac_reads_services_endpointslices_and_nodes_only() {
    let m = manifests();
    let rules = m.cluster_role.rules.as_deref().unwrap_or_default();
    let mut granted = BTreeSet::new();
    for r in rules {
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "{r:?}"
        );
        for g in r.api_groups.as_deref().unwrap_or_default() {
            for res in r.resources.as_deref().unwrap_or_default() {
                for v in &r.verbs {
                    granted.insert((g.as_str(), res.as_str(), v.as_str()));
                }
            }
        }
    }
    let mut expected = BTreeSet::new();
    for (g, res) in [
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        for v in ["get", "list", "watch"] {
            expected.insert((g, res, v));
        }
    }
    assert_eq!(granted, expected);

    let sa_name = m.service_account.metadata.name.as_deref().expect("SA name");
    let ns = m
        .namespace
        .metadata
        .name
        .as_deref()
        .expect("namespace name");
    assert_eq!(m.service_account.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(m.daemonset.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(
        pod_spec(&m.daemonset).service_account_name.as_deref(),
        Some(sa_name)
    );
    assert_eq!(m.binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(m.binding.role_ref.name.as_str()),
        m.cluster_role.metadata.name.as_deref()
    );
    let subjects = m.binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", sa_name, Some(ns))
    );

    // hostNetwork and NET_ADMIN are beyond Pod Security "baseline".
    let labels = m.namespace.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged")
    );
    // The quota admits exactly the DaemonSet's priority class.
    assert_eq!(m.quota.metadata.namespace.as_deref(), Some(ns));
    let exprs = m
        .quota
        .spec
        .as_ref()
        .and_then(|s| s.scope_selector.as_ref())
        .and_then(|s| s.match_expressions.as_deref())
        .unwrap_or_default();
    assert_eq!(exprs.len(), 1);
    assert_eq!(exprs[0].scope_name, "PriorityClass");
    assert_eq!(
        exprs[0].values.as_deref(),
        Some(
            &[pod_spec(&m.daemonset)
                .priority_class_name
                .clone()
                .expect("priority")][..]
        )
    );
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet's arguments against the real binary.

fn ctreap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctreap"))
        .args(args)
        .output()
        .expect("running ctreap")
}

/// The long flags `ctreap run --help` lists, without the dashes.
fn run_flags() -> BTreeSet<String> {
    let out = ctreap(&["run", "--help"]);
    assert!(out.status.success(), "ctreap run --help failed");
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let t = line.trim_start();
        let t = t.strip_prefix("-h, ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            flags.insert(name);
        }
    }
    assert!(flags.contains("resync"), "help not understood:\n{help}");
    flags
}

fn flag_name(arg: &str) -> &str {
    arg.trim_start_matches("--")
        .split('=')
        .next()
        .unwrap_or_default()
}

#[test]
fn daemonset_args_are_accepted_by_ctreap_run() {
    let m = manifests();
    let args = agent(&m.daemonset).args.clone().expect("args");
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "the subcommand first"
    );
    let known = run_flags();
    for a in &args[1..] {
        assert!(a.starts_with("--"), "{a}: only long flags");
        assert!(
            known.contains(flag_name(a)),
            "{a}: not a flag of `ctreap run`: {known:?}"
        );
    }
    // clap parses every value before it acts on --help: a bad value exits 64, so this runs the
    // agent's own parsers over the manifest's values without starting the agent.
    let mut check: Vec<&str> = args.iter().map(String::as_str).collect();
    check.push("--help");
    let out = ctreap(&check);
    assert!(
        out.status.success(),
        "ctreap rejects the DaemonSet's arguments: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And that check can fail.
    let out = ctreap(&["run", "--resync=sixty", "--help"]);
    assert_eq!(out.status.code(), Some(64));
}
