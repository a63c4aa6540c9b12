#!/usr/bin/env bash
# The README's first command: installs what is missing (Debian packages only), builds, and runs
# the main job on this machine: `pcidevices list` against the real /sys, read-only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build --target pcidevices
build/pcidevices list "$@"
