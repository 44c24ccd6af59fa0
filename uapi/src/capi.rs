//! The C ABI: `devmmu_open`, `devmmu_ioctl`, `devmmu_mmap`, `devmmu_munmap`, `devmmu_close`.
//!
//! A file is named by a positive `int`, as a file descriptor (but from its own number space:
//! it is not an OS fd). Numbers start at 1 and are never reused, so a closed or never-opened
//! number is always `-EBADF`, never another file. Every file is on the process-wide machine
//! ([`Machine::global`]), so PRIME between files works.
//!
//! Every function returns 0 (or a file number) on success and `-errno` on failure. None
//! unwinds into C: the code is written not to panic, and each function also runs under
//! `catch_unwind`, turning a panic that would still happen into `-EIO`.

use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::io::Errno;

use crate::errno::{errno_of, neg};
use crate::file::File;
use crate::machine::Machine;

struct Files {
    next: i32,
    open: HashMap<i32, Arc<File>>,
}

static FILES: Mutex<Option<Files>> = Mutex::new(None);

/// Runs `f`, turning an error into `-errno` and a panic into `-EIO`.
fn guard(f: impl FnOnce() -> Result<i32, Errno>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => neg(e),
        Err(_) => neg(Errno::IO),
    }
}

fn lookup(file: i32) -> Result<Arc<File>, Errno> {
    FILES
        .lock()
        .as_ref()
        .and_then(|f| f.open.get(&file).cloned())
        .ok_or(Errno::BADF)
}

/// Opens a file on device `device` (`DEVMMU_DEVICE_GPU` or `DEVMMU_DEVICE_ISP`) of the
/// process-wide simulated machine. `flags` must be 0.
///
/// Returns the file's number (> 0), or `-EINVAL` (unknown device, non-zero flags), `-EMFILE`
/// (file numbers used up), `-ENOMEM` (the machine could not be made).
#[no_mangle]
pub extern "C" fn devmmu_open(device: u32, flags: u32) -> i32 {
    guard(|| {
        let machine = Machine::global().map_err(|e| errno_of(&e))?;
        let file = File::open(&machine, device, flags)?;
        let mut files = FILES.lock();
        let files = files.get_or_insert_with(|| Files {
            next: 1,
            open: HashMap::new(),
        });
        let n = files.next;
        if n == i32::MAX {
            return Err(Errno::MFILE);
        }
        files.next += 1;
        files.open.insert(n, Arc::new(file));
        Ok(n)
    })
}

/// Runs request `request` (a `DEVMMU_IOCTL_*`) with argument struct `arg`, as `ioctl(2)`.
///
/// Returns 0, or `-errno`: `-EBADF` (not an open file), `-ENOTTY` (not a devmmu request),
/// `-EFAULT` (null `arg`), `-EINVAL` (misaligned `arg`, wrong direction bits), `-E2BIG` (a
/// larger struct with non-zero bytes past the known fields), and each request's own (see
/// docs/uapi.md).
///
/// # Safety
/// `arg` points at memory readable (and, for a `DRM_IOWR` request, writable) for the size the
/// request number declares, and every address inside the struct at memory valid for the size
/// declared with it. Nothing else is assumed: a null, misaligned or wrapping address, or any
/// value of any field, is refused with an error.
#[no_mangle]
pub unsafe extern "C" fn devmmu_ioctl(file: i32, request: u32, arg: *mut c_void) -> i32 {
    guard(|| {
        let f = lookup(file)?;
        // SAFETY: forwarded to our caller's promise.
        unsafe { f.ioctl(request, arg as usize as u64) }?;
        Ok(0)
    })
}

/// Maps `length` bytes at mmap offset `offset` (from BO_MMAP) on the CPU with `prot`
/// (`DEVMMU_PROT_READ` | `DEVMMU_PROT_WRITE`) and stores the address in `*addr_out`. The
/// mapping outlives the handle and the file; unmap it with `devmmu_munmap`.
///
/// Returns 0, or `-EBADF` (not an open file), `-EFAULT` (null `addr_out`), `-EINVAL`
/// (misaligned `addr_out`; bad `prot`, `length` or `offset`: see `File::mmap`), `-ENOMEM`.
///
/// # Safety
/// `addr_out`, if not null and aligned, points at a writable `void *`.
#[no_mangle]
pub unsafe extern "C" fn devmmu_mmap(
    file: i32,
    offset: u64,
    length: u64,
    prot: u32,
    addr_out: *mut *mut c_void,
) -> i32 {
    guard(|| {
        let f = lookup(file)?;
        crate::user::check_range(
            addr_out as usize as u64,
            size_of::<*mut c_void>() as u64,
            align_of::<*mut c_void>(),
        )?;
        let p = f.mmap(offset, length, prot)?;
        // SAFETY: `addr_out` is non-null and aligned (checked above) and the caller promises it
        // is writable.
        unsafe { addr_out.write(p.cast()) };
        Ok(0)
    })
}

/// Unmaps a mapping made by `devmmu_mmap`: `addr` and `length` must be the ones it was mapped
/// with (`length` rounded up to pages as `devmmu_mmap` rounded it).
///
/// Returns 0, or `-EINVAL` (not a live devmmu mapping: nothing is unmapped).
///
/// # Safety
/// As munmap(2): the caller does not use the memory afterwards.
#[no_mangle]
pub unsafe extern "C" fn devmmu_munmap(addr: *mut c_void, length: u64) -> i32 {
    guard(|| {
        crate::mmap::unmap(addr as usize, length)?;
        Ok(0)
    })
}

/// Closes a file: its VMs are unbound and destroyed, its brackets ended, its handles closed
/// (BOs other files or fds still hold live on). Mappings made through it stay.
///
/// Returns 0, or `-EBADF` (not an open file). A request running on the file in another thread
/// finishes first; the file is then gone.
#[no_mangle]
pub extern "C" fn devmmu_close(file: i32) -> i32 {
    guard(|| {
        let f = FILES
            .lock()
            .as_mut()
            .and_then(|f| f.open.remove(&file))
            .ok_or(Errno::BADF)?;
        // Dropped outside the table lock: unbinding may take a while.
        drop(f);
        Ok(0)
    })
}
