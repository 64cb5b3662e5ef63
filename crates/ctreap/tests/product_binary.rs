//! The binary the DaemonSet runs links no test server: the lab, which needs one, is a crate of
//! its own (crates/ctreap-lab), and the image builds the ctreap package alone
//! (scripts/build-static, run by the Dockerfile and scripts/image).

use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("the workspace root")
}

/// `cargo tree -e normal` with these extra arguments (the package among them).
fn tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["tree", "--locked", "-e", "normal", "--prefix", "none"])
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
fn the_product_links_no_test_server_and_the_image_builds_it_alone() {
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
        build.contains("-p ctreap ") && !build.contains("ctreap-lab"),
        "the image builds the ctreap package alone: {build}"
    );
    let product = tree(&["-p", "ctreap"]);
    assert!(
        product.lines().any(|l| l.starts_with("ctnetlink ")),
        "the tree lists ctreap's dependencies:\n{product}"
    );
    assert!(
        !product.contains("kube-testserver"),
        "the product binary depends on the test server:\n{product}"
    );
    let lab = tree(&["-p", "ctreap-lab"]);
    assert!(
        lab.contains("kube-testserver"),
        "the lab (its own crate) has its API server:\n{lab}"
    );
}
