//! The software walker: what a device's MMU does with a root pointer and an IOVA.
//!
//! Written apart from the update code on purpose: it reads table memory only through a
//! [`TableReader`] by bus address, as hardware does, so it sees exactly what a device would see
//! (for a non-coherent walker, only what was cleaned to memory). The device model uses it, and the
//! tests use it as an oracle independent of [`PageTable`](crate::PageTable)'s bookkeeping.

use crate::{format::Entry, AddressSizes, DmaAddr, Format, Iova, Prot, PteWord};

/// Reads table memory by bus address, as the device's walker reaches it.
pub trait TableReader {
    /// Reads the `bytes`-byte (4 or 8) little-endian entry at bus address `addr`, or `None` if
    /// nothing answers there (a bus error).
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64>;
}

/// A successful walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Bus address of the IOVA's byte: the leaf's address plus the offset inside the leaf.
    pub dma: DmaAddr,
    /// Permissions of the leaf.
    pub prot: Prot,
    /// Level of the leaf (0 = root).
    pub level: usize,
    /// IOVA of the start of the leaf.
    pub leaf_iova: Iova,
    /// Size of the leaf in bytes (4 KiB page, 2 MiB or 1 GiB block).
    pub leaf_size: u64,
}

/// Why a walk did not produce a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkFault {
    /// The IOVA is beyond the input size, or an entry holds an address beyond the output size
    /// (an address-size fault).
    AddressSize {
        /// The IOVA.
        iova: Iova,
    },
    /// An invalid entry at `level` (a translation fault).
    Translation {
        /// The IOVA.
        iova: Iova,
        /// Level of the invalid entry.
        level: usize,
    },
    /// Reading the entry at bus address `pte_addr` failed (an external abort on the walk).
    WalkAbort {
        /// The IOVA.
        iova: Iova,
        /// Level being read.
        level: usize,
        /// Bus address of the entry that could not be read.
        pte_addr: DmaAddr,
    },
}

/// Translates `iova` by walking the tables rooted at bus address `root` of format `F`, with the
/// format's full address sizes ([`AddressSizes::of`]).
///
/// Formats without valid bits (the Intel IPU MMU) never fault on an in-range IOVA: an unmapped
/// IOVA translates to the dummy page, exactly as on the hardware.
pub fn walk<F: Format, R: TableReader + ?Sized>(
    reader: &R,
    root: DmaAddr,
    iova: Iova,
) -> Result<Translation, WalkFault> {
    walk_with::<F, R>(reader, root, iova, AddressSizes::of::<F>())
}

/// [`walk`] for a table configured with `sizes`: an IOVA at or beyond `2^ias` is an
/// address-size fault, the walk starts at [`AddressSizes::start_level`] (the level of the
/// root table), and an entry whose address is at or beyond `2^oas` is an address-size fault
/// (Arm ARM DDI 0487, "Address size fault").
pub fn walk_with<F: Format, R: TableReader + ?Sized>(
    reader: &R,
    root: DmaAddr,
    iova: Iova,
    sizes: AddressSizes,
) -> Result<Translation, WalkFault> {
    let over = |bits: u32, v: u64| bits < 64 && v >> bits != 0;
    if over(sizes.ias, iova.0) {
        return Err(WalkFault::AddressSize { iova });
    }
    let mut table = root;
    for level in sizes.start_level::<F>()..F::LEVELS {
        let shift = F::level_shift(level);
        let bits = F::LEVEL_BITS[level];
        let index = (iova.0 >> shift) & ((1u64 << bits) - 1);
        let pte_addr = table + index * <F::Pte as PteWord>::BYTES as u64;
        let raw = reader
            .read_pte(pte_addr, <F::Pte as PteWord>::BYTES)
            .ok_or(WalkFault::WalkAbort {
                iova,
                level,
                pte_addr,
            })?;
        match F::decode(level, <F::Pte as PteWord>::from_u64(raw)) {
            Entry::Invalid => return Err(WalkFault::Translation { iova, level }),
            Entry::Table(a) | Entry::Leaf(a, _) if over(sizes.oas, a.0) => {
                return Err(WalkFault::AddressSize { iova })
            }
            Entry::Table(next) if level + 1 < F::LEVELS => table = next,
            Entry::Table(_) => return Err(WalkFault::Translation { iova, level }),
            Entry::Leaf(addr, prot) => {
                let size = 1u64 << shift;
                let offset = iova.0 & (size - 1);
                return Ok(Translation {
                    dma: addr + offset,
                    prot,
                    level,
                    leaf_iova: Iova(iova.0 - offset),
                    leaf_size: size,
                });
            }
        }
    }
    Err(WalkFault::Translation {
        iova,
        level: F::LEVELS - 1,
    })
}
