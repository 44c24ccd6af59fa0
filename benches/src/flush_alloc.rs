//! A [`TableAlloc`] for a non-coherent walker: table pages from the heap, as
//! [`HeapTableAlloc`] gives them (in chunks, with a free list, optionally a reserve), and a
//! `sync_for_device` that runs the CPU's real cache instructions on the written lines.
//!
//! The instruction is the one `devmmu_mm::phys::native` uses to clean: `clwb` where
//! CPUID.(EAX=7,ECX=0):EBX bit 24 reports it, else `clflushopt` (bit 23), else `clflush`
//! (detected at run time; under valgrind CPUID hides both), followed by one fence per call
//! (`sfence`, or `mfence` with plain `clflush`): one for all the new tables of a map, which the
//! page table cleans with one `sync_tables_for_device` call. A table's lines are read again by the CPU (the
//! next map's check and stores), so `clwb`, which writes the line back and may keep it cached,
//! fits better than Linux's `clflush_cache_range` (arch/x86/mm/pat/set_memory.c), which evicts
//! it; the Intel IPU6 driver calls that once per run of written entries
//! (drivers/media/pci/intel/ipu6/ipu6-mmu.c).

use devmmu_mm::phys::native;
use devmmu_pagetable::{HeapTableAlloc, TableAlloc, TablePage, TABLE_SIZE};

/// What [`FlushTableAlloc`] keeps for one slot: the CPU address of the live page in it (0 while
/// the slot is free; a page is never at 0) and the token the inner allocator gave that page.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    cpu: usize,
    inner_token: usize,
}

/// Table pages from the global heap (bus address = CPU address, as [`HeapTableAlloc`]) whose
/// `sync_for_device` cleans every 64-byte line of the requested bytes with `clwb` (else
/// `clflushopt`, else `clflush`) and issues one fence per call (per `sync_tables_for_device`
/// call, however many tables it names).
///
/// Each page it hands out carries, as its token, the index of a slot recording the page's CPU
/// pointer, so that `sync_for_device` only ever touches memory it owns with one indexed compare
/// on the measured path: a call naming a page whose token and CPU pointer do not match a live
/// slot, or bytes past the end of the page, is not executed and is counted in
/// [`FlushTableAlloc::rejected_syncs`] instead.
#[derive(Debug, Default)]
pub struct FlushTableAlloc {
    inner: HeapTableAlloc,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    sync_calls: u64,
    fences: u64,
    lines: u64,
    rejected: u64,
}

impl FlushTableAlloc {
    /// A new allocator with no live pages and zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// An allocator with `pages` pages already on its free list
    /// ([`HeapTableAlloc::with_reserve`]), as a driver's table pool in steady state; `None` if
    /// the heap cannot supply them.
    pub fn with_reserve(pages: usize) -> Option<Self> {
        Some(Self {
            inner: HeapTableAlloc::with_reserve(pages)?,
            ..Self::default()
        })
    }

    /// Pages allocated and not yet freed.
    pub fn live_pages(&self) -> usize {
        self.inner.live_pages()
    }

    /// Runs of lines cleaned: one per `sync_for_device` call, one per element of a
    /// `sync_tables_for_device` call (the page table's `Stats::sync_calls` counts the same).
    pub fn sync_calls(&self) -> u64 {
        self.sync_calls
    }

    /// Fences issued: one per `sync_for_device` or `sync_tables_for_device` call that cleaned
    /// anything.
    pub fn fences(&self) -> u64 {
        self.fences
    }

    /// 64-byte lines cleaned by those calls (every line the requested bytes touch, once per
    /// call).
    pub fn lines_cleaned(&self) -> u64 {
        self.lines
    }

    /// `sync_for_device` calls refused because they named a page this allocator does not hold,
    /// or asked for bytes beyond [`TABLE_SIZE`].
    pub fn rejected_syncs(&self) -> u64 {
        self.rejected
    }

    /// The live slot `page` names by its token, if its CPU pointer is the one recorded there.
    #[inline]
    fn slot_of(&self, page: &TablePage) -> Option<usize> {
        let slot = self.slots.get(page.token)?;
        (slot.cpu == page.cpu.as_ptr() as usize).then_some(page.token)
    }

    /// Records a page of the inner allocator in a slot and gives it the slot's index as token.
    #[inline]
    fn track(&mut self, mut page: TablePage) -> TablePage {
        let rec = Slot {
            cpu: page.cpu.as_ptr() as usize,
            inner_token: page.token,
        };
        page.token = match self.free_slots.pop() {
            Some(i) => {
                self.slots[i] = rec;
                i
            }
            None => {
                self.slots.push(rec);
                self.slots.len() - 1
            }
        };
        page
    }
}

// SAFETY: pages come from HeapTableAlloc, which upholds the trait's contract; this wrapper only
// swaps their token for its own (and back before freeing) and adds cache maintenance, which
// never changes memory contents.
unsafe impl TableAlloc for FlushTableAlloc {
    fn alloc_table(&mut self) -> Option<TablePage> {
        let page = self.inner.alloc_table()?;
        Some(self.track(page))
    }

    fn alloc_table_for_overwrite(&mut self) -> Option<TablePage> {
        let page = self.inner.alloc_table_for_overwrite()?;
        Some(self.track(page))
    }

    unsafe fn free_table(&mut self, mut page: TablePage) {
        let i = self
            .slot_of(&page)
            .expect("free_table of a page this allocator did not hand out");
        page.token = self.slots[i].inner_token;
        self.slots[i] = Slot::default();
        self.free_slots.push(i);
        // SAFETY: forwarded contract: `page` came from `alloc_table`, i.e. from `self.inner`,
        // and carries the inner allocator's token again.
        unsafe { self.inner.free_table(page) }
    }

    fn sync_for_device(&mut self, table: &TablePage, offset: usize, len: usize) {
        if self.clean(table, offset, len) {
            native::fence();
            self.fences += 1;
        }
    }

    fn sync_tables_for_device(&mut self, tables: &[(TablePage, usize, usize)]) {
        let mut cleaned = false;
        for (table, offset, len) in tables {
            cleaned |= self.clean(table, *offset, *len);
        }
        if cleaned {
            native::fence();
            self.fences += 1;
        }
    }
}

impl FlushTableAlloc {
    /// Cleans the lines of `len` bytes at `offset` of `table`, without a fence, counting one
    /// sync call; `false` (nothing done, counted as rejected) for a page this allocator does not
    /// hold or bytes beyond it.
    #[inline]
    fn clean(&mut self, table: &TablePage, offset: usize, len: usize) -> bool {
        let in_page = offset.checked_add(len).is_some_and(|end| end <= TABLE_SIZE);
        if !in_page || self.slot_of(table).is_none() {
            self.rejected += 1;
            return false;
        }
        let cpu = table.cpu.as_ptr().wrapping_add(offset) as *const u8;
        // SAFETY: `table.cpu` is the CPU pointer of a live page of this allocator (its slot
        // records that address, checked above), mapped for TABLE_SIZE bytes, and
        // offset + len <= TABLE_SIZE.
        let lines = unsafe { native::clean_lines(cpu, len) };
        self.sync_calls += 1;
        self.lines += lines as u64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devmmu_pagetable::{
        ArmLpae4k, DmaAddr, Gather, Iova, PageTable, PageTableConfig, Prot, TableAlloc,
    };
    use std::ptr::NonNull;

    #[test]
    fn counts_match_the_page_table_and_foreign_syncs_are_refused() {
        let mut pt: PageTable<ArmLpae4k, _> = PageTable::new(
            FlushTableAlloc::new(),
            PageTableConfig {
                coherent_walk: false,
            },
        )
        .unwrap();
        let mut g = Gather::new();
        // 4 MiB of 4 KiB pages: root, L1, L2 and two L3 tables.
        pt.map(
            Iova(1 << 30),
            DmaAddr((4 << 30) + 4096),
            4 << 20,
            Prot::RW,
            &mut g,
        )
        .unwrap();
        let s = pt.stats();
        let a = pt.table_alloc();
        assert_eq!(a.live_pages(), 5);
        assert!(s.sync_calls > 0);
        assert_eq!(a.sync_calls(), s.sync_calls);
        assert_eq!(a.lines_cleaned(), s.lines_cleaned);
        assert_eq!(a.rejected_syncs(), 0);
        // Every new table is cleaned whole once (4 tables of 64 lines), the root's one line once.
        assert_eq!(s.lines_cleaned, 4 * 64 + 64 + 1);
        // One fence for the root at creation, one for the four new tables, one for the root line.
        assert_eq!(a.fences(), 3);

        let unmapped = pt.unmap(Iova(1 << 30), 4 << 20, &mut g).unwrap();
        assert_eq!(unmapped, 4 << 20);
        pt.iotlb_sync(&mut g, |_, _| {});
        assert_eq!(pt.table_alloc().live_pages(), 1);
        assert_eq!(pt.table_alloc().rejected_syncs(), 0);

        // A page this allocator never handed out, with the token of the root's slot (the root
        // was the first page handed out: slot 0) and with one out of range; then the live root
        // with bytes past its end.
        let root = pt.root();
        // SAFETY: only `sync_for_device` calls follow, which neither free nor hand out pages,
        // and the allocator is not replaced.
        let a = unsafe { pt.table_alloc_mut() };
        let before = a.lines_cleaned();
        let foreign = TablePage {
            cpu: NonNull::dangling(),
            dma: DmaAddr(0x1000),
            token: 0,
        };
        a.sync_for_device(&foreign, 0, 64);
        a.sync_for_device(
            &TablePage {
                token: 99,
                ..foreign
            },
            0,
            64,
        );
        let live = TablePage {
            cpu: NonNull::new(root.0 as usize as *mut u8).unwrap(),
            dma: root,
            token: 0,
        };
        a.sync_for_device(&live, usize::MAX, 2);
        assert_eq!(a.rejected_syncs(), 3);
        assert_eq!(a.lines_cleaned(), before);
        // The same live page, in bounds, is accepted.
        a.sync_for_device(&live, 0, 64);
        assert_eq!(a.rejected_syncs(), 3);
        assert_eq!(a.lines_cleaned(), before + 1);
    }
}
