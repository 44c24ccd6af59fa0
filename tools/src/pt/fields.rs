//! Every field of one IOPTE, in words: what `devmmu pt decode` prints.
//!
//! The meaning (invalid, table, leaf with its address and permissions) comes from the format's
//! own [`Format::decode`]; the raw fields are read with the bit constants of the format's file
//! (`devmmu_pagetable::fmt::*`), named after the spec.

use devmmu_pagetable::fmt::arm_lpae::*;
use devmmu_pagetable::fmt::ipu::IPU_PAGE_SHIFT;
use devmmu_pagetable::{ArmLpae4k, DmaAddr, Entry, Format, Ipu, PteWord};

/// One line of a decoded entry: field name, raw value, meaning.
pub type Field = (String, String, String);

/// What [`Format::decode`] says the entry is, as one field.
fn meaning<F: Format>(level: usize, pte: F::Pte, dummy: Option<DmaAddr>) -> Field {
    let shift = F::level_shift(level);
    let what = match F::decode(level, pte) {
        Entry::Invalid => "invalid: a walk faults here (translation fault)".to_string(),
        Entry::Table(a) => format!("table: the level-{} table is at bus address {a}", level + 1),
        Entry::Leaf(a, prot) => {
            let kind = if level + 1 == F::LEVELS {
                "page"
            } else {
                "block"
            };
            let size = super::size_words(1u64 << shift);
            let dummy = match dummy {
                Some(d) if d == a => " -- the dummy page: this IOVA is not mapped",
                Some(_) => " (not the dummy page)",
                None => "",
            };
            format!("{size} {kind} at bus address {a}, access {prot}{dummy}")
        }
    };
    ("decode".into(), String::new(), what)
}

/// The fields of `raw` as an entry of level `level` of format `F`.
pub fn describe<F: Format>(level: usize, raw: u64, dummy: Option<DmaAddr>) -> Vec<Field> {
    let pte = <F::Pte as PteWord>::from_u64(raw);
    let mut fields = vec![meaning::<F>(level, pte, dummy)];
    // Format-specific raw fields, for the formats whose bits have names.
    if core::any::TypeId::of::<F>() == core::any::TypeId::of::<ArmLpae4k>() {
        fields.extend(arm_lpae_fields(level, raw));
    } else if core::any::TypeId::of::<F>() == core::any::TypeId::of::<Ipu>() {
        fields.extend(ipu_fields(level, raw, dummy));
    }
    fields
}

fn bit(raw: u64, mask: u64) -> String {
    u64::from(raw & mask != 0).to_string()
}

/// ARM LPAE stage-1 descriptor fields (Arm ARM DDI 0487, D8.3).
fn arm_lpae_fields(level: usize, raw: u64) -> Vec<Field> {
    let f = |n: &str, v: String, m: &str| (n.to_string(), v, m.to_string());
    let ty = raw & PTE_TYPE_MASK;
    let ty_means = match (ty, level) {
        (0 | 2, _) => "invalid (bit 0 clear)",
        (3, 0..=2) => "table descriptor",
        (3, _) => "page descriptor",
        (1, 1..=2) => "block descriptor",
        (1, _) => "reserved at this level: a translation fault",
        _ => unreachable!("two bits"),
    };
    let mut v = vec![f("type [1:0]", format!("{ty:#04b}"), ty_means)];
    if ty & PTE_VALID == 0 {
        return v;
    }
    v.push(f(
        "address [47:12]",
        format!("{:#x}", raw & PTE_ADDR_MASK),
        if ty == PTE_TYPE_TABLE && level < 3 {
            "next-level table"
        } else {
            "output address"
        },
    ));
    if ty == PTE_TYPE_TABLE && level < 3 {
        return v;
    }
    let idx = (raw & PTE_ATTRINDX_MASK) >> PTE_ATTRINDX_SHIFT;
    let mair = match idx {
        MAIR_IDX_NC => "MAIR slot 0 = 0x44: normal memory, non-cacheable",
        MAIR_IDX_CACHE => "MAIR slot 1 = 0xff: normal memory, write-back cacheable",
        MAIR_IDX_DEV => "MAIR slot 2 = 0x04: device nGnRE memory (MMIO)",
        _ => "MAIR slot not programmed by io-pgtable-arm",
    };
    v.push(f("AttrIndx [4:2]", idx.to_string(), mair));
    v.push(f("NS [5]", bit(raw, PTE_NS), "non-secure (not used)"));
    let ap = (raw >> 6) & 3;
    let ap_means = match ap {
        0 => "read/write, privileged only",
        1 => "read/write, any privilege (unprivileged allowed)",
        2 => "read-only, privileged only",
        _ => "read-only, any privilege",
    };
    v.push(f("AP [7:6]", format!("{ap:#04b}"), ap_means));
    let sh = (raw & PTE_SH_MASK) >> 8;
    let sh_means = match sh {
        0 => "non-shareable",
        2 => "outer shareable",
        3 => "inner shareable",
        _ => "reserved",
    };
    v.push(f("SH [9:8]", format!("{sh:#04b}"), sh_means));
    v.push(f(
        "AF [10]",
        bit(raw, PTE_AF),
        "access flag (0: the first access faults)",
    ));
    v.push(f(
        "nG [11]",
        bit(raw, PTE_NG),
        "not global: TLB entries are tagged with the ASID",
    ));
    v.push(f("PXN [53]", bit(raw, PTE_PXN), "privileged execute-never"));
    v.push(f(
        "UXN [54]",
        bit(raw, PTE_UXN),
        "unprivileged execute-never",
    ));
    v
}

/// Intel IPU MMU entry fields: a page number, nothing else.
fn ipu_fields(level: usize, raw: u64, dummy: Option<DmaAddr>) -> Vec<Field> {
    let addr = raw << IPU_PAGE_SHIFT;
    let points_at = if level == 0 { "L2 table" } else { "page" };
    let mut v = vec![(
        "page number [31:0]".to_string(),
        format!("{raw:#x}"),
        format!("{points_at} at bus address {addr:#x} (entry = address >> 12; no valid or permission bits)"),
    )];
    let dummy_means = match dummy {
        Some(d) if level + 1 == Ipu::LEVELS && d.0 == addr => "yes: the IOVA is not mapped".into(),
        Some(d) if level + 1 == Ipu::LEVELS => format!("no (the dummy page is at {d})"),
        Some(_) => "an L1 entry points at a table, real or the dummy L2 table".into(),
        None => "unknown: each table has its own dummy page (give --dummy-page)".into(),
    };
    v.push(("dummy page".into(), String::new(), dummy_means));
    v
}
