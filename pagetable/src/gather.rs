//! What must follow a page-table update before it is complete: the device TLB ranges to
//! invalidate and the table pages to free only after that invalidation (the kernel's
//! `struct iommu_iotlb_gather` with generic_pt's free list).

use crate::{alloc_table::TablePage, Iova};
use alloc::vec::Vec;

/// Collects, across one or more map/unmap calls, the IOVA ranges whose translations the device
/// TLB may hold stale, and the table pages that became unreachable.
///
/// Adjacent or overlapping ranges are merged, so unmapping 1 GiB page by page yields one range,
/// not 262144. Complete it with [`PageTable::iotlb_sync`](crate::PageTable::iotlb_sync): the
/// ranges are invalidated first, the pages freed after. A `Gather` dropped with pages still in it
/// leaks those pages (they may still be walked, so freeing them silently would be worse).
#[derive(Debug, Default)]
pub struct Gather {
    ranges: Vec<(u64, u64)>,
    pub(crate) freed: Vec<TablePage>,
}

impl Gather {
    /// An empty gather.
    pub const fn new() -> Self {
        Self {
            ranges: Vec::new(),
            freed: Vec::new(),
        }
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
}
