//! [`Few`]: a list that is almost always one element long, kept without an allocation then.
//!
//! A Service has one slice, a frontend one service port, a Service one port. At 100,000
//! Services each such list as a `Box<[T]>` or `Vec<T>` was 100,000 small allocations, with
//! the allocator's overhead on each (about 14 MiB of the agent's memory for three lists).

use std::ops::Deref;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Few<T> {
    One(T),
    /// None (empty, no allocation), or two and more.
    Many(Box<[T]>),
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few::Many(Box::default())
    }
}

impl<T> Deref for Few<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Few::One(t) => std::slice::from_ref(t),
            Few::Many(b) => b,
        }
    }
}

impl<'a, T> IntoIterator for &'a Few<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T> From<Vec<T>> for Few<T> {
    fn from(mut v: Vec<T>) -> Self {
        if v.len() == 1
            && let Some(t) = v.pop()
        {
            return Few::One(t);
        }
        Few::Many(v.into_boxed_slice())
    }
}

impl<T> Few<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Few::One(t) => vec![t],
            Few::Many(b) => b.into_vec(),
        }
    }

    pub fn push(&mut self, t: T) {
        if let Few::Many(b) = self
            && b.is_empty()
        {
            *self = Few::One(t);
            return;
        }
        let mut v = std::mem::take(self).into_vec();
        v.push(t);
        *self = Few::from(v);
    }

    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        let mut v = std::mem::take(self).into_vec();
        v.retain(keep);
        *self = Few::from(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_element_is_inline_and_the_list_behaves_as_a_slice() {
        let mut f: Few<u32> = Few::default();
        assert!(f.is_empty());
        f.push(7);
        assert!(matches!(f, Few::One(7)));
        f.push(8);
        f.push(9);
        assert_eq!(&f[..], &[7, 8, 9]);
        f.retain(|&x| x != 8);
        assert_eq!(&f[..], &[7, 9]);
        f.retain(|&x| x == 9);
        assert!(matches!(f, Few::One(9)));
        f.retain(|_| false);
        assert!(f.is_empty());
        assert_eq!(Few::from(vec![1u32]), Few::One(1));
        assert_eq!(&Few::from(vec![1u32, 2])[..], &[1, 2]);
        // No bigger than the box it replaces.
        assert_eq!(std::mem::size_of::<Few<u32>>(), 16);
    }
}
