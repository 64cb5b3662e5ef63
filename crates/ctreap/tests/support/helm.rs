//! Real Helm, for the tests that render deploy/helm/ctreap: `helm` from PATH, else
//! target/tools/helm (scripts/install-helm.sh, which scripts/test runs).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The chart, relative to the repository root.
pub const CHART: &str = "deploy/helm/ctreap";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// `helm ARGS` in the repository root.
pub fn helm(args: &[&str]) -> Output {
    let local = repo().join("target/tools/helm");
    let bin = if local.exists() {
        local
    } else {
        PathBuf::from("helm")
    };
    Command::new(&bin)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}. It renders the chart; scripts/test installs it \
                 (scripts/install-helm.sh)",
                bin.display()
            )
        })
}

/// `helm ARGS`, which must succeed; its standard output.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `helm template ctreap CHART --namespace ctreap-system --set S...`: the chart as the docs
/// install it.
pub fn template(sets: &[&str]) -> String {
    let mut args = vec!["template", "ctreap", CHART, "--namespace", "ctreap-system"];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm_ok(&args)
}
