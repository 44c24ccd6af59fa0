//! The simulated device: an MMU that walks the driver's page tables, a TLB that keeps stale
//! entries until invalidated (and a walk cache that keeps table descriptors until a non-leaf
//! invalidation), and a DMA engine whose accesses go MMU -> (system IOMMU) -> memory
//! with the coherent or non-coherent view of memory. It is the test oracle: tests assert on what
//! it actually reads and writes, not on the driver's bookkeeping.
//!
//! The model holds the *hardware's* truth ([`SimConfig`]: is the walker coherent, is the data
//! path coherent), separately from the driver's belief in [`crate::device::DeviceConfig`], so a
//! driver that skips a clean or an invalidation is caught.

mod engine;
mod fault;
mod tlb;

pub use engine::{SimDevice, SimStats, COPY_CHUNK};
pub use fault::{Access, Fault, FaultReason};
pub use tlb::{Tlb, TlbEntry, TlbStats, WalkCacheEntry};

use std::sync::Arc;

use devmmu_pagetable::Iova;
use parking_lot::Mutex;

use crate::device::DeviceTlb;

/// What the hardware is, regardless of what the driver believes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SimConfig {
    /// Entries in the device TLB.
    pub tlb_entries: usize,
    /// Whether the page-table walker snoops the CPU caches.
    pub coherent_walk: bool,
    /// Whether data accesses snoop the CPU caches.
    pub coherent: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tlb_entries: 64,
            coherent_walk: false,
            coherent: false,
        }
    }
}

/// The device's MMU state shared with the driver side: the TLB (which the driver's invalidation
/// hook, [`DeviceTlb`], acts on) and the fault log.
#[derive(Debug)]
pub struct SimMmu {
    config: SimConfig,
    tlb: Mutex<Tlb>,
    faults: Mutex<Vec<Fault>>,
}

impl SimMmu {
    /// A new MMU with an empty TLB.
    pub fn new(config: SimConfig) -> Arc<SimMmu> {
        Arc::new(SimMmu {
            config,
            tlb: Mutex::new(Tlb::new(config.tlb_entries)),
            faults: Mutex::new(Vec::new()),
        })
    }

    /// The hardware configuration.
    pub fn config(&self) -> SimConfig {
        self.config
    }

    /// TLB counters (hits, misses, invalidations received, ...).
    pub fn tlb_stats(&self) -> TlbStats {
        self.tlb.lock().stats()
    }

    /// Entries currently in the TLB.
    pub fn tlb_entries(&self) -> Vec<TlbEntry> {
        self.tlb.lock().entries().to_vec()
    }

    /// Table descriptors in the walk cache.
    pub fn walk_cache_entries(&self) -> Vec<WalkCacheEntry> {
        self.tlb.lock().walk_entries().to_vec()
    }

    /// Every fault recorded so far.
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().clone()
    }

    /// Returns and clears the fault log.
    pub fn take_faults(&self) -> Vec<Fault> {
        std::mem::take(&mut *self.faults.lock())
    }

    pub(crate) fn tlb(&self) -> &Mutex<Tlb> {
        &self.tlb
    }

    pub(crate) fn record(&self, fault: Fault) {
        self.faults.lock().push(fault);
    }
}

impl DeviceTlb for SimMmu {
    fn invalidate_range(&self, asid: u32, iova: Iova, size: u64) {
        self.tlb.lock().invalidate_range(Some(asid), iova.0, size);
    }

    fn invalidate_leaf(&self, asid: u32, iova: Iova, size: u64) {
        self.tlb
            .lock()
            .invalidate_leaf_range(Some(asid), iova.0, size);
    }

    fn invalidate_all(&self) {
        self.tlb.lock().invalidate_all();
    }
}
