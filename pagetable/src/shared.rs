//! [`SharedPageTable`]: map and unmap of disjoint IOVA ranges from several threads at once, on
//! one table, without a table-wide lock.
//!
//! The scheme is io-pgtable-arm.c's and generic_pt's (drivers/iommu/io-pgtable-arm.c
//! `arm_lpae_install_table`, drivers/iommu/generic_pt/iommu_pt.h): the caller promises that
//! concurrent operations touch disjoint IOVA ranges (the IOVA allocator hands out disjoint
//! ranges); then two operations can only meet where their ranges share a *table*, never an
//! entry. Leaves of disjoint ranges are distinct entries, each written with one atomic store; a
//! missing table is allocated, zeroed (and cleaned for a non-coherent walker), and installed with
//! one compare-exchange of the parent entry from empty to the table pointer. The thread that
//! loses the race frees its table and continues in the winner's.
//!
//! Beside each table entry that points at a table, its CPU pointer is kept in an atomic slot
//! (the `l2_pts` array of ipu6-mmu.c, made atomic), published right after the compare-exchange.
//! A thread that finds the entry installed but the slot not yet set waits for it: the winner is
//! between two consecutive stores, so the wait is a few instructions long unless the winner is
//! preempted there.
//!
//! # What differs from [`PageTable`](crate::PageTable), and why
//!
//! - **Tables are never freed under `&self`.** In the kernel, a thread that violates the
//!   disjointness promise can only corrupt translations; in Rust, a thread holding a pointer to a
//!   table another thread freed would write freed memory from safe code. So
//!   [`SharedPageTable::unmap`] clears leaves only, and the tables it empties stay linked (as the Intel IPU drivers
//!   keep theirs); [`SharedPageTable::compact`], which takes `&mut self` (no other operation can
//!   be running), unlinks the empty ones and hands them to the gather, to be freed after the
//!   walk-cache invalidation. Violating the promise is therefore never unsound: it can make
//!   translations wrong or an operation fail, never touch memory the table does not own.
//! - **A block never replaces a table.** A map whose range covers a whole table that is still
//!   linked (emptied earlier) fills that table with pages rather than replacing it by a block, so
//!   no table is ever unlinked under `&self`. Run `compact` first to get blocks back.
//! - **Formats whose empty entries are zero only** (every format but the Intel IPU's, whose
//!   empty entries point at dummy tables, and whose drivers serialise updates with a spinlock):
//!   checked at compile time.
//! - **The allocator is behind a spin lock** (`spin::mutex::SpinMutex`: the crate is `no_std`),
//!   taken to allocate or free a table (once per 512 pages mapped with 4 KiB tables) and, for a
//!   non-coherent walker, for each `sync_for_device` (once per run of written lines).
//!
//! A failed map leaves the translations as they were (what it wrote is cleared again); the
//! tables it linked stay, empty, until `compact`.

use crate::alloc_table::{TableAlloc, TablePage, TABLE_SIZE};
use crate::atomic_pte::{cas, load, store};
use crate::format::{Geometry, MAX_LEVELS};
use crate::gather::Gather;
use crate::table::{check_range, limit, next_table_id, Dirty};
use crate::{AddressSizes, DmaAddr, Entry, Error, Format, Invalidation, Iova, PageTableConfig};
use crate::{Prot, PteWord};
use alloc::boxed::Box;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use spin::mutex::SpinMutex;

/// One table: its page and, for a table whose entries may point at tables, the CPU pointer of
/// each child (null where none).
struct Table {
    page: TablePage,
    children: Box<[AtomicPtr<Table>]>,
}

/// Counters of a [`SharedPageTable`], read with [`SharedPageTable::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Table pages allocated, the root included.
    pub tables_allocated: u64,
    /// Table pages given back to the allocator (by [`SharedPageTable::iotlb_sync`] after a
    /// [`SharedPageTable::compact`], by a lost install race, at drop not counted).
    pub tables_freed: u64,
    /// Install races lost: a thread allocated a table for an entry another thread filled
    /// first, freed its own, and went on in the winner's.
    pub installs_lost: u64,
    /// Waits for a table's CPU pointer, published just after its entry was installed by
    /// another thread.
    pub child_waits: u64,
}

#[derive(Default)]
struct Counters {
    tables_allocated: AtomicU64,
    tables_freed: AtomicU64,
    installs_lost: AtomicU64,
    child_waits: AtomicU64,
    live: AtomicUsize,
}

/// A device page table of format `F` that several threads may map and unmap at once, each in
/// its own IOVA range (see the [module documentation](self)).
///
/// All sizes and addresses are in bytes, multiples of the format's granule (4 KiB for ARM LPAE
/// 4K). Operations take `&self`; share it with `&` across scoped threads or in an `Arc`. It is
/// `Sync` when the allocator is `Send`.
///
/// The contract, as in the kernel: operations running at the same time act on disjoint IOVA
/// ranges. Breaking it is not unsound (no memory the table does not own is ever touched, see the
/// module docs) but the translations of the overlapping ranges are then unspecified and an
/// operation may fail with [`Error::AlreadyMapped`].
///
/// Teardown: dropping the table frees every table page; the device must have stopped walking it.
pub struct SharedPageTable<F: Format, A: TableAlloc> {
    alloc: SpinMutex<A>,
    root: Box<Table>,
    ias: u32,
    oas: u32,
    start: usize,
    id: u64,
    coherent: bool,
    counters: Counters,
    _format: PhantomData<F>,
}

/// Compile-time check that `F` can be updated without a lock by this scheme.
struct Supported<F>(PhantomData<F>);

impl<F: Format> Supported<F> {
    const OK: () = assert!(
        F::EMPTY_IS_ZERO,
        "SharedPageTable needs a format whose empty entries are zero (not the Intel IPU's)"
    );
}

// ---- table memory ----
//
// While a `SharedPageTable` is shared, every access to its table memory goes through
// `crate::atomic_pte` (one atomic access of the entry's width).

#[inline(always)]
fn slot<F: Format>(page: &TablePage, idx: usize) -> *mut F::Pte {
    page.cpu.as_ptr().cast::<F::Pte>().wrapping_add(idx)
}

#[cfg(test)]
mod hooks {
    //! Test-only pause points, to force the interleavings the stress test can only hope for.
    extern crate std;
    use std::boxed::Box;
    use std::cell::RefCell;

    type Hook = Box<dyn FnMut(&'static str)>;
    std::thread_local!(static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) });

    pub(super) fn set(h: Option<Hook>) {
        HOOK.with(|c| *c.borrow_mut() = h);
    }

    pub(super) fn at(point: &'static str) {
        HOOK.with(|c| {
            if let Some(h) = c.borrow_mut().as_mut() {
                h(point)
            }
        });
    }
}

#[cfg(not(test))]
mod hooks {
    #[inline(always)]
    pub(super) fn at(_: &'static str) {}
}

impl<F: Format, A: TableAlloc> SharedPageTable<F, A> {
    /// Creates an empty table with the format's full address sizes: allocates the root, cleaned
    /// if the walk is not coherent.
    ///
    /// Errors: [`Error::NoMemory`], [`Error::BadTableAddr`] (the root's bus address does not fit
    /// the output size or the root register), nothing kept.
    pub fn new(alloc: A, config: PageTableConfig) -> Result<Self, Error> {
        Self::with_address_sizes(alloc, config, AddressSizes::of::<F>())
    }

    /// Creates an empty table for the address sizes `sizes` (`io_pgtable_cfg.ias/.oas`), as
    /// [`PageTable::with_address_sizes`](crate::PageTable::with_address_sizes).
    ///
    /// Errors: [`Error::BadAddressSize`], [`Error::NoMemory`], [`Error::BadTableAddr`].
    pub fn with_address_sizes(
        alloc: A,
        config: PageTableConfig,
        sizes: AddressSizes,
    ) -> Result<Self, Error> {
        #[allow(clippy::let_unit_value)]
        let () = Geometry::<F>::VALID;
        #[allow(clippy::let_unit_value)]
        let () = Supported::<F>::OK;
        let sizes = sizes.check::<F>()?;
        let start = sizes.start_level::<F>();
        let alloc = SpinMutex::new(alloc);
        let counters = Counters::default();
        let page = alloc_table::<F, A>(&alloc, &counters, start, sizes.oas, config.coherent_walk)?;
        if page.dma.0 >= limit(F::ROOT_BITS) {
            // SAFETY: just allocated by this allocator, never linked.
            unsafe { alloc.lock().free_table(page) };
            return Err(Error::BadTableAddr { dma: page.dma.0 });
        }
        counters.live.store(1, Ordering::Relaxed);
        Ok(Self {
            root: Table::new::<F>(page, start),
            alloc,
            ias: sizes.ias,
            oas: sizes.oas,
            start,
            id: next_table_id(),
            coherent: config.coherent_walk,
            counters,
            _format: PhantomData,
        })
    }

    /// Bus address of the root table (what the MMU's TTBR is programmed with).
    pub fn root(&self) -> DmaAddr {
        self.root.page.dma
    }

    /// The table's address sizes (input and output, in bits).
    pub fn address_sizes(&self) -> AddressSizes {
        AddressSizes {
            ias: self.ias,
            oas: self.oas,
        }
    }

    /// Level of the root table ([`AddressSizes::start_level`]).
    pub fn start_level(&self) -> usize {
        self.start
    }

    /// Whether the walker is coherent (no cache maintenance on updates).
    pub fn coherent_walk(&self) -> bool {
        self.coherent
    }

    /// Number of live tables, the root included.
    pub fn table_count(&self) -> usize {
        self.counters.live.load(Ordering::Relaxed)
    }

    /// Counters since creation (each read on its own: a snapshot only when no operation runs).
    pub fn stats(&self) -> SharedStats {
        let c = &self.counters;
        SharedStats {
            tables_allocated: c.tables_allocated.load(Ordering::Relaxed),
            tables_freed: c.tables_freed.load(Ordering::Relaxed),
            installs_lost: c.installs_lost.load(Ordering::Relaxed),
            child_waits: c.child_waits.load(Ordering::Relaxed),
        }
    }

    /// Maps `size` bytes at `iova` to the bus addresses `dma..dma + size` with `prot`, with the
    /// largest leaves the format allows where IOVA, address and remaining size are aligned to
    /// them (blocks), except under a table still linked there (see the module docs).
    ///
    /// Errors, each leaving the translations as they were: [`Error::ZeroSize`],
    /// [`Error::Misaligned`], [`Error::Overflow`], [`Error::OutOfRange`], [`Error::NoAccess`],
    /// [`Error::ForeignGather`] (nothing written), [`Error::AlreadyMapped`] and
    /// [`Error::NoMemory`] (what was written is cleared again, and the range added to `gather`
    /// for the invalidation; tables linked on the way stay, empty).
    pub fn map(
        &self,
        iova: Iova,
        dma: DmaAddr,
        size: u64,
        prot: Prot,
        gather: &mut Gather,
    ) -> Result<(), Error> {
        gather.claim(self.id)?;
        if !prot.grants_access() {
            return Err(Error::NoAccess { prot });
        }
        check_range::<F>(("dma address", "segment length"), dma.0, size, self.oas)?;
        let end = check_range::<F>(("iova", "size"), iova.0, size, self.ias)?;
        let mut attrs = [F::Pte::default(); MAX_LEVELS];
        for (level, a) in attrs.iter_mut().enumerate().take(F::LEVELS) {
            *a = F::leaf_attrs(level, prot);
        }
        let mut op = MapOp::<F> {
            delta: dma.0.wrapping_sub(iova.0),
            attrs,
            done: iova.0,
        };
        if let Err(e) = self.map_in(&self.root, self.start, iova.0, end, &mut op) {
            if op.done > iova.0 {
                self.clear_in(&self.root, self.start, iova.0, op.done);
                gather.add_range(iova, op.done - iova.0);
            }
            return Err(e);
        }
        if F::TLB_CACHES_EMPTY {
            gather.add_range(iova, size);
        }
        Ok(())
    }

    /// Unmaps `[iova, iova + size)`: clears every leaf in it and returns the bytes that were
    /// mapped (0 if none). The range is added to `gather` if anything was mapped; complete it
    /// with [`SharedPageTable::iotlb_sync`]. Tables emptied stay linked (see
    /// [`SharedPageTable::compact`]).
    ///
    /// Errors, each leaving the table unchanged: [`Error::ZeroSize`], [`Error::Misaligned`],
    /// [`Error::Overflow`], [`Error::OutOfRange`], [`Error::ForeignGather`],
    /// [`Error::PartialBlock`] (the range would cut a block, as io-pgtable-arm.c refuses since
    /// Linux v6.13).
    pub fn unmap(&self, iova: Iova, size: u64, gather: &mut Gather) -> Result<u64, Error> {
        gather.claim(self.id)?;
        let end = check_range::<F>(("iova", "size"), iova.0, size, self.ias)?;
        for at in [iova.0, end] {
            if at >= limit(self.ias) {
                continue;
            }
            if let Some((level, block)) = self.leaf_of(at) {
                if at != block {
                    return Err(Error::PartialBlock {
                        iova: Iova(at),
                        block: Iova(block),
                        size: 1u64 << Geometry::<F>::SHIFT[level],
                    });
                }
            }
        }
        let bytes = self.clear_in(&self.root, self.start, iova.0, end);
        if bytes > 0 {
            gather.add_range(iova, size);
        }
        Ok(bytes)
    }

    /// Translates `iova` as the CPU sees the table: `(bus address of that byte, permissions)`,
    /// or `None` if unmapped or beyond the input size.
    pub fn translate(&self, iova: Iova) -> Option<(DmaAddr, Prot)> {
        if iova.0 >= limit(self.ias) {
            return None;
        }
        let mut table: &Table = &self.root;
        for level in self.start..F::LEVELS {
            let idx = Geometry::<F>::index(level, iova.0);
            // SAFETY: `table` is live (tables are freed only under `&mut self`), idx in bounds.
            let pte = unsafe { load(slot::<F>(&table.page, idx), Ordering::Acquire) };
            if pte == F::Pte::default() {
                return None;
            }
            if F::is_table(level, pte) {
                table = self.wait_child(table, idx);
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

    /// Completes `gather`: hands each range to `invalidate` (walk-cache ranges first, where
    /// [`SharedPageTable::compact`] unlinked a table, then leaf ranges not covered by one), then
    /// frees the table pages `compact` put on it. Other threads may keep mapping meanwhile.
    ///
    /// Errors: [`Error::ForeignGather`] (another table's gather: nothing invalidated, nothing
    /// freed, `gather` unchanged).
    pub fn iotlb_sync(
        &self,
        gather: &mut Gather,
        mut invalidate: impl FnMut(Invalidation),
    ) -> Result<(), Error> {
        if !gather.completable_by(self.id) {
            return Err(Error::ForeignGather);
        }
        gather.for_each_invalidation(&mut invalidate);
        gather.clear_ranges();
        if !gather.freed.is_empty() {
            let mut alloc = self.alloc.lock();
            for page in gather.freed.drain(..) {
                // SAFETY: only `compact` puts pages on this table's gathers; it unlinked each
                // under `&mut self` (so no thread can hold a pointer to it), and the walk
                // caches that could reference it were just invalidated.
                unsafe { alloc.free_table(page) };
                self.counters.tables_freed.fetch_add(1, Ordering::Relaxed);
            }
        }
        gather.release();
        Ok(())
    }

    /// Unlinks every table below the root that holds no entry, innermost first, and puts its
    /// page on `gather` with a walk-cache range over what it translated; the pages are freed by
    /// [`SharedPageTable::iotlb_sync`] after the invalidation. Takes `&mut self`: no other
    /// operation can be walking the tables it unlinks. Returns the number of tables unlinked.
    ///
    /// Errors: [`Error::ForeignGather`] (nothing changed).
    pub fn compact(&mut self, gather: &mut Gather) -> Result<usize, Error> {
        gather.claim(self.id)?;
        let (start, coherent) = (self.start, self.coherent);
        let mut alloc = self.alloc.lock();
        let mut n = 0;
        compact_in::<F, A>(&self.root, start, 0, coherent, &mut alloc, gather, &mut n);
        self.counters.live.fetch_sub(n, Ordering::Relaxed);
        Ok(n)
    }

    // ---- map ----

    fn map_in(
        &self,
        table: &Table,
        level: usize,
        start: u64,
        end: u64,
        op: &mut MapOp<F>,
    ) -> Result<(), Error> {
        let shift = Geometry::<F>::SHIFT[level];
        let size = 1u64 << shift;
        if level == F::LEVELS - 1 {
            return self.store_run(table, level, start, end, op);
        }
        let mut cur = start;
        while cur < end {
            let idx = Geometry::<F>::index(level, cur);
            let next = (cur | (size - 1)).saturating_add(1).min(end);
            let p = slot::<F>(&table.page, idx);
            if F::LEAF_LEVELS[level]
                && next - cur == size
                && (cur.wrapping_add(op.delta)) & (size - 1) == 0
            {
                // SAFETY: `table` is live, idx in bounds.
                let old = unsafe { load(p, Ordering::Acquire) };
                if old == F::Pte::default() {
                    let v = F::leaf_with_addr(op.attrs[level], DmaAddr(cur.wrapping_add(op.delta)));
                    // The entry is in this thread's range: a plain atomic store (a concurrent
                    // install of a table here would be another thread breaking the contract;
                    // its table would then be unreachable, never freed memory).
                    // SAFETY: as above.
                    unsafe { store(p, v, Ordering::Release) };
                    self.clean(&table.page, idx * F::Pte::BYTES, F::Pte::BYTES);
                    op.done = next;
                    cur = next;
                    continue;
                }
                if !F::is_table(level, old) {
                    return Err(Error::AlreadyMapped { iova: Iova(cur) });
                }
            }
            if level + 2 == F::LEVELS
                && next - cur == size
                && self.build_leaf_table(table, level, idx, cur, op)?
            {
                cur = next;
                continue;
            }
            let child = self.child(table, level, idx, cur)?;
            self.map_in(child, level + 1, cur, next, op)?;
            cur = next;
        }
        Ok(())
    }

    /// A last-level table the map covers whole, where entry `idx` of `table` is empty: built
    /// complete (every leaf stored, no zeroing: [`TableAlloc::alloc_table_for_overwrite`]),
    /// cleaned, and only then installed with a compare-exchange, as
    /// [`PageTable`](crate::PageTable) builds it; no other thread can map in its span (the
    /// range is this map's). Returns `false`, having done nothing, if the entry is not empty
    /// (a table kept there: the caller fills it entry by entry).
    fn build_leaf_table(
        &self,
        table: &Table,
        level: usize,
        idx: usize,
        iova: u64,
        op: &mut MapOp<F>,
    ) -> Result<bool, Error> {
        let p = slot::<F>(&table.page, idx);
        // SAFETY: `table` is live, idx in bounds.
        if unsafe { load(p, Ordering::Acquire) } != F::Pte::default() {
            return Ok(false);
        }
        let leaf = level + 1;
        let bytes = Geometry::<F>::table_bytes(leaf);
        let n = Geometry::<F>::ENTRIES[leaf];
        let page = alloc_table_with::<F, A>(&self.alloc, &self.counters, leaf, self.oas, |a| {
            if Geometry::<F>::fills_page(leaf) {
                a.alloc_table_for_overwrite()
            } else if bytes == TABLE_SIZE {
                a.alloc_table()
            } else {
                a.alloc_large_table(bytes)
            }
        })?;
        let shift = Geometry::<F>::SHIFT[leaf];
        let base = page.cpu.as_ptr().cast::<F::Pte>();
        let mut addr = iova.wrapping_add(op.delta);
        for i in 0..n {
            // SAFETY: i < entries of the level, inside the new table (its size is the level's
            // table size, `TableAlloc`'s contract); not yet reachable by any other thread or
            // the walker, so plain stores.
            unsafe {
                base.add(i)
                    .write(F::leaf_with_addr(op.attrs[leaf], DmaAddr(addr)))
            };
            addr = addr.wrapping_add(1 << shift);
        }
        if !self.coherent {
            self.alloc.lock().sync_for_device(&page, 0, bytes);
        }
        hooks::at("before-install");
        // SAFETY: `table` is live, idx in bounds; the new table is complete and cleaned before
        // this publishes it (AcqRel).
        match unsafe { cas(p, F::Pte::default(), F::table_entry(level, page.dma)) } {
            Ok(()) => {
                self.clean(&table.page, idx * F::Pte::BYTES, F::Pte::BYTES);
                self.counters.live.fetch_add(1, Ordering::Relaxed);
                let new = Box::into_raw(Table::new::<F>(page, leaf));
                table.children[idx].store(new, Ordering::Release);
                op.done = iova + (1u64 << Geometry::<F>::SHIFT[level]);
                Ok(true)
            }
            Err(_) => {
                // Another thread mapped inside this map's range: the contract is broken.
                // SAFETY: allocated above, never linked.
                unsafe { self.alloc.lock().free_table(page) };
                self.counters.tables_freed.fetch_add(1, Ordering::Relaxed);
                self.counters.installs_lost.fetch_add(1, Ordering::Relaxed);
                Err(Error::AlreadyMapped { iova: Iova(iova) })
            }
        }
    }

    /// Stores the leaves of `[start, end)`, inside one last-level table: each entry is checked
    /// empty and written in one pass.
    #[inline(always)]
    fn store_run(
        &self,
        table: &Table,
        level: usize,
        start: u64,
        end: u64,
        op: &mut MapOp<F>,
    ) -> Result<(), Error> {
        let shift = Geometry::<F>::SHIFT[level];
        let first = Geometry::<F>::index(level, start);
        let n = ((end - start) >> shift) as usize;
        debug_assert!(first + n <= Geometry::<F>::ENTRIES[level]);
        let base = slot::<F>(&table.page, first);
        let attrs = op.attrs[level];
        let mut addr = start.wrapping_add(op.delta);
        let mut written = n;
        for i in 0..n {
            let p = base.wrapping_add(i);
            // SAFETY: `table` is live; first + i < first + n <= entries, checked by the
            // callers' ranges (the run lies within one table's span).
            if unsafe { load(p, Ordering::Relaxed) } != F::Pte::default() {
                written = i;
                break;
            }
            // SAFETY: as above.
            unsafe {
                store(
                    p,
                    F::leaf_with_addr(attrs, DmaAddr(addr)),
                    Ordering::Relaxed,
                )
            };
            addr = addr.wrapping_add(1 << shift);
        }
        if written > 0 {
            self.clean(&table.page, first * F::Pte::BYTES, written * F::Pte::BYTES);
        }
        op.done = start + ((written as u64) << shift);
        if written < n {
            return Err(Error::AlreadyMapped {
                iova: Iova(op.done),
            });
        }
        Ok(())
    }

    /// The table that entry `idx` of `table` (at `level`) points at: the one already there,
    /// or a new one installed with a compare-exchange. `iova` is for the error.
    fn child<'t>(
        &self,
        table: &'t Table,
        level: usize,
        idx: usize,
        iova: u64,
    ) -> Result<&'t Table, Error> {
        let known = table.children[idx].load(Ordering::Acquire);
        if !known.is_null() {
            // SAFETY: children are freed only under `&mut self`; the pointer came from
            // `Box::into_raw` and was published with Release.
            return Ok(unsafe { &*known });
        }
        let p = slot::<F>(&table.page, idx);
        // SAFETY: `table` is live, idx in bounds.
        let old = unsafe { load(p, Ordering::Acquire) };
        if old != F::Pte::default() {
            return if F::is_table(level, old) {
                Ok(self.wait_child(table, idx))
            } else {
                Err(Error::AlreadyMapped { iova: Iova(iova) })
            };
        }
        let page = alloc_table::<F, A>(
            &self.alloc,
            &self.counters,
            level + 1,
            self.oas,
            self.coherent,
        )?;
        hooks::at("before-install");
        // SAFETY: as above. The new table is zeroed (and cleaned) before this store publishes it
        // (AcqRel), so the walker and other threads never see it half-made.
        match unsafe { cas(p, F::Pte::default(), F::table_entry(level, page.dma)) } {
            Ok(()) => {
                self.clean(&table.page, idx * F::Pte::BYTES, F::Pte::BYTES);
                self.counters.live.fetch_add(1, Ordering::Relaxed);
                hooks::at("installed");
                let new = Box::into_raw(Table::new::<F>(page, level + 1));
                table.children[idx].store(new, Ordering::Release);
                // SAFETY: just made from a Box; freed only under `&mut self`.
                Ok(unsafe { &*new })
            }
            Err(found) => {
                // SAFETY: allocated above, never linked.
                unsafe { self.alloc.lock().free_table(page) };
                self.counters.tables_freed.fetch_add(1, Ordering::Relaxed);
                self.counters.installs_lost.fetch_add(1, Ordering::Relaxed);
                if F::is_table(level, found) {
                    Ok(self.wait_child(table, idx))
                } else {
                    Err(Error::AlreadyMapped { iova: Iova(iova) })
                }
            }
        }
    }

    /// The child of entry `idx`, whose entry is a table pointer: its CPU pointer is published
    /// by the installing thread right after the entry, so wait for it.
    fn wait_child<'t>(&self, table: &'t Table, idx: usize) -> &'t Table {
        let mut waited = false;
        loop {
            let c = table.children[idx].load(Ordering::Acquire);
            if !c.is_null() {
                if waited {
                    self.counters.child_waits.fetch_add(1, Ordering::Relaxed);
                }
                // SAFETY: as in `child`.
                return unsafe { &*c };
            }
            if !waited {
                hooks::at("waiting");
                waited = true;
            }
            core::hint::spin_loop();
        }
    }

    // ---- unmap ----

    /// The leaf that maps `iova`, if it is a block: `(level, first IOVA of the block)`.
    fn leaf_of(&self, iova: u64) -> Option<(usize, u64)> {
        let mut table: &Table = &self.root;
        for level in self.start..F::LEVELS - 1 {
            let idx = Geometry::<F>::index(level, iova);
            // SAFETY: `table` is live, idx in bounds.
            let pte = unsafe { load(slot::<F>(&table.page, idx), Ordering::Acquire) };
            if pte == F::Pte::default() {
                return None;
            }
            if !F::is_table(level, pte) {
                let shift = Geometry::<F>::SHIFT[level];
                return Some((level, iova >> shift << shift));
            }
            table = self.wait_child(table, idx);
        }
        None
    }

    /// Clears every leaf in `[start, end)` below `table`; returns the bytes that were mapped.
    fn clear_in(&self, table: &Table, level: usize, start: u64, end: u64) -> u64 {
        let shift = Geometry::<F>::SHIFT[level];
        if level == F::LEVELS - 1 {
            // Every entry of the run is this unmap's: clear them all, counting the mapped ones.
            let first = Geometry::<F>::index(level, start);
            let n = ((end - start) >> shift) as usize;
            let base = slot::<F>(&table.page, first);
            let mut mapped = 0u64;
            for i in 0..n {
                let p = base.wrapping_add(i);
                // SAFETY: `table` is live; first + n <= entries (the run lies within one
                // table's span).
                unsafe {
                    mapped += (load(p, Ordering::Relaxed) != F::Pte::default()) as u64;
                    store(p, F::Pte::default(), Ordering::Relaxed);
                }
            }
            if mapped > 0 {
                self.clean(&table.page, first * F::Pte::BYTES, n * F::Pte::BYTES);
            }
            return mapped << shift;
        }
        let size = 1u64 << shift;
        let mut bytes = 0;
        let mut cur = start;
        let mut lines = Dirty::default();
        while cur < end {
            let idx = Geometry::<F>::index(level, cur);
            let next = (cur | (size - 1)).saturating_add(1).min(end);
            let p = slot::<F>(&table.page, idx);
            // SAFETY: `table` is live, idx in bounds.
            let pte = unsafe { load(p, Ordering::Acquire) };
            if pte != F::Pte::default() {
                if level < F::LEVELS - 1 && F::is_table(level, pte) {
                    let child = self.wait_child(table, idx);
                    bytes += self.clear_in(child, level + 1, cur, next);
                } else {
                    // A leaf: a page, or a block the range covers whole (checked by `unmap`).
                    // SAFETY: as above.
                    unsafe { store(p, F::Pte::default(), Ordering::Relaxed) };
                    bytes += size;
                    if let Some((s, e)) = lines.note(idx * F::Pte::BYTES, F::Pte::BYTES) {
                        self.clean(&table.page, s, e - s);
                    }
                }
            }
            cur = next;
        }
        if lines.start != lines.end {
            self.clean(&table.page, lines.start, lines.end - lines.start);
        }
        bytes
    }

    // ---- cache maintenance ----

    /// Cleans `len` bytes at `off` of a table for a non-coherent walker.
    #[inline(always)]
    fn clean(&self, page: &TablePage, off: usize, len: usize) {
        if !self.coherent {
            self.alloc.lock().sync_for_device(page, off, len);
        }
    }
}

impl<F: Format, A: TableAlloc> Drop for SharedPageTable<F, A> {
    fn drop(&mut self) {
        let alloc = self.alloc.get_mut();
        for c in self.root.children.iter() {
            free_subtree(c.load(Ordering::Relaxed), alloc);
        }
        // SAFETY: the root came from this allocator; `&mut self` in drop: nothing walks it.
        unsafe { alloc.free_table(self.root.page) };
    }
}

/// What one map carries down the levels.
struct MapOp<F: Format> {
    /// `dma - iova` (wrapping): the bus address of IOVA `x` is `x + delta`.
    delta: u64,
    attrs: [F::Pte; MAX_LEVELS],
    /// End of the prefix of the range written so far (what a failure clears).
    done: u64,
}

impl Table {
    fn new<F: Format>(page: TablePage, level: usize) -> Box<Self> {
        let n = if level < F::LEVELS - 1 {
            Geometry::<F>::ENTRIES[level]
        } else {
            0
        };
        let children = (0..n).map(|_| AtomicPtr::new(ptr::null_mut())).collect();
        Box::new(Self { page, children })
    }
}

/// A zeroed table for `level`, cleaned whole for a non-coherent walker, its bus address checked
/// against the output size.
fn alloc_table<F: Format, A: TableAlloc>(
    alloc: &SpinMutex<A>,
    counters: &Counters,
    level: usize,
    oas: u32,
    coherent: bool,
) -> Result<TablePage, Error> {
    let bytes = Geometry::<F>::table_bytes(level);
    let page = alloc_table_with::<F, A>(alloc, counters, level, oas, |a| {
        if bytes == TABLE_SIZE {
            a.alloc_table()
        } else {
            a.alloc_large_table(bytes)
        }
    })?;
    if !coherent {
        alloc.lock().sync_for_device(&page, 0, bytes);
    }
    Ok(page)
}

/// A table for `level` from `get`, its bus address checked against the output size and the
/// table's alignment (given back if refused), counted.
fn alloc_table_with<F: Format, A: TableAlloc>(
    alloc: &SpinMutex<A>,
    counters: &Counters,
    level: usize,
    oas: u32,
    get: impl FnOnce(&mut A) -> Option<TablePage>,
) -> Result<TablePage, Error> {
    let bytes = Geometry::<F>::table_bytes(level);
    let mut a = alloc.lock();
    let page = get(&mut a).ok_or(Error::NoMemory)?;
    if page.dma.0 >= limit(oas) || !page.dma.is_aligned(bytes as u64) {
        // SAFETY: just allocated by this allocator, never linked.
        unsafe { a.free_table(page) };
        return Err(Error::BadTableAddr { dma: page.dma.0 });
    }
    counters.tables_allocated.fetch_add(1, Ordering::Relaxed);
    Ok(page)
}

/// Frees the table at `t` (null: none) and everything below it. Only with exclusive access.
fn free_subtree<A: TableAlloc>(t: *mut Table, alloc: &mut A) {
    if t.is_null() {
        return;
    }
    // SAFETY: made by `Box::into_raw` in `child`, owned by its parent's slot, freed once (the
    // caller has exclusive access and drops the parent's slot with it).
    let t = unsafe { Box::from_raw(t) };
    for c in t.children.iter() {
        free_subtree(c.load(Ordering::Relaxed), alloc);
    }
    // SAFETY: the page came from this allocator and nothing reaches it any more.
    unsafe { alloc.free_table(t.page) };
}

/// `compact`'s walk: unlinks the empty tables below `table`; returns whether `table` itself is
/// now empty. `base` is the first IOVA `table` translates.
fn compact_in<F: Format, A: TableAlloc>(
    table: &Table,
    level: usize,
    base: u64,
    coherent: bool,
    alloc: &mut A,
    gather: &mut Gather,
    unlinked: &mut usize,
) -> bool {
    let shift = Geometry::<F>::SHIFT[level];
    let mut empty = true;
    for idx in 0..Geometry::<F>::ENTRIES[level] {
        let p = slot::<F>(&table.page, idx);
        // SAFETY: exclusive access (`&mut self` in `compact`); `table` live, idx in bounds.
        let pte = unsafe { load(p, Ordering::Relaxed) };
        if pte == F::Pte::default() {
            continue;
        }
        let child = if level < F::LEVELS - 1 && F::is_table(level, pte) {
            table.children[idx].load(Ordering::Relaxed)
        } else {
            ptr::null_mut()
        };
        if child.is_null() {
            empty = false;
            continue;
        }
        let at = base + ((idx as u64) << shift);
        // SAFETY: a live child (see `child`).
        if compact_in::<F, A>(
            unsafe { &*child },
            level + 1,
            at,
            coherent,
            alloc,
            gather,
            unlinked,
        ) {
            // SAFETY: as above.
            unsafe { store(p, F::Pte::default(), Ordering::Relaxed) };
            if !coherent {
                alloc.sync_for_device(&table.page, idx * F::Pte::BYTES, F::Pte::BYTES);
            }
            table.children[idx].store(ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: the pointer came from `Box::into_raw`; its slot was just cleared.
            let t = unsafe { Box::from_raw(child) };
            gather.add_walk_range(Iova(at), 1u64 << shift);
            gather.freed.push(t.page);
            *unlinked += 1;
        } else {
            empty = false;
        }
    }
    empty
}

#[cfg(test)]
mod tests;
