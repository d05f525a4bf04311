#!/usr/bin/env bash
# Runs the shared Autobahn runner against ringcast's /echo endpoint, on both io_uring paths.
# Exit 0 only if no case FAILED on either.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${RINGCAST_BIN:-$ROOT/target/release/ringcast}"
RUNNER="${AUTOBAHN_RUNNER:-$ROOT/../shared/tools/autobahn/run.sh}"
OUT="${AUTOBAHN_OUT:-$ROOT/target/autobahn}"
[ -x "$RUNNER" ] || { echo "autobahn runner not found at $RUNNER" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

status=0
for mode in multishot compat; do
  port=$(free_port)
  dir=$(mktemp -d)
  extra=()
  [ "$mode" = compat ] && extra=(--io-compat)
  "$BIN" serve --config "$ROOT/tests/autobahn/echo.toml" --no-auth --listen "127.0.0.1:$port" \
    --admin-socket "$dir/admin.sock" --shards 2 "${extra[@]}" >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$dir/admin.sock" ] && break; sleep 0.05; done
  echo "autobahn ($mode io path):"
  if ! "$RUNNER" --url "ws://127.0.0.1:$port/echo" --out "$OUT/$mode" --timeout 600; then
    status=1
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  rm -rf "$dir"
done
exit $status
