//! The page-table benchmark cases, and the table of docs/performance.md built from criterion's
//! results.
//!
//! The bench (`benches/pagetable.rs`) names its groups and functions with the constants here, so
//! the table cannot silently lose a case. Criterion writes, for each case,
//! `<criterion dir>/<group>/<case>/new/estimates.json`, whose `median.point_estimate` is the
//! median time of one iteration in nanoseconds; [`markdown_table`] divides it by the pages one
//! iteration covers and relates it to the physical limits measured in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Pages of 4 KiB in 1 GiB: the size every whole-range case maps or unmaps.
pub const PAGES_1GIB: u64 = 262_144;

/// Criterion group of the cases that cover 1 GiB per iteration.
pub const GROUP_1GIB: &str = "pagetable_1GiB";
/// Criterion group of the cases that cover one 4 KiB page per iteration.
pub const GROUP_SINGLE: &str = "pagetable_single";

/// Physical limit 1: plain stores into pre-allocated leaf tables.
pub const LIMIT_STORE: &str = "limit_store";
/// Physical limit 2: the stores, a clean of every line (`clwb`, else `clflushopt`), one `sfence`;
/// the lines in cache when the stores begin.
pub const LIMIT_STORE_FLUSH: &str = "limit_store_flush";
/// [`LIMIT_STORE_FLUSH`] with every line evicted from the caches before the stores begin.
pub const LIMIT_STORE_FLUSH_EVICTED: &str = "limit_store_flush_evicted";
/// Our map of 1 GiB of 4 KiB pages into a fresh table.
pub const MAP_4K: &str = "map_4k";
/// [`MAP_4K`] with every table page taken from the global heap (glibc) inside the timed part.
pub const MAP_4K_COLD: &str = "map_4k_cold_heap";
/// Our unmap of that range, with `iotlb_sync`.
pub const UNMAP_4K: &str = "unmap_4k";
/// Our map of 1 GiB of 2 MiB blocks into a fresh table.
pub const MAP_2M: &str = "map_2m";
/// Our unmap of those blocks, with `iotlb_sync`.
pub const UNMAP_2M: &str = "unmap_2m";
/// [`MAP_4K`] with a non-coherent walker (real cache instructions).
pub const MAP_4K_NONCOHERENT: &str = "map_4k_noncoherent";
/// [`UNMAP_4K`] with a non-coherent walker.
pub const UNMAP_4K_NONCOHERENT: &str = "unmap_4k_noncoherent";
/// aarch64-paging `map_range` with `NO_BLOCK_MAPPINGS` into a fresh table.
pub const PEER_MAP_4K: &str = "aarch64_paging_map_4k";
/// aarch64-paging unmap by `modify_range`, clearing each leaf (tables stay allocated).
pub const PEER_UNMAP_MODIFY: &str = "aarch64_paging_unmap_modify_range";
/// aarch64-paging unmap by `modify_range`, then `compact_subtables` to free the emptied tables.
pub const PEER_UNMAP_MODIFY_COMPACT: &str = "aarch64_paging_unmap_modify_range_compact";
/// aarch64-paging unmap by `map_range` with attributes lacking `VALID`.
pub const PEER_UNMAP_INVALID: &str = "aarch64_paging_unmap_map_range_invalid";
/// One 4 KiB map + unmap + `iotlb_sync` into a table that already holds other pages.
pub const SINGLE_4K: &str = "map_unmap_4k";
/// [`SINGLE_4K`] with a non-coherent walker.
pub const SINGLE_4K_NONCOHERENT: &str = "map_unmap_4k_noncoherent";

/// One benchmark case as it appears in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Criterion group.
    pub group: &'static str,
    /// Criterion function name inside the group.
    pub name: &'static str,
    /// 4 KiB pages one iteration covers (the criterion `Throughput::Elements`).
    pub pages: u64,
    /// Whether the case does cache maintenance, so that it is also compared with
    /// [`LIMIT_STORE_FLUSH`].
    pub noncoherent: bool,
    /// What one timed iteration does.
    pub what: &'static str,
}

/// Every case of `benches/pagetable.rs`, in table order.
pub const CASES: &[Case] = &[
    Case {
        group: GROUP_1GIB,
        name: LIMIT_STORE,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "plain stores of the 262144 leaf values a map writes into 512 pre-allocated 4 KiB leaf tables",
    },
    Case {
        group: GROUP_1GIB,
        name: LIMIT_STORE_FLUSH,
        pages: PAGES_1GIB,
        noncoherent: true,
        what: "the same stores into lines already in cache (an untimed pass stored them), then a clean of each of the 32768 lines (clwb where the CPU has it, else clflushopt), then one sfence",
    },
    Case {
        group: GROUP_1GIB,
        name: LIMIT_STORE_FLUSH_EVICTED,
        pages: PAGES_1GIB,
        noncoherent: true,
        what: "limit_store_flush with every line evicted (clflushopt + sfence, untimed) before the stores, so that each store misses",
    },
    Case {
        group: GROUP_1GIB,
        name: MAP_4K,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "PageTable::map of 1 GiB of 4 KiB pages into an empty table (root made outside the timed part; the 514 tables below it taken from the allocator's free list and zeroed inside it, as a driver's table pool does in steady state)",
    },
    Case {
        group: GROUP_1GIB,
        name: MAP_4K_COLD,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "map_4k with an empty free list: the 514 tables come from the heap inside the timed part, in chunks of 1, 1, 2, 4, 8, then 16 pages (one glibc posix_memalign per chunk: 37 for the 515 tables), L1 and L2 zeroed",
    },
    Case {
        group: GROUP_1GIB,
        name: UNMAP_4K,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "PageTable::unmap of that 1 GiB (clears the 262144 leaves one by one, unlinks the 514 emptied tables) + iotlb_sync (frees them)",
    },
    Case {
        group: GROUP_1GIB,
        name: MAP_2M,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "PageTable::map of 1 GiB with 512 blocks of 2 MiB (dma 2 MiB aligned) into an empty table",
    },
    Case {
        group: GROUP_1GIB,
        name: UNMAP_2M,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "PageTable::unmap of those 512 blocks + iotlb_sync",
    },
    Case {
        group: GROUP_1GIB,
        name: MAP_4K_NONCOHERENT,
        pages: PAGES_1GIB,
        noncoherent: true,
        what: "map_4k with a non-coherent walker (FlushTableAlloc with a reserve of 514 pages): each new table cleaned whole (clwb, else clflushopt) once before it is linked, one sfence per sync_for_device call",
    },
    Case {
        group: GROUP_1GIB,
        name: UNMAP_4K_NONCOHERENT,
        pages: PAGES_1GIB,
        noncoherent: true,
        what: "unmap_4k with a non-coherent walker (tables about to be freed are not cleaned; the surviving parents' cleared lines are)",
    },
    Case {
        group: GROUP_1GIB,
        name: PEER_MAP_4K,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "aarch64-paging 0.12 Mapping::map_range, NO_BLOCK_MAPPINGS, into an empty root-level-0 table (same 4 levels, tables allocated inside the timed part)",
    },
    Case {
        group: GROUP_1GIB,
        name: PEER_UNMAP_MODIFY,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "aarch64-paging modify_range setting each leaf to 0 (one atomic swap per descriptor); its tables stay allocated",
    },
    Case {
        group: GROUP_1GIB,
        name: PEER_UNMAP_MODIFY_COMPACT,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "aarch64-paging modify_range as above, then compact_subtables, which frees the 514 emptied tables: the same work as our unmap",
    },
    Case {
        group: GROUP_1GIB,
        name: PEER_UNMAP_INVALID,
        pages: PAGES_1GIB,
        noncoherent: false,
        what: "aarch64-paging map_range with attributes lacking VALID: replaces the L1 entry of the 1 GiB and frees the subtree without clearing its leaves",
    },
    Case {
        group: GROUP_SINGLE,
        name: SINGLE_4K,
        pages: 1,
        noncoherent: false,
        what: "map + unmap + iotlb_sync of one 4 KiB page in a leaf table that holds 511 other pages (no table allocated or freed)",
    },
    Case {
        group: GROUP_SINGLE,
        name: SINGLE_4K_NONCOHERENT,
        pages: 1,
        noncoherent: true,
        what: "the same with a non-coherent walker (one line cleaned and one sfence per map and per unmap)",
    },
];

/// Why the table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An estimates file could not be read (the case was not run, or the directory is wrong).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An estimates file is not JSON.
    #[error("{path} is not JSON: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// An estimates file lacks `median.point_estimate` (or it is not a positive number).
    #[error("{path} has no positive median.point_estimate")]
    NoMedian {
        /// The file.
        path: PathBuf,
    },
}

/// Median of one case with its 95 % confidence interval, in nanoseconds per iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Median {
    /// Point estimate.
    pub ns: f64,
    /// Lower bound of the confidence interval.
    pub lower_ns: f64,
    /// Upper bound of the confidence interval.
    pub upper_ns: f64,
}

/// Path of the estimates criterion wrote for `case` under `criterion_dir` (usually
/// `$CARGO_TARGET_DIR/criterion`, or `target/criterion`).
pub fn estimates_path(criterion_dir: &Path, case: &Case) -> PathBuf {
    criterion_dir
        .join(case.group)
        .join(case.name)
        .join("new")
        .join("estimates.json")
}

/// Reads the median of one criterion `estimates.json`.
///
/// # Errors
/// [`ReportError::Read`], [`ReportError::Parse`], [`ReportError::NoMedian`].
pub fn read_median(path: &Path) -> Result<Median, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_median(&text, path)
}

fn parse_median(text: &str, path: &Path) -> Result<Median, ReportError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|source| ReportError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let m = &v["median"];
    let num = |x: &serde_json::Value| x.as_f64().filter(|f| f.is_finite() && *f > 0.0);
    let no = || ReportError::NoMedian {
        path: path.to_owned(),
    };
    let ns = num(&m["point_estimate"]).ok_or_else(no)?;
    let ci = &m["confidence_interval"];
    Ok(Median {
        ns,
        lower_ns: num(&ci["lower_bound"]).unwrap_or(ns),
        upper_ns: num(&ci["upper_bound"]).unwrap_or(ns),
    })
}

/// Nanoseconds per 4 KiB page of each case, in [`CASES`] order.
///
/// # Errors
/// The first case whose estimates cannot be read, as [`read_median`].
pub fn per_page(criterion_dir: &Path) -> Result<Vec<(Case, Median)>, ReportError> {
    CASES
        .iter()
        .map(|c| Ok((*c, case_per_page(criterion_dir, c)?)))
        .collect()
}

/// Nanoseconds per 4 KiB page of one case.
///
/// # Errors
/// As [`read_median`]; [`ReportError::Read`] with [`std::io::ErrorKind::NotFound`] when the case
/// was not run.
pub fn case_per_page(criterion_dir: &Path, case: &Case) -> Result<Median, ReportError> {
    let m = read_median(&estimates_path(criterion_dir, case))?;
    let p = case.pages as f64;
    Ok(Median {
        ns: m.ns / p,
        lower_ns: m.lower_ns / p,
        upper_ns: m.upper_ns / p,
    })
}

/// The comparisons the issue asks for: `(statement, left case, right case, factor)`, met when
/// `left <= factor * right` per page.
pub const TARGETS: &[(&str, &str, &str, f64)] = &[
    (
        "4 KiB map <= 3x plain-store limit",
        MAP_4K,
        LIMIT_STORE,
        3.0,
    ),
    (
        "leaf-by-leaf unmap <= 3x plain-store limit",
        UNMAP_4K,
        LIMIT_STORE,
        3.0,
    ),
    (
        "non-coherent map <= 3x store+flush limit",
        MAP_4K_NONCOHERENT,
        LIMIT_STORE_FLUSH,
        3.0,
    ),
    (
        "non-coherent map <= 1.3x store+flush limit (lines in cache)",
        MAP_4K_NONCOHERENT,
        LIMIT_STORE_FLUSH,
        1.3,
    ),
    (
        "non-coherent map <= 1.3x store+flush limit (lines evicted)",
        MAP_4K_NONCOHERENT,
        LIMIT_STORE_FLUSH_EVICTED,
        1.3,
    ),
    (
        "4 KiB map, tables fresh from the heap, <= 1.8x plain-store limit",
        MAP_4K_COLD,
        LIMIT_STORE,
        1.8,
    ),
    (
        "map faster than aarch64-paging map_range",
        MAP_4K,
        PEER_MAP_4K,
        1.0,
    ),
    (
        "unmap faster than aarch64-paging modify_range (leaf by leaf)",
        UNMAP_4K,
        PEER_UNMAP_MODIFY,
        1.0,
    ),
    (
        "unmap faster than aarch64-paging modify_range + compact_subtables",
        UNMAP_4K,
        PEER_UNMAP_MODIFY_COMPACT,
        1.0,
    ),
];

/// The markdown of the results: one row per case (median ns per 4 KiB page with its 95 %
/// interval, ratio to the plain-store limit, and for cache-maintaining cases the ratio to the
/// store+flush limit), then one row per target with met / not met.
///
/// # Errors
/// As [`per_page`].
pub fn markdown_table(criterion_dir: &Path) -> Result<String, ReportError> {
    Ok(render(&per_page(criterion_dir)?))
}

fn render(rows: &[(Case, Median)]) -> String {
    let get = |name: &str| rows.iter().find(|(c, _)| c.name == name).map(|r| r.1.ns);
    let store = get(LIMIT_STORE);
    let flush = get(LIMIT_STORE_FLUSH);
    let ratio = |v: f64, base: Option<f64>| match base {
        Some(b) => format!("{:.2}", v / b),
        None => "-".into(),
    };
    let mut s = String::new();
    s.push_str("| case | ns / 4 KiB page (median) | 95 % interval | x plain-store limit | x store+flush limit |\n");
    s.push_str("|---|---:|---:|---:|---:|\n");
    for (c, m) in rows {
        let _ = writeln!(
            s,
            "| `{}/{}` | {} | {} - {} | {} | {} |",
            c.group,
            c.name,
            fmt_ns(m.ns),
            fmt_ns(m.lower_ns),
            fmt_ns(m.upper_ns),
            ratio(m.ns, store),
            if c.noncoherent {
                ratio(m.ns, flush)
            } else {
                "-".into()
            },
        );
    }
    s.push_str("\n| target | measured | result |\n|---|---|---|\n");
    for &(what, left, right, factor) in TARGETS {
        let (Some(l), Some(r)) = (get(left), get(right)) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {what} | `{left}` {} / `{right}` {} = {:.2}x | {} |",
            fmt_ns(l),
            fmt_ns(r),
            l / r,
            if l <= factor * r {
                "met"
            } else {
                "**not met**"
            }
        );
    }
    s
}

/// Three significant digits, at least one decimal.
fn fmt_ns(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else if ns >= 10.0 {
        format!("{ns:.1}")
    } else if ns >= 1.0 {
        format!("{ns:.2}")
    } else {
        format!("{ns:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(median: f64) -> String {
        format!(
            r#"{{"mean":{{"point_estimate":1.0}},"median":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{},"upper_bound":{}}},"point_estimate":{median},"standard_error":1.0}}}}"#,
            median * 0.9,
            median * 1.1
        )
    }

    #[test]
    fn parses_the_median_and_refuses_broken_files() {
        let p = Path::new("x/estimates.json");
        let m = parse_median(&est(262144.0), p).unwrap();
        assert_eq!(m.ns, 262144.0);
        assert!((m.lower_ns - 235929.6).abs() < 1e-6);
        assert!(matches!(
            parse_median("{", p),
            Err(ReportError::Parse { .. })
        ));
        assert!(matches!(
            parse_median(r#"{"median":{"point_estimate":-1}}"#, p),
            Err(ReportError::NoMedian { .. })
        ));
        assert!(matches!(
            read_median(Path::new("/nonexistent/estimates.json")),
            Err(ReportError::Read { .. })
        ));
    }

    #[test]
    fn builds_the_table_from_a_criterion_directory() {
        let dir = std::env::temp_dir().join(format!("devmmu-bench-report-{}", std::process::id()));
        // Per-page medians: store 0.2 ns, store+flush 0.4 ns, everything else 0.5 ns, except
        // the non-coherent map at 1.6 ns (4x the flush limit: not met).
        for c in CASES {
            let per_page = match c.name {
                LIMIT_STORE => 0.2,
                LIMIT_STORE_FLUSH => 0.4,
                MAP_4K_NONCOHERENT => 1.6,
                _ => 0.5,
            };
            let path = estimates_path(&dir, c);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, est(per_page * c.pages as f64)).unwrap();
        }
        let md = markdown_table(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(md.contains("| `pagetable_1GiB/map_4k` | 0.500 | 0.450 - 0.550 | 2.50 | - |"));
        assert!(md.contains(
            "| `pagetable_1GiB/map_4k_noncoherent` | 1.60 | 1.44 - 1.76 | 8.00 | 4.00 |"
        ));
        assert!(md.contains("| `pagetable_single/map_unmap_4k` | 0.500 |"));
        assert!(md.contains("| 4 KiB map <= 3x plain-store limit | `map_4k` 0.500 / `limit_store` 0.200 = 2.50x | met |"));
        assert!(md.contains("= 4.00x | **not met** |"));
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| `")).count(),
            CASES.len()
        );

        let missing = dir.join("nothing-here");
        assert!(matches!(
            markdown_table(&missing),
            Err(ReportError::Read { .. })
        ));
    }
}
