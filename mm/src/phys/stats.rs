//! Counters of the physical memory layer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A snapshot of [`PhysMem`](super::PhysMem)'s counters, from
/// [`PhysMem::stats`](super::PhysMem::stats). All counts are totals since construction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PhysStats {
    /// 4 KiB frames handed out (fresh and adopted).
    pub frames_allocated: u64,
    /// 4 KiB frames returned.
    pub frames_freed: u64,
    /// 64-byte lines written back by `clean` and `clean_invalidate`.
    pub lines_cleaned: u64,
    /// 64-byte lines invalidated by `invalidate` and `clean_invalidate`.
    pub lines_invalidated: u64,
    /// Calls of `clean` that touched at least one line.
    pub clean_calls: u64,
    /// Calls of `invalidate` that touched at least one line.
    pub invalidate_calls: u64,
    /// Calls of `clean_invalidate` that touched at least one line.
    pub clean_invalidate_calls: u64,
    /// Fences issued: one per maintenance call that touched at least one line.
    pub fences: u64,
    /// Bytes read by `device_read`.
    pub device_bytes_read: u64,
    /// Bytes written by `device_write`.
    pub device_bytes_written: u64,
}

/// The live counters. Relaxed atomics: they are statistics, read as a whole only when the
/// caller knows the operations it counts have finished.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_allocated: AtomicU64,
    pub(crate) frames_freed: AtomicU64,
    pub(crate) lines_cleaned: AtomicU64,
    pub(crate) lines_invalidated: AtomicU64,
    pub(crate) clean_calls: AtomicU64,
    pub(crate) invalidate_calls: AtomicU64,
    pub(crate) clean_invalidate_calls: AtomicU64,
    pub(crate) fences: AtomicU64,
    pub(crate) device_bytes_read: AtomicU64,
    pub(crate) device_bytes_written: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PhysStats {
        PhysStats {
            frames_allocated: self.frames_allocated.load(Relaxed),
            frames_freed: self.frames_freed.load(Relaxed),
            lines_cleaned: self.lines_cleaned.load(Relaxed),
            lines_invalidated: self.lines_invalidated.load(Relaxed),
            clean_calls: self.clean_calls.load(Relaxed),
            invalidate_calls: self.invalidate_calls.load(Relaxed),
            clean_invalidate_calls: self.clean_invalidate_calls.load(Relaxed),
            fences: self.fences.load(Relaxed),
            device_bytes_read: self.device_bytes_read.load(Relaxed),
            device_bytes_written: self.device_bytes_written.load(Relaxed),
        }
    }
}
