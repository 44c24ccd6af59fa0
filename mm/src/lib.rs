//! devmmu-mm: everything between a driver's buffer and the IOPTEs its device walks.
//!
//! The system side: physical memory and the CPU cache maintenance on it ([`phys`]), the system
//! DMA ops ([`dma`]). The device side: device VMs ([`vm`]) and the simulated device ([`model`])
//! that the tests and the demo drive. Below both: the drm_mm-style range allocator ([`range`])
//! that hands out the IOVAs of a system IOMMU domain and of a device VM alike.

pub mod bo;
pub mod device;
mod error;
/// The address and permission types of device page tables, re-exported from devmmu-pagetable so
/// a driver needs no direct dependency on it.
pub use devmmu_pagetable::{DmaAddr, Iova, Prot};
pub use error::MmError;
pub mod dma;
pub mod model;
pub mod phys;
pub mod prelude;
pub mod range;
pub mod share;
pub mod vm;
