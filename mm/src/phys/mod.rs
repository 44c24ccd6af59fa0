//! Physical memory of the simulated machine and the CPU caches in front of it: one layer.
//!
//! Owns:
//! - the RAM regions ([`MemoryMap`]) and the frame allocator over them ([`FrameAlloc`],
//!   [`Zone`]);
//! - allocated frames ([`Frames`]) and their backing memory: every allocation is one sealed
//!   memfd, so its bytes are real, can be read back with `pread`, and can later be shared as an
//!   fd (`backing.rs`);
//! - the frame table: for each allocated frame, which memfd and which page of it holds its bytes
//!   ([`PhysMem`], `mem.rs`);
//! - the two views of memory: the CPU view (the memfd bytes, as seen through the caches) and the
//!   device view, which for a non-coherent device in [`CacheMode::Model`] is the RAM shadow
//!   (`shadow.rs`) and otherwise the CPU view;
//! - cache maintenance on physical ranges: [`PhysMem::clean`], [`PhysMem::invalidate`],
//!   [`PhysMem::clean_invalidate`], as the CPU's own instructions ([`native`]) or as copies
//!   between the two views (`cache/`).
//!
//! Never does:
//! - produce a `DmaAddr`: turning physical addresses into bus addresses is the system DMA
//!   layer's job (`crate::dma`), and so is its state (swiotlb pools, IOVA spaces). A
//!   [`PhysMem`] only holds a slot for the DMA layer's per-machine state (`PhysMem::dma_state`),
//!   whose type is private to that layer;
//! - decide *when* to sync: it carries out the cache operations it is asked for, and the DMA
//!   layer decides which ones a mapping needs.

mod addr;
mod backing;
mod cache;
mod frame_alloc;
mod frames;
mod map;
mod mem;
mod shadow;
mod stats;

pub use addr::{pages_for, Pfn, PhysAddr, MAX_PHYS_ADDR, PAGE_SHIFT, PAGE_SIZE};
pub use cache::{lines_touched, native, CacheMode, LINE_SIZE};
pub use frame_alloc::{FrameAlloc, Zone};
pub use frames::{Frames, PhysSegment};
pub use map::{MemoryMap, RamRegion};
pub(crate) use mem::FreeObserver;
pub use mem::{PhysMem, DEFAULT_SEED};
pub use stats::PhysStats;

pub(crate) use mem::FrameView;
use mem::{Chunk, Tally};
