//! Encoding vectors for the Apple DART formats ([`AppleDart1`], [`AppleDart2`], 16 KiB pages).
//! Every expected value is worked out by hand in the comments from
//! drivers/iommu/io-pgtable-dart.c, never produced by the code under test:
//!
//! - `dart_prot_to_pte`: DART1 SP_DIS (bit 1, 0x2) always, NO_WRITE (bit 7, 0x80) without
//!   IOMMU_WRITE, NO_READ (bit 8, 0x100) without IOMMU_READ; DART2 NO_CACHE (bit 1, 0x2)
//!   without IOMMU_CACHE, NO_WRITE (bit 2, 0x4), NO_READ (bit 3, 0x8);
//! - `dart_init_pte`: subpage start 0 in [63:52], end 0xfff in [51:40] (0xfff << 40 =
//!   0x000f_ff00_0000_0000), valid bit 0;
//! - `paddr_to_iopte`: DART1 `paddr & GENMASK(35, 12)`; DART2 `(paddr >> 4) & GENMASK(37, 10)`;
//! - `dart_install_table`: the table's `paddr_to_iopte` | valid;
//! - indices (`dart_get_index` with `bits_per_level` 11): L1 = (iova >> 25) & 0x7ff, L2 =
//!   (iova >> 14) & 0x7ff.
//!
//! Table addresses: every DART table is 16 KiB, a large table; [`SimAlloc`] hands them out at
//! 0x2000_0000 + 64 KiB x slot: the root at 0x2000_0000, the first L2 table at 0x2001_0000.

mod common;

use common::SimAlloc;
use devmmu_pagetable::*;

/// The subpage fields of every leaf: end 0xfff at bit 40.
const WHOLE: u64 = 0x000f_ff00_0000_0000;

fn raw64(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 8)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

#[test]
fn dart_geometry() {
    for (shifts, entries, sizes) in [
        (
            [0, 1].map(AppleDart1::level_shift),
            [0, 1].map(AppleDart1::entries),
            AppleDart1::page_sizes(),
        ),
        (
            [0, 1].map(AppleDart2::level_shift),
            [0, 1].map(AppleDart2::entries),
            AppleDart2::page_sizes(),
        ),
    ] {
        // L1 at 14 + 11 = 25, L2 at 14; 2048 entries each; only 16 KiB pages (0x4000).
        assert_eq!(shifts, [25, 14]);
        assert_eq!(entries, [2048, 2048]);
        assert_eq!(sizes, 0x4000);
    }
    // 0x200_c000 = 1 << 25 | 3 << 14: L1 1, L2 3.
    assert_eq!([0, 1].map(|l| AppleDart1::index(l, 0x200_c000)), [1, 3]);
    // The last page of the 36-bit space: 0xf_ffff_c000 -> [2047, 2047].
    assert_eq!(
        [0, 1].map(|l| AppleDart1::index(l, 0xf_ffff_c000)),
        [2047, 2047]
    );
}

#[test]
fn dart1_entries() {
    // (prot, leaf bits without the address, read back as)
    let vectors = [
        // SP_DIS 0x2 | valid 0x1 = 0x3.
        (Prot::RW, WHOLE | 0x3, Prot::RW),
        // CACHE, MMIO, PRIV, NOEXEC have no DART1 bit: the same 0x3, read back as RW.
        (
            Prot::RW_NOEXEC | Prot::CACHE | Prot::MMIO | Prot::PRIV,
            WHOLE | 0x3,
            Prot::RW,
        ),
        // + NO_WRITE 0x80 = 0x83.
        (Prot::RO, WHOLE | 0x83, Prot::READ),
        // + NO_READ 0x100 = 0x103.
        (Prot::WRITE, WHOLE | 0x103, Prot::WRITE),
    ];
    for (prot, bits, back) in vectors {
        assert_eq!(AppleDart1::leaf_attrs(1, prot), bits, "{prot}");
        // Address 0x8_1234_4000 in place (bits [35:12]).
        let pte = AppleDart1::leaf_with_addr(bits, DmaAddr(0x8_1234_4000));
        assert_eq!(pte, bits | 0x8_1234_4000, "{prot}");
        assert_eq!(
            AppleDart1::decode(1, pte),
            Entry::Leaf(DmaAddr(0x8_1234_4000), back)
        );
        assert_eq!(AppleDart1::effective_prot(prot), back);
    }
    // The highest page of the 36-bit output: 0xf_ffff_c000 -> 0x000f_ff0f_ffff_c003 for RW.
    assert_eq!(
        AppleDart1::leaf_with_addr(WHOLE | 0x3, DmaAddr(0xf_ffff_c000)),
        0x000f_ff0f_ffff_c003
    );
    assert_eq!(
        AppleDart1::table_entry(0, DmaAddr(0x2001_0000)),
        0x2001_0001
    );
    assert_eq!(
        AppleDart1::decode(0, 0x2001_0001),
        Entry::Table(DmaAddr(0x2001_0000))
    );
    // Valid bit clear: invalid at either level, whatever else is set.
    assert_eq!(AppleDart1::decode(0, 0x2001_0000), Entry::Invalid);
    assert_eq!(AppleDart1::decode(1, WHOLE | 0x8_1234_4002), Entry::Invalid);
}

#[test]
fn dart2_entries() {
    let vectors = [
        // NO_CACHE 0x2 | valid 0x1 = 0x3.
        (Prot::RW, WHOLE | 0x3, Prot::RW),
        // CACHE: no NO_CACHE: 0x1.
        (Prot::RW | Prot::CACHE, WHOLE | 0x1, Prot::RW | Prot::CACHE),
        // NO_WRITE 0x4 | 0x1 = 0x5.
        (
            Prot::RO | Prot::CACHE,
            WHOLE | 0x5,
            Prot::READ | Prot::CACHE,
        ),
        // NO_READ 0x8 | NO_CACHE 0x2 | 0x1 = 0xb.
        (Prot::WRITE, WHOLE | 0xb, Prot::WRITE),
    ];
    for (prot, bits, back) in vectors {
        assert_eq!(AppleDart2::leaf_attrs(1, prot), bits, "{prot}");
        // 0x3_8765_4000 >> 4 = 0x3876_5400 (bits [37:10], nothing below bit 10).
        let pte = AppleDart2::leaf_with_addr(bits, DmaAddr(0x3_8765_4000));
        assert_eq!(pte, bits | 0x3876_5400, "{prot}");
        assert_eq!(
            AppleDart2::decode(1, pte),
            Entry::Leaf(DmaAddr(0x3_8765_4000), back)
        );
        assert_eq!(AppleDart2::effective_prot(prot), back);
    }
    // The highest page of the 42-bit output: (2^42 - 16 KiB) >> 4 = 0x3f_ffff_fc00.
    assert_eq!(
        AppleDart2::leaf_with_addr(WHOLE | 0x1, DmaAddr(0x3ff_ffff_c000)),
        WHOLE | 0x3f_ffff_fc01
    );
    // Table 0x2001_0000 >> 4 = 0x200_1000, | valid.
    assert_eq!(AppleDart2::table_entry(0, DmaAddr(0x2001_0000)), 0x200_1001);
    assert_eq!(
        AppleDart2::decode(0, 0x200_1001),
        Entry::Table(DmaAddr(0x2001_0000))
    );
}

#[test]
fn dart_map_raw_and_tables_kept() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<AppleDart1, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    assert_eq!(pt.root(), DmaAddr(0x2000_0000));
    // IOVA 0x200_c000 (L1 1, L2 3) -> 0x8_1234_4000, read-write.
    pt.map(
        Iova(0x200_c000),
        DmaAddr(0x8_1234_4000),
        0x4000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    // L1[1] at 0x2000_0008 -> 0x2001_0000 | 1; L2[3] at 0x2001_0018 -> WHOLE | 0x8_1234_4003.
    assert_eq!(raw64(&sim, 0x2000_0008), 0x2001_0001);
    assert_eq!(raw64(&sim, 0x2001_0018), 0x000f_ff08_1234_4003);
    let t = walk::<AppleDart1, _>(&sim, pt.root(), Iova(0x200_c123)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1234_4123));
    assert_eq!((t.level, t.leaf_size, t.prot), (1, 0x4000, Prot::RW));
    // Beyond 36 bits: an address-size fault.
    assert_eq!(
        walk::<AppleDart1, _>(&sim, pt.root(), Iova(1 << 36)),
        Err(WalkFault::AddressSize {
            iova: Iova(1 << 36)
        })
    );

    // Unmap clears the leaf and keeps the L2 table linked, as dart_unmap_pages does.
    assert_eq!(pt.unmap(Iova(0x200_c000), 0x4000, &mut g), Ok(0x4000));
    assert_eq!(g.tables_to_free(), 0);
    common::sync_gather(&mut pt, &mut g);
    assert_eq!(raw64(&sim, 0x2001_0018), 0);
    assert_eq!(raw64(&sim, 0x2000_0008), 0x2001_0001);
    assert_eq!(sim.live_pages(), 2);

    // DART2: the same map, to 0x3_8765_4000 cacheable: L1[1] = 0x2001_0000 >> 4 | 1 =
    // 0x200_1001, L2[3] = WHOLE | 0x3876_5400 | 0x1.
    let sim = SimAlloc::new();
    let mut pt = PageTable::<AppleDart2, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    pt.map(
        Iova(0x200_c000),
        DmaAddr(0x3_8765_4000),
        0x4000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x2000_0008), 0x200_1001);
    assert_eq!(raw64(&sim, 0x2001_0018), 0x000f_ff00_3876_5401);
    let t = walk::<AppleDart2, _>(&sim, pt.root(), Iova(0x200_fff8)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x3_8765_7ff8));
    assert_eq!(t.prot, Prot::RW | Prot::CACHE);
}
