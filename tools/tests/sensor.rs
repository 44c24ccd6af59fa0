//! Tests of the camera sensor pieces through the public API: NV12 layout and conversion, the
//! test chart, image loading and its errors, PNG output, and the frame checker.

mod common;
use common::*;
use std::path::{Path, PathBuf};

use devmmu_tools::sensor::{
    compare_frames, load_image, nv12_to_rgb, rgb_to_nv12, rgb_to_nv12_into, test_chart, write_png,
    LoadLimits, Nv12Frame, Nv12Layout, Plane, SensorError, DEFAULT_CHART_HEIGHT,
    DEFAULT_CHART_WIDTH, MAX_DIMENSION,
};
use image::{Rgb, RgbImage};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn data(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

/// (Y, Cb, Cr) of a frame of one colour.
fn ycbcr_of(rgb: [u8; 3]) -> (u8, u8, u8) {
    let frame = rgb_to_nv12(&RgbImage::from_pixel(2, 2, Rgb(rgb))).unwrap();
    let l = frame.layout();
    let d = frame.data();
    // All four luma samples are the same for a single colour.
    for y in 0..2 {
        assert_eq!(d[y * l.stride()..][..2], [d[0], d[0]]);
    }
    let c = l.chroma_offset();
    (d[0], d[c], d[c + 1])
}

// ---------------------------------------------------------------------------------------------
// Conversion: known vectors, worked by hand from
//   Y  = ((  66 R + 129 G +  25 B + 128) >> 8) +  16
//   Cb = (( -38 R -  74 G + 112 B + 128) >> 8) + 128
//   Cr = (( 112 R -  94 G -  18 B + 128) >> 8) + 128
// (`>>` floors, also for negative numbers.)

#[test]
fn black_and_white() {
    // Black: every product is 0; 128 >> 8 = 0, so Y = 16, Cb = Cr = 128.
    assert_eq!(ycbcr_of([0, 0, 0]), (16, 128, 128));
    // White: Y: (66 + 129 + 25) * 255 = 56100, + 128 = 56228, / 256 = 219.6 -> 219, + 16 = 235.
    // Cb: (-38 - 74 + 112) = 0 and Cr: (112 - 94 - 18) = 0, so both 128.
    assert_eq!(ycbcr_of([255, 255, 255]), (235, 128, 128));
}

#[test]
fn primaries() {
    // Red (255, 0, 0):
    //   Y  = (66 * 255 = 16830, + 128 = 16958) / 256 = 66.2 -> 66, + 16 = 82
    //   Cb = (-38 * 255 = -9690, + 128 = -9562) / 256 = -37.4 -> -38, + 128 = 90
    //   Cr = (112 * 255 = 28560, + 128 = 28688) / 256 = 112.06 -> 112, + 128 = 240
    assert_eq!(ycbcr_of([255, 0, 0]), (82, 90, 240));
    // Green (0, 255, 0):
    //   Y  = (129 * 255 = 32895, + 128 = 33023) / 256 = 128.996 -> 128, + 16 = 144
    //        (exact BT.601 gives 144.55; the 8-bit coefficients give 144)
    //   Cb = (-74 * 255 = -18870, + 128 = -18742) / 256 = -73.2 -> -74, + 128 = 54
    //   Cr = (-94 * 255 = -23970, + 128 = -23842) / 256 = -93.1 -> -94, + 128 = 34
    assert_eq!(ycbcr_of([0, 255, 0]), (144, 54, 34));
    // Blue (0, 0, 255):
    //   Y  = (25 * 255 = 6375, + 128 = 6503) / 256 = 25.4 -> 25, + 16 = 41
    //   Cb = (112 * 255 = 28560, + 128 = 28688) / 256 = 112.06 -> 112, + 128 = 240
    //   Cr = (-18 * 255 = -4590, + 128 = -4462) / 256 = -17.4 -> -18, + 128 = 110
    assert_eq!(ycbcr_of([0, 0, 255]), (41, 240, 110));
}

#[test]
fn chroma_of_a_block_is_the_mean_and_odd_edges_use_what_exists() {
    // 3x3: column 2 and row 2 are the odd edges.
    let img = RgbImage::from_fn(3, 3, |x, y| match (x, y) {
        (2, 2) => Rgb([0, 0, 255]),              // alone in chroma sample (1, 1)
        (2, _) => Rgb([255, 0, 0]),              // (2,0) and (2,1): chroma sample (1, 0)
        (_, 2) => Rgb([255, 255, 255]),          // (0,2) and (1,2): chroma sample (0, 1)
        (0, 0) | (1, 1) => Rgb([255, 255, 255]), // the full 2x2 block (0, 0):
        _ => Rgb([0, 0, 0]),                     // two white, two black
    });
    let f = rgb_to_nv12(&img).unwrap();
    let l = *f.layout();
    let d = f.data();
    let c = |cx: usize, cy: usize| {
        let i = l.chroma_offset() + cy * l.stride() + 2 * cx;
        (d[i], d[i + 1])
    };
    // Block (0, 0): two whites and two blacks, grey: Cb and Cr numerators are 0 -> 128.
    assert_eq!(c(0, 0), (128, 128));
    // Sample (1, 0): two reds, mean red: same as one red.
    assert_eq!(c(1, 0), (90, 240));
    // Sample (0, 1): two whites.
    assert_eq!(c(0, 1), (128, 128));
    // Sample (1, 1): blue alone.
    assert_eq!(c(1, 1), (240, 110));
    // Luma is per pixel.
    assert_eq!(d[2], 82);
    assert_eq!(d[2 * l.stride() + 2], 41);
}

#[test]
fn padding_is_zero_and_the_bo_tail_is_untouched() {
    let img = RgbImage::from_pixel(65, 3, Rgb([255, 255, 255]));
    let l = Nv12Layout::new(65, 3).unwrap();
    let mut bo = vec![0xEEu8; l.bo_size()];
    rgb_to_nv12_into(&img, &l, &mut bo).unwrap();
    for row in 0..3 {
        let r = &bo[row * 128..][..128];
        assert!(r[..65].iter().all(|&v| v == 235));
        assert!(r[65..].iter().all(|&v| v == 0), "luma padding of row {row}");
    }
    for row in 0..2 {
        let r = &bo[l.chroma_offset() + row * 128..][..128];
        assert!(r[..66].iter().all(|&v| v == 128)); // 33 pairs
        assert!(
            r[66..].iter().all(|&v| v == 0),
            "chroma padding of row {row}"
        );
    }
    assert!(bo[l.total_size()..].iter().all(|&v| v == 0xEE));
    assert_eq!(rgb_to_nv12(&img).unwrap().data(), &bo[..l.total_size()]);
}

#[test]
fn conversion_into_refuses_bad_arguments_and_writes_nothing() {
    let img = RgbImage::from_pixel(4, 4, Rgb([1, 2, 3]));
    let l = Nv12Layout::new(4, 4).unwrap();
    let mut short = vec![0xEEu8; l.total_size() - 1];
    match rgb_to_nv12_into(&img, &l, &mut short) {
        Err(SensorError::BufferTooSmall {
            which: "destination",
            len,
            needed,
        }) => {
            assert_eq!((len, needed), (l.total_size() - 1, l.total_size()));
        }
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    assert!(short.iter().all(|&v| v == 0xEE));
    let other = Nv12Layout::new(4, 2).unwrap();
    let mut bo = vec![0xEEu8; l.bo_size()];
    assert!(matches!(
        rgb_to_nv12_into(&img, &other, &mut bo),
        Err(SensorError::SizeMismatch {
            image_height: 4,
            layout_height: 2,
            ..
        })
    ));
    assert!(bo.iter().all(|&v| v == 0xEE));
    assert!(matches!(
        nv12_to_rgb(&l, &bo[..10]),
        Err(SensorError::BufferTooSmall {
            which: "source",
            len: 10,
            ..
        })
    ));
    assert!(matches!(
        rgb_to_nv12(&RgbImage::new(0, 5)),
        Err(SensorError::DimensionsOutOfRange {
            width: 0,
            height: 5,
            ..
        })
    ));
}

/// Largest difference of any channel of any pixel.
fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| f64::from(x.abs_diff(*y)).powi(2))
        .sum();
    let mse = se / a.as_raw().len() as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

#[test]
fn round_trip_of_uniform_colours_is_within_3() {
    // Bound: 3 per channel. Limited range has 219 luma and 225 chroma levels for 256 RGB levels,
    // so each step of Y, Cb or Cr is worth more than one RGB step, and the three rounding errors
    // add up in the inverse. An exhaustive run over all 2^24 colours (in a release build, while
    // writing this test) found a largest error of exactly 3; here every 5th level of each channel
    // is checked, in 2x2 blocks so that each block's chroma is its own colour.
    let levels: Vec<u8> = (0..=255).step_by(5).collect(); // 52 levels, 0 and 255 included
    let n = levels.len() as u32;
    for &r in &levels {
        let img = RgbImage::from_fn(2 * n, 2 * n, |x, y| {
            Rgb([r, levels[(x / 2) as usize], levels[(y / 2) as usize]])
        });
        let back = rgb_to_nv12(&img).unwrap().to_rgb();
        assert!(max_abs_diff(&img, &back) <= 3, "red level {r}");
    }
}

#[test]
fn round_trip_of_a_smooth_image_is_within_3() {
    // Channels change by at most 1 per pixel, so sharing a chroma sample over a 2x2 block adds
    // at most about one level to the rounding errors above: bound 3 per channel (measured: 2).
    let img = RgbImage::from_fn(256, 256, |x, y| {
        Rgb([x as u8, y as u8, ((x + y) / 2) as u8])
    });
    let back = rgb_to_nv12(&img).unwrap().to_rgb();
    assert!(max_abs_diff(&img, &back) <= 3);
    assert!(
        max_abs_diff(&img, &back) >= 1,
        "conversion should be lossy, not a copy"
    );
}

// ---------------------------------------------------------------------------------------------
// Layout

fn layout_numbers(l: &Nv12Layout) -> [usize; 7] {
    [
        l.stride(),
        l.luma_size(),
        l.chroma_offset(),
        l.chroma_height() as usize,
        l.chroma_width() as usize,
        l.total_size(),
        l.bo_size(),
    ]
}

#[test]
fn layouts_of_odd_sizes() {
    // [stride, luma size, chroma offset, chroma rows, CbCr pairs per row, total, BO size]
    let l = Nv12Layout::new(1, 1).unwrap();
    assert_eq!(layout_numbers(&l), [64, 64, 64, 1, 1, 128, 4096]);
    let l = Nv12Layout::new(3, 3).unwrap();
    assert_eq!(layout_numbers(&l), [64, 192, 192, 2, 2, 320, 4096]);
    let l = Nv12Layout::new(65, 1).unwrap();
    assert_eq!(layout_numbers(&l), [128, 128, 128, 1, 33, 256, 4096]);
    let l = Nv12Layout::new(16384, 1).unwrap();
    assert_eq!(
        layout_numbers(&l),
        [16384, 16384, 16384, 1, 8192, 32768, 32768]
    );
    assert!(matches!(
        Nv12Layout::new(16385, 1),
        Err(SensorError::DimensionsOutOfRange {
            width: 16385,
            height: 1,
            max: MAX_DIMENSION
        })
    ));
}

#[test]
fn odd_sizes_convert_and_come_back() {
    for (w, h) in [(1, 1), (3, 3), (65, 1), (16384, 1)] {
        // Smooth (steps of at most 1; the wrap of x % 256 falls between chroma blocks), so the
        // bound of the smooth-image test applies.
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, y as u8, 100]));
        let f = rgb_to_nv12(&img).unwrap();
        assert_eq!(f.data().len(), f.layout().total_size());
        let back = nv12_to_rgb(f.layout(), f.data()).unwrap();
        assert_eq!(back.dimensions(), (w, h));
        assert!(max_abs_diff(&img, &back) <= 3, "{w}x{h}");
    }
}

#[test]
fn frame_from_bytes_drops_the_bo_tail() {
    let f = rgb_to_nv12(&RgbImage::from_pixel(3, 3, Rgb([9, 99, 199]))).unwrap();
    let mut bo = f.data().to_vec();
    bo.resize(f.layout().bo_size(), 0xEE);
    let g = Nv12Frame::from_bytes(*f.layout(), bo).unwrap();
    assert_eq!(g, f);
    assert!(matches!(
        Nv12Frame::from_bytes(*f.layout(), vec![0; 5]),
        Err(SensorError::BufferTooSmall {
            len: 5,
            needed: 320,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Chart

#[test]
fn chart_is_deterministic_and_has_its_regions() {
    let a = test_chart(DEFAULT_CHART_WIDTH, DEFAULT_CHART_HEIGHT).unwrap();
    let b = test_chart(DEFAULT_CHART_WIDTH, DEFAULT_CHART_HEIGHT).unwrap();
    assert_eq!(a.dimensions(), (1280, 720));
    assert_eq!(a, b);

    // Colour bars in the top band: the middle of each of the eight bars.
    let bars = [
        [255, 255, 255],
        [255, 255, 0],
        [0, 255, 255],
        [0, 255, 0],
        [255, 0, 255],
        [255, 0, 0],
        [0, 0, 255],
        [0, 0, 0],
    ];
    for (i, bar) in bars.iter().enumerate() {
        assert_eq!(&a.get_pixel(80 + 160 * i as u32, 90).0, bar, "bar {i}");
    }
    // Horizontal ramp (rows 180..360): increasing left to right, 0 to 255.
    let row: Vec<u8> = (0..1280).map(|x| a.get_pixel(x, 270).0[0]).collect();
    assert_eq!((row[0], row[1279]), (0, 255));
    assert!(row.windows(2).all(|w| w[0] <= w[1]));
    // Vertical ramp (rows 360..540): increasing top to bottom.
    let col: Vec<u8> = (360..540).map(|y| a.get_pixel(640, y).0[0]).collect();
    assert_eq!((col[0], col[179]), (0, 255));
    assert!(col.windows(2).all(|w| w[0] <= w[1]));

    // Fine lines (rows 540..720): adjacent rows differ by full scale in the left third,
    // adjacent columns in the middle third, and both in the checkerboard.
    for y in 540..719 {
        let (p, q) = (a.get_pixel(100, y).0[0], a.get_pixel(100, y + 1).0[0]);
        assert_eq!(p.abs_diff(q), 255, "rows {y}/{} at x=100", y + 1);
        let (p, q) = (a.get_pixel(1100, y).0[0], a.get_pixel(1100, y + 1).0[0]);
        assert_eq!(p.abs_diff(q), 255, "checkerboard rows {y}/{}", y + 1);
    }
    for x in 500..700 {
        let (p, q) = (a.get_pixel(x, 600).0[0], a.get_pixel(x + 1, 600).0[0]);
        assert_eq!(p.abs_diff(q), 255, "columns {x}/{}", x + 1);
    }

    // Other sizes are deterministic too, and differ from each other.
    assert_eq!(test_chart(33, 17).unwrap(), test_chart(33, 17).unwrap());
    assert!(matches!(
        test_chart(MAX_DIMENSION + 1, 1),
        Err(SensorError::DimensionsOutOfRange { .. })
    ));
}

#[test]
fn chart_fine_lines_lose_chroma_but_keep_luma() {
    // 1-pixel black/white lines are grey in 4:2:0 chroma but keep full-scale luma.
    let chart = test_chart(64, 64).unwrap();
    let f = rgb_to_nv12(&chart).unwrap();
    let l = f.layout();
    let d = f.data();
    assert_eq!((d[48 * l.stride()], d[49 * l.stride()]), (235, 16));
    let c = l.chroma_offset() + 24 * l.stride();
    assert_eq!((d[c], d[c + 1]), (128, 128));
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Asserts the error's message is one line that names the file.
fn assert_message(e: &SensorError, path: &Path) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line message: {msg:?}");
    assert!(
        msg.starts_with(&path.display().to_string()),
        "message does not start with the path: {msg:?}"
    );
}

fn load(path: &Path) -> Result<RgbImage, SensorError> {
    load_image(path, LoadLimits::default())
}

#[test]
fn photographs_load_and_convert() {
    for (name, w, h) in [("astronaut.png", 512, 512), ("coffee.png", 600, 400)] {
        let img = load(&data(name)).unwrap();
        assert_eq!(img.dimensions(), (w, h), "{name}");
        // Not a blank image: many distinct colours in the first row.
        let mut first_row: Vec<[u8; 3]> = (0..w).map(|x| img.get_pixel(x, 0).0).collect();
        first_row.sort();
        first_row.dedup();
        assert!(first_row.len() > 50, "{name}");

        let frame = rgb_to_nv12(&img).unwrap();
        assert_eq!(frame.layout().width(), w);
        assert_eq!(frame.data().len(), frame.layout().total_size());
        // Photographs have edges where 4:2:0 loses chroma, so the bound is on the whole image:
        // measured about 39 dB for both.
        let back = frame.to_rgb();
        let db = psnr(&img, &back);
        assert!(db > 35.0, "{name}: PSNR {db:.1} dB");
    }
}

#[test]
fn missing_file() {
    let p = data("no-such-file.png");
    let e = load(&p).unwrap_err();
    assert!(
        matches!(&e, SensorError::NotFound { path } if *path == p),
        "{e:?}"
    );
    assert_message(&e, &p);
    assert!(e.to_string().ends_with("no such file"));
}

#[test]
fn directory() {
    let p = PathBuf::from(DATA);
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::IsADirectory { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn not_a_regular_file() {
    let s = Scratch::new("sensor-socket");
    let p = s.path("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&p).unwrap();
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::NotARegularFile { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn unreadable_file() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("sensor-unreadable");
    let p = s.write("secret.png", &std::fs::read(data("astronaut.png")).unwrap());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&p).is_ok() {
        // Running as root (or with CAP_DAC_OVERRIDE): permissions cannot make a file unreadable.
        // The mapping of EACCES is covered by a unit test in sensor/input.rs.
        eprintln!("skipping unreadable_file: this process can read a mode-000 file");
        return;
    }
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::PermissionDenied { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn empty_file() {
    let s = Scratch::new("sensor-empty");
    let p = s.write("empty.png", b"");
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::EmptyFile { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn unrecognised_bytes() {
    let s = Scratch::new("sensor-garbage");
    let p = s.write("notes.png", b"this is a text file, not a picture\n");
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::UnrecognisedFormat { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn format_not_built_in() {
    // A QOI header: the `image` crate recognises the signature, but this build has no QOI decoder.
    let s = Scratch::new("sensor-qoi");
    let mut bytes = b"qoif".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 4, 3, 0]);
    bytes.extend_from_slice(&[0; 16]);
    let p = s.write("image.qoi", &bytes);
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::UnsupportedFormat { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn corrupt_png() {
    // The PNG signature followed by junk: recognised as PNG, rejected by its decoder.
    let s = Scratch::new("sensor-corrupt");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    let p = s.write("corrupt.png", &bytes);
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::Corrupt { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn corrupt_pixel_data() {
    // A valid header with damaged compressed data: decoding fails part way, after the size check.
    let s = Scratch::new("sensor-corrupt-data");
    let mut bytes = std::fs::read(data("coffee.png")).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 2..n / 2 + 4096] {
        *b = !*b;
    }
    let p = s.write("damaged.png", &bytes);
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::Corrupt { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn truncated_png() {
    let s = Scratch::new("sensor-truncated");
    let full = std::fs::read(data("astronaut.png")).unwrap();
    let p = s.write("half.png", &full[..full.len() / 2]);
    let e = load(&p).unwrap_err();
    assert!(matches!(e, SensorError::Truncated { .. }), "{e:?}");
    assert_message(&e, &p);
}

#[test]
fn crc32_check_value() {
    // The standard check value of CRC-32/ISO-HDLC.
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn oversized_png_is_refused_from_its_header() {
    let s = Scratch::new("sensor-huge-png");
    // 20000 x 20000 RGB would be 1.2 GB decoded; the file is 57 bytes.
    let p = s.write("huge.png", &png_header_only(20000, 20000));
    let e = load(&p).unwrap_err();
    match &e {
        SensorError::ImageTooLarge {
            width,
            height,
            max_width,
            max_height,
            ..
        } => {
            assert_eq!((*width, *height), (20000, 20000));
            assert_eq!((*max_width, *max_height), (MAX_DIMENSION, MAX_DIMENSION));
        }
        other => panic!("expected ImageTooLarge, got {other:?}"),
    }
    assert_message(&e, &p);
    assert!(e.to_string().contains("20000x20000"));
    // The same header at an accepted size gets past the size check and fails on the missing data.
    let p = s.write("small.png", &png_header_only(16, 16));
    let e = load(&p).unwrap_err();
    assert!(
        matches!(
            e,
            SensorError::Truncated { .. } | SensorError::Corrupt { .. }
        ),
        "{e:?}"
    );
}

#[test]
fn size_limits_apply_to_each_direction_and_are_inclusive() {
    let s = Scratch::new("sensor-limits");
    // PNM headers are plain text; the pixel data (3 bytes per pixel) follows.
    let p = s.write("tall.ppm", b"P6\n1 20000\n255\n");
    assert!(matches!(
        load(&p),
        Err(SensorError::ImageTooLarge {
            width: 1,
            height: 20000,
            ..
        })
    ));
    let p = s.write("wide.ppm", b"P6\n16385 1\n255\n");
    assert!(matches!(
        load(&p),
        Err(SensorError::ImageTooLarge {
            width: 16385,
            height: 1,
            ..
        })
    ));
    let mut edge = b"P6\n16384 1\n255\n".to_vec();
    edge.extend((0..16384 * 3).map(|i| (i % 256) as u8));
    let p = s.write("edge.ppm", &edge);
    let img = load(&p).unwrap();
    assert_eq!(img.dimensions(), (16384, 1));
    assert_eq!(img.get_pixel(1, 0).0, [3, 4, 5]);

    // Caller's own limits.
    let small = LoadLimits::new(256, 512).unwrap();
    assert!(matches!(
        load_image(data("astronaut.png"), small),
        Err(SensorError::ImageTooLarge {
            width: 512,
            height: 512,
            max_width: 256,
            max_height: 512,
            ..
        })
    ));
    assert!(load_image(data("astronaut.png"), LoadLimits::new(512, 512).unwrap()).is_ok());
}

#[test]
fn zero_sized_image() {
    let s = Scratch::new("sensor-zero");
    let p = s.write("zero.ppm", b"P6\n0 0\n255\n");
    let e = load(&p).unwrap_err();
    assert!(
        matches!(
            e,
            SensorError::EmptyImage {
                width: 0,
                height: 0,
                ..
            }
        ),
        "{e:?}"
    );
    assert_message(&e, &p);
}

// ---------------------------------------------------------------------------------------------
// Output

#[test]
fn write_png_round_trips() {
    let s = Scratch::new("sensor-write-ok");
    let chart = test_chart(99, 37).unwrap();
    let p = s.path("chart.png");
    write_png(&p, &chart).unwrap();
    assert_eq!(load(&p).unwrap(), chart);
    // Overwriting an existing file replaces it whole.
    let other = test_chart(10, 10).unwrap();
    write_png(&p, &other).unwrap();
    assert_eq!(load(&p).unwrap(), other);
    assert_eq!(s.entries(), vec!["chart.png".to_string()]);
}

#[test]
fn write_png_failures_leave_nothing_behind() {
    let s = Scratch::new("sensor-write-fail");
    std::fs::create_dir(s.path("sub")).unwrap();
    std::fs::write(s.path("plain"), b"x").unwrap();
    let img = test_chart(8, 8).unwrap();
    let before = s.entries();

    let p = s.path("sub");
    let e = write_png(&p, &img).unwrap_err();
    assert!(matches!(e, SensorError::OutputIsDirectory { .. }), "{e:?}");
    assert_message(&e, &p);

    let p = s.path("missing/out.png");
    let e = write_png(&p, &img).unwrap_err();
    assert!(
        matches!(&e, SensorError::OutputParentMissing { parent, .. } if *parent == s.path("missing")),
        "{e:?}"
    );
    assert_message(&e, &p);

    let p = s.path("plain/out.png");
    let e = write_png(&p, &img).unwrap_err();
    assert!(
        matches!(e, SensorError::OutputParentNotADirectory { .. }),
        "{e:?}"
    );
    assert_message(&e, &p);

    let p = s.path("sub/..");
    let e = write_png(&p, &img).unwrap_err();
    assert!(matches!(e, SensorError::OutputIsDirectory { .. }), "{e:?}");

    let p = PathBuf::from(format!("{}/newdir/", s.0.display()));
    let e = write_png(&p, &img).unwrap_err();
    assert!(matches!(e, SensorError::InvalidOutputPath { .. }), "{e:?}");
    assert_message(&e, &p);

    let p = s.path("empty.png");
    let e = write_png(&p, &RgbImage::new(0, 0)).unwrap_err();
    assert!(
        matches!(e, SensorError::DimensionsOutOfRange { .. }),
        "{e:?}"
    );

    assert_eq!(s.entries(), before);
    assert_eq!(std::fs::read_dir(s.path("sub")).unwrap().count(), 0);
    assert_eq!(std::fs::read(s.path("plain")).unwrap(), b"x");
}

// ---------------------------------------------------------------------------------------------
// Frame checker

#[test]
fn checker_finds_a_corrupted_capture() {
    let img = load(&data("coffee.png")).unwrap();
    let sent = rgb_to_nv12(&img).unwrap();
    let l = *sent.layout();
    // The capture lands in a BO with garbage in the padding and tail: still a match.
    let mut captured = vec![0x5Au8; l.bo_size()];
    for row in 0..(l.height() + l.chroma_height()) as usize {
        let r = row * l.stride();
        captured[r..r + l.width() as usize]
            .copy_from_slice(&sent.data()[r..r + l.width() as usize]);
    }
    let r = compare_frames(&l, sent.data(), &captured).unwrap();
    assert!(r.is_match(), "{r:?}");
    assert_eq!(r.compared_bytes, 600 * 400 + 600 * 200);

    // One page of the capture was never written (a missing IOPTE, say): luma rows 6 and 7
    // of a 640-byte stride start at 3840 and 4480; bytes 4096..8192 cover x 256..599 of row 6,
    // all of rows 7..=11, and x 0..511 of row 12.
    let mut damaged = captured.clone();
    damaged[4096..8192].fill(0);
    let r = compare_frames(&l, sent.data(), &damaged).unwrap();
    assert!(!r.is_match());
    let first = r.first_mismatch.unwrap();
    assert_eq!(first.plane, Plane::Y);
    assert_eq!((first.x, first.y), (256, 6));
    assert_eq!(first.expected, sent.data()[4096]);
    assert_eq!(first.got, 0);
    // Visible bytes in the page: 344 + 5 * 600 + 512 = 3856 minus those already 0 in the frame
    // (limited-range luma is never 0, so none).
    assert_eq!(r.mismatched_bytes, 344 + 5 * 600 + 512);

    // A wrong chroma byte is named by component and chroma coordinates.
    let mut damaged = captured;
    let i = l.chroma_offset() + 10 * l.stride() + 2 * 7 + 1;
    damaged[i] ^= 0x80;
    let first = compare_frames(&l, sent.data(), &damaged)
        .unwrap()
        .first_mismatch
        .unwrap();
    assert_eq!((first.plane, first.x, first.y), (Plane::Cr, 7, 10));
    assert_eq!(first.got, sent.data()[i] ^ 0x80);
}
