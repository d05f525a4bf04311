#!/usr/bin/env bash
# RabbitMQ with Web-STOMP for one bench run, in the foreground:
# `run.sh DIR WS_PORT STOMP_PORT DIST_PORT EPMD_PORT` (the last two: Erlang's distribution and
# port mapper, free on every address, since both listen on 0.0.0.0).
# Installs the distribution's rabbitmq-server if missing, writes its configuration and state
# under DIR, serves STOMP over WebSocket on 127.0.0.1:WS_PORT/ws and plain STOMP (the bench's
# publisher) on 127.0.0.1:STOMP_PORT; on TERM it stops the broker and removes DIR.
# Every setting is explained in bench/README.md ("RabbitMQ and ActiveMQ").
set -euo pipefail
dir=$1 ws_port=$2 stomp_port=$3 dist_port=$4 epmd_port=$5
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq rabbitmq-server </dev/null >/dev/null
  # The package starts its own node on the default ports; the bench runs its own.
  systemctl stop rabbitmq-server 2>/dev/null || true
fi
mkdir -p "$dir/mnesia" "$dir/log"
# The Erlang VM writes crash dumps (erl_crash.dump, MnesiaCore.*) into its working directory:
# keep them in the run's own directory, never in the checkout.
cd "$dir"
cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp = none
stomp.listeners.tcp.1 = 127.0.0.1:$stomp_port
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $ws_port
web_stomp.tcp.backlog = 4096
web_stomp.num_acceptors.tcp = 10
web_stomp.max_connections = infinity
loopback_users = none
vm_memory_high_watermark.relative = 0.8
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
CONF
echo '[rabbitmq_web_stomp].' > "$dir/enabled_plugins"
export HOME=$dir
export RABBITMQ_NODENAME="ringcast-bench-$$@localhost"
export RABBITMQ_CONFIG_FILE=$dir/rabbitmq
export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
export RABBITMQ_MNESIA_BASE=$dir/mnesia
export RABBITMQ_LOG_BASE=$dir/log
# Erlang's distribution and port mapper on ports of their own, away from any other node here.
export RABBITMQ_DIST_PORT=$dist_port
export ERL_EPMD_PORT=$epmd_port
# One Erlang process per connection and a few per session: far above what 19,000 need.
export RABBITMQ_MAX_NUMBER_OF_PROCESSES=4000000
ulimit -n "$(ulimit -Hn)"
# Our own port mapper, in the foreground, so that it stops with the run (one that RabbitMQ
# starts itself daemonizes and outlives it).
epmd -port "$epmd_port" &
epmd_pid=$!
/usr/lib/rabbitmq/bin/rabbitmq-server &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  kill -TERM "$epmd_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap 'stop; exit 0' TERM INT
wait "$pid"
