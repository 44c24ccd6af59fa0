//! Heap tuning for the benchmarks: keep freed memory in the process.
//!
//! Every 1 GiB case allocates its 515 table pages (2 MiB) and frees them again. With glibc's
//! defaults, freeing them leaves more than `M_TRIM_THRESHOLD` (128 KiB) free at the top of the
//! heap, so glibc gives it back to the kernel, and the next iteration takes about 1000 minor page
//! faults to get it back. In this VM that multiplies the cost of a 1 GiB map by 7 (3.3 instead
//! of 0.49 ns per page for ours, 8.0 instead of 2.0 for aarch64-paging), measures the kernel's
//! fault path rather than the page table, and makes the result depend on the order of the cases.
//! A driver's table pages come from a page allocator or a pool that does not fault on every
//! map, so the benchmarks raise the trim threshold once at start-up.

/// Keeps freed heap memory in the process and serves large blocks from the heap (glibc
/// malloc(3), `mallopt`): raises `M_MMAP_THRESHOLD` to its maximum (32 MiB on 64-bit) and
/// `M_TRIM_THRESHOLD` to 2 GiB. Raising only the trim threshold would freeze the mmap threshold at
/// 128 KiB, and a bind's large short-lived vectors would then be faulted in on every call (the
/// manager bench measured 1.5-1.7 ms instead of 0.97 ms per 64 MiB bind).
///
/// Returns whether the settings were applied: `false` on other C libraries, or if the
/// environment variable `DEVMMU_BENCH_GLIBC_TRIM` is set (to measure with glibc's defaults).
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("DEVMMU_BENCH_GLIBC_TRIM").is_some() {
        return false;
    }
    set_malloc_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_malloc_thresholds() -> bool {
    /// glibc's largest mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
    const MMAP_THRESHOLD_MAX: libc::c_int = 32 << 20;
    // SAFETY: mallopt only changes glibc's malloc parameters; it takes two ints, returns 1 on
    // success, and may be called at any time from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_settings() {
        assert!(super::set_malloc_thresholds());
    }
}
