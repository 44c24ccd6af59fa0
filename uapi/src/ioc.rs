//! Request numbers, encoded as Linux encodes ioctl numbers.
//!
//! The bit layout is the generic one of include/uapi/asm-generic/ioctl.h (x86, arm64, riscv):
//!
//! | bits  | field | meaning |
//! |-------|-------|---------|
//! | 0-7   | nr    | request number within its type |
//! | 8-15  | type  | the subsystem's letter: `'d'` (0x64), DRM's `DRM_IOCTL_BASE` |
//! | 16-29 | size  | size in bytes of the caller's argument struct (at most 16383) |
//! | 30-31 | dir   | 1 = `_IOC_WRITE` (caller → driver), 2 = `_IOC_READ` (driver → caller), 3 = both |
//!
//! devmmu's requests use DRM's type letter and numbers from `DRM_COMMAND_BASE` (0x40) up, as a
//! DRM driver's private ioctls do (include/uapi/drm/drm.h), built with `DRM_IOW` / `DRM_IOWR`,
//! so that the same structs can one day travel over a real DRM ioctl. Because the size field is
//! the caller's struct size, a caller built against an older or newer header says which
//! version of a struct it passes (see [`crate::user`] for what is done with the difference).

/// `_IOC_NRBITS`.
pub const NR_BITS: u32 = 8;
/// `_IOC_TYPEBITS`.
pub const TYPE_BITS: u32 = 8;
/// `_IOC_SIZEBITS`.
pub const SIZE_BITS: u32 = 14;
/// `_IOC_NRSHIFT`.
pub const NR_SHIFT: u32 = 0;
/// `_IOC_TYPESHIFT`.
pub const TYPE_SHIFT: u32 = NR_SHIFT + NR_BITS;
/// `_IOC_SIZESHIFT`.
pub const SIZE_SHIFT: u32 = TYPE_SHIFT + TYPE_BITS;
/// `_IOC_DIRSHIFT`.
pub const DIR_SHIFT: u32 = SIZE_SHIFT + SIZE_BITS;
/// `_IOC_WRITE`: the driver reads the caller's struct.
pub const DIR_WRITE: u32 = 1;
/// `_IOC_READ`: the driver writes the caller's struct back.
pub const DIR_READ: u32 = 2;
/// Largest struct size a request number can carry, in bytes (`(1 << _IOC_SIZEBITS) - 1`).
pub const MAX_SIZE: u32 = (1 << SIZE_BITS) - 1;

/// `DRM_IOCTL_BASE`, the type letter of every devmmu request.
pub const TYPE: u32 = b'd' as u32;
/// `DRM_COMMAND_BASE`: the first request number a DRM driver may use for its own requests.
pub const COMMAND_BASE: u32 = 0x40;

/// `_IOC(dir, type, nr, size)`. `size` must be at most [`MAX_SIZE`] (checked at compile time
/// when used in a constant).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(
        size <= MAX_SIZE as usize,
        "struct too large for an ioctl number"
    );
    assert!(dir <= 3 && ty <= 0xff && nr <= 0xff);
    (dir << DIR_SHIFT) | ((size as u32) << SIZE_SHIFT) | (ty << TYPE_SHIFT) | (nr << NR_SHIFT)
}

/// `DRM_IOW(DRM_COMMAND_BASE + nr, type)`: the driver reads a `size`-byte struct.
pub const fn drm_iow(nr: u32, size: usize) -> u32 {
    ioc(DIR_WRITE, TYPE, COMMAND_BASE + nr, size)
}

/// `DRM_IOWR(DRM_COMMAND_BASE + nr, type)`: the driver reads a `size`-byte struct and writes it
/// back.
pub const fn drm_iowr(nr: u32, size: usize) -> u32 {
    ioc(DIR_WRITE | DIR_READ, TYPE, COMMAND_BASE + nr, size)
}

/// A request number taken apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decoded {
    /// `_IOC_DIR`: [`DIR_WRITE`], [`DIR_READ`], both or none.
    pub dir: u32,
    /// `_IOC_TYPE`.
    pub ty: u32,
    /// `_IOC_NR`.
    pub nr: u32,
    /// `_IOC_SIZE`: the caller's struct size in bytes.
    pub size: usize,
}

/// Takes `request` apart (`_IOC_DIR`, `_IOC_TYPE`, `_IOC_NR`, `_IOC_SIZE`).
pub const fn decode(request: u32) -> Decoded {
    Decoded {
        dir: request >> DIR_SHIFT,
        ty: (request >> TYPE_SHIFT) & ((1 << TYPE_BITS) - 1),
        nr: (request >> NR_SHIFT) & ((1 << NR_BITS) - 1),
        size: ((request >> SIZE_SHIFT) & ((1 << SIZE_BITS) - 1)) as usize,
    }
}

/// `request` with its size field replaced by `size` bytes (what a caller built against another
/// version of a struct sends).
pub const fn with_size(request: u32, size: usize) -> u32 {
    let d = decode(request);
    ioc(d.dir, d.ty, d.nr, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_kernel_encoding() {
        // DRM_IOCTL_GEM_CLOSE = DRM_IOW(0x09, struct drm_gem_close) = 0x40086409 (drm.h).
        assert_eq!(ioc(DIR_WRITE, TYPE, 0x09, 8), 0x4008_6409);
        // DRM_IOCTL_PRIME_HANDLE_TO_FD = DRM_IOWR(0x2d, struct drm_prime_handle) = 0xc00c642d.
        assert_eq!(ioc(DIR_WRITE | DIR_READ, TYPE, 0x2d, 12), 0xc00c_642d);
        let d = decode(0xc00c_642d);
        assert_eq!((d.dir, d.ty, d.nr, d.size), (3, TYPE, 0x2d, 12));
        assert_eq!(with_size(0xc00c_642d, 16), 0xc010_642d);
    }
}
