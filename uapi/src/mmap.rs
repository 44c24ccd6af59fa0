//! CPU mappings of BOs made by `devmmu_mmap`, and their registry.
//!
//! A mapping is a real `mmap(MAP_SHARED)` of the BO's memfd: the kernel keeps the pages alive
//! while it exists, so it stays valid after the handle or the file is closed, as an mmap of a
//! DRM BO does (the vma holds its own reference). The registry records every live mapping so
//! that `devmmu_munmap` unmaps only what `devmmu_mmap` mapped, exactly, and so that a test can
//! count them (GET_PARAM `DEVMMU_PARAM_LIVE_MAPPINGS`).

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;

use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::abi::{DEVMMU_PROT_READ, DEVMMU_PROT_WRITE};

/// Live mappings: start address → length in bytes.
static MAPPINGS: Mutex<BTreeMap<usize, u64>> = Mutex::new(BTreeMap::new());

/// Maps `len` bytes (a non-zero page multiple) of `fd` from byte `offset` (page-aligned,
/// `offset + len` within the file) with `prot` (`DEVMMU_PROT_*`, checked by the caller).
pub(crate) fn map(fd: BorrowedFd<'_>, offset: u64, len: u64, prot: u32) -> Result<*mut u8, Errno> {
    let mut p = ProtFlags::empty();
    if prot & DEVMMU_PROT_READ != 0 {
        p |= ProtFlags::READ;
    }
    if prot & DEVMMU_PROT_WRITE != 0 {
        p |= ProtFlags::WRITE;
    }
    let len_usize = usize::try_from(len).map_err(|_| Errno::INVAL)?;
    // SAFETY: a new shared mapping at an address the kernel chooses (null hint, no MAP_FIXED),
    // so no existing memory is replaced. `offset + len` lies within the memfd, which is sealed
    // against shrinking, so no access through the mapping can fault with SIGBUS.
    let addr = unsafe {
        rustix::mm::mmap(
            core::ptr::null_mut(),
            len_usize,
            p,
            MapFlags::SHARED,
            fd,
            offset,
        )
    }?;
    MAPPINGS.lock().insert(addr as usize, len);
    Ok(addr.cast())
}

/// Unmaps a mapping made by [`map`]: `addr` and `len` (rounded up to pages) must be exactly
/// one live mapping's.
///
/// # Errors
/// `EINVAL`: not a live mapping of ours (nothing is unmapped).
pub(crate) fn unmap(addr: usize, len: u64) -> Result<(), Errno> {
    let len = len
        .checked_next_multiple_of(devmmu_mm::prelude::PAGE_SIZE)
        .ok_or(Errno::INVAL)?;
    let mut maps = MAPPINGS.lock();
    if maps.get(&addr) != Some(&len) {
        return Err(Errno::INVAL);
    }
    // SAFETY: `[addr, addr + len)` is exactly a mapping `map` made and nobody has unmapped
    // (the registry entry is removed only here, under the lock). The caller of `devmmu_munmap`
    // promises, as with munmap(2), not to use the memory afterwards.
    unsafe { rustix::mm::munmap(addr as *mut core::ffi::c_void, len as usize) }?;
    maps.remove(&addr);
    Ok(())
}

/// Live mappings in the process.
pub(crate) fn live_mappings() -> u64 {
    MAPPINGS.lock().len() as u64
}
