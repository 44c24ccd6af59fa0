//! The live mappings of one device: what each DMA address stands for.
//!
//! Always kept (not only with debugging): unmap and sync need the original physical range and
//! bounce slot behind an address, an unmap of something not mapped must be refused rather than
//! corrupt state, and detach reports leaks. Several mappings may share a bus address (direct DMA
//! maps the same page to the same address twice), so entries are keyed by an id, with indexes by
//! handle and by segment.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::sync::atomic::{AtomicU64, Ordering};

use devmmu_pagetable::DmaAddr;

use super::iommu::IovaNode;
use super::types::{DmaDirection, MappingKind};
use crate::phys::PhysAddr;

/// One DMA-contiguous piece of a mapping and the bytes behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    /// Bus address of the first byte.
    pub(crate) dma: DmaAddr,
    /// Bytes.
    pub(crate) len: u64,
    /// CPU physical address of the original first byte.
    pub(crate) pa: PhysAddr,
    /// The swiotlb bounce buffer the device really accesses, if bounced.
    pub(crate) bounce: Option<PhysAddr>,
}

impl Seg {
    /// Where the device's accesses land: the bounce buffer, or the original.
    pub(crate) fn target(&self) -> PhysAddr {
        self.bounce.unwrap_or(self.pa)
    }

    /// Bus address one past the last byte.
    pub(crate) fn end(&self) -> DmaAddr {
        self.dma + self.len
    }
}

/// One live mapping.
#[derive(Clone, Debug)]
pub(crate) struct Mapping {
    pub(crate) kind: MappingKind,
    pub(crate) dir: DmaDirection,
    /// The address the caller was given.
    pub(crate) handle: DmaAddr,
    /// The length the caller asked for, in bytes.
    pub(crate) len: u64,
    /// In DMA order, non-empty.
    pub(crate) segs: Vec<Seg>,
    /// System IOMMU: the IOVA node that holds the mapping.
    pub(crate) iova: Option<IovaNode>,
    /// The device owns the bytes (mapped or synced for device, not synced for CPU since).
    pub(crate) device_owned: bool,
    /// `mapping_error` was asked about it.
    pub(crate) checked: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A two-step IOVA range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IovaRec {
    /// Bus address (IOVA) of byte 0.
    pub(crate) start: DmaAddr,
    /// Usable bytes (the request rounded up to the granule).
    pub(crate) size: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    maps: HashMap<u64, Mapping>,
    /// (handle, id).
    by_handle: BTreeSet<(DmaAddr, u64)>,
    /// (run start, id) -> run end, where a run is a maximal stretch of a mapping's segments
    /// that follow each other in bus addresses (behind a system IOMMU, the whole mapping: one
    /// entry instead of one per page of a scattered buffer).
    by_seg: BTreeMap<(DmaAddr, u64), DmaAddr>,
    /// Longest run ever registered, in bytes: how far back a containment search must look.
    max_seg: u64,
    pub(crate) iova_ranges: HashMap<u64, IovaRec>,
}

/// The runs of `segs`: `[start, end)` bus-address ranges, each a maximal stretch of segments
/// where one ends where the next begins.
fn runs(segs: &[Seg]) -> impl Iterator<Item = (DmaAddr, DmaAddr)> + '_ {
    let mut i = 0;
    core::iter::from_fn(move || {
        let first = segs.get(i)?;
        let mut end = first.end();
        i += 1;
        while let Some(next) = segs.get(i).filter(|s| s.dma == end) {
            end = next.end();
            i += 1;
        }
        Some((first.dma, end))
    })
}

impl Registry {
    /// A fresh id, unique across all devices, so that a handle of one device (an `SgTable`, an
    /// `IovaRange`) can never name a mapping of another.
    pub(crate) fn new_id(&mut self) -> u64 {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers `m` under a fresh id, returned.
    pub(crate) fn insert(&mut self, m: Mapping) -> u64 {
        let id = self.new_id();
        self.insert_with_id(id, m);
        id
    }

    pub(crate) fn insert_with_id(&mut self, id: u64, m: Mapping) {
        self.by_handle.insert((m.handle, id));
        for (start, end) in runs(&m.segs) {
            self.by_seg.insert((start, id), end);
            self.max_seg = self.max_seg.max(end.get() - start.get());
        }
        self.maps.insert(id, m);
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Mapping> {
        let m = self.maps.remove(&id)?;
        self.by_handle.remove(&(m.handle, id));
        // A mapping's segments never change once registered (only its flags do), so these are
        // the runs `insert_with_id` indexed.
        for (start, _) in runs(&m.segs) {
            self.by_seg.remove(&(start, id));
        }
        Some(m)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Mapping> {
        self.maps.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Mapping> {
        self.maps.get_mut(&id)
    }

    /// Ids of the mappings whose handle is `dma`, oldest first.
    pub(crate) fn at_handle(&self, dma: DmaAddr) -> Vec<u64> {
        self.by_handle
            .range((dma, 0)..=(dma, u64::MAX))
            .map(|&(_, id)| id)
            .collect()
    }

    /// Ids of the mappings with a segment intersecting `[lo, hi)`, each once, oldest first.
    pub(crate) fn intersecting(&self, lo: DmaAddr, hi: DmaAddr) -> Vec<u64> {
        if hi <= lo {
            return Vec::new();
        }
        let from = lo.saturating_sub(self.max_seg);
        let mut ids: Vec<u64> = self
            .by_seg
            .range((from, 0)..(hi, 0))
            .filter(|(_, &end)| end > lo)
            .map(|(&(_, id), _)| id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Mapping)> {
        self.maps.iter().map(|(&id, m)| (id, m))
    }

    pub(crate) fn len(&self) -> usize {
        self.maps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(dma: u64, len: u64) -> Seg {
        Seg {
            dma: DmaAddr(dma),
            len,
            pa: PhysAddr(0x1_0000_0000 + dma),
            bounce: None,
        }
    }

    #[test]
    fn runs_join_adjacent_segments_only() {
        let segs = [
            seg(0x1000, 0x1000),
            seg(0x2000, 0x1000),
            seg(0x3000, 0x800),
            seg(0x8000, 0x1000),
            seg(0x9000, 0x1000),
            seg(0x4000, 0x1000),
        ];
        let got: Vec<(u64, u64)> = runs(&segs).map(|(a, b)| (a.get(), b.get())).collect();
        assert_eq!(got, [(0x1000, 0x3800), (0x8000, 0xa000), (0x4000, 0x5000)]);
        assert_eq!(runs(&[]).count(), 0);
    }

    #[test]
    fn intersecting_finds_a_mapping_by_any_byte_of_a_run() {
        let mut reg = Registry::default();
        let m = |segs: Vec<Seg>| Mapping {
            kind: MappingKind::Sg,
            dir: DmaDirection::Bidirectional,
            handle: segs[0].dma,
            len: segs.iter().map(|s| s.len).sum(),
            segs,
            iova: None,
            device_owned: true,
            checked: false,
        };
        let a = reg.insert(m(vec![seg(0x10000, 0x1000), seg(0x11000, 0x1000)]));
        let b = reg.insert(m(vec![seg(0x20000, 0x1000), seg(0x40000, 0x1000)]));
        assert_eq!(reg.by_seg.len(), 3, "one run for a, two for b");
        assert_eq!(reg.intersecting(DmaAddr(0x11fff), DmaAddr(0x12000)), [a]);
        assert_eq!(reg.intersecting(DmaAddr(0x40800), DmaAddr(0x40801)), [b]);
        assert!(reg
            .intersecting(DmaAddr(0x21000), DmaAddr(0x40000))
            .is_empty());
        assert_eq!(reg.intersecting(DmaAddr(0), DmaAddr(u64::MAX)), [a, b]);
        reg.remove(a).unwrap();
        reg.remove(b).unwrap();
        assert!(reg.by_seg.is_empty());
    }
}
