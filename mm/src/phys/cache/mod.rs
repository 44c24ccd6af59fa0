//! Cache maintenance on physical ranges, for devices that do not snoop the CPU caches.
//!
//! Three operations on physical ranges, at 64-byte line granularity (every line the range
//! touches, even partly): [`PhysMem::clean`] (write back: CPU view -> RAM, what
//! `sync_for_device` does for `ToDevice`/`Bidirectional`), [`PhysMem::invalidate`] (discard: RAM
//! -> CPU view, what `sync_for_cpu` does for `FromDevice`/`Bidirectional`) and
//! [`PhysMem::clean_invalidate`]. Each issues one fence per call, never one per line, and returns
//! the number of lines it covered (Linux: arch/arm64/mm/dma-mapping.c `arch_sync_dma_for_device`,
//! arch/x86/mm/pat/set_memory.c `clflush_cache_range`).
//!
//! How they act depends on the [`CacheMode`] chosen when the [`PhysMem`] is built: real
//! instructions on the CPU mapping ([`native`]), or copies between the CPU view and the RAM
//! shadow (`shadow.rs`), which makes a missing sync visible as stale data. This module decides
//! nothing about *when* to sync; the DMA layer does.

pub mod native;

use super::shadow;
use super::{Chunk, FrameView, PhysAddr, PhysMem, Tally};
use crate::MmError;

/// Size in bytes of the cache line that maintenance works in (64 on every x86-64 CPU and
/// nearly every Arm core; a CPU with smaller lines gets several instructions per 64-byte line).
pub const LINE_SIZE: u64 = 64;

/// How cache maintenance and non-coherent device accesses behave in a [`PhysMem`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum CacheMode {
    /// One view of memory: devices see what the CPU sees, and the sync operations run the CPU's
    /// real cache instructions ([`native`]) on the CPU mapping. For benchmarks and for running
    /// against real hardware behaviour; cannot show a missing sync.
    Native,
    /// Two views: the CPU view (memfd bytes) and RAM (a shadow copy) that non-coherent devices
    /// read and write. Only the sync operations move bytes between them, a whole line at a
    /// time, so a missing sync shows as stale data. The default, since it is the test oracle.
    #[default]
    Model,
}

/// Number of [`LINE_SIZE`] lines that `addr..addr + len` touches (0 when `len == 0`). A range
/// that would pass 2^64 is counted up to 2^64.
pub const fn lines_touched(addr: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let first = addr / LINE_SIZE;
    let last = match addr.checked_add(len - 1) {
        Some(end) => end,
        None => u64::MAX,
    } / LINE_SIZE;
    last - first + 1
}

/// The operation to run on each line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Clean,
    Invalidate,
    CleanInvalidate,
}

impl PhysMem {
    /// Cleans (writes back) every 64-byte line that `addr..addr + len` touches: afterwards a
    /// non-coherent device reads what the CPU wrote. The `sync_for_device` of a `ToDevice` or
    /// `Bidirectional` streaming mapping. Returns the number of lines.
    ///
    /// [`CacheMode::Native`]: `clwb`/`clflushopt`/`clflush` or `dc cvac` per line, one fence.
    /// [`CacheMode::Model`]: copies each line from the CPU view to RAM.
    ///
    /// `len == 0` touches nothing, issues no fence and returns 0.
    ///
    /// # Errors
    /// - [`MmError::BadPhysAddr`]: a touched line is in no allocated frame (nothing was done).
    /// - [`MmError::AddrOverflow`]: the range wraps past 2^64.
    pub fn clean(&self, addr: PhysAddr, len: u64) -> Result<u64, MmError> {
        self.frames().clean(addr, len)
    }

    /// Invalidates every 64-byte line that `addr..addr + len` touches: afterwards the CPU reads
    /// what a non-coherent device wrote to RAM. The `sync_for_cpu` of a `FromDevice` or
    /// `Bidirectional` streaming mapping. Returns the number of lines.
    ///
    /// [`CacheMode::Native`]: `clflushopt`/`clflush` or `dc civac` per line (userspace cannot
    /// discard without writing back), one fence. [`CacheMode::Model`]: copies each line from
    /// RAM to the CPU view, so CPU writes to those lines that were never cleaned are lost,
    /// as the DMA API allows.
    ///
    /// # Errors
    /// As [`PhysMem::clean`].
    pub fn invalidate(&self, addr: PhysAddr, len: u64) -> Result<u64, MmError> {
        self.frames().invalidate(addr, len)
    }

    /// Cleans, then invalidates, every 64-byte line that `addr..addr + len` touches:
    /// afterwards RAM and the CPU view agree on the CPU's bytes. Returns the number of lines.
    ///
    /// [`CacheMode::Native`]: `clflushopt`/`clflush` or `dc civac`, one fence.
    /// [`CacheMode::Model`]: copies each line from the CPU view to RAM.
    ///
    /// # Errors
    /// As [`PhysMem::clean`].
    pub fn clean_invalidate(&self, addr: PhysAddr, len: u64) -> Result<u64, MmError> {
        self.frames().clean_invalidate(addr, len)
    }
}

impl FrameView<'_> {
    /// [`PhysMem::clean`] under this view's lock (counted when the view drops).
    pub(crate) fn clean(&self, addr: PhysAddr, len: u64) -> Result<u64, MmError> {
        self.maintain(Op::Clean, addr, len)
    }

    /// [`PhysMem::invalidate`] under this view's lock (counted when the view drops).
    pub(crate) fn invalidate(&self, addr: PhysAddr, len: u64) -> Result<u64, MmError> {
        self.maintain(Op::Invalidate, addr, len)
    }

    /// [`PhysMem::clean_invalidate`] under this view's lock (counted when the view drops).
    pub(crate) fn clean_invalidate(&self, addr: PhysAddr, len: u64) -> Result<u64, MmError> {
        self.maintain(Op::CleanInvalidate, addr, len)
    }

    fn maintain(&self, op: Op, addr: PhysAddr, len: u64) -> Result<u64, MmError> {
        if len == 0 {
            return Ok(0);
        }
        let end = addr
            .checked_add(len)
            .ok_or(MmError::AddrOverflow { addr, len })?;
        // Widen to whole lines; a frame holds whole lines, so this touches no other frame.
        let start = addr.align_down(LINE_SIZE);
        let end_up = end.0.div_ceil(LINE_SIZE) * LINE_SIZE;
        let lines = (end_up - start.0) / LINE_SIZE;
        let native = self.cache_mode() == CacheMode::Native;
        self.for_each_chunk(start, end_up - start.0, |c: Chunk| {
            match (native, c.shadow) {
                (false, Some(ram)) => {
                    let (src, dst) = match op {
                        Op::Clean | Op::CleanInvalidate => (c.cpu.cast_const(), ram),
                        Op::Invalidate => (ram.cast_const(), c.cpu),
                    };
                    // SAFETY: both views of the same frame are valid for `c.len` bytes while
                    // the frame table is held, and live in different mappings.
                    unsafe { shadow::copy_lines(src, dst, c.len) };
                }
                _ => {
                    // SAFETY: `c.cpu` is mapped for `c.len` bytes while the frame table is held.
                    unsafe {
                        match op {
                            Op::Clean => native::clean_lines(c.cpu, c.len),
                            Op::Invalidate => native::invalidate_lines(c.cpu, c.len),
                            Op::CleanInvalidate => native::clean_invalidate_lines(c.cpu, c.len),
                        }
                    };
                }
            }
        })?;
        if native {
            native::fence();
        }
        let t = &self.tally;
        let (calls, cleaned, invalidated) = match op {
            Op::Clean => (&t.clean_calls, lines, 0),
            Op::Invalidate => (&t.invalidate_calls, 0, lines),
            Op::CleanInvalidate => (&t.clean_invalidate_calls, lines, lines),
        };
        Tally::add(calls, 1);
        Tally::add(&t.lines_cleaned, cleaned);
        Tally::add(&t.lines_invalidated, invalidated);
        Tally::add(&t.fences, 1);
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_touched_counts_partial_lines() {
        assert_eq!(lines_touched(0, 0), 0);
        assert_eq!(lines_touched(0, 1), 1);
        assert_eq!(lines_touched(0, 64), 1);
        assert_eq!(lines_touched(0, 65), 2);
        assert_eq!(lines_touched(63, 2), 2);
        assert_eq!(lines_touched(4096, 4096), 64);
        assert_eq!(lines_touched(u64::MAX - 1, 10), 1);
    }
}
