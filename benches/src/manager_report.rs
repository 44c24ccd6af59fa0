//! The bind/unbind cases of `benches/manager.rs`, read back from criterion's results.
//!
//! The manager bench builds its case names from its configurations
//! (`vm/{bind,unbind}/<ops>/<format>/<coherency>`, `dma/{map_sg,unmap_sg}/<ops>/<coherency>`),
//! so there is no list to follow: the cases are whatever criterion recorded under the groups
//! [`GROUPS`]. Criterion writes each case to `<criterion dir>/<group>/<id with / as _>/new/`:
//! `benchmark.json` gives the case's own name and its pages per iteration (the bench's
//! `Throughput::Elements`), `estimates.json` the median, read with [`report::read_median`].

use std::path::{Path, PathBuf};

use crate::report::{self, Median, ReportError};

/// Criterion groups of the manager bench, in the order the results are listed.
pub const GROUPS: &[&str] = &["vm", "dma"];

/// One manager case's median per 4 KiB page.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerCase {
    /// Criterion group (`vm` or `dma`).
    pub group: String,
    /// The case inside the group, as the bench names it (`bind/iommu/ipu/coherent`).
    pub name: String,
    /// Pages one iteration covers.
    pub pages: u64,
    /// Whether neither the device's data accesses nor its table walker snoop the CPU caches
    /// (the name's coherency part is `noncoh`).
    pub noncoherent: bool,
    /// Median time of one iteration divided by [`Self::pages`], in nanoseconds.
    pub per_page: Median,
}

/// Why the manager results could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManagerReportError {
    /// A group directory could not be listed.
    #[error("cannot list {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `benchmark.json` is not JSON or lacks the case name or `throughput.Elements`.
    #[error("{path} has no function_id or no positive throughput.Elements")]
    BadBenchmark {
        /// The file.
        path: PathBuf,
    },
    /// An estimates file could not be read or parsed.
    #[error(transparent)]
    Estimates(#[from] ReportError),
}

/// Every manager case criterion recorded under `criterion_dir`: group by group in [`GROUPS`]
/// order, by name inside a group. A group that was not run gives no case; a case directory
/// without `new/benchmark.json` (not a case, or an interrupted run) is passed over.
///
/// # Errors
/// A group directory that exists but cannot be listed, a `benchmark.json` without the case's
/// name or pages, an `estimates.json` that cannot be read ([`ManagerReportError`]).
pub fn per_page(criterion_dir: &Path) -> Result<Vec<ManagerCase>, ManagerReportError> {
    let mut out = Vec::new();
    for &group in GROUPS {
        let dir = criterion_dir.join(group);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ManagerReportError::List { path: dir, source }),
        };
        let mut cases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ManagerReportError::List {
                path: dir.clone(),
                source,
            })?;
            let new = entry.path().join("new");
            let bench_json = new.join("benchmark.json");
            let Ok(text) = std::fs::read_to_string(&bench_json) else {
                continue;
            };
            let (name, pages) =
                parse_benchmark(&text).ok_or_else(|| ManagerReportError::BadBenchmark {
                    path: bench_json.clone(),
                })?;
            let m = report::read_median(&new.join("estimates.json"))?;
            let p = pages as f64;
            cases.push(ManagerCase {
                group: group.to_owned(),
                noncoherent: name.rsplit('/').next() == Some("noncoh"),
                name,
                pages,
                per_page: Median {
                    ns: m.ns / p,
                    lower_ns: m.lower_ns / p,
                    upper_ns: m.upper_ns / p,
                },
            });
        }
        cases.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(cases);
    }
    Ok(out)
}

/// `(function_id, throughput.Elements)` of a criterion `benchmark.json`.
fn parse_benchmark(text: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let name = v["function_id"].as_str()?.to_owned();
    let pages = v["throughput"]["Elements"].as_u64().filter(|&p| p > 0)?;
    Some((name, pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_case_name_and_pages_of_a_benchmark_file() {
        let json = r#"{"group_id":"vm","function_id":"bind/iommu/ipu/noncoh","value_str":null,
            "throughput":{"Elements":16384},"full_id":"vm/bind/iommu/ipu/noncoh",
            "directory_name":"vm/bind_iommu_ipu_noncoh","title":"vm/bind/iommu/ipu/noncoh"}"#;
        assert_eq!(
            parse_benchmark(json),
            Some(("bind/iommu/ipu/noncoh".into(), 16384))
        );
        assert_eq!(parse_benchmark(r#"{"function_id":"x"}"#), None);
        assert_eq!(parse_benchmark("{"), None);
    }
}
