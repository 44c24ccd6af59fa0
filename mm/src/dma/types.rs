//! The value types of the DMA API: directions, masks, devices, platforms, segments, faults.

use devmmu_pagetable::{DmaAddr, Prot};

use std::sync::Arc;

use crate::phys::{PhysAddr, PhysSegment};
use crate::vfio::VfioContainer;

/// Which way the data of a streaming mapping flows (the kernel's `enum dma_data_direction`,
/// include/linux/dma-direction.h; `DMA_NONE` has no counterpart: it is never valid for a mapping).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum DmaDirection {
    /// The device reads what the CPU wrote (`DMA_TO_DEVICE`).
    ToDevice,
    /// The device writes what the CPU will read (`DMA_FROM_DEVICE`).
    FromDevice,
    /// Both (`DMA_BIDIRECTIONAL`).
    Bidirectional,
}

impl DmaDirection {
    /// Whether the device reads the buffer (`ToDevice` or `Bidirectional`).
    pub const fn device_reads(self) -> bool {
        matches!(self, DmaDirection::ToDevice | DmaDirection::Bidirectional)
    }

    /// Whether the device writes the buffer (`FromDevice` or `Bidirectional`).
    pub const fn device_writes(self) -> bool {
        matches!(self, DmaDirection::FromDevice | DmaDirection::Bidirectional)
    }

    /// The IOMMU protection of a mapping in this direction, as `dma_info_to_prot` in
    /// drivers/iommu/dma-iommu.c: `ToDevice` -> READ, `FromDevice` -> WRITE, `Bidirectional`
    /// -> READ | WRITE, plus CACHE for a coherent device.
    pub const fn prot(self, coherent: bool) -> Prot {
        let base = match self {
            DmaDirection::ToDevice => Prot::READ,
            DmaDirection::FromDevice => Prot::WRITE,
            DmaDirection::Bidirectional => Prot::RW,
        };
        if coherent {
            Prot::from_bits_truncate(base.bits() | Prot::CACHE.bits())
        } else {
            base
        }
    }
}

/// A device's DMA mask: the largest bus address it can emit, in bytes (the kernel's
/// `dev->dma_mask` combined with `bus_dma_limit`). A range `dma..dma + len` is reachable when
/// `dma + len - 1 <= mask` (`dma_capable()` in kernel/dma/direct.h).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct DmaMask(pub u64);

impl DmaMask {
    /// The mask of a device with `n` address bits (`DMA_BIT_MASK(n)`): `2^n - 1`. `n >= 64`
    /// gives the full 64-bit mask; `n == 0` gives 0, which [`DmaOps::attach`](super::DmaOps::attach)
    /// refuses.
    pub const fn bits(n: u32) -> DmaMask {
        if n >= 64 {
            DmaMask(u64::MAX)
        } else {
            DmaMask((1u64 << n) - 1)
        }
    }

    /// The largest reachable bus address, in bytes.
    pub const fn limit(self) -> u64 {
        self.0
    }

    /// Whether every byte of `dma..dma + len` is at or below the mask (`len == 0` is never
    /// reachable, and neither is a range that wraps past 2^64).
    pub const fn covers(self, dma: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        match dma.checked_add(len - 1) {
            Some(last) => last <= self.0,
            None => false,
        }
    }
}

/// The DMA-relevant description of a device.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DmaDevice {
    /// A name for diagnostics and errors (e.g. `"ipu6"`).
    pub name: String,
    /// The largest bus address it can emit.
    pub mask: DmaMask,
    /// Whether it snoops the CPU caches (`dev_is_dma_coherent`). A non-coherent device gets real
    /// cache maintenance on every map, unmap and sync; a coherent one gets none.
    pub coherent: bool,
}

impl DmaDevice {
    /// A device called `name` with DMA mask `mask`, coherent or not.
    pub fn new(name: impl Into<String>, mask: DmaMask, coherent: bool) -> DmaDevice {
        DmaDevice {
            name: name.into(),
            mask,
            coherent,
        }
    }
}

/// The x86 MSI doorbell window (`0xFEE0_0000..0xFEF0_0000`): writes there are interrupt messages,
/// never memory, so an IOVA allocator must not hand it out (`IOAPIC_RANGE_START` /
/// `IOAPIC_RANGE_END` of drivers/iommu/intel/iommu.c, `MSI_RANGE` of amd_iommu).
pub const X86_MSI_WINDOW: (u64, u64) = (0xFEE0_0000, 0xFEF0_0000);

/// Default swiotlb pool size in bytes: 64 MiB, the kernel's `IO_TLB_DEFAULT_SIZE`.
pub const DEFAULT_SWIOTLB_BYTES: u64 = 64 << 20;

/// What the platform offers the devices attached to it; read once by
/// [`DmaOps::attach`](super::DmaOps::attach).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Platform {
    /// Devices sit behind a system IOMMU (an SMMU, VT-d, AMD-Vi): each gets its own domain and
    /// IOVA space. Takes precedence over everything below except `reserved` and the debug flags.
    pub system_iommu: bool,
    /// Devices sit behind the real system IOMMU of the running kernel, reached through this
    /// VFIO container (the device's group attached to it): each mapping is a
    /// `VFIO_IOMMU_MAP_DMA` of the memory at an IOVA of the device's own space. Takes
    /// precedence over `system_iommu` and everything below except `reserved` and the debug
    /// flags.
    pub vfio: Option<VfioHandle>,
    /// Size in bytes of the swiotlb bounce pool a direct-DMA device gets when its mask does not
    /// reach all RAM (`None`: no pool; a buffer beyond the mask is then refused). Rounded up to
    /// whole pages.
    pub swiotlb: Option<u64>,
    /// Direct DMA: `DmaAddr = phys + bus_offset` (the `dma_range_map` offset of a bus that sees
    /// RAM at another address). A multiple of the page size.
    pub bus_offset: u64,
    /// IOVA ranges `[start, end)` (bytes) a system IOMMU domain never hands out (the kernel's
    /// `iommu_get_resv_regions`), widened to whole pages.
    pub reserved: Vec<(u64, u64)>,
    /// DMA-API debugging (kernel/dma/debug.c): collect [`DmaDiag`](super::DmaDiag)s.
    pub debug: bool,
    /// With `debug`: also report mappings released without ever being passed to
    /// [`DmaOps::mapping_error`](super::DmaOps::mapping_error). Off by default because a Rust
    /// caller cannot use a failed mapping's address anyway (it got an `Err`).
    pub debug_strict_check: bool,
}

impl Default for Platform {
    /// Direct DMA, no bus offset, a 64 MiB swiotlb pool, the x86 MSI window reserved, debugging
    /// off.
    fn default() -> Platform {
        Platform {
            system_iommu: false,
            vfio: None,
            swiotlb: Some(DEFAULT_SWIOTLB_BYTES),
            bus_offset: 0,
            reserved: vec![X86_MSI_WINDOW],
            debug: false,
            debug_strict_check: false,
        }
    }
}

/// Which backend a [`DmaOps`](super::DmaOps) is: fixed at attach.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DmaOpsKind {
    /// Bus address = physical address + bus offset; bounces through swiotlb when needed.
    Direct,
    /// Behind a system IOMMU: bus address = IOVA in the device's own domain.
    Iommu,
    /// Behind the running kernel's IOMMU through VFIO: bus address = IOVA in the container.
    Vfio,
}

/// A VFIO container as a [`Platform`] holds it: shared, compared and hashed by identity.
#[derive(Clone, Debug)]
pub struct VfioHandle(pub Arc<VfioContainer>);

impl PartialEq for VfioHandle {
    fn eq(&self, other: &VfioHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for VfioHandle {}

impl core::hash::Hash for VfioHandle {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

/// Attributes of a streaming mapping (the kernel's `DMA_ATTR_*`, include/linux/dma-mapping.h).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct DmaAttrs {
    /// `DMA_ATTR_SKIP_CPU_SYNC`: no cache maintenance at map time (the bounce copy of swiotlb is
    /// still made). The caller guarantees the CPU holds no dirty line of the memory.
    pub skip_cpu_sync: bool,
}

/// Which part of the DMA layer owns a piece of physical memory that drivers must never map
/// (see [`MmError::DmaLayerMemory`](crate::MmError::DmaLayerMemory)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DmaOwner {
    /// A swiotlb bounce pool: its slots are other mappings' bounce buffers.
    SwiotlbPool,
    /// A page of a system IOMMU's page table.
    IommuTable,
    /// A page of a device's own page table (a [`TablePool`](super::TablePool) over DMA ops).
    DeviceTable,
}

/// What kind of mapping a DMA address belongs to (the `type` of a dma-debug entry).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum MappingKind {
    /// A streaming mapping of one range (`map_page`: `dma_map_page`/`dma_map_single`).
    Page,
    /// A streaming scatter-gather mapping (`map_sg`).
    Sg,
    /// An MMIO or peer-device range (`map_resource`).
    Resource,
    /// A coherent buffer (`alloc_coherent`).
    Coherent,
    /// A non-coherent buffer (`alloc_noncoherent`), synced by the user.
    NonCoherent,
    /// A range reserved with `iova_alloc` (two-step IOVA API).
    IovaRange,
    /// A range linked into an IOVA range with `iova_link`.
    IovaLink,
}

/// One DMA-contiguous run of a mapping, as the device is given it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DmaSegment {
    /// Bus address of the first byte.
    pub dma: DmaAddr,
    /// Length in bytes.
    pub len: u64,
}

/// A scatter-gather list and its DMA mapping, from [`DmaOps::map_sg`](super::DmaOps::map_sg):
/// the kernel's `struct sg_table` after `dma_map_sgtable`. Hand it back to `unmap_sg` and the
/// `sync_sg_*` calls; it carries the identity of the mapping, so it cannot be forged.
#[derive(Debug, PartialEq, Eq)]
pub struct SgTable {
    /// Shared with the mapped [`Frames`](crate::phys::Frames)' own list when a BO is mapped.
    pub(crate) phys: Arc<[PhysSegment]>,
    pub(crate) dma: Vec<DmaSegment>,
    pub(crate) dir: DmaDirection,
    pub(crate) id: u64,
    /// Whether any segment goes through a swiotlb bounce buffer.
    pub(crate) bounced: bool,
}

impl SgTable {
    /// The CPU physical segments as given to `map_sg`.
    pub fn phys(&self) -> &[PhysSegment] {
        &self.phys
    }

    /// The DMA segments to program into the device, merged where the bus addresses are
    /// contiguous (never across a bounce buffer). Their lengths add up to the bytes of `phys()`.
    pub fn dma(&self) -> &[DmaSegment] {
        &self.dma
    }

    /// The direction it was mapped with.
    pub fn dir(&self) -> DmaDirection {
        self.dir
    }

    /// Whether any segment goes through a swiotlb bounce buffer (direct DMA beyond the mask).
    pub fn is_bounced(&self) -> bool {
        self.bounced
    }

    /// Total bytes mapped (sum of the segment lengths).
    pub fn len_bytes(&self) -> u64 {
        self.phys.iter().map(|s| s.len).sum()
    }
}

/// Why the bus refused a device's access, from [`DmaOps::bus_to_phys`](super::DmaOps::bus_to_phys).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BusFaultReason {
    /// The access has no bytes.
    ZeroLength,
    /// The range ends above the device's DMA mask (or wraps past 2^64): the device cannot drive
    /// those address lines.
    BeyondMask {
        /// The device's DMA mask.
        mask: u64,
    },
    /// Direct DMA: the bus address is below the platform's bus offset, so no CPU physical address
    /// corresponds to it.
    BelowBusOffset {
        /// The platform's bus offset.
        offset: u64,
    },
    /// Nothing answers at this physical address: not an allocated frame, not a mapped resource.
    NoMemory {
        /// The first physical address that has nothing behind it.
        addr: PhysAddr,
    },
    /// System IOMMU: the IOVA is beyond the 48-bit IOVA space of the domain.
    AddressSize,
    /// System IOMMU: no valid IOPTE for the IOVA (a translation fault at `level`).
    Translation {
        /// The faulting IOVA (page of the access that faulted).
        iova: DmaAddr,
        /// The level of the invalid entry (0 = root).
        level: usize,
    },
    /// System IOMMU: a table entry could not be read (its page is not RAM).
    WalkAbort {
        /// Physical address of the unreadable entry.
        pte_addr: DmaAddr,
    },
    /// System IOMMU: a write to a mapping without write permission (`ToDevice`).
    Permission {
        /// The faulting IOVA.
        iova: DmaAddr,
    },
    /// The range translates to physical pages that are not adjacent, so it cannot be described by
    /// one physical address: split the access at `at` (a page boundary).
    Discontiguous {
        /// First bus address whose physical page does not follow the previous one.
        at: DmaAddr,
    },
}

/// A device access the bus refused: the bus address and why.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
#[error("bus fault at {dma}: {reason:?}")]
pub struct BusFault {
    /// The bus address the device emitted (start of the access).
    pub dma: DmaAddr,
    /// Why it faulted.
    pub reason: BusFaultReason,
}
