//! Bind/unbind benchmarks of the device-side manager: `Vm::bind` and `Vm::unbind` of a 64 MiB
//! BO of scattered pages, through direct DMA and through the system IOMMU, for both device MMU
//! formats, plus the system DMA layer's `map_sg` / `unmap_sg` of the same BO on its own.
//!
//! `cargo bench -p devmmu-benches --bench manager` (about 1.5 minutes on 2 cores). Every
//! iteration binds (or unbinds, or maps, or unmaps) the whole BO: 16384 pages of 4 KiB, so
//! criterion's `Throughput::Elements` gives pages per second and the time per iteration is the
//! time per operation. docs/performance.md (section "Bind and unbind") says what each case
//! includes and where the time goes. Case names: `vm/{bind,unbind}/<ops>/<format>/<coherency>`
//! and `dma/{map_sg,unmap_sg}/<ops>/<coherency>`, where `noncoh` means neither the device's data
//! accesses nor its page-table walker snoop the CPU caches.
//!
//! Set-up, all outside the timed part:
//! - one simulated machine per case: `PhysMem` over `MemoryMap::default()` (256 MiB of RAM below
//!   4 GiB, 8 GiB above) in `CacheMode::Native`, so cache maintenance runs the CPU's real
//!   instructions on the BO's memory (`clwb` to clean and `clflushopt` to invalidate where the
//!   CPU has them; the run prints which) and there is no model shadow copy;
//! - a device attached with `Device::attach`, its TLB hook the simulated MMU (`SimMmu`), and
//!   one `Vm` on it;
//! - a BO of 64 MiB from `Bo::new(.., BoFlags::default())`: scattered frames above 4 GiB,
//!   written once by the CPU so that its pages are faulted in;
//! - the operation's partner: each bind iteration is followed by an untimed unbind, each unbind
//!   iteration preceded by an untimed bind (`iter_custom`);
//! - glibc's heap is told to keep freed memory and to serve large blocks itself
//!   ([`tune_heap`]; `DEVMMU_BENCH_GLIBC_TRIM=1` measures with its defaults instead).
//!
//! Before timing, each case binds once and checks the result through the device's DMA ops
//! (IOVA -> bus address -> the BO's physical page, for every page) and prints the counters of
//! one bind and one unbind on stderr.

use std::hint::black_box;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use criterion::{measurement::WallTime, Throughput};
use devmmu_mm::bo::{Bo, BoFlags};
use devmmu_mm::device::{Device, DeviceConfig, MmuFormat};
use devmmu_mm::dma::{DmaDirection, DmaMask, DmaOpsKind, Platform};
use devmmu_mm::model::{SimConfig, SimMmu};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem, PhysSegment, PAGE_SIZE};
use devmmu_mm::vm::{Placement, Vm};
use devmmu_pagetable::{Iova, Prot};

/// Bytes per BO: 64 MiB.
const BO_SIZE: u64 = 64 << 20;
/// 4 KiB pages per BO.
const PAGES: u64 = BO_SIZE / PAGE_SIZE;
/// Bytes of the swiotlb pool of the bouncing case: the whole BO bounces, plus headroom.
const SWIOTLB_BYTES: u64 = 96 << 20;

/// The system DMA ops a case's device is attached with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ops {
    /// Direct DMA with a 64-bit DMA mask: `DmaAddr = phys`, nothing bounces (the device reaches
    /// all RAM, so it gets no swiotlb pool at all).
    Direct64,
    /// Direct DMA with a 32-bit mask and a swiotlb pool below 4 GiB: the BO lies above 4 GiB,
    /// so every page bounces (copied in at map, out at unmap for `Bidirectional`).
    Swiotlb32,
    /// Behind the system IOMMU (`Platform { system_iommu: true, .. }`), 32-bit DMA mask (the
    /// IPU's: the IOMMU allocates IOVAs top-down from the mask, and 32-bit IOVAs fit every
    /// format). The whole BO gets one contiguous IOVA range.
    Iommu,
}

impl Ops {
    fn name(self) -> &'static str {
        match self {
            Ops::Direct64 => "direct64",
            Ops::Swiotlb32 => "swiotlb32",
            Ops::Iommu => "iommu",
        }
    }
}

/// One configuration: DMA ops, MMU format, coherency of the device (data and walker alike).
#[derive(Clone, Copy, Debug)]
struct Case {
    ops: Ops,
    mmu: MmuFormat,
    coherent: bool,
}

impl Case {
    fn id(self) -> String {
        let coh = if self.coherent { "coherent" } else { "noncoh" };
        format!("{}/{}/{}", self.ops.name(), self.mmu.name(), coh)
    }
}

/// A machine, a device on it, a VM and a BO.
struct Setup {
    device: Arc<Device>,
    vm: Vm,
    bo: Arc<Bo>,
}

fn setup(case: Case) -> Setup {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).expect("PhysMem");
    let platform = match case.ops {
        Ops::Direct64 => Platform::default(),
        Ops::Swiotlb32 => Platform {
            swiotlb: Some(SWIOTLB_BYTES),
            ..Platform::default()
        },
        Ops::Iommu => Platform {
            system_iommu: true,
            ..Platform::default()
        },
    };
    let dma_mask = match case.ops {
        Ops::Direct64 => DmaMask::bits(64),
        Ops::Swiotlb32 | Ops::Iommu => DmaMask::bits(32),
    };
    let tlb_invalidation = case.mmu.tlb_invalidation();
    let config = DeviceConfig {
        name: "bench".into(),
        dma_mask,
        coherent: case.coherent,
        coherent_walk: case.coherent,
        mmu: case.mmu,
        tlb_invalidation,
        accept_unenforced_prot: false,
    };
    let sim = SimMmu::new(SimConfig {
        tlb_entries: 64,
        coherent_walk: case.coherent,
        coherent: case.coherent,
    });
    let device = Device::attach(&phys, config, &platform, sim).expect("attach");
    let dma_ops = device.dma_ops();
    match (case.ops, dma_ops.as_direct(), dma_ops.as_iommu()) {
        (Ops::Direct64, Some(d), _) => {
            assert_eq!(d.swiotlb_pool(), None, "a 64-bit mask needs no swiotlb")
        }
        (Ops::Swiotlb32, Some(d), _) => assert!(d.swiotlb_pool().is_some()),
        (Ops::Iommu, _, Some(_)) => {}
        (ops, _, _) => panic!("{ops:?} attached as {:?}", dma_ops.kind()),
    }
    let vm = Vm::new(&device).expect("Vm::new");
    let bo = Bo::new(&phys, BO_SIZE, BoFlags::default()).expect("64 MiB BO");
    assert!(!bo.is_contiguous());
    // Fault the CPU mapping in and give the pages real contents, as a driver's BO has.
    let fill: Vec<u8> = (0..BO_SIZE).map(|i| (i >> 12) as u8).collect();
    bo.write(0, &fill).expect("fill the BO");
    Setup { device, vm, bo }
}

fn bind(s: &Setup) -> Iova {
    s.vm.bind(&s.bo, 0, BO_SIZE, Placement::Anywhere, Prot::RW)
        .expect("bind")
}

fn unbind(s: &Setup, iova: Iova) {
    let n = s.vm.unbind(iova, BO_SIZE).expect("unbind");
    debug_assert_eq!(n, BO_SIZE);
}

/// Binds and unbinds once to warm the table pool, then binds, checks every page's translation
/// end to end, unbinds, and prints what that bind and unbind did.
fn check_and_describe(case: Case, s: &Setup) {
    let ops = s.device.dma_ops();
    // A first cycle fills the VM's table pool, as the timed iterations find it: its pages
    // stay DMA-mapped for reuse, so the live mappings are compared against that, not zero.
    let first = bind(s);
    unbind(s, first);
    let live0 = ops.live_mappings();
    let (pt0, dma0, tlb0) = (s.vm.pt_stats(), ops.stats(), s.device.tlb_invalidations());
    let iova = bind(s);
    let (pt1, dma1, tlb1) = (s.vm.pt_stats(), ops.stats(), s.device.tlb_invalidations());
    for page in 0..PAGES {
        let off = page * PAGE_SIZE;
        let (dma, prot) =
            s.vm.translate(Iova(iova.0 + off))
                .unwrap_or_else(|| panic!("{}: page {page} not mapped", case.id()));
        assert!(prot.contains(Prot::RW));
        let target = ops.bus_to_phys(dma, PAGE_SIZE, true).expect("bus address");
        let want = match case.ops {
            // The device reaches the bounce slot, not the BO's page.
            Ops::Swiotlb32 => target,
            Ops::Direct64 | Ops::Iommu => s.bo.phys_addr(off).unwrap(),
        };
        assert_eq!(target, want, "{}: page {page}", case.id());
    }
    let runs = s.vm.mapped_runs();
    let leaves: u64 = runs.iter().map(|r| r.size / r.page_size).sum();
    let blocks = runs.iter().any(|r| r.page_size > PAGE_SIZE);
    unbind(s, iova);
    let (pt2, dma2, tlb2) = (s.vm.pt_stats(), ops.stats(), s.device.tlb_invalidations());
    assert_eq!(
        ops.live_mappings(),
        live0,
        "{}: unbind left DMA mappings",
        case.id()
    );
    eprintln!(
        "{}: bind: {} DMA segments, {} device leaves ({}), {} IOPTE stores, {} PTE lines \
         cleaned, {} TLB invalidations, {} MiB synced for device, {} MiB bounced; unbind: {} \
         IOPTE stores, {} PTE lines cleaned, {} TLB invalidations, {} MiB synced for CPU, {} \
         MiB bounced, {} system IOTLB invalidations",
        case.id(),
        runs_dma_segments(s),
        leaves,
        if blocks {
            "2 MiB blocks"
        } else {
            "4 KiB pages"
        },
        pt1.pte_stores - pt0.pte_stores,
        pt1.lines_cleaned - pt0.lines_cleaned,
        tlb1 - tlb0,
        (dma1.bytes_synced_for_device - dma0.bytes_synced_for_device) >> 20,
        (dma1.bounced_bytes - dma0.bounced_bytes) >> 20,
        pt2.pte_stores - pt1.pte_stores,
        pt2.lines_cleaned - pt1.lines_cleaned,
        tlb2 - tlb1,
        (dma2.bytes_synced_for_cpu - dma1.bytes_synced_for_cpu) >> 20,
        (dma2.bounced_bytes - dma1.bounced_bytes) >> 20,
        dma2.iotlb_invalidations - dma1.iotlb_invalidations,
    );
}

/// DMA segments the system DMA ops give for the BO (what the device's IOPTEs are written from).
fn runs_dma_segments(s: &Setup) -> usize {
    let sg = s
        .device
        .dma_ops()
        .map_sg(&s.bo.segments(), DmaDirection::Bidirectional)
        .expect("map_sg");
    let n = sg.dma().len();
    s.device.dma_ops().unmap_sg(&sg).expect("unmap_sg");
    n
}

/// Times `iters` runs of `op`, each between an untimed `before` and an untimed `after`.
fn timed<T, U>(
    iters: u64,
    mut before: impl FnMut() -> T,
    mut op: impl FnMut(T) -> U,
    mut after: impl FnMut(U),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = before();
        let t = Instant::now();
        let out = black_box(op(black_box(input)));
        total += t.elapsed();
        after(out);
    }
    total
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(PAGES))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(2500));
    g
}

fn vm_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ops in [Ops::Direct64, Ops::Iommu] {
        for &mmu in MmuFormat::ALL {
            for coherent in [true, false] {
                cases.push(Case { ops, mmu, coherent });
            }
        }
    }
    // The camera without an IOMMU: 32-bit mask, buffers above 4 GiB, every page bounced.
    for coherent in [true, false] {
        cases.push(Case {
            ops: Ops::Swiotlb32,
            mmu: MmuFormat::Ipu,
            coherent,
        });
    }
    cases
}

/// The case's set-up, built and checked on first use.
fn prepared(state: &mut Option<Setup>, case: Case) -> &Setup {
    state.get_or_insert_with(|| {
        let s = setup(case);
        check_and_describe(case, &s);
        s
    })
}

/// Keeps freed heap memory in the process and serves large allocations from the heap, once per
/// run, unless `DEVMMU_BENCH_GLIBC_TRIM` is set (to measure with glibc's defaults).
///
/// A bind allocates about 1.5 MiB of short-lived vectors (the segment lists, the DMA layer's
/// record of the mapping and its index), many of them above glibc's initial 128 KiB mmap
/// threshold. With the defaults, whether they are mmapped and unmapped again, or trimmed from
/// the top of the heap after each unbind, depends on what the process did before (glibc adapts
/// the thresholds to the largest block freed so far), so the same case measured 0.97 or
/// 1.4-1.5 ms depending on the order of the cases: page faults, not the manager. Raising only
/// the trim threshold is worse: it freezes the mmap threshold at 128 KiB (mallopt(3)), and every
/// bind then faults its large vectors in (1.5-1.7 ms).
fn tune_heap() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let tuned = devmmu_benches::heap::keep_freed_memory();
        eprintln!(
            "heap: large blocks from the heap, freed memory kept (glibc mmap and trim \
             thresholds raised): {tuned}; cache maintenance: {:?}",
            devmmu_mm::phys::native::caps()
        );
    });
}

/// `Vm::bind` and `Vm::unbind` of the whole BO, timed separately.
fn bind_unbind(c: &mut Criterion) {
    tune_heap();
    for case in vm_cases() {
        // Built by the first of the two benchmarks that the command line's filter lets run.
        let mut state: Option<Setup> = None;
        let mut g = group(c, "vm");
        g.bench_function(format!("bind/{}", case.id()), |b| {
            let s = prepared(&mut state, case);
            b.iter_custom(|iters| timed(iters, || (), |()| bind(s), |iova| unbind(s, iova)))
        });
        g.bench_function(format!("unbind/{}", case.id()), |b| {
            let s = prepared(&mut state, case);
            b.iter_custom(|iters| timed(iters, || bind(s), |iova| unbind(s, iova), |()| ()))
        });
        g.finish();
    }
}

/// The system DMA layer alone: `DmaOps::map_sg` and `unmap_sg` of the BO's segments (the
/// segment list is built once, outside the timed part), `Bidirectional` as a `Prot::RW` bind.
fn dma_map_sg(c: &mut Criterion) {
    tune_heap();
    for ops in [Ops::Direct64, Ops::Iommu] {
        for coherent in [true, false] {
            // The MMU format plays no part in the DMA mapping.
            let case = Case {
                ops,
                mmu: MmuFormat::ArmLpae4k,
                coherent,
            };
            let coh = if coherent { "coherent" } else { "noncoh" };
            let id = format!("{}/{coh}", ops.name());
            let dir = DmaDirection::Bidirectional;
            let mut state: Option<(Setup, Vec<PhysSegment>)> = None;
            let mut g = group(c, "dma");
            g.bench_function(format!("map_sg/{id}"), |b| {
                let (s, segs) = dma_prepared(&mut state, case);
                let dma = s.device.dma_ops();
                b.iter_custom(|iters| {
                    timed(
                        iters,
                        || (),
                        |()| dma.map_sg(segs, dir).expect("map_sg"),
                        |sg| dma.unmap_sg(&sg).expect("unmap_sg"),
                    )
                })
            });
            g.bench_function(format!("unmap_sg/{id}"), |b| {
                let (s, segs) = dma_prepared(&mut state, case);
                let dma = s.device.dma_ops();
                b.iter_custom(|iters| {
                    timed(
                        iters,
                        || dma.map_sg(segs, dir).expect("map_sg"),
                        |sg| dma.unmap_sg(&sg).expect("unmap_sg"),
                        |()| (),
                    )
                })
            });
            g.finish();
        }
    }
}

/// The set-up of a DMA-only case and the BO's segment list, built on first use.
fn dma_prepared(
    state: &mut Option<(Setup, Vec<PhysSegment>)>,
    case: Case,
) -> (&Setup, &[PhysSegment]) {
    let (s, segs) = state.get_or_insert_with(|| {
        let s = setup(case);
        let kind = s.device.dma_ops().kind();
        let want = match case.ops {
            Ops::Iommu => DmaOpsKind::Iommu,
            Ops::Direct64 | Ops::Swiotlb32 => DmaOpsKind::Direct,
        };
        assert_eq!(kind, want);
        let segs = s.bo.segments();
        (s, segs)
    });
    (s, segs)
}

criterion_group!(benches, bind_unbind, dma_map_sg);
criterion_main!(benches);
