//! Helpers of the uapi integration tests: a small machine per test, requests on owned structs,
//! and snapshots to check that a refused request changed nothing.

#![allow(dead_code)]

use std::sync::Arc;

use devmmu_mm::phys::{MemoryMap, PhysAddr, RamRegion};
use devmmu_uapi::abi::*;
use devmmu_uapi::{Errno, File, FileSummary, Machine};

pub const PAGE: u64 = 4096;
/// A VA inside every device's VA space, away from page 0.
pub const VA: u64 = 0x10_0000;

/// A machine of its own (so that its live-BO count is this test's alone): 256 MiB of low RAM,
/// 256 MiB of high RAM.
pub fn machine() -> Arc<Machine> {
    let map = MemoryMap::new(vec![
        RamRegion {
            base: PhysAddr(0x8000_0000),
            size: 256 << 20,
        },
        RamRegion {
            base: PhysAddr(1 << 32),
            size: 256 << 20,
        },
    ])
    .unwrap();
    Machine::new(map).unwrap()
}

/// Two files on the GPU of a fresh machine.
pub fn two_files() -> (Arc<Machine>, File, File) {
    let m = machine();
    let f = File::open(&m, DEVMMU_DEVICE_GPU, 0).unwrap();
    let g = File::open(&m, DEVMMU_DEVICE_GPU, 0).unwrap();
    (m, f, g)
}

/// Runs `req` on `s`, passed whole at its own (aligned) address.
pub fn ioctl<S>(f: &File, req: u32, s: &mut S) -> Result<(), Errno> {
    // SAFETY: `s` is a live, aligned struct of the size the request number declares (each test
    // passes the struct of its request); the addresses inside it are set by the test to memory
    // it owns for the declared sizes, or to values the dispatcher refuses before any access.
    unsafe { f.ioctl(req, s as *mut S as u64) }
}

/// 512 bytes, 8-byte aligned, for structs passed at odd sizes and addresses.
#[repr(C, align(8))]
pub struct Buf(pub [u8; 512]);

impl Buf {
    pub fn new() -> Buf {
        Buf([0; 512])
    }

    /// Copies `s` to byte `at`.
    pub fn put<S>(&mut self, at: usize, s: &S) {
        // SAFETY: the ABI structs are plain integers without padding; reading their bytes is
        // reading initialised memory of `size_of::<S>()` bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(s as *const S as *const u8, size_of::<S>()) };
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub fn addr(&self, at: usize) -> u64 {
        self.0.as_ptr() as u64 + at as u64
    }
}

/// Runs `req` with its size field set to `size`, on the struct at byte `at` of `buf`.
pub fn ioctl_at(f: &File, req: u32, size: usize, buf: &mut Buf, at: usize) -> Result<(), Errno> {
    assert!(at + size <= buf.0.len());
    let req = devmmu_uapi::ioc::with_size(req, size);
    // SAFETY: `size` bytes at `at` lie inside `buf`.
    unsafe { f.ioctl(req, buf.addr(at)) }
}

/// Everything two files hold, and the machine's live BOs.
pub fn snap(m: &Machine, f: &File, g: &File) -> (FileSummary, FileSummary, u64) {
    (f.summary(), g.summary(), m.live_bos())
}

pub fn bo(f: &File, size: u64, flags: u32) -> u32 {
    let mut a = DevmmuBoCreate {
        size,
        flags,
        handle: 0,
    };
    ioctl(f, DEVMMU_IOCTL_BO_CREATE, &mut a).unwrap();
    a.handle
}

pub fn vm(f: &File) -> u32 {
    let mut a = DevmmuVmCreate::default();
    ioctl(f, DEVMMU_IOCTL_VM_CREATE, &mut a).unwrap();
    a.vm_id
}

pub fn map_op(handle: u32, bo_offset: u64, va: u64, size: u64) -> DevmmuVmBindOp {
    DevmmuVmBindOp {
        op: DEVMMU_VM_BIND_OP_MAP,
        flags: DEVMMU_VM_BIND_READ | DEVMMU_VM_BIND_WRITE,
        handle,
        pad: 0,
        bo_offset,
        va,
        size,
    }
}

pub fn unmap_op(va: u64, size: u64) -> DevmmuVmBindOp {
    DevmmuVmBindOp {
        op: DEVMMU_VM_BIND_OP_UNMAP,
        va,
        size,
        ..Default::default()
    }
}

/// VM_BIND of `ops` (stride 40).
pub fn bind(f: &File, vm_id: u32, ops: &[DevmmuVmBindOp]) -> Result<(), Errno> {
    let mut a = DevmmuVmBind {
        vm_id,
        flags: 0,
        op_count: ops.len() as u32,
        op_stride: size_of::<DevmmuVmBindOp>() as u32,
        ops: ops.as_ptr() as u64,
    };
    ioctl(f, DEVMMU_IOCTL_VM_BIND, &mut a)
}

/// DEVICE_ACCESS: the device writes `data` at `va`.
pub fn dev_write(f: &File, vm_id: u32, va: u64, data: &[u8]) -> Result<(), Errno> {
    let mut a = DevmmuDeviceAccess {
        vm_id,
        op: DEVMMU_ACCESS_DEVICE_WRITE,
        va,
        data: data.as_ptr() as u64,
        size: data.len() as u64,
    };
    ioctl(f, DEVMMU_IOCTL_DEVICE_ACCESS, &mut a)
}

/// DEVICE_ACCESS: the device reads `n` bytes at `va`.
pub fn dev_read(f: &File, vm_id: u32, va: u64, n: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; n];
    let mut a = DevmmuDeviceAccess {
        vm_id,
        op: DEVMMU_ACCESS_DEVICE_READ,
        va,
        data: buf.as_mut_ptr() as u64,
        size: n as u64,
    };
    ioctl(f, DEVMMU_IOCTL_DEVICE_ACCESS, &mut a)?;
    Ok(buf)
}

/// Bound pages of a VM: `(va, bo_offset, prot bits)`.
pub fn pages(f: &File, vm_id: u32) -> Vec<(u64, u64, u8)> {
    f.vm_bindings(vm_id)
        .unwrap()
        .iter()
        .flat_map(|b| {
            (0..b.size / PAGE)
                .map(move |i| (b.iova.0 + i * PAGE, b.bo_offset + i * PAGE, b.prot.bits()))
        })
        .collect()
}
