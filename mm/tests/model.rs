//! The simulated device's parts on their own: the TLB (capacity, round-robin eviction,
//! invalidation by address space and range, whole-TLB invalidation, counters) and the DMA
//! engine's copy between two bindings.

mod common;

use common::{cpu_read, cpu_write, for_each_combo, pattern, Combo, Rig, RigOptions};
use devmmu_mm::bo::{Bo, BoFlags};
use devmmu_mm::device::MmuFormat;
use devmmu_mm::dma::DmaMask;
use devmmu_mm::model::{Access, FaultReason, Tlb, TlbEntry, TlbStats};
use devmmu_mm::phys::PAGE_SIZE;
use devmmu_mm::vm::Placement;
use devmmu_pagetable::{DmaAddr, Iova, Prot};

const P: u64 = PAGE_SIZE;

fn entry(asid: u32, iova: u64, size: u64) -> TlbEntry {
    TlbEntry {
        asid,
        iova,
        size,
        dma: DmaAddr(0x1_0000_0000 + iova),
        prot: Prot::RW,
    }
}

/// IOVAs (of `asid`) the TLB holds, in its slot order.
fn held(tlb: &Tlb) -> Vec<(u32, u64)> {
    tlb.entries().iter().map(|e| (e.asid, e.iova)).collect()
}

#[test]
fn tlb_fills_then_evicts_round_robin() {
    let mut tlb = Tlb::new(3);
    assert_eq!(tlb.capacity(), 3);
    for i in 0..3 {
        tlb.insert(entry(1, i * P, P));
    }
    assert_eq!(tlb.stats().evictions, 0);
    // Full: the next three inserts replace slots 0, 1, 2 in turn, then it wraps to slot 0.
    tlb.insert(entry(1, 10 * P, P));
    assert_eq!(held(&tlb), vec![(1, 10 * P), (1, P), (1, 2 * P)]);
    tlb.insert(entry(1, 11 * P, P));
    tlb.insert(entry(1, 12 * P, P));
    assert_eq!(held(&tlb), vec![(1, 10 * P), (1, 11 * P), (1, 12 * P)]);
    tlb.insert(entry(1, 13 * P, P));
    assert_eq!(held(&tlb), vec![(1, 13 * P), (1, 11 * P), (1, 12 * P)]);
    assert_eq!(tlb.stats().evictions, 4);

    // Lookups hit anywhere inside a cached leaf and count hits and misses.
    assert_eq!(tlb.lookup(1, 11 * P + 0x123).map(|e| e.iova), Some(11 * P));
    assert_eq!(tlb.lookup(1, 0), None, "evicted");
    assert_eq!(tlb.lookup(2, 11 * P), None, "other address space");
    let s = tlb.stats();
    assert_eq!((s.hits, s.misses), (1, 2));
}

#[test]
fn tlb_of_zero_capacity_holds_one_entry() {
    let mut tlb = Tlb::new(0);
    assert_eq!(tlb.capacity(), 1);
    tlb.insert(entry(1, 0, P));
    tlb.insert(entry(1, P, P));
    assert_eq!(held(&tlb), vec![(1, P)]);
}

#[test]
fn tlb_range_invalidation_is_per_address_space_and_overlap() {
    let mut tlb = Tlb::new(16);
    // asid 1: pages 0..4 and a 2 MiB block at 2 MiB; asid 2: pages 0..4.
    for i in 0..4 {
        tlb.insert(entry(1, i * P, P));
        tlb.insert(entry(2, i * P, P));
    }
    tlb.insert(entry(1, 0x20_0000, 0x20_0000));

    // Pages 1..3 of asid 1 only.
    tlb.invalidate_range(Some(1), P, 2 * P);
    let mut left = held(&tlb);
    left.sort_unstable();
    assert_eq!(
        left,
        vec![
            (1, 0),
            (1, 3 * P),
            (1, 0x20_0000),
            (2, 0),
            (2, P),
            (2, 2 * P),
            (2, 3 * P)
        ]
    );
    // A range that covers one page inside the block drops the whole block (the leaf overlaps).
    tlb.invalidate_range(Some(1), 0x30_0000, P);
    assert!(!held(&tlb).contains(&(1, 0x20_0000)));
    // A range that ends exactly where an entry begins does not touch it.
    tlb.invalidate_range(Some(2), 0, P);
    assert!(!held(&tlb).contains(&(2, 0)) && held(&tlb).contains(&(2, P)));
    // No address space given: every one.
    tlb.invalidate_range(None, 0, 4 * P);
    assert!(tlb.entries().is_empty());
    let s = tlb.stats();
    assert_eq!((s.invalidations, s.entries_invalidated), (4, 9));
}

#[test]
fn tlb_invalidate_all_empties_and_counts() {
    let mut tlb = Tlb::new(4);
    for i in 0..6 {
        tlb.insert(entry(1 + (i as u32 % 2), i * P, P));
    }
    tlb.invalidate_all();
    assert!(tlb.entries().is_empty());
    tlb.invalidate_all();
    assert_eq!(
        tlb.stats(),
        TlbStats {
            hits: 0,
            misses: 0,
            invalidations: 2,
            entries_invalidated: 4,
            evictions: 2,
        }
    );
    // Usable again, from slot 0.
    tlb.insert(entry(1, 0, P));
    assert_eq!(held(&tlb), vec![(1, 0)]);
}

/// The device's TLB in use: a small TLB walks again once an entry is evicted, and each leaf is
/// cached whole (one entry per 4 KiB page touched).
#[test]
fn device_tlb_capacity_shows_as_walks() {
    for &mmu in MmuFormat::ALL {
        let c = Combo {
            mmu,
            coherent: false,
            iommu: true,
        };
        let rig = Rig::with(RigOptions {
            tlb_entries: 2,
            ..RigOptions::new(c)
        });
        let vm = rig.vm();
        let bo = rig.bo(3);
        let va = vm
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        let walks = |rig: &Rig| rig.sim.stats().walks;
        // Three pages through a 2-entry TLB: 3 walks, 1 eviction.
        rig.sim
            .dma_write(&vm, va, &pattern(3 * P as usize, 1))
            .unwrap();
        assert_eq!(walks(&rig), 3, "{c}");
        assert_eq!(rig.mmu.tlb_stats().evictions, 1, "{c}");
        // The round-robin victim was slot 0 (page 0): page 2 took its place.
        let held: Vec<u64> = rig
            .mmu
            .tlb_entries()
            .iter()
            .map(|e| e.iova - va.0)
            .collect();
        assert_eq!(held, vec![2 * P, P], "{c}");
        // Page 1 again: a hit, no walk. Page 0 again: a walk.
        let mut b = [0u8; 8];
        rig.sim.dma_read(&vm, Iova(va.0 + P), &mut b).unwrap();
        assert_eq!(walks(&rig), 3, "{c}");
        rig.sim.dma_read(&vm, va, &mut b).unwrap();
        assert_eq!(walks(&rig), 4, "{c}");
        // translate() answers from the same TLB.
        let (dma, left) = rig
            .sim
            .translate(&vm, Iova(va.0 + 0x10), Access::Read)
            .unwrap();
        assert_eq!(left, P - 0x10, "{c}");
        assert_eq!(
            Some(dma),
            vm.translate(Iova(va.0 + 0x10)).map(|t| t.0),
            "{c}"
        );
    }
}

/// The device's copy engine between two bindings of one VM, at offsets that cross pages on
/// both sides, reads what the CPU wrote to the source and writes only the destination window.
#[test]
fn dma_copy_between_two_bindings() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let vm = rig.vm();
        let (src, dst) = (rig.bo(4), rig.bo(4));
        let size = src.size() as usize;
        let src_data = pattern(size, 1);
        let dst_data = pattern(size, 2);
        cpu_write(&src, 0, &src_data);
        cpu_write(&dst, 0, &dst_data);
        // The IPU format cannot make a page read-only (no permission bits).
        let src_prot = if c.is_ipu() { Prot::RW } else { Prot::RO };
        let s = vm
            .bind(&src, 0, src.size(), Placement::Anywhere, src_prot)
            .unwrap();
        let d = vm
            .bind(&dst, 0, dst.size(), Placement::Anywhere, Prot::RW)
            .unwrap();
        let (from, to, len) = (P - 300, 2 * P + 77, P + 1000);
        rig.sim
            .dma_copy(&vm, Iova(s.0 + from), Iova(d.0 + to), len)
            .unwrap();
        let mut want = dst_data.clone();
        want[to as usize..(to + len) as usize]
            .copy_from_slice(&src_data[from as usize..(from + len) as usize]);
        assert_eq!(cpu_read(&dst, 0, size), want, "{c}");
        assert_eq!(cpu_read(&src, 0, size), src_data, "{c}: source unchanged");
        let st = rig.sim.stats();
        assert_eq!((st.bytes_read, st.bytes_written), (len, len), "{c}");

        // From an unbound source: ARM faults on the read and writes nothing; the IPU reads
        // the dummy page and copies it, reporting the dummy-page access.
        let hole = Iova(d.0 + dst.size() + 0x40_0000);
        let before = cpu_read(&dst, 0, size);
        let f = rig
            .sim
            .dma_copy(&vm, hole, d, 64)
            .expect_err("unbound source");
        assert_eq!(f.iova, hole, "{c}");
        if c.is_ipu() {
            assert_eq!(f.reason, FaultReason::DummyPage, "{c}");
            let dummy = rig.bus_bytes(vm.context().dummy_page.unwrap(), 64);
            let mut want = before.clone();
            want[..64].copy_from_slice(&dummy);
            assert_eq!(cpu_read(&dst, 0, size), want, "{c}");
        } else {
            assert!(matches!(f.reason, FaultReason::Translation { .. }), "{c}");
            assert_eq!(cpu_read(&dst, 0, size), before, "{c}: nothing written");
        }
        assert_eq!(rig.mmu.take_faults().len(), 1, "{c}");
        assert!(
            rig.mmu.faults().is_empty(),
            "{c}: take_faults clears the log"
        );
    });
}

/// Break-before-make, as the device sees it. A 2 MiB block is walked (and cached, then evicted
/// from a one-entry TLB); an unbind of one page inside it replaces the block with a table. With
/// the driver's invalidations reaching the device, as `Vm::unbind` issues them (clear, invalidate,
/// then link), the device walks the new table cleanly. With the invalidations lost, the block may
/// still be in the TLB when the device walks the table: the model reports a TLB conflict.
#[test]
fn a_block_replaced_without_invalidation_is_a_tlb_conflict() {
    const BLOCK: u64 = 0x20_0000;
    for lost in [false, true] {
        let mut opts = RigOptions::new(Combo {
            mmu: MmuFormat::ArmLpae4k,
            coherent: true,
            iommu: false,
        });
        opts.mask = DmaMask::bits(48);
        opts.tlb_entries = 1;
        opts.skip_invalidation = lost;
        let rig = Rig::with(opts);
        let bo = Bo::new(&rig.phys, 2 * BLOCK, BoFlags::default().contiguous()).unwrap();
        // The BO's first 2 MiB-aligned bus address (direct DMA: bus address = physical).
        let off = bo.pages()[0].0.next_multiple_of(BLOCK) - bo.pages()[0].0;
        let vm = rig.vm();
        let iova = vm
            .bind(&bo, off, BLOCK, Placement::Anywhere, Prot::RW)
            .unwrap();
        assert_eq!(vm.mapped_runs()[0].page_size, BLOCK, "bound as one block");
        let other = vm.bind(&bo, 0, P, Placement::Anywhere, Prot::RW).unwrap();
        let mut buf = [0u8; 8];
        rig.sim.dma_read(&vm, iova, &mut buf).unwrap();
        rig.sim.dma_read(&vm, other, &mut buf).unwrap();
        assert_eq!(vm.unbind(Iova(iova.0 + P), P), Ok(P));
        let r = rig.sim.dma_read(&vm, Iova(iova.0 + 2 * P), &mut buf);
        if lost {
            let f = r.unwrap_err();
            assert_eq!(
                f.reason,
                FaultReason::TlbConflict {
                    block: iova,
                    size: BLOCK
                }
            );
            assert!(rig.mmu.faults().contains(&f));
        } else {
            r.unwrap();
            assert!(rig.mmu.faults().is_empty());
        }
    }
}

/// Walk caches. The device walks a page through the L0..L2 table descriptors, which its walk
/// cache keeps; unbinding the page empties and frees the L1..L3 tables, so the VM asks for a
/// walk-cache invalidation of their span, and the device's next walk faults at the cleared root
/// entry. A driver that issues only leaf invalidations leaves the cached descriptors: the device
/// walks through the freed tables, and its fault comes from the freed L3 table.
#[test]
fn a_missing_walk_invalidation_walks_through_freed_tables() {
    for leaf_only in [false, true] {
        let mut opts = RigOptions::new(Combo {
            mmu: MmuFormat::ArmLpae4k,
            coherent: true,
            iommu: false,
        });
        opts.leaf_only_invalidation = leaf_only;
        let rig = Rig::with(opts);
        let vm = rig.vm();
        let bo = rig.bo(1);
        let iova = vm
            .bind(&bo, 0, P, Placement::Fixed(Iova(0x4000_0000)), Prot::RW)
            .unwrap();
        let mut buf = [0u8; 8];
        rig.sim.dma_read(&vm, iova, &mut buf).unwrap();
        let cached: Vec<u64> = rig
            .mmu
            .walk_cache_entries()
            .iter()
            .map(|w| w.size)
            .collect();
        assert_eq!(
            cached,
            vec![1 << 39, 1 << 30, 1 << 21],
            "L0, L1, L2 descriptors"
        );
        let freed = vm.pt_stats().tables_freed;
        assert_eq!(vm.unbind(iova, P), Ok(P));
        assert_eq!(vm.pt_stats().tables_freed - freed, 3);
        let f = rig.sim.dma_read(&vm, iova, &mut buf).unwrap_err();
        let level = if leaf_only { 3 } else { 0 };
        assert_eq!(
            f.reason,
            FaultReason::Translation { level },
            "leaf only: {leaf_only}"
        );
        assert_eq!(rig.mmu.walk_cache_entries().is_empty(), !leaf_only);
    }
}
