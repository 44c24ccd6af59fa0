//! Backing memory of one allocation: a sealed memfd mapped shared, plus (in
//! [`CacheMode::Model`]) the device-side shadow of the same bytes.
//!
//! One memfd per allocation, so a buffer can be handed to another process or driver as its fd
//! later without copying. The memfd is sealed against shrinking and growing (a peer that
//! truncated it would make our mapping fault with SIGBUS); `F_SEAL_SEAL` is left off so that an
//! exporter may add `F_SEAL_WRITE` or more before sharing. Source: memfd_create(2), fcntl(2)
//! "File Sealing".

use std::os::fd::{AsRawFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

use super::shadow::Shadow;
use super::CacheMode;
use crate::MmError;

/// The name memfds of fresh allocations carry (visible in `/proc/<pid>/fd` and `/proc/<pid>/maps`).
const MEMFD_NAME: &str = "devmmu-frames";

/// The memory behind one allocation's frames. Page `i` of the allocation is at byte offset
/// `i * PAGE_SIZE` of both the CPU mapping and the shadow.
#[derive(Debug)]
pub(crate) struct Backing {
    // Fields drop in declaration order: the mappings go before the fd they map.
    cpu: MmapRaw,
    shadow: Option<Shadow>,
    fd: OwnedFd,
    len: u64,
}

fn len_usize(len: u64) -> Result<usize, MmError> {
    usize::try_from(len).map_err(|_| MmError::Os {
        op: "mmap",
        errno: Errno::NOMEM,
    })
}

fn map_shared(fd: &OwnedFd, len: u64) -> Result<MmapRaw, MmError> {
    MmapOptions::new()
        .len(len_usize(len)?)
        .map_raw(fd.as_raw_fd())
        .map_err(|e| MmError::from_io("mmap", &e))
}

impl Backing {
    /// A fresh, zero-filled memfd of `len` bytes (a non-zero page multiple, checked by the caller).
    pub(crate) fn create(len: u64, mode: CacheMode) -> Result<Backing, MmError> {
        let fd =
            rustix::fs::memfd_create(MEMFD_NAME, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(|errno| MmError::Os {
                op: "memfd_create",
                errno,
            })?;
        rustix::fs::ftruncate(&fd, len).map_err(|errno| MmError::Os {
            op: "ftruncate",
            errno,
        })?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).map_err(|errno| {
            MmError::Os {
                op: "fcntl(F_ADD_SEALS)",
                errno,
            }
        })?;
        let cpu = map_shared(&fd, len)?;
        let shadow = match mode {
            CacheMode::Native => None,
            // RAM of a fresh frame holds what the CPU sees: zeros.
            CacheMode::Model => Some(Shadow::zeroed(len_usize(len)?)?),
        };
        Ok(Backing {
            cpu,
            shadow,
            fd,
            len,
        })
    }

    /// Maps the first `len` bytes of an existing fd (a non-zero page multiple, checked by the
    /// caller). The fd must be at least `len` bytes long.
    pub(crate) fn adopt(fd: OwnedFd, len: u64, mode: CacheMode) -> Result<Backing, MmError> {
        let st = rustix::fs::fstat(&fd).map_err(|errno| MmError::Os { op: "fstat", errno })?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size < len {
            return Err(MmError::FdTooSmall { len, size });
        }
        let cpu = map_shared(&fd, len)?;
        let shadow = match mode {
            CacheMode::Native => None,
            // RAM holds the fd's current content: nothing is cached yet.
            // SAFETY: `cpu` maps `len` readable bytes and lives for this call.
            CacheMode::Model => Some(unsafe { Shadow::copy_of(cpu.as_ptr(), len_usize(len)?) }?),
        };
        Ok(Backing {
            cpu,
            shadow,
            fd,
            len,
        })
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The memfd.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// CPU pointer to byte `offset` (`offset <= len`, checked by the caller).
    pub(crate) fn cpu_ptr(&self, offset: u64) -> *mut u8 {
        self.cpu.as_mut_ptr().wrapping_add(offset as usize)
    }

    /// Device-side (RAM) pointer to byte `offset`, in [`CacheMode::Model`] only.
    pub(crate) fn shadow_ptr(&self, offset: u64) -> Option<*mut u8> {
        self.shadow
            .as_ref()
            .map(|s| s.as_mut_ptr().wrapping_add(offset as usize))
    }
}
