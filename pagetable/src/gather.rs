//! What must follow a page-table update before it is complete: the device TLB ranges to
//! invalidate, the ranges whose walk-cache entries must go too (a table was unlinked there),
//! and the table pages to free only after that invalidation (the kernel's
//! `struct iommu_iotlb_gather` with generic_pt's free list; io-pgtable's `tlb_add_page` for
//! leaves vs `tlb_flush_walk` for tables).
//!
//! A gather that holds work belongs to the one [`PageTable`](crate::PageTable) that put it
//! there: the pages on its free list are that table's, and only that table's allocator may take
//! them back. Each table has a process-unique id; the gather records it with its first piece of
//! work, a different table refuses to add to it or to complete it
//! ([`Error::ForeignGather`](crate::Error::ForeignGather)), and it becomes free for any table
//! again once completed (empty).

use crate::{alloc_table::TablePage, Error, Iova};
use alloc::vec::Vec;

/// Collects, across one or more map/unmap calls, the IOVA ranges whose translations the device
/// TLB may hold stale, the ranges whose intermediate (walk-cache) entries may be stale because
/// a table was unlinked there, and the table pages that became unreachable.
///
/// Adjacent or overlapping ranges are merged, so unmapping 1 GiB page by page yields one range,
/// not 262144. Complete it with [`PageTable::iotlb_sync`](crate::PageTable::iotlb_sync) (or
/// [`PageTable::iotlb_sync_with`](crate::PageTable::iotlb_sync_with), which tells leaf and walk
/// invalidations apart): the ranges are invalidated first, the pages freed after. A `Gather`
/// dropped with pages still in it leaks those pages (they may still be walked, so freeing them
/// silently would be worse).
///
/// Ownership: the first map or unmap that adds work to an empty gather makes it that table's;
/// until it is completed, every other table refuses it ([`Error::ForeignGather`]), so table
/// pages can never reach another table's allocator.
#[derive(Debug, Default)]
pub struct Gather {
    ranges: RangeSet,
    walk: RangeSet,
    pub(crate) freed: Vec<TablePage>,
    /// Id of the table whose work this holds (0: none yet).
    owner: u64,
}

/// One invalidation [`PageTable::iotlb_sync_with`](crate::PageTable::iotlb_sync_with) asks
/// for: `size` bytes of IOVA from `iova`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidation {
    /// First IOVA.
    pub iova: Iova,
    /// Size in bytes.
    pub size: u64,
    /// Whether walk caches must be invalidated too, not only leaf TLB entries: a table that
    /// translated part of the range was unlinked (and may be freed), so a cached pointer to it
    /// must go (SMMUv3 `CMD_TLBI_*_VA` with Leaf=0; io-pgtable's `tlb_flush_walk`). A walk
    /// invalidation also invalidates the range's leaf entries.
    pub walk: bool,
}

/// Disjoint, sorted-on-demand `[start, end)` ranges, merged as they are added.
#[derive(Debug, Default)]
struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    const fn new() -> Self {
        Self(Vec::new())
    }

    /// Inlined: the first range of an operation (an empty set, the common case) is a push.
    #[inline]
    fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        for r in self.0.iter_mut().rev() {
            if start <= r.1 && r.0 <= end {
                r.0 = r.0.min(start);
                r.1 = r.1.max(end);
                // The grown range may now touch others: re-merge (rare; ranges stay few).
                self.normalize();
                return;
            }
        }
        self.0.push((start, end));
    }

    fn normalize(&mut self) {
        if self.0.len() < 2 {
            return;
        }
        self.0.sort_unstable();
        let mut w = 0;
        for r in 1..self.0.len() {
            let (s, e) = self.0[r];
            if s <= self.0[w].1 {
                self.0[w].1 = self.0[w].1.max(e);
            } else {
                w += 1;
                self.0[w] = (s, e);
            }
        }
        self.0.truncate(w + 1);
    }

    fn sorted(&self) -> Vec<(u64, u64)> {
        let mut v = self.0.clone();
        v.sort_unstable();
        v
    }

    /// Whether `[s, e)` lies inside one range (call after `normalize`).
    fn covers(&self, s: u64, e: u64) -> bool {
        self.0.iter().any(|r| r.0 <= s && e <= r.1)
    }
}

impl Gather {
    /// An empty gather, owned by no table.
    pub const fn new() -> Self {
        Self {
            ranges: RangeSet::new(),
            walk: RangeSet::new(),
            freed: Vec::new(),
            owner: 0,
        }
    }

    /// Makes the gather table `id`'s, unless it holds another table's work.
    #[inline]
    pub(crate) fn claim(&mut self, id: u64) -> Result<(), Error> {
        if !self.claim_fast(id) {
            if !self.is_empty() {
                return Err(Error::ForeignGather);
            }
            self.owner = id;
        }
        Ok(())
    }

    /// Whether table `id` may complete this gather: it is `id`'s, or holds no table's pages
    /// (only ranges added by [`Gather::add_range`], or nothing).
    #[inline]
    pub(crate) fn completable_by(&self, id: u64) -> bool {
        self.owner == id || self.owner == 0 || self.is_empty()
    }

    /// Records that the leaf translations of `[iova, iova + size)` (bytes) must be invalidated,
    /// merging with a range it touches or overlaps.
    #[inline]
    pub fn add_range(&mut self, iova: Iova, size: u64) {
        self.ranges.add(iova.0, iova.0.saturating_add(size));
    }

    /// Records that `[iova, iova + size)` (bytes) needs a walk-cache invalidation as well (a
    /// table translating it was unlinked), merging as [`Gather::add_range`] does.
    pub fn add_walk_range(&mut self, iova: Iova, size: u64) {
        self.walk.add(iova.0, iova.0.saturating_add(size));
    }

    /// The leaf ranges to invalidate, as `(start, size in bytes)`, sorted, disjoint and not
    /// touching.
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = (Iova, u64)> + '_ {
        self.ranges
            .sorted()
            .into_iter()
            .map(|(s, e)| (Iova(s), e - s))
    }

    /// The ranges needing a walk-cache invalidation, as [`Gather::ranges`].
    pub fn walk_ranges(&self) -> impl ExactSizeIterator<Item = (Iova, u64)> + '_ {
        self.walk
            .sorted()
            .into_iter()
            .map(|(s, e)| (Iova(s), e - s))
    }

    /// Number of leaf ranges to invalidate.
    pub fn range_count(&self) -> usize {
        self.ranges.0.len()
    }

    /// Number of table pages waiting to be freed after the invalidation.
    pub fn tables_to_free(&self) -> usize {
        self.freed.len()
    }

    /// Whether there is nothing to invalidate and nothing to free.
    pub fn is_empty(&self) -> bool {
        self.ranges.0.is_empty() && self.walk.0.is_empty() && self.freed.is_empty()
    }

    /// The invalidations to issue, in place (no allocation on the sync path): each walk range
    /// (`walk: true`), then each leaf range no walk range covers.
    pub(crate) fn for_each_invalidation(&mut self, mut f: impl FnMut(Invalidation)) {
        self.walk.normalize();
        self.ranges.normalize();
        for &(s, e) in &self.walk.0 {
            f(Invalidation {
                iova: Iova(s),
                size: e - s,
                walk: true,
            });
        }
        for &(s, e) in &self.ranges.0 {
            if !self.walk.covers(s, e) {
                f(Invalidation {
                    iova: Iova(s),
                    size: e - s,
                    walk: false,
                });
            }
        }
    }

    /// [`Gather::claim`]'s common cases in two compares: the gather is table `id`'s already,
    /// or nobody's (then it becomes `id`'s). `false` leaves it as it was, for `claim` to decide.
    #[inline(always)]
    pub(crate) fn claim_fast(&mut self, id: u64) -> bool {
        if self.owner == id {
            true
        } else if self.owner == 0 {
            self.owner = id;
            true
        } else {
            false
        }
    }

    /// `Some` when the gather holds at most one leaf range, no walk range and no freed table
    /// (the sync after a single map or unmap): that range, if any. `None` otherwise.
    #[inline(always)]
    pub(crate) fn single_leaf_range(&self) -> Option<Option<(u64, u64)>> {
        if self.walk.0.is_empty() && self.freed.is_empty() && self.ranges.0.len() <= 1 {
            Some(self.ranges.0.first().copied())
        } else {
            None
        }
    }

    /// The union of the leaf and walk ranges, merged and sorted, as `(start, end)`: what a
    /// caller that does not tell them apart invalidates. Moves the walk ranges into the leaf
    /// set in place (no allocation unless it grows).
    pub(crate) fn union_ranges(&mut self) -> &[(u64, u64)] {
        while let Some((s, e)) = self.walk.0.pop() {
            self.ranges.add(s, e);
        }
        self.ranges.normalize();
        &self.ranges.0
    }

    pub(crate) fn clear_ranges(&mut self) {
        self.ranges.0.clear();
        self.walk.0.clear();
    }

    /// Marks the gather as completed: owned by no table again.
    pub(crate) fn release(&mut self) {
        debug_assert!(self.is_empty());
        self.owner = 0;
    }
}
