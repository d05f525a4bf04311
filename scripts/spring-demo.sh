#!/usr/bin/env bash
# The seed's browser stack against ringcast: ringcast on 127.0.0.1:8080 with Spring's endpoint
# (/msg-center/dfocus, SockJS) and the seed's destinations, the page (sockjs-client + stomp.js
# 2.3.3, examples/spring-demo) on 127.0.0.1:8090, a token for user "alice" in project "demo",
# and a push every 2 s to /topic/demo/news and to alice's /user/queue/demo. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/ringcast
[ -d tests/node/node_modules/sockjs-client ] || npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
run=$(mktemp -d /tmp/ringcast-spring-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT INT TERM
cat > "$run/ringcast.toml" <<TOML
[auth]
enabled = true
user_claim = "userName"

[stomp]
legacy_destinations = true

[sockjs]
endpoints = ["/msg-center/dfocus"]

[projects.demo]
jwt_alg = "HS256"
jwt_secret = "spring-demo-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TOML
sock="$run/admin.sock"
$BIN serve --config "$run/ringcast.toml" --admin-socket "$sock" --listen 127.0.0.1:8080 &
pids+=($!)
node examples/spring-demo/serve.mjs 8090 &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
token=$($BIN token --config "$run/ringcast.toml" --project demo --user alice --ttl 8h)
echo
echo "Open: http://127.0.0.1:8090/?server=http://127.0.0.1:8080&project=demo&token=$token"
echo "Pushing every 2 s (Ctrl-C to stop)."
i=0
while true; do
  i=$((i + 1))
  $BIN push --admin-socket "$sock" --project demo --topic news "news #$i" >/dev/null
  curl -s --unix-socket "$sock" http://x/publish \
    -d "{\"project\":\"demo\",\"user\":\"alice\",\"destination\":\"/queue/demo\",\"body\":\"for alice #$i\"}" >/dev/null
  sleep 2
done
