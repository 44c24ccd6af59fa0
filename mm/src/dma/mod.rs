//! The system DMA ops: how a device gets bus addresses ([`DmaAddr`]) for memory, and how the
//! bytes change hands between CPU and device (Linux's DMA API: Documentation/core-api/dma-api.rst,
//! dma-api-howto.rst; kernel/dma/direct.c, swiotlb.c, debug.c; drivers/iommu/dma-iommu.c).
//!
//! [`DmaOps`] is an enum of peers, chosen once at [`DmaOps::attach`]:
//! - [`Direct`]: `DmaAddr = phys + bus_offset`; a range beyond the device's DMA mask is bounced
//!   through a swiotlb pool (`swiotlb.rs`) or refused when the platform has none;
//! - [`IommuDomain`]: the device sits behind a system IOMMU; every mapping gets an IOVA in the
//!   device's own domain and IOPTEs in a page table walked from physical memory.
//!
//! This module owns the DMA-API semantics common to both: streaming mappings (map / unmap /
//! sync, with the cache maintenance a non-coherent device needs, `sync.rs`), coherent and
//! non-coherent buffers (`buffer.rs`), the two-step IOVA API (`iova.rs`), the record of live
//! mappings (`registry.rs`), DMA-API debugging (`debug.rs`) and what the bus does with an
//! address a device emits ([`DmaOps::bus_to_phys`]). It never writes a device's own page table:
//! the device VM does, from the `DmaAddr`s returned here.
//!
//! Units: addresses and lengths in bytes throughout; granule 4 KiB.

mod buffer;
mod debug;
mod direct;
mod iommu;
mod iova;
mod registry;
mod stats;
mod swiotlb;
mod sync;
mod table_pool;
mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use buffer::{CoherentBuffer, NonCoherentBuffer};
pub use debug::{DmaDiag, KindLeak, LeakReport, MAX_DIAGNOSTICS};
pub use devmmu_pagetable::DmaAddr;
pub use direct::Direct;
pub use iommu::{IommuDomain, IOVA_GRANULE};
pub use iova::IovaRange;
pub use stats::DmaStats;
pub use swiotlb::{IO_TLB_SEGSIZE, IO_TLB_SIZE, MAX_BOUNCE_BYTES};
pub use table_pool::{PoolMark, TableBus, TablePool, CHUNK_PAGES};
pub use types::{
    BusFault, BusFaultReason, DmaDevice, DmaDirection, DmaMask, DmaOpsKind, DmaSegment,
    MappingKind, Platform, SgTable, DEFAULT_SWIOTLB_BYTES, X86_MSI_WINDOW,
};

use debug::DebugLog;
use registry::{Mapping, Registry, Seg};
use stats::Counters;
use sync::Piece;

use crate::phys::{PhysAddr, PhysMem, PhysSegment, Zone, PAGE_SIZE};
use crate::MmError;

/// Mappings with at most this many segments are checked by a plain scan in
/// [`DmaOps::check_cpu_access`]; longer ones through a cached [`PaIndex`].
const PA_INDEX_MIN_SEGS: usize = 16;

/// An IOVA allocation of the system IOMMU: `(start, size)` in bytes.
type IovaNode = (u64, u64);

/// What every backend shares: the device, its memory, counters, live mappings and debug log.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) phys: Arc<PhysMem>,
    pub(crate) dev: DmaDevice,
    pub(crate) counters: Counters,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) debug: DebugLog,
    detached: AtomicBool,
    /// Per mapping id, its segments' physical ranges sorted for [`DmaOps::check_cpu_access`]
    /// (built there, for mappings of more than [`PA_INDEX_MIN_SEGS`] segments). Ids are never
    /// reused and a registered mapping's segments never change, so an entry stays right for as
    /// long as its mapping lives. Unmaps remove their entry; the next check drops any other
    /// entry of a released mapping. Locked only while `registry` is held, after it.
    pa_index: Mutex<HashMap<u64, PaIndex>>,
}

/// The physical ranges of one mapping's segments, sorted by start, so that "does any segment
/// overlap `[lo, hi)`" costs a binary search instead of a scan of every segment (a CPU access
/// check of a scattered BO asks it once per page, which made the scan quadratic).
#[derive(Debug)]
struct PaIndex {
    /// Segment starts (physical, bytes), ascending.
    starts: Vec<u64>,
    /// `max_end[i]`: the largest segment end among the first `i + 1` starts.
    max_end: Vec<u64>,
}

impl PaIndex {
    fn new(segs: &[Seg]) -> PaIndex {
        let mut ranges: Vec<(u64, u64)> = segs
            .iter()
            .map(|s| (s.pa.0, s.pa.0.saturating_add(s.len)))
            .collect();
        ranges.sort_unstable();
        let mut max = 0;
        let max_end = ranges
            .iter()
            .map(|&(_, e)| {
                max = max.max(e);
                max
            })
            .collect();
        PaIndex {
            starts: ranges.into_iter().map(|(s, _)| s).collect(),
            max_end,
        }
    }

    /// Whether some segment `[start, end)` has `start < hi && end > lo`.
    fn overlaps(&self, lo: u64, hi: u64) -> bool {
        // Segments starting at or after `hi` cannot overlap; among the others, one overlaps iff
        // the furthest end passes `lo`.
        match self.starts.partition_point(|&s| s < hi) {
            0 => false,
            k => self.max_end[k - 1] > lo,
        }
    }
}

impl Common {
    fn new(phys: Arc<PhysMem>, dev: DmaDevice, platform: &Platform) -> Common {
        Common {
            phys,
            dev,
            counters: Counters::default(),
            registry: Mutex::new(Registry::default()),
            debug: DebugLog::new(platform.debug, platform.debug_strict_check),
            detached: AtomicBool::new(false),
            pa_index: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn check_attached(&self) -> Result<(), MmError> {
        if self.detached.load(Ordering::Acquire) {
            Err(MmError::DmaDetached {
                device: self.dev.name.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Checks that `pa..pa + len` is allocated RAM.
    fn check_ram(&self, pa: PhysAddr, len: u64) -> Result<(), MmError> {
        if len == 0 {
            return Err(MmError::ZeroSize);
        }
        self.phys.for_each_chunk(pa, len, |_| {})
    }

    fn report(&self, diag: DmaDiag) {
        self.debug.report(&self.counters, diag);
    }
}

/// The system DMA ops of one device: a peer per backend, matched once per call, no `dyn`.
///
/// Obtained from [`DmaOps::attach`] as `Arc<DmaOps>`; every method takes `&self` (state sits
/// behind mutexes), and it is `Send + Sync`. Several mappings of one device may be live at once,
/// including of the same bytes.
// One per device and always behind an `Arc`, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum DmaOps {
    /// Direct DMA, with a swiotlb bounce pool when the platform has one.
    Direct(Direct),
    /// Behind a system IOMMU.
    Iommu(IommuDomain),
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<DmaOps>();
};

impl DmaOps {
    /// Attaches `dev` to the system DMA layer of `platform` over `phys` and returns its ops.
    ///
    /// The rule, applied here once and never revisited (the ops of a device cannot change while
    /// it may hold mappings): if `platform.system_iommu`, the device gets its own
    /// [`IommuDomain`] (IOVA space `[4 KiB, min(mask, 2^48 - 1)]` minus `platform.reserved`);
    /// otherwise [`Direct`] with `platform.bus_offset`, plus a swiotlb pool of
    /// `platform.swiotlb` bytes if some RAM of `phys` lies beyond the device's reach: the pool of
    /// that size another direct device of `phys` already uses if it lies below this device's
    /// reach, else one allocated now below it. A device whose mask covers all RAM gets no pool.
    ///
    /// # Errors
    /// - [`MmError::DmaMaskTooSmall`]: the mask cannot address one page (`< 0xfff`).
    /// - [`MmError::BadReservedRegion`]: a reserved region with `start >= end`.
    /// - [`MmError::Misaligned`]: `bus_offset` not a multiple of 4 KiB (direct only).
    /// - [`MmError::ZeroSize`]: a swiotlb pool of 0 bytes was asked for and is needed.
    /// - [`MmError::NoMemory`], [`MmError::Os`]: no frames for the swiotlb pool (no RAM below
    ///   the device's reach, as with [`MemoryMap::high_only`](crate::phys::MemoryMap::high_only))
    ///   or the IOMMU's root table.
    pub fn attach(
        phys: Arc<PhysMem>,
        dev: DmaDevice,
        platform: &Platform,
    ) -> Result<Arc<DmaOps>, MmError> {
        if dev.mask.0 < PAGE_SIZE - 1 {
            return Err(MmError::DmaMaskTooSmall { mask: dev.mask.0 });
        }
        if let Some(&(start, end)) = platform.reserved.iter().find(|(s, e)| s >= e) {
            return Err(MmError::BadReservedRegion { start, end });
        }
        let common = Common::new(phys, dev, platform);
        let ops = if platform.system_iommu {
            DmaOps::Iommu(IommuDomain::new(common, platform)?)
        } else {
            DmaOps::Direct(Direct::new(common, platform)?)
        };
        Ok(Arc::new(ops))
    }

    pub(crate) fn common(&self) -> &Common {
        match self {
            DmaOps::Direct(d) => &d.common,
            DmaOps::Iommu(i) => &i.common,
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> DmaOpsKind {
        match self {
            DmaOps::Direct(_) => DmaOpsKind::Direct,
            DmaOps::Iommu(_) => DmaOpsKind::Iommu,
        }
    }

    /// The device.
    pub fn device(&self) -> &DmaDevice {
        &self.common().dev
    }

    /// The physical memory the device reaches.
    pub fn phys(&self) -> &Arc<PhysMem> {
        &self.common().phys
    }

    /// Where to allocate frames the device reaches without bouncing: below its reach for direct
    /// DMA, anywhere behind an IOMMU.
    pub fn dma_zone(&self) -> Zone {
        match self {
            DmaOps::Direct(d) => d.zone(),
            DmaOps::Iommu(_) => Zone::Any,
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DmaStats {
        let mut s = self.common().counters.snapshot();
        match self {
            DmaOps::Direct(d) => s.swiotlb_slots_in_use = d.slots_in_use(),
            DmaOps::Iommu(i) => s.iova_bytes_in_use = i.iova_bytes_in_use(),
        }
        s
    }

    /// The DMA-API debug diagnostics logged so far (empty unless [`Platform::debug`]).
    pub fn diagnostics(&self) -> Vec<DmaDiag> {
        self.common().debug.snapshot()
    }

    /// Returns the diagnostics logged so far and clears the log.
    pub fn take_diagnostics(&self) -> Vec<DmaDiag> {
        self.common().debug.take()
    }

    /// `Err(`[`MmError::DmaDetached`]`)` once [`DmaOps::detach`] was called.
    pub(crate) fn check_attached(&self) -> Result<(), MmError> {
        self.common().check_attached()
    }

    /// Number of live mappings (every kind, IOVA links included, IOVA ranges not).
    pub fn live_mappings(&self) -> usize {
        self.common().registry.lock().len()
    }

    // ---- backend dispatch ----

    /// Gives back what mapping `segs` (and the IOVA `node`) took.
    fn release(&self, segs: &[Seg], node: Option<(u64, u64)>) {
        match self {
            DmaOps::Direct(d) => d.release(segs),
            DmaOps::Iommu(i) => {
                if let Some(n) = node {
                    i.unmap_node(n);
                }
            }
        }
    }

    /// Assigns bus addresses to physical segments (validated RAM, non-empty).
    fn map_segments(
        &self,
        phys: &[PhysSegment],
        dir: DmaDirection,
    ) -> Result<(Vec<Seg>, Option<IovaNode>), MmError> {
        match self {
            DmaOps::Direct(d) => {
                let mut out: Vec<Seg> = Vec::with_capacity(phys.len());
                for s in phys {
                    match d.map_one(s.addr, s.len) {
                        Ok(seg) => out.push(seg),
                        Err(e) => {
                            d.release(&out);
                            return Err(e);
                        }
                    }
                }
                Ok((out, None))
            }
            DmaOps::Iommu(i) => {
                let (segs, node) = i.map_phys(phys, dir.prot(self.common().dev.coherent))?;
                Ok((segs, Some(node)))
            }
        }
    }

    /// Maps, syncs for the device and records a streaming mapping; undoes everything on error.
    fn map_streaming(
        &self,
        phys: &[PhysSegment],
        dir: DmaDirection,
        kind: MappingKind,
    ) -> Result<(u64, Mapping), MmError> {
        let c = self.common();
        c.check_attached()?;
        if phys.is_empty() {
            return Err(MmError::ZeroSize);
        }
        let mut len: u64 = 0;
        for s in phys {
            c.check_ram(s.addr, s.len)?;
            len = len.checked_add(s.len).ok_or(MmError::AddrOverflow {
                addr: s.addr,
                len: s.len,
            })?;
        }
        let (segs, node) = self.map_segments(phys, dir)?;
        let pieces: Vec<Piece> = segs.iter().map(Piece::whole).collect();
        if let Err(e) = sync::for_device(c, &pieces, dir, true) {
            self.release(&segs, node);
            return Err(e);
        }
        let m = Mapping {
            kind,
            dir,
            handle: DmaAddr(segs[0].dma),
            len,
            segs,
            iova: node,
            device_owned: true,
            checked: false,
        };
        let id = c.registry.lock().insert(m.clone());
        Counters::add(&c.counters.maps, 1);
        Ok((id, m))
    }

    /// Finds and removes the mapping a release names by its handle, with the debug checks of
    /// debug.c's `check_unmap`. On `Err` nothing changed.
    fn take_by_handle(
        &self,
        kind: MappingKind,
        dma: DmaAddr,
        len: u64,
        dir: Option<DmaDirection>,
    ) -> Result<Mapping, MmError> {
        let c = self.common();
        let mut reg = c.registry.lock();
        let ids = reg.at_handle(dma);
        // Prefer the mapping that matches in kind, then length, then direction, as debug.c's
        // `hash_bucket_find` picks the best of several entries at one address.
        let best = ids.iter().copied().max_by_key(|&id| {
            let m = reg.get(id);
            m.map_or((false, false, false), |m| {
                (m.kind == kind, m.len == len, Some(m.dir) == dir)
            })
        });
        let Some(id) = best else {
            drop(reg);
            c.report(DmaDiag::UnmapNotMapped {
                dma,
                len,
                dir,
                released_as: kind,
            });
            return Err(MmError::DmaNotMapped { dma, len });
        };
        let mapped_as = reg.get(id).map_or(kind, |m| m.kind);
        if mapped_as != kind {
            drop(reg);
            c.report(DmaDiag::UnmapWrongKind {
                dma,
                mapped_as,
                released_as: kind,
            });
            return Err(MmError::DmaWrongKind {
                dma,
                mapped_as,
                released_as: kind,
            });
        }
        let m = reg.remove(id).ok_or(MmError::DmaNotMapped { dma, len })?;
        c.pa_index.lock().remove(&id);
        drop(reg);
        self.check_release(&m, len, dir);
        Ok(m)
    }

    /// Debug checks of a release that found its mapping.
    fn check_release(&self, m: &Mapping, len: u64, dir: Option<DmaDirection>) {
        let c = self.common();
        if m.len != len {
            c.report(DmaDiag::UnmapWrongSize {
                dma: m.handle,
                mapped_len: m.len,
                unmap_len: len,
            });
        }
        if let Some(d) = dir {
            if d != m.dir {
                c.report(DmaDiag::UnmapWrongDirection {
                    dma: m.handle,
                    mapped_dir: m.dir,
                    unmap_dir: d,
                });
            }
        }
        if c.debug.strict_check && !m.checked {
            c.report(DmaDiag::MappingNotChecked {
                dma: m.handle,
                len: m.len,
                kind: m.kind,
            });
        }
    }

    /// Completes the release of a removed mapping: hand the bytes back to the CPU (streaming
    /// kinds), then give back the bus addresses. The bus addresses are released even if the
    /// sync fails (its frames were freed under the mapping), and the sync's error is returned.
    fn finish_release(&self, m: &Mapping) -> Result<(), MmError> {
        let c = self.common();
        let synced = match m.kind {
            MappingKind::Page | MappingKind::Sg => {
                let pieces: Vec<Piece> = m.segs.iter().map(Piece::whole).collect();
                sync::for_cpu(c, &pieces, m.dir)
            }
            _ => Ok(()),
        };
        self.release(&m.segs, m.iova);
        Counters::add(&c.counters.unmaps, 1);
        synced
    }

    // ---- streaming mappings ----

    /// Maps `len` bytes of RAM at `pa` (any byte range, like `dma_map_page` with an offset or
    /// `dma_map_single`) for a streaming transfer in direction `dir`, and hands them to the
    /// device (sync for device: bounce copy, then a clean if the device is not coherent).
    /// Returns the bus address of the first byte; the range is DMA-contiguous.
    ///
    /// Direct: `pa + bus_offset`, or a swiotlb bounce buffer if that is beyond the mask.
    /// IOMMU: a fresh IOVA for the covering pages, plus the offset of `pa` in its page.
    ///
    /// # Errors
    /// - [`MmError::ZeroSize`]; [`MmError::BadPhysAddr`] / [`MmError::AddrOverflow`]: not all
    ///   of the range is allocated RAM.
    /// - [`MmError::DmaDetached`].
    /// - Direct: [`MmError::BeyondDmaMask`] (no swiotlb), [`MmError::SwiotlbTooLarge`],
    ///   [`MmError::SwiotlbFull`].
    /// - IOMMU: [`MmError::IovaExhausted`], [`MmError::IommuMap`].
    pub fn map_page(&self, pa: PhysAddr, len: u64, dir: DmaDirection) -> Result<DmaAddr, MmError> {
        let (_, m) =
            self.map_streaming(&[PhysSegment { addr: pa, len }], dir, MappingKind::Page)?;
        Ok(m.handle)
    }

    /// Unmaps a [`DmaOps::map_page`] mapping and hands its bytes back to the CPU (invalidate if
    /// not coherent and not `ToDevice`; copy back from the bounce buffer for `FromDevice` /
    /// `Bidirectional`), then frees its bounce slots or IOVA (after the IOTLB invalidation).
    ///
    /// A `len` or `dir` different from the mapping's is a caller bug: with debugging on it is
    /// reported ([`DmaDiag::UnmapWrongSize`], [`DmaDiag::UnmapWrongDirection`]), and the mapping's
    /// own length and direction are used.
    ///
    /// # Errors
    /// - [`MmError::DmaNotMapped`]: no live mapping at `dma` (also a [`DmaDiag::UnmapNotMapped`]).
    /// - [`MmError::DmaWrongKind`]: `dma` is another kind of mapping, which stays mapped (also a
    ///   [`DmaDiag::UnmapWrongKind`]).
    /// - [`MmError::BadPhysAddr`]: the mapped frames were freed before the unmap; the mapping is
    ///   released all the same.
    pub fn unmap_page(&self, dma: DmaAddr, len: u64, dir: DmaDirection) -> Result<(), MmError> {
        let m = self.take_by_handle(MappingKind::Page, dma, len, Some(dir))?;
        self.finish_release(&m)
    }

    /// Maps a scatter-gather list for a streaming transfer and hands it to the device. Direct:
    /// each segment as [`DmaOps::map_page`], physically adjacent unbounced segments merged into
    /// one DMA segment. IOMMU: the whole list contiguously in one IOVA range (each segment
    /// widened to whole pages), so page-aligned inner boundaries give one DMA segment.
    ///
    /// # Errors
    /// As [`DmaOps::map_page`], for any segment; [`MmError::ZeroSize`] for an empty list or an
    /// empty segment. Nothing stays mapped on error.
    pub fn map_sg(&self, segs: &[PhysSegment], dir: DmaDirection) -> Result<SgTable, MmError> {
        let (id, m) = self.map_streaming(segs, dir, MappingKind::Sg)?;
        let mut dma: Vec<DmaSegment> = Vec::with_capacity(m.segs.len());
        let mut prev_bounced = true;
        for s in &m.segs {
            let bounced = s.bounce.is_some();
            match dma.last_mut() {
                Some(last) if !bounced && !prev_bounced && last.dma.0 + last.len == s.dma => {
                    last.len += s.len;
                }
                _ => dma.push(DmaSegment {
                    dma: DmaAddr(s.dma),
                    len: s.len,
                }),
            }
            prev_bounced = bounced;
        }
        Ok(SgTable {
            phys: segs.to_vec(),
            dma,
            dir,
            id,
            bounced: m.segs.iter().any(|s| s.bounce.is_some()),
        })
    }

    /// Unmaps a [`DmaOps::map_sg`] mapping, handing every segment back to the CPU as
    /// [`DmaOps::unmap_page`] does.
    ///
    /// # Errors
    /// [`MmError::DmaNotMapped`]: already unmapped, or from another device (also a
    /// [`DmaDiag::UnmapNotMapped`]); [`MmError::BadPhysAddr`] as for `unmap_page`.
    pub fn unmap_sg(&self, sg: &SgTable) -> Result<(), MmError> {
        let m = self.take_by_id(sg)?;
        self.check_release(&m, sg.len_bytes(), Some(sg.dir));
        self.finish_release(&m)
    }

    fn take_by_id(&self, sg: &SgTable) -> Result<Mapping, MmError> {
        let c = self.common();
        let dma = sg.dma.first().map_or(DmaAddr(0), |s| s.dma);
        let taken = {
            let mut reg = c.registry.lock();
            let taken = reg.remove(sg.id);
            c.pa_index.lock().remove(&sg.id);
            taken
        };
        taken.ok_or_else(|| {
            c.report(DmaDiag::UnmapNotMapped {
                dma,
                len: sg.len_bytes(),
                dir: Some(sg.dir),
                released_as: MappingKind::Sg,
            });
            MmError::DmaNotMapped {
                dma,
                len: sg.len_bytes(),
            }
        })
    }

    /// Hands `len` bytes at `dma` (inside one streaming mapping, or a non-coherent buffer, or an
    /// IOVA link) to the device: copy into the bounce buffer for `ToDevice`/`Bidirectional`, then
    /// clean if the device is not coherent (`dma_sync_single_for_device`).
    ///
    /// Debug reports, the sync still done: [`DmaDiag::SyncOutOfRange`] (only the mapped part is
    /// synced), [`DmaDiag::SyncWrongDirection`] (the mapping's direction is used; any direction
    /// is allowed on a `Bidirectional` mapping).
    ///
    /// # Errors
    /// [`MmError::ZeroSize`]; [`MmError::DmaNotMapped`]: no such mapping contains `dma` (also a
    /// [`DmaDiag::SyncNotMapped`]); [`MmError::BadPhysAddr`]: its frames were freed.
    pub fn sync_single_for_device(
        &self,
        dma: DmaAddr,
        len: u64,
        dir: DmaDirection,
    ) -> Result<(), MmError> {
        self.sync_single(dma, len, dir, false)
    }

    /// Hands `len` bytes at `dma` back to the CPU: invalidate if the device is not coherent and
    /// the direction is not `ToDevice`, then copy back from the bounce buffer for
    /// `FromDevice`/`Bidirectional` (`dma_sync_single_for_cpu`).
    ///
    /// # Errors
    /// As [`DmaOps::sync_single_for_device`].
    pub fn sync_single_for_cpu(
        &self,
        dma: DmaAddr,
        len: u64,
        dir: DmaDirection,
    ) -> Result<(), MmError> {
        self.sync_single(dma, len, dir, true)
    }

    /// Hands every segment of `sg` to the device (`dma_sync_sgtable_for_device`).
    ///
    /// # Errors
    /// [`MmError::DmaNotMapped`] (also a [`DmaDiag::SyncNotMapped`]), [`MmError::BadPhysAddr`].
    pub fn sync_sg_for_device(&self, sg: &SgTable) -> Result<(), MmError> {
        self.sync_sg(sg, false)
    }

    /// Hands every segment of `sg` back to the CPU (`dma_sync_sgtable_for_cpu`).
    ///
    /// # Errors
    /// As [`DmaOps::sync_sg_for_device`].
    pub fn sync_sg_for_cpu(&self, sg: &SgTable) -> Result<(), MmError> {
        self.sync_sg(sg, true)
    }

    fn sync_sg(&self, sg: &SgTable, for_cpu: bool) -> Result<(), MmError> {
        let c = self.common();
        let mut reg = c.registry.lock();
        let Some(m) = reg.get_mut(sg.id) else {
            drop(reg);
            let dma = sg.dma.first().map_or(DmaAddr(0), |s| s.dma);
            c.report(DmaDiag::SyncNotMapped {
                dma,
                len: sg.len_bytes(),
                dir: sg.dir,
                for_cpu,
            });
            return Err(MmError::DmaNotMapped {
                dma,
                len: sg.len_bytes(),
            });
        };
        m.device_owned = !for_cpu;
        let pieces: Vec<Piece> = m.segs.iter().map(Piece::whole).collect();
        let dir = m.dir;
        drop(reg);
        if for_cpu {
            sync::for_cpu(c, &pieces, dir)
        } else {
            sync::for_device(c, &pieces, dir, false)
        }
    }

    fn sync_single(
        &self,
        dma: DmaAddr,
        len: u64,
        dir: DmaDirection,
        for_cpu: bool,
    ) -> Result<(), MmError> {
        let c = self.common();
        if len == 0 {
            return Err(MmError::ZeroSize);
        }
        let end = dma.0.saturating_add(len);
        let mut reg = c.registry.lock();
        let syncable = |k: MappingKind| {
            matches!(
                k,
                MappingKind::Page
                    | MappingKind::Sg
                    | MappingKind::NonCoherent
                    | MappingKind::IovaLink
            )
        };
        // The mapping with a segment holding `dma` that covers most of the range.
        let mut best: Option<(u64, Vec<Piece>, u64)> = None;
        for id in reg.intersecting(dma.0, dma.0.saturating_add(1)) {
            let Some(m) = reg.get(id).filter(|m| syncable(m.kind)) else {
                continue;
            };
            let mut pieces = Vec::new();
            let mut covered = 0;
            for s in &m.segs {
                let lo = s.dma.max(dma.0);
                let hi = s.end().min(end);
                if lo < hi {
                    pieces.push(Piece {
                        seg: *s,
                        off: lo - s.dma,
                        n: hi - lo,
                    });
                    covered += hi - lo;
                }
            }
            if best.as_ref().is_none_or(|b| covered > b.2) {
                best = Some((id, pieces, covered));
            }
        }
        let Some((id, pieces, covered)) = best else {
            drop(reg);
            c.report(DmaDiag::SyncNotMapped {
                dma,
                len,
                dir,
                for_cpu,
            });
            return Err(MmError::DmaNotMapped { dma, len });
        };
        let Some(m) = reg.get_mut(id) else {
            return Err(MmError::DmaNotMapped { dma, len });
        };
        m.device_owned = !for_cpu;
        let (mapped_dir, handle, mlen) = (m.dir, m.handle, m.len);
        drop(reg);
        if covered < len {
            c.report(DmaDiag::SyncOutOfRange {
                dma,
                len,
                for_cpu,
                mapping_dma: handle,
                mapping_len: mlen,
            });
        }
        let eff = if mapped_dir == DmaDirection::Bidirectional {
            dir
        } else {
            if dir != mapped_dir {
                c.report(DmaDiag::SyncWrongDirection {
                    dma,
                    len,
                    for_cpu,
                    mapped_dir,
                    sync_dir: dir,
                });
            }
            mapped_dir
        };
        if for_cpu {
            sync::for_cpu(c, &pieces, eff)
        } else {
            sync::for_device(c, &pieces, eff, false)
        }
    }

    // ---- resources ----

    /// Maps an MMIO or peer-device range (`dma_map_resource`): direct, `pa + bus_offset` (never
    /// bounced); IOMMU, a fresh IOVA mapped with [`Prot::MMIO`](devmmu_pagetable::Prot::MMIO)
    /// and the direction's permissions. No cache maintenance, ever.
    ///
    /// # Errors
    /// [`MmError::ZeroSize`]; [`MmError::AddrOverflow`]; [`MmError::ResourceIsRam`]: the range
    /// overlaps a RAM region of the memory map; [`MmError::DmaDetached`]; direct:
    /// [`MmError::BeyondDmaMask`]; IOMMU: [`MmError::IovaExhausted`], [`MmError::IommuMap`].
    pub fn map_resource(
        &self,
        pa: PhysAddr,
        len: u64,
        dir: DmaDirection,
    ) -> Result<DmaAddr, MmError> {
        let c = self.common();
        c.check_attached()?;
        if len == 0 {
            return Err(MmError::ZeroSize);
        }
        let end =
            pa.0.checked_add(len)
                .ok_or(MmError::AddrOverflow { addr: pa, len })?;
        let is_ram = c.phys.memory_map().regions().iter().any(|r| {
            let r_end = r.base.0.saturating_add(r.size);
            r.base.0 < end && pa.0 < r_end
        });
        if is_ram {
            return Err(MmError::ResourceIsRam { addr: pa, len });
        }
        let (segs, node) = match self {
            DmaOps::Direct(d) => (vec![d.map_resource(pa, len)?], None),
            DmaOps::Iommu(i) => {
                let prot = dir.prot(false) | devmmu_pagetable::Prot::MMIO;
                let (segs, node) = i.map_phys(&[PhysSegment { addr: pa, len }], prot)?;
                (segs, Some(node))
            }
        };
        let handle = DmaAddr(segs[0].dma);
        c.registry.lock().insert(Mapping {
            kind: MappingKind::Resource,
            dir,
            handle,
            len,
            segs,
            iova: node,
            device_owned: false,
            checked: false,
        });
        Counters::add(&c.counters.maps, 1);
        Ok(handle)
    }

    /// Unmaps a [`DmaOps::map_resource`] mapping.
    ///
    /// # Errors
    /// [`MmError::DmaNotMapped`], [`MmError::DmaWrongKind`], as [`DmaOps::unmap_page`].
    pub fn unmap_resource(&self, dma: DmaAddr, len: u64, dir: DmaDirection) -> Result<(), MmError> {
        let m = self.take_by_handle(MappingKind::Resource, dma, len, Some(dir))?;
        self.finish_release(&m)
    }

    // ---- the bus, as the simulated device sees it ----

    /// What the bus does with an access of `len` bytes at `dma` emitted by this device (`write`:
    /// the device writes): the CPU physical address of the first byte, the whole range being
    /// physically contiguous.
    ///
    /// Direct: `dma - bus_offset`; the range must lie within the DMA mask and on allocated frames
    /// (a swiotlb slot is just RAM) or a mapped resource. IOMMU: a walk of the domain's page
    /// table in physical memory for every page of the range, never cached; it faults if a page is
    /// unmapped or, for `write`, read-only.
    ///
    /// # Errors
    /// A [`BusFault`] naming the address and the reason.
    pub fn bus_to_phys(&self, dma: DmaAddr, len: u64, write: bool) -> Result<PhysAddr, BusFault> {
        match self {
            DmaOps::Direct(d) => d.bus_to_phys(dma, len),
            DmaOps::Iommu(i) => i.bus_to_phys(dma, len, write),
        }
    }

    /// The device reads `buf.len()` bytes at bus address `dma`: each page translated with
    /// [`DmaOps::bus_to_phys`], then read with [`PhysMem::device_read`] as this device's
    /// coherency says (a non-coherent device reads RAM, not the CPU caches).
    ///
    /// # Errors
    /// The first [`BusFault`]; `buf` may then be partly written.
    pub fn bus_read(&self, dma: DmaAddr, buf: &mut [u8]) -> Result<(), BusFault> {
        let coherent = self.common().dev.coherent;
        let phys = &self.common().phys;
        self.bus_pages(dma, buf.len() as u64, false, |pa, pos, n| {
            phys.device_read(pa, &mut buf[pos..pos + n], coherent)
        })
    }

    /// The device writes `data` at bus address `dma` (see [`DmaOps::bus_read`]); a non-coherent
    /// device writes RAM, which the CPU sees only after invalidating.
    ///
    /// # Errors
    /// The first [`BusFault`]; the pages before it were written.
    pub fn bus_write(&self, dma: DmaAddr, data: &[u8]) -> Result<(), BusFault> {
        let coherent = self.common().dev.coherent;
        let phys = &self.common().phys;
        self.bus_pages(dma, data.len() as u64, true, |pa, pos, n| {
            phys.device_write(pa, &data[pos..pos + n], coherent)
        })
    }

    fn bus_pages(
        &self,
        dma: DmaAddr,
        len: u64,
        write: bool,
        mut access: impl FnMut(PhysAddr, usize, usize) -> Result<(), MmError>,
    ) -> Result<(), BusFault> {
        if len == 0 {
            return Err(BusFault {
                dma,
                reason: BusFaultReason::ZeroLength,
            });
        }
        let end = dma.0.checked_add(len).ok_or(BusFault {
            dma,
            reason: BusFaultReason::BeyondMask {
                mask: self.common().dev.mask.0,
            },
        })?;
        let mut cur = dma.0;
        while cur < end {
            let n = (end - cur).min(PAGE_SIZE - (cur % PAGE_SIZE));
            let pa = self.bus_to_phys(DmaAddr(cur), n, write)?;
            access(pa, (cur - dma.0) as usize, n as usize).map_err(|_| BusFault {
                dma: DmaAddr(cur),
                reason: BusFaultReason::NoMemory { addr: pa },
            })?;
            cur += n;
        }
        Ok(())
    }

    // ---- DMA-API debugging ----

    /// `dma_mapping_error`: whether `dma` is *not* the address of a live mapping of this device
    /// (`u64::MAX`, the kernel's `DMA_MAPPING_ERROR`, never is). Marks the mappings at `dma` as
    /// checked, for [`Platform::debug_strict_check`]. Since every map here returns a `Result`, a
    /// Rust caller has checked by construction; this exists for code ported from C.
    pub fn mapping_error(&self, dma: DmaAddr) -> bool {
        if dma.0 == u64::MAX {
            return true;
        }
        let mut reg = self.common().registry.lock();
        let ids = reg.at_handle(dma);
        for &id in &ids {
            if let Some(m) = reg.get_mut(id) {
                m.checked = true;
            }
        }
        ids.is_empty()
    }

    /// Called when the CPU begins to access `len` bytes at `pa` (`write`: it writes), e.g. by a
    /// BO's `begin_cpu_access`. With debugging on, reports a
    /// [`DmaDiag::CpuAccessWhileDeviceOwns`] for each `FromDevice`/`Bidirectional` streaming
    /// mapping (or non-coherent buffer) of these bytes that the device owns (mapped or synced
    /// for the device, not synced for the CPU since; a partial sync for the CPU hands the whole
    /// mapping back, so this never reports a false positive for that pattern), and returns
    /// `false` if there was any. With debugging off it checks nothing and returns `true`.
    pub fn check_cpu_access(&self, pa: PhysAddr, len: u64, write: bool) -> bool {
        self.check_cpu_access_ranges(&[PhysSegment { addr: pa, len }], write)
    }

    /// [`DmaOps::check_cpu_access`] of each of `ranges` in turn: the same reports, in the same
    /// order, as one call per range, but with one look at the live mappings for all of them (a
    /// scattered BO is one range per page). Returns `false` if any range was reported.
    pub(crate) fn check_cpu_access_ranges(&self, ranges: &[PhysSegment], write: bool) -> bool {
        let c = self.common();
        if !c.debug.enabled || ranges.iter().all(|r| r.len == 0) {
            return true;
        }
        let mut reports = Vec::new();
        {
            let reg = c.registry.lock();
            let mut index = c.pa_index.lock();
            // The mappings whose bytes the device owns and may write.
            let mut owned = Vec::new();
            // Entries of live mappings seen; any other entry belongs to a released mapping.
            let mut live = 0;
            for (id, m) in reg.iter() {
                let streaming = matches!(
                    m.kind,
                    MappingKind::Page
                        | MappingKind::Sg
                        | MappingKind::NonCoherent
                        | MappingKind::IovaLink
                );
                let indexed = m.segs.len() > PA_INDEX_MIN_SEGS;
                if !streaming || !m.device_owned || !m.dir.device_writes() {
                    if indexed && index.contains_key(&id) {
                        live += 1;
                    }
                    continue;
                }
                if indexed {
                    index.entry(id).or_insert_with(|| PaIndex::new(&m.segs));
                    live += 1;
                }
                owned.push((m.handle, m.dir, id, m.segs.as_slice()));
            }
            // Releases through other paths (non-coherent buffers, IOVA links) leave their entry
            // behind: drop those here, so the cache never outgrows the live mappings.
            if index.len() > live {
                index.retain(|id, _| reg.get(*id).is_some());
            }
            // Sorted once, so that each range's reports come in (handle, direction) order.
            owned.sort_unstable_by_key(|&(handle, dir, _, _)| (handle, dir));
            let owned: Vec<_> = owned
                .into_iter()
                .map(|(handle, dir, id, segs)| (handle, dir, index.get(&id), segs))
                .collect();
            for r in ranges.iter().filter(|r| r.len > 0) {
                let (lo, hi) = (r.addr.0, r.addr.0.saturating_add(r.len));
                for &(mapping_dma, dir, idx, segs) in &owned {
                    let overlaps = match idx {
                        Some(idx) => idx.overlaps(lo, hi),
                        None => segs
                            .iter()
                            .any(|s| s.pa.0 < hi && lo < s.pa.0.saturating_add(s.len)),
                    };
                    if overlaps {
                        reports.push(DmaDiag::CpuAccessWhileDeviceOwns {
                            pa: r.addr,
                            len: r.len,
                            write,
                            mapping_dma,
                            dir,
                        });
                    }
                }
            }
        }
        let clean = reports.is_empty();
        for diag in reports {
            c.report(diag);
        }
        clean
    }

    /// Detaches the device: refuses new mappings and allocations from now on
    /// ([`MmError::DmaDetached`]) and reports what is still mapped (also as a
    /// [`DmaDiag::LeakAtDetach`] if anything is and debugging is on). Live mappings stay valid
    /// and can still be unmapped; buffers can still be dropped. Calling it again reports again.
    pub fn detach(&self) -> LeakReport {
        let c = self.common();
        c.detached.store(true, Ordering::Release);
        let mut report = LeakReport::default();
        {
            let reg = c.registry.lock();
            for (_, m) in reg.iter() {
                if m.kind != MappingKind::IovaLink {
                    report.add(m.kind, m.len);
                }
            }
            for r in reg.iova_ranges.values() {
                report.add(MappingKind::IovaRange, r.size);
            }
        }
        if !report.is_empty() {
            c.report(DmaDiag::LeakAtDetach {
                report: report.clone(),
            });
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::CacheMode;
    use crate::phys::{FrameAlloc, MemoryMap};

    /// A small deterministic PRNG (xorshift64*), so that the cases are the same on every run.
    fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed | 1;
        move |bound| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
        }
    }

    #[test]
    fn pa_index_agrees_with_a_scan() {
        let mut next = rng(7);
        for case in 0..200 {
            // Segments in a small space, so that overlaps, shared edges, nesting and empty
            // segments all occur.
            let segs: Vec<Seg> = (0..1 + next(40))
                .map(|i| Seg {
                    dma: i * 0x1000,
                    len: next(5) * 64,
                    pa: PhysAddr(next(64) * 64),
                    bounce: None,
                })
                .collect();
            let index = PaIndex::new(&segs);
            for _ in 0..100 {
                let lo = next(70) * 32;
                let hi = lo + 1 + next(300);
                let scan = segs.iter().any(|s| s.pa.0 < hi && lo < s.pa.0 + s.len);
                assert_eq!(
                    index.overlaps(lo, hi),
                    scan,
                    "case {case}: [{lo:#x}, {hi:#x}) against {segs:?}"
                );
            }
        }
    }

    /// A scattered mapping has one segment per page, more than [`PA_INDEX_MIN_SEGS`], so the
    /// check goes through the index: it must report exactly what the scan did.
    #[test]
    fn cpu_access_check_of_a_scattered_mapping() {
        let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
        let ops = DmaOps::attach(
            phys.clone(),
            DmaDevice::new("scattered", DmaMask::bits(64), false),
            &Platform {
                debug: true,
                ..Platform::default()
            },
        )
        .unwrap();
        let pages = 3 * PA_INDEX_MIN_SEGS as u64;
        let f = phys.alloc_frames(pages, FrameAlloc::scattered()).unwrap();
        let other = phys.alloc_frames(1, FrameAlloc::scattered()).unwrap();
        let segs: Vec<PhysSegment> = f
            .pages()
            .iter()
            .map(|&addr| PhysSegment {
                addr,
                len: PAGE_SIZE,
            })
            .collect();
        let sg = ops.map_sg(&segs, DmaDirection::Bidirectional).unwrap();
        assert!(
            sg.phys.len() > PA_INDEX_MIN_SEGS,
            "scattered frames: one segment per page"
        );

        let first = f.pages()[5];
        assert!(!ops.check_cpu_access(first, PAGE_SIZE, true));
        // Ranges that only touch a mapped page at one byte overlap it; ranges that end where it
        // starts, or start where it ends, do not (unless a neighbour page is mapped too).
        assert!(!ops.check_cpu_access(PhysAddr(first.0 + PAGE_SIZE - 1), 1, false));
        let before = PhysAddr(first.0 - 8);
        let after = PhysAddr(first.0 + PAGE_SIZE);
        let mapped = |pa: PhysAddr| f.pages().iter().any(|p| p.0 == pa.0 & !(PAGE_SIZE - 1));
        assert_eq!(ops.check_cpu_access(before, 8, false), !mapped(before));
        assert_eq!(ops.check_cpu_access(after, 8, false), !mapped(after));
        assert!(ops.check_cpu_access(other.pages()[0], PAGE_SIZE, true));
        let diags = ops.take_diagnostics();
        assert_eq!(
            diags[0],
            DmaDiag::CpuAccessWhileDeviceOwns {
                pa: first,
                len: PAGE_SIZE,
                write: true,
                mapping_dma: sg.dma[0].dma,
                dir: DmaDirection::Bidirectional,
            }
        );
        assert_eq!(
            diags.len(),
            2 + usize::from(mapped(before)) + usize::from(mapped(after))
        );

        // Every page is found, and ownership is read live, not from the cached index.
        assert!(f
            .pages()
            .iter()
            .all(|&pa| !ops.check_cpu_access(pa, 1, false)));
        ops.sync_sg_for_cpu(&sg).unwrap();
        assert!(f
            .pages()
            .iter()
            .all(|&pa| ops.check_cpu_access(pa, 1, false)));
        ops.sync_sg_for_device(&sg).unwrap();
        assert!(!ops.check_cpu_access(f.pages()[pages as usize - 1], 1, false));
        assert_eq!(ops.common().pa_index.lock().len(), 1);

        // Once unmapped, the index entry is gone and nothing is reported.
        ops.unmap_sg(&sg).unwrap();
        assert!(ops.common().pa_index.lock().is_empty());
        ops.take_diagnostics();
        assert!(f
            .pages()
            .iter()
            .all(|&pa| ops.check_cpu_access(pa, 1, true)));
        assert!(ops.diagnostics().is_empty());
        assert!(ops.common().pa_index.lock().is_empty());
    }
}
