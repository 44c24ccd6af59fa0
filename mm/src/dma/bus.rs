//! The bus, as the simulated device sees it: what happens to an address a device emits.
//!
//! Owns the translation of a device access to CPU physical addresses (the backend's address rule:
//! `dma - bus_offset` for direct DMA, a walk of the system IOMMU's tables otherwise) and the
//! device's reads and writes of memory through it, page by page. It never changes a mapping:
//! a device access that nothing maps is a [`BusFault`], not an error of the DMA API.

use devmmu_pagetable::DmaAddr;

use super::types::{BusFault, BusFaultReason};
use super::{Backend, DmaOps};
use crate::phys::{PhysAddr, PAGE_SIZE};
use crate::MmError;

impl DmaOps {
    /// What the bus does with an access of `len` bytes at `dma` emitted by this device (`write`:
    /// the device writes): the CPU physical address of the first byte, the whole range being
    /// physically contiguous.
    ///
    /// Direct: `dma - bus_offset`; the range must lie within the DMA mask and on allocated frames
    /// (a swiotlb slot is just RAM) or a mapped resource. IOMMU: a walk of the domain's page
    /// table in physical memory for every page of the range, never cached; it faults if a page is
    /// unmapped or, for `write`, read-only.
    ///
    /// # Errors
    /// A [`BusFault`] naming the address and the reason.
    pub fn bus_to_phys(&self, dma: DmaAddr, len: u64, write: bool) -> Result<PhysAddr, BusFault> {
        let fault = |reason| BusFault { dma, reason };
        if len == 0 {
            return Err(fault(BusFaultReason::ZeroLength));
        }
        if !self.dev.mask.covers(dma.get(), len) {
            return Err(fault(BusFaultReason::BeyondMask {
                mask: self.dev.mask.0,
            }));
        }
        match &self.backend {
            Backend::Direct(d) => d.bus_to_phys(&self.phys, &self.registry, dma, len),
            Backend::Iommu(i) => i.bus_to_phys(&self.phys, dma, len, write),
            Backend::Vfio(v) => v.bus_to_phys(dma, len),
        }
    }

    /// The device reads `buf.len()` bytes at bus address `dma`: each page translated with
    /// [`DmaOps::bus_to_phys`], then read with [`PhysMem::device_read`] as this device's
    /// coherency says (a non-coherent device reads RAM, not the CPU caches).
    ///
    /// # Errors
    /// The first [`BusFault`]; `buf` may then be partly written.
    ///
    /// [`PhysMem::device_read`]: crate::phys::PhysMem::device_read
    pub fn bus_read(&self, dma: DmaAddr, buf: &mut [u8]) -> Result<(), BusFault> {
        let coherent = self.dev.coherent;
        let phys = &self.phys;
        self.bus_pages(dma, buf.len() as u64, false, |pa, pos, n| {
            phys.device_read(pa, &mut buf[pos..pos + n], coherent)
        })
    }

    /// The device writes `data` at bus address `dma` (see [`DmaOps::bus_read`]); a non-coherent
    /// device writes RAM, which the CPU sees only after invalidating.
    ///
    /// # Errors
    /// The first [`BusFault`]; the pages before it were written.
    pub fn bus_write(&self, dma: DmaAddr, data: &[u8]) -> Result<(), BusFault> {
        let coherent = self.dev.coherent;
        let phys = &self.phys;
        self.bus_pages(dma, data.len() as u64, true, |pa, pos, n| {
            phys.device_write(pa, &data[pos..pos + n], coherent)
        })
    }

    /// Splits `dma..dma + len` at page boundaries, translates each page with
    /// [`DmaOps::bus_to_phys`] and calls `access(pa, offset in the access, bytes)` on it.
    fn bus_pages(
        &self,
        dma: DmaAddr,
        len: u64,
        write: bool,
        mut access: impl FnMut(PhysAddr, usize, usize) -> Result<(), MmError>,
    ) -> Result<(), BusFault> {
        if len == 0 {
            return Err(BusFault {
                dma,
                reason: BusFaultReason::ZeroLength,
            });
        }
        let end = dma.checked_add(len).ok_or(BusFault {
            dma,
            reason: BusFaultReason::BeyondMask {
                mask: self.dev.mask.0,
            },
        })?;
        let mut cur = dma;
        while cur < end {
            let n = (end - cur).min(PAGE_SIZE - (cur - cur.align_down(PAGE_SIZE)));
            let pa = self.bus_to_phys(cur, n, write)?;
            access(pa, (cur - dma) as usize, n as usize).map_err(|_| BusFault {
                dma: cur,
                reason: BusFaultReason::NoMemory { addr: pa },
            })?;
            cur += n;
        }
        Ok(())
    }
}
