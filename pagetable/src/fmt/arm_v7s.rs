//! ARMv7 short-descriptor translation tables (VMSAv7), as io-pgtable's `ARM_V7S` builds them
//! for the older SMMUs and the MediaTek / Renesas IOMMUs.
//!
//! Sources: Arm ARM for ARMv7-A/R (DDI 0406C) B3.5 "Short-descriptor translation table format"
//! (B3.5.1 descriptor formats, B3.5.2 memory attributes with TEX remap) and the kernel's
//! drivers/iommu/io-pgtable-arm-v7s.c: `ARM_V7S_ADDR_BITS`, `_ARM_V7S_LVL_BITS`,
//! `ARM_V7S_LVL_SHIFT`, `ARM_V7S_TABLE_SIZE`, `ARM_V7S_PTE_TYPE_*`, `ARM_V7S_ATTR_*`,
//! `ARM_V7S_ATTR_SHIFT`, `ARM_V7S_PTE_AF` / `_AP_UNPRIV` / `_AP_RDONLY`, `arm_v7s_prot_to_pte`
//! and `arm_v7s_pte_to_prot`, whose encodings this file reproduces for sections and small
//! pages.
//!
//! - IOVA: 32 bits = L1 index \[31:20\] (12 bits, 4096 entries) | L2 index \[19:12\] (8 bits,
//!   256 entries) | page offset \[11:0\]. Output addresses 32 bits (no MediaTek 34/35-bit
//!   extension).
//! - Entries are 32 bits. L1: bits \[1:0\] = 0b01 a pointer to an L2 table (address
//!   \[31:10\]), 0b10 a 1 MiB section (address \[31:20\]). L2: bits \[1\] = 1 a 4 KiB small page
//!   (address \[31:12\], bit 0 is its XN).
//! - Attributes: B bit 2, C bit 3, XN (bit 4 of a section, bit 0 of a small page), and an
//!   8-bit block (AP0/AF, AP1/unprivileged, TEX\[2:0\], AP2/read-only, S, nG) at bits
//!   \[17:10\] of a section and \[11:4\] of a small page (`ARM_V7S_ATTR_SHIFT`). TEX remap is
//!   on: TEX\[0\] = 1 selects normal memory, and then C selects cacheable; TEX = 0 is device
//!   memory (B set for `IOMMU_MMIO`).
//! - Tables: the L1 table is 4096 x 4 bytes = 16 KiB, aligned to 16 KiB (TTBR0 with T0SZ = 0),
//!   a large table ([`TableAlloc::alloc_large_table`](crate::TableAlloc::alloc_large_table)).
//!   An L2 table is 256 x 4 bytes = 1 KiB (`ARM_V7S_TABLE_SIZE(2)`): the kernel carves them
//!   from a 1 KiB `kmem_cache`; the generic page table gives every table below the root one
//!   4 KiB page (the smallest table memory it allocates), so an L2 table here uses the first
//!   KiB of its own page. The hardware only needs the 1 KiB alignment the page has. Cost: 3 KiB
//!   of each L2 page unused, and a new L2 table's whole page cleaned for a non-coherent walker.
//! - Not supported (optional in io-pgtable too: only with `SZ_64K` / `SZ_16M` in the driver's
//!   `pgsize_bitmap`): 64 KiB large pages and 16 MiB supersections. They are one descriptor
//!   repeated in 16 consecutive entries ("contiguous" entries), which the generic page table
//!   does not write; such descriptors (L2 type 0b01, L1 section with bit 18) decode as invalid
//!   here. Also not used: the NS bits (`IO_PGTABLE_QUIRK_ARM_NS`), PXN (L1 type 0b11, also
//!   decoded as invalid), the legacy AP\[2:0\] model and domains.

use crate::{format::Entry, DmaAddr, Format, Prot};

/// IOVA and output address width (`ARM_V7S_ADDR_BITS`).
pub const V7S_ADDR_BITS: u32 = 32;
/// Index bits of the L1 table: 4096 entries (`_ARM_V7S_LVL_BITS(1)` = 16 - 4).
pub const V7S_L1_BITS: u32 = 12;
/// Index bits of an L2 table: 256 entries (`_ARM_V7S_LVL_BITS(2)` = 16 - 8).
pub const V7S_L2_BITS: u32 = 8;
/// Shift of the L1 index: 20, a section is 1 MiB (`ARM_V7S_LVL_SHIFT(1)` = 32 - 12).
pub const V7S_L1_SHIFT: u32 = 20;
/// Shift of the L2 index: 12, a small page is 4 KiB (`ARM_V7S_LVL_SHIFT(2)` = 32 - 20).
pub const V7S_L2_SHIFT: u32 = 12;

/// Type bits \[1:0\] of an L1 entry pointing at an L2 table (`ARM_V7S_PTE_TYPE_TABLE`).
pub const V7S_PTE_TYPE_TABLE: u32 = 0x1;
/// Type bits of a section (L1) or a small page (L2, bit 1) (`ARM_V7S_PTE_TYPE_PAGE`).
pub const V7S_PTE_TYPE_PAGE: u32 = 0x2;
/// Mask of the type bits \[1:0\].
pub const V7S_PTE_TYPE_MASK: u32 = 0x3;
/// Address of the L2 table an L1 table entry points at, bits \[31:10\] (`ARM_V7S_TABLE_MASK`).
pub const V7S_TABLE_MASK: u32 = !0 << 10;
/// Output address of a section, bits \[31:20\] (`ARM_V7S_LVL_MASK(1)`).
pub const V7S_SECTION_MASK: u32 = !0 << V7S_L1_SHIFT;
/// Output address of a small page, bits \[31:12\] (`ARM_V7S_LVL_MASK(2)`).
pub const V7S_PAGE_MASK: u32 = !0 << V7S_L2_SHIFT;
/// B, bit 2 (`ARM_V7S_ATTR_B`): with TEX = 0, device memory; with C, write-back cacheable.
pub const V7S_ATTR_B: u32 = 1 << 2;
/// C, bit 3 (`ARM_V7S_ATTR_C`): cacheable.
pub const V7S_ATTR_C: u32 = 1 << 3;
/// XN of a section: bit 4 (`ARM_V7S_ATTR_XN(1)` = `BIT(4 * (2 - 1))`).
pub const V7S_SECTION_XN: u32 = 1 << 4;
/// XN of a small page: bit 0 (`ARM_V7S_ATTR_XN(2)` = `BIT(4 * (2 - 2))`).
pub const V7S_PAGE_XN: u32 = 1 << 0;
/// Supersection bit 18 of an L1 section (`ARM_V7S_CONT_SECTION`): never written here.
pub const V7S_CONT_SECTION: u32 = 1 << 18;

/// Shift of the 8-bit attribute block in a section: bits \[17:10\] (`ARM_V7S_ATTR_SHIFT(1)` =
/// 16 - 6).
pub const V7S_SECTION_ATTR_SHIFT: u32 = 10;
/// Shift of the 8-bit attribute block in a small page: bits \[11:4\] (`ARM_V7S_ATTR_SHIFT(2)`
/// = 16 - 12).
pub const V7S_PAGE_ATTR_SHIFT: u32 = 4;
/// AP\[0\] in the attribute block, the access flag with the simplified AP model
/// (`ARM_V7S_ATTR_AP0`, `ARM_V7S_PTE_AF`).
pub const V7S_ATTR_AF: u32 = 1 << 0;
/// AP\[1\] in the attribute block: unprivileged access (`ARM_V7S_ATTR_AP1`,
/// `ARM_V7S_PTE_AP_UNPRIV`).
pub const V7S_ATTR_AP_UNPRIV: u32 = 1 << 1;
/// Shift of TEX\[2:0\] in the attribute block (`ARM_V7S_TEX_SHIFT`).
pub const V7S_ATTR_TEX_SHIFT: u32 = 2;
/// Mask of TEX in the attribute block (`ARM_V7S_TEX_MASK << ARM_V7S_TEX_SHIFT`).
pub const V7S_ATTR_TEX_MASK: u32 = 0x7 << V7S_ATTR_TEX_SHIFT;
/// TEX = 0b001 in the attribute block: normal memory (`ARM_V7S_ATTR_TEX(1)`).
pub const V7S_ATTR_TEX_NORMAL: u32 = 1 << V7S_ATTR_TEX_SHIFT;
/// AP\[2\] in the attribute block: read-only (`ARM_V7S_ATTR_AP2`, `ARM_V7S_PTE_AP_RDONLY`).
pub const V7S_ATTR_AP_RDONLY: u32 = 1 << 5;
/// S in the attribute block: shareable (`ARM_V7S_ATTR_S`).
pub const V7S_ATTR_S: u32 = 1 << 6;
/// nG in the attribute block: not global (`ARM_V7S_ATTR_NG`).
pub const V7S_ATTR_NG: u32 = 1 << 7;

/// ARMv7 short descriptors: 32-bit IOVA, L1 of 4096 entries (1 MiB sections), L2 of 256
/// entries (4 KiB small pages), 32-bit entries and output addresses.
#[derive(Clone, Copy, Default, Debug)]
pub struct ArmV7s;

/// The attribute block's shift and the XN bit of a leaf at `level` (0: section, 1: page).
#[inline(always)]
const fn leaf_fields(level: usize) -> (u32, u32) {
    if level == 0 {
        (V7S_SECTION_ATTR_SHIFT, V7S_SECTION_XN)
    } else {
        (V7S_PAGE_ATTR_SHIFT, V7S_PAGE_XN)
    }
}

impl Format for ArmV7s {
    type Pte = u32;
    const NAME: &'static str = "arm-v7s";
    const LEVELS: usize = 2;
    const GRANULE_SHIFT: u32 = V7S_L2_SHIFT;
    const LEVEL_BITS: &'static [u32] = &[V7S_L1_BITS, V7S_L2_BITS];
    /// Sections at L1, small pages at L2.
    const LEAF_LEVELS: &'static [bool] = &[true, true];
    const IOVA_BITS: u32 = V7S_ADDR_BITS;
    const OA_BITS: u32 = V7S_ADDR_BITS;
    const EMPTY_IS_ZERO: bool = true;
    const TLB_CACHES_EMPTY: bool = false;

    /// `arm_v7s_prot_to_pte` (permissions on: no `IO_PGTABLE_QUIRK_NO_PERMS`).
    #[inline]
    fn leaf_attrs(level: usize, prot: Prot) -> u32 {
        let (shift, xn) = leaf_fields(level);
        let mut attr = V7S_ATTR_NG | V7S_ATTR_S | V7S_ATTR_AF;
        if !prot.contains(Prot::MMIO) {
            attr |= V7S_ATTR_TEX_NORMAL;
        }
        if !prot.contains(Prot::PRIV) {
            attr |= V7S_ATTR_AP_UNPRIV;
        }
        if !prot.contains(Prot::WRITE) {
            attr |= V7S_ATTR_AP_RDONLY;
        }
        let mut pte = (attr << shift) | V7S_PTE_TYPE_PAGE;
        if prot.contains(Prot::NOEXEC) {
            pte |= xn;
        }
        if prot.contains(Prot::MMIO) {
            pte |= V7S_ATTR_B;
        } else if prot.contains(Prot::CACHE) {
            pte |= V7S_ATTR_B | V7S_ATTR_C;
        }
        pte
    }

    /// The address masked to the leaf's size: a section's attributes sit in bits \[19:2\], so
    /// the attribute bits cannot tell the level; the address is aligned to the leaf anyway.
    #[inline(always)]
    fn leaf_with_addr(attrs: u32, addr: DmaAddr) -> u32 {
        attrs | (addr.0 as u32 & V7S_PAGE_MASK)
    }

    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u32 {
        (table.0 as u32 & V7S_TABLE_MASK) | V7S_PTE_TYPE_TABLE
    }

    fn decode(level: usize, pte: u32) -> Entry {
        let (leaf, addr_mask) = if level == 0 {
            match pte & V7S_PTE_TYPE_MASK {
                V7S_PTE_TYPE_TABLE => {
                    return Entry::Table(DmaAddr((pte & V7S_TABLE_MASK) as u64));
                }
                // A section; a supersection (bit 18) is not supported.
                V7S_PTE_TYPE_PAGE if pte & V7S_CONT_SECTION == 0 => (true, V7S_SECTION_MASK),
                // Fault (0b00), supersection, or 0b11 (PXN section): not produced here.
                _ => (false, 0),
            }
        } else {
            // Bit 1 set: a small page (bit 0 is its XN). 0b01 is a 64 KiB large page, not
            // supported; 0b00 a fault.
            (pte & V7S_PTE_TYPE_PAGE != 0, V7S_PAGE_MASK)
        };
        if !leaf {
            return Entry::Invalid;
        }
        // arm_v7s_pte_to_prot.
        let (shift, xn) = leaf_fields(level);
        let attr = pte >> shift;
        let mut prot = Prot::READ;
        if attr & V7S_ATTR_AP_RDONLY == 0 {
            prot |= Prot::WRITE;
        }
        if attr & V7S_ATTR_AP_UNPRIV == 0 {
            prot |= Prot::PRIV;
        }
        if attr & V7S_ATTR_TEX_MASK == 0 {
            prot |= Prot::MMIO;
        } else if pte & V7S_ATTR_C != 0 {
            prot |= Prot::CACHE;
        }
        if pte & xn != 0 {
            prot |= Prot::NOEXEC;
        }
        Entry::Leaf(DmaAddr((pte & addr_mask) as u64), prot)
    }

    #[inline(always)]
    fn is_table(level: usize, pte: u32) -> bool {
        level == 0 && pte & V7S_PTE_TYPE_MASK == V7S_PTE_TYPE_TABLE
    }
}
