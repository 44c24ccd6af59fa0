//! PRIME's object identity: an fd that names one of our BOs gives back that BO.
//!
//! DRM PRIME (drivers/gpu/drm/drm_prime.c: `drm_gem_prime_fd_to_handle`,
//! `drm_gem_prime_import_dev`) returns the *same* GEM object when a driver imports a dma-buf it
//! exported itself: the dma-buf's private data points at the object, and an object of this
//! device is taken as it is instead of being imported. Two objects over the same pages would
//! each keep their own view of them (their own device mappings, their own bounce buffers, their
//! own cache maintenance), and writes through one would be lost through the other.
//!
//! Here the fd's file identity (`st_dev`, `st_ino` from `fstat`: the BO's memfd for a memfd
//! export, the dma-buf for a udmabuf export) plays the dma-buf's private data. The table is
//! process-wide because that association is: in the kernel it hangs off the open file, which
//! every fd for it shares. Entries hold weak references, so the table never keeps a BO alive;
//! a BO removes its entries when it is freed. A BO of another [`PhysMem`] (another simulated
//! machine in the same process) is not the same object for this one: its fd is imported as a
//! foreign buffer, as DRM imports another device's dma-buf.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Bo;
use crate::phys::PhysMem;

/// A file's identity: `(st_dev, st_ino)`.
pub(crate) type FileKey = (u64, u64);

/// A [`PhysMem`]'s identity: its address. Unique while one of its BOs lives, since a BO holds
/// its `PhysMem`; an entry whose BO is gone is never used.
type MachineKey = usize;

fn machine(phys: &Arc<PhysMem>) -> MachineKey {
    Arc::as_ptr(phys) as usize
}

/// Exported and imported BOs, per machine, by the identity of the files that name them.
type Table = HashMap<(FileKey, MachineKey), Weak<Bo>>;

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// The identity of the file `fd` names, or `None` if `fstat` fails.
pub(crate) fn file_key(fd: BorrowedFd<'_>) -> Option<FileKey> {
    let st = rustix::fs::fstat(fd).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Records that the file `key` names `bo`, and remembers the key on the BO so that its drop can
/// remove the entry.
pub(crate) fn remember(key: FileKey, bo: &Arc<Bo>) {
    TABLE
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert((key, machine(bo.phys())), Arc::downgrade(bo));
    let mut keys = bo.prime_keys.lock();
    if !keys.contains(&key) {
        keys.push(key);
    }
}

/// The live BO of `phys` that the file `key` names, if any.
pub(crate) fn lookup(key: FileKey, phys: &Arc<PhysMem>) -> Option<Arc<Bo>> {
    // The lock is released before `bo` can be dropped: dropping the last reference runs
    // `Bo::drop`, which takes the lock.
    let bo = {
        let table = TABLE.lock();
        table.as_ref()?.get(&(key, machine(phys)))?.upgrade()
    }?;
    Arc::ptr_eq(bo.phys(), phys).then_some(bo)
}

/// Removes the entries of `keys` whose BO is gone (called from `Bo::drop`; an entry that names
/// a newer BO, because the file was imported again elsewhere, stays).
pub(crate) fn forget(keys: &[FileKey], phys: &Arc<PhysMem>) {
    let mut table = TABLE.lock();
    if let Some(map) = table.as_mut() {
        for &key in keys {
            let key = (key, machine(phys));
            if map.get(&key).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&key);
            }
        }
    }
}
