#!/usr/bin/env bash
# Applies (or, with --check, only reports) the host settings in this folder: the sysctl drop-in,
# the limits.d nofile entry and the systemd unit. Idempotent: prints each value as old -> new,
# "ok" when it already holds, and what it could not change and why.
#
#   tuning/tune.sh           apply (needs root)
#   tuning/tune.sh --check   change nothing; exit 1 if anything differs
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
SYSCTL_DST=/etc/sysctl.d/99-ringcast.conf
LIMITS_DST=/etc/security/limits.d/ringcast.conf
UNIT_DST=/etc/systemd/system/ringcast.service
differs=0 failed=0

norm() { echo "$*" | tr -s ' \t' ' ' | sed 's/^ //; s/ $//'; }

if [ "$CHECK" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "make tune changes kernel settings and needs root (or run: make tune-check)" >&2
  exit 2
fi

echo "== sysctl (${SYSCTL_DST})"
while IFS= read -r line; do
  line="${line%%#*}"
  [ -n "$(norm "$line")" ] || continue
  key="$(norm "${line%%=*}")"
  want="$(norm "${line#*=}")"
  path="/proc/sys/${key//.//}"
  if [ ! -e "$path" ]; then
    printf '  %-34s skipped: not on this kernel (module not loaded)\n' "$key"
    continue
  fi
  have="$(norm "$(cat "$path" 2>/dev/null)")"
  if [ "$have" = "$want" ]; then
    printf '  %-34s ok (%s)\n' "$key" "$have"
  elif [ "$CHECK" = 1 ]; then
    printf '  %-34s %s -> %s (would change)\n' "$key" "$have" "$want"
    differs=1
  elif sysctl -q -w "$key=$want" >/dev/null 2>&1; then
    printf '  %-34s %s -> %s\n' "$key" "$have" "$want"
  else
    printf '  %-34s %s -> %s FAILED: the kernel refused it (read-only in this container?)\n' "$key" "$have" "$want"
    failed=1
  fi
done <"$HERE/99-ringcast.conf"

install_file() {  # install_file SRC DST WHAT
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    printf '  %-34s ok\n' "$2"
  elif [ "$CHECK" = 1 ]; then
    printf '  %-34s would install (%s)\n' "$2" "$3"
    differs=1
  elif [ -d "$(dirname "$2")" ] || mkdir -p "$(dirname "$2")" 2>/dev/null; then
    cp "$1" "$2" && printf '  %-34s installed (%s)\n' "$2" "$3"
  else
    printf '  %-34s FAILED: cannot create %s\n' "$2" "$(dirname "$2")"
    failed=1
  fi
}

echo "== files"
install_file "$HERE/99-ringcast.conf" "$SYSCTL_DST" "applied at boot"
install_file "$HERE/limits.d/ringcast.conf" "$LIMITS_DST" "nofile for new login sessions"
if [ -d /etc/systemd/system ] || [ -d /run/systemd/system ]; then
  install_file "$HERE/ringcast.service" "$UNIT_DST" "LimitNOFILE=1048576"
else
  printf '  %-34s skipped: no systemd on this host\n' "$UNIT_DST"
fi

echo "== nofile (this shell)"
soft=$(ulimit -Sn) hard=$(ulimit -Hn) nr_open=$(cat /proc/sys/fs/nr_open)
if [ "$hard" -ge 1048576 ]; then
  printf '  %-34s ok (soft %s, hard %s)\n' "nofile" "$soft" "$hard"
elif [ "$CHECK" = 0 ] && ulimit -Hn "$nr_open" 2>/dev/null; then
  printf '  %-34s hard %s -> %s (this shell; new logins get limits.d)\n' "nofile" "$hard" "$nr_open"
else
  printf '  %-34s hard %s: cannot be raised here (no CAP_SYS_RESOURCE). ringcast shards around it:\n' "nofile" "$hard"
  printf '  %-34s each shard has its own fd table with its own %s descriptors.\n' "" "$hard"
fi

if [ "$failed" = 1 ]; then exit 1; fi
if [ "$CHECK" = 1 ] && [ "$differs" = 1 ]; then
  echo "some settings differ: run 'make tune' (as root) to apply them"
  exit 1
fi
exit 0
