//! RISC-V page tables as the RISC-V IOMMU walks them for first-stage translation (iosatp):
//! Sv39 and Sv48.
//!
//! Sources: The RISC-V Instruction Set Manual, Volume II (Privileged Architecture), 12.4
//! "Sv39" and 12.5 "Sv48" (PTE layout, the walk, reserved encodings); the kernel's
//! drivers/iommu/generic_pt/fmt/riscv.h (`RISCVPT_V` .. `RISCVPT_D`, `RISCVPT_PPN64`,
//! `RISCVPT_PBMT`, `riscvpt_load_entry_raw`, `riscvpt_install_table`,
//! `riscvpt_install_leaf_entry`, `riscvpt_iommu_set_prot`, `riscvpt_iommu_fmt_init`).
//!
//! - Tables of 512 64-bit entries (one 4 KiB page) at every level; 9 index bits per level
//!   above the 12-bit page offset. Sv39: 3 levels, VPN\[2\] \[38:30\], VPN\[1\] \[29:21\],
//!   VPN\[0\] \[20:12\]; Sv48: 4 levels, VPN\[3\] \[47:39\] first.
//! - Leaves at every level (`riscvpt_can_have_leaf`): 4 KiB pages, 2 MiB megapages, 1 GiB
//!   gigapages, and with Sv48 512 GiB terapages.
//! - IOVA: the lower, non-negative half of the sign-extended space: 38 bits for Sv39, 47 for
//!   Sv48. An address with the top bit set must be sign-extended (12.4: bits 63:39 equal bit
//!   38), which this crate's IOVA space (`0 .. 2^ias`) does not express; that upper half is
//!   not used.
//! - Entry: V bit 0, R 1, W 2, X 3, U 4, G 5, A 6, D 7, RSW \[9:8\], PPN \[53:10\] (the
//!   address >> 12, so 56-bit output addresses, `PT_MAX_OUTPUT_ADDRESS_LG2`), PBMT \[62:61\],
//!   N 63. A valid entry with R = W = X = 0 points at the next table (below the last level);
//!   otherwise it is a leaf.
//! - Leaf bits as `riscvpt_iommu_set_prot`: A and U always (no privilege distinction:
//!   [`Prot::PRIV`] is dropped), R for read, R + W + D for write (W without R is reserved, so
//!   write-only reads back read-write), X unless no-exec.
//! - Not used: Svpbmt (the memory-type bits: generic_pt sets them only with
//!   `PT_FEAT_RISCV_SVPBMT`, so [`Prot::CACHE`] and [`Prot::MMIO`] are not expressed),
//!   Svnapot 64 KiB contiguous pages (16 repeated entries), Sv57 and Sv32.

use crate::{format::Entry, DmaAddr, Format, Prot};

/// V, bit 0: valid (`RISCVPT_V`).
pub const RISCV_PTE_V: u64 = 1 << 0;
/// R, bit 1: readable (`RISCVPT_R`).
pub const RISCV_PTE_R: u64 = 1 << 1;
/// W, bit 2: writable (`RISCVPT_W`).
pub const RISCV_PTE_W: u64 = 1 << 2;
/// X, bit 3: executable (`RISCVPT_X`).
pub const RISCV_PTE_X: u64 = 1 << 3;
/// U, bit 4: accessible in user mode (`RISCVPT_U`); set on every leaf.
pub const RISCV_PTE_U: u64 = 1 << 4;
/// G, bit 5: global mapping (`RISCVPT_G`); not set.
pub const RISCV_PTE_G: u64 = 1 << 5;
/// A, bit 6: accessed (`RISCVPT_A`); set on every leaf so the first access needs no update.
pub const RISCV_PTE_A: u64 = 1 << 6;
/// D, bit 7: dirty (`RISCVPT_D`); set on every writable leaf.
pub const RISCV_PTE_D: u64 = 1 << 7;
/// RSW, bits \[9:8\]: reserved for software, ignored by the walker (`RISCVPT_RSW`).
pub const RISCV_PTE_RSW_MASK: u64 = 0x3 << 8;
/// PPN, bits \[53:10\]: the physical page number (`RISCVPT_PPN64`).
pub const RISCV_PTE_PPN_MASK: u64 = 0x003f_ffff_ffff_fc00;
/// Shift of PBMT, bits \[62:61\]: the Svpbmt memory type (`RISCVPT_PBMT`; 12.4 / Svpbmt:
/// 0 PMA, 1 NC, 2 IO, 3 reserved); not set here.
pub const RISCV_PTE_PBMT_SHIFT: u32 = 61;
/// Mask of PBMT.
pub const RISCV_PTE_PBMT_MASK: u64 = 0x3 << RISCV_PTE_PBMT_SHIFT;
/// N, bit 63: a Svnapot contiguous entry (`RISCVPT_N`); not set here.
pub const RISCV_PTE_N: u64 = 1 << 63;
/// Shift of the PPN field in the entry.
pub const RISCV_PTE_PPN_SHIFT: u32 = 10;
/// log2 of the page: 4 KiB (`PT_GRANULE_LG2SZ`).
pub const RISCV_PAGE_SHIFT: u32 = 12;
/// Index bits per level: 512 entries of 8 bytes.
pub const RISCV_BITS_PER_LEVEL: u32 = 9;
/// Output address width: 56 bits (`PT_MAX_OUTPUT_ADDRESS_LG2`, a 44-bit PPN).
pub const RISCV_OA_BITS: u32 = 56;

/// R, W and X: all clear in a pointer to the next table.
const RWX: u64 = RISCV_PTE_R | RISCV_PTE_W | RISCV_PTE_X;

/// The PPN field of bus address `pa`.
#[inline(always)]
const fn ppn(pa: u64) -> u64 {
    (pa >> RISCV_PAGE_SHIFT << RISCV_PTE_PPN_SHIFT) & RISCV_PTE_PPN_MASK
}

/// The bus address an entry's PPN field names.
#[inline(always)]
const fn pa(pte: u64) -> u64 {
    (pte & RISCV_PTE_PPN_MASK) >> RISCV_PTE_PPN_SHIFT << RISCV_PAGE_SHIFT
}

/// `riscvpt_iommu_set_prot` without Svpbmt, plus V.
#[inline]
fn leaf_attrs(prot: Prot) -> u64 {
    let mut pte = RISCV_PTE_V | RISCV_PTE_A | RISCV_PTE_U;
    if prot.contains(Prot::WRITE) {
        pte |= RISCV_PTE_W | RISCV_PTE_R | RISCV_PTE_D;
    }
    if prot.contains(Prot::READ) {
        pte |= RISCV_PTE_R;
    }
    if !prot.contains(Prot::NOEXEC) {
        pte |= RISCV_PTE_X;
    }
    pte
}

/// The walk's view of an entry at `level` of a format with `levels` levels (12.4.2 "Virtual
/// Address Translation Process"): invalid, a pointer (R = W = X = 0, not at the last level), or
/// a leaf of `1 << shift` bytes whose address must be aligned to it (a misaligned superpage is
/// a page fault).
#[inline]
fn decode(level: usize, levels: usize, shift: u32, pte: u64) -> Entry {
    if pte & RISCV_PTE_V == 0 || pte & (RISCV_PTE_W | RISCV_PTE_R) == RISCV_PTE_W {
        // Invalid, or W without R: reserved, a page fault.
        return Entry::Invalid;
    }
    let addr = pa(pte);
    if pte & RWX == 0 {
        return if level + 1 < levels {
            Entry::Table(DmaAddr(addr))
        } else {
            Entry::Invalid
        };
    }
    if addr & ((1u64 << shift) - 1) != 0 {
        return Entry::Invalid;
    }
    let mut prot = Prot::NONE;
    if pte & RISCV_PTE_R != 0 {
        prot |= Prot::READ;
    }
    if pte & RISCV_PTE_W != 0 {
        prot |= Prot::WRITE;
    }
    if pte & RISCV_PTE_X == 0 {
        prot |= Prot::NOEXEC;
    }
    Entry::Leaf(DmaAddr(addr), prot)
}

/// RISC-V Sv39: 3 levels of 512 entries, 38-bit IOVA (the non-negative half), 56-bit output,
/// 4 KiB pages, 2 MiB and 1 GiB leaves. iosatp.MODE 8.
#[derive(Clone, Copy, Default, Debug)]
pub struct RiscvSv39;

/// RISC-V Sv48: 4 levels of 512 entries, 47-bit IOVA (the non-negative half), 56-bit output,
/// 4 KiB pages, 2 MiB, 1 GiB and 512 GiB leaves. iosatp.MODE 9.
#[derive(Clone, Copy, Default, Debug)]
pub struct RiscvSv48;

impl Format for RiscvSv39 {
    type Pte = u64;
    const NAME: &'static str = "riscv-sv39";
    const LEVELS: usize = 3;
    const GRANULE_SHIFT: u32 = RISCV_PAGE_SHIFT;
    const LEVEL_BITS: &'static [u32] = &[RISCV_BITS_PER_LEVEL; 3];
    const LEAF_LEVELS: &'static [bool] = &[true, true, true];
    const IOVA_BITS: u32 = 38;
    const OA_BITS: u32 = RISCV_OA_BITS;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;

    #[inline]
    fn leaf_attrs(_level: usize, prot: Prot) -> u64 {
        leaf_attrs(prot)
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | ppn(addr.0)
    }

    /// `riscvpt_install_table`: V and the PPN.
    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        ppn(table.0) | RISCV_PTE_V
    }

    fn decode(level: usize, pte: u64) -> Entry {
        decode(level, 3, Self::level_shift(level), pte)
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level < 2 && pte & (RWX | RISCV_PTE_V) == RISCV_PTE_V
    }
}

impl Format for RiscvSv48 {
    type Pte = u64;
    const NAME: &'static str = "riscv-sv48";
    const LEVELS: usize = 4;
    const GRANULE_SHIFT: u32 = RISCV_PAGE_SHIFT;
    const LEVEL_BITS: &'static [u32] = &[RISCV_BITS_PER_LEVEL; 4];
    const LEAF_LEVELS: &'static [bool] = &[true, true, true, true];
    const IOVA_BITS: u32 = 47;
    const OA_BITS: u32 = RISCV_OA_BITS;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;

    #[inline]
    fn leaf_attrs(_level: usize, prot: Prot) -> u64 {
        leaf_attrs(prot)
    }

    #[inline(always)]
    fn leaf_with_addr(attrs: u64, addr: DmaAddr) -> u64 {
        attrs | ppn(addr.0)
    }

    /// `riscvpt_install_table`: V and the PPN.
    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u64 {
        ppn(table.0) | RISCV_PTE_V
    }

    fn decode(level: usize, pte: u64) -> Entry {
        decode(level, 4, Self::level_shift(level), pte)
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u64) -> bool {
        level < 3 && pte & (RWX | RISCV_PTE_V) == RISCV_PTE_V
    }
}
