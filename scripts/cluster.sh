#!/usr/bin/env bash
# Three ringcast nodes on ports 8081-8083 and a private redis-server, then a bench run across
# them; stops everything it started, whatever happens.
#
#   scripts/cluster.sh demo    3 × 2,000 connections, 200 publishes/s for 10 s (make cluster-demo)
#   scripts/cluster.sh bench   3 × 30,000 connections at 1,000 publishes/s for 30 s, then the same
#                              load on one node, for BENCHMARKS.md (make cluster-bench)
# Env: OUT (results folder), PER_NODE, RATE, DURATION, TOPICS override the mode's figures.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-demo}
case "$mode" in
  demo) PER_NODE=${PER_NODE:-2000}; RATE=${RATE:-200}; DURATION=${DURATION:-10} ;;
  bench) PER_NODE=${PER_NODE:-30000}; RATE=${RATE:-1000}; DURATION=${DURATION:-30} ;;
  *) echo "usage: $0 demo|bench" >&2; exit 2 ;;
esac
TOPICS=${TOPICS:-1000}
OUT=${OUT:-bench/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=target/release
REDIS_PORT=${REDIS_PORT:-6390}
mkdir -p "$OUT"
run=$(mktemp -d /tmp/ringcast-cluster.XXXXXX)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT INT TERM

command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }
cargo build --release --workspace -q

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$run" \
  >"$run/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

start_node() { # port, admin socket, [redis url]
  local extra=()
  [ -n "${3:-}" ] && extra=(--redis "$3")
  "$BIN/ringcast" serve --listen "127.0.0.1:$1" --admin-socket "$2" --no-auth --shards 2 \
    --max-connections $((PER_NODE * 3 + 1000)) "${extra[@]}" >"$run/node-$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [ -S "$2" ] && return 0; sleep 0.05; done
  echo "node on port $1 did not start:" >&2; cat "$run/node-$1.log" >&2; exit 1
}

urls=(); socks=()
for i in 1 2 3; do
  start_node "808$i" "$run/node$i.sock" "redis://127.0.0.1:$REDIS_PORT"
  urls+=(--url "ws://127.0.0.1:808$i/ws?topic=c"); socks+=(--admin-socket "$run/node$i.sock")
done
echo "== cluster: 3 nodes × $PER_NODE connections, $RATE publishes/s on node 1 over $TOPICS topics, $DURATION s"
"$BIN/ringcast-bench" raw "${urls[@]}" "${socks[@]}" -n $((PER_NODE * 3)) --topics "$TOPICS" \
  --messages 0 --rate "$RATE" --duration "$DURATION" --timeout 60 --json "$OUT/cluster.json" \
  >/dev/null
"$BIN/ringcast" stats --cluster --admin-socket "$run/node1.sock" >"$OUT/cluster-stats.json"

if [ "$mode" = bench ]; then
  for p in "${pids[@]:1}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  pids=("${pids[0]}")
  start_node 8084 "$run/single.sock"
  echo "== single node: $((PER_NODE * 3)) connections, same load"
  "$BIN/ringcast-bench" raw --url "ws://127.0.0.1:8084/ws?topic=c" --admin-socket "$run/single.sock" \
    -n $((PER_NODE * 3)) --topics "$TOPICS" --messages 0 --rate "$RATE" --duration "$DURATION" \
    --timeout 60 --json "$OUT/single.json" >/dev/null
fi
python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
for name in ("cluster", "single"):
    p = os.path.join(out, f"{name}.json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p))
    s, l = r["sustained"], r["latency_ms"]
    print(f"{name:8} {r['connected']}/{r['connections']} connected, {s['publishes']} publishes "
          f"({s['rate_achieved']:.0f}/s), {s['delivered']}/{s['expected']} deliveries, "
          f"latency p50 {l['p50']:.2f} ms p99 {l['p99']:.2f} ms p99.9 {l['p999']:.2f} ms, "
          f"server CPU {s['server_cpu_seconds']:.1f} s")
EOF
echo "results in $OUT"
