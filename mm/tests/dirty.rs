//! Dirty tracking through the simulated device: the model's MMU performs the hardware update of
//! the dirty state (SMMUv3 HTTU with CD.TCR.HD) in table memory when it writes through a
//! writable-clean leaf, and caches the writable-dirty translation in its TLB; the VM reports
//! what the device wrote ([`Vm::read_and_clear_dirty`]) and invalidates the TLB for what it
//! cleared. Everything is asserted on what the device did, through the device.

mod common;

use common::{Combo, Rig, RigOptions};
use devmmu_mm::bo::{Bo, BoFlags};
use devmmu_mm::device::MmuFormat;
use devmmu_mm::dma::DmaMask;
use devmmu_mm::model::FaultReason;
use devmmu_mm::vm::{Placement, Vm};
use devmmu_mm::MmError;
use devmmu_pagetable::{Error, Iova, Prot};

const P: u64 = 4096;
const BLOCK: u64 = 0x20_0000;

fn arm(coherent: bool) -> Combo {
    Combo {
        mmu: MmuFormat::ArmLpae4k,
        coherent,
        iommu: false,
    }
}

/// A coherent ARM LPAE device (48-bit mask, so blocks are possible), its TLB invalidations
/// dropped if `lost`.
fn rig(lost: bool) -> Rig {
    let mut opts = RigOptions::new(arm(true));
    opts.mask = DmaMask::bits(48);
    opts.skip_invalidation = lost;
    Rig::with(opts)
}

/// What `vm` reports dirty over its whole VA space, clearing (and invalidating) if `clear`.
fn dirty(vm: &Vm, clear: bool) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    vm.read_and_clear_dirty(Iova(0), 1 << 48, clear, |i, s| out.push((i.0, s)))
        .unwrap();
    out
}

/// A VM with dirty tracking: 16 RW pages, one read-only page, and one RW 2 MiB block. Returns
/// (vm, pages, ro page, block) IOVAs.
fn tracked(rig: &Rig) -> (Vm, u64, u64, u64) {
    let vm = rig.vm();
    vm.enable_dirty_tracking().unwrap();
    assert!(vm.dirty_tracking());
    let bo = rig.bo(17);
    let pages = vm
        .bind(&bo, 0, 16 * P, Placement::Anywhere, Prot::RW)
        .unwrap();
    let ro = vm
        .bind(&bo, 16 * P, P, Placement::Anywhere, Prot::READ)
        .unwrap();
    let big = Bo::new(&rig.phys, 2 * BLOCK, BoFlags::default().contiguous()).unwrap();
    let off = big.pages()[0].0.next_multiple_of(BLOCK) - big.pages()[0].0;
    let blk = vm
        .bind(&big, off, BLOCK, Placement::Anywhere, Prot::RW)
        .unwrap();
    assert!(
        vm.mapped_runs()
            .iter()
            .any(|r| r.iova == blk && r.page_size == BLOCK),
        "bound as one block"
    );
    (vm, pages.0, ro.0, blk.0)
}

#[test]
fn the_device_marks_what_it_writes_and_the_vm_reports_exactly_that() {
    let rig = rig(false);
    let (vm, pages, ro, blk) = tracked(&rig);
    assert_eq!(dirty(&vm, true), vec![], "bound clean");
    // Reads never dirty anything.
    let mut buf = [0u8; 16];
    rig.sim
        .dma_read(&vm, Iova(pages + 2 * P), &mut buf)
        .unwrap();
    rig.sim.dma_read(&vm, Iova(blk), &mut buf).unwrap();
    assert_eq!(dirty(&vm, true), vec![]);

    for at in [
        pages + P,
        pages + 5 * P + 100,
        pages + 6 * P,
        blk + 0x1234,
        blk + 0x1f_f000,
    ] {
        rig.sim.dma_write(&vm, Iova(at), b"dirty").unwrap();
    }
    // Five writes, four leaves set dirty in table memory: the block's second write went
    // through the writable-dirty translation its TLB cached.
    assert_eq!(rig.sim.stats().dirty_updates, 4);
    let want = vec![
        (pages + P, P),
        (pages + 5 * P, P),
        (pages + 6 * P, P),
        (blk, BLOCK),
    ];
    assert_eq!(dirty(&vm, true), want);
    assert_eq!(dirty(&vm, true), vec![], "cleared");

    // New writes after the clear are recorded (the clear invalidated their TLB entries).
    rig.sim
        .dma_write(&vm, Iova(pages + 5 * P), b"again")
        .unwrap();
    rig.sim.dma_write(&vm, Iova(pages + 9 * P), b"new").unwrap();
    let want = vec![(pages + 5 * P, P), (pages + 9 * P, P)];
    assert_eq!(dirty(&vm, false), want, "no-clear reports");
    assert_eq!(dirty(&vm, false), want, "and reports again");
    assert_eq!(dirty(&vm, true), want);
    assert_eq!(dirty(&vm, true), vec![]);

    // A write across two pages dirties both; a write to the read-only page faults and dirties
    // nothing.
    rig.sim
        .dma_write(&vm, Iova(pages + 11 * P - 2), b"span")
        .unwrap();
    let f = rig.sim.dma_write(&vm, Iova(ro), b"no").unwrap_err();
    assert_eq!(f.reason, FaultReason::Permission);
    assert_eq!(
        dirty(&vm, true),
        vec![(pages + 10 * P, P), (pages + 11 * P, P)]
    );
    // The data landed.
    let mut back = [0u8; 4];
    rig.sim
        .dma_read(&vm, Iova(pages + 11 * P - 2), &mut back)
        .unwrap();
    assert_eq!(&back, b"span");
}

/// Writes page 1, clears, writes page 1 again: (page 1's IOVA, what the next read reports).
fn second_write(lost: bool) -> (u64, Vec<(u64, u64)>) {
    let rig = rig(lost);
    let (vm, pages, _, _) = tracked(&rig);
    rig.sim.dma_write(&vm, Iova(pages + P), b"one").unwrap();
    assert_eq!(dirty(&vm, true), vec![(pages + P, P)]);
    rig.sim.dma_write(&vm, Iova(pages + P), b"two").unwrap();
    (pages + P, dirty(&vm, true))
}

#[test]
fn with_the_tlb_invalidation_the_second_write_is_recorded() {
    let (page, got) = second_write(false);
    assert_eq!(got, vec![(page, P)]);
}

/// The same with the driver's TLB invalidations dropped: the device's TLB keeps the
/// writable-dirty translation of page 1, its second write does not touch the table, and the VM
/// never hears of it. Asserts what the test above asserts, and must fail.
#[test]
#[should_panic(expected = "second write lost")]
fn without_the_tlb_invalidation_the_second_write_is_lost() {
    let (page, got) = second_write(true);
    assert_eq!(got, vec![(page, P)], "second write lost");
}

#[test]
fn refusals_leave_the_vm_as_it_was() {
    // The Intel IPU format has no dirty state.
    let ipu = Rig::new(Combo {
        mmu: MmuFormat::Ipu,
        coherent: true,
        iommu: false,
    });
    let vm = ipu.vm();
    assert_eq!(
        vm.enable_dirty_tracking(),
        Err(MmError::PageTable(Error::DirtyTrackingUnsupported {
            format: "ipu"
        }))
    );
    assert!(!vm.dirty_tracking());
    // A non-coherent walker.
    let nc = Rig::new(arm(false));
    let vm = nc.vm();
    assert_eq!(
        vm.enable_dirty_tracking(),
        Err(MmError::PageTable(Error::DirtyTrackingNeedsCoherentWalk))
    );
    assert!(!vm.dirty_tracking());
    // Something bound already: it keeps working, untracked.
    let rig = rig(false);
    let vm = rig.vm();
    let bo = rig.bo(1);
    let at = vm.bind(&bo, 0, P, Placement::Anywhere, Prot::RW).unwrap();
    assert_eq!(
        vm.enable_dirty_tracking(),
        Err(MmError::PageTable(Error::AlreadyMapped { iova: at }))
    );
    assert_eq!(
        vm.read_and_clear_dirty(at, P, true, |_, _| panic!("reported")),
        Err(MmError::PageTable(Error::DirtyTrackingOff))
    );
    rig.sim.dma_write(&vm, at, b"fine").unwrap();
    assert_eq!(rig.sim.stats().dirty_updates, 0);
    // Bad ranges on a tracking VM with a dirty page: refused, and the page is still dirty.
    let (vm, pages, _, _) = tracked(&rig);
    rig.sim.dma_write(&vm, Iova(pages), b"x").unwrap();
    for (iova, size) in [
        (pages + 1, P),
        (pages, 0),
        (pages, P + 1),
        ((1 << 48) - P, 2 * P),
    ] {
        assert!(matches!(
            vm.read_and_clear_dirty(Iova(iova), size, true, |_, _| panic!("reported")),
            Err(MmError::PageTable(_))
        ));
    }
    assert_eq!(dirty(&vm, true), vec![(pages, P)]);
}

/// Behind a system IOMMU the table pages are reached through it too: the hardware update of a
/// leaf goes to the bus address of the entry, translated like the walk's reads.
#[test]
fn behind_a_system_iommu_the_update_reaches_the_table() {
    let mut c = arm(true);
    c.iommu = true;
    let rig = Rig::new(c);
    let vm = rig.vm();
    vm.enable_dirty_tracking().unwrap();
    let bo = rig.bo(8);
    let at = vm
        .bind(&bo, 0, 8 * P, Placement::Anywhere, Prot::RW)
        .unwrap()
        .0;
    rig.sim
        .dma_write(&vm, Iova(at + 3 * P), b"through")
        .unwrap();
    rig.sim.dma_write(&vm, Iova(at + 7 * P), b"iommu").unwrap();
    assert_eq!(rig.sim.stats().dirty_updates, 2);
    assert_eq!(dirty(&vm, true), vec![(at + 3 * P, P), (at + 7 * P, P)]);
    assert_eq!(dirty(&vm, true), vec![]);
    assert!(rig.mmu.faults().is_empty());
}
