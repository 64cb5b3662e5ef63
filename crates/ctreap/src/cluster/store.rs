//! [`Store`]: the model's Services or EndpointSlices by namespace and name, keyed by the names
//! the objects hold themselves, and (for slices) by the Service they are labelled for.
//!
//! The objects sit in a dense `Vec`, indexed by two `hashbrown::HashTable<u32>`s hashed on the
//! names the objects carry:
//! - a `HashMap<(namespace, name), object>` stores both names twice, in the key (32 bytes) and
//!   in the object;
//! - a hash table of the objects themselves keeps its empty buckets object-sized: at 100,000
//!   objects of 96 bytes, 131,072 buckets are 12 MiB where the objects are 9.2;
//! - a `HashMap<Service, slice names>` beside the slices (the index the model kept before) was
//!   56 bytes a bucket, 7 MiB at 100,000 Services; the group index here is 4.
//!
//! Removing an object moves the last one into its place (`swap_remove`), and its index
//! entries with it.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::intern::{Name, intern};

/// An object filed under its own namespace and name.
pub(crate) trait Named {
    /// `(namespace, name)`; only objects that have both are stored (`ClusterState::key_of`).
    fn names(&self) -> (&str, &str);

    /// The `(namespace, name)` of the group the object belongs to, if any: the Service an
    /// EndpointSlice is labelled for. [`Store::group`] finds a group's objects.
    fn group(&self) -> Option<(&str, &str)> {
        None
    }
}

pub(crate) struct Store<T> {
    items: Vec<T>,
    /// Index in `items`, hashed on the item's names.
    by_name: HashTable<u32>,
    /// Index in `items` of each item with a group, hashed on the group's names (so one hash
    /// holds all of a group's items).
    by_group: HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: Vec::new(),
            by_name: HashTable::new(),
            by_group: HashTable::new(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()
    }
}

/// An object's key: its names, interned.
pub(crate) fn key<T: Named>(t: &T) -> (Name, Name) {
    let (ns, name) = t.names();
    (intern(ns), intern(name))
}

fn hash_of(hasher: &std::hash::RandomState, (ns, name): (&str, &str)) -> u64 {
    hasher.hash_one((ns, name))
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 2^32 objects")
}

impl<T: Named> Store<T> {
    /// Room for `n` objects (a list's), filed under their names; the group index grows as
    /// groups come.
    pub fn with_capacity(n: usize) -> Self {
        Store {
            items: Vec::with_capacity(n),
            by_name: HashTable::with_capacity(n),
            by_group: HashTable::new(),
            hasher: std::hash::RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn find(&self, names: (&str, &str)) -> Option<u32> {
        let items = &self.items;
        self.by_name
            .find(hash_of(&self.hasher, names), |&i| {
                items[i as usize].names() == names
            })
            .copied()
    }

    pub fn get(&self, (ns, name): &(Name, Name)) -> Option<&T> {
        self.get_str(ns, name)
    }

    pub fn get_str(&self, ns: &str, name: &str) -> Option<&T> {
        self.find((ns, name)).map(|i| &self.items[i as usize])
    }

    /// The objects of group `(ns, name)`, in no particular order.
    pub fn group<'s>(&'s self, ns: &'s str, name: &'s str) -> impl Iterator<Item = &'s T> + 's {
        self.by_group
            .iter_hash(hash_of(&self.hasher, (ns, name)))
            .map(|&i| &self.items[i as usize])
            .filter(move |t| t.group() == Some((ns, name)))
    }

    /// The group of every object that has one, in no particular order: a group appears once
    /// per object in it.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &str)> {
        self.items.iter().filter_map(Named::group)
    }

    /// Files `t` under its own names, replacing (and returning) what was there.
    pub fn insert(&mut self, t: T) -> Option<T> {
        let old = self.remove_str(t.names());
        if self.items.len() == self.items.capacity() {
            // An eighth more, not double: a store listed at its size grows by little.
            self.items.reserve_exact((self.items.len() / 8).max(4));
        }
        self.items.push(t);
        self.file(index(self.items.len() - 1));
        old
    }

    pub fn remove(&mut self, (ns, name): &(Name, Name)) -> Option<T> {
        self.remove_str((ns, name))
    }

    fn remove_str(&mut self, names: (&str, &str)) -> Option<T> {
        let i = self.find(names)?;
        self.unfile(i);
        let last = index(self.items.len() - 1);
        if i != last {
            // The last object moves to `i`: its index entries follow.
            self.unfile(last);
            self.items.swap(i as usize, last as usize);
            self.file(i);
        }
        self.items.pop()
    }

    /// Takes index `i` out of both tables.
    fn unfile(&mut self, i: u32) {
        let t = &self.items[i as usize];
        if let Ok(e) = self
            .by_name
            .find_entry(hash_of(&self.hasher, t.names()), |&j| j == i)
        {
            e.remove();
        }
        if let Some(g) = t.group()
            && let Ok(e) = self
                .by_group
                .find_entry(hash_of(&self.hasher, g), |&j| j == i)
        {
            e.remove();
        }
    }

    /// Files index `i` in both tables.
    fn file(&mut self, i: u32) {
        let hasher = &self.hasher;
        let items = &self.items;
        let t = &items[i as usize];
        self.by_name
            .insert_unique(hash_of(hasher, t.names()), i, |&j| {
                hash_of(hasher, items[j as usize].names())
            });
        if let Some(g) = t.group() {
            self.by_group.insert_unique(hash_of(hasher, g), i, |&j| {
                hash_of(hasher, group_of(&items[j as usize]))
            });
        }
    }

    /// Every object, in no particular order. Its key is [`key`] of it: built only for the
    /// objects a caller keeps, since interning takes the name table's lock.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
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

/// The group of an object filed in the group index.
fn group_of<T: Named>(t: &T) -> (&str, &str) {
    t.group()
        .expect("only objects with a group are in the group index")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Obj(&'static str, &'static str, u32, Option<&'static str>);

    impl Named for Obj {
        fn names(&self) -> (&str, &str) {
            (self.0, self.1)
        }

        fn group(&self) -> Option<(&str, &str)> {
            self.3.map(|g| (self.0, g))
        }
    }

    fn group(s: &Store<Obj>, ns: &str, name: &str) -> Vec<u32> {
        let mut v: Vec<u32> = s.group(ns, name).map(|o| o.2).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn files_objects_under_their_own_names_and_their_group() {
        let mut s = Store::default();
        assert_eq!(s.insert(Obj("a", "x", 1, Some("svc"))), None);
        assert_eq!(s.insert(Obj("b", "x", 2, None)), None);
        assert_eq!(s.insert(Obj("a", "y", 4, Some("svc"))), None);
        assert_eq!(
            s.insert(Obj("a", "x", 3, Some("svc"))),
            Some(Obj("a", "x", 1, Some("svc")))
        );
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.get(&(intern("a"), intern("x"))),
            Some(&Obj("a", "x", 3, Some("svc")))
        );
        assert_eq!(s.get_str("b", "x"), Some(&Obj("b", "x", 2, None)));
        assert_eq!(s.get_str("a", "z"), None);
        assert_eq!(group(&s, "a", "svc"), vec![3, 4]);
        assert_eq!(group(&s, "b", "svc"), Vec::<u32>::new());
        assert_eq!(s.groups().collect::<Vec<_>>(), vec![("a", "svc"); 2]);
        assert_eq!(
            s.remove(&(intern("b"), intern("x"))),
            Some(Obj("b", "x", 2, None))
        );
        assert_eq!(s.remove(&(intern("b"), intern("x"))), None);
        // Moved into another group.
        s.insert(Obj("a", "y", 5, Some("other")));
        assert_eq!(group(&s, "a", "svc"), vec![3]);
        assert_eq!(group(&s, "a", "other"), vec![5]);
        let mut keys: Vec<_> = s.values().map(key).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![(intern("a"), intern("x")), (intern("a"), intern("y"))]
        );
        assert!(s.holds(&Obj("a", "x", 3, Some("svc"))));
        assert!(!s.holds(&Obj("a", "x", 1, Some("svc"))));
        assert!(!s.holds(&Obj("b", "x", 2, None)));
    }

    const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
    const GROUPS: [Option<&str>; 4] = [None, Some("g"), Some("h"), Some("i")];

    /// (insert?, namespace, name, group, value)
    fn ops() -> impl Strategy<Value = Vec<(bool, usize, usize, usize, u32)>> {
        prop::collection::vec(
            (any::<bool>(), 0..2usize, 0..6usize, 0..4usize, any::<u32>()),
            0..200,
        )
    }

    proptest! {
        /// Any run of inserts and removes leaves the store answering exactly as a plain map of
        /// (namespace, name) -> object does, for names, groups and the object count.
        #[test]
        fn answers_as_a_map_does(ops in ops()) {
            let mut s = Store::default();
            let mut model = std::collections::BTreeMap::new();
            for (insert, ns, name, g, v) in ops {
                let (ns, name) = (NAMES[ns], NAMES[name]);
                if insert {
                    let o = Obj(ns, name, v, GROUPS[g]);
                    prop_assert_eq!(s.insert(o.clone()), model.insert((ns, name), o));
                } else {
                    prop_assert_eq!(
                        s.remove(&(intern(ns), intern(name))),
                        model.remove(&(ns, name))
                    );
                }
                prop_assert_eq!(s.len(), model.len());
            }
            for ns in &NAMES[..2] {
                for name in NAMES {
                    prop_assert_eq!(s.get_str(ns, name), model.get(&(*ns, name)));
                }
                for g in GROUPS.iter().flatten() {
                    let mut want: Vec<u32> = model
                        .values()
                        .filter(|o| o.0 == *ns && o.3 == Some(*g))
                        .map(|o| o.2)
                        .collect();
                    want.sort_unstable();
                    prop_assert_eq!(group(&s, ns, g), want);
                }
            }
            let mut groups: Vec<_> = s.groups().collect();
            groups.sort();
            groups.dedup();
            let mut want: Vec<_> = model.values().filter_map(Named::group).collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(groups, want);
        }
    }
}
