//! devmmu-uapi's C ABI as a C library (`libdevmmu.a`, `libdevmmu.so`): the functions of
//! [`devmmu_uapi::capi`], declared in `uapi/include/devmmu.h`. Link with
//! `-ldevmmu -lpthread -ldl -lm`.

pub use devmmu_uapi::capi::{devmmu_close, devmmu_ioctl, devmmu_mmap, devmmu_munmap, devmmu_open};
