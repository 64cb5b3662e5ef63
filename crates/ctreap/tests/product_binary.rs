//! The binary the DaemonSet runs links no test server: the image builds ctreap without the
//! `lab` feature (scripts/build-static, run by the Dockerfile and scripts/image), and without it
//! nothing depends on kube-testserver.

use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("the workspace root")
}

/// `cargo tree` of ctreap's normal dependencies with these extra arguments.
fn tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "tree", "--locked", "-p", "ctreap", "-e", "normal", "--prefix", "none",
        ])
        .args(args)
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_image_builds_without_the_lab_and_links_no_test_server() {
    // The Dockerfile and scripts/image both build the binary with scripts/build-static.
    let read = |rel: &str| {
        std::fs::read_to_string(workspace().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let dockerfile = read("Dockerfile");
    let image = read("scripts/image");
    for (file, text) in [("Dockerfile", &dockerfile), ("scripts/image", &image)] {
        assert!(
            text.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("scripts/build-static")),
            "{file} must build the binary with scripts/build-static"
        );
    }
    let script = read("scripts/build-static");
    let build = script
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build line in scripts/build-static");
    assert!(
        build.contains("-p ctreap") && build.contains("--no-default-features"),
        "the image must build ctreap without the lab feature: {build}"
    );
    let product = tree(&["--no-default-features"]);
    assert!(
        product.lines().any(|l| l.starts_with("ctnetlink ")),
        "the tree lists ctreap's dependencies:\n{product}"
    );
    assert!(
        !product.contains("kube-testserver"),
        "the product binary depends on the test server:\n{product}"
    );
    let with_lab = tree(&[]);
    assert!(
        with_lab.contains("kube-testserver"),
        "with the default features the lab (and its API server) is there:\n{with_lab}"
    );
}
