//! Device VMs: one device address space each, with its own page-table root, bound to buffer
//! objects the way a GPU driver's VM_BIND does.
//!
//! A [`Vm`] owns a range allocator over its IOVA space ([`crate::range`], in the manner of
//! `drm_mm`), a page table of the device's MMU format whose table pages are DMA-mapped for the
//! device ([`crate::dma::TablePool`] with [`crate::dma::TableBus::Dma`], below the DMA mask so
//! they are never bounced), and its bindings. It writes IOPTEs from the `DmaAddr`s the device's
//! system DMA ops return for a BO: it never asks for a physical address.
//!
//! Ordering, as the Asahi driver writes it down: on bind, the IOPTEs are written (and cleaned
//! for a non-coherent walker), then the TLB is invalidated for what the gather collected, then
//! the call returns. On unbind: unmap, invalidate, free the emptied tables, and only then
//! release the DMA mappings of the BO.

use std::collections::BTreeMap;
use std::sync::Arc;

use devmmu_pagetable::{DmaAddr, Format, Gather, Iova, PageTable, PageTableConfig, Prot, Stats};
use parking_lot::Mutex;

use crate::bo::{Bo, BoAttachment};
use crate::device::{
    dispatch_format, dispatch_per_format, Device, FormatFamily, MmuFormat, PerFormat, VmLeak,
};
use crate::dma::{DmaDirection, TableBus, TablePool};
use crate::phys::PAGE_SIZE;
use crate::range::{AllocMode, RangeAllocator, RangeError};
use crate::{AddressSpace, MmError};

/// Where [`Vm::bind`] places a binding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// Anywhere free, best fit, aligned to the largest leaf size the format can use for it (so
    /// ARM LPAE gets 2 MiB blocks where the BO's bus addresses allow).
    Anywhere,
    /// Anywhere free, lowest address first.
    Lowest,
    /// Anywhere free, highest address first.
    Highest,
    /// Exactly at this IOVA (page-aligned); refused if any of it is taken.
    Fixed(Iova),
}

/// One mapped leaf run of a VM, merged for dumps: consecutive leaves of one level whose IOVAs and
/// bus addresses are both contiguous and whose permissions agree.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MappedRun {
    /// First IOVA.
    pub iova: Iova,
    /// First bus address.
    pub dma: DmaAddr,
    /// Length in bytes.
    pub size: u64,
    /// Leaf size in bytes (4 KiB page, 2 MiB or 1 GiB block).
    pub page_size: u64,
    /// Level of the leaves (0 = root).
    pub level: usize,
    /// Permissions as encoded.
    pub prot: Prot,
}

/// A binding as [`Vm::bindings`] reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BindingInfo {
    /// First IOVA.
    pub iova: Iova,
    /// Size in bytes.
    pub size: u64,
    /// Offset into the BO in bytes.
    pub bo_offset: u64,
    /// Permissions asked for (plus [`Prot::CACHE`] for a coherent device).
    pub prot: Prot,
    /// What the IOPTEs grant, as the MMU format encodes `prot` (`Format::effective_prot`).
    /// Wider than `prot` only on a device whose config accepts unenforced protections
    /// ([`DeviceConfig::accept_unenforced_prot`](crate::device::DeviceConfig)).
    pub granted: Prot,
}

impl BindingInfo {
    /// Whether the device is held to `prot`: the IOPTEs grant no write that `prot` does not.
    pub fn is_enforced(&self) -> bool {
        !self.granted.contains(Prot::WRITE) || self.prot.contains(Prot::WRITE)
    }
}

/// What the device's MMU needs to walk this VM: the model reads it, a real driver would write
/// the root into the context's registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MmuContext {
    /// Address-space id, the tag of this VM's TLB entries.
    pub asid: u32,
    /// Bus address of the root table.
    pub root: DmaAddr,
    /// MMU format.
    pub format: MmuFormat,
    /// The dummy page empty entries point at (Intel IPU format).
    pub dummy_page: Option<DmaAddr>,
}

/// One binding: a VA range of this VM mapping BO bytes `bo_offset..bo_offset + size` through
/// the device's one mapping of the BO (`drm_gpuva` over a `drm_gpuvm_bo`).
struct Binding {
    size: u64,
    bo_offset: u64,
    prot: Prot,
    granted: Prot,
    /// The device's mapping of the BO, shared with every other binding of the BO on this device
    /// (in this VM and the device's other VMs) and with the pieces a partial unbind leaves. It
    /// is released when its last user goes.
    dma: Arc<BoAttachment>,
}

/// The page tables of the registered formats ([`MmuFormat`]): `PageTable<F, TablePool>`.
struct PageTables;

impl FormatFamily for PageTables {
    type Of<F: Format> = PageTable<F, TablePool>;
}

/// A VM's page table, of its device's format.
type Table = PerFormat<PageTables>;

/// Static dispatch over the registered formats: the page-table code is monomorphised per format.
macro_rules! with_table {
    ($table:expr, $pt:ident => $body:expr) => {
        dispatch_per_format!($table, $pt => $body)
    };
}

struct Inner {
    table: Table,
    va: RangeAllocator,
    bindings: BTreeMap<u64, Binding>,
}

/// A device address space with its own page-table root.
pub struct Vm {
    device: Arc<Device>,
    asid: u32,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("asid", &self.asid)
            .field("format", &self.device.config().mmu)
            .finish()
    }
}

/// First usable IOVA of every VM: page 0 stays unmapped so a NULL device pointer faults.
pub const VA_START: u64 = PAGE_SIZE;

impl Vm {
    /// Creates a VM on `device`: an empty page table (root allocated and DMA-mapped) and a VA
    /// space of `[VA_START, 2^iova_bits)`.
    ///
    /// # Errors
    /// - [`MmError::DmaDetached`]: the device was detached ([`Device::detach`]).
    /// - [`MmError::PageTable`]: no memory for the root (or the IPU format's dummy pages), or a
    ///   table page the format cannot address.
    pub fn new(device: &Arc<Device>) -> Result<Vm, MmError> {
        let cfg = device.config();
        let ops = device.dma_ops();
        ops.check_attached()?;
        let pool = TablePool::new(
            ops.phys().clone(),
            ops.dma_zone(),
            TableBus::Dma(ops.clone()),
        );
        let ptcfg = PageTableConfig {
            coherent_walk: cfg.coherent_walk,
        };
        let table = dispatch_format!(cfg.mmu, F => Table::new::<F>(PageTable::new(pool, ptcfg)?));
        let end = 1u64 << cfg.mmu.iova_bits();
        let va = RangeAllocator::new(VA_START, end).map_err(MmError::from)?;
        Ok(Vm {
            device: device.clone(),
            asid: device.alloc_asid(),
            inner: Mutex::new(Inner {
                table,
                va,
                bindings: BTreeMap::new(),
            }),
        })
    }

    /// The device this VM belongs to.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// What the MMU needs to walk this VM.
    pub fn context(&self) -> MmuContext {
        let inner = self.inner.lock();
        let (root, dummy_page) = with_table!(&inner.table, pt => (pt.root(), pt.dummy_page()));
        MmuContext {
            asid: self.asid,
            root,
            format: self.device.config().mmu,
            dummy_page,
        }
    }

    /// Turns on dirty tracking for this VM's page table
    /// ([`PageTable::enable_dirty_tracking`]): writable bindings made from now on are mapped
    /// writable-clean, and the device's MMU (whose context then has hardware dirty-state update
    /// on: SMMUv3 CD.TCR.HD; the model reads [`Vm::dirty_tracking`]) records its first write
    /// through each leaf there, for [`Vm::read_and_clear_dirty`]. Idempotent.
    ///
    /// # Errors
    /// [`MmError::PageTable`] with, each leaving the VM as it was:
    /// `DirtyTrackingUnsupported` (the device's MMU format has no dirty state: the Intel IPU
    /// format), `DirtyTrackingNeedsCoherentWalk` (the device's table walk is not
    /// coherent), `AlreadyMapped` (something is bound already).
    pub fn enable_dirty_tracking(&self) -> Result<(), MmError> {
        let mut inner = self.inner.lock();
        with_table!(&mut inner.table, pt => pt.enable_dirty_tracking())?;
        Ok(())
    }

    /// Whether dirty tracking is on ([`Vm::enable_dirty_tracking`]).
    pub fn dirty_tracking(&self) -> bool {
        with_table!(&self.inner.lock().table, pt => pt.dirty_tracking())
    }

    /// Reports each leaf of `[iova, iova + size)` (bytes, 4 KiB-aligned) the device wrote
    /// through since it was bound or last cleared, as `record(first IOVA, leaf size in bytes)`
    /// in IOVA order (a 2 MiB / 1 GiB block whole), and with `clear` makes them clean again
    /// and invalidates the device TLB for them before returning, so that the device's next
    /// write to them is recorded (iommufd's `IOMMU_HWPT_GET_DIRTY_BITMAP`; without `clear`,
    /// `IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR`). See
    /// [`PageTable::read_and_clear_dirty`].
    ///
    /// # Errors
    /// [`MmError::PageTable`] with `DirtyTrackingOff`, `ZeroSize`, `Misaligned`, `Overflow`
    /// or `OutOfRange`; nothing reported or changed.
    pub fn read_and_clear_dirty(
        &self,
        iova: Iova,
        size: u64,
        clear: bool,
        mut record: impl FnMut(Iova, u64),
    ) -> Result<(), MmError> {
        let mut inner = self.inner.lock();
        let mut gather = Gather::new();
        let r = with_table!(&mut inner.table, pt => pt.read_and_clear_dirty(iova, size, clear, &mut gather, &mut record));
        complete(&self.device, self.asid, &mut inner.table, &mut gather);
        Ok(r?)
    }

    /// Page-table counters: IOPTE stores, PTE lines cleaned, tables allocated and freed, ...
    pub fn pt_stats(&self) -> Stats {
        with_table!(&self.inner.lock().table, pt => pt.stats())
    }

    /// Live page-table pages (root included, dummy pages excluded).
    pub fn table_count(&self) -> usize {
        with_table!(&self.inner.lock().table, pt => pt.table_count())
    }

    /// Binds `size` bytes of `bo` from `bo_offset` into this VM with `prot` and returns the IOVA.
    ///
    /// Takes the device's one DMA mapping of the BO ([`Bo::attach`], `Bidirectional` as GEM shmem
    /// maps objects): the first binding of the BO on this device maps it, later ones (any
    /// sub-range, this VM or another VM of the device) share that mapping, with no copy and no
    /// cache maintenance, so what the device wrote through one binding is what it reads through
    /// another. Then writes the IOPTEs for the sub-range (cleaning them if the walker is not
    /// coherent), invalidates the device TLB for what the gather says, and only then returns.
    ///
    /// `prot` is what the device may do; the IOPTEs encode it as the format can
    /// ([`BindingInfo::granted`]). A format that cannot deny writes (the Intel IPU format has no
    /// permission bits) refuses a protection without [`Prot::WRITE`] unless the device's config
    /// accepts unenforced protections. A write-only `prot` is accepted where the format can
    /// only grant read+write (as io-pgtable-arm's stage 1 does).
    ///
    /// # Errors
    /// Each leaves the VM, the BO's mappings and the table pool as they were:
    /// [`MmError::ZeroSize`], [`MmError::Misaligned`] (offset, size or IOVA not a multiple of
    /// 4 KiB), [`MmError::OutOfBounds`] (beyond the BO), [`MmError::NoAccess`],
    /// [`MmError::ProtNotEnforced`], [`MmError::VaInUse`] (a fixed IOVA overlaps a binding),
    /// [`MmError::VaOutOfRange`] (beyond the VA space), [`MmError::NoAddressSpace`], the errors of
    /// [`Bo::attach`] (DMA mapping errors, [`MmError::SharedBounce`],
    /// [`MmError::AttachDirection`]), [`MmError::PageTable`] (no memory for a table).
    pub fn bind(
        &self,
        bo: &Arc<Bo>,
        bo_offset: u64,
        size: u64,
        placement: Placement,
        prot: Prot,
    ) -> Result<Iova, MmError> {
        if size == 0 {
            return Err(MmError::ZeroSize);
        }
        for v in [bo_offset, size] {
            if v % PAGE_SIZE != 0 {
                return Err(MmError::Misaligned {
                    value: v,
                    align: PAGE_SIZE,
                });
            }
        }
        if bo_offset.checked_add(size).is_none_or(|e| e > bo.size()) {
            return Err(MmError::OutOfBounds {
                offset: bo_offset,
                len: size,
                size: bo.size(),
            });
        }
        if !prot.grants_access() {
            return Err(MmError::NoAccess { prot });
        }
        let cfg = self.device.config();
        let granted = cfg.mmu.effective_prot(prot);
        if granted.contains(Prot::WRITE)
            && !prot.contains(Prot::WRITE)
            && !cfg.accept_unenforced_prot
        {
            return Err(MmError::ProtNotEnforced {
                format: cfg.mmu.name(),
                prot,
                granted,
            });
        }
        let prot = if cfg.coherent {
            prot | Prot::CACHE
        } else {
            prot
        };
        let granted = cfg.mmu.effective_prot(prot);
        let mut inner = self.inner.lock();
        let va = self.alloc_va(&mut inner, size, placement)?;
        let attachment = match bo.attach(self.device.dma_ops(), DmaDirection::Bidirectional) {
            Ok(a) => a,
            Err(e) => {
                let _ = inner.va.free(va);
                return Err(e);
            }
        };
        let segs = slice_segments(attachment.sg().dma(), bo_offset, size);
        let pool_mark = with_table!(&inner.table, pt => pt.table_alloc().mark());
        let mut gather = Gather::new();
        let r = with_table!(&mut inner.table, pt => pt.map_segments(Iova(va), &segs, prot, &mut gather));
        complete(&self.device, self.asid, &mut inner.table, &mut gather);
        if let Err(e) = r {
            // Give back the table-pool growth this bind made (its tables were all freed by the
            // roll-back above), so that a failed bind holds no frames and no DMA mappings.
            // SAFETY: `shrink_to` gives back only chunks whose pages are all free (none is a
            // table of this VM's page table), and the pool stays the table's allocator.
            with_table!(&mut inner.table, pt => unsafe { pt.table_alloc_mut() }.shrink_to(pool_mark));
            let _ = inner.va.free(va);
            return Err(e.into());
        }
        inner.bindings.insert(
            va,
            Binding {
                size,
                bo_offset,
                prot,
                granted,
                dma: attachment,
            },
        );
        Ok(Iova(va))
    }

    /// Unbinds `[iova, iova + size)`, which may cover parts of one or more bindings and holes
    /// between them (at least one page must be bound). A binding cut by the range is split in
    /// the manner of GPUVM's remap step: the pieces before and after stay bound with the same
    /// IOPTEs. Returns the bytes unbound.
    ///
    /// Order: IOPTEs cleared (cleaned if needed), TLB invalidated, emptied tables freed, then
    /// the DMA mappings of fully unbound BOs released.
    ///
    /// Blocks: a bind places 2 MiB / 1 GiB blocks wherever the format and the bus addresses
    /// allow, and VM_BIND lets an unbind cut a binding anywhere, so an unbind may cut a block.
    /// The VM then splits it with break-before-make
    /// ([`PageTable::unmap_split`](devmmu_pagetable::PageTable::unmap_split)): the block entry is
    /// cleared, the TLB invalidated, then a table of smaller leaves linked. While the call runs,
    /// the part of that block that stays bound is briefly unmapped, so the device must not use
    /// it during the unbind (as with a GPU driver's remap); each cut block costs one extra TLB
    /// invalidation. A table written over a live block without that invalidation would be a
    /// TLB conflict on the device ([`FaultReason::TlbConflict`](crate::model::FaultReason)).
    ///
    /// Errors, each leaving the VM as it was: [`MmError::ZeroSize`], [`MmError::Misaligned`],
    /// [`MmError::VaOutOfRange`], [`MmError::NotBound`], [`MmError::PageTable`] (no memory to
    /// split a block mapping).
    pub fn unbind(&self, iova: Iova, size: u64) -> Result<u64, MmError> {
        if size == 0 {
            return Err(MmError::ZeroSize);
        }
        for v in [iova.0, size] {
            if v % PAGE_SIZE != 0 {
                return Err(MmError::Misaligned {
                    value: v,
                    align: PAGE_SIZE,
                });
            }
        }
        let mut inner = self.inner.lock();
        let end = match iova.0.checked_add(size) {
            Some(e) if iova.0 >= inner.va.span_start() && e <= inner.va.span_end() => e,
            _ => {
                return Err(MmError::VaOutOfRange {
                    iova,
                    size,
                    limit: inner.va.span_end(),
                })
            }
        };
        let hit: Vec<u64> = overlapping(&inner.bindings, iova.0, end);
        if hit.is_empty() {
            return Err(MmError::NotBound { iova, size });
        }
        let mut gather = Gather::new();
        // A block the range cuts is split with break-before-make (see the doc above); each of
        // its invalidations gets a fresh invalidator, since a whole-TLB one acts only once.
        let (device, asid) = (&self.device, self.asid);
        let bbm = |i: Iova, n: u64| device.tlb_invalidator(asid)(i, n);
        let r = with_table!(&mut inner.table, pt => pt.unmap_split(iova, size, &mut gather, bbm));
        complete(&self.device, self.asid, &mut inner.table, &mut gather);
        r?;
        let mut unbound = 0;
        for start in hit {
            let b = inner
                .bindings
                .remove(&start)
                .expect("listed by overlapping()");
            let _ = inner.va.free(start);
            let b_end = start + b.size;
            let cut_start = start.max(iova.0);
            let cut_end = b_end.min(end);
            unbound += cut_end - cut_start;
            // The pieces before and after the cut keep their IOPTEs, VA and DMA mapping.
            for (piece_start, piece_end) in [(start, cut_start), (cut_end, b_end)] {
                if piece_start < piece_end {
                    let _ = inner.va.reserve(piece_start, piece_end - piece_start);
                    inner.bindings.insert(
                        piece_start,
                        Binding {
                            size: piece_end - piece_start,
                            bo_offset: b.bo_offset + (piece_start - start),
                            prot: b.prot,
                            granted: b.granted,
                            dma: b.dma.clone(),
                        },
                    );
                }
            }
            // `b` drops here: if it held the last reference to the attachment, the BO's DMA
            // mapping is released now, after the TLB invalidation above.
        }
        Ok(unbound)
    }

    /// The bindings, in IOVA order.
    pub fn bindings(&self) -> Vec<BindingInfo> {
        self.inner
            .lock()
            .bindings
            .iter()
            .map(|(&va, b)| BindingInfo {
                iova: Iova(va),
                size: b.size,
                bo_offset: b.bo_offset,
                prot: b.prot,
                granted: b.granted,
            })
            .collect()
    }

    /// Translates `iova` from the table as the CPU sees it (no TLB, no dummy page).
    pub fn translate(&self, iova: Iova) -> Option<(DmaAddr, Prot)> {
        with_table!(&self.inner.lock().table, pt => pt.translate(iova))
    }

    /// The mapped leaves, merged into runs (for `--dump-pt`).
    pub fn mapped_runs(&self) -> Vec<MappedRun> {
        let inner = self.inner.lock();
        let mut runs: Vec<MappedRun> = Vec::new();
        with_table!(&inner.table, pt => {
            for m in pt.mappings() {
                if let Some(last) = runs.last_mut() {
                    if last.level == m.level
                        && last.prot == m.prot
                        && last.iova.0 + last.size == m.iova.0
                        && last.dma.0 + last.size == m.dma.0
                    {
                        last.size += m.size;
                        continue;
                    }
                }
                runs.push(MappedRun {
                    iova: m.iova,
                    dma: m.dma,
                    size: m.size,
                    page_size: m.size,
                    level: m.level,
                    prot: m.prot,
                });
            }
        });
        runs
    }

    fn alloc_va(&self, inner: &mut Inner, size: u64, placement: Placement) -> Result<u64, MmError> {
        let span_end = inner.va.span_end();
        let r = match placement {
            Placement::Fixed(iova) => {
                if iova.0 % PAGE_SIZE != 0 {
                    return Err(MmError::Misaligned {
                        value: iova.0,
                        align: PAGE_SIZE,
                    });
                }
                if iova.0 < inner.va.span_start()
                    || iova.0.checked_add(size).is_none_or(|e| e > span_end)
                {
                    return Err(MmError::VaOutOfRange {
                        iova,
                        size,
                        limit: span_end,
                    });
                }
                inner.va.reserve(iova.0, size)
            }
            Placement::Anywhere | Placement::Lowest | Placement::Highest => {
                let mode = match placement {
                    Placement::Lowest => AllocMode::Lowest,
                    Placement::Highest => AllocMode::Highest,
                    _ => AllocMode::BestFit,
                };
                // The largest leaf that fits the size, so blocks are possible.
                let sizes = self.device.config().mmu.page_sizes();
                let align = (0..64)
                    .rev()
                    .map(|b| 1u64 << b)
                    .find(|&s| sizes & s != 0 && s <= size)
                    .unwrap_or(PAGE_SIZE);
                inner.va.alloc(size, align, mode)
            }
        };
        match r {
            Ok(node) => Ok(node.start()),
            Err(RangeError::Overlap { .. }) | Err(RangeError::GuardViolation { .. }) => {
                Err(MmError::VaInUse {
                    iova: match placement {
                        Placement::Fixed(i) => i,
                        _ => Iova(0),
                    },
                    size,
                })
            }
            Err(RangeError::NoSpace { .. }) => Err(MmError::NoAddressSpace {
                space: AddressSpace::DeviceVa,
                size,
                limit: span_end - 1,
            }),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Vm {
    /// A VM dropped with bindings left: unmap everything, invalidate, free the tables, then
    /// release the DMA mappings; the leak is recorded on the device in DMA-debug mode.
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        if inner.bindings.is_empty() {
            return;
        }
        let bytes = inner.bindings.values().map(|b| b.size).sum();
        self.device.record_leak(VmLeak {
            asid: self.asid,
            bindings: inner.bindings.len(),
            bytes,
        });
        let starts: Vec<(u64, u64)> = inner.bindings.iter().map(|(&s, b)| (s, b.size)).collect();
        let mut gather = Gather::new();
        for (start, size) in starts {
            let _ = with_table!(&mut inner.table, pt => pt.unmap(Iova(start), size, &mut gather));
        }
        complete(&self.device, self.asid, &mut inner.table, &mut gather);
        inner.bindings.clear();
    }
}

/// Completes a page-table update of address space `asid` through the gather, in the one order
/// that is safe: the device TLB is invalidated for the gathered ranges (one request per range,
/// or a single whole-TLB request, as the device invalidates), then the emptied tables are freed.
fn complete(device: &Device, asid: u32, table: &mut Table, gather: &mut Gather) {
    // Leaf-only requests where no table was unlinked, full ones (walk caches too) where one was.
    let mut invalidate = device.tlb_invalidator_with(asid);
    with_table!(table, pt => pt.iotlb_sync_with(gather, &mut invalidate));
}

/// Starts of the bindings overlapping `[start, end)`.
fn overlapping(bindings: &BTreeMap<u64, Binding>, start: u64, end: u64) -> Vec<u64> {
    let mut out = Vec::new();
    if let Some((&s, b)) = bindings.range(..start).next_back() {
        if s + b.size > start {
            out.push(s);
        }
    }
    out.extend(bindings.range(start..end).map(|(&s, _)| s));
    out
}

/// The `(bus address, length)` runs of bytes `[offset, offset + size)` of a mapped BO.
fn slice_segments(segs: &[crate::dma::DmaSegment], offset: u64, size: u64) -> Vec<(DmaAddr, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let end = offset + size;
    for s in segs {
        let (s_start, s_end) = (pos, pos + s.len);
        pos = s_end;
        if s_end <= offset || s_start >= end {
            continue;
        }
        let from = offset.max(s_start);
        let to = end.min(s_end);
        out.push((DmaAddr(s.dma.0 + (from - s_start)), to - from));
    }
    out
}
