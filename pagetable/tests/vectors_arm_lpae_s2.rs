//! Encoding vectors for ARM LPAE stage 2 with the 4 KiB granule ([`ArmLpaeS2`]). Every expected
//! value is worked out by hand in the comments from the sources, never produced by the code
//! under test:
//!
//! - drivers/iommu/io-pgtable-arm.c, `arm_lpae_prot_to_pte` for `ARM_64_LPAE_S2`: S2AP
//!   `ARM_LPAE_PTE_HAP_READ` = 1 << 6 = 0x40 and `ARM_LPAE_PTE_HAP_WRITE` = 2 << 6 = 0x80;
//!   MemAttr `ARM_LPAE_PTE_MEMATTR_DEV` = 0x1 << 2 = 0x4 (IOMMU_MMIO), `_OIWB` = 0xf << 2 =
//!   0x3c (IOMMU_CACHE), `_NC` = 0x5 << 2 = 0x14 (otherwise); SH_IS 0x300 with IOMMU_CACHE,
//!   else SH_OS 0x200; `ARM_LPAE_PTE_XN` = 3 << 53 = 0x0060_0000_0000_0000 for IOMMU_NOEXEC;
//!   no nG, no AP bits (IOMMU_PRIV has no effect);
//! - `__arm_lpae_init_pte`: AF 0x400, type 0b11 (page, L3) or 0b01 (block, L1 and L2).
//!
//! Table addresses: [`SimAlloc`] hands out 4 KiB pages at 0x1000_0000 + 4 KiB x slot, lowest
//! first: the root, then one table per level on the way down.

mod common;

use common::SimAlloc;
use devmmu_pagetable::*;

type S2 = ArmLpaeS2;

fn raw64(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 8)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

/// (prot, attribute bits of an L3 page, what the page reads back as).
fn l3_vectors() -> Vec<(Prot, u64, Prot, &'static str)> {
    vec![
        // 0x3 | OIWB 0x3c = 0x3f | R 0x40 | W 0x80 = 0xff | SH_IS 0x300 = 0x3ff | AF 0x400
        // = 0x7ff.
        (
            Prot::RW | Prot::CACHE,
            0x7ff,
            Prot::RW | Prot::CACHE,
            "rw cacheable",
        ),
        // PRIV has no stage-2 encoding: the same 0x7ff, read back without PRIV.
        (
            Prot::RW | Prot::CACHE | Prot::PRIV,
            0x7ff,
            Prot::RW | Prot::CACHE,
            "priv dropped",
        ),
        // 0x3 | NC 0x14 = 0x17 | R 0x40 = 0x57 | SH_OS 0x200 = 0x257 | AF = 0x657, + XN.
        (Prot::RO, 0x0060_0000_0000_0657, Prot::RO, "ro noexec"),
        (Prot::READ, 0x657, Prot::READ, "ro executable"),
        // Write-only exists at stage 2: 0x3 | 0x14 | W 0x80 = 0x97 | 0x200 | 0x400 = 0x697.
        (Prot::WRITE, 0x697, Prot::WRITE, "write-only"),
        // 0x3 | DEV 0x4 = 0x7 | RW 0xc0 = 0xc7 | SH_OS 0x200 | AF 0x400 = 0x6c7.
        (Prot::RW | Prot::MMIO, 0x6c7, Prot::RW | Prot::MMIO, "mmio"),
        // MMIO wins MemAttr, SH follows CACHE: 0xc7 | SH_IS 0x300 | 0x400 = 0x7c7.
        (
            Prot::RW | Prot::MMIO | Prot::CACHE,
            0x7c7,
            Prot::RW | Prot::MMIO | Prot::CACHE,
            "mmio + cache",
        ),
    ]
}

#[test]
fn s2_leaf_attrs_decode_and_effective_prot() {
    for (prot, l3, back, what) in l3_vectors() {
        assert_eq!(S2::leaf_attrs(3, prot), l3, "{what}: L3 page");
        // Blocks: type 0b01.
        let block = (l3 & !3) | 1;
        assert_eq!(S2::leaf_attrs(2, prot), block, "{what}: L2 block");
        assert_eq!(S2::leaf_attrs(1, prot), block, "{what}: L1 block");
        // Output address [47:12].
        let page = S2::leaf_with_addr(l3, DmaAddr(0x8_1234_5000));
        assert_eq!(page, 0x8_1234_5000 | l3, "{what}: with address");
        assert_eq!(
            S2::decode(3, page),
            Entry::Leaf(DmaAddr(0x8_1234_5000), back),
            "{what}: decode"
        );
        assert_eq!(S2::effective_prot(prot), back, "{what}: effective");
    }
    // S2AP 0b00 (HAP_FAULT): a valid page that grants nothing: 0x3 | 0x14 | 0x200 | 0x400
    // = 0x617.
    assert_eq!(
        S2::decode(3, 0x8_1234_5617),
        Entry::Leaf(DmaAddr(0x8_1234_5000), Prot::NONE)
    );
    // XN[0] alone (bit 53) is not execute-never without FEAT_XNX; XN[1] (bit 54) is.
    assert_eq!(
        S2::decode(3, 0x0020_0000_0000_0657),
        Entry::Leaf(DmaAddr(0), Prot::READ)
    );
    assert_eq!(
        S2::decode(3, 0x0040_0000_0000_0657),
        Entry::Leaf(DmaAddr(0), Prot::RO)
    );
    // Table: address | 0b11, at L0..L2; type 0b01 at L0 and at L3 is reserved.
    assert_eq!(S2::table_entry(0, DmaAddr(0x1000_3000)), 0x1000_3003);
    assert_eq!(
        S2::decode(2, 0x1000_3003),
        Entry::Table(DmaAddr(0x1000_3000))
    );
    assert_eq!(S2::decode(0, 0x7fd), Entry::Invalid);
    assert_eq!(S2::decode(3, 0x7fd), Entry::Invalid);
    // A 2 MiB block with stray low address bits: they are RES0, the block is 2 MiB aligned.
    assert_eq!(
        S2::decode(2, 0x8_0020_1000 | 0x7fd),
        Entry::Leaf(DmaAddr(0x8_0020_0000), Prot::RW | Prot::CACHE)
    );
}

#[test]
fn s2_map_page_and_block_raw() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<S2, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    assert_eq!(pt.root(), DmaAddr(0x1000_0000));
    // IPA 0x0080_4020_3000 = 1 << 39 | 1 << 30 | 1 << 21 | 3 << 12: indices [1, 1, 1, 3].
    pt.map(
        Iova(0x0080_4020_3000),
        DmaAddr(0x8_1234_5000),
        0x1000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    // root[1] (0x1000_0008) -> L1 0x1000_1000; L1[1] (0x1000_1008) -> L2 0x1000_2000;
    // L2[1] (0x1000_2008) -> L3 0x1000_3000; L3[3] (0x1000_3018) = 0x8_1234_5000 | 0x7ff.
    assert_eq!(raw64(&sim, 0x1000_0008), 0x1000_1003);
    assert_eq!(raw64(&sim, 0x1000_1008), 0x1000_2003);
    assert_eq!(raw64(&sim, 0x1000_2008), 0x1000_3003);
    assert_eq!(raw64(&sim, 0x1000_3018), 0x8_1234_57ff);
    let t = walk::<S2, _>(&sim, pt.root(), Iova(0x0080_4020_3abc)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1234_5abc));
    assert_eq!((t.level, t.prot), (3, Prot::RW | Prot::CACHE));

    // A 2 MiB read-only block at IPA 0x20_0000 (L0 0, L1 0, L2 1): root[0] -> L1 0x1000_4000,
    // L1[0] -> L2 0x1000_5000, L2[1] (0x1000_5008) = 0x8_0020_0000 | (0x0060_0000_0000_0657
    // with type 0b01) = 0x0060_0008_0020_0655.
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_0020_0000),
        0x20_0000,
        Prot::RO,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_0000), 0x1000_4003);
    assert_eq!(raw64(&sim, 0x1000_4000), 0x1000_5003);
    assert_eq!(raw64(&sim, 0x1000_5008), 0x0060_0008_0020_0655);
    let t = walk::<S2, _>(&sim, pt.root(), Iova(0x2f_fff0)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_002f_fff0));
    assert_eq!((t.level, t.leaf_size, t.prot), (2, 0x20_0000, Prot::RO));
    // Write-only mapping: the walker reports WRITE without READ.
    pt.map(
        Iova(0x1000),
        DmaAddr(0x9_0000_0000),
        0x1000,
        Prot::WRITE,
        &mut g,
    )
    .unwrap();
    let t = walk::<S2, _>(&sim, pt.root(), Iova(0x1000)).unwrap();
    assert_eq!(t.prot, Prot::WRITE);
}
