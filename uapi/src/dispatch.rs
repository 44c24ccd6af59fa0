//! The dispatcher: a request number and a user address in, a request method called, the
//! struct written back.
//!
//! As `drm_ioctl` (drivers/gpu/drm/drm_ioctl.c): the request number is taken apart
//! ([`crate::ioc`]); a type other than `'d'` or a number no request has is `-ENOTTY` (the
//! kernel's answer to an ioctl a driver does not know); a direction that differs from the
//! request's is `-EINVAL`. The argument struct is then copied in (zero-extended or checked, see
//! [`crate::user`]), the request runs, and for a `DRM_IOWR` request the struct is copied back
//! (only the bytes the caller's struct has).

use rustix::io::Errno;

use crate::abi::*;
use crate::file::File;
use crate::ioc::{self, DIR_READ, DIR_WRITE};
use crate::user::{read_struct, write_struct};

/// The requests, by number (`_IOC_NR` minus `DRM_COMMAND_BASE`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    /// `DEVMMU_IOCTL_GET_PARAM`.
    GetParam,
    /// `DEVMMU_IOCTL_BO_CREATE`.
    BoCreate,
    /// `DEVMMU_IOCTL_BO_MMAP`.
    BoMmap,
    /// `DEVMMU_IOCTL_GEM_CLOSE`.
    GemClose,
    /// `DEVMMU_IOCTL_BO_INFO`.
    BoInfo,
    /// `DEVMMU_IOCTL_VM_CREATE`.
    VmCreate,
    /// `DEVMMU_IOCTL_VM_DESTROY`.
    VmDestroy,
    /// `DEVMMU_IOCTL_VM_BIND`.
    VmBind,
    /// `DEVMMU_IOCTL_PRIME_HANDLE_TO_FD`.
    PrimeHandleToFd,
    /// `DEVMMU_IOCTL_PRIME_FD_TO_HANDLE`.
    PrimeFdToHandle,
    /// `DEVMMU_IOCTL_BO_SYNC`.
    BoSync,
    /// `DEVMMU_IOCTL_DEVICE_ACCESS`.
    DeviceAccess,
    /// `DEVMMU_IOCTL_BO_CREATE_IMAGE`.
    BoCreateImage,
}

impl Request {
    /// Every request, in number order.
    pub const ALL: [Request; 13] = [
        Request::GetParam,
        Request::BoCreate,
        Request::BoMmap,
        Request::GemClose,
        Request::BoInfo,
        Request::VmCreate,
        Request::VmDestroy,
        Request::VmBind,
        Request::PrimeHandleToFd,
        Request::PrimeFdToHandle,
        Request::BoSync,
        Request::DeviceAccess,
        Request::BoCreateImage,
    ];

    /// The request number (`DEVMMU_IOCTL_*`) of this version.
    pub const fn number(self) -> u32 {
        match self {
            Request::GetParam => DEVMMU_IOCTL_GET_PARAM,
            Request::BoCreate => DEVMMU_IOCTL_BO_CREATE,
            Request::BoMmap => DEVMMU_IOCTL_BO_MMAP,
            Request::GemClose => DEVMMU_IOCTL_GEM_CLOSE,
            Request::BoInfo => DEVMMU_IOCTL_BO_INFO,
            Request::VmCreate => DEVMMU_IOCTL_VM_CREATE,
            Request::VmDestroy => DEVMMU_IOCTL_VM_DESTROY,
            Request::VmBind => DEVMMU_IOCTL_VM_BIND,
            Request::PrimeHandleToFd => DEVMMU_IOCTL_PRIME_HANDLE_TO_FD,
            Request::PrimeFdToHandle => DEVMMU_IOCTL_PRIME_FD_TO_HANDLE,
            Request::BoSync => DEVMMU_IOCTL_BO_SYNC,
            Request::DeviceAccess => DEVMMU_IOCTL_DEVICE_ACCESS,
            Request::BoCreateImage => DEVMMU_IOCTL_BO_CREATE_IMAGE,
        }
    }

    /// The request `request` names, whatever its size field says.
    ///
    /// # Errors
    /// `ENOTTY`: not a devmmu request. `EINVAL`: a devmmu request number with the wrong
    /// direction bits.
    pub fn decode(request: u32) -> Result<Request, Errno> {
        let d = ioc::decode(request);
        if d.ty != ioc::TYPE || d.nr < ioc::COMMAND_BASE {
            return Err(Errno::NOTTY);
        }
        let r = *Request::ALL
            .get((d.nr - ioc::COMMAND_BASE) as usize)
            .ok_or(Errno::NOTTY)?;
        if ioc::decode(r.number()).dir != d.dir {
            return Err(Errno::INVAL);
        }
        Ok(r)
    }
}

/// Copies a `T` in, runs `f`, copies it back if `dir` has `_IOC_READ`.
///
/// # Safety
/// The caller's promise for `size` bytes at `arg` ([`crate::user`]).
unsafe fn call<T: Abi>(
    arg: u64,
    size: usize,
    dir: u32,
    f: impl FnOnce(&mut T) -> Result<(), Errno>,
) -> Result<(), Errno> {
    debug_assert!(dir & DIR_WRITE != 0);
    // SAFETY: forwarded promise.
    let mut a: T = unsafe { read_struct(arg, size)? };
    f(&mut a)?;
    if dir & DIR_READ != 0 {
        // SAFETY: forwarded promise (a `DRM_IOWR` argument is writable too).
        unsafe { write_struct(arg, size, &a)? };
    }
    Ok(())
}

impl File {
    /// Runs request `request` (a `DEVMMU_IOCTL_*`, its size field the caller's struct size) on
    /// the struct at user address `arg`, as `ioctl(2)` on a DRM file.
    ///
    /// # Errors
    /// `ENOTTY` (not a devmmu request), `EINVAL` (wrong direction bits), those of
    /// the struct copy (`EFAULT`, `EINVAL`, `E2BIG`: see [`crate::user`]), then the request's own.
    ///
    /// # Safety
    /// The caller's promise ([`crate::user`]): the struct at `arg` is readable and, for a
    /// `DRM_IOWR` request, writable, for the size the request number declares; the addresses
    /// inside it (VM_BIND's `ops`, DEVICE_ACCESS's `data`) likewise for the sizes they declare.
    pub unsafe fn ioctl(&self, request: u32, arg: u64) -> Result<(), Errno> {
        let r = Request::decode(request)?;
        let d = ioc::decode(request);
        let (size, dir) = (d.size, d.dir);
        // SAFETY (each call): the caller's promise, forwarded.
        unsafe {
            match r {
                Request::GetParam => call(arg, size, dir, |a| self.get_param(a)),
                Request::BoCreate => call(arg, size, dir, |a| self.bo_create(a)),
                Request::BoMmap => call(arg, size, dir, |a| self.bo_mmap(a)),
                Request::GemClose => call(arg, size, dir, |a| self.gem_close(a)),
                Request::BoInfo => call(arg, size, dir, |a| self.bo_info(a)),
                Request::VmCreate => call(arg, size, dir, |a| self.vm_create(a)),
                Request::VmDestroy => call(arg, size, dir, |a| self.vm_destroy(a)),
                Request::VmBind => call(arg, size, dir, |a| self.vm_bind(a)),
                Request::PrimeHandleToFd => call(arg, size, dir, |a| self.prime_handle_to_fd(a)),
                Request::PrimeFdToHandle => call(arg, size, dir, |a| self.prime_fd_to_handle(a)),
                Request::BoSync => call(arg, size, dir, |a| self.bo_sync(a)),
                Request::DeviceAccess => call(arg, size, dir, |a| self.device_access(a)),
                Request::BoCreateImage => call(arg, size, dir, |a| self.bo_create_image(a)),
            }
        }
    }
}
