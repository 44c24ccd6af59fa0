//! Concurrent maps on one table: `SharedPageTable<ArmLpae4k>` mapping two disjoint 1 GiB ranges
//! (4 KiB pages) with one thread and with two, against `PageTable` mapping the same 2 GiB alone
//! and the plain-store limit of the same leaves with one thread and with two, in one run.
//!
//! `cargo bench -p devmmu-benches --bench shared`. Every case maps 2 GiB = 524288 pages per
//! iteration; criterion reports ns per page (`Throughput::Elements`). Tables come from a
//! `HeapTableAlloc` reserve made untimed (a table pool in steady state).
//!
//! Timing of the threaded cases: the worker threads are spawned untimed and spin on a start
//! flag; each records when it starts and when its map returns, and the iteration's time is the
//! last end minus the first start (thread creation and joining are not timed).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use devmmu_benches::limit::LeafTables;
use devmmu_pagetable::{
    ArmLpae4k, DmaAddr, Format, Gather, HeapTableAlloc, Iova, PageTable, PageTableConfig, Prot,
    SharedPageTable,
};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
/// Leaf pages mapped per iteration: 2 GiB of 4 KiB pages.
const PAGES: u64 = 2 * GIB / 4096;
/// The two disjoint ranges: 1 GiB aligned, so each is one L1 entry, one L2 table, 512 L3 tables.
const RANGES: [(Iova, DmaAddr); 2] = [
    (Iova(GIB), DmaAddr(8 * GIB + 4096)),
    (Iova(2 * GIB), DmaAddr(16 * GIB + 4096)),
];
/// Tables below the root for both ranges: 1 L1, 2 L2, 1024 L3.
const TABLES: usize = 1 + 2 + 1024;

fn prot() -> Prot {
    Prot::RW | Prot::CACHE
}

fn shared() -> SharedPageTable<ArmLpae4k, HeapTableAlloc> {
    SharedPageTable::new(
        HeapTableAlloc::with_reserve(TABLES).expect("table reserve"),
        PageTableConfig::default(),
    )
    .expect("an empty table")
}

fn map_one(pt: &SharedPageTable<ArmLpae4k, HeapTableAlloc>, r: usize) {
    let mut g = Gather::new();
    pt.map(RANGES[r].0, RANGES[r].1, GIB, prot(), &mut g)
        .expect("map 1 GiB");
}

/// Runs `work(t)` on `threads` threads started together; returns last end - first start.
fn race(threads: usize, work: &(dyn Fn(usize) + Sync)) -> Duration {
    let go = AtomicBool::new(false);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let go = &go;
                s.spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let start = Instant::now();
                    work(t);
                    (start, Instant::now())
                })
            })
            .collect();
        go.store(true, Ordering::Release);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = spans.iter().map(|s| s.0).min().unwrap();
    let last = spans.iter().map(|s| s.1).max().unwrap();
    last - first
}

fn concurrent(c: &mut Criterion) {
    let kept = devmmu_benches::heap::keep_freed_memory();
    eprintln!("heap: freed memory kept in the process: {kept}");
    let mut g = c.benchmark_group("shared_2GiB");
    g.throughput(Throughput::Elements(PAGES))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(3));

    let attrs = ArmLpae4k::leaf_attrs(3, prot());
    let mut tables = LeafTables::new(1024);
    g.bench_function("limit_store", |b| {
        b.iter(|| tables.store::<ArmLpae4k>(attrs, black_box(RANGES[0].1)))
    });
    drop(tables);

    // The same stores split over two threads, each into its own 512 tables: what the machine
    // allows two threads at best.
    let mut halves = [LeafTables::new(512), LeafTables::new(512)];
    g.bench_function("limit_store_2threads", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let cells: Vec<std::sync::Mutex<&mut LeafTables>> =
                        halves.iter_mut().map(std::sync::Mutex::new).collect();
                    race(2, &|t| {
                        let mut lt = cells[t].lock().expect("one thread per half");
                        lt.store::<ArmLpae4k>(attrs, black_box(RANGES[t].1));
                    })
                })
                .sum()
        })
    });
    drop(halves);

    g.bench_function("pagetable_1thread", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut pt = PageTable::<ArmLpae4k, _>::new(
                    HeapTableAlloc::with_reserve(TABLES).expect("table reserve"),
                    PageTableConfig::default(),
                )
                .expect("an empty table");
                let t = Instant::now();
                let mut gather = Gather::new();
                for (iova, dma) in RANGES {
                    pt.map(iova, dma, GIB, prot(), &mut gather).expect("map");
                }
                total += t.elapsed();
                drop(black_box(pt));
            }
            total
        })
    });

    g.bench_function("shared_1thread", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let pt = shared();
                    let d = race(1, &|_| {
                        map_one(&pt, 0);
                        map_one(&pt, 1);
                    });
                    drop(black_box(pt));
                    d
                })
                .sum()
        })
    });

    g.bench_function("shared_2threads", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let pt = shared();
                    let d = race(2, &|t| map_one(&pt, t));
                    drop(black_box(pt));
                    d
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, concurrent);
criterion_main!(benches);
