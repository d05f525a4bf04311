#!/usr/bin/env bash
# make storm: reconnect storms on this machine (issue #32), results into $OUT:
#   1. N_RAW raw connections (default 1,000,000): the server SIGKILLed and restarted, every
#      client back as fast as the server lets it;
#   2. N_STOMP STOMP sessions (default 100,000), each with its own RS256 token, the same;
#   3. N_CLUSTER STOMP sessions (default 100,000, RS256) on the first of 3 nodes sharing a
#      redis-server, with history: 5 messages reach them, the node is SIGKILLed, 10 more go out
#      through another node, and every session comes back on the other two with
#      x-recover-since; time until all are back and recovered, Redis reads per session.
# Tunes the host first when root. Bounded in time; the bench stops every process it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
N_RAW="${N_RAW:-1000000}"
N_STOMP="${N_STOMP:-100000}"
N_CLUSTER="${N_CLUSTER:-100000}"
OUT="${OUT:-bench/results/storm-$(date -u +%Y%m%d-%H%M%S)}"
BENCH=target/release/ringcast-bench
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
echo "== storm: raw $N_RAW, STOMP $N_STOMP, cluster $N_CLUSTER, results in $OUT ($(date -u +%FT%TZ), $(nproc) cores, $(uname -r))"
if [ "$(id -u)" = 0 ]; then ./tuning/tune.sh >/dev/null; else echo "not root: skipping make tune"; fi
wait_quiet() {  # let the previous run's sockets close before the next one opens more
  for _ in $(seq 120); do
    n=$(awk '/^TCP:/{print $3}' /proc/net/sockstat)
    [ "$n" -lt 1000 ] && return 0
    sleep 1
  done
}
if [ "$N_RAW" -gt 0 ]; then
  echo "== raw"
  timeout 900 "$BENCH" storm -n "$N_RAW" --sources 127.0.0.2-127.0.0.81 --timeout 300 \
    --json "$OUT/raw.json"
  wait_quiet
fi
keys=$(mktemp -d)
REDIS_PID=
cleanup() { [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; rm -rf "$keys"; }
trap cleanup EXIT
if [ $((N_STOMP + N_CLUSTER)) -gt 0 ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/bench.key" 2>/dev/null
  openssl pkey -in "$keys/bench.key" -pubout -out "$keys/bench.pub"
  cat >"$keys/ringcast.toml" <<TOML
[auth]
enabled = true
[limits]
max_pending_per_ip = 0
[projects.bench]
jwt_alg = "RS256"
jwt_public_key = "$keys/bench.pub"
jwt_private_key = "$keys/bench.key"
[projects.bench.history]
size = 100
ttl_ms = 300000
topics = ["storm"]
TOML
fi
if [ "$N_STOMP" -gt 0 ]; then
  echo "== STOMP, RS256"
  timeout 900 "$BENCH" storm -n "$N_STOMP" --stomp --project bench --config "$keys/ringcast.toml" \
    --timeout 300 --json "$OUT/stomp.json"
  wait_quiet
fi
if [ "$N_CLUSTER" -gt 0 ]; then
  echo "== STOMP, RS256, 3 nodes on Redis, recovery"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  timeout 900 "$BENCH" storm -n "$N_CLUSTER" --stomp --project bench --config "$keys/ringcast.toml" \
    --nodes 3 --redis "redis://127.0.0.1:$port" --before 5 --missed 10 --timeout 300 \
    --json "$OUT/cluster.json"
fi
