//! BO_CREATE_IMAGE: a BO laid out for a DRM fourcc and modifier, its planes' pitches and
//! offsets returned; every refusal leaves the file as it was.

mod common;

use common::*;
use devmmu_uapi::abi::*;
use devmmu_uapi::{Errno, File};

const NV12: u32 = u32::from_le_bytes(*b"NV12");
const XR24: u32 = u32::from_le_bytes(*b"XR24");

fn image(width: u32, height: u32, fourcc: u32, rule: u32) -> DevmmuBoCreateImage {
    DevmmuBoCreateImage {
        width,
        height,
        fourcc,
        pitch_rule: rule,
        ..Default::default()
    }
}

#[test]
fn layouts_are_the_drm_ones_under_each_rule() {
    let m = machine();
    let isp = File::open(&m, DEVMMU_DEVICE_ISP, 0).unwrap();
    let gpu = File::open(&m, DEVMMU_DEVICE_GPU, 0).unwrap();

    // NV12 65x33 on the ISP, its own rule (IPU6 ISYS, 64-byte rows and planes): Y rows of 65
    // bytes -> 128, 33 rows = 4224 bytes; CbCr: 33 pairs = 66 bytes -> 128, 17 rows, at 4224.
    let mut a = image(65, 33, NV12, DEVMMU_PITCH_RULE_DEVICE);
    ioctl(&isp, DEVMMU_IOCTL_BO_CREATE_IMAGE, &mut a).unwrap();
    assert_ne!(a.handle, 0);
    assert_eq!(a.num_planes, 2);
    assert_eq!(a.pitches, [128, 128, 0, 0]);
    assert_eq!(a.offsets, [0, 4224, 0, 0]);
    assert_eq!(a.size, 8192); // 4224 + 2176 = 6400 bytes, two pages

    // XRGB8888 100x10 on the GPU, its own rule (scanout): 400 bytes -> 448.
    let mut b = image(100, 10, XR24, DEVMMU_PITCH_RULE_DEVICE);
    ioctl(&gpu, DEVMMU_IOCTL_BO_CREATE_IMAGE, &mut b).unwrap();
    assert_eq!((b.num_planes, b.pitches[0], b.size), (1, 448, 8192));

    // The dumb rule: no padding at all (3 x 2 bytes RGB565 = 6-byte rows).
    let rgb565 = u32::from_le_bytes(*b"RG16");
    let mut c = image(3, 3, rgb565, DEVMMU_PITCH_RULE_DUMB);
    ioctl(&gpu, DEVMMU_IOCTL_BO_CREATE_IMAGE, &mut c).unwrap();
    assert_eq!((c.pitches[0], c.size), (6, 4096));

    // The BO is a BO: BO_INFO sees its size.
    let mut info = DevmmuBoInfo {
        handle: a.handle,
        ..Default::default()
    };
    ioctl(&isp, DEVMMU_IOCTL_BO_INFO, &mut info).unwrap();
    assert_eq!(info.size, 8192);
}

#[test]
fn refusals_change_nothing() {
    let (m, f, g) = two_files();
    let before = snap(&m, &f, &g);
    let tiled = DevmmuBoCreateImage {
        modifier: (1 << 56) | 1, // I915_FORMAT_MOD_X_TILED
        ..image(64, 64, XR24, DEVMMU_PITCH_RULE_DEVICE)
    };
    let padded = DevmmuBoCreateImage {
        pad: 1,
        ..image(64, 64, XR24, DEVMMU_PITCH_RULE_DEVICE)
    };
    let flagged = DevmmuBoCreateImage {
        flags: 1 << 31,
        ..image(64, 64, XR24, DEVMMU_PITCH_RULE_DEVICE)
    };
    for (what, mut a) in [
        ("width 0", image(0, 64, XR24, 0)),
        ("height above 16384", image(64, 16385, XR24, 0)),
        ("an unknown fourcc", image(64, 64, 0x1234_5678, 0)),
        (
            "a fourcc with multi-pixel blocks (X0L0)",
            image(64, 64, u32::from_le_bytes(*b"X0L0"), 0),
        ),
        ("an unknown pitch rule", image(64, 64, XR24, 4)),
        ("a tiled modifier", tiled),
        ("a non-zero pad", padded),
        ("an unknown flag", flagged),
    ] {
        let sent = a;
        assert_eq!(
            ioctl(&f, DEVMMU_IOCTL_BO_CREATE_IMAGE, &mut a),
            Err(Errno::INVAL),
            "{what}"
        );
        assert_eq!(a, sent, "{what}: outputs written on error");
    }
    assert_eq!(snap(&m, &f, &g), before);
}
