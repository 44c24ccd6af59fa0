//! What a format is: how many levels, how an IOVA is split, which levels may hold leaves, and how
//! one entry is encoded. The map/unmap algorithm ([`PageTable`](crate::PageTable)) and the walker
//! ([`walk`](crate::walk)) are written once against this trait, in the manner of Linux's
//! generic page table (drivers/iommu/generic_pt/: one algorithm, one small file per format).

use crate::alloc_table::{MAX_TABLE_SIZE, TABLE_SIZE};
use crate::{DmaAddr, Prot};
use core::marker::PhantomData;

mod sealed {
    /// Only `u32` and `u64` are entry words: the page table reads table memory as `F::Pte`, which
    /// is sound only for plain integers (every bit pattern valid, no padding).
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// The machine word of one IOPTE: `u32` or `u64` (sealed: no other type can be one, because
/// the page table reads table memory, zeroed or written by the device's driver, as this type).
pub trait PteWord:
    sealed::Sealed + Copy + Eq + Default + Send + Sync + core::fmt::Debug + 'static
{
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
/// given, level `LEVELS - 1` holds the smallest pages. A table of level `l` has
/// `1 << LEVEL_BITS[l]` entries and lives in one 4 KiB page ([`TABLE_SIZE`]) if they fit, else in
/// one block of exactly their size, at most [`MAX_TABLE_SIZE`], which the allocator must be able
/// to supply ([`TableAlloc::alloc_large_table`](crate::TableAlloc::alloc_large_table)): the
/// 16 KiB and 64 KiB granules of ARM LPAE, the 16 KiB L1 table of ARMv7 short descriptors.
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
    /// Smallest input size ([`AddressSizes::ias`](crate::AddressSizes)) a table of this format
    /// may be configured with; [`Format::IOVA_BITS`] is the largest. Default: not configurable.
    const MIN_IOVA_BITS: u32 = Self::IOVA_BITS;
    /// The output sizes ([`AddressSizes::oas`](crate::AddressSizes)) a table of this format may
    /// be configured with. Default: only [`Format::OA_BITS`].
    const OA_SIZES: &'static [u32] = &[Self::OA_BITS];
    /// Width in bits of the root table's bus address as the MMU's root register holds it
    /// (TTBR, the IPU's L1 base register). Default: [`Format::OA_BITS`].
    const ROOT_BITS: u32 = Self::OA_BITS;
    /// Whether an empty entry is the all-zero value. If not, empty entries point at a dummy
    /// page (last level) or a dummy table (upper levels), as on the Intel IPU MMU, and the page
    /// table allocates those at creation.
    const EMPTY_IS_ZERO: bool;
    /// Whether the device TLB may hold translations for empty entries, so that a *map* must be
    /// followed by a TLB invalidation too (true where empty entries point at a dummy page).
    const TLB_CACHES_EMPTY: bool;
    /// Whether [`PageTable::unmap`](crate::PageTable::unmap) frees, by default, a table it
    /// leaves empty (after the TLB invalidation) rather than keeping it linked for later maps.
    /// True unless the format's drivers keep tables until teardown (the Intel IPU).
    const FREE_EMPTY_TABLES: bool = true;

    /// Whether the hardware records writes in the leaves themselves (dirty tracking: the Arm
    /// hardware update of the dirty state, HTTU with CD.TCR.HD on an SMMUv3), so that
    /// [`PageTable::enable_dirty_tracking`](crate::PageTable::enable_dirty_tracking) and
    /// [`PageTable::read_and_clear_dirty`](crate::PageTable::read_and_clear_dirty) can be used.
    /// Default: no; the three masks below are then unused.
    ///
    /// A format that says yes gives three masks: the leaf bits holding the dirty state
    /// ([`Format::DIRTY_MASK`]) and their value in a writable leaf the hardware has not written
    /// through ([`Format::DIRTY_CLEAN`], "writable-clean") and in one it has
    /// ([`Format::DIRTY_SET`], "writable-dirty"). The hardware moves a leaf from clean to dirty
    /// on the first write through it; software moves it back. Checked at compile time: the two
    /// values differ and lie inside the mask, which fits `Pte`.
    const DIRTY_TRACKING: bool = false;
    /// The bits of a leaf that hold its dirty state (see [`Format::DIRTY_TRACKING`]).
    const DIRTY_MASK: u64 = 0;
    /// The dirty-state bits of a writable-clean leaf (see [`Format::DIRTY_TRACKING`]).
    const DIRTY_CLEAN: u64 = 0;
    /// The dirty-state bits of a writable-dirty leaf (see [`Format::DIRTY_TRACKING`]).
    const DIRTY_SET: u64 = 0;

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

    // The methods below are derived from the constants above. Do not override them:
    // [`PageTable`](crate::PageTable) and [`walk`](crate::walk) never call them for the
    // addressing of table memory (they use the same values, computed once at compile time from
    // the constants), so an override could only make a format disagree with itself.

    /// Number of entries in a table of `level`.
    #[inline(always)]
    fn entries(level: usize) -> usize {
        Geometry::<Self>::ENTRIES[level]
    }

    /// log2 of the bytes mapped by one entry of `level`.
    #[inline(always)]
    fn level_shift(level: usize) -> u32 {
        Geometry::<Self>::SHIFT[level]
    }

    /// Index of `iova` in a table of `level`.
    #[inline(always)]
    fn index(level: usize, iova: u64) -> usize {
        Geometry::<Self>::index(level, iova)
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
                m |= 1u64 << Geometry::<Self>::SHIFT[l];
            }
        }
        m
    }

    /// Leaf `pte` made writable-clean: its dirty-state bits set to [`Format::DIRTY_CLEAN`]
    /// (Arm: `DBM | AP[2]`, io-pgtable-arm.c `iopte_set_writeable_clean`). Only meaningful for
    /// a writable leaf of a format with [`Format::DIRTY_TRACKING`]; `pte` unchanged otherwise.
    /// Branch-free.
    #[inline(always)]
    fn with_dirty_clear(pte: Self::Pte) -> Self::Pte {
        let m = if Self::DIRTY_TRACKING {
            Self::DIRTY_MASK
        } else {
            0
        };
        Self::Pte::from_u64((pte.to_u64() & !m) | (Self::DIRTY_CLEAN & m))
    }

    /// Leaf `pte` made writable-dirty, as the hardware does on the first write through a
    /// writable-clean leaf (Arm: AP\[2\] cleared, DBM kept). `pte` unchanged for a format
    /// without [`Format::DIRTY_TRACKING`]. Branch-free.
    #[inline(always)]
    fn with_dirty_set(pte: Self::Pte) -> Self::Pte {
        let m = if Self::DIRTY_TRACKING {
            Self::DIRTY_MASK
        } else {
            0
        };
        Self::Pte::from_u64((pte.to_u64() & !m) | (Self::DIRTY_SET & m))
    }

    /// Whether leaf `pte` is writable-dirty (io-pgtable-arm.c `iopte_writeable_dirty`: DBM set,
    /// AP\[2\] clear). Always false for a format without [`Format::DIRTY_TRACKING`].
    #[inline(always)]
    fn is_dirty(pte: Self::Pte) -> bool {
        Self::DIRTY_TRACKING & (pte.to_u64() & Self::DIRTY_MASK == Self::DIRTY_SET)
    }

    /// Whether leaf `pte` is writable-clean: a write through it makes the hardware set it
    /// dirty first. Always false for a format without [`Format::DIRTY_TRACKING`].
    #[inline(always)]
    fn is_writable_clean(pte: Self::Pte) -> bool {
        Self::DIRTY_TRACKING & (pte.to_u64() & Self::DIRTY_MASK == Self::DIRTY_CLEAN)
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

/// The geometry of format `F`, computed once at compile time from its constants, and checked
/// there: what the page table relies on to keep every access to table memory inside one table
/// page. [`Geometry::VALID`] fails to compile (when a `PageTable<F, _>` is instantiated) for a
/// format that breaks it:
///
/// - `1 <= LEVELS <= MAX_LEVELS`, and `LEVEL_BITS` and `LEAF_LEVELS` have `LEVELS` entries;
/// - every table fits the table memory it is given ([`Geometry::TABLE_BYTES`]): one
///   [`TABLE_SIZE`] page, or for a level whose entries need more (the 16 KiB and 64 KiB ARM
///   granules, the 16 KiB ARMv7 short-descriptor L1 table) one block of `size_of::<Pte>() <<
///   LEVEL_BITS[l]` bytes, at most [`MAX_TABLE_SIZE`];
/// - the tables of every level below the root have one size (a block split takes its tables
///   from one reserve, whatever their level);
/// - the last level holds leaves (so a map always ends in stores at the last level);
/// - the levels resolve at most 64 bits, and at least `IOVA_BITS` (no two IOVAs of the space
///   share an entry).
pub(crate) struct Geometry<F>(PhantomData<F>);

impl<F: Format> Geometry<F> {
    /// log2 of the bytes one entry of each level maps (`SHIFT[LEVELS - 1] == GRANULE_SHIFT`).
    pub(crate) const SHIFT: [u32; MAX_LEVELS] = {
        let mut s = [0u32; MAX_LEVELS];
        let mut shift = F::GRANULE_SHIFT;
        let mut l = F::LEVELS;
        while l > 0 {
            l -= 1;
            s[l] = shift;
            shift += F::LEVEL_BITS[l];
        }
        s
    };

    /// Bytes of table memory a table of each level is given: one [`TABLE_SIZE`] page, or the
    /// size of its entries if that is larger (a power of two: `size_of::<Pte>() <<
    /// LEVEL_BITS[l]`). A table smaller than a page (the 16-byte L0 table of a 48-bit 16 KiB
    /// ARM LPAE table, the 1 KiB ARMv7 short-descriptor L2 table) still takes a whole page.
    pub(crate) const TABLE_BYTES: [usize; MAX_LEVELS] = {
        let mut t = [TABLE_SIZE; MAX_LEVELS];
        let mut l = 0;
        while l < F::LEVELS {
            let need = core::mem::size_of::<F::Pte>() << F::LEVEL_BITS[l];
            if need > TABLE_SIZE {
                t[l] = need;
            }
            l += 1;
        }
        t
    };

    /// Whether every table of the format is one [`TABLE_SIZE`] page (every format with a 4 KiB
    /// granule and entries that fit): then [`Geometry::table_bytes`] is a constant, and the
    /// page-sized paths of the update code cost nothing for the formats that never need more.
    pub(crate) const ALL_PAGES: bool = {
        let mut all = true;
        let mut l = 0;
        while l < F::LEVELS {
            all &= Self::TABLE_BYTES[l] == TABLE_SIZE;
            l += 1;
        }
        all
    };

    /// Whether the entries of a table of `level` fill its whole page: the table is exactly
    /// one [`TABLE_SIZE`] page. Constant `true` for every format whose tables all do (the
    /// 4 KiB-granule formats with 4 KiB tables); `false` for a table smaller than its page
    /// (the 1 KiB ARMv7 short-descriptor L2 table) or larger (a large table).
    #[inline(always)]
    pub(crate) const fn fills_page(level: usize) -> bool {
        if Self::ALL_FULL {
            true
        } else {
            core::mem::size_of::<F::Pte>() << F::LEVEL_BITS[level] == TABLE_SIZE
        }
    }

    /// Whether every table of the format is exactly one page ([`Geometry::fills_page`]).
    const ALL_FULL: bool = {
        let mut all = true;
        let mut l = 0;
        while l < F::LEVELS {
            all &= core::mem::size_of::<F::Pte>() << F::LEVEL_BITS[l] == TABLE_SIZE;
            l += 1;
        }
        all
    };

    /// Bytes of a table of `level` ([`Geometry::TABLE_BYTES`]).
    #[inline(always)]
    pub(crate) const fn table_bytes(level: usize) -> usize {
        if Self::ALL_PAGES {
            TABLE_SIZE
        } else {
            Self::TABLE_BYTES[level]
        }
    }

    /// Entries of a table of each level.
    pub(crate) const ENTRIES: [usize; MAX_LEVELS] = {
        let mut e = [0usize; MAX_LEVELS];
        let mut l = 0;
        while l < F::LEVELS {
            e[l] = 1 << F::LEVEL_BITS[l];
            l += 1;
        }
        e
    };

    /// Evaluates to `()` for a well-formed format; a compile error otherwise (see the type's doc).
    pub(crate) const VALID: () = {
        assert!(
            F::LEVELS >= 1 && F::LEVELS <= MAX_LEVELS,
            "LEVELS out of 1..=MAX_LEVELS"
        );
        assert!(
            F::LEVEL_BITS.len() == F::LEVELS,
            "LEVEL_BITS must have LEVELS entries"
        );
        assert!(
            F::LEAF_LEVELS.len() == F::LEVELS,
            "LEAF_LEVELS must have LEVELS entries"
        );
        assert!(
            F::LEAF_LEVELS[F::LEVELS - 1],
            "the last level must hold leaves"
        );
        let word = core::mem::size_of::<F::Pte>();
        assert!(word == <F::Pte as PteWord>::BYTES);
        let mut bits = F::GRANULE_SHIFT;
        let mut l = 0;
        while l < F::LEVELS {
            let b = F::LEVEL_BITS[l];
            assert!(b >= 1 && b < 16, "LEVEL_BITS out of 1..16");
            assert!(
                word << b <= MAX_TABLE_SIZE,
                "a table must fit MAX_TABLE_SIZE bytes"
            );
            assert!(
                l == 0 || Self::TABLE_BYTES[l] == Self::TABLE_BYTES[F::LEVELS - 1],
                "tables below the root must all have one size"
            );
            bits += b;
            l += 1;
        }
        assert!(bits <= 64, "the levels resolve more than 64 bits");
        assert!(
            !F::DIRTY_TRACKING
                || (F::DIRTY_CLEAN != F::DIRTY_SET
                    && (F::DIRTY_CLEAN | F::DIRTY_SET) & !F::DIRTY_MASK == 0
                    && (word == 8 || F::DIRTY_MASK >> (8 * word) == 0)),
            "DIRTY_CLEAN and DIRTY_SET must differ and lie inside DIRTY_MASK, inside Pte"
        );
        assert!(
            F::IOVA_BITS <= bits,
            "IOVA_BITS wider than the levels resolve"
        );
    };

    /// Index of `iova` in a table of `level`: always `< ENTRIES[level]`, whatever `iova`.
    #[inline(always)]
    pub(crate) const fn index(level: usize, iova: u64) -> usize {
        ((iova >> Self::SHIFT[level]) as usize) & (Self::ENTRIES[level] - 1)
    }
}
