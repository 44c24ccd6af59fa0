//! ARMv7 short descriptors (Arm ARM DDI 0406C B3.5.1 "Short-descriptor translation table
//! format descriptors", B3.8.2 "Short-descriptor format memory region attributes, with TEX
//! remap"; io-pgtable-arm-v7s.c `ARM_V7S_*`, `arm_v7s_prot_to_pte`, and the PRRR/NMRR that
//! `arm_v7s_alloc_pgtable` programs).

use devmmu_pagetable::fmt::arm_v7s::{
    V7S_ATTR_AF, V7S_ATTR_AP_RDONLY, V7S_ATTR_AP_UNPRIV, V7S_ATTR_B, V7S_ATTR_C, V7S_ATTR_NG,
    V7S_ATTR_S, V7S_ATTR_TEX_MASK, V7S_ATTR_TEX_SHIFT, V7S_CONT_SECTION, V7S_PAGE_ATTR_SHIFT,
    V7S_PAGE_MASK, V7S_PAGE_XN, V7S_PTE_TYPE_MASK, V7S_PTE_TYPE_PAGE, V7S_PTE_TYPE_TABLE,
    V7S_SECTION_ATTR_SHIFT, V7S_SECTION_MASK, V7S_SECTION_XN, V7S_TABLE_MASK,
};
use devmmu_pagetable::{ArmV7s, DmaAddr};

use super::{field, Field, Fields};

impl Fields for ArmV7s {
    fn raw_fields(level: usize, raw: u64, _: Option<DmaAddr>) -> Vec<Field> {
        // decode_lines refuses values above 32 bits.
        let raw = raw as u32;
        let ty = raw & V7S_PTE_TYPE_MASK;
        if level == 0 {
            let ty_means = match ty {
                0 => "fault",
                V7S_PTE_TYPE_TABLE => "page table: points at an L2 table",
                V7S_PTE_TYPE_PAGE if raw & V7S_CONT_SECTION == 0 => "section (1 MiB)",
                V7S_PTE_TYPE_PAGE => {
                    "supersection (16 MiB): not written by this format, decodes as invalid"
                }
                _ => "section with PXN: not written by this format, decodes as invalid",
            };
            let mut v = vec![field("type [1:0]", format!("{ty:#04b}"), ty_means)];
            match ty {
                V7S_PTE_TYPE_TABLE => v.push(field(
                    "address [31:10]",
                    format!("{:#x}", raw & V7S_TABLE_MASK),
                    "L2 table (256 entries, 1 KiB)",
                )),
                V7S_PTE_TYPE_PAGE => {
                    v.push(field(
                        "address [31:20]",
                        format!("{:#x}", raw & V7S_SECTION_MASK),
                        "output address",
                    ));
                    v.extend(leaf(raw, V7S_SECTION_ATTR_SHIFT, V7S_SECTION_XN, 4));
                    v.push(field(
                        "supersection [18]",
                        u32::from(raw & V7S_CONT_SECTION != 0).to_string(),
                        "16 MiB supersection (not supported here)",
                    ));
                }
                _ => {}
            }
            v
        } else {
            // Bit 1 set: a small page, bit 0 its XN; 0b01 a 64 KiB large page.
            let ty_means = match ty {
                0 => "fault",
                1 => "large page (64 KiB): not written by this format, decodes as invalid",
                _ => "small page (4 KiB); bit 0 is its XN",
            };
            let mut v = vec![field("type [1:0]", format!("{ty:#04b}"), ty_means)];
            if raw & V7S_PTE_TYPE_PAGE != 0 {
                v.push(field(
                    "address [31:12]",
                    format!("{:#x}", raw & V7S_PAGE_MASK),
                    "output address",
                ));
                v.extend(leaf(raw, V7S_PAGE_ATTR_SHIFT, V7S_PAGE_XN, 0));
            }
            v
        }
    }
}

/// The attributes of a section or small page: the 8-bit block at `shift` (AP\[0\]/AF, AP\[1\],
/// TEX\[2:0\], AP\[2\], S, nG), B, C, and XN (`xn`, at bit `xn_bit`).
fn leaf(raw: u32, shift: u32, xn: u32, xn_bit: u32) -> Vec<Field> {
    let one = |b: bool| u32::from(b).to_string();
    let attr = raw >> shift;
    let at = |mask: u32| mask.trailing_zeros() + shift;
    let tex = (attr & V7S_ATTR_TEX_MASK) >> V7S_ATTR_TEX_SHIFT;
    let (b, c) = (raw & V7S_ATTR_B != 0, raw & V7S_ATTR_C != 0);
    let index = (tex & 1) << 2 | u32::from(c) << 1 | u32::from(b);
    // PRRR/NMRR as arm_v7s_alloc_pgtable sets them: TR1 device, TR4 and TR7 normal, NMRR
    // inner/outer write-back write-allocate for 7 only; every other TRn is 0, strongly-ordered.
    let memory = match index {
        1 => "device memory (IOMMU_MMIO)",
        4 => "normal memory, non-cacheable",
        7 => "normal memory, write-back write-allocate (IOMMU_CACHE)",
        _ => "strongly-ordered (PRRR region not programmed by io-pgtable-arm-v7s)",
    };
    let ap =
        u32::from(attr & V7S_ATTR_AP_RDONLY != 0) << 1 | u32::from(attr & V7S_ATTR_AP_UNPRIV != 0);
    let ap_means = match ap {
        0 => "read/write, privileged only",
        1 => "read/write, any privilege (unprivileged allowed)",
        2 => "read-only, privileged only",
        _ => "read-only, any privilege",
    };
    let xn = field(
        &format!("XN [{xn_bit}]"),
        one(raw & xn != 0),
        "execute-never",
    );
    let mut v = vec![
        field("B [2]", one(b), "bufferable (remap index bit 0)"),
        field("C [3]", one(c), "cacheable (remap index bit 1)"),
        field(
            &format!("AF (AP[0]) [{}]", at(V7S_ATTR_AF)),
            one(attr & V7S_ATTR_AF != 0),
            "access flag (simplified AP model: 0 faults on first access)",
        ),
        field(
            &format!(
                "AP[2:1] [{},{}]",
                at(V7S_ATTR_AP_RDONLY),
                at(V7S_ATTR_AP_UNPRIV)
            ),
            format!("{ap:#04b}"),
            ap_means,
        ),
        field(
            &format!(
                "TEX [{}:{}]",
                at(V7S_ATTR_TEX_MASK) + 2,
                at(V7S_ATTR_TEX_MASK)
            ),
            format!("{tex:#05b}"),
            "with TEX remap only TEX[0] counts (remap index bit 2)",
        ),
        field(
            "TEX[0]:C:B",
            format!("{index:#05b}"),
            format!("remap index {index}: {memory}"),
        ),
        field(
            &format!("S [{}]", at(V7S_ATTR_S)),
            one(attr & V7S_ATTR_S != 0),
            "shareable",
        ),
        field(
            &format!("nG [{}]", at(V7S_ATTR_NG)),
            one(attr & V7S_ATTR_NG != 0),
            "not global: TLB entries are tagged with the ASID",
        ),
    ];
    // In bit order: a small page's XN is bit 0, a section's bit 4 (after B and C).
    v.insert(if xn_bit == 0 { 0 } else { 2 }, xn);
    v
}
