//! DMA-API debugging, in the spirit of kernel/dma/debug.c (`CONFIG_DMA_API_DEBUG`).
//!
//! Owns the diagnostics of one device: typed reports of DMA-API misuse that the operations
//! detect and log here when [`Platform::debug`](super::Platform::debug) is on. A diagnostic is
//! never a panic and, by itself, never an error: an operation that can still do the right thing
//! (unmap with the recorded size and direction, sync the part of a range that is mapped) does it
//! and returns its normal result; one that cannot (unmap of an address that is not mapped) returns
//! an error *and* logs a diagnostic. This module must never change a mapping.
//!
//! The checks live here too, each as a method of [`DmaOps`](super::DmaOps) that the operations
//! call: the lookup and checks of a release (debug.c's `check_unmap`), `mapping_error`, the CPU
//! access check (with [`PaIndex`], its per-mapping index of physical ranges) and the leak report
//! of a detach.

use devmmu_pagetable::DmaAddr;
use parking_lot::{Mutex, MutexGuard};

use super::registry::{Mapping, Registry, Seg};
use super::stats::Counters;
use super::types::{DmaDirection, MappingKind};
use super::DmaOps;
use crate::phys::{PhysAddr, PhysSegment};
use crate::MmError;

/// Mappings with at most this many segments are checked by a plain scan in
/// [`DmaOps::check_cpu_access`]; longer ones through a cached [`PaIndex`].
pub(super) const PA_INDEX_MIN_SEGS: usize = 16;

/// The kernel's `DMA_MAPPING_ERROR`: never the address of a mapping.
const DMA_MAPPING_ERROR: DmaAddr = DmaAddr(u64::MAX);

/// Diagnostics kept per device; later ones are counted in
/// [`DmaStats::diagnostics`](super::DmaStats::diagnostics) but dropped, as debug.c stops printing
/// after its error limit.
pub const MAX_DIAGNOSTICS: usize = 4096;

/// One detected misuse of the DMA API. Lengths are in bytes; `dma` is the address the caller
/// passed unless a field says otherwise.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DmaDiag {
    /// An unmap of an address with no live mapping of this device (debug.c: "device driver tries
    /// to free DMA memory it has not allocated"). The call also returned
    /// [`MmError::DmaNotMapped`](crate::MmError::DmaNotMapped).
    UnmapNotMapped {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// Direction passed (`None` for releases that take none, e.g. `unmap_sg`).
        dir: Option<DmaDirection>,
        /// The kind of release attempted.
        released_as: MappingKind,
    },
    /// An unmap whose length differs from the mapping's ("frees DMA memory with different
    /// size"). The whole mapping was unmapped, with its recorded length.
    UnmapWrongSize {
        /// The mapping's address.
        dma: DmaAddr,
        /// Length it was mapped with.
        mapped_len: u64,
        /// Length passed to the unmap.
        unmap_len: u64,
    },
    /// An unmap whose direction differs from the mapping's ("frees DMA memory with different
    /// direction"). The recorded direction was used for the cache maintenance.
    UnmapWrongDirection {
        /// The mapping's address.
        dma: DmaAddr,
        /// Direction it was mapped with.
        mapped_dir: DmaDirection,
        /// Direction passed to the unmap.
        unmap_dir: DmaDirection,
    },
    /// A release with the function of another kind ("frees DMA memory with wrong function").
    /// The mapping was left in place and the call returned
    /// [`MmError::DmaWrongKind`](crate::MmError::DmaWrongKind).
    UnmapWrongKind {
        /// The mapping's address.
        dma: DmaAddr,
        /// How it was mapped.
        mapped_as: MappingKind,
        /// The kind of release attempted.
        released_as: MappingKind,
    },
    /// A sync of an address no streaming mapping contains ("device driver tries to sync DMA
    /// memory it has not allocated"). The call also returned
    /// [`MmError::DmaNotMapped`](crate::MmError::DmaNotMapped).
    SyncNotMapped {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// Direction passed.
        dir: DmaDirection,
        /// `true` for a sync for the CPU, `false` for the device.
        for_cpu: bool,
    },
    /// A sync that starts inside a mapping but runs past its end ("device driver syncs DMA
    /// memory outside allocated range"). Only the mapped part was synced.
    SyncOutOfRange {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// `true` for a sync for the CPU.
        for_cpu: bool,
        /// The mapping's address.
        mapping_dma: DmaAddr,
        /// The mapping's length.
        mapping_len: u64,
    },
    /// A sync in a direction the mapping does not allow ("syncs DMA memory with different
    /// direction"), e.g. `sync_single_for_cpu(.., FromDevice)` on a `ToDevice` mapping. The
    /// mapping's own direction was used.
    SyncWrongDirection {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// `true` for a sync for the CPU.
        for_cpu: bool,
        /// Direction of the mapping.
        mapped_dir: DmaDirection,
        /// Direction passed.
        sync_dir: DmaDirection,
    },
    /// A mapping released without [`DmaOps::mapping_error`](super::DmaOps::mapping_error) ever
    /// being asked about its address ("device driver failed to check map error"). Reported only
    /// with [`Platform::debug_strict_check`](super::Platform::debug_strict_check).
    MappingNotChecked {
        /// The mapping's address.
        dma: DmaAddr,
        /// Its length.
        len: u64,
        /// Its kind.
        kind: MappingKind,
    },
    /// CPU access, reported through [`DmaOps::check_cpu_access`](super::DmaOps::check_cpu_access),
    /// to bytes of a streaming mapping the device owns: mapped or synced for the device with
    /// `FromDevice`/`Bidirectional`, and not synced for the CPU since.
    CpuAccessWhileDeviceOwns {
        /// First byte accessed.
        pa: PhysAddr,
        /// Bytes accessed.
        len: u64,
        /// Whether the CPU writes.
        write: bool,
        /// Address of the mapping the device owns.
        mapping_dma: DmaAddr,
        /// Its direction.
        dir: DmaDirection,
    },
    /// Frames freed while a live mapping of this device still covers them (debug.c: "device
    /// driver frees DMA memory with active mapping"); the device may still write them, now
    /// someone else's memory. Reported when the frames are freed.
    FreedWhileMapped {
        /// The first freed page the mapping covers.
        pa: PhysAddr,
        /// The mapping's address.
        mapping_dma: DmaAddr,
        /// Its kind.
        kind: MappingKind,
    },
    /// A streaming mapping that the device may write shares a cache line with another live one
    /// of this device that it may write too (debug.c: "cacheline tracking EEXIST, overlapping
    /// mappings aren't supported"): the cache maintenance or bounce copy of one clobbers the
    /// other's bytes. The new mapping is still made.
    OverlappingMappings {
        /// First byte of the new mapping's overlapping segment.
        pa: PhysAddr,
        /// The new mapping's direction.
        dir: DmaDirection,
        /// Address of the live mapping it overlaps.
        other_dma: DmaAddr,
        /// Its direction.
        other_dir: DmaDirection,
    },
    /// A streaming mapping of memory the DMA layer owns was refused (the call returned
    /// [`MmError::DmaLayerMemory`](crate::MmError::DmaLayerMemory)).
    MapsDmaLayerMemory {
        /// First owned byte.
        pa: PhysAddr,
        /// Its owner.
        owner: super::DmaOwner,
    },
    /// Mappings still live when the device was detached ("device driver has pending DMA
    /// allocations while released from device").
    LeakAtDetach {
        /// What was still mapped.
        report: LeakReport,
    },
}

/// Mappings of one kind left at detach.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KindLeak {
    /// The kind.
    pub kind: MappingKind,
    /// Number of live mappings of that kind.
    pub mappings: u64,
    /// Their bytes (requested lengths; IOVA ranges by their size).
    pub bytes: u64,
}

/// What [`DmaOps::detach`](super::DmaOps::detach) found still mapped. Links inside an IOVA range
/// are part of that range and not counted separately.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct LeakReport {
    /// Number of live mappings.
    pub mappings: u64,
    /// Their total bytes.
    pub bytes: u64,
    /// The same per kind, in [`MappingKind`] order, kinds with no leak left out.
    pub by_kind: Vec<KindLeak>,
}

impl LeakReport {
    /// Whether nothing leaked.
    pub fn is_empty(&self) -> bool {
        self.mappings == 0
    }

    /// Adds one leaked mapping of `kind` and `bytes`.
    pub(crate) fn add(&mut self, kind: MappingKind, bytes: u64) {
        self.mappings += 1;
        self.bytes += bytes;
        match self.by_kind.binary_search_by(|k| k.kind.cmp(&kind)) {
            Ok(i) => {
                self.by_kind[i].mappings += 1;
                self.by_kind[i].bytes += bytes;
            }
            Err(i) => self.by_kind.insert(
                i,
                KindLeak {
                    kind,
                    mappings: 1,
                    bytes,
                },
            ),
        }
    }
}

/// The diagnostics log of one device.
#[derive(Debug)]
pub(crate) struct DebugLog {
    pub(crate) enabled: bool,
    pub(crate) strict_check: bool,
    diags: Mutex<Vec<DmaDiag>>,
}

impl DebugLog {
    pub(crate) fn new(enabled: bool, strict_check: bool) -> DebugLog {
        DebugLog {
            enabled,
            strict_check: enabled && strict_check,
            diags: Mutex::new(Vec::new()),
        }
    }

    /// Logs `diag` if debugging is on.
    pub(crate) fn report(&self, counters: &Counters, diag: DmaDiag) {
        if !self.enabled {
            return;
        }
        Counters::add(&counters.diagnostics, 1);
        let mut d = self.diags.lock();
        if d.len() < MAX_DIAGNOSTICS {
            d.push(diag);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<DmaDiag> {
        self.diags.lock().clone()
    }

    pub(crate) fn take(&self) -> Vec<DmaDiag> {
        core::mem::take(&mut *self.diags.lock())
    }
}

/// The physical ranges of one mapping's segments, sorted by start, so that "does any segment
/// overlap `[lo, hi)`" costs a binary search instead of a scan of every segment (a CPU access
/// check of a scattered BO asks it once per page, which made the scan quadratic).
#[derive(Debug)]
pub(super) struct PaIndex {
    /// Segment starts (physical, bytes), ascending.
    starts: Vec<PhysAddr>,
    /// `max_end[i]`: the largest segment end among the first `i + 1` starts.
    max_end: Vec<PhysAddr>,
}

impl PaIndex {
    fn new(segs: &[Seg]) -> PaIndex {
        let mut ranges: Vec<(PhysAddr, PhysAddr)> = segs
            .iter()
            .map(|s| (s.pa, s.pa.saturating_add(s.len)))
            .collect();
        ranges.sort_unstable();
        let mut max = PhysAddr(0);
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
    fn overlaps(&self, lo: PhysAddr, hi: PhysAddr) -> bool {
        // Segments starting at or after `hi` cannot overlap; among the others, one overlaps iff
        // the furthest end passes `lo`.
        match self.starts.partition_point(|&s| s < hi) {
            0 => false,
            k => self.max_end[k - 1] > lo,
        }
    }
}

impl DmaOps {
    /// Logs `diag` if debugging is on.
    pub(super) fn report(&self, diag: DmaDiag) {
        self.debug.report(&self.counters, diag);
    }

    /// With debugging on, reports a [`DmaDiag::OverlappingMappings`] for each live streaming
    /// mapping the device may write (not `ToDevice`) that shares a cache line with `phys`, when
    /// the new mapping's device may write too (debug.c's `active_cacheline_insert` ignores
    /// `DMA_TO_DEVICE` mappings for the same reason: a device that only reads clobbers nothing).
    pub(super) fn check_overlapping(&self, phys: &[PhysSegment], dir: DmaDirection) {
        if !self.debug.enabled || !dir.device_writes() {
            return;
        }
        let line = crate::phys::LINE_SIZE;
        let lines = |pa: PhysAddr, len: u64| {
            let lo = pa.0 & !(line - 1);
            (
                lo,
                pa.0.saturating_add(len).div_ceil(line).saturating_mul(line),
            )
        };
        let mut reports = Vec::new();
        {
            let reg = self.registry.lock();
            for (_, m) in reg.iter() {
                let streaming = matches!(m.kind, MappingKind::Page | MappingKind::Sg);
                if !streaming || !m.dir.device_writes() {
                    continue;
                }
                'new: for s in phys {
                    let (lo, hi) = lines(s.addr, s.len);
                    for o in &m.segs {
                        let (olo, ohi) = lines(o.pa, o.len);
                        if olo < hi && lo < ohi {
                            reports.push(DmaDiag::OverlappingMappings {
                                pa: s.addr,
                                dir,
                                other_dma: m.handle,
                                other_dir: m.dir,
                            });
                            break 'new;
                        }
                    }
                }
            }
        }
        for r in reports {
            self.report(r);
        }
    }

    /// The live mapping at `dma` that a release of `kind` names, found under `reg` (debug.c's
    /// `check_unmap` up to its kind check): of several mappings at `dma`, the one that matches
    /// in kind, then length, then direction, as debug.c's `hash_bucket_find` picks the best of
    /// several entries at one address. Returns the registry still locked and the mapping's id.
    ///
    /// # Errors
    /// [`MmError::DmaNotMapped`] (also a [`DmaDiag::UnmapNotMapped`]) or
    /// [`MmError::DmaWrongKind`] (also a [`DmaDiag::UnmapWrongKind`]); the registry is unlocked
    /// before the diagnostic is logged.
    pub(super) fn find_release<'a>(
        &self,
        reg: MutexGuard<'a, Registry>,
        kind: MappingKind,
        dma: DmaAddr,
        len: u64,
        dir: Option<DmaDirection>,
    ) -> Result<(MutexGuard<'a, Registry>, u64), MmError> {
        let ids = reg.at_handle(dma);
        let best = ids.iter().copied().max_by_key(|&id| {
            let m = reg.get(id);
            m.map_or((false, false, false), |m| {
                (m.kind == kind, m.len == len, Some(m.dir) == dir)
            })
        });
        let Some(id) = best else {
            drop(reg);
            self.report(DmaDiag::UnmapNotMapped {
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
            self.report(DmaDiag::UnmapWrongKind {
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
        Ok((reg, id))
    }

    /// Debug checks of a release that found its mapping.
    pub(super) fn check_release(&self, m: &Mapping, len: u64, dir: Option<DmaDirection>) {
        if m.len != len {
            self.report(DmaDiag::UnmapWrongSize {
                dma: m.handle,
                mapped_len: m.len,
                unmap_len: len,
            });
        }
        if let Some(d) = dir {
            if d != m.dir {
                self.report(DmaDiag::UnmapWrongDirection {
                    dma: m.handle,
                    mapped_dir: m.dir,
                    unmap_dir: d,
                });
            }
        }
        if self.debug.strict_check && !m.checked {
            self.report(DmaDiag::MappingNotChecked {
                dma: m.handle,
                len: m.len,
                kind: m.kind,
            });
        }
    }

    /// Drops the [`PaIndex`] entry of mapping `id`, just removed from the registry (whose lock
    /// the caller still holds).
    pub(super) fn forget_pa_index(&self, id: u64) {
        self.pa_index.lock().remove(&id);
    }

    /// `dma_mapping_error`: whether `dma` is *not* the address of a live mapping of this device
    /// (`u64::MAX`, the kernel's `DMA_MAPPING_ERROR`, never is). Marks the mappings at `dma` as
    /// checked, for [`Platform::debug_strict_check`](super::Platform::debug_strict_check). Since
    /// every map here returns a `Result`, a Rust caller has checked by construction; this exists
    /// for code ported from C.
    pub fn mapping_error(&self, dma: DmaAddr) -> bool {
        if dma == DMA_MAPPING_ERROR {
            return true;
        }
        let mut reg = self.registry.lock();
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
        if !self.debug.enabled || ranges.iter().all(|r| r.len == 0) {
            return true;
        }
        let mut reports = Vec::new();
        {
            let reg = self.registry.lock();
            let mut index = self.pa_index.lock();
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
                let (lo, hi) = (r.addr, r.addr.saturating_add(r.len));
                for &(mapping_dma, dir, idx, segs) in &owned {
                    let overlaps = match idx {
                        Some(idx) => idx.overlaps(lo, hi),
                        None => segs
                            .iter()
                            .any(|s| s.pa < hi && lo < s.pa.saturating_add(s.len)),
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
            self.report(diag);
        }
        clean
    }

    /// What [`DmaOps::detach`] reports: every live mapping (IOVA links counted in their range)
    /// and IOVA range, also logged as a [`DmaDiag::LeakAtDetach`] if there is any.
    pub(super) fn leak_report(&self) -> LeakReport {
        let mut report = LeakReport::default();
        {
            let reg = self.registry.lock();
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
            self.report(DmaDiag::LeakAtDetach {
                report: report.clone(),
            });
        }
        report
    }
}

impl crate::phys::FreeObserver for DmaOps {
    /// Reports a [`DmaDiag::FreedWhileMapped`] for each live mapping of this device (streaming,
    /// buffers, IOVA links; not resources, which are not RAM) covering one of `pages`. Best
    /// effort: if this thread already holds the registry (a release in progress), it skips.
    fn frames_freed(&self, pages: &[PhysAddr]) {
        if !self.debug.enabled || pages.is_empty() {
            return;
        }
        let freed: std::collections::HashSet<u64> =
            pages.iter().map(|p| p.0 / crate::phys::PAGE_SIZE).collect();
        let mut reports = Vec::new();
        {
            let Some(reg) = self.registry.try_lock() else {
                return;
            };
            for (_, m) in reg.iter() {
                if m.kind == MappingKind::Resource {
                    continue;
                }
                'segs: for s in &m.segs {
                    let first = s.pa.0 / crate::phys::PAGE_SIZE;
                    let last = s.pa.0.saturating_add(s.len.max(1) - 1) / crate::phys::PAGE_SIZE;
                    for pfn in first..=last {
                        if freed.contains(&pfn) {
                            reports.push(DmaDiag::FreedWhileMapped {
                                pa: PhysAddr(pfn * crate::phys::PAGE_SIZE),
                                mapping_dma: m.handle,
                                kind: m.kind,
                            });
                            break 'segs;
                        }
                    }
                }
            }
        }
        for r in reports {
            self.report(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaDevice, DmaMask, Platform};
    use crate::phys::CacheMode;
    use crate::phys::{FrameAlloc, MemoryMap, PhysMem, PAGE_SIZE};

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
                    dma: DmaAddr(i * 0x1000),
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
                    index.overlaps(PhysAddr(lo), PhysAddr(hi)),
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
        assert_eq!(ops.pa_index.lock().len(), 1);

        // Once unmapped, the index entry is gone and nothing is reported.
        ops.unmap_sg(&sg).unwrap();
        assert!(ops.pa_index.lock().is_empty());
        ops.take_diagnostics();
        assert!(f
            .pages()
            .iter()
            .all(|&pa| ops.check_cpu_access(pa, 1, true)));
        assert!(ops.diagnostics().is_empty());
        assert!(ops.pa_index.lock().is_empty());
    }
}
