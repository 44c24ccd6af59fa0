//! Address newtypes. A device VA can never be passed where a bus address is wanted.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

macro_rules! addr_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value, in bytes.
            #[inline(always)]
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + off`, or `None` on overflow past `u64::MAX`.
            #[inline]
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - off`, or `None` below zero.
            #[inline]
            pub const fn checked_sub(self, off: u64) -> Option<Self> {
                match self.0.checked_sub(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self + off`, clamped at `u64::MAX`.
            #[inline]
            pub const fn saturating_add(self, off: u64) -> Self {
                Self(self.0.saturating_add(off))
            }

            /// `self - off`, clamped at 0.
            #[inline]
            pub const fn saturating_sub(self, off: u64) -> Self {
                Self(self.0.saturating_sub(off))
            }

            /// Distance in bytes from `base` up to `self`, or `None` if `self < base`.
            #[inline]
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// Whether the address is a multiple of `align` bytes (`align` a power of two).
            #[inline(always)]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }

            /// The address rounded down to a multiple of `align` bytes (`align` a power of two).
            #[inline(always)]
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }

            /// The address rounded up to a multiple of `align` bytes (`align` a power of two), or
            /// `None` if that overflows past `u64::MAX`.
            #[inline]
            pub const fn checked_align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }
        }

        impl Add<u64> for $name {
            type Output = Self;
            #[inline(always)]
            fn add(self, off: u64) -> Self {
                Self(self.0 + off)
            }
        }

        impl AddAssign<u64> for $name {
            #[inline(always)]
            fn add_assign(&mut self, off: u64) {
                self.0 += off;
            }
        }

        impl Sub<$name> for $name {
            type Output = u64;
            #[inline(always)]
            fn sub(self, other: $name) -> u64 {
                self.0 - other.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

addr_type!(
    /// An I/O virtual address: an address in a device's own address space, the input of its MMU
    /// (the kernel's `unsigned long iova` in `iommu_map`). In bytes.
    Iova
);

addr_type!(
    /// A bus address as the system DMA layer returns it (the kernel's `dma_addr_t`): what a device
    /// puts on the bus, and what an IOPTE holds. Never a CPU physical address unless the system
    /// DMA ops are direct with no offset. In bytes.
    DmaAddr
);

#[cfg(test)]
mod tests {
    use super::DmaAddr;

    #[test]
    fn checked_and_saturating_arithmetic() {
        let a = DmaAddr(0x1234);
        assert_eq!(a.checked_add(0x10), Some(DmaAddr(0x1244)));
        assert_eq!(DmaAddr(u64::MAX).checked_add(1), None);
        assert_eq!(a.checked_sub(0x34), Some(DmaAddr(0x1200)));
        assert_eq!(a.checked_sub(0x1235), None);
        assert_eq!(DmaAddr(u64::MAX - 1).saturating_add(4), DmaAddr(u64::MAX));
        assert_eq!(a.saturating_sub(0x2000), DmaAddr(0));
        assert_eq!(a.offset_from(DmaAddr(0x1000)), Some(0x234));
        assert_eq!(DmaAddr(0x1000).offset_from(a), None);
        assert_eq!(a.align_down(0x1000), DmaAddr(0x1000));
        assert_eq!(a.checked_align_up(0x1000), Some(DmaAddr(0x2000)));
        assert_eq!(
            DmaAddr(0x2000).checked_align_up(0x1000),
            Some(DmaAddr(0x2000))
        );
        assert_eq!(DmaAddr(u64::MAX - 1).checked_align_up(0x1000), None);
        let mut b = a;
        b += 0x10;
        assert_eq!(b, a + 0x10);
        assert_eq!(b - a, 0x10);
    }
}
