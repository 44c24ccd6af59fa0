//! Prints the markdown table of docs/performance.md from the results of
//! `cargo bench -p devmmu-benches --bench pagetable`.
//!
//! Usage: `bench-table [CRITERION_DIR]`. Without an argument the directory is
//! `$CARGO_TARGET_DIR/criterion` if that variable is set, else `target/criterion`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("criterion"),
    };
    match devmmu_benches::report::markdown_table(&dir) {
        Ok(md) => {
            print!("{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-table: {e}");
            eprintln!("(run `cargo bench -p devmmu-benches --bench pagetable` first)");
            ExitCode::FAILURE
        }
    }
}
