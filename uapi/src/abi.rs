//! The binary interface: request numbers, argument structs and their constants.
//!
//! Everything here is what C sees in `devmmu.h` (generated from this file by cbindgen). Rules,
//! as the DRM driver uapis this follows (include/uapi/drm/panthor_drm.h, xe_drm.h, msm_drm.h):
//! - every struct is `#[repr(C)]`, made of `u32` / `u64` / `i32` fields only, with no implicit
//!   padding: where alignment would leave a hole there is an explicit `pad` field, which must be
//!   zero (-EINVAL otherwise), so that a later version can give it a meaning;
//! - pointers and sizes are `u64` (a caller passes `(uint64_t)(uintptr_t)ptr`), sizes in bytes;
//! - flags words refuse unknown bits (-EINVAL);
//! - size and every field offset are asserted at compile time (`layout!` below), so a change
//!   that moves a field does not build.
//!
//! Handles (BO handles, VM ids) are `u32`, never 0 (0 names nothing, so a zeroed struct never
//! names a live object), and belong to one file: the same number in another file names
//! something else or nothing.

use core::mem::size_of;

use crate::ioc::{drm_iow, drm_iowr};

/// Asserts at compile time a struct's size, each field's offset, and that the fields fill the
/// struct (no implicit padding, so no uninitialised bytes ever cross the interface).
macro_rules! layout {
    ($ty:ty, $size:expr, { $($field:ident : $fty:ty => $off:expr),* $(,)? }) => {
        const _: () = {
            assert!(size_of::<$ty>() == $size);
            $( assert!(core::mem::offset_of!($ty, $field) == $off); )*
            assert!(0 $(+ size_of::<$fty>())* == $size);
        };
    };
}

// ---- devices (devmmu_open) ----

/// `devmmu_open` device: the GPU-style device, ARM LPAE 4 KiB MMU (48-bit VA), 48-bit DMA
/// mask, not cache-coherent (data or table walker), TLB invalidated by range.
pub const DEVMMU_DEVICE_GPU: u32 = 1;
/// `devmmu_open` device: the camera ISP, Intel IPU MMU (32-bit VA, no permission bits, so
/// read-only bindings are refused), 32-bit DMA mask (buffers above 4 GiB bounce through
/// swiotlb), not cache-coherent, whole-TLB invalidation.
pub const DEVMMU_DEVICE_ISP: u32 = 2;

// ---- GET_PARAM ----

/// `struct devmmu_get_param`: reads one parameter of the file's device (msm_drm.h
/// `struct drm_msm_param`, panthor's DEV_QUERY reduced to one value).
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `param` | in: a `DEVMMU_PARAM_*` |
/// | 4 | 4 | `pad` | in: must be 0 |
/// | 8 | 8 | `value` | out |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuGetParam {
    /// Which parameter (`DEVMMU_PARAM_*`).
    pub param: u32,
    /// Must be 0.
    pub pad: u32,
    /// Out: its value.
    pub value: u64,
}
layout!(DevmmuGetParam, 16, { param: u32 => 0, pad: u32 => 4, value: u64 => 8 });

/// Parameter: the MMU format (`DEVMMU_MMU_*`).
pub const DEVMMU_PARAM_MMU_FORMAT: u32 = 1;
/// Parameter: the leaf sizes the MMU format can map, as a bitmask of sizes in bytes (bit `n`
/// set: a leaf of `1 << n` bytes), as the kernel's `pgsize_bitmap`.
pub const DEVMMU_PARAM_PAGE_SIZES: u32 = 2;
/// Parameter: the first usable device VA of a VM, in bytes (page 0 is never mapped).
pub const DEVMMU_PARAM_VA_START: u32 = 3;
/// Parameter: the end (exclusive) of a VM's VA space, in bytes (`1 << iova_bits`).
pub const DEVMMU_PARAM_VA_END: u32 = 4;
/// Parameter: the system DMA ops the device was given (`DEVMMU_DMA_OPS_*`).
pub const DEVMMU_PARAM_DMA_OPS: u32 = 5;
/// Parameter: the device's DMA mask (largest bus address it can emit).
pub const DEVMMU_PARAM_DMA_MASK: u32 = 6;
/// Parameter: 1 if the device's data accesses snoop the CPU caches, else 0 (then BO_SYNC
/// brackets are what make CPU and device see each other's writes).
pub const DEVMMU_PARAM_COHERENT: u32 = 7;
/// Parameter: 1 if the MMU's table walker snoops the CPU caches, else 0.
pub const DEVMMU_PARAM_COHERENT_WALK: u32 = 8;
/// Parameter: the page size of BO sizes, offsets and VAs, in bytes (4096).
pub const DEVMMU_PARAM_PAGE_SIZE: u32 = 9;
/// Parameter (leak checks): BOs alive on the machine the file is on, made or imported through
/// this interface by any file, held by a handle, a binding, or an open BO_SYNC bracket.
pub const DEVMMU_PARAM_LIVE_BOS: u32 = 10;
/// Parameter (leak checks): live BO handles of this file.
pub const DEVMMU_PARAM_FILE_HANDLES: u32 = 11;
/// Parameter (leak checks): live VMs of this file.
pub const DEVMMU_PARAM_FILE_VMS: u32 = 12;
/// Parameter (leak checks): bindings in this file's VMs (a binding split by a partial UNMAP
/// counts as its pieces).
pub const DEVMMU_PARAM_FILE_BINDINGS: u32 = 13;
/// Parameter (leak checks): CPU mappings made by `devmmu_mmap` and not yet unmapped with
/// `devmmu_munmap`, in the whole process.
pub const DEVMMU_PARAM_LIVE_MAPPINGS: u32 = 14;

/// `DEVMMU_PARAM_MMU_FORMAT` value: Intel IPU MMU (2 levels of 1024 32-bit entries).
pub const DEVMMU_MMU_IPU: u64 = 1;
/// `DEVMMU_PARAM_MMU_FORMAT` value: ARM LPAE stage 1, 4 KiB granule, 48-bit VA.
pub const DEVMMU_MMU_ARM_LPAE_4K: u64 = 2;
/// `DEVMMU_PARAM_DMA_OPS` value: direct DMA (bus address = physical address + offset), with
/// swiotlb bouncing for what the DMA mask does not reach.
pub const DEVMMU_DMA_OPS_DIRECT: u64 = 1;
/// `DEVMMU_PARAM_DMA_OPS` value: behind a system IOMMU.
pub const DEVMMU_DMA_OPS_IOMMU: u64 = 2;
/// `DEVMMU_PARAM_DMA_OPS` value: the running kernel's IOMMU, through VFIO.
pub const DEVMMU_DMA_OPS_VFIO: u64 = 3;

// ---- BO_CREATE ----

/// `struct devmmu_bo_create`: allocates a buffer object and returns a handle to it
/// (panthor_drm.h `struct drm_panthor_bo_create`).
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 8 | `size` | in: bytes, a non-zero multiple of 4096 |
/// | 8 | 4 | `flags` | in: `DEVMMU_BO_*` |
/// | 12 | 4 | `handle` | out: the new handle (never 0) |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuBoCreate {
    /// Size in bytes: a non-zero multiple of 4096.
    pub size: u64,
    /// `DEVMMU_BO_*` bits; unknown bits are refused.
    pub flags: u32,
    /// Out: the handle of the new BO in this file.
    pub handle: u32,
}
layout!(DevmmuBoCreate, 16, { size: u64 => 0, flags: u32 => 8, handle: u32 => 12 });

/// BO_CREATE flags, bits 0-1: the CPU caching mode. Write-back cached (the default, 0).
pub const DEVMMU_BO_CACHED: u32 = 0;
/// CPU caching mode: write-combined.
pub const DEVMMU_BO_WC: u32 = 1;
/// CPU caching mode: uncached.
pub const DEVMMU_BO_UNCACHED: u32 = 2;
/// Mask of the caching-mode field (value 3 is refused).
pub const DEVMMU_BO_CACHING_MASK: u32 = 3;
/// BO_CREATE flag: one physically contiguous run of frames.
pub const DEVMMU_BO_CONTIGUOUS: u32 = 1 << 2;
/// BO_CREATE flag: frames below 4 GiB (as `GFP_DMA32`), so a 32-bit device reaches them
/// without bouncing.
pub const DEVMMU_BO_DMA32: u32 = 1 << 3;
/// Every BO_CREATE flag bit this version knows.
pub const DEVMMU_BO_FLAGS_ALL: u32 =
    DEVMMU_BO_CACHING_MASK | DEVMMU_BO_CONTIGUOUS | DEVMMU_BO_DMA32;

// ---- BO_CREATE_IMAGE ----

/// `struct devmmu_bo_create_image`: allocates a BO for an image of one DRM format and modifier
/// and returns its handle with the layout of its planes: DRM's `DRM_IOCTL_MODE_CREATE_DUMB`
/// (`struct drm_mode_create_dumb`: width, height in, pitch and size out) with a fourcc, a
/// modifier and several planes, whose `pitches` and `offsets` are what
/// `struct drm_mode_fb_cmd2` and `VkSubresourceLayout` take. The layout follows the kernel's
/// `drm_format_info` table (drivers/gpu/drm/drm_fourcc.c) and the pitch rule asked for.
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `width` | in: pixels, 1 to 16384 |
/// | 4 | 4 | `height` | in: pixels, 1 to 16384 |
/// | 8 | 4 | `fourcc` | in: a `DRM_FORMAT_*` code (include/uapi/drm/drm_fourcc.h) |
/// | 12 | 4 | `pitch_rule` | in: a `DEVMMU_PITCH_RULE_*` |
/// | 16 | 8 | `modifier` | in: `DRM_FORMAT_MOD_LINEAR` (0) only |
/// | 24 | 4 | `flags` | in: `DEVMMU_BO_*`, as BO_CREATE |
/// | 28 | 4 | `handle` | out: the new handle (never 0) |
/// | 32 | 8 | `size` | out: the BO's size in bytes (the layout rounded up to 4096) |
/// | 40 | 16 | `pitches[4]` | out: bytes per row of each plane (0 past `num_planes`) |
/// | 56 | 16 | `offsets[4]` | out: byte offset of each plane in the BO (0 past `num_planes`) |
/// | 72 | 4 | `num_planes` | out: 1 to 4 |
/// | 76 | 4 | `pad` | in: must be 0 |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuBoCreateImage {
    /// Width in pixels, 1 to 16384.
    pub width: u32,
    /// Height in pixels, 1 to 16384.
    pub height: u32,
    /// The `DRM_FORMAT_*` fourcc code; formats with one pixel per block (RGB, packed and
    /// planar Y'CbCr such as NV12, YUV420, YUYV), else `EINVAL`.
    pub fourcc: u32,
    /// `DEVMMU_PITCH_RULE_*`: the alignment of rows and planes.
    pub pitch_rule: u32,
    /// The format modifier: `DRM_FORMAT_MOD_LINEAR` (0), else `EINVAL`.
    pub modifier: u64,
    /// `DEVMMU_BO_*` bits, as BO_CREATE.
    pub flags: u32,
    /// Out: the handle of the new BO in this file.
    pub handle: u32,
    /// Out: the BO's size in bytes.
    pub size: u64,
    /// Out: each plane's stride in bytes.
    pub pitches: [u32; 4],
    /// Out: each plane's offset from the start of the BO, in bytes.
    pub offsets: [u32; 4],
    /// Out: the number of planes.
    pub num_planes: u32,
    /// Must be 0.
    pub pad: u32,
}
layout!(DevmmuBoCreateImage, 80, {
    width: u32 => 0, height: u32 => 4, fourcc: u32 => 8, pitch_rule: u32 => 12,
    modifier: u64 => 16, flags: u32 => 24, handle: u32 => 28, size: u64 => 32,
    pitches: [u32; 4] => 40, offsets: [u32; 4] => 56, num_planes: u32 => 72, pad: u32 => 76
});

/// BO_CREATE_IMAGE pitch rule: the file's device's own (the GPU: `DEVMMU_PITCH_RULE_SCANOUT`;
/// the ISP: `DEVMMU_PITCH_RULE_IPU6_ISYS`).
pub const DEVMMU_PITCH_RULE_DEVICE: u32 = 0;
/// Pitch rule of a minimal dumb buffer: no padding (`pitch = width * cpp`, planes packed).
pub const DEVMMU_PITCH_RULE_DUMB: u32 = 1;
/// Pitch rule of the IPU6 input system: rows and planes on 64-byte boundaries.
pub const DEVMMU_PITCH_RULE_IPU6_ISYS: u32 = 2;
/// Pitch rule of a display's linear scanout: 64-byte pitch, planes on 4096-byte boundaries.
pub const DEVMMU_PITCH_RULE_SCANOUT: u32 = 3;

// ---- BO_MMAP ----

/// `struct devmmu_bo_mmap`: returns the offset to pass to `devmmu_mmap` to map a BO on the
/// CPU (panthor_drm.h `struct drm_panthor_bo_mmap_offset`, DRM's fake mmap offset).
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `handle` | in |
/// | 4 | 4 | `flags` | in: must be 0 |
/// | 8 | 8 | `offset` | out: a multiple of 4096 |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuBoMmap {
    /// The BO's handle in this file.
    pub handle: u32,
    /// Must be 0.
    pub flags: u32,
    /// Out: the mmap offset (bytes, page-aligned), valid in this file while the handle lives.
    pub offset: u64,
}
layout!(DevmmuBoMmap, 16, { handle: u32 => 0, flags: u32 => 4, offset: u64 => 8 });

// ---- GEM_CLOSE ----

/// `struct devmmu_gem_close`: closes a handle (drm.h `struct drm_gem_close`). The BO lives on
/// while something else holds it (another handle, a binding, another file, an exported fd's
/// importer).
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `handle` | in |
/// | 4 | 4 | `pad` | in: must be 0 |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuGemClose {
    /// The handle to close.
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
}
layout!(DevmmuGemClose, 8, { handle: u32 => 0, pad: u32 => 4 });

// ---- BO_INFO ----

/// `struct devmmu_bo_info`: what a handle names (msm_drm.h `DRM_MSM_GEM_INFO`). Two handles
/// (of one file or of two) name the same BO exactly when their `object_id`s are equal.
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `handle` | in |
/// | 4 | 4 | `flags` | out: the BO_CREATE flags (an imported BO: cached, scattered) |
/// | 8 | 8 | `size` | out: bytes |
/// | 16 | 8 | `object_id` | out: machine-wide id of the BO, never 0, never reused |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuBoInfo {
    /// The handle to look up.
    pub handle: u32,
    /// Out: the BO's `DEVMMU_BO_*` flags.
    pub flags: u32,
    /// Out: its size in bytes.
    pub size: u64,
    /// Out: its object id.
    pub object_id: u64,
}
layout!(DevmmuBoInfo, 24, { handle: u32 => 0, flags: u32 => 4, size: u64 => 8, object_id: u64 => 16 });

// ---- VM_CREATE / VM_DESTROY ----

/// `struct devmmu_vm_create`: creates a device VM (an address space with its own page table)
/// on the file's device (panthor_drm.h `struct drm_panthor_vm_create`).
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `flags` | in: must be 0 |
/// | 4 | 4 | `vm_id` | out: never 0 |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuVmCreate {
    /// Must be 0.
    pub flags: u32,
    /// Out: the new VM's id in this file.
    pub vm_id: u32,
}
layout!(DevmmuVmCreate, 8, { flags: u32 => 0, vm_id: u32 => 4 });

/// `struct devmmu_vm_destroy`: unbinds everything a VM has bound, then destroys it
/// (panthor_drm.h `struct drm_panthor_vm_destroy`).
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `vm_id` | in |
/// | 4 | 4 | `pad` | in: must be 0 |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuVmDestroy {
    /// The VM's id in this file.
    pub vm_id: u32,
    /// Must be 0.
    pub pad: u32,
}
layout!(DevmmuVmDestroy, 8, { vm_id: u32 => 0, pad: u32 => 4 });

// ---- VM_BIND ----

/// `struct devmmu_vm_bind`: applies an array of MAP / UNMAP operations to a VM, all or nothing
/// (panthor_drm.h `struct drm_panthor_vm_bind` with its `drm_panthor_obj_array`, xe_drm.h
/// `struct drm_xe_vm_bind`).
///
/// The array holds `op_count` elements of `op_stride` bytes each, at the user address `ops`
/// (8-byte aligned). `op_stride` is the caller's `sizeof(struct devmmu_vm_bind_op)`: smaller
/// elements (an older caller) are zero-extended, larger ones (a newer caller) must have zero
/// bytes past the known struct, as for the request struct itself.
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `vm_id` | in |
/// | 4 | 4 | `flags` | in: must be 0 |
/// | 8 | 4 | `op_count` | in: 1 to `DEVMMU_VM_BIND_MAX_OPS` |
/// | 12 | 4 | `op_stride` | in: a multiple of 8, 8 to `DEVMMU_VM_BIND_MAX_STRIDE` bytes |
/// | 16 | 8 | `ops` | in: user address of the array |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuVmBind {
    /// The VM's id in this file.
    pub vm_id: u32,
    /// Must be 0.
    pub flags: u32,
    /// Number of operations.
    pub op_count: u32,
    /// Size in bytes of one element of the array.
    pub op_stride: u32,
    /// User address of the first `struct devmmu_vm_bind_op`.
    pub ops: u64,
}
layout!(DevmmuVmBind, 24, { vm_id: u32 => 0, flags: u32 => 4, op_count: u32 => 8, op_stride: u32 => 12, ops: u64 => 16 });

/// Most operations one VM_BIND takes.
pub const DEVMMU_VM_BIND_MAX_OPS: u32 = 1024;
/// Largest `op_stride` VM_BIND takes, in bytes.
pub const DEVMMU_VM_BIND_MAX_STRIDE: u32 = 4096;

/// `struct devmmu_vm_bind_op`: one operation of a VM_BIND (panthor_drm.h
/// `struct drm_panthor_vm_bind_op`).
///
/// | offset | size | field | MAP | UNMAP |
/// |---|---|---|---|---|
/// | 0 | 4 | `op` | `DEVMMU_VM_BIND_OP_MAP` | `DEVMMU_VM_BIND_OP_UNMAP` |
/// | 4 | 4 | `flags` | `DEVMMU_VM_BIND_READ` and/or `_WRITE` | 0 |
/// | 8 | 4 | `handle` | the BO | 0 |
/// | 12 | 4 | `pad` | 0 | 0 |
/// | 16 | 8 | `bo_offset` | bytes into the BO, page-aligned | 0 |
/// | 24 | 8 | `va` | device VA, page-aligned | device VA, page-aligned |
/// | 32 | 8 | `size` | bytes, page multiple, non-zero | bytes, page multiple, non-zero |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuVmBindOp {
    /// `DEVMMU_VM_BIND_OP_MAP` or `DEVMMU_VM_BIND_OP_UNMAP`.
    pub op: u32,
    /// MAP: `DEVMMU_VM_BIND_READ` | `DEVMMU_VM_BIND_WRITE` (at least one). UNMAP: 0.
    pub flags: u32,
    /// MAP: the BO's handle in this file. UNMAP: 0.
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
    /// MAP: offset into the BO in bytes. UNMAP: 0.
    pub bo_offset: u64,
    /// First device VA, in bytes.
    pub va: u64,
    /// Length in bytes.
    pub size: u64,
}
layout!(DevmmuVmBindOp, 40, { op: u32 => 0, flags: u32 => 4, handle: u32 => 8, pad: u32 => 12, bo_offset: u64 => 16, va: u64 => 24, size: u64 => 32 });

/// VM_BIND operation: map `size` bytes of a BO from `bo_offset` at `va`, which must be free.
pub const DEVMMU_VM_BIND_OP_MAP: u32 = 1;
/// VM_BIND operation: unmap `[va, va + size)`, which may cut bindings (the pieces outside stay
/// bound) and cover holes, but must hit at least one bound page.
pub const DEVMMU_VM_BIND_OP_UNMAP: u32 = 2;
/// VM_BIND MAP flag: the device may read.
pub const DEVMMU_VM_BIND_READ: u32 = 1;
/// VM_BIND MAP flag: the device may write.
pub const DEVMMU_VM_BIND_WRITE: u32 = 2;

// ---- PRIME ----

/// `struct devmmu_prime_handle`: PRIME_HANDLE_TO_FD exports a BO as a file descriptor;
/// PRIME_FD_TO_HANDLE imports one (drm.h `struct drm_prime_handle`, same layout).
///
/// | offset | size | field | HANDLE_TO_FD | FD_TO_HANDLE |
/// |---|---|---|---|---|
/// | 0 | 4 | `handle` | in | out |
/// | 4 | 4 | `flags` | in: `DEVMMU_CLOEXEC`, `DEVMMU_RDWR` | in: must be 0 |
/// | 8 | 4 | `fd` | out | in |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuPrimeHandle {
    /// The BO's handle in this file.
    pub handle: u32,
    /// HANDLE_TO_FD: `DEVMMU_CLOEXEC` | `DEVMMU_RDWR`. FD_TO_HANDLE: 0.
    pub flags: u32,
    /// The file descriptor.
    pub fd: i32,
}
layout!(DevmmuPrimeHandle, 12, { handle: u32 => 0, flags: u32 => 4, fd: i32 => 8 });

/// PRIME_HANDLE_TO_FD flag: the new fd is close-on-exec (`DRM_CLOEXEC` = `O_CLOEXEC`).
pub const DEVMMU_CLOEXEC: u32 = 0o2000000;
/// PRIME_HANDLE_TO_FD flag: the fd may be mapped writable (`DRM_RDWR` = `O_RDWR`). Accepted for
/// DRM compatibility; every exported fd is read-write (it is the BO's sealed memfd).
pub const DEVMMU_RDWR: u32 = 0o2;

// ---- BO_SYNC ----

/// `struct devmmu_bo_sync`: begins or ends CPU access to a BO (include/uapi/linux/dma-buf.h
/// `DMA_BUF_IOCTL_SYNC`, with the BO named by handle). Between START and END the CPU owns the
/// BO: reads through a `devmmu_mmap` mapping see what the device wrote before START, and what
/// the CPU writes reaches the device at END.
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `handle` | in |
/// | 4 | 4 | `flags` | in: `DEVMMU_SYNC_START` or `_END`, with `_READ` and/or `_WRITE` |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuBoSync {
    /// The BO's handle in this file.
    pub handle: u32,
    /// `DEVMMU_SYNC_*` bits.
    pub flags: u32,
}
layout!(DevmmuBoSync, 8, { handle: u32 => 0, flags: u32 => 4 });

/// BO_SYNC: the CPU reads (`DMA_BUF_SYNC_READ`).
pub const DEVMMU_SYNC_READ: u32 = 1;
/// BO_SYNC: the CPU writes (`DMA_BUF_SYNC_WRITE`).
pub const DEVMMU_SYNC_WRITE: u32 = 2;
/// BO_SYNC: begin CPU access (`DMA_BUF_SYNC_START`, 0).
pub const DEVMMU_SYNC_START: u32 = 0;
/// BO_SYNC: end CPU access (`DMA_BUF_SYNC_END`).
pub const DEVMMU_SYNC_END: u32 = 4;

// ---- DEVICE_ACCESS ----

/// `struct devmmu_device_access` (for tests): makes the simulated device read or write `size`
/// bytes at device VA `va` of a VM, through its MMU, from or into the caller's buffer `data`.
/// There is no DRM equivalent: on hardware, a job submission does this.
///
/// | offset | size | field | direction |
/// |---|---|---|---|
/// | 0 | 4 | `vm_id` | in |
/// | 4 | 4 | `op` | in: `DEVMMU_ACCESS_DEVICE_WRITE` or `_DEVICE_READ` |
/// | 8 | 8 | `va` | in: device VA |
/// | 16 | 8 | `data` | in: user address of `size` bytes |
/// | 24 | 8 | `size` | in: 1 to `DEVMMU_DEVICE_ACCESS_MAX` bytes |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevmmuDeviceAccess {
    /// The VM's id in this file.
    pub vm_id: u32,
    /// `DEVMMU_ACCESS_*`.
    pub op: u32,
    /// First device VA, in bytes.
    pub va: u64,
    /// User address of the caller's buffer.
    pub data: u64,
    /// Length in bytes.
    pub size: u64,
}
layout!(DevmmuDeviceAccess, 32, { vm_id: u32 => 0, op: u32 => 4, va: u64 => 8, data: u64 => 16, size: u64 => 24 });

/// DEVICE_ACCESS op: the device writes the caller's bytes to memory at `va`.
pub const DEVMMU_ACCESS_DEVICE_WRITE: u32 = 1;
/// DEVICE_ACCESS op: the device reads memory at `va` into the caller's buffer.
pub const DEVMMU_ACCESS_DEVICE_READ: u32 = 2;
/// Largest DEVICE_ACCESS, in bytes (16 MiB).
pub const DEVMMU_DEVICE_ACCESS_MAX: u64 = 16 << 20;

// ---- devmmu_mmap ----

/// `devmmu_mmap` protection: readable.
pub const DEVMMU_PROT_READ: u32 = 1;
/// `devmmu_mmap` protection: writable.
pub const DEVMMU_PROT_WRITE: u32 = 2;

// ---- request numbers ----
//
// Written as literals so that the generated header has plain numbers; each is checked against
// `DRM_IOW` / `DRM_IOWR` of its struct below.

/// `DRM_IOWR(DRM_COMMAND_BASE + 0x00, struct devmmu_get_param)` = `0xc0106440`.
pub const DEVMMU_IOCTL_GET_PARAM: u32 = 0xc010_6440;
/// `DRM_IOWR(DRM_COMMAND_BASE + 0x01, struct devmmu_bo_create)` = `0xc0106441`.
pub const DEVMMU_IOCTL_BO_CREATE: u32 = 0xc010_6441;
/// `DRM_IOWR(DRM_COMMAND_BASE + 0x02, struct devmmu_bo_mmap)` = `0xc0106442`.
pub const DEVMMU_IOCTL_BO_MMAP: u32 = 0xc010_6442;
/// `DRM_IOW(DRM_COMMAND_BASE + 0x03, struct devmmu_gem_close)` = `0x40086443`.
pub const DEVMMU_IOCTL_GEM_CLOSE: u32 = 0x4008_6443;
/// `DRM_IOWR(DRM_COMMAND_BASE + 0x04, struct devmmu_bo_info)` = `0xc0186444`.
pub const DEVMMU_IOCTL_BO_INFO: u32 = 0xc018_6444;
/// `DRM_IOWR(DRM_COMMAND_BASE + 0x05, struct devmmu_vm_create)` = `0xc0086445`.
pub const DEVMMU_IOCTL_VM_CREATE: u32 = 0xc008_6445;
/// `DRM_IOW(DRM_COMMAND_BASE + 0x06, struct devmmu_vm_destroy)` = `0x40086446`.
pub const DEVMMU_IOCTL_VM_DESTROY: u32 = 0x4008_6446;
/// `DRM_IOW(DRM_COMMAND_BASE + 0x07, struct devmmu_vm_bind)` = `0x40186447`.
pub const DEVMMU_IOCTL_VM_BIND: u32 = 0x4018_6447;
/// `DRM_IOWR(DRM_COMMAND_BASE + 0x08, struct devmmu_prime_handle)` = `0xc00c6448`.
pub const DEVMMU_IOCTL_PRIME_HANDLE_TO_FD: u32 = 0xc00c_6448;
/// `DRM_IOWR(DRM_COMMAND_BASE + 0x09, struct devmmu_prime_handle)` = `0xc00c6449`.
pub const DEVMMU_IOCTL_PRIME_FD_TO_HANDLE: u32 = 0xc00c_6449;
/// `DRM_IOW(DRM_COMMAND_BASE + 0x0a, struct devmmu_bo_sync)` = `0x4008644a`.
pub const DEVMMU_IOCTL_BO_SYNC: u32 = 0x4008_644a;
/// `DRM_IOW(DRM_COMMAND_BASE + 0x0b, struct devmmu_device_access)` = `0x4020644b`.
pub const DEVMMU_IOCTL_DEVICE_ACCESS: u32 = 0x4020_644b;
/// `DRM_IOWR(DRM_COMMAND_BASE + 0x0c, struct devmmu_bo_create_image)` = `0xc050644c`.
pub const DEVMMU_IOCTL_BO_CREATE_IMAGE: u32 = 0xc050_644c;

const _: () = {
    assert!(DEVMMU_IOCTL_GET_PARAM == drm_iowr(0x00, size_of::<DevmmuGetParam>()));
    assert!(DEVMMU_IOCTL_BO_CREATE == drm_iowr(0x01, size_of::<DevmmuBoCreate>()));
    assert!(DEVMMU_IOCTL_BO_MMAP == drm_iowr(0x02, size_of::<DevmmuBoMmap>()));
    assert!(DEVMMU_IOCTL_GEM_CLOSE == drm_iow(0x03, size_of::<DevmmuGemClose>()));
    assert!(DEVMMU_IOCTL_BO_INFO == drm_iowr(0x04, size_of::<DevmmuBoInfo>()));
    assert!(DEVMMU_IOCTL_VM_CREATE == drm_iowr(0x05, size_of::<DevmmuVmCreate>()));
    assert!(DEVMMU_IOCTL_VM_DESTROY == drm_iow(0x06, size_of::<DevmmuVmDestroy>()));
    assert!(DEVMMU_IOCTL_VM_BIND == drm_iow(0x07, size_of::<DevmmuVmBind>()));
    assert!(DEVMMU_IOCTL_PRIME_HANDLE_TO_FD == drm_iowr(0x08, size_of::<DevmmuPrimeHandle>()));
    assert!(DEVMMU_IOCTL_PRIME_FD_TO_HANDLE == drm_iowr(0x09, size_of::<DevmmuPrimeHandle>()));
    assert!(DEVMMU_IOCTL_BO_SYNC == drm_iow(0x0a, size_of::<DevmmuBoSync>()));
    assert!(DEVMMU_IOCTL_DEVICE_ACCESS == drm_iow(0x0b, size_of::<DevmmuDeviceAccess>()));
    assert!(DEVMMU_IOCTL_BO_CREATE_IMAGE == drm_iowr(0x0c, size_of::<DevmmuBoCreateImage>()));
};

/// The argument structs: `#[repr(C)]`, integer fields only, no implicit padding (asserted by
/// `layout!`), so every byte pattern is a valid value and every byte of a value is initialised.
///
/// # Safety
/// Implement only for such a struct: [`crate::user`] reads it from raw bytes and hands its
/// bytes back to the caller.
pub(crate) unsafe trait Abi: Copy + Default + core::fmt::Debug + 'static {}

// SAFETY (each): `#[repr(C)]`, fields `u32`/`u64`/`i32` only, and `layout!` above asserts that
// the fields fill the struct with no padding.
unsafe impl Abi for DevmmuGetParam {}
// SAFETY: as above.
unsafe impl Abi for DevmmuBoCreate {}
// SAFETY: as above.
unsafe impl Abi for DevmmuBoMmap {}
// SAFETY: as above.
unsafe impl Abi for DevmmuGemClose {}
// SAFETY: as above.
unsafe impl Abi for DevmmuBoInfo {}
// SAFETY: as above.
unsafe impl Abi for DevmmuVmCreate {}
// SAFETY: as above.
unsafe impl Abi for DevmmuVmDestroy {}
// SAFETY: as above.
unsafe impl Abi for DevmmuVmBind {}
// SAFETY: as above.
unsafe impl Abi for DevmmuVmBindOp {}
// SAFETY: as above.
unsafe impl Abi for DevmmuPrimeHandle {}
// SAFETY: as above.
unsafe impl Abi for DevmmuBoSync {}
// SAFETY: as above.
unsafe impl Abi for DevmmuDeviceAccess {}
// SAFETY: as above (the arrays are of `u32`, with no padding between elements).
unsafe impl Abi for DevmmuBoCreateImage {}
