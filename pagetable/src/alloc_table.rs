//! Where table pages come from: the [`TableAlloc`] trait (the role of aarch64-paging's
//! `Translation`, plus the cache-maintenance hook it lacks) and a plain heap implementation.

use crate::DmaAddr;
use core::ptr::NonNull;

/// Size of one table page in bytes: 4 KiB. A table whose entries fit in it takes one such page
/// ([`TableAlloc::alloc_table`]), even if it is smaller (the 1 KiB ARMv7 short-descriptor L2
/// table).
pub const TABLE_SIZE: usize = 4096;

/// Largest table in bytes: 64 KiB, a table of the ARM LPAE 64 KiB granule (8192 entries of 8
/// bytes). Tables larger than [`TABLE_SIZE`] come from [`TableAlloc::alloc_large_table`].
pub const MAX_TABLE_SIZE: usize = 64 * 1024;

/// One table page: its CPU address (for the CPU's stores), its bus address (what the walker
/// and the parent entry use), and a token for the [`TableAlloc`] that made it.
///
/// The page table keeps the `TablePage` it was given for as long as it holds the page, and hands
/// that same value back, unchanged, to [`TableAlloc::sync_for_device`] and
/// [`TableAlloc::free_table`]: the allocator finds its own bookkeeping for the page through
/// `token` without turning a bus address back into anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablePage {
    /// CPU pointer to [`TABLE_SIZE`] bytes, aligned to [`TABLE_SIZE`].
    pub cpu: NonNull<u8>,
    /// Bus address of the page as the device's walker reaches it, aligned to [`TABLE_SIZE`].
    pub dma: DmaAddr,
    /// Defined by the allocator, opaque to the page table (e.g. an index into the allocator's
    /// table of page records); 0 for an allocator that needs none. Since the fields are public,
    /// a `TablePage` can be forged: an allocator whose hooks act on memory through the token
    /// checks it (an index in bounds whose record matches `dma` or `cpu`) rather than trusting
    /// it.
    pub token: usize,
}

// SAFETY: a TablePage is a plain description of memory owned by the TableAlloc that produced it;
// the page table that holds it is the only writer.
unsafe impl Send for TablePage {}
// SAFETY: as above; sharing the description does not grant access by itself.
unsafe impl Sync for TablePage {}

/// Supplies and releases table pages, and makes CPU stores to them visible to a non-coherent
/// walker.
///
/// # Safety
/// Implementations promise that `alloc_table` returns a page that is [`TABLE_SIZE`] bytes,
/// aligned to [`TABLE_SIZE`] both in CPU and bus address, zero-filled, writable through `cpu`,
/// not aliased by any other live page, and that stays valid until passed to `free_table`; and
/// that `alloc_large_table(bytes)`, if it returns a table at all, returns one of `bytes` bytes
/// with the same guarantees, aligned to `bytes`.
pub unsafe trait TableAlloc {
    /// Allocates one zeroed table page, or `None` when out of memory.
    fn alloc_table(&mut self) -> Option<TablePage>;

    /// Allocates one zeroed table of `bytes` bytes, aligned to `bytes` in CPU and bus address,
    /// or `None`. `bytes` is a power of two above [`TABLE_SIZE`], at most [`MAX_TABLE_SIZE`]:
    /// the page table asks for it only for formats whose tables do not fit one page (ARM LPAE
    /// with the 16 KiB or 64 KiB granule: 16 KiB and 64 KiB tables; the ARMv7 short-descriptor
    /// L1 table: 16 KiB, io-pgtable-arm-v7s.c `ARM_V7S_TABLE_SIZE`). Such a table comes back
    /// through [`TableAlloc::free_table`] and [`TableAlloc::sync_for_device`] like a page (the
    /// allocator tells it apart, e.g. by its token), and `sync_for_device`'s `offset + len` is
    /// then at most `bytes`. The default supplies none: a page table of such a format then
    /// fails with [`Error::NoMemory`](crate::Error::NoMemory) where it needs one.
    fn alloc_large_table(&mut self, bytes: usize) -> Option<TablePage> {
        let _ = bytes;
        None
    }

    /// Allocates one table page whose contents need not be zero: the page table asks for it only
    /// for a table it fills completely (every entry stored) before linking it, so the zeroing
    /// of [`TableAlloc::alloc_table`] would be wasted stores. The same guarantees otherwise. The
    /// default returns a zeroed page from `alloc_table`.
    fn alloc_table_for_overwrite(&mut self) -> Option<TablePage> {
        self.alloc_table()
    }

    /// Returns a page. The page table calls it only once the page is unreachable by the walker
    /// (its parent entry cleared and the TLB invalidated, see [`Gather`](crate::Gather)), or
    /// when the table is dropped. The page's contents are unspecified (a table emptied by
    /// `unmap` holds only empty entries; one freed on an error path or at drop may not), so an
    /// allocator that recycles pages must zero them in `alloc_table`.
    ///
    /// # Safety
    /// `page` came from `alloc_table` (or `alloc_table_for_overwrite`) of this allocator, as it
    /// was returned (`cpu`, `dma` and `token` unchanged), and is not used afterwards.
    unsafe fn free_table(&mut self, page: TablePage);

    /// Makes the CPU's stores to `len` bytes at `offset` bytes into `table` visible to a
    /// non-coherent walker (clean the CPU cache lines to the point of coherency, then a
    /// barrier): the kernel's `dma_sync_single_for_device(.., DMA_TO_DEVICE)` on the table.
    ///
    /// `table` is the [`TablePage`] this allocator returned from `alloc_table` (or
    /// `alloc_table_for_overwrite`), as it returned it (`cpu`, `dma` and `token` unchanged), and
    /// not yet freed. `offset` and `len` are in bytes within the page, `len > 0` and
    /// `offset + len <= TABLE_SIZE` (the table's size for one from
    /// [`TableAlloc::alloc_large_table`]); they need not be line-aligned (the clean covers every
    /// 64-byte line the bytes touch). Called only for page tables configured as non-coherent,
    /// once per contiguous run of written lines of one table, and once with `0, TABLE_SIZE` (the
    /// table's size) for a new table before it is linked (a map's new tables come together
    /// through [`TableAlloc::sync_tables_for_device`], whose default calls this method). The
    /// default does nothing (coherent walker).
    ///
    /// The method is safe to call, so these are promises of the page table, not a safety
    /// contract: an implementation that touches memory through `table` must stay sound when
    /// handed a page it does not own (check the token, ignore the call).
    fn sync_for_device(&mut self, table: &TablePage, offset: usize, len: usize) {
        let _ = (table, offset, len);
    }

    /// Makes the CPU's stores to each `(table, offset, len)` of `tables` visible to a
    /// non-coherent walker: the same as one [`TableAlloc::sync_for_device`] call per element, in
    /// order (each element obeys that method's rules), except that one barrier after all the
    /// cleans suffices (the kernel's `dma_sync_sg_for_device` over several tables). The page
    /// table calls it with the new tables of a map, each whole, innermost first, just before
    /// the top one is linked into a table the walker can reach. The default calls
    /// `sync_for_device` for each element.
    fn sync_tables_for_device(&mut self, tables: &[(TablePage, usize, usize)]) {
        for (table, offset, len) in tables {
            self.sync_for_device(table, *offset, *len);
        }
    }
}

/// Table pages from the global heap, bus address = CPU address (a device that sees CPU memory
/// one-to-one, as in tests and benchmarks), token 0 for a page and the size in bytes for a
/// table from [`TableAlloc::alloc_large_table`] (given back to the heap when freed, not cached).
/// No cache maintenance: use it with a coherent
/// walk, or wrap it to add one (a wrapper may put its own token in the pages it hands out, and
/// restores 0 before giving a page back).
///
/// Pages are taken from the heap in chunks of several pages at once (one heap call per chunk:
/// 1 page, then as many as the allocator already has, up to [`HeapTableAlloc::MAX_CHUNK_PAGES`]),
/// as a kernel driver refills its table pool in bulk (`alloc_pages_bulk`), so that a map needing
/// many new tables does not pay the heap allocator per table. Freed pages are kept on a free
/// list and zeroed again when handed out, as a kernel driver's table cache (a `kmem_cache`, or
/// the IPU driver's pool of DMA32 pages) does, so a map in steady state does not pay the heap
/// allocator at all. [`HeapTableAlloc::trim`] returns to the heap every chunk whose pages are
/// all free; dropping the allocator does too.
#[derive(Debug, Default)]
pub struct HeapTableAlloc {
    live: usize,
    cached: alloc::vec::Vec<TablePage>,
    /// The heap blocks the pages come from, as (CPU address, pages): each was allocated with
    /// `chunk_layout(pages)` and goes back to the heap whole, once none of its pages is live.
    chunks: alloc::vec::Vec<(usize, usize)>,
    /// Pages in `chunks`.
    heap_pages: usize,
}

impl HeapTableAlloc {
    /// Most pages taken from the heap in one chunk: 16 (64 KiB), below glibc's default mmap
    /// threshold (128 KiB), so that a chunk comes from the heap rather than from a fresh
    /// `mmap` whose pages would fault on first touch.
    pub const MAX_CHUNK_PAGES: usize = 16;

    /// A new allocator with no live pages.
    pub const fn new() -> Self {
        Self {
            live: 0,
            cached: alloc::vec::Vec::new(),
            chunks: alloc::vec::Vec::new(),
            heap_pages: 0,
        }
    }

    /// An allocator with `pages` zeroed pages already cached (taken from the heap as one chunk,
    /// so already touched: no page fault when they are handed out), as a `mempool` is created
    /// with a minimum number of elements; `None` if the heap cannot supply them.
    pub fn with_reserve(pages: usize) -> Option<Self> {
        let mut a = Self::new();
        if pages > 0 {
            a.refill(pages, true)?;
        }
        Some(a)
    }

    /// Pages allocated and not yet freed.
    pub fn live_pages(&self) -> usize {
        self.live
    }

    /// Pages kept for reuse: freed pages, and pages of a chunk not handed out yet.
    pub fn cached_pages(&self) -> usize {
        self.cached.len()
    }

    /// Returns to the heap every chunk none of whose pages is live (all its pages are cached).
    /// Cached pages of a chunk that still has a live page stay cached.
    pub fn trim(&mut self) {
        let key = |p: &TablePage| p.cpu.as_ptr() as usize;
        let mut cached = core::mem::take(&mut self.cached);
        let mut chunks = core::mem::take(&mut self.chunks);
        cached.sort_unstable_by_key(key);
        chunks.sort_unstable();
        let mut i = 0;
        for (base, pages) in chunks {
            // Every cached page lies in one chunk, and the chunks do not overlap.
            let end = base + pages * TABLE_SIZE;
            let from = i + cached[i..].partition_point(|p| key(p) < base);
            let to = from + cached[from..].partition_point(|p| key(p) < end);
            if to - from == pages {
                // SAFETY: the chunk came from `alloc` or `alloc_zeroed` with this layout
                // (`refill`), and none of
                // its pages is live: all of them are cached, and are forgotten here.
                unsafe { alloc::alloc::dealloc(base as *mut u8, Self::chunk_layout(pages)) };
                self.heap_pages -= pages;
            } else {
                self.chunks.push((base, pages));
                self.cached.extend_from_slice(&cached[from..to]);
            }
            i = to;
        }
    }

    /// A page from the free list (refilled from the heap if empty); zeroed if `zeroed`.
    #[inline]
    fn take(&mut self, zeroed: bool) -> Option<TablePage> {
        if self.cached.is_empty() {
            self.refill(self.heap_pages.clamp(1, Self::MAX_CHUNK_PAGES), false)?;
        }
        let page = self.cached.pop()?;
        if zeroed {
            // SAFETY: a cached page is TABLE_SIZE writable bytes that nobody else holds.
            unsafe { core::ptr::write_bytes(page.cpu.as_ptr(), 0, TABLE_SIZE) };
        }
        self.live += 1;
        Some(page)
    }

    /// Takes a chunk of `pages` pages (`pages > 0`) from the heap, zeroed if `zeroed`, and
    /// caches its pages, the lowest last (handed out first); `None` if the heap cannot supply it.
    fn refill(&mut self, pages: usize, zeroed: bool) -> Option<()> {
        let layout = Self::chunk_layout(pages);
        // SAFETY: the layout has non-zero size. Unzeroed pages are fine: `take` zeroes a page
        // for `alloc_table`, and hands one out unzeroed only through
        // `alloc_table_for_overwrite`, whose caller stores every byte first.
        let p = unsafe {
            if zeroed {
                alloc::alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc::alloc(layout)
            }
        };
        let base = NonNull::new(p)?;
        self.chunks.push((base.as_ptr() as usize, pages));
        self.heap_pages += pages;
        self.cached.reserve(pages);
        for i in (0..pages).rev() {
            // SAFETY: i < pages, so the offset stays inside the chunk.
            let cpu = unsafe { base.add(i * TABLE_SIZE) };
            self.cached.push(TablePage {
                cpu,
                dma: DmaAddr(cpu.as_ptr() as usize as u64),
                token: 0,
            });
        }
        Some(())
    }

    fn chunk_layout(pages: usize) -> core::alloc::Layout {
        // TABLE_SIZE is a non-zero power of two; the chunks here are far below isize::MAX.
        core::alloc::Layout::from_size_align(pages * TABLE_SIZE, TABLE_SIZE).unwrap()
    }
}

impl Drop for HeapTableAlloc {
    /// Gives back every chunk with no live page; a chunk whose page is still live (a page
    /// never freed) is leaked, so that page stays valid.
    fn drop(&mut self) {
        self.trim();
    }
}

// SAFETY: pages are TABLE_SIZE-aligned slices of chunks from the heap with a
// (pages * TABLE_SIZE)/TABLE_SIZE layout, each handed out to one holder at a time, and a chunk
// goes back to the heap only when none of its pages is live; large tables come with a
// bytes/bytes layout. alloc_table zeroes every page it hands out (alloc_for_overwrite leaves
// that to the caller, as its contract allows); bus address = CPU address preserves the alignment.
unsafe impl TableAlloc for HeapTableAlloc {
    fn alloc_table(&mut self) -> Option<TablePage> {
        self.take(true)
    }

    fn alloc_table_for_overwrite(&mut self) -> Option<TablePage> {
        self.take(false)
    }

    fn alloc_large_table(&mut self, bytes: usize) -> Option<TablePage> {
        if !bytes.is_power_of_two() || bytes <= TABLE_SIZE || bytes > MAX_TABLE_SIZE {
            return None;
        }
        let layout = core::alloc::Layout::from_size_align(bytes, bytes).ok()?;
        // SAFETY: the layout has non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let page = TablePage {
            cpu: NonNull::new(p)?,
            dma: DmaAddr(p as usize as u64),
            token: bytes,
        };
        self.live += 1;
        Some(page)
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        self.live -= 1;
        if page.token == 0 {
            self.cached.push(page);
        } else {
            // A large table: the token is its size, the layout it was allocated with.
            let layout = core::alloc::Layout::from_size_align(page.token, page.token)
                .expect("the token of a large table is its power-of-two size");
            // SAFETY: the caller gives back a table of this allocator unchanged, so it came
            // from alloc_zeroed with this layout in alloc_large_table.
            unsafe { alloc::alloc::dealloc(page.cpu.as_ptr(), layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_served_before_the_heap_and_freed_pages_come_back_zeroed() {
        let mut a = HeapTableAlloc::with_reserve(3).unwrap();
        assert_eq!((a.cached_pages(), a.live_pages()), (3, 0));
        let pages: alloc::vec::Vec<_> = (0..3).map(|_| a.alloc_table().unwrap()).collect();
        assert_eq!((a.cached_pages(), a.live_pages()), (0, 3));
        // SAFETY: the page is live and TABLE_SIZE bytes long.
        unsafe { pages[0].cpu.as_ptr().write_bytes(0xff, TABLE_SIZE) };
        for p in pages {
            // SAFETY: each page came from `a` and is not used again.
            unsafe { a.free_table(p) };
        }
        assert_eq!((a.cached_pages(), a.live_pages()), (3, 0));
        let p = a.alloc_table().unwrap();
        // SAFETY: the page is live and TABLE_SIZE bytes long.
        let bytes = unsafe { core::slice::from_raw_parts(p.cpu.as_ptr(), TABLE_SIZE) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "a recycled page is zeroed again"
        );
        // SAFETY: from `a`, not used again.
        unsafe { a.free_table(p) };
    }

    #[test]
    fn chunks_grow_and_go_back_to_the_heap_only_when_free() {
        let mut a = HeapTableAlloc::new();
        // 1 + 1 + 2 + 4 + 8 pages: five chunks for 16 pages.
        let pages: alloc::vec::Vec<_> = (0..16).map(|_| a.alloc_table().unwrap()).collect();
        assert_eq!((a.chunks.len(), a.heap_pages, a.cached_pages()), (5, 16, 0));
        for p in &pages {
            assert!((p.cpu.as_ptr() as usize).is_multiple_of(TABLE_SIZE) && p.token == 0);
            // SAFETY: live and TABLE_SIZE bytes long.
            let bytes = unsafe { core::slice::from_raw_parts(p.cpu.as_ptr(), TABLE_SIZE) };
            assert!(bytes.iter().all(|&b| b == 0), "alloc_table zeroes");
        }
        let mut sorted: alloc::vec::Vec<_> =
            pages.iter().map(|p| p.cpu.as_ptr() as usize).collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 16, "no page handed out twice");
        // Free all but the last page (in the last, 8-page chunk): trimming frees the four other
        // chunks and keeps the 7 free pages of the last one cached.
        let (last, rest) = pages.split_last().unwrap();
        for p in rest {
            // SAFETY: from `a`, not used again.
            unsafe { a.free_table(*p) };
        }
        a.trim();
        assert_eq!((a.chunks.len(), a.heap_pages, a.cached_pages()), (1, 8, 7));
        // SAFETY: from `a`, not used again.
        unsafe { a.free_table(*last) };
        a.trim();
        assert_eq!((a.chunks.len(), a.heap_pages, a.cached_pages()), (0, 0, 0));
        assert_eq!(a.live_pages(), 0);
    }
}
