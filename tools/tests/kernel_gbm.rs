//! Real-kernel tier, case (d): a buffer allocated by Mesa's gbm on vgem (the way a compositor or
//! a GL client allocates a scanout or texture buffer), with its fourcc from `drm-fourcc`,
//! exported as a dma-buf and imported into devmmu. Built only with `--features gbm` (it links
//! libgbm); `scripts/kernel/test.sh` builds and runs it in the guest.

use std::os::fd::AsFd;

use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem};
use devmmu_mm::prelude::*;
use drm_fourcc::DrmFourcc;
use gbm::{BufferObjectFlags, Device as GbmDevice};

mod kernel;

use kernel::vgem;

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_gbm_xrgb8888_buffer_imported_by_devmmu() {
    let gbm = GbmDevice::new(vgem()).expect("gbm_create_device on vgem");
    let backend = gbm.backend_name().to_string();
    let (w, h) = (256u32, 128u32);
    let bo = gbm
        .create_buffer_object::<()>(w, h, DrmFourcc::Xrgb8888, BufferObjectFlags::LINEAR)
        .expect("gbm_bo_create XRGB8888 LINEAR");
    let stride = bo.stride();
    let modifier = bo.modifier();
    let len = u64::from(stride) * u64::from(h);
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).unwrap();
    // gbm_bo_get_fd exports without DRM_RDWR: a read-only dma-buf, which devmmu refuses (its
    // BOs are mapped writable) with a clear error. The file's mode is fixed at the first export
    // of a GEM object, so this is shown on a second buffer ...
    let ro_bo = gbm
        .create_buffer_object::<()>(w, h, DrmFourcc::Xrgb8888, BufferObjectFlags::LINEAR)
        .expect("gbm_bo_create");
    let ro = ro_bo.fd().expect("gbm_bo_get_fd");
    match Bo::import(&phys, ro, Some(len)) {
        Err(MmError::FdNotWritable { .. }) => {}
        other => panic!("a read-only dma-buf must be refused: {other:?}"),
    }
    // ... and the first is exported with PRIME from its GEM handle, read-write.
    // SAFETY: gbm_bo_get_handle returns the union's u32 member for a GEM-backed bo.
    let handle = unsafe { bo.handle().u32_ };
    let fd = drm_ffi::gem::handle_to_fd(gbm.as_fd(), handle, drm::CLOEXEC | drm::RDWR)
        .expect("PRIME export of gbm's buffer");
    // SAFETY: the ioctl installed this fd for us.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd.fd) };
    let dbo = Bo::import(&phys, fd, Some(len)).expect("devmmu import of gbm's dma-buf");
    // Pixel (x, y) of the image is at y * stride + 4 * x: devmmu writes a row of pixels ...
    let row: Vec<u8> = (0..w)
        .flat_map(|x| (0xFF00_0000u32 | x).to_le_bytes())
        .collect();
    let cpu = dbo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    cpu.write(u64::from(stride) * 7, &row).unwrap();
    cpu.end().unwrap();
    // ... and gbm's own mapping of the buffer shows it at row 7.
    let seen = bo
        .map(0, 7, w, 1, |m| m.buffer()[..row.len()].to_vec())
        .expect("gbm_bo_map");
    assert_eq!(seen, row, "gbm's mapping must show devmmu's pixels");
    let nv12 = gbm.create_buffer_object::<()>(w, h, DrmFourcc::Nv12, BufferObjectFlags::LINEAR);
    println!(
        "gbm (d): backend {backend:?} on vgem: {w}x{h} XRGB8888 LINEAR (stride {stride}, \
         modifier {modifier:?}); gbm_bo_get_fd's read-only dma-buf refused by devmmu \
         (FdNotWritable), the PRIME read-write export of {len} bytes imported; a row \
         of {} bytes written by devmmu read back through gbm_bo_map; NV12: {}",
        row.len(),
        match nv12 {
            Ok(_) => "allocated too".to_string(),
            Err(e) => format!("refused ({e}), as Mesa's dumb-buffer backends do"),
        }
    );
}
