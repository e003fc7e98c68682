#!/usr/bin/env bash
# Runs every libFuzzer target in build-fuzz/fuzz/ for FUZZ_TIME seconds (default 60) on its
# corpus tests/fuzz/corpus/<target>/ (seeds committed; new inputs go to build-fuzz/corpus).
# A crash leaves its input in build-fuzz/crashes/ and fails the run.
set -uo pipefail
cd "$(dirname "$0")/../.."
FUZZ_TIME=${FUZZ_TIME:-60}
B=${FUZZ_BUILD:-build-fuzz}
mkdir -p "$B/crashes"
pass=0; fail=0
for t in "$B"/fuzz/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  seeds=tests/fuzz/corpus/$name
  work=$B/corpus/$name
  mkdir -p "$work" "$seeds"
  out=$("$t" -max_total_time="$FUZZ_TIME" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$B/crashes/$name-" "$work" "$seeds" 2>&1)
  rc=$?
  execs=$(echo "$out" | grep -E '^stat::number_of_executed_units' | awk '{print $2}')
  if [ $rc -eq 0 ]; then
    pass=$((pass + 1)); echo "PASS $name: ${execs:-?} executions in ${FUZZ_TIME}s"
  else
    fail=$((fail + 1)); echo "FAIL $name (exit $rc):"; echo "$out" | tail -n 30
  fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
