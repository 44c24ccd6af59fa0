//! A driver for QEMU's `edu` PCI device (hw/misc/edu.c, 1234:11e8) that uses devmmu the way an
//! IPU driver does: the device's memory is managed by devmmu (BOs bound into a device VM, IOPTEs
//! holding the `DmaAddr`s the system DMA layer returned, table pages DMA-mapped themselves),
//! and every access the device makes goes through that device MMU.
//!
//! `edu` has no MMU: it is a DMA engine that copies between a bus address and its own 4 KiB
//! buffer ([`EDU_BUF`]). This driver gives it one in software, with real DMA: to translate a
//! device VA it runs devmmu's walker ([`MmuFormat::walk`](devmmu_mm::device::MmuFormat::walk)) with a reader that fetches **each
//! table entry by DMA** through the real IOMMU (entry → edu buffer → a host-visible bounce page),
//! then moves the data by DMA to or from the translated bus address. So a table page or a
//! buffer the DMA layer did not map is a DMAR fault of the real IOMMU, not a software check.
//!
//! Registers (BAR0, edu.c): `0x80` DMA source, `0x88` destination, `0x90` count, `0x98` command
//! (bit 0 start/busy, bit 1 direction: 0 bus → edu buffer, 1 edu buffer → bus). The device masks
//! bus addresses to 28 bits and completes a DMA about 100 ms (virtual time) after the command;
//! a transfer whose buffer side leaves `[0x40000, 0x41000)` aborts QEMU (`hw_error`), which is
//! why every transfer is checked here first.
//!
//! An IOMMU fault is not reported by the device: the IOMMU refuses the access, records a DMAR
//! fault (the guest kernel logs it), a refused read delivers zeros (QEMU's unassigned memory)
//! and a refused write lands nowhere. The walker therefore sees a refused entry fetch as a zero
//! entry: invalid on ARM LPAE (a translation fault), a pointer to bus address 0 on the IPU
//! format (which has no valid bit, so the next access faults in the IOMMU too, as on the real
//! hardware). Tests look for the faults in the kernel log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devmmu_mm::device::DeviceTlb;
use devmmu_mm::dma::{CoherentBuffer, DmaOps};
use devmmu_mm::vfio::VfioDevice;
use devmmu_mm::vm::MmuContext;
use devmmu_mm::{DmaAddr, Iova, MmError, Prot};
use devmmu_pagetable::{TableReader, Translation, WalkFault};

/// PCI vendor and device id of `edu`.
pub const EDU_PCI_ID: (u16, u16) = (0x1234, 0x11e8);
/// Device address of the edu buffer (`DMA_START` in edu.c).
pub const EDU_BUF: u64 = 0x40000;
/// Size of the edu buffer in bytes (`DMA_SIZE`): the most one DMA moves.
pub const EDU_BUF_SIZE: u64 = 4096;
/// Bits of bus address the device emits (`dma_mask` in edu.c).
pub const EDU_DMA_BITS: u32 = 28;

const BAR0: u32 = 0;
const REG_ID: u64 = 0x00;
const REG_DMA_SRC: u64 = 0x80;
const REG_DMA_DST: u64 = 0x88;
const REG_DMA_COUNT: u64 = 0x90;
const REG_DMA_CMD: u64 = 0x98;
const CMD_RUN: u64 = 0x1;
const CMD_TO_BUS: u64 = 0x2;
/// How long a DMA may take before the driver gives up (edu takes ~100 ms of virtual time; TCG
/// under load can stretch that).
const DMA_TIMEOUT: Duration = Duration::from_secs(10);

/// What the edu driver reports.
#[derive(Debug, thiserror::Error)]
pub enum EduError {
    /// A devmmu call (VFIO region access, DMA mapping) failed.
    #[error(transparent)]
    Mm(#[from] MmError),
    /// The device at the address is not edu (`REG_ID` reads `id`).
    #[error("not an edu device: identification register reads {id:#x}")]
    NotEdu {
        /// What register 0 read.
        id: u32,
    },
    /// A DMA did not complete within the timeout.
    #[error("edu DMA did not complete within {0:?}")]
    Timeout(Duration),
    /// A transfer the device cannot make: `len` bytes (1..=4096), not crossing a page of the
    /// device VA, buffer side inside the edu buffer, bus address below 2^28.
    #[error("edu cannot transfer {len} bytes at bus address {dma}")]
    BadTransfer {
        /// Bus address.
        dma: DmaAddr,
        /// Bytes.
        len: u64,
    },
    /// The device MMU's walk faulted (an invalid table entry; an entry fetch the IOMMU refused
    /// reads as zero).
    #[error("device MMU fault at {iova}: {fault:?}")]
    Walk {
        /// The device VA.
        iova: Iova,
        /// What the walker reported.
        fault: WalkFault,
    },
    /// The leaf does not allow the access.
    #[error("device MMU permission fault at {iova}")]
    Permission {
        /// The device VA.
        iova: Iova,
    },
}

/// Counters of the driver, for the tier's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EduStats {
    /// DMAs the engine made.
    pub dmas: u64,
    /// Table entries fetched by DMA.
    pub pte_reads: u64,
    /// Data bytes moved between a translated address and the edu buffer.
    pub data_bytes: u64,
    /// Device TLB invalidations devmmu asked for (edu has no TLB: each is a no-op).
    pub tlb_invalidations: u64,
}

/// The edu device and its driver state: BAR0 through VFIO and a coherent bounce buffer
/// (one page, mapped through the device's DMA ops) through which the CPU sees what the engine
/// copied out of its buffer.
pub struct Edu {
    dev: VfioDevice,
    bounce: CoherentBuffer,
    dmas: AtomicU64,
    pte_reads: AtomicU64,
    data_bytes: AtomicU64,
    tlb: Arc<EduTlb>,
}

/// The edu "MMU"'s TLB hook: it caches nothing, so invalidations are only counted.
#[derive(Debug, Default)]
pub struct EduTlb {
    invalidations: AtomicU64,
}

impl DeviceTlb for EduTlb {
    fn invalidate_range(&self, _asid: u32, _iova: Iova, _size: u64) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    fn invalidate_all(&self) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }
}

impl Edu {
    /// The TLB hook to attach the devmmu device with; [`Edu::new`] takes the same one back.
    pub fn tlb() -> Arc<EduTlb> {
        Arc::new(EduTlb::default())
    }

    /// Takes `dev` (an edu device opened through VFIO), checks it is edu, enables bus
    /// mastering, and allocates the bounce page through `ops` (the DMA ops of the devmmu device
    /// attached for it, on the same VFIO container).
    ///
    /// # Errors
    /// [`EduError::NotEdu`]; [`EduError::Mm`] from the region access or the allocation.
    pub fn new(dev: VfioDevice, ops: &Arc<DmaOps>, tlb: Arc<EduTlb>) -> Result<Edu, EduError> {
        let id = dev.read32(BAR0, REG_ID)?;
        // edu.c: 0xRRrr00edu, major.minor version in the top bytes, 0xed in the low byte.
        if id & 0xff != 0xed {
            return Err(EduError::NotEdu { id });
        }
        dev.enable_bus_master()?;
        let bounce = ops.alloc_coherent(EDU_BUF_SIZE)?;
        if !fits_mask(bounce.dma(), EDU_BUF_SIZE) {
            return Err(EduError::BadTransfer {
                dma: bounce.dma(),
                len: EDU_BUF_SIZE,
            });
        }
        Ok(Edu {
            dev,
            bounce,
            dmas: AtomicU64::new(0),
            pte_reads: AtomicU64::new(0),
            data_bytes: AtomicU64::new(0),
            tlb,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> EduStats {
        EduStats {
            dmas: self.dmas.load(Ordering::Relaxed),
            pte_reads: self.pte_reads.load(Ordering::Relaxed),
            data_bytes: self.data_bytes.load(Ordering::Relaxed),
            tlb_invalidations: self.tlb.invalidations.load(Ordering::Relaxed),
        }
    }

    /// One DMA between bus address `dma` and edu buffer offset `buf_off`, `len` bytes;
    /// `to_bus`: edu buffer → bus. Waits for completion.
    fn dma(&self, dma: DmaAddr, buf_off: u64, len: u64, to_bus: bool) -> Result<(), EduError> {
        let bad = EduError::BadTransfer { dma, len };
        if len == 0 || buf_off.checked_add(len).is_none_or(|e| e > EDU_BUF_SIZE) {
            return Err(bad);
        }
        if !fits_mask(dma, len) {
            return Err(bad);
        }
        let edu_addr = EDU_BUF + buf_off;
        let (src, dst) = if to_bus {
            (edu_addr, dma.get())
        } else {
            (dma.get(), edu_addr)
        };
        self.wait_idle()?;
        self.dev.write64(BAR0, REG_DMA_SRC, src)?;
        self.dev.write64(BAR0, REG_DMA_DST, dst)?;
        self.dev.write64(BAR0, REG_DMA_COUNT, len)?;
        let cmd = CMD_RUN | if to_bus { CMD_TO_BUS } else { 0 };
        self.dev.write64(BAR0, REG_DMA_CMD, cmd)?;
        self.dmas.fetch_add(1, Ordering::Relaxed);
        self.wait_idle()
    }

    fn wait_idle(&self) -> Result<(), EduError> {
        let start = Instant::now();
        loop {
            if self.dev.read64(BAR0, REG_DMA_CMD)? & CMD_RUN == 0 {
                return Ok(());
            }
            if start.elapsed() > DMA_TIMEOUT {
                return Err(EduError::Timeout(DMA_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Translates `iova` of the VM described by `ctx` as the device MMU would, every table
    /// entry fetched by DMA; `write`: the access is a write.
    ///
    /// # Errors
    /// [`EduError::Walk`] (an invalid entry, or an entry fetch the IOMMU refused);
    /// [`EduError::Permission`]; DMA errors.
    pub fn translate(
        &self,
        ctx: &MmuContext,
        iova: Iova,
        write: bool,
    ) -> Result<Translation, EduError> {
        let reader = DmaReader {
            edu: self,
            next_slot: std::cell::Cell::new(0),
            error: std::cell::RefCell::new(None),
        };
        let r = ctx.format.walk(&reader, ctx.root, iova);
        if let Some(e) = reader.error.into_inner() {
            return Err(e);
        }
        let t = r.map_err(|fault| EduError::Walk { iova, fault })?;
        if write && !t.prot.contains(Prot::WRITE) {
            return Err(EduError::Permission { iova });
        }
        Ok(t)
    }

    /// The device writes `data` at `iova` of the VM through its MMU: for each device page, a
    /// walk, then the data DMA'd from the bounce page into the edu buffer and from there to the
    /// translated bus address. Returns the bus addresses written, one per page.
    ///
    /// # Errors
    /// As [`Edu::translate`]; DMA errors. A write the IOMMU refuses is not seen by the device
    /// (the kernel logs a DMAR fault).
    pub fn write(
        &self,
        ctx: &MmuContext,
        iova: Iova,
        data: &[u8],
    ) -> Result<Vec<DmaAddr>, EduError> {
        let mut out = Vec::new();
        for (va, range) in pages(iova, data.len() as u64) {
            let chunk = &data[range];
            let t = self.translate(ctx, va, true)?;
            self.bounce.write(0, chunk).map_err(EduError::Mm)?;
            self.dma(self.bounce.dma(), 0, chunk.len() as u64, false)?;
            self.dma(t.dma, 0, chunk.len() as u64, true)?;
            self.data_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            out.push(t.dma);
        }
        Ok(out)
    }

    /// The device reads `buf.len()` bytes at `iova` of the VM through its MMU (walk, then the
    /// data DMA'd into the edu buffer and out to the bounce page). A read the IOMMU refuses
    /// gives zeros.
    ///
    /// # Errors
    /// As [`Edu::translate`]; DMA errors.
    pub fn read(&self, ctx: &MmuContext, iova: Iova, buf: &mut [u8]) -> Result<(), EduError> {
        for (va, range) in pages(iova, buf.len() as u64) {
            let t = self.translate(ctx, va, false)?;
            let len = (range.end - range.start) as u64;
            self.read_bus(t.dma, &mut buf[range])?;
            self.data_bytes.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The engine reads `buf.len()` (at most 4096) bytes at bus address `dma`, with no device
    /// MMU in between (the IOMMU still translates; a refused read gives zeros).
    ///
    /// # Errors
    /// [`EduError::BadTransfer`]; DMA errors.
    pub fn read_bus(&self, dma: DmaAddr, buf: &mut [u8]) -> Result<(), EduError> {
        let len = buf.len() as u64;
        self.dma(dma, 0, len, false)?;
        self.dma(self.bounce.dma(), 0, len, true)?;
        self.bounce.read(0, buf).map_err(EduError::Mm)
    }

    /// The engine writes `data` (at most 4096 bytes) at bus address `dma`, with no device MMU
    /// in between.
    ///
    /// # Errors
    /// [`EduError::BadTransfer`]; DMA errors.
    pub fn write_bus(&self, dma: DmaAddr, data: &[u8]) -> Result<(), EduError> {
        self.bounce.write(0, data).map_err(EduError::Mm)?;
        self.dma(self.bounce.dma(), 0, data.len() as u64, false)?;
        self.dma(dma, 0, data.len() as u64, true)
    }
}

/// The PCI address (`DDDD:BB:DD.F`) of the first edu device sysfs lists, if any.
pub fn find_edu() -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let id = |f: &str| {
                let s = std::fs::read_to_string(p.join(f)).ok()?;
                u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
            };
            (id("vendor")? == EDU_PCI_ID.0 && id("device")? == EDU_PCI_ID.1)
                .then(|| p.file_name()?.to_str().map(str::to_string))?
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Whether `[dma, dma + len)` lies below edu's 28-bit mask.
fn fits_mask(dma: DmaAddr, len: u64) -> bool {
    dma.get()
        .checked_add(len)
        .is_some_and(|end| end <= 1u64 << EDU_DMA_BITS)
}

/// Splits `[iova, iova + len)` at 4 KiB device pages: `(page's first VA, byte range of the
/// caller's buffer)`.
fn pages(iova: Iova, len: u64) -> Vec<(Iova, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut done = 0u64;
    while done < len {
        let va = iova.get() + done;
        let n = (EDU_BUF_SIZE - va % EDU_BUF_SIZE).min(len - done);
        out.push((Iova(va), done as usize..(done + n) as usize));
        done += n;
    }
    out
}

/// Reads table entries by DMA: entry → edu buffer slot (one per level) → bounce page → CPU.
struct DmaReader<'a> {
    edu: &'a Edu,
    next_slot: std::cell::Cell<u64>,
    error: std::cell::RefCell<Option<EduError>>,
}

impl TableReader for DmaReader<'_> {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let slot = self.next_slot.get();
        if slot >= 4 || !(bytes == 4 || bytes == 8) {
            return None;
        }
        self.next_slot.set(slot + 1);
        let off = slot * 8;
        let n = bytes as u64;
        let r = self
            .edu
            .dma(addr, off, n, false)
            .and_then(|()| self.edu.dma(self.edu.bounce.dma() + off, off, n, true));
        if let Err(e) = r {
            *self.error.borrow_mut() = Some(e);
            return None;
        }
        let mut b = [0u8; 8];
        if let Err(e) = self.edu.bounce.read(off, &mut b[..bytes]) {
            *self.error.borrow_mut() = Some(EduError::Mm(e));
            return None;
        }
        self.edu.pte_reads.fetch_add(1, Ordering::Relaxed);
        Some(u64::from_le_bytes(b))
    }
}
