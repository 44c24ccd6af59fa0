//! Table pages for `devmmu pt`: a [`TableAlloc`] at fixed, readable bus addresses.
//!
//! Page `n` has bus address [`ARENA_BASE`] + n x 4 KiB, so a table built from the same
//! description always prints the same addresses; [`Arena`] is also the [`TableReader`] the walk
//! uses, reading entries by bus address as a device's walker does.

use std::ptr::NonNull;

use devmmu_pagetable::{DmaAddr, TableAlloc, TablePage, TableReader, TABLE_SIZE};

/// Bus address of the first table page: 2 GiB, below every format's root-register limit (the
/// IPU's 27-bit page number) and 32-bit DMA masks.
pub const ARENA_BASE: u64 = 0x8000_0000;

/// Pages an arena hands out at most (16 MiB of tables).
pub const ARENA_PAGES: usize = 4096;

#[repr(C, align(4096))]
struct Page([u8; TABLE_SIZE]);

/// Table pages on the heap, each at bus address `ARENA_BASE + index * 4096`.
#[derive(Default)]
pub struct Arena {
    /// Page `i`, or `None` once freed. Held as raw pointers from `Box::into_raw`: the page table
    /// writes through the `cpu` pointer it was given, and the reader reads through the same.
    pages: Vec<Option<NonNull<Page>>>,
}

impl Arena {
    /// Bus addresses of the live pages, ascending.
    pub fn live(&self) -> Vec<DmaAddr> {
        (0..self.pages.len())
            .filter(|&i| self.pages[i].is_some())
            .map(|i| DmaAddr(ARENA_BASE + (i * TABLE_SIZE) as u64))
            .collect()
    }
}

impl TableReader for Arena {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let off = addr.0.checked_sub(ARENA_BASE)? as usize;
        let (index, within) = (off / TABLE_SIZE, off % TABLE_SIZE);
        if within + bytes > TABLE_SIZE || !(bytes == 4 || bytes == 8) {
            return None;
        }
        let page = (*self.pages.get(index)?)?;
        let mut buf = [0u8; 8];
        // SAFETY: the page is live (not freed: its slot is Some), TABLE_SIZE bytes, and
        // `within + bytes <= TABLE_SIZE`; the page table writes it only through `&mut`, which
        // cannot coexist with the `&self` borrow of the table that owns this arena.
        unsafe {
            let src = page.as_ptr().cast::<u8>().add(within);
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), bytes);
        }
        Some(u64::from_le_bytes(buf))
    }
}

// SAFETY: every page is a fresh zeroed Box of TABLE_SIZE bytes aligned to TABLE_SIZE (the
// `Page` type's alignment), so `cpu` is aligned; its bus address ARENA_BASE + i * 4096 is
// aligned too and unique to it; it stays allocated until `free_table` or the arena's drop.
unsafe impl TableAlloc for Arena {
    fn alloc_table(&mut self) -> Option<TablePage> {
        if self.pages.len() >= ARENA_PAGES {
            return None;
        }
        let page = NonNull::from(Box::leak(Box::new(Page([0; TABLE_SIZE]))));
        let index = self.pages.len();
        self.pages.push(Some(page));
        Some(TablePage {
            cpu: page.cast(),
            dma: DmaAddr(ARENA_BASE + (index * TABLE_SIZE) as u64),
            token: index,
        })
    }

    unsafe fn free_table(&mut self, page: TablePage) {
        if let Some(slot) = self.pages.get_mut(page.token) {
            if let Some(p) = slot.take() {
                // SAFETY: `p` came from Box::leak in alloc_table and is freed once (the slot is
                // now None).
                drop(unsafe { Box::from_raw(p.as_ptr()) });
            }
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for p in self.pages.drain(..).flatten() {
            // SAFETY: as in free_table; the page table that used these pages is gone.
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        }
    }
}
