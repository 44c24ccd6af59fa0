//! The types most drivers need, in one import:
//!
//! ```
//! use devmmu_mm::prelude::*;
//! ```
//!
//! - Buffer objects: [`Bo`], [`BoFlags`], [`Caching`], [`CpuAccess`], [`BoAttachment`],
//!   [`ExportOptions`], [`FdKind`] (from [`crate::bo`]).
//! - The device: [`Device`], [`DeviceConfig`], [`DeviceTlb`], [`MmuFormat`],
//!   [`TlbInvalidation`] (from [`crate::device`]).
//! - System DMA: [`DmaOps`], [`DmaDirection`], [`DmaMask`], [`Platform`], [`DmaSegment`],
//!   [`SgTable`] (from [`crate::dma`]).
//! - Device VMs: [`Vm`], [`Placement`], [`BindingInfo`], [`VA_START`] (from [`crate::vm`]).
//! - Physical memory: [`PhysMem`], [`MemoryMap`], [`CacheMode`], [`PhysAddr`], [`PAGE_SIZE`]
//!   (from [`crate::phys`]).
//! - Addresses and permissions of device page tables: [`Iova`], [`DmaAddr`], [`Prot`] (from
//!   devmmu-pagetable, so a driver needs no direct dependency on it).
//! - The error type, [`MmError`].
//!
//! The simulated device ([`crate::model`]) is not in it: it stands in for hardware, not for
//! driver code.

pub use crate::bo::{Bo, BoAttachment, BoFlags, Caching, CpuAccess, ExportOptions, FdKind};
pub use crate::device::{Device, DeviceConfig, DeviceTlb, MmuFormat, TlbInvalidation};
pub use crate::dma::{DmaDirection, DmaMask, DmaOps, DmaSegment, Platform, SgTable};
pub use crate::phys::{CacheMode, MemoryMap, PhysAddr, PhysMem, PAGE_SIZE};
pub use crate::vm::{BindingInfo, Placement, Vm, VA_START};
pub use crate::MmError;
pub use crate::{DmaAddr, Iova, Prot};
