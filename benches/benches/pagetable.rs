//! IOPTE update benchmarks: devmmu's `PageTable<ArmLpae4k>` against aarch64-paging 0.12 and
//! against the physical limits, all in one run.
//!
//! `cargo bench -p devmmu-benches --bench pagetable`; the table of docs/performance.md is then
//! `cargo run -p devmmu-benches --bin bench-table`. What each case times is written in
//! `devmmu_benches::report::CASES`; every case covers 1 GiB = 262144 pages of 4 KiB per
//! iteration (criterion reports per page through `Throughput::Elements`), except the
//! `pagetable_single` group, which covers one page.
//!
//! Freed heap memory is kept in the process (`devmmu_benches::heap`), so that allocating tables
//! is not measured as page faults; set `DEVMMU_BENCH_GLIBC_TRIM=1` to measure with glibc's
//! default instead.
//!
//! The 1 GiB cases use `iter_custom`: each iteration builds its starting state untimed (an empty
//! table, or a mapped one for the unmaps), times only the operation, and drops the table untimed.

use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress, UpdatableDescriptor};
use aarch64_paging::idmap::IdTranslation;
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, VaRange};
use aarch64_paging::Mapping;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use devmmu_benches::flush_alloc::FlushTableAlloc;
use devmmu_benches::limit::{self, LeafTables};
use devmmu_benches::report::*;
use devmmu_pagetable::{
    ArmLpae4k, DmaAddr, Format, Gather, HeapTableAlloc, Iova, PageTable, PageTableConfig, Prot,
    TableAlloc,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const SIZE: u64 = GIB;
/// 1 GiB aligned: the range is one L1 entry, one L2 table and 512 L3 tables.
const IOVA: Iova = Iova(GIB);
/// 4 KiB aligned but not 2 MiB aligned: the map can only use 4 KiB pages.
const DMA_4K: DmaAddr = DmaAddr(4 * GIB + 4096);
/// 2 MiB aligned but not 1 GiB aligned: the map uses 2 MiB blocks, never a 1 GiB one.
const DMA_2M: DmaAddr = DmaAddr(4 * GIB + (2 << 20));

/// Normal cacheable read-write memory; the same descriptor bits as [`peer_flags`].
fn prot() -> Prot {
    Prot::RW | Prot::CACHE
}

type Pt<A> = PageTable<ArmLpae4k, A>;

fn empty<A: TableAlloc>(alloc: A, coherent: bool) -> Pt<A> {
    PageTable::new(
        alloc,
        PageTableConfig {
            coherent_walk: coherent,
        },
    )
    .expect("an empty table")
}

/// A heap allocator whose free list already holds the 514 tables a 1 GiB map needs below the
/// root: a driver's table pool in steady state.
fn warm_heap() -> HeapTableAlloc {
    HeapTableAlloc::with_reserve(514).expect("514 table pages")
}

fn mapped<A: TableAlloc>(alloc: A, coherent: bool, dma: DmaAddr) -> Pt<A> {
    let mut pt = empty(alloc, coherent);
    let mut g = Gather::new();
    pt.map(IOVA, dma, SIZE, prot(), &mut g).expect("map 1 GiB");
    assert!(g.is_empty(), "ARM LPAE maps need no invalidation");
    pt
}

fn unmap_all<A: TableAlloc>(pt: &mut Pt<A>) {
    let mut g = Gather::new();
    let bytes = pt.unmap(IOVA, SIZE, &mut g).expect("unmap 1 GiB");
    debug_assert_eq!(bytes, SIZE);
    pt.iotlb_sync(&mut g, |iova, size| {
        black_box((iova, size));
    });
}

/// Runs `iters` iterations of `op` on a state built by `setup`; only `op` is timed, the
/// state's drop is not.
fn timed<S>(iters: u64, mut setup: impl FnMut() -> S, mut op: impl FnMut(&mut S)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut s = setup();
        let t = Instant::now();
        op(&mut s);
        total += t.elapsed();
        drop(black_box(s));
    }
    total
}

// ---- aarch64-paging ----

type Peer = Mapping<IdTranslation<El1Attributes>, El1And0>;

/// Root at level 0, like ours: 4 levels, so 1 GiB needs the same 514 tables below the root.
fn peer_empty() -> Peer {
    Mapping::with_asid_and_va_range(IdTranslation::new(), 0, 0, El1And0, VaRange::Lower)
}

/// Stage-1 attributes equal to `ArmLpae4k::leaf_attrs(3, prot())` minus the page type bit,
/// which aarch64-paging adds itself at level 3.
fn peer_flags() -> El1Attributes {
    El1Attributes::VALID
        | El1Attributes::ATTRIBUTE_INDEX_1
        | El1Attributes::INNER_SHAREABLE
        | El1Attributes::USER
        | El1Attributes::ACCESSED
        | El1Attributes::NON_GLOBAL
}

fn peer_range() -> MemoryRegion {
    MemoryRegion::new(IOVA.0 as usize, (IOVA.0 + SIZE) as usize)
}

fn peer_mapped() -> Peer {
    let mut m = peer_empty();
    m.map_range(
        &peer_range(),
        PhysicalAddress(DMA_4K.0 as usize),
        peer_flags(),
        Constraints::NO_BLOCK_MAPPINGS,
    )
    .expect("aarch64-paging map");
    m
}

fn peer_clear_leaf(_: &MemoryRegion, d: &mut UpdatableDescriptor<El1Attributes>) -> Result<(), ()> {
    d.set(PhysicalAddress(0), El1Attributes::empty())
}

/// Both libraries must write the same 262144 leaves, or the comparison means nothing.
fn check_peer_writes_our_values() {
    let pt = mapped(HeapTableAlloc::new(), true, DMA_4K);
    let peer = peer_mapped();
    let ours: Vec<u64> = pt
        .mappings()
        .map(|m| ArmLpae4k::leaf_with_addr(ArmLpae4k::leaf_attrs(3, prot()), m.dma))
        .collect();
    let mut theirs = Vec::with_capacity(ours.len());
    peer.walk_range(&peer_range(), &mut |_, d, level| {
        assert_eq!(level, 3);
        theirs.push(d.output_address().0 as u64 | d.flags().bits() as u64);
        Ok(())
    })
    .unwrap();
    assert_eq!(ours.len(), PAGES_1GIB as usize);
    assert_eq!(
        ours, theirs,
        "aarch64-paging writes other descriptors than ours"
    );
}

// ---- the cases ----

fn whole_range(c: &mut Criterion) {
    let kept = devmmu_benches::heap::keep_freed_memory();
    eprintln!("heap: freed memory kept in the process (glibc M_TRIM_THRESHOLD raised): {kept}");
    check_peer_writes_our_values();

    let mut g = c.benchmark_group(GROUP_1GIB);
    g.throughput(Throughput::Elements(PAGES_1GIB))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(3));

    let attrs = ArmLpae4k::leaf_attrs(3, prot());
    let mut tables = LeafTables::new(512);
    assert_eq!(tables.entry_count() as u64, PAGES_1GIB);
    g.bench_function(LIMIT_STORE, |b| {
        b.iter(|| tables.store::<ArmLpae4k>(attrs, black_box(DMA_4K)))
    });
    // The store+flush limit, from two cache states: the lines in cache (an untimed pass of the
    // same stores), and the lines just evicted (an untimed clflushopt pass).
    for (name, evict) in [
        (LIMIT_STORE_FLUSH, false),
        (LIMIT_STORE_FLUSH_EVICTED, true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if evict {
                        black_box(tables.evict());
                    } else {
                        tables.store::<ArmLpae4k>(attrs, black_box(DMA_4K));
                    }
                    let t = Instant::now();
                    tables.store::<ArmLpae4k>(attrs, black_box(DMA_4K));
                    black_box(tables.clean());
                    limit::fence();
                    total += t.elapsed();
                }
                total
            })
        });
    }
    drop(tables);

    {
        let pt = mapped(HeapTableAlloc::new(), true, DMA_4K);
        assert_eq!(
            pt.table_count(),
            515,
            "1 GiB of 4 KiB pages: root, L1, L2, 512 L3"
        );
    }
    g.bench_function(MAP_4K, |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || (empty(warm_heap(), true), Gather::new()),
                |(pt, gather)| pt.map(IOVA, DMA_4K, SIZE, prot(), gather).unwrap(),
            )
        })
    });
    g.bench_function(MAP_4K_COLD, |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || (empty(HeapTableAlloc::new(), true), Gather::new()),
                |(pt, gather)| pt.map(IOVA, DMA_4K, SIZE, prot(), gather).unwrap(),
            )
        })
    });
    g.bench_function(UNMAP_4K, |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || mapped(HeapTableAlloc::new(), true, DMA_4K),
                unmap_all,
            )
        })
    });

    {
        let mut pt = mapped(HeapTableAlloc::new(), true, DMA_2M);
        assert_eq!(
            pt.table_count(),
            3,
            "2 MiB blocks: root, L1 and one L2 table"
        );
        unmap_all(&mut pt);
        assert_eq!(pt.table_count(), 1);
    }
    g.bench_function(MAP_2M, |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || (empty(HeapTableAlloc::new(), true), Gather::new()),
                |(pt, gather)| pt.map(IOVA, DMA_2M, SIZE, prot(), gather).unwrap(),
            )
        })
    });
    g.bench_function(UNMAP_2M, |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || mapped(HeapTableAlloc::new(), true, DMA_2M),
                unmap_all,
            )
        })
    });

    {
        let mut pt = mapped(FlushTableAlloc::new(), false, DMA_4K);
        let (s, a) = (pt.stats(), pt.table_alloc());
        assert_eq!(a.sync_calls(), s.sync_calls);
        assert_eq!(a.lines_cleaned(), s.lines_cleaned);
        assert_eq!(a.rejected_syncs(), 0);
        // Root cleaned at creation, 514 new tables cleaned whole, one root line.
        assert_eq!(s.lines_cleaned, 515 * 64 + 1);
        unmap_all(&mut pt);
        assert_eq!(pt.table_alloc().rejected_syncs(), 0);
    }
    g.bench_function(MAP_4K_NONCOHERENT, |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    let alloc = FlushTableAlloc::with_reserve(514).expect("514 table pages");
                    (empty(alloc, false), Gather::new())
                },
                |(pt, gather)| pt.map(IOVA, DMA_4K, SIZE, prot(), gather).unwrap(),
            )
        })
    });
    g.bench_function(UNMAP_4K_NONCOHERENT, |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || mapped(FlushTableAlloc::new(), false, DMA_4K),
                unmap_all,
            )
        })
    });

    g.bench_function(PEER_MAP_4K, |b| {
        b.iter_custom(|iters| {
            timed(iters, peer_empty, |m| {
                m.map_range(
                    &peer_range(),
                    PhysicalAddress(DMA_4K.0 as usize),
                    peer_flags(),
                    Constraints::NO_BLOCK_MAPPINGS,
                )
                .unwrap()
            })
        })
    });
    g.bench_function(PEER_UNMAP_MODIFY, |b| {
        b.iter_custom(|iters| {
            timed(iters, peer_mapped, |m| {
                m.modify_range(&peer_range(), &peer_clear_leaf).unwrap()
            })
        })
    });
    g.bench_function(PEER_UNMAP_MODIFY_COMPACT, |b| {
        b.iter_custom(|iters| {
            timed(iters, peer_mapped, |m| {
                m.modify_range(&peer_range(), &peer_clear_leaf).unwrap();
                m.compact_subtables();
            })
        })
    });
    g.bench_function(PEER_UNMAP_INVALID, |b| {
        b.iter_custom(|iters| {
            timed(iters, peer_mapped, |m| {
                m.map_range(
                    &peer_range(),
                    PhysicalAddress(0),
                    El1Attributes::empty(),
                    Constraints::NO_BLOCK_MAPPINGS,
                )
                .unwrap()
            })
        })
    });
    g.finish();
}

/// A table holding 511 pages of one leaf table; the free slot is the last page of it.
fn single_setup<A: TableAlloc>(alloc: A, coherent: bool) -> (Pt<A>, Iova, DmaAddr) {
    let mut pt = empty(alloc, coherent);
    let mut g = Gather::new();
    let others = (2 << 20) - 4096;
    pt.map(IOVA, DMA_4K, others, prot(), &mut g).unwrap();
    (pt, Iova(IOVA.0 + others), DmaAddr(DMA_4K.0 + others))
}

fn map_unmap_one<A: TableAlloc>(pt: &mut Pt<A>, iova: Iova, dma: DmaAddr, g: &mut Gather) {
    pt.map(iova, dma, 4096, prot(), g).unwrap();
    let bytes = pt.unmap(iova, 4096, g).unwrap();
    pt.iotlb_sync(g, |iova, size| {
        black_box((iova, size));
    });
    debug_assert_eq!(bytes, 4096);
}

fn single_page(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP_SINGLE);
    g.throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let (mut pt, iova, dma) = single_setup(HeapTableAlloc::new(), true);
    let tables = pt.stats().tables_allocated;
    let mut gather = Gather::new();
    g.bench_function(SINGLE_4K, |b| {
        b.iter(|| map_unmap_one(&mut pt, black_box(iova), black_box(dma), &mut gather))
    });
    assert_eq!(
        pt.stats().tables_allocated,
        tables,
        "no table may be allocated"
    );
    assert_eq!(pt.mappings().count(), 511);

    let (mut pt, iova, dma) = single_setup(FlushTableAlloc::new(), false);
    let tables = pt.stats().tables_allocated;
    g.bench_function(SINGLE_4K_NONCOHERENT, |b| {
        b.iter(|| map_unmap_one(&mut pt, black_box(iova), black_box(dma), &mut gather))
    });
    let s = pt.stats();
    assert_eq!(s.tables_allocated, tables, "no table may be allocated");
    assert_eq!(pt.table_alloc().rejected_syncs(), 0);
    assert_eq!(pt.table_alloc().sync_calls(), s.sync_calls);
    g.finish();
}

criterion_group!(benches, whole_range, single_page);
criterion_main!(benches);
