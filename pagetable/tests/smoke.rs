//! Quick end-to-end checks of the basic paths (the thorough suites are in the other files).

use devmmu_pagetable::*;

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

/// Table pages at small bus addresses (0x1000_0000 + 4 KiB * slot) so every format can hold them.
type Pages = Vec<Option<Box<[u64; 512]>>>;
#[derive(Clone, Default)]
struct Arena(Rc<RefCell<Pages>>);
const BASE: u64 = 0x1000_0000;

unsafe impl TableAlloc for Arena {
    fn alloc_table(&mut self) -> Option<TablePage> {
        let mut v = self.0.borrow_mut();
        let slot = v.iter().position(|p| p.is_none()).unwrap_or(v.len());
        if slot == v.len() {
            v.push(None);
        }
        let mut page = Box::new([0u64; 512]);
        let cpu = NonNull::new(page.as_mut_ptr() as *mut u8).unwrap();
        v[slot] = Some(page);
        Some(TablePage {
            cpu,
            dma: DmaAddr(BASE + slot as u64 * 4096),
        })
    }
    unsafe fn free_table(&mut self, page: TablePage) {
        self.0.borrow_mut()[((page.dma.0 - BASE) / 4096) as usize] = None;
    }
}

impl TableReader for Arena {
    fn read_pte(&self, addr: DmaAddr, bytes: usize) -> Option<u64> {
        let v = self.0.borrow();
        let page = v
            .get(((addr.0.checked_sub(BASE)?) / 4096) as usize)?
            .as_ref()?;
        let off = (addr.0 % 4096) as usize;
        let b: &[u8; 4096] = unsafe { &*(page.as_ptr() as *const [u8; 4096]) };
        let mut x = [0u8; 8];
        x[..bytes].copy_from_slice(&b[off..off + bytes]);
        Some(u64::from_le_bytes(x))
    }
}

fn roundtrip<F: Format>(iova: u64, dma: u64, size: u64) {
    let arena = Arena::default();
    let mut pt: PageTable<F, _> =
        PageTable::new(arena.clone(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    pt.map(Iova(iova), DmaAddr(dma), size, Prot::RW, &mut g)
        .unwrap();
    for off in [0, 4096, size - 4096] {
        let (d, _) = pt.translate(Iova(iova + off)).unwrap();
        assert_eq!(d, DmaAddr(dma + off));
        let t = walk::<F, _>(&arena, pt.root(), Iova(iova + off + 5)).unwrap();
        assert_eq!(t.dma, DmaAddr(dma + off + 5));
    }
    assert_eq!(
        pt.map(Iova(iova), DmaAddr(dma), 4096, Prot::RW, &mut g),
        Err(Error::AlreadyMapped { iova: Iova(iova) })
    );
    let n = pt.unmap(Iova(iova), size, &mut g).unwrap();
    assert_eq!(n, size);
    assert!(pt.translate(Iova(iova)).is_none());
    pt.iotlb_sync(&mut g, |_, _| {});
    assert_eq!(pt.table_count(), 1);
}

#[test]
fn arm_roundtrip() {
    roundtrip::<ArmLpae4k>(0x4000_0000, 0x8000_0000, 1 << 30);
    roundtrip::<ArmLpae4k>(0x1000, 0x2000, 3 << 21);
}

#[test]
fn ipu_roundtrip() {
    roundtrip::<Ipu>(0x10_0000, 0x1_2345_6000, 8 << 20);
}

#[test]
fn arm_split() {
    let mut pt: PageTable<ArmLpae4k, _> =
        PageTable::new(HeapTableAlloc::new(), PageTableConfig::default()).unwrap();
    let mut g = Gather::new();
    pt.map(Iova(0), DmaAddr(0x4000_0000), 1 << 30, Prot::RW, &mut g)
        .unwrap();
    assert_eq!(pt.mappings().count(), 1);
    assert_eq!(pt.unmap(Iova(0x20_1000), 0x1000, &mut g).unwrap(), 0x1000);
    assert!(pt.translate(Iova(0x20_1000)).is_none());
    assert_eq!(
        pt.translate(Iova(0x20_2000)).unwrap().0,
        DmaAddr(0x4020_2000)
    );
    assert_eq!(
        pt.translate(Iova(0x20_0000)).unwrap().0,
        DmaAddr(0x4020_0000)
    );
    assert_eq!(
        pt.translate(Iova(0x3fff_f000)).unwrap().0,
        DmaAddr(0x7fff_f000)
    );
    // 511 2 MiB blocks + 511 pages
    assert_eq!(pt.mappings().count(), 511 + 511);
    assert_eq!(pt.stats().blocks_split, 2);
    pt.iotlb_sync(&mut g, |_, _| {});
}
