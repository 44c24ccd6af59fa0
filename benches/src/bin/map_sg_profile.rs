//! A fixed workload for instruction counting (callgrind): `DmaOps::map_sg` then `unmap_sg` of a
//! 64 MiB BO of scattered 4 KiB pages (16384 pages) through the system IOMMU, coherent, `ROUNDS`
//! times after one warm-up round, all counted: per page = callgrind's total / ((ROUNDS + 1) * 16384).
//!
//! ```sh
//! cargo build --release -p devmmu-benches --bin map-sg-profile
//! valgrind --tool=callgrind --toggle-collect='*map_sg_from*' --toggle-collect='*unmap_sg*' \
//!     target/release/map-sg-profile
//! ```
//!
//! `map-sg-profile bind` does the whole `Vm::bind` + `Vm::unbind` of the same BO into an IPU
//! VM instead (the manager bench's `vm/bind/iommu/ipu/coherent`):
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='*Vm*bind*' target/release/map-sg-profile bind
//! ```

use devmmu_mm::bo::{Bo, BoFlags};
use devmmu_mm::device::{Device, DeviceConfig, MmuFormat};
use devmmu_mm::dma::{DmaDirection, DmaMask, Platform};
use devmmu_mm::model::{SimConfig, SimMmu};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem};
use devmmu_mm::vm::{Placement, Vm};
use devmmu_pagetable::Prot;

const BO_SIZE: u64 = 64 << 20;
const ROUNDS: usize = 4;

fn main() {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).expect("PhysMem");
    let platform = Platform {
        system_iommu: true,
        ..Platform::default()
    };
    let config = DeviceConfig {
        name: "profile".into(),
        dma_mask: DmaMask::bits(32),
        coherent: true,
        coherent_walk: true,
        mmu: MmuFormat::Ipu,
        tlb_invalidation: MmuFormat::Ipu.tlb_invalidation(),
        accept_unenforced_prot: false,
    };
    let sim = SimMmu::new(SimConfig {
        tlb_entries: 64,
        coherent_walk: true,
        coherent: true,
    });
    let device = Device::attach(&phys, config, &platform, sim).expect("attach");
    let bo = Bo::new(&phys, BO_SIZE, BoFlags::default()).expect("BO");
    if std::env::args().nth(1).as_deref() == Some("bind") {
        let vm = Vm::new(&device).expect("Vm::new");
        for _ in 0..=ROUNDS {
            let iova = vm
                .bind(&bo, 0, BO_SIZE, Placement::Anywhere, Prot::RW)
                .expect("bind");
            vm.unbind(iova, BO_SIZE).expect("unbind");
        }
        println!(
            "{} rounds of Vm::bind + Vm::unbind of {} pages",
            ROUNDS + 1,
            BO_SIZE / 4096
        );
        return;
    }
    let segs = bo.segments();
    let ops = device.dma_ops();
    for _ in 0..=ROUNDS {
        let sg = ops
            .map_sg(&segs, DmaDirection::Bidirectional)
            .expect("map_sg");
        ops.unmap_sg(&sg).expect("unmap_sg");
    }
    println!(
        "{} rounds of map_sg + unmap_sg of {} pages in {} segments",
        ROUNDS + 1,
        BO_SIZE / 4096,
        segs.len()
    );
}
