#!/usr/bin/env bash
# make c1m: tune the host, check it with `ringcast doctor`, then at the same N (default
# 1,000,000), one after the other on this machine:
#   1. the floor: a bare io_uring TCP server answering a fixed 101, then 64 B broadcasts;
#   2. ringcast, raw mode: N connections, 10 broadcasts of 64 B;
#   3. ringcast, STOMP: N authenticated sessions (one token each), heart-beats 10 s both ways
#      (HEARTBEAT_MS),
#      a push every 5 s for 2 minutes, then 60 s of heart-beats alone.
# Writes JSON and a summary into $OUT. Bounded in time; stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
OUT="${OUT:-bench/results/c1m-$(date -u +%Y%m%d-%H%M%S)}"
PUSH_MESSAGES="${PUSH_MESSAGES:-25}"
HOLD="${HOLD:-60}"
HEARTBEAT_MS="${HEARTBEAT_MS:-10000}"   # STOMP heart-beats, both ways
PHASES="${PHASES:-floor raw stomp}"   # a subset reruns only those phases into $OUT
BIN=target/release/ringcast
BENCH=target/release/ringcast-bench
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
has() { [[ " $PHASES " == *" $1 "* ]]; }

PIDS=()
# Waits for the processes it started only: a bare `wait` would also wait for the `tee` below,
# which waits for this script's output to close, and the run would never end.
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== c1m: N=$N, results in $OUT ($(date -u +%FT%TZ), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r))"
if [ "$(id -u)" = 0 ]; then ./tuning/tune.sh; else echo "not root: skipping make tune"; fi
"$BIN" doctor --connections "$N" --local-bench | tee "$OUT/doctor.txt"

wait_quiet() {  # let the previous run's sockets close before the next one opens N more
  for _ in $(seq 120); do
    n=$(awk '/^TCP:/{print $3}' /proc/net/sockstat)
    [ "$n" -lt 1000 ] && return 0
    sleep 1
  done
}

if has floor; then
echo "== 1/3 floor"
timeout 900 "$BENCH" floor -n "$N" --messages 10 --interval-ms 1000 --timeout 300 \
  --json "$OUT/floor.json" >/dev/null
wait_quiet
fi

serve() {  # serve NAME ARGS...: starts ringcast, waits for its admin socket
  local name=$1; shift
  rm -f "$OUT/$name.sock"
  "$BIN" serve --listen 127.0.0.1:18888 --admin-socket "$OUT/$name.sock" --max-connections "$N" "$@" \
    >"$OUT/$name-server.log" 2>&1 &
  SERVER=$!
  PIDS+=("$SERVER")
  for _ in $(seq 200); do [ -S "$OUT/$name.sock" ] && return 0; sleep 0.05; done
  echo "server did not start"; cat "$OUT/$name-server.log"; exit 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || true; }

if has raw; then
echo "== 2/3 ringcast raw"
serve raw --no-auth
timeout 900 "$BENCH" raw -n "$N" --url "ws://127.0.0.1:18888/ws?topic=c1m" --admin-socket "$OUT/raw.sock" \
  --messages 10 --interval-ms 1000 --timeout 300 --json "$OUT/raw.json" >/dev/null
stop
wait_quiet
fi

if has stomp; then
echo "== 3/3 ringcast STOMP"
cat >"$OUT/stomp.toml" <<TOML
[auth]
enabled = true
user_claim = "sub"

[projects.bench]
jwt_alg = "HS256"
jwt_secret = "c1m-bench-secret-not-for-production"

[stomp]
heartbeat_send_ms = $HEARTBEAT_MS
heartbeat_receive_ms = $HEARTBEAT_MS
TOML
serve stomp --config "$OUT/stomp.toml"
timeout 1200 "$BENCH" stomp -n "$N" --url "ws://127.0.0.1:18888/ws?topic=c1m&project=bench" \
  --admin-socket "$OUT/stomp.sock" --config "$OUT/stomp.toml" --heartbeat-ms "$HEARTBEAT_MS" \
  --messages "$PUSH_MESSAGES" --interval-ms 5000 --hold "$HOLD" --timeout 400 --json "$OUT/stomp.json" >/dev/null
stop
fi

python3 scripts/c1m_report.py "$OUT" | tee "$OUT/summary.md"
