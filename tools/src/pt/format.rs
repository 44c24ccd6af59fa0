//! The `--format` of `devmmu pt`: every format of `devmmu-pagetable`, by the name its field
//! uses, and the dispatch from that name to the format's type.
//!
//! This is not the device registry's [`MmuFormat`](devmmu_mm::device::MmuFormat) (the formats a
//! simulated device's MMU may use): `pt` reads and writes tables of any format, with no device.
//! The registry's names (`ipu`, `arm-lpae-4k`) are spelled the same here.

use clap::ValueEnum;

/// A page-table format, as `devmmu pt --format` names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum PtFormat {
    /// Intel IPU3/IPU6 MMU, 2 levels of 1024 32-bit entries (ipu6-mmu.c, ipu3-mmu.c).
    #[value(name = "ipu")]
    Ipu,
    /// ARM SMMU or GPU MMU, LPAE stage 1, 4 KiB granule (io-pgtable-arm.c).
    #[value(name = "arm-lpae-4k")]
    ArmLpae4k,
    /// ARM SMMU, LPAE stage 1, 16 KiB granule, 16 KiB tables (io-pgtable-arm.c).
    #[value(name = "arm-lpae-16k")]
    ArmLpae16k,
    /// ARM SMMU, LPAE stage 1, 64 KiB granule, 64 KiB tables (io-pgtable-arm.c).
    #[value(name = "arm-lpae-64k")]
    ArmLpae64k,
    /// ARM SMMU, LPAE stage 2, 4 KiB granule (io-pgtable-arm.c, ARM_64_LPAE_S2).
    #[value(name = "arm-lpae-s2", alias = "arm-lpae-s2-4k")]
    ArmLpaeS2,
    /// ARMv7 short descriptors: MediaTek, Renesas and older ARM IOMMUs (io-pgtable-arm-v7s.c).
    #[value(name = "arm-v7s")]
    ArmV7s,
    /// Apple DART of the M1 (t8103), 16 KiB pages (io-pgtable-dart.c).
    #[value(name = "dart1", alias = "apple-dart1")]
    Dart1,
    /// Apple DART2 (t8110, t6000), 16 KiB pages (io-pgtable-dart.c).
    #[value(name = "dart2", alias = "apple-dart2")]
    Dart2,
    /// RISC-V IOMMU first stage, Sv39, 3 levels (generic_pt/fmt/riscv.h).
    #[value(name = "riscv-sv39")]
    RiscvSv39,
    /// RISC-V IOMMU first stage, Sv48, 4 levels (generic_pt/fmt/riscv.h).
    #[value(name = "riscv-sv48")]
    RiscvSv48,
    /// Intel VT-d second stage, 4 levels (generic_pt/fmt/vtdss.h).
    #[value(name = "vtd-ss")]
    VtdSs,
    /// AMD IOMMU v1 host page tables, 4 levels (generic_pt/fmt/amdv1.h).
    #[value(name = "amd-v1")]
    AmdV1,
}

impl PtFormat {
    /// The name `--format` takes (as printed in `pt`'s output; the crate's own
    /// [`Format::NAME`](devmmu_pagetable::Format::NAME) is accepted as an alias where it differs).
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }
}

/// `$body` with `$F` the `devmmu_pagetable` format type of the [`PtFormat`] `$fmt`: compiled
/// once per format, no `dyn`.
macro_rules! per_format {
    ($fmt:expr, $F:ident => $body:expr) => {{
        use $crate::pt::format::PtFormat as P;
        match $fmt {
            P::Ipu => {
                type $F = devmmu_pagetable::Ipu;
                $body
            }
            P::ArmLpae4k => {
                type $F = devmmu_pagetable::ArmLpae4k;
                $body
            }
            P::ArmLpae16k => {
                type $F = devmmu_pagetable::ArmLpae16k;
                $body
            }
            P::ArmLpae64k => {
                type $F = devmmu_pagetable::ArmLpae64k;
                $body
            }
            P::ArmLpaeS2 => {
                type $F = devmmu_pagetable::ArmLpaeS2;
                $body
            }
            P::ArmV7s => {
                type $F = devmmu_pagetable::ArmV7s;
                $body
            }
            P::Dart1 => {
                type $F = devmmu_pagetable::AppleDart1;
                $body
            }
            P::Dart2 => {
                type $F = devmmu_pagetable::AppleDart2;
                $body
            }
            P::RiscvSv39 => {
                type $F = devmmu_pagetable::RiscvSv39;
                $body
            }
            P::RiscvSv48 => {
                type $F = devmmu_pagetable::RiscvSv48;
                $body
            }
            P::VtdSs => {
                type $F = devmmu_pagetable::VtdSs;
                $body
            }
            P::AmdV1 => {
                type $F = devmmu_pagetable::AmdV1;
                $body
            }
        }
    }};
}

pub(crate) use per_format;
