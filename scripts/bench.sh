#!/usr/bin/env bash
# make bench: the floor and ringcast (raw and STOMP) at N=100,000 (override with N=...):
# the same runs as `make c1m`, smaller and shorter.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}" PUSH_MESSAGES="${PUSH_MESSAGES:-3}" HOLD="${HOLD:-15}" \
  OUT="${OUT:-bench/results/bench-$(date -u +%Y%m%d-%H%M%S)}" exec ./scripts/c1m.sh
