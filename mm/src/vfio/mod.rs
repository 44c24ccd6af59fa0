//! VFIO (Documentation/driver-api/vfio.rst; include/uapi/linux/vfio.h): a real PCI device driven
//! from user space behind the real system IOMMU, through the type1 IOMMU backend.
//!
//! Owns the three VFIO file descriptors and the ioctls on them: the [`VfioContainer`] (one IOMMU
//! address space: `VFIO_SET_IOMMU`, `VFIO_IOMMU_GET_INFO` with its IOVA-range capability,
//! `VFIO_IOMMU_MAP_DMA` / `UNMAP_DMA`), the group it holds (`/dev/vfio/N`, which must be viable:
//! every device of the group bound to vfio-pci) and the [`VfioDevice`] (its regions: BARs and
//! PCI config space, read and written with `pread`/`pwrite` at the region's offset).
//!
//! It never chooses an IOVA: the DMA ops' VFIO backend ([`crate::dma::DmaOps`], kind
//! [`DmaOpsKind::Vfio`](crate::dma::DmaOpsKind::Vfio)) allocates them from its range allocator
//! inside the ranges [`VfioContainer::iova_ranges`] reports, then maps them here.
//!
//! The structs and constants are rust-vmm's `vfio-bindings` (generated from the kernel's
//! vfio.h). Its companion `vfio-ioctls` is not used: its region accessors swallow errors (they
//! only log), it does not expose the IOVA-range capability, and it brings in vm-memory's guest
//! memory model, which devmmu does not have. Every failing ioctl is returned as
//! [`MmError::Os`] whose `op` names it, e.g. `"ioctl(VFIO_IOMMU_MAP_DMA)"`.

mod device;
mod ioctl;

pub use device::{VfioDevice, VfioRegion};

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use vfio_bindings::bindings::vfio as b;

use crate::MmError;
use ioctl::{vfio_ioctl, Arg};

/// The container path (`/dev/vfio/vfio`).
pub const VFIO_CONTAINER_PATH: &str = "/dev/vfio/vfio";

/// Where sysfs lists PCI devices by address (`DDDD:BB:DD.F`).
const PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// A VFIO container with one group attached and the type1v2 IOMMU set: one IOVA space of the
/// real system IOMMU, shared by the devices of that group.
///
/// Mappings made with [`VfioContainer::map_dma`] pin the CPU pages and stay until unmapped or
/// until the container is dropped (closing it tears the IOMMU domain down).
#[derive(Debug)]
pub struct VfioContainer {
    container: OwnedFd,
    /// Held open for the container's life: closing the group fd detaches it from the container.
    _group: OwnedFd,
    group_id: u32,
    /// Usable IOVA ranges `[start, end]` (inclusive, bytes), as the kernel reports them.
    iova_ranges: Vec<(u64, u64)>,
    /// Page sizes the IOMMU can map (bit n set: 2^n bytes).
    iova_pgsizes: u64,
}

impl VfioContainer {
    /// Opens the VFIO group of PCI device `bdf` (e.g. `"0000:00:09.0"`, which must be bound to
    /// vfio-pci), attaches it to a new container with the type1v2 IOMMU, and opens the device.
    ///
    /// # Errors
    /// - [`MmError::VfioNoGroup`]: sysfs has no IOMMU group for `bdf` (no such device, or no
    ///   IOMMU: boot with `intel_iommu=on` and an IOMMU the platform has).
    /// - [`MmError::VfioGroupNotViable`]: some device of the group is not bound to vfio-pci.
    /// - [`MmError::VfioUnsupported`]: the container's API version is not
    ///   `VFIO_API_VERSION`, or it has no type1v2 IOMMU.
    /// - [`MmError::Os`] naming the call that failed: `open(/dev/vfio/...)` (no vfio module,
    ///   no permission) or one of the ioctls `VFIO_GROUP_GET_STATUS`,
    ///   `VFIO_GROUP_SET_CONTAINER`, `VFIO_SET_IOMMU`, `VFIO_IOMMU_GET_INFO`,
    ///   `VFIO_GROUP_GET_DEVICE_FD`, `VFIO_DEVICE_GET_INFO`, `VFIO_DEVICE_GET_REGION_INFO`.
    pub fn open_pci(bdf: &str) -> Result<(Arc<VfioContainer>, VfioDevice), MmError> {
        let group_id = iommu_group_of(bdf)?;
        let container = open_rw(VFIO_CONTAINER_PATH, "open(/dev/vfio/vfio)")?;
        // SAFETY (every `vfio_ioctl` below): the opcode and the argument match vfio.h, see
        // `ioctl.rs`; pointers are to locals that live across the call.
        let version = unsafe { vfio_ioctl(container.as_fd(), 0, Arg::None) }
            .map_err(os("ioctl(VFIO_GET_API_VERSION)"))?;
        if version != b::VFIO_API_VERSION as i32 {
            return Err(MmError::VfioUnsupported {
                what: "a VFIO API version other than 0",
            });
        }
        let has_v2 = unsafe {
            vfio_ioctl(
                container.as_fd(),
                1,
                Arg::Int(b::VFIO_TYPE1v2_IOMMU as usize),
            )
        }
        .map_err(os("ioctl(VFIO_CHECK_EXTENSION)"))?;
        if has_v2 != 1 {
            return Err(MmError::VfioUnsupported {
                what: "a container without the type1v2 IOMMU",
            });
        }
        let group_path = format!("/dev/vfio/{group_id}");
        let group = open_rw(&group_path, "open(/dev/vfio/GROUP)")?;
        let mut status = b::vfio_group_status {
            argsz: size_of::<b::vfio_group_status>() as u32,
            flags: 0,
        };
        unsafe { vfio_ioctl(group.as_fd(), 3, Arg::ptr(&mut status)) }
            .map_err(os("ioctl(VFIO_GROUP_GET_STATUS)"))?;
        if status.flags & b::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(MmError::VfioGroupNotViable { group: group_id });
        }
        let mut cfd = std::os::fd::AsRawFd::as_raw_fd(&container);
        unsafe { vfio_ioctl(group.as_fd(), 4, Arg::ptr(&mut cfd)) }
            .map_err(os("ioctl(VFIO_GROUP_SET_CONTAINER)"))?;
        unsafe {
            vfio_ioctl(
                container.as_fd(),
                2,
                Arg::Int(b::VFIO_TYPE1v2_IOMMU as usize),
            )
        }
        .map_err(os("ioctl(VFIO_SET_IOMMU)"))?;
        let (iova_pgsizes, iova_ranges) = iommu_info(&container)?;
        let name = std::ffi::CString::new(bdf).map_err(|_| MmError::VfioNoGroup {
            device: bdf.to_string(),
        })?;
        let dev = unsafe { vfio_ioctl(group.as_fd(), 6, Arg::cstr(&name)) }
            .map_err(os("ioctl(VFIO_GROUP_GET_DEVICE_FD)"))?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD returned a new fd that only we own.
        let dev = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dev) };
        let device = VfioDevice::new(bdf, dev)?;
        let c = Arc::new(VfioContainer {
            container,
            _group: group,
            group_id,
            iova_ranges,
            iova_pgsizes,
        });
        Ok((c, device))
    }

    /// The IOMMU group number (`/dev/vfio/N`).
    pub fn group_id(&self) -> u32 {
        self.group_id
    }

    /// The IOVA ranges the IOMMU accepts, `[start, end]` inclusive, in bytes
    /// (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`); the holes between them are the platform's
    /// reserved regions (on x86 the MSI window `0xfee00000..=0xfeefffff`).
    pub fn iova_ranges(&self) -> &[(u64, u64)] {
        &self.iova_ranges
    }

    /// The page sizes the IOMMU maps, as a bitmap (bit n: 2^n bytes).
    pub fn iova_pgsizes(&self) -> u64 {
        self.iova_pgsizes
    }

    /// `VFIO_IOMMU_MAP_DMA`: maps `size` bytes of this process's memory at `vaddr` at bus
    /// address `iova`, readable by the device, and writable if `write`. The kernel pins the
    /// pages. `iova`, `vaddr` and `size` must be multiples of the IOMMU page size (4 KiB).
    ///
    /// # Safety
    /// `[vaddr, vaddr + size)` must be a mapping of this process that stays mapped until
    /// [`VfioContainer::unmap_dma`] of the range (or the container's drop), and the device may
    /// read (and, with `write`, write) it at any time: the caller must only hand out memory
    /// whose CPU accesses are raw or volatile, as devmmu's physical memory is.
    ///
    /// # Errors
    /// [`MmError::Os`] with `op == "ioctl(VFIO_IOMMU_MAP_DMA)"`: `EEXIST` (the IOVA range
    /// overlaps a mapping), `EINVAL` (misaligned, outside the IOVA ranges), `ENOMEM` (the pin
    /// limit), `EFAULT` (`vaddr` not mapped).
    pub unsafe fn map_dma(
        &self,
        iova: u64,
        vaddr: *const u8,
        size: u64,
        write: bool,
    ) -> Result<(), MmError> {
        let mut flags = b::VFIO_DMA_MAP_FLAG_READ;
        if write {
            flags |= b::VFIO_DMA_MAP_FLAG_WRITE;
        }
        let mut map = b::vfio_iommu_type1_dma_map {
            argsz: size_of::<b::vfio_iommu_type1_dma_map>() as u32,
            flags,
            vaddr: vaddr as u64,
            iova,
            size,
        };
        // SAFETY: a `vfio_iommu_type1_dma_map` that lives across the call; what the mapping
        // means for the memory is the caller's contract.
        unsafe { vfio_ioctl(self.container.as_fd(), 13, Arg::ptr(&mut map)) }
            .map_err(os("ioctl(VFIO_IOMMU_MAP_DMA)"))?;
        Ok(())
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`, which must cover whole mappings made by
    /// [`VfioContainer::map_dma`] (type1v2 refuses to split one). Returns the bytes unmapped.
    ///
    /// # Errors
    /// [`MmError::Os`] with `op == "ioctl(VFIO_IOMMU_UNMAP_DMA)"` (`EINVAL`: the range splits
    /// a mapping or is misaligned).
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64, MmError> {
        let mut unmap = b::vfio_iommu_type1_dma_unmap {
            argsz: size_of::<b::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova,
            size,
            data: b::__IncompleteArrayField::new(),
        };
        // SAFETY: a `vfio_iommu_type1_dma_unmap` without a dirty bitmap (flags 0), live across
        // the call. Unmapping can only take access away from the device.
        unsafe { vfio_ioctl(self.container.as_fd(), 14, Arg::ptr(&mut unmap)) }
            .map_err(os("ioctl(VFIO_IOMMU_UNMAP_DMA)"))?;
        Ok(unmap.size)
    }
}

/// The IOMMU group of PCI device `bdf`, from sysfs's `iommu_group` link.
fn iommu_group_of(bdf: &str) -> Result<u32, MmError> {
    let no_group = || MmError::VfioNoGroup {
        device: bdf.to_string(),
    };
    if bdf.is_empty() || bdf.contains('/') {
        return Err(no_group());
    }
    let link: PathBuf = std::fs::read_link(Path::new(PCI_DEVICES).join(bdf).join("iommu_group"))
        .map_err(|_| no_group())?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(no_group)
}

fn open_rw(path: &str, op: &'static str) -> Result<OwnedFd, MmError> {
    rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(os(op))
}

fn os(op: &'static str) -> impl FnOnce(Errno) -> MmError {
    move |errno| MmError::Os { op, errno }
}

/// `VFIO_IOMMU_GET_INFO` with its capability chain: the page-size bitmap and the IOVA ranges
/// (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`, version 1). Asked twice, as the uapi says: first
/// with the bare struct, which makes the kernel report the `argsz` the capabilities need.
fn iommu_info(container: &OwnedFd) -> Result<(u64, Vec<(u64, u64)>), MmError> {
    const HDR: usize = size_of::<b::vfio_iommu_type1_info>();
    let mut argsz = HDR as u32;
    // u64 words, so the buffer is aligned for every struct of the chain.
    let mut buf: Vec<u64> = Vec::new();
    for _ in 0..2 {
        buf = vec![0u64; (argsz as usize).div_ceil(8)];
        let info = buf.as_mut_ptr().cast::<b::vfio_iommu_type1_info>();
        // SAFETY: `buf` holds at least `argsz >= HDR` bytes, 8-aligned; the kernel writes at
        // most `argsz` bytes, which we tell it.
        unsafe {
            (*info).argsz = argsz;
            vfio_ioctl(container.as_fd(), 12, Arg::Ptr(info.cast()))
        }
        .map_err(os("ioctl(VFIO_IOMMU_GET_INFO)"))?;
        // SAFETY: the kernel filled the header.
        let want = unsafe { (*info).argsz };
        if want <= argsz {
            break;
        }
        argsz = want;
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let bytes = &bytes[..(argsz as usize).min(bytes.len())];
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(o..o + 4)?.try_into().ok()?))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(bytes.get(o..o + 8)?.try_into().ok()?))
    };
    let bad = || MmError::VfioUnsupported {
        what: "a malformed VFIO_IOMMU_GET_INFO capability chain",
    };
    let flags = u32_at(4).ok_or_else(bad)?;
    let pgsizes = u64_at(8).ok_or_else(bad)?;
    let mut ranges = Vec::new();
    if flags & b::VFIO_IOMMU_INFO_CAPS != 0 {
        let mut off = u32_at(16).ok_or_else(bad)? as usize;
        let mut hops = 0;
        while off != 0 && hops < 64 {
            let id = u32_at(off).ok_or_else(bad)? & 0xffff;
            let next = u32_at(off + 4).ok_or_else(bad)? as usize;
            if id == b::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
                let n = u32_at(off + 8).ok_or_else(bad)? as usize;
                for i in 0..n {
                    let r = off + 16 + i * 16;
                    ranges.push((u64_at(r).ok_or_else(bad)?, u64_at(r + 8).ok_or_else(bad)?));
                }
            }
            off = next;
            hops += 1;
        }
    }
    if ranges.is_empty() {
        // Kernels before 5.4 have no IOVA-range capability: the whole space, minus nothing
        // known.
        ranges.push((0, u64::MAX));
    }
    Ok((pgsizes, ranges))
}
