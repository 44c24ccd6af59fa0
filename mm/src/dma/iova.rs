//! The two-step IOVA API (Linux 6.17: `dma_iova_try_alloc`, `dma_iova_link`, `dma_iova_sync`,
//! `dma_iova_unlink`, `dma_iova_free`; drivers/iommu/dma-iommu.c).
//!
//! A driver that builds one large DMA-contiguous range out of many pieces reserves the IOVA
//! once, links physical ranges into it one by one (IOPTEs written, no IOTLB maintenance), and
//! makes the whole batch visible with a single `iova_sync`. Only a device behind a system IOMMU
//! can do this; direct DMA refuses, as `dma_iova_try_alloc` returns false there, and the caller
//! falls back to `map_page` / `map_sg`. Each link is a live mapping of kind
//! [`MappingKind::IovaLink`] (so `sync_single_*` and the debug checks see it).

use devmmu_pagetable::DmaAddr;

use super::registry::{IovaRec, Mapping, Seg};
use super::stats::Counters;
use super::sync::{self, Piece};
use super::types::{DmaDirection, MappingKind};
use super::{Backend, DmaDiag, DmaOps, IommuDomain};
use crate::phys::{PhysAddr, PAGE_SIZE};
use crate::{AddressSpace, MmError};

/// A range of IOVA space reserved by [`DmaOps::iova_alloc`] (the kernel's `struct
/// dma_iova_state`). Not `Clone`: it is given back once, to [`DmaOps::iova_free`]. Dropping it
/// without freeing leaks the IOVA until the device is detached (which reports it).
#[derive(Debug, PartialEq, Eq)]
pub struct IovaRange {
    start: DmaAddr,
    size: u64,
    id: u64,
}

impl IovaRange {
    /// Bus address (IOVA) of byte 0 of the range.
    pub fn addr(&self) -> DmaAddr {
        self.start
    }

    /// Usable size in bytes (the request rounded up to whole pages).
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl DmaOps {
    fn iommu(&self) -> Result<&IommuDomain, MmError> {
        match &self.backend {
            Backend::Iommu(i) => Ok(i),
            Backend::Direct(_) | Backend::Vfio(_) => Err(MmError::IovaApiUnsupported),
        }
    }

    /// The live record of `range`, checking `offset..offset + len` lies inside it.
    fn iova_rec(&self, range: &IovaRange, offset: u64, len: u64) -> Result<IovaRec, MmError> {
        let rec = self
            .registry
            .lock()
            .iova_ranges
            .get(&range.id)
            .copied()
            .ok_or(MmError::IovaRangeUnknown { iova: range.start })?;
        match offset.checked_add(len) {
            Some(end) if len > 0 && end <= rec.size => Ok(rec),
            _ if len == 0 => Err(MmError::ZeroSize),
            _ => Err(MmError::IovaOutOfRange {
                offset,
                len,
                size: rec.size,
            }),
        }
    }

    /// Reserves `size` bytes (rounded up to whole pages) of IOVA space, mapping nothing
    /// (`dma_iova_try_alloc`).
    ///
    /// # Errors
    /// [`MmError::IovaApiUnsupported`] on direct DMA (use `map_page`/`map_sg`);
    /// [`MmError::ZeroSize`]; [`MmError::DmaDetached`]; [`MmError::NoAddressSpace`].
    pub fn iova_alloc(&self, size: u64) -> Result<IovaRange, MmError> {
        let dom = self.iommu()?;
        self.check_attached()?;
        if size == 0 {
            return Err(MmError::ZeroSize);
        }
        let usable = size
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(MmError::NoAddressSpace {
                space: AddressSpace::SystemIova,
                size,
                limit: dom.limit(),
            })?;
        let start = dom.alloc_iova(usable)?.start;
        let mut reg = self.registry.lock();
        let id = reg.new_id();
        reg.iova_ranges.insert(
            id,
            IovaRec {
                start,
                size: usable,
            },
        );
        Ok(IovaRange {
            start,
            size: usable,
            id,
        })
    }

    /// Maps `len` bytes of RAM at `pa` at `offset` into `range` for direction `dir`
    /// (`dma_iova_link`): writes the IOPTEs of the covering pages and hands the bytes to the
    /// device (a clean if it is not coherent), without IOTLB maintenance: call
    /// [`DmaOps::iova_sync`] once for the batch before the device uses it. `offset` and `pa`
    /// must be page-aligned (the kernel allows an unaligned start only for the first link).
    ///
    /// # Errors
    /// [`MmError::IovaApiUnsupported`]; [`MmError::DmaDetached`];
    /// [`MmError::IovaRangeUnknown`]; [`MmError::ZeroSize`]; [`MmError::IovaOutOfRange`];
    /// [`MmError::Misaligned`] (`offset` or `pa`); [`MmError::BadPhysAddr`] (not RAM);
    /// [`MmError::IommuMap`] (e.g. `AlreadyMapped` when the pages are linked already). Nothing
    /// stays mapped on error.
    pub fn iova_link(
        &self,
        range: &IovaRange,
        offset: u64,
        pa: PhysAddr,
        len: u64,
        dir: DmaDirection,
    ) -> Result<(), MmError> {
        let dom = self.iommu()?;
        self.check_attached()?;
        let rec = self.iova_rec(range, offset, len)?;
        for v in [offset, pa.as_u64()] {
            if !v.is_multiple_of(PAGE_SIZE) {
                return Err(MmError::Misaligned {
                    value: v,
                    align: PAGE_SIZE,
                });
            }
        }
        self.check_ram(pa, len)?;
        let iova = rec.start + offset;
        let mapped = len.next_multiple_of(PAGE_SIZE);
        let prot = dir.prot(self.dev.coherent);
        dom.map_at(&self.counters, iova, pa, mapped, prot)?;
        let seg = Seg {
            dma: iova,
            len,
            pa,
            bounce: None,
        };
        if let Err(e) = sync::for_device(self, &[Piece::whole(&seg)], dir, true, false) {
            // Unmapping exactly what was just mapped splits no block: cannot fail.
            let _ = dom.unmap_range(&self.counters, iova, mapped);
            return Err(e);
        }
        self.registry.lock().insert(Mapping {
            kind: MappingKind::IovaLink,
            dir,
            handle: iova,
            len,
            segs: vec![seg],
            iova: None,
            device_owned: true,
            checked: false,
        });
        Counters::add(&self.counters.maps, 1);
        Ok(())
    }

    /// Makes the links written into `offset..offset + len` of `range` visible to the device:
    /// one IOTLB sync for the whole batch (`dma_iova_sync` -> `iommu_sync_map`), counted in
    /// [`DmaStats::iotlb_invalidations`](super::DmaStats::iotlb_invalidations).
    ///
    /// # Errors
    /// [`MmError::IovaApiUnsupported`], [`MmError::IovaRangeUnknown`], [`MmError::ZeroSize`],
    /// [`MmError::IovaOutOfRange`].
    pub fn iova_sync(&self, range: &IovaRange, offset: u64, len: u64) -> Result<(), MmError> {
        self.iommu()?;
        self.iova_rec(range, offset, len)?;
        Counters::add(&self.counters.iotlb_invalidations, 1);
        Ok(())
    }

    /// Unmaps the pages covering `offset..offset + len` of `range` (`dma_iova_unlink`): clears
    /// the IOPTEs and invalidates the IOTLB for the range, then hands the linked bytes in it back
    /// to the CPU (per link, with the link's direction). A link only partly inside keeps its
    /// other part. `offset` must be page-aligned. Unlinking pages with no link does nothing.
    /// A `dir` other than a link's is reported ([`DmaDiag::UnmapWrongDirection`]).
    ///
    /// # Errors
    /// [`MmError::IovaApiUnsupported`], [`MmError::IovaRangeUnknown`], [`MmError::ZeroSize`],
    /// [`MmError::IovaOutOfRange`], [`MmError::Misaligned`]; [`MmError::IommuMap`] if part of a
    /// 2 MiB / 1 GiB block had to be split and no table page was left (nothing changed);
    /// [`MmError::BadPhysAddr`] if linked frames were freed (the pages are unmapped all the
    /// same).
    pub fn iova_unlink(
        &self,
        range: &IovaRange,
        offset: u64,
        len: u64,
        dir: DmaDirection,
    ) -> Result<(), MmError> {
        let dom = self.iommu()?;
        let rec = self.iova_rec(range, offset, len)?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(MmError::Misaligned {
                value: offset,
                align: PAGE_SIZE,
            });
        }
        let lo = rec.start + offset;
        let end = rec.start + rec.size;
        // `offset + len <= size` and the range ends on a page: rounding up stays inside it.
        let hi = (lo + len)
            .checked_align_up(PAGE_SIZE)
            .map_or(end, |h| h.min(end));
        self.unlink(dom, lo, hi, Some(dir))
    }

    /// Unmaps `[lo, hi)` (page-aligned; the IOTLB invalidated, so the device is done with it),
    /// then removes the links intersecting it, re-registering the parts outside, and syncs the
    /// removed bytes for the CPU. If the unmap fails (a block split found no table page),
    /// nothing changed.
    fn unlink(
        &self,
        dom: &IommuDomain,
        lo: DmaAddr,
        hi: DmaAddr,
        dir: Option<DmaDirection>,
    ) -> Result<(), MmError> {
        dom.unmap_range(&self.counters, lo, hi - lo)?;
        let mut removed: Vec<Mapping> = Vec::new();
        {
            let mut reg = self.registry.lock();
            for id in reg.intersecting(lo, hi) {
                if reg.get(id).is_some_and(|m| m.kind == MappingKind::IovaLink) {
                    if let Some(m) = reg.remove(id) {
                        removed.push(m);
                    }
                }
            }
            for m in &removed {
                let s = m.segs[0];
                for (a, b) in [(s.dma, lo.min(s.end())), (hi.max(s.dma), s.end())] {
                    if a < b {
                        let seg = Seg {
                            dma: a,
                            len: b - a,
                            pa: s.pa + (a - s.dma),
                            bounce: None,
                        };
                        reg.insert(Mapping {
                            handle: a,
                            len: b - a,
                            segs: vec![seg],
                            ..m.clone()
                        });
                    }
                }
            }
        }
        let mut result = Ok(());
        for m in &removed {
            if let Some(d) = dir {
                if d != m.dir {
                    self.report(DmaDiag::UnmapWrongDirection {
                        dma: m.handle,
                        mapped_dir: m.dir,
                        unmap_dir: d,
                    });
                }
            }
            let s = m.segs[0];
            let (a, b) = (s.dma.max(lo), s.end().min(hi));
            let piece = Piece {
                seg: s,
                off: a - s.dma,
                n: b - a,
            };
            if let Err(e) = sync::for_cpu(self, &[piece], m.dir) {
                result = result.and(Err(e));
            }
            Counters::add(&self.counters.unmaps, 1);
        }
        result
    }

    /// Gives back an IOVA range (`dma_iova_free`, or `dma_iova_destroy` when links remain):
    /// whatever is still linked is unlinked first, as by [`DmaOps::iova_unlink`] over the whole
    /// range, then the IOVA is freed.
    ///
    /// # Errors
    /// [`MmError::IovaApiUnsupported`]; [`MmError::IovaRangeUnknown`] (another device's range);
    /// [`MmError::BadPhysAddr`] as for `iova_unlink` (the range is freed all the same).
    /// Unmapping a whole range splits no block, so it cannot run out of table pages.
    pub fn iova_free(&self, range: IovaRange) -> Result<(), MmError> {
        let dom = self.iommu()?;
        let rec = self
            .registry
            .lock()
            .iova_ranges
            .remove(&range.id)
            .ok_or(MmError::IovaRangeUnknown { iova: range.start })?;
        let r = self.unlink(dom, rec.start, rec.start + rec.size, None);
        dom.free_iova(rec.start);
        r
    }
}
