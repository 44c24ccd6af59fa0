//! The one error type of the sensor module.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the sensor module.
///
/// Every message is a single line; the variants about a file start with the file's path, so the
/// command can print the message as it is. Causes from the operating system are part of the
/// message (the `cause` fields) rather than a separate error source, so printing the message alone
/// loses nothing.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// A frame (layout, chart or image to write) was asked for with a width or height of 0 or
    /// above `max` (both in pixels).
    #[error("frame size {width}x{height} is out of range: width and height must each be 1..={max} pixels")]
    DimensionsOutOfRange {
        /// Requested width in pixels.
        width: u32,
        /// Requested height in pixels.
        height: u32,
        /// Largest allowed width and height in pixels ([`super::MAX_DIMENSION`]).
        max: u32,
    },

    /// [`super::LoadLimits::new`] was given a limit of 0 or above `max` pixels.
    #[error(
        "load limits {max_width}x{max_height} are out of range: each must be 1..={max} pixels"
    )]
    InvalidLimits {
        /// Requested largest width in pixels.
        max_width: u32,
        /// Requested largest height in pixels.
        max_height: u32,
        /// Largest allowed limit in pixels ([`super::MAX_DIMENSION`]).
        max: u32,
    },

    /// An RGB image was converted with an NV12 layout made for another size.
    #[error("image is {image_width}x{image_height} pixels but the NV12 layout is {layout_width}x{layout_height}")]
    SizeMismatch {
        /// Image width in pixels.
        image_width: u32,
        /// Image height in pixels.
        image_height: u32,
        /// Layout width in pixels.
        layout_width: u32,
        /// Layout height in pixels.
        layout_height: u32,
    },

    /// A buffer handed in for an NV12 frame is shorter than the layout's total size.
    #[error("{which} NV12 buffer holds {len} bytes but the layout needs {needed}")]
    BufferTooSmall {
        /// Which buffer: `"source"`, `"destination"`, `"expected"` or `"got"`.
        which: &'static str,
        /// Length of the buffer in bytes.
        len: usize,
        /// [`super::Nv12Layout::total_size`] in bytes.
        needed: usize,
    },

    /// The input file does not exist (or a directory on its path does not).
    #[error("{}: no such file", .path.display())]
    NotFound {
        /// The input path as given.
        path: PathBuf,
    },

    /// The input file, or a directory on its path, may not be read by this process.
    #[error("{}: permission denied", .path.display())]
    PermissionDenied {
        /// The input path as given.
        path: PathBuf,
    },

    /// The input path names a directory, not an image file.
    #[error("{}: is a directory, not an image file", .path.display())]
    IsADirectory {
        /// The input path as given.
        path: PathBuf,
    },

    /// The input path names something that is neither a regular file nor a directory (a FIFO, a
    /// socket, a device), which could block or never end when read.
    #[error("{}: not a regular file", .path.display())]
    NotARegularFile {
        /// The input path as given.
        path: PathBuf,
    },

    /// The input file is empty (0 bytes).
    #[error("{}: file is empty", .path.display())]
    EmptyFile {
        /// The input path as given.
        path: PathBuf,
    },

    /// Reading the input failed for another operating-system reason.
    #[error("{}: cannot read: {cause}", .path.display())]
    Read {
        /// The input path as given.
        path: PathBuf,
        /// What the operating system reported.
        cause: io::Error,
    },

    /// The first bytes of the input match no image format's signature.
    #[error("{}: not an image in a recognised format (PNG, JPEG, BMP, GIF, TIFF, PNM, WebP)", .path.display())]
    UnrecognisedFormat {
        /// The input path as given.
        path: PathBuf,
    },

    /// The input is in a format (or uses a feature of one, such as a colour type) that this build
    /// cannot decode.
    #[error("{}: unsupported image: {detail}", .path.display())]
    UnsupportedFormat {
        /// The input path as given.
        path: PathBuf,
        /// What is not supported, as the decoder put it.
        detail: String,
    },

    /// The input's data is malformed: the decoder rejected it.
    #[error("{}: corrupt image: {detail}", .path.display())]
    Corrupt {
        /// The input path as given.
        path: PathBuf,
        /// What the decoder found wrong.
        detail: String,
    },

    /// The input ends before the image data does.
    #[error("{}: truncated image: the file ends before the image data does", .path.display())]
    Truncated {
        /// The input path as given.
        path: PathBuf,
    },

    /// The image's header declares a size above the load limits; nothing was decoded.
    #[error("{}: image is {width}x{height} pixels: too large for the {max_width}x{max_height} limit", .path.display())]
    ImageTooLarge {
        /// The input path as given.
        path: PathBuf,
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// Largest accepted width in pixels.
        max_width: u32,
        /// Largest accepted height in pixels.
        max_height: u32,
    },

    /// The image's header declares a width or height of 0.
    #[error("{}: image is {width}x{height} pixels: empty, it has no pixels", .path.display())]
    EmptyImage {
        /// The input path as given.
        path: PathBuf,
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
    },

    /// The decoder would need more memory than the load allows (see [`super::load_image`]).
    #[error("{}: decoding needs more memory than allowed: {detail}", .path.display())]
    DecodeLimit {
        /// The input path as given.
        path: PathBuf,
        /// The limit the decoder reported.
        detail: String,
    },

    /// The output path names an existing directory.
    #[error("{}: is a directory; give a file name for the image", .path.display())]
    OutputIsDirectory {
        /// The output path as given.
        path: PathBuf,
    },

    /// The output path names the input file (the same file, by any name): writing it would
    /// destroy the input.
    #[error("{}: is the input file; give another name for the output", .path.display())]
    OutputIsInput {
        /// The output path as given.
        path: PathBuf,
    },

    /// The output's extension names a format the output is not written in (only `.png`, no
    /// extension, `.jpg` and `.jpeg` are).
    #[error("{}: cannot write this format; give a .png or .jpg name", .path.display())]
    UnsupportedOutputFormat {
        /// The output path as given.
        path: PathBuf,
    },

    /// The output path has no file name part (it ends in `..` or `/`).
    #[error("{}: not a file path", .path.display())]
    InvalidOutputPath {
        /// The output path as given.
        path: PathBuf,
    },

    /// The directory that should hold the output does not exist.
    #[error("{}: directory {} does not exist", .path.display(), .parent.display())]
    OutputParentMissing {
        /// The output path as given.
        path: PathBuf,
        /// The missing directory.
        parent: PathBuf,
    },

    /// What should be the directory holding the output exists but is not a directory.
    #[error("{}: {} is not a directory", .path.display(), .parent.display())]
    OutputParentNotADirectory {
        /// The output path as given.
        path: PathBuf,
        /// The path that is not a directory.
        parent: PathBuf,
    },

    /// Creating, writing, syncing or renaming the output failed; no output or temporary file was
    /// left behind.
    #[error("{}: cannot write: {cause}", .path.display())]
    Write {
        /// The output path as given.
        path: PathBuf,
        /// What the operating system reported.
        cause: io::Error,
    },

    /// The encoder refused the image; no output or temporary file was left behind.
    #[error("{}: cannot encode {format}: {detail}", .path.display())]
    Encode {
        /// The output path as given.
        path: PathBuf,
        /// `"PNG"` or `"JPEG"`.
        format: &'static str,
        /// What the encoder reported.
        detail: String,
    },
}

/// Makes a decoder's or encoder's message fit on one line, in words a user reads: a PNG chunk
/// type the png crate prints with Rust's debug formatting (`ChunkType { type: IDAT, critical:
/// true, .. }`) becomes its name (`IDAT`), and an error variant name it prints as is (fdeflate's
/// `Corrupt deflate stream. InvalidUncompressedBlockLength`) becomes words (`invalid
/// uncompressed block length`).
pub(crate) fn one_line(text: impl std::fmt::Display) -> String {
    let mut text = text.to_string();
    const CHUNK: &str = "ChunkType { type: ";
    while let Some(start) = text.find(CHUNK) {
        let rest = &text[start + CHUNK.len()..];
        let (Some(comma), Some(close)) = (rest.find(','), rest.find('}')) else {
            break;
        };
        let name = rest[..comma.min(close)].trim().to_string();
        let end = start + CHUNK.len() + close + 1;
        text.replace_range(start..end, &name);
    }
    text.split_whitespace()
        .map(uncamel)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `InvalidBlockType` (a Rust identifier in CamelCase: letters and digits, an upper-case first
/// letter, lower-case letters, and at least two upper-case ones) as `invalid block type`; any
/// other word (`Png`, `IDAT`, `0x7a1a`, `fDAT`, `chunk.`) as it is. A trailing `.`, `,` or `:`
/// is kept.
fn uncamel(word: &str) -> String {
    let core = word.trim_end_matches(['.', ',', ':']);
    let tail = &word[core.len()..];
    let upper = core.chars().filter(|c| c.is_ascii_uppercase()).count();
    let camel = core.starts_with(|c: char| c.is_ascii_uppercase())
        && upper >= 2
        && core.chars().any(|c| c.is_ascii_lowercase())
        && core.chars().all(|c| c.is_ascii_alphanumeric());
    if !camel {
        return word.to_string();
    }
    let mut out = String::with_capacity(core.len() + 4);
    for (i, c) in core.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push(' ');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out + tail
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_types_are_named_not_debug_printed() {
        let png = "CRC error: expected 0x7a1a43ad have 0x7b1a43ad while decoding ChunkType { \
                   type: IHDR, critical: true, private: false, reserved: false, safecopy: false } \
                   chunk.";
        assert_eq!(
            super::one_line(png),
            "CRC error: expected 0x7a1a43ad have 0x7b1a43ad while decoding IHDR chunk."
        );
        assert_eq!(super::one_line("ChunkType { broken"), "chunk type { broken");
    }

    #[test]
    fn variant_names_become_words() {
        // What `devmmu camera --input` printed for PNGs whose deflate stream has a stored block
        // with LEN != !NLEN, and a block of type 3.
        assert_eq!(
            super::one_line(
                "Format error decoding Png: Corrupt deflate stream. InvalidUncompressedBlockLength"
            ),
            "Format error decoding Png: Corrupt deflate stream. invalid uncompressed block length"
        );
        assert_eq!(
            super::one_line("Corrupt deflate stream. InvalidBlockType."),
            "Corrupt deflate stream. invalid block type."
        );
        for word in ["Png", "IDAT", "fDAT", "0x7A1a", "CRC", "Error:"] {
            assert_eq!(super::one_line(word), word);
        }
    }
}
