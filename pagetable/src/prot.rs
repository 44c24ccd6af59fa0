//! Typed protection flags for a mapping, in the manner of the kernel's `IOMMU_READ`,
//! `IOMMU_WRITE`, `IOMMU_NOEXEC`, `IOMMU_CACHE`, `IOMMU_MMIO`, `IOMMU_PRIV`
//! (include/linux/iommu.h).

use core::fmt;

bitflags::bitflags! {
    /// Protection and memory-type flags of one mapping (a `bitflags` set: `|`, `&`, `contains`,
    /// `bits`, `from_bits_truncate`, ...).
    ///
    /// A format encodes what it can express and nothing else: see
    /// [`Format::effective_prot`](crate::Format::effective_prot) for what a mapping reads back as
    /// (for example the Intel IPU MMU has no permission bits, so every mapping reads back as
    /// [`Prot::RW`]).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Prot: u8 {
        /// The device may read.
        const READ = 1 << 0;
        /// The device may write.
        const WRITE = 1 << 1;
        /// The device may not execute (instruction fetch) from this mapping.
        const NOEXEC = 1 << 2;
        /// Normal memory, cacheable (write-back) and inner-shareable: for coherent devices.
        /// Without it and without [`Prot::MMIO`], normal non-cacheable memory.
        const CACHE = 1 << 3;
        /// Device (MMIO) memory: uncached, no speculative access; takes precedence over `CACHE`.
        const MMIO = 1 << 4;
        /// Only privileged (firmware / supervisor) accesses of the device may use this mapping.
        const PRIV = 1 << 5;
    }
}

impl Prot {
    /// No access. Refused by `map` ([`Error::NoAccess`](crate::Error::NoAccess)).
    pub const NONE: Prot = Prot::empty();
    /// Read-only data: `READ | NOEXEC`.
    pub const RO: Prot = Prot::READ.union(Prot::NOEXEC);
    /// Read-write data: `READ | WRITE`.
    pub const RW: Prot = Prot::READ.union(Prot::WRITE);
    /// Read-write data, not executable: `READ | WRITE | NOEXEC`.
    pub const RW_NOEXEC: Prot = Prot::RW.union(Prot::NOEXEC);

    /// `self` without the flags of `other`.
    pub const fn without(self, other: Prot) -> Prot {
        self.difference(other)
    }

    /// Whether the mapping grants any data access (read or write).
    pub const fn grants_access(self) -> bool {
        self.intersects(Prot::RW)
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

#[cfg(test)]
mod tests {
    use super::Prot;

    #[test]
    fn constants_keep_their_bits() {
        assert_eq!(Prot::RW_NOEXEC.bits(), 0b111);
        assert_eq!(Prot::from_bits_truncate(0xff), Prot::all());
        assert_eq!(Prot::all().bits(), 0x3f);
        assert_eq!(Prot::RO.without(Prot::NOEXEC), Prot::READ);
        assert!(!Prot::NOEXEC.grants_access() && Prot::WRITE.grants_access());
        assert_eq!(alloc::format!("{:?}", Prot::RW | Prot::CACHE), "rwxc--");
    }
}
