//! devmmu-mm: everything between a driver's buffer and the IOPTEs its device walks.
//!
//! The system side: physical memory and the CPU cache maintenance on it ([`phys`]), the system
//! DMA ops ([`dma`]). The device side: device VMs ([`vm`]) and the simulated device ([`model`])
//! that the tests and the demo drive.

pub mod bo;
pub mod device;
mod error;
pub use error::MmError;
pub mod dma;
pub mod model;
pub mod phys;
pub mod share;
pub mod vm;
