//! Shared buffers (issue 8): one BO bound several times, in one VM and in several VMs of one
//! device, keeps one DMA mapping per device (GEM shmem's cached sg table), so every binding
//! sees the same bytes, whatever the MMU format, coherency or system DMA ops. Each test failed
//! before the BO's mapping was shared (each bind made its own streaming mapping).

mod common;

use std::sync::Arc;

use common::{cpu_read, cpu_write, device_on, for_each_combo, pattern, Combo, Rig};
use devmmu_mm::bo::{Bo, BoFlags};
use devmmu_mm::device::Device;
use devmmu_mm::dma::DmaDirection;
use devmmu_mm::model::SimDevice;
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysAddr, PhysMem};
use devmmu_mm::vm::{Placement, Vm};
use devmmu_mm::MmError;
use devmmu_pagetable::{Iova, Prot};

const P: u64 = 4096;

/// Case 1: `bind(bo, 0, P)` then `bind(bo, P, P)`; the device writes through the first, and the
/// CPU's READ bracket sees it (with direct DMA, a 32-bit mask and the BO above 4 GiB, each bind
/// used to bounce through its own swiotlb buffer, and the second copied its stale one back).
#[test]
fn two_sub_ranges_of_one_bo_share_the_mapping() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let vm = rig.vm();
        let bo = rig.bo(2);
        let live = rig.device.dma_ops().live_mappings();
        let first = vm.bind(&bo, 0, P, Placement::Anywhere, Prot::RW).unwrap();
        let second = vm.bind(&bo, P, P, Placement::Anywhere, Prot::RW).unwrap();
        assert_eq!(bo.attachment_count(), 1, "{c}");
        assert_eq!(
            rig.device.dma_ops().live_mappings(),
            live + 1,
            "{c}: one DMA mapping for both bindings"
        );
        let a = pattern(P as usize, 1);
        let b = pattern(P as usize, 2);
        rig.sim.dma_write(&vm, first, &a).unwrap();
        rig.sim.dma_write(&vm, second, &b).unwrap();
        assert_eq!(cpu_read(&bo, 0, P as usize), a, "{c}: first page");
        assert_eq!(cpu_read(&bo, P, P as usize), b, "{c}: second page");
    });
}

/// Case 1, second form: the same BO range bound at two VAs of one VM, and in two VMs of one
/// device: what the device writes through one binding it reads back through the others, and
/// the CPU sees it after a READ bracket.
#[test]
fn one_range_bound_at_two_vas_and_in_two_vms_agrees() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let (vm1, vm2) = (rig.vm(), rig.vm());
        let bo = rig.bo(3);
        let size = bo.size();
        let x = vm1
            .bind(&bo, 0, size, Placement::Anywhere, Prot::RW)
            .unwrap();
        let y = vm1
            .bind(&bo, 0, size, Placement::Anywhere, Prot::RW)
            .unwrap();
        let z = vm2
            .bind(&bo, 0, size, Placement::Anywhere, Prot::RW)
            .unwrap();
        assert_ne!(x, y);
        assert_eq!(bo.attachment_count(), 1, "{c}");
        let data = pattern(size as usize, 3);
        rig.sim.dma_write(&vm1, x, &data).unwrap();
        for (vm, va, what) in [(&vm1, y, "second VA"), (&vm2, z, "second VM")] {
            let mut got = vec![0u8; size as usize];
            rig.sim.dma_read(vm, va, &mut got).unwrap();
            assert_eq!(
                got, data,
                "{c}: the device reads its write through the {what}"
            );
        }
        assert_eq!(cpu_read(&bo, 0, size as usize), data, "{c}: CPU view");

        // The CPU writes, the device reads it through every binding.
        let back = pattern(size as usize, 4);
        cpu_write(&bo, 0, &back);
        for (vm, va) in [(&vm1, x), (&vm1, y), (&vm2, z)] {
            let mut got = vec![0u8; size as usize];
            rig.sim.dma_read(vm, va, &mut got).unwrap();
            assert_eq!(got, back, "{c}: device reads the CPU's write at {va}");
        }
    });
}

/// Case 2: a second bind while the device owns the buffer must not clobber what it wrote (a
/// second streaming mapping's map-time clean used to write the CPU's stale view over the
/// device's data in RAM, and a second bounce buffer to copy stale bytes back).
#[test]
fn second_bind_while_the_device_owns_the_bo_keeps_its_writes() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let (vm1, vm2) = (rig.vm(), rig.vm());
        let bo = rig.bo(2);
        let size = bo.size() as usize;
        cpu_write(&bo, 0, &pattern(size, 5));
        let va = vm1
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        let data = pattern(size, 6);
        rig.sim.dma_write(&vm1, va, &data).unwrap();
        // Bound again while the device owns the bytes: in the same VM and in another one.
        let again = vm1.bind(&bo, P, P, Placement::Anywhere, Prot::RW).unwrap();
        let other = vm2
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        let mut got = vec![0u8; P as usize];
        rig.sim.dma_read(&vm1, again, &mut got).unwrap();
        assert_eq!(
            got,
            data[P as usize..],
            "{c}: new binding reads the device's data"
        );
        let mut got = vec![0u8; size];
        rig.sim.dma_read(&vm2, other, &mut got).unwrap();
        assert_eq!(got, data, "{c}: other VM reads the device's data");
        assert_eq!(
            cpu_read(&bo, 0, size),
            data,
            "{c}: CPU sees the device's data"
        );
    });
}

/// The mapping lives while any binding of the device uses it, and goes with the last one.
#[test]
fn the_mapping_goes_with_the_last_binding() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let (vm1, vm2) = (rig.vm(), rig.vm());
        let bo = rig.bo(4);
        let live = rig.device.dma_ops().live_mappings();
        let a = vm1
            .bind(&bo, 0, 2 * P, Placement::Anywhere, Prot::RW)
            .unwrap();
        let b = vm2
            .bind(&bo, 2 * P, 2 * P, Placement::Anywhere, Prot::RW)
            .unwrap();
        vm1.unbind(a, 2 * P).unwrap();
        assert_eq!(bo.attachment_count(), 1, "{c}: vm2 still uses it");
        let data = pattern(2 * P as usize, 7);
        rig.sim.dma_write(&vm2, b, &data).unwrap();
        assert_eq!(cpu_read(&bo, 2 * P, data.len()), data, "{c}");
        // A partial unbind keeps it; the last piece releases it.
        vm2.unbind(b, P).unwrap();
        assert_eq!(bo.attachment_count(), 1, "{c}");
        vm2.unbind(Iova(b.0 + P), P).unwrap();
        assert_eq!(bo.attachment_count(), 0, "{c}");
        assert_eq!(rig.device.dma_ops().live_mappings(), live, "{c}");
        assert_eq!(cpu_read(&bo, 2 * P, data.len()), data, "{c}: bytes kept");
        drop((vm1, vm2));
        assert!(rig.device.dma_ops().take_diagnostics().is_empty(), "{c}");
    });
}

/// Two devices of one machine, both with a 32-bit mask, as `c` says.
fn two_devices(c: Combo) -> (Arc<PhysMem>, [(Arc<Device>, SimDevice); 2]) {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let devs = [device_on(&phys, c, "a"), device_on(&phys, c, "b")];
    (phys, devs)
}

/// A BO shared by two devices: what one writes the other reads once it binds the BO (the second
/// device's mapping does no map-time clean over the first device's data: `DMA_ATTR_SKIP_CPU_SYNC`,
/// as drm_gem_map_dma_buf maps importers). Below 4 GiB, so that no mapping bounces.
#[test]
fn a_second_device_sees_what_the_first_wrote() {
    for_each_combo(|c| {
        let (phys, [(da, sa), (db, sb)]) = two_devices(c);
        let (va, vb) = (Vm::new(&da).unwrap(), Vm::new(&db).unwrap());
        let bo = Bo::new(&phys, 2 * P, BoFlags::default().below(PhysAddr(1 << 32))).unwrap();
        let x = va
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        let data = pattern(2 * P as usize, 11);
        sa.dma_write(&va, x, &data).unwrap();
        let y = vb
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        assert_eq!(bo.attachment_count(), 2, "{c}");
        let mut got = vec![0u8; data.len()];
        sb.dma_read(&vb, y, &mut got).unwrap();
        assert_eq!(got, data, "{c}: device b reads device a's write");
        assert_eq!(cpu_read(&bo, 0, data.len()), data, "{c}");
        for d in [&da, &db] {
            assert!(d.dma_ops().take_diagnostics().is_empty(), "{c}");
        }
    });
}

/// Sharing a BO that one of the devices would bounce is refused (a bounce buffer's copy-back
/// would overwrite the other device's writes), and leaves nothing mapped for that device.
#[test]
fn sharing_a_bounced_bo_between_devices_is_refused() {
    for_each_combo(|c| {
        if c.iommu {
            return; // Nothing bounces behind the system IOMMU.
        }
        let (_phys, [(da, _), (db, _)]) = two_devices(c);
        let (va, vb) = (Vm::new(&da).unwrap(), Vm::new(&db).unwrap());
        let rig_bo = |phys: &Arc<PhysMem>| Bo::new(phys, P, BoFlags::default()).unwrap();
        let bo = rig_bo(da.phys());
        assert!(bo.pages()[0].0 >= 1 << 32, "{c}: above the 32-bit masks");
        va.bind(&bo, 0, P, Placement::Anywhere, Prot::RW).unwrap();
        let live = db.dma_ops().live_mappings();
        assert_eq!(
            vb.bind(&bo, 0, P, Placement::Anywhere, Prot::RW),
            Err(MmError::SharedBounce {
                device: "b".into(),
                other: "a".into()
            }),
            "{c}"
        );
        assert_eq!(db.dma_ops().live_mappings(), live, "{c}");
        assert!(
            vb.bindings().is_empty() && bo.attachment_count() == 1,
            "{c}"
        );
    });
}

/// A device has one mapping of a BO: asking for a direction its mapping does not cover is a
/// typed error, and a narrower one reuses the mapping.
#[test]
fn one_mapping_per_device_and_direction() {
    let rig = Rig::new(Combo {
        mmu: devmmu_mm::device::MmuFormat::ArmLpae4k,
        coherent: false,
        iommu: true,
    });
    let ops = rig.device.dma_ops();
    let bo = rig.bo(1);
    let to = bo.attach(ops, DmaDirection::ToDevice).unwrap();
    assert_eq!(
        bo.attach(ops, DmaDirection::Bidirectional).unwrap_err(),
        MmError::AttachDirection {
            device: rig.device.config().name.clone(),
            mapped: DmaDirection::ToDevice,
            requested: DmaDirection::Bidirectional,
        }
    );
    assert!(Arc::ptr_eq(
        &to,
        &bo.attach(ops, DmaDirection::ToDevice).unwrap()
    ));
    to.detach().unwrap();
    let both = bo.attach(ops, DmaDirection::Bidirectional).unwrap();
    assert!(Arc::ptr_eq(
        &both,
        &bo.attach(ops, DmaDirection::FromDevice).unwrap()
    ));
}
