#!/usr/bin/env bash
# A 1 KB JSON broadcast to N connections (default 19,000) with and without permessage-deflate
# (issue #16): WebSocket bytes per delivery as the clients receive them, and last-delivery time.
# Same server build, same load generator, one after the other. Results: OUT/{plain,deflate}.json.
# Usage: bench/compression.sh [N] [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-19000}"
MESSAGES="${2:-5}"
OUT="${OUT:-bench/results/compression-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for mode in plain deflate; do
  dir=$(mktemp -d)
  port=$(free_port)
  enabled=false
  extra=()
  if [ "$mode" = deflate ]; then enabled=true; extra=(--deflate); fi
  printf '[compression]\nenabled = %s\nmin_bytes = 256\n' "$enabled" >"$dir/ringcast.toml"
  ./target/release/ringcast serve --no-auth --config "$dir/ringcast.toml" --listen "127.0.0.1:$port" \
    --admin-socket "$dir/admin.sock" --max-connections $((N + 1000)) >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do [ -S "$dir/admin.sock" ] && break; sleep 0.05; done
  echo "== $mode: $N connections, $MESSAGES broadcasts of 1 KB JSON"
  ./target/release/ringcast-bench raw --url "ws://127.0.0.1:$port/ws?topic=bench" \
    --admin-socket "$dir/admin.sock" -n "$N" --messages "$MESSAGES" --size 1024 --json-body \
    "${extra[@]}" --json "$OUT/$mode.json" 2>&1 | grep -vE '^\s|^[{}]'
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
  sleep 2
done
echo "results in $OUT"
