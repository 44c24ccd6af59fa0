//! Buffers allocated for DMA: coherent (`dma_alloc_coherent`) and non-coherent
//! (`dma_alloc_noncoherent`).
//!
//! Each buffer owns its frames (allocated where the device reaches them without bouncing:
//! contiguous and below the mask for direct DMA, anywhere and scattered behind an IOMMU, mapped
//! contiguously in IOVA) and its mapping, released when the buffer is dropped or freed.

use std::sync::Arc;

use devmmu_pagetable::{DmaAddr, Prot};

use super::registry::Mapping;
use super::stats::Counters;
use super::types::{DmaDirection, MappingKind};
use super::{Backend, DmaOps};
use crate::phys::{pages_for, CacheMode, FrameAlloc, Frames, PhysAddr, Zone, PAGE_SIZE};
use crate::MmError;

/// Frames and mapping shared by both buffer kinds.
struct Inner {
    ops: Arc<DmaOps>,
    frames: Frames,
    dma: DmaAddr,
    size: u64,
    id: u64,
}

impl Inner {
    fn alloc(
        ops: &Arc<DmaOps>,
        size: u64,
        kind: MappingKind,
        dir: DmaDirection,
    ) -> Result<Inner, MmError> {
        ops.check_attached()?;
        if size == 0 {
            return Err(MmError::ZeroSize);
        }
        let pages = pages_for(size).ok_or(MmError::ZeroSize)?;
        let bytes = pages * PAGE_SIZE;
        let base_prot = if kind == MappingKind::Coherent {
            Prot::RW
        } else {
            dir.prot(false)
        };
        let (frames, segs, node) = match &ops.backend {
            Backend::Direct(d) => {
                // One bus-contiguous run: the device has no MMU of the system's to gather pages.
                let req = match d.zone() {
                    Zone::Any => FrameAlloc::contiguous(),
                    Zone::Below(limit) => FrameAlloc::contiguous().below(limit),
                };
                let frames = ops.phys.alloc_frames(pages, req)?;
                let seg = d.map_buffer(ops.dev.mask, frames.pages()[0], bytes)?;
                (frames, vec![seg], None)
            }
            Backend::Iommu(i) => {
                let frames = ops.phys.alloc_frames(pages, FrameAlloc::scattered())?;
                let prot = if ops.dev.coherent {
                    base_prot | Prot::CACHE
                } else {
                    base_prot
                };
                let (segs, node) = i.map_phys(&ops.counters, &frames.segments(), prot)?;
                (frames, segs, Some(node))
            }
            Backend::Vfio(v) => {
                let frames = ops.phys.alloc_frames(pages, FrameAlloc::scattered())?;
                let write = base_prot.contains(Prot::WRITE);
                let (segs, node) = v.map_phys(&ops.phys, &frames.segments(), write)?;
                (frames, segs, Some(node))
            }
        };
        if kind == MappingKind::Coherent && !ops.dev.coherent {
            // arch_dma_prep_coherent: no dirty line of the buffer may be written back over
            // what the device writes through its uncached view.
            for s in &segs {
                if let Err(e) = ops.phys.clean_invalidate(s.pa, s.len) {
                    ops.release(&segs, node);
                    return Err(e);
                }
            }
        }
        let dma = segs[0].dma;
        let id = ops.registry.lock().insert(Mapping {
            kind,
            dir,
            handle: dma,
            len: size,
            segs,
            iova: node,
            device_owned: false,
            checked: false,
        });
        Counters::add(&ops.counters.maps, 1);
        Ok(Inner {
            ops: Arc::clone(ops),
            frames,
            dma,
            size,
            id,
        })
    }

    /// Splits `offset..offset + len` of the buffer into physically contiguous pieces.
    fn phys_pieces(&self, offset: u64, len: u64) -> Result<Vec<(PhysAddr, u64)>, MmError> {
        let end =
            offset
                .checked_add(len)
                .filter(|&e| e <= self.size)
                .ok_or(MmError::OutOfBounds {
                    offset,
                    len,
                    size: self.size,
                })?;
        let mut out = Vec::new();
        let mut cur = offset;
        while cur < end {
            let n = (end - cur).min(PAGE_SIZE - cur % PAGE_SIZE);
            out.push((self.frames.phys_addr(cur)?, n));
            cur += n;
        }
        Ok(out)
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<(), MmError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MmError::OutOfBounds {
                offset,
                len: len as u64,
                size: self.size,
            }),
        }
    }

    fn same_ops(&self, ops: &DmaOps) -> bool {
        core::ptr::eq(Arc::as_ptr(&self.ops), ops)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Unmap before the frames go (they drop after this body): an IOPTE must never point at
        // a frame that could be handed out again.
        let m = self.ops.registry.lock().remove(self.id);
        if let Some(m) = m {
            self.ops.release(&m.segs, m.iova);
            Counters::add(&self.ops.counters.unmaps, 1);
        }
    }
}

/// A buffer from [`DmaOps::alloc_coherent`]: CPU and device see each other's writes without any
/// sync (`dma_alloc_coherent`).
///
/// For a non-coherent device the kernel maps such a buffer uncached for the CPU; here its
/// accessors behave so in [`CacheMode::Model`]: [`CoherentBuffer::write`] is a CPU write plus a
/// clean of the lines written, [`CoherentBuffer::read`] an invalidate plus a CPU read. Bytes
/// written through [`CoherentBuffer::frames`] bypass that and need the caller's own maintenance.
/// Dropping the buffer unmaps it and frees its frames.
pub struct CoherentBuffer {
    inner: Inner,
}

impl core::fmt::Debug for CoherentBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CoherentBuffer")
            .field("dma", &self.inner.dma)
            .field("size", &self.inner.size)
            .finish()
    }
}

impl CoherentBuffer {
    /// Bus address of byte 0; the buffer is DMA-contiguous.
    pub fn dma(&self) -> DmaAddr {
        self.inner.dma
    }

    /// Size in bytes as requested (the frames hold it rounded up to whole pages).
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// The frames behind the buffer.
    pub fn frames(&self) -> &Frames {
        &self.inner.frames
    }

    /// The ops of the device it was allocated for.
    pub fn ops(&self) -> &Arc<DmaOps> {
        &self.inner.ops
    }

    fn uncached(&self) -> bool {
        let ops = &self.inner.ops;
        !ops.dev.coherent && ops.phys.cache_mode() == CacheMode::Model
    }

    /// Reads `buf.len()` bytes at `offset` as the CPU's uncached view sees them: what the device
    /// last wrote.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`] beyond [`CoherentBuffer::size`] (`buf` untouched).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MmError> {
        self.inner.check_range(offset, buf.len())?;
        if self.uncached() {
            let phys = &self.inner.ops.phys;
            for (pa, n) in self.inner.phys_pieces(offset, buf.len() as u64)? {
                phys.invalidate(pa, n)?;
            }
        }
        self.inner.frames.read(offset, buf)
    }

    /// Writes `data` at `offset` through the CPU's uncached view: the device sees it at once.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`] beyond [`CoherentBuffer::size`] (nothing written).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MmError> {
        self.inner.check_range(offset, data.len())?;
        self.inner.frames.write(offset, data)?;
        if self.uncached() {
            let phys = &self.inner.ops.phys;
            for (pa, n) in self.inner.phys_pieces(offset, data.len() as u64)? {
                phys.clean(pa, n)?;
            }
        }
        Ok(())
    }
}

/// A buffer from [`DmaOps::alloc_noncoherent`] (`dma_alloc_noncoherent`): cached CPU memory the
/// device reaches without bouncing; ownership moves with [`NonCoherentBuffer::sync_for_device`]
/// and [`NonCoherentBuffer::sync_for_cpu`] (or the `sync_single_*` calls on its DMA address).
/// It starts owned by the CPU. Dropping it unmaps it and frees its frames.
pub struct NonCoherentBuffer {
    inner: Inner,
    dir: DmaDirection,
}

impl core::fmt::Debug for NonCoherentBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NonCoherentBuffer")
            .field("dma", &self.inner.dma)
            .field("size", &self.inner.size)
            .field("dir", &self.dir)
            .finish()
    }
}

impl NonCoherentBuffer {
    /// Bus address of byte 0; the buffer is DMA-contiguous.
    pub fn dma(&self) -> DmaAddr {
        self.inner.dma
    }

    /// Size in bytes as requested.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// The direction given at allocation.
    pub fn dir(&self) -> DmaDirection {
        self.dir
    }

    /// The frames behind the buffer.
    pub fn frames(&self) -> &Frames {
        &self.inner.frames
    }

    /// The ops of the device it was allocated for.
    pub fn ops(&self) -> &Arc<DmaOps> {
        &self.inner.ops
    }

    /// Reads from the CPU's (cached) view.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`] beyond [`NonCoherentBuffer::size`].
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MmError> {
        self.inner.check_range(offset, buf.len())?;
        self.inner.frames.read(offset, buf)
    }

    /// Writes into the CPU's (cached) view: the device sees it after
    /// [`NonCoherentBuffer::sync_for_device`].
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`] beyond [`NonCoherentBuffer::size`].
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MmError> {
        self.inner.check_range(offset, data.len())?;
        self.inner.frames.write(offset, data)
    }

    /// Hands `len` bytes at `offset` to the device, in the buffer's direction.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`], [`MmError::ZeroSize`], or as
    /// [`DmaOps::sync_single_for_device`].
    pub fn sync_for_device(&self, offset: u64, len: u64) -> Result<(), MmError> {
        self.inner.check_range(offset, len as usize)?;
        self.inner
            .ops
            .sync_single_for_device(self.inner.dma + offset, len, self.dir)
    }

    /// Hands `len` bytes at `offset` back to the CPU, in the buffer's direction.
    ///
    /// # Errors
    /// As [`NonCoherentBuffer::sync_for_device`].
    pub fn sync_for_cpu(&self, offset: u64, len: u64) -> Result<(), MmError> {
        self.inner.check_range(offset, len as usize)?;
        self.inner
            .ops
            .sync_single_for_cpu(self.inner.dma + offset, len, self.dir)
    }
}

impl DmaOps {
    /// Allocates `size` bytes (rounded up to whole pages) of coherent DMA memory, zeroed, mapped
    /// read-write for the device (`dma_alloc_coherent`). Direct: physically contiguous frames the
    /// device reaches unbounced, `DmaAddr = phys + bus_offset`. IOMMU: scattered frames mapped
    /// contiguously in a fresh IOVA range. For a non-coherent device the buffer's lines are
    /// cleaned and invalidated first, as `arch_dma_prep_coherent` does.
    ///
    /// # Errors
    /// [`MmError::ZeroSize`]; [`MmError::DmaDetached`]; [`MmError::NoMemory`] (no such frames:
    /// direct DMA needs one contiguous run below the mask); [`MmError::Os`]; direct:
    /// [`MmError::BeyondDmaMask`]; IOMMU: [`MmError::NoAddressSpace`], [`MmError::IommuMap`].
    pub fn alloc_coherent(self: &Arc<Self>, size: u64) -> Result<CoherentBuffer, MmError> {
        Ok(CoherentBuffer {
            inner: Inner::alloc(
                self,
                size,
                MappingKind::Coherent,
                DmaDirection::Bidirectional,
            )?,
        })
    }

    /// Frees a coherent buffer (`dma_free_coherent`): unmaps it, then frees its frames. Dropping
    /// the buffer does the same.
    ///
    /// # Errors
    /// [`MmError::DmaWrongDevice`] if `buf` was allocated by another device's ops; it is freed
    /// all the same, through its own ops.
    pub fn free_coherent(&self, buf: CoherentBuffer) -> Result<(), MmError> {
        let same = buf.inner.same_ops(self);
        let dma = buf.dma();
        drop(buf);
        if same {
            Ok(())
        } else {
            Err(MmError::DmaWrongDevice { dma })
        }
    }

    /// Allocates `size` bytes (rounded up to whole pages) of cached memory the device reaches
    /// without bouncing, mapped for `dir` (`dma_alloc_noncoherent`). The caller moves ownership
    /// with the sync calls.
    ///
    /// # Errors
    /// As [`DmaOps::alloc_coherent`].
    pub fn alloc_noncoherent(
        self: &Arc<Self>,
        size: u64,
        dir: DmaDirection,
    ) -> Result<NonCoherentBuffer, MmError> {
        Ok(NonCoherentBuffer {
            inner: Inner::alloc(self, size, MappingKind::NonCoherent, dir)?,
            dir,
        })
    }

    /// Frees a non-coherent buffer (`dma_free_noncoherent`); dropping it does the same.
    ///
    /// # Errors
    /// [`MmError::DmaWrongDevice`], as [`DmaOps::free_coherent`].
    pub fn free_noncoherent(&self, buf: NonCoherentBuffer) -> Result<(), MmError> {
        let same = buf.inner.same_ops(self);
        let dma = buf.dma();
        drop(buf);
        if same {
            Ok(())
        } else {
            Err(MmError::DmaWrongDevice { dma })
        }
    }
}
