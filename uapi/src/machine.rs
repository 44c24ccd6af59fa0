//! The simulated machine files open onto: one physical memory and its devices.
//!
//! A [`Machine`] holds one [`PhysMem`] (RAM with a CPU-cache model, so a missing BO_SYNC shows
//! as stale data) and one device of each kind a file can open ([`DEVMMU_DEVICE_GPU`],
//! [`DEVMMU_DEVICE_ISP`]), each a [`Device`] with its simulated MMU and DMA engine. Every file
//! of a machine allocates BOs from the same memory, so a BO exported by one file and imported by
//! another is the same object (PRIME), whichever devices the files are on.
//!
//! The C ABI opens every file on one process-wide machine, made on the first `devmmu_open`
//! ([`Machine::global`]). Rust callers and tests may make their own ([`Machine::new`]), so that
//! machine-wide counters (live BOs) are theirs alone.
//!
//! The machine also names BOs: each BO made or imported through this interface gets an object
//! id (BO_INFO), and the machine counts those still alive (GET_PARAM `DEVMMU_PARAM_LIVE_BOS`).

use std::sync::{Arc, OnceLock, Weak};

use devmmu_mm::bo::Bo;
use devmmu_mm::model::{SimConfig, SimDevice, SimMmu};
use devmmu_mm::prelude::*;
use parking_lot::Mutex;

use crate::abi::{DEVMMU_DEVICE_GPU, DEVMMU_DEVICE_ISP};

/// One device of a machine: the driver's view and the simulated hardware.
pub struct MachineDevice {
    device: Arc<Device>,
    sim: SimDevice,
}

impl MachineDevice {
    /// The attached device (its config, DMA ops).
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The simulated hardware: its MMU and DMA engine.
    pub fn sim(&self) -> &SimDevice {
        &self.sim
    }
}

/// The BOs the machine has named: object ids, in creation order.
#[derive(Default)]
struct Objects {
    next_id: u64,
    /// `(object id, BO)`. Weak: naming a BO never keeps it alive. A `Weak` keeps its allocation,
    /// so the address of a dead entry's BO cannot be reused by a new BO while the entry exists.
    live: Vec<(u64, Weak<Bo>)>,
}

/// A simulated machine: memory, a GPU-style device and a camera ISP.
pub struct Machine {
    phys: Arc<PhysMem>,
    gpu: MachineDevice,
    isp: MachineDevice,
    objects: Mutex<Objects>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("ram_bytes", &self.phys.memory_map().total_bytes())
            .finish()
    }
}

static GLOBAL: OnceLock<Arc<Machine>> = OnceLock::new();

impl Machine {
    /// A machine with RAM laid out as `memory` and the default platform (direct DMA, a 64 MiB
    /// swiotlb pool): a GPU-style device ([`DeviceConfig::arm_lpae`], 48-bit DMA mask, not
    /// coherent) and an ISP ([`DeviceConfig::ipu`]).
    ///
    /// # Errors
    /// Those of [`PhysMem::new`] and [`Device::attach`] (no memory for the swiotlb pool).
    pub fn new(memory: MemoryMap) -> Result<Arc<Machine>, MmError> {
        let phys = PhysMem::new(memory, CacheMode::Model)?;
        let platform = Platform::default();
        let attach = |config: DeviceConfig| -> Result<MachineDevice, MmError> {
            let mmu = SimMmu::new(SimConfig::default());
            let device = Device::attach(&phys, config, &platform, mmu.clone())?;
            let sim = SimDevice::new(device.clone(), mmu);
            Ok(MachineDevice { device, sim })
        };
        let gpu = attach(DeviceConfig::arm_lpae("gpu", DmaMask::bits(48), false))?;
        let isp = attach(DeviceConfig::ipu("isp"))?;
        Ok(Arc::new(Machine {
            phys,
            gpu,
            isp,
            objects: Mutex::new(Objects {
                next_id: 1,
                live: Vec::new(),
            }),
        }))
    }

    /// The process-wide machine of the C ABI ([`MemoryMap::default`]: 256 MiB low and 8 GiB high
    /// RAM, backed lazily), made on first use.
    ///
    /// # Errors
    /// Those of [`Machine::new`]; a later call tries again.
    pub fn global() -> Result<Arc<Machine>, MmError> {
        if let Some(m) = GLOBAL.get() {
            return Ok(m.clone());
        }
        let m = Machine::new(MemoryMap::default())?;
        // Two first callers may race: one machine wins and both use it.
        Ok(GLOBAL.get_or_init(|| m).clone())
    }

    /// The machine's physical memory.
    pub fn phys(&self) -> &Arc<PhysMem> {
        &self.phys
    }

    /// The device a file opened with `device` (`DEVMMU_DEVICE_*`) uses, if that is one.
    pub fn device(&self, device: u32) -> Option<&MachineDevice> {
        match device {
            DEVMMU_DEVICE_GPU => Some(&self.gpu),
            DEVMMU_DEVICE_ISP => Some(&self.isp),
            _ => None,
        }
    }

    /// The object id of `bo`, naming it first if it has none yet. Ids start at 1 and are never
    /// reused.
    pub fn object_id(&self, bo: &Arc<Bo>) -> u64 {
        let mut objs = self.objects.lock();
        if let Some(&(id, _)) = objs
            .live
            .iter()
            .find(|(_, w)| core::ptr::eq(w.as_ptr(), Arc::as_ptr(bo)))
        {
            return id;
        }
        objs.live.retain(|(_, w)| w.strong_count() > 0);
        let id = objs.next_id;
        objs.next_id += 1;
        objs.live.push((id, Arc::downgrade(bo)));
        id
    }

    /// BOs named by this machine and still alive.
    pub fn live_bos(&self) -> u64 {
        self.objects
            .lock()
            .live
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .count() as u64
    }
}
