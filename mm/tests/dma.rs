//! The system DMA ops seen from outside the crate: what the device reads and writes through the
//! bus after each map / sync / unmap, for every backend and coherency; bounce buffering; the
//! system IOMMU's address space; the two-step IOVA API; resources; DMA-API debugging.
//!
//! The oracle is the model of a non-coherent device (CacheMode::Model): a missing sync shows as
//! stale bytes, so every "with sync" check has a "without sync" twin that must see stale data.

use std::sync::Arc;

use devmmu_mm::dma::{
    BusFaultReason, DmaAddr, DmaDevice, DmaDiag, DmaDirection, DmaMask, DmaOps, DmaOpsKind,
    DmaSegment, KindLeak, LeakReport, MappingKind, Platform, TableBus, TablePool, X86_MSI_WINDOW,
};
use devmmu_mm::phys::{
    CacheMode, FrameAlloc, Frames, MemoryMap, PhysAddr, PhysMem, PhysSegment, PAGE_SIZE,
};
use devmmu_mm::{AddressSpace, MmError};
use devmmu_pagetable::{
    walk, ArmLpae4k, Gather, Iova, PageTable, PageTableConfig, Prot, TableReader,
};

use DmaDirection::{Bidirectional, FromDevice, ToDevice};

const FOUR_GIB: u64 = 1 << 32;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn phys() -> Arc<PhysMem> {
    PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap()
}

/// The three system DMA setups under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    /// Direct, 64-bit mask: no bounce.
    Direct,
    /// Direct, 32-bit mask, swiotlb: buffers above 4 GiB bounce.
    Bounce,
    /// Behind a system IOMMU, 32-bit mask.
    Iommu,
}

fn platform(setup: Setup) -> Platform {
    Platform {
        system_iommu: setup == Setup::Iommu,
        swiotlb: match setup {
            Setup::Bounce => Some(1 << 20),
            _ => None,
        },
        debug: true,
        ..Platform::default()
    }
}

fn attach(setup: Setup, coherent: bool) -> (Arc<PhysMem>, Arc<DmaOps>) {
    let p = phys();
    let mask = match setup {
        Setup::Direct => DmaMask::bits(64),
        _ => DmaMask::bits(32),
    };
    let ops = DmaOps::attach(
        p.clone(),
        DmaDevice::new(format!("{setup:?}"), mask, coherent),
        &platform(setup),
    )
    .unwrap();
    (p, ops)
}

fn device_read(ops: &DmaOps, dma: DmaAddr, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    ops.bus_read(dma, &mut buf).unwrap();
    buf
}

fn cpu_read(f: &Frames, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read(offset, &mut buf).unwrap();
    buf
}

/// A 3-page physically contiguous buffer (high memory first, so above 4 GiB) and a byte range
/// in it that starts and ends mid-page.
fn buffer(p: &Arc<PhysMem>) -> (Frames, u64, usize) {
    let f = p.alloc_frames(3, FrameAlloc::contiguous()).unwrap();
    assert!(
        f.pages()[0].0 >= FOUR_GIB,
        "default map allocates high RAM first"
    );
    (f, 100, 2 * PAGE_SIZE as usize + 50)
}

// ---------------------------------------------------------------- data through every backend

/// ToDevice: the device sees what the CPU wrote after the (implicit or explicit) sync for
/// device, and stale data without it on a non-coherent or bounced mapping.
fn to_device(setup: Setup, coherent: bool) {
    let (p, ops) = attach(setup, coherent);
    let (f, off, len) = buffer(&p);
    let pa = f.phys_addr(off).unwrap();
    let a = pattern(len, 1);
    f.write(off, &a).unwrap();
    let dma = ops.map_page(pa, len as u64, ToDevice).unwrap();
    assert_eq!(
        device_read(&ops, dma, len),
        a,
        "{setup:?} coherent={coherent}: after map"
    );

    let b = pattern(len, 2);
    f.write(off, &b).unwrap();
    let stale = !coherent || setup == Setup::Bounce;
    let seen = device_read(&ops, dma, len);
    if stale {
        assert_eq!(
            seen, a,
            "{setup:?} coherent={coherent}: no sync must show stale data"
        );
    } else {
        assert_eq!(seen, b, "{setup:?}: a coherent unbounced device snoops");
    }
    ops.sync_single_for_device(dma, len as u64, ToDevice)
        .unwrap();
    assert_eq!(
        device_read(&ops, dma, len),
        b,
        "{setup:?} coherent={coherent}: after sync"
    );

    // A device write to a ToDevice mapping: refused by the IOMMU (read-only IOPTE), and never
    // brought back to the CPU by the direct backends.
    let c = pattern(len, 3);
    match setup {
        Setup::Iommu => {
            let e = ops.bus_write(dma, &c).unwrap_err();
            assert!(
                matches!(e.reason, BusFaultReason::Permission { .. }),
                "{e:?}"
            );
        }
        _ => ops.bus_write(dma, &c).unwrap(),
    }
    ops.unmap_page(dma, len as u64, ToDevice).unwrap();
    if setup == Setup::Bounce || (setup == Setup::Direct && !coherent) {
        assert_eq!(
            cpu_read(&f, off, len),
            b,
            "ToDevice unmap brings nothing back"
        );
    }
    assert!(ops.diagnostics().is_empty(), "{:?}", ops.diagnostics());
    let s = ops.stats();
    assert_eq!((s.maps, s.unmaps), (1, 1));
    if coherent && setup != Setup::Bounce {
        assert_eq!(
            s.syncs_for_device, 0,
            "a coherent device gets no cache work"
        );
    } else {
        assert_eq!(s.syncs_for_device, 2, "map and explicit sync");
        assert_eq!(s.bytes_synced_for_device, 2 * len as u64);
    }
}

/// FromDevice: the CPU sees what the device wrote after sync for CPU / unmap, and stale data
/// before on a non-coherent or bounced mapping.
fn from_device(setup: Setup, coherent: bool) {
    let (p, ops) = attach(setup, coherent);
    let (f, off, len) = buffer(&p);
    let pa = f.phys_addr(off).unwrap();
    let old = pattern(len, 9);
    f.write(off, &old).unwrap();
    let dma = ops.map_page(pa, len as u64, FromDevice).unwrap();
    if setup == Setup::Bounce {
        let slot = ops.bus_to_phys(dma, 1, true).unwrap();
        let (pool, size) = match ops.as_direct() {
            Some(d) => d.swiotlb_pool().unwrap(),
            None => unreachable!(),
        };
        assert!(
            slot.0 >= pool.0 && slot.0 < pool.0 + size,
            "device accesses the bounce slot"
        );
        assert_ne!(slot, pa);
    } else if setup == Setup::Iommu {
        assert_eq!(ops.bus_to_phys(dma, len as u64, true).unwrap(), pa);
    } else {
        assert_eq!(dma, DmaAddr(pa.0));
    }
    let c = pattern(len, 4);
    ops.bus_write(dma, &c).unwrap();
    let stale = !coherent || setup == Setup::Bounce;
    let seen = cpu_read(&f, off, len);
    if stale {
        assert_eq!(
            seen, old,
            "{setup:?} coherent={coherent}: no sync must show stale data"
        );
    } else {
        assert_eq!(seen, c);
    }
    ops.sync_single_for_cpu(dma, len as u64, FromDevice)
        .unwrap();
    assert_eq!(
        cpu_read(&f, off, len),
        c,
        "{setup:?} coherent={coherent}: after sync"
    );

    // Back to the device, another write, and this time the unmap hands it over.
    ops.sync_single_for_device(dma, len as u64, FromDevice)
        .unwrap();
    let d = pattern(len, 5);
    ops.bus_write(dma, &d).unwrap();
    ops.unmap_page(dma, len as u64, FromDevice).unwrap();
    assert_eq!(
        cpu_read(&f, off, len),
        d,
        "{setup:?} coherent={coherent}: after unmap"
    );
    // Bytes around the mapped range are untouched.
    assert_eq!(cpu_read(&f, 0, off as usize), vec![0u8; off as usize]);
    assert!(ops.diagnostics().is_empty(), "{:?}", ops.diagnostics());
    let s = ops.stats();
    if setup == Setup::Bounce {
        // map + sync_for_device? no: FromDevice sync_for_device copies nothing. Copies: map
        // (whole), sync_for_cpu, unmap.
        assert_eq!(s.bounced_bytes, 3 * len as u64);
        assert_eq!(s.swiotlb_slots_in_use, 0);
    } else {
        assert_eq!(s.bounced_bytes, 0);
    }
    if coherent && setup != Setup::Bounce {
        assert_eq!((s.syncs_for_cpu, s.syncs_for_device), (0, 0));
    } else {
        assert_eq!(s.syncs_for_cpu, 2, "explicit sync and unmap");
    }
}

#[test]
fn to_device_every_backend_and_coherency() {
    for setup in [Setup::Direct, Setup::Bounce, Setup::Iommu] {
        for coherent in [false, true] {
            to_device(setup, coherent);
        }
    }
}

#[test]
fn from_device_every_backend_and_coherency() {
    for setup in [Setup::Direct, Setup::Bounce, Setup::Iommu] {
        for coherent in [false, true] {
            from_device(setup, coherent);
        }
    }
}

#[test]
fn bidirectional_sg_round_trip_every_backend() {
    for setup in [Setup::Direct, Setup::Bounce, Setup::Iommu] {
        for coherent in [false, true] {
            let (p, ops) = attach(setup, coherent);
            let f = p.alloc_frames(8, FrameAlloc::scattered()).unwrap();
            let len = f.len_bytes() as usize;
            let a = pattern(len, 7);
            f.write(0, &a).unwrap();
            let sg = ops.map_sg(&f.segments(), Bidirectional).unwrap();
            assert_eq!(sg.dma().iter().map(|s| s.len).sum::<u64>(), len as u64);
            // The device reads each DMA segment; together they are the buffer in order.
            let mut seen = Vec::new();
            for s in sg.dma() {
                seen.extend(device_read(&ops, s.dma, s.len as usize));
            }
            assert_eq!(seen, a, "{setup:?} coherent={coherent}");
            // The device overwrites everything; the CPU sees it after sync_sg_for_cpu.
            let b = pattern(len, 8);
            let mut pos = 0;
            for s in sg.dma() {
                ops.bus_write(s.dma, &b[pos..pos + s.len as usize]).unwrap();
                pos += s.len as usize;
            }
            ops.sync_sg_for_cpu(&sg).unwrap();
            assert_eq!(cpu_read(&f, 0, len), b, "{setup:?} coherent={coherent}");
            // CPU writes, gives back to the device.
            f.write(0, &a).unwrap();
            ops.sync_sg_for_device(&sg).unwrap();
            let mut seen = Vec::new();
            for s in sg.dma() {
                seen.extend(device_read(&ops, s.dma, s.len as usize));
            }
            assert_eq!(seen, a);
            ops.unmap_sg(&sg).unwrap();
            assert!(ops.diagnostics().is_empty(), "{:?}", ops.diagnostics());
            assert_eq!(ops.live_mappings(), 0);
        }
    }
}

// ---------------------------------------------------------------- 32-bit device, high memory

#[test]
fn mask_32_high_memory_direct_bounces() {
    let (p, ops) = attach(Setup::Bounce, false);
    let f = p.alloc_frames(2, FrameAlloc::contiguous()).unwrap();
    let pa = f.pages()[0];
    assert!(pa.0 >= FOUR_GIB);
    let len = 2 * PAGE_SIZE;
    let a = pattern(len as usize, 21);
    f.write(0, &a).unwrap();
    let dma = ops.map_page(pa, len, Bidirectional).unwrap();
    assert!(
        dma.0 + len <= FOUR_GIB,
        "bounce address {dma} below the mask"
    );
    assert_eq!(
        dma.0 % PAGE_SIZE,
        0,
        "page-sized bounce buffers are page-aligned"
    );
    let s = ops.stats();
    assert_eq!(s.bounced_bytes, len);
    assert_eq!(s.swiotlb_slots_in_use, len / 2048);
    assert_eq!(device_read(&ops, dma, len as usize), a);
    let b = pattern(len as usize, 22);
    ops.bus_write(dma, &b).unwrap();
    ops.unmap_page(dma, len, Bidirectional).unwrap();
    assert_eq!(cpu_read(&f, 0, len as usize), b);
    let s = ops.stats();
    assert_eq!(s.bounced_bytes, 2 * len);
    assert_eq!(s.swiotlb_slots_in_use, 0);
    // The original's page was never given to the device.
    assert!(ops.bus_to_phys(DmaAddr(pa.0), 1, false).is_err());

    // One bounce buffer is at most one 128-slot segment.
    let big = p.alloc_frames(80, FrameAlloc::contiguous()).unwrap();
    assert_eq!(
        ops.map_page(big.pages()[0], 300 << 10, ToDevice)
            .unwrap_err(),
        MmError::SwiotlbTooLarge {
            len: 300 << 10,
            max: 256 << 10
        }
    );
    assert_eq!(ops.live_mappings(), 0);
}

#[test]
fn swiotlb_full_is_refused_and_leaves_nothing() {
    let (p, ops) = attach(Setup::Bounce, true);
    let f = p.alloc_frames(64 * 4, FrameAlloc::contiguous()).unwrap();
    let mut dmas = Vec::new();
    for i in 0..4u64 {
        let pa = PhysAddr(f.pages()[0].0 + i * (256 << 10));
        dmas.push(ops.map_page(pa, 256 << 10, ToDevice).unwrap());
    }
    assert_eq!(ops.stats().swiotlb_slots_in_use, 512);
    let e = ops.map_page(f.pages()[0], 4096, ToDevice).unwrap_err();
    assert_eq!(
        e,
        MmError::SwiotlbFull {
            len: 4096,
            slots_needed: 2,
            slots_free: 0
        }
    );
    assert_eq!(ops.live_mappings(), 4);
    for d in dmas {
        ops.unmap_page(d, 256 << 10, ToDevice).unwrap();
    }
    assert_eq!(ops.stats().swiotlb_slots_in_use, 0);
}

#[test]
fn mask_32_high_memory_iommu_maps_below_4g_without_bounce() {
    let (p, ops) = attach(Setup::Iommu, false);
    assert_eq!(ops.kind(), DmaOpsKind::Iommu);
    let f = p.alloc_frames(16, FrameAlloc::scattered()).unwrap();
    assert!(f.pages().iter().all(|pa| pa.0 >= FOUR_GIB));
    let a = pattern(f.len_bytes() as usize, 31);
    f.write(0, &a).unwrap();
    let sg = ops.map_sg(&f.segments(), ToDevice).unwrap();
    assert_eq!(sg.dma().len(), 1, "one IOVA-contiguous segment");
    let mut singles = Vec::new();
    for &pa in f.pages() {
        singles.push(ops.map_page(PhysAddr(pa.0 + 8), 100, ToDevice).unwrap());
    }
    for s in sg.dma() {
        assert!(s.dma.0 + s.len <= FOUR_GIB);
    }
    for d in &singles {
        assert!(d.0 < FOUR_GIB);
        assert_eq!(d.0 % PAGE_SIZE, 8, "offset in page kept");
    }
    assert_eq!(device_read(&ops, sg.dma()[0].dma, a.len()), a);
    let s = ops.stats();
    assert_eq!(s.bounced_bytes, 0);
    assert_eq!(s.iova_bytes_in_use, 16 * PAGE_SIZE + 16 * PAGE_SIZE);
    for d in singles {
        ops.unmap_page(d, 100, ToDevice).unwrap();
    }
    ops.unmap_sg(&sg).unwrap();
    let s = ops.stats();
    assert_eq!(s.iova_bytes_in_use, 0);
    assert_eq!(s.iotlb_invalidations, 17, "one per unmap");
    // Unmapped: the device faults.
    let e = ops.bus_to_phys(sg.dma()[0].dma, 1, false).unwrap_err();
    assert!(
        matches!(e.reason, BusFaultReason::Translation { .. }),
        "{e:?}"
    );
}

#[test]
fn mask_32_high_memory_without_swiotlb_is_refused() {
    let p = phys();
    let ops = DmaOps::attach(
        p.clone(),
        DmaDevice::new("nobounce", DmaMask::bits(32), false),
        &Platform {
            swiotlb: None,
            ..Platform::default()
        },
    )
    .unwrap();
    let f = p.alloc_frames(1, FrameAlloc::scattered()).unwrap();
    let pa = f.pages()[0];
    assert_eq!(
        ops.map_page(pa, 64, ToDevice).unwrap_err(),
        MmError::BeyondDmaMask {
            addr: pa,
            len: 64,
            mask: 0xFFFF_FFFF
        }
    );
    assert_eq!(ops.live_mappings(), 0);
    // Low memory is fine, and the device cannot reach high memory on the bus either.
    let low = p
        .alloc_frames(1, FrameAlloc::scattered().below(PhysAddr(FOUR_GIB)))
        .unwrap();
    let dma = ops.map_page(low.pages()[0], 64, ToDevice).unwrap();
    assert_eq!(dma.0, low.pages()[0].0);
    ops.unmap_page(dma, 64, ToDevice).unwrap();
    let e = ops.bus_to_phys(DmaAddr(pa.0), 4, false).unwrap_err();
    assert_eq!(e.reason, BusFaultReason::BeyondMask { mask: 0xFFFF_FFFF });
}

#[test]
fn bus_offset_shifts_direct_addresses() {
    let p = phys();
    let offset = 0x1_0000_0000;
    let ops = DmaOps::attach(
        p.clone(),
        DmaDevice::new("offset", DmaMask::bits(40), true),
        &Platform {
            bus_offset: offset,
            ..Platform::default()
        },
    )
    .unwrap();
    let f = p.alloc_frames(1, FrameAlloc::scattered()).unwrap();
    let dma = ops.map_page(f.pages()[0], 16, ToDevice).unwrap();
    assert_eq!(dma.0, f.pages()[0].0 + offset);
    assert_eq!(ops.bus_to_phys(dma, 16, false).unwrap(), f.pages()[0]);
    let e = ops.bus_to_phys(DmaAddr(0x1000), 1, false).unwrap_err();
    assert_eq!(e.reason, BusFaultReason::BelowBusOffset { offset });
    ops.unmap_page(dma, 16, ToDevice).unwrap();
    let bad = DmaOps::attach(
        p,
        DmaDevice::new("bad", DmaMask::bits(40), true),
        &Platform {
            bus_offset: 0x800,
            ..Platform::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        bad,
        MmError::Misaligned {
            value: 0x800,
            align: PAGE_SIZE
        }
    );
}

// ---------------------------------------------------------------- scatter-gather merging

#[test]
fn map_sg_merges_adjacent_segments() {
    // Direct: four physically adjacent pages given as four segments -> one DMA segment; a gap
    // starts a new one.
    let (p, ops) = attach(Setup::Direct, true);
    let f = p.alloc_frames(6, FrameAlloc::contiguous()).unwrap();
    let base = f.pages()[0].0;
    let segs: Vec<PhysSegment> = [0u64, 1, 2, 3, 5]
        .iter()
        .map(|&i| PhysSegment {
            addr: PhysAddr(base + i * PAGE_SIZE),
            len: PAGE_SIZE,
        })
        .collect();
    let sg = ops.map_sg(&segs, ToDevice).unwrap();
    assert_eq!(
        sg.dma(),
        &[
            DmaSegment {
                dma: DmaAddr(base),
                len: 4 * PAGE_SIZE
            },
            DmaSegment {
                dma: DmaAddr(base + 5 * PAGE_SIZE),
                len: PAGE_SIZE
            }
        ]
    );
    assert_eq!(sg.phys(), &segs[..]);
    ops.unmap_sg(&sg).unwrap();

    // Bounced segments are never merged, even when their originals are adjacent.
    let (p, ops) = attach(Setup::Bounce, true);
    let f = p.alloc_frames(2, FrameAlloc::contiguous()).unwrap();
    let segs: Vec<PhysSegment> = f
        .pages()
        .iter()
        .map(|&addr| PhysSegment {
            addr,
            len: PAGE_SIZE,
        })
        .collect();
    let sg = ops.map_sg(&segs, ToDevice).unwrap();
    assert_eq!(sg.dma().len(), 2);
    ops.unmap_sg(&sg).unwrap();

    // IOMMU: scattered pages -> one segment; a segment ending mid-page forces padding and a
    // second DMA segment.
    let (p, ops) = attach(Setup::Iommu, true);
    let f = p.alloc_frames(8, FrameAlloc::scattered()).unwrap();
    assert!(f.segments().len() > 1, "the test wants scattered frames");
    let sg = ops.map_sg(&f.segments(), Bidirectional).unwrap();
    assert_eq!(sg.dma().len(), 1);
    assert_eq!(sg.dma()[0].len, 8 * PAGE_SIZE);
    let mut segs = f.segments();
    segs[0].len = 100;
    let sg2 = ops.map_sg(&segs, Bidirectional).unwrap();
    assert_eq!(sg2.dma().len(), 2);
    assert_eq!(sg2.dma()[0].len, 100);
    assert_eq!(sg2.dma()[1].dma.0, sg2.dma()[0].dma.0 + PAGE_SIZE);
    ops.unmap_sg(&sg2).unwrap();
    ops.unmap_sg(&sg).unwrap();
    assert_eq!(ops.map_sg(&[], ToDevice).unwrap_err(), MmError::ZeroSize);
}

// ---------------------------------------------------------------- system IOMMU address space

#[test]
fn reserved_msi_window_never_allocated_until_exhaustion() {
    let (p, ops) = attach(Setup::Iommu, true);
    let mut got = Vec::new();
    let mut ranges = Vec::new();
    for size in [16u64 << 20, 1 << 20, PAGE_SIZE] {
        while let Ok(r) = ops.iova_alloc(size) {
            got.push((r.addr().0, r.size()));
            ranges.push(r);
        }
    }
    let (msi_lo, msi_hi) = X86_MSI_WINDOW;
    for &(start, size) in &got {
        assert!(
            start + size <= msi_lo || start >= msi_hi,
            "{start:#x} in the MSI window"
        );
        assert!(start >= PAGE_SIZE && start + size <= FOUR_GIB);
    }
    // Everything but the MSI window and page 0 was handed out.
    let total: u64 = got.iter().map(|g| g.1).sum();
    assert_eq!(total, FOUR_GIB - PAGE_SIZE - (msi_hi - msi_lo));
    assert_eq!(ops.stats().iova_bytes_in_use, total);
    // Top-down: the first allocation was at the top of the space.
    assert_eq!(got[0].0, FOUR_GIB - (16 << 20));
    let f = p.alloc_frames(1, FrameAlloc::scattered()).unwrap();
    assert_eq!(
        ops.map_page(f.pages()[0], 8, ToDevice).unwrap_err(),
        MmError::NoAddressSpace {
            space: AddressSpace::SystemIova,
            size: PAGE_SIZE,
            limit: FOUR_GIB - 1
        }
    );
    assert_eq!(ops.live_mappings(), 0);
    let leak = ops.detach();
    assert_eq!(leak.mappings, got.len() as u64);
    assert_eq!(leak.bytes, total);
    for r in ranges {
        ops.iova_free(r).unwrap();
    }
    assert_eq!(ops.stats().iova_bytes_in_use, 0);
    assert!(ops.detach().is_empty());
}

#[test]
fn iommu_refuses_phys_beyond_its_output_size_and_rolls_back() {
    // 2^48 is beyond ARM LPAE's 48-bit output address.
    let map = MemoryMap::new(vec![
        devmmu_mm::phys::RamRegion {
            base: PhysAddr(1 << 48),
            size: 16 * PAGE_SIZE,
        },
        devmmu_mm::phys::RamRegion {
            base: PhysAddr(0x8000_0000),
            size: 64 * PAGE_SIZE,
        },
    ])
    .unwrap();
    let p = PhysMem::new(map, CacheMode::Model).unwrap();
    let ops = DmaOps::attach(
        p.clone(),
        DmaDevice::new("far", DmaMask::bits(64), true),
        &platform(Setup::Iommu),
    )
    .unwrap();
    let f = p.alloc_frames(1, FrameAlloc::scattered()).unwrap();
    assert!(f.pages()[0].0 >= 1 << 48);
    let e = ops.map_page(f.pages()[0], 8, ToDevice).unwrap_err();
    assert!(matches!(e, MmError::IommuMap { .. }), "{e:?}");
    assert_eq!(ops.stats().iova_bytes_in_use, 0);
    assert_eq!(ops.live_mappings(), 0);
}

// ---------------------------------------------------------------- two-step IOVA API

#[test]
fn two_step_iova_link_sync_unlink() {
    let (p, ops) = attach(Setup::Iommu, false);
    let range = ops.iova_alloc(16 * PAGE_SIZE).unwrap();
    assert_eq!(range.size(), 16 * PAGE_SIZE);
    let bufs: Vec<Frames> = (0..3)
        .map(|i| {
            let f = p.alloc_frames(2, FrameAlloc::contiguous()).unwrap();
            f.write(0, &pattern(2 * PAGE_SIZE as usize, 40 + i))
                .unwrap();
            f
        })
        .collect();
    let before = ops.stats().iotlb_invalidations;
    for (i, f) in bufs.iter().enumerate() {
        let off = i as u64 * 4 * PAGE_SIZE;
        ops.iova_link(&range, off, f.pages()[0], 2 * PAGE_SIZE, ToDevice)
            .unwrap();
    }
    assert_eq!(
        ops.stats().iotlb_invalidations,
        before,
        "links do no IOTLB work"
    );
    ops.iova_sync(&range, 0, 12 * PAGE_SIZE).unwrap();
    assert_eq!(
        ops.stats().iotlb_invalidations,
        before + 1,
        "one sync for the batch"
    );
    for (i, _) in bufs.iter().enumerate() {
        let dma = DmaAddr(range.addr().0 + i as u64 * 4 * PAGE_SIZE);
        assert_eq!(
            device_read(&ops, dma, 2 * PAGE_SIZE as usize),
            pattern(2 * PAGE_SIZE as usize, 40 + i as u8),
            "link {i}: a non-coherent device sees the cleaned bytes"
        );
    }
    // Between links: nothing mapped.
    let hole = DmaAddr(range.addr().0 + 2 * PAGE_SIZE);
    assert!(ops.bus_to_phys(hole, 1, false).is_err());
    // Linking over a linked page is refused.
    let e = ops
        .iova_link(&range, 0, bufs[1].pages()[0], PAGE_SIZE, ToDevice)
        .unwrap_err();
    assert!(matches!(e, MmError::IommuMap { .. }), "{e:?}");
    // Unlink the middle one: it faults, the others still translate.
    ops.iova_unlink(&range, 4 * PAGE_SIZE, 2 * PAGE_SIZE, ToDevice)
        .unwrap();
    let mid = DmaAddr(range.addr().0 + 4 * PAGE_SIZE);
    assert!(matches!(
        ops.bus_to_phys(mid, 1, false).unwrap_err().reason,
        BusFaultReason::Translation { .. }
    ));
    assert_eq!(
        ops.bus_to_phys(range.addr(), 8, false).unwrap(),
        bufs[0].pages()[0]
    );
    assert_eq!(
        ops.iova_link(
            &range,
            15 * PAGE_SIZE,
            bufs[0].pages()[0],
            2 * PAGE_SIZE,
            ToDevice
        )
        .unwrap_err(),
        MmError::IovaOutOfRange {
            offset: 15 * PAGE_SIZE,
            len: 2 * PAGE_SIZE,
            size: 16 * PAGE_SIZE
        }
    );
    let start = range.addr();
    ops.iova_free(range).unwrap();
    assert!(ops.bus_to_phys(start, 1, false).is_err());
    let s = ops.stats();
    assert_eq!((s.maps, s.unmaps), (3, 3));
    assert_eq!(s.iova_bytes_in_use, 0);
    assert!(ops.diagnostics().is_empty(), "{:?}", ops.diagnostics());

    // Direct DMA has no IOVA API.
    let (_, direct) = attach(Setup::Direct, false);
    assert_eq!(
        direct.iova_alloc(PAGE_SIZE).unwrap_err(),
        MmError::IovaApiUnsupported
    );
}

#[test]
fn iova_unlink_part_of_a_link_keeps_the_rest() {
    let (p, ops) = attach(Setup::Iommu, false);
    let range = ops.iova_alloc(8 * PAGE_SIZE).unwrap();
    let f = p.alloc_frames(4, FrameAlloc::contiguous()).unwrap();
    let a = pattern(4 * PAGE_SIZE as usize, 70);
    f.write(0, &a).unwrap();
    let base = range.addr().0 + 2 * PAGE_SIZE;
    ops.iova_link(
        &range,
        2 * PAGE_SIZE,
        f.pages()[0],
        4 * PAGE_SIZE,
        FromDevice,
    )
    .unwrap();
    ops.iova_sync(&range, 2 * PAGE_SIZE, 4 * PAGE_SIZE).unwrap();
    // The device fills the second page; unlinking it hands exactly that page to the CPU.
    let b = pattern(PAGE_SIZE as usize, 71);
    ops.bus_write(DmaAddr(base + PAGE_SIZE), &b).unwrap();
    ops.iova_unlink(&range, 3 * PAGE_SIZE, PAGE_SIZE, FromDevice)
        .unwrap();
    assert_eq!(cpu_read(&f, PAGE_SIZE, PAGE_SIZE as usize), b);
    assert!(ops.bus_to_phys(DmaAddr(base + PAGE_SIZE), 1, true).is_err());
    assert_eq!(
        ops.bus_to_phys(DmaAddr(base), 8, true).unwrap(),
        f.pages()[0]
    );
    assert_eq!(
        ops.bus_to_phys(DmaAddr(base + 2 * PAGE_SIZE), 2 * PAGE_SIZE, true)
            .unwrap(),
        f.pages()[2]
    );
    // The remaining parts are still live mappings the CPU can sync.
    let c = pattern(2 * PAGE_SIZE as usize, 72);
    ops.bus_write(DmaAddr(base + 2 * PAGE_SIZE), &c).unwrap();
    assert_ne!(cpu_read(&f, 2 * PAGE_SIZE, c.len()), c, "not synced yet");
    ops.sync_single_for_cpu(DmaAddr(base + 2 * PAGE_SIZE), 2 * PAGE_SIZE, FromDevice)
        .unwrap();
    assert_eq!(cpu_read(&f, 2 * PAGE_SIZE, c.len()), c);
    assert_eq!(ops.live_mappings(), 2);
    ops.iova_free(range).unwrap();
    assert_eq!(ops.live_mappings(), 0);
    assert!(ops.bus_to_phys(DmaAddr(base), 1, false).is_err());
    assert!(ops.diagnostics().is_empty(), "{:?}", ops.diagnostics());
}

// ---------------------------------------------------------------- resources

#[test]
fn map_resource_refuses_ram_accepts_mmio() {
    for setup in [Setup::Direct, Setup::Iommu] {
        let (p, ops) = attach(setup, false);
        let ram = p.alloc_frames(1, FrameAlloc::scattered()).unwrap();
        assert_eq!(
            ops.map_resource(ram.pages()[0], 64, Bidirectional)
                .unwrap_err(),
            MmError::ResourceIsRam {
                addr: ram.pages()[0],
                len: 64
            }
        );
        // A BAR in the PCI hole below 4 GiB, not RAM in the default map.
        let bar = PhysAddr(0xF000_0000);
        let dma = ops.map_resource(bar, 0x2000, Bidirectional).unwrap();
        match setup {
            Setup::Direct => assert_eq!(dma, DmaAddr(bar.0)),
            _ => assert_ne!(dma, DmaAddr(bar.0)),
        }
        assert_eq!(ops.bus_to_phys(dma, 0x2000, true).unwrap(), bar);
        assert_eq!(ops.stats().syncs_for_device, 0, "no cache work on MMIO");
        ops.unmap_resource(dma, 0x2000, Bidirectional).unwrap();
        assert!(ops.bus_to_phys(dma, 4, false).is_err(), "{setup:?}");
        assert!(ops.diagnostics().is_empty());
    }
}

// ---------------------------------------------------------------- buffers

#[test]
fn coherent_buffer_needs_no_sync_even_on_a_noncoherent_device() {
    for setup in [Setup::Direct, Setup::Bounce, Setup::Iommu] {
        let (_, ops) = attach(setup, false);
        let buf = ops.alloc_coherent(3 * PAGE_SIZE + 10).unwrap();
        assert!(
            ops.device().mask.covers(buf.dma().0, buf.size()),
            "{setup:?}: never bounced"
        );
        let a = pattern(5000, 50);
        buf.write(1000, &a).unwrap();
        assert_eq!(device_read(&ops, DmaAddr(buf.dma().0 + 1000), 5000), a);
        let b = pattern(700, 51);
        ops.bus_write(DmaAddr(buf.dma().0 + 3 * PAGE_SIZE), &b[..10])
            .unwrap();
        ops.bus_write(DmaAddr(buf.dma().0 + 90), &b).unwrap();
        let mut seen = vec![0u8; 700];
        buf.read(90, &mut seen).unwrap();
        assert_eq!(seen, b, "{setup:?}");
        assert_eq!(
            buf.read(3 * PAGE_SIZE + 5, &mut [0u8; 6]).unwrap_err(),
            MmError::OutOfBounds {
                offset: 3 * PAGE_SIZE + 5,
                len: 6,
                size: 3 * PAGE_SIZE + 10
            }
        );
        let dma = buf.dma();
        ops.free_coherent(buf).unwrap();
        assert!(ops.bus_to_phys(dma, 1, false).is_err(), "{setup:?}: freed");
        assert_eq!(ops.stats().bounced_bytes, 0);
        assert!(ops.detach().is_empty());
    }
}

#[test]
fn noncoherent_buffer_moves_with_syncs() {
    for setup in [Setup::Direct, Setup::Bounce, Setup::Iommu] {
        let (_, ops) = attach(setup, false);
        let buf = ops.alloc_noncoherent(2 * PAGE_SIZE, Bidirectional).unwrap();
        let a = pattern(2 * PAGE_SIZE as usize, 60);
        buf.write(0, &a).unwrap();
        assert_ne!(device_read(&ops, buf.dma(), a.len()), a, "not yet synced");
        buf.sync_for_device(0, 2 * PAGE_SIZE).unwrap();
        assert_eq!(device_read(&ops, buf.dma(), a.len()), a);
        let b = pattern(300, 61);
        ops.bus_write(DmaAddr(buf.dma().0 + 4000), &b).unwrap();
        buf.sync_for_cpu(4000, 300).unwrap();
        let mut seen = vec![0u8; 300];
        buf.read(4000, &mut seen).unwrap();
        assert_eq!(seen, b, "{setup:?}");
        // Another device cannot free it.
        let (_, other) = attach(setup, false);
        let dma = buf.dma();
        assert_eq!(
            other.free_noncoherent(buf).unwrap_err(),
            MmError::DmaWrongDevice { dma }
        );
        assert_eq!(
            ops.live_mappings(),
            0,
            "freed through its own device all the same"
        );
        assert!(ops.diagnostics().is_empty(), "{:?}", ops.diagnostics());
    }
}

// ---------------------------------------------------------------- table pool

/// Reads table entries the way a device's own MMU would: through its DMA ops and the bus.
struct DeviceWalker<'a>(&'a DmaOps);

impl TableReader for DeviceWalker<'_> {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.0.bus_read(addr, &mut b[..bytes]).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

#[test]
fn table_pool_through_dma_ops_for_a_noncoherent_walker() {
    for setup in [Setup::Direct, Setup::Iommu] {
        let (p, ops) = attach(setup, false);
        let data = p.alloc_frames(4, FrameAlloc::scattered()).unwrap();
        let mut pts = Vec::new();
        for coherent_walk in [false, true] {
            let pool = TablePool::new(p.clone(), ops.dma_zone(), TableBus::Dma(ops.clone()));
            let mut pt: PageTable<ArmLpae4k, TablePool> =
                PageTable::new(pool, PageTableConfig { coherent_walk }).unwrap();
            let mut g = Gather::new();
            let iova = Iova(0x4000_0000);
            let target = DmaAddr(0x1234_5000);
            pt.map(iova, target, PAGE_SIZE, Prot::RW, &mut g).unwrap();
            pt.iotlb_sync(&mut g, |_, _| {});
            let t = walk::<ArmLpae4k, _>(&DeviceWalker(&ops), pt.root(), Iova(iova.0 + 8));
            if coherent_walk {
                // Wrongly configured: the device reads RAM, where the new entries never went.
                assert!(t.is_err(), "{setup:?}: stale tables must not translate");
            } else {
                assert_eq!(t.unwrap().dma, DmaAddr(target.0 + 8), "{setup:?}");
            }
            assert_eq!(pt.table_alloc().live_pages(), 4);
            assert_eq!(pt.table_alloc().pool_pages(), 16);
            pts.push(pt);
        }
        assert_eq!(
            ops.live_mappings(),
            32,
            "each pool page is mapped for the device"
        );
        drop(pts);
        assert_eq!(
            ops.live_mappings(),
            0,
            "dropping the pools unmaps their pages"
        );
        drop(data);
        assert!(ops.diagnostics().is_empty(), "{:?}", ops.diagnostics());
    }
}

// ---------------------------------------------------------------- DMA-API debugging

fn debug_ops(strict: bool) -> (Arc<PhysMem>, Arc<DmaOps>, Frames) {
    let p = phys();
    let ops = DmaOps::attach(
        p.clone(),
        DmaDevice::new("dbg", DmaMask::bits(64), false),
        &Platform {
            debug: true,
            debug_strict_check: strict,
            ..Platform::default()
        },
    )
    .unwrap();
    let f = p.alloc_frames(4, FrameAlloc::contiguous()).unwrap();
    (p, ops, f)
}

#[test]
fn debug_unmap_not_mapped() {
    let (_, ops, _) = debug_ops(false);
    let dma = DmaAddr(0x5000);
    assert_eq!(
        ops.unmap_page(dma, 64, ToDevice).unwrap_err(),
        MmError::DmaNotMapped { dma, len: 64 }
    );
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::UnmapNotMapped {
            dma,
            len: 64,
            dir: Some(ToDevice),
            released_as: MappingKind::Page
        }]
    );
    assert!(ops.diagnostics().is_empty());
}

#[test]
fn debug_unmap_wrong_size_and_direction() {
    let (_, ops, f) = debug_ops(false);
    let dma = ops.map_page(f.pages()[0], 4096, ToDevice).unwrap();
    ops.unmap_page(dma, 2048, ToDevice).unwrap();
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::UnmapWrongSize {
            dma,
            mapped_len: 4096,
            unmap_len: 2048
        }]
    );
    assert_eq!(ops.live_mappings(), 0, "the whole mapping was unmapped");
    let dma = ops.map_page(f.pages()[0], 4096, ToDevice).unwrap();
    ops.unmap_page(dma, 4096, FromDevice).unwrap();
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::UnmapWrongDirection {
            dma,
            mapped_dir: ToDevice,
            unmap_dir: FromDevice
        }]
    );
}

#[test]
fn debug_unmap_wrong_kind_keeps_the_mapping() {
    let (_, ops, f) = debug_ops(false);
    let sg = ops.map_sg(&f.segments(), ToDevice).unwrap();
    let dma = sg.dma()[0].dma;
    assert_eq!(
        ops.unmap_page(dma, sg.len_bytes(), ToDevice).unwrap_err(),
        MmError::DmaWrongKind {
            dma,
            mapped_as: MappingKind::Sg,
            released_as: MappingKind::Page
        }
    );
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::UnmapWrongKind {
            dma,
            mapped_as: MappingKind::Sg,
            released_as: MappingKind::Page
        }]
    );
    assert_eq!(ops.live_mappings(), 1);
    ops.unmap_sg(&sg).unwrap();
    // A second unmap of the same table: not mapped.
    assert!(matches!(
        ops.unmap_sg(&sg).unwrap_err(),
        MmError::DmaNotMapped { .. }
    ));
    assert!(matches!(
        ops.take_diagnostics()[..],
        [DmaDiag::UnmapNotMapped {
            released_as: MappingKind::Sg,
            ..
        }]
    ));
}

#[test]
fn debug_sync_not_mapped_out_of_range_wrong_direction() {
    let (_, ops, f) = debug_ops(false);
    let dma = DmaAddr(0x7000);
    assert_eq!(
        ops.sync_single_for_cpu(dma, 16, FromDevice).unwrap_err(),
        MmError::DmaNotMapped { dma, len: 16 }
    );
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::SyncNotMapped {
            dma,
            len: 16,
            dir: FromDevice,
            for_cpu: true
        }]
    );

    let m = ops.map_page(f.pages()[0], 4096, FromDevice).unwrap();
    let lines = ops.phys().stats().lines_invalidated;
    ops.sync_single_for_cpu(m, 8192, FromDevice).unwrap();
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::SyncOutOfRange {
            dma: m,
            len: 8192,
            for_cpu: true,
            mapping_dma: m,
            mapping_len: 4096
        }]
    );
    assert_eq!(
        ops.phys().stats().lines_invalidated - lines,
        64,
        "only the mapped page was synced"
    );
    ops.unmap_page(m, 4096, FromDevice).unwrap();

    let t = ops.map_page(f.pages()[1], 4096, ToDevice).unwrap();
    let lines = ops.phys().stats().lines_invalidated;
    ops.sync_single_for_cpu(t, 4096, FromDevice).unwrap();
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::SyncWrongDirection {
            dma: t,
            len: 4096,
            for_cpu: true,
            mapped_dir: ToDevice,
            sync_dir: FromDevice
        }]
    );
    assert_eq!(
        ops.phys().stats().lines_invalidated,
        lines,
        "the mapping's own direction (ToDevice) was used: no invalidate"
    );
    ops.unmap_page(t, 4096, ToDevice).unwrap();
    assert!(ops.diagnostics().is_empty());
}

#[test]
fn debug_mapping_not_checked_only_when_strict() {
    let (_, ops, f) = debug_ops(true);
    let dma = ops.map_page(f.pages()[0], 512, ToDevice).unwrap();
    ops.unmap_page(dma, 512, ToDevice).unwrap();
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::MappingNotChecked {
            dma,
            len: 512,
            kind: MappingKind::Page
        }]
    );
    let dma = ops.map_page(f.pages()[0], 512, ToDevice).unwrap();
    assert!(!ops.mapping_error(dma));
    ops.unmap_page(dma, 512, ToDevice).unwrap();
    assert!(ops.diagnostics().is_empty());
    assert!(ops.mapping_error(dma), "no longer mapped");
    assert!(ops.mapping_error(DmaAddr(u64::MAX)));

    let (_, lax, f) = debug_ops(false);
    let dma = lax.map_page(f.pages()[0], 512, ToDevice).unwrap();
    lax.unmap_page(dma, 512, ToDevice).unwrap();
    assert!(lax.diagnostics().is_empty());
}

#[test]
fn debug_cpu_access_while_device_owns() {
    let (_, ops, f) = debug_ops(false);
    let pa = f.pages()[0];
    let dma = ops.map_page(pa, 4096, FromDevice).unwrap();
    let t = ops.map_page(f.pages()[1], 4096, ToDevice).unwrap();
    assert!(
        ops.check_cpu_access(f.pages()[1], 4096, false),
        "ToDevice: CPU may read"
    );
    assert!(
        ops.check_cpu_access(f.pages()[2], 4096, true),
        "unmapped bytes"
    );
    assert!(!ops.check_cpu_access(PhysAddr(pa.0 + 100), 8, false));
    assert_eq!(
        ops.take_diagnostics(),
        vec![DmaDiag::CpuAccessWhileDeviceOwns {
            pa: PhysAddr(pa.0 + 100),
            len: 8,
            write: false,
            mapping_dma: dma,
            dir: FromDevice
        }]
    );
    ops.sync_single_for_cpu(dma, 4096, FromDevice).unwrap();
    assert!(ops.check_cpu_access(pa, 4096, true), "synced for the CPU");
    ops.sync_single_for_device(dma, 4096, FromDevice).unwrap();
    assert!(
        !ops.check_cpu_access(pa, 1, true),
        "the device owns it again"
    );
    ops.take_diagnostics();
    ops.unmap_page(dma, 4096, FromDevice).unwrap();
    ops.unmap_page(t, 4096, ToDevice).unwrap();
    assert!(ops.check_cpu_access(pa, 4096, true));
    assert!(ops.diagnostics().is_empty());
}

#[test]
fn debug_leak_report_at_detach() {
    let (p, ops) = attach(Setup::Iommu, false);
    let f = p.alloc_frames(4, FrameAlloc::scattered()).unwrap();
    let _a = ops.map_page(f.pages()[0], 100, ToDevice).unwrap();
    let _b = ops.map_page(f.pages()[1], 200, FromDevice).unwrap();
    let _sg = ops.map_sg(&f.segments()[..1], Bidirectional).unwrap();
    let buf = ops.alloc_coherent(PAGE_SIZE).unwrap();
    let r = ops.iova_alloc(3 * PAGE_SIZE).unwrap();
    ops.iova_link(&r, 0, f.pages()[3], PAGE_SIZE, ToDevice)
        .unwrap();
    let seg_len = f.segments()[0].len;
    let report = ops.detach();
    let expected = LeakReport {
        mappings: 5,
        bytes: 100 + 200 + seg_len + PAGE_SIZE + 3 * PAGE_SIZE,
        by_kind: vec![
            KindLeak {
                kind: MappingKind::Page,
                mappings: 2,
                bytes: 300,
            },
            KindLeak {
                kind: MappingKind::Sg,
                mappings: 1,
                bytes: seg_len,
            },
            KindLeak {
                kind: MappingKind::Coherent,
                mappings: 1,
                bytes: PAGE_SIZE,
            },
            KindLeak {
                kind: MappingKind::IovaRange,
                mappings: 1,
                bytes: 3 * PAGE_SIZE,
            },
        ],
    };
    assert_eq!(report, expected);
    assert_eq!(
        ops.diagnostics(),
        vec![DmaDiag::LeakAtDetach { report: expected }]
    );
    // Detached: nothing new, but what is mapped can still be released.
    assert_eq!(
        ops.map_page(f.pages()[2], 8, ToDevice).unwrap_err(),
        MmError::DmaDetached {
            device: "Iommu".into()
        }
    );
    drop(buf);
    ops.iova_free(r).unwrap();
    assert_eq!(ops.detach().mappings, 3);
}

#[test]
fn clean_run_of_every_kind_reports_nothing() {
    for setup in [Setup::Direct, Setup::Bounce, Setup::Iommu] {
        let (p, ops) = attach(setup, false);
        let f = p.alloc_frames(8, FrameAlloc::scattered()).unwrap();
        let pa = f.pages()[0];
        let dma = ops.map_page(pa, 1000, Bidirectional).unwrap();
        assert!(!ops.mapping_error(dma));
        ops.sync_single_for_cpu(dma, 1000, Bidirectional).unwrap();
        assert!(ops.check_cpu_access(pa, 1000, true));
        ops.sync_single_for_device(DmaAddr(dma.0 + 10), 20, Bidirectional)
            .unwrap();
        ops.unmap_page(dma, 1000, Bidirectional).unwrap();

        let sg = ops.map_sg(&f.segments()[..1], FromDevice).unwrap();
        ops.sync_sg_for_cpu(&sg).unwrap();
        ops.sync_sg_for_device(&sg).unwrap();
        ops.unmap_sg(&sg).unwrap();

        let r = ops
            .map_resource(PhysAddr(0xF000_0000), 64, ToDevice)
            .unwrap();
        ops.unmap_resource(r, 64, ToDevice).unwrap();

        let c = ops.alloc_coherent(100).unwrap();
        c.write(0, b"hello").unwrap();
        ops.free_coherent(c).unwrap();
        let n = ops.alloc_noncoherent(100, ToDevice).unwrap();
        n.write(0, b"hello").unwrap();
        n.sync_for_device(0, 5).unwrap();
        ops.free_noncoherent(n).unwrap();

        if setup == Setup::Iommu {
            let range = ops.iova_alloc(2 * PAGE_SIZE).unwrap();
            ops.iova_link(&range, 0, pa, PAGE_SIZE, ToDevice).unwrap();
            ops.iova_sync(&range, 0, PAGE_SIZE).unwrap();
            ops.sync_single_for_device(range.addr(), 64, ToDevice)
                .unwrap();
            ops.iova_unlink(&range, 0, PAGE_SIZE, ToDevice).unwrap();
            ops.iova_free(range).unwrap();
        }
        assert!(
            ops.diagnostics().is_empty(),
            "{setup:?}: {:?}",
            ops.diagnostics()
        );
        assert!(ops.detach().is_empty());
        assert!(ops.diagnostics().is_empty());
        assert_eq!(ops.stats().diagnostics, 0);
    }
}

// ---------------------------------------------------------------- attach and concurrency

#[test]
fn attach_validates_and_chooses_once() {
    let p = phys();
    let dev = |bits| DmaDevice::new("d", DmaMask::bits(bits), true);
    assert_eq!(
        DmaOps::attach(p.clone(), dev(8), &Platform::default()).unwrap_err(),
        MmError::DmaMaskTooSmall { mask: 0xff }
    );
    assert_eq!(
        DmaOps::attach(
            p.clone(),
            dev(32),
            &Platform {
                reserved: vec![(0x2000, 0x1000)],
                ..Platform::default()
            }
        )
        .unwrap_err(),
        MmError::BadReservedRegion {
            start: 0x2000,
            end: 0x1000
        }
    );
    let d = DmaOps::attach(p.clone(), dev(64), &Platform::default()).unwrap();
    assert_eq!(d.kind(), DmaOpsKind::Direct);
    match d.as_direct() {
        Some(x) => assert_eq!(x.swiotlb_pool(), None, "a 64-bit device needs no pool"),
        None => unreachable!(),
    }
    let d32 = DmaOps::attach(p.clone(), dev(32), &Platform::default()).unwrap();
    match d32.as_direct() {
        Some(x) => {
            let (base, size) = x.swiotlb_pool().unwrap();
            assert_eq!(size, 64 << 20);
            assert!(base.0 + size <= FOUR_GIB);
        }
        None => unreachable!(),
    }
    // Every 32-bit direct device of this machine shares that one pool (the low 256 MiB would
    // hold only three 64 MiB pools otherwise); a device reaching less needs its own pool.
    let pools: Vec<_> = (0..6)
        .map(|_| {
            let o = DmaOps::attach(p.clone(), dev(32), &Platform::default()).unwrap();
            match o.as_direct() {
                Some(x) => x.swiotlb_pool().unwrap(),
                None => unreachable!(),
            }
        })
        .collect();
    match d32.as_direct() {
        Some(x) => assert!(pools.iter().all(|&q| Some(q) == x.swiotlb_pool())),
        None => unreachable!(),
    }
    let limit = 0x8800_0000;
    let d30 = DmaOps::attach(
        p.clone(),
        DmaDevice::new("low", DmaMask(limit - 1), true),
        &Platform {
            swiotlb: Some(1 << 20),
            ..Platform::default()
        },
    )
    .unwrap();
    match d30.as_direct() {
        Some(x) => {
            let (base, size) = x.swiotlb_pool().unwrap();
            assert!(base.0 + size <= limit);
            assert_eq!(size, 1 << 20);
        }
        None => unreachable!(),
    }
    // No RAM below 4 GiB: the pool cannot be placed.
    let high = PhysMem::new(MemoryMap::high_only(), CacheMode::Model).unwrap();
    assert!(matches!(
        DmaOps::attach(high, dev(32), &Platform::default()).unwrap_err(),
        MmError::NoMemory { .. }
    ));
    let i = DmaOps::attach(
        p,
        dev(32),
        &Platform {
            system_iommu: true,
            ..Platform::default()
        },
    )
    .unwrap();
    assert_eq!(i.kind(), DmaOpsKind::Iommu);
    match i.as_iommu() {
        Some(dom) => {
            assert_eq!(dom.aperture(), (DmaAddr(PAGE_SIZE), DmaAddr(FOUR_GIB)));
            assert_eq!(dom.table_pages(), 1);
        }
        None => unreachable!(),
    }
}

#[test]
fn concurrent_maps_and_unmaps() {
    for setup in [Setup::Bounce, Setup::Iommu] {
        let (p, ops) = attach(setup, false);
        let f = Arc::new(p.alloc_frames(64, FrameAlloc::scattered()).unwrap());
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (ops, f) = (ops.clone(), f.clone());
                s.spawn(move || {
                    for i in 0..100u64 {
                        let pa = f.pages()[((t * 16) + i % 16) as usize];
                        let dma = ops.map_page(pa, 256, Bidirectional).unwrap();
                        let mut b = [0u8; 4];
                        ops.bus_read(dma, &mut b).unwrap();
                        ops.unmap_page(dma, 256, Bidirectional).unwrap();
                    }
                });
            }
        });
        let st = ops.stats();
        assert_eq!((st.maps, st.unmaps), (400, 400));
        assert_eq!(st.swiotlb_slots_in_use, 0);
        assert_eq!(st.iova_bytes_in_use, 0);
        assert_eq!(ops.live_mappings(), 0);
    }
}
