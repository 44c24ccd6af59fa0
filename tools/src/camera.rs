//! `devmmu camera`: a capture pipeline on a camera ISP with its own MMU, end to end.
//!
//! What a driver for an Intel IPU-style imaging unit does, on the simulated device:
//! a system whose buffers live above 4 GiB, a camera with a 32-bit DMA mask and its own MMU
//! (IPU format by default), non-coherent by default, behind the system IOMMU by default (or
//! direct, bouncing through swiotlb). A ring of 4 NV12 buffer objects is bound into the device
//! VM; for each frame the driver clears the next buffer from the CPU, the device's DMA engine
//! writes the sensor's frame through its MMU, and the driver syncs for the CPU and checks the
//! frame byte for byte against the sensor's NV12. Cache maintenance uses the model, so a
//! missing sync shows up as a mismatch.
//!
//! With `--platform vfio` the same driver runs on the real kernel: QEMU's edu DMA engine,
//! opened through VFIO, is the ISP's DMA engine ([`crate::edu`]), the system DMA ops are the
//! kernel's IOMMU, and the CPU's caches are the real ones.
//!
//! The sensor stamps the frame number into every frame ([`stamp_frame`]: the first 4 luma bytes),
//! so each frame is checked against its own bytes. Without it a still scene gives the same bytes
//! every frame, and a buffer that was never written could pass: with direct DMA the device
//! writes a swiotlb bounce buffer, which the CPU's clear does not reach when the mapping is one
//! the device only writes (`FromDevice`), so the sync for the CPU brings back the previous lap's
//! frame.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use devmmu_mm::bo::{Bo, BoFlags, CpuAccess};
use devmmu_mm::device::{Device, DeviceConfig, MmuFormat};
use devmmu_mm::dma::{DmaMask, Platform, DEFAULT_SWIOTLB_BYTES};
use devmmu_mm::model::{SimConfig, SimDevice, SimMmu};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysAddr, PhysMem, RamRegion};
use devmmu_mm::vm::{Placement, Vm};
use devmmu_mm::MmError;
use devmmu_pagetable::{Iova, Prot};
use serde::Serialize;

use crate::sensor::{
    check_output_is_not_input, check_output_path, compare_frames, load_image, nv12_to_rgb,
    output_format, read_stamp, rgb_to_nv12, stamp_frame, test_chart, write_image, LoadLimits,
    SensorError, DEFAULT_CHART_HEIGHT, DEFAULT_CHART_WIDTH,
};
use crate::trace::{digest, Counters, Data, Event, Recorder};

/// Buffers in the capture ring.
pub const RING: usize = 4;

/// The `--mmu` parser: the names of the registered MMU formats ([`MmuFormat::ALL`]), each with
/// its summary as help.
pub(crate) fn mmu_format_parser() -> impl TypedValueParser<Value = MmuFormat> {
    let names = MmuFormat::ALL
        .iter()
        .map(|f| PossibleValue::new(f.name()).help(f.summary()));
    PossibleValuesParser::new(names)
        .map(|name| MmuFormat::from_name(&name).expect("a possible value is a format's name"))
}

/// The system DMA ops, as given on the command line.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum DmaArg {
    /// Behind the system IOMMU: buffers above 4 GiB get IOVAs below 4 GiB, no bounce.
    Iommu,
    /// Direct mapping: buffers above the 32-bit mask bounce through swiotlb.
    Direct,
}

/// Where the camera ISP runs, as given on the command line.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum PlatformArg {
    /// The simulated machine: devmmu's device model writes the frames (the default).
    Sim,
    /// The running kernel: QEMU's edu DMA engine, opened through VFIO, writes the frames through
    /// devmmu's IOPTEs, its table walk fetching every entry by DMA (`devmmu_tools::edu`); the
    /// system DMA ops are the kernel's IOMMU through VFIO. edu moves at most 4 KiB per DMA,
    /// about 10 per second, so the built-in chart is 64x48 and an `--input` may be at most
    /// 128x96 pixels.
    Vfio,
}

/// The largest frame `--platform vfio` accepts, in pixels (128x96: 18 KiB of NV12, 5 pages).
pub const VFIO_MAX_PIXELS: u64 = 128 * 96;

/// Arguments of `devmmu camera`.
#[derive(Args, Debug, Clone)]
pub struct CameraArgs {
    /// The sensor's image (any format the image crate decodes, 1x1 to 16384x16384); without it,
    /// a built-in test chart of 1280x720.
    #[arg(long, value_name = "IMAGE")]
    pub input: Option<PathBuf>,
    /// Frames to capture (at least 1).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub frames: u32,
    /// The camera's MMU format.
    #[arg(long, default_value = MmuFormat::Ipu.name(), value_parser = mmu_format_parser())]
    pub mmu: MmuFormat,
    /// The system DMA ops the camera is attached with.
    #[arg(long, value_enum, default_value_t = DmaArg::Iommu)]
    pub dma: DmaArg,
    /// Where the ISP runs: the simulated machine, or edu through VFIO on the running kernel
    /// (`--dma` and the simulated memory map do not apply then).
    #[arg(long, value_enum, default_value_t = PlatformArg::Sim)]
    pub platform: PlatformArg,
    /// With `--platform vfio`: the edu device's PCI address (default: the first 1234:11e8).
    #[arg(long, value_name = "DDDD:BB:DD.F")]
    pub pci: Option<String>,
    /// Make the camera (data and page-table walker) cache-coherent.
    #[arg(long)]
    pub coherent: bool,
    /// Unbind and bind each frame's buffer again before the frame (IOPTE updates every frame).
    #[arg(long)]
    pub rebind: bool,
    /// Write the last captured frame, converted back to RGB, to this file: PNG for a `.png` name
    /// (or none), JPEG for `.jpg`/`.jpeg`; other names are refused. It may not be the input
    /// file. A PNG's first 4 pixels hold the frame number stamp exactly (JPEG is lossy).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Draw the device VA space of the capture's VM (bindings with their BO, holes, the guard
    /// page, 4 KiB pages versus blocks) as an SVG picture in this file, as it is after the last
    /// frame.
    #[arg(long, value_name = "SVG")]
    pub va_map: Option<PathBuf>,
    /// Record every BO allocation, bind, unbind, CPU access (with its syncs) and device access
    /// of the run, and its counters, as JSON lines in this file (`devmmu replay` replays it).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Print the device page table while the ring is bound, one line per mapped run (on stderr
    /// with --json).
    #[arg(long)]
    pub dump_pt: bool,
    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Fault injection for tests, not a command-line option (always `None` from the command
    /// line): the simulated device does not write frame `N` (counted from 0), as a device that
    /// dropped a frame. The frame check must then report frame `N` as a mismatch.
    #[arg(skip)]
    pub skip_frame: Option<u32>,
}

/// Why the scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// The input image is unusable (exit status 2).
    #[error("{0}")]
    Input(SensorError),
    /// The output path is unusable (exit status 2).
    #[error("{0}")]
    Output(SensorError),
    /// The simulated system refused an operation (exit status 1).
    #[error("{0}")]
    System(#[from] MmError),
    /// `--platform vfio`: no edu device, or the input is too large for it (exit status 2).
    #[error("{0}")]
    Platform(String),
    /// `--platform vfio`: the edu driver failed (exit status 1).
    #[error("edu: {0}")]
    Edu(#[from] crate::edu::EduError),
}

/// What `--json` prints (every key the issue names, and a few more).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Frames captured.
    pub frames: u32,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// MMU format name.
    pub mmu: &'static str,
    /// `"iommu"`, `"direct"` or `"vfio"`.
    pub dma_ops: &'static str,
    /// `"sim"` (the device model writes the frames) or `"vfio"` (edu on the running kernel).
    pub platform: &'static str,
    /// DMAs the edu engine made, table-entry fetches included (0 on the simulated platform).
    pub device_dmas: u64,
    /// Whether the device is cache-coherent.
    pub coherent: bool,
    /// Whether buffers were rebound every frame.
    pub rebind: bool,
    /// Bytes per NV12 frame (visible layout, with stride padding).
    pub frame_bytes: u64,
    /// Bytes per buffer object (page multiple).
    pub bo_bytes: u64,
    /// IOPTEs written to the device page table.
    pub iopte_stores: u64,
    /// PTE cache lines cleaned for the non-coherent walker.
    pub pte_lines_cleaned: u64,
    /// Device TLB invalidations issued by the driver while binding and capturing (like every
    /// counter here, the teardown after the last frame is not included).
    pub tlb_invalidations: u64,
    /// Device page-table pages allocated.
    pub tables_allocated: u64,
    /// Bytes synced for the device (streaming DMA syncs).
    pub synced_bytes_for_device: u64,
    /// Bytes synced for the CPU.
    pub synced_bytes_for_cpu: u64,
    /// Bytes copied to or from swiotlb bounce buffers.
    pub bounced_bytes: u64,
    /// Faults recorded by the device MMU.
    pub faults: u64,
    /// Frames whose bytes all matched the sensor's NV12 for that frame: the scene with that
    /// frame's number stamped in (see [`stamp_frame`]), so a buffer still holding an earlier
    /// frame does not count.
    pub frames_matched: u32,
    /// True only if every frame matched.
    pub nv12_match: bool,
    /// First mismatch, if any, as text: `frame K: ...` (K counted from 0), the number of
    /// differing bytes, the first one, and the number the buffer's stamp reads (an earlier
    /// frame's number if the buffer still holds that frame).
    pub first_mismatch: Option<String>,
    /// DMA mappings leaked at detach (should be 0).
    pub dma_leaks: u64,
    /// Wall time of the capture in milliseconds.
    pub elapsed_ms: f64,
    /// Median time of one frame (clear, device write, sync, check), in milliseconds.
    pub frame_ms_p50: f64,
    /// 99th percentile of the time of one frame, in milliseconds.
    pub frame_ms_p99: f64,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report.
    pub report: Report,
}

impl Outcome {
    /// Every frame matched and the device did not fault.
    pub fn success(&self) -> bool {
        self.report.nv12_match && self.report.faults == 0
    }
}

/// Runs the scenario, printing the summary (or JSON) on stdout.
pub fn run(args: &CameraArgs) -> Result<Outcome, CameraError> {
    // With --json, stdout must hold the JSON object alone, so the page-table dump goes to stderr.
    let outcome = capture(args, |line| {
        if args.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    })?;
    if args.json {
        // serde_json cannot fail on this plain struct.
        println!(
            "{}",
            serde_json::to_string(&outcome.report).unwrap_or_default()
        );
    } else {
        print_summary(&outcome.report);
    }
    Ok(outcome)
}

/// Runs the scenario; `dump` receives the `--dump-pt` lines. Prints nothing else.
pub fn capture(args: &CameraArgs, mut dump: impl FnMut(&str)) -> Result<Outcome, CameraError> {
    // Refuse an unusable output path before doing any work, so nothing is left behind.
    if let Some(out) = &args.output {
        check_output_path(out).map_err(CameraError::Output)?;
        output_format(out).map_err(CameraError::Output)?;
        if let Some(input) = &args.input {
            check_output_is_not_input(out, input).map_err(CameraError::Output)?;
        }
    }
    for path in [&args.va_map, &args.trace].into_iter().flatten() {
        check_output_path(path).map_err(CameraError::Output)?;
    }
    let mut rec = args.trace.as_ref().map(|_| Recorder::default());
    let mut trace = |e: Event| {
        if let Some(r) = rec.as_mut() {
            r.record(e)
        }
    };
    trace(Event::Config {
        mmu: args.mmu.name().into(),
        dma: match (args.platform, args.dma) {
            (PlatformArg::Vfio, _) => "vfio",
            (PlatformArg::Sim, DmaArg::Iommu) => "iommu",
            (PlatformArg::Sim, DmaArg::Direct) => "direct",
        }
        .into(),
        coherent: args.coherent,
    });
    let vfio = args.platform == PlatformArg::Vfio;
    let image = match &args.input {
        Some(path) => load_image(path, LoadLimits::default()).map_err(CameraError::Input)?,
        None if vfio => test_chart(VFIO_CHART.0, VFIO_CHART.1).map_err(CameraError::Input)?,
        None => {
            test_chart(DEFAULT_CHART_WIDTH, DEFAULT_CHART_HEIGHT).map_err(CameraError::Input)?
        }
    };
    if vfio && u64::from(image.width()) * u64::from(image.height()) > VFIO_MAX_PIXELS {
        return Err(CameraError::Platform(format!(
            "--platform vfio: a {}x{} image is too large for edu (4 KiB per DMA, ~10 DMAs per \
             second): at most {VFIO_MAX_PIXELS} pixels, e.g. 128x96",
            image.width(),
            image.height()
        )));
    }
    let sensor = rgb_to_nv12(&image).map_err(CameraError::Input)?;
    let layout = *sensor.layout();
    // The device's source frame: the scene, converted once; each frame only its stamp changes.
    let mut source = sensor.into_data();
    let frame_bytes = layout.total_size() as u64;
    let bo_bytes = layout.bo_size() as u64;

    let (device, engine) = if vfio {
        attach_edu(args)?
    } else {
        attach_sim(args, bo_bytes)?
    };
    let phys = device.phys().clone();
    let vm = Vm::new(&device)?;

    // The capture ring: scattered pages, above 4 GiB.
    let prot = Prot::WRITE | Prot::NOEXEC;
    let mut ring: Vec<(Arc<Bo>, Iova)> = Vec::with_capacity(RING);
    for i in 0..RING {
        let bo = Bo::new(&phys, bo_bytes, BoFlags::default())?;
        trace(Event::BoNew {
            bo: i,
            size: bo_bytes,
        });
        let va = vm.bind(&bo, 0, bo_bytes, Placement::Anywhere, prot)?;
        trace(bind_event(i, bo_bytes, prot, va));
        ring.push((bo, va));
    }
    if args.dump_pt {
        dump_page_table(&vm, &mut dump);
    }

    let poison = vec![0xA5u8; frame_bytes as usize];
    let mut got = vec![0u8; frame_bytes as usize];
    let progress = progress_bar(args.frames, frame_bytes);
    let start = Instant::now();
    let mut matched = 0u32;
    let mut first_mismatch = None;
    let mut frame_ms = Vec::with_capacity(args.frames as usize);
    for frame in 0..args.frames {
        let frame_start = Instant::now();
        let slot = frame as usize % RING;
        if args.rebind {
            let (bo, va) = &ring[slot];
            vm.unbind(*va, bo_bytes)?;
            trace(Event::Unbind {
                iova: va.0,
                size: bo_bytes,
            });
            let new_va = vm.bind(bo, 0, bo_bytes, Placement::Anywhere, prot)?;
            trace(bind_event(slot, bo_bytes, prot, new_va));
            ring[slot].1 = new_va;
        }
        let (bo, va) = &ring[slot];
        // The driver hands the buffer to the device cleared, so a frame the device failed to
        // write cannot pass for the previous lap's.
        {
            let _cpu = bo.begin_cpu_access(CpuAccess::WRITE)?;
            bo.write(0, &poison)?;
        }
        trace(Event::CpuWrite {
            bo: slot,
            offset: 0,
            data: Data::of(&poison),
        });
        // The sensor numbers the frame; the ISP writes it through its MMU (a fault is recorded
        // by the model), unless a test made it drop this frame.
        stamp_frame(&mut source, &layout, frame).map_err(CameraError::Input)?;
        if args.skip_frame != Some(frame) {
            let faults = engine.faults();
            engine.write(&vm, *va, &source);
            trace(Event::DeviceWrite {
                iova: va.0,
                data: Data::of(&source),
                fault: engine.faults() != faults,
            });
        }
        {
            let _cpu = bo.begin_cpu_access(CpuAccess::READ)?;
            bo.read(0, &mut got)?;
        }
        trace(Event::CpuRead {
            bo: slot,
            offset: 0,
            len: got.len() as u64,
            digest: digest(&got),
        });
        let cmp = compare_frames(&layout, &source, &got).map_err(CameraError::Input)?;
        if cmp.is_match() {
            matched += 1;
        } else if first_mismatch.is_none() {
            // A buffer the device did not write holds the driver's clear (stamp 0xa5a5a5a5) or
            // an earlier frame, whose number the stamp gives.
            let stamp = read_stamp(&got, &layout).map_err(CameraError::Input)?;
            let first = cmp
                .first_mismatch
                .map(|m| format!(", first at {m}"))
                .unwrap_or_default();
            first_mismatch = Some(format!(
                "frame {frame}: {} of {} bytes differ{first}; the buffer's stamp reads {stamp} \
                 ({stamp:#010x})",
                cmp.mismatched_bytes, cmp.compared_bytes
            ));
        }
        frame_ms.push(frame_start.elapsed().as_secs_f64() * 1e3);
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    frame_ms.sort_by(f64::total_cmp);
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    if let Some(p) = progress {
        p.finish_and_clear();
    }

    let pt = vm.pt_stats();
    let dma = device.dma_ops().stats();
    let faults = engine.faults();
    let device_dmas = engine.dmas();
    // Read with the other counters, so that none of them includes the teardown below.
    let tlb_invalidations = device.tlb_invalidations();
    if let Some(path) = &args.va_map {
        let space = crate::vamap::VaSpace::of_vm(&vm, |iova| {
            match ring.iter().position(|(_, va)| *va == iova) {
                Some(i) => format!("BO {i}"),
                None => "BO ?".into(),
            }
        });
        crate::sensor::write_bytes(path, crate::vamap::render_svg(&space).as_bytes())
            .map_err(CameraError::Output)?;
    }
    trace(Event::Counters(Counters {
        iopte_stores: pt.pte_stores,
        pte_lines_cleaned: pt.lines_cleaned,
        tlb_invalidations,
        tables_allocated: pt.tables_allocated,
        synced_bytes_for_device: dma.bytes_synced_for_device,
        synced_bytes_for_cpu: dma.bytes_synced_for_cpu,
        bounced_bytes: dma.bounced_bytes,
        faults,
    }));
    if let (Some(path), Some(rec)) = (&args.trace, &rec) {
        crate::sensor::write_bytes(path, rec.to_json_lines().as_bytes())
            .map_err(CameraError::Output)?;
    }
    // Tear down in order: unbind (invalidate, free tables, release DMA), drop the VM, detach.
    for (bo, va) in &ring {
        vm.unbind(*va, bo.size())?;
    }
    drop(vm);
    let leaks = device.detach();

    let report = Report {
        frames: args.frames,
        width: layout.width(),
        height: layout.height(),
        mmu: args.mmu.name(),
        dma_ops: match (args.platform, args.dma) {
            (PlatformArg::Vfio, _) => "vfio",
            (PlatformArg::Sim, DmaArg::Iommu) => "iommu",
            (PlatformArg::Sim, DmaArg::Direct) => "direct",
        },
        platform: if vfio { "vfio" } else { "sim" },
        device_dmas,
        coherent: args.coherent,
        rebind: args.rebind,
        frame_bytes,
        bo_bytes,
        iopte_stores: pt.pte_stores,
        pte_lines_cleaned: pt.lines_cleaned,
        tlb_invalidations,
        tables_allocated: pt.tables_allocated,
        synced_bytes_for_device: dma.bytes_synced_for_device,
        synced_bytes_for_cpu: dma.bytes_synced_for_cpu,
        bounced_bytes: dma.bounced_bytes,
        faults,
        frames_matched: matched,
        nv12_match: matched == args.frames,
        first_mismatch,
        dma_leaks: leaks.mappings,
        elapsed_ms,
        frame_ms_p50: crate::summary::percentile(&frame_ms, 50.0),
        frame_ms_p99: crate::summary::percentile(&frame_ms, 99.0),
    };

    if let Some(out) = &args.output {
        let rgb = nv12_to_rgb(&layout, &got).map_err(CameraError::Output)?;
        write_image(out, &rgb).map_err(CameraError::Output)?;
    }
    Ok(Outcome { report })
}

/// The trace event of a bind of ring buffer `bo`.
fn bind_event(bo: usize, size: u64, prot: Prot, va: Iova) -> Event {
    Event::Bind {
        bo,
        offset: 0,
        size,
        prot: prot.to_string(),
        iova: va.0,
    }
}

/// The built-in chart's size on `--platform vfio`, in pixels: 4608 bytes of NV12 (2 pages).
const VFIO_CHART: (u32, u32) = (64, 48);

/// The DMA engine that writes the frames through the device MMU.
enum Engine {
    /// The device model.
    Sim { sim: SimDevice, mmu: Arc<SimMmu> },
    /// edu on the running kernel; `errors` counts the writes it could not make.
    Edu {
        edu: crate::edu::Edu,
        errors: std::cell::Cell<u64>,
    },
}

impl Engine {
    /// The device writes `data` at `va` of `vm`. A failure is a device fault, counted (the
    /// model records its own), and shows in the frame check.
    fn write(&self, vm: &Vm, va: Iova, data: &[u8]) {
        match self {
            Engine::Sim { sim, .. } => {
                let _ = sim.dma_write(vm, va, data);
            }
            Engine::Edu { edu, errors } => {
                if edu.write(&vm.context(), va, data).is_err() {
                    errors.set(errors.get() + 1);
                }
            }
        }
    }

    fn faults(&self) -> u64 {
        match self {
            Engine::Sim { mmu, .. } => mmu.faults().len() as u64,
            Engine::Edu { errors, .. } => errors.get(),
        }
    }

    fn dmas(&self) -> u64 {
        match self {
            Engine::Sim { .. } => 0,
            Engine::Edu { edu, .. } => edu.stats().dmas,
        }
    }
}

/// The simulated machine: RAM below and above 4 GiB (buffers come from the high region), the
/// ISP behind the system IOMMU or direct DMA, the device model writing.
fn attach_sim(args: &CameraArgs, bo_bytes: u64) -> Result<(Arc<Device>, Engine), CameraError> {
    let (device, sim, mmu) = attach_sim_machine(args, bo_bytes * RING as u64)?;
    Ok((device, Engine::Sim { sim, mmu }))
}

/// The simulated machine of [`attach_sim`], its swiotlb pool sized for `ring_bytes` of bound
/// buffers; also the machine `devmmu replay` replays on.
pub(crate) fn attach_sim_machine(
    args: &CameraArgs,
    ring_bytes: u64,
) -> Result<(Arc<Device>, SimDevice, Arc<SimMmu>), CameraError> {
    let phys = PhysMem::new(camera_memory_map()?, CacheMode::Model)?;
    // Direct DMA bounces the whole bound ring (as a streaming mapping of each buffer), so the
    // swiotlb pool is sized for it, the way a platform sets `swiotlb=` for a camera.
    let platform = Platform {
        system_iommu: args.dma == DmaArg::Iommu,
        swiotlb: Some(DEFAULT_SWIOTLB_BYTES.max(ring_bytes + DEFAULT_SWIOTLB_BYTES)),
        debug: true,
        ..Platform::default()
    };
    let mmu = SimMmu::new(SimConfig {
        tlb_entries: 64,
        coherent_walk: args.coherent,
        coherent: args.coherent,
    });
    let device = Device::attach(&phys, isp_config(args, 32), &platform, mmu.clone())?;
    let sim = SimDevice::new(device.clone(), mmu.clone());
    Ok((device, sim, mmu))
}

/// The running kernel: edu through VFIO (its container as the system DMA ops), devmmu's memory
/// in the CPU's real caches.
fn attach_edu(args: &CameraArgs) -> Result<(Arc<Device>, Engine), CameraError> {
    use crate::edu::{find_edu, Edu, EDU_DMA_BITS};
    let bdf = match &args.pci {
        Some(b) => b.clone(),
        None => find_edu().ok_or_else(|| {
            CameraError::Platform(
                "--platform vfio: no edu device (PCI 1234:11e8) here; it runs in the kernel \
                 tier's guest (scripts/kernel/test.sh)"
                    .into(),
            )
        })?,
    };
    let (container, vdev) = devmmu_mm::vfio::VfioContainer::open_pci(&bdf).map_err(|e| {
        CameraError::Platform(format!(
            "--platform vfio: cannot open {bdf} through VFIO: {e}"
        ))
    })?;
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native)?;
    let platform = Platform {
        vfio: Some(devmmu_mm::dma::VfioHandle(container)),
        debug: true,
        ..Platform::default()
    };
    let tlb = Edu::tlb();
    let device = Device::attach(
        &phys,
        isp_config(args, EDU_DMA_BITS),
        &platform,
        tlb.clone(),
    )?;
    let edu = Edu::new(vdev, device.dma_ops(), tlb)?;
    Ok((
        device,
        Engine::Edu {
            edu,
            errors: std::cell::Cell::new(0),
        },
    ))
}

/// The camera ISP as the driver describes it, with a `mask_bits`-bit DMA mask.
fn isp_config(args: &CameraArgs, mask_bits: u32) -> DeviceConfig {
    DeviceConfig {
        name: "camera-isp".into(),
        dma_mask: DmaMask::bits(mask_bits),
        coherent: args.coherent,
        coherent_walk: args.coherent,
        mmu: args.mmu,
        tlb_invalidation: args.mmu.tlb_invalidation(),
        accept_unenforced_prot: false,
    }
}

/// RAM of the simulated machine: 2.75 GiB below 4 GiB (where page tables and the swiotlb pool
/// live, below the PCI hole) and 32 GiB above it, where the capture buffers are allocated. Only
/// the frames handed out are backed by memory.
pub(crate) fn camera_memory_map() -> Result<MemoryMap, MmError> {
    MemoryMap::new(vec![
        RamRegion {
            base: PhysAddr(0x1000_0000),
            size: 0xB000_0000,
        },
        RamRegion {
            base: PhysAddr(0x1_0000_0000),
            size: 32 << 30,
        },
    ])
}

fn dump_page_table(vm: &Vm, dump: &mut impl FnMut(&str)) {
    let ctx = vm.context();
    dump(&format!(
        "device page table ({}, root {}, asid {}):",
        ctx.format.name(),
        ctx.root,
        ctx.asid
    ));
    for r in vm.mapped_runs() {
        dump(&format!(
            "  va {:#010x}-{:#010x}  dma {:#012x}-{:#012x}  {:>4} KiB pages  L{}  {}",
            r.iova.0,
            r.iova.0 + r.size,
            r.dma.0,
            r.dma.0 + r.size,
            r.page_size / 1024,
            r.level,
            r.prot
        ));
    }
}

/// Bytes a run must move (frames x frame size) before it gets a progress bar. Short runs (the
/// default 8 frames of 720p move 11 MB) print no bar, so a terminal is not redrawn for nothing.
const PROGRESS_MIN_BYTES: u64 = 256 << 20;

/// A progress bar on stderr for long runs, only when stderr is a terminal.
pub(crate) fn progress_bar(frames: u32, frame_bytes: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || (frames as u64) * frame_bytes < PROGRESS_MIN_BYTES {
        return None;
    }
    let p = indicatif::ProgressBar::new(frames as u64);
    p.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(p)
}

fn print_summary(r: &Report) {
    println!("{}", crate::summary::render(r));
}
