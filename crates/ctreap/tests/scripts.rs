//! The README's two commands, `scripts/lab` and `scripts/test`, as typed in the set-ups an
//! operator has (issue 12): as root without sudo, and as a user whose cargo lives in
//! `~/.cargo/bin` (rustup), which sudo's secure_path would drop.
//!
//! Each case runs a copy of the scripts in a scratch tree with stand-ins for `cargo`, `sudo`
//! and the built binary that record how they were called (their arguments, uid and PATH): the
//! build must run as the caller, only the privileged part through `sudo -E env PATH=...`, and
//! a user without sudo must get one line naming the fix. `CTREAP_FAKE_UID` makes the scripts
//! believe they run as a user (this test runs as root).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn write_exe(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A scratch repository: the real scripts, a stand-in binary, and a bin directory with a
/// recording `cargo` (and `sudo` if asked). Returns (tree, bin dir, log file).
fn scratch(with_sudo: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for s in [
        "lab",
        "test",
        "as-root.sh",
        "install-helm.sh",
        "install-deps.sh",
    ] {
        let text = fs::read_to_string(repo.join("scripts").join(s)).expect("read script");
        write_exe(&dir.path().join("scripts").join(s), &text);
    }
    let log = dir.path().join("calls.log");
    let record = |name: &str| {
        format!(
            "#!/bin/sh\necho \"{name} uid=$(id -u) path=$PATH args=$*\" >> {}\n",
            log.display()
        )
    };
    let bin = dir.path().join("home/.cargo/bin");
    write_exe(&bin.join("cargo"), &record("cargo"));
    // Present, so scripts/test does not fetch one.
    write_exe(&bin.join("helm"), &record("helm"));
    if with_sudo {
        // Records, then runs the command (this test is root already).
        write_exe(
            &bin.join("sudo"),
            &format!(
                "{}shift_e=$1; [ \"$1\" = -E ] && shift; exec \"$@\"\n",
                record("sudo")
            ),
        );
    }
    write_exe(&dir.path().join("target/release/ctreap"), &record("ctreap"));
    write_exe(
        &dir.path().join("target/release/ctreap-lab"),
        &record("ctreap-lab"),
    );
    // scripts/image (buildah, podman) raises what it needs itself; scripts/test only calls it.
    write_exe(&dir.path().join("scripts/image"), &record("image"));
    (dir, bin, log)
}

fn run(dir: &Path, script: &str, bin: &Path, uid: Option<u32>, args: &[&str]) -> Output {
    // A PATH with the stand-ins first and no real sudo or cargo after them.
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let mut cmd = Command::new(dir.join("scripts").join(script));
    cmd.args(args)
        .env("PATH", path)
        .env_remove("CTREAP_FAKE_UID");
    if let Some(uid) = uid {
        cmd.env("CTREAP_FAKE_UID", uid.to_string());
    }
    cmd.output().expect("running the script")
}

fn calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn lab_as_a_rustup_user_builds_as_the_user_and_raises_only_the_run() {
    let (dir, bin, log) = scratch(true);
    let out = run(
        dir.path(),
        "lab",
        &bin,
        Some(1000),
        &["--variant", "ctreap"],
    );
    assert!(out.status.success(), "{out:?}");
    let calls = calls(&log);
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert!(
        calls[0].starts_with("cargo ")
            && calls[0].ends_with("args=build --release -p ctreap -p ctreap-lab"),
        "the build, not through sudo: {calls:#?}"
    );
    assert!(
        calls[1].starts_with("sudo ")
            && calls[1].contains(&format!("args=-E env PATH={}:", bin.display()))
            && calls[1].ends_with("target/release/ctreap-lab --variant ctreap"),
        "sudo keeps the caller's PATH and runs only the lab: {calls:#?}"
    );
    assert!(
        calls[2].starts_with("ctreap-lab ") && calls[2].ends_with("args=--variant ctreap"),
        "{calls:#?}"
    );
}

#[test]
fn lab_as_root_without_sudo_runs_directly() {
    let (dir, bin, log) = scratch(false);
    let out = run(dir.path(), "lab", &bin, None, &[]);
    assert!(out.status.success(), "{out:?}");
    let calls = calls(&log);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].starts_with("cargo uid=0 "), "{calls:#?}");
    assert!(
        calls[1].starts_with("ctreap-lab uid=0 ") && calls[1].ends_with("args="),
        "{calls:#?}"
    );
}

#[test]
fn a_user_without_sudo_gets_one_line_with_the_fix() {
    for script in ["lab", "test"] {
        let (dir, bin, log) = scratch(false);
        let out = run(dir.path(), script, &bin, Some(1000), &[]);
        assert_eq!(out.status.code(), Some(1), "{script}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim(),
            format!(
                "scripts/{script}: needs root (network namespaces, CAP_NET_ADMIN) and sudo is not installed; run it as root"
            ),
            "{script}"
        );
        assert!(calls(&log).is_empty(), "{script}: nothing built or run");
    }
}

#[test]
fn test_as_a_rustup_user_runs_only_the_test_binaries_as_root() {
    let (dir, bin, log) = scratch(true);
    let out = run(dir.path(), "test", &bin, Some(1000), &[]);
    assert!(out.status.success(), "{out:?}");
    let calls = calls(&log);
    let image = calls
        .iter()
        .position(|c| c.starts_with("image "))
        .unwrap_or_else(|| panic!("scripts/image runs, as the caller: {calls:#?}"));
    assert!(
        calls
            .iter()
            .enumerate()
            .all(|(i, c)| i == image || c.starts_with("cargo ")),
        "no sudo except through cargo's runner (the packages are installed here): {calls:#?}"
    );
    assert!(
        image < calls.len() - 1,
        "the image is built before the tests run: {calls:#?}"
    );
    let test = calls.last().expect("a cargo test call");
    assert!(
        test.contains(&format!(
            "args=test --config target.'cfg(all())'.runner = [\"sudo\",\"-E\",\"env\",\"PATH={}:",
            bin.display()
        )) && test.ends_with("--workspace --no-fail-fast"),
        "{test}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.ends_with("args=fmt --all -- --check")),
        "{calls:#?}"
    );
}
