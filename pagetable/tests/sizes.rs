//! Address sizes (`io_pgtable_cfg.ias` / `.oas`): which sizes each format accepts, the start
//! level a narrow input size gives ARM LPAE, the range checks against both sizes, the IPU6's
//! 31-bit aperture, and the IPU's root register (a 27-bit page number). Expected raw entries
//! are worked out by hand from io-pgtable-arm.c's encodings and ipu6-mmu.c.

mod common;

use common::{sync_gather, SimAlloc};
use devmmu_pagetable::*;

const PAGE: u64 = 0x1000;
const GIB: u64 = 1 << 30;

fn sized<F: Format>(sim: &SimAlloc, ias: u32, oas: u32) -> Result<PageTable<F, SimAlloc>, Error> {
    PageTable::with_address_sizes(
        sim.clone(),
        PageTableConfig::default(),
        AddressSizes { ias, oas },
    )
}

fn raw64(sim: &SimAlloc, addr: u64) -> u64 {
    sim.read_raw(DmaAddr(addr), 8, false).unwrap()
}

#[test]
fn sizes_a_format_cannot_have_are_refused_before_allocating() {
    let sim = SimAlloc::new();
    for (ias, oas, what, bits) in [
        (31, 48, "ias", 31),
        (49, 48, "ias", 49),
        (48, 38, "oas", 38),
        (48, 52, "oas", 52),
        (48, 31, "oas", 31),
    ] {
        assert_eq!(
            sized::<ArmLpae4k>(&sim, ias, oas).err(),
            Some(Error::BadAddressSize { what, bits }),
            "arm {ias}/{oas}"
        );
    }
    for (ias, oas, what, bits) in [
        (30, 44, "ias", 30),
        (33, 44, "ias", 33),
        (32, 40, "oas", 40),
    ] {
        assert_eq!(
            sized::<Ipu>(&sim, ias, oas).err(),
            Some(Error::BadAddressSize { what, bits }),
            "ipu {ias}/{oas}"
        );
    }
    assert_eq!(sim.total_allocs(), 0);
    // Every ARM size io-pgtable-arm.c can program: ias 32..=48, oas one of the TCR.IPS values.
    for ias in 32..=48 {
        for oas in [32, 36, 40, 42, 44, 48] {
            let pt = sized::<ArmLpae4k>(&sim, ias, oas).unwrap();
            assert_eq!(pt.address_sizes(), AddressSizes { ias, oas });
            // io-pgtable-arm.c: levels = DIV_ROUND_UP(ias - 12, 9); the root is level 4 - levels.
            let levels = (ias - 12).div_ceil(9) as usize;
            assert_eq!(pt.start_level(), 4 - levels, "ias {ias}");
        }
    }
    assert_eq!(
        PageTable::<Ipu, _>::new(sim.clone(), PageTableConfig::default())
            .unwrap()
            .address_sizes(),
        AddressSizes { ias: 32, oas: 44 }
    );
}

/// ARM LPAE with a 32-bit input: 3 levels, the root an L1 table of which entries 0..4 are used.
/// A 1 GiB block sits in the root itself; the walk starts at L1; IOVA 2^32 is out of range.
#[test]
fn arm_32_bit_input_walks_three_levels_from_l1() {
    let sim = SimAlloc::new();
    let mut pt = sized::<ArmLpae4k>(&sim, 32, 40).unwrap();
    let sizes = pt.address_sizes();
    assert_eq!(pt.start_level(), 1);
    let root = pt.root().0;
    let mut g = Gather::new();
    // 1 GiB block at IOVA 1 GiB -> bus 3 GiB: root[1] = 0xc000_0000 | NG AF SH=OS UNPRIV BLOCK
    // (0x800 | 0x400 | 0x200 | 0x40 | 0x1 = 0xe41).
    pt.map(Iova(GIB), DmaAddr(3 * GIB), GIB, Prot::RW, &mut g)
        .unwrap();
    assert_eq!(raw64(&sim, root + 8), 0xc000_0e41);
    // The last page of the space: root[3] -> L2[511] -> L3[511].
    pt.map(
        Iova((1 << 32) - PAGE),
        DmaAddr(0x80_0000_0000 - PAGE),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    let l2 = raw64(&sim, root + 3 * 8);
    assert_eq!(l2 & 3, 3, "table descriptor");
    let t = walk_with::<ArmLpae4k, _>(&sim, pt.root(), Iova((1 << 32) - 1), sizes).unwrap();
    assert_eq!((t.dma, t.level), (DmaAddr(0x80_0000_0000 - 1), 3));
    let t = walk_with::<ArmLpae4k, _>(&sim, pt.root(), Iova(GIB + 0x1234), sizes).unwrap();
    assert_eq!(
        (t.dma, t.level, t.leaf_size),
        (DmaAddr(3 * GIB + 0x1234), 1, GIB)
    );
    assert_eq!(
        pt.translate(Iova(GIB + 0x1234)),
        Some((DmaAddr(3 * GIB + 0x1234), Prot::RW))
    );
    assert_eq!(
        walk_with::<ArmLpae4k, _>(&sim, pt.root(), Iova(1 << 32), sizes),
        Err(WalkFault::AddressSize {
            iova: Iova(1 << 32)
        })
    );
    assert_eq!(pt.translate(Iova(1 << 32)), None);
    // Out of the input range, and out of the 40-bit output range: refused, nothing written.
    let before = sim.snapshot();
    assert_eq!(
        pt.map(
            Iova((1 << 32) - PAGE),
            DmaAddr(0),
            2 * PAGE,
            Prot::RW,
            &mut g
        ),
        Err(Error::OutOfRange {
            what: "iova",
            value: (1 << 32) + PAGE,
            limit: 1 << 32
        })
    );
    assert_eq!(
        pt.map(
            Iova(0),
            DmaAddr((1 << 40) - PAGE),
            2 * PAGE,
            Prot::RW,
            &mut g
        ),
        Err(Error::OutOfRange {
            what: "dma address",
            value: (1 << 40) + PAGE,
            limit: 1 << 40
        })
    );
    assert_eq!(
        pt.unmap(Iova(0), (1 << 32) + PAGE, &mut g),
        Err(Error::OutOfRange {
            what: "iova",
            value: (1 << 32) + PAGE,
            limit: 1 << 32
        })
    );
    assert_eq!(sim.snapshot(), before);
    // Everything unmaps; only the root is left.
    assert_eq!(pt.unmap(Iova(0), 1 << 32, &mut g), Ok(GIB + PAGE));
    sync_gather(&mut pt, &mut g);
    assert_eq!((pt.table_count(), sim.live_pages()), (1, 1));
}

/// Table pages must fit the output size too: a 40-bit table refuses a table page at 2^40 (the
/// root at creation, a new table later), and the walker faults on an entry beyond `oas`.
#[test]
fn arm_output_size_bounds_table_pages_and_the_walk() {
    let sim = SimAlloc::with_base(1 << 40);
    assert_eq!(
        sized::<ArmLpae4k>(&sim, 48, 40).err(),
        Some(Error::BadTableAddr { dma: 1 << 40 })
    );
    assert_eq!(sim.live_pages(), 0);
    assert!(sized::<ArmLpae4k>(&sim, 48, 42).is_ok());

    let sim = SimAlloc::new();
    let mut pt = PageTable::<ArmLpae4k, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    pt.map(Iova(0), DmaAddr(1 << 41), PAGE, Prot::RW, &mut g)
        .unwrap();
    let narrow = AddressSizes { ias: 48, oas: 40 };
    assert_eq!(
        walk_with::<ArmLpae4k, _>(&sim, pt.root(), Iova(0x10), narrow),
        Err(WalkFault::AddressSize { iova: Iova(0x10) })
    );
    assert!(walk_with::<ArmLpae4k, _>(
        &sim,
        pt.root(),
        Iova(0x10),
        AddressSizes::of::<ArmLpae4k>()
    )
    .is_ok());
}

/// The IPU's L1 base register holds a 27-bit page number (ipu3-mmu.c and ipu6-mmu.c:
/// `REG_L1_PHYS`, "27-bit pfn"): a root at 2^39 is refused, the dummy pages below it given
/// back; L2 tables, reached through 32-bit entries, may lie up to 2^44.
#[test]
fn ipu_root_must_fit_the_l1_register() {
    // Dummy page, dummy L2, then the root at 2^39.
    let sim = SimAlloc::with_base((1 << 39) - 2 * PAGE);
    let r = PageTable::<Ipu, _>::new(sim.clone(), PageTableConfig::default());
    assert_eq!(r.err(), Some(Error::BadTableAddr { dma: 1 << 39 }));
    assert_eq!(sim.live_pages(), 0);
    // Root just below 2^39; its first L2 table above 2^39.
    let sim = SimAlloc::with_base((1 << 39) - 3 * PAGE);
    let mut pt = PageTable::<Ipu, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    assert_eq!(pt.root(), DmaAddr((1 << 39) - PAGE));
    let mut g = Gather::new();
    pt.map(
        Iova(0x40_0000),
        DmaAddr(0x1000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    // L1[1] = (2^39 >> 12) = 0x800_0000.
    assert_eq!(
        sim.read_raw(DmaAddr((1 << 39) - PAGE + 4), 4, false),
        Some(0x800_0000)
    );
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x40_0010)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x1000_0010));
}

/// The IPU6 in non-secure mode: a 31-bit aperture (`IPU6_MMU_ADDR_BITS_NON_SECURE`). The same
/// two-level walk; IOVAs from 2 GiB are refused, and the walker reports them as address-size
/// faults instead of the dummy page.
#[test]
fn ipu6_non_secure_aperture_is_31_bits() {
    let sim = SimAlloc::new();
    let mut pt = sized::<Ipu>(&sim, 31, 44).unwrap();
    let sizes = pt.address_sizes();
    assert_eq!(pt.start_level(), 0);
    let mut g = Gather::new();
    pt.map(
        Iova(0x7fff_f000),
        DmaAddr(0x9_0000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(
        pt.map(
            Iova(0x8000_0000),
            DmaAddr(0x9_0000_0000),
            PAGE,
            Prot::RW,
            &mut g
        ),
        Err(Error::OutOfRange {
            what: "iova",
            value: 0x8000_1000,
            limit: 0x8000_0000
        })
    );
    let t = walk_with::<Ipu, _>(&sim, pt.root(), Iova(0x7fff_f008), sizes).unwrap();
    assert_eq!(t.dma, DmaAddr(0x9_0000_0008));
    assert_eq!(
        walk_with::<Ipu, _>(&sim, pt.root(), Iova(0x8000_0000), sizes),
        Err(WalkFault::AddressSize {
            iova: Iova(0x8000_0000)
        })
    );
}
