#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): installs what is missing, builds, and
# runs every test through CTest:
#   1. unit + e2e tests (labels "unit", "e2e") on the normal build;
#   2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer, the daemon's
#      device-plugin e2e tests with that build, and the libFuzzer targets for a short while;
#   3. a clang build with ThreadSanitizer and -Wthread-safety -Werror: the unit tests and the
#      daemon's device-plugin, projection and hot-plug e2e tests and the controller's under it.
# Step 1 includes the real-kernel VM tests (e2e/vm: qemu, Debian's kernel fetched by apt-get
# download into build/vm-cache, never installed; TCG where KVM is not usable).
# Nothing here writes to this machine's /sys, /dev or /var/lib/kubelet: the e2e tests read /sys
# and work in temporary trees.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's start, with the time so far: CI's budget is 40 minutes.
stage() { echo "=== test.sh: $1 (at ${SECONDS} s)"; }
stage "dependencies"
scripts/setup-deps.sh
jobs=$(nproc)

stage "build + unit and e2e tests"

# Line tables only (-g1): backtraces keep file and line; full debug info of gRPC's generated
# code costs a third of the compile time. The same flags in run.sh and test.sh: no rebuild between.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
cmake --build build
ctest --test-dir build --output-on-failure -j "$jobs"

stage "AddressSanitizer + UBSan, and the fuzzers"
# One clang build at -O0 with line tables only (reports still name file and line): ASan+UBSan on
# every file, plus libFuzzer's coverage, so the fuzzers are guided by the parsers' branches. clang
# builds it in half g++'s time, and the fuzzers need no build of their own.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++ \
  -DPCID_SANITIZE=ON -DPCID_FUZZ=ON -DPCID_FUZZ_SECONDS="${PCID_FUZZ_SECONDS:-30}" \
  -DCMAKE_CXX_FLAGS_DEBUG="-O0 -gline-tables-only"
cmake --build build-asan --target unit_tests pcidevices kubelet_emulator \
  fuzz_id_database fuzz_attributes fuzz_config fuzz_state fuzz_projection
ctest --test-dir build-asan --output-on-failure -L unit -j "$jobs"
# The daemon's gRPC lifetimes under ASan+UBSan too (leak checking off: gRPC keeps globals).
ASAN_OPTIONS=detect_leaks=0 ctest --test-dir build-asan --output-on-failure -j "$jobs" \
  -R 'e2e_device_plugin|e2e_daemon_bad_input|e2e_vfio_cli|e2e_projection|e2e_tls_trust|e2e_metrics'
# One fuzzer per core: each runs for a fixed time, single-threaded.
ctest --test-dir build-asan --output-on-failure -L fuzz -j "$jobs"

stage "ThreadSanitizer"
# ThreadSanitizer, with clang's lock analysis (-Wthread-safety -Werror) on every file of the
# build: the unit tests and the daemon's threaded e2e tests. Suppressions (scripts/tsan.supp)
# cover gRPC's and abseil's uninstrumented internals only.
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DPCID_TSAN=ON -DPCID_THREAD_SAFETY=ON -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG"
cmake --build build-tsan --target unit_tests pcidevices kubelet_emulator uevent_injector \
  dra_kubelet_emulator
TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/scripts/tsan.supp" \
  ctest --test-dir build-tsan --output-on-failure -j "$jobs" -L unit
TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp" ctest --test-dir build-tsan --output-on-failure \
  -R 'e2e_device_plugin|e2e_projection|e2e_hotplug|e2e_metrics|e2e_controller|e2e_dra'

echo "all tests passed (${SECONDS} s)"
