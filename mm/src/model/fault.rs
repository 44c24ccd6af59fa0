//! Fault records of the simulated device: what a real MMU reports in its fault registers.

use devmmu_pagetable::{DmaAddr, Iova};

use crate::dma::BusFault;

/// The kind of access that faulted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Access {
    /// A device read (DMA from memory).
    Read,
    /// A device write (DMA to memory).
    Write,
}

/// Why an access did not complete as the driver intended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultReason {
    /// The walk met an invalid entry at `level` (ARM LPAE translation fault).
    Translation {
        /// Level of the invalid entry (0 = root).
        level: usize,
    },
    /// The IOVA is beyond the MMU's input width.
    AddressSize,
    /// The leaf does not allow this access (a write to a read-only mapping, a read of a
    /// write-only one on formats that can say so).
    Permission,
    /// Reading a table entry failed on the bus (the table's bus address does not translate).
    WalkAbort {
        /// Bus address of the entry.
        pte_addr: DmaAddr,
    },
    /// The data access's bus address did not translate (system IOMMU fault, beyond the DMA
    /// mask, no RAM there).
    Bus(BusFault),
    /// The walk returned a leaf overlapping a block the TLB may still hold (walked, and no
    /// invalidation covering it since) that is not the same leaf: the block was replaced (by a
    /// table of smaller leaves, typically) without break-before-make. An SMMUv3 reports this as
    /// `F_TLB_CONFLICT` and terminates the access; so does the model.
    TlbConflict {
        /// First IOVA of the block the TLB may still hold.
        block: Iova,
        /// Its size in bytes.
        size: u64,
    },
    /// Intel IPU format: the IOVA is not bound, so the access went to the dummy page, as on the
    /// hardware (which reports nothing). Recorded so tests can see it.
    DummyPage,
}

/// One fault record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fault {
    /// Address space (VM) of the access.
    pub asid: u32,
    /// IOVA of the first byte that faulted.
    pub iova: Iova,
    /// Read or write.
    pub access: Access,
    /// Why.
    pub reason: FaultReason,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} fault at IOVA {} (asid {}): {:?}",
            self.access, self.iova, self.asid, self.reason
        )
    }
}

impl std::error::Error for Fault {}
