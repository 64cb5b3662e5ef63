//! Shared names: one allocation per distinct namespace, Service, slice or port name, however
//! many places hold it; and [`Interner`], the same for other values (port lists).
//!
//! The live model holds each name in several places (the object's compact form, an
//! EndpointSlice's Service label, the map's [`ServiceName`](super::ServiceName) twice). As
//! separate `String`s that was about 20 small allocations per Service, which cost more than the
//! bytes themselves: each small allocation carries the allocator's header and rounding. A namespace is shared by all of its objects.
//!
//! Names no longer held anywhere but here are dropped in sweeps, each when the pool has doubled
//! since the last one, so a cluster whose names churn (slice names carry random suffixes) costs
//! amortized O(1) per name and the pool stays within twice the live names.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A shared, immutable name.
pub type Name = Arc<str>;

/// A pool of shared values: one allocation per distinct value, swept of what only it holds.
pub(crate) struct Interner<T: ?Sized + 'static> {
    pool: Mutex<Option<Pool<T>>>,
}

struct Pool<T: ?Sized> {
    items: HashSet<Arc<T>>,
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 4096;

impl<T: ?Sized + Hash + Eq> Interner<T>
where
    for<'a> Arc<T>: From<&'a T>,
{
    pub(crate) const fn new() -> Self {
        Interner {
            pool: Mutex::new(None),
        }
    }

    /// The shared copy of `v`.
    pub(crate) fn get(&self, v: &T) -> Arc<T> {
        let mut guard = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let pool = guard.get_or_insert_with(|| Pool {
            items: HashSet::new(),
            sweep_at: FIRST_SWEEP,
        });
        if let Some(n) = pool.items.get(v) {
            return n.clone();
        }
        let n = Arc::from(v);
        pool.items.insert(n.clone());
        if pool.items.len() >= pool.sweep_at {
            pool.items.retain(|n| Arc::strong_count(n) > 1);
            pool.items.shrink_to_fit();
            pool.sweep_at = (pool.items.len() * 2).max(FIRST_SWEEP);
        }
        n
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pool
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |p| p.items.len())
    }
}

static NAMES: Interner<str> = Interner::new();

/// The shared copy of `s`.
pub(crate) fn intern(s: &str) -> Name {
    NAMES.get(s)
}

/// [`intern`] of an owned string (the decoder's).
pub(crate) fn intern_owned(s: Option<String>) -> Option<Name> {
    s.as_deref().map(intern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_allocation_and_dead_ones_are_swept() {
        let a = intern("kube-system-test-intern");
        let b = intern(&String::from("kube-system-test-intern"));
        assert!(Arc::ptr_eq(&a, &b));
        // Names nobody holds go in a sweep: make many, drop them, and the pool stays small.
        for i in 0..3 * FIRST_SWEEP {
            drop(intern(&format!("churned-{i}")));
        }
        let held = NAMES.len();
        assert!(held < 2 * FIRST_SWEEP, "{held} names held");
        assert!(Arc::ptr_eq(&a, &intern("kube-system-test-intern")));
    }
}
