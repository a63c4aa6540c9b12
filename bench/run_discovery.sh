#!/usr/bin/env bash
# Builds the 8 PF x 256 VF tree (2,065 functions) on tmpfs and runs bench_discovery on it.
# usage: bench/run_discovery.sh [BUILD_DIR] [ITERATIONS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
iterations=${2:-50}
base=/dev/shm
[[ -w $base ]] || base=${TMPDIR:-/tmp}
tree=$(mktemp -d "$base/pcid-bench-XXXXXX")
trap 'rm -rf "$tree"' EXIT
python3 "$here/e2e/fixtures/make_tree.py" sriov "$tree/sys"
"$build/bench/bench_discovery" "$tree/sys" "$iterations"
