//! The Apple DART (Device Address Resolution Table) IOMMU of Apple silicon, with 16 KiB pages,
//! in its two entry encodings: DART1 (t8103, the M1) and DART2 (t8110 and later).
//!
//! Sources: the kernel's drivers/iommu/io-pgtable-dart.c (`APPLE_DART_PTE_VALID`,
//! `APPLE_DART1_PADDR_MASK`, `APPLE_DART2_PADDR_MASK` / `_SHIFT`, `APPLE_DART1_PTE_PROT_*`,
//! `APPLE_DART2_PTE_PROT_*`, `APPLE_DART_PTE_SUBPAGE_START` / `_END`, `dart_prot_to_pte`,
//! `dart_init_pte`, `dart_install_table`, `dart_get_index`, `dart_alloc_pgtable`,
//! `apple_dart_alloc_pgtable`) and drivers/iommu/apple-dart.c (the per-SoC `oas` and format).
//!
//! - IOVA: 36 bits with 16 KiB pages (`bits_per_level` = 14 - 3 = 11): L1 index \[35:25\]
//!   (2048 entries), L2 index \[24:14\] (2048 entries), offset \[13:0\]. `dart_alloc_pgtable`
//!   gives 2 table levels and one TTBR (`tbl_bits` = 0) for any `ias` up to 36; configurable
//!   down to 32 bits. Every table is one 16 KiB granule (`DART_GRANULE`), a large table
//!   ([`TableAlloc::alloc_large_table`](crate::TableAlloc::alloc_large_table)).
//! - Leaves: 16 KiB pages at L2 only (no blocks).
//! - Entries are 64 bits. Bit 0 valid. An L1 entry holds the L2 table's address, a leaf the
//!   page's address, both encoded by `paddr_to_iopte`: DART1 keeps address bits \[35:12\] in
//!   place (36-bit output); DART2 stores address >> 4 in bits \[37:10\] (42-bit output).
//! - Leaf permissions are negative: DART1 NO_WRITE bit 7, NO_READ bit 8, and SP_DIS (subpage
//!   protection disabled) bit 1 always set; DART2 NO_CACHE bit 1, NO_WRITE bit 2, NO_READ
//!   bit 3. Every leaf allows its whole page through the subpage range: start (bits \[63:52\])
//!   0, end (bits \[51:40\]) 0xfff. No execute or privilege bit ([`Prot::NOEXEC`] and
//!   [`Prot::PRIV`] are dropped), no device memory type.
//! - L2 tables emptied by unmap are kept until teardown, as `dart_unmap_pages` does (it only
//!   clears leaves; `apple_dart_free_pgtable` frees the tables).
//! - DART walkers are coherent (`apple_dart_alloc_pgtable` refuses `!coherent_walk`).
//! - Not supported: the 4 KiB-page DARTs (t8020 and older: 4 KiB tables and up to four TTBRs,
//!   `DART_MAX_TABLE_BITS`), and subpage ranges other than the whole page (decode ignores the
//!   range, which this format always writes whole).

use crate::{format::Entry, DmaAddr, Format, Prot};

/// Bit 0: the entry is valid (`APPLE_DART_PTE_VALID`).
pub const DART_PTE_VALID: u64 = 1 << 0;
/// log2 of the 16 KiB page (the `pgsize_bitmap` of every DART but the oldest ones).
pub const DART_PAGE_SHIFT: u32 = 14;
/// Index bits per level: 2048 entries of 8 bytes (`bits_per_level` = 14 - ilog2(8)).
pub const DART_BITS_PER_LEVEL: u32 = 11;
/// Subpage range start, bits \[63:52\] (`APPLE_DART_PTE_SUBPAGE_START`): always 0.
pub const DART_PTE_SUBPAGE_START_SHIFT: u32 = 52;
/// Subpage range end, bits \[51:40\] (`APPLE_DART_PTE_SUBPAGE_END`): always 0xfff.
pub const DART_PTE_SUBPAGE_END_SHIFT: u32 = 40;
/// The subpage fields of every leaf: start 0, end 0xfff, i.e. the whole page.
pub const DART_PTE_SUBPAGE_WHOLE: u64 = 0xfff << DART_PTE_SUBPAGE_END_SHIFT;

/// DART1 address field: bits \[35:12\], the address in place (`APPLE_DART1_PADDR_MASK`).
pub const DART1_PADDR_MASK: u64 = 0x0000_000f_ffff_f000;
/// DART1 output size: 36 bits (`DART1_MAX_ADDR_BITS`).
pub const DART1_OA_BITS: u32 = 36;
/// DART1: writes not allowed, bit 7 (`APPLE_DART1_PTE_PROT_NO_WRITE`).
pub const DART1_PTE_PROT_NO_WRITE: u64 = 1 << 7;
/// DART1: reads not allowed, bit 8 (`APPLE_DART1_PTE_PROT_NO_READ`).
pub const DART1_PTE_PROT_NO_READ: u64 = 1 << 8;
/// DART1: subpage protection disabled, bit 1, set on every leaf (`APPLE_DART1_PTE_PROT_SP_DIS`).
pub const DART1_PTE_PROT_SP_DIS: u64 = 1 << 1;

/// DART2 address field: bits \[37:10\], holding address >> 4 (`APPLE_DART2_PADDR_MASK`).
pub const DART2_PADDR_MASK: u64 = 0x0000_003f_ffff_fc00;
/// DART2: the address is stored shifted right by 4 (`APPLE_DART2_PADDR_SHIFT`).
pub const DART2_PADDR_SHIFT: u32 = 4;
/// DART2 output size: up to 42 bits (`apple_dart_alloc_pgtable` accepts `oas` 36 or 42).
pub const DART2_OA_BITS: u32 = 42;
/// DART2: not cacheable, bit 1 (`APPLE_DART2_PTE_PROT_NO_CACHE`), set without IOMMU_CACHE.
pub const DART2_PTE_PROT_NO_CACHE: u64 = 1 << 1;
/// DART2: writes not allowed, bit 2 (`APPLE_DART2_PTE_PROT_NO_WRITE`).
pub const DART2_PTE_PROT_NO_WRITE: u64 = 1 << 2;
/// DART2: reads not allowed, bit 3 (`APPLE_DART2_PTE_PROT_NO_READ`).
pub const DART2_PTE_PROT_NO_READ: u64 = 1 << 3;

/// Apple DART1 (t8103), 16 KiB pages: 36-bit IOVA and output, 2 levels of 2048 entries.
#[derive(Clone, Copy, Default, Debug)]
pub struct AppleDart1;

/// Apple DART2 (t8110, t6000), 16 KiB pages: 36-bit IOVA, 42-bit output, 2 levels of 2048
/// entries.
#[derive(Clone, Copy, Default, Debug)]
pub struct AppleDart2;

/// `paddr_to_iopte` of DART1.
#[inline(always)]
const fn dart1_addr(pa: u64) -> u64 {
    pa & DART1_PADDR_MASK
}

/// `paddr_to_iopte` of DART2.
#[inline(always)]
const fn dart2_addr(pa: u64) -> u64 {
    (pa >> DART2_PADDR_SHIFT) & DART2_PADDR_MASK
}

impl Format for AppleDart1 {
    type Pte = u64;
    const NAME: &'static str = "apple-dart1";
    const LEVELS: usize = 2;
    const GRANULE_SHIFT: u32 = DART_PAGE_SHIFT;
    const LEVEL_BITS: &'static [u32] = &[DART_BITS_PER_LEVEL, DART_BITS_PER_LEVEL];
    const LEAF_LEVELS: &'static [bool] = &[false, true];
    const IOVA_BITS: u32 = 36;
    const OA_BITS: u32 = DART1_OA_BITS;
    const MIN_IOVA_BITS: u32 = 32;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;
    const FREE_EMPTY_TABLES: bool = false;

    /// `dart_prot_to_pte` for `APPLE_DART`, plus the subpage range and valid bit of
    /// `dart_init_pte`.
    #[inline]
    fn leaf_attrs(_level: usize, prot: Prot) -> u64 {
        let mut pte = DART1_PTE_PROT_SP_DIS | DART_PTE_SUBPAGE_WHOLE | DART_PTE_VALID;
        if !prot.contains(Prot::WRITE) {
            pte |= DART1_PTE_PROT_NO_WRITE;
        }
        if !prot.contains(Prot::READ) {
            pte |= DART1_PTE_PROT_NO_READ;
        }
        pte
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | dart1_addr(addr.0)
    }

    /// `dart_install_table`: the table's address and the valid bit.
    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        dart1_addr(table.0) | DART_PTE_VALID
    }

    fn decode(level: usize, pte: u64) -> Entry {
        if pte & DART_PTE_VALID == 0 {
            return Entry::Invalid;
        }
        let addr = DmaAddr(pte & DART1_PADDR_MASK);
        if level == 0 {
            return Entry::Table(addr);
        }
        let mut prot = Prot::NONE;
        if pte & DART1_PTE_PROT_NO_READ == 0 {
            prot |= Prot::READ;
        }
        if pte & DART1_PTE_PROT_NO_WRITE == 0 {
            prot |= Prot::WRITE;
        }
        Entry::Leaf(addr, prot)
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level == 0 && pte & DART_PTE_VALID != 0
    }
}

impl Format for AppleDart2 {
    type Pte = u64;
    const NAME: &'static str = "apple-dart2";
    const LEVELS: usize = 2;
    const GRANULE_SHIFT: u32 = DART_PAGE_SHIFT;
    const LEVEL_BITS: &'static [u32] = &[DART_BITS_PER_LEVEL, DART_BITS_PER_LEVEL];
    const LEAF_LEVELS: &'static [bool] = &[false, true];
    const IOVA_BITS: u32 = 36;
    const OA_BITS: u32 = DART2_OA_BITS;
    const MIN_IOVA_BITS: u32 = 32;
    /// `oas` 36 (t8110) or 42 (t6000).
    const OA_SIZES: &'static [u32] = &[36, DART2_OA_BITS];
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;
    const FREE_EMPTY_TABLES: bool = false;

    /// `dart_prot_to_pte` for `APPLE_DART2`, plus the subpage range and valid bit of
    /// `dart_init_pte`.
    #[inline]
    fn leaf_attrs(_level: usize, prot: Prot) -> u64 {
        let mut pte = DART_PTE_SUBPAGE_WHOLE | DART_PTE_VALID;
        if !prot.contains(Prot::WRITE) {
            pte |= DART2_PTE_PROT_NO_WRITE;
        }
        if !prot.contains(Prot::READ) {
            pte |= DART2_PTE_PROT_NO_READ;
        }
        if !prot.contains(Prot::CACHE) {
            pte |= DART2_PTE_PROT_NO_CACHE;
        }
        pte
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | dart2_addr(addr.0)
    }

    /// `dart_install_table`: the table's address (>> 4) and the valid bit.
    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        dart2_addr(table.0) | DART_PTE_VALID
    }

    fn decode(level: usize, pte: u64) -> Entry {
        if pte & DART_PTE_VALID == 0 {
            return Entry::Invalid;
        }
        // iopte_to_paddr of DART2.
        let addr = DmaAddr((pte & DART2_PADDR_MASK) << DART2_PADDR_SHIFT);
        if level == 0 {
            return Entry::Table(addr);
        }
        let mut prot = Prot::NONE;
        if pte & DART2_PTE_PROT_NO_READ == 0 {
            prot |= Prot::READ;
        }
        if pte & DART2_PTE_PROT_NO_WRITE == 0 {
            prot |= Prot::WRITE;
        }
        if pte & DART2_PTE_PROT_NO_CACHE == 0 {
            prot |= Prot::CACHE;
        }
        Entry::Leaf(addr, prot)
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level == 0 && pte & DART_PTE_VALID != 0
    }
}
