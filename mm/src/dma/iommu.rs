//! A system IOMMU domain (drivers/iommu/dma-iommu.c on top of an SMMU-like IOMMU).
//!
//! Owns one device's IOVA space (`iova_space.rs`: a drm_mm-style range allocator over `[granule, mask]`
//! minus the platform's reserved regions, allocating top-down like drivers/iommu/iova.c) and its
//! ARM LPAE page table, whose table pages are [`PhysMem`](crate::phys::PhysMem) frames addressed
//! physically (the IOMMU walks physical memory, coherently). It maps and unmaps IOVA ranges and
//! counts IOTLB invalidations (in the counters of its [`DmaOps`](super::DmaOps), passed in);
//! cache maintenance of the data and the DMA-API bookkeeping are the parent module's.

use std::sync::Arc;

use devmmu_pagetable::{
    walk, ArmLpae4k, DmaAddr, Format, Gather, Iova, PageTable, PageTableConfig, Prot, TableReader,
    WalkFault,
};
use parking_lot::Mutex;

use super::iova_space::IovaSpace;
use super::registry::Seg;
use super::stats::Counters;
use super::table_pool::{TableBus, TablePool};
use super::types::{BusFault, BusFaultReason, DmaMask, Platform};
use crate::phys::{FrameView, PhysAddr, PhysMem, PhysSegment, Zone, PAGE_SIZE};
use crate::{AddressSpace, MmError};

/// The IOVA granule of the domain, in bytes (4 KiB pages of [`ArmLpae4k`]).
pub const IOVA_GRANULE: u64 = PAGE_SIZE;

/// Reads the domain's tables from physical memory as the IOMMU's coherent walker does: the CPU
/// view, since the walk snoops the caches. Holds the frame table for the whole walk, so each
/// PTE read is a lookup, not a lock.
struct PhysReader<'a>(FrameView<'a>);

impl TableReader for PhysReader<'_> {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.0.cpu_read(phys_of(addr), b.get_mut(..bytes)?).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

// The system IOMMU's addresses. Its input is the bus address a device emits (bus address = IOVA),
// an `Iova` to the page table; its table addresses and output addresses are CPU physical
// addresses (it walks physical memory), `DmaAddr`s to the page table. These four are the only
// conversions between the types here.

/// The page-table input address of bus address `dma`.
fn table_iova(dma: DmaAddr) -> Iova {
    Iova(dma.get())
}

/// The bus address of page-table input address `iova`.
fn bus_addr(iova: Iova) -> DmaAddr {
    DmaAddr(iova.get())
}

/// The page-table output (or table) address of physical address `pa`.
fn table_oa(pa: PhysAddr) -> DmaAddr {
    DmaAddr(pa.as_u64())
}

/// The physical address of page-table output (or table) address `oa`.
fn phys_of(oa: DmaAddr) -> PhysAddr {
    PhysAddr(oa.get())
}

/// An IOVA allocation of the domain: bytes `[start, start + size)` of the IOVA space, all
/// mapped by one [`IommuDomain::map_phys`] and given back whole by [`IommuDomain::unmap_node`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IovaNode {
    pub(crate) start: DmaAddr,
    /// Bytes, a granule multiple (the request rounded up as the allocator does).
    pub(crate) size: u64,
}

struct State {
    space: IovaSpace,
    pt: PageTable<ArmLpae4k, TablePool>,
}

/// The system IOMMU domain of one device: bus address = IOVA. The device's mask, memory and
/// counters are its [`DmaOps`](super::DmaOps)'s, passed to the operations that need them.
pub struct IommuDomain {
    root: DmaAddr,
    /// `[start, end)` of the IOVA space.
    span: (DmaAddr, DmaAddr),
    state: Mutex<State>,
}

impl core::fmt::Debug for IommuDomain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IommuDomain")
            .field("root", &self.root)
            .field("span", &self.span)
            .finish()
    }
}

fn map_err(iova: DmaAddr, size: u64) -> impl Fn(devmmu_pagetable::Error) -> MmError {
    move |error| MmError::IommuMap {
        iova: iova.get(),
        size,
        error,
    }
}

/// Invalidates the IOTLB for what `g` gathered, counting each invalidation in `counters`.
fn sync_gather(counters: &Counters, st: &mut State, g: &mut Gather) {
    st.pt.iotlb_sync(g, |_, _| {
        Counters::add(&counters.iotlb_invalidations, 1);
    });
}

impl IommuDomain {
    /// A domain for a device with DMA mask `mask` over `phys`: IOVA space
    /// `[granule, min(mask, 2^48 - 1)]`, the platform's reserved regions taken out of it, an
    /// empty page table (its root allocated now, from `phys`).
    pub(crate) fn new(
        phys: &Arc<PhysMem>,
        mask: DmaMask,
        platform: &Platform,
    ) -> Result<IommuDomain, MmError> {
        let top = mask.0.min((1u64 << 48) - 1);
        let space = IovaSpace::new(top, &platform.reserved)?;
        // The IOMMU reaches only what its 48-bit output address can name, tables included.
        let pool = TablePool::new(
            phys.clone(),
            Zone::Below(PhysAddr(1 << ArmLpae4k::OA_BITS)),
            TableBus::Identity,
        );
        let pt = PageTable::new(
            pool,
            PageTableConfig {
                coherent_walk: true,
            },
        )
        .map_err(map_err(DmaAddr(0), 0))?;
        Ok(IommuDomain {
            root: pt.root(),
            span: space.span(),
            state: Mutex::new(State { space, pt }),
        })
    }

    /// Physical address of the root table (what the IOMMU's context entry / STE holds).
    pub fn root(&self) -> DmaAddr {
        self.root
    }

    /// The IOVA space `[start, end)`, in bytes: from the granule up to the DMA mask (at most 48
    /// bits).
    pub fn aperture(&self) -> (DmaAddr, DmaAddr) {
        self.span
    }

    /// The last byte of the IOVA space, as [`MmError::NoAddressSpace`] reports it.
    pub(crate) fn limit(&self) -> u64 {
        self.span.1.get() - 1
    }

    /// Table pages the domain's page table holds, the root included.
    pub fn table_pages(&self) -> usize {
        self.state.lock().pt.table_count()
    }

    /// IOVA bytes allocated, reserved regions excluded.
    pub(crate) fn iova_bytes_in_use(&self) -> u64 {
        self.state.lock().space.bytes_in_use()
    }

    /// Allocates an IOVA node for `size` bytes (see [`IovaSpace::alloc`]).
    pub(crate) fn alloc_iova(&self, size: u64) -> Result<IovaNode, MmError> {
        self.state.lock().space.alloc(size)
    }

    /// Frees the IOVA node starting at `start` (nothing mapped in it any more).
    pub(crate) fn free_iova(&self, start: DmaAddr) {
        self.state.lock().space.free(start);
    }

    /// Maps `segs` contiguously in a fresh IOVA node, as `iommu_dma_map_sg`: each segment is
    /// widened to whole granules (its in-page offset kept), so a segment that ends mid-page is
    /// followed by padding. Returns one [`Seg`] per input (bus address = IOVA of its first
    /// byte) and the node. IOTLB invalidations are counted in `counters`.
    ///
    /// # Errors
    /// [`MmError::NoAddressSpace`], [`MmError::IommuMap`] (nothing stays mapped or allocated).
    pub(crate) fn map_phys(
        &self,
        counters: &Counters,
        segs: &[PhysSegment],
        prot: Prot,
    ) -> Result<(Vec<Seg>, IovaNode), MmError> {
        // Each segment widened to whole granules, as the page table maps it; the sum is
        // checked once (no segment of allocated RAM comes near 2^63 bytes, so only a sum of
        // many can overflow, and the checked sum catches that).
        let pieces: Vec<(DmaAddr, u64)> = segs
            .iter()
            .map(|s| {
                let off = s.addr.page_offset();
                (
                    table_oa(s.addr.align_down(IOVA_GRANULE)),
                    (off + s.len).next_multiple_of(IOVA_GRANULE),
                )
            })
            .collect();
        let total = pieces
            .iter()
            .try_fold(0u64, |t, &(_, mlen)| t.checked_add(mlen))
            .ok_or(MmError::NoAddressSpace {
                space: AddressSpace::SystemIova,
                size: u64::MAX,
                limit: self.limit(),
            })?;
        let mut st = self.state.lock();
        let node = st.space.alloc(total)?;
        let mut g = Gather::new();
        let r = st
            .pt
            .map_segments(table_iova(node.start), &pieces, prot, &mut g);
        sync_gather(counters, &mut st, &mut g);
        if let Err(e) = r {
            st.space.free(node.start);
            return Err(map_err(node.start, total)(e));
        }
        let mut cur = node.start;
        let out = segs
            .iter()
            .zip(&pieces)
            .map(|(s, &(_, mlen))| {
                let seg = Seg {
                    dma: cur + s.addr.page_offset(),
                    len: s.len,
                    pa: s.addr,
                    bounce: None,
                };
                cur += mlen;
                seg
            })
            .collect();
        Ok((out, node))
    }

    /// Maps `size` bytes (granule multiple) at `iova` to `pa` (granule-aligned) inside an
    /// existing node, for the two-step IOVA API. No IOTLB maintenance (the caller's `iova_sync`).
    ///
    /// # Errors
    /// [`MmError::IommuMap`] (e.g. `AlreadyMapped`); nothing stays mapped.
    pub(crate) fn map_at(
        &self,
        counters: &Counters,
        iova: DmaAddr,
        pa: PhysAddr,
        size: u64,
        prot: Prot,
    ) -> Result<(), MmError> {
        let mut st = self.state.lock();
        let mut g = Gather::new();
        let r = st
            .pt
            .map(table_iova(iova), table_oa(pa), size, prot, &mut g);
        sync_gather(counters, &mut st, &mut g);
        r.map_err(map_err(iova, size))
    }

    /// Unmaps `[iova, iova + size)` (granule multiples inside the space) and invalidates the
    /// IOTLB for it, counting the invalidations in `counters`.
    ///
    /// # Errors
    /// [`MmError::IommuMap`] with `PartialBlock` if the range cuts a block mapping (refused
    /// since io-pgtable-arm's v6.13 break-before-make rule): nothing was unmapped.
    pub(crate) fn unmap_range(
        &self,
        counters: &Counters,
        iova: DmaAddr,
        size: u64,
    ) -> Result<(), MmError> {
        let mut st = self.state.lock();
        let mut g = Gather::new();
        let r = st.pt.unmap(table_iova(iova), size, &mut g);
        sync_gather(counters, &mut st, &mut g);
        r.map(|_| ()).map_err(map_err(iova, size))
    }

    /// Unmaps a whole node and frees its IOVA (`__iommu_dma_unmap`: unmap, IOTLB sync, free
    /// the IOVA only after the sync).
    pub(crate) fn unmap_node(&self, counters: &Counters, node: IovaNode) {
        // Unmapping exactly a whole node never splits a block (blocks never cross the node,
        // which is where they were mapped), so this cannot fail.
        let _ = self.unmap_range(counters, node.start, node.size);
        self.free_iova(node.start);
    }

    /// What the IOMMU does with a device access to `dma..dma + len` by a device with `mask`:
    /// walk the tables in `phys` (not cached: no IOTLB is modelled) for every page of the range;
    /// it must be mapped, writable if `write`, and physically contiguous.
    pub(crate) fn bus_to_phys(
        &self,
        phys: &PhysMem,
        dma: DmaAddr,
        len: u64,
        write: bool,
    ) -> Result<PhysAddr, BusFault> {
        // Zero length and the DMA mask: checked by the caller (`DmaOps::bus_to_phys`).
        let fault = |reason| BusFault { dma, reason };
        let end = dma + len;
        let reader = PhysReader(phys.frames());
        let mut cur = dma;
        let mut first = PhysAddr(0);
        while cur < end {
            let t = walk::<ArmLpae4k, _>(&reader, self.root, table_iova(cur)).map_err(|w| {
                fault(match w {
                    WalkFault::AddressSize { .. } => BusFaultReason::AddressSize,
                    WalkFault::Translation { iova, level } => BusFaultReason::Translation {
                        iova: bus_addr(iova),
                        level,
                    },
                    WalkFault::WalkAbort { pte_addr, .. } => BusFaultReason::WalkAbort { pte_addr },
                })
            })?;
            if write && !t.prot.contains(Prot::WRITE) {
                return Err(fault(BusFaultReason::Permission { iova: cur }));
            }
            if cur == dma {
                first = phys_of(t.dma);
            } else if phys_of(t.dma) != first + (cur - dma) {
                return Err(fault(BusFaultReason::Discontiguous { at: cur }));
            }
            let leaf_end = bus_addr(t.leaf_iova) + t.leaf_size;
            cur = leaf_end.min(end);
        }
        Ok(first)
    }
}
