//! VM_BIND: an array of MAP / UNMAP operations applied to a VM, all or nothing.
//!
//! Three passes, so that a refused array leaves the VM as it was:
//! 1. read and check every operation on its own (fields, flags, padding, handle, alignment, VA
//!    range, protection the MMU can enforce);
//! 2. run the whole array against the VM's [`Shadow`] (a copy of what is bound, with the BOs):
//!    a MAP onto a bound page is `-EEXIST`, an UNMAP that hits nothing is `-ENOENT`, each seeing
//!    the operations before it;
//! 3. apply the operations to the [`Vm`] in order. What can still fail here is a resource (no
//!    memory for a table page, no swiotlb room, a BO that cannot be shared between the two
//!    devices): then the operations already applied are undone in reverse order (a MAP is
//!    unbound, an UNMAP re-binds the pieces it removed, from the shadow) and the error is
//!    returned. An undone UNMAP leaves the same IOPTEs, BO bytes and permissions bound, but
//!    as separate bindings where one binding was cut (as GPUVM's remap leaves them).
//!
//! As xe and panthor, the array is one request: its operations are applied in order and each
//! sees the ones before it (MAP then UNMAP of the same range in one array is valid).

use std::collections::BTreeMap;
use std::sync::Arc;

use devmmu_mm::bo::Bo;
use devmmu_mm::prelude::*;
use rustix::io::Errno;

use crate::abi::*;
use crate::errno::errno_of;
use crate::file::{File, State};

/// One bound range, as the shadow keeps it.
#[derive(Clone)]
pub(crate) struct Piece {
    size: u64,
    bo: Arc<Bo>,
    bo_offset: u64,
    prot: Prot,
}

/// What a VM has bound: first VA → binding.
#[derive(Clone, Default)]
pub(crate) struct Shadow(BTreeMap<u64, Piece>);

impl Shadow {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Every bound page: `(va, bo_offset)`, in VA order.
    pub(crate) fn pages(&self) -> Vec<(u64, u64)> {
        self.0
            .iter()
            .flat_map(|(&va, p)| {
                (0..p.size / PAGE_SIZE)
                    .map(move |i| (va + i * PAGE_SIZE, p.bo_offset + i * PAGE_SIZE))
            })
            .collect()
    }

    /// Starts of the pieces overlapping `[va, end)`.
    fn overlapping(&self, va: u64, end: u64) -> Vec<u64> {
        let mut out = Vec::new();
        if let Some((&s, p)) = self.0.range(..va).next_back() {
            if s + p.size > va {
                out.push(s);
            }
        }
        out.extend(self.0.range(va..end).map(|(&s, _)| s));
        out
    }

    /// Removes `[va, end)`, splitting cut pieces; returns the removed parts `(va, piece)`.
    fn remove(&mut self, va: u64, end: u64) -> Vec<(u64, Piece)> {
        let mut removed = Vec::new();
        for s in self.overlapping(va, end) {
            let p = self.0.remove(&s).expect("listed by overlapping");
            let p_end = s + p.size;
            let (cut_s, cut_e) = (s.max(va), p_end.min(end));
            for (a, b) in [(s, cut_s), (cut_e, p_end)] {
                if a < b {
                    let mut keep = p.clone();
                    keep.bo_offset = p.bo_offset + (a - s);
                    keep.size = b - a;
                    self.0.insert(a, keep);
                }
            }
            let mut gone = p.clone();
            gone.bo_offset = p.bo_offset + (cut_s - s);
            gone.size = cut_e - cut_s;
            removed.push((cut_s, gone));
        }
        removed
    }
}

/// An operation that passed the checks of pass 1.
enum Op {
    Map { va: u64, piece: Piece },
    Unmap { va: u64, size: u64 },
}

/// What pass 3 must undo for an applied operation.
enum Done {
    Mapped { va: u64, size: u64 },
    Unmapped(Vec<(u64, Piece)>),
}

fn page_aligned(v: u64) -> bool {
    v.is_multiple_of(PAGE_SIZE)
}

/// Pass 1 for one operation.
fn check_op(st: &State, device: &Device, raw: &DevmmuVmBindOp) -> Result<Op, Errno> {
    let va_end = 1u64 << device.config().mmu.iova_bits();
    if raw.pad != 0
        || raw.size == 0
        || !page_aligned(raw.va)
        || !page_aligned(raw.size)
        || raw.va < VA_START
        || raw.va.checked_add(raw.size).is_none_or(|e| e > va_end)
    {
        return Err(Errno::INVAL);
    }
    match raw.op {
        DEVMMU_VM_BIND_OP_MAP => {
            if raw.flags & !(DEVMMU_VM_BIND_READ | DEVMMU_VM_BIND_WRITE) != 0 || raw.flags == 0 {
                return Err(Errno::INVAL);
            }
            let bo = st.bo(raw.handle)?;
            if !page_aligned(raw.bo_offset)
                || raw
                    .bo_offset
                    .checked_add(raw.size)
                    .is_none_or(|e| e > bo.size())
            {
                return Err(Errno::INVAL);
            }
            let mut prot = Prot::NONE;
            if raw.flags & DEVMMU_VM_BIND_READ != 0 {
                prot |= Prot::READ;
            }
            if raw.flags & DEVMMU_VM_BIND_WRITE != 0 {
                prot |= Prot::WRITE;
            }
            let cfg = device.config();
            if cfg.mmu.effective_prot(prot).contains(Prot::WRITE)
                && !prot.contains(Prot::WRITE)
                && !cfg.accept_unenforced_prot
            {
                // The format cannot deny the device writes (the IPU's entries have no
                // permission bits): refused, as `Vm::bind` would.
                return Err(Errno::INVAL);
            }
            Ok(Op::Map {
                va: raw.va,
                piece: Piece {
                    size: raw.size,
                    bo: bo.clone(),
                    bo_offset: raw.bo_offset,
                    prot,
                },
            })
        }
        DEVMMU_VM_BIND_OP_UNMAP => {
            if raw.flags != 0 || raw.handle != 0 || raw.bo_offset != 0 {
                return Err(Errno::INVAL);
            }
            Ok(Op::Unmap {
                va: raw.va,
                size: raw.size,
            })
        }
        _ => Err(Errno::INVAL),
    }
}

impl File {
    /// VM_BIND (see the module docs).
    ///
    /// Errors, each leaving the VM as it was: `EINVAL` (non-zero `flags`, `op_count` 0 or above
    /// `DEVMMU_VM_BIND_MAX_OPS`, `op_stride` not a multiple of 8 or outside 8 to
    /// `DEVMMU_VM_BIND_MAX_STRIDE`, a misaligned `ops`, an operation with an unknown op or
    /// flag, non-zero padding or unused field, a size of 0, a misaligned or out-of-range VA,
    /// offset or size, a protection the MMU cannot enforce), `E2BIG` (an element with non-zero
    /// bytes past the known struct), `EFAULT` (a null `ops` or an array leaving user space),
    /// `ENOENT` (no such VM, a MAP of an unknown handle, an UNMAP of nothing), `EEXIST` (a MAP
    /// onto a bound page), `ENOMEM` / `EBUSY` / `EIO` (a resource failure while applying).
    ///
    /// # Safety
    /// The caller's promise ([`crate::user`]): `op_count * op_stride` bytes at `ops` are
    /// readable.
    pub unsafe fn vm_bind(&self, a: &mut DevmmuVmBind) -> Result<(), Errno> {
        if a.flags != 0
            || a.op_count == 0
            || a.op_count > DEVMMU_VM_BIND_MAX_OPS
            || a.op_stride < 8
            || a.op_stride > DEVMMU_VM_BIND_MAX_STRIDE
            || !a.op_stride.is_multiple_of(8)
        {
            return Err(Errno::INVAL);
        }
        // At most 1024 * 4096 bytes: no overflow.
        let total = u64::from(a.op_count) * u64::from(a.op_stride);
        crate::user::check_range(a.ops, total, 8)?;
        let mut st = self.state.lock();
        if !st.vms.contains_key(&a.vm_id) {
            return Err(Errno::NOENT);
        }
        let device = self.dev().device().clone();
        // Pass 1.
        let mut ops = Vec::with_capacity(a.op_count as usize);
        for i in 0..u64::from(a.op_count) {
            let addr = a.ops + i * u64::from(a.op_stride);
            // SAFETY: forwarded promise; the element lies inside the checked array.
            let raw: DevmmuVmBindOp =
                unsafe { crate::user::read_struct(addr, a.op_stride as usize)? };
            ops.push(check_op(&st, &device, &raw)?);
        }
        let entry = st.vms.get_mut(&a.vm_id).expect("checked above");
        // Pass 2.
        let mut shadow = entry.shadow.clone();
        for op in &ops {
            match op {
                Op::Map { va, piece } => {
                    if !shadow.overlapping(*va, va + piece.size).is_empty() {
                        return Err(Errno::EXIST);
                    }
                    shadow.0.insert(*va, piece.clone());
                }
                Op::Unmap { va, size } => {
                    if shadow.remove(*va, va + size).is_empty() {
                        return Err(Errno::NOENT);
                    }
                }
            }
        }
        // Pass 3.
        let mut done: Vec<Done> = Vec::with_capacity(ops.len());
        let mut applied = entry.shadow.clone();
        for op in &ops {
            let r = match op {
                Op::Map { va, piece } => entry
                    .vm
                    .bind(
                        &piece.bo,
                        piece.bo_offset,
                        piece.size,
                        Placement::Fixed(Iova(*va)),
                        piece.prot,
                    )
                    .map(|_| {
                        applied.0.insert(*va, piece.clone());
                        Done::Mapped {
                            va: *va,
                            size: piece.size,
                        }
                    }),
                Op::Unmap { va, size } => entry
                    .vm
                    .unbind(Iova(*va), *size)
                    .map(|_| Done::Unmapped(applied.remove(*va, va + size))),
            };
            match r {
                Ok(d) => done.push(d),
                Err(e) => {
                    for (va, size) in undo(&entry.vm, done) {
                        // Keep the shadow true to the VM.
                        entry.shadow.remove(va, va + size);
                    }
                    return Err(errno_of(&e));
                }
            }
        }
        entry.shadow = shadow;
        Ok(())
    }
}

/// Undoes applied operations, last first. Best effort: a re-bind that fails (no memory for a
/// table page) leaves that range unbound; those ranges `(va, size)` are returned.
fn undo(vm: &Vm, done: Vec<Done>) -> Vec<(u64, u64)> {
    let mut lost = Vec::new();
    for d in done.into_iter().rev() {
        match d {
            Done::Mapped { va, size } => {
                let _ = vm.unbind(Iova(va), size);
            }
            Done::Unmapped(pieces) => {
                for (va, p) in pieces {
                    let fixed = Placement::Fixed(Iova(va));
                    if vm.bind(&p.bo, p.bo_offset, p.size, fixed, p.prot).is_err() {
                        lost.push((va, p.size));
                    }
                }
            }
        }
    }
    lost
}
