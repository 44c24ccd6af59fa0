//! Direct DMA (kernel/dma/direct.c): the device sees RAM at `phys + bus_offset`.
//!
//! Owns the address rule and, when the device's mask does not reach all RAM, the swiotlb pool
//! that bounces what lies beyond it. It never does cache maintenance or bounce copies itself: the
//! streaming code (`mapping.rs`, `sync.rs`) does both, in the order the kernel does them.

use std::sync::Arc;

use devmmu_pagetable::DmaAddr;

use parking_lot::Mutex;

use super::registry::{Registry, Seg};
use super::swiotlb::Swiotlb;
use super::types::{BusFault, BusFaultReason, DmaMask, MappingKind, Platform};
use crate::phys::{PhysAddr, PhysMem, Zone, PAGE_SIZE};
use crate::MmError;

/// The direct DMA backend of one device: `DmaAddr = phys + bus_offset`, bounced through its own
/// swiotlb pool where that address would be beyond the DMA mask. The device's mask, memory and
/// live mappings are its [`DmaOps`](super::DmaOps)'s, passed to the operations that need them.
#[derive(Debug)]
pub struct Direct {
    bus_offset: u64,
    /// Exclusive upper bound of the physical addresses the device reaches unbounced, `None` when
    /// it reaches every address.
    phys_limit: Option<PhysAddr>,
    swiotlb: Option<Arc<Swiotlb>>,
}

/// The exclusive physical limit a device with `mask` reaches at `offset`: `None` if unlimited.
fn phys_limit(mask: u64, offset: u64) -> Option<PhysAddr> {
    match mask.checked_sub(offset) {
        None => Some(PhysAddr(0)),
        Some(top) => top.checked_add(1).map(PhysAddr),
    }
}

impl Direct {
    /// The backend for a device with DMA mask `mask` over `phys` on `platform`. The swiotlb pool
    /// is allocated here when the platform has one and some RAM lies beyond the device's reach:
    /// contiguous frames below that reach, so that every slot is reachable.
    pub(crate) fn new(
        phys: &Arc<PhysMem>,
        mask: DmaMask,
        platform: &Platform,
    ) -> Result<Direct, MmError> {
        if !platform.bus_offset.is_multiple_of(PAGE_SIZE) {
            return Err(MmError::Misaligned {
                value: platform.bus_offset,
                align: PAGE_SIZE,
            });
        }
        let limit = phys_limit(mask.0, platform.bus_offset);
        let ram_end = phys
            .memory_map()
            .regions()
            .iter()
            .filter_map(|r| r.end())
            .max()
            .unwrap_or(PhysAddr(0));
        let swiotlb = match (limit, platform.swiotlb) {
            (Some(l), Some(bytes)) if ram_end > l => Some(Swiotlb::shared(phys, bytes, l)?),
            _ => None,
        };
        Ok(Direct {
            bus_offset: platform.bus_offset,
            phys_limit: limit,
            swiotlb,
        })
    }

    /// The platform's bus offset: `DmaAddr = phys + bus_offset`, in bytes.
    pub fn bus_offset(&self) -> u64 {
        self.bus_offset
    }

    /// The swiotlb pool, as (first physical byte, size in bytes), if this device has one. Direct
    /// devices of one `PhysMem` with the same pool size share it when it is below their reach.
    pub fn swiotlb_pool(&self) -> Option<(PhysAddr, u64)> {
        self.swiotlb.as_ref().map(|s| s.range())
    }

    /// 2 KiB swiotlb slots in use (by every device sharing the pool).
    pub(crate) fn slots_in_use(&self) -> u64 {
        self.swiotlb.as_ref().map_or(0, |s| s.slots_in_use())
    }

    /// The zone of frames the device reaches without bouncing.
    pub(crate) fn zone(&self) -> Zone {
        match self.phys_limit {
            None => Zone::Any,
            Some(l) => Zone::Below(l),
        }
    }

    /// The bus address of `pa`: `pa + bus_offset`, or `None` past 2^64.
    fn bus_addr(&self, pa: PhysAddr) -> Option<DmaAddr> {
        pa.as_u64().checked_add(self.bus_offset).map(DmaAddr)
    }

    /// The physical address behind bus address `dma`: `dma - bus_offset`, or `None` below the
    /// offset.
    fn phys_addr(&self, dma: DmaAddr) -> Option<PhysAddr> {
        dma.get().checked_sub(self.bus_offset).map(PhysAddr)
    }

    /// The bus address of `pa` if `pa..pa + len` is reachable unbounced by a device with `mask`.
    fn reachable(&self, mask: DmaMask, pa: PhysAddr, len: u64) -> Option<DmaAddr> {
        let dma = self.bus_addr(pa)?;
        mask.covers(dma.get(), len).then_some(dma)
    }

    /// Assigns bus addresses to `pa..pa + len` (`len > 0`, RAM, checked by the caller): direct
    /// if reachable with `mask`, else a bounce buffer (slots taken here; the caller copies).
    ///
    /// # Errors
    /// [`MmError::BeyondDmaMask`] (no pool), [`MmError::SwiotlbTooLarge`],
    /// [`MmError::SwiotlbFull`].
    pub(crate) fn map_one(&self, mask: DmaMask, pa: PhysAddr, len: u64) -> Result<Seg, MmError> {
        if let Some(dma) = self.reachable(mask, pa, len) {
            return Ok(Seg {
                dma,
                len,
                pa,
                bounce: None,
            });
        }
        let pool = self.swiotlb.as_ref().ok_or(MmError::BeyondDmaMask {
            addr: pa,
            len,
            mask: mask.0,
        })?;
        let (bounce, _slots) = pool.alloc(len)?;
        match self.reachable(mask, bounce, len) {
            Some(dma) => Ok(Seg {
                dma,
                len,
                pa,
                bounce: Some(bounce),
            }),
            None => {
                pool.free(bounce, len);
                Err(MmError::BeyondDmaMask {
                    addr: bounce,
                    len,
                    mask: mask.0,
                })
            }
        }
    }

    /// Bus address of an MMIO / peer range (never bounced: a bounce buffer is RAM) for a device
    /// with `mask`.
    ///
    /// # Errors
    /// [`MmError::BeyondDmaMask`].
    pub(crate) fn map_resource(
        &self,
        mask: DmaMask,
        pa: PhysAddr,
        len: u64,
    ) -> Result<Seg, MmError> {
        let dma = self
            .reachable(mask, pa, len)
            .ok_or(MmError::BeyondDmaMask {
                addr: pa,
                len,
                mask: mask.0,
            })?;
        Ok(Seg {
            dma,
            len,
            pa,
            bounce: None,
        })
    }

    /// The bus address of a buffer allocated in [`Direct::zone`], for a device with `mask`.
    ///
    /// # Errors
    /// [`MmError::BeyondDmaMask`] if it is not reachable after all.
    pub(crate) fn map_buffer(&self, mask: DmaMask, pa: PhysAddr, len: u64) -> Result<Seg, MmError> {
        self.map_resource(mask, pa, len)
    }

    /// Gives back the bounce slots of `segs`.
    pub(crate) fn release(&self, segs: &[Seg]) {
        if let Some(pool) = &self.swiotlb {
            for s in segs {
                if let Some(b) = s.bounce {
                    pool.free(b, s.len);
                }
            }
        }
    }

    /// What the bus does with `dma..dma + len`: subtract the offset; the range must be within
    /// the mask and have RAM (an allocated frame of `phys`, a swiotlb slot being just RAM) or a
    /// mapped resource (a live mapping of `registry`) behind every page.
    pub(crate) fn bus_to_phys(
        &self,
        phys: &PhysMem,
        registry: &Mutex<Registry>,
        dma: DmaAddr,
        len: u64,
    ) -> Result<PhysAddr, BusFault> {
        // Zero length and the DMA mask: checked by the caller (`DmaOps::bus_to_phys`).
        let fault = |reason| BusFault { dma, reason };
        let pa = self
            .phys_addr(dma)
            .ok_or(fault(BusFaultReason::BelowBusOffset {
                offset: self.bus_offset,
            }))?;
        let end = pa + len;
        let mut page = pa.align_down(PAGE_SIZE);
        while page < end {
            let addr = page.max(pa);
            if !phys.is_allocated(addr) && !self.resource_at(registry, addr) {
                return Err(fault(BusFaultReason::NoMemory { addr }));
            }
            page = page + PAGE_SIZE;
        }
        Ok(pa)
    }

    /// Whether a live `map_resource` mapping of `registry` covers `pa`.
    fn resource_at(&self, registry: &Mutex<Registry>, pa: PhysAddr) -> bool {
        let Some(dma) = self.bus_addr(pa) else {
            return false;
        };
        let reg = registry.lock();
        reg.intersecting(dma, dma.saturating_add(1))
            .into_iter()
            .any(|id| reg.get(id).is_some_and(|m| m.kind == MappingKind::Resource))
    }
}
