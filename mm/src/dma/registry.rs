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
    /// (segment start, id) -> segment end.
    by_seg: BTreeMap<(DmaAddr, u64), DmaAddr>,
    /// Longest segment ever registered: how far back a containment search must look.
    max_seg: u64,
    pub(crate) iova_ranges: HashMap<u64, IovaRec>,
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
        for s in &m.segs {
            self.by_seg.insert((s.dma, id), s.end());
            self.max_seg = self.max_seg.max(s.len);
        }
        self.maps.insert(id, m);
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Mapping> {
        let m = self.maps.remove(&id)?;
        self.by_handle.remove(&(m.handle, id));
        for s in &m.segs {
            self.by_seg.remove(&(s.dma, id));
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
