#![no_std]
#![warn(missing_docs)]
//! devmmu-pagetable: device page tables (IOPTEs) for devices with their own MMU.
//!
//! - [`Format`]: what a format is; [`fmt::ipu::Ipu`] (Intel IPU3/IPU6 MMU) and
//!   [`fmt::arm_lpae::ArmLpae4k`] (ARM LPAE stage 1, 4 KiB granule) are bit-exact with the
//!   hardware.
//! - [`PageTable`]: map (one range or a scatter-gather list), unmap, translate, iterate; written
//!   once, monomorphised per format.
//! - [`Gather`]: the TLB ranges to invalidate and tables to free after an update.
//! - [`walk`]: the hardware walker in software, reading tables by bus address.
//!
//! `no_std` + `alloc`: usable in a kernel or firmware. Table pages come from a [`TableAlloc`],
//! which also carries the cache-maintenance hook for non-coherent walkers.

extern crate alloc;

mod addr;
mod alloc_table;
mod error;
pub mod fmt;
mod format;
mod gather;
mod prot;
mod stats;
mod table;
mod walk;

pub use addr::{DmaAddr, Iova};
pub use alloc_table::{HeapTableAlloc, TableAlloc, TablePage, TABLE_SIZE};
pub use error::Error;
pub use fmt::arm_lpae::ArmLpae4k;
pub use fmt::ipu::Ipu;
pub use format::{Entry, Format, PteWord, MAX_LEVELS};
pub use gather::Gather;
pub use prot::Prot;
pub use stats::Stats;
pub use table::{Mapping, Mappings, PageTable, PageTableConfig};
pub use walk::{walk, TableReader, Translation, WalkFault};
