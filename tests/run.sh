#!/usr/bin/env bash
# Runs the unit tests (every build/tests/test_* binary), the integration tests
# (tests/integration/run.py, real nats-server and redis-server on free loopback ports) and a
# short pass of every libFuzzer target (FUZZ_TIME seconds each, from build-fuzz/), then
# prints one closing line "N passed, N failed, N skipped" (a skip is never a pass). Usage:
# tests/run.sh [house|unit|integration|k8s|compose|fuzz]
# (k8s: tests/k8s/run.sh renders k8s/ with kustomize and checks it offline; compose:
# tests/compose/run.sh runs docker-compose.yml in a private Docker engine, end to end)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
what=${1:-all}
# make valgrind: unit and integration tests with every Sidecast process under memcheck
RUNNER=()
if [ "${VALGRIND:-0}" = 1 ]; then
  RUNNER=(valgrind -q --error-exitcode=24 --leak-check=full --show-leak-kinds=definite
          --errors-for-leak-kinds=definite --num-callers=30)
  [ "$what" = all ] && what=valgrind
fi
total_pass=0
total_fail=0
total_skip=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

tally() { # reads the last "N passed, N failed" line of $log
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    total_fail=$((total_fail + 1)); echo "FAIL $1: no summary line (crashed?)"; return
  fi
  total_pass=$((total_pass + $(echo "$line" | awk '{print $1}')))
  total_fail=$((total_fail + $(echo "$line" | awk '{print $3}')))
  total_skip=$((total_skip + $(echo "$line" | sed -n 's/.*, \([0-9]*\) skipped.*/\1/p' | grep . || echo 0)))
}

if [ "$what" = all ] || [ "$what" = house ]; then
  echo "== house rules (tests/house: the layers of every #include, the formatting)"
  timeout 300 /usr/bin/python3 tests/house/run.py 2>&1 | tee "$log"
  tally house
fi

if [ "$what" = all ] || [ "$what" = unit ] || [ "$what" = valgrind ]; then
  echo "== unit tests ($BUILD)"
  for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    timeout 900 "${RUNNER[@]}" "$t" >"$log" 2>&1
    grep -E '^(FAIL|  )' "$log"
    echo "$(basename "$t"): $(grep -E '^[0-9]+ passed' "$log" | tail -n 1)"
    tally "$(basename "$t")"
  done
fi

if [ "$what" = all ] || [ "$what" = integration ] || [ "$what" = valgrind ]; then
  echo "== integration tests ($BUILD)"
  timeout "${INTEGRATION_TIMEOUT:-1800}" /usr/bin/python3 tests/integration/run.py \
    ${TEST_FILTER:-} 2>&1 | tee "$log"
  tally integration
fi

if [ "$what" = all ] || [ "$what" = k8s ]; then
  echo "== Kubernetes manifests (k8s/: kustomize render, API schemas, consistency with $BUILD)"
  timeout 600 bash tests/k8s/run.sh 2>&1 | tee "$log"
  tally k8s
fi

if { [ "$what" = all ] && [ "${SAN:-0}" != 1 ]; } || [ "$what" = compose ]; then
  echo "== docker-compose.yml: images built, the stack in a private Docker engine, end to end"
  timeout 1200 bash tests/compose/run.sh 2>&1 | tee "$log"
  tally compose
fi

if [ "$what" = all ] || [ "$what" = fuzz ]; then
  echo "== fuzz targets, ${FUZZ_TIME:-5}s each (build-fuzz)"
  if ls build-fuzz/fuzz/fuzz_* >/dev/null 2>&1; then
    FUZZ_TIME=${FUZZ_TIME:-5} bash tests/fuzz/run.sh 2>&1 | tee "$log"
    tally fuzz
  else
    echo "fuzz targets not built (make fuzz-build): skipped"
    total_skip=$((total_skip + 1))
  fi
fi

echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
