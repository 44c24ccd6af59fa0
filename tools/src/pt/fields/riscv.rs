//! RISC-V Sv39 and Sv48 entries (privileged spec 12.4 "Sv39": the PTE format, 12.4.2 the walk;
//! the Svpbmt and Svnapot extensions; generic_pt/fmt/riscv.h `RISCVPT_*`).

use devmmu_pagetable::fmt::riscv::{
    RISCV_PAGE_SHIFT, RISCV_PTE_A, RISCV_PTE_D, RISCV_PTE_G, RISCV_PTE_N, RISCV_PTE_PBMT_MASK,
    RISCV_PTE_PBMT_SHIFT, RISCV_PTE_PPN_MASK, RISCV_PTE_PPN_SHIFT, RISCV_PTE_R, RISCV_PTE_RSW_MASK,
    RISCV_PTE_U, RISCV_PTE_V, RISCV_PTE_W, RISCV_PTE_X,
};
use devmmu_pagetable::{DmaAddr, Format, RiscvSv39, RiscvSv48};

use super::{bit, field, Field, Fields};

impl Fields for RiscvSv39 {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        fields(level + 1 == Self::LEVELS, raw)
    }
}

impl Fields for RiscvSv48 {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        fields(level + 1 == Self::LEVELS, raw)
    }
}

fn fields(last: bool, raw: u64) -> Vec<Field> {
    let valid = raw & RISCV_PTE_V != 0;
    let mut v = vec![field(
        "V [0]",
        bit(raw, RISCV_PTE_V),
        if valid {
            "valid"
        } else {
            "invalid: a page fault"
        },
    )];
    if !valid {
        return v;
    }
    let (r, w, x) = (
        raw & RISCV_PTE_R != 0,
        raw & RISCV_PTE_W != 0,
        raw & RISCV_PTE_X != 0,
    );
    v.push(field("R [1]", bit(raw, RISCV_PTE_R), "readable"));
    v.push(field("W [2]", bit(raw, RISCV_PTE_W), "writable"));
    v.push(field("X [3]", bit(raw, RISCV_PTE_X), "executable"));
    let pointer = !r && !w && !x;
    let kind = match (pointer, w && !r, last) {
        (true, _, false) => "R = W = X = 0: a pointer to the next-level table",
        (true, _, true) => "R = W = X = 0 at the last level: reserved, a page fault",
        (false, true, _) => "W without R: reserved, a page fault",
        (false, false, _) => "a leaf (R, W or X set)",
    };
    v.push(field("R/W/X", "", kind));
    let ppn = (raw & RISCV_PTE_PPN_MASK) >> RISCV_PTE_PPN_SHIFT;
    let addr = ppn << RISCV_PAGE_SHIFT;
    if pointer {
        v.push(field(
            "PPN [53:10]",
            format!("{ppn:#x}"),
            format!("next-level table at bus address {addr:#x}"),
        ));
        return v;
    }
    v.push(field(
        "U [4]",
        bit(raw, RISCV_PTE_U),
        "user-mode accessible (riscv.h sets it on every leaf)",
    ));
    v.push(field(
        "G [5]",
        bit(raw, RISCV_PTE_G),
        "global: in every address space",
    ));
    v.push(field(
        "A [6]",
        bit(raw, RISCV_PTE_A),
        "accessed (0: the first access faults or is set by hardware)",
    ));
    v.push(field(
        "D [7]",
        bit(raw, RISCV_PTE_D),
        "dirty (0 on a writable page: the first write faults or is set by hardware)",
    ));
    v.push(field(
        "RSW [9:8]",
        format!("{:#04b}", (raw & RISCV_PTE_RSW_MASK) >> 8),
        "reserved for software, ignored by the walker",
    ));
    v.push(field(
        "PPN [53:10]",
        format!("{ppn:#x}"),
        format!("output address {addr:#x} (PPN << 12)"),
    ));
    let pbmt = (raw & RISCV_PTE_PBMT_MASK) >> RISCV_PTE_PBMT_SHIFT;
    let pbmt_means = match pbmt {
        0 => "PMA: the memory type of the physical address",
        1 => "NC: non-cacheable, idempotent, weakly ordered",
        2 => "IO: non-cacheable, non-idempotent, strongly ordered",
        _ => "reserved",
    };
    v.push(field("PBMT [62:61]", pbmt.to_string(), pbmt_means));
    v.push(field(
        "N [63]",
        bit(raw, RISCV_PTE_N),
        "Svnapot contiguous range (not written by this format)",
    ));
    v
}
