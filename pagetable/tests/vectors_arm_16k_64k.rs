//! Encoding vectors for ARM LPAE stage 1 with the 16 KiB and 64 KiB granules
//! ([`ArmLpae16k`], [`ArmLpae64k`]). Every expected value is worked out by hand in the comments
//! from the sources, never produced by the code under test:
//!
//! - drivers/iommu/io-pgtable-arm.c: `bits_per_level = pg_shift - 3` (11 for 16 KiB, 13 for
//!   64 KiB), levels `DIV_ROUND_UP(ias - pg_shift, bits_per_level)`, `arm_lpae_restrict_pgsizes`
//!   (`SZ_16K | SZ_32M`; `SZ_64K | SZ_512M`), `arm_lpae_prot_to_pte`, `__arm_lpae_init_pte`,
//!   `arm_lpae_install_table`, `iopte_to_paddr` (64 KiB: bits [15:12] are OA[51:48]);
//! - Arm ARM D8.3: the output address of a descriptor is bits [47:14] (16 KiB) or [47:16]
//!   (64 KiB); type 0b11 is a table above the last level and a page at it, 0b01 a block.
//!
//! Attribute bits (as for 4 KiB): type [1:0], AttrIndx [4:2] (NC 0, CACHE 1, DEV 2), AP_UNPRIV
//! 0x40, AP_RDONLY 0x80, SH_OS 0x200 / SH_IS 0x300, AF 0x400, nG 0x800, PXN|UXN
//! 0x0060_0000_0000_0000.
//!
//! Table addresses: [`SimAlloc`] puts 4 KiB pages at 0x1000_0000 + 4 KiB x slot and large tables
//! at 0x2000_0000 + 64 KiB x slot, lowest slot first. The 48-bit roots are small (16 KiB
//! granule: 2 entries, 16 bytes; 64 KiB: 64 entries, 512 bytes), so the root is the 4 KiB page
//! at 0x1000_0000 and every table below it a large one, from 0x2000_0000 in allocation order.

mod common;

use common::{DropSyncs, SimAlloc};
use devmmu_pagetable::*;
use std::cell::Cell;
use std::rc::Rc;

type A16 = ArmLpae16k;
type A64 = ArmLpae64k;

fn table<F: Format>() -> (SimAlloc, PageTable<F, SimAlloc>) {
    let sim = SimAlloc::new();
    let pt = PageTable::new(sim.clone(), PageTableConfig::default()).unwrap();
    (sim, pt)
}

fn raw64(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 8)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

// ---------------------------------------------------------------------------------------------
// Geometry

#[test]
fn arm16k_geometry() {
    // 48 - 14 = 34 index bits = 1 + 11 + 11 + 11: shifts L3 14, L2 14 + 11 = 25, L1 36, L0 47.
    assert_eq!([0, 1, 2, 3].map(A16::level_shift), [47, 36, 25, 14]);
    assert_eq!([0, 1, 2, 3].map(A16::entries), [2, 2048, 2048, 2048]);
    // Leaves: 16 KiB pages (bit 14 = 0x4000) and 32 MiB blocks (bit 25 = 0x200_0000).
    assert_eq!(A16::page_sizes(), 0x200_4000);
    // IOVA 1 << 47 | 1 << 36 | 1 << 25 | 3 << 14 = 0x8000_0000_0000 + 0x10_0000_0000
    // + 0x200_0000 + 0xc000 = 0x8010_0200_c000.
    assert_eq!(
        [0, 1, 2, 3].map(|l| A16::index(l, 0x8010_0200_c000)),
        [1, 1, 1, 3]
    );
    // The last 16 KiB page below 2^48: L0 1, every other index 2047.
    assert_eq!(
        [0, 1, 2, 3].map(|l| A16::index(l, 0xffff_ffff_c000)),
        [1, 2047, 2047, 2047]
    );
}

#[test]
fn arm64k_geometry() {
    // 48 - 16 = 32 index bits = 6 + 13 + 13: shifts (Arm L3) 16, (L2) 29, (L1) 42.
    assert_eq!([0, 1, 2].map(A64::level_shift), [42, 29, 16]);
    assert_eq!([0, 1, 2].map(A64::entries), [64, 8192, 8192]);
    // Leaves: 64 KiB pages (0x1_0000) and 512 MiB blocks (bit 29 = 0x2000_0000).
    assert_eq!(A64::page_sizes(), 0x2001_0000);
    // IOVA 1 << 42 | 1 << 29 | 3 << 16 = 0x400_0000_0000 + 0x2000_0000 + 0x3_0000.
    assert_eq!([0, 1, 2].map(|l| A64::index(l, 0x400_2003_0000)), [1, 1, 3]);
    assert_eq!(
        [0, 1, 2].map(|l| A64::index(l, 0xffff_ffff_0000)),
        [63, 8191, 8191]
    );
}

#[test]
fn start_level_follows_io_pgtable_level_count() {
    let start = |ias, f: fn(AddressSizes) -> usize| f(AddressSizes { ias, oas: 48 });
    let s16 = |s: AddressSizes| s.start_level::<A16>();
    let s64 = |s: AddressSizes| s.start_level::<A64>();
    // 16 KiB: levels = DIV_ROUND_UP(ias - 14, 11): ias 32 -> 18/11 -> 2, 36 -> 22/11 = 2,
    // 37 -> 23/11 -> 3, 47 -> 33/11 = 3, 48 -> 34/11 -> 4; the walk starts at 4 - levels.
    assert_eq!([32, 36, 37, 47, 48].map(|i| start(i, s16)), [2, 2, 1, 1, 0]);
    // 64 KiB: levels = DIV_ROUND_UP(ias - 16, 13): 32 -> 16/13 -> 2, 42 -> 26/13 = 2,
    // 43 -> 27/13 -> 3, 48 -> 32/13 -> 3; our level 0 is the Arm L1, so 3 levels start at 0.
    assert_eq!([32, 42, 43, 48].map(|i| start(i, s64)), [1, 1, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Entries straight from the format

/// (prot, attribute bits of a last-level page), from `arm_lpae_prot_to_pte` (ARM_64_LPAE_S1)
/// plus type 0b11 and AF from `__arm_lpae_init_pte`: the same for every granule.
fn page_vectors() -> Vec<(Prot, u64, &'static str)> {
    vec![
        // 0x3 | CACHE 1 << 2 = 0x4 | UNPRIV 0x40 | SH_IS 0x300 | AF 0x400 | nG 0x800 = 0xf47.
        (Prot::RW | Prot::CACHE, 0xf47, "rw cacheable"),
        // 0x3 | NC 0 | RDONLY 0x80 | UNPRIV 0x40 | SH_OS 0x200 | 0xc00 = 0xec3, + PXN|UXN.
        (Prot::RO, 0x0060_0000_0000_0ec3, "ro noexec"),
        // 0x3 | DEV 2 << 2 = 0x8 | 0x40 | SH_OS 0x200 | 0xc00 = 0xe4b.
        (Prot::RW | Prot::MMIO, 0xe4b, "mmio"),
        // PRIV: no UNPRIV: 0x3 | 0x4 | 0x300 | 0xc00 = 0xf07.
        (Prot::RW | Prot::CACHE | Prot::PRIV, 0xf07, "priv"),
    ]
}

#[test]
fn arm16k_entries() {
    for (prot, page, what) in page_vectors() {
        assert_eq!(A16::leaf_attrs(3, prot), page, "{what}: L3 page");
        // A 32 MiB block at L2: type 0b01 instead of 0b11.
        assert_eq!(
            A16::leaf_attrs(2, prot),
            (page & !3) | 1,
            "{what}: L2 block"
        );
        // Address [47:14]: 0x8_1234_4000 is 16 KiB aligned (0x4000 = 1 << 14).
        assert_eq!(
            A16::leaf_with_addr(page, DmaAddr(0x8_1234_4000)),
            0x8_1234_4000 | page
        );
    }
    // Bits below 14 are not part of the address: 0x8_1234_5000 & !0x3fff = 0x8_1234_4000.
    assert_eq!(
        A16::leaf_with_addr(0xf47, DmaAddr(0x8_1234_5000)),
        0x8_1234_4f47
    );
    // arm_lpae_install_table: address | 0b11.
    assert_eq!(A16::table_entry(1, DmaAddr(0x2000_4000)), 0x2000_4003);
    assert_eq!(
        A16::table_entry(0, DmaAddr(0xffff_ffff_c000)),
        0xffff_ffff_c003
    );
}

#[test]
fn arm16k_decode() {
    // Table at L0..L2: 0x2000_4003 -> table 0x2000_4000.
    for l in 0..3 {
        assert_eq!(
            A16::decode(l, 0x2000_4003),
            Entry::Table(DmaAddr(0x2000_4000))
        );
    }
    // L3 page 0x8_1234_4f47: rw cacheable at 0x8_1234_4000.
    assert_eq!(
        A16::decode(3, 0x8_1234_4f47),
        Entry::Leaf(DmaAddr(0x8_1234_4000), Prot::RW | Prot::CACHE)
    );
    // L2 block 0x8_0200_0f45 (32 MiB aligned: 0x8_0200_0000 = 0x401 << 25).
    assert_eq!(
        A16::decode(2, 0x8_0200_0f45),
        Entry::Leaf(DmaAddr(0x8_0200_0000), Prot::RW | Prot::CACHE)
    );
    // Block descriptors where the 16 KiB granule allows none (L1: 64 GiB needs FEAT_LPA2; L0
    // never), and type 0b01 at L3: reserved, invalid. Valid bit clear: invalid.
    assert_eq!(A16::decode(1, 0x10_0000_0f45), Entry::Invalid);
    assert_eq!(A16::decode(0, 0x0f45), Entry::Invalid);
    assert_eq!(A16::decode(3, 0x8_1234_4f45), Entry::Invalid);
    assert_eq!(A16::decode(3, 0x8_1234_4f46), Entry::Invalid);
}

#[test]
fn arm64k_entries_and_decode() {
    for (prot, page, what) in page_vectors() {
        assert_eq!(A64::leaf_attrs(2, prot), page, "{what}: Arm L3 page");
        assert_eq!(
            A64::leaf_attrs(1, prot),
            (page & !3) | 1,
            "{what}: L2 block"
        );
        // Address [47:16]: 0x8_1235_0000 is 64 KiB aligned.
        assert_eq!(
            A64::leaf_with_addr(page, DmaAddr(0x8_1235_0000)),
            0x8_1235_0000 | page
        );
    }
    // Bits below 16 are not part of the address: 0x8_1235_f000 & !0xffff = 0x8_1235_0000.
    assert_eq!(
        A64::leaf_with_addr(0xf47, DmaAddr(0x8_1235_f000)),
        0x8_1235_0f47
    );
    assert_eq!(A64::table_entry(0, DmaAddr(0x2001_0000)), 0x2001_0003);
    assert_eq!(
        A64::decode(0, 0x2001_0003),
        Entry::Table(DmaAddr(0x2001_0000))
    );
    assert_eq!(
        A64::decode(2, 0x8_1235_0f47),
        Entry::Leaf(DmaAddr(0x8_1235_0000), Prot::RW | Prot::CACHE)
    );
    // 512 MiB block at Arm L2 (our level 1): 0x80_0000_0000 = 0x400 << 29.
    assert_eq!(
        A64::decode(1, 0x80_0000_0f45),
        Entry::Leaf(DmaAddr(0x80_0000_0000), Prot::RW | Prot::CACHE)
    );
    // No 4 TiB block at Arm L1 without a 52-bit oas; type 0b01 at L3 reserved.
    assert_eq!(A64::decode(0, 0x400_0000_0f45), Entry::Invalid);
    assert_eq!(A64::decode(2, 0x8_1235_0f45), Entry::Invalid);
    // Bits [15:12] are OA[51:48] (iopte_to_paddr): 0x1234_1f47 has bit 12 set ->
    // (0x1000 << 36) = 1 << 48, so the page is at 0x1_0000_1234_0000, beyond 48 bits.
    assert_eq!(
        A64::decode(2, 0x1234_1f47),
        Entry::Leaf(DmaAddr(0x1_0000_1234_0000), Prot::RW | Prot::CACHE)
    );
}

// ---------------------------------------------------------------------------------------------
// Raw tables after a map

#[test]
fn arm16k_map_one_page_raw_chain() {
    let (sim, mut pt) = table::<A16>();
    let mut g = Gather::new();
    assert_eq!(pt.root(), DmaAddr(0x1000_0000));
    // IOVA 0x8010_0200_c000: indices [1, 1, 1, 3] (see arm16k_geometry).
    pt.map(
        Iova(0x8010_0200_c000),
        DmaAddr(0x8_1234_4000),
        0x4000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    // Tables allocated on the way down: L1 0x2000_0000, L2 0x2001_0000, L3 0x2002_0000 (large
    // slots 0, 1, 2), each 16 KiB.
    assert_eq!(sim.live_pages(), 4);
    // root[1] at 0x1000_0000 + 1 * 8 -> 0x2000_0000 | 0b11.
    assert_eq!(raw64(&sim, 0x1000_0008), 0x2000_0003);
    assert_eq!(raw64(&sim, 0x1000_0000), 0);
    // L1[1] at 0x2000_0008 -> 0x2001_0003; L2[1] at 0x2001_0008 -> 0x2002_0003.
    assert_eq!(raw64(&sim, 0x2000_0008), 0x2001_0003);
    assert_eq!(raw64(&sim, 0x2001_0008), 0x2002_0003);
    // L3[3] at 0x2002_0000 + 3 * 8 = 0x2002_0018 -> 0x8_1234_4000 | 0xf47.
    assert_eq!(raw64(&sim, 0x2002_0018), 0x8_1234_4f47);
    // The last entry of the 16 KiB L3 table (2047 * 8 = 0x3ff8) is empty and readable.
    assert_eq!(raw64(&sim, 0x2002_3ff8), 0);
    // Nothing to invalidate after a map (empty entries are not cached).
    assert!(g.is_empty());

    // The walker: 0x8010_0200_c123 -> 0x8_1234_4000 + 0x123, a 16 KiB page at level 3.
    let t = walk::<A16, _>(&sim, pt.root(), Iova(0x8010_0200_c123)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1234_4123));
    assert_eq!((t.level, t.leaf_size), (3, 0x4000));
    assert_eq!(t.leaf_iova, Iova(0x8010_0200_c000));
    // The next page: L3[4] empty, a translation fault at level 3.
    assert_eq!(
        walk::<A16, _>(&sim, pt.root(), Iova(0x8010_0201_0000)),
        Err(WalkFault::Translation {
            iova: Iova(0x8010_0201_0000),
            level: 3
        })
    );

    // Unmap: the three emptied tables are unlinked and freed after the sync.
    assert_eq!(pt.unmap(Iova(0x8010_0200_c000), 0x4000, &mut g), Ok(0x4000));
    assert_eq!(g.tables_to_free(), 3);
    common::sync_gather(&mut pt, &mut g);
    assert_eq!(raw64(&sim, 0x1000_0008), 0);
    assert_eq!(sim.live_pages(), 1);
}

#[test]
fn arm16k_map_32m_block_raw() {
    let (sim, mut pt) = table::<A16>();
    let mut g = Gather::new();
    // IOVA 0x200_0000: L0 0, L1 0, L2 1 (0x200_0000 >> 25 = 1). 32 MiB to 0x8_0200_0000.
    pt.map(
        Iova(0x200_0000),
        DmaAddr(0x8_0200_0000),
        0x200_0000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    // root[0] -> L1 0x2000_0000, L1[0] -> L2 0x2001_0000; no L3 table.
    assert_eq!(sim.live_pages(), 3);
    assert_eq!(raw64(&sim, 0x1000_0000), 0x2000_0003);
    assert_eq!(raw64(&sim, 0x2000_0000), 0x2001_0003);
    // L2[1] at 0x2001_0008: block 0x8_0200_0000 | 0xf45.
    assert_eq!(raw64(&sim, 0x2001_0008), 0x8_0200_0f45);
    // 0x2ab_cdef - 0x200_0000 = 0xab_cdef into the block.
    let t = walk::<A16, _>(&sim, pt.root(), Iova(0x2ab_cdef)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_02ab_cdef));
    assert_eq!((t.level, t.leaf_size), (2, 0x200_0000));
}

#[test]
fn arm64k_map_page_and_512m_block_raw() {
    let (sim, mut pt) = table::<A64>();
    let mut g = Gather::new();
    // IOVA 0x400_2003_0000: indices [1, 1, 3] (see arm64k_geometry).
    pt.map(
        Iova(0x400_2003_0000),
        DmaAddr(0x8_1235_0000),
        0x1_0000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    // root[1] at 0x1000_0008 -> Arm L2 table 0x2000_0000 (64 KiB); L2[1] at 0x2000_0008 ->
    // Arm L3 table 0x2001_0000; L3[3] at 0x2001_0018 -> 0x8_1235_0000 | 0xf47.
    assert_eq!(raw64(&sim, 0x1000_0008), 0x2000_0003);
    assert_eq!(raw64(&sim, 0x2000_0008), 0x2001_0003);
    assert_eq!(raw64(&sim, 0x2001_0018), 0x8_1235_0f47);
    // The last entry of a 64 KiB table: 8191 * 8 = 0xfff8.
    assert_eq!(raw64(&sim, 0x2001_fff8), 0);
    let t = walk::<A64, _>(&sim, pt.root(), Iova(0x400_2003_abcd)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1235_abcd));
    assert_eq!((t.level, t.leaf_size), (2, 0x1_0000));

    // 512 MiB block at IOVA 0x2000_0000 (root 0, L2 1) to 0x80_0000_0000: root[0] -> a new
    // Arm L2 table, large slot 2 = 0x2002_0000; its entry 1 (0x2002_0008) is the block.
    pt.map(
        Iova(0x2000_0000),
        DmaAddr(0x80_0000_0000),
        0x2000_0000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_0000), 0x2002_0003);
    assert_eq!(raw64(&sim, 0x2002_0008), 0x80_0000_0f45);
    let t = walk::<A64, _>(&sim, pt.root(), Iova(0x3fff_ffff)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x80_1fff_ffff));
    assert_eq!((t.level, t.leaf_size), (1, 0x2000_0000));
}

#[test]
fn an_allocator_without_large_tables_refuses_with_no_memory() {
    // DropSyncs forwards alloc_table only: the default alloc_large_table supplies nothing.
    let sim = SimAlloc::new();
    let alloc = DropSyncs {
        inner: sim.clone(),
        dropping: Rc::new(Cell::new(false)),
        whole_tables_only: false,
        dropped: Rc::new(Cell::new(0)),
    };
    // The 48-bit root fits a 4 KiB page, so creation succeeds...
    let mut pt = PageTable::<A16, _>::new(alloc, PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    // ...and the first map, which needs a 16 KiB L1 table, fails with nothing changed.
    assert_eq!(
        pt.map(Iova(0), DmaAddr(0x8_0000_0000), 0x4000, Prot::RW, &mut g),
        Err(Error::NoMemory)
    );
    assert!(g.is_empty());
    assert_eq!(sim.live_pages(), 1);
    assert_eq!(pt.mappings().count(), 0);
}
