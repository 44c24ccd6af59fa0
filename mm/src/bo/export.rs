//! Exporting a BO as a file descriptor: a dma-buf made by udmabuf when the kernel has it, the
//! BO's sealed memfd otherwise.
//!
//! udmabuf (drivers/dma-buf/udmabuf.c, include/uapi/linux/udmabuf.h) turns pages of a memfd into
//! a dma-buf with the `UDMABUF_CREATE` ioctl on `/dev/udmabuf`. It requires the memfd to carry
//! `F_SEAL_SHRINK` and not `F_SEAL_WRITE`, and offset and size to be page-aligned; our backing
//! memfds are made that way (see [`crate::phys`]). Many kernels, this machine's included, have
//! no `/dev/udmabuf`; then the memfd itself is shared. Both fds name the same pages, so a peer
//! that maps either sees the BO's CPU view.
//!
//! A shared memfd is safe for us to hand out: it is sealed against shrinking and growing (a
//! peer cannot truncate it under our mapping), and a peer cannot add `F_SEAL_WRITE` while our
//! shared writable mapping exists (`fcntl` returns `EBUSY`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{opcode, Ioctl, IoctlOutput, Opcode};

use std::sync::Arc;

use super::{prime, Bo};
use crate::MmError;

/// Where udmabuf's device node is on Linux.
pub const UDMABUF_PATH: &str = "/dev/udmabuf";

/// What kind of fd an [`ExportedFd`] is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FdKind {
    /// A dma-buf (from udmabuf): importable by any dma-buf importer (DRM PRIME, V4L2, Vulkan
    /// `VK_EXT_external_memory_dma_buf`), mappable with `mmap`, with `DMA_BUF_IOCTL_SYNC`.
    DmaBuf,
    /// The BO's sealed memfd itself (a new fd for the same open file): importable with
    /// [`Bo::import`], mappable with `mmap`, readable with `pread`.
    Memfd,
}

/// A BO exported as an fd.
#[derive(Debug)]
pub struct ExportedFd {
    /// The new fd, close-on-exec. Closing it does not affect the BO.
    pub fd: OwnedFd,
    /// Which kind of fd it is.
    pub kind: FdKind,
    /// When `kind` is [`FdKind::Memfd`] because the udmabuf path was tried and failed (with
    /// [`ExportOptions::fallback_to_memfd`]): why. `None` when udmabuf succeeded or was not
    /// tried.
    pub dma_buf_error: Option<MmError>,
}

/// How [`Bo::export_with`] makes its fd.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ExportOptions {
    /// The udmabuf device node to try first, or `None` to export the memfd directly.
    /// Default: [`UDMABUF_PATH`].
    pub udmabuf: Option<PathBuf>,
    /// Whether a failure of the udmabuf path (no such device, no permission, the ioctl refusing
    /// the buffer, e.g. above udmabuf's `size_limit_mb`) falls back to the memfd (`true`, the
    /// default) or is returned as the error.
    pub fallback_to_memfd: bool,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            udmabuf: Some(PathBuf::from(UDMABUF_PATH)),
            fallback_to_memfd: true,
        }
    }
}

/// `struct udmabuf_create` of include/uapi/linux/udmabuf.h (24 bytes, no padding).
#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

/// `UDMABUF_FLAGS_CLOEXEC`: the new dma-buf fd is close-on-exec.
const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// `UDMABUF_CREATE = _IOW('u', 0x42, struct udmabuf_create)`; returns the new dma-buf fd.
struct UdmabufCreateIoctl(UdmabufCreate);

// SAFETY: the opcode is UDMABUF_CREATE, whose argument is a pointer to a `struct udmabuf_create`
// that we own for the call. The kernel only reads it, but `IS_MUTATING` is set anyway, since an
// injected device node that is not udmabuf might treat the number differently. The return value
// is passed on as a plain integer; the caller checks it before taking ownership.
unsafe impl Ioctl for UdmabufCreateIoctl {
    type Output = IoctlOutput;

    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        opcode::write::<UdmabufCreate>(b'u', 0x42)
    }

    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        (&mut self.0 as *mut UdmabufCreate).cast()
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _extract_output: *mut core::ffi::c_void,
    ) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

impl Bo {
    /// Exports the BO as an fd with [`ExportOptions::default`]: a dma-buf through
    /// `/dev/udmabuf` when the kernel provides it, else the sealed memfd.
    ///
    /// # Errors
    /// As [`Bo::export_with`].
    pub fn export(self: &Arc<Self>) -> Result<ExportedFd, MmError> {
        self.export_with(&ExportOptions::default())
    }

    /// Exports the BO as an fd, as `opts` says. The fd covers the whole BO (`size()` bytes from
    /// offset 0) and shares its pages: writes through it are writes to the BO's CPU view.
    ///
    /// The fd's file is remembered (as PRIME's `dma_buf->priv`), so that [`Bo::import`] of it,
    /// or of any fd for the same file, on this BO's [`PhysMem`](crate::phys::PhysMem) gives
    /// back this BO rather than a second object over the same pages.
    ///
    /// # Errors
    /// - [`MmError::UdmabufUnavailable`]: opening the udmabuf device failed and
    ///   `fallback_to_memfd` is off.
    /// - [`MmError::Os`] with `op == "ioctl(UDMABUF_CREATE)"`: the device refused the buffer
    ///   (`ENOTTY` if the path is not a udmabuf device) and `fallback_to_memfd` is off.
    /// - [`MmError::Os`] with `op == "fcntl(F_DUPFD_CLOEXEC)"`: no fd could be allocated for the
    ///   memfd export (e.g. `EMFILE`).
    pub fn export_with(self: &Arc<Self>, opts: &ExportOptions) -> Result<ExportedFd, MmError> {
        let mut dma_buf_error = None;
        if let Some(path) = &opts.udmabuf {
            match self.create_udmabuf(path) {
                Ok(fd) => {
                    if let Some(key) = prime::file_key(fd.as_fd()) {
                        prime::remember(key, self);
                    }
                    return Ok(ExportedFd {
                        fd,
                        kind: FdKind::DmaBuf,
                        dma_buf_error: None,
                    });
                }
                Err(e) if opts.fallback_to_memfd => dma_buf_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        let fd = rustix::io::fcntl_dupfd_cloexec(self.frames().fd(), 0).map_err(|errno| {
            MmError::Os {
                op: "fcntl(F_DUPFD_CLOEXEC)",
                errno,
            }
        })?;
        if let Some(key) = prime::file_key(fd.as_fd()) {
            prime::remember(key, self);
        }
        Ok(ExportedFd {
            fd,
            kind: FdKind::Memfd,
            dma_buf_error,
        })
    }

    fn create_udmabuf(&self, path: &std::path::Path) -> Result<OwnedFd, MmError> {
        let dev = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(
            |errno| MmError::UdmabufUnavailable {
                path: path.display().to_string(),
                errno,
            },
        )?;
        let memfd = self.frames().fd();
        let raw = u32::try_from(memfd.as_raw_fd()).map_err(|_| MmError::Os {
            op: "ioctl(UDMABUF_CREATE)",
            errno: Errno::BADF,
        })?;
        let req = UdmabufCreateIoctl(UdmabufCreate {
            memfd: raw,
            flags: UDMABUF_FLAGS_CLOEXEC,
            offset: 0,
            size: self.size(),
        });
        // SAFETY: `req` is a valid UDMABUF_CREATE request (see the `Ioctl` impl) naming our own
        // memfd, which stays open for the call. A device at `path` that is not udmabuf sees an
        // ioctl number it does not know and fails with ENOTTY.
        let out =
            unsafe { rustix::ioctl::ioctl(dev.as_fd(), req) }.map_err(|errno| MmError::Os {
                op: "ioctl(UDMABUF_CREATE)",
                errno,
            })?;
        // Take ownership only of what is certainly a new dma-buf fd: a device that is not
        // udmabuf but accepted the number could return anything, including one of our own fds.
        if out < 0 {
            return Err(MmError::Os {
                op: "ioctl(UDMABUF_CREATE)",
                errno: Errno::INVAL,
            });
        }
        // SAFETY: only used for the `fstatfs` below, while nothing in this function closes it;
        // if `out` is not an open fd, `fstatfs` fails with EBADF.
        let borrowed = unsafe { BorrowedFd::borrow_raw(out) };
        if !super::import::is_dma_buf(borrowed) {
            return Err(MmError::Os {
                op: "ioctl(UDMABUF_CREATE)",
                errno: Errno::NOTTY,
            });
        }
        // SAFETY: `out` is a dma-buf fd the ioctl just installed for us; nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}
