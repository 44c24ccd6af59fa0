//! The error type of every page-table operation.

use crate::{Iova, Prot};

/// Why a page-table operation was refused. A refused operation changed nothing that a device can
/// observe (see each operation for the exact guarantee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The size is 0 bytes.
    #[error("size is zero")]
    ZeroSize,
    /// `what` ("iova", "dma address", "size", "segment length") is not a multiple of the format's
    /// granule (`align`, bytes).
    #[error("{what} {value:#x} is not aligned to the {align:#x}-byte granule")]
    Misaligned {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The required alignment in bytes.
        align: u64,
    },
    /// The end of the range (`value`, exclusive) lies beyond what the table can address
    /// (`limit` = 2^ias for an IOVA, 2^oas for an output address: the table's
    /// [`AddressSizes`](crate::AddressSizes)).
    #[error("{what} range ends at {value:#x}, beyond the format's limit {limit:#x}")]
    OutOfRange {
        /// "iova" or "dma address".
        what: &'static str,
        /// Exclusive end of the offending range.
        value: u64,
        /// Exclusive limit.
        limit: u64,
    },
    /// `iova + size` (or `dma + size`) overflows 64 bits.
    #[error("range at {start:#x} of {size:#x} bytes overflows 64 bits")]
    Overflow {
        /// Start of the range.
        start: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// Part of the range is already mapped; `iova` is the lowest mapped address found in it.
    /// Nothing was written.
    #[error("IOVA {iova} is already mapped")]
    AlreadyMapped {
        /// Lowest already-mapped IOVA inside the requested range.
        iova: Iova,
    },
    /// The table allocator had no page. Everything the call wrote was undone.
    #[error("no memory for a page-table page")]
    NoMemory,
    /// The table allocator returned a page whose bus address the table cannot hold: beyond the
    /// output size (`oas`, see [`AddressSizes`](crate::AddressSizes)), beyond what the MMU's
    /// root register holds for the root ([`Format::ROOT_BITS`](crate::Format::ROOT_BITS)), or
    /// not aligned to the table size. The page was given back.
    #[error("table page at bus address {dma:#x} is not reachable by this format's walker")]
    BadTableAddr {
        /// The offending bus address.
        dma: u64,
    },
    /// A segment covers the format's dummy page (Intel IPU), whose entries mean "empty": such a
    /// mapping could not be told apart from no mapping.
    #[error("bus address {dma:#x} is the page table's dummy page")]
    DummyPage {
        /// The dummy page's bus address.
        dma: u64,
    },
    /// The [`Gather`](crate::Gather) holds the work (TLB ranges, table pages to free) of another
    /// page table: a table only adds to, and completes, a gather that is empty or its own, so
    /// that table pages only ever return to the allocator they came from. Nothing was done; the
    /// gather is as it was, for its own table to complete.
    #[error("the gather holds another page table's work")]
    ForeignGather,
    /// The range to unmap cuts a block mapping (ARM LPAE 2 MiB or 1 GiB): `iova`, one end of the
    /// range, falls strictly inside the `size`-byte block at `block`. Unmapping part of a block
    /// would need a table written over a live block, which break-before-make forbids
    /// (io-pgtable-arm.c refuses it since Linux v6.13, commit 33729a5fc0ca); use
    /// [`PageTable::unmap_split`](crate::PageTable::unmap_split) or unmap the whole block.
    /// Nothing changed.
    #[error("unmap boundary {iova} cuts the {size:#x}-byte block at {block}")]
    PartialBlock {
        /// The end of the requested range that lies inside the block.
        iova: Iova,
        /// First IOVA of the block.
        block: Iova,
        /// Size of the block in bytes.
        size: u64,
    },
    /// [`AddressSizes`](crate::AddressSizes) the format cannot be configured with: `what` is
    /// `"ias"` (outside [`Format::MIN_IOVA_BITS`](crate::Format::MIN_IOVA_BITS)`..=`
    /// [`Format::IOVA_BITS`](crate::Format::IOVA_BITS)) or `"oas"` (not one of
    /// [`Format::OA_SIZES`](crate::Format::OA_SIZES)). Nothing was allocated.
    #[error("{what} of {bits} bits is not one this format supports")]
    BadAddressSize {
        /// "ias" or "oas".
        what: &'static str,
        /// The refused size in bits.
        bits: u32,
    },
    /// Dirty tracking was asked of a table whose format has none
    /// ([`Format::DIRTY_TRACKING`](crate::Format::DIRTY_TRACKING) is false: every format but
    /// ARM LPAE stage 1, AMD v1 and VT-d second stage; the kernel's arm-smmu-v3 refuses it for
    /// stage 2 with `-EOPNOTSUPP`).
    /// Nothing changed.
    #[error("the {format} format has no dirty tracking")]
    DirtyTrackingUnsupported {
        /// The format's [`Format::NAME`](crate::Format::NAME).
        format: &'static str,
    },
    /// Dirty tracking was asked of a table whose walker is not coherent: the hardware's
    /// update of a leaf would land in memory the CPU caches do not see, so arm-smmu-v3 turns it
    /// on only with a coherent table walk (`arm_smmu_dbm_capable`: `ARM_SMMU_FEAT_HD` and
    /// `ARM_SMMU_FEAT_COHERENCY`). Nothing changed.
    #[error("dirty tracking needs a coherent table walk")]
    DirtyTrackingNeedsCoherentWalk,
    /// [`PageTable::read_and_clear_dirty`](crate::PageTable::read_and_clear_dirty) on a table
    /// without dirty tracking ([`PageTable::enable_dirty_tracking`](crate::PageTable::enable_dirty_tracking)).
    /// Nothing changed.
    #[error("dirty tracking is not enabled on this table")]
    DirtyTrackingOff,
    /// The protection grants neither read nor write.
    #[error("protection {prot} grants no access")]
    NoAccess {
        /// The refused protection.
        prot: Prot,
    },
}
