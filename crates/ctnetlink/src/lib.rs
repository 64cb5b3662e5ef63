//! ctnetlink: the Linux conntrack table over netlink, without `conntrack` or libnetfilter.
//!
//! Two layers, as in rust-netlink: [`codec`] is pure (bytes in, typed values out, and back),
//! [`Conntrack`] and [`EventSocket`] do the I/O on netlink-sys sockets, in the current network
//! namespace or any other ([`Netns`]) without moving the process.
//!
//! Dumps stream (constant memory whatever the table size), filters run in the kernel when it
//! supports them (CTA_FILTER, Linux 5.8) and flushes are one kernel walk when it can
//! (CT_DELETE with CTA_FILTER, Linux 6.12), with automatic fallbacks that give the same answer.
//!
//! ```no_run
//! use ctnetlink::{Conntrack, Filter};
//! let mut ct = Conntrack::open()?;
//! // conntrack -D -p udp -r 10.1.1.100   (every UDP flow DNATed to that pod)
//! let report = ct.flush(&Filter {
//!     proto: Some(17),
//!     reply_src: Some("10.1.1.100".parse().unwrap()),
//!     ..Filter::default()
//! })?;
//! println!("{} deleted via {}", report.deleted, report.path.as_str());
//! # Ok::<(), ctnetlink::Error>(())
//! ```

pub mod codec;
pub mod consts;
pub mod error;
pub mod events;
pub mod netns;
pub mod socket;

pub use codec::entry::{
    Counters, Entry, ProtoInfo, RawAttr, SctpInfo, Synproxy, TcpInfo, Timestamp,
};
pub use codec::filter::Filter;
pub use codec::message::{CpuStats, EventKind, GlobalStats};
pub use codec::tuple::{L4, Tuple};
pub use error::{DecodeError, Error, Op};
pub use events::{Event, EventSocket, Groups};
pub use netns::Netns;
pub use socket::{BatchReport, Conntrack, DumpSummary, Features, FlushPath, FlushReport};
