//! AMD IOMMU v1 entries (AMD IOMMU spec 2.2.3 "I/O Page Tables for Host Translations",
//! Tables 14 and 15, the PDE and PTE; generic_pt/fmt/amdv1.h `AMDV1PT_FMT_*`).

use devmmu_pagetable::fmt::amd_v1::{
    AMDV1_D, AMDV1_FC, AMDV1_IR, AMDV1_IW, AMDV1_NEXT_LEVEL_MASK, AMDV1_NEXT_LEVEL_SHIFT,
    AMDV1_NL_DEFAULT, AMDV1_NL_SIZE, AMDV1_OA_MASK, AMDV1_PR,
};
use devmmu_pagetable::{AmdV1, DmaAddr, Format};

use super::{bit, field, Field, Fields};

impl Fields for AmdV1 {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        let mut v = vec![field(
            "PR [0]",
            bit(raw, AMDV1_PR),
            if raw & AMDV1_PR != 0 {
                "present"
            } else {
                "not present: a walk faults here"
            },
        )];
        if raw & AMDV1_PR == 0 {
            return v;
        }
        // The AMD level of the table holding this entry: a PTE table is level 1.
        let amd_level = (Self::LEVELS - level) as u64;
        let nl = (raw & AMDV1_NEXT_LEVEL_MASK) >> AMDV1_NEXT_LEVEL_SHIFT;
        // NextLevel 7 is a leaf too, of a size the address bits encode.
        let leaf = nl == AMDV1_NL_DEFAULT || nl == AMDV1_NL_SIZE;
        let nl_means = match nl {
            AMDV1_NL_DEFAULT if Self::LEAF_LEVELS[level] => format!(
                "a {} page (this entry is in an AMD level-{amd_level} table)",
                crate::pt::size_words(1 << Self::level_shift(level))
            ),
            AMDV1_NL_DEFAULT => format!(
                "a leaf in the AMD level-{amd_level} table: excluded (erratum), not supported here"
            ),
            AMDV1_NL_SIZE => "a leaf whose size is in the address bits: not supported here".into(),
            n if n + 1 == amd_level => format!("a PDE: points at an AMD level-{n} table"),
            n => format!(
                "a PDE naming level {n} from an AMD level-{amd_level} table: not supported here"
            ),
        };
        v.push(field("Next Level [11:9]", nl.to_string(), nl_means));
        if leaf {
            v.push(field("D [6]", bit(raw, AMDV1_D), "dirty (set by hardware)"));
        }
        v.push(field(
            "address [51:12]",
            format!("{:#x}", raw & AMDV1_OA_MASK),
            if leaf {
                "output address"
            } else {
                "next-level table"
            },
        ));
        v.push(field(
            "FC [60]",
            bit(raw, AMDV1_FC),
            "force coherent: the access snoops the CPU caches",
        ));
        let and = if leaf {
            ""
        } else {
            " (ANDed down the walk: a PDE grants, the PTE decides)"
        };
        v.push(field(
            "IR [61]",
            bit(raw, AMDV1_IR),
            format!("read allowed{and}"),
        ));
        v.push(field(
            "IW [62]",
            bit(raw, AMDV1_IW),
            format!("write allowed{and}"),
        ));
        v
    }
}
