//! devmmu-uapi: the stable interface of devmmu for drivers and tools in other languages, shaped
//! like a DRM driver's uapi (include/uapi/drm/panthor_drm.h, xe_drm.h, msm_drm.h).
//!
//! - [`abi`]: the request numbers and `#[repr(C)]` argument structs (what `devmmu.h` holds);
//! - [`capi`]: the C functions `devmmu_open`, `devmmu_ioctl`, `devmmu_mmap`, `devmmu_munmap`,
//!   `devmmu_close`;
//! - [`File`]: one open (a DRM file: its handles, VMs, mmap offsets), with a typed Rust method per
//!   request, and [`File::ioctl`], the dispatcher the C ABI calls;
//! - [`Machine`]: the simulated machine files open onto;
//! - [`user`]: how the caller's memory is read and written, and the one promise the caller makes;
//! - [`errno`]: the one mapping from [`devmmu_mm::MmError`] to `-errno`.
//!
//! The header `uapi/include/devmmu.h` is generated from this crate by cbindgen (a test checks the
//! committed one is current); docs/uapi.md describes every request with its layout, semantics,
//! errors and a C example.
//!
//! ```
//! use devmmu_uapi::abi::*;
//! use devmmu_uapi::{File, Machine};
//! use devmmu_mm::prelude::MemoryMap;
//!
//! let machine = Machine::new(MemoryMap::default()).unwrap();
//! let file = File::open(&machine, DEVMMU_DEVICE_GPU, 0).unwrap();
//! let mut create = DevmmuBoCreate { size: 4096, ..Default::default() };
//! // SAFETY: `create` is a live, aligned struct of the size the request number declares.
//! unsafe { file.ioctl(DEVMMU_IOCTL_BO_CREATE, &mut create as *mut _ as u64) }.unwrap();
//! assert_eq!(create.handle, 1);
//! ```

#![warn(missing_docs)]

pub mod abi;
mod bind;
pub mod capi;
pub mod dispatch;
pub mod errno;
mod file;
pub mod ioc;
mod machine;
mod mmap;
pub mod sequence;
pub mod user;

pub use dispatch::Request;
pub use file::{File, FileSummary, HandleSummary, MAX_HANDLES, MAX_VMS, MMAP_OFFSET_START};
pub use machine::{Machine, MachineDevice};
pub use rustix::io::Errno;
