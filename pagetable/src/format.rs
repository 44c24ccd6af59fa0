//! What a format is: how many levels, how an IOVA is split, which levels may hold leaves, and how
//! one entry is encoded. The map/unmap algorithm ([`PageTable`](crate::PageTable)) and the walker
//! ([`walk`](crate::walk)) are written once against this trait, in the manner of Linux's
//! generic page table (drivers/iommu/generic_pt/: one algorithm, one small file per format).

use crate::{DmaAddr, Prot};

/// The machine word of one IOPTE: `u32` or `u64`.
pub trait PteWord: Copy + Eq + Default + Send + Sync + core::fmt::Debug + 'static {
    /// Size of one entry in bytes (4 or 8).
    const BYTES: usize;
    /// Zero-extends to 64 bits.
    fn to_u64(self) -> u64;
    /// Truncates from 64 bits.
    fn from_u64(v: u64) -> Self;
}

impl PteWord for u32 {
    const BYTES: usize = 4;
    #[inline(always)]
    fn to_u64(self) -> u64 {
        self as u64
    }
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v as u32
    }
}

impl PteWord for u64 {
    const BYTES: usize = 8;
    #[inline(always)]
    fn to_u64(self) -> u64 {
        self
    }
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v
    }
}

/// What one entry means to the hardware walker, decoded from its raw value alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Not valid: the walk faults here.
    Invalid,
    /// Points at the next-level table, at this bus address.
    Table(DmaAddr),
    /// A leaf: a page (last level) or a block, mapping the output address with these permissions.
    Leaf(DmaAddr, Prot),
}

/// Maximum number of levels any format may have.
pub const MAX_LEVELS: usize = 6;

/// A page-table format. Formats are zero-sized types; every method is a pure function of its
/// arguments, so the map/unmap code is monomorphised per format with no dynamic dispatch.
///
/// Levels are numbered from the root: level 0 is the table whose bus address the device's MMU is
/// given, level `LEVELS - 1` holds the smallest pages. Every table of every level is exactly one
/// granule (`1 << GRANULE_SHIFT` bytes) of `1 << LEVEL_BITS[l]` entries.
pub trait Format: Copy + Default + Send + Sync + 'static {
    /// Raw entry type.
    type Pte: PteWord;
    /// Short name, e.g. `"ipu"`.
    const NAME: &'static str;
    /// Number of levels.
    const LEVELS: usize;
    /// log2 of the granule (smallest page and table size) in bytes: 12 for 4 KiB.
    const GRANULE_SHIFT: u32;
    /// Index bits of each level, root first (`LEVELS` entries).
    const LEVEL_BITS: &'static [u32];
    /// Which levels may hold leaves (`LEVELS` entries). The last level always does.
    const LEAF_LEVELS: &'static [bool];
    /// Width of the IOVA space in bits: valid IOVAs are `0 .. 1 << IOVA_BITS`.
    const IOVA_BITS: u32;
    /// Width of the output (bus) address in bits.
    const OA_BITS: u32;
    /// Whether an empty entry is the all-zero value. If not, empty entries point at a dummy
    /// page (last level) or a dummy table (upper levels), as on the Intel IPU MMU, and the page
    /// table allocates those at creation.
    const EMPTY_IS_ZERO: bool;
    /// Whether the device TLB may hold translations for empty entries, so that a *map* must be
    /// followed by a TLB invalidation too (true where empty entries point at a dummy page).
    const TLB_CACHES_EMPTY: bool;

    /// The attribute bits of a leaf at `level` with protection `prot`, without the address.
    fn leaf_attrs(level: usize, prot: Prot) -> Self::Pte;
    /// A leaf entry: `attrs` (from [`Format::leaf_attrs`]) combined with output address `addr`
    /// (aligned to the leaf size of its level). This is the store path: keep it branch-free.
    fn leaf_with_addr(attrs: Self::Pte, addr: DmaAddr) -> Self::Pte;
    /// A table entry at `level` pointing at the next-level table at bus address `table`.
    fn table_entry(level: usize, table: DmaAddr) -> Self::Pte;
    /// Decodes an entry at `level` as the hardware walker sees it.
    fn decode(level: usize, pte: Self::Pte) -> Entry;
    /// Whether `pte` at `level` is a table pointer (cheap test used on the update path).
    fn is_table(level: usize, pte: Self::Pte) -> bool;

    /// Number of entries in a table of `level`.
    #[inline(always)]
    fn entries(level: usize) -> usize {
        1 << Self::LEVEL_BITS[level]
    }

    /// log2 of the bytes mapped by one entry of `level`.
    #[inline]
    fn level_shift(level: usize) -> u32 {
        let mut shift = Self::GRANULE_SHIFT;
        let mut l = Self::LEVELS;
        while l > level + 1 {
            l -= 1;
            shift += Self::LEVEL_BITS[l];
        }
        shift
    }

    /// Index of `iova` in a table of `level`.
    #[inline(always)]
    fn index(level: usize, iova: u64) -> usize {
        ((iova >> Self::level_shift(level)) as usize) & (Self::entries(level) - 1)
    }

    /// Granule in bytes.
    #[inline(always)]
    fn granule() -> u64 {
        1 << Self::GRANULE_SHIFT
    }

    /// The leaf sizes the format supports, in bytes, as a bit mask (bit n set = 2^n-byte leaves),
    /// like the kernel's `pgsize_bitmap`.
    fn page_sizes() -> u64 {
        let mut m = 0;
        for l in 0..Self::LEVELS {
            if Self::LEAF_LEVELS[l] {
                m |= 1u64 << Self::level_shift(l);
            }
        }
        m
    }

    /// What a mapping made with `prot` reads back as: the flags the format can express.
    fn effective_prot(prot: Prot) -> Prot {
        let last = Self::LEVELS - 1;
        match Self::decode(
            last,
            Self::leaf_with_addr(Self::leaf_attrs(last, prot), DmaAddr(0)),
        ) {
            Entry::Leaf(_, p) => p,
            _ => Prot::NONE,
        }
    }
}
