//! The VFIO backend: the device sits behind the real system IOMMU of the running kernel,
//! reached through a VFIO type1 container ([`crate::vfio`]). A peer of `direct.rs` and
//! `iommu.rs`: the same streaming and coherent mappings, with bus address = IOVA.
//!
//! Owns the device's IOVA space (`iova_space.rs`: the device's DMA mask minus everything outside
//! the ranges VFIO reports usable, minus the platform's reserved regions) and a record of what
//! it mapped (IOVA → physical address), which is what the kernel's IOMMU now translates. A map
//! takes an IOVA node, then `VFIO_IOMMU_MAP_DMA`s each run of the segments that is contiguous in
//! this process's view of [`PhysMem`](crate::phys::PhysMem) (the memfd mapping that backs it:
//! the real pages the kernel pins); an unmap is one `VFIO_IOMMU_UNMAP_DMA` of the node, then the
//! node is freed (after the kernel has flushed its IOTLB, which UNMAP_DMA does before returning).
//!
//! Memory VFIO cannot pin is bounced, as swiotlb bounces what a device cannot reach: type1 pins
//! by CPU address and refuses `VM_PFNMAP` mappings of RAM (`vaddr_get_pfns`: `EFAULT`), which
//! is how every dma-buf exporter maps its buffer (udmabuf, dma-heaps, `drm_gem_shmem_mmap`), and
//! Linux 6.12 offers a VFIO user no other way to DMA-map a dma-buf. Such a segment gets a
//! contiguous bounce buffer of devmmu's own memory, mapped instead; the syncs of the DMA API copy
//! between the two (`sync.rs`, the same code as swiotlb's), counted in `bounced_bytes`.

use std::collections::BTreeMap;
use std::sync::Arc;

use devmmu_pagetable::DmaAddr;
use parking_lot::Mutex;

use super::iommu::{IovaNode, IOVA_GRANULE};
use super::iova_space::IovaSpace;
use super::registry::Seg;
use super::stats::Counters;
use super::types::{BusFault, BusFaultReason, DmaMask, Platform};
use crate::phys::{FrameAlloc, Frames, PhysAddr, PhysMem, PhysSegment, PAGE_SIZE};
use crate::vfio::VfioContainer;
use crate::{AddressSpace, MmError};

/// What one `VFIO_IOMMU_MAP_DMA` mapped: `len` bytes at the key's IOVA onto `pa`.
#[derive(Clone, Copy, Debug)]
struct Run {
    pa: PhysAddr,
    len: u64,
}

struct State {
    space: IovaSpace,
    /// Every live run, by IOVA.
    runs: BTreeMap<u64, Run>,
    /// The bounce buffers of each node that has some, by the node's first IOVA; freed after the
    /// node's unmap.
    bounces: BTreeMap<u64, Vec<Frames>>,
}

/// The VFIO domain of one device: its container, IOVA space and mapped runs.
pub struct VfioDomain {
    container: Arc<VfioContainer>,
    span: (DmaAddr, DmaAddr),
    state: Mutex<State>,
}

impl core::fmt::Debug for VfioDomain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VfioDomain")
            .field("group", &self.container.group_id())
            .field("span", &self.span)
            .finish()
    }
}

impl VfioDomain {
    /// A domain for a device with `mask` in `container`: IOVAs `[granule, mask]` minus what
    /// lies outside the container's usable ranges and minus `platform.reserved`.
    pub(crate) fn new(
        container: Arc<VfioContainer>,
        mask: DmaMask,
        platform: &Platform,
    ) -> Result<VfioDomain, MmError> {
        let mut reserved = platform.reserved.clone();
        let mut prev_end: u64 = 0;
        let mut ranges = container.iova_ranges().to_vec();
        ranges.sort_unstable();
        for &(s, e) in &ranges {
            if s > prev_end {
                reserved.push((prev_end, s));
            }
            prev_end = e.saturating_add(1);
        }
        if prev_end != 0 && prev_end <= mask.0 {
            reserved.push((prev_end, u64::MAX));
        }
        let space = IovaSpace::new(mask.0, &reserved)?;
        Ok(VfioDomain {
            container,
            span: space.span(),
            state: Mutex::new(State {
                space,
                runs: BTreeMap::new(),
                bounces: BTreeMap::new(),
            }),
        })
    }

    /// The container (its group and the IOVA ranges the kernel reported).
    pub fn container(&self) -> &Arc<VfioContainer> {
        &self.container
    }

    /// The IOVA space `[start, end)`, in bytes.
    pub fn aperture(&self) -> (DmaAddr, DmaAddr) {
        self.span
    }

    /// IOVA bytes allocated.
    pub(crate) fn iova_bytes_in_use(&self) -> u64 {
        self.state.lock().space.bytes_in_use()
    }

    /// Maps `segs` contiguously in a fresh IOVA node (each segment widened to whole pages, its
    /// in-page offset kept, as `iommu_dma_map_sg`); `write`: the device may write. Returns one
    /// [`Seg`] per input and the node.
    ///
    /// # Errors
    /// [`MmError::NoAddressSpace`]; [`MmError::Os`] from `VFIO_IOMMU_MAP_DMA`, other than the
    /// `EFAULT` of memory VFIO cannot pin, which is bounced instead (the bounce's
    /// [`MmError::NoMemory`] then); nothing stays mapped or allocated on error.
    pub(crate) fn map_phys(
        &self,
        phys: &Arc<PhysMem>,
        segs: &[PhysSegment],
        write: bool,
    ) -> Result<(Vec<Seg>, IovaNode), MmError> {
        let mut total: u64 = 0;
        let mut pieces = Vec::with_capacity(segs.len());
        for s in segs {
            let base = s.addr.align_down(IOVA_GRANULE);
            let mlen = (s.addr.page_offset() + s.len).next_multiple_of(IOVA_GRANULE);
            pieces.push((base, mlen));
            total = total.checked_add(mlen).ok_or(MmError::NoAddressSpace {
                space: AddressSpace::SystemIova,
                size: u64::MAX,
                limit: self.span.1.get() - 1,
            })?;
        }
        let mut st = self.state.lock();
        let node = st.space.alloc(total)?;
        let mut done: Vec<u64> = Vec::new();
        let mut bounces: Vec<Frames> = Vec::new();
        let mut out = Vec::with_capacity(segs.len());
        let mut cur = node.start.get();
        let mut failed = None;
        for (s, &(base, mlen)) in segs.iter().zip(&pieces) {
            let bounce = match self.map_piece(&mut st, phys, cur, base, mlen, write, &mut done) {
                Ok(()) => None,
                // Memory VFIO cannot pin (a dma-buf's VM_PFNMAP mapping): bounce it.
                Err(MmError::Os {
                    errno: rustix::io::Errno::FAULT,
                    ..
                }) => match self.map_bounce(&mut st, phys, cur, mlen, write, &mut done) {
                    Ok(frames) => {
                        let b = frames.pages()[0] + s.addr.page_offset();
                        bounces.push(frames);
                        Some(b)
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                },
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            out.push(Seg {
                dma: DmaAddr(cur) + s.addr.page_offset(),
                len: s.len,
                pa: s.addr,
                bounce,
            });
            cur += mlen;
        }
        if let Some(e) = failed {
            for iova in done {
                if let Some(run) = st.runs.remove(&iova) {
                    let _ = self.container.unmap_dma(iova, run.len);
                }
            }
            st.space.free(node.start);
            return Err(e);
        }
        if !bounces.is_empty() {
            st.bounces.insert(node.start.get(), bounces);
        }
        Ok((out, node))
    }

    /// Maps `mlen` bytes of `phys` from `base` at IOVA `iova`, one `VFIO_IOMMU_MAP_DMA` per run
    /// contiguous in this process's view; the IOVAs mapped are pushed to `done`. On error the
    /// runs of this piece are unmapped again.
    #[allow(clippy::too_many_arguments)]
    fn map_piece(
        &self,
        st: &mut State,
        phys: &PhysMem,
        iova: u64,
        base: PhysAddr,
        mlen: u64,
        write: bool,
        done: &mut Vec<u64>,
    ) -> Result<(), MmError> {
        let first = done.len();
        for (off, len) in host_runs(phys, base, mlen) {
            let r = match phys.cpu_ptr(base + off) {
                // SAFETY: `ptr..ptr + len` is part of a PhysMem backing's shared mapping, which
                // stays mapped as long as the `PhysMem` lives, and the `DmaOps` holding this
                // domain holds an `Arc<PhysMem>`; runs are unmapped no later than the
                // `DmaOps`' drop (every mapping is released by then, and `Drop` below unmaps
                // whatever is left). PhysMem only touches that memory through raw pointers.
                Some(ptr) => unsafe {
                    self.container.map_dma(iova + off, ptr.as_ptr(), len, write)
                },
                None => Err(MmError::BadPhysAddr { addr: base + off }),
            };
            if let Err(e) = r {
                for iova in done.drain(first..) {
                    if let Some(run) = st.runs.remove(&iova) {
                        let _ = self.container.unmap_dma(iova, run.len);
                    }
                }
                return Err(e);
            }
            done.push(iova + off);
            st.runs.insert(
                iova + off,
                Run {
                    pa: base + off,
                    len,
                },
            );
        }
        Ok(())
    }

    /// A bounce buffer of `mlen` bytes (contiguous frames of devmmu's own memory, which VFIO can
    /// pin) mapped at IOVA `iova`.
    fn map_bounce(
        &self,
        st: &mut State,
        phys: &Arc<PhysMem>,
        iova: u64,
        mlen: u64,
        write: bool,
        done: &mut Vec<u64>,
    ) -> Result<Frames, MmError> {
        let frames = phys.alloc_frames(mlen / PAGE_SIZE, FrameAlloc::contiguous())?;
        self.map_piece(st, phys, iova, frames.pages()[0], mlen, write, done)?;
        Ok(frames)
    }

    /// Unmaps a whole node (one `VFIO_IOMMU_UNMAP_DMA`, which flushes the IOTLB before it
    /// returns) and frees its IOVA.
    pub(crate) fn unmap_node(&self, counters: &Counters, node: IovaNode) {
        let mut st = self.state.lock();
        let keys: Vec<u64> = st
            .runs
            .range(node.start.get()..node.start.get() + node.size)
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            st.runs.remove(&k);
        }
        // Freed only after the unmap below: the device may use them until then.
        let bounces = st.bounces.remove(&node.start.get());
        // The node covers whole runs only (each map filled its own node), so type1v2 accepts
        // it; a failure would leave the pages pinned, never the device with a stale IOVA we
        // hand out again, because the node is then not freed.
        match self.container.unmap_dma(node.start.get(), node.size) {
            Ok(_) => {
                Counters::add(&counters.iotlb_invalidations, 1);
                st.space.free(node.start);
            }
            Err(_) => {
                // Leak the IOVA (and the bounce buffers) rather than reuse them.
                std::mem::forget(bounces);
                return;
            }
        }
        drop(bounces);
    }

    /// Where a device access to `dma..dma + len` lands according to what this domain mapped
    /// (the kernel's IOMMU holds the same translation): the physical address of the first byte.
    pub(crate) fn bus_to_phys(&self, dma: DmaAddr, len: u64) -> Result<PhysAddr, BusFault> {
        // Zero length and the DMA mask: checked by the caller (`DmaOps::bus_to_phys`).
        let fault = |reason| BusFault { dma, reason };
        let st = self.state.lock();
        let end = dma.get() + len;
        let mut cur = dma.get();
        let mut first = None;
        while cur < end {
            let Some((&start, run)) = st.runs.range(..=cur).next_back() else {
                return Err(fault(BusFaultReason::Translation {
                    iova: DmaAddr(cur),
                    level: 0,
                }));
            };
            if cur >= start + run.len {
                return Err(fault(BusFaultReason::Translation {
                    iova: DmaAddr(cur),
                    level: 0,
                }));
            }
            let pa = run.pa + (cur - start);
            match first {
                None => first = Some(pa),
                Some(f) if f + (cur - dma.get()) != pa => {
                    return Err(fault(BusFaultReason::Discontiguous { at: DmaAddr(cur) }));
                }
                Some(_) => {}
            }
            cur = (start + run.len).min(end);
        }
        first.ok_or(fault(BusFaultReason::ZeroLength))
    }
}

impl Drop for VfioDomain {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        for (&iova, run) in &st.runs {
            let _ = self.container.unmap_dma(iova, run.len);
        }
    }
}

/// Splits `[base, base + len)` (page-aligned) into runs contiguous in this process's view of
/// `phys`: `(offset from base, length)` pairs, in bytes.
fn host_runs(phys: &PhysMem, base: PhysAddr, len: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut prev: Option<usize> = None;
    let mut off = 0;
    while off < len {
        let p = phys.cpu_ptr(base + off).map(|p| p.as_ptr() as usize);
        match (prev, p, out.last_mut()) {
            (Some(q), Some(p), Some(last)) if p == q + PAGE_SIZE as usize => last.1 += PAGE_SIZE,
            _ => out.push((off, PAGE_SIZE)),
        }
        prev = p;
        off += PAGE_SIZE;
    }
    out
}
