#!/usr/bin/env bash
# make c1m-netns: scripts/c1m.sh inside a fresh network namespace whose TCP established hash
# has 2^21 buckets. The host's hash is sized at boot (262,144 buckets here) and ~2M loopback
# sockets (both ends of 1M connections) then chain ~8 deep: `ringcast doctor` reports it, and
# perf showed __inet_lookup_established at 20 % of CPU at 1M. A namespace created after
# `net.ipv4.tcp_child_ehash_entries` is set gets its own, bigger hash. Root only. Env as c1m.sh
# (N, OUT, PHASES, PUSH_MESSAGES, HOLD, HEARTBEAT_MS); EHASH overrides the bucket count.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "c1m-netns needs root (it creates a network namespace)" >&2; exit 1; }
EHASH="${EHASH:-2097152}"
NS="ringcast-c1m-$$"
old=$(sysctl -n net.ipv4.tcp_child_ehash_entries)
cleanup() {
  ip netns del "$NS" 2>/dev/null || true
  sysctl -qw net.ipv4.tcp_child_ehash_entries="$old"
}
trap cleanup EXIT
sysctl -qw net.ipv4.tcp_child_ehash_entries="$EHASH"
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
echo "== network namespace $NS: tcp_ehash_entries $(ip netns exec "$NS" sysctl -n net.ipv4.tcp_ehash_entries)"
# c1m.sh runs make tune inside the namespace: the per-namespace net.* settings apply there.
ip netns exec "$NS" ./scripts/c1m.sh
