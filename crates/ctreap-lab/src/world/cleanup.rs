//! Leaving nothing behind.
//!
//! - Normal end, error, panic: [`World`](super::World)'s `Drop` stops the pods and deletes its
//!   namespaces (a panic unwinds through it).
//! - SIGINT/SIGTERM: [`cleanup_on_signal`] installs a handler (a thread waiting on the signals
//!   through tokio's signal registry, so it coexists with other tokio signal users) that runs
//!   the hooks given to [`on_signal`], deletes every namespace this process registered, and
//!   exits with 128 + the signal number (130, 143).
//! - `kill -9`, power loss: nothing runs, so the next run calls [`sweep_stale`], which deletes
//!   the namespaces of dead runs, recognised by name: `ctl-<pid>-<n>-node|pod-*|cl-*` whose
//!   `<pid>` is not a running process. Other namespaces, and those of a live run, are left.
//!
//! Deleting a lab namespace is the whole cleanup: links, addresses, NAT rules, sysctls and the
//! conntrack table all live in it. The process's own sockets in it are closed first (the pods'
//! servers), or by the kernel when a killed process exits; otherwise `ip netns del` would only
//! remove the name while sockets kept the namespace alive.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, Once};

use serde::Serialize;

use super::{Error, cmd};

/// Every lab namespace name starts with this (`ctl-` for "ctreap lab").
pub const ROOT_PREFIX: &str = "ctl-";

type Hook = Box<dyn FnOnce() + Send>;

struct Registry {
    namespaces: BTreeSet<String>,
    hooks: Vec<Hook>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: BTreeSet::new(),
    hooks: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A namespace this process owns until the registration is dropped (after it was deleted).
#[derive(Debug)]
pub(crate) struct Registration {
    name: String,
}

pub(crate) fn register(name: &str) -> Registration {
    registry().namespaces.insert(name.to_string());
    Registration {
        name: name.to_string(),
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().namespaces.remove(&self.name);
    }
}

/// Runs `hook` when SIGINT/SIGTERM arrives, before the namespaces are deleted (e.g. stop the
/// agent child, write a partial report). Hooks run once, in the order given.
pub fn on_signal(hook: impl FnOnce() + Send + 'static) {
    registry().hooks.push(Box::new(hook));
}

/// Installs the SIGINT/SIGTERM handler (once per process; later calls do nothing). On a
/// signal: run the [`on_signal`] hooks, delete every registered lab namespace (pods and clients
/// before the node), print what was removed to stderr, exit with 128 + signal.
pub fn cleanup_on_signal() -> Result<(), Error> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
        let spawned = std::thread::Builder::new()
            .name("ctreap-lab-signals".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let code = rt.block_on(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let mut int = match signal(SignalKind::interrupt()) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return None;
                        }
                    };
                    let mut term = match signal(SignalKind::terminate()) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return None;
                        }
                    };
                    let _ = tx.send(Ok(()));
                    tokio::select! {
                        _ = int.recv() => Some(128 + libc::SIGINT),
                        _ = term.recv() => Some(128 + libc::SIGTERM),
                    }
                });
                if let Some(code) = code {
                    let removed = cleanup_now();
                    if !removed.is_empty() {
                        eprintln!(
                            "ctreap lab: interrupted; removed {} lab namespace(s)",
                            removed.len()
                        );
                    }
                    std::process::exit(code);
                }
            });
        result = match spawned {
            Err(source) => Err(Error::Io {
                context: "starting the signal thread".into(),
                source,
            }),
            Ok(_) => match rx.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(Error::Io {
                    context: "installing the SIGINT/SIGTERM handler".into(),
                    source,
                }),
                Err(_) => Err(Error::Io {
                    context: "installing the SIGINT/SIGTERM handler".into(),
                    source: std::io::Error::other("signal thread ended"),
                }),
            },
        };
    });
    result
}

/// Runs the hooks and deletes every registered namespace now; returns the names deleted.
fn cleanup_now() -> Vec<String> {
    let (hooks, names) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.hooks),
            r.namespaces.iter().cloned().collect::<Vec<_>>(),
        )
    };
    for h in hooks {
        h();
    }
    delete_in_order(names)
}

/// Deletes pods' and clients' namespaces before nodes' (a node's veth ends go with it anyway);
/// returns those deleted.
fn delete_in_order(mut names: Vec<String>) -> Vec<String> {
    nodes_last(&mut names);
    names
        .into_iter()
        .filter(|n| cmd::ip(None, &["netns", "del", n]).is_ok())
        .collect()
}

/// Sorts node namespaces after pods and clients.
fn nodes_last(names: &mut [String]) {
    names.sort_by_key(|n| (lab_role_is_node(n), n.clone()));
}

fn lab_role_is_node(name: &str) -> bool {
    name.ends_with("-node") && !name.contains("-pod-") && !name.contains("-cl-")
}

/// What [`sweep_stale`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Namespaces of dead runs, deleted.
    pub removed: Vec<String>,
    /// Lab namespaces of runs whose process is alive (another lab running now), left alone.
    pub live: Vec<String>,
    /// Namespaces of dead runs that could not be deleted, with why.
    pub failed: Vec<(String, String)>,
}

/// The pid of the run that made `name`, if `name` is a lab namespace:
/// `ctl-<pid>-<n>-node`, `ctl-<pid>-<n>-pod-<name>`, `ctl-<pid>-<n>-cl-<name>`.
pub(crate) fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(ROOT_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (seq, role) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(seq) {
        return None;
    }
    let named = |p: &str| {
        role.strip_prefix(p).is_some_and(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    };
    if role != "node" && !named("pod-") && !named("cl-") {
        return None;
    }
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Finds the namespaces of earlier lab runs whose process is gone (`kill -9`, a crash) and
/// deletes them (`ip netns del`). Only names of the lab's exact pattern are considered, never
/// this process's own, never a live process's. Call it before building a new world.
pub fn sweep_stale() -> Result<SweepReport, Error> {
    let dir = std::path::Path::new("/run/netns");
    let mut report = SweepReport::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(source) => {
            return Err(Error::Io {
                context: "listing /run/netns".into(),
                source,
            });
        }
    };
    let me = std::process::id();
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = lab_pid(&name) else { continue };
        if pid == me || pid_alive(pid) {
            report.live.push(name);
        } else {
            stale.push(name);
        }
    }
    nodes_last(&mut stale);
    for name in stale {
        match cmd::ip(None, &["netns", "del", &name]) {
            Ok(_) => report.removed.push(name),
            Err(e) => report.failed.push((name, e.to_string())),
        }
    }
    report.live.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_recognised_exactly() {
        assert_eq!(lab_pid("ctl-4242-0-node"), Some(4242));
        assert_eq!(lab_pid("ctl-4242-3-pod-a1"), Some(4242));
        assert_eq!(lab_pid("ctl-4242-3-cl-udp-1"), Some(4242));
        for other in [
            "ctl-4242-node",
            "ctl-x-0-node",
            "ctl-4242-0-nodes",
            "ctl-4242-0-pod-",
            "ctl-4242-0-pod-A1",
            "ctl-4242-0-web",
            "cni-1234",
            "ctl--0-node",
            "xctl-4242-0-node",
        ] {
            assert_eq!(lab_pid(other), None, "{other}");
        }
    }

    #[test]
    fn deletion_order_puts_nodes_last() {
        let mut names = [
            "ctl-1-0-node".to_string(),
            "ctl-1-0-pod-node".to_string(),
            "ctl-1-0-cl-c".to_string(),
        ];
        nodes_last(&mut names);
        assert_eq!(names[2], "ctl-1-0-node");
    }
}
