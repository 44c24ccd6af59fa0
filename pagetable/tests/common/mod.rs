//! Test infrastructure shared by the page-table suites: [`SimAlloc`], a table allocator whose
//! pages live at small bus addresses and carry a second, *device* copy that only
//! `sync_for_device` updates, so a non-coherent walker reading that copy sees exactly what was
//! cleaned to memory; plus snapshot and comparison helpers.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use devmmu_pagetable::{
    DmaAddr, Format, Gather, Iova, Mapping, PageTable, PteWord, TableAlloc, TablePage, TableReader,
    MAX_TABLE_SIZE, TABLE_SIZE,
};
use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::rc::Rc;

/// Bus address of the first table page handed out by a default [`SimAlloc`]. Low enough for the
/// Intel IPU format (44-bit bus addresses) and for ARM LPAE (48-bit).
pub const BASE: u64 = 0x1000_0000;

/// Bus address of the pages handed out by [`SimAlloc::bad_addr_after`]: 2^44, one page beyond
/// what an Intel IPU entry (32 bits of `addr >> 12`) can hold.
pub const HIGH_BASE: u64 = 1 << 44;

/// What a fresh page's device copy holds before the first clean: the real cache could hold
/// anything, so a table walked before it was cleaned must show up as a wrong walk, not as zeros.
pub const GARBAGE: u8 = 0xA5;

/// Cache-line size in bytes, as the page table assumes (64 bytes).
pub const LINE: usize = 64;

/// Lines per 4 KiB table page.
pub const LINES_PER_PAGE: usize = TABLE_SIZE / LINE;

/// Offset from the allocator's base of the bus addresses of large tables
/// ([`TableAlloc::alloc_large_table`]): each takes a [`MAX_TABLE_SIZE`] slot there, so it is
/// aligned to its size whatever that is.
pub const LARGE_OFFSET: u64 = 0x1000_0000;

/// Token bit of a large table (the rest is its slot).
const LARGE_TOKEN: u64 = 1 << 32;

struct Page {
    /// From `std::alloc::alloc_zeroed` with `layout(size)`; released in `drop`.
    cpu: NonNull<u8>,
    /// Bytes: [`TABLE_SIZE`], or a large table's size.
    size: usize,
    /// What a non-coherent walker reads: updated only by `sync_for_device`.
    dev: Vec<u8>,
}

/// CPU memory of a table of `size` bytes, aligned to its size as `TableAlloc` promises.
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, size).expect("power-of-two table size")
}

impl Page {
    fn new(size: usize) -> Self {
        // SAFETY: the layout has a non-zero size.
        let cpu =
            NonNull::new(unsafe { std::alloc::alloc_zeroed(layout(size)) }).expect("out of memory");
        Page {
            cpu,
            size,
            dev: vec![GARBAGE; size],
        }
    }

    fn cpu_bytes(&self) -> &[u8] {
        // SAFETY: `cpu` is `size` bytes allocated in `new`, valid until the page is dropped; the
        // page table writes to it only inside its own calls, never while the test reads.
        unsafe { std::slice::from_raw_parts(self.cpu.as_ptr(), self.size) }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: `cpu` came from alloc_zeroed with this layout and is released only here.
        unsafe { std::alloc::dealloc(self.cpu.as_ptr(), layout(self.size)) };
    }
}

/// Decodes a raw entry into the bus address it points at, if it may point at a table.
pub type LinkDecoder = fn(u64) -> Option<u64>;

/// One `sync_for_device` call as the page table made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRecord {
    /// Bus address of the table page.
    pub table: DmaAddr,
    /// Offset of the first byte, in bytes from the start of the page.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl SyncRecord {
    /// The 64-byte lines the call covers, as line indices inside the page.
    pub fn lines(&self) -> std::ops::Range<usize> {
        self.offset / LINE..(self.offset + self.len).div_ceil(LINE)
    }
}

#[derive(Default)]
struct State {
    /// Live pages by bus address.
    pages: BTreeMap<u64, Page>,
    /// Slots of freed pages, reused lowest first so bus addresses are deterministic.
    free_slots: BTreeSet<u64>,
    next_slot: u64,
    /// The same for large tables (slots of [`MAX_TABLE_SIZE`] bytes from `base + LARGE_OFFSET`).
    free_large: BTreeSet<u64>,
    next_large: u64,
    base: u64,
    allocs: u64,
    frees: u64,
    failed_allocs: u64,
    /// Allocations left before the injected failure (`Some(0)`: the next one fails).
    fail_in: Option<usize>,
    /// Allocations left before one is given a bus address at [`HIGH_BASE`].
    high_in: Option<usize>,
    walker_reads_device: bool,
    log: Vec<SyncRecord>,
    /// Entry width and decoder of table pointers for [`SimAlloc::check_links`].
    link_check: Option<(usize, LinkDecoder)>,
}

impl State {
    /// Slot of a page at bus address `dma`, its token: pages sit at `base` or [`HIGH_BASE`],
    /// whichever is the nearest below `dma` (slots are few, so the two ranges never meet), and
    /// large tables [`LARGE_OFFSET`] above that, their token marked with `LARGE_TOKEN`.
    fn slot_of(&self, dma: DmaAddr) -> u64 {
        let base = [self.base, HIGH_BASE]
            .into_iter()
            .filter(|&b| b <= dma.0)
            .max()
            .unwrap_or_else(|| panic!("not a page of this allocator: {dma:?}"));
        let off = dma.0 - base;
        if off >= LARGE_OFFSET {
            LARGE_TOKEN | ((off - LARGE_OFFSET) / MAX_TABLE_SIZE as u64)
        } else {
            off / TABLE_SIZE as u64
        }
    }

    /// The live page holding bus address `addr`, with its address.
    fn page_at(&self, addr: u64) -> Option<(u64, &Page)> {
        let (&a, p) = self.pages.range(..=addr).next_back()?;
        (addr < a + p.size as u64).then_some((a, p))
    }
}

/// A [`TableAlloc`] + [`TableReader`] for tests: a clonable handle onto shared state.
///
/// - Pages sit at `base + 4 KiB * slot` (default [`BASE`]), lowest free slot first; CPU memory is
///   a boxed, zeroed 4 KiB page per slot.
/// - Every page has a device copy, garbage ([`GARBAGE`]) when allocated, that only
///   `sync_for_device` updates, widened to whole 64-byte lines like a cache clean.
/// - [`TableReader::read_pte`] reads the CPU copy (a coherent walker) or, after
///   [`SimAlloc::set_walker_reads_device`], the device copy (a non-coherent walker).
/// - A page's token is its slot.
/// - Every sync is logged; allocations and frees are counted; failures can be injected.
///
/// Misuse by the page table (freeing a page twice, syncing outside a live page, handing back a
/// page whose CPU pointer or token is not the one it was given) panics: in a
/// test, that is the failure we want to see.
#[derive(Clone)]
pub struct SimAlloc(Rc<RefCell<State>>);

impl Default for SimAlloc {
    fn default() -> Self {
        Self::new()
    }
}

impl SimAlloc {
    /// An allocator whose pages start at bus address [`BASE`]; the walker reads CPU memory.
    pub fn new() -> Self {
        Self::with_base(BASE)
    }

    /// An allocator whose pages start at bus address `base` (4 KiB aligned).
    pub fn with_base(base: u64) -> Self {
        assert_eq!(base % TABLE_SIZE as u64, 0);
        Self(Rc::new(RefCell::new(State {
            base,
            ..State::default()
        })))
    }

    /// Chooses what [`TableReader::read_pte`] returns: the device copy (`true`, a non-coherent
    /// walker) or the CPU copy (`false`).
    pub fn set_walker_reads_device(&self, on: bool) {
        self.0.borrow_mut().walker_reads_device = on;
    }

    /// Checks, at every sync, that each entry reaching the device view which points at a live
    /// table page (per `decode`, for entries of `word` bytes) points at a page whose device copy
    /// is already complete: the walker must never reach a table it cannot see yet. A violation
    /// panics inside the sync. Entries pointing elsewhere (data pages) are ignored.
    pub fn check_links(&self, word: usize, decode: LinkDecoder) {
        self.0.borrow_mut().link_check = Some((word, decode));
    }

    /// Makes the `(n + 1)`-th next allocation return `None` (`n = 0`: the very next one). One
    /// shot: later allocations succeed again.
    pub fn fail_after(&self, n: usize) {
        self.0.borrow_mut().fail_in = Some(n);
    }

    /// Gives the `(n + 1)`-th next allocation a bus address at [`HIGH_BASE`] (beyond 44 bits)
    /// instead of the normal one. One shot.
    pub fn bad_addr_after(&self, n: usize) {
        self.0.borrow_mut().high_in = Some(n);
    }

    /// Cancels pending [`SimAlloc::fail_after`] and [`SimAlloc::bad_addr_after`].
    pub fn clear_faults(&self) {
        let mut s = self.0.borrow_mut();
        s.fail_in = None;
        s.high_in = None;
    }

    /// Pages allocated and not yet freed.
    pub fn live_pages(&self) -> usize {
        self.0.borrow().pages.len()
    }

    /// Successful allocations so far.
    pub fn total_allocs(&self) -> u64 {
        self.0.borrow().allocs
    }

    /// Pages freed so far.
    pub fn total_frees(&self) -> u64 {
        self.0.borrow().frees
    }

    /// Allocations refused by [`SimAlloc::fail_after`] so far.
    pub fn failed_allocs(&self) -> u64 {
        self.0.borrow().failed_allocs
    }

    /// Bus addresses of the live pages, ascending.
    pub fn live_addrs(&self) -> Vec<DmaAddr> {
        self.0.borrow().pages.keys().map(|&a| DmaAddr(a)).collect()
    }

    /// Every sync since the last [`SimAlloc::clear_sync_log`], in call order.
    pub fn sync_log(&self) -> Vec<SyncRecord> {
        self.0.borrow().log.clone()
    }

    /// Forgets the logged syncs.
    pub fn clear_sync_log(&self) {
        self.0.borrow_mut().log.clear();
    }

    /// Total 64-byte lines covered by the logged syncs (a line synced twice counts twice).
    pub fn logged_lines(&self) -> u64 {
        self.0
            .borrow()
            .log
            .iter()
            .map(|r| r.lines().len() as u64)
            .sum()
    }

    /// The CPU bytes of the live page at `table`.
    pub fn cpu_bytes(&self, table: DmaAddr) -> Option<Vec<u8>> {
        let s = self.0.borrow();
        s.pages.get(&table.0).map(|p| p.cpu_bytes().to_vec())
    }

    /// The device copy of the live page at `table`.
    pub fn device_bytes(&self, table: DmaAddr) -> Option<Vec<u8>> {
        let s = self.0.borrow();
        s.pages.get(&table.0).map(|p| p.dev.to_vec())
    }

    /// What a coherent walker's hardware update does to the 8-byte entry at bus address `addr`
    /// (an SMMU's dirty-state update): an atomic read-modify-write of the CPU copy, storing
    /// `f(old)` if it is `Some`. Returns the old value, or `None` if no live page is there.
    pub fn device_update_u64(
        &self,
        addr: DmaAddr,
        f: impl FnMut(u64) -> Option<u64>,
    ) -> Option<u64> {
        let s = self.0.borrow();
        let (page_addr, page) = s.page_at(addr.0)?;
        let off = (addr.0 - page_addr) as usize;
        if !off.is_multiple_of(8) || off + 8 > page.size {
            return None;
        }
        // SAFETY: `off + 8 <= size`, so the word is inside the page's CPU memory, which stays
        // allocated while `s` is borrowed; it is 8-byte aligned (pages are aligned to their size,
        // `off` is a multiple of 8). The page table accesses it only inside its own calls, never
        // during this one (tests are single-threaded), and its own racing update is atomic.
        let word = unsafe {
            std::sync::atomic::AtomicU64::from_ptr(page.cpu.as_ptr().add(off) as *mut u64)
        };
        let mut f = f;
        let r = word.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            &mut f,
        );
        Some(r.unwrap_or_else(|v| v))
    }

    /// Reads a little-endian entry of `bytes` bytes at bus address `addr` from the CPU copy
    /// (`device == false`) or the device copy, whatever the walker flag says.
    pub fn read_raw(&self, addr: DmaAddr, bytes: usize, device: bool) -> Option<u64> {
        let s = self.0.borrow();
        let (page_addr, page) = s.page_at(addr.0)?;
        let off = (addr.0 - page_addr) as usize;
        if off + bytes > page.size || !(bytes == 4 || bytes == 8) {
            return None;
        }
        let src: &[u8] = if device {
            &page.dev[..]
        } else {
            page.cpu_bytes()
        };
        let mut x = [0u8; 8];
        x[..bytes].copy_from_slice(&src[off..off + bytes]);
        Some(u64::from_le_bytes(x))
    }

    /// The CPU bytes of every live page, by bus address.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.0.borrow();
        Snapshot(
            s.pages
                .iter()
                .map(|(&a, p)| (a, p.cpu_bytes().to_vec()))
                .collect(),
        )
    }

    /// Bus addresses of live pages whose device copy differs from their CPU bytes, with the
    /// first differing line of each: what a non-coherent walker would read wrong right now.
    pub fn stale_pages(&self) -> Vec<(DmaAddr, usize)> {
        let s = self.0.borrow();
        s.pages
            .iter()
            .filter_map(|(&a, p)| {
                let cpu = p.cpu_bytes();
                (0..p.size / LINE)
                    .find(|&l| cpu[l * LINE..(l + 1) * LINE] != p.dev[l * LINE..(l + 1) * LINE])
                    .map(|l| (DmaAddr(a), l))
            })
            .collect()
    }
}

// SAFETY: pages are fresh zeroed allocations of their size, aligned to it, each owned by exactly
// one live slot until `free_table`; bus addresses are `base + 4 KiB * slot` with a 4 KiB aligned
// base, or `base + LARGE_OFFSET + 64 KiB * slot` for large tables, so they are aligned to their
// size and distinct among live pages.
unsafe impl TableAlloc for SimAlloc {
    fn alloc_table(&mut self) -> Option<TablePage> {
        self.alloc(TABLE_SIZE)
    }

    /// Large tables, for the formats that need them (ARM LPAE 16 KiB / 64 KiB granules): at
    /// `base + LARGE_OFFSET + MAX_TABLE_SIZE * slot`. Failures injected as for pages.
    fn alloc_large_table(&mut self, bytes: usize) -> Option<TablePage> {
        assert!(
            bytes.is_power_of_two() && bytes > TABLE_SIZE && bytes <= MAX_TABLE_SIZE,
            "large table of {bytes:#x} bytes"
        );
        self.alloc(bytes)
    }

    /// A page full of garbage on the CPU side too: an entry the page table fails to store
    /// before linking the table shows up as a wrong walk.
    fn alloc_table_for_overwrite(&mut self) -> Option<TablePage> {
        let page = self.alloc(TABLE_SIZE)?;
        // SAFETY: a fresh page of TABLE_SIZE bytes owned by the caller.
        unsafe { std::ptr::write_bytes(page.cpu.as_ptr(), GARBAGE, TABLE_SIZE) };
        Some(page)
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        let mut s = self.0.borrow_mut();
        let p = s
            .pages
            .remove(&page.dma.0)
            .unwrap_or_else(|| panic!("free of a page that is not live: {:?}", page.dma));
        assert_eq!(p.cpu.as_ptr(), page.cpu.as_ptr(), "CPU/bus pair mismatch");
        let slot = s.slot_of(page.dma);
        assert_eq!(page.token as u64, slot, "token changed: {page:?}");
        if slot & LARGE_TOKEN != 0 {
            s.free_large.insert(slot & !LARGE_TOKEN);
        } else {
            s.free_slots.insert(slot);
        }
        s.frees += 1;
    }

    fn sync_for_device(&mut self, page: &TablePage, offset: usize, len: usize) {
        let mut s = self.0.borrow_mut();
        let table = page.dma;
        let size = s.pages.get(&table.0).map_or(TABLE_SIZE, |p| p.size);
        assert!(
            len > 0 && offset + len <= size,
            "sync outside the page: {table:?} +{offset:#x} len {len:#x}"
        );
        assert_eq!(
            page.token as u64,
            s.slot_of(table),
            "sync of a page whose token changed: {page:?}"
        );
        let rec = SyncRecord { table, offset, len };
        let cpu = page.cpu;
        let page = s
            .pages
            .get_mut(&table.0)
            .unwrap_or_else(|| panic!("sync of a page that is not live: {table:?}"));
        assert_eq!(
            page.cpu.as_ptr(),
            cpu.as_ptr(),
            "sync of a CPU/bus pair that was never handed out"
        );
        // A clean writes back whole lines.
        let lines = rec.lines();
        let (a, b) = (lines.start * LINE, lines.end * LINE);
        let cpu = page.cpu_bytes()[a..b].to_vec();
        page.dev[a..b].copy_from_slice(&cpu);
        s.log.push(rec);
        if let Some((word, decode)) = s.link_check {
            for w in cpu.chunks_exact(word) {
                let mut x = [0u8; 8];
                x[..word].copy_from_slice(w);
                let Some(target) = decode(u64::from_le_bytes(x)) else {
                    continue;
                };
                if let Some(t) = s.pages.get(&target) {
                    assert!(
                        t.dev[..] == t.cpu_bytes()[..],
                        "sync of {table:?} +{offset:#x} exposes a pointer to table {target:#x} \
                         whose contents the device cannot see yet"
                    );
                }
            }
        }
    }
}

impl SimAlloc {
    /// A zeroed table of `size` bytes (CPU side; the device side is garbage).
    fn alloc(&mut self, size: usize) -> Option<TablePage> {
        let mut guard = self.0.borrow_mut();
        let s = &mut *guard;
        if let Some(n) = s.fail_in {
            if n == 0 {
                s.fail_in = None;
                s.failed_allocs += 1;
                return None;
            }
            s.fail_in = Some(n - 1);
        }
        let high = match s.high_in {
            Some(0) => {
                s.high_in = None;
                true
            }
            Some(n) => {
                s.high_in = Some(n - 1);
                false
            }
            None => false,
        };
        let large = size > TABLE_SIZE;
        let (free, next) = if large {
            (&mut s.free_large, &mut s.next_large)
        } else {
            (&mut s.free_slots, &mut s.next_slot)
        };
        let slot = match free.pop_first() {
            Some(slot) => slot,
            None => {
                *next += 1;
                *next - 1
            }
        };
        let base = if high { HIGH_BASE } else { s.base };
        let (dma, token) = if large {
            (
                base + LARGE_OFFSET + slot * MAX_TABLE_SIZE as u64,
                LARGE_TOKEN | slot,
            )
        } else {
            (base + slot * TABLE_SIZE as u64, slot)
        };
        let page = Page::new(size);
        let cpu = page.cpu;
        assert!(
            s.pages.insert(dma, page).is_none(),
            "slot reused while live"
        );
        s.allocs += 1;
        Some(TablePage {
            cpu,
            dma: DmaAddr(dma),
            token: token as usize,
        })
    }
}

impl TableReader for SimAlloc {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let device = self.0.borrow().walker_reads_device;
        self.read_raw(addr, bytes, device)
    }
}

/// A wrapper that forwards allocations and frees to a [`SimAlloc`] but drops every
/// `sync_for_device` while [`DropSyncs::dropping`] is set: a driver that forgot to clean.
pub struct DropSyncs {
    /// The allocator whose pages are used.
    pub inner: SimAlloc,
    /// While `true`, sync calls are swallowed.
    pub dropping: Rc<Cell<bool>>,
    /// If set, only whole-table cleans (new tables) are swallowed; line syncs go through.
    pub whole_tables_only: bool,
    /// How many sync calls were swallowed.
    pub dropped: Rc<Cell<u64>>,
}

// SAFETY: pages come unchanged from SimAlloc, which upholds the contract.
unsafe impl TableAlloc for DropSyncs {
    fn alloc_table(&mut self) -> Option<TablePage> {
        self.inner.alloc_table()
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        // SAFETY: forwarded unchanged; the caller's guarantee carries over.
        unsafe { self.inner.free_table(page) }
    }

    fn sync_for_device(&mut self, table: &TablePage, offset: usize, len: usize) {
        if self.dropping.get() && (!self.whole_tables_only || len == TABLE_SIZE) {
            self.dropped.set(self.dropped.get() + 1);
        } else {
            self.inner.sync_for_device(table, offset, len);
        }
    }
}

/// The CPU bytes of every live table page, by bus address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<u64, Vec<u8>>);

impl Snapshot {
    /// `(page, line)` pairs of pages live in both snapshots whose line differs.
    pub fn changed_lines(&self, after: &Snapshot) -> BTreeSet<(u64, usize)> {
        let mut out = BTreeSet::new();
        for (a, old) in &self.0 {
            if let Some(new) = after.0.get(a) {
                for l in 0..old.len().min(new.len()) / LINE {
                    if old[l * LINE..(l + 1) * LINE] != new[l * LINE..(l + 1) * LINE] {
                        out.insert((*a, l));
                    }
                }
            }
        }
        out
    }

    /// Entries (of `word` bytes) that differ between `self` and `after`, over the pages live in
    /// `after`; a page not live in `self` is compared against every entry = `fresh_fill` (the
    /// value a new table is filled with before the operation's stores).
    pub fn changed_words(&self, after: &Snapshot, word: usize, fresh_fill: u64) -> u64 {
        let fill = &fresh_fill.to_le_bytes()[..word];
        let mut n = 0;
        for (a, new) in &after.0 {
            for (i, w) in new.chunks_exact(word).enumerate() {
                let old = match self.0.get(a) {
                    Some(old) => &old[i * word..(i + 1) * word],
                    None => fill,
                };
                n += (old != w) as u64;
            }
        }
        n
    }
}

/// Lines covered by `log`, as `(page, line)` with multiplicity.
pub fn synced_lines(log: &[SyncRecord]) -> BTreeMap<(u64, usize), usize> {
    let mut m = BTreeMap::new();
    for r in log {
        for l in r.lines() {
            *m.entry((r.table.0, l)).or_insert(0) += 1;
        }
    }
    m
}

/// Everything a failed operation must leave unchanged: the leaves, the raw bytes of every live
/// table page, and how many pages are live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    /// `mappings()` of the page table.
    pub mappings: Vec<Mapping>,
    /// Raw CPU bytes of every live page.
    pub pages: Snapshot,
    /// Live page count of the allocator.
    pub live: usize,
    /// `table_count()` of the page table.
    pub tables: usize,
}

/// Captures a [`TableState`].
pub fn table_state<F: Format, A: TableAlloc>(pt: &PageTable<F, A>, sim: &SimAlloc) -> TableState {
    TableState {
        mappings: pt.mappings().collect(),
        pages: sim.snapshot(),
        live: sim.live_pages(),
        tables: pt.table_count(),
    }
}

/// Completes `gather` and returns the invalidated ranges as `(start, end)` IOVA pairs.
pub fn sync_gather<F: Format, A: TableAlloc>(
    pt: &mut PageTable<F, A>,
    g: &mut Gather,
) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    pt.iotlb_sync(g, |iova: Iova, size| ranges.push((iova.0, iova.0 + size)));
    ranges
}

/// Whether `iova` lies in one of `ranges` (`(start, end)` pairs).
pub fn covered(ranges: &[(u64, u64)], iova: u64) -> bool {
    ranges.iter().any(|&(s, e)| s <= iova && iova < e)
}

/// Size in bytes of one entry of format `F`.
pub fn pte_bytes<F: Format>() -> usize {
    <F::Pte as PteWord>::BYTES
}
