#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 300; `make fuzz`), or a short smoke
# (`make fuzz-smoke`, 20 s each, part of `make test`). cargo-fuzz needs nightly features; the
# stable toolchain gets them with RUSTC_BOOTSTRAP=1. Crashes land in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${1:-300}"
TARGETS="${TARGETS:-handshake ws_frames stomp_frame stomp_headers admin_http jwt session cluster_msg sockjs access tls tls_records jwks kafka}"
export RUSTC_BOOTSTRAP=1 CARGO_TERM_PROGRESS_WHEN=never
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz </dev/null
fi
# Builds every target at once (cargo-fuzz takes one name or none). A target that does not
# build fails the run: the old binaries left in target/ would otherwise be fuzzed instead.
mkdir -p target
if ! cargo fuzz build --release >target/fuzz-build.log 2>&1; then
  grep -vE "^\s+(Compiling|Downloaded|Downloading)" target/fuzz-build.log | tail -40
  echo "fuzz: the targets do not build"
  exit 1
fi
status=0
summary=""
for t in $TARGETS; do
  mkdir -p "target/corpus/$t"
  log="target/fuzz-$t.log"
  if cargo fuzz run --release "$t" "target/corpus/$t" "seeds/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
    runs=$(grep -oE "Done [0-9]+ runs" "$log" | tail -1 | grep -oE "[0-9]+" || echo "?")
    summary+="$t: $runs runs in ${SECONDS_PER_TARGET} s, no crash"$'\n'
  else
    status=1
    summary+="$t: CRASH (see fuzz/$log and fuzz/artifacts/$t/)"$'\n'
    tail -30 "$log"
  fi
done
printf '%s' "$summary"
passed=$(printf '%s' "$summary" | grep -c "no crash" || true)
failed=$(printf '%s' "$summary" | grep -c "CRASH" || true)
echo "fuzz: $passed passed, $failed failed"
exit $status
