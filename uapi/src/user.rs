//! Reading and writing the caller's memory: the `copy_from_user` / `copy_to_user` of this
//! interface.
//!
//! # The trust boundary
//! A C caller hands us addresses: the argument struct of a request, the operations array of
//! VM_BIND, the buffer of DEVICE_ACCESS. In one process nothing can tell whether an address
//! points at memory the caller owns, so the caller promises it: **every address it passes, with
//! the size it declares for it (the request number's size field, `op_count * op_stride`, a
//! `size` field), is readable (and, where the driver writes back, writable) memory that nothing
//! else touches during the call.** That promise is the one thing not checked. Everything else
//! is, before any byte is read:
//! - a null address: `-EFAULT`;
//! - an address that is not a multiple of the alignment of what it points at (8 for the structs
//!   holding a `u64`, 4 for `struct devmmu_prime_handle`, 1 for a byte buffer): `-EINVAL`;
//! - a range that wraps around the address space or ends above the largest user address
//!   (2^56, the x86-64 5-level-paging and arm64 52-bit user space both fit below it), as the
//!   kernel's `access_ok`: `-EFAULT`;
//! - a length computed from caller values that overflows: `-EINVAL` (checked where computed).
//!
//! # Struct sizes (extensibility)
//! The caller's struct may differ in size from ours (it was built against another version of
//! the header); the request number carries its size. As the kernel's `copy_struct_from_user`
//! (include/linux/uaccess.h, used by openat2, clone3, sched_setattr) does:
//! - a smaller struct is zero-extended: the fields it lacks read as 0 (which every field is
//!   designed to mean "absent" or "default"); only the bytes it has are written back;
//! - a larger struct is accepted if every byte past ours is zero (a newer caller that uses no
//!   newer feature), else `-E2BIG`; its extra bytes are never written.
//!
//! `drm_ioctl` (drivers/gpu/drm/drm_ioctl.c) zero-extends the same way, but ignores the extra
//! bytes of a larger struct; refusing non-zero ones is stricter, so that a newer caller asking
//! for a feature this version lacks is told so instead of silently not getting it.

use core::mem::{align_of, size_of};

use rustix::io::Errno;

use crate::abi::Abi;

/// End (exclusive) of the addresses a caller's memory may occupy.
pub const USER_ADDR_LIMIT: u64 = 1 << 56;

/// Checks a user range: `addr` non-null, a multiple of `align`, and `[addr, addr + len)`
/// below [`USER_ADDR_LIMIT`] without wrapping.
///
/// # Errors
/// `EFAULT` for a null address or a range that wraps or leaves user space, `EINVAL` for a
/// misaligned one.
pub fn check_range(addr: u64, len: u64, align: usize) -> Result<(), Errno> {
    if addr == 0 {
        return Err(Errno::FAULT);
    }
    if !addr.is_multiple_of(align as u64) {
        return Err(Errno::INVAL);
    }
    match addr.checked_add(len) {
        Some(end) if end <= USER_ADDR_LIMIT => Ok(()),
        _ => Err(Errno::FAULT),
    }
}

/// Copies `len` bytes from user address `addr`.
///
/// # Errors
/// Those of [`check_range`] with alignment 1.
///
/// # Safety
/// The caller's promise (module docs): `[addr, addr + len)` is readable memory.
pub unsafe fn read_bytes(addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    check_range(addr, len as u64, 1)?;
    let mut buf = vec![0u8; len];
    // SAFETY: `addr` is non-null and the range does not wrap (checked above); the caller
    // promises it is readable. `buf` is a fresh allocation of `len` bytes, so they do not
    // overlap.
    unsafe { core::ptr::copy_nonoverlapping(addr as usize as *const u8, buf.as_mut_ptr(), len) };
    Ok(buf)
}

/// Copies `data` to user address `addr`.
///
/// # Errors
/// Those of [`check_range`] with alignment 1.
///
/// # Safety
/// The caller's promise (module docs): `[addr, addr + data.len())` is writable memory.
pub unsafe fn write_bytes(addr: u64, data: &[u8]) -> Result<(), Errno> {
    check_range(addr, data.len() as u64, 1)?;
    // SAFETY: as in `read_bytes`, writable by the caller's promise; `data` is our own buffer,
    // not the caller's memory, so they do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), addr as usize as *mut u8, data.len()) };
    Ok(())
}

/// The bytes of an ABI struct.
pub(crate) fn as_bytes<T: Abi>(v: &T) -> &[u8] {
    // SAFETY: `T: Abi` has no padding (every byte is initialised) and any alignment is fine for
    // `u8`; the slice borrows `v`.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// An ABI struct made from `bytes` (at most `size_of::<T>()`; the rest is zero).
pub(crate) fn from_bytes<T: Abi>(bytes: &[u8]) -> T {
    let mut v = T::default();
    let n = bytes.len().min(size_of::<T>());
    // SAFETY: `T: Abi` is integers only, so every byte pattern is a valid `T`; we write at most
    // `size_of::<T>()` bytes into `v`, from a slice that holds at least `n` bytes.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

/// Reads a `T` that the caller passes as `user_size` bytes at `addr` (zero-extended or
/// checked for zero tail, as the module docs say).
///
/// # Errors
/// Those of [`check_range`] (alignment: `T`'s), `E2BIG` for a larger struct with a non-zero
/// byte past `T`.
///
/// # Safety
/// The caller's promise: `user_size` bytes at `addr` are readable.
pub(crate) unsafe fn read_struct<T: Abi>(addr: u64, user_size: usize) -> Result<T, Errno> {
    check_range(addr, user_size as u64, align_of::<T>())?;
    // SAFETY: forwarded promise; the range was checked.
    let bytes = unsafe { read_bytes(addr, user_size)? };
    if bytes.len() > size_of::<T>() && bytes[size_of::<T>()..].iter().any(|&b| b != 0) {
        return Err(Errno::TOOBIG);
    }
    Ok(from_bytes(&bytes))
}

/// Writes `v` back to a caller's struct of `user_size` bytes at `addr`: the first
/// `min(user_size, size_of::<T>())` bytes; the caller's extra bytes are left alone.
///
/// # Errors
/// Those of [`check_range`].
///
/// # Safety
/// The caller's promise: `user_size` bytes at `addr` are writable.
pub(crate) unsafe fn write_struct<T: Abi>(addr: u64, user_size: usize, v: &T) -> Result<(), Errno> {
    let n = user_size.min(size_of::<T>());
    // SAFETY: forwarded promise; `n <= user_size`.
    unsafe { write_bytes(addr, &as_bytes(v)[..n]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::DevmmuBoCreate;

    #[test]
    fn range_checks() {
        assert_eq!(check_range(0, 8, 8), Err(Errno::FAULT));
        assert_eq!(check_range(0x1004, 8, 8), Err(Errno::INVAL));
        assert_eq!(check_range(u64::MAX - 7, 16, 8), Err(Errno::FAULT));
        assert_eq!(check_range(USER_ADDR_LIMIT - 8, 16, 8), Err(Errno::FAULT));
        assert_eq!(check_range(0x1000, 8, 8), Ok(()));
    }

    #[test]
    fn smaller_is_zero_extended_larger_must_be_zero() {
        #[repr(align(8))]
        struct Aligned([u8; 32]);
        let mut aligned = Aligned([0xff; 32]);
        let buf = &mut aligned.0;
        buf[..16].copy_from_slice(as_bytes(&DevmmuBoCreate {
            size: 4096,
            flags: 0,
            handle: 9,
        }));
        let addr = buf.as_ptr() as u64;
        // SAFETY: `buf` is 32 readable bytes.
        let small: DevmmuBoCreate = unsafe { read_struct(addr, 8) }.unwrap();
        assert_eq!(
            small,
            DevmmuBoCreate {
                size: 4096,
                flags: 0,
                handle: 0
            }
        );
        // SAFETY: as above.
        assert_eq!(
            unsafe { read_struct::<DevmmuBoCreate>(addr, 32) },
            Err(Errno::TOOBIG)
        );
        buf[16..].fill(0);
        // SAFETY: as above.
        let big: DevmmuBoCreate = unsafe { read_struct(addr, 32) }.unwrap();
        assert_eq!(big.handle, 9);
    }
}
