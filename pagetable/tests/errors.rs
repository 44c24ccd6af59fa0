//! Every error path of `PageTable`, each followed by the proof that nothing changed: the leaves
//! (`mappings()`), the raw bytes of every live table page, the live-page count and the table
//! count are the same after the refused call (and its `iotlb_sync`) as before; for a
//! non-coherent walker the device copy of every live page still matches the CPU bytes.

mod common;

use common::{sync_gather, table_state, SimAlloc, HIGH_BASE};
use devmmu_pagetable::*;

type Arm = ArmLpae4k;
type Pt<F> = PageTable<F, SimAlloc>;

const PAGE: u64 = 0x1000;
/// The pre-existing mapping of [`fixture`]: 64 pages at IOVA 4 MiB.
const PRE_IOVA: u64 = 0x40_0000;
const PRE_DMA: u64 = 0x4000_0000;
const PRE_SIZE: u64 = 64 * PAGE;

/// A table with 64 pages mapped at [`PRE_IOVA`], so refused calls have live tables to damage.
fn fixture<F: Format>(coherent: bool) -> (SimAlloc, Pt<F>) {
    let sim = SimAlloc::new();
    sim.set_walker_reads_device(!coherent);
    let mut pt = PageTable::new(
        sim.clone(),
        PageTableConfig {
            coherent_walk: coherent,
        },
    )
    .unwrap();
    let mut g = Gather::new();
    pt.map(Iova(PRE_IOVA), DmaAddr(PRE_DMA), PRE_SIZE, Prot::RW, &mut g)
        .unwrap();
    sync_gather(&mut pt, &mut g);
    (sim, pt)
}

/// Runs `op`, expects `expected`, and checks it was refused before touching anything: no change
/// to the table, no allocation, no sync, nothing gathered.
fn refused<F: Format, T: std::fmt::Debug>(
    pt: &mut Pt<F>,
    sim: &SimAlloc,
    expected: Error,
    op: impl FnOnce(&mut Pt<F>, &mut Gather) -> Result<T, Error>,
) {
    let before = table_state(pt, sim);
    let allocs = sim.total_allocs();
    let stats = pt.stats();
    sim.clear_sync_log();
    let mut g = Gather::new();
    let r = op(pt, &mut g);
    assert_eq!(r.unwrap_err(), expected);
    assert!(g.is_empty(), "a refused call gathered {g:?}");
    assert!(sim.sync_log().is_empty(), "a refused call synced");
    assert_eq!(sim.total_allocs(), allocs, "a refused call allocated");
    assert_eq!(pt.stats(), stats, "a refused call changed the counters");
    assert_eq!(table_state(pt, sim), before);
}

/// After a call that may have written and undone (NoMemory, BadTableAddr): completes the gather
/// and checks the table is as `before`, with no stale line for a non-coherent walker.
fn undone<F: Format>(pt: &mut Pt<F>, sim: &SimAlloc, g: &mut Gather, before: &common::TableState) {
    sync_gather(pt, g);
    assert_eq!(&table_state(pt, sim), before);
    if !pt.coherent_walk() {
        assert_eq!(
            sim.stale_pages(),
            vec![],
            "device view differs from CPU after the undo"
        );
    }
    // The walker (CPU or device view) still sees the pre-existing mapping.
    for off in [0, PAGE, PRE_SIZE - PAGE] {
        let t = walk::<F, _>(sim, pt.root(), Iova(PRE_IOVA + off)).unwrap();
        assert_eq!(t.dma, DmaAddr(PRE_DMA + off));
    }
}

// ---------------------------------------------------------------------------------------------

fn zero_size<F: Format>() {
    let (sim, mut pt) = fixture::<F>(false);
    let d = DmaAddr(0x8000_0000);
    refused(&mut pt, &sim, Error::ZeroSize, |pt, g| {
        pt.map(Iova(0x100_0000), d, 0, Prot::RW, g)
    });
    refused(&mut pt, &sim, Error::ZeroSize, |pt, g| {
        pt.map_segments(Iova(0x100_0000), &[], Prot::RW, g)
    });
    refused(&mut pt, &sim, Error::ZeroSize, |pt, g| {
        pt.map_segments(Iova(0x100_0000), &[(d, PAGE), (d + PAGE, 0)], Prot::RW, g)
    });
    refused(&mut pt, &sim, Error::ZeroSize, |pt, g| {
        pt.unmap(Iova(PRE_IOVA), 0, g)
    });
}

#[test]
fn zero_size_arm() {
    zero_size::<Arm>();
}

#[test]
fn zero_size_ipu() {
    zero_size::<Ipu>();
}

fn misaligned<F: Format>() {
    let (sim, mut pt) = fixture::<F>(false);
    let d = DmaAddr(0x8000_0000);
    let mis = |what, value| Error::Misaligned {
        what,
        value,
        align: PAGE,
    };
    refused(&mut pt, &sim, mis("iova", 0x100_0800), |pt, g| {
        pt.map(Iova(0x100_0800), d, PAGE, Prot::RW, g)
    });
    refused(&mut pt, &sim, mis("dma address", 0x8000_0200), |pt, g| {
        pt.map(Iova(0x100_0000), DmaAddr(0x8000_0200), PAGE, Prot::RW, g)
    });
    // map() hands its size to the segment check, so a misaligned size is reported as the
    // length of its single segment.
    refused(&mut pt, &sim, mis("segment length", 0x1800), |pt, g| {
        pt.map(Iova(0x100_0000), d, 0x1800, Prot::RW, g)
    });
    // The second of three segments is one byte short of a page.
    refused(&mut pt, &sim, mis("segment length", 0xfff), |pt, g| {
        pt.map_segments(
            Iova(0x100_0000),
            &[(d, PAGE), (d + 0x10_0000, 0xfff), (d + 0x20_0000, PAGE)],
            Prot::RW,
            g,
        )
    });
    refused(&mut pt, &sim, mis("dma address", 0x8010_0010), |pt, g| {
        pt.map_segments(
            Iova(0x100_0000),
            &[(d, PAGE), (d + 0x10_0010, PAGE)],
            Prot::RW,
            g,
        )
    });
    refused(&mut pt, &sim, mis("iova", PRE_IOVA + 4), |pt, g| {
        pt.unmap(Iova(PRE_IOVA + 4), PAGE, g)
    });
    refused(&mut pt, &sim, mis("size", 0x10), |pt, g| {
        pt.unmap(Iova(PRE_IOVA), 0x10, g)
    });
}

#[test]
fn misaligned_arm() {
    misaligned::<Arm>();
}

#[test]
fn misaligned_ipu() {
    misaligned::<Ipu>();
}

fn overflow<F: Format>() {
    let (sim, mut pt) = fixture::<F>(false);
    // The last page of the 64-bit space.
    let top = !(PAGE - 1);
    refused(
        &mut pt,
        &sim,
        Error::Overflow {
            start: top,
            size: 2 * PAGE,
        },
        |pt, g| pt.map(Iova(top), DmaAddr(0x8000_0000), 2 * PAGE, Prot::RW, g),
    );
    refused(
        &mut pt,
        &sim,
        Error::Overflow {
            start: top,
            size: 2 * PAGE,
        },
        |pt, g| pt.map(Iova(0x100_0000), DmaAddr(top), 2 * PAGE, Prot::RW, g),
    );
    refused(
        &mut pt,
        &sim,
        Error::Overflow {
            start: top,
            size: 2 * PAGE,
        },
        |pt, g| pt.unmap(Iova(top), 2 * PAGE, g),
    );
}

#[test]
fn overflow_arm() {
    overflow::<Arm>();
}

#[test]
fn overflow_ipu() {
    overflow::<Ipu>();
}

/// The segments' lengths sum past 2^64 although each one is in range: 65536 segments of 2^48
/// bytes (the whole ARM output space each).
#[test]
fn overflow_of_segment_total() {
    let (sim, mut pt) = fixture::<Arm>(false);
    let segs = vec![(DmaAddr(0), 1u64 << 48); 1 << 16];
    let before = table_state(&pt, &sim);
    let mut g = Gather::new();
    let r = pt.map_segments(Iova(0), &segs, Prot::RW, &mut g);
    assert!(matches!(r, Err(Error::Overflow { start: 0, .. })), "{r:?}");
    assert!(g.is_empty());
    assert_eq!(table_state(&pt, &sim), before);
}

fn out_of_range<F: Format>(iova_limit: u64, dma_limit: u64) {
    let (sim, mut pt) = fixture::<F>(false);
    let d = DmaAddr(0x8000_0000);
    let oor_iova = |value| Error::OutOfRange {
        what: "iova",
        value,
        limit: iova_limit,
    };
    let oor_dma = |value| Error::OutOfRange {
        what: "dma address",
        value,
        limit: dma_limit,
    };
    // Crossing the top of the IOVA space by one page.
    refused(&mut pt, &sim, oor_iova(iova_limit + PAGE), |pt, g| {
        pt.map(Iova(iova_limit - PAGE), d, 2 * PAGE, Prot::RW, g)
    });
    // Starting at it.
    refused(&mut pt, &sim, oor_iova(iova_limit + PAGE), |pt, g| {
        pt.map(Iova(iova_limit), d, PAGE, Prot::RW, g)
    });
    refused(&mut pt, &sim, oor_iova(iova_limit + PAGE), |pt, g| {
        pt.unmap(Iova(iova_limit - PAGE), 2 * PAGE, g)
    });
    // The bus address crossing the format's output width.
    refused(&mut pt, &sim, oor_dma(dma_limit + PAGE), |pt, g| {
        pt.map(
            Iova(0x100_0000),
            DmaAddr(dma_limit - PAGE),
            2 * PAGE,
            Prot::RW,
            g,
        )
    });
    refused(&mut pt, &sim, oor_dma(dma_limit + 2 * PAGE), |pt, g| {
        pt.map_segments(
            Iova(0x100_0000),
            &[(d, PAGE), (DmaAddr(dma_limit + PAGE), PAGE)],
            Prot::RW,
            g,
        )
    });
    // The last page of both spaces is fine.
    let mut g = Gather::new();
    pt.map(
        Iova(iova_limit - PAGE),
        DmaAddr(dma_limit - PAGE),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    let t = walk::<F, _>(&sim, pt.root(), Iova(iova_limit - 1)).unwrap();
    assert_eq!(t.dma, DmaAddr(dma_limit - 1));
    assert_eq!(pt.unmap(Iova(iova_limit - PAGE), PAGE, &mut g), Ok(PAGE));
    sync_gather(&mut pt, &mut g);
}

#[test]
fn out_of_range_arm() {
    out_of_range::<Arm>(1 << 48, 1 << 48);
}

#[test]
fn out_of_range_ipu() {
    out_of_range::<Ipu>(1 << 32, 1 << 44);
}

fn no_access<F: Format>() {
    let (sim, mut pt) = fixture::<F>(false);
    for prot in [
        Prot::NONE,
        Prot::NOEXEC,
        Prot::CACHE | Prot::MMIO | Prot::PRIV | Prot::NOEXEC,
    ] {
        refused(&mut pt, &sim, Error::NoAccess { prot }, |pt, g| {
            pt.map(Iova(0x100_0000), DmaAddr(0x8000_0000), PAGE, prot, g)
        });
    }
}

#[test]
fn no_access_arm() {
    no_access::<Arm>();
}

#[test]
fn no_access_ipu() {
    no_access::<Ipu>();
}

fn already_mapped<F: Format>() {
    let (sim, mut pt) = fixture::<F>(false);
    let d = DmaAddr(0x8000_0000);
    let at = |iova| Error::AlreadyMapped { iova: Iova(iova) };
    // A range covering the whole existing mapping and more on both sides.
    refused(&mut pt, &sim, at(PRE_IOVA), |pt, g| {
        pt.map(Iova(PRE_IOVA - 0x10_0000), d, 0x20_0000, Prot::RW, g)
    });
    // Overlapping only its last page.
    refused(&mut pt, &sim, at(PRE_IOVA + PRE_SIZE - PAGE), |pt, g| {
        pt.map(Iova(PRE_IOVA + PRE_SIZE - PAGE), d, 4 * PAGE, Prot::RW, g)
    });
    // A few pages mapped in the middle of a fresh range: the lowest of them is reported.
    let mut g = Gather::new();
    pt.map(Iova(0x80_8000), d, 4 * PAGE, Prot::RW, &mut g)
        .unwrap();
    sync_gather(&mut pt, &mut g);
    refused(&mut pt, &sim, at(0x80_8000), |pt, g| {
        pt.map(Iova(0x80_0000), d, 32 * PAGE, Prot::RW, g)
    });
    refused(&mut pt, &sim, at(0x80_b000), |pt, g| {
        pt.map(Iova(0x80_b000), d, PAGE, Prot::RW, g)
    });
    // Through a scatter-gather list: the third segment lands on the mapped pages.
    refused(&mut pt, &sim, at(0x80_8000), |pt, g| {
        pt.map_segments(
            Iova(0x80_6000),
            &[(d, PAGE), (d + 0x10_0000, PAGE), (d + 0x20_0000, 8 * PAGE)],
            Prot::RW,
            g,
        )
    });
    // Across an L1 entry of the IPU (4 MiB) / within one L2 table of ARM: from 3 MiB to 5 MiB.
    refused(&mut pt, &sim, at(PRE_IOVA), |pt, g| {
        pt.map(Iova(0x30_0000), d, 0x20_0000, Prot::RW, g)
    });
}

#[test]
fn already_mapped_arm() {
    already_mapped::<Arm>();
}

#[test]
fn already_mapped_ipu() {
    already_mapped::<Ipu>();
}

#[test]
fn already_mapped_blocks_arm() {
    let (sim, mut pt) = fixture::<Arm>(false);
    let mut g = Gather::new();
    let at = |iova| Error::AlreadyMapped { iova: Iova(iova) };
    // A 2 MiB block at 8 MiB and a 1 GiB block at 1 GiB.
    pt.map(
        Iova(0x80_0000),
        DmaAddr(0x1_0000_0000),
        0x20_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x80_0000_0000),
        0x4000_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    sync_gather(&mut pt, &mut g);
    assert_eq!(
        pt.mappings().filter(|m| m.size > PAGE).count(),
        2,
        "fixture should hold two blocks"
    );
    let d = DmaAddr(0x8000_0000);
    // One page inside the 2 MiB block: reported at the page itself (the lowest mapped IOVA of
    // the requested range), not at the block's start.
    refused(&mut pt, &sim, at(0x80_5000), |pt, g| {
        pt.map(Iova(0x80_5000), d, PAGE, Prot::RW, g)
    });
    // A range ending inside the block.
    refused(&mut pt, &sim, at(0x80_0000), |pt, g| {
        pt.map(Iova(0x70_0000), d, 0x20_0000, Prot::RW, g)
    });
    // A 2 MiB-aligned, block-sized request over part of the 1 GiB block.
    refused(&mut pt, &sim, at(0x5000_0000), |pt, g| {
        pt.map(
            Iova(0x5000_0000),
            DmaAddr(0x1_0000_0000),
            0x20_0000,
            Prot::RW,
            g,
        )
    });
    // A range from below the 1 GiB block into it.
    refused(&mut pt, &sim, at(0x4000_0000), |pt, g| {
        pt.map(Iova(0x3fe0_0000), d, 0x40_0000, Prot::RW, g)
    });
}

// ---------------------------------------------------------------------------------------------
// NoMemory / BadTableAddr at every allocation point

/// Fails the map at allocation 0, 1, 2, ... until it succeeds; every failure must be undone.
/// Returns the number of allocations the successful map made.
fn fail_each_alloc<F: Format>(
    coherent: bool,
    iova: Iova,
    segs: &[(DmaAddr, u64)],
    inject: impl Fn(&SimAlloc, usize),
    expect_err: impl Fn(&Error) -> bool,
) -> (SimAlloc, Pt<F>, usize) {
    let (sim, mut pt) = fixture::<F>(coherent);
    let before = table_state(&pt, &sim);
    for k in 0.. {
        assert!(k < 64, "map still failing after {k} injected faults");
        let allocs = sim.total_allocs();
        inject(&sim, k);
        let mut g = Gather::new();
        match pt.map_segments(iova, segs, Prot::RW, &mut g) {
            Err(e) => {
                assert!(expect_err(&e), "fault at allocation {k}: got {e:?}");
                undone(&mut pt, &sim, &mut g, &before);
            }
            Ok(()) => {
                sim.clear_faults();
                let made = (sim.total_allocs() - allocs) as usize;
                assert_eq!(made, k, "the map succeeded before reaching the fault");
                sync_gather(&mut pt, &mut g);
                if !coherent {
                    assert_eq!(sim.stale_pages(), vec![]);
                }
                // Spot-check every segment through the walker.
                let mut at = iova.0;
                for &(dma, len) in segs {
                    for off in [0, len - PAGE] {
                        let t = walk::<F, _>(&sim, pt.root(), Iova(at + off)).unwrap();
                        assert_eq!(t.dma, dma + off);
                    }
                    at += len;
                }
                return (sim, pt, k);
            }
        }
    }
    unreachable!()
}

/// ARM: a map from 512 GiB - 4 MiB + 64 KiB across the L0 boundary. The fixture's L1 table
/// (root[0]) exists; below it the map needs a new L2 (L1[511]) and a new L3 (L2[510]) for 496
/// pages, then puts a 2 MiB block in L2[511] (DMA 0x1_0020_0000 is 2 MiB aligned). Its second
/// segment, only 4 KiB aligned, needs a new L1 (root[1]), a new L2 and three L3 tables for 4 MiB
/// + 8 KiB of pages: 7 allocations, each of which fails in turn.
fn arm_no_memory_map(coherent: bool) {
    let start = 0x7f_ffc1_0000u64;
    let segs = [
        (DmaAddr(0x1_0001_0000), 0x80_0000_0000 - start),
        (DmaAddr(0x2_0000_1000), 0x40_2000),
    ];
    let (_sim, pt, k) = fail_each_alloc::<Arm>(
        coherent,
        Iova(start),
        &segs,
        |sim, k| sim.fail_after(k),
        |e| *e == Error::NoMemory,
    );
    assert_eq!(k, 7);
    let leaves: Vec<_> = pt
        .mappings()
        .filter(|m| m.iova.0 >= start)
        .map(|m| m.size)
        .collect();
    // 496 pages, 1 block, 1024 + 2 pages.
    assert_eq!(leaves.len(), 496 + 1 + 1026);
    assert_eq!(leaves.iter().filter(|&&s| s == 0x20_0000).count(), 1);
}

#[test]
fn no_memory_at_every_map_allocation_arm() {
    arm_no_memory_map(true);
}

#[test]
fn no_memory_at_every_map_allocation_arm_noncoherent() {
    arm_no_memory_map(false);
}

/// ARM, the map starting inside the fixture's existing L3 table so that the first stores go to
/// a live table before any allocation: 64 pages at 4 MiB are mapped; this map continues at
/// 4 MiB + 256 KiB up to 8 MiB + 8 KiB (page-aligned DMA: pages only).
fn arm_no_memory_existing(coherent: bool) {
    let start = PRE_IOVA + PRE_SIZE;
    let segs = [(DmaAddr(0x3_0000_1000), 0x80_2000 - start)];
    let (_sim, pt, k) = fail_each_alloc::<Arm>(
        coherent,
        Iova(start),
        &segs,
        |sim, k| sim.fail_after(k),
        |e| *e == Error::NoMemory,
    );
    // New L3 tables for 6..8 MiB (L2[3]) and 8 MiB.. (L2[4]).
    assert_eq!(k, 2);
    assert_eq!(pt.mappings().count() as u64, (0x80_2000 - PRE_IOVA) / PAGE);
}

#[test]
fn no_memory_after_stores_in_live_table_arm() {
    arm_no_memory_existing(true);
    arm_no_memory_existing(false);
}

/// IPU: from right after the fixture's pages (L1 entry 1) to 20 MiB + 12 KiB: new L2 tables for
/// L1 entries 2, 3, 4 and 5.
fn ipu_no_memory_map(coherent: bool) {
    let start = PRE_IOVA + PRE_SIZE;
    let segs = [
        (DmaAddr(0x5_0000_0000), 0x80_0000 - start),
        (DmaAddr(0x6_0000_0000), 0xc0_3000),
    ];
    let (_sim, pt, k) = fail_each_alloc::<Ipu>(
        coherent,
        Iova(start),
        &segs,
        |sim, k| sim.fail_after(k),
        |e| *e == Error::NoMemory,
    );
    assert_eq!(k, 4);
    assert_eq!(
        pt.mappings().count() as u64,
        (0x80_0000 + 0xc0_3000 - PRE_IOVA) / PAGE
    );
}

#[test]
fn no_memory_at_every_map_allocation_ipu() {
    ipu_no_memory_map(true);
    ipu_no_memory_map(false);
}

/// IPU: the allocator hands out a table page beyond 44 bits at each allocation point in turn.
/// The IPU entry cannot hold it, so the map is refused with that address and the page is given
/// back.
#[test]
fn bad_table_addr_at_every_map_allocation_ipu() {
    for coherent in [true, false] {
        let start = PRE_IOVA + PRE_SIZE;
        // Up to 20 MiB + 4 KiB: new L2 tables for L1 entries 2, 3, 4 and 5.
        let segs = [(DmaAddr(0x5_0000_0000), 0x140_1000 - start)];
        let (sim, _pt, k) = fail_each_alloc::<Ipu>(
            coherent,
            Iova(start),
            &segs,
            |sim, k| sim.bad_addr_after(k),
            |e| matches!(e, Error::BadTableAddr { dma } if *dma >= HIGH_BASE),
        );
        assert_eq!(k, 4);
        assert!(sim.live_addrs().iter().all(|a| a.0 < HIGH_BASE));
    }
}

/// ARM holds 48-bit table addresses: a table page at 2^44 is fine there.
#[test]
fn arm_accepts_table_above_44_bits() {
    let (sim, mut pt) = fixture::<Arm>(true);
    sim.bad_addr_after(0);
    let mut g = Gather::new();
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x8000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert!(sim.live_addrs().iter().any(|a| a.0 >= HIGH_BASE));
    let t = walk::<Arm, _>(&sim, pt.root(), Iova(0x4000_0000)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8000_0000));
}

#[test]
fn bad_table_addr_at_creation() {
    // IPU: the first page (the dummy page) already lies beyond 44 bits.
    let sim = SimAlloc::with_base(HIGH_BASE);
    let r = PageTable::<Ipu, _>::new(sim.clone(), PageTableConfig::default());
    assert_eq!(r.err(), Some(Error::BadTableAddr { dma: HIGH_BASE }));
    assert_eq!(sim.live_pages(), 0);
    // IPU: the third page (the root) beyond 44 bits; the two dummies are freed.
    let sim = SimAlloc::new();
    sim.bad_addr_after(2);
    let r = PageTable::<Ipu, _>::new(sim.clone(), PageTableConfig::default());
    assert_eq!(
        r.err(),
        Some(Error::BadTableAddr {
            dma: HIGH_BASE + 2 * PAGE
        })
    );
    assert_eq!(sim.live_pages(), 0);
    // ARM: a root at 2^48.
    let sim = SimAlloc::with_base(1 << 48);
    let r = PageTable::<Arm, _>::new(sim.clone(), PageTableConfig::default());
    assert_eq!(r.err(), Some(Error::BadTableAddr { dma: 1 << 48 }));
    assert_eq!(sim.live_pages(), 0);
}

/// `PageTable::new` failing at each of its allocations leaks nothing.
fn new_fails_at_each_allocation<F: Format>(allocations: usize) {
    for coherent in [true, false] {
        for k in 0..allocations {
            let sim = SimAlloc::new();
            sim.fail_after(k);
            let r = PageTable::<F, _>::new(
                sim.clone(),
                PageTableConfig {
                    coherent_walk: coherent,
                },
            );
            assert_eq!(r.err(), Some(Error::NoMemory), "fault at allocation {k}");
            assert_eq!(sim.total_allocs(), k as u64);
            assert_eq!(sim.total_frees(), k as u64);
            assert_eq!(sim.live_pages(), 0);
        }
        let sim = SimAlloc::new();
        sim.fail_after(allocations);
        let pt = PageTable::<F, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
        assert_eq!(sim.live_pages(), allocations);
        assert_eq!(sim.failed_allocs(), 0);
        drop(pt);
        assert_eq!(sim.live_pages(), 0);
    }
}

#[test]
fn new_fails_at_each_allocation_arm() {
    // The root only.
    new_fails_at_each_allocation::<Arm>(1);
}

#[test]
fn new_fails_at_each_allocation_ipu() {
    // Dummy page, dummy L2, root.
    new_fails_at_each_allocation::<Ipu>(3);
}

// ---------------------------------------------------------------------------------------------
// Unmap that needs splits

/// Unmaps `[start, end)` from a 1 GiB block at 1 GiB, failing the table reservation at each
/// allocation until it succeeds. Returns how many tables the successful unmap kept.
fn split_unmap_no_memory(coherent: bool, start: u64, end: u64) -> (SimAlloc, Pt<Arm>, usize) {
    let (sim, mut pt) = fixture::<Arm>(coherent);
    let mut g = Gather::new();
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x80_0000_0000),
        0x4000_0000,
        Prot::RW | Prot::CACHE,
        &mut g,
    )
    .unwrap();
    sync_gather(&mut pt, &mut g);
    let before = table_state(&pt, &sim);
    for k in 0.. {
        assert!(k < 16, "unmap still failing after {k} injected faults");
        sim.fail_after(k);
        sim.clear_sync_log();
        let allocs = sim.total_allocs();
        // The plain unmap refuses to cut the block, changing nothing.
        assert!(matches!(
            pt.unmap(Iova(start), end - start, &mut g),
            Err(Error::PartialBlock { .. })
        ));
        assert!(g.is_empty());
        match pt.unmap_split(Iova(start), end - start, &mut g, |_, _| {}) {
            Err(e) => {
                assert_eq!(e, Error::NoMemory);
                // Refused before anything was written.
                assert!(g.is_empty());
                assert!(sim.sync_log().is_empty());
                assert_eq!(sim.total_allocs() - allocs, k as u64);
                undone(&mut pt, &sim, &mut g, &before);
            }
            Ok(n) => {
                sim.clear_faults();
                assert_eq!(n, end - start);
                sync_gather(&mut pt, &mut g);
                if !coherent {
                    assert_eq!(sim.stale_pages(), vec![]);
                }
                let kept = sim.live_pages() - before.live;
                // Unmapped exactly [start, end); the rest of the block still translates.
                for iova in [start, end - PAGE] {
                    assert_eq!(pt.translate(Iova(iova)), None);
                    assert!(walk::<Arm, _>(&sim, pt.root(), Iova(iova)).is_err());
                }
                for iova in [0x4000_0000, start - PAGE, end, 0x7fff_f000] {
                    let want = DmaAddr(0x80_0000_0000 + iova - 0x4000_0000);
                    assert_eq!(pt.translate(Iova(iova)).unwrap().0, want);
                    assert_eq!(
                        walk::<Arm, _>(&sim, pt.root(), Iova(iova)).unwrap().dma,
                        want
                    );
                }
                return (sim, pt, kept);
            }
        }
    }
    unreachable!()
}

#[test]
fn no_memory_at_every_split_allocation() {
    for coherent in [true, false] {
        // One page in the second 2 MiB of the block: an L2 table for the 1 GiB block, an L3
        // table for the 2 MiB block around the page.
        let (_, pt, kept) = split_unmap_no_memory(coherent, 0x4020_1000, 0x4020_2000);
        assert_eq!(kept, 2);
        assert_eq!(pt.stats().blocks_split, 2);
        let blocks = pt.mappings().filter(|m| m.size == 0x20_0000).count();
        let pages = pt.mappings().filter(|m| m.size == PAGE).count();
        // 511 blocks of 2 MiB; 511 pages around the hole plus the fixture's 64.
        assert_eq!((blocks, pages), (511, 511 + 64));
        // Start and end in different 2 MiB blocks: one L2 table, two L3 tables.
        let (_, pt, kept) = split_unmap_no_memory(coherent, 0x4020_1000, 0x4060_3000);
        assert_eq!(kept, 3);
        assert_eq!(pt.stats().blocks_split, 3);
    }
}

/// Unmapping where nothing is mapped is not an error: 0 bytes, nothing to invalidate.
fn unmap_hole<F: Format>() {
    let (sim, mut pt) = fixture::<F>(false);
    let before = table_state(&pt, &sim);
    let mut g = Gather::new();
    assert_eq!(pt.unmap(Iova(0x100_0000), 0x40_0000, &mut g), Ok(0));
    assert!(g.is_empty());
    assert_eq!(table_state(&pt, &sim), before);
}

#[test]
fn unmap_hole_arm() {
    unmap_hole::<Arm>();
}

#[test]
fn unmap_hole_ipu() {
    unmap_hole::<Ipu>();
}

#[test]
fn error_messages_name_the_values() {
    let e = Error::OutOfRange {
        what: "iova",
        value: 0x1_0000_1000,
        limit: 0x1_0000_0000,
    };
    let s = e.to_string();
    assert!(
        s.contains("0x100001000") && s.contains("0x100000000"),
        "{s}"
    );
    let s = Error::AlreadyMapped {
        iova: Iova(0x80_8000),
    }
    .to_string();
    assert!(s.contains("0x808000"), "{s}");
}

/// Unmapping one page from the middle of a 1 GiB block needs exactly two tables (the block
/// becomes an L2 table of 2 MiB blocks, the one cut becomes an L3 table of pages): both
/// boundaries of the page fall in the same 1 GiB and the same 2 MiB block, so the tables they
/// need are shared and only two are taken. A third allocation would fail here.
#[test]
fn split_of_one_page_reserves_exactly_the_tables_it_uses() {
    let sim = SimAlloc::new();
    let mut pt: Pt<ArmLpae4k> = PageTable::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    pt.map(Iova(1 << 30), DmaAddr(1 << 31), 1 << 30, Prot::RW, &mut g)
        .unwrap();
    sync_gather(&mut pt, &mut g);
    let before = pt.stats().tables_allocated;
    sim.fail_after(2);
    let page = (1u64 << 30) + 0x1234_5000;
    assert_eq!(
        pt.unmap_split(Iova(page), PAGE, &mut g, |_, _| {}),
        Ok(PAGE)
    );
    sync_gather(&mut pt, &mut g);
    sim.clear_faults();
    assert_eq!(pt.stats().tables_allocated - before, 2);
    assert_eq!(pt.stats().tables_freed, 0);
    assert!(pt.translate(Iova(page)).is_none());
    assert_eq!(
        pt.translate(Iova(page + PAGE)).map(|t| t.0),
        Some(DmaAddr((1 << 31) + 0x1234_6000))
    );
}

/// A gather filled by one table is refused by every other table: adding to it (map, unmap) and
/// completing it (`try_iotlb_sync` says so, `iotlb_sync` leaves it alone). Neither table changes,
/// nothing is invalidated, the gather keeps its pages, and its own table then completes it,
/// after which any table may use it again.
#[test]
fn a_gather_is_refused_by_every_table_but_its_own() {
    for coherent in [true, false] {
        let (sim_a, mut a) = fixture::<Arm>(coherent);
        let (sim_b, mut b) = fixture::<Arm>(coherent);
        let mut g = Gather::new();
        assert_eq!(a.unmap(Iova(PRE_IOVA), PRE_SIZE, &mut g), Ok(PRE_SIZE));
        let tables = g.tables_to_free();
        assert_eq!(tables, 3, "L1, L2 and L3 of the fixture emptied");
        let ranges: Vec<_> = g.ranges().collect();
        let (state_a, state_b, stats_b) =
            (table_state(&a, &sim_a), table_state(&b, &sim_b), b.stats());
        sim_b.clear_sync_log();
        let mut calls = 0;
        assert_eq!(
            b.try_iotlb_sync(&mut g, |_, _| calls += 1),
            Err(Error::ForeignGather)
        );
        b.iotlb_sync(&mut g, |_, _| calls += 1);
        assert_eq!(
            b.unmap(Iova(PRE_IOVA), PAGE, &mut g),
            Err(Error::ForeignGather)
        );
        assert_eq!(
            b.map(Iova(0x1000_0000), DmaAddr(PRE_DMA), PAGE, Prot::RW, &mut g),
            Err(Error::ForeignGather)
        );
        assert_eq!(calls, 0, "a foreign gather's ranges were invalidated");
        assert_eq!(g.tables_to_free(), tables);
        assert_eq!(g.ranges().collect::<Vec<_>>(), ranges);
        assert_eq!(table_state(&b, &sim_b), state_b);
        assert_eq!(b.stats(), stats_b);
        assert!(sim_b.sync_log().is_empty());
        assert_eq!(table_state(&a, &sim_a), state_a);

        let live = sim_a.live_pages();
        assert_eq!(sync_gather(&mut a, &mut g).len(), 1);
        assert_eq!(sim_a.live_pages(), live - tables);
        assert!(g.is_empty());
        assert_eq!(b.unmap(Iova(PRE_IOVA), PRE_SIZE, &mut g), Ok(PRE_SIZE));
        sync_gather(&mut b, &mut g);
        assert_eq!(sim_b.live_pages(), 1, "only b's root is left");
    }
}

/// The crash: a gather outlives its table. Another table (even one created after, in
/// memory the first one gave back) still refuses it; its pages are leaked, never freed into the
/// wrong allocator.
#[test]
fn a_gather_outliving_its_table_is_refused() {
    let sim = SimAlloc::new();
    let mut a: Pt<Arm> = PageTable::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    a.map(Iova(PRE_IOVA), DmaAddr(PRE_DMA), PAGE, Prot::RW, &mut g)
        .unwrap();
    a.unmap(Iova(PRE_IOVA), PAGE, &mut g).unwrap();
    drop(a);
    let mut b: Pt<Arm> = PageTable::new(sim.clone(), PageTableConfig::default()).unwrap();
    let (before, frees) = (table_state(&b, &sim), sim.total_frees());
    assert_eq!(
        b.try_iotlb_sync(&mut g, |_, _| {}),
        Err(Error::ForeignGather)
    );
    assert_eq!(g.tables_to_free(), 3);
    assert_eq!((table_state(&b, &sim), sim.total_frees()), (before, frees));
}

/// `unmap` of a range that cuts a block (either end strictly inside a 1 GiB or 2 MiB block) is
/// refused and changes nothing (io-pgtable-arm.c since Linux v6.13); whole blocks unmap.
#[test]
fn partial_block_unmap_is_refused() {
    for coherent in [true, false] {
        let (sim, mut pt) = fixture::<Arm>(coherent);
        let mut g = Gather::new();
        let (gib, two_mib) = (1u64 << 30, 0x20_0000u64);
        pt.map(Iova(gib), DmaAddr(0x80_0000_0000), gib, Prot::RW, &mut g)
            .unwrap();
        pt.map(
            Iova(2 * gib + two_mib),
            DmaAddr(0x80_4000_0000),
            two_mib,
            Prot::RW,
            &mut g,
        )
        .unwrap();
        sync_gather(&mut pt, &mut g);
        refused(
            &mut pt,
            &sim,
            Error::PartialBlock {
                iova: Iova(gib + PAGE),
                block: Iova(gib),
                size: gib,
            },
            |pt, g| pt.unmap(Iova(gib + PAGE), gib - PAGE, g),
        );
        let end = 2 * gib + two_mib + 0x1_0000;
        refused(
            &mut pt,
            &sim,
            Error::PartialBlock {
                iova: Iova(end),
                block: Iova(2 * gib + two_mib),
                size: two_mib,
            },
            |pt, g| pt.unmap(Iova(gib), end - gib, g),
        );
        assert_eq!(
            pt.unmap(Iova(gib), gib + 2 * two_mib, &mut g),
            Ok(gib + two_mib)
        );
        sync_gather(&mut pt, &mut g);
        assert_eq!(pt.stats().blocks_split, 0);
    }
}

/// IPU tables emptied by unmap are kept linked (ipu3-mmu.c, ipu6-mmu.c). A map that reuses such
/// a table and then fails frees only the tables it created itself: the kept table, and every
/// byte of every table, are as before.
#[test]
fn a_failed_ipu_map_keeps_the_tables_it_did_not_create() {
    for coherent in [true, false] {
        let (sim, mut pt) = fixture::<Ipu>(coherent);
        let mut g = Gather::new();
        // L1[8] gets an L2 table, emptied and kept.
        let l2_span = 0x40_0000u64;
        let kept = 8 * l2_span;
        pt.map(Iova(kept), DmaAddr(PRE_DMA), PAGE, Prot::RW, &mut g)
            .unwrap();
        sync_gather(&mut pt, &mut g);
        assert_eq!(pt.unmap(Iova(kept), PAGE, &mut g), Ok(PAGE));
        sync_gather(&mut pt, &mut g);
        let before = table_state(&pt, &sim);
        assert_eq!(before.tables, 3, "root, the fixture's L2 and the kept one");
        // Pages in the kept L2 (L1[8]) then into L1[9], whose new table cannot be allocated.
        sim.fail_after(0);
        let r = pt.map(
            Iova(kept + l2_span - 4 * PAGE),
            DmaAddr(PRE_DMA),
            8 * PAGE,
            Prot::RW,
            &mut g,
        );
        assert_eq!(r, Err(Error::NoMemory));
        sim.clear_faults();
        undone(&mut pt, &sim, &mut g, &before);
    }
}
