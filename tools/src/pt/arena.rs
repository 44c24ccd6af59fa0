//! Table memory for `devmmu pt`: a [`TableAlloc`] at fixed, readable bus addresses.
//!
//! Tables are placed one after the other in bus address from [`ARENA_BASE`], each at the next
//! multiple of its own size: a 4 KiB page on a 4 KiB boundary, a large table (16 KiB or 64 KiB:
//! ARM LPAE with the 16 KiB or 64 KiB granule, the ARMv7s L1 table, Apple DART tables) on a
//! boundary of its size, as [`TableAlloc::alloc_large_table`] requires. So a table built from
//! the same description always prints the same addresses, and a description that needs only
//! 4 KiB pages gets consecutive pages. [`Arena`] is also the [`TableReader`] the walk uses,
//! reading entries by bus address as a device's walker does.

use std::alloc::Layout;
use std::ptr::NonNull;

use devmmu_pagetable::{DmaAddr, TableAlloc, TablePage, TableReader, MAX_TABLE_SIZE, TABLE_SIZE};

/// Bus address of the first table: 2 GiB, below every format's root-register limit (the
/// IPU's 27-bit page number) and 32-bit DMA masks, and aligned to the largest table (64 KiB).
pub const ARENA_BASE: u64 = 0x8000_0000;

/// Bus address space the arena places tables in, in bytes (64 MiB from [`ARENA_BASE`], so every
/// table stays below 4 GiB for the 32-bit formats); also the most table memory it allocates.
pub const ARENA_BYTES: u64 = 64 << 20;

/// One table the arena handed out.
struct Slot {
    /// Bytes from [`ARENA_BASE`] to the table's bus address.
    offset: u64,
    /// Size in bytes: [`TABLE_SIZE`] or a large table's.
    bytes: usize,
    /// The table's memory, `None` once freed. Allocated with `layout(bytes)`; the page table
    /// writes through the `cpu` pointer it was given, and the reader reads through the same.
    cpu: Option<NonNull<u8>>,
}

/// The layout of a table of `bytes` bytes: aligned to its size (in CPU address too, as
/// [`TableAlloc`] requires). `None` unless `bytes` is a power of two.
fn layout(bytes: usize) -> Option<Layout> {
    Layout::from_size_align(bytes, bytes).ok()
}

/// Tables on the heap at bus addresses from [`ARENA_BASE`], in allocation order.
#[derive(Default)]
pub struct Arena {
    /// Every table handed out, by ascending `offset` (tokens are indices here).
    slots: Vec<Slot>,
    /// Bytes from [`ARENA_BASE`] to the end of the last table handed out.
    next: u64,
}

impl Arena {
    /// Bus addresses of the live tables, ascending.
    pub fn live(&self) -> Vec<DmaAddr> {
        self.slots
            .iter()
            .filter(|s| s.cpu.is_some())
            .map(|s| DmaAddr(ARENA_BASE + s.offset))
            .collect()
    }

    /// A zeroed table of `bytes` bytes (a power of two, at least [`TABLE_SIZE`]) at the next
    /// multiple of `bytes` in bus address, or `None` past [`ARENA_BYTES`] or without memory.
    fn alloc(&mut self, bytes: usize) -> Option<TablePage> {
        let layout = layout(bytes)?;
        let offset = self.next.checked_next_multiple_of(bytes as u64)?;
        if offset.checked_add(bytes as u64)? > ARENA_BYTES {
            return None;
        }
        // SAFETY: the layout has a non-zero size (at least TABLE_SIZE).
        let cpu = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        let token = self.slots.len();
        self.slots.push(Slot {
            offset,
            bytes,
            cpu: Some(cpu),
        });
        self.next = offset + bytes as u64;
        Some(TablePage {
            cpu,
            dma: DmaAddr(ARENA_BASE + offset),
            token,
        })
    }
}

impl TableReader for Arena {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let off = addr.0.checked_sub(ARENA_BASE)?;
        if !(bytes == 4 || bytes == 8) {
            return None;
        }
        // The last table starting at or below `off` (offsets ascend with the index).
        let slot = &self.slots[self
            .slots
            .partition_point(|s| s.offset <= off)
            .checked_sub(1)?];
        let within = usize::try_from(off - slot.offset).ok()?;
        if within + bytes > slot.bytes {
            return None;
        }
        let cpu = slot.cpu?;
        let mut buf = [0u8; 8];
        // SAFETY: the table is live (its slot holds the pointer), `slot.bytes` long, and
        // `within + bytes <= slot.bytes`; the page table writes it only through `&mut`, which
        // cannot coexist with the `&self` borrow of the table that owns this arena.
        unsafe {
            let src = cpu.as_ptr().add(within);
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), bytes);
        }
        Some(u64::from_le_bytes(buf))
    }
}

// SAFETY: every table is fresh zeroed heap memory of its size, allocated with an alignment of its
// size (so `cpu` is aligned to it, and to TABLE_SIZE); its bus address ARENA_BASE + offset is a
// multiple of its size too (ARENA_BASE is a multiple of MAX_TABLE_SIZE, offset of the size) and
// no two tables' bus ranges overlap (offsets only grow); it stays allocated until `free_table`
// or the arena's drop.
unsafe impl TableAlloc for Arena {
    fn alloc_table(&mut self) -> Option<TablePage> {
        self.alloc(TABLE_SIZE)
    }

    fn alloc_large_table(&mut self, bytes: usize) -> Option<TablePage> {
        if !bytes.is_power_of_two() || bytes <= TABLE_SIZE || bytes > MAX_TABLE_SIZE {
            return None;
        }
        self.alloc(bytes)
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        // A forged token (one not matching the slot's address) frees nothing.
        let Some(slot) = self.slots.get_mut(page.token) else {
            return;
        };
        if ARENA_BASE + slot.offset != page.dma.0 {
            return;
        }
        if let (Some(p), Some(layout)) = (slot.cpu.take(), layout(slot.bytes)) {
            // SAFETY: `p` came from alloc_zeroed with this layout in `alloc`, and is freed once
            // (the slot is now None).
            unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for s in self.slots.drain(..) {
            if let (Some(p), Some(layout)) = (s.cpu, layout(s.bytes)) {
                // SAFETY: as in free_table; the page table that used these tables is gone.
                unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_are_aligned_to_their_size_and_readable_whole() {
        let mut a = Arena::default();
        // 4 KiB at 0x80000000; a 16 KiB table must skip to 0x80004000; a 64 KiB one to
        // 0x80010000; the next 4 KiB page follows it at 0x80020000.
        let p = a.alloc_table().unwrap();
        let l16 = a.alloc_large_table(16 << 10).unwrap();
        let l64 = a.alloc_large_table(64 << 10).unwrap();
        let q = a.alloc_table().unwrap();
        assert_eq!(
            [p.dma.0, l16.dma.0, l64.dma.0, q.dma.0],
            [0x8000_0000, 0x8000_4000, 0x8001_0000, 0x8002_0000]
        );
        assert_eq!(l64.cpu.as_ptr() as usize % (64 << 10), 0);
        // SAFETY: the last 8 bytes of the live 64 KiB table.
        unsafe { (l64.cpu.as_ptr().add(0xfff8) as *mut u64).write(0x1234_5678_9abc_def0) };
        assert_eq!(
            a.read_pte(DmaAddr(0x8001_fff8), 8),
            Some(0x1234_5678_9abc_def0)
        );
        assert_eq!(a.read_pte(DmaAddr(0x8001_fffc), 4), Some(0x1234_5678));
        // The gap between the first page and the 16 KiB table is no table; nor is a read that
        // runs past a table's end, nor an address below the arena.
        assert_eq!(a.read_pte(DmaAddr(0x8000_1000), 8), None);
        assert_eq!(a.read_pte(DmaAddr(0x8000_7ffc), 8), None);
        assert_eq!(a.read_pte(DmaAddr(0x7fff_fff8), 8), None);
        // Sizes the trait does not ask for are refused.
        assert!(a.alloc_large_table(TABLE_SIZE).is_none());
        assert!(a.alloc_large_table(128 << 10).is_none());
        assert!(a.alloc_large_table(24 << 10).is_none());
        // SAFETY: from this arena, not used again.
        unsafe { a.free_table(l16) };
        assert_eq!(a.read_pte(DmaAddr(0x8000_4000), 8), None);
        assert_eq!(
            a.live(),
            [
                DmaAddr(0x8000_0000),
                DmaAddr(0x8001_0000),
                DmaAddr(0x8002_0000)
            ]
        );
    }
}
