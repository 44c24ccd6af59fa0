//! Random sequences over shared BOs (issue 8): sub-ranges of the same BOs bound into several VMs
//! of one device and of a second device, partial unbinds, device and CPU writes, export and
//! self-import, and handles dropped in any order. After every step the simulated devices read
//! every bound page through their MMUs and must agree with a reference model of the BOs' bytes;
//! correct use must produce no DMA-debug diagnostic, and tearing everything down no leak.
//!
//! Reference model: one byte vector per BO. Every allowed configuration shares bytes at once
//! between the bindings of one device (one DMA mapping per BO and device) and between the two
//! devices (the second device's mapping of a BO is refused with `SharedBounce` exactly when
//! direct DMA would bounce it, i.e. a BO above the 32-bit masks without a system IOMMU). CPU
//! accesses go through CPU access brackets.

mod common;

use std::sync::Arc;

use common::{device_on, Combo};
use devmmu_mm::bo::{Bo, BoFlags, CpuAccess, ExportOptions};
use devmmu_mm::device::{Device, MmuFormat};
use devmmu_mm::model::SimDevice;
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysAddr, PhysMem, PAGE_SIZE};
use devmmu_mm::vm::{Placement, Vm};
use devmmu_mm::MmError;
use devmmu_pagetable::{Iova, Prot};
use proptest::prelude::*;

const P: u64 = PAGE_SIZE;
const FOUR_GIB: u64 = 1 << 32;

/// One step; indices are reduced modulo what exists when the step runs.
#[derive(Clone, Debug)]
enum Op {
    /// A new BO of `pages` pages, above 4 GiB or below.
    NewBo { pages: u64, low: bool },
    /// Bind pages `first .. first + count` of a BO into a VM (0, 1: device A; 2: device B).
    Bind {
        bo: usize,
        vm: usize,
        first: u64,
        count: u64,
    },
    /// Unbind `count` pages from page `skip` of a binding (a partial unbind splits it).
    Unbind {
        binding: usize,
        skip: u64,
        count: u64,
    },
    /// The device writes one page through a binding.
    DevWrite { binding: usize, page: u64, seed: u8 },
    /// The CPU writes bytes of a BO in a WRITE bracket.
    CpuWrite {
        bo: usize,
        offset: u64,
        len: u64,
        seed: u8,
    },
    /// The CPU reads a whole BO in a READ bracket and compares.
    CpuRead { bo: usize },
    /// Export a BO as an fd and import it back: the same object.
    SelfImport { bo: usize },
    /// Drop the test's handle of a BO (its bindings keep it alive).
    DropHandle { bo: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u64..=6, any::<bool>()).prop_map(|(pages, low)| Op::NewBo { pages, low }),
        4 => (any::<usize>(), 0usize..3, 0u64..6, 1u64..=6)
            .prop_map(|(bo, vm, first, count)| Op::Bind { bo, vm, first, count }),
        2 => (any::<usize>(), 0u64..6, 1u64..=6)
            .prop_map(|(binding, skip, count)| Op::Unbind { binding, skip, count }),
        3 => (any::<usize>(), 0u64..6, any::<u8>())
            .prop_map(|(binding, page, seed)| Op::DevWrite { binding, page, seed }),
        2 => (any::<usize>(), 0u64..(6 * P), 1u64..(2 * P), any::<u8>())
            .prop_map(|(bo, offset, len, seed)| Op::CpuWrite { bo, offset, len, seed }),
        1 => any::<usize>().prop_map(|bo| Op::CpuRead { bo }),
        1 => any::<usize>().prop_map(|bo| Op::SelfImport { bo }),
        1 => any::<usize>().prop_map(|bo| Op::DropHandle { bo }),
    ]
}

fn combo() -> impl Strategy<Value = Combo> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(ipu, coherent, iommu)| Combo {
        mmu: if ipu {
            MmuFormat::Ipu
        } else {
            MmuFormat::ArmLpae4k
        },
        coherent,
        iommu,
    })
}

fn bytes(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A device of the machine with its simulated hardware.
struct Dev {
    device: Arc<Device>,
    sim: SimDevice,
}

fn device(phys: &Arc<PhysMem>, c: Combo, name: &str) -> Dev {
    let (device, sim) = device_on(phys, c, name);
    Dev { device, sim }
}

struct ModelBo {
    /// The test's handle; `None` once dropped (bindings may keep the BO alive).
    handle: Option<Arc<Bo>>,
    /// Weak reference, to check the BO is freed when nothing uses it.
    weak: std::sync::Weak<Bo>,
    bytes: Vec<u8>,
    low: bool,
}

struct ModelBinding {
    vm: usize,
    iova: Iova,
    bo: usize,
    offset: u64,
    size: u64,
}

fn run(c: Combo, ops: &[Op]) -> Result<(), TestCaseError> {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
    let devs = [device(&phys, c, "a"), device(&phys, c, "b")];
    let dev_of = |vm: usize| usize::from(vm == 2);
    let vms: Vec<Vm> = [0, 0, 1]
        .iter()
        .map(|&d| Vm::new(&devs[d].device).unwrap())
        .collect();
    let mut bos: Vec<ModelBo> = Vec::new();
    let mut bindings: Vec<ModelBinding> = Vec::new();
    let no_udmabuf = ExportOptions {
        udmabuf: None,
        fallback_to_memfd: true,
    };

    for (step, op) in ops.iter().enumerate() {
        let live: Vec<usize> = (0..bos.len())
            .filter(|&i| bos[i].handle.is_some())
            .collect();
        match *op {
            Op::NewBo { pages, low } => {
                let flags = if low {
                    BoFlags::default().below(PhysAddr(FOUR_GIB))
                } else {
                    BoFlags::default()
                };
                let bo = Bo::new(&phys, pages * P, flags).unwrap();
                prop_assert_eq!(low, bo.pages().iter().all(|p| p.0 < FOUR_GIB));
                bos.push(ModelBo {
                    weak: Arc::downgrade(&bo),
                    handle: Some(bo),
                    bytes: vec![0; (pages * P) as usize],
                    low,
                });
            }
            Op::Bind {
                bo,
                vm,
                first,
                count,
            } => {
                let Some(&b) = live.get(bo % live.len().max(1)) else {
                    continue;
                };
                let handle = bos[b].handle.clone().unwrap();
                let pages = handle.size() / P;
                let first = first % pages;
                let count = count.min(pages - first);
                let d = dev_of(vm);
                let other_device_maps = bindings.iter().any(|x| x.bo == b && dev_of(x.vm) != d);
                let r = vms[vm].bind(&handle, first * P, count * P, Placement::Anywhere, Prot::RW);
                if other_device_maps && !c.iommu && !bos[b].low {
                    prop_assert!(
                        matches!(r, Err(MmError::SharedBounce { .. })),
                        "step {step}: {r:?}"
                    );
                    continue;
                }
                let iova = r.map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                bindings.push(ModelBinding {
                    vm,
                    iova,
                    bo: b,
                    offset: first * P,
                    size: count * P,
                });
            }
            Op::Unbind {
                binding,
                skip,
                count,
            } => {
                if bindings.is_empty() {
                    continue;
                }
                let i = binding % bindings.len();
                let x = bindings.remove(i);
                let pages = x.size / P;
                let skip = skip % pages;
                let count = count.min(pages - skip);
                let at = Iova(x.iova.0 + skip * P);
                prop_assert_eq!(vms[x.vm].unbind(at, count * P), Ok(count * P));
                for (start, end) in [(0, skip), (skip + count, pages)] {
                    if start < end {
                        bindings.push(ModelBinding {
                            vm: x.vm,
                            iova: Iova(x.iova.0 + start * P),
                            bo: x.bo,
                            offset: x.offset + start * P,
                            size: (end - start) * P,
                        });
                    }
                }
            }
            Op::DevWrite {
                binding,
                page,
                seed,
            } => {
                if bindings.is_empty() {
                    continue;
                }
                let x = &bindings[binding % bindings.len()];
                let page = page % (x.size / P);
                let data = bytes(P, seed);
                devs[dev_of(x.vm)]
                    .sim
                    .dma_write(&vms[x.vm], Iova(x.iova.0 + page * P), &data)
                    .map_err(|f| TestCaseError::fail(format!("step {step}: {f}")))?;
                let at = (x.offset + page * P) as usize;
                bos[x.bo].bytes[at..at + P as usize].copy_from_slice(&data);
            }
            Op::CpuWrite {
                bo,
                offset,
                len,
                seed,
            } => {
                let Some(&b) = live.get(bo % live.len().max(1)) else {
                    continue;
                };
                let handle = bos[b].handle.clone().unwrap();
                let offset = offset % handle.size();
                let len = len.min(handle.size() - offset);
                let data = bytes(len, seed);
                let g = handle.begin_cpu_access(CpuAccess::WRITE).unwrap();
                handle.write(offset, &data).unwrap();
                g.end().unwrap();
                bos[b].bytes[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            }
            Op::CpuRead { bo } => {
                let Some(&b) = live.get(bo % live.len().max(1)) else {
                    continue;
                };
                let handle = bos[b].handle.clone().unwrap();
                let mut got = vec![0u8; handle.size() as usize];
                let g = handle.begin_cpu_access(CpuAccess::READ).unwrap();
                handle.read(0, &mut got).unwrap();
                g.end().unwrap();
                prop_assert!(got == bos[b].bytes, "step {step}: CPU read of BO {b}");
            }
            Op::SelfImport { bo } => {
                let Some(&b) = live.get(bo % live.len().max(1)) else {
                    continue;
                };
                let handle = bos[b].handle.clone().unwrap();
                let fd = handle.export_with(&no_udmabuf).unwrap().fd;
                let back = Bo::import(&phys, fd, Some(handle.size())).unwrap();
                prop_assert!(Arc::ptr_eq(&back, &handle), "step {step}: self-import");
                bos[b].handle = Some(back);
            }
            Op::DropHandle { bo } => {
                let Some(&b) = live.get(bo % live.len().max(1)) else {
                    continue;
                };
                bos[b].handle = None;
            }
        }

        // The devices read every bound page and agree with the model.
        for x in &bindings {
            let mut got = vec![0u8; x.size as usize];
            devs[dev_of(x.vm)]
                .sim
                .dma_read(&vms[x.vm], x.iova, &mut got)
                .map_err(|f| TestCaseError::fail(format!("step {step}: {f}")))?;
            let want = &bos[x.bo].bytes[x.offset as usize..(x.offset + x.size) as usize];
            prop_assert!(
                got == want,
                "step {step} ({op:?}): device {} reads stale bytes through {} (BO {} +{:#x})",
                dev_of(x.vm),
                x.iova,
                x.bo,
                x.offset
            );
        }
        // A BO nobody holds or binds is freed.
        for (i, b) in bos.iter().enumerate() {
            let used = b.handle.is_some() || bindings.iter().any(|x| x.bo == i);
            prop_assert_eq!(
                b.weak.strong_count() > 0,
                used,
                "step {}: BO {} lifetime",
                step,
                i
            );
        }
        for d in &devs {
            let diags = d.device.dma_ops().take_diagnostics();
            prop_assert!(diags.is_empty(), "step {step} ({op:?}): {diags:?}");
        }
    }

    // Teardown in any order: unbind what is left, drop the VMs, detach: nothing leaks.
    while let Some(x) = bindings.pop() {
        prop_assert_eq!(vms[x.vm].unbind(x.iova, x.size), Ok(x.size));
    }
    drop(vms);
    drop(bos);
    for d in &devs {
        prop_assert!(d.device.vm_leaks().is_empty());
        let leaks = d.device.detach();
        prop_assert!(leaks.is_empty(), "{leaks:?}");
        prop_assert!(d.device.dma_ops().take_diagnostics().is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn shared_bos_agree_with_the_model(c in combo(), ops in proptest::collection::vec(op(), 1..60)) {
        run(c, &ops)?;
    }
}
