//! The Intel IPU MMU format (IPU3 and IPU6 imaging units).
//!
//! Sources: drivers/staging/media/ipu3/ipu3-mmu.c (`IPU3_PT_BITS`, `IPU3_L1PT_SHIFT`,
//! `IPU3_ADDR2PTE`, `REG_L1_PHYS`, the dummy page and dummy L2 table) and
//! drivers/media/pci/intel/ipu6/ipu6-mmu.c (`ISP_PADDR_SHIFT`, `ISP_L1PT_SHIFT`,
//! `ISP_L1PT_PTES`, `ISP_L2PT_PTES`, `REG_L1_PHYS`, `l2_pts`, `dummy_page`, `dummy_l2_pt`), with
//! drivers/media/pci/intel/ipu6/ipu6.h (`IPU6_MMU_ADDR_BITS`, `IPU6_MMU_ADDR_BITS_NON_SECURE`).
//!
//! - IOVA: 32 bits = L1 index \[31:22\] (10 bits) | L2 index \[21:12\] (10 bits) | offset \[11:0\].
//! - Tables: 1024 entries of 32 bits = one 4 KiB page, at both levels.
//! - Entry = bus address >> 12 (`ISP_PADDR_SHIFT`), so bus addresses up to 44 bits. The root
//!   (L1) table is given to the MMU as a 27-bit page number (`REG_L1_PHYS`, "27-bit pfn" in
//!   both drivers), so it must lie below 2^39. There is no
//!   valid bit, no permission bit and no block mapping: an L1 entry is always a table pointer, an
//!   L2 entry always a 4 KiB page.
//! - Since every entry is walked, empty entries are never zero: an empty L2 entry points at a
//!   dummy page and an empty L1 entry at a dummy L2 table whose entries all point at the dummy
//!   page. A stray device access lands on the dummy page instead of address 0. Such
//!   translations may be cached, so the page table gathers a map's range for invalidation too,
//!   as ipu3-mmu.c does (`imgu_mmu_map` ends with a whole-TLB invalidate); ipu6-mmu.c's
//!   `ipu6_mmu_map` does not invalidate after a map, only ipu6-dma.c after an unmap.
//! - IOVA space: 4 GiB (`IPU6_MMU_ADDR_BITS` = 32, IPU3: `IPU3_MMU_ADDRESS_BITS` = 12 + 10 + 10);
//!   an IPU6 in non-secure mode has a 2 GiB aperture (`IPU6_MMU_ADDR_BITS_NON_SECURE` = 31: the
//!   firmware is reachable in the first 2 GiB only), available as `ias` = 31
//!   ([`AddressSizes`](crate::AddressSizes)).
//! - L2 tables emptied by unmap are kept until teardown, as both drivers do
//!   ([`Format::FREE_EMPTY_TABLES`]).

use crate::{format::Entry, DmaAddr, Format, Prot};

/// Bits of IOVA resolved by each level (`IPU3_PT_BITS`, `ISP_L1PT_PTES = 1024`).
pub const IPU_PT_BITS: u32 = 10;
/// Entries per table (`IPU3_PT_PTES`).
pub const IPU_PT_PTES: usize = 1 << IPU_PT_BITS;
/// Page size shift (`IPU3_PAGE_SHIFT`); also the shift from a bus address to its entry
/// (`ISP_PADDR_SHIFT`).
pub const IPU_PAGE_SHIFT: u32 = 12;
/// Shift of the L1 index in an IOVA: 22 (ipu6-mmu.c `ISP_L1PT_SHIFT`). (ipu3-mmu.c's
/// `IPU3_L1PT_SHIFT` is 10: the width of the L1 index, applied after the page and L2 shifts.)
pub const IPU_L1_SHIFT: u32 = IPU_PAGE_SHIFT + IPU_PT_BITS;
/// IOVA width: 32 bits (the IPU's address space is 4 GiB).
pub const IPU_IOVA_BITS: u32 = 32;
/// Bus-address width an entry can hold: 32 + 12 bits.
pub const IPU_OA_BITS: u32 = 32 + IPU_PAGE_SHIFT;
/// IOVA width of an IPU6 in non-secure mode (`IPU6_MMU_ADDR_BITS_NON_SECURE`).
pub const IPU6_NON_SECURE_IOVA_BITS: u32 = 31;
/// Width of the page number the L1 base register holds (`REG_L1_PHYS`, "27-bit pfn").
pub const IPU_L1_PHYS_PFN_BITS: u32 = 27;
/// Bus-address width of the root (L1) table: a 27-bit page number of 4 KiB pages.
pub const IPU_ROOT_BITS: u32 = IPU_L1_PHYS_PFN_BITS + IPU_PAGE_SHIFT;

/// The Intel IPU MMU format: 2 levels x 1024 32-bit entries, 4 KiB pages, entry = address >> 12.
#[derive(Clone, Copy, Default, Debug)]
pub struct Ipu;

impl Format for Ipu {
    type Pte = u32;
    const NAME: &'static str = "ipu";
    const LEVELS: usize = 2;
    const GRANULE_SHIFT: u32 = IPU_PAGE_SHIFT;
    const LEVEL_BITS: &'static [u32] = &[IPU_PT_BITS, IPU_PT_BITS];
    const LEAF_LEVELS: &'static [bool] = &[false, true];
    const IOVA_BITS: u32 = IPU_IOVA_BITS;
    const OA_BITS: u32 = IPU_OA_BITS;
    const EMPTY_IS_ZERO: bool = false;
    const TLB_CACHES_EMPTY: bool = true;
    /// ipu3-mmu.c and ipu6-mmu.c never free an L2 table on unmap, only at teardown
    /// (`ipu6_mmu_destroy`), so an L1 entry never changes under a live device.
    const FREE_EMPTY_TABLES: bool = false;
    /// The IPU6's non-secure aperture is the only narrower IOVA space a driver sets up.
    const MIN_IOVA_BITS: u32 = IPU6_NON_SECURE_IOVA_BITS;
    /// `REG_L1_PHYS` holds a 27-bit page number.
    const ROOT_BITS: u32 = IPU_ROOT_BITS;

    #[inline(always)]
    fn leaf_attrs(_level: usize, _prot: Prot) -> u32 {
        0
    }

    #[inline(always)]
    fn leaf_with_addr(_attrs: u32, addr: DmaAddr) -> u32 {
        (addr.0 >> IPU_PAGE_SHIFT) as u32
    }

    #[inline(always)]
    fn table_entry(_level: usize, table: DmaAddr) -> u32 {
        (table.0 >> IPU_PAGE_SHIFT) as u32
    }

    #[inline]
    fn decode(level: usize, pte: u32) -> Entry {
        let addr = DmaAddr((pte as u64) << IPU_PAGE_SHIFT);
        if level == 0 {
            Entry::Table(addr)
        } else {
            // No permission bits: the hardware lets the device read and write every page.
            Entry::Leaf(addr, Prot::RW)
        }
    }

    #[inline(always)]
    fn is_table(level: usize, _pte: u32) -> bool {
        level == 0
    }
}
