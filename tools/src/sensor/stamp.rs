//! The frame counter a sensor stamps into each frame, as camera test patterns do, so that no two
//! frames of a capture are alike: a buffer that still holds an earlier frame (the previous lap
//! of a capture ring, a bounce buffer that was not refreshed) differs from the frame expected
//! in it, even when the scene is a still image.

use super::convert::check_len;
use super::layout::Nv12Layout;
use super::SensorError;

/// Bytes of a full stamp: the frame number as a 32-bit little-endian integer.
pub const STAMP_BYTES: usize = 4;

/// Number of stamp bytes a frame of `layout` holds: [`STAMP_BYTES`], or fewer when the frame
/// has fewer luma samples than that (`width * height` < 4: 1x1, 1x2, 1x3, 2x1 and 3x1 frames).
pub fn stamp_len(layout: &Nv12Layout) -> usize {
    let samples = layout.width() as usize * layout.height() as usize;
    samples.min(STAMP_BYTES)
}

/// Byte offsets of the stamp in a frame of `layout`: the first [`stamp_len`] luma samples in
/// memory order (row 0 from column 0, continuing on the next row for a frame narrower than
/// the stamp).
fn stamp_offsets(layout: &Nv12Layout) -> impl Iterator<Item = usize> + '_ {
    let w = layout.width();
    (0..stamp_len(layout) as u32).map(move |i| layout.luma_index(i % w, i / w))
}

/// Stamps frame number `frame` into the NV12 frame `nv12` laid out as `layout`.
///
/// Where: the first [`stamp_len`] luma (Y) samples of the frame in memory order, which for any
/// frame at least 4 pixels wide are pixels (0, 0) to (3, 0), the first 4 bytes of the first
/// row of the Y plane. They are visible samples, so [`super::compare_frames`] checks them.
///
/// Encoding: `frame` as a little-endian `u32`, byte `i` of the stamp being
/// `(frame >> (8 * i)) as u8`. The stamp is [`STAMP_BYTES`] (4) bytes; a frame with fewer luma
/// samples holds only the low [`stamp_len`] bytes, so there the stamp is `frame` modulo
/// `256^stamp_len`. Either way two frames whose numbers differ by less than 256 always differ
/// in the stamp's first byte.
///
/// Only the stamp bytes are written, and all of them every time, so stamping one buffer again
/// and again with successive numbers (as the camera scenario does with the device's source
/// frame) costs [`STAMP_BYTES`] bytes per frame and leaves no trace of the previous number. The
/// rest of the frame (the scene, the chroma plane, the padding) is untouched. As pixels, the
/// stamp is the top-left corner's first 4 luma samples: the first steps through the grey levels
/// from frame to frame, the others stay black (0) for the first 256, 65,536 and 2^24 frames.
///
/// # Errors
/// [`SensorError::BufferTooSmall`] (`which` = `"destination"`) if `nv12` is shorter than
/// `layout.total_size()`; `nv12` is then unchanged.
pub fn stamp_frame(nv12: &mut [u8], layout: &Nv12Layout, frame: u32) -> Result<(), SensorError> {
    check_len("destination", nv12.len(), layout)?;
    for (offset, byte) in stamp_offsets(layout).zip(frame.to_le_bytes()) {
        nv12[offset] = byte;
    }
    Ok(())
}

/// Reads back the stamp of the NV12 frame `nv12` laid out as `layout` (see [`stamp_frame`]):
/// the frame number, or for a frame with fewer than [`STAMP_BYTES`] luma samples its low
/// [`stamp_len`] bytes. Whatever the frame holds is read as a stamp: for a frame that was never
/// stamped (a buffer the device did not write, for instance) the number means nothing.
///
/// # Errors
/// [`SensorError::BufferTooSmall`] (`which` = `"source"`) if `nv12` is shorter than
/// `layout.total_size()`.
pub fn read_stamp(nv12: &[u8], layout: &Nv12Layout) -> Result<u32, SensorError> {
    check_len("source", nv12.len(), layout)?;
    let mut bytes = [0u8; STAMP_BYTES];
    for (byte, offset) in bytes.iter_mut().zip(stamp_offsets(layout)) {
        *byte = nv12[offset];
    }
    Ok(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::super::compare_frames;
    use super::*;

    /// A frame of `layout` whose every byte is distinct from its neighbours' (not a stamp).
    fn pattern(layout: &Nv12Layout) -> Vec<u8> {
        (0..layout.total_size())
            .map(|i| (i * 7 + 3) as u8)
            .collect()
    }

    #[test]
    fn stamp_is_the_first_four_luma_bytes_little_endian() {
        let l = Nv12Layout::new(64, 4).unwrap();
        let before = pattern(&l);
        let mut f = before.clone();
        stamp_frame(&mut f, &l, 0x0A0B_0C0D).unwrap();
        assert_eq!(f[..4], [0x0D, 0x0C, 0x0B, 0x0A]);
        // Nothing else changed.
        assert_eq!(f[4..], before[4..]);
        assert_eq!(read_stamp(&f, &l).unwrap(), 0x0A0B_0C0D);
        assert_eq!(stamp_len(&l), STAMP_BYTES);
    }

    #[test]
    fn restamping_leaves_no_trace_of_the_previous_number() {
        let l = Nv12Layout::new(5, 3).unwrap();
        let mut once = pattern(&l);
        stamp_frame(&mut once, &l, 7).unwrap();
        let mut many = pattern(&l);
        for k in [u32::MAX, 0x0101_0101, 0, 7] {
            stamp_frame(&mut many, &l, k).unwrap();
        }
        assert_eq!(once, many);
        assert_eq!(read_stamp(&many, &l).unwrap(), 7);
    }

    #[test]
    fn narrow_frames_continue_on_the_next_rows() {
        // 1 pixel wide, 4 high: the stamp is the first luma sample of rows 0 to 3.
        let l = Nv12Layout::new(1, 4).unwrap();
        let before = pattern(&l);
        let mut f = before.clone();
        stamp_frame(&mut f, &l, 0x4433_2211).unwrap();
        let offsets: Vec<usize> = (0..4).map(|y| y * l.stride()).collect();
        for (i, &o) in offsets.iter().enumerate() {
            assert_eq!(f[o], 0x11 * (i as u8 + 1), "row {i}");
        }
        for (i, (&a, &b)) in before.iter().zip(&f).enumerate() {
            if !offsets.contains(&i) {
                assert_eq!(a, b, "byte {i} changed");
            }
        }
        assert_eq!(read_stamp(&f, &l).unwrap(), 0x4433_2211);
    }

    #[test]
    fn tiny_frames_hold_the_low_bytes() {
        for (w, h, len) in [(1, 1, 1), (2, 1, 2), (1, 3, 3), (2, 2, 4), (3, 2, 4)] {
            let l = Nv12Layout::new(w, h).unwrap();
            assert_eq!(stamp_len(&l), len, "{w}x{h}");
            let mut f = pattern(&l);
            let chroma = f[l.chroma_offset()..].to_vec();
            stamp_frame(&mut f, &l, 0x4433_2211).unwrap();
            let mask = if len == 4 {
                u32::MAX
            } else {
                (1 << (8 * len)) - 1
            };
            assert_eq!(read_stamp(&f, &l).unwrap(), 0x4433_2211 & mask, "{w}x{h}");
            // The chroma plane is never part of the stamp.
            assert_eq!(f[l.chroma_offset()..], chroma[..], "{w}x{h}");
        }
    }

    #[test]
    fn the_checker_sees_a_frame_of_the_previous_lap() {
        // The camera's case: the same scene, stamped k and k - 4 (a ring of 4 buffers).
        let l = Nv12Layout::new(6, 4).unwrap();
        for k in [4u32, 5, 255, 256, 1_000_003] {
            let mut expected = pattern(&l);
            let mut stale = expected.clone();
            stamp_frame(&mut expected, &l, k).unwrap();
            stamp_frame(&mut stale, &l, k - 4).unwrap();
            let r = compare_frames(&l, &expected, &stale).unwrap();
            assert!(!r.is_match(), "frame {k}");
            let first = r.first_mismatch.unwrap();
            assert_eq!((first.x, first.y), (0, 0), "frame {k}");
            assert_eq!(first.expected, k as u8);
            assert_eq!(first.got, (k - 4) as u8);
        }
    }

    #[test]
    fn short_buffers_are_refused_and_left_alone() {
        let l = Nv12Layout::new(4, 4).unwrap();
        let mut short = vec![9u8; l.total_size() - 1];
        let err = stamp_frame(&mut short, &l, 1).unwrap_err();
        assert!(matches!(
            err,
            SensorError::BufferTooSmall {
                which: "destination",
                ..
            }
        ));
        assert!(short.iter().all(|&b| b == 9));
        let err = read_stamp(&short, &l).unwrap_err();
        assert!(matches!(
            err,
            SensorError::BufferTooSmall {
                which: "source",
                ..
            }
        ));
    }
}
