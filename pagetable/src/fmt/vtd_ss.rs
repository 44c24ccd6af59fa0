//! Intel VT-d second-stage page tables (4-level), as the IOMMU walks them for a domain's DMA
//! remapping.
//!
//! Sources: Intel Virtualization Technology for Directed I/O, Architecture Specification,
//! 3.7 "Second-Stage Translation" and 9.8 "Second-Stage Paging Entries"; the kernel's
//! drivers/iommu/generic_pt/fmt/vtdss.h (`VTDSS_FMT_R`, `_W`, `_PS`, `_A`, `_D`, `_SNP`,
//! `_OA`, `vtdss_pt_load_entry_raw`, `vtdss_pt_install_table`, `vtdss_pt_install_leaf_entry`,
//! `vtdss_pt_iommu_set_prot`, `vtdss_pt_iommu_fmt_init`).
//!
//! - 4 levels of 512 64-bit entries (one 4 KiB page each): SL-PML4E \[47:39\], SL-PDPE
//!   \[38:30\], SL-PDE \[29:21\], SL-PTE \[20:12\]. 48-bit IOVA, configurable down to 31 bits;
//!   up to 39 bits the walk has 3 levels (AW = 1, from the SL-PDPE), as
//!   `vtdss_pt_iommu_fmt_init` chooses. 5-level (57-bit) tables are not provided.
//! - Leaves: 4 KiB pages (SL-PTE), 2 MiB (SL-PDE) and 1 GiB (SL-PDPE) with PS (bit 7) set.
//! - No present bit: an entry is present when R (bit 0) or W (bit 1) is set. A table entry is
//!   R | W | the next table's address. Address bits \[51:12\] (52-bit output,
//!   `PT_MAX_OUTPUT_ADDRESS_LG2`).
//! - Leaf bits as `vtdss_pt_iommu_set_prot`: R for read, W for write (write-only is
//!   expressible). No execute, privilege or memory-type encoding in use ([`Prot::NOEXEC`],
//!   [`Prot::PRIV`], [`Prot::CACHE`], [`Prot::MMIO`] are dropped); SNP
//!   (`PT_FEAT_VTDSS_FORCE_COHERENCE`) is not set. A (bit 8) and D (bit 9) are left for the
//!   hardware.

use crate::{format::Entry, DmaAddr, Format, Prot};

/// R, bit 0: read allowed (and, with W, what makes an entry present) (`VTDSS_FMT_R`).
pub const VTDSS_R: u64 = 1 << 0;
/// W, bit 1: write allowed (`VTDSS_FMT_W`).
pub const VTDSS_W: u64 = 1 << 1;
/// X, bit 2: execute allowed; ignored unless the hardware reports Execute Request Support
/// and the PASID entry enables it (VT-d spec 9.8, Figure "Format for Second-Stage Paging
/// Entries"; deprecated since revision 4.1, hence not in vtdss.h). Not set here.
pub const VTDSS_X: u64 = 1 << 2;
/// Shift of EMT, bits \[5:3\] of a leaf: the extended memory type (spec 9.8; 0 UC, 1 WC,
/// 4 WT, 5 WP, 6 WB), used only with memory-type support (ECAP.MTS). Not set here.
pub const VTDSS_EMT_SHIFT: u32 = 3;
/// Mask of EMT.
pub const VTDSS_EMT_MASK: u64 = 0x7 << VTDSS_EMT_SHIFT;
/// IPAT, bit 6 of a leaf: ignore the guest PAT, use EMT alone (spec 9.8). Not set here.
pub const VTDSS_IPAT: u64 = 1 << 6;
/// PS, bit 7 of an SL-PDE or SL-PDPE: the entry maps a 2 MiB or 1 GiB page (`VTDSS_FMT_PS`).
pub const VTDSS_PS: u64 = 1 << 7;
/// A, bit 8: accessed, set by the hardware (`VTDSS_FMT_A`).
pub const VTDSS_A: u64 = 1 << 8;
/// D, bit 9: dirty, set by the hardware (`VTDSS_FMT_D`).
pub const VTDSS_D: u64 = 1 << 9;
/// SNP, bit 11: snoop behaviour forced (`VTDSS_FMT_SNP`); not set here.
pub const VTDSS_SNP: u64 = 1 << 11;
/// Output address, bits \[51:12\] (`VTDSS_FMT_OA`).
pub const VTDSS_OA_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Intel VT-d second stage, 4 levels: 48-bit IOVA, 52-bit output, 4 KiB pages, 2 MiB and
/// 1 GiB leaves.
#[derive(Clone, Copy, Default, Debug)]
pub struct VtdSs;

impl Format for VtdSs {
    type Pte = u64;
    const NAME: &'static str = "vtd-ss";
    const LEVELS: usize = 4;
    const GRANULE_SHIFT: u32 = 12;
    const LEVEL_BITS: &'static [u32] = &[9, 9, 9, 9];
    /// `vtdss_pt_can_have_leaf`: generic_pt levels 0..=2, i.e. not the SL-PML4E.
    const LEAF_LEVELS: &'static [bool] = &[false, true, true, true];
    const IOVA_BITS: u32 = 48;
    const OA_BITS: u32 = 52;
    /// `vtdss_pt_iommu_fmt_init` accepts any size above 30 bits.
    const MIN_IOVA_BITS: u32 = 31;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;
    /// D (bit 9) of a leaf, which the hardware sets on a write when second-stage
    /// accessed/dirty is on (PASID-table entry SSADE; VT-d spec 3.7.3 "Accessed and Dirty
    /// Flags"): generic_pt's `vtdss_pt_entry_is_write_dirty` (D set),
    /// `vtdss_pt_entry_make_write_clean` (D cleared), `vtdss_pt_entry_make_write_dirty`.
    const DIRTY_TRACKING: bool = true;
    /// W | D: the dirty state of a writable leaf (W kept in the mask so that a read-only leaf
    /// is neither clean nor dirty; the hardware never sets D through a leaf without W).
    const DIRTY_MASK: u64 = VTDSS_W | VTDSS_D;
    /// Writable-clean: W set, D clear.
    const DIRTY_CLEAN: u64 = VTDSS_W;
    /// Writable-dirty: W and D set.
    const DIRTY_SET: u64 = VTDSS_W | VTDSS_D;

    /// `vtdss_pt_iommu_set_prot` (no forced coherence), plus PS above the last level
    /// (`vtdss_pt_install_leaf_entry`).
    #[inline]
    fn leaf_attrs(level: usize, prot: Prot) -> u64 {
        let mut pte = 0;
        if prot.contains(Prot::READ) {
            pte |= VTDSS_R;
        }
        if prot.contains(Prot::WRITE) {
            pte |= VTDSS_W;
        }
        if level != 3 {
            pte |= VTDSS_PS;
        }
        pte
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | (addr.0 & VTDSS_OA_MASK)
    }

    /// `vtdss_pt_install_table`: R | W | the table's address.
    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        VTDSS_R | VTDSS_W | (table.0 & VTDSS_OA_MASK)
    }

    fn decode(level: usize, pte: u64) -> Entry {
        if pte & (VTDSS_R | VTDSS_W) == 0 {
            return Entry::Invalid;
        }
        let addr = pte & VTDSS_OA_MASK;
        let leaf = match level {
            3 => true,
            1 | 2 => pte & VTDSS_PS != 0,
            // PS in an SL-PML4E is reserved.
            _ if pte & VTDSS_PS != 0 => return Entry::Invalid,
            _ => false,
        };
        if !leaf {
            return Entry::Table(DmaAddr(addr));
        }
        let size = 1u64 << Self::level_shift(level);
        if addr & (size - 1) != 0 {
            // Address bits below a large page are reserved.
            return Entry::Invalid;
        }
        let mut prot = Prot::NONE;
        if pte & VTDSS_R != 0 {
            prot |= Prot::READ;
        }
        if pte & VTDSS_W != 0 {
            prot |= Prot::WRITE;
        }
        Entry::Leaf(DmaAddr(addr), prot)
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level < 3 && pte & (VTDSS_R | VTDSS_W) != 0 && pte & VTDSS_PS == 0
    }
}
