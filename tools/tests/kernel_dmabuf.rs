//! Real-kernel tier: devmmu BOs as real dma-bufs, shared with a real DRM driver (vgem, through
//! the `drm` crate's PRIME calls), allocated as libcamera does, and written by a real DMA engine
//! (edu) through devmmu's IOPTEs. Runs only inside the test guest (`scripts/kernel/test.sh`).

mod kernel;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use devmmu_mm::bo::{AllocSource, DmaBufAllocator, ExportOptions, FdKind};
use devmmu_mm::device::MmuFormat;
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem, PAGE_SIZE};
use devmmu_mm::prelude::*;
use drm::control::Device as _;
use drm_fourcc::DrmFourcc;
use kernel::{pattern, rig, vgem, Card};

/// `DMA_BUF_IOCTL_SYNC` START (`end == false`) or END for read+write, on a peer's dma-buf fd.
fn peer_sync(fd: BorrowedFd<'_>, end: bool) {
    #[repr(C)]
    struct Sync {
        flags: u64,
    }
    let flags = 3 | if end { 4 } else { 0 };
    // SAFETY: DMA_BUF_IOCTL_SYNC takes a `dma_buf_sync` by pointer; `fd` is a dma-buf.
    unsafe {
        let op =
            rustix::ioctl::Setter::<{ rustix::ioctl::opcode::write::<Sync>(b'b', 0) }, Sync>::new(
                Sync { flags },
            );
        rustix::ioctl::ioctl(fd, op)
    }
    .expect("DMA_BUF_IOCTL_SYNC");
}

/// The identity of the file behind an fd (device and inode).
fn file_id(fd: BorrowedFd<'_>) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

/// A BO exported as a udmabuf dma-buf and imported by vgem with PRIME. vgem cannot `mmap` an
/// imported object (drm_gem_dumb_map_offset refuses imports), so the test maps what vgem
/// exports for it: PRIME re-export of an imported object gives the original dma-buf file.
struct SharedWithVgem {
    bo: Arc<Bo>,
    card: Card,
    handle: drm::buffer::Handle,
    /// vgem's re-export of its handle.
    vgem_fd: std::os::fd::OwnedFd,
}

fn share_with_vgem(phys: &Arc<PhysMem>, size: u64) -> SharedWithVgem {
    let bo = Bo::new(phys, size, BoFlags::default()).unwrap();
    let opts = ExportOptions {
        fallback_to_memfd: false,
        ..ExportOptions::default()
    };
    let exported = bo.export_with(&opts).expect("udmabuf export");
    assert_eq!(exported.kind, FdKind::DmaBuf);
    let card = vgem();
    let handle = card
        .prime_fd_to_buffer(exported.fd.as_fd())
        .expect("vgem PRIME import");
    let vgem_fd = card
        .buffer_to_prime_fd(handle, drm::CLOEXEC | drm::RDWR)
        .expect("vgem PRIME re-export");
    assert_eq!(
        file_id(vgem_fd.as_fd()),
        file_id(exported.fd.as_fd()),
        "vgem's object must be backed by our dma-buf"
    );
    SharedWithVgem {
        bo,
        card,
        handle,
        vgem_fd,
    }
}

/// A shared mapping of dma-buf `fd`, unmapped on drop.
struct FdMap {
    ptr: *mut u8,
    len: usize,
}

impl FdMap {
    fn new(fd: BorrowedFd<'_>, len: usize) -> FdMap {
        // SAFETY: a fresh shared mapping of the dma-buf; nothing else aliases the range.
        let ptr = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )
        }
        .expect("mmap of the dma-buf");
        FdMap {
            ptr: ptr.cast(),
            len,
        }
    }

    fn read(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        // SAFETY: `ptr` maps `len` readable bytes while `self` lives.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), self.len) };
        v
    }

    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: in bounds of the mapping, as checked.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
    }
}

impl Drop for FdMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// (a) devmmu exports a BO through udmabuf; vgem imports it with PRIME; the same bytes are seen
/// on both sides, and importing vgem's export back gives devmmu the same BO.
#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_dmabuf_udmabuf_export_imported_by_vgem() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).unwrap();
    let s = share_with_vgem(&phys, 4 * PAGE_SIZE);
    let data = pattern(s.bo.size() as usize, 3);
    let cpu = s.bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    cpu.write(0, &data).unwrap();
    cpu.end().unwrap();
    let map = FdMap::new(s.vgem_fd.as_fd(), s.bo.size() as usize);
    peer_sync(s.vgem_fd.as_fd(), false);
    assert_eq!(map.read(), data, "vgem's dma-buf must show devmmu's bytes");
    map.write(100, b"written through vgem's fd");
    peer_sync(s.vgem_fd.as_fd(), true);
    let cpu = s.bo.begin_cpu_access(CpuAccess::READ).unwrap();
    let mut got = [0u8; 25];
    cpu.read(100, &mut got).unwrap();
    cpu.end().unwrap();
    assert_eq!(&got, b"written through vgem's fd");
    let dup = rustix::io::fcntl_dupfd_cloexec(&s.vgem_fd, 0).unwrap();
    let back = Bo::import(&phys, dup, Some(s.bo.size())).unwrap();
    assert!(Arc::ptr_eq(&back, &s.bo), "PRIME self-import through vgem");
    println!(
        "dmabuf (a): BO of {} bytes exported as a udmabuf dma-buf; vgem imported it (GEM handle \
         {}) and re-exported the same file; {} bytes equal through it, 25 bytes written there \
         read back by devmmu; importing vgem's fd gave back the same BO",
        s.bo.size(),
        u32::from(s.handle),
        data.len()
    );
    s.card.close_buffer(s.handle).unwrap();
}

/// (a) with a device: edu writes a devmmu BO through devmmu's IOPTEs while vgem holds it; vgem's
/// dma-buf shows the bytes.
fn edu_writes_bo_shared_with_vgem(format: MmuFormat) {
    let rig = rig(format);
    let s = share_with_vgem(&rig.phys, 2 * PAGE_SIZE);
    let vm = Vm::new(&rig.device).unwrap();
    let iova = vm
        .bind(&s.bo, 0, s.bo.size(), Placement::Anywhere, Prot::RW)
        .unwrap();
    let data = pattern(5000, 41);
    rig.edu
        .write(&vm.context(), Iova(iova.get() + 1000), &data)
        .unwrap();
    let map = FdMap::new(s.vgem_fd.as_fd(), s.bo.size() as usize);
    peer_sync(s.vgem_fd.as_fd(), false);
    let seen = map.read();
    peer_sync(s.vgem_fd.as_fd(), true);
    assert_eq!(&seen[1000..6000], &data[..], "vgem must see what edu wrote");
    assert!(seen[..1000].iter().chain(&seen[6000..]).all(|&b| b == 0));
    println!(
        "dmabuf (a+edu): {}: edu wrote {} bytes through the device MMU into a BO that vgem \
         imported; vgem's dma-buf shows them, the {} bytes around them still zero",
        format.name(),
        data.len(),
        seen.len() - data.len()
    );
    vm.unbind(iova, s.bo.size()).unwrap();
    s.card.close_buffer(s.handle).unwrap();
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_dmabuf_edu_writes_bo_shared_with_vgem_ipu() {
    edu_writes_bo_shared_with_vgem(MmuFormat::Ipu);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_dmabuf_edu_writes_bo_shared_with_vgem_arm() {
    edu_writes_bo_shared_with_vgem(MmuFormat::ArmLpae4k);
}

/// (b) vgem allocates a dumb buffer and exports it with PRIME; devmmu imports the dma-buf (the
/// CPU sides agree through the DMA_BUF_IOCTL_SYNC brackets), binds it, edu writes through
/// devmmu's IOPTEs, and vgem's own mapping shows the bytes. VFIO cannot pin the dma-buf's
/// VM_PFNMAP mapping, so the DMA layer bounces it (as swiotlb does), and the bytes reach vgem's
/// pages at the sync for the CPU.
fn vgem_buffer_written_by_edu(format: MmuFormat) {
    let card = vgem();
    // 64 x 32 XRGB8888: 8 KiB, two pages.
    let mut dumb = card
        .create_dumb_buffer((64, 32), DrmFourcc::Xrgb8888, 32)
        .expect("vgem dumb buffer");
    let len = 64 * 32 * 4;
    let handle = drm::buffer::Buffer::handle(&dumb);
    {
        let mut m = card.map_dumb_buffer(&mut dumb).unwrap();
        m.as_mut().fill(0x11);
    }
    let fd = card
        .buffer_to_prime_fd(handle, drm::CLOEXEC | drm::RDWR)
        .expect("vgem PRIME export");
    let rig = rig(format);
    let bo = Bo::import(&rig.phys, fd, Some(len as u64)).expect("devmmu import of vgem's dma-buf");
    assert!(bo.is_imported());
    assert_eq!(bo.size(), len as u64);
    let cpu = bo.begin_cpu_access(CpuAccess::READ_WRITE).unwrap();
    let mut first = vec![0u8; len];
    cpu.read(0, &mut first).unwrap();
    assert!(
        first.iter().all(|&b| b == 0x11),
        "devmmu must see vgem's bytes"
    );
    cpu.write(7000, b"devmmu was here").unwrap();
    cpu.end().unwrap();
    {
        let m = card.map_dumb_buffer(&mut dumb).unwrap();
        assert_eq!(&m.as_ref()[7000..7015], b"devmmu was here");
    }
    let vm = Vm::new(&rig.device).unwrap();
    let iova = vm
        .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
        .expect("bind of the imported dma-buf");
    let bounced_at_map = rig.device.dma_ops().stats().bounced_bytes;
    assert!(
        bounced_at_map >= len as u64,
        "the dma-buf must be bounced: {bounced_at_map}"
    );
    let data = pattern(5000, 41);
    rig.edu
        .write(&vm.context(), Iova(iova.get() + 1000), &data)
        .unwrap();
    // The device wrote the bounce buffer, not yet the dma-buf's pages ...
    {
        let m = card.map_dumb_buffer(&mut dumb).unwrap();
        assert!(
            m.as_ref()[1000..6000].iter().all(|&b| b == 0x11),
            "before the sync for the CPU, vgem's pages must not have the device's bytes"
        );
    }
    // ... the sync for the CPU (the access bracket) copies it there.
    let cpu = bo.begin_cpu_access(CpuAccess::READ).unwrap();
    let mut got = vec![0u8; data.len()];
    cpu.read(1000, &mut got).unwrap();
    cpu.end().unwrap();
    assert_eq!(got, data);
    let m = card.map_dumb_buffer(&mut dumb).unwrap();
    let seen = m.as_ref();
    assert_eq!(&seen[1000..6000], &data[..], "vgem must see what edu wrote");
    assert!(
        seen[..1000].iter().all(|&b| b == 0x11),
        "bytes before the write changed"
    );
    assert_eq!(
        &seen[7000..7015],
        b"devmmu was here",
        "bytes after the write changed"
    );
    println!(
        "dmabuf (b): {}: vgem dumb buffer 64x32 XRGB8888 ({len} bytes) exported with PRIME, \
         imported by devmmu (CPU bytes agree both ways), bound at {iova}: VFIO cannot pin the \
         dma-buf's mmap, so it is bounced ({} bytes copied so far); edu wrote {} bytes \
         through the device MMU; after the sync for the CPU vgem's own mapping shows them, the \
         bytes around them unchanged",
        format.name(),
        rig.device.dma_ops().stats().bounced_bytes,
        data.len()
    );
    drop(m);
    vm.unbind(iova, bo.size()).unwrap();
    drop(vm);
    drop(bo);
    card.destroy_dumb_buffer(dumb).unwrap();
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_dmabuf_vgem_buffer_written_by_edu_ipu() {
    vgem_buffer_written_by_edu(MmuFormat::Ipu);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_dmabuf_vgem_buffer_written_by_edu_arm() {
    vgem_buffer_written_by_edu(MmuFormat::ArmLpae4k);
}

/// (c) libcamera's allocation order: the dma-heap when present, then udmabuf, then the memfd.
#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_dmabuf_allocator_prefers_dma_heap_then_udmabuf_then_memfd() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).unwrap();
    let size = 8 * PAGE_SIZE;
    let heap = DmaBufAllocator::default().alloc(&phys, size).unwrap();
    assert_eq!(
        heap.source,
        AllocSource::DmaHeap,
        "skipped: {:?}",
        heap.skipped
    );
    // The heap's pages are the BO's: write through the BO, read through the peer fd's mmap.
    let cpu = heap.bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    cpu.write(0, b"heap bytes").unwrap();
    cpu.end().unwrap();
    let mut b = [0u8; 10];
    // SAFETY: a fresh read-only shared mapping of the dma-buf, read then unmapped.
    unsafe {
        let p = rustix::mm::mmap(
            core::ptr::null_mut(),
            size as usize,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            heap.fd.as_fd(),
            0,
        )
        .unwrap();
        peer_sync(heap.fd.as_fd(), false);
        core::ptr::copy_nonoverlapping(p.cast::<u8>(), b.as_mut_ptr(), 10);
        peer_sync(heap.fd.as_fd(), true);
        rustix::mm::munmap(p, size as usize).unwrap();
    }
    assert_eq!(&b, b"heap bytes");
    let no_heap = DmaBufAllocator {
        dma_heap: None,
        ..DmaBufAllocator::default()
    };
    let udma = no_heap.alloc(&phys, size).unwrap();
    assert_eq!(udma.source, AllocSource::Udmabuf);
    let neither = DmaBufAllocator {
        dma_heap: None,
        udmabuf: None,
        memfd: true,
    };
    let memfd = neither.alloc(&phys, size).unwrap();
    assert_eq!(memfd.source, AllocSource::Memfd);
    // Importing the heap's fd again gives the same BO (PRIME self-import).
    let again = Bo::import(&phys, heap.fd, Some(size)).unwrap();
    assert!(Arc::ptr_eq(&again, &heap.bo));
    println!(
        "dmabuf (c): default order gave a dma-heap buffer (/dev/dma_heap/system, {size} bytes, \
         bytes seen through the peer fd), without the heap udmabuf, without both the memfd; \
         re-import of the heap fd gave the same BO"
    );
}
