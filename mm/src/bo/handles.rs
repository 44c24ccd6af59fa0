//! Integer handles for BOs, as a DRM file's GEM handle table.
//!
//! A handle is a per-table name for a reference to a BO, the way a GEM handle names a
//! `drm_gem_object` reference in one `drm_file` (drivers/gpu/drm/drm_gem.c:
//! `drm_gem_handle_create`, `drm_gem_handle_delete`, `drm_gem_object_lookup`). Inserting takes
//! a reference, closing drops it; the BO itself lives on while other references (other handles,
//! attachments, pins) exist.

use std::sync::Arc;

use parking_lot::Mutex;
use slab::Slab;

use super::Bo;
use crate::MmError;

/// A handle naming a BO in one [`BoHandles`] table. Never 0 (as in GEM, 0 means "no object"),
/// so a zeroed request field can never name a live BO.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct BoHandle(pub u32);

/// A table of BO handles (one per client, like the `object_idr` of a `drm_file`).
///
/// Semantics follow GEM: a handle stays valid, naming the same BO, until it is closed; a live
/// handle is never handed out again; after [`BoHandles::close`] the number may be reused by a
/// later [`BoHandles::insert`] (GEM's IDR also hands out the lowest free id), so a client must
/// not use a handle after closing it. Inserting the same BO twice gives two handles, each
/// holding a reference (GEM dedups per file only through its dma-buf import cache).
///
/// Methods take `&self`; the table is behind a mutex, so it can be shared between threads.
#[derive(Debug, Default)]
pub struct BoHandles {
    slab: Mutex<Slab<Arc<Bo>>>,
}

/// Largest slab key that still gives a valid `u32` handle (`key + 1`).
const MAX_KEY: usize = (u32::MAX - 1) as usize;

impl BoHandles {
    /// An empty table.
    pub fn new() -> BoHandles {
        BoHandles::default()
    }

    /// Stores a reference to `bo` and returns the new handle (never 0).
    ///
    /// # Errors
    /// [`MmError::HandlesExhausted`]: `u32::MAX - 1` handles are live; nothing is stored.
    pub fn insert(&self, bo: Arc<Bo>) -> Result<BoHandle, MmError> {
        let mut slab = self.slab.lock();
        let key = slab.vacant_key();
        if key > MAX_KEY {
            return Err(MmError::HandlesExhausted { live: slab.len() });
        }
        let key = slab.insert(bo);
        // `key <= MAX_KEY`, so `key + 1` fits in a u32.
        Ok(BoHandle(key as u32 + 1))
    }

    /// The BO `handle` names (a new reference to it).
    ///
    /// # Errors
    /// [`MmError::BadHandle`]: `handle` is 0, was never handed out, or was closed.
    pub fn get(&self, handle: BoHandle) -> Result<Arc<Bo>, MmError> {
        let slab = self.slab.lock();
        key_of(handle)
            .and_then(|k| slab.get(k))
            .cloned()
            .ok_or(MmError::BadHandle { handle: handle.0 })
    }

    /// Closes `handle`, dropping its reference to the BO (which is freed if that was the last
    /// one).
    ///
    /// # Errors
    /// [`MmError::BadHandle`]: `handle` is 0, was never handed out, or was already closed;
    /// the table is unchanged.
    pub fn close(&self, handle: BoHandle) -> Result<(), MmError> {
        let bo = {
            let mut slab = self.slab.lock();
            key_of(handle)
                .and_then(|k| slab.try_remove(k))
                .ok_or(MmError::BadHandle { handle: handle.0 })?
        };
        // The BO may be freed here; do it outside the table lock.
        drop(bo);
        Ok(())
    }

    /// Number of live handles.
    pub fn len(&self) -> usize {
        self.slab.lock().len()
    }

    /// Whether no handle is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of(handle: BoHandle) -> Option<usize> {
    (handle.0 as usize).checked_sub(1)
}
