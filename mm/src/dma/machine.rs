//! The DMA layer's state of one machine: what every device of a [`PhysMem`] shares.
//!
//! Kept in the opaque slot a `PhysMem` holds for the DMA layer ([`PhysMem::dma_state`]), created
//! on first use, so it lives and dies with its machine (see `swiotlb.rs` for why a slot and not a
//! process-wide registry). It holds:
//! - the live swiotlb pools, which direct devices share (`swiotlb.rs`);
//! - the physical memory the DMA layer itself owns: swiotlb pool frames, the system IOMMU's
//!   table pages, device page-table pages from a [`TablePool`](super::TablePool). A streaming
//!   mapping of such memory would let a device overwrite the DMA layer's own data (a bounce
//!   buffer of another mapping, an IOMMU or device page table), so `map_page` / `map_sg` refuse
//!   it, as kernel/dma/debug.c's `check_for_illegal_area` flags mappings of kernel text.

use std::any::Any;
use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::swiotlb::SwiotlbPools;
use super::types::DmaOwner;
#[cfg(test)]
use crate::phys::PhysSegment;
use crate::phys::{PhysAddr, PhysMem};

/// The DMA layer's shared state of one machine.
#[derive(Debug, Default)]
pub(crate) struct DmaMachine {
    pub(crate) swiotlb: SwiotlbPools,
    /// Physical ranges the DMA layer owns: start -> (end, owner), disjoint, bytes.
    owned: Mutex<BTreeMap<u64, (u64, DmaOwner)>>,
}

impl DmaMachine {
    /// The state of `phys`, created in its DMA-layer slot on first use.
    pub(crate) fn of(phys: &PhysMem) -> &DmaMachine {
        let state: &(dyn Any + Send + Sync) = &**phys
            .dma_state()
            .get_or_init(|| Box::new(DmaMachine::default()));
        state
            .downcast_ref()
            .expect("a PhysMem's DMA-layer slot holds only its DmaMachine")
    }

    /// Records that the DMA layer owns `[pa, pa + len)` of `phys` as `owner`: tags its frames
    /// in the frame table ([`PhysMem::set_dma_tag`]), so a map finds them with the lookups it
    /// makes anyway. The caller owns the frames and calls [`DmaMachine::disown`] before freeing
    /// them.
    pub(crate) fn own(&self, phys: &PhysMem, pa: PhysAddr, len: u64, owner: DmaOwner) {
        phys.set_dma_tag(pa, len, tag_of(owner));
        self.owned
            .lock()
            .insert(pa.0, (pa.0.saturating_add(len), owner));
    }

    /// Forgets the range starting at `pa` recorded by [`DmaMachine::own`], and its frames' tag.
    pub(crate) fn disown(&self, phys: &PhysMem, pa: PhysAddr) {
        if let Some((end, _)) = self.owned.lock().remove(&pa.0) {
            phys.set_dma_tag(pa, end - pa.0, 0);
        }
    }

    /// The first DMA-layer-owned byte among `segs` (in their order) and its owner, from the
    /// frames' tags. Segments that are not allocated memory are skipped. (`map_sg` makes the
    /// same check inside its own allocation check; this is for tests.)
    #[cfg(test)]
    pub(crate) fn owner_of(phys: &PhysMem, segs: &[PhysSegment]) -> Option<(PhysAddr, DmaOwner)> {
        let frames = phys.frames();
        segs.iter().find_map(|s| {
            let (at, tag) = frames.check_allocated_tagged(s.addr, s.len).ok()??;
            Some((at, owner_of_tag(tag)?))
        })
    }
}

/// The frame tag of each owner (0 is "none").
pub(crate) fn tag_of(owner: DmaOwner) -> u8 {
    match owner {
        DmaOwner::SwiotlbPool => 1,
        DmaOwner::IommuTable => 2,
        DmaOwner::DeviceTable => 3,
    }
}

/// The owner a frame tag names ([`tag_of`]'s inverse), `None` for 0 or an unknown tag.
pub(crate) fn owner_of_tag(tag: u8) -> Option<DmaOwner> {
    match tag {
        1 => Some(DmaOwner::SwiotlbPool),
        2 => Some(DmaOwner::IommuTable),
        3 => Some(DmaOwner::DeviceTable),
        _ => None,
    }
}
