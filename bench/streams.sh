#!/usr/bin/env bash
# Several streams per table against the service's timing and quota.
#   bench/streams.sh [SECONDS]   (default 8: each run's backlog lasts about
#                                 this long at its ideal rate)
# For 1, 2, 4 and 8 streams (routes[].max_streams; STREAMS="1 2 4 8" to
# choose), the dev server acks 150 ms after each request (ACK_LATENCY_MS)
# and ends a stream past 15,000 rows/s (QUOTA_ROWS); the daemon paces each
# stream at that quota. Each run sends a backlog of SECONDS x streams x quota
# records to one table and prints the rows/s it landed at: overall (from
# the send to the last ACK) and steady (from 10 % to 90 % acked), the
# scaling against one stream measured in the same run (the aim: at least 0.8
# of linear), the streams the server saw at once, and the quota trips on
# both sides (the aim: none).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-8}"
STREAMS="${STREAMS:-1 2 4 8}"
QUOTA_ROWS="${QUOTA_ROWS:-15000}"
ACK_LATENCY_MS="${ACK_LATENCY_MS:-150}"
for knob in "SECONDS=$SECONDS_PER_RUN" "QUOTA_ROWS=$QUOTA_ROWS" "ACK_LATENCY_MS=$ACK_LATENCY_MS"; do
  value="${knob#*=}"
  case "$value" in
    '' | *[!0-9]*) echo "bench/streams.sh: ${knob%%=*} must be a whole number, not '$value'" >&2; exit 2 ;;
  esac
done
for n in $STREAMS; do
  case "$n" in
    '' | *[!0-9]*) echo "bench/streams.sh: STREAMS must list whole numbers from 1 to 64, not '$n'" >&2; exit 2 ;;
  esac
  if [ "$n" -lt 1 ] || [ "$n" -gt 64 ]; then
    echo "bench/streams.sh: STREAMS must list whole numbers from 1 to 64, not '$n'" >&2
    exit 2
  fi
done
bash scripts/build.sh >/dev/null
BIN="$(pwd)/${BUILD_DIR:-build}/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/zerobusd-streams.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# One run: $1 streams. Prints "streams overall steady max_open server_trips daemon_trips".
run() {
  local n=$1 dir="$WORK/run-$1"
  local records=$((SECONDS_PER_RUN * n * QUOTA_ROWS))
  local grpc http metrics
  grpc=$(port); http=$(port); metrics=$(port)
  mkdir -p "$dir"
  python3 - "$dir/records.ndjson" "$records" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"id":"s-%d","seq":%d,"payload":"%s"}\n' % (i, i, "x" * 150))
PY
  "$BIN/zerobus-devserver" --grpc-listen "127.0.0.1:$grpc" --http-listen "127.0.0.1:$http" \
    --output-dir "$dir/rows" --ack-latency-ms "$ACK_LATENCY_MS" --stream-quota-rows "$QUOTA_ROWS" \
    >"$dir/devserver.log" 2>&1 &
  local spid=$!
  PIDS+=($spid)
  for _ in $(seq 100); do grep -q listening "$dir/devserver.log" && break; sleep 0.1; done
  cat >"$dir/zerobusd.yaml" <<YAML
zerobus:
  endpoint: "http://127.0.0.1:$grpc"
  workspace_url: "http://127.0.0.1:$http"
  workspace_id: "1"
  tls: false
  client_id: dev-client
  client_secret: dev-secret
  stream_quota: {rows_per_second: $QUOTA_ROWS}
spool:
  path: $dir/spool
intake:
  socket: $dir/zerobusd.sock
metrics:
  listen: "127.0.0.1:$metrics"
routes:
  - name: bench
    table: main.bench.streams
    max_streams: $n
YAML
  "$BIN/zerobusd" --config "$dir/zerobusd.yaml" --log-level warn >"$dir/zerobusd.log" 2>&1 &
  local dpid=$!
  PIDS+=($dpid)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break; sleep 0.1; done
  # The watcher polls the acked count every 50 ms from the moment the send
  # starts, and prints the overall and the 10-90 % rates.
  python3 - "$metrics" "$records" >"$dir/rates" <<'PY' &
import sys, time, urllib.request
port, total = sys.argv[1], int(sys.argv[2])
start = time.monotonic()
marks = {}
while True:
    body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port).read().decode()
    acked = 0
    for line in body.splitlines():
        if line.startswith('zerobusd_acked_records_total{route="bench"}'):
            acked = int(float(line.split()[-1]))
    now = time.monotonic()
    for frac in (0.1, 0.9):
        if frac not in marks and acked >= frac * total:
            marks[frac] = (now, acked)
    if acked >= total:
        break
    if now - start > 600:
        sys.exit("bench/streams.sh: not every record was acked within 600 s")
    time.sleep(0.05)
(t1, a1), (t9, a9) = marks[0.1], marks[0.9]
print("%.0f %.0f" % (total / (now - start), (a9 - a1) / max(t9 - t1, 1e-9)))
PY
  local watcher=$!
  "$BIN/zerobusctl" send --socket "$dir/zerobusd.sock" --route bench "$dir/records.ndjson" >"$dir/send.out"
  wait "$watcher"
  local stats max_open server_trips daemon_trips
  stats=$(curl -s "http://127.0.0.1:$http/stats")
  max_open=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tables"]["main.bench.streams"]["max_open_streams"])' "$stats")
  server_trips=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["quota_trips"])' "$stats")
  daemon_trips=$(curl -s "http://127.0.0.1:$metrics/metrics" |
    sed -n 's/^zerobusd_quota_trips_total{route="bench"} //p')
  echo "$n $(cat "$dir/rates") $max_open $server_trips ${daemon_trips:-0}"
  kill "$dpid" "$spid" 2>/dev/null || true
  wait "$dpid" "$spid" 2>/dev/null || true
  rm -rf "$dir"
}

echo "one table; dev server: ACKs after ${ACK_LATENCY_MS} ms, quota ${QUOTA_ROWS} rows/s per stream;" \
  "daemon paced at the same quota; a backlog of ${SECONDS_PER_RUN} s at each run's ideal rate"
printf '%-8s %12s %12s %10s %16s %9s %12s\n' streams "rows/s" "steady rows/s" "of linear" "server streams" "trips" "(server/us)"
base=""
for n in $STREAMS; do
  read -r streams overall steady max_open server_trips daemon_trips <<<"$(run "$n")"
  [ -z "$base" ] && base=$(python3 -c "print($steady / $n)")
  ratio=$(python3 -c "print('%.2f' % ($steady / ($n * $base)))")
  printf '%-8s %12s %12s %10s %16s %9s %12s\n' "$streams" "$overall" "$steady" "$ratio" "$max_open" \
    "$((server_trips + ${daemon_trips%.*}))" "$server_trips/${daemon_trips%.*}"
done
echo "of linear: steady rows/s over (streams x the first run's steady rows/s per stream)"
