//! devmmu-mm: everything between a driver's buffer and the IOPTEs its device walks.
//!
//! The system side: physical memory and the CPU cache maintenance on it ([`phys`]), the system
//! DMA ops ([`dma`]). The device side: device VMs ([`vm`]) and the simulated device ([`model`])
//! that the tests and the demo drive. Below both: the drm_mm-style range allocator ([`range`])
//! that hands out the IOVAs of a system IOMMU domain and of a device VM alike.
//!
//! # Quick start
//!
//! A driver allocates a buffer object ([`bo::Bo`]), binds it into a device VM ([`vm::Vm`]),
//! lets the device write it, then reads it on the CPU inside a CPU access bracket, which does
//! the cache maintenance a non-coherent device needs. Here the device is the simulated one of
//! [`model`]; sizes, offsets and lengths are in bytes throughout.
//!
//! ```rust
//! use devmmu_mm::model::{SimConfig, SimDevice, SimMmu};
//! use devmmu_mm::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // RAM as the default memory map lays it out; `Model` keeps the CPU caches apart from RAM,
//! // so a missing cache maintenance shows.
//! let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model)?;
//!
//! // The hardware: an MMU (TLB and table walker, not cache-coherent) whose TLB the driver
//! // invalidates, on a GPU-style device with an ARM LPAE page table and a 48-bit DMA mask.
//! let mmu = SimMmu::new(SimConfig::default());
//! let config = DeviceConfig::arm_lpae("gpu", DmaMask::bits(48), false);
//! let device = Device::attach(&phys, config, &Platform::default(), mmu.clone())?;
//! let sim = SimDevice::new(device.clone(), mmu);
//!
//! // A 64 KiB BO (a multiple of PAGE_SIZE, 4096 bytes), bound anywhere in a new device VM.
//! let bo = Bo::new(&phys, 16 * PAGE_SIZE, BoFlags::default())?;
//! let vm = Vm::new(&device)?;
//! let iova = vm.bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)?;
//!
//! // The device writes through its MMU ...
//! let msg = b"written by the device";
//! sim.dma_write(&vm, iova, msg)?;
//!
//! // ... and the CPU reads inside a READ bracket, which makes the device's write visible.
//! let cpu = bo.begin_cpu_access(CpuAccess::READ)?;
//! let mut buf = vec![0u8; msg.len()];
//! cpu.read(0, &mut buf)?;
//! cpu.end()?;
//! assert_eq!(buf, msg);
//! # Ok(())
//! # }
//! ```
//!
//! [`prelude`] holds the common types. The crate's `examples/` folder has whole drivers that
//! check what they do: `minimal_driver` (this, both ways, with DMA-API debugging on) and
//! `share_bo` (export as an fd and import back, one BO in two VMs of a device). Run one with
//! `cargo run -p devmmu-mm --example minimal_driver`.

pub mod bo;
pub mod device;
mod error;
/// The address and permission types of device page tables, re-exported from devmmu-pagetable so
/// a driver needs no direct dependency on it.
pub use devmmu_pagetable::{DmaAddr, Iova, Prot};
pub use error::{AddressSpace, MmError};
pub mod dma;
pub mod fence;
pub mod model;
pub mod phys;
pub mod prelude;
pub mod range;
pub mod share;
pub mod vfio;
pub mod vm;
