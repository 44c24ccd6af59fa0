//! `PhysMem`: the simulated machine's physical memory.
//!
//! Owns the frame allocator, the frame table (for each allocated frame: which backing memfd and
//! which page of it holds its bytes) and the counters. CPU accesses go to the memfd bytes (the
//! CPU's view, through its caches); device accesses go either there (coherent devices, which
//! snoop the caches, and everything in [`CacheMode::Native`]) or to the RAM shadow of
//! [`CacheMode::Model`] (non-coherent devices). It never decides *when* to sync: that is the
//! DMA layer's job; it only carries out the cache operations it is asked for
//! (`cache/`).
//!
//! Concurrency: the allocator sits behind a mutex, the frame table behind a reader-writer lock
//! that data accesses hold for reading, so that frames cannot be freed and unmapped under a copy.
//! Concurrent accesses to the same bytes race like CPU and DMA do on real memory: the bytes
//! seen are some mix of old and new, which is the caller's synchronisation problem.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::addr::{Pfn, PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use super::backing::Backing;
use super::cache::CacheMode;
use super::frame_alloc::{FrameAlloc, FrameAllocator, Zone};
use super::frames::Frames;
use super::map::MemoryMap;
use super::stats::{Counters, PhysStats};
use crate::MmError;

/// Seed of the scattering PRNG used by [`PhysMem::new`].
pub const DEFAULT_SEED: u64 = 0x6465_766d_6d75_0001;

/// Hash for frame numbers: one multiply, since keys are integers we generate ourselves.
#[derive(Default)]
struct PfnHasher(u64);

impl Hasher for PfnHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Where one frame's bytes live.
#[derive(Debug)]
struct Slot {
    backing: Arc<Backing>,
    /// Byte offset of the frame in `backing`.
    offset: u64,
    /// The DMA layer's tag of the frame (0: none): which part of the DMA layer owns it, set by
    /// [`PhysMem::set_dma_tag`], read with the frame's lookup by
    /// [`FrameView::check_allocated_tagged`], so a map's check that it maps no DMA-layer memory
    /// costs no second lookup.
    dma_tag: u8,
}

type FrameTable = HashMap<u64, Slot, BuildHasherDefault<PfnHasher>>;

/// A piece of a physical range that lies in one frame.
pub(crate) struct Chunk {
    /// CPU view of the first byte.
    pub(crate) cpu: *mut u8,
    /// RAM (device) view of the first byte, in [`CacheMode::Model`].
    pub(crate) shadow: Option<*mut u8>,
    /// Bytes in this piece.
    pub(crate) len: usize,
    /// Offset of the first byte from the start of the whole range.
    pub(crate) pos: usize,
}

/// The physical memory of a simulated machine: RAM regions, a frame allocator over them, and
/// real backing memory (one sealed memfd per allocation) for every allocated frame.
///
/// Shared as `Arc<PhysMem>`; every method takes `&self` and is safe to call from several
/// threads. Addresses are [`PhysAddr`] (bytes), sizes are bytes unless a name says pages.
pub struct PhysMem {
    map: MemoryMap,
    cache: CacheMode,
    alloc: Mutex<FrameAllocator>,
    table: RwLock<FrameTable>,
    pub(crate) counters: Counters,
    /// The DMA layer's state for this machine (its swiotlb pools), opaque here: see
    /// [`PhysMem::dma_state`].
    dma_state: OnceLock<Box<dyn Any + Send + Sync>>,
    /// Told about every allocation's pages just before they are freed (the DMA layer's debug
    /// check for memory freed with live mappings). Weak: an observer that is gone is skipped.
    free_observers: Mutex<Vec<Weak<dyn FreeObserver>>>,
}

/// Something that wants to know when frames are freed, before they can be reused: the DMA
/// layer's debugging (kernel/dma/debug.c checks freed memory against live mappings the same
/// way). Called without any lock of the `PhysMem` held; it must not free frames itself.
pub(crate) trait FreeObserver: Send + Sync {
    /// `pages` (page-aligned) are about to return to the allocator.
    fn frames_freed(&self, pages: &[PhysAddr]);
}

impl core::fmt::Debug for PhysMem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PhysMem")
            .field("map", &self.map)
            .field("cache", &self.cache)
            .field("allocated_frames", &self.table.read().len())
            .finish()
    }
}

impl PhysMem {
    /// A machine with RAM laid out as `map` and cache behaviour `cache`, scattering frames with
    /// the PRNG seed [`DEFAULT_SEED`]. No RAM is backed until frames are allocated.
    ///
    /// # Errors
    /// [`MmError::Os`] if this kernel cannot create, seal or map a memfd (probed once here so
    /// that the failure shows at construction, not at the first allocation).
    pub fn new(map: MemoryMap, cache: CacheMode) -> Result<Arc<PhysMem>, MmError> {
        PhysMem::with_seed(map, cache, DEFAULT_SEED)
    }

    /// Like [`PhysMem::new`] with another seed for the scattering PRNG: the same seed and the
    /// same sequence of allocations give the same frames.
    ///
    /// # Errors
    /// As [`PhysMem::new`].
    pub fn with_seed(map: MemoryMap, cache: CacheMode, seed: u64) -> Result<Arc<PhysMem>, MmError> {
        drop(Backing::create(PAGE_SIZE, CacheMode::Native)?);
        Ok(Arc::new(PhysMem {
            alloc: Mutex::new(FrameAllocator::new(&map, seed)),
            map,
            cache,
            table: RwLock::new(FrameTable::default()),
            counters: Counters::default(),
            dma_state: OnceLock::new(),
            free_observers: Mutex::new(Vec::new()),
        }))
    }

    /// The RAM layout.
    pub fn memory_map(&self) -> &MemoryMap {
        &self.map
    }

    /// How cache maintenance and non-coherent device accesses behave.
    pub fn cache_mode(&self) -> CacheMode {
        self.cache
    }

    /// A slot for the system DMA layer's per-machine state (today its registry of swiotlb
    /// pools, dma/swiotlb.rs), filled by that layer on first use. Its type is private to the DMA
    /// layer: this layer only holds the slot, so that the state lives and dies with the machine,
    /// and never looks inside.
    pub(crate) fn dma_state(&self) -> &OnceLock<Box<dyn Any + Send + Sync>> {
        &self.dma_state
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PhysStats {
        self.counters.snapshot()
    }

    /// Number of free 4 KiB frames that an allocation in `zone` could use.
    pub fn free_pages(&self, zone: Zone) -> u64 {
        self.alloc.lock().free_pages(zone)
    }

    /// Number of 4 KiB frames of RAM in the memory map.
    pub fn total_pages(&self) -> u64 {
        self.alloc.lock().total_pages()
    }

    /// Whether the frame holding `addr` is allocated.
    pub fn is_allocated(&self, addr: PhysAddr) -> bool {
        self.table.read().contains_key(&addr.pfn().0)
    }

    /// Allocates `pages` 4 KiB frames as `req` says (scattered or contiguous, zone, alignment)
    /// and backs them with a fresh, zero-filled, sealed memfd of `pages * PAGE_SIZE` bytes.
    /// In [`CacheMode::Model`] the RAM shadow starts equal (zero) too.
    ///
    /// # Errors
    /// - [`MmError::ZeroSize`]: `pages == 0`.
    /// - [`MmError::BadAlignment`]: `req.align_pages` is not a power of two.
    /// - [`MmError::NoMemory`]: not enough free frames of the requested shape in `req.zone`.
    /// - [`MmError::Os`]: creating, sealing or mapping the memfd failed.
    ///
    /// On error no frame stays allocated.
    pub fn alloc_frames(self: &Arc<Self>, pages: u64, req: FrameAlloc) -> Result<Frames, MmError> {
        let pfns = self.alloc.lock().alloc(pages, req)?;
        let backing = match Backing::create(pages << PAGE_SHIFT, self.cache) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                self.alloc.lock().free(&pfns);
                return Err(e);
            }
        };
        Ok(self.install(pfns, backing))
    }

    /// Assigns frames to the first `len_bytes` bytes of an existing fd (a memfd or other
    /// mappable file, e.g. one imported from another process), mapping it shared. What kind of
    /// fd it is, and its seals, are for the importer to check; this only refuses lengths it
    /// cannot map. In [`CacheMode::Model`] the RAM shadow starts as a copy of the fd's current
    /// content. The fd is consumed, also on error.
    ///
    /// # Errors
    /// - [`MmError::ZeroSize`]: `len_bytes == 0`.
    /// - [`MmError::Misaligned`]: `len_bytes` is not a multiple of [`PAGE_SIZE`].
    /// - [`MmError::BadAlignment`], [`MmError::NoMemory`]: as [`PhysMem::alloc_frames`].
    /// - [`MmError::FdTooSmall`]: the file is shorter than `len_bytes`.
    /// - [`MmError::Os`]: `fstat` or `mmap` failed (e.g. `EACCES` for a read-only fd, `EPERM`
    ///   for a write-sealed one).
    pub fn adopt_fd(
        self: &Arc<Self>,
        fd: OwnedFd,
        len_bytes: u64,
        req: FrameAlloc,
    ) -> Result<Frames, MmError> {
        if len_bytes == 0 {
            return Err(MmError::ZeroSize);
        }
        if !len_bytes.is_multiple_of(PAGE_SIZE) {
            return Err(MmError::Misaligned {
                value: len_bytes,
                align: PAGE_SIZE,
            });
        }
        let pfns = self.alloc.lock().alloc(len_bytes / PAGE_SIZE, req)?;
        let backing = match Backing::adopt(fd, len_bytes, self.cache) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                self.alloc.lock().free(&pfns);
                return Err(e);
            }
        };
        Ok(self.install(pfns, backing))
    }

    /// Enters freshly allocated frames into the frame table.
    fn install(self: &Arc<Self>, pfns: Vec<u64>, backing: Arc<Backing>) -> Frames {
        {
            let mut table = self.table.write();
            table.reserve(pfns.len());
            for (i, &pfn) in pfns.iter().enumerate() {
                let slot = Slot {
                    backing: Arc::clone(&backing),
                    offset: (i as u64) << PAGE_SHIFT,
                    dma_tag: 0,
                };
                table.insert(pfn, slot);
            }
        }
        Counters::add(&self.counters.frames_allocated, pfns.len() as u64);
        let pages = pfns.into_iter().map(|p| Pfn(p).addr()).collect();
        Frames::new(Arc::clone(self), backing, pages)
    }

    /// Returns the frames of a dropped [`Frames`]. They leave the frame table before they return
    /// to the allocator, so a frame is never handed out while an old entry still names it.
    pub(crate) fn release(&self, pages: &[PhysAddr]) {
        let observers: Vec<Arc<dyn FreeObserver>> = {
            let mut list = self.free_observers.lock();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for o in observers {
            o.frames_freed(pages);
        }
        {
            let mut table = self.table.write();
            for pa in pages {
                table.remove(&pa.pfn().0);
            }
        }
        let pfns: Vec<u64> = pages.iter().map(|pa| pa.pfn().0).collect();
        self.alloc.lock().free(&pfns);
        Counters::add(&self.counters.frames_freed, pages.len() as u64);
    }

    /// Sets the DMA layer's tag (0: none) of every allocated frame that `[addr, addr + len)`
    /// touches; frames not allocated are skipped. The DMA layer's own bookkeeping: it tags the
    /// frames it owns (swiotlb pools, table pages) right after allocating them and clears the
    /// tag before freeing them.
    pub(crate) fn set_dma_tag(&self, addr: PhysAddr, len: u64, tag: u8) {
        if len == 0 {
            return;
        }
        let last = addr.0.saturating_add(len - 1) >> PAGE_SHIFT;
        let mut table = self.table.write();
        for pfn in addr.pfn().0..=last {
            if let Some(slot) = table.get_mut(&pfn) {
                slot.dma_tag = tag;
            }
        }
    }

    /// Adds an observer told about every release of frames from now on.
    pub(crate) fn observe_frees(&self, observer: Weak<dyn FreeObserver>) {
        self.free_observers.lock().push(observer);
    }

    /// The frame table held for reading, for a batch of data accesses that takes the lock once
    /// (a sync of many segments, a table walk). While the view lives, this thread must not call
    /// anything else that takes the frame table (allocating, freeing, another `PhysMem` data
    /// access): the lock is not reentrant once a writer waits.
    pub(crate) fn frames(&self) -> FrameView<'_> {
        FrameView {
            mem: self,
            table: self.table.read(),
            tally: Tally::default(),
        }
    }

    /// Calls `f` for each piece of `addr..addr + len` that lies in one frame (or in a run of
    /// frames adjacent in one backing), in address order, holding the frame table for reading.
    /// Checks the whole range before the first call, so an error means `f` was never called.
    /// `len == 0` calls nothing and succeeds.
    pub(crate) fn for_each_chunk(
        &self,
        addr: PhysAddr,
        len: u64,
        f: impl FnMut(Chunk),
    ) -> Result<(), MmError> {
        self.frames().for_each_chunk(addr, len, f)
    }

    /// Reads `buf.len()` bytes at `addr` as the CPU sees them (through its caches). The range
    /// may cross frames, which need not be contiguous in any backing.
    ///
    /// # Errors
    /// - [`MmError::BadPhysAddr`]: a byte of the range is in no allocated frame (`addr` is the
    ///   first such byte); `buf` is then untouched.
    /// - [`MmError::AddrOverflow`]: the range wraps past 2^64.
    pub fn cpu_read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MmError> {
        self.frames().cpu_read(addr, buf)
    }

    /// Writes `data` at `addr` into the CPU's view. In [`CacheMode::Model`] a non-coherent
    /// device does not see it until the lines are cleaned.
    ///
    /// # Errors
    /// As [`PhysMem::cpu_read`]; on error nothing was written.
    pub fn cpu_write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), MmError> {
        self.frames().cpu_write(addr, data)
    }

    /// The CPU pointer of the byte at `addr`, valid for the rest of its frame
    /// (`PAGE_SIZE - addr.page_offset()` bytes) while the frame stays allocated, or `None` if no
    /// frame is allocated there. Used to write page tables in place; writes through it are
    /// CPU-view writes like [`PhysMem::cpu_write`].
    pub fn cpu_ptr(&self, addr: PhysAddr) -> Option<NonNull<u8>> {
        let table = self.table.read();
        let slot = table.get(&addr.pfn().0)?;
        NonNull::new(slot.backing.cpu_ptr(slot.offset + addr.page_offset()))
    }

    /// A device reads `buf.len()` bytes at `addr`. A `coherent` device snoops the CPU caches and
    /// sees the CPU view. A non-coherent one sees RAM: in [`CacheMode::Model`] the shadow, which
    /// only `clean` updates; in [`CacheMode::Native`] there is no separate RAM view, so it sees
    /// the CPU view too.
    ///
    /// # Errors
    /// As [`PhysMem::cpu_read`].
    pub fn device_read(
        &self,
        addr: PhysAddr,
        buf: &mut [u8],
        coherent: bool,
    ) -> Result<(), MmError> {
        self.frames().device_read(addr, buf, coherent)
    }

    /// A device's atomic read-modify-write of the little-endian 8-byte word at `addr` (8-byte
    /// aligned): `f(old)` is stored if it is `Some`, as a page-table walker's hardware update
    /// of an entry does (SMMUv3 HTTU setting a leaf dirty). A `coherent` device updates the CPU
    /// view atomically (and RAM with it); a non-coherent one, in [`CacheMode::Model`], RAM only.
    /// Returns the old value.
    ///
    /// # Errors
    /// As [`PhysMem::cpu_read`], and [`MmError::BadPhysAddr`] for an address not 8-byte
    /// aligned; on error nothing was written.
    pub(crate) fn device_update_u64(
        &self,
        addr: PhysAddr,
        coherent: bool,
        f: impl FnMut(u64) -> Option<u64>,
    ) -> Result<u64, MmError> {
        self.frames().device_update_u64(addr, coherent, f)
    }

    /// A device writes `data` at `addr`. A non-coherent device in [`CacheMode::Model`] writes RAM
    /// (the shadow) only, so the CPU keeps reading its stale view until it invalidates. A
    /// coherent device's write reaches both RAM and the CPU view (snooping invalidates the CPU's
    /// copy). In [`CacheMode::Native`] every device write lands in the CPU view.
    ///
    /// # Errors
    /// As [`PhysMem::cpu_read`]; on error nothing was written.
    pub fn device_write(&self, addr: PhysAddr, data: &[u8], coherent: bool) -> Result<(), MmError> {
        self.frames().device_write(addr, data, coherent)
    }
}

/// Counts a [`FrameView`] accumulates and adds to [`PhysMem`]'s counters when it drops, so that
/// a batch of accesses costs one atomic add per counter instead of several per access.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) clean_calls: Cell<u64>,
    pub(crate) invalidate_calls: Cell<u64>,
    pub(crate) clean_invalidate_calls: Cell<u64>,
    pub(crate) lines_cleaned: Cell<u64>,
    pub(crate) lines_invalidated: Cell<u64>,
    pub(crate) fences: Cell<u64>,
    device_bytes_read: Cell<u64>,
    device_bytes_written: Cell<u64>,
}

impl Tally {
    /// Adds `n` to one of the tally's counts.
    pub(crate) fn add(count: &Cell<u64>, n: u64) {
        count.set(count.get() + n);
    }
}

/// [`PhysMem`]'s frame table held for reading: data accesses through it look frames up without
/// taking the lock again, and their counts reach the counters when the view drops. Made by
/// [`PhysMem::frames`]; the rules there apply.
pub(crate) struct FrameView<'a> {
    mem: &'a PhysMem,
    table: RwLockReadGuard<'a, FrameTable>,
    pub(crate) tally: Tally,
}

impl Drop for FrameView<'_> {
    fn drop(&mut self) {
        let (t, k) = (&self.tally, &self.mem.counters);
        for (count, counter) in [
            (&t.clean_calls, &k.clean_calls),
            (&t.invalidate_calls, &k.invalidate_calls),
            (&t.clean_invalidate_calls, &k.clean_invalidate_calls),
            (&t.lines_cleaned, &k.lines_cleaned),
            (&t.lines_invalidated, &k.lines_invalidated),
            (&t.fences, &k.fences),
            (&t.device_bytes_read, &k.device_bytes_read),
            (&t.device_bytes_written, &k.device_bytes_written),
        ] {
            let n = count.get();
            if n != 0 {
                Counters::add(counter, n);
            }
        }
    }
}

impl FrameView<'_> {
    /// How cache maintenance and non-coherent device accesses behave.
    pub(crate) fn cache_mode(&self) -> CacheMode {
        self.mem.cache
    }

    /// Checks that every byte of `addr..addr + len` lies in an allocated frame, under this
    /// view's lock, with one lookup per page and no allocation; returns the first byte of the
    /// range whose frame has a DMA-layer tag ([`PhysMem::set_dma_tag`]) and that tag, if any.
    ///
    /// # Errors
    /// [`MmError::ZeroSize`] for `len == 0`; [`MmError::AddrOverflow`]; [`MmError::BadPhysAddr`]
    /// naming the first byte with no frame (an unallocated page anywhere in the range wins over
    /// a tag).
    pub(crate) fn check_allocated_tagged(
        &self,
        addr: PhysAddr,
        len: u64,
    ) -> Result<Option<(PhysAddr, u8)>, MmError> {
        if len == 0 {
            return Err(MmError::ZeroSize);
        }
        let end = addr
            .checked_add(len)
            .ok_or(MmError::AddrOverflow { addr, len })?;
        let mut tagged = None;
        for pfn in addr.pfn().0..=((end.0 - 1) >> PAGE_SHIFT) {
            match self.table.get(&pfn) {
                None => {
                    return Err(MmError::BadPhysAddr {
                        addr: addr.max(Pfn(pfn).addr()),
                    })
                }
                Some(slot) if slot.dma_tag != 0 && tagged.is_none() => {
                    tagged = Some((addr.max(Pfn(pfn).addr()), slot.dma_tag));
                }
                Some(_) => {}
            }
        }
        Ok(tagged)
    }

    /// As [`PhysMem::for_each_chunk`], under this view's lock. Pages adjacent both physically and
    /// in one backing are handed to `f` as one chunk, so a contiguous allocation is one copy.
    pub(crate) fn for_each_chunk(
        &self,
        addr: PhysAddr,
        len: u64,
        mut f: impl FnMut(Chunk),
    ) -> Result<(), MmError> {
        if len == 0 {
            return Ok(());
        }
        let end = addr
            .checked_add(len)
            .ok_or(MmError::AddrOverflow { addr, len })?;
        let (first, last) = (addr.pfn().0, (end.0 - 1) >> PAGE_SHIFT);
        let lookup = |pfn: u64| {
            self.table.get(&pfn).ok_or(MmError::BadPhysAddr {
                addr: addr.max(Pfn(pfn).addr()),
            })
        };
        if first == last {
            // The common case (a page-sized copy, a PTE read): one lookup, no list.
            let slot = lookup(first)?;
            let at = slot.offset + addr.page_offset();
            f(Chunk {
                cpu: slot.backing.cpu_ptr(at),
                shadow: slot.backing.shadow_ptr(at),
                len: len as usize,
                pos: 0,
            });
            return Ok(());
        }
        // Every frame is looked up before `f` first runs, so a hole means no call at all.
        let slots = (first..=last)
            .map(lookup)
            .collect::<Result<Vec<&Slot>, _>>()?;
        let mut i = 0;
        let mut cur = addr.0;
        while i < slots.len() {
            let slot = slots[i];
            let mut j = i + 1;
            while j < slots.len()
                && Arc::ptr_eq(&slots[j].backing, &slot.backing)
                && slots[j].offset == slot.offset + (((j - i) as u64) << PAGE_SHIFT)
            {
                j += 1;
            }
            let run_end = end.0.min((first + j as u64) << PAGE_SHIFT);
            let at = slot.offset + (cur & (PAGE_SIZE - 1));
            f(Chunk {
                cpu: slot.backing.cpu_ptr(at),
                shadow: slot.backing.shadow_ptr(at),
                len: (run_end - cur) as usize,
                pos: (cur - addr.0) as usize,
            });
            cur = run_end;
            i = j;
        }
        Ok(())
    }

    /// As [`PhysMem::cpu_read`], under this view's lock.
    pub(crate) fn cpu_read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MmError> {
        let dst = buf.as_mut_ptr();
        self.for_each_chunk(addr, buf.len() as u64, |c| {
            // SAFETY: `c.cpu` is valid for `c.len` bytes while the table is held (the backing
            // stays mapped); `c.pos + c.len <= buf.len()`. `copy` tolerates a `buf` that itself
            // lies in a backing.
            unsafe { core::ptr::copy(c.cpu, dst.add(c.pos), c.len) }
        })
    }

    /// As [`PhysMem::cpu_write`], under this view's lock.
    pub(crate) fn cpu_write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), MmError> {
        let src = data.as_ptr();
        self.for_each_chunk(addr, data.len() as u64, |c| {
            // SAFETY: as in `cpu_read`, with the roles swapped; the backing is mapped writable.
            unsafe { core::ptr::copy(src.add(c.pos), c.cpu, c.len) }
        })
    }

    /// Copies `n` bytes from `from` to `to` in the CPU view (a kernel `memcpy` between two
    /// physical ranges, as swiotlb's bounce copies are), without an intermediate buffer.
    /// Both ranges are checked first, so on error nothing was written.
    ///
    /// The two ranges must not share bytes, under any address: the result would depend on
    /// the copy order. Bounce slots and the buffers they stand for are different frames of
    /// different backings, and a swiotlb pool's memfd is never exported, so they never do.
    pub(crate) fn cpu_copy(&self, from: PhysAddr, to: PhysAddr, n: u64) -> Result<(), MmError> {
        self.for_each_chunk(from, n, |_| {})?;
        self.for_each_chunk(to, n, |_| {})?;
        let mut res = Ok(());
        self.for_each_chunk(from, n, |src| {
            if res.is_err() {
                return;
            }
            let to_here = PhysAddr(to.0 + src.pos as u64);
            res = self.for_each_chunk(to_here, src.len as u64, |dst| {
                // SAFETY: both chunks are valid for `dst.len` bytes (`dst.pos + dst.len <=
                // src.len`) while the table is held; the destination backing is writable.
                unsafe { core::ptr::copy(src.cpu.add(dst.pos), dst.cpu, dst.len) }
            });
        })?;
        res
    }

    /// As [`PhysMem::device_read`], under this view's lock.
    pub(crate) fn device_read(
        &self,
        addr: PhysAddr,
        buf: &mut [u8],
        coherent: bool,
    ) -> Result<(), MmError> {
        let dst = buf.as_mut_ptr();
        let ram = !coherent && self.mem.cache == CacheMode::Model;
        self.for_each_chunk(addr, buf.len() as u64, |c| {
            let src = match (ram, c.shadow) {
                (true, Some(shadow)) => shadow,
                _ => c.cpu,
            };
            // SAFETY: `src` is valid for `c.len` bytes (CPU mapping or shadow of the same
            // backing, held by the table); `c.pos + c.len <= buf.len()`.
            unsafe { core::ptr::copy(src, dst.add(c.pos), c.len) }
        })?;
        Tally::add(&self.tally.device_bytes_read, buf.len() as u64);
        Ok(())
    }

    /// As [`PhysMem::device_update_u64`], under this view's lock (so the frame cannot be freed
    /// during the update).
    pub(crate) fn device_update_u64(
        &self,
        addr: PhysAddr,
        coherent: bool,
        mut f: impl FnMut(u64) -> Option<u64>,
    ) -> Result<u64, MmError> {
        if !addr.0.is_multiple_of(8) {
            return Err(MmError::BadPhysAddr { addr });
        }
        let mut old = 0;
        // An aligned 8-byte word never crosses a frame: exactly one chunk.
        self.for_each_chunk(addr, 8, |c| {
            if coherent || c.shadow.is_none() {
                // SAFETY: `c.cpu` is valid for 8 bytes while the table is held (the chunk is the
                // whole word) and 8-byte aligned (`addr` is, and frames are page-aligned in
                // their backing's mapping). Every other access to a page-table word that can race
                // with this one is atomic: the page table's own read-modify-writes of its leaves
                // (devmmu-pagetable's `read_and_clear_dirty`); its plain stores happen under
                // its owner's lock with the device quiescent for that range, as on hardware.
                let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(c.cpu as *mut u64) };
                let r = word.fetch_update(
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                    |v| f(u64::from_le(v)).map(u64::to_le),
                );
                old = u64::from_le(r.unwrap_or_else(|v| v));
                if let Some(shadow) = c.shadow {
                    let now = word.load(std::sync::atomic::Ordering::Acquire);
                    // SAFETY: the shadow is valid for the chunk's 8 bytes while the table is
                    // held; only device accesses (this model) write it.
                    unsafe { core::ptr::copy(now.to_ne_bytes().as_ptr(), shadow, 8) };
                }
            } else if let Some(shadow) = c.shadow {
                let mut b = [0u8; 8];
                // SAFETY: as above; RAM of a non-coherent device, written only by devices.
                unsafe { core::ptr::copy(shadow, b.as_mut_ptr(), 8) };
                old = u64::from_le_bytes(b);
                if let Some(new) = f(old) {
                    // SAFETY: as above.
                    unsafe { core::ptr::copy(new.to_le_bytes().as_ptr(), shadow, 8) };
                }
            }
        })?;
        Tally::add(&self.tally.device_bytes_written, 8);
        Ok(old)
    }

    /// As [`PhysMem::device_write`], under this view's lock.
    pub(crate) fn device_write(
        &self,
        addr: PhysAddr,
        data: &[u8],
        coherent: bool,
    ) -> Result<(), MmError> {
        let src = data.as_ptr();
        self.for_each_chunk(addr, data.len() as u64, |c| {
            if let Some(shadow) = c.shadow {
                // SAFETY: the shadow is valid for `c.len` bytes; `c.pos + c.len <= data.len()`.
                unsafe { core::ptr::copy(src.add(c.pos), shadow, c.len) }
            }
            if coherent || c.shadow.is_none() {
                // SAFETY: the CPU mapping is valid and writable for `c.len` bytes.
                unsafe { core::ptr::copy(src.add(c.pos), c.cpu, c.len) }
            }
        })?;
        Tally::add(&self.tally.device_bytes_written, data.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::RamRegion;

    const BASE: u64 = 0x10_0000;

    /// A machine of exactly `pages` frames at [`BASE`], so that allocations must sit side by side.
    fn small(pages: u64) -> Arc<PhysMem> {
        let map = MemoryMap::new(vec![RamRegion {
            base: PhysAddr(BASE),
            size: pages * PAGE_SIZE,
        }])
        .unwrap();
        PhysMem::new(map, CacheMode::Model).unwrap()
    }

    fn fill(f: &Frames, seed: u8) {
        let data: Vec<u8> = (0..f.len_bytes())
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect();
        f.write(0, &data).unwrap();
    }

    /// The bytes of physical `[BASE, BASE + len)` as the frames' own mappings hold them.
    fn by_page(frames: &[&Frames], len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        for f in frames {
            for (i, pa) in f.pages().iter().enumerate() {
                let at = (pa.0 - BASE) as usize;
                f.read(
                    (i as u64) * PAGE_SIZE,
                    &mut out[at..at + PAGE_SIZE as usize],
                )
                .unwrap();
            }
        }
        out
    }

    #[test]
    fn chunks_merge_only_pages_adjacent_in_one_backing() {
        // Two contiguous allocations side by side: physically one run, two backings.
        let p = small(8);
        let req = FrameAlloc::contiguous().aligned(4);
        let a = p.alloc_frames(4, req).unwrap();
        let b = p.alloc_frames(4, req).unwrap();
        fill(&a, 1);
        fill(&b, 2);
        let mut chunks = Vec::new();
        p.for_each_chunk(PhysAddr(BASE + 100), 8 * PAGE_SIZE - 150, |c| {
            chunks.push((c.pos, c.len))
        })
        .unwrap();
        let split = (4 * PAGE_SIZE - 100) as usize;
        assert_eq!(
            chunks,
            vec![(0, split), (split, (4 * PAGE_SIZE - 50) as usize)]
        );
        let mut got = vec![0u8; (8 * PAGE_SIZE) as usize];
        p.cpu_read(PhysAddr(BASE), &mut got).unwrap();
        assert_eq!(got, by_page(&[&a, &b], 8 * PAGE_SIZE));

        // One scattered allocation over the whole machine: its pages are a permutation of the
        // frames, so physical neighbours are rarely buffer neighbours, and only those merge.
        let p = small(16);
        let s = p.alloc_frames(16, FrameAlloc::scattered()).unwrap();
        fill(&s, 3);
        let mut got = vec![0u8; (16 * PAGE_SIZE) as usize];
        p.cpu_read(PhysAddr(BASE), &mut got).unwrap();
        assert_eq!(got, by_page(&[&s], 16 * PAGE_SIZE));
        let runs = s
            .pages()
            .windows(2)
            .filter(|w| w[1].0 == w[0].0 + PAGE_SIZE)
            .count();
        let mut calls = 0;
        p.for_each_chunk(PhysAddr(BASE), 16 * PAGE_SIZE, |_| calls += 1)
            .unwrap();
        assert_eq!(calls, 16 - runs);
    }

    #[test]
    fn chunk_errors_name_the_first_hole_and_call_nothing() {
        let p = small(8);
        let a = p.alloc_frames(2, FrameAlloc::contiguous()).unwrap();
        let start = a.pages()[0];
        let mut calls = 0;
        let r = p.for_each_chunk(PhysAddr(start.0 + 10), 3 * PAGE_SIZE, |_| calls += 1);
        assert_eq!(
            r,
            Err(MmError::BadPhysAddr {
                addr: PhysAddr(start.0 + 2 * PAGE_SIZE)
            })
        );
        let hole = (0..8)
            .map(|i| PhysAddr(BASE + i * PAGE_SIZE + 5))
            .find(|&pa| !p.is_allocated(pa))
            .unwrap();
        let r = p.for_each_chunk(hole, 8, |_| calls += 1);
        assert_eq!(r, Err(MmError::BadPhysAddr { addr: hole }));
        assert_eq!(calls, 0);
        assert_eq!(
            p.for_each_chunk(PhysAddr(u64::MAX - 1), 4, |_| calls += 1),
            Err(MmError::AddrOverflow {
                addr: PhysAddr(u64::MAX - 1),
                len: 4
            })
        );
    }

    #[test]
    fn cpu_copy_crosses_frames_and_backings() {
        // Three 4-page allocations fill the machine, so frames 0..8 belong to two backings and
        // frames 8..12 to the third, whichever went where.
        let p = small(12);
        let req = FrameAlloc::contiguous().aligned(4);
        let all: Vec<Frames> = (0..3).map(|_| p.alloc_frames(4, req).unwrap()).collect();
        for (i, f) in all.iter().enumerate() {
            fill(f, 4 + i as u8);
        }
        // The source crosses from one backing into the other, the destination crosses a frame
        // boundary at another in-page offset, so chunk edges differ on the two sides.
        let (from, to, n) = (
            BASE + 4 * PAGE_SIZE - 700,
            BASE + 8 * PAGE_SIZE + 2000,
            3000,
        );
        let mut want = vec![0u8; n as usize];
        p.cpu_read(PhysAddr(from), &mut want).unwrap();
        p.frames()
            .cpu_copy(PhysAddr(from), PhysAddr(to), n)
            .unwrap();
        let mut got = vec![0u8; n as usize];
        p.cpu_read(PhysAddr(to), &mut got).unwrap();
        assert_eq!(got, want);

        // Either range running off the end of RAM writes nothing.
        let refs: Vec<&Frames> = all.iter().collect();
        let snapshot = by_page(&refs, 12 * PAGE_SIZE);
        let end = BASE + 12 * PAGE_SIZE;
        for (from, to) in [(end - 32, BASE), (BASE, end - 32)] {
            assert_eq!(
                p.frames().cpu_copy(PhysAddr(from), PhysAddr(to), 64),
                Err(MmError::BadPhysAddr {
                    addr: PhysAddr(end)
                })
            );
        }
        assert_eq!(by_page(&refs, 12 * PAGE_SIZE), snapshot);
    }

    #[test]
    fn view_counts_reach_the_counters_when_it_drops() {
        let p = small(4);
        let f = p
            .alloc_frames(2, FrameAlloc::contiguous().aligned(2))
            .unwrap();
        let pa = f.pages()[0];
        let hole = PhysAddr(BASE + ((pa.0 - BASE) ^ (2 * PAGE_SIZE)));
        let mut buf = [0u8; 100];
        {
            let v = p.frames();
            v.device_read(pa, &mut buf, false).unwrap();
            v.device_write(PhysAddr(pa.0 + 4000), &buf, false).unwrap();
            assert!(v.device_write(hole, &buf, true).is_err());
            assert!(v.device_read(hole, &mut buf, false).is_err());
            assert_eq!(v.clean(pa, 65).unwrap(), 2);
            assert_eq!(
                p.counters.snapshot().device_bytes_read,
                0,
                "not before the drop"
            );
        }
        let s = p.stats();
        assert_eq!(
            (s.device_bytes_read, s.device_bytes_written),
            (100, 100),
            "failed accesses count nothing"
        );
        assert_eq!((s.clean_calls, s.lines_cleaned, s.fences), (1, 2, 1));
    }
}
