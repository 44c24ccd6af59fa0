//! The error type of devmmu-mm.
//!
//! One enum for the crate boundary. Each variant is named after what went wrong and carries the
//! offending values, so a caller (or a test) can tell which input was refused without parsing a
//! message. Every operation that returns an error has left no partial state behind.

use rustix::io::Errno;

use crate::phys::{PhysAddr, RamRegion, Zone};

/// Everything that can go wrong in devmmu-mm.
///
/// Sizes are in bytes unless the field name says `pages`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MmError {
    /// The frame allocator cannot satisfy the request: fewer than `pages` free frames in `zone`,
    /// or (for a contiguous or aligned request) no free run of that shape. Nothing was allocated.
    #[error("out of physical frames: {pages} pages (contiguous: {contiguous}, zone: {zone:?})")]
    NoMemory {
        /// Number of 4 KiB pages requested.
        pages: u64,
        /// Whether one physically contiguous run was requested.
        contiguous: bool,
        /// The zone the frames had to come from.
        zone: Zone,
    },

    /// No frame is allocated at `addr`: the address lies outside RAM or in a free frame.
    #[error("no allocated frame at physical address {addr}")]
    BadPhysAddr {
        /// The first address of the range that has no frame behind it.
        addr: PhysAddr,
    },

    /// `addr + len` does not fit in 64 bits.
    #[error("physical range {addr} + {len:#x} bytes overflows the address space")]
    AddrOverflow {
        /// Start of the range.
        addr: PhysAddr,
        /// Length of the range in bytes.
        len: u64,
    },

    /// A size that must be non-zero was zero (an allocation of 0 pages, a buffer of 0 bytes).
    #[error("size must be non-zero")]
    ZeroSize,

    /// `value` must be a multiple of `align` (both in bytes) but is not.
    #[error("{value:#x} is not a multiple of {align:#x}")]
    Misaligned {
        /// The offending size or address, in bytes.
        value: u64,
        /// The required alignment, in bytes.
        align: u64,
    },

    /// A frame alignment that is not a power of two (or is zero) was requested.
    #[error("frame alignment of {align_pages} pages is not a power of two")]
    BadAlignment {
        /// The requested alignment, in pages.
        align_pages: u64,
    },

    /// An access at `offset` of `len` bytes runs past the end of a buffer of `size` bytes.
    #[error(
        "access at offset {offset:#x} of {len:#x} bytes is outside a buffer of {size:#x} bytes"
    )]
    OutOfBounds {
        /// Offset of the access from the start of the buffer, in bytes.
        offset: u64,
        /// Length of the access, in bytes.
        len: u64,
        /// Size of the buffer, in bytes.
        size: u64,
    },

    /// A file descriptor given to [`PhysMem::adopt_fd`](crate::phys::PhysMem::adopt_fd) is
    /// shorter than the length it was adopted for (mapping past its end would fault with SIGBUS).
    #[error("fd holds {size:#x} bytes, fewer than the {len:#x} requested")]
    FdTooSmall {
        /// Requested length, in bytes.
        len: u64,
        /// Size of the file behind the fd (`st_size`), in bytes.
        size: u64,
    },

    /// A [`MemoryMap`](crate::phys::MemoryMap) with no RAM region.
    #[error("memory map has no RAM region")]
    EmptyMemoryMap,

    /// A RAM region whose base or size is not a multiple of the page size, or whose size is zero.
    #[error("RAM region {region:?} is empty or not page-aligned")]
    RegionMisaligned {
        /// The offending region.
        region: RamRegion,
    },

    /// A RAM region that ends above the largest physical address (2^52, x86-64 MAXPHYADDR and
    /// the ARMv8.2 52-bit PA limit).
    #[error("RAM region {region:?} ends above the 52-bit physical address space")]
    RegionBeyondMaxPhys {
        /// The offending region.
        region: RamRegion,
    },

    /// Two RAM regions share at least one byte.
    #[error("RAM regions {first:?} and {second:?} overlap")]
    RegionsOverlap {
        /// The region with the lower base.
        first: RamRegion,
        /// The region that starts inside `first`.
        second: RamRegion,
    },

    /// A system call failed. `op` names the call (`"memfd_create"`, `"ftruncate"`,
    /// `"fcntl(F_ADD_SEALS)"`, `"mmap"`, `"fstat"`, ...), `errno` is what the kernel returned.
    #[error("{op} failed: {errno}")]
    Os {
        /// The failing call.
        op: &'static str,
        /// The kernel's error code.
        errno: Errno,
    },
}

impl MmError {
    /// Wraps a `std::io::Error` from a system call wrapper (memmap2) into [`MmError::Os`].
    pub(crate) fn from_io(op: &'static str, err: &std::io::Error) -> Self {
        let errno = Errno::from_io_error(err).unwrap_or(Errno::IO);
        MmError::Os { op, errno }
    }
}
