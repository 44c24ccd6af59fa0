//! Shared buffers (issue 8): one BO bound several times, in one VM and in several VMs of one
//! device, keeps one DMA mapping per device (GEM shmem's cached sg table), so every binding
//! sees the same bytes, whatever the MMU format, coherency or system DMA ops. Each test failed
//! before the BO's mapping was shared (each bind made its own streaming mapping).

mod common;

use common::{cpu_read, cpu_write, for_each_combo, pattern, Rig};
use devmmu_mm::vm::Placement;
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
