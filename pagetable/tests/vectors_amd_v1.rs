//! Encoding vectors for the AMD IOMMU v1 format ([`AmdV1`]). Every expected value is worked
//! out by hand in the comments from drivers/iommu/generic_pt/fmt/amdv1.h and the AMD IOMMU
//! specification 2.2.3, never produced by the code under test:
//!
//! - PR bit 0 (0x1), NextLevel [11:9], address [51:12], IR bit 61 (0x2000_0000_0000_0000),
//!   IW bit 62 (0x4000_0000_0000_0000);
//! - a leaf: PR | NextLevel 0 | address | IR for read | IW for write;
//! - a table (`amdv1pt_install_table`): PR | NextLevel | address | IR | IW, NextLevel being the
//!   AMD level of the table pointed at: 3 from the root of a 4-level table (0x3 << 9 = 0x600),
//!   then 2 (0x400), then 1 (0x200).
//!
//! Table addresses: [`SimAlloc`] hands out 4 KiB pages at 0x1000_0000 + 4 KiB x slot, root
//! first.

mod common;

use common::SimAlloc;
use devmmu_pagetable::*;

const IR: u64 = 0x2000_0000_0000_0000;
const IW: u64 = 0x4000_0000_0000_0000;

fn raw64(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 8)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

#[test]
fn amd_v1_entries() {
    // (prot, leaf bits, read back as)
    let vectors = [
        (Prot::RW, IR | IW | 0x1, Prot::RW),
        (Prot::RO, IR | 0x1, Prot::READ),
        (Prot::WRITE, IW | 0x1, Prot::WRITE),
        (
            Prot::RW_NOEXEC | Prot::PRIV | Prot::CACHE | Prot::MMIO,
            IR | IW | 0x1,
            Prot::RW,
        ),
    ];
    for (prot, bits, back) in vectors {
        for level in 1..4 {
            assert_eq!(AmdV1::leaf_attrs(level, prot), bits, "{prot}");
        }
        // 0x8_1234_5000 in [51:12]: RW = 0x6000_0008_1234_5001.
        let pte = AmdV1::leaf_with_addr(bits, DmaAddr(0x8_1234_5000));
        assert_eq!(pte, bits | 0x8_1234_5000);
        assert_eq!(
            AmdV1::decode(3, pte),
            Entry::Leaf(DmaAddr(0x8_1234_5000), back)
        );
        assert_eq!(AmdV1::effective_prot(prot), back);
    }
    assert_eq!(
        AmdV1::leaf_with_addr(IR | IW | 1, DmaAddr(0x8_1234_5000)),
        0x6000_0008_1234_5001
    );
    // Tables: NextLevel 3, 2, 1 from levels 0, 1, 2.
    assert_eq!(
        AmdV1::table_entry(0, DmaAddr(0x1000_1000)),
        0x6000_0000_1000_1601
    );
    assert_eq!(
        AmdV1::table_entry(1, DmaAddr(0x1000_2000)),
        0x6000_0000_1000_2401
    );
    assert_eq!(
        AmdV1::table_entry(2, DmaAddr(0x1000_3000)),
        0x6000_0000_1000_3201
    );
    assert_eq!(
        AmdV1::decode(1, 0x6000_0000_1000_2401),
        Entry::Table(DmaAddr(0x1000_2000))
    );
    // A 2 MiB leaf (NextLevel 0 at level 2): 0x6000_0008_0020_0001.
    assert_eq!(
        AmdV1::decode(2, 0x6000_0008_0020_0001),
        Entry::Leaf(DmaAddr(0x8_0020_0000), Prot::RW)
    );
    // Not supported or not valid: a level skip (NextLevel 1 from the root, 0x200), NextLevel
    // 7 (0xe00), a 512 GiB leaf at the root, PR clear, a PDE in a PTE table, a misaligned
    // 2 MiB leaf.
    assert_eq!(AmdV1::decode(0, 0x6000_0000_1000_1201), Entry::Invalid);
    assert_eq!(AmdV1::decode(3, 0x6000_0008_1234_5e01), Entry::Invalid);
    assert_eq!(AmdV1::decode(0, 0x6000_0080_0000_0001), Entry::Invalid);
    assert_eq!(AmdV1::decode(3, 0x6000_0008_1234_5000), Entry::Invalid);
    assert_eq!(AmdV1::decode(3, 0x6000_0000_1000_3201), Entry::Invalid);
    assert_eq!(AmdV1::decode(2, 0x6000_0008_0020_1001), Entry::Invalid);
}

#[test]
fn amd_v1_map_raw() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<AmdV1, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    // IOVA 0x0080_4020_3000 = 1 << 39 | 1 << 30 | 1 << 21 | 3 << 12: indices [1, 1, 1, 3].
    pt.map(
        Iova(0x0080_4020_3000),
        DmaAddr(0x8_1234_5000),
        0x1000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_0008), 0x6000_0000_1000_1601);
    assert_eq!(raw64(&sim, 0x1000_1008), 0x6000_0000_1000_2401);
    assert_eq!(raw64(&sim, 0x1000_2008), 0x6000_0000_1000_3201);
    assert_eq!(raw64(&sim, 0x1000_3018), 0x6000_0008_1234_5001);
    let t = walk::<AmdV1, _>(&sim, pt.root(), Iova(0x0080_4020_3abc)).unwrap();
    assert_eq!((t.dma, t.prot), (DmaAddr(0x8_1234_5abc), Prot::RW));
    // A 1 GiB read-only leaf at IOVA 0x4000_0000 (root[0] -> new table 0x1000_4000, its [1]
    // at 0x1000_4008) to 0x80_4000_0000: IR | 0x80_4000_0000 | PR = 0x2000_0080_4000_0001.
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x80_4000_0000),
        0x4000_0000,
        Prot::RO,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_0000), 0x6000_0000_1000_4601);
    assert_eq!(raw64(&sim, 0x1000_4008), 0x2000_0080_4000_0001);
    let t = walk::<AmdV1, _>(&sim, pt.root(), Iova(0x7fff_fff0)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x80_7fff_fff0));
    assert_eq!((t.level, t.leaf_size, t.prot), (1, 0x4000_0000, Prot::READ));
    // Mode 3 (3 levels) up to 39-bit input, Mode 4 above.
    assert_eq!(AddressSizes { ias: 39, oas: 52 }.start_level::<AmdV1>(), 1);
    assert_eq!(AddressSizes { ias: 40, oas: 52 }.start_level::<AmdV1>(), 0);
}
