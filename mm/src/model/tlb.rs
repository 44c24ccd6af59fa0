//! The device TLB of the simulated MMU: a fixed number of entries that keep a translation until
//! the driver invalidates it. A driver that forgets an invalidation keeps using the stale
//! translation, exactly as on hardware, instead of being silently fixed by a fresh walk.

use devmmu_pagetable::{DmaAddr, Prot};
use serde::Serialize;

/// One cached translation: a whole leaf (page or block) of one address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbEntry {
    /// Address-space id (the VM's id), like an ASID/PASID tag.
    pub asid: u32,
    /// IOVA of the start of the leaf.
    pub iova: u64,
    /// Leaf size in bytes.
    pub size: u64,
    /// Bus address of the start of the leaf.
    pub dma: DmaAddr,
    /// Permissions of the leaf.
    pub prot: Prot,
}

/// Counters of the TLB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TlbStats {
    /// Lookups answered from the TLB.
    pub hits: u64,
    /// Lookups that needed a table walk.
    pub misses: u64,
    /// Invalidation requests received (range or whole-TLB), i.e. what the driver issued.
    pub invalidations: u64,
    /// Entries dropped by those invalidations.
    pub entries_invalidated: u64,
    /// Entries evicted to make room (capacity misses).
    pub evictions: u64,
}

/// A fully associative TLB with round-robin replacement.
///
/// Besides its entries, it remembers every block (leaf larger than 4 KiB) it has walked and not
/// yet seen invalidated: the architecture lets a TLB keep any translation it walked until an
/// invalidation covers it, whatever a replacement policy evicted (Arm ARM DDI 0487, "TLB
/// maintenance requirements and the TLB maintenance instructions"). A later walk that returns a
/// different leaf overlapping such a block means a table (or another leaf) was written over a
/// live block without break-before-make: [`Tlb::note_walk`] reports it, as an SMMUv3 reports
/// `F_TLB_CONFLICT`.
#[derive(Debug)]
pub struct Tlb {
    capacity: usize,
    entries: Vec<TlbEntry>,
    victim: usize,
    stats: TlbStats,
    /// Blocks walked and not invalidated since.
    walked_blocks: Vec<TlbEntry>,
    /// The walk cache: table descriptors read on walks, kept until a non-leaf invalidation
    /// covers them.
    walk_cache: Vec<WalkCacheEntry>,
}

/// One cached table descriptor: the entry at bus address `pte_addr` (an upper-level entry of
/// address space `asid`'s tables, covering IOVAs `[iova, iova + size)`) read as `raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkCacheEntry {
    /// Address-space id.
    pub asid: u32,
    /// First IOVA the descriptor translates.
    pub iova: u64,
    /// Bytes of IOVA it translates.
    pub size: u64,
    /// Bus address of the descriptor.
    pub pte_addr: DmaAddr,
    /// The descriptor as read.
    pub raw: u64,
}

impl Tlb {
    /// A TLB of `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            entries: Vec::with_capacity(capacity),
            victim: 0,
            stats: TlbStats::default(),
            walked_blocks: Vec::new(),
            walk_cache: Vec::new(),
        }
    }

    /// Number of entries it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries currently held.
    pub fn entries(&self) -> &[TlbEntry] {
        &self.entries
    }

    /// Counters.
    pub fn stats(&self) -> TlbStats {
        self.stats
    }

    /// The cached leaf covering `iova` in address space `asid`, counting a hit or a miss.
    pub fn lookup(&mut self, asid: u32, iova: u64) -> Option<TlbEntry> {
        let hit = self
            .entries
            .iter()
            .find(|e| e.asid == asid && iova.wrapping_sub(e.iova) < e.size)
            .copied();
        if hit.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        hit
    }

    /// Records a leaf a walk just returned, before it is cached: returns the block this TLB may
    /// still hold (walked, never invalidated since) that overlaps `entry` but is not the same
    /// leaf, i.e. a break-before-make violation the hardware would see as a TLB conflict; and
    /// remembers `entry` if it is itself a block.
    pub fn note_walk(&mut self, entry: &TlbEntry) -> Option<TlbEntry> {
        let overlaps = |b: &TlbEntry| {
            b.asid == entry.asid
                && b.iova < entry.iova.saturating_add(entry.size)
                && entry.iova < b.iova.saturating_add(b.size)
        };
        let conflict = self
            .walked_blocks
            .iter()
            .find(|b| overlaps(b) && *b != entry)
            .copied();
        if entry.size > crate::phys::PAGE_SIZE && !self.walked_blocks.contains(entry) {
            self.walked_blocks.push(*entry);
        }
        conflict
    }

    /// The cached table descriptor at `pte_addr` for `asid`, if any (a walk-cache hit).
    pub fn walk_lookup(&self, asid: u32, pte_addr: DmaAddr) -> Option<u64> {
        self.walk_cache
            .iter()
            .find(|w| w.asid == asid && w.pte_addr == pte_addr)
            .map(|w| w.raw)
    }

    /// Caches a table descriptor a walk read (the walk cache has no capacity limit: what it
    /// holds is exactly what the architecture allows it to hold until invalidated).
    pub fn walk_insert(&mut self, entry: WalkCacheEntry) {
        if !self.walk_cache.contains(&entry) {
            self.walk_cache
                .retain(|w| !(w.asid == entry.asid && w.pte_addr == entry.pte_addr));
            self.walk_cache.push(entry);
        }
    }

    /// The walk cache's entries.
    pub fn walk_entries(&self) -> &[WalkCacheEntry] {
        &self.walk_cache
    }

    /// Drops `entry` (the exact leaf) from the entries and from the walked blocks, without
    /// counting an invalidation: the MMU replacing a translation it is about to fetch again
    /// (a write through a cached writable-clean leaf, hardware dirty-state update).
    pub(crate) fn forget(&mut self, entry: &TlbEntry) {
        self.walked_blocks.retain(|b| b != entry);
        let before = self.entries.len();
        self.entries.retain(|e| e != entry);
        if before != self.entries.len() && self.victim >= self.entries.len().max(1) {
            self.victim = 0;
        }
    }

    /// Caches a walked leaf, evicting round-robin when full.
    pub fn insert(&mut self, entry: TlbEntry) {
        if self.entries.len() < self.capacity {
            self.entries.push(entry);
        } else {
            self.entries[self.victim] = entry;
            self.victim = (self.victim + 1) % self.capacity;
            self.stats.evictions += 1;
        }
    }

    /// Drops every entry of `asid` (all address spaces if `None`) whose leaf overlaps
    /// `[iova, iova + size)` bytes, and the walk-cache entries overlapping it.
    pub fn invalidate_range(&mut self, asid: Option<u32>, iova: u64, size: u64) {
        let end = iova.saturating_add(size);
        self.walk_cache.retain(|w| {
            let same = asid.is_none_or(|a| a == w.asid);
            !(same && w.iova < end && iova < w.iova.saturating_add(w.size))
        });
        self.invalidate_leaf_range(asid, iova, size);
    }

    /// As [`Tlb::invalidate_range`], but leaf entries only: the walk cache keeps its table
    /// descriptors (a leaf-only invalidation, SMMUv3 Leaf=1).
    pub fn invalidate_leaf_range(&mut self, asid: Option<u32>, iova: u64, size: u64) {
        let end = iova.saturating_add(size);
        self.stats.invalidations += 1;
        let keep = |e: &TlbEntry| {
            let same = asid.is_none_or(|a| a == e.asid);
            !(same && e.iova < end && iova < e.iova.saturating_add(e.size))
        };
        self.walked_blocks.retain(keep);
        self.retain(keep);
    }

    /// Drops every entry (a whole-TLB invalidation, as the IPU MMU's invalidate register does).
    pub fn invalidate_all(&mut self) {
        self.stats.invalidations += 1;
        self.walked_blocks.clear();
        self.walk_cache.clear();
        self.retain(|_| false);
    }

    fn retain(&mut self, keep: impl Fn(&TlbEntry) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|e| keep(e));
        self.stats.entries_invalidated += (before - self.entries.len()) as u64;
        if self.victim >= self.entries.len().max(1) {
            self.victim = 0;
        }
    }
}
