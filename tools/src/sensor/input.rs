//! Loading the sensor's input image from a file, refusing bad input with a clear error.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use image::{ImageDecoder, ImageError, ImageReader, RgbImage};

use super::error::one_line;
use super::layout::MAX_DIMENSION;
use super::SensorError;

/// Allowance in bytes for a decoder's own buffers on top of the decoded pixels.
const DECODER_SLACK: u64 = 64 << 20;

/// Bytes per pixel of the widest decoded colour type that is accepted (16-bit RGBA).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Largest image size [`load_image`] accepts, in pixels.
///
/// The default is [`MAX_DIMENSION`] x [`MAX_DIMENSION`], the largest frame an
/// [`super::Nv12Layout`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadLimits {
    max_width: u32,
    max_height: u32,
}

impl LoadLimits {
    /// Limits of `max_width` x `max_height` pixels.
    ///
    /// # Errors
    /// [`SensorError::InvalidLimits`] if either is 0 or above [`MAX_DIMENSION`].
    pub fn new(max_width: u32, max_height: u32) -> Result<Self, SensorError> {
        let ok = |d: u32| (1..=MAX_DIMENSION).contains(&d);
        if ok(max_width) && ok(max_height) {
            Ok(Self {
                max_width,
                max_height,
            })
        } else {
            Err(SensorError::InvalidLimits {
                max_width,
                max_height,
                max: MAX_DIMENSION,
            })
        }
    }

    /// Largest accepted width in pixels.
    pub fn max_width(&self) -> u32 {
        self.max_width
    }

    /// Largest accepted height in pixels.
    pub fn max_height(&self) -> u32 {
        self.max_height
    }
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            max_width: MAX_DIMENSION,
            max_height: MAX_DIMENSION,
        }
    }
}

/// Loads an image file as 8-bit RGB.
///
/// The format is recognised from the file's first bytes, not its name: PNG, JPEG, BMP, GIF,
/// TIFF, PNM and WebP (the formats the workspace enables in the `image` crate). Grey images are
/// expanded to RGB, 16-bit samples are scaled to 8 bits, and an alpha channel is dropped (not
/// composited). For an animated GIF or WebP, the first frame is loaded.
///
/// The size is checked in two steps so that no oversized image is ever decoded: first only the
/// header is read and its width and height are compared with `limits`; then the image is decoded
/// with the same limits set as strict limits of the decoder (`image::Limits`), and with a memory
/// allowance of 8 bytes per declared pixel plus 64 MiB for the decoder's own buffers.
///
/// # Errors
/// Each names the file:
/// - [`SensorError::NotFound`]: the file, or a directory on its path, does not exist;
/// - [`SensorError::PermissionDenied`]: the file or its directory may not be read;
/// - [`SensorError::IsADirectory`], [`SensorError::NotARegularFile`]: not a regular file;
/// - [`SensorError::EmptyFile`]: 0 bytes;
/// - [`SensorError::Read`]: another read failure from the operating system;
/// - [`SensorError::UnrecognisedFormat`]: the first bytes match no enabled format's signature;
/// - [`SensorError::UnsupportedFormat`]: a known format, or a feature of one, this build cannot
///   decode;
/// - [`SensorError::ImageTooLarge`]: the header declares more than `limits` allow;
/// - [`SensorError::EmptyImage`]: the header declares a width or height of 0;
/// - [`SensorError::Truncated`]: the file ends inside the image data;
/// - [`SensorError::Corrupt`]: the decoder rejected the data;
/// - [`SensorError::DecodeLimit`]: decoding would need more memory than allowed.
pub fn load_image(path: impl AsRef<Path>, limits: LoadLimits) -> Result<RgbImage, SensorError> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(SensorError::IsADirectory { path: path.into() });
    }
    // A FIFO or a device could block forever or never end: refuse before opening it.
    if !meta.is_file() {
        return Err(SensorError::NotARegularFile { path: path.into() });
    }
    if meta.len() == 0 {
        return Err(SensorError::EmptyFile { path: path.into() });
    }

    // A decoder refuses some headers without saying the size they declare: a PNG of 0 pixels
    // ("invalid dimensions"), or one whose buffer would overflow its memory limit, even when
    // only the header is read. imagesize (which reads headers without checking them) then says
    // whether the size is why; other failures are the decoder's to report.
    let (width, height) = match open_reader(path, image::Limits::no_limits())?.into_dimensions() {
        Ok(dims) => dims,
        Err(e) => {
            if let Ok(size) = imagesize::size(path) {
                let empty = size.width == 0 || size.height == 0;
                if empty || matches!(e, ImageError::Limits(_)) {
                    let dim = |d: usize| u32::try_from(d).unwrap_or(u32::MAX);
                    check_size(path, dim(size.width), dim(size.height), limits)?;
                }
            }
            return Err(image_error(path, e));
        }
    };
    check_size(path, width, height, limits)?;

    // The file is opened again: a decoder consumes its reader. The reader gets only the memory
    // allowance, so that a file replaced in between by a larger one is caught by the check below
    // with its real size; the strict size limits are then set on the decoder before it decodes.
    let mut decode_limits = image::Limits::default();
    decode_limits.max_alloc =
        Some(u64::from(width) * u64::from(height) * MAX_BYTES_PER_PIXEL + DECODER_SLACK);
    let mut decoder = open_reader(path, decode_limits.clone())?
        .into_decoder()
        .map_err(|e| image_error(path, e))?;
    let (width, height) = decoder.dimensions();
    check_size(path, width, height, limits)?;
    decode_limits.max_image_width = Some(limits.max_width);
    decode_limits.max_image_height = Some(limits.max_height);
    decoder
        .set_limits(decode_limits)
        .map_err(|e| image_error(path, e))?;
    let image = image::DynamicImage::from_decoder(decoder).map_err(|e| image_error(path, e))?;
    Ok(image.into_rgb8())
}

/// Opens `path` for decoding, with the format guessed from its content.
fn open_reader(
    path: &Path,
    limits: image::Limits,
) -> Result<ImageReader<BufReader<File>>, SensorError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| io_error(path, e))?;
    if reader.format().is_none() {
        return Err(SensorError::UnrecognisedFormat { path: path.into() });
    }
    reader.limits(limits);
    Ok(reader)
}

/// Checks a declared image size against `limits`.
fn check_size(path: &Path, width: u32, height: u32, limits: LoadLimits) -> Result<(), SensorError> {
    if width == 0 || height == 0 {
        return Err(SensorError::EmptyImage {
            path: path.into(),
            width,
            height,
        });
    }
    if width > limits.max_width || height > limits.max_height {
        return Err(SensorError::ImageTooLarge {
            path: path.into(),
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    Ok(())
}

/// Maps an operating-system error on `path` to the variant that says what went wrong.
fn io_error(path: &Path, e: io::Error) -> SensorError {
    let path = PathBuf::from(path);
    match e.kind() {
        io::ErrorKind::NotFound => SensorError::NotFound { path },
        io::ErrorKind::PermissionDenied => SensorError::PermissionDenied { path },
        io::ErrorKind::IsADirectory => SensorError::IsADirectory { path },
        // A file that shrank under the decoder reads as one that ends early.
        io::ErrorKind::UnexpectedEof => SensorError::Truncated { path },
        _ => SensorError::Read { path, cause: e },
    }
}

/// Maps an `image` crate error while reading `path`.
fn image_error(path: &Path, e: ImageError) -> SensorError {
    match e {
        ImageError::IoError(e) => io_error(path, e),
        ImageError::Unsupported(e) => SensorError::UnsupportedFormat {
            path: path.into(),
            detail: one_line(e),
        },
        ImageError::Limits(e) => SensorError::DecodeLimit {
            path: path.into(),
            detail: one_line(e),
        },
        // Decoding errors are malformed data; Parameter and Encoding errors cannot come from a
        // decoder given a correctly sized buffer, but if one does, the image is what is at fault.
        e @ (ImageError::Decoding(_) | ImageError::Parameter(_) | ImageError::Encoding(_)) => {
            SensorError::Corrupt {
                path: path.into(),
                detail: one_line(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_map_to_named_variants() {
        let p = Path::new("/some/file.png");
        let e = io_error(p, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(&e, SensorError::PermissionDenied { path } if path == p));
        assert_eq!(e.to_string(), "/some/file.png: permission denied");
        let e = io_error(p, io::Error::from_raw_os_error(5)); // EIO
        assert!(matches!(&e, SensorError::Read { cause, .. } if cause.raw_os_error() == Some(5)));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn limits_are_validated() {
        assert_eq!(LoadLimits::new(640, 480).unwrap().max_width(), 640);
        assert!(matches!(
            LoadLimits::new(MAX_DIMENSION + 1, 1),
            Err(SensorError::InvalidLimits {
                max_width: 16385,
                ..
            })
        ));
        assert!(LoadLimits::new(1, 0).is_err());
        assert_eq!(LoadLimits::default().max_height(), MAX_DIMENSION);
    }
}
