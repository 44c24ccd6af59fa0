//! The swiotlb bounce pool of a direct-DMA device (kernel/dma/swiotlb.c).
//!
//! Owns one physically contiguous run of frames below the device's DMA mask, cut into 2 KiB
//! slots (`IO_TLB_SIZE`), and which slots are taken. A bounce buffer is a run of contiguous
//! slots inside one segment of 128 slots (`IO_TLB_SEGSIZE`), so the largest is 256 KiB; buffers of
//! a page or more start on a page boundary, as `swiotlb_search_pool_area` requires. It never
//! copies bytes or touches caches: the streaming code does that, since it knows the direction.
//!
//! Like the kernel's default pool (`io_tlb_default_mem`), one pool serves every direct-DMA device
//! of a machine: [`Swiotlb::shared`] hands out the pool already allocated on the same
//! [`PhysMem`] with the same size if it lies below the new device's reach, and allocates one
//! otherwise (a device with a smaller mask then gets its own, as with a restricted DMA pool).
//!
//! The registry of a machine's live pools ([`SwiotlbPools`]) is DMA-layer state, so its type is
//! private to this file. It has to be found again from the `PhysMem` alone (that is all
//! [`DmaOps::attach`](super::DmaOps::attach) gets besides a `Platform`), so it is kept in the
//! opaque slot a `PhysMem` holds for the DMA layer ([`PhysMem::dma_state`]), created there on
//! first use. That way the registry lives and dies with its machine, two machines never share
//! one (tests build many side by side), and the phys layer stores it without knowing its type.
//! Not chosen: a process-wide registry keyed by `PhysMem` identity (an earlier version; it
//! outlives the machines and ties unrelated ones to one lock), and a registry the caller passes
//! (in `Platform` or as an argument of `attach`): that changes the public API, and sharing would
//! then depend on every caller passing the same registry, where today two direct devices of one
//! `PhysMem` share a pool whatever `Platform` each was attached with.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::machine::DmaMachine;
use super::types::DmaOwner;
use crate::phys::{FrameAlloc, Frames, PhysAddr, PhysMem, Zone, PAGE_SIZE};
use crate::MmError;

/// log2 of the slot size (`IO_TLB_SHIFT`).
pub const IO_TLB_SHIFT: u32 = 11;
/// Size of one slot in bytes (`IO_TLB_SIZE`): 2 KiB.
pub const IO_TLB_SIZE: u64 = 1 << IO_TLB_SHIFT;
/// Slots per segment (`IO_TLB_SEGSIZE`): no bounce buffer crosses a segment boundary.
pub const IO_TLB_SEGSIZE: u64 = 128;
/// The largest bounce buffer, in bytes: one segment (256 KiB), what
/// `swiotlb_max_mapping_size()` reports.
pub const MAX_BOUNCE_BYTES: u64 = IO_TLB_SIZE * IO_TLB_SEGSIZE;

#[derive(Debug)]
struct Slots {
    used: Vec<bool>,
    in_use: u64,
    /// Where the next search starts (the kernel's rotating `index`), so freed slots are not
    /// reused at once and a stale device access hits an idle slot rather than a new buffer.
    hint: usize,
}

/// The live swiotlb pools of one machine, shared by the direct-DMA devices that can use them, as
/// the kernel's default `io_tlb_mem` is one per system (kernel/dma/swiotlb.c). Weak: a pool
/// lives as long as a device holds it. Part of the machine's [`DmaMachine`].
#[derive(Debug, Default)]
pub(crate) struct SwiotlbPools {
    live: Mutex<Vec<Weak<Swiotlb>>>,
}

/// A swiotlb pool.
#[derive(Debug)]
pub(crate) struct Swiotlb {
    /// Held for the pool's lifetime: dropping it returns the frames.
    frames: Frames,
    base: PhysAddr,
    bytes: u64,
    slots: Mutex<Slots>,
}

impl Drop for Swiotlb {
    fn drop(&mut self) {
        // Before `frames` returns the memory: it is no longer the DMA layer's.
        let phys = self.frames.phys();
        DmaMachine::of(phys).disown(phys, self.base);
    }
}

impl Swiotlb {
    /// The pool of `bytes` (rounded up to pages) on `phys` lying below `limit`: an existing one
    /// if a live pool of that size on that machine qualifies, else a new one.
    ///
    /// # Errors
    /// As [`Swiotlb::new`].
    pub(crate) fn shared(
        phys: &Arc<PhysMem>,
        bytes: u64,
        limit: PhysAddr,
    ) -> Result<Arc<Swiotlb>, MmError> {
        let mut pools = DmaMachine::of(phys).swiotlb.live.lock();
        pools.retain(|s| s.strong_count() > 0);
        let want = crate::phys::pages_for(bytes).map(|p| p * PAGE_SIZE);
        for s in pools.iter() {
            let Some(s) = s.upgrade() else {
                continue;
            };
            if Some(s.bytes) == want && s.base + s.bytes <= limit {
                return Ok(s);
            }
        }
        let pool = Arc::new(Swiotlb::new(phys, bytes, limit)?);
        pools.push(Arc::downgrade(&pool));
        Ok(pool)
    }

    /// A pool of `bytes` (rounded up to whole pages) of contiguous frames entirely below
    /// `limit` (physical).
    pub(crate) fn new(
        phys: &Arc<PhysMem>,
        bytes: u64,
        limit: PhysAddr,
    ) -> Result<Swiotlb, MmError> {
        if bytes == 0 {
            return Err(MmError::ZeroSize);
        }
        // A size whose page count does not fit in bytes is more than any machine has.
        let pages = crate::phys::pages_for(bytes).ok_or(MmError::NoMemory {
            pages: bytes.div_ceil(PAGE_SIZE),
            contiguous: true,
            zone: Zone::Below(limit),
        })?;
        let frames = phys.alloc_frames(pages, FrameAlloc::contiguous().below(limit))?;
        let base = frames.pages()[0];
        DmaMachine::of(phys).own(phys, base, pages * PAGE_SIZE, DmaOwner::SwiotlbPool);
        let bytes = pages * PAGE_SIZE;
        let n = (bytes / IO_TLB_SIZE) as usize;
        Ok(Swiotlb {
            frames,
            base,
            bytes,
            slots: Mutex::new(Slots {
                used: vec![false; n],
                in_use: 0,
                hint: 0,
            }),
        })
    }

    /// First byte and size in bytes of the pool.
    pub(crate) fn range(&self) -> (PhysAddr, u64) {
        (self.base, self.bytes)
    }

    /// Slots currently taken.
    pub(crate) fn slots_in_use(&self) -> u64 {
        self.slots.lock().in_use
    }

    fn slots_for(len: u64) -> u64 {
        len.div_ceil(IO_TLB_SIZE)
    }

    /// Takes the slots for a bounce buffer of `len` bytes (`0 < len`) and returns its first byte
    /// and the number of slots taken.
    ///
    /// # Errors
    /// [`MmError::SwiotlbTooLarge`] above [`MAX_BOUNCE_BYTES`]; [`MmError::SwiotlbFull`] when no
    /// run of free slots fits.
    pub(crate) fn alloc(&self, len: u64) -> Result<(PhysAddr, u64), MmError> {
        if len > MAX_BOUNCE_BYTES {
            return Err(MmError::SwiotlbTooLarge {
                len,
                max: MAX_BOUNCE_BYTES,
            });
        }
        let need = Self::slots_for(len.max(1)) as usize;
        // Buffers of a page or more start on a page (two slots), so that a device's page-based
        // addressing sees the same layout as the original.
        let stride = if len >= PAGE_SIZE {
            (PAGE_SIZE / IO_TLB_SIZE) as usize
        } else {
            1
        };
        let mut s = self.slots.lock();
        let n = s.used.len();
        let seg = IO_TLB_SEGSIZE as usize;
        let start_at = s.hint - s.hint % stride;
        let mut tried = 0;
        let mut i = start_at;
        while tried < n {
            if i + need <= n
                && i / seg == (i + need - 1) / seg
                && s.used[i..i + need].iter().all(|u| !u)
            {
                s.used[i..i + need].iter_mut().for_each(|u| *u = true);
                s.in_use += need as u64;
                s.hint = (i + need) % n;
                return Ok((self.base + i as u64 * IO_TLB_SIZE, need as u64));
            }
            i += stride;
            tried += stride;
            if i >= n {
                i = 0;
            }
        }
        Err(MmError::SwiotlbFull {
            len,
            slots_needed: need as u64,
            slots_free: n as u64 - s.in_use,
        })
    }

    /// Returns the slots of the bounce buffer at `addr` of `len` bytes (as allocated).
    pub(crate) fn free(&self, addr: PhysAddr, len: u64) {
        let first = ((addr - self.base) / IO_TLB_SIZE) as usize;
        let need = Self::slots_for(len.max(1)) as usize;
        let mut s = self.slots.lock();
        let end = (first + need).min(s.used.len());
        let mut freed = 0;
        for u in &mut s.used[first..end] {
            if *u {
                *u = false;
                freed += 1;
            }
        }
        s.in_use -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::{CacheMode, MemoryMap};

    #[test]
    fn slots_respect_page_alignment_and_segment_boundaries() {
        let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
        let pool = Swiotlb::new(&phys, 1 << 20, PhysAddr(1 << 32)).unwrap();
        let (base, size) = pool.range();
        assert_eq!(size, 1 << 20);
        assert!(base.0 + size <= 1 << 32);
        // A sub-page buffer takes one slot, anywhere.
        let (a, n) = pool.alloc(100).unwrap();
        assert_eq!((a, n), (base, 1));
        // 127 slots (>= a page) start on a page: slot 2; 2..129 would cross the segment
        // boundary at slot 128, so the buffer goes to slot 128.
        let (b, n) = pool.alloc(127 * IO_TLB_SIZE).unwrap();
        assert_eq!(n, 127);
        assert_eq!(b.0, base.0 + 128 * IO_TLB_SIZE);
        // A page-sized buffer after the small one: next page boundary, slot 2.
        let (c, n) = pool.alloc(PAGE_SIZE).unwrap();
        assert_eq!(n, 2);
        assert_eq!(c.0 % PAGE_SIZE, 0);
        assert_eq!(pool.slots_in_use(), 130);
        pool.free(b, 127 * IO_TLB_SIZE);
        pool.free(a, 100);
        pool.free(c, PAGE_SIZE);
        assert_eq!(pool.slots_in_use(), 0);
        assert_eq!(
            pool.alloc(MAX_BOUNCE_BYTES + 1).unwrap_err(),
            MmError::SwiotlbTooLarge {
                len: MAX_BOUNCE_BYTES + 1,
                max: MAX_BOUNCE_BYTES
            }
        );
    }
}
