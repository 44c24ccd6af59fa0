//! Where the planes of an NV12 frame live in a buffer object: the camera's view of a
//! [`devmmu_mm::bo::ImageLayout`] of `DRM_FORMAT_NV12` under the IPU6 input system's pitch rule.

use devmmu_mm::bo::{DrmFourcc, ImageLayout, PitchRule};

use super::SensorError;

/// Largest frame width and height in pixels, each.
pub const MAX_DIMENSION: u32 = 16384;

/// Row stride alignment in bytes: every row of both planes starts on a multiple of this.
///
/// 64 bytes is a cache line, and what imaging units such as the Intel IPU3/IPU6 and GPU media
/// engines ask of NV12 surfaces: [`PitchRule::IPU6_ISYS`]'s `stride_align`.
pub const STRIDE_ALIGN: usize = PitchRule::IPU6_ISYS.stride_align as usize;

/// Buffer object size alignment in bytes: a BO is a whole number of 4 KiB pages.
pub const BO_ALIGN: usize = 4096;

/// One plane of an NV12 frame, as named in the frame checker's reports.
///
/// NV12 has two planes in memory (Y, then interleaved CbCr); the checker names the chroma
/// component too, so Cb and Cr are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plane {
    /// Luma: one byte per pixel.
    Y,
    /// Blue-difference chroma: the first byte of each CbCr pair.
    Cb,
    /// Red-difference chroma: the second byte of each CbCr pair.
    Cr,
}

impl std::fmt::Display for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Plane::Y => "Y",
            Plane::Cb => "Cb",
            Plane::Cr => "Cr",
        })
    }
}

/// The byte layout of one NV12 frame (8-bit 4:2:0, two planes).
///
/// ```text
/// offset 0                      Y plane: height rows of `stride` bytes,
///                               the first `width` bytes of each row are luma samples
/// offset chroma_offset()        CbCr plane: ceil(height/2) rows of `stride` bytes,
///  = stride * height            each row holds ceil(width/2) (Cb, Cr) byte pairs, Cb first
/// offset total_size()           end of frame; the BO is bo_size() bytes
/// ```
///
/// The layout is [`ImageLayout::new`]`(DrmFourcc::Nv12, width, height, PitchRule::IPU6_ISYS)`
/// ([`Nv12Layout::image`]): `stride` is `width` rounded up to [`STRIDE_ALIGN`] (64) bytes and
/// is the same for both planes; bytes past the samples of a row are padding. For an odd width or height the last
/// chroma column or row covers only the pixels that exist. This is the layout of `DRM_FORMAT_NV12`
/// (include/uapi/drm/drm_fourcc.h) and V4L2's `V4L2_PIX_FMT_NV12` (single-planar variant), with
/// the chroma plane placed straight after the luma plane.
///
/// All sizes and offsets are in bytes; width and height are in pixels. The largest frame
/// (16384x16384) is 402,653,184 bytes, so every size fits in `usize` on 32- and 64-bit targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nv12Layout {
    width: u32,
    height: u32,
    stride: usize,
    image: ImageLayout,
}

impl Nv12Layout {
    /// The layout of a `width` x `height` pixel frame.
    ///
    /// # Errors
    /// [`SensorError::DimensionsOutOfRange`] if `width` or `height` is 0 or above
    /// [`MAX_DIMENSION`].
    pub fn new(width: u32, height: u32) -> Result<Self, SensorError> {
        check_dimensions(width, height)?;
        let image = ImageLayout::new(DrmFourcc::Nv12, width, height, PitchRule::IPU6_ISYS)
            .map_err(|_| SensorError::DimensionsOutOfRange {
                width,
                height,
                max: MAX_DIMENSION,
            })?;
        let planes = image.planes();
        // NV12 under a cache-line rule: both planes share the stride, the CbCr plane follows
        // the Y plane with no gap (what the accessors below assume).
        debug_assert_eq!(planes[0].stride, planes[1].stride);
        debug_assert_eq!(planes[1].offset, planes[0].size);
        Ok(Self {
            width,
            height,
            stride: planes[0].stride as usize,
            image,
        })
    }

    /// The frame as a DRM image layout: fourcc NV12, modifier LINEAR, the two planes' offsets
    /// and strides.
    pub fn image(&self) -> &ImageLayout {
        &self.image
    }

    /// Frame width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Frame height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from the start of one row to the start of the next, in both planes: the width
    /// rounded up to [`STRIDE_ALIGN`].
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Size of the Y plane in bytes, padding included: `stride * height`. The Y plane starts at
    /// offset 0.
    pub fn luma_size(&self) -> usize {
        self.stride * self.height as usize
    }

    /// Byte offset of the CbCr plane: straight after the Y plane, `stride * height`.
    pub fn chroma_offset(&self) -> usize {
        self.luma_size()
    }

    /// Number of CbCr pairs per chroma row: `ceil(width / 2)`.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Number of chroma rows: `ceil(height / 2)`.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// Size of the CbCr plane in bytes, padding included: `stride * ceil(height / 2)`.
    pub fn chroma_size(&self) -> usize {
        self.stride * self.chroma_height() as usize
    }

    /// Size of the whole frame in bytes: Y plane plus CbCr plane.
    pub fn total_size(&self) -> usize {
        self.luma_size() + self.chroma_size()
    }

    /// Size in bytes of a buffer object that holds the frame: [`Self::total_size`] rounded up to
    /// [`BO_ALIGN`] (4 KiB pages). Bytes past `total_size()` are not part of the frame.
    pub fn bo_size(&self) -> usize {
        self.total_size().next_multiple_of(BO_ALIGN)
    }

    /// Byte offset of the luma sample of pixel (`x`, `y`); the caller keeps `x < width`,
    /// `y < height`.
    pub(crate) fn luma_index(&self, x: u32, y: u32) -> usize {
        y as usize * self.stride + x as usize
    }

    /// Byte offset of the Cb byte of chroma sample (`cx`, `cy`); Cr follows it. The caller keeps
    /// `cx < chroma_width()`, `cy < chroma_height()`.
    pub(crate) fn chroma_index(&self, cx: u32, cy: u32) -> usize {
        self.chroma_offset() + cy as usize * self.stride + 2 * cx as usize
    }
}

/// Checks a frame size against `1..=MAX_DIMENSION`.
pub(crate) fn check_dimensions(width: u32, height: u32) -> Result<(), SensorError> {
    let ok = |d: u32| (1..=MAX_DIMENSION).contains(&d);
    if ok(width) && ok(height) {
        Ok(())
    } else {
        Err(SensorError::DimensionsOutOfRange {
            width,
            height,
            max: MAX_DIMENSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_size_has_no_padding_when_width_is_aligned() {
        let l = Nv12Layout::new(1280, 720).unwrap();
        assert_eq!(l.stride(), 1280);
        assert_eq!(l.chroma_offset(), 1280 * 720);
        assert_eq!(l.chroma_size(), 1280 * 360);
        assert_eq!(l.total_size(), 1280 * 720 * 3 / 2);
        assert_eq!(l.bo_size(), 1_384_448); // 1_382_400 rounded up to 338 pages
    }

    #[test]
    fn largest_frame_size() {
        let l = Nv12Layout::new(MAX_DIMENSION, MAX_DIMENSION).unwrap();
        assert_eq!(l.total_size(), 16384 * (16384 + 8192));
        assert_eq!(l.bo_size(), l.total_size());
    }

    #[test]
    fn indices_follow_stride() {
        let l = Nv12Layout::new(65, 3).unwrap();
        assert_eq!(l.luma_index(64, 2), 2 * 128 + 64);
        assert_eq!(l.chroma_index(32, 1), 3 * 128 + 128 + 64);
        // The last Cr byte of the frame is inside total_size().
        assert!(l.chroma_index(l.chroma_width() - 1, l.chroma_height() - 1) + 1 < l.total_size());
    }

    #[test]
    fn out_of_range_sizes_are_refused() {
        for (w, h) in [
            (0, 1),
            (1, 0),
            (MAX_DIMENSION + 1, 1),
            (1, MAX_DIMENSION + 1),
        ] {
            match Nv12Layout::new(w, h) {
                Err(SensorError::DimensionsOutOfRange { width, height, max }) => {
                    assert_eq!((width, height, max), (w, h, MAX_DIMENSION));
                }
                other => panic!("{w}x{h}: expected DimensionsOutOfRange, got {other:?}"),
            }
        }
    }
}
