//! `PhysMem`: the simulated machine's physical memory.
//!
//! Owns the frame allocator, the frame table (for each allocated frame: which backing memfd and
//! which page of it holds its bytes) and the counters. CPU accesses go to the memfd bytes (the
//! CPU's view, through its caches); device accesses go either there (coherent devices, which
//! snoop the caches, and everything in [`CacheMode::Native`]) or to the RAM shadow of
//! [`CacheMode::Model`] (non-coherent devices). It never decides *when* to sync: that is the
//! DMA layer's job; it only carries out the cache operations it is asked for
//! (see [`crate::cache`]).
//!
//! Concurrency: the allocator sits behind a mutex, the frame table behind a reader-writer lock
//! that data accesses hold for reading, so that frames cannot be freed and unmapped under a copy.
//! Concurrent accesses to the same bytes race like CPU and DMA do on real memory: the bytes
//! seen are some mix of old and new, which is the caller's synchronisation problem.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::addr::{Pfn, PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use super::backing::Backing;
use super::frame_alloc::{FrameAlloc, FrameAllocator, Zone};
use super::frames::Frames;
use super::map::MemoryMap;
use super::stats::{Counters, PhysStats};
use crate::cache::CacheMode;
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

    /// Calls `f` for each piece of `addr..addr + len` that lies in one frame, in address order,
    /// holding the frame table for reading. Checks the whole range before the first call, so an
    /// error means `f` was never called. `len == 0` calls nothing and succeeds.
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
        let table = self.table.read();
        let (first, last) = (addr.pfn().0, (end.0 - 1) >> PAGE_SHIFT);
        for pfn in first..=last {
            if !table.contains_key(&pfn) {
                return Err(MmError::BadPhysAddr {
                    addr: addr.max(Pfn(pfn).addr()),
                });
            }
        }
        let mut cur = addr.0;
        while cur < end.0 {
            let offset = cur & (PAGE_SIZE - 1);
            let n = (end.0 - cur).min(PAGE_SIZE - offset);
            let slot = &table[&(cur >> PAGE_SHIFT)];
            f(Chunk {
                cpu: slot.backing.cpu_ptr(slot.offset + offset),
                shadow: slot.backing.shadow_ptr(slot.offset + offset),
                len: n as usize,
                pos: (cur - addr.0) as usize,
            });
            cur += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `addr` as the CPU sees them (through its caches). The range
    /// may cross frames, which need not be contiguous in any backing.
    ///
    /// # Errors
    /// - [`MmError::BadPhysAddr`]: a byte of the range is in no allocated frame (`addr` is the
    ///   first such byte); `buf` is then untouched.
    /// - [`MmError::AddrOverflow`]: the range wraps past 2^64.
    pub fn cpu_read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MmError> {
        let dst = buf.as_mut_ptr();
        self.for_each_chunk(addr, buf.len() as u64, |c| {
            // SAFETY: `c.cpu` is valid for `c.len` bytes while the table is held (the backing
            // stays mapped); `c.pos + c.len <= buf.len()`. `copy` tolerates a `buf` that itself
            // lies in a backing.
            unsafe { core::ptr::copy(c.cpu, dst.add(c.pos), c.len) }
        })
    }

    /// Writes `data` at `addr` into the CPU's view. In [`CacheMode::Model`] a non-coherent
    /// device does not see it until the lines are cleaned.
    ///
    /// # Errors
    /// As [`PhysMem::cpu_read`]; on error nothing was written.
    pub fn cpu_write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), MmError> {
        let src = data.as_ptr();
        self.for_each_chunk(addr, data.len() as u64, |c| {
            // SAFETY: as in `cpu_read`, with the roles swapped; the backing is mapped writable.
            unsafe { core::ptr::copy(src.add(c.pos), c.cpu, c.len) }
        })
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
        let dst = buf.as_mut_ptr();
        let ram = !coherent && self.cache == CacheMode::Model;
        self.for_each_chunk(addr, buf.len() as u64, |c| {
            let src = match (ram, c.shadow) {
                (true, Some(shadow)) => shadow,
                _ => c.cpu,
            };
            // SAFETY: `src` is valid for `c.len` bytes (CPU mapping or shadow of the same
            // backing, held by the table); `c.pos + c.len <= buf.len()`.
            unsafe { core::ptr::copy(src, dst.add(c.pos), c.len) }
        })?;
        Counters::add(&self.counters.device_bytes_read, buf.len() as u64);
        Ok(())
    }

    /// A device writes `data` at `addr`. A non-coherent device in [`CacheMode::Model`] writes RAM
    /// (the shadow) only, so the CPU keeps reading its stale view until it invalidates. A
    /// coherent device's write reaches both RAM and the CPU view (snooping invalidates the CPU's
    /// copy). In [`CacheMode::Native`] every device write lands in the CPU view.
    ///
    /// # Errors
    /// As [`PhysMem::cpu_read`]; on error nothing was written.
    pub fn device_write(&self, addr: PhysAddr, data: &[u8], coherent: bool) -> Result<(), MmError> {
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
        Counters::add(&self.counters.device_bytes_written, data.len() as u64);
        Ok(())
    }
}
