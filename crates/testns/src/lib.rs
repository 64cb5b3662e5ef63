//! Shared by the kernel tests of ctnetlink and ctreap: a private named network namespace per
//! test, and conntrack-tools run inside it as the independent oracle. A dev-dependency only.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ctnetlink::Netns;

/// A network namespace made for one test (`ip netns add`), removed on drop.
pub struct TestNs {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails loudly (never skips) when the kernel tests cannot run here.
pub fn require_kernel() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "kernel tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN to create network namespaces); \
         run `scripts/test` (CI={:?})",
        std::env::var("CI").ok()
    );
    let out = Command::new("conntrack").arg("--version").output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "kernel tests compare against conntrack-tools: install it (`apt-get install -y conntrack`); scripts/test does"
    );
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        require_kernel();
        let name = format!(
            "ctnl-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("running `ip netns add` (iproute2)");
        assert!(
            st.success(),
            "ip netns add {name} failed: kernel tests need root and network namespaces"
        );
        TestNs { name }
    }

    pub fn netns(&self) -> Netns {
        Netns::named(&self.name)
    }

    pub fn ct(&self) -> ctnetlink::Conntrack {
        ctnetlink::Conntrack::open_in(Some(&self.netns()))
            .expect("opening ctnetlink in the test namespace")
    }

    /// Runs `conntrack ARGS` inside the namespace; returns stdout, panics with stderr on failure.
    pub fn conntrack(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "conntrack"])
            .args(args)
            .output()
            .expect("running conntrack");
        assert!(
            out.status.success(),
            "conntrack {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 from conntrack")
    }

    /// Sets a sysctl inside the namespace (per-netns ones such as nf_conntrack_acct).
    pub fn sysctl(&self, key: &str, value: &str) {
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ])
            .status()
            .expect("running sysctl");
        assert!(st.success(), "sysctl {key}={value} failed in {}", self.name);
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Sorted lines with the timeout (third field) and delta-time removed: the parts of a
/// `conntrack -L` line that cannot change between two dumps a moment apart.
pub fn stable_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(' ')
                .filter(|t| !t.is_empty())
                .enumerate()
                .filter(|(i, t)| *i != 2 && !t.starts_with("delta-time="))
                .map(|(_, t)| t)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// Our lines and conntrack-tools' lines for the whole table, identical token for token,
/// except that the two clock-driven fields (the timeout, and `delta-time=` with timestamps on)
/// may differ by one second: the two dumps are taken a moment apart, and under load a second
/// boundary can fall between them.
pub fn assert_same_lines(ours: &str, theirs: &str) {
    let key = |l: &str| stable_lines(l).pop().unwrap_or_default();
    let mut a: Vec<&str> = ours.lines().collect();
    let mut b: Vec<&str> = theirs.lines().collect();
    a.sort_by_key(|l| key(l));
    b.sort_by_key(|l| key(l));
    assert!(!a.is_empty(), "the table should not be empty");
    assert_eq!(
        a.len(),
        b.len(),
        "line count differs\nours:\n{ours}\nconntrack:\n{theirs}"
    );
    for (x, y) in a.iter().zip(&b) {
        let (tx, ty): (Vec<&str>, Vec<&str>) = (x.split(' ').collect(), y.split(' ').collect());
        // The padding after the protocol name is compared too: empty tokens must line up.
        let nth = |i: usize| tx[..i].iter().filter(|t| !t.is_empty()).count();
        let same = tx.len() == ty.len()
            && tx.iter().zip(&ty).enumerate().all(|(i, (p, q))| {
                let clock = |t: &str| {
                    if nth(i) == 2 && !t.is_empty() {
                        t.parse::<i64>().ok()
                    } else {
                        t.strip_prefix("delta-time=")?.parse().ok()
                    }
                };
                match (clock(p), clock(q)) {
                    (Some(m), Some(n)) => (m - n).abs() <= 1,
                    _ => p == q,
                }
            });
        assert!(
            same,
            "ctnetlink line differs from conntrack -L:\nours:      {x:?}\nconntrack: {y:?}"
        );
    }
}
