//! What must follow a page-table update before it is complete: the device TLB ranges to
//! invalidate and the table pages to free only after that invalidation (the kernel's
//! `struct iommu_iotlb_gather` with generic_pt's free list).
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
/// TLB may hold stale, and the table pages that became unreachable.
///
/// Adjacent or overlapping ranges are merged, so unmapping 1 GiB page by page yields one range,
/// not 262144. Complete it with [`PageTable::iotlb_sync`](crate::PageTable::iotlb_sync): the
/// ranges are invalidated first, the pages freed after. A `Gather` dropped with pages still in it
/// leaks those pages (they may still be walked, so freeing them silently would be worse).
///
/// Ownership: the first map or unmap that adds work to an empty gather makes it that table's;
/// until it is completed, every other table refuses it ([`Error::ForeignGather`]), so table
/// pages can never reach another table's allocator.
#[derive(Debug, Default)]
pub struct Gather {
    ranges: Vec<(u64, u64)>,
    pub(crate) freed: Vec<TablePage>,
    /// Id of the table whose work this holds (0: none yet).
    owner: u64,
}

impl Gather {
    /// An empty gather, owned by no table.
    pub const fn new() -> Self {
        Self {
            ranges: Vec::new(),
            freed: Vec::new(),
            owner: 0,
        }
    }

    /// Makes the gather table `id`'s, unless it holds another table's work.
    #[inline]
    pub(crate) fn claim(&mut self, id: u64) -> Result<(), Error> {
        if self.owner != id {
            if self.owner != 0 && !self.is_empty() {
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

    /// Records that `[iova, iova + size)` (bytes) must be invalidated, merging with a range it
    /// touches or overlaps.
    pub fn add_range(&mut self, iova: Iova, size: u64) {
        let (start, end) = (iova.0, iova.0.saturating_add(size));
        if start >= end {
            return;
        }
        for r in self.ranges.iter_mut().rev() {
            if start <= r.1 && r.0 <= end {
                r.0 = r.0.min(start);
                r.1 = r.1.max(end);
                // The grown range may now touch others: re-merge (rare; ranges stay few).
                self.normalize();
                return;
            }
        }
        self.ranges.push((start, end));
    }

    fn normalize(&mut self) {
        if self.ranges.len() < 2 {
            return;
        }
        self.ranges.sort_unstable();
        let mut w = 0;
        for r in 1..self.ranges.len() {
            let (s, e) = self.ranges[r];
            if s <= self.ranges[w].1 {
                self.ranges[w].1 = self.ranges[w].1.max(e);
            } else {
                w += 1;
                self.ranges[w] = (s, e);
            }
        }
        self.ranges.truncate(w + 1);
    }

    /// The ranges to invalidate, as `(start, size in bytes)`, sorted, disjoint and not touching.
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = (Iova, u64)> + '_ {
        let mut v = self.ranges.clone();
        v.sort_unstable();
        v.into_iter().map(|(s, e)| (Iova(s), e - s))
    }

    /// Number of ranges to invalidate.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Number of table pages waiting to be freed after the invalidation.
    pub fn tables_to_free(&self) -> usize {
        self.freed.len()
    }

    /// Whether there is nothing to invalidate and nothing to free.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.freed.is_empty()
    }

    /// The ranges, merged and sorted, kept in place (no allocation on the sync path).
    pub(crate) fn normalized_ranges(&mut self) -> &[(u64, u64)] {
        self.normalize();
        &self.ranges
    }

    pub(crate) fn clear_ranges(&mut self) {
        self.ranges.clear();
    }

    /// Marks the gather as completed: owned by no table again.
    pub(crate) fn release(&mut self) {
        debug_assert!(self.is_empty());
        self.owner = 0;
    }
}
