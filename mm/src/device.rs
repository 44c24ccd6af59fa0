//! A device with its own MMU, attached to the system side: what its driver knows about it.
//!
//! The description ([`DeviceConfig`]) is the driver's view: the DMA mask, whether the device
//! and its page-table walker snoop the CPU caches, its MMU format, and how its TLB is
//! invalidated. [`Device::attach`] picks the device's system DMA ops once, from that description
//! and the platform ([`DmaOps::attach`]). Device VMs ([`crate::vm::Vm`]) are created on it.
//!
//! The MMU formats a device may have are registered in one place, `device/format.rs`: it
//! generates [`MmuFormat`] and the static dispatch from a format to its `devmmu_pagetable` type
//! that the VMs and the simulated device use.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use devmmu_pagetable::{Invalidation, Iova};
use parking_lot::Mutex;

use crate::dma::{DmaDevice, DmaMask, DmaOps, LeakReport, Platform};
use crate::phys::PhysMem;
use crate::MmError;

mod format;
pub use format::MmuFormat;
pub(crate) use format::{dispatch_format, dispatch_per_format, FormatFamily, PerFormat};

/// How the driver invalidates the device TLB.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TlbInvalidation {
    /// By IOVA range and address space (ARM SMMU / GPU MMUs: TLBI by VA and ASID).
    Range,
    /// The whole TLB at once (the IPU MMU's invalidate register, ipu6-mmu.c `tlb_invalidate`).
    All,
}

/// The device's TLB-invalidation hook: the register writes a driver makes. The simulated device
/// ([`crate::model::SimMmu`]) implements it; a real driver would write MMIO registers.
pub trait DeviceTlb: Send + Sync {
    /// Invalidates the translations of address space `asid` that overlap `[iova, iova + size)`
    /// (bytes): leaf TLB entries and walk-cache entries (cached table pointers) alike, as an
    /// SMMUv3 `CMD_TLBI_NH_VA` with Leaf=0 does.
    fn invalidate_range(&self, asid: u32, iova: Iova, size: u64);
    /// Invalidates only the leaf TLB entries of `asid` overlapping the range, keeping cached
    /// table pointers (Leaf=1: what a driver issues when no table was unlinked there). The
    /// default does a full [`DeviceTlb::invalidate_range`].
    fn invalidate_leaf(&self, asid: u32, iova: Iova, size: u64) {
        self.invalidate_range(asid, iova, size);
    }
    /// Invalidates every translation of every address space.
    fn invalidate_all(&self);
}

/// What the driver knows about a device with its own MMU.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Name, for diagnostics.
    pub name: String,
    /// Bus addresses the device can emit: data and page-table pointers alike.
    pub dma_mask: DmaMask,
    /// Whether the device's data accesses snoop the CPU caches (no sync work needed).
    pub coherent: bool,
    /// Whether the device's page-table walker snoops the CPU caches. If not, every IOPTE line
    /// the driver writes is cleaned before the device may walk it.
    pub coherent_walk: bool,
    /// The MMU's page-table format.
    pub mmu: MmuFormat,
    /// How its TLB is invalidated.
    pub tlb_invalidation: TlbInvalidation,
    /// Whether [`Vm::bind`](crate::vm::Vm::bind) may accept a protection the MMU format cannot
    /// enforce (read-only on the IPU format, whose entries have no permission bits), mapping it
    /// with what the format grants instead. `false` (the default of the constructors): such a
    /// bind is refused with [`MmError::ProtNotEnforced`]. Either way
    /// [`Vm::bindings`](crate::vm::Vm::bindings) reports what the IOPTEs grant.
    pub accept_unenforced_prot: bool,
}

impl DeviceConfig {
    /// An Intel IPU-style camera ISP: IPU MMU, 32-bit DMA mask, non-coherent data and walker,
    /// whole-TLB invalidation (as ipu6-mmu.c).
    pub fn ipu(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            dma_mask: DmaMask::bits(32),
            coherent: false,
            coherent_walk: false,
            mmu: MmuFormat::Ipu,
            tlb_invalidation: MmuFormat::Ipu.tlb_invalidation(),
            accept_unenforced_prot: false,
        }
    }

    /// A GPU-style device with an ARM LPAE MMU, range invalidation, coherent or not.
    pub fn arm_lpae(name: impl Into<String>, mask: DmaMask, coherent: bool) -> Self {
        Self {
            name: name.into(),
            dma_mask: mask,
            coherent,
            coherent_walk: coherent,
            mmu: MmuFormat::ArmLpae4k,
            tlb_invalidation: MmuFormat::ArmLpae4k.tlb_invalidation(),
            accept_unenforced_prot: false,
        }
    }
}

/// Leaks found when a device VM was dropped with bindings left (reported in DMA-debug mode).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VmLeak {
    /// The VM's address-space id.
    pub asid: u32,
    /// Bindings still in place when it was dropped.
    pub bindings: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// A device attached to the system: its DMA ops (fixed at attach), its TLB hook and its VMs.
pub struct Device {
    config: DeviceConfig,
    dma: Arc<DmaOps>,
    tlb: Arc<dyn DeviceTlb>,
    debug: bool,
    next_asid: AtomicU32,
    tlb_invalidations: AtomicU64,
    leaks: Mutex<Vec<VmLeak>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("config", &self.config)
            .field("dma", &self.dma.kind())
            .finish()
    }
}

impl Device {
    /// Attaches a device: chooses its DMA ops once ([`DmaOps::attach`]: behind the system IOMMU
    /// if the platform has one, else direct with swiotlb as configured).
    ///
    /// The DMA layer is given the narrower of `config.dma_mask`, what the MMU format's entries
    /// can hold ([`MmuFormat::oa_bits`]) and what its root register holds
    /// ([`MmuFormat::root_bits`]: the root table is DMA-mapped like any table page, and the IPU's
    /// `REG_L1_PHYS` takes a 27-bit page number): a bus address the device's own MMU cannot
    /// store is one the device cannot emit, whatever its bus is wired for (ipu6.c sets a 39-bit
    /// mask, `DMA_BIT_MASK(39)`, for this reason). [`Device::dma_mask`] reports the result.
    ///
    /// Errors: those of [`DmaOps::attach`] (e.g. no memory for the swiotlb pool).
    pub fn attach(
        phys: &Arc<PhysMem>,
        config: DeviceConfig,
        platform: &Platform,
        tlb: Arc<dyn DeviceTlb>,
    ) -> Result<Arc<Device>, MmError> {
        let oa_mask = DmaMask::bits(config.mmu.oa_bits().min(config.mmu.root_bits()));
        let mask = DmaMask(config.dma_mask.0.min(oa_mask.0));
        let dma_dev = DmaDevice::new(config.name.clone(), mask, config.coherent);
        let dma = DmaOps::attach(phys.clone(), dma_dev, platform)?;
        Ok(Arc::new(Device {
            config,
            dma,
            tlb,
            debug: platform.debug,
            next_asid: AtomicU32::new(1),
            tlb_invalidations: AtomicU64::new(0),
            leaks: Mutex::new(Vec::new()),
        }))
    }

    /// The driver's description of the device.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The DMA mask the device was attached with: `config().dma_mask` narrowed to the bus
    /// addresses its MMU format can hold.
    pub fn dma_mask(&self) -> DmaMask {
        self.dma.device().mask
    }

    /// The system DMA ops chosen at attach.
    pub fn dma_ops(&self) -> &Arc<DmaOps> {
        &self.dma
    }

    /// The physical memory the device's DMA reaches.
    pub fn phys(&self) -> &Arc<PhysMem> {
        self.dma.phys()
    }

    /// TLB invalidations the driver has issued to the device (range or whole-TLB requests).
    pub fn tlb_invalidations(&self) -> u64 {
        self.tlb_invalidations.load(Ordering::Relaxed)
    }

    /// VM leaks recorded so far (only in DMA-debug mode).
    pub fn vm_leaks(&self) -> Vec<VmLeak> {
        self.leaks.lock().clone()
    }

    /// Detaches the device from its DMA ops and reports the DMA mappings still held
    /// ([`DmaOps::detach`]). Call after every VM is dropped.
    pub fn detach(&self) -> LeakReport {
        self.dma.detach()
    }

    pub(crate) fn alloc_asid(&self) -> u32 {
        self.next_asid.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record_leak(&self, leak: VmLeak) {
        if self.debug {
            self.leaks.lock().push(leak);
        }
    }

    /// The invalidation callback for `PageTable::iotlb_sync` on address space `asid`: called
    /// once per gathered range, it issues one range request each, or (whole-TLB devices) one
    /// whole-TLB request for the first range and nothing for the rest.
    pub(crate) fn tlb_invalidator(&self, asid: u32) -> impl FnMut(Iova, u64) + '_ {
        let mut each = self.tlb_invalidator_with(asid);
        move |iova, size| {
            each(Invalidation {
                iova,
                size,
                walk: true,
            })
        }
    }

    /// The invalidation callback for `PageTable::iotlb_sync_with` on address space `asid`:
    /// range devices get a leaf-only request for a leaf range and a full one (walk caches too)
    /// for a walk range; whole-TLB devices one whole-TLB request for the first and nothing for
    /// the rest.
    pub(crate) fn tlb_invalidator_with(&self, asid: u32) -> impl FnMut(Invalidation) + '_ {
        let mut whole_done = false;
        move |inv: Invalidation| match self.config.tlb_invalidation {
            TlbInvalidation::Range => {
                if inv.walk {
                    self.tlb.invalidate_range(asid, inv.iova, inv.size);
                } else {
                    self.tlb.invalidate_leaf(asid, inv.iova, inv.size);
                }
                self.tlb_invalidations.fetch_add(1, Ordering::Relaxed);
            }
            TlbInvalidation::All => {
                if !whole_done {
                    whole_done = true;
                    self.tlb.invalidate_all();
                    self.tlb_invalidations.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
