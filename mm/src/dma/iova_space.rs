//! The IOVA space of an IOMMU-backed backend (the modelled system IOMMU and VFIO alike):
//! a drm_mm-style [`RangeAllocator`] over `[granule, top]` with the platform's reserved regions
//! taken out, allocating top-down with the size rules of drivers/iommu/iova.c.
//!
//! Owns only which IOVAs are free; it never maps anything.

use devmmu_pagetable::DmaAddr;

use crate::range::{AllocMode, RangeAllocator};
use crate::{AddressSpace, MmError};

use super::iommu::{IovaNode, IOVA_GRANULE};

/// Sizes below this many granules are rounded up to a power of two, as the kernel's IOVA
/// allocator does so that its per-CPU caches (`IOVA_RANGE_CACHE_MAX_SIZE` = 6 orders) can
/// recycle them.
const IOVA_RCACHE_PAGES: u64 = 1 << (6 - 1);

/// Free and used IOVAs of one domain.
pub(crate) struct IovaSpace {
    iova: RangeAllocator,
    /// `[start, end)` in bytes.
    span: (DmaAddr, DmaAddr),
    /// Bytes of the span taken by reserved regions.
    reserved_bytes: u64,
}

impl IovaSpace {
    /// The space `[granule, top]` (`top` inclusive, e.g. the DMA mask) minus `reserved`
    /// (`[start, end)` byte ranges, widened to whole granules; overlapping ones merged).
    ///
    /// # Errors
    /// [`MmError::DmaMaskTooSmall`]: `top` leaves no granule.
    pub(crate) fn new(top: u64, reserved: &[(u64, u64)]) -> Result<IovaSpace, MmError> {
        let end = top
            .checked_add(1)
            .map_or(!(IOVA_GRANULE - 1), |e| e & !(IOVA_GRANULE - 1));
        let span = (IOVA_GRANULE, end);
        let mut iova = RangeAllocator::new(span.0, span.1)
            .map_err(|_| MmError::DmaMaskTooSmall { mask: top })?;
        let mut regions: Vec<(u64, u64)> = reserved
            .iter()
            .map(|&(s, e)| {
                (
                    (s & !(IOVA_GRANULE - 1)).max(span.0),
                    e.checked_next_multiple_of(IOVA_GRANULE)
                        .unwrap_or(u64::MAX)
                        .min(span.1),
                )
            })
            .filter(|(s, e)| s < e)
            .collect();
        regions.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in regions {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut reserved_bytes = 0;
        for &(s, e) in &merged {
            // Merged, clipped and disjoint, into an empty allocator: cannot fail.
            if iova.reserve(s, e - s).is_ok() {
                reserved_bytes += e - s;
            }
        }
        Ok(IovaSpace {
            iova,
            span: (DmaAddr(span.0), DmaAddr(span.1)),
            reserved_bytes,
        })
    }

    /// `[start, end)` of the space, in bytes.
    pub(crate) fn span(&self) -> (DmaAddr, DmaAddr) {
        self.span
    }

    /// The last byte of the space, as [`MmError::NoAddressSpace`] reports it.
    pub(crate) fn limit(&self) -> u64 {
        self.span.1.get() - 1
    }

    /// IOVA bytes allocated, reserved regions excluded.
    pub(crate) fn bytes_in_use(&self) -> u64 {
        self.iova.used_bytes() - self.reserved_bytes
    }

    /// Allocates a node for `size` bytes (a granule multiple, `> 0`): sizes under 32 granules
    /// rounded up to a power of two, aligned to the size rounded up to a power of two
    /// (`alloc_iova(.., size_aligned = true)`), the highest free place.
    ///
    /// # Errors
    /// [`MmError::NoAddressSpace`] with `space: SystemIova`.
    pub(crate) fn alloc(&mut self, size: u64) -> Result<IovaNode, MmError> {
        let pages = size / IOVA_GRANULE;
        let node_pages = if pages < IOVA_RCACHE_PAGES {
            pages.next_power_of_two()
        } else {
            pages
        };
        let align = pages
            .checked_next_power_of_two()
            .and_then(|p| p.checked_mul(IOVA_GRANULE));
        let exhausted = MmError::NoAddressSpace {
            space: AddressSpace::SystemIova,
            size,
            limit: self.limit(),
        };
        let (Some(align), Some(node)) = (align, node_pages.checked_mul(IOVA_GRANULE)) else {
            return Err(exhausted);
        };
        match self.iova.alloc(node, align, AllocMode::Highest) {
            Ok(n) => Ok(IovaNode {
                start: DmaAddr(n.start()),
                size: n.size(),
            }),
            Err(_) => Err(exhausted),
        }
    }

    /// Frees the node starting at `start`.
    pub(crate) fn free(&mut self, start: DmaAddr) {
        let _ = self.iova.free(start.get());
    }
}
