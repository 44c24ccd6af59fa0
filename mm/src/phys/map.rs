//! The RAM layout of the simulated machine: which physical ranges hold RAM.
//!
//! Like the firmware memory map (e820 on x86, the `/memory` nodes of a device tree), this only
//! says where RAM is; it allocates nothing. Frames get backing memory only when allocated.

use super::addr::{PhysAddr, MAX_PHYS_ADDR, PAGE_SIZE};
use crate::MmError;

/// One contiguous range of RAM.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RamRegion {
    /// First byte of the region; a multiple of [`PAGE_SIZE`].
    pub base: PhysAddr,
    /// Size in bytes; a non-zero multiple of [`PAGE_SIZE`].
    pub size: u64,
}

impl RamRegion {
    /// One past the last byte, or `None` if that overflows 64 bits.
    pub const fn end(&self) -> Option<PhysAddr> {
        self.base.checked_add(self.size)
    }

    /// Number of 4 KiB frames in the region (`size / PAGE_SIZE`).
    pub const fn pages(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// Whether `addr` lies inside the region.
    pub fn contains(&self, addr: PhysAddr) -> bool {
        addr >= self.base && addr.0 - self.base.0 < self.size
    }
}

/// The set of RAM regions of a machine, sorted by base address, non-overlapping.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MemoryMap {
    regions: Vec<RamRegion>,
}

/// 4 GiB: the limit of a 32-bit DMA mask, where the layouts below split low and high RAM.
const FOUR_GIB: u64 = 1 << 32;

impl MemoryMap {
    /// Builds a map from `regions` (in any order), sorting them by base.
    ///
    /// # Errors
    /// - [`MmError::EmptyMemoryMap`]: `regions` is empty.
    /// - [`MmError::RegionMisaligned`]: a region has zero size, or a base or size that is not a
    ///   multiple of [`PAGE_SIZE`].
    /// - [`MmError::RegionBeyondMaxPhys`]: a region ends above [`MAX_PHYS_ADDR`] (2^52).
    /// - [`MmError::RegionsOverlap`]: two regions share a byte.
    pub fn new(mut regions: Vec<RamRegion>) -> Result<MemoryMap, MmError> {
        if regions.is_empty() {
            return Err(MmError::EmptyMemoryMap);
        }
        for r in &regions {
            if r.size == 0 || !r.base.is_aligned(PAGE_SIZE) || !r.size.is_multiple_of(PAGE_SIZE) {
                return Err(MmError::RegionMisaligned { region: *r });
            }
            match r.end() {
                Some(end) if end.0 <= MAX_PHYS_ADDR => {}
                _ => return Err(MmError::RegionBeyondMaxPhys { region: *r }),
            }
        }
        regions.sort_by_key(|r| r.base);
        for pair in regions.windows(2) {
            // Both ends were checked above, so `end()` is `Some`.
            let first_end = pair[0].base.0 + pair[0].size;
            if pair[1].base.0 < first_end {
                return Err(MmError::RegionsOverlap {
                    first: pair[0],
                    second: pair[1],
                });
            }
        }
        Ok(MemoryMap { regions })
    }

    /// Only RAM above 4 GiB: 8 GiB at `0x1_0000_0000`.
    ///
    /// Models a platform where a device limited to a 32-bit DMA mask cannot reach any RAM
    /// directly: it needs a system IOMMU, since even a swiotlb pool (which must sit below the
    /// mask) has nowhere to go. For the usual "buffers above 4 GiB, tables and bounce pool below"
    /// layout, use [`MemoryMap::default`] with [`Zone::Any`](super::Zone::Any) (which prefers
    /// high memory) and [`Zone::Below`](super::Zone::Below).
    pub fn high_only() -> MemoryMap {
        MemoryMap {
            regions: vec![RamRegion {
                base: PhysAddr(FOUR_GIB),
                size: 8 << 30,
            }],
        }
    }

    /// The regions, sorted by base address.
    pub fn regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// Total RAM in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// The region holding `addr`, if any.
    pub fn region_of(&self, addr: PhysAddr) -> Option<&RamRegion> {
        self.regions.iter().find(|r| r.contains(addr))
    }
}

impl Default for MemoryMap {
    /// 256 MiB of low RAM at `0x8000_0000` (reachable with a 32-bit DMA mask: device page
    /// tables, a swiotlb pool) and 8 GiB of high RAM at `0x1_0000_0000` (buffers, which
    /// [`Zone::Any`](super::Zone::Any) takes from the highest region first). The split mirrors
    /// x86 machines, whose RAM below 4 GiB stops at the PCI hole.
    fn default() -> MemoryMap {
        MemoryMap {
            regions: vec![
                RamRegion {
                    base: PhysAddr(0x8000_0000),
                    size: 256 << 20,
                },
                RamRegion {
                    base: PhysAddr(FOUR_GIB),
                    size: 8 << 30,
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(base: u64, size: u64) -> RamRegion {
        RamRegion {
            base: PhysAddr(base),
            size,
        }
    }

    #[test]
    fn new_sorts_and_validates() {
        let m = MemoryMap::new(vec![region(0x10_0000, 0x1000), region(0x1000, 0x2000)]).unwrap();
        assert_eq!(m.regions()[0].base, PhysAddr(0x1000));
        assert_eq!(m.total_bytes(), 0x3000);
        assert_eq!(m.region_of(PhysAddr(0x2fff)), Some(&region(0x1000, 0x2000)));
        assert_eq!(m.region_of(PhysAddr(0x3000)), None);

        assert_eq!(MemoryMap::new(vec![]), Err(MmError::EmptyMemoryMap));
        let bad = region(0x1000, 0x1800);
        assert_eq!(
            MemoryMap::new(vec![bad]),
            Err(MmError::RegionMisaligned { region: bad })
        );
        let zero = region(0x1000, 0);
        assert_eq!(
            MemoryMap::new(vec![zero]),
            Err(MmError::RegionMisaligned { region: zero })
        );
        let high = region(MAX_PHYS_ADDR - 0x1000, 0x2000);
        assert_eq!(
            MemoryMap::new(vec![high]),
            Err(MmError::RegionBeyondMaxPhys { region: high })
        );
        let (a, b) = (region(0x1000, 0x2000), region(0x2000, 0x1000));
        assert_eq!(
            MemoryMap::new(vec![b, a]),
            Err(MmError::RegionsOverlap {
                first: a,
                second: b
            })
        );
    }

    #[test]
    fn default_layouts_are_valid() {
        for m in [MemoryMap::default(), MemoryMap::high_only()] {
            assert_eq!(MemoryMap::new(m.regions().to_vec()), Ok(m.clone()));
        }
        assert!(MemoryMap::high_only()
            .regions()
            .iter()
            .all(|r| r.base.0 >= FOUR_GIB));
    }
}
