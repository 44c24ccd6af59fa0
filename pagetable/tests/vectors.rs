//! Encoding vectors for both formats. Every expected raw value is worked out by hand in the
//! comments from the sources, never produced by the code under test:
//!
//! - ARM LPAE stage 1, 4 KiB granule: drivers/iommu/io-pgtable-arm.c (`arm_lpae_prot_to_pte`,
//!   `__arm_lpae_init_pte`, `arm_lpae_install_table`, the `ARM_LPAE_PTE_*` and
//!   `ARM_LPAE_MAIR_ATTR_IDX_*` constants) and the Arm ARM D8.3 descriptor formats.
//! - Intel IPU MMU: drivers/media/pci/intel/ipu6/ipu6-mmu.c and
//!   drivers/staging/media/ipu3/ipu3-mmu.c (entry = address >> 12, L1 index = iova >> 22,
//!   L2 index = (iova >> 12) & 0x3ff, dummy page / dummy L2 for empty entries).
//!
//! Bit positions used below (io-pgtable-arm.c):
//! type [1:0] (page/table 0b11, block 0b01), AttrIndx [4:2] (NC 0, CACHE 1, DEV 2),
//! AP_UNPRIV bit 6 (0x40), AP_RDONLY bit 7 (0x80), SH [9:8] (OS 0x200, IS 0x300),
//! AF bit 10 (0x400), nG bit 11 (0x800), PXN|UXN bits 53-54 (0x0060_0000_0000_0000),
//! output address [47:12].
//!
//! The allocator hands out pages lowest slot first from 0x1000_0000, so the bus address of each
//! table follows from the order the page table allocates them (root first, then one table per
//! level on the way down).

mod common;

use common::{SimAlloc, BASE};
use devmmu_pagetable::fmt::arm_lpae::PTE_ADDR_MASK;
use devmmu_pagetable::*;

type Arm = ArmLpae4k;

fn arm_table() -> (SimAlloc, PageTable<Arm, SimAlloc>) {
    let sim = SimAlloc::new();
    let pt = PageTable::new(sim.clone(), PageTableConfig::default()).unwrap();
    (sim, pt)
}

fn ipu_table() -> (SimAlloc, PageTable<Ipu, SimAlloc>) {
    let sim = SimAlloc::new();
    let pt = PageTable::new(sim.clone(), PageTableConfig::default()).unwrap();
    (sim, pt)
}

/// The raw 8-byte entry at bus address `addr`, read as the (coherent) walker reads it.
fn raw64(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 8)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

/// The raw 4-byte entry at bus address `addr`.
fn raw32(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 4)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

// ---------------------------------------------------------------------------------------------
// ARM LPAE: geometry

#[test]
fn arm_geometry() {
    // 4 levels of 9 index bits above the 12-bit page offset: L3 12, L2 21, L1 30, L0 39.
    assert_eq!(Arm::level_shift(3), 12);
    assert_eq!(Arm::level_shift(2), 21);
    assert_eq!(Arm::level_shift(1), 30);
    assert_eq!(Arm::level_shift(0), 39);
    // Leaves at L1 (1 GiB), L2 (2 MiB), L3 (4 KiB): bits 30, 21, 12.
    assert_eq!(Arm::page_sizes(), 0x4020_1000);
    // IOVA 0x0080_4020_3000 = 1 << 39 | 1 << 30 | 1 << 21 | 3 << 12.
    let iova = 0x0080_4020_3000;
    assert_eq!([0, 1, 2, 3].map(|l| Arm::index(l, iova)), [1, 1, 1, 3]);
    // 0x0000_ffff_ffff_f000: every index all ones.
    assert_eq!(
        [0, 1, 2, 3].map(|l| Arm::index(l, 0xffff_ffff_f000)),
        [511; 4]
    );
}

// ---------------------------------------------------------------------------------------------
// ARM LPAE: leaf attributes straight from the format

/// (prot, expected attribute bits of an L3 page) worked out from `arm_lpae_prot_to_pte` (ARM_64_LPAE_S1)
/// plus `__arm_lpae_init_pte` (type 0b11 at the last level).
fn arm_l3_vectors() -> Vec<(Prot, u64, &'static str)> {
    vec![
        // type 0x3 | AttrIndx CACHE 1<<2 = 0x4 | UNPRIV 0x40 (no PRIV) | SH_IS 0x300 (CACHE)
        // | AF 0x400 | nG 0x800 = 0xf47.
        (Prot::RW | Prot::CACHE, 0xf47, "rw cacheable"),
        // type 0x3 | AttrIndx NC 0 | RDONLY 0x80 (READ without WRITE) | UNPRIV 0x40 | SH_OS 0x200
        // | AF | nG 0xc00 = 0xec3; NOEXEC sets both PXN and UXN: 0x0060_0000_0000_0000.
        (Prot::RO, 0x0060_0000_0000_0ec3, "ro noexec"),
        // READ only, executable: 0xec3 without XN.
        (Prot::READ, 0xec3, "ro"),
        // WRITE without READ: RDONLY is only set for READ && !WRITE, so 0x3 | 0x40 | 0x200 |
        // 0xc00 = 0xe43 (stage 1 has no write-only encoding).
        (Prot::WRITE, 0xe43, "write-only"),
        // MMIO: AttrIndx DEV 2<<2 = 0x8, SH_OS 0x200 (no CACHE): 0x3 | 0x8 | 0x40 | 0x200 | 0xc00
        // = 0xe4b.
        (Prot::RW | Prot::MMIO, 0xe4b, "mmio"),
        // MMIO wins the AttrIndx, but SH follows CACHE independently: 0x3 | 0x8 | 0x40 | 0x300 |
        // 0xc00 = 0xf4b.
        (Prot::RW | Prot::MMIO | Prot::CACHE, 0xf4b, "mmio + cache"),
        // PRIV: AP_UNPRIV clear: 0x3 | 0x4 | 0x300 | 0xc00 = 0xf07.
        (Prot::RW | Prot::CACHE | Prot::PRIV, 0xf07, "priv"),
        // PRIV + MMIO + NOEXEC: 0x3 | 0x8 | 0x200 | 0xc00 = 0xe0b, plus XN.
        (
            Prot::RW_NOEXEC | Prot::MMIO | Prot::PRIV,
            0x0060_0000_0000_0e0b,
            "priv mmio noexec",
        ),
    ]
}

#[test]
fn arm_leaf_attrs_vectors() {
    for (prot, l3, what) in arm_l3_vectors() {
        assert_eq!(Arm::leaf_attrs(3, prot), l3, "{what}: L3 page attrs");
        // Blocks at L1 and L2 differ only in the type bits: 0b01 instead of 0b11.
        let block = (l3 & !3) | 1;
        assert_eq!(Arm::leaf_attrs(2, prot), block, "{what}: L2 block attrs");
        assert_eq!(Arm::leaf_attrs(1, prot), block, "{what}: L1 block attrs");
        // The output address goes in [47:12].
        assert_eq!(
            Arm::leaf_with_addr(l3, DmaAddr(0x8_1234_5000)),
            0x8_1234_5000 | l3,
            "{what}: with address"
        );
    }
}

#[test]
fn arm_table_entry_vector() {
    // arm_lpae_install_table: table address | ARM_LPAE_PTE_TYPE_TABLE (0b11), nothing else.
    for level in 0..3 {
        assert_eq!(Arm::table_entry(level, DmaAddr(0x1000_3000)), 0x1000_3003);
        assert_eq!(
            Arm::table_entry(level, DmaAddr(0xffff_ffff_f000)),
            0xffff_ffff_f003
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ARM LPAE: decode

#[test]
fn arm_decode_vectors() {
    let rw_c = Prot::READ | Prot::WRITE | Prot::CACHE;
    // All zero: invalid at every level.
    for level in 0..4 {
        assert_eq!(Arm::decode(level, 0), Entry::Invalid);
    }
    // Valid bit (bit 0) clear, everything else set: invalid (D8.3: bit 0 = 0 faults).
    assert_eq!(Arm::decode(3, 0x8_1234_5f46), Entry::Invalid);
    // Type 0b01 at L3 is reserved with a 4 KiB granule: invalid.
    assert_eq!(Arm::decode(3, 0x8_1234_5f45), Entry::Invalid);
    // Type 0b01 at L0: no L0 block without FEAT_LPA2: invalid.
    assert_eq!(Arm::decode(0, 0x80_0000_0e41), Entry::Invalid);
    // Type 0b11 at L0..L2: a table at the address bits.
    assert_eq!(
        Arm::decode(0, 0x1000_1003),
        Entry::Table(DmaAddr(0x1000_1000))
    );
    assert_eq!(
        Arm::decode(2, 0xffff_ffff_f003),
        Entry::Table(DmaAddr(0xffff_ffff_f000))
    );
    // Type 0b11 at L3: a page.
    assert_eq!(
        Arm::decode(3, 0x8_1234_5f47),
        Entry::Leaf(DmaAddr(0x8_1234_5000), rw_c)
    );
    // 0xec3 + XN: RDONLY -> no WRITE, XN -> NOEXEC, AttrIndx 0 -> neither CACHE nor MMIO.
    assert_eq!(
        Arm::decode(3, 0x0060_0008_1234_5ec3),
        Entry::Leaf(DmaAddr(0x8_1234_5000), Prot::RO)
    );
    // Either XN bit alone already forbids execution for the device: PXN (bit 53) only.
    assert_eq!(
        Arm::decode(3, 0x0020_0008_1234_5ec3),
        Entry::Leaf(DmaAddr(0x8_1234_5000), Prot::RO)
    );
    // AP_UNPRIV clear -> PRIV.
    assert_eq!(
        Arm::decode(3, 0x8_1234_5f07),
        Entry::Leaf(DmaAddr(0x8_1234_5000), rw_c | Prot::PRIV)
    );
    // AttrIndx 2 -> MMIO.
    assert_eq!(
        Arm::decode(3, 0x8_1234_5e4b),
        Entry::Leaf(DmaAddr(0x8_1234_5000), Prot::RW | Prot::MMIO)
    );
    // 2 MiB block at L2: type 0b01.
    assert_eq!(
        Arm::decode(2, 0x8_1240_0f45),
        Entry::Leaf(DmaAddr(0x8_1240_0000), rw_c)
    );
    // Address bits below the block size are RES0 and ignored by the walker.
    assert_eq!(
        Arm::decode(2, 0x8_1240_5f45),
        Entry::Leaf(DmaAddr(0x8_1240_0000), rw_c)
    );
    // 1 GiB block at L1: NC rw = 0x1 | 0x40 | 0x200 | 0xc00 = 0xe41.
    assert_eq!(
        Arm::decode(1, 0x80_0000_0e41),
        Entry::Leaf(DmaAddr(0x80_0000_0000), Prot::RW)
    );
    assert_eq!(
        Arm::decode(1, 0x80_1234_5e41),
        Entry::Leaf(DmaAddr(0x80_0000_0000), Prot::RW)
    );
    // is_table: type 0b11 above L3 only.
    assert!(Arm::is_table(0, 0x1000_1003));
    assert!(Arm::is_table(2, 0x1000_1003));
    assert!(!Arm::is_table(3, 0x8_1234_5f47));
    assert!(!Arm::is_table(2, 0x8_1240_0f45));
}

/// What each protection reads back as: stage 1 cannot say "no read" or "write only", so every
/// valid leaf is readable and a leaf without AP_RDONLY is writable.
#[test]
fn arm_effective_prot_vectors() {
    assert_eq!(Arm::effective_prot(Prot::WRITE), Prot::RW);
    assert_eq!(Arm::effective_prot(Prot::READ), Prot::READ);
    assert_eq!(Arm::effective_prot(Prot::RO), Prot::RO);
    assert_eq!(
        Arm::effective_prot(Prot::RW | Prot::CACHE | Prot::PRIV),
        Prot::RW | Prot::CACHE | Prot::PRIV
    );
    assert_eq!(
        Arm::effective_prot(Prot::RW | Prot::MMIO),
        Prot::RW | Prot::MMIO
    );
    // MMIO | CACHE: AttrIndx DEV with SH_IS (0xf4b) reads back as both flags.
    assert_eq!(
        Arm::decode(3, 0x8_1234_5f4b),
        Entry::Leaf(DmaAddr(0x8_1234_5000), Prot::RW | Prot::MMIO | Prot::CACHE)
    );
    assert_eq!(
        Arm::effective_prot(Prot::RW | Prot::MMIO | Prot::CACHE),
        Prot::RW | Prot::MMIO | Prot::CACHE
    );
}

/// Re-encoding what a leaf decodes to must give the same bits: a block split rebuilds its
/// smaller leaves from the decoded protection, where io-pgtable-arm.c's
/// `arm_lpae_split_blk_unmap` copies the block's attribute bits (`iopte_prot`). Checked for all
/// 64 flag combinations that grant access, at every leaf level.
#[test]
fn arm_attrs_survive_decode() {
    for bits in 0..64u8 {
        let prot = Prot::from_bits_truncate(bits);
        if !prot.grants_access() {
            continue;
        }
        for level in 1..4 {
            let pte = Arm::leaf_with_addr(Arm::leaf_attrs(level, prot), DmaAddr(0x8000_0000));
            let Entry::Leaf(_, back) = Arm::decode(level, pte) else {
                panic!("{prot} at L{level} does not decode as a leaf");
            };
            assert_eq!(
                Arm::leaf_attrs(level, back),
                Arm::leaf_attrs(level, prot),
                "{prot} at L{level} decodes to {back}, which encodes differently"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ARM LPAE: through the map path, read back with the TableReader

#[test]
fn arm_map_one_page_raw_chain() {
    let (sim, mut pt) = arm_table();
    let mut g = Gather::new();
    // Root is the first page: 0x1000_0000.
    assert_eq!(pt.root(), DmaAddr(BASE));
    // IOVA 0x0080_4020_3000: indices L0 1, L1 1, L2 1, L3 3 (see arm_geometry).
    let iova = 0x0080_4020_3000;
    pt.map(
        Iova(iova),
        DmaAddr(0x8_1234_5000),
        0x1000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    // The map allocated L1, L2, L3 in that order: 0x1000_1000, 0x1000_2000, 0x1000_3000.
    assert_eq!(sim.live_pages(), 4);
    // root[1] at 0x1000_0000 + 1 * 8 -> L1 table: 0x1000_1000 | 0b11.
    assert_eq!(raw64(&sim, 0x1000_0008), 0x1000_1003);
    // L1[1] at 0x1000_1008 -> L2 table.
    assert_eq!(raw64(&sim, 0x1000_1008), 0x1000_2003);
    // L2[1] at 0x1000_2008 -> L3 table.
    assert_eq!(raw64(&sim, 0x1000_2008), 0x1000_3003);
    // L3[3] at 0x1000_3000 + 3 * 8: the page, 0x8_1234_5000 | 0xf47 (rw cacheable).
    assert_eq!(raw64(&sim, 0x1000_3018), 0x8_1234_5f47);
    // Neighbours stay zero (invalid).
    assert_eq!(raw64(&sim, 0x1000_3010), 0);
    assert_eq!(raw64(&sim, 0x1000_3020), 0);
    assert_eq!(raw64(&sim, 0x1000_0000), 0);

    let t = walk::<Arm, _>(&sim, pt.root(), Iova(iova + 0x123)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1234_5123));
    assert_eq!(t.level, 3);
    assert_eq!(t.leaf_size, 0x1000);
    assert_eq!(t.leaf_iova, Iova(iova));
    assert_eq!(t.prot, Prot::READ | Prot::WRITE | Prot::CACHE);
    // One page further: L3[4] is zero, a translation fault at level 3.
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(iova + 0x1000)),
        Err(WalkFault::Translation {
            iova: Iova(iova + 0x1000),
            level: 3
        })
    );
    // root[0] is zero: a fault at level 0.
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(0x1000)),
        Err(WalkFault::Translation {
            iova: Iova(0x1000),
            level: 0
        })
    );
    // Beyond 48 bits: an address-size fault.
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(1 << 48)),
        Err(WalkFault::AddressSize {
            iova: Iova(1 << 48)
        })
    );
}

#[test]
fn arm_map_each_prot_raw_page() {
    let (sim, mut pt) = arm_table();
    let mut g = Gather::new();
    // Page i at IOVA 0x0080_4020_0000 + i * 4 KiB: L3 index i of the table at 0x1000_3000.
    for (i, (prot, attrs, what)) in arm_l3_vectors().into_iter().enumerate() {
        let i = i as u64;
        let dma = 0x8_1234_0000 + i * 0x1000;
        pt.map(
            Iova(0x0080_4020_0000 + i * 0x1000),
            DmaAddr(dma),
            0x1000,
            prot,
            &mut g,
        )
        .unwrap();
        assert_eq!(raw64(&sim, 0x1000_3000 + i * 8), dma | attrs, "{what}");
    }
    assert_eq!(sim.live_pages(), 4);
}

#[test]
fn arm_map_2m_block_raw() {
    let (sim, mut pt) = arm_table();
    let mut g = Gather::new();
    // IOVA 0x20_0000: L0 0, L1 0, L2 1. DMA 0x8_1240_0000 is 2 MiB aligned (0x4092 * 2 MiB).
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_1240_0000),
        0x20_0000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    // Only L1 and L2 were needed: root 0x1000_0000, L1 0x1000_1000, L2 0x1000_2000.
    assert_eq!(sim.live_pages(), 3);
    assert_eq!(raw64(&sim, 0x1000_0000), 0x1000_1003);
    assert_eq!(raw64(&sim, 0x1000_1000), 0x1000_2003);
    // L2[1]: block type 0b01: 0x1 | 0x4 | 0x40 | 0x300 | 0xc00 = 0xf45.
    assert_eq!(raw64(&sim, 0x1000_2008), 0x8_1240_0f45);
    let t = walk::<Arm, _>(&sim, pt.root(), Iova(0x3f_f123)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_125f_f123));
    assert_eq!(
        (t.level, t.leaf_size, t.leaf_iova),
        (2, 0x20_0000, Iova(0x20_0000))
    );
    assert_eq!(
        pt.mappings().collect::<Vec<_>>(),
        vec![Mapping {
            iova: Iova(0x20_0000),
            dma: DmaAddr(0x8_1240_0000),
            size: 0x20_0000,
            level: 2,
            prot: Prot::READ | Prot::WRITE | Prot::CACHE,
        }]
    );
}

#[test]
fn arm_map_1g_block_raw() {
    let (sim, mut pt) = arm_table();
    let mut g = Gather::new();
    // IOVA 1 GiB: L0 0, L1 1. DMA 512 GiB is 1 GiB aligned.
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x80_0000_0000),
        0x4000_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    // Only L1 needed: root 0x1000_0000, L1 0x1000_1000.
    assert_eq!(sim.live_pages(), 2);
    assert_eq!(raw64(&sim, 0x1000_0000), 0x1000_1003);
    // L1[1] at 0x1000_1008: NC rw block = 0x1 | 0x40 | 0x200 | 0xc00 = 0xe41.
    assert_eq!(raw64(&sim, 0x1000_1008), 0x80_0000_0e41);
    let t = walk::<Arm, _>(&sim, pt.root(), Iova(0x7fff_ffff)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x80_3fff_ffff));
    assert_eq!((t.level, t.leaf_size), (1, 0x4000_0000));
    assert_eq!(t.prot, Prot::RW);
}

#[test]
fn arm_map_block_then_pages() {
    let (sim, mut pt) = arm_table();
    let mut g = Gather::new();
    // 2 MiB + 8 KiB from 0x20_0000: one L2 block, then two pages at the start of the next 2 MiB
    // (L2[2] -> new L3 table 0x1000_3000, entries 0 and 1).
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_1240_0000),
        0x20_2000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_2008), 0x8_1240_0f45);
    assert_eq!(raw64(&sim, 0x1000_2010), 0x1000_3003);
    assert_eq!(raw64(&sim, 0x1000_3000), 0x8_1260_0f47);
    assert_eq!(raw64(&sim, 0x1000_3008), 0x8_1260_1f47);
    assert_eq!(raw64(&sim, 0x1000_3010), 0);
    // Same IOVA and size but a DMA address that is only 4 KiB aligned: all pages, no block.
    let (sim, mut pt) = arm_table();
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_1240_1000),
        0x20_0000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_2008), 0x1000_3003);
    assert_eq!(raw64(&sim, 0x1000_3000), 0x8_1240_1f47);
    assert_eq!(raw64(&sim, 0x1000_3ff8), 0x8_1260_0f47);
    assert_eq!(pt.mappings().count(), 512);
}

/// A partial unmap with the split option (`unmap_split`) turns the block into a table of leaves
/// with the block's attribute bits and the page type, as `arm_lpae_split_blk_unmap` did before
/// Linux v6.13 (iopte_prot of the block | type).
#[test]
fn arm_split_keeps_raw_attrs() {
    let (sim, mut pt) = arm_table();
    let mut g = Gather::new();
    // RW | MMIO | CACHE: block attrs 0xf49 (0x1 | 0x8 | 0x40 | 0x300 | 0xc00); pages 0xf4b.
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_1240_0000),
        0x20_0000,
        Prot::RW | Prot::MMIO | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_2008), 0x8_1240_0f49);
    assert_eq!(
        pt.unmap_split(Iova(0x20_1000), 0x1000, &mut g, |_, _| {}),
        Ok(0x1000)
    );
    common::sync_gather(&mut pt, &mut g);
    // L2[1] is now a table descriptor: an address and type 0b11, no attribute bits.
    let desc = raw64(&sim, 0x1000_2008);
    assert_eq!(desc & !PTE_ADDR_MASK, 3, "table descriptor {desc:#x}");
    let l3 = desc & PTE_ADDR_MASK;
    assert_eq!(raw64(&sim, l3), 0x8_1240_0f4b);
    assert_eq!(raw64(&sim, l3 + 8), 0);
    assert_eq!(raw64(&sim, l3 + 16), 0x8_1240_2f4b);
    assert_eq!(raw64(&sim, l3 + 511 * 8), 0x8_125f_ff4b);
    assert_eq!(pt.stats().blocks_split, 1);

    // And for every flag combination: the page bits equal the block bits with type 0b11.
    for bits in 0..64u8 {
        let prot = Prot::from_bits_truncate(bits);
        if !prot.grants_access() {
            continue;
        }
        let (sim, mut pt) = arm_table();
        pt.map(
            Iova(0x20_0000),
            DmaAddr(0x8_1240_0000),
            0x20_0000,
            prot,
            &mut g,
        )
        .unwrap();
        let block = raw64(&sim, 0x1000_2008);
        pt.unmap_split(Iova(0x20_1000), 0x1000, &mut g, |_, _| {})
            .unwrap();
        common::sync_gather(&mut pt, &mut g);
        let l3 = raw64(&sim, 0x1000_2008) & PTE_ADDR_MASK;
        let page_attrs = (block & !PTE_ADDR_MASK & !3) | 3;
        assert_eq!(
            raw64(&sim, l3 + 2 * 8),
            0x8_1240_2000 | page_attrs,
            "{prot}: block {block:#x}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Intel IPU

#[test]
fn ipu_geometry_and_format() {
    // Two levels of 10 bits above the 12-bit offset: L1 index = iova >> 22, L2 = (iova >> 12) &
    // 0x3ff.
    assert_eq!(Ipu::level_shift(0), 22);
    assert_eq!(Ipu::level_shift(1), 12);
    assert_eq!(Ipu::page_sizes(), 0x1000);
    // 0x1234_5000 >> 22 = 0x48; 0x12345 & 0x3ff = 0x345.
    assert_eq!(
        (Ipu::index(0, 0x1234_5000), Ipu::index(1, 0x1234_5000)),
        (0x48, 0x345)
    );
    assert_eq!(
        (Ipu::index(0, 0xffff_f000), Ipu::index(1, 0xffff_f000)),
        (0x3ff, 0x3ff)
    );
    assert_eq!((Ipu::index(0, 0x40_0000), Ipu::index(1, 0x40_0000)), (1, 0));
    // Entry = address >> 12, no attribute bits at all (ISP_PADDR_SHIFT).
    for bits in 0..64u8 {
        assert_eq!(Ipu::leaf_attrs(1, Prot::from_bits_truncate(bits)), 0);
    }
    assert_eq!(Ipu::leaf_with_addr(0, DmaAddr(0x9_8765_4000)), 0x98_7654);
    // The largest bus address: 2^44 - 4 KiB -> 0xffff_ffff.
    assert_eq!(
        Ipu::leaf_with_addr(0, DmaAddr(0xfff_ffff_f000)),
        0xffff_ffff
    );
    assert_eq!(Ipu::table_entry(0, DmaAddr(0x1000_3000)), 0x1_0003);
    // No valid bit: an L1 entry is always a table, an L2 entry always a page (even 0).
    assert_eq!(Ipu::decode(0, 0x1_0003), Entry::Table(DmaAddr(0x1000_3000)));
    assert_eq!(Ipu::decode(0, 0), Entry::Table(DmaAddr(0)));
    assert_eq!(
        Ipu::decode(1, 0x98_7654),
        Entry::Leaf(DmaAddr(0x9_8765_4000), Prot::RW)
    );
    assert_eq!(
        Ipu::decode(1, 0xffff_ffff),
        Entry::Leaf(DmaAddr(0xfff_ffff_f000), Prot::RW)
    );
    // No permission bits: everything reads back read-write.
    assert_eq!(Ipu::effective_prot(Prot::RO), Prot::RW);
    assert_eq!(Ipu::effective_prot(Prot::WRITE | Prot::MMIO), Prot::RW);
}

#[test]
fn ipu_fresh_table_points_at_dummies() {
    let (sim, pt) = ipu_table();
    // new() allocates the dummy page (0x1000_0000), the dummy L2 (0x1000_1000), the L1 root
    // (0x1000_2000).
    assert_eq!(pt.dummy_page(), Some(DmaAddr(0x1000_0000)));
    assert_eq!(pt.root(), DmaAddr(0x1000_2000));
    assert_eq!(sim.live_pages(), 3);
    // Every L1 entry = dummy L2 >> 12 = 0x1_0001; every dummy L2 entry = dummy page >> 12 =
    // 0x1_0000.
    for i in 0..1024u64 {
        assert_eq!(raw32(&sim, 0x1000_2000 + 4 * i), 0x1_0001, "L1[{i}]");
        assert_eq!(raw32(&sim, 0x1000_1000 + 4 * i), 0x1_0000, "dummy L2[{i}]");
    }
    // The walker lands on the dummy page for any IOVA, keeping the offset.
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0xdead_beef)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x1000_0eef));
    assert_eq!((t.level, t.prot), (1, Prot::RW));
    assert_eq!(pt.translate(Iova(0xdead_b000)), None);
    assert_eq!(pt.mappings().count(), 0);
}

#[test]
fn ipu_map_one_page_raw() {
    let (sim, mut pt) = ipu_table();
    let mut g = Gather::new();
    pt.map(
        Iova(0x1234_5000),
        DmaAddr(0x9_8765_4000),
        0x1000,
        Prot::RO,
        &mut g,
    )
    .unwrap();
    // The new L2 table is the fourth page: 0x1000_3000.
    assert_eq!(sim.live_pages(), 4);
    // L1[0x48] at 0x1000_2000 + 0x48 * 4 = 0x1000_2120 -> 0x1000_3000 >> 12.
    assert_eq!(raw32(&sim, 0x1000_2120), 0x1_0003);
    // Neighbouring L1 entries still point at the dummy L2.
    assert_eq!(raw32(&sim, 0x1000_211c), 0x1_0001);
    assert_eq!(raw32(&sim, 0x1000_2124), 0x1_0001);
    // L2[0x345] at 0x1000_3000 + 0x345 * 4 = 0x1000_3d14 -> 0x9_8765_4000 >> 12.
    assert_eq!(raw32(&sim, 0x1000_3d14), 0x98_7654);
    // The rest of the new L2 points at the dummy page.
    assert_eq!(raw32(&sim, 0x1000_3d10), 0x1_0000);
    assert_eq!(raw32(&sim, 0x1000_3d18), 0x1_0000);
    assert_eq!(raw32(&sim, 0x1000_3000), 0x1_0000);
    // The TLB may hold the dummy translation, and a walk cache the L1 entry that pointed at
    // the dummy L2, so even a map queues an invalidation, of walk caches too.
    assert_eq!(
        g.walk_ranges().collect::<Vec<_>>(),
        vec![(Iova(0x1234_5000), 0x1000)]
    );

    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x1234_5678)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x9_8765_4678));
    assert_eq!((t.level, t.leaf_size), (1, 0x1000));
    // Unmapped page in the same L2: the dummy page.
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x1234_4010)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x1000_0010));
    // Unmapped L1 slot: through the dummy L2 to the dummy page.
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x10)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x1000_0010));
    // Beyond 32 bits: an address-size fault.
    assert_eq!(
        walk::<Ipu, _>(&sim, pt.root(), Iova(1 << 32)),
        Err(WalkFault::AddressSize {
            iova: Iova(1 << 32)
        })
    );
    assert_eq!(
        pt.translate(Iova(0x1234_5000)),
        Some((DmaAddr(0x9_8765_4000), Prot::RW))
    );

    // Unmap restores the dummy page entry (L2[0x345] = 0x1_0000) and keeps the L2 table
    // linked: L1[0x48] still points at it (0x1_0003), as in ipu6-mmu.c's l2_unmap.
    common::sync_gather(&mut pt, &mut g);
    assert_eq!(pt.unmap(Iova(0x1234_5000), 0x1000, &mut g), Ok(0x1000));
    assert_eq!(raw32(&sim, 0x1000_3000 + 0x345 * 4), 0x1_0000);
    assert_eq!(raw32(&sim, 0x1000_2120), 0x1_0003);
    assert_eq!(g.tables_to_free(), 0);
    assert_eq!(
        common::sync_gather(&mut pt, &mut g),
        vec![(0x1234_5000, 0x1234_6000)]
    );
    assert_eq!(sim.live_pages(), 4);
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x1234_5678)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x1000_0678));
}

#[test]
fn ipu_map_top_of_both_spaces() {
    let (sim, mut pt) = ipu_table();
    let mut g = Gather::new();
    // Last IOVA page (L1 0x3ff, L2 0x3ff) to the last bus page a 32-bit entry can hold.
    pt.map(
        Iova(0xffff_f000),
        DmaAddr(0xfff_ffff_f000),
        0x1000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw32(&sim, 0x1000_2000 + 0x3ff * 4), 0x1_0003);
    assert_eq!(raw32(&sim, 0x1000_3000 + 0x3ff * 4), 0xffff_ffff);
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0xffff_ffff)).unwrap();
    assert_eq!(t.dma, DmaAddr(0xfff_ffff_ffff));
}
