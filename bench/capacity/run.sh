#!/usr/bin/env bash
# Every capacity measurement behind docs/CAPACITY.md, one after another (about 15 minutes;
# each script also runs alone). Outputs, with the raw runs, in build/capacity/*.txt.
# The machine should be otherwise idle: the load generators and the servers share its cores,
# and each tool prints machine_busy_pct (all processes) beside the CPU of the ones measured.
#
#   bench/capacity/run.sh [auth] [directget] [subs] [redis]    (default: all four)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
OUT=$BUILD/capacity
mkdir -p "$OUT"
for b in bench/authbench bench/natscap sidecast auth edge gateway tests/tools/busctl; do
  [ -x "$BUILD/$b" ] || { echo "capacity: $BUILD/$b missing: run make" >&2; exit 1; }
done
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(auth directget subs redis)
for s in "${steps[@]}"; do
  case $s in auth|directget|subs|redis) ;; *) echo "capacity: unknown step $s" >&2; exit 2;; esac
  echo "== $s: bench/capacity/$s.sh -> $OUT/$s.txt"
  bash "bench/capacity/$s.sh" | tee "$OUT/$s.txt"
done
