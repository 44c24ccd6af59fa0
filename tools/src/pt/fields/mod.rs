//! Every field of one IOPTE, in words: what `devmmu pt decode` prints.
//!
//! The meaning (invalid, table, leaf with its address and permissions) comes from the format's
//! own [`Format::decode`]; the raw fields are read with the bit constants of the format's file
//! (`devmmu_pagetable::fmt::*`), named after the spec, one file here per format file there.

mod amd_v1;
mod apple_dart;
mod arm_lpae;
mod arm_v7s;
mod ipu;
mod riscv;
mod vtd_ss;

use devmmu_pagetable::{DmaAddr, Entry, Format, PteWord};

/// One line of a decoded entry: field name, raw value, meaning.
pub type Field = (String, String, String);

/// A format whose entries `devmmu pt decode` can take apart field by field.
pub trait Fields: Format {
    /// The raw fields of `raw` as an entry at `level` (0 = root), in bit order as the spec lists
    /// them; `dummy` is the bus address of the IPU dummy page, if given.
    fn raw_fields(level: usize, raw: u64, dummy: Option<DmaAddr>) -> Vec<Field>;
}

/// A field from string slices.
pub(crate) fn field(name: &str, value: impl Into<String>, means: impl Into<String>) -> Field {
    (name.to_string(), value.into(), means.into())
}

/// `1` if any bit of `mask` is set in `raw`, else `0`.
pub(crate) fn bit(raw: u64, mask: u64) -> String {
    u64::from(raw & mask != 0).to_string()
}

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

/// The fields of `raw` as an entry of level `level` of format `F`: the meaning, then the raw
/// fields. `level` must be below `F::LEVELS` and `raw` fit an entry.
pub fn describe<F: Fields>(level: usize, raw: u64, dummy: Option<DmaAddr>) -> Vec<Field> {
    let pte = <F::Pte as PteWord>::from_u64(raw);
    let mut fields = vec![meaning::<F>(level, pte, dummy)];
    fields.extend(F::raw_fields(level, raw, dummy));
    fields
}
