//! The socket layer: requests over a NETLINK_NETFILTER socket, on netlink-sys.
//!
//! | method | conntrack-tools equivalent |
//! |---|---|
//! | [`Conntrack::dump`] | `conntrack -L [filter]` |
//! | [`Conntrack::count`] | `conntrack -L [filter] \| wc -l`, `conntrack -C` without a filter |
//! | [`Conntrack::get`] | `conntrack -G` |
//! | [`Conntrack::create`] / [`Conntrack::create_batch`] | `conntrack -I` |
//! | [`Conntrack::delete`] / [`Conntrack::delete_batch`] | `conntrack -D` with a full tuple |
//! | [`Conntrack::flush`] | `conntrack -D [filter]`, `conntrack -F` |
//! | [`Conntrack::stats`] / [`Conntrack::stats_cpu`] | `conntrack -C` / `conntrack -S` |
//! | [`crate::events::EventSocket`] | `conntrack -E` |

use std::ops::ControlFlow;
use std::os::fd::AsRawFd;

use netlink_sys::{Socket, SocketAddr};
use serde::Serialize;

use crate::codec::entry::Entry;
use crate::codec::filter::Filter;
use crate::codec::message::{CpuStats, CtMessage, GlobalStats, MessageIter, Reply, append_request};
use crate::codec::nla::NlaWriter;
use crate::codec::tuple::Tuple;
use crate::consts::*;
use crate::error::{DecodeError, Error, Op};
use crate::netns::Netns;

/// Receive buffer for one recvmsg: the kernel fills dump datagrams up to 32 KiB
/// (netlink_dump caps max_recvmsg_len there), so 64 KiB never truncates.
const RECV_BUF: usize = 64 * 1024;
/// Requests per sendmsg in batched creates and deletes.
const BATCH_BYTES: usize = 48 * 1024;

/// Which way a filtered flush ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushPath {
    /// One CT_DELETE with CTA_FILTER: the kernel walks the table and deletes every match
    /// (Linux >= 6.12).
    Kernel,
    /// A kernel-filtered dump (CTA_FILTER, Linux >= 5.8) and one CT_DELETE per match, batched.
    DumpDelete,
    /// An unfiltered dump, the filter applied here, one CT_DELETE per match (Linux < 5.8).
    Userspace,
}

impl FlushPath {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushPath::Kernel => "kernel",
            FlushPath::DumpDelete => "dump-delete",
            FlushPath::Userspace => "userspace",
        }
    }
}

/// The outcome of [`Conntrack::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Entries deleted. On the kernel path the kernel reports no count: it is the table's size
    /// before minus after (CT_GET_STATS), exact when nothing else changes the table meanwhile.
    pub deleted: u64,
    /// Matching entries that were already gone when their delete arrived (ENOENT).
    pub already_gone: u64,
    pub path: FlushPath,
    /// A dump behind the flush was interrupted (NLM_F_DUMP_INTR): some matches may remain.
    pub dump_interrupted: bool,
}

/// The outcome of a dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DumpSummary {
    /// Entries handed to the callback.
    pub entries: u64,
    /// NLM_F_DUMP_INTR was set: the table changed during the dump, which may have missed or
    /// repeated entries.
    pub interrupted: bool,
    /// Messages that did not decode (skipped, not fatal).
    pub decode_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_decode_error: Option<String>,
    /// Whether the filter ran in the kernel (false: in userspace, on an older kernel).
    pub kernel_filtered: bool,
}

/// The outcome of a batched create or delete.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Requests the kernel accepted.
    pub ok: u64,
    /// Deletes answered ENOENT (already gone).
    pub not_found: u64,
    /// Other failures: (index in the batch, error).
    pub failed: Vec<(usize, Error)>,
}

/// What this kernel supports, found by asking it (never guessed from its version).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Features {
    /// CTA_FILTER in dumps (Linux 5.8).
    pub dump_filter: bool,
    /// CTA_FILTER in a flush (Linux 6.12).
    pub flush_filter: bool,
    /// CTA_STATUS in dumps (Linux 5.15).
    pub status_filter: bool,
}

/// A ctnetlink socket in one network namespace.
pub struct Conntrack {
    sock: Socket,
    netns: Option<Netns>,
    seq: u32,
    buf: Vec<u8>,
    req: Vec<u8>,
    /// Learned from the kernel: `Some(false)` after an EOPNOTSUPP.
    flush_filter: Option<bool>,
    dump_filter: Option<bool>,
    forced_path: Option<FlushPath>,
    sibling: Option<Box<Conntrack>>,
}

impl std::fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conntrack")
            .field("netns", &self.netns)
            .field("seq", &self.seq)
            .finish()
    }
}

pub(crate) fn open_socket(op: Op) -> Result<Socket, Error> {
    let io = |source| Error::Io { op, source };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(io)?;
    sock.bind_auto().map_err(io)?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(io)?;
    Ok(sock)
}

/// Sets SO_RCVBUFFORCE (needs CAP_NET_ADMIN; ignores rmem_max), else SO_RCVBUF.
pub(crate) fn set_rcvbuf(sock: &Socket, bytes: usize) -> std::io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on an open socket fd with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(std::io::Error::last_os_error())
}

impl Conntrack {
    /// Opens a socket in the current network namespace.
    pub fn open() -> Result<Conntrack, Error> {
        Self::with_socket(open_socket(Op::Open)?, None)
    }

    /// Opens a socket in `netns`, or in the current namespace when `None`.
    pub fn open_in(netns: Option<&Netns>) -> Result<Conntrack, Error> {
        match netns {
            None => Self::open(),
            Some(ns) => {
                let sock = ns.run(|| open_socket(Op::Open))??;
                Self::with_socket(sock, Some(ns.clone()))
            }
        }
    }

    fn with_socket(sock: Socket, netns: Option<Netns>) -> Result<Conntrack, Error> {
        // Acks carry only the header of the request they answer, not a copy of it.
        let _ = sock.set_cap_ack(true);
        // Large batches may queue many error replies before we read them.
        let _ = set_rcvbuf(&sock, 4 << 20);
        Ok(Conntrack {
            sock,
            netns,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
            req: Vec::with_capacity(BATCH_BYTES + 4096),
            flush_filter: None,
            dump_filter: None,
            forced_path: None,
            sibling: None,
        })
    }

    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    /// Forces the path [`Conntrack::flush`] takes (tests and benchmarks compare them); `None`
    /// restores automatic selection.
    pub fn force_flush_path(&mut self, path: Option<FlushPath>) {
        self.forced_path = path;
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, op: Op) -> Result<(), Error> {
        let mut off = 0;
        while off < self.req.len() {
            let n = self
                .sock
                .send(&self.req[off..], 0)
                .map_err(|source| Error::Io { op, source })?;
            off += n;
        }
        Ok(())
    }

    fn recv(&mut self, op: Op) -> Result<(), Error> {
        self.buf.clear();
        loop {
            match self.sock.recv(&mut self.buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(Error::Io { op, source }),
            }
        }
    }

    /// Sends one request and reads replies until its ack (or error), handing each ctnetlink
    /// message to `on_msg`.
    fn request(
        &mut self,
        op: Op,
        msg: u8,
        family: u8,
        version: u8,
        attrs: impl FnOnce(&mut NlaWriter<'_>),
        mut on_msg: impl FnMut(&CtMessage<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let seq = self.next_seq();
        self.req.clear();
        append_request(
            &mut self.req,
            msg,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            version,
            attrs,
        );
        self.send(op)?;
        loop {
            self.recv(op)?;
            let buf = std::mem::take(&mut self.buf);
            let mut result = None;
            for m in MessageIter::new(&buf) {
                let m = m.map_err(|source| Error::Decode { op, source })?;
                if m.seq != seq {
                    continue;
                }
                match m.reply {
                    Reply::Conntrack(ct) => {
                        if let Err(e) = on_msg(&ct) {
                            result = Some(Err(e));
                        }
                    }
                    Reply::Ack | Reply::Done => result = result.or(Some(Ok(()))),
                    Reply::Error(errno) => result = Some(Err(Error::Kernel { op, errno })),
                    Reply::Ignored => {}
                }
            }
            self.buf = buf;
            if let Some(r) = result {
                return r;
            }
        }
    }

    /// A fresh socket in the same namespace, replacing this one. Closing a netlink socket ends
    /// a dump in progress in the kernel (netlink_release runs the dump's done callback), which
    /// is much cheaper than reading the rest of a large table to its NLMSG_DONE.
    fn reopen(&mut self, op: Op) -> Result<(), Error> {
        let sock = match &self.netns {
            None => open_socket(op)?,
            Some(ns) => ns.run(move || open_socket(op))??,
        };
        let _ = sock.set_cap_ack(true);
        let _ = set_rcvbuf(&sock, 4 << 20);
        self.sock = sock;
        Ok(())
    }

    /// Streams a dump, handing every raw message to `f`, in constant memory. This is the loop
    /// every dump is built on; `f` returning `Break` stops the dump at once: the socket is
    /// replaced by a fresh one (the kernel ends a dump whose socket closes), so a stop in the
    /// middle of 1,000,000 entries costs one socket, not the rest of the walk.
    pub fn dump_raw(
        &mut self,
        family: u8,
        attrs: impl FnOnce(&mut NlaWriter<'_>),
        mut f: impl FnMut(&CtMessage<'_>) -> ControlFlow<()>,
    ) -> Result<bool, Error> {
        let op = Op::Dump;
        let seq = self.next_seq();
        self.req.clear();
        append_request(
            &mut self.req,
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            NFNETLINK_V0,
            attrs,
        );
        self.send(op)?;
        let mut interrupted = false;
        let mut stopped = false;
        loop {
            self.recv(op)?;
            let buf = std::mem::take(&mut self.buf);
            let mut done = None;
            for m in MessageIter::new(&buf) {
                let m = match m {
                    Ok(m) => m,
                    Err(source) => {
                        done = Some(Err(Error::Decode { op, source }));
                        break;
                    }
                };
                if m.seq != seq {
                    continue;
                }
                interrupted |= m.dump_interrupted();
                match m.reply {
                    Reply::Conntrack(ct) if !stopped => stopped = f(&ct).is_break(),
                    Reply::Conntrack(_) | Reply::Ignored | Reply::Ack => {}
                    Reply::Done => done = Some(Ok(())),
                    Reply::Error(errno) => done = Some(Err(Error::Kernel { op, errno })),
                }
            }
            self.buf = buf;
            match done {
                Some(Ok(())) => return Ok(interrupted),
                Some(Err(e)) => return Err(e),
                None if stopped => {
                    self.reopen(op)?;
                    return Ok(interrupted);
                }
                None => {}
            }
        }
    }

    /// Streams the entries that match `filter` to `f` (`conntrack -L`). The filter runs in the
    /// kernel when it can; on a kernel without CTA_FILTER (< 5.8) the dump is unfiltered and the
    /// filter runs here. Either way `f` sees exactly the matching entries.
    pub fn dump(
        &mut self,
        filter: &Filter,
        mut f: impl FnMut(Entry) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error> {
        filter.validate().map_err(Error::Invalid)?;
        let mut summary = DumpSummary {
            kernel_filtered: true,
            ..DumpSummary::default()
        };
        for family in filter.request_families() {
            let kernel_tuples = self.dump_filter != Some(false);
            let mut stop = false;
            let mut decode = |m: &CtMessage<'_>, s: &mut DumpSummary| -> ControlFlow<()> {
                match m.entry() {
                    // The userspace check also guards against old kernels that ignore
                    // CTA_FILTER silently instead of refusing it.
                    Ok(e) if filter.matches(&e) => {
                        s.entries += 1;
                        let flow = f(e);
                        stop = flow.is_break();
                        flow
                    }
                    Ok(_) => ControlFlow::Continue(()),
                    Err(err) => {
                        s.decode_errors += 1;
                        s.first_decode_error.get_or_insert_with(|| err.to_string());
                        ControlFlow::Continue(())
                    }
                }
            };
            let res = self.dump_raw(
                family,
                |w| filter.emit(w, kernel_tuples),
                |m| decode(m, &mut summary),
            );
            let interrupted = match res {
                Err(e) if kernel_tuples && e.is_not_supported() => {
                    self.dump_filter = Some(false);
                    summary.kernel_filtered = false;
                    self.dump_raw(
                        family,
                        |w| filter.emit(w, false),
                        |m| decode(m, &mut summary),
                    )?
                }
                other => other?,
            };
            if !kernel_tuples || !filter.kernel_exact() {
                summary.kernel_filtered = false;
            }
            summary.interrupted |= interrupted;
            if stop {
                break;
            }
        }
        Ok(summary)
    }

    /// Counts the entries that match `filter` without decoding more than needed.
    pub fn count(&mut self, filter: &Filter) -> Result<u64, Error> {
        if filter.is_empty() {
            return Ok(self.stats()?.entries.into());
        }
        Ok(self.dump(filter, |_| ControlFlow::Continue(()))?.entries)
    }

    /// Fetches one entry by its original (or reply) tuple (`conntrack -G`). `Ok(None)` when
    /// there is no such entry.
    pub fn get(&mut self, tuple: &Tuple, zone: Option<u16>) -> Result<Option<Entry>, Error> {
        let mut found = None;
        let res = self.request(
            Op::Get,
            IPCTNL_MSG_CT_GET,
            tuple.family(),
            NFNETLINK_V0,
            |w| {
                w.nested(CTA_TUPLE_ORIG, |w| tuple.emit(w));
                if let Some(z) = zone {
                    w.put_be16(CTA_ZONE, z);
                }
            },
            |m| {
                found = Some(m.entry().map_err(|source| Error::Decode {
                    op: Op::Get,
                    source,
                })?);
                Ok(())
            },
        );
        match res {
            Ok(()) => Ok(found),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates one entry (`conntrack -I`). The entry needs both tuples and a timeout.
    pub fn create(&mut self, e: &Entry) -> Result<(), Error> {
        let mut r = self.create_batch(std::slice::from_ref(e))?;
        match r.failed.pop() {
            Some((_, err)) => Err(err),
            None => Ok(()),
        }
    }

    /// Creates many entries, packing requests into few sendmsg calls.
    pub fn create_batch(&mut self, entries: &[Entry]) -> Result<BatchReport, Error> {
        self.batch(Op::Create, entries.len(), |i, buf, seq| {
            let e = &entries[i];
            append_request(
                buf,
                IPCTNL_MSG_CT_NEW,
                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
                seq,
                e.family,
                NFNETLINK_V0,
                |w| e.emit_create(w),
            )
        })
    }

    /// Deletes one entry by its original tuple (`conntrack -D` with a full tuple). Returns
    /// false when it was already gone (ENOENT).
    pub fn delete(&mut self, orig: &Tuple, zone: Option<u16>) -> Result<bool, Error> {
        let r = self.delete_batch(&[(*orig, zone)])?;
        match r.failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(r.ok == 1),
        }
    }

    /// Deletes many entries by original tuple; ENOENT counts as already gone.
    pub fn delete_batch(&mut self, tuples: &[(Tuple, Option<u16>)]) -> Result<BatchReport, Error> {
        self.batch(Op::Delete, tuples.len(), |i, buf, seq| {
            let (t, zone) = &tuples[i];
            append_request(
                buf,
                IPCTNL_MSG_CT_DELETE,
                NLM_F_REQUEST,
                seq,
                t.family(),
                NFNETLINK_V0,
                |w| {
                    w.nested(CTA_TUPLE_ORIG, |w| t.emit(w));
                    if let Some(z) = zone {
                        w.put_be16(CTA_ZONE, *z);
                    }
                },
            )
        })
    }

    /// Sends `n` requests written by `write(i, buf, seq)`, many per sendmsg. Only the last of
    /// each sendmsg asks for an ack; the kernel answers every failed one with its errno anyway,
    /// and handles a datagram's requests in order, so the last ack means all were handled.
    fn batch(
        &mut self,
        op: Op,
        n: usize,
        mut write: impl FnMut(usize, &mut Vec<u8>, u32),
    ) -> Result<BatchReport, Error> {
        let mut report = BatchReport::default();
        let mut i = 0;
        while i < n {
            self.req.clear();
            let first = i;
            let base = self.seq.wrapping_add(1);
            while i < n && self.req.len() < BATCH_BYTES {
                let seq = self.next_seq();
                let start = self.req.len();
                write(i, &mut self.req, seq);
                i += 1;
                if i == n || self.req.len() >= BATCH_BYTES {
                    // NLM_F_ACK on the last request of this datagram (flags at offset 6).
                    let flags =
                        u16::from_ne_bytes([self.req[start + 6], self.req[start + 7]]) | NLM_F_ACK;
                    self.req[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
                }
            }
            let last = self.seq;
            self.send(op)?;
            let count = (i - first) as u64;
            let mut errors = 0u64;
            'recv: loop {
                self.recv(op)?;
                let buf = std::mem::take(&mut self.buf);
                let mut finished = false;
                for m in MessageIter::new(&buf) {
                    let m = m.map_err(|source| Error::Decode { op, source })?;
                    let idx = first + m.seq.wrapping_sub(base) as usize;
                    match m.reply {
                        Reply::Error(errno) => {
                            errors += 1;
                            if op == Op::Delete && errno == libc::ENOENT {
                                report.not_found += 1;
                            } else {
                                report.failed.push((idx, Error::Kernel { op, errno }));
                            }
                            finished |= m.seq == last;
                        }
                        Reply::Ack => finished |= m.seq == last,
                        _ => {}
                    }
                }
                self.buf = buf;
                if finished {
                    break 'recv;
                }
            }
            report.ok += count - errors;
        }
        Ok(report)
    }

    /// Table-wide counts (`conntrack -C`; also nf_conntrack_max).
    pub fn stats(&mut self) -> Result<GlobalStats, Error> {
        let mut out = None;
        self.request(
            Op::Stats,
            IPCTNL_MSG_CT_GET_STATS,
            AF_UNSPEC,
            NFNETLINK_V0,
            |_| {},
            |m| {
                out = Some(GlobalStats::parse(m.attrs).map_err(|source| Error::Decode {
                    op: Op::Stats,
                    source,
                })?);
                Ok(())
            },
        )?;
        out.ok_or_else(|| Error::Decode {
            op: Op::Stats,
            source: DecodeError::new("CT_GET_STATS", "no reply message"),
        })
    }

    /// Per-CPU statistics (`conntrack -S`).
    pub fn stats_cpu(&mut self) -> Result<Vec<CpuStats>, Error> {
        let seq = self.next_seq();
        self.req.clear();
        append_request(
            &mut self.req,
            IPCTNL_MSG_CT_GET_STATS_CPU,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            AF_UNSPEC,
            NFNETLINK_V0,
            |_| {},
        );
        self.send(Op::Stats)?;
        let mut out = Vec::new();
        loop {
            self.recv(Op::Stats)?;
            for m in MessageIter::new(&self.buf) {
                let m = m.map_err(|source| Error::Decode {
                    op: Op::Stats,
                    source,
                })?;
                match m.reply {
                    Reply::Conntrack(ct) => {
                        out.push(CpuStats::parse(ct.res_id, ct.attrs).map_err(|source| {
                            Error::Decode {
                                op: Op::Stats,
                                source,
                            }
                        })?)
                    }
                    Reply::Done => return Ok(out),
                    Reply::Error(errno) => {
                        return Err(Error::Kernel {
                            op: Op::Stats,
                            errno,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends the kernel's filtered flush: one CT_DELETE without a tuple of its own, with
    /// CTA_FILTER (Linux >= 6.12; older kernels answer EOPNOTSUPP). Returns nothing: the kernel
    /// reports no count. This is the floor [`Conntrack::flush`] is measured against.
    pub fn kernel_flush(&mut self, family: u8, filter: &Filter) -> Result<(), Error> {
        if !filter.kernel_exact() {
            return Err(Error::Invalid(
                "the kernel flush path cannot match IPv6 addresses (Linux compares them inverted \
                 in CTA_FILTER); use the dump-delete path"
                    .into(),
            ));
        }
        // nfgenmsg version 1 asks the kernel to honour the family.
        self.request(
            Op::Flush,
            IPCTNL_MSG_CT_DELETE,
            family,
            NFNETLINK_V1,
            |w| filter.emit(w, true),
            |_| Ok(()),
        )
    }

    /// Deletes every entry that matches `filter` (`conntrack -D` with filters), by the fastest
    /// path this kernel supports: see [`FlushPath`]. The answer is the same whichever ran.
    /// An empty filter deletes the whole table (`conntrack -F`).
    pub fn flush(&mut self, filter: &Filter) -> Result<FlushReport, Error> {
        filter.validate().map_err(Error::Invalid)?;
        let mut report = FlushReport {
            deleted: 0,
            already_gone: 0,
            path: FlushPath::Kernel,
            dump_interrupted: false,
        };
        for family in filter.request_families() {
            let path = match self.forced_path {
                Some(p) => p,
                None if self.flush_filter == Some(false) => {
                    if self.dump_filter == Some(false) {
                        FlushPath::Userspace
                    } else {
                        FlushPath::DumpDelete
                    }
                }
                None if !filter.kernel_exact() => FlushPath::DumpDelete,
                None if self.flush_filter.is_none() && filter.has_complete_tuple() => {
                    // A kernel before 6.12 would delete the one entry of that tuple and
                    // ignore the rest of the filter: ask first.
                    if self.probe_flush()? {
                        FlushPath::Kernel
                    } else {
                        FlushPath::DumpDelete
                    }
                }
                None => FlushPath::Kernel,
            };

            let r = match path {
                FlushPath::Kernel => {
                    let before = self.stats()?.entries;
                    match self.kernel_flush(family, filter) {
                        Ok(()) => {
                            self.flush_filter = Some(true);
                            let after = self.stats()?.entries;
                            FlushReport {
                                deleted: before.saturating_sub(after).into(),
                                ..report
                            }
                        }
                        Err(e) if flush_refused(&e) && self.forced_path.is_none() => {
                            self.flush_filter = Some(false);
                            self.flush_by_dump(family, filter, self.dump_filter != Some(false))?
                        }
                        Err(e) => return Err(e),
                    }
                }
                FlushPath::DumpDelete => self.flush_by_dump(family, filter, true)?,
                FlushPath::Userspace => self.flush_by_dump(family, filter, false)?,
            };
            report.deleted += r.deleted;
            report.already_gone += r.already_gone;
            report.dump_interrupted |= r.dump_interrupted;
            report.path = r.path;
        }
        Ok(report)
    }

    fn flush_by_dump(
        &mut self,
        family: u8,
        filter: &Filter,
        kernel_filter: bool,
    ) -> Result<FlushReport, Error> {
        const CHUNK: usize = 1024;
        let mut pending: Vec<(Tuple, Option<u16>)> = Vec::with_capacity(CHUNK);
        let mut report = FlushReport {
            deleted: 0,
            already_gone: 0,
            path: if kernel_filter {
                FlushPath::DumpDelete
            } else {
                FlushPath::Userspace
            },
            dump_interrupted: false,
        };
        let mut failure = None;
        let mut sibling = self.sibling.take();
        if sibling.is_none() {
            sibling = Some(Box::new(Conntrack::open_in(self.netns.as_ref())?));
        }
        let del = sibling.as_mut().expect("just set");
        let mut flush_pending = |pending: &mut Vec<(Tuple, Option<u16>)>,
                                 report: &mut FlushReport|
         -> Result<(), Error> {
            let r = del.delete_batch(pending)?;
            pending.clear();
            report.deleted += r.ok;
            report.already_gone += r.not_found;
            match r.failed.into_iter().next() {
                Some((_, e)) => Err(e),
                None => Ok(()),
            }
        };
        let mut on_msg = |m: &CtMessage<'_>| -> ControlFlow<()> {
            match m.entry() {
                Ok(e) if filter.matches(&e) => {
                    pending.push((e.orig, e.zone));
                    if pending.len() == CHUNK
                        && let Err(err) = flush_pending(&mut pending, &mut report)
                    {
                        failure = Some(err);
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                }
                _ => ControlFlow::Continue(()),
            }
        };
        let res = self.dump_raw(family, |w| filter.emit(w, kernel_filter), &mut on_msg);
        let mut path = if kernel_filter {
            FlushPath::DumpDelete
        } else {
            FlushPath::Userspace
        };
        let interrupted = match res {
            Err(e) if kernel_filter && e.is_not_supported() => {
                self.dump_filter = Some(false);
                path = FlushPath::Userspace;
                self.dump_raw(family, |w| filter.emit(w, false), &mut on_msg)?
            }
            other => other?,
        };
        report.path = path;
        if let Some(e) = failure {
            self.sibling = sibling;
            return Err(e);
        }
        let res = flush_pending(&mut pending, &mut report);
        self.sibling = sibling;
        res?;
        report.dump_interrupted = interrupted;
        Ok(report)
    }

    /// Whether this kernel runs a filtered flush (Linux >= 6.12), asked with one that cannot
    /// match any entry; remembered for later flushes.
    fn probe_flush(&mut self) -> Result<bool, Error> {
        let supported = match self.kernel_flush(AF_INET, &never_matching()) {
            Ok(()) => true,
            Err(e) if flush_refused(&e) => false,
            Err(e) => return Err(e),
        };
        self.flush_filter = Some(supported);
        Ok(supported)
    }

    /// Asks the kernel what it supports, with requests that cannot match any entry
    /// (addresses 255.255.255.255 in both directions of the original tuple, protocol 255).
    pub fn probe(&mut self) -> Result<Features, Error> {
        let never = never_matching();
        let supported = |r: Result<bool, Error>| match r {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_supported() || e.errno() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        };
        let dump_filter = supported(self.dump_raw(
            AF_INET,
            |w| never.emit(w, true),
            |_| ControlFlow::Continue(()),
        ))?;
        let status = Filter {
            status: Some((IPS_CONFIRMED, IPS_CONFIRMED)),
            ..never
        };
        let status_filter = supported(self.dump_raw(
            AF_INET,
            |w| status.emit(w, true),
            |_| ControlFlow::Continue(()),
        ))?;
        let flush_filter = self.probe_flush()?;
        self.dump_filter = Some(dump_filter);
        Ok(Features {
            dump_filter,
            flush_filter,
            status_filter,
        })
    }
}

/// A filter no entry can match: both original addresses 255.255.255.255, protocol 255.
fn never_matching() -> Filter {
    Filter {
        family: Some(AF_INET),
        proto: Some(255),
        orig_src: Some([255, 255, 255, 255].into()),
        orig_dst: Some([255, 255, 255, 255].into()),
        ..Filter::default()
    }
}

/// How a kernel without filtered flush (before 6.12) answers one. A CT_DELETE with CTA_FILTER
/// and no tuple is EOPNOTSUPP; with a tuple it is taken for a single-entry delete: EINVAL for
/// a partial tuple, ENOENT for a complete one that names no entry. Falling back to a dump is
/// correct whatever the reason, since every dumped entry is checked here before its delete.
fn flush_refused(e: &Error) -> bool {
    matches!(
        e.errno(),
        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT)
    )
}

impl Entry {
    /// Attributes of a create request (CT_NEW): the tuples, zone, status, timeout, mark,
    /// protocol state and labels. Fields only the kernel sets (id, use, counters, timestamps)
    /// and unknown attributes are never sent.
    pub(crate) fn emit_create(&self, w: &mut NlaWriter<'_>) {
        w.nested(CTA_TUPLE_ORIG, |w| self.orig.emit(w));
        w.nested(CTA_TUPLE_REPLY, |w| self.reply.emit(w));
        if let Some(z) = self.zone {
            w.put_be16(CTA_ZONE, z);
        }
        if self.status != 0 {
            // The kernel answers EBUSY unless IPS_CONFIRMED is among the bits (the entry is
            // inserted confirmed); conntrack -I adds it the same way.
            w.put_be32(CTA_STATUS, self.status | IPS_CONFIRMED);
        }
        w.put_be32(CTA_TIMEOUT, self.timeout.unwrap_or(120));
        if let Some(m) = self.mark {
            w.put_be32(CTA_MARK, m);
        }
        if let Some(p) = &self.protoinfo {
            crate::codec::entry::emit_protoinfo(w, p);
        }
        if let Some(l) = &self.labels {
            w.put(CTA_LABELS, l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_kernels_refusals_select_the_fallback() {
        for errno in [libc::EOPNOTSUPP, libc::EINVAL, libc::ENOENT] {
            assert!(
                flush_refused(&Error::Kernel {
                    op: Op::Flush,
                    errno
                }),
                "{errno}"
            );
        }
        assert!(!flush_refused(&Error::Kernel {
            op: Op::Flush,
            errno: libc::EPERM
        }));
    }

    #[test]
    fn the_probe_filter_is_a_complete_tuple_the_kernel_can_evaluate() {
        let f = never_matching();
        assert!(f.validate().is_ok());
        assert!(f.kernel_exact());
        assert!(f.has_complete_tuple());
    }

    #[test]
    fn complete_tuples_are_told_apart_from_flush_keys() {
        let ip = |s: &str| Some(s.parse().unwrap());
        let agent_key = Filter {
            proto: Some(IPPROTO_UDP),
            orig_dst: ip("10.96.0.10"),
            orig_dst_port: Some(53),
            reply_src: ip("10.244.1.5"),
            reply_src_port: Some(5353),
            ..Filter::default()
        };
        assert!(
            !agent_key.has_complete_tuple(),
            "the agent's key goes straight to the kernel"
        );
        let orig = Filter {
            orig_src: ip("192.0.2.1"),
            ..agent_key
        };
        assert!(orig.has_complete_tuple());
        let reply = Filter {
            reply_dst: ip("192.0.2.1"),
            ..agent_key
        };
        assert!(reply.has_complete_tuple());
        let no_proto = Filter {
            orig_src: ip("192.0.2.1"),
            orig_dst: ip("10.96.0.10"),
            ..Filter::default()
        };
        assert!(
            !no_proto.has_complete_tuple(),
            "no CTA_TUPLE_PROTO: an old kernel answers EINVAL"
        );
        let v6 = Filter {
            proto: Some(IPPROTO_UDP),
            orig_src: ip("2001:db8::1"),
            orig_dst: ip("2001:db8::2"),
            ..Filter::default()
        };
        assert!(
            !v6.has_complete_tuple(),
            "IPv6 addresses never reach the kernel"
        );
    }
}
