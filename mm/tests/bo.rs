//! Buffer objects seen from outside the crate: placement of their frames, the CPU mapping and
//! caching modes, pins, handles, export as an fd and import of untrusted fds.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Weak};

use devmmu_mm::bo::{
    Bo, BoAttachment, BoFlags, BoHandle, BoHandles, Caching, CpuAccess, ExportOptions, FdKind,
};
use devmmu_mm::dma::{DmaDevice, DmaDiag, DmaDirection, DmaMask, DmaOps, DmaOpsKind, Platform};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysAddr, PhysMem, RamRegion, Zone, PAGE_SIZE};
use devmmu_mm::MmError;
use rustix::fs::{FileType, MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;

const FOUR_GIB: u64 = 1 << 32;

fn phys() -> Arc<PhysMem> {
    PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

/// The bytes of `fd` read with pread (not through any mapping of ours).
fn pread_all(fd: impl AsFd, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = rustix::io::pread(fd, &mut buf[..], offset).unwrap();
    assert_eq!(n, len);
    buf
}

/// A memfd of `size` bytes with `seals` added (`None`: created without `MFD_ALLOW_SEALING`).
fn memfd(size: u64, seals: Option<SealFlags>) -> OwnedFd {
    let flags = match seals {
        Some(_) => MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        None => MemfdFlags::CLOEXEC,
    };
    let fd = rustix::fs::memfd_create("bo-test", flags).unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    if let Some(s) = seals {
        if !s.is_empty() {
            rustix::fs::fcntl_add_seals(&fd, s).unwrap();
        }
    }
    fd
}

fn no_udmabuf() -> ExportOptions {
    ExportOptions {
        udmabuf: None,
        fallback_to_memfd: true,
    }
}

// ---------------------------------------------------------------- creation and placement

#[test]
fn scattered_bo_has_its_pages_in_high_memory_and_merged_segments() {
    let phys = phys();
    let bo = Bo::new(&phys, 64 * PAGE_SIZE, BoFlags::default()).unwrap();
    assert_eq!(bo.size(), 64 * PAGE_SIZE);
    assert_eq!(bo.page_count(), 64);
    assert_eq!(bo.pages().len(), 64);
    assert_eq!(bo.caching(), Caching::Cached);
    assert!(!bo.is_imported());
    // Zone::Any takes the highest region first.
    assert!(bo.pages().iter().all(|p| p.0 >= FOUR_GIB));
    let distinct: HashSet<u64> = bo.pages().iter().map(|p| p.0).collect();
    assert_eq!(distinct.len(), 64);
    assert!(!bo.is_contiguous());

    // Segments: in buffer order, cover exactly the pages, maximal (no two mergeable neighbours).
    let segs = bo.segments();
    assert!(segs.len() > 1 && segs.len() < 64, "{} segments", segs.len());
    assert_eq!(segs.iter().map(|s| s.len).sum::<u64>(), bo.size());
    let mut page = 0usize;
    for s in &segs {
        assert_eq!(s.len % PAGE_SIZE, 0);
        for i in 0..s.len / PAGE_SIZE {
            assert_eq!(bo.pages()[page], PhysAddr(s.addr.0 + i * PAGE_SIZE));
            page += 1;
        }
    }
    for w in segs.windows(2) {
        assert_ne!(w[0].addr.0 + w[0].len, w[1].addr.0);
    }
    assert_eq!(
        bo.phys_addr(5 * PAGE_SIZE + 17).unwrap(),
        PhysAddr(bo.pages()[5].0 + 17)
    );
    assert_eq!(
        bo.phys_addr(bo.size()),
        Err(MmError::OutOfBounds {
            offset: bo.size(),
            len: 1,
            size: bo.size()
        })
    );
}

#[test]
fn contiguous_and_zone_limited_bos() {
    let phys = phys();
    let c = Bo::new(&phys, 32 * PAGE_SIZE, BoFlags::default().contiguous()).unwrap();
    assert!(c.is_contiguous());
    assert_eq!(c.segments().len(), 1);
    assert_eq!(c.segments()[0].len, 32 * PAGE_SIZE);

    let limit = PhysAddr(FOUR_GIB);
    let low = Bo::new(&phys, 48 * PAGE_SIZE, BoFlags::default().below(limit)).unwrap();
    assert_eq!(low.flags().zone, Zone::Below(limit));
    assert!(low.pages().iter().all(|p| p.0 + PAGE_SIZE <= limit.0));

    let low_c = Bo::new(
        &phys,
        16 * PAGE_SIZE,
        BoFlags::default()
            .contiguous()
            .zone(Zone::Below(limit))
            .caching(Caching::WriteCombined),
    )
    .unwrap();
    assert!(low_c.is_contiguous());
    assert!(low_c.pages().iter().all(|p| p.0 + PAGE_SIZE <= limit.0));
    assert_eq!(low_c.caching(), Caching::WriteCombined);
}

#[test]
fn bad_sizes_and_exhaustion_are_refused_without_leaks() {
    let phys = PhysMem::new(
        MemoryMap::new(vec![RamRegion {
            base: PhysAddr(0x4000_0000),
            size: 16 * PAGE_SIZE,
        }])
        .unwrap(),
        CacheMode::Model,
    )
    .unwrap();
    assert_eq!(
        Bo::new(&phys, 0, BoFlags::default()).unwrap_err(),
        MmError::ZeroSize
    );
    assert_eq!(
        Bo::new(&phys, PAGE_SIZE + 1, BoFlags::default()).unwrap_err(),
        MmError::Misaligned {
            value: PAGE_SIZE + 1,
            align: PAGE_SIZE
        }
    );
    assert!(matches!(
        Bo::new(&phys, 17 * PAGE_SIZE, BoFlags::default()).unwrap_err(),
        MmError::NoMemory { pages: 17, .. }
    ));
    assert_eq!(phys.free_pages(Zone::Any), 16);
    let bo = Bo::new(&phys, 16 * PAGE_SIZE, BoFlags::default()).unwrap();
    assert_eq!(phys.free_pages(Zone::Any), 0);
    drop(bo);
    assert_eq!(phys.free_pages(Zone::Any), 16);
}

// ---------------------------------------------------------------- CPU mapping and caching

#[test]
fn read_write_round_trip_is_visible_in_the_memfd() {
    let phys = phys();
    let bo = Bo::new(&phys, 4 * PAGE_SIZE, BoFlags::default()).unwrap();
    let data = pattern(5000, 3);
    // Crosses a page boundary, so two (probably scattered) frames are written.
    bo.write(PAGE_SIZE - 100, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    bo.read(PAGE_SIZE - 100, &mut back).unwrap();
    assert_eq!(back, data);

    let exp = bo.export_with(&no_udmabuf()).unwrap();
    assert_eq!(exp.kind, FdKind::Memfd);
    assert_eq!(pread_all(&exp.fd, PAGE_SIZE - 100, data.len()), data);
    assert_eq!(pread_all(&exp.fd, 0, 16), vec![0u8; 16]);

    // The raw mapping is the same bytes.
    // SAFETY: nothing writes the BO while the slice lives.
    let slice = unsafe { bo.as_slice() };
    assert_eq!(slice.len() as u64, bo.size());
    assert_eq!(&slice[PAGE_SIZE as usize - 100..][..data.len()], &data[..]);

    // Each byte lands in the frame the page table says.
    let mut via_phys = [0u8; 1];
    phys.cpu_read(bo.phys_addr(PAGE_SIZE + 7).unwrap(), &mut via_phys)
        .unwrap();
    assert_eq!(via_phys[0], data[107]);
}

#[test]
fn out_of_bounds_accesses_are_refused_and_change_nothing() {
    let phys = phys();
    let bo = Bo::new(&phys, PAGE_SIZE, BoFlags::default()).unwrap();
    let mut buf = [7u8; 8];
    assert_eq!(
        bo.read(PAGE_SIZE - 4, &mut buf),
        Err(MmError::OutOfBounds {
            offset: PAGE_SIZE - 4,
            len: 8,
            size: PAGE_SIZE
        })
    );
    assert_eq!(buf, [7u8; 8]);
    assert_eq!(
        bo.write(u64::MAX, &buf),
        Err(MmError::OutOfBounds {
            offset: u64::MAX,
            len: 8,
            size: PAGE_SIZE
        })
    );
    assert!(bo.write(PAGE_SIZE - 4, &buf).is_err());
    let mut tail = [1u8; 8];
    bo.read(PAGE_SIZE - 8, &mut tail).unwrap();
    assert_eq!(tail, [0u8; 8]);
    // Zero-length accesses at the end are fine.
    bo.read(PAGE_SIZE, &mut []).unwrap();
}

#[test]
fn uncached_modes_reach_ram_without_syncs_and_cached_does_not() {
    let phys = phys();
    let data = pattern(300, 9);
    for caching in [Caching::Cached, Caching::WriteCombined, Caching::Uncached] {
        let bo = Bo::new(&phys, 2 * PAGE_SIZE, BoFlags::default().caching(caching)).unwrap();
        let pa = bo.phys_addr(PAGE_SIZE + 64).unwrap();

        // CPU write -> what a non-coherent device reads from RAM.
        bo.write(PAGE_SIZE + 64, &data).unwrap();
        let mut dev = vec![0u8; data.len()];
        phys.device_read(pa, &mut dev, false).unwrap();
        if caching.bypasses_cache() {
            assert_eq!(dev, data, "{caching:?}: write did not reach RAM");
        } else {
            assert_eq!(
                dev,
                vec![0u8; data.len()],
                "cached write reached RAM without a clean"
            );
        }

        // Device write to RAM -> what the CPU reads.
        let dev_data = pattern(300, 200);
        phys.device_write(pa, &dev_data, false).unwrap();
        let mut cpu = vec![0u8; dev_data.len()];
        bo.read(PAGE_SIZE + 64, &mut cpu).unwrap();
        if caching.bypasses_cache() {
            assert_eq!(cpu, dev_data, "{caching:?}: read did not see RAM");
        } else {
            assert_eq!(cpu, data, "cached read saw RAM without an invalidate");
        }
    }
}

// ---------------------------------------------------------------- pins

#[test]
fn pins_count_and_keep_the_bo_alive() {
    let phys = phys();
    let bo = Bo::new(&phys, 2 * PAGE_SIZE, BoFlags::default()).unwrap();
    let first = bo.pages()[0];
    assert_eq!(bo.unpin(), Err(MmError::NotPinned));
    assert_eq!(bo.pin(), 1);
    assert_eq!(bo.pin(), 2);
    assert!(bo.is_pinned());
    assert_eq!(bo.unpin(), Ok(1));

    // Dropping every reference of ours leaves the pinned BO (and its frames) alive.
    let weak: Weak<Bo> = Arc::downgrade(&bo);
    drop(bo);
    assert!(phys.is_allocated(first));
    let bo = weak.upgrade().expect("a pinned BO was freed");
    assert_eq!(bo.pin_count(), 1);
    assert_eq!(bo.unpin(), Ok(0));
    assert_eq!(bo.unpin(), Err(MmError::NotPinned));
    assert_eq!(bo.pin_count(), 0);
    drop(bo);
    assert!(weak.upgrade().is_none());
    assert!(!phys.is_allocated(first));
}

// ---------------------------------------------------------------- handles

#[test]
fn handles_insert_get_close() {
    let phys = phys();
    let handles = BoHandles::new();
    let a = Bo::new(&phys, PAGE_SIZE, BoFlags::default()).unwrap();
    let b = Bo::new(&phys, 2 * PAGE_SIZE, BoFlags::default()).unwrap();
    let ha = handles.insert(Arc::clone(&a)).unwrap();
    let hb = handles.insert(Arc::clone(&b)).unwrap();
    let ha2 = handles.insert(Arc::clone(&a)).unwrap();
    assert!(ha.0 != 0 && hb.0 != 0 && ha2.0 != 0);
    assert!(ha != hb && ha != ha2 && hb != ha2);
    assert_eq!(handles.len(), 3);
    assert!(Arc::ptr_eq(&handles.get(ha).unwrap(), &a));
    assert!(Arc::ptr_eq(&handles.get(ha2).unwrap(), &a));
    assert!(Arc::ptr_eq(&handles.get(hb).unwrap(), &b));

    assert_eq!(
        handles.get(BoHandle(0)).unwrap_err(),
        MmError::BadHandle { handle: 0 }
    );
    assert_eq!(
        handles.get(BoHandle(999)).unwrap_err(),
        MmError::BadHandle { handle: 999 }
    );
    assert_eq!(
        handles.close(BoHandle(u32::MAX)),
        Err(MmError::BadHandle { handle: u32::MAX })
    );

    handles.close(ha).unwrap();
    assert_eq!(
        handles.get(ha).unwrap_err(),
        MmError::BadHandle { handle: ha.0 }
    );
    assert_eq!(handles.close(ha), Err(MmError::BadHandle { handle: ha.0 }));
    // The other handle to the same BO is unaffected.
    assert!(Arc::ptr_eq(&handles.get(ha2).unwrap(), &a));
    assert_eq!(handles.len(), 2);

    // A handle holds a reference: the BO lives until its last handle closes.
    let weak = Arc::downgrade(&b);
    let first = b.pages()[0];
    drop(b);
    assert!(weak.upgrade().is_some());
    handles.close(hb).unwrap();
    assert!(weak.upgrade().is_none());
    assert!(!phys.is_allocated(first));
    assert!(!handles.is_empty());
}

#[test]
fn live_handles_are_never_handed_out_twice() {
    let phys = phys();
    let bo = Bo::new(&phys, PAGE_SIZE, BoFlags::default()).unwrap();
    let handles = BoHandles::new();
    let mut live = HashSet::new();
    for round in 0..4 {
        for _ in 0..50 {
            let h = handles.insert(Arc::clone(&bo)).unwrap();
            assert_ne!(h.0, 0);
            assert!(
                live.insert(h),
                "round {round}: live handle {h:?} handed out again"
            );
        }
        // Close every other live handle, then check the survivors still resolve.
        let to_close: Vec<BoHandle> = live.iter().copied().step_by(2).collect();
        for h in to_close {
            handles.close(h).unwrap();
            live.remove(&h);
        }
        for h in &live {
            assert!(Arc::ptr_eq(&handles.get(*h).unwrap(), &bo));
        }
        assert_eq!(handles.len(), live.len());
    }
}

// ---------------------------------------------------------------- export

#[test]
fn export_falls_back_to_the_memfd_when_udmabuf_is_missing() {
    let phys = phys();
    let bo = Bo::new(&phys, 3 * PAGE_SIZE, BoFlags::default()).unwrap();
    bo.write(10, b"exported").unwrap();

    // An injected device path that does not exist: fallback, with the reason.
    let missing = std::env::temp_dir().join(format!("devmmu-no-udmabuf-{}", std::process::id()));
    let opts = ExportOptions {
        udmabuf: Some(missing.clone()),
        fallback_to_memfd: true,
    };
    let exp = bo.export_with(&opts).unwrap();
    assert_eq!(exp.kind, FdKind::Memfd);
    assert_eq!(
        exp.dma_buf_error,
        Some(MmError::UdmabufUnavailable {
            path: missing.display().to_string(),
            errno: Errno::NOENT
        })
    );
    assert_eq!(pread_all(&exp.fd, 10, 8), b"exported");
    let st = rustix::fs::fstat(&exp.fd).unwrap();
    assert_eq!(st.st_size as u64, bo.size());
    // The exported memfd keeps the seals that make it safe to share, and is close-on-exec.
    let seals = rustix::fs::fcntl_get_seals(&exp.fd).unwrap();
    assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW));
    assert!(!seals.contains(SealFlags::WRITE));
    assert!(rustix::io::fcntl_getfd(&exp.fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));

    // Without fallback the same failure is the error.
    let strict = ExportOptions {
        fallback_to_memfd: false,
        ..opts
    };
    assert_eq!(
        bo.export_with(&strict).unwrap_err(),
        MmError::UdmabufUnavailable {
            path: missing.display().to_string(),
            errno: Errno::NOENT
        }
    );

    // A device node that is not udmabuf: the ioctl is really issued and refused.
    let not_udmabuf = ExportOptions {
        udmabuf: Some("/dev/null".into()),
        fallback_to_memfd: true,
    };
    let exp = bo.export_with(&not_udmabuf).unwrap();
    assert_eq!(exp.kind, FdKind::Memfd);
    assert_eq!(
        exp.dma_buf_error,
        Some(MmError::Os {
            op: "ioctl(UDMABUF_CREATE)",
            errno: Errno::NOTTY
        })
    );
    let strict = ExportOptions {
        fallback_to_memfd: false,
        ..not_udmabuf
    };
    assert_eq!(
        bo.export_with(&strict).unwrap_err(),
        MmError::Os {
            op: "ioctl(UDMABUF_CREATE)",
            errno: Errno::NOTTY
        }
    );

    // No udmabuf asked for: memfd, no error recorded.
    let exp = bo.export_with(&no_udmabuf()).unwrap();
    assert_eq!((exp.kind, exp.dma_buf_error), (FdKind::Memfd, None));

    // The default options on this machine (facts.md: no /dev/udmabuf).
    let exp = bo.export().unwrap();
    if std::path::Path::new("/dev/udmabuf").exists() {
        assert!(exp.kind == FdKind::DmaBuf || exp.dma_buf_error.is_some());
    } else {
        assert_eq!(exp.kind, FdKind::Memfd);
        assert!(matches!(
            exp.dma_buf_error,
            Some(MmError::UdmabufUnavailable {
                errno: Errno::NOENT,
                ..
            })
        ));
    }
}

#[test]
fn exported_fd_outlives_the_bo() {
    let phys = phys();
    let bo = Bo::new(&phys, PAGE_SIZE, BoFlags::default()).unwrap();
    bo.write(0, b"still here").unwrap();
    let first = bo.pages()[0];
    let exp = bo.export_with(&no_udmabuf()).unwrap();
    drop(bo);
    assert!(!phys.is_allocated(first));
    assert_eq!(pread_all(&exp.fd, 0, 10), b"still here");
}

// ---------------------------------------------------------------- import

/// Case 3 of issue 8: importing our own export gives back the same BO (DRM PRIME's
/// self-import), through every kind of fd for the same file, and the size check still holds.
#[test]
fn importing_our_own_export_gives_the_same_bo() {
    let phys = phys();
    let a = Bo::new(&phys, 4 * PAGE_SIZE, BoFlags::default()).unwrap();
    a.write(0, b"from a").unwrap();
    let free_before = phys.free_pages(Zone::Any);
    let b = Bo::import(
        &phys,
        a.export_with(&no_udmabuf()).unwrap().fd,
        Some(a.size()),
    )
    .unwrap();
    assert!(Arc::ptr_eq(&a, &b), "same object");
    assert!(!b.is_imported());
    assert_eq!(phys.free_pages(Zone::Any), free_before, "no new frames");
    // Without an expected size, and with flags (which an existing object ignores).
    let c = Bo::import(&phys, a.export_with(&no_udmabuf()).unwrap().fd, None).unwrap();
    assert!(Arc::ptr_eq(&a, &c));
    let d = Bo::import_with(
        &phys,
        a.export_with(&no_udmabuf()).unwrap().fd,
        None,
        BoFlags::default().contiguous(),
    )
    .unwrap();
    assert!(Arc::ptr_eq(&a, &d));
    // A wrong announced size is still refused.
    assert_eq!(
        Bo::import(
            &phys,
            a.export_with(&no_udmabuf()).unwrap().fd,
            Some(PAGE_SIZE)
        )
        .unwrap_err(),
        MmError::WrongSize {
            size: a.size(),
            expected: Some(PAGE_SIZE)
        }
    );
    // Once the BO is gone, the fd is a foreign buffer like any other.
    let fd = a.export_with(&no_udmabuf()).unwrap().fd;
    drop((a, b, c, d));
    let e = Bo::import(&phys, fd, None).unwrap();
    assert!(e.is_imported());
    let mut buf = [0u8; 6];
    e.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from a");
}

/// The self-import that used to make a second BO: with a non-coherent device attached, the
/// device's writes reach the CPU through the imported handle, and the original's CPU bracket
/// does not write stale bytes over the memfd (it is the same object, one view).
#[test]
fn self_import_keeps_one_view_of_the_pages() {
    let phys = phys();
    let ops = DmaOps::attach(
        phys.clone(),
        DmaDevice::new("nc", DmaMask::bits(64), false),
        &Platform::default(),
    )
    .unwrap();
    let a = Bo::new(&phys, 2 * PAGE_SIZE, BoFlags::default()).unwrap();
    let b = Bo::import(&phys, a.export_with(&no_udmabuf()).unwrap().fd, None).unwrap();
    let att = b.attach(&ops, DmaDirection::Bidirectional).unwrap();
    assert_eq!(
        a.attachment_count(),
        1,
        "the attachment is on the one object"
    );
    let data = pattern(2 * PAGE_SIZE as usize, 9);
    let mut off = 0;
    for seg in att.dma_segments() {
        ops.bus_write(seg.dma, &data[off..off + seg.len as usize])
            .unwrap();
        off += seg.len as usize;
    }
    let g = a.begin_cpu_access(CpuAccess::READ).unwrap();
    g.end().unwrap();
    let mut got = vec![0u8; data.len()];
    let g = b.begin_cpu_access(CpuAccess::READ).unwrap();
    b.read(0, &mut got).unwrap();
    g.end().unwrap();
    assert_eq!(got, data);
    let fd = a.export_with(&no_udmabuf()).unwrap().fd;
    assert_eq!(
        pread_all(&fd, 0, data.len()),
        data,
        "the memfd holds the device's data"
    );
}

/// An export of a BO of another machine (another `PhysMem` in this process) is a foreign buffer
/// here: a new, imported BO over the same memory, placed as the flags say.
#[test]
fn export_to_another_machine_shares_the_bytes() {
    let phys = phys();
    let other = self::phys();
    let a = Bo::new(&phys, 4 * PAGE_SIZE, BoFlags::default()).unwrap();
    a.write(0, b"from a").unwrap();
    let exp = a.export_with(&no_udmabuf()).unwrap();
    let free_before = other.free_pages(Zone::Any);
    let b = Bo::import(&other, exp.fd, Some(a.size())).unwrap();
    assert!(b.is_imported());
    assert_eq!(b.size(), a.size());
    assert_eq!(other.free_pages(Zone::Any), free_before - 4);

    let mut buf = [0u8; 6];
    b.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from a");
    let data = pattern(8000, 77);
    b.write(2 * PAGE_SIZE - 500, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    a.read(2 * PAGE_SIZE - 500, &mut back).unwrap();
    assert_eq!(back, data);

    // Imported with flags: placement is honoured.
    let limit = PhysAddr(FOUR_GIB);
    let d = Bo::import_with(
        &other,
        a.export_with(&no_udmabuf()).unwrap().fd,
        None,
        BoFlags::default().below(limit).contiguous(),
    );
    // The file was imported into `other` already: the same import comes back.
    assert!(Arc::ptr_eq(&d.unwrap(), &b));
    drop(b);
    let d = Bo::import_with(
        &other,
        a.export_with(&no_udmabuf()).unwrap().fd,
        None,
        BoFlags::default().below(limit).contiguous(),
    )
    .unwrap();
    assert!(d.is_contiguous());
    assert!(d.pages().iter().all(|p| p.0 + PAGE_SIZE <= limit.0));
    let mut buf = [0u8; 6];
    d.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from a");
}

#[test]
fn import_accepts_a_foreign_memfd_with_the_right_seals() {
    let phys = phys();
    let fd = memfd(2 * PAGE_SIZE, Some(SealFlags::SHRINK));
    rustix::io::pwrite(&fd, b"peer data", 100).unwrap();
    let keep = rustix::io::dup(&fd).unwrap();
    let bo = Bo::import(&phys, fd, Some(2 * PAGE_SIZE)).unwrap();
    let mut buf = [0u8; 9];
    bo.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"peer data");
    bo.write(PAGE_SIZE, b"ours").unwrap();
    assert_eq!(pread_all(&keep, PAGE_SIZE, 4), b"ours");
}

/// Runs an import that must fail and checks that it took no frames.
fn refused(phys: &Arc<PhysMem>, fd: OwnedFd, expected: Option<u64>) -> MmError {
    let free = phys.free_pages(Zone::Any);
    let err = Bo::import(phys, fd, expected).unwrap_err();
    assert_eq!(
        phys.free_pages(Zone::Any),
        free,
        "a refused import took frames"
    );
    err
}

#[test]
fn import_refuses_what_is_not_a_memfd() {
    let phys = phys();

    let (reader, writer) = std::io::pipe().unwrap();
    assert_eq!(
        refused(&phys, OwnedFd::from(reader), None),
        MmError::NotMemfd {
            file_type: FileType::Fifo
        }
    );
    drop(writer);

    let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_eq!(
        refused(&phys, OwnedFd::from(s1), None),
        MmError::NotMemfd {
            file_type: FileType::Socket
        }
    );

    // A plain file on disk (unlinked at once, so nothing is left behind).
    let path = std::env::temp_dir().join(format!("devmmu-bo-import-{}", std::process::id()));
    let file = rustix::fs::open(
        &path,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .unwrap();
    rustix::fs::unlink(&path).unwrap();
    rustix::fs::ftruncate(&file, PAGE_SIZE).unwrap();
    let on_tmpfs = rustix::fs::fcntl_get_seals(&file).is_ok();
    let err = refused(&phys, file, None);
    if on_tmpfs {
        // A tmpfs file is sealable (it is shmem) but born with F_SEAL_SEAL only.
        assert_eq!(
            err,
            MmError::MissingSeal {
                seals: SealFlags::SEAL
            }
        );
    } else {
        assert_eq!(
            err,
            MmError::NotMemfd {
                file_type: FileType::RegularFile
            }
        );
    }

    let dir = rustix::fs::open(
        std::env::temp_dir(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    assert_eq!(
        refused(&phys, dir, None),
        MmError::NotMemfd {
            file_type: FileType::Directory
        }
    );

    let null =
        rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap();
    assert_eq!(
        refused(&phys, null, None),
        MmError::NotMemfd {
            file_type: FileType::CharacterDevice
        }
    );
}

#[test]
fn import_refuses_badly_sealed_or_sized_memfds() {
    let phys = phys();
    let size = 2 * PAGE_SIZE;

    // Shrinkable: only grow-sealed, or not sealable at all.
    assert_eq!(
        refused(&phys, memfd(size, Some(SealFlags::GROW)), None),
        MmError::MissingSeal {
            seals: SealFlags::GROW
        }
    );
    assert_eq!(
        refused(&phys, memfd(size, Some(SealFlags::empty())), None),
        MmError::MissingSeal {
            seals: SealFlags::empty()
        }
    );
    assert_eq!(
        refused(&phys, memfd(size, None), None),
        MmError::MissingSeal {
            seals: SealFlags::SEAL
        }
    );

    // Write-sealed: cannot be mapped writable.
    let seals = SealFlags::SHRINK | SealFlags::WRITE;
    assert_eq!(
        refused(&phys, memfd(size, Some(seals)), None),
        MmError::WriteSealed { seals }
    );

    // Sizes: not a page multiple, zero, different from what the peer announced.
    let s = SealFlags::SHRINK | SealFlags::GROW;
    assert_eq!(
        refused(&phys, memfd(PAGE_SIZE + 1, Some(s)), None),
        MmError::WrongSize {
            size: PAGE_SIZE + 1,
            expected: None
        }
    );
    assert_eq!(
        refused(&phys, memfd(0, Some(s)), None),
        MmError::WrongSize {
            size: 0,
            expected: None
        }
    );
    assert_eq!(
        refused(&phys, memfd(size, Some(s)), Some(PAGE_SIZE)),
        MmError::WrongSize {
            size,
            expected: Some(PAGE_SIZE)
        }
    );
    assert_eq!(
        refused(&phys, memfd(size, Some(s)), Some(4 * PAGE_SIZE)),
        MmError::WrongSize {
            size,
            expected: Some(4 * PAGE_SIZE)
        }
    );

    // A read-only fd for a well-sealed memfd (reopened through /proc).
    let rw = memfd(size, Some(s));
    let ro = rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&rw)),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    assert_eq!(
        refused(&phys, ro, None),
        MmError::FdNotWritable {
            access: OFlags::RDONLY
        }
    );
}

// ---------------------------------------------------------------- attachments and CPU access

fn debug_platform() -> Platform {
    Platform {
        swiotlb: None,
        debug: true,
        ..Platform::default()
    }
}

fn device(phys: &Arc<PhysMem>, name: &str, coherent: bool, platform: &Platform) -> Arc<DmaOps> {
    DmaOps::attach(
        Arc::clone(phys),
        DmaDevice::new(name, DmaMask::bits(64), coherent),
        platform,
    )
    .unwrap()
}

/// The device writes `data` (the whole BO) at the attachment's bus addresses, in buffer order.
fn device_fill(att: &BoAttachment, data: &[u8]) {
    let mut pos = 0usize;
    for seg in att.dma_segments() {
        let n = seg.len as usize;
        att.ops().bus_write(seg.dma, &data[pos..pos + n]).unwrap();
        pos += n;
    }
    assert_eq!(pos, data.len());
}

/// What the device reads at the attachment's bus addresses (the whole BO).
fn device_view(att: &BoAttachment) -> Vec<u8> {
    let mut out = vec![0u8; att.bo().size() as usize];
    let mut pos = 0usize;
    for seg in att.dma_segments() {
        let n = seg.len as usize;
        att.ops().bus_read(seg.dma, &mut out[pos..pos + n]).unwrap();
        pos += n;
    }
    out
}

fn cpu_view(bo: &Bo) -> Vec<u8> {
    let mut out = vec![0u8; bo.size() as usize];
    bo.read(0, &mut out).unwrap();
    out
}

fn cpu_access_diags(ops: &DmaOps) -> Vec<(bool, DmaDirection)> {
    ops.take_diagnostics()
        .into_iter()
        .filter_map(|d| match d {
            DmaDiag::CpuAccessWhileDeviceOwns { write, dir, .. } => Some((write, dir)),
            _ => None,
        })
        .collect()
}

#[test]
fn cpu_sees_device_writes_only_inside_a_read_bracket() {
    let phys = phys();
    let ops = device(&phys, "isp", false, &debug_platform());
    let bo = Bo::new(&phys, 4 * PAGE_SIZE, BoFlags::default()).unwrap();
    let att = bo.attach(&ops, DmaDirection::Bidirectional).unwrap();
    assert!(ops.take_diagnostics().is_empty());
    let size = bo.size() as usize;

    let from_device = pattern(size, 41);
    device_fill(&att, &from_device);

    // No bracket: stale CPU view, and DMA debugging catches the access.
    assert_eq!(cpu_view(&bo), vec![0u8; size]);
    let diags = cpu_access_diags(&ops);
    assert!(!diags.is_empty());
    assert!(diags
        .iter()
        .all(|&d| d == (false, DmaDirection::Bidirectional)));

    // Inside a READ bracket the device's bytes are there, and nothing is reported.
    let before = ops.stats();
    let guard = bo.begin_cpu_access(CpuAccess::READ).unwrap();
    assert_eq!(guard.access(), CpuAccess::READ);
    assert_eq!(cpu_view(&bo), from_device);
    assert!(ops.take_diagnostics().is_empty());
    let mid = ops.stats();
    assert_eq!(mid.syncs_for_cpu, before.syncs_for_cpu + 1);
    assert_eq!(
        mid.bytes_synced_for_cpu,
        before.bytes_synced_for_cpu + bo.size()
    );
    guard.end().unwrap();
    assert_eq!(ops.stats().syncs_for_device, mid.syncs_for_device + 1);

    // The bracket is over: the device owns the BO again, a bare read is reported again.
    let mut one = [0u8; 1];
    bo.read(0, &mut one).unwrap();
    assert_eq!(
        cpu_access_diags(&ops),
        vec![(false, DmaDirection::Bidirectional)]
    );
}

#[test]
fn cpu_writes_reach_the_device_when_a_write_bracket_ends() {
    let phys = phys();
    let ops = device(&phys, "isp", false, &debug_platform());
    let bo = Bo::new(&phys, 3 * PAGE_SIZE, BoFlags::default()).unwrap();
    let att = bo.attach(&ops, DmaDirection::Bidirectional).unwrap();
    let size = bo.size() as usize;
    let from_device = pattern(size, 1);
    device_fill(&att, &from_device);

    let from_cpu = pattern(size, 99);
    let guard = bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    bo.write(0, &from_cpu).unwrap();
    assert!(ops.take_diagnostics().is_empty());
    // Still in the CPU's caches: the device reads RAM.
    assert_eq!(device_view(&att), from_device);
    drop(guard);
    assert_eq!(device_view(&att), from_cpu);

    // A partial write inside a READ | WRITE bracket keeps the device's neighbouring bytes.
    let newer = pattern(size, 7);
    device_fill(&att, &newer);
    {
        let _g = bo
            .begin_cpu_access(CpuAccess::READ | CpuAccess::WRITE)
            .unwrap();
        bo.write(100, b"cpu").unwrap();
    }
    let mut expect = newer.clone();
    expect[100..103].copy_from_slice(b"cpu");
    assert_eq!(device_view(&att), expect);

    // Without a bracket the write stays in the CPU view and is reported.
    bo.write(0, b"unbracketed").unwrap();
    assert_eq!(&device_view(&att)[..11], &expect[..11]);
    assert_eq!(
        cpu_access_diags(&ops),
        vec![(true, DmaDirection::Bidirectional)]
    );
}

#[test]
fn a_coherent_device_needs_no_syncs() {
    let phys = phys();
    let ops = device(&phys, "gpu", true, &debug_platform());
    let bo = Bo::new(&phys, 2 * PAGE_SIZE, BoFlags::default()).unwrap();
    let att = bo.attach(&ops, DmaDirection::Bidirectional).unwrap();
    let data = pattern(bo.size() as usize, 5);
    device_fill(&att, &data);
    // The device snoops the caches: its writes are visible at once ...
    let guard = bo.begin_cpu_access(CpuAccess::READ).unwrap();
    assert_eq!(cpu_view(&bo), data);
    guard.end().unwrap();
    // ... and no sync did any work.
    let st = ops.stats();
    assert_eq!((st.syncs_for_cpu, st.syncs_for_device), (0, 0));
    bo.write(0, b"coherent").unwrap();
    assert_eq!(&device_view(&att)[..8], b"coherent");
}

#[test]
fn the_bracket_syncs_every_attachment() {
    let phys = phys();
    let platform = debug_platform();
    let reader = device(&phys, "display", false, &platform);
    let writer = device(&phys, "camera", false, &platform);
    let bo = Bo::new(&phys, 2 * PAGE_SIZE, BoFlags::default()).unwrap();
    let to_display = bo.attach(&reader, DmaDirection::ToDevice).unwrap();
    let from_camera = bo.attach(&writer, DmaDirection::FromDevice).unwrap();
    assert_eq!(bo.attachment_count(), 2);

    let frame = pattern(bo.size() as usize, 200);
    device_fill(&from_camera, &frame);
    {
        let _g = bo
            .begin_cpu_access(CpuAccess::READ | CpuAccess::WRITE)
            .unwrap();
        assert_eq!(cpu_view(&bo), frame);
        bo.write(0, b"overlay").unwrap();
    }
    let shown = device_view(&to_display);
    assert_eq!(&shown[..7], b"overlay");
    assert_eq!(&shown[7..], &frame[7..]);
    assert!(reader.take_diagnostics().is_empty());
    assert!(writer.take_diagnostics().is_empty());

    // Once detached, an attachment is no longer synced.
    from_camera.detach().unwrap();
    assert_eq!(bo.attachment_count(), 1);
    let before = writer.stats();
    drop(bo.begin_cpu_access(CpuAccess::READ).unwrap());
    let after = writer.stats();
    assert_eq!(
        (after.syncs_for_cpu, after.syncs_for_device),
        (before.syncs_for_cpu, before.syncs_for_device)
    );
}

#[test]
fn write_combined_bo_reaches_the_device_without_a_bracket() {
    let phys = phys();
    let ops = device(&phys, "display", false, &debug_platform());
    let bo = Bo::new(
        &phys,
        PAGE_SIZE,
        BoFlags::default().caching(Caching::WriteCombined),
    )
    .unwrap();
    let att = bo.attach(&ops, DmaDirection::ToDevice).unwrap();
    bo.write(64, b"scanout").unwrap();
    assert_eq!(&device_view(&att)[64..71], b"scanout");
    // A ToDevice mapping is never device-owned for CPU access.
    assert!(ops.take_diagnostics().is_empty());
}

#[test]
fn attachments_map_unmap_and_hold_the_bo() {
    let phys = phys();
    let ops = device(&phys, "isp", false, &debug_platform());
    let bo = Bo::new(&phys, 8 * PAGE_SIZE, BoFlags::default()).unwrap();
    let first = bo.pages()[0];
    let att = bo.attach(&ops, DmaDirection::ToDevice).unwrap();
    assert_eq!(ops.live_mappings(), 1);
    assert_eq!(att.dir(), DmaDirection::ToDevice);
    assert_eq!(att.sg().phys(), &bo.segments()[..]);
    assert_eq!(
        att.dma_segments().iter().map(|s| s.len).sum::<u64>(),
        bo.size()
    );
    // Direct DMA without an offset: bus address = physical address, segment by segment.
    assert_eq!(ops.kind(), DmaOpsKind::Direct);
    assert_eq!(att.dma_segments().len(), bo.segments().len());
    for (d, p) in att.dma_segments().iter().zip(bo.segments()) {
        assert_eq!((d.dma.0, d.len), (p.addr.0, p.len));
    }

    // The attachment keeps the BO (and its frames) alive.
    drop(bo);
    assert!(phys.is_allocated(first));
    let bo = Arc::clone(att.bo());
    drop(att);
    assert_eq!(ops.live_mappings(), 0);
    assert_eq!(bo.attachment_count(), 0);
    assert_eq!(ops.stats().unmaps, 1);

    let att = bo.attach(&ops, DmaDirection::FromDevice).unwrap();
    att.detach().unwrap();
    assert_eq!(ops.live_mappings(), 0);
    assert_eq!(ops.stats().unmaps, 2);
    assert!(ops.take_diagnostics().is_empty());
    drop(bo);
    assert!(!phys.is_allocated(first));
    assert!(ops.detach().is_empty());
}

#[test]
fn behind_a_system_iommu_the_bo_is_one_dma_segment() {
    let phys = phys();
    let platform = Platform {
        system_iommu: true,
        ..debug_platform()
    };
    let ops = device(&phys, "npu", false, &platform);
    let bo = Bo::new(&phys, 16 * PAGE_SIZE, BoFlags::default()).unwrap();
    assert!(bo.segments().len() > 1);
    let att = bo.attach(&ops, DmaDirection::Bidirectional).unwrap();
    assert_eq!(att.dma_segments().len(), 1);
    assert_eq!(att.dma_segments()[0].len, bo.size());
    let data = pattern(bo.size() as usize, 3);
    device_fill(&att, &data);
    let g = bo.begin_cpu_access(CpuAccess::READ).unwrap();
    assert_eq!(cpu_view(&bo), data);
    g.end().unwrap();
}

#[test]
fn failed_attachments_leave_nothing_behind() {
    let phys = phys();
    // A 32-bit device without swiotlb or IOMMU cannot reach a BO in high memory.
    let ops = DmaOps::attach(
        Arc::clone(&phys),
        DmaDevice::new("old", DmaMask::bits(32), false),
        &debug_platform(),
    )
    .unwrap();
    let bo = Bo::new(&phys, 2 * PAGE_SIZE, BoFlags::default()).unwrap();
    assert!(matches!(
        bo.attach(&ops, DmaDirection::ToDevice).unwrap_err(),
        MmError::BeyondDmaMask { .. }
    ));
    assert_eq!(bo.attachment_count(), 0);
    assert_eq!(ops.live_mappings(), 0);
    // The same BO placed below 4 GiB attaches.
    let low = Bo::new(
        &phys,
        2 * PAGE_SIZE,
        BoFlags::default().below(PhysAddr(FOUR_GIB)),
    )
    .unwrap();
    let att = low.attach(&ops, DmaDirection::ToDevice).unwrap();
    assert!(att
        .dma_segments()
        .iter()
        .all(|s| s.dma.0 + s.len <= FOUR_GIB));

    // DMA ops of another machine's memory.
    let other = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let foreign = device(&other, "elsewhere", false, &debug_platform());
    assert_eq!(
        bo.attach(&foreign, DmaDirection::ToDevice).unwrap_err(),
        MmError::WrongPhysMem {
            device: "elsewhere".into()
        }
    );
    assert_eq!(foreign.live_mappings(), 0);
}
