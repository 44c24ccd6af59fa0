//! The physical limits the page-table benchmarks are measured against: the cheapest possible way
//! to put the same IOPTE values into memory, with no page-table logic at all.
//!
//! - [`LeafTables::store`]: plain stores of the leaf values into tables that already exist (no
//!   allocation, no walk, no precheck, no bookkeeping);
//! - the same followed by [`LeafTables::clean`] and one [`fence`]: what a non-coherent walker
//!   needs at the least (every written line cleaned once, one barrier). Its cost depends on
//!   where the lines are when the stores begin, so the benchmarks measure it twice: with the
//!   lines in cache (as a map finds the pages of its allocator's reserve) and with them just
//!   evicted ([`LeafTables::evict`]; what back-to-back `clflushopt` passes leave behind).

use devmmu_mm::phys::native;
use devmmu_pagetable::{DmaAddr, Format, TABLE_SIZE};

/// Entries of 8 bytes in one [`TABLE_SIZE`]-byte table.
pub const ENTRIES_PER_TABLE: usize = TABLE_SIZE / 8;

/// One last-level table: [`ENTRIES_PER_TABLE`] 64-bit IOPTEs, aligned to [`TABLE_SIZE`] like a
/// real table page.
#[repr(C, align(4096))]
struct LeafTable([u64; ENTRIES_PER_TABLE]);

/// A fixed set of pre-allocated, zeroed last-level tables of 64-bit entries, filled in order:
/// entry `i` of table `t` holds the leaf of page `t * 512 + i`.
pub struct LeafTables {
    tables: Vec<Box<LeafTable>>,
}

impl LeafTables {
    /// `count` zeroed tables (`count * 4096` bytes). 512 tables hold 1 GiB of 4 KiB pages.
    pub fn new(count: usize) -> Self {
        Self {
            tables: (0..count)
                .map(|_| Box::new(LeafTable([0; ENTRIES_PER_TABLE])))
                .collect(),
        }
    }

    /// Number of tables.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Number of entries (pages) the tables hold: `table_count() * 512`.
    pub fn entry_count(&self) -> usize {
        self.tables.len() * ENTRIES_PER_TABLE
    }

    /// Stores the last-level leaf of every page, in order: page `n` maps bus address
    /// `dma + n * 4096` with the leaf attribute bits `attrs` (from `F::leaf_attrs(last level,
    /// prot)`), encoded by `F::leaf_with_addr`, exactly the value `PageTable::map` writes.
    /// Addresses wrap modulo 2^64 rather than fail (the values are only stored, never walked).
    #[inline(never)]
    pub fn store<F: Format<Pte = u64>>(&mut self, attrs: u64, dma: DmaAddr) {
        let mut addr = dma.0;
        for t in &mut self.tables {
            for e in t.0.iter_mut() {
                *e = F::leaf_with_addr(attrs, DmaAddr(addr));
                addr = addr.wrapping_add(TABLE_SIZE as u64);
            }
        }
    }

    /// Cleans every 64-byte line of every table (`table_count() * 64` lines) with `clwb`, else
    /// `clflushopt`, else `clflush` (detected at run time: what [`FlushTableAlloc`] uses),
    /// without a fence: follow it with one [`fence`]. Returns the number of lines.
    ///
    /// [`FlushTableAlloc`]: crate::flush_alloc::FlushTableAlloc
    #[inline(never)]
    pub fn clean(&self) -> usize {
        let mut lines = 0;
        for t in &self.tables {
            // SAFETY: the table is owned memory of TABLE_SIZE bytes.
            lines += unsafe { native::clean_lines(t.0.as_ptr().cast(), TABLE_SIZE) };
        }
        lines
    }

    /// Writes back and evicts every line of every table from the CPU caches (`clflushopt`, else
    /// `clflush`), then fences: the next stores miss. Returns the number of lines.
    #[inline(never)]
    pub fn evict(&self) -> usize {
        let mut lines = 0;
        for t in &self.tables {
            // SAFETY: the table is owned memory of TABLE_SIZE bytes.
            lines += unsafe { native::clean_invalidate_lines(t.0.as_ptr().cast(), TABLE_SIZE) };
        }
        fence();
        lines
    }

    /// Entry `index` of table `table`, or `None` if out of range.
    pub fn entry(&self, table: usize, index: usize) -> Option<u64> {
        self.tables.get(table)?.0.get(index).copied()
    }
}

/// The one barrier that completes a batch of line cleans: `sfence` after `clflushopt`,
/// `mfence` after plain `clflush` (devmmu_mm::phys::native::fence).
pub fn fence() {
    native::fence();
}

#[cfg(test)]
mod tests {
    use super::*;
    use devmmu_pagetable::{
        ArmLpae4k, Gather, HeapTableAlloc, Iova, PageTable, PageTableConfig, Prot,
    };

    /// The limit must store what a real map stores, or the comparison means nothing.
    #[test]
    fn stores_the_values_a_map_writes() {
        let dma = DmaAddr((4 << 30) + 4096);
        let mut lt = LeafTables::new(2);
        assert_eq!(lt.entry_count(), 1024);
        lt.store::<ArmLpae4k>(ArmLpae4k::leaf_attrs(3, Prot::RW | Prot::CACHE), dma);

        let mut pt: PageTable<ArmLpae4k, _> =
            PageTable::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap();
        let mut g = Gather::new();
        pt.map(
            Iova(1 << 30),
            dma,
            1024 * 4096,
            Prot::RW | Prot::CACHE,
            &mut g,
        )
        .unwrap();
        // Read the raw leaves out of the table pages (HeapTableAlloc: bus address = CPU
        // address) and compare them with the limit's stores, entry for entry.
        let l3 = leaf_table_of(&pt, 1 << 30);
        let l3b = leaf_table_of(&pt, (1 << 30) + (2 << 20));
        for i in 0..ENTRIES_PER_TABLE {
            // SAFETY: l3/l3b are live 4 KiB tables of `pt`, which outlives this loop.
            let (a, b) = unsafe { (l3.add(i).read(), l3b.add(i).read()) };
            assert_eq!(Some(a), lt.entry(0, i), "table 0 entry {i}");
            assert_eq!(Some(b), lt.entry(1, i), "table 1 entry {i}");
        }
        assert_eq!(pt.mappings().count(), 1024);
        assert_eq!(lt.entry(2, 0), None);
        // Cleaning never changes the data and covers 64 lines per table.
        let before = lt.entry(1, 511);
        assert_eq!(lt.clean(), 128);
        fence();
        assert_eq!(lt.entry(1, 511), before);
        assert_eq!(lt.evict(), 128);
        assert_eq!(lt.entry(1, 511), before);
    }

    /// CPU pointer of the last-level table that holds `iova`, following table entries from the
    /// root (bus address = CPU address for HeapTableAlloc pages).
    fn leaf_table_of(pt: &PageTable<ArmLpae4k, HeapTableAlloc>, iova: u64) -> *const u64 {
        let mut table = pt.root().0 as *const u64;
        for level in 0..3 {
            // SAFETY: `table` is a live table page of `pt`, the index is below 512.
            let pte = unsafe { table.add(ArmLpae4k::index(level, iova)).read() };
            match ArmLpae4k::decode(level, pte) {
                devmmu_pagetable::Entry::Table(next) => table = next.0 as *const u64,
                other => panic!("level {level}: expected a table entry, found {other:?}"),
            }
        }
        table
    }
}
