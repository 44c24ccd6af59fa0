//! One IOPTE accessed atomically: a naturally aligned atomic access of the entry's width
//! (`u32` or `u64`, the sealed [`PteWord`]s), which is also the single-copy-atomic access the
//! hardware walker needs to never see a torn entry. Used where table memory is shared with
//! another writer: other threads ([`SharedPageTable`](crate::SharedPageTable)) or the device's
//! MMU updating the dirty state ([`PageTable::read_and_clear_dirty`](crate::PageTable::read_and_clear_dirty)).
//!
//! # Safety (every function)
//! `p` points at an entry of a live table page (in bounds; aligned to its size, as entries of a
//! page-aligned table are), and every access that can race with this one is atomic too.

use crate::PteWord;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Loads the entry at `p`.
///
/// # Safety
/// See the module documentation.
#[inline(always)]
pub(crate) unsafe fn load<P: PteWord>(p: *mut P, order: Ordering) -> P {
    if P::BYTES == 8 {
        // SAFETY: the caller's contract; the entry is 8 bytes and 8-aligned.
        P::from_u64(unsafe { AtomicU64::from_ptr(p.cast()) }.load(order))
    } else {
        // SAFETY: as above, for a 4-byte entry.
        P::from_u64(unsafe { AtomicU32::from_ptr(p.cast()) }.load(order) as u64)
    }
}

/// Stores `v` at `p`.
///
/// # Safety
/// See the module documentation.
#[inline(always)]
pub(crate) unsafe fn store<P: PteWord>(p: *mut P, v: P, order: Ordering) {
    if P::BYTES == 8 {
        // SAFETY: see `load`.
        unsafe { AtomicU64::from_ptr(p.cast()) }.store(v.to_u64(), order)
    } else {
        // SAFETY: see `load`.
        unsafe { AtomicU32::from_ptr(p.cast()) }.store(v.to_u64() as u32, order)
    }
}

/// Compare-exchange (AcqRel, Acquire on failure) of the entry at `p` from `old` to `new`; `Err`
/// holds the value found.
///
/// # Safety
/// See the module documentation.
#[inline(always)]
pub(crate) unsafe fn cas<P: PteWord>(p: *mut P, old: P, new: P) -> Result<(), P> {
    let (acq_rel, acq) = (Ordering::AcqRel, Ordering::Acquire);
    if P::BYTES == 8 {
        // SAFETY: see `load`.
        unsafe { AtomicU64::from_ptr(p.cast()) }
            .compare_exchange(old.to_u64(), new.to_u64(), acq_rel, acq)
            .map(|_| ())
            .map_err(P::from_u64)
    } else {
        // SAFETY: see `load`.
        unsafe { AtomicU32::from_ptr(p.cast()) }
            .compare_exchange(old.to_u64() as u32, new.to_u64() as u32, acq_rel, acq)
            .map(|_| ())
            .map_err(|v| P::from_u64(v as u64))
    }
}

/// Replaces the entry at `p` by `f(entry)` with a compare-exchange loop (AcqRel, Acquire),
/// unless `f` returns `None`, as `AtomicU64::fetch_update`.
///
/// # Safety
/// See the module documentation.
#[inline(always)]
pub(crate) unsafe fn fetch_update<P: PteWord>(p: *mut P, mut f: impl FnMut(P) -> Option<P>) {
    let (acq_rel, acq) = (Ordering::AcqRel, Ordering::Acquire);
    if P::BYTES == 8 {
        // SAFETY: see `load`.
        let a = unsafe { AtomicU64::from_ptr(p.cast()) };
        let _ = a.fetch_update(acq_rel, acq, |v| f(P::from_u64(v)).map(P::to_u64));
    } else {
        // SAFETY: see `load`.
        let a = unsafe { AtomicU32::from_ptr(p.cast()) };
        let _ = a.fetch_update(acq_rel, acq, |v| {
            f(P::from_u64(v as u64)).map(|n| n.to_u64() as u32)
        });
    }
}
