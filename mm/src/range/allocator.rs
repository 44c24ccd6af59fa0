//! The allocator: placement modes, allocated nodes, and [`RangeAllocator`] itself.

use std::collections::BTreeMap;

use super::by_size::HolesBySize;
use super::treap::HoleTreap;
use super::{Hole, RangeError};

/// Where in the free space an allocation is placed.
///
/// Follows `enum drm_mm_insert_mode` (include/drm/drm_mm.h). In every mode the node starts at a
/// multiple of the requested alignment and respects the allocator's guard gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocMode {
    /// The smallest hole that can hold the request, the node at the lowest fitting address in
    /// it (`DRM_MM_INSERT_BEST`). Holes are compared by their whole size (the free gap between
    /// their neighbours), as in `drm_mm`'s size-ordered hole tree; equal sizes go to the hole at
    /// the lower address. Keeps large holes whole for large buffers.
    BestFit,
    /// The lowest address at which the request fits (`DRM_MM_INSERT_LOW`).
    Lowest,
    /// The highest address at which the request fits: the node sits at the top of the highest
    /// fitting hole, its start rounded down to the alignment (`DRM_MM_INSERT_HIGH`). Used to keep
    /// long-lived kernel-side mappings away from the bottom of the space.
    Highest,
}

/// An allocated range of the span: `size` bytes from `start` (bytes, `start + size <= span end`).
///
/// Created only by [`RangeAllocator`]; a copy of its bookkeeping, not a handle that frees on
/// drop (free with [`RangeAllocator::free`] and [`RangeNode::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeNode {
    start: u64,
    size: u64,
}

impl RangeNode {
    /// First address of the node (bytes).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Length of the node in bytes (never 0).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// One past the last address of the node (bytes); never wraps, as the node lies inside the
    /// allocator's span.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Allocator of ranges inside one span `[span_start, span_end)` of an IOVA space (a device VM's
/// or a system IOMMU domain's).
///
/// Addresses and sizes are bytes. The span end is exclusive, so the last byte of the u64 space
/// (`u64::MAX`) cannot be handed out; spans such as `[0x1000, 1 << 32)` (a 32-bit IPU MMU) or
/// `[0, 1 << 48)` are the usual cases. All arithmetic is checked: requests near `u64::MAX`, huge
/// sizes, alignments or guards end in [`RangeError`]s, never in a wrap or a panic.
///
/// # Guard gaps
/// With a non-zero `guard` (bytes), any two nodes are separated by at least `guard` free bytes;
/// [`alloc`](Self::alloc) places nodes accordingly and [`reserve`](Self::reserve) refuses a
/// range that would come closer. No gap is kept between a node and an edge of the span. A guard
/// catches a device running off the end of a buffer as a fault instead of a write into the
/// next buffer.
///
/// # Complexity (n = number of nodes)
/// [`reserve`](Self::reserve), [`free`](Self::free) and lookups are O(log n) (the part spent
/// in the hole treap below is O(log n) in expectation). An allocation costs O(log n) per
/// candidate hole it looks at; a candidate is a hole at least as large as the request, and one
/// is rejected only when alignment, guard padding or the restriction range leave too little of
/// it usable:
/// - `BestFit` looks at holes in (size, address) order from the first one at least as large as
///   the request.
/// - `Lowest` / `Highest` search a treap (a randomised balanced search tree) of holes keyed by
///   address in which every node also knows the largest hole in its subtree, as `drm_mm`
///   augments its rbtree of holes with `subtree_max_hole`. A subtree whose holes are all too
///   small is skipped whole, so finding the lowest (highest) hole that is large enough costs
///   O(log n) however many small holes lie before (after) it.
///
/// Usually the first candidate fits. But the tree knows hole sizes, not alignment (nor does
/// `drm_mm`'s): a large alignment or guard can make many large-enough holes unusable, and each
/// one rejected costs another O(log n) step, so such requests can still visit O(n) holes.
///
/// When even the largest hole is smaller than the request, every mode fails in O(log n).
///
/// # Example
/// ```
/// use devmmu_mm::range::{AllocMode, RangeAllocator};
///
/// // A 32-bit device VA space that keeps page 0 unmapped to catch NULL IOVAs.
/// let mut va = RangeAllocator::with_guard(0x1000, 1 << 32, 0x1000)?;
/// let a = va.alloc(0x10_000, 0x10_000, AllocMode::BestFit)?;
/// assert_eq!(a.start(), 0x10_000);
/// let b = va.alloc(0x2000, 0, AllocMode::Lowest)?;
/// assert_eq!(b.start(), 0x1000);
/// assert_eq!(va.used_bytes(), 0x12_000);
/// assert_eq!(va.free(a.start())?, 0x10_000);
/// # Ok::<(), devmmu_mm::range::RangeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    start: u64,
    end: u64,
    guard: u64,
    /// Allocated nodes: start -> size. Every node lies inside `[start, end)`, so
    /// `start + size` of a node never wraps; the same holds for holes.
    nodes: BTreeMap<u64, u64>,
    /// Holes by address: start -> size. Together with `nodes` they tile the span.
    holes: BTreeMap<u64, u64>,
    /// The same holes by (size, start), for best-fit.
    holes_by_size: HolesBySize,
    /// The same holes by address, augmented with subtree maxima, for lowest / highest.
    hole_treap: HoleTreap,
    used: u64,
}

impl RangeAllocator {
    /// An allocator of `[start, end)` (bytes, `end` exclusive) with no guard gap, all free.
    ///
    /// # Errors
    /// [`RangeError::EmptySpan`] if `start >= end`.
    pub fn new(start: u64, end: u64) -> Result<Self, RangeError> {
        Self::with_guard(start, end, 0)
    }

    /// An allocator of `[start, end)` (bytes, `end` exclusive) that keeps at least `guard`
    /// free bytes between any two nodes (see the type's docs); all free.
    ///
    /// # Errors
    /// [`RangeError::EmptySpan`] if `start >= end`.
    pub fn with_guard(start: u64, end: u64, guard: u64) -> Result<Self, RangeError> {
        if start >= end {
            return Err(RangeError::EmptySpan { start, end });
        }
        let mut this = Self {
            start,
            end,
            guard,
            nodes: BTreeMap::new(),
            holes: BTreeMap::new(),
            holes_by_size: HolesBySize::default(),
            hole_treap: HoleTreap::new(),
            used: 0,
        };
        this.add_hole(Hole::new(start, end - start));
        Ok(this)
    }

    /// First address of the span (bytes).
    pub fn span_start(&self) -> u64 {
        self.start
    }

    /// End (exclusive) of the span (bytes).
    pub fn span_end(&self) -> u64 {
        self.end
    }

    /// The guard gap kept between nodes, in bytes (0: none).
    pub fn guard(&self) -> u64 {
        self.guard
    }

    /// Allocates `size` bytes anywhere in the span, starting at a multiple of `align` bytes,
    /// placed per `mode`. `align` 0 or 1 means no alignment; any other value is allowed, power
    /// of two or not (it may exceed the span: such a request fits only where a multiple of it
    /// lies inside).
    ///
    /// Same as [`alloc_in_range`](Self::alloc_in_range) over the whole span.
    ///
    /// # Errors
    /// [`RangeError::ZeroSize`] and [`RangeError::NoSpace`]
    /// (with the span as the range) when no hole can hold the request.
    pub fn alloc(
        &mut self,
        size: u64,
        align: u64,
        mode: AllocMode,
    ) -> Result<RangeNode, RangeError> {
        self.alloc_in_range(size, align, mode, self.start, self.end)
    }

    /// Allocates `size` bytes, starting at a multiple of `align` bytes, entirely inside
    /// `[range_start, range_end)` (bytes, end exclusive), placed per `mode`
    /// (`drm_mm_insert_node_in_range`). The restriction is intersected with the span, so parts
    /// of it outside the span are ignored. `align` 0 or 1 means no alignment; any other value
    /// is allowed.
    ///
    /// # Errors
    /// Checked in this order:
    /// - [`RangeError::ZeroSize`] if `size == 0`;
    /// - [`RangeError::EmptyRange`] if `range_start >= range_end`;
    /// - [`RangeError::NoSpace`] if no placement satisfies size, alignment, restriction and
    ///   guard gaps (including a restriction that misses the span).
    pub fn alloc_in_range(
        &mut self,
        size: u64,
        align: u64,
        mode: AllocMode,
        range_start: u64,
        range_end: u64,
    ) -> Result<RangeNode, RangeError> {
        if size == 0 {
            return Err(RangeError::ZeroSize);
        }
        let unit = align.max(1);
        if range_start >= range_end {
            return Err(RangeError::EmptyRange {
                range_start,
                range_end,
            });
        }
        let no_space = RangeError::NoSpace {
            size,
            align,
            range_start,
            range_end,
        };
        let lo = range_start.max(self.start);
        let hi = range_end.min(self.end);
        if lo >= hi || hi - lo < size {
            return Err(no_space);
        }
        if self.holes_by_size.largest() < size {
            return Err(no_space);
        }

        let place = |hole: Hole| {
            self.place(hole, size, unit, mode, lo, hi)
                .map(|start| (hole, start))
        };
        let found = match mode {
            AllocMode::BestFit => self.holes_by_size.at_least(size).find_map(place),
            AllocMode::Lowest => {
                // The hole holding `lo`, if any, may start below it.
                let mut key = self
                    .holes
                    .range(..=lo)
                    .next_back()
                    .map_or(lo, |(&hs, _)| hs);
                loop {
                    match self.hole_treap.first_fit_from(key, size) {
                        Some(hole) if hole.start() < hi => match place(hole) {
                            Some(found) => break Some(found),
                            // `hole.start() < hi <= u64::MAX`: no wrap.
                            None => key = hole.start() + 1,
                        },
                        _ => break None,
                    }
                }
            }
            AllocMode::Highest => {
                let mut key = hi;
                loop {
                    match self.hole_treap.last_fit_before(key, size) {
                        Some(hole) if hole.end() > lo => match place(hole) {
                            Some(found) => break Some(found),
                            None => key = hole.start(),
                        },
                        _ => break None,
                    }
                }
            }
        };
        let (hole, start) = found.ok_or(no_space)?;
        self.take_from_hole(hole, start, size);
        Ok(RangeNode { start, size })
    }

    /// Claims exactly `[start, start + size)` (bytes), e.g. a firmware-owned window or an IOVA
    /// chosen by user space (`drm_mm_reserve_node`).
    ///
    /// # Errors
    /// Checked in this order:
    /// - [`RangeError::ZeroSize`] if `size == 0`;
    /// - [`RangeError::OutOfSpan`] if the range is not inside the span or `start + size`
    ///   overflows;
    /// - [`RangeError::Overlap`] with the lowest node the range overlaps;
    /// - [`RangeError::GuardViolation`] if a neighbouring node is closer than the guard gap
    ///   (the lower neighbour first).
    pub fn reserve(&mut self, start: u64, size: u64) -> Result<RangeNode, RangeError> {
        if size == 0 {
            return Err(RangeError::ZeroSize);
        }
        let end = start
            .checked_add(size)
            .filter(|&end| start >= self.start && end <= self.end)
            .ok_or(RangeError::OutOfSpan {
                start,
                size,
                span_start: self.start,
                span_end: self.end,
            })?;
        if let Some(existing) = self.lowest_overlap(start, end) {
            return Err(RangeError::Overlap {
                start,
                size,
                existing_start: existing.start,
                existing_size: existing.size,
            });
        }
        // No overlap: the lower neighbour ends at or below `start`, the upper one starts at or
        // above `end`, so these subtractions cannot wrap.
        let prev = self
            .nodes
            .range(..start)
            .next_back()
            .map(|(&s, &z)| RangeNode { start: s, size: z });
        let next = self
            .nodes
            .range(end..)
            .next()
            .map(|(&s, &z)| RangeNode { start: s, size: z });
        let too_close = |n: RangeNode| RangeError::GuardViolation {
            start,
            size,
            neighbour_start: n.start,
            neighbour_size: n.size,
            guard: self.guard,
        };
        if let Some(p) = prev.filter(|p| start - p.end() < self.guard) {
            return Err(too_close(p));
        }
        if let Some(n) = next.filter(|n| n.start - end < self.guard) {
            return Err(too_close(n));
        }
        // Free and inside the span, `[start, end)` lies in the hole between the neighbours.
        let hs = prev.map_or(self.start, |p| p.end());
        let he = next.map_or(self.end, |n| n.start);
        self.take_from_hole(Hole::new(hs, he - hs), start, size);
        Ok(RangeNode { start, size })
    }

    /// Frees the node that starts at `start` (bytes) and returns its size in bytes; its range
    /// merges with the free space on either side (`drm_mm_remove_node`).
    ///
    /// # Errors
    /// [`RangeError::NotAllocated`] if no node starts at `start` (including an address inside a
    /// node other than its start).
    pub fn free(&mut self, start: u64) -> Result<u64, RangeError> {
        let size = self
            .nodes
            .remove(&start)
            .ok_or(RangeError::NotAllocated { start })?;
        let end = start + size;
        let hs = self
            .nodes
            .range(..start)
            .next_back()
            .map_or(self.start, |(&s, &z)| s + z);
        let he = self.nodes.range(end..).next().map_or(self.end, |(&s, _)| s);
        // The holes below and above the node, if any, and the node become one hole.
        if let Some(below) = Hole::between(hs, start) {
            self.remove_hole(below);
        }
        if let Some(above) = Hole::between(end, he) {
            self.remove_hole(above);
        }
        self.add_hole(Hole::new(hs, he - hs));
        self.used -= size;
        Ok(size)
    }

    /// The node starting exactly at `start`, if any.
    pub fn node_at(&self, start: u64) -> Option<RangeNode> {
        self.nodes
            .get(&start)
            .map(|&size| RangeNode { start, size })
    }

    /// The node whose range contains `addr` (bytes), if any: what a device-fault handler asks.
    pub fn node_containing(&self, addr: u64) -> Option<RangeNode> {
        self.nodes
            .range(..=addr)
            .next_back()
            .map(|(&start, &size)| RangeNode { start, size })
            .filter(|n| addr < n.end())
    }

    /// Allocated nodes in ascending address order.
    pub fn nodes(&self) -> impl DoubleEndedIterator<Item = RangeNode> + '_ {
        self.nodes
            .iter()
            .map(|(&start, &size)| RangeNode { start, size })
    }

    /// Holes (maximal free gaps, see [`Hole`]) in ascending address order.
    pub fn holes(&self) -> impl DoubleEndedIterator<Item = Hole> + '_ {
        self.holes
            .iter()
            .map(|(&start, &size)| Hole::new(start, size))
    }

    /// Number of allocated nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is allocated (`drm_mm_clean`).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sum of the sizes of all nodes, in bytes.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Bytes of the span not in any node (guard gaps included), in bytes.
    pub fn free_bytes(&self) -> u64 {
        (self.end - self.start) - self.used
    }

    /// Where in `hole` a request fits, inside `[lo, hi)`, per `mode`; `None` if it does not.
    /// `align` >= 1, any value.
    fn place(
        &self,
        hole: Hole,
        size: u64,
        align: u64,
        mode: AllocMode,
        lo: u64,
        hi: u64,
    ) -> Option<u64> {
        // The guard applies only on sides that border a node; a hole touching a span edge has
        // no node there, since nodes are never empty.
        let (hs, he) = (hole.start(), hole.end());
        let usable_lo = if hs == self.start {
            hs
        } else {
            hs.checked_add(self.guard)?
        };
        let usable_hi = if he == self.end {
            he
        } else {
            he.checked_sub(self.guard)?
        };
        let lo = usable_lo.max(lo);
        let hi = usable_hi.min(hi);
        match mode {
            AllocMode::Highest => {
                let top = hi.checked_sub(size)?;
                let start = top - top % align;
                (start >= lo).then_some(start)
            }
            AllocMode::BestFit | AllocMode::Lowest => {
                let start = match lo % align {
                    0 => lo,
                    r => lo.checked_add(align - r)?,
                };
                let end = start.checked_add(size)?;
                (end <= hi).then_some(start)
            }
        }
    }

    /// Turns `[start, start + size)` of `hole` into a node; the leftovers on either side stay
    /// holes.
    fn take_from_hole(&mut self, hole: Hole, start: u64, size: u64) {
        let end = start + size;
        self.remove_hole(hole);
        if let Some(below) = Hole::between(hole.start(), start) {
            self.add_hole(below);
        }
        if let Some(above) = Hole::between(end, hole.end()) {
            self.add_hole(above);
        }
        self.nodes.insert(start, size);
        self.used += size;
    }

    /// Records `hole` in all three hole indices.
    fn add_hole(&mut self, hole: Hole) {
        self.holes.insert(hole.start(), hole.size());
        self.holes_by_size.insert(hole);
        self.hole_treap.insert(hole);
    }

    /// Forgets `hole` in all three hole indices.
    fn remove_hole(&mut self, hole: Hole) {
        self.holes.remove(&hole.start());
        self.holes_by_size.remove(hole);
        self.hole_treap.remove(hole.start());
    }

    /// The lowest node overlapping `[start, end)`.
    fn lowest_overlap(&self, start: u64, end: u64) -> Option<RangeNode> {
        self.node_containing(start).or_else(|| {
            self.nodes
                .range(start..end)
                .next()
                .map(|(&start, &size)| RangeNode { start, size })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 0x1000;

    fn nodes(va: &RangeAllocator) -> Vec<(u64, u64)> {
        va.nodes().map(|n| (n.start(), n.size())).collect()
    }

    fn holes(va: &RangeAllocator) -> Vec<(u64, u64)> {
        va.holes().map(|h| (h.start(), h.size())).collect()
    }

    /// Span [0, 0x10000) with nodes leaving holes of 1, 2, 1 and 9 pages at 0, 0x2000, 0x5000,
    /// 0x7000.
    fn fragmented() -> RangeAllocator {
        let mut va = RangeAllocator::new(0, 0x10_000).unwrap();
        va.reserve(0x1000, PAGE).unwrap();
        va.reserve(0x4000, PAGE).unwrap();
        va.reserve(0x6000, PAGE).unwrap();
        assert_eq!(
            holes(&va),
            [
                (0, 0x1000),
                (0x2000, 0x2000),
                (0x5000, 0x1000),
                (0x7000, 0x9000)
            ]
        );
        va
    }

    #[test]
    fn new_rejects_empty_span() {
        assert_eq!(
            RangeAllocator::new(0x2000, 0x2000).unwrap_err(),
            RangeError::EmptySpan {
                start: 0x2000,
                end: 0x2000
            }
        );
        assert_eq!(
            RangeAllocator::new(5, 1).unwrap_err(),
            RangeError::EmptySpan { start: 5, end: 1 }
        );
        let va = RangeAllocator::new(0x1000, 1 << 32).unwrap();
        assert_eq!(holes(&va), [(0x1000, (1 << 32) - 0x1000)]);
        assert!(va.is_empty());
        assert_eq!(va.free_bytes(), (1 << 32) - 0x1000);
    }

    #[test]
    fn best_fit_takes_smallest_hole_lowest_first() {
        let mut va = fragmented();
        assert_eq!(va.alloc(PAGE, 0, AllocMode::BestFit).unwrap().start(), 0);
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::BestFit).unwrap().start(),
            0x5000
        );
        // The 2-page hole now is the smallest that holds one page.
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::BestFit).unwrap().start(),
            0x2000
        );
        assert_eq!(
            va.alloc(0x1800, 0, AllocMode::BestFit).unwrap().start(),
            0x7000
        );
    }

    #[test]
    fn best_fit_moves_on_when_alignment_does_not_fit_the_smallest_hole() {
        let mut va = fragmented();
        // The 2-page hole [0x2000, 0x4000) cannot hold 2 pages at 0x4000 alignment (0x4000 is
        // its end); the next larger hole can.
        let n = va.alloc(0x2000, 0x4000, AllocMode::BestFit).unwrap();
        assert_eq!((n.start(), n.size()), (0x8000, 0x2000));
        // 1 page at 0x2000 alignment: the 1-page holes at 0 (fits) and 0x5000 (does not).
        assert_eq!(
            va.alloc(PAGE, 0x2000, AllocMode::BestFit).unwrap().start(),
            0
        );
        assert_eq!(
            va.alloc(PAGE, 0x2000, AllocMode::BestFit).unwrap().start(),
            0x2000
        );
    }

    #[test]
    fn lowest_takes_lowest_address_even_in_a_big_hole() {
        let mut va = fragmented();
        assert_eq!(
            va.alloc(0x2000, 0, AllocMode::Lowest).unwrap().start(),
            0x2000
        );
        assert_eq!(
            va.alloc(0x1800, 0, AllocMode::Lowest).unwrap().start(),
            0x7000
        );
        assert_eq!(va.alloc(0x800, 0, AllocMode::Lowest).unwrap().start(), 0);
        assert_eq!(
            va.alloc(0x800, 0x1000, AllocMode::Lowest).unwrap().start(),
            0x5000
        );
    }

    #[test]
    fn highest_places_at_top_of_hole_rounded_down() {
        let mut va = RangeAllocator::new(0, 0x10_0000).unwrap();
        let n = va.alloc(0x3000, 0x2000, AllocMode::Highest).unwrap();
        // Top would be 0xfd000; rounding down to 0x2000 gives 0xfc000.
        assert_eq!((n.start(), n.end()), (0xf_c000, 0xf_f000));
        assert_eq!(
            va.alloc(0x1000, 0, AllocMode::Highest).unwrap().start(),
            0xf_f000
        );
        assert_eq!(
            va.alloc(0x1000, 0, AllocMode::Highest).unwrap().start(),
            0xf_b000
        );
        assert_eq!(holes(&va), [(0, 0xf_b000)]);
    }

    #[test]
    fn highest_skips_holes_too_small_at_the_top() {
        let mut va = fragmented();
        assert_eq!(
            va.alloc(0x2000, 0, AllocMode::Highest).unwrap().start(),
            0xe000
        );
        va.reserve(0x7000, 0x7000).unwrap();
        // Left: 1 page at 0, 2 pages at 0x2000, 1 page at 0x5000.
        assert_eq!(
            va.alloc(0x2000, 0, AllocMode::Highest).unwrap().start(),
            0x2000
        );
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::Highest).unwrap().start(),
            0x5000
        );
    }

    #[test]
    fn alloc_in_range_stays_inside_and_clamps_to_span() {
        let mut va = RangeAllocator::new(0x1000, 0x10_000).unwrap();
        let n = va
            .alloc_in_range(PAGE, 0, AllocMode::Lowest, 0x4000, 0x6000)
            .unwrap();
        assert_eq!(n.start(), 0x4000);
        let n = va
            .alloc_in_range(PAGE, 0, AllocMode::Highest, 0x4000, 0x6000)
            .unwrap();
        assert_eq!(n.start(), 0x5000);
        assert_eq!(
            va.alloc_in_range(PAGE, 0, AllocMode::BestFit, 0x4000, 0x6000),
            Err(RangeError::NoSpace {
                size: PAGE,
                align: 0,
                range_start: 0x4000,
                range_end: 0x6000
            })
        );
        // Partly outside the span: clamped to [0x1000, 0x2000).
        let n = va
            .alloc_in_range(PAGE, 0, AllocMode::Highest, 0, 0x2000)
            .unwrap();
        assert_eq!(n.start(), 0x1000);
        // Entirely outside.
        assert!(matches!(
            va.alloc_in_range(PAGE, 0, AllocMode::Lowest, 0x10_000, 0x20_000),
            Err(RangeError::NoSpace { .. })
        ));
        // Best-fit inside a range prefers the smaller hole that intersects the range enough.
        let mut va = fragmented();
        let n = va
            .alloc_in_range(PAGE, 0, AllocMode::BestFit, 0x2000, 0x10_000)
            .unwrap();
        assert_eq!(n.start(), 0x5000);
    }

    #[test]
    fn guard_gaps_between_nodes_but_not_at_span_edges() {
        let mut va = RangeAllocator::with_guard(0, 0x10_000, PAGE).unwrap();
        assert_eq!(va.guard(), PAGE);
        assert_eq!(va.alloc(PAGE, 0, AllocMode::Lowest).unwrap().start(), 0);
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::Lowest).unwrap().start(),
            0x2000
        );
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::Highest).unwrap().start(),
            0xf000
        );
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::Highest).unwrap().start(),
            0xd000
        );
        // Best-fit: hole [0x3000, 0xd000) less a guard each side.
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::BestFit).unwrap().start(),
            0x4000
        );
        assert_eq!(
            va.reserve(0x5800, PAGE),
            Err(RangeError::GuardViolation {
                start: 0x5800,
                size: PAGE,
                neighbour_start: 0x4000,
                neighbour_size: PAGE,
                guard: PAGE,
            })
        );
        assert_eq!(
            va.reserve(0xb000, 0x1800),
            Err(RangeError::GuardViolation {
                start: 0xb000,
                size: 0x1800,
                neighbour_start: 0xd000,
                neighbour_size: PAGE,
                guard: PAGE,
            })
        );
        va.reserve(0xb000, 0x1000).unwrap();
        let got = nodes(&va);
        assert_eq!(
            got,
            [
                (0, PAGE),
                (0x2000, PAGE),
                (0x4000, PAGE),
                (0xb000, PAGE),
                (0xd000, PAGE),
                (0xf000, PAGE)
            ]
        );
        for w in got.windows(2) {
            assert!(w[1].0 - (w[0].0 + w[0].1) >= PAGE);
        }
        // The hole [0xc000, 0xd000) is only one guard wide: nothing fits in it.
        assert!(matches!(
            va.alloc_in_range(1, 0, AllocMode::Lowest, 0xc000, 0xd000),
            Err(RangeError::NoSpace { .. })
        ));
    }

    #[test]
    fn huge_guard_leaves_room_only_at_span_edges() {
        let mut va = RangeAllocator::with_guard(0, 1 << 48, u64::MAX).unwrap();
        assert_eq!(va.alloc(PAGE, 0, AllocMode::Lowest).unwrap().start(), 0);
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::Lowest),
            Err(RangeError::NoSpace {
                size: PAGE,
                align: 0,
                range_start: 0,
                range_end: 1 << 48
            })
        );
        assert!(matches!(
            va.reserve((1 << 48) - PAGE, PAGE),
            Err(RangeError::GuardViolation { .. })
        ));
        assert_eq!(va.free(0), Ok(PAGE));
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::Highest).unwrap().start(),
            (1 << 48) - PAGE
        );
    }

    #[test]
    fn reserve_overlap_is_refused_and_changes_nothing() {
        let mut va = fragmented();
        let before = (nodes(&va), holes(&va), va.used_bytes());
        // Spans the nodes at 0x4000 and 0x6000: the lower is reported.
        assert_eq!(
            va.reserve(0x3000, 0x4000),
            Err(RangeError::Overlap {
                start: 0x3000,
                size: 0x4000,
                existing_start: 0x4000,
                existing_size: PAGE
            })
        );
        // Starts inside a node.
        assert_eq!(
            va.reserve(0x1800, 0x100),
            Err(RangeError::Overlap {
                start: 0x1800,
                size: 0x100,
                existing_start: 0x1000,
                existing_size: PAGE
            })
        );
        assert_eq!(
            va.reserve(0x1000, PAGE),
            Err(RangeError::Overlap {
                start: 0x1000,
                size: PAGE,
                existing_start: 0x1000,
                existing_size: PAGE
            })
        );
        assert_eq!((nodes(&va), holes(&va), va.used_bytes()), before);
        // Exactly filling a hole, and touching nodes on both sides, is fine without a guard.
        va.reserve(0x5000, PAGE).unwrap();
        assert_eq!(
            holes(&va),
            [(0, 0x1000), (0x2000, 0x2000), (0x7000, 0x9000)]
        );
    }

    #[test]
    fn reserve_out_of_span_and_overflow() {
        let mut va = RangeAllocator::new(0x1000, 0x10_000).unwrap();
        let oos = |start, size| RangeError::OutOfSpan {
            start,
            size,
            span_start: 0x1000,
            span_end: 0x10_000,
        };
        assert_eq!(va.reserve(0, 0x2000), Err(oos(0, 0x2000)));
        assert_eq!(va.reserve(0xf000, 0x2000), Err(oos(0xf000, 0x2000)));
        assert_eq!(va.reserve(u64::MAX, 2), Err(oos(u64::MAX, 2)));
        assert_eq!(va.reserve(0x1000, 0), Err(RangeError::ZeroSize));
        assert!(va.is_empty());
        let n = va.reserve(0x1000, 0xf000).unwrap();
        assert_eq!((n.start(), n.end()), (0x1000, 0x10_000));
        assert!(holes(&va).is_empty());
        assert_eq!(va.free_bytes(), 0);
    }

    #[test]
    fn any_alignment_as_drm_mm() {
        let mut va = RangeAllocator::new(0x1000, 0x20_000).unwrap();
        // Multiples of 3 pages: 0x3000, 0x6000, ...; the first at or above 0x1000 is 0x3000.
        let n = va.alloc(PAGE, 3 * PAGE, AllocMode::Lowest).unwrap();
        assert_eq!(n.start(), 0x3000);
        // Highest: the top multiple of 3 pages that leaves room below 0x20_000 (131072):
        // 0x1f000 / 0x3000 = 10.33 -> 10 * 0x3000 = 0x1e000.
        let n = va.alloc(PAGE, 3 * PAGE, AllocMode::Highest).unwrap();
        assert_eq!(n.start(), 0x1e000);
        // Alignment 3 bytes: the first multiple of 3 at or above 0x1000 (4096) is 4098.
        let n = va.alloc(PAGE, 3, AllocMode::Lowest).unwrap();
        assert_eq!(n.start(), 4098);
    }

    #[test]
    fn alloc_argument_errors() {
        let mut va = RangeAllocator::new(0, 0x10_000).unwrap();
        assert_eq!(va.alloc(0, 0, AllocMode::Lowest), Err(RangeError::ZeroSize));
        assert_eq!(
            va.alloc_in_range(PAGE, 0, AllocMode::Lowest, 0x5000, 0x5000),
            Err(RangeError::EmptyRange {
                range_start: 0x5000,
                range_end: 0x5000
            })
        );
        assert_eq!(
            va.alloc(0x10_001, 0, AllocMode::Highest),
            Err(RangeError::NoSpace {
                size: 0x10_001,
                align: 0,
                range_start: 0,
                range_end: 0x10_000
            })
        );
        assert_eq!(va.alloc(1, 1, AllocMode::Lowest).unwrap().start(), 0);
        assert_eq!(va.alloc(1, 0, AllocMode::Lowest).unwrap().start(), 1);
        assert_eq!(
            va.free(0x5000),
            Err(RangeError::NotAllocated { start: 0x5000 })
        );
        assert_eq!(nodes(&va), [(0, 1), (1, 1)]);
    }

    #[test]
    fn extreme_values_near_u64_max() {
        let top = u64::MAX;
        let mut va = RangeAllocator::new(top - 0x10_000, top).unwrap();
        // Highest: top - 0x1000 rounded down to 0x1000 (top is odd).
        let n = va.alloc(0x1000, 0x1000, AllocMode::Highest).unwrap();
        assert_eq!(n.start(), (top - 0x1000) & !0xfff);
        let n = va.alloc(1, 0, AllocMode::Highest).unwrap();
        assert_eq!(n.end(), top);
        assert!(matches!(
            va.alloc(u64::MAX, 0, AllocMode::BestFit),
            Err(RangeError::NoSpace { .. })
        ));
        assert!(matches!(
            va.alloc(1, 1 << 63, AllocMode::Lowest),
            Err(RangeError::NoSpace { .. })
        ));
        assert!(matches!(
            va.alloc(1, 1 << 63, AllocMode::Highest),
            Err(RangeError::NoSpace { .. })
        ));
        assert!(matches!(
            va.alloc_in_range(2, 0, AllocMode::Lowest, top - 1, top),
            Err(RangeError::NoSpace { .. })
        ));
        assert_eq!(
            va.reserve(top - 0x10_000, 0x10),
            Ok(RangeNode {
                start: top - 0x10_000,
                size: 0x10
            })
        );

        let mut va = RangeAllocator::new(0, u64::MAX).unwrap();
        assert_eq!(va.alloc(1, 1 << 63, AllocMode::Lowest).unwrap().start(), 0);
        assert_eq!(
            va.alloc(1, 1 << 63, AllocMode::Lowest).unwrap().start(),
            1 << 63
        );
        assert!(matches!(
            va.alloc(1, 1 << 63, AllocMode::BestFit),
            Err(RangeError::NoSpace { .. })
        ));
        // The top hole [2^63 + 1, MAX) holds no 2^62-aligned 2^62 bytes; the one below does.
        assert_eq!(
            va.alloc(1 << 62, 1 << 62, AllocMode::Highest)
                .unwrap()
                .start(),
            1 << 62
        );
        assert_eq!(va.used_bytes(), 2 + (1 << 62));
    }

    #[test]
    fn free_merges_holes_and_restores_the_span() {
        let mut va = RangeAllocator::with_guard(0x1000, 1 << 32, PAGE).unwrap();
        let a = va.alloc(0x4000, 0, AllocMode::Lowest).unwrap();
        let b = va.alloc(0x4000, 0, AllocMode::Lowest).unwrap();
        let c = va.alloc(0x4000, 0, AllocMode::Lowest).unwrap();
        assert_eq!(va.len(), 3);
        assert_eq!(va.used_bytes(), 0xc000);
        assert_eq!(va.free(b.start()), Ok(0x4000));
        assert_eq!(
            holes(&va),
            [
                (a.end(), c.start() - a.end()),
                (c.end(), (1 << 32) - c.end())
            ]
        );
        assert_eq!(
            va.free(b.start()),
            Err(RangeError::NotAllocated { start: b.start() })
        );
        assert_eq!(
            va.free(a.start() + 1),
            Err(RangeError::NotAllocated {
                start: a.start() + 1
            })
        );
        assert_eq!(va.free(c.start()), Ok(0x4000));
        assert_eq!(va.free(a.start()), Ok(0x4000));
        assert!(va.is_empty());
        assert_eq!(va.used_bytes(), 0);
        assert_eq!(holes(&va), [(0x1000, (1 << 32) - 0x1000)]);
    }

    #[test]
    fn lookups() {
        let va = fragmented();
        assert_eq!(
            va.node_at(0x4000),
            Some(RangeNode {
                start: 0x4000,
                size: PAGE
            })
        );
        assert_eq!(va.node_at(0x4001), None);
        assert_eq!(va.node_containing(0x4fff).map(|n| n.start()), Some(0x4000));
        assert_eq!(va.node_containing(0x5000), None);
        assert_eq!(va.node_containing(0), None);
        assert_eq!(va.nodes().next_back().map(|n| n.start()), Some(0x6000));
        let tiled: u64 = va
            .nodes()
            .map(|n| n.size())
            .chain(va.holes().map(|h| h.size()))
            .sum();
        assert_eq!(tiled, 0x10_000);
    }

    /// `n` one-page nodes each followed by a one-page hole, from `base`: 2n pages.
    fn comb(va: &mut RangeAllocator, base: u64, n: u64) {
        for i in 0..n {
            va.reserve(base + 2 * i * PAGE, PAGE).unwrap();
        }
    }

    #[test]
    fn lowest_and_highest_find_the_one_big_hole_past_thousands_of_small_ones() {
        const N: u64 = 4000;
        // Big hole at the top: [2N pages, 2N + 16 pages); 4000 one-page holes below it.
        let end = (2 * N + 16) * PAGE;
        let mut va = RangeAllocator::new(0, end).unwrap();
        comb(&mut va, 0, N);
        assert_eq!(va.holes().count() as u64, N);
        assert_eq!(va.hole_treap.check().0 as u64, N);
        let big = 2 * N * PAGE - PAGE;
        assert_eq!(
            va.holes().last().map(|h| (h.start(), h.size())),
            Some((big, 17 * PAGE))
        );
        let n = va.alloc(2 * PAGE, 0, AllocMode::Lowest).unwrap();
        assert_eq!(n.start(), big);
        let n = va.alloc(2 * PAGE, 0, AllocMode::Highest).unwrap();
        assert_eq!(n.end(), end);
        // One page still fits the lowest small hole.
        assert_eq!(va.alloc(PAGE, 0, AllocMode::Lowest).unwrap().start(), PAGE);
        // Restricted to the lower half, nothing larger than a page fits.
        assert!(matches!(
            va.alloc_in_range(2 * PAGE, 0, AllocMode::Lowest, 0, N * PAGE),
            Err(RangeError::NoSpace { .. })
        ));
        assert!(matches!(
            va.alloc_in_range(2 * PAGE, 0, AllocMode::Highest, 0, N * PAGE),
            Err(RangeError::NoSpace { .. })
        ));
        // 4 pages at 8-page alignment: only the big hole's remainder [big + 2p, end - 2p)
        // is large enough, and its first 8-page multiple is 8008 pages.
        let n = va.alloc(4 * PAGE, 8 * PAGE, AllocMode::Lowest).unwrap();
        assert_eq!(n.start(), 8008 * PAGE);
        assert_eq!(va.hole_treap.check().0, va.holes().count());

        // Mirror: big hole at the bottom, 4000 one-page holes above it.
        let mut va = RangeAllocator::new(0, end).unwrap();
        comb(&mut va, 17 * PAGE, N - 1);
        va.reserve(end - PAGE, PAGE).unwrap();
        assert_eq!(
            va.holes().next().map(|h| (h.start(), h.size())),
            Some((0, 17 * PAGE))
        );
        let n = va.alloc(2 * PAGE, 0, AllocMode::Highest).unwrap();
        assert_eq!(n.end(), 17 * PAGE);
        let n = va.alloc(2 * PAGE, 0, AllocMode::Lowest).unwrap();
        assert_eq!(n.start(), 0);
        // A page goes to the highest small hole.
        assert_eq!(
            va.alloc(PAGE, 0, AllocMode::Highest).unwrap().start(),
            end - 2 * PAGE
        );
        // Alignment 8 pages, size 4 pages: only [8p, 12p) of the big hole's remainder
        // [2p, 15p) qualifies, the top-most fit.
        let n = va.alloc(4 * PAGE, 8 * PAGE, AllocMode::Highest).unwrap();
        assert_eq!(n.start(), 8 * PAGE);
        assert_eq!(va.hole_treap.check().0, va.holes().count());
    }

    #[test]
    fn alignment_rejects_many_large_enough_holes_before_the_one_that_fits() {
        // 1000 4-page holes at [8k + 1, 8k + 5) pages (4-page nodes fill [8k + 5, 8k + 9)):
        // each is large enough by size, none holds 4 pages at 8-page alignment. The top hole
        // [8001, 8017) pages does.
        const M: u64 = 1000;
        let end = (8 * M + 17) * PAGE;
        let mut va = RangeAllocator::new(0, end).unwrap();
        va.reserve(0, PAGE).unwrap();
        for k in 0..M {
            va.reserve((8 * k + 5) * PAGE, 4 * PAGE).unwrap();
        }
        assert_eq!(va.holes().count() as u64, M + 1);
        let n = va.alloc(4 * PAGE, 8 * PAGE, AllocMode::Lowest).unwrap();
        assert_eq!(n.start(), 8 * M * PAGE + 8 * PAGE);
        // Left: [8001, 8008) and [8012, 8017) pages, neither holding an aligned fit, and the
        // 1000 small holes: Highest visits them all and fails.
        assert_eq!(
            va.alloc(4 * PAGE, 8 * PAGE, AllocMode::Highest),
            Err(RangeError::NoSpace {
                size: 4 * PAGE,
                align: 8 * PAGE,
                range_start: 0,
                range_end: end
            })
        );
        // Unaligned, a restriction starting mid-way picks the first small hole inside it.
        let n = va
            .alloc_in_range(4 * PAGE, 0, AllocMode::Lowest, 8 * 500 * PAGE, end)
            .unwrap();
        assert_eq!(n.start(), (8 * 500 + 1) * PAGE);
        let n = va
            .alloc_in_range(4 * PAGE, 0, AllocMode::Highest, 0, 8 * 500 * PAGE)
            .unwrap();
        assert_eq!(n.start(), (8 * 499 + 1) * PAGE);
        assert_eq!(va.hole_treap.check().0, va.holes().count());
    }
}
