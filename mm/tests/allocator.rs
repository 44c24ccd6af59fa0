//! `DmaBufAllocator` on a machine without dma-heap or udmabuf (this one): the sources are tried
//! in libcamera's order and the memfd is the last resort. The real-kernel tier checks the
//! dma-heap and udmabuf sources (tools/tests/kernel_dmabuf.rs).

use std::path::PathBuf;

use devmmu_mm::bo::{AllocSource, Bo, CpuAccess, DmaBufAllocator};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem, PAGE_SIZE};
use devmmu_mm::MmError;

fn absent() -> DmaBufAllocator {
    DmaBufAllocator {
        dma_heap: Some(PathBuf::from("/nonexistent/dma_heap/system")),
        udmabuf: Some(PathBuf::from("/nonexistent/udmabuf")),
        memfd: true,
    }
}

#[test]
fn falls_back_to_the_memfd_and_says_why() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let buf = absent().alloc(&phys, 2 * PAGE_SIZE).unwrap();
    assert_eq!(buf.source, AllocSource::Memfd);
    let tried: Vec<AllocSource> = buf.skipped.iter().map(|(s, _)| *s).collect();
    assert_eq!(tried, [AllocSource::DmaHeap, AllocSource::Udmabuf]);
    assert!(matches!(
        buf.skipped[0].1,
        MmError::Os {
            op: "open(dma-heap)",
            ..
        }
    ));
    // The fd is the BO's: importing it gives the same object, and its bytes are the BO's.
    let cpu = buf.bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    cpu.write(5, b"shared").unwrap();
    cpu.end().unwrap();
    let back = Bo::import(&phys, buf.fd, Some(2 * PAGE_SIZE)).unwrap();
    assert!(std::sync::Arc::ptr_eq(&back, &buf.bo));
}

#[test]
fn without_the_memfd_the_last_error_is_returned() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let alloc = DmaBufAllocator {
        memfd: false,
        ..absent()
    };
    match alloc.alloc(&phys, PAGE_SIZE) {
        Err(MmError::UdmabufUnavailable { path, .. }) => assert_eq!(path, "/nonexistent/udmabuf"),
        other => panic!("{other:?}"),
    }
    let none = DmaBufAllocator {
        dma_heap: None,
        udmabuf: None,
        memfd: false,
    };
    assert!(matches!(
        none.alloc(&phys, PAGE_SIZE),
        Err(MmError::Os { .. })
    ));
}

#[test]
fn bad_sizes_are_refused_before_any_source() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    assert!(matches!(absent().alloc(&phys, 0), Err(MmError::ZeroSize)));
    assert!(matches!(
        absent().alloc(&phys, 100),
        Err(MmError::Misaligned { .. })
    ));
    assert_eq!(phys.stats().frames_allocated, 0);
}
