//! The library's statistics serialize with serde, as maps of their field names to counts:
//! `devmmu_pagetable::Stats`, `DmaStats`, `PhysStats`, `SimStats`, `TlbStats`.

mod common;

use common::{cpu_read, pattern, Combo, Rig};
use devmmu_mm::device::MmuFormat;
use devmmu_mm::vm::Placement;
use devmmu_pagetable::Prot;
use serde::Serialize;
use serde_json::{Map, Value};

/// `stats` as a JSON object.
fn object(stats: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(stats).unwrap() {
        Value::Object(m) => m,
        other => panic!("stats should serialize as a map, got {other}"),
    }
}

/// Asserts `obj[name] == want` and that `obj` has `fields` entries.
fn assert_field(obj: &Map<String, Value>, fields: usize, name: &str, want: u64) {
    assert_eq!(obj.get(name), Some(&Value::from(want)), "{name} in {obj:?}");
    assert_eq!(obj.len(), fields, "field count of {obj:?}");
}

#[test]
fn statistics_serialize_with_their_field_names() {
    let rig = Rig::new(Combo {
        mmu: MmuFormat::ArmLpae4k,
        coherent: false,
        iommu: false,
    });
    let bo = rig.bo(4);
    let vm = rig.vm();
    let iova = vm
        .bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)
        .unwrap();
    let data = pattern(bo.size() as usize, 3);
    rig.sim.dma_write(&vm, iova, &data).unwrap();
    assert_eq!(cpu_read(&bo, 0, data.len()), data);

    let pt = vm.pt_stats();
    assert!(pt.pte_stores > 0);
    assert_field(&object(&pt), 7, "pte_stores", pt.pte_stores);

    let dma = rig.device.dma_ops().stats();
    assert!(dma.maps > 0);
    assert_field(&object(&dma), 11, "maps", dma.maps);
    assert_field(&object(&dma), 11, "bounced_bytes", dma.bounced_bytes);

    let phys = rig.phys.stats();
    assert!(phys.frames_allocated > 0);
    assert_field(
        &object(&phys),
        10,
        "frames_allocated",
        phys.frames_allocated,
    );

    let sim = rig.sim.stats();
    assert_eq!(sim.bytes_written, data.len() as u64);
    assert_field(&object(&sim), 6, "bytes_written", sim.bytes_written);
    assert_field(&object(&sim), 6, "dirty_updates", 0);

    let tlb = rig.mmu.tlb_stats();
    assert!(tlb.misses > 0);
    assert_field(&object(&tlb), 5, "misses", tlb.misses);

    // As text: the field name is a JSON key.
    let text = serde_json::to_string(&tlb).unwrap();
    assert!(text.contains("\"hits\":"), "{text}");

    vm.unbind(iova, bo.size()).unwrap();
}
