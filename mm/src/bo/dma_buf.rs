//! What a BO imported from a dma-buf needs of the dma-buf uapi (include/uapi/linux/dma-buf.h,
//! Documentation/driver-api/dma-buf.rst "CPU Access to DMA Buffer Objects"): the size, which a
//! dma-buf reports through `lseek(fd, 0, SEEK_END)`, and the `DMA_BUF_IOCTL_SYNC` bracket the
//! exporter needs around every CPU access of the mmap.

use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::ioctl::{opcode, Opcode, Setter};

use super::CpuAccess;
use crate::MmError;

/// `struct dma_buf_sync` (8 bytes).
#[repr(C)]
struct DmaBufSync {
    flags: u64,
}

const DMA_BUF_SYNC_READ: u64 = 1 << 0;
const DMA_BUF_SYNC_WRITE: u64 = 1 << 1;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 1 << 2;

/// `DMA_BUF_IOCTL_SYNC = _IOW('b', 0, struct dma_buf_sync)`.
const DMA_BUF_IOCTL_SYNC: Opcode = opcode::write::<DmaBufSync>(b'b', 0);

/// `DMA_BUF_IOCTL_SYNC` on `fd` for `access`: `start` opens the CPU access (the exporter hands
/// the buffer to the CPU), `!start` closes it. Retried on `EINTR`/`EAGAIN`, as the uapi asks.
///
/// # Errors
/// [`MmError::Os`] with `op == "ioctl(DMA_BUF_IOCTL_SYNC)"`.
pub(crate) fn sync(fd: BorrowedFd<'_>, access: CpuAccess, start: bool) -> Result<(), MmError> {
    let mut flags = if start {
        DMA_BUF_SYNC_START
    } else {
        DMA_BUF_SYNC_END
    };
    if access.reads() {
        flags |= DMA_BUF_SYNC_READ;
    }
    if access.writes() {
        flags |= DMA_BUF_SYNC_WRITE;
    }
    loop {
        // SAFETY: DMA_BUF_IOCTL_SYNC takes a pointer to a `dma_buf_sync`, which the kernel
        // only reads; `fd` is a dma-buf (checked at import).
        let r = unsafe {
            let op = Setter::<DMA_BUF_IOCTL_SYNC, DmaBufSync>::new(DmaBufSync { flags });
            rustix::ioctl::ioctl(fd, op)
        };
        match r {
            Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
            r => {
                return r.map_err(|errno| MmError::Os {
                    op: "ioctl(DMA_BUF_IOCTL_SYNC)",
                    errno,
                })
            }
        }
    }
}

/// The size in bytes of dma-buf `fd`: `lseek(fd, 0, SEEK_END)` (dma-buf's `llseek` allows only
/// that and `SEEK_SET` to 0), the offset then put back to 0.
///
/// # Errors
/// [`MmError::Os`] with `op == "lseek"`.
pub(crate) fn size(fd: BorrowedFd<'_>) -> Result<u64, MmError> {
    let os = |errno| MmError::Os { op: "lseek", errno };
    let end = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0)).map_err(os)?;
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0)).map_err(os)?;
    Ok(end)
}
