//! Device attachments of a BO: its pages mapped for one device's DMA.
//!
//! An attachment is `dma_buf_attach` + `dma_buf_map_attachment` in one (drivers/dma-buf/
//! dma-buf.c): the BO's physical segments go through the device's [`DmaOps::map_sg`] and the
//! resulting [`SgTable`] holds the `DmaAddr`s a device VM writes into IOPTEs. The BO keeps a
//! weak list of its live attachments so that the CPU access bracket can hand each of them
//! between CPU and device; dropping (or [`BoAttachment::detach`]ing) an attachment unmaps it.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Bo;
use crate::dma::{DmaDirection, DmaOps, DmaSegment, SgTable};
use crate::MmError;

/// What the BO's weak list points at: one live mapping of the BO for one device.
#[derive(Debug)]
pub(crate) struct AttachmentInner {
    pub(crate) ops: Arc<DmaOps>,
    sg: SgTable,
    /// Whether `sg` is still mapped. Held while syncing, so that a concurrent detach cannot
    /// unmap the table between the check and the sync.
    mapped: Mutex<bool>,
}

impl AttachmentInner {
    /// `sync_sg_for_cpu` if still mapped.
    pub(crate) fn sync_for_cpu(&self) -> Result<(), MmError> {
        let mapped = self.mapped.lock();
        if *mapped {
            self.ops.sync_sg_for_cpu(&self.sg)?;
        }
        Ok(())
    }

    /// `sync_sg_for_device` if still mapped.
    pub(crate) fn sync_for_device(&self) -> Result<(), MmError> {
        let mapped = self.mapped.lock();
        if *mapped {
            self.ops.sync_sg_for_device(&self.sg)?;
        }
        Ok(())
    }

    /// Unmaps the table once; later calls do nothing.
    fn unmap(&self) -> Result<(), MmError> {
        let mut mapped = self.mapped.lock();
        if !*mapped {
            return Ok(());
        }
        *mapped = false;
        self.ops.unmap_sg(&self.sg)
    }
}

/// A BO mapped for one device's DMA in one direction.
///
/// Holds a reference to the BO (it cannot be freed while a device may address it) and to the
/// device's [`DmaOps`]. Dropping it unmaps (`DmaOps::unmap_sg`, which hands the bytes back to
/// the CPU); use [`BoAttachment::detach`] to see an unmap error.
#[derive(Debug)]
pub struct BoAttachment {
    bo: Arc<Bo>,
    inner: Arc<AttachmentInner>,
}

impl BoAttachment {
    /// The scatter-gather table: the BO's physical segments (buffer order) and the merged DMA
    /// segments the device is given.
    pub fn sg(&self) -> &SgTable {
        &self.inner.sg
    }

    /// The DMA segments, in buffer order: what a device VM writes into IOPTEs. Their lengths
    /// (bytes) add up to the BO's size.
    pub fn dma_segments(&self) -> &[DmaSegment] {
        self.inner.sg.dma()
    }

    /// The direction of the mapping.
    pub fn dir(&self) -> DmaDirection {
        self.inner.sg.dir()
    }

    /// The device's DMA ops.
    pub fn ops(&self) -> &Arc<DmaOps> {
        &self.inner.ops
    }

    /// The attached BO.
    pub fn bo(&self) -> &Arc<Bo> {
        &self.bo
    }

    /// Unmaps the BO from the device (`dma_buf_unmap_attachment` + `dma_buf_detach`).
    ///
    /// # Errors
    /// Those of [`DmaOps::unmap_sg`] (e.g. [`MmError::DmaNotMapped`] if the mapping was
    /// released behind the attachment's back). The attachment is gone either way.
    pub fn detach(self) -> Result<(), MmError> {
        self.inner.unmap()
    }
}

impl Drop for BoAttachment {
    fn drop(&mut self) {
        // Errors cannot leave a destructor; `detach` reports them. With DMA debugging on, the
        // DMA layer has recorded a diagnostic for any failure already.
        let _ = self.inner.unmap();
    }
}

impl Bo {
    /// Maps the whole BO for the device behind `ops` in direction `dir` and returns the
    /// attachment. The mapping hands the bytes to the device (for a non-coherent device: a
    /// clean of every line, as `DmaOps::map_sg` does), so CPU writes made before attaching are
    /// seen by the device.
    ///
    /// # Errors
    /// - [`MmError::WrongPhysMem`]: `ops` serves another [`PhysMem`](crate::phys::PhysMem) than
    ///   the BO's frames belong to.
    /// - Those of [`DmaOps::map_sg`] ([`MmError::BeyondDmaMask`], [`MmError::SwiotlbFull`],
    ///   [`MmError::IovaExhausted`], [`MmError::DmaDetached`], ...). Nothing stays mapped.
    pub fn attach(
        self: &Arc<Self>,
        ops: &Arc<DmaOps>,
        dir: DmaDirection,
    ) -> Result<BoAttachment, MmError> {
        if !Arc::ptr_eq(ops.phys(), self.phys()) {
            return Err(MmError::WrongPhysMem {
                device: ops.device().name.clone(),
            });
        }
        let sg = ops.map_sg(&self.segments(), dir)?;
        let inner = Arc::new(AttachmentInner {
            ops: Arc::clone(ops),
            sg,
            mapped: Mutex::new(true),
        });
        {
            let mut list = self.attachments.lock();
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&inner));
        }
        Ok(BoAttachment {
            bo: Arc::clone(self),
            inner,
        })
    }

    /// Number of live attachments.
    pub fn attachment_count(&self) -> usize {
        self.live_attachments().len()
    }

    /// Strong references to the live attachments, taken under the list lock and used outside
    /// it.
    pub(crate) fn live_attachments(&self) -> Vec<Arc<AttachmentInner>> {
        let mut list = self.attachments.lock();
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(|w| w.upgrade()).collect()
    }

    /// Runs the DMA-debug check for a CPU access to BO bytes `offset..offset + len` (already
    /// bounds-checked) against every device the BO is attached to, once per device.
    pub(crate) fn check_cpu_access(&self, offset: u64, len: u64, write: bool) {
        if len == 0 {
            return;
        }
        let live = self.live_attachments();
        if live.is_empty() {
            return;
        }
        let ranges = self.phys_ranges(offset, len);
        let mut seen: Vec<&Arc<DmaOps>> = Vec::new();
        for a in &live {
            if seen.iter().any(|o| Arc::ptr_eq(o, &a.ops)) {
                continue;
            }
            seen.push(&a.ops);
            a.ops.check_cpu_access_ranges(&ranges, write);
        }
    }
}
