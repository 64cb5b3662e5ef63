//! Embeds the git revision for `ctreap_build_info{revision}` and `ctreap --version`:
//! `$CTREAP_GIT_REVISION` if set (the image's build passes it; it has no .git), else
//! `git rev-parse --short=12 HEAD`, else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CTREAP_GIT_REVISION");
    let git_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    // Only paths that exist: a missing one would rerun this script on every build.
    for p in ["HEAD", "refs/heads", "packed-refs"] {
        let path = git_dir.join(p);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let rev = std::env::var("CTREAP_GIT_REVISION")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CTREAP_REVISION={rev}");
}
