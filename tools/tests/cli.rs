//! Tests of the `devmmu` binary as a user runs it: exit status (0 every frame matched, 1 the run
//! failed, 2 bad usage or bad input), stdout (the summary, or exactly one JSON object), and for
//! every kind of bad input exactly one line on stderr, no panic, and no file left behind.
//!
//! Process runs are few and small: a 64x48 input unless the test is about the input.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_devmmu");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// Every key the issue requires in the `--json` object.
const JSON_KEYS: [&str; 15] = [
    "frames",
    "width",
    "height",
    "mmu",
    "dma_ops",
    "coherent",
    "iopte_stores",
    "pte_lines_cleaned",
    "tlb_invalidations",
    "synced_bytes_for_device",
    "synced_bytes_for_cpu",
    "bounced_bytes",
    "faults",
    "nv12_match",
    "elapsed_ms",
];

fn devmmu(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}

/// The run failed with `status`, printed nothing on stdout and exactly one non-empty line on
/// stderr, without a panic; returns that line.
fn one_error_line(out: &Output, status: i32, what: &str) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(status), "{what}: stderr {stderr:?}");
    assert!(stdout.is_empty(), "{what}: stdout {stdout:?}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr:?}");
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "{what}: not exactly one line: {stderr:?}"
    );
    let line = stderr.trim_end().to_string();
    assert!(line.starts_with("devmmu"), "{what}: {line:?}");
    line
}

#[test]
fn default_run_prints_a_summary() {
    // No input: the built-in 1280x720 chart.
    let out = devmmu(&["camera", "--frames", "2"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(
            "devmmu camera: 2 frames of 1280x720 NV12 through an IPU MMU, system-IOMMU DMA, \
             non-coherent\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("frames matched: 2/2 (every frame byte-exact)"),
        "{stdout}"
    );
    // Sizes in binary units, rates in MB/s, per-frame percentiles, one line per counter saying
    // what it counts.
    assert!(
        stdout.contains("  frame 1.32 MiB in a buffer object of 1.32 MiB; 2.64 MiB captured in "),
        "{stdout}"
    );
    assert!(stdout.contains(" MB/s\n"), "{stdout}");
    assert!(stdout.contains("  per frame: p50 "), "{stdout}");
    assert!(stdout.contains(" ms, p99 "), "{stdout}");
    let counter = |name: &str| -> (String, String) {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in {stdout}"));
        let rest = line.trim_start()[name.len()..].trim_start();
        let (value, what) = rest.split_once("  ").unwrap_or((rest, ""));
        (value.to_string(), what.trim().to_string())
    };
    assert_eq!(counter("IOPTE stores").0, "1354");
    assert!(counter("IOPTE stores").1.contains("page-table entries"));
    assert!(counter("PTE lines cleaned").1.contains("non-coherent"));
    let tlb = counter("TLB invalidations");
    assert!(
        tlb.1.contains("dummy page") && tlb.1.contains("ARM LPAE"),
        "{tlb:?}"
    );
    assert_eq!(counter("bounced").0, "0 B");
    assert_eq!(counter("faults").0, "0");
    assert!(counter("synced for CPU").0.ends_with(" MiB"));
    // stderr is not a terminal here: no progress bar, nothing else.
    assert_eq!(stderr, "");
}

/// Parses the whole of stdout as one JSON object and checks the keys the issue names.
fn json_object(out: &Output) -> serde_json::Map<String, serde_json::Value> {
    let stdout = text(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not exactly one JSON value ({e}): {stdout:?}"));
    let serde_json::Value::Object(map) = value else {
        panic!("not a JSON object: {stdout}");
    };
    for key in JSON_KEYS {
        assert!(map.contains_key(key), "missing {key:?} in {stdout}");
    }
    for key in JSON_KEYS.iter().filter(|k| !["mmu", "dma_ops"].contains(k)) {
        let v = &map[*key];
        assert!(v.is_u64() || v.is_boolean() || v.is_f64(), "{key}: {v}");
    }
    assert!(map["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    map
}

#[test]
fn json_is_exactly_one_object_with_every_key() {
    let s = Scratch::new("cli-json");
    let input = s.tiny_png("in.png");

    let out = devmmu(&[
        "camera",
        "--input",
        path_str(&input),
        "--frames",
        "3",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let m = json_object(&out);
    assert_eq!(m["frames"], 3);
    assert_eq!((&m["width"], &m["height"]), (&64.into(), &48.into()));
    assert_eq!((&m["mmu"], &m["dma_ops"]), (&"ipu".into(), &"iommu".into()));
    assert_eq!(m["coherent"], false);
    assert_eq!(m["nv12_match"], true);
    assert_eq!(m["faults"], 0);
    assert_eq!(m["bounced_bytes"], 0);
    // 64x48 NV12 is 64 x 72 = 4608 bytes: BOs of 2 pages; one L1 entry for the L2 table.
    assert_eq!(m["iopte_stores"], 4 * 2 + 1);

    // Every other option at once: --dump-pt must not add anything to stdout (its lines go to
    // stderr), and --output writes the PNG and nothing else.
    let png = s.path("out.png");
    let out = devmmu(&[
        "camera",
        "--input",
        path_str(&input),
        "--frames",
        "5",
        "--mmu",
        "arm-lpae-4k",
        "--dma",
        "direct",
        "--coherent",
        "--rebind",
        "--dump-pt",
        "--json",
        "--output",
        path_str(&png),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let m = json_object(&out);
    assert_eq!(m["frames"], 5);
    assert_eq!(
        (&m["mmu"], &m["dma_ops"]),
        (&"arm-lpae-4k".into(), &"direct".into())
    );
    assert_eq!((&m["coherent"], &m["rebind"]), (&true.into(), &true.into()));
    assert_eq!(m["nv12_match"], true);
    assert_eq!(m["pte_lines_cleaned"], 0);
    assert!(m["bounced_bytes"].as_u64().is_some_and(|b| b > 0));
    // 4 BOs of 2 pages and 3 table pointers, then 5 rebinds of 2 pages (clear + write).
    assert_eq!(m["iopte_stores"], 4 * 2 + 3 + 5 * 2 * 2);
    let dump: Vec<&str> = stderr.lines().collect();
    assert!(
        dump.first()
            .is_some_and(|l| l.starts_with("device page table (arm-lpae-4k,")),
        "{stderr}"
    );
    assert!(dump.len() >= 2, "{stderr}");
    assert!(dump[1..].iter().all(|l| l.trim_start().starts_with("va ")));
    assert_eq!(s.entries(), ["in.png", "out.png"]);
    let written = image::open(&png).unwrap();
    assert_eq!((written.width(), written.height()), (64, 48));
}

#[test]
fn each_bad_input_gets_one_line_and_exit_2() {
    let s = Scratch::new("cli-bad");
    let good = s.tiny_png("good.png");
    let missing = s.path("missing.png");
    let dir = s.path("subdir");
    std::fs::create_dir(&dir).unwrap();
    let empty = s.write("empty.png", b"");
    let text_file = s.write(
        "notes.png",
        b"these are not the pixels you are looking for\n",
    );
    // A real PNG with its pixel data overwritten: the chunk checksum no longer matches.
    let mut bytes = std::fs::read(&good).unwrap();
    let idat = bytes.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut bytes[idat + 8..idat + 40] {
        *b ^= 0x5A;
    }
    let corrupt = s.write("corrupt.png", &bytes);
    let full = std::fs::read(Path::new(DATA).join("astronaut.png")).unwrap();
    let truncated = s.write("half.png", &full[..full.len() / 2]);
    let huge = s.write("huge.png", &png_header_only(20000, 20000));
    // The largest size a PNG header can declare (2^31 - 1 each way), and a 0x10 image.
    let giant = s.write("giant.png", &png_header_only(0x7fff_ffff, 0x7fff_ffff));
    let zero = s.write("zero.png", &png_header_only(0, 10));
    // A PNG whose IHDR checksum is wrong: the png crate names the chunk with Rust's debug
    // formatting (`ChunkType { type: IHDR, .. }`), which must not reach the user.
    let mut bad_crc = std::fs::read(&good).unwrap();
    bad_crc[29] ^= 1;
    let bad_crc = s.write("badcrc.png", &bad_crc);
    let gif_out = s.path("out.gif");
    let nowhere = s.path("nowhere/out.png");
    let out = s.path("out.png");
    let (good, out) = (path_str(&good), path_str(&out));
    let astronaut = Path::new(DATA).join("astronaut.png");

    // (what, arguments after `camera`, words the line must hold)
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "missing file",
            vec!["--input", path_str(&missing)],
            vec![path_str(&missing), "no such file"],
        ),
        (
            "directory as input",
            vec!["--input", path_str(&dir)],
            vec![path_str(&dir), "is a directory"],
        ),
        (
            "empty file",
            vec!["--input", path_str(&empty)],
            vec!["empty.png", "empty"],
        ),
        (
            "not an image",
            vec!["--input", path_str(&text_file)],
            vec!["notes.png", "not an image"],
        ),
        (
            "corrupt bytes",
            vec!["--input", path_str(&corrupt)],
            vec!["corrupt.png", "corrupt image"],
        ),
        (
            "truncated PNG",
            vec!["--input", path_str(&truncated)],
            vec!["half.png", "truncated"],
        ),
        (
            "over-limit dimensions",
            vec!["--input", path_str(&huge)],
            vec!["huge.png", "20000x20000", "16384x16384 limit"],
        ),
        (
            "2^31-1 x 2^31-1 header",
            vec!["--input", path_str(&giant)],
            vec!["giant.png", "2147483647x2147483647", "too large"],
        ),
        (
            "0 x 10 header",
            vec!["--input", path_str(&zero)],
            vec!["zero.png", "0x10", "empty"],
        ),
        (
            "bad IHDR checksum",
            vec!["--input", path_str(&bad_crc)],
            vec!["badcrc.png", "corrupt image", "CRC", "IHDR chunk"],
        ),
        (
            "--output the input file",
            vec!["--output", good],
            vec![good, "is the input file"],
        ),
        (
            "--output in a format that is not written",
            vec!["--output", path_str(&gif_out)],
            vec!["out.gif", ".png or .jpg"],
        ),
        ("--frames 0", vec!["--frames", "0"], vec!["--frames", "'0'"]),
        (
            "--mmu bogus",
            vec!["--mmu", "bogus"],
            vec!["--mmu", "'bogus'", "ipu, arm-lpae-4k"],
        ),
        (
            "--dma bogus",
            vec!["--dma", "bogus"],
            vec!["--dma", "'bogus'", "iommu, direct"],
        ),
        ("unknown option", vec!["--bogus"], vec!["'--bogus'"]),
        (
            "--output into a missing directory",
            vec!["--output", path_str(&nowhere)],
            vec!["nowhere", "does not exist"],
        ),
        (
            "--output that is a directory",
            vec!["--output", path_str(&dir)],
            vec![path_str(&dir), "is a directory"],
        ),
        // The real-kernel platform off its guest: no edu device, no VFIO.
        (
            "--platform vfio without edu",
            vec!["--platform", "vfio"],
            vec!["no edu device", "scripts/kernel/test.sh"],
        ),
        (
            "--platform vfio with a PCI address that has no IOMMU group",
            vec!["--platform", "vfio", "--pci", "0000:99:1f.7"],
            vec!["0000:99:1f.7", "VFIO", "no IOMMU group"],
        ),
        (
            "--platform vfio with an image too large for edu",
            vec!["--platform", "vfio", "--input", path_str(&astronaut)],
            vec!["512x512", "too large for edu", "128x96"],
        ),
        (
            "--platform bogus",
            vec!["--platform", "bogus"],
            vec!["--platform", "'bogus'", "sim, vfio"],
        ),
    ];
    let before = s.entries();
    for (what, args, words) in cases {
        let mut full = vec!["camera"];
        if !args.contains(&"--frames") {
            full.extend(["--frames", "1"]);
        }
        // The tiny input keeps the usage-error runs from doing any real work if they got that
        // far; an input error must stop the run before the output is written.
        if !args.contains(&"--input") {
            full.extend(["--input", good]);
        }
        if !args.contains(&"--output") {
            full.extend(["--output", out]);
        }
        full.extend(args.iter().copied());
        let line = one_error_line(&devmmu(&full), 2, what);
        for w in words {
            assert!(line.contains(w), "{what}: {w:?} not in {line:?}");
        }
        // No Rust debug formatting (`Name { field: .. }`) in a message for people.
        assert!(
            !line.contains(" { ") && !line.contains(": true"),
            "{what}: {line:?}"
        );
        assert_eq!(s.entries(), before, "{what}: a file was left behind");
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "{what}");
    }
}

#[test]
fn help_exits_0_and_a_missing_command_exits_2() {
    let out = devmmu(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("camera"),
        "{}",
        text(&out.stdout)
    );

    let out = devmmu(&["camera", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for opt in [
        "--input",
        "--frames",
        "--mmu",
        "--dma",
        "--coherent",
        "--rebind",
        "--output",
        "--dump-pt",
        "--json",
    ] {
        assert!(help.contains(opt), "{opt} not in {help}");
    }
    assert!(
        help.contains("arm-lpae-4k") && help.contains("direct"),
        "{help}"
    );

    // No subcommand: one line, exit 2, as the README says.
    let line = one_error_line(&devmmu(&[]), 2, "no subcommand");
    assert!(line.contains("requires a subcommand"), "{line}");
}

#[test]
fn output_in_jpeg_is_jpeg_and_the_output_may_not_be_the_input_under_another_name() {
    let s = Scratch::new("cli-jpeg");
    let input = s.tiny_png("in.png");
    for name in ["out.jpg", "out.JPEG"] {
        let jpg = s.path(name);
        let out = devmmu(&[
            "camera",
            "--input",
            path_str(&input),
            "--frames",
            "1",
            "--output",
            path_str(&jpg),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let bytes = std::fs::read(&jpg).unwrap();
        assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "{name}: not a JPEG");
        let back = image::open(&jpg).unwrap();
        assert_eq!((back.width(), back.height()), (64, 48));
    }
    // A hard link to the input is the input.
    let link = s.path("link.png");
    std::fs::hard_link(&input, &link).unwrap();
    let before = std::fs::read(&input).unwrap();
    let args = [
        "camera",
        "--input",
        path_str(&input),
        "--frames",
        "1",
        "--output",
        path_str(&link),
    ];
    let line = one_error_line(&devmmu(&args), 2, "hard link to the input");
    assert!(line.contains("is the input file"), "{line}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert_eq!(s.entries(), ["in.png", "link.png", "out.JPEG", "out.jpg"]);
}

/// SIGINT and SIGTERM while the output's temporary file exists: the command exits with
/// 128 + the signal and leaves no file behind. The test hook `DEVMMU_TEST_HOLD_TEMP_MS` keeps
/// the temporary file in place long enough to interrupt it.
#[test]
fn an_interrupted_run_leaves_no_temporary_file() {
    use rustix::process::{kill_process, Pid, Signal};
    for (signal, status) in [(Signal::INT, 130), (Signal::TERM, 143)] {
        let s = Scratch::new("cli-interrupt");
        let input = s.tiny_png("in.png");
        let out = s.path("out.png");
        let mut child = Command::new(BIN)
            .args(["camera", "--input", path_str(&input), "--frames", "1"])
            .arg("--output")
            .arg(&out)
            .env(devmmu_tools::sensor::HOLD_TEMP_ENV, "60000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !s.entries().iter().any(|e| e.starts_with(".out.png.")) {
            assert!(std::time::Instant::now() < deadline, "no temporary file");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let pid = Pid::from_child(&child);
        kill_process(pid, signal).unwrap();
        let exit = child.wait().unwrap();
        assert_eq!(exit.code(), Some(status), "{signal:?}");
        assert_eq!(
            s.entries(),
            ["in.png"],
            "{signal:?}: a file was left behind"
        );
    }
}

/// `--va-map` writes an SVG of the VM's VA space with every ring buffer's binding, its BO and
/// its pages, and the guard page; an unusable path is refused before any work.
#[test]
fn va_map_draws_every_binding() {
    let s = Scratch::new("cli-va-map");
    let input = s.tiny_png("in.png");
    for mmu in ["ipu", "arm-lpae-4k"] {
        let svg = s.path(&format!("va-{mmu}.svg"));
        let out = devmmu(&[
            "camera",
            "--input",
            path_str(&input),
            "--frames",
            "2",
            "--mmu",
            mmu,
            "--va-map",
            path_str(&svg),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let picture = std::fs::read_to_string(&svg).unwrap();
        assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
        assert!(picture.contains(&format!("({mmu} MMU")), "{picture}");
        // 64x48 NV12 is 4608 bytes: BOs of 2 pages (8 KiB), bound from 0x1000 one after another.
        for (i, va) in ["0x1000", "0x3000", "0x5000", "0x7000"].iter().enumerate() {
            assert!(
                picture.contains(&format!("BO {i} at {va}")),
                "BO {i}: {picture}"
            );
        }
        assert_eq!(picture.matches("2 x 4 KiB pages").count(), 4, "{picture}");
        assert!(picture.contains("guard page") && picture.contains("hole"));
    }
    let nowhere = s.path("nowhere/va.svg");
    let args = [
        "camera",
        "--input",
        path_str(&input),
        "--va-map",
        path_str(&nowhere),
    ];
    let line = one_error_line(&devmmu(&args), 2, "--va-map into a missing directory");
    assert!(line.contains("does not exist"), "{line}");
}
