//! A minimal driver for a device with its own MMU: attach the device, allocate a buffer object
//! (BO), bind it into a device VM, let the device write it, hand it to the CPU (the CPU access
//! bracket, which does the cache maintenance) and check what the CPU reads; then the other way
//! round.
//!
//! The device is the simulated one of `devmmu_mm::model`: a GPU-style device with an ARM LPAE
//! MMU whose data path and table walker do not snoop the CPU caches, so a driver that skips a
//! sync reads stale bytes. Sizes, offsets and lengths are in bytes.
//!
//! Run it with `cargo run -p devmmu-mm --example minimal_driver`: it prints what it does and
//! exits with status 1 if a check fails. `cargo test` runs it too (`test = true` in
//! mm/Cargo.toml), through the tests at the bottom of this file.

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;

use devmmu_mm::model::{SimConfig, SimDevice, SimMmu};
use devmmu_mm::prelude::*;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Size of the BO: 64 pages.
const BO_SIZE: u64 = 64 * PAGE_SIZE;

/// The simulated machine and the driver's view of its device.
struct Machine {
    phys: Arc<PhysMem>,
    device: Arc<Device>,
    /// The hardware: the device's MMU and DMA engine.
    sim: SimDevice,
}

/// Probes the device: physical memory with a model of the CPU caches, a non-coherent device
/// with an ARM LPAE MMU and a 48-bit DMA mask, direct DMA, DMA-API debugging on.
fn attach() -> Result<Machine> {
    let phys = PhysMem::new(MemoryMap::default(), CacheMode::Model)?;
    let mmu = SimMmu::new(SimConfig::default());
    let config = DeviceConfig::arm_lpae("gpu0", DmaMask::bits(48), false);
    let platform = Platform {
        debug: true,
        ..Platform::default()
    };
    // The simulated MMU is also the TLB-invalidation hook (a real driver writes registers).
    let device = Device::attach(&phys, config, &platform, mmu.clone())?;
    let sim = SimDevice::new(device.clone(), mmu);
    Ok(Machine { phys, device, sim })
}

/// `len` bytes that differ from page to page and from zeros.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8 | 1).collect()
}

/// Ok if `got == want`, else an error naming the first differing byte.
fn check_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<()> {
    if got == want {
        println!("ok: {what}");
        return Ok(());
    }
    let at = got.iter().zip(want).position(|(g, w)| g != w);
    Err(format!(
        "check failed: {what}: {} bytes read, {} expected, first difference at byte {at:?}",
        got.len(),
        want.len()
    )
    .into())
}

/// The whole driver; an error is either a failed call or a failed check.
fn run() -> Result<()> {
    let m = attach()?;
    let cfg = m.device.config();
    println!(
        "attached {} ({} MMU, DMA mask {:#x}, {:?} DMA)",
        cfg.name,
        cfg.mmu.name(),
        m.device.dma_mask().0,
        m.device.dma_ops().kind()
    );

    let bo = Bo::new(&m.phys, BO_SIZE, BoFlags::default())?;
    println!(
        "allocated a BO of {} bytes ({} pages)",
        bo.size(),
        bo.page_count()
    );

    let vm = Vm::new(&m.device)?;
    let iova = vm.bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)?;
    println!("bound it at IOVA {iova} of VM {}", vm.context().asid);

    // The device writes a frame through its MMU; with a non-coherent device it lands in RAM,
    // behind the CPU caches.
    let frame = pattern(BO_SIZE as usize);
    m.sim.dma_write(&vm, iova, &frame)?;
    println!("the device wrote {} bytes", frame.len());

    // The CPU reads inside a READ bracket: its start invalidates the CPU caches over the BO.
    let cpu = bo.begin_cpu_access(CpuAccess::READ)?;
    let seen = cpu.read_all()?;
    cpu.end()?;
    check_bytes("the CPU reads what the device wrote", &seen, &frame)?;

    // The other way: the CPU writes inside a WRITE bracket, whose end cleans the caches, and
    // the device reads.
    let header = b"frame 0, 64 pages";
    let cpu = bo.begin_cpu_access(CpuAccess::WRITE)?;
    cpu.write(0, header)?;
    cpu.end()?;
    let mut got = vec![0u8; header.len()];
    m.sim.dma_read(&vm, iova, &mut got)?;
    check_bytes("the device reads what the CPU wrote", &got, header)?;

    vm.unbind(iova, bo.size())?;
    let diags = m.device.dma_ops().diagnostics();
    if !diags.is_empty() {
        return Err(format!("check failed: DMA-API misuse reported: {diags:?}").into());
    }
    println!("ok: unbound, no DMA-API misuse reported");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minimal_driver: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_driver_runs() -> Result<()> {
        run()
    }

    /// The checks can fail: a driver that reads without the bracket gets the stale CPU-cache
    /// view, and DMA-API debugging reports the access.
    #[test]
    fn reading_without_the_bracket_is_caught() -> Result<()> {
        let m = attach()?;
        let bo = Bo::new(&m.phys, BO_SIZE, BoFlags::default())?;
        let vm = Vm::new(&m.device)?;
        let iova = vm.bind(&bo, 0, bo.size(), Placement::Anywhere, Prot::RW)?;
        let frame = pattern(BO_SIZE as usize);
        m.sim.dma_write(&vm, iova, &frame)?;

        let mut seen = vec![0u8; frame.len()];
        bo.read(0, &mut seen)?;
        assert!(check_bytes("unbracketed read", &seen, &frame).is_err());
        assert!(!m.device.dma_ops().diagnostics().is_empty());
        vm.unbind(iova, bo.size())?;
        Ok(())
    }
}
