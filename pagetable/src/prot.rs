//! Typed protection flags for a mapping, in the manner of the kernel's `IOMMU_READ`,
//! `IOMMU_WRITE`, `IOMMU_NOEXEC`, `IOMMU_CACHE`, `IOMMU_MMIO`, `IOMMU_PRIV`
//! (include/linux/iommu.h).

use core::fmt;
use core::ops::{BitAnd, BitOr};

/// Protection and memory-type flags of one mapping.
///
/// A format encodes what it can express and nothing else: see
/// [`Format::effective_prot`](crate::Format::effective_prot) for what a mapping reads back as
/// (for example the Intel IPU MMU has no permission bits, so every mapping reads back as
/// [`Prot::RW`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prot(u8);

impl Prot {
    /// No access. Refused by `map` ([`Error::NoAccess`](crate::Error::NoAccess)).
    pub const NONE: Prot = Prot(0);
    /// The device may read.
    pub const READ: Prot = Prot(1 << 0);
    /// The device may write.
    pub const WRITE: Prot = Prot(1 << 1);
    /// The device may not execute (instruction fetch) from this mapping.
    pub const NOEXEC: Prot = Prot(1 << 2);
    /// Normal memory, cacheable (write-back) and inner-shareable: for coherent devices.
    /// Without it and without [`Prot::MMIO`], normal non-cacheable memory.
    pub const CACHE: Prot = Prot(1 << 3);
    /// Device (MMIO) memory: uncached, no speculative access; takes precedence over `CACHE`.
    pub const MMIO: Prot = Prot(1 << 4);
    /// Only privileged (firmware / supervisor) accesses of the device may use this mapping.
    pub const PRIV: Prot = Prot(1 << 5);

    /// Read-only data: `READ | NOEXEC`.
    pub const RO: Prot = Prot(Self::READ.0 | Self::NOEXEC.0);
    /// Read-write data: `READ | WRITE`.
    pub const RW: Prot = Prot(Self::READ.0 | Self::WRITE.0);
    /// Read-write data, not executable: `READ | WRITE | NOEXEC`.
    pub const RW_NOEXEC: Prot = Prot(Self::RW.0 | Self::NOEXEC.0);

    const ALL: u8 = 0x3f;

    /// The raw bits (bit 0 READ .. bit 5 PRIV).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Builds from raw bits; bits above bit 5 are dropped.
    pub const fn from_bits_truncate(bits: u8) -> Prot {
        Prot(bits & Self::ALL)
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `self` without the flags of `other`.
    pub const fn without(self, other: Prot) -> Prot {
        Prot(self.0 & !other.0)
    }

    /// Whether the mapping grants any data access (read or write).
    pub const fn grants_access(self) -> bool {
        self.0 & (Self::READ.0 | Self::WRITE.0) != 0
    }
}

impl BitOr for Prot {
    type Output = Prot;
    fn bitor(self, rhs: Prot) -> Prot {
        Prot(self.0 | rhs.0)
    }
}

impl BitAnd for Prot {
    type Output = Prot;
    fn bitand(self, rhs: Prot) -> Prot {
        Prot(self.0 & rhs.0)
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Prot {
    /// `r`, `w`, `x` (executable, i.e. no NOEXEC), then `c` (cacheable), `d` (device/MMIO),
    /// `p` (privileged), `-` for each absent flag: e.g. `rw-c--`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |p: Prot, ch: char| if self.contains(p) { ch } else { '-' };
        let x = if self.contains(Prot::NOEXEC) {
            '-'
        } else {
            'x'
        };
        write!(
            f,
            "{}{}{}{}{}{}",
            c(Prot::READ, 'r'),
            c(Prot::WRITE, 'w'),
            x,
            c(Prot::CACHE, 'c'),
            c(Prot::MMIO, 'd'),
            c(Prot::PRIV, 'p')
        )
    }
}
