//! `devmmu pipeline`: camera -> GPU (Vulkan) -> display through shared BOs.
//!
//! These tests need a Vulkan driver with a compute queue and fd import (Mesa's lavapipe, which
//! `scripts/setup-vulkan.sh` installs). Without one they print one line and pass, unless
//! `DEVMMU_REQUIRE_VULKAN=1` (set by `scripts/test-all.sh` and CI), which turns the skip into a
//! failure, so CI cannot go green without having run them.

mod common;

use std::process::Command;

use common::Scratch;
use devmmu_tools::gpu::{Gpu, GpuError, ImportChoice, ImportPath};
use devmmu_tools::pipeline::{run_pipeline, Omit, PipelineArgs, PipelineError, Report};

/// Whether a Vulkan device is here; prints the skip reason once per test otherwise.
fn vulkan(test: &str) -> bool {
    match Gpu::new(ImportChoice::Auto) {
        Ok(_) => true,
        Err(e @ (GpuError::NoLoader(_) | GpuError::NoDevice { .. })) => {
            if std::env::var("DEVMMU_REQUIRE_VULKAN").as_deref() == Ok("1") {
                panic!("{test}: DEVMMU_REQUIRE_VULKAN=1 but {e}");
            }
            eprintln!("{test}: skipped: {e}");
            false
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

fn args(input: Option<std::path::PathBuf>, frames: u32) -> PipelineArgs {
    PipelineArgs {
        input,
        frames,
        mmu: devmmu_mm::device::MmuFormat::Ipu,
        coherent: false,
        import: ImportChoice::Auto,
        output: None,
        va_map: None,
        json: false,
        omit: None,
    }
}

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn assert_all_match(r: &Report) {
    assert!(
        r.all_match && r.frames_matched == r.frames,
        "{}/{} frames matched: {:?}",
        r.frames_matched,
        r.frames,
        r.first_mismatch
    );
    assert_eq!(r.faults, 0);
}

#[test]
fn every_frame_matches_with_both_import_paths() {
    if !vulkan("every_frame_matches_with_both_import_paths") {
        return;
    }
    let dir = Scratch::new("pipeline-paths");
    for (choice, path) in [
        (ImportChoice::DmaBuf, ImportPath::DmaBuf),
        (ImportChoice::Host, ImportPath::HostPointer),
    ] {
        let mut a = args(Some(dir.tiny_png("in.png")), 7);
        a.import = choice;
        let r = run_pipeline(&a).unwrap();
        assert_eq!(r.import_path, path);
        assert_all_match(&r);
        println!(
            "{}: {} on {}, {} frames of {}x{}",
            path.extension(),
            r.fd_kind,
            r.vulkan_device,
            r.frames,
            r.width,
            r.height
        );
    }
}

#[test]
fn a_photograph_with_an_odd_size_and_a_coherent_display() {
    if !vulkan("a_photograph_with_an_odd_size_and_a_coherent_display") {
        return;
    }
    let r = run_pipeline(&args(Some(data("coffee.png")), 4)).unwrap();
    assert_all_match(&r);
    assert_eq!((r.width, r.height), (600, 400));
    // 600 bytes of luma round up to 640 (IPU6 ISYS: 64-byte rows); 2400 bytes of XRGB to 2432.
    assert_eq!((r.nv12_stride, r.xrgb_stride), (640, 2432));

    let dir = Scratch::new("pipeline-odd");
    let odd = dir.path("odd.png");
    image::RgbImage::from_fn(65, 33, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 7) as u8, 200])
    })
    .save(&odd)
    .unwrap();
    let mut a = args(Some(odd), 5);
    a.coherent = true;
    a.mmu = devmmu_mm::device::MmuFormat::ArmLpae4k;
    let out = dir.path("last.png");
    a.output = Some(out.clone());
    let r = run_pipeline(&a).unwrap();
    assert_all_match(&r);
    assert!(r.display_coherent);
    // The PNG is what the display read of the last frame: the input, through NV12 and back.
    let png = image::open(&out).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (65, 33));
}

/// Each wait and each sync, removed in turn, makes the frame check fail: none is decorative.
#[test]
fn removing_any_wait_or_sync_breaks_the_frames() {
    if !vulkan("removing_any_wait_or_sync_breaks_the_frames") {
        return;
    }
    let dir = Scratch::new("pipeline-omit");
    let input = dir.tiny_png("in.png");
    // The control: everything in place.
    assert_all_match(&run_pipeline(&args(Some(input.clone()), 6)).unwrap());
    for omit in Omit::ALL {
        let mut a = args(Some(input.clone()), 6);
        a.omit = Some(omit);
        let r = run_pipeline(&a).unwrap();
        assert!(
            r.frames_matched < r.frames,
            "{omit:?}: all {} frames still matched",
            r.frames
        );
        println!(
            "without {omit:?}: {}/{} frames matched; {}",
            r.frames_matched,
            r.frames,
            r.first_mismatch.as_deref().unwrap_or("")
        );
    }
}

#[test]
fn bad_input_is_refused_before_anything_runs() {
    let dir = Scratch::new("pipeline-bad");
    let missing = dir.path("missing.png");
    match run_pipeline(&args(Some(missing), 2)) {
        Err(PipelineError::Input(_)) => {}
        other => panic!("expected an input error, got {other:?}"),
    }
    let mut a = args(None, 2);
    a.output = Some(dir.path("no/such/dir/out.png"));
    assert!(matches!(run_pipeline(&a), Err(PipelineError::Output(_))));
    // The output may not overwrite the input, nor carry a name of a format it is not.
    let input = dir.tiny_png("in.png");
    let mut a = args(Some(input.clone()), 2);
    a.output = Some(input.clone());
    assert!(matches!(run_pipeline(&a), Err(PipelineError::Output(_))));
    a.output = Some(dir.path("out.gif"));
    assert!(matches!(run_pipeline(&a), Err(PipelineError::Output(_))));
    assert_eq!(dir.entries(), ["in.png"]);
}

/// Asserts that a run of the command was refused with exit status 2 and a one-line message on
/// stderr, and returns that message.
fn refused_in_one_line(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// Asserts that a run of the command exited with status 0 (showing its stderr if not).
fn succeeded(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn command_line_summary_json_and_errors() {
    let exe = env!("CARGO_BIN_EXE_devmmu");
    let dir = Scratch::new("pipeline-cli");
    let out = Command::new(exe)
        .args(["pipeline", "--input"])
        .arg(dir.path("missing.png"))
        .output()
        .unwrap();
    let err = refused_in_one_line(&out);
    assert!(err.starts_with("devmmu pipeline: "), "{err}");

    let out = Command::new(exe)
        .args(["pipeline", "--frames", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    if !vulkan("command_line_summary_json_and_errors") {
        return;
    }
    let input = dir.tiny_png("in.png");
    let out = Command::new(exe)
        .args(["pipeline", "--frames", "4", "--json", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    succeeded(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["frames_matched"], 4);
    assert_eq!(v["all_match"], true);
    assert!(v["vulkan_device"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["import_path"]
        .as_str()
        .unwrap()
        .starts_with("VK_EXT_external_memory_"));
    assert!(v["latency"]["p99_ms"].as_f64().is_some());

    let out = Command::new(exe)
        .args(["pipeline", "--frames", "3", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("frames matched: 3/3"), "{text}");
    assert!(text.contains("p50 / p99"), "{text}");
}

/// `--va-map` draws both VMs, the camera's (IPU MMU, the NV12 ring) above the display's (ARM
/// LPAE, the XRGB ring), each BO at its IOVA; an unusable path is refused before any work, with
/// or without a GPU.
#[test]
fn va_map_draws_both_vms() {
    let exe = env!("CARGO_BIN_EXE_devmmu");
    let dir = Scratch::new("pipeline-va-map");
    let input = dir.tiny_png("in.png");
    let out = Command::new(exe)
        .args(["pipeline", "--input"])
        .arg(&input)
        .arg("--va-map")
        .arg(dir.path("missing/va.svg"))
        .output()
        .unwrap();
    let err = refused_in_one_line(&out);
    assert!(err.contains("does not exist"), "{err}");

    if !vulkan("va_map_draws_both_vms") {
        return;
    }
    let svg = dir.path("va.svg");
    let out = Command::new(exe)
        .args(["pipeline", "--frames", "2", "--input"])
        .arg(&input)
        .arg("--va-map")
        .arg(&svg)
        .output()
        .unwrap();
    succeeded(&out);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    let (camera, display) = (
        picture.find("(ipu MMU").expect("the camera's VM"),
        picture.find("(arm-lpae-4k MMU").expect("the display's VM"),
    );
    assert!(camera < display, "the camera's picture comes first");
    // 64x48: NV12 4608 bytes (2 pages per BO), XRGB8888 with a 256-byte pitch 12288 bytes (3
    // pages), each ring bound from 0x1000 one BO after another.
    for (i, va) in ["0x1000", "0x3000", "0x5000"].iter().enumerate() {
        assert!(
            picture.contains(&format!("NV12 BO {i} at {va}")),
            "{picture}"
        );
    }
    for (i, va) in ["0x1000", "0x4000", "0x7000"].iter().enumerate() {
        assert!(
            picture.contains(&format!("XRGB BO {i} at {va}")),
            "{picture}"
        );
    }
}

/// An fd smaller than the size asked for is refused, and the GPU stays usable.
#[test]
fn importing_a_short_fd_fails_cleanly() {
    if !vulkan("importing_a_short_fd_fails_cleanly") {
        return;
    }
    for choice in [ImportChoice::DmaBuf, ImportChoice::Host] {
        let mut gpu = Gpu::new(choice).unwrap();
        let fd = rustix::fs::memfd_create("short", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let r = gpu.import(std::os::fd::AsFd::as_fd(&fd), 1 << 20);
        assert!(r.is_err(), "{choice:?}: a 4 KiB fd imported as 1 MiB");
        // The same fd at its real size still imports.
        gpu.import(std::os::fd::AsFd::as_fd(&fd), 4096).unwrap();
    }
}
