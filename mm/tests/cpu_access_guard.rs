//! The CPU access guard hands out the bytes it guards: `CpuAccessGuard::read` / `write` /
//! `read_all` reach the bytes `Bo::read` / `Bo::write` reach, in every caching mode; a write in
//! a READ-only bracket is refused and changes nothing; out-of-bounds accesses are refused as
//! `Bo::read` / `Bo::write` refuse them; and on a device, the guard's bytes are what the device
//! wrote before the bracket and what it reads after.

mod common;

use std::sync::Arc;

use common::{cpu_view, for_each_combo, pattern, ram_bytes, Rig};
use devmmu_mm::bo::{Bo, BoFlags, Caching, CpuAccess};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem, PAGE_SIZE};
use devmmu_mm::vm::Placement;
use devmmu_mm::MmError;
use devmmu_pagetable::Prot;

const P: u64 = PAGE_SIZE;

fn phys() -> Arc<PhysMem> {
    PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap()
}

/// The CPU view and RAM of the whole BO.
fn both_views(bo: &Bo) -> (Vec<u8>, Vec<u8>) {
    let len = bo.size() as usize;
    (cpu_view(bo, 0, len), ram_bytes(bo, 0, len))
}

#[test]
fn guard_read_and_write_go_where_bo_read_and_write_go() {
    let phys = phys();
    for caching in [Caching::Cached, Caching::WriteCombined, Caching::Uncached] {
        let flags = BoFlags::default().caching(caching);
        let plain = Bo::new(&phys, 3 * P, flags).unwrap();
        let guarded = Bo::new(&phys, 3 * P, flags).unwrap();
        // Writes across a page boundary and at both ends.
        let writes = [
            (0u64, pattern(100, 1)),
            (P - 10, pattern(30, 2)),
            (3 * P - 7, pattern(7, 3)),
        ];
        for (off, data) in &writes {
            plain.write(*off, data).unwrap();
        }
        let g = guarded.begin_cpu_access(CpuAccess::WRITE).unwrap();
        for (off, data) in &writes {
            g.write(*off, data).unwrap();
        }
        g.end().unwrap();
        assert_eq!(
            both_views(&plain),
            both_views(&guarded),
            "{caching:?}: guard writes land where Bo::write lands"
        );

        let g = guarded.begin_cpu_access(CpuAccess::READ).unwrap();
        for (off, data) in &writes {
            let mut via_guard = vec![0u8; data.len()];
            let mut via_bo = vec![0u8; data.len()];
            g.read(*off, &mut via_guard).unwrap();
            plain.read(*off, &mut via_bo).unwrap();
            assert_eq!(&via_guard, data, "{caching:?}: guard read at {off:#x}");
            assert_eq!(via_guard, via_bo, "{caching:?}: guard read as Bo::read");
        }
        let all = g.read_all().unwrap();
        assert_eq!(
            all.len() as u64,
            guarded.size(),
            "{caching:?}: read_all size"
        );
        assert_eq!(
            all,
            cpu_view(&guarded, 0, all.len()),
            "{caching:?}: read_all"
        );
        g.end().unwrap();
    }
}

#[test]
fn write_in_a_read_bracket_is_refused_and_changes_nothing() {
    let phys = phys();
    let bo = Bo::new(&phys, 2 * P, BoFlags::default()).unwrap();
    bo.write(0, &pattern(2 * P as usize, 7)).unwrap();
    let before = both_views(&bo);

    let g = bo.begin_cpu_access(CpuAccess::READ).unwrap();
    assert_eq!(g.access(), CpuAccess::READ);
    let err = g.write(16, b"must not land").unwrap_err();
    assert_eq!(
        err,
        MmError::CpuAccessDenied {
            access: CpuAccess::READ
        }
    );
    assert!(err.to_string().contains("READ"), "message: {err}");
    // The refusal comes before the bounds check.
    assert_eq!(
        g.write(2 * P, b"x"),
        Err(MmError::CpuAccessDenied {
            access: CpuAccess::READ
        })
    );
    // Reading in the same bracket still works.
    let mut buf = [0u8; 13];
    g.read(16, &mut buf).unwrap();
    assert_eq!(&buf[..], &before.0[16..29]);
    g.end().unwrap();

    assert_eq!(both_views(&bo), before, "a refused write changes nothing");
}

#[test]
fn read_in_a_write_bracket_and_write_in_a_read_write_bracket_are_allowed() {
    let phys = phys();
    let bo = Bo::new(&phys, P, BoFlags::default()).unwrap();
    bo.write(100, b"before").unwrap();

    let g = bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    let mut buf = [0u8; 6];
    g.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"before");
    g.end().unwrap();

    let g = bo
        .begin_cpu_access(CpuAccess::READ | CpuAccess::WRITE)
        .unwrap();
    assert_eq!(g.access(), CpuAccess::READ_WRITE);
    g.write(100, b"after!").unwrap();
    g.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"after!");
    g.end().unwrap();
}

#[test]
fn out_of_bounds_accesses_are_refused_as_bo_refuses_them() {
    let phys = phys();
    let bo = Bo::new(&phys, 2 * P, BoFlags::default()).unwrap();
    let size = bo.size();
    bo.write(0, &pattern(size as usize, 9)).unwrap();
    let before = both_views(&bo);

    let g = bo.begin_cpu_access(CpuAccess::READ_WRITE).unwrap();
    for (offset, len) in [(size - 1, 2u64), (size, 1), (u64::MAX, 1), (0, size + 1)] {
        let want = MmError::OutOfBounds { offset, len, size };
        let mut buf = vec![0xAAu8; len as usize];
        assert_eq!(
            g.read(offset, &mut buf),
            Err(want.clone()),
            "read {offset:#x}+{len}"
        );
        assert!(
            buf.iter().all(|&b| b == 0xAA),
            "a refused read leaves buf untouched"
        );
        assert_eq!(bo.read(offset, &mut buf), Err(want.clone()), "as Bo::read");
        assert_eq!(
            g.write(offset, &buf),
            Err(want.clone()),
            "write {offset:#x}+{len}"
        );
        assert_eq!(bo.write(offset, &buf), Err(want), "as Bo::write");
    }
    // An empty access at the end is in bounds, as for Bo::read.
    g.read(size, &mut []).unwrap();
    g.write(size, &[]).unwrap();
    g.end().unwrap();

    assert_eq!(both_views(&bo), before, "refused writes change nothing");
}

#[test]
fn guard_bytes_are_the_devices_bytes_in_every_combination() {
    for_each_combo(|c| {
        let rig = Rig::new(c);
        let bo = rig.bo(4);
        let vm = rig.vm();
        let iova = vm
            .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
            .unwrap();

        // Device writes, CPU reads through a READ guard.
        let frame = pattern(bo.size() as usize, 21);
        rig.sim.dma_write(&vm, iova, &frame).unwrap();
        let g = bo.begin_cpu_access(CpuAccess::READ).unwrap();
        assert_eq!(
            g.read_all().unwrap(),
            frame,
            "{c}: read_all after a device write"
        );
        let mut mid = vec![0u8; 100];
        g.read(P - 50, &mut mid).unwrap();
        assert_eq!(
            mid,
            frame[(P - 50) as usize..(P + 50) as usize],
            "{c}: read"
        );
        assert!(
            g.write(0, b"no").is_err(),
            "{c}: READ bracket refuses a write"
        );
        g.end().unwrap();

        // CPU writes through a WRITE guard, the device reads after the bracket ends.
        let data = pattern(300, 22);
        let g = bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
        g.write(2 * P - 150, &data).unwrap();
        g.end().unwrap();
        let mut got = vec![0u8; data.len()];
        rig.sim
            .dma_read(&vm, iova.checked_add(2 * P - 150).unwrap(), &mut got)
            .unwrap();
        assert_eq!(got, data, "{c}: the device reads the guard's write");

        assert!(
            rig.device.dma_ops().diagnostics().is_empty(),
            "{c}: bracketed accesses are no DMA-API misuse: {:?}",
            rig.device.dma_ops().diagnostics()
        );
        vm.unbind(iova, bo.size()).unwrap();
    });
}
