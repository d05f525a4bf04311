#!/usr/bin/env bash
# Runs the shared Autobahn runner against ringcast's /echo endpoint, on both io_uring paths,
# over ws:// and over wss:// (rustls on the shard, the test certificate in tests/tls), then the
# permessage-deflate cases against a server with [compression] on (a subset by
# default, to keep `make test` short: DEFLATE_CASES='12.*,13.*' runs all 216, as
# `make autobahn-deflate` does). Exit 0 only if no case FAILED on any run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${RINGCAST_BIN:-$ROOT/target/release/ringcast}"
OUT="${AUTOBAHN_OUT:-$ROOT/target/autobahn}"
# The project's shared/ sits beside the checkout (CI lays it there); a clone made elsewhere
# from a local checkout finds it beside the checkout it was cloned from.
find_runner() {
  [ -n "${AUTOBAHN_RUNNER:-}" ] && { echo "$AUTOBAHN_RUNNER"; return; }
  local origin
  origin=$(git -C "$ROOT" config --get remote.origin.url 2>/dev/null || true)
  for base in "$ROOT/.." "${origin:+$origin/..}"; do
    [ -n "$base" ] && [ -x "$base/shared/tools/autobahn/run.sh" ] && {
      echo "$base/shared/tools/autobahn/run.sh"; return; }
  done
  echo "$ROOT/../shared/tools/autobahn/run.sh"
}
RUNNER=$(find_runner)
[ -x "$RUNNER" ] || { echo "autobahn runner not found at $RUNNER (set AUTOBAHN_RUNNER)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

TLS=(--tls-cert "$ROOT/tests/tls/server.pem" --tls-key "$ROOT/tests/tls/server.key")
status=0
for mode in multishot compat; do
  for scheme in ws wss; do
    port=$(free_port)
    dir=$(mktemp -d)
    extra=()
    [ "$mode" = compat ] && extra+=(--io-compat)
    [ "$scheme" = wss ] && extra+=("${TLS[@]}")
    "$BIN" serve --config "$ROOT/tests/autobahn/echo.toml" --no-auth --listen "127.0.0.1:$port" \
      --admin-socket "$dir/admin.sock" --shards 2 "${extra[@]}" >"$dir/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -S "$dir/admin.sock" ] && break; sleep 0.05; done
    echo "autobahn ($mode io path, $scheme://):"
    if ! "$RUNNER" --url "$scheme://127.0.0.1:$port/echo" --out "$OUT/$mode-$scheme" --timeout 600; then
      status=1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    rm -rf "$dir"
  done
done

port=$(free_port)
dir=$(mktemp -d)
"$BIN" serve --config "$ROOT/tests/autobahn/deflate.toml" --no-auth --listen "127.0.0.1:$port" \
  --admin-socket "$dir/admin.sock" --shards 2 >"$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$dir/admin.sock" ] && break; sleep 0.05; done
echo "autobahn (permessage-deflate, cases ${DEFLATE_CASES:=12.1.*,13.2.*}):"
if ! "$RUNNER" --url "ws://127.0.0.1:$port/echo" --out "$OUT/deflate" --cases "$DEFLATE_CASES" \
    --exclude '' --timeout 1200; then
  status=1
fi
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" || true
rm -rf "$dir"
exit $status
