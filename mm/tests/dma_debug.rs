//! DMA-API debugging of memory the driver frees or must not map (issue 8, case 4), after
//! kernel/dma/debug.c: frames freed under a live mapping, mappings of memory the DMA layer owns
//! (swiotlb pools, system IOMMU tables, device tables), and overlapping mappings of one cache
//! line. Each check has a test that trips it and a correct use that does not.

mod common;

use std::sync::Arc;

use common::{Combo, Rig};
use devmmu_mm::bo::{Bo, BoFlags};
use devmmu_mm::device::MmuFormat;
use devmmu_mm::dma::{DmaDevice, DmaDiag, DmaDirection, DmaMask, DmaOps, DmaOwner, Platform};
use devmmu_mm::phys::{CacheMode, FrameAlloc, MemoryMap, PhysAddr, PhysMem, PAGE_SIZE};
use devmmu_mm::MmError;

fn machine() -> Arc<PhysMem> {
    PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap()
}

fn ops(phys: &Arc<PhysMem>, iommu: bool, debug: bool) -> Arc<DmaOps> {
    DmaOps::attach(
        phys.clone(),
        DmaDevice::new("dbg", DmaMask::bits(32), false),
        &Platform {
            system_iommu: iommu,
            debug,
            ..Platform::default()
        },
    )
    .unwrap()
}

/// Frames freed while mapped are reported when they are freed ("device driver frees DMA memory
/// with active mapping"); freeing after the unmap is not.
#[test]
fn freeing_mapped_frames_is_reported() {
    for iommu in [false, true] {
        let phys = machine();
        let ops = ops(&phys, iommu, true);
        let frames = phys.alloc_frames(2, FrameAlloc::scattered()).unwrap();
        let pa = frames.pages()[1];
        let dma = ops
            .map_page(pa, PAGE_SIZE, DmaDirection::FromDevice)
            .unwrap();
        drop(frames);
        assert_eq!(
            ops.take_diagnostics(),
            vec![DmaDiag::FreedWhileMapped {
                pa,
                mapping_dma: dma,
                kind: devmmu_mm::dma::MappingKind::Page,
            }],
            "iommu {iommu}"
        );

        // A BO mapped by hand (not through an attachment, which would keep it alive) and
        // dropped: the same report, for its sg mapping.
        let bo = Bo::new(&phys, 3 * PAGE_SIZE, BoFlags::default()).unwrap();
        let sg = ops
            .map_sg(&bo.segments(), DmaDirection::Bidirectional)
            .unwrap();
        drop(bo);
        let diags = ops.take_diagnostics();
        assert_eq!(diags.len(), 1, "iommu {iommu}: {diags:?}");
        assert!(matches!(
            diags[0],
            DmaDiag::FreedWhileMapped { mapping_dma, .. } if mapping_dma == sg.dma()[0].dma
        ));
        let _ = ops.unmap_sg(&sg);

        // Correct order: unmap, then free.
        let frames = phys.alloc_frames(1, FrameAlloc::scattered()).unwrap();
        let dma = ops
            .map_page(frames.pages()[0], PAGE_SIZE, DmaDirection::ToDevice)
            .unwrap();
        ops.unmap_page(dma, PAGE_SIZE, DmaDirection::ToDevice)
            .unwrap();
        drop(frames);
        assert_eq!(ops.take_diagnostics(), vec![], "iommu {iommu}");
    }
}

/// Without debugging nothing is recorded (and nothing is slowed down).
#[test]
fn freeing_mapped_frames_without_debug_is_silent() {
    let phys = machine();
    let ops = ops(&phys, false, false);
    let frames = phys.alloc_frames(1, FrameAlloc::scattered()).unwrap();
    ops.map_page(frames.pages()[0], PAGE_SIZE, DmaDirection::FromDevice)
        .unwrap();
    drop(frames);
    assert!(ops.diagnostics().is_empty());
}

/// The swiotlb pool's frames cannot be mapped: the device would write other mappings' bounce
/// buffers. Refused with a typed error (debugging on or off) and reported with debugging on.
#[test]
fn mapping_a_swiotlb_pool_frame_is_refused() {
    for debug in [false, true] {
        let phys = machine();
        let ops = ops(&phys, false, debug);
        let (pool, _) = ops.as_direct().unwrap().swiotlb_pool().unwrap();
        let pa = PhysAddr(pool.0 + 5 * PAGE_SIZE);
        let live = ops.live_mappings();
        assert_eq!(
            ops.map_page(pa, 64, DmaDirection::FromDevice),
            Err(MmError::DmaLayerMemory {
                addr: pa,
                owner: DmaOwner::SwiotlbPool
            })
        );
        assert_eq!(ops.live_mappings(), live, "nothing mapped");
        let want = if debug {
            vec![DmaDiag::MapsDmaLayerMemory {
                pa,
                owner: DmaOwner::SwiotlbPool,
            }]
        } else {
            vec![]
        };
        assert_eq!(ops.take_diagnostics(), want);
    }
}

/// The system IOMMU's own table pages cannot be mapped (through this device or another one):
/// a device write would rewrite the IOMMU's translations.
#[test]
fn mapping_a_system_iommu_table_page_is_refused() {
    let phys = machine();
    let ops = ops(&phys, true, true);
    let root = PhysAddr(ops.as_iommu().unwrap().root().0);
    let other = self::ops(&phys, false, true);
    for o in [&ops, &other] {
        assert_eq!(
            o.map_sg(
                &[devmmu_mm::phys::PhysSegment {
                    addr: root,
                    len: PAGE_SIZE
                }],
                DmaDirection::Bidirectional
            )
            .unwrap_err(),
            MmError::DmaLayerMemory {
                addr: root,
                owner: DmaOwner::IommuTable
            }
        );
    }
}

/// A device VM's table pages (mapped for the device by its table pool) cannot be mapped again
/// as data; once the VM is gone, the frames are ordinary memory again.
#[test]
fn mapping_a_device_table_page_is_refused() {
    for &mmu in MmuFormat::ALL {
        let rig = Rig::new(Combo {
            mmu,
            coherent: false,
            iommu: false,
        });
        let vm = rig.vm();
        let ops = rig.device.dma_ops();
        let root = ops
            .bus_to_phys(vm.context().root, PAGE_SIZE, false)
            .unwrap();
        assert_eq!(
            ops.map_page(root, PAGE_SIZE, DmaDirection::FromDevice),
            Err(MmError::DmaLayerMemory {
                addr: root,
                owner: DmaOwner::DeviceTable
            }),
            "{mmu:?}"
        );
        ops.take_diagnostics();
    }
}

/// Two mappings the device may write that share a cache line are reported; a `ToDevice` one
/// overlapping another is not (the device does not write it), nor are neighbours on other lines.
#[test]
fn overlapping_writable_mappings_are_reported() {
    for iommu in [false, true] {
        let phys = machine();
        let ops = ops(&phys, iommu, true);
        let frames = phys.alloc_frames(1, FrameAlloc::scattered()).unwrap();
        let pa = frames.pages()[0];
        let a = ops.map_page(pa, 100, DmaDirection::FromDevice).unwrap();
        // Bytes 100..164 share line 64..128 with the first.
        let b_pa = PhysAddr(pa.0 + 100);
        let b = ops.map_page(b_pa, 64, DmaDirection::Bidirectional).unwrap();
        assert_eq!(
            ops.take_diagnostics(),
            vec![DmaDiag::OverlappingMappings {
                pa: b_pa,
                dir: DmaDirection::Bidirectional,
                other_dma: a,
                other_dir: DmaDirection::FromDevice,
            }],
            "iommu {iommu}"
        );
        // Read-only for the device: nothing to clobber.
        let c = ops.map_page(pa, 64, DmaDirection::ToDevice).unwrap();
        // The next line, free of others.
        let d = ops
            .map_page(PhysAddr(pa.0 + 192), 64, DmaDirection::FromDevice)
            .unwrap();
        assert_eq!(ops.take_diagnostics(), vec![], "iommu {iommu}");
        ops.unmap_page(a, 100, DmaDirection::FromDevice).unwrap();
        ops.unmap_page(b, 64, DmaDirection::Bidirectional).unwrap();
        ops.unmap_page(c, 64, DmaDirection::ToDevice).unwrap();
        ops.unmap_page(d, 64, DmaDirection::FromDevice).unwrap();
        assert_eq!(ops.take_diagnostics(), vec![], "iommu {iommu}");
    }
}

/// A swiotlb pool of 2^64 - 1 bytes is more memory than there is, not a zero size (case 6).
#[test]
fn an_impossible_swiotlb_pool_is_no_memory() {
    let phys = machine();
    let err = DmaOps::attach(
        phys,
        DmaDevice::new("huge", DmaMask::bits(32), false),
        &Platform {
            swiotlb: Some(u64::MAX),
            ..Platform::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MmError::NoMemory {
                contiguous: true,
                ..
            }
        ),
        "{err:?}"
    );
}
