#!/usr/bin/env bash
# The README's first command: installs what is missing (Debian packages only), builds, and runs
# the main job on this machine: `pcidevices list` against the real /sys, read-only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
# Line tables only (-g1): backtraces keep file and line; full debug info of gRPC's generated
# code costs a third of the compile time. The same flags in run.sh and test.sh: no rebuild between.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
cmake --build build --target pcidevices
build/pcidevices list "$@"
