//! Conntrack events (`conntrack -E`): a separate socket subscribed to the NEW, UPDATE and
//! DESTROY multicast groups (NFNLGRP_CONNTRACK_*), with a large receive buffer. When the buffer
//! overflows anyway the kernel drops events and the next read fails with ENOBUFS: that surfaces
//! as [`Error::Overrun`], and the only correct reaction is a full resync.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use netlink_sys::Socket;
use serde::Serialize;

use crate::codec::entry::Entry;
use crate::codec::message::{EventKind, MessageIter, Reply};
use crate::consts::*;
use crate::error::{Error, Op};
use crate::netns::Netns;
use crate::socket::{open_socket, set_rcvbuf};

/// Which event groups to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups {
    pub new: bool,
    pub update: bool,
    pub destroy: bool,
}

impl Groups {
    pub const ALL: Groups = Groups {
        new: true,
        update: true,
        destroy: true,
    };
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub entry: Entry,
}

/// A socket that receives conntrack events.
#[derive(Debug)]
pub struct EventSocket {
    sock: Socket,
    buf: Vec<u8>,
    /// Messages that did not decode, skipped.
    pub decode_errors: u64,
}

/// Default receive buffer: 16 MiB holds ~50,000 events between two reads.
pub const DEFAULT_RCVBUF: usize = 16 << 20;

impl EventSocket {
    /// Opens an event socket in `netns` (or the current namespace) with a receive buffer of
    /// `rcvbuf` bytes (SO_RCVBUFFORCE, falling back to SO_RCVBUF capped by rmem_max).
    pub fn open(
        netns: Option<&Netns>,
        groups: Groups,
        rcvbuf: usize,
    ) -> Result<EventSocket, Error> {
        let sock = match netns {
            Some(ns) => ns.run(|| open_socket(Op::Events))??,
            None => open_socket(Op::Events)?,
        };
        set_rcvbuf(&sock, rcvbuf).map_err(|source| Error::Io {
            op: Op::Events,
            source,
        })?;
        for (on, g) in [
            (groups.new, NFNLGRP_CONNTRACK_NEW),
            (groups.update, NFNLGRP_CONNTRACK_UPDATE),
            (groups.destroy, NFNLGRP_CONNTRACK_DESTROY),
        ] {
            if on {
                sock.add_membership(g).map_err(|source| Error::Io {
                    op: Op::Events,
                    source,
                })?;
            }
        }
        Ok(EventSocket {
            sock,
            buf: Vec::with_capacity(256 * 1024),
            decode_errors: 0,
        })
    }

    /// Waits up to `timeout` (forever with `None`) for events and hands every one that arrived
    /// in the next datagram to `f`. Returns how many were delivered (0 on timeout).
    pub fn recv(
        &mut self,
        timeout: Option<Duration>,
        mut f: impl FnMut(Event),
    ) -> Result<usize, Error> {
        if !self.wait_readable(timeout)? {
            return Ok(0);
        }
        self.buf.clear();
        match self.sock.recv(&mut self.buf, libc::MSG_DONTWAIT) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(Error::Overrun),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                return Ok(0);
            }
            Err(source) => {
                return Err(Error::Io {
                    op: Op::Events,
                    source,
                });
            }
        }
        let mut n = 0;
        for m in MessageIter::new(&self.buf) {
            let Ok(m) = m else {
                self.decode_errors += 1;
                break;
            };
            if let Reply::Conntrack(ct) = m.reply
                && let Some(kind) = EventKind::of(&ct)
            {
                match ct.entry() {
                    Ok(entry) => {
                        n += 1;
                        f(Event { kind, entry });
                    }
                    Err(_) => self.decode_errors += 1,
                }
            }
        }
        Ok(n)
    }

    /// Reads every event already queued, without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(Event)) -> Result<usize, Error> {
        let mut total = 0;
        loop {
            let n = self.recv(Some(Duration::ZERO), &mut f)?;
            if n == 0 && !self.readable_now()? {
                return Ok(total);
            }
            total += n;
        }
    }

    fn readable_now(&self) -> Result<bool, Error> {
        self.wait_readable(Some(Duration::ZERO))
    }

    fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        loop {
            // SAFETY: poll on one valid pollfd that lives for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc >= 0 {
                return Ok(rc > 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Io {
                    op: Op::Events,
                    source: e,
                });
            }
        }
    }
}

impl AsRawFd for EventSocket {
    /// For registering with an async reactor (tokio's `AsyncFd`).
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
