//! Errors of the codec ([`DecodeError`]) and of the socket layer ([`Error`]). The errno the
//! kernel answered is always kept, so callers can tell "already gone" (ENOENT on delete) from
//! "not supported here" (EOPNOTSUPP: take a fallback) from "overrun" (ENOBUFS: resync).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Bytes that do not parse, with the path of attributes that led there
/// (for example `CTA_TUPLE_REPLY: CTA_TUPLE_PROTO: CTA_PROTO_SRC_PORT: expected 2 bytes, got 1`).
///
/// One pointer wide, so that the decoder's `Result`s stay small on the path that succeeds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", .0.context, .0.message)]
pub struct DecodeError(Box<DecodeErrorInner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodeErrorInner {
    context: String,
    message: String,
}

impl DecodeError {
    #[cold]
    pub fn new(context: &str, message: impl Into<String>) -> Self {
        Self(Box::new(DecodeErrorInner {
            context: context.to_owned(),
            message: message.into(),
        }))
    }

    /// Prefixes the context with an enclosing attribute or message name.
    #[cold]
    pub fn within(mut self, outer: &str) -> Self {
        self.0.context = format!("{outer}: {}", self.0.context);
        self
    }

    pub fn context(&self) -> &str {
        &self.0.context
    }
}

/// Which request an error belongs to, so that messages name it the way `conntrack` users do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Dump,
    Get,
    Create,
    Delete,
    Flush,
    Stats,
    Events,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open ctnetlink socket",
            Op::Dump => "dump (conntrack -L)",
            Op::Get => "get (conntrack -G)",
            Op::Create => "create (conntrack -I)",
            Op::Delete => "delete (conntrack -D)",
            Op::Flush => "flush (conntrack -D/-F with a filter)",
            Op::Stats => "stats (conntrack -S/-C)",
            Op::Events => "events (conntrack -E)",
        })
    }
}

impl Op {
    /// The label used for metrics (`ctreap_netlink_errors_total{op=...}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Dump => "dump",
            Op::Get => "get",
            Op::Create => "create",
            Op::Delete => "delete",
            Op::Flush => "flush",
            Op::Stats => "stats",
            Op::Events => "events",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel answered a request with an error (NLMSG_ERROR with a negative errno).
    #[error("{op}: kernel answered {} ({errno}){}", errno_name(*.errno), hint(*.op, *.errno))]
    Kernel { op: Op, errno: i32 },
    /// A system call on the socket failed.
    #[error("{op}: {source}{}", hint(*.op, source.raw_os_error().unwrap_or(0)))]
    Io {
        op: Op,
        #[source]
        source: io::Error,
    },
    /// Entering the network namespace failed.
    #[error("entering network namespace {}: {source} (does it exist? `ip netns list`; entering one needs CAP_SYS_ADMIN)", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The kernel sent bytes we could not parse.
    #[error("{op}: malformed message from the kernel: {source}")]
    Decode {
        op: Op,
        #[source]
        source: DecodeError,
    },
    /// The event socket's receive buffer overflowed: events were lost.
    #[error("event socket overrun (ENOBUFS): events were lost, resync needed")]
    Overrun,
    /// A request the library refuses to send (for example a filter the kernel cannot express).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io { source, .. } | Error::Netns { source, .. } => source.raw_os_error(),
            Error::Overrun => Some(libc::ENOBUFS),
            _ => None,
        }
    }

    /// ENOENT: on a delete this means the entry is already gone.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }

    /// EOPNOTSUPP: this kernel lacks the feature; a fallback applies.
    pub fn is_not_supported(&self) -> bool {
        self.errno() == Some(libc::EOPNOTSUPP)
    }

    pub fn is_permission_denied(&self) -> bool {
        matches!(self.errno(), Some(libc::EPERM) | Some(libc::EACCES))
    }

    pub fn op(&self) -> Option<Op> {
        match self {
            Error::Kernel { op, .. } | Error::Io { op, .. } | Error::Decode { op, .. } => Some(*op),
            Error::Overrun => Some(Op::Events),
            _ => None,
        }
    }
}

/// The symbolic name of an errno, as in errno.h ("ENOENT").
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EMSGSIZE => "EMSGSIZE",
        _ => "errno",
    }
}

fn hint(op: Op, errno: i32) -> &'static str {
    match (op, errno) {
        (_, libc::EPERM) | (_, libc::EACCES) => {
            ": needs CAP_NET_ADMIN in the node's network namespace"
        }
        (Op::Open, libc::EPROTONOSUPPORT) | (Op::Open, libc::ENOENT) => {
            ": nf_conntrack_netlink not loaded (modprobe nf_conntrack_netlink)"
        }
        (Op::Dump | Op::Stats | Op::Events, libc::EPROTONOSUPPORT) => {
            ": nf_conntrack_netlink not loaded (modprobe nf_conntrack_netlink)"
        }
        (Op::Delete | Op::Get, libc::ENOENT) => ": no such entry (already gone)",
        (Op::Create, libc::EEXIST) => ": an entry with this tuple already exists",
        (_, libc::EOPNOTSUPP) => ": not supported by this kernel",
        (_, libc::ENOBUFS) => ": receive buffer overrun, resync needed",
        (_, libc::EINVAL) => ": the kernel rejected the request's attributes",
        _ => "",
    }
}
