//! Feeds arbitrary bytes to everything that decodes what the kernel sends: `MessageIter` over the
//! input as one datagram, and for each ctnetlink message `CtMessage::entry`, `GlobalStats::parse`,
//! `CpuStats::parse` and the `conntrack -L` line of whatever decodes. The same bytes are also
//! decoded as the attributes of an entry (first byte: the nfgenmsg family), which reaches the
//! attribute decoders without having to guess a valid nlmsghdr first.
//!
//! Besides "never panics", one property: whatever `Entry::parse` accepts, it normalizes:
//! `parse(emit(parse(x))) == parse(x)`.
#![no_main]

use ctnetlink::codec::format::conntrack_line;
use ctnetlink::codec::message::{CpuStats, EventKind, GlobalStats, MessageIter, Reply};
use ctnetlink::{Entry, Filter, ProtoInfo};
use libfuzzer_sys::fuzz_target;

fn entry(e: &Entry) {
    // Strings from the kernel (helper name, security context) are printed as they came, as
    // conntrack prints them, so nothing is asserted about the line itself.
    let _ = conntrack_line(e, 1_800_000_000);
    let _ = Filter::default().matches(e);
    // A nested raw attribute with a payload that is not a multiple of 4 comes back padded: a
    // known library issue (Entry::emit pads it inside the nest's length), not checked here.
    let unaligned = e
        .unknown
        .iter()
        .any(|u| u.nested && u.payload.len() % 4 != 0)
        || matches!(&e.protoinfo, Some(ProtoInfo::Other(r)) if r.nested && r.payload.len() % 4 != 0);
    if !unaligned {
        let mut buf = Vec::new();
        e.emit(&mut buf);
        assert_eq!(
            Entry::parse(e.family, &buf).as_ref(),
            Ok(e),
            "emit/parse round trip"
        );
    }
}

/// A known library bug, reported and not yet fixed: `MessageIter` negates the NLMSG_ERROR code,
/// which overflows (a panic with overflow checks, as fuzz builds have) for `i32::MIN`
/// (`regressions/decode/nlmsg-error-i32-min`). Inputs that reach it are skipped so that a run can
/// find other bugs. Remove this once codec/message.rs is fixed.
fn hits_known_bug(mut data: &[u8]) -> bool {
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            return false;
        }
        let ty = u16::from_ne_bytes([data[4], data[5]]);
        if ty == 2 && len >= 20 && data[16..20] == i32::MIN.to_ne_bytes() {
            return true;
        }
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    false
}

fuzz_target!(|data: &[u8]| {
    if hits_known_bug(data) {
        return;
    }
    for m in MessageIter::new(data) {
        let Ok(m) = m else { continue };
        let _ = m.dump_interrupted();
        if let Reply::Conntrack(ct) = m.reply {
            let _ = EventKind::of(&ct);
            if let Ok(e) = ct.entry() {
                entry(&e);
            }
            let _ = GlobalStats::parse(ct.attrs);
            let _ = CpuStats::parse(ct.res_id, ct.attrs);
        }
    }
    if let Some((&family, attrs)) = data.split_first()
        && let Ok(e) = Entry::parse(family, attrs)
    {
        entry(&e);
    }
});
