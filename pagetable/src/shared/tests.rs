//! Threads on one [`SharedPageTable`]: a stress test against a reference model, checked
//! through the hardware walker, and the two interleavings the scheme exists for (a lost install
//! race, a wait for a table's pointer) forced with the test-only pause points.

extern crate std;

use super::hooks;
use super::*;
use crate::{walk, ArmLpae4k, HeapTableAlloc, TableReader};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Barrier;
use std::time::Duration;
use std::vec::Vec;

type Spt = SharedPageTable<ArmLpae4k, HeapTableAlloc>;

const PAGE: u64 = 4096;
const MB2: u64 = 2 << 20;

/// Reads table memory at bus address = CPU address, as the device would with
/// [`HeapTableAlloc`]'s pages.
struct Heap;

impl TableReader for Heap {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        assert_eq!(bytes, 8);
        // SAFETY: the walker only reads addresses taken from the table's own entries (its root
        // and table pointers, all HeapTableAlloc pages alive while the table is), and no thread
        // is writing while the tests walk.
        Some(unsafe { core::ptr::read_volatile(addr.0 as *const u64) })
    }
}

fn table() -> Spt {
    SharedPageTable::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap()
}

/// What the device's walker translates `iova` to, if anything.
fn device(pt: &Spt, iova: u64) -> Option<u64> {
    walk::<ArmLpae4k, _>(&Heap, pt.root(), Iova(iova))
        .ok()
        .map(|t| t.dma.0)
}

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Each thread owns every `THREADS`-th 64 KiB chunk of a 64 MiB window (so the threads share
/// every leaf table and race to install them), maps random runs inside its chunks, some of them
/// 2 MiB ranges in a region of its own (blocks, or leaf tables built whole), unmaps random
/// earlier ones, and keeps its own model. At the end every page of the window is checked through the hardware walker and
/// `translate` against the union of the models.
#[test]
fn threads_on_disjoint_ranges_match_the_model() {
    const THREADS: u64 = 4;
    const CHUNK: u64 = 64 << 10;
    const BASE: u64 = 1 << 30;
    const WINDOW: u64 = 64 << 20;
    const BLOCKS: u64 = 4 << 30; // each thread's 2 MiB blocks: BLOCKS + t * 64 MiB
    for seed in [1u64, 2, 3] {
        let pt = table();
        let start = Barrier::new(THREADS as usize);
        let models: Vec<BTreeMap<u64, u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (pt, start) = (&pt, &start);
                    s.spawn(move || {
                        let mut rng = Rng(seed * 0x9e37_79b9 + t + 1);
                        let mut model = BTreeMap::new();
                        let mut mapped: Vec<(u64, u64)> = Vec::new();
                        let mut g = Gather::new();
                        start.wait();
                        for _ in 0..600 {
                            if !mapped.is_empty() && rng.below(3) == 0 {
                                let (iova, size) =
                                    mapped.swap_remove(rng.below(mapped.len() as u64) as usize);
                                assert_eq!(pt.unmap(Iova(iova), size, &mut g), Ok(size));
                                for p in (iova..iova + size).step_by(PAGE as usize) {
                                    model.remove(&p);
                                }
                                continue;
                            }
                            let (iova, size, dma) = if rng.below(8) == 0 {
                                let iova = BLOCKS + t * (64 << 20) + rng.below(32) * MB2;
                                // A 2 MiB-aligned address gives a block; one 4 KiB off,
                                // a leaf table built whole and then installed.
                                let off = if rng.below(2) == 0 { PAGE } else { 0 };
                                (iova, MB2, (8 << 30) + rng.below(1024) * MB2 + off)
                            } else {
                                let chunk = rng.below(WINDOW / CHUNK / THREADS) * THREADS + t;
                                let first = rng.below(CHUNK / PAGE);
                                let pages = 1 + rng.below(CHUNK / PAGE - first);
                                let iova = BASE + chunk * CHUNK + first * PAGE;
                                (iova, pages * PAGE, (1 << 40) + rng.below(1 << 20) * PAGE)
                            };
                            let overlaps = (iova..iova + size)
                                .step_by(PAGE as usize)
                                .any(|p| model.contains_key(&p));
                            let r = pt.map(Iova(iova), DmaAddr(dma), size, Prot::RW, &mut g);
                            if overlaps {
                                assert!(matches!(r, Err(Error::AlreadyMapped { .. })), "{r:?}");
                            } else {
                                assert_eq!(r, Ok(()));
                                mapped.push((iova, size));
                                for (i, p) in (iova..iova + size).step_by(PAGE as usize).enumerate()
                                {
                                    model.insert(p, dma + i as u64 * PAGE);
                                }
                            }
                        }
                        pt.iotlb_sync(&mut g, |_| {}).unwrap();
                        model
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all = BTreeMap::new();
        for m in models {
            all.extend(m);
        }
        let mut pages: Vec<u64> = (BASE..BASE + WINDOW).step_by(PAGE as usize).collect();
        for t in 0..THREADS {
            let b = BLOCKS + t * (64 << 20);
            pages.extend((b..b + (64 << 20)).step_by(PAGE as usize));
        }
        for p in pages {
            let want = all.get(&p).copied();
            assert_eq!(
                device(&pt, p),
                want,
                "seed {seed}, IOVA {p:#x}: the device's walk"
            );
            assert_eq!(
                pt.translate(Iova(p)).map(|t| t.0 .0),
                want,
                "seed {seed}, {p:#x}"
            );
        }
        let s = pt.stats();
        // Every table allocated is live or was freed after a lost race: none leaked, none lost.
        assert_eq!(s.tables_allocated - s.tables_freed, pt.table_count() as u64);
        std::println!("seed {seed}: {s:?}, {} pages mapped", all.len());
    }
}

/// Thread A needs a new leaf table and is held between allocating it and installing it, while
/// thread B installs its own there and maps. A's compare-exchange must fail, A must free its
/// table and map into B's. With a plain store instead of the compare-exchange, B's table (and
/// B's page) would be lost from the tree: the device's walk of B's page checks that.
#[test]
fn the_thread_that_loses_the_install_race_uses_the_winners_table() {
    let pt = table();
    let (a_iova, b_iova) = (0x4000_0000u64, 0x4000_1000u64);
    let (go_b, b_may_go) = mpsc::channel::<()>();
    let (b_done, wait_b) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let pt = &pt;
        s.spawn(move || {
            hooks::set(Some(Box::new(move |point| {
                if point == "before-install" {
                    go_b.send(()).unwrap();
                    wait_b.recv_timeout(Duration::from_secs(30)).unwrap();
                }
            })));
            let mut g = Gather::new();
            pt.map(Iova(a_iova), DmaAddr(0x8000_0000), PAGE, Prot::RW, &mut g)
                .unwrap();
            hooks::set(None);
        });
        s.spawn(move || {
            // A holds the first install (of the L1 table) until B has mapped.
            b_may_go.recv_timeout(Duration::from_secs(30)).unwrap();
            let mut g = Gather::new();
            pt.map(Iova(b_iova), DmaAddr(0x9000_0000), PAGE, Prot::RW, &mut g)
                .unwrap();
            b_done.send(()).unwrap();
        });
    });
    assert_eq!(device(&pt, a_iova), Some(0x8000_0000));
    assert_eq!(device(&pt, b_iova), Some(0x9000_0000));
    let s = pt.stats();
    assert_eq!(s.installs_lost, 1, "{s:?}");
    assert_eq!(s.tables_freed, 1, "A's table went back to the allocator");
    assert_eq!(pt.table_count(), 4, "root, L1, L2, L3: one of each");
}

/// Thread A installs a leaf table's entry and is held before publishing the table's CPU
/// pointer; thread B, mapping beside it, finds the entry installed and must wait for the
/// pointer (the test releases A only once B reports waiting; without the wait B would never
/// report it, and the test fails on the timeout).
#[test]
fn a_thread_waits_for_the_pointer_of_a_table_just_installed() {
    let pt = table();
    let mut g = Gather::new();
    // The upper tables exist already, so the only install left is the leaf table's.
    pt.map(
        Iova(0x4020_0000),
        DmaAddr(0x7000_0000),
        PAGE,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    let (a_iova, b_iova) = (0x4000_0000u64, 0x4000_1000u64);
    let (installed, b_may_go) = mpsc::channel::<()>();
    let (b_waiting, wait_b) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let pt = &pt;
        s.spawn(move || {
            hooks::set(Some(Box::new(move |point| {
                if point == "installed" {
                    installed.send(()).unwrap();
                    wait_b
                        .recv_timeout(Duration::from_secs(30))
                        .expect("B never waited for the table's pointer");
                }
            })));
            let mut g = Gather::new();
            pt.map(Iova(a_iova), DmaAddr(0x8000_0000), PAGE, Prot::RW, &mut g)
                .unwrap();
            hooks::set(None);
        });
        s.spawn(move || {
            b_may_go.recv_timeout(Duration::from_secs(30)).unwrap();
            hooks::set(Some(Box::new(move |point| {
                if point == "waiting" {
                    b_waiting.send(()).unwrap();
                }
            })));
            let mut g = Gather::new();
            pt.map(Iova(b_iova), DmaAddr(0x9000_0000), PAGE, Prot::RW, &mut g)
                .unwrap();
            hooks::set(None);
        });
    });
    assert_eq!(device(&pt, a_iova), Some(0x8000_0000));
    assert_eq!(device(&pt, b_iova), Some(0x9000_0000));
    let s = pt.stats();
    assert_eq!((s.child_waits, s.installs_lost), (1, 0), "{s:?}");
}

#[test]
fn shared_page_table_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Spt>();
}
