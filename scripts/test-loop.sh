#!/usr/bin/env bash
# Runs every test binary of the workspace N times (default 100) with the test threads at their
# default and again with --test-threads=1, and prints one line per binary and setting with the
# pass count. Used to find races between tests (docs/testing.md). Exits 1 if any run failed; the
# output of each failed run is kept under target/test-loop/.
#
#   scripts/test-loop.sh [N] [FILTER]     FILTER: only binaries whose file name contains it
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
filter=${2:-}
out=target/test-loop
mkdir -p "$out"

mapfile -t bins < <(cargo test --workspace --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["manifest_path"].rsplit("/", 1)[0] + "\t" + m["executable"])
')
if [ ${#bins[@]} -eq 0 ]; then
    echo "no test binaries built" >&2
    exit 2
fi

status=0
for entry in "${bins[@]}"; do
    # Each binary runs from its package's folder, as cargo test runs it.
    pkg_dir=${entry%%$'\t'*}
    bin=${entry#*$'\t'}
    name=$(basename "$bin")
    case "$name" in *"$filter"*) ;; *) continue ;; esac
    for threads in default 1; do
        args=()
        [ "$threads" = 1 ] && args=(--test-threads=1)
        pass=0
        start=$(date +%s)
        for ((i = 1; i <= runs; i++)); do
            log="$PWD/$out/$name-t$threads-run$i.log"
            if (cd "$pkg_dir" && "$bin" "${args[@]}") >"$log" 2>&1; then
                pass=$((pass + 1))
                rm -f "$log"
            else
                status=1
            fi
        done
        printf '%-40s threads=%-7s %3d/%d passed  (%ds)\n' "$name" "$threads" "$pass" "$runs" \
            $(($(date +%s) - start))
    done
done
exit $status
