//! Fixed workloads of `PageTable<ArmLpae4k>` for instruction counting (callgrind), one per
//! argument; each timed operation is a separate `#[inline(never)]` function, so callgrind's
//! inclusive count of `one_map`, `one_unmap`, `one_sync`, `map_1gib`, `unmap_1gib` is the cost
//! of that operation.
//!
//! - `single` (default): `ROUNDS` map + unmap + `iotlb_sync` of one 4 KiB page into a leaf
//!   table that holds 511 other pages, coherent (the `pagetable_single/map_unmap_4k` case);
//! - `single-noncoherent`: the same with [`FlushTableAlloc`];
//! - `map-4k`: `BULK` maps of 1 GiB of 4 KiB pages from a warm free list, each unmapped again
//!   (`map_4k` and `unmap_4k`);
//! - `map-4k-cold`: the same with every table from the heap;
//! - `map-4k-noncoherent`: `map-4k` with [`FlushTableAlloc`] (a reserve of 514 pages);
//! - `time-single`: not for callgrind: times `single` (coherent) in `BATCHES` batches of
//!   `ROUNDS` pairs and prints the fastest and the median batch in ns per pair (on a loaded
//!   machine the fastest batch is the best estimate of the unloaded cost).
//!
//! ```sh
//! cargo build --release -p devmmu-benches --bin pagetable-profile
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/pagetable-profile single
//! callgrind_annotate --inclusive=yes cg.out | grep -E 'one_(map|unmap|sync)'
//! ```
//! Per operation = the inclusive count / `ROUNDS` (single) or / (`BULK` * 262144) per page.

use devmmu_benches::flush_alloc::FlushTableAlloc;
use devmmu_pagetable::{
    ArmLpae4k, DmaAddr, Gather, HeapTableAlloc, Iova, PageTable, PageTableConfig, Prot, TableAlloc,
};
use std::hint::black_box;

const ROUNDS: u64 = 10_000;
const BULK: u64 = 4;
const GIB: u64 = 1 << 30;
const IOVA: Iova = Iova(GIB);
const DMA_4K: DmaAddr = DmaAddr(4 * GIB + 4096);

type Pt<A> = PageTable<ArmLpae4k, A>;

fn prot() -> Prot {
    Prot::RW | Prot::CACHE
}

fn empty<A: TableAlloc>(alloc: A, coherent: bool) -> Pt<A> {
    PageTable::new(
        alloc,
        PageTableConfig {
            coherent_walk: coherent,
        },
    )
    .expect("an empty table")
}

#[inline(never)]
fn one_map<A: TableAlloc>(pt: &mut Pt<A>, iova: Iova, dma: DmaAddr, g: &mut Gather) {
    pt.map(iova, dma, 4096, prot(), g).expect("map");
}

#[inline(never)]
fn one_unmap<A: TableAlloc>(pt: &mut Pt<A>, iova: Iova, g: &mut Gather) -> u64 {
    pt.unmap(iova, 4096, g).expect("unmap")
}

#[inline(never)]
fn one_sync<A: TableAlloc>(pt: &mut Pt<A>, g: &mut Gather) {
    pt.iotlb_sync(g, |iova, size| {
        black_box((iova, size));
    });
}

fn single<A: TableAlloc>(alloc: A, coherent: bool) {
    let mut pt = empty(alloc, coherent);
    let mut g = Gather::new();
    let others = (2 << 20) - 4096;
    pt.map(IOVA, DMA_4K, others, prot(), &mut g)
        .expect("map 511 pages");
    let (iova, dma) = (Iova(IOVA.0 + others), DmaAddr(DMA_4K.0 + others));
    for _ in 0..ROUNDS {
        one_map(&mut pt, black_box(iova), black_box(dma), &mut g);
        let bytes = one_unmap(&mut pt, black_box(iova), &mut g);
        assert_eq!(bytes, 4096);
        one_sync(&mut pt, &mut g);
    }
    println!("{ROUNDS} rounds of map + unmap + iotlb_sync of one 4 KiB page");
}

#[inline(never)]
fn map_1gib<A: TableAlloc>(pt: &mut Pt<A>, g: &mut Gather) {
    pt.map(IOVA, DMA_4K, GIB, prot(), g).expect("map 1 GiB");
}

#[inline(never)]
fn unmap_1gib<A: TableAlloc>(pt: &mut Pt<A>, g: &mut Gather) {
    pt.unmap(IOVA, GIB, g).expect("unmap 1 GiB");
    pt.iotlb_sync(g, |iova, size| {
        black_box((iova, size));
    });
}

fn bulk<A: TableAlloc>(mut alloc: impl FnMut() -> A, coherent: bool) {
    for _ in 0..BULK {
        let mut pt = empty(alloc(), coherent);
        let mut g = Gather::new();
        map_1gib(&mut pt, &mut g);
        unmap_1gib(&mut pt, &mut g);
    }
    println!("{BULK} maps and unmaps of 1 GiB of 4 KiB pages");
}

const BATCHES: usize = 200;

fn time_single() {
    let mut pt = empty(HeapTableAlloc::new(), true);
    let mut g = Gather::new();
    let others = (2 << 20) - 4096;
    pt.map(IOVA, DMA_4K, others, prot(), &mut g)
        .expect("map 511 pages");
    let (iova, dma) = (Iova(IOVA.0 + others), DmaAddr(DMA_4K.0 + others));
    let mut ns: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..ROUNDS {
                one_map(&mut pt, black_box(iova), black_box(dma), &mut g);
                black_box(one_unmap(&mut pt, black_box(iova), &mut g));
                one_sync(&mut pt, &mut g);
            }
            t.elapsed().as_nanos() as f64 / ROUNDS as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    println!(
        "map + unmap + iotlb_sync of one 4 KiB page: fastest batch {:.1} ns, median batch {:.1} ns \
         ({BATCHES} batches of {ROUNDS})",
        ns[0],
        ns[BATCHES / 2]
    );
}

fn main() {
    match std::env::args().nth(1).as_deref().unwrap_or("single") {
        "single" => single(HeapTableAlloc::new(), true),
        "single-noncoherent" => single(FlushTableAlloc::new(), false),
        "map-4k" => bulk(|| HeapTableAlloc::with_reserve(514).expect("reserve"), true),
        "map-4k-cold" => bulk(HeapTableAlloc::new, true),
        "time-single" => time_single(),
        "map-4k-noncoherent" => bulk(
            || FlushTableAlloc::with_reserve(514).expect("reserve"),
            false,
        ),
        other => {
            eprintln!("pagetable-profile: unknown workload {other:?}");
            std::process::exit(2);
        }
    }
}
