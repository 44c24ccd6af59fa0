//! The hole: the one record of a free gap, shared by the allocator's three hole indices (by
//! address, by (size, start), the augmented treap) and handed out by
//! [`RangeAllocator::holes`](super::RangeAllocator::holes).

/// A maximal free gap of the span: between two nodes, or between a node and an edge of the
/// span. Sizes in bytes, never 0.
///
/// This is the raw gap; the part usable by an allocation is smaller by the guard gap on each
/// side that borders a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hole {
    start: u64,
    size: u64,
}

impl Hole {
    /// The hole of `size` bytes from `start` (`size > 0`, `start + size` within the span).
    pub(super) fn new(start: u64, size: u64) -> Self {
        debug_assert!(size > 0 && start.checked_add(size).is_some());
        Self { start, size }
    }

    /// The free gap `[start, end)` (bytes, `end` exclusive) as a hole; `None` when it is empty,
    /// as the gap between two touching nodes is: an empty gap is not a hole.
    pub(super) fn between(start: u64, end: u64) -> Option<Self> {
        (start < end).then(|| Self::new(start, end - start))
    }

    /// First free address (bytes).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Length of the gap in bytes (never 0).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// One past the last free address (bytes).
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}
