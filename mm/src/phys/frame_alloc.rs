//! The frame allocator: one bitmap per RAM region, one bit per 4 KiB frame.
//!
//! It owns only the bookkeeping of which frames are in use; backing memory and the frame table
//! live in [`PhysMem`](super::PhysMem). Scattered allocations are drawn from a seeded PRNG so
//! that a run is reproducible, and now and then take a short run of adjacent frames so that
//! scatter-gather segment merging has something to merge, as it would on a real, fragmented
//! machine. Every allocation either takes all its frames or none.

use super::addr::{PhysAddr, PAGE_SIZE};
use super::map::MemoryMap;
use crate::MmError;

/// Which physical addresses an allocation may use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Zone {
    /// Any RAM; the highest region is used first, lower ones when it runs out (like the
    /// kernel's zone fallback from `ZONE_NORMAL` down to `ZONE_DMA32`).
    #[default]
    Any,
    /// Only frames lying entirely below this address: every byte of every frame is `< limit`
    /// (e.g. `PhysAddr(1 << 32)` for a device with a 32-bit DMA mask and no IOMMU, like
    /// `GFP_DMA32`). Within that, the highest region is used first.
    Below(PhysAddr),
}

impl Zone {
    /// One past the highest frame number this zone admits.
    fn pfn_limit(self) -> u64 {
        match self {
            Zone::Any => u64::MAX,
            Zone::Below(limit) => limit.0 / PAGE_SIZE,
        }
    }
}

/// How to allocate frames: the request passed to
/// [`PhysMem::alloc_frames`](super::PhysMem::alloc_frames).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FrameAlloc {
    /// One physically contiguous run (for devices without an MMU, or a block mapping) instead of
    /// scattered frames.
    pub contiguous: bool,
    /// Which physical addresses are allowed.
    pub zone: Zone,
    /// Alignment in pages, a power of two (1 = none). Contiguous: the run starts at a multiple of
    /// `align_pages` frames. Scattered: the buffer is made of naturally aligned chunks of
    /// `align_pages` contiguous frames (the last chunk may be shorter), the way huge pages back a
    /// buffer, so a device MMU can use block mappings.
    pub align_pages: u64,
}

impl Default for FrameAlloc {
    /// Scattered, any zone, no alignment.
    fn default() -> FrameAlloc {
        FrameAlloc {
            contiguous: false,
            zone: Zone::Any,
            align_pages: 1,
        }
    }
}

impl FrameAlloc {
    /// Scattered frames from any zone (the default).
    pub fn scattered() -> FrameAlloc {
        FrameAlloc::default()
    }

    /// One physically contiguous run from any zone.
    pub fn contiguous() -> FrameAlloc {
        FrameAlloc {
            contiguous: true,
            ..FrameAlloc::default()
        }
    }

    /// The same request, restricted to frames entirely below `limit`.
    pub fn below(self, limit: PhysAddr) -> FrameAlloc {
        FrameAlloc {
            zone: Zone::Below(limit),
            ..self
        }
    }

    /// The same request with an alignment of `pages` frames (a power of two).
    pub fn aligned(self, pages: u64) -> FrameAlloc {
        FrameAlloc {
            align_pages: pages,
            ..self
        }
    }
}

/// splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators", 2014):
/// small, fast, and good enough to scatter frames reproducibly.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n`; `n` must be non-zero.
    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift keeps the bias negligible for the n used here (< 2^40).
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// The bitmap of one RAM region.
#[derive(Debug)]
struct RegionBits {
    base_pfn: u64,
    pages: u64,
    /// Bit `i` set = frame `base_pfn + i` is in use.
    words: Vec<u64>,
    free: u64,
}

impl RegionBits {
    fn is_used(&self, i: u64) -> bool {
        self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64) {
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.free -= 1;
    }

    fn clear(&mut self, i: u64) {
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        self.free += 1;
    }

    /// Number of frames `zone` may use in this region: they are the indices `0..n`.
    fn eligible(&self, zone: Zone) -> u64 {
        zone.pfn_limit()
            .saturating_sub(self.base_pfn)
            .min(self.pages)
    }

    /// Free frames among indices `0..hi`.
    fn free_below(&self, hi: u64) -> u64 {
        if hi == self.pages {
            return self.free;
        }
        let full = (hi / 64) as usize;
        let mut used: u64 = self.words[..full]
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rem = hi % 64;
        if rem != 0 {
            used += u64::from((self.words[full] & ((1 << rem) - 1)).count_ones());
        }
        hi - used
    }

    /// First used index in `lo..hi`, if any.
    fn first_used(&self, lo: u64, hi: u64) -> Option<u64> {
        let mut i = lo;
        while i < hi {
            let w = self.words[(i / 64) as usize] >> (i % 64);
            if w != 0 {
                let found = i + u64::from(w.trailing_zeros());
                return (found < hi).then_some(found);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// First free index in `lo..hi`, if any.
    fn first_free(&self, lo: u64, hi: u64) -> Option<u64> {
        let mut i = lo;
        while i < hi {
            let w = !self.words[(i / 64) as usize] >> (i % 64);
            if w != 0 {
                let found = i + u64::from(w.trailing_zeros());
                return (found < hi).then_some(found);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// First aligned start `s` in `lo..hi` with `s..s+len` all free and `s + len <= hi`.
    fn find_run(&self, lo: u64, hi: u64, len: u64, align: u64) -> Option<u64> {
        let mut s = lo.next_multiple_of(align);
        while s.checked_add(len)? <= hi {
            match self.first_used(s, s + len) {
                None => return Some(s),
                Some(used) => s = (used + 1).next_multiple_of(align),
            }
        }
        None
    }
}

/// Bookkeeping of free and used frames over all regions of a [`MemoryMap`].
#[derive(Debug)]
pub(crate) struct FrameAllocator {
    /// Sorted by base, highest first: the order in which zones are searched.
    regions: Vec<RegionBits>,
    rng: SplitMix64,
}

impl FrameAllocator {
    pub(crate) fn new(map: &MemoryMap, seed: u64) -> FrameAllocator {
        let mut regions: Vec<RegionBits> = map
            .regions()
            .iter()
            .map(|r| RegionBits {
                base_pfn: r.base.pfn().0,
                pages: r.pages(),
                words: vec![0; r.pages().div_ceil(64) as usize],
                free: r.pages(),
            })
            .collect();
        regions.reverse();
        FrameAllocator {
            regions,
            rng: SplitMix64(seed),
        }
    }

    /// Free frames `zone` may use.
    pub(crate) fn free_pages(&self, zone: Zone) -> u64 {
        self.regions
            .iter()
            .map(|r| r.free_below(r.eligible(zone)))
            .sum()
    }

    /// Total frames of the map.
    pub(crate) fn total_pages(&self) -> u64 {
        self.regions.iter().map(|r| r.pages).sum()
    }

    /// Allocates `pages` frames as `req` says and returns their frame numbers in buffer order.
    /// On error nothing is allocated.
    pub(crate) fn alloc(&mut self, pages: u64, req: FrameAlloc) -> Result<Vec<u64>, MmError> {
        if pages == 0 {
            return Err(MmError::ZeroSize);
        }
        if !req.align_pages.is_power_of_two() {
            return Err(MmError::BadAlignment {
                align_pages: req.align_pages,
            });
        }
        let no_memory = MmError::NoMemory {
            pages,
            contiguous: req.contiguous,
            zone: req.zone,
        };
        if self.free_pages(req.zone) < pages {
            return Err(no_memory);
        }
        let got = if req.contiguous {
            self.alloc_contiguous(pages, req)
        } else {
            self.alloc_scattered(pages, req)
        };
        got.ok_or(no_memory)
    }

    fn alloc_contiguous(&mut self, pages: u64, req: FrameAlloc) -> Option<Vec<u64>> {
        for r in &mut self.regions {
            let hi = r.eligible(req.zone);
            if let Some(start) = r.find_run(0, hi, pages, req.align_pages) {
                for i in start..start + pages {
                    r.set(i);
                }
                return Some((start..start + pages).map(|i| r.base_pfn + i).collect());
            }
        }
        None
    }

    fn alloc_scattered(&mut self, pages: u64, req: FrameAlloc) -> Option<Vec<u64>> {
        // (region index, index in region) of each frame taken, for the rollback.
        let mut taken: Vec<(usize, u64)> = Vec::with_capacity(pages as usize);
        let align = req.align_pages;
        let mut ri = 0;
        while (taken.len() as u64) < pages && ri < self.regions.len() {
            let remaining = pages - taken.len() as u64;
            let r = &mut self.regions[ri];
            let hi = r.eligible(req.zone);
            let chunk = if align == 1 {
                Self::pick_single(r, hi, &mut self.rng, remaining)
            } else {
                Self::pick_chunk(r, hi, &mut self.rng, align, remaining)
            };
            match chunk {
                Some((start, len)) => {
                    for i in start..start + len {
                        r.set(i);
                        taken.push((ri, i));
                    }
                }
                None => ri += 1,
            }
        }
        if (taken.len() as u64) < pages {
            for (ri, i) in taken {
                self.regions[ri].clear(i);
            }
            return None;
        }
        Some(
            taken
                .into_iter()
                .map(|(ri, i)| self.regions[ri].base_pfn + i)
                .collect(),
        )
    }

    /// One free frame at a random place in `0..hi`, sometimes followed by a few free neighbours:
    /// returns `(start, len)` with `1 <= len <= remaining`.
    fn pick_single(
        r: &RegionBits,
        hi: u64,
        rng: &mut SplitMix64,
        remaining: u64,
    ) -> Option<(u64, u64)> {
        if hi == 0 {
            return None;
        }
        let from = rng.below(hi);
        let start = r.first_free(from, hi).or_else(|| r.first_free(0, from))?;
        // About one pick in four becomes a run of 2..=8 frames.
        let want = if rng.below(4) == 0 {
            2 + rng.below(7)
        } else {
            1
        };
        let want = want.min(remaining);
        let end = r
            .first_used(start, (start + want).min(hi))
            .unwrap_or((start + want).min(hi));
        Some((start, end - start))
    }

    /// One free, naturally aligned chunk of `align` frames at a random place in `0..hi`, of which
    /// the first `min(align, remaining)` are taken.
    fn pick_chunk(
        r: &RegionBits,
        hi: u64,
        rng: &mut SplitMix64,
        align: u64,
        remaining: u64,
    ) -> Option<(u64, u64)> {
        let len = align.min(remaining);
        let chunks = hi / align;
        if chunks == 0 {
            return None;
        }
        let from = rng.below(chunks) * align;
        let start = r
            .find_run(from, hi, len, align)
            .or_else(|| r.find_run(0, (from + len).min(hi), len, align))?;
        Some((start, len))
    }

    /// Returns frames to the free pool. Each pfn must have been allocated and not yet freed.
    pub(crate) fn free(&mut self, pfns: &[u64]) {
        for &pfn in pfns {
            let region = self
                .regions
                .iter_mut()
                .find(|r| pfn >= r.base_pfn && pfn - r.base_pfn < r.pages);
            if let Some(r) = region {
                let i = pfn - r.base_pfn;
                debug_assert!(r.is_used(i), "double free of pfn {pfn:#x}");
                if r.is_used(i) {
                    r.clear(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::RamRegion;

    fn small_map() -> MemoryMap {
        MemoryMap::new(vec![
            RamRegion {
                base: PhysAddr(0x10_0000),
                size: 64 * PAGE_SIZE,
            },
            RamRegion {
                base: PhysAddr(0x1_0000_0000),
                size: 256 * PAGE_SIZE,
            },
        ])
        .unwrap()
    }

    #[test]
    fn scattered_is_reproducible_and_distinct() {
        let map = small_map();
        let mut a = FrameAllocator::new(&map, 7);
        let mut b = FrameAllocator::new(&map, 7);
        let fa = a.alloc(100, FrameAlloc::scattered()).unwrap();
        let fb = b.alloc(100, FrameAlloc::scattered()).unwrap();
        assert_eq!(fa, fb);
        let mut sorted = fa.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        // All from the high region, which Zone::Any prefers.
        assert!(fa.iter().all(|&p| p >= 0x1_0000_0000 / PAGE_SIZE));
        assert_eq!(a.free_pages(Zone::Any), 320 - 100);
    }

    #[test]
    fn scattered_spills_into_lower_region_and_rolls_back() {
        let map = small_map();
        let mut a = FrameAllocator::new(&map, 1);
        let all = a.alloc(320, FrameAlloc::scattered()).unwrap();
        assert_eq!(all.len(), 320);
        assert_eq!(a.free_pages(Zone::Any), 0);
        a.free(&all);
        assert_eq!(a.free_pages(Zone::Any), 320);

        // Punch one used frame into every aligned 8-frame chunk: 280 frames stay free, but no
        // aligned chunk of 8 does.
        let mut holes = Vec::new();
        for k in 0..40 {
            let start = if k < 8 {
                0x10_0000 / PAGE_SIZE + k * 8
            } else {
                0x1_0000_0000 / PAGE_SIZE + (k - 8) * 8
            };
            holes.push(start + 3);
        }
        for &h in &holes {
            let r = a.regions.iter_mut().find(|r| h >= r.base_pfn).unwrap();
            r.set(h - r.base_pfn);
        }
        let before = a.free_pages(Zone::Any);
        let err = a.alloc(8, FrameAlloc::scattered().aligned(8)).unwrap_err();
        assert!(matches!(err, MmError::NoMemory { pages: 8, .. }));
        assert_eq!(a.free_pages(Zone::Any), before);
        // Unaligned requests still succeed from the same free frames.
        assert_eq!(
            a.alloc(before, FrameAlloc::scattered()).unwrap().len() as u64,
            before
        );
    }

    #[test]
    fn aligned_scattered_chunks_are_aligned_runs() {
        let mut a = FrameAllocator::new(&small_map(), 3);
        let f = a.alloc(20, FrameAlloc::scattered().aligned(8)).unwrap();
        for chunk in f.chunks(8) {
            assert_eq!(chunk[0] % 8, 0);
            for w in chunk.windows(2) {
                assert_eq!(w[1], w[0] + 1);
            }
        }
    }

    #[test]
    fn contiguous_aligned_and_zone() {
        let mut a = FrameAllocator::new(&small_map(), 3);
        let f = a.alloc(16, FrameAlloc::contiguous().aligned(16)).unwrap();
        assert_eq!(f[0] % 16, 0);
        assert!(f.windows(2).all(|w| w[1] == w[0] + 1));
        let low = a
            .alloc(10, FrameAlloc::contiguous().below(PhysAddr(1 << 32)))
            .unwrap();
        assert!(low.iter().all(|&p| (p + 1) * PAGE_SIZE <= 1 << 32));
        assert_eq!(a.alloc(0, FrameAlloc::contiguous()), Err(MmError::ZeroSize));
        assert_eq!(
            a.alloc(1, FrameAlloc::contiguous().aligned(3)),
            Err(MmError::BadAlignment { align_pages: 3 })
        );
    }
}
