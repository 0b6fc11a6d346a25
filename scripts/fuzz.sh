#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (ASan + UBSan, clang-14).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# SECONDS per target (default 60); TARGETs among line_decoder frame_decoder
# json_codec proto_codec config uc_table uc_record (default: all). Builds what is needed into
# $BUILD_DIR (default build-asan, shared with the sanitizer test build), runs
# each target on a fresh copy of its seed corpus (fuzz/corpus/TARGET, never
# written to), prints executions and crashes per target and exits non-zero
# if any target crashed (a crash, leak, timeout or out-of-memory input is
# kept in $BUILD_DIR/fuzz-work/TARGET/ with the command that replays it).
# FUZZ_NO_BUILD=1 skips the build step (scripts/test.sh has just built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SECONDS_PER_TARGET="${1:-60}"
[ $# -gt 0 ] && shift
ALL=(line_decoder frame_decoder json_codec proto_codec config uc_table uc_record)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
BUILD_DIR="${BUILD_DIR:-build-asan}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac

for t in "${TARGETS[@]}"; do
  if [ ! -d "fuzz/corpus/$t" ]; then
    echo "fuzz: unknown target \"$t\" (one of: ${ALL[*]})" >&2
    exit 2
  fi
done
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  BUILD_DIR="$BUILD_DIR" bash scripts/build.sh --sanitize "${TARGETS[@]/#/fuzz_}"
fi

# Same sanitizer settings as the sanitizer test run (scripts/test.sh).
symbolizer=/usr/lib/llvm-14/bin/llvm-symbolizer
export ASAN_OPTIONS="detect_leaks=1:suppressions=$ROOT/fuzz/asan.supp:external_symbolizer_path=$symbolizer"
export LSAN_OPTIONS="suppressions=$ROOT/fuzz/lsan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:external_symbolizer_path=$symbolizer"

failed=()
total_execs=0
printf 'fuzz: %s s per target: %s\n' "$SECONDS_PER_TARGET" "${TARGETS[*]}"
for t in "${TARGETS[@]}"; do
  bin="$BUILD_DIR/fuzz/fuzz_$t"
  work="$BUILD_DIR/fuzz-work/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp fuzz/corpus/"$t"/* "$work/corpus/"
  seeds=$(find "$work/corpus" -type f | wc -l)
  rc=0
  # -timeout: one input running 25 s is a hang; -rss_limit_mb: a leak or
  # an unbounded buffer shows up as out-of-memory long before the host
  # suffers. Single process: the CI machine has two cores.
  # timeout: libFuzzer prints a heap profile before it saves an
  # out-of-memory input, and with ASan that can take many minutes.
  timeout -s KILL $((SECONDS_PER_TARGET + 120)) \
  "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  execs="${execs:-0}"
  total_execs=$((total_execs + execs))
  corpus=$(find "$work/corpus" -type f | wc -l)
  found=$(find "$work/artifacts" -type f | wc -l)
  if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then found=1; fi
  printf 'fuzz %-14s %10s executions, corpus %3d -> %4d, crashes %d\n' "$t" "$execs" "$seeds" "$corpus" "$found"
  if [ "$found" -ne 0 ]; then
    failed+=("$t")
    grep -E -m1 -A30 'ERROR: |runtime error|check failed|==[0-9]+==' "$work/log" | head -40 >&2 || tail -40 "$work/log" >&2
    for a in "$work"/artifacts/*; do
      [ -e "$a" ] && echo "  replay: $bin $a" >&2
    done
    echo "  log: $work/log" >&2
  fi
done
printf 'fuzz: %d executions in all, %d target(s) crashed%s\n' "$total_execs" "${#failed[@]}" \
  "$([ ${#failed[@]} -gt 0 ] && echo ": ${failed[*]}")"
[ ${#failed[@]} -eq 0 ]
