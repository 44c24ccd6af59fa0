//! Structured request sequences on two files, checked as they run: the input of the fuzz target
//! (uapi/fuzz) and of the property test (uapi/tests/sequences.rs).
//!
//! [`run_bytes`] reads a byte string as a sequence of up to [`MAX_STEPS`] actions: a request
//! on one of two files (GET_PARAM, BO_CREATE, ..., with fields drawn from small pools so that
//! handles, VM ids and VAs hit live objects often, and sometimes anything), a CPU mapping, or
//! a file closed and reopened. Each request is passed the way a C caller could pass it: the
//! exact struct, a smaller or larger one (zero or non-zero tail), a null or misaligned pointer,
//! a garbled request number. Every pointer handed over points at memory of at least the size
//! declared with it (the caller's promise, see [`crate::user`]); everything else is fair game.
//!
//! Each sequence starts with two BOs (handles 1 and 2) and a VM (id 1) in each file, the first
//! file on the GPU and the second on the ISP. After each action it checks:
//! - the result is 0 or one of the errnos the interface documents;
//! - a refused request changed nothing: each file's handles (with their objects, mmap offsets
//!   and brackets), VM ids and bound pages are as before, and the machine holds as many BOs;
//! - every VM's bound pages equal an independent model, which applies MAP / UNMAP arrays only
//!   when VM_BIND succeeds (and asserts that a successful MAP found its pages free and an
//!   UNMAP hit something), and the VM's own record of its bindings agrees
//!   ([`File::check_consistency`]);
//!
//! and at the end, with both files closed and every exported fd closed, that no BO is left
//! alive on the machine. A failed check panics, which is what the fuzzer reports.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use devmmu_mm::phys::{MemoryMap, PhysAddr, RamRegion, PAGE_SIZE};
use rustix::io::Errno;

use crate::abi::*;
use crate::ioc;
use crate::user::{as_bytes, from_bytes};
use crate::{File, Machine};

/// Most actions one input runs.
pub const MAX_STEPS: usize = 48;

/// First VA the sequences bind at, and the number of pages they use from there.
const VA_BASE: u64 = 0x10_0000;
const VA_PAGES: u64 = 64;

/// The errnos a request may return.
const ALLOWED: [Errno; 14] = [
    Errno::FAULT,
    Errno::INVAL,
    Errno::TOOBIG,
    Errno::NOTTY,
    Errno::NOENT,
    Errno::EXIST,
    Errno::BUSY,
    Errno::NOMEM,
    Errno::NOSPC,
    Errno::BADF,
    Errno::ACCESS,
    Errno::OPNOTSUPP,
    Errno::IO,
    Errno::MFILE,
];

/// The machine sequences run on: 256 MiB of low RAM (the ISP's swiotlb pool and the page
/// tables) and 256 MiB of high RAM, made once per thread (so that sequences running in
/// parallel threads, as tests do, do not see each other's BOs in the leak check).
pub fn machine() -> Arc<Machine> {
    thread_local! {
        static M: OnceCell<Arc<Machine>> = const { OnceCell::new() };
    }
    M.with(|m| {
        m.get_or_init(|| {
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
            .expect("a valid memory map");
            Machine::new(map).expect("the sequence machine")
        })
        .clone()
    })
}

/// The input, read a byte at a time; zeros once it runs out.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A handle or VM id: mostly a small number (likely live), sometimes 0 or anything.
    fn id(&mut self) -> u32 {
        match self.byte() % 32 {
            0 => 0,
            1 => self.u32(),
            n => u32::from(n % 3) + 1,
        }
    }

    /// A VM id: mostly 1 or 2 (every file starts with VM 1), sometimes 0 or anything.
    fn vm(&mut self) -> u32 {
        match self.byte() % 32 {
            0 => 0,
            1 => self.u32(),
            n => u32::from(n % 2) + 1,
        }
    }

    /// A flags word: mostly from `known`, sometimes with any bits.
    fn flags(&mut self, known: u32) -> u32 {
        match self.byte() % 16 {
            0 => self.u32(),
            1 => 0,
            _ => match self.u32() & known {
                0 => known,
                bits => bits,
            },
        }
    }

    /// A size in bytes: mostly 1 to 8 pages, sometimes 0, odd or huge.
    fn size(&mut self) -> u64 {
        match self.byte() % 32 {
            0 => 0,
            1 => u64::from(self.u32()),
            2 => self.u64(),
            n => u64::from(n % 4 + 1) * PAGE_SIZE,
        }
    }

    /// A device VA: mostly a page of the sequences' window, sometimes anything.
    fn va(&mut self) -> u64 {
        match self.byte() % 32 {
            0 => self.u64(),
            1 => 0,
            _ => VA_BASE + u64::from(self.byte()) % VA_PAGES * PAGE_SIZE,
        }
    }
}

/// The state a refused request must leave alone: per file, the handles (as summarised) and
/// each VM's bound pages `(va, bo_offset, prot bits)`; and the machine's live BO count.
/// A VM's id and bound pages `(va, bo_offset, prot bits)`.
type VmPages = (u32, Vec<(u64, u64, u32)>);

#[derive(PartialEq, Eq, Debug)]
struct Snapshot {
    files: Vec<Option<(Vec<crate::HandleSummary>, Vec<VmPages>)>>,
    live_bos: u64,
}

/// Bound pages of a VM, as `(va, bo_offset, prot bits)`.
fn pages(bindings: &[devmmu_mm::vm::BindingInfo]) -> Vec<(u64, u64, u32)> {
    bindings
        .iter()
        .flat_map(|b| {
            let prot = b.prot.bits();
            (0..b.size / PAGE_SIZE).map(move |i| {
                (
                    b.iova.0 + i * PAGE_SIZE,
                    b.bo_offset + i * PAGE_SIZE,
                    u32::from(prot),
                )
            })
        })
        .collect()
}

/// Runs the sequence `data` describes and checks it (see the module docs); panics on a
/// failed check.
pub fn run_bytes(data: &[u8]) {
    let mut r = Runner::new();
    r.setup();
    let mut input = Input { data, pos: 0 };
    let mut steps = 0;
    while !input.done() && steps < MAX_STEPS {
        r.step(&mut input);
        r.check_model();
        steps += 1;
    }
    r.finish();
}

struct Runner {
    machine: Arc<Machine>,
    baseline_bos: u64,
    files: [Option<File>; 2],
    fds: Vec<OwnedFd>,
    offsets: Vec<u64>,
    /// (file, VM id) → bound page VA → BO offset.
    model: BTreeMap<(usize, u32), BTreeMap<u64, u64>>,
    /// The argument struct's memory (1 KiB, 8-byte aligned).
    arg: Vec<u64>,
}

impl Runner {
    fn new() -> Runner {
        let machine = machine();
        let baseline_bos = machine.live_bos();
        let open = |dev| Some(File::open(&machine, dev, 0).expect("open"));
        Runner {
            files: [open(DEVMMU_DEVICE_GPU), open(DEVMMU_DEVICE_ISP)],
            machine,
            baseline_bos,
            fds: Vec::new(),
            offsets: Vec::new(),
            model: BTreeMap::new(),
            arg: vec![0; 128],
        }
    }

    /// What every sequence starts from, so that short inputs reach live objects: in each file,
    /// two BOs (handles 1 and 2: 4 and 16 pages, the second below 4 GiB) and one VM (id 1).
    fn setup(&mut self) {
        for f in 0..2 {
            let file = self.file(f);
            for (size, flags) in [(4 * PAGE_SIZE, 0), (16 * PAGE_SIZE, DEVMMU_BO_DMA32)] {
                let mut a = DevmmuBoCreate {
                    size,
                    flags,
                    handle: 0,
                };
                file.bo_create(&mut a).expect("setup BO");
            }
            let mut vm = DevmmuVmCreate::default();
            file.vm_create(&mut vm).expect("setup VM");
            self.model.insert((f, vm.vm_id), BTreeMap::new());
        }
    }

    fn file(&self, f: usize) -> &File {
        self.files[f].as_ref().expect("files are reopened at once")
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            files: self
                .files
                .iter()
                .map(|f| {
                    f.as_ref().map(|f| {
                        let s = f.summary();
                        let vms = s.vms.iter().map(|(id, b)| (*id, pages(b))).collect();
                        (s.handles, vms)
                    })
                })
                .collect(),
            live_bos: self.machine.live_bos(),
        }
    }

    /// Passes `arg` as request `req` to file `f`, as the input says (exact, smaller, larger,
    /// null, misaligned, garbled number); returns the result, the struct as the file read it
    /// or wrote it back, and whether the call was exact (the struct as it is, at an aligned
    /// address). Checks the errno, and that a refusal changed nothing.
    ///
    /// A smaller struct is cut at an 8-byte boundary when `has_ptr` (a cut must not leave half
    /// a pointer, which no real caller would pass), and never when `!shrink` (PRIME_HANDLE_TO_FD:
    /// a struct too short to carry the new fd back would leak it). A garbled request number
    /// never names VM_BIND, DEVICE_ACCESS or PRIME_HANDLE_TO_FD, for the same reasons; when it
    /// names another request that succeeds, the model is rebuilt from the files.
    fn call<T: crate::abi::Abi>(
        &mut self,
        input: &mut Input<'_>,
        f: usize,
        req: u32,
        arg: &T,
        has_ptr: bool,
        shrink: bool,
    ) -> (Result<(), Errno>, T, bool) {
        let size = size_of::<T>();
        let mode = input.byte() % 64;
        let (mut user_size, mut offset, mut request) = (size, 8usize, req);
        let mut tail = 0u8;
        let mut exact = false;
        match mode {
            0 if shrink => {
                user_size = usize::from(input.byte()) % size;
                if has_ptr {
                    user_size &= !7;
                }
            }
            1 => user_size = size + 8 * (1 + usize::from(input.byte() % 8)),
            2 => {
                user_size = size + 1 + usize::from(input.byte() % 64);
                tail = input.byte() | 1;
            }
            3 => offset = 9,
            4 => offset = 12,
            5 => {
                // Any direction, type and number, with a size the buffer holds.
                request = ioc::with_size(input.u32(), usize::from(input.byte()) % 256);
                if matches!(
                    crate::Request::decode(request),
                    Ok(crate::Request::VmBind
                        | crate::Request::DeviceAccess
                        | crate::Request::PrimeHandleToFd)
                ) {
                    request ^= 1 << ioc::TYPE_SHIFT;
                }
                user_size = ioc::decode(request).size;
            }
            _ => exact = true,
        }
        if mode != 5 {
            request = ioc::with_size(req, user_size);
        }
        let bytes: &mut [u8] = {
            let words = &mut self.arg[..];
            // SAFETY: a u64 buffer viewed as bytes: same memory, u8 has no alignment and no
            // invalid values; the borrow of `self.arg` covers the slice's life.
            unsafe {
                core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
            }
        };
        bytes.fill(0);
        let n = user_size.min(size);
        bytes[offset..offset + n].copy_from_slice(&as_bytes(arg)[..n]);
        for b in &mut bytes[offset + n..offset + user_size] {
            *b = tail;
        }
        let addr = if mode == 6 {
            0
        } else {
            bytes.as_ptr() as u64 + offset as u64
        };
        let before = self.snapshot();
        // SAFETY: `addr` is null (refused before any access) or points into `self.arg` with at
        // least `user_size` bytes after it (at most 9 + 8 + 255 + 64 of its 1024 bytes); the
        // addresses inside the struct were set up by the caller of `call` under the same rule.
        let r = unsafe { self.file(f).ioctl(request, addr) };
        let back: T = from_bytes(&bytes[offset..offset + n]);
        if std::env::var_os("DEVMMU_SEQ_TRACE").is_some() {
            eprintln!(
                "file {f} {:?} size {user_size} mode {mode} {:?} -> {r:?}",
                crate::Request::decode(request),
                from_bytes::<T>(&bytes[offset..offset + n])
            );
        }
        if let Err(e) = r {
            assert!(ALLOWED.contains(&e), "request {request:#x} returned {e:?}");
            let after = self.snapshot();
            assert_eq!(
                before, after,
                "request {request:#x} failed with {e:?} but changed state"
            );
        }
        if mode == 5 && r.is_ok() {
            self.resync_model();
            // Not `req` that ran: the caller must not model it.
            return (Err(Errno::NOTTY), back, false);
        }
        (r, back, exact && addr != 0)
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let f = usize::from(input.byte() % 2);
        match input.byte() % 15 {
            0 => {
                let a = DevmmuGetParam {
                    param: input.byte().into(),
                    pad: u32::from(input.byte().is_multiple_of(16)),
                    value: input.u64(),
                };
                let _ = self.call(input, f, DEVMMU_IOCTL_GET_PARAM, &a, false, true);
            }
            1 | 2 => {
                let size = if input.byte().is_multiple_of(8) {
                    256 * PAGE_SIZE
                } else {
                    input.size()
                };
                let a = DevmmuBoCreate {
                    size,
                    flags: input.flags(DEVMMU_BO_FLAGS_ALL),
                    handle: input.u32(),
                };
                let live = self.file(f).summary().handles;
                let (r, back, exact) = self.call(input, f, DEVMMU_IOCTL_BO_CREATE, &a, false, true);
                if r.is_ok() && exact {
                    assert!(back.handle != 0 && !live.iter().any(|h| h.handle == back.handle));
                }
            }
            3 => {
                let a = DevmmuBoMmap {
                    handle: input.id(),
                    flags: input.flags(0),
                    offset: input.u64(),
                };
                let (r, back, exact) = self.call(input, f, DEVMMU_IOCTL_BO_MMAP, &a, false, true);
                if r.is_ok() && exact && self.offsets.len() < 64 {
                    self.offsets.push(back.offset);
                }
            }
            4 => {
                let a = DevmmuGemClose {
                    handle: input.id(),
                    pad: u32::from(input.byte().is_multiple_of(16)),
                };
                let (r, _, exact) = self.call(input, f, DEVMMU_IOCTL_GEM_CLOSE, &a, false, true);
                if r.is_ok() && exact {
                    assert!(
                        self.file(f).bo(a.handle).is_none(),
                        "a closed handle still names a BO"
                    );
                }
            }
            5 => {
                let a = DevmmuBoInfo {
                    handle: input.id(),
                    ..Default::default()
                };
                let _ = self.call(input, f, DEVMMU_IOCTL_BO_INFO, &a, false, true);
            }
            6 => {
                let a = DevmmuVmCreate {
                    flags: input.flags(0),
                    vm_id: input.u32(),
                };
                let (r, _, _) = self.call(input, f, DEVMMU_IOCTL_VM_CREATE, &a, false, true);
                if r.is_ok() {
                    // Learn the id from the file (the caller's copy may be cut short): exactly
                    // one VM is new.
                    let ids: Vec<u32> = self.file(f).summary().vms.iter().map(|v| v.0).collect();
                    let new: Vec<u32> = ids
                        .into_iter()
                        .filter(|id| !self.model.contains_key(&(f, *id)))
                        .collect();
                    assert_eq!(new.len(), 1, "VM_CREATE made {} VMs", new.len());
                    self.model.insert((f, new[0]), BTreeMap::new());
                }
            }
            7 => {
                let a = DevmmuVmDestroy {
                    vm_id: input.vm(),
                    pad: u32::from(input.byte().is_multiple_of(16)),
                };
                let (r, back, _) = self.call(input, f, DEVMMU_IOCTL_VM_DESTROY, &a, false, true);
                if r.is_ok() {
                    assert!(
                        self.model.remove(&(f, back.vm_id)).is_some(),
                        "destroyed an unknown VM"
                    );
                }
            }
            8 | 9 => self.vm_bind(input, f),
            10 => {
                let a = DevmmuPrimeHandle {
                    handle: input.id(),
                    flags: input.flags(DEVMMU_CLOEXEC | DEVMMU_RDWR),
                    fd: -1,
                };
                let (r, back, _) =
                    self.call(input, f, DEVMMU_IOCTL_PRIME_HANDLE_TO_FD, &a, false, false);
                if r.is_ok() {
                    // SAFETY: the request just made this fd for us; nothing else owns it.
                    self.fds.push(unsafe { OwnedFd::from_raw_fd(back.fd) });
                    if self.fds.len() > 8 {
                        self.fds.remove(0);
                    }
                }
            }
            11 => {
                let pick = usize::from(input.byte());
                let fd = match pick % 8 {
                    0 => -1,
                    1 => i32::from(input.byte()) - 8,
                    _ if self.fds.is_empty() => -2,
                    _ => std::os::fd::AsRawFd::as_raw_fd(&self.fds[pick % self.fds.len()]),
                };
                let a = DevmmuPrimeHandle {
                    handle: input.u32(),
                    flags: input.flags(0),
                    fd,
                };
                let _ = self.call(input, f, DEVMMU_IOCTL_PRIME_FD_TO_HANDLE, &a, false, true);
            }
            12 => {
                let a = DevmmuBoSync {
                    handle: input.id(),
                    flags: input.flags(DEVMMU_SYNC_READ | DEVMMU_SYNC_WRITE | DEVMMU_SYNC_END),
                };
                let _ = self.call(input, f, DEVMMU_IOCTL_BO_SYNC, &a, false, true);
            }
            13 => self.device_access(input, f),
            _ => match input.byte() % 4 {
                0 => self.reopen(f),
                _ => self.mmap(input, f),
            },
        }
    }

    fn vm_bind(&mut self, input: &mut Input<'_>, f: usize) {
        let count = [1, 1, 2, 3][usize::from(input.byte() % 4)];
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            let map = !input.byte().is_multiple_of(4);
            let mut op = if map {
                DevmmuVmBindOp {
                    op: DEVMMU_VM_BIND_OP_MAP,
                    flags: input.flags(DEVMMU_VM_BIND_READ | DEVMMU_VM_BIND_WRITE),
                    handle: input.id(),
                    pad: 0,
                    bo_offset: u64::from(input.byte() % 8).saturating_sub(4) * PAGE_SIZE,
                    va: input.va(),
                    size: input.size(),
                }
            } else {
                DevmmuVmBindOp {
                    op: DEVMMU_VM_BIND_OP_UNMAP,
                    va: input.va(),
                    size: input.size(),
                    ..Default::default()
                }
            };
            match input.byte() % 64 {
                0 => op.op = input.u32(),
                1 => op.pad = 1,
                2 => op.bo_offset = input.u64(),
                3 => op.handle = input.id(),
                _ => {}
            }
            ops.push(op);
        }
        // The element size the caller declares, and what fills an element past our struct.
        let (stride, tail): (usize, u8) = match input.byte() % 32 {
            0 => (48, 0),
            1 => (48, 1),
            2 => (32, 0),
            3 => (8 * usize::from(input.byte() % 8), 0),
            4 => (12, 0),
            5 => (4104, 0),
            _ => (40, 0),
        };
        let elem = stride.max(8);
        let mut array = vec![0u64; (count * elem).div_ceil(8) + 1];
        {
            // SAFETY: as in `call`: the u64 buffer viewed as bytes.
            let bytes = unsafe {
                core::slice::from_raw_parts_mut(array.as_mut_ptr().cast::<u8>(), array.len() * 8)
            };
            for (i, op) in ops.iter().enumerate() {
                let n = stride.min(size_of::<DevmmuVmBindOp>());
                let at = i * elem;
                bytes[at..at + n].copy_from_slice(&as_bytes(op)[..n]);
                for b in &mut bytes[at + n..at + stride.max(n)] {
                    *b = tail;
                }
            }
        }
        let base = array.as_ptr() as u64;
        let (op_count, ops_addr) = match input.byte() % 32 {
            0 => (0, base),
            1 => (DEVMMU_VM_BIND_MAX_OPS + 1, base),
            2 => (count as u32, 0),
            3 => (count as u32, base + 4),
            4 => (count as u32, u64::MAX - 16),
            _ => (count as u32, base),
        };
        let a = DevmmuVmBind {
            vm_id: input.vm(),
            flags: input.flags(0),
            op_count,
            op_stride: stride as u32,
            ops: ops_addr,
        };
        // SAFETY of the addresses handed over: `ops` is null, wraps, is misaligned into the
        // array, or is the array, which holds `count` elements of `stride` bytes; a count above
        // the limit is refused before the array is read.
        let (r, back, _) = self.call(input, f, DEVMMU_IOCTL_VM_BIND, &a, true, true);
        if std::env::var_os("DEVMMU_SEQ_TRACE").is_some() {
            eprintln!("  ops {ops:?} stride {stride}");
        }
        drop(array);
        if r.is_ok() {
            // What the file read: `back` (cut short or extended), and `stride`-byte elements.
            let model = self
                .model
                .get_mut(&(f, back.vm_id))
                .expect("VM_BIND on a VM the model knows");
            for op in &ops {
                let seen: DevmmuVmBindOp =
                    from_bytes(&as_bytes(op)[..stride.min(size_of::<DevmmuVmBindOp>())]);
                let pages = (seen.va..seen.va + seen.size).step_by(PAGE_SIZE as usize);
                if seen.op == DEVMMU_VM_BIND_OP_MAP {
                    for (i, va) in pages.enumerate() {
                        let prev = model.insert(va, seen.bo_offset + i as u64 * PAGE_SIZE);
                        assert!(prev.is_none(), "a MAP succeeded over a bound page {va:#x}");
                    }
                } else {
                    let hit = pages.filter(|va| model.remove(va).is_some()).count();
                    assert!(hit > 0, "an UNMAP of nothing succeeded");
                }
            }
        }
    }

    fn device_access(&mut self, input: &mut Input<'_>, f: usize) {
        let mut data = vec![0u8; 4 * PAGE_SIZE as usize];
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
        let size = match input.byte() % 16 {
            0 => 0,
            1 => DEVMMU_DEVICE_ACCESS_MAX + 1,
            2 => u64::MAX,
            _ => 1 + u64::from(input.u32()) % data.len() as u64,
        };
        let addr = match input.byte() % 32 {
            0 => 0,
            1 => u64::MAX - 2,
            _ => data.as_mut_ptr() as u64,
        };
        let a = DevmmuDeviceAccess {
            vm_id: input.vm(),
            op: match input.byte() % 16 {
                0 => 0,
                1 => input.u32(),
                n => u32::from(n % 2) + 1,
            },
            va: input.va(),
            data: addr,
            size,
        };
        // Addresses: `data` holds 16 KiB, and a size above that is refused before any access.
        let _ = self.call(input, f, DEVMMU_IOCTL_DEVICE_ACCESS, &a, true, true);
    }

    fn mmap(&mut self, input: &mut Input<'_>, f: usize) {
        let offset = match (input.byte() % 8, self.offsets.is_empty()) {
            (0, _) | (_, true) => input.u64(),
            (n, false) => {
                self.offsets[usize::from(n) % self.offsets.len()]
                    + u64::from(input.byte() % 4) * PAGE_SIZE
            }
        };
        let len = match input.byte() % 8 {
            0 => 0,
            1 => input.u64(),
            n => u64::from(n) * PAGE_SIZE / 2,
        };
        let prot = input.flags(DEVMMU_PROT_READ | DEVMMU_PROT_WRITE);
        let before = self.snapshot();
        match self.file(f).mmap(offset, len, prot) {
            Ok(p) => {
                if prot & DEVMMU_PROT_READ != 0 {
                    // SAFETY: a fresh readable mapping of at least one page.
                    let _ = unsafe { p.read_volatile() };
                }
                let l = len.next_multiple_of(PAGE_SIZE);
                crate::mmap::unmap(p as usize, l).expect("unmap what was mapped");
            }
            Err(e) => {
                assert!(ALLOWED.contains(&e), "mmap returned {e:?}");
                assert_eq!(before, self.snapshot(), "a refused mmap changed state");
            }
        }
    }

    fn reopen(&mut self, f: usize) {
        let dev = if f == 0 {
            DEVMMU_DEVICE_GPU
        } else {
            DEVMMU_DEVICE_ISP
        };
        self.files[f] = None;
        self.model.retain(|&(file, _), _| file != f);
        self.files[f] = Some(File::open(&self.machine, dev, 0).expect("open"));
    }

    /// Rebuilds the model from the files (after a garbled request number ran some request).
    fn resync_model(&mut self) {
        self.model.clear();
        for (f, file) in self.files.iter().enumerate() {
            for (id, bindings) in file.as_ref().expect("open").summary().vms {
                let pages = pages(&bindings).iter().map(|p| (p.0, p.1)).collect();
                self.model.insert((f, id), pages);
            }
        }
    }

    fn check_model(&self) {
        for (f, file) in self.files.iter().enumerate() {
            let file = file.as_ref().expect("open");
            if let Err(e) = file.check_consistency() {
                panic!("file {f}: {e}");
            }
            let vms = file.summary().vms;
            let ids: Vec<u32> = vms.iter().map(|v| v.0).collect();
            let model_ids: Vec<u32> = self
                .model
                .keys()
                .filter(|k| k.0 == f)
                .map(|k| k.1)
                .collect();
            assert_eq!(ids, model_ids, "file {f}: VM ids differ from the model");
            for (id, bindings) in vms {
                let have: Vec<(u64, u64)> = pages(&bindings).iter().map(|p| (p.0, p.1)).collect();
                let want: Vec<(u64, u64)> =
                    self.model[&(f, id)].iter().map(|(&v, &o)| (v, o)).collect();
                assert_eq!(
                    have, want,
                    "file {f}, VM {id}: bound pages differ from the model"
                );
            }
        }
    }

    fn finish(mut self) {
        self.files = [None, None];
        self.fds.clear();
        assert_eq!(
            self.machine.live_bos(),
            self.baseline_bos,
            "BOs leaked after closing everything"
        );
    }
}
