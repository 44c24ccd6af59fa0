//! A hole: a maximal free gap of the span.

/// A maximal free gap of the span: between two nodes, or between a node and an edge of the
/// span. Sizes in bytes, never 0.
///
/// This is the raw gap; the part usable by an allocation is smaller by the guard gap on each
/// side that borders a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hole {
    pub(super) start: u64,
    pub(super) size: u64,
}

impl Hole {
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
