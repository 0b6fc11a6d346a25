#!/usr/bin/env bash
# End-to-end throughput against the raw disk limit, measured in the same run.
#   bench/run.sh [RECORDS]   (default 1000000 records of about 200 bytes)
# Prints records/s for the daemon path (zerobusctl -> zerobusd -> spool ->
# devserver ACK -> spool empty) and for raw RocksDB sync WriteBatches of 1000
# records, their ratio, the daemon's peak RSS (and its anonymous memory at
# the end), and the spool folder's size: at its peak during the run (sampled
# every 0.2 s), at the last ACK, and SETTLE_S seconds later (default
# 30; the goal of issue 9 is under 64 MB by then), the CPU of each thread
# and where the spool writer's time went.
#   BACKLOG=1 bench/run.sh 10000000   incompressible records spooled while
#                                     the server is down, then drained
#   SPOOL_MEMORY_BUDGET=, SPOOL_SYNC=, EXTRA_YAML=, EXTRA_INTAKE_YAML=,
#   PRODUCERS=P (P senders at once), RAW_RUNS= (raw runs, median; default 3),
#   PERF_DATA=FILE (perf record; PERF_ARGS= its options, default -g)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
# Counts must be whole numbers of at least 1: say which one is wrong.
for knob in "RECORDS=$N" "PRODUCERS=${PRODUCERS:-1}" "RAW_RUNS=${RAW_RUNS:-3}"; do
  value="${knob#*=}"
  case "$value" in
    '' | *[!0-9]*) ok=0 ;;
    *) ok=$((10#$value >= 1)) ;;
  esac
  if [ "$ok" != 1 ]; then
    echo "bench/run.sh: ${knob%%=*} must be a whole number of at least 1, not '$value'" >&2
    exit 2
  fi
done
bash scripts/build.sh >/dev/null
BIN="$(pwd)/${BUILD_DIR:-build}/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/zerobusd-bench.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
GRPC=$(port); HTTP=$(port); METRICS=$(port)

# BACKLOG=1: the records (incompressible) are sent while the server is down,
# and the backlog is drained once it starts: the drain's rate and what the
# backlog costs in memory and disk.
BACKLOG="${BACKLOG:-0}"
python3 - "$WORK/records.ndjson" "$N" "$BACKLOG" <<'PY'
import os, sys
n, random_payload = int(sys.argv[2]), sys.argv[3] == "1"
with open(sys.argv[1], "w") as f:
    for i in range(n):
        pad = os.urandom(75).hex() if random_payload else "x" * 150
        f.write('{"id":"b-%d","seq":%d,"payload":"%s"}\n' % (i, i, pad))
PY

start_devserver() {
  "$BIN/zerobus-devserver" --grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" \
    --output-dir "$WORK/rows" --ack-interval-ms 50 >"$WORK/devserver.log" 2>&1 &
  SPID=$!
  PIDS+=($SPID)
  for _ in $(seq 100); do grep -q listening "$WORK/devserver.log" && break; sleep 0.1; done
}
[ "$BACKLOG" = 1 ] || start_devserver
cat > "$WORK/zerobusd.yaml" <<YAML
zerobus:
  endpoint: "http://127.0.0.1:$GRPC"
  workspace_url: "http://127.0.0.1:$HTTP"
  workspace_id: "1"
  tls: false
  client_id: dev-client
  client_secret: dev-secret
  # The dev server here has no quota: neither has the daemon's pace.
  stream_quota: {rows_per_second: 1000000000, bytes_per_second: 1TiB}
spool:
  path: $WORK/spool
  memory_budget: ${SPOOL_MEMORY_BUDGET:-32MiB}
  sync: ${SPOOL_SYNC:-always}
intake:
  socket: $WORK/zerobusd.sock
${EXTRA_INTAKE_YAML:-}
metrics:
  listen: "127.0.0.1:$METRICS"
routes:
  - name: bench
    table: main.bench.records
    format: json
drain:
  backoff_max_ms: 1000
${EXTRA_YAML:-}
YAML
"$BIN/zerobusd" --config "$WORK/zerobusd.yaml" --log-level warn >"$WORK/zerobusd.log" 2>&1 &
DPID=$!
PIDS+=($DPID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$METRICS/readyz" >/dev/null && break; sleep 0.1; done

spool_bytes() { du -sb "$WORK/spool" 2>/dev/null | cut -f1 || echo 0; }
# A sampler writes "<spool bytes> <anonymous kB>" every 0.2 s until the
# daemon is gone (or stop-sampling exists): the peaks come from it.
( while [ ! -e "$WORK/stop-sampling" ] && kill -0 "$DPID" 2>/dev/null; do
    echo "$(spool_bytes) $(sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$DPID/status")"
    sleep 0.2
  done >"$WORK/samples" ) &
SAMPLER=$!
# PERF_DATA=FILE: the daemon's threads are sampled with perf while it runs
# (read it with `perf report -i FILE --sort comm,dso,sym`).
if [ -n "${PERF_DATA:-}" ]; then
  perf record -q ${PERF_ARGS:--g} -o "$PERF_DATA" -p "$DPID" >/dev/null 2>&1 &
  PERF_PID=$!
fi
start=$(date +%s.%N)
TIMEFORMAT="%U %S"
# PRODUCERS=P: the records are split between P zerobusctl sends at once
# (P connections, each with its own credit window).
PRODUCERS="${PRODUCERS:-1}"
if [ "$PRODUCERS" -gt 1 ]; then
  (cd "$WORK" && split -n "l/$PRODUCERS" -d records.ndjson part.)
  # Each sender is waited for by its pid: one that fails fails the bench
  # (a bare `wait` would not, and the wait for every ACK would never end).
  { time (pids=()
      for f in "$WORK"/part.*; do
        "$BIN/zerobusctl" send --socket "$WORK/zerobusd.sock" --route bench "$f" >"$f.out" &
        pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p"; done); } 2>"$WORK/send.cpu"
  awk '{ a += $2; r += $4 } END { printf "accepted %d rejected %d (%d producers)", a, r, NR }' "$WORK"/part.*.out \
    >"$WORK/send.out"
else
  { time "$BIN/zerobusctl" send --socket "$WORK/zerobusd.sock" --route bench "$WORK/records.ndjson" \
      >"$WORK/send.out"; } 2>"$WORK/send.cpu"
fi
accepted_at=$(date +%s.%N)
backlog_bytes=0
if [ "$BACKLOG" = 1 ]; then
  backlog_bytes=$(spool_bytes)
  start=$(date +%s.%N)  # the drain is what is timed
  start_devserver
fi
i=0
while :; do
  depth=$(curl -s "http://127.0.0.1:$METRICS/metrics" | sed -n 's/^zerobusd_acked_records_total{route="bench"} //p')
  [ "${depth%.*}" = "$N" ] && break
  i=$((i + 1))
  sleep 0.05
done
end=$(date +%s.%N)
if [ -n "${PERF_DATA:-}" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
spool_at_drain=$(spool_bytes)
# How long until the spool gives its disk back (or SETTLE_S passes).
settle_limit="${SETTLE_S:-30}"
settled_after=""
for t in $(seq 0 "$settle_limit"); do
  if [ "$(spool_bytes)" -lt $((64 * 1000 * 1000)) ]; then settled_after=$t; break; fi
  [ "$t" -lt "$settle_limit" ] && sleep 1
done
spool_settled=$(spool_bytes)
touch "$WORK/stop-sampling"; wait "$SAMPLER" || true
spool_peak=$(awk 'BEGIN{m=0} $1>m{m=$1} END{print m}' "$WORK/samples")
anon_peak_kb=$(awk 'BEGIN{m=0} $2>m{m=$2} END{print m}' "$WORK/samples")
anon_kb=$(sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$DPID/status")
rss_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$DPID/status")
rows=$(wc -l < "$WORK/rows/main.bench.records.jsonl")
# Where the spool writer's time went (zerobusd_spool_writer_seconds_total).
writer=$(curl -s "http://127.0.0.1:$METRICS/metrics" |
  sed -n 's/^zerobusd_spool_writer_seconds_total{phase="\([a-z]*\)"} \(.*\)$/\1=\2/p' | tr '\n' ' ')
commits=$(curl -s "http://127.0.0.1:$METRICS/metrics" | sed -n 's/^zerobusd_spool_commits_total //p')
# CPU seconds by thread name (utime + stime of every thread of the daemon).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
others="devserver=$(cpu_of "$SPID") zerobusctl=$(awk '{ print $1 + $2 }' "$WORK/send.cpu")"
threads=$(python3 - "$DPID" <<'PY'
import os, sys
pid, hz = sys.argv[1], os.sysconf("SC_CLK_TCK")
cpu = {}
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        stat = open(f"/proc/{pid}/task/{tid}/stat").read()
    except OSError:
        continue
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    cpu[name] = cpu.get(name, 0) + (int(fields[11]) + int(fields[12])) / hz
print(" ".join(f"{n.replace(' ', '_')}={s:.2f}" for n, s in sorted(cpu.items(), key=lambda kv: -kv[1]) if s >= 0.01))
PY
)

# The raw limit, measured with the daemon and the devserver stopped (a
# drained spool's compaction would otherwise share the disk with it), RAW_RUNS
# times (default 3): the median is the baseline, the spread says how noisy
# the disk was.
kill "$DPID" "${SPID:-}" 2>/dev/null || true
wait "$DPID" 2>/dev/null || true
[ -n "${SPID:-}" ] && { wait "$SPID" 2>/dev/null || true; }
raws=""
for _ in $(seq "${RAW_RUNS:-3}"); do
  rm -rf "$WORK/raw"
  raws="$raws $("$BIN/zerobus-bench-rocksdb" --path "$WORK/raw" --records "$N" --batch 1000 --size 200 |
    sed -n 's/raw_records_per_s //p')"
done

python3 - "$N" "$start" "$accepted_at" "$end" "$raws" "$rss_kb" "$rows" "$(cat "$WORK/send.out")" \
  "$anon_kb" "$anon_peak_kb" "$spool_peak" "$spool_at_drain" "$spool_settled" "${settled_after:-}" "$settle_limit" \
  "$threads" "$others" "$writer" "${commits:-0}" "$BACKLOG" "$backlog_bytes" <<'PY'
import sys
import os
(n, start, accepted, end, raw, rss_kb, rows, send, anon_kb, anon_peak_kb, spool_peak, spool_at_drain, spool_settled, settled_after,
 settle_limit, threads, others, writer, commits, backlog, backlog_bytes) = sys.argv[1:]
n = int(n); start, accepted, end = map(float, (start, accepted, end))
raws = sorted(float(r) for r in raw.split())
raw = raws[len(raws) // 2]
intake = n / (accepted - start)
e2e = n / (end - start)
print(f"records                     {n} (~200 bytes each)")
print(f"zerobusctl send             {send}")
if backlog == "1":
    print(f"backlog built               {int(backlog_bytes) / 1e6:.1f} MB of spool while the server was down")
    print(f"drain of the backlog        {e2e:,.0f} records/s (server start to the last ACK)")
else:
    print(f"intake (durable accept)     {intake:,.0f} records/s")
    print(f"end to end (acked, deleted) {e2e:,.0f} records/s")
print(f"raw RocksDB sync batches    {raw:,.0f} records/s (WriteBatch of 1000, sync=true; median of {len(raws)}: "
      f"{raws[0]:,.0f} to {raws[-1]:,.0f})")
print(f"ratio {'drain' if backlog == '1' else 'end-to-end'} / raw      {e2e / raw:.2f}")
if backlog != "1":
    print(f"ratio intake / raw          {intake / raw:.2f}")
print(f"daemon peak RSS             {int(rss_kb) / 1024:.1f} MiB (anonymous: {int(anon_peak_kb) / 1024:.1f} MiB at the "
      f"largest sample, {int(anon_kb) / 1024:.1f} MiB at the end)")
mb = lambda b: int(b) / 1e6
print(f"spool folder at peak        {mb(spool_peak):.1f} MB")
print(f"spool folder at last ACK    {mb(spool_at_drain):.1f} MB")
if settled_after:
    print(f"spool folder under 64 MB    {settled_after} s after the last ACK ({mb(spool_settled):.1f} MB)")
else:
    print(f"spool folder after {settle_limit} s      {mb(spool_settled):.1f} MB (not under 64 MB)")
print(f"rows landed at devserver    {rows}")
cpu = [(name, float(sec)) for name, sec in (t.split("=") for t in threads.split())]
total = sum(sec for _, sec in cpu)
print(f"daemon CPU                  {total:.2f} s, {total / n * 1e6:.2f} us per record (wall: {(end - start) / n * 1e6:.2f} us)")
print("  by thread                 " + ", ".join(f"{name} {sec:.2f} s" for name, sec in cpu[:8]))
phases = {name: float(sec) for name, sec in (t.split("=") for t in writer.split())}
busy = sum(sec for name, sec in phases.items() if name != "idle")
if busy > 0:
    order = ["building", "logging", "syncing", "memtable", "stalled", "answering"]
    print(f"spool writer (busy {busy:.2f} s, {int(float(commits))} commits) " +
          ", ".join(f"{p} {phases.get(p, 0) / busy:.0%}" for p in order))
rest = [(name, float(sec)) for name, sec in (t.split("=") for t in others.split())]
print("other processes' CPU        " + ", ".join(f"{name} {sec:.2f} s" for name, sec in rest) +
      f" (all on {os.cpu_count()} cores)")
PY
