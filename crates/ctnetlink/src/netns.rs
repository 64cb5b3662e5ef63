//! Network namespaces. A netlink socket belongs to the namespace it was created in, so to work
//! on another namespace's conntrack table we create the socket on a short-lived thread that has
//! entered that namespace (setns(2) affects only the calling thread), and hand the socket back.
//! The rest of the process never moves.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;

/// Where an operation runs: a named namespace (`ip netns add NAME` makes `/run/netns/NAME`) or
/// any namespace file such as `/proc/PID/ns/net`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    /// `/run/netns/NAME`, as `ip netns` names it. A value containing `/` is taken as a path.
    pub fn named(name: &str) -> Netns {
        if name.contains('/') {
            Netns {
                path: PathBuf::from(name),
            }
        } else {
            Netns {
                path: Path::new("/run/netns").join(name),
            }
        }
    }

    pub fn path(path: impl Into<PathBuf>) -> Netns {
        Netns { path: path.into() }
    }

    /// The namespace of a process (`/proc/PID/ns/net`).
    pub fn of_pid(pid: u32) -> Netns {
        Netns {
            path: PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    pub fn as_path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a thread inside this namespace and returns its result. Files and sockets
    /// that `f` opens stay in this namespace after the thread ends.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let file = File::open(&self.path).map_err(|source| Error::Netns {
            path: self.path.clone(),
            source,
        })?;
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("ctnetlink-netns".into())
            .spawn(move || {
                // SAFETY: setns(2) on a valid, open namespace file descriptor; it changes only the
                // network namespace of this dedicated thread, which ends when `f` returns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(Error::Netns {
                        path: path.clone(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .map_err(|source| Error::Netns {
                path: self.path.clone(),
                source,
            })?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}
