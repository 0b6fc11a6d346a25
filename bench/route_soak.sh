#!/usr/bin/env bash
# Memory under repeated load (issue 8): one zerobusd with many routes, loaded
# and drained to zero again and again, must level off.
#
# Starts a zerobus-devserver (plaintext gRPC and its token endpoint on
# 127.0.0.1, free ports) and one zerobusd with ROUTES routes, each to a table
# of its own. Then, ROUNDS times: PRODUCERS `zerobusctl send` processes (line
# mode over the Unix socket, "@route" before each route's records) hand it
# RECORDS records of about 200 bytes per route, each exiting 0 only once all
# of its records are durable; the script waits (polling /metrics, with a
# deadline) until every route's spool is empty and nothing is in flight, and
# until the spool's memtable is flushed (below), checks that every row
# landed, and samples the daemon from /proc/PID/{status,stat,maps}: one line
# per round (CPU seconds and page faults the round cost, RSS, peak RSS,
# anonymous RSS, RocksDB's unflushed WAL, threads, malloc arenas).
#
# Summary: the RSS after warm-up round WARMUP against the last round, and the
# growth over rounds WARMUP..ROUNDS as a least-squares slope, in MiB and in %
# of the warm-up RSS per round. CHECK=1 fails the run when that slope exceeds
# MAX_GROWTH_PCT, or when a drained spool kept a memtable of 8 MiB or more
# (its memory would then depend on the history of the load).
#
# The bound, 2 %/round: with the fix (daemon/main.cc, lib/spool/
# rocksdb_spool.cc) the slope after warm-up stayed within +0.2..+0.6 %/round
# at this script's defaults, 0.00 over rounds 10..30 and -0.09 over rounds
# 20..40 (beside other load), and within -0.3..+0.6 %/round over 36 runs of
# the scaled-down CI configuration (tests/CMakeLists.txt; 10 of them beside
# a full-size soak, load average 7): what remains are single steps of 1-5
# MiB while malloc's arenas settle. The creep reported in issue 8 was 2
# %/round over rounds 2..10, and a leak of 64 bytes a record, added on
# purpose, is 3.8 %/round at the CI scale.
#
# Knobs (environment):
#   ROUTES=200 ROUNDS=10 RECORDS=5000   the load (records per route per round)
#   WARMUP=ROUNDS/2                     rounds before memory must be flat
#   CHECK=0                             1: exit 1 when memory keeps growing
#   MAX_GROWTH_PCT=2                    the bound CHECK=1 holds the slope to
#   PRODUCERS=4                         parallel producer connections
#   SPOOL_MIN_FREE=""                   spool.min_free_bytes (default: the
#                                       daemon's, 256MiB); RocksDB's write buffer
#                                       is a quarter of it, 4..64 MiB
#   DRAIN_TIMEOUT_S=600                 deadline for a round to drain
#   MEMTABLE_WAIT_S=10                  deadline for a drained spool's memtable
#                                       flush
#   BUILD_DIR=build                     the build whose bin/ holds zerobusd,
#                                       zerobusctl and zerobus-devserver (or
#                                       that bin/ itself); relative to the
#                                       repository root. Nothing is built here.
#   ZEROBUSD_ENV=""                     extra environment for the daemon only,
#                                       e.g. "MALLOC_ARENA_MAX=2" to compare
#   MALLOC_STATS=0                      1: also ask glibc what its arenas hold
#                                       from the system and what is in use
#                                       (gdb calls malloc_stats() in the
#                                       daemon): the difference is free memory
#                                       malloc keeps
#   KEEP=0                              1: keep the temporary folder (logs)
# Every process it starts and its temporary folder go at exit, whatever the
# outcome. It listens on 127.0.0.1 and Unix sockets only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUTES="${ROUTES:-200}"
ROUNDS="${ROUNDS:-10}"
RECORDS="${RECORDS:-5000}"
WARMUP="${WARMUP:-$((ROUNDS / 2))}"
CHECK="${CHECK:-0}"
MAX_GROWTH_PCT="${MAX_GROWTH_PCT:-2}"
PRODUCERS="${PRODUCERS:-4}"
DRAIN_TIMEOUT_S="${DRAIN_TIMEOUT_S:-600}"
ZEROBUSD_ENV="${ZEROBUSD_ENV:-}"
BUILD_DIR="${BUILD_DIR:-build}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
BIN="$BUILD_DIR/bin"
[ -x "$BIN/zerobusd" ] || BIN="$BUILD_DIR"  # BUILD_DIR may name the bin folder itself

die() { echo "route_soak: $*" >&2; exit 2; }
for exe in zerobusd zerobusctl zerobus-devserver; do
  [ -x "$BIN/$exe" ] || die "no $exe in $BIN (build it, or set BUILD_DIR)"
done
if [ "$ROUTES" -lt 1 ] || [ "$RECORDS" -lt 1 ]; then die "ROUTES and RECORDS must be >= 1"; fi
if [ "$WARMUP" -lt 1 ] || [ $((ROUNDS - WARMUP)) -lt 2 ]; then
  die "need WARMUP >= 1 and at least 2 rounds after it (ROUNDS=$ROUNDS WARMUP=$WARMUP)"
fi
[ "$PRODUCERS" -ge 1 ] || die "PRODUCERS must be >= 1"
[ "$PRODUCERS" -le "$ROUTES" ] || PRODUCERS=$ROUTES

WORK="$(mktemp -d "${TMPDIR:-/tmp}/zerobusd-soak.XXXXXX")"
DEV_PID=""
DPID=""
SEND_PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${SEND_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill -TERM "$DPID" 2>/dev/null || true
    # A clean stop flushes the spool; give it a deadline, then kill.
    for _ in $(seq 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$DPID" 2>/dev/null || true
  fi
  if [ -n "$DEV_PID" ] && kill -0 "$DEV_PID" 2>/dev/null; then
    kill -TERM "$DEV_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$DEV_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  # Exit 1 is the memory check's verdict (printed above); anything else the
  # daemon's log may explain.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ] && [ -f "$WORK/zerobusd.log" ]; then
    echo "route_soak: failed (exit $rc); last lines of the daemon's log:" >&2
    grep -v -E '^(Arena [0-9]+:|system bytes|in use bytes|Total \(incl|max mmap)' "$WORK/zerobusd.log" | tail -20 >&2 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "route_soak: kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS WHAT CMD...: polls CMD (every 50 ms) until it succeeds;
# fails the run at the deadline or when a process of ours died.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ -z "$DEV_PID" ] || kill -0 "$DEV_PID" 2>/dev/null || die "zerobus-devserver died while waiting for $what"
    [ -z "$DPID" ] || kill -0 "$DPID" 2>/dev/null || die "zerobusd died while waiting for $what"
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${seconds}s waiting for $what"
    sleep 0.05
  done
}

# --- the load: one file per producer, its share of the routes, ~200-byte records
python3 - "$WORK" "$ROUTES" "$RECORDS" "$PRODUCERS" <<'PY'
import sys
work, routes, records, producers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pad = "x" * 140
files = [open(f"{work}/load-{p}.ndjson", "w") for p in range(producers)]
for r in range(routes):
    f = files[r % producers]
    f.write(f"@route r{r}\n")
    f.write("".join('{"id":"r%d-%d","seq":%d,"sensor":"s%d","payload":"%s"}\n' % (r, i, i, i % 16, pad)
                    for i in range(records)))
for f in files:
    f.close()
PY

# --- devserver
: >"$WORK/devserver.log"
: >"$WORK/zerobusd.log"
"$BIN/zerobus-devserver" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --output-dir "$WORK/rows" \
  --ack-interval-ms 20 --log-level warn >"$WORK/devserver.log" 2>&1 &
DEV_PID=$!
wait_for 30 "the devserver to listen" grep -q 'listening grpc=' "$WORK/devserver.log"
GRPC_PORT=$(sed -n 's/.*listening grpc=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/devserver.log")
HTTP_PORT=$(sed -n 's/.*listening .* http=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/devserver.log")

# --- daemon
{
  cat <<YAML
zerobus:
  endpoint: "http://127.0.0.1:$GRPC_PORT"
  workspace_url: "http://127.0.0.1:$HTTP_PORT"
  workspace_id: "1"
  tls: false
  client_id: dev-client
  client_secret: dev-secret
  # The dev server here has no quota: neither has the daemon's pace.
  stream_quota: {rows_per_second: 1000000000, bytes_per_second: 1TiB}
spool:
  path: $WORK/spool
${SPOOL_MIN_FREE:+  min_free_bytes: $SPOOL_MIN_FREE}
intake:
  socket: $WORK/intake.sock
control:
  socket: $WORK/control.sock
metrics:
  listen: "127.0.0.1:0"
routes:
YAML
  for r in $(seq 0 $((ROUTES - 1))); do
    printf '  - {name: r%d, table: main.soak.t%d, format: json}\n' "$r" "$r"
  done
} >"$WORK/zerobusd.yaml"
# shellcheck disable=SC2086  # ZEROBUSD_ENV is a list of NAME=VALUE words
env $ZEROBUSD_ENV "$BIN/zerobusd" --config "$WORK/zerobusd.yaml" --log-level info >"$WORK/zerobusd.log" 2>&1 &
DPID=$!
wait_for 60 "zerobusd to be ready" grep -q ' ready: socket ' "$WORK/zerobusd.log"
METRICS_PORT=$(sed -n 's|.*metrics on http://127\.0\.0\.1:\([0-9]*\)/metrics.*|\1|p' "$WORK/zerobusd.log" | head -1)
[ -n "$METRICS_PORT" ] || die "zerobusd did not say where its metrics are"
METRICS="http://127.0.0.1:$METRICS_PORT/metrics"

# Drained: every route reports an empty spool and no request in flight.
drained() {
  curl -sf --max-time 10 "$METRICS" >"$WORK/metrics.txt" || return 1
  awk -v want="$ROUTES" '
    /^zerobusd_spool_records\{route="/ { n++; s += $NF }
    /^zerobusd_inflight_requests\{route="/ { f += $NF }
    END { exit !(n == want && s == 0 && f == 0) }' "$WORK/metrics.txt"
}

# RocksDB's write-ahead logs in the spool hold what its memtables hold. The
# daemon flushes the memtables of a drained spool (lib/spool/rocksdb_spool.cc:
# MaybeFlushDrained at once when they are large, lib/spool/spool_tidy.cc
# within a few seconds otherwise): wait until the logs are under
# MEMTABLE_BOUND on two polls in a row (the memory goes right after the log), so
# that what is sampled does not depend on where the round left RocksDB's
# flush cycle. A daemon that keeps a bigger memtable is reported, and fails
# CHECK=1: its memory then depends on the history of the load.
MEMTABLE_BOUND=$((8 << 20))
wal_bytes() { find "$WORK/spool" -maxdepth 1 -name '*.log' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
memtable_settled() {
  local deadline=$((SECONDS + ${MEMTABLE_WAIT_S:-10})) ok=0
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ "$(wal_bytes)" -lt "$MEMTABLE_BOUND" ]; then
      ok=$((ok + 1))
      [ "$ok" -lt 2 ] || return 0
    else
      ok=0
    fi
    sleep 0.05
  done
  return 1
}

# The daemon now: "rss hwm anon file threads arenas cpu minflt": RSS, peak
# RSS, anonymous and file-backed RSS (MiB), threads, glibc's non-main malloc
# arenas (anonymous mappings that start on a 64 MiB boundary and span 64 MiB,
# used + reserved), CPU seconds and minor page faults so far.
sample() {
  python3 - "$DPID" <<'PY'
import os
import sys
pid = sys.argv[1]
st = {}
for line in open(f"/proc/{pid}/status"):
    k, _, v = line.partition(":")
    st[k] = v.split()
mib = lambda k: int(st[k][0]) / 1024
HEAP = 64 << 20
arenas, run_start, run_end = 0, None, None
def close(s, e):
    return 1 if s is not None and s % HEAP == 0 and e - s == HEAP else 0
for line in open(f"/proc/{pid}/maps"):
    f = line.split()
    lo, hi = (int(x, 16) for x in f[0].split("-"))
    anon = len(f) < 6
    if anon and run_end == lo and lo % HEAP != 0:
        run_end = hi
        continue
    arenas += close(run_start, run_end)
    run_start, run_end = (lo, hi) if anon else (None, None)
arenas += close(run_start, run_end)
stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
print(f"{mib('VmRSS'):.1f} {mib('VmHWM'):.1f} {mib('RssAnon'):.1f} {mib('RssFile'):.1f} {st['Threads'][0]} {arenas} "
      f"{cpu:.2f} {stat[7]}")
PY
}

# glibc's own count, summed over its arenas: "system_MiB in_use_MiB", from
# malloc_stats() (written to the daemon's stderr, our log) called by gdb.
STATS_BEFORE=0
stats_count() { grep -c '^Total (incl. mmap):' "$WORK/zerobusd.log" || true; }
stats_written() { [ "$(stats_count)" -gt "$STATS_BEFORE" ]; }
heap_stats() {
  STATS_BEFORE=$(stats_count)
  gdb -q -batch -p "$DPID" -ex 'call (void) malloc_stats()' >/dev/null 2>&1 || { echo "? ?"; return; }
  wait_for 10 "malloc_stats" stats_written
  awk '/^Total \(incl. mmap\):/ { t = 1; next }
       t && /system bytes/ { s = $NF } t && /in use bytes/ { u = $NF; t = 0 }
       END { printf "%.1f %.1f\n", s / 1048576, u / 1048576 }' "$WORK/zerobusd.log"
}

read -r rss0 _ _ _ threads0 arenas0 cpu_prev flt_prev <<<"$(sample)"
echo "route_soak: $ROUTES routes x $RECORDS records x $ROUNDS rounds, $PRODUCERS producers, daemon pid $DPID" \
  "${ZEROBUSD_ENV:+($ZEROBUSD_ENV)}"
printf 'route_soak: idle after start: rss %.1f MiB, %d threads, %d arenas\n' "$rss0" "$threads0" "$arenas0"
printf '%5s %7s %7s %6s %7s %8s %7s %8s %8s %7s %7s %6s\n' round send_s drain_s cpu_s kfaults rss_MiB delta \
  hwm_MiB anon_MiB wal_MiB threads arenas
: >"$WORK/rounds.txt"
prev=""
for round in $(seq 1 "$ROUNDS"); do
  t0=$EPOCHREALTIME
  SEND_PIDS=()
  for p in $(seq 0 $((PRODUCERS - 1))); do
    "$BIN/zerobusctl" send --quiet --socket "$WORK/intake.sock" "$WORK/load-$p.ndjson" >"$WORK/send-$p.out" 2>&1 &
    SEND_PIDS+=($!)
  done
  for i in "${!SEND_PIDS[@]}"; do
    wait "${SEND_PIDS[$i]}" || die "round $round: producer $i failed: $(cat "$WORK/send-$i.out")"
  done
  SEND_PIDS=()
  t1=$EPOCHREALTIME
  wait_for "$DRAIN_TIMEOUT_S" "round $round to drain" drained
  t2=$EPOCHREALTIME
  # The rows landed (at least once each); the files are emptied so that
  # disk use stays flat (the devserver appends, O_APPEND).
  rows=$(cat "$WORK"/rows/*.jsonl | wc -l)
  [ "$rows" -ge $((ROUTES * RECORDS)) ] || die "round $round: $rows rows landed, expected $((ROUTES * RECORDS))"
  for f in "$WORK"/rows/*.jsonl; do : >"$f"; done
  settled=1
  memtable_settled || settled=0
  wal=$(wal_bytes)
  read -r rss hwm anon _ threads arenas cpu flt <<<"$(sample)"
  heap=""
  [ "${MALLOC_STATS:-0}" = 1 ] && heap=$(heap_stats)
  echo "$round $rss $hwm $anon $threads $arenas $wal $settled" >>"$WORK/rounds.txt"
  awk -v r="$round" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v rss="$rss" -v prev="$prev" -v hwm="$hwm" \
      -v anon="$anon" -v th="$threads" -v ar="$arenas" -v heap="$heap" -v wal="$wal" -v settled="$settled" \
      -v c1="$cpu" -v c0="$cpu_prev" -v f1="$flt" -v f0="$flt_prev" 'BEGIN {
    d = prev == "" ? "" : sprintf("%+.1f", rss - prev)
    printf "%5d %7.1f %7.1f %6.1f %7.0f %8.1f %7s %8.1f %8.1f %7.1f %7d %6d", r, t1 - t0, t2 - t1, c1 - c0,
      (f1 - f0) / 1000, rss, d, hwm, anon, wal / 1048576, th, ar
    if (!settled) printf "  (memtable of a drained spool not flushed)"
    if (split(heap, h, " ") == 2) printf "  malloc: system %s MiB, in use %s MiB, free kept %.1f MiB", h[1], h[2], h[1] - h[2]
    printf "\n" }'
  prev=$rss
  cpu_prev=$cpu
  flt_prev=$flt
done

python3 - "$WORK/rounds.txt" "$WARMUP" "$CHECK" "$MAX_GROWTH_PCT" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
warmup, check, bound = int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
rss = {int(r[0]): float(r[1]) for r in rows}
unsettled = [int(r[0]) for r in rows if r[7] == "0"]
last = max(rss)
xs = [r for r in sorted(rss) if r >= warmup]
ys = [rss[x] for x in xs]
mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
base = rss[warmup]
pct = 100 * slope / base
print(f"route_soak: rss after warm-up round {warmup}: {base:.1f} MiB; after round {last}: {rss[last]:.1f} MiB "
      f"({rss[last] - base:+.1f} MiB, {100 * (rss[last] - base) / base:+.1f} %, ratio {rss[last] / base:.3f})")
print(f"route_soak: growth over rounds {warmup}..{last}: {slope:+.2f} MiB/round ({pct:+.2f} %/round, "
      f"least squares); bound {bound:g} %/round; rss {min(ys):.1f}..{max(ys):.1f} MiB")
failed = False
if unsettled:
    print(f"route_soak: after round(s) {', '.join(map(str, unsettled))} the drained spool kept a memtable of "
          f"8 MiB or more: the samples depend on RocksDB's flush cycle")
    failed = check
if check and pct > bound:
    print(f"route_soak: FAIL: memory still grows {pct:.2f} %/round after warm-up (bound {bound:g} %)")
    failed = True
if failed:
    sys.exit(1)
if check:
    print("route_soak: PASS: memory levelled off after warm-up")
PY
