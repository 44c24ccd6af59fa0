//! The input and output address sizes of one page table (`io_pgtable_cfg.ias` / `.oas`), and the
//! level its walk starts at.

use crate::format::Geometry;
use crate::{Error, Format};

/// Address sizes of a page table, in bits: IOVAs are `0 .. 2^ias`, and every bus address an
/// entry holds (pages, blocks, tables) is below `2^oas`. The kernel's `io_pgtable_cfg.ias` and
/// `.oas`.
///
/// [`AddressSizes::of`] gives a format's full sizes (what [`PageTable::new`] uses). A narrower
/// input size can mean fewer levels: the walk starts at the highest level whose span still
/// covers `ias` (io-pgtable-arm.c: `levels = DIV_ROUND_UP(ias - pg_shift, bits_per_level)`), so
/// an ARM LPAE table with `ias` 32..=39 has its root at level 1 (TCR.T0SZ = 64 - ias, the
/// initial lookup level the Arm ARM derives from it).
///
/// [`PageTable::new`]: crate::PageTable::new
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressSizes {
    /// Input (IOVA) size in bits.
    pub ias: u32,
    /// Output (bus address) size in bits.
    pub oas: u32,
}

impl AddressSizes {
    /// The widest sizes of format `F`: [`Format::IOVA_BITS`] and [`Format::OA_BITS`].
    pub const fn of<F: Format>() -> Self {
        Self {
            ias: F::IOVA_BITS,
            oas: F::OA_BITS,
        }
    }

    /// Checks the sizes against what format `F` allows: `ias` in
    /// [`Format::MIN_IOVA_BITS`]`..=`[`Format::IOVA_BITS`], `oas` one of
    /// [`Format::OA_SIZES`]. Errors: [`Error::BadAddressSize`].
    pub fn check<F: Format>(self) -> Result<Self, Error> {
        if self.ias < F::MIN_IOVA_BITS || self.ias > F::IOVA_BITS {
            return Err(Error::BadAddressSize {
                what: "ias",
                bits: self.ias,
            });
        }
        if !F::OA_SIZES.contains(&self.oas) {
            return Err(Error::BadAddressSize {
                what: "oas",
                bits: self.oas,
            });
        }
        Ok(self)
    }

    /// The level the walk starts at for format `F`: the highest level whose span (the bytes
    /// one table of it maps) still covers `2^ias`.
    pub fn start_level<F: Format>(self) -> usize {
        let mut start = 0;
        for level in 1..F::LEVELS {
            let span = Geometry::<F>::SHIFT[level] + F::LEVEL_BITS[level];
            if span >= self.ias {
                start = level;
            }
        }
        start
    }
}
