//! `Frames`: one allocation of physical frames and the memory behind them.

use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use super::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use super::backing::Backing;
use super::mem::PhysMem;
use crate::MmError;

/// A physically contiguous run of bytes: one scatter-gather segment before DMA mapping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PhysSegment {
    /// First byte of the run.
    pub addr: PhysAddr,
    /// Length in bytes (a multiple of [`PAGE_SIZE`] for the segments of [`Frames`]).
    pub len: u64,
}

/// An allocation of 4 KiB frames and its backing memory: one sealed memfd mapped shared into
/// this process. Page `i` of the buffer (bytes `i * PAGE_SIZE ..`) is held by frame
/// `pages()[i]`; frames are in buffer order, not address order.
///
/// Dropping it removes the frames from the frame table and returns them to the allocator; the
/// memfd stays open while a duplicate of it (an exported fd) exists elsewhere.
pub struct Frames {
    phys: Arc<PhysMem>,
    backing: Arc<Backing>,
    pages: Vec<PhysAddr>,
    /// [`Frames::segments`], computed once: the pages never change, and every DMA map of the
    /// buffer (each attachment of a BO) shares this list.
    segments: OnceLock<Arc<[PhysSegment]>>,
}

impl core::fmt::Debug for Frames {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frames")
            .field("len_bytes", &self.len_bytes())
            .field(
                "segments",
                &(1 + self
                    .pages
                    .windows(2)
                    .filter(|w| w[0].0 + PAGE_SIZE != w[1].0)
                    .count()),
            )
            .field("first", &self.pages.first())
            .finish()
    }
}

impl Frames {
    pub(crate) fn new(phys: Arc<PhysMem>, backing: Arc<Backing>, pages: Vec<PhysAddr>) -> Frames {
        Frames {
            phys,
            backing,
            pages,
            segments: OnceLock::new(),
        }
    }

    /// The physical memory these frames belong to.
    pub fn phys(&self) -> &Arc<PhysMem> {
        &self.phys
    }

    /// Physical address of each 4 KiB page, in buffer order (page-aligned).
    pub fn pages(&self) -> &[PhysAddr] {
        &self.pages
    }

    /// Number of 4 KiB pages (at least 1).
    pub fn page_count(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Size of the buffer in bytes: `page_count() * PAGE_SIZE`.
    pub fn len_bytes(&self) -> u64 {
        self.backing.len()
    }

    /// The physical address of byte `offset` of the buffer.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`]: `offset >= len_bytes()`.
    pub fn phys_addr(&self, offset: u64) -> Result<PhysAddr, MmError> {
        let page = self
            .pages
            .get((offset >> PAGE_SHIFT) as usize)
            .filter(|_| offset < self.len_bytes())
            .ok_or(MmError::OutOfBounds {
                offset,
                len: 1,
                size: self.len_bytes(),
            })?;
        Ok(PhysAddr(page.0 + (offset & (PAGE_SIZE - 1))))
    }

    /// The buffer as physically contiguous runs, in buffer order: adjacent pages whose frames
    /// are adjacent too are merged into one segment.
    pub fn segments(&self) -> Vec<PhysSegment> {
        self.shared_segments().to_vec()
    }

    /// [`Frames::segments`] as a shared list, built on first use.
    pub(crate) fn shared_segments(&self) -> Arc<[PhysSegment]> {
        let segs = self.segments.get_or_init(|| {
            let mut out: Vec<PhysSegment> = Vec::new();
            for &pa in &self.pages {
                match out.last_mut() {
                    Some(seg) if seg.addr.0 + seg.len == pa.0 => seg.len += PAGE_SIZE,
                    _ => out.push(PhysSegment {
                        addr: pa,
                        len: PAGE_SIZE,
                    }),
                }
            }
            out.into()
        });
        Arc::clone(segs)
    }

    /// Whether all pages form one physically contiguous run.
    pub fn is_contiguous(&self) -> bool {
        self.pages.windows(2).all(|w| w[0].0 + PAGE_SIZE == w[1].0)
    }

    /// Start of the CPU mapping (page-aligned, `len_bytes()` bytes, readable and writable) while
    /// `self` lives. Bytes written through it are CPU-view writes.
    pub fn cpu_ptr(&self) -> NonNull<u8> {
        // A successful mmap never returns null; the fallback keeps this total.
        NonNull::new(self.backing.cpu_ptr(0)).unwrap_or(NonNull::dangling())
    }

    /// The backing memfd (sealed against shrinking and growing, `F_SEAL_SEAL` not set), to
    /// export with `try_clone_to_owned`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.backing.fd().as_fd()
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), MmError> {
        let len = len as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.len_bytes() => Ok(()),
            _ => Err(MmError::OutOfBounds {
                offset,
                len,
                size: self.len_bytes(),
            }),
        }
    }

    /// Copies `buf.len()` bytes at buffer offset `offset` out of the CPU view.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`]: the range runs past `len_bytes()`; `buf` is untouched.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MmError> {
        self.check(offset, buf.len())?;
        // SAFETY: `offset + buf.len() <= len_bytes()`, so the source lies in the mapping, which
        // lives as long as `self`; `copy` tolerates overlap with `buf`.
        unsafe {
            core::ptr::copy(self.backing.cpu_ptr(offset), buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    /// Copies `data` into the CPU view at buffer offset `offset`.
    ///
    /// # Errors
    /// [`MmError::OutOfBounds`]: the range runs past `len_bytes()`; nothing is written.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MmError> {
        self.check(offset, data.len())?;
        // SAFETY: as in `read`; the mapping is writable (MAP_SHARED, PROT_WRITE).
        unsafe {
            core::ptr::copy(data.as_ptr(), self.backing.cpu_ptr(offset), data.len());
        }
        Ok(())
    }

    /// The CPU view as a slice.
    ///
    /// # Safety
    /// While the slice lives nothing may write the buffer: no [`Frames::write`], no write
    /// through [`PhysMem::cpu_write`]/[`PhysMem::device_write`] at its frames, no other process
    /// writing the memfd. (Real DMA memory is written behind the CPU's back; Rust references
    /// cannot express that.)
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len_bytes()` readable bytes living as long as `self`; the
        // caller guarantees nobody writes it meanwhile.
        unsafe { core::slice::from_raw_parts(self.backing.cpu_ptr(0), self.len_bytes() as usize) }
    }

    /// The CPU view as a mutable slice.
    ///
    /// # Safety
    /// While the slice lives nothing else may read or write the buffer's bytes (see
    /// [`Frames::as_slice`]).
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` excludes other accesses through `self`, the
        // caller guarantees the rest.
        unsafe {
            core::slice::from_raw_parts_mut(self.backing.cpu_ptr(0), self.len_bytes() as usize)
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.phys.release(&self.pages);
    }
}
