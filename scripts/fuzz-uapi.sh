#!/usr/bin/env bash
# Fuzzes devmmu-uapi's dispatcher with AFL++ (cargo-afl): structured request sequences on two
# files (devmmu_uapi::sequence), for SECONDS seconds (default 60), at the lowest CPU priority.
#
#   scripts/fuzz-uapi.sh [SECONDS]
#
# Needs cargo-afl: `cargo install cargo-afl --locked --version 0.18.2` then
# `cargo afl config --build` (builds AFL++ once, a few minutes). Installs both if missing.
# Findings go to uapi/fuzz/out/default/crashes; the script exits 1 if there is one, after
# printing how to replay it. Replay an input with
#   cargo run --manifest-path uapi/fuzz/Cargo.toml --release --bin sequences < FILE
# (or add it to uapi/fuzz/regressions/, which `cargo test -p devmmu-uapi` runs).
set -euo pipefail
cd "$(dirname "$0")/../uapi/fuzz"
secs="${1:-60}"

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
if ! cargo afl --version >/dev/null 2>&1; then
    nice -n 19 cargo install cargo-afl --locked --version 0.18.2
fi
# Builds AFL++ for this rustc once; a second call fails saying it was already built.
if ! out=$(nice -n 19 cargo afl config --build 2>&1); then
    case "$out" in
        *"already built"*) ;;
        *) echo "$out"; echo "fuzz-uapi: building AFL++ failed"; exit 2 ;;
    esac
fi

nice -n 19 cargo afl build --release --bin sequences
mkdir -p out
# No CPU binding (the machine is shared), no UI, no core-dump check: CI and developers' shells.
export AFL_NO_AFFINITY=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_SKIP_CPUFREQ=1 AFL_MAP_SIZE="${AFL_MAP_SIZE:-262144}"
resume=seeds
if [ -d out/default/queue ]; then
    resume=-   # continue the previous session's corpus
fi
nice -n 19 cargo afl fuzz -i "$resume" -o out -V "$secs" -t 5000 target/release/sequences

crashes=$(find out/default/crashes -type f -name 'id:*' 2>/dev/null | wc -l)
stats=out/default/fuzzer_stats
if [ -f "$stats" ]; then
    grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs) ' "$stats"
fi
if [ "$crashes" -gt 0 ]; then
    echo "fuzz-uapi: $crashes crashing input(s) in uapi/fuzz/out/default/crashes; replay one with"
    echo "  cargo run --manifest-path uapi/fuzz/Cargo.toml --release --bin sequences < FILE"
    exit 1
fi
echo "fuzz-uapi: no crash in ${secs} s"
