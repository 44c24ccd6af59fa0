//! The registry of device MMU formats: the one place a format is registered.
//!
//! The `mmu_formats!` invocation below lists every format a device's MMU may use, one entry
//! each: the [`MmuFormat`] variant with its doc, the `devmmu_pagetable` type implementing
//! [`Format`], and how MMUs of that format invalidate their TLB. From that one list it generates:
//!
//! - [`MmuFormat`] and [`MmuFormat::ALL`];
//! - `dispatch_format!(fmt, F => expr)`: `expr` with `F` the format type of `fmt`, compiled once
//!   per format, so there is no `dyn` between a map request and the PTE store (design decision
//!   1). [`MmuFormat`]'s properties ([`MmuFormat::name`], [`MmuFormat::iova_bits`], ...) are the
//!   type's [`Format`] constants through it; the simulated device's walk and
//!   [`Vm::new`](crate::vm::Vm::new) (to create the page table) use it too;
//! - [`PerFormat`]`<K>` and `dispatch_per_format!(value, x => expr)`: a value of the type family
//!   `K` for whichever format (a VM's page table, `PageTable<F, TablePool>`), and code on it
//!   compiled once per format.
//!
//! Adding a format takes its file under `pagetable/src/fmt/` (its type implementing [`Format`])
//! and one entry here; the command line (`devmmu camera --mmu`) lists the registry's formats by
//! name. Code about one particular format (tests of its table geometry) keeps its own `match`,
//! which the compiler points at when a format is added.

use devmmu_pagetable::{Format, Prot};

use super::TlbInvalidation;

/// A family of types with one member per format: `Of<F>` for format type `F` (e.g. a page table
/// of that format). [`PerFormat`] holds the member of one registered format.
pub(crate) trait FormatFamily {
    /// The member for format `F`.
    type Of<F: Format>;
}

/// A registered format type: builds the [`PerFormat`] variant of its format.
pub(crate) trait RegisteredFormat: Format {
    /// `value` as the [`PerFormat`] variant of this format.
    fn wrap<K: FormatFamily>(value: K::Of<Self>) -> PerFormat<K>;
}

/// Generates everything that lists the formats from one list (see the module doc).
///
/// Each entry: the variant's doc (its first line is the one-line summary a command line shows,
/// [`MmuFormat::summary`]), then `Variant => format type, tlb: TlbInvalidation;`.
macro_rules! mmu_formats {
    ($(
        #[doc = $summary:literal]
        $(#[doc = $doc:literal])*
        $variant:ident => $ty:ty, tlb: $tlb:expr;
    )+) => {
        /// The page-table format of a device's MMU: one variant per format of the registry
        /// (`mm/src/device/format.rs`, the one place a format is registered).
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum MmuFormat {
            $(
                #[doc = $summary]
                $(#[doc = $doc])*
                $variant,
            )+
        }

        impl MmuFormat {
            /// Every registered format, in the registry's order.
            pub const ALL: &'static [MmuFormat] = &[$(MmuFormat::$variant),+];

            /// The first line of the variant's doc as written, before trimming.
            fn summary_line(self) -> &'static str {
                match self {
                    $(MmuFormat::$variant => $summary,)+
                }
            }

            /// How the MMUs this format comes from invalidate their TLB: the IPU MMU has one
            /// whole-TLB invalidate register (ipu6-mmu.c `tlb_invalidate`), an ARM SMMU
            /// invalidates by VA and ASID. The usual [`DeviceConfig::tlb_invalidation`] of a
            /// device of this format (a device may say otherwise).
            ///
            /// [`DeviceConfig::tlb_invalidation`]: crate::device::DeviceConfig::tlb_invalidation
            pub fn tlb_invalidation(self) -> TlbInvalidation {
                match self {
                    $(MmuFormat::$variant => $tlb,)+
                }
            }
        }

        /// One value of `K::Of<F>` for whichever registered format `F`: a variant per format,
        /// so code on it is monomorphised per format (`dispatch_per_format!`).
        pub(crate) enum PerFormat<K: FormatFamily> {
            $($variant(K::Of<$ty>),)+
        }

        $(
            impl RegisteredFormat for $ty {
                fn wrap<K: FormatFamily>(value: K::Of<Self>) -> PerFormat<K> {
                    PerFormat::$variant(value)
                }
            }
        )+

        /// `dispatch_format!(fmt, F => expr)`: `expr` with the type `F` the format type of the
        /// [`MmuFormat`] `fmt` (static dispatch: `expr` is compiled once per format).
        macro_rules! dispatch_format {
            ($fmt:expr, $F:ident => $body:expr) => {
                match $fmt {
                    $($crate::device::MmuFormat::$variant => {
                        type $F = $ty;
                        $body
                    })+
                }
            };
        }

        /// `dispatch_per_format!(value, x => expr)`: `expr` with `x` bound to the content of the
        /// [`PerFormat`] `value` (or a reference to it, for `&value` / `&mut value`), compiled
        /// once per format.
        macro_rules! dispatch_per_format {
            ($value:expr, $x:ident => $body:expr) => {
                match $value {
                    $($crate::device::PerFormat::$variant($x) => $body,)+
                }
            };
        }
    };
}

mmu_formats! {
    /// Intel IPU MMU: 2 levels of 1024 32-bit entries, dummy page for empty entries.
    ///
    /// The IPU3/IPU6 format: 32-bit IOVA, 4 KiB pages, an entry holds the bus address >> 12,
    /// empty entries point at a dummy page ([`devmmu_pagetable::Ipu`]).
    Ipu => devmmu_pagetable::Ipu, tlb: TlbInvalidation::All;
    /// ARM LPAE stage 1, 4 KiB granule.
    ///
    /// 48-bit IOVA, 4 levels, 4 KiB pages and 2 MiB / 1 GiB blocks
    /// ([`devmmu_pagetable::ArmLpae4k`]).
    ArmLpae4k => devmmu_pagetable::ArmLpae4k, tlb: TlbInvalidation::Range;
}

pub(crate) use {dispatch_format, dispatch_per_format};

impl<K: FormatFamily> PerFormat<K> {
    /// `value`, the member of the family for format type `F`.
    pub(crate) fn new<F: RegisteredFormat>(value: K::Of<F>) -> Self {
        F::wrap(value)
    }
}

impl MmuFormat {
    /// Short name: `"ipu"` or `"arm-lpae-4k"` (as on the command line; [`Format::NAME`]).
    pub fn name(self) -> &'static str {
        dispatch_format!(self, F => F::NAME)
    }

    /// The format named `name` ([`MmuFormat::name`]), if one is registered.
    pub fn from_name(name: &str) -> Option<MmuFormat> {
        MmuFormat::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// One line saying what the format is, for a command line's help: the first line of the
    /// variant's doc, without its final period (as clap shows a doc comment).
    pub fn summary(self) -> &'static str {
        let line = self.summary_line().trim();
        line.strip_suffix('.').unwrap_or(line)
    }

    /// Whether the MMU's TLB may cache translations of empty entries, so that a map is followed
    /// by a TLB invalidation too ([`Format::TLB_CACHES_EMPTY`]: the IPU format, whose empty
    /// entries point at a dummy page).
    pub fn tlb_caches_empty(self) -> bool {
        dispatch_format!(self, F => F::TLB_CACHES_EMPTY)
    }

    /// Width of the device's IOVA space in bits ([`Format::IOVA_BITS`]).
    pub fn iova_bits(self) -> u32 {
        dispatch_format!(self, F => F::IOVA_BITS)
    }

    /// Leaf sizes the format supports, as a bit mask of byte sizes (`pgsize_bitmap`,
    /// [`Format::page_sizes`]).
    pub fn page_sizes(self) -> u64 {
        dispatch_format!(self, F => F::page_sizes())
    }

    /// Width in bits of the bus addresses the format's entries hold (table pointers and leaves):
    /// 44 for the IPU format (a 32-bit entry holds the address >> 12), 48 for ARM LPAE
    /// ([`Format::OA_BITS`]).
    pub fn oa_bits(self) -> u32 {
        dispatch_format!(self, F => F::OA_BITS)
    }

    /// Width in bits of the root table's bus address as the MMU's root register holds it
    /// ([`Format::ROOT_BITS`]): 39 for the IPU format (`REG_L1_PHYS` takes a 27-bit page
    /// number), 48 for ARM LPAE (TTBR).
    pub fn root_bits(self) -> u32 {
        dispatch_format!(self, F => F::ROOT_BITS)
    }

    /// What a leaf written with `prot` grants, as the format encodes it
    /// ([`Format::effective_prot`]): e.g. the IPU format has no permission bits and grants
    /// read+write whatever `prot` says.
    pub fn effective_prot(self, prot: Prot) -> Prot {
        dispatch_format!(self, F => F::effective_prot(prot))
    }

    /// Walks the tables of this format from `root` for `iova`, reading every entry through
    /// `reader` (devmmu-pagetable's [`walk`](devmmu_pagetable::walk)): what a device's MMU
    /// does. A driver whose device has no hardware walker of its own (the real-kernel tier's
    /// edu driver) uses it to translate, with a reader that fetches each entry by DMA.
    ///
    /// # Errors
    /// The [`WalkFault`](devmmu_pagetable::WalkFault) the hardware would report.
    pub fn walk(
        self,
        reader: &dyn devmmu_pagetable::TableReader,
        root: devmmu_pagetable::DmaAddr,
        iova: devmmu_pagetable::Iova,
    ) -> Result<devmmu_pagetable::Translation, devmmu_pagetable::WalkFault> {
        dispatch_format!(self, F => devmmu_pagetable::walk::<F, _>(reader, root, iova))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        for &f in MmuFormat::ALL {
            assert_eq!(MmuFormat::from_name(f.name()), Some(f));
            assert!(
                !f.summary().is_empty() && !f.summary().ends_with('.'),
                "{f:?}"
            );
        }
        assert_eq!(MmuFormat::from_name("bogus"), None);
        assert_eq!(MmuFormat::ALL, [MmuFormat::Ipu, MmuFormat::ArmLpae4k]);
        assert_eq!(
            MmuFormat::ALL.iter().map(|f| f.name()).collect::<Vec<_>>(),
            ["ipu", "arm-lpae-4k"]
        );
    }
}
