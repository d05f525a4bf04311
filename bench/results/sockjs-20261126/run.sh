#!/usr/bin/env bash
# One fresh server per run: plain STOMP, then SockJS over WebSocket, 100,000 sessions each.
set -u
cd /work/main
OUT=bench/results/sockjs-20261126
for mode in stomp sockjs; do
  rm -f /tmp/rcs.sock
  ./target/release/ringcast serve --listen 127.0.0.1:18091 --admin-socket /tmp/rcs.sock --no-auth --max-connections 200000 > $OUT/server-$mode.log 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S /tmp/rcs.sock ] && break; sleep 0.1; done
  flag=""; [ $mode = sockjs ] && flag="--sockjs"
  ./target/release/ringcast-bench stomp $flag -n 100000 --url "ws://127.0.0.1:18091/ws?topic=bench" --admin-socket /tmp/rcs.sock --messages 3 --interval-ms 2000 --json $OUT/$mode.json > $OUT/bench-$mode.log 2>&1
  echo "$mode exit $?"
  kill $pid; wait $pid 2>/dev/null
  sleep 65   # TIME_WAIT
done
