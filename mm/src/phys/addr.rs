//! Physical addresses and page frame numbers.
//!
//! A `PhysAddr` is a CPU physical address, never a bus address: what a device is given is a
//! `DmaAddr` from the system DMA layer, which may differ (IOMMU, bounce buffer, DMA offset).
//! Keeping the two as distinct newtypes stops one from being passed where the other is wanted.

use core::fmt;

/// Size in bytes of one page frame: the granule of the frame allocator (4 KiB).
pub const PAGE_SIZE: u64 = 4096;

/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// One past the largest physical address any [`MemoryMap`](super::MemoryMap) may use: 2^52 bytes
/// (x86-64 MAXPHYADDR limit, Intel SDM vol. 3A §4.1.4; ARMv8.2-LPA 52-bit PA).
pub const MAX_PHYS_ADDR: u64 = 1 << 52;

/// A CPU physical address, in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

impl PhysAddr {
    /// The address as a plain integer.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The frame that holds this address.
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }

    /// Byte offset of this address inside its 4 KiB frame (`0..PAGE_SIZE`).
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }

    /// `self + bytes`, or `None` if that overflows 64 bits.
    pub const fn checked_add(self, bytes: u64) -> Option<PhysAddr> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }

    /// `self - bytes`, or `None` if that goes below zero.
    pub const fn checked_sub(self, bytes: u64) -> Option<PhysAddr> {
        match self.0.checked_sub(bytes) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }

    /// `self + bytes`, clamped at `u64::MAX`: the end of a range that may reach past 2^64.
    pub const fn saturating_add(self, bytes: u64) -> PhysAddr {
        PhysAddr(self.0.saturating_add(bytes))
    }

    /// Distance in bytes from `base` up to `self`, or `None` if `self < base`.
    pub const fn offset_from(self, base: PhysAddr) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    /// Whether the address is a multiple of `align` bytes. `align` must be a power of two;
    /// any other value (including 0) gives `false`.
    pub const fn is_aligned(self, align: u64) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// The address rounded down to a multiple of `align` bytes (a power of two; any other value
    /// returns the address unchanged).
    pub const fn align_down(self, align: u64) -> PhysAddr {
        if align.is_power_of_two() {
            PhysAddr(self.0 & !(align - 1))
        } else {
            self
        }
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// `addr + bytes` (overflow is a bug: it panics with debug assertions, as `u64` addition does).
impl core::ops::Add<u64> for PhysAddr {
    type Output = PhysAddr;
    fn add(self, bytes: u64) -> PhysAddr {
        PhysAddr(self.0 + bytes)
    }
}

/// `end - start`: the bytes between two addresses (`end >= start`; see
/// [`PhysAddr::offset_from`] for the checked form).
impl core::ops::Sub<PhysAddr> for PhysAddr {
    type Output = u64;
    fn sub(self, start: PhysAddr) -> u64 {
        self.0 - start.0
    }
}

/// A page frame number: a physical address divided by [`PAGE_SIZE`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Pfn(pub u64);

impl Pfn {
    /// Physical address of the first byte of the frame. Frame numbers of any valid
    /// [`MemoryMap`](super::MemoryMap) are below 2^40, so the shift loses no bits; for larger
    /// values the top bits are dropped.
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
}

/// Number of pages needed to hold `bytes` bytes (rounded up), or `None` on overflow.
pub const fn pages_for(bytes: u64) -> Option<u64> {
    match bytes.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(v >> PAGE_SHIFT),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfn_round_trip_and_offsets() {
        let pa = PhysAddr(0x1_2345_6789);
        assert_eq!(pa.pfn(), Pfn(0x12_3456));
        assert_eq!(pa.page_offset(), 0x789);
        assert_eq!(pa.pfn().addr(), PhysAddr(0x1_2345_6000));
        assert_eq!(pa.align_down(64), PhysAddr(0x1_2345_6780));
        assert!(!pa.is_aligned(64));
        assert!(PhysAddr(0x1000).is_aligned(4096));
        assert!(!PhysAddr(0x1000).is_aligned(3));
        assert_eq!(PhysAddr(u64::MAX).checked_add(1), None);
        assert_eq!(PhysAddr(0x10).offset_from(PhysAddr(0x20)), None);
        assert_eq!(PhysAddr(0x30).offset_from(PhysAddr(0x20)), Some(0x10));
        assert_eq!(pages_for(1), Some(1));
        assert_eq!(pages_for(4096), Some(1));
        assert_eq!(pages_for(4097), Some(2));
        assert_eq!(pages_for(u64::MAX), None);
        assert_eq!(format!("{pa}"), "0x123456789");
    }

    #[test]
    fn saturating_add_and_operators() {
        assert_eq!(PhysAddr(u64::MAX - 1).saturating_add(4), PhysAddr(u64::MAX));
        assert_eq!(PhysAddr(0x20) + 0x10, PhysAddr(0x30));
        assert_eq!(PhysAddr(0x30) - PhysAddr(0x20), 0x10);
    }
}
