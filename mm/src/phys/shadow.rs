//! The RAM shadow: the copy of memory a non-coherent device sees in [`CacheMode::Model`].
//!
//! The memfd bytes are what the CPU sees through its caches; the shadow is what sits in RAM,
//! which is all a non-coherent device can see. Only the sync operations move bytes between the
//! two, a whole 64-byte line at a time: clean copies CPU view -> RAM, invalidate copies
//! RAM -> CPU view, clean+invalidate copies CPU view -> RAM (after which both agree). A missing
//! `sync_for_device` therefore shows up as the device reading stale RAM, and a missing
//! `sync_for_cpu` as the CPU reading stale cache contents, exactly the bugs this model exists to
//! catch.
//!
//! The model does not track which lines are dirty: an invalidate of a line the CPU wrote but
//! never cleaned loses that write, as `dc ivac` would on Arm. That is the strictest reading of
//! the DMA API (Documentation/core-api/dma-api-howto.rst: the CPU must not touch a buffer it has
//! handed to the device).
//!
//! [`CacheMode::Model`]: super::CacheMode::Model

use memmap2::{MmapMut, MmapRaw};

use crate::MmError;

/// The RAM copy of one allocation's bytes: anonymous memory, so untouched pages cost nothing.
#[derive(Debug)]
pub(crate) struct Shadow {
    map: MmapRaw,
}

impl Shadow {
    /// A shadow of `len` zero bytes (`len > 0`).
    pub(crate) fn zeroed(len: usize) -> Result<Shadow, MmError> {
        let map = MmapMut::map_anon(len).map_err(|e| MmError::from_io("mmap", &e))?;
        Ok(Shadow {
            map: MmapRaw::from(map),
        })
    }

    /// A shadow holding a copy of `len` bytes at `src` (`len > 0`).
    ///
    /// # Safety
    /// `src..src + len` must be readable for the duration of the call.
    pub(crate) unsafe fn copy_of(src: *const u8, len: usize) -> Result<Shadow, MmError> {
        let shadow = Shadow::zeroed(len)?;
        // SAFETY: the caller guarantees `src` is readable for `len` bytes; the fresh anonymous
        // mapping is `len` bytes, writable, and cannot overlap an existing mapping.
        unsafe { core::ptr::copy_nonoverlapping(src, shadow.as_mut_ptr(), len) };
        Ok(shadow)
    }

    /// Start of the shadow bytes.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

/// Copies `len` bytes of whole lines from `src` to `dst` (one view to the other).
///
/// # Safety
/// Both ranges must be valid for `len` bytes and must not overlap (they are in different
/// mappings).
pub(crate) unsafe fn copy_lines(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
}
