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
use ctnetlink::{Entry, Filter};
use libfuzzer_sys::fuzz_target;

fn entry(e: &Entry) {
    // Strings from the kernel (helper name, security context) are printed as they came, as
    // conntrack prints them, so nothing is asserted about the line itself.
    let _ = conntrack_line(e, 1_800_000_000);
    let _ = Filter::default().matches(e);
    let mut buf = Vec::new();
    e.emit(&mut buf);
    assert_eq!(
        Entry::parse(e.family, &buf).as_ref(),
        Ok(e),
        "emit/parse round trip"
    );
}

fuzz_target!(|data: &[u8]| {
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
