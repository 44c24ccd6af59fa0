//! The system DMA ops: how a device gets bus addresses ([`DmaAddr`]) for memory, and how the
//! bytes change hands between CPU and device (Linux's DMA API: Documentation/core-api/dma-api.rst,
//! dma-api-howto.rst; kernel/dma/direct.c, swiotlb.c, debug.c; drivers/iommu/dma-iommu.c).
//!
//! [`DmaOps`] holds what every backend shares (device, memory, counters, live mappings, debug
//! log) and one backend, a peer of the other, chosen once at [`DmaOps::attach`]:
//! - [`Direct`]: `DmaAddr = phys + bus_offset`; a range beyond the device's DMA mask is bounced
//!   through a swiotlb pool (`swiotlb.rs`) or refused when the platform has none;
//! - [`IommuDomain`]: the device sits behind a system IOMMU; every mapping gets an IOVA in the
//!   device's own domain and IOPTEs in a page table walked from physical memory;
//! - [`VfioDomain`]: the device sits behind the running kernel's real IOMMU, reached through a
//!   VFIO container ([`crate::vfio`]); every mapping gets an IOVA of the device's space and a
//!   `VFIO_IOMMU_MAP_DMA` of the memory behind it.
//!
//! This module owns the DMA-API semantics common to both, one concept per file, as kernel/dma
//! cuts its own:
//! - `mod.rs` (kernel/dma/mapping.c's dispatch): [`DmaOps`] (the shared state and its private
//!   `Backend` enum), attach and detach, and the small dispatch over the backends (kind,
//!   [`DmaOps::as_direct`] / [`DmaOps::as_iommu`], zone, stats);
//! - `mapping.rs`: streaming mappings (map / unmap / sync of pages and scatter-gather lists,
//!   resources), the release of a mapping, and the dispatch of map and release to the backend;
//! - `sync.rs`: the cache maintenance and bounce copies a sync does, in the kernel's order;
//! - `buffer.rs`: coherent and non-coherent buffers;
//! - `iova.rs`: the two-step IOVA API;
//! - `registry.rs`: the record of live mappings;
//! - `debug.rs` (kernel/dma/debug.c): DMA-API debugging, i.e. the diagnostics log and every check
//!   that feeds it (release checks, [`DmaOps::mapping_error`], [`DmaOps::check_cpu_access`],
//!   the leak report of [`DmaOps::detach`]);
//! - `bus.rs`: what the bus does with an address a device emits ([`DmaOps::bus_to_phys`],
//!   [`DmaOps::bus_read`], [`DmaOps::bus_write`]);
//! - `direct.rs`, `swiotlb.rs`, `iommu.rs`, `vfio.rs`: the backends (`iova_space.rs`: the IOVA
//!   allocator of the two IOMMU-backed ones), which own only what differs between
//!   them and are handed the shared state they need; `table_pool.rs`: page-table pages from
//!   physical frames; `stats.rs`: counters; `types.rs`: the value types.
//!
//! It never writes a device's own page table: the device VM does, from the `DmaAddr`s returned
//! here.
//!
//! Units: addresses and lengths in bytes throughout (bus addresses as [`DmaAddr`], CPU physical
//! ones as `PhysAddr`); granule 4 KiB.

mod buffer;
mod bus;
mod debug;
mod direct;
mod iommu;
mod iova;
mod iova_space;
mod machine;
mod mapping;
mod registry;
mod stats;
pub(crate) mod swiotlb;
mod sync;
mod table_pool;
mod types;
mod vfio;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use buffer::{CoherentBuffer, NonCoherentBuffer};
pub use debug::{DmaDiag, KindLeak, LeakReport, MAX_DIAGNOSTICS};
pub use devmmu_pagetable::DmaAddr;
pub use direct::Direct;
pub use iommu::{IommuDomain, IOVA_GRANULE};
pub use iova::IovaRange;
pub use stats::DmaStats;
pub use swiotlb::{IO_TLB_SEGSIZE, IO_TLB_SIZE, MAX_BOUNCE_BYTES};
pub use table_pool::{PoolMark, TableBus, TablePool, CHUNK_PAGES};
pub use types::{
    BusFault, BusFaultReason, DmaAttrs, DmaDevice, DmaDirection, DmaMask, DmaOpsKind, DmaOwner,
    DmaSegment, MappingKind, Platform, SgTable, VfioHandle, DEFAULT_SWIOTLB_BYTES, X86_MSI_WINDOW,
};
pub use vfio::VfioDomain;

use debug::{DebugLog, PaIndex};
use registry::Registry;
use stats::Counters;

use crate::phys::{PhysMem, Zone, PAGE_SIZE};
use crate::MmError;

/// The system DMA ops of one device: the state every backend shares (the device, its memory,
/// counters, live mappings, debug log) and the backend, a peer per kind matched once per call, no
/// `dyn`.
///
/// Obtained from [`DmaOps::attach`] as `Arc<DmaOps>`; every method takes `&self` (state sits
/// behind mutexes), and it is `Send + Sync`. Several mappings of one device may be live at once,
/// including of the same bytes.
#[derive(Debug)]
pub struct DmaOps {
    phys: Arc<PhysMem>,
    dev: DmaDevice,
    counters: Counters,
    registry: Mutex<Registry>,
    debug: DebugLog,
    detached: AtomicBool,
    /// Per mapping id, its segments' physical ranges sorted for [`DmaOps::check_cpu_access`]
    /// (built there, for mappings of more than [`debug::PA_INDEX_MIN_SEGS`] segments). Ids are
    /// never reused and a registered mapping's segments never change, so an entry stays right
    /// for as long as its mapping lives. Unmaps remove their entry; the next check drops any
    /// other entry of a released mapping. Locked only while `registry` is held, after it.
    pa_index: Mutex<HashMap<u64, PaIndex>>,
    backend: Backend,
}

/// The backend of a [`DmaOps`], chosen once at [`DmaOps::attach`]. Only what differs between
/// the two lives here; operations that need the shared state are given it by the caller.
// One per device and always behind an `Arc`, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Backend {
    /// Direct DMA, with a swiotlb bounce pool when the platform has one.
    Direct(Direct),
    /// Behind a system IOMMU.
    Iommu(IommuDomain),
    /// Behind the running kernel's IOMMU, through VFIO.
    Vfio(VfioDomain),
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<DmaOps>();
};

impl DmaOps {
    /// Attaches `dev` to the system DMA layer of `platform` over `phys` and returns its ops.
    ///
    /// The rule, applied here once and never revisited (the ops of a device cannot change while
    /// it may hold mappings): if `platform.system_iommu`, the device gets its own
    /// [`IommuDomain`] (IOVA space `[4 KiB, min(mask, 2^48 - 1)]` minus `platform.reserved`);
    /// otherwise [`Direct`] with `platform.bus_offset`, plus a swiotlb pool of
    /// `platform.swiotlb` bytes if some RAM of `phys` lies beyond the device's reach: the pool of
    /// that size another direct device of `phys` already uses if it lies below this device's
    /// reach, else one allocated now below it. A device whose mask covers all RAM gets no pool.
    ///
    /// # Errors
    /// - [`MmError::DmaMaskTooSmall`]: the mask cannot address one page (`< 0xfff`).
    /// - [`MmError::BadReservedRegion`]: a reserved region with `start >= end`.
    /// - [`MmError::Misaligned`]: `bus_offset` not a multiple of 4 KiB (direct only).
    /// - [`MmError::ZeroSize`]: a swiotlb pool of 0 bytes was asked for and is needed.
    /// - [`MmError::NoMemory`], [`MmError::Os`]: no frames for the swiotlb pool (no RAM below
    ///   the device's reach, as with [`MemoryMap::high_only`](crate::phys::MemoryMap::high_only))
    ///   or the IOMMU's root table.
    pub fn attach(
        phys: Arc<PhysMem>,
        dev: DmaDevice,
        platform: &Platform,
    ) -> Result<Arc<DmaOps>, MmError> {
        if dev.mask.0 < PAGE_SIZE - 1 {
            return Err(MmError::DmaMaskTooSmall { mask: dev.mask.0 });
        }
        if let Some(&(start, end)) = platform.reserved.iter().find(|(s, e)| s >= e) {
            return Err(MmError::BadReservedRegion { start, end });
        }
        let backend = if let Some(vfio) = &platform.vfio {
            Backend::Vfio(VfioDomain::new(vfio.0.clone(), dev.mask, platform)?)
        } else if platform.system_iommu {
            Backend::Iommu(IommuDomain::new(&phys, dev.mask, platform)?)
        } else {
            Backend::Direct(Direct::new(&phys, dev.mask, platform)?)
        };
        let ops = Arc::new(DmaOps {
            phys,
            dev,
            counters: Counters::default(),
            registry: Mutex::new(Registry::default()),
            debug: DebugLog::new(platform.debug, platform.debug_strict_check),
            detached: AtomicBool::new(false),
            pa_index: Mutex::new(HashMap::new()),
            backend,
        });
        if platform.debug {
            // Frames freed under a live mapping are diagnosed when they are freed.
            let weak = Arc::downgrade(&ops);
            let observer: std::sync::Weak<dyn crate::phys::FreeObserver> = weak;
            ops.phys.observe_frees(observer);
        }
        Ok(ops)
    }

    /// Which backend this is.
    pub fn kind(&self) -> DmaOpsKind {
        match self.backend {
            Backend::Direct(_) => DmaOpsKind::Direct,
            Backend::Iommu(_) => DmaOpsKind::Iommu,
            Backend::Vfio(_) => DmaOpsKind::Vfio,
        }
    }

    /// The direct backend (its bus offset and swiotlb pool), if this is [`DmaOpsKind::Direct`].
    pub fn as_direct(&self) -> Option<&Direct> {
        match &self.backend {
            Backend::Direct(d) => Some(d),
            Backend::Iommu(_) | Backend::Vfio(_) => None,
        }
    }

    /// The system IOMMU domain (its aperture and page table), if this is
    /// [`DmaOpsKind::Iommu`].
    pub fn as_iommu(&self) -> Option<&IommuDomain> {
        match &self.backend {
            Backend::Iommu(i) => Some(i),
            Backend::Direct(_) | Backend::Vfio(_) => None,
        }
    }

    /// The VFIO domain (its container and aperture), if this is [`DmaOpsKind::Vfio`].
    pub fn as_vfio(&self) -> Option<&VfioDomain> {
        match &self.backend {
            Backend::Vfio(v) => Some(v),
            Backend::Direct(_) | Backend::Iommu(_) => None,
        }
    }

    /// The device.
    pub fn device(&self) -> &DmaDevice {
        &self.dev
    }

    /// The physical memory the device reaches.
    pub fn phys(&self) -> &Arc<PhysMem> {
        &self.phys
    }

    /// Where to allocate frames the device reaches without bouncing: below its reach for direct
    /// DMA, anywhere behind an IOMMU.
    pub fn dma_zone(&self) -> Zone {
        match &self.backend {
            Backend::Direct(d) => d.zone(),
            Backend::Iommu(_) | Backend::Vfio(_) => Zone::Any,
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DmaStats {
        let mut s = self.counters.snapshot();
        match &self.backend {
            Backend::Direct(d) => s.swiotlb_slots_in_use = d.slots_in_use(),
            Backend::Iommu(i) => s.iova_bytes_in_use = i.iova_bytes_in_use(),
            Backend::Vfio(v) => s.iova_bytes_in_use = v.iova_bytes_in_use(),
        }
        s
    }

    /// The DMA-API debug diagnostics logged so far (empty unless [`Platform::debug`]).
    pub fn diagnostics(&self) -> Vec<DmaDiag> {
        self.debug.snapshot()
    }

    /// Returns the diagnostics logged so far and clears the log.
    pub fn take_diagnostics(&self) -> Vec<DmaDiag> {
        self.debug.take()
    }

    /// Number of live mappings (every kind, IOVA links included, IOVA ranges not).
    pub fn live_mappings(&self) -> usize {
        self.registry.lock().len()
    }

    /// Detaches the device: refuses new mappings and allocations from now on
    /// ([`MmError::DmaDetached`]) and reports what is still mapped (also as a
    /// [`DmaDiag::LeakAtDetach`] if anything is and debugging is on). Live mappings stay valid
    /// and can still be unmapped; buffers can still be dropped. Calling it again reports again.
    pub fn detach(&self) -> LeakReport {
        self.detached.store(true, Ordering::Release);
        self.leak_report()
    }

    /// Refuses new mappings and allocations once the device is detached.
    ///
    /// # Errors
    /// [`MmError::DmaDetached`].
    pub(crate) fn check_attached(&self) -> Result<(), MmError> {
        if self.detached.load(Ordering::Acquire) {
            Err(MmError::DmaDetached {
                device: self.dev.name.clone(),
            })
        } else {
            Ok(())
        }
    }
}
