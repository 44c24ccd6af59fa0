//! Dirty tracking: which leaves the device has written through since they were last cleared,
//! for formats whose hardware records it in the leaf ([`Format::DIRTY_TRACKING`]: ARM LPAE
//! stage 1 with DBM; AMD v1 and VT-d second stage with their D bit, as generic_pt's
//! `pt_entry_is_write_dirty` / `pt_entry_make_write_clean` in fmt/amdv1.h and fmt/vtdss.h).
//!
//! After Linux's io-pgtable-arm.c (`IO_PGTABLE_QUIRK_ARM_HD`, `arm_lpae_prot_to_pte`,
//! `arm_lpae_read_and_clear_dirty`, `iopte_writeable_dirty`, `iopte_set_writeable_clean`) and
//! the iommufd interface it serves (include/linux/iommu.h `iommu_dirty_ops`,
//! `iommu_dirty_bitmap_record`, `IOMMU_DIRTY_NO_CLEAR`):
//!
//! - tracking is turned on for a table before anything is mapped in it
//!   ([`PageTable::enable_dirty_tracking`], the io-pgtable quirk given at creation), and only
//!   for a coherent walker (arm-smmu-v3 `arm_smmu_dbm_capable`: the hardware's update of a leaf
//!   must be visible to the CPU without cache maintenance);
//! - writable leaves are then mapped *writable-clean* (Arm: DBM | AP\[2\]; AMD v1, VT-d: D
//!   clear). The hardware's first write through such a leaf atomically makes it
//!   *writable-dirty* (Arm: AP\[2\] cleared, Arm ARM D8.4.6 "Hardware management of the dirty
//!   state", SMMUv3 HTTU with CD.TCR.HD; AMD v1, VT-d: D set);
//! - [`PageTable::read_and_clear_dirty`] reports the dirty leaves of a range and (unless told
//!   not to, `IOMMU_DIRTY_NO_CLEAR`) makes them writable-clean again, atomically with respect
//!   to the hardware's own update, and adds each cleared leaf to the gather: the device TLB may
//!   hold the writable-dirty translation, and a write through it would not touch the table, so
//!   it would go unrecorded until that TLB entry is invalidated.
//!
//! Deliberate difference from io-pgtable-arm.c: the kernel maps writable leaves with DBM alone
//! (writable-dirty) and iommufd clears the whole range when tracking starts
//! (`iopt_set_dirty_tracking`, `iopt_clear_dirty_data`); here writable leaves are mapped
//! writable-clean, so a leaf reads dirty only once the device wrote through it. Why: iommufd
//! serves live migration, where an IOVA whose mapping is new must be sent again whether or not
//! the device wrote it; a driver here asks which pages of its buffers the device wrote (damage
//! for a display or a compressor, what to write back), and a new mapping is not a write. A
//! caller that wants the kernel's report adds the ranges it mapped since its last read (it
//! made those maps). A block split
//! by [`PageTable::unmap_split`] is the exception: its leaves are made writable-dirty, since the
//! block's dirty state cannot be told per leaf (reporting too much is safe, too little is not).

use super::{check_range, PageTable};
use crate::atomic_pte;
use crate::format::Geometry;
use crate::{Error, Format, Gather, Iova, Prot, TableAlloc};
use core::sync::atomic::Ordering;

impl<F: Format, A: TableAlloc> PageTable<F, A> {
    /// Turns on dirty tracking for this table: from now on a writable leaf is mapped
    /// writable-clean and the device's MMU records its first write through it in the leaf
    /// (its context must have hardware dirty-state update on: SMMUv3 CD.TCR.HD), for
    /// [`PageTable::read_and_clear_dirty`] to report. The io-pgtable quirk
    /// `IO_PGTABLE_QUIRK_ARM_HD`, given here instead of at creation; idempotent.
    ///
    /// Errors, each leaving the table as it was:
    /// [`Error::DirtyTrackingUnsupported`] (the format has no dirty state:
    /// [`Format::DIRTY_TRACKING`]), [`Error::DirtyTrackingNeedsCoherentWalk`] (the table was
    /// made with `coherent_walk: false`), [`Error::AlreadyMapped`] (a leaf is mapped: `iova` is
    /// the lowest one; it was mapped without the dirty-state encoding and would never be
    /// reported).
    pub fn enable_dirty_tracking(&mut self) -> Result<(), Error> {
        if !F::DIRTY_TRACKING {
            return Err(Error::DirtyTrackingUnsupported { format: F::NAME });
        }
        if !self.coherent {
            return Err(Error::DirtyTrackingNeedsCoherentWalk);
        }
        if self.dirty_tracking {
            return Ok(());
        }
        let end = super::limit(self.ias);
        if let Some(at) = self.first_mapped(self.root, self.start, 0, end) {
            return Err(Error::AlreadyMapped { iova: Iova(at) });
        }
        self.dirty_tracking = true;
        self.leaf_attr_cache = None;
        Ok(())
    }

    /// Whether dirty tracking is on ([`PageTable::enable_dirty_tracking`]).
    pub fn dirty_tracking(&self) -> bool {
        self.dirty_tracking
    }

    /// Reports every writable-dirty leaf in `[iova, iova + size)` (bytes, granule-aligned) as
    /// `record(first IOVA of the leaf, leaf size in bytes)`, in IOVA order: a block is reported
    /// whole (from its first IOVA, at its full size, also where the range covers part of it),
    /// as `iommu_dirty_bitmap_record` is given it by `arm_lpae_read_and_clear_dirty`.
    ///
    /// With `clear`, each reported leaf is made writable-clean again (Arm: AP\[2\] set back,
    /// `iopte_set_writeable_clean`), with an atomic read-modify-write of the entry so that an
    /// update the hardware makes meanwhile (to this or another leaf) is not lost, and its range
    /// is added to `gather`. Complete the gather ([`PageTable::iotlb_sync`]) before relying on
    /// the next report: until then the device TLB may still hold the writable-dirty
    /// translation, and a write through it changes nothing in the table. Without `clear`
    /// (iommufd's `IOMMU_DIRTY_NO_CLEAR`) nothing is written and nothing gathered.
    ///
    /// Errors, each leaving the table and `gather` as they were: [`Error::ForeignGather`],
    /// [`Error::DirtyTrackingOff`], [`Error::ZeroSize`], [`Error::Misaligned`],
    /// [`Error::Overflow`], [`Error::OutOfRange`] (beyond `2^ias`).
    pub fn read_and_clear_dirty(
        &mut self,
        iova: Iova,
        size: u64,
        clear: bool,
        gather: &mut Gather,
        mut record: impl FnMut(Iova, u64),
    ) -> Result<(), Error> {
        if !self.dirty_tracking {
            return Err(Error::DirtyTrackingOff);
        }
        let end = check_range::<F>(("iova", "size"), iova.0, size, self.ias)?;
        if clear {
            gather.claim(self.id)?;
        }
        self.dirty_level(
            self.root,
            self.start,
            iova.0,
            end,
            clear,
            gather,
            &mut record,
        );
        Ok(())
    }

    /// The attributes a map writes for leaves of `level` with `prot`: the format's, made
    /// writable-clean if dirty tracking is on and `prot` grants writes (io-pgtable-arm.c
    /// `arm_lpae_prot_to_pte` with `IO_PGTABLE_QUIRK_ARM_HD`, see the module doc).
    #[inline(always)]
    pub(super) fn map_leaf_attrs(&self, level: usize, prot: Prot) -> F::Pte {
        let attrs = F::leaf_attrs(level, prot);
        if F::DIRTY_TRACKING && self.dirty_tracking && prot.contains(Prot::WRITE) {
            F::with_dirty_clear(attrs)
        } else {
            attrs
        }
    }

    /// The attributes of the leaves a block split writes: as [`Self::map_leaf_attrs`], but
    /// writable-dirty (the block's dirty state, or a write the hardware records in the block
    /// while it is being split, cannot be told per leaf: report too much rather than too little).
    #[inline(always)]
    pub(super) fn split_leaf_attrs(&self, level: usize, prot: Prot) -> F::Pte {
        let attrs = self.map_leaf_attrs(level, prot);
        if F::DIRTY_TRACKING && self.dirty_tracking && prot.contains(Prot::WRITE) {
            F::with_dirty_set(attrs)
        } else {
            attrs
        }
    }

    /// The walk of [`PageTable::read_and_clear_dirty`] under `node` (of `level`), over
    /// `[start, end)`.
    #[allow(clippy::too_many_arguments)]
    fn dirty_level(
        &mut self,
        node: u32,
        level: usize,
        start: u64,
        end: u64,
        clear: bool,
        gather: &mut Gather,
        record: &mut impl FnMut(Iova, u64),
    ) {
        let shift = Geometry::<F>::SHIFT[level];
        let esize = 1u64 << shift;
        let mut a = start;
        while a < end {
            let idx = Geometry::<F>::index(level, a);
            let entry_start = a & !(esize - 1);
            let chunk_end = end.min(entry_start.saturating_add(esize));
            let pte = self.load_entry(node, idx);
            if pte != self.empty[level] {
                if F::is_table(level, pte) {
                    let child = self.nodes[node as usize].children[idx];
                    self.dirty_level(child, level + 1, a, chunk_end, clear, gather, record);
                } else if F::is_dirty(pte) {
                    record(Iova(entry_start), esize);
                    if clear {
                        self.clear_dirty_entry(node, idx);
                        gather.add_range(Iova(entry_start), esize);
                    }
                }
            }
            a = chunk_end;
        }
    }

    /// Reads entry `idx` of `node` with an atomic load: the device may be setting a leaf dirty
    /// at the same time (the kernel's `READ_ONCE` in `io_pgtable_visit_dirty`).
    #[inline(always)]
    fn load_entry(&self, node: u32, idx: usize) -> F::Pte {
        let p = self.nodes[node as usize].page.cpu.as_ptr() as *mut F::Pte;
        // SAFETY: as in `clear_dirty_entry`: an entry of a live table, aligned for the atomic
        // type of its size, whose racing accesses are all atomic.
        unsafe { atomic_pte::load(p.add(idx), Ordering::Acquire) }
    }

    /// Makes the dirty leaf at `idx` of `node` writable-clean with a compare-and-swap loop on
    /// the entry: the hardware may update the entry concurrently (it only ever moves a leaf
    /// from clean to dirty, or sets the access flag), and a plain store could undo that.
    fn clear_dirty_entry(&mut self, node: u32, idx: usize) {
        let p = self.nodes[node as usize].page.cpu.as_ptr() as *mut F::Pte;
        // SAFETY: `idx` is the index of an entry of this live table (computed by
        // `Geometry::index`, below the level's entry count, so inside the page: the same
        // invariant as `PageTable::read`/`write`). The page is aligned to its size and entries
        // are `u32`/`u64` (sealed `PteWord`) at multiples of their size, so the pointer is
        // aligned for the atomic type of the same size. Every access that can race with this one
        // is the device's, which updates entries with atomic read-modify-writes as hardware
        // does; the CPU side only writes table memory through `&mut self`, which we hold.
        unsafe {
            atomic_pte::fetch_update(p.add(idx), |pte| {
                F::is_dirty(pte).then(|| F::with_dirty_clear(pte))
            })
        };
        self.stats.pte_stores += 1;
    }
}
