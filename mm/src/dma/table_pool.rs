//! `TablePool`: page-table pages taken from [`PhysMem`] frames, for a walker that reads physical
//! memory (the system IOMMU) or, through a [`DmaOps`], a device's own MMU.
//!
//! Owns the frames it took and the bus address of each page. Frames come in chunks of
//! [`CHUNK_PAGES`] pages (each allocation is one memfd, so one page per allocation would cost a
//! memfd per table); pages are zeroed when handed out and go on a free list when given back.
//! Chunks return to `PhysMem` when the pool is dropped, or through [`TablePool::shrink_to`]. It
//! never writes an IOPTE.
//!
//! Each page has a record (bus and physical address) in a `Vec`, in the order the chunks were
//! taken; the [`TablePage::token`] the pool hands out is the index of the page's record, so
//! `sync_for_device` finds the physical address to clean with one bounds-checked index.

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

/// What the pool keeps for each page it owns.
#[derive(Clone, Copy, Debug)]
struct PageRecord {
    /// Bus address, as in the page's [`TablePage`].
    dma: DmaAddr,
    /// Physical address of the frame.
    pa: PhysAddr,
}

/// A [`TableAlloc`] over [`PhysMem`] frames.
pub struct TablePool {
    phys: Arc<PhysMem>,
    zone: Zone,
    bus: TableBus,
    chunks: Vec<Frames>,
    free: Vec<TablePage>,
    /// One record per page the pool owns, chunk after chunk in the order of `chunks` (so the
    /// last chunk's pages are the last `chunk.pages().len()` records); a page's token is the
    /// index of its record.
    pages: Vec<PageRecord>,
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
            pages: Vec::new(),
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
            // The last chunk's pages are the last records: tokens `first..`.
            let first = self.pages.len() - chunk.pages().len();
            let free_here = self.free.iter().filter(|p| p.token >= first).count();
            if free_here != chunk.pages().len() {
                return;
            }
            self.free.retain(|p| p.token < first);
            let machine = DmaMachine::of(&self.phys);
            for rec in self.pages.drain(first..) {
                machine.disown(&self.phys, rec.pa);
                if let TableBus::Dma(ops) = &self.bus {
                    let _ = ops.unmap_page(rec.dma, PAGE_SIZE, DmaDirection::Bidirectional);
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
            let token = self.pages.len() + i;
            new_pages.push((TablePage { cpu, dma, token }, pa));
        }
        // From now on the pages are the DMA layer's: no driver may map them for a device.
        let machine = DmaMachine::of(&self.phys);
        let owner = match self.bus {
            TableBus::Identity => DmaOwner::IommuTable,
            TableBus::Dma(_) => DmaOwner::DeviceTable,
        };
        for (page, pa) in new_pages {
            machine.own(&self.phys, pa, PAGE_SIZE, owner);
            debug_assert_eq!(page.token, self.pages.len());
            self.pages.push(PageRecord { dma: page.dma, pa });
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
        // The token is the index of the page's record; a page that is not ours (no record, or a
        // record of another bus address) is ignored.
        let pa = match self.pages.get(table.token) {
            Some(rec) if rec.dma == table.dma => rec.pa,
            _ => return,
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
            for rec in &self.pages {
                let _ = ops.unmap_page(rec.dma, PAGE_SIZE, DmaDirection::Bidirectional);
            }
        }
        let machine = DmaMachine::of(&self.phys);
        for rec in &self.pages {
            machine.disown(&self.phys, rec.pa);
        }
        // `chunks` drops after this, returning the frames.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::{CacheMode, MemoryMap, PhysSegment, RamRegion};

    /// A machine of 64 frames, so that a pool's chunks are a visible share of it.
    fn phys() -> Arc<PhysMem> {
        let map = MemoryMap::new(vec![RamRegion {
            base: PhysAddr(0x10_0000),
            size: 64 * PAGE_SIZE,
        }])
        .unwrap();
        PhysMem::new(map, CacheMode::Model).unwrap()
    }

    fn owner(p: &PhysMem, pa: PhysAddr) -> Option<DmaOwner> {
        DmaMachine::owner_of(p, &[PhysSegment { addr: pa, len: 1 }]).map(|(_, o)| o)
    }

    fn pa_of(pool: &TablePool, page: &TablePage) -> PhysAddr {
        let rec = pool.pages[page.token];
        assert_eq!(rec.dma, page.dma, "the token names the page's record");
        rec.pa
    }

    /// The token of each page names its record: `sync_for_device` cleans exactly the requested
    /// lines of that page's frame and ignores a page whose token names no record of its bus
    /// address; `shrink_to` gives back a chunk only once all its pages are free, disowning them,
    /// and `Drop` gives back and disowns the rest.
    #[test]
    fn tokens_name_records_through_sync_shrink_and_drop() {
        let p = phys();
        let free0 = p.free_pages(Zone::Any);
        let mut pool = TablePool::new(p.clone(), Zone::Any, TableBus::Identity);
        let first: Vec<TablePage> = (0..CHUNK_PAGES)
            .map(|_| pool.alloc_table().unwrap())
            .collect();
        assert_eq!(pool.pool_pages(), CHUNK_PAGES as usize);
        for page in &first {
            let pa = pa_of(&pool, page);
            assert_eq!(page.dma, DmaAddr(pa.as_u64()), "identity bus");
            assert_eq!(owner(&p, pa), Some(DmaOwner::IommuTable));
        }

        let before = p.stats();
        pool.sync_for_device(&first[3], 64, 65);
        let after = p.stats();
        assert_eq!(after.clean_calls - before.clean_calls, 1);
        assert_eq!(after.lines_cleaned - before.lines_cleaned, 2);
        let mut foreign = first[3];
        foreign.token = first[4].token;
        pool.sync_for_device(&foreign, 0, 64);
        foreign.token = usize::MAX;
        pool.sync_for_device(&foreign, 0, 64);
        assert_eq!(
            p.stats().clean_calls,
            after.clean_calls,
            "foreign pages are ignored"
        );

        let mark = pool.mark();
        let extra = pool.alloc_table().unwrap();
        let extra_pa = pa_of(&pool, &extra);
        assert_eq!(pool.pool_pages(), 2 * CHUNK_PAGES as usize);
        pool.shrink_to(mark);
        assert_eq!(
            pool.pool_pages(),
            2 * CHUNK_PAGES as usize,
            "a page is in use"
        );
        // SAFETY: from this pool, not used again.
        unsafe { pool.free_table(extra) };
        pool.shrink_to(mark);
        assert_eq!(pool.pool_pages(), CHUNK_PAGES as usize);
        assert_eq!(owner(&p, extra_pa), None);
        assert_eq!(p.free_pages(Zone::Any), free0 - CHUNK_PAGES);
        let before = p.stats();
        pool.sync_for_device(&extra, 0, 64);
        assert_eq!(
            p.stats().clean_calls,
            before.clean_calls,
            "a given-back page"
        );

        // The pages of the first chunk still carry the tokens of their records.
        for page in &first {
            assert_eq!(owner(&p, pa_of(&pool, page)), Some(DmaOwner::IommuTable));
        }
        let pas: Vec<PhysAddr> = first.iter().map(|page| pa_of(&pool, page)).collect();
        for page in first {
            // SAFETY: from this pool, not used again.
            unsafe { pool.free_table(page) };
        }
        drop(pool);
        assert_eq!(p.free_pages(Zone::Any), free0);
        assert!(pas.iter().all(|&pa| owner(&p, pa).is_none()));
    }
}
