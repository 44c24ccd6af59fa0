//! Streaming mappings (kernel/dma/mapping.c's `dma_map_*` / `dma_unmap_*` / `dma_sync_*` on top
//! of direct.c and dma-iommu.c): map a physical range or a scatter-gather list for a transfer and
//! hand it to the device, move ownership back and forth with syncs, unmap; and `map_resource`.
//!
//! Owns the order of a streaming operation: validate, assign bus addresses through the backend,
//! sync (`sync.rs`), record in the registry; and, for a release, find and remove the record, sync
//! for the CPU, give the bus addresses back. The checks a release or sync is subject to when
//! debugging is on are `debug.rs`'s.

use devmmu_pagetable::DmaAddr;

use super::iommu::IovaNode;
use super::machine::owner_of_tag;
use super::registry::{Mapping, Seg};
use super::stats::Counters;
use super::sync::{self, Piece};
use super::types::{DmaAttrs, DmaDirection, DmaSegment, MappingKind, SgTable};
use super::{Backend, DmaDiag, DmaOps};
use crate::phys::{Frames, PhysAddr, PhysSegment};
use crate::MmError;

/// Where a streaming map's physical segments come from, which decides how they are checked.
#[derive(Clone, Copy)]
enum Source {
    /// Any caller's list: every page is looked up in the frame table (allocated, not the DMA
    /// layer's own memory).
    Lookup,
    /// The pages of a live [`Frames`]: allocated by construction, never DMA-layer memory.
    Frames,
}

impl DmaOps {
    // ---- backend dispatch ----

    /// Gives back what mapping `segs` (and the IOVA `node`) took.
    pub(super) fn release(&self, segs: &[Seg], node: Option<IovaNode>) {
        match &self.backend {
            Backend::Direct(d) => d.release(segs),
            Backend::Iommu(i) => {
                if let Some(n) = node {
                    i.unmap_node(&self.counters, n);
                }
            }
            Backend::Vfio(v) => {
                if let Some(n) = node {
                    v.unmap_node(&self.counters, n);
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
        match &self.backend {
            Backend::Direct(d) => {
                let mut out: Vec<Seg> = Vec::with_capacity(phys.len());
                for s in phys {
                    match d.map_one(self.dev.mask, s.addr, s.len) {
                        Ok(seg) => out.push(seg),
                        Err(e) => {
                            d.release(&out);
                            return Err(e);
                        }
                    }
                }
                Ok((out, None))
            }
            Backend::Iommu(i) => {
                let prot = dir.prot(self.dev.coherent);
                let (segs, node) = i.map_phys(&self.counters, phys, prot)?;
                Ok((segs, Some(node)))
            }
            Backend::Vfio(v) => {
                let write = dir.prot(true).contains(devmmu_pagetable::Prot::WRITE);
                let (segs, node) = v.map_phys(&self.phys, phys, write)?;
                Ok((segs, Some(node)))
            }
        }
    }

    /// Maps, syncs for the device and records a streaming mapping; undoes everything on error.
    fn map_streaming<R>(
        &self,
        phys: &[PhysSegment],
        dir: DmaDirection,
        kind: MappingKind,
        attrs: DmaAttrs,
        source: Source,
        result: impl FnOnce(&Mapping) -> R,
    ) -> Result<(u64, R), MmError> {
        self.check_attached()?;
        if phys.is_empty() {
            return Err(MmError::ZeroSize);
        }
        let mut len: u64 = 0;
        let mut owned = None;
        if matches!(source, Source::Frames) {
            // Frames held by a live `Frames` are allocated, and none is the DMA layer's own
            // memory (that is allocated by the DMA layer and never handed out as a BO's
            // `Frames`): no lookup. Debug builds check the claim all the same.
            for s in phys {
                len += s.len;
            }
            debug_assert!(phys.iter().all(|s| matches!(
                self.phys.frames().check_allocated_tagged(s.addr, s.len),
                Ok(None)
            )));
        } else {
            // One read lock of the frame table for every segment (a scattered BO is one
            // segment per run of pages), and one lookup per page, which also finds memory the
            // DMA layer owns (its frames are tagged: `DmaMachine::own`).
            let frames = self.phys.frames();
            for s in phys {
                let tagged = frames.check_allocated_tagged(s.addr, s.len)?;
                owned = owned.or(tagged);
                len = len.checked_add(s.len).ok_or(MmError::AddrOverflow {
                    addr: s.addr,
                    len: s.len,
                })?;
            }
        }
        if let Some((addr, owner)) = owned.and_then(|(a, t)| Some((a, owner_of_tag(t)?))) {
            self.report(DmaDiag::MapsDmaLayerMemory { pa: addr, owner });
            return Err(MmError::DmaLayerMemory { addr, owner });
        }
        self.check_overlapping(phys, dir);
        let (segs, node) = self.map_segments(phys, dir)?;
        if self.sync_needed(&segs, attrs.skip_cpu_sync) {
            let pieces: Vec<Piece> = segs.iter().map(Piece::whole).collect();
            if let Err(e) = sync::for_device(self, &pieces, dir, true, attrs.skip_cpu_sync) {
                self.release(&segs, node);
                return Err(e);
            }
        }
        let m = Mapping {
            kind,
            dir,
            handle: segs[0].dma,
            len,
            segs,
            iova: node,
            device_owned: true,
            checked: false,
        };
        // What the caller returns is read before the mapping moves into the registry (a
        // scattered BO's mapping holds thousands of segments: no copy of them).
        let r = result(&m);
        let id = self.registry.lock().insert(m);
        Counters::add(&self.counters.maps, 1);
        Ok((id, r))
    }

    /// Finds and removes the mapping a release names by its handle, with the debug checks of
    /// debug.c's `check_unmap` ([`DmaOps::find_release`], [`DmaOps::check_release`]). On `Err`
    /// nothing changed.
    fn take_by_handle(
        &self,
        kind: MappingKind,
        dma: DmaAddr,
        len: u64,
        dir: Option<DmaDirection>,
    ) -> Result<Mapping, MmError> {
        let (mut reg, id) = self.find_release(self.registry.lock(), kind, dma, len, dir)?;
        let m = reg.remove(id).ok_or(MmError::DmaNotMapped { dma, len })?;
        self.forget_pa_index(id);
        drop(reg);
        self.check_release(&m, len, dir);
        Ok(m)
    }

    /// Completes the release of a removed mapping: hand the bytes back to the CPU (streaming
    /// kinds), then give back the bus addresses. The bus addresses are released even if the
    /// sync fails (its frames were freed under the mapping), and the sync's error is returned.
    fn finish_release(&self, m: &Mapping) -> Result<(), MmError> {
        let synced = match m.kind {
            MappingKind::Page | MappingKind::Sg if self.sync_needed(&m.segs, false) => {
                let pieces: Vec<Piece> = m.segs.iter().map(Piece::whole).collect();
                sync::for_cpu(self, &pieces, m.dir)
            }
            _ => Ok(()),
        };
        self.release(&m.segs, m.iova);
        Counters::add(&self.counters.unmaps, 1);
        synced
    }

    /// Whether handing `segs` to the device or back has any work: a bounce copy, or cache
    /// maintenance for a non-coherent device (unless skipped). A coherent device's unbounced
    /// mapping has none, so no list of pieces is built for it.
    fn sync_needed(&self, segs: &[Seg], skip_cpu_sync: bool) -> bool {
        (!self.dev.coherent && !skip_cpu_sync) || segs.iter().any(|s| s.bounce.is_some())
    }

    /// Checks that `pa..pa + len` is allocated RAM.
    pub(super) fn check_ram(&self, pa: PhysAddr, len: u64) -> Result<(), MmError> {
        if len == 0 {
            return Err(MmError::ZeroSize);
        }
        self.phys.for_each_chunk(pa, len, |_| {})
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
    /// - IOMMU: [`MmError::NoAddressSpace`], [`MmError::IommuMap`].
    pub fn map_page(&self, pa: PhysAddr, len: u64, dir: DmaDirection) -> Result<DmaAddr, MmError> {
        let (_, handle) = self.map_streaming(
            &[PhysSegment { addr: pa, len }],
            dir,
            MappingKind::Page,
            DmaAttrs::default(),
            Source::Lookup,
            |m| m.handle,
        )?;
        Ok(handle)
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
        self.map_sg_attrs(segs, dir, DmaAttrs::default())
    }

    /// [`DmaOps::map_sg`] with attributes (`dma_map_sgtable`'s `attrs`). With
    /// [`DmaAttrs::skip_cpu_sync`] the map does no cache maintenance (a swiotlb bounce copy is
    /// still made), as `DMA_ATTR_SKIP_CPU_SYNC`: for memory the CPU has already handed to
    /// devices, such as a dma-buf mapped for another importer (drm_prime.c's
    /// `drm_gem_map_dma_buf` maps with it).
    ///
    /// # Errors
    /// As [`DmaOps::map_sg`].
    pub fn map_sg_attrs(
        &self,
        segs: &[PhysSegment],
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<SgTable, MmError> {
        self.map_sg_from(segs.into(), dir, attrs, Source::Lookup)
    }

    /// [`DmaOps::map_sg_attrs`] of the pages of `frames`, in buffer order (a BO's attachment).
    /// The frames are allocated while `frames` lives and are never the DMA layer's own memory,
    /// so the frame table is not looked up page by page (`dma_map_sgtable` trusts the pages
    /// the same way). Callers keep that second promise: only a BO's `Frames` come here (never
    /// the swiotlb pool's or the table pool's, the only frames `DmaMachine::own` tags); debug
    /// builds check both promises by the lookup.
    ///
    /// # Errors
    /// As [`DmaOps::map_sg`]; [`MmError::WrongPhysMem`] if `frames` belong to another machine.
    pub(crate) fn map_frames_attrs(
        &self,
        frames: &Frames,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<SgTable, MmError> {
        if !std::sync::Arc::ptr_eq(frames.phys(), &self.phys) {
            return Err(MmError::WrongPhysMem {
                device: self.dev.name.clone(),
            });
        }
        self.map_sg_from(frames.shared_segments(), dir, attrs, Source::Frames)
    }

    fn map_sg_from(
        &self,
        segs: std::sync::Arc<[PhysSegment]>,
        dir: DmaDirection,
        attrs: DmaAttrs,
        source: Source,
    ) -> Result<SgTable, MmError> {
        let (id, (dma, bounced)) =
            self.map_streaming(&segs, dir, MappingKind::Sg, attrs, source, |m| {
                // Bus-contiguous unbounced segments merge into one DMA segment (behind an
                // IOMMU the whole list is one), built in a register, pushed when a run ends.
                let mut dma: Vec<DmaSegment> = Vec::new();
                let (mut any_bounced, mut prev_bounced) = (false, true);
                let mut run: Option<DmaSegment> = None;
                for s in &m.segs {
                    let bounced = s.bounce.is_some();
                    match run.as_mut() {
                        // Never across a bounce buffer (a bounce slot is its own bus range).
                        Some(r) if !bounced && !prev_bounced && r.dma + r.len == s.dma => {
                            r.len += s.len;
                            continue;
                        }
                        Some(r) => dma.push(*r),
                        None => {}
                    }
                    run = Some(DmaSegment {
                        dma: s.dma,
                        len: s.len,
                    });
                    prev_bounced = bounced;
                    any_bounced |= bounced;
                }
                dma.extend(run);
                (dma, any_bounced)
            })?;
        Ok(SgTable {
            phys: segs,
            dma,
            dir,
            id,
            bounced,
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
        let dma = sg.dma.first().map_or(DmaAddr(0), |s| s.dma);
        let taken = {
            let mut reg = self.registry.lock();
            let taken = reg.remove(sg.id);
            self.forget_pa_index(sg.id);
            taken
        };
        taken.ok_or_else(|| {
            self.report(DmaDiag::UnmapNotMapped {
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
        let mut reg = self.registry.lock();
        let Some(m) = reg.get_mut(sg.id) else {
            drop(reg);
            let dma = sg.dma.first().map_or(DmaAddr(0), |s| s.dma);
            self.report(DmaDiag::SyncNotMapped {
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
            sync::for_cpu(self, &pieces, dir)
        } else {
            sync::for_device(self, &pieces, dir, false, false)
        }
    }

    fn sync_single(
        &self,
        dma: DmaAddr,
        len: u64,
        dir: DmaDirection,
        for_cpu: bool,
    ) -> Result<(), MmError> {
        if len == 0 {
            return Err(MmError::ZeroSize);
        }
        let end = dma.saturating_add(len);
        let mut reg = self.registry.lock();
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
        for id in reg.intersecting(dma, dma.saturating_add(1)) {
            let Some(m) = reg.get(id).filter(|m| syncable(m.kind)) else {
                continue;
            };
            let mut pieces = Vec::new();
            let mut covered = 0;
            for s in &m.segs {
                let lo = s.dma.max(dma);
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
            self.report(DmaDiag::SyncNotMapped {
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
            self.report(DmaDiag::SyncOutOfRange {
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
                self.report(DmaDiag::SyncWrongDirection {
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
            sync::for_cpu(self, &pieces, eff)
        } else {
            sync::for_device(self, &pieces, eff, false, false)
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
    /// [`MmError::BeyondDmaMask`]; IOMMU: [`MmError::NoAddressSpace`], [`MmError::IommuMap`].
    pub fn map_resource(
        &self,
        pa: PhysAddr,
        len: u64,
        dir: DmaDirection,
    ) -> Result<DmaAddr, MmError> {
        self.check_attached()?;
        if len == 0 {
            return Err(MmError::ZeroSize);
        }
        let end = pa
            .checked_add(len)
            .ok_or(MmError::AddrOverflow { addr: pa, len })?;
        let is_ram = self
            .phys
            .memory_map()
            .regions()
            .iter()
            .any(|r| r.base < end && pa < r.base.saturating_add(r.size));
        if is_ram {
            return Err(MmError::ResourceIsRam { addr: pa, len });
        }
        let (segs, node) = match &self.backend {
            Backend::Direct(d) => (vec![d.map_resource(self.dev.mask, pa, len)?], None),
            Backend::Iommu(i) => {
                let prot = dir.prot(false) | devmmu_pagetable::Prot::MMIO;
                let one = [PhysSegment { addr: pa, len }];
                let (segs, node) = i.map_phys(&self.counters, &one, prot)?;
                (segs, Some(node))
            }
            Backend::Vfio(_) => {
                return Err(MmError::VfioUnsupported {
                    what: "mapping a modelled MMIO resource: it has no memory VFIO could map",
                })
            }
        };
        let handle = segs[0].dma;
        self.registry.lock().insert(Mapping {
            kind: MappingKind::Resource,
            dir,
            handle,
            len,
            segs,
            iova: node,
            device_owned: false,
            checked: false,
        });
        Counters::add(&self.counters.maps, 1);
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
}
