//! The smaller refusals of issue 8 (case 6): each bad input or exhausted resource gets a typed
//! error, no panic, and leaves nothing behind.

mod common;

use common::{for_each_combo, pattern, Combo, Rig, RigOptions};
use devmmu_mm::bo::{Bo, BoFlags};
use devmmu_mm::device::{Device, DeviceConfig, MmuFormat};
use devmmu_mm::dma::{DmaMask, Platform};
use devmmu_mm::model::{FaultReason, SimConfig, SimMmu, COPY_CHUNK};
use devmmu_mm::phys::{
    CacheMode, FrameAlloc, MemoryMap, PhysAddr, PhysMem, RamRegion, Zone, PAGE_SIZE,
};
use devmmu_mm::vm::{Placement, Vm};
use devmmu_mm::MmError;
use devmmu_pagetable::{Iova, Prot};

/// `dma_copy` of any length: a length that leaves the IOVA space is an `AddressSize` fault (it
/// used to allocate `len` bytes first and abort), and a copy longer than the engine's chunk,
/// overlapping its own source, behaves as `memmove`.
#[test]
fn dma_copy_takes_any_length() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let vm = rig.vm();
        let bo = rig.bo(48);
        let size = bo.size();
        let va = vm
            .bind(&bo, 0, size, Placement::Anywhere, Prot::RW)
            .unwrap();
        for len in [u64::MAX, u64::MAX / 2, 1 << 48] {
            let f = rig.sim.dma_copy(&vm, va, va, len).unwrap_err();
            assert_eq!(f.reason, FaultReason::AddressSize, "{c}: len {len:#x}");
        }
        rig.mmu.take_faults();

        let data = pattern(size as usize, 1);
        rig.sim.dma_write(&vm, va, &data).unwrap();
        // Forward overlap (destination below the source) and backward overlap (above).
        let (shift, len) = (3 * PAGE_SIZE + 5, 2 * COPY_CHUNK + 777);
        rig.sim.dma_copy(&vm, Iova(va.0 + shift), va, len).unwrap();
        let mut want = data.clone();
        want.copy_within(shift as usize..(shift + len) as usize, 0);
        rig.sim.dma_copy(&vm, va, Iova(va.0 + shift), len).unwrap();
        want.copy_within(0..len as usize, shift as usize);
        let mut got = vec![0u8; size as usize];
        rig.sim.dma_read(&vm, va, &mut got).unwrap();
        assert_eq!(got, want, "{c}");
        assert!(rig.mmu.faults().is_empty(), "{c}");
    });
}

/// A bind that runs out of memory for page tables after growing the table pool gives that
/// growth back: the machine's free frames and the device's live DMA mappings are as before.
#[test]
fn a_bind_out_of_table_memory_keeps_nothing() {
    for mmu in [MmuFormat::ArmLpae4k, MmuFormat::Ipu] {
        // 128 MiB of RAM, a 64-bit direct device: tables come from the same RAM as buffers.
        let phys = PhysMem::new(
            MemoryMap::new(vec![RamRegion {
                base: PhysAddr(1 << 32),
                size: 128 << 20,
            }])
            .unwrap(),
            CacheMode::Model,
        )
        .unwrap();
        let sim = SimMmu::new(SimConfig {
            tlb_entries: 16,
            coherent_walk: false,
            coherent: false,
        });
        let config = match mmu {
            MmuFormat::Ipu => DeviceConfig {
                dma_mask: DmaMask::bits(64),
                ..DeviceConfig::ipu("oom")
            },
            MmuFormat::ArmLpae4k => DeviceConfig::arm_lpae("oom", DmaMask::bits(64), false),
        };
        let device = Device::attach(&phys, config, &Platform::default(), sim).unwrap();
        let vm = Vm::new(&device).unwrap();
        // 72 MiB scattered: one leaf table per 2 MiB (ARM) or 4 MiB (IPU) of IOVA, so each bind
        // needs more tables (37 or 18) than one chunk of the pool (16 pages).
        let bo = Bo::new(&phys, 72 << 20, BoFlags::default()).unwrap();
        // Each bind at a fresh IOVA needs new tables. Before each, memory is filled so that the
        // pool can grow by exactly one chunk: the bind that fails grew the pool once first.
        let stride = if mmu == MmuFormat::Ipu {
            1 << 28
        } else {
            1 << 33
        };
        let mut filler = Vec::new();
        let mut failed = None;
        for i in 1..16u64 {
            let free = phys.free_pages(Zone::Any);
            if free > 20 {
                filler.push(
                    phys.alloc_frames(free - 20, FrameAlloc::scattered())
                        .unwrap(),
                );
            }
            let before = (phys.free_pages(Zone::Any), device.dma_ops().live_mappings());
            let tables = vm.table_count();
            if let Err(e) = vm.bind(
                &bo,
                0,
                bo.size(),
                Placement::Fixed(Iova(i * stride)),
                Prot::RW,
            ) {
                failed = Some((e, before, tables));
                break;
            }
        }
        let (err, before, tables) = failed.expect("the machine runs out of table memory");
        assert!(
            matches!(err, MmError::PageTable(devmmu_pagetable::Error::NoMemory)),
            "{mmu:?}: {err:?}"
        );
        assert_eq!(
            (phys.free_pages(Zone::Any), device.dma_ops().live_mappings()),
            before,
            "{mmu:?}: frames and DMA mappings as before the failed bind"
        );
        assert_eq!(vm.table_count(), tables, "{mmu:?}");
    }
}

/// `Vm::new` on a detached device says the device is detached.
#[test]
fn a_vm_on_a_detached_device_is_refused() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        rig.device.detach();
        assert!(
            matches!(Vm::new(&rig.device), Err(MmError::DmaDetached { .. })),
            "{c}"
        );
    });
}

/// An IPU device (44-bit entries, a root register holding a 27-bit page number: 39 bits) behind
/// the system IOMMU with a 64-bit mask: the DMA layer gets the 39-bit mask ipu6.c sets, so its
/// VMs and bindings work (`Vm::new` fails with `BadTableAddr` when the root table's bus address
/// does not fit the L1 register) and every bus address fits the format.
#[test]
fn an_ipu_with_a_wide_mask_gets_bus_addresses_it_can_hold() {
    let mut opts = RigOptions::new(Combo {
        mmu: MmuFormat::Ipu,
        coherent: false,
        iommu: true,
    });
    opts.mask = DmaMask::bits(64);
    let rig = Rig::with(opts);
    assert_eq!(rig.device.dma_mask(), DmaMask::bits(39));
    let vm = rig.vm();
    let bo = rig.bo(4);
    let va = vm
        .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
        .unwrap();
    assert!(vm.context().root.0 < 1 << 39);
    for run in vm.mapped_runs() {
        assert!(run.dma.0 + run.size <= 1 << 44, "{run:?}");
    }
    let data = pattern(bo.size() as usize, 4);
    rig.sim.dma_write(&vm, va, &data).unwrap();
    assert_eq!(common::cpu_read(&bo, 0, data.len()), data);
}

/// A VM whose VA space is full says so with the one error for running out of addresses.
#[test]
fn a_full_device_va_space_is_no_address_space() {
    let rig = Rig::new(Combo {
        mmu: MmuFormat::Ipu,
        coherent: true,
        iommu: true,
    });
    let vm = rig.vm();
    let bo = Bo::new(&rig.phys, 64 << 20, BoFlags::default()).unwrap();
    let mut bound = 0;
    let err = loop {
        match vm.bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW) {
            Ok(_) => bound += 1,
            Err(e) => break e,
        }
    };
    // 4 GiB of VA, the first page kept unmapped: 63 bindings of 64 MiB fit.
    assert_eq!(bound, 63);
    assert_eq!(
        err,
        MmError::NoAddressSpace {
            space: devmmu_mm::AddressSpace::DeviceVa,
            size: 64 << 20,
            limit: (1 << 32) - 1,
        }
    );
}
