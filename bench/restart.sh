#!/usr/bin/env bash
# Start-up time against backlog size: the daemon must not scan its backlog
# at start. For an empty spool and one of RECORDS records (default 1000000,
# about 200 bytes each, Zerobus down so they stay spooled) it prints the time
# from launch to /readyz after a clean stop (SIGTERM) and after a crash
# (SIGKILL: the write-ahead log is replayed), and the ratios.
#   bench/restart.sh [RECORDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
bash scripts/build.sh >/dev/null
BIN="$(pwd)/${BUILD_DIR:-build}/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/zerobusd-restart.XXXXXX")"
DPID=""
cleanup() { [ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
GRPC=$(port); HTTP=$(port); METRICS=$(port)
python3 - "$WORK/records.ndjson" "$N" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"id":"r-%d","seq":%d,"payload":"%s"}\n' % (i, i, "x" * 150))
PY
config() {  # $1: spool dir
  cat > "$WORK/zerobusd.yaml" <<YAML
zerobus: {endpoint: "http://127.0.0.1:$GRPC", workspace_url: "http://127.0.0.1:$HTTP", workspace_id: "1",
          tls: false, client_id: c, client_secret: s,
          stream_quota: {rows_per_second: 1000000000, bytes_per_second: 1TiB}}
spool: {path: $1, max_bytes: 100GiB, min_free_bytes: 16MiB}
intake: {socket: $WORK/zerobusd.sock}
control: {socket: $WORK/control.sock}
metrics: {listen: "127.0.0.1:$METRICS"}
routes: [{name: bench, table: main.bench.records}]
YAML
}
start() {  # sets ELAPSED: seconds from launch to ready
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN/zerobusd" --config "$WORK/zerobusd.yaml" --log-level warn >>"$WORK/zerobusd.log" 2>&1 &
  DPID=$!
  until curl -sf "http://127.0.0.1:$METRICS/readyz" >/dev/null; do sleep 0.005; done
  t1=$(date +%s.%N)
  ELAPSED=$(python3 -c "print($t1 - $t0)")
}
stop() { kill "-$1" "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=""; }
measure() {  # $1: spool dir, $2: records to send first; sets CLEAN and CRASH
  config "$1"
  start
  if [ "$2" -gt 0 ]; then
    "$BIN/zerobusctl" send --socket "$WORK/zerobusd.sock" --route bench "$WORK/records.ndjson" >/dev/null
  fi
  stop KILL; start; CRASH=$ELAPSED   # replays the write-ahead log
  stop TERM; start; CLEAN=$ELAPSED   # a clean stop flushed it
  stop TERM
}
measure "$WORK/empty" 0; e_clean=$CLEAN; e_crash=$CRASH
measure "$WORK/backlog" "$N"; b_clean=$CLEAN; b_crash=$CRASH
python3 - "$N" "$e_clean" "$e_crash" "$b_clean" "$b_crash" "$(du -sm "$WORK/backlog" | cut -f1)" <<'PY'
import sys
n, ec, ek, bc, bk, mb = sys.argv[1:]
ec, ek, bc, bk = map(float, (ec, ek, bc, bk))
print(f"backlog                          {int(n)} records ({mb} MiB on disk)")
print(f"start after SIGTERM, empty       {ec*1000:7.1f} ms")
print(f"start after SIGTERM, backlog     {bc*1000:7.1f} ms   ratio {bc/ec:5.2f}")
print(f"start after SIGKILL, empty       {ek*1000:7.1f} ms")
print(f"start after SIGKILL, backlog     {bk*1000:7.1f} ms   ratio {bk/ek:5.2f}  (WAL replay, bounded by the memtable)")
PY
