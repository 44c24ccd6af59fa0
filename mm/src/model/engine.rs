//! The DMA engine of the simulated device: reads, writes and copies at device VAs.
//!
//! Every access goes, page by page: device TLB (or a walk of the VM's tables with the software
//! walker of devmmu-pagetable, reading table memory through the walker's view of memory) ->
//! bus address -> the bus ([`DmaOps::bus_to_phys`]: identity, or the system IOMMU's tables) ->
//! physical memory, in the coherent view (CPU caches snooped) or the non-coherent one (RAM only)
//! as the hardware is configured.

use std::sync::Arc;

use devmmu_pagetable::{walk, DmaAddr, Entry, Format, Iova, Prot, PteWord, TableReader, WalkFault};
use parking_lot::Mutex;
use serde::Serialize;

use super::fault::{Access, Fault, FaultReason};
use super::tlb::{Tlb, TlbEntry, WalkCacheEntry};
use super::SimMmu;
use crate::device::{dispatch_format, Device};
use crate::dma::DmaOps;
use crate::phys::{PhysMem, PAGE_SIZE};
use crate::vm::{MmuContext, Vm};

/// Counters of the simulated device.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug, Serialize)]
pub struct SimStats {
    /// Bytes the device read from memory.
    pub bytes_read: u64,
    /// Bytes the device wrote to memory.
    pub bytes_written: u64,
    /// Table walks (TLB misses).
    pub walks: u64,
    /// IOPTEs the walker read.
    pub pte_reads: u64,
    /// Faults recorded (including dummy-page accesses).
    pub faults: u64,
    /// Leaves the MMU set writable-dirty in table memory (hardware dirty-state update on a
    /// write through a writable-clean leaf, in a VM with dirty tracking).
    pub dirty_updates: u64,
}

/// The simulated device: its MMU ([`SimMmu`]) and its DMA engine, on an attached [`Device`].
pub struct SimDevice {
    device: Arc<Device>,
    mmu: Arc<SimMmu>,
    stats: Mutex<SimStats>,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("device", &self.device)
            .field("mmu", &self.mmu.config())
            .finish()
    }
}

/// Reads table memory the way the walker does: by bus address, through the bus, in the walker's
/// view of memory; upper-level entries through the walk cache (a hit returns the cached
/// descriptor without reading memory, a table descriptor read from memory is cached), so a
/// table unlinked without a walk invalidation is still walked through.
struct WalkReader<'a> {
    ops: &'a DmaOps,
    phys: &'a PhysMem,
    coherent: bool,
    reads: std::cell::Cell<u64>,
    /// The walk: address space, IOVA, and the level the next read is at (walks start at 0).
    asid: u32,
    iova: u64,
    level: std::cell::Cell<usize>,
    /// The format: its levels, whether a raw entry of a level is a table descriptor, and the
    /// log2 of the IOVA span of an entry of a level.
    levels: usize,
    is_table: fn(usize, u64) -> bool,
    shift: fn(usize) -> u32,
    tlb: &'a Mutex<Tlb>,
    /// The last entry read (bus address, raw value): after a successful walk, the leaf.
    last: std::cell::Cell<(DmaAddr, u64)>,
}

impl TableReader for WalkReader<'_> {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let level = self.level.get();
        self.level.set(level + 1);
        let upper = level + 1 < self.levels;
        if upper {
            if let Some(raw) = self.tlb.lock().walk_lookup(self.asid, addr) {
                return Some(raw);
            }
        }
        self.reads.set(self.reads.get() + 1);
        let pa = self.ops.bus_to_phys(addr, bytes as u64, false).ok()?;
        let mut b = [0u8; 8];
        self.phys
            .device_read(pa, &mut b[..bytes], self.coherent)
            .ok()?;
        let raw = u64::from_le_bytes(b);
        self.last.set((addr, raw));
        if upper && (self.is_table)(level, raw) {
            let size = 1u64 << (self.shift)(level);
            self.tlb.lock().walk_insert(WalkCacheEntry {
                asid: self.asid,
                iova: self.iova & !(size - 1),
                size,
                pte_addr: addr,
                raw,
            });
        }
        Some(raw)
    }
}

/// Whether `raw` at `level` is a table descriptor of format `F` (for the walk cache).
fn is_table_of<F: Format>(level: usize, raw: u64) -> bool {
    matches!(
        F::decode(level, <F::Pte as PteWord>::from_u64(raw)),
        Entry::Table(_)
    )
}

/// Whether `raw` is a writable-clean leaf of format `F` (the hardware must set it dirty before
/// a write through it: [`Format::is_writable_clean`]).
fn writable_clean_of<F: Format>(raw: u64) -> bool {
    F::is_writable_clean(F::Pte::from_u64(raw))
}

/// Leaf `raw` of format `F` made writable-dirty, as the hardware update writes it back
/// ([`Format::with_dirty_set`]).
fn dirty_set_of<F: Format>(raw: u64) -> u64 {
    F::with_dirty_set(F::Pte::from_u64(raw)).to_u64()
}

impl SimDevice {
    /// The device model of `device`, whose TLB invalidation hook must be `mmu` (pass the same
    /// `Arc<SimMmu>` to [`Device::attach`]).
    pub fn new(device: Arc<Device>, mmu: Arc<SimMmu>) -> SimDevice {
        SimDevice {
            device,
            mmu,
            stats: Mutex::new(SimStats::default()),
        }
    }

    /// The MMU (TLB and fault log).
    pub fn mmu(&self) -> &Arc<SimMmu> {
        &self.mmu
    }

    /// The attached device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        *self.stats.lock()
    }

    /// Translates `iova` in `vm` for `access` as the hardware would: TLB first, else a walk
    /// (whose result is cached). Returns the bus address of the byte and the bytes left in its
    /// leaf. A dummy-page hit (Intel IPU) is returned as a translation *and* reported through
    /// `Err` by the accessors, not here.
    pub fn translate(&self, vm: &Vm, iova: Iova, access: Access) -> Result<(DmaAddr, u64), Fault> {
        let ctx = vm.context();
        let tally = StatsTally::new(self);
        tally
            .translate(&ctx, vm.dirty_tracking(), iova, access)
            .map(|(d, left, _)| (d, left))
    }
}

/// Counters of one [`SimDevice`] call, added to its [`SimStats`] once, when the call ends (also
/// on a fault), instead of under the stats lock for every page.
struct StatsTally<'a> {
    dev: &'a SimDevice,
    pending: std::cell::Cell<SimStats>,
}

impl Drop for StatsTally<'_> {
    fn drop(&mut self) {
        let p = self.pending.get();
        if p != SimStats::default() {
            let mut s = self.dev.stats.lock();
            s.bytes_read += p.bytes_read;
            s.bytes_written += p.bytes_written;
            s.walks += p.walks;
            s.pte_reads += p.pte_reads;
            s.faults += p.faults;
            s.dirty_updates += p.dirty_updates;
        }
    }
}

impl<'a> StatsTally<'a> {
    fn new(dev: &'a SimDevice) -> StatsTally<'a> {
        StatsTally {
            dev,
            pending: std::cell::Cell::new(SimStats::default()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut SimStats)) {
        let mut p = self.pending.get();
        f(&mut p);
        self.pending.set(p);
    }

    /// Records `f` in the fault log and counts it.
    fn record(&self, f: Fault) -> Fault {
        self.dev.mmu.record(f);
        self.update(|s| s.faults += 1);
        f
    }

    /// `hd`: the context has hardware dirty-state update on (SMMUv3 CD.TCR.HD: the VM has
    /// dirty tracking). Then a write through a writable-clean leaf sets it writable-dirty in
    /// table memory, atomically, before it completes, and the TLB caches the writable-dirty
    /// translation: later writes through that entry do not touch the table. A writable-clean
    /// leaf is cached without write permission, so that a write through it comes back here for
    /// the update (Arm ARM D8.4.6 "Hardware management of the dirty state"; SMMUv3 IHI 0070
    /// 3.13). Without `hd` a leaf is what it decodes as.
    fn translate(
        &self,
        ctx: &MmuContext,
        hd: bool,
        iova: Iova,
        access: Access,
    ) -> Result<(DmaAddr, u64, bool), Fault> {
        let dev = self.dev;
        let fault = |reason| Fault {
            asid: ctx.asid,
            iova,
            access,
            reason,
        };
        let write = access == Access::Write;
        let cached = dev.mmu.tlb().lock().lookup(ctx.asid, iova.0);
        let entry = match cached {
            // A write through a cached read-only entry of a VM with dirty tracking: the leaf may
            // be writable-clean, which only a fresh fetch of the descriptor can tell (and
            // update). The stale entry is replaced, not kept beside the new one.
            Some(e) if hd && write && !e.prot.contains(Prot::WRITE) => {
                dev.mmu.tlb().lock().forget(&e);
                None
            }
            other => other,
        };
        let entry = match entry {
            Some(e) => e,
            None => {
                let ops = dev.device.dma_ops();
                let (levels, is_table, shift, clean, set_dirty) = dispatch_format!(ctx.format, F => (
                    F::LEVELS,
                    is_table_of::<F> as fn(usize, u64) -> bool,
                    F::level_shift as fn(usize) -> u32,
                    writable_clean_of::<F> as fn(u64) -> bool,
                    dirty_set_of::<F> as fn(u64) -> u64,
                ));
                let reader = WalkReader {
                    ops,
                    phys: ops.phys(),
                    coherent: dev.mmu.config().coherent_walk,
                    reads: std::cell::Cell::new(0),
                    asid: ctx.asid,
                    iova: iova.0,
                    level: std::cell::Cell::new(0),
                    levels,
                    is_table,
                    shift,
                    tlb: dev.mmu.tlb(),
                    last: std::cell::Cell::new((DmaAddr(0), 0)),
                };
                let r = dispatch_format!(ctx.format, F => walk::<F, _>(&reader, ctx.root, iova));
                self.update(|s| {
                    s.walks += 1;
                    s.pte_reads += reader.reads.get();
                });
                let t = r.map_err(|w| {
                    fault(match w {
                        WalkFault::AddressSize { .. } => FaultReason::AddressSize,
                        WalkFault::Translation { level, .. } => FaultReason::Translation { level },
                        WalkFault::WalkAbort { pte_addr, .. } => {
                            FaultReason::WalkAbort { pte_addr }
                        }
                    })
                })?;
                let mut prot = t.prot;
                let (pte_addr, raw) = reader.last.get();
                // Without `hd` the leaf is what it decodes as: the driver writes the
                // dirty-state encoding only into VMs with dirty tracking (on Arm a DBM leaf
                // without HD would be read-only; on AMD v1 / VT-d a writable leaf stays
                // writable, its D bit untouched).
                if hd && clean(raw) {
                    if write {
                        // The hardware update: AP[2] cleared (Arm), in one atomic
                        // read-modify-write of the descriptor, only if it is still
                        // writable-clean.
                        let updated = ops
                            .bus_to_phys(pte_addr, 8, true)
                            .ok()
                            .and_then(|pa| {
                                ops.phys()
                                    .device_update_u64(pa, dev.mmu.config().coherent_walk, |v| {
                                        clean(v).then(|| set_dirty(v))
                                    })
                                    .ok()
                            })
                            .ok_or(fault(FaultReason::WalkAbort { pte_addr }))?;
                        self.update(|s| s.dirty_updates += 1);
                        if !clean(updated) {
                            // Changed since the walk read it (unmapped, or made read-only):
                            // the write is not allowed on what the walk saw.
                            prot.remove(Prot::WRITE);
                        }
                    } else {
                        // Cached writable-clean: a write through it must come back for the
                        // update.
                        prot.remove(Prot::WRITE);
                    }
                }
                let e = TlbEntry {
                    asid: ctx.asid,
                    iova: t.leaf_iova.0,
                    size: t.leaf_size,
                    dma: DmaAddr(t.dma.0 - (iova.0 - t.leaf_iova.0)),
                    prot,
                };
                let mut tlb = dev.mmu.tlb().lock();
                if let Some(old) = tlb.note_walk(&e) {
                    return Err(fault(FaultReason::TlbConflict {
                        block: Iova(old.iova),
                        size: old.size,
                    }));
                }
                tlb.insert(e);
                e
            }
        };
        let need = match access {
            Access::Read => Prot::READ,
            Access::Write => Prot::WRITE,
        };
        if !entry.prot.contains(need) {
            return Err(fault(FaultReason::Permission));
        }
        let off = iova.0 - entry.iova;
        let dummy = ctx.dummy_page == Some(entry.dma);
        Ok((entry.dma + off, entry.size - off, dummy))
    }
}

/// Largest piece the copy engine of [`SimDevice::dma_copy`] moves at once, in bytes.
pub const COPY_CHUNK: u64 = 64 * 1024;

impl SimDevice {
    /// Writes `data` at `iova` of `vm` through the MMU.
    ///
    /// Errors: the first [`Fault`], also recorded in the fault log; bytes before it were
    /// written. With the Intel IPU format an unbound IOVA is not a fault on the hardware: the
    /// bytes go to the dummy page, the access completes, and a [`FaultReason::DummyPage`] record
    /// is returned as `Err` so the caller can tell.
    pub fn dma_write(&self, vm: &Vm, iova: Iova, data: &[u8]) -> Result<(), Fault> {
        self.access(
            vm,
            iova,
            data.len() as u64,
            Access::Write,
            |pa, range, coherent| {
                let phys = self.device.phys();
                phys.device_write(pa, &data[range], coherent)
            },
        )
    }

    /// Reads `buf.len()` bytes at `iova` of `vm` through the MMU. Errors as
    /// [`SimDevice::dma_write`].
    pub fn dma_read(&self, vm: &Vm, iova: Iova, buf: &mut [u8]) -> Result<(), Fault> {
        let len = buf.len() as u64;
        let cell = std::cell::RefCell::new(buf);
        self.access(vm, iova, len, Access::Read, |pa, range, coherent| {
            let phys = self.device.phys();
            phys.device_read(pa, &mut cell.borrow_mut()[range], coherent)
        })
    }

    /// Copies `len` bytes from `src` to `dst` in `vm`, as a copy engine does: through a bounce
    /// buffer of its own of at most [`COPY_CHUNK`] bytes, chunk by chunk, backwards when the
    /// destination overlaps the source from above (so overlapping copies behave as `memmove`).
    /// Any `len` is accepted: the engine's buffer never grows past one chunk.
    ///
    /// Errors as [`SimDevice::dma_write`]: the first fault that stops the copy (bytes of
    /// earlier chunks were copied), else the first dummy-page record (Intel IPU format: the
    /// copy completed, reading or writing the dummy page somewhere).
    pub fn dma_copy(&self, vm: &Vm, src: Iova, dst: Iova, len: u64) -> Result<(), Fault> {
        // A range that leaves the IOVA space faults where it leaves it, before anything moves
        // (chunk offsets must never wrap around to valid addresses).
        let limit = 1u64 << vm.device().config().mmu.iova_bits();
        for (start, access) in [(src, Access::Read), (dst, Access::Write)] {
            if start.0.checked_add(len).is_none_or(|end| end > limit) {
                let f = Fault {
                    asid: vm.context().asid,
                    iova: Iova(start.0.max(limit)),
                    access,
                    reason: FaultReason::AddressSize,
                };
                self.mmu.record(f);
                return Err(f);
            }
        }
        let backwards = dst.0 > src.0 && dst.0 - src.0 < len;
        let mut buf = vec![0u8; len.min(COPY_CHUNK) as usize];
        let mut dummy: Option<Fault> = None;
        let mut note = |r: Result<(), Fault>| -> Result<(), Fault> {
            match r {
                Err(f) if f.reason == FaultReason::DummyPage => {
                    dummy.get_or_insert(f);
                    Ok(())
                }
                other => other,
            }
        };
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(COPY_CHUNK);
            let off = if backwards { len - done - n } else { done };
            let chunk = &mut buf[..n as usize];
            note(self.dma_read(vm, Iova(src.0 + off), chunk))?;
            note(self.dma_write(vm, Iova(dst.0 + off), chunk))?;
            done += n;
        }
        dummy.map_or(Ok(()), Err)
    }

    fn access(
        &self,
        vm: &Vm,
        iova: Iova,
        len: u64,
        access: Access,
        mut op: impl FnMut(
            crate::phys::PhysAddr,
            std::ops::Range<usize>,
            bool,
        ) -> Result<(), crate::MmError>,
    ) -> Result<(), Fault> {
        let ctx = vm.context();
        let hd = vm.dirty_tracking();
        let tally = StatsTally::new(self);
        let coherent = self.mmu.config().coherent;
        let write = access == Access::Write;
        let mut done = 0u64;
        let mut dummy_fault = None;
        while done < len {
            let at = Iova(iova.0 + done);
            let (dma, leaf_left, dummy) = match tally.translate(&ctx, hd, at, access) {
                Ok(t) => t,
                Err(f) => return Err(tally.record(f)),
            };
            if dummy && dummy_fault.is_none() {
                dummy_fault = Some(tally.record(Fault {
                    asid: ctx.asid,
                    iova: at,
                    access,
                    reason: FaultReason::DummyPage,
                }));
            }
            // Never cross a 4 KiB page of bus space in one bus transaction.
            let page_left = PAGE_SIZE - (dma.0 % PAGE_SIZE);
            let n = (len - done).min(leaf_left).min(page_left);
            let ops = self.device.dma_ops();
            let pa = match ops.bus_to_phys(dma, n, write) {
                Ok(pa) => pa,
                Err(b) => {
                    return Err(tally.record(Fault {
                        asid: ctx.asid,
                        iova: at,
                        access,
                        reason: FaultReason::Bus(b),
                    }))
                }
            };
            let range = done as usize..(done + n) as usize;
            if op(pa, range, coherent).is_err() {
                let bus = crate::dma::BusFault {
                    dma,
                    reason: crate::dma::BusFaultReason::NoMemory { addr: pa },
                };
                return Err(tally.record(Fault {
                    asid: ctx.asid,
                    iova: at,
                    access,
                    reason: FaultReason::Bus(bus),
                }));
            }
            tally.update(|s| {
                if write {
                    s.bytes_written += n;
                } else {
                    s.bytes_read += n;
                }
            });
            done += n;
        }
        match dummy_fault {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}
