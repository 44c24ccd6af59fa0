//! Counters of one device's DMA ops.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A snapshot of a [`DmaOps`](super::DmaOps)'s counters, from
/// [`DmaOps::stats`](super::DmaOps::stats). Totals since attach, except the `*_in_use` gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DmaStats {
    /// Successful mapping calls: `map_page`, `map_sg`, `map_resource`, `iova_link`, and the
    /// mapping of each coherent / non-coherent buffer.
    pub maps: u64,
    /// Successful unmapping calls (the same kinds as `maps`; `iova_unlink` / `iova_free` count
    /// once per link, or part of a link left by an earlier partial unlink, that they remove).
    pub unmaps: u64,
    /// Syncs for the device that did work (a cache clean or a bounce copy), implicit (at map)
    /// or explicit. A coherent device that bounces nothing does none.
    pub syncs_for_device: u64,
    /// Syncs for the CPU that did work (a cache invalidate or a bounce copy), implicit (at
    /// unmap) or explicit.
    pub syncs_for_cpu: u64,
    /// Bytes covered by `syncs_for_device`.
    pub bytes_synced_for_device: u64,
    /// Bytes covered by `syncs_for_cpu`.
    pub bytes_synced_for_cpu: u64,
    /// Bytes copied between an original buffer and its swiotlb bounce buffer, either way.
    pub bounced_bytes: u64,
    /// 2 KiB swiotlb slots currently in use in the device's pool (shared by the direct devices
    /// of one `PhysMem`).
    pub swiotlb_slots_in_use: u64,
    /// System IOMMU TLB invalidations: one per IOVA range invalidated after an unmap, one per
    /// `iova_sync`.
    pub iotlb_invalidations: u64,
    /// IOVA bytes currently allocated in the system IOMMU domain (reserved regions excluded).
    pub iova_bytes_in_use: u64,
    /// DMA-API debug diagnostics reported (including any dropped once the log was full).
    pub diagnostics: u64,
}

/// The live counters (relaxed atomics: statistics, read when the counted operations are done).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) maps: AtomicU64,
    pub(crate) unmaps: AtomicU64,
    pub(crate) syncs_for_device: AtomicU64,
    pub(crate) syncs_for_cpu: AtomicU64,
    pub(crate) bytes_synced_for_device: AtomicU64,
    pub(crate) bytes_synced_for_cpu: AtomicU64,
    pub(crate) bounced_bytes: AtomicU64,
    pub(crate) iotlb_invalidations: AtomicU64,
    pub(crate) diagnostics: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DmaStats {
        DmaStats {
            maps: self.maps.load(Relaxed),
            unmaps: self.unmaps.load(Relaxed),
            syncs_for_device: self.syncs_for_device.load(Relaxed),
            syncs_for_cpu: self.syncs_for_cpu.load(Relaxed),
            bytes_synced_for_device: self.bytes_synced_for_device.load(Relaxed),
            bytes_synced_for_cpu: self.bytes_synced_for_cpu.load(Relaxed),
            bounced_bytes: self.bounced_bytes.load(Relaxed),
            // Gauges: filled in by `DmaOps::stats` from the pool and the IOVA allocator.
            swiotlb_slots_in_use: 0,
            iotlb_invalidations: self.iotlb_invalidations.load(Relaxed),
            iova_bytes_in_use: 0,
            diagnostics: self.diagnostics.load(Relaxed),
        }
    }
}
