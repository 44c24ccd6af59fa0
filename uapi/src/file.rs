//! A file: one open of the interface, as a DRM `struct drm_file`.
//!
//! A [`File`] is opened onto one device of a [`Machine`] and owns what its requests create:
//! - a BO handle table (GEM's `object_idr`): handles start at 1, 0 names nothing, a closed
//!   number is handed out again (lowest free first, as `idr_alloc`), and a handle means nothing
//!   in another file;
//! - its VMs, by id (from 1, never reused while the file lives);
//! - the mmap offsets of its BOs (DRM's fake offsets: BO_MMAP hands one out, `devmmu_mmap`
//!   takes it back);
//! - the CPU access brackets its BO_SYNC START opened.
//!
//! BOs are the machine's: a handle holds a reference to a BO, which lives on while a handle of
//! any file, a binding, or an open bracket holds it. Closing the file (dropping it) unbinds its
//! VMs, ends its brackets and closes its handles.
//!
//! This crate keeps its own handle table rather than `devmmu_mm::bo::BoHandles` because a
//! handle here carries more than the BO (its mmap offset, its open bracket) and PRIME import
//! needs the reverse lookup (the handle a file already has for a BO, as
//! `drm_prime_lookup_buf_handle`).
//!
//! Every request method takes the request struct as decoded from the caller (see
//! [`crate::dispatch`]), checks every field before changing anything, and fills the out fields.
//! On error nothing has changed, except where a method says otherwise.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd};
use std::sync::Arc;

use devmmu_mm::bo::{Bo, BoFlags, Caching, CpuAccess, ExportOptions, OwnedCpuAccess};
use devmmu_mm::dma::DmaOpsKind;
use devmmu_mm::phys::{PhysAddr, Zone};
use devmmu_mm::prelude::*;
use parking_lot::Mutex;
use rustix::io::Errno;

use crate::abi::*;
use crate::bind::Shadow;
use crate::errno::errno_of;
use crate::machine::{Machine, MachineDevice};
use crate::mmap;

/// Most live BO handles one file may hold (`-ENOSPC` past it).
pub const MAX_HANDLES: usize = 1 << 16;
/// Most live VMs one file may hold (`-ENOSPC` past it).
pub const MAX_VMS: usize = 1 << 10;
/// First mmap offset BO_MMAP hands out, in bytes (DRM's `DRM_FILE_PAGE_OFFSET_START`: 4 GiB).
pub const MMAP_OFFSET_START: u64 = 1 << 32;

pub(crate) struct HandleEntry {
    pub(crate) bo: Arc<Bo>,
    mmap_offset: Option<u64>,
    sync: Option<OwnedCpuAccess>,
}

pub(crate) struct VmEntry {
    pub(crate) vm: Vm,
    /// What is bound, with the BOs (the VM keeps only their DMA mappings): what VM_BIND checks
    /// an operations array against, and what it re-binds to undo an UNMAP.
    pub(crate) shadow: Shadow,
}

impl VmEntry {
    /// Unbinds everything (the order of `Vm::unbind`: IOPTEs, TLB, tables, DMA mappings).
    fn unbind_all(&mut self) {
        for b in self.vm.bindings() {
            let _ = self.vm.unbind(b.iova, b.size);
        }
        self.shadow.clear();
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) handles: BTreeMap<u32, HandleEntry>,
    pub(crate) vms: BTreeMap<u32, VmEntry>,
    next_vm: u32,
    offsets: BTreeMap<u64, u32>,
    next_offset: u64,
}

impl State {
    pub(crate) fn bo(&self, handle: u32) -> Result<&Arc<Bo>, Errno> {
        self.handles.get(&handle).map(|e| &e.bo).ok_or(Errno::NOENT)
    }

    /// The lowest free handle number, as `idr_alloc(.., 1, 0, ..)`.
    fn free_handle(&self) -> Result<u32, Errno> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Errno::NOSPC);
        }
        let mut want = 1u32;
        for &h in self.handles.keys() {
            if h != want {
                break;
            }
            want += 1;
        }
        Ok(want)
    }

    fn insert(&mut self, bo: Arc<Bo>) -> Result<u32, Errno> {
        let h = self.free_handle()?;
        self.handles.insert(
            h,
            HandleEntry {
                bo,
                mmap_offset: None,
                sync: None,
            },
        );
        Ok(h)
    }
}

/// One handle of a [`FileSummary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleSummary {
    /// The handle.
    pub handle: u32,
    /// The machine's id of its BO.
    pub object_id: u64,
    /// Its mmap offset, once BO_MMAP gave one.
    pub mmap_offset: Option<u64>,
    /// The `DEVMMU_SYNC_READ`/`_WRITE` bits of its open bracket, if one is open.
    pub sync: Option<u8>,
}

/// Everything a file holds, comparable: [`File::summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    /// The handles, in order.
    pub handles: Vec<HandleSummary>,
    /// The VMs, in id order, with their bindings.
    pub vms: Vec<(u32, Vec<BindingInfo>)>,
    /// The next VM id.
    pub next_vm: u32,
    /// The next mmap offset.
    pub next_offset: u64,
}

/// One open of the interface, on one device of a machine.
pub struct File {
    machine: Arc<Machine>,
    device: u32,
    pub(crate) state: Mutex<State>,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("device", &self.device)
            .finish()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        for vm in st.vms.values_mut() {
            vm.unbind_all();
        }
        st.vms.clear();
        // Brackets end and handles drop with the entries.
        st.handles.clear();
    }
}

impl File {
    /// Opens a file on `device` (`DEVMMU_DEVICE_GPU` or `DEVMMU_DEVICE_ISP`) of `machine`.
    /// `flags` must be 0.
    ///
    /// # Errors
    /// `EINVAL`: an unknown device or a non-zero `flags`.
    pub fn open(machine: &Arc<Machine>, device: u32, flags: u32) -> Result<File, Errno> {
        if flags != 0 || machine.device(device).is_none() {
            return Err(Errno::INVAL);
        }
        Ok(File {
            machine: machine.clone(),
            device,
            state: Mutex::new(State {
                next_vm: 1,
                next_offset: MMAP_OFFSET_START,
                ..State::default()
            }),
        })
    }

    /// The machine the file is on.
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    pub(crate) fn dev(&self) -> &MachineDevice {
        self.machine
            .device(self.device)
            .expect("checked when the file was opened")
    }

    /// Live BO handles of this file.
    pub fn handle_count(&self) -> usize {
        self.state.lock().handles.len()
    }

    /// The VM behind `vm_id` in this file, for tests: its bindings (IOVA order).
    pub fn vm_bindings(&self, vm_id: u32) -> Option<Vec<BindingInfo>> {
        self.state.lock().vms.get(&vm_id).map(|v| v.vm.bindings())
    }

    /// The BO behind `handle` in this file, for tests.
    pub fn bo(&self, handle: u32) -> Option<Arc<Bo>> {
        self.state.lock().bo(handle).ok().cloned()
    }

    /// What the file holds, for tests that check a refused request changed nothing.
    pub fn summary(&self) -> FileSummary {
        let st = self.state.lock();
        FileSummary {
            handles: st
                .handles
                .iter()
                .map(|(&h, e)| HandleSummary {
                    handle: h,
                    object_id: self.machine.object_id(&e.bo),
                    mmap_offset: e.mmap_offset,
                    sync: e.sync.as_ref().map(|s| s.access().bits()),
                })
                .collect(),
            vms: st
                .vms
                .iter()
                .map(|(&id, v)| (id, v.vm.bindings()))
                .collect(),
            next_vm: st.next_vm,
            next_offset: st.next_offset,
        }
    }

    /// Checks that each VM's record of its bindings (with the BOs, kept for VM_BIND) covers
    /// exactly what the VM has bound, page by page with the same BO offsets.
    ///
    /// # Errors
    /// A description of the first difference.
    pub fn check_consistency(&self) -> Result<(), String> {
        let st = self.state.lock();
        for (&id, v) in &st.vms {
            let bound: Vec<(u64, u64)> =
                v.vm.bindings()
                    .iter()
                    .flat_map(|b| {
                        (0..b.size / PAGE_SIZE)
                            .map(move |i| (b.iova.0 + i * PAGE_SIZE, b.bo_offset + i * PAGE_SIZE))
                    })
                    .collect();
            let shadow = v.shadow.pages();
            if bound != shadow {
                return Err(format!(
                    "VM {id}: bound pages {bound:x?} differ from the record {shadow:x?}"
                ));
            }
        }
        Ok(())
    }

    /// GET_PARAM. Errors: `EINVAL` for an unknown parameter or a non-zero `pad`.
    pub fn get_param(&self, a: &mut DevmmuGetParam) -> Result<(), Errno> {
        if a.pad != 0 {
            return Err(Errno::INVAL);
        }
        let dev = self.dev().device();
        let cfg = dev.config();
        let st = self.state.lock();
        a.value = match a.param {
            DEVMMU_PARAM_MMU_FORMAT => match cfg.mmu {
                MmuFormat::Ipu => DEVMMU_MMU_IPU,
                MmuFormat::ArmLpae4k => DEVMMU_MMU_ARM_LPAE_4K,
            },
            DEVMMU_PARAM_PAGE_SIZES => cfg.mmu.page_sizes(),
            DEVMMU_PARAM_VA_START => VA_START,
            DEVMMU_PARAM_VA_END => 1u64 << cfg.mmu.iova_bits(),
            DEVMMU_PARAM_DMA_OPS => match dev.dma_ops().kind() {
                DmaOpsKind::Direct => DEVMMU_DMA_OPS_DIRECT,
                DmaOpsKind::Iommu => DEVMMU_DMA_OPS_IOMMU,
                DmaOpsKind::Vfio => DEVMMU_DMA_OPS_VFIO,
            },
            DEVMMU_PARAM_DMA_MASK => dev.dma_mask().0,
            DEVMMU_PARAM_COHERENT => u64::from(cfg.coherent),
            DEVMMU_PARAM_COHERENT_WALK => u64::from(cfg.coherent_walk),
            DEVMMU_PARAM_PAGE_SIZE => PAGE_SIZE,
            DEVMMU_PARAM_LIVE_BOS => self.machine.live_bos(),
            DEVMMU_PARAM_FILE_HANDLES => st.handles.len() as u64,
            DEVMMU_PARAM_FILE_VMS => st.vms.len() as u64,
            DEVMMU_PARAM_FILE_BINDINGS => {
                st.vms.values().map(|v| v.vm.bindings().len() as u64).sum()
            }
            DEVMMU_PARAM_LIVE_MAPPINGS => mmap::live_mappings(),
            _ => return Err(Errno::INVAL),
        };
        Ok(())
    }

    /// BO_CREATE. Errors: `EINVAL` (unknown flag, caching mode 3, size 0 or not a page
    /// multiple), `ENOMEM` (no frames of that shape), `ENOSPC` (handle table full).
    pub fn bo_create(&self, a: &mut DevmmuBoCreate) -> Result<(), Errno> {
        let flags = bo_flags(a.flags)?;
        a.handle = self.create_bo(a.size, flags)?;
        Ok(())
    }

    /// Allocates a BO of `size` bytes and gives it a handle (nothing is left on error).
    fn create_bo(&self, size: u64, flags: BoFlags) -> Result<u32, Errno> {
        let mut st = self.state.lock();
        st.free_handle()?;
        let bo = Bo::new(self.machine.phys(), size, flags).map_err(|e| errno_of(&e))?;
        self.machine.object_id(&bo);
        st.insert(bo)
    }

    /// BO_CREATE_IMAGE. Errors: `EINVAL` (a format this version does not lay out, a modifier
    /// other than LINEAR, a width or height of 0 or above 16384, an unknown pitch rule or flag,
    /// a non-zero `pad`), `ENOMEM`, `ENOSPC` as BO_CREATE. The outputs are written only on
    /// success.
    pub fn bo_create_image(&self, a: &mut DevmmuBoCreateImage) -> Result<(), Errno> {
        use devmmu_mm::bo::{DrmFourcc, DrmModifier, ImageLayout, PitchRule};
        if a.pad != 0 {
            return Err(Errno::INVAL);
        }
        let flags = bo_flags(a.flags)?;
        let rule = match a.pitch_rule {
            DEVMMU_PITCH_RULE_DEVICE if self.device == DEVMMU_DEVICE_ISP => PitchRule::IPU6_ISYS,
            DEVMMU_PITCH_RULE_DEVICE => PitchRule::SCANOUT,
            DEVMMU_PITCH_RULE_DUMB => PitchRule::DUMB,
            DEVMMU_PITCH_RULE_IPU6_ISYS => PitchRule::IPU6_ISYS,
            DEVMMU_PITCH_RULE_SCANOUT => PitchRule::SCANOUT,
            _ => return Err(Errno::INVAL),
        };
        let fourcc = DrmFourcc::try_from(a.fourcc).map_err(|_| Errno::INVAL)?;
        let layout = ImageLayout::with_modifier(
            fourcc,
            DrmModifier::from(a.modifier),
            a.width,
            a.height,
            rule,
        )
        .map_err(|_| Errno::INVAL)?;
        // A 16384x16384 image of 4 bytes per pixel is 1 GiB: every offset fits in u32.
        let mut pitches = [0u32; 4];
        let mut offsets = [0u32; 4];
        for (i, p) in layout.planes().iter().enumerate() {
            pitches[i] = p.stride;
            offsets[i] = u32::try_from(p.offset).map_err(|_| Errno::INVAL)?;
        }
        let size = layout.bo_size();
        a.handle = self.create_bo(size, flags)?;
        a.size = size;
        a.pitches = pitches;
        a.offsets = offsets;
        a.num_planes = layout.planes().len() as u32;
        Ok(())
    }

    /// BO_MMAP. Errors: `EINVAL` (non-zero `flags`), `ENOENT` (no such handle), `ENOSPC` (the
    /// file's mmap offsets are used up).
    pub fn bo_mmap(&self, a: &mut DevmmuBoMmap) -> Result<(), Errno> {
        if a.flags != 0 {
            return Err(Errno::INVAL);
        }
        let mut st = self.state.lock();
        let next = st.next_offset;
        let e = st.handles.get_mut(&a.handle).ok_or(Errno::NOENT)?;
        if let Some(off) = e.mmap_offset {
            a.offset = off;
            return Ok(());
        }
        let end = next.checked_add(e.bo.size()).ok_or(Errno::NOSPC)?;
        e.mmap_offset = Some(next);
        st.next_offset = end;
        st.offsets.insert(next, a.handle);
        a.offset = next;
        Ok(())
    }

    /// GEM_CLOSE. Errors: `EINVAL` (non-zero `pad`), `ENOENT` (no such handle). Ends the
    /// file's open bracket on the BO, if any.
    pub fn gem_close(&self, a: &mut DevmmuGemClose) -> Result<(), Errno> {
        if a.pad != 0 {
            return Err(Errno::INVAL);
        }
        let entry = {
            let mut st = self.state.lock();
            let e = st.handles.remove(&a.handle).ok_or(Errno::NOENT)?;
            if let Some(off) = e.mmap_offset {
                st.offsets.remove(&off);
            }
            e
        };
        // The BO may be freed here, outside the file's lock.
        drop(entry);
        Ok(())
    }

    /// BO_INFO. Errors: `ENOENT` (no such handle).
    pub fn bo_info(&self, a: &mut DevmmuBoInfo) -> Result<(), Errno> {
        let st = self.state.lock();
        let bo = st.bo(a.handle)?;
        let f = bo.flags();
        a.flags = match f.caching {
            Caching::Cached => DEVMMU_BO_CACHED,
            Caching::WriteCombined => DEVMMU_BO_WC,
            Caching::Uncached => DEVMMU_BO_UNCACHED,
        } | if f.contiguous {
            DEVMMU_BO_CONTIGUOUS
        } else {
            0
        } | if matches!(f.zone, Zone::Below(_)) {
            DEVMMU_BO_DMA32
        } else {
            0
        };
        a.size = bo.size();
        a.object_id = self.machine.object_id(bo);
        Ok(())
    }

    /// VM_CREATE. Errors: `EINVAL` (non-zero `flags`), `ENOSPC` (too many VMs, or VM ids used
    /// up), `ENOMEM` (no memory for the root table).
    pub fn vm_create(&self, a: &mut DevmmuVmCreate) -> Result<(), Errno> {
        if a.flags != 0 {
            return Err(Errno::INVAL);
        }
        let mut st = self.state.lock();
        if st.vms.len() >= MAX_VMS || st.next_vm == 0 {
            return Err(Errno::NOSPC);
        }
        let vm = Vm::new(self.dev().device()).map_err(|e| errno_of(&e))?;
        let id = st.next_vm;
        st.next_vm = id.wrapping_add(1);
        st.vms.insert(
            id,
            VmEntry {
                vm,
                shadow: Shadow::default(),
            },
        );
        a.vm_id = id;
        Ok(())
    }

    /// VM_DESTROY. Errors: `EINVAL` (non-zero `pad`), `ENOENT` (no such VM).
    pub fn vm_destroy(&self, a: &mut DevmmuVmDestroy) -> Result<(), Errno> {
        if a.pad != 0 {
            return Err(Errno::INVAL);
        }
        let mut entry = self.state.lock().vms.remove(&a.vm_id).ok_or(Errno::NOENT)?;
        entry.unbind_all();
        Ok(())
    }

    /// PRIME_HANDLE_TO_FD: exports the BO as its sealed memfd (a new fd for the BO's open file;
    /// close-on-exec with `DEVMMU_CLOEXEC`). Errors: `EINVAL` (unknown flag), `ENOENT` (no such
    /// handle), `EMFILE` (no fd left).
    pub fn prime_handle_to_fd(&self, a: &mut DevmmuPrimeHandle) -> Result<(), Errno> {
        if a.flags & !(DEVMMU_CLOEXEC | DEVMMU_RDWR) != 0 {
            return Err(Errno::INVAL);
        }
        let bo = self.state.lock().bo(a.handle)?.clone();
        let fd = export_memfd(&bo)?;
        if a.flags & DEVMMU_CLOEXEC == 0 {
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
        }
        a.fd = fd.into_raw_fd();
        Ok(())
    }

    /// PRIME_FD_TO_HANDLE: imports `fd` (not consumed: the caller keeps it). An fd naming a BO of
    /// this machine (one exported by any file) gives that same BO; if this file has a handle
    /// for it already, that handle is returned (as `drm_gem_prime_fd_to_handle`).
    ///
    /// Errors: `EINVAL` (non-zero `flags`; an fd that is not a memfd sealed as a BO's, or whose
    /// size is not a page multiple), `EBADF` (not an open fd), `EACCES` (not read-write, or
    /// sealed against writing), `EOPNOTSUPP` (a dma-buf), `ENOMEM`, `ENOSPC`.
    pub fn prime_fd_to_handle(&self, a: &mut DevmmuPrimeHandle) -> Result<(), Errno> {
        if a.flags != 0 {
            return Err(Errno::INVAL);
        }
        if a.fd < 0 {
            return Err(Errno::BADF);
        }
        // SAFETY: the number is only used for the `fcntl(F_DUPFD_CLOEXEC)` just below, which
        // fails with EBADF if it is not an open fd; nothing is read or closed through it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(a.fd) };
        let dup = rustix::io::fcntl_dupfd_cloexec(borrowed.as_fd(), 0)?;
        let mut st = self.state.lock();
        let bo = Bo::import(self.machine.phys(), dup, None).map_err(|e| errno_of(&e))?;
        if let Some((&h, _)) = st.handles.iter().find(|(_, e)| Arc::ptr_eq(&e.bo, &bo)) {
            a.handle = h;
            return Ok(());
        }
        // A new BO made for a full table is dropped again here: nothing stays.
        a.handle = st.insert(bo.clone())?;
        self.machine.object_id(&bo);
        Ok(())
    }

    /// BO_SYNC. START opens this file's bracket on the BO (`EBUSY` if one is open); END closes
    /// it, with the same READ/WRITE bits it was opened with (`EINVAL` otherwise, or if none is
    /// open). Errors also: `EINVAL` (unknown flag bits, neither READ nor WRITE), `ENOENT` (no
    /// such handle), and a failed sync's errno (the bracket is then closed all the same).
    pub fn bo_sync(&self, a: &mut DevmmuBoSync) -> Result<(), Errno> {
        if a.flags & !(DEVMMU_SYNC_READ | DEVMMU_SYNC_WRITE | DEVMMU_SYNC_END) != 0 {
            return Err(Errno::INVAL);
        }
        let access = match a.flags & (DEVMMU_SYNC_READ | DEVMMU_SYNC_WRITE) {
            DEVMMU_SYNC_READ => CpuAccess::READ,
            DEVMMU_SYNC_WRITE => CpuAccess::WRITE,
            3 => CpuAccess::READ_WRITE,
            _ => return Err(Errno::INVAL),
        };
        let mut st = self.state.lock();
        let e = st.handles.get_mut(&a.handle).ok_or(Errno::NOENT)?;
        if a.flags & DEVMMU_SYNC_END != 0 {
            match &e.sync {
                Some(open) if open.access() == access => {}
                _ => return Err(Errno::INVAL),
            }
            let open = e.sync.take().expect("checked above");
            open.end().map_err(|e| errno_of(&e))
        } else {
            if e.sync.is_some() {
                return Err(Errno::BUSY);
            }
            e.sync = Some(
                e.bo.begin_cpu_access_owned(access)
                    .map_err(|e| errno_of(&e))?,
            );
            Ok(())
        }
    }

    /// DEVICE_ACCESS: the simulated device reads or writes through the VM's MMU.
    ///
    /// Errors: `EINVAL` (unknown op, size 0 or above `DEVMMU_DEVICE_ACCESS_MAX`, a range that
    /// wraps), `ENOENT` (no such VM), `EFAULT` (a null `data` or one that leaves user space),
    /// `EIO` (the device faulted: an unbound or read-only page; on the ISP's format an unbound
    /// page is the dummy page). A device write that faults has written the pages before the
    /// fault, as hardware would.
    ///
    /// # Safety
    /// The caller's promise ([`crate::user`]): `size` bytes at `data` are readable (device write)
    /// or writable (device read).
    pub unsafe fn device_access(&self, a: &mut DevmmuDeviceAccess) -> Result<(), Errno> {
        if !matches!(a.op, DEVMMU_ACCESS_DEVICE_WRITE | DEVMMU_ACCESS_DEVICE_READ)
            || a.size == 0
            || a.size > DEVMMU_DEVICE_ACCESS_MAX
            || a.va.checked_add(a.size).is_none()
        {
            return Err(Errno::INVAL);
        }
        crate::user::check_range(a.data, a.size, 1)?;
        let st = self.state.lock();
        let vm = &st.vms.get(&a.vm_id).ok_or(Errno::NOENT)?.vm;
        let sim = self.dev().sim();
        let len = a.size as usize;
        let r = if a.op == DEVMMU_ACCESS_DEVICE_WRITE {
            // SAFETY: forwarded promise; the range was checked.
            let data = unsafe { crate::user::read_bytes(a.data, len)? };
            sim.dma_write(vm, Iova(a.va), &data)
        } else {
            let mut buf = vec![0u8; len];
            match sim.dma_read(vm, Iova(a.va), &mut buf) {
                // SAFETY: forwarded promise; the range was checked.
                Ok(()) => unsafe { crate::user::write_bytes(a.data, &buf) }.map(|()| Ok(()))?,
                Err(f) => Err(f),
            }
        };
        if r.is_err() {
            // The fault is the caller's answer; the log would only grow.
            sim.mmu().take_faults();
            return Err(Errno::IO);
        }
        Ok(())
    }

    /// Maps `length` bytes (rounded up to pages) at mmap offset `offset` (from BO_MMAP; an
    /// offset inside a BO's range maps from there) on the CPU, shared, with `prot`
    /// (`DEVMMU_PROT_*`). The mapping is of the BO's memory as the CPU sees it: read it between
    /// BO_SYNC START and END to see what the device wrote. It stays valid after GEM_CLOSE and
    /// after the file is closed, until `devmmu_munmap` (as an mmap of a DRM BO).
    ///
    /// Errors: `EINVAL` (`prot` empty or unknown bits, `length` 0 or wrapping, `offset` not
    /// page-aligned or not inside a BO's range of this file, the range running past the BO),
    /// `ENOMEM` / `EMFILE` (from `mmap` or the fd duplication).
    pub fn mmap(&self, offset: u64, length: u64, prot: u32) -> Result<*mut u8, Errno> {
        if prot == 0 || prot & !(DEVMMU_PROT_READ | DEVMMU_PROT_WRITE) != 0 {
            return Err(Errno::INVAL);
        }
        let len = length
            .checked_next_multiple_of(PAGE_SIZE)
            .filter(|&l| l > 0)
            .ok_or(Errno::INVAL)?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::INVAL);
        }
        let bo = {
            let st = self.state.lock();
            let (&start, &handle) = st
                .offsets
                .range(..=offset)
                .next_back()
                .ok_or(Errno::INVAL)?;
            let bo = st.bo(handle).map_err(|_| Errno::INVAL)?.clone();
            let in_bo = offset - start;
            if in_bo.checked_add(len).is_none_or(|end| end > bo.size()) {
                return Err(Errno::INVAL);
            }
            (bo, in_bo)
        };
        let fd = export_memfd(&bo.0)?;
        mmap::map(fd.as_fd(), bo.1, len, prot)
    }
}

/// A new fd for the BO's sealed memfd (no udmabuf: an fd this build can import back, and the
/// same kind on every machine).
fn export_memfd(bo: &Arc<Bo>) -> Result<std::os::fd::OwnedFd, Errno> {
    let opts = ExportOptions {
        udmabuf: None,
        fallback_to_memfd: true,
    };
    bo.export_with(&opts)
        .map(|x| x.fd)
        .map_err(|e| errno_of(&e))
}

/// The [`BoFlags`] of BO_CREATE's `flags` word. `EINVAL` for unknown bits or caching mode 3.
fn bo_flags(bits: u32) -> Result<BoFlags, Errno> {
    if bits & !DEVMMU_BO_FLAGS_ALL != 0 {
        return Err(Errno::INVAL);
    }
    let caching = match bits & DEVMMU_BO_CACHING_MASK {
        DEVMMU_BO_CACHED => Caching::Cached,
        DEVMMU_BO_WC => Caching::WriteCombined,
        DEVMMU_BO_UNCACHED => Caching::Uncached,
        _ => return Err(Errno::INVAL),
    };
    let mut flags = BoFlags::default().caching(caching);
    if bits & DEVMMU_BO_CONTIGUOUS != 0 {
        flags = flags.contiguous();
    }
    if bits & DEVMMU_BO_DMA32 != 0 {
        flags = flags.zone(Zone::Below(PhysAddr(1 << 32)));
    }
    Ok(flags)
}
