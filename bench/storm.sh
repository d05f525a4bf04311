#!/usr/bin/env bash
# make storm: reconnect storms on this machine (issue #32), results into $OUT:
#   1. N_RAW raw connections (default 1,000,000): the server SIGKILLed and restarted, every
#      client back as fast as the server lets it;
#   2. N_STOMP STOMP sessions (default 100,000), each with its own RS256 token, the same.
# Tunes the host first when root. Bounded in time; the bench stops every process it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
N_RAW="${N_RAW:-1000000}"
N_STOMP="${N_STOMP:-100000}"
OUT="${OUT:-bench/results/storm-$(date -u +%Y%m%d-%H%M%S)}"
BENCH=target/release/ringcast-bench
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
echo "== storm: raw $N_RAW, STOMP $N_STOMP, results in $OUT ($(date -u +%FT%TZ), $(nproc) cores, $(uname -r))"
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
if [ "$N_STOMP" -gt 0 ]; then
  echo "== STOMP, RS256"
  keys=$(mktemp -d)
  trap 'rm -rf "$keys"' EXIT
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
TOML
  timeout 900 "$BENCH" storm -n "$N_STOMP" --stomp --project bench --config "$keys/ringcast.toml" \
    --timeout 300 --json "$OUT/stomp.json"
fi
