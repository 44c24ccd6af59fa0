//! Apple DART entries, DART1 and DART2 (io-pgtable-dart.c `APPLE_DART_PTE_*`,
//! `APPLE_DART1_*`, `APPLE_DART2_*`, `dart_prot_to_pte`, `dart_init_pte`,
//! `paddr_to_iopte`).

use devmmu_pagetable::fmt::apple_dart::{
    DART1_PADDR_MASK, DART1_PTE_PROT_NO_READ, DART1_PTE_PROT_NO_WRITE, DART1_PTE_PROT_SP_DIS,
    DART2_PADDR_MASK, DART2_PADDR_SHIFT, DART2_PTE_PROT_NO_CACHE, DART2_PTE_PROT_NO_READ,
    DART2_PTE_PROT_NO_WRITE, DART_PTE_SUBPAGE_END_SHIFT, DART_PTE_SUBPAGE_START_SHIFT,
    DART_PTE_VALID,
};
use devmmu_pagetable::{AppleDart1, AppleDart2, DmaAddr};

use super::{bit, field, Field, Fields};

impl Fields for AppleDart1 {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        let mut v = valid(raw);
        if raw & DART_PTE_VALID == 0 {
            return v;
        }
        // DART1 keeps the address in place.
        v.push(field(
            "address [35:12]",
            format!("{:#x}", raw & DART1_PADDR_MASK),
            points_at(level),
        ));
        if level == 0 {
            return v;
        }
        v.push(field(
            "SP_DIS [1]",
            bit(raw, DART1_PTE_PROT_SP_DIS),
            "subpage protection disabled: the subpage range is ignored",
        ));
        v.push(field(
            "NO_WRITE [7]",
            bit(raw, DART1_PTE_PROT_NO_WRITE),
            "writes not allowed",
        ));
        v.push(field(
            "NO_READ [8]",
            bit(raw, DART1_PTE_PROT_NO_READ),
            "reads not allowed",
        ));
        v.extend(subpage(raw));
        v
    }
}

impl Fields for AppleDart2 {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        let mut v = valid(raw);
        if raw & DART_PTE_VALID == 0 {
            return v;
        }
        let stored = raw & DART2_PADDR_MASK;
        // DART2 stores the address >> 4 (iopte_to_paddr shifts it back).
        v.push(field(
            "address [37:10]",
            format!("{stored:#x}"),
            format!(
                "{}: {:#x} (the field << 4)",
                points_at(level),
                stored << DART2_PADDR_SHIFT
            ),
        ));
        if level == 0 {
            return v;
        }
        v.push(field(
            "NO_CACHE [1]",
            bit(raw, DART2_PTE_PROT_NO_CACHE),
            "not cacheable (set without IOMMU_CACHE)",
        ));
        v.push(field(
            "NO_WRITE [2]",
            bit(raw, DART2_PTE_PROT_NO_WRITE),
            "writes not allowed",
        ));
        v.push(field(
            "NO_READ [3]",
            bit(raw, DART2_PTE_PROT_NO_READ),
            "reads not allowed",
        ));
        v.extend(subpage(raw));
        v
    }
}

fn valid(raw: u64) -> Vec<Field> {
    vec![field(
        "valid [0]",
        bit(raw, DART_PTE_VALID),
        if raw & DART_PTE_VALID != 0 {
            "valid"
        } else {
            "invalid: a walk faults here"
        },
    )]
}

fn points_at(level: usize) -> &'static str {
    if level == 0 {
        "bus address of the level-1 table"
    } else {
        "bus address of the 16 KiB page"
    }
}

/// The subpage range of a leaf: `dart_init_pte` writes start 0 and end 0xfff, the whole page.
fn subpage(raw: u64) -> Vec<Field> {
    let start = (raw >> DART_PTE_SUBPAGE_START_SHIFT) & 0xfff;
    let end = (raw >> DART_PTE_SUBPAGE_END_SHIFT) & 0xfff;
    vec![
        field(
            "subpage start [63:52]",
            format!("{start:#x}"),
            if start == 0 {
                "0: from the start of the page"
            } else {
                "a partial range: not written by io-pgtable-dart.c"
            },
        ),
        field(
            "subpage end [51:40]",
            format!("{end:#x}"),
            if end == 0xfff {
                "0xfff: to the end of the page"
            } else {
                "a partial range: not written by io-pgtable-dart.c"
            },
        ),
    ]
}
