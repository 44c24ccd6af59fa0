//! A [`TableAlloc`] for a non-coherent walker: table pages from the heap, as
//! [`HeapTableAlloc`] gives them, and a `sync_for_device` that runs the CPU's real cache
//! instructions on the written lines.
//!
//! The instruction is the one `devmmu_mm::phys::native` uses to invalidate: `clflushopt` where
//! CPUID.(EAX=7,ECX=0):EBX bit 23 reports it, else `clflush` (detected at run time; under
//! valgrind CPUID hides `clflushopt`), followed by one fence per call (`sfence`, or `mfence` with
//! plain `clflush`). That is what Linux's `clflush_cache_range` does for a table on x86
//! (arch/x86/mm/pat/set_memory.c), and what the Intel IPU6 driver calls once per run of written
//! entries (drivers/media/pci/intel/ipu6/ipu6-mmu.c). `clwb` would keep the line cached; it costs
//! the same per dirty line here (see /work/shared/facts.md), so the choice does not move the
//! numbers.

use devmmu_mm::phys::native;
use devmmu_pagetable::{HeapTableAlloc, TableAlloc, TablePage, TABLE_SIZE};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a table's bus address (a multiple of [`TABLE_SIZE`]) with one multiply: the set of
/// live pages is consulted on every `sync_for_device`, which sits on the measured path.
#[derive(Default)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing; the low 12 bits of a page address are always zero.
        self.0 = (v >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PageSet = HashSet<u64, BuildHasherDefault<PageHasher>>;

/// Table pages from the global heap (bus address = CPU address, as [`HeapTableAlloc`]) whose
/// `sync_for_device` cleans every 64-byte line of the requested bytes with `clflushopt`
/// (else `clflush`) and issues one fence per call.
///
/// It keeps the set of pages it handed out, so that `sync_for_device` only ever touches memory
/// it owns: a call naming another address, or bytes past the end of the page, is not executed
/// for the foreign part and is counted in [`FlushTableAlloc::rejected_syncs`] instead.
#[derive(Debug, Default)]
pub struct FlushTableAlloc {
    inner: HeapTableAlloc,
    live: PageSet,
    sync_calls: u64,
    lines: u64,
    rejected: u64,
}

impl FlushTableAlloc {
    /// A new allocator with no live pages and zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pages allocated and not yet freed.
    pub fn live_pages(&self) -> usize {
        self.inner.live_pages()
    }

    /// `sync_for_device` calls executed (each ended by one fence).
    pub fn sync_calls(&self) -> u64 {
        self.sync_calls
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
}

// SAFETY: pages come unchanged from HeapTableAlloc, which upholds the trait's contract; this
// wrapper only adds bookkeeping and cache maintenance, which never changes memory contents.
unsafe impl TableAlloc for FlushTableAlloc {
    fn alloc_table(&mut self) -> Option<TablePage> {
        let page = self.inner.alloc_table()?;
        self.live.insert(page.dma.0);
        Some(page)
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        self.live.remove(&page.dma.0);
        // SAFETY: forwarded contract: `page` came from `alloc_table`, i.e. from `self.inner`.
        unsafe { self.inner.free_table(page) }
    }

    fn sync_for_device(&mut self, table: &TablePage, offset: usize, len: usize) {
        let in_page = offset.checked_add(len).is_some_and(|end| end <= TABLE_SIZE);
        if !in_page || !self.live.contains(&table.dma.0) {
            self.rejected += 1;
            return;
        }
        // HeapTableAlloc pages have bus address = CPU address.
        let cpu = (table.dma.0 as usize + offset) as *const u8;
        // SAFETY: `table` is a live page of this allocator (checked above), mapped for
        // TABLE_SIZE bytes, and offset + len <= TABLE_SIZE.
        let lines = unsafe { native::clean_invalidate_lines(cpu, len) };
        native::fence();
        self.sync_calls += 1;
        self.lines += lines as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devmmu_pagetable::{
        ArmLpae4k, DmaAddr, Gather, Iova, PageTable, PageTableConfig, Prot, TableAlloc,
    };

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

        let unmapped = pt.unmap(Iova(1 << 30), 4 << 20, &mut g).unwrap();
        assert_eq!(unmapped, 4 << 20);
        pt.iotlb_sync(&mut g, |_, _| {});
        assert_eq!(pt.table_alloc().live_pages(), 1);
        assert_eq!(pt.table_alloc().rejected_syncs(), 0);

        let a = pt.table_alloc_mut();
        let before = a.lines_cleaned();
        let foreign = TablePage {
            cpu: std::ptr::NonNull::dangling(),
            dma: DmaAddr(0x1000),
            token: 0,
        };
        a.sync_for_device(&foreign, 0, 64);
        a.sync_for_device(&foreign, usize::MAX, 2);
        assert_eq!(a.rejected_syncs(), 2);
        assert_eq!(a.lines_cleaned(), before);
    }
}
