//! Encoding vectors for the Intel VT-d second-stage format ([`VtdSs`]). Every expected value is
//! worked out by hand in the comments from drivers/iommu/generic_pt/fmt/vtdss.h and the VT-d
//! specification 9.8, never produced by the code under test:
//!
//! - R bit 0 (0x1), W bit 1 (0x2), PS bit 7 (0x80) on a 2 MiB or 1 GiB leaf, address [51:12];
//! - `vtdss_pt_install_table`: R | W | table address = table | 0x3;
//! - no present bit: R = W = 0 is not present.
//!
//! Table addresses: [`SimAlloc`] hands out 4 KiB pages at 0x1000_0000 + 4 KiB x slot, root
//! first.

mod common;

use common::SimAlloc;
use devmmu_pagetable::*;

fn raw64(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_pte(DmaAddr(addr), 8)
        .unwrap_or_else(|| panic!("no live table at {addr:#x}"))
}

#[test]
fn vtd_ss_entries() {
    // (prot, SL-PTE bits, read back as)
    let vectors = [
        (Prot::RW, 0x3, Prot::RW),
        // NOEXEC, PRIV, CACHE, MMIO: no bit; RO = READ | NOEXEC reads back READ.
        (Prot::RO, 0x1, Prot::READ),
        (
            Prot::RW_NOEXEC | Prot::PRIV | Prot::CACHE | Prot::MMIO,
            0x3,
            Prot::RW,
        ),
        // Write-only exists: W alone.
        (Prot::WRITE, 0x2, Prot::WRITE),
    ];
    for (prot, bits, back) in vectors {
        assert_eq!(VtdSs::leaf_attrs(3, prot), bits, "{prot}");
        // Large pages add PS 0x80.
        assert_eq!(VtdSs::leaf_attrs(2, prot), bits | 0x80, "{prot}");
        assert_eq!(VtdSs::leaf_attrs(1, prot), bits | 0x80, "{prot}");
        let pte = VtdSs::leaf_with_addr(bits, DmaAddr(0x8_1234_5000));
        assert_eq!(pte, 0x8_1234_5000 | bits);
        assert_eq!(
            VtdSs::decode(3, pte),
            Entry::Leaf(DmaAddr(0x8_1234_5000), back)
        );
        assert_eq!(VtdSs::effective_prot(prot), back);
    }
    // The highest page of the 52-bit output: 0xf_ffff_ffff_f000 | 0x3.
    assert_eq!(
        VtdSs::leaf_with_addr(0x3, DmaAddr(0xf_ffff_ffff_f000)),
        0xf_ffff_ffff_f003
    );
    // Table entries: 0x1000_1000 | 0x3, a table at L0..L2.
    assert_eq!(VtdSs::table_entry(0, DmaAddr(0x1000_1000)), 0x1000_1003);
    for level in 0..3 {
        assert_eq!(
            VtdSs::decode(level, 0x1000_1003),
            Entry::Table(DmaAddr(0x1000_1000))
        );
    }
    // A 2 MiB leaf: 0x8_0020_0000 | PS 0x80 | 0x3 = 0x8_0020_0083; 1 GiB: 0x80_4000_0083.
    assert_eq!(
        VtdSs::decode(2, 0x8_0020_0083),
        Entry::Leaf(DmaAddr(0x8_0020_0000), Prot::RW)
    );
    assert_eq!(
        VtdSs::decode(1, 0x80_4000_0083),
        Entry::Leaf(DmaAddr(0x80_4000_0000), Prot::RW)
    );
    // Not present (R = W = 0, whatever else), PS at the SL-PML4E, a misaligned 2 MiB page.
    assert_eq!(VtdSs::decode(3, 0x8_1234_5080), Entry::Invalid);
    assert_eq!(VtdSs::decode(0, 0x80_4000_0083), Entry::Invalid);
    assert_eq!(VtdSs::decode(2, 0x8_0020_1083), Entry::Invalid);
}

#[test]
fn vtd_ss_map_raw() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<VtdSs, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
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
    // root[1] (0x1000_0008) -> 0x1000_1003; [1] of that (0x1000_1008) -> 0x1000_2003;
    // [1] (0x1000_2008) -> 0x1000_3003; SL-PTE [3] (0x1000_3018) = 0x8_1234_5003.
    assert_eq!(raw64(&sim, 0x1000_0008), 0x1000_1003);
    assert_eq!(raw64(&sim, 0x1000_1008), 0x1000_2003);
    assert_eq!(raw64(&sim, 0x1000_2008), 0x1000_3003);
    assert_eq!(raw64(&sim, 0x1000_3018), 0x8_1234_5003);
    let t = walk::<VtdSs, _>(&sim, pt.root(), Iova(0x0080_4020_3abc)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1234_5abc));
    // A 2 MiB write-only page at IOVA 0x20_0000: root[0] -> 0x1000_4003, -> 0x1000_5003,
    // [1] (0x1000_5008) = 0x8_0020_0000 | PS 0x80 | W 0x2 = 0x8_0020_0082.
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_0020_0000),
        0x20_0000,
        Prot::WRITE,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_0000), 0x1000_4003);
    assert_eq!(raw64(&sim, 0x1000_4000), 0x1000_5003);
    assert_eq!(raw64(&sim, 0x1000_5008), 0x8_0020_0082);
    let t = walk::<VtdSs, _>(&sim, pt.root(), Iova(0x3f_fff0)).unwrap();
    assert_eq!((t.dma, t.prot), (DmaAddr(0x8_003f_fff0), Prot::WRITE));
    assert_eq!((t.level, t.leaf_size), (2, 0x20_0000));
    // 39-bit input: 3 levels from the SL-PDPE (AW = 1).
    assert_eq!(AddressSizes { ias: 39, oas: 52 }.start_level::<VtdSs>(), 1);
    assert_eq!(AddressSizes { ias: 40, oas: 52 }.start_level::<VtdSs>(), 0);
}
