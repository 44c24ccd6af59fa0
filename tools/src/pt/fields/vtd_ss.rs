//! Intel VT-d second-stage entries (VT-d spec 9.8 "Second-Stage Paging Entries";
//! generic_pt/fmt/vtdss.h `VTDSS_FMT_*`).

use devmmu_pagetable::fmt::vtd_ss::{
    VTDSS_A, VTDSS_D, VTDSS_EMT_MASK, VTDSS_EMT_SHIFT, VTDSS_IPAT, VTDSS_OA_MASK, VTDSS_PS,
    VTDSS_R, VTDSS_SNP, VTDSS_W, VTDSS_X,
};
use devmmu_pagetable::{DmaAddr, Format, VtdSs};

use super::{bit, field, Field, Fields};

impl Fields for VtdSs {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        // The entry's name at each level of the 4-level table.
        let name = ["SL-PML4E", "SL-PDPE", "SL-PDE", "SL-PTE"][level.min(3)];
        let mut v = vec![
            field("R [0]", bit(raw, VTDSS_R), "read allowed"),
            field("W [1]", bit(raw, VTDSS_W), "write allowed"),
        ];
        if raw & (VTDSS_R | VTDSS_W) == 0 {
            v.push(field(
                "present",
                "",
                format!("{name}: R = W = 0, not present"),
            ));
            return v;
        }
        let ps = raw & VTDSS_PS != 0;
        let last = level + 1 == Self::LEVELS;
        let leaf = last || ps;
        let kind = match (last, ps, level) {
            (true, _, _) => format!("{name}: a 4 KiB page"),
            (false, true, 0) => format!("{name}: PS is reserved here"),
            (false, true, _) => format!(
                "{name}: a {} page",
                crate::pt::size_words(1 << Self::level_shift(level))
            ),
            (false, false, _) => format!("{name}: points at the next-level table"),
        };
        v.push(field(
            "X [2]",
            bit(raw, VTDSS_X),
            "execute allowed (ignored without Execute Request Support)",
        ));
        if leaf {
            let emt = (raw & VTDSS_EMT_MASK) >> VTDSS_EMT_SHIFT;
            let emt_means = match emt {
                0 => "UC: uncacheable",
                1 => "WC: write-combining",
                4 => "WT: write-through",
                5 => "WP: write-protected",
                6 => "WB: write-back",
                _ => "reserved",
            };
            v.push(field(
                "EMT [5:3]",
                emt.to_string(),
                format!("memory type {emt_means} (used only with ECAP.MTS)"),
            ));
            v.push(field(
                "IPAT [6]",
                bit(raw, VTDSS_IPAT),
                "ignore PAT: EMT alone gives the memory type",
            ));
        }
        if level != 0 && !last {
            v.push(field("PS [7]", bit(raw, VTDSS_PS), kind));
        } else {
            v.push(field("type", "", kind));
        }
        v.push(field(
            "A [8]",
            bit(raw, VTDSS_A),
            "accessed (set by hardware)",
        ));
        if leaf {
            v.push(field("D [9]", bit(raw, VTDSS_D), "dirty (set by hardware)"));
            v.push(field(
                "SNP [11]",
                bit(raw, VTDSS_SNP),
                "snoop: the access snoops the CPU caches",
            ));
        }
        v.push(field(
            "address [51:12]",
            format!("{:#x}", raw & VTDSS_OA_MASK),
            if leaf {
                "output address"
            } else {
                "next-level table"
            },
        ));
        v
    }
}
