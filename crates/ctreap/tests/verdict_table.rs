//! The verdict table: every `conntrack -L` line of tests/data/verdict/flows.txt against the
//! cluster of tests/data/cluster/, and the delete plan of tests/data/verdict/plan.txt.

mod support;

use ctreap::cluster::ServiceMap;
use ctreap::reconcile::{
    Flow, FlushKey, Policy, Verdict, VerdictCounts, classify, deletable, key_of,
};
use support::{fixture_cluster, ip, read};

/// The cluster of tests/data/cluster/ seen from node-a.
fn cluster() -> ServiceMap {
    let local = [
        ip("127.0.0.1"),
        ip("::1"),
        ip("192.168.10.11"),
        ip("10.244.0.1"),
        ip("fd00:10::11"),
        ip("fe80::1"),
    ];
    let (map, warnings) = fixture_cluster(&local);
    assert_eq!(warnings.len(), 5, "see cluster_fixtures.rs: {warnings:#?}");
    map
}

/// The flushes that delete what the agent's rule ([`deletable`]) deletes among `flows`: one
/// per (frontend, backend) pair, sorted.
fn flushes(map: &ServiceMap, flows: &[Flow], policy: &Policy) -> Vec<FlushKey> {
    let mut keys: Vec<FlushKey> = flows
        .iter()
        .filter(|f| deletable(map, f, policy).is_some())
        .map(key_of)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Parses one `conntrack -L` line: the first src/dst/sport/dport are the original tuple,
/// the second the reply tuple; `zone=` if present. ICMP lines have no ports (0).
fn parse_conntrack(line: &str) -> Flow {
    let mut words = line.split_whitespace();
    let _name = words.next().expect("protocol name");
    let proto: u8 = words
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("protocol number in {line:?}"));
    let (mut src, mut dst, mut sport, mut dport) = (vec![], vec![], vec![], vec![]);
    let mut zone = 0;
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "src" => src.push(ip(v)),
            "dst" => dst.push(ip(v)),
            "sport" => sport.push(v.parse::<u16>().expect("sport")),
            "dport" => dport.push(v.parse::<u16>().expect("dport")),
            "zone" => zone = v.parse().expect("zone"),
            _ => {}
        }
    }
    assert!(src.len() == 2 && dst.len() == 2, "two tuples in {line:?}");
    let port = |v: &[u16], i: usize| v.get(i).copied().unwrap_or(0);
    Flow {
        proto,
        orig_src: src[0],
        orig_dst: dst[0],
        orig_sport: port(&sport, 0),
        orig_dport: port(&dport, 0),
        reply_src: src[1],
        reply_dst: dst[1],
        reply_sport: port(&sport, 1),
        reply_dport: port(&dport, 1),
        zone,
    }
}

struct Case {
    line_no: usize,
    about: String,
    flow: Flow,
    verdict: String,
    port: String,
}

fn cases() -> Vec<Case> {
    let text = read("verdict/flows.txt");
    let mut about = String::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            about = c.trim().to_owned();
            continue;
        }
        let (ct, want) = line
            .split_once(" => ")
            .unwrap_or_else(|| panic!("flows.txt:{}: no ` => verdict port`", i + 1));
        let (verdict, port) = want
            .trim()
            .split_once(' ')
            .unwrap_or_else(|| panic!("flows.txt:{}: want `verdict port`", i + 1));
        out.push(Case {
            line_no: i + 1,
            about: about.clone(),
            flow: parse_conntrack(ct),
            verdict: verdict.to_owned(),
            port: port.to_owned(),
        });
    }
    out
}

#[test]
fn every_flow_gets_its_verdict() {
    let map = cluster();
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases parsed", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let d = classify(&map, &c.flow);
        let port = d.port.map_or_else(|| "-".to_owned(), |p| p.to_string());
        if d.verdict.as_str() != c.verdict || port != c.port {
            failures.push(format!(
                "flows.txt:{} ({}): want {} {}, got {} {}",
                c.line_no, c.about, c.verdict, c.port, d.verdict, port
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn default_plan_is_the_expected_flush_list() {
    let map = cluster();
    let flows: Vec<Flow> = cases().into_iter().map(|c| c.flow).collect();
    let got: Vec<String> = flushes(&map, &flows, &Policy::default())
        .iter()
        .map(|k| k.to_string())
        .collect();
    let want: Vec<String> = read("verdict/plan.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(got, want, "plan differs from plan.txt");
}

#[test]
fn plan_never_names_a_backend_serving_for_that_frontend() {
    let map = cluster();
    let flows: Vec<Flow> = cases().into_iter().map(|c| c.flow).collect();
    let everything = Policy {
        gone: ctreap::reconcile::ProtoSet::ALL,
        not_serving: ctreap::reconcile::ProtoSet::ALL,
    };
    for key in flushes(&map, &flows, &everything) {
        let proto = ctreap::cluster::Proto::from_ip_proto(key.proto).expect("service protocol");
        let fe = map
            .frontend(proto, key.orig_dst, key.orig_dport)
            .unwrap_or_else(|| panic!("{key}: not a frontend"));
        for port in fe.ports() {
            if let Some(c) = port.backend(key.reply_src, key.reply_sport) {
                assert!(!c.serving, "{key}: serving in {port}");
            }
        }
    }
}

#[test]
fn counts_and_grouping_by_service() {
    let map = cluster();
    let cases = cases();
    let decisions: Vec<_> = cases.iter().map(|c| classify(&map, &c.flow)).collect();
    let mut counts = VerdictCounts::default();
    let mut per_service = std::collections::BTreeMap::<String, u64>::new();
    for d in &decisions {
        counts.add(d.verdict);
        if d.verdict.is_stale() {
            let svc = d.service().expect("a stale verdict names its Service");
            *per_service.entry(svc.to_string()).or_default() += 1;
        }
    }
    assert_eq!(counts.total(), cases.len() as u64);
    assert_eq!(
        per_service.get("kube-system/kube-dns"),
        Some(&4),
        "{per_service:?}"
    );
    assert_eq!(
        per_service.get("shop/api"),
        None,
        "api lost no backend: {per_service:?}"
    );
    assert!(decisions.iter().any(|d| d.verdict == Verdict::Draining));
}
