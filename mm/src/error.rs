//! The error type of devmmu-mm.
//!
//! One enum for the crate boundary. Each variant is named after what went wrong and carries the
//! offending values, so a caller (or a test) can tell which input was refused without parsing a
//! message. Every operation that returns an error has left no partial state behind.

use rustix::io::Errno;

use crate::phys::{PhysAddr, RamRegion, Zone};

/// Everything that can go wrong in devmmu-mm.
///
/// Sizes are in bytes unless the field name says `pages`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MmError {
    /// The frame allocator cannot satisfy the request: fewer than `pages` free frames in `zone`,
    /// or (for a contiguous or aligned request) no free run of that shape. Nothing was allocated.
    #[error("out of physical frames: {pages} pages (contiguous: {contiguous}, zone: {zone:?})")]
    NoMemory {
        /// Number of 4 KiB pages requested.
        pages: u64,
        /// Whether one physically contiguous run was requested.
        contiguous: bool,
        /// The zone the frames had to come from.
        zone: Zone,
    },

    /// No frame is allocated at `addr`: the address lies outside RAM or in a free frame.
    #[error("no allocated frame at physical address {addr}")]
    BadPhysAddr {
        /// The first address of the range that has no frame behind it.
        addr: PhysAddr,
    },

    /// `addr + len` does not fit in 64 bits.
    #[error("physical range {addr} + {len:#x} bytes overflows the address space")]
    AddrOverflow {
        /// Start of the range.
        addr: PhysAddr,
        /// Length of the range in bytes.
        len: u64,
    },

    /// A size that must be non-zero was zero (an allocation of 0 pages, a buffer of 0 bytes).
    #[error("size must be non-zero")]
    ZeroSize,

    /// `value` must be a multiple of `align` (both in bytes) but is not.
    #[error("{value:#x} is not a multiple of {align:#x}")]
    Misaligned {
        /// The offending size or address, in bytes.
        value: u64,
        /// The required alignment, in bytes.
        align: u64,
    },

    /// A frame alignment that is not a power of two (or is zero) was requested.
    #[error("frame alignment of {align_pages} pages is not a power of two")]
    BadAlignment {
        /// The requested alignment, in pages.
        align_pages: u64,
    },

    /// An access at `offset` of `len` bytes runs past the end of a buffer of `size` bytes.
    #[error(
        "access at offset {offset:#x} of {len:#x} bytes is outside a buffer of {size:#x} bytes"
    )]
    OutOfBounds {
        /// Offset of the access from the start of the buffer, in bytes.
        offset: u64,
        /// Length of the access, in bytes.
        len: u64,
        /// Size of the buffer, in bytes.
        size: u64,
    },

    /// A file descriptor given to [`PhysMem::adopt_fd`](crate::phys::PhysMem::adopt_fd) is
    /// shorter than the length it was adopted for (mapping past its end would fault with SIGBUS).
    #[error("fd holds {size:#x} bytes, fewer than the {len:#x} requested")]
    FdTooSmall {
        /// Requested length, in bytes.
        len: u64,
        /// Size of the file behind the fd (`st_size`), in bytes.
        size: u64,
    },

    /// A [`MemoryMap`](crate::phys::MemoryMap) with no RAM region.
    #[error("memory map has no RAM region")]
    EmptyMemoryMap,

    /// A RAM region whose base or size is not a multiple of the page size, or whose size is zero.
    #[error("RAM region {region:?} is empty or not page-aligned")]
    RegionMisaligned {
        /// The offending region.
        region: RamRegion,
    },

    /// A RAM region that ends above the largest physical address (2^52, x86-64 MAXPHYADDR and
    /// the ARMv8.2 52-bit PA limit).
    #[error("RAM region {region:?} ends above the 52-bit physical address space")]
    RegionBeyondMaxPhys {
        /// The offending region.
        region: RamRegion,
    },

    /// Two RAM regions share at least one byte.
    #[error("RAM regions {first:?} and {second:?} overlap")]
    RegionsOverlap {
        /// The region with the lower base.
        first: RamRegion,
        /// The region that starts inside `first`.
        second: RamRegion,
    },

    // ---- BO / fd ----
    /// A BO handle that names nothing in its table: 0, never handed out, or already closed.
    #[error("no BO behind handle {handle}")]
    BadHandle {
        /// The offending handle.
        handle: u32,
    },

    /// A BO handle table has no handle number left (`u32::MAX - 1` live handles).
    #[error("BO handle table full: {live} live handles")]
    HandlesExhausted {
        /// Number of live handles.
        live: usize,
    },

    /// `Bo::unpin` on a BO whose pin count is zero.
    #[error("unpin of a BO that is not pinned")]
    NotPinned,

    /// An fd given for import is not a memfd (nor another sealable shmem file):
    /// `fcntl(F_GET_SEALS)` failed with `EINVAL`.
    #[error("fd is not a memfd (it is a {file_type:?})")]
    NotMemfd {
        /// What the fd is, from `fstat`.
        file_type: rustix::fs::FileType,
    },

    /// A memfd given for import lacks `F_SEAL_SHRINK`: its owner could truncate it under our
    /// mapping and make our accesses fault with SIGBUS.
    #[error("memfd is not sealed against shrinking (seals: {seals:?})")]
    MissingSeal {
        /// The seals it has.
        seals: rustix::fs::SealFlags,
    },

    /// A memfd given for import is sealed against writing (`F_SEAL_WRITE` or
    /// `F_SEAL_FUTURE_WRITE`), so it cannot be mapped writable as a BO.
    #[error("memfd is sealed against writing (seals: {seals:?})")]
    WriteSealed {
        /// The seals it has.
        seals: rustix::fs::SealFlags,
    },

    /// An fd given for import was not opened read-write.
    #[error("fd is not open read-write (access mode {access:?})")]
    FdNotWritable {
        /// Its access mode (`O_RDONLY` or `O_WRONLY`).
        access: rustix::fs::OFlags,
    },

    /// An fd given for import has a size that cannot be a BO: zero, not a multiple of the page
    /// size, or different from the size the peer announced.
    #[error("fd size {size:#x} bytes is not a non-zero page multiple or differs from the expected {expected:?}")]
    WrongSize {
        /// Size of the file (`st_size`), in bytes.
        size: u64,
        /// The size the caller expected, in bytes, if it gave one.
        expected: Option<u64>,
    },

    /// The udmabuf device could not be opened (absent on this kernel, or no permission), and
    /// the export was not allowed to fall back to the memfd.
    #[error("udmabuf device {path} unavailable: {errno}")]
    UdmabufUnavailable {
        /// The device node tried.
        path: String,
        /// Why `open` failed (`ENOENT`: no such device).
        errno: Errno,
    },

    /// More fds than one `SCM_RIGHTS` message may carry.
    #[error("{count} fds exceed the {max} one message may carry")]
    TooManyFds {
        /// Number of fds asked for.
        count: usize,
        /// The limit (`SCM_MAX_FD`).
        max: usize,
    },

    /// A received message carried more fds than the receiver made room for (`MSG_CTRUNC`); the
    /// kernel dropped the rest.
    #[error("received fds truncated: more than {max_fds} were sent")]
    FdsTruncated {
        /// Room the receiver had, in fds.
        max_fds: usize,
    },

    /// A received datagram was longer than the receive buffer (`MSG_TRUNC`); the rest is lost.
    #[error("received message truncated to the {buf_len}-byte buffer")]
    PayloadTruncated {
        /// Size of the receive buffer, in bytes.
        buf_len: usize,
    },

    /// `Bo::attach` with the DMA ops of a device that serves another `PhysMem` than the BO's
    /// frames belong to: its bus addresses would name other memory.
    #[error("device {device} does not serve the BO's physical memory")]
    WrongPhysMem {
        /// The device's name.
        device: String,
    },

    /// `Bo::attach` for a device that has the BO mapped already, in a direction that does not
    /// cover the one asked for. A device has one mapping of a BO (GEM shmem's cached sg table),
    /// so a narrower existing mapping cannot be widened while it is in use. Nothing changed.
    #[error("device {device} has the BO mapped {mapped:?}, which does not cover {requested:?}")]
    AttachDirection {
        /// The device's name.
        device: String,
        /// The direction of the device's existing mapping.
        mapped: crate::dma::DmaDirection,
        /// The direction asked for.
        requested: crate::dma::DmaDirection,
    },

    /// `Bo::attach` for a second device where one of the two mappings of the BO bounces through
    /// swiotlb and one of them lets its device write: the bounce buffer's copy-back would
    /// overwrite what the other device wrote to the real pages (or its device would miss it).
    /// Allocate the BO where both devices reach it, or attach them behind a system IOMMU.
    /// Nothing new stays mapped.
    #[error(
        "device {device} and device {other} cannot share the BO: one of their mappings bounces"
    )]
    SharedBounce {
        /// The device asking for the mapping.
        device: String,
        /// The device that has the BO mapped already.
        other: String,
    },

    /// A CPU write through a [`CpuAccessGuard`](crate::bo::CpuAccessGuard) whose bracket was
    /// opened without [`CpuAccess::WRITE`](crate::bo::CpuAccess::WRITE). The bracket told the
    /// exporter the CPU only reads (`DMA_BUF_SYNC_READ`), and an exporter may rely on it (skip
    /// the clean at the end), so the devices could miss the write. Nothing was written.
    #[error("CPU write refused: the access bracket was opened {access}")]
    CpuAccessDenied {
        /// The accesses the bracket covers.
        access: crate::bo::CpuAccess,
    },

    // ---- end BO / fd ----

    // ---- DMA ----
    /// A bus range the device cannot emit: `addr..addr + len` (CPU physical) plus the platform's
    /// bus offset ends above the device's DMA mask (`mask`, the largest address it can drive), or
    /// overflows 64 bits, and nothing can bounce it: direct DMA with no swiotlb pool, a
    /// `map_resource`, or a buffer allocator that found no reachable frame (kernel:
    /// `dma_capable()` failing in kernel/dma/direct.h).
    #[error("bus range of {addr} + {len:#x} bytes is beyond the DMA mask {mask:#x}")]
    BeyondDmaMask {
        /// CPU physical address of the first byte.
        addr: PhysAddr,
        /// Length of the range, in bytes.
        len: u64,
        /// The device's DMA mask (largest bus address it can emit).
        mask: u64,
    },

    /// A streaming mapping of physical memory the DMA layer owns: a swiotlb pool, a system
    /// IOMMU's table page or a device's table page (dma-debug's `check_for_illegal_area` for
    /// memory a driver must not hand to a device). The device could overwrite other mappings'
    /// bounce buffers or a page table. Nothing was mapped.
    #[error("{addr} belongs to the DMA layer ({owner:?}) and cannot be mapped for a device")]
    DmaLayerMemory {
        /// The first owned byte of the refused range.
        addr: PhysAddr,
        /// What owns it.
        owner: crate::dma::DmaOwner,
    },

    /// A DMA mask too small to address even one page (`mask < 0xfff`). Nothing was attached.
    #[error("DMA mask {mask:#x} cannot address one page")]
    DmaMaskTooSmall {
        /// The refused mask.
        mask: u64,
    },

    /// The swiotlb pool has no run of `slots_needed` free 2 KiB slots (inside one 128-slot
    /// segment) for a bounce buffer of `len` bytes (kernel: "swiotlb buffer is full").
    #[error("swiotlb full: {len:#x} bytes need {slots_needed} slots, {slots_free} free")]
    SwiotlbFull {
        /// Bytes to bounce.
        len: u64,
        /// 2 KiB slots the bounce buffer needs.
        slots_needed: u64,
        /// Free slots in the whole pool (maybe not contiguous).
        slots_free: u64,
    },

    /// A bounce buffer larger than one swiotlb segment (`IO_TLB_SEGSIZE` = 128 slots of 2 KiB =
    /// 256 KiB, what `swiotlb_max_mapping_size()` reports).
    #[error("{len:#x} bytes exceed the {max:#x}-byte swiotlb mapping limit")]
    SwiotlbTooLarge {
        /// Bytes to bounce.
        len: u64,
        /// The largest bounce buffer, in bytes.
        max: u64,
    },

    /// No live mapping of this device matches the DMA address (an unmap, a sync or an unmap of
    /// a buffer that was never mapped, already unmapped, or mapped by another device).
    #[error("DMA address {dma} (+{len:#x} bytes) is not mapped")]
    DmaNotMapped {
        /// The DMA address given.
        dma: devmmu_pagetable::DmaAddr,
        /// The length given, in bytes.
        len: u64,
    },

    /// A mapping released with the function of another kind (e.g. `unmap_page` of an sg mapping,
    /// `unmap_resource` of a page mapping). The mapping is left in place.
    #[error("DMA address {dma} was mapped as {mapped_as:?}, released as {released_as:?}")]
    DmaWrongKind {
        /// The DMA address given.
        dma: devmmu_pagetable::DmaAddr,
        /// How it was mapped.
        mapped_as: crate::dma::MappingKind,
        /// The kind of release attempted.
        released_as: crate::dma::MappingKind,
    },

    /// `map_resource` of a range that overlaps RAM: resources are MMIO or peer-device addresses,
    /// never memory the CPU caches (kernel: the `pfn_valid` warning in `dma_map_resource`).
    #[error("resource {addr} + {len:#x} bytes overlaps RAM")]
    ResourceIsRam {
        /// First address of the range.
        addr: PhysAddr,
        /// Length in bytes.
        len: u64,
    },

    /// No free, suitably aligned range of `size` bytes is left in an address space: the system
    /// IOMMU domain's IOVA space below the device's DMA mask (reserved regions excluded), or a
    /// device VM's VA space. The one name for running out of addresses, whichever layer.
    #[error("{space} exhausted: no free {size:#x}-byte range at or below {limit:#x}")]
    NoAddressSpace {
        /// Which address space.
        space: AddressSpace,
        /// Bytes requested (after rounding to the granule and alignment).
        size: u64,
        /// Highest address of the space.
        limit: u64,
    },

    /// Writing the system IOMMU's page table failed (an output address beyond its 48 bits, no
    /// memory for a table page). What was written was undone and the IOVA freed.
    #[error("system IOMMU map of {size:#x} bytes at IOVA {iova:#x} failed: {error}")]
    IommuMap {
        /// IOVA of the refused range.
        iova: u64,
        /// Size of the range, in bytes.
        size: u64,
        /// The page table's reason.
        error: devmmu_pagetable::Error,
    },

    /// A two-step IOVA call (`iova_alloc`, ...) on a device without the modelled system IOMMU
    /// (direct DMA, or VFIO, which maps only whole buffers): as `dma_iova_try_alloc` returns
    /// false there, the caller must use `map_page`/`map_sg`.
    #[error("the IOVA API needs the modelled system IOMMU; use map_page/map_sg on this device")]
    IovaApiUnsupported,

    /// An `IovaRange` that is not a live range of this device (freed, or another device's).
    #[error("IOVA range at {iova} is not a live range of this device")]
    IovaRangeUnknown {
        /// Start of the range.
        iova: devmmu_pagetable::DmaAddr,
    },

    /// `offset..offset + len` (bytes) is not inside an IOVA range of `size` bytes.
    #[error("{offset:#x} + {len:#x} bytes is outside an IOVA range of {size:#x} bytes")]
    IovaOutOfRange {
        /// Offset into the range, in bytes.
        offset: u64,
        /// Length, in bytes.
        len: u64,
        /// Size of the range, in bytes.
        size: u64,
    },

    /// A new mapping or allocation was asked of a device after `DmaOps::detach`.
    #[error("device {device} is detached from its DMA ops")]
    DmaDetached {
        /// The device's name.
        device: String,
    },

    /// A buffer handed to the `DmaOps` of another device than the one that allocated it.
    #[error("buffer at DMA address {dma} belongs to another device")]
    DmaWrongDevice {
        /// The buffer's DMA address.
        dma: devmmu_pagetable::DmaAddr,
    },

    /// A reserved IOVA region of the platform that is empty or reversed (`start >= end`).
    #[error("reserved IOVA region [{start:#x}, {end:#x}) is empty")]
    BadReservedRegion {
        /// First address.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    // ---- end DMA ----
    /// An image layout could not be made, or does not fit its BO ([`crate::bo::LayoutError`]).
    #[error("image layout: {0}")]
    Layout(#[from] crate::bo::LayoutError),

    // ---- device VMs ----
    /// A device page-table operation failed (see [`devmmu_pagetable::Error`]); nothing changed.
    #[error("device page table: {0}")]
    PageTable(#[from] devmmu_pagetable::Error),

    /// The device VA range allocator ([`crate::range::RangeError`]) refused its arguments (a
    /// span or alignment it cannot take); running out of space is
    /// [`MmError::NoAddressSpace`], never this.
    #[error("device VA space: {0}")]
    Range(#[from] crate::range::RangeError),

    /// A bind at a fixed IOVA overlaps an existing binding of the VM.
    #[error("IOVA range {iova} + {size:#x} bytes is already bound")]
    VaInUse {
        /// The requested IOVA.
        iova: devmmu_pagetable::Iova,
        /// The requested size in bytes.
        size: u64,
    },

    /// The range lies outside the VM's VA space `[VA_START, limit)`.
    #[error("IOVA range {iova} + {size:#x} bytes is outside the VA space (limit {limit:#x})")]
    VaOutOfRange {
        /// Start of the range.
        iova: devmmu_pagetable::Iova,
        /// Size in bytes.
        size: u64,
        /// Exclusive end of the VA space.
        limit: u64,
    },

    /// An unbind range that covers no binding at all.
    #[error("nothing is bound in IOVA range {iova} + {size:#x} bytes")]
    NotBound {
        /// Start of the range.
        iova: devmmu_pagetable::Iova,
        /// Size in bytes.
        size: u64,
    },

    /// A protection that grants neither read nor write.
    #[error("protection {prot} grants no access")]
    NoAccess {
        /// The refused protection.
        prot: devmmu_pagetable::Prot,
    },

    /// A protection the device's MMU format cannot encode, so the device would get more access
    /// than asked (e.g. read-only on the Intel IPU format, whose entries have no permission
    /// bits: the device could write). Refused unless the device's config accepts unenforced
    /// protections (`DeviceConfig::accept_unenforced_prot`). Nothing was bound.
    #[error("the {format} MMU cannot enforce {prot}: it would grant {granted}")]
    ProtNotEnforced {
        /// The MMU format's name.
        format: &'static str,
        /// The protection asked for.
        prot: devmmu_pagetable::Prot,
        /// What the format's IOPTEs would grant instead.
        granted: devmmu_pagetable::Prot,
    },

    /// A device whose DMA mask reaches further than its MMU format can hold in a table pointer
    /// or leaf (`oa_bits` bits of bus address): table pages or buffers could get bus addresses
    /// the device's page table cannot store. Set a DMA mask of at most `oa_bits` bits (the IPU6
    /// driver sets 39). Nothing was attached.
    #[error("DMA mask {mask:#x} is wider than the {format} MMU's {oa_bits}-bit output addresses")]
    MaskBeyondFormat {
        /// The device's DMA mask.
        mask: u64,
        /// The MMU format's name.
        format: &'static str,
        /// Output-address bits the format holds.
        oa_bits: u32,
    },
    // ---- end device VMs ----
    // ---- VFIO ----
    /// VFIO: sysfs names no IOMMU group for PCI device `device` (no such device, or it sits
    /// behind no IOMMU: boot with `intel_iommu=on` on a platform that has one).
    #[error("no IOMMU group for PCI device {device:?} (no such device, or no IOMMU)")]
    VfioNoGroup {
        /// The PCI address asked for (`DDDD:BB:DD.F`).
        device: String,
    },
    /// VFIO: a device of IOMMU group `group` is not bound to vfio-pci (or another VFIO
    /// driver), so the group cannot be used (`VFIO_GROUP_FLAGS_VIABLE` clear).
    #[error("VFIO group {group} is not viable: bind every device of the group to vfio-pci")]
    VfioGroupNotViable {
        /// The group number (`/dev/vfio/N`).
        group: u32,
    },
    /// VFIO: the kernel's VFIO lacks something devmmu needs.
    #[error("VFIO: unsupported: {what}")]
    VfioUnsupported {
        /// What is missing.
        what: &'static str,
    },
    /// VFIO: an access to region `index` of a device that the region does not allow: no such
    /// region, `[offset, offset + len)` beyond its size (bytes), or not readable/writable.
    #[error("VFIO region {index}: no access to {len} bytes at offset {offset:#x}")]
    VfioRegion {
        /// Region index (BAR n is region n; config space is 7).
        index: u32,
        /// Byte offset in the region.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// A system call failed. `op` names the call (`"memfd_create"`, `"ftruncate"`,
    /// `"fcntl(F_ADD_SEALS)"`, `"mmap"`, `"fstat"`, ...), `errno` is what the kernel returned.
    #[error("{op} failed: {errno}")]
    Os {
        /// The failing call.
        op: &'static str,
        /// The kernel's error code.
        errno: Errno,
    },
}

/// The address space [`MmError::NoAddressSpace`] ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressSpace {
    /// The IOVA space of a device's system IOMMU domain (its bus addresses).
    SystemIova,
    /// The VA space of a device VM (what its own MMU translates).
    DeviceVa,
}

impl core::fmt::Display for AddressSpace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AddressSpace::SystemIova => "system IOMMU IOVA space",
            AddressSpace::DeviceVa => "device VA space",
        })
    }
}

impl MmError {
    /// Wraps a `std::io::Error` from a system call wrapper (memmap2) into [`MmError::Os`].
    pub(crate) fn from_io(op: &'static str, err: &std::io::Error) -> Self {
        let errno = Errno::from_io_error(err).unwrap_or(Errno::IO);
        MmError::Os { op, errno }
    }
}
