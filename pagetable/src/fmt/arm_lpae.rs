//! ARM LPAE (VMSAv8-64) stage-1 descriptors with the 4 KiB granule, as an SMMU or a GPU MMU
//! walks them.
//!
//! Sources: Arm ARM (DDI 0487) D8.3 "Translation table descriptor formats" (table, block and page
//! descriptors, "Stage 1 attribute fields"), and the kernel's drivers/iommu/io-pgtable-arm.c
//! (`ARM_LPAE_PTE_*`, `arm_lpae_prot_to_pte`, `ARM_LPAE_MAIR_ATTR_IDX_*`), whose encoding of
//! `IOMMU_*` flags this file reproduces bit for bit.
//!
//! - IOVA: 48 bits, 4 levels of 512 entries: L0 \[47:39\], L1 \[38:30\], L2 \[29:21\], L3 \[20:12\].
//!   Configurable down to 32 bits ([`AddressSizes`](crate::AddressSizes)::ias, TCR.T0SZ); below
//!   40 bits the walk starts at L1 (3 levels), as io-pgtable-arm.c computes its levels.
//! - Output size configurable as TCR.IPS allows: 32, 36, 40, 42, 44 or 48 bits.
//! - Leaves: 1 GiB blocks at L1, 2 MiB blocks at L2, 4 KiB pages at L3 (no L0 block with a 4 KiB
//!   granule unless FEAT_LPA2, which this format does not use).
//! - Output address bits \[47:12\].

use crate::{format::Entry, DmaAddr, Format, Prot};

/// Bit 0: the descriptor is valid (D8.3.1).
pub const PTE_VALID: u64 = 1 << 0;
/// Bits \[1:0\] of a table descriptor at L0-L2 (`ARM_LPAE_PTE_TYPE_TABLE`).
pub const PTE_TYPE_TABLE: u64 = 3;
/// Bits \[1:0\] of a page descriptor at L3 (`ARM_LPAE_PTE_TYPE_PAGE`).
pub const PTE_TYPE_PAGE: u64 = 3;
/// Bits \[1:0\] of a block descriptor at L1-L2 (`ARM_LPAE_PTE_TYPE_BLOCK`).
pub const PTE_TYPE_BLOCK: u64 = 1;
/// Mask of the type bits \[1:0\].
pub const PTE_TYPE_MASK: u64 = 3;
/// AttrIndx\[2:0\], bits \[4:2\]: index into MAIR (`ARM_LPAE_PTE_ATTRINDX_SHIFT` = 2).
pub const PTE_ATTRINDX_SHIFT: u32 = 2;
/// Mask of AttrIndx.
pub const PTE_ATTRINDX_MASK: u64 = 7 << PTE_ATTRINDX_SHIFT;
/// MAIR index of normal non-cacheable memory (`ARM_LPAE_MAIR_ATTR_IDX_NC`, MAIR attr 0x44).
pub const MAIR_IDX_NC: u64 = 0;
/// MAIR index of normal write-back cacheable memory (`ARM_LPAE_MAIR_ATTR_IDX_CACHE`, 0xff).
pub const MAIR_IDX_CACHE: u64 = 1;
/// MAIR index of device nGnRE memory (`ARM_LPAE_MAIR_ATTR_IDX_DEV`, 0x04).
pub const MAIR_IDX_DEV: u64 = 2;
/// NS, bit 5 (not set by this format: secure state is not modelled).
pub const PTE_NS: u64 = 1 << 5;
/// AP\[1\], bit 6: accessible at EL0, i.e. unprivileged (`ARM_LPAE_PTE_AP_UNPRIV`).
pub const PTE_AP_UNPRIV: u64 = 1 << 6;
/// AP\[2\], bit 7: read-only (`ARM_LPAE_PTE_AP_RDONLY`).
pub const PTE_AP_RDONLY: u64 = 1 << 7;
/// SH\[1:0\], bits \[9:8\], outer shareable (`ARM_LPAE_PTE_SH_OS`): non-cacheable mappings.
pub const PTE_SH_OS: u64 = 2 << 8;
/// SH\[1:0\], bits \[9:8\], inner shareable (`ARM_LPAE_PTE_SH_IS`): cacheable mappings.
pub const PTE_SH_IS: u64 = 3 << 8;
/// Mask of SH.
pub const PTE_SH_MASK: u64 = 3 << 8;
/// AF, bit 10: access flag, always set so the first access does not fault (`ARM_LPAE_PTE_AF`).
pub const PTE_AF: u64 = 1 << 10;
/// nG, bit 11: not global, set on every stage-1 leaf (`ARM_LPAE_PTE_nG`).
pub const PTE_NG: u64 = 1 << 11;
/// DBM, bit 51: Dirty Bit Modifier (`ARM_LPAE_PTE_DBM`; Arm ARM D8.3 "Stage 1 attribute
/// fields", FEAT_HAFDBS). With hardware dirty-state update enabled (SMMUv3 CD.TCR.HD), a
/// leaf with DBM set and AP\[2\] set is writable-clean: the first write through it clears
/// AP\[2\] atomically instead of faulting (Arm ARM D8.4.6 "Hardware management of the dirty
/// state"; SMMUv3 IHI 0070 3.13 "Translation table entries and Access/Dirty flags").
pub const PTE_DBM: u64 = 1 << 51;
/// The dirty-state bits of a stage-1 leaf: DBM and AP\[2\] (`ARM_LPAE_PTE_AP_WR_CLEAN_MASK`,
/// io-pgtable-arm.c). DBM | AP\[2\] = writable-clean, DBM alone = writable-dirty
/// (`iopte_writeable_dirty`), AP\[2\] alone = read-only.
pub const PTE_AP_WR_CLEAN_MASK: u64 = PTE_AP_RDONLY | PTE_DBM;
/// PXN, bit 53.
pub const PTE_PXN: u64 = 1 << 53;
/// UXN/XN, bit 54.
pub const PTE_UXN: u64 = 1 << 54;
/// Both execute-never bits, as `ARM_LPAE_PTE_XN` sets them for `IOMMU_NOEXEC`.
pub const PTE_XN: u64 = PTE_PXN | PTE_UXN;
/// Output address bits \[47:12\] of a page, block or table descriptor.
pub const PTE_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// The stage-1 attribute bits of a leaf for `prot`, without the type bits and the address:
/// `arm_lpae_prot_to_pte` for `ARM_64_LPAE_S1` (AP, AttrIndx, SH, XN, nG) plus the AF that
/// `__arm_lpae_init_pte` sets. The same for every granule (Arm ARM D8.3 "Stage 1 attribute
/// fields").
#[inline(always)]
pub(crate) fn s1_leaf_attrs(prot: Prot) -> u64 {
    let mut pte = PTE_NG | PTE_AF;
    if !prot.contains(Prot::WRITE) && prot.contains(Prot::READ) {
        pte |= PTE_AP_RDONLY;
    }
    if !prot.contains(Prot::PRIV) {
        pte |= PTE_AP_UNPRIV;
    }
    let idx = if prot.contains(Prot::MMIO) {
        MAIR_IDX_DEV
    } else if prot.contains(Prot::CACHE) {
        MAIR_IDX_CACHE
    } else {
        MAIR_IDX_NC
    };
    pte |= idx << PTE_ATTRINDX_SHIFT;
    pte |= if prot.contains(Prot::CACHE) {
        PTE_SH_IS
    } else {
        PTE_SH_OS
    };
    if prot.contains(Prot::NOEXEC) {
        pte |= PTE_XN;
    }
    pte
}

/// The protection a valid stage-1 leaf grants, from its attribute bits (the inverse of
/// [`s1_leaf_attrs`] on what stage 1 can express).
#[inline]
pub(crate) fn s1_prot(pte: u64) -> Prot {
    // Stage 1 cannot express write-only or no-read: every valid leaf is readable.
    let mut prot = Prot::READ;
    // Writable: AP[2] clear, or DBM set (writable-clean: the hardware clears AP[2] on the
    // first write; DBM is set only in tables with dirty tracking, whose MMU has CD.TCR.HD on).
    if pte & PTE_AP_RDONLY == 0 || pte & PTE_DBM != 0 {
        prot |= Prot::WRITE;
    }
    if pte & PTE_AP_UNPRIV == 0 {
        prot |= Prot::PRIV;
    }
    if pte & PTE_XN != 0 {
        prot |= Prot::NOEXEC;
    }
    match (pte & PTE_ATTRINDX_MASK) >> PTE_ATTRINDX_SHIFT {
        // arm_lpae_prot_to_pte sets SH from IOMMU_CACHE even for device memory:
        // report it, so re-encoding a decoded leaf (a block split) keeps SH=IS.
        MAIR_IDX_DEV if pte & PTE_SH_MASK == PTE_SH_IS => prot |= Prot::MMIO | Prot::CACHE,
        MAIR_IDX_DEV => prot |= Prot::MMIO,
        MAIR_IDX_CACHE => prot |= Prot::CACHE,
        _ => {}
    }
    prot
}

/// ARM LPAE stage 1, 4 KiB granule, 48-bit IOVA, 4 levels, 4 KiB pages + 2 MiB and 1 GiB blocks.
#[derive(Clone, Copy, Default, Debug)]
pub struct ArmLpae4k;

impl Format for ArmLpae4k {
    type Pte = u64;
    const NAME: &'static str = "arm-lpae-4k";
    const LEVELS: usize = 4;
    const GRANULE_SHIFT: u32 = 12;
    const LEVEL_BITS: &'static [u32] = &[9, 9, 9, 9];
    const LEAF_LEVELS: &'static [bool] = &[false, true, true, true];
    const IOVA_BITS: u32 = 48;
    const OA_BITS: u32 = 48;
    /// io-pgtable-arm.c takes any `ias` up to 48 (TCR.T0SZ = 64 - ias); 32 is the smallest an
    /// SMMU context is set up with here (3 levels from L1 below 40 bits).
    const MIN_IOVA_BITS: u32 = 32;
    /// The TCR.IPS / PS encodings io-pgtable-arm.c accepts for `oas`
    /// (`ARM_LPAE_TCR_PS_32_BIT` .. `ARM_LPAE_TCR_PS_48_BIT`; 52 needs FEAT_LPA, not used here).
    const OA_SIZES: &'static [u32] = &[32, 36, 40, 42, 44, 48];
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;
    /// Stage 1 has DBM (io-pgtable-arm.c `IO_PGTABLE_QUIRK_ARM_HD`,
    /// `arm_lpae_read_and_clear_dirty`, which accepts `ARM_64_LPAE_S1` only).
    const DIRTY_TRACKING: bool = true;
    /// [`PTE_AP_WR_CLEAN_MASK`]: DBM | AP\[2\].
    const DIRTY_MASK: u64 = PTE_AP_WR_CLEAN_MASK;
    /// Writable-clean: DBM and AP\[2\] both set.
    const DIRTY_CLEAN: u64 = PTE_DBM | PTE_AP_RDONLY;
    /// Writable-dirty: DBM set, AP\[2\] clear (`iopte_writeable_dirty`).
    const DIRTY_SET: u64 = PTE_DBM;

    /// `arm_lpae_prot_to_pte` for `ARM_64_LPAE_S1`, plus the type bits and AF that
    /// `__arm_lpae_init_pte` adds.
    #[inline(always)]
    fn leaf_attrs(level: usize, prot: Prot) -> u64 {
        let ty = if level == 3 {
            PTE_TYPE_PAGE
        } else {
            PTE_TYPE_BLOCK
        };
        s1_leaf_attrs(prot) | ty
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
        let addr = DmaAddr(pte & PTE_ADDR_MASK);
        let ty = pte & PTE_TYPE_MASK;
        match (level, ty) {
            (0..=2, PTE_TYPE_TABLE) => Entry::Table(addr),
            (1..=2, PTE_TYPE_BLOCK) | (3, PTE_TYPE_PAGE) => {
                let prot = s1_prot(pte);
                // The block descriptor's address must be aligned to the block; bits below it
                // are RES0 and ignored by the walker.
                let size = 1u64 << Self::level_shift(level);
                Entry::Leaf(DmaAddr(addr.0 & !(size - 1)), prot)
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
