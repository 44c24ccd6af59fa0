//! Encoding vectors for ARMv7 short descriptors ([`ArmV7s`]). Every expected value is worked
//! out by hand in the comments from drivers/iommu/io-pgtable-arm-v7s.c, never produced by the
//! code under test:
//!
//! - `arm_v7s_prot_to_pte`: an 8-bit block nG (bit 7) | S (bit 6) | TEX(1) (1 << 2, unless
//!   IOMMU_MMIO) | AF = AP0 (bit 0) | AP_UNPRIV = AP1 (bit 1, unless IOMMU_PRIV) |
//!   AP_RDONLY = AP2 (bit 5, unless IOMMU_WRITE), shifted by `ARM_V7S_ATTR_SHIFT(lvl)` = 16 -
//!   6 * lvl (10 for a level-1 section, 4 for a level-2 page); then XN (`BIT(4 * (2 - lvl))`:
//!   bit 4 of a section, bit 0 of a page) for IOMMU_NOEXEC, B (bit 2) for IOMMU_MMIO or B | C
//!   (bits 2, 3) for IOMMU_CACHE, and `ARM_V7S_PTE_TYPE_PAGE` (0x2);
//! - a table entry is the L2 table address | `ARM_V7S_PTE_TYPE_TABLE` (0x1);
//! - L1 index = IOVA >> 20 (12 bits), L2 index = (IOVA >> 12) & 0xff.
//!
//! Table addresses: [`SimAlloc`] gives the 16 KiB L1 table (a large table) the bus address
//! 0x2000_0000, and the L2 tables 4 KiB pages from 0x1000_0000, lowest first.

mod common;

use common::SimAlloc;
use devmmu_pagetable::*;

type V7 = ArmV7s;

fn raw32(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 4)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

#[test]
fn v7s_geometry() {
    assert_eq!([0, 1].map(V7::level_shift), [20, 12]);
    assert_eq!([0, 1].map(V7::entries), [4096, 256]);
    // 4 KiB pages and 1 MiB sections: 0x1000 | 0x10_0000.
    assert_eq!(V7::page_sizes(), 0x10_1000);
    // 0x1234_5000: L1 0x1234_5000 >> 20 = 0x123, L2 0x12345 & 0xff = 0x45.
    assert_eq!([0, 1].map(|l| V7::index(l, 0x1234_5000)), [0x123, 0x45]);
    assert_eq!([0, 1].map(|l| V7::index(l, 0xffff_f000)), [0xfff, 0xff]);
}

/// (prot, small page bits, section bits, what it reads back as).
fn vectors() -> Vec<(Prot, u32, u32, Prot, &'static str)> {
    vec![
        // Block 0x80 | 0x40 | TEX 0x4 | AF 0x1 | UNPRIV 0x2 = 0xc7. Page: 0xc7 << 4 = 0xc70 |
        // B|C 0xc | 0x2 = 0xc7e. Section: 0xc7 << 10 = 0x3_1c00 | 0xc | 0x2 = 0x3_1c0e.
        (
            Prot::RW | Prot::CACHE,
            0xc7e,
            0x3_1c0e,
            Prot::RW | Prot::CACHE,
            "rw cacheable",
        ),
        // + RDONLY 0x20: block 0xe7. Page: 0xe70 | XN 0x1 | 0x2 = 0xe73. Section: 0x3_9c00 |
        // XN 0x10 | 0x2 = 0x3_9c12.
        (Prot::RO, 0xe73, 0x3_9c12, Prot::RO, "ro noexec"),
        // MMIO: no TEX: block 0xc3. Page: 0xc30 | B 0x4 | 0x2 = 0xc36. Section: 0xc3 << 10 =
        // 0x3_0c00 | 0x4 | 0x2 = 0x3_0c06.
        (
            Prot::RW | Prot::MMIO,
            0xc36,
            0x3_0c06,
            Prot::RW | Prot::MMIO,
            "mmio",
        ),
        // MMIO wins over CACHE (B only), and CACHE is not read back (TEX = 0 means device).
        (
            Prot::RW | Prot::MMIO | Prot::CACHE,
            0xc36,
            0x3_0c06,
            Prot::RW | Prot::MMIO,
            "mmio + cache",
        ),
        // PRIV: no UNPRIV: block 0xc5. Page 0xc50 | 0xc | 0x2 = 0xc5e. Section 0xc5 << 10 =
        // 0x3_1400 | 0xe = 0x3_140e.
        (
            Prot::RW | Prot::CACHE | Prot::PRIV,
            0xc5e,
            0x3_140e,
            Prot::RW | Prot::CACHE | Prot::PRIV,
            "priv",
        ),
        // Normal non-cacheable: 0xc70 | 0x2 = 0xc72; section 0x3_1c00 | 0x2 = 0x3_1c02.
        (Prot::RW, 0xc72, 0x3_1c02, Prot::RW, "rw non-cacheable"),
        // Write without read: no AP encoding for it; reads back read-write, as
        // arm_v7s_pte_to_prot always reports IOMMU_READ.
        (Prot::WRITE, 0xc72, 0x3_1c02, Prot::RW, "write-only"),
    ]
}

#[test]
fn v7s_entries_decode_effective_prot() {
    for (prot, page, section, back, what) in vectors() {
        assert_eq!(V7::leaf_attrs(1, prot), page, "{what}: page");
        assert_eq!(V7::leaf_attrs(0, prot), section, "{what}: section");
        // A small page at 0x8765_4000 ([31:12]); a section at 0x8760_0000 ([31:20]).
        let p = V7::leaf_with_addr(page, DmaAddr(0x8765_4000));
        assert_eq!(p, 0x8765_4000 | page, "{what}: page with address");
        assert_eq!(
            V7::decode(1, p),
            Entry::Leaf(DmaAddr(0x8765_4000), back),
            "{what}"
        );
        let s = V7::leaf_with_addr(section, DmaAddr(0x8760_0000));
        assert_eq!(s, 0x8760_0000 | section, "{what}: section with address");
        assert_eq!(
            V7::decode(0, s),
            Entry::Leaf(DmaAddr(0x8760_0000), back),
            "{what}"
        );
        assert_eq!(V7::effective_prot(prot), back, "{what}: effective");
    }
    // Table: address [31:10] | 0x1.
    assert_eq!(V7::table_entry(0, DmaAddr(0x1000_0000)), 0x1000_0001);
    assert_eq!(
        V7::decode(0, 0x1000_0401),
        Entry::Table(DmaAddr(0x1000_0400))
    );
    // Faults and the unsupported forms: 0 at either level; a supersection (bit 18 = 0x4_0000);
    // L1 type 0b11; an L2 large page (type 0b01).
    assert_eq!(V7::decode(0, 0), Entry::Invalid);
    assert_eq!(V7::decode(1, 0x8765_4000), Entry::Invalid);
    assert_eq!(
        V7::decode(0, 0x8700_0000 | 0x4_0000 | 0x3_1c0e),
        Entry::Invalid
    );
    assert_eq!(V7::decode(0, 0x8760_0000 | 0x3_1c0f), Entry::Invalid);
    assert_eq!(V7::decode(1, 0x8765_0000 | 0xc7d), Entry::Invalid);
}

#[test]
fn v7s_map_page_and_section_raw() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<V7, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    // The 16 KiB L1 table: a large table.
    assert_eq!(pt.root(), DmaAddr(0x2000_0000));
    pt.map(
        Iova(0x1234_5000),
        DmaAddr(0x8765_4000),
        0x1000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    // L1[0x123] at 0x2000_0000 + 0x123 * 4 = 0x2000_048c -> L2 0x1000_0000 | 0x1.
    assert_eq!(raw32(&sim, 0x2000_048c), 0x1000_0001);
    // L2[0x45] at 0x1000_0000 + 0x45 * 4 = 0x1000_0114 -> 0x8765_4000 | 0xc7e.
    assert_eq!(raw32(&sim, 0x1000_0114), 0x8765_4c7e);
    let t = walk::<V7, _>(&sim, pt.root(), Iova(0x1234_5678)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8765_4678));
    assert_eq!((t.level, t.leaf_size), (1, 0x1000));
    // The last entry of the 1 KiB L2 table, L2[0xff] at 0x1000_03fc, is empty: a fault.
    assert_eq!(raw32(&sim, 0x1000_03fc), 0);
    assert_eq!(
        walk::<V7, _>(&sim, pt.root(), Iova(0x123f_f000)),
        Err(WalkFault::Translation {
            iova: Iova(0x123f_f000),
            level: 1
        })
    );

    // A read-only section at IOVA 0x30_0000 (L1[3], 0x2000_000c) to 0x8760_0000:
    // 0x8760_0000 | 0x3_9c12 = 0x8763_9c12.
    pt.map(
        Iova(0x30_0000),
        DmaAddr(0x8760_0000),
        0x10_0000,
        Prot::RO,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw32(&sim, 0x2000_000c), 0x8763_9c12);
    let t = walk::<V7, _>(&sim, pt.root(), Iova(0x3a_bcde)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x876a_bcde));
    assert_eq!((t.level, t.leaf_size, t.prot), (0, 0x10_0000, Prot::RO));

    // The top page: L1[0xfff] at 0x2000_3ffc, the last word of the 16 KiB L1 table; its L2 is
    // the second 4 KiB page, 0x1000_1000, and L2[0xff] at 0x1000_13fc.
    pt.map(
        Iova(0xffff_f000),
        DmaAddr(0xffff_f000),
        0x1000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw32(&sim, 0x2000_3ffc), 0x1000_1001);
    // 0xffff_f000 | 0xc72 = 0xffff_fc72.
    assert_eq!(raw32(&sim, 0x1000_13fc), 0xffff_fc72);

    // Output addresses are 32 bits.
    assert_eq!(
        pt.map(
            Iova(0x100_0000),
            DmaAddr(0x1_0000_0000),
            0x1000,
            Prot::RW,
            &mut g
        ),
        Err(Error::OutOfRange {
            what: "dma address",
            value: 0x1_0000_1000,
            limit: 0x1_0000_0000
        })
    );
}
