//! Cache maintenance with the CPU's own instructions, for memory a non-coherent device reads or
//! writes.
//!
//! - x86-64: `clwb` (write back, keep the line) cleans when CPUID.(EAX=7,ECX=0):EBX bit 24 says
//!   it exists, else `clflushopt` (bit 23), else `clflush` (always present on x86-64);
//!   invalidate and clean+invalidate use `clflushopt`, else `clflush` (Intel SDM vol. 2A,
//!   CLFLUSHOPT/CLWB; Linux arch/x86/mm/pat/set_memory.c `clflush_cache_range`). The features are
//!   detected at run time, not compile time: under valgrind CPUID hides them and executing them
//!   raises SIGILL. One `sfence` (`mfence` with plain `clflush`) ends each operation. The
//!   stride is the CLFLUSH line size of `CPUID.1:EBX[15:8]`.
//! - aarch64: `dc cvac` cleans, `dc civac` cleans and invalidates; `dc ivac` (invalidate without
//!   write-back) is not allowed at EL0, so invalidate is `dc civac` too. One `dsb sy` ends each
//!   operation (Arm ARM D7.5.9; Linux arch/arm64/mm/cache.S `dcache_clean_poc`).
//!   The stride is the smallest D-cache line from `CTR_EL0.DminLine`.
//! - other architectures: no line instruction, only a full fence.
//!
//! None of the instructions used here discards data: "invalidate" always writes a dirty line
//! back first. The line functions issue no fence, so that a caller flushing several runs (a
//! page-table update touching several tables) pays for one fence per operation; the `*_slice`
//! functions fence once at the end.
//!
//! Line counts are in [`LINE_SIZE`] (64-byte) units and cover every line the range touches,
//! whatever the hardware's line size.

use std::sync::OnceLock;

use super::LINE_SIZE;

/// A per-line cache maintenance instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineInstr {
    /// x86 `clwb`: write back, line may stay cached.
    Clwb,
    /// x86 `clflushopt`: write back and invalidate, weakly ordered.
    Clflushopt,
    /// x86 `clflush`: write back and invalidate, ordered with other stores.
    Clflush,
    /// aarch64 `dc cvac`: clean to the point of coherency.
    DcCvac,
    /// aarch64 `dc civac`: clean and invalidate to the point of coherency.
    DcCivac,
    /// No line instruction on this architecture; only the fence runs.
    None,
}

/// The fence that completes a batch of line operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FenceInstr {
    /// x86 `sfence` (orders `clflushopt`/`clwb`).
    Sfence,
    /// x86 `mfence` (with plain `clflush`).
    Mfence,
    /// aarch64 `dsb sy`.
    DsbSy,
    /// A sequentially consistent atomic fence (architectures without line instructions).
    Atomic,
}

/// What this CPU uses for each operation, detected once at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NativeCaps {
    /// Instruction for clean (write back).
    pub clean: LineInstr,
    /// Instruction for invalidate and clean+invalidate.
    pub invalidate: LineInstr,
    /// Fence issued once per operation.
    pub fence: FenceInstr,
    /// Distance in bytes between two line instructions: the smallest data-cache line size
    /// (`CPUID.1:EBX[15:8]` on x86-64; `CTR_EL0.DminLine` on aarch64). A power of two, at most
    /// [`LINE_SIZE`].
    pub stride: usize,
}

/// The instructions this CPU uses, detected on first call (CPUID on x86-64, `CTR_EL0` on
/// aarch64) and cached.
pub fn caps() -> NativeCaps {
    static CAPS: OnceLock<NativeCaps> = OnceLock::new();
    *CAPS.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> NativeCaps {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    // Leaf 7 exists only if leaf 0 reports it as within the maximum basic leaf.
    let max_leaf = __cpuid(0).eax;
    let ebx7 = if max_leaf >= 7 {
        __cpuid_count(7, 0).ebx
    } else {
        0
    };
    // CPUID.1:EBX[15:8] is the CLFLUSH line size in 8-byte units.
    let clflush_line = ((__cpuid(1).ebx >> 8) & 0xff) as usize * 8;
    let stride = if clflush_line.is_power_of_two() {
        clflush_line.min(LINE_SIZE as usize)
    } else {
        LINE_SIZE as usize
    };
    let clflushopt = ebx7 & (1 << 23) != 0;
    let clwb = ebx7 & (1 << 24) != 0;
    let invalidate = if clflushopt {
        LineInstr::Clflushopt
    } else {
        LineInstr::Clflush
    };
    NativeCaps {
        clean: if clwb { LineInstr::Clwb } else { invalidate },
        invalidate,
        fence: if clflushopt || clwb {
            FenceInstr::Sfence
        } else {
            FenceInstr::Mfence
        },
        stride,
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> NativeCaps {
    let ctr: u64;
    // SAFETY: CTR_EL0 is readable at EL0 on Linux (SCTLR_EL1.UCT is set, or the kernel
    // emulates the read); reading it has no side effect.
    unsafe {
        core::arch::asm!("mrs {0}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags))
    };
    // DminLine, bits [19:16]: log2 of the smallest D-cache line in 4-byte words.
    let line = 4usize << ((ctr >> 16) & 0xf);
    NativeCaps {
        clean: LineInstr::DcCvac,
        invalidate: LineInstr::DcCivac,
        fence: FenceInstr::DsbSy,
        stride: line.min(LINE_SIZE as usize),
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> NativeCaps {
    NativeCaps {
        clean: LineInstr::None,
        invalidate: LineInstr::None,
        fence: FenceInstr::Atomic,
        stride: LINE_SIZE as usize,
    }
}

/// Runs `instr` on every line of `ptr..ptr + len`, stepping by `stride`.
///
/// # Safety
/// `ptr..ptr + len` must be mapped, and `instr` must be supported by this CPU.
unsafe fn run_lines(instr: LineInstr, stride: usize, ptr: *const u8, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let start = ptr as usize;
    let lines = super::lines_touched(start as u64, len as u64) as usize;
    let mut p = start & !(stride - 1);
    let end = start + len;
    while p < end {
        // SAFETY: `p` lies in the line of a mapped byte of `ptr..ptr + len` (the caller
        // guarantees the mapping, and mappings are page-granular, so the whole line is mapped);
        // the caller guarantees the instruction exists. None of them modify data.
        unsafe { line_op(instr, p as *const u8) };
        p += stride;
    }
    lines
}

/// One line instruction at `p`.
///
/// # Safety
/// `p` must be mapped and `instr` supported by this CPU.
#[inline(always)]
#[allow(unused_variables)]
unsafe fn line_op(instr: LineInstr, p: *const u8) {
    // The asm blocks do not claim `nomem`: the compiler must keep earlier stores to the line
    // before the write-back.
    match instr {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees `p` is mapped and the instruction exists.
        LineInstr::Clwb => unsafe {
            core::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        LineInstr::Clflushopt => unsafe {
            core::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; clflush exists on every x86-64 CPU.
        LineInstr::Clflush => unsafe {
            core::arch::asm!("clflush [{0}]", in(reg) p, options(nostack, preserves_flags))
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller guarantees `p` is mapped; Linux enables EL0 cache maintenance by
        // VA (SCTLR_EL1.UCI).
        LineInstr::DcCvac => unsafe {
            core::arch::asm!("dc cvac, {0}", in(reg) p, options(nostack, preserves_flags))
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        LineInstr::DcCivac => unsafe {
            core::arch::asm!("dc civac, {0}", in(reg) p, options(nostack, preserves_flags))
        },
        // Instructions of other architectures never appear in this CPU's caps.
        _ => {}
    }
}

/// Waits until every line operation issued before it has completed (the one fence of an
/// operation). On x86-64 with plain `clflush` this is `mfence`, else `sfence`; on aarch64
/// `dsb sy`; elsewhere a sequentially consistent atomic fence.
pub fn fence() {
    match caps().fence {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: sfence only orders stores; SSE is part of the x86-64 baseline.
        FenceInstr::Sfence => unsafe {
            core::arch::asm!("sfence", options(nostack, preserves_flags))
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: mfence only orders memory accesses; SSE2 is part of the x86-64 baseline.
        FenceInstr::Mfence => unsafe {
            core::arch::asm!("mfence", options(nostack, preserves_flags))
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a barrier with no other effect.
        FenceInstr::DsbSy => unsafe {
            core::arch::asm!("dsb sy", options(nostack, preserves_flags))
        },
        _ => core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst),
    }
}

/// Cleans (writes back) every line of `ptr..ptr + len`, without a fence. Returns the number of
/// 64-byte lines touched (0 for `len == 0`).
///
/// # Safety
/// `ptr..ptr + len` must be mapped memory of this process (an unmapped address faults).
pub unsafe fn clean_lines(ptr: *const u8, len: usize) -> usize {
    let c = caps();
    // SAFETY: the caller guarantees the mapping; `caps()` only names instructions CPUID reported.
    unsafe { run_lines(c.clean, c.stride, ptr, len) }
}

/// Invalidates every line of `ptr..ptr + len`, without a fence. No instruction used discards
/// data (dirty lines are written back first), so this is also clean+invalidate. Returns the
/// number of 64-byte lines touched.
///
/// # Safety
/// `ptr..ptr + len` must be mapped memory of this process.
pub unsafe fn invalidate_lines(ptr: *const u8, len: usize) -> usize {
    let c = caps();
    // SAFETY: as in `clean_lines`.
    unsafe { run_lines(c.invalidate, c.stride, ptr, len) }
}

/// Cleans and invalidates every line of `ptr..ptr + len`, without a fence. Returns the number
/// of 64-byte lines touched.
///
/// # Safety
/// `ptr..ptr + len` must be mapped memory of this process.
pub unsafe fn clean_invalidate_lines(ptr: *const u8, len: usize) -> usize {
    // SAFETY: forwarded contract; the invalidate instructions used here all write back first.
    unsafe { invalidate_lines(ptr, len) }
}

/// Cleans every line of `buf`, then fences once. Returns the number of 64-byte lines touched.
pub fn clean_slice(buf: &[u8]) -> usize {
    // SAFETY: a slice is mapped memory.
    let n = unsafe { clean_lines(buf.as_ptr(), buf.len()) };
    fence();
    n
}

/// Cleans and invalidates every line of `buf`, then fences once. Returns the number of 64-byte
/// lines touched. The bytes of `buf` are unchanged (dirty lines are written back first).
pub fn clean_invalidate_slice(buf: &[u8]) -> usize {
    // SAFETY: a slice is mapped memory.
    let n = unsafe { clean_invalidate_lines(buf.as_ptr(), buf.len()) };
    fence();
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Page([u8; 4096]);

    #[test]
    fn counts_every_touched_line() {
        let page = Box::new(Page([7; 4096]));
        let p = page.0.as_ptr();
        assert_eq!(clean_slice(&page.0), 64);
        assert_eq!(clean_invalidate_slice(&page.0[62..64 + 2]), 2);
        assert_eq!(clean_slice(&page.0[..0]), 0);
        assert_eq!(clean_slice(&page.0[..1]), 1);
        // SAFETY: inside `page`.
        unsafe {
            assert_eq!(invalidate_lines(p.add(63), 2), 2);
            assert_eq!(clean_lines(p.add(64), 64), 1);
            assert_eq!(clean_lines(p.add(65), 64), 2);
        }
        fence();
        // Maintenance never changes data.
        assert!(page.0.iter().all(|&b| b == 7));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn clflush_fallback_and_detected_caps_run() {
        let page = Box::new(Page([1; 4096]));
        // SAFETY: inside `page`; clflush exists on every x86-64 CPU.
        let n = unsafe { run_lines(LineInstr::Clflush, 64, page.0.as_ptr().add(10), 100) };
        assert_eq!(n, 2);
        let c = caps();
        assert_eq!(c.stride, 64);
        // The clean instruction is never weaker than the invalidate one would require.
        assert!(matches!(
            (c.clean, c.invalidate),
            (LineInstr::Clwb, LineInstr::Clflushopt)
                | (LineInstr::Clwb, LineInstr::Clflush)
                | (LineInstr::Clflushopt, LineInstr::Clflushopt)
                | (LineInstr::Clflush, LineInstr::Clflush)
        ));
    }
}
