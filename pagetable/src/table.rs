//! [`PageTable`]: map, unmap and translate, written once for every [`Format`].
//!
//! Shape of the algorithm (after Linux's drivers/iommu/generic_pt/iommu_pt.h): one walk down per
//! table, then a tight store loop over the run of leaves that table receives; for a non-coherent
//! walker, one `sync_for_device` per contiguous run of written cache lines of a table, so each
//! written line is cleaned exactly once per operation. A newly allocated table is filled
//! completely, cleaned once as a whole, and only then linked into a table the walker can reach,
//! so the walker never reaches a table whose contents it cannot see yet: the new tables of a
//! subtree are cleaned together, with one `sync_tables_for_device` (one barrier), just before
//! the subtree's top table is linked into a live one. A map or unmap whose range lies inside one
//! linked last-level table takes a fast path: one walk down, then the check and the stores in
//! that table.
//!
//! Each table is one page; the CPU pointer of a child table is kept beside its parent (the
//! `l2_pts` array of drivers/media/pci/intel/ipu6/ipu6-mmu.c), so the update path never turns a
//! bus address back into a CPU pointer. Each node keeps its [`TablePage`] whole, the allocator's
//! token included, and hands it back to [`TableAlloc::sync_for_device`], so the allocator never
//! turns one back into its own page record either.

use crate::alloc_table::{TableAlloc, TablePage, MAX_TABLE_SIZE, TABLE_SIZE};
use crate::format::{Entry, Geometry, MAX_LEVELS};
use crate::{
    AddressSizes, DmaAddr, Error, Format, Gather, Invalidation, Iova, Prot, PteWord, Stats,
};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

// Dirty tracking (`enable_dirty_tracking`, `read_and_clear_dirty`): its own file, a child
// module so that it reaches the table's internals without widening them.
#[path = "dirty.rs"]
mod dirty;

const NONE: u32 = u32::MAX;
const LINE: usize = 64;

/// How a page table is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTableConfig {
    /// Whether the device's table walker snoops the CPU caches. If not, every written PTE line is
    /// cleaned through [`TableAlloc::sync_for_device`] before the operation returns.
    pub coherent_walk: bool,
}

impl Default for PageTableConfig {
    fn default() -> Self {
        Self {
            coherent_walk: true,
        }
    }
}

/// One mapped leaf, as yielded by [`PageTable::mappings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First IOVA of the leaf.
    pub iova: Iova,
    /// Bus address it maps to.
    pub dma: DmaAddr,
    /// Leaf size in bytes.
    pub size: u64,
    /// Level of the leaf (0 = root).
    pub level: usize,
    /// Permissions as the format encodes them.
    pub prot: Prot,
}

struct Node {
    /// The page as the allocator returned it, passed back unchanged to `sync_for_device` and
    /// `free_table`.
    page: TablePage,
    /// Non-empty entries in this table.
    used: u32,
    /// Node index of each entry's child table, `NONE` if none (empty for last-level tables).
    children: Box<[u32]>,
    /// Number of the map that created the table (`PageTable::maps` then), so that undoing a
    /// failed map frees exactly the tables it created.
    born: u64,
}

/// The bytes of one table written so far by an operation and not yet cleaned, kept as one run of
/// whole lines: a write that is not line-contiguous with it flushes it first.
#[derive(Default)]
pub(crate) struct Dirty {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Dirty {
    #[inline(always)]
    pub(crate) fn note(&mut self, off: usize, len: usize) -> Option<(usize, usize)> {
        if self.start == self.end {
            self.start = off;
            self.end = off + len;
            None
        } else if off <= self.end.next_multiple_of(LINE) {
            self.end = self.end.max(off + len);
            None
        } else {
            let run = (self.start, self.end);
            self.start = off;
            self.end = off + len;
            Some(run)
        }
    }
}

/// Where the bus addresses of a map come from: a scatter-gather list walked in order, with the
/// current segment's next bus address and bytes left kept at hand (a list of short segments is
/// walked at a few instructions per segment).
struct Src<'s> {
    /// Bus address of the next byte to map.
    dma: u64,
    /// Bytes left in the current segment.
    left: u64,
    /// The segments after the current one.
    rest: core::slice::Iter<'s, (DmaAddr, u64)>,
}

impl<'s> Src<'s> {
    fn new(segs: &'s [(DmaAddr, u64)]) -> Src<'s> {
        let mut rest = segs.iter();
        let (dma, left) = rest.next().map_or((0, 0), |&(d, l)| (d.0, l));
        Src { dma, left, rest }
    }
    #[inline(always)]
    fn dma(&self) -> u64 {
        self.dma
    }
    #[inline(always)]
    fn remaining(&self) -> u64 {
        self.left
    }
    /// Moves `n` bytes on (at most `remaining()`), to the next segment when this one is done.
    #[inline(always)]
    fn advance(&mut self, n: u64) {
        self.dma = self.dma.wrapping_add(n);
        self.left -= n;
        if self.left == 0 {
            if let Some(&(d, l)) = self.rest.next() {
                self.dma = d.0;
                self.left = l;
            }
        }
    }
}

/// A device page table of format `F` whose table pages come from `A`.
///
/// All sizes and addresses are in bytes and must be multiples of the format's granule (4 KiB for
/// both built-in formats). Every operation validates its arguments first and either completes or
/// leaves the translations exactly as they were.
///
/// Teardown: dropping the table frees every table page at once; the owner must have stopped the
/// device from walking it (or invalidated its TLB) before, as with `free_io_pgtable_ops`.
pub struct PageTable<F: Format, A: TableAlloc> {
    alloc: A,
    /// Input size in bits: IOVAs are below `2^ias`.
    ias: u32,
    /// Output size in bits: every bus address an entry holds is below `2^oas`.
    oas: u32,
    /// `limit(ias)` and `limit(oas)`: the first IOVA and the first bus address beyond them.
    ilimit: u64,
    olimit: u64,
    /// The last-level leaf attributes of the last single map's `prot` (`map_leaf_attrs`),
    /// reused while `prot` is the same; reset when the attributes' inputs change (dirty
    /// tracking turned on).
    pub(crate) leaf_attr_cache: Option<(Prot, F::Pte)>,
    /// Level of the root table (0 unless `ias` leaves the top levels out).
    start: usize,
    /// Process-unique id, recorded in the gathers this table fills (see [`Gather`]).
    id: u64,
    coherent: bool,
    /// Whether unmap frees the tables it empties ([`Format::FREE_EMPTY_TABLES`] unless set).
    free_empty: bool,
    /// Whether writable leaves are mapped writable-clean (see `dirty.rs`).
    dirty_tracking: bool,
    /// Map calls that got past validation, numbering them from 1 (0: creation).
    maps: u64,
    nodes: Vec<Node>,
    free_slots: Vec<u32>,
    root: u32,
    empty: [F::Pte; MAX_LEVELS],
    dummies: Vec<TablePage>,
    /// New tables of the map in progress, filled and not yet cleaned, as (page, offset, bytes),
    /// innermost first: all below a new table that is not linked yet. Cleaned with one
    /// [`TableAlloc::sync_tables_for_device`] call just before the top one is linked into a live
    /// table (non-coherent walker only; empty between operations).
    pending: Vec<(TablePage, usize, usize)>,
    stats: Stats,
    _format: PhantomData<F>,
}

// `Send` and `Sync` are the auto traits' answer: the table is `Send` (`Sync`) exactly when its
// allocator is, since `TablePage` is both (see its impls) and every other field is plain data.
// Table memory is written only through `&mut self` and read through `&self`.

impl<F: Format, A: TableAlloc> PageTable<F, A> {
    /// Creates an empty page table: allocates the root (and, for formats whose empty entries are
    /// not zero, the dummy page and dummy tables they point at), cleaned if the walk is not
    /// coherent.
    ///
    /// Errors: [`Error::NoMemory`] if the allocator runs out (everything allocated is freed).
    pub fn new(alloc: A, config: PageTableConfig) -> Result<Self, Error> {
        Self::with_address_sizes(alloc, config, AddressSizes::of::<F>())
    }

    /// Creates an empty page table, as [`PageTable::new`], for the address sizes `sizes`
    /// (`io_pgtable_cfg.ias/.oas`): IOVAs beyond `2^ias` and bus addresses (pages, blocks,
    /// tables) beyond `2^oas` are refused with [`Error::OutOfRange`]; a narrower `ias` may start
    /// the walk at a lower level ([`AddressSizes::start_level`]), whose table the root then is.
    /// E.g. ARM LPAE with `ias` 40..=48 walks 4 levels, with 32..=39 3 levels from L1; the
    /// Intel IPU6 in non-secure mode has a 31-bit aperture (`IPU6_MMU_ADDR_BITS_NON_SECURE`,
    /// drivers/media/pci/intel/ipu6/ipu6.h).
    ///
    /// Errors: [`Error::BadAddressSize`] (nothing allocated), [`Error::NoMemory`],
    /// [`Error::BadTableAddr`] (everything allocated is freed).
    pub fn with_address_sizes(
        alloc: A,
        config: PageTableConfig,
        sizes: AddressSizes,
    ) -> Result<Self, Error> {
        // Compile-time check of the format's geometry (see `Geometry`).
        #[allow(clippy::let_unit_value)]
        let () = Geometry::<F>::VALID;
        let sizes = sizes.check::<F>()?;
        let mut pt = Self {
            ias: sizes.ias,
            oas: sizes.oas,
            ilimit: limit(sizes.ias),
            olimit: limit(sizes.oas),
            leaf_attr_cache: None,
            start: sizes.start_level::<F>(),
            alloc,
            id: next_table_id(),
            coherent: config.coherent_walk,
            free_empty: F::FREE_EMPTY_TABLES,
            dirty_tracking: false,
            maps: 0,
            nodes: Vec::new(),
            free_slots: Vec::new(),
            root: NONE,
            empty: [F::Pte::default(); MAX_LEVELS],
            dummies: Vec::new(),
            pending: Vec::new(),
            stats: Stats::default(),
            _format: PhantomData,
        };
        if !F::EMPTY_IS_ZERO {
            // The dummy page, then one dummy table per level below the root, each entry of which
            // points at the dummy one level down (ipu6-mmu.c: dummy_page, dummy_l2_pt).
            let last = F::LEVELS - 1;
            let page = pt.alloc_page(TABLE_SIZE)?;
            pt.dummies.push(page);
            pt.clean_whole(page, TABLE_SIZE);
            pt.empty[last] = F::leaf_with_addr(F::leaf_attrs(last, Prot::RW), page.dma);
            for level in (1..=last).rev() {
                let bytes = Geometry::<F>::table_bytes(level);
                let table = pt.alloc_page(bytes)?;
                pt.dummies.push(table);
                fill(table, Geometry::<F>::ENTRIES[level], pt.empty[level]);
                pt.clean_whole(table, bytes);
                pt.empty[level - 1] = F::table_entry(level - 1, table.dma);
            }
        }
        pt.root = pt.new_node(pt.start)?;
        let root_page = pt.nodes[pt.root as usize].page;
        if root_page.dma.0 >= limit(F::ROOT_BITS) {
            // The MMU's root register cannot hold it (the IPU's REG_L1_PHYS: a 27-bit pfn).
            let root = core::mem::replace(&mut pt.root, NONE);
            pt.free_unlinked(root);
            return Err(Error::BadTableAddr {
                dma: root_page.dma.0,
            });
        }
        pt.clean_whole(root_page, Geometry::<F>::table_bytes(pt.start));
        Ok(pt)
    }

    /// Bus address of the root table: what the device's MMU is programmed with (TTBR, or the
    /// IPU's L1 base register, which takes it `>> 12`).
    pub fn root(&self) -> DmaAddr {
        self.nodes[self.root as usize].page.dma
    }

    /// Bus address of the dummy page that empty entries point at, for formats that have one.
    pub fn dummy_page(&self) -> Option<DmaAddr> {
        self.dummies.first().map(|p| p.dma)
    }

    /// Whether [`PageTable::unmap`] frees the tables it empties (through the gather, after the
    /// TLB invalidation) or keeps them linked, empty, for later maps. The default is the
    /// format's [`Format::FREE_EMPTY_TABLES`]: ARM LPAE frees them; the Intel IPU format keeps
    /// them, as ipu3-mmu.c and ipu6-mmu.c do (an L2 table is freed only at teardown, so an L1
    /// entry never changes under a live device).
    ///
    /// A kept table is used again: a later map over its span writes leaves into it, never a
    /// block over its entry (that would orphan the table), so such a range is mapped with the
    /// table's smaller leaves even where a block would fit.
    ///
    /// Turning freeing on for a format whose emptied upper entries stay valid pointers (to the
    /// dummy table: the IPU) makes each unmap that frees a table gather the whole IOVA space,
    /// so [`PageTable::iotlb_sync`] invalidates the whole TLB (which may cache the old upper
    /// entry) before the page goes back to the allocator. A map that fails always frees the
    /// tables it created, with the same invalidation.
    pub fn set_free_empty_tables(&mut self, free: bool) {
        self.free_empty = free;
    }

    /// Whether [`PageTable::unmap`] frees the tables it empties (see
    /// [`PageTable::set_free_empty_tables`]).
    pub fn frees_empty_tables(&self) -> bool {
        self.free_empty
    }

    /// The table's address sizes (input and output, in bits).
    pub fn address_sizes(&self) -> AddressSizes {
        AddressSizes {
            ias: self.ias,
            oas: self.oas,
        }
    }

    /// Level of the root table: 0, or higher when the input size leaves the top levels out
    /// ([`AddressSizes::start_level`]). What a walker of this table starts at.
    pub fn start_level(&self) -> usize {
        self.start
    }

    /// Whether the walker is coherent (no cache maintenance on updates).
    pub fn coherent_walk(&self) -> bool {
        self.coherent
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of live tables, the root included, dummy tables excluded.
    pub fn table_count(&self) -> usize {
        self.nodes.len() - self.free_slots.len()
    }

    /// The table allocator.
    pub fn table_alloc(&self) -> &A {
        &self.alloc
    }

    /// The table allocator, mutably: for an allocator's own maintenance that leaves the pages
    /// it handed out alone (say, giving back free pages it keeps in reserve). Reading its
    /// counters needs only [`PageTable::table_alloc`].
    ///
    /// # Safety
    /// Every page this table holds (its live tables, dummy pages, and the pages on its
    /// gathers' free lists) stays allocated and valid for as long as the table has it: the
    /// caller neither replaces the allocator (`core::mem::replace`, `swap`, assignment: the old
    /// one would be dropped while the table still reads and writes its pages, and the new one
    /// would be handed pages it never made) nor frees, reuses or hands out again any such page
    /// through it.
    pub unsafe fn table_alloc_mut(&mut self) -> &mut A {
        &mut self.alloc
    }

    /// Maps `size` bytes at `iova` to the bus addresses `dma..dma + size` with `prot`.
    ///
    /// Uses the largest leaf the format allows where IOVA, address and remaining size are all
    /// aligned to it (2 MiB and 1 GiB blocks on ARM LPAE). Adds the range to `gather` if the
    /// format's TLB may cache empty entries (Intel IPU).
    ///
    /// Errors, each leaving the table unchanged: [`Error::ZeroSize`], [`Error::Misaligned`],
    /// [`Error::Overflow`], [`Error::OutOfRange`] (IOVA at or beyond `2^ias`, address at or
    /// beyond `2^oas`: [`PageTable::address_sizes`]), [`Error::NoAccess`],
    /// [`Error::ForeignGather`], [`Error::AlreadyMapped`] (nothing written),
    /// [`Error::NoMemory`] (what was written is undone; the undo may add ranges and tables to
    /// `gather`, so sync it as after any operation).
    pub fn map(
        &mut self,
        iova: Iova,
        dma: DmaAddr,
        size: u64,
        prot: Prot,
        gather: &mut Gather,
    ) -> Result<(), Error> {
        if let Some(r) = self.map_fast(iova.0, dma.0, size, prot, gather) {
            return r;
        }
        self.map_segments(iova, &[(dma, size)], prot, gather)
    }

    /// The common single map in a few instructions: valid arguments (each check as
    /// [`PageTable::map_segments`] makes it) and a range inside one linked last-level table
    /// ([`Self::map_in_leaf_table`]). `None` where anything else holds, so that
    /// `map_segments` decides, and names the error if there is one; nothing is changed then
    /// but the gather's claim, which `map_segments` makes too.
    #[inline(always)]
    fn map_fast(
        &mut self,
        iova: u64,
        dma: u64,
        size: u64,
        prot: Prot,
        gather: &mut Gather,
    ) -> Option<Result<(), Error>> {
        if !gather.claim_fast(self.id)
            || !prot.grants_access()
            || !fits::<F>(iova, size, self.ilimit)
            || !fits::<F>(dma, size, self.olimit)
            || self
                .dummy_page()
                .is_some_and(|d| d.0.wrapping_sub(dma) < size)
        {
            return None;
        }
        self.map_in_leaf_table(iova, iova + size, dma, prot, gather)
    }

    /// Maps a scatter-gather list contiguously in IOVA space from `iova`: segment `i` (bus
    /// address, length in bytes) follows segment `i - 1`. One walk for the whole list, so each
    /// touched table line is written and cleaned once. Errors as [`PageTable::map`]; each segment
    /// must be non-empty and granule-aligned in address and length.
    #[inline(never)]
    pub fn map_segments(
        &mut self,
        iova: Iova,
        segments: &[(DmaAddr, u64)],
        prot: Prot,
        gather: &mut Gather,
    ) -> Result<(), Error> {
        gather.claim(self.id)?;
        if !prot.grants_access() {
            return Err(Error::NoAccess { prot });
        }
        if segments.is_empty() {
            return Err(Error::ZeroSize);
        }
        let mut total: u64 = 0;
        let dummy = self.dummy_page();
        for &(dma, len) in segments {
            // The common case in a few instructions; `check_dma` names what is wrong.
            if !fits::<F>(dma.0, len, self.olimit) {
                self.check_dma(dma, len)?;
            }
            if let Some(d) = dummy.filter(|d| d.0.wrapping_sub(dma.0) < len) {
                return Err(Error::DummyPage { dma: d.0 });
            }
            total = total.checked_add(len).ok_or(Error::Overflow {
                start: iova.0,
                size: u64::MAX,
            })?;
        }
        let end = self.check_iova(iova, total)?;
        if let [(dma, _)] = *segments {
            if let Some(r) = self.map_in_leaf_table(iova.0, end, dma.0, prot, gather) {
                return r;
            }
        }
        if let Some(at) = self.first_mapped(self.root, self.start, iova.0, end) {
            return Err(Error::AlreadyMapped { iova: Iova(at) });
        }
        self.maps += 1;
        let mut attrs = [F::Pte::default(); MAX_LEVELS];
        for (level, a) in attrs.iter_mut().enumerate().take(F::LEVELS) {
            *a = self.map_leaf_attrs(level, prot);
        }
        let mut src = Src::new(segments);
        let mut cursor = iova.0;
        let mut done = iova.0;
        let r = self.map_level(
            self.root,
            self.start,
            false,
            &mut cursor,
            end,
            &mut src,
            &attrs,
            &mut done,
        );
        debug_assert!(
            self.pending.is_empty(),
            "every new table was cleaned or freed"
        );
        if let Err(e) = r {
            if done > iova.0 {
                // Tables this map created are freed again, so a failed map leaves no trace.
                let (free, this_map) = (self.free_empty, self.maps);
                self.unmap_level(self.root, self.start, iova.0, done, free, this_map, gather);
                gather.add_range(iova, done - iova.0);
            }
            return Err(e);
        }
        Self::gather_map(iova, total, gather);
        Ok(())
    }

    /// What a completed map adds to `gather`: nothing, unless the format's TLB caches empty
    /// entries.
    #[inline(always)]
    fn gather_map(iova: Iova, size: u64, gather: &mut Gather) {
        if F::TLB_CACHES_EMPTY {
            if F::EMPTY_IS_ZERO {
                gather.add_range(iova, size);
            } else {
                // Empty upper entries are valid pointers (to the dummy table): a walk cache may
                // hold the one a new table replaced.
                gather.add_walk_range(iova, size);
            }
        }
    }

    /// The fast path of a map of one segment (bus address `dma`) at the validated range
    /// `[start, end)`, taken when the range lies inside the span of one last-level table that
    /// is already linked: one walk down the child pointers, a check that the range's entries
    /// are empty, then the stores into that one table (no allocation, so nothing can fail after
    /// the check). Every counter, store and clean is the one the general path makes for the same
    /// map. `None` if the walk does not reach such a table (the general path decides).
    #[inline(always)]
    fn map_in_leaf_table(
        &mut self,
        start: u64,
        end: u64,
        dma: u64,
        prot: Prot,
        gather: &mut Gather,
    ) -> Option<Result<(), Error>> {
        let node = self.leaf_table_of(start, end)?;
        let last = F::LEVELS - 1;
        let shift = Geometry::<F>::SHIFT[last];
        let idx = Geometry::<F>::index(last, start);
        let n = ((end - start) >> shift) as usize;
        let page = self.nodes[node as usize].page;
        let p = page.cpu.as_ptr() as *mut F::Pte;
        let empty = self.empty[last];
        for i in 0..n {
            // SAFETY: [start, end) lies inside this last-level table's span, so idx + n <= its
            // entries and every read is inside its table page.
            if unsafe { p.add(idx + i).read() } != empty {
                let at = start + ((i as u64) << shift);
                return Some(Err(Error::AlreadyMapped { iova: Iova(at) }));
            }
        }
        self.maps += 1;
        let attrs = match self.leaf_attr_cache {
            Some((cached, a)) if cached == prot => a,
            _ => {
                let a = self.map_leaf_attrs(last, prot);
                self.leaf_attr_cache = Some((prot, a));
                a
            }
        };
        // SAFETY: as above; the entries were just checked empty, and the page is ours to write.
        unsafe { store_leaves::<F>(p.add(idx), n, attrs, dma, shift) };
        self.nodes[node as usize].used += n as u32;
        self.stats.pte_stores += n as u64;
        let b = <F::Pte as PteWord>::BYTES;
        self.sync_bytes(&page, idx * b, n * b);
        Self::gather_map(Iova(start), end - start, gather);
        Some(Ok(()))
    }

    /// Node of the last-level table whose span holds all of `[start, end)` (`start < end`), if
    /// it is linked: found by following the child pointers from the root (a child pointer is
    /// set exactly where the entry is a table entry). `None` if the range crosses the span of
    /// one last-level table, or an entry on the way holds no table (empty, or a block).
    #[inline(always)]
    fn leaf_table_of(&self, start: u64, end: u64) -> Option<u32> {
        let last = F::LEVELS - 1;
        let span = Geometry::<F>::SHIFT[last] + F::LEVEL_BITS[last];
        if span < 64 && start >> span != (end - 1) >> span {
            return None;
        }
        if self.start == 0 {
            // The usual case, the root at level 0: a constant trip count, unrolled with
            // constant shifts and masks per level.
            let mut node = self.root;
            for level in 0..last {
                node = self.child_at(node, level, start)?;
            }
            return Some(node);
        }
        let mut node = self.root;
        let mut level = self.start;
        while level < last {
            node = self.child_at(node, level, start)?;
            level += 1;
        }
        Some(node)
    }

    /// The child of `node` (of `level`) at the entry that covers `iova`, if one is linked.
    #[inline(always)]
    fn child_at(&self, node: u32, level: usize, iova: u64) -> Option<u32> {
        let idx = Geometry::<F>::index(level, iova);
        // Checked reads: a node reached here is live and has a slot per entry of its level
        // (child slots are reset to NONE when their node is unlinked, and no map writes a block
        // over a linked table), so the checks never fail; kept so that a broken invariant is a
        // fall back to the general path, never a read out of bounds.
        let child = *self.nodes.get(node as usize)?.children.get(idx)?;
        (child != NONE).then_some(child)
    }

    /// Unmaps `[iova, iova + size)` and returns the number of bytes that were mapped in it (holes
    /// are skipped; 0 if nothing was mapped).
    ///
    /// Only whole leaves are unmapped: a range that cuts a block (an ARM LPAE 2 MiB or 1 GiB
    /// block with only part of it inside the range) is refused with [`Error::PartialBlock`] and
    /// nothing changed, as Linux's io-pgtable-arm.c has done since commit 33729a5fc0ca
    /// ("iommu/io-pgtable-arm: Remove split on unmap behavior", v6.13): writing a table over a
    /// live block without break-before-make is not allowed by the architecture (Arm ARM DDI 0487,
    /// "Using break-before-make when updating translation table entries"; SMMUv3 without
    /// BBML2). [`PageTable::unmap_split`] splits such a block with
    /// break-before-make, for callers that accept its cost.
    ///
    /// The leaves are cleared one by one, including those of tables that become empty; emptied
    /// tables are unlinked and queued on `gather`, together with the range to invalidate. Free
    /// them with [`PageTable::iotlb_sync`] once the device TLB is invalidated.
    ///
    /// Errors (table unchanged): [`Error::ForeignGather`], [`Error::ZeroSize`],
    /// [`Error::Misaligned`], [`Error::Overflow`], [`Error::OutOfRange`],
    /// [`Error::PartialBlock`].
    pub fn unmap(&mut self, iova: Iova, size: u64, gather: &mut Gather) -> Result<u64, Error> {
        if gather.claim_fast(self.id) && fits::<F>(iova.0, size, self.ilimit) {
            if let Some(bytes) = self.unmap_in_leaf_table(iova.0, iova.0 + size, gather) {
                return Ok(bytes);
            }
        }
        self.unmap_general(iova, size, gather)
    }

    /// [`PageTable::unmap`] beyond its fast path: every check, and any range.
    #[inline(never)]
    fn unmap_general(&mut self, iova: Iova, size: u64, gather: &mut Gather) -> Result<u64, Error> {
        gather.claim(self.id)?;
        let end = self.check_iova(iova, size)?;
        if let Some(bytes) = self.unmap_in_leaf_table(iova.0, end, gather) {
            return Ok(bytes);
        }
        if let Some((at, block, bsize)) = self.cut_block(iova.0, end) {
            return Err(Error::PartialBlock {
                iova: Iova(at),
                block: Iova(block),
                size: bsize,
            });
        }
        Ok(self.unmap_range(iova, end, size, gather))
    }

    /// The fast path of an unmap of the validated range `[start, end)`, taken when the range
    /// lies inside the span of one linked last-level table that keeps at least one entry (or is
    /// kept anyway): one walk down the child pointers, then the clears in that one table. Such a
    /// range cuts no block (its leaves are pages, and a block covering `end` would cover
    /// `end - 1` too), so no split check is needed. Every counter, store, clean and gathered
    /// range is the one the general path makes for the same unmap. `None` where the general
    /// path must decide (no such table, or the table would be emptied and freed).
    #[inline(always)]
    fn unmap_in_leaf_table(&mut self, start: u64, end: u64, gather: &mut Gather) -> Option<u64> {
        let node = self.leaf_table_of(start, end)?;
        let last = F::LEVELS - 1;
        let shift = Geometry::<F>::SHIFT[last];
        let idx = Geometry::<F>::index(last, start);
        let n = ((end - start) >> shift) as usize;
        let page = self.nodes[node as usize].page;
        let p = page.cpu.as_ptr() as *mut F::Pte;
        let empty = self.empty[last];
        let mut mapped = 0u32;
        for i in 0..n {
            // SAFETY: [start, end) lies inside this last-level table's span, so idx + n <= its
            // entries and every read is inside its table page.
            mapped += (unsafe { p.add(idx + i).read() } != empty) as u32;
        }
        let used = self.nodes[node as usize].used - mapped;
        if used == 0 && node != self.root && self.free_empty {
            return None;
        }
        // SAFETY: as above; the page is ours to write.
        unsafe { clear_leaves::<F>(p.add(idx), n, empty) };
        self.nodes[node as usize].used = used;
        self.stats.pte_stores += n as u64;
        let b = <F::Pte as PteWord>::BYTES;
        self.sync_bytes(&page, idx * b, n * b);
        let bytes = (mapped as u64) << shift;
        if bytes > 0 {
            gather.add_range(Iova(start), end - start);
        }
        Some(bytes)
    }

    /// The common end of [`PageTable::unmap`] and [`PageTable::unmap_split`], once the range
    /// `[iova, end)` (`size` bytes) is checked and cuts no block: clears its leaves, gathers the
    /// range if anything was mapped, returns the bytes unmapped.
    fn unmap_range(&mut self, iova: Iova, end: u64, size: u64, gather: &mut Gather) -> u64 {
        let bytes = self.unmap_level(
            self.root,
            self.start,
            iova.0,
            end,
            self.free_empty,
            u64::MAX,
            gather,
        );
        if bytes > 0 {
            gather.add_range(iova, size);
        }
        bytes
    }

    /// Unmaps `[iova, iova + size)` as [`PageTable::unmap`] does, except that a block the range
    /// cuts is split first, with break-before-make (Arm ARM DDI 0487, "Using break-before-make
    /// when updating translation table entries"): the block entry is cleared
    /// (and cleaned for a non-coherent walker), `gather` is completed through `invalidate`
    /// exactly as [`PageTable::iotlb_sync`] does (so the device TLB holds the block no more, and
    /// what `gather` held before is completed too), and only then is a table of smaller leaves
    /// with the block's attributes (built, filled and cleaned beforehand, down to the level the
    /// boundary needs) linked in its place. Then the range is unmapped. At most two blocks are
    /// split (one per end of the range), each with its own invalidation.
    ///
    /// Cost, and why it is not the default: between the clear and the link, the *whole* block is
    /// unmapped, including the part outside the range, so a device access there in that window
    /// faults (or, on a format without valid bits, would read the dummy page). Use it only where
    /// the device cannot touch the rest of the block during the call, as a GPU driver's VM_BIND
    /// remap does.
    ///
    /// The tables the splits need are allocated before anything is written. Errors, each
    /// leaving the table unchanged and `invalidate` not called: as [`PageTable::unmap`] but for
    /// [`Error::PartialBlock`], and [`Error::NoMemory`], [`Error::BadTableAddr`] (no table page
    /// for a split).
    pub fn unmap_split(
        &mut self,
        iova: Iova,
        size: u64,
        gather: &mut Gather,
        mut invalidate: impl FnMut(Iova, u64),
    ) -> Result<u64, Error> {
        gather.claim(self.id)?;
        let end = self.check_iova(iova, size)?;
        let need = self.splits_needed(iova.0, end);
        let mut reserve = Vec::with_capacity(need);
        for _ in 0..need {
            // Split tables are never the root: all of one size (Geometry::VALID).
            match self.alloc_page(Geometry::<F>::table_bytes(F::LEVELS - 1)) {
                Ok(p) => reserve.push(p),
                Err(e) => {
                    self.free_reserve(reserve);
                    return Err(e);
                }
            }
        }
        while let Some((_, block, bsize)) = self.cut_block(iova.0, end) {
            self.split_block(
                block,
                bsize,
                [iova.0, end],
                &mut reserve,
                gather,
                &mut invalidate,
            );
        }
        debug_assert!(
            reserve.is_empty(),
            "splits_needed counted the tables the splits take"
        );
        self.free_reserve(reserve);
        Ok(self.unmap_range(iova, end, size, gather))
    }

    /// Completes the operations gathered in `gather`: calls `invalidate(start, size)` for each
    /// IOVA range (the device TLB invalidation: leaf ranges and walk-cache ranges merged, so
    /// the callback must invalidate both TLB and walk-cache entries of the range, as a range
    /// invalidation without a leaf-only hint does), then frees the unlinked tables. Leaves `gather`
    /// empty and owned by no table.
    ///
    /// A gather holding another table's work is left exactly as it is (nothing invalidated,
    /// nothing freed: its table pages belong to the other table's allocator, and its ranges to
    /// the other table's device), for its own table to complete; [`PageTable::try_iotlb_sync`]
    /// reports that case as [`Error::ForeignGather`].
    pub fn iotlb_sync(&mut self, gather: &mut Gather, invalidate: impl FnMut(Iova, u64)) {
        // The only error is a foreign gather, documented above as left untouched.
        let _ = self.try_iotlb_sync(gather, invalidate);
    }

    /// [`PageTable::iotlb_sync`], reporting a gather filled by another table.
    ///
    /// Errors: [`Error::ForeignGather`] (nothing invalidated, nothing freed, `gather`
    /// unchanged).
    pub fn try_iotlb_sync(
        &mut self,
        gather: &mut Gather,
        mut invalidate: impl FnMut(Iova, u64),
    ) -> Result<(), Error> {
        if !gather.completable_by(self.id) {
            return Err(Error::ForeignGather);
        }
        if let Some(single) = gather.single_leaf_range() {
            // The common sync after one map or unmap: one leaf range or none, no table freed.
            if let Some((s, e)) = single {
                invalidate(Iova(s), e - s);
                self.stats.inval_ranges += 1;
            }
            gather.clear_ranges();
            gather.release();
            return Ok(());
        }
        for &(s, e) in gather.union_ranges() {
            invalidate(Iova(s), e - s);
            self.stats.inval_ranges += 1;
        }
        self.free_gathered(gather);
        Ok(())
    }

    /// Completes `gather` as [`PageTable::iotlb_sync`] does, telling the two kinds of
    /// invalidation apart: `invalidate` gets each range whose walk-cache entries must go
    /// ([`Invalidation::walk`]: a table was unlinked there, io-pgtable's `tlb_flush_walk`),
    /// then each leaf-only range not already covered by one (`tlb_add_page`). A foreign gather
    /// is left untouched, as there.
    pub fn iotlb_sync_with(&mut self, gather: &mut Gather, invalidate: impl FnMut(Invalidation)) {
        // The only error is a foreign gather, documented as left untouched.
        let _ = self.try_iotlb_sync_with(gather, invalidate);
    }

    /// [`PageTable::iotlb_sync_with`], reporting a gather filled by another table.
    ///
    /// Errors: [`Error::ForeignGather`] (nothing invalidated, nothing freed, `gather`
    /// unchanged).
    pub fn try_iotlb_sync_with(
        &mut self,
        gather: &mut Gather,
        mut invalidate: impl FnMut(Invalidation),
    ) -> Result<(), Error> {
        if !gather.completable_by(self.id) {
            return Err(Error::ForeignGather);
        }
        let mut n = 0;
        gather.for_each_invalidation(|inv| {
            invalidate(inv);
            n += 1;
        });
        self.stats.inval_ranges += n;
        self.free_gathered(gather);
        Ok(())
    }

    /// The end of a sync: forgets the ranges (just invalidated) and frees the gathered pages.
    fn free_gathered(&mut self, gather: &mut Gather) {
        gather.clear_ranges();
        for page in gather.freed.drain(..) {
            // SAFETY: the gather is this table's (checked above: only this table's map/unmap put
            // pages on it, and only pages it unlinked from its own tree), so the page came from
            // this allocator, is no longer reachable from the root, and the TLB that could still
            // reference it has just been invalidated.
            unsafe { self.alloc.free_table(page) };
            self.stats.tables_freed += 1;
        }
        gather.release();
    }

    /// Translates `iova` from the table as the CPU sees it: `(bus address of that byte,
    /// permissions)`, or `None` if unmapped or beyond the IOVA width. Unlike the hardware walker,
    /// an empty entry of the Intel IPU format is reported as unmapped, not as the dummy page.
    pub fn translate(&self, iova: Iova) -> Option<(DmaAddr, Prot)> {
        if iova.0 >= limit(self.ias) {
            return None;
        }
        let mut node = self.root;
        for level in self.start..F::LEVELS {
            let idx = Geometry::<F>::index(level, iova.0);
            let pte = self.read(node, idx);
            if pte == self.empty[level] {
                return None;
            }
            if F::is_table(level, pte) {
                node = self.nodes[node as usize].children[idx];
                continue;
            }
            return match F::decode(level, pte) {
                Entry::Leaf(addr, prot) => {
                    let off = iova.0 & ((1u64 << Geometry::<F>::SHIFT[level]) - 1);
                    Some((addr + off, prot))
                }
                _ => None,
            };
        }
        None
    }

    /// Every mapped leaf in IOVA order.
    pub fn mappings(&self) -> Mappings<'_, F, A> {
        Mappings {
            pt: self,
            stack: vec![(self.root, self.start, 0, 0)],
        }
    }

    // ---- validation ----

    fn check_iova(&self, iova: Iova, size: u64) -> Result<u64, Error> {
        check_range::<F>(("iova", "size"), iova.0, size, self.ias)
    }

    fn check_dma(&self, dma: DmaAddr, len: u64) -> Result<(), Error> {
        check_range::<F>(("dma address", "segment length"), dma.0, len, self.oas).map(|_| ())
    }

    // ---- table memory ----

    /// A zeroed table of `bytes` bytes ([`Geometry::TABLE_BYTES`]): a page, or a large table.
    fn alloc_page(&mut self, bytes: usize) -> Result<TablePage, Error> {
        let p = if bytes == TABLE_SIZE {
            self.alloc.alloc_table()
        } else {
            self.alloc.alloc_large_table(bytes)
        };
        self.checked_page(p.ok_or(Error::NoMemory)?, bytes)
    }

    /// Gives back a page whose bus address the format cannot hold; counts an accepted one.
    fn checked_page(&mut self, p: TablePage, bytes: usize) -> Result<TablePage, Error> {
        if p.dma.0 >= limit(self.oas) || !p.dma.is_aligned(bytes as u64) {
            // SAFETY: just allocated by this allocator, never linked.
            unsafe { self.alloc.free_table(p) };
            return Err(Error::BadTableAddr { dma: p.dma.0 });
        }
        self.stats.tables_allocated += 1;
        Ok(p)
    }

    fn node_from_page(&mut self, level: usize, page: TablePage) -> u32 {
        if !F::EMPTY_IS_ZERO {
            fill(page, Geometry::<F>::ENTRIES[level], self.empty[level]);
        }
        self.insert_node(level, page)
    }

    /// Adds a node for `page` as it is (no fill).
    fn insert_node(&mut self, level: usize, page: TablePage) -> u32 {
        let children = if level + 1 < F::LEVELS {
            vec![NONE; Geometry::<F>::ENTRIES[level]].into_boxed_slice()
        } else {
            Box::default()
        };
        let node = Node {
            page,
            used: 0,
            children,
            born: self.maps,
        };
        match self.free_slots.pop() {
            Some(slot) => {
                self.nodes[slot as usize] = node;
                slot
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn new_node(&mut self, level: usize) -> Result<u32, Error> {
        let page = self.alloc_page(Geometry::<F>::table_bytes(level))?;
        Ok(self.node_from_page(level, page))
    }

    fn release_slot(&mut self, node: u32) -> TablePage {
        let n = &mut self.nodes[node as usize];
        n.children = Box::default();
        n.used = 0;
        self.free_slots.push(node);
        n.page
    }

    /// Frees a subtree that was never linked (an error path): no walker can have seen it.
    fn free_unlinked(&mut self, node: u32) {
        let children = core::mem::take(&mut self.nodes[node as usize].children);
        for &c in children.iter() {
            if c != NONE {
                self.free_unlinked(c);
            }
        }
        let page = self.release_slot(node);
        // SAFETY: the page came from this allocator and was never reachable by the walker.
        unsafe { self.alloc.free_table(page) };
        self.stats.tables_freed += 1;
    }

    fn free_reserve(&mut self, reserve: Vec<TablePage>) {
        for page in reserve {
            // SAFETY: reserved pages came from this allocator and were never linked.
            unsafe { self.alloc.free_table(page) };
            self.stats.tables_freed += 1;
        }
    }

    #[inline(always)]
    fn read(&self, node: u32, idx: usize) -> F::Pte {
        let p = self.nodes[node as usize].page.cpu.as_ptr() as *const F::Pte;
        debug_assert!(idx * <F::Pte as PteWord>::BYTES < MAX_TABLE_SIZE);
        // SAFETY: idx < entries of the node's level, so the read is inside its table page.
        unsafe { p.add(idx).read() }
    }

    #[inline(always)]
    fn write(&mut self, node: u32, idx: usize, v: F::Pte) {
        let p = self.nodes[node as usize].page.cpu.as_ptr() as *mut F::Pte;
        // SAFETY: as in `read`; the page is exclusively ours to write.
        unsafe { p.add(idx).write(v) }
        self.stats.pte_stores += 1;
    }

    /// Cleans `len` bytes at `off` of table `page` for a non-coherent walker.
    #[inline]
    fn sync_bytes(&mut self, page: &TablePage, off: usize, len: usize) {
        if self.coherent || len == 0 {
            return;
        }
        let first = off / LINE;
        let last = (off + len).div_ceil(LINE);
        self.stats.lines_cleaned += (last - first) as u64;
        self.stats.sync_calls += 1;
        self.alloc.sync_for_device(page, off, len);
    }

    /// Cleans the whole of a table of `bytes` bytes ([`Geometry::TABLE_BYTES`] of its level).
    fn clean_whole(&mut self, page: TablePage, bytes: usize) {
        self.sync_bytes(&page, 0, bytes);
    }

    /// Cleans the new tables of `pending` (innermost first) with one call, counted as one sync
    /// per table, and empties it.
    fn clean_pending(&mut self) {
        for &(_, off, len) in &self.pending {
            self.stats.lines_cleaned += ((off + len).div_ceil(LINE) - off / LINE) as u64;
        }
        self.stats.sync_calls += self.pending.len() as u64;
        self.alloc.sync_tables_for_device(&self.pending);
        self.pending.clear();
    }

    fn note(&mut self, dirty: &mut Dirty, page: &TablePage, first: usize, count: usize) {
        let b = <F::Pte as PteWord>::BYTES;
        if let Some((s, e)) = dirty.note(first * b, count * b) {
            self.sync_bytes(page, s, e - s);
        }
    }

    // ---- the algorithm ----

    /// Lowest mapped IOVA in `[start, end)` under `node` (of `level`), if any.
    fn first_mapped(&self, node: u32, level: usize, start: u64, end: u64) -> Option<u64> {
        let shift = Geometry::<F>::SHIFT[level];
        if level + 1 == F::LEVELS && start < end {
            // The last level: one scan of the range's entries as a slice (no tables below).
            let first = Geometry::<F>::index(level, start);
            let count =
                (((end - start) >> shift) as usize).min(Geometry::<F>::ENTRIES[level] - first);
            let p = self.nodes[node as usize].page.cpu.as_ptr() as *const F::Pte;
            let empty = self.empty[level];
            // Entry by entry through the pointer (no slice: with dirty tracking on, the device
            // may update leaves of this table while it is read).
            return (0..count)
                // SAFETY: first + count <= the level's entries, so every read is inside the
                // node's table page, which this table owns.
                .position(|i| unsafe { p.add(first + i).read() } != empty)
                .map(|i| start + ((i as u64) << shift));
        }
        let mut a = start;
        while a < end {
            let idx = Geometry::<F>::index(level, a);
            let chunk_end = end.min(((a >> shift) + 1) << shift);
            let pte = self.read(node, idx);
            if pte != self.empty[level] {
                if F::is_table(level, pte) {
                    let child = self.nodes[node as usize].children[idx];
                    if let Some(x) = self.first_mapped(child, level + 1, a, chunk_end) {
                        return Some(x);
                    }
                } else {
                    return Some(a);
                }
            }
            a = chunk_end;
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn map_level(
        &mut self,
        node: u32,
        level: usize,
        fresh: bool,
        iova: &mut u64,
        end: u64,
        src: &mut Src<'_>,
        attrs: &[F::Pte; MAX_LEVELS],
        done: &mut u64,
    ) -> Result<(), Error> {
        let mut dirty = Dirty::default();
        let r = self.map_level_inner(node, level, fresh, iova, end, src, attrs, done, &mut dirty);
        if !fresh && dirty.start != dirty.end {
            let page = self.nodes[node as usize].page;
            self.sync_bytes(&page, dirty.start, dirty.end - dirty.start);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn map_level_inner(
        &mut self,
        node: u32,
        level: usize,
        fresh: bool,
        iova: &mut u64,
        end: u64,
        src: &mut Src<'_>,
        attrs: &[F::Pte; MAX_LEVELS],
        done: &mut u64,
        dirty: &mut Dirty,
    ) -> Result<(), Error> {
        let shift = Geometry::<F>::SHIFT[level];
        let esize = 1u64 << shift;
        let entries = Geometry::<F>::ENTRIES[level];
        let page = self.nodes[node as usize].page;
        if level + 1 == F::LEVELS && *iova < end {
            // The last level holds granule leaves only, and every segment is a granule
            // multiple (`check_dma`), so the entries of `[iova, end)` are one run stored segment
            // by segment, with the counters and the dirty run noted once: a scatter-gather list
            // of short segments (a scattered BO behind the system IOMMU) costs a few
            // instructions per segment, not a pass of the general loop.
            let first = Geometry::<F>::index(level, *iova);
            let count = (((end - *iova) >> shift) as usize).min(entries - first);
            let p = page.cpu.as_ptr() as *mut F::Pte;
            let mut idx = first;
            let stop = first + count;
            while idx < stop {
                let n = ((src.remaining() >> shift) as usize).min(stop - idx);
                debug_assert!(n > 0, "the segments cover the range exactly");
                // SAFETY: idx + n <= stop <= entries, so every store is inside this table
                // page; its entries in this range are empty (the first_mapped check) or, in a
                // table fresh from `alloc_table_for_overwrite`, not yet written, and all of
                // them are written here before the table is linked.
                unsafe { store_leaves::<F>(p.add(idx), n, attrs[level], src.dma(), shift) };
                idx += n;
                src.advance((n as u64) << shift);
            }
            self.nodes[node as usize].used += count as u32;
            self.stats.pte_stores += count as u64;
            if !fresh {
                self.note(dirty, &page, first, count);
            }
            *iova += (count as u64) << shift;
            *done = *iova;
            return Ok(());
        }
        while *iova < end {
            let idx = Geometry::<F>::index(level, *iova);
            let dma = src.dma();
            let seg_left = src.remaining().min(end - *iova);
            // (The last level returned above: here every node has child slots.) Never a block
            // over a linked table (one emptied and kept): the block would orphan it, its child
            // pointer left stale; such an entry's range is mapped inside that table by the
            // branch below.
            if F::LEAF_LEVELS[level]
                && (*iova | dma) & (esize - 1) == 0
                && seg_left >= esize
                && self.nodes[node as usize].children[idx] == NONE
            {
                let n = ((seg_left >> shift) as usize).min(entries - idx);
                let children = &self.nodes[node as usize].children[idx..idx + n];
                let n = children.iter().position(|&c| c != NONE).unwrap_or(n);
                let p = page.cpu.as_ptr() as *mut F::Pte;
                // SAFETY: idx + n <= entries, so every store is inside this table page, which
                // the first_mapped check proved holds only empty entries in this range.
                unsafe { store_leaves::<F>(p.add(idx), n, attrs[level], dma, shift) };
                self.nodes[node as usize].used += n as u32;
                self.stats.pte_stores += n as u64;
                if !fresh {
                    self.note(dirty, &page, idx, n);
                }
                let bytes = (n as u64) << shift;
                *iova += bytes;
                src.advance(bytes);
                *done = *iova;
                continue;
            }
            let chunk_end = end.min((*iova | (esize - 1)) + 1);
            let child = self.nodes[node as usize].children[idx];
            if child != NONE {
                self.map_level(child, level + 1, false, iova, chunk_end, src, attrs, done)?;
                continue;
            }
            // A last-level table whose whole span this map covers gets every entry stored by the
            // leaf loop below (granule-aligned segments, nothing can fail in between), so its
            // page need not be zeroed or filled with empty entries first. Only for a table that
            // is its whole page: a large table is always zeroed (`TableAlloc` has no unzeroed
            // variant of them), and a table smaller than its page would leave the rest of the
            // page as it was.
            let overwrite = level + 2 == F::LEVELS
                && Geometry::<F>::fills_page(level + 1)
                && chunk_end - (*iova & !(esize - 1)) == esize
                && *iova & (esize - 1) == 0;
            let mark = self.pending.len();
            let c = if overwrite {
                let page = self
                    .alloc
                    .alloc_table_for_overwrite()
                    .ok_or(Error::NoMemory)?;
                let page = self.checked_page(page, TABLE_SIZE)?;
                self.insert_node(level + 1, page)
            } else {
                self.new_node(level + 1)?
            };
            if let Err(e) = self.map_level(c, level + 1, true, iova, chunk_end, src, attrs, done) {
                // The subtree is freed unlinked: its tables need no clean.
                self.pending.truncate(mark);
                self.free_unlinked(c);
                return Err(e);
            }
            let cpage = self.nodes[c as usize].page;
            if !self.coherent {
                // Cleaned whole before a live table points at it: with the new tables below it,
                // in one call (one barrier), when this table is linked into a live one; else
                // later, with its new parent.
                self.pending
                    .push((cpage, 0, Geometry::<F>::table_bytes(level + 1)));
                if !fresh {
                    self.clean_pending();
                }
            }
            self.write(node, idx, F::table_entry(level, cpage.dma));
            let n = &mut self.nodes[node as usize];
            n.children[idx] = c;
            n.used += 1;
            if !fresh {
                self.note(dirty, &page, idx, 1);
            }
        }
        Ok(())
    }

    /// Level of the leaf that covers `addr`, if `addr` is mapped (and inside the IOVA space).
    fn leaf_level(&self, addr: u64) -> Option<usize> {
        if addr >= limit(self.ias) {
            return None;
        }
        let mut node = self.root;
        for level in self.start..F::LEVELS {
            let idx = Geometry::<F>::index(level, addr);
            let pte = self.read(node, idx);
            if pte == self.empty[level] {
                return None;
            }
            if !F::is_table(level, pte) {
                return Some(level);
            }
            node = self.nodes[node as usize].children[idx];
        }
        None
    }

    /// How many tables an unmap of `[start, end)` needs to split the blocks its two boundaries
    /// cut: one per level at which a boundary is not aligned, below the block's level; a table
    /// both boundaries need (both inside one block at that level) is counted once.
    fn splits_needed(&self, start: u64, end: u64) -> usize {
        let (ls, le) = (self.leaf_level(start), self.leaf_level(end));
        let mut n = 0;
        for k in 0..F::LEVELS - 1 {
            let size = 1u64 << Geometry::<F>::SHIFT[k];
            let s = ls.is_some_and(|l| k >= l) && !start.is_multiple_of(size);
            let e = le.is_some_and(|l| k >= l) && !end.is_multiple_of(size);
            n += s as usize + e as usize;
            if s && e && start / size == end / size {
                n -= 1;
            }
        }
        n
    }

    /// The first block that `[start, end)` cuts, as `(boundary inside it, block IOVA, block size
    /// in bytes)`: the leaf covering `start` if it is a block that starts before `start`, else
    /// the leaf covering `end` if it is a block that starts before `end`.
    fn cut_block(&self, start: u64, end: u64) -> Option<(u64, u64, u64)> {
        for at in [start, end] {
            if let Some(level) = self.leaf_level(at) {
                let size = 1u64 << Geometry::<F>::SHIFT[level];
                if level + 1 < F::LEVELS && !at.is_multiple_of(size) {
                    return Some((at, at & !(size - 1), size));
                }
            }
        }
        None
    }

    /// Replaces the live block at `block` (`size` bytes) with an equivalent subtree, with
    /// break-before-make: clear the block entry and clean it, complete `gather` through
    /// `invalidate`, then link the subtree, built beforehand from `reserve`, whose tables split
    /// further every entry that one of `cuts` falls strictly inside.
    fn split_block(
        &mut self,
        block: u64,
        size: u64,
        cuts: [u64; 2],
        reserve: &mut Vec<TablePage>,
        gather: &mut Gather,
        invalidate: &mut impl FnMut(Iova, u64),
    ) {
        // Find the block's entry: its parent table and index.
        let mut node = self.root;
        let mut level = self.start;
        while Geometry::<F>::SHIFT[level] as u64 != size.trailing_zeros() as u64 {
            node = self.nodes[node as usize].children[Geometry::<F>::index(level, block)];
            level += 1;
        }
        let idx = Geometry::<F>::index(level, block);
        let Entry::Leaf(addr, prot) = F::decode(level, self.read(node, idx)) else {
            unreachable!("cut_block returned a leaf")
        };
        let child = self.build_split(level + 1, block, addr.0, prot, cuts, reserve);
        // Break: the walker must see the entry invalid and the TLB must forget the block before
        // the table is linked, or the TLB could hold the block and the table's leaves at once.
        let page = self.nodes[node as usize].page;
        self.write(node, idx, self.empty[level]);
        let b = <F::Pte as PteWord>::BYTES;
        self.sync_bytes(&page, idx * b, b);
        gather.add_range(Iova(block), size);
        self.try_iotlb_sync(gather, &mut *invalidate)
            .expect("the caller claimed the gather");
        gather.claim(self.id).expect("a completed gather is free");
        // Make: link the subtree, cleaned whole when it was built.
        let cdma = self.nodes[child as usize].page.dma;
        self.write(node, idx, F::table_entry(level, cdma));
        self.nodes[node as usize].children[idx] = child;
        self.sync_bytes(&page, idx * b, b);
        self.stats.blocks_split += 1;
    }

    /// Builds, unlinked, a table of `level` whose entries map `[base, base + span)` to `addr..`
    /// with `prot` as leaves of that level, except that an entry one of `cuts` falls strictly
    /// inside becomes a table built the same way one level down. Cleaned whole (non-coherent
    /// walker) once filled. Takes its pages from `reserve`.
    fn build_split(
        &mut self,
        level: usize,
        base: u64,
        addr: u64,
        prot: Prot,
        cuts: [u64; 2],
        reserve: &mut Vec<TablePage>,
    ) -> u32 {
        let page = reserve
            .pop()
            .expect("splits_needed reserved a table for every split");
        let c = self.insert_node(level, page);
        let shift = Geometry::<F>::SHIFT[level];
        let n = Geometry::<F>::ENTRIES[level];
        // SAFETY: a page of this table, live (just taken from the allocator, not yet linked),
        // and `n` entries are exactly one table of `level` (Geometry's compile-time check).
        unsafe {
            store_leaves::<F>(
                page.cpu.as_ptr() as *mut F::Pte,
                n,
                self.split_leaf_attrs(level, prot),
                addr,
                shift,
            )
        };
        self.nodes[c as usize].used = n as u32;
        self.stats.pte_stores += n as u64;
        if level + 1 < F::LEVELS {
            let esize = 1u64 << shift;
            let span = esize << Geometry::<F>::ENTRIES[level].trailing_zeros();
            let mut done: Option<u64> = None;
            for cut in cuts {
                let inside = cut > base && cut < base + span && !cut.is_multiple_of(esize);
                let entry = cut & !(esize - 1);
                if inside && done != Some(entry) {
                    done = Some(entry);
                    let i = Geometry::<F>::index(level, cut);
                    let sub = addr + (entry - base);
                    let g = self.build_split(level + 1, entry, sub, prot, cuts, reserve);
                    let gdma = self.nodes[g as usize].page.dma;
                    self.write(c, i, F::table_entry(level, gdma));
                    self.nodes[c as usize].children[i] = g;
                    self.stats.blocks_split += 1;
                }
            }
        }
        self.clean_whole(page, Geometry::<F>::table_bytes(level));
        c
    }

    /// Clears `[start, end)` under `node`, which cuts no block (the caller checked, or split
    /// them first); returns the bytes that were mapped there.
    /// Tables it empties are unlinked and queued on `gather` if `free`, or if created by map
    /// number `reclaim` (the map being undone; `u64::MAX`: none), else kept linked.
    #[allow(clippy::too_many_arguments)]
    fn unmap_level(
        &mut self,
        node: u32,
        level: usize,
        start: u64,
        end: u64,
        free: bool,
        reclaim: u64,
        gather: &mut Gather,
    ) -> u64 {
        let shift = Geometry::<F>::SHIFT[level];
        let esize = 1u64 << shift;
        let page = self.nodes[node as usize].page;
        let mut dirty = Dirty::default();
        let mut bytes = 0;
        if level == F::LEVELS - 1 {
            // Only pages live here: one tight loop over the whole run.
            let idx = Geometry::<F>::index(level, start);
            let n = ((end - start) >> shift) as usize;
            let p = page.cpu.as_ptr() as *mut F::Pte;
            // SAFETY: [start, end) lies inside this table's span, so idx + n <= entries.
            let cleared = unsafe { clear_leaves::<F>(p.add(idx), n, self.empty[level]) };
            self.nodes[node as usize].used -= cleared as u32;
            self.stats.pte_stores += n as u64;
            dirty.note(
                idx * <F::Pte as PteWord>::BYTES,
                n * <F::Pte as PteWord>::BYTES,
            );
            bytes = (cleared as u64) << shift;
        } else {
            let mut a = start;
            while a < end {
                let idx = Geometry::<F>::index(level, a);
                let entry_start = a & !(esize - 1);
                let chunk_end = end.min(entry_start + esize);
                let pte = self.read(node, idx);
                if pte == self.empty[level] {
                    a = chunk_end;
                    continue;
                }
                if F::is_table(level, pte) {
                    let child = self.nodes[node as usize].children[idx];
                    bytes +=
                        self.unmap_level(child, level + 1, a, chunk_end, free, reclaim, gather);
                    let c = &self.nodes[child as usize];
                    if c.used == 0 && (free || c.born == reclaim) {
                        self.write(node, idx, self.empty[level]);
                        let n = &mut self.nodes[node as usize];
                        n.children[idx] = NONE;
                        n.used -= 1;
                        let cpage = self.release_slot(child);
                        gather.freed.push(cpage);
                        self.note(&mut dirty, &page, idx, 1);
                        if F::EMPTY_IS_ZERO {
                            // A walk cache may still hold the pointer to the unlinked table,
                            // for any IOVA the entry spans.
                            gather.add_walk_range(Iova(entry_start), esize);
                        } else {
                            // The upper entry was a valid pointer and is one again (to the
                            // dummy table): the device may cache it in a TLB that only a
                            // whole-TLB invalidation reaches (the IPU MMU's L1 TLB streams), so
                            // the page may be reused only after invalidating everything.
                            gather.add_walk_range(Iova(0), limit(self.ias));
                        }
                    }
                } else if a == entry_start && chunk_end == entry_start + esize {
                    self.write(node, idx, self.empty[level]);
                    self.nodes[node as usize].used -= 1;
                    bytes += esize;
                    self.note(&mut dirty, &page, idx, 1);
                } else {
                    unreachable!("unmap_level met a block its range cuts: {a:#x}..{chunk_end:#x}");
                }
                a = chunk_end;
            }
        }
        // A table about to be unlinked and freed need not be cleaned: the walker cannot reach it
        // once its parent entry is cleared and the TLB invalidated.
        let n = &self.nodes[node as usize];
        let keep = node == self.root || n.used > 0 || !(free || n.born == reclaim);
        if keep && dirty.start != dirty.end {
            self.sync_bytes(&page, dirty.start, dirty.end - dirty.start);
        }
        bytes
    }
}

impl<F: Format, A: TableAlloc> Drop for PageTable<F, A> {
    fn drop(&mut self) {
        if self.root != NONE {
            self.free_unlinked(self.root);
        }
        for page in core::mem::take(&mut self.dummies) {
            // SAFETY: dummy pages came from this allocator; the table is being torn down.
            unsafe { self.alloc.free_table(page) };
            self.stats.tables_freed += 1;
        }
    }
}

/// Iterator over the leaves of a [`PageTable`], from [`PageTable::mappings`].
pub struct Mappings<'a, F: Format, A: TableAlloc> {
    pt: &'a PageTable<F, A>,
    /// (node, level, next index, IOVA of the node's first entry)
    stack: Vec<(u32, usize, usize, u64)>,
}

impl<F: Format, A: TableAlloc> Iterator for Mappings<'_, F, A> {
    type Item = Mapping;

    fn next(&mut self) -> Option<Mapping> {
        loop {
            let top = self.stack.last_mut()?;
            let (node, level, idx, base) = *top;
            if idx == Geometry::<F>::ENTRIES[level] {
                self.stack.pop();
                continue;
            }
            top.2 += 1;
            let pte = self.pt.read(node, idx);
            if pte == self.pt.empty[level] {
                continue;
            }
            let shift = Geometry::<F>::SHIFT[level];
            let iova = base + ((idx as u64) << shift);
            if F::is_table(level, pte) {
                let child = self.pt.nodes[node as usize].children[idx];
                self.stack.push((child, level + 1, 0, iova));
                continue;
            }
            if let Entry::Leaf(dma, prot) = F::decode(level, pte) {
                return Some(Mapping {
                    iova: Iova(iova),
                    dma,
                    size: 1 << shift,
                    level,
                    prot,
                });
            }
        }
    }
}

/// A process-unique, never-zero id for a new table (0 marks a gather owned by no table).
pub(crate) fn next_table_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Relaxed: only uniqueness matters, and fetch_add gives it. 2^64 tables never wrap.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Validates `[start, start + len)` for a format: non-empty, both granule-aligned (`what` names
/// the start and the length in errors), no overflow, and ending within `bits` bits. Returns the
/// exclusive end.
/// Whether `[start, start + len)` is non-empty, granule-aligned and below `limit`: what
/// [`check_range`] accepts, in a few compares, for the fast paths (which leave it to
/// `check_range` to name the error when this is false).
#[inline(always)]
fn fits<F: Format>(start: u64, len: u64, limit: u64) -> bool {
    let g = (1u64 << F::GRANULE_SHIFT) - 1;
    (start | len) & g == 0 && len != 0 && start <= limit && len <= limit - start
}

pub(crate) fn check_range<F: Format>(
    what: (&'static str, &'static str),
    start: u64,
    len: u64,
    bits: u32,
) -> Result<u64, Error> {
    let g = 1u64 << F::GRANULE_SHIFT;
    if len == 0 {
        return Err(Error::ZeroSize);
    }
    for (name, value) in [(what.0, start), (what.1, len)] {
        if value & (g - 1) != 0 {
            return Err(Error::Misaligned {
                what: name,
                value,
                align: g,
            });
        }
    }
    let end = start
        .checked_add(len)
        .ok_or(Error::Overflow { start, size: len })?;
    let limit = limit(bits);
    if end > limit {
        return Err(Error::OutOfRange {
            what: what.0,
            value: end,
            limit,
        });
    }
    Ok(end)
}

#[inline(always)]
pub(crate) fn limit(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        1u64 << bits
    }
}

fn fill<P: PteWord>(page: TablePage, n: usize, v: P) {
    let p = page.cpu.as_ptr() as *mut P;
    for i in 0..n {
        // SAFETY: n entries of P fill exactly one table page.
        unsafe { p.add(i).write(v) };
    }
}

/// The store loop: `n` consecutive leaves from `dma`, each `1 << shift` bytes further.
///
/// # Safety
/// `p .. p + n` must be entries of one table page owned by the caller.
#[inline(always)]
unsafe fn store_leaves<F: Format>(p: *mut F::Pte, n: usize, attrs: F::Pte, dma: u64, shift: u32) {
    // An induction variable rather than `i << shift`: `shift` is not a constant here, and a
    // variable shift keeps the loop from being vectorised.
    let step = 1u64 << shift;
    let mut addr = dma;
    for i in 0..n {
        let v = F::leaf_with_addr(attrs, DmaAddr(addr));
        // SAFETY: i < n, inside the caller's table page.
        unsafe { p.add(i).write(v) };
        addr = addr.wrapping_add(step);
    }
}

/// Clears `n` entries to `empty`, returning how many were not empty.
///
/// # Safety
/// As [`store_leaves`].
#[inline(always)]
unsafe fn clear_leaves<F: Format>(p: *mut F::Pte, n: usize, empty: F::Pte) -> usize {
    let mut cleared = 0;
    for i in 0..n {
        // SAFETY: i < n, inside the caller's table page.
        unsafe {
            cleared += (p.add(i).read() != empty) as usize;
            p.add(i).write(empty);
        }
    }
    cleared
}
