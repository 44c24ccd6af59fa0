//! Pixel layouts of buffer objects: a DRM fourcc, a format modifier, and each plane's offset and
//! stride, computed with the alignment the device that allocates the buffer needs.
//!
//! This is what the kernel's `struct drm_framebuffer` (include/drm/drm_framebuffer.h: `format`,
//! `modifier`, `pitches[4]`, `offsets[4]`, `obj[4]`) and `struct drm_mode_fb_cmd2` describe, and
//! what `VK_EXT_image_drm_format_modifier`'s explicit plane layouts carry. Formats are named by
//! the [`drm_fourcc`] crate's [`DrmFourcc`]; their plane geometry (planes, bytes per pixel of
//! each plane, chroma subsampling) follows the kernel's table in drivers/gpu/drm/drm_fourcc.c
//! (`drm_format_info()`: `num_planes`, `cpp[]`, `hsub`, `vsub`).
//!
//! Only the linear modifier ([`DrmModifier::Linear`], `DRM_FORMAT_MOD_LINEAR`, include/uapi/drm/
//! drm_fourcc.h) is laid out: a tiled or compressed modifier is refused with
//! [`LayoutError::UnsupportedModifier`], since its layout is the hardware's, not arithmetic.
//!
//! ```
//! use devmmu_mm::bo::{ImageLayout, PitchRule};
//! use drm_fourcc::DrmFourcc;
//!
//! // 1280x720 NV12 for an IPU6 ISYS: rows aligned to 64 bytes, CbCr plane after the Y plane.
//! let nv12 = ImageLayout::new(DrmFourcc::Nv12, 1280, 720, PitchRule::IPU6_ISYS)?;
//! assert_eq!(nv12.planes()[0].stride, 1280);
//! assert_eq!(nv12.planes()[1].offset, 1280 * 720);
//! assert_eq!(nv12.size(), 1280 * 720 * 3 / 2);
//! # Ok::<(), devmmu_mm::bo::LayoutError>(())
//! ```

use std::sync::Arc;

pub use drm_fourcc::{DrmFourcc, DrmModifier};

use super::Bo;
use crate::MmError;

/// Largest width and height in pixels that a layout accepts, each (the kernel's
/// `drm_mode_config.max_width` is driver-set; 16384 is what current display engines reach).
pub const MAX_DIMENSION: u32 = 16384;

/// Maximum number of planes of a format (`DRM_FORMAT_MAX_PLANES` = 4).
pub const MAX_PLANES: usize = 4;

/// Page size that [`ImageLayout::bo_size`] rounds up to, in bytes.
pub const PAGE_SIZE: u64 = 4096;

/// The plane geometry of one pixel format: a row of the kernel's `drm_format_info` table
/// (drivers/gpu/drm/drm_fourcc.c), for the formats with one pixel per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatInfo {
    /// The format.
    pub fourcc: DrmFourcc,
    /// Number of planes (`num_planes`).
    pub planes: usize,
    /// Bytes per pixel of each plane (`cpp[]`); for a subsampled plane, bytes per sample
    /// (NV12's CbCr plane: 2, one Cb and one Cr byte).
    pub cpp: [u8; MAX_PLANES],
    /// Horizontal chroma subsampling factor (`hsub`): planes after the first have
    /// `ceil(width / hsub)` samples per row.
    pub hsub: u8,
    /// Vertical chroma subsampling factor (`vsub`): planes after the first have
    /// `ceil(height / vsub)` rows.
    pub vsub: u8,
    /// Whether the format is Y'CbCr (`is_yuv`).
    pub is_yuv: bool,
}

const fn rgb(fourcc: DrmFourcc, cpp: u8) -> FormatInfo {
    FormatInfo {
        fourcc,
        planes: 1,
        cpp: [cpp, 0, 0, 0],
        hsub: 1,
        vsub: 1,
        is_yuv: false,
    }
}

const fn yuv(fourcc: DrmFourcc, planes: usize, cpp: [u8; 4], hsub: u8, vsub: u8) -> FormatInfo {
    FormatInfo {
        fourcc,
        planes,
        cpp,
        hsub,
        vsub,
        is_yuv: true,
    }
}

/// The formats this module lays out, as drm_fourcc.c's `formats[]` gives them. Adding a
/// format with one pixel per block is one line here.
pub const FORMATS: &[FormatInfo] = &[
    rgb(DrmFourcc::C8, 1),
    rgb(DrmFourcc::R8, 1),
    rgb(DrmFourcc::Rg88, 2),
    rgb(DrmFourcc::Gr88, 2),
    rgb(DrmFourcc::Rgb565, 2),
    rgb(DrmFourcc::Bgr565, 2),
    rgb(DrmFourcc::Rgb888, 3),
    rgb(DrmFourcc::Bgr888, 3),
    rgb(DrmFourcc::Xrgb8888, 4),
    rgb(DrmFourcc::Xbgr8888, 4),
    rgb(DrmFourcc::Argb8888, 4),
    rgb(DrmFourcc::Abgr8888, 4),
    rgb(DrmFourcc::Xrgb2101010, 4),
    rgb(DrmFourcc::Argb2101010, 4),
    yuv(DrmFourcc::Nv12, 2, [1, 2, 0, 0], 2, 2),
    yuv(DrmFourcc::Nv21, 2, [1, 2, 0, 0], 2, 2),
    yuv(DrmFourcc::Nv16, 2, [1, 2, 0, 0], 2, 1),
    yuv(DrmFourcc::Nv24, 2, [1, 2, 0, 0], 1, 1),
    yuv(DrmFourcc::Yuv420, 3, [1, 1, 1, 0], 2, 2),
    yuv(DrmFourcc::Yvu420, 3, [1, 1, 1, 0], 2, 2),
    yuv(DrmFourcc::Yuv422, 3, [1, 1, 1, 0], 2, 1),
    yuv(DrmFourcc::Yuyv, 1, [2, 0, 0, 0], 1, 1),
];

/// The geometry of `fourcc`, or `None` if this module does not lay it out.
pub fn format_info(fourcc: DrmFourcc) -> Option<&'static FormatInfo> {
    FORMATS.iter().find(|f| f.fourcc == fourcc)
}

/// The alignment a device asks of the buffers it reads or writes, like a DRM driver's
/// dumb-buffer pitch rule (`drm_mode_create_dumb`'s `pitch`, rounded up as the driver needs).
///
/// All values are in bytes and powers of two (1 = no alignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PitchRule {
    /// Short name, for reports.
    pub name: &'static str,
    /// Every plane's stride (bytes from the start of one row to the next) is a multiple of this.
    pub stride_align: u32,
    /// Every plane's offset from the start of the BO is a multiple of this.
    pub plane_align: u32,
}

impl PitchRule {
    /// Intel IPU6 input system (drivers/media/pci/intel/ipu6/ipu6-isys-video.c: `bytesperline`
    /// aligned to `isys->line_align`, `IPU6_ISYS_2600_MEM_LINE_ALIGN` = 64): rows and planes on
    /// 64-byte (cache-line) boundaries. The camera's rule.
    pub const IPU6_ISYS: PitchRule = PitchRule {
        name: "ipu6-isys",
        stride_align: 64,
        plane_align: 64,
    };

    /// A display engine's linear scanout: pitch a multiple of 64 bytes (i915's linear
    /// framebuffer pitch rule, `intel_fb_stride_alignment` for `DRM_FORMAT_MOD_LINEAR`), planes
    /// page-aligned. The display's rule.
    pub const SCANOUT: PitchRule = PitchRule {
        name: "scanout",
        stride_align: 64,
        plane_align: 4096,
    };

    /// The minimal dumb-buffer rule of drm_gem_shmem_helper.c / drm_gem_dma_helper.c
    /// (`pitch = DIV_ROUND_UP(width * bpp, 8)`): no padding at all.
    pub const DUMB: PitchRule = PitchRule {
        name: "dumb",
        stride_align: 1,
        plane_align: 1,
    };

    fn check(&self) -> Result<(), LayoutError> {
        if self.stride_align.is_power_of_two() && self.plane_align.is_power_of_two() {
            Ok(())
        } else {
            Err(LayoutError::BadRule {
                stride_align: self.stride_align,
                plane_align: self.plane_align,
            })
        }
    }
}

/// Why a layout could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The format is not in [`FORMATS`] (a block-compressed or multi-pixel-block format, or one
    /// not added yet). Carries the fourcc code.
    #[error("pixel format {0} is not supported")]
    UnsupportedFormat(DrmFourcc),
    /// Only [`DrmModifier::Linear`] is laid out; the value is the modifier given.
    #[error("format modifier {0:#x} is not supported (only DRM_FORMAT_MOD_LINEAR)")]
    UnsupportedModifier(u64),
    /// Width or height is 0 or above [`MAX_DIMENSION`].
    #[error("{width}x{height} is outside 1x1..={max}x{max} pixels")]
    Dimensions {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// [`MAX_DIMENSION`].
        max: u32,
    },
    /// An alignment of the [`PitchRule`] is not a power of two.
    #[error(
        "pitch rule alignments must be powers of two (stride {stride_align}, plane {plane_align})"
    )]
    BadRule {
        /// The rule's stride alignment, in bytes.
        stride_align: u32,
        /// The rule's plane alignment, in bytes.
        plane_align: u32,
    },
    /// The BO is smaller than the layout ([`Framebuffer::new`]).
    #[error("a {layout_bytes}-byte layout does not fit a {bo_bytes}-byte BO")]
    BoTooSmall {
        /// [`ImageLayout::size`], in bytes.
        layout_bytes: u64,
        /// The BO's size, in bytes.
        bo_bytes: u64,
    },
}

/// Where one plane lives in the buffer. All fields in bytes except `width` (samples) and
/// `rows`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PlaneLayout {
    /// Offset of the plane's first byte from the start of the BO (`drm_mode_fb_cmd2.offsets[i]`).
    pub offset: u64,
    /// Bytes from the start of one row to the next (`pitches[i]`).
    pub stride: u32,
    /// Samples per row (pixels for the first plane; `ceil(width / hsub)` for chroma planes).
    pub width: u32,
    /// Rows (`height`, or `ceil(height / vsub)` for chroma planes).
    pub rows: u32,
    /// Bytes of samples per row, without padding: `width * cpp`.
    pub row_bytes: u32,
    /// Size of the plane: `stride * rows` bytes.
    pub size: u64,
}

/// The layout of a `width` x `height` image of one format and modifier in a buffer object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageLayout {
    fourcc: DrmFourcc,
    modifier: u64,
    width: u32,
    height: u32,
    plane_count: usize,
    planes: [PlaneLayout; MAX_PLANES],
    size: u64,
    rule: PitchRule,
}

impl ImageLayout {
    /// The linear layout of a `width` x `height` pixel image of `fourcc` under `rule`: plane `i`
    /// has stride `round_up(samples * cpp[i], rule.stride_align)` and starts at the end of
    /// plane `i - 1` rounded up to `rule.plane_align` (plane 0 at offset 0).
    ///
    /// # Errors
    /// [`LayoutError::UnsupportedFormat`], [`LayoutError::Dimensions`] (0, or above
    /// [`MAX_DIMENSION`]), [`LayoutError::BadRule`].
    pub fn new(
        fourcc: DrmFourcc,
        width: u32,
        height: u32,
        rule: PitchRule,
    ) -> Result<ImageLayout, LayoutError> {
        Self::with_modifier(fourcc, DrmModifier::Linear, width, height, rule)
    }

    /// As [`ImageLayout::new`], with an explicit modifier.
    ///
    /// # Errors
    /// As [`ImageLayout::new`], and [`LayoutError::UnsupportedModifier`] for any modifier but
    /// [`DrmModifier::Linear`].
    pub fn with_modifier(
        fourcc: DrmFourcc,
        modifier: DrmModifier,
        width: u32,
        height: u32,
        rule: PitchRule,
    ) -> Result<ImageLayout, LayoutError> {
        let modifier: u64 = modifier.into();
        if modifier != u64::from(DrmModifier::Linear) {
            return Err(LayoutError::UnsupportedModifier(modifier));
        }
        let info = format_info(fourcc).ok_or(LayoutError::UnsupportedFormat(fourcc))?;
        rule.check()?;
        let in_range = |d: u32| (1..=MAX_DIMENSION).contains(&d);
        if !in_range(width) || !in_range(height) {
            return Err(LayoutError::Dimensions {
                width,
                height,
                max: MAX_DIMENSION,
            });
        }
        let mut planes = [PlaneLayout::default(); MAX_PLANES];
        let mut end = 0u64;
        for (i, plane) in planes.iter_mut().enumerate().take(info.planes) {
            let (w, rows) = if i == 0 {
                (width, height)
            } else {
                (
                    width.div_ceil(info.hsub.into()),
                    height.div_ceil(info.vsub.into()),
                )
            };
            // At most 16384 * 4 bytes per row and 16384 rows: no overflow in u32 / u64.
            let row_bytes = w * u32::from(info.cpp[i]);
            let stride = row_bytes.next_multiple_of(rule.stride_align);
            let offset = end.next_multiple_of(u64::from(rule.plane_align));
            let size = u64::from(stride) * u64::from(rows);
            *plane = PlaneLayout {
                offset,
                stride,
                width: w,
                rows,
                row_bytes,
                size,
            };
            end = offset + size;
        }
        Ok(ImageLayout {
            fourcc,
            modifier,
            width,
            height,
            plane_count: info.planes,
            planes,
            size: end,
            rule,
        })
    }

    /// The pixel format.
    pub fn fourcc(&self) -> DrmFourcc {
        self.fourcc
    }

    /// The format modifier (always [`DrmModifier::Linear`] today).
    pub fn modifier(&self) -> DrmModifier {
        DrmModifier::from(self.modifier)
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pitch rule the layout was made with.
    pub fn rule(&self) -> PitchRule {
        self.rule
    }

    /// The planes, in memory order (1 to [`MAX_PLANES`]).
    pub fn planes(&self) -> &[PlaneLayout] {
        &self.planes[..self.plane_count]
    }

    /// Bytes from offset 0 to the end of the last plane (its padding included).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// [`Self::size`] rounded up to whole 4 KiB pages: the size of a BO made for the layout.
    pub fn bo_size(&self) -> u64 {
        self.size.next_multiple_of(PAGE_SIZE)
    }
}

/// A BO seen as an image: the BO and the layout of its pixels, like the kernel's
/// `drm_framebuffer` with all planes in one BO. The BO is shared (`Arc`), so one BO may be seen
/// through several framebuffers.
#[derive(Clone, Debug)]
pub struct Framebuffer {
    bo: Arc<Bo>,
    layout: ImageLayout,
}

impl Framebuffer {
    /// Sees `bo` as an image of `layout` (the BO may be larger; bytes past
    /// [`ImageLayout::size`] are not part of the image).
    ///
    /// # Errors
    /// [`MmError::Layout`] with [`LayoutError::BoTooSmall`] if the BO is smaller than the layout.
    pub fn new(bo: Arc<Bo>, layout: ImageLayout) -> Result<Framebuffer, MmError> {
        if bo.size() < layout.size() {
            return Err(LayoutError::BoTooSmall {
                layout_bytes: layout.size(),
                bo_bytes: bo.size(),
            }
            .into());
        }
        Ok(Framebuffer { bo, layout })
    }

    /// The BO.
    pub fn bo(&self) -> &Arc<Bo> {
        &self.bo
    }

    /// The layout.
    pub fn layout(&self) -> &ImageLayout {
        &self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nv12_under_the_ipu_rule() {
        // 65x3: Y rows of 65 bytes round up to 128; chroma 33 pairs = 66 bytes round up to 128,
        // 2 rows; the CbCr plane starts at 128 * 3 = 384 (a multiple of 64).
        let l = ImageLayout::new(DrmFourcc::Nv12, 65, 3, PitchRule::IPU6_ISYS).unwrap();
        let p = l.planes();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].offset, p[0].stride, p[0].rows, p[0].size),
            (0, 128, 3, 384)
        );
        assert_eq!(
            (p[1].offset, p[1].stride, p[1].width, p[1].rows),
            (384, 128, 33, 2)
        );
        assert_eq!(p[1].row_bytes, 66);
        assert_eq!(l.size(), 384 + 256);
        assert_eq!(l.bo_size(), 4096);
        assert_eq!(l.modifier(), DrmModifier::Linear);
    }

    #[test]
    fn xrgb_under_the_scanout_rule() {
        // 100 pixels x 4 bytes = 400, rounded up to 448; 10 rows.
        let l = ImageLayout::new(DrmFourcc::Xrgb8888, 100, 10, PitchRule::SCANOUT).unwrap();
        assert_eq!(l.planes().len(), 1);
        assert_eq!(l.planes()[0].stride, 448);
        assert_eq!(l.size(), 4480);
        assert_eq!(l.bo_size(), 8192);
    }

    #[test]
    fn three_planes_page_aligned() {
        // YUV420 33x5 under SCANOUT: Y stride 64, 5 rows = 320 bytes; U at 4096, 17 samples
        // -> stride 64, 3 rows; V at 8192.
        let l = ImageLayout::new(DrmFourcc::Yuv420, 33, 5, PitchRule::SCANOUT).unwrap();
        let offs: Vec<u64> = l.planes().iter().map(|p| p.offset).collect();
        assert_eq!(offs, [0, 4096, 8192]);
        assert_eq!(l.size(), 8192 + 64 * 3);
    }

    #[test]
    fn dumb_rule_has_no_padding() {
        let l = ImageLayout::new(DrmFourcc::Rgb565, 3, 3, PitchRule::DUMB).unwrap();
        assert_eq!(l.planes()[0].stride, 6);
        assert_eq!(l.size(), 18);
    }

    #[test]
    fn refusals() {
        let r = PitchRule::IPU6_ISYS;
        assert_eq!(
            ImageLayout::new(DrmFourcc::Nv12, 0, 1, r),
            Err(LayoutError::Dimensions {
                width: 0,
                height: 1,
                max: MAX_DIMENSION
            })
        );
        assert!(matches!(
            ImageLayout::new(DrmFourcc::Nv12, 1, MAX_DIMENSION + 1, r),
            Err(LayoutError::Dimensions { .. })
        ));
        assert_eq!(
            ImageLayout::new(DrmFourcc::X0l0, 8, 8, r),
            Err(LayoutError::UnsupportedFormat(DrmFourcc::X0l0))
        );
        let tiled = DrmModifier::I915_x_tiled;
        assert_eq!(
            ImageLayout::with_modifier(DrmFourcc::Xrgb8888, tiled, 8, 8, r),
            Err(LayoutError::UnsupportedModifier(tiled.into()))
        );
        let bad = PitchRule {
            name: "bad",
            stride_align: 48,
            plane_align: 64,
        };
        assert!(matches!(
            ImageLayout::new(DrmFourcc::Nv12, 8, 8, bad),
            Err(LayoutError::BadRule { .. })
        ));
    }

    #[test]
    fn largest_image_fits() {
        let l = ImageLayout::new(
            DrmFourcc::Xrgb8888,
            MAX_DIMENSION,
            MAX_DIMENSION,
            PitchRule::SCANOUT,
        )
        .unwrap();
        assert_eq!(l.size(), 16384 * 16384 * 4);
    }

    #[test]
    fn every_listed_format_lays_out() {
        for f in FORMATS {
            let l = ImageLayout::new(f.fourcc, 7, 5, PitchRule::DUMB).unwrap();
            assert_eq!(l.planes().len(), f.planes, "{}", f.fourcc);
        }
    }
}
