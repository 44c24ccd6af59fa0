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
use crate::phys::{PhysAddr, PhysMem, PhysSegment};

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

    /// Records that the DMA layer owns `[pa, pa + len)` as `owner`. The caller owns the frames
    /// and calls [`DmaMachine::disown`] before freeing them.
    pub(crate) fn own(&self, pa: PhysAddr, len: u64, owner: DmaOwner) {
        self.owned
            .lock()
            .insert(pa.0, (pa.0.saturating_add(len), owner));
    }

    /// Forgets the range starting at `pa` recorded by [`DmaMachine::own`].
    pub(crate) fn disown(&self, pa: PhysAddr) {
        self.owned.lock().remove(&pa.0);
    }

    /// The first DMA-layer-owned byte among `segs` (in their order) and its owner. One lock for
    /// the whole list: a scattered buffer is one segment per page.
    pub(crate) fn owner_of(&self, segs: &[PhysSegment]) -> Option<(PhysAddr, DmaOwner)> {
        let owned = self.owned.lock();
        segs.iter().find_map(|s| {
            let end = s.addr.0.saturating_add(s.len);
            // Ranges are disjoint: if the last one starting before `end` ends at or before the
            // segment's start, every earlier one does too.
            let (&start, &(stop, owner)) = owned.range(..end).next_back()?;
            (stop > s.addr.0).then_some((PhysAddr(start.max(s.addr.0)), owner))
        })
    }
}
