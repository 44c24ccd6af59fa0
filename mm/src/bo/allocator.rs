//! Allocating shareable buffers the way libcamera's `DmaBufAllocator` does
//! (src/libcamera/dma_buf_allocator.cpp): a dma-buf from the system dma-heap
//! (`/dev/dma_heap/system`, include/uapi/linux/dma-heap.h `DMA_HEAP_IOCTL_ALLOC`) if the kernel
//! has it, else a memfd turned into a dma-buf by udmabuf, else the sealed memfd itself. Each
//! result is a [`Bo`] plus an fd to hand to peers, and says which source it came from.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{opcode, Opcode, Updater};

use super::{check_size, Bo, BoFlags, ExportOptions, ExportedFd, FdKind};
use crate::phys::PhysMem;
use crate::MmError;

/// The system dma-heap's device node.
pub const DMA_HEAP_SYSTEM_PATH: &str = "/dev/dma_heap/system";

/// Where a [`SharedBuffer`] came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AllocSource {
    /// A dma-heap allocation, imported as a BO (its pages are the heap's).
    DmaHeap,
    /// A BO of devmmu's memory exported through udmabuf.
    Udmabuf,
    /// A BO of devmmu's memory shared as its sealed memfd.
    Memfd,
}

/// A shareable buffer: the BO and an fd for peers (a dma-buf, or the memfd for
/// [`AllocSource::Memfd`]), both naming the same pages.
#[derive(Debug)]
pub struct SharedBuffer {
    /// The BO.
    pub bo: Arc<Bo>,
    /// The fd to give to peers; [`Bo::import`] of it gives back `bo`.
    pub fd: OwnedFd,
    /// Which source gave it.
    pub source: AllocSource,
    /// Why each source tried before this one failed, in order.
    pub skipped: Vec<(AllocSource, MmError)>,
}

/// Which sources [`DmaBufAllocator::alloc`] tries, in libcamera's order.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DmaBufAllocator {
    /// The dma-heap to try first, or `None`. Default: [`DMA_HEAP_SYSTEM_PATH`].
    pub dma_heap: Option<PathBuf>,
    /// The udmabuf device to try next, or `None`. Default:
    /// [`UDMABUF_PATH`](super::UDMABUF_PATH).
    pub udmabuf: Option<PathBuf>,
    /// Whether the sealed memfd is the last resort (default `true`); without it, a failure of
    /// the other two is the error.
    pub memfd: bool,
}

impl Default for DmaBufAllocator {
    fn default() -> DmaBufAllocator {
        DmaBufAllocator {
            dma_heap: Some(PathBuf::from(DMA_HEAP_SYSTEM_PATH)),
            udmabuf: Some(PathBuf::from(super::UDMABUF_PATH)),
            memfd: true,
        }
    }
}

/// `struct dma_heap_allocation_data` (24 bytes).
#[repr(C)]
struct HeapAlloc {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

/// `DMA_HEAP_IOCTL_ALLOC = _IOWR('H', 0x0, struct dma_heap_allocation_data)`.
const DMA_HEAP_IOCTL_ALLOC: Opcode = opcode::read_write::<HeapAlloc>(b'H', 0);

impl DmaBufAllocator {
    /// Allocates a shareable buffer of `size` bytes (a non-zero multiple of 4096) over `phys`,
    /// trying the dma-heap, then udmabuf, then the memfd, as configured.
    ///
    /// # Errors
    /// [`MmError::ZeroSize`] / [`MmError::Misaligned`] for a bad size; otherwise, when every
    /// configured source failed, the last source's error (each failure is also in
    /// [`SharedBuffer::skipped`] when a later source succeeds).
    pub fn alloc(&self, phys: &Arc<PhysMem>, size: u64) -> Result<SharedBuffer, MmError> {
        check_size(size)?;
        let mut skipped = Vec::new();
        if let Some(path) = &self.dma_heap {
            match heap_alloc(path, size).and_then(|fd| {
                let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 0).map_err(|errno| MmError::Os {
                    op: "fcntl(F_DUPFD_CLOEXEC)",
                    errno,
                })?;
                Ok((Bo::import(phys, dup, Some(size))?, fd))
            }) {
                Ok((bo, fd)) => {
                    return Ok(SharedBuffer {
                        bo,
                        fd,
                        source: AllocSource::DmaHeap,
                        skipped,
                    })
                }
                Err(e) => skipped.push((AllocSource::DmaHeap, e)),
            }
        }
        let bo = Bo::new(phys, size, BoFlags::default())?;
        if let Some(path) = &self.udmabuf {
            let opts = ExportOptions {
                udmabuf: Some(path.clone()),
                fallback_to_memfd: false,
            };
            match bo.export_with(&opts) {
                Ok(ExportedFd {
                    fd,
                    kind: FdKind::DmaBuf,
                    ..
                }) => {
                    return Ok(SharedBuffer {
                        bo,
                        fd,
                        source: AllocSource::Udmabuf,
                        skipped,
                    })
                }
                Ok(_) => {}
                Err(e) => skipped.push((AllocSource::Udmabuf, e)),
            }
        }
        if !self.memfd {
            return Err(skipped.pop().map(|(_, e)| e).unwrap_or(MmError::Os {
                op: "DmaBufAllocator::alloc (no source configured)",
                errno: rustix::io::Errno::NODEV,
            }));
        }
        let opts = ExportOptions {
            udmabuf: None,
            fallback_to_memfd: true,
        };
        let ExportedFd { fd, .. } = bo.export_with(&opts)?;
        Ok(SharedBuffer {
            bo,
            fd,
            source: AllocSource::Memfd,
            skipped,
        })
    }
}

/// One allocation of `size` bytes from the dma-heap at `path`: a new dma-buf fd.
fn heap_alloc(path: &std::path::Path, size: u64) -> Result<OwnedFd, MmError> {
    let heap = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
        |errno| MmError::Os {
            op: "open(dma-heap)",
            errno,
        },
    )?;
    let mut req = HeapAlloc {
        len: size,
        // Must be 0 on input (dma-heap.c refuses anything else). A node that is not a dma-heap
        // and "succeeds" without writing it leaves 0, which the dma-buf check below refuses.
        fd: 0,
        fd_flags: (OFlags::RDWR | OFlags::CLOEXEC).bits(),
        heap_flags: 0,
    };
    // SAFETY: DMA_HEAP_IOCTL_ALLOC takes a pointer to a `dma_heap_allocation_data`, which the
    // kernel reads and writes back (`fd`); `req` lives across the call. A node that is not a
    // dma-heap answers ENOTTY.
    unsafe {
        let op = Updater::<DMA_HEAP_IOCTL_ALLOC, HeapAlloc>::new(&mut req);
        rustix::ioctl::ioctl(heap.as_fd(), op)
    }
    .map_err(|errno| MmError::Os {
        op: "ioctl(DMA_HEAP_IOCTL_ALLOC)",
        errno,
    })?;
    let fd = req.fd;
    let fd = i32::try_from(fd).map_err(|_| MmError::Os {
        op: "ioctl(DMA_HEAP_IOCTL_ALLOC)",
        errno: rustix::io::Errno::INVAL,
    })?;
    // SAFETY: only used for the check below, while nothing here closes it; if `fd` is not
    // open, the check fails (EBADF) and we do not take it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if !super::import::is_dma_buf(borrowed) {
        return Err(MmError::Os {
            op: "ioctl(DMA_HEAP_IOCTL_ALLOC)",
            errno: rustix::io::Errno::NOTTY,
        });
    }
    // SAFETY: the ioctl installed `fd` for us, a dma-buf fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
