//! Random operation sequences checked against a reference model, for every format, with a
//! coherent and a non-coherent walker. One harness, generic over the format: the page is the
//! format's granule, "block" operations are rounded to its smallest block.
//!
//! The model is a `BTreeMap` from page IOVA to (page bus address, effective protection). After
//! every operation:
//! - the result is the model's: AlreadyMapped with the lowest mapped IOVA (nothing changed),
//!   unmap returns the bytes the model had in the range, NoMemory (injected) leaves the model;
//! - `mappings()` expanded to pages equals the model;
//! - `translate` and the independent walker (`walk`, reading the allocator's CPU or device copy)
//!   agree with the model on every page touched by the operation, its neighbours and a stride
//!   sample of the window (every page of the window at the end of each case); for the IPU an
//!   unmapped page walks to the dummy page;
//! - the IOVA ranges handed to the TLB invalidation cover every page whose translation changed
//!   (unmap always; map for the IPU, whose TLB caches the dummy translation);
//! - non-coherent: no line is cleaned twice by a successful operation, every line of a still-live
//!   table whose CPU bytes changed was cleaned, and the device copy of every live page equals
//!   its CPU bytes;
//! - the counters agree with the allocator: `lines_cleaned` and `sync_calls` with the sync log,
//!   `tables_allocated - tables_freed` with the live pages, `pte_stores` is at least the number
//!   of entries whose value changed.
//!
//! At the end everything is unmapped and the allocator is back to its baseline (root, plus the
//! dummy page and dummy L2 for the IPU): nothing leaked.
//!
//! Windows (every format but the IPU: centred on the end of the first root entry, so every
//! level's index wraps inside it; at least 4096 pages and two blocks):
//! - ARM 4 KiB (stage 1 and stage 2): 512 GiB - 8 MiB .. 512 GiB + 8 MiB (L0 0 -> 1, L1 511 -> 0, L2 511 -> 0);
//! - ARM 16 KiB: 128 TiB - 32 MiB .. 128 TiB + 32 MiB, 4096 pages, one 32 MiB block each side
//!   (L0 0 -> 1, L1 and L2 2047 -> 0);
//! - ARM 64 KiB: 4 TiB - 512 MiB .. 4 TiB + 512 MiB, 16384 pages, one 512 MiB block each side
//!   (root 0 -> 1, L2 8191 -> 0);
//! - IPU: the top 16 MiB of its 4 GiB space (four L2 tables, ending at the limit);
//! - ARMv7 short descriptors: the same top 16 MiB (16 sections, L1 index 0xff0 -> 0xfff);
//! - Apple DART (16 KiB pages, no blocks): 0 .. 64 MiB (L1 0 -> 1, L2 2047 -> 0);
//! - RISC-V Sv39: 1 GiB +- 8 MiB; Sv48, VT-d second stage and AMD v1: 512 GiB +- 8 MiB (as
//!   ARM 4 KiB).

mod common;

use common::{covered, pte_bytes, sync_gather, synced_lines, SimAlloc};
use devmmu_pagetable::*;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::collections::{BTreeMap, BTreeSet};

/// The 4 KiB page of the fixed ARM tests.
const PAGE: u64 = 0x1000;

/// The format's page (granule) in bytes: the unit of the window and of every operation.
fn page<F: Format>() -> u64 {
    F::granule()
}

/// Pages per smallest block (2 MiB on ARM 4 KiB, 32 MiB on 16 KiB, 512 MiB on 64 KiB); 512 for
/// a format without blocks (the IPU), where `block` only shapes the operation.
fn block_pages<F: Format>() -> u64 {
    (1..F::LEVELS)
        .rev()
        .find(|&l| F::LEAF_LEVELS[l - 1])
        .map_or(512, |l| 1 << (F::level_shift(l - 1) - F::GRANULE_SHIFT))
}

/// Pages in the window: 4096 (16 MiB with 4 KiB pages), and at least two blocks.
fn window_pages<F: Format>() -> u64 {
    4096.max(2 * block_pages::<F>())
}

/// Decodes a table pointer as the root level would (for [`SimAlloc::check_links`]): for ARM a
/// type 0b11 entry (at the last level, a page, never a table page here); for the IPU any entry.
fn link<F: Format>(w: u64) -> Option<u64> {
    match F::decode(0, <F::Pte as PteWord>::from_u64(w)) {
        Entry::Table(a) => Some(a.0),
        _ => None,
    }
}

/// Bus addresses handed to maps start here, far from the allocator's table pages (0x1000_0000
/// onwards) so an IPU leaf can never equal the dummy page's entry. (Formats with an output size
/// below 40 bits use the second quarter of it instead, above the table pages, which are all
/// below 0x2100_0000.)
const DMA_BASE: u64 = 0x4_0000_0000;

type Model = BTreeMap<u64, (u64, Prot)>;

#[derive(Debug, Clone)]
enum Op {
    /// Map `pages` pages at window page `at` from bus page `dma`; if `block`, everything is
    /// rounded to 2 MiB so ARM uses blocks.
    Map {
        at: u64,
        pages: u64,
        dma: u64,
        prot: u8,
        block: bool,
    },
    /// Like `Map`, but moved to the first free gap at or after `at` and shrunk to fit it, so it
    /// usually succeeds.
    MapFree {
        at: u64,
        pages: u64,
        dma: u64,
        prot: u8,
        block: bool,
    },
    /// Map a scatter-gather list (1-8 segments of `(bus page, pages)`) from window page `at`.
    MapSegs {
        at: u64,
        segs: Vec<(u64, u64, bool)>,
        prot: u8,
    },
    /// Unmap `pages` pages from window page `at`.
    Unmap { at: u64, pages: u64 },
    /// Unmap a sub-range of the `pick`-th mapped run, cutting into blocks.
    UnmapInside { pick: usize, from: u64, pages: u64 },
    /// A map whose `k`-th table allocation fails.
    MapFail {
        at: u64,
        pages: u64,
        dma: u64,
        k: usize,
    },
    /// An unmap whose `k`-th table allocation fails.
    UnmapFail { at: u64, pages: u64, k: usize },
}

fn prot_strategy() -> impl Strategy<Value = u8> {
    // Mostly grant access; sometimes not, to check NoAccess on the way.
    prop_oneof![
        8 => (0u8..64).prop_map(|b| b | 1),
        4 => 0u8..64,
        2 => Just(0x3u8),
    ]
}

/// Operations on the window of format `F`; lengths scale with its block (for a 512-page block:
/// up to 600 and 2048 pages).
fn op_strategy<F: Format>() -> impl Strategy<Value = Op> {
    let at = 0..window_pages::<F>();
    let block = block_pages::<F>();
    let pages = prop_oneof![4 => 1u64..16, 3 => 1u64..block + 88, 1 => 1u64..4 * block];
    let dma = 0u64..(1 << 24);
    prop_oneof![
        3 => (at.clone(), pages.clone(), dma.clone(), prot_strategy(), prop::bool::weighted(0.3))
            .prop_map(|(at, pages, dma, prot, block)| Op::Map { at, pages, dma, prot, block }),
        6 => (at.clone(), pages.clone(), dma.clone(), prot_strategy(), prop::bool::weighted(0.4))
            .prop_map(|(at, pages, dma, prot, block)| Op::MapFree { at, pages, dma, prot, block }),
        2 => (
            at.clone(),
            prop::collection::vec((dma.clone(), 1u64..80, prop::bool::weighted(0.2)), 1..=8),
            prot_strategy()
        )
            .prop_map(|(at, segs, prot)| Op::MapSegs { at, segs, prot }),
        3 => (at.clone(), pages.clone()).prop_map(|(at, pages)| Op::Unmap { at, pages }),
        3 => (any::<usize>(), 0u64..2 * block, 1u64..block + 88)
            .prop_map(|(pick, from, pages)| Op::UnmapInside { pick, from, pages }),
        1 => (at.clone(), pages.clone(), dma.clone(), 0usize..6)
            .prop_map(|(at, pages, dma, k)| Op::MapFail { at, pages, dma, k }),
        1 => (at, 1u64..block + 88, 0usize..4).prop_map(|(at, pages, k)| Op::UnmapFail { at, pages, k }),
    ]
}

/// One test run: a page table, its allocator, the model and the bookkeeping the checks need.
struct Run<F: Format> {
    sim: SimAlloc,
    pt: PageTable<F, SimAlloc>,
    model: Model,
    /// First IOVA of the window.
    base: u64,
    coherent: bool,
    baseline_live: usize,
    /// Sync-log lines and calls seen so far (the log is cleared per operation).
    lines_seen: u64,
    syncs_seen: u64,
    step: u64,
    /// Ranges invalidated inside the operation (the break-before-make of `unmap_split`).
    inner_ranges: Vec<(u64, u64)>,
}

/// What one operation did, as the checks need it.
struct Outcome {
    /// Whether the operation completed (as opposed to being refused or undone).
    ok: bool,
    /// Whether it was a map (for the IPU, maps must be invalidated too).
    map: bool,
    /// Pages whose model entry changed.
    changed: BTreeSet<u64>,
    /// IOVA pages the operation addressed.
    touched: (u64, u64),
    /// Whether it split blocks (break-before-make cleans a parent line more than once).
    split: bool,
}

impl<F: Format> Run<F> {
    fn new(coherent: bool) -> Self {
        let sim = SimAlloc::new();
        sim.set_walker_reads_device(!coherent);
        sim.check_links(pte_bytes::<F>(), link::<F>);
        let pt = PageTable::new(
            sim.clone(),
            PageTableConfig {
                coherent_walk: coherent,
            },
        )
        .unwrap();
        // 32-bit spaces (IPU, ARMv7 short descriptors): the top of the space. ARM LPAE: centred on the end of the first root entry, so
        // every level's index wraps inside the window.
        let window = window_pages::<F>() * page::<F>();
        let base = if !F::EMPTY_IS_ZERO || F::IOVA_BITS <= 32 {
            (1u64 << F::IOVA_BITS) - window
        } else {
            (1u64 << F::level_shift(0)) - window / 2
        };
        let baseline_live = sim.live_pages();
        assert_eq!(baseline_live, if F::EMPTY_IS_ZERO { 1 } else { 3 });
        let lines_seen = sim.logged_lines();
        let syncs_seen = sim.sync_log().len() as u64;
        sim.clear_sync_log();
        let run = Self {
            sim,
            pt,
            model: Model::new(),
            base,
            coherent,
            baseline_live,
            lines_seen,
            syncs_seen,
            step: 0,
            inner_ranges: Vec::new(),
        };
        run.check_counters();
        run
    }

    fn iova(&self, n: u64) -> u64 {
        self.base + n * page::<F>()
    }

    fn dma(n: u64, block: bool) -> u64 {
        // An output space below 40 bits (ARMv7 short descriptors 32, DART1 36): bus addresses
        // from a quarter of it, within the next quarter.
        let d = if F::OA_BITS < 40 {
            let quarter = 1u64 << (F::OA_BITS - 2);
            quarter + (n * page::<F>()) % quarter
        } else {
            DMA_BASE + n * page::<F>()
        };
        if block {
            d & !(block_pages::<F>() * page::<F>() - 1)
        } else {
            d
        }
    }

    /// Clamps `[at, at + pages)` to the window; rounds to blocks if asked.
    fn clamp(at: u64, pages: u64, block: bool) -> (u64, u64) {
        let (mut at, mut pages) = (at, pages.max(1));
        if block {
            at &= !(block_pages::<F>() - 1);
            pages = pages.div_ceil(block_pages::<F>()) * block_pages::<F>();
        }
        let pages = pages.min(window_pages::<F>() - at);
        (at, pages)
    }

    fn first_mapped(&self, from: u64, to: u64) -> Option<u64> {
        self.model.range(from..to).next().map(|(&k, _)| k)
    }

    fn apply(&mut self, op: &Op) {
        self.step += 1;
        let before = self.sim.snapshot();
        let stats = self.pt.stats();
        self.sim.clear_sync_log();
        let mut g = Gather::new();
        let out = match *op {
            Op::Map {
                at,
                pages,
                dma,
                prot,
                block,
            } => {
                let (at, pages) = Self::clamp(at, pages, block);
                let segs = [(Self::dma(dma, block), pages * page::<F>())];
                self.map(at, &segs, Prot::from_bits_truncate(prot), None, &mut g)
            }
            Op::MapFree {
                at,
                pages,
                dma,
                prot,
                block,
            } => {
                let (at, pages) = Self::clamp(at, pages, block);
                // Slide to the first free page at or after `at` (keeping block alignment), then
                // shrink to the gap.
                let mut start = self.iova(at);
                let end_of_window = self.iova(window_pages::<F>());
                while start < end_of_window && self.model.contains_key(&start) {
                    start += page::<F>();
                    if block {
                        start = start.next_multiple_of(block_pages::<F>() * page::<F>());
                    }
                }
                if start >= end_of_window {
                    return self.finish_noop();
                }
                let limit = self
                    .first_mapped(start, end_of_window)
                    .unwrap_or(end_of_window);
                let pages = pages.min((limit - start) / page::<F>());
                let at = (start - self.base) / page::<F>();
                let segs = [(Self::dma(dma, block), pages * page::<F>())];
                self.map(at, &segs, Prot::from_bits_truncate(prot), None, &mut g)
            }
            Op::MapSegs { at, ref segs, prot } => {
                let mut left = window_pages::<F>() - at;
                let mut list = Vec::new();
                for &(dma, pages, block) in segs {
                    if left == 0 {
                        break;
                    }
                    // A block segment is 1-3 whole blocks, so a suitably aligned list uses them.
                    let pages = if block {
                        (1 + pages % 3) * block_pages::<F>()
                    } else {
                        pages
                    };
                    let pages = pages.clamp(1, left);
                    left -= pages;
                    list.push((Self::dma(dma, block), pages * page::<F>()));
                }
                self.map(at, &list, Prot::from_bits_truncate(prot), None, &mut g)
            }
            Op::Unmap { at, pages } => {
                let (at, pages) = Self::clamp(at, pages, false);
                self.unmap(at, pages, None, &mut g)
            }
            Op::UnmapInside { pick, from, pages } => {
                // Find the runs of contiguous mapped pages and cut into one of them.
                let runs = self.runs();
                if runs.is_empty() {
                    return self.finish_noop();
                }
                let (s, e) = runs[pick % runs.len()];
                let len = (e - s) / page::<F>();
                let off = from % len;
                let pages = pages.min(len - off);
                let at = (s - self.base) / page::<F>() + off;
                self.unmap(at, pages, None, &mut g)
            }
            Op::MapFail { at, pages, dma, k } => {
                let (at, pages) = Self::clamp(at, pages, false);
                let segs = [(Self::dma(dma, false), pages * page::<F>())];
                self.map(at, &segs, Prot::RW, Some(k), &mut g)
            }
            Op::UnmapFail { at, pages, k } => {
                let (at, pages) = Self::clamp(at, pages, false);
                self.unmap(at, pages, Some(k), &mut g)
            }
        };
        self.sim.clear_faults();
        let after_op = self.sim.snapshot();
        let mut ranges = sync_gather(&mut self.pt, &mut g);
        ranges.append(&mut self.inner_ranges);
        assert!(g.is_empty());
        self.check_step(&out, &before, &after_op, &ranges, stats);
    }

    fn finish_noop(&mut self) {
        self.check_counters();
    }

    /// Maximal runs of contiguous mapped pages in the model, as `(start, end)` IOVAs.
    fn runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &p in self.model.keys() {
            match runs.last_mut() {
                Some(r) if r.1 == p => r.1 = p + page::<F>(),
                _ => runs.push((p, p + page::<F>())),
            }
        }
        runs
    }

    fn map(
        &mut self,
        at: u64,
        segs: &[(u64, u64)],
        prot: Prot,
        fail: Option<usize>,
        g: &mut Gather,
    ) -> Outcome {
        let iova = self.iova(at);
        let total: u64 = segs.iter().map(|s| s.1).sum();
        let end = iova + total;
        let list: Vec<_> = segs.iter().map(|&(d, l)| (DmaAddr(d), l)).collect();
        if let Some(k) = fail {
            self.sim.fail_after(k);
        }
        let failed_before = self.sim.failed_allocs();
        let r = self.pt.map_segments(Iova(iova), &list, prot, g);
        let touched = (iova, end);
        let none = |map| Outcome {
            ok: false,
            map,
            changed: BTreeSet::new(),
            touched,
            split: false,
        };
        if !prot.grants_access() {
            assert_eq!(r, Err(Error::NoAccess { prot }));
            return none(true);
        }
        if let Some(first) = self.first_mapped(iova, end) {
            assert_eq!(r, Err(Error::AlreadyMapped { iova: Iova(first) }));
            assert!(g.is_empty(), "AlreadyMapped must gather nothing");
            return none(true);
        }
        if self.sim.failed_allocs() > failed_before {
            assert_eq!(r, Err(Error::NoMemory));
            return none(true);
        }
        r.unwrap_or_else(|e| panic!("map {iova:#x}+{total:#x} {segs:x?}: {e}"));
        let eff = F::effective_prot(prot);
        let mut changed = BTreeSet::new();
        let mut p = iova;
        for &(d, l) in segs {
            for off in (0..l).step_by(page::<F>() as usize) {
                self.model.insert(p, (d + off, eff));
                changed.insert(p);
                p += page::<F>();
            }
        }
        Outcome {
            ok: true,
            map: true,
            changed,
            touched,
            split: false,
        }
    }

    fn unmap(&mut self, at: u64, pages: u64, fail: Option<usize>, g: &mut Gather) -> Outcome {
        let iova = self.iova(at);
        let end = iova + pages * page::<F>();
        if let Some(k) = fail {
            self.sim.fail_after(k);
        }
        // Whether a boundary cuts a block, from the walker (the tables as the device reads
        // them, not the page table's bookkeeping).
        let cut = [iova, end].into_iter().any(|at| {
            walk::<F, _>(&self.sim, self.pt.root(), Iova(at)).is_ok_and(|t| t.leaf_iova.0 < at)
        });
        if cut {
            // The plain unmap refuses, changing nothing; the operation goes on with the split.
            let before = self.sim.snapshot();
            let r = self.pt.unmap(Iova(iova), end - iova, g);
            assert!(
                matches!(r, Err(Error::PartialBlock { .. })),
                "unmap {iova:#x}..{end:#x} cuts a block: {r:?}"
            );
            assert!(g.is_empty(), "a refused unmap must gather nothing");
            assert_eq!(self.sim.snapshot(), before);
            assert!(self.sim.sync_log().is_empty());
        }
        if let Some(k) = fail {
            self.sim.fail_after(k);
        }
        let failed_before = self.sim.failed_allocs();
        let splits = self.pt.stats().blocks_split;
        let r = if cut {
            let inner = &mut self.inner_ranges;
            self.pt
                .unmap_split(Iova(iova), end - iova, g, |i, n| inner.push((i.0, i.0 + n)))
        } else {
            self.pt.unmap(Iova(iova), end - iova, g)
        };
        let split = self.pt.stats().blocks_split > splits;
        let touched = (iova, end);
        if self.sim.failed_allocs() > failed_before {
            assert_eq!(r, Err(Error::NoMemory));
            assert!(g.is_empty(), "a refused unmap must gather nothing");
            assert!(
                self.sim.sync_log().is_empty(),
                "a refused unmap must not sync"
            );
            return Outcome {
                ok: false,
                map: false,
                changed: BTreeSet::new(),
                touched,
                split,
            };
        }
        let gone: Vec<u64> = self.model.range(iova..end).map(|(&k, _)| k).collect();
        assert_eq!(
            r,
            Ok(gone.len() as u64 * page::<F>()),
            "unmap {iova:#x}..{end:#x}"
        );
        if gone.is_empty() {
            assert!(g.is_empty(), "unmapping a hole must gather nothing");
        }
        for p in &gone {
            self.model.remove(p);
        }
        Outcome {
            ok: true,
            map: false,
            changed: gone.into_iter().collect(),
            touched,
            split,
        }
    }

    /// What the walker must return for `iova`: the model's page, the dummy page (IPU), or a
    /// translation fault (ARM; never a walk abort, which would mean a dangling table pointer).
    fn expect_walk(&self, iova: u64) -> Option<(u64, Prot)> {
        let page = iova & !(page::<F>() - 1);
        match self.model.get(&page) {
            Some(&(d, p)) => Some((d + (iova - page), p)),
            None => self
                .pt
                .dummy_page()
                .map(|dummy| (dummy.0 + (iova - page), Prot::RW)),
        }
    }

    fn check_page(&self, page: u64) {
        // An odd offset inside the page checks the offset arithmetic too.
        let iova = page + 0x8;
        let want = self.model.get(&page).map(|&(d, p)| (DmaAddr(d + 8), p));
        assert_eq!(
            self.pt.translate(Iova(iova)),
            want,
            "translate {iova:#x} (step {})",
            self.step
        );
        let walker = if self.coherent {
            "coherent"
        } else {
            "non-coherent"
        };
        let got = walk::<F, _>(&self.sim, self.pt.root(), Iova(iova));
        match self.expect_walk(iova) {
            Some(want) => assert_eq!(
                got.map(|t| (t.dma.0, t.prot)),
                Ok(want),
                "walk {iova:#x} (step {}, {walker} walker)",
                self.step
            ),
            None => assert!(
                matches!(got, Err(WalkFault::Translation { .. })),
                "walk {iova:#x} (step {}, {walker} walker): {got:?}, want a translation fault",
                self.step
            ),
        }
    }

    fn check_mappings(&self) {
        let mut pages = Model::new();
        for m in self.pt.mappings() {
            assert_eq!(m.size, 1 << F::level_shift(m.level));
            assert_eq!(m.iova.0 % m.size, 0);
            for off in (0..m.size).step_by(page::<F>() as usize) {
                assert!(pages
                    .insert(m.iova.0 + off, (m.dma.0 + off, m.prot))
                    .is_none());
            }
        }
        assert!(
            pages == self.model,
            "mappings() differ from the model at step {}",
            self.step
        );
    }

    fn check_counters(&self) {
        let s = self.pt.stats();
        assert_eq!(s.lines_cleaned, self.lines_seen + self.sim.logged_lines());
        assert_eq!(
            s.sync_calls,
            self.syncs_seen + self.sim.sync_log().len() as u64
        );
        assert_eq!(
            (s.tables_allocated - s.tables_freed) as usize,
            self.sim.live_pages()
        );
        if self.coherent {
            assert_eq!(s.sync_calls, 0);
        }
    }

    fn check_step(
        &mut self,
        out: &Outcome,
        before: &common::Snapshot,
        after_op: &common::Snapshot,
        ranges: &[(u64, u64)],
        stats: Stats,
    ) {
        self.check_counters();
        let log = self.sim.sync_log();
        self.lines_seen += self.sim.logged_lines();
        self.syncs_seen += log.len() as u64;

        // An IPU table freed (an L1 entry pointed back at the dummy table) only after a
        // whole-TLB invalidation; kept tables are never freed.
        let freed = self.pt.stats().tables_freed - stats.tables_freed;
        if !F::EMPTY_IS_ZERO && freed > 0 {
            assert!(
                ranges.contains(&(0, 1 << F::IOVA_BITS)),
                "{freed} IPU tables freed without a whole-TLB invalidation: {ranges:x?}"
            );
            assert!(self.pt.frees_empty_tables() || !out.ok || out.map);
        }

        // TLB invalidation covers every page whose translation changed.
        if !out.map || F::TLB_CACHES_EMPTY {
            for &p in &out.changed {
                assert!(
                    covered(ranges, p),
                    "page {p:#x} changed but not invalidated"
                );
            }
        } else if out.ok {
            assert!(
                ranges.is_empty(),
                "an ARM map needs no invalidation: {ranges:x?}"
            );
        }

        // Stores: at least one per changed entry. New pages start as the format's empty fill.
        let fill = match self.pt.dummy_page() {
            Some(d) => d.0 >> 12,
            None => 0,
        };
        let words = before.changed_words(after_op, pte_bytes::<F>(), fill);
        assert!(
            self.pt.stats().pte_stores - stats.pte_stores >= words,
            "{words} entries changed with {} stores",
            self.pt.stats().pte_stores - stats.pte_stores
        );

        if !self.coherent {
            let synced = synced_lines(&log);
            if out.ok && !out.split {
                // A successful operation cleans each line once (break-before-make cleans the
                // block's entry when cleared and again when the table is linked).
                for (l, n) in &synced {
                    assert_eq!(*n, 1, "line {l:x?} cleaned {n} times in one operation");
                }
            }
            // Every changed line of a table still live after the TLB sync was cleaned.
            let live: BTreeSet<u64> = self.sim.live_addrs().iter().map(|a| a.0).collect();
            for (page, line) in before.changed_lines(after_op) {
                if live.contains(&page) {
                    assert!(
                        synced.contains_key(&(page, line)),
                        "line {line} of live table {page:#x} changed but was not cleaned"
                    );
                }
            }
            assert_eq!(self.sim.stale_pages(), vec![], "device view is stale");
        }

        self.check_mappings();
        // Pages to walk: the addressed range and its neighbours, plus a stride sample.
        let (s, e) = out.touched;
        let lo = s.saturating_sub(page::<F>()).max(self.base);
        let hi = (e + page::<F>()).min(self.iova(window_pages::<F>()));
        let mut pages: BTreeSet<u64> = (lo..hi).step_by(page::<F>() as usize).collect();
        let stride = 97;
        let phase = self.step % stride;
        pages.extend(
            (phase..window_pages::<F>())
                .step_by(stride as usize)
                .map(|p| self.iova(p)),
        );
        for p in pages {
            self.check_page(p);
        }
    }

    /// Every page of the window, through translate and the walker.
    fn check_window(&self) {
        for p in 0..window_pages::<F>() {
            self.check_page(self.iova(p));
        }
    }

    /// Unmaps the whole window and checks nothing leaked.
    fn finish(mut self) {
        self.check_window();
        let mut g = Gather::new();
        let stats = self.pt.stats();
        let before = self.sim.snapshot();
        self.sim.clear_sync_log();
        let out = self.unmap(0, window_pages::<F>(), None, &mut g);
        let after_op = self.sim.snapshot();
        let mut ranges = sync_gather(&mut self.pt, &mut g);
        ranges.append(&mut self.inner_ranges);
        self.check_step(&out, &before, &after_op, &ranges, stats);
        assert!(self.model.is_empty());
        assert_eq!(self.pt.mappings().count(), 0);
        // Tables emptied and kept (the IPU default, as its drivers do) stay linked until drop.
        let kept = self.pt.table_count() - 1;
        if self.pt.frees_empty_tables() {
            assert_eq!(kept, 0, "emptied tables left linked");
        }
        assert_eq!(
            self.sim.live_pages(),
            self.baseline_live + kept,
            "table pages leaked"
        );
        self.check_window();
        let sim = self.sim.clone();
        drop(self);
        assert_eq!(sim.live_pages(), 0, "drop leaked table pages");
    }
}

fn run<F: Format>(coherent: bool, ops: &[Op]) {
    let mut r = Run::<F>::new(coherent);
    for op in ops {
        r.apply(op);
    }
    r.finish();
}

/// As [`run`], with the page table freeing (`free`) or keeping the tables it empties whatever
/// the format's default. Kept tables must be reused by later maps: never a block written over a
/// kept table's entry.
fn run_with_empty_tables<F: Format>(coherent: bool, free: bool, ops: &[Op]) {
    let mut r = Run::<F>::new(coherent);
    r.pt.set_free_empty_tables(free);
    for op in ops {
        r.apply(op);
    }
    r.finish();
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        // Keep the crate's test folder free of regression files; a failure prints its case.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arm_coherent(ops in prop::collection::vec(op_strategy::<ArmLpae4k>(), 1..60)) {
        run::<ArmLpae4k>(true, &ops);
    }

    #[test]
    fn arm_keeping_empty_tables(ops in prop::collection::vec(op_strategy::<ArmLpae4k>(), 1..60)) {
        run_with_empty_tables::<ArmLpae4k>(true, false, &ops);
    }

    #[test]
    fn arm_noncoherent(ops in prop::collection::vec(op_strategy::<ArmLpae4k>(), 1..60)) {
        run::<ArmLpae4k>(false, &ops);
    }

    #[test]
    fn ipu_coherent(ops in prop::collection::vec(op_strategy::<Ipu>(), 1..60)) {
        run::<Ipu>(true, &ops);
    }

    #[test]
    fn ipu_noncoherent(ops in prop::collection::vec(op_strategy::<Ipu>(), 1..60)) {
        run::<Ipu>(false, &ops);
    }

    #[test]
    fn ipu_noncoherent_freeing_tables(ops in prop::collection::vec(op_strategy::<Ipu>(), 1..60)) {
        run_with_empty_tables::<Ipu>(false, true, &ops);
    }

    #[test]
    fn arm_s2_coherent(ops in prop::collection::vec(op_strategy::<ArmLpaeS2>(), 1..60)) {
        run::<ArmLpaeS2>(true, &ops);
    }

    #[test]
    fn arm_s2_noncoherent(ops in prop::collection::vec(op_strategy::<ArmLpaeS2>(), 1..60)) {
        run::<ArmLpaeS2>(false, &ops);
    }

    #[test]
    fn v7s_coherent(ops in prop::collection::vec(op_strategy::<ArmV7s>(), 1..60)) {
        run::<ArmV7s>(true, &ops);
    }

    #[test]
    fn v7s_noncoherent(ops in prop::collection::vec(op_strategy::<ArmV7s>(), 1..60)) {
        run::<ArmV7s>(false, &ops);
    }

    #[test]
    fn dart1_coherent(ops in prop::collection::vec(op_strategy::<AppleDart1>(), 1..60)) {
        run::<AppleDart1>(true, &ops);
    }

    #[test]
    fn dart2_coherent(ops in prop::collection::vec(op_strategy::<AppleDart2>(), 1..60)) {
        run::<AppleDart2>(true, &ops);
    }

    /// DART walkers are coherent; the non-coherent run checks the generic code's cleaning of
    /// large tables that are never freed.
    #[test]
    fn dart2_noncoherent(ops in prop::collection::vec(op_strategy::<AppleDart2>(), 1..60)) {
        run::<AppleDart2>(false, &ops);
    }

    #[test]
    fn dart1_coherent_freeing_tables(
        ops in prop::collection::vec(op_strategy::<AppleDart1>(), 1..60)
    ) {
        run_with_empty_tables::<AppleDart1>(true, true, &ops);
    }

    #[test]
    fn riscv_sv39_coherent(ops in prop::collection::vec(op_strategy::<RiscvSv39>(), 1..60)) {
        run::<RiscvSv39>(true, &ops);
    }

    #[test]
    fn riscv_sv39_noncoherent(ops in prop::collection::vec(op_strategy::<RiscvSv39>(), 1..60)) {
        run::<RiscvSv39>(false, &ops);
    }

    #[test]
    fn riscv_sv48_coherent(ops in prop::collection::vec(op_strategy::<RiscvSv48>(), 1..60)) {
        run::<RiscvSv48>(true, &ops);
    }

    #[test]
    fn vtd_ss_coherent(ops in prop::collection::vec(op_strategy::<VtdSs>(), 1..60)) {
        run::<VtdSs>(true, &ops);
    }

    #[test]
    fn vtd_ss_noncoherent(ops in prop::collection::vec(op_strategy::<VtdSs>(), 1..60)) {
        run::<VtdSs>(false, &ops);
    }

    #[test]
    fn amd_v1_coherent(ops in prop::collection::vec(op_strategy::<AmdV1>(), 1..60)) {
        run::<AmdV1>(true, &ops);
    }

    #[test]
    fn amd_v1_noncoherent(ops in prop::collection::vec(op_strategy::<AmdV1>(), 1..60)) {
        run::<AmdV1>(false, &ops);
    }

    #[test]
    fn arm16k_coherent(ops in prop::collection::vec(op_strategy::<ArmLpae16k>(), 1..60)) {
        run::<ArmLpae16k>(true, &ops);
    }

    #[test]
    fn arm16k_noncoherent(ops in prop::collection::vec(op_strategy::<ArmLpae16k>(), 1..60)) {
        run::<ArmLpae16k>(false, &ops);
    }

    #[test]
    fn arm64k_coherent(ops in prop::collection::vec(op_strategy::<ArmLpae64k>(), 1..60)) {
        run::<ArmLpae64k>(true, &ops);
    }

    #[test]
    fn arm64k_noncoherent(ops in prop::collection::vec(op_strategy::<ArmLpae64k>(), 1..60)) {
        run::<ArmLpae64k>(false, &ops);
    }
}

/// A fixed sequence that must use 2 MiB blocks, split them, and cross every index wrap of the
/// ARM window, so the random suites are not the only ones reaching those paths.
#[test]
fn arm_blocks_and_splits_fixed() {
    let mut r = Run::<ArmLpae4k>::new(false);
    let ops = [
        // Two blocks ending at 512 GiB, then pages across the L0 boundary.
        Op::MapFree {
            at: 0,
            pages: 2048,
            dma: 0,
            prot: 0x3,
            block: true,
        },
        Op::MapFree {
            at: 2048,
            pages: 700,
            dma: 5,
            prot: 0x7,
            block: false,
        },
        // Cut a hole out of the middle of the blocks and across the boundary.
        Op::Unmap {
            at: 1000,
            pages: 1500,
        },
        Op::UnmapFail {
            at: 300,
            pages: 3,
            k: 0,
        },
        Op::Unmap { at: 300, pages: 3 },
        Op::MapSegs {
            at: 1000,
            segs: vec![(0, 300, false), (1024, 0, true), (7, 10, false)],
            prot: 0x1b,
        },
    ];
    for op in &ops {
        r.apply(op);
    }
    assert!(r.pt.stats().blocks_split >= 2, "{:?}", r.pt.stats());
    r.finish();
}

/// The plain heap allocator (bus address = CPU address) through a block split and back: the
/// translations are the model's and every page is given back.
#[test]
fn heap_table_alloc_roundtrip_arm() {
    let mut pt =
        PageTable::<ArmLpae4k, _>::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    pt.map(
        Iova(0x4000_0000),
        DmaAddr(0x80_0000_0000),
        0x4000_0000,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    assert_eq!(pt.table_alloc().live_pages(), 2);
    assert_eq!(
        pt.unmap_split(Iova(0x4020_1000), PAGE, &mut g, |_, _| {}),
        Ok(PAGE)
    );
    sync_gather(&mut pt, &mut g);
    // L1 block split into an L2 table of 511 blocks + one L3 table of 511 pages.
    assert_eq!(pt.table_alloc().live_pages(), 4);
    assert_eq!(pt.mappings().count(), 511 + 511);
    assert_eq!(pt.translate(Iova(0x4020_1000)), None);
    assert_eq!(
        pt.translate(Iova(0x4020_2abc)),
        Some((DmaAddr(0x80_0020_2abc), Prot::RW))
    );
    assert_eq!(
        pt.unmap(Iova(0x4000_0000), 0x4000_0000, &mut g),
        Ok(0x4000_0000 - PAGE)
    );
    sync_gather(&mut pt, &mut g);
    assert_eq!(pt.table_alloc().live_pages(), 1);
    assert_eq!(pt.table_count(), 1);
}

/// A fixed sequence in the manner of [`arm_blocks_and_splits_fixed`], scaled to the window and
/// block of format `F`: blocks over the whole window (at least one on each side of the root
/// boundary), a split whose table allocation fails, then unmaps that cut a block at each end
/// (split with break-before-make), pages mapped into the hole, and scatter-gather maps into the holes.
fn blocks_and_splits_fixed<F: Format>() {
    let (w, b) = (window_pages::<F>(), block_pages::<F>());
    let mut r = Run::<F>::new(false);
    r.apply(&Op::MapFree {
        at: 0,
        pages: w,
        dma: 0,
        prot: 0x3,
        block: true,
    });
    let blocks = r.pt.mappings().filter(|m| m.level + 1 < F::LEVELS).count() as u64;
    assert_eq!(blocks, w / b, "the window is mapped with blocks");
    let ops = [
        Op::UnmapFail {
            at: 3,
            pages: 3,
            k: 0,
        },
        Op::Unmap { at: 3, pages: 3 },
        Op::Unmap {
            at: w / 4 + 5,
            pages: w / 2,
        },
        Op::MapFree {
            at: w / 2,
            pages: w / 8 + 37,
            dma: 5,
            prot: 0x7,
            block: false,
        },
        Op::MapSegs {
            at: 3,
            segs: vec![(9, 3, false)],
            prot: 0x1b,
        },
        Op::MapSegs {
            at: w / 4 + 5,
            segs: vec![(0, 40, false), (7, 10, false)],
            prot: 0x3,
        },
    ];
    for op in &ops {
        r.apply(op);
    }
    assert!(r.pt.stats().blocks_split >= 2, "{:?}", r.pt.stats());
    assert!(r.model.contains_key(&r.iova(3)) && r.model.contains_key(&r.iova(w / 4 + 5)));
    r.finish();
}

#[test]
fn arm_s2_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<ArmLpaeS2>();
}

#[test]
fn v7s_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<ArmV7s>();
}

#[test]
fn riscv_sv39_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<RiscvSv39>();
}

#[test]
fn riscv_sv48_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<RiscvSv48>();
}

#[test]
fn vtd_ss_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<VtdSs>();
}

#[test]
fn amd_v1_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<AmdV1>();
}

#[test]
fn arm16k_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<ArmLpae16k>();
}

#[test]
fn arm64k_blocks_and_splits_fixed() {
    blocks_and_splits_fixed::<ArmLpae64k>();
}

/// The heap allocator's large tables (16 KiB and 64 KiB, `alloc_large_table`) through a map of
/// a block and pages, a block split, and back: every table is given back.
fn heap_large_tables_roundtrip<F: Format>() {
    let mut pt = PageTable::<F, _>::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap();
    let (p, b) = (page::<F>(), block_pages::<F>() * page::<F>());
    let mut g = Gather::new();
    // One block at IOVA 2 blocks, then pages right after it.
    pt.map(Iova(2 * b), DmaAddr(0x80_0000_0000), b, Prot::RW, &mut g)
        .unwrap();
    pt.map(
        Iova(3 * b),
        DmaAddr(0x90_0000_0000),
        4 * p,
        Prot::RW,
        &mut g,
    )
    .unwrap();
    // The root (a 4 KiB page at 48 bits), the tables down to the block's level, and one
    // last-level table: every table below the root is one granule, from alloc_large_table.
    let tables = pt.table_count();
    assert_eq!(pt.table_alloc().live_pages(), tables);
    assert_eq!(pt.unmap_split(Iova(2 * b + p), p, &mut g, |_, _| {}), Ok(p));
    sync_gather(&mut pt, &mut g);
    assert_eq!(
        pt.table_count(),
        tables + 1,
        "the block became a table of pages"
    );
    assert_eq!(pt.translate(Iova(2 * b + p)), None);
    assert_eq!(
        pt.translate(Iova(2 * b + 2 * p + 0x123)),
        Some((DmaAddr(0x80_0000_0000 + 2 * p + 0x123), Prot::RW))
    );
    assert_eq!(pt.unmap(Iova(2 * b), 2 * b, &mut g), Ok(b - p + 4 * p));
    sync_gather(&mut pt, &mut g);
    assert_eq!(pt.table_count(), 1);
    assert_eq!(pt.table_alloc().live_pages(), 1);
}

#[test]
fn heap_large_tables_roundtrip_arm16k() {
    heap_large_tables_roundtrip::<ArmLpae16k>();
}

#[test]
fn heap_large_tables_roundtrip_arm64k() {
    heap_large_tables_roundtrip::<ArmLpae64k>();
}
