//! Cache maintenance for a non-coherent table walker, scenario by scenario with exact counts.
//!
//! The rule under test (design.md, decision 4; ipu6-mmu.c cleans once per contiguous run of
//! written entries): every written PTE line of a table that stays reachable is cleaned exactly
//! once per operation, one `sync_for_device` per contiguous run of lines; a new table is filled,
//! cleaned whole (64 lines) and only then linked; a table about to be freed is not cleaned.
//! The walker reads the allocator's device view, which only those syncs update, so a missing
//! clean shows up as a wrong walk.

mod common;

use common::{sync_gather, DropSyncs, LinkDecoder, SimAlloc, SyncRecord, BASE, LINES_PER_PAGE};
use devmmu_pagetable::*;
use std::cell::Cell;
use std::rc::Rc;

type Arm = ArmLpae4k;
const PAGE: u64 = 0x1000;
const WHOLE: usize = TABLE_SIZE;

fn rec(table: u64, offset: usize, len: usize) -> SyncRecord {
    SyncRecord {
        table: DmaAddr(table),
        offset,
        len,
    }
}

/// Table pointers of ARM LPAE (type 0b11 at L0-L2; an L3 page looks the same, but its address
/// is never a table page in these tests).
fn arm_link(w: u64) -> Option<u64> {
    (w & 3 == 3).then_some(w & fmt::arm_lpae::PTE_ADDR_MASK)
}

/// Table pointers of the Intel IPU: every entry is `address >> 12`.
fn ipu_link(w: u64) -> Option<u64> {
    Some(w << 12)
}

fn link_decoder<F: Format>() -> (usize, LinkDecoder) {
    if F::EMPTY_IS_ZERO {
        (8, arm_link)
    } else {
        (4, ipu_link)
    }
}

/// A non-coherent table whose walker reads the device view; the sync log of `new()` is checked
/// and cleared.
fn noncoherent<F: Format>() -> (SimAlloc, PageTable<F, SimAlloc>) {
    let sim = SimAlloc::new();
    sim.set_walker_reads_device(true);
    let (w, d) = link_decoder::<F>();
    sim.check_links(w, d);
    let pt = PageTable::new(
        sim.clone(),
        PageTableConfig {
            coherent_walk: false,
        },
    )
    .unwrap();
    // Every page new() made was cleaned whole, once.
    let log = sim.sync_log();
    assert_eq!(log.len(), sim.live_pages());
    for (r, a) in log.iter().zip(sim.live_addrs()) {
        assert_eq!(*r, rec(a.0, 0, WHOLE));
    }
    assert_eq!(pt.stats().lines_cleaned, sim.logged_lines());
    sim.clear_sync_log();
    (sim, pt)
}

/// Runs `op` and returns (its sync log, lines cleaned, sync calls) per the page table's counters,
/// checking those counters against the log.
fn counted<F: Format, T>(
    sim: &SimAlloc,
    pt: &mut PageTable<F, SimAlloc>,
    op: impl FnOnce(&mut PageTable<F, SimAlloc>) -> T,
) -> (T, Vec<SyncRecord>) {
    sim.clear_sync_log();
    let before = pt.stats();
    let r = op(pt);
    let after = pt.stats();
    let log = sim.sync_log();
    assert_eq!(
        after.lines_cleaned - before.lines_cleaned,
        sim.logged_lines()
    );
    assert_eq!(after.sync_calls - before.sync_calls, log.len() as u64);
    (r, log)
}

fn lines(log: &[SyncRecord]) -> usize {
    log.iter().map(|r| r.lines().len()).sum()
}

// ---------------------------------------------------------------------------------------------
// ARM LPAE

#[test]
fn arm_map_one_page_into_empty_table() {
    let (sim, mut pt) = noncoherent::<Arm>();
    let mut g = Gather::new();
    // IOVA 0x0080_4020_3000: root[1] -> L1[1] -> L2[1] -> L3[3]; new tables at 0x1000_1000 (L1),
    // 0x1000_2000 (L2), 0x1000_3000 (L3).
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.map(
            Iova(0x0080_4020_3000),
            DmaAddr(0x8_1234_5000),
            PAGE,
            Prot::RW,
            &mut g,
        )
    });
    r.unwrap();
    // Innermost table first, each cleaned whole before its parent entry points at it; then the
    // one root line holding root[1] (bytes 8..16).
    assert_eq!(
        log,
        vec![
            rec(BASE + 0x3000, 0, WHOLE),
            rec(BASE + 0x2000, 0, WHOLE),
            rec(BASE + 0x1000, 0, WHOLE),
            rec(BASE, 8, 8),
        ]
    );
    // 3 tables x 64 lines + 1 root line.
    assert_eq!(lines(&log), 193);
    let t = walk::<Arm, _>(&sim, pt.root(), Iova(0x0080_4020_3abc)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x8_1234_5abc));
    assert_eq!(sim.stale_pages(), vec![]);
}

/// Sets up an ARM table with one page mapped at L3 index 0 of the table for IOVA 0..2 MiB
/// (root 0x1000_0000, L1 0x1000_1000, L2 0x1000_2000, L3 0x1000_3000).
fn arm_with_l3() -> (SimAlloc, PageTable<Arm, SimAlloc>) {
    let (sim, mut pt) = noncoherent::<Arm>();
    let mut g = Gather::new();
    pt.map(Iova(0), DmaAddr(0x8000_0000), PAGE, Prot::RW, &mut g)
        .unwrap();
    sim.clear_sync_log();
    (sim, pt)
}

#[test]
fn arm_map_16_pages_into_existing_table() {
    let (sim, mut pt) = arm_with_l3();
    let l3 = BASE + 0x3000;
    let mut g = Gather::new();
    // L3 entries 8..24: bytes 64..192, lines 1 and 2: one sync, two lines.
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.map(
            Iova(8 * PAGE),
            DmaAddr(0x9000_0000),
            16 * PAGE,
            Prot::RW,
            &mut g,
        )
    });
    r.unwrap();
    assert_eq!(log, vec![rec(l3, 64, 128)]);
    assert_eq!(lines(&log), 2);
    // Entries 36..52 (bytes 288..416) straddle three lines (4, 5, 6): still one sync.
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.map(
            Iova(36 * PAGE),
            DmaAddr(0xa000_0000),
            16 * PAGE,
            Prot::RW,
            &mut g,
        )
    });
    r.unwrap();
    assert_eq!(log, vec![rec(l3, 288, 128)]);
    assert_eq!(lines(&log), 3);
    for i in (8..24).chain(36..52) {
        assert!(
            walk::<Arm, _>(&sim, pt.root(), Iova(i * PAGE)).is_ok(),
            "page {i}"
        );
    }
    assert_eq!(sim.stale_pages(), vec![]);
}

#[test]
fn arm_map_segments_scattered_pages() {
    let (sim, mut pt) = arm_with_l3();
    let l3 = BASE + 0x3000;
    let mut g = Gather::new();
    // 16 single pages at scattered bus addresses, contiguous in IOVA from L3 index 8: one walk,
    // one run of 16 entries (bytes 64..192), so one sync of two lines.
    let segs: Vec<_> = (0..16u64)
        .map(|i| (DmaAddr(0x1_0000_0000 + i * 0x10_7000), PAGE))
        .collect();
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.map_segments(Iova(8 * PAGE), &segs, Prot::RW, &mut g)
    });
    r.unwrap();
    assert_eq!(log, vec![rec(l3, 64, 128)]);
    for (i, &(dma, _)) in segs.iter().enumerate() {
        let t = walk::<Arm, _>(&sim, pt.root(), Iova((8 + i as u64) * PAGE)).unwrap();
        assert_eq!(t.dma, dma);
    }

    // The same 16 pages scattered in IOVA too (every 20th entry of the table, separate maps):
    // entries 60, 80, ..., 360 lie in 16 distinct lines (entry / 8 = 7, 10, 12, 15, ...), so 16
    // syncs of one line each.
    let mut total = Vec::new();
    for (i, &(dma, _)) in segs.iter().enumerate() {
        let idx = 60 + 20 * i as u64;
        let (r, log) = counted(&sim, &mut pt, |pt| {
            pt.map(Iova(idx * PAGE), dma + 0x1000_0000, PAGE, Prot::RW, &mut g)
        });
        r.unwrap();
        assert_eq!(log, vec![rec(l3, idx as usize * 8, 8)]);
        total.extend(log);
    }
    assert_eq!(lines(&total), 16);
    assert_eq!(sim.stale_pages(), vec![]);
}

/// Unmapping 1 GiB mapped with 4 KiB pages: every L3 table, the L2 table and (if it empties) the
/// L1 table are unlinked and freed after the TLB sync; none of them is cleaned, since the
/// walker cannot reach them once the parent entry is cleared and the TLB invalidated.
#[test]
fn arm_unmap_1g_of_pages() {
    for keep_l1 in [false, true] {
        let (sim, mut pt) = noncoherent::<Arm>();
        let mut g = Gather::new();
        if keep_l1 {
            // A page under L1[0] keeps the L1 table alive.
            pt.map(Iova(0), DmaAddr(0x8000_0000), PAGE, Prot::RW, &mut g)
                .unwrap();
        }
        // 1 GiB at IOVA 1 GiB (L1[1]) from a bus address that is only 4 KiB aligned: 262144
        // pages in 512 L3 tables under one L2.
        pt.map(
            Iova(0x4000_0000),
            DmaAddr(0x1_0000_1000),
            0x4000_0000,
            Prot::RW,
            &mut g,
        )
        .unwrap();
        sync_gather(&mut pt, &mut g);
        let tables = pt.table_count();
        assert_eq!(tables, 1 + 1 + 1 + 512 + keep_l1 as usize * 2);
        let live = sim.live_pages();

        let (r, log) = counted(&sim, &mut pt, |pt| {
            pt.unmap(Iova(0x4000_0000), 0x4000_0000, &mut g)
        });
        assert_eq!(r, Ok(0x4000_0000));
        if keep_l1 {
            // L1 (0x1000_1000) stays: its entry 1 (bytes 8..16) is the one line cleaned.
            assert_eq!(log, vec![rec(BASE + 0x1000, 8, 8)]);
            assert_eq!(g.tables_to_free(), 512 + 1);
        } else {
            // L1 empties too: only root[0] (bytes 0..8) is cleaned.
            assert_eq!(log, vec![rec(BASE, 0, 8)]);
            assert_eq!(g.tables_to_free(), 512 + 1 + 1);
        }
        assert_eq!(lines(&log), 1);
        // The walk stops where the cleared entry is.
        let level = if keep_l1 { 1 } else { 0 };
        assert_eq!(
            walk::<Arm, _>(&sim, pt.root(), Iova(0x4000_0000)),
            Err(WalkFault::Translation {
                iova: Iova(0x4000_0000),
                level
            })
        );
        // Walk caches: the L2 was unlinked from L1[1] (1 GiB at 1 GiB); without a kept L1, the
        // L1 from root[0] (the first 512 GiB). The merged invalidation covers both kinds.
        let walk_span = if keep_l1 {
            (0x4000_0000, 0x8000_0000)
        } else {
            (0, 1 << 39)
        };
        assert_eq!(
            g.walk_ranges().collect::<Vec<_>>(),
            vec![(Iova(walk_span.0), walk_span.1 - walk_span.0)]
        );
        let ranges = sync_gather(&mut pt, &mut g);
        assert_eq!(ranges, vec![walk_span]);
        assert_eq!(sim.live_pages(), live - (512 + 1 + !keep_l1 as usize));
        assert_eq!(pt.table_count(), if keep_l1 { 4 } else { 1 });
        assert_eq!(sim.stale_pages(), vec![]);
    }
}

/// A partial unmap that splits a 2 MiB block (`unmap_split`): the new L3 table is built and
/// cleaned whole first; then break-before-make: the L2 entry is cleared and its line cleaned,
/// the TLB invalidated, the entry rewritten to point at the L3 table and its line cleaned again;
/// then the two pages are cleared in the L3 table (one more clean).
#[test]
fn arm_split_cleans_new_table_then_parent() {
    let (sim, mut pt) = noncoherent::<Arm>();
    let mut g = Gather::new();
    // Block in L2[1] of the L2 at 0x1000_2000.
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_1240_0000),
        0x20_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    sync_gather(&mut pt, &mut g);
    let mut invalidated = Vec::new();
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.unmap_split(Iova(0x20_3000), 2 * PAGE, &mut g, |i, n| {
            invalidated.push((i, n))
        })
    });
    assert_eq!(r, Ok(2 * PAGE));
    assert_eq!(invalidated, vec![(Iova(0x20_0000), 0x20_0000)]);
    // Two pages were reserved (one per split end); which slot the split used is the page
    // table's business, so read it from the L2 entry.
    let desc = sim.read_raw(DmaAddr(BASE + 0x2008), 8, false).unwrap();
    let l3 = desc & fmt::arm_lpae::PTE_ADDR_MASK;
    assert_eq!(
        log,
        vec![
            rec(l3, 0, WHOLE),
            rec(BASE + 0x2000, 8, 8),
            rec(BASE + 0x2000, 8, 8),
            rec(l3, 3 * 8, 2 * 8)
        ]
    );
    assert_eq!(lines(&log), LINES_PER_PAGE + 3);
    sync_gather(&mut pt, &mut g);
    assert!(walk::<Arm, _>(&sim, pt.root(), Iova(0x20_3000)).is_err());
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(0x20_5000))
            .unwrap()
            .dma,
        DmaAddr(0x8_1240_5000)
    );
    assert_eq!(sim.stale_pages(), vec![]);
}

// ---------------------------------------------------------------------------------------------
// Intel IPU

#[test]
fn ipu_new_and_map_one_page() {
    let sim = SimAlloc::new();
    sim.set_walker_reads_device(true);
    let mut pt = PageTable::<Ipu, _>::new(
        sim.clone(),
        PageTableConfig {
            coherent_walk: false,
        },
    )
    .unwrap();
    // Dummy page, dummy L2, root: each cleaned whole once, in that order.
    assert_eq!(
        sim.sync_log(),
        vec![
            rec(BASE, 0, WHOLE),
            rec(BASE + 0x1000, 0, WHOLE),
            rec(BASE + 0x2000, 0, WHOLE)
        ]
    );
    assert_eq!(pt.stats().lines_cleaned, 3 * 64);
    let mut g = Gather::new();
    // IOVA 0x1234_5000: L1[0x48], L2[0x345]; the new L2 is 0x1000_3000.
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.map(
            Iova(0x1234_5000),
            DmaAddr(0x9_8765_4000),
            PAGE,
            Prot::RW,
            &mut g,
        )
    });
    r.unwrap();
    // The new L2 whole (64 lines), then the 4-byte L1 entry at 0x48 * 4 = 0x120: 65 lines.
    assert_eq!(
        log,
        vec![rec(BASE + 0x3000, 0, WHOLE), rec(BASE + 0x2000, 0x120, 4)]
    );
    assert_eq!(lines(&log), 65);
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x1234_5010)).unwrap();
    assert_eq!(t.dma, DmaAddr(0x9_8765_4010));
    // 16 more pages in the same L2: entries 0x346..0x356 = bytes 0xd18..0xd58, lines 52..53:
    // one sync, two lines.
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.map(
            Iova(0x1234_6000),
            DmaAddr(0x9_0000_0000),
            16 * PAGE,
            Prot::RW,
            &mut g,
        )
    });
    r.unwrap();
    assert_eq!(log, vec![rec(BASE + 0x3000, 0xd18, 64)]);
    assert_eq!(lines(&log), 2);
    // Unmap everything: the L2 table empties and is kept linked (ipu6-mmu.c frees L2 tables
    // only at teardown), so its cleared entries 0x345..0x356 (bytes 0xd14..0xd58) are cleaned
    // and the L1 entry is left alone.
    sync_gather(&mut pt, &mut g);
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.unmap(Iova(0x1234_5000), 17 * PAGE, &mut g)
    });
    assert_eq!(r, Ok(17 * PAGE));
    assert_eq!(log, vec![rec(BASE + 0x3000, 0xd14, 68)]);
    assert_eq!(
        sync_gather(&mut pt, &mut g),
        vec![(0x1234_5000, 0x1235_6000)]
    );
    assert_eq!(sim.live_pages(), 4);
    assert_eq!(pt.table_count(), 2);
    // With freeing turned on, the same unmap frees the L2 table: uncleaned, the L1 entry's line
    // (reset to the dummy L2) cleaned, and the whole IOVA space invalidated before the page
    // goes back (the L1 entry may be cached).
    pt.map(
        Iova(0x1234_5000),
        DmaAddr(0x9_8765_4000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    sync_gather(&mut pt, &mut g);
    pt.set_free_empty_tables(true);
    let (r, log) = counted(&sim, &mut pt, |pt| {
        pt.unmap(Iova(0x1234_5000), PAGE, &mut g)
    });
    assert_eq!(r, Ok(PAGE));
    assert_eq!(log, vec![rec(BASE + 0x2000, 0x120, 4)]);
    assert_eq!(g.tables_to_free(), 1);
    assert_eq!(sync_gather(&mut pt, &mut g), vec![(0, 1 << 32)]);
    assert_eq!(sim.live_pages(), 3);
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x1234_5010)).unwrap();
    assert_eq!(
        t.dma,
        DmaAddr(BASE + 0x10),
        "unmapped IOVA must land on the dummy page"
    );
    assert_eq!(sim.stale_pages(), vec![]);
}

/// A coherent walker never needs maintenance: no sync at all, whatever the operation.
#[test]
fn coherent_walk_never_syncs() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<Ipu, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    pt.map(Iova(0), DmaAddr(0x8000_0000), 0x80_0000, Prot::RW, &mut g)
        .unwrap();
    pt.unmap(Iova(0x1000), 0x40_0000, &mut g).unwrap();
    sync_gather(&mut pt, &mut g);
    let sim2 = SimAlloc::new();
    let mut pt2 = PageTable::<Arm, _>::new(sim2.clone(), PageTableConfig::default()).unwrap();
    pt2.map(Iova(0), DmaAddr(0x8000_0000), 0x4000_0000, Prot::RW, &mut g)
        .unwrap();
    pt2.unmap_split(Iova(0x1000), 0x40_0000, &mut g, |_, _| {})
        .unwrap();
    sync_gather(&mut pt2, &mut g);
    assert!(sim.sync_log().is_empty() && sim2.sync_log().is_empty());
    assert_eq!(pt.stats().lines_cleaned + pt2.stats().lines_cleaned, 0);
    assert_eq!(pt.stats().sync_calls + pt2.stats().sync_calls, 0);
}

// ---------------------------------------------------------------------------------------------
// A skipped sync is caught

fn dropping_alloc() -> (SimAlloc, DropSyncs, Rc<Cell<bool>>, Rc<Cell<u64>>) {
    let sim = SimAlloc::new();
    sim.set_walker_reads_device(true);
    let dropping = Rc::new(Cell::new(false));
    let dropped = Rc::new(Cell::new(0));
    let a = DropSyncs {
        inner: sim.clone(),
        dropping: dropping.clone(),
        whole_tables_only: false,
        dropped: dropped.clone(),
    };
    (sim, a, dropping, dropped)
}

#[test]
fn skipped_sync_is_visible_to_the_walker_arm() {
    let (sim, alloc, dropping, dropped) = dropping_alloc();
    let mut pt = PageTable::<Arm, _>::new(
        alloc,
        PageTableConfig {
            coherent_walk: false,
        },
    )
    .unwrap();
    let mut g = Gather::new();
    pt.map(Iova(0), DmaAddr(0x8000_0000), PAGE, Prot::RW, &mut g)
        .unwrap();
    assert!(walk::<Arm, _>(&sim, pt.root(), Iova(0)).is_ok());

    dropping.set(true);
    // Same L3 table: the device still reads the old, zero entry.
    pt.map(Iova(PAGE), DmaAddr(0x9000_0000), PAGE, Prot::RW, &mut g)
        .unwrap();
    assert_eq!(dropped.get(), 1);
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(PAGE)),
        Err(WalkFault::Translation {
            iova: Iova(PAGE),
            level: 3
        })
    );
    // A new L3 table: neither it nor the L2 entry pointing at it reached memory.
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0xa000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(0x20_0000)),
        Err(WalkFault::Translation {
            iova: Iova(0x20_0000),
            level: 2
        })
    );
    // The CPU's view has both mappings: only the missing clean differs.
    sim.set_walker_reads_device(false);
    assert!(walk::<Arm, _>(&sim, pt.root(), Iova(PAGE)).is_ok());
    assert!(walk::<Arm, _>(&sim, pt.root(), Iova(0x20_0000)).is_ok());
    sim.set_walker_reads_device(true);
    // An unmap whose clean is dropped leaves the device translating the old page.
    pt.unmap(Iova(0), PAGE, &mut g).unwrap();
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(0)).unwrap().dma,
        DmaAddr(0x8000_0000)
    );
    assert!(!sim.stale_pages().is_empty());
    sync_gather(&mut pt, &mut g);
}

#[test]
fn skipped_sync_is_visible_to_the_walker_ipu() {
    let (sim, alloc, dropping, _) = dropping_alloc();
    let mut pt = PageTable::<Ipu, _>::new(
        alloc,
        PageTableConfig {
            coherent_walk: false,
        },
    )
    .unwrap();
    let mut g = Gather::new();
    dropping.set(true);
    pt.map(
        Iova(0x40_0000),
        DmaAddr(0x9000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    // The L1 entry the device reads still points at the dummy L2: the dummy page.
    let t = walk::<Ipu, _>(&sim, pt.root(), Iova(0x40_0000)).unwrap();
    assert_eq!(t.dma, DmaAddr(BASE));
    sync_gather(&mut pt, &mut g);
}

/// The link check itself: when the whole-table clean of a new L3 is dropped but the parent's
/// line goes through, the device would reach a table it cannot see, and the sync says so.
#[test]
#[should_panic(expected = "whose contents the device cannot see yet")]
fn link_to_unclean_table_is_caught() {
    let sim = SimAlloc::new();
    sim.set_walker_reads_device(true);
    sim.check_links(8, arm_link);
    let dropping = Rc::new(Cell::new(false));
    let alloc = DropSyncs {
        inner: sim.clone(),
        dropping: dropping.clone(),
        whole_tables_only: true,
        dropped: Rc::new(Cell::new(0)),
    };
    let mut pt = PageTable::<Arm, _>::new(
        alloc,
        PageTableConfig {
            coherent_walk: false,
        },
    )
    .unwrap();
    let mut g = Gather::new();
    pt.map(Iova(0), DmaAddr(0x8000_0000), PAGE, Prot::RW, &mut g)
        .unwrap();
    dropping.set(true);
    // A second L3 under the existing L2: its clean is dropped, the L2 line is not.
    let _ = pt.map(
        Iova(0x20_0000),
        DmaAddr(0x9000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    );
}

/// Syncs dropped from the start: even the root is garbage (0xA5 bytes) to the device, which
/// decodes as an L0 block, reserved with a 4 KiB granule: a fault at level 0.
#[test]
fn unclean_root_is_garbage() {
    let (sim, alloc, dropping, _) = dropping_alloc();
    dropping.set(true);
    let pt = PageTable::<Arm, _>::new(
        alloc,
        PageTableConfig {
            coherent_walk: false,
        },
    )
    .unwrap();
    assert_eq!(
        walk::<Arm, _>(&sim, pt.root(), Iova(0)),
        Err(WalkFault::Translation {
            iova: Iova(0),
            level: 0
        })
    );
}

/// `unmap_split` is break-before-make, as the device sees it: when the TLB invalidation for the
/// block arrives, the device's view of the tables has the block entry invalid (the whole block
/// faults, the L3 table is not linked yet); once the call returns, the rest of the block
/// translates through the new table. The plain `unmap` refuses the same range.
#[test]
fn arm_split_is_break_before_make() {
    let (sim, mut pt) = noncoherent::<Arm>();
    let mut g = Gather::new();
    pt.map(
        Iova(0x20_0000),
        DmaAddr(0x8_1240_0000),
        0x20_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    sync_gather(&mut pt, &mut g);
    let before = sim.snapshot();
    assert_eq!(
        pt.unmap(Iova(0x20_3000), PAGE, &mut g),
        Err(Error::PartialBlock {
            iova: Iova(0x20_3000),
            block: Iova(0x20_0000),
            size: 0x20_0000
        })
    );
    assert_eq!(sim.snapshot(), before);
    let root = pt.root();
    let seen = sim.clone();
    let mut at_invalidation = Vec::new();
    let r = pt.unmap_split(Iova(0x20_3000), PAGE, &mut g, |i, n| {
        // What the device walks at this moment (its own view of memory).
        at_invalidation.push((i, n, walk::<Arm, _>(&seen, root, Iova(0x20_5000))));
    });
    assert_eq!(r, Ok(PAGE));
    assert_eq!(
        at_invalidation,
        vec![(
            Iova(0x20_0000),
            0x20_0000,
            Err(WalkFault::Translation {
                iova: Iova(0x20_5000),
                level: 2
            })
        )]
    );
    sync_gather(&mut pt, &mut g);
    let t = walk::<Arm, _>(&sim, root, Iova(0x20_5000)).unwrap();
    assert_eq!((t.dma, t.level), (DmaAddr(0x8_1240_5000), 3));
    assert!(walk::<Arm, _>(&sim, root, Iova(0x20_3000)).is_err());
    assert_eq!(sim.stale_pages(), vec![]);
}

/// `iotlb_sync_with` tells walk-cache invalidations from leaf ones: an unmap that leaves its
/// leaf table in place asks for a leaf invalidation of the range only; one that empties and
/// unlinks the leaf table asks for a walk invalidation of the whole span the parent entry
/// covered (2 MiB), which includes the leaves (no separate leaf request).
#[test]
fn walk_invalidation_covers_the_span_of_an_unlinked_table() {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<Arm, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    pt.map(
        Iova(0x40_0000),
        DmaAddr(0x8000_0000),
        4 * PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    pt.map(
        Iova(0x60_0000),
        DmaAddr(0x9000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    let mut got = Vec::new();
    pt.iotlb_sync_with(&mut g, |i| got.push(i));
    assert_eq!(got, vec![], "an ARM map needs no invalidation");

    pt.unmap(Iova(0x40_0000), 2 * PAGE, &mut g).unwrap();
    pt.iotlb_sync_with(&mut g, |i| got.push(i));
    let leaf = |iova, size| Invalidation {
        iova: Iova(iova),
        size,
        walk: false,
    };
    assert_eq!(got, vec![leaf(0x40_0000, 2 * PAGE)]);

    got.clear();
    pt.unmap(Iova(0x40_2000), 2 * PAGE, &mut g).unwrap();
    assert_eq!(g.tables_to_free(), 1);
    pt.iotlb_sync_with(&mut g, |i| got.push(i));
    assert_eq!(
        got,
        vec![Invalidation {
            iova: Iova(0x40_0000),
            size: 0x20_0000,
            walk: true
        }]
    );
    assert_eq!(pt.table_count(), 4, "root, L1, L2 and the L3 of 0x60_0000");
}
