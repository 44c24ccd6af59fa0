//! SIGINT and SIGTERM: an interrupted command leaves no temporary file behind.
//!
//! Output files are written to a temporary file next to their target and renamed into place
//! ([`crate::sensor::write_image`]). While such a file exists its path is registered here;
//! [`install`] starts a thread (signal-hook's iterator, so nothing runs in signal context) that on
//! SIGINT or SIGTERM removes every registered file and exits with status 128 + the signal number
//! (130, 143), as a shell reports a process killed by that signal.
//!
//! It owns nothing but the registry: it never writes an output itself.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Paths of the temporary files that exist now.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Handles SIGINT and SIGTERM for the rest of the process: remove the registered temporary
/// files, then exit with 128 + the signal number. Call once, at start-up.
///
/// # Errors
/// The signal handlers could not be registered (the operating system's error).
pub fn install() -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("devmmu-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                remove_pending();
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// Removes every registered file. The lock is kept until the process exits, so that no new
/// temporary file is created after the removal.
fn remove_pending() {
    let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    for p in pending.iter() {
        // Nothing more can be done if this fails: the process is exiting.
        let _ = std::fs::remove_file(p);
    }
    std::mem::forget(pending);
}

/// Runs `create` (which makes a temporary file and returns it with its path) with the registry
/// locked and registers the path, so an interruption either comes before the file exists or
/// removes it. The returned guard unregisters the path when dropped.
pub(crate) fn create_registered<T>(
    create: impl FnOnce() -> io::Result<T>,
    path_of: impl FnOnce(&T) -> &Path,
) -> io::Result<(T, Registered)> {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let made = create()?;
    let path = path_of(&made).to_path_buf();
    pending.push(path.clone());
    Ok((made, Registered(path)))
}

/// A registered temporary file; unregistered on drop (after it was renamed or removed).
pub(crate) struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pending.iter().position(|p| *p == self.0) {
            pending.swap_remove(i);
        }
    }
}
