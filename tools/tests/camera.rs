//! Tests of the `devmmu camera` scenario through [`devmmu_tools::camera::capture`], in process:
//! both photographs of tests/data in every combination of MMU format, system DMA ops and
//! coherency (with and without `--rebind`), with the counters worked out from the frame and BO
//! sizes; a frame the device drops, reported as a mismatch in every configuration; the
//! `--dump-pt` listing; the `--output` PNG; and the errors that stop a run before it does any
//! work.
//!
//! Where the expected counters come from (F frames, a ring of N = 4 BOs of B bytes = P pages,
//! each BO DMA-mapped once for the device, `Bidirectional` as GEM shmem maps objects, however
//! its bindings are protected):
//! - each frame brackets the BO with two CPU accesses (clear, then read back); each bracket syncs
//!   the BO for the CPU at its start and for the device at its end (dma-buf's
//!   `DMA_BUF_IOCTL_SYNC` START/END; kernel/dma/direct.h for what each sync does);
//! - a bind maps the BO (`dma_map_sgtable`, an implicit sync for the device); an unbind unmaps
//!   it (an implicit sync for the CPU);
//! - non-coherent: every sync does cache maintenance over the whole BO, and the device-MMU table
//!   pages (one chunk of `CHUNK_PAGES` pages, mapped `Bidirectional`) are cleaned when mapped;
//! - direct DMA with the BOs above 4 GiB and a 32-bit mask: every page bounces through swiotlb;
//!   swiotlb copies to the bounce buffer at map (all directions, since the 5.19 info-leak fix)
//!   and at each sync for the device, and back to the BO at each sync for the CPU and at unmap,
//!   as it does for a `Bidirectional` mapping (kernel/dma/swiotlb.c); each copy is a sync that
//!   did work;
//! - the counters are read before the teardown after the last frame.

mod common;
use common::*;
use std::path::{Path, PathBuf};

use devmmu_mm::device::MmuFormat;
use devmmu_mm::dma::CHUNK_PAGES;
use devmmu_mm::vm::VA_START;
use devmmu_tools::camera::{capture, CameraArgs, CameraError, DmaArg, PlatformArg, Report, RING};
use devmmu_tools::sensor::SensorError;
use image::RgbImage;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// Page size in bytes (IOPTE granule of both formats, and the BO size unit).
const PAGE: u64 = 4096;

/// Cache line in bytes: the unit of `pte_lines_cleaned`.
const LINE: u64 = 64;

/// More frames than ring slots, so the ring wraps (slot 0 is captured twice).
const FRAMES: u32 = 5;

/// The photographs: file name, width and height in pixels (tests/data/README.md).
const PHOTOS: [(&str, u32, u32); 2] = [("astronaut.png", 512, 512), ("coffee.png", 600, 400)];

/// Every registered MMU format.
const MMUS: &[MmuFormat] = MmuFormat::ALL;
const DMAS: [DmaArg; 2] = [DmaArg::Iommu, DmaArg::Direct];

fn photo(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

fn args(input: Option<PathBuf>, mmu: MmuFormat, dma: DmaArg, coherent: bool) -> CameraArgs {
    CameraArgs {
        input,
        frames: FRAMES,
        mmu,
        dma,
        platform: PlatformArg::Sim,
        pci: None,
        coherent,
        rebind: false,
        output: None,
        va_map: None,
        trace: None,
        dump_pt: false,
        json: false,
        skip_frame: None,
    }
}

/// Runs the scenario and returns its report and the `--dump-pt` lines.
fn run(args: &CameraArgs) -> (Report, Vec<String>) {
    let mut dump = Vec::new();
    let outcome =
        capture(args, |l| dump.push(l.to_string())).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(outcome.success(), "{args:?}: {:?}", outcome.report);
    (outcome.report, dump)
}

// ---------------------------------------------------------------------------------------------
// The device page table of each format, for the ring's 4 BOs: together they span less than one
// leaf table (IPU: 1024 entries = 4 MiB; ARM: 512 entries = 2 MiB), from VA_START.

struct Geometry {
    /// Bytes per IOPTE.
    pte_bytes: u64,
    /// Entries per leaf table.
    leaf_entries: u64,
    /// Table-pointer IOPTEs written by the first bind to reach the one leaf table.
    pointer_stores: u64,
    /// Table pages allocated in all.
    tables: u64,
    /// Device TLB invalidations per bind and per unbind.
    invalidations_per_bind: u64,
    invalidations_per_unbind: u64,
    /// Level of the leaves, as the dump prints it.
    leaf_level: &'static str,
}

fn geometry(mmu: MmuFormat) -> Geometry {
    match mmu {
        // ipu6-mmu.c: 32-bit IOPTEs; the dummy page and the dummy L2 table are allocated with
        // the root, one L2 table by the first bind (1 L1 entry points at it). Empty entries point
        // at the dummy page, which the TLB may have cached, so a map invalidates too; the
        // device's only invalidation is the whole TLB.
        MmuFormat::Ipu => Geometry {
            pte_bytes: 4,
            leaf_entries: 1024,
            pointer_stores: 1,
            tables: 4,
            invalidations_per_bind: 1,
            invalidations_per_unbind: 1,
            leaf_level: "L1",
        },
        // ARM LPAE 4K, 4 levels (48-bit IOVA): 64-bit IOPTEs; the first bind adds the level 1, 2
        // and 3 tables under the root (3 table pointers). Invalid entries are never cached by a
        // TLB, so a map needs no invalidation (io-pgtable-arm.c), an unmap one range.
        MmuFormat::ArmLpae4k => Geometry {
            pte_bytes: 8,
            leaf_entries: 512,
            pointer_stores: 3,
            tables: 4,
            invalidations_per_bind: 0,
            invalidations_per_unbind: 1,
            leaf_level: "L3",
        },
    }
}

/// Cache lines spanned by `pages` consecutive IOPTEs starting at IOVA `va` in a leaf table.
fn leaf_lines(g: &Geometry, va: u64, pages: u64) -> u64 {
    let first = (va / PAGE) % g.leaf_entries * g.pte_bytes;
    let end = first + pages * g.pte_bytes;
    end.div_ceil(LINE) - first / LINE
}

/// NV12 frame bytes and BO bytes of a `width` x `height` frame: rows padded to 64 bytes, a Y
/// plane of `height` rows and a CbCr plane of `ceil(height / 2)` rows; the BO is whole pages.
fn nv12_sizes(width: u32, height: u32) -> (u64, u64) {
    let stride = u64::from(width).next_multiple_of(64);
    let frame = stride * (u64::from(height) + u64::from(height.div_ceil(2)));
    (frame, frame.next_multiple_of(PAGE))
}

/// Checks every counter of `r` against its value worked out from the sizes (module docs).
fn check_counters(r: &Report, a: &CameraArgs, width: u32, height: u32) {
    let ctx = format!("{a:?}");
    let (frame_bytes, bo) = nv12_sizes(width, height);
    let pages = bo / PAGE;
    let n = RING as u64;
    let f = u64::from(a.frames);
    let g = geometry(a.mmu);
    let direct = a.dma == DmaArg::Direct;
    // The derivations below hold for a ring inside one leaf table.
    assert!(
        VA_START / PAGE + n * pages <= g.leaf_entries,
        "{ctx}: ring too large"
    );

    assert_eq!(
        (r.frames, r.width, r.height),
        (a.frames, width, height),
        "{ctx}"
    );
    assert_eq!((r.frame_bytes, r.bo_bytes), (frame_bytes, bo), "{ctx}");
    let names = (
        match a.mmu {
            MmuFormat::Ipu => "ipu",
            MmuFormat::ArmLpae4k => "arm-lpae-4k",
        },
        if direct { "direct" } else { "iommu" },
    );
    assert_eq!((r.mmu, r.dma_ops), names, "{ctx}");
    assert_eq!((r.coherent, r.rebind), (a.coherent, a.rebind), "{ctx}");
    assert!(r.nv12_match, "{ctx}: {:?}", r.first_mismatch);
    assert_eq!(r.frames_matched, a.frames, "{ctx}");
    assert_eq!(r.first_mismatch, None, "{ctx}");
    assert_eq!((r.faults, r.dma_leaks), (0, 0), "{ctx}");

    // Slot of each frame, and the IOVA of each slot: the BOs sit back to back from VA_START
    // (best fit, page alignment since no BO reaches a block size), and a rebind gets the hole
    // its own unbind left, the only one of its size.
    let slot_va = |slot: u64| VA_START + slot * bo;
    let rebinds: Vec<u64> = if a.rebind {
        (0..f).map(|frame| frame % n).collect()
    } else {
        Vec::new()
    };
    let rebind_count = rebinds.len() as u64;

    // IOPTE stores: every page of the ring once, the table pointers once, and for each rebind
    // the BO's pages cleared and written again.
    assert_eq!(
        r.iopte_stores,
        n * pages + g.pointer_stores + rebind_count * 2 * pages,
        "{ctx}"
    );
    assert_eq!(r.tables_allocated, g.tables, "{ctx}");
    assert_eq!(
        r.tlb_invalidations,
        n * g.invalidations_per_bind
            + rebind_count * (g.invalidations_per_bind + g.invalidations_per_unbind),
        "{ctx}"
    );

    // PTE lines: each table page is cleaned whole once, before the walker can reach it (the
    // first bind's leaves and lower pointers are inside tables it creates); the root entry it
    // sets is one more line. Every later bind or unbind cleans each line its IOPTEs touch, once.
    let expected_lines = if a.coherent {
        0
    } else {
        g.tables * (PAGE / LINE)
            + 1
            + (1..n)
                .map(|s| leaf_lines(&g, slot_va(s), pages))
                .sum::<u64>()
            + rebinds
                .iter()
                .map(|&s| 2 * leaf_lines(&g, slot_va(s), pages))
                .sum::<u64>()
    };
    assert_eq!(r.pte_lines_cleaned, expected_lines, "{ctx}");

    // Streaming syncs (module docs): per frame two syncs of the BO each way; per bind one for
    // the device, per rebind's unbind one for the CPU; the table chunk's map when not coherent.
    // A coherent device behind the IOMMU has nothing to do on any of them.
    let maps = n + rebind_count;
    let (for_device, for_cpu) = match (a.coherent, direct) {
        (false, _) => (
            maps * bo + 2 * f * bo + CHUNK_PAGES * PAGE,
            2 * f * bo + rebind_count * bo,
        ),
        // Only the bounce copies of the BO's one Bidirectional mapping: into the bounce buffer
        // at map and at each sync for the device, back at each sync for the CPU and at unmap.
        (true, true) => (maps * bo + 2 * f * bo, 2 * f * bo + rebind_count * bo),
        (true, false) => (0, 0),
    };
    assert_eq!(r.synced_bytes_for_device, for_device, "{ctx}");
    assert_eq!(r.synced_bytes_for_cpu, for_cpu, "{ctx}");
    let bounced = if direct {
        maps * bo + 4 * f * bo + rebind_count * bo
    } else {
        0
    };
    assert_eq!(r.bounced_bytes, bounced, "{ctx}");
    assert!(r.elapsed_ms.is_finite() && r.elapsed_ms >= 0.0, "{ctx}");
}

/// The photo in every combination of MMU, DMA ops and coherency, without and with `--rebind`.
fn every_configuration(name: &str, width: u32, height: u32) {
    let mut runs = 0;
    for &mmu in MMUS {
        for dma in DMAS {
            for coherent in [false, true] {
                for rebind in [false, true] {
                    let a = CameraArgs {
                        rebind,
                        ..args(Some(photo(name)), mmu, dma, coherent)
                    };
                    let (r, dump) = run(&a);
                    assert!(dump.is_empty(), "no --dump-pt, yet {dump:?}");
                    check_counters(&r, &a, width, height);
                    runs += 1;
                }
            }
        }
    }
    assert_eq!(runs, 8 * MMUS.len());
}

#[test]
fn astronaut_in_every_configuration() {
    let (name, w, h) = PHOTOS[0];
    every_configuration(name, w, h);
}

#[test]
fn coffee_in_every_configuration() {
    let (name, w, h) = PHOTOS[1];
    every_configuration(name, w, h);
}

#[test]
fn the_counters_the_issue_names_hold() {
    // The issue's own wording, on top of the exact values above: bounce only with direct DMA,
    // cache maintenance only when not coherent, every ring page written.
    let (name, w, h) = PHOTOS[1];
    let pages = nv12_sizes(w, h).1 / PAGE;
    for &mmu in MMUS {
        for dma in DMAS {
            for coherent in [false, true] {
                let (r, _) = run(&args(Some(photo(name)), mmu, dma, coherent));
                let ctx = format!("{mmu:?} {dma:?} coherent={coherent}");
                assert!(r.nv12_match && r.faults == 0, "{ctx}");
                assert!(r.iopte_stores >= RING as u64 * pages, "{ctx}");
                match dma {
                    DmaArg::Direct => assert!(r.bounced_bytes > 0, "{ctx}"),
                    DmaArg::Iommu => assert_eq!(r.bounced_bytes, 0, "{ctx}"),
                }
                if coherent {
                    assert_eq!(r.pte_lines_cleaned, 0, "{ctx}");
                } else {
                    assert!(r.pte_lines_cleaned > 0, "{ctx}");
                    assert!(r.synced_bytes_for_device > 0, "{ctx}");
                    assert!(r.synced_bytes_for_cpu > 0, "{ctx}");
                }
            }
        }
    }
}

#[test]
fn rebind_stores_grow_with_frames() {
    let (name, w, h) = PHOTOS[0];
    let pages = nv12_sizes(w, h).1 / PAGE;
    for &mmu in MMUS {
        let stores = |frames: u32| {
            let a = CameraArgs {
                frames,
                rebind: true,
                ..args(Some(photo(name)), mmu, DmaArg::Iommu, false)
            };
            run(&a).0.iopte_stores
        };
        let (three, six) = (stores(3), stores(6));
        // Each extra frame clears and rewrites one BO's IOPTEs.
        assert_eq!(six - three, 3 * 2 * pages, "{mmu:?}");
        // Without --rebind the stores do not depend on the frame count.
        let fixed = |frames: u32| {
            run(&CameraArgs {
                frames,
                ..args(Some(photo(name)), mmu, DmaArg::Iommu, false)
            })
            .0
            .iopte_stores
        };
        assert_eq!(fixed(1), fixed(6), "{mmu:?}");
    }
}

#[test]
fn the_built_in_chart_runs_without_input() {
    let a = CameraArgs {
        frames: 1,
        ..args(None, MmuFormat::Ipu, DmaArg::Iommu, false)
    };
    let (r, _) = run(&a);
    let (frame_bytes, bo) = nv12_sizes(1280, 720);
    assert_eq!(
        (r.width, r.height, r.frame_bytes, r.bo_bytes),
        (1280, 720, frame_bytes, bo)
    );
    assert!(r.nv12_match && r.frames_matched == 1 && r.faults == 0);
    // 4 x 338 pages cross the 4 MiB an IPU L2 table covers: two L2 tables, two L1 pointers.
    assert_eq!(bo / PAGE, 338);
    assert_eq!(r.iopte_stores, RING as u64 * 338 + 2);
    assert_eq!(r.tables_allocated, 3 + 2);
}

// ---------------------------------------------------------------------------------------------
// The frame check can fail: a frame the device did not write is a mismatch.
//
// Every frame carries its number (the sensor's stamp), so a buffer the device skipped fails the
// check whatever it holds: the driver's clear, or, with direct DMA, the frame of the previous lap
// that the sync for the CPU copies back from the bounce buffer (the CPU's clear never reaches a
// bounce buffer of a `FromDevice` mapping). Without the stamp the second case passed, since a
// still image gives the same bytes every frame.

/// Every counter of a report, with the verdict, the timing and the mismatch text left out.
fn counters(r: &Report) -> [u64; 13] {
    [
        r.frames.into(),
        r.width.into(),
        r.height.into(),
        r.frame_bytes,
        r.bo_bytes,
        r.iopte_stores,
        r.pte_lines_cleaned,
        r.tlb_invalidations,
        r.tables_allocated,
        r.synced_bytes_for_device,
        r.synced_bytes_for_cpu,
        r.bounced_bytes,
        r.dma_leaks,
    ]
}

#[test]
fn a_dropped_frame_is_a_mismatch_in_every_configuration() {
    let (name, w, h) = PHOTOS[1];
    // A frame of the first lap (its buffer has held no frame yet) and one of the second (its
    // buffer, or its bounce buffer, held frame `skip - RING`).
    let skips = [0, RING as u32];
    assert!(FRAMES > RING as u32, "the run must reach the second lap");
    let mut runs = 0;
    for &mmu in MMUS {
        for dma in DMAS {
            for coherent in [false, true] {
                for rebind in [false, true] {
                    let a = CameraArgs {
                        rebind,
                        ..args(Some(photo(name)), mmu, dma, coherent)
                    };
                    // Without a dropped frame, every frame matches (run checks it).
                    let (clean, _) = run(&a);
                    check_counters(&clean, &a, w, h);
                    for skip in skips {
                        let s = CameraArgs {
                            skip_frame: Some(skip),
                            ..a.clone()
                        };
                        let ctx = format!("{s:?}");
                        let outcome = capture(&s, |_| {}).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        assert!(!outcome.success(), "{ctx}: {:?}", outcome.report);
                        let r = outcome.report;
                        assert!(!r.nv12_match, "{ctx}");
                        assert_eq!(r.frames_matched, FRAMES - 1, "{ctx}");
                        let m = r.first_mismatch.as_deref().unwrap_or("");
                        assert!(m.starts_with(&format!("frame {skip}: ")), "{ctx}: {m:?}");
                        assert_eq!(r.faults, 0, "{ctx}");
                        // Dropping a frame changes the verdict, nothing else: the driver did the
                        // same maps, syncs and bounces.
                        assert_eq!(counters(&r), counters(&clean), "{ctx}");
                    }
                    runs += 1;
                }
            }
        }
    }
    // --mmu {every format} x --dma {iommu, direct} x --coherent {no, yes} x --rebind {no, yes}.
    assert_eq!(runs, 8 * MMUS.len());
}

// ---------------------------------------------------------------------------------------------
// --dump-pt

/// One mapped run of the dump: IOVA and bus address ranges `[start, end)`, leaf size, level,
/// permissions.
#[derive(Debug)]
struct DumpRun {
    va: (u64, u64),
    dma: (u64, u64),
    kib: u64,
    level: String,
    prot: String,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("hex {s:?}"))
}

fn range(s: &str) -> (u64, u64) {
    let (a, b) = s.split_once('-').unwrap_or_else(|| panic!("range {s:?}"));
    (hex(a), hex(b))
}

/// Parses `  va A-B  dma C-D  K KiB pages  Ln  prot`.
fn parse_run(line: &str) -> DumpRun {
    let w: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(w.len(), 9, "{line:?}");
    assert_eq!(
        (w[0], w[2], w[5], w[6]),
        ("va", "dma", "KiB", "pages"),
        "{line:?}"
    );
    DumpRun {
        va: range(w[1]),
        dma: range(w[3]),
        kib: w[4].parse().unwrap(),
        level: w[7].to_string(),
        prot: w[8].to_string(),
    }
}

#[test]
fn dump_lists_every_ring_buffer() {
    let (name, w, h) = PHOTOS[1];
    let bo = nv12_sizes(w, h).1;
    for &mmu in MMUS {
        for dma in DMAS {
            for coherent in [false, true] {
                let a = CameraArgs {
                    dump_pt: true,
                    frames: 1,
                    ..args(Some(photo(name)), mmu, dma, coherent)
                };
                let ctx = format!("{mmu:?} {dma:?} coherent={coherent}");
                let (r, dump) = run(&a);
                let g = geometry(mmu);
                let (header, lines) = dump.split_first().expect("a header line");
                assert!(
                    header.starts_with(&format!("device page table ({}, root 0x", r.mmu)),
                    "{ctx}: {header:?}"
                );
                let runs: Vec<DumpRun> = lines.iter().map(|l| parse_run(l)).collect();
                // Runs in IOVA order, each a whole number of 4 KiB leaves at the leaf level,
                // mapping as many bus bytes as IOVA bytes, all inside the 32-bit DMA mask (the
                // BOs are above 4 GiB: the IOPTEs hold what the DMA layer returned).
                for run in &runs {
                    let len = run.va.1 - run.va.0;
                    assert!(len > 0 && len % PAGE == 0, "{ctx}: {run:?}");
                    assert_eq!(run.dma.1 - run.dma.0, len, "{ctx}: {run:?}");
                    assert!(run.dma.1 <= 1 << 32, "{ctx}: {run:?}");
                    assert_eq!(run.kib, 4, "{ctx}: {run:?}");
                    assert_eq!(run.level, g.leaf_level, "{ctx}: {run:?}");
                    // Bound write-only; only ARM encodes cacheability (coherent device).
                    assert_eq!(&run.prot[1..2], "w", "{ctx}: {run:?}");
                    if mmu == MmuFormat::ArmLpae4k {
                        let c = if coherent { "c" } else { "-" };
                        assert_eq!(&run.prot[3..4], c, "{ctx}: {run:?}");
                    }
                }
                // Together the runs cover exactly the 4 ring buffers' IOVA ranges, back to back
                // from the first usable IOVA, with no gap and nothing else mapped.
                let mut at = VA_START;
                for run in &runs {
                    assert_eq!(run.va.0, at, "{ctx}: gap or overlap before {run:?}");
                    at = run.va.1;
                }
                assert_eq!(at, VA_START + RING as u64 * bo, "{ctx}");
                for slot in 0..RING as u64 {
                    let (s, e) = (VA_START + slot * bo, VA_START + (slot + 1) * bo);
                    assert!(
                        runs.iter().any(|r| r.va.0 <= s && s < r.va.1)
                            && runs.iter().any(|r| r.va.0 < e && e <= r.va.1),
                        "{ctx}: slot {slot}"
                    );
                }
                if dma == DmaArg::Iommu {
                    // map_sg gives each BO one IOVA range; successive BOs' ranges are not
                    // adjacent in the same order as their device VAs, so no run spans two BOs.
                    assert_eq!(runs.len(), RING, "{ctx}: {runs:?}");
                    assert!(runs.iter().all(|r| r.va.1 - r.va.0 == bo), "{ctx}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --output

/// Peak signal-to-noise ratio in dB over all samples of two same-sized RGB images.
fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = se / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[test]
fn output_png_is_the_captured_photo() {
    let s = Scratch::new("camera-output");
    for (i, (name, w, h)) in PHOTOS.into_iter().enumerate() {
        let out = s.path(&format!("frame{i}.png"));
        let a = CameraArgs {
            output: Some(out.clone()),
            frames: 2,
            ..args(
                Some(photo(name)),
                MmuFormat::ArmLpae4k,
                DmaArg::Direct,
                false,
            )
        };
        run(&a);
        let got = image::open(&out).unwrap().into_rgb8();
        assert_eq!(got.dimensions(), (w, h), "{name}");
        let input = image::open(photo(name)).unwrap().into_rgb8();
        let db = psnr(&input, &got);
        // Not identical (4:2:0 chroma, 8-bit limited range), but close.
        assert!(db > 30.0 && db.is_finite(), "{name}: PSNR {db:.1} dB");
    }
    // Only the PNGs: no temporary file left next to them.
    assert_eq!(s.entries(), ["frame0.png", "frame1.png"]);
}

// ---------------------------------------------------------------------------------------------
// Errors: refused before any work, nothing written.

#[test]
fn bad_input_is_refused_before_any_work() {
    let s = Scratch::new("camera-errors");
    let missing = s.path("missing.png");
    let a = CameraArgs {
        output: Some(s.path("out.png")),
        dump_pt: true,
        ..args(Some(missing.clone()), MmuFormat::Ipu, DmaArg::Iommu, false)
    };
    let mut dumped = 0;
    match capture(&a, |_| dumped += 1) {
        Err(CameraError::Input(SensorError::NotFound { path })) => assert_eq!(path, missing),
        other => panic!("expected Input(NotFound), got {other:?}"),
    }
    assert_eq!(
        dumped, 0,
        "the page table was dumped: the run got past its input"
    );
    assert!(s.entries().is_empty(), "{:?}", s.entries());
}

#[test]
fn bad_output_is_refused_before_any_work() {
    let s = Scratch::new("camera-bad-output");
    let out = s.path("no-such-dir/out.png");
    let a = CameraArgs {
        output: Some(out.clone()),
        dump_pt: true,
        ..args(
            Some(photo(PHOTOS[0].0)),
            MmuFormat::Ipu,
            DmaArg::Iommu,
            false,
        )
    };
    let mut dumped = 0;
    match capture(&a, |_| dumped += 1) {
        Err(CameraError::Output(SensorError::OutputParentMissing { path, parent })) => {
            assert_eq!(path, out);
            assert_eq!(parent, s.path("no-such-dir"));
        }
        other => panic!("expected Output(OutputParentMissing), got {other:?}"),
    }
    assert_eq!(dumped, 0);
    // The output names a directory: refused, the directory left as it was.
    let a = CameraArgs {
        output: Some(s.0.clone()),
        ..a
    };
    assert!(matches!(
        capture(&a, |_| {}),
        Err(CameraError::Output(SensorError::OutputIsDirectory { .. }))
    ));
    assert!(s.entries().is_empty(), "{:?}", s.entries());
}
