#!/usr/bin/env bash
# Configures and builds zerobusd.
#   scripts/build.sh                      ./build: gcc, Release with debug info
#   scripts/build.sh --sanitize [TARGET...]
#       ./build-asan: clang-14 with ASan + UBSan (ZEROBUSD_SANITIZE) and the
#       libFuzzer targets of fuzz/ (ZEROBUSD_BUILD_FUZZ); every target, or
#       only the TARGETs named.
# BUILD_DIR overrides the folder; JOBS the parallel jobs (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"
if [ "${1:-}" = "--sanitize" ]; then
  shift
  BUILD_DIR="${BUILD_DIR:-build-asan}"
  # -O1 and line tables only: readable sanitizer stacks at a fraction of the
  # compile time of -O2 -g. NDEBUG as in the release build, so the same code
  # paths run. Benchmarks are left out (nothing to check there).
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only -DNDEBUG" \
    -DZEROBUSD_SANITIZE=ON -DZEROBUSD_BUILD_FUZZ=ON -DZEROBUSD_BUILD_BENCH=OFF >/dev/null
  targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$BUILD_DIR" -j"$JOBS" "${targets[@]}"
  exit 0
fi
BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS"
