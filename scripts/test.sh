#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest closes the run):
#   1. sanitizers: the whole suite built with clang-14, ASan + UBSan
#      (ZEROBUSD_SANITIZE, in ./build-asan or $ZEROBUSD_SAN_BUILD_DIR), the
#      daemon the integration tests spawn included; LeakSanitizer checks
#      every process's normal exit;
#   2. fuzz smoke: every libFuzzer target of fuzz/ for FUZZ_SECONDS (20) on a
#      copy of its seed corpus (scripts/fuzz.sh), from the same build;
#   3. the release build (gcc, ./build or $BUILD_DIR) and the whole suite
#      again, last.
# A failing phase stops the run (its own summary closes the output).
# Knobs: ZEROBUSD_E2E_RECORDS (default 200000; the sanitizer phase runs
# ZEROBUSD_SAN_E2E_RECORDS, default 50000), ZEROBUSD_SANITIZE_TESTS=0 skips
# phases 1 and 2, FUZZ_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
START=$SECONDS
timings=()
phase_start=$SECONDS
end_phase() {
  timings+=("$1 $((SECONDS - phase_start))s")
  echo "test.sh: $1 took $((SECONDS - phase_start)) s"
  phase_start=$SECONDS
}

bash scripts/setup-deps.sh
bash scripts/setup-sdk.sh
end_phase setup

SAN_BUILD_DIR="${ZEROBUSD_SAN_BUILD_DIR:-build-asan}"
if [ "${ZEROBUSD_SANITIZE_TESTS:-1}" != 0 ]; then
  BUILD_DIR="$SAN_BUILD_DIR" bash scripts/build.sh --sanitize
  end_phase sanitizer-build
  (
    cd "$SAN_BUILD_DIR"
    # Every sanitizer report of every process (the daemons and servers the
    # integration tests spawn write theirs to logs in temporary folders)
    # lands in reports/; any report fails the run, even from a process whose
    # exit status no test looks at.
    reports="$PWD/sanitizer-reports"
    rm -rf "$reports"
    mkdir -p "$reports"
    symbolizer=/usr/lib/llvm-14/bin/llvm-symbolizer
    # detect_leaks: LeakSanitizer at every exit. The suppression files say
    # why each entry is there. UBSan findings are fatal (also
    # -fno-sanitize-recover at build time).
    export ASAN_OPTIONS="detect_leaks=1:suppressions=$ROOT/fuzz/asan.supp:log_path=$reports/asan:external_symbolizer_path=$symbolizer"
    export LSAN_OPTIONS="suppressions=$ROOT/fuzz/lsan.supp"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan:external_symbolizer_path=$symbolizer"
    # The sanitized end-to-end test moves fewer records: its point here is
    # every code path under ASan, not throughput (the release run has that).
    export ZEROBUSD_E2E_RECORDS="${ZEROBUSD_SAN_E2E_RECORDS:-50000}"
    rc=0
    ctest --output-on-failure --timeout 900 -j"$(nproc)" || rc=$?
    found=$(find "$reports" -type f | wc -l)
    if [ "$found" -gt 0 ]; then
      for f in "$reports"/*; do
        echo "==== sanitizer report $f"
        head -c 20000 "$f"
      done
      echo "test.sh: $found sanitizer report(s), above" >&2
      exit 1
    fi
    exit "$rc"
  )
  end_phase sanitizer-tests
  BUILD_DIR="$SAN_BUILD_DIR" FUZZ_NO_BUILD=1 bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
  end_phase fuzz-smoke
fi

bash scripts/build.sh
end_phase build
echo "test.sh: ${timings[*]}; the release suite follows ($((SECONDS - START)) s so far)"
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j"$(nproc)"
