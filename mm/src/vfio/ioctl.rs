//! The one way VFIO ioctls are issued: `_IO(VFIO_TYPE, VFIO_BASE + n)` (vfio.h numbers every
//! ioctl this way, with no size or direction in the number; the argument's size is its `argsz`
//! field) and the kernel's return value passed back as an integer.

use core::ffi::c_void;
use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use rustix::ioctl::{opcode, Ioctl, IoctlOutput, Opcode};
use vfio_bindings::bindings::vfio as b;

/// The argument of a VFIO ioctl.
pub(super) enum Arg {
    /// None (`VFIO_GET_API_VERSION`).
    None,
    /// An integer passed by value (`VFIO_CHECK_EXTENSION`, `VFIO_SET_IOMMU`).
    Int(usize),
    /// A pointer to a struct the kernel reads and may write.
    Ptr(*mut c_void),
}

impl Arg {
    /// A pointer to `v`.
    pub(super) fn ptr<T>(v: &mut T) -> Arg {
        Arg::Ptr((v as *mut T).cast())
    }

    /// A pointer to a NUL-terminated string the kernel only reads.
    pub(super) fn cstr(s: &CStr) -> Arg {
        Arg::Ptr(s.as_ptr().cast_mut().cast())
    }
}

struct VfioIoctl {
    nr: u8,
    arg: Arg,
}

// SAFETY: the opcode is `_IO(';', 100 + nr)`; what the argument must be is the caller's contract
// (see `vfio_ioctl`). The output is the raw return value, which the caller interprets.
unsafe impl Ioctl for VfioIoctl {
    type Output = IoctlOutput;

    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        opcode::none(b::VFIO_TYPE, (b::VFIO_BASE as u8).wrapping_add(self.nr))
    }

    fn as_ptr(&mut self) -> *mut c_void {
        match self.arg {
            Arg::None => core::ptr::null_mut(),
            // The kernel reads these ioctls' argument as an unsigned long.
            Arg::Int(v) => v as *mut c_void,
            Arg::Ptr(p) => p,
        }
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _extract_output: *mut c_void,
    ) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// Issues VFIO ioctl number `VFIO_BASE + nr` on `fd` with `arg`; returns the kernel's
/// non-negative return value.
///
/// # Safety
/// `arg` must be what vfio.h specifies for that ioctl on that kind of fd: a pointer to a live,
/// correctly sized struct whose `argsz` covers the memory behind it, or an integer. The effect
/// of the ioctl (e.g. giving a device DMA access to memory) is the caller's to justify.
pub(super) unsafe fn vfio_ioctl(fd: BorrowedFd<'_>, nr: u8, arg: Arg) -> rustix::io::Result<i32> {
    // SAFETY: the caller's contract.
    unsafe { rustix::ioctl::ioctl(fd, VfioIoctl { nr, arg }) }
}
