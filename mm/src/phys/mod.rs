//! Physical memory of the simulated machine.
//!
//! Owns the RAM layout ([`MemoryMap`]), the frame allocator, and the backing memory of allocated
//! frames: every allocation is one sealed memfd, so its bytes are real, can be read back with
//! `pread`, and can later be shared as an fd. It hands out frames and moves bytes between the CPU
//! view and (for non-coherent devices in [`CacheMode::Model`](crate::cache::CacheMode)) the RAM
//! view; it never produces a `DmaAddr`: turning physical addresses into bus addresses is the
//! system DMA layer's job.

mod addr;
mod backing;
mod frame_alloc;
mod frames;
mod map;
mod mem;
mod stats;

pub use addr::{pages_for, Pfn, PhysAddr, MAX_PHYS_ADDR, PAGE_SHIFT, PAGE_SIZE};
pub use frame_alloc::{FrameAlloc, Zone};
pub use frames::{Frames, PhysSegment};
pub use map::{MemoryMap, RamRegion};
pub use mem::{PhysMem, DEFAULT_SEED};
pub use stats::PhysStats;

pub(crate) use mem::{Chunk, FrameView, Tally};
