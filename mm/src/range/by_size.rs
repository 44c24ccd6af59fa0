//! The holes ordered by (size, start): the best-fit index, `drm_mm`'s `holes_size` tree.

use std::collections::BTreeSet;

use super::Hole;

/// A set of disjoint [`Hole`]s ordered by size, then by start address, so that equal sizes go
/// to the lower address. Best fit walks it from the first hole at least as large as the
/// request; its last element answers, in O(log n), whether any hole is large enough at all.
#[derive(Debug, Clone, Default)]
pub(super) struct HolesBySize {
    /// (size, start) of every hole: the key is the whole record.
    set: BTreeSet<(u64, u64)>,
}

impl HolesBySize {
    /// Adds `hole` (overlapping no hole already here).
    pub(super) fn insert(&mut self, hole: Hole) {
        self.set.insert((hole.size(), hole.start()));
    }

    /// Removes `hole`; nothing happens if it is not here.
    pub(super) fn remove(&mut self, hole: Hole) {
        self.set.remove(&(hole.size(), hole.start()));
    }

    /// Size in bytes of the largest hole, 0 when there is none.
    pub(super) fn largest(&self) -> u64 {
        self.set.last().map_or(0, |&(size, _)| size)
    }

    /// The holes of at least `size` bytes, smallest first, equal sizes lowest address first.
    pub(super) fn at_least(&self, size: u64) -> impl Iterator<Item = Hole> + '_ {
        self.set
            .range((size, 0)..)
            .map(|&(size, start)| Hole::new(start, size))
    }
}
