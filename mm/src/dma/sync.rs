//! Ownership transfer of mapped bytes: the cache maintenance and bounce copies of
//! `sync_for_device` / `sync_for_cpu`, in the order kernel/dma/direct.h and swiotlb.c do them.
//!
//! For the device: copy original -> bounce buffer (at map for every direction, since
//! swiotlb_tbl_map_single bounces unconditionally since the 5.19 info-leak fix; afterwards only
//! for `ToDevice`/`Bidirectional`), then clean the lines the device will read if it is not
//! coherent (arm64 `arch_sync_dma_for_device` cleans for every direction). For the CPU:
//! invalidate the lines the device wrote if it is not coherent and the direction is not
//! `ToDevice` (`arch_sync_dma_for_cpu`), then copy bounce buffer -> original for
//! `FromDevice`/`Bidirectional`.

use super::registry::Seg;
use super::stats::Counters;
use super::types::DmaDirection;
use super::DmaOps;
use crate::phys::{FrameView, PhysAddr};
use crate::MmError;

/// Bytes `[off, off + n)` of one segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    pub(crate) seg: Seg,
    pub(crate) off: u64,
    pub(crate) n: u64,
}

impl Piece {
    pub(crate) fn whole(seg: &Seg) -> Piece {
        Piece {
            seg: *seg,
            off: 0,
            n: seg.len,
        }
    }
}

/// Copies `n` bytes from `from` to `to` through the CPU's view (a memcpy in the kernel).
fn cpu_copy(
    counters: &Counters,
    mem: &FrameView,
    from: PhysAddr,
    to: PhysAddr,
    n: u64,
) -> Result<(), MmError> {
    mem.cpu_copy(from, to, n)?;
    Counters::add(&counters.bounced_bytes, n);
    Ok(())
}

/// Hands `pieces` to the device. `at_map`: the implicit sync of a map (bounce for every
/// direction). Counts one sync if any piece needed work.
pub(crate) fn for_device(
    ops: &DmaOps,
    pieces: &[Piece],
    dir: DmaDirection,
    at_map: bool,
    skip_cpu_sync: bool,
) -> Result<(), MmError> {
    let mut bytes = 0;
    // One hold of the frame table for every piece: a scattered buffer is one piece per page.
    let mem = ops.phys.frames();
    for p in pieces {
        let mut did = false;
        if let Some(b) = p.seg.bounce {
            if at_map || dir.device_reads() {
                let (from, to) = (p.seg.pa + p.off, b + p.off);
                cpu_copy(&ops.counters, &mem, from, to, p.n)?;
                did = true;
            }
        }
        // DMA_ATTR_SKIP_CPU_SYNC skips the cache maintenance, never the bounce copy (as
        // swiotlb_tbl_map_single bounces whatever the attributes).
        if !ops.dev.coherent && !skip_cpu_sync {
            mem.clean(p.seg.target() + p.off, p.n)?;
            did = true;
        }
        if did {
            bytes += p.n;
        }
    }
    if bytes > 0 {
        Counters::add(&ops.counters.syncs_for_device, 1);
        Counters::add(&ops.counters.bytes_synced_for_device, bytes);
    }
    Ok(())
}

/// Hands `pieces` back to the CPU. Counts one sync if any piece needed work.
pub(crate) fn for_cpu(ops: &DmaOps, pieces: &[Piece], dir: DmaDirection) -> Result<(), MmError> {
    let mut bytes = 0;
    // One hold of the frame table for every piece, as in `for_device`.
    let mem = ops.phys.frames();
    for p in pieces {
        let mut did = false;
        if !ops.dev.coherent && dir != DmaDirection::ToDevice {
            mem.invalidate(p.seg.target() + p.off, p.n)?;
            did = true;
        }
        if let Some(b) = p.seg.bounce {
            if dir.device_writes() {
                let (from, to) = (b + p.off, p.seg.pa + p.off);
                cpu_copy(&ops.counters, &mem, from, to, p.n)?;
                did = true;
            }
        }
        if did {
            bytes += p.n;
        }
    }
    if bytes > 0 {
        Counters::add(&ops.counters.syncs_for_cpu, 1);
        Counters::add(&ops.counters.bytes_synced_for_cpu, bytes);
    }
    Ok(())
}
