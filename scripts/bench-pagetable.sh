#!/bin/sh
# Runs the page-table benchmarks (about 2 minutes on 2 cores), prints the results table of
# docs/performance.md, with the machine and the date to paste above it, and redraws its charts
# (docs/perf-pagetable.svg; docs/perf-manager.svg too when `--bench manager` has results).
# Extra arguments go to criterion, e.g. `scripts/bench-pagetable.sh map_4k` to run a subset.
# Respects CARGO_TARGET_DIR (criterion writes to $CARGO_TARGET_DIR/criterion).
set -eu
cd "$(dirname "$0")/.."
cargo bench -p devmmu-benches --bench pagetable -- "$@"
echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; date: $(date -u +%Y-%m-%d)"
echo
cargo run -q --release -p devmmu-benches --bin bench-table
cargo run -q --release -p devmmu-benches --bin bench-plot
