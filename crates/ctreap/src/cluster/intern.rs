//! Shared names: one allocation per distinct namespace, Service, slice or port name, however
//! many places hold it.
//!
//! The live model holds each name in several places (the object's compact form, the keys of
//! the stores and of the slices-by-Service index, the map's [`ServiceName`](super::ServiceName)
//! twice). As separate `String`s that was about 20 small allocations per Service, which cost
//! more than the bytes themselves: each small allocation carries the allocator's header and
//! rounding. A namespace is shared by all of its objects.
//!
//! Names no longer held anywhere but here are dropped in sweeps, each when the pool has doubled
//! since the last one, so a cluster whose names churn (slice names carry random suffixes) costs
//! amortized O(1) per name and the pool stays within twice the live names.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A shared, immutable name.
pub type Name = Arc<str>;

struct Pool {
    names: HashSet<Name>,
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 4096;

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// The shared copy of `s`.
pub(crate) fn intern(s: &str) -> Name {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool {
        names: HashSet::new(),
        sweep_at: FIRST_SWEEP,
    });
    if let Some(n) = pool.names.get(s) {
        return n.clone();
    }
    let n: Name = Arc::from(s);
    pool.names.insert(n.clone());
    if pool.names.len() >= pool.sweep_at {
        pool.names.retain(|n| Arc::strong_count(n) > 1);
        pool.names.shrink_to_fit();
        pool.sweep_at = (pool.names.len() * 2).max(FIRST_SWEEP);
    }
    n
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
        let held = POOL.lock().unwrap().as_ref().map_or(0, |p| p.names.len());
        assert!(held < 2 * FIRST_SWEEP, "{held} names held");
        assert!(Arc::ptr_eq(&a, &intern("kube-system-test-intern")));
    }
}
