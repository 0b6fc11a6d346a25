#!/usr/bin/env bash
# The whole story in one command: installs what is missing, builds, starts the
# local Zerobus dev server and zerobusd, sends sample records, and shows the
# rows that landed and a few metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
bash scripts/setup-deps.sh
bash scripts/build.sh
BIN="$ROOT/${BUILD_DIR:-build}/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/zerobusd-demo.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting zerobus-devserver (a local Zerobus-compatible server) on 127.0.0.1:50051/50052," \
  "with the service's timing (ACKs 150 ms after each request) and its quota (15,000 rows/s per stream)"
"$BIN/zerobus-devserver" --grpc-listen 127.0.0.1:50051 --http-listen 127.0.0.1:50052 \
  --ack-latency-ms 150 --stream-quota-rows 15000 --output-dir "$WORK/rows" >"$WORK/devserver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/devserver.log" && break; sleep 0.1; done
head -1 "$WORK/devserver.log"

say "Starting zerobusd with config/dev.yaml (spool, socket and logs under $WORK)"
cp config/dev.yaml "$WORK/zerobusd.yaml"
"$BIN/zerobusd" --config "$WORK/zerobusd.yaml" --check
"$BIN/zerobusd" --config "$WORK/zerobusd.yaml" >"$WORK/zerobusd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:9464/readyz >/dev/null && break; sleep 0.1; done
SOCK="$(sed -n 's/^ *socket: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$WORK/zerobusd.yaml" | head -1)"
case "$SOCK" in /*) ;; *) SOCK="$WORK/${SOCK#./}" ;; esac
tail -3 "$WORK/zerobusd.log"

say "Sending 1000 sample sensor readings with zerobusctl (exits 0 once all are durable)"
python3 - "$WORK/readings.ndjson" <<'PY'
import json, random, sys, time
random.seed(7)
with open(sys.argv[1], "w") as f:
    for i in range(1000):
        f.write(json.dumps({"id": f"demo-{i}", "sensor": f"s{i % 8}",
                            "temp_c": round(random.uniform(15, 30), 2),
                            "ts": int(time.time() * 1e6)}) + "\n")
PY
"$BIN/zerobusctl" send --socket "$SOCK" --route readings "$WORK/readings.ndjson"

say "A producer with a mistake gets told exactly what was wrong"
printf '%s\n' '{"id":"demo-ok","sensor":"s1","temp_c":20.5}' 'this is not json' '[1,2,3]' \
  | "$BIN/zerobusctl" send --socket "$SOCK" --route readings - || true
say "Line mode works from a shell too (socat): the daemon answers how far records are durable"
printf '@route readings\n{"id":"from-socat"}\n' | socat - "UNIX-CONNECT:$SOCK" 

say "A record the table refuses is isolated, kept in the dead-letter store, and the route flows on"
curl -sf -X POST --data '{"default":{"poison":"broken-sensor"}}' http://127.0.0.1:50052/faults >/dev/null
printf '%s\n' '{"id":"demo-refused","sensor":"broken-sensor"}' '{"id":"demo-after","sensor":"s2"}' \
  | "$BIN/zerobusctl" send --socket "$SOCK" --route readings -
for _ in $(seq 300); do
  dead="$(curl -s http://127.0.0.1:9464/metrics | sed -n 's/^zerobusd_dead_letter_store_records //p')"
  [ "$dead" = "1" ] && break
  sleep 0.1
done
"$BIN/zerobusctl" dlq list --config "$WORK/zerobusd.yaml"
curl -sf -X POST --data '{}' http://127.0.0.1:50052/faults >/dev/null

say "A busy table drains over several streams, each paced under its quota (route bulk: 2,000 rows/s per stream)"
python3 - "$WORK/bulk.ndjson" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(16000):
        f.write(json.dumps({"id": f"bulk-{i}", "sensor": f"s{i % 8}", "temp_c": 20.0 + i % 10}) + "\n")
PY
"$BIN/zerobusctl" send --socket "$SOCK" --route bulk "$WORK/bulk.ndjson"
for _ in $(seq 600); do
  depth="$(curl -s http://127.0.0.1:9464/metrics | sed -n 's/^zerobusd_spool_records{route="bulk"} //p')"
  [ "$depth" = "0" ] && break
  sleep 0.1
done
echo "rows landed per stream (zerobusd_stream_acked_records_total):"
curl -s http://127.0.0.1:9464/metrics | grep '^zerobusd_stream_acked_records_total{route="bulk"'
curl -s http://127.0.0.1:50052/stats | python3 -c '
import json, sys
t = json.load(sys.stdin)["tables"]["main.edge.bulk"]
print("the dev server saw %d rows over %d streams, at most %d open at once, %d quota trips"
      % (t["records"], t["streams"], t["max_open_streams"], t["quota_trips"]))'

say "Waiting for Zerobus durability ACKs to empty the spool"
for _ in $(seq 300); do
  depth="$(curl -s http://127.0.0.1:9464/metrics | sed -n 's/^zerobusd_spool_records{route="readings"} //p')"
  [ "$depth" = "0" ] && break
  sleep 0.1
done

say "Rows that landed in main.edge.readings (first 3 of $(wc -l < "$WORK/rows/main.edge.readings.jsonl"))"
head -3 "$WORK/rows/main.edge.readings.jsonl"

say "zerobusctl status"
"$BIN/zerobusctl" status --config "$WORK/zerobusd.yaml"

say "A few metrics"
curl -s http://127.0.0.1:9464/metrics | grep -E '^zerobusd_(intake_records_total|acked_records_total|spool_records|stream_opens_total|open_streams|quota_trips_total|paced_seconds_total|dead_letter_records_total|ack_latency_seconds_(sum|count))' 

say "Stopping (SIGTERM drains in-flight ACKs; anything unacked would stay spooled)"
kill -TERM "${PIDS[1]}"; wait "${PIDS[1]}" && echo "zerobusd exited 0"
echo "Demo files are in $WORK"
