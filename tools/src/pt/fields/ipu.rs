//! Intel IPU MMU entries: a page number, nothing else (ipu6-mmu.c `ISP_PADDR_SHIFT`,
//! ipu3-mmu.c `IPU3_ADDR2PTE`).

use devmmu_pagetable::fmt::ipu::IPU_PAGE_SHIFT;
use devmmu_pagetable::{DmaAddr, Format, Ipu};

use super::{Field, Fields};

impl Fields for Ipu {
    fn raw_fields(level: usize, raw: u64, dummy: Option<DmaAddr>) -> Vec<Field> {
        let addr = raw << IPU_PAGE_SHIFT;
        let points_at = if level == 0 { "L2 table" } else { "page" };
        let mut v = vec![(
            "page number [31:0]".to_string(),
            format!("{raw:#x}"),
            format!("{points_at} at bus address {addr:#x} (entry = address >> 12; no valid or permission bits)"),
        )];
        let dummy_means = match dummy {
            Some(d) if level + 1 == Ipu::LEVELS && d.0 == addr => {
                "yes: the IOVA is not mapped".into()
            }
            Some(d) if level + 1 == Ipu::LEVELS => format!("no (the dummy page is at {d})"),
            Some(_) => "an L1 entry points at a table, real or the dummy L2 table".into(),
            None => "unknown: each table has its own dummy page (give --dummy-page)".into(),
        };
        v.push(("dummy page".into(), String::new(), dummy_means));
        v
    }
}
