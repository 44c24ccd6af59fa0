//! Real-kernel tier: QEMU's `edu` DMA engine behind devmmu's IOPTEs, the real IOMMU behind
//! devmmu's VFIO DMA ops. These tests run only inside the test guest (`scripts/kernel/test.sh`
//! boots it, binds edu to vfio-pci and runs them with `--ignored`); on any other machine they
//! are ignored.
//!
//! Each test says what it checked on stdout (`edu: ...` lines), which the tier's log keeps.

mod kernel;

use kernel::{dmar_faults, pattern, quiet_fault_log, rig};

use devmmu_mm::device::MmuFormat;
use devmmu_mm::dma::{TableBus, TablePool};
use devmmu_mm::phys::{Zone, PAGE_SIZE};
use devmmu_mm::prelude::*;
use devmmu_mm::vm::MmuContext;
use devmmu_pagetable::{
    ArmLpae4k, Format, Gather, Ipu, PageTable, PageTableConfig, TableAlloc, TablePage,
};
use devmmu_tools::edu::{EduError, EDU_DMA_BITS};

fn device_writes_cpu_reads(format: MmuFormat) {
    let rig = rig(format);
    let bo = Bo::new(&rig.phys, 2 * PAGE_SIZE, BoFlags::default()).unwrap();
    let vm = Vm::new(&rig.device).unwrap();
    let iova = vm
        .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
        .unwrap();
    // 6000 bytes from offset 0x800: both pages, crossing the page boundary.
    let data = pattern(6000, 7);
    let ctx = vm.context();
    let at = Iova(iova.get() + 0x800);
    let buses = rig.edu.write(&ctx, at, &data).unwrap();
    for b in &buses {
        assert!(
            b.get() < 1 << EDU_DMA_BITS,
            "bus address {b} beyond edu's mask"
        );
    }
    let cpu = bo.begin_cpu_access(CpuAccess::READ).unwrap();
    let mut got = vec![0u8; data.len()];
    cpu.read(0x800, &mut got).unwrap();
    cpu.end().unwrap();
    assert_eq!(
        got, data,
        "the CPU must see what edu wrote through the device MMU"
    );
    let st = rig.edu.stats();
    println!(
        "edu: {}: device wrote {} bytes through its MMU at {at} (bus {:?}); CPU read them back \
         equal; {} DMAs, {} table entries fetched by DMA",
        format.name(),
        data.len(),
        buses,
        st.dmas,
        st.pte_reads
    );
    vm.unbind(iova, bo.size()).unwrap();
}

fn cpu_writes_device_reads(format: MmuFormat) {
    let rig = rig(format);
    let bo = Bo::new(&rig.phys, PAGE_SIZE, BoFlags::default()).unwrap();
    let vm = Vm::new(&rig.device).unwrap();
    let iova = vm
        .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
        .unwrap();
    let data = pattern(PAGE_SIZE as usize, 99);
    let cpu = bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    cpu.write(0, &data).unwrap();
    cpu.end().unwrap();
    let mut got = vec![0u8; data.len()];
    rig.edu.read(&vm.context(), iova, &mut got).unwrap();
    assert_eq!(got, data, "edu must read what the CPU wrote");
    println!(
        "edu: {}: CPU wrote {} bytes; device read them through its MMU at {iova}, equal",
        format.name(),
        data.len()
    );
    vm.unbind(iova, bo.size()).unwrap();
}

/// An IOVA this test never maps in the VFIO container: IOVAs are handed out top-down from
/// 2^28, and the tests map a few pages.
const UNMAPPED: DmaAddr = DmaAddr(0x0010_0000);

/// A device page table built directly (tables through the device's DMA ops, so the tables
/// themselves are VFIO-mapped) whose one leaf points at [`UNMAPPED`].
fn leaf_to_unmapped<F: Format>(format: MmuFormat) {
    let rig = rig(format);
    let ops = rig.device.dma_ops().clone();
    let pool = TablePool::new(rig.phys.clone(), Zone::Any, TableBus::Dma(ops));
    let mut pt = PageTable::<F, _>::new(
        pool,
        PageTableConfig {
            coherent_walk: true,
        },
    )
    .unwrap();
    let va = Iova(0x0004_0000);
    let mut g = Gather::new();
    pt.map(va, UNMAPPED, PAGE_SIZE, Prot::RW, &mut g).unwrap();
    pt.iotlb_sync(&mut g, |_, _| {});
    let ctx = MmuContext {
        asid: 0,
        root: pt.root(),
        format,
        dummy_page: None,
    };
    // Memory of ours the device could hit if the IOMMU let a stray write through.
    let canary = rig.device.dma_ops().alloc_coherent(PAGE_SIZE).unwrap();
    canary.write(0, &[0xC3; PAGE_SIZE as usize]).unwrap();
    quiet_fault_log();
    let before = dmar_faults();
    rig.edu.write(&ctx, va, &[0x5a; 64]).unwrap();
    let mut buf = [0xEEu8; 64];
    rig.edu.read(&ctx, va, &mut buf).unwrap();
    assert_eq!(
        buf, [0u8; 64],
        "a read the IOMMU refuses delivers zeros, not the bytes the refused write sent"
    );
    let mut c = vec![0u8; PAGE_SIZE as usize];
    canary.read(0, &mut c).unwrap();
    assert!(
        c.iter().all(|&b| b == 0xC3),
        "the refused write landed in our memory"
    );
    let new = new_faults(&before, UNMAPPED);
    println!(
        "edu: {}: leaf -> IOVA {UNMAPPED}, not VFIO-mapped: the device's write landed nowhere \
         (canary page intact), its read gave zeros; kernel log: {}",
        format.name(),
        new.last().map(String::as_str).unwrap_or("")
    );
}

/// The bus address a DMAR fault line names (`... fault addr 0x102000 ...`).
fn fault_addr(line: &str) -> Option<u64> {
    let rest = line.split("fault addr 0x").nth(1)?;
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// The DMAR fault lines logged since `before` that name bus address `dma`'s page; panics if
/// there are none.
fn new_faults(before: &[String], dma: DmaAddr) -> Vec<String> {
    let after = dmar_faults();
    let new: Vec<String> = after
        .into_iter()
        .skip(before.len())
        .filter(|l| fault_addr(l) == Some(dma.get()))
        .collect();
    assert!(
        !new.is_empty(),
        "expected a DMAR fault at {dma} in the kernel log; it has:\n{}",
        dmar_faults().join("\n")
    );
    new
}

/// A table allocator that hands out real, VFIO-mapped pages but reports every table after the
/// root at a bus address the IOMMU does not map: the parent entry then points where the walker's
/// DMA faults.
struct UnmappedTables {
    inner: TablePool,
    n: u64,
    real: Vec<(DmaAddr, TablePage)>,
}

// SAFETY: every page comes from `inner` (a correct allocator) with its CPU pointer unchanged;
// only the bus address reported for non-root tables is wrong, which affects what the device
// reads, never CPU memory. Pages go back to `inner` as `inner` handed them out.
unsafe impl TableAlloc for UnmappedTables {
    fn alloc_table(&mut self) -> Option<TablePage> {
        let p = self.inner.alloc_table()?;
        self.n += 1;
        if self.n == 1 {
            return Some(p);
        }
        let fake = DmaAddr(UNMAPPED.get() + self.n * PAGE_SIZE);
        self.real.push((fake, p));
        Some(TablePage { dma: fake, ..p })
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        let page = match self.real.iter().position(|(f, _)| *f == page.dma) {
            Some(i) => self.real.swap_remove(i).1,
            None => page,
        };
        // SAFETY: `page` is the page `inner` handed out, given back once.
        unsafe { self.inner.free_table(page) }
    }
}

fn table_not_mapped<F: Format>(format: MmuFormat) {
    let rig = rig(format);
    let ops = rig.device.dma_ops().clone();
    let inner = TablePool::new(rig.phys.clone(), Zone::Any, TableBus::Dma(ops.clone()));
    let alloc = UnmappedTables {
        inner,
        n: 0,
        real: Vec::new(),
    };
    let mut pt = PageTable::<F, _>::new(
        alloc,
        PageTableConfig {
            coherent_walk: true,
        },
    )
    .unwrap();
    // A real page as the leaf: the walk must fail before reaching it.
    let bo = Bo::new(&rig.phys, PAGE_SIZE, BoFlags::default()).unwrap();
    let buf = ops.alloc_coherent(PAGE_SIZE).unwrap();
    let va = Iova(0x0004_0000);
    let mut g = Gather::new();
    pt.map(va, buf.dma(), PAGE_SIZE, Prot::RW, &mut g).unwrap();
    pt.iotlb_sync(&mut g, |_, _| {});
    let ctx = MmuContext {
        asid: 0,
        root: pt.root(),
        format,
        dummy_page: None,
    };
    quiet_fault_log();
    let before = dmar_faults();
    match rig.edu.translate(&ctx, va, false) {
        // ARM LPAE: the refused fetch reads as a zero entry, which is invalid.
        Err(EduError::Walk { fault, .. }) => println!(
            "edu: {}: table page not DMA-mapped: the entry fetch was refused and the walk \
             faulted ({fault:?})",
            format.name()
        ),
        // The IPU format has no valid bit: the zero entry points at bus address 0, which
        // nothing maps either; the walk ends there.
        Ok(t) if t.dma.get() < PAGE_SIZE && format == MmuFormat::Ipu => println!(
            "edu: {}: table page not DMA-mapped: the entry fetch was refused (read as 0) and \
             the walk went on to bus address {} (no valid bit in this format)",
            format.name(),
            t.dma
        ),
        other => panic!("a walk through an unmapped table page must fault: {other:?}"),
    }
    // The fake table addresses are the pages after UNMAPPED; the fault names one of them.
    let after = dmar_faults();
    let hit = after.iter().skip(before.len()).find(|l| {
        fault_addr(l).is_some_and(|a| a > UNMAPPED.get() && a < UNMAPPED.get() + 64 * PAGE_SIZE)
    });
    let Some(hit) = hit else {
        panic!(
            "expected a DMAR fault at a table page in the kernel log; it has:\n{}",
            after.join("\n")
        );
    };
    println!("edu: {}: kernel log: {hit}", format.name());
    drop(bo);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_ipu_device_writes_cpu_reads() {
    device_writes_cpu_reads(MmuFormat::Ipu);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_arm_device_writes_cpu_reads() {
    device_writes_cpu_reads(MmuFormat::ArmLpae4k);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_ipu_cpu_writes_device_reads() {
    cpu_writes_device_reads(MmuFormat::Ipu);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_arm_cpu_writes_device_reads() {
    cpu_writes_device_reads(MmuFormat::ArmLpae4k);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_ipu_leaf_to_unmapped_iova_faults() {
    leaf_to_unmapped::<Ipu>(MmuFormat::Ipu);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_arm_leaf_to_unmapped_iova_faults() {
    leaf_to_unmapped::<ArmLpae4k>(MmuFormat::ArmLpae4k);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_ipu_table_not_dma_mapped_faults() {
    table_not_mapped::<Ipu>(MmuFormat::Ipu);
}

#[test]
#[ignore = "real-kernel tier: scripts/kernel/test.sh runs it in the guest"]
fn kernel_edu_arm_table_not_dma_mapped_faults() {
    table_not_mapped::<ArmLpae4k>(MmuFormat::ArmLpae4k);
}
