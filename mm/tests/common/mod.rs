//! Set-up shared by the device-side tests (`vm.rs`, `model.rs`): a simulated machine with a
//! device that has its own MMU, in any combination of MMU format (every registered one) x
//! data/walker coherency x system DMA ops, and the helpers that read a BO the way a driver must
//! (inside a CPU access bracket) or the way RAM holds it (what a non-coherent device sees).
//!
//! The model's `SimConfig` is the hardware's truth and `DeviceConfig` the driver's belief; a
//! [`RigOptions`] can make them differ to simulate a driver bug.

// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use devmmu_mm::bo::{Bo, BoFlags, CpuAccess};
use devmmu_mm::device::{Device, DeviceConfig, DeviceTlb, MmuFormat};
use devmmu_mm::dma::{DmaMask, Platform};
use devmmu_mm::model::{FaultReason, SimConfig, SimDevice, SimMmu};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysAddr, PhysMem, PAGE_SIZE};
use devmmu_mm::vm::Vm;
use devmmu_pagetable::{DmaAddr, Iova};

/// 4 GiB: the default memory map puts buffers above it, tables and the swiotlb pool below.
pub const FOUR_GIB: u64 = 1 << 32;

/// One hardware/platform combination.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Combo {
    /// The device's MMU format.
    pub mmu: MmuFormat,
    /// Whether the device's data path and page-table walker snoop the CPU caches.
    pub coherent: bool,
    /// Whether the device sits behind a system IOMMU (else direct DMA, with swiotlb).
    pub iommu: bool,
}

impl Combo {
    /// Every combination (8 with the 2 formats), formats outermost.
    pub fn all() -> Vec<Combo> {
        let mut out = Vec::with_capacity(4 * MmuFormat::ALL.len());
        for &mmu in MmuFormat::ALL {
            for coherent in [false, true] {
                for iommu in [false, true] {
                    out.push(Combo {
                        mmu,
                        coherent,
                        iommu,
                    });
                }
            }
        }
        out
    }

    /// Whether the format is the Intel IPU one (unbound IOVAs hit the dummy page).
    pub fn is_ipu(self) -> bool {
        self.mmu == MmuFormat::Ipu
    }
}

impl fmt::Display for Combo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.mmu.name(),
            if self.coherent {
                "coherent"
            } else {
                "non-coherent"
            },
            if self.iommu { "iommu" } else { "direct" }
        )
    }
}

/// Runs `f` over every combination; a failure names the combination in its message through the
/// `Display` the closure is expected to put in its asserts.
pub fn for_each_combo(mut f: impl FnMut(Combo)) {
    for c in Combo::all() {
        f(c);
    }
}

/// A device TLB hook that forwards nothing: a driver whose invalidations never reach the
/// hardware. The simulated device keeps using the real `SimMmu`, whose TLB then goes stale.
#[derive(Debug, Default)]
pub struct NoInvalidate;

impl DeviceTlb for NoInvalidate {
    fn invalidate_range(&self, _asid: u32, _iova: Iova, _size: u64) {}
    fn invalidate_all(&self) {}
}

/// A device TLB hook that turns every invalidation into a leaf-only one: a driver that never
/// invalidates walk caches. The TLB's leaf entries go; the cached table descriptors stay.
#[derive(Debug)]
pub struct LeafOnly(pub Arc<SimMmu>);

impl DeviceTlb for LeafOnly {
    fn invalidate_range(&self, asid: u32, iova: Iova, size: u64) {
        self.0.invalidate_leaf(asid, iova, size);
    }
    fn invalidate_all(&self) {
        self.0.invalidate_all();
    }
}

/// How to build a [`Rig`] beyond its [`Combo`].
#[derive(Clone, Copy, Debug)]
pub struct RigOptions {
    /// The combination.
    pub combo: Combo,
    /// The device's DMA mask (32 bits by default: a camera ISP, so direct DMA bounces buffers
    /// above 4 GiB through swiotlb).
    pub mask: DmaMask,
    /// What the driver believes about the walker, if different from the hardware (`None`: the
    /// driver is right).
    pub driver_coherent_walk: Option<bool>,
    /// Entries of the device TLB.
    pub tlb_entries: usize,
    /// Whether the driver's TLB invalidations are dropped ([`NoInvalidate`]).
    pub skip_invalidation: bool,
    /// Whether the driver's invalidations are all leaf-only ([`LeafOnly`]).
    pub leaf_only_invalidation: bool,
    /// Whether the hardware's walker snoops the CPU caches, if different from its data path
    /// (`None`: as `combo.coherent`).
    pub hw_coherent_walk: Option<bool>,
    /// Whether the device accepts protections its MMU format cannot enforce
    /// (`DeviceConfig::accept_unenforced_prot`).
    pub accept_unenforced_prot: bool,
}

impl RigOptions {
    /// Defaults for `combo`: 32-bit mask, a correct driver, a 64-entry TLB.
    pub fn new(combo: Combo) -> RigOptions {
        RigOptions {
            combo,
            mask: DmaMask::bits(32),
            driver_coherent_walk: None,
            tlb_entries: 64,
            skip_invalidation: false,
            leaf_only_invalidation: false,
            hw_coherent_walk: None,
            accept_unenforced_prot: false,
        }
    }
}

/// A simulated machine with one attached device and its model.
pub struct Rig {
    /// The combination it was built for.
    pub combo: Combo,
    /// Physical memory, in the model cache mode (RAM and CPU view differ until synced).
    pub phys: Arc<PhysMem>,
    /// The hardware MMU (TLB and fault log).
    pub mmu: Arc<SimMmu>,
    /// The driver's device.
    pub device: Arc<Device>,
    /// The simulated device's DMA engine.
    pub sim: SimDevice,
}

impl Rig {
    /// A correct driver on `combo`.
    pub fn new(combo: Combo) -> Rig {
        Rig::with(RigOptions::new(combo))
    }

    /// A rig built as `opts` says.
    pub fn with(opts: RigOptions) -> Rig {
        let combo = opts.combo;
        let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model).unwrap();
        let platform = Platform {
            system_iommu: combo.iommu,
            debug: true,
            ..Platform::default()
        };
        let hw_walk = opts.hw_coherent_walk.unwrap_or(combo.coherent);
        let config = DeviceConfig {
            name: format!("dev {combo}"),
            dma_mask: opts.mask,
            coherent: combo.coherent,
            coherent_walk: opts.driver_coherent_walk.unwrap_or(hw_walk),
            mmu: combo.mmu,
            tlb_invalidation: combo.mmu.tlb_invalidation(),
            accept_unenforced_prot: opts.accept_unenforced_prot,
        };
        let mmu = SimMmu::new(SimConfig {
            tlb_entries: opts.tlb_entries,
            coherent_walk: hw_walk,
            coherent: combo.coherent,
        });
        let hook: Arc<dyn DeviceTlb> = if opts.skip_invalidation {
            Arc::new(NoInvalidate)
        } else if opts.leaf_only_invalidation {
            Arc::new(LeafOnly(mmu.clone()))
        } else {
            mmu.clone()
        };
        let device = Device::attach(&phys, config, &platform, hook).unwrap();
        let sim = SimDevice::new(device.clone(), mmu.clone());
        Rig {
            combo,
            phys,
            mmu,
            device,
            sim,
        }
    }

    /// A new VM on the device.
    pub fn vm(&self) -> Vm {
        Vm::new(&self.device).unwrap()
    }

    /// A BO of `pages` 4 KiB pages, scattered (not one physical run) and entirely above 4 GiB,
    /// as the camera's ring buffers are.
    pub fn bo(&self, pages: u64) -> Arc<Bo> {
        let bo = Bo::new(&self.phys, pages * PAGE_SIZE, BoFlags::default()).unwrap();
        assert!(
            bo.pages().iter().all(|p| p.0 >= FOUR_GIB),
            "{}: BO pages must lie above 4 GiB",
            self.combo
        );
        if pages > 2 {
            assert!(
                bo.segments().len() > 1,
                "{}: BO of {pages} pages should be scattered",
                self.combo
            );
        }
        bo
    }

    /// Asserts that `r`, the result of a device access at `iova` in `vm`, is what an unbound
    /// IOVA gives: a translation fault (ARM LPAE, at `arm_level` if given) or a dummy-page access
    /// (Intel IPU).
    pub fn assert_unbound<T: fmt::Debug>(
        &self,
        r: Result<T, devmmu_mm::model::Fault>,
        iova: Iova,
        arm_level: Option<usize>,
    ) {
        let f = r.expect_err(&format!("{}: access at {iova} should fault", self.combo));
        assert_eq!(f.iova, iova, "{}: fault address", self.combo);
        match self.combo.mmu {
            MmuFormat::Ipu => assert_eq!(f.reason, FaultReason::DummyPage, "{}", self.combo),
            MmuFormat::ArmLpae4k => match (f.reason, arm_level) {
                (FaultReason::Translation { level }, Some(want)) => {
                    assert_eq!(level, want, "{}: translation fault level", self.combo)
                }
                (FaultReason::Translation { .. }, None) => {}
                (other, _) => panic!(
                    "{}: expected a translation fault, got {other:?}",
                    self.combo
                ),
            },
        }
    }

    /// The bytes at bus address `dma` as this device reads them (e.g. the IPU dummy page).
    pub fn bus_bytes(&self, dma: DmaAddr, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.device.dma_ops().bus_read(dma, &mut buf).unwrap();
        buf
    }
}

/// `len` pseudo-random bytes (the splitmix64 finalizer of index and `seed`, which is not
/// linear), so that patterns of different seeds are not shifted copies of each other and a
/// misplaced window shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let mut x = i ^ (u64::from(seed) << 40);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (x ^ (x >> 31)) as u8
        })
        .collect()
}

/// Reads BO bytes as a driver must while devices have it attached: inside a READ bracket.
pub fn cpu_read(bo: &Bo, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let g = bo.begin_cpu_access(CpuAccess::READ).unwrap();
    bo.read(offset, &mut buf).unwrap();
    g.end().unwrap();
    buf
}

/// Writes BO bytes inside a WRITE bracket, so the devices see them when it ends.
pub fn cpu_write(bo: &Bo, offset: u64, data: &[u8]) {
    let g = bo.begin_cpu_access(CpuAccess::WRITE).unwrap();
    bo.write(offset, data).unwrap();
    g.end().unwrap();
}

/// BO bytes as RAM holds them (what a non-coherent device would read), page by page through
/// the physical addresses: no sync, no bracket, so it observes without changing anything.
pub fn ram_bytes(bo: &Bo, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for_each_page(bo, offset, len, |pa, range| {
        bo.phys().device_read(pa, &mut out[range], false).unwrap();
    });
    out
}

/// BO bytes as the CPU view holds them, read through the physical addresses: no sync, no
/// bracket and no DMA-debug check, so it observes without changing anything.
pub fn cpu_view(bo: &Bo, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for_each_page(bo, offset, len, |pa, range| {
        bo.phys().cpu_read(pa, &mut out[range]).unwrap();
    });
    out
}

/// Calls `f(physical address, range of the output)` for each page-bounded piece of BO bytes
/// `offset..offset + len`.
fn for_each_page(bo: &Bo, offset: u64, len: usize, mut f: impl FnMut(PhysAddr, Range<usize>)) {
    let mut done = 0usize;
    while done < len {
        let off = offset + done as u64;
        let n = (len - done).min((PAGE_SIZE - off % PAGE_SIZE) as usize);
        f(bo.phys_addr(off).unwrap(), done..done + n);
        done += n;
    }
}

/// Whether `needle` appears in `hay` (a stale or misdirected write would put it there).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Another device, named `name`, on the machine `phys`, as `c` says (32-bit mask, DMA-API
/// debugging on, a 16-entry TLB), with its simulated hardware: for tests that share BOs between
/// devices of one machine.
pub fn device_on(phys: &Arc<PhysMem>, c: Combo, name: &str) -> (Arc<Device>, SimDevice) {
    let config = DeviceConfig {
        name: name.into(),
        dma_mask: DmaMask::bits(32),
        coherent: c.coherent,
        coherent_walk: c.coherent,
        mmu: c.mmu,
        tlb_invalidation: c.mmu.tlb_invalidation(),
        accept_unenforced_prot: false,
    };
    let mmu = SimMmu::new(SimConfig {
        tlb_entries: 16,
        coherent_walk: c.coherent,
        coherent: c.coherent,
    });
    let platform = Platform {
        system_iommu: c.iommu,
        debug: true,
        ..Platform::default()
    };
    let hook: Arc<dyn DeviceTlb> = mmu.clone();
    let device = Device::attach(phys, config, &platform, hook).unwrap();
    let sim = SimDevice::new(device.clone(), mmu);
    (device, sim)
}
