//! Encoding vectors for the RISC-V formats ([`RiscvSv39`], [`RiscvSv48`]). Every expected value
//! is worked out by hand in the comments from the RISC-V privileged spec (12.4 Sv39, 12.5 Sv48)
//! and drivers/iommu/generic_pt/fmt/riscv.h, never produced by the code under test:
//!
//! - bits: V 0x1, R 0x2, W 0x4, X 0x8, U 0x10, G 0x20, A 0x40, D 0x80, PPN [53:10] =
//!   (address >> 12) << 10;
//! - `riscvpt_iommu_set_prot`: A | U always, W | R | D for IOMMU_WRITE, R for IOMMU_READ, X
//!   unless IOMMU_NOEXEC (no Svpbmt); `riscvpt_install_leaf_entry` adds V and the PPN;
//! - `riscvpt_install_table`: V | PPN (R = W = X = 0).
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
fn riscv_geometry() {
    assert_eq!([0, 1, 2].map(RiscvSv39::level_shift), [30, 21, 12]);
    assert_eq!([0, 1, 2, 3].map(RiscvSv48::level_shift), [39, 30, 21, 12]);
    // Sv39: 4 KiB, 2 MiB, 1 GiB = 0x1000 | 0x20_0000 | 0x4000_0000.
    assert_eq!(RiscvSv39::page_sizes(), 0x4020_1000);
    // Sv48 adds 512 GiB terapages: | 0x80_0000_0000.
    assert_eq!(RiscvSv48::page_sizes(), 0x80_4020_1000);
    // 0x4020_3000 = 1 << 30 | 1 << 21 | 3 << 12: VPN[2..0] = 1, 1, 3.
    assert_eq!(
        [0, 1, 2].map(|l| RiscvSv39::index(l, 0x4020_3000)),
        [1, 1, 3]
    );
    // The non-negative half only: Sv39 IOVAs below 2^38, Sv48 below 2^47.
    assert_eq!((RiscvSv39::IOVA_BITS, RiscvSv48::IOVA_BITS), (38, 47));
}

#[test]
fn riscv_entries() {
    // (prot, leaf bits without the address, read back as)
    let vectors = [
        // V 0x1 | R 0x2 | W 0x4 | X 0x8 | U 0x10 | A 0x40 | D 0x80 = 0xdf.
        (Prot::RW, 0xdf, Prot::RW),
        // No X: 0xdf - 0x8 = 0xd7.
        (Prot::RW_NOEXEC, 0xd7, Prot::RW_NOEXEC),
        // V | R | U | A = 0x53 (no X).
        (Prot::RO, 0x53, Prot::RO),
        // 0x53 | X = 0x5b.
        (Prot::READ, 0x5b, Prot::READ),
        // Write implies R and D: 0xdf, read back read-write.
        (Prot::WRITE, 0xdf, Prot::RW),
        // PRIV, CACHE and MMIO have no bit here (U always set, no Svpbmt): 0xdf.
        (
            Prot::RW | Prot::PRIV | Prot::CACHE | Prot::MMIO,
            0xdf,
            Prot::RW,
        ),
    ];
    for (prot, bits, back) in vectors {
        for level in 0..3 {
            assert_eq!(RiscvSv39::leaf_attrs(level, prot), bits, "{prot}");
        }
        assert_eq!(RiscvSv48::leaf_attrs(3, prot), bits, "{prot}");
        // 0x8_1234_5000 >> 12 = 0x81_2345; << 10 = 0x2_048d_1400.
        let pte = RiscvSv39::leaf_with_addr(bits, DmaAddr(0x8_1234_5000));
        assert_eq!(pte, 0x2_048d_1400 | bits, "{prot}");
        assert_eq!(
            RiscvSv39::decode(2, pte),
            Entry::Leaf(DmaAddr(0x8_1234_5000), back)
        );
        assert_eq!(RiscvSv39::effective_prot(prot), back);
    }
    // The highest page of the 56-bit output: PPN all ones in [53:10] = 0x003f_ffff_ffff_fc00.
    assert_eq!(
        RiscvSv39::leaf_with_addr(0xdf, DmaAddr(0x00ff_ffff_ffff_f000)),
        0x003f_ffff_ffff_fcdf
    );
    // Table 0x1000_1000: 0x1_0001 << 10 = 0x400_0400, | V.
    assert_eq!(RiscvSv39::table_entry(0, DmaAddr(0x1000_1000)), 0x400_0401);
    assert_eq!(
        RiscvSv39::decode(0, 0x400_0401),
        Entry::Table(DmaAddr(0x1000_1000))
    );
    // A pointer at the last level, W without R, V clear: invalid (page faults).
    assert_eq!(RiscvSv39::decode(2, 0x400_0401), Entry::Invalid);
    assert_eq!(RiscvSv39::decode(2, 0x2_048d_1400 | 0xd5), Entry::Invalid);
    assert_eq!(RiscvSv39::decode(2, 0x2_048d_1400 | 0xde), Entry::Invalid);
    // A misaligned megapage (PPN[0] != 0): 0x8_1234_5000 is not 2 MiB aligned.
    assert_eq!(RiscvSv39::decode(1, 0x2_048d_1400 | 0xdf), Entry::Invalid);
    // A 2 MiB leaf at 0x8_0020_0000: >> 12 = 0x80_0200, << 10 = 0x2_0008_0000.
    assert_eq!(
        RiscvSv39::decode(1, 0x2_0008_00df),
        Entry::Leaf(DmaAddr(0x8_0020_0000), Prot::RW)
    );
}

#[test]
fn riscv_sv39_map_raw() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<RiscvSv39, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    assert_eq!(pt.root(), DmaAddr(0x1000_0000));
    pt.map(
        Iova(0x4020_3000),
        DmaAddr(0x8_1234_5000),
        0x1000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    // root[1] (0x1000_0008) -> 0x1000_1000: 0x400_0401; [1] of that (0x1000_1008) ->
    // 0x1000_2000: 0x1_0002 << 10 = 0x400_0800 | V; [3] of the last (0x1000_2018) = the page.
    assert_eq!(raw64(&sim, 0x1000_0008), 0x400_0401);
    assert_eq!(raw64(&sim, 0x1000_1008), 0x400_0801);
    assert_eq!(raw64(&sim, 0x1000_2018), 0x2_048d_14df);
    let t = walk::<RiscvSv39, _>(&sim, pt.root(), Iova(0x4020_3abc)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1234_5abc));
    assert_eq!((t.level, t.prot), (2, Prot::RW));

    // A 2 MiB megapage at IOVA 0x20_0000 (VPN 0, 1): root[0] -> 0x1000_3000 (0x400_0c01), its
    // [1] (0x1000_3008) = 0x2_0008_0000 (PPN of 0x8_0020_0000, as above) | 0xdf.
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_0020_0000),
        0x20_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_0000), 0x400_0c01);
    assert_eq!(raw64(&sim, 0x1000_3008), 0x2_0008_00df);
    let t = walk::<RiscvSv39, _>(&sim, pt.root(), Iova(0x3f_fff0)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_003f_fff0));
    assert_eq!((t.level, t.leaf_size), (1, 0x20_0000));
    // A 1 GiB gigapage at the root: IOVA 0x8000_0000 (root[2], 0x1000_0010) to 0x40_0000_0000:
    // 0x400_0000 << 10 = 0x10_0000_0000 | 0xdf.
    pt.map(
        Iova(0x8000_0000),
        DmaAddr(0x40_0000_0000),
        0x4000_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(raw64(&sim, 0x1000_0010), 0x10_0000_00df);
    let t = walk::<RiscvSv39, _>(&sim, pt.root(), Iova(0xbfff_ffff)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x40_3fff_ffff));
    assert_eq!((t.level, t.leaf_size), (0, 0x4000_0000));
    // Beyond the 38-bit space: an address-size fault.
    assert_eq!(
        walk::<RiscvSv39, _>(&sim, pt.root(), Iova(1 << 38)),
        Err(WalkFault::AddressSize {
            iova: Iova(1 << 38)
        })
    );
}
