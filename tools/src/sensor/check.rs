//! The frame checker: does a captured NV12 frame hold what the sensor sent?

use super::layout::{Nv12Layout, Plane};
use super::SensorError;

/// One differing sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Which plane (and, for chroma, which component) the sample is in.
    pub plane: Plane,
    /// Column in that plane's samples: a pixel column for [`Plane::Y`], a chroma sample column
    /// (0..ceil(width/2)) for [`Plane::Cb`] and [`Plane::Cr`].
    pub x: u32,
    /// Row in that plane's samples: a pixel row for [`Plane::Y`], a chroma row
    /// (0..ceil(height/2)) for [`Plane::Cb`] and [`Plane::Cr`].
    pub y: u32,
    /// The sample in the expected frame.
    pub expected: u8,
    /// The sample in the frame checked.
    pub got: u8,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sample ({}, {}): expected {}, got {}",
            self.plane, self.x, self.y, self.expected, self.got
        )
    }
}

/// What [`compare_frames`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameComparison {
    /// Number of visible sample bytes compared: `width * height` luma bytes plus
    /// `2 * ceil(width/2) * ceil(height/2)` chroma bytes. Padding is not counted.
    pub compared_bytes: u64,
    /// Number of those bytes that differ.
    pub mismatched_bytes: u64,
    /// The first differing byte in memory order (the Y plane row by row, then the CbCr plane row
    /// by row, Cb before Cr in each pair); `None` when the frames match.
    pub first_mismatch: Option<Mismatch>,
}

impl FrameComparison {
    /// True when every visible sample matches.
    pub fn is_match(&self) -> bool {
        self.mismatched_bytes == 0
    }
}

/// Compares two NV12 frames laid out as `layout`, sample by sample, over the visible samples
/// only: padding bytes past each row's samples, and bytes past `layout.total_size()` (the rest of
/// a BO), are ignored, since a device or allocator may leave anything there.
///
/// # Errors
/// [`SensorError::BufferTooSmall`] (`which` = `"expected"` or `"got"`) if a buffer is shorter
/// than `layout.total_size()`.
pub fn compare_frames(
    layout: &Nv12Layout,
    expected: &[u8],
    got: &[u8],
) -> Result<FrameComparison, SensorError> {
    for (which, buf) in [("expected", expected), ("got", got)] {
        if buf.len() < layout.total_size() {
            return Err(SensorError::BufferTooSmall {
                which,
                len: buf.len(),
                needed: layout.total_size(),
            });
        }
    }
    let mut result = FrameComparison {
        compared_bytes: 0,
        mismatched_bytes: 0,
        first_mismatch: None,
    };
    let luma_row = layout.width() as usize;
    for y in 0..layout.height() {
        let start = layout.luma_index(0, y);
        compare_row(
            &mut result,
            &expected[start..][..luma_row],
            &got[start..][..luma_row],
            |i| (Plane::Y, i as u32, y),
        );
    }
    let chroma_row = 2 * layout.chroma_width() as usize;
    for y in 0..layout.chroma_height() {
        let start = layout.chroma_index(0, y);
        compare_row(
            &mut result,
            &expected[start..][..chroma_row],
            &got[start..][..chroma_row],
            |i| {
                let plane = if i % 2 == 0 { Plane::Cb } else { Plane::Cr };
                (plane, (i / 2) as u32, y)
            },
        );
    }
    Ok(result)
}

/// Compares one row's visible samples; `locate` turns a byte index in the row into the
/// reported plane and sample coordinates.
fn compare_row(
    result: &mut FrameComparison,
    expected: &[u8],
    got: &[u8],
    locate: impl Fn(usize) -> (Plane, u32, u32),
) {
    result.compared_bytes += expected.len() as u64;
    // Rows almost always match; one slice comparison keeps the check cheap for whole frames.
    if expected == got {
        return;
    }
    for (i, (&e, &g)) in expected.iter().zip(got).enumerate() {
        if e != g {
            result.mismatched_bytes += 1;
            if result.first_mismatch.is_none() {
                let (plane, x, y) = locate(i);
                result.first_mismatch = Some(Mismatch {
                    plane,
                    x,
                    y,
                    expected: e,
                    got: g,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_tail_are_ignored() {
        let l = Nv12Layout::new(3, 3).unwrap(); // stride 64, 2 chroma rows
        let a = vec![7u8; l.bo_size()];
        let mut b = a.clone();
        b[3] = 0; // luma row 0 padding
        b[l.chroma_index(2, 0)] = 0; // chroma row 0 padding (only 2 pairs are visible)
        b[l.total_size()] = 0; // BO tail
        let r = compare_frames(&l, &a, &b).unwrap();
        assert!(r.is_match());
        assert_eq!(r.compared_bytes, 9 + 2 * 2 * 2);
        assert_eq!(r.first_mismatch, None);
    }

    #[test]
    fn reports_first_mismatch_in_memory_order_and_counts_all() {
        let l = Nv12Layout::new(3, 3).unwrap();
        let a = vec![7u8; l.total_size()];
        let mut b = a.clone();
        b[l.chroma_index(1, 1) + 1] = 9; // Cr (1, 1)
        b[l.chroma_index(0, 1)] = 8; // Cb (0, 1)
        b[l.luma_index(2, 2)] = 1; // Y (2, 2): first in memory order
        let r = compare_frames(&l, &a, &b).unwrap();
        assert_eq!(r.mismatched_bytes, 3);
        let first = r.first_mismatch.unwrap();
        assert_eq!(
            first,
            Mismatch {
                plane: Plane::Y,
                x: 2,
                y: 2,
                expected: 7,
                got: 1
            }
        );
        assert_eq!(first.to_string(), "Y sample (2, 2): expected 7, got 1");

        b[l.luma_index(2, 2)] = 7;
        let first = compare_frames(&l, &a, &b).unwrap().first_mismatch.unwrap();
        assert_eq!(
            (first.plane, first.x, first.y, first.got),
            (Plane::Cb, 0, 1, 8)
        );
    }

    #[test]
    fn short_buffers_are_refused() {
        let l = Nv12Layout::new(2, 2).unwrap();
        let a = vec![0u8; l.total_size()];
        let err = compare_frames(&l, &a, &a[..10]).unwrap_err();
        assert!(matches!(
            err,
            SensorError::BufferTooSmall {
                which: "got",
                len: 10,
                needed: 192
            }
        ));
    }
}
