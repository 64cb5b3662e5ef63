//! An in-memory conntrack table for the agent's loop tests: what the kernel's table does for
//! the agent (dump what a filter selects, delete by original tuple and zone, count), with
//! every dump and delete recorded for the test to read.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use ctnetlink::{BatchReport, DumpSummary, Entry, Error, Features, Filter, GlobalStats, Tuple};

use super::kernel::Table;

/// What happened to the table, for assertions.
#[derive(Default)]
pub struct Record {
    pub entries: Vec<Entry>,
    /// Every entry deleted, in order, with the value of the test's `on_delete` probe then.
    pub deleted: Vec<(Entry, u64)>,
    /// Dumps of the whole table (an empty filter): the startup pass and every full pass.
    pub full_dumps: u64,
    /// Dumps narrowed by a filter (a watch-planned pass that walks).
    pub filtered_dumps: u64,
}

/// A table handle; clones share one table.
#[derive(Clone, Default)]
pub struct MemTable {
    inner: Arc<Mutex<Record>>,
    /// Read at each delete (for example, how many lists the API server has served).
    probe: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

impl MemTable {
    pub fn new(entries: Vec<Entry>) -> MemTable {
        let t = MemTable::default();
        t.lock().entries = entries;
        t
    }

    /// `probe` is read at every delete and stored beside the deleted entries.
    pub fn with_probe(mut self, probe: impl Fn() -> u64 + Send + Sync + 'static) -> MemTable {
        self.probe = Some(Arc::new(probe));
        self
    }

    pub fn lock(&self) -> MutexGuard<'_, Record> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table for MemTable {
    fn probe(&mut self) -> Result<Features, Error> {
        Ok(Features {
            dump_filter: true,
            ..Features::default()
        })
    }

    fn dump(
        &mut self,
        filter: &Filter,
        each: &mut dyn FnMut(Entry) -> ControlFlow<()>,
    ) -> Result<DumpSummary, Error> {
        filter.validate().map_err(Error::Invalid)?;
        // The entries as they are when the dump starts; the callback may take a while.
        let selected: Vec<Entry> = {
            let mut r = self.lock();
            if filter.is_empty() {
                r.full_dumps += 1;
            } else {
                r.filtered_dumps += 1;
            }
            r.entries
                .iter()
                .filter(|e| filter.matches(e))
                .cloned()
                .collect()
        };
        let mut summary = DumpSummary {
            kernel_filtered: true,
            ..DumpSummary::default()
        };
        for e in selected {
            summary.entries += 1;
            if each(e).is_break() {
                break;
            }
        }
        Ok(summary)
    }

    fn delete_batch(&mut self, tuples: &[(Tuple, Option<u16>)]) -> Result<BatchReport, Error> {
        let seen = self.probe.as_ref().map_or(0, |p| p());
        let mut r = self.lock();
        let mut report = BatchReport::default();
        for (t, zone) in tuples {
            let at = r
                .entries
                .iter()
                .position(|e| e.orig == *t && e.zone.unwrap_or(0) == zone.unwrap_or(0));
            match at {
                Some(i) => {
                    let e = r.entries.swap_remove(i);
                    r.deleted.push((e, seen));
                    report.ok += 1;
                }
                None => report.not_found += 1,
            }
        }
        Ok(report)
    }

    fn stats(&mut self) -> Result<GlobalStats, Error> {
        Ok(GlobalStats {
            entries: self.lock().entries.len() as u32,
            max_entries: Some(262_144),
        })
    }
}
