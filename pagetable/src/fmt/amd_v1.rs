//! AMD IOMMU v1 host page tables (the "v1" I/O page table format of AMD-Vi), 4-level mode.
//!
//! Sources: AMD I/O Virtualization Technology (IOMMU) Specification, 2.2.3 "I/O Page Tables
//! for Host Translations" (Tables 14 and 15, the PDE and PTE formats); the kernel's
//! drivers/iommu/generic_pt/fmt/amdv1.h (`AMDV1PT_FMT_PR`, `_NEXT_LEVEL`, `_OA`, `_FC`, `_IR`,
//! `_IW`, `AMDV1PT_FMT_NL_DEFAULT`, `AMDV1PT_FMT_NL_SIZE`, `amdv1pt_load_entry_raw`,
//! `amdv1pt_install_table`, `amdv1pt_install_leaf_entry`, `amdv1pt_possible_sizes`,
//! `amdv1pt_iommu_set_prot`, `amdv1pt_iommu_fmt_hw_info`).
//!
//! - 4 levels of 512 64-bit entries (one 4 KiB page each): IOVA \[47:39\], \[38:30\],
//!   \[29:21\], \[20:12\]; the DTE's Mode is the number of levels, 4 (`info->mode =
//!   top_level + 1`); with an input size up to 39 bits the walk has 3 levels (Mode 3).
//!   Modes 5 and 6 (57 and 64 bits) are not provided.
//! - Level numbers: the AMD level of a table is its distance from the leaves plus one (a PTE
//!   table is level 1); here level 0 is the root, so AMD level = 4 - level.
//! - Entry: PR bit 0 (present), NextLevel \[11:9\], address \[51:12\] (52-bit output), FC
//!   bit 60, IR bit 61, IW bit 62. A PDE (table pointer) has NextLevel = the AMD level of the
//!   table it points at, and IR and IW set (`amdv1pt_install_table`: permissions are ANDed
//!   down the walk, so tables grant everything and the leaf decides). A leaf has NextLevel 0
//!   and is a page of its level's size: 4 KiB, 2 MiB or 1 GiB (512 GiB leaves are excluded by
//!   `amdv1pt_possible_sizes`, a hardware erratum).
//! - Leaf bits as `amdv1pt_iommu_set_prot`: IR for read, IW for write (write-only is
//!   expressible). FC (`PT_FEAT_AMDV1_FORCE_COHERENCE`) and memory encryption are not used;
//!   no execute, privilege or memory-type bits.
//! - Not supported: NextLevel 7 leaves (a power-of-two page size encoded in the low address
//!   bits and repeated in every entry it covers, `AMDV1PT_FMT_NL_SIZE`), and PDEs that skip
//!   levels (NextLevel below the next level): both decode as invalid here.

use crate::{format::Entry, DmaAddr, Format, Prot};

/// PR, bit 0: present (`AMDV1PT_FMT_PR`).
pub const AMDV1_PR: u64 = 1 << 0;
/// D, bit 6: dirty, set by the hardware (`AMDV1PT_FMT_D`).
pub const AMDV1_D: u64 = 1 << 6;
/// Shift of NextLevel, bits \[11:9\] (`AMDV1PT_FMT_NEXT_LEVEL`).
pub const AMDV1_NEXT_LEVEL_SHIFT: u32 = 9;
/// Mask of NextLevel.
pub const AMDV1_NEXT_LEVEL_MASK: u64 = 0x7 << AMDV1_NEXT_LEVEL_SHIFT;
/// NextLevel 0: a leaf of its level's size (`AMDV1PT_FMT_NL_DEFAULT`).
pub const AMDV1_NL_DEFAULT: u64 = 0;
/// NextLevel 7: a leaf whose size is encoded in its address bits (`AMDV1PT_FMT_NL_SIZE`);
/// not written here.
pub const AMDV1_NL_SIZE: u64 = 7;
/// Output address, bits \[51:12\] (`AMDV1PT_FMT_OA`).
pub const AMDV1_OA_MASK: u64 = 0x000f_ffff_ffff_f000;
/// FC, bit 60: force coherent (`AMDV1PT_FMT_FC`); not set here.
pub const AMDV1_FC: u64 = 1 << 60;
/// IR, bit 61: read permission (`AMDV1PT_FMT_IR`).
pub const AMDV1_IR: u64 = 1 << 61;
/// IW, bit 62: write permission (`AMDV1PT_FMT_IW`).
pub const AMDV1_IW: u64 = 1 << 62;

/// AMD IOMMU v1, Mode 4: 48-bit IOVA, 52-bit output, 4 KiB pages, 2 MiB and 1 GiB leaves.
#[derive(Clone, Copy, Default, Debug)]
pub struct AmdV1;

impl AmdV1 {
    /// The AMD level of a table at `level` (0 = root of a 4-level table): 4 - `level`.
    #[inline(always)]
    const fn amd_level(level: usize) -> u64 {
        4 - level as u64
    }
}

impl Format for AmdV1 {
    type Pte = u64;
    const NAME: &'static str = "amd-v1";
    const LEVELS: usize = 4;
    const GRANULE_SHIFT: u32 = 12;
    const LEVEL_BITS: &'static [u32] = &[9, 9, 9, 9];
    /// No 512 GiB leaves at the root (`amdv1pt_possible_sizes` masks `SZ_512G`).
    const LEAF_LEVELS: &'static [bool] = &[false, true, true, true];
    const IOVA_BITS: u32 = 48;
    const OA_BITS: u32 = 52;
    const MIN_IOVA_BITS: u32 = 32;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;
    /// D (bit 6) of a leaf, which the hardware sets on a write when the DTE enables host
    /// access/dirty updates (HAD): generic_pt's `amdv1pt_entry_is_write_dirty` (D set),
    /// `amdv1pt_entry_make_write_clean` (D cleared), `amdv1pt_entry_make_write_dirty`. (Those
    /// also cover the replicated entries of a NextLevel 7 leaf, which this format does not
    /// write.)
    const DIRTY_TRACKING: bool = true;
    /// IW | D: the dirty state of a writable leaf (IW kept in the mask so that a read-only
    /// leaf is neither clean nor dirty; the hardware never sets D through a leaf without IW).
    const DIRTY_MASK: u64 = AMDV1_IW | AMDV1_D;
    /// Writable-clean: IW set, D clear.
    const DIRTY_CLEAN: u64 = AMDV1_IW;
    /// Writable-dirty: IW and D set.
    const DIRTY_SET: u64 = AMDV1_IW | AMDV1_D;

    /// `amdv1pt_iommu_set_prot` (no FC, no encryption) plus PR and NextLevel 0
    /// (`amdv1pt_install_leaf_entry` for a leaf of the level's size).
    #[inline]
    fn leaf_attrs(_level: usize, prot: Prot) -> u64 {
        let mut pte = AMDV1_PR | (AMDV1_NL_DEFAULT << AMDV1_NEXT_LEVEL_SHIFT);
        if prot.contains(Prot::READ) {
            pte |= AMDV1_IR;
        }
        if prot.contains(Prot::WRITE) {
            pte |= AMDV1_IW;
        }
        pte
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | (addr.0 & AMDV1_OA_MASK)
    }

    /// `amdv1pt_install_table`: PR, NextLevel = the AMD level of the table pointed at (one
    /// below this table's), the address, IR and IW.
    #[inline(always)]
    fn table_entry(level: usize, table: DmaAddr) -> u64 {
        AMDV1_PR
            | ((Self::amd_level(level) - 1) << AMDV1_NEXT_LEVEL_SHIFT)
            | (table.0 & AMDV1_OA_MASK)
            | AMDV1_IR
            | AMDV1_IW
    }

    fn decode(level: usize, pte: u64) -> Entry {
        if pte & AMDV1_PR == 0 {
            return Entry::Invalid;
        }
        let addr = pte & AMDV1_OA_MASK;
        let nl = (pte & AMDV1_NEXT_LEVEL_MASK) >> AMDV1_NEXT_LEVEL_SHIFT;
        if nl != AMDV1_NL_DEFAULT {
            // A PDE naming the next level down; anything else (a level skip, NextLevel 7, or
            // a PDE in a PTE table) is not supported here.
            return if level + 1 < Self::LEVELS && nl == Self::amd_level(level) - 1 {
                Entry::Table(DmaAddr(addr))
            } else {
                Entry::Invalid
            };
        }
        let size = 1u64 << Self::level_shift(level);
        if !Self::LEAF_LEVELS[level] || addr & (size - 1) != 0 {
            return Entry::Invalid;
        }
        let mut prot = Prot::NONE;
        if pte & AMDV1_IR != 0 {
            prot |= Prot::READ;
        }
        if pte & AMDV1_IW != 0 {
            prot |= Prot::WRITE;
        }
        Entry::Leaf(DmaAddr(addr), prot)
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level < 3 && pte & AMDV1_PR != 0 && pte & AMDV1_NEXT_LEVEL_MASK != 0
    }
}
