#!/usr/bin/env bash
# Unicast at scale (issue #15): 100,000 STOMP sessions of distinct users (bench-0 … bench-99999),
# each subscribed to its own /user/queue/bench; publishes to random users through the admin
# socket in batches of 100, at RATE per second for 20 s. One fresh server per rate.
set -u
cd "$(dirname "$0")/../../.."
OUT=bench/results/unicast-20261126
for rate in ${RATES:-100000 150000}; do
  rm -f /tmp/uc.sock
  ./target/release/ringcast serve --listen 127.0.0.1:${PORT:-18095} --admin-socket /tmp/uc.sock --no-auth \
    --max-connections 200000 > "$OUT/server-$rate.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S /tmp/uc.sock ] && break; sleep 0.1; done
  ./target/release/ringcast-bench stomp --unicast -n 100000 --url "ws://127.0.0.1:${PORT:-18095}/ws?topic=bench" \
    --admin-socket /tmp/uc.sock --messages 0 --rate "$rate" --batch 100 --duration 20 \
    --json "$OUT/rate-$rate.json" > "$OUT/bench-$rate.log" 2>&1
  echo "rate $rate: exit $?"
  kill $pid; wait $pid 2>/dev/null
  sleep 65
done
