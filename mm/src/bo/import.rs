//! Importing a BO from a file descriptor another process or driver gave us.
//!
//! An fd from a peer is untrusted: before mapping it we check what it is, because mapping the
//! wrong thing fails in ways that cannot be undone cleanly. A file the peer can shrink makes
//! every later access past the new end fault with SIGBUS (memfd_create(2), "File sealing" in
//! fcntl(2)); a write-sealed memfd cannot be mapped writable; a size that disagrees with what the
//! protocol said means the peer and we disagree about the buffer. The checks run in the order
//! below and the first failure is returned; the fd is consumed (closed) in every case.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{FileType, OFlags, SealFlags};
use rustix::io::Errno;

use super::{check_size, prime, Bo, BoFlags};
use crate::phys::PhysMem;
use crate::MmError;

/// `DMA_BUF_MAGIC` (include/uapi/linux/magic.h): the `f_type` of the dma-buf pseudo
/// filesystem, which `fstatfs` reports for every dma-buf fd.
const DMA_BUF_MAGIC: u64 = 0x444d_4142;

/// Whether `fd` is a dma-buf. Checked two ways: the filesystem magic (kernels since 5.3 give
/// dma-bufs their own pseudo filesystem, drivers/dma-buf/dma-buf.c `dma_buf_fs_type`) and the
/// `/proc/self/fd` link name, which is `/dmabuf:NAME` on those kernels and `anon_inode:dmabuf`
/// on older ones (where dma-bufs were anonymous inodes).
pub(crate) fn is_dma_buf(fd: BorrowedFd<'_>) -> bool {
    if let Ok(st) = rustix::fs::fstatfs(fd) {
        if (st.f_type as u64) & 0xffff_ffff == DMA_BUF_MAGIC {
            return true;
        }
    }
    let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    match rustix::fs::readlink(link.as_str(), Vec::new()) {
        Ok(name) => {
            let name = name.as_bytes();
            name == b"anon_inode:dmabuf" || name.starts_with(b"/dmabuf:")
        }
        Err(_) => false,
    }
}

fn os(op: &'static str) -> impl FnOnce(Errno) -> MmError {
    move |errno| MmError::Os { op, errno }
}

/// What an fd passed to [`Bo::import`] turned out to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FdKind {
    DmaBuf,
    Memfd,
}

/// The checks of a dma-buf: opened read-write (else its mmap cannot be writable), size from
/// `lseek` a non-zero page multiple equal to `expected_size` when given.
fn check_dma_buf(fd: BorrowedFd<'_>, expected_size: Option<u64>) -> Result<u64, MmError> {
    let access = rustix::fs::fcntl_getfl(fd).map_err(os("fcntl(F_GETFL)"))? & OFlags::RWMODE;
    if access != OFlags::RDWR {
        return Err(MmError::FdNotWritable { access });
    }
    let size = super::dma_buf::size(fd)?;
    if check_size(size).is_err() || expected_size.is_some_and(|e| e != size) {
        return Err(MmError::WrongSize {
            size,
            expected: expected_size,
        });
    }
    Ok(size)
}

/// The checks of [`Bo::import`]; returns what the fd is and its size in bytes.
fn check_fd(fd: BorrowedFd<'_>, expected_size: Option<u64>) -> Result<(FdKind, u64), MmError> {
    if is_dma_buf(fd) {
        return Ok((FdKind::DmaBuf, check_dma_buf(fd, expected_size)?));
    }
    let st = rustix::fs::fstat(fd).map_err(os("fstat"))?;
    let file_type = FileType::from_raw_mode(st.st_mode);
    // Only shmem (memfd, tmpfs) and hugetlbfs files carry seals; the kernel answers EINVAL for
    // every other kind of file (mm/memfd.c `memfd_fcntl`).
    let seals = match rustix::fs::fcntl_get_seals(fd) {
        Ok(s) => s,
        Err(Errno::INVAL) => return Err(MmError::NotMemfd { file_type }),
        Err(errno) => {
            return Err(MmError::Os {
                op: "fcntl(F_GET_SEALS)",
                errno,
            })
        }
    };
    if !seals.contains(SealFlags::SHRINK) {
        return Err(MmError::MissingSeal { seals });
    }
    if seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
        return Err(MmError::WriteSealed { seals });
    }
    let access = rustix::fs::fcntl_getfl(fd).map_err(os("fcntl(F_GETFL)"))? & OFlags::RWMODE;
    if access != OFlags::RDWR {
        return Err(MmError::FdNotWritable { access });
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if check_size(size).is_err() || expected_size.is_some_and(|e| e != size) {
        return Err(MmError::WrongSize {
            size,
            expected: expected_size,
        });
    }
    Ok((FdKind::Memfd, size))
}

impl Bo {
    /// Imports a BO from `fd` (received from another process or driver), with default
    /// [`BoFlags`]: scattered frames from any zone, [`Caching::Cached`](super::Caching).
    ///
    /// # Errors
    /// As [`Bo::import_with`].
    pub fn import(
        phys: &Arc<PhysMem>,
        fd: OwnedFd,
        expected_size: Option<u64>,
    ) -> Result<Arc<Bo>, MmError> {
        Bo::import_with(phys, fd, expected_size, BoFlags::default())
    }

    /// Imports a BO from `fd`: checks what the fd is, then gives frames of `phys` (placed as
    /// `flags` says) to its pages and maps it shared. The BO's bytes are the file's: writes on
    /// either side are seen by the other (it is the same memory), and the BO is
    /// [`Bo::is_imported`]. `expected_size` is the size in bytes the peer announced, if any.
    /// The fd is consumed, also on error.
    ///
    /// Self-import, as DRM PRIME (drm_prime.c `drm_gem_prime_fd_to_handle`): if `fd` names the
    /// file of a live BO of `phys` (one this process exported with [`Bo::export`], or imported
    /// before), that same BO is returned (`Arc::ptr_eq`), after the size check (6. below); no
    /// second object is made over the same pages and `flags` is not used.
    ///
    /// Checks, in order (the first failure is returned):
    /// 1. a dma-buf (a udmabuf, a DRM driver's PRIME export, a dma-heap buffer) is imported
    ///    as the exporter gives it: it must be opened read-write ([`MmError::FdNotWritable`]),
    ///    its size (`lseek(fd, 0, SEEK_END)`) must be a non-zero page multiple equal to
    ///    `expected_size` when given ([`MmError::WrongSize`]); its pages are the dma-buf's
    ///    `mmap`, every CPU access bracket ([`Bo::begin_cpu_access`]) is also a
    ///    `DMA_BUF_IOCTL_SYNC` START/END on it, and a device maps it through its own system DMA
    ///    ops like any BO (on VFIO: `VFIO_IOMMU_MAP_DMA` of the mmap). Checks 2-6 are for
    ///    other fds.
    /// 2. sealable (a memfd; also a tmpfs or hugetlbfs file): otherwise `F_GET_SEALS` fails with
    ///    `EINVAL` and the error is [`MmError::NotMemfd`] (a pipe, a socket, a file on disk, a
    ///    directory, a device node).
    /// 3. sealed against shrinking: otherwise [`MmError::MissingSeal`] (the peer could
    ///    truncate the file and our accesses would fault with SIGBUS).
    /// 4. not sealed against writing (`F_SEAL_WRITE`, `F_SEAL_FUTURE_WRITE`): otherwise
    ///    [`MmError::WriteSealed`] (it cannot be mapped writable).
    /// 5. opened read-write: otherwise [`MmError::FdNotWritable`].
    /// 6. its size is a non-zero multiple of [`PAGE_SIZE`](crate::phys::PAGE_SIZE) and equals
    ///    `expected_size` when given: otherwise [`MmError::WrongSize`].
    ///
    /// # Errors
    /// Those of the checks, then those of [`PhysMem::adopt_fd`] ([`MmError::NoMemory`],
    /// [`MmError::Os`] for a failed `mmap`, ...), and [`MmError::Os`] when `fstat`,
    /// `fcntl(F_GET_SEALS)` (other than `EINVAL`) or `fcntl(F_GETFL)` fail. Nothing stays
    /// allocated on error.
    pub fn import_with(
        phys: &Arc<PhysMem>,
        fd: OwnedFd,
        expected_size: Option<u64>,
        flags: BoFlags,
    ) -> Result<Arc<Bo>, MmError> {
        if let Some(bo) = prime::file_key(fd.as_fd()).and_then(|k| prime::lookup(k, phys)) {
            if expected_size.is_some_and(|e| e != bo.size()) {
                return Err(MmError::WrongSize {
                    size: bo.size(),
                    expected: expected_size,
                });
            }
            return Ok(bo);
        }
        let key = prime::file_key(fd.as_fd());
        let (kind, size) = check_fd(fd.as_fd(), expected_size)?;
        // The checked seals cannot be removed, so the size cannot drop below `size` between the
        // check and the mapping; a write seal added meanwhile makes `mmap` fail (EPERM). A
        // dma-buf's size never changes.
        let frames = phys.adopt_fd(fd, size, flags.frame_alloc())?;
        let mut bo = Bo::from_frames(frames, flags, true);
        bo.dma_buf = kind == FdKind::DmaBuf;
        let bo = Arc::new(bo);
        if let Some(key) = key {
            prime::remember(key, &bo);
        }
        Ok(bo)
    }
}
