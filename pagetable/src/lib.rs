#![no_std]
#![warn(missing_docs)]
//! devmmu-pagetable: device page tables (IOPTEs) for devices with their own MMU.
//!
//! - [`Format`]: what a format is; [`fmt::ipu::Ipu`] (Intel IPU3/IPU6 MMU),
//!   [`fmt::arm_lpae::ArmLpae4k`] (ARM LPAE stage 1, 4 KiB granule) and
//!   [`fmt::arm_lpae_16k_64k`]'s [`ArmLpae16k`] and [`ArmLpae64k`] (the 16 KiB and 64 KiB
//!   granules), [`fmt::arm_lpae_s2::ArmLpaeS2`] (ARM LPAE stage 2, 4 KiB granule) and
//!   [`fmt::arm_v7s::ArmV7s`] (ARMv7 short descriptors), [`fmt::apple_dart`]'s [`AppleDart1`]
//!   and [`AppleDart2`] (Apple DART, 16 KiB pages), [`fmt::riscv`]'s [`RiscvSv39`] and
//!   [`RiscvSv48`] (RISC-V IOMMU first stage), [`fmt::vtd_ss::VtdSs`] (Intel VT-d second
//!   stage) and [`fmt::amd_v1::AmdV1`] (AMD IOMMU v1) are bit-exact with the hardware.
//! - [`PageTable`]: map (one range or a scatter-gather list), unmap, translate, iterate; written
//!   once, monomorphised per format, for configurable [`AddressSizes`] (`ias`/`oas`).
//! - Hardware rules it keeps: `unmap` never cuts a block ([`Error::PartialBlock`], as
//!   io-pgtable-arm.c since Linux v6.13); [`PageTable::unmap_split`] splits one with
//!   break-before-make. Intel IPU tables emptied by unmap stay linked until teardown, as in
//!   ipu3-mmu.c and ipu6-mmu.c ([`PageTable::set_free_empty_tables`]).
//! - [`SharedPageTable`]: map and unmap of disjoint IOVA ranges from several threads at once
//!   on one table, without a table-wide lock (io-pgtable-arm.c's and generic_pt's scheme: a new
//!   table is installed with a compare-exchange, the loser frees its own; leaves of disjoint
//!   ranges never share an entry). Tables are freed only under `&mut self`
//!   ([`SharedPageTable::compact`]), so a caller breaking the disjointness promise gets wrong
//!   translations, never freed memory.
//! - Dirty tracking, for the formats whose hardware records writes in the leaves (ARM LPAE
//!   stage 1, all three granules: DBM, as io-pgtable-arm.c with `IO_PGTABLE_QUIRK_ARM_HD`;
//!   AMD v1 and VT-d second stage: the D bit, as generic_pt's amdv1.h and vtdss.h):
//!   [`PageTable::enable_dirty_tracking`] (coherent walkers only, before anything is mapped)
//!   maps writable leaves writable-clean; [`PageTable::read_and_clear_dirty`] reports the
//!   leaves the device wrote through and makes them clean again, gathering them for the TLB
//!   invalidation without which the device's next write would go unrecorded.
//! - [`Gather`]: the TLB ranges to invalidate (leaf ranges, and walk-cache ranges where a table
//!   was unlinked: [`Invalidation`]) and tables to free after an update; owned by the one
//!   table that filled it.
//! - [`walk`], [`walk_with`]: the hardware walker in software, reading tables by bus address.
//!
//! `no_std` + `alloc`: usable in a kernel or firmware. Table pages come from a [`TableAlloc`],
//! which also carries the cache-maintenance hook for non-coherent walkers.
//!
//! # Soundness: what safe code cannot do, and why
//!
//! No sequence of calls to the safe API can make the crate read or write memory it does not
//! own, given allocators that keep the promises of the `unsafe trait` [`TableAlloc`]. Every
//! `unsafe` of the crate, the invariant it relies on, and what enforces that invariant:
//!
//! | `unsafe` | relies on | enforced by |
//! |---|---|---|
//! | reads and stores of entries in table pages (`PageTable`'s `read`, `write`, `fill`, `store_leaves`, `clear_leaves`) | the page is live (allocated, not freed) and the entries touched are inside it | pages are freed only when unlinked (through a [`Gather`] after the invalidation, on an error path before they were linked, or at drop); entry indices come from the format's geometry computed at compile time, `index < entries` by masking, and `entries * size_of::<Pte>()` at most the table memory of the level (one [`TABLE_SIZE`] page, or a large table of exactly that size from [`TableAlloc::alloc_large_table`], at most [`MAX_TABLE_SIZE`]) is a compile-time check of every format a `PageTable` is made with (a format breaking it does not compile, see below) |
//! | reading table memory as `F::Pte` | every bit pattern is a valid `Pte`, and memory from `alloc_table_for_overwrite` is stored before it is read | [`PteWord`] is sealed (only `u32`, `u64`); such a page is taken only for a last-level table the map covers whole, and the last level always holds leaves (compile-time check), so the store loop writes every entry before the table is linked |
//! | atomic loads and read-modify-writes of entries by [`PageTable::read_and_clear_dirty`] (`AtomicU64`/`AtomicU32::from_ptr` on the entry) | the entry is inside a live table page, aligned for the atomic type, and every access racing with it is atomic | the index comes from the format's geometry as for the plain reads and stores; table pages are aligned to their size and entries are sealed `u32`/`u64` at multiples of their size; the only concurrent writer is the device's MMU (hardware dirty-state update, atomic in hardware and in the model), the CPU side writes only through `&mut self` |
//! | large tables ([`TableAlloc::alloc_large_table`]) | a table is as large as its level's entries | the `unsafe trait`'s contract for the size; the page table asks exactly for the size of the level's entries (a compile-time constant) and checks the returned bus address's alignment |
//! | `TableAlloc::free_table` | the page came from this allocator, unchanged, and is not used afterwards | `PageTable` keeps each `TablePage` as the allocator returned it and frees it once; a [`Gather`] holding one table's pages is refused by every other table ([`Error::ForeignGather`]); the allocator cannot be replaced under a live table (`PageTable::table_alloc_mut` is `unsafe`) |
//! | [`HeapTableAlloc`]'s heap calls | the layout and the pages' provenance | pages are `TABLE_SIZE`-aligned slices of chunks from `alloc` or `alloc_zeroed` whose layout (`pages * TABLE_SIZE`, aligned to `TABLE_SIZE`) is recorded with the chunk; a chunk returns to `dealloc` with that layout only when all its pages are back on the free list; large tables come from `alloc_zeroed` and return to `dealloc` with their own layout |
//! | [`SharedPageTable`]'s atomic loads, stores and compare-exchanges of entries | the table is live and the entry inside it; no non-atomic access to it races with them | a table reached under `&self` stays live: tables are freed only with exclusive access ([`SharedPageTable::compact`] takes `&mut self` and puts the unlinked pages on a gather, freed by `iotlb_sync` after the walk invalidation; drop); indices are masked by the format's geometry; while the table is shared every access to table memory is one atomic access of the entry's width, aligned to it (table pages are page-aligned) |
//! | [`SharedPageTable`]'s plain stores into a leaf table it builds whole | no other thread and no walker can reach the table yet | the table is linked only by the compare-exchange that follows the stores (and its cleaning); a lost compare-exchange frees it unlinked |
//! | [`SharedPageTable`]'s child pointers (`Box::into_raw`, dereference, `Box::from_raw`) | each pointer is dereferenced only while its table is live, and freed once | a pointer is published (Release) only after its entry is installed, read with Acquire, and freed only under `&mut self` (compact, drop) after its slot is cleared |
//! | `Send`/`Sync` for [`TablePage`] | a `TablePage` is a description: no access without `unsafe` | its fields are plain values; the page table is `Send`/`Sync` only as far as its allocator is |
//!
//! A format whose geometry would let an index leave its table page does not compile:
//!
//! ```compile_fail,E0080
//! use devmmu_pagetable::*;
//! #[derive(Clone, Copy, Default)]
//! struct Huge; // 16384 entries of 8 bytes: a 128 KiB table, beyond MAX_TABLE_SIZE (64 KiB)
//! impl Format for Huge {
//!     type Pte = u64;
//!     const NAME: &'static str = "huge";
//!     const LEVELS: usize = 1;
//!     const GRANULE_SHIFT: u32 = 12;
//!     const LEVEL_BITS: &'static [u32] = &[14];
//!     const LEAF_LEVELS: &'static [bool] = &[true];
//!     const IOVA_BITS: u32 = 26;
//!     const OA_BITS: u32 = 48;
//!     const EMPTY_IS_ZERO: bool = true;
//!     const TLB_CACHES_EMPTY: bool = false;
//!     fn leaf_attrs(_: usize, _: Prot) -> u64 { 1 }
//!     fn leaf_with_addr(a: u64, d: DmaAddr) -> u64 { a | d.0 }
//!     fn table_entry(_: usize, t: DmaAddr) -> u64 { t.0 | 3 }
//!     fn decode(_: usize, _: u64) -> Entry { Entry::Invalid }
//!     fn is_table(_: usize, _: u64) -> bool { false }
//! }
//! let _ = PageTable::<Huge, _>::new(HeapTableAlloc::new(), PageTableConfig::default());
//! ```
//!
//! Nor does an entry word other than `u32`/`u64` (a `bool` read from table memory would be
//! undefined behaviour):
//!
//! ```compile_fail,E0277
//! use devmmu_pagetable::PteWord;
//! #[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
//! struct Flag(bool);
//! impl PteWord for Flag {
//!     const BYTES: usize = 1;
//!     fn to_u64(self) -> u64 { self.0 as u64 }
//!     fn from_u64(v: u64) -> Self { Flag(v != 0) }
//! }
//! ```
//!
//! Nor does replacing a live table's allocator from safe code:
//!
//! ```compile_fail,E0133
//! use devmmu_pagetable::*;
//! let mut pt =
//!     PageTable::<ArmLpae4k, _>::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap();
//! let old = core::mem::replace(pt.table_alloc_mut(), HeapTableAlloc::new());
//! ```
//!
//! And a gather filled by one table is refused by another, at run time (one compare per call):
//!
//! ```
//! use devmmu_pagetable::*;
//! let new = || {
//!     PageTable::<ArmLpae4k, _>::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap()
//! };
//! let (mut a, mut b) = (new(), new());
//! let mut g = Gather::new();
//! a.map(Iova(0x20_0000), DmaAddr(0x4000_0000), 0x1000, Prot::RW, &mut g).unwrap();
//! a.unmap(Iova(0x20_0000), 0x1000, &mut g).unwrap();
//! assert_eq!(g.tables_to_free(), 3); // a's L1, L2 and L3 tables, emptied
//! assert_eq!(b.try_iotlb_sync(&mut g, |_, _| {}), Err(Error::ForeignGather));
//! assert_eq!(b.unmap(Iova(0), 0x1000, &mut g), Err(Error::ForeignGather));
//! assert_eq!(g.tables_to_free(), 3); // untouched, for `a`
//! a.iotlb_sync(&mut g, |_, _| {});
//! assert!(g.is_empty());
//! b.unmap(Iova(0), 0x1000, &mut g).unwrap(); // completed: any table may use it again
//! ```

extern crate alloc;

mod addr;
mod alloc_table;
mod atomic_pte;
mod error;
pub mod fmt;
mod format;
mod gather;
mod prot;
pub mod shared;
mod sizes;
mod stats;
mod table;
mod walk;

pub use addr::{DmaAddr, Iova};
pub use alloc_table::{HeapTableAlloc, TableAlloc, TablePage, MAX_TABLE_SIZE, TABLE_SIZE};
pub use error::Error;
pub use fmt::amd_v1::AmdV1;
pub use fmt::apple_dart::{AppleDart1, AppleDart2};
pub use fmt::arm_lpae::ArmLpae4k;
pub use fmt::arm_lpae_16k_64k::{ArmLpae16k, ArmLpae64k};
pub use fmt::arm_lpae_s2::ArmLpaeS2;
pub use fmt::arm_v7s::ArmV7s;
pub use fmt::ipu::Ipu;
pub use fmt::riscv::{RiscvSv39, RiscvSv48};
pub use fmt::vtd_ss::VtdSs;
pub use format::{Entry, Format, PteWord, MAX_LEVELS};
pub use gather::{Gather, Invalidation};
pub use prot::Prot;
pub use shared::{SharedPageTable, SharedStats};
pub use sizes::AddressSizes;
pub use stats::Stats;
pub use table::{Mapping, Mappings, PageTable, PageTableConfig};
pub use walk::{walk, walk_with, TableReader, Translation, WalkFault};
