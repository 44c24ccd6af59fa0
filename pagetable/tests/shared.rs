//! [`SharedPageTable`] on one thread, where every effect can be pinned down: what the device's
//! walker reads (the allocator's device copy for a non-coherent walker), every error leaving the
//! table as it was, tables kept by unmap and given back by `compact` after a walk-cache
//! invalidation, and blocks. The threaded cases are the crate's unit tests (`shared::tests`).

mod common;

use common::SimAlloc;
use devmmu_pagetable::*;

type Arm = ArmLpae4k;
type Spt = SharedPageTable<Arm, SimAlloc>;
const PAGE: u64 = 0x1000;
const MB2: u64 = 2 << 20;

fn shared(coherent: bool) -> (SimAlloc, Spt) {
    let sim = SimAlloc::new();
    sim.set_walker_reads_device(!coherent);
    let pt = SharedPageTable::new(
        sim.clone(),
        PageTableConfig {
            coherent_walk: coherent,
        },
    )
    .unwrap();
    (sim, pt)
}

/// The device's walk of `iova`: `(bus address, leaf size)`.
fn device(sim: &SimAlloc, pt: &Spt, iova: u64) -> Option<(u64, u64)> {
    walk::<Arm, _>(sim, pt.root(), Iova(iova))
        .ok()
        .map(|t| (t.dma.0, t.leaf_size))
}

#[test]
fn pages_and_blocks_reach_a_non_coherent_walker() {
    let (sim, pt) = shared(false);
    let mut g = Gather::new();
    pt.map(
        Iova(0x4000_1000),
        DmaAddr(0x8000_0000),
        3 * PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    pt.map(
        Iova(0x4060_0000),
        DmaAddr(0x9060_0000),
        2 * MB2,
        Prot::READ,
        &mut g,
    )
    .unwrap();
    // Every written line was cleaned: the device copy is the CPU's.
    assert_eq!(sim.stale_pages(), vec![]);
    assert_eq!(device(&sim, &pt, 0x4000_0000), None);
    assert_eq!(device(&sim, &pt, 0x4000_2000), Some((0x8000_1000, PAGE)));
    assert_eq!(device(&sim, &pt, 0x4080_5000), Some((0x9080_5000, MB2)));
    assert_eq!(
        pt.translate(Iova(0x4080_5000)),
        Some((DmaAddr(0x9080_5000), Arm::effective_prot(Prot::READ)))
    );
    assert!(
        g.is_empty(),
        "ARM's TLB caches no empty entry: a map gathers nothing"
    );
    assert_eq!(pt.unmap(Iova(0x4000_2000), PAGE, &mut g), Ok(PAGE));
    assert_eq!(pt.unmap(Iova(0x4060_0000), 2 * MB2, &mut g), Ok(2 * MB2));
    assert_eq!(sim.stale_pages(), vec![]);
    assert_eq!(device(&sim, &pt, 0x4000_2000), None);
    assert_eq!(device(&sim, &pt, 0x4000_1000), Some((0x8000_0000, PAGE)));
    assert_eq!(device(&sim, &pt, 0x4080_5000), None);
    let mut inv = vec![];
    pt.iotlb_sync(&mut g, |i| inv.push(i)).unwrap();
    assert_eq!(inv.len(), 2);
    assert!(inv.iter().all(|i| !i.walk));
}

#[test]
fn a_failed_map_leaves_the_translations_as_they_were() {
    let (sim, pt) = shared(true);
    let mut g = Gather::new();
    pt.map(
        Iova(0x10_5000),
        DmaAddr(0x7000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    // A run that meets the page in its middle: the pages before it are written, then cleared.
    let r = pt.map(
        Iova(0x10_0000),
        DmaAddr(0x8000_0000),
        8 * PAGE,
        Prot::RW,
        &mut g,
    );
    assert_eq!(
        r,
        Err(Error::AlreadyMapped {
            iova: Iova(0x10_5000)
        })
    );
    for p in (0x10_0000..0x10_8000).step_by(PAGE as usize) {
        let want = (p == 0x10_5000).then_some((0x7000_0000, PAGE));
        assert_eq!(device(&sim, &pt, p), want, "{p:#x}");
    }
    let inv: Vec<_> = {
        let mut v = vec![];
        pt.iotlb_sync(&mut g, |i| v.push((i.iova.0, i.size)))
            .unwrap();
        v
    };
    assert_eq!(
        inv,
        vec![(0x10_0000, 5 * PAGE)],
        "the undone pages are invalidated"
    );

    // Out of table memory half-way: the first 2 MiB got its leaf table, the second cannot.
    sim.fail_after(0);
    let r = pt.map(
        Iova(0x1f_f000),
        DmaAddr(0x9000_0000),
        2 * PAGE,
        Prot::RW,
        &mut g,
    );
    assert_eq!(r, Err(Error::NoMemory));
    assert_eq!(device(&sim, &pt, 0x1f_f000), None);
    assert_eq!(device(&sim, &pt, 0x10_5000), Some((0x7000_0000, PAGE)));
    sim.clear_faults();
    pt.iotlb_sync(&mut g, |_| {}).unwrap();

    // Errors found before anything is written change nothing at all.
    let before = sim.snapshot();
    let cases = [
        pt.map(Iova(0x10_0800), DmaAddr(0), PAGE, Prot::RW, &mut g),
        pt.map(Iova(0x10_0000), DmaAddr(0x800), PAGE, Prot::RW, &mut g),
        pt.map(Iova(0x10_0000), DmaAddr(0), 0, Prot::RW, &mut g),
        pt.map(Iova(0x10_0000), DmaAddr(0), PAGE, Prot::NONE, &mut g),
        pt.map(Iova(1 << 48), DmaAddr(0), PAGE, Prot::RW, &mut g),
        pt.map(Iova(0x10_0000), DmaAddr(1 << 48), PAGE, Prot::RW, &mut g),
        pt.map(
            Iova(u64::MAX - 0xfff),
            DmaAddr(0),
            2 * PAGE,
            Prot::RW,
            &mut g,
        ),
    ];
    assert!(cases.iter().all(|r| r.is_err()), "{cases:?}");
    assert!(matches!(cases[0], Err(Error::Misaligned { .. })));
    assert!(matches!(cases[3], Err(Error::NoAccess { .. })));
    assert!(matches!(cases[4], Err(Error::OutOfRange { .. })));
    assert_eq!(sim.snapshot(), before);
    assert!(g.is_empty());
}

#[test]
fn unmap_refuses_to_cut_a_block_and_another_tables_gather() {
    let (sim, pt) = shared(true);
    let mut g = Gather::new();
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x8000_0000),
        MB2,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    let before = sim.snapshot();
    assert_eq!(
        pt.unmap(Iova(0x4000_1000), PAGE, &mut g),
        Err(Error::PartialBlock {
            iova: Iova(0x4000_1000),
            block: Iova(0x4000_0000),
            size: MB2
        })
    );
    assert_eq!(
        pt.unmap(Iova(0x3fff_f000), 2 * PAGE, &mut g),
        Err(Error::PartialBlock {
            iova: Iova(0x4000_1000),
            block: Iova(0x4000_0000),
            size: MB2
        })
    );
    // Another table's gather, holding work: refused by map, unmap and sync alike.
    let mut other =
        PageTable::<Arm, _>::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap();
    let mut theirs = Gather::new();
    other
        .map(Iova(0), DmaAddr(0x1000), PAGE, Prot::RW, &mut theirs)
        .unwrap();
    other.unmap(Iova(0), PAGE, &mut theirs).unwrap();
    assert_eq!(
        pt.unmap(Iova(0x4000_0000), MB2, &mut theirs),
        Err(Error::ForeignGather)
    );
    assert_eq!(
        pt.map(Iova(0), DmaAddr(0), PAGE, Prot::RW, &mut theirs),
        Err(Error::ForeignGather)
    );
    assert_eq!(
        pt.iotlb_sync(&mut theirs, |_| {}),
        Err(Error::ForeignGather)
    );
    assert_eq!(sim.snapshot(), before);
    assert_eq!(device(&sim, &pt, 0x4010_0000), Some((0x8010_0000, MB2)));
    other.iotlb_sync(&mut theirs, |_, _| {});
    assert_eq!(pt.unmap(Iova(0x4000_0000), MB2, &mut g), Ok(MB2));
}

/// Unmap keeps emptied tables linked (no table is freed while other threads may walk it); a
/// block cannot replace such a table, so the map fills it with pages; `compact` unlinks the
/// empty tables with a walk-cache invalidation and `iotlb_sync` frees them, after which the
/// block is a block again.
#[test]
fn emptied_tables_stay_until_compact_frees_them_after_a_walk_invalidation() {
    let (sim, mut pt) = shared(false);
    let mut g = Gather::new();
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x8000_0000),
        4 * PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(pt.table_count(), 4);
    assert_eq!(pt.unmap(Iova(0x4000_0000), 4 * PAGE, &mut g), Ok(4 * PAGE));
    pt.iotlb_sync(&mut g, |_| {}).unwrap();
    assert_eq!(pt.table_count(), 4, "unmap frees no table");
    assert_eq!(sim.live_pages(), 4);

    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x8000_0000),
        MB2,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(
        device(&sim, &pt, 0x4000_0000),
        Some((0x8000_0000, PAGE)),
        "pages in the table still linked there, not a block over it"
    );
    assert_eq!(pt.unmap(Iova(0x4000_0000), MB2, &mut g), Ok(MB2));
    pt.iotlb_sync(&mut g, |_| {}).unwrap();

    assert_eq!(pt.compact(&mut g), Ok(3));
    assert_eq!(pt.table_count(), 1);
    assert_eq!(sim.live_pages(), 4, "freed only after the invalidation");
    assert_eq!(
        sim.stale_pages(),
        vec![],
        "the cleared root entry was cleaned"
    );
    let mut inv = vec![];
    pt.iotlb_sync(&mut g, |i| inv.push(i)).unwrap();
    assert_eq!(
        inv,
        vec![Invalidation {
            iova: Iova(0),
            size: 1 << 39,
            walk: true
        }],
        "the L1 table translated the root entry's 512 GiB"
    );
    assert_eq!(sim.live_pages(), 1);
    assert_eq!(pt.stats().tables_freed, 3);

    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x8000_0000),
        MB2,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(device(&sim, &pt, 0x4000_0000), Some((0x8000_0000, MB2)));
    drop(pt);
    assert_eq!(sim.live_pages(), 0, "drop frees every table");
}
