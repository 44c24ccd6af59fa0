//! Device VMs seen by the device: every test binds BOs into a [`Vm`] and asserts on what the
//! simulated device ([`devmmu_mm::model`]) actually reads and writes through its MMU, for both
//! MMU formats (Intel IPU, ARM LPAE 4K) x coherent / non-coherent x direct / system IOMMU.

mod common;

use common::{
    contains, cpu_read, cpu_view, cpu_write, for_each_combo, pattern, ram_bytes, Combo, Rig,
    RigOptions,
};
use devmmu_mm::device::{MmuFormat, VmLeak};
use devmmu_mm::dma::DmaMask;
use devmmu_mm::model::FaultReason;
use devmmu_mm::phys::PAGE_SIZE;
use devmmu_mm::vm::{BindingInfo, Placement, Vm, VA_START};
use devmmu_mm::MmError;
use devmmu_pagetable::{Iova, Prot};

const P: u64 = PAGE_SIZE;

/// The permissions `Vm::bind` records: a coherent device's mappings get `CACHE` added.
fn recorded(c: Combo, prot: Prot) -> Prot {
    if c.coherent {
        prot | Prot::CACHE
    } else {
        prot
    }
}

/// The device writes through its VA and the CPU sees it inside a READ bracket; the CPU writes
/// inside a WRITE bracket and the device reads the same bytes. Before the brackets, the bytes
/// are not where the other side looks (unless nothing stands between them), so the brackets
/// are what made the transfers work.
#[test]
fn device_and_cpu_exchange_data_through_brackets() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let vm = rig.vm();
        let bo = rig.bo(16);
        let size = bo.size() as usize;
        let va = vm
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        // Only a coherent device behind the IOMMU writes straight into the CPU's view: direct
        // DMA with a 32-bit mask bounces these buffers (above 4 GiB) through swiotlb, and a
        // non-coherent device writes RAM behind the CPU's caches.
        let direct_view = c.coherent && c.iommu;

        let from_dev = pattern(size, 1);
        rig.sim.dma_write(&vm, va, &from_dev).unwrap();
        assert_eq!(
            cpu_view(&bo, 0, size) == from_dev,
            direct_view,
            "{c}: CPU view before sync_for_cpu"
        );
        assert_eq!(cpu_read(&bo, 0, size), from_dev, "{c}: CPU read in bracket");

        let from_cpu = pattern(size, 2);
        cpu_write(&bo, 0, &from_cpu);
        let mut got = vec![0u8; size];
        rig.sim.dma_read(&vm, va, &mut got).unwrap();
        assert_eq!(got, from_cpu, "{c}: device read after WRITE bracket");

        // An unaligned window across three pages (scattered frames): byte offsets inside the
        // pages are carried by the IOPTEs' bus addresses.
        let at = 3 * P + 100;
        let window = pattern(2 * P as usize + 700, 3);
        rig.sim.dma_write(&vm, Iova(va.0 + at), &window).unwrap();
        let all = cpu_read(&bo, 0, size);
        assert_eq!(
            &all[at as usize..at as usize + window.len()],
            &window[..],
            "{c}"
        );
        assert_eq!(
            &all[..at as usize],
            &from_cpu[..at as usize],
            "{c}: before window"
        );
        let after = at as usize + window.len();
        assert_eq!(&all[after..], &from_cpu[after..], "{c}: after window");

        assert!(rig.mmu.faults().is_empty(), "{c}: {:?}", rig.mmu.faults());
        assert!(
            rig.device.dma_ops().diagnostics().is_empty(),
            "{c}: {:?}",
            rig.device.dma_ops().diagnostics()
        );
        assert_eq!(vm.unbind(va, bo.size()).unwrap(), bo.size(), "{c}");
    });
}

/// After unbind the device faults (ARM) or hits the dummy page (IPU) even though its TLB held
/// the translation a moment before: the unbind invalidated it. The old BO is not reached.
#[test]
fn unbind_invalidates_the_device_tlb() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let vm = rig.vm();
        let bo = rig.bo(4);
        let size = bo.size() as usize;
        let va = vm
            .bind(
                &bo,
                0,
                bo.size(),
                Placement::Fixed(Iova(0x40_0000)),
                Prot::RW,
            )
            .unwrap();
        let first = pattern(size, 1);
        rig.sim.dma_write(&vm, va, &first).unwrap();
        let asid = vm.context().asid;
        let cached = |va: Iova| {
            rig.mmu
                .tlb_entries()
                .iter()
                .any(|e| e.asid == asid && va.0.wrapping_sub(e.iova) < e.size)
        };
        assert!(cached(va), "{c}: the access must have filled the TLB");
        assert_eq!(cpu_read(&bo, 0, size), first, "{c}");

        vm.unbind(va, bo.size()).unwrap();
        assert!(!cached(va), "{c}: unbind must invalidate the TLB entry");
        let (ram, cpu) = (ram_bytes(&bo, 0, size), cpu_view(&bo, 0, size));

        let stale = pattern(size, 9);
        let r = rig.sim.dma_write(&vm, va, &stale);
        // The only binding is gone, so ARM finds an empty root entry (its tables were freed).
        rig.assert_unbound(r, va, Some(0));
        assert_eq!(ram_bytes(&bo, 0, size), ram, "{c}: old BO's RAM untouched");
        assert_eq!(
            cpu_view(&bo, 0, size),
            cpu,
            "{c}: old BO's CPU view untouched"
        );
        assert!(
            !contains(&ram, &stale[..64]) && !contains(&cpu, &stale[..64]),
            "{c}"
        );
        if c.is_ipu() {
            // Every page of the access went to the one dummy page; the last one stays there.
            let dummy = vm.context().dummy_page.unwrap();
            let last = &stale[size - P as usize..];
            assert_eq!(rig.bus_bytes(dummy, P as usize), last, "{c}: dummy page");
        }
    });
}

/// A driver whose TLB invalidations never reach the hardware: after unbind, the device still
/// reaches the old pages through its stale TLB entry. The model keeps the stale entry, so the
/// bug is visible as data in a buffer the device should no longer reach.
#[test]
fn skipped_invalidation_leaves_a_stale_tlb_entry() {
    for &mmu in MmuFormat::ALL {
        for coherent in [false, true] {
            // Direct DMA with a 64-bit mask: bus address = physical address, no bounce, so the
            // stale translation points straight at the BO's frames.
            let c = Combo {
                mmu,
                coherent,
                iommu: false,
            };
            let rig = Rig::with(RigOptions {
                mask: DmaMask::bits(64),
                skip_invalidation: true,
                ..RigOptions::new(c)
            });
            let vm = rig.vm();
            let bo = rig.bo(4);
            let size = bo.size() as usize;
            let va = vm
                .bind(
                    &bo,
                    0,
                    bo.size(),
                    Placement::Fixed(Iova(0x40_0000)),
                    Prot::RW,
                )
                .unwrap();
            rig.sim.dma_write(&vm, va, &pattern(size, 1)).unwrap();
            let issued = rig.device.tlb_invalidations();
            vm.unbind(va, bo.size()).unwrap();
            assert_eq!(
                rig.device.tlb_invalidations(),
                issued + 1,
                "{c}: driver issued"
            );
            assert_eq!(
                rig.mmu.tlb_stats().invalidations,
                0,
                "{c}: hardware got none"
            );
            assert_eq!(bo.attachment_count(), 0, "{c}: DMA mapping released");

            let stale = pattern(size, 7);
            rig.sim
                .dma_write(&vm, va, &stale)
                .expect("a stale TLB entry translates without a walk");
            assert_eq!(
                ram_bytes(&bo, 0, size),
                stale,
                "{c}: stale write hit the old BO"
            );
            assert!(rig.mmu.faults().is_empty(), "{c}");
        }
    }
}

/// With the invalidation skipped but other DMA ops in the way, the stale entry does not reach
/// the BO: behind a system IOMMU the old IOVA is unmapped there (bus fault); with swiotlb the
/// write lands in the released bounce slot, silently, and the BO is untouched.
#[test]
fn skipped_invalidation_behind_iommu_or_swiotlb() {
    for &mmu in MmuFormat::ALL {
        for iommu in [false, true] {
            let c = Combo {
                mmu,
                coherent: false,
                iommu,
            };
            let rig = Rig::with(RigOptions {
                skip_invalidation: true,
                ..RigOptions::new(c)
            });
            let vm = rig.vm();
            let bo = rig.bo(4);
            let size = bo.size() as usize;
            let va = vm
                .bind(
                    &bo,
                    0,
                    bo.size(),
                    Placement::Fixed(Iova(0x40_0000)),
                    Prot::RW,
                )
                .unwrap();
            rig.sim.dma_write(&vm, va, &pattern(size, 1)).unwrap();
            vm.unbind(va, bo.size()).unwrap();
            let (ram, cpu) = (ram_bytes(&bo, 0, size), cpu_view(&bo, 0, size));
            let r = rig.sim.dma_write(&vm, va, &pattern(size, 7));
            if iommu {
                let f = r.expect_err("the system IOMMU no longer maps the old IOVA");
                assert!(matches!(f.reason, FaultReason::Bus(_)), "{c}: {f}");
            } else {
                r.expect("the stale entry points at a live swiotlb slot");
            }
            assert_eq!(ram_bytes(&bo, 0, size), ram, "{c}");
            assert_eq!(cpu_view(&bo, 0, size), cpu, "{c}");
        }
    }
}

/// Two VMs of one device: a VA bound in A is unbound in B, and the same IOVA bound to another
/// BO in B reaches B's BO only; unbinding in B leaves A's translations alone.
#[test]
fn vms_do_not_see_each_other() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let (vm_a, vm_b) = (rig.vm(), rig.vm());
        assert_ne!(vm_a.context().asid, vm_b.context().asid, "{c}");
        assert_ne!(vm_a.context().root, vm_b.context().root, "{c}");
        let (bo_a, bo_b) = (rig.bo(4), rig.bo(4));
        let size = bo_a.size() as usize;
        let x = Iova(0x80_0000);
        vm_a.bind(&bo_a, 0, bo_a.size(), Placement::Fixed(x), Prot::RW)
            .unwrap();
        let pa = pattern(size, 1);
        rig.sim.dma_write(&vm_a, x, &pa).unwrap();

        // B has nothing at X (ARM: B's root has no entry at all).
        let r = rig.sim.dma_write(&vm_b, x, &pattern(size, 2));
        rig.assert_unbound(r, x, Some(0));
        let mut buf = vec![0u8; size];
        let r = rig.sim.dma_read(&vm_b, x, &mut buf);
        rig.assert_unbound(r, x, Some(0));
        assert_ne!(buf, pa, "{c}: B read A's data");
        assert_eq!(cpu_read(&bo_a, 0, size), pa, "{c}: A's BO kept A's data");

        // The same IOVA in B, another BO: each VM reaches its own.
        vm_b.bind(&bo_b, 0, bo_b.size(), Placement::Fixed(x), Prot::RW)
            .unwrap();
        let pb = pattern(size, 3);
        rig.sim.dma_write(&vm_b, x, &pb).unwrap();
        let pa2 = pattern(size, 4);
        rig.sim.dma_write(&vm_a, x, &pa2).unwrap();
        assert_eq!(cpu_read(&bo_a, 0, size), pa2, "{c}: A's BO");
        assert_eq!(cpu_read(&bo_b, 0, size), pb, "{c}: B's BO");
        rig.sim.dma_read(&vm_b, x, &mut buf).unwrap();
        assert_eq!(buf, pb, "{c}: device read in B");
        rig.sim.dma_read(&vm_a, x, &mut buf).unwrap();
        assert_eq!(buf, pa2, "{c}: device read in A");

        // Unbinding in B: B faults, A still reaches its BO.
        vm_b.unbind(x, bo_b.size()).unwrap();
        let r = rig.sim.dma_read(&vm_b, x, &mut buf);
        rig.assert_unbound(r, x, Some(0));
        let asid_a = vm_a.context().asid;
        if c.mmu == MmuFormat::ArmLpae4k {
            // Range invalidation is by ASID: A's cached leaves at X survive B's unbind.
            assert!(
                rig.mmu
                    .tlb_entries()
                    .iter()
                    .any(|e| e.asid == asid_a && e.iova == x.0),
                "{c}: A's TLB entry must survive B's unbind"
            );
        }
        rig.sim.dma_read(&vm_a, x, &mut buf).unwrap();
        assert_eq!(buf, pa2, "{c}: A after B's unbind");
    });
}

/// The walker of this hardware does not snoop the CPU caches. A driver that believes it does
/// never cleans the IOPTE lines, so the walker reads stale RAM and the device misses the new
/// binding; the correct driver cleans them and the device reaches the BO.
#[test]
fn noncoherent_walker_sees_only_cleaned_ptes() {
    for &mmu in MmuFormat::ALL {
        for iommu in [false, true] {
            let c = Combo {
                mmu,
                coherent: false,
                iommu,
            };
            for driver_believes_coherent in [true, false] {
                let rig = Rig::with(RigOptions {
                    driver_coherent_walk: Some(driver_believes_coherent),
                    ..RigOptions::new(c)
                });
                let vm = rig.vm();
                let bo = rig.bo(4);
                let size = bo.size() as usize;
                let va = vm
                    .bind(
                        &bo,
                        0,
                        bo.size(),
                        Placement::Fixed(Iova(0x40_0000)),
                        Prot::RW,
                    )
                    .unwrap();
                // The table as the CPU holds it is right in both cases.
                assert!(vm.translate(va).is_some(), "{c}");
                let data = pattern(size, 5);
                let r = rig.sim.dma_write(&vm, va, &data);
                if driver_believes_coherent {
                    assert_eq!(vm.pt_stats().lines_cleaned, 0, "{c}");
                    let f = r.expect_err("the walker must miss the uncleaned binding");
                    match mmu {
                        // RAM still holds the zeroed root: no entry at level 0.
                        MmuFormat::ArmLpae4k => {
                            assert_eq!(f.reason, FaultReason::Translation { level: 0 }, "{c}")
                        }
                        // RAM holds a zeroed L1, i.e. a pointer to an L2 at bus address 0,
                        // where nothing is mapped.
                        MmuFormat::Ipu => {
                            assert!(
                                matches!(f.reason, FaultReason::WalkAbort { .. }),
                                "{c}: {f}"
                            )
                        }
                    }
                    assert!(!contains(&cpu_read(&bo, 0, size), &data[..64]), "{c}");
                } else {
                    assert!(vm.pt_stats().lines_cleaned > 0, "{c}");
                    r.unwrap();
                    assert_eq!(cpu_read(&bo, 0, size), data, "{c}");
                }
            }
        }
    }
}

/// A walker that snoops the caches behind a data path that does not: the driver knows, and
/// cleans nothing for the tables while still syncing the data.
#[test]
fn coherent_walker_with_noncoherent_data() {
    for &mmu in MmuFormat::ALL {
        for iommu in [false, true] {
            let c = Combo {
                mmu,
                coherent: false,
                iommu,
            };
            let rig = Rig::with(RigOptions {
                hw_coherent_walk: Some(true),
                ..RigOptions::new(c)
            });
            let vm = rig.vm();
            let bo = rig.bo(4);
            let size = bo.size() as usize;
            let va = vm
                .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
                .unwrap();
            assert_eq!(vm.pt_stats().lines_cleaned, 0, "{c}");
            let data = pattern(size, 6);
            rig.sim.dma_write(&vm, va, &data).unwrap();
            assert_eq!(cpu_read(&bo, 0, size), data, "{c}");
        }
    }
}

/// A walker that does not snoop the caches behind a data path that does (the driver knows
/// both): the IOPTE lines must still be cleaned, even though the device's DMA ops have no
/// cache maintenance to do for its data.
#[test]
fn noncoherent_walker_with_coherent_data() {
    for &mmu in MmuFormat::ALL {
        for iommu in [false, true] {
            let c = Combo {
                mmu,
                coherent: true,
                iommu,
            };
            let rig = Rig::with(RigOptions {
                hw_coherent_walk: Some(false),
                ..RigOptions::new(c)
            });
            let vm = rig.vm();
            let bo = rig.bo(4);
            let size = bo.size() as usize;
            let va = vm
                .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
                .unwrap();
            assert!(vm.pt_stats().lines_cleaned > 0, "{c}");
            let data = pattern(size, 6);
            rig.sim
                .dma_write(&vm, va, &data)
                .unwrap_or_else(|f| panic!("{c}: {f}"));
            assert_eq!(cpu_read(&bo, 0, size), data, "{c}");
        }
    }
}

/// A read-only binding: the ARM MMU refuses device writes. The IPU MMU has no permission bits,
/// so a read-only bind is refused (issue 8, case 5: it used to succeed and the device could
/// write), unless the device's config accepts unenforced protections, and then `bindings()`
/// says what the IOPTEs really grant.
#[test]
fn read_only_binding_refuses_device_writes() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let vm = rig.vm();
        let bo = rig.bo(2);
        let size = bo.size() as usize;
        let data = pattern(size, 8);
        cpu_write(&bo, 0, &data);
        let live_before = rig.device.dma_ops().live_mappings();
        let bound = vm.bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RO);
        if c.is_ipu() {
            assert_eq!(
                bound,
                Err(MmError::ProtNotEnforced {
                    format: "ipu",
                    prot: Prot::RO,
                    granted: MmuFormat::Ipu.effective_prot(Prot::RO),
                }),
                "{c}"
            );
            assert!(vm.bindings().is_empty(), "{c}");
            assert_eq!(bo.attachment_count(), 0, "{c}: nothing mapped");
            assert_eq!(rig.device.dma_ops().live_mappings(), live_before, "{c}");
            return;
        }
        let va = bound.unwrap();
        let mut got = vec![0u8; size];
        rig.sim.dma_read(&vm, va, &mut got).unwrap();
        assert_eq!(got, data, "{c}: reads are allowed");
        let f = rig
            .sim
            .dma_write(&vm, va, &pattern(size, 9))
            .expect_err("write to a read-only binding");
        assert_eq!(f.reason, FaultReason::Permission, "{c}");
        assert_eq!(cpu_read(&bo, 0, size), data, "{c}: BO unchanged");
        assert!(vm.bindings()[0].is_enforced(), "{c}");
    });
}

/// A device that accepts unenforced protections gets its read-only IPU binding, and
/// `bindings()` and `translate()` both say the device can write it (which it then can).
#[test]
fn unenforced_read_only_is_reported() {
    for_each_combo(|c| {
        if !c.is_ipu() {
            return;
        }
        let mut opts = RigOptions::new(c);
        opts.accept_unenforced_prot = true;
        let rig = Rig::with(opts);
        let vm = rig.vm();
        let bo = rig.bo(1);
        let va = vm
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RO)
            .unwrap();
        let info = vm.bindings()[0];
        assert!(info.prot.contains(Prot::READ) && !info.prot.contains(Prot::WRITE));
        assert!(info.granted.contains(Prot::RW), "{c}: {info:?}");
        assert!(!info.is_enforced(), "{c}");
        assert!(vm.translate(va).unwrap().1.contains(Prot::WRITE), "{c}");
        let data = pattern(bo.size() as usize, 3);
        rig.sim.dma_write(&vm, va, &data).unwrap();
        assert_eq!(cpu_read(&bo, 0, data.len()), data, "{c}");
    });
}

/// Unbinding the middle of a binding leaves two working pieces with the right BO offsets; the
/// BO's DMA mapping goes when the last piece does.
#[test]
fn partial_unbind_splits_the_binding() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let ops = rig.device.dma_ops();
        let vm = rig.vm();
        let bo = rig.bo(8);
        let size = bo.size() as usize;
        let base = Iova(0x40_0000);
        vm.bind(&bo, 0, bo.size(), Placement::Fixed(base), Prot::RW)
            .unwrap();
        let data = pattern(size, 1);
        rig.sim.dma_write(&vm, base, &data).unwrap();
        assert_eq!(bo.attachment_count(), 1, "{c}");

        // Pages 3 and 4 go.
        let hole = Iova(base.0 + 3 * P);
        assert_eq!(vm.unbind(hole, 2 * P).unwrap(), 2 * P, "{c}");
        let prot = recorded(c, Prot::RW);
        assert_eq!(
            vm.bindings(),
            vec![
                BindingInfo {
                    iova: base,
                    size: 3 * P,
                    bo_offset: 0,
                    prot,
                    granted: c.mmu.effective_prot(prot),
                },
                BindingInfo {
                    iova: Iova(base.0 + 5 * P),
                    size: 3 * P,
                    bo_offset: 5 * P,
                    prot,
                    granted: c.mmu.effective_prot(prot),
                },
            ],
            "{c}"
        );
        assert_eq!(
            bo.attachment_count(),
            1,
            "{c}: the pieces share the mapping"
        );

        // The pieces still reach the right BO pages; the hole does not.
        let second = pattern(size, 2);
        for page in [0u64, 1, 2, 5, 6, 7] {
            let r = page as usize * P as usize..(page as usize + 1) * P as usize;
            rig.sim
                .dma_write(&vm, Iova(base.0 + page * P), &second[r])
                .unwrap_or_else(|f| panic!("{c}: page {page}: {f}"));
        }
        for page in [3u64, 4] {
            let at = Iova(base.0 + page * P);
            let r = rig.sim.dma_write(&vm, at, &[0xEE; 64]);
            // ARM: the leaf table stays (the pieces use it), its entry is empty.
            rig.assert_unbound(r, at, Some(3));
        }
        let mut expect = second.clone();
        expect[3 * P as usize..5 * P as usize]
            .copy_from_slice(&data[3 * P as usize..5 * P as usize]);
        assert_eq!(cpu_read(&bo, 0, size), expect, "{c}");

        // Unbinding the pieces: the DMA mapping is released with the last one, exactly once.
        let unmaps = ops.stats().unmaps;
        vm.unbind(base, 3 * P).unwrap();
        assert_eq!(bo.attachment_count(), 1, "{c}");
        assert_eq!(ops.stats().unmaps, unmaps, "{c}");
        // One call over the second piece and a hole before it.
        assert_eq!(vm.unbind(hole, 5 * P).unwrap(), 3 * P, "{c}");
        assert_eq!(bo.attachment_count(), 0, "{c}");
        assert_eq!(ops.stats().unmaps, unmaps + 1, "{c}");
        assert!(
            vm.bindings().is_empty() && vm.mapped_runs().is_empty(),
            "{c}"
        );
        assert!(ops.diagnostics().is_empty(), "{c}: {:?}", ops.diagnostics());
    });
}

/// Every refused bind or unbind leaves the VM exactly as it was: bindings, IOPTEs (none
/// written), VA space, DMA mappings.
#[test]
fn refused_binds_change_nothing() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let ops = rig.device.dma_ops();
        let vm = rig.vm();
        let bo = rig.bo(4);
        let base = Iova(0x40_0000);
        vm.bind(&bo, 0, 4 * P, Placement::Fixed(base), Prot::RW)
            .unwrap();
        let other = rig.bo(4);
        let (bindings, runs, stores) = (vm.bindings(), vm.mapped_runs(), vm.pt_stats().pte_stores);
        let maps = ops.stats().maps;
        let unchanged = |what: &str| {
            assert_eq!(vm.bindings(), bindings, "{c}: {what}: bindings");
            assert_eq!(vm.mapped_runs(), runs, "{c}: {what}: mapped runs");
            assert_eq!(
                vm.pt_stats().pte_stores,
                stores,
                "{c}: {what}: IOPTE stores"
            );
            assert_eq!(ops.stats().maps, maps, "{c}: {what}: DMA maps");
            assert_eq!(other.attachment_count(), 0, "{c}: {what}: attachments");
        };

        // Overlapping the tail of the binding.
        let at = Iova(base.0 + 2 * P);
        let e = vm
            .bind(&other, 0, 4 * P, Placement::Fixed(at), Prot::RW)
            .unwrap_err();
        assert!(
            matches!(e, MmError::VaInUse { iova, size } if iova == at && size == 4 * P),
            "{c}: {e}"
        );
        unchanged("VaInUse");

        let (top, two) = match c.mmu {
            MmuFormat::Ipu => (Iova(0xFFFF_F000), 2 * P),
            MmuFormat::ArmLpae4k => (Iova((1 << 48) - P), 2 * P),
        };
        let e = vm
            .bind(&other, 0, two, Placement::Fixed(top), Prot::RW)
            .unwrap_err();
        assert!(
            matches!(e, MmError::VaOutOfRange { iova, size, .. } if iova == top && size == two),
            "{c}: {e}"
        );
        unchanged("VaOutOfRange");
        // Page 0 is never handed out (a NULL device pointer must fault).
        let e = vm
            .bind(&other, 0, P, Placement::Fixed(Iova(0)), Prot::RW)
            .unwrap_err();
        assert!(matches!(e, MmError::VaOutOfRange { .. }), "{c}: {e}");
        unchanged("VA 0");

        for (off, size, place, bad) in [
            (0, 0x1800, Placement::Anywhere, 0x1800),
            (0x800, P, Placement::Anywhere, 0x800),
            (0, P, Placement::Fixed(Iova(0x50_0800)), 0x50_0800),
        ] {
            let e = vm.bind(&other, off, size, place, Prot::RW).unwrap_err();
            assert!(
                matches!(e, MmError::Misaligned { value, align } if value == bad && align == P),
                "{c}: {e}"
            );
            unchanged("Misaligned");
        }
        let e = vm
            .bind(&other, 0, 0, Placement::Anywhere, Prot::RW)
            .unwrap_err();
        assert!(matches!(e, MmError::ZeroSize), "{c}: {e}");
        unchanged("ZeroSize");
        let e = vm
            .bind(&other, 2 * P, 3 * P, Placement::Anywhere, Prot::RW)
            .unwrap_err();
        assert!(
            matches!(e, MmError::OutOfBounds { offset, len, size } if offset == 2 * P && len == 3 * P && size == 4 * P),
            "{c}: {e}"
        );
        unchanged("OutOfBounds");
        let e = vm
            .bind(&other, 0, P, Placement::Anywhere, Prot::NONE)
            .unwrap_err();
        assert!(
            matches!(e, MmError::NoAccess { prot } if prot == Prot::NONE),
            "{c}: {e}"
        );
        let e = vm
            .bind(&other, 0, P, Placement::Anywhere, Prot::NOEXEC)
            .unwrap_err();
        assert!(matches!(e, MmError::NoAccess { .. }), "{c}: {e}");
        unchanged("NoAccess");

        let hole = Iova(0x80_0000);
        let e = vm.unbind(hole, P).unwrap_err();
        assert!(
            matches!(e, MmError::NotBound { iova, size } if iova == hole && size == P),
            "{c}: {e}"
        );
        let e = vm.unbind(Iova(base.0 + 0x800), P).unwrap_err();
        assert!(matches!(e, MmError::Misaligned { .. }), "{c}: {e}");
        let e = vm.unbind(base, 0).unwrap_err();
        assert!(matches!(e, MmError::ZeroSize), "{c}: {e}");
        let e = vm.unbind(top, two).unwrap_err();
        assert!(matches!(e, MmError::VaOutOfRange { .. }), "{c}: {e}");
        unchanged("unbind");

        // The VA next to the binding is still free, and the device still reaches the BO.
        vm.bind(
            &other,
            0,
            4 * P,
            Placement::Fixed(Iova(base.0 + 4 * P)),
            Prot::RW,
        )
        .unwrap();
        let data = pattern(4 * P as usize, 4);
        rig.sim.dma_write(&vm, base, &data).unwrap();
        assert_eq!(cpu_read(&bo, 0, 4 * P as usize), data, "{c}");
        assert!(rig.mmu.faults().is_empty(), "{c}");
    });
}

/// Counters of one step: deltas of IOPTE stores, PTE lines cleaned, TLB invalidations (driver
/// side and hardware side), tables freed and bytes bounced.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Step {
    stores: u64,
    lines: u64,
    invals: u64,
    freed: u64,
    bounced: u64,
}

fn snapshot(rig: &Rig, vm: &Vm) -> Step {
    let s = vm.pt_stats();
    let invals = rig.device.tlb_invalidations();
    assert_eq!(
        invals,
        rig.mmu.tlb_stats().invalidations,
        "{}: every invalidation the driver issues reaches the hardware",
        rig.combo
    );
    Step {
        stores: s.pte_stores,
        lines: s.lines_cleaned,
        invals,
        freed: s.tables_freed,
        bounced: rig.device.dma_ops().stats().bounced_bytes,
    }
}

fn delta(a: Step, b: Step) -> Step {
    Step {
        stores: b.stores - a.stores,
        lines: b.lines - a.lines,
        invals: b.invals - a.invals,
        freed: b.freed - a.freed,
        bounced: b.bounced - a.bounced,
    }
}

/// The counters of bind, CPU access and unbind, each worked out from the formats and the DMA
/// ops. Two 16-page BOs, A at VA 0x1000 and B at 0x11000 (right after A, same leaf table).
#[test]
fn counters_match_the_worked_out_costs() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let vm = rig.vm();
        let (a, b) = (rig.bo(16), rig.bo(16));
        let bytes = a.size();
        // Lines cleaned only for a non-coherent walker.
        let lines = |n: u64| if c.coherent { 0 } else { n };
        // Direct DMA with a 32-bit mask bounces these buffers (above 4 GiB) through swiotlb:
        // each Bidirectional sync copies the whole BO once. Behind the IOMMU nothing bounces.
        let bounce = |copies: u64| if c.iommu { 0 } else { copies * bytes };
        let ipu = c.is_ipu();
        let mut at = snapshot(&rig, &vm);
        let mut step = |what: &str, want: Step| {
            let now = snapshot(&rig, &vm);
            assert_eq!(delta(at, now), want, "{c}: {what}");
            at = now;
        };

        // Bind A (fresh tables). IPU: 16 leaves + 1 L1 pointer = 17 stores; the new L2 cleaned
        // whole (4096 / 64 = 64 lines) + the one L1 line = 65; the IPU TLB caches the dummy
        // entries this replaces, so map invalidates (whole TLB, one request).
        // ARM: 16 leaves + 3 table pointers (L0, L1, L2) = 19; three new tables cleaned whole
        // (3 x 64) + the root line = 193; the entries were invalid, which the TLB never caches:
        // no invalidation. Bounce: the map copies the BO to its bounce buffer once.
        vm.bind(&a, 0, bytes, Placement::Fixed(Iova(0x1000)), Prot::RW)
            .unwrap();
        step(
            "bind A",
            Step {
                stores: if ipu { 17 } else { 19 },
                lines: lines(if ipu { 65 } else { 193 }),
                invals: if ipu { 1 } else { 0 },
                freed: 0,
                bounced: bounce(1),
            },
        );

        // Bind B into the existing leaf table: 16 stores only. Its entries are 17..33: IPU
        // 4-byte entries span bytes 68..132 = lines 1..2 (2 lines); ARM 8-byte entries span
        // bytes 136..264 = lines 2..4 (3 lines).
        vm.bind(&b, 0, bytes, Placement::Fixed(Iova(0x11000)), Prot::RW)
            .unwrap();
        step(
            "bind B",
            Step {
                stores: 16,
                lines: lines(if ipu { 2 } else { 3 }),
                invals: if ipu { 1 } else { 0 },
                freed: 0,
                bounced: bounce(1),
            },
        );

        // The device fills A and the CPU reads it in a bracket: no IOPTE work; the bracket's
        // sync_for_cpu copies bounce -> BO, its end's sync_for_device BO -> bounce.
        let data = pattern(bytes as usize, 1);
        rig.sim.dma_write(&vm, Iova(0x1000), &data).unwrap();
        assert_eq!(cpu_read(&a, 0, bytes as usize), data, "{c}");
        step(
            "device write + CPU read",
            Step {
                stores: 0,
                lines: 0,
                invals: 0,
                freed: 0,
                bounced: bounce(2),
            },
        );

        // Unbind A: 16 entries cleared; the leaf table stays (B uses it), its cleared entries
        // 1..17 cleaned: IPU bytes 4..68 = lines 0..1 (2), ARM bytes 8..136 = lines 0..2 (3).
        // One range invalidated (IPU: whole TLB). The unmap copies bounce -> BO.
        vm.unbind(Iova(0x1000), bytes).unwrap();
        step(
            "unbind A",
            Step {
                stores: 16,
                lines: lines(if ipu { 2 } else { 3 }),
                invals: 1,
                freed: 0,
                bounced: bounce(1),
            },
        );

        // Unbind B: the tables empty out. IPU: the L2 table is kept linked, as ipu6-mmu.c does
        // (freed only at teardown): 16 stores, its cleared entries 17..33 cleaned (bytes
        // 68..132, lines 1..2), nothing freed. ARM: 16 + 3 table pointers = 19 stores; tables
        // about to be freed are not cleaned (the walker cannot reach them once the parent entry
        // is cleaned and the TLB invalidated): only the root line; its L1..L3 tables freed.
        vm.unbind(Iova(0x11000), bytes).unwrap();
        step(
            "unbind B",
            Step {
                stores: if ipu { 16 } else { 19 },
                lines: lines(if ipu { 2 } else { 1 }),
                invals: 1,
                freed: if ipu { 0 } else { 3 },
                bounced: bounce(1),
            },
        );
        // Only the root remains (ARM); the root and the kept L2 (IPU, dummies excluded).
        assert_eq!(vm.table_count(), if ipu { 2 } else { 1 }, "{c}");
    });
}

/// A VM dropped with bindings left releases their DMA mappings, reports the leak (debug mode),
/// and leaves nothing for the device's detach to report.
#[test]
fn dropping_a_vm_with_bindings_releases_and_reports() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let ops = rig.device.dma_ops().clone();
        let vm = rig.vm();
        let asid = vm.context().asid;
        let (a, b) = (rig.bo(4), rig.bo(2));
        let va = vm
            .bind(&a, 0, a.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        vm.bind(&b, P, P, Placement::Anywhere, Prot::WRITE).unwrap();
        rig.sim
            .dma_write(&vm, va, &pattern(a.size() as usize, 1))
            .unwrap();
        assert_eq!((a.attachment_count(), b.attachment_count()), (1, 1), "{c}");
        // The BOs' two scatter-gather mappings plus the VM's DMA-mapped table pages.
        let live = ops.live_mappings();
        assert!(live > 2, "{c}");
        let unmaps = ops.stats().unmaps;

        drop(vm);
        assert_eq!((a.attachment_count(), b.attachment_count()), (0, 0), "{c}");
        assert_eq!(ops.live_mappings(), 0, "{c}");
        assert_eq!(ops.stats().unmaps - unmaps, live as u64, "{c}");
        assert_eq!(
            rig.device.vm_leaks(),
            vec![VmLeak {
                asid,
                bindings: 2,
                bytes: a.size() + P
            }],
            "{c}"
        );
        let report = rig.device.detach();
        assert!(report.is_empty(), "{c}: {report:?}");
        assert!(ops.diagnostics().is_empty(), "{c}: {:?}", ops.diagnostics());
    });
}

/// The clean life of a VM: bind, use, unbind all, drop, detach: no leaks, no diagnostics.
#[test]
fn clean_run_reports_nothing() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let ops = rig.device.dma_ops().clone();
        let vm = rig.vm();
        let bo = rig.bo(8);
        let size = bo.size() as usize;
        let va = vm
            .bind(&bo, 0, bo.size(), Placement::Lowest, Prot::RW)
            .unwrap();
        assert_eq!(va, Iova(VA_START), "{c}: lowest free VA");
        let data = pattern(size, 3);
        rig.sim.dma_write(&vm, va, &data).unwrap();
        assert_eq!(cpu_read(&bo, 0, size), data, "{c}");
        cpu_write(&bo, 0, &pattern(size, 4));
        let mut got = vec![0u8; size];
        rig.sim.dma_read(&vm, va, &mut got).unwrap();
        assert_eq!(got, pattern(size, 4), "{c}");
        vm.unbind(va, bo.size()).unwrap();
        drop(vm);
        assert!(rig.device.vm_leaks().is_empty(), "{c}");
        assert_eq!(ops.live_mappings(), 0, "{c}");
        let report = rig.device.detach();
        assert!(report.is_empty(), "{c}: {report:?}");
        assert!(ops.diagnostics().is_empty(), "{c}: {:?}", ops.diagnostics());
        assert!(rig.mmu.faults().is_empty(), "{c}");
    });
}
