//! Writing frames out as PNG files, all or nothing.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, ImageError, RgbImage};

use super::error::one_line;
use super::layout::check_dimensions;
use super::SensorError;

/// How many temporary names to try before giving up on an unlucky directory.
const TEMP_ATTEMPTS: u32 = 64;

/// Writes `image` (8-bit RGB) to `path` as a PNG file, all or nothing.
///
/// The PNG is written to a new temporary file in the same directory (named
/// `.<file name>.<pid>.<n>.tmp`, created exclusively so nothing existing is touched), synced to
/// disk, and renamed over `path`; the rename is atomic (rename(2)), so readers see either the old
/// file or the whole new one. On any failure the temporary file is removed and `path` is left
/// as it was. An existing file at `path` is replaced; if `path` is a symbolic link, the link
/// itself is replaced by the new file.
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
/// - [`SensorError::Encode`]: the PNG encoder refused the image.
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
            .map_err(|e| match e {
                ImageError::IoError(cause) => SensorError::Write {
                    path: path.into(),
                    cause,
                },
                e => SensorError::Encode {
                    path: path.into(),
                    detail: one_line(e),
                },
            })
    })
}

/// Checks `path`, runs `write` on a temporary file next to it, and renames the result into
/// place; removes the temporary file if anything fails.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> Result<(), SensorError>,
) -> Result<(), SensorError> {
    let write_err = |cause: io::Error| SensorError::Write {
        path: path.into(),
        cause,
    };
    let (name, parent) = check_output_path(path)?;
    let (file, temp) = create_temp(parent, name).map_err(write_err)?;
    let mut out = BufWriter::new(&file);
    write(&mut out)?;
    out.flush().map_err(write_err)?;
    drop(out);
    // Synced before the rename, so that after a crash the name never points at a file whose data
    // never reached the disk.
    file.sync_all().map_err(write_err)?;
    drop(file);
    std::fs::rename(&temp.path, path).map_err(write_err)?;
    temp.keep();
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

fn not_a_directory(path: &Path, parent: &Path) -> SensorError {
    SensorError::OutputParentNotADirectory {
        path: path.into(),
        parent: parent.into(),
    }
}

/// A temporary file that is removed when dropped, unless kept.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// The file has been renamed into place: there is nothing to remove.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // Nothing more can be done if this fails; the error being returned says what went
            // wrong first.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates a new, exclusively opened temporary file in `dir` for the output `name`.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(File, TempFile)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last_err = None;
    for _ in 0..TEMP_ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let temp_path = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
        {
            Ok(file) => {
                return Ok((
                    file,
                    TempFile {
                        path: temp_path,
                        keep: false,
                    },
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
