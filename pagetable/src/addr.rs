//! Address newtypes. A device VA can never be passed where a bus address is wanted.

use core::fmt;
use core::ops::{Add, Sub};

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

            /// Whether the address is a multiple of `align` bytes (`align` a power of two).
            #[inline(always)]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
        }

        impl Add<u64> for $name {
            type Output = Self;
            #[inline(always)]
            fn add(self, off: u64) -> Self {
                Self(self.0 + off)
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
