//! ARM LPAE (VMSAv8-64) stage-2 descriptors with the 4 KiB granule: the tables an SMMU walks to
//! translate an intermediate physical address (the IOVA here) for a nested or stage-2-only
//! context (io-pgtable's `ARM_64_LPAE_S2`).
//!
//! Sources: Arm ARM (DDI 0487) D8.3 "Translation table descriptor formats" and "Stage 2
//! attribute fields" (S2AP, MemAttr, SH, AF, XN), and the kernel's
//! drivers/iommu/io-pgtable-arm.c: `arm_lpae_prot_to_pte` for `ARM_64_LPAE_S2`
//! (`ARM_LPAE_PTE_HAP_*`, `ARM_LPAE_PTE_MEMATTR_*`, SH from `IOMMU_CACHE`, `ARM_LPAE_PTE_XN`),
//! `__arm_lpae_init_pte` (type bits, AF) and `arm_64_lpae_alloc_pgtable_s2`.
//!
//! - IOVA (IPA) split and leaves as stage 1 with 4 KiB ([`crate::fmt::arm_lpae`]): 48 bits, 4
//!   levels of 512 entries, L0 \[47:39\], L1 \[38:30\], L2 \[29:21\], L3 \[20:12\]; 1 GiB blocks
//!   at L1, 2 MiB at L2, 4 KiB pages at L3; output address bits \[47:12\]. `ias` 32..=48
//!   (VTCR.T0SZ), `oas` 32..=48 (VTCR.PS).
//! - Entry layout of a leaf: type \[1:0\], MemAttr\[3:0\] in \[5:2\], S2AP\[1:0\] in \[7:6\]
//!   (bit 6 read, bit 7 write), SH \[9:8\], AF bit 10, OA \[47:12\], XN\[1:0\] in \[54:53\]. No
//!   AttrIndx (memory type is in the entry itself, not in a MAIR), no nG (stage 2 has no ASID),
//!   no AP\[1\] (no privilege distinction: [`Prot::PRIV`] is dropped).
//! - Unlike stage 1, stage 2 can express write-only (S2AP = 0b10).
//! - Not modelled: concatenated root tables. For `ias` 40..=44, `arm_64_lpae_alloc_pgtable_s2`
//!   concatenates up to 16 level-1 tables into the root instead of starting the walk at level 0
//!   (`ARM_LPAE_S2_MAX_CONCAT_PAGES`), to save a level. Starting at level 0 is an equally valid
//!   VTCR configuration (SL0 = 0b10 with T0SZ 16..=24), and that is what this format does;
//!   a root of several pages would need a root allocation larger than a table, which the
//!   generic page table does not make. The FWB memory-attribute encoding
//!   (`IO_PGTABLE_QUIRK_ARM_S2FWB`) is not used.

use crate::fmt::arm_lpae::{
    PTE_ADDR_MASK, PTE_AF, PTE_SH_IS, PTE_SH_MASK, PTE_SH_OS, PTE_TYPE_BLOCK, PTE_TYPE_MASK,
    PTE_TYPE_PAGE, PTE_TYPE_TABLE, PTE_VALID,
};
use crate::{format::Entry, DmaAddr, Format, Prot};

/// S2AP\[0\], bit 6: reads allowed (`ARM_LPAE_PTE_HAP_READ`).
pub const PTE_HAP_READ: u64 = 1 << 6;
/// S2AP\[1\], bit 7: writes allowed (`ARM_LPAE_PTE_HAP_WRITE`).
pub const PTE_HAP_WRITE: u64 = 2 << 6;
/// Shift of MemAttr\[3:0\], bits \[5:2\] (Arm ARM "Stage 2 memory type and Cacheability
/// attributes").
pub const PTE_MEMATTR_SHIFT: u32 = 2;
/// Mask of MemAttr.
pub const PTE_MEMATTR_MASK: u64 = 0xf << PTE_MEMATTR_SHIFT;
/// MemAttr 0b1111: Normal, outer and inner write-back cacheable (`ARM_LPAE_PTE_MEMATTR_OIWB`).
pub const PTE_MEMATTR_OIWB: u64 = 0xf << PTE_MEMATTR_SHIFT;
/// MemAttr 0b0101: Normal, outer and inner non-cacheable (`ARM_LPAE_PTE_MEMATTR_NC`).
pub const PTE_MEMATTR_NC: u64 = 0x5 << PTE_MEMATTR_SHIFT;
/// MemAttr 0b0001: Device-nGnRE (`ARM_LPAE_PTE_MEMATTR_DEV`).
pub const PTE_MEMATTR_DEV: u64 = 0x1 << PTE_MEMATTR_SHIFT;
/// XN\[1\], bit 54: execute never (without FEAT_XNX, the only XN bit; bit 53 is XN\[0\]).
pub const PTE_S2_XN1: u64 = 1 << 54;
/// Both XN bits, as `ARM_LPAE_PTE_XN` sets them for `IOMMU_NOEXEC` (XN\[1:0\] = 0b11).
pub const PTE_S2_XN: u64 = 3 << 53;

/// ARM LPAE stage 2, 4 KiB granule, 48-bit IPA, 4 levels, 4 KiB pages + 2 MiB and 1 GiB blocks.
#[derive(Clone, Copy, Default, Debug)]
pub struct ArmLpaeS2;

impl Format for ArmLpaeS2 {
    type Pte = u64;
    const NAME: &'static str = "arm-lpae-s2-4k";
    const LEVELS: usize = 4;
    const GRANULE_SHIFT: u32 = 12;
    const LEVEL_BITS: &'static [u32] = &[9, 9, 9, 9];
    const LEAF_LEVELS: &'static [bool] = &[false, true, true, true];
    const IOVA_BITS: u32 = 48;
    const OA_BITS: u32 = 48;
    /// As stage 1: 32-bit IPA spaces and up (below 40 bits the walk starts at L1, VTCR.SL0 =
    /// 0b01).
    const MIN_IOVA_BITS: u32 = 32;
    /// VTCR.PS encodings up to 48 bits (`ARM_LPAE_TCR_PS_32_BIT` .. `ARM_LPAE_TCR_PS_48_BIT`).
    const OA_SIZES: &'static [u32] = &[32, 36, 40, 42, 44, 48];
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;

    /// `arm_lpae_prot_to_pte` for `ARM_64_LPAE_S2`, plus the type bits and AF of
    /// `__arm_lpae_init_pte`.
    #[inline]
    fn leaf_attrs(level: usize, prot: Prot) -> u64 {
        let mut pte = PTE_AF;
        pte |= if level == 3 {
            PTE_TYPE_PAGE
        } else {
            PTE_TYPE_BLOCK
        };
        if prot.contains(Prot::READ) {
            pte |= PTE_HAP_READ;
        }
        if prot.contains(Prot::WRITE) {
            pte |= PTE_HAP_WRITE;
        }
        pte |= if prot.contains(Prot::MMIO) {
            PTE_MEMATTR_DEV
        } else if prot.contains(Prot::CACHE) {
            PTE_MEMATTR_OIWB
        } else {
            PTE_MEMATTR_NC
        };
        pte |= if prot.contains(Prot::CACHE) {
            PTE_SH_IS
        } else {
            PTE_SH_OS
        };
        if prot.contains(Prot::NOEXEC) {
            pte |= PTE_S2_XN;
        }
        pte
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | (addr.0 & PTE_ADDR_MASK)
    }

    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        (table.0 & PTE_ADDR_MASK) | PTE_TYPE_TABLE
    }

    fn decode(level: usize, pte: u64) -> Entry {
        if pte & PTE_VALID == 0 {
            return Entry::Invalid;
        }
        let addr = pte & PTE_ADDR_MASK;
        match (level, pte & PTE_TYPE_MASK) {
            (0..=2, PTE_TYPE_TABLE) => Entry::Table(DmaAddr(addr)),
            (1..=2, PTE_TYPE_BLOCK) | (3, PTE_TYPE_PAGE) => {
                // S2AP 0b00 is a valid leaf that faults on every access: no READ, no WRITE.
                let mut prot = Prot::NONE;
                if pte & PTE_HAP_READ != 0 {
                    prot |= Prot::READ;
                }
                if pte & PTE_HAP_WRITE != 0 {
                    prot |= Prot::WRITE;
                }
                if pte & PTE_S2_XN1 != 0 {
                    prot |= Prot::NOEXEC;
                }
                match pte & PTE_MEMATTR_MASK {
                    // SH follows IOMMU_CACHE even for device memory (as for stage 1): report
                    // it, so that a block split re-encodes the same bits.
                    PTE_MEMATTR_DEV if pte & PTE_SH_MASK == PTE_SH_IS => {
                        prot |= Prot::MMIO | Prot::CACHE
                    }
                    PTE_MEMATTR_DEV => prot |= Prot::MMIO,
                    PTE_MEMATTR_OIWB => prot |= Prot::CACHE,
                    _ => {}
                }
                let size = 1u64 << Self::level_shift(level);
                Entry::Leaf(DmaAddr(addr & !(size - 1)), prot)
            }
            // L0 block with a 4 KiB granule, or type 01 at L3: reserved, a translation fault.
            _ => Entry::Invalid,
        }
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level < 3 && pte & PTE_TYPE_MASK == PTE_TYPE_TABLE
    }
}
