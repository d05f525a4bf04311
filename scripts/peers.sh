#!/usr/bin/env bash
# Builds the comparison peers of `ringcast-bench compare` (bench/peers/): the tokio-tungstenite
# server (cargo), the Node `ws` server (npm ci), the Netty server (javac against the
# distribution's libnetty-java). Installs node/npm, a JDK, libnetty-java, nginx-light and the
# STOMP brokers (rabbitmq-server, activemq) with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v javac >/dev/null || need_apt+=(default-jdk-headless)
[ -f /usr/share/java/netty-codec-http.jar ] || need_apt+=(libnetty-java)
# nginx terminates TLS in front of ringcast for the wss comparison (`--tls`).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# The STOMP brokers of `compare --stomp` (bench/peers/rabbitmq, bench/peers/activemq).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
[ -f /usr/share/activemq/bin/activemq.jar ] || need_apt+=(activemq)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing with apt: ${need_apt[*]}"
  apt-get update -qq </dev/null
  apt-get install -y -qq "${need_apt[@]}" </dev/null >/dev/null
  # The package starts a default site on port 80; the bench runs its own instances.
  if [[ " ${need_apt[*]} " == *" nginx-light "* ]]; then
    systemctl stop nginx 2>/dev/null || pkill -x nginx || true
  fi
  # Likewise the brokers' own services: the bench starts one broker per run itself.
  for svc in rabbitmq-server activemq; do
    systemctl stop "$svc" 2>/dev/null || true
  done
fi
cargo build --release -q -p peer-tokio-tungstenite -p ringcast -p ringcast-bench
if [ ! -d bench/peers/node-ws/node_modules/ws ] || [ bench/peers/node-ws/package-lock.json -nt bench/peers/node-ws/node_modules ]; then
  npm ci --prefix bench/peers/node-ws --no-audit --no-fund --loglevel=error </dev/null
  touch bench/peers/node-ws/node_modules
fi
cp=""
for j in common buffer transport codec codec-http handler resolver transport-native-epoll transport-native-unix-common; do
  cp+="/usr/share/java/netty-$j.jar:"
done
mkdir -p bench/peers/netty/build
javac -nowarn -cp "$cp" -d bench/peers/netty/build bench/peers/netty/Peer.java
echo "peers built: tokio-tungstenite, node-ws, netty"
