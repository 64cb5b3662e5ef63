//! [`Store`]: the model's Services or EndpointSlices by namespace and name, keyed by the names
//! the objects hold themselves.
//!
//! A `HashMap<(namespace, name), object>` stores both names twice: in the key (32 bytes) and
//! in the object. With 100,000 Services and 100,000 slices that is 8 MiB of the agent's
//! memory for nothing (131,072 buckets per table). A `hashbrown::HashTable` of the objects
//! alone, hashed on the names they carry, has the same lookups without the copy.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::intern::{Name, intern};

/// An object filed under its own namespace and name.
pub(crate) trait Named {
    /// `(namespace, name)`; only objects that have both are stored (`ClusterState::key_of`).
    fn names(&self) -> (&str, &str);
}

pub(crate) struct Store<T> {
    table: HashTable<T>,
    hasher: std::hash::RandomState,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            table: HashTable::new(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.table.iter()).finish()
    }
}

/// An object's key: its names, interned.
pub(crate) fn key<T: Named>(t: &T) -> (Name, Name) {
    let (ns, name) = t.names();
    (intern(ns), intern(name))
}

impl<T: Named> Store<T> {
    pub fn with_capacity(n: usize) -> Self {
        Store {
            table: HashTable::with_capacity(n),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn hash(&self, ns: &str, name: &str) -> u64 {
        self.hasher.hash_one((ns, name))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn get(&self, (ns, name): &(Name, Name)) -> Option<&T> {
        self.get_str(ns, name)
    }

    pub fn get_str(&self, ns: &str, name: &str) -> Option<&T> {
        self.table
            .find(self.hash(ns, name), |t| t.names() == (ns, name))
    }

    /// Files `t` under its own names, replacing (and returning) what was there.
    pub fn insert(&mut self, t: T) -> Option<T> {
        let (ns, name) = t.names();
        let hash = self.hash(ns, name);
        let hasher = &self.hasher;
        let rehash = |t: &T| {
            let (ns, name) = t.names();
            hasher.hash_one((ns, name))
        };
        match self.table.entry(hash, |o| o.names() == t.names(), rehash) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(o.get_mut(), t))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(t);
                None
            }
        }
    }

    pub fn remove(&mut self, (ns, name): &(Name, Name)) -> Option<T> {
        let hash = self.hash(ns, name);
        match self
            .table
            .find_entry(hash, |t| t.names() == (&**ns, &**name))
        {
            Ok(o) => Some(o.remove().0),
            Err(_) => None,
        }
    }

    /// Every object, in no particular order. Its key is [`key`] of it: built only for the
    /// objects a caller keeps, since interning takes the name table's lock.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.table.iter()
    }

    /// Whether an object with `t`'s names is stored and equal to it.
    pub fn holds(&self, t: &T) -> bool
    where
        T: PartialEq,
    {
        let (ns, name) = t.names();
        self.get_str(ns, name) == Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Obj(&'static str, &'static str, u32);

    impl Named for Obj {
        fn names(&self) -> (&str, &str) {
            (self.0, self.1)
        }
    }

    #[test]
    fn files_objects_under_their_own_names() {
        let mut s = Store::default();
        assert_eq!(s.insert(Obj("a", "x", 1)), None);
        assert_eq!(s.insert(Obj("b", "x", 2)), None);
        assert_eq!(s.insert(Obj("a", "x", 3)), Some(Obj("a", "x", 1)));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(&(intern("a"), intern("x"))), Some(&Obj("a", "x", 3)));
        assert_eq!(s.get_str("b", "x"), Some(&Obj("b", "x", 2)));
        assert_eq!(s.get_str("a", "y"), None);
        assert_eq!(
            s.remove(&(intern("b"), intern("x"))),
            Some(Obj("b", "x", 2))
        );
        assert_eq!(s.remove(&(intern("b"), intern("x"))), None);
        let keys: Vec<_> = s.values().map(key).collect();
        assert_eq!(keys, vec![(intern("a"), intern("x"))]);
        assert!(s.holds(&Obj("a", "x", 3)));
        assert!(!s.holds(&Obj("a", "x", 1)));
        assert!(!s.holds(&Obj("b", "x", 2)));
    }
}
