//! Sharing one buffer object (BO): as an fd (export, then import: DRM PRIME), and between two
//! device VMs of one device (a GPU's two contexts, a camera ISP's two streams).
//!
//! - The BO is exported as an fd (the sealed memfd here: this machine has no /dev/udmabuf) and
//!   imported back. Importing an fd of our own export gives back the same BO, not a second
//!   object over the same pages.
//! - The BO is bound into two VMs of one device: both bindings share the device's one DMA
//!   mapping of it, so what the device writes through VM 1 it reads through VM 2, with no copy
//!   and no cache maintenance in between.
//!
//! Sizes, offsets and lengths are in bytes. Run it with
//! `cargo run -p devmmu-mm --example share_bo`: it prints what it does and exits with status 1
//! if a check fails. `cargo test` runs it too (`test = true` in mm/Cargo.toml), through the
//! test at the bottom of this file.

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;

use devmmu_mm::model::{SimConfig, SimDevice, SimMmu};
use devmmu_mm::prelude::*;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Size of the BO: 16 pages.
const BO_SIZE: u64 = 16 * PAGE_SIZE;

/// Ok if `ok`, else an error saying which check failed.
fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// The whole driver; an error is either a failed call or a failed check.
fn run() -> Result<()> {
    // A non-coherent device with an ARM LPAE MMU, direct DMA, DMA-API debugging on.
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model)?;
    let mmu = SimMmu::new(SimConfig::default());
    let config = DeviceConfig::arm_lpae("gpu0", DmaMask::bits(48), false);
    let platform = Platform {
        debug: true,
        ..Platform::default()
    };
    let device = Device::attach(&phys, config, &platform, mmu.clone())?;
    let sim = SimDevice::new(device.clone(), mmu);

    let bo = Bo::new(&phys, BO_SIZE, BoFlags::default())?;
    println!("allocated a BO of {} bytes", bo.size());

    // PRIME: export as an fd, import it back.
    let no_udmabuf = ExportOptions {
        udmabuf: None,
        fallback_to_memfd: true,
    };
    let exported = bo.export_with(&no_udmabuf)?;
    println!("exported it as a {:?} fd", exported.kind);
    check(exported.kind == FdKind::Memfd, "the fd is the BO's memfd")?;
    let imported = Bo::import(&phys, exported.fd, Some(bo.size()))?;
    check(
        Arc::ptr_eq(&bo, &imported),
        "importing our own export gives back the same BO",
    )?;

    // One BO, two VMs of one device, at different IOVAs; VM 2 may only read.
    let vm1 = Vm::new(&device)?;
    let vm2 = Vm::new(&device)?;
    let iova1 = vm1.bind(&bo, 0, bo.size(), Placement::Lowest, Prot::RW)?;
    let iova2 = vm2.bind(&imported, 0, bo.size(), Placement::Highest, Prot::READ)?;
    println!(
        "bound it at IOVA {iova1} of VM {} and at IOVA {iova2} of VM {}",
        vm1.context().asid,
        vm2.context().asid
    );
    check(
        bo.attachment_count() == 1,
        "both bindings share the device's one DMA mapping",
    )?;

    let msg = b"written through VM 1, read through VM 2";
    sim.dma_write(&vm1, iova1, msg)?;
    let mut got = vec![0u8; msg.len()];
    sim.dma_read(&vm2, iova2, &mut got)?;
    check(
        got == msg,
        "the device reads through VM 2 what it wrote through VM 1",
    )?;
    check(
        sim.dma_write(&vm2, iova2, b"x").is_err(),
        "VM 2's read-only binding refuses a device write",
    )?;

    // The CPU sees the same bytes, inside a READ bracket.
    let cpu = bo.begin_cpu_access(CpuAccess::READ)?;
    let mut seen = vec![0u8; msg.len()];
    cpu.read(0, &mut seen)?;
    cpu.end()?;
    check(seen == msg, "the CPU reads what the device wrote")?;

    vm1.unbind(iova1, bo.size())?;
    vm2.unbind(iova2, bo.size())?;
    check(
        bo.attachment_count() == 0,
        "unbinding both releases the mapping",
    )?;
    let diags = device.dma_ops().diagnostics();
    check(diags.is_empty(), "no DMA-API misuse reported")?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("share_bo: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn share_bo_runs() -> super::Result<()> {
        super::run()
    }
}
