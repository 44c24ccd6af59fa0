//! Buffer objects (BOs): the unit a driver allocates, maps into device VMs and shares.
//!
//! A [`Bo`] owns physical frames (one sealed memfd, see [`crate::phys`]), the single CPU mapping
//! of them, a recorded [`Caching`] mode, a pin count, and (once devices use it) its DMA
//! attachments. It is shared as `Arc<Bo>`; userspace-style integer handles live in
//! [`BoHandles`], fds come out of [`Bo::export`] and go back in through [`Bo::import`].
//!
//! What this module must never do: produce a `DmaAddr` itself (that is
//! [`DmaOps`](crate::dma::DmaOps)' job, through [`Bo::attach`]) or trust an fd it did not create
//! before checking it (see [`Bo::import`]).
//!
//! Model: the GEM object of the DRM subsystem (drivers/gpu/drm/drm_gem.c) for handles and
//! lifetime, the dma-buf exporter interface (drivers/dma-buf/dma-buf.c,
//! Documentation/driver-api/dma-buf.rst) for attachments and CPU access, udmabuf
//! (drivers/dma-buf/udmabuf.c) for turning a memfd into a dma-buf.

mod allocator;
mod attach;
mod cpu_access;
pub(crate) mod dma_buf;
mod export;
mod handles;
mod import;
pub mod layout;
mod prime;

use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::phys::{
    FrameAlloc, Frames, PhysAddr, PhysMem, PhysSegment, Zone, PAGE_SHIFT, PAGE_SIZE,
};
use crate::MmError;

pub use allocator::{AllocSource, DmaBufAllocator, SharedBuffer, DMA_HEAP_SYSTEM_PATH};
pub use attach::BoAttachment;
pub use cpu_access::{CpuAccess, CpuAccessGuard, OwnedCpuAccess};
pub use export::{ExportOptions, ExportedFd, FdKind, UDMABUF_PATH};
pub use handles::{BoHandle, BoHandles};
pub use layout::{
    format_info, DrmFourcc, DrmModifier, FormatInfo, Framebuffer, ImageLayout, LayoutError,
    PitchRule, PlaneLayout,
};

/// How the CPU maps a BO's pages, and therefore what handing it to a non-coherent device costs.
///
/// The mode is recorded at creation and decides how [`Bo::read`] and [`Bo::write`] reach memory.
/// It does not change what the DMA layer does at map/unmap time (a streaming mapping of a
/// non-coherent device is still synced there, which finds nothing to do for the uncached modes).
/// Sources: Documentation/core-api/dma-api.rst (`dma_alloc_wc`, `DMA_ATTR_WRITE_COMBINE`),
/// the `ttm_caching` modes of drivers/gpu/drm/ttm (cached, write-combined, uncached).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Caching {
    /// Write-back cached, like ordinary memory: fastest CPU access, but for a non-coherent
    /// device the CPU's writes reach RAM only through `sync_for_device` (clean) and the device's
    /// writes become visible only after `sync_for_cpu` (invalidate). Access it inside a
    /// [`Bo::begin_cpu_access`] bracket while a device has it attached.
    #[default]
    Cached,
    /// Write-combined: stores are gathered in the CPU's write-combining buffers and go straight
    /// to RAM; loads are uncached (slow). The CPU view always equals RAM, so handing the buffer
    /// to a device needs no cache maintenance, only a drain of the WC buffers (a fence), which
    /// [`Bo::write`] does. The usual mode for buffers the CPU fills once and a device reads.
    WriteCombined,
    /// Uncached: every load and store goes to RAM in program order. As
    /// [`Caching::WriteCombined`] for syncs (none needed); slowest for the CPU.
    Uncached,
}

impl Caching {
    /// Whether CPU accesses bypass the caches, so that the CPU view always equals RAM.
    pub const fn bypasses_cache(self) -> bool {
        !matches!(self, Caching::Cached)
    }
}

/// How to allocate a [`Bo`]: placement of its frames and its CPU caching mode.
///
/// Build it with the methods, starting from `BoFlags::default()` (scattered frames from any
/// zone, [`Caching::Cached`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct BoFlags {
    /// One physically contiguous run of frames (for a device without an MMU, or to allow
    /// block mappings), instead of scattered frames.
    pub contiguous: bool,
    /// Which physical addresses the frames may use (e.g. [`Zone::Below`] 4 GiB for a device
    /// with a 32-bit DMA mask and no IOMMU, like `GFP_DMA32`).
    pub zone: Zone,
    /// The CPU caching mode.
    pub caching: Caching,
}

impl BoFlags {
    /// The same flags, asking for one physically contiguous run.
    pub fn contiguous(self) -> BoFlags {
        BoFlags {
            contiguous: true,
            ..self
        }
    }

    /// The same flags, with frames restricted to `zone`.
    pub fn zone(self, zone: Zone) -> BoFlags {
        BoFlags { zone, ..self }
    }

    /// The same flags, with frames entirely below the physical address `limit` (bytes).
    pub fn below(self, limit: PhysAddr) -> BoFlags {
        self.zone(Zone::Below(limit))
    }

    /// The same flags, with CPU caching mode `caching`.
    pub fn caching(self, caching: Caching) -> BoFlags {
        BoFlags { caching, ..self }
    }

    fn frame_alloc(self) -> FrameAlloc {
        FrameAlloc {
            contiguous: self.contiguous,
            zone: self.zone,
            align_pages: 1,
        }
    }
}

/// The pin count, and the reference a pin holds.
#[derive(Debug, Default)]
struct PinState {
    count: u64,
    /// While pinned the BO holds a strong reference to itself, so that it cannot be freed
    /// even when every handle and attachment is gone (as `pin_user_pages` holds a page
    /// reference). Dropped when the count returns to zero.
    keep: Option<Arc<Bo>>,
}

/// A buffer object: `size()` bytes (a non-zero multiple of [`PAGE_SIZE`]) of physical frames,
/// their CPU mapping and the bookkeeping drivers need around them.
///
/// Shared as `Arc<Bo>`; every method takes `&self` and is safe to call from several threads.
/// The frames are returned to the allocator when the last `Arc` goes (handles, attachments and
/// pins each hold one); an exported fd keeps the memfd, not the frames, alive.
pub struct Bo {
    frames: Frames,
    flags: BoFlags,
    imported: bool,
    /// Imported from a dma-buf: every CPU access is bracketed with `DMA_BUF_IOCTL_SYNC` on it.
    dma_buf: bool,
    pin: Mutex<PinState>,
    /// The live attachments, at most one per device, for sharing between the device's users,
    /// the CPU access bracket and the DMA-debug checks. Weak, so that an attachment whose last
    /// user is gone simply disappears from the list.
    attachments: Mutex<Vec<Weak<BoAttachment>>>,
    /// The identities of the files (memfd, dma-buf) this BO was exported as or imported from,
    /// for PRIME's self-import lookup (`prime.rs`).
    prime_keys: Mutex<Vec<prime::FileKey>>,
}

impl Drop for Bo {
    fn drop(&mut self) {
        let keys = self.prime_keys.get_mut();
        if !keys.is_empty() {
            prime::forget(keys, self.frames.phys());
        }
    }
}

impl core::fmt::Debug for Bo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bo")
            .field("size", &self.size())
            .field("flags", &self.flags)
            .field("imported", &self.imported)
            .field("pins", &self.pin_count())
            .field("frames", &self.frames)
            .finish()
    }
}

impl Bo {
    /// Allocates a BO of `size` bytes from `phys`, placed as `flags` says. Its bytes start as
    /// zeros, in both the CPU view and RAM.
    ///
    /// # Errors
    /// - [`MmError::ZeroSize`]: `size == 0`.
    /// - [`MmError::Misaligned`]: `size` is not a multiple of [`PAGE_SIZE`] (`value` = `size`).
    /// - [`MmError::NoMemory`]: not enough free frames of the requested shape in the zone.
    /// - [`MmError::Os`]: creating or mapping the backing memfd failed.
    ///
    /// On error nothing stays allocated.
    pub fn new(phys: &Arc<PhysMem>, size: u64, flags: BoFlags) -> Result<Arc<Bo>, MmError> {
        check_size(size)?;
        let frames = phys.alloc_frames(size >> PAGE_SHIFT, flags.frame_alloc())?;
        Ok(Arc::new(Bo::from_frames(frames, flags, false)))
    }

    fn from_frames(frames: Frames, flags: BoFlags, imported: bool) -> Bo {
        Bo {
            frames,
            flags,
            imported,
            dma_buf: false,
            pin: Mutex::new(PinState::default()),
            attachments: Mutex::new(Vec::new()),
            prime_keys: Mutex::new(Vec::new()),
        }
    }

    /// The physical memory the BO's frames belong to.
    pub fn phys(&self) -> &Arc<PhysMem> {
        self.frames.phys()
    }

    /// Size in bytes (a non-zero multiple of [`PAGE_SIZE`]).
    pub fn size(&self) -> u64 {
        self.frames.len_bytes()
    }

    /// Number of 4 KiB pages (`size() / PAGE_SIZE`).
    pub fn page_count(&self) -> u64 {
        self.frames.page_count()
    }

    /// The flags it was created (or imported) with.
    pub fn flags(&self) -> BoFlags {
        self.flags
    }

    /// The CPU caching mode.
    pub fn caching(&self) -> Caching {
        self.flags.caching
    }

    /// Whether the BO was made from an fd with [`Bo::import`] rather than allocated.
    pub fn is_imported(&self) -> bool {
        self.imported
    }

    /// Physical address of each 4 KiB page, in buffer order (page-aligned).
    pub fn pages(&self) -> &[PhysAddr] {
        self.frames.pages()
    }

    /// The BO as physically contiguous runs in buffer order (adjacent pages whose frames are
    /// adjacent are merged): the scatter-gather list handed to `DmaOps::map_sg`. Lengths are
    /// in bytes, multiples of [`PAGE_SIZE`], summing to `size()`.
    pub fn segments(&self) -> Vec<PhysSegment> {
        self.frames.segments()
    }

    /// Whether all pages form one physically contiguous run.
    pub fn is_contiguous(&self) -> bool {
        self.frames.is_contiguous()
    }

    /// The physical address of byte `offset` of the BO.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`]: `offset >= size()`.
    pub fn phys_addr(&self, offset: u64) -> Result<PhysAddr, MmError> {
        self.frames.phys_addr(offset)
    }

    /// Takes a pin: the pages stay where they are and the BO cannot be freed until the matching
    /// [`Bo::unpin`], even if every other reference is dropped (the pin holds one). Returns the
    /// new pin count. The count saturates at `u64::MAX`, which no caller can reach.
    ///
    /// Nothing in devmmu moves or evicts pages yet; a pin is what a future shrinker or
    /// migration must check (as TTM checks `pin_count`), and it is what keeps a BO alive while
    /// hardware that holds its addresses outside any attachment (a scanout, firmware) uses it.
    pub fn pin(self: &Arc<Self>) -> u64 {
        let mut st = self.pin.lock();
        st.count = st.count.saturating_add(1);
        if st.keep.is_none() {
            st.keep = Some(Arc::clone(self));
        }
        st.count
    }

    /// Drops a pin taken with [`Bo::pin`]; returns the new pin count. At zero the BO's
    /// self-reference goes, so it is freed once the caller's references are gone.
    ///
    /// # Errors
    /// [`MmError::NotPinned`]: the pin count is already zero (nothing changes).
    pub fn unpin(&self) -> Result<u64, MmError> {
        let released;
        let count = {
            let mut st = self.pin.lock();
            if st.count == 0 {
                return Err(MmError::NotPinned);
            }
            st.count -= 1;
            released = if st.count == 0 { st.keep.take() } else { None };
            st.count
        };
        // The caller's `&self` comes from another `Arc`, so this never frees the BO; dropping
        // it after the lock is released keeps that obvious.
        drop(released);
        Ok(count)
    }

    /// The current pin count.
    pub fn pin_count(&self) -> u64 {
        self.pin.lock().count
    }

    /// Whether at least one pin is held.
    pub fn is_pinned(&self) -> bool {
        self.pin_count() > 0
    }

    /// Copies `buf.len()` bytes at BO offset `offset` (bytes) out of the CPU mapping.
    ///
    /// Unbracketed access, for a BO no device has attached. While a device has it attached,
    /// read inside a CPU access bracket instead: [`Bo::begin_cpu_access`], then
    /// [`CpuAccessGuard::read`].
    ///
    /// [`Caching::Cached`]: reads the CPU view, which for a non-coherent device holds the
    /// device's writes only after a `sync_for_cpu` (use [`Bo::begin_cpu_access`]).
    /// [`Caching::WriteCombined`] / [`Caching::Uncached`]: an uncached read, modelled as an
    /// invalidate of the touched lines followed by the CPU-view read, so it sees RAM.
    ///
    /// When DMA debugging is on for an attached device, a read of bytes the device owns
    /// (mapped or synced for the device, not synced back) is reported as a diagnostic of that
    /// device's `DmaOps` (`check_cpu_access`); the read still happens.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`]: the range runs past `size()`; `buf` is untouched.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MmError> {
        self.check_range(offset, buf.len() as u64)?;
        self.check_cpu_access(offset, buf.len() as u64, false);
        if self.caching().bypasses_cache() {
            for seg in self.phys_ranges(offset, buf.len() as u64) {
                self.phys().invalidate(seg.addr, seg.len)?;
            }
        }
        self.frames.read(offset, buf)
    }

    /// Copies `data` into the CPU mapping at BO offset `offset` (bytes).
    ///
    /// Unbracketed access, for a BO no device has attached. While a device has it attached,
    /// write inside a WRITE bracket instead: [`Bo::begin_cpu_access`], then
    /// [`CpuAccessGuard::write`].
    ///
    /// [`Caching::Cached`]: writes the CPU view; a non-coherent device sees it after a
    /// `sync_for_device` (the end of a WRITE [`Bo::begin_cpu_access`] bracket).
    /// [`Caching::WriteCombined`] / [`Caching::Uncached`]: the write goes through to RAM
    /// (modelled as the CPU-view write followed by a clean of the touched lines and one fence).
    ///
    /// DMA debugging: as [`Bo::read`].
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`]: the range runs past `size()`; nothing is written.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MmError> {
        self.check_range(offset, data.len() as u64)?;
        self.check_cpu_access(offset, data.len() as u64, true);
        self.frames.write(offset, data)?;
        if self.caching().bypasses_cache() {
            for seg in self.phys_ranges(offset, data.len() as u64) {
                self.phys().clean(seg.addr, seg.len)?;
            }
        }
        Ok(())
    }

    /// Start of the CPU mapping: `size()` bytes, page-aligned, readable and writable while the
    /// BO lives. Accesses through it bypass the caching-mode handling and the DMA-debug checks
    /// of [`Bo::read`] / [`Bo::write`]; they are CPU-view accesses.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.frames.cpu_ptr()
    }

    /// The CPU mapping as a slice of `size()` bytes.
    ///
    /// # Safety
    /// While the slice lives nothing may write the BO's bytes: no [`Bo::write`], no device
    /// write in [`CacheMode::Native`](crate::phys::CacheMode) or by a coherent device, no
    /// invalidate of its lines, no other process writing an exported fd. This cannot be made
    /// safe: DMA and other processes write memory behind the CPU's back, which Rust
    /// references cannot express.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: forwarded to the caller's guarantee, as `Frames::as_slice` requires.
        unsafe { self.frames.as_slice() }
    }

    /// The backing memfd, for the export and import code.
    pub(crate) fn frames(&self) -> &Frames {
        &self.frames
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), MmError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(MmError::OutOfBounds {
                offset,
                len,
                size: self.size(),
            }),
        }
    }

    /// The physical ranges behind BO bytes `offset..offset + len` (already bounds-checked), in
    /// buffer order, physically adjacent pieces merged.
    pub(crate) fn phys_ranges(&self, offset: u64, len: u64) -> Vec<PhysSegment> {
        let pages = self.frames.pages();
        let mut out: Vec<PhysSegment> = Vec::new();
        let end = offset + len;
        let mut cur = offset;
        while cur < end {
            let in_page = cur & (PAGE_SIZE - 1);
            let n = (end - cur).min(PAGE_SIZE - in_page);
            let addr = PhysAddr(pages[(cur >> PAGE_SHIFT) as usize].0 + in_page);
            match out.last_mut() {
                Some(seg) if seg.addr.0 + seg.len == addr.0 => seg.len += n,
                _ => out.push(PhysSegment { addr, len: n }),
            }
            cur += n;
        }
        out
    }
}

// BOs, their handle tables and attachments are shared between threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Bo>();
    send_sync::<BoHandles>();
    send_sync::<BoAttachment>();
};

/// A BO size must be a non-zero multiple of the page size.
fn check_size(size: u64) -> Result<(), MmError> {
    if size == 0 {
        return Err(MmError::ZeroSize);
    }
    if !size.is_multiple_of(PAGE_SIZE) {
        return Err(MmError::Misaligned {
            value: size,
            align: PAGE_SIZE,
        });
    }
    Ok(())
}
