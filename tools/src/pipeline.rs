//! `devmmu pipeline`: camera to GPU to display through shared BOs, with explicit fences.
//!
//! Three devices, each with its own MMU and its own VM, share two rings of [`RING`] BOs with no
//! copy between stages:
//! - **camera** (simulated, non-coherent, IPU MMU by default): its DMA engine writes each NV12
//!   frame (laid out by [`PitchRule::IPU6_ISYS`]) through its MMU into the NV12 ring;
//! - **GPU** (Vulkan, [`crate::gpu`]): each BO of both rings is exported as an fd and imported
//!   as Vulkan memory; a compute shader converts NV12 to XRGB8888 (BT.601 limited range, the
//!   integer formulas of [`crate::sensor`], so the result is byte-exact) into the XRGB ring
//!   (laid out by [`PitchRule::SCANOUT`]);
//! - **display** (simulated, ARM LPAE MMU, coherent or not): its DMA engine reads each XRGB8888
//!   frame through its MMU, and the frame is checked byte for byte against the CPU reference of
//!   the same conversion ([`nv12_to_xrgb8888`]) of that frame's NV12 (stamped with its number,
//!   so a stale frame never passes).
//!
//! Each stage runs on its own thread, so frames overlap: the camera fills frame n+1 while the
//! GPU converts n and the display reads n-1. Ordering is explicit, with one [`Timeline`] per
//! stage (point n+1 = frame n done):
//!
//! | who | waits for | why |
//! |---|---|---|
//! | camera, frame n | GPU ≥ n+1-RING | the GPU has finished reading the NV12 slot it reuses |
//! | GPU, frame n | camera ≥ n+1 | the NV12 frame is written |
//! | GPU, frame n | display ≥ n+1-RING | the display has finished reading the XRGB slot |
//! | GPU, frame n | its Vulkan timeline semaphore ≥ n+1 | the shader has finished |
//! | display, frame n | GPU ≥ n+1 | the XRGB frame is written and synced |
//!
//! And the cache rules of the non-coherent devices, as dma-buf importers follow them: the GPU
//! (lavapipe runs on the CPU, through its caches) reads the NV12 BO inside a CPU access bracket
//! ([`Bo::begin_cpu_access_owned`], `DMA_BUF_IOCTL_SYNC`), whose start syncs the camera's
//! mapping for the CPU (invalidate); it writes the XRGB BO inside another, whose end syncs the
//! display's mapping for the device (clean) before the display's timeline may move.
//!
//! [`Omit`] removes one wait or sync, for the tests that prove each is needed. A removed wait
//! only shows when the stages happen to run in the wrong order, so with an `Omit` the stage on
//! the other side of the removed wait is held back until the unprotected stage has gone ahead
//! (a *hazard schedule*): the order a slower device would give. The frame check then fails on
//! every run, not by chance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use devmmu_mm::bo::{Bo, BoFlags, CpuAccess, DrmFourcc, ImageLayout, PitchRule};
use devmmu_mm::device::{Device, DeviceConfig, MmuFormat};
use devmmu_mm::dma::{DmaMask, Platform};
use devmmu_mm::fence::{FenceError, Timeline};
use devmmu_mm::model::{SimConfig, SimDevice, SimMmu};
use devmmu_mm::phys::{CacheMode, PhysMem};
use devmmu_mm::vm::{Placement, Vm};
use devmmu_mm::MmError;
use devmmu_pagetable::{Iova, Prot};
use serde::Serialize;

use crate::gpu::{ConvertParams, Gpu, GpuError, ImportChoice, ImportPath};
use crate::sensor::{
    check_output_is_not_input, check_output_path, load_image, nv12_to_xrgb8888, output_format,
    rgb_to_nv12, stamp_frame, test_chart, write_image, LoadLimits, Nv12Layout, SensorError,
    DEFAULT_CHART_HEIGHT, DEFAULT_CHART_WIDTH,
};

/// BOs in each ring (NV12 and XRGB8888): three, so that three frames are in flight.
pub const RING: usize = 3;

/// How long any stage waits for another before giving up (a lost signal is an error, not a
/// hang).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(120);

/// One wait or sync that a test removes ([`PipelineArgs::omit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Omit {
    /// The camera does not wait for the GPU to finish with the NV12 slot it reuses.
    CameraWaitsGpu,
    /// The GPU does not wait for the camera's frame.
    GpuWaitsCamera,
    /// The GPU does not wait for the display to finish with the XRGB slot it reuses.
    GpuWaitsDisplay,
    /// The GPU stage does not wait for its Vulkan timeline semaphore (the shader's completion)
    /// before ending its CPU access and signalling the display.
    GpuWaitsShader,
    /// The display does not wait for the GPU's frame.
    DisplayWaitsGpu,
    /// The GPU reads the NV12 BO without beginning CPU access (no sync for the CPU after the
    /// non-coherent camera wrote it).
    Nv12SyncForCpu,
    /// The GPU writes the XRGB BO without a CPU access bracket (no sync for the device before
    /// the non-coherent display reads it).
    XrgbSyncForDevice,
}

impl Omit {
    /// Every wait and sync, in pipeline order.
    pub const ALL: [Omit; 7] = [
        Omit::CameraWaitsGpu,
        Omit::GpuWaitsCamera,
        Omit::GpuWaitsDisplay,
        Omit::GpuWaitsShader,
        Omit::DisplayWaitsGpu,
        Omit::Nv12SyncForCpu,
        Omit::XrgbSyncForDevice,
    ];
}

/// Arguments of `devmmu pipeline`.
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The camera's image (any format the image crate decodes, 1x1 to 16384x16384); without
    /// it, the built-in test chart of 1280x720.
    #[arg(long, value_name = "IMAGE")]
    pub input: Option<PathBuf>,
    /// Frames to run through the pipeline (at least 1).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub frames: u32,
    /// The camera's MMU format (the display's is ARM LPAE 4K).
    #[arg(long, default_value = MmuFormat::Ipu.name(), value_parser = crate::camera::mmu_format_parser())]
    pub mmu: MmuFormat,
    /// Make the display cache-coherent (the camera is always non-coherent).
    #[arg(long)]
    pub coherent: bool,
    /// How the GPU imports the BOs' fds.
    #[arg(long, value_enum, default_value_t = ImportChoice::Auto)]
    pub import: ImportChoice,
    /// Write the last displayed frame (what the display read) to this file: PNG, or JPEG for a
    /// `.jpg`/`.jpeg` name (other extensions are refused).
    #[arg(long, value_name = "IMAGE")]
    pub output: Option<PathBuf>,
    /// Draw the device VA spaces of the camera's VM and of the display's VM (the ring's BOs
    /// bound in each, pages and blocks, holes, the guard page) as one SVG picture, one above the
    /// other.
    #[arg(long, value_name = "FILE")]
    pub va_map: Option<PathBuf>,
    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// For tests, not a command-line option: remove one wait or sync, and hold back the stage
    /// on the other side of it (see the module documentation).
    #[arg(skip)]
    pub omit: Option<Omit>,
}

/// Why the pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input image is unusable (exit status 2).
    #[error("{0}")]
    Input(SensorError),
    /// The output path is unusable (exit status 2).
    #[error("{0}")]
    Output(SensorError),
    /// No usable Vulkan device here (exit status 2).
    #[error("no GPU: {0}")]
    NoGpu(GpuError),
    /// The GPU failed while running (exit status 1).
    #[error("GPU: {0}")]
    Gpu(#[from] GpuError),
    /// The simulated system refused an operation (exit status 1).
    #[error("{0}")]
    System(#[from] MmError),
    /// A stage stopped waiting: its peer failed or timed out (exit status 1).
    #[error("{0}")]
    Fence(#[from] FenceError),
    /// A stage's device faulted (exit status 1).
    #[error("{0}")]
    Device(String),
}

/// Per-stage timing, in milliseconds of work per frame (waits excluded).
#[derive(Debug, Clone, Serialize)]
pub struct StageTimes {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (the largest for fewer than 100 frames).
    pub p99_ms: f64,
}

/// What `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Frames run through the pipeline.
    pub frames: u32,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// The camera's MMU format.
    pub camera_mmu: &'static str,
    /// The display's MMU format.
    pub display_mmu: &'static str,
    /// Whether the display is cache-coherent.
    pub display_coherent: bool,
    /// The Vulkan device (`deviceName`).
    pub vulkan_device: String,
    /// The Vulkan driver and its version.
    pub vulkan_driver: String,
    /// The import path that ran.
    pub import_path: ImportPath,
    /// What the BOs were exported as: `"dma-buf"` (udmabuf) or `"memfd"`.
    pub fd_kind: &'static str,
    /// The conversion the GPU ran.
    pub conversion: &'static str,
    /// NV12 layout: stride of the Y and CbCr planes in bytes, and the pitch rule.
    pub nv12_stride: u32,
    /// XRGB8888 layout: stride in bytes.
    pub xrgb_stride: u32,
    /// Frames whose every displayed pixel byte matched the CPU reference.
    pub frames_matched: u32,
    /// True only if every frame matched.
    pub all_match: bool,
    /// The first mismatch, as text.
    pub first_mismatch: Option<String>,
    /// Bytes moved by the devices, in MiB: NV12 written by the camera, read and XRGB written by
    /// the GPU, XRGB read by the display.
    pub mib_moved: f64,
    /// Camera work per frame (the DMA write through its MMU).
    pub camera: StageTimes,
    /// GPU work per frame (CPU access begin, submit, shader, end).
    pub gpu: StageTimes,
    /// Display work per frame (the DMA read through its MMU).
    pub display: StageTimes,
    /// Frame latency: camera start to display done.
    pub latency: StageTimes,
    /// Wall time of the run in milliseconds.
    pub elapsed_ms: f64,
    /// Frames per second over the run.
    pub fps: f64,
    /// Faults the camera's and the display's MMUs recorded.
    pub faults: u64,
    /// The removed wait or sync, if a test removed one.
    pub omitted: Option<String>,
}

/// Runs the pipeline, printing the summary (or JSON) on stdout.
///
/// # Errors
/// As [`run_pipeline`].
pub fn run(args: &PipelineArgs) -> Result<Report, PipelineError> {
    let report = run_pipeline(args)?;
    if args.json {
        let json = serde_json::to_string(&report).unwrap_or_default() + "\n";
        // A closed pipe is not an error worth a panic.
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), json.as_bytes());
    } else {
        print_summary(&report);
    }
    Ok(report)
}

struct Stage {
    times: Vec<Duration>,
}

/// Runs the pipeline and returns its report; prints nothing.
///
/// # Errors
/// [`PipelineError::Input`]/[`PipelineError::Output`] for bad paths or images (checked before
/// anything runs), [`PipelineError::NoGpu`] without a usable Vulkan device, the others if a
/// stage fails.
pub fn run_pipeline(args: &PipelineArgs) -> Result<Report, PipelineError> {
    if let Some(out) = &args.output {
        check_output_path(out).map_err(PipelineError::Output)?;
        output_format(out).map_err(PipelineError::Output)?;
        if let Some(input) = &args.input {
            check_output_is_not_input(out, input).map_err(PipelineError::Output)?;
        }
    }
    if let Some(path) = &args.va_map {
        check_output_path(path).map_err(PipelineError::Output)?;
    }
    let image = match &args.input {
        Some(path) => load_image(path, LoadLimits::default()).map_err(PipelineError::Input)?,
        None => {
            test_chart(DEFAULT_CHART_WIDTH, DEFAULT_CHART_HEIGHT).map_err(PipelineError::Input)?
        }
    };
    let sensor = rgb_to_nv12(&image).map_err(PipelineError::Input)?;
    let nv12 = *sensor.layout();
    let scene = sensor.into_data();
    let (w, h) = (nv12.width(), nv12.height());
    let xrgb = ImageLayout::new(DrmFourcc::Xrgb8888, w, h, PitchRule::SCANOUT).map_err(|_| {
        PipelineError::Input(SensorError::DimensionsOutOfRange {
            width: w,
            height: h,
            max: crate::sensor::MAX_DIMENSION,
        })
    })?;

    let mut gpu = Gpu::new(args.import).map_err(PipelineError::NoGpu)?;

    // The machine: one memory, two simulated devices behind the system IOMMU.
    let phys = PhysMem::new(crate::camera::camera_memory_map()?, CacheMode::Model)?;
    let platform = Platform {
        system_iommu: true,
        debug: true,
        ..Platform::default()
    };
    let attach = |name: &str, mmu_format: MmuFormat, coherent: bool, bits: u32| {
        let mmu = SimMmu::new(SimConfig {
            tlb_entries: 64,
            coherent_walk: coherent,
            coherent,
        });
        let config = DeviceConfig {
            name: name.into(),
            dma_mask: DmaMask::bits(bits),
            coherent,
            coherent_walk: coherent,
            mmu: mmu_format,
            tlb_invalidation: mmu_format.tlb_invalidation(),
            accept_unenforced_prot: false,
        };
        Device::attach(&phys, config, &platform, mmu.clone())
            .map(|dev| (SimDevice::new(dev.clone(), mmu), dev))
    };
    let (camera, camera_dev) = attach("camera-isp", args.mmu, false, 32)?;
    let display_mmu = MmuFormat::ArmLpae4k;
    let (display, display_dev) = attach("display", display_mmu, args.coherent, 40)?;
    let camera_vm = Vm::new(&camera_dev)?;
    let display_vm = Vm::new(&display_dev)?;

    // The rings: NV12 bound into the camera's VM, XRGB8888 into the display's, both imported
    // into Vulkan from their exported fds.
    let mut nv12_ring: Vec<(Arc<Bo>, Iova)> = Vec::new();
    let mut xrgb_ring: Vec<(Arc<Bo>, Iova)> = Vec::new();
    let mut jobs = Vec::new();
    let mut fd_kind = "memfd";
    for _ in 0..RING {
        let nbo = Bo::new(&phys, nv12.image().bo_size(), BoFlags::default())?;
        let nva = camera_vm.bind(&nbo, 0, nbo.size(), Placement::Anywhere, Prot::WRITE)?;
        let xbo = Bo::new(&phys, xrgb.bo_size(), BoFlags::default())?;
        let xva = display_vm.bind(&xbo, 0, xbo.size(), Placement::Anywhere, Prot::READ)?;
        let nfd = nbo.export()?;
        let xfd = xbo.export()?;
        if nfd.kind == devmmu_mm::bo::FdKind::DmaBuf {
            fd_kind = "dma-buf";
        }
        let nbuf = gpu.import(std::os::fd::AsFd::as_fd(&nfd.fd), nbo.size())?;
        let xbuf = gpu.import(std::os::fd::AsFd::as_fd(&xfd.fd), xbo.size())?;
        let (yp, cp, xp) = (
            nv12.image().planes()[0],
            nv12.image().planes()[1],
            xrgb.planes()[0],
        );
        // Offsets and strides of a <= 16384x16384 image fit in u32.
        let params = ConvertParams {
            width: w,
            height: h,
            y_offset: yp.offset as u32,
            y_stride: yp.stride,
            c_offset: cp.offset as u32,
            c_stride: cp.stride,
            out_offset: xp.offset as u32,
            out_stride: xp.stride,
        };
        jobs.push(gpu.record(nbuf, xbuf, params)?);
        nv12_ring.push((nbo, nva));
        xrgb_ring.push((xbo, xva));
    }
    // The VA spaces with the whole ring bound, drawn now and written once the run succeeded.
    let va_map = args.va_map.as_ref().map(|_| {
        let name = |ring: &[(Arc<Bo>, Iova)], what: &str, iova: Iova| match ring
            .iter()
            .position(|(_, va)| *va == iova)
        {
            Some(i) => format!("{what} {i}"),
            None => format!("{what} ?"),
        };
        crate::vamap::render_svg_stack(&[
            crate::vamap::VaSpace::of_vm(&camera_vm, |iova| name(&nv12_ring, "NV12 BO", iova)),
            crate::vamap::VaSpace::of_vm(&display_vm, |iova| name(&xrgb_ring, "XRGB BO", iova)),
        ])
    });
    let vulkan_device = gpu.device_name().to_string();
    let vulkan_driver = gpu.driver_info().trim().to_string();
    let import_path = gpu.import_path();

    let cam_tl = Timeline::new("camera");
    let gpu_tl = Timeline::new("gpu");
    let disp_tl = Timeline::new("display");
    let frames = args.frames;
    let omit = args.omit;
    // When each frame's camera work started, for the latency the display measures.
    let starts = parking_lot::Mutex::new(vec![None; frames as usize]);
    // A bar on long runs, moved by the display as frames complete.
    let progress = crate::camera::progress_bar(frames, nv12.total_size() as u64 + xrgb.size());
    let start = Instant::now();

    let fail_all = |why: &str| {
        for t in [&cam_tl, &gpu_tl, &disp_tl] {
            t.fail(why);
        }
    };
    let fail_all = &fail_all;
    let result = std::thread::scope(|s| {
        // Camera.
        let cam = s.spawn(|| {
            let r = camera_stage(
                &camera, &camera_vm, &nv12_ring, &nv12, &scene, frames, omit, &cam_tl, &gpu_tl,
                &starts,
            );
            if let Err(e) = &r {
                fail_all(&format!("camera: {e}"));
            }
            r
        });
        // Display.
        let disp = s.spawn(|| {
            let r = display_stage(
                &display,
                &display_vm,
                &xrgb_ring,
                &nv12,
                &xrgb,
                &scene,
                frames,
                omit,
                &disp_tl,
                &gpu_tl,
                &starts,
                progress.as_ref(),
            );
            if let Err(e) = &r {
                fail_all(&format!("display: {e}"));
            }
            r
        });
        // GPU, on this thread (the Gpu stays where it was made).
        let g = gpu_stage(
            &mut gpu, &jobs, &nv12_ring, &xrgb_ring, frames, omit, &cam_tl, &gpu_tl, &disp_tl,
        );
        if let Err(e) = &g {
            fail_all(&format!("gpu: {e}"));
        }
        let cam = cam
            .join()
            .map_err(|_| PipelineError::Device("camera thread panicked".into()));
        let disp = disp
            .join()
            .map_err(|_| PipelineError::Device("display thread panicked".into()));
        (cam, g, disp)
    });
    let elapsed = start.elapsed();
    let (cam, g, disp) = result;
    // The first real error, not the peers' "timeline failed" echoes of it.
    let (cam, g, disp) = match (cam.and_then(|r| r), g, disp.and_then(|r| r)) {
        (Ok(c), Ok(g), Ok(d)) => (c, g, d),
        (c, g, d) => {
            let errs: Vec<PipelineError> =
                [c.err(), g.err(), d.err()].into_iter().flatten().collect();
            let first = errs
                .iter()
                .position(|e| !matches!(e, PipelineError::Fence(FenceError::Failed { .. })))
                .unwrap_or(0);
            return Err(errs.into_iter().nth(first).expect("at least one error"));
        }
    };
    let (display_times, check) = disp;

    let faults = (camera.mmu().faults().len() + display.mmu().faults().len()) as u64;
    for (bo, va) in &nv12_ring {
        camera_vm.unbind(*va, bo.size())?;
    }
    for (bo, va) in &xrgb_ring {
        display_vm.unbind(*va, bo.size())?;
    }
    drop(gpu);

    if let Some(out) = &args.output {
        let rgb = xrgb_to_rgb(&xrgb, &check.last_frame);
        write_image(out, &rgb).map_err(PipelineError::Output)?;
    }
    if let (Some(path), Some(svg)) = (&args.va_map, &va_map) {
        crate::sensor::write_bytes(path, svg.as_bytes()).map_err(PipelineError::Output)?;
    }
    let moved = (nv12.total_size() as f64 * 2.0 + xrgb.size() as f64 * 2.0) * f64::from(frames);
    let latencies: Vec<Duration> = check.latencies;
    Ok(Report {
        frames,
        width: w,
        height: h,
        camera_mmu: args.mmu.name(),
        display_mmu: display_mmu.name(),
        display_coherent: args.coherent,
        vulkan_device,
        vulkan_driver,
        import_path,
        fd_kind,
        conversion: "NV12 to XRGB8888, ITU-R BT.601 limited range, 8-bit integer (byte-exact)",
        nv12_stride: nv12.image().planes()[0].stride,
        xrgb_stride: xrgb.planes()[0].stride,
        frames_matched: check.matched,
        all_match: check.matched == frames,
        first_mismatch: check.first_mismatch,
        mib_moved: moved / (1024.0 * 1024.0),
        camera: times(&cam.times),
        gpu: times(&g.times),
        display: times(&display_times.times),
        latency: times(&latencies),
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        fps: f64::from(frames) / elapsed.as_secs_f64().max(1e-9),
        faults,
        omitted: omit.map(|o| format!("{o:?}")),
    })
}

/// Waits on `t` for `point` unless `skip`; a point of 0 or below is already reached.
fn wait(t: &Timeline, point: i64, skip: bool) -> Result<(), FenceError> {
    if skip || point <= 0 {
        return Ok(());
    }
    t.wait(point as u64, WAIT_TIMEOUT)
}

/// The hazard schedule's hold: waits on `t` for `point` (bounded, and ignoring a failed
/// timeline: a hold never turns into an error of its own).
fn hold(t: &Timeline, point: u64) {
    let _ = t.wait(point, Duration::from_secs(20));
}

#[allow(clippy::too_many_arguments)]
fn camera_stage(
    camera: &SimDevice,
    vm: &Vm,
    ring: &[(Arc<Bo>, Iova)],
    layout: &Nv12Layout,
    scene: &[u8],
    frames: u32,
    omit: Option<Omit>,
    cam_tl: &Timeline,
    gpu_tl: &Timeline,
    starts: &parking_lot::Mutex<Vec<Option<Instant>>>,
) -> Result<Stage, PipelineError> {
    let mut source = scene.to_vec();
    let mut times = Vec::with_capacity(frames as usize);
    for n in 0..frames {
        let slot = n as usize % RING;
        // The GPU has finished reading what this slot held (frame n - RING).
        wait(
            gpu_tl,
            i64::from(n) + 1 - RING as i64,
            omit == Some(Omit::CameraWaitsGpu),
        )?;
        if omit == Some(Omit::GpuWaitsCamera) {
            // Hazard schedule: the camera is slow; the GPU converts frame n first.
            hold(gpu_tl, u64::from(n) + 1);
        }
        let t0 = Instant::now();
        starts.lock()[n as usize] = Some(t0);
        stamp_frame(&mut source, layout, n).map_err(PipelineError::Input)?;
        camera
            .dma_write(vm, ring[slot].1, &source)
            .map_err(|f| PipelineError::Device(format!("camera frame {n}: {f}")))?;
        times.push(t0.elapsed());
        cam_tl.signal(u64::from(n) + 1)?;
    }
    Ok(Stage { times })
}

#[allow(clippy::too_many_arguments)]
fn gpu_stage(
    gpu: &mut Gpu,
    jobs: &[crate::gpu::JobId],
    nv12_ring: &[(Arc<Bo>, Iova)],
    xrgb_ring: &[(Arc<Bo>, Iova)],
    frames: u32,
    omit: Option<Omit>,
    cam_tl: &Timeline,
    gpu_tl: &Timeline,
    disp_tl: &Timeline,
) -> Result<Stage, PipelineError> {
    let mut times = Vec::with_capacity(frames as usize);
    for n in 0..frames {
        let slot = n as usize % RING;
        let point = u64::from(n) + 1;
        wait(cam_tl, i64::from(n) + 1, omit == Some(Omit::GpuWaitsCamera))?;
        wait(
            disp_tl,
            i64::from(n) + 1 - RING as i64,
            omit == Some(Omit::GpuWaitsDisplay),
        )?;
        if omit == Some(Omit::CameraWaitsGpu) && n + (RING as u32) < frames {
            // Hazard schedule: the GPU is slow; the camera overwrites the slot first.
            hold(cam_tl, point + RING as u64);
        }
        if omit == Some(Omit::DisplayWaitsGpu) {
            // Hazard schedule: the GPU is slow; the display reads frame n first.
            hold(disp_tl, point);
        }
        let t0 = Instant::now();
        // The GPU reads the NV12 BO and writes the XRGB BO through the CPU's caches: both
        // accesses are bracketed, which syncs the camera's mapping for the CPU now and the
        // display's mapping for the device at the end.
        let nv12_access = if omit == Some(Omit::Nv12SyncForCpu) {
            None
        } else {
            Some(nv12_ring[slot].0.begin_cpu_access_owned(CpuAccess::READ)?)
        };
        let mut xrgb_access = if omit == Some(Omit::XrgbSyncForDevice) {
            None
        } else {
            Some(xrgb_ring[slot].0.begin_cpu_access_owned(CpuAccess::WRITE)?)
        };
        gpu.submit(jobs[slot], Some(point), point)?;
        let shader_waited = omit != Some(Omit::GpuWaitsShader);
        if !shader_waited {
            // No wait for the shader: the display is told the frame is ready at once, and
            // (hazard schedule) the shader only starts once the display has read it.
            if let Some(a) = xrgb_access.take() {
                a.end()?;
            }
            gpu_tl.signal(point)?;
            hold(disp_tl, point);
        }
        gpu.open_gate(point)?;
        // Without the hazard, the wait that orders the display after the shader; with it, only
        // what lets the job's command buffer be submitted again.
        gpu.wait_done(point, WAIT_TIMEOUT)?;
        for a in [xrgb_access, nv12_access].into_iter().flatten() {
            a.end()?;
        }
        times.push(t0.elapsed());
        if shader_waited {
            gpu_tl.signal(point)?;
        }
    }
    Ok(Stage { times })
}

struct Check {
    matched: u32,
    first_mismatch: Option<String>,
    last_frame: Vec<u8>,
    latencies: Vec<Duration>,
}

#[allow(clippy::too_many_arguments)]
fn display_stage(
    display: &SimDevice,
    vm: &Vm,
    ring: &[(Arc<Bo>, Iova)],
    nv12: &Nv12Layout,
    xrgb: &ImageLayout,
    scene: &[u8],
    frames: u32,
    omit: Option<Omit>,
    disp_tl: &Timeline,
    gpu_tl: &Timeline,
    starts: &parking_lot::Mutex<Vec<Option<Instant>>>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(Stage, Check), PipelineError> {
    let mut times = Vec::with_capacity(frames as usize);
    let mut check = Check {
        matched: 0,
        first_mismatch: None,
        last_frame: vec![0; xrgb.size() as usize],
        latencies: Vec::with_capacity(frames as usize),
    };
    let mut source = scene.to_vec();
    let mut expected = vec![0u8; xrgb.size() as usize];
    for n in 0..frames {
        let slot = n as usize % RING;
        let point = u64::from(n) + 1;
        wait(
            gpu_tl,
            i64::from(n) + 1,
            omit == Some(Omit::DisplayWaitsGpu),
        )?;
        if omit == Some(Omit::GpuWaitsDisplay) && n + (RING as u32) < frames {
            // Hazard schedule: the display is slow; the GPU overwrites the slot first.
            hold(gpu_tl, point + RING as u64);
        }
        let t0 = Instant::now();
        display
            .dma_read(vm, ring[slot].1, &mut check.last_frame)
            .map_err(|f| PipelineError::Device(format!("display frame {n}: {f}")))?;
        let done = Instant::now();
        times.push(done - t0);
        if let Some(s) = starts.lock()[n as usize] {
            check.latencies.push(done - s);
        }
        disp_tl.signal(point)?;
        // The reference: the CPU's conversion of the NV12 frame the camera made for frame n.
        stamp_frame(&mut source, nv12, n).map_err(PipelineError::Input)?;
        nv12_to_xrgb8888(nv12, &source, xrgb, &mut expected).map_err(PipelineError::Input)?;
        match first_difference(xrgb, &expected, &check.last_frame) {
            None => check.matched += 1,
            Some((differ, x, y)) if check.first_mismatch.is_none() => {
                check.first_mismatch = Some(format!(
                    "frame {n}: {differ} pixel bytes differ, the first at pixel ({x}, {y})"
                ));
            }
            Some(_) => {}
        }
        if let Some(p) = progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok((Stage { times }, check))
}

/// Compares the pixel bytes (not the stride padding) of two XRGB8888 frames: the number of
/// differing bytes and the first differing pixel.
fn first_difference(layout: &ImageLayout, a: &[u8], b: &[u8]) -> Option<(u64, u32, u32)> {
    let p = layout.planes()[0];
    let mut count = 0u64;
    let mut first = None;
    for y in 0..p.rows {
        let start = (p.offset + u64::from(y) * u64::from(p.stride)) as usize;
        let (ra, rb) = (
            &a[start..start + p.row_bytes as usize],
            &b[start..start + p.row_bytes as usize],
        );
        for (i, (x, z)) in ra.iter().zip(rb).enumerate() {
            if x != z {
                count += 1;
                first.get_or_insert(((i / 4) as u32, y));
            }
        }
    }
    first.map(|(x, y)| (count, x, y))
}

/// An XRGB8888 frame as an RGB image (for `--output`).
fn xrgb_to_rgb(layout: &ImageLayout, data: &[u8]) -> image::RgbImage {
    let p = layout.planes()[0];
    image::RgbImage::from_fn(layout.width(), layout.height(), |x, y| {
        let i = (p.offset + u64::from(y) * u64::from(p.stride)) as usize + 4 * x as usize;
        // Little-endian 0xXXRRGGBB: bytes B, G, R, X.
        image::Rgb([data[i + 2], data[i + 1], data[i]])
    })
}

fn times(samples: &[Duration]) -> StageTimes {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if ms.is_empty() {
            0.0
        } else {
            ms[((ms.len() as f64 - 1.0) * q).round() as usize]
        }
    };
    StageTimes {
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
    }
}

/// The human summary. Written with errors ignored, so a closed pipe (`| head`) ends the output
/// quietly instead of panicking.
fn print_summary(r: &Report) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "devmmu pipeline: {} frames of {}x{}, camera ({} MMU, non-coherent) -> GPU ({}) -> \
         display ({} MMU, {})",
        r.frames,
        r.width,
        r.height,
        r.camera_mmu,
        r.vulkan_device,
        r.display_mmu,
        if r.display_coherent {
            "coherent"
        } else {
            "non-coherent"
        }
    );
    let _ = writeln!(
        out,
        "  buffers: {RING} NV12 (stride {} B) and {RING} XRGB8888 (stride {} B), shared as fds \
         ({}), imported with {}",
        r.nv12_stride,
        r.xrgb_stride,
        r.fd_kind,
        r.import_path.extension()
    );
    let _ = writeln!(out, "  conversion: {}", r.conversion);
    let _ = writeln!(
        out,
        "  frames matched: {}/{}{}",
        r.frames_matched,
        r.frames,
        if r.all_match {
            " (every displayed pixel byte-exact)"
        } else {
            ""
        }
    );
    if let Some(m) = &r.first_mismatch {
        let _ = writeln!(out, "  first mismatch: {m}");
    }
    let _ = writeln!(
        out,
        "  per frame (p50 / p99): camera {:.2} / {:.2} ms, GPU {:.2} / {:.2} ms, display {:.2} / \
         {:.2} ms; latency {:.2} / {:.2} ms",
        r.camera.p50_ms,
        r.camera.p99_ms,
        r.gpu.p50_ms,
        r.gpu.p99_ms,
        r.display.p50_ms,
        r.display.p99_ms,
        r.latency.p50_ms,
        r.latency.p99_ms
    );
    let _ = writeln!(
        out,
        "  moved {:.1} MiB in {:.1} ms ({:.1} frames/s), device faults {}",
        r.mib_moved, r.elapsed_ms, r.fps, r.faults
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
}
