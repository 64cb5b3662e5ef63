//! End-to-end: the real `ctreap` binary against a private network namespace's conntrack
//! table, checked with conntrack-tools.

use ctnetlink_testns as common;

use std::process::{Command, Output};

use common::{TestNs, stable_lines};

fn ctreap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctreap"))
        .args(args)
        .output()
        .expect("running ctreap")
}

fn ok(args: &[&str]) -> String {
    let out = ctreap(args);
    assert!(
        out.status.success(),
        "ctreap {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn create_all(ns: &TestNs) {
    let n = ns.name.as_str();
    for args in [
        &[
            "-p",
            "udp",
            "-s",
            "192.0.2.1",
            "-d",
            "198.18.0.10",
            "--sport",
            "5000",
            "--dport",
            "53",
            "-r",
            "10.0.0.5",
            "--reply-port-src",
            "5353",
            "-u",
            "ASSURED,SEEN_REPLY",
            "-m",
            "7",
        ][..],
        &[
            "-p",
            "udp",
            "-s",
            "192.0.2.2",
            "-d",
            "198.18.0.10",
            "--sport",
            "5001",
            "--dport",
            "53",
            "-r",
            "10.0.0.6",
            "--reply-port-src",
            "5353",
        ][..],
        &[
            "-p",
            "tcp",
            "-s",
            "192.0.2.1",
            "-d",
            "198.18.0.11",
            "--sport",
            "40000",
            "--dport",
            "80",
            "-r",
            "10.0.0.5",
            "-q",
            "192.0.2.254",
            "--reply-port-src",
            "8080",
            "--state",
            "ESTABLISHED",
            "-u",
            "ASSURED,SEEN_REPLY",
        ][..],
        &[
            "-p",
            "sctp",
            "-s",
            "192.0.2.1",
            "-d",
            "198.18.0.12",
            "--sport",
            "3868",
            "--dport",
            "3868",
            "-r",
            "10.0.0.5",
            "--state",
            "ESTABLISHED",
            "--orig-vtag",
            "1",
            "--reply-vtag",
            "2",
        ][..],
        &[
            "-p",
            "icmp",
            "-s",
            "192.0.2.1",
            "-d",
            "198.18.0.10",
            "--icmp-id",
            "77",
        ][..],
        &[
            "-p",
            "udp",
            "-s",
            "2001:db8::1",
            "-d",
            "2001:db8:ffff::10",
            "--sport",
            "5000",
            "--dport",
            "53",
            "-r",
            "2001:db8:a::5",
            "--reply-port-src",
            "5353",
            "-w",
            "4",
        ][..],
        &[
            "-p",
            "icmpv6",
            "-s",
            "2001:db8::1",
            "-d",
            "2001:db8::2",
            "--icmp-id",
            "9",
        ][..],
    ] {
        let mut a = vec!["conntrack", "create", "--netns", n, "-t", "600"];
        a.extend_from_slice(args);
        ok(&a);
    }
}

#[test]
fn list_output_is_conntrack_l_line_for_line() {
    let ns = TestNs::new("cli-list");
    create_all(&ns);
    let ours = ok(&["conntrack", "list", "--netns", &ns.name]);
    assert_eq!(ours.lines().count(), 7, "{ours}");
    common::assert_same_lines(&ours, &ns.conntrack(&["-L"]));
}

#[test]
fn json_and_table_and_count() {
    let ns = TestNs::new("cli-json");
    create_all(&ns);
    let json = ok(&[
        "conntrack",
        "list",
        "--netns",
        &ns.name,
        "-o",
        "json",
        "-r",
        "10.0.0.5",
    ]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 3, "{json}");
    for r in &rows {
        assert_eq!(r["reply"]["src"], "10.0.0.5", "{r}");
        // Names beside the numbers, as conntrack users read them (issue 12).
        assert_eq!(r["family_name"], "ipv4", "{r}");
        let num = r["orig"]["proto"]["num"].as_u64().expect("proto num");
        let name = r["orig"]["proto"]["name"].as_str().expect("proto name");
        assert_eq!(name, ctnetlink::codec::format::proto_name(num as u8), "{r}");
        let flags: Vec<&str> = r["status_flags"]
            .as_array()
            .expect("status_flags")
            .iter()
            .map(|f| f.as_str().expect("flag name"))
            .collect();
        let status = r["status"].as_u64().expect("status");
        assert!(
            flags.contains(&"CONFIRMED") && flags.len() == status.count_ones() as usize,
            "one name per status bit: {r}"
        );
        if num == 6 {
            assert!(r["protoinfo"]["tcp"]["state_name"].is_string(), "{r}");
        }
    }
    let table = ok(&[
        "conntrack",
        "list",
        "--netns",
        &ns.name,
        "-o",
        "table",
        "-p",
        "udp",
        "-f",
        "ipv4",
    ]);
    assert!(
        table.lines().next().is_some_and(|h| h.starts_with("PROTO")),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.contains("10.0.0.5:5353") && table.contains("DNAT"),
        "{table}"
    );
    assert_eq!(ok(&["conntrack", "count", "--netns", &ns.name]).trim(), "7");
    assert_eq!(
        ok(&["conntrack", "count", "--netns", &ns.name, "-p", "udp"]).trim(),
        "3"
    );
    assert_eq!(
        ok(&["conntrack", "count", "--netns", &ns.name, "-w", "4"]).trim(),
        "1"
    );
}

#[test]
fn flush_deletes_the_backend_and_reports_the_path() {
    let ns = TestNs::new("cli-flush");
    create_all(&ns);
    let before = stable_lines(&ns.conntrack(&["-L"]));
    let gone = stable_lines(&ns.conntrack(&["-L", "-r", "10.0.0.5"]));
    assert_eq!(
        ok(&[
            "conntrack",
            "flush",
            "--netns",
            &ns.name,
            "-r",
            "10.0.0.5",
            "--dry-run"
        ])
        .trim(),
        "3 flow entries would be deleted (dry run)"
    );
    assert_eq!(
        stable_lines(&ns.conntrack(&["-L"])),
        before,
        "dry run deleted something"
    );
    let out = ok(&["conntrack", "flush", "--netns", &ns.name, "-r", "10.0.0.5"]);
    assert_eq!(
        out.trim(),
        "3 flow entries have been deleted (path: kernel)"
    );
    let after = stable_lines(&ns.conntrack(&["-L"]));
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|l| !gone.contains(l))
            .collect::<Vec<_>>()
    );
    let out = ok(&[
        "conntrack",
        "flush",
        "--netns",
        &ns.name,
        "-r",
        "2001:db8:a::5",
    ]);
    assert_eq!(
        out.trim(),
        "1 flow entries have been deleted (path: dump-delete)"
    );
    assert_eq!(ns.conntrack(&["-C"]).trim(), "3");
}

#[test]
fn bad_usage_exits_64_with_one_line() {
    let ns = TestNs::new("cli-usage");
    create_all(&ns);
    for (args, needle) in [
        (
            vec!["conntrack", "flush", "--netns", ns.name.as_str()],
            "--all",
        ),
        (vec!["conntrack", "list", "--bogus"], "--bogus"),
        (
            vec!["conntrack", "list", "--orig-port-dst", "53"],
            "-p/--proto",
        ),
        (vec!["conntrack", "list", "-p", "nope"], "unknown protocol"),
        (
            vec!["conntrack", "list", "-s", "192.0.2.1", "-r", "2001:db8::1"],
            "family",
        ),
    ] {
        let out = ctreap(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line, got {err}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(
        ns.conntrack(&["-C"]).trim(),
        "7",
        "a refused flush deleted nothing"
    );
    let out = ctreap(&["conntrack", "list", "--netns", "ctreap-no-such-ns"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ip netns list"));
}

/// Waits until a ctnetlink socket in the namespace has joined a multicast group, i.e. the
/// events subscriber listens: a NETLINK_NETFILTER (12) line of /proc/net/netlink there whose
/// Groups are not 0. A fresh namespace has none.
fn wait_subscribed(ns: &TestNs) {
    let t = std::time::Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "cat", "/proc/net/netlink"])
            .output()
            .expect("reading /proc/net/netlink");
        let text = String::from_utf8_lossy(&out.stdout);
        let listening = text.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"12")
                && f.get(3)
                    .is_some_and(|g| !g.trim_start_matches('0').is_empty())
        });
        if listening {
            return;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "the events subscriber did not join a conntrack group within 10 s:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn events_stream_new_and_destroy() {
    let ns = TestNs::new("cli-events");
    let child = Command::new(env!("CARGO_BIN_EXE_ctreap"))
        .args([
            "conntrack",
            "events",
            "--netns",
            &ns.name,
            "--count",
            "2",
            "--timeout",
            "10s",
            "-e",
            "NEW,DESTROY",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn events");
    wait_subscribed(&ns);
    ok(&[
        "conntrack",
        "create",
        "--netns",
        &ns.name,
        "-p",
        "udp",
        "-s",
        "192.0.2.7",
        "-d",
        "198.18.0.10",
        "--sport",
        "1",
        "--dport",
        "53",
        "-r",
        "10.0.0.9",
        "--reply-port-src",
        "53",
    ]);
    ok(&["conntrack", "flush", "--netns", &ns.name, "-r", "10.0.0.9"]);
    let out = child.wait_with_output().expect("events output");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("    [NEW] udp      17 "), "{text}");
    assert!(lines[1].starts_with("[DESTROY] udp      17 "), "{text}");
    assert!(lines.iter().all(|l| l.contains("src=10.0.0.9")), "{text}");
}
