//! What the real-kernel tier's tests share: the edu device opened through VFIO with a devmmu
//! device attached on its container, and the kernel log's IOMMU faults.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use drm::Device as _;

use devmmu_mm::device::{Device, DeviceConfig, MmuFormat};
use devmmu_mm::dma::{DmaMask, DmaOpsKind, Platform, VfioHandle};
use devmmu_mm::phys::{CacheMode, MemoryMap, PhysMem};
use devmmu_mm::vfio::VfioContainer;
use devmmu_tools::edu::{Edu, EDU_DMA_BITS};

/// The PCI address of the edu device, from sysfs.
pub fn edu_bdf() -> String {
    devmmu_tools::edu::find_edu()
        .expect("no edu device (1234:11e8) in this machine: run inside the test guest")
}

pub struct Rig {
    pub phys: Arc<PhysMem>,
    pub device: Arc<Device>,
    pub edu: Edu,
}

/// edu opened through VFIO; a devmmu device with `format`'s MMU attached on the container's
/// DMA ops (28-bit mask, as edu); the edu driver on top.
pub fn rig(format: MmuFormat) -> Rig {
    let (container, vdev) = VfioContainer::open_pci(&edu_bdf()).expect("VFIO open of edu");
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Native).expect("phys");
    let platform = Platform {
        vfio: Some(VfioHandle(container)),
        debug: true,
        ..Platform::default()
    };
    let mut config = match format {
        MmuFormat::Ipu => DeviceConfig::ipu("edu"),
        _ => DeviceConfig::arm_lpae("edu", DmaMask::bits(EDU_DMA_BITS), false),
    };
    config.dma_mask = DmaMask::bits(EDU_DMA_BITS);
    let tlb = Edu::tlb();
    let device = Device::attach(&phys, config, &platform, tlb.clone()).expect("attach");
    assert_eq!(device.dma_ops().kind(), DmaOpsKind::Vfio);
    let edu = Edu::new(vdev, device.dma_ops(), tlb).expect("edu");
    Rig { phys, device, edu }
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Lines of the kernel log that report an IOMMU (DMAR) fault.
pub fn dmar_faults() -> Vec<String> {
    let out = std::process::Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DMAR") && l.to_lowercase().contains("fault"))
        .map(str::to_string)
        .collect()
}

/// Waits until the kernel's rate limit on DMAR fault messages (drivers/iommu/intel/dmar.c
/// `dmar_fault`: `DEFAULT_RATELIMIT_INTERVAL` 5 s, burst 10) has a fresh window, so the faults a
/// test provokes next are all logged: sleeps until 5.5 s after the last DMAR line.
pub fn quiet_fault_log() {
    let out = std::process::Command::new("dmesg").output().expect("dmesg");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("DMAR") || l.contains("dmar_fault"))
        .and_then(|l| l.trim_start_matches('[').split(']').next())
        .and_then(|t| t.trim().parse::<f64>().ok());
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    if let (Some(last), Some(now)) = (last, uptime) {
        let wait = 5.5 - (now - last);
        if wait > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(wait));
        }
    }
}

/// A DRM card node.
pub struct Card(pub File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl drm::Device for Card {}
impl drm::control::Device for Card {}

/// The vgem card (`modprobe vgem` in the guest script).
pub fn vgem() -> Card {
    for e in std::fs::read_dir("/dev/dri").expect("/dev/dri: is vgem loaded?") {
        let p = e.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with("card") {
            continue;
        }
        let card = Card(OpenOptions::new().read(true).write(true).open(&p).unwrap());
        if card
            .get_driver()
            .map(|d| d.name().to_string_lossy() == "vgem")
            .unwrap_or(false)
        {
            return card;
        }
    }
    panic!("no vgem card in /dev/dri");
}
