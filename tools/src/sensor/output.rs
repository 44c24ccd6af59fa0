//! Writing frames out as PNG or JPEG files, all or nothing.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, ImageError, RgbImage};

use super::error::one_line;
use super::layout::check_dimensions;
use super::SensorError;

/// JPEG quality of [`write_image`] (1-100; 90 keeps a photograph's detail).
pub const JPEG_QUALITY: u8 = 90;

/// Test hook: with this environment variable set to a number of milliseconds, [`write_image`]
/// and [`write_png`] wait that long after writing the temporary file and before renaming it, so
/// a test can interrupt the command while the temporary file exists.
pub const HOLD_TEMP_ENV: &str = "DEVMMU_TEST_HOLD_TEMP_MS";

/// The file formats an output image can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// PNG, lossless: the frame's bytes come back exactly (the frame-number stamp included).
    Png,
    /// JPEG (baseline, quality [`JPEG_QUALITY`]), lossy: the stamp's pixels come back close,
    /// not exact.
    Jpeg,
}

/// The format `path` asks for by its extension: `.png` (or none) is PNG, `.jpg` / `.jpeg` is
/// JPEG, in any letter case.
///
/// # Errors
/// [`SensorError::UnsupportedOutputFormat`] for any other extension, so that no file holds
/// bytes of another format than its name says.
pub fn output_format(path: &Path) -> Result<OutputFormat, SensorError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        None | Some("png") => Ok(OutputFormat::Png),
        Some("jpg" | "jpeg") => Ok(OutputFormat::Jpeg),
        Some(_) => Err(SensorError::UnsupportedOutputFormat { path: path.into() }),
    }
}

/// Writes `image` (8-bit RGB) to `path` in the format its extension names
/// ([`output_format`]: PNG or JPEG), all or nothing, as [`write_png`] does.
///
/// # Errors
/// Those of [`write_png`], and [`SensorError::UnsupportedOutputFormat`].
pub fn write_image(path: impl AsRef<Path>, image: &RgbImage) -> Result<(), SensorError> {
    let path = path.as_ref();
    match output_format(path)? {
        OutputFormat::Png => write_png(path, image),
        OutputFormat::Jpeg => {
            check_dimensions(image.width(), image.height())?;
            write_atomically(path, |out| {
                JpegEncoder::new_with_quality(out, JPEG_QUALITY)
                    .write_image(
                        image.as_raw(),
                        image.width(),
                        image.height(),
                        ExtendedColorType::Rgb8,
                    )
                    .map_err(|e| encode_error(path, "JPEG", e))
            })
        }
    }
}

/// Writes `image` (8-bit RGB) to `path` as a PNG file, whatever the name, all or nothing.
///
/// The PNG is written to a new temporary file in the same directory (`tempfile`: named
/// `.<file name>.<random>.tmp`, created exclusively so nothing existing is touched), synced to
/// disk, and renamed over `path`; the rename is atomic (rename(2)), so readers see either the old
/// file or the whole new one. On any failure the temporary file is removed and `path` is left
/// as it was; on SIGINT or SIGTERM too, once [`crate::interrupt::install`] has run. An existing
/// file at `path` is replaced; if `path` is a symbolic link, the link itself is replaced by the
/// new file.
///
/// # Errors
/// Each names the output path; on every error no file is left behind:
/// - [`SensorError::DimensionsOutOfRange`]: the image is empty (a PNG needs at least one pixel)
///   or larger than [`super::MAX_DIMENSION`] in either direction;
/// - [`SensorError::OutputIsDirectory`]: `path` is an existing directory;
/// - [`SensorError::InvalidOutputPath`]: `path` has no file name part (ends in `..` or `/`);
/// - [`SensorError::OutputParentMissing`]: the directory that should hold the file does not exist;
/// - [`SensorError::OutputParentNotADirectory`]: it, or a path component above it, is not a
///   directory;
/// - [`SensorError::Write`]: creating, writing, syncing or renaming failed (permission, full
///   disk, ...);
/// - [`SensorError::Encode`]: the encoder refused the image.
pub fn write_png(path: impl AsRef<Path>, image: &RgbImage) -> Result<(), SensorError> {
    let path = path.as_ref();
    check_dimensions(image.width(), image.height())?;
    write_atomically(path, |out| {
        PngEncoder::new(out)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                ExtendedColorType::Rgb8,
            )
            .map_err(|e| encode_error(path, "PNG", e))
    })
}

/// Writes `bytes` to `path`, all or nothing, as [`write_png`] writes its PNG (same checks and
/// errors, the same temporary file removed on failure or interruption).
///
/// # Errors
/// Those of [`write_png`] but [`SensorError::DimensionsOutOfRange`] and
/// [`SensorError::Encode`].
pub fn write_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), SensorError> {
    let path = path.as_ref();
    write_atomically(path, |out| {
        out.write_all(bytes).map_err(|cause| SensorError::Write {
            path: path.into(),
            cause,
        })
    })
}

fn encode_error(path: &Path, format: &'static str, e: ImageError) -> SensorError {
    match e {
        ImageError::IoError(cause) => SensorError::Write {
            path: path.into(),
            cause,
        },
        e => SensorError::Encode {
            path: path.into(),
            format,
            detail: one_line(e),
        },
    }
}

/// Checks `path`, runs `write` on a temporary file next to it, and renames the result into
/// place; removes the temporary file if anything fails or the process is interrupted.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> Result<(), SensorError>,
) -> Result<(), SensorError> {
    let write_err = |cause: io::Error| SensorError::Write {
        path: path.into(),
        cause,
    };
    let (name, parent) = check_output_path(path)?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let (temp, _registered) = crate::interrupt::create_registered(
        || {
            // rw for everyone the umask allows, as a file a shell redirection makes (tempfile's
            // own default is 0600).
            tempfile::Builder::new()
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .prefix(&prefix)
                .suffix(".tmp")
                .tempfile_in(parent)
        },
        |t| t.path(),
    )
    .map_err(write_err)?;
    let mut out = BufWriter::new(temp.as_file());
    write(&mut out)?;
    out.flush().map_err(write_err)?;
    drop(out);
    // Synced before the rename, so that after a crash the name never points at a file whose data
    // never reached the disk.
    temp.as_file().sync_all().map_err(write_err)?;
    if let Some(ms) = std::env::var(HOLD_TEMP_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    // On failure the returned error gives the temporary file back, and dropping it removes it.
    temp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Checks that a file can be created at `path` without writing anything: it is not a
/// directory, names a file, and its parent directory exists. Returns the file name and the
/// parent directory. A caller that does expensive work before [`write_png`] calls this first, so
/// a bad path is refused before the work (`write_png` checks again, as the directory may change).
///
/// # Errors
/// [`SensorError::OutputIsDirectory`], [`SensorError::InvalidOutputPath`],
/// [`SensorError::OutputParentMissing`], [`SensorError::OutputParentNotADirectory`], or
/// [`SensorError::Write`] if the parent cannot be examined.
pub fn check_output_path(path: &Path) -> Result<(&OsStr, &Path), SensorError> {
    if path.is_dir() {
        return Err(SensorError::OutputIsDirectory { path: path.into() });
    }
    // A trailing slash asks for a directory; `file_name` would quietly drop it.
    let trailing_slash = path.as_os_str().as_encoded_bytes().last() == Some(&b'/');
    let Some(name) = path.file_name().filter(|_| !trailing_slash) else {
        return Err(SensorError::InvalidOutputPath { path: path.into() });
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => Ok((name, parent)),
        Ok(_) => Err(not_a_directory(path, parent)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SensorError::OutputParentMissing {
            path: path.into(),
            parent: parent.into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Err(not_a_directory(path, parent)),
        Err(cause) => Err(SensorError::Write {
            path: path.into(),
            cause,
        }),
    }
}

/// Refuses an output that is the input file itself, under any name (same device and inode, so
/// a symbolic or hard link to the input counts): the atomic rename would replace the input.
/// An output that does not exist yet is never the input.
///
/// # Errors
/// [`SensorError::OutputIsInput`].
pub fn check_output_is_not_input(output: &Path, input: &Path) -> Result<(), SensorError> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(o), Ok(i)) = (std::fs::metadata(output), std::fs::metadata(input)) else {
        return Ok(());
    };
    if (o.dev(), o.ino()) == (i.dev(), i.ino()) {
        return Err(SensorError::OutputIsInput {
            path: output.into(),
        });
    }
    Ok(())
}

fn not_a_directory(path: &Path, parent: &Path) -> SensorError {
    SensorError::OutputParentNotADirectory {
        path: path.into(),
        parent: parent.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "devmmu-sensor-output-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn failure_while_writing_removes_the_temporary_file() {
        let dir = scratch_dir("fail");
        let target = dir.join("out.png");
        std::fs::write(&target, b"old contents").unwrap();
        let err = write_atomically(&target, |out| {
            out.write_all(&[0xAB; 100_000]).unwrap();
            // Bytes have reached the temporary file before the failure.
            out.flush().unwrap();
            assert_eq!(entries(&dir).len(), 2);
            Err(SensorError::Encode {
                path: target.clone(),
                format: "PNG",
                detail: "injected".into(),
            })
        })
        .unwrap_err();
        assert!(matches!(err, SensorError::Encode { .. }));
        assert_eq!(entries(&dir), vec![target.clone()]);
        assert_eq!(std::fs::read(&target).unwrap(), b"old contents");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn success_replaces_the_target_and_leaves_no_temporary_file() {
        let dir = scratch_dir("ok");
        let target = dir.join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        write_atomically(&target, |out| {
            out.write_all(b"new").map_err(|cause| SensorError::Write {
                path: target.clone(),
                cause,
            })
        })
        .unwrap();
        assert_eq!(entries(&dir), vec![target.clone()]);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
