//! The agent's side of ctnetlink: stream the table (or the part a filter selects) through a
//! decision, then delete what it selected, entry by entry, so every count is exact.
//!
//! Why not the kernel's filtered flush (`Conntrack::flush`, Linux 6.12+)? It deletes without
//! telling what, so counts come from the table size before and after (wrong while other flows
//! come and go) and nothing can be re-checked per entry. A filtered dump costs the same kernel
//! walk and hands us each entry, so the newest Service map judges every one before it goes.
//!
//! What the agent needs of a table is the [`Table`] trait: the kernel's ([`Conntrack`]), or
//! an in-memory one in the agent's loop tests (`agent::table`).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ctnetlink::{
    BatchReport, Conntrack, DumpSummary, Entry, Error, Features, Filter, GlobalStats, Netns, Tuple,
};

use crate::reconcile::{Flow, flow_of};

/// One entry chosen for deletion, with the caller's label (what it is deleted for).
pub struct Selected<T> {
    pub tuple: Tuple,
    pub zone: Option<u16>,
    pub label: T,
}

/// The outcome of [`Kernel::sweep`].
pub struct Sweep<T> {
    pub selected: Vec<Selected<T>>,
    /// Entries seen (with ports; ICMP and other port-less entries are skipped).
    pub entries: u64,
    /// The table changed under a dump (NLM_F_DUMP_INTR): some entries may have been missed.
    pub interrupted: bool,
    /// Stopped early by shutdown.
    pub cancelled: bool,
    /// Messages that did not decode (skipped).
    pub decode_errors: u64,
}

/// The four things the agent does with a conntrack table, as ctnetlink does them.
pub trait Table: Send {
    /// What this table supports (`Conntrack::probe`).
    fn probe(&mut self) -> Result<Features, Error>;
    /// Hands each entry `filter` selects to `each` (`Conntrack::dump`).
    fn dump(
        &mut self,
        filter: &Filter,
        each: &mut dyn FnMut(Entry) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error>;
    /// Deletes entries by original tuple and zone; absent ones count as not found
    /// (`Conntrack::delete_batch`).
    fn delete_batch(&mut self, tuples: &[(Tuple, Option<u16>)]) -> Result<BatchReport, Error>;
    /// `conntrack -C` and the table's maximum (`Conntrack::stats`).
    fn stats(&mut self) -> Result<GlobalStats, Error>;
}

impl Table for Conntrack {
    fn probe(&mut self) -> Result<Features, Error> {
        Conntrack::probe(self)
    }

    fn dump(
        &mut self,
        filter: &Filter,
        each: &mut dyn FnMut(Entry) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error> {
        Conntrack::dump(self, filter, each)
    }

    fn delete_batch(&mut self, tuples: &[(Tuple, Option<u16>)]) -> Result<BatchReport, Error> {
        Conntrack::delete_batch(self, tuples)
    }

    fn stats(&mut self) -> Result<GlobalStats, Error> {
        Conntrack::stats(self)
    }
}

/// The node's conntrack table (a ctnetlink socket in its namespace, or another [`Table`]),
/// used by one task at a time.
pub struct Kernel {
    ct: Box<dyn Table>,
    cancel: Arc<AtomicBool>,
}

impl Kernel {
    pub fn open(netns: Option<&Netns>, cancel: Arc<AtomicBool>) -> Result<Kernel, Error> {
        Ok(Kernel::on(Box::new(Conntrack::open_in(netns)?), cancel))
    }

    /// The agent's kernel side on `table`.
    pub fn on(table: Box<dyn Table>, cancel: Arc<AtomicBool>) -> Kernel {
        Kernel { ct: table, cancel }
    }

    pub fn probe(&mut self) -> Result<Features, Error> {
        self.ct.probe()
    }

    /// Dumps the entries each filter selects and hands each one's flow to `decide`, which
    /// returns a label to delete it. Deletes nothing; see [`Kernel::delete`].
    pub fn sweep<T>(
        &mut self,
        filters: &[Filter],
        mut decide: impl FnMut(&Flow, &Entry) -> Option<T>,
    ) -> Result<Sweep<T>, Error> {
        let mut out = Sweep {
            selected: Vec::new(),
            entries: 0,
            interrupted: false,
            cancelled: false,
            decode_errors: 0,
        };
        for filter in filters {
            let cancel = &self.cancel;
            let summary = self.ct.dump(filter, &mut |e| {
                if cancel.load(Ordering::Relaxed) {
                    return ControlFlow::Break(());
                }
                if let Some(flow) = flow_of(&e) {
                    out.entries += 1;
                    if let Some(label) = decide(&flow, &e) {
                        out.selected.push(Selected {
                            tuple: e.orig,
                            zone: e.zone,
                            label,
                        });
                    }
                }
                ControlFlow::Continue(())
            })?;
            out.interrupted |= summary.interrupted;
            out.decode_errors += summary.decode_errors;
            if self.cancel.load(Ordering::Relaxed) {
                out.cancelled = true;
                break;
            }
        }
        Ok(out)
    }

    /// Deletes entries by their original tuple; ENOENT counts as already gone.
    pub fn delete(&mut self, tuples: &[(Tuple, Option<u16>)]) -> Result<BatchReport, Error> {
        self.ct.delete_batch(tuples)
    }

    pub fn stats(&mut self) -> Result<GlobalStats, Error> {
        self.ct.stats()
    }
}
