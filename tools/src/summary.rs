//! The human summary of `devmmu camera`: sizes in KiB/MiB, rates in MB/s, per-frame times, and a
//! line per counter saying what it counts.
//!
//! It only formats a [`Report`]; it never runs anything.

use std::fmt::Write as _;

use devmmu_mm::device::{MmuFormat, TlbInvalidation};

use crate::camera::Report;

/// `bytes` in the largest binary unit that keeps a number of at least 1: `512 B`, `4.0 KiB`,
/// `1.32 MiB`, `2.00 GiB`, `256.00 TiB` (KiB with one decimal, the larger units with two).
pub fn bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.2} MiB", b / (KIB * KIB))
    } else if b < KIB * KIB * KIB * KIB {
        format!("{:.2} GiB", b / (KIB * KIB * KIB))
    } else {
        format!("{:.2} TiB", b / (KIB * KIB * KIB * KIB))
    }
}

/// `bytes` moved in `ms` milliseconds as a decimal rate: `855.2 MB/s` (10^6 bytes per second),
/// or `-` when no time passed.
pub fn rate(bytes: u64, ms: f64) -> String {
    if ms <= 0.0 {
        return "-".into();
    }
    format!("{:.1} MB/s", bytes as f64 / 1e6 / (ms / 1e3))
}

/// The format's name as words of a sentence: `ipu` → `IPU`, `arm-lpae-4k` → `ARM LPAE 4K`.
pub fn mmu_words(mmu: &str) -> String {
    mmu.split('-')
        .map(str::to_ascii_uppercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `a` or `an` before `word`, by its sound: an acronym spelled letter by letter takes `an` when
/// its first letter's name starts with a vowel sound (`an IPU`, `an ARM`, `an LPAE`, `a GPU`);
/// a lower-case word by its first letter (`an iommu`, `a direct`).
pub fn article(word: &str) -> &'static str {
    let first = word.chars().next().unwrap_or('x');
    let vowel = if first.is_ascii_uppercase() {
        "AEFHILMNORSX".contains(first)
    } else {
        "aeiou".contains(first)
    };
    if vowel {
        "an"
    } else {
        "a"
    }
}

/// The value at percentile `p` (0-100) of `sorted` (ascending), by nearest rank; 0 if empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Why this MMU's driver invalidates its TLB when it does.
fn tlb_reason(mmu: Option<MmuFormat>) -> &'static str {
    match mmu.map(|f| (f.tlb_caches_empty(), f.tlb_invalidation())) {
        Some((true, TlbInvalidation::All)) => {
            "whole-TLB invalidations, after each map as well as each unmap: empty entries point \
             at a dummy page, and the TLB may hold that translation (an ARM LPAE MMU needs none \
             after a map)"
        }
        Some((true, TlbInvalidation::Range)) => {
            "range invalidations, after each map as well as each unmap: empty entries may be \
             cached"
        }
        Some((false, TlbInvalidation::All)) => {
            "whole-TLB invalidations, after each unmap only: an empty entry is invalid and \
             never cached"
        }
        Some((false, TlbInvalidation::Range)) => {
            "range (by VA and ASID) invalidations, after each unmap only: an invalid entry is \
             never cached (an IPU MMU also invalidates after a map, for its dummy page)"
        }
        None => "device TLB invalidations",
    }
}

/// The summary, one line per entry (no trailing newline).
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let mmu = mmu_words(r.mmu);
    let dma = match r.dma_ops {
        "iommu" => "system-IOMMU",
        "direct" => "direct",
        other => other,
    };
    let _ = writeln!(
        s,
        "devmmu camera: {} frames of {}x{} NV12 through {} {mmu} MMU, {dma} DMA, {}",
        r.frames,
        r.width,
        r.height,
        article(&mmu),
        if r.coherent {
            "coherent"
        } else {
            "non-coherent"
        }
    );
    let _ = writeln!(
        s,
        "  frames matched: {}/{}{}",
        r.frames_matched,
        r.frames,
        if r.nv12_match {
            " (every frame byte-exact)"
        } else {
            ""
        }
    );
    if let Some(m) = &r.first_mismatch {
        let _ = writeln!(s, "  first mismatch: {m}");
    }
    let moved = r.frame_bytes * u64::from(r.frames);
    let _ = writeln!(
        s,
        "  frame {} in a buffer object of {}; {} captured in {:.1} ms, {}",
        bytes(r.frame_bytes),
        bytes(r.bo_bytes),
        bytes(moved),
        r.elapsed_ms,
        rate(moved, r.elapsed_ms)
    );
    let _ = writeln!(
        s,
        "  per frame: p50 {:.3} ms, p99 {:.3} ms (clear, device write, sync, check)",
        r.frame_ms_p50, r.frame_ms_p99
    );
    let fmt = MmuFormat::from_name(r.mmu);
    let walker = if r.coherent {
        "0: the walker is coherent and snoops the CPU caches"
    } else {
        "cleaned to memory so the non-coherent table walker sees the new entries"
    };
    let counters: [(&str, String, String); 9] = [
        (
            "IOPTE stores",
            r.iopte_stores.to_string(),
            "device page-table entries written: one per 4 KiB page bound, plus table pointers \
             (and the clears of an unbind)"
                .into(),
        ),
        (
            "PTE lines cleaned",
            r.pte_lines_cleaned.to_string(),
            format!("64-byte cache lines of table memory {walker}"),
        ),
        (
            "TLB invalidations",
            r.tlb_invalidations.to_string(),
            tlb_reason(fmt).into(),
        ),
        (
            "tables allocated",
            r.tables_allocated.to_string(),
            "device page-table pages (4 KiB each)".into(),
        ),
        (
            "synced for device",
            bytes(r.synced_bytes_for_device),
            "streaming-DMA syncs handing buffers (and tables) to the device".into(),
        ),
        (
            "synced for CPU",
            bytes(r.synced_bytes_for_cpu),
            "syncs handing the captured frames back to the CPU".into(),
        ),
        (
            "bounced",
            bytes(r.bounced_bytes),
            "copied through swiotlb bounce buffers (direct DMA of memory above the 32-bit \
             mask)"
                .into(),
        ),
        (
            "faults",
            r.faults.to_string(),
            "device MMU faults (translation or permission)".into(),
        ),
        (
            "DMA leaks",
            r.dma_leaks.to_string(),
            "DMA mappings left at detach".into(),
        ),
    ];
    for (name, value, what) in counters {
        let _ = writeln!(s, "  {name:<18} {value:>11}  {what}");
    }
    if r.platform == "vfio" {
        let _ = writeln!(
            s,
            "  edu on the running kernel: {} DMAs through the IOMMU (every IOPTE fetched by DMA, \
             then the data)",
            r.device_dmas
        );
    }
    s.truncate(s.trim_end().len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_articles_and_percentiles() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(1_384_448), "1.32 MiB");
        assert_eq!(bytes(1 << 48), "256.00 TiB");
        assert_eq!(rate(10_000_000, 10.0), "1000.0 MB/s");
        assert_eq!(rate(1, 0.0), "-");
        assert_eq!(article(&mmu_words("ipu")), "an");
        assert_eq!(article(&mmu_words("arm-lpae-4k")), "an");
        assert_eq!(article("GPU"), "a");
        assert_eq!(article("direct"), "a");
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 99.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
