//! ARM LPAE (VMSAv8-64) descriptors: stage 1 with the 4 KiB, 16 KiB and 64 KiB granules (one
//! attribute layout, the address bits differ), and stage 2 with the 4 KiB granule.

use devmmu_pagetable::fmt::arm_lpae::{
    MAIR_IDX_CACHE, MAIR_IDX_DEV, MAIR_IDX_NC, PTE_ADDR_MASK, PTE_AF, PTE_ATTRINDX_MASK,
    PTE_ATTRINDX_SHIFT, PTE_NG, PTE_NS, PTE_PXN, PTE_SH_MASK, PTE_TYPE_BLOCK, PTE_TYPE_MASK,
    PTE_TYPE_TABLE, PTE_UXN, PTE_VALID,
};
use devmmu_pagetable::fmt::arm_lpae_16k_64k::{
    PTE_ADDR_HI_MASK_64K, PTE_ADDR_MASK_16K, PTE_ADDR_MASK_64K,
};
use devmmu_pagetable::fmt::arm_lpae_s2::{
    PTE_HAP_READ, PTE_HAP_WRITE, PTE_MEMATTR_DEV, PTE_MEMATTR_MASK, PTE_MEMATTR_NC,
    PTE_MEMATTR_OIWB, PTE_MEMATTR_SHIFT, PTE_S2_XN, PTE_S2_XN1,
};
use devmmu_pagetable::{ArmLpae16k, ArmLpae4k, ArmLpae64k, ArmLpaeS2, DmaAddr, Format};

use super::{bit, field, Field, Fields};

/// Where a granule keeps the output address (Arm ARM DDI 0487 D8.3.1, "Descriptor formats").
struct Granule {
    /// Field name with its bits, e.g. `address [47:12]`.
    name: &'static str,
    /// The bits.
    mask: u64,
    /// Our level 0 is this Arm lookup level (1 for the 64 KiB granule's 48-bit root).
    first_arm_level: usize,
}

const G4K: Granule = Granule {
    name: "address [47:12]",
    mask: PTE_ADDR_MASK,
    first_arm_level: 0,
};
const G16K: Granule = Granule {
    name: "address [47:14]",
    mask: PTE_ADDR_MASK_16K,
    first_arm_level: 0,
};
const G64K: Granule = Granule {
    name: "address [47:16]",
    mask: PTE_ADDR_MASK_64K,
    first_arm_level: 1,
};

impl Fields for ArmLpae4k {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        stage1::<Self>(&G4K, level, raw)
    }
}

impl Fields for ArmLpae16k {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        stage1::<Self>(&G16K, level, raw)
    }
}

impl Fields for ArmLpae64k {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        stage1::<Self>(&G64K, level, raw)
    }
}

impl Fields for ArmLpaeS2 {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        let (mut v, leaf) = type_and_address::<Self>(&G4K, level, raw);
        if leaf {
            v.extend(stage2_attrs(raw));
        }
        v
    }
}

/// The type bits and the address (D8.3.1), and whether the descriptor carries leaf attributes
/// (valid and not a table descriptor).
fn type_and_address<F: Format>(g: &Granule, level: usize, raw: u64) -> (Vec<Field>, bool) {
    let ty = raw & PTE_TYPE_MASK;
    let last = level + 1 == F::LEVELS;
    let ty_means = if ty & PTE_VALID == 0 {
        "invalid (bit 0 clear)"
    } else if ty == PTE_TYPE_TABLE && !last {
        "table descriptor"
    } else if ty == PTE_TYPE_TABLE {
        "page descriptor"
    } else if ty == PTE_TYPE_BLOCK && !last && F::LEAF_LEVELS[level] {
        "block descriptor"
    } else {
        "reserved at this level: a translation fault"
    };
    let ty_means = match g.first_arm_level {
        0 => ty_means.to_string(),
        n => format!("{ty_means} (Arm lookup level {})", level + n),
    };
    let mut v = vec![field("type [1:0]", format!("{ty:#04b}"), ty_means)];
    if ty & PTE_VALID == 0 {
        return (v, false);
    }
    let table = ty == PTE_TYPE_TABLE && !last;
    v.push(field(
        g.name,
        format!("{:#x}", raw & g.mask),
        if table {
            "next-level table"
        } else {
            "output address"
        },
    ));
    if g.mask == PTE_ADDR_MASK_64K {
        // io-pgtable-arm.c iopte_to_paddr: with the 64 KiB granule, bits [15:12] hold
        // OA[51:48] (FEAT_LPA).
        let hi = raw & PTE_ADDR_HI_MASK_64K;
        v.push(field(
            "OA[51:48] [15:12]",
            format!("{:#x}", hi >> 12),
            if hi == 0 {
                "0: a 48-bit address"
            } else {
                "52-bit output (FEAT_LPA), beyond this 48-bit format: an address-size fault"
            },
        ));
    }
    (v, !table)
}

/// A stage-1 descriptor: type, address, and for a leaf the attributes (Arm ARM D8.3 "Stage 1
/// attribute fields"; io-pgtable-arm.c `arm_lpae_prot_to_pte` for `ARM_64_LPAE_S1`).
fn stage1<F: Format>(g: &Granule, level: usize, raw: u64) -> Vec<Field> {
    let (mut v, leaf) = type_and_address::<F>(g, level, raw);
    if !leaf {
        return v;
    }
    let idx = (raw & PTE_ATTRINDX_MASK) >> PTE_ATTRINDX_SHIFT;
    // The MAIR io-pgtable-arm.c programs (ARM_LPAE_MAIR_ATTR_*).
    let mair = match idx {
        MAIR_IDX_NC => "MAIR slot 0 = 0x44: normal memory, non-cacheable",
        MAIR_IDX_CACHE => "MAIR slot 1 = 0xff: normal memory, write-back cacheable",
        MAIR_IDX_DEV => "MAIR slot 2 = 0x04: device nGnRE memory (MMIO)",
        _ => "MAIR slot not programmed by io-pgtable-arm",
    };
    v.push(field("AttrIndx [4:2]", idx.to_string(), mair));
    v.push(field("NS [5]", bit(raw, PTE_NS), "non-secure (not used)"));
    let ap = (raw >> 6) & 3;
    let ap_means = match ap {
        0 => "read/write, privileged only",
        1 => "read/write, any privilege (unprivileged allowed)",
        2 => "read-only, privileged only",
        _ => "read-only, any privilege",
    };
    v.push(field("AP [7:6]", format!("{ap:#04b}"), ap_means));
    v.push(shareability(raw));
    v.push(field(
        "AF [10]",
        bit(raw, PTE_AF),
        "access flag (0: the first access faults)",
    ));
    v.push(field(
        "nG [11]",
        bit(raw, PTE_NG),
        "not global: TLB entries are tagged with the ASID",
    ));
    v.push(field(
        "PXN [53]",
        bit(raw, PTE_PXN),
        "privileged execute-never",
    ));
    v.push(field(
        "UXN [54]",
        bit(raw, PTE_UXN),
        "unprivileged execute-never",
    ));
    v
}

/// SH\[1:0\], bits \[9:8\], the same at both stages (D8.3 "Shareability").
fn shareability(raw: u64) -> Field {
    let sh = (raw & PTE_SH_MASK) >> 8;
    let sh_means = match sh {
        0 => "non-shareable",
        2 => "outer shareable",
        3 => "inner shareable",
        _ => "reserved",
    };
    field("SH [9:8]", format!("{sh:#04b}"), sh_means)
}

/// Stage-2 leaf attributes (Arm ARM D8.3 "Stage 2 attribute fields", D8.5 "Stage 2 memory type
/// and Cacheability attributes" without FEAT_S2FWB; io-pgtable-arm.c `arm_lpae_prot_to_pte` for
/// `ARM_64_LPAE_S2`).
fn stage2_attrs(raw: u64) -> Vec<Field> {
    let memattr = (raw & PTE_MEMATTR_MASK) >> PTE_MEMATTR_SHIFT;
    let cache = |c: u64| match c {
        1 => "non-cacheable",
        2 => "write-through",
        3 => "write-back",
        _ => "reserved",
    };
    let mut means = if memattr >> 2 == 0 {
        let kind = match memattr & 3 {
            0 => "nGnRnE",
            1 => "nGnRE",
            2 => "nGRE",
            _ => "GRE",
        };
        format!("device-{kind} memory")
    } else {
        format!(
            "normal memory, outer {}, inner {}",
            cache(memattr >> 2),
            cache(memattr & 3)
        )
    };
    let io_pgtable = match raw & PTE_MEMATTR_MASK {
        PTE_MEMATTR_OIWB => " (ARM_LPAE_PTE_MEMATTR_OIWB: IOMMU_CACHE)",
        PTE_MEMATTR_NC => " (ARM_LPAE_PTE_MEMATTR_NC)",
        PTE_MEMATTR_DEV => " (ARM_LPAE_PTE_MEMATTR_DEV: IOMMU_MMIO)",
        _ => "",
    };
    means.push_str(io_pgtable);
    let mut v = vec![field("MemAttr [5:2]", format!("{memattr:#06b}"), means)];
    let s2ap = (raw & (PTE_HAP_READ | PTE_HAP_WRITE)) >> 6;
    let s2ap_means = match s2ap {
        0 => "no access: every access faults",
        1 => "read-only",
        2 => "write-only",
        _ => "read/write",
    };
    v.push(field("S2AP [7:6]", format!("{s2ap:#04b}"), s2ap_means));
    v.push(shareability(raw));
    v.push(field(
        "AF [10]",
        bit(raw, PTE_AF),
        "access flag (0: the first access faults)",
    ));
    let xn = (raw & PTE_S2_XN) >> 53;
    let xn_means = if raw & PTE_S2_XN1 != 0 {
        "execute-never"
    } else if xn == 0 {
        "executable"
    } else {
        "executable (XN[0] alone matters only with FEAT_XNX)"
    };
    v.push(field("XN [54:53]", format!("{xn:#04b}"), xn_means));
    v
}
