//! Dirty tracking (`enable_dirty_tracking`, `read_and_clear_dirty`), proven where the data is:
//! in the table memory a device walks and updates, and in what a device with a TLB records.
//!
//! The device here is software: [`Device`] walks the tables by bus address with
//! [`walk_with`] (reading the CPU copy: dirty tracking needs a coherent walker), keeps a TLB of
//! leaves, and on a write through a writable-clean leaf sets it writable-dirty in table memory
//! with an atomic read-modify-write, as an SMMUv3 with HTTU (CD.TCR.HD) does, and caches the
//! writable-dirty state: a write that hits such a TLB entry does not touch the table.
//!
//! Encoding vectors are worked out by hand from io-pgtable-arm.c (`ARM_LPAE_PTE_DBM` bit 51,
//! `ARM_LPAE_PTE_AP_RDONLY` bit 7, `ARM_LPAE_PTE_AP_WR_CLEAN_MASK`, `iopte_writeable_dirty`)
//! and the bit positions listed in vectors.rs: type \[1:0\] (page 0b11, block 0b01), AttrIndx
//! NC 0, AP_UNPRIV 0x40, AP_RDONLY 0x80, SH_OS 0x200, AF 0x400, nG 0x800, DBM
//! 0x0008_0000_0000_0000.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use common::SimAlloc;
use devmmu_pagetable::fmt::arm_lpae::{PTE_AP_RDONLY, PTE_AP_WR_CLEAN_MASK, PTE_DBM};
use devmmu_pagetable::*;
use proptest::prelude::*;

type Arm = ArmLpae4k;
const P: u64 = 0x1000;
const BLOCK: u64 = 0x20_0000;

/// Pages at 1 MiB .. 1 MiB + 16 pages (RW), one read-only page after them, and a 2 MiB RW
/// block at 1 GiB.
const PAGES: u64 = 0x10_0000;
const RO_PAGE: u64 = PAGES + 16 * P;
const BLK: u64 = 0x4000_0000;

fn table(coherent: bool) -> (SimAlloc, PageTable<Arm, SimAlloc>) {
    let sim = SimAlloc::new();
    let pt = PageTable::new(
        sim.clone(),
        PageTableConfig {
            coherent_walk: coherent,
        },
    )
    .unwrap();
    (sim, pt)
}

/// A tracking table with [`PAGES`], [`RO_PAGE`] and [`BLK`] mapped.
fn tracked() -> (SimAlloc, PageTable<Arm, SimAlloc>) {
    let (sim, mut pt) = table(true);
    pt.enable_dirty_tracking().unwrap();
    let mut g = Gather::new();
    pt.map(Iova(PAGES), DmaAddr(0x8000_0000), 16 * P, Prot::RW, &mut g)
        .unwrap();
    pt.map(Iova(RO_PAGE), DmaAddr(0x8010_0000), P, Prot::READ, &mut g)
        .unwrap();
    pt.map(Iova(BLK), DmaAddr(0x8040_0000), BLOCK, Prot::RW, &mut g)
        .unwrap();
    assert!(g.is_empty(), "a map of ARM LPAE needs no invalidation");
    (sim, pt)
}

/// A [`TableReader`] that remembers the last entry it read: after a successful walk, the leaf.
struct Recorder<'a> {
    sim: &'a SimAlloc,
    last: Cell<(DmaAddr, u64)>,
}

impl TableReader for Recorder<'_> {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let v = self.sim.read_raw(addr, bytes, false)?;
        self.last.set((addr, v));
        Some(v)
    }
}

/// The leaf entry covering `iova`: (its bus address, its raw value), read by a walk.
fn leaf_of(sim: &SimAlloc, pt: &PageTable<Arm, SimAlloc>, iova: u64) -> (DmaAddr, u64) {
    let r = Recorder {
        sim,
        last: Cell::new((DmaAddr(0), 0)),
    };
    walk_with::<Arm, _>(&r, pt.root(), Iova(iova), pt.address_sizes()).expect("mapped");
    r.last.get()
}

/// Why a device write did not complete.
#[derive(Debug, PartialEq, Eq)]
enum DevFault {
    Walk(WalkFault),
    Permission,
}

/// The software device: a TLB of leaves (first IOVA -> size, writable without an update of
/// the table), and a count of the table updates it made.
#[derive(Default)]
struct Device {
    tlb: BTreeMap<u64, (u64, bool)>,
    updates: u64,
}

impl Device {
    fn tlb_lookup(&self, iova: u64) -> Option<(u64, u64, bool)> {
        let (&s, &(size, w)) = self.tlb.range(..=iova).next_back()?;
        (iova < s + size).then_some((s, size, w))
    }

    /// A one-byte write at `iova`, as an SMMU with HTTU does it: a TLB hit that is writable
    /// (writable-dirty cached) writes without touching the table; otherwise a walk, and a
    /// writable-clean leaf is set writable-dirty in memory (atomically) before the write.
    fn write(
        &mut self,
        sim: &SimAlloc,
        pt: &PageTable<Arm, SimAlloc>,
        iova: u64,
    ) -> Result<(), DevFault> {
        if let Some((_, _, true)) = self.tlb_lookup(iova) {
            return Ok(());
        }
        let r = Recorder {
            sim,
            last: Cell::new((DmaAddr(0), 0)),
        };
        let t = walk_with::<Arm, _>(&r, pt.root(), Iova(iova), pt.address_sizes())
            .map_err(DevFault::Walk)?;
        let (addr, raw) = r.last.get();
        let writable = if Arm::is_writable_clean(raw) {
            // The hardware update: AP[2] cleared only if the entry is still writable-clean.
            let old = sim
                .device_update_u64(addr, |v| {
                    Arm::is_writable_clean(v).then(|| Arm::with_dirty_set(v))
                })
                .expect("leaf in a live table");
            self.updates += 1;
            Arm::is_writable_clean(old) || Arm::is_dirty(old)
        } else {
            t.prot.contains(Prot::WRITE)
        };
        self.tlb.insert(t.leaf_iova.0, (t.leaf_size, writable));
        if writable {
            Ok(())
        } else {
            Err(DevFault::Permission)
        }
    }

    /// The TLB invalidation of `[iova, iova + size)`.
    fn invalidate(&mut self, iova: Iova, size: u64) {
        let end = iova.0 + size;
        self.tlb
            .retain(|&s, &mut (sz, _)| !(s < end && iova.0 < s + sz));
    }
}

/// `read_and_clear_dirty` over the whole IOVA space, completing the gather through `dev`'s TLB
/// invalidation (or not, if `dev` is `None`). Returns the leaves reported.
fn read_dirty(
    pt: &mut PageTable<Arm, SimAlloc>,
    clear: bool,
    dev: Option<&mut Device>,
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut g = Gather::new();
    pt.read_and_clear_dirty(Iova(0), 1 << 48, clear, &mut g, |i, s| out.push((i.0, s)))
        .unwrap();
    match dev {
        Some(d) => pt.iotlb_sync(&mut g, |i, s| d.invalidate(i, s)),
        None => pt.iotlb_sync(&mut g, |_, _| {}),
    }
    out
}

#[test]
fn dirty_bits_are_the_kernels() {
    // ARM_LPAE_PTE_DBM = 1 << 51; ARM_LPAE_PTE_AP_RDONLY = 2 << 6 = 1 << 7;
    // ARM_LPAE_PTE_AP_WR_CLEAN_MASK = AP_RDONLY | DBM.
    assert_eq!(PTE_DBM, 0x0008_0000_0000_0000);
    assert_eq!(PTE_AP_RDONLY, 0x80);
    assert_eq!(PTE_AP_WR_CLEAN_MASK, 0x0008_0000_0000_0080);
    const { assert!(Arm::DIRTY_TRACKING && ArmLpae16k::DIRTY_TRACKING && ArmLpae64k::DIRTY_TRACKING) };
    let without = [
        Ipu::DIRTY_TRACKING,
        ArmLpaeS2::DIRTY_TRACKING,
        ArmV7s::DIRTY_TRACKING,
        AppleDart1::DIRTY_TRACKING,
        AppleDart2::DIRTY_TRACKING,
        RiscvSv39::DIRTY_TRACKING,
        RiscvSv48::DIRTY_TRACKING,
    ];
    assert_eq!(without, [false; 7]);

    // A 4 KiB RW page of normal non-cacheable memory at bus 0x4000_0000, stage 1:
    // nG 0x800 | AF 0x400 | SH_OS 0x200 | AP_UNPRIV 0x40 | page 0b11 = 0xe43.
    let rw = 0x0000_0000_4000_0e43u64;
    // Writable-clean: + DBM + AP_RDONLY (0x80) = 0x0008_0000_4000_0ec3.
    let clean = 0x0008_0000_4000_0ec3u64;
    // Writable-dirty: DBM, AP_RDONLY clear = 0x0008_0000_4000_0e43.
    let dirty = 0x0008_0000_4000_0e43u64;
    // Read-only (IOMMU_READ only): AP_RDONLY, no DBM = 0x0000_0000_4000_0ec3.
    let ro = 0x0000_0000_4000_0ec3u64;
    for f in [
        <Arm as Format>::with_dirty_clear,
        <ArmLpae16k as Format>::with_dirty_clear,
        <ArmLpae64k as Format>::with_dirty_clear,
    ] {
        assert_eq!(f(rw), clean);
        assert_eq!(f(dirty), clean);
    }
    assert_eq!(Arm::with_dirty_set(clean), dirty);
    assert_eq!(ArmLpae16k::with_dirty_set(clean), dirty);
    assert_eq!(ArmLpae64k::with_dirty_set(clean), dirty);
    // iopte_writeable_dirty: (pte & WR_CLEAN_MASK) == DBM.
    assert!(Arm::is_dirty(dirty));
    assert!(!Arm::is_dirty(clean) && !Arm::is_dirty(ro) && !Arm::is_dirty(rw) && !Arm::is_dirty(0));
    assert!(Arm::is_writable_clean(clean));
    assert!(!Arm::is_writable_clean(dirty) && !Arm::is_writable_clean(ro));
    // The walker grants writes through a writable-clean leaf (the hardware updates it first).
    assert_eq!(
        Arm::decode(3, clean),
        Entry::Leaf(DmaAddr(0x4000_0000), Prot::RW)
    );
    assert_eq!(
        Arm::decode(3, dirty),
        Entry::Leaf(DmaAddr(0x4000_0000), Prot::RW)
    );
    assert_eq!(
        Arm::decode(3, ro),
        Entry::Leaf(DmaAddr(0x4000_0000), Prot::READ)
    );
    // Formats without dirty tracking: nothing is ever dirty, nothing is changed.
    assert!(!Ipu::is_dirty(0x0008_0000) && !ArmLpaeS2::is_dirty(u64::MAX));
    assert_eq!(ArmV7s::with_dirty_set(0x1234_5003), 0x1234_5003);
    assert_eq!(
        ArmLpaeS2::with_dirty_clear(0x4000_04c3 | PTE_DBM),
        0x4000_04c3 | PTE_DBM
    );
}

#[test]
fn tracked_maps_write_writable_clean_leaves() {
    let (sim, pt) = tracked();
    assert!(pt.dirty_tracking());
    // Page 0 of PAGES: bus 0x8000_0000, RW, writable-clean (see dirty_bits_are_the_kernels).
    assert_eq!(leaf_of(&sim, &pt, PAGES).1, 0x0008_0000_8000_0ec3);
    assert_eq!(leaf_of(&sim, &pt, PAGES + 15 * P).1, 0x0008_0000_8000_fec3);
    // The read-only page: AP_RDONLY, no DBM.
    assert_eq!(leaf_of(&sim, &pt, RO_PAGE).1, 0x0000_0000_8010_0ec3);
    // The 2 MiB block: block type 0b01, so 0xec1 with DBM.
    assert_eq!(leaf_of(&sim, &pt, BLK + 0x1234).1, 0x0008_0000_8040_0ec1);
    // What the table reports: writable mappings stay RW.
    assert_eq!(
        pt.translate(Iova(PAGES + 0x10)),
        Some((DmaAddr(0x8000_0010), Prot::RW))
    );
    // Without tracking, the same map writes the kernel's plain encoding.
    let (sim2, mut plain) = table(true);
    plain
        .map(
            Iova(PAGES),
            DmaAddr(0x8000_0000),
            P,
            Prot::RW,
            &mut Gather::new(),
        )
        .unwrap();
    assert_eq!(leaf_of(&sim2, &plain, PAGES).1, 0x0000_0000_8000_0e43);
    // Turned on after a single-page map of the same `prot` (whose attributes the table keeps
    // for the next one), tracking still gives the next single-page map writable-clean.
    let mut g = Gather::new();
    plain.set_free_empty_tables(false);
    plain
        .map(
            Iova(PAGES + 2 * P),
            DmaAddr(0x8000_2000),
            P,
            Prot::RW,
            &mut g,
        )
        .unwrap();
    plain.unmap(Iova(PAGES), 3 * P, &mut g).unwrap();
    plain.iotlb_sync(&mut g, |_, _| {});
    plain.enable_dirty_tracking().unwrap();
    plain
        .map(Iova(PAGES + P), DmaAddr(0x8000_1000), P, Prot::RW, &mut g)
        .unwrap();
    assert_eq!(leaf_of(&sim2, &plain, PAGES + P).1, 0x0008_0000_8000_1ec3);
}

#[test]
fn reports_exactly_the_leaves_written_then_none_then_the_new_ones() {
    let (sim, mut pt) = tracked();
    let mut dev = Device::default();
    assert_eq!(
        read_dirty(&mut pt, true, Some(&mut dev)),
        vec![],
        "mapped clean"
    );

    for iova in [
        PAGES + P,
        PAGES + 5 * P + 8,
        PAGES + 6 * P,
        BLK + 0x1234,
        BLK + 0x1f_f000,
    ] {
        dev.write(&sim, &pt, iova).unwrap();
    }
    // Two writes to the block: one table update (the second hits the cached dirty state).
    assert_eq!(dev.updates, 4);
    // The dirty state is in table memory: page 1 is writable-dirty now.
    assert_eq!(leaf_of(&sim, &pt, PAGES + P).1, 0x0008_0000_8000_1e43);
    let want = vec![
        (PAGES + P, P),
        (PAGES + 5 * P, P),
        (PAGES + 6 * P, P),
        (BLK, BLOCK),
    ];
    assert_eq!(read_dirty(&mut pt, true, Some(&mut dev)), want);
    // Cleared in memory: writable-clean again.
    assert_eq!(leaf_of(&sim, &pt, PAGES + P).1, 0x0008_0000_8000_1ec3);
    assert_eq!(read_dirty(&mut pt, true, Some(&mut dev)), vec![]);

    // More writes: page 5 again (its TLB entry was invalidated, so it is recorded), page 9.
    dev.write(&sim, &pt, PAGES + 5 * P).unwrap();
    dev.write(&sim, &pt, PAGES + 9 * P).unwrap();
    assert_eq!(
        read_dirty(&mut pt, false, Some(&mut dev)),
        vec![(PAGES + 5 * P, P), (PAGES + 9 * P, P)],
        "no-clear reports"
    );
    assert_eq!(
        read_dirty(&mut pt, false, Some(&mut dev)),
        vec![(PAGES + 5 * P, P), (PAGES + 9 * P, P)],
        "and reports again"
    );
    assert_eq!(
        leaf_of(&sim, &pt, PAGES + 9 * P).1,
        0x0008_0000_8000_9e43,
        "not cleared"
    );
    assert_eq!(read_dirty(&mut pt, true, Some(&mut dev)).len(), 2);
    assert_eq!(read_dirty(&mut pt, true, Some(&mut dev)), vec![]);

    // The read-only page is never writable, never dirty.
    assert_eq!(dev.write(&sim, &pt, RO_PAGE), Err(DevFault::Permission));
    assert_eq!(read_dirty(&mut pt, true, Some(&mut dev)), vec![]);
}

#[test]
fn a_range_reports_its_leaves_and_a_cut_block_whole() {
    let (sim, mut pt) = tracked();
    let mut dev = Device::default();
    for iova in [PAGES, PAGES + 3 * P, PAGES + 4 * P, BLK + 0x10_0000] {
        dev.write(&sim, &pt, iova).unwrap();
    }
    let mut got = Vec::new();
    let mut g = Gather::new();
    pt.read_and_clear_dirty(Iova(PAGES + 3 * P), P, true, &mut g, |i, s| {
        got.push((i.0, s))
    })
    .unwrap();
    assert_eq!(got, vec![(PAGES + 3 * P, P)]);
    assert_eq!(
        g.ranges().collect::<Vec<_>>(),
        vec![(Iova(PAGES + 3 * P), P)]
    );
    pt.iotlb_sync(&mut g, |i, s| dev.invalidate(i, s));
    // A range inside the block reports (and clears) the whole block.
    got.clear();
    pt.read_and_clear_dirty(Iova(BLK + 0x1000), 0x2000, true, &mut g, |i, s| {
        got.push((i.0, s))
    })
    .unwrap();
    assert_eq!(got, vec![(BLK, BLOCK)]);
    assert_eq!(g.ranges().collect::<Vec<_>>(), vec![(Iova(BLK), BLOCK)]);
    pt.iotlb_sync(&mut g, |i, s| dev.invalidate(i, s));
    // Pages 0 and 4 were outside both ranges: still dirty.
    assert_eq!(
        read_dirty(&mut pt, true, Some(&mut dev)),
        vec![(PAGES, P), (PAGES + 4 * P, P)]
    );
}

/// Device writes page 1, the driver clears, (invalidates the TLB or not), the device writes page
/// 1 again: returns what the next read reports.
fn second_write_reported(invalidate: bool) -> Vec<(u64, u64)> {
    let (sim, mut pt) = tracked();
    let mut dev = Device::default();
    dev.write(&sim, &pt, PAGES + P).unwrap();
    let first = read_dirty(&mut pt, true, invalidate.then_some(&mut dev));
    assert_eq!(first, vec![(PAGES + P, P)]);
    dev.write(&sim, &pt, PAGES + P).unwrap();
    read_dirty(&mut pt, true, Some(&mut dev))
}

#[test]
fn after_clearing_the_tlb_invalidation_makes_the_next_write_recorded() {
    assert_eq!(second_write_reported(true), vec![(PAGES + P, P)]);
}

/// The same test with the invalidation after the clear removed: the device's TLB still holds
/// the writable-dirty translation, its next write does not touch the table, and the write is
/// lost. This test exists to fail: it asserts what the one above asserts.
#[test]
#[should_panic(expected = "second write lost")]
fn without_the_tlb_invalidation_the_next_write_is_lost() {
    let got = second_write_reported(false);
    assert_eq!(got, vec![(PAGES + P, P)], "second write lost");
}

#[test]
fn a_split_block_keeps_its_writes_reported() {
    let (sim, mut pt) = tracked();
    let mut dev = Device::default();
    let mut g = Gather::new();
    // Split the (clean) block by unmapping one page of it: the rest is reported dirty, since a
    // write the device makes while the block is split cannot be told per page.
    let n = pt
        .unmap_split(Iova(BLK + 0x10_0000), P, &mut g, |i, s| {
            dev.invalidate(i, s)
        })
        .unwrap();
    assert_eq!(n, P);
    pt.iotlb_sync(&mut g, |i, s| dev.invalidate(i, s));
    let got = read_dirty(&mut pt, true, Some(&mut dev));
    assert_eq!(got.len(), 511);
    assert!(got
        .iter()
        .all(|&(i, s)| s == P && (BLK..BLK + BLOCK).contains(&i)));
    assert!(!got.contains(&(BLK + 0x10_0000, P)));
    // Then the pages track writes one by one.
    dev.write(&sim, &pt, BLK + 0x3000).unwrap();
    assert_eq!(
        read_dirty(&mut pt, true, Some(&mut dev)),
        vec![(BLK + 0x3000, P)]
    );
}

/// Every byte of every page of `sim` (the table memory), to prove a refused call wrote nothing.
fn memory(sim: &SimAlloc) -> Vec<(DmaAddr, Vec<u8>)> {
    sim.live_addrs()
        .into_iter()
        .map(|a| (a, sim.cpu_bytes(a).unwrap()))
        .collect()
}

#[test]
fn refusals_change_nothing() {
    // Formats without dirty state.
    let mut ipu = PageTable::<Ipu, _>::new(SimAlloc::new(), PageTableConfig::default()).unwrap();
    assert_eq!(
        ipu.enable_dirty_tracking(),
        Err(Error::DirtyTrackingUnsupported { format: "ipu" })
    );
    assert!(!ipu.dirty_tracking());
    let s2sim = SimAlloc::new();
    let mut s2 = PageTable::<ArmLpaeS2, _>::new(s2sim.clone(), PageTableConfig::default()).unwrap();
    let before = memory(&s2sim);
    assert_eq!(
        s2.enable_dirty_tracking(),
        Err(Error::DirtyTrackingUnsupported {
            format: ArmLpaeS2::NAME
        })
    );
    assert_eq!(memory(&s2sim), before);

    // A non-coherent walker.
    let (_, mut nc) = table(false);
    assert_eq!(
        nc.enable_dirty_tracking(),
        Err(Error::DirtyTrackingNeedsCoherentWalk)
    );
    assert!(!nc.dirty_tracking());

    // Something already mapped.
    let (sim, mut late) = table(true);
    late.map(
        Iova(0x3000_0000),
        DmaAddr(0x8000_0000),
        P,
        Prot::RW,
        &mut Gather::new(),
    )
    .unwrap();
    let before = memory(&sim);
    assert_eq!(
        late.enable_dirty_tracking(),
        Err(Error::AlreadyMapped {
            iova: Iova(0x3000_0000)
        })
    );
    assert!(!late.dirty_tracking());
    assert_eq!(memory(&sim), before);
    // Tracking off.
    let mut g = Gather::new();
    assert_eq!(
        late.read_and_clear_dirty(Iova(0), P, true, &mut g, |_, _| panic!()),
        Err(Error::DirtyTrackingOff)
    );
    assert!(g.is_empty());
    // Enabling twice is fine; on an empty table after an unmap too.
    late.unmap(Iova(0x3000_0000), P, &mut g).unwrap();
    late.iotlb_sync(&mut g, |_, _| {});
    late.enable_dirty_tracking().unwrap();
    late.enable_dirty_tracking().unwrap();

    // Bad ranges and a foreign gather, on a table with dirty leaves: nothing reported,
    // nothing cleared, nothing gathered.
    let (sim, mut pt) = tracked();
    let mut dev = Device::default();
    dev.write(&sim, &pt, PAGES + 2 * P).unwrap();
    let before = memory(&sim);
    let mut g = Gather::new();
    let bad: [(u64, u64, Error); 5] = [
        (
            PAGES + 1,
            P,
            Error::Misaligned {
                what: "iova",
                value: PAGES + 1,
                align: P,
            },
        ),
        (
            PAGES,
            P + 8,
            Error::Misaligned {
                what: "size",
                value: P + 8,
                align: P,
            },
        ),
        (PAGES, 0, Error::ZeroSize),
        (
            (1 << 48) - P,
            2 * P,
            Error::OutOfRange {
                what: "iova",
                value: (1 << 48) + P,
                limit: 1 << 48,
            },
        ),
        (
            u64::MAX - P + 1,
            2 * P,
            Error::Overflow {
                start: u64::MAX - P + 1,
                size: 2 * P,
            },
        ),
    ];
    for (iova, size, e) in bad {
        for clear in [true, false] {
            assert_eq!(
                pt.read_and_clear_dirty(Iova(iova), size, clear, &mut g, |_, _| panic!("reported")),
                Err(e)
            );
        }
    }
    assert!(g.is_empty());
    // A gather holding another table's work.
    let (_, mut other) = table(true);
    let mut foreign = Gather::new();
    other
        .map(Iova(0), DmaAddr(0x9000_0000), P, Prot::RW, &mut foreign)
        .unwrap();
    other.unmap(Iova(0), P, &mut foreign).unwrap();
    let held = foreign.ranges().collect::<Vec<_>>();
    assert_eq!(
        pt.read_and_clear_dirty(Iova(0), 1 << 40, true, &mut foreign, |_, _| panic!(
            "reported"
        )),
        Err(Error::ForeignGather)
    );
    assert_eq!(foreign.ranges().collect::<Vec<_>>(), held);
    assert_eq!(memory(&sim), before);
    other.iotlb_sync(&mut foreign, |_, _| {});
    // The dirty page is still there to report.
    assert_eq!(
        read_dirty(&mut pt, true, Some(&mut dev)),
        vec![(PAGES + 2 * P, P)]
    );
}

/// A random operation of the property test.
#[derive(Debug, Clone)]
enum Op {
    /// Map `pages` pages at page `at` of the window, writable or not.
    Map { at: u64, pages: u64, write: bool },
    /// Unmap `pages` pages at page `at`.
    Unmap { at: u64, pages: u64 },
    /// The device writes page `at`.
    Write { at: u64 },
    /// read_and_clear_dirty over pages `[at, at + pages)`.
    Read { at: u64, pages: u64, clear: bool },
}

/// Pages of the window the property test works in (128 KiB of IOVA from [`PAGES`]): small, so
/// that a page is written, cleared and written again often.
const WINDOW: u64 = 32;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..WINDOW, 1..8u64, any::<bool>()).prop_map(|(at, pages, write)| Op::Map {
            at,
            pages: pages.min(WINDOW - at),
            write
        }),
        (0..WINDOW, 1..8u64).prop_map(|(at, pages)| Op::Unmap {
            at,
            pages: pages.min(WINDOW - at)
        }),
        (0..WINDOW).prop_map(|at| Op::Write { at }),
        (0..WINDOW).prop_map(|at| Op::Write { at }),
        (0..WINDOW, 1..WINDOW, any::<bool>()).prop_map(|(at, pages, clear)| Op::Read {
            at,
            pages: pages.min(WINDOW - at),
            clear
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random maps, unmaps, device writes and reads against a reference model: a map of page ->
    /// (writable, dirty). The table must report exactly the model's dirty pages of the range,
    /// in order, with the TLB invalidated as the gathers say.
    #[test]
    fn matches_a_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        let (sim, mut pt) = table(true);
        pt.enable_dirty_tracking().unwrap();
        let mut dev = Device::default();
        let mut model: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
        let page = |at: u64| PAGES + at * P;
        for op in ops {
            match op {
                Op::Map { at, pages, write } => {
                    let free = (at..at + pages).all(|p| !model.contains_key(&p));
                    let prot = if write { Prot::RW } else { Prot::READ };
                    let mut g = Gather::new();
                    let r = pt.map(Iova(page(at)), DmaAddr(0x8000_0000 + at * P), pages * P, prot, &mut g);
                    prop_assert_eq!(r.is_ok(), free);
                    pt.iotlb_sync(&mut g, |i, s| dev.invalidate(i, s));
                    if free {
                        for p in at..at + pages {
                            model.insert(p, (write, false));
                        }
                    }
                }
                Op::Unmap { at, pages } => {
                    let mut g = Gather::new();
                    pt.unmap(Iova(page(at)), pages * P, &mut g).unwrap();
                    pt.iotlb_sync(&mut g, |i, s| dev.invalidate(i, s));
                    for p in at..at + pages {
                        model.remove(&p);
                    }
                }
                Op::Write { at } => {
                    let r = dev.write(&sim, &pt, page(at));
                    match model.get_mut(&at) {
                        None => prop_assert!(matches!(r, Err(DevFault::Walk(_)))),
                        Some((false, _)) => prop_assert_eq!(r, Err(DevFault::Permission)),
                        Some((true, dirty)) => {
                            prop_assert_eq!(r, Ok(()));
                            *dirty = true;
                        }
                    }
                }
                Op::Read { at, pages, clear } => {
                    let mut got = Vec::new();
                    let mut g = Gather::new();
                    pt.read_and_clear_dirty(Iova(page(at)), pages * P, clear, &mut g, |i, s| got.push((i.0, s))).unwrap();
                    pt.iotlb_sync(&mut g, |i, s| dev.invalidate(i, s));
                    let want: Vec<(u64, u64)> = model
                        .range(at..at + pages)
                        .filter(|(_, &(_, d))| d)
                        .map(|(&p, _)| (page(p), P))
                        .collect();
                    prop_assert_eq!(&got, &want);
                    if clear {
                        for p in at..at + pages {
                            if let Some((_, d)) = model.get_mut(&p) {
                                *d = false;
                            }
                        }
                    }
                }
            }
        }
        // Every writable page is writable-clean or writable-dirty in memory, as the model says.
        let dirty_in_memory: BTreeSet<u64> = model
            .iter()
            .filter(|(_, &(w, _))| w)
            .filter(|(&p, _)| Arm::is_dirty(leaf_of(&sim, &pt, page(p)).1))
            .map(|(&p, _)| p)
            .collect();
        let dirty_in_model: BTreeSet<u64> =
            model.iter().filter(|(_, &(_, d))| d).map(|(&p, _)| p).collect();
        prop_assert_eq!(dirty_in_memory, dirty_in_model);
    }
}

/// The leaf entry covering `iova` of a table of format `F`: (bus address, raw value).
fn leaf_of_f<F: Format>(sim: &SimAlloc, pt: &PageTable<F, SimAlloc>, iova: u64) -> (DmaAddr, u64) {
    let r = Recorder {
        sim,
        last: Cell::new((DmaAddr(0), 0)),
    };
    walk_with::<F, _>(&r, pt.root(), Iova(iova), pt.address_sizes()).expect("mapped");
    r.last.get()
}

/// A table of `F` with dirty tracking and a RW page at 1 MiB -> 0x4000_0000 and a read-only
/// page after it; the device's hardware update of the RW page (as `Device::write` does it).
/// Returns (the RW leaf as mapped, as dirtied, as cleared, the RO leaf).
fn dirty_cycle<F: Format>() -> [u64; 4] {
    let sim = SimAlloc::new();
    let mut pt = PageTable::<F, _>::new(sim.clone(), PageTableConfig::default()).unwrap();
    pt.enable_dirty_tracking().unwrap();
    let mut g = Gather::new();
    pt.map(Iova(PAGES), DmaAddr(0x4000_0000), P, Prot::RW, &mut g)
        .unwrap();
    pt.map(Iova(PAGES + P), DmaAddr(0x4000_1000), P, Prot::READ, &mut g)
        .unwrap();
    let (addr, mapped) = leaf_of_f(&sim, &pt, PAGES);
    let ro = leaf_of_f(&sim, &pt, PAGES + P).1;
    assert!(F::is_writable_clean(F::Pte::from_u64(mapped)));
    assert!(!F::is_writable_clean(F::Pte::from_u64(ro)) && !F::is_dirty(F::Pte::from_u64(ro)));
    sim.device_update_u64(addr, |v| {
        let p = F::Pte::from_u64(v);
        F::is_writable_clean(p).then(|| F::with_dirty_set(p).to_u64())
    })
    .unwrap();
    let dirtied = leaf_of_f(&sim, &pt, PAGES).1;
    let mut got = Vec::new();
    pt.read_and_clear_dirty(Iova(0), 1 << 40, true, &mut g, |i, s| got.push((i.0, s)))
        .unwrap();
    assert_eq!(got, vec![(PAGES, P)], "{}", F::NAME);
    assert_eq!(g.ranges().collect::<Vec<_>>(), vec![(Iova(PAGES), P)]);
    pt.iotlb_sync(&mut g, |_, _| {});
    let cleared = leaf_of_f(&sim, &pt, PAGES).1;
    pt.read_and_clear_dirty(Iova(0), 1 << 40, true, &mut g, |_, _| panic!("clean"))
        .unwrap();
    [mapped, dirtied, cleared, ro]
}

#[test]
fn amd_v1_and_vtd_second_stage_track_their_d_bit() {
    // AMD v1 (generic_pt amdv1.h): PR bit 0, IR bit 61, IW bit 62, D bit 6, NextLevel 0.
    // RW page at 0x4000_0000: IW | IR | addr | PR = 0x6000_0000_4000_0001; dirty: + D (0x40).
    // Read-only: IR | addr | PR = 0x2000_0000_4000_1001.
    assert_eq!(
        dirty_cycle::<AmdV1>(),
        [
            0x6000_0000_4000_0001,
            0x6000_0000_4000_0041,
            0x6000_0000_4000_0001,
            0x2000_0000_4000_1001
        ]
    );
    // VT-d second stage (generic_pt vtdss.h): R bit 0, W bit 1, D bit 9.
    // RW page: addr | W | R = 0x4000_0003; dirty: + D (0x200). Read-only: 0x4000_1001.
    assert_eq!(
        dirty_cycle::<VtdSs>(),
        [0x4000_0003, 0x4000_0203, 0x4000_0003, 0x4000_1001]
    );
    // Stage 1 ARM, the same cycle: writable-clean, writable-dirty, writable-clean; RO.
    assert_eq!(
        dirty_cycle::<Arm>(),
        [
            0x0008_0000_4000_0ec3,
            0x0008_0000_4000_0e43,
            0x0008_0000_4000_0ec3,
            0x0000_0000_4000_1ec3
        ]
    );
}
