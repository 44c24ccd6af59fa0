//! ARM LPAE (VMSAv8-64) stage-1 descriptors with the 16 KiB and the 64 KiB translation granule.
//!
//! Sources: Arm ARM (DDI 0487) D8.2 "Translation table walk" (the IOVA split of each granule)
//! and D8.3 "Translation table descriptor formats" (table, block and page descriptors: OA
//! field per granule); the kernel's drivers/iommu/io-pgtable-arm.c: `ARM_LPAE_GRANULE` (a table
//! is one granule: `sizeof(arm_lpae_iopte) << bits_per_level`), `bits_per_level = pg_shift -
//! ilog2(sizeof(arm_lpae_iopte))` (11 for 16 KiB, 13 for 64 KiB), the number of levels
//! `DIV_ROUND_UP(ias - pg_shift, bits_per_level)`, and `arm_lpae_restrict_pgsizes` (the leaf
//! sizes: `SZ_16K | SZ_32M` for the 16 KiB granule, `SZ_64K | SZ_512M` for 64 KiB, plus 4 TiB
//! with a 52-bit `oas`, not supported here). The attribute fields are the 4 KiB format's
//! ([`crate::fmt::arm_lpae`]: `arm_lpae_prot_to_pte`), identical for every granule.
//!
//! Levels are numbered from the root of a full-size (48-bit) table, as [`Format`] does:
//!
//! | format | level 0 (Arm lookup level) | level 1 | level 2 | level 3 | leaves |
//! |---|---|---|---|---|---|
//! | [`ArmLpae16k`] | L0: IOVA \[47\] (2 entries) | L1: \[46:36\] (2048) | L2: \[35:25\] (2048) | L3: \[24:14\] (2048) | 32 MiB blocks at L2, 16 KiB pages at L3 |
//! | [`ArmLpae64k`] | L1: IOVA \[47:42\] (64 entries) | L2: \[41:29\] (8192) | L3: \[28:16\] (8192) | — | 512 MiB blocks at L2, 64 KiB pages at L3 |
//!
//! - A table below the root is one granule: 2048 or 8192 entries of 8 bytes, 16 KiB or 64 KiB,
//!   so these formats need an allocator that supplies large tables
//!   ([`TableAlloc::alloc_large_table`](crate::TableAlloc::alloc_large_table); the default
//!   allocator, [`HeapTableAlloc`](crate::HeapTableAlloc), does). The 48-bit root is smaller
//!   (16 or 512 bytes) and takes one 4 KiB page.
//! - Input size configurable from 32 to 48 bits (TCR.T0SZ); a narrower one starts the walk
//!   lower, as io-pgtable-arm.c counts levels: 16 KiB granule, `ias` 32..=36 two levels (from
//!   L2), 37..=47 three (from L1), 48 four; 64 KiB granule, `ias` 32..=42 two levels (from L2),
//!   43..=48 three.
//! - Output size as TCR.IPS allows up to 48 bits: 32, 36, 40, 42, 44 or 48. No FEAT_LPA /
//!   FEAT_LPA2 (52-bit output), hence no 64 GiB (16 KiB) or 4 TiB (64 KiB) L1 blocks.
//! - Entry layout (page, block and table descriptors): type bits \[1:0\] and the stage-1
//!   attributes as with 4 KiB ([`crate::fmt::arm_lpae`]); the output address, or the next
//!   table's address, in bits \[47:14\] (16 KiB) or \[47:16\] (64 KiB). With the 64 KiB
//!   granule, bits \[15:12\] are OA\[51:48\] under FEAT_LPA (io-pgtable-arm.c
//!   `iopte_to_paddr`): never written here, decoded so that a walk of such an entry reports an
//!   address-size fault rather than a wrong address.

use crate::fmt::arm_lpae::{
    s1_leaf_attrs, s1_prot, PTE_AP_RDONLY, PTE_AP_WR_CLEAN_MASK, PTE_DBM, PTE_TYPE_BLOCK,
    PTE_TYPE_MASK, PTE_TYPE_PAGE, PTE_TYPE_TABLE, PTE_VALID,
};
use crate::{format::Entry, DmaAddr, Format, Prot};

/// log2 of the 16 KiB granule (TCR.TG0 = 0b10; io-pgtable-arm.c `pg_shift` for `SZ_16K`).
pub const GRANULE_16K_SHIFT: u32 = 14;
/// Index bits per level with the 16 KiB granule: 2048 entries of 8 bytes per table
/// (io-pgtable-arm.c `bits_per_level` = 14 - 3).
pub const BITS_PER_LEVEL_16K: u32 = 11;
/// Output address bits \[47:14\] of a 16 KiB-granule page, block or table descriptor
/// (Arm ARM D8.3.1; bits \[13:12\] are RES0 without FEAT_LPA2).
pub const PTE_ADDR_MASK_16K: u64 = 0x0000_ffff_ffff_c000;

/// log2 of the 64 KiB granule (TCR.TG0 = 0b01; io-pgtable-arm.c `pg_shift` for `SZ_64K`).
pub const GRANULE_64K_SHIFT: u32 = 16;
/// Index bits per level with the 64 KiB granule: 8192 entries of 8 bytes per table
/// (io-pgtable-arm.c `bits_per_level` = 16 - 3).
pub const BITS_PER_LEVEL_64K: u32 = 13;
/// Output address bits \[47:16\] of a 64 KiB-granule page, block or table descriptor
/// (Arm ARM D8.3.1).
pub const PTE_ADDR_MASK_64K: u64 = 0x0000_ffff_ffff_0000;
/// Bits \[15:12\] of a 64 KiB-granule descriptor: OA\[51:48\] with FEAT_LPA (Arm ARM D8.3.1;
/// io-pgtable-arm.c `paddr_to_iopte` / `iopte_to_paddr` fold them there).
pub const PTE_ADDR_HI_MASK_64K: u64 = 0xf000;
/// Where bits \[15:12\] of a 64 KiB-granule descriptor go in the output address: OA\[51:48\].
pub const PTE_ADDR_HI_SHIFT_64K: u32 = 48 - 12;

/// TCR.IPS output sizes up to 48 bits (`ARM_LPAE_TCR_PS_32_BIT` .. `ARM_LPAE_TCR_PS_48_BIT`).
const OA_SIZES_48: &[u32] = &[32, 36, 40, 42, 44, 48];

/// A stage-1 leaf: attributes, then the type of a page (last level) or a block.
#[inline]
fn leaf_attrs(level: usize, last: usize, prot: Prot) -> u64 {
    let ty = if level == last {
        PTE_TYPE_PAGE
    } else {
        PTE_TYPE_BLOCK
    };
    s1_leaf_attrs(prot) | ty
}

/// Decodes a descriptor at `level` of a format whose last level is `last`, whose blocks may be
/// at the levels of `leaf_levels`, with output address `addr` (already extracted, aligned to
/// the granule) and leaves of `1 << shift` bytes at this level.
#[inline]
fn decode(
    level: usize,
    last: usize,
    leaf_levels: &[bool],
    pte: u64,
    addr: u64,
    shift: u32,
) -> Entry {
    if pte & PTE_VALID == 0 {
        return Entry::Invalid;
    }
    match pte & PTE_TYPE_MASK {
        PTE_TYPE_TABLE if level < last => Entry::Table(DmaAddr(addr)),
        PTE_TYPE_PAGE if level == last => Entry::Leaf(DmaAddr(addr), s1_prot(pte)),
        PTE_TYPE_BLOCK if level < last && leaf_levels[level] => {
            // A block's address bits below the block size are RES0, ignored by the walker.
            Entry::Leaf(DmaAddr(addr & !((1u64 << shift) - 1)), s1_prot(pte))
        }
        // A block where the granule allows none, or type 01 at the last level: reserved, a
        // translation fault.
        _ => Entry::Invalid,
    }
}

/// ARM LPAE stage 1, 16 KiB granule: 48-bit IOVA, 4 levels (2, 2048, 2048, 2048 entries),
/// 16 KiB pages and 32 MiB blocks.
#[derive(Clone, Copy, Default, Debug)]
pub struct ArmLpae16k;

impl Format for ArmLpae16k {
    type Pte = u64;
    const NAME: &'static str = "arm-lpae-16k";
    const LEVELS: usize = 4;
    const GRANULE_SHIFT: u32 = GRANULE_16K_SHIFT;
    /// 48 - 14 = 34 bits = 1 + 3 x 11: the root (L0) resolves one bit.
    const LEVEL_BITS: &'static [u32] = &[
        1,
        BITS_PER_LEVEL_16K,
        BITS_PER_LEVEL_16K,
        BITS_PER_LEVEL_16K,
    ];
    /// `SZ_16K | SZ_32M`: pages at L3 and blocks at L2 only.
    const LEAF_LEVELS: &'static [bool] = &[false, false, true, true];
    const IOVA_BITS: u32 = 48;
    const OA_BITS: u32 = 48;
    const MIN_IOVA_BITS: u32 = 32;
    const OA_SIZES: &'static [u32] = OA_SIZES_48;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;
    /// The stage-1 DBM and AP\[2\] bits, the same for every granule (Arm ARM D8.3 "Stage 1
    /// attribute fields"; `arm_lpae_read_and_clear_dirty` takes `ARM_64_LPAE_S1` whatever the
    /// granule): see [`ArmLpae4k`](crate::ArmLpae4k).
    const DIRTY_TRACKING: bool = true;
    const DIRTY_MASK: u64 = PTE_AP_WR_CLEAN_MASK;
    const DIRTY_CLEAN: u64 = PTE_DBM | PTE_AP_RDONLY;
    const DIRTY_SET: u64 = PTE_DBM;

    #[inline]
    fn leaf_attrs(level: usize, prot: Prot) -> u64 {
        leaf_attrs(level, 3, prot)
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | (addr.0 & PTE_ADDR_MASK_16K)
    }

    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        (table.0 & PTE_ADDR_MASK_16K) | PTE_TYPE_TABLE
    }

    fn decode(level: usize, pte: u64) -> Entry {
        let addr = pte & PTE_ADDR_MASK_16K;
        decode(
            level,
            3,
            Self::LEAF_LEVELS,
            pte,
            addr,
            Self::level_shift(level),
        )
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level < 3 && pte & PTE_TYPE_MASK == PTE_TYPE_TABLE
    }
}

/// ARM LPAE stage 1, 64 KiB granule: 48-bit IOVA, 3 levels (64, 8192, 8192 entries), 64 KiB
/// pages and 512 MiB blocks. Level 0 here is the Arm lookup level 1.
#[derive(Clone, Copy, Default, Debug)]
pub struct ArmLpae64k;

impl Format for ArmLpae64k {
    type Pte = u64;
    const NAME: &'static str = "arm-lpae-64k";
    const LEVELS: usize = 3;
    const GRANULE_SHIFT: u32 = GRANULE_64K_SHIFT;
    /// 48 - 16 = 32 bits = 6 + 2 x 13: the root (Arm L1) resolves six bits.
    const LEVEL_BITS: &'static [u32] = &[6, BITS_PER_LEVEL_64K, BITS_PER_LEVEL_64K];
    /// `SZ_64K | SZ_512M`: pages at Arm L3, blocks at Arm L2 (the 4 TiB L1 block needs a
    /// 52-bit `oas`).
    const LEAF_LEVELS: &'static [bool] = &[false, true, true];
    const IOVA_BITS: u32 = 48;
    const OA_BITS: u32 = 48;
    const MIN_IOVA_BITS: u32 = 32;
    const OA_SIZES: &'static [u32] = OA_SIZES_48;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;
    /// The stage-1 DBM and AP\[2\] bits, the same for every granule (Arm ARM D8.3 "Stage 1
    /// attribute fields"; `arm_lpae_read_and_clear_dirty` takes `ARM_64_LPAE_S1` whatever the
    /// granule): see [`ArmLpae4k`](crate::ArmLpae4k).
    const DIRTY_TRACKING: bool = true;
    const DIRTY_MASK: u64 = PTE_AP_WR_CLEAN_MASK;
    const DIRTY_CLEAN: u64 = PTE_DBM | PTE_AP_RDONLY;
    const DIRTY_SET: u64 = PTE_DBM;

    #[inline]
    fn leaf_attrs(level: usize, prot: Prot) -> u64 {
        leaf_attrs(level, 2, prot)
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | (addr.0 & PTE_ADDR_MASK_64K)
    }

    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        (table.0 & PTE_ADDR_MASK_64K) | PTE_TYPE_TABLE
    }

    fn decode(level: usize, pte: u64) -> Entry {
        let addr =
            (pte & PTE_ADDR_MASK_64K) | ((pte & PTE_ADDR_HI_MASK_64K) << PTE_ADDR_HI_SHIFT_64K);
        decode(
            level,
            2,
            Self::LEAF_LEVELS,
            pte,
            addr,
            Self::level_shift(level),
        )
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level < 2 && pte & PTE_TYPE_MASK == PTE_TYPE_TABLE
    }
}
