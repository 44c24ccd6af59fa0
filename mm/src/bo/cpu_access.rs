//! The CPU access bracket: hand a BO from its devices to the CPU and back.
//!
//! Userspace brackets CPU access to a dma-buf with `DMA_BUF_IOCTL_SYNC` (`SYNC_START`, then
//! `SYNC_END`, each with `READ`, `WRITE` or both; include/uapi/linux/dma-buf.h), which runs the
//! exporter's `begin_cpu_access` / `end_cpu_access`. For udmabuf those are
//! `dma_sync_sg_for_cpu` and `dma_sync_sg_for_device` of its mapping, whatever the access
//! (drivers/dma-buf/udmabuf.c `begin_cpu_udmabuf` / `end_cpu_udmabuf`). Here a BO may be
//! attached to several devices, so every live attachment is synced, each in its own direction.
//!
//! Between the two, the CPU owns the BO (Documentation/core-api/dma-api-howto.rst: the device
//! must not touch a streaming buffer the CPU owns, and the other way round); outside, every
//! device it is attached to does.
//!
//! The guard is the way in: [`CpuAccessGuard::read`], [`CpuAccessGuard::write`] and
//! [`CpuAccessGuard::read_all`] reach the BO's bytes only while the bracket is open, and a write
//! in a bracket opened [`CpuAccess::READ`] only is refused.
//!
//! ```
//! # use devmmu_mm::bo::{Bo, BoFlags, CpuAccess};
//! # use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem, PAGE_SIZE};
//! # fn main() -> Result<(), devmmu_mm::MmError> {
//! # let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model)?;
//! let bo = Bo::new(&phys, PAGE_SIZE, BoFlags::default())?;
//! let cpu = bo.begin_cpu_access(CpuAccess::WRITE)?;
//! cpu.write(0, b"hello")?; // offsets and lengths in bytes
//! cpu.end()?; // the devices own the BO again and see "hello"
//!
//! let cpu = bo.begin_cpu_access(CpuAccess::READ)?;
//! let mut buf = [0u8; 5];
//! cpu.read(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! assert!(cpu.write(0, b"x").is_err()); // a READ bracket does not write
//! cpu.end()?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Bo::read`] and [`Bo::write`] stay, for a BO no device has attached (just allocated, or
//! only the CPU and fd peers use it): they access the CPU mapping unbracketed. While a device
//! has the BO attached, an access outside a bracket is a DMA-API bug (reported when DMA
//! debugging is on).

use std::sync::Arc;

use super::Bo;
use crate::MmError;

/// Which CPU accesses a bracket covers (`DMA_BUF_SYNC_READ` = 1, `DMA_BUF_SYNC_WRITE` = 2,
/// combined with `|`). Never empty: only [`CpuAccess::READ`], [`CpuAccess::WRITE`] and their
/// union can be built.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CpuAccess(u8);

impl CpuAccess {
    /// The CPU reads the BO.
    pub const READ: CpuAccess = CpuAccess(1);
    /// The CPU writes the BO.
    pub const WRITE: CpuAccess = CpuAccess(2);
    /// Both.
    pub const READ_WRITE: CpuAccess = CpuAccess(3);

    /// Whether the CPU reads.
    pub const fn reads(self) -> bool {
        self.0 & 1 != 0
    }

    /// Whether the CPU writes.
    pub const fn writes(self) -> bool {
        self.0 & 2 != 0
    }

    /// The `DMA_BUF_SYNC_*` bits (1 = READ, 2 = WRITE).
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl core::fmt::Display for CpuAccess {
    /// `READ`, `WRITE` or `READ|WRITE`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match (self.reads(), self.writes()) {
            (true, true) => "READ|WRITE",
            (false, true) => "WRITE",
            _ => "READ",
        })
    }
}

impl core::ops::BitOr for CpuAccess {
    type Output = CpuAccess;

    fn bitor(self, rhs: CpuAccess) -> CpuAccess {
        CpuAccess(self.0 | rhs.0)
    }
}

/// An open CPU access bracket on a BO, from [`Bo::begin_cpu_access`]. Ends with
/// [`CpuAccessGuard::end`], or when dropped (errors then go unreported).
///
/// While it lives, the CPU owns the BO: access its bytes with [`CpuAccessGuard::read`],
/// [`CpuAccessGuard::write`] (refused unless the bracket covers [`CpuAccess::WRITE`]) and
/// [`CpuAccessGuard::read_all`].
#[derive(Debug)]
#[must_use = "dropping the guard ends the CPU access at once"]
pub struct CpuAccessGuard<'a> {
    bo: &'a Bo,
    access: CpuAccess,
    ended: bool,
}

impl CpuAccessGuard<'_> {
    /// The accesses the bracket covers.
    pub fn access(&self) -> CpuAccess {
        self.access
    }

    /// The BO the bracket is open on.
    pub fn bo(&self) -> &Bo {
        self.bo
    }

    /// Copies `buf.len()` bytes at BO offset `offset` (bytes) out of the BO's CPU mapping, as
    /// [`Bo::read`] does (the caching mode decides how it reaches memory). Allowed in any
    /// bracket: a WRITE-only bracket also hands the BO to the CPU.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`]: `offset + buf.len()` runs past the BO's size (or overflows);
    /// `buf` is untouched.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MmError> {
        self.bo.read(offset, buf)
    }

    /// Copies `data` into the BO's CPU mapping at BO offset `offset` (bytes), as [`Bo::write`]
    /// does; the devices see it once the bracket ends.
    ///
    /// # Errors
    /// Nothing is written on error:
    /// - [`MmError::CpuAccessDenied`]: the bracket does not cover [`CpuAccess::WRITE`] (checked
    ///   first).
    /// - [`MmError::OutOfBounds`]: `offset + data.len()` runs past the BO's size (or overflows).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MmError> {
        if !self.access.writes() {
            return Err(MmError::CpuAccessDenied {
                access: self.access,
            });
        }
        self.bo.write(offset, data)
    }

    /// The whole BO (`size()` bytes) as the CPU reads it, as [`CpuAccessGuard::read`] from
    /// offset 0.
    ///
    /// # Errors
    /// Those of [`Bo::read`] other than [`MmError::OutOfBounds`] (the range is the whole BO);
    /// none is expected.
    pub fn read_all(&self) -> Result<Vec<u8>, MmError> {
        // The BO is mapped in the CPU's address space, so its size fits a `usize`.
        let mut buf = vec![0u8; self.bo.size() as usize];
        self.bo.read(0, &mut buf)?;
        Ok(buf)
    }

    /// Ends the bracket (`DMA_BUF_IOCTL_SYNC` with `SYNC_END`): hands the BO back to every
    /// device it is attached to with `sync_sg_for_device`, so that what the CPU wrote reaches
    /// them (a clean, for a non-coherent device) and, with DMA debugging on, the devices own
    /// their mappings again. Every attachment is tried even if one fails.
    ///
    /// # Errors
    /// The first error of `DmaOps::sync_sg_for_device` (e.g. [`MmError::BadPhysAddr`]).
    pub fn end(mut self) -> Result<(), MmError> {
        self.ended = true;
        self.bo.end_cpu_access(self.access)
    }
}

impl Drop for CpuAccessGuard<'_> {
    fn drop(&mut self) {
        if !self.ended {
            // A destructor cannot return the error; `end` does.
            let _ = self.bo.end_cpu_access(self.access);
        }
    }
}

impl Bo {
    /// Begins CPU access (`DMA_BUF_IOCTL_SYNC` with `SYNC_START`): hands the BO from every
    /// device it is attached to over to the CPU with `sync_sg_for_cpu` (for a non-coherent
    /// device and a `FromDevice`/`Bidirectional` mapping: an invalidate, so that the CPU sees
    /// what the device wrote), then, with DMA debugging on, runs the devices'
    /// `check_cpu_access` over the whole BO. Access the bytes through the guard
    /// ([`CpuAccessGuard::read`], [`CpuAccessGuard::write`]) until it ends.
    ///
    /// WRITE-only access syncs for the CPU too, as udmabuf does: the CPU must own a buffer
    /// before writing it, and a partial-line write must not later write back stale neighbours
    /// over what the device wrote.
    ///
    /// For [`Caching::WriteCombined`](super::Caching) and [`Caching::Uncached`](super::Caching)
    /// BOs the syncs find no cached data to move (the CPU view already equals RAM); they are
    /// still made, since they are what hands ownership over under the DMA API.
    ///
    /// # Errors
    /// The first error of `DmaOps::sync_sg_for_cpu`. The attachments synced before it are
    /// handed back to their devices, so no bracket is left half open.
    pub fn begin_cpu_access(&self, access: CpuAccess) -> Result<CpuAccessGuard<'_>, MmError> {
        if self.dma_buf {
            super::dma_buf::sync(self.frames.fd(), access, true)?;
        }
        let live = self.live_attachments();
        for (i, a) in live.iter().enumerate() {
            if let Err(e) = a.sync_for_cpu() {
                for done in &live[..i] {
                    // Best effort: the error being returned is the one that matters.
                    let _ = done.sync_for_device();
                }
                if self.dma_buf {
                    let _ = super::dma_buf::sync(self.frames.fd(), access, false);
                }
                return Err(e);
            }
        }
        drop(live);
        self.check_cpu_access(0, self.size(), access.writes());
        Ok(CpuAccessGuard {
            bo: self,
            access,
            ended: false,
        })
    }

    fn end_cpu_access(&self, access: CpuAccess) -> Result<(), MmError> {
        let mut first = Ok(());
        for a in self.live_attachments() {
            if let Err(e) = a.sync_for_device() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        if self.dma_buf {
            if let Err(e) = super::dma_buf::sync(self.frames.fd(), access, false) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// An open CPU access bracket that owns a reference to its BO, from
/// [`Bo::begin_cpu_access_owned`]: the form an interface needs when the bracket spans calls
/// (`DMA_BUF_IOCTL_SYNC` with `SYNC_START` in one ioctl, `SYNC_END` in a later one), where a
/// borrowing [`CpuAccessGuard`] cannot be kept. Ends with [`OwnedCpuAccess::end`], or when
/// dropped (errors then go unreported). The reference it holds keeps the BO alive until then.
#[derive(Debug)]
#[must_use = "dropping the bracket ends the CPU access at once"]
pub struct OwnedCpuAccess {
    bo: Arc<Bo>,
    access: CpuAccess,
    ended: bool,
}

impl OwnedCpuAccess {
    /// The accesses the bracket covers.
    pub fn access(&self) -> CpuAccess {
        self.access
    }

    /// The BO the bracket is open on.
    pub fn bo(&self) -> &Arc<Bo> {
        &self.bo
    }

    /// Ends the bracket, as [`CpuAccessGuard::end`].
    ///
    /// # Errors
    /// As [`CpuAccessGuard::end`].
    pub fn end(mut self) -> Result<(), MmError> {
        self.ended = true;
        self.bo.end_cpu_access(self.access)
    }
}

impl Drop for OwnedCpuAccess {
    fn drop(&mut self) {
        if !self.ended {
            // A destructor cannot return the error; `end` does.
            let _ = self.bo.end_cpu_access(self.access);
        }
    }
}

impl Bo {
    /// Begins CPU access as [`Bo::begin_cpu_access`] does, returning a bracket that holds its
    /// own reference to the BO ([`OwnedCpuAccess`]) instead of borrowing it.
    ///
    /// # Errors
    /// As [`Bo::begin_cpu_access`]; no bracket is left open on error.
    pub fn begin_cpu_access_owned(
        self: &Arc<Self>,
        access: CpuAccess,
    ) -> Result<OwnedCpuAccess, MmError> {
        let mut guard = self.begin_cpu_access(access)?;
        // The bracket now belongs to the owned form: the borrowing guard must not end it.
        guard.ended = true;
        drop(guard);
        Ok(OwnedCpuAccess {
            bo: Arc::clone(self),
            access,
            ended: false,
        })
    }
}
