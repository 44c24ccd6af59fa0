//! The built-in test chart: what the simulated sensor sees when no input image is given.

use image::{Rgb, RgbImage};

use super::layout::check_dimensions;
use super::SensorError;

/// Default chart width in pixels (720p).
pub const DEFAULT_CHART_WIDTH: u32 = 1280;
/// Default chart height in pixels (720p).
pub const DEFAULT_CHART_HEIGHT: u32 = 720;

/// The eight 100% colour bars, left to right, in the order of the SMPTE/EBU bar charts: white,
/// yellow, cyan, green, magenta, red, blue, black (luma decreasing).
const BARS: [[u8; 3]; 8] = [
    [255, 255, 255],
    [255, 255, 0],
    [0, 255, 255],
    [0, 255, 0],
    [255, 0, 255],
    [255, 0, 0],
    [0, 0, 255],
    [0, 0, 0],
];

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);

/// Generates the test chart at `width` x `height` pixels, 8-bit RGB. Deterministic: the same
/// size always gives the same pixels.
///
/// The chart is four horizontal bands; band `b` (0..4) is the rows `y` with `4y / height == b`
/// (integer division), so it starts at row `ceil(b * height / 4)`:
///
/// 0. eight vertical 100% colour bars (white, yellow, cyan, green, magenta, red, blue, black),
///    bar `8x / width`: the saturated colours probe chroma;
/// 1. a horizontal grey ramp, black at the left column to white at the right (value
///    `round(255 x / (width - 1))`): every luma level;
/// 2. a vertical grey ramp, black at the band's first row to white at its last;
/// 3. fine detail in thirds across (third `3x / width`): 1-pixel horizontal lines (even rows
///    white, odd rows black), 1-pixel vertical lines (even columns white), and a 1-pixel
///    checkerboard (white where `x + y` is even). These sit at the Nyquist limit, where 4:2:0
///    chroma subsampling and any misplaced row or column show at once.
///
/// Bands, bars and thirds that get no rows or columns at very small sizes are simply absent.
///
/// # Errors
/// [`SensorError::DimensionsOutOfRange`] if `width` or `height` is 0 or above
/// [`super::MAX_DIMENSION`].
pub fn test_chart(width: u32, height: u32) -> Result<RgbImage, SensorError> {
    check_dimensions(width, height)?;
    let (w, h) = (u64::from(width), u64::from(height));
    let band_start = |b: u64| (b * h).div_ceil(4);
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let (xu, yu) = (u64::from(x), u64::from(y));
        match yu * 4 / h {
            0 => Rgb(BARS[(xu * 8 / w) as usize]),
            1 => grey(ramp(xu, w)),
            2 => {
                let y0 = band_start(2);
                grey(ramp(yu - y0, band_start(3) - y0))
            }
            _ => {
                let white = match xu * 3 / w {
                    0 => y % 2 == 0,
                    1 => x % 2 == 0,
                    _ => (x + y) % 2 == 0,
                };
                if white {
                    WHITE
                } else {
                    BLACK
                }
            }
        }
    }))
}

/// Value of position `i` of `n` on a 0..=255 ramp, rounded to nearest.
fn ramp(i: u64, n: u64) -> u8 {
    if n <= 1 {
        0
    } else {
        // i < n, so the result is at most 255.
        ((i * 255 * 2 + (n - 1)) / (2 * (n - 1))) as u8
    }
}

fn grey(v: u8) -> Rgb<u8> {
    Rgb([v, v, v])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_ends_are_black_and_white() {
        assert_eq!(ramp(0, 1280), 0);
        assert_eq!(ramp(1279, 1280), 255);
        assert_eq!(ramp(1, 3), 128); // 127.5 rounds up
        assert_eq!(ramp(0, 1), 0);
    }

    #[test]
    fn bands_sit_where_documented() {
        let c = test_chart(16, 8).unwrap();
        // Rows 0-1 bars, 2-3 horizontal ramp, 4-5 vertical ramp, 6-7 fine detail.
        assert_eq!(c.get_pixel(0, 0), &WHITE);
        assert_eq!(c.get_pixel(15, 1), &BLACK);
        assert_eq!(c.get_pixel(10, 0).0, BARS[5]);
        assert_eq!(c.get_pixel(0, 2), &BLACK);
        assert_eq!(c.get_pixel(15, 3), &WHITE);
        assert_eq!(c.get_pixel(7, 4), &BLACK);
        assert_eq!(c.get_pixel(7, 5), &WHITE);
        // Fine detail: x 0..6 lines by row, 6..11 lines by column, 11..16 checkerboard.
        assert_eq!((c.get_pixel(0, 6), c.get_pixel(0, 7)), (&WHITE, &BLACK));
        assert_eq!((c.get_pixel(6, 7), c.get_pixel(7, 7)), (&WHITE, &BLACK));
        assert_eq!((c.get_pixel(12, 6), c.get_pixel(13, 6)), (&WHITE, &BLACK));
        assert_eq!(c.get_pixel(12, 7), &BLACK);
    }

    #[test]
    fn tiny_and_out_of_range_sizes() {
        assert_eq!(test_chart(1, 1).unwrap().get_pixel(0, 0), &WHITE);
        assert!(matches!(
            test_chart(0, 10),
            Err(SensorError::DimensionsOutOfRange { width: 0, .. })
        ));
    }
}
