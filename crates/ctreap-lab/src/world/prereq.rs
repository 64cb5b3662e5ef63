//! What the lab needs from the machine, checked before anything is touched.
//!
//! Only reads: `/proc/self/status` (capabilities), `$PATH` (tools), `iptables --version` (its
//! backend), `/proc/sys/net/netfilter` and `/lib/modules` (conntrack).

use std::fmt;
use std::path::{Path, PathBuf};

use super::Error;
use super::nat::NatBackend;

/// What a run needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirements {
    /// The NAT backend the run programs.
    pub backend: NatBackend,
    /// The `conntrack` CLI (conntrack-tools): only the seed's preStop variant runs it.
    pub conntrack_cli: bool,
}

/// One missing prerequisite, with how to get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub what: String,
    pub how: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.how)
    }
}

/// `CAP_NET_ADMIN` (links, addresses, rules, conntrack) and `CAP_SYS_ADMIN` (`setns`, the
/// `ip netns` mounts), from `linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Checks everything `req` needs and reports every missing piece at once. Touches nothing.
pub fn check_prerequisites(req: &Requirements) -> Result<(), Error> {
    let mut missing = Vec::new();
    match effective_caps() {
        Some(caps) => {
            let lacks: Vec<&str> = [
                (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
                (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            ]
            .into_iter()
            .filter(|(bit, _)| caps & (1u64 << bit) == 0)
            .map(|(_, name)| name)
            .collect();
            if !lacks.is_empty() {
                missing.push(Missing {
                    what: format!("root privileges ({} missing)", lacks.join(", ")),
                    how: "run it as root: `sudo ctreap lab` (or `sudo -E cargo run --release -- lab`)"
                        .into(),
                });
            }
        }
        None => missing.push(Missing {
            what: "root privileges (cannot read CapEff from /proc/self/status)".into(),
            how: "run it as root on Linux: `sudo ctreap lab`".into(),
        }),
    }
    if which("ip").is_none() {
        missing.push(Missing {
            what: "`ip` (iproute2)".into(),
            how: "`apt-get install iproute2` (dnf install iproute)".into(),
        });
    }
    match req.backend {
        NatBackend::Nftables => {
            if which("nft").is_none() {
                missing.push(Missing {
                    what: "`nft` (nftables), for --nat nftables".into(),
                    how: "`apt-get install nftables` (dnf install nftables), or use --nat iptables-nft"
                        .into(),
                });
            }
        }
        NatBackend::IptablesNft => match iptables_backend() {
            IptablesBackend::Nft => {}
            IptablesBackend::Legacy => missing.push(Missing {
                what: "`iptables-restore` with the nf_tables backend (this one is iptables-legacy)".into(),
                how: "`update-alternatives --set iptables /usr/sbin/iptables-nft`, or use --nat nftables"
                    .into(),
            }),
            IptablesBackend::Absent => missing.push(Missing {
                what: "`iptables-restore` (iptables, nf_tables backend), for --nat iptables-nft".into(),
                how: "`apt-get install iptables` (dnf install iptables-nft), or use --nat nftables".into(),
            }),
        },
    }
    if req.conntrack_cli && which("conntrack").is_none() {
        missing.push(Missing {
            what: "`conntrack` (conntrack-tools), for the seed's preStop variant".into(),
            how: "`apt-get install conntrack` (dnf install conntrack-tools), or leave that variant out"
                .into(),
        });
    }
    if !conntrack_available() {
        missing.push(Missing {
            what: "the nf_conntrack kernel module".into(),
            how: "`modprobe nf_conntrack` (a kernel built with CONFIG_NF_CONNTRACK and CONFIG_NF_NAT)"
                .into(),
        });
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Missing(missing))
    }
}

/// The effective capability set of this process (`CapEff:` in `/proc/self/status`).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The first executable `name` on `$PATH`, plus the sbin directories `sudo` may leave out.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

enum IptablesBackend {
    Nft,
    Legacy,
    Absent,
}

/// `iptables --version` prints `iptables v1.8.9 (nf_tables)` or `(legacy)`.
fn iptables_backend() -> IptablesBackend {
    if which("iptables-restore").is_none() {
        return IptablesBackend::Absent;
    }
    match super::cmd::run("iptables", &["--version"]) {
        Ok(v) if v.contains("nf_tables") => IptablesBackend::Nft,
        Ok(_) => IptablesBackend::Legacy,
        Err(_) => IptablesBackend::Absent,
    }
}

/// Loaded (its sysctls exist) or loadable on demand (a module file for the running kernel;
/// nft loads it when the first NAT rule arrives).
fn conntrack_available() -> bool {
    if Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dir = Path::new("/lib/modules").join(release.trim());
    let listed = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .is_ok_and(|s| s.lines().any(|l| l.contains("/nf_conntrack.ko")))
    };
    listed("modules.builtin") || listed("modules.dep")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_items_are_listed_one_per_line_with_the_fix() {
        let err = Error::Missing(vec![
            Missing {
                what: "`nft` (nftables)".into(),
                how: "`apt-get install nftables`".into(),
            },
            Missing {
                what: "root privileges".into(),
                how: "`sudo ctreap lab`".into(),
            },
        ]);
        let text = err.to_string();
        assert_eq!(
            text,
            "ctreap lab cannot run on this machine:\n  - `nft` (nftables): `apt-get install nftables`\n  - root privileges: `sudo ctreap lab`"
        );
    }

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some(), "every Linux has /bin/sh on PATH");
        assert!(which("no-such-tool-ctreap-lab").is_none());
    }
}
