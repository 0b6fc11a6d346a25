#!/usr/bin/env bash
# What converting one record at intake costs, per route kind, as a ratio of
# the JSON route (validation only) measured in the same run:
#   bench/codecs.sh [MIN_TIME_S]   (default 2 s per case, median of 3)
# Cases: a .proto route (protobuf's JSON mapping), the same with
# schema.column_types (TIMESTAMP, DATE, DECIMAL, VARIANT fields converted by
# their column types), and a from_table route (every column converted by its
# Unity Catalog type). Intake converts on the event loop's thread, so the
# records/s here bound one loop's intake of such records.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN_TIME="${1:-2}"
bash scripts/build.sh zerobus-bench-codecs >/dev/null
BIN="$(pwd)/${BUILD_DIR:-build}/bin/zerobus-bench-codecs"
[ -x "$BIN" ] || BIN="$(find "${BUILD_DIR:-build}" -name zerobus-bench-codecs -type f | head -1)"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
"$BIN" --benchmark_min_time="$MIN_TIME" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_format=json >"$OUT" 2>/dev/null
python3 - "$OUT" <<'PY'
import json, sys
runs = {b["run_name"]: b for b in json.load(open(sys.argv[1]))["benchmarks"] if b.get("aggregate_name") == "median"}
base = runs["BM_JsonRoute"]["real_time"]
print("%-34s %10s %12s %13s %10s" % ("route kind", "ns/record", "records/s", "x JSON route", "spooled B"))
for name, label in [("BM_JsonRoute", "json (validate only)"), ("BM_ProtoRoute", "proto (.proto, protobuf JSON)"),
                    ("BM_ProtoRouteWithColumnTypes", "proto + column_types (4 fields)"),
                    ("BM_FromTableRoute", "proto, from_table (every column)")]:
    r = runs[name]
    print("%-34s %10.0f %12s %13.2f %10.0f" % (label, r["real_time"], "{:,.0f}".format(1e9 / r["real_time"]),
                                                r["real_time"] / base, r["spooled_bytes"]))
PY
