//! RGB <-> NV12 conversion: ITU-R BT.601, limited ("video") range, 8-bit fixed point.
//!
//! Forward (RGB -> Y'CbCr), the usual 8-bit integer form of BT.601 with the coefficients scaled by
//! 256, as in Microsoft's "Recommended 8-Bit YUV Formats for Video Rendering", section "Converting
//! RGB888 to YUV":
//!
//! ```text
//! Y  = ((  66 R + 129 G +  25 B + 128) >> 8) +  16      16..=235
//! Cb = (( -38 R -  74 G + 112 B + 128) >> 8) + 128      16..=240
//! Cr = (( 112 R -  94 G -  18 B + 128) >> 8) + 128      16..=240
//! ```
//!
//! `>>` is an arithmetic shift (floor division), so `+ 128` rounds half up. No clamping is needed:
//! the coefficient sums keep every 8-bit input inside the ranges shown.
//!
//! Chroma (4:2:0): each Cb/Cr sample covers a 2x2 block of pixels, or the 1x2, 2x1 or 1x1 part
//! of it that exists at an odd right or bottom edge. It is the formula above applied to the
//! *mean RGB* of the block, computed from the sums with a single rounding so no precision is lost
//! to an intermediate rounded mean: with `n` = 1, 2 or 4 pixels in the block,
//! `Cb = ((-38 ΣR - 74 ΣG + 112 ΣB + 128 n) >> (8 + log2 n)) + 128`, and likewise for Cr. For a
//! block of one colour this equals the per-pixel formula exactly.
//!
//! Inverse (for looking at frames): the matching 8-bit integer inverse of the same document
//! (section "Converting 8-bit YUV to RGB888"), clamped to 0..=255, with
//! each chroma sample used for every pixel of its block (nearest-neighbour upsampling):
//!
//! ```text
//! C = Y - 16, D = Cb - 128, E = Cr - 128
//! R = clamp((298 C           + 409 E + 128) >> 8)
//! G = clamp((298 C - 100 D   - 208 E + 128) >> 8)
//! B = clamp((298 C + 516 D           + 128) >> 8)
//! ```

use image::RgbImage;

use super::layout::Nv12Layout;
use super::SensorError;

/// An NV12 frame in memory: its layout and exactly [`Nv12Layout::total_size`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nv12Frame {
    layout: Nv12Layout,
    data: Vec<u8>,
}

impl Nv12Frame {
    /// Wraps bytes read back from a buffer as a frame of `layout`; bytes past
    /// [`Nv12Layout::total_size`] (the rest of a BO) are dropped.
    ///
    /// # Errors
    /// [`SensorError::BufferTooSmall`] (`which` = `"source"`) if `data` is shorter than
    /// `layout.total_size()`.
    pub fn from_bytes(layout: Nv12Layout, mut data: Vec<u8>) -> Result<Self, SensorError> {
        check_len("source", data.len(), &layout)?;
        data.truncate(layout.total_size());
        Ok(Self { layout, data })
    }

    /// The frame's layout.
    pub fn layout(&self) -> &Nv12Layout {
        &self.layout
    }

    /// The frame's bytes, [`Nv12Layout::total_size`] of them, padding included.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The frame's bytes, giving up the frame.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Converts the frame back to RGB (see [`nv12_to_rgb`]).
    pub fn to_rgb(&self) -> RgbImage {
        convert_to_rgb(&self.layout, &self.data)
    }
}

/// Converts an 8-bit RGB image to a new NV12 frame of the same size (formulas in the module
/// documentation). Padding bytes are 0.
///
/// # Errors
/// [`SensorError::DimensionsOutOfRange`] if the image's width or height is 0 or above
/// [`super::MAX_DIMENSION`].
pub fn rgb_to_nv12(image: &RgbImage) -> Result<Nv12Frame, SensorError> {
    let layout = Nv12Layout::new(image.width(), image.height())?;
    let mut data = vec![0; layout.total_size()];
    write_nv12(image, &layout, &mut data);
    Ok(Nv12Frame { layout, data })
}

/// Converts an 8-bit RGB image into `dst` (a mapped BO, for instance) laid out as `layout`.
///
/// Writes every byte of `dst[..layout.total_size()]`, padding (as 0) included, and leaves any
/// bytes after that untouched. `dst` needs no particular alignment.
///
/// # Errors
/// Checked before anything is written, so on error `dst` is unchanged:
/// - [`SensorError::SizeMismatch`] if the image is not `layout.width()` x `layout.height()`;
/// - [`SensorError::BufferTooSmall`] (`which` = `"destination"`) if `dst` is shorter than
///   `layout.total_size()`.
pub fn rgb_to_nv12_into(
    image: &RgbImage,
    layout: &Nv12Layout,
    dst: &mut [u8],
) -> Result<(), SensorError> {
    if image.dimensions() != (layout.width(), layout.height()) {
        return Err(SensorError::SizeMismatch {
            image_width: image.width(),
            image_height: image.height(),
            layout_width: layout.width(),
            layout_height: layout.height(),
        });
    }
    check_len("destination", dst.len(), layout)?;
    write_nv12(image, layout, &mut dst[..layout.total_size()]);
    Ok(())
}

/// Converts an NV12 frame laid out as `layout` in `src` to 8-bit RGB (inverse formulas in the
/// module documentation). Bytes of `src` after `layout.total_size()` are ignored.
///
/// # Errors
/// [`SensorError::BufferTooSmall`] (`which` = `"source"`) if `src` is shorter than
/// `layout.total_size()`.
pub fn nv12_to_rgb(layout: &Nv12Layout, src: &[u8]) -> Result<RgbImage, SensorError> {
    check_len("source", src.len(), layout)?;
    Ok(convert_to_rgb(layout, src))
}

/// Converts an NV12 frame laid out as `layout` in `src` to `DRM_FORMAT_XRGB8888` in `dst`,
/// laid out as `out` (one plane; each pixel a little-endian 32-bit word `0xffRRGGBB`, X written
/// as 0xff), with the inverse formulas of the module documentation: the CPU reference of the
/// GPU's conversion (`devmmu_tools::gpu::SHADER_WGSL` computes the same integers). Bytes of a
/// row past its pixels (stride padding) are left as they are.
///
/// # Errors
/// [`SensorError::BufferTooSmall`] if `src` is shorter than `layout.total_size()` (`which` =
/// `"source"`) or `dst` shorter than `out.size()` (`which` = `"destination"`);
/// [`SensorError::DimensionsOutOfRange`] if `out` is not an XRGB8888 image of the frame's size.
pub fn nv12_to_xrgb8888(
    layout: &Nv12Layout,
    src: &[u8],
    out: &devmmu_mm::bo::ImageLayout,
    dst: &mut [u8],
) -> Result<(), SensorError> {
    check_len("source", src.len(), layout)?;
    if out.fourcc() != devmmu_mm::bo::DrmFourcc::Xrgb8888
        || out.width() != layout.width()
        || out.height() != layout.height()
    {
        return Err(SensorError::DimensionsOutOfRange {
            width: out.width(),
            height: out.height(),
            max: super::MAX_DIMENSION,
        });
    }
    let needed = out.size() as usize;
    if dst.len() < needed {
        return Err(SensorError::BufferTooSmall {
            which: "destination",
            len: dst.len(),
            needed,
        });
    }
    let rgb = convert_to_rgb(layout, src);
    let plane = out.planes()[0];
    for (y, row) in rgb.rows().enumerate() {
        let start = plane.offset as usize + y * plane.stride as usize;
        let line = &mut dst[start..start + plane.row_bytes as usize];
        for (px, p) in line.chunks_exact_mut(4).zip(row) {
            let [r, g, b] = p.0;
            px.copy_from_slice(&u32::from_be_bytes([0xff, r, g, b]).to_le_bytes());
        }
    }
    Ok(())
}

/// `BufferTooSmall` unless `len` bytes hold a whole frame of `layout`.
pub(super) fn check_len(
    which: &'static str,
    len: usize,
    layout: &Nv12Layout,
) -> Result<(), SensorError> {
    if len < layout.total_size() {
        Err(SensorError::BufferTooSmall {
            which,
            len,
            needed: layout.total_size(),
        })
    } else {
        Ok(())
    }
}

/// Luma of one pixel.
fn luma(r: i32, g: i32, b: i32) -> u8 {
    // In 16..=235 for any 8-bit input (see the module documentation).
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

/// Cb and Cr of a block of `1 << log2_n` pixels whose channel sums are `r`, `g`, `b`.
fn chroma(r: i32, g: i32, b: i32, log2_n: u32) -> (u8, u8) {
    let half = 128 << log2_n;
    let shift = 8 + log2_n;
    // In 16..=240 for any 8-bit input (see the module documentation).
    let cb = ((-38 * r - 74 * g + 112 * b + half) >> shift) + 128;
    let cr = ((112 * r - 94 * g - 18 * b + half) >> shift) + 128;
    (cb as u8, cr as u8)
}

/// Writes the whole frame; `dst` is exactly `layout.total_size()` bytes and the image has the
/// layout's size (both checked by the callers).
fn write_nv12(image: &RgbImage, layout: &Nv12Layout, dst: &mut [u8]) {
    // Clearing first is what makes every padding byte 0, whatever the buffer held before.
    dst.fill(0);
    let (w, h) = (layout.width(), layout.height());
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = image.get_pixel(x, y).0.map(i32::from);
            dst[layout.luma_index(x, y)] = luma(r, g, b);
        }
    }
    for cy in 0..layout.chroma_height() {
        let rows = (2 * cy)..(2 * cy + 2).min(h);
        for cx in 0..layout.chroma_width() {
            let cols = (2 * cx)..(2 * cx + 2).min(w);
            let (mut sr, mut sg, mut sb) = (0, 0, 0);
            for y in rows.clone() {
                for x in cols.clone() {
                    let [r, g, b] = image.get_pixel(x, y).0.map(i32::from);
                    sr += r;
                    sg += g;
                    sb += b;
                }
            }
            // 1, 2 or 4 pixels: log2 of the count is the number of dimensions that have two.
            let log2_n = u32::from(rows.len() == 2) + u32::from(cols.len() == 2);
            let (cb, cr) = chroma(sr, sg, sb, log2_n);
            let i = layout.chroma_index(cx, cy);
            dst[i] = cb;
            dst[i + 1] = cr;
        }
    }
}

/// Converts back; `src` holds at least `layout.total_size()` bytes (checked by the callers).
fn convert_to_rgb(layout: &Nv12Layout, src: &[u8]) -> RgbImage {
    RgbImage::from_fn(layout.width(), layout.height(), |x, y| {
        let c = i32::from(src[layout.luma_index(x, y)]) - 16;
        let i = layout.chroma_index(x / 2, y / 2);
        let d = i32::from(src[i]) - 128;
        let e = i32::from(src[i + 1]) - 128;
        let clamp = |v: i32| (v >> 8).clamp(0, 255) as u8;
        image::Rgb([
            clamp(298 * c + 409 * e + 128),
            clamp(298 * c - 100 * d - 208 * e + 128),
            clamp(298 * c + 516 * d + 128),
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_ranges_hold_at_the_extremes() {
        // Every corner of the RGB cube stays inside the limited range without clamping.
        for r in [0, 255] {
            for g in [0, 255] {
                for b in [0, 255] {
                    let y = luma(r, g, b);
                    assert!((16..=235).contains(&y), "Y {y} for {r},{g},{b}");
                    for log2_n in 0..=2 {
                        let n = 1 << log2_n;
                        let (cb, cr) = chroma(r * n, g * n, b * n, log2_n as u32);
                        assert!((16..=240).contains(&cb), "Cb {cb} for {r},{g},{b}");
                        assert!((16..=240).contains(&cr), "Cr {cr} for {r},{g},{b}");
                    }
                }
            }
        }
    }

    #[test]
    fn block_chroma_equals_pixel_chroma_for_one_colour() {
        for (r, g, b) in [(255, 0, 0), (10, 200, 30), (128, 128, 128), (1, 2, 3)] {
            let one = chroma(r, g, b, 0);
            assert_eq!(chroma(2 * r, 2 * g, 2 * b, 1), one);
            assert_eq!(chroma(4 * r, 4 * g, 4 * b, 2), one);
        }
    }

    #[test]
    fn block_chroma_is_the_rounded_mean() {
        // Two pixels, red (Cb numerator -9690) and black (0): mean numerator -4845,
        // -4845 / 256 = -18.93 -> -19 -> Cb 109. Cr: 28560 / 2 = 14280, / 256 = 55.78 -> 56 -> 184.
        assert_eq!(chroma(255, 0, 0, 1), (109, 184));
    }
}
