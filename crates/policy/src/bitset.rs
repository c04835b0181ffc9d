//! A fixed-size set of pod indices: the matrix works on sets of pods, not on pairs.

/// A set of indices below a fixed bound.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodSet {
    words: Vec<u64>,
}

impl PodSet {
    /// The empty set over `n` pods.
    pub fn empty(n: usize) -> Self {
        PodSet { words: vec![0; n.div_ceil(64)] }
    }

    /// The set of all `n` pods.
    pub fn full(n: usize) -> Self {
        let mut s = PodSet { words: vec![u64::MAX; n.div_ceil(64)] };
        if !n.is_multiple_of(64)
            && let Some(last) = s.words.last_mut()
        {
            *last = (1u64 << (n % 64)) - 1;
        }
        s
    }

    /// Adds `i`.
    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    /// Removes `i`.
    pub fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    /// Whether `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// `self |= other`
    pub fn union_with(&mut self, other: &PodSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// `self &= other`
    pub fn intersect_with(&mut self, other: &PodSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    /// Whether no index is in the set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The indices, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + bit)
            })
        })
    }

    /// How many indices are in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sets_stop_at_the_bound() {
        let s = PodSet::full(70);
        assert_eq!(s.len(), 70);
        assert!(s.contains(69));
        assert_eq!(PodSet::full(64).len(), 64);
        assert_eq!(PodSet::full(0).len(), 0);
    }

    #[test]
    fn set_operations() {
        let mut a = PodSet::empty(130);
        a.insert(1);
        a.insert(129);
        let mut b = PodSet::empty(130);
        b.insert(129);
        b.insert(64);
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(u.iter().collect::<Vec<_>>(), [1, 64, 129]);
        a.intersect_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), [129]);
        assert!(!a.is_empty());
        assert!(PodSet::empty(3).is_empty());
    }
}
