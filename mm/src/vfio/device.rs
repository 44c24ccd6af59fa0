//! A VFIO device: its regions (BARs, PCI config space) and how to read and write them.

use std::os::fd::{AsFd, OwnedFd};

use vfio_bindings::bindings::vfio as b;

use super::ioctl::{vfio_ioctl, Arg};
use super::os;
use crate::MmError;

/// One region of a [`VfioDevice`] (`VFIO_DEVICE_GET_REGION_INFO`): where it sits in the device
/// fd and what it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfioRegion {
    /// Region index (`VFIO_PCI_BAR0_REGION_INDEX` = 0 ... `VFIO_PCI_CONFIG_REGION_INDEX` = 7).
    pub index: u32,
    /// Size in bytes (0: the device has no such region).
    pub size: u64,
    /// Offset of the region in the device fd, in bytes.
    pub offset: u64,
    /// `VFIO_REGION_INFO_FLAG_*` bits (1 read, 2 write, 4 mmap).
    pub flags: u32,
}

/// A device opened through its VFIO group ([`VfioContainer::open_pci`](super::VfioContainer::open_pci)).
/// Region accesses are `pread`/`pwrite` on the device fd, which vfio-pci turns into MMIO or
/// config-space accesses of the exact width asked for (1, 2, 4 or 8 bytes).
#[derive(Debug)]
pub struct VfioDevice {
    name: String,
    fd: OwnedFd,
    regions: Vec<VfioRegion>,
}

/// The PCI command register (offset 4 of config space) and its bus-master enable bit.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 0x2;
const PCI_COMMAND_MASTER: u16 = 0x4;

impl VfioDevice {
    pub(super) fn new(name: &str, fd: OwnedFd) -> Result<VfioDevice, MmError> {
        let mut info = b::vfio_device_info {
            argsz: size_of::<b::vfio_device_info>() as u32,
            ..Default::default()
        };
        // SAFETY: a `vfio_device_info` live across the call.
        unsafe { vfio_ioctl(fd.as_fd(), 7, Arg::ptr(&mut info)) }
            .map_err(os("ioctl(VFIO_DEVICE_GET_INFO)"))?;
        let mut regions = Vec::new();
        for index in 0..info.num_regions.min(b::VFIO_PCI_NUM_REGIONS) {
            let mut r = b::vfio_region_info {
                argsz: size_of::<b::vfio_region_info>() as u32,
                index,
                ..Default::default()
            };
            // SAFETY: a `vfio_region_info` live across the call (no capability chain: the
            // kernel only reports the size it would need in `argsz`).
            match unsafe { vfio_ioctl(fd.as_fd(), 8, Arg::ptr(&mut r)) } {
                Ok(_) => {}
                // vfio-pci counts the VGA region in `num_regions` but answers EINVAL for it on
                // a device that is not VGA: the region does not exist.
                Err(rustix::io::Errno::INVAL) => r.size = 0,
                Err(e) => return Err(os("ioctl(VFIO_DEVICE_GET_REGION_INFO)")(e)),
            }
            regions.push(VfioRegion {
                index,
                size: r.size,
                offset: r.offset,
                flags: r.flags,
            });
        }
        Ok(VfioDevice {
            name: name.to_string(),
            fd,
            regions,
        })
    }

    /// The PCI address the device was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Region `index`, if the device has it (size > 0).
    pub fn region(&self, index: u32) -> Option<VfioRegion> {
        self.regions
            .get(index as usize)
            .copied()
            .filter(|r| r.size > 0)
    }

    fn check(&self, index: u32, off: u64, len: usize, write: bool) -> Result<u64, MmError> {
        let r = self.region(index).ok_or(MmError::VfioRegion {
            index,
            offset: off,
            len: len as u64,
        })?;
        let need = if write {
            b::VFIO_REGION_INFO_FLAG_WRITE
        } else {
            b::VFIO_REGION_INFO_FLAG_READ
        };
        let fits = off.checked_add(len as u64).is_some_and(|end| end <= r.size);
        if !fits || r.flags & need == 0 {
            return Err(MmError::VfioRegion {
                index,
                offset: off,
                len: len as u64,
            });
        }
        Ok(r.offset + off)
    }

    /// Reads `buf.len()` bytes at byte `off` of region `index` (one access of that width for
    /// 1, 2, 4 or 8 bytes).
    ///
    /// # Errors
    /// [`MmError::VfioRegion`]: no such region, not readable, or the range leaves it;
    /// [`MmError::Os`] with `op == "pread(VFIO region)"`.
    pub fn read_region(&self, index: u32, off: u64, buf: &mut [u8]) -> Result<(), MmError> {
        let at = self.check(index, off, buf.len(), false)?;
        let n = rustix::io::pread(&self.fd, &mut *buf, at).map_err(os("pread(VFIO region)"))?;
        if n != buf.len() {
            return Err(MmError::Os {
                op: "pread(VFIO region)",
                errno: rustix::io::Errno::IO,
            });
        }
        Ok(())
    }

    /// Writes `data` at byte `off` of region `index`.
    ///
    /// # Errors
    /// As [`VfioDevice::read_region`], with `op == "pwrite(VFIO region)"`.
    pub fn write_region(&self, index: u32, off: u64, data: &[u8]) -> Result<(), MmError> {
        let at = self.check(index, off, data.len(), true)?;
        let n = rustix::io::pwrite(&self.fd, data, at).map_err(os("pwrite(VFIO region)"))?;
        if n != data.len() {
            return Err(MmError::Os {
                op: "pwrite(VFIO region)",
                errno: rustix::io::Errno::IO,
            });
        }
        Ok(())
    }

    /// A 32-bit little-endian read at byte `off` of BAR `bar`.
    ///
    /// # Errors
    /// As [`VfioDevice::read_region`].
    pub fn read32(&self, bar: u32, off: u64) -> Result<u32, MmError> {
        let mut b = [0u8; 4];
        self.read_region(bar, off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A 64-bit little-endian read at byte `off` of BAR `bar`.
    ///
    /// # Errors
    /// As [`VfioDevice::read_region`].
    pub fn read64(&self, bar: u32, off: u64) -> Result<u64, MmError> {
        let mut b = [0u8; 8];
        self.read_region(bar, off, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A 32-bit little-endian write at byte `off` of BAR `bar`.
    ///
    /// # Errors
    /// As [`VfioDevice::write_region`].
    pub fn write32(&self, bar: u32, off: u64, v: u32) -> Result<(), MmError> {
        self.write_region(bar, off, &v.to_le_bytes())
    }

    /// A 64-bit little-endian write at byte `off` of BAR `bar`.
    ///
    /// # Errors
    /// As [`VfioDevice::write_region`].
    pub fn write64(&self, bar: u32, off: u64, v: u64) -> Result<(), MmError> {
        self.write_region(bar, off, &v.to_le_bytes())
    }

    /// Sets memory-space and bus-master enable in the PCI command register: without bus
    /// mastering a device's DMA never reaches memory (vfio-pci leaves it to user space, as QEMU
    /// does for its guests).
    ///
    /// # Errors
    /// As [`VfioDevice::read_region`] / [`VfioDevice::write_region`] on the config region.
    pub fn enable_bus_master(&self) -> Result<(), MmError> {
        let cfg = b::VFIO_PCI_CONFIG_REGION_INDEX;
        let mut cmd = [0u8; 2];
        self.read_region(cfg, PCI_COMMAND, &mut cmd)?;
        let v = u16::from_le_bytes(cmd) | PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
        self.write_region(cfg, PCI_COMMAND, &v.to_le_bytes())
    }
}
