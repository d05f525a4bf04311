#!/usr/bin/env bash
# `make install` / `make uninstall`: the binary, an example configuration (never overwritten),
# the systemd unit, sysctl drop-in and limits that `make tune` also installs, and the `ringcast`
# system user the unit runs as. DESTDIR stages everything under another root (packaging, tests);
# the user, daemon-reload and sysctl load only happen on the real root.
#
#   scripts/install.sh install|uninstall      (PREFIX=/usr/local, DESTDIR=, PURGE=1 also removes /etc/ringcast)
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-install}
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BIN=target/release/ringcast
# Debug info kept apart from the stripped binary, where gdb looks for it (debuglink).
DEBUG_FILE=/usr/lib/debug$PREFIX/bin/ringcast.debug
files=(
  "$PREFIX/bin/ringcast"
  "$DEBUG_FILE"
  /etc/systemd/system/ringcast.service
  /etc/sysctl.d/99-ringcast.conf
  /etc/security/limits.d/ringcast.conf
)
live=0
[ -z "$DESTDIR" ] && live=1
if [ "$live" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "make $action writes to /etc and $PREFIX: run it as root (or stage it with DESTDIR=…)" >&2
  exit 2
fi
case "$action" in
  install)
    [ -x "$BIN" ] || { echo "no $BIN: run make build first" >&2; exit 2; }
    # Stripped (the release build carries debug info for profiles): the symbols go to
    # DEBUG_FILE, linked from the binary, so a backtrace or perf report can still name them.
    tmp=$(mktemp -d)
    objcopy --only-keep-debug "$BIN" "$tmp/ringcast.debug"
    objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$tmp/ringcast.debug" "$BIN" "$tmp/ringcast"
    install -D -m 0755 "$tmp/ringcast" "$DESTDIR$PREFIX/bin/ringcast"
    install -D -m 0644 "$tmp/ringcast.debug" "$DESTDIR$DEBUG_FILE"
    rm -rf "$tmp"
    sed "s|/usr/local/bin/ringcast|$PREFIX/bin/ringcast|" tuning/ringcast.service |
      install -D -m 0644 /dev/stdin "$DESTDIR/etc/systemd/system/ringcast.service"
    install -D -m 0644 tuning/99-ringcast.conf "$DESTDIR/etc/sysctl.d/99-ringcast.conf"
    install -D -m 0644 tuning/limits.d/ringcast.conf "$DESTDIR/etc/security/limits.d/ringcast.conf"
    if [ -e "$DESTDIR/etc/ringcast/ringcast.toml" ]; then
      echo "kept /etc/ringcast/ringcast.toml (an example is in examples/ringcast.toml)"
    else
      install -D -m 0640 examples/ringcast.toml "$DESTDIR/etc/ringcast/ringcast.toml"
    fi
    if [ "$live" = 1 ]; then
      id ringcast >/dev/null 2>&1 ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ringcast
      chgrp ringcast /etc/ringcast/ringcast.toml
      sysctl --system >/dev/null 2>&1 || echo "note: sysctl --system failed; run make tune-check"
      if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    fi
    echo "installed $PREFIX/bin/ringcast, /etc/ringcast/ringcast.toml (edit its secret), the ringcast.service unit"
    echo "next: edit /etc/ringcast/ringcast.toml, then: systemctl enable --now ringcast"
    ;;
  uninstall)
    if [ "$live" = 1 ] && [ -d /run/systemd/system ]; then
      systemctl disable --now ringcast 2>/dev/null || true
    fi
    for f in "${files[@]}"; do rm -f "$DESTDIR$f"; done
    if [ "${PURGE:-0}" = 1 ]; then rm -rf "$DESTDIR/etc/ringcast"; fi
    if [ "$live" = 1 ]; then
      [ -d /run/systemd/system ] && systemctl daemon-reload
      [ "${PURGE:-0}" = 1 ] && userdel ringcast 2>/dev/null || true
    fi
    echo "removed ringcast's files$( [ "${PURGE:-0}" = 1 ] || echo "; kept /etc/ringcast (PURGE=1 removes it)")"
    ;;
  *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
