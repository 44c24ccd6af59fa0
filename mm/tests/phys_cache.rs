//! Physical memory and cache maintenance, seen from outside the crate: frames really live in
//! memfds, the allocator honours its contract, and the model's two views only meet through the
//! sync operations.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use devmmu_mm::phys::{
    lines_touched, CacheMode, FrameAlloc, Frames, MemoryMap, PhysAddr, PhysMem, RamRegion, Zone,
    LINE_SIZE, PAGE_SIZE,
};
use devmmu_mm::MmError;
use rustix::fs::{MemfdFlags, SealFlags};

const FOUR_GIB: u64 = 1 << 32;

/// 64 frames at 1 MiB and 192 at 4 GiB: small enough to exhaust.
fn small_map() -> MemoryMap {
    MemoryMap::new(vec![
        RamRegion {
            base: PhysAddr(0x10_0000),
            size: 64 * PAGE_SIZE,
        },
        RamRegion {
            base: PhysAddr(FOUR_GIB),
            size: 192 * PAGE_SIZE,
        },
    ])
    .unwrap()
}

fn one_region(pages: u64) -> MemoryMap {
    MemoryMap::new(vec![RamRegion {
        base: PhysAddr(0x4000_0000),
        size: pages * PAGE_SIZE,
    }])
    .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The bytes of the memfd behind `f`, read with pread (not through our mapping).
fn memfd_bytes(f: &Frames, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = rustix::io::pread(f.fd(), &mut buf[..], offset).unwrap();
    assert_eq!(n, len);
    buf
}

fn frame_set(f: &Frames) -> HashSet<u64> {
    f.pages().iter().map(|p| p.0).collect()
}

// ---------------------------------------------------------------- frame allocator

#[test]
fn scattered_frames_are_distinct_high_and_mostly_discontiguous() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let f = phys.alloc_frames(512, FrameAlloc::scattered()).unwrap();
    assert_eq!(f.page_count(), 512);
    assert_eq!(f.len_bytes(), 512 * PAGE_SIZE);
    assert_eq!(frame_set(&f).len(), 512);
    assert!(f.pages().iter().all(|p| p.is_aligned(PAGE_SIZE)));
    // Zone::Any prefers the highest region.
    assert!(f.pages().iter().all(|p| p.0 >= FOUR_GIB));
    let segs = f.segments();
    assert!(!f.is_contiguous());
    // Scattered, yet some adjacent runs for segment merging to find.
    assert!(
        segs.len() > 100 && segs.len() < 512,
        "{} segments",
        segs.len()
    );
    assert!(segs.iter().any(|s| s.len > PAGE_SIZE));
    assert_eq!(segs.iter().map(|s| s.len).sum::<u64>(), f.len_bytes());
    assert_eq!(phys.stats().frames_allocated, 512);
}

#[test]
fn scattering_is_deterministic_for_a_seed() {
    let a = PhysMem::with_seed(MemoryMap::default(), CacheMode::Model, 42).unwrap();
    let b = PhysMem::with_seed(MemoryMap::default(), CacheMode::Model, 42).unwrap();
    let c = PhysMem::with_seed(MemoryMap::default(), CacheMode::Model, 43).unwrap();
    let fa = a.alloc_frames(64, FrameAlloc::scattered()).unwrap();
    let fb = b.alloc_frames(64, FrameAlloc::scattered()).unwrap();
    let fc = c.alloc_frames(64, FrameAlloc::scattered()).unwrap();
    assert_eq!(fa.pages(), fb.pages());
    assert_ne!(fa.pages(), fc.pages());
}

#[test]
fn contiguous_frames_form_one_segment() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let f = phys
        .alloc_frames(300, FrameAlloc::contiguous().aligned(512))
        .unwrap();
    assert!(f.is_contiguous());
    assert_eq!(f.segments().len(), 1);
    assert_eq!(f.segments()[0].len, 300 * PAGE_SIZE);
    assert!(f.pages()[0].is_aligned(512 * PAGE_SIZE));
    for (i, p) in f.pages().iter().enumerate() {
        assert_eq!(p.0, f.pages()[0].0 + i as u64 * PAGE_SIZE);
    }
}

#[test]
fn zone_below_keeps_every_byte_under_the_limit() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let limit = PhysAddr(FOUR_GIB);
    for req in [FrameAlloc::scattered(), FrameAlloc::contiguous()] {
        let f = phys.alloc_frames(200, req.below(limit)).unwrap();
        assert!(f.pages().iter().all(|p| p.0 + PAGE_SIZE <= limit.0));
    }
    // A limit inside a region, not on a frame boundary: the frame holding it is excluded.
    let phys = PhysMem::new(one_region(64), CacheMode::Model).unwrap();
    let limit = PhysAddr(0x4000_0000 + 10 * PAGE_SIZE + 1);
    assert_eq!(phys.free_pages(Zone::Below(limit)), 10);
    let f = phys
        .alloc_frames(10, FrameAlloc::scattered().below(limit))
        .unwrap();
    assert!(f.pages().iter().all(|p| p.0 + PAGE_SIZE <= limit.0));
    let err = phys
        .alloc_frames(1, FrameAlloc::scattered().below(limit))
        .unwrap_err();
    assert_eq!(
        err,
        MmError::NoMemory {
            pages: 1,
            contiguous: false,
            zone: Zone::Below(limit)
        }
    );
    // A high-only machine has nothing for a 32-bit zone.
    let high = PhysMem::new(MemoryMap::high_only(), CacheMode::Model).unwrap();
    assert_eq!(high.free_pages(Zone::Below(PhysAddr(FOUR_GIB))), 0);
    assert!(matches!(
        high.alloc_frames(1, FrameAlloc::contiguous().below(PhysAddr(FOUR_GIB))),
        Err(MmError::NoMemory { pages: 1, .. })
    ));
}

#[test]
fn exhaustion_fails_whole_and_changes_nothing() {
    let phys = PhysMem::new(small_map(), CacheMode::Model).unwrap();
    assert_eq!(phys.total_pages(), 256);
    let held = phys.alloc_frames(100, FrameAlloc::scattered()).unwrap();
    let before = (phys.free_pages(Zone::Any), phys.stats());

    let err = phys.alloc_frames(157, FrameAlloc::scattered()).unwrap_err();
    assert_eq!(
        err,
        MmError::NoMemory {
            pages: 157,
            contiguous: false,
            zone: Zone::Any
        }
    );
    assert_eq!((phys.free_pages(Zone::Any), phys.stats()), before);

    // Enough free frames, but no run that long: the high region has 92 free in pieces, the low
    // one only 64.
    assert!(phys.free_pages(Zone::Any) >= 65);
    let err = phys.alloc_frames(65, FrameAlloc::contiguous()).unwrap_err();
    assert!(matches!(
        err,
        MmError::NoMemory {
            pages: 65,
            contiguous: true,
            ..
        }
    ));
    assert_eq!((phys.free_pages(Zone::Any), phys.stats()), before);

    // Exactly what is left still fits, spilling from the high region into the low one.
    let rest = phys.alloc_frames(156, FrameAlloc::scattered()).unwrap();
    assert!(rest.pages().iter().any(|p| p.0 < FOUR_GIB));
    assert!(frame_set(&rest).is_disjoint(&frame_set(&held)));
    assert_eq!(phys.free_pages(Zone::Any), 0);
}

#[test]
fn freed_frames_can_be_allocated_again() {
    let phys = PhysMem::new(one_region(128), CacheMode::Model).unwrap();
    let all = phys.alloc_frames(128, FrameAlloc::scattered()).unwrap();
    let first = frame_set(&all);
    assert_eq!(first.len(), 128);
    assert!(phys.is_allocated(all.pages()[5]));
    assert!(phys.alloc_frames(1, FrameAlloc::scattered()).is_err());
    let freed_page = all.pages()[5];
    drop(all);
    assert!(!phys.is_allocated(freed_page));
    assert_eq!(phys.free_pages(Zone::Any), 128);
    assert_eq!(phys.stats().frames_freed, 128);

    let again = phys.alloc_frames(128, FrameAlloc::contiguous()).unwrap();
    assert_eq!(frame_set(&again), first);
    drop(again);
    let mut parts = Vec::new();
    for _ in 0..8 {
        parts.push(phys.alloc_frames(16, FrameAlloc::scattered()).unwrap());
    }
    let union: HashSet<u64> = parts.iter().flat_map(frame_set).collect();
    assert_eq!(union, first);
}

#[test]
fn allocation_errors() {
    let phys = PhysMem::new(small_map(), CacheMode::Model).unwrap();
    assert_eq!(
        phys.alloc_frames(0, FrameAlloc::scattered()).unwrap_err(),
        MmError::ZeroSize
    );
    assert_eq!(
        phys.alloc_frames(4, FrameAlloc::contiguous().aligned(6))
            .unwrap_err(),
        MmError::BadAlignment { align_pages: 6 }
    );
    assert_eq!(
        phys.alloc_frames(4, FrameAlloc::scattered().aligned(0))
            .unwrap_err(),
        MmError::BadAlignment { align_pages: 0 }
    );
    assert!(matches!(
        phys.alloc_frames(u64::MAX, FrameAlloc::scattered()),
        Err(MmError::NoMemory {
            pages: u64::MAX,
            ..
        })
    ));
    assert_eq!(phys.stats().frames_allocated, 0);
}

// ---------------------------------------------------------------- the memory is real

#[test]
fn cpu_access_crosses_frames_and_lands_in_the_memfd() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let f = phys.alloc_frames(3, FrameAlloc::contiguous()).unwrap();
    let base = f.pages()[0];
    let data = pattern(5000, 1);
    phys.cpu_write(PhysAddr(base.0 + 4000), &data).unwrap();
    assert_eq!(memfd_bytes(&f, 4000, 5000), data);
    let mut back = vec![0u8; 5000];
    phys.cpu_read(PhysAddr(base.0 + 4000), &mut back).unwrap();
    assert_eq!(back, data);
    // Untouched bytes of a fresh memfd are zero.
    assert_eq!(memfd_bytes(&f, 0, 4000), vec![0; 4000]);

    // Scattered: page i of the buffer is file offset i * PAGE_SIZE, wherever its frame is.
    let s = phys.alloc_frames(16, FrameAlloc::scattered()).unwrap();
    for (i, pa) in s.pages().iter().enumerate() {
        let page = pattern(PAGE_SIZE as usize, i as u8);
        phys.cpu_write(*pa, &page).unwrap();
        assert_eq!(memfd_bytes(&s, i as u64 * PAGE_SIZE, page.len()), page);
        let mut via_frames = vec![0u8; page.len()];
        s.read(i as u64 * PAGE_SIZE, &mut via_frames).unwrap();
        assert_eq!(via_frames, page);
        assert_eq!(
            s.phys_addr(i as u64 * PAGE_SIZE + 7).unwrap(),
            PhysAddr(pa.0 + 7)
        );
    }
    // Writes through the buffer's CPU mapping show at its physical addresses.
    s.write(PAGE_SIZE - 2, &[0xaa, 0xbb, 0xcc, 0xdd]).unwrap();
    let mut b = [0u8; 2];
    phys.cpu_read(s.pages()[1], &mut b).unwrap();
    assert_eq!(b, [0xcc, 0xdd]);
    // cpu_ptr points at the byte itself.
    let p = phys.cpu_ptr(PhysAddr(s.pages()[1].0 + 1)).unwrap();
    // SAFETY: the frame is allocated and `p` is inside it.
    assert_eq!(unsafe { p.as_ptr().read() }, 0xdd);
    assert_eq!(phys.cpu_ptr(PhysAddr(0x10)), None);
}

#[test]
fn cpu_access_crosses_into_another_allocations_memfd() {
    // First fit puts two one-page contiguous allocations side by side.
    let phys = PhysMem::new(one_region(8), CacheMode::Model).unwrap();
    let a = phys.alloc_frames(1, FrameAlloc::contiguous()).unwrap();
    let b = phys.alloc_frames(1, FrameAlloc::contiguous()).unwrap();
    assert_eq!(b.pages()[0].0, a.pages()[0].0 + PAGE_SIZE);
    let data = pattern(100, 4);
    phys.cpu_write(PhysAddr(b.pages()[0].0 - 50), &data)
        .unwrap();
    assert_eq!(memfd_bytes(&a, PAGE_SIZE - 50, 50), &data[..50]);
    assert_eq!(memfd_bytes(&b, 0, 50), &data[50..]);
    let mut back = vec![0u8; 100];
    phys.cpu_read(PhysAddr(b.pages()[0].0 - 50), &mut back)
        .unwrap();
    assert_eq!(back, data);
}

#[test]
fn frames_fd_is_sealed_against_resizing_only() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).unwrap();
    let f = phys.alloc_frames(2, FrameAlloc::scattered()).unwrap();
    let seals = rustix::fs::fcntl_get_seals(f.fd()).unwrap();
    assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW));
    assert!(!seals.contains(SealFlags::SEAL));
    assert!(!seals.contains(SealFlags::WRITE));
    assert_eq!(
        rustix::fs::fstat(f.fd()).unwrap().st_size as u64,
        2 * PAGE_SIZE
    );
    assert!(rustix::fs::ftruncate(f.fd(), PAGE_SIZE).is_err());
}

fn memfd_with(content: &[u8], size: u64) -> OwnedFd {
    let fd = rustix::fs::memfd_create("test", MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    rustix::io::pwrite(&fd, content, 0).unwrap();
    fd
}

#[test]
fn adopted_fd_keeps_its_content_in_both_views() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let content = pattern(6000, 9);
    let f = phys
        .adopt_fd(
            memfd_with(&content, 3 * PAGE_SIZE),
            2 * PAGE_SIZE,
            FrameAlloc::scattered(),
        )
        .unwrap();
    assert_eq!(f.page_count(), 2);
    let mut cpu = vec![0u8; 6000];
    let mut dev = vec![0u8; 6000];
    // The two pages may be anywhere: read page by page.
    for (i, pa) in f.pages().iter().enumerate() {
        let r = i * 4096..(i * 4096 + 4096).min(6000);
        phys.cpu_read(*pa, &mut cpu[r.clone()]).unwrap();
        phys.device_read(*pa, &mut dev[r], false).unwrap();
    }
    assert_eq!(cpu, content);
    assert_eq!(dev, content, "RAM of an adopted fd starts as its content");
    // CPU writes reach the adopted fd itself.
    phys.cpu_write(f.pages()[1], b"xyz").unwrap();
    assert_eq!(memfd_bytes(&f, PAGE_SIZE, 3), b"xyz");
}

#[test]
fn adopt_fd_errors_allocate_nothing() {
    let phys = PhysMem::new(small_map(), CacheMode::Model).unwrap();
    let fd = || memfd_with(b"", 2 * PAGE_SIZE);
    let req = FrameAlloc::scattered();
    assert_eq!(phys.adopt_fd(fd(), 0, req).unwrap_err(), MmError::ZeroSize);
    assert_eq!(
        phys.adopt_fd(fd(), PAGE_SIZE + 1, req).unwrap_err(),
        MmError::Misaligned {
            value: PAGE_SIZE + 1,
            align: PAGE_SIZE
        }
    );
    assert_eq!(
        phys.adopt_fd(fd(), 4 * PAGE_SIZE, req).unwrap_err(),
        MmError::FdTooSmall {
            len: 4 * PAGE_SIZE,
            size: 2 * PAGE_SIZE
        }
    );
    // A read-only fd cannot be mapped writable.
    let ro = rustix::fs::open(
        "/proc/self/exe",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    assert!(matches!(
        phys.adopt_fd(ro, PAGE_SIZE, req),
        Err(MmError::Os { op: "mmap", .. })
    ));
    assert!(matches!(
        phys.adopt_fd(fd(), 300 * PAGE_SIZE, req),
        Err(MmError::NoMemory { pages: 300, .. })
    ));
    assert_eq!(phys.free_pages(Zone::Any), 256);
    assert_eq!(phys.stats().frames_allocated, 0);
}

#[test]
fn bad_physical_addresses_are_refused_without_effect() {
    let phys = PhysMem::new(one_region(8), CacheMode::Model).unwrap();
    let f = phys.alloc_frames(2, FrameAlloc::contiguous()).unwrap();
    let base = f.pages()[0];
    let end = PhysAddr(base.0 + 2 * PAGE_SIZE);
    // Outside RAM, in a free frame, and a range running off the end of the allocation.
    let outside = PhysAddr(0x1000);
    let mut buf = [0x55u8; 16];
    assert_eq!(
        phys.cpu_read(outside, &mut buf),
        Err(MmError::BadPhysAddr { addr: outside })
    );
    assert_eq!(buf, [0x55; 16], "buf untouched on error");
    assert_eq!(
        phys.cpu_write(PhysAddr(end.0 + 100), &buf),
        Err(MmError::BadPhysAddr {
            addr: PhysAddr(end.0 + 100)
        })
    );
    let straddle = PhysAddr(end.0 - 8);
    assert_eq!(
        phys.cpu_write(straddle, &buf),
        Err(MmError::BadPhysAddr { addr: end })
    );
    assert_eq!(
        memfd_bytes(&f, 2 * PAGE_SIZE - 8, 8),
        vec![0; 8],
        "no partial write"
    );
    assert_eq!(
        phys.device_write(straddle, &buf, false),
        Err(MmError::BadPhysAddr { addr: end })
    );
    assert_eq!(
        phys.device_read(straddle, &mut buf, true),
        Err(MmError::BadPhysAddr { addr: end })
    );
    assert_eq!(
        phys.clean(straddle, 16),
        Err(MmError::BadPhysAddr { addr: end })
    );
    assert_eq!(
        phys.invalidate(outside, 1),
        Err(MmError::BadPhysAddr { addr: outside })
    );
    let top = PhysAddr(u64::MAX - 4);
    assert_eq!(
        phys.cpu_read(top, &mut buf),
        Err(MmError::AddrOverflow { addr: top, len: 16 })
    );
    assert_eq!(
        phys.clean_invalidate(top, 16),
        Err(MmError::AddrOverflow { addr: top, len: 16 })
    );
    // Empty accesses succeed anywhere and do nothing.
    assert_eq!(phys.cpu_read(outside, &mut []), Ok(()));
    assert_eq!(phys.clean(outside, 0), Ok(0));
    let s = phys.stats();
    assert_eq!((s.clean_calls, s.invalidate_calls, s.fences), (0, 0, 0));
    assert_eq!((s.device_bytes_read, s.device_bytes_written), (0, 0));
    // Buffer-relative accesses are bounds-checked.
    assert_eq!(
        f.read(2 * PAGE_SIZE - 1, &mut buf),
        Err(MmError::OutOfBounds {
            offset: 2 * PAGE_SIZE - 1,
            len: 16,
            size: 2 * PAGE_SIZE
        })
    );
    assert!(matches!(
        f.write(u64::MAX, &buf),
        Err(MmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        f.phys_addr(2 * PAGE_SIZE),
        Err(MmError::OutOfBounds { .. })
    ));
}

// ---------------------------------------------------------------- the model's two views

fn model_buffer(pages: u64) -> (Arc<PhysMem>, Frames) {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let f = phys.alloc_frames(pages, FrameAlloc::contiguous()).unwrap();
    (phys, f)
}

#[test]
fn model_device_sees_cpu_writes_only_after_clean() {
    let (phys, f) = model_buffer(2);
    let pa = PhysAddr(f.pages()[0].0 + 4000);
    let old = vec![0u8; 200];
    let new = pattern(200, 3);
    phys.cpu_write(pa, &new).unwrap();

    let mut dev = vec![0u8; 200];
    phys.device_read(pa, &mut dev, false).unwrap();
    assert_eq!(
        dev, old,
        "non-coherent device reads stale RAM before the clean"
    );
    phys.device_read(pa, &mut dev, true).unwrap();
    assert_eq!(dev, new, "coherent device snoops the CPU view");

    // 4000..4200 touches lines 62..=65 of the contiguous buffer: 4 lines across the frame edge.
    assert_eq!(phys.clean(pa, 200), Ok(4));
    phys.device_read(pa, &mut dev, false).unwrap();
    assert_eq!(dev, new);
    let s = phys.stats();
    assert_eq!((s.lines_cleaned, s.clean_calls, s.fences), (4, 1, 1));
    assert_eq!(s.lines_invalidated, 0);
}

#[test]
fn model_cpu_sees_device_writes_only_after_invalidate() {
    let (phys, f) = model_buffer(1);
    let pa = PhysAddr(f.pages()[0].0 + 128);
    let new = pattern(64, 7);
    phys.device_write(pa, &new, false).unwrap();

    let mut cpu = vec![0u8; 64];
    phys.cpu_read(pa, &mut cpu).unwrap();
    assert_eq!(
        cpu,
        vec![0; 64],
        "CPU reads its stale view before the invalidate"
    );
    assert_eq!(memfd_bytes(&f, 128, 64), vec![0; 64]);

    assert_eq!(phys.invalidate(pa, 64), Ok(1));
    phys.cpu_read(pa, &mut cpu).unwrap();
    assert_eq!(cpu, new);
    assert_eq!(memfd_bytes(&f, 128, 64), new);
    let s = phys.stats();
    assert_eq!(
        (s.lines_invalidated, s.invalidate_calls, s.fences),
        (1, 1, 1)
    );
    assert_eq!(s.device_bytes_written, 64);
}

#[test]
fn model_syncs_move_whole_lines_and_nothing_more() {
    let (phys, f) = model_buffer(1);
    let base = f.pages()[0];
    let cpu_bytes = pattern(256, 11);
    phys.cpu_write(base, &cpu_bytes).unwrap();

    // Cleaning bytes 0..1 writes back all of line 0 and none of line 1.
    assert_eq!(phys.clean(base, 1), Ok(1));
    let mut ram = vec![0u8; 256];
    phys.device_read(base, &mut ram, false).unwrap();
    assert_eq!(&ram[..64], &cpu_bytes[..64]);
    assert_eq!(&ram[64..], &[0u8; 192][..]);

    // A 2-byte clean straddling lines 2 and 3 moves both, not line 1.
    assert_eq!(phys.clean(PhysAddr(base.0 + 191), 2), Ok(2));
    phys.device_read(base, &mut ram, false).unwrap();
    assert_eq!(&ram[64..128], &[0u8; 64][..]);
    assert_eq!(&ram[128..256], &cpu_bytes[128..256]);

    // Invalidating byte 70 replaces all of line 1 in the CPU view with RAM's (stale) zeros:
    // CPU writes that were never cleaned are lost, as the DMA API allows.
    assert_eq!(phys.invalidate(PhysAddr(base.0 + 70), 1), Ok(1));
    let mut cpu = vec![0u8; 256];
    phys.cpu_read(base, &mut cpu).unwrap();
    assert_eq!(&cpu[..64], &cpu_bytes[..64]);
    assert_eq!(&cpu[64..128], &[0u8; 64][..]);
    assert_eq!(&cpu[128..], &cpu_bytes[128..]);
}

#[test]
fn model_clean_invalidate_makes_views_agree_and_coherent_writes_reach_both() {
    let (phys, f) = model_buffer(1);
    let base = f.pages()[0];
    let bytes = pattern(300, 5);
    phys.cpu_write(base, &bytes).unwrap();
    assert_eq!(
        phys.clean_invalidate(base, 300),
        Ok(lines_touched(base.0, 300))
    );
    let mut ram = vec![0u8; 300];
    phys.device_read(base, &mut ram, false).unwrap();
    assert_eq!(ram, bytes);
    let mut cpu = vec![0u8; 300];
    phys.cpu_read(base, &mut cpu).unwrap();
    assert_eq!(cpu, bytes);
    let s = phys.stats();
    assert_eq!((s.lines_cleaned, s.lines_invalidated), (5, 5));
    assert_eq!((s.clean_invalidate_calls, s.fences), (1, 1));

    // A coherent device's write is visible to the CPU and to a non-coherent reader at once.
    let pa = PhysAddr(base.0 + 1000);
    phys.device_write(pa, b"coherent", true).unwrap();
    let mut b = [0u8; 8];
    phys.cpu_read(pa, &mut b).unwrap();
    assert_eq!(&b, b"coherent");
    phys.device_read(pa, &mut b, false).unwrap();
    assert_eq!(&b, b"coherent");
}

#[test]
fn model_sync_of_scattered_range_counts_every_line_once() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let f = phys.alloc_frames(8, FrameAlloc::scattered()).unwrap();
    let mut total = 0;
    for seg in f.segments() {
        let data = pattern(seg.len as usize, 1);
        phys.cpu_write(seg.addr, &data).unwrap();
        total += phys.clean(seg.addr, seg.len).unwrap();
        let mut dev = vec![0u8; data.len()];
        phys.device_read(seg.addr, &mut dev, false).unwrap();
        assert_eq!(dev, data);
    }
    assert_eq!(total, 8 * PAGE_SIZE / LINE_SIZE);
    assert_eq!(phys.stats().fences, f.segments().len() as u64);
}

// ---------------------------------------------------------------- native

#[test]
fn native_maintenance_counts_lines_and_keeps_data() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).unwrap();
    let f = phys.alloc_frames(2, FrameAlloc::contiguous()).unwrap();
    let base = f.pages()[0];
    let data = pattern(8192, 2);
    phys.cpu_write(base, &data).unwrap();

    assert_eq!(phys.clean(base, PAGE_SIZE), Ok(64));
    // 2 bytes straddling a line boundary.
    assert_eq!(phys.invalidate(PhysAddr(base.0 + 63), 2), Ok(2));
    // Across the frame boundary.
    assert_eq!(phys.clean_invalidate(PhysAddr(base.0 + 4090), 100), Ok(3));
    let s = phys.stats();
    assert_eq!((s.lines_cleaned, s.lines_invalidated), (64 + 3, 2 + 3));
    assert_eq!(
        (s.clean_calls, s.invalidate_calls, s.clean_invalidate_calls),
        (1, 1, 1)
    );
    assert_eq!(s.fences, 3);

    // One view: the device sees CPU writes without any sync, and vice versa.
    let mut back = vec![0u8; 8192];
    phys.device_read(base, &mut back, false).unwrap();
    assert_eq!(back, data);
    phys.device_write(PhysAddr(base.0 + 10), b"dev", false)
        .unwrap();
    let mut b = [0u8; 3];
    phys.cpu_read(PhysAddr(base.0 + 10), &mut b).unwrap();
    assert_eq!(&b, b"dev");
    assert_eq!(memfd_bytes(&f, 10, 3), b"dev");
}

#[test]
fn native_line_primitives_report_the_detected_instructions() {
    use devmmu_mm::phys::native::{self, LineInstr};
    let caps = native::caps();
    assert!(caps.stride.is_power_of_two() && caps.stride as u64 <= LINE_SIZE);
    #[cfg(target_arch = "x86_64")]
    assert!(matches!(
        caps.invalidate,
        LineInstr::Clflushopt | LineInstr::Clflush
    ));
    #[cfg(target_arch = "aarch64")]
    assert_eq!(caps.invalidate, LineInstr::DcCivac);
    let buf = vec![3u8; 1000];
    assert_eq!(
        native::clean_slice(&buf),
        lines_touched(buf.as_ptr() as u64, 1000) as usize
    );
    assert!(buf.iter().all(|&b| b == 3));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PhysMem>();
    check::<Frames>();
    check::<MmError>();
}
