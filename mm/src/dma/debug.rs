//! DMA-API debugging, in the spirit of kernel/dma/debug.c (`CONFIG_DMA_API_DEBUG`).
//!
//! Owns the diagnostics of one device: typed reports of DMA-API misuse that the operations
//! detect and log here when [`Platform::debug`](super::Platform::debug) is on. A diagnostic is
//! never a panic and, by itself, never an error: an operation that can still do the right thing
//! (unmap with the recorded size and direction, sync the part of a range that is mapped) does it
//! and returns its normal result; one that cannot (unmap of an address that is not mapped) returns
//! an error *and* logs a diagnostic. This module must never change a mapping.

use devmmu_pagetable::DmaAddr;
use parking_lot::Mutex;

use super::stats::Counters;
use super::types::{DmaDirection, MappingKind};
use crate::phys::PhysAddr;

/// Diagnostics kept per device; later ones are counted in
/// [`DmaStats::diagnostics`](super::DmaStats::diagnostics) but dropped, as debug.c stops printing
/// after its error limit.
pub const MAX_DIAGNOSTICS: usize = 4096;

/// One detected misuse of the DMA API. Lengths are in bytes; `dma` is the address the caller
/// passed unless a field says otherwise.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DmaDiag {
    /// An unmap of an address with no live mapping of this device (debug.c: "device driver tries
    /// to free DMA memory it has not allocated"). The call also returned
    /// [`MmError::DmaNotMapped`](crate::MmError::DmaNotMapped).
    UnmapNotMapped {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// Direction passed (`None` for releases that take none, e.g. `unmap_sg`).
        dir: Option<DmaDirection>,
        /// The kind of release attempted.
        released_as: MappingKind,
    },
    /// An unmap whose length differs from the mapping's ("frees DMA memory with different
    /// size"). The whole mapping was unmapped, with its recorded length.
    UnmapWrongSize {
        /// The mapping's address.
        dma: DmaAddr,
        /// Length it was mapped with.
        mapped_len: u64,
        /// Length passed to the unmap.
        unmap_len: u64,
    },
    /// An unmap whose direction differs from the mapping's ("frees DMA memory with different
    /// direction"). The recorded direction was used for the cache maintenance.
    UnmapWrongDirection {
        /// The mapping's address.
        dma: DmaAddr,
        /// Direction it was mapped with.
        mapped_dir: DmaDirection,
        /// Direction passed to the unmap.
        unmap_dir: DmaDirection,
    },
    /// A release with the function of another kind ("frees DMA memory with wrong function").
    /// The mapping was left in place and the call returned
    /// [`MmError::DmaWrongKind`](crate::MmError::DmaWrongKind).
    UnmapWrongKind {
        /// The mapping's address.
        dma: DmaAddr,
        /// How it was mapped.
        mapped_as: MappingKind,
        /// The kind of release attempted.
        released_as: MappingKind,
    },
    /// A sync of an address no streaming mapping contains ("device driver tries to sync DMA
    /// memory it has not allocated"). The call also returned
    /// [`MmError::DmaNotMapped`](crate::MmError::DmaNotMapped).
    SyncNotMapped {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// Direction passed.
        dir: DmaDirection,
        /// `true` for a sync for the CPU, `false` for the device.
        for_cpu: bool,
    },
    /// A sync that starts inside a mapping but runs past its end ("device driver syncs DMA
    /// memory outside allocated range"). Only the mapped part was synced.
    SyncOutOfRange {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// `true` for a sync for the CPU.
        for_cpu: bool,
        /// The mapping's address.
        mapping_dma: DmaAddr,
        /// The mapping's length.
        mapping_len: u64,
    },
    /// A sync in a direction the mapping does not allow ("syncs DMA memory with different
    /// direction"), e.g. `sync_single_for_cpu(.., FromDevice)` on a `ToDevice` mapping. The
    /// mapping's own direction was used.
    SyncWrongDirection {
        /// Address passed.
        dma: DmaAddr,
        /// Length passed.
        len: u64,
        /// `true` for a sync for the CPU.
        for_cpu: bool,
        /// Direction of the mapping.
        mapped_dir: DmaDirection,
        /// Direction passed.
        sync_dir: DmaDirection,
    },
    /// A mapping released without [`DmaOps::mapping_error`](super::DmaOps::mapping_error) ever
    /// being asked about its address ("device driver failed to check map error"). Reported only
    /// with [`Platform::debug_strict_check`](super::Platform::debug_strict_check).
    MappingNotChecked {
        /// The mapping's address.
        dma: DmaAddr,
        /// Its length.
        len: u64,
        /// Its kind.
        kind: MappingKind,
    },
    /// CPU access, reported through [`DmaOps::check_cpu_access`](super::DmaOps::check_cpu_access),
    /// to bytes of a streaming mapping the device owns: mapped or synced for the device with
    /// `FromDevice`/`Bidirectional`, and not synced for the CPU since.
    CpuAccessWhileDeviceOwns {
        /// First byte accessed.
        pa: PhysAddr,
        /// Bytes accessed.
        len: u64,
        /// Whether the CPU writes.
        write: bool,
        /// Address of the mapping the device owns.
        mapping_dma: DmaAddr,
        /// Its direction.
        dir: DmaDirection,
    },
    /// Mappings still live when the device was detached ("device driver has pending DMA
    /// allocations while released from device").
    LeakAtDetach {
        /// What was still mapped.
        report: LeakReport,
    },
}

/// Mappings of one kind left at detach.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KindLeak {
    /// The kind.
    pub kind: MappingKind,
    /// Number of live mappings of that kind.
    pub mappings: u64,
    /// Their bytes (requested lengths; IOVA ranges by their size).
    pub bytes: u64,
}

/// What [`DmaOps::detach`](super::DmaOps::detach) found still mapped. Links inside an IOVA range
/// are part of that range and not counted separately.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct LeakReport {
    /// Number of live mappings.
    pub mappings: u64,
    /// Their total bytes.
    pub bytes: u64,
    /// The same per kind, in [`MappingKind`] order, kinds with no leak left out.
    pub by_kind: Vec<KindLeak>,
}

impl LeakReport {
    /// Whether nothing leaked.
    pub fn is_empty(&self) -> bool {
        self.mappings == 0
    }

    /// Adds one leaked mapping of `kind` and `bytes`.
    pub(crate) fn add(&mut self, kind: MappingKind, bytes: u64) {
        self.mappings += 1;
        self.bytes += bytes;
        match self.by_kind.binary_search_by(|k| k.kind.cmp(&kind)) {
            Ok(i) => {
                self.by_kind[i].mappings += 1;
                self.by_kind[i].bytes += bytes;
            }
            Err(i) => self.by_kind.insert(
                i,
                KindLeak {
                    kind,
                    mappings: 1,
                    bytes,
                },
            ),
        }
    }
}

/// The diagnostics log of one device.
#[derive(Debug)]
pub(crate) struct DebugLog {
    pub(crate) enabled: bool,
    pub(crate) strict_check: bool,
    diags: Mutex<Vec<DmaDiag>>,
}

impl DebugLog {
    pub(crate) fn new(enabled: bool, strict_check: bool) -> DebugLog {
        DebugLog {
            enabled,
            strict_check: enabled && strict_check,
            diags: Mutex::new(Vec::new()),
        }
    }

    /// Logs `diag` if debugging is on.
    pub(crate) fn report(&self, counters: &Counters, diag: DmaDiag) {
        if !self.enabled {
            return;
        }
        Counters::add(&counters.diagnostics, 1);
        let mut d = self.diags.lock();
        if d.len() < MAX_DIAGNOSTICS {
            d.push(diag);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<DmaDiag> {
        self.diags.lock().clone()
    }

    pub(crate) fn take(&self) -> Vec<DmaDiag> {
        core::mem::take(&mut *self.diags.lock())
    }
}
