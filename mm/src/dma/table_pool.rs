//! `TablePool`: page-table pages taken from [`PhysMem`] frames, for a walker that reads physical
//! memory (the system IOMMU) or, through a [`DmaOps`], a device's own MMU.
//!
//! Owns the frames it took and the bus address of each page. Frames come in chunks of
//! [`CHUNK_PAGES`] pages (each allocation is one memfd, so one page per allocation would cost a
//! memfd per table); pages are zeroed when handed out and go on a free list when given back.
//! Chunks return to `PhysMem` only when the pool is dropped. It never writes an IOPTE.

use std::collections::HashMap;
use std::sync::Arc;

use devmmu_pagetable::{DmaAddr, TableAlloc, TablePage, TABLE_SIZE};

use super::machine::DmaMachine;
use super::types::DmaDirection;
use super::types::DmaOwner;
use super::DmaOps;
use crate::phys::{FrameAlloc, Frames, PhysAddr, PhysMem, Zone, PAGE_SIZE};

/// Pages per frame allocation of a [`TablePool`].
pub const CHUNK_PAGES: u64 = 16;

/// How a [`TablePool`] turns the physical address of a table page into the bus address the
/// walker uses (and with which the parent entry points at it).
#[derive(Clone, Debug)]
pub enum TableBus {
    /// Bus address = physical address: the system IOMMU, which walks physical memory. Cache
    /// maintenance for a non-coherent walk cleans the page's lines with [`PhysMem::clean`].
    Identity,
    /// Through a device's DMA ops: each page is mapped with
    /// [`DmaOps::map_page`] (`Bidirectional`, as drivers/media/pci/intel/ipu6/ipu6-mmu.c maps
    /// its tables) when its chunk is taken, stays mapped while the pool lives, and is unmapped
    /// when the pool drops. Cache maintenance for a non-coherent walk cleans the lines
    /// with [`PhysMem::clean`] directly: the walker's coherency is not the device's data
    /// coherency, which is all the DMA ops know. Take frames from [`DmaOps::dma_zone`] so that no
    /// table page is bounced.
    Dma(Arc<DmaOps>),
}

/// How many chunks a [`TablePool`] held at some point ([`TablePool::mark`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PoolMark(usize);

/// A [`TableAlloc`] over [`PhysMem`] frames.
pub struct TablePool {
    phys: Arc<PhysMem>,
    zone: Zone,
    bus: TableBus,
    chunks: Vec<Frames>,
    free: Vec<TablePage>,
    /// Bus address of each page the pool owns -> its physical address.
    pages: HashMap<DmaAddr, PhysAddr>,
    live: usize,
    failed: u64,
}

impl core::fmt::Debug for TablePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TablePool")
            .field("zone", &self.zone)
            .field("bus", &self.bus)
            .field("pages", &self.pages.len())
            .field("live", &self.live)
            .finish()
    }
}

// SAFETY: the raw pointers inside the free list's `TablePage`s point into `chunks`, which the
// pool owns and moves with it; nothing else holds them. Every other field is `Send` (`DmaOps` is
// `Send + Sync`, asserted in the parent module); the impl is written out only because the
// compiler cannot see through the `DmaOps` -> `PageTable<_, TablePool>` cycle.
unsafe impl Send for TablePool {}

impl TablePool {
    /// An empty pool that takes frames of `phys` from `zone` and gives them bus addresses per
    /// `bus`. Nothing is allocated until the first table.
    pub fn new(phys: Arc<PhysMem>, zone: Zone, bus: TableBus) -> TablePool {
        TablePool {
            phys,
            zone,
            bus,
            chunks: Vec::new(),
            free: Vec::new(),
            pages: HashMap::new(),
            live: 0,
            failed: 0,
        }
    }

    /// Table pages handed out and not given back.
    pub fn live_pages(&self) -> usize {
        self.live
    }

    /// Pages the pool holds (live and free), a multiple of [`CHUNK_PAGES`].
    pub fn pool_pages(&self) -> usize {
        self.pages.len()
    }

    /// Number of `alloc_table` calls that found no memory (frames or bus mapping).
    pub fn failed_allocs(&self) -> u64 {
        self.failed
    }

    /// A mark of how many chunks the pool holds now, for [`TablePool::shrink_to`].
    pub fn mark(&self) -> PoolMark {
        PoolMark(self.chunks.len())
    }

    /// Gives back to `PhysMem` (after unmapping them from the device) the chunks taken since
    /// `mark` whose pages are all free, newest first, stopping at the first chunk with a page in
    /// use. Used after a failed operation, so that its growth of the pool does not outlive it.
    pub fn shrink_to(&mut self, mark: PoolMark) {
        while self.chunks.len() > mark.0 {
            let Some(chunk) = self.chunks.last() else {
                return;
            };
            let in_chunk = |pa: &PhysAddr| chunk.pages().contains(pa);
            let free_here = self
                .free
                .iter()
                .filter(|p| self.pages.get(&p.dma).is_some_and(in_chunk))
                .count();
            if free_here != chunk.pages().len() {
                return;
            }
            let mut gone = Vec::with_capacity(free_here);
            self.free.retain(|p| {
                let mine = self.pages.get(&p.dma).is_some_and(in_chunk);
                if mine {
                    gone.push(p.dma);
                }
                !mine
            });
            for dma in gone {
                if let Some(pa) = self.pages.remove(&dma) {
                    DmaMachine::of(&self.phys).disown(pa);
                }
                if let TableBus::Dma(ops) = &self.bus {
                    let _ = ops.unmap_page(dma, PAGE_SIZE, DmaDirection::Bidirectional);
                }
            }
            // Dropping the frames returns them to `PhysMem`.
            self.chunks.pop();
        }
    }

    /// Takes one more chunk of frames, gives each page a bus address, and puts them on the free
    /// list. On failure nothing is kept.
    fn grow(&mut self) -> bool {
        let req = FrameAlloc::scattered();
        let req = match self.zone {
            Zone::Any => req,
            Zone::Below(limit) => req.below(limit),
        };
        let frames = match self.phys.alloc_frames(CHUNK_PAGES, req) {
            Ok(f) => f,
            Err(_) => return false,
        };
        let base = frames.cpu_ptr();
        let mut new_pages = Vec::with_capacity(CHUNK_PAGES as usize);
        for (i, &pa) in frames.pages().iter().enumerate() {
            let dma = match &self.bus {
                TableBus::Identity => Some(DmaAddr(pa.as_u64())),
                TableBus::Dma(ops) => ops
                    .map_page(pa, PAGE_SIZE, DmaDirection::Bidirectional)
                    .ok(),
            };
            let dma = match dma {
                Some(d) if d.is_aligned(TABLE_SIZE as u64) => d,
                other => {
                    if let (TableBus::Dma(ops), Some(d)) = (&self.bus, other) {
                        let _ = ops.unmap_page(d, PAGE_SIZE, DmaDirection::Bidirectional);
                    }
                    self.unmap_pages(&new_pages);
                    return false;
                }
            };
            // The CPU mapping of a chunk is page-aligned and one page per frame, in order.
            let cpu = base.as_ptr().wrapping_add(i * PAGE_SIZE as usize);
            let Some(cpu) = core::ptr::NonNull::new(cpu) else {
                self.unmap_pages(&new_pages);
                return false;
            };
            new_pages.push((TablePage { cpu, dma, token: 0 }, pa));
        }
        // From now on the pages are the DMA layer's: no driver may map them for a device.
        let machine = DmaMachine::of(&self.phys);
        let owner = match self.bus {
            TableBus::Identity => DmaOwner::IommuTable,
            TableBus::Dma(_) => DmaOwner::DeviceTable,
        };
        for (page, pa) in new_pages {
            machine.own(pa, PAGE_SIZE, owner);
            self.pages.insert(page.dma, pa);
            self.free.push(page);
        }
        self.chunks.push(frames);
        true
    }

    fn unmap_pages(&self, pages: &[(TablePage, PhysAddr)]) {
        if let TableBus::Dma(ops) = &self.bus {
            for (p, _) in pages {
                let _ = ops.unmap_page(p.dma, PAGE_SIZE, DmaDirection::Bidirectional);
            }
        }
    }
}

// SAFETY: every page is one 4 KiB frame of a chunk this pool owns: TABLE_SIZE bytes, its CPU
// mapping page-aligned (mmap) and its bus address checked to be TABLE_SIZE-aligned in `grow`;
// it is zeroed in `alloc_table` (not in `alloc_table_for_overwrite`, whose caller stores every
// entry before linking the table), handed out to one caller at a time (it leaves the free list),
// and stays mapped until the pool drops, which is after every page was given back or the page
// table owning them is gone.
unsafe impl TableAlloc for TablePool {
    fn alloc_table(&mut self) -> Option<TablePage> {
        if self.free.is_empty() && !self.grow() {
            self.failed += 1;
            return None;
        }
        let page = self.free.pop()?;
        // SAFETY: the page is TABLE_SIZE writable bytes of a chunk we own, and no one else holds
        // it (it was on the free list).
        unsafe { core::ptr::write_bytes(page.cpu.as_ptr(), 0, TABLE_SIZE) };
        self.live += 1;
        Some(page)
    }

    fn alloc_table_for_overwrite(&mut self) -> Option<TablePage> {
        if self.free.is_empty() && !self.grow() {
            self.failed += 1;
            return None;
        }
        // The caller stores every entry before the page is linked: no zeroing.
        let page = self.free.pop()?;
        self.live += 1;
        Some(page)
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        self.live -= 1;
        self.free.push(page);
    }

    fn sync_for_device(&mut self, table: &TablePage, offset: usize, len: usize) {
        let Some(&pa) = self.pages.get(&table.dma) else {
            return;
        };
        // A failed sync cannot be reported through this hook; it can only fail if the frames
        // vanished, which the pool's ownership of them rules out.
        // The table walker's coherency is its own, independent of whether the device's data
        // path snoops (the DMA ops only know the latter): clean the lines directly, as
        // ipu6-mmu.c does with clflush_cache_range on the table's CPU address.
        let _ = self.phys.clean(pa + offset as u64, len as u64);
    }
}

impl Drop for TablePool {
    fn drop(&mut self) {
        if let TableBus::Dma(ops) = &self.bus {
            for &dma in self.pages.keys() {
                let _ = ops.unmap_page(dma, PAGE_SIZE, DmaDirection::Bidirectional);
            }
        }
        let machine = DmaMachine::of(&self.phys);
        for &pa in self.pages.values() {
            machine.disown(pa);
        }
        // `chunks` drops after this, returning the frames.
    }
}
