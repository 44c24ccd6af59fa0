//! Draws the charts of docs/performance.md (`perf-pagetable.svg`, `perf-manager.svg`) from the
//! results of `cargo bench -p devmmu-benches --bench pagetable` and `--bench manager`.
//!
//! Usage: `bench-plot [--out DIR] [CRITERION_DIR]`. The criterion directory is found as
//! `bench-table` finds it: the argument, else `$CARGO_TARGET_DIR/criterion` if that variable is
//! set, else `target/criterion`. The charts go to `DIR`, by default the workspace's `docs/`.
//! A case that was not run is left out of its chart and named in a note; a chart whose bench
//! was not run at all is not written.
//!
//! Exit status: 0 when the charts were written, 2 for bad usage or a criterion directory that is
//! missing or holds no readable result (one line on stderr), 1 when a chart cannot be written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use devmmu_benches::plot::{self, Outcome, PlotError};

const USAGE: &str = "usage: bench-plot [--out DIR] [CRITERION_DIR]";

fn main() -> ExitCode {
    // The workspace's docs/, wherever the command is run from.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    let mut out = workspace.unwrap_or(Path::new(".")).join("docs");
    let mut dir = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("--out") => match args.next() {
                Some(d) => out = PathBuf::from(d),
                None => return usage("--out needs a directory"),
            },
            Some(s) if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return usage("more than one criterion directory"),
        }
    }
    let dir = dir.unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("criterion")
    });
    match plot::write_charts(&dir, &out) {
        Ok(outcomes) => {
            for o in outcomes {
                match o {
                    Outcome::Written { path, bars, gaps } => {
                        println!("wrote {} ({bars} bars)", path.display());
                        for g in gaps {
                            println!("  note: {g}");
                        }
                    }
                    Outcome::Skipped { path, why } => {
                        println!("skipped {}: {why}", path.display());
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e @ (PlotError::Write { .. } | PlotError::Draw(_))) => {
            eprintln!("bench-plot: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench-plot: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("bench-plot: {why} ({USAGE})");
    ExitCode::from(2)
}
