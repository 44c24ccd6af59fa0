//! Device attachments of a BO: its pages DMA-mapped for one device, once.
//!
//! A BO is DMA-mapped at most **once per device**, and that one mapping is shared by everything
//! of the device that uses the BO: every binding of any sub-range in every VM of the device,
//! and every explicit [`Bo::attach`] of the same device. This is DRM GEM shmem's model
//! (drivers/gpu/drm/drm_gem_shmem_helper.c: `drm_gem_shmem_get_pages_sgt` maps the object's
//! pages once, caches the `sg_table` on the object and hands the same table to every VM of the
//! device; Asahi's `VmBo` and `drm_gpuvm_bo` link a VM to the BO without mapping again).
//!
//! Why one mapping: two live streaming mappings of the same memory for one device each get
//! their own swiotlb bounce buffer and their own map-time cache maintenance. A device write
//! through one is invisible through the other, the second map's clean of a non-coherent buffer
//! writes the CPU's stale view over what the device wrote, and the unmap of either copies its
//! stale bounce buffer back over the other's data (kernel/dma/swiotlb.c, dma-api-howto.rst).
//!
//! When the mapping is released: when its last user goes, i.e. the last [`Arc<BoAttachment>`]
//! is dropped (every binding holds one; [`BoAttachment::detach`] drops one and reports the
//! unmap's error if it was the last). GEM shmem keeps its table until the object is freed;
//! we release it earlier because an idle mapping still holds swiotlb slots or system-IOMMU IOVA
//! space, and because the CPU access bracket then has nothing to sync for a device that no
//! longer uses the BO. A new user maps it again.
//!
//! Several devices: each gets its own mapping (its own bus addresses). They may share a BO as
//! long as none of their mappings bounces: a bounced mapping's copy-back at `sync_for_cpu` or
//! unmap would write its stale bounce buffer over what another device wrote to the real pages,
//! and a device reading its bounce buffer would miss what the other device wrote. Such a second
//! attachment is refused with [`MmError::SharedBounce`] (allocate the BO where every device
//! reaches it, e.g. below the smallest DMA mask, or put the devices behind a system IOMMU).

use std::sync::Arc;

use parking_lot::Mutex;

use super::Bo;
use crate::dma::{DmaAttrs, DmaDirection, DmaOps, DmaSegment, SgTable};
use crate::MmError;

/// A BO mapped for one device's DMA: the device's one mapping of the BO, shared (as
/// `Arc<BoAttachment>`) by every user of that device.
///
/// Holds a reference to the BO (it cannot be freed while a device may address it) and to the
/// device's [`DmaOps`]. When the last `Arc` goes, the mapping is unmapped
/// (`DmaOps::unmap_sg`, which hands the bytes back to the CPU); use [`BoAttachment::detach`] to
/// see an unmap error.
#[derive(Debug)]
pub struct BoAttachment {
    bo: Arc<Bo>,
    ops: Arc<DmaOps>,
    sg: SgTable,
    /// Whether `sg` is still mapped. Held while syncing, so that a concurrent unmap cannot
    /// release the table between the check and the sync.
    mapped: Mutex<bool>,
}

impl BoAttachment {
    /// The scatter-gather table: the BO's physical segments (buffer order) and the merged DMA
    /// segments the device is given.
    pub fn sg(&self) -> &SgTable {
        &self.sg
    }

    /// The DMA segments, in buffer order: what a device VM writes into IOPTEs. Their lengths
    /// (bytes) add up to the BO's size.
    pub fn dma_segments(&self) -> &[DmaSegment] {
        self.sg.dma()
    }

    /// The direction of the mapping.
    pub fn dir(&self) -> DmaDirection {
        self.sg.dir()
    }

    /// Whether any part of the mapping goes through a swiotlb bounce buffer.
    pub fn is_bounced(&self) -> bool {
        self.sg.is_bounced()
    }

    /// The device's DMA ops.
    pub fn ops(&self) -> &Arc<DmaOps> {
        &self.ops
    }

    /// The attached BO.
    pub fn bo(&self) -> &Arc<Bo> {
        &self.bo
    }

    /// Drops this reference to the device's mapping. If it was the last one, the BO is unmapped
    /// from the device now (`dma_buf_unmap_attachment` + `dma_buf_detach`) and the unmap's
    /// error, if any, is returned; otherwise the mapping stays for its other users and this
    /// returns `Ok(())`.
    ///
    /// # Errors
    /// Those of [`DmaOps::unmap_sg`] (e.g. [`MmError::DmaNotMapped`] if the mapping was
    /// released behind the attachment's back). The reference is gone either way.
    pub fn detach(self: Arc<Self>) -> Result<(), MmError> {
        match Arc::try_unwrap(self) {
            Ok(last) => last.unmap(),
            Err(_shared) => Ok(()),
        }
    }

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

impl Drop for BoAttachment {
    fn drop(&mut self) {
        // Errors cannot leave a destructor; `detach` reports them. With DMA debugging on, the
        // DMA layer has recorded a diagnostic for any failure already.
        let _ = self.unmap();
    }
}

impl Bo {
    /// The BO's mapping for the device behind `ops`, covering direction `dir`: the existing one
    /// if the device has it mapped already (every user of a device shares one mapping), else a
    /// new mapping of the whole BO in direction `dir`.
    ///
    /// A new mapping hands the bytes to the device (for a non-coherent device a clean of every
    /// line, for a bounced one a copy into the bounce buffer, as `DmaOps::map_sg` does), so CPU
    /// writes made before attaching are seen by the device. Reusing the existing mapping does
    /// no cache maintenance and no copy: the device already owns the bytes, and what it wrote
    /// stays where it is.
    ///
    /// Device VMs attach with [`DmaDirection::Bidirectional`], as GEM shmem maps every object
    /// (`DMA_BIDIRECTIONAL`); the device's permissions are then the IOPTEs' business.
    ///
    /// # Errors
    /// - [`MmError::WrongPhysMem`]: `ops` serves another [`PhysMem`](crate::phys::PhysMem) than
    ///   the BO's frames belong to.
    /// - [`MmError::AttachDirection`]: the device has the BO mapped already in a direction that
    ///   does not cover `dir` (e.g. mapped `ToDevice`, asked `Bidirectional`). Map
    ///   `Bidirectional` from the start when a device both reads and writes the BO.
    /// - [`MmError::SharedBounce`]: another device has the BO mapped and one of the two mappings
    ///   bounces through swiotlb while one of them lets its device write (see the module docs).
    /// - Those of [`DmaOps::map_sg`] ([`MmError::BeyondDmaMask`], [`MmError::SwiotlbFull`],
    ///   [`MmError::NoAddressSpace`], [`MmError::DmaDetached`], ...).
    ///
    /// On error nothing new stays mapped and existing mappings are untouched.
    pub fn attach(
        self: &Arc<Self>,
        ops: &Arc<DmaOps>,
        dir: DmaDirection,
    ) -> Result<Arc<BoAttachment>, MmError> {
        if !Arc::ptr_eq(ops.phys(), self.phys()) {
            return Err(MmError::WrongPhysMem {
                device: ops.device().name.clone(),
            });
        }
        // Held across the map, so that two users of one device cannot both map the BO.
        let mut list = self.attachments.lock();
        list.retain(|w| w.strong_count() > 0);
        let live: Vec<Arc<BoAttachment>> = list.iter().filter_map(|w| w.upgrade()).collect();
        if let Some(same) = live.iter().find(|a| Arc::ptr_eq(&a.ops, ops)) {
            let mapped = same.dir();
            return if mapped == dir || mapped == DmaDirection::Bidirectional {
                Ok(Arc::clone(same))
            } else {
                Err(MmError::AttachDirection {
                    device: ops.device().name.clone(),
                    mapped,
                    requested: dir,
                })
            };
        }
        // Another device already owns the bytes, so the CPU has handed them over (the end of
        // its last access bracket synced every attachment) and holds no dirty line of them: a
        // map-time clean would only write the CPU's stale view over what that device wrote.
        // DRM maps an importer's attachment the same way (drm_gem_map_dma_buf).
        let attrs = DmaAttrs {
            skip_cpu_sync: !live.is_empty(),
        };
        let sg = ops.map_frames_attrs(&self.frames, dir, attrs)?;
        let attachment = Arc::new(BoAttachment {
            bo: Arc::clone(self),
            ops: Arc::clone(ops),
            sg,
            mapped: Mutex::new(true),
        });
        if let Some(other) = live.iter().find(|o| {
            (o.is_bounced() || attachment.is_bounced())
                && (o.dir().device_writes() || dir.device_writes())
        }) {
            let err = MmError::SharedBounce {
                device: ops.device().name.clone(),
                other: other.ops.device().name.clone(),
            };
            drop(list);
            // Unmapping a mapping nobody used cannot lose data; its error (none expected) is
            // less useful than the reason for the refusal.
            let _ = attachment.unmap();
            return Err(err);
        }
        list.push(Arc::downgrade(&attachment));
        Ok(attachment)
    }

    /// Number of devices the BO is mapped for (live attachments).
    pub fn attachment_count(&self) -> usize {
        self.live_attachments().len()
    }

    /// Strong references to the live attachments, taken under the list lock and used outside
    /// it.
    pub(crate) fn live_attachments(&self) -> Vec<Arc<BoAttachment>> {
        let mut list = self.attachments.lock();
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(|w| w.upgrade()).collect()
    }

    /// Runs the DMA-debug check for a CPU access to BO bytes `offset..offset + len` (already
    /// bounds-checked) against every device the BO is attached to (one mapping each).
    pub(crate) fn check_cpu_access(&self, offset: u64, len: u64, write: bool) {
        if len == 0 {
            return;
        }
        let live = self.live_attachments();
        if live.is_empty() {
            return;
        }
        let ranges = self.phys_ranges(offset, len);
        for a in &live {
            a.ops.check_cpu_access_ranges(&ranges, write);
        }
    }
}
