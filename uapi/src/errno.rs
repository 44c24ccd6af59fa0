//! Errors as the kernel returns them: a negative errno.
//!
//! Every request returns 0 or `-errno`. The errno values are Linux's (what `errno.h` defines on
//! this platform); [`errno_of`] is the one place where a [`MmError`] becomes one, so the same
//! failure always gives the same number, whichever request met it.

use devmmu_mm::MmError;
use rustix::io::Errno;

/// The errno for a [`MmError`]:
///
/// | errno | errors |
/// |---|---|
/// | `ENOMEM` | out of frames, out of swiotlb room, no memory for a table |
/// | `ENOSPC` | out of device VA space or of handle numbers |
/// | `EINVAL` | a size, offset or alignment that cannot be (zero, misaligned, out of the BO), a protection granting nothing or that the MMU cannot enforce, an fd that is not a BO's memfd or is not sealed as one must be |
/// | `ENOENT` | a handle or range that names nothing (unknown handle, nothing bound there) |
/// | `EEXIST` | a VA range already bound |
/// | `EBUSY` | a BO that cannot be shared as asked (its mapping bounces on one device and another device writes it; an existing mapping in a narrower direction) |
/// | `EACCES` | a write the bracket or the fd does not allow |
/// | `EOPNOTSUPP` | an fd kind this build cannot import (a dma-buf) |
/// | `EOVERFLOW` | an address range that wraps |
/// | `ENODEV` | a detached device |
/// | `EIO` | everything else: an internal inconsistency, a bus address the device cannot reach |
///
/// A failed system call ([`MmError::Os`]) keeps its own errno.
pub fn errno_of(e: &MmError) -> Errno {
    use devmmu_pagetable::Error as Pt;
    match e {
        MmError::NoMemory { .. }
        | MmError::SwiotlbFull { .. }
        | MmError::SwiotlbTooLarge { .. }
        | MmError::IommuMap { .. } => Errno::NOMEM,
        MmError::NoAddressSpace { .. } | MmError::HandlesExhausted { .. } => Errno::NOSPC,
        MmError::ZeroSize
        | MmError::Misaligned { .. }
        | MmError::BadAlignment { .. }
        | MmError::OutOfBounds { .. }
        | MmError::FdTooSmall { .. }
        | MmError::EmptyMemoryMap
        | MmError::RegionMisaligned { .. }
        | MmError::RegionBeyondMaxPhys { .. }
        | MmError::RegionsOverlap { .. }
        | MmError::NotPinned
        | MmError::NotMemfd { .. }
        | MmError::MissingSeal { .. }
        | MmError::WrongSize { .. }
        | MmError::TooManyFds { .. }
        | MmError::DmaMaskTooSmall { .. }
        | MmError::DmaNotMapped { .. }
        | MmError::DmaWrongKind { .. }
        | MmError::ResourceIsRam { .. }
        | MmError::IovaRangeUnknown { .. }
        | MmError::IovaOutOfRange { .. }
        | MmError::DmaWrongDevice { .. }
        | MmError::BadReservedRegion { .. }
        | MmError::Range(_)
        | MmError::VaOutOfRange { .. }
        | MmError::NoAccess { .. }
        | MmError::ProtNotEnforced { .. }
        | MmError::MaskBeyondFormat { .. }
        | MmError::Layout(_) => Errno::INVAL,
        MmError::BadHandle { .. } | MmError::NotBound { .. } => Errno::NOENT,
        MmError::VaInUse { .. } => Errno::EXIST,
        MmError::AttachDirection { .. } | MmError::SharedBounce { .. } => Errno::BUSY,
        MmError::WriteSealed { .. }
        | MmError::FdNotWritable { .. }
        | MmError::CpuAccessDenied { .. } => Errno::ACCESS,
        MmError::VfioUnsupported { .. }
        | MmError::IovaApiUnsupported
        | MmError::UdmabufUnavailable { .. } => Errno::OPNOTSUPP,
        MmError::AddrOverflow { .. } => Errno::OVERFLOW,
        MmError::DmaDetached { .. } | MmError::VfioNoGroup { .. } => Errno::NODEV,
        MmError::VfioGroupNotViable { .. } => Errno::BUSY,
        MmError::VfioRegion { .. } => Errno::INVAL,
        MmError::FdsTruncated { .. } | MmError::PayloadTruncated { .. } => Errno::MSGSIZE,
        MmError::PageTable(pt) => match pt {
            Pt::NoMemory => Errno::NOMEM,
            Pt::AlreadyMapped { .. } => Errno::EXIST,
            Pt::Overflow { .. } => Errno::OVERFLOW,
            _ => Errno::INVAL,
        },
        MmError::Os { errno, .. } => *errno,
        MmError::BadPhysAddr { .. }
        | MmError::BeyondDmaMask { .. }
        | MmError::DmaLayerMemory { .. }
        | MmError::WrongPhysMem { .. } => Errno::IO,
        // `MmError` is non-exhaustive: a variant added later is an internal error until it is
        // given its own errno here.
        _ => Errno::IO,
    }
}

/// The value a C function returns for `e`: `-errno`.
pub fn neg(e: Errno) -> i32 {
    -e.raw_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use devmmu_mm::phys::PhysAddr;
    use devmmu_mm::{AddressSpace, Iova, Prot};

    /// One error of each family, with the errno C sees.
    #[test]
    fn each_error_has_its_errno() {
        let cases: Vec<(MmError, i32)> = vec![
            (
                MmError::NoMemory {
                    pages: 1,
                    contiguous: false,
                    zone: Default::default(),
                },
                -12,
            ),
            (
                MmError::NoAddressSpace {
                    space: AddressSpace::DeviceVa,
                    size: 1,
                    limit: 1,
                },
                -28,
            ),
            (MmError::ZeroSize, -22),
            (
                MmError::Misaligned {
                    value: 1,
                    align: 4096,
                },
                -22,
            ),
            (MmError::BadHandle { handle: 7 }, -2),
            (
                MmError::NotBound {
                    iova: Iova(0x1000),
                    size: 0x1000,
                },
                -2,
            ),
            (
                MmError::VaInUse {
                    iova: Iova(0x1000),
                    size: 0x1000,
                },
                -17,
            ),
            (
                MmError::SharedBounce {
                    device: "a".into(),
                    other: "b".into(),
                },
                -16,
            ),
            (
                MmError::CpuAccessDenied {
                    access: devmmu_mm::bo::CpuAccess::READ,
                },
                -13,
            ),
            (MmError::VfioUnsupported { what: "x" }, -95),
            (MmError::VfioNoGroup { device: "x".into() }, -19),
            (MmError::VfioGroupNotViable { group: 3 }, -16),
            (
                MmError::AddrOverflow {
                    addr: PhysAddr(1),
                    len: u64::MAX,
                },
                -75,
            ),
            (MmError::NoAccess { prot: Prot::NONE }, -22),
            (MmError::PageTable(devmmu_pagetable::Error::NoMemory), -12),
            (
                MmError::Os {
                    op: "mmap",
                    errno: Errno::MFILE,
                },
                -24,
            ),
            (MmError::BadPhysAddr { addr: PhysAddr(0) }, -5),
        ];
        for (e, want) in cases {
            assert_eq!(neg(errno_of(&e)), want, "{e}");
        }
    }
}
