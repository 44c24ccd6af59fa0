//! devmmu-uapi's C ABI as a C library (`libdevmmu_c.a`, `libdevmmu_c.so`): the functions of
//! [`devmmu_uapi::capi`], declared in `uapi/include/devmmu.h`. Link with
//! `-ldevmmu_c -lpthread -ldl -lm`.

pub use devmmu_uapi::capi::{devmmu_close, devmmu_ioctl, devmmu_mmap, devmmu_munmap, devmmu_open};
